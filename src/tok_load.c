/*
 * tok_load.c — build a tokenizer (tok_impl.h) from Hugging Face files
 * (tokenizer.json + tokenizer_config.json) or from GGUF metadata
 * (tokenizer.ggml.*), and write one into a GGUF.
 *
 * GGUF: "gpt2" is byte-level BPE with merges and a pre-tokenizer chosen by
 * tokenizer.ggml.pre; "llama" is SentencePiece BPE (scores, or merges when
 * present) with byte fallback. inferd also writes the Hugging Face
 * pipeline (normalizer, pre-tokenizer, decoder) as JSON under
 * tokenizer.inferd.* so a converted tokenizer encodes exactly as its
 * tokenizer.json does; other readers ignore those keys.
 */
#include "tok_impl.h"
#include "gguf.h"
#include "util.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

void tok_free(struct tokenizer *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->n_vocab; i++)
		free(t->tok[i].text);
	free(t->tok);
	for (int i = 0; i < t->n_retired; i++)
		free(t->retired[i]);
	free(t->retired);
	smap_free(&t->vocab);
	free(t->mkey);
	free(t->mrank);
	free(t->mres);
	for (int i = 0; i < t->n_added; i++)
		free(t->added[i].text);
	free(t->added);
	for (int i = 0; i < t->n_norm; i++) {
		free(t->norm[i].a);
		free(t->norm[i].b);
	}
	free(t->norm);
	for (int i = 0; i < t->n_pre; i++) {
		pcre2_code_free(t->pre[i].re);
		free(t->pre[i].str);
	}
	free(t->pre);
	for (int i = 0; i < t->n_dec; i++) {
		free(t->dec[i].a);
		free(t->dec[i].b);
	}
	free(t->dec);
	free(t->chat_template);
	free(t->bos_text);
	free(t->eos_text);
	free(t->pre_name);
	free(t->norm_json);
	free(t->pre_json);
	free(t->dec_json);
	free(t);
}

static int alloc_vocab(struct tokenizer *t, int n, char *err)
{
	t->n_vocab = n;
	t->tok = calloc((size_t)n, sizeof *t->tok);
	if (!t->tok || smap_init(&t->vocab, (uint32_t)n))
		return seterr(err, INFERD_ENOMEM, "out of memory for a vocabulary of %d tokens", n);
	t->unk_id = t->bos_id = t->eos_id = -1;
	return 0;
}

static int set_piece(struct tokenizer *t, int id, const char *s, size_t len, int type)
{
	struct tok_piece *p = &t->tok[id];
	if (p->text && p->len == len && memcmp(p->text, s, len) == 0) {
		p->type = (uint8_t)type; /* an added token re-declaring its vocab entry */
		return 0;
	}
	if (p->text) { /* the map still names the old text: keep it until tok_free */
		char **r = realloc(t->retired, (size_t)(t->n_retired + 1) * sizeof *r);
		if (!r)
			return -1;
		t->retired = r;
		t->retired[t->n_retired++] = p->text;
	}
	p->text = malloc(len + 1);
	if (!p->text)
		return -1;
	memcpy(p->text, s, len);
	p->text[len] = 0;
	p->len = (uint32_t)len;
	p->type = (uint8_t)type;
	smap_put(&t->vocab, p->text, (uint32_t)len, id);
	return 0;
}

static int add_added(struct tokenizer *t, int id, const char *s, size_t len, int special, int lstrip, int rstrip)
{
	struct added_token *na = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *na);
	if (!na)
		return -1;
	t->added = na;
	char *d = malloc(len + 1);
	if (!d)
		return -1;
	memcpy(d, s, len);
	d[len] = 0;
	t->added[t->n_added++] = (struct added_token){id, d, (uint32_t)len, (uint8_t)special, (uint8_t)lstrip, (uint8_t)rstrip};
	return 0;
}

/* ---------------- pipeline from tokenizer.json objects ---------------- */

struct jl {
	const char *file;
	char *err;
};

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int pattern_of(struct jl *j, json_t *o, const char *what, char **str, char **regex)
{
	json_t *p = json_object_get(o, "pattern");
	*str = *regex = NULL;
	if (json_is_string(json_object_get(p, "String")))
		*str = xstrdup(jstr(p, "String"));
	else if (json_is_string(json_object_get(p, "Regex")))
		*regex = xstrdup(jstr(p, "Regex"));
	else
		return seterr(j->err, INFERD_EFORMAT, "%s: %s needs a pattern {String} or {Regex}", j->file, what);
	return 0;
}

