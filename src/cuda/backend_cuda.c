/*
 * backend_cuda.c — the CUDA backend: the vtable of backend.h over the
 * kernels of kernels.cu and sample.cu, and cuBLAS for products of many
 * tokens (tensor cores with 16-bit activations by default, float32 SGEMM
 * with gpu_exact).
 *
 * A step: begin_step packs the batch descriptor (ids, positions, block
 * tables, rotary table, wanted rows) into a pinned buffer and uploads it in
 * one copy; activations come from an arena reset by every step, so a step
 * of one shape gets the same addresses each time. Decode-sized steps are
 * recorded once as a CUDA graph (the second time a shape is seen; the first
 * sizes the arena) and replayed after: the ops then enqueue nothing and the
 * graph is launched when the logits are read or sampled.
 *
 * Decode steps (the warp kernels' sizes) run each layer in few launches:
 * rmsnorm with the q/k/v products stacked in one launch (norm_qkv), rope
 * with the KV store then attention (rope_attention), the output product
 * with the residual add (matmul_add), rmsnorm with gate/up and swiglu in
 * one launch (norm_gate_up), the down product with the residual add; in the
 * default mode, Q8_0/Q4_K/Q6_K weights take 8-bit activations from a
 * norm + quantize kernel instead. Where a fused form does not apply the op
 * declines (returns 0) and forward.c runs the steps one by one, with the
 * same results bitwise.
 *
 * Ownership and threads: one backend per model. It owns one CUDA stream,
 * one cuBLAS handle bound to that stream, one memory pool for activations
 * and the device copies of the model's weights, uploaded once in their file
 * format (quantized weights stay quantized; MLX affine rows are regrouped
 * with their scales and biases, still quantized). Only the model's executor
 * thread (or a caller holding the model's eval lock) calls these ops, so
 * nothing here locks; two models on one GPU are two backends with two
 * streams and run concurrently. Every op enqueues on the stream and returns;
 * sync (end of a step) waits for the stream and reports the first error.
 *
 * Errors: every CUDA call is checked and the first failure is kept with its
 * CUDA error text. Out of memory is an ordinary error (that allocation or
 * load fails, the others go on). Errors that poison the CUDA context
 * (illegal address and the other sticky ones) mark the backend dead: every
 * later step fails at once with the same message, and the executor reports
 * it as INFERD_EDEVICE so the process can exit and be restarted.
 *
 * KV cache: paged, float32, [layer][block][block_size][n_head_kv * head_dim]
 * for K and for V (the CPU layout), in device memory.
 */
#include "backend.h"
#include "dtype.h"
#include "sample.h"
#include "util.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* products of at least this many tokens go through cuBLAS (weights
 * dequantized to a float32 scratch), smaller ones through the warp kernels
 * (and CUDA graphs); INFERD_CUDA_BLAS_MIN overrides it */
#define BLAS_MIN_TOKENS 65
#define BLAS_MAX_SCRATCH ((size_t)256 << 20)
/* unless the model asks for exact float32 (gpu_exact), products of at least
 * this many tokens run on tensor cores with 16-bit activations */
#define MIXED_MIN_TOKENS 8

struct cu_kv {
	int n_blocks, bs, kvdim;
	float *k, *v;
};

struct cu_backend {
	struct backend base;
	int dev;
	char dev_name[256];
	cudaStream_t st;
	cublasHandle_t blas;
	cudaMemPool_t pool;
	void **wdev;            /* [m->n_tensors] device copy of each weight */
	size_t weight_bytes;
	/* the step's descriptor: packed in pinned host memory, one copy up */
	uint8_t *h_step, *d_step;
	int cap_n, cap_s, cap_w;   /* tokens, sequences, block-table width */
	int32_t *d_ids, *d_pos, *d_seq, *d_rows, *d_tables;
	float *d_cs;
	int max_nb;                /* the width of the uploaded tables */
	const int32_t *cur_ids;    /* the batch's host ids (get_rows uses d_ids) */
	int cur_n, cur_nout, cur_nseq;
	int32_t *cur_rows;         /* host copy of the wanted rows [cap_n] */
	int32_t *d_tmp;            /* row indices for a gather outside a step */
	size_t tmp_cap;
	/* activations: a bump arena reset by each step, so a step of one shape
	 * gets the same addresses every time (what a CUDA graph replays) */
	uint8_t *arena;
	size_t arena_cap, arena_used, arena_need;
	int in_step;               /* between begin_step and sync: the arena serves */
	int overflowed;            /* this step needed more than the arena */
	/* CUDA graphs of decode steps, by shape */
	struct graph { int n, n_seq, n_out; size_t arena_used; cudaGraphExec_t exec; } graphs[64];
	int n_graphs;
	struct shape { int n, n_seq, n_out; size_t arena_used; } shapes[64]; /* run once */
	int n_seen;
	int capturing;             /* ops are being recorded into a graph */
	int replay;                /* index of the graph to launch, or -1 */
	int use_graphs;
	int blas_min;              /* BLAS_MIN_TOKENS */
	int mixed_min;             /* tensor-core products from this many tokens
				    * (16-bit activations); 0: float32 only */
	size_t budget;          /* bytes of weights + KV allowed; 0 = the device's */
	/* sampling scratch */
	void *d_sbuf;
	unsigned long long *d_keys;
	double *d_pref;
	size_t sbuf_cap, keys_cap, pref_cap;
	int32_t *seen, *count;  /* host [n_vocab], zero between calls */
	/* errors */
	int err;                /* first error (INFERD_E*), 0 if none */
	int dead;               /* a sticky error: the context is lost */
	char msg[INFERD_ERR_LEN];
	uint64_t steps;
	int64_t fault_step;     /* test hook: fault at this step, -1 = never */
};

#define CU(be) ((struct cu_backend *)(be))

static int is_sticky(cudaError_t e)
{
	switch (e) {
	case cudaErrorIllegalAddress:
	case cudaErrorLaunchFailure:
	case cudaErrorHardwareStackError:
	case cudaErrorIllegalInstruction:
	case cudaErrorMisalignedAddress:
	case cudaErrorInvalidAddressSpace:
	case cudaErrorInvalidPc:
	case cudaErrorAssert:
	case cudaErrorLaunchTimeout:
	case cudaErrorECCUncorrectable:
	case cudaErrorUnknown:
		return 1;
	default:
		return 0;
	}
}

/* Record e (the first error wins); returns nonzero on error. */
static int ck(struct cu_backend *cb, cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return 0;
	if (!cb->err) {
		int sticky = is_sticky(e);
		cb->err = sticky ? INFERD_EDEVICE : e == cudaErrorMemoryAllocation ? INFERD_ENOMEM : INFERD_EDEVICE;
		cb->dead |= sticky;
		snprintf(cb->msg, sizeof cb->msg, "CUDA error on cuda:%d (%s) in %s: %s (%s)%s", cb->dev, cb->dev_name,
			 what, cudaGetErrorString(e), cudaGetErrorName(e),
			 sticky ? "; the CUDA context is lost and the process must restart" : "");
	}
	return 1;
}

