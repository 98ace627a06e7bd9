/*
 * mlx.c — MLX affine quantization in Hugging Face directories (see mlx.h):
 * configuration, binding of quantized triplets, and the directory writer.
 *
 * Binding keeps the weights where they are: a bound MLX tensor's data,
 * scales and biases point into the mmapped safetensors files (nothing is
 * expanded to float at load). The checks, in order: the module's
 * parameters (mode affine, bits 4 or 8, group size 32, 64 or 128, row
 * length a whole number of groups); X.weight is U32 of shape
 * [out, in * bits / 32]; X.scales and X.biases exist, have one float type
 * (F32, F16, BF16) and shape [out, in / group].
 *
 * The writer quantizes with dtype_mlx_from_f32 (bias = minimum rounded
 * down, scale = range / (2^bits - 1) rounded up, in the scales' type), one
 * tensor at a time; memory is one tensor's output plus one float row.
 */
#include "mlx.h"
#include "dtype.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void tensor_row_f32(const struct tensor *t, int64_t r, float *dst)
{
	if (dtype_is_mlx(t->type)) {
		uint64_t ng = (uint64_t)(t->ne[0] / t->group), sbs = t->sb_type == DT_F32 ? 4 : 2;
		dtype_mlx_to_f32(t->type, (const uint8_t *)t->data + (uint64_t)r * (t->nbytes / (uint64_t)t->ne[1]),
				 (const uint8_t *)t->scales + (uint64_t)r * ng * sbs,
				 (const uint8_t *)t->biases + (uint64_t)r * ng * sbs, t->sb_type, t->group, dst, t->ne[0]);
		return;
	}
	dtype_to_f32(t->type, (const uint8_t *)t->data + (uint64_t)r * (t->nbytes / (uint64_t)t->ne[1]), dst, t->ne[0]);
}

/* ---------- configuration ---------- */

void mlx_cfg_free(struct mlx_cfg *q)
{
	json_decref(q->root);
	memset(q, 0, sizeof *q);
}

int mlx_cfg_load(const char *dir, struct mlx_cfg *q, char *err)
{
	memset(q, 0, sizeof *q);
	if (!path_join(q->file, sizeof q->file, dir, "config.json"))
		return seterr(err, INFERD_EINVAL, "%s: path too long", dir);
	json_error_t je;
	q->root = json_load_file(q->file, JSON_REJECT_DUPLICATES, &je);
	if (!q->root)
		return seterr(err, INFERD_ECONFIG, "%s: malformed JSON at line %d column %d: %s", q->file, je.line,
			      je.column, je.text);
	q->key = "quantization";
	json_t *v = json_object_get(q->root, q->key);
	if (!v || json_is_null(v)) {
		q->key = "quantization_config";
		v = json_object_get(q->root, q->key);
		if (!v || json_is_null(v))
			return 0;
		json_t *meth = json_object_get(v, "quant_method");
		if (json_is_object(v) && meth)
			return seterr(err, INFERD_EUNSUPPORTED,
				      "%s: \"quantization_config\" with quant_method \"%s\" is not supported (MLX affine "
				      "quantization is: \"quantization\": {\"group_size\", \"bits\"})",
				      q->file, json_is_string(meth) ? json_string_value(meth) : "?");
	}
	if (!json_is_object(v))
		return seterr(err, INFERD_ECONFIG, "%s: \"%s\" must be an object", q->file, q->key);
	q->q = v;
	return 0;
}

/* an integer field of a quantization object; *out keeps its value when absent */
static int q_int(const struct mlx_cfg *q, json_t *o, const char *where, const char *key, int *out, char *err)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 20)
		return seterr(err, INFERD_ECONFIG, "%s: %s: \"%s\" must be a non-negative integer", q->file, where, key);
	*out = (int)json_integer_value(v);
	return 0;
}

/* The parameters of one module: *quant 0 (not quantized by the config), 1,
 * or -1 (decided by whether X.scales exists). */
