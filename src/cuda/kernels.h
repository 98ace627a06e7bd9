/*
 * kernels.h — launchers of the CUDA kernels (kernels.cu, sample.cu), called
 * by the backend glue (backend_cuda.c). Every launcher enqueues on the
 * stream it is given and returns at once; the caller checks
 * cudaGetLastError() after it. Pointers are device memory unless said.
 *
 * Types are enum dtype numbers (dtype.h); a weight row of `cols` values
 * takes `row_bytes` bytes. Kernels decode quantized blocks on the fly:
 * weights stay in their file format on the device.
 */
#ifndef INFERD_CUDA_KERNELS_H
#define INFERD_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst = src rounded to 16 bits: F16 (bf = 0) or BF16 (bf = 1) */
void k_to_half(cudaStream_t s, void *dst, const float *src, int64_t n, int bf);
/* whole matrix to 16-bit floats (F16 or BF16): out[r][j] */
void k_dequant_half(cudaStream_t s, void *out, const void *w, int type, size_t row_bytes, int cols, int rows, int bf);
/* out[i][j] = value j of row ids[i] of emb, as float */
void k_get_rows(cudaStream_t s, float *out, const void *emb, int type, size_t row_bytes, int cols,
		const int32_t *ids, int n);
/* whole matrix to float: out[r][j] (rows x cols) */
void k_dequant(cudaStream_t s, float *out, const void *w, int type, size_t row_bytes, int cols, int rows);
/* out[r] = x[r] / rms(x[r]) * w (w: `dim` values of wtype) */
void k_rmsnorm(cudaStream_t s, float *out, const float *x, const void *w, int wtype, int rows, int dim, float eps);
/* out[t][r] = dot(x[t], row r of w) + bias[r] for t < n (bias may be NULL) */
void k_matmul(cudaStream_t s, float *out, const void *w, int type, size_t row_bytes, int cols, int rows,
	      const float *x, int n, const void *bias, int btype);
/* out[t][r] += dot(x[t], row r of w) with the fast kernels; 0 when this
 * shape has none (the caller multiplies and adds) */
int k_matmul_acc(cudaStream_t s, float *out, const void *w, int type, size_t row_bytes, int cols, int rows,
		 const float *x, int n);
/* 8-bit copies of n activations (a multiple of 32): per 32 values an
 * int8 block xq, its scale xd and the sum of its codes xs */
void k_quant_x(cudaStream_t s, const float *x, int8_t *xq, float *xd, int *xs, int64_t n);
/* Matrices multiplied in one launch (k_mv, k_mv_q8): up to three of one
 * width stacked by rows (unused entries zero), each with its own output
 * [n][rows[i]]; or, with swiglu, a gate/up pair of equal rows:
 * out[0] = silu(x . w[0]) * (x . w[1]). accum: out += instead of out =. */
typedef struct k_mats {
	const void *w[3];
	int type[3];
	size_t rb[3];           /* bytes per row */
	const void *bias[3];    /* one value per row, or NULL */
	int btype;
	float *out[3];
	int rows[3];
	int swiglu, accum;
} k_mats;
/* out_i[t] (+)= rmsnorm(x[t]) . W_i (norm weight nw, NULL: x itself) for
 * t < n with the fast kernels; 0 when this shape has none (one type for
 * all, 16-byte aligned, cols % 256 for float weights, % 32 otherwise, and
 * with a norm the normalized activations of 8 tokens and the kernel's own
 * shared memory within 48 KiB) */
int k_mv(cudaStream_t s, const k_mats *m, int cols, const float *x, int n, const void *nw, int ntype, float eps);
/* the same against 8-bit activations (k_quant_x, k_norm_quant): Q8_0, Q4_K
 * and Q6_K matrices (they may differ), cols % 256 == 0; 0 otherwise */
int k_mv_q8(cudaStream_t s, const k_mats *m, int cols, const int8_t *xq, const float *xd, const int *xs, int n);
/* k_quant_x of rmsnorm(x) (norm weight w of wtype), one pass */
void k_norm_quant(cudaStream_t s, const float *x, const void *w, int wtype, int rows, int dim, float eps, int8_t *xq,
		  float *xd, int *xs);
/* out[t][r] += bias[r] */
void k_add_bias(cudaStream_t s, float *out, const void *bias, int btype, int rows, int n);
/* rotate pairs of x[t][h][hd] with cs[t][hd/2][2] (cos, sin) */
void k_rope(cudaStream_t s, float *x, const float *cs, int n, int heads, int hd, int neox);
/* store k, v rows of each token into the paged cache of `layer` */
void k_store_kv(cudaStream_t s, float *kc, float *vc, const float *k, const float *v, const int32_t *pos,
		const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs, int kvdim, int layer,
		int n);
/* k_rope of q (in place) and of k, with k and v stored as k_store_kv does,
 * in one launch (kv_heads heads of k and v) */
void k_rope_store(cudaStream_t s, float *q, const float *k, const float *v, float *kc, float *vc, const float *cs,
		  const int32_t *pos, const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs,
		  int heads, int kv_heads, int hd, int neox, int layer, int n);
/* out[t][h] = causal attention of q[t][h] over positions 0..pos[t] */
void k_attention(cudaStream_t s, float *out, const float *q, const float *kc, const float *vc,
		 const int32_t *pos, const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs,
		 int kvdim, int layer, int n, int heads, int group, int hd);
void k_swiglu(cudaStream_t s, float *out, const float *g, const float *u, int64_t n);
void k_add(cudaStream_t s, float *x, const float *y, int64_t n);
void k_gather(cudaStream_t s, float *dst, const float *src, const int32_t *rows, int n, int dim);
/* test-only: a kernel that writes to an invalid address (sticky error) */
void k_fault(cudaStream_t s);

/* ---- sampling (sample.cu) ---- */
#define KS_MAX_TOP 20
struct ks_row {            /* one row's parameters, filled by the host */
	float temperature, top_p, min_p, rep, presence, frequency;
	int top_k;
	int n_bias, bias_off;    /* into the bias array */
	int n_pen, pen_off;      /* into the penalty array */
	int want_lp, n_top;
	int slot;                /* scratch slot when temperature > 0, else -1 */
	double u;                /* uniform draw in [0, 1) for this step */
};
struct ks_bias { int32_t id; float bias; };
struct ks_pen { int32_t id; int32_t rep; int32_t count; }; /* rep: apply repetition_penalty; count: output occurrences */
struct ks_out { int32_t tok; float lp; int32_t top_ids[KS_MAX_TOP]; float top_lp[KS_MAX_TOP]; };
/* Sample each of n rows of logits (modified in place). keys/pref: scratch of
 * `cap` entries per slot (cap a power of two >= V). */
void k_sample(cudaStream_t s, float *logits, int V, int n, const struct ks_row *rows, const struct ks_bias *bias,
	      const struct ks_pen *pen, struct ks_out *out, unsigned long long *keys, double *pref, int cap);

#ifdef __cplusplus
}
#endif
#endif
