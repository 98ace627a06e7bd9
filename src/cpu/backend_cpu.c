/*
 * backend_cpu.c — the CPU backend: every op is split by (ith, nth) over
 * rows and run on the backend's worker pool, one barrier per op. Products
 * hand out row groups per thread region (pool_region_chunk: one forward
 * stream each, then help with the rest); weights are repacked at load into
 * interleaved groups (qmm_x8) in one 2 MiB-page mapping; decode steps of
 * up to FUSE_MAX tokens run norm + q/k/v, norm + gate/up + swiglu and
 * product + residual as one pool run each (the backend's optional fused
 * ops), with per value the operations of the separate ops; other steps
 * and weights not repacked are declined (the op returns 0) and forward.c
 * runs the separate ops.
 *
 * Ownership: the backend owns its pool, per-thread scratch rows, the fused
 * ops' shared rows and the rotary table; the model owns the weights it
 * reads. Only the model's compute thread calls these ops (backend.h), so
 * nothing here locks.
 * KV cache: a paged pool, [layer][block][block_size] rows of n_head_kv *
 * head_dim values for K and for V, stored as F16 (default), F32 or Q8_0
 * (kv_dtype); a sequence's position p lives in block block_table[p /
 * block_size]. Attention reads K/V back from the cache, including the
 * tokens of the current step, in position order, in tiles of ATTN_TILE
 * positions with an online softmax (no score row of the context's length
 * in memory); the query heads that share a KV head, and up to ATTN_QB
 * consecutive tokens of one sequence (a prompt chunk), go together, so each
 * tile is read and converted once for all of them. Results do not depend
 * on batching or on which blocks a sequence got.
 */
#include "backend.h"
#include "dtype.h"
#include "cpu/ops.h"
#include "cpu/pool.h"
#include "cpu/qmm.h"
#include "cpu/quant_mlx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct cpu_kv {
	int n_blocks, bs, type; /* type: DT_F32, DT_F16 or DT_Q8_0 */
	size_t kvdim, row;      /* values and bytes of one position's K (or V) */
	uint8_t *k, *v;         /* [n_layer][n_blocks][bs] rows */
};

static inline size_t kv_off(const struct cpu_kv *kv, int layer, int blk, int off)
{
	return (((size_t)layer * (size_t)kv->n_blocks + (size_t)blk) * (size_t)kv->bs + (size_t)off) * kv->row;
}

/* a weight repacked in groups of R interleaved rows (qmm.h, qmm_x8_rows:
 * 8 for the K types, 16 for the others) */
struct x8w {
	const struct tensor *t;
	uint8_t *data; /* rows / R groups of gbytes */
	size_t gbytes;
	qmm_fn f;
	int R;
};

struct cpu_backend {
	struct backend base;
	struct pool *pool;
	int nth;
	float **row;         /* [nth][max_cols] dequantized weight rows */
	int64_t max_cols;
	float **attn;        /* [nth] attention tile: K, V as float32, scores */
	int *blk;            /* [n_tokens + 1] the step's attention blocks */
	int kv_type;         /* DT_F32, DT_F16 or DT_Q8_0 */
	float *rope_cs;      /* [n][half][2] cos, sin of the prepared positions */
	ops_dot_fn dot;      /* chosen once for this CPU */
	ops_dot4_fn dot4;
	struct ops_vec vec;  /* attention's exp and axpy, swiglu */
	ops_mlx_fn mlx;      /* MLX affine row decoder chosen for this CPU */
	ops_mlx_dot4_fn mlx_dot4; /* fused decode + dot4, or NULL */
	qmm_fn qmm[DT_COUNT];     /* row kernel per weight type (qmm.h), or NULL */
	struct x8w *x8;           /* weights repacked R rows at a time (qmm_x8) */
	uint8_t *arena;           /* their bytes: one mapping in 2 MiB pages where the kernel gives them */
	size_t arena_bytes, arena_used;
	int n_x8;
	uint8_t *xq;              /* the step's activations, quantized for qmm */
	size_t xq_cap;
	float *fh;                /* [FUSE_MAX * max_cols] the normed rows of a fused op (shared) */
	uint8_t *fq;              /* [3 * FUSE_MAX * row bound] its quantized rows, per part */
};

#define CPU(be) ((struct cpu_backend *)(be))

static float *cpu_alloc(struct backend *be, size_t n)
{
	(void)be;
	return malloc((n ? n : 1) * sizeof(float));
}

static void cpu_dealloc(struct backend *be, float *p)
{
	(void)be;
	free(p);
}

static void *cpu_kv_new(struct backend *be, int n_blocks, int bs, char *err)
{
	const struct model_config *c = &be->m->c;
	int type = CPU(be)->kv_type;
	size_t kvdim = (size_t)(c->n_head_kv * c->head_dim);
	size_t row = type == DT_F32 ? kvdim * 4 : type == DT_F16 ? kvdim * 2 : kvdim / 32 * 34;
	size_t n = (size_t)c->n_layer * (size_t)n_blocks * (size_t)bs * row;
	struct cpu_kv *kv = calloc(1, sizeof *kv);
	if (kv) {
		*kv = (struct cpu_kv){.n_blocks = n_blocks, .bs = bs, .type = type, .kvdim = kvdim, .row = row};
		kv->k = calloc(n, 1);
		kv->v = calloc(n, 1);
	}
	if (!kv || !kv->k || !kv->v) {
		if (kv) {
			free(kv->k);
			free(kv->v);
		}
		free(kv);
		seterr(err, INFERD_ENOMEM, "out of memory for a KV cache of %d blocks of %d positions (%zu MiB)", n_blocks,
		       bs, 2 * n >> 20);
		return NULL;
	}
	return kv;
}

static void cpu_kv_free(struct backend *be, void *p)
{
	(void)be;
	struct cpu_kv *kv = p;
	if (!kv)
		return;
	free(kv->k);
	free(kv->v);
	free(kv);
}