static int module_params(const struct mlx_cfg *q, const char *module, int *quant, int *group, int *bits, char *err)
{
	int rc;
	char where[300];
	*quant = -1;
	*group = -1;
	*bits = -1;
	snprintf(where, sizeof where, "\"%s\"", q->key);
	if ((rc = q_int(q, q->q, where, "group_size", group, err)) || (rc = q_int(q, q->q, where, "bits", bits, err)))
		return rc;
	json_t *mode = json_object_get(q->q, "mode"), *ov = json_object_get(q->q, module);
	if (ov) {
		snprintf(where, sizeof where, "\"%s\" entry \"%.200s\"", q->key, module);
		if (json_is_false(ov) || json_is_null(ov)) {
			*quant = 0;
			return 0;
		}
		if (json_is_object(ov)) {
			if ((rc = q_int(q, ov, where, "group_size", group, err)) ||
			    (rc = q_int(q, ov, where, "bits", bits, err)))
				return rc;
			if (json_object_get(ov, "mode"))
				mode = json_object_get(ov, "mode");
		} else if (!json_is_true(ov)) {
			return seterr(err, INFERD_ECONFIG, "%s: %s must be an object, true or false", q->file, where);
		}
		*quant = 1;
	}
	if (mode && !(json_is_string(mode) && !strcmp(json_string_value(mode), "affine")))
		return seterr(err, INFERD_EUNSUPPORTED,
			      "%s: '%s' is quantized in mode \"%s\", which inferd does not support (MLX \"affine\" is)",
			      q->file, module, json_is_string(mode) ? json_string_value(mode) : "?");
	return 0;
}

/* ---------- binding ---------- */

static int st_type_of(const char *dtype)
{
	return !strcmp(dtype, "F32") ? DT_F32 : !strcmp(dtype, "F16") ? DT_F16 : !strcmp(dtype, "BF16") ? DT_BF16 : -1;
}

static int check_sb(const struct st_set *st, const char *dir, const char *module, const char *what, int64_t rows,
		    int64_t ngroups, int group, const struct st_tensor **out, char *err)
{
	char name[300];
	snprintf(name, sizeof name, "%s.%s", module, what);
	const struct st_tensor *s = st_find(st, name);
	*out = s;
	if (!s)
		return seterr(err, INFERD_EFORMAT,
			      "%s: missing tensor '%s' (the MLX affine quantization of '%s.weight' needs scales and biases)",
			      dir, name, module);
	if (st_type_of(s->dtype) < 0)
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", dir, name,
			      s->dtype);
	if (s->n_dims != 2 || s->shape[0] != (uint64_t)rows || s->shape[1] != (uint64_t)ngroups) {
		char got[64] = "";
		for (int d = 0; d < s->n_dims; d++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? ", " : "",
				 (unsigned long long)s->shape[d]);
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s' has shape [%s], expected [%lld, %lld] (%lld rows, groups of %d values)", dir,
			      name, got, (long long)rows, (long long)ngroups, (long long)rows, group);
	}
	return 0;
}

