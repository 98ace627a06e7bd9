/*
 * tmpl_model.c — find a model's chat template and its bos/eos token text.
 *
 * GGUF: the string tokenizer.chat_template; bos/eos are the entries of
 * tokenizer.ggml.tokens at tokenizer.ggml.bos_token_id / eos_token_id.
 * Hugging Face: tokenizer_config.json's chat_template (a string, or a list
 * of {name, template} from which "default" is taken), else a
 * chat_template.jinja or chat_template.json file beside it; bos_token /
 * eos_token are strings or {"content": ...} objects.
 * PATH may also name a tokenizer_config.json or a .jinja file directly.
 * Everything returned is malloc'd and owned by the caller.
 */
#include "tmpl.h"
#include "gguf.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *dupn(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

static int read_text(const char *path, char **out, size_t *len, char *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return seterr(err, INFERD_EIO, "%s: cannot open: %s", path, strerror(errno));
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf) {
			fclose(f);
			return seterr(err, INFERD_ENOMEM, "%s: out of memory", path);
		}
		n += fread(buf + n, 1, cap - n - 1, f);
		if (n < cap - 1)
			break;
		cap *= 2;
		char *nb = realloc(buf, cap);
		if (!nb)
			free(buf);
		buf = nb;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return seterr(err, INFERD_EIO, "%s: read error", path);
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}

/* tokens[id] of a GGUF string array */
static char *gguf_token(const struct gguf *g, int64_t id)
{
	const struct gguf_kv *kv = gguf_find(g, "tokenizer.ggml.tokens");
	if (!kv || kv->type != GV_ARR || kv->arr_type != GV_STR || id < 0 || (uint64_t)id >= kv->arr_n)
		return NULL;
	const uint8_t *p = kv->arr_data;
	for (int64_t i = 0;; i++) {
		uint64_t n;
		memcpy(&n, p, 8);
		if (i == id)
			return dupn((const char *)p + 8, (size_t)n);
		p += 8 + n;
	}
}

static int from_gguf(const char *path, char **src, size_t *len, char **bos, char **eos, char *err)
{
	struct gguf g;
	int rc = gguf_open(path, &g, err);
	if (rc)
		return rc;
	const struct gguf_kv *kv = gguf_find(&g, "tokenizer.chat_template");
	if (!kv || kv->type != GV_STR) {
		gguf_close(&g);
		return seterr(err, INFERD_EFORMAT, "%s: no chat template (metadata key tokenizer.chat_template is %s)", path,
			      kv ? "not a string" : "missing");
	}
	*src = dupn(kv->v.s.p, (size_t)kv->v.s.n);
	*len = (size_t)kv->v.s.n;
	int64_t id;
	if (bos && gguf_get_int(&g, "tokenizer.ggml.bos_token_id", &id))
		*bos = gguf_token(&g, id);
	if (eos && gguf_get_int(&g, "tokenizer.ggml.eos_token_id", &id))
		*eos = gguf_token(&g, id);
	gguf_close(&g);
	return *src ? 0 : seterr(err, INFERD_ENOMEM, "out of memory");
}

static char *token_text(const json_t *t)
{
	if (json_is_string(t))
		return dupn(json_string_value(t), json_string_length(t));
	if (json_is_object(t)) {
		const json_t *c = json_object_get(t, "content");
		if (json_is_string(c))
			return dupn(json_string_value(c), json_string_length(c));
	}
	return NULL;
}

static int pick_template(const char *path, const json_t *ct, char **src, size_t *len, char *err)
{
	if (json_is_string(ct)) {
		*len = json_string_length(ct);
		*src = dupn(json_string_value(ct), *len);
		return *src ? 0 : seterr(err, INFERD_ENOMEM, "out of memory");
	}
	if (json_is_array(ct)) {
		size_t i;
		json_t *e;
		json_array_foreach(ct, i, e) {
			const json_t *name = json_object_get(e, "name"), *t = json_object_get(e, "template");
			if (json_is_string(name) && !strcmp(json_string_value(name), "default") && json_is_string(t)) {
				*len = json_string_length(t);
				*src = dupn(json_string_value(t), *len);
				return *src ? 0 : seterr(err, INFERD_ENOMEM, "out of memory");
			}
		}
		return seterr(err, INFERD_EFORMAT, "%s: chat_template is a list without a \"default\" entry", path);
	}
	return seterr(err, INFERD_EFORMAT, "%s: chat_template must be a string or a list of {name, template}", path);
}

