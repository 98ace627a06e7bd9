/*
 * model.c — open a model (GGUF file or Hugging Face directory), bind and
 * check every weight against the configuration, set up the rotary
 * frequencies and the backend; sequences and their evaluation.
 *
 * Ownership: the model owns its mappings, tensor table and backend; the
 * tensors point into the mappings (no copy of the weights). A sequence owns
 * its KV cache (allocated by the model's backend). Evaluation is serialised
 * per model by eval_lock; the Engine's executor will own this instead.
 */
#include "model.h"
#include "backend.h"
#ifdef INFERD_CUDA
#include "cuda/cuda_backend.h"
#endif
#include "dtype.h"
#include "exec.h"
#include "mlx.h"
#include "tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A sequence evaluated directly (tools, tests): its own KV pool whose
 * blocks are its positions in order. */
#define SEQ_BLOCK 16
struct inferd_seq {
	inferd_model_t *m;
	void *kv;
	int32_t *table;
	int cap, len;
};

/* Expected shape of a role (ne[0] = values per row, ne[1] = rows); false
 * if the configuration has no such tensor. */
bool role_shape(const struct model_config *c, enum wrole r, int64_t ne[2], int *nd)
{
	int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
	*nd = 2;
	ne[1] = 1;
	switch (r) {
	case W_TOK_EMBD: ne[0] = E; ne[1] = c->n_vocab; return true;
	case W_OUTPUT: ne[0] = E; ne[1] = c->n_vocab; return !c->tied;
	case W_Q: ne[0] = E; ne[1] = qd; return true;
	case W_K: case W_V: ne[0] = E; ne[1] = kvd; return true;
	case W_O: ne[0] = qd; ne[1] = E; return true;
	case W_GATE: case W_UP: ne[0] = E; ne[1] = c->n_ff; return true;
	case W_DOWN: ne[0] = c->n_ff; ne[1] = E; return true;
	default: break;
	}
	*nd = 1;
	switch (r) {
	case W_OUT_NORM: case W_ATTN_NORM: case W_FFN_NORM: ne[0] = E; return true;
	case W_BQ: ne[0] = qd; return c->qkv_bias;
	case W_BK: case W_BV: ne[0] = kvd; return c->qkv_bias;
	case W_Q_NORM: case W_K_NORM: ne[0] = c->head_dim; return c->qk_norm;
	default: return false;
	}
}

struct tensor **model_role_slot(struct inferd_model *m, enum wrole r, int l)
{
	struct layer_weights *w = l >= 0 ? &m->layers[l] : NULL;
	switch (r) {
	case W_TOK_EMBD: return &m->tok_embd;
	case W_OUT_NORM: return &m->out_norm;
	case W_OUTPUT: return &m->output;
	case W_ATTN_NORM: return &w->attn_norm;
	case W_Q: return &w->wq;
	case W_K: return &w->wk;
	case W_V: return &w->wv;
	case W_BQ: return &w->bq;
	case W_BK: return &w->bk;
	case W_BV: return &w->bv;
	case W_Q_NORM: return &w->q_norm;
	case W_K_NORM: return &w->k_norm;
	case W_O: return &w->wo;
	case W_FFN_NORM: return &w->ffn_norm;
	case W_GATE: return &w->w_gate;
	case W_UP: return &w->w_up;
	case W_DOWN: return &w->w_down;
	default: return NULL;
	}
}

const struct tensor *model_role(const struct inferd_model *m, enum wrole r, int layer)
{
	return *model_role_slot((struct inferd_model *)m, r, layer);
}