static int add_norm(struct tokenizer *t, struct jl *j, json_t *o)
{
	if (!o || json_is_null(o))
		return 0;
	const char *ty = jstr(o, "type");
	if (!ty)
		return seterr(j->err, INFERD_EFORMAT, "%s: normalizer without a \"type\"", j->file);
	if (!strcmp(ty, "Sequence")) {
		json_t *arr = json_object_get(o, "normalizers");
		for (size_t i = 0; i < json_array_size(arr); i++) {
			int rc = add_norm(t, j, json_array_get(arr, i));
			if (rc)
				return rc;
		}
		return 0;
	}
	struct norm_step st = {0};
	if (!strcmp(ty, "NFC")) st.kind = N_NFC;
	else if (!strcmp(ty, "NFD")) st.kind = N_NFD;
	else if (!strcmp(ty, "NFKC")) st.kind = N_NFKC;
	else if (!strcmp(ty, "NFKD")) st.kind = N_NFKD;
	else if (!strcmp(ty, "Lowercase")) st.kind = N_LOWER;
	else if (!strcmp(ty, "Prepend")) {
		st.kind = N_PREPEND;
		st.a = xstrdup(jstr(o, "prepend") ? jstr(o, "prepend") : "");
	} else if (!strcmp(ty, "Replace")) {
		char *re;
		st.kind = N_REPLACE;
		int rc = pattern_of(j, o, "Replace normalizer", &st.a, &re);
		if (rc)
			return rc;
		if (re) {
			free(re);
			return seterr(j->err, INFERD_EUNSUPPORTED, "%s: Replace normalizer with a Regex pattern is not supported", j->file);
		}
		st.b = xstrdup(jstr(o, "content") ? jstr(o, "content") : "");
	} else if (!strcmp(ty, "Strip")) {
		st.kind = N_STRIP;
		st.strip_left = json_is_true(json_object_get(o, "strip_left"));
		st.strip_right = json_is_true(json_object_get(o, "strip_right"));
	} else
		return seterr(j->err, INFERD_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported", j->file, ty);
	struct norm_step *nn = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *nn);
	if (!nn)
		return seterr(j->err, INFERD_ENOMEM, "out of memory");
	t->norm = nn;
	t->norm[t->n_norm++] = st;
	return 0;
}

#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static int push_pre(struct tokenizer *t, struct pre_step st, struct jl *j)
{
	struct pre_step *np = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *np);
	if (!np)
		return seterr(j->err, INFERD_ENOMEM, "out of memory");
	t->pre = np;
	t->pre[t->n_pre++] = st;
	return 0;
}