static void launched(struct cu_backend *cb, const char *what) { ck(cb, cudaGetLastError(), what); }

/* A failed cuBLAS call: the CUDA error behind it when there is one (a lost
 * context shows as "failed to launch"), else cuBLAS's own status. */
static void blas_ck(struct cu_backend *cb, cublasStatus_t st, const char *what)
{
	if (st == CUBLAS_STATUS_SUCCESS || cb->err)
		return;
	cudaError_t e = cudaStreamSynchronize(cb->st);
	if (e == cudaSuccess)
		e = cudaGetLastError();
	if (ck(cb, e, what))
		return;
	cb->err = INFERD_EDEVICE;
	snprintf(cb->msg, sizeof cb->msg, "cuBLAS error on cuda:%d (%s) in %s: %s", cb->dev, cb->dev_name, what,
		 cublasGetStatusString(st));
}

static const void *W(struct cu_backend *cb, const struct tensor *t)
{
	return t ? cb->wdev[t - cb->base.m->tensors] : NULL;
}

/* Bytes of a weight row on the device: the file's, except MLX affine rows,
 * uploaded self-contained (kernels.cu): a 16-byte header {group, bytes of
 * codes}, the codes, then float32 (scale, bias) per group. */
static size_t row_bytes(const struct tensor *t)
{
	if (dtype_is_mlx(t->type))
		return 16 + (size_t)(t->nbytes / (uint64_t)t->ne[1]) + 8 * (size_t)(t->ne[0] / t->group);
	return (size_t)(t->nbytes / (uint64_t)t->ne[1]);
}

static size_t dev_bytes(const struct tensor *t)
{
	return dtype_is_mlx(t->type) ? row_bytes(t) * (size_t)t->ne[1] : (size_t)t->nbytes;
}

/* An MLX tensor in its device layout (host memory, the caller frees it);
 * scales and biases become float32 exactly (they are F16, BF16 or F32). */
static uint8_t *mlx_rows(const struct tensor *t)
{
	size_t rb = row_bytes(t), cb = (size_t)(t->nbytes / (uint64_t)t->ne[1]);
	int64_t ng = t->ne[0] / t->group;
	uint8_t *buf = malloc(rb * (size_t)t->ne[1]);
	float *one = malloc(sizeof(float) * 2 * (size_t)ng);
	if (!buf || !one) {
		free(buf);
		free(one);
		return NULL;
	}
	for (int64_t r = 0; r < t->ne[1]; r++) {
		uint8_t *row = buf + rb * (size_t)r;
		int32_t hdr[4] = {t->group, (int32_t)cb, 0, 0};
		memcpy(row, hdr, 16);
		memcpy(row + 16, (const uint8_t *)t->data + cb * (size_t)r, cb);
		/* scale and bias of each group, as float32 (exact) */
		size_t sbs = (t->sb_type == DT_F32 ? 4 : 2) * (size_t)ng * (size_t)r;
		for (int64_t g = 0; g < ng; g++) {
			float v[2];
			dtype_to_f32(t->sb_type, (const uint8_t *)t->scales + sbs + (size_t)g * (t->sb_type == DT_F32 ? 4 : 2), &v[0], 1);
			dtype_to_f32(t->sb_type, (const uint8_t *)t->biases + sbs + (size_t)g * (t->sb_type == DT_F32 ? 4 : 2), &v[1], 1);
			one[2 * g] = v[0];
			one[2 * g + 1] = v[1];
		}
		memcpy(row + 16 + cb, one, sizeof(float) * 2 * (size_t)ng);
	}
	free(one);
	return buf;
}

static void *dmalloc(struct cu_backend *cb, size_t bytes, const char *what)
{
	void *p = NULL;
	if (ck(cb, cudaMallocFromPoolAsync(&p, bytes ? bytes : 1, cb->pool, cb->st), what))
		return NULL;
	return p;
}

static void dfree(struct cu_backend *cb, void *p)
{
	if (p)
		ck(cb, cudaFreeAsync(p, cb->st), "cudaFreeAsync");
}

/* grow *p to hold `need` bytes (contents not kept) */
static int grow(struct cu_backend *cb, void **p, size_t *cap, size_t need, const char *what)
{
	if (need <= *cap && *p)
		return 0;
	dfree(cb, *p);
	*p = dmalloc(cb, need, what);
	*cap = *p ? need : 0;
	return *p ? 0 : -1;
}

static void h2d(struct cu_backend *cb, void *dst, const void *src, size_t bytes)
{
	if (bytes)
		ck(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->st), "copy to the device");
}

/* ---- vtable ---- */

static void graphs_drop(struct cu_backend *cb)
{
	for (int i = 0; i < cb->n_graphs; i++)
		cudaGraphExecDestroy(cb->graphs[i].exec);
	cb->n_graphs = 0;
	cb->n_seen = 0;
}

/* Inside a step (after begin_step, until sync) buffers come from the arena
 * and live until the next step; outside one, or when the arena is full,
 * from the memory pool until dealloc. */
static float *cu_alloc(struct backend *be, size_t n)
{
	struct cu_backend *cb = CU(be);
	size_t bytes = (n * sizeof(float) + 255) & ~(size_t)255;
	if (cb->in_step) {
		size_t end = cb->arena_used + bytes;
		if (end > cb->arena_need)
			cb->arena_need = end; /* the next step gets an arena this large */
		if (end <= cb->arena_cap) {
			float *p = (float *)(cb->arena + cb->arena_used);
			cb->arena_used = end;
			return p;
		}
		cb->arena_used = end;
		cb->overflowed = 1;
	}
	return dmalloc(cb, bytes, "activations");
}

static void cu_dealloc(struct backend *be, float *p)
{
	struct cu_backend *cb = CU(be);
	if (cb->arena && (uint8_t *)p >= cb->arena && (uint8_t *)p < cb->arena + cb->arena_cap)
		return; /* arena memory is reused by the next step */
	dfree(cb, p);
}