static void cpu_kv_copy(struct backend *be, void *p, int dst, int src)
{
	struct cpu_kv *kv = p;
	for (int l = 0; l < be->m->c.n_layer; l++) {
		size_t n = (size_t)kv->bs * kv->row;
		memcpy(kv->k + kv_off(kv, l, dst, 0), kv->k + kv_off(kv, l, src, 0), n);
		memcpy(kv->v + kv_off(kv, l, dst, 0), kv->v + kv_off(kv, l, src, 0), n);
	}
}

/* Row r of weight w as float32 into dst: every type but MLX affine through
 * dtype_to_f32; MLX (codes, scales and biases in three arrays) through the
 * backend's decoder (bitwise the reference's). */
static void weight_row(ops_mlx_fn mlx, const struct tensor *w, int64_t r, const uint8_t *src, float *dst)
{
	if (!dtype_is_mlx(w->type)) {
		dtype_to_f32(w->type, src, dst, w->ne[0]);
		return;
	}
	uint64_t sb = (uint64_t)(w->ne[0] / w->group) * (w->sb_type == DT_F32 ? 4u : 2u) * (uint64_t)r;
	mlx(w->type, src, (const uint8_t *)w->scales + sb, (const uint8_t *)w->biases + sb, w->sb_type, w->group, dst,
	    w->ne[0]);
}

/* ---- get_rows ---- */
struct get_rows_job { float *out; const struct tensor *emb; const int32_t *ids; int n; ops_mlx_fn mlx;
		      const struct x8w *x8; float **tmp; };

static const struct x8w *find_x8(const struct cpu_backend *cb, const struct tensor *t)
{
	for (int i = 0; i < cb->n_x8; i++)
		if (cb->x8[i].t == t)
			return &cb->x8[i];
	return NULL;
}

static void get_rows_fn(void *ctx, int ith, int nth)
{
	struct get_rows_job *j = ctx;
	int64_t a, b, cols = j->emb->ne[0];
	uint64_t rb = j->emb->nbytes / (uint64_t)j->emb->ne[1];
	pool_split(j->n, ith, nth, &a, &b);
	for (int64_t i = a; i < b; i++) {
		if (j->x8) { /* a tied head repacked: the row back in its own layout first */
			uint8_t *tmp = (uint8_t *)j->tmp[ith];
			qmm_x8_row(j->emb->type, j->x8->data + (size_t)(j->ids[i] / j->x8->R) * j->x8->gbytes, j->ids[i] % j->x8->R,
				   cols, tmp);
			dtype_to_f32(j->emb->type, tmp, j->out + i * cols, cols);
			continue;
		}
		weight_row(j->mlx, j->emb, j->ids[i], (const uint8_t *)j->emb->data + (uint64_t)j->ids[i] * rb,
			   j->out + i * cols);
	}
}

static void cpu_get_rows(struct backend *be, float *out, const struct tensor *emb, const int32_t *ids, int n)
{
	struct get_rows_job j = {out, emb, ids, n, CPU(be)->mlx, find_x8(CPU(be), emb), CPU(be)->row};
	pool_run(CPU(be)->pool, get_rows_fn, &j);
}

/* ---- rmsnorm ---- */
struct norm_job { float *out; const float *x; const struct tensor *w; int rows, dim; float eps; float **tmp; };

static void norm_fn(void *ctx, int ith, int nth)
{
	struct norm_job *j = ctx;
	float *w = j->tmp[ith];
	dtype_to_f32(j->w->type, j->w->data, w, j->dim);
	int64_t a, b;
	pool_split(j->rows, ith, nth, &a, &b);
	for (int64_t r = a; r < b; r++)
		ops_rmsnorm_row(j->out + r * j->dim, j->x + r * j->dim, w, j->dim, j->eps);
}

static void cpu_rmsnorm(struct backend *be, float *out, const float *x, const struct tensor *w, int rows, int dim,
			float eps)
{
	struct norm_job j = {out, x, w, rows, dim, eps, CPU(be)->row};
	pool_run(CPU(be)->pool, norm_fn, &j);
}

/* ---- matmul ----
 * Types with a qmm kernel: the activations are quantized once per product
 * (rows split over the threads, then a second pool run), and the threads
 * take chunks of weight rows (pool_chunk) through tiles of 64 tokens (a
 * tile's activations stay in cache while the rows stream), four tokens per
 * call (interleaved rows: eight, F16/BF16 four).
 * Other types (F32, MLX, and every type with cpu_exact): one float32 row
 * at a time against dot4. */
struct mm_job { float *out; const struct tensor *w, *bias; const float *x; int n; float **tmp; ops_dot4_fn dot4;
		ops_mlx_fn mlx; ops_mlx_dot4_fn mlx_dot4; qmm_fn q; const uint8_t *xq; size_t xs;
		const struct x8w *x8; atomic_int_fast64_t cur[POOL_REGIONS]; };

static float row_bias(const struct tensor *bias, int64_t r, int64_t rows)
{
	float v = 0;
	if (bias)
		dtype_to_f32(bias->type, (const uint8_t *)bias->data + (uint64_t)r * (bias->nbytes / (uint64_t)rows), &v, 1);
	return v;
}

/* a group's R row values of one token (d) to its output rows o: as they
 * are, or plus the group's biases; the repacked products and the fused
 * ops both store this way, so the two give the same bits */
static void put_group(float *o, const float *d, int R, const float *bias)
{
	if (!bias) { /* R is 8 or 16: copies of a constant size, inlined (a call
		      * of memcpy per group was 1.3% of a 0.5B decode step) */
		if (R == 16)
			memcpy(o, d, 16 * sizeof *o);
		else if (R == 8)
			memcpy(o, d, 8 * sizeof *o);
		else
			memcpy(o, d, (size_t)R * sizeof *o);
		return;
	}
	for (int r = 0; r < R; r++)
		o[r] = d[r] + bias[r];
}