static int add_pre(struct tokenizer *t, struct jl *j, json_t *o)
{
	if (!o || json_is_null(o))
		return 0;
	const char *ty = jstr(o, "type");
	if (!ty)
		return seterr(j->err, INFERD_EFORMAT, "%s: pre_tokenizer without a \"type\"", j->file);
	if (!strcmp(ty, "Sequence")) {
		json_t *arr = json_object_get(o, "pretokenizers");
		for (size_t i = 0; i < json_array_size(arr); i++) {
			int rc = add_pre(t, j, json_array_get(arr, i));
			if (rc)
				return rc;
		}
		return 0;
	}
	struct pre_step st = {0};
	if (!strcmp(ty, "Split")) {
		char *re = NULL;
		int rc = pattern_of(j, o, "Split pre-tokenizer", &st.str, &re);
		if (rc)
			return rc;
		st.kind = re ? P_SPLIT_REGEX : P_SPLIT_STRING;
		if (re) {
			st.re = tok_regex(re, j->err);
			free(re);
			if (!st.re)
				return INFERD_EFORMAT;
		}
		const char *b = jstr(o, "behavior");
		st.behavior = !b || !strcmp(b, "Isolated") ? SB_ISOLATED : !strcmp(b, "Removed") ? SB_REMOVED
			      : !strcmp(b, "MergedWithPrevious") ? SB_MERGED_PREV : !strcmp(b, "MergedWithNext") ? SB_MERGED_NEXT
			      : SB_CONTIGUOUS;
		st.invert = json_is_true(json_object_get(o, "invert"));
		if (st.invert) {
			pcre2_code_free(st.re);
			free(st.str);
			return seterr(j->err, INFERD_EUNSUPPORTED, "%s: Split pre-tokenizer with invert is not supported", j->file);
		}
	} else if (!strcmp(ty, "ByteLevel")) {
		st.kind = P_BYTELEVEL;
		st.add_prefix_space = json_is_true(json_object_get(o, "add_prefix_space"));
		json_t *ur = json_object_get(o, "use_regex");
		if (!ur || json_is_true(ur)) {
			st.re = tok_regex(GPT2_REGEX, j->err);
			if (!st.re)
				return INFERD_EFORMAT;
		}
		t->bytelevel = 1;
	} else if (!strcmp(ty, "Metaspace")) {
		st.kind = P_METASPACE;
		st.str = xstrdup(jstr(o, "replacement") ? jstr(o, "replacement") : "\xE2\x96\x81");
		const char *ps = jstr(o, "prepend_scheme");
		if (ps)
			st.add_prefix_space = !strcmp(ps, "always") ? 2 : !strcmp(ps, "first") ? 1 : 0;
		else
			st.add_prefix_space = json_is_false(json_object_get(o, "add_prefix_space")) ? 0 : 2;
		st.individual = !json_is_false(json_object_get(o, "split")); /* split on the replacement */
		st.behavior = SB_MERGED_NEXT;
	} else if (!strcmp(ty, "Digits")) {
		st.kind = P_DIGITS;
		st.individual = json_is_true(json_object_get(o, "individual_digits"));
		st.behavior = SB_ISOLATED;
	} else
		return seterr(j->err, INFERD_EUNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported", j->file, ty);
	return push_pre(t, st, j);
}

static int add_dec(struct tokenizer *t, struct jl *j, json_t *o)
{
	if (!o || json_is_null(o))
		return 0;
	const char *ty = jstr(o, "type");
	if (!ty)
		return seterr(j->err, INFERD_EFORMAT, "%s: decoder without a \"type\"", j->file);
	if (!strcmp(ty, "Sequence")) {
		json_t *arr = json_object_get(o, "decoders");
		for (size_t i = 0; i < json_array_size(arr); i++) {
			int rc = add_dec(t, j, json_array_get(arr, i));
			if (rc)
				return rc;
		}
		return 0;
	}
	struct dec_step st = {0};
	if (!strcmp(ty, "ByteLevel"))
		st.kind = D_BYTELEVEL;
	else if (!strcmp(ty, "ByteFallback"))
		st.kind = D_BYTEFALLBACK;
	else if (!strcmp(ty, "Fuse"))
		st.kind = D_FUSE;
	else if (!strcmp(ty, "Replace")) {
		char *re;
		st.kind = D_REPLACE;
		int rc = pattern_of(j, o, "Replace decoder", &st.a, &re);
		if (rc)
			return rc;
		if (re) {
			free(re);
			return seterr(j->err, INFERD_EUNSUPPORTED, "%s: Replace decoder with a Regex pattern is not supported", j->file);
		}
		st.b = xstrdup(jstr(o, "content") ? jstr(o, "content") : "");
	} else if (!strcmp(ty, "Strip")) {
		st.kind = D_STRIP;
		st.a = xstrdup(jstr(o, "content") ? jstr(o, "content") : " ");
		st.start = (int)json_integer_value(json_object_get(o, "start"));
		st.stop = (int)json_integer_value(json_object_get(o, "stop"));
	} else if (!strcmp(ty, "Metaspace")) {
		st.kind = D_METASPACE;
		st.a = xstrdup(jstr(o, "replacement") ? jstr(o, "replacement") : "\xE2\x96\x81");
		st.b = xstrdup(" ");
		const char *ps = jstr(o, "prepend_scheme");
		st.prepend_first = ps ? strcmp(ps, "never") != 0 : !json_is_false(json_object_get(o, "add_prefix_space"));
	} else
		return seterr(j->err, INFERD_EUNSUPPORTED, "%s: decoder \"%s\" is not supported", j->file, ty);
	struct dec_step *nd = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *nd);
	if (!nd)
		return seterr(j->err, INFERD_ENOMEM, "out of memory");
	t->dec = nd;
	t->dec[t->n_dec++] = st;
	return 0;
}

/* Keep the pipeline's JSON and build it. */
static int load_pipeline(struct tokenizer *t, struct jl *j, json_t *norm, json_t *pre, json_t *dec)
{
	int rc;
	if ((rc = add_norm(t, j, norm)) || (rc = add_pre(t, j, pre)) || (rc = add_dec(t, j, dec)))
		return rc;
	t->norm_json = norm ? json_dumps(norm, JSON_COMPACT) : NULL;
	t->pre_json = pre ? json_dumps(pre, JSON_COMPACT) : NULL;
	t->dec_json = dec ? json_dumps(dec, JSON_COMPACT) : NULL;
	for (int i = 0; i < t->n_dec; i++)
		t->bytelevel |= t->dec[i].kind == D_BYTELEVEL;
	return 0;
}

/* A token given in tokenizer_config.json: a string or {"content": ...}. */
static const char *config_token(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);
	if (json_is_object(v))
		v = json_object_get(v, "content");
	return json_string_value(v);
}

static int32_t find_token(const struct tokenizer *t, const char *s)
{
	return s ? smap_get(&t->vocab, s, (uint32_t)strlen(s)) : -1;
}