int mlx_bind(const struct st_set *st, const struct mlx_cfg *q, const char *dir, const char *name,
	     const int64_t ne[2], struct tensor *t, char *err)
{
	size_t nl = strlen(name);
	if (nl < 8 || strcmp(name + nl - 7, ".weight") != 0 || nl > 250)
		return 0;
	char module[256];
	snprintf(module, sizeof module, "%.*s", (int)(nl - 7), name);
	const struct st_tensor *w = st_find(st, name);
	char sname[300];
	snprintf(sname, sizeof sname, "%s.scales", module);
	int quant = 0, group = -1, bits = -1, rc;
	if (q->q && (rc = module_params(q, module, &quant, &group, &bits, err)))
		return rc;
	if (quant < 0) /* without a quantization block nothing is quantized */
		quant = q->q && st_find(st, sname) != NULL;
	if (!quant) {
		if (w && !strcmp(w->dtype, "U32"))
			return seterr(err, INFERD_EFORMAT,
				      "%s: tensor '%s' is U32 (MLX-packed) but %s", dir, name,
				      !q->q ? "config.json has no \"quantization\" block"
				      : st_find(st, sname) ? "config.json lists the module as not quantized"
							   : "there is no scales tensor for it");
		if (q->q && st_find(st, sname))
			return seterr(err, INFERD_EFORMAT, "%s: tensor '%s' exists but config.json lists '%s' as not quantized",
				      dir, sname, module);
		return 0;
	}
	if (bits < 0 || group < 0)
		return seterr(err, INFERD_ECONFIG, "%s: \"%s\" needs \"group_size\" and \"bits\" (for '%s')", q->file,
			      q->key, name);
	if (bits != 4 && bits != 8)
		return seterr(err, INFERD_EUNSUPPORTED,
			      "%s: tensor '%s' is quantized with MLX affine bits %d, which inferd does not support (4 and 8 are)",
			      dir, name, bits);
	if (group != 32 && group != 64 && group != 128)
		return seterr(err, INFERD_EUNSUPPORTED,
			      "%s: tensor '%s' is quantized with MLX group size %d, which inferd does not support (32, 64 and 128 are)",
			      dir, name, group);
	int64_t in = ne[0], out = ne[1];
	if (in % group)
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s': rows of %lld values are not a whole number of groups of %d", dir, name,
			      (long long)in, group);
	if (!w)
		return seterr(err, INFERD_EFORMAT, "%s: missing tensor '%s'", dir, name);
	int64_t words = in * bits / 32;
	if (strcmp(w->dtype, "U32") != 0)
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s' has dtype %s, but config.json quantizes '%s' (MLX affine weights are U32)", dir,
			      name, w->dtype, module);
	if (w->n_dims != 2 || w->shape[0] != (uint64_t)out || w->shape[1] != (uint64_t)words) {
		char got[64] = "";
		for (int d = 0; d < w->n_dims; d++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? ", " : "",
				 (unsigned long long)w->shape[d]);
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s' has shape [%s], expected [%lld, %lld] (%lld x %lld values at %d bits)", dir,
			      name, got, (long long)out, (long long)words, (long long)out, (long long)in, bits);
	}
	const struct st_tensor *s, *b;
	if ((rc = check_sb(st, dir, module, "scales", out, in / group, group, &s, err)) ||
	    (rc = check_sb(st, dir, module, "biases", out, in / group, group, &b, err)))
		return rc;
	if (strcmp(s->dtype, b->dtype) != 0)
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s.biases' has dtype %s but '%s' has %s", dir, module,
			      b->dtype, sname, s->dtype);
	memset(t, 0, sizeof *t);
	t->name = w->name;
	t->type = bits == 4 ? DT_MLX4 : DT_MLX8;
	t->ne[0] = in;
	t->ne[1] = out;
	t->data = w->data;
	t->nbytes = w->nbytes;
	t->scales = s->data;
	t->biases = b->data;
	t->sb_type = st_type_of(s->dtype);
	t->group = group;
	t->sb_nbytes = s->nbytes;
	return 1;
}

/* ---------- writing ---------- */

struct wentry {
	const struct tensor *src;
	int kind;          /* 0 plain float, 1 packed codes, 2 scales, 3 biases */
	int type;          /* float type (plain, scales, biases) or MLX type */
	int group;
};

struct wctx {
	const struct wentry *e;
	float *row;
	uint8_t *sb[2];    /* scales and biases of the tensor whose codes were
			    * just written, kept for the next two entries */
	uint64_t sb_bytes;
};

