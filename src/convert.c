/*
 * convert.c — write a loaded model as a GGUF file that llama.cpp accepts
 * (its tensor names, metadata keys and Q/K layout), and generate
 * random-weight models of a given shape through the same writer.
 *
 * llama-arch GGUFs rotate interleaved pairs, so the rows of Q and K (and
 * their biases) are permuted within each head from the Hugging Face
 * half-split layout: new row 2i = old row i, new row 2i+1 = old row
 * i + head_dim/2. llama3 rope scaling is written as llama.cpp does, as a
 * `rope_freqs.weight` tensor of frequency divisors. 1-D tensors stay F32;
 * a 2-D tensor whose rows are not whole blocks of the target type falls
 * back to F16 (llama.cpp's converter does the same).
 */
#include "model.h"
#include "dtype.h"
#include "tok.h"

#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct centry {
	const struct tensor *src; /* NULL for rope_freqs */
	int type;                 /* output dtype */
	int perm_heads;           /* > 0: permute rows (or values, for 1-D) head-wise */
	int64_t ne[2];
	int nd;
};

struct cctx {
	const struct inferd_model *m;
	struct centry *e;
	float *rope_freqs;
	float *row;               /* one row as float32 */
};

/* source index of output row/value r when permuting NEOX -> interleaved */
static int64_t perm_index(int64_t r, int hd)
{
	int64_t head = r / hd, j = r % hd;
	return head * hd + (j % 2 == 0 ? j / 2 : j / 2 + hd / 2);
}

struct rows_job {
	const struct tensor *t;
	const struct centry *e;
	uint8_t *dst;
	uint64_t srb, drb;
	int hd;
	int64_t r0, r1;
	float *row;     /* NULL: the thread allocates its own */
	int ok;
};

/* convert rows [r0, r1) of one tensor */
static void *rows_main(void *arg)
{
	struct rows_job *j = arg;
	float *own = NULL, *row = j->row;
	j->ok = 1;
	if (!row && !(row = own = malloc((size_t)j->t->ne[0] * sizeof(float)))) {
		j->ok = 0;
		return NULL;
	}
	for (int64_t r = j->r0; r < j->r1; r++) {
		int64_t sr = j->e->perm_heads ? perm_index(r, j->hd) : r;
		const uint8_t *src = (const uint8_t *)j->t->data + (uint64_t)sr * j->srb;
		if (j->t->type == j->e->type) {
			memcpy(j->dst + (uint64_t)r * j->drb, src, j->drb);
			continue;
		}
		tensor_row_f32(j->t, sr, row); /* any type, MLX affine included */
		if (!dtype_from_f32(j->e->type, row, j->dst + (uint64_t)r * j->drb, j->t->ne[0])) {
			j->ok = 0;
			break;
		}
	}
	free(own);
	return NULL;
}

static int produce(void *ctx, int idx, uint8_t *dst, uint64_t nbytes, char *err)
{
	struct cctx *c = ctx;
	struct centry *e = &c->e[idx];
	(void)nbytes;
	if (!e->src) {
		memcpy(dst, c->rope_freqs, (size_t)e->ne[0] * sizeof(float));
		return 0;
	}
	const struct tensor *t = e->src;
	int hd = c->m->c.head_dim;
	uint64_t srb = t->nbytes / (uint64_t)t->ne[1], drb;
	dtype_row_bytes(e->type, (uint64_t)t->ne[0], &drb);
	if (e->nd == 1 && e->perm_heads) {
		float *v = malloc((size_t)t->ne[0] * sizeof(float)), *p = malloc((size_t)t->ne[0] * sizeof(float));
		if (!v || !p) {
			free(v);
			free(p);
			return seterr(err, INFERD_ENOMEM, "out of memory");
		}
		dtype_to_f32(t->type, t->data, v, t->ne[0]);
		for (int64_t i = 0; i < t->ne[0]; i++)
			p[i] = v[perm_index(i, hd)];
		dtype_from_f32(e->type, p, dst, t->ne[0]);
		free(v);
		free(p);
		return 0;
	}
	/* rows are independent: large tensors are converted by several threads */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int nth = t->type == e->type || t->ne[0] * t->ne[1] < (1 << 20) ? 1 : ncpu > 16 ? 16 : ncpu < 1 ? 1 : (int)ncpu;
	struct rows_job jobs[16];
	pthread_t th[16];
	int started[16] = {0}, ok = 1;
	for (int i = 0; i < nth; i++) {
		jobs[i] = (struct rows_job){.t = t, .e = e, .dst = dst, .srb = srb, .drb = drb, .hd = hd,
					    .r0 = t->ne[1] * i / nth, .r1 = t->ne[1] * (i + 1) / nth};
		started[i] = i > 0 && pthread_create(&th[i], NULL, rows_main, &jobs[i]) == 0;
	}
	for (int i = 0; i < nth; i++) {
		if (started[i]) {
			pthread_join(th[i], NULL);
		} else { /* the first share, and any thread that could not start */
			jobs[i].row = c->row;
			rows_main(&jobs[i]);
		}
		ok &= jobs[i].ok;
	}
	if (!ok)
		return seterr(err, INFERD_EUNSUPPORTED, "cannot convert to %s", dtype_get((uint32_t)e->type)->name);
	return 0;
}