int tok_load_hf(const char *dir, struct tokenizer **out, char *err)
{
	char path[PATH_MAX], cpath[PATH_MAX];
	*out = NULL;
	if (!path_join(path, sizeof path, dir, "tokenizer.json") || !path_join(cpath, sizeof cpath, dir, "tokenizer_config.json"))
		return seterr(err, INFERD_EINVAL, "%s: path too long", dir);
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *cfg = NULL;
	if (!root)
		return seterr(err, je.line > 0 ? INFERD_EFORMAT : INFERD_EIO, "%s: %s%s (line %d column %d)", path,
			      je.line > 0 ? "malformed JSON: " : "", je.text, je.line, je.column);
	struct stat st;
	if (stat(cpath, &st) == 0 && !(cfg = json_load_file(cpath, JSON_DECODE_INT_AS_REAL, &je))) {
		json_decref(root);
		return seterr(err, INFERD_EFORMAT, "%s: malformed JSON: %s (line %d column %d)", cpath, je.text, je.line,
			      je.column);
	}
	struct jl j = {path, err};
	struct tokenizer *t = calloc(1, sizeof *t);
	int rc = 0;
	json_t *model = json_object_get(root, "model");
	const char *mt = jstr(model, "type");
	json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges"),
	       *added = json_object_get(root, "added_tokens");
	if (!t) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto fail;
	}
	if (!mt || strcmp(mt, "BPE") != 0) {
		rc = seterr(err, INFERD_EUNSUPPORTED, "%s: model type \"%s\" is not supported (BPE is)", path, mt ? mt : "(missing)");
		goto fail;
	}
	if (!json_is_object(vocab) || (merges && !json_is_array(merges))) {
		rc = seterr(err, INFERD_EFORMAT, "%s: model.vocab must be an object and model.merges a list", path);
		goto fail;
	}
	json_int_t max_id = -1;
	const char *key;
	json_t *v;
	json_object_foreach(vocab, key, v)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
			rc = seterr(err, INFERD_EFORMAT, "%s: vocab entry \"%.40s\" has an invalid id", path, key);
			goto fail;
		}
		if (json_integer_value(v) > max_id)
			max_id = json_integer_value(v);
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_int_t id = json_integer_value(json_object_get(json_array_get(added, i), "id"));
		if (id < 0 || id >= (1 << 24) || !json_is_string(json_object_get(json_array_get(added, i), "content"))) {
			rc = seterr(err, INFERD_EFORMAT, "%s: added_tokens[%zu] needs an id and a content", path, i);
			goto fail;
		}
		if (id > max_id)
			max_id = id;
	}
	if ((rc = alloc_vocab(t, (int)max_id + 1, err)))
		goto fail;
	json_object_foreach(vocab, key, v)
	{
		if (set_piece(t, (int)json_integer_value(v), key, strlen(key), TT_NORMAL)) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_t *a = json_array_get(added, i);
		int id = (int)json_integer_value(json_object_get(a, "id"));
		const char *c = jstr(a, "content");
		int special = json_is_true(json_object_get(a, "special"));
		if (set_piece(t, id, c, strlen(c), special ? TT_CONTROL : TT_USER) ||
		    add_added(t, id, c, strlen(c), special, json_is_true(json_object_get(a, "lstrip")),
			      json_is_true(json_object_get(a, "rstrip")))) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
	}
	for (size_t i = 0; i < json_array_size(merges); i++) {
		json_t *m = json_array_get(merges, i);
		const char *a, *b;
		char *tmp = NULL;
		if (json_is_array(m)) {
			a = json_string_value(json_array_get(m, 0));
			b = json_string_value(json_array_get(m, 1));
		} else if (json_is_string(m) && (tmp = strdup(json_string_value(m))) && strchr(tmp + (tmp[0] == ' '), ' ')) {
			char *sp = strchr(tmp + (tmp[0] == ' '), ' ');
			*sp = 0;
			a = tmp;
			b = sp + 1;
		} else {
			a = b = NULL;
		}
		int32_t ia = find_token(t, a), ib = find_token(t, b);
		free(tmp);
		if (ia < 0 || ib < 0) {
			rc = seterr(err, INFERD_EFORMAT, "%s: merges[%zu] names a token that is not in the vocabulary", path, i);
			goto fail;
		}
		if (tok_add_merge(t, ia, ib, (int32_t)i) < 0) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
	}
	t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
	t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
	t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
	t->unk_id = find_token(t, jstr(model, "unk_token"));
	if ((rc = load_pipeline(t, &j, json_object_get(root, "normalizer"), json_object_get(root, "pre_tokenizer"),
				json_object_get(root, "decoder"))))
		goto fail;
	/* BOS/EOS: the post-processor's template decides what encode adds */
	json_t *pp = json_object_get(root, "post_processor");
	json_t *pps = pp;
	if (pp && !strcmp(jstr(pp, "type") ? jstr(pp, "type") : "", "Sequence"))
		for (size_t i = 0; i < json_array_size(json_object_get(pp, "processors")); i++) {
			json_t *x = json_array_get(json_object_get(pp, "processors"), i);
			if (!strcmp(jstr(x, "type") ? jstr(x, "type") : "", "TemplateProcessing"))
				pps = x;
		}
	int have_template = 0;
	if (pps && !strcmp(jstr(pps, "type") ? jstr(pps, "type") : "", "TemplateProcessing")) {
		json_t *single = json_object_get(pps, "single");
		int seen_seq = 0;
		have_template = 1;
		for (size_t i = 0; i < json_array_size(single); i++) {
			json_t *e = json_array_get(single, i);
			json_t *sp = json_object_get(e, "SpecialToken");
			if (json_object_get(e, "Sequence")) {
				seen_seq = 1;
				continue;
			}
			int32_t id = find_token(t, jstr(sp, "id"));
			if (id < 0)
				continue;
			if (!seen_seq) {
				t->add_bos = 1;
				t->bos_id = id;
			} else {
				t->add_eos = 1;
				t->eos_id = id;
			}
		}
	}
	t->bos_text = xstrdup(config_token(cfg, "bos_token"));
	t->eos_text = xstrdup(config_token(cfg, "eos_token"));
	if (find_token(t, t->bos_text) >= 0)
		t->bos_id = find_token(t, t->bos_text);
	if (find_token(t, t->eos_text) >= 0)
		t->eos_id = find_token(t, t->eos_text);
	if (!have_template) {
		t->add_bos = json_is_true(json_object_get(cfg, "add_bos_token"));
		t->add_eos = json_is_true(json_object_get(cfg, "add_eos_token"));
	}
	t->clean_up_spaces = json_is_true(json_object_get(cfg, "clean_up_tokenization_spaces"));
	json_t *ct = json_object_get(cfg, "chat_template");
	if (json_is_string(ct))
		t->chat_template = xstrdup(json_string_value(ct));
	else if (json_is_array(ct))
		for (size_t i = 0; i < json_array_size(ct); i++)
			if (!strcmp(jstr(json_array_get(ct, i), "name") ? jstr(json_array_get(ct, i), "name") : "", "default"))
				t->chat_template = xstrdup(jstr(json_array_get(ct, i), "template"));
	t->gguf_model_spm = !t->bytelevel;
	for (int i = 0; i < t->n_norm; i++)
		t->add_space_prefix |= t->norm[i].kind == N_PREPEND;
	if ((rc = tok_finish(t, err)))
		goto fail;
	json_decref(root);
	json_decref(cfg);
	*out = t;
	return 0;