/* Find `name` in the open source and describe it as a tensor. */
static int find_source(struct inferd_model *m, const char *name, struct tensor *t, int *nd, char *err)
{
	memset(t, 0, sizeof *t);
	if (m->gguf.kv) {
		const struct gguf_tensor *g = gguf_find_tensor(&m->gguf, name);
		if (!g)
			return 1;
		const struct dtype_info *di = dtype_get(g->type);
		if (!di->supported)
			return seterr(err, INFERD_EUNSUPPORTED, "%s: tensor '%s' has type %s, which inferd cannot compute with",
				      m->path, name, di->name);
		if (g->n_dims > 2)
			return seterr(err, INFERD_EFORMAT, "%s: tensor '%s' has %u dimensions, expected at most 2", m->path,
				      name, g->n_dims);
		t->type = (int)g->type;
		t->ne[0] = (int64_t)g->ne[0];
		t->ne[1] = (int64_t)g->ne[1];
		*nd = (int)g->n_dims;
		t->data = g->data;
		t->nbytes = g->nbytes;
		return 0;
	}
	const struct st_tensor *s = st_find(&m->st, name);
	if (!s)
		return 1;
	const char *file = m->st.file_names[s->file];
	if (s->type < 0)
		return seterr(err, INFERD_EUNSUPPORTED, "%s/%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)",
			      m->path, file, name, s->dtype);
	if (s->n_dims < 1 || s->n_dims > 2)
		return seterr(err, INFERD_EFORMAT, "%s/%s: tensor '%s' has %d dimensions, expected 1 or 2", m->path, file,
			      name, s->n_dims);
	t->type = s->type;
	t->ne[0] = (int64_t)s->shape[s->n_dims - 1];
	t->ne[1] = s->n_dims == 2 ? (int64_t)s->shape[0] : 1;
	*nd = s->n_dims;
	t->data = s->data;
	t->nbytes = s->nbytes;
	return 0;
}

/* q: the MLX quantization of a Hugging Face directory (q->q NULL: none) */
static int bind_all(struct inferd_model *m, const struct mlx_cfg *q, char *err)
{
	const struct model_config *c = &m->c;
	bool gg = m->gguf.kv != NULL;
	m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
	m->tensors = calloc((size_t)W_COUNT * (size_t)(c->n_layer + 1), sizeof *m->tensors);
	if (!m->layers || !m->tensors)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	for (int l = -1; l < c->n_layer; l++)
		for (int r = 0; r < W_COUNT; r++) {
			if (wrole_per_layer(r) != (l >= 0))
				continue;
			int64_t ne[2];
			int nd, fnd = 0;
			if (!role_shape(c, r, ne, &nd))
				continue;
			char name[160];
			snprintf(name, sizeof name, wrole_name(r, gg), l);
			struct tensor *t = &m->tensors[m->n_tensors];
			int rc = !gg && nd == 2 ? mlx_bind(&m->st, q, m->path, name, ne, t, err) : 0;
			if (rc > 0) { /* an MLX triplet, checked against ne */
				*model_role_slot(m, r, l) = t;
				m->n_tensors++;
				continue;
			}
			if (rc == 0)
				rc = find_source(m, name, t, &fnd, err);
			if (rc < 0)
				return rc;
			if (rc > 0)
				return seterr(err, INFERD_EFORMAT, "%s: missing tensor '%s'", m->path, name);
			if (t->ne[0] != ne[0] || t->ne[1] != ne[1] || (nd == 1 && fnd != 1)) {
				if (gg || nd == 1)
					return seterr(err, INFERD_EFORMAT,
						      "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
						      m->path, name, (long long)t->ne[0], (long long)t->ne[1],
						      (long long)ne[0], (long long)ne[1]);
				return seterr(err, INFERD_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
					      m->path, name, (long long)t->ne[1], (long long)t->ne[0], (long long)ne[1],
					      (long long)ne[0]);
			}
			t->name = NULL;
			*model_role_slot(m, r, l) = t;
			m->n_tensors++;
		}
	if (c->tied)
		m->output = m->tok_embd;
	return 0;
}

int model_bind(struct inferd_model *m, char *err)
{
	struct mlx_cfg q = {0};
	int rc = m->gguf.kv ? 0 : mlx_cfg_load(m->path, &q, err);
	if (!rc)
		rc = bind_all(m, &q, err);
	mlx_cfg_free(&q);
	return rc;
}