static void mm_q(struct mm_job *j, int ith, int nth)
{
	int64_t cols = j->w->ne[0], rows = j->w->ne[1], a, b;
	uint64_t rb = j->w->nbytes / (uint64_t)rows;
	while (pool_region_chunk(j->cur, rows, ith, nth, &a, &b))
		for (int t0 = 0; t0 < j->n; t0 += 64) {
			int t1 = j->n - t0 < 64 ? j->n : t0 + 64;
			for (int64_t r = a; r < b; r++) {
				const uint8_t *w = (const uint8_t *)j->w->data + (uint64_t)r * rb;
				float bias = row_bias(j->bias, r, rows), d[4];
				for (int t = t0; t < t1; t += 4) {
					int k = t1 - t < 4 ? t1 - t : 4;
					j->q(w, j->xq + (size_t)t * j->xs, j->xs, k, cols, d);
					for (int q = 0; q < k; q++)
						j->out[(int64_t)(t + q) * rows + r] = d[q] + bias;
				}
			}
		}
}

/* the same over groups of R interleaved rows, up to qmm_x8_max_nt tokens
 * per call (8; F16/BF16 6): a group's bytes are read once per call */
static void mm_x8(struct mm_job *j, int ith, int nth)
{
	int64_t cols = j->w->ne[0], rows = j->w->ne[1], a, b;
	int per = qmm_x8_max_nt(j->w->type), R = j->x8->R;
	while (pool_region_chunk(j->cur, rows / R, ith, nth, &a, &b))
		for (int t0 = 0; t0 < j->n; t0 += 64) {
			int t1 = j->n - t0 < 64 ? j->n : t0 + 64;
			for (int64_t g = a; g < b; g++) {
				const uint8_t *w = j->x8->data + (size_t)g * j->x8->gbytes;
				float bias[16], d[128];
				for (int r = 0; r < R; r++)
					bias[r] = row_bias(j->bias, R * g + r, rows);
				for (int t = t0; t < t1; t += per) {
					int k = t1 - t < per ? t1 - t : per;
					j->x8->f(w, j->xq + (size_t)t * j->xs, j->xs, k, cols, d);
					for (int q = 0; q < k; q++)
						put_group(j->out + (int64_t)(t + q) * rows + R * g, d + R * q, R,
							  j->bias ? bias : NULL);
				}
			}
		}
}

static void mm_fn(void *ctx, int ith, int nth)
{
	struct mm_job *j = ctx;
	if (j->x8) {
		mm_x8(j, ith, nth);
		return;
	}
	if (j->q) {
		mm_q(j, ith, nth);
		return;
	}
	int64_t cols = j->w->ne[0], rows = j->w->ne[1], a, b;
	uint64_t rb = j->w->nbytes / (uint64_t)rows;
	float *tmp = j->tmp[ith];
	pool_split(rows, ith, nth, &a, &b);
	for (int64_t r = a; r < b; r++) {
		const uint8_t *src = (const uint8_t *)j->w->data + (uint64_t)r * rb;
		const float *wr = (const float *)src;
		if (dtype_is_mlx(j->w->type) && j->mlx_dot4 && j->n <= 4) {
			wr = NULL; /* few tokens: decode in registers; more: decode once, below */
		} else if (j->w->type != DT_F32 || ((uintptr_t)src & 3)) { /* safetensors data need not be aligned */
			weight_row(j->mlx, j->w, r, src, tmp);
			wr = tmp;
		}
		float bias = row_bias(j->bias, r, rows);
		float d[4];
		const struct tensor *w = j->w;
		uint64_t sb = dtype_is_mlx(w->type) ? (uint64_t)(cols / w->group) * (w->sb_type == DT_F32 ? 4u : 2u) * (uint64_t)r : 0;
		for (int t = 0; t < j->n; t += 4) {
			int k = j->n - t < 4 ? j->n - t : 4;
			if (wr == NULL) /* MLX, decoded inside the dot (bitwise the same as decode, then dot4) */
				j->mlx_dot4(w->type, src, (const uint8_t *)w->scales + sb, (const uint8_t *)w->biases + sb,
					    w->sb_type, w->group, j->x + (int64_t)t * cols, cols, k, cols, d);
			else
				j->dot4(wr, j->x + (int64_t)t * cols, cols, k, cols, d);
			for (int q = 0; q < k; q++)
				j->out[(int64_t)(t + q) * rows + r] = d[q] + bias;
		}
	}
}

struct quant_job { const float *x; int64_t cols; int n, type; uint8_t *xq; size_t xs; };

static void quant_fn(void *ctx, int ith, int nth)
{
	struct quant_job *j = ctx;
	int64_t a, b;
	pool_split(j->n, ith, nth, &a, &b);
	for (int64_t t = a; t < b; t++)
		qmm_quantize(j->type, j->x + t * j->cols, j->cols, j->xq + (size_t)t * j->xs);
}

static void cpu_matmul(struct backend *be, float *out, const struct tensor *w, const struct tensor *bias,
		       const float *x, int n)
{
	struct cpu_backend *cb = CPU(be);
	struct mm_job j = {out, w, bias, x, n, cb->row, cb->dot4, cb->mlx, cb->mlx_dot4, NULL, NULL, 0, NULL, {0}};
	qmm_fn q = w->type < DT_COUNT ? cb->qmm[w->type] : NULL;
	size_t xs = q ? qmm_xbytes(w->type, w->ne[0]) : 0;
	if (q && !xs) { /* F16/BF16: float rows */
		j.q = q;
		j.xq = (const uint8_t *)x;
		j.xs = (size_t)w->ne[0] * sizeof(float);
		j.x8 = find_x8(cb, w);
	} else if (q) {
		size_t need = xs * (size_t)n;
		if (need > cb->xq_cap) {
			uint8_t *nx = realloc(cb->xq, need);
			if (nx) {
				cb->xq = nx;
				cb->xq_cap = need;
			}
		}
		if (need <= cb->xq_cap) { /* else (out of memory): the float path below */
			struct quant_job qj = {x, w->ne[0], n, w->type, cb->xq, xs};
			pool_run(cb->pool, quant_fn, &qj);
			j.q = q;
			j.xq = cb->xq;
			j.xs = xs;
			j.x8 = find_x8(cb, w);
		}
	}
	pool_run(cb->pool, mm_fn, &j);
}