static int wproduce(void *ctx, int idx, uint8_t *dst, uint64_t nbytes, char *err)
{
	struct wctx *c = ctx;
	const struct wentry *e = &c->e[idx];
	const struct tensor *t = e->src;
	int64_t cols = t->ne[0], rows = t->ne[1];
	if (e->kind >= 2) { /* made with the codes */
		memcpy(dst, c->sb[e->kind - 2], nbytes);
		return 0;
	}
	if (e->kind == 0) {
		uint64_t rb = nbytes / (uint64_t)rows;
		for (int64_t r = 0; r < rows; r++) {
			tensor_row_f32(t, r, c->row);
			dtype_from_f32(e->type, c->row, dst + (uint64_t)r * rb, cols);
		}
		return 0;
	}
	int sbt = c->e[idx + 1].type, sbs = sbt == DT_F32 ? 4 : 2;
	uint64_t ng = (uint64_t)(cols / e->group), rb = nbytes / (uint64_t)rows;
	free(c->sb[0]);
	free(c->sb[1]);
	c->sb_bytes = (uint64_t)rows * ng * (uint64_t)sbs;
	c->sb[0] = malloc(c->sb_bytes);
	c->sb[1] = malloc(c->sb_bytes);
	if (!c->sb[0] || !c->sb[1])
		return seterr(err, INFERD_ENOMEM, "out of memory");
	for (int64_t r = 0; r < rows; r++) {
		tensor_row_f32(t, r, c->row);
		if (!dtype_mlx_from_f32(e->type, e->group, sbt, c->row, dst + (uint64_t)r * rb,
					c->sb[0] + (uint64_t)r * ng * (uint64_t)sbs,
					c->sb[1] + (uint64_t)r * ng * (uint64_t)sbs, cols))
			return seterr(err, INFERD_ERANGE,
				      "row %lld of a weight has values MLX affine cannot hold in %s scales (not finite, or too large)",
				      (long long)r, dtype_name(sbt));
	}
	return 0;
}

static const char *st_dtype_name(int type)
{
	return type == DT_F32 ? "F32" : type == DT_F16 ? "F16" : type == DT_BF16 ? "BF16" : "U32";
}

static int copy_file(const char *from, const char *to, char *err)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		return 0; /* not there: nothing to copy */
	FILE *out = fopen(to, "wb");
	int ok = out != NULL;
	char buf[65536];
	size_t n;
	while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
		ok = fwrite(buf, 1, n, out) == n;
	ok = ok && !ferror(in);
	fclose(in);
	if (out && fclose(out) != 0)
		ok = 0;
	return ok ? 0 : seterr(err, INFERD_EIO, "%s: cannot copy to %s", from, to);
}