static int load_rope(struct inferd_model *m, char *err)
{
	int half = m->c.head_dim / 2;
	m->inv_freq = calloc((size_t)half, sizeof *m->inv_freq);
	if (!m->inv_freq)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	const float *factors = NULL;
	if (m->gguf.kv) {
		const struct gguf_tensor *rf = gguf_find_tensor(&m->gguf, "rope_freqs.weight");
		if (rf) {
			if (rf->type != 0 || rf->n_dims != 1 || rf->ne[0] != (uint64_t)half)
				return seterr(err, INFERD_EFORMAT, "%s: tensor 'rope_freqs.weight' must be F32 of %d values",
					      m->path, half);
			m->rope_freqs = malloc((size_t)half * sizeof(float));
			if (!m->rope_freqs)
				return seterr(err, INFERD_ENOMEM, "out of memory");
			memcpy(m->rope_freqs, rf->data, (size_t)half * sizeof(float));
			for (int i = 0; i < half; i++)
				if (!(m->rope_freqs[i] > 0))
					return seterr(err, INFERD_EFORMAT, "%s: rope_freqs.weight[%d] is not positive", m->path, i);
			factors = m->rope_freqs;
		}
	}
	rope_compute(&m->c, factors, m->inv_freq, &m->rope_mscale);
	return 0;
}

/* The tokenizer the files carry, if any. */
static int load_tokenizer(struct inferd_model *m, char *err)
{
	int rc = 0;
	if (m->gguf.kv) {
		char model[32] = "";
		gguf_get_str(&m->gguf, "tokenizer.ggml.model", model, sizeof model);
		if (!gguf_find(&m->gguf, "tokenizer.ggml.tokens") || !strcmp(model, "no_vocab") || !strcmp(model, "none"))
			return 0;
		rc = tok_load_gguf(&m->gguf, m->path, &m->tok, err);
	} else {
		char p[4200];
		snprintf(p, sizeof p, "%s/tokenizer.json", m->path);
		if (access(p, R_OK) != 0)
			return 0;
		rc = tok_load_hf(m->path, &m->tok, err);
	}
	if (!rc && tok_n_vocab(m->tok) > m->c.n_vocab)
		rc = seterr(err, INFERD_ECONFIG, "%s: the tokenizer has %d tokens but the model's vocabulary only %d", m->path,
			    tok_n_vocab(m->tok), m->c.n_vocab);
	return rc;
}

/* "cpu" (NULL too) → -1; "cuda" → 0; "cuda:N" → N; else an error. */
static int parse_device(const char *dev, int *idx, char *err)
{
	*idx = -1;
	if (!dev || !*dev || !strcmp(dev, "cpu"))
		return 0;
	if (strncmp(dev, "cuda", 4) != 0)
		return seterr(err, INFERD_EINVAL, "unknown device \"%s\" (expected cpu, cuda or cuda:N)", dev);
	*idx = 0;
	if (dev[4]) {
		char *end;
		long v = dev[4] == ':' && dev[5] ? strtol(dev + 5, &end, 10) : -1;
		if (v < 0 || v > 1024 || *end)
			return seterr(err, INFERD_EINVAL, "unknown device \"%s\" (expected cpu, cuda or cuda:N)", dev);
		*idx = (int)v;
	}
	return 0;
}

int inferd_device_id(const char *device, char *out, size_t cap, char *err)
{
	int idx, rc;
	if ((rc = parse_device(device, &idx, err)))
		return rc;
	if (idx < 0) {
		snprintf(out, cap, "cpu");
		return 0;
	}
#ifdef INFERD_CUDA
	return cuda_device_uuid(idx, out, cap, err);
#else
	(void)out;
	(void)cap;
	return seterr(err, INFERD_EUNSUPPORTED,
		      "device %s: this build of inferd has no CUDA backend (build it with make CUDA=1)", device);
#endif
}

/* The KV cache's storage the options ask for on a device (idx < 0: the
 * CPU) into *type: DT_F16 / DT_F32 / DT_Q8_0; or an error naming it. */
static int kv_type_of(const struct inferd_model_opts *opts, int idx, int *type, char *err)
{
	const char *k = opts && opts->kv_dtype && *opts->kv_dtype ? opts->kv_dtype : NULL;
	*type = !k ? (idx < 0 ? DT_F16 : DT_F32)
		   : !strcmp(k, "f32") ? DT_F32 : !strcmp(k, "f16") ? DT_F16 : !strcmp(k, "q8_0") ? DT_Q8_0 : -1;
	if (*type < 0)
		return seterr(err, INFERD_EINVAL, "kv_dtype \"%s\": expected f16, f32 or q8_0", k);
	if (idx >= 0 && *type != DT_F32)
		return seterr(err, INFERD_EUNSUPPORTED, "kv_dtype %s: the CUDA backend keeps its KV cache in f32", k);
	return 0;
}