/* ---- fused decode ops ----
 * With up to FUSE_MAX tokens (decode), norm + q/k/v, norm + gate/up +
 * swiglu, and a product + the residual add each run as one pool run
 * instead of up to seven: the threads norm and quantize the few rows,
 * taking them one at a time from a counter into buffers they share, wait
 * until all are done (no barrier: a thread that arrives late finds them
 * made), then take chunks of the products' row groups. Per value the
 * operations are those of the separate ops, so a token's results do not
 * depend on the path or the batch. Used when every product is repacked
 * (qmm_x8); otherwise the separate ops. */
enum { FUSE_MAX = 8 };
/* bytes of one quantized row of up to max_cols values, either format */
#define FUSE_QROW(cb) ((size_t)(cb)->max_cols * 5 / 4 + 320)
struct fuse_part { const struct x8w *x8; const struct tensor *bias; float *out; };
struct fuse_job {
	struct cpu_backend *cb;
	const float *x; int n, dim; const struct tensor *norm; float eps;
	struct fuse_part p[3]; int np;
	int mode; /* FUSE_QKV, FUSE_SWIGLU (p[0] gate, p[1] up, out p[0].out), FUSE_ADD (out += ) */
	atomic_int_fast64_t cur[POOL_REGIONS];
	atomic_int taken, made; /* activation rows taken and finished */
};
enum { FUSE_QKV, FUSE_SWIGLU, FUSE_ADD };

/* where part i's activation rows are: the float rows (F16/BF16), or
 * quantized ones in slot i of the shared buffer, or those of an earlier
 * part of the same format (qmm_xbytes of 256 values tells x32 from x256);
 * own[i]: part i's slot is made for it */
static void fuse_layout(const struct fuse_job *j, const float *in, const uint8_t **act, size_t *xs, bool *own)
{
	for (int i = 0; i < j->np; i++) {
		int wt = j->p[i].x8->t->type;
		size_t q = qmm_xbytes(wt, j->dim);
		own[i] = false;
		if (!q) {
			xs[i] = (size_t)j->dim * sizeof(float);
			act[i] = (const uint8_t *)in;
			continue;
		}
		xs[i] = q;
		act[i] = NULL;
		for (int e = 0; e < i && !act[i]; e++)
			if (qmm_xbytes(j->p[e].x8->t->type, 256) == qmm_xbytes(wt, 256))
				act[i] = act[e];
		if (!act[i]) {
			act[i] = j->cb->fq + (size_t)i * FUSE_QROW(j->cb) * (size_t)FUSE_MAX;
			own[i] = true;
		}
	}
}

static void fuse_fn(void *ctx, int ith, int nth)
{
	struct fuse_job *j = ctx;
	struct cpu_backend *cb = j->cb;
	const float *in = j->norm ? cb->fh : j->x;
	const uint8_t *act[3];
	size_t xs[3];
	bool own[3], have_w = false;
	fuse_layout(j, in, act, xs, own);
	for (int t; (t = atomic_fetch_add_explicit(&j->taken, 1, memory_order_relaxed)) < j->n;) {
		const float *row = j->x + (int64_t)t * j->dim;
		if (j->norm) {
			if (!have_w)
				dtype_to_f32(j->norm->type, j->norm->data, cb->row[ith], j->dim);
			have_w = true;
			ops_rmsnorm_row(cb->fh + (int64_t)t * j->dim, row, cb->row[ith], j->dim, j->eps);
			row = cb->fh + (int64_t)t * j->dim;
		}
		for (int i = 0; i < j->np; i++)
			if (own[i])
				qmm_quantize(j->p[i].x8->t->type, row, j->dim, (uint8_t *)act[i] + (size_t)t * xs[i]);
		atomic_fetch_add_explicit(&j->made, 1, memory_order_release);
	}
	pool_wait_count(&j->made, j->n);
	int64_t groups[3], total = 0;
	int parts = j->mode == FUSE_SWIGLU ? 1 : j->np; /* gate and up share their groups */
	for (int i = 0; i < parts; i++)
		total += groups[i] = j->p[i].x8->t->ne[1] / j->p[i].x8->R;
	int64_t a, b;
	float d[128], e[128];
	while (pool_region_chunk(j->cur, total, ith, nth, &a, &b))
		for (int64_t c = a; c < b; c++) {
			int i = 0;
			int64_t g = c;
			while (g >= groups[i])
				g -= groups[i++];
			const struct fuse_part *P = &j->p[i];
			int R = P->x8->R;
			int64_t rows = P->x8->t->ne[1], cols = j->dim;
			P->x8->f(P->x8->data + (size_t)g * P->x8->gbytes, act[i], xs[i], j->n, cols, d);
			if (j->mode == FUSE_SWIGLU) { /* one call for the group's tokens, then to their rows */
				const struct fuse_part *U = &j->p[1];
				U->x8->f(U->x8->data + (size_t)g * U->x8->gbytes, act[1], xs[1], j->n, cols, e);
				cb->vec.swiglu(d, d, e, (int64_t)R * j->n);
				for (int t = 0; t < j->n; t++)
					put_group(P->out + (int64_t)t * rows + R * g, d + R * t, R, NULL);
				continue;
			}
			float bias[16];
			for (int r = 0; P->bias && r < R; r++)
				bias[r] = row_bias(P->bias, R * g + r, rows);
			for (int t = 0; t < j->n; t++) {
				float *o = P->out + (int64_t)t * rows + R * g;
				if (j->mode == FUSE_ADD) /* no bias here (the output and down products) */
					for (int r = 0; r < R; r++)
						o[r] += d[R * t + r];
				else
					put_group(o, d + R * t, R, P->bias ? bias : NULL);
			}
		}
}

/* the job when every product is repacked, n is small and the shared
 * scratch is there; else 0 */