int mlx_write_dir(const struct inferd_model *m, const char *out_dir, int bits, int group, int head_bits, char *err)
{
	if (!head_bits)
		head_bits = bits;
	if ((bits != 4 && bits != 8) || (head_bits != 4 && head_bits != 8))
		return seterr(err, INFERD_EINVAL, "MLX affine bits must be 4 or 8 (got %d)", bits != 4 && bits != 8 ? bits : head_bits);
	if (group != 32 && group != 64 && group != 128)
		return seterr(err, INFERD_EINVAL, "MLX group size must be 32, 64 or 128 (got %d)", group);
	if (m->gguf.kv)
		return seterr(err, INFERD_EUNSUPPORTED,
			      "%s: writing an MLX directory needs a Hugging Face directory as the source (its config.json "
			      "is carried over); convert a GGUF file from its original checkpoint", m->path);
	char src_real[PATH_MAX], dst_real[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
	if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
		return seterr(err, INFERD_EIO, "%s: cannot create the directory: %s", out_dir, strerror(errno));
	if (realpath(m->path, src_real) && realpath(out_dir, dst_real) && !strcmp(src_real, dst_real))
		return seterr(err, INFERD_EINVAL, "%s: the output directory is the source directory", out_dir);
	const struct model_config *c = &m->c;
	int cap = W_COUNT * (c->n_layer + 1) * 3, n = 0, rc = 0;
	struct st_wtensor *wt = calloc((size_t)cap, sizeof *wt);
	struct wentry *we = calloc((size_t)cap, sizeof *we);
	char (*names)[160] = calloc((size_t)cap, sizeof *names);
	struct wctx ctx = {.e = we};
	struct mlx_cfg cfg = {0};
	json_t *qj = json_pack("{s:i,s:i,s:s}", "group_size", group, "bits", bits, "mode", "affine");
	int64_t maxc = 1;
	if (!wt || !we || !names || !qj) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	for (int l = -1; l < c->n_layer; l++)
		for (int r = 0; r < W_COUNT; r++) {
			if (wrole_per_layer(r) != (l >= 0))
				continue;
			const struct tensor *t = model_role(m, r, l);
			if (!t || (r == W_OUTPUT && c->tied))
				continue;
			int64_t ne[2];
			int nd;
			role_shape(c, r, ne, &nd);
			maxc = ne[0] > maxc ? ne[0] : maxc;
			int ft = t->type == DT_F32 || t->type == DT_F16 || t->type == DT_BF16 ? t->type
				 : dtype_is_mlx(t->type)					 ? t->sb_type
											 : DT_F32;
			char name[160];
			snprintf(name, sizeof name, wrole_name(r, false), l);
			int g = nd == 2 && ne[0] % group == 0 ? group : nd == 2 && ne[0] % 32 == 0 ? 32 : 0;
			int wb = r == W_TOK_EMBD || r == W_OUTPUT ? head_bits : bits;
			if (nd == 2 && (g != group || wb != bits)) { /* a module of its own parameters, as mlx-lm records them */
				char module[160];
				snprintf(module, sizeof module, "%.*s", (int)strlen(name) - 7, name);
				json_object_set_new(qj, module,
						    g ? json_pack("{s:i,s:i,s:s}", "group_size", g, "bits", wb, "mode", "affine")
						      : json_false());
			}
			if (!g) {
				snprintf(names[n], sizeof names[n], "%s", name);
				wt[n] = (struct st_wtensor){names[n], st_dtype_name(ft), nd, {0, 0}};
				if (nd == 2) {
					wt[n].shape[0] = (uint64_t)ne[1];
					wt[n].shape[1] = (uint64_t)ne[0];
				} else {
					wt[n].shape[0] = (uint64_t)ne[0];
				}
				we[n++] = (struct wentry){t, 0, ft, 0};
				continue;
			}
			static const char *suffix[3] = {"weight", "scales", "biases"};
			for (int k = 0; k < 3; k++) {
				snprintf(names[n], sizeof names[n], "%.*s.%s", (int)strlen(name) - 7, name, suffix[k]);
				wt[n] = (struct st_wtensor){names[n], k ? st_dtype_name(ft) : "U32", 2,
							    {(uint64_t)ne[1], (uint64_t)(k ? ne[0] / g : ne[0] * wb / 32)}};
				we[n++] = (struct wentry){t, k + 1, k ? ft : wb == 4 ? DT_MLX4 : DT_MLX8, g};
			}
		}
	if (!(ctx.row = malloc((size_t)maxc * sizeof(float)))) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	if (!path_join(p, sizeof p, out_dir, "model.safetensors")) {
		rc = seterr(err, INFERD_EINVAL, "%s: path too long", out_dir);
		goto out;
	}
	if ((rc = st_write(p, wt, n, "mlx", wproduce, &ctx, err)))
		goto out;
	/* config.json: the source's, with the quantization block (both spellings, as mlx-lm writes) */
	if ((rc = mlx_cfg_load(m->path, &cfg, err)) && rc != INFERD_EUNSUPPORTED)
		goto out;
	rc = 0;
	json_object_del(cfg.root, "quantization");
	json_object_del(cfg.root, "quantization_config");
	json_object_set(cfg.root, "quantization", qj);
	json_object_set_new(cfg.root, "quantization_config", json_deep_copy(qj));
	if (!path_join(p, sizeof p, out_dir, "config.json") ||
	    json_dump_file(cfg.root, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
		rc = seterr(err, INFERD_EIO, "%s/config.json: cannot write", out_dir);
		goto out;
	}
	static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
				      "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt",
				      "added_tokens.json", "chat_template.jinja", "chat_template.json"};
	for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++) {
		if (!path_join(p, sizeof p, m->path, files[i]) || !path_join(q, sizeof q, out_dir, files[i]))
			rc = seterr(err, INFERD_EINVAL, "%s: path too long", out_dir);
		else
			rc = copy_file(p, q, err);
	}
out:
	mlx_cfg_free(&cfg);
	json_decref(qj);
	free(ctx.row);
	free(ctx.sb[0]);
	free(ctx.sb[1]);
	free(wt);
	free(we);
	free(names);
	return rc;
}