static void *cu_kv_new(struct backend *be, int n_blocks, int bs, char *err)
{
	struct cu_backend *cb = CU(be);
	const struct model_config *c = &be->m->c;
	cudaSetDevice(cb->dev);
	struct cu_kv *kv = calloc(1, sizeof *kv);
	if (!kv) {
		seterr(err, INFERD_ENOMEM, "out of memory");
		return NULL;
	}
	*kv = (struct cu_kv){.n_blocks = n_blocks, .bs = bs, .kvdim = c->n_head_kv * c->head_dim};
	size_t bytes = (size_t)c->n_layer * (size_t)n_blocks * (size_t)bs * (size_t)kv->kvdim * sizeof(float);
	if (cb->budget && cb->weight_bytes + 2 * bytes > cb->budget) {
		free(kv);
		seterr(err, INFERD_ENOMEM,
		       "a KV cache of %d blocks of %d positions (2 x %zu MiB) and %zu MiB of weights exceed the memory "
		       "budget of %zu MiB on cuda:%d (%s)",
		       n_blocks, bs, bytes >> 20, cb->weight_bytes >> 20, cb->budget >> 20, cb->dev, cb->dev_name);
		return NULL;
	}
	cudaError_t e1 = cudaMalloc((void **)&kv->k, bytes), e2 = e1 ? e1 : cudaMalloc((void **)&kv->v, bytes);
	if (e1 || e2) {
		size_t fr = 0, tot = 0;
		cudaGetLastError();
		cudaMemGetInfo(&fr, &tot);
		cudaFree(kv->k);
		free(kv);
		seterr(err, INFERD_ENOMEM,
		       "out of GPU memory for a KV cache of %d blocks of %d positions (2 x %zu MiB) on cuda:%d (%s): "
		       "%zu MiB free of %zu MiB (%s)",
		       n_blocks, bs, bytes >> 20, cb->dev, cb->dev_name, fr >> 20, tot >> 20, cudaGetErrorString(e1 ? e1 : e2));
		return NULL;
	}
	be->device_bytes += 2 * bytes;
	return kv;
}

static void cu_kv_free(struct backend *be, void *p)
{
	struct cu_kv *kv = p;
	if (!kv)
		return;
	be->device_bytes -= 2 * (size_t)be->m->c.n_layer * (size_t)kv->n_blocks * (size_t)kv->bs * (size_t)kv->kvdim *
			    sizeof(float);
	cudaSetDevice(CU(be)->dev);
	cudaStreamSynchronize(CU(be)->st);
	cudaFree(kv->k);
	cudaFree(kv->v);
	free(kv);
}

static void cu_kv_copy(struct backend *be, void *p, int dst, int src)
{
	struct cu_backend *cb = CU(be);
	struct cu_kv *kv = p;
	size_t blk = (size_t)kv->bs * kv->kvdim;
	for (int l = 0; l < be->m->c.n_layer; l++) {
		size_t od = ((size_t)l * kv->n_blocks + dst) * blk, os = ((size_t)l * kv->n_blocks + src) * blk;
		ck(cb, cudaMemcpyAsync(kv->k + od, kv->k + os, blk * sizeof(float), cudaMemcpyDeviceToDevice, cb->st),
		   "KV copy");
		ck(cb, cudaMemcpyAsync(kv->v + od, kv->v + os, blk * sizeof(float), cudaMemcpyDeviceToDevice, cb->st),
		   "KV copy");
	}
}

static int upload_rows(struct cu_backend *cb, const int32_t *host, int n)
{
	if (cb->capturing) { /* host copies cannot be recorded */
		ck(cb, cudaErrorStreamCaptureUnsupported, "an upload while recording a step");
		return -1;
	}
	if (grow(cb, (void **)&cb->d_tmp, &cb->tmp_cap, (size_t)n * 4, "row indices"))
		return -1;
	h2d(cb, cb->d_tmp, host, (size_t)n * 4);
	return 0;
}

static void cu_get_rows(struct backend *be, float *out, const struct tensor *emb, const int32_t *ids, int n)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0)
		return;
	if (cb->replay >= 0)
		return;
	const int32_t *d = cb->d_ids;
	if (ids != cb->cur_ids || n > cb->cur_n) { /* not the step's ids: a call outside forward */
		if (upload_rows(cb, ids, n))
			return;
		d = cb->d_tmp;
	}
	k_get_rows(cb->st, out, W(cb, emb), emb->type, row_bytes(emb), (int)emb->ne[0], d, n);
	launched(cb, "get_rows");
}

static void cu_rmsnorm(struct backend *be, float *out, const float *x, const struct tensor *w, int rows, int dim,
		       float eps)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	k_rmsnorm(cb->st, out, x, W(cb, w), w->type, rows, dim, eps);
	launched(cb, "rmsnorm");
}

/* entry i of a k_mats: w (bias) into out */
static void mats_set(struct cu_backend *cb, k_mats *mt, int i, float *out, const struct tensor *w,
		     const struct tensor *bias)
{
	mt->w[i] = W(cb, w);
	mt->type[i] = w->type;
	mt->rb[i] = row_bytes(w);
	mt->bias[i] = bias ? W(cb, bias) : NULL;
	mt->out[i] = out;
	mt->rows[i] = (int)w->ne[1];
}

/* The default mode's decode path for Q8_0, Q4_K and Q6_K weights: x
 * (rmsnorm(x) with norm, one kernel for both) to 8 bits per 32 values, then
 * the dp4a products of mt in one launch. Returns 0 when out of memory. */
static int q8_run(struct cu_backend *cb, const k_mats *mt, int cols, const float *x, const struct tensor *norm, int n,
		  float eps)
{
	size_t nq = (size_t)n * cols;
	uint8_t *buf = (uint8_t *)cb->base.ops->alloc(&cb->base, (nq + nq / 32 * 8 + 3) / 4);
	if (!buf)
		return 0;
	int8_t *xq = (int8_t *)buf;
	float *xd = (float *)(buf + nq);
	int *xs = (int *)(buf + nq + nq / 32 * 4);
	if (norm)
		k_norm_quant(cb->st, x, W(cb, norm), norm->type, n, cols, eps, xq, xd, xs);
	else
		k_quant_x(cb->st, x, xq, xd, xs, (int64_t)nq);
	k_mv_q8(cb->st, mt, cols, xq, xd, xs, n);
	launched(cb, "products (8-bit activations)");
	cb->base.ops->dealloc(&cb->base, (float *)buf);
	return 1;
}

/* one matrix on the 8-bit path; 0 when it does not apply */
static int q8_path(struct cu_backend *cb, float *out, const struct tensor *w, const float *x, int n, int accum)
{
	int cols = (int)w->ne[0], t = w->type;
	if (!cb->mixed_min || n >= cb->mixed_min || cols % 256 || (t != DT_Q8_0 && t != DT_Q4_K && t != DT_Q6_K))
		return 0;
	k_mats mt = {0};
	mats_set(cb, &mt, 0, out, w, NULL);
	mt.accum = accum;
	return q8_run(cb, &mt, cols, x, NULL, n, 0);
}

/* The products of a step of n tokens run on the warp kernels (and in CUDA
 * graphs) rather than cuBLAS */
static int small_step(const struct cu_backend *cb, int n)
{
	return n < cb->blas_min && (!cb->mixed_min || n < cb->mixed_min);
}