static void write_meta(struct gguf_writer *w, const struct inferd_model *m, int ftype, const struct tokenizer *tok)
{
	const struct model_config *c = &m->c;
	const char *a = arch_name(c->arch);
	char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, a), k)
	gguf_w_str(w, "general.architecture", a);
	gguf_w_str(w, "general.name", "inferd");
	gguf_w_u32(w, "general.file_type", (uint32_t)ftype);
	if (ftype != 0 && ftype != 1 && ftype != 32) /* quantized */
		gguf_w_u32(w, "general.quantization_version", 2);
	gguf_w_u32(w, KEY("context_length"), (uint32_t)c->n_ctx_train);
	gguf_w_u32(w, KEY("embedding_length"), (uint32_t)c->n_embd);
	gguf_w_u32(w, KEY("block_count"), (uint32_t)c->n_layer);
	gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)c->n_ff);
	gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)c->n_head);
	gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv);
	gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)c->norm_eps);
	gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim);
	gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim);
	gguf_w_f32(w, KEY("rope.freq_base"), (float)c->rope_theta);
	gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
	gguf_w_u32(w, KEY("vocab_size"), (uint32_t)c->n_vocab);
	if (c->rs == RS_LINEAR || c->rs == RS_YARN) {
		gguf_w_str(w, KEY("rope.scaling.type"), c->rs == RS_LINEAR ? "linear" : "yarn");
		gguf_w_f32(w, KEY("rope.scaling.factor"), (float)c->rs_factor);
	}
	if (c->rs == RS_YARN) {
		gguf_w_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)c->rs_orig_ctx);
		gguf_w_f32(w, KEY("rope.scaling.yarn_beta_fast"), (float)c->rs_beta_fast);
		gguf_w_f32(w, KEY("rope.scaling.yarn_beta_slow"), (float)c->rs_beta_slow);
		gguf_w_f32(w, KEY("rope.scaling.attn_factor"), (float)c->rs_attn_factor);
	}
#undef KEY
	if (tok) {
		tok_write_gguf(tok, w);
		return;
	}
	gguf_w_str(w, "tokenizer.ggml.model", "no_vocab");
	if (c->bos_id >= 0)
		gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id);
	if (c->eos_id >= 0)
		gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id);
}

static int convert_with(const inferd_model_t *m, const char *out_path, const char *type_name,
			const struct tokenizer *tok, char *err);

/* The tokenizer the source carries, if any (NULL when it has none). */
static int source_tokenizer(const inferd_model_t *m, struct tokenizer **tok, char *err)
{
	*tok = NULL;
	if (m->gguf.kv) {
		if (!gguf_find(&m->gguf, "tokenizer.ggml.tokens"))
			return 0;
		return tok_load_gguf(&m->gguf, m->path, tok, err);
	}
	char p[4200];
	snprintf(p, sizeof p, "%s/tokenizer.json", m->path);
	FILE *f = fopen(p, "rb");
	if (!f)
		return 0;
	fclose(f);
	return tok_load_hf(m->path, tok, err);
}