static int fuse_ready(struct cpu_backend *cb, struct fuse_job *j, const float *x, int n, int dim,
		      const struct tensor *norm, float eps, int mode, const struct tensor *const *w,
		      const struct tensor *const *bias, float *const *out, int np)
{
	if (n < 1 || n > FUSE_MAX || !cb->fh || !cb->fq || dim > cb->max_cols)
		return 0;
	*j = (struct fuse_job){cb, x, n, dim, norm, eps, {{0}}, np, mode, {0}, 0, 0};
	for (int i = 0; i < np; i++) {
		const struct x8w *x8 = w[i] ? find_x8(cb, w[i]) : NULL;
		if (!x8 || w[i]->ne[0] != dim || qmm_x8_max_nt(w[i]->type) < n)
			return 0;
		j->p[i] = (struct fuse_part){x8, bias[i], out[i]};
	}
	if (mode == FUSE_SWIGLU && (j->p[0].x8->R != j->p[1].x8->R || w[0]->ne[1] != w[1]->ne[1]))
		return 0;
	return 1;
}

static int cpu_norm_qkv(struct backend *be, float *q, float *k, float *v, const float *x,
			const struct layer_weights *w, int n, float eps)
{
	struct cpu_backend *cb = CPU(be);
	const struct tensor *ws[3] = {w->wq, w->wk, w->wv}, *bs[3] = {w->bq, w->bk, w->bv};
	float *outs[3] = {q, k, v};
	struct fuse_job j;
	if (!fuse_ready(cb, &j, x, n, be->m->c.n_embd, w->attn_norm, eps, FUSE_QKV, ws, bs, outs, 3))
		return 0;
	pool_run(cb->pool, fuse_fn, &j);
	return 1;
}

static int cpu_norm_gate_up(struct backend *be, float *out, const float *x, const struct layer_weights *w, int n,
			    float eps)
{
	struct cpu_backend *cb = CPU(be);
	const struct tensor *ws[2] = {w->w_gate, w->w_up}, *bs[2] = {NULL, NULL};
	float *outs[2] = {out, NULL};
	struct fuse_job j;
	if (!fuse_ready(cb, &j, x, n, be->m->c.n_embd, w->ffn_norm, eps, FUSE_SWIGLU, ws, bs, outs, 2))
		return 0;
	pool_run(cb->pool, fuse_fn, &j);
	return 1;
}

static int cpu_matmul_add(struct backend *be, float *x, const struct tensor *w, const float *in, int n)
{
	struct cpu_backend *cb = CPU(be);
	const struct tensor *ws[1] = {w}, *bs[1] = {NULL};
	float *outs[1] = {x};
	struct fuse_job j;
	if (!fuse_ready(cb, &j, in, n, (int)w->ne[0], NULL, 0, FUSE_ADD, ws, bs, outs, 1))
		return 0;
	pool_run(cb->pool, fuse_fn, &j);
	return 1;
}

/* ---- rope ---- */
struct rope_job { float *x; int n, heads, hd; bool neox; const float *cs; };

static void rope_fn(void *ctx, int ith, int nth)
{
	struct rope_job *j = ctx;
	int half = j->hd / 2;
	int64_t a, b;
	pool_split((int64_t)j->n * j->heads, ith, nth, &a, &b);
	for (int64_t r = a; r < b; r++) {
		float *x = j->x + r * j->hd;
		const float *cs = j->cs + (r / j->heads) * half * 2;
		for (int i = 0; i < half; i++) {
			int i0 = j->neox ? i : 2 * i, i1 = j->neox ? i + half : 2 * i + 1;
			float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[i0], x1 = x[i1];
			x[i0] = x0 * c - x1 * s;
			x[i1] = x1 * c + x0 * s;
		}
	}
}

static void cpu_rope(struct backend *be, float *x, int n, int n_heads)
{
	const struct model_config *c = &be->m->c;
	struct rope_job j = {x, n, n_heads, c->head_dim, c->rope_style == ROPE_NEOX, CPU(be)->rope_cs};
	pool_run(CPU(be)->pool, rope_fn, &j);
}

/* ---- attention ---- */
enum { ATTN_TILE = 64 };

/* positions p0..p0+n-1 of KV head kh of one sequence as float32 rows of hd */
static void kv_tile(const struct cpu_kv *kv, const uint8_t *base, int layer, const int32_t *table, int p0, int n,
		    int kh, int hd, float *dst)
{
	for (int i = 0; i < n; i++) {
		int p = p0 + i;
		const uint8_t *row = base + kv_off(kv, layer, table[p / kv->bs], p % kv->bs);
		if (kv->type == DT_F32)
			memcpy(dst + (size_t)i * hd, row + (size_t)kh * hd * 4, (size_t)hd * 4);
		else if (kv->type == DT_F16)
			qmm_f16_to_f32(row + (size_t)kh * hd * 2, dst + (size_t)i * hd, hd);
		else
			dtype_to_f32(DT_Q8_0, row + (size_t)kh * hd / 32 * 34, dst + (size_t)i * hd, hd);
	}
}

enum { ATTN_QB = 16 }; /* consecutive tokens of one sequence sharing each tile */

struct attn_job { float *out; const float *q; const struct batch *b; int layer; float **scratch;
		  const struct model_config *c; ops_dot_fn dot; const int *blk; int n_blk; struct ops_vec vec;
		  atomic_int_fast64_t next; };

/* one (block of tokens of one sequence, KV head): the block's tokens times
 * the `group` query heads of that KV head, over each tile of positions in
 * order, with a running max and sum per (token, head). A token's numbers
 * depend only on its own query and positions: the tiles start at 0 and
 * every 64 whatever block it is in. */