/* The backend the options ask for: "cpu" (default), "cuda" or "cuda:N". */
static int backend_open(struct inferd_model *m, const struct inferd_model_opts *opts, char *err)
{
	const char *dev = opts && opts->device && *opts->device ? opts->device : "cpu";
	int idx, rc;
	if ((rc = parse_device(dev, &idx, err)))
		return rc;
	int kv_type;
	if ((rc = kv_type_of(opts, idx, &kv_type, err)))
		return rc;
	if (idx < 0) {
		int nth = opts && opts->n_threads > 0 ? opts->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
		snprintf(m->device, sizeof m->device, "cpu");
		return cpu_backend_new(m, nth > 0 ? nth : 1, opts ? opts->cpu_exact : 0, kv_type, &m->be, err);
	}
	snprintf(m->device, sizeof m->device, "cuda:%d", idx);
#ifdef INFERD_CUDA
	return cuda_backend_new(m, idx, opts->device_memory, opts->gpu_exact, &m->be, err);
#else
	return seterr(err, INFERD_EUNSUPPORTED,
		      "device %s: this build of inferd has no CUDA backend (build it with make CUDA=1)", dev);
#endif
}

int inferd_model_open(const char *path, const struct inferd_model_opts *opts, inferd_model_t **out, char *err)
{
	*out = NULL;
	struct stat st;
	if (!path || stat(path, &st) != 0)
		return seterr(err, INFERD_EIO, "%s: no such file or directory", path ? path : "(null)");
	inferd_model_t *m = calloc(1, sizeof *m);
	if (!m)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	pthread_mutex_init(&m->eval_lock, NULL);
	snprintf(m->path, sizeof m->path, "%s", path);
	int rc;
	if (S_ISDIR(st.st_mode)) {
		m->format = "safetensors";
		if ((rc = config_from_hf(path, &m->c, err)) || (rc = st_open_dir(path, &m->st, err)))
			goto fail;
	} else {
		m->format = "gguf";
		if ((rc = gguf_open(path, &m->gguf, err)) || (rc = config_from_gguf(&m->gguf, path, &m->c, err)))
			goto fail;
	}
	if ((rc = model_bind(m, err)) || (rc = load_rope(m, err)))
		goto fail;
	if ((rc = load_tokenizer(m, err)))
		goto fail;
	if ((rc = backend_open(m, opts, err)) || (rc = exec_start(m, opts, err)))
		goto fail;
	*out = m;
	return 0;
fail:
	inferd_model_close(m);
	return rc;
}

int inferd_model_estimate(const char *path, const struct inferd_model_opts *opts, uint64_t *weight_bytes,
			  uint64_t *kv_bytes, char *err)
{
	*weight_bytes = *kv_bytes = 0;
	struct stat st;
	if (!path || stat(path, &st) != 0)
		return seterr(err, INFERD_EIO, "%s: no such file or directory", path ? path : "(null)");
	struct model_config c;
	int rc;
	if (S_ISDIR(st.st_mode)) {
		struct st_set set;
		memset(&set, 0, sizeof set);
		if ((rc = config_from_hf(path, &c, err)) || (rc = st_open_dir(path, &set, err)))
			return rc;
		for (size_t i = 0; i < set.n_t; i++)
			*weight_bytes += set.t[i].nbytes;
		st_close(&set);
	} else {
		struct gguf g;
		memset(&g, 0, sizeof g);
		if ((rc = gguf_open(path, &g, err)))
			return rc;
		rc = config_from_gguf(&g, path, &c, err);
		gguf_close(&g);
		if (rc)
			return rc;
		*weight_bytes = (uint64_t)st.st_size;
	}
	int kv_tokens = opts && opts->kv_tokens > 0 ? opts->kv_tokens : 8192, idx = -1;
	if (opts && opts->device && *opts->device && (rc = parse_device(opts->device, &idx, err)))
		return rc;
	int kv_type;
	if ((rc = kv_type_of(opts, idx, &kv_type, err)))
		return rc;
	/* bytes per 32 values: f32 128, f16 64, q8_0 34 */
	uint64_t per32 = kv_type == DT_F32 ? 128 : kv_type == DT_F16 ? 64 : 34;
	*kv_bytes = 2ull * (uint64_t)c.n_layer * (uint64_t)kv_tokens * (uint64_t)c.n_head_kv * (uint64_t)c.head_dim *
		    per32 / 32;
	return 0;
}

