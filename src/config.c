/*
 * config.c — model configuration from config.json (Hugging Face) or GGUF
 * metadata, its validation, the weight-name table of both formats, and
 * the rotary frequencies (Hugging Face's rope_init functions, in double).
 *
 * An architecture is a row of options: llama (GQA, tied or untied head,
 * optional attention bias), qwen2 (q/k/v bias), qwen3 (q/k RMSNorm,
 * explicit head_dim). Rope scaling: linear, llama3, yarn.
 */
#include "model.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *wnames[W_COUNT][2] = {
	[W_TOK_EMBD] = {"model.embed_tokens.weight", "token_embd.weight"},
	[W_OUT_NORM] = {"model.norm.weight", "output_norm.weight"},
	[W_OUTPUT] = {"lm_head.weight", "output.weight"},
	[W_ATTN_NORM] = {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight"},
	[W_Q] = {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight"},
	[W_K] = {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight"},
	[W_V] = {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight"},
	[W_BQ] = {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias"},
	[W_BK] = {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias"},
	[W_BV] = {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias"},
	[W_Q_NORM] = {"model.layers.%d.self_attn.q_norm.weight", "blk.%d.attn_q_norm.weight"},
	[W_K_NORM] = {"model.layers.%d.self_attn.k_norm.weight", "blk.%d.attn_k_norm.weight"},
	[W_O] = {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight"},
	[W_FFN_NORM] = {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight"},
	[W_GATE] = {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight"},
	[W_UP] = {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight"},
	[W_DOWN] = {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight"},
};

const char *wrole_name(enum wrole r, bool gguf) { return wnames[r][gguf]; }
bool wrole_per_layer(enum wrole r) { return r >= W_ATTN_NORM; }

const char *arch_name(enum arch a)
{
	static const char *n[] = {"llama", "qwen2", "qwen3"};
	return n[a];
}

static int arch_from_name(const char *s, enum arch *a)
{
	static const struct { const char *name; enum arch a; } names[] = {
		{"llama", ARCH_LLAMA}, {"LlamaForCausalLM", ARCH_LLAMA}, {"mistral", ARCH_LLAMA},
		{"MistralForCausalLM", ARCH_LLAMA}, {"qwen2", ARCH_QWEN2}, {"Qwen2ForCausalLM", ARCH_QWEN2},
		{"qwen3", ARCH_QWEN3}, {"Qwen3ForCausalLM", ARCH_QWEN3},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(names[i].name, s) == 0) {
			*a = names[i].a;
			return 0;
		}
	return -1;
}

/* ---------- config.json ---------- */

struct jctx {
	const char *file;
	char *err;
};

/* Integer key: missing -> def (or error if def == INT_MIN); wrong type -> error. */
static int j_int(struct jctx *j, json_t *o, const char *key, int def, int *out)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		if (def == INT_MIN)
			return seterr(j->err, INFERD_ECONFIG, "%s: missing required key \"%s\"", j->file, key);
		*out = def;
		return 0;
	}
	double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : NAN;
	if (!(d == floor(d)) || d < 0 || d > (1 << 30))
		return seterr(j->err, INFERD_ECONFIG, "%s: \"%s\" must be a non-negative integer", j->file, key);
	*out = (int)d;
	return 0;
}

static int j_num(struct jctx *j, json_t *o, const char *key, double def, double *out)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		if (isnan(def))
			return seterr(j->err, INFERD_ECONFIG, "%s: missing required key \"%s\"", j->file, key);
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return seterr(j->err, INFERD_ECONFIG, "%s: \"%s\" must be a number", j->file, key);
	*out = json_number_value(v);
	if (!isfinite(*out))
		return seterr(j->err, INFERD_ECONFIG, "%s: \"%s\" must be finite", j->file, key);
	return 0;
}

static int j_bool(struct jctx *j, json_t *o, const char *key, bool def, bool *out)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v))
		return seterr(j->err, INFERD_ECONFIG, "%s: \"%s\" must be true or false", j->file, key);
	*out = json_is_true(v);
	return 0;
}

/* bos/eos: an integer, a list (first element taken) or null. */
static int j_token(struct jctx *j, json_t *o, const char *key, int *out)
{
	json_t *v = json_object_get(o, key);
	*out = -1;
	if (json_is_array(v))
		v = json_array_get(v, 0);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
		return seterr(j->err, INFERD_ECONFIG, "%s: \"%s\" must be a token id", j->file, key);
	*out = (int)json_integer_value(v);
	return 0;
}

static int hf_rope(struct jctx *j, json_t *root, struct model_config *c)
{
	/* newer files: rope_parameters {rope_theta, rope_type, ...};
	 * older files: rope_theta + rope_scaling {type|rope_type, ...} */
	json_t *rp = json_object_get(root, "rope_parameters");
	json_t *sc = rp;
	int rc;
	if (rp && !json_is_null(rp)) {
		if (!json_is_object(rp))
			return seterr(j->err, INFERD_ECONFIG, "%s: \"rope_parameters\" must be an object", j->file);
		if ((rc = j_num(j, rp, "rope_theta", 10000.0, &c->rope_theta)))
			return rc;
	} else {
		if ((rc = j_num(j, root, "rope_theta", 10000.0, &c->rope_theta)))
			return rc;
		sc = json_object_get(root, "rope_scaling");
		if (sc && !json_is_null(sc) && !json_is_object(sc))
			return seterr(j->err, INFERD_ECONFIG, "%s: \"rope_scaling\" must be an object or null", j->file);
	}
	c->rs = RS_NONE;
	if (!sc || json_is_null(sc))
		return 0;
	json_t *ty = json_object_get(sc, "rope_type");
	if (!ty)
		ty = json_object_get(sc, "type");
	const char *t = json_is_string(ty) ? json_string_value(ty) : NULL;
	if (!t)
		return seterr(j->err, INFERD_ECONFIG, "%s: rope scaling has no \"rope_type\" string", j->file);
	if (strcmp(t, "default") == 0)
		return 0;
	if (strcmp(t, "linear") == 0)
		c->rs = RS_LINEAR;
	else if (strcmp(t, "llama3") == 0)
		c->rs = RS_LLAMA3;
	else if (strcmp(t, "yarn") == 0)
		c->rs = RS_YARN;
	else
		return seterr(j->err, INFERD_EUNSUPPORTED, "%s: rope scaling type \"%s\" is not supported (default, linear, llama3, yarn are)",
			      j->file, t);
	if ((rc = j_num(j, sc, "factor", NAN, &c->rs_factor)) ||
	    (rc = j_num(j, sc, "low_freq_factor", 1.0, &c->rs_low_freq)) ||
	    (rc = j_num(j, sc, "high_freq_factor", 4.0, &c->rs_high_freq)) ||
	    (rc = j_num(j, sc, "beta_fast", 32.0, &c->rs_beta_fast)) ||
	    (rc = j_num(j, sc, "beta_slow", 1.0, &c->rs_beta_slow)) ||
	    (rc = j_num(j, sc, "attention_factor", 0.0, &c->rs_attn_factor)) ||
	    (rc = j_int(j, sc, "original_max_position_embeddings", c->n_ctx_train, &c->rs_orig_ctx)))
		return rc;
	if (c->rs == RS_LLAMA3 && !json_object_get(sc, "original_max_position_embeddings"))
		return seterr(j->err, INFERD_ECONFIG, "%s: llama3 rope scaling needs \"original_max_position_embeddings\"",
			      j->file);
	if (c->rs == RS_YARN && c->rs_attn_factor == 0.0) {
		double ms = 0, msa = 0;
		if ((rc = j_num(j, sc, "mscale", 0.0, &ms)) || (rc = j_num(j, sc, "mscale_all_dim", 0.0, &msa)))
			return rc;
		double f = c->rs_factor;
#define GET_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
		c->rs_attn_factor = ms != 0 && msa != 0 ? GET_MSCALE(f, ms) / GET_MSCALE(f, msa) : GET_MSCALE(f, 1.0);
#undef GET_MSCALE
	}
	return 0;
}

int config_from_hf(const char *dir, struct model_config *c, char *err)
{
	char path[PATH_MAX];
	if (!path_join(path, sizeof path, dir, "config.json"))
		return seterr(err, INFERD_EINVAL, "%s: path too long", dir);
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		if (je.line <= 0 && je.position == 0)
			return seterr(err, INFERD_EIO, "%s: %s", path, je.text);
		return seterr(err, INFERD_ECONFIG, "%s: malformed JSON at line %d column %d: %s", path, je.line,
			      je.column, je.text);
	}
	struct jctx j = {path, err};
	int rc = 0;
	memset(c, 0, sizeof *c);
	if (!json_is_object(root)) {
		rc = seterr(err, INFERD_ECONFIG, "%s: top level is not a JSON object", path);
		goto out;
	}
	json_t *mt = json_object_get(root, "model_type");
	json_t *ar = json_array_get(json_object_get(root, "architectures"), 0);
	const char *name = json_is_string(mt) ? json_string_value(mt) : json_is_string(ar) ? json_string_value(ar) : NULL;
	if (!name) {
		rc = seterr(err, INFERD_ECONFIG, "%s: missing \"model_type\"", path);
		goto out;
	}
	if (arch_from_name(name, &c->arch)) {
		rc = seterr(err, INFERD_EUNSUPPORTED, "%s: model_type \"%s\" is not supported (llama, mistral, qwen2, qwen3 are)",
			    path, name);
		goto out;
	}
	bool attn_bias = false;
	int head_dim = 0;
	if ((rc = j_int(&j, root, "num_hidden_layers", INT_MIN, &c->n_layer)) ||
	    (rc = j_int(&j, root, "hidden_size", INT_MIN, &c->n_embd)) ||
	    (rc = j_int(&j, root, "intermediate_size", INT_MIN, &c->n_ff)) ||
	    (rc = j_int(&j, root, "num_attention_heads", INT_MIN, &c->n_head)) ||
	    (rc = j_int(&j, root, "num_key_value_heads", c->n_head, &c->n_head_kv)) ||
	    (rc = j_int(&j, root, "head_dim", 0, &head_dim)) ||
	    (rc = j_int(&j, root, "vocab_size", INT_MIN, &c->n_vocab)) ||
	    (rc = j_int(&j, root, "max_position_embeddings", 2048, &c->n_ctx_train)) ||
	    (rc = j_num(&j, root, "rms_norm_eps", 1e-6, &c->norm_eps)) ||
	    (rc = j_bool(&j, root, "tie_word_embeddings", false, &c->tied)) ||
	    (rc = j_bool(&j, root, "attention_bias", false, &attn_bias)) ||
	    (rc = j_token(&j, root, "bos_token_id", &c->bos_id)) ||
	    (rc = j_token(&j, root, "eos_token_id", &c->eos_id)))
		goto out;
	json_t *act = json_object_get(root, "hidden_act");
	if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0)) {
		rc = seterr(err, INFERD_EUNSUPPORTED, "%s: \"hidden_act\" must be \"silu\"", path);
		goto out;
	}
	if (c->n_head == 0) {
		rc = seterr(err, INFERD_ECONFIG, "%s: num_attention_heads is 0", path);
		goto out;
	}
	if (!head_dim) {
		if (c->n_embd % c->n_head) {
			rc = seterr(err, INFERD_ECONFIG, "%s: num_attention_heads (%d) does not divide hidden_size (%d)",
				    path, c->n_head, c->n_embd);
			goto out;
		}
		head_dim = c->n_embd / c->n_head;
	}
	c->head_dim = head_dim;
	c->qkv_bias = c->arch == ARCH_QWEN2 || attn_bias;
	c->qk_norm = c->arch == ARCH_QWEN3;
	c->rope_style = ROPE_NEOX;
	if ((rc = hf_rope(&j, root, c)))
		goto out;
	rc = config_validate(c, path, err);
out:
	json_decref(root);
	return rc;
}

/* ---------- GGUF metadata ---------- */

static int g_int(const struct gguf *g, const char *path, const char *arch, const char *key, int def, int *out,
		 char *err)
{
	char k[128];
	snprintf(k, sizeof k, "%s.%s", arch, key);
	const struct gguf_kv *kv = gguf_find(g, k);
	int64_t v;
	if (!kv) {
		if (def == INT_MIN)
			return seterr(err, INFERD_ECONFIG, "%s: missing metadata key %s", path, k);
		*out = def;
		return 0;
	}
	if (!gguf_get_int(g, k, &v) || v < 0 || v > (1 << 30))
		return seterr(err, INFERD_ECONFIG, "%s: metadata key %s must be a non-negative integer (found %s)", path, k,
			      gguf_type_name(kv->type));
	*out = (int)v;
	return 0;
}

static int g_num(const struct gguf *g, const char *path, const char *arch, const char *key, double def, double *out,
		 char *err)
{
	char k[128];
	snprintf(k, sizeof k, "%s.%s", arch, key);
	const struct gguf_kv *kv = gguf_find(g, k);
	if (!kv) {
		*out = def;
		return 0;
	}
	if (!gguf_get_float(g, k, out) || !isfinite(*out))
		return seterr(err, INFERD_ECONFIG, "%s: metadata key %s must be a finite number (found %s)", path, k,
			      gguf_type_name(kv->type));
	return 0;
}

int config_from_gguf(const struct gguf *g, const char *path, struct model_config *c, char *err)
{
	memset(c, 0, sizeof *c);
	char a[32];
	const struct gguf_kv *akv = gguf_find(g, "general.architecture");
	if (!akv)
		return seterr(err, INFERD_ECONFIG, "%s: missing metadata key general.architecture", path);
	if (!gguf_get_str(g, "general.architecture", a, sizeof a) || arch_from_name(a, &c->arch))
		return seterr(err, INFERD_EUNSUPPORTED, "%s: general.architecture \"%.*s\" is not supported (llama, qwen2, qwen3 are)",
			      path, akv->type == GV_STR ? (int)(akv->v.s.n > 32 ? 32 : akv->v.s.n) : 0,
			      akv->type == GV_STR ? akv->v.s.p : "");
	const struct gguf_kv *hk;
	char k[128];
	snprintf(k, sizeof k, "%s.attention.head_count_kv", a);
	if ((hk = gguf_find(g, k)) && hk->type == GV_ARR)
		return seterr(err, INFERD_EUNSUPPORTED, "%s: per-layer %s is not supported", path, k);
	int rc;
	if ((rc = g_int(g, path, a, "block_count", INT_MIN, &c->n_layer, err)) ||
	    (rc = g_int(g, path, a, "embedding_length", INT_MIN, &c->n_embd, err)) ||
	    (rc = g_int(g, path, a, "feed_forward_length", INT_MIN, &c->n_ff, err)) ||
	    (rc = g_int(g, path, a, "attention.head_count", INT_MIN, &c->n_head, err)) ||
	    (rc = g_int(g, path, a, "attention.head_count_kv", c->n_head, &c->n_head_kv, err)) ||
	    (rc = g_int(g, path, a, "context_length", 2048, &c->n_ctx_train, err)) ||
	    (rc = g_num(g, path, a, "attention.layer_norm_rms_epsilon", 1e-5, &c->norm_eps, err)) ||
	    (rc = g_num(g, path, a, "rope.freq_base", 10000.0, &c->rope_theta, err)))
		return rc;
	if (c->n_head == 0)
		return seterr(err, INFERD_ECONFIG, "%s: %s.attention.head_count is 0", path, a);
	int def_hd = c->n_embd % c->n_head ? 0 : c->n_embd / c->n_head;
	if ((rc = g_int(g, path, a, "attention.key_length", def_hd ? def_hd : INT_MIN, &c->head_dim, err)))
		return rc;
	int vlen;
	if ((rc = g_int(g, path, a, "attention.value_length", c->head_dim, &vlen, err)))
		return rc;
	if (vlen != c->head_dim)
		return seterr(err, INFERD_EUNSUPPORTED, "%s: %s.attention.value_length (%d) differs from key_length (%d)",
			      path, a, vlen, c->head_dim);
	const struct gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
	int def_vocab = te && te->n_dims == 2 && te->ne[1] < (1u << 30) ? (int)te->ne[1] : INT_MIN;
	if ((rc = g_int(g, path, a, "vocab_size", def_vocab, &c->n_vocab, err)))
		return rc;
	/* rope scaling */
	snprintf(k, sizeof k, "%s.rope.scaling.type", a);
	char st[32] = "none";
	if (gguf_find(g, k) && !gguf_get_str(g, k, st, sizeof st))
		return seterr(err, INFERD_ECONFIG, "%s: metadata key %s must be a short string", path, k);
	c->rs = RS_NONE;
	if (strcmp(st, "linear") == 0)
		c->rs = RS_LINEAR;
	else if (strcmp(st, "yarn") == 0)
		c->rs = RS_YARN;
	else if (strcmp(st, "none") != 0)
		return seterr(err, INFERD_EUNSUPPORTED, "%s: rope scaling type \"%s\" is not supported", path, st);
	if ((rc = g_num(g, path, a, "rope.scaling.factor", 1.0, &c->rs_factor, err)) ||
	    (rc = g_int(g, path, a, "rope.scaling.original_context_length", c->n_ctx_train, &c->rs_orig_ctx, err)) ||
	    (rc = g_num(g, path, a, "rope.scaling.yarn_beta_fast", 32.0, &c->rs_beta_fast, err)) ||
	    (rc = g_num(g, path, a, "rope.scaling.yarn_beta_slow", 1.0, &c->rs_beta_slow, err)) ||
	    (rc = g_num(g, path, a, "rope.scaling.attn_factor", 0.0, &c->rs_attn_factor, err)))
		return rc;
	if (c->rs == RS_YARN && c->rs_attn_factor == 0.0)
		c->rs_attn_factor = c->rs_factor <= 1 ? 1.0 : 0.1 * log(c->rs_factor) + 1.0;
	int64_t tok; /* a negative id means unknown (-1); (int) of one below INT_MIN would wrap to any value */
	c->bos_id = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &tok) && tok >= 0 && tok <= INT_MAX ? (int)tok : -1;
	c->eos_id = gguf_get_int(g, "tokenizer.ggml.eos_token_id", &tok) && tok >= 0 && tok <= INT_MAX ? (int)tok : -1;
	c->tied = gguf_find_tensor(g, "output.weight") == NULL;
	c->qkv_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
	c->qk_norm = c->arch == ARCH_QWEN3;
	c->rope_style = c->arch == ARCH_LLAMA ? ROPE_NORM : ROPE_NEOX;
	return config_validate(c, path, err);
}

int config_validate(const struct model_config *c, const char *where, char *err)
{
	struct { const char *name; int v, max; } dims[] = {
		{"layer count", c->n_layer, 4096}, {"hidden size", c->n_embd, 1 << 17},
		{"ffn size", c->n_ff, 1 << 20}, {"head count", c->n_head, 4096},
		{"kv head count", c->n_head_kv, 4096}, {"head dim", c->head_dim, 4096},
		{"vocab size", c->n_vocab, 1 << 24},
	};
	for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
		if (dims[i].v < 1 || dims[i].v > dims[i].max)
			return seterr(err, INFERD_ECONFIG, "%s: %s %d is out of range (1 to %d)", where, dims[i].name,
				      dims[i].v, dims[i].max);
	if (c->n_head % c->n_head_kv)
		return seterr(err, INFERD_ECONFIG, "%s: kv head count (%d) does not divide head count (%d)", where,
			      c->n_head_kv, c->n_head);
	if (c->head_dim % 2)
		return seterr(err, INFERD_ECONFIG, "%s: head dim %d is odd; rotary embedding needs pairs", where,
			      c->head_dim);
	if (!(c->norm_eps > 0) || !(c->rope_theta > 1))
		return seterr(err, INFERD_ECONFIG, "%s: rms_norm_eps must be > 0 and rope_theta > 1", where);
	if (c->rs != RS_NONE && !(c->rs_factor > 0))
		return seterr(err, INFERD_ECONFIG, "%s: rope scaling factor must be > 0", where);
	if (c->rs == RS_LLAMA3 && (!(c->rs_high_freq > c->rs_low_freq) || c->rs_orig_ctx < 1))
		return seterr(err, INFERD_ECONFIG, "%s: llama3 rope scaling needs high_freq_factor > low_freq_factor",
			      where);
	return 0;
}

void rope_compute(const struct model_config *c, const float *factors, double *inv, double *mscale)
{
	int d = c->head_dim, half = d / 2;
	*mscale = 1.0;
	for (int i = 0; i < half; i++)
		inv[i] = 1.0 / pow(c->rope_theta, (double)(2 * i) / d);
	if (c->rs == RS_LINEAR) {
		for (int i = 0; i < half; i++)
			inv[i] /= c->rs_factor;
	} else if (c->rs == RS_LLAMA3) {
		double old = c->rs_orig_ctx, lo = old / c->rs_low_freq, hi = old / c->rs_high_freq;
		for (int i = 0; i < half; i++) {
			double wl = 2 * M_PI / inv[i], f = inv[i];
			if (wl > lo)
				f = inv[i] / c->rs_factor;
			else if (wl >= hi) {
				double s = (old / wl - c->rs_low_freq) / (c->rs_high_freq - c->rs_low_freq);
				f = (1 - s) * inv[i] / c->rs_factor + s * inv[i];
			}
			inv[i] = f;
		}
	} else if (c->rs == RS_YARN) {
		double base = c->rope_theta, orig = c->rs_orig_ctx;
#define CORR_DIM(rot) (d * log(orig / ((rot) * 2 * M_PI)) / (2 * log(base)))
		double low = floor(CORR_DIM(c->rs_beta_fast)), high = ceil(CORR_DIM(c->rs_beta_slow));
#undef CORR_DIM
		if (low < 0)
			low = 0;
		if (high > d - 1)
			high = d - 1;
		if (low == high)
			high += 0.001;
		for (int i = 0; i < half; i++) {
			double ramp = ((double)i - low) / (high - low);
			ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
			double extra = 1 - ramp; /* extrapolation weight */
			inv[i] = inv[i] / c->rs_factor * (1 - extra) + inv[i] * extra;
		}
		*mscale = c->rs_attn_factor;
	}
	if (factors)
		for (int i = 0; i < half; i++)
			inv[i] /= factors[i];
}