fail:
	json_decref(root);
	json_decref(cfg);
	tok_free(t);
	return rc;
}

/* ---------------- GGUF ---------------- */

/* Pre-tokenizer regexes of tokenizer.ggml.pre names (each family's own
 * tokenizer.json patterns, applied in sequence, each isolating matches). */
static const struct { const char *names; const char *re[6]; } pre_table[] = {
	{",llama-bpe,llama3,llama-v3,dbrx,smaug-bpe,falcon3,",
	 {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
	{",qwen2,stablelm2,",
	 {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
	{",gpt-2,phi-2,mpt,olmo,jais,default,", {GPT2_REGEX}},
	{",starcoder,refact,command-r,smollm,", {"\\p{N}", GPT2_REGEX}},
	{",falcon,", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_REGEX, "[0-9][0-9][0-9]"}},
	{",deepseek-coder,", {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}"}},
	{",deepseek-llm,",
	 {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "\\s+$", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}+"}},
};

static int gguf_str_array(const struct gguf *g, const char *key, const struct gguf_kv **kv)
{
	*kv = gguf_find(g, key);
	return *kv && (*kv)->type == GV_ARR && (*kv)->arr_type == GV_STR;
}

/* Walk a string array: p points at the element, returns next. */
static const uint8_t *next_str(const uint8_t *p, const char **s, uint64_t *n)
{
	memcpy(n, p, 8);
	*s = (const char *)p + 8;
	return p + 8 + *n;
}

static int load_json_pipeline(struct tokenizer *t, const struct gguf *g, const char *path, char *err)
{
	const char *keys[3] = {"tokenizer.inferd.normalizer", "tokenizer.inferd.pre_tokenizer", "tokenizer.inferd.decoder"};
	json_t *o[3] = {NULL, NULL, NULL};
	int rc = 0;
	for (int i = 0; i < 3; i++) {
		const struct gguf_kv *kv = gguf_find(g, keys[i]);
		if (!kv)
			continue;
		json_error_t je;
		if (kv->type != GV_STR || !(o[i] = json_loadb(kv->v.s.p, kv->v.s.n, 0, &je))) {
			rc = seterr(err, INFERD_EFORMAT, "%s: metadata %s is not valid JSON", path, keys[i]);
			goto out;
		}
	}
	struct jl j = {path, err};
	rc = load_pipeline(t, &j, o[0], o[1], o[2]);
out:
	for (int i = 0; i < 3; i++)
		json_decref(o[i]);
	return rc;
}

int tok_load_gguf(const struct gguf *g, const char *path, struct tokenizer **out, char *err)
{
	*out = NULL;
	char model[32] = "";
	if (!gguf_find(g, "tokenizer.ggml.model"))
		return seterr(err, INFERD_EFORMAT, "%s: no tokenizer (metadata key tokenizer.ggml.model is missing)", path);
	if (!gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model) || (strcmp(model, "gpt2") && strcmp(model, "llama")))
		return seterr(err, INFERD_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%s\" is not supported (gpt2 and llama are)",
			      path, model);
	const struct gguf_kv *toks, *merges = NULL, *scores = gguf_find(g, "tokenizer.ggml.scores"),
				    *types = gguf_find(g, "tokenizer.ggml.token_type");
	if (!gguf_str_array(g, "tokenizer.ggml.tokens", &toks) || toks->arr_n == 0 || toks->arr_n >= (1 << 24))
		return seterr(err, INFERD_EFORMAT, "%s: tokenizer.ggml.tokens must be a non-empty array of strings", path);
	int n = (int)toks->arr_n;
	if (scores && (scores->type != GV_ARR || scores->arr_type != GV_F32 || scores->arr_n != toks->arr_n))
		return seterr(err, INFERD_EFORMAT, "%s: tokenizer.ggml.scores must be %d f32 values", path, n);
	if (types && (types->type != GV_ARR || types->arr_type != GV_I32 || types->arr_n != toks->arr_n))
		return seterr(err, INFERD_EFORMAT, "%s: tokenizer.ggml.token_type must be %d i32 values", path, n);
	if (gguf_find(g, "tokenizer.ggml.merges") && !gguf_str_array(g, "tokenizer.ggml.merges", &merges))
		return seterr(err, INFERD_EFORMAT, "%s: tokenizer.ggml.merges must be an array of strings", path);
	struct tokenizer *t = calloc(1, sizeof *t);
	int rc;
	if (!t)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	if ((rc = alloc_vocab(t, n, err)))
		goto fail;
	const uint8_t *p = toks->arr_data;
	for (int i = 0; i < n; i++) {
		const char *s;
		uint64_t len;
		p = next_str(p, &s, &len);
		int32_t ty = TT_NORMAL;
		if (types)
			memcpy(&ty, types->arr_data + 4 * (size_t)i, 4);
		if (set_piece(t, i, s, (size_t)len, ty >= 1 && ty <= 6 ? ty : TT_NORMAL)) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
		if (scores)
			memcpy(&t->tok[i].score, scores->arr_data + 4 * (size_t)i, 4);
		if ((ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && len &&
		    add_added(t, i, s, (size_t)len, ty != TT_USER, 0, 0)) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
	}
	if (merges) {
		p = merges->arr_data;
		for (uint64_t i = 0; i < merges->arr_n; i++) {
			const char *s;
			uint64_t len;
			p = next_str(p, &s, &len);
			const char *sp = len > 1 ? memchr(s + 1, ' ', (size_t)len - 1) : NULL;
			int32_t a = sp ? smap_get(&t->vocab, s, (uint32_t)(sp - s)) : -1;
			int32_t b = sp ? smap_get(&t->vocab, sp + 1, (uint32_t)(s + len - sp - 1)) : -1;
			if (a < 0 || b < 0) {
				rc = seterr(err, INFERD_EFORMAT, "%s: tokenizer.ggml.merges[%llu] names a token not in the vocabulary",
					    path, (unsigned long long)i);
				goto fail;
			}
			if (tok_add_merge(t, a, b, (int32_t)i) < 0) {
				rc = seterr(err, INFERD_ENOMEM, "out of memory");
				goto fail;
			}
		}
	}
	int64_t v;
	t->bos_id = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v < n ? (int32_t)v : -1;
	t->eos_id = gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) && v < n ? (int32_t)v : -1;
	t->unk_id = gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) && v < n ? (int32_t)v : -1;
	int spm = !strcmp(model, "llama");
	t->add_bos = gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v) ? v != 0 : spm;
	t->add_eos = gguf_get_int(g, "tokenizer.ggml.add_eos_token", &v) ? v != 0 : 0;
	t->clean_up_spaces = gguf_get_int(g, "tokenizer.inferd.clean_up_tokenization_spaces", &v) && v;
	t->gguf_model_spm = spm;
	if (t->bos_id >= 0)
		t->bos_text = xstrdup(t->tok[t->bos_id].text);
	if (t->eos_id >= 0)
		t->eos_text = xstrdup(t->tok[t->eos_id].text);
	const struct gguf_kv *ct = gguf_find(g, "tokenizer.chat_template");
	if (ct && ct->type == GV_STR && (t->chat_template = malloc(ct->v.s.n + 1))) {
		memcpy(t->chat_template, ct->v.s.p, ct->v.s.n);
		t->chat_template[ct->v.s.n] = 0;
	}
	if (gguf_find(g, "tokenizer.inferd.pre_tokenizer") || gguf_find(g, "tokenizer.inferd.decoder") ||
	    gguf_find(g, "tokenizer.inferd.normalizer")) {
		/* written by inferd from a tokenizer.json: the exact pipeline */
		if ((rc = load_json_pipeline(t, g, path, err)))
			goto fail;
		t->use_scores = !merges;
		t->byte_fallback = spm;
		t->fuse_unk = spm;
		t->ignore_merges = gguf_get_int(g, "tokenizer.inferd.ignore_merges", &v) && v;
	} else if (spm) {
		/* SentencePiece: "▁" for spaces, a space prefix, byte fallback */
		int prefix = gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &v) ? v != 0 : 1;
		struct norm_step steps[2] = {{.kind = N_PREPEND, .a = xstrdup("\xE2\x96\x81")},
					     {.kind = N_REPLACE, .a = xstrdup(" "), .b = xstrdup("\xE2\x96\x81")}};
		struct dec_step d[4] = {{.kind = D_REPLACE, .a = xstrdup("\xE2\x96\x81"), .b = xstrdup(" ")},
					{.kind = D_BYTEFALLBACK}, {.kind = D_FUSE},
					{.kind = D_STRIP, .a = xstrdup(" "), .start = 1}};
		t->norm = malloc(2 * sizeof *t->norm);
		t->dec = malloc(4 * sizeof *t->dec);
		if (!t->norm || !t->dec) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
		memcpy(t->norm, steps + !prefix, (size_t)(2 - !prefix) * sizeof *t->norm);
		if (!prefix)
			free(steps[0].a);
		t->n_norm = 2 - !prefix;
		memcpy(t->dec, d, (size_t)(prefix ? 4 : 3) * sizeof *t->dec);
		if (!prefix)
			free(d[3].a);
		t->n_dec = prefix ? 4 : 3;
		t->add_space_prefix = prefix;
		t->use_scores = !merges;
		t->byte_fallback = 1;
		t->fuse_unk = 1;
	} else {
		char pre[64] = "default";
		if (gguf_find(g, "tokenizer.ggml.pre") && !gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre))
			snprintf(pre, sizeof pre, "?");
		char key[72];
		snprintf(key, sizeof key, ",%s,", pre);
		int found = -1;
		for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++)
			if (strstr(pre_table[i].names, key))
				found = (int)i;
		if (found < 0) {
			rc = seterr(err, INFERD_EUNSUPPORTED, "%s: tokenizer.ggml.pre \"%s\" is not supported", path, pre);
			goto fail;
		}
		struct jl j = {path, err};
		for (int k = 0; k < 6 && pre_table[found].re[k]; k++) {
			struct pre_step st = {.kind = P_SPLIT_REGEX, .behavior = SB_ISOLATED};
			if (!(st.re = tok_regex(pre_table[found].re[k], err))) {
				rc = INFERD_EFORMAT;
				goto fail;
			}
			if ((rc = push_pre(t, st, &j)))
				goto fail;
		}
		t->pre_name = xstrdup(pre);
		t->dec = calloc(1, sizeof *t->dec);
		if (!t->dec) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory");
			goto fail;
		}
		t->dec[0].kind = D_BYTELEVEL;
		t->n_dec = 1;
		t->bytelevel = 1;
		if (!merges) {
			rc = seterr(err, INFERD_EFORMAT, "%s: a gpt2 tokenizer needs tokenizer.ggml.merges", path);
			goto fail;
		}
	}
	if ((rc = tok_finish(t, err)))
		goto fail;
	*out = t;
	return 0;