static void attn_fn(void *ctx, int ith, int nth)
{
	struct attn_job *j = ctx;
	const struct model_config *c = j->c;
	const struct cpu_kv *kv = j->b->kv;
	int hd = c->head_dim, H = c->n_head, HK = c->n_head_kv, group = H / HK;
	float scale = 1.0f / sqrtf((float)hd);
	float *kt = j->scratch[ith], *vt = kt + ATTN_TILE * hd, *sc = vt + ATTN_TILE * hd,
	      *mx = sc + ATTN_TILE, *sum = mx + ATTN_QB * group;
	int64_t a, b, n_it = (int64_t)j->n_blk * HK;
	/* the last blocks first (in a causal prompt they see the most
	 * positions), in chunks from a shared counter: a static split gave one
	 * thread 3x the other's work on a 512-token prompt */
	while (pool_chunk(&j->next, n_it, nth, &a, &b))
	for (int64_t ic = a; ic < b; ic++) {
		int64_t it = n_it - 1 - ic;
		int bi = (int)(it / HK), kh = (int)(it % HK), t0 = j->blk[bi], t1 = j->blk[bi + 1];
		int Lmax = j->b->pos[t1 - 1] + 1;
		const int32_t *table = j->b->block_table[j->b->seq[t0]];
		for (int t = t0; t < t1; t++)
			for (int g = 0; g < group; g++) {
				mx[(t - t0) * group + g] = -INFINITY;
				sum[(t - t0) * group + g] = 0;
				memset(j->out + ((int64_t)t * H + kh * group + g) * hd, 0, (size_t)hd * sizeof(float));
			}
		for (int p0 = 0; p0 < Lmax; p0 += ATTN_TILE) {
			int nmax = Lmax - p0 < ATTN_TILE ? Lmax - p0 : ATTN_TILE;
			kv_tile(kv, kv->k, j->layer, table, p0, nmax, kh, hd, kt);
			kv_tile(kv, kv->v, j->layer, table, p0, nmax, kh, hd, vt);
			for (int t = t0; t < t1; t++) {
				int L = j->b->pos[t] + 1, n = L - p0 < ATTN_TILE ? L - p0 : ATTN_TILE;
				if (n <= 0)
					continue;
				for (int g = 0; g < group; g++) {
					int64_t row = (int64_t)t * H + kh * group + g;
					int st = (t - t0) * group + g;
					const float *q = j->q + row * hd;
					float *o = j->out + row * hd, m = mx[st];
					for (int i = 0; i < n; i++) {
						sc[i] = j->dot(q, kt + (size_t)i * hd, hd) * scale;
						m = sc[i] > m ? sc[i] : m;
					}
					float corr = expf(mx[st] - m); /* exp(-inf) = 0 on the first tile */
					for (int k = 0; k < hd; k++)
						o[k] *= corr;
					float l = sum[st] * corr + j->vec.exp_shift(sc, n, m);
					for (int i = 0; i < n; i++)
						j->vec.axpy(o, sc[i], vt + (size_t)i * hd, hd);
					mx[st] = m;
					sum[st] = l;
				}
			}
		}
		for (int t = t0; t < t1; t++)
			for (int g = 0; g < group; g++) {
				float *o = j->out + ((int64_t)t * H + kh * group + g) * hd,
				      inv = 1.0f / sum[(t - t0) * group + g];
				for (int k = 0; k < hd; k++)
					o[k] *= inv;
			}
	}
}

/* the step's K and V rows into the cache, in its storage type */
struct store_job { const struct batch *b; const float *k, *v; int layer; };

static void store_fn(void *ctx, int ith, int nth)
{
	struct store_job *j = ctx;
	const struct cpu_kv *kv = j->b->kv;
	int64_t a, b;
	pool_split(j->b->n_tokens, ith, nth, &a, &b);
	for (int64_t t = a; t < b; t++) {
		int p = j->b->pos[t];
		size_t off = kv_off(kv, j->layer, j->b->block_table[j->b->seq[t]][p / kv->bs], p % kv->bs);
		if (kv->type == DT_F32) {
			memcpy(kv->k + off, j->k + t * (int64_t)kv->kvdim, kv->row);
			memcpy(kv->v + off, j->v + t * (int64_t)kv->kvdim, kv->row);
		} else if (kv->type == DT_F16) {
			qmm_f32_to_f16(j->k + t * (int64_t)kv->kvdim, kv->k + off, (int64_t)kv->kvdim);
			qmm_f32_to_f16(j->v + t * (int64_t)kv->kvdim, kv->v + off, (int64_t)kv->kvdim);
		} else {
			dtype_from_f32(kv->type, j->k + t * (int64_t)kv->kvdim, kv->k + off, (int64_t)kv->kvdim);
			dtype_from_f32(kv->type, j->v + t * (int64_t)kv->kvdim, kv->v + off, (int64_t)kv->kvdim);
		}
	}
}

static void cpu_attention(struct backend *be, float *out, const float *q, const float *k, const float *v,
			  const struct batch *b, int layer)
{
	struct cpu_backend *cb = CPU(be);
	struct store_job sj = {b, k, v, layer};
	pool_run(cb->pool, store_fn, &sj);
	/* blocks: runs of up to ATTN_QB consecutive tokens of one sequence */
	int nb = 0;
	cb->blk[0] = 0;
	for (int t = 1; t <= b->n_tokens; t++)
		if (t == b->n_tokens || b->seq[t] != b->seq[t - 1] || b->pos[t] != b->pos[t - 1] + 1 ||
		    t - cb->blk[nb] == ATTN_QB)
			cb->blk[++nb] = t;
	struct attn_job j = {out, q, b, layer, cb->attn, &be->m->c, cb->dot, cb->blk, nb, cb->vec, 0};
	pool_run(cb->pool, attn_fn, &j);
}

/* ---- elementwise ---- */
struct ew_job { float *out; const float *a, *b; int64_t n; void (*swiglu)(float *, const float *, const float *, int64_t); };

static void swiglu_fn(void *ctx, int ith, int nth)
{
	struct ew_job *j = ctx;
	int64_t a, b;
	pool_split(j->n, ith, nth, &a, &b);
	j->swiglu(j->out + a, j->a + a, j->b + a, b - a);
}

static void add_fn(void *ctx, int ith, int nth)
{
	struct ew_job *j = ctx;
	int64_t a, b;
	pool_split(j->n, ith, nth, &a, &b);
	for (int64_t i = a; i < b; i++)
		j->out[i] += j->a[i];
}