/* Several matrices against one input (q/k/v stacked, or gate/up with
 * swiglu), rmsnorm(x) by norm first, in the fewest launches: 8-bit
 * activations (q8_run) in the default mode, else one float-activation
 * launch with the norm in its prologue. Returns 0 when neither applies (the
 * caller runs the ops one by one, with the same results bitwise in
 * gpu_exact). */
static int fused(struct cu_backend *cb, const k_mats *mt, int cols, const float *x, const struct tensor *norm, int n,
		 float eps)
{
	if (!small_step(cb, n))
		return 0;
	int nm = mt->swiglu ? 2 : mt->rows[2] ? 3 : mt->rows[1] ? 2 : 1, q8 = cb->mixed_min && cols % 256 == 0;
	for (int i = 0; i < nm; i++)
		q8 &= mt->type[i] == DT_Q8_0 || mt->type[i] == DT_Q4_K || mt->type[i] == DT_Q6_K;
	if (q8)
		return q8_run(cb, mt, cols, x, norm, n, eps);
	if (!k_mv(cb->st, mt, cols, x, n, W(cb, norm), norm->type, eps))
		return 0;
	launched(cb, "fused products");
	return 1;
}

static int cu_norm_qkv(struct backend *be, float *q, float *k, float *v, const float *x,
		       const struct layer_weights *w, int n, float eps)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0 || cb->replay >= 0)
		return 1; /* nothing to do, as the separate ops would do nothing */
	/* one launch when the biases (if any) share a type */
	int bt = w->bq ? w->bq->type : -1;
	if ((w->bq != NULL) != (w->bk != NULL) || (w->bq != NULL) != (w->bv != NULL) ||
	    (w->bq && (w->bk->type != bt || w->bv->type != bt)))
		return 0;
	k_mats mt = {0};
	mats_set(cb, &mt, 0, q, w->wq, w->bq);
	mats_set(cb, &mt, 1, k, w->wk, w->bk);
	mats_set(cb, &mt, 2, v, w->wv, w->bv);
	mt.btype = bt < 0 ? 0 : bt;
	return fused(cb, &mt, be->m->c.n_embd, x, w->attn_norm, n, eps);
}

static int cu_norm_gate_up(struct backend *be, float *out, const float *x, const struct layer_weights *w, int n,
			   float eps)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0 || cb->replay >= 0)
		return 1;
	k_mats mt = {0};
	mats_set(cb, &mt, 0, out, w->w_gate, NULL);
	mats_set(cb, &mt, 1, NULL, w->w_up, NULL);
	mt.swiglu = 1;
	return fused(cb, &mt, be->m->c.n_embd, x, w->ffn_norm, n, eps);
}

static void cu_matmul(struct backend *be, float *out, const struct tensor *w, const struct tensor *bias,
		      const float *x, int n)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0 || cb->replay >= 0)
		return;
	if (!bias && q8_path(cb, out, w, x, n, 0))
		return;
	int cols = (int)w->ne[0], rows = (int)w->ne[1];
	if (cb->mixed_min && n >= cb->mixed_min && w->type != DT_F32) {
		/* tensor cores: 16-bit activations (BF16 for BF16 weights, else
		 * F16), float32 accumulation; quantized weights decoded to F16 */
		int bf = w->type == DT_BF16;
		size_t wsz = w->type == DT_F16 || w->type == DT_BF16 ? 0 : (size_t)rows * cols * 2;
		void *x16 = dmalloc(cb, (size_t)n * cols * 2, "16-bit activations"), *w16 = NULL;
		const void *a = W(cb, w);
		if (x16 && wsz && !(w16 = dmalloc(cb, wsz, "16-bit weights"))) {
			dfree(cb, x16);
			return;
		}
		if (!x16)
			return;
		k_to_half(cb->st, x16, x, (int64_t)n * cols, bf);
		if (w16) {
			k_dequant_half(cb->st, w16, W(cb, w), w->type, row_bytes(w), cols, rows, 0);
			a = w16;
		}
		launched(cb, "16-bit conversion");
		const float one = 1, zero = 0;
		cudaDataType_t dt = bf ? CUDA_R_16BF : CUDA_R_16F;
		cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH);
		cublasStatus_t st = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, a, dt, cols, x16, dt,
						 cols, &zero, out, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
		cublasSetMathMode(cb->blas, CUBLAS_PEDANTIC_MATH);
		blas_ck(cb, st, "gemm");
		dfree(cb, x16);
		dfree(cb, w16);
		if (bias) {
			k_add_bias(cb->st, out, W(cb, bias), bias->type, rows, n);
			launched(cb, "bias");
		}
		return;
	}
	size_t scratch = w->type == DT_F32 ? 0 : (size_t)rows * cols * sizeof(float);
	if (n >= cb->blas_min && scratch <= BLAS_MAX_SCRATCH) {
		const float *a = W(cb, w);
		float *tmp = NULL;
		if (scratch) {
			if (!(tmp = dmalloc(cb, scratch, "dequantized weights")))
				return;
			k_dequant(cb->st, tmp, W(cb, w), w->type, row_bytes(w), cols, rows);
			launched(cb, "dequant");
			a = tmp;
		}
		const float one = 1, zero = 0;
		/* column-major: out (rows x n) = W^T' (rows x cols) * x (cols x n) */
		cublasStatus_t s = cublasSgemm(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, a, cols, x, cols,
					       &zero, out, rows);
		blas_ck(cb, s, "sgemm");
		dfree(cb, tmp);
		if (bias) {
			k_add_bias(cb->st, out, W(cb, bias), bias->type, rows, n);
			launched(cb, "bias");
		}
		return;
	}
	k_matmul(cb->st, out, W(cb, w), w->type, row_bytes(w), cols, rows, x, n, bias ? W(cb, bias) : NULL,
		 bias ? bias->type : 0);
	launched(cb, "matmul");
}

/* Capacity of the step buffer: grow to powers of two (then the buffers move
 * and every recorded graph is dropped). */
static int step_reserve(struct cu_backend *cb, int n, int n_seq, int width)
{
	if (n <= cb->cap_n && n_seq <= cb->cap_s && width <= cb->cap_w && cb->h_step)
		return 0;
	int cn = cb->cap_n ? cb->cap_n : 64, cs = cb->cap_s ? cb->cap_s : 16, cw = cb->cap_w ? cb->cap_w : 16;
	while (cn < n)
		cn *= 2;
	while (cs < n_seq)
		cs *= 2;
	while (cw < width)
		cw *= 2;
	int half = cb->base.m->c.head_dim / 2;
	size_t bytes = (size_t)cn * 4 * 4 + (size_t)cn * half * 2 * 4 + (size_t)cs * cw * 4;
	cudaStreamSynchronize(cb->st);
	graphs_drop(cb);
	cudaFreeHost(cb->h_step);
	cudaFree(cb->d_step);
	free(cb->cur_rows);
	cb->h_step = NULL;
	cb->d_step = NULL;
	cb->cap_n = cb->cap_s = cb->cap_w = 0;
	cb->cur_rows = malloc((size_t)cn * sizeof *cb->cur_rows);
	if (!cb->cur_rows || ck(cb, cudaMallocHost((void **)&cb->h_step, bytes), "pinned step buffer") ||
	    ck(cb, cudaMalloc((void **)&cb->d_step, bytes), "step buffer"))
		return -1;
	cb->cap_n = cn;
	cb->cap_s = cs;
	cb->cap_w = cw;
	cb->d_ids = (int32_t *)cb->d_step;
	cb->d_pos = cb->d_ids + cn;
	cb->d_seq = cb->d_pos + cn;
	cb->d_rows = cb->d_seq + cn;
	cb->d_cs = (float *)(cb->d_rows + cn);
	cb->d_tables = (int32_t *)(cb->d_cs + (size_t)cn * half * 2);
	return 0;
}