fail:
	tok_free(t);
	return rc;
}

int tok_load(const char *path, struct tokenizer **out, char *err)
{
	struct stat st;
	*out = NULL;
	if (stat(path, &st) != 0)
		return seterr(err, INFERD_EIO, "%s: no such file or directory", path);
	if (S_ISDIR(st.st_mode))
		return tok_load_hf(path, out, err);
	struct gguf g;
	int rc = gguf_open(path, &g, err);
	if (rc)
		return rc;
	rc = tok_load_gguf(&g, path, out, err);
	gguf_close(&g);
	return rc;
}

/* ---------------- writing into GGUF ---------------- */

void tok_write_gguf(const struct tokenizer *t, struct gguf_writer *w)
{
	gguf_w_str(w, "tokenizer.ggml.model", t->gguf_model_spm ? "llama" : "gpt2");
	if (!t->gguf_model_spm)
		gguf_w_str(w, "tokenizer.ggml.pre", t->pre_name ? t->pre_name : "default");
	const char **toks = malloc((size_t)t->n_vocab * sizeof *toks);
	float *scores = malloc((size_t)t->n_vocab * sizeof *scores);
	int32_t *types = malloc((size_t)t->n_vocab * sizeof *types);
	if (toks && scores && types) {
		for (int i = 0; i < t->n_vocab; i++) {
			toks[i] = t->tok[i].text ? t->tok[i].text : "";
			types[i] = t->tok[i].type ? t->tok[i].type : TT_UNUSED;
			if (types[i] == TT_NORMAL && t->byte_id[0] >= 0 && t->tok[i].len == 6 && !strncmp(toks[i], "<0x", 3))
				types[i] = TT_BYTE;
			if (i == t->unk_id)
				types[i] = TT_UNKNOWN;
			scores[i] = t->tok[i].score;
		}
		if (t->gguf_model_spm && !t->use_scores) {
			/* SentencePiece readers merge by score: the earlier a merge makes a
			 * token, the higher its score */
			for (int i = 0; i < t->n_vocab; i++)
				scores[i] = -1e9f;
			for (uint32_t k = 0; k < t->mcap; k++)
				if (t->mkey[k] && scores[t->mres[k]] < -(float)t->mrank[k])
					scores[t->mres[k]] = -(float)t->mrank[k];
		}
		gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)t->n_vocab);
		gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)t->n_vocab);
		gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)t->n_vocab);
	}
	if (t->n_merges) {
		/* merges in rank order, "left right" */
		char **m = calloc(t->n_merges, sizeof *m);
		uint32_t *order = malloc(t->mcap * sizeof *order);
		uint32_t nm = 0;
		if (m && order) {
			for (uint32_t k = 0; k < t->mcap; k++)
				if (t->mkey[k])
					order[nm++] = k;
			/* counting sort by rank would need the max; ranks are distinct, so place directly */
			int32_t maxr = 0;
			for (uint32_t i = 0; i < nm; i++)
				if (t->mrank[order[i]] > maxr)
					maxr = t->mrank[order[i]];
			int32_t *slot = malloc(((size_t)maxr + 1) * sizeof *slot);
			if (slot) {
				memset(slot, 0xff, ((size_t)maxr + 1) * sizeof *slot);
				for (uint32_t i = 0; i < nm; i++)
					slot[t->mrank[order[i]]] = (int32_t)order[i];
				uint32_t k = 0;
				for (int32_t r = 0; r <= maxr; r++) {
					if (slot[r] < 0)
						continue;
					uint64_t key = t->mkey[slot[r]] - 1;
					const struct tok_piece *a = &t->tok[key >> 32], *b = &t->tok[(uint32_t)key];
					m[k] = malloc(a->len + b->len + 2);
					if (!m[k])
						break;
					memcpy(m[k], a->text, a->len);
					m[k][a->len] = ' ';
					memcpy(m[k] + a->len + 1, b->text, b->len);
					m[k][a->len + 1 + b->len] = 0;
					k++;
				}
				gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)m, k);
				free(slot);
			}
		}
		for (uint32_t i = 0; m && i < t->n_merges; i++)
			free(m[i]);
		free(m);
		free(order);
	}
	if (t->bos_id >= 0)
		gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos_id);
	if (t->eos_id >= 0)
		gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos_id);
	if (t->unk_id >= 0)
		gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk_id);
	gguf_w_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
	gguf_w_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos);
	if (t->gguf_model_spm)
		gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
	if (t->chat_template)
		gguf_w_str(w, "tokenizer.chat_template", t->chat_template);
	if (t->norm_json)
		gguf_w_str(w, "tokenizer.inferd.normalizer", t->norm_json);
	if (t->pre_json)
		gguf_w_str(w, "tokenizer.inferd.pre_tokenizer", t->pre_json);
	if (t->dec_json)
		gguf_w_str(w, "tokenizer.inferd.decoder", t->dec_json);
	gguf_w_bool(w, "tokenizer.inferd.clean_up_tokenization_spaces", t->clean_up_spaces);
	gguf_w_bool(w, "tokenizer.inferd.ignore_merges", t->ignore_merges);
	free(toks);
	free(scores);
	free(types);
}