int inferd_convert(const inferd_model_t *m, const char *out_path, const char *type_name, char *err)
{
	struct tokenizer *tok;
	int rc = source_tokenizer(m, &tok, err);
	if (rc)
		return rc;
	if (tok && tok_n_vocab(tok) > m->c.n_vocab) {
		tok_free(tok);
		return seterr(err, INFERD_ECONFIG, "%s: the tokenizer has %d tokens but the model only %d", m->path,
			      tok_n_vocab(tok), m->c.n_vocab);
	}
	rc = convert_with(m, out_path, type_name, tok, err);
	tok_free(tok);
	return rc;
}

/* Output types: one type for every matrix, or a llama.cpp-style mix. */
struct scheme {
	int base;   /* most matrices */
	int more;   /* the output head, and attn_v / ffn_down of the layers
		     * that get more bits; -1: same as base */
	int ftype;  /* general.file_type */
};

static int scheme_of(const char *name, struct scheme *s)
{
	static const struct {
		const char *name;
		struct scheme s;
	} t[] = {
		{"f32", {DT_F32, -1, 0}},      {"f16", {DT_F16, -1, 1}},     {"bf16", {DT_BF16, -1, 32}},
		{"q8_0", {DT_Q8_0, -1, 7}},    {"q4_0", {DT_Q4_0, DT_Q6_K, 2}}, {"q4_k_m", {DT_Q4_K, DT_Q6_K, 15}},
		{"q5_k_m", {DT_Q5_K, DT_Q6_K, 17}}, {"q6_k", {DT_Q6_K, -1, 18}},
	};
	for (size_t i = 0; name && i < sizeof t / sizeof t[0]; i++)
		if (!strcasecmp(name, t[i].name)) {
			*s = t[i].s;
			return 0;
		}
	return -1;
}

/* llama.cpp's rule for the layers whose attn_v and ffn_down get more bits:
 * the first and last eighth, and every third layer between */
static bool more_bits(int l, int n)
{
	return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
}

static int scheme_type(const struct scheme *s, int role, int layer, int n_layer)
{
	if (s->more < 0)
		return s->base;
	if (role == W_OUTPUT)
		return s->more;
	if ((role == W_V || role == W_DOWN) && s->base != DT_Q4_0 && more_bits(layer, n_layer))
		return s->more;
	return s->base;
}

static int convert_with(const inferd_model_t *m, const char *out_path, const char *type_name,
			const struct tokenizer *tok, char *err)
{
	struct scheme sch;
	if (scheme_of(type_name, &sch))
		return seterr(err, INFERD_EINVAL,
			      "unknown output type \"%s\" (f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k)",
			      type_name ? type_name : "(null)");
	const struct model_config *c = &m->c;
	int half = c->head_dim / 2, rc = 0;
	struct gguf_writer *w = gguf_w_new();
	struct cctx ctx = {.m = m};
	ctx.e = calloc((size_t)W_COUNT * (size_t)(c->n_layer + 1) + 1, sizeof *ctx.e);
	ctx.row = malloc((size_t)(c->n_ff > c->n_embd ? c->n_ff : c->n_embd) * 2 * sizeof(float) +
			 (size_t)c->n_head * c->head_dim * sizeof(float));
	ctx.rope_freqs = malloc((size_t)half * sizeof(float));
	if (!w || !ctx.e || !ctx.row || !ctx.rope_freqs) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	write_meta(w, m, sch.ftype, tok);
	int n = 0;
	bool permute = c->arch == ARCH_LLAMA && c->rope_style == ROPE_NEOX;
	for (int l = -1; l < c->n_layer; l++) {
		for (int r = 0; r < W_COUNT; r++) {
			if (wrole_per_layer(r) != (l >= 0))
				continue;
			const struct tensor *t = model_role(m, r, l);
			if (!t || (r == W_OUTPUT && c->tied))
				continue;
			struct centry *e = &ctx.e[n];
			e->src = t;
			role_shape(c, r, e->ne, &e->nd);
			e->type = e->nd == 1 ? DT_F32 : scheme_type(&sch, r, l, c->n_layer);
			uint64_t rb;
			if (!dtype_row_bytes(e->type, (uint64_t)e->ne[0], &rb)) { /* rows that do not split into blocks */
				/* llama.cpp's fallbacks: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 */
				int fb = e->type == DT_Q4_K ? DT_Q5_0 : e->type == DT_Q5_K ? DT_Q5_1 : DT_Q8_0;
				e->type = dtype_row_bytes(fb, (uint64_t)e->ne[0], &rb) && e->type != DT_F16 &&
						  e->type != DT_BF16 && e->type != DT_F32
					  ? fb
					  : DT_F16;
			}
			if (permute && (r == W_Q || r == W_BQ))
				e->perm_heads = c->n_head;
			if (permute && (r == W_K || r == W_BK))
				e->perm_heads = c->n_head_kv;
			uint64_t ne[2] = {(uint64_t)e->ne[0], (uint64_t)e->ne[1]};
			char name[160];
			snprintf(name, sizeof name, wrole_name(r, true), l);
			if ((rc = gguf_w_tensor(w, name, (uint32_t)e->type, ne, e->nd, produce, &ctx, n, err)))
				goto out;
			n++;
		}
		if (l == -1 && (c->rs == RS_LLAMA3 || m->rope_freqs)) {
			/* llama.cpp's form of llama3 scaling: divisors of the base frequencies */
			for (int i = 0; i < half; i++)
				ctx.rope_freqs[i] = (float)((1.0 / pow(c->rope_theta, (double)(2 * i) / c->head_dim)) /
							    m->inv_freq[i]);
			ctx.e[n] = (struct centry){.src = NULL, .type = DT_F32, .ne = {half, 1}, .nd = 1};
			uint64_t ne[1] = {(uint64_t)half};
			if ((rc = gguf_w_tensor(w, "rope_freqs.weight", DT_F32, ne, 1, produce, &ctx, n, err)))
				goto out;
			n++;
		}
	}
	rc = gguf_w_write(w, out_path, err);
out:
	gguf_w_free(w);
	free(ctx.e);
	free(ctx.row);
	free(ctx.rope_freqs);
	return rc;
}