static int cu_begin_step(struct backend *be, const struct batch *b, char *err)
{
	struct cu_backend *cb = CU(be);
	const struct inferd_model *m = be->m;
	cudaSetDevice(cb->dev);
	if (cb->dead)
		return seterr(err, INFERD_EDEVICE, "%s", cb->msg);
	cb->err = 0;
	cb->capturing = 0;
	cb->replay = -1;
	cudaGetLastError(); /* a non-sticky error of an earlier step is over */
	cb->steps++;
	/* a larger arena if the last step overflowed it */
	if (cb->arena_need > cb->arena_cap) {
		size_t cap = cb->arena_need + cb->arena_need / 4;
		ck(cb, cudaStreamSynchronize(cb->st), "step");
		graphs_drop(cb);
		cudaFree(cb->arena);
		cb->arena = NULL;
		cb->arena_cap = 0;
		if (!ck(cb, cudaMalloc((void **)&cb->arena, cap), "activation arena"))
			cb->arena_cap = cap;
	}
	cb->arena_used = 0;
	cb->overflowed = 0;
	cb->in_step = 1;
	int n = b->n_tokens, half = m->c.head_dim / 2, max_nb = 1, n_out = 0;
	struct cu_kv *kv = b->kv;
	for (int t = 0; t < n; t++)
		if (b->pos[t] / kv->bs + 1 > max_nb)
			max_nb = b->pos[t] / kv->bs + 1;
	if (step_reserve(cb, n, b->n_seq, max_nb)) {
		cb->in_step = 0;
		return seterr(err, cb->err ? cb->err : INFERD_ENOMEM, "%s", cb->msg);
	}
	int W = cb->cap_w;
	/* pack ids, positions, sequences, wanted rows, the rotary table and the
	 * block tables into the pinned buffer, then one copy up */
	int32_t *h = (int32_t *)cb->h_step, *ids = h, *pos = h + cb->cap_n, *seq = pos + cb->cap_n, *rows = seq + cb->cap_n;
	float *cs = (float *)(rows + cb->cap_n);
	int32_t *tab = (int32_t *)(cs + (size_t)cb->cap_n * half * 2);
	if (b->ids)
		memcpy(ids, b->ids, (size_t)n * 4);
	memcpy(pos, b->pos, (size_t)n * 4);
	memcpy(seq, b->seq, (size_t)n * 4);
	for (int t = 0; t < n; t++)
		if (b->want && b->want[t])
			rows[n_out++] = t;
	memcpy(cb->cur_rows, rows, (size_t)n_out * 4);
	for (int t = 0; t < n; t++)
		for (int i = 0; i < half; i++) {
			double ang = (double)b->pos[t] * m->inv_freq[i];
			cs[((size_t)t * half + i) * 2] = (float)(cos(ang) * m->rope_mscale);
			cs[((size_t)t * half + i) * 2 + 1] = (float)(sin(ang) * m->rope_mscale);
		}
	memset(tab, 0, (size_t)b->n_seq * W * 4);
	for (int t = 0; t < n; t++)
		for (int j = 0; j <= b->pos[t] / kv->bs; j++)
			tab[(size_t)b->seq[t] * W + j] = b->block_table[b->seq[t]][j];
	/* everything up to the used part of the tables */
	size_t bytes = (size_t)((uint8_t *)(tab + (size_t)b->n_seq * W) - cb->h_step);
	ck(cb, cudaMemcpyAsync(cb->d_step, cb->h_step, bytes, cudaMemcpyHostToDevice, cb->st), "step upload");
	cb->max_nb = W;
	cb->cur_ids = b->ids;
	cb->cur_n = n;
	cb->cur_nout = n_out;
	cb->cur_nseq = b->n_seq;
	if (cb->fault_step >= 0 && (int64_t)cb->steps > cb->fault_step) {
		k_fault(cb->st);
		launched(cb, "injected fault");
	}
	if (cb->err) {
		cb->in_step = 0;
		return seterr(err, cb->err, "%s", cb->msg);
	}
	/* decode-sized steps run as CUDA graphs: the first step of a shape runs
	 * as usual (sizing the arena), the second is recorded, later ones replay */
	if (cb->use_graphs && n < cb->blas_min && (!cb->mixed_min || n < cb->mixed_min) && cb->fault_step < 0) {
		for (int i = 0; i < cb->n_graphs; i++)
			if (cb->graphs[i].n == n && cb->graphs[i].n_seq == b->n_seq && cb->graphs[i].n_out == n_out) {
				cb->replay = i;
				return 0;
			}
		int seen = -1;
		for (int i = 0; i < cb->n_seen; i++)
			if (cb->shapes[i].n == n && cb->shapes[i].n_seq == b->n_seq && cb->shapes[i].n_out == n_out)
				seen = i;
		if (seen >= 0 && cb->shapes[seen].arena_used && cb->shapes[seen].arena_used <= cb->arena_cap &&
		    cb->n_graphs < (int)(sizeof cb->graphs / sizeof cb->graphs[0])) {
			if (!ck(cb, cudaStreamBeginCapture(cb->st, cudaStreamCaptureModeThreadLocal), "recording a step"))
				cb->capturing = 1;
		} else if (seen < 0 && cb->n_seen < (int)(sizeof cb->shapes / sizeof cb->shapes[0])) {
			cb->shapes[cb->n_seen++] = (struct shape){n, b->n_seq, n_out, 0};
		}
	}
	return 0;
}

static int cu_matmul_add(struct backend *be, float *x, const struct tensor *w, const float *in, int n)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0 || cb->replay >= 0)
		return 1;
	if (q8_path(cb, x, w, in, n, 1))
		return 1;
	if (small_step(cb, n) && k_matmul_acc(cb->st, x, W(cb, w), w->type, row_bytes(w), (int)w->ne[0], (int)w->ne[1], in, n)) {
		launched(cb, "matmul_add");
		return 1;
	}
	return 0;
}