void inferd_model_close(inferd_model_t *m)
{
	if (!m)
		return;
	exec_stop(m);
	tok_free(m->tok);
	if (m->be)
		m->be->ops->free(m->be);
	if (m->gguf.kv)
		gguf_close(&m->gguf);
	st_close(&m->st);
	for (int i = 0; i < m->n_owned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m->tensors);
	free(m->layers);
	free(m->rope_freqs);
	free(m->inv_freq);
	pthread_mutex_destroy(&m->eval_lock);
	free(m);
}

void inferd_model_get_info(const inferd_model_t *m, struct inferd_model_info *info)
{
	info->arch = arch_name(m->c.arch);
	info->format = m->format;
	info->n_vocab = m->c.n_vocab;
	info->n_layer = m->c.n_layer;
	info->n_embd = m->c.n_embd;
	info->n_ctx_train = m->c.n_ctx_train;
	info->bos_id = m->c.bos_id;
	info->eos_id = m->c.eos_id;
	info->has_tokenizer = m->tok != NULL;
	info->device = m->device;
	info->device_bytes = m->be ? m->be->device_bytes : 0;
	info->weight_bytes = 0;
	for (int i = 0; i < m->n_tensors; i++)
		if (m->tensors[i].ne[1] > 1 && (&m->tensors[i] != m->tok_embd || m->output == m->tok_embd))
			info->weight_bytes += m->tensors[i].nbytes + 2 * m->tensors[i].sb_nbytes;
}

const struct tokenizer *inferd_model_tokenizer(const inferd_model_t *m) { return m->tok; }

int inferd_seq_new(inferd_model_t *m, int capacity, inferd_seq_t **out, char *err)
{
	*out = NULL;
	if (capacity < 1 || capacity > (1 << 24))
		return seterr(err, INFERD_EINVAL, "sequence capacity %d is out of range (1 to %d)", capacity, 1 << 24);
	inferd_seq_t *s = calloc(1, sizeof *s);
	if (!s)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	s->m = m;
	s->cap = capacity;
	int nb = (capacity + SEQ_BLOCK - 1) / SEQ_BLOCK;
	if (!(s->table = malloc((size_t)nb * sizeof *s->table))) {
		free(s);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	for (int i = 0; i < nb; i++)
		s->table[i] = i;
	if (!(s->kv = m->be->ops->kv_new(m->be, nb, SEQ_BLOCK, err))) {
		free(s->table);
		free(s);
		return INFERD_ENOMEM;
	}
	*out = s;
	return 0;
}

void inferd_seq_free(inferd_seq_t *s)
{
	if (!s)
		return;
	s->m->be->ops->kv_free(s->m->be, s->kv);
	free(s->table);
	free(s);
}

int inferd_seq_len(const inferd_seq_t *s) { return s->len; }

int inferd_seq_eval(inferd_model_t *m, inferd_seq_t *s, const int32_t *ids, int n, float *logits, int all_rows,
		    char *err)
{
	if (!m || !s || s->m != m || !ids || n < 1)
		return seterr(err, INFERD_EINVAL, "inferd_seq_eval: need a model, its sequence and at least one token");
	if (n > s->cap - s->len)
		return seterr(err, INFERD_ERANGE, "%d more tokens exceed the sequence capacity (%d of %d used)", n, s->len,
			      s->cap);
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= m->c.n_vocab)
			return seterr(err, INFERD_ERANGE, "token id %d at index %d is out of range (vocab size %d)", ids[i],
				      i, m->c.n_vocab);
	int32_t *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
	uint8_t *want = calloc((size_t)n, 1);
	int rc = 0;
	if (!pos || !seq || !want) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		pos[i] = s->len + i;
		want[i] = logits && (all_rows || i == n - 1);
	}
	const int32_t *tables[1] = {s->table};
	struct batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .kv = s->kv, .block_table = tables, .n_seq = 1, .want = want,
			  .logits = logits};
	pthread_mutex_lock(&m->eval_lock);
	rc = forward(m, &b, err);
	pthread_mutex_unlock(&m->eval_lock);
	if (rc == 0)
		s->len += n;
out:
	free(pos);
	free(seq);
	free(want);
	return rc;
}