/* ---------- generated models ---------- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float uniform(uint64_t *s) { return (float)((splitmix64(s) >> 11) * 0x1p-53 * 2.0 - 1.0); }

int inferd_gen_model(const struct inferd_gen_opts *o, const char *out_path, char *err)
{
	inferd_model_t *m = calloc(1, sizeof *m);
	if (!m)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	int rc = 0;
	struct tokenizer *tok = NULL;
	struct model_config *c = &m->c;
	if (!o->arch || (strcmp(o->arch, "llama") && strcmp(o->arch, "qwen2") && strcmp(o->arch, "qwen3"))) {
		rc = seterr(err, INFERD_EINVAL, "gen-model: unknown architecture \"%s\" (llama, qwen2, qwen3)",
			    o->arch ? o->arch : "(null)");
		goto out;
	}
	c->arch = o->arch[0] == 'l' ? ARCH_LLAMA : o->arch[4] == '2' ? ARCH_QWEN2 : ARCH_QWEN3;
	c->n_layer = o->n_layer;
	c->n_embd = o->n_embd;
	c->n_ff = o->n_ff;
	c->n_head = o->n_head;
	c->n_head_kv = o->n_head_kv ? o->n_head_kv : o->n_head;
	c->head_dim = o->head_dim ? o->head_dim : o->n_head ? o->n_embd / o->n_head : 0;
	c->n_vocab = o->n_vocab;
	if (o->tokenizer) {
		if ((rc = tok_load(o->tokenizer, &tok, err)))
			goto out;
		c->n_vocab = tok_n_vocab(tok);
		c->bos_id = tok_bos(tok);
		c->eos_id = tok_eos(tok);
	}
	c->n_ctx_train = o->n_ctx ? o->n_ctx : 4096;
	c->norm_eps = 1e-6;
	c->rope_theta = o->rope_theta > 0 ? o->rope_theta : 10000.0;
	c->tied = o->tied;
	c->qkv_bias = c->arch == ARCH_QWEN2;
	c->qk_norm = c->arch == ARCH_QWEN3;
	c->rope_style = ROPE_NEOX;
	if (!tok)
		c->bos_id = c->eos_id = -1;
	if ((rc = config_validate(c, "gen-model", err)))
		goto out;
	m->inv_freq = calloc((size_t)c->head_dim / 2, sizeof *m->inv_freq);
	m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
	m->tensors = calloc((size_t)W_COUNT * (size_t)(c->n_layer + 1), sizeof *m->tensors);
	m->owned = calloc((size_t)W_COUNT * (size_t)(c->n_layer + 1), sizeof *m->owned);
	if (!m->inv_freq || !m->layers || !m->tensors || !m->owned) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	rope_compute(c, NULL, m->inv_freq, &m->rope_mscale);
	uint64_t seed = o->seed;
	for (int l = -1; l < c->n_layer; l++)
		for (int r = 0; r < W_COUNT; r++) {
			int64_t ne[2];
			int nd;
			if (wrole_per_layer(r) != (l >= 0) || !role_shape(c, r, ne, &nd))
				continue;
			size_t cnt = (size_t)ne[0] * (size_t)ne[1];
			float *d = malloc(cnt * sizeof(float));
			if (!d) {
				rc = seterr(err, INFERD_ENOMEM, "gen-model: out of memory for %zu weights", cnt);
				goto out;
			}
			m->owned[m->n_owned++] = d;
			bool norm = r == W_OUT_NORM || r == W_ATTN_NORM || r == W_FFN_NORM || r == W_Q_NORM || r == W_K_NORM;
			float a = r == W_TOK_EMBD ? 1.7f : (float)sqrt(3.0 / (double)ne[0]);
			for (size_t i = 0; i < cnt; i++)
				d[i] = norm ? 1.0f + 0.1f * uniform(&seed) : a * uniform(&seed);
			struct tensor *t = &m->tensors[m->n_tensors++];
			*t = (struct tensor){.type = DT_F32, .ne = {ne[0], ne[1]}, .data = d, .nbytes = cnt * 4};
			*model_role_slot(m, r, l) = t;
		}
	if (c->tied)
		m->output = m->tok_embd;
	rc = convert_with(m, out_path, o->type ? o->type : "f32", tok, err);
out:
	tok_free(tok);
	inferd_model_close(m);
	return rc;
}

/* Real shapes (from the models' published configs), random weights. */
static const struct {
	const char *name, *arch;
	int layers, hidden, ffn, heads, kv, head_dim, vocab, tied;
	float theta;
} shapes[] = {
	{"llama-1b", "llama", 16, 2048, 8192, 32, 8, 64, 128256, 1, 500000},   /* Llama 3.2 1B */
	{"llama-3b", "llama", 28, 3072, 8192, 24, 8, 128, 128256, 1, 500000},  /* Llama 3.2 3B */
	{"llama-8b", "llama", 32, 4096, 14336, 32, 8, 128, 128256, 0, 500000}, /* Llama 3.1 8B */
	{"qwen2-0.5b", "qwen2", 24, 896, 4864, 14, 2, 64, 151936, 1, 1000000}, /* Qwen2.5 0.5B */
	{"qwen2-1.5b", "qwen2", 28, 1536, 8960, 12, 2, 128, 151936, 1, 1000000},
	{"qwen3-0.6b", "qwen3", 28, 1024, 3072, 16, 8, 128, 151936, 1, 1000000},
	{"qwen3-1.7b", "qwen3", 28, 2048, 6144, 16, 8, 128, 151936, 1, 1000000},
	{"qwen3-4b", "qwen3", 36, 2560, 9728, 32, 8, 128, 151936, 1, 1000000},
	{"tiny", "llama", 2, 64, 172, 4, 2, 16, 512, 0, 10000},
};

int inferd_gen_shape(const char *name, struct inferd_gen_opts *o)
{
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		if (!strcmp(shapes[i].name, name)) {
			o->arch = shapes[i].arch;
			o->n_layer = shapes[i].layers;
			o->n_embd = shapes[i].hidden;
			o->n_ff = shapes[i].ffn;
			o->n_head = shapes[i].heads;
			o->n_head_kv = shapes[i].kv;
			o->head_dim = shapes[i].head_dim;
			o->n_vocab = shapes[i].vocab;
			o->tied = shapes[i].tied;
			o->rope_theta = shapes[i].theta;
			return 0;
		}
	return INFERD_EINVAL;
}

const char *inferd_gen_shapes(void)
{
	return "llama-1b, llama-3b, llama-8b, qwen2-0.5b, qwen2-1.5b, qwen3-0.6b, qwen3-1.7b, qwen3-4b, tiny";
}