static void cu_rope(struct backend *be, float *x, int n, int n_heads)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	const struct model_config *c = &be->m->c;
	k_rope(cb->st, x, cb->d_cs, n, n_heads, c->head_dim, c->rope_style == ROPE_NEOX);
	launched(cb, "rope");
}

/* attention of q over the cache of `layer` (this step's k, v stored) */
static void attend(struct cu_backend *cb, float *out, const float *q, const struct batch *b, int layer)
{
	const struct model_config *c = &cb->base.m->c;
	struct cu_kv *kv = b->kv;
	k_attention(cb->st, out, q, kv->k, kv->v, cb->d_pos, cb->d_seq, cb->d_tables, cb->max_nb, kv->n_blocks, kv->bs,
		    kv->kvdim, layer, b->n_tokens, c->n_head, c->n_head / c->n_head_kv, c->head_dim);
	launched(cb, "attention");
}

static void cu_attention(struct backend *be, float *out, const float *q, const float *k, const float *v,
			 const struct batch *b, int layer)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	struct cu_kv *kv = b->kv;
	k_store_kv(cb->st, kv->k, kv->v, k, v, cb->d_pos, cb->d_seq, cb->d_tables, cb->max_nb, kv->n_blocks, kv->bs,
		   kv->kvdim, layer, b->n_tokens);
	launched(cb, "KV store");
	attend(cb, out, q, b, layer);
}

/* rope of q and k, the KV store and attention: two launches */
static void cu_rope_attention(struct backend *be, float *out, float *q, const float *k, const float *v,
			      const struct batch *b, int layer)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	const struct model_config *c = &be->m->c;
	struct cu_kv *kv = b->kv;
	k_rope_store(cb->st, q, k, v, kv->k, kv->v, cb->d_cs, cb->d_pos, cb->d_seq, cb->d_tables, cb->max_nb,
		     kv->n_blocks, kv->bs, c->n_head, c->n_head_kv, c->head_dim, c->rope_style == ROPE_NEOX, layer,
		     b->n_tokens);
	launched(cb, "rope and KV store");
	attend(cb, out, q, b, layer);
}

static void cu_swiglu(struct backend *be, float *out, const float *gate, const float *up, int64_t n)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	k_swiglu(cb->st, out, gate, up, n);
	launched(cb, "swiglu");
}

static void cu_add(struct backend *be, float *x, const float *y, int64_t n)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || cb->replay >= 0)
		return;
	k_add(cb->st, x, y, n);
	launched(cb, "add");
}

static void cu_gather(struct backend *be, float *dst, const float *src, const int32_t *rows, int n, int dim)
{
	struct cu_backend *cb = CU(be);
	if (cb->err || n <= 0 || cb->replay >= 0)
		return;
	const int32_t *d = cb->d_rows;
	if (n != cb->cur_nout || memcmp(rows, cb->cur_rows, (size_t)n * sizeof *rows)) { /* not the step's rows */
		if (upload_rows(cb, rows, n))
			return;
		d = cb->d_tmp;
	}
	k_gather(cb->st, dst, src, d, n, dim);
	launched(cb, "gather");
}

/* The step's ops are all enqueued (the logits are next): end a recording
 * and launch it, or launch the graph being replayed. */
static void graph_finish(struct cu_backend *cb)
{
	if (cb->capturing) {
		cudaGraph_t g = NULL;
		cb->capturing = 0;
		if (ck(cb, cudaStreamEndCapture(cb->st, &g), "recording a step"))
			return;
		struct graph *gr = &cb->graphs[cb->n_graphs];
		if (!ck(cb, cudaGraphInstantiate(&gr->exec, g, 0), "instantiating a step")) {
			gr->n = cb->cur_n;
			gr->n_seq = cb->cur_nseq;
			gr->n_out = cb->cur_nout;
			gr->arena_used = cb->arena_used;
			cb->replay = cb->n_graphs++;
		}
		cudaGraphDestroy(g);
	}
	if (cb->replay >= 0) {
		ck(cb, cudaGraphLaunch(cb->graphs[cb->replay].exec, cb->st), "launching a step");
		cb->replay = -1;
	}
}

static void cu_read(struct backend *be, float *host, const float *src, size_t n)
{
	struct cu_backend *cb = CU(be);
	graph_finish(cb);
	if (cb->err)
		return;
	ck(cb, cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, cb->st), "copy to the host");
	ck(cb, cudaStreamSynchronize(cb->st), "copy to the host");
}

static int cu_sync(struct backend *be, char *err)
{
	struct cu_backend *cb = CU(be);
	graph_finish(cb);
	/* remember what a step of this shape took from the arena */
	for (int i = 0; i < cb->n_seen; i++)
		if (cb->shapes[i].n == cb->cur_n && cb->shapes[i].n_seq == cb->cur_nseq && cb->shapes[i].n_out == cb->cur_nout)
			cb->shapes[i].arena_used = cb->overflowed ? 0 : cb->arena_used;
	cb->in_step = 0;
	ck(cb, cudaStreamSynchronize(cb->st), "step");
	if (cb->err)
		return seterr(err, cb->err, "%s", cb->msg);
	return 0;
}

/* Sample on the device: parameters (and the penalty lists, built here from
 * each sequence's tokens as sample.c does) go up in one copy, the chosen
 * tokens and logprobs come back in one copy. */