static int load_json(const char *path, json_t **out, char *err)
{
	json_error_t je;
	/* configs carry integers beyond 64 bits (model_max_length): read numbers as reals */
	*out = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
	if (!*out)
		return seterr(err, INFERD_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
	return 0;
}

static int from_hf(const char *dir, const char *cfgpath, char **src, size_t *len, char **bos, char **eos, char *err)
{
	json_t *cfg = NULL;
	struct stat st;
	int rc = 0;
	if (stat(cfgpath, &st) == 0 && (rc = load_json(cfgpath, &cfg, err)))
		return rc;
	if (cfg) {
		if (bos)
			*bos = token_text(json_object_get(cfg, "bos_token"));
		if (eos)
			*eos = token_text(json_object_get(cfg, "eos_token"));
		const json_t *ct = json_object_get(cfg, "chat_template");
		if (ct && !json_is_null(ct)) {
			rc = pick_template(cfgpath, ct, src, len, err);
			json_decref(cfg);
			return rc;
		}
		json_decref(cfg);
	}
	char p[PATH_MAX];
	if (path_join(p, sizeof p, dir, "chat_template.jinja") && stat(p, &st) == 0)
		return read_text(p, src, len, err);
	if (path_join(p, sizeof p, dir, "chat_template.json") && stat(p, &st) == 0) {
		json_t *j;
		if ((rc = load_json(p, &j, err)))
			return rc;
		rc = pick_template(p, json_object_get(j, "chat_template"), src, len, err);
		json_decref(j);
		return rc;
	}
	return seterr(err, INFERD_EFORMAT, "%s: no chat template (no chat_template in tokenizer_config.json, "
		      "no chat_template.jinja or chat_template.json)", dir);
}

int tmpl_model_source(const char *path, char **src, size_t *len, char **bos, char **eos, char *err)
{
	*src = NULL;
	*len = 0;
	if (bos)
		*bos = NULL;
	if (eos)
		*eos = NULL;
	struct stat st;
	if (stat(path, &st) != 0)
		return seterr(err, INFERD_EIO, "%s: %s", path, strerror(errno));
	int rc;
	if (S_ISDIR(st.st_mode)) {
		char cfg[PATH_MAX];
		if (!path_join(cfg, sizeof cfg, path, "tokenizer_config.json"))
			return seterr(err, INFERD_EINVAL, "%s: path too long", path);
		rc = from_hf(path, cfg, src, len, bos, eos, err);
	} else {
		size_t n = strlen(path);
		FILE *f = fopen(path, "rb");
		char magic[4] = {0};
		if (f) {
			if (fread(magic, 1, 4, f) != 4)
				magic[0] = 0;
			fclose(f);
		}
		if (!memcmp(magic, "GGUF", 4)) {
			rc = from_gguf(path, src, len, bos, eos, err);
		} else if (n >= 5 && !strcmp(path + n - 5, ".json")) {
			char dir[PATH_MAX];
			snprintf(dir, sizeof dir, "%s", path);
			char *slash = strrchr(dir, '/');
			if (slash)
				*slash = 0;
			else
				snprintf(dir, sizeof dir, ".");
			rc = from_hf(dir, path, src, len, bos, eos, err);
		} else if (n >= 6 && !strcmp(path + n - 6, ".jinja")) {
			rc = read_text(path, src, len, err);
		} else {
			return seterr(err, INFERD_EFORMAT, "%s: not a GGUF file, a model directory, a tokenizer_config.json "
				      "or a .jinja template", path);
		}
	}
	if (rc) {
		free(*src);
		*src = NULL;
		if (bos) {
			free(*bos);
			*bos = NULL;
		}
		if (eos) {
			free(*eos);
			*eos = NULL;
		}
	}
	return rc;
}