static void cpu_swiglu(struct backend *be, float *out, const float *gate, const float *up, int64_t n)
{
	struct ew_job j = {out, gate, up, n, CPU(be)->vec.swiglu};
	pool_run(CPU(be)->pool, swiglu_fn, &j);
}

static void cpu_add(struct backend *be, float *x, const float *y, int64_t n)
{
	struct ew_job j = {x, y, NULL, n, NULL};
	pool_run(CPU(be)->pool, add_fn, &j);
}

static void cpu_gather(struct backend *be, float *dst, const float *src, const int32_t *rows, int n, int dim)
{
	(void)be;
	for (int i = 0; i < n; i++)
		memmove(dst + (int64_t)i * dim, src + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

static void cpu_read(struct backend *be, float *host, const float *src, size_t n)
{
	(void)be;
	memcpy(host, src, n * sizeof(float));
}

static int cpu_begin_step(struct backend *be, const struct batch *b, char *err)
{
	struct cpu_backend *cb = CPU(be);
	const struct inferd_model *m = be->m;
	int half = m->c.head_dim / 2, n = b->n_tokens;
	float *cs = realloc(cb->rope_cs, (size_t)(n ? n : 1) * (size_t)half * 2 * sizeof(float));
	if (cs)
		cb->rope_cs = cs;
	int *blk = realloc(cb->blk, (size_t)(n + 1) * sizeof(int));
	if (blk)
		cb->blk = blk;
	if (!cs || !blk)
		return seterr(err, INFERD_ENOMEM, "out of memory for a step of %d tokens", n);
	for (int t = 0; t < n; t++)
		for (int i = 0; i < half; i++) {
			double ang = (double)b->pos[t] * m->inv_freq[i];
			cs[((size_t)t * half + i) * 2] = (float)(cos(ang) * m->rope_mscale);
			cs[((size_t)t * half + i) * 2 + 1] = (float)(sin(ang) * m->rope_mscale);
		}
	return 0;
}

static void cpu_free(struct backend *be)
{
	struct cpu_backend *cb = CPU(be);
	if (!cb)
		return;
	pool_free(cb->pool);
	for (int i = 0; i < cb->nth; i++) {
		if (cb->row)
			free(cb->row[i]);
		if (cb->attn)
			free(cb->attn[i]);
	}
	free(cb->row);
	free(cb->attn);
	free(cb->rope_cs);
	free(cb->blk);
	free(cb->xq);
	free(cb->fh);
	free(cb->fq);
	if (cb->arena)
		munmap(cb->arena, cb->arena_bytes);
	free(cb->x8);
	free(cb);
}

/* ---- repacking ----
 * At creation, every product weight of a type with an interleaved layout
 * (qmm_x8: every quantized type, F16 and BF16 on AVX-512 VNNI CPUs) whose rows come in
 * groups of qmm_x8_rows (8 or 16) and whose bytes lie in a mapped file is repacked once, and
 * the file's pages under it are dropped from the process (madvise; the
 * mapping stays valid and would read them back), so the resident size
 * stays that of the weights (a tied head's embedding rows are read back
 * from the repacked copy, qmm_x8_row). In-memory weights stay as they are. */
struct pack_job { const struct tensor *t; uint8_t *dst; size_t gbytes; };

static void drop_pages(const void *p, uint64_t n);

/* each thread packs its groups and drops the source pages behind it as it
 * goes, so a large tensor is never resident twice */
static void pack_fn(void *ctx, int ith, int nth)
{
	struct pack_job *j = ctx;
	int64_t a, b;
	uint64_t rb = j->t->nbytes / (uint64_t)j->t->ne[1];
	const uint8_t *src = j->t->data;
	uint64_t R = (uint64_t)qmm_x8_rows(j->t->type);
	pool_split(j->t->ne[1] / (int64_t)R, ith, nth, &a, &b);
	for (int64_t g = a, done = a; g < b; g++) {
		qmm_x8_pack(j->t->type, src + (uint64_t)g * R * rb, rb, j->t->ne[0], j->dst + (size_t)g * j->gbytes);
		if (g + 1 - done >= 256 || g + 1 == b) {
			drop_pages(src + (uint64_t)done * R * rb, (uint64_t)(g + 1 - done) * R * rb);
			done = g + 1;
		}
	}
}

static bool in_file(const struct inferd_model *m, const struct tensor *t)
{
	const uint8_t *p = t->data;
	if (m->gguf.f.data && p >= m->gguf.f.data && p + t->nbytes <= m->gguf.f.data + m->gguf.f.size)
		return true;
	for (int i = 0; i < m->st.n_files; i++)
		if (m->st.files[i].data && p >= m->st.files[i].data && p + t->nbytes <= m->st.files[i].data + m->st.files[i].size)
			return true;
	return false;
}

static void drop_pages(const void *p, uint64_t n)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + pg - 1) & ~(pg - 1),
		  b = ((uintptr_t)p + n) & ~(pg - 1);
	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* the bytes tensor t takes repacked, 0 when it stays as it is */
static size_t repacked_bytes(const struct inferd_model *m, const struct tensor *t)
{
	size_t gb = t && !dtype_is_mlx(t->type) ? qmm_x8_bytes(t->type, t->ne[0]) : 0;
	int R = t ? qmm_x8_rows(t->type) : 8;
	if (!gb || t->ne[1] % R || !in_file(m, t))
		return 0;
	return (gb * (size_t)(t->ne[1] / R) + 63) & ~(size_t)63;
}

static void repack_one(struct cpu_backend *cb, const struct inferd_model *m, const struct tensor *t)
{
	size_t n = repacked_bytes(m, t);
	if (!n)
		return;
	struct pack_job j = {t, cb->arena + cb->arena_used, qmm_x8_bytes(t->type, t->ne[0])};
	cb->arena_used += n;
	pool_run(cb->pool, pack_fn, &j);
	cb->x8[cb->n_x8++] = (struct x8w){t, j.dst, j.gbytes, qmm_x8_get(t->type), qmm_x8_rows(t->type)};
	drop_pages(t->data, t->nbytes);
}

/* Every repacked weight lies in one anonymous mapping aligned to 2 MiB and
 * marked MADV_HUGEPAGE: decoding streams all of it once per token, and
 * with 4 KiB pages every 4 KiB read costs a TLB miss (two-level page walks
 * under a hypervisor); huge pages took the read probe from 27 to 29 GB/s
 * on one thread here. Where the kernel gives no huge pages it is plain
 * memory. */
static int repack(struct cpu_backend *cb, const struct inferd_model *m)
{
	cb->x8 = calloc((size_t)(7 * m->c.n_layer + 1), sizeof *cb->x8);
	if (!cb->x8)
		return -1;
	size_t total = repacked_bytes(m, m->output), huge = (size_t)2 << 20;
	for (int i = 0; i < m->c.n_layer; i++) {
		const struct layer_weights *l = &m->layers[i];
		const struct tensor *ts[7] = {l->wq, l->wk, l->wv, l->wo, l->w_gate, l->w_up, l->w_down};
		for (int k = 0; k < 7; k++)
			total += repacked_bytes(m, ts[k]);
	}
	if (!total)
		return 0;
	cb->arena_bytes = (total + huge - 1) & ~(huge - 1);
	uint8_t *p = mmap(NULL, cb->arena_bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	uint8_t *a = (uint8_t *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (a > p) /* keep exactly the aligned span mapped */
		munmap(p, (size_t)(a - p));
	munmap(a + cb->arena_bytes, huge - (size_t)(a - p));
	cb->arena = a;
#ifdef MADV_HUGEPAGE
	madvise(a, cb->arena_bytes, MADV_HUGEPAGE);
#endif
	for (int i = 0; i < m->c.n_layer; i++) {
		const struct layer_weights *l = &m->layers[i];
		const struct tensor *ts[7] = {l->wq, l->wk, l->wv, l->wo, l->w_gate, l->w_up, l->w_down};
		for (int k = 0; k < 7; k++)
			repack_one(cb, m, ts[k]);
	}
	repack_one(cb, m, m->output);
	return 0;
}

static const struct backend_ops cpu_ops = {
	.name = "cpu",
	.free = cpu_free,
	.alloc = cpu_alloc,
	.dealloc = cpu_dealloc,
	.kv_new = cpu_kv_new,
	.kv_free = cpu_kv_free,
	.kv_copy = cpu_kv_copy,
	.begin_step = cpu_begin_step,
	.get_rows = cpu_get_rows,
	.rmsnorm = cpu_rmsnorm,
	.matmul = cpu_matmul,
	.rope = cpu_rope,
	.attention = cpu_attention,
	.swiglu = cpu_swiglu,
	.add = cpu_add,
	.gather = cpu_gather,
	.read = cpu_read,
	.matmul_add = cpu_matmul_add,
	.norm_qkv = cpu_norm_qkv,
	.norm_gate_up = cpu_norm_gate_up,
};

int cpu_backend_new(const struct inferd_model *m, int n_threads, int exact, int kv_type, struct backend **out,
		    char *err)
{
	if (kv_type == DT_Q8_0 && m->c.head_dim % 32)
		return seterr(err, INFERD_EINVAL, "kv_dtype q8_0 needs a head dimension that is a multiple of 32 (this model's is %d)",
			      m->c.head_dim);
	struct cpu_backend *cb = calloc(1, sizeof *cb);
	if (!cb)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	cb->kv_type = kv_type;
	cb->base.ops = &cpu_ops;
	cb->base.host_mem = 1;
	cb->base.m = m;
	cb->dot = ops_dot_best();
	cb->dot4 = ops_dot4_best();
	cb->vec = ops_vec_best();
	cb->mlx = ops_mlx_best();
	/* non-NULL exactly when dot4 is the AVX2/FMA dot, whose order it reproduces */
	cb->mlx_dot4 = ops_mlx_dot4_best();
	/* row kernels: F16/BF16 always (bitwise the float path); quantized
	 * types with 8-bit activations unless the model asks for float32 */
	enum qmm_isa isa = qmm_isa_best();
	for (int t = 0; t < DT_COUNT; t++)
		if (!exact || t == DT_F16 || t == DT_BF16)
			cb->qmm[t] = qmm_get(t, isa);
	cb->pool = pool_new(n_threads);
	if (!cb->pool)
		goto oom;
	cb->nth = pool_size(cb->pool);
	const struct model_config *c = &m->c;
	int64_t mc = c->n_embd;
	if (c->n_ff > mc)
		mc = c->n_ff;
	if ((int64_t)c->n_head * c->head_dim > mc)
		mc = (int64_t)c->n_head * c->head_dim;
	cb->max_cols = mc;
	cb->row = calloc((size_t)cb->nth, sizeof(float *));
	cb->attn = calloc((size_t)cb->nth, sizeof(float *));
	if (!cb->row || !cb->attn)
		goto oom;
	int group = c->n_head / c->n_head_kv;
	size_t attn = (size_t)(2 * ATTN_TILE * c->head_dim + ATTN_TILE + 2 * ATTN_QB * group);
	for (int i = 0; i < cb->nth; i++)
		if (!(cb->row[i] = malloc((size_t)mc * sizeof(float))) || !(cb->attn[i] = malloc(attn * sizeof(float))))
			goto oom;
	if (!exact && repack(cb, m) != 0)
		goto oom;
	if (cb->n_x8) { /* the fused decode ops' scratch (else they take the separate ops) */
		cb->fh = malloc((size_t)FUSE_MAX * (size_t)mc * sizeof(float));
		cb->fq = malloc(3 * (size_t)FUSE_MAX * FUSE_QROW(cb));
		if (!cb->fh || !cb->fq)
			goto oom;
	}
	*out = &cb->base;
	return 0;
oom:
	cpu_free(&cb->base);
	return seterr(err, INFERD_ENOMEM, "out of memory creating the CPU backend");
}