static int cu_sample(struct backend *be, float *logits, int n, const struct sample_req *rq, char *err)
{
	struct cu_backend *cb = CU(be);
	int V = be->m->c.n_vocab, n_bias = 0, n_pen = 0, n_slots = 0;
	graph_finish(cb);
	if (cb->err)
		return seterr(err, cb->err, "%s", cb->msg);
	for (int i = 0; i < n; i++) {
		const struct inferd_request *r = rq[i].r;
		n_bias += r->n_logit_bias;
		n_pen += rq[i].n_tokens;
		n_slots += r->temperature > 0;
	}
	size_t o_rows = 0, o_bias = o_rows + (size_t)n * sizeof(struct ks_row);
	size_t o_pen = (o_bias + (size_t)n_bias * sizeof(struct ks_bias) + 15) & ~(size_t)15;
	size_t o_out = (o_pen + (size_t)n_pen * sizeof(struct ks_pen) + 15) & ~(size_t)15;
	size_t up = o_out, total = o_out + (size_t)n * sizeof(struct ks_out);
	uint8_t *h = malloc(total);
	if (!h)
		return seterr(err, INFERD_ENOMEM, "out of memory for sampling");
	struct ks_row *rows = (struct ks_row *)(h + o_rows);
	struct ks_bias *bias = (struct ks_bias *)(h + o_bias);
	struct ks_pen *pen = (struct ks_pen *)(h + o_pen);
	n_bias = n_pen = 0;
	int slot = 0;
	for (int i = 0; i < n; i++) {
		const struct inferd_request *r = rq[i].r;
		struct ks_row *k = &rows[i];
		int rep = r->repetition_penalty > 0 && r->repetition_penalty != 1.0f;
		int pn = r->presence_penalty != 0 || r->frequency_penalty != 0;
		*k = (struct ks_row){.temperature = r->temperature > 0 ? r->temperature : 0, .top_p = r->top_p,
				     .min_p = r->min_p, .rep = r->repetition_penalty, .presence = r->presence_penalty,
				     .frequency = r->frequency_penalty, .top_k = r->top_k, .n_bias = r->n_logit_bias,
				     .bias_off = n_bias, .pen_off = n_pen, .want_lp = rq[i].logprob != NULL,
				     .n_top = rq[i].n_top, .slot = r->temperature > 0 ? slot++ : -1,
				     .u = sample_uniform(r->seed, rq[i].step)};
		for (int j = 0; j < r->n_logit_bias; j++)
			bias[n_bias++] = (struct ks_bias){r->logit_bias[j].id, r->logit_bias[j].bias};
		if (rep || pn) {
			const int32_t *t = rq[i].tokens;
			int nt = rq[i].n_tokens;
			for (int j = rq[i].n_prompt; pn && j < nt; j++)
				if (t[j] >= 0 && t[j] < V)
					cb->count[t[j]]++;
			for (int j = 0; j < nt; j++) {
				int32_t id = t[j];
				if (id < 0 || id >= V || cb->seen[id])
					continue;
				cb->seen[id] = 1;
				if (rep || cb->count[id])
					pen[n_pen++] = (struct ks_pen){id, rep, cb->count[id]};
			}
			for (int j = 0; j < nt; j++)
				if (t[j] >= 0 && t[j] < V)
					cb->seen[t[j]] = cb->count[t[j]] = 0;
		}
		k->n_pen = n_pen - k->pen_off;
	}
	int cap = 1;
	while (cap < V)
		cap <<= 1;
	int rc = 0;
	if (grow(cb, &cb->d_sbuf, &cb->sbuf_cap, total, "sampling parameters") ||
	    (n_slots && (grow(cb, (void **)&cb->d_keys, &cb->keys_cap, (size_t)n_slots * cap * 8, "sampling scratch") ||
			 grow(cb, (void **)&cb->d_pref, &cb->pref_cap, (size_t)n_slots * cap * 8, "sampling scratch")))) {
		rc = seterr(err, cb->err ? cb->err : INFERD_ENOMEM, "%s", cb->msg);
		goto out;
	}
	uint8_t *d = cb->d_sbuf;
	h2d(cb, d, h, up);
	k_sample(cb->st, logits, V, n, (const struct ks_row *)(d + o_rows), (const struct ks_bias *)(d + o_bias),
		 (const struct ks_pen *)(d + o_pen), (struct ks_out *)(d + o_out), cb->d_keys, cb->d_pref, cap);
	launched(cb, "sample");
	ck(cb, cudaMemcpyAsync(h + o_out, d + o_out, (size_t)n * sizeof(struct ks_out), cudaMemcpyDeviceToHost, cb->st),
	   "copy of the sampled tokens");
	ck(cb, cudaStreamSynchronize(cb->st), "sample");
	if (cb->err) {
		rc = seterr(err, cb->err, "%s", cb->msg);
		goto out;
	}
	const struct ks_out *res = (const struct ks_out *)(h + o_out);
	for (int i = 0; i < n; i++) {
		*rq[i].tok = res[i].tok;
		if (rq[i].logprob)
			*rq[i].logprob = res[i].lp;
		for (int j = 0; j < rq[i].n_top; j++) {
			rq[i].top_ids[j] = res[i].top_ids[j];
			rq[i].top_lp[j] = res[i].top_lp[j];
		}
	}
out:
	free(h);
	return rc;
}

static void cu_free(struct backend *be)
{
	struct cu_backend *cb = CU(be);
	if (!cb)
		return;
	cudaSetDevice(cb->dev);
	if (cb->st)
		cudaStreamSynchronize(cb->st);
	graphs_drop(cb);
	cudaFree(cb->arena);
	cudaFree(cb->d_step);
	cudaFreeHost(cb->h_step);
	free(cb->cur_rows);
	void *bufs[] = {cb->d_tmp, cb->d_sbuf, cb->d_keys, cb->d_pref};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		if (bufs[i])
			cudaFreeAsync(bufs[i], cb->st);
	if (cb->st)
		cudaStreamSynchronize(cb->st);
	if (cb->wdev)
		for (int i = 0; i < be->m->n_tensors; i++)
			cudaFree(cb->wdev[i]);
	free(cb->wdev);
	if (cb->blas)
		cublasDestroy(cb->blas);
	if (cb->pool)
		cudaMemPoolDestroy(cb->pool);
	if (cb->st)
		cudaStreamDestroy(cb->st);
	free(cb->seen);
	free(cb->count);
	free(cb);
}

static const struct backend_ops cuda_ops = {
	.name = "cuda",
	.free = cu_free,
	.alloc = cu_alloc,
	.dealloc = cu_dealloc,
	.kv_new = cu_kv_new,
	.kv_free = cu_kv_free,
	.kv_copy = cu_kv_copy,
	.begin_step = cu_begin_step,
	.get_rows = cu_get_rows,
	.rmsnorm = cu_rmsnorm,
	.matmul = cu_matmul,
	.matmul_add = cu_matmul_add,
	.rope = cu_rope,
	.attention = cu_attention,
	.norm_qkv = cu_norm_qkv,
	.norm_gate_up = cu_norm_gate_up,
	.rope_attention = cu_rope_attention,
	.swiglu = cu_swiglu,
	.add = cu_add,
	.gather = cu_gather,
	.read = cu_read,
	.sync = cu_sync,
	.sample = cu_sample,
};

int cuda_device_count(int *n, char *err)
{
	int c = 0;
	cudaError_t e = cudaGetDeviceCount(&c);
	if (e != cudaSuccess) {
		*n = 0;
		return seterr(err, INFERD_EUNSUPPORTED, "no usable CUDA device: %s (%s)", cudaGetErrorString(e),
			      cudaGetErrorName(e));
	}
	*n = c;
	return 0;
}

int cuda_backend_new(const struct inferd_model *m, int dev, size_t budget, int exact, struct backend **out,
		     char *err)
{
	int n_dev;
	if (cuda_device_count(&n_dev, err))
		return INFERD_EUNSUPPORTED;
	if (dev < 0 || dev >= n_dev)
		return seterr(err, INFERD_EINVAL, "no CUDA device cuda:%d (this machine has %d)", dev, n_dev);
	if (m->c.head_dim > 256 || m->c.head_dim % 2)
		return seterr(err, INFERD_EUNSUPPORTED, "the CUDA backend supports head_dim up to 256 (this model: %d)",
			      m->c.head_dim);
	for (int i = 0; i < m->n_tensors; i++) {
		const struct dtype_info *di = dtype_get((uint32_t)m->tensors[i].type);
		int t = m->tensors[i].type;
		if (dtype_is_mlx(t)) /* uploaded as self-contained rows (mlx_rows) */
			continue;
		if (!di || !(t == DT_F32 || t == DT_F16 || t == DT_BF16 || t == DT_Q8_0 || t == DT_Q4_0 || t == DT_Q4_1 ||
			     t == DT_Q5_0 || t == DT_Q5_1 || t == DT_Q4_K || t == DT_Q5_K || t == DT_Q6_K))
			return seterr(err, INFERD_EUNSUPPORTED, "tensor %s: type %s has no CUDA kernel", m->tensors[i].name,
				      di ? di->name : "?");
	}
	struct cu_backend *cb = calloc(1, sizeof *cb);
	if (!cb)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	cb->base.ops = &cuda_ops;
	cb->base.m = m;
	cb->dev = dev;
	cb->fault_step = -1;
	cb->budget = budget;
	cb->replay = -1;
	cb->use_graphs = !(getenv("INFERD_CUDA_GRAPHS") && !strcmp(getenv("INFERD_CUDA_GRAPHS"), "0"));
	cb->blas_min = getenv("INFERD_CUDA_BLAS_MIN") && atoi(getenv("INFERD_CUDA_BLAS_MIN")) > 0
			       ? atoi(getenv("INFERD_CUDA_BLAS_MIN"))
			       : BLAS_MIN_TOKENS;
	cb->mixed_min = exact ? 0 : MIXED_MIN_TOKENS;
#ifdef INFERD_FAULTS /* test builds only (build-cuda/tests/inferd-faults) */
	if (getenv("INFERD_CUDA_FAULT_STEP"))
		cb->fault_step = atoll(getenv("INFERD_CUDA_FAULT_STEP"));
#endif
	struct cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
		snprintf(cb->dev_name, sizeof cb->dev_name, "%s", prop.name);
	int rc = 0;
	cudaSetDevice(dev);
	cb->seen = calloc((size_t)m->c.n_vocab, sizeof *cb->seen);
	cb->count = calloc((size_t)m->c.n_vocab, sizeof *cb->count);
	cb->wdev = calloc((size_t)(m->n_tensors ? m->n_tensors : 1), sizeof *cb->wdev);
	if (!cb->seen || !cb->count || !cb->wdev) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto fail;
	}
	if (ck(cb, cudaStreamCreateWithFlags(&cb->st, cudaStreamNonBlocking), "creating the stream"))
		goto cuda_fail;
	struct cudaMemPoolProps pp = {.allocType = cudaMemAllocationTypePinned,
				      .location = {.type = cudaMemLocationTypeDevice, .id = dev}};
	if (ck(cb, cudaMemPoolCreate(&cb->pool, &pp), "creating the memory pool"))
		goto cuda_fail;
	uint64_t keep = UINT64_MAX; /* keep freed activation memory for the next step */
	ck(cb, cudaMemPoolSetAttribute(cb->pool, cudaMemPoolAttrReleaseThreshold, &keep), "memory pool");
	cublasStatus_t bs = cublasCreate(&cb->blas);
	if (bs != CUBLAS_STATUS_SUCCESS) {
		rc = seterr(err, bs == CUBLAS_STATUS_ALLOC_FAILED ? INFERD_ENOMEM : INFERD_EDEVICE,
			    "cuBLAS on cuda:%d (%s): %s", dev, cb->dev_name, cublasGetStatusString(bs));
		goto fail;
	}
	cublasSetStream(cb->blas, cb->st);
	cublasSetMathMode(cb->blas, CUBLAS_PEDANTIC_MATH); /* float32 compute, no TF32 */
	size_t need = 0, fr = 0, tot = 0;
	for (int i = 0; i < m->n_tensors; i++)
		need += dev_bytes(&m->tensors[i]);
	cudaMemGetInfo(&fr, &tot);
	if (budget && need > budget) {
		rc = seterr(err, INFERD_ENOMEM,
			    "model needs %.1f MiB of weights on cuda:%d (%s) but its memory budget is %.1f MiB",
			    need / 1048576.0, dev, cb->dev_name, budget / 1048576.0);
		goto fail;
	}
	for (int i = 0; i < m->n_tensors; i++) {
		const struct tensor *t = &m->tensors[i];
		cudaError_t e = cudaMalloc(&cb->wdev[i], dev_bytes(t) ? dev_bytes(t) : 1);
		if (e != cudaSuccess) {
			cudaGetLastError();
			cudaMemGetInfo(&fr, &tot);
			rc = seterr(err, INFERD_ENOMEM,
				    "out of GPU memory loading tensor %s (%llu MiB) on cuda:%d (%s): the model's weights "
				    "need %zu MiB, %zu MiB free of %zu MiB (%s)",
				    t->name, (unsigned long long)(t->nbytes >> 20), dev, cb->dev_name, need >> 20, fr >> 20,
				    tot >> 20, cudaGetErrorString(e));
			goto fail;
		}
		if (dtype_is_mlx(t->type)) {
			uint8_t *rows = mlx_rows(t);
			if (!rows) {
				rc = seterr(err, INFERD_ENOMEM, "out of memory preparing tensor %s for the GPU", t->name);
				goto fail;
			}
			e = cudaMemcpy(cb->wdev[i], rows, dev_bytes(t), cudaMemcpyHostToDevice);
			free(rows);
			if (ck(cb, e, "uploading weights"))
				goto cuda_fail;
			continue;
		}
		if (ck(cb, cudaMemcpy(cb->wdev[i], t->data, t->nbytes, cudaMemcpyHostToDevice), "uploading weights"))
			goto cuda_fail;
	}
	cb->weight_bytes = need;
	cb->base.device_bytes = need;
	*out = &cb->base;
	return 0;
cuda_fail:
	rc = seterr(err, cb->err ? cb->err : INFERD_EDEVICE, "%s", cb->msg);
fail:
	cu_free(&cb->base);
	return rc;
}

int cuda_device_uuid(int dev, char *out, size_t cap, char *err)
{
	int n;
	if (cuda_device_count(&n, err))
		return INFERD_EUNSUPPORTED;
	if (dev < 0 || dev >= n)
		return seterr(err, INFERD_EINVAL, "no CUDA device cuda:%d (this machine has %d)", dev, n);
	struct cudaDeviceProp p;
	cudaError_t e = cudaGetDeviceProperties(&p, dev);
	if (e != cudaSuccess)
		return seterr(err, INFERD_EDEVICE, "cuda:%d: %s", dev, cudaGetErrorString(e));
	const unsigned char *u = (const unsigned char *)p.uuid.bytes;
	snprintf(out, cap, "gpu-GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
		 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	return 0;
}

void cuda_backend_fault_at(struct backend *be, int64_t step) { CU(be)->fault_step = step; }

