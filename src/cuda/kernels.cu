/*
 * kernels.cu — the CUDA kernels of every op the architecture needs
 * (backend.h). Each op has a plain kernel that handles any shape
 * (matmul_k, attention_k) and, for the common shapes, a fast one:
 * matrix-vector products (mv_k: one warp per weight row, 128 bytes in
 * flight per lane, a 32-value block decoded in registers per lane for
 * quantized rows) that multiply up to three matrices in one launch (q/k/v
 * stacked, or gate/up with swiglu in the epilogue; k_mats in kernels.h) and
 * can run the rmsnorm before them in their prologue; 8-bit activations with
 * dp4a for Q8_0/Q4_K/Q6_K decode in the default mode (mv_q8_k, fed by
 * norm_quant_k or quant_x_k); rope with the KV store in one launch
 * (rope_store_k); attention with G lanes per position (attention_g_k); and
 * 16-bit copies for the tensor-core products of backend_cuda.c. The decode
 * chain's kernels use programmatic dependent launch (pdl_trigger/pdl_wait
 * below): the next kernel starts and prefetches its weights while the one
 * before finishes.
 *
 * Weights stay in their file format on the device and are decoded value by
 * value (deq below), with the same float operations, rounded the same way
 * (__fmul_rn and friends forbid fused multiply-adds), as dtype.c's
 * reference: a dequantized value is bitwise the CPU's. MLX affine weights
 * (codes, scales and biases in three arrays in the file) are uploaded as
 * self-contained rows (backend_cuda.c): a 16-byte header {group, bytes of
 * codes}, the packed codes as in the file, then float32 (scale, bias)
 * pairs, one per group; they go through the plain kernels.
 *
 * Batch invariance: every reduction runs in an order fixed by the
 * sequence's own data (the dot product of one token and one weight row
 * never depends on which other tokens share the launch; attention splits a
 * sequence's positions by position), so a sequence's results do not depend
 * on its batch. The exceptions are the cuBLAS products of backend_cuda.c
 * (8 tokens or more by default, 65 with gpu_exact).
 *
 * A fused kernel computes each value with the same operations in the same
 * order as the ops one by one (test_cuda checks them bitwise).
 *
 * Threads: kernels are launched by one executor thread on its own stream;
 * nothing here keeps state between launches but one cache of a device
 * fact (mv_fits: a kernel's static shared memory size, the same for every
 * caller, read and written atomically).
 */
#include "kernels.h"
#include "dtype.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t ld16(const uint8_t *p) { return *(const uint16_t *)p; }

__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int *d, int *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

/* Value i of a row of `type` starting at `row`. */
__device__ __forceinline__ float deq(int type, const uint8_t *row, int i)
{
	switch (type) {
	case DT_F32:
		return ((const float *)row)[i];
	case DT_F16:
		return h2f(((const uint16_t *)row)[i]);
	case DT_BF16:
		return __uint_as_float((uint32_t)((const uint16_t *)row)[i] << 16);
	case DT_Q8_0: {
		const uint8_t *b = row + (size_t)(i >> 5) * 34;
		return __fmul_rn((float)((const int8_t *)(b + 2))[i & 31], h2f(ld16(b)));
	}
	case DT_Q4_0: {
		const uint8_t *b = row + (size_t)(i >> 5) * 18;
		int j = i & 31, q = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
		return __fmul_rn((float)(q - 8), h2f(ld16(b)));
	}
	case DT_Q4_1: {
		const uint8_t *b = row + (size_t)(i >> 5) * 20;
		int j = i & 31, q = j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4);
		return __fadd_rn(__fmul_rn((float)q, h2f(ld16(b))), h2f(ld16(b + 2)));
	}
	case DT_Q5_0:
	case DT_Q5_1: {
		int m1 = type == DT_Q5_1;
		const uint8_t *b = row + (size_t)(i >> 5) * (m1 ? 24 : 22);
		const uint8_t *qh = b + (m1 ? 4 : 2), *qs = qh + 4;
		int j = i & 31, q = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
		q |= ((qh[j >> 3] >> (j & 7)) & 1) << 4;
		if (m1)
			return __fadd_rn(__fmul_rn((float)q, h2f(ld16(b))), h2f(ld16(b + 2)));
		return __fmul_rn((float)(q - 16), h2f(ld16(b)));
	}
	case DT_Q4_K:
	case DT_Q5_K: {
		int k5 = type == DT_Q5_K;
		const uint8_t *b = row + (size_t)(i >> 8) * (k5 ? 176 : 144);
		int j = i & 255, grp = j >> 6, w = j & 63, hi = w >> 5, l = w & 31, s, m;
		scale_min_k4(2 * grp + hi, b + 4, &s, &m);
		int qb = b[(k5 ? 48 : 16) + grp * 32 + l];
		int q = hi ? qb >> 4 : qb & 0xF;
		if (k5 && ((b[16 + l] >> (2 * grp + hi)) & 1))
			q += 16;
		float d1 = __fmul_rn(h2f(ld16(b)), (float)s), m1 = __fmul_rn(h2f(ld16(b + 2)), (float)m);
		return __fsub_rn(__fmul_rn(d1, (float)q), m1);
	}
	case DT_MLX4:
	case DT_MLX8: { /* a self-contained row, see the top of this file */
		int bits = type - DT_MLX_BASE, group = *(const int *)row, cb = *(const int *)(row + 4);
		uint32_t word = *(const uint32_t *)(row + 16 + (size_t)(i * bits / 32) * 4);
		float q = (float)((word >> ((i * bits) & 31)) & ((1u << bits) - 1));
		const float *sb = (const float *)(row + 16 + cb) + 2 * (i / group);
		return __fadd_rn(__fmul_rn(sb[0], q), sb[1]);
	}
	case DT_Q6_K: {
		const uint8_t *b = row + (size_t)(i >> 8) * 210;
		int j = i & 255, half = j >> 7, w = j & 127, l = w & 31, qq = w >> 5;
		const uint8_t *ql = b + half * 64, *qh = b + 128 + half * 32;
		const int8_t *sc = (const int8_t *)(b + 192 + half * 8);
		int lo = ql[l + ((qq & 1) ? 32 : 0)];
		lo = qq >= 2 ? lo >> 4 : lo & 0xF;
		int q = (lo | (((qh[l] >> (2 * qq)) & 3) << 4)) - 32;
		return __fmul_rn(__fmul_rn(h2f(ld16(b + 208)), (float)sc[(l >> 4) + 2 * qq]), (float)q);
	}
	}
	return __int_as_float(0x7fc00000); /* unknown type: NaN, never silently zero */
}

static unsigned blocks_for(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* ---- programmatic dependent launch (Hopper) ----
 * The decode chain's kernels (products, norm + quantize, rope + KV store,
 * attention) are launched with programmatic stream serialization: each one
 * lets the next launch as soon as all its own blocks have started
 * (pdl_trigger), and each waits for the one before to finish and its
 * writes to be visible (pdl_wait) before it reads or writes any
 * activation or the KV cache; before that wait a kernel only touches
 * weights (the products prefetch their first rows into L2). So the next
 * kernel's launch and its first weight loads overlap the tail of the one
 * before. Kernels launched the usual way keep the usual stream order, and
 * pdl_wait returns at once where nothing programmatic came before. */
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

template <typename... P, typename... A>
static void launch_pdl(void (*k)(P...), dim3 grid, unsigned threads, size_t shmem, cudaStream_t s, A... args)
{
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = grid;
	cfg.blockDim = dim3(threads);
	cfg.dynamicSmemBytes = shmem;
	cfg.stream = s;
	cfg.attrs = at;
	cfg.numAttrs = 1;
	cudaLaunchKernelEx(&cfg, k, args...); /* a failure stays in cudaGetLastError() for the caller */
}

/* the bytes of a weight row into L2, by the 32 lanes of a warp */
__device__ __forceinline__ void prefetch_row(const uint8_t *row, size_t bytes, int lane)
{
	for (size_t o = (size_t)lane * 128; o < bytes; o += 32 * 128)
		asm volatile("prefetch.global.L2 [%0];" ::"l"(row + o));
}

/* ---- get_rows / dequant ---- */
__global__ void get_rows_k(float *out, const uint8_t *emb, int type, size_t rb, int cols, const int32_t *ids)
{
	int i = blockIdx.y;
	const uint8_t *row = emb + (size_t)ids[i] * rb;
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x)
		out[(size_t)i * cols + j] = deq(type, row, j);
}

extern "C" void k_get_rows(cudaStream_t s, float *out, const void *emb, int type, size_t rb, int cols,
			   const int32_t *ids, int n)
{
	for (int i0 = 0; i0 < n; i0 += 65535) /* grid y is at most 65535 */
		get_rows_k<<<dim3(blocks_for(cols, 256), (unsigned)(n - i0 < 65535 ? n - i0 : 65535)), 256, 0, s>>>(
			out + (size_t)i0 * cols, (const uint8_t *)emb, type, rb, cols, ids + i0);
}

__global__ void dequant_k(float *out, const uint8_t *w, int type, size_t rb, int cols)
{
	int r = blockIdx.y;
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x)
		out[(size_t)r * cols + j] = deq(type, w + (size_t)r * rb, j);
}

extern "C" void k_dequant(cudaStream_t s, float *out, const void *w, int type, size_t rb, int cols, int rows)
{
	/* rows may exceed the grid's y limit: go in slices */
	for (int r0 = 0; r0 < rows; r0 += 65535) {
		int nr = rows - r0 < 65535 ? rows - r0 : 65535;
		dequant_k<<<dim3(blocks_for(cols, 256), (unsigned)nr), 256, 0, s>>>(
			out + (size_t)r0 * cols, (const uint8_t *)w + (size_t)r0 * rb, type, rb, cols);
	}
}

/* ---- 16-bit copies for tensor-core products ---- */
__global__ void to_half_k(void *dst, const float *src, int64_t n, int bf)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		if (bf)
			((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(src[i]);
		else
			((__half *)dst)[i] = __float2half_rn(src[i]);
	}
}

extern "C" void k_to_half(cudaStream_t s, void *dst, const float *src, int64_t n, int bf)
{
	if (n > 0)
		to_half_k<<<blocks_for(n < (1 << 24) ? n : (1 << 24), 256), 256, 0, s>>>(dst, src, n, bf);
}

__global__ void dequant_half_k(void *out, const uint8_t *w, int type, size_t rb, int cols, int bf)
{
	int r = blockIdx.y;
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
		float v = deq(type, w + (size_t)r * rb, j);
		if (bf)
			((__nv_bfloat16 *)out)[(size_t)r * cols + j] = __float2bfloat16_rn(v);
		else
			((__half *)out)[(size_t)r * cols + j] = __float2half_rn(v);
	}
}

extern "C" void k_dequant_half(cudaStream_t s, void *out, const void *w, int type, size_t rb, int cols, int rows,
			       int bf)
{
	for (int r0 = 0; r0 < rows; r0 += 65535) {
		int nr = rows - r0 < 65535 ? rows - r0 : 65535;
		dequant_half_k<<<dim3(blocks_for(cols, 256), (unsigned)nr), 256, 0, s>>>(
			(uint8_t *)out + (size_t)r0 * cols * 2, (const uint8_t *)w + (size_t)r0 * rb, type, rb, cols, bf);
	}
}

/* ---- rmsnorm: one block of NORM_T threads per row, sum of squares in
 * double. norm_scale is shared with the fused products (mv_k, norm_quant_k),
 * which run it with the same block size, so a fused norm is bitwise the
 * standalone one. ---- */
#define NORM_T 256
__device__ float norm_scale(const float *xr, int dim, float eps)
{
	__shared__ double ss[NORM_T / 32];
	double acc = 0;
	int i = threadIdx.x;
	for (; i + 7 * NORM_T < dim; i += 8 * NORM_T) { /* 8 loads in flight, summed in order */
		float v[8];
#pragma unroll
		for (int k = 0; k < 8; k++)
			v[k] = xr[i + k * NORM_T];
#pragma unroll
		for (int k = 0; k < 8; k++)
			acc += (double)v[k] * v[k];
	}
	for (; i < dim; i += NORM_T)
		acc += (double)xr[i] * xr[i];
	for (int o = 16; o > 0; o >>= 1) /* fixed tree: warps, then the warps' sums */
		acc += __shfl_xor_sync(0xffffffffu, acc, o);
	__syncthreads(); /* an earlier call's readers are done with ss */
	if ((threadIdx.x & 31) == 0)
		ss[threadIdx.x >> 5] = acc;
	__syncthreads();
	double tot = 0;
	for (int i = 0; i < NORM_T / 32; i++)
		tot += ss[i];
	return (float)(1.0 / sqrt(tot / dim + eps));
}

__device__ __forceinline__ float norm_val(float x, float sc, float w) { return __fmul_rn(__fmul_rn(x, sc), w); }

/* values i, i + step, ... (8 of them) of a norm weight: the loads first */
__device__ __forceinline__ void deq8(int type, const uint8_t *w, int i, int step, float v[8])
{
	switch (type) {
	case DT_F32:
#pragma unroll
		for (int k = 0; k < 8; k++)
			v[k] = ((const float *)w)[i + k * step];
		return;
	case DT_F16:
	case DT_BF16: {
		uint16_t h[8];
#pragma unroll
		for (int k = 0; k < 8; k++)
			h[k] = ((const uint16_t *)w)[i + k * step];
#pragma unroll
		for (int k = 0; k < 8; k++)
			v[k] = type == DT_F16 ? h2f(h[k]) : __uint_as_float((uint32_t)h[k] << 16);
		return;
	}
	}
#pragma unroll
	for (int k = 0; k < 8; k++)
		v[k] = deq(type, w, i + k * step);
}

/* out[i] = rmsnorm value i of row xr (scale sc) for i < dim, by NORM_T
 * threads, 8 loads in flight each */
__device__ __forceinline__ void norm_row(float *out, const float *xr, float sc, const uint8_t *w, int wtype, int dim)
{
	int i = threadIdx.x;
	for (; i + 7 * NORM_T < dim; i += 8 * NORM_T) {
		float xv[8], wv[8];
#pragma unroll
		for (int k = 0; k < 8; k++)
			xv[k] = xr[i + k * NORM_T];
		deq8(wtype, w, i, NORM_T, wv);
#pragma unroll
		for (int k = 0; k < 8; k++)
			out[i + k * NORM_T] = norm_val(xv[k], sc, wv[k]);
	}
	for (; i < dim; i += NORM_T)
		out[i] = norm_val(xr[i], sc, deq(wtype, w, i));
}

__global__ void rmsnorm_k(float *out, const float *x, const uint8_t *w, int wtype, int dim, float eps)
{
	const float *xr = x + (size_t)blockIdx.x * dim;
	float sc = norm_scale(xr, dim, eps);
	norm_row(out + (size_t)blockIdx.x * dim, xr, sc, w, wtype, dim);
}

extern "C" void k_rmsnorm(cudaStream_t s, float *out, const float *x, const void *w, int wtype, int rows, int dim,
			  float eps)
{
	if (rows > 0)
		rmsnorm_k<<<(unsigned)rows, NORM_T, 0, s>>>(out, x, (const uint8_t *)w, wtype, dim, eps);
}
/* ---- matmul: one warp per weight row, MM_TB tokens per block column ---- */
#define MM_TB 8
#define MM_WARPS 4
__global__ void matmul_k(float *out, const uint8_t *w, int type, size_t rb, int cols, int rows, const float *x,
			 int n, const uint8_t *bias, int btype)
{
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int r = blockIdx.x * MM_WARPS + warp;
	if (r >= rows)
		return;
	int t0 = blockIdx.y * MM_TB, nt = n - t0 < MM_TB ? n - t0 : MM_TB;
	const uint8_t *wr = w + (size_t)r * rb;
	float acc[MM_TB];
#pragma unroll
	for (int q = 0; q < MM_TB; q++)
		acc[q] = 0;
	for (int i = lane; i < cols; i += 32) {
		float wv = deq(type, wr, i);
#pragma unroll
		for (int q = 0; q < MM_TB; q++)
			if (q < nt)
				acc[q] = fmaf(wv, x[(size_t)(t0 + q) * cols + i], acc[q]);
	}
	float b = bias ? deq(btype, bias, r) : 0.0f;
#pragma unroll
	for (int q = 0; q < MM_TB; q++) {
		float v = acc[q];
		for (int o = 16; o > 0; o >>= 1)
			v += __shfl_xor_sync(0xffffffffu, v, o);
		if (lane == 0 && q < nt)
			out[(size_t)(t0 + q) * rows + r] = bias ? __fadd_rn(v, b) : v;
	}
}

/* ---- fast matrix-vector products (decode, small batches) ----
 * One warp per weight row, up to MM_TB tokens per weight read. Float rows
 * are read 8 values (16 or 32 bytes) per lane, interleaved so that each
 * load instruction of a warp covers one contiguous span; quantized rows one
 * 32-value sub-block per lane (adjacent lanes read adjacent blocks). Each
 * token's sum runs over the same lanes in the same order whatever the
 * number of tokens, so results do not depend on the batch. */
/* values e..e+7 of a float row as raw 16-byte words (two for F32), loaded
 * with the streaming hint (each weight is read once per step), and their
 * float values */
template <int T> struct raw8 { uint4 u[T == DT_F32 ? 2 : 1]; };

template <int T> __device__ __forceinline__ raw8<T> ld8(const uint8_t *row, int e)
{
	raw8<T> r;
	const uint4 *p = (const uint4 *)(row + (size_t)e * (T == DT_F32 ? 4 : 2));
	r.u[0] = __ldcs(p);
	if (T == DT_F32)
		r.u[T == DT_F32 ? 1 : 0] = __ldcs(p + 1);
	return r;
}

template <int T> __device__ __forceinline__ void cvt8(const raw8<T> &r, float w[8])
{
	if (T == DT_F32) {
		const uint32_t v[8] = {r.u[0].x, r.u[0].y, r.u[0].z, r.u[0].w, r.u[T == DT_F32 ? 1 : 0].x,
				       r.u[T == DT_F32 ? 1 : 0].y, r.u[T == DT_F32 ? 1 : 0].z, r.u[T == DT_F32 ? 1 : 0].w};
#pragma unroll
		for (int k = 0; k < 8; k++)
			w[k] = __uint_as_float(v[k]);
	} else {
		uint32_t v[4] = {r.u[0].x, r.u[0].y, r.u[0].z, r.u[0].w};
#pragma unroll
		for (int k = 0; k < 4; k++) {
			if (T == DT_F16) {
				w[2 * k] = h2f((uint16_t)(v[k] & 0xffff));
				w[2 * k + 1] = h2f((uint16_t)(v[k] >> 16));
			} else {
				w[2 * k] = __uint_as_float(v[k] << 16);
				w[2 * k + 1] = __uint_as_float(v[k] & 0xffff0000u);
			}
		}
	}
}

/* values [32c, 32c + 32) of a quantized row, each equal to deq()'s */
/* block sizes of the 32-value formats */
template <int T> struct qblock { static const int bytes = T == DT_Q8_0 ? 34 : 18; };

template <int T> __device__ __forceinline__ void deq32(const uint8_t *row, int c, float w[32])
{
	if (T == DT_Q8_0) {
		const uint8_t *b = row + (size_t)c * 34;
		float d = h2f(ld16(b));
		const uint16_t *q = (const uint16_t *)(b + 2);
#pragma unroll
		for (int k = 0; k < 16; k++) {
			uint16_t u = q[k];
			w[2 * k] = __fmul_rn((float)(int8_t)(u & 0xff), d);
			w[2 * k + 1] = __fmul_rn((float)(int8_t)(u >> 8), d);
		}
	} else if (T == DT_Q4_0) {
		const uint8_t *b = row + (size_t)c * 18;
		float d = h2f(ld16(b));
		const uint16_t *q = (const uint16_t *)(b + 2);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			uint16_t u = q[k];
			int q0 = u & 0xff, q1 = u >> 8;
			w[2 * k] = __fmul_rn((float)((q0 & 0xF) - 8), d);
			w[2 * k + 1] = __fmul_rn((float)((q1 & 0xF) - 8), d);
			w[2 * k + 16] = __fmul_rn((float)((q0 >> 4) - 8), d);
			w[2 * k + 17] = __fmul_rn((float)((q1 >> 4) - 8), d);
		}
	} else if (T == DT_Q4_K || T == DT_Q5_K) {
		const int k5 = T == DT_Q5_K;
		int blk = c >> 3, sb = c & 7;
		const uint8_t *b = row + (size_t)blk * (k5 ? 176 : 144);
		int sc, mn;
		scale_min_k4(sb, b + 4, &sc, &mn);
		float d1 = __fmul_rn(h2f(ld16(b)), (float)sc), m1 = __fmul_rn(h2f(ld16(b + 2)), (float)mn);
		const uint4 *qp = (const uint4 *)(b + (k5 ? 48 : 16) + (sb >> 1) * 32);
		uint4 q0 = qp[0], q1 = qp[1];
		uint32_t qs[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
		uint32_t hs[8] = {0};
		if (k5) {
			const uint4 *hp = (const uint4 *)(b + 16);
			uint4 h0 = hp[0], h1 = hp[1];
			hs[0] = h0.x, hs[1] = h0.y, hs[2] = h0.z, hs[3] = h0.w, hs[4] = h1.x, hs[5] = h1.y, hs[6] = h1.z,
			hs[7] = h1.w;
		}
		int shift = (sb & 1) ? 4 : 0;
#pragma unroll
		for (int l = 0; l < 32; l++) {
			int q = (qs[l >> 2] >> (8 * (l & 3) + shift)) & 0xF;
			if (k5)
				q += ((hs[l >> 2] >> (8 * (l & 3) + sb)) & 1) << 4;
			w[l] = __fsub_rn(__fmul_rn(d1, (float)q), m1);
		}
	} else if (T == DT_Q6_K) {
		int blk = c >> 3, sb = c & 7, half = sb >> 2, qq = sb & 3;
		const uint8_t *b = row + (size_t)blk * 210;
		const uint8_t *ql = b + half * 64 + (qq & 1) * 32, *qh = b + 128 + half * 32;
		const int8_t *scp = (const int8_t *)(b + 192 + half * 8) + 2 * qq;
		float d = h2f(ld16(b + 208));
		float s0 = __fmul_rn(d, (float)scp[0]), s1 = __fmul_rn(d, (float)scp[1]);
#pragma unroll
		for (int l = 0; l < 32; l++) {
			int lo = qq >= 2 ? ql[l] >> 4 : ql[l] & 0xF;
			int q = (lo | (((qh[l] >> (2 * qq)) & 3) << 4)) - 32;
			w[l] = __fmul_rn(l < 16 ? s0 : s1, (float)q);
		}
	}
}

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}


/* ---- fast matrix-vector products (decode, small batches) ----
 * One launch multiplies the activations by up to three matrices of one
 * width stacked by rows (q/k/v; or one matrix), or by a gate/up pair with
 * silu(gate) * up in the epilogue (k_mats, kernels.h). Blocks of MV_WARPS
 * warps walk the stacked rows grid-stride, one warp per row, up to MM_TB
 * tokens per weight read. With a norm weight, each block first writes
 * rmsnorm(x) of its tokens to shared memory (norm_scale with the same block
 * size: bitwise the standalone rmsnorm) and multiplies that. Float rows are
 * read 8 values (16 or 32 bytes) per lane with 16 * MV_U bytes in flight
 * per lane before any is used, interleaved so that each load instruction of a warp covers
 * one contiguous span; quantized rows one 32-value sub-block per lane
 * (adjacent lanes read adjacent blocks). Each token's sum runs over the same
 * lanes in the same order whatever the number of tokens, the grid or the
 * stacking, so results do not depend on the batch. */
#define MV_WARPS (NORM_T / 32)
#define MV_U 8

template <int T>
__device__ __forceinline__ void dot_float(const uint8_t *wr, const float *xb, int cols, int nt, int lane,
					  float acc[MM_TB])
{
	const int U = T == DT_F32 ? MV_U / 2 : MV_U; /* 16 * MV_U bytes in flight per lane */
	for (int e0 = lane * 8; e0 < cols; e0 += 256 * U) {
		raw8<T> raw[U];
#pragma unroll
		for (int u = 0; u < U; u++)
			if (e0 + 256 * u < cols)
				raw[u] = ld8<T>(wr, e0 + 256 * u);
#pragma unroll
		for (int u = 0; u < U; u++) {
			int e = e0 + 256 * u;
			if (e >= cols)
				break;
			float wv[8];
			cvt8<T>(raw[u], wv);
#pragma unroll
			for (int q = 0; q < MM_TB; q++) {
				if (q >= nt)
					break;
				const float4 *xp = (const float4 *)(xb + (size_t)q * cols + e);
				float4 a = xp[0], b = xp[1];
				float s = acc[q];
				s = fmaf(wv[0], a.x, s);
				s = fmaf(wv[1], a.y, s);
				s = fmaf(wv[2], a.z, s);
				s = fmaf(wv[3], a.w, s);
				s = fmaf(wv[4], b.x, s);
				s = fmaf(wv[5], b.y, s);
				s = fmaf(wv[6], b.z, s);
				s = fmaf(wv[7], b.w, s);
				acc[q] = s;
			}
		}
	}
}

/* the 32 decoded values of sub-block c against each token's x */
__device__ __forceinline__ void dot32(const float wv[32], const float *xb, int c, int cols, int nt, float acc[MM_TB])
{
#pragma unroll
	for (int q = 0; q < MM_TB; q++) {
		if (q >= nt)
			break;
		const float4 *xp = (const float4 *)(xb + (size_t)q * cols + (size_t)c * 32);
		float s = acc[q];
#pragma unroll
		for (int j = 0; j < 8; j++) {
			float4 a = xp[j];
			s = fmaf(wv[4 * j], a.x, s);
			s = fmaf(wv[4 * j + 1], a.y, s);
			s = fmaf(wv[4 * j + 2], a.z, s);
			s = fmaf(wv[4 * j + 3], a.w, s);
		}
		acc[q] = s;
	}
}

/* one row of a float or quantized matrix against float activations; sh:
 * the warp's staging buffer (Q8_0 / Q4_0) */
template <int T>
__device__ __forceinline__ void dot_row(const uint8_t *wr, size_t rb, const float *xb, int cols, int nt, int lane,
					float acc[MM_TB], uint4 *sh)
{
	if (T == DT_F32 || T == DT_F16 || T == DT_BF16) {
		dot_float<T>(wr, xb, cols, nt, lane, acc);
	} else if ((T == DT_Q8_0 || T == DT_Q4_0) && rb % 16 == 0) {
		/* the warp loads its 32 blocks together (16-byte loads into shared
		 * memory), then each lane decodes its own block from there */
		const int BB = qblock<T>::bytes;
		int nc = cols >> 5;
		for (int c0 = 0; c0 < nc; c0 += 32) {
			int nb = nc - c0 < 32 ? nc - c0 : 32, nvec = nb * BB / 16;
			const uint4 *src = (const uint4 *)(wr + (size_t)c0 * BB);
			for (int k = lane; k < nvec; k += 32)
				sh[k] = src[k];
			__syncwarp();
			if (lane < nb) {
				float wv[32];
				deq32<T>((const uint8_t *)sh, lane, wv);
				dot32(wv, xb, c0 + lane, cols, nt, acc);
			}
			__syncwarp();
		}
	} else {
		for (int c = lane; c < cols >> 5; c += 32) {
			float wv[32];
			deq32<T>(wr, c, wv);
			dot32(wv, xb, c, cols, nt, acc);
		}
	}
}

__device__ __forceinline__ int mv_total(const k_mats &m)
{
	return m.swiglu ? m.rows[0] : m.rows[0] + m.rows[1] + m.rows[2];
}

/* the matrix of stacked row gr (< mv_total), and its row there in *r */
__device__ __forceinline__ int mv_pick(const k_mats &m, int gr, int *r)
{
	int mi = 0;
	for (*r = gr; *r >= m.rows[mi]; mi++)
		*r -= m.rows[mi];
	return mi;
}

/* stacked row gr (and its up row) into L2 */
__device__ __forceinline__ void mv_prefetch(const k_mats &m, int gr, int lane)
{
	if (gr >= mv_total(m))
		return;
	int r, mi = mv_pick(m, gr, &r);
	prefetch_row((const uint8_t *)m.w[mi] + (size_t)r * m.rb[mi], m.rb[mi], lane);
	if (m.swiglu)
		prefetch_row((const uint8_t *)m.w[1] + (size_t)r * m.rb[1], m.rb[1], lane);
}

/* the sums of row r of matrix mi (and of the up matrix's row r) to the
 * output: bias, silu(gate) * up, or the residual add */
__device__ __forceinline__ void mv_store(const k_mats &m, int mi, int r, int t0, int nt, int lane,
					 const float acc[MM_TB], const float acc2[MM_TB])
{
	float bv = m.bias[mi] ? deq(m.btype, (const uint8_t *)m.bias[mi], r) : 0.0f;
#pragma unroll
	for (int q = 0; q < MM_TB; q++) {
		if (q >= nt)
			break;
		float v = warp_sum(acc[q]);
		if (m.bias[mi])
			v = __fadd_rn(v, bv);
		if (m.swiglu) {
			float u = warp_sum(acc2[q]);
			v = __fmul_rn(__fdiv_rn(v, __fadd_rn(1.0f, expf(-v))), u);
		}
		if (lane == 0) {
			float *o = m.out[mi] + (size_t)(t0 + q) * m.rows[mi] + r;
			*o = m.accum ? __fadd_rn(*o, v) : v; /* accum: the residual add, fused */
		}
	}
}

template <int T>
__global__ void __launch_bounds__(NORM_T) mv_k(k_mats m, int cols, const float *x, int n, const uint8_t *nw,
					       int ntype, float eps)
{
	extern __shared__ float4 mv_x[]; /* rmsnorm(x): MM_TB x cols floats at most */
	__shared__ uint4 wsh[MV_WARPS][(T == DT_Q8_0 || T == DT_Q4_0) ? 68 : 1];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int t0 = blockIdx.y * MM_TB, nt = n - t0 < MM_TB ? n - t0 : MM_TB;
	const float *xb = x + (size_t)t0 * cols;
	pdl_trigger();
	mv_prefetch(m, blockIdx.x * MV_WARPS + warp, lane);
	pdl_wait();
	if (nw) {
		float *h = (float *)mv_x;
		for (int q = 0; q < nt; q++) {
			const float *xr = xb + (size_t)q * cols;
			norm_row(h + (size_t)q * cols, xr, norm_scale(xr, cols, eps), nw, ntype, cols);
		}
		__syncthreads();
		xb = h;
	}
	for (int gr = blockIdx.x * MV_WARPS + warp; gr < mv_total(m); gr += gridDim.x * MV_WARPS) {
		int r, mi = mv_pick(m, gr, &r);
		float acc[MM_TB] = {0}, acc2[MM_TB] = {0};
		dot_row<T>((const uint8_t *)m.w[mi] + (size_t)r * m.rb[mi], m.rb[mi], xb, cols, nt, lane, acc, wsh[warp]);
		if (m.swiglu)
			dot_row<T>((const uint8_t *)m.w[1] + (size_t)r * m.rb[1], m.rb[1], xb, cols, nt, lane, acc2,
				   wsh[warp]);
		mv_store(m, mi, r, t0, nt, lane, acc, acc2);
	}
}

/* blocks for `total` stacked rows: at most 8 per SM, the rest grid-stride */
static unsigned mv_grid(int total)
{
	int dev = 0, nsm = 0;
	cudaGetDevice(&dev);
	if (cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || nsm <= 0)
		nsm = 16;
	unsigned b = blocks_for(total, MV_WARPS), cap = 8u * (unsigned)nsm;
	return b < cap ? b : cap;
}

static int mv_count(const k_mats *m) { return m->swiglu ? 2 : m->rows[2] ? 3 : m->rows[1] ? 2 : 1; }

/* the same matrices for tokens [t0, t0 + ...): outputs moved on */
static k_mats mv_from(const k_mats *m, int t0)
{
	k_mats o = *m;
	for (int i = 0; i < 3; i++)
		if (o.out[i])
			o.out[i] += (size_t)t0 * o.rows[i];
	return o;
}

/* The normalized activations of a tile and mv_k's own shared memory must
 * fit the 48 KiB a launch gets without opting in */
template <int T> static int mv_fits(size_t dyn)
{
	static size_t cache; /* mv_k<T>'s static shared memory; executors of
			      * two models may both fill it, with one value */
	size_t own = __atomic_load_n(&cache, __ATOMIC_RELAXED);
	if (!own) {
		cudaFuncAttributes fa;
		own = cudaFuncGetAttributes(&fa, mv_k<T>) == cudaSuccess ? fa.sharedSizeBytes : 16 * 1024;
		__atomic_store_n(&cache, own ? own : 1, __ATOMIC_RELAXED);
	}
	return dyn + own <= 48 * 1024;
}

template <int T>
static int mv(cudaStream_t s, const k_mats *m, int cols, const float *x, int n, const void *nw, int ntype, float eps)
{
	if (nw && !mv_fits<T>((size_t)(n < MM_TB ? n : MM_TB) * cols * sizeof(float)))
		return 0;
	int total = m->swiglu ? m->rows[0] : m->rows[0] + m->rows[1] + m->rows[2];
	for (int t0 = 0; t0 < n; t0 += 65535 * MM_TB) { /* grid y is at most 65535 */
		int nt = n - t0 < 65535 * MM_TB ? n - t0 : 65535 * MM_TB;
		size_t sh = nw ? (size_t)(nt < MM_TB ? nt : MM_TB) * cols * sizeof(float) : 0;
		launch_pdl(mv_k<T>, dim3(mv_grid(total), blocks_for(nt, MM_TB)), NORM_T, sh, s, mv_from(m, t0), cols,
			   x + (size_t)t0 * cols, nt, (const uint8_t *)nw, ntype, eps);
	}
	return 1;
}

extern "C" int k_mv(cudaStream_t s, const k_mats *m, int cols, const float *x, int n, const void *nw, int ntype,
		    float eps)
{
	int type = m->type[0];
	for (int i = 0; i < mv_count(m); i++)
		if (m->type[i] != type || ((uintptr_t)m->w[i] & 15))
			return 0;
	int flt = type == DT_F32 || type == DT_F16 || type == DT_BF16;
	if (((uintptr_t)x & 15) || cols % (flt ? 256 : 32))
		return 0;
	switch (type) {
	case DT_F32: return mv<DT_F32>(s, m, cols, x, n, nw, ntype, eps);
	case DT_F16: return mv<DT_F16>(s, m, cols, x, n, nw, ntype, eps);
	case DT_BF16: return mv<DT_BF16>(s, m, cols, x, n, nw, ntype, eps);
	case DT_Q8_0: return mv<DT_Q8_0>(s, m, cols, x, n, nw, ntype, eps);
	case DT_Q4_0: return mv<DT_Q4_0>(s, m, cols, x, n, nw, ntype, eps);
	case DT_Q4_K: return mv<DT_Q4_K>(s, m, cols, x, n, nw, ntype, eps);
	case DT_Q5_K: return mv<DT_Q5_K>(s, m, cols, x, n, nw, ntype, eps);
	case DT_Q6_K: return mv<DT_Q6_K>(s, m, cols, x, n, nw, ntype, eps);
	}
	return 0;
}

/* one matrix: out (+)= x . W (+ bias) */
static k_mats mv_one(float *out, const void *w, int type, size_t rb, int rows, const void *bias, int btype, int accum)
{
	k_mats m = {};
	m.w[0] = w;
	m.type[0] = type;
	m.rb[0] = rb;
	m.bias[0] = bias;
	m.btype = btype;
	m.out[0] = out;
	m.rows[0] = rows;
	m.accum = accum;
	return m;
}

/* ---- 8-bit activations with dp4a: the default mode's decode for Q8_0,
 * Q4_K and Q6_K ----
 * Activations are quantized per 32 values like Q8_0 (scale = max|x| / 127,
 * round to nearest; quant32, 4 lanes per 32 values), also straight from
 * rmsnorm (norm_quant_k); a
 * block's dot product is 8 dp4a in int32, then float multiplies by the
 * scales. The matrices of one launch may differ in type (Q4_K_M mixes
 * Q4_K and Q6_K): each row branches on its matrix's type, warp-uniformly. */
__device__ __forceinline__ void quant32(const float v[8], int sub, int8_t *xq, float *xd, int *xs, int64_t b,
					bool live)
{
	/* 32 values by the 4 lanes sub = 0..3 of a group (8 each); every lane of
	 * the warp takes part in the shuffles, `live` ones store */
	float a = 0;
#pragma unroll
	for (int k = 0; k < 8; k++)
		a = fmaxf(a, fabsf(v[k]));
	a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
	a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 2));
	float d = a / 127.0f;
	int sum = 0;
	uint32_t pk[2] = {0, 0};
#pragma unroll
	for (int k = 0; k < 8; k++) {
		int q = d > 0 ? __float2int_rn(v[k] / d) : 0;
		sum += q;
		pk[k >> 2] |= (uint32_t)(q & 0xff) << (8 * (k & 3));
	}
	sum += __shfl_xor_sync(0xffffffffu, sum, 1);
	sum += __shfl_xor_sync(0xffffffffu, sum, 2);
	if (!live)
		return;
	*(uint2 *)(xq + b * 32 + sub * 8) = make_uint2(pk[0], pk[1]);
	if (sub == 0) {
		xd[b] = d;
		xs[b] = sum;
	}
}

__global__ void quant_x_k(const float *x, int8_t *xq, float *xd, int *xs, int64_t nblk)
{
	int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, b = g >> 2;
	int sub = (int)(g & 3);
	bool live = b < nblk;
	pdl_trigger();
	pdl_wait();
	float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	if (live) {
		const float4 *p = (const float4 *)(x + b * 32 + sub * 8);
		float4 u0 = p[0], u1 = p[1];
		v[0] = u0.x, v[1] = u0.y, v[2] = u0.z, v[3] = u0.w, v[4] = u1.x, v[5] = u1.y, v[6] = u1.z, v[7] = u1.w;
	}
	quant32(v, sub, xq, xd, xs, b, live);
}

extern "C" void k_quant_x(cudaStream_t s, const float *x, int8_t *xq, float *xd, int *xs, int64_t n)
{
	int64_t nblk = n / 32;
	if (nblk > 0)
		launch_pdl(quant_x_k, dim3(blocks_for(nblk * 4, 256)), 256, 0, s, x, xq, xd, xs, nblk);
}

/* rmsnorm and quantization in one pass: one block per row, 4 lanes per
 * 32 values */
__global__ void __launch_bounds__(NORM_T) norm_quant_k(const float *x, const uint8_t *w, int wtype, int dim,
						       float eps, int8_t *xq, float *xd, int *xs)
{
	const float *xr = x + (size_t)blockIdx.x * dim;
	pdl_trigger();
	pdl_wait();
	float sc = norm_scale(xr, dim, eps);
	int nb = dim >> 5, sub = threadIdx.x & 3;
	for (int b0 = 0; b0 < nb; b0 += NORM_T / 4) {
		int b = b0 + (threadIdx.x >> 2), i = b * 32 + sub * 8;
		bool live = b < nb;
		float v[8] = {0, 0, 0, 0, 0, 0, 0, 0}, wv[8];
		if (live) {
			deq8(wtype, w, i, 1, wv);
#pragma unroll
			for (int k = 0; k < 8; k++)
				v[k] = norm_val(xr[i + k], sc, wv[k]);
		}
		quant32(v, sub, xq, xd, xs, (int64_t)blockIdx.x * nb + b, live);
	}
}

extern "C" void k_norm_quant(cudaStream_t s, const float *x, const void *w, int wtype, int rows, int dim, float eps,
			     int8_t *xq, float *xd, int *xs)
{
	if (rows > 0)
		launch_pdl(norm_quant_k, dim3((unsigned)rows), NORM_T, 0, s, x, (const uint8_t *)w, wtype, dim, eps, xq, xd, xs);
}

/* Q8_0 row: the warp stages Q8_ROUND blocks in shared memory (16-byte
 * loads, all in flight at once), each lane takes blocks lane, lane + 32:
 * 8 dp4a each, then the two scales */
#define Q8_ROUND 64
__device__ __forceinline__ void dot_q8_0(const uint8_t *wr, const int8_t *xq, const float *xd, int cols, int nt,
					 int lane, float acc[MM_TB], uint4 *sh)
{
	int nc = cols >> 5;
	for (int c0 = 0; c0 < nc; c0 += Q8_ROUND) {
		int nb = nc - c0 < Q8_ROUND ? nc - c0 : Q8_ROUND, nvec = nb * 34 / 16;
		const uint4 *src = (const uint4 *)(wr + (size_t)c0 * 34);
		uint4 ld[Q8_ROUND * 34 / 16 / 32 + 1]; /* every load issued before any store */
#pragma unroll
		for (int j = 0; j < Q8_ROUND * 34 / 16 / 32 + 1; j++)
			if (lane + 32 * j < nvec)
				ld[j] = __ldcs(src + lane + 32 * j);
#pragma unroll
		for (int j = 0; j < Q8_ROUND * 34 / 16 / 32 + 1; j++)
			if (lane + 32 * j < nvec)
				sh[lane + 32 * j] = ld[j];
		__syncwarp();
		for (int l = lane; l < nb; l += 32) {
			const uint8_t *b = (const uint8_t *)sh + l * 34;
			float dw = h2f(ld16(b));
			const uint16_t *h = (const uint16_t *)(b + 2);
			int wq[8];
#pragma unroll
			for (int k = 0; k < 8; k++)
				wq[k] = (int)((uint32_t)h[2 * k] | ((uint32_t)h[2 * k + 1] << 16));
			int c = c0 + l;
#pragma unroll
			for (int q = 0; q < MM_TB; q++) {
				if (q >= nt)
					break;
				const uint4 *xp = (const uint4 *)(xq + (size_t)q * cols + (size_t)c * 32);
				uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
				int sum = 0;
				sum = __dp4a(wq[0], (int)x0.x, sum);
				sum = __dp4a(wq[1], (int)x0.y, sum);
				sum = __dp4a(wq[2], (int)x0.z, sum);
				sum = __dp4a(wq[3], (int)x0.w, sum);
				sum = __dp4a(wq[4], (int)x1.x, sum);
				sum = __dp4a(wq[5], (int)x1.y, sum);
				sum = __dp4a(wq[6], (int)x1.z, sum);
				sum = __dp4a(wq[7], (int)x1.w, sum);
				acc[q] = fmaf((float)sum, dw * xd[(size_t)q * nc + c], acc[q]);
			}
		}
		__syncwarp();
	}
}

/* K-quant rows, one 32-value sub-block per lane.
 * Q4_K: sum = dx * (d*sc * sum(q * xq) - dmin*m * sum(xq));
 * Q6_K: sum = dx * d * (sc0 * sum over the first 16 + sc1 * the last 16),
 * with q - 32 as signed bytes. */
template <int T>
__device__ __forceinline__ void dot_kq8(const uint8_t *wr, const int8_t *xq, const float *xd, const int *xs, int cols,
					int nt, int lane, float acc[MM_TB])
{
	int nc = cols >> 5;
#pragma unroll 2
	for (int c = lane; c < nc; c += 32) {
		int blk = c >> 3, sb = c & 7, wq[8];
		float f0, f1; /* Q4_K: d*sc, dmin*m; Q6_K: d*sc0, d*sc1 */
		if (T == DT_Q4_K) {
			const uint8_t *b = wr + (size_t)blk * 144;
			int sc, mn;
			scale_min_k4(sb, b + 4, &sc, &mn);
			f0 = __fmul_rn(h2f(ld16(b)), (float)sc);
			f1 = __fmul_rn(h2f(ld16(b + 2)), (float)mn);
			const uint4 *qp = (const uint4 *)(b + 16 + (sb >> 1) * 32);
			uint4 q0 = qp[0], q1 = qp[1];
			uint32_t qs[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
			for (int k = 0; k < 8; k++)
				wq[k] = (int)(((sb & 1) ? qs[k] >> 4 : qs[k]) & 0x0F0F0F0Fu);
		} else {
			const uint8_t *b = wr + (size_t)blk * 210;
			int half = sb >> 2, qq = sb & 3;
			const uint16_t *ql = (const uint16_t *)(b + half * 64 + (qq & 1) * 32);
			const uint16_t *qh = (const uint16_t *)(b + 128 + half * 32);
			const int8_t *scp = (const int8_t *)(b + 192 + half * 8) + 2 * qq;
			float d = h2f(ld16(b + 208));
			f0 = __fmul_rn(d, (float)scp[0]);
			f1 = __fmul_rn(d, (float)scp[1]);
#pragma unroll
			for (int k = 0; k < 8; k++) {
				uint32_t lo = (uint32_t)ql[2 * k] | ((uint32_t)ql[2 * k + 1] << 16);
				uint32_t hi = (uint32_t)qh[2 * k] | ((uint32_t)qh[2 * k + 1] << 16);
				lo = (qq >= 2 ? lo >> 4 : lo) & 0x0F0F0F0Fu;
				hi = ((hi >> (2 * qq)) & 0x03030303u) << 4;
				wq[k] = (int)__vsub4(lo | hi, 0x20202020u);
			}
		}
#pragma unroll
		for (int q = 0; q < MM_TB; q++) {
			if (q >= nt)
				break;
			size_t xb = (size_t)q * nc + c;
			const uint4 *xp = (const uint4 *)(xq + xb * 32);
			uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
			int xv[8] = {(int)x0.x, (int)x0.y, (int)x0.z, (int)x0.w, (int)x1.x, (int)x1.y, (int)x1.z, (int)x1.w};
			int s0 = 0, s1 = 0;
#pragma unroll
			for (int k = 0; k < 4; k++)
				s0 = __dp4a(wq[k], xv[k], s0);
#pragma unroll
			for (int k = 4; k < 8; k++)
				s1 = __dp4a(wq[k], xv[k], s1);
			float v = T == DT_Q4_K ? f0 * (float)(s0 + s1) - f1 * (float)xs[xb] : f0 * (float)s0 + f1 * (float)s1;
			acc[q] = fmaf(v, xd[xb], acc[q]);
		}
	}
}

__device__ __forceinline__ void dot_q8(int type, const uint8_t *wr, const int8_t *xq, const float *xd, const int *xs,
				       int cols, int nt, int lane, float acc[MM_TB], uint4 *sh)
{
	if (type == DT_Q8_0)
		dot_q8_0(wr, xq, xd, cols, nt, lane, acc, sh);
	else if (type == DT_Q4_K)
		dot_kq8<DT_Q4_K>(wr, xq, xd, xs, cols, nt, lane, acc);
	else
		dot_kq8<DT_Q6_K>(wr, xq, xd, xs, cols, nt, lane, acc);
}

__global__ void __launch_bounds__(NORM_T) mv_q8_k(k_mats m, int cols, const int8_t *xq, const float *xd,
						  const int *xs, int n)
{
	__shared__ uint4 wsh[MV_WARPS][Q8_ROUND * 34 / 16];
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nc = cols >> 5;
	int t0 = blockIdx.y * MM_TB, nt = n - t0 < MM_TB ? n - t0 : MM_TB;
	xq += (size_t)t0 * cols;
	xd += (size_t)t0 * nc;
	xs += (size_t)t0 * nc;
	pdl_trigger();
	mv_prefetch(m, blockIdx.x * MV_WARPS + warp, lane);
	pdl_wait();
	for (int gr = blockIdx.x * MV_WARPS + warp; gr < mv_total(m); gr += gridDim.x * MV_WARPS) {
		int r, mi = mv_pick(m, gr, &r);
		float acc[MM_TB] = {0}, acc2[MM_TB] = {0};
		dot_q8(m.type[mi], (const uint8_t *)m.w[mi] + (size_t)r * m.rb[mi], xq, xd, xs, cols, nt, lane, acc,
		       wsh[warp]);
		if (m.swiglu)
			dot_q8(m.type[1], (const uint8_t *)m.w[1] + (size_t)r * m.rb[1], xq, xd, xs, cols, nt, lane, acc2,
			       wsh[warp]);
		mv_store(m, mi, r, t0, nt, lane, acc, acc2);
	}
}

extern "C" int k_mv_q8(cudaStream_t s, const k_mats *m, int cols, const int8_t *xq, const float *xd, const int *xs,
		       int n)
{
	for (int i = 0; i < mv_count(m); i++)
		if (m->type[i] != DT_Q8_0 && m->type[i] != DT_Q4_K && m->type[i] != DT_Q6_K)
			return 0;
	if (cols % 256)
		return 0;
	int total = m->swiglu ? m->rows[0] : m->rows[0] + m->rows[1] + m->rows[2];
	for (int t0 = 0; t0 < n; t0 += 65535 * MM_TB) {
		int nt = n - t0 < 65535 * MM_TB ? n - t0 : 65535 * MM_TB;
		size_t xo = (size_t)t0 * (cols / 32);
		launch_pdl(mv_q8_k, dim3(mv_grid(total), blocks_for(nt, MM_TB)), NORM_T, 0, s, mv_from(m, t0), cols,
			   xq + (size_t)t0 * cols, xd + xo, xs + xo, nt);
	}
	return 1;
}

extern "C" int k_matmul_acc(cudaStream_t s, float *out, const void *w, int type, size_t rb, int cols, int rows,
			    const float *x, int n)
{
	k_mats m = mv_one(out, w, type, rb, rows, NULL, 0, 1);
	return k_mv(s, &m, cols, x, n, NULL, 0, 0);
}

extern "C" void k_matmul(cudaStream_t s, float *out, const void *w, int type, size_t rb, int cols, int rows,
			 const float *x, int n, const void *bias, int btype)
{
	k_mats m = mv_one(out, w, type, rb, rows, bias, btype, 0);
	if (k_mv(s, &m, cols, x, n, NULL, 0, 0))
		return;
	/* any other shape: the plain kernel */
	for (int t0 = 0; t0 < n; t0 += 65535 * MM_TB) {
		int nt = n - t0 < 65535 * MM_TB ? n - t0 : 65535 * MM_TB;
		matmul_k<<<dim3(blocks_for(rows, MM_WARPS), blocks_for(nt, MM_TB)), 32 * MM_WARPS, 0, s>>>(
			out + (size_t)t0 * rows, (const uint8_t *)w, type, rb, cols, rows, x + (size_t)t0 * cols, nt,
			(const uint8_t *)bias, btype);
	}
}
__global__ void add_bias_k(float *out, const uint8_t *bias, int btype, int rows, int64_t total)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
		out[i] = __fadd_rn(out[i], deq(btype, bias, (int)(i % rows)));
}

extern "C" void k_add_bias(cudaStream_t s, float *out, const void *bias, int btype, int rows, int n)
{
	int64_t total = (int64_t)rows * n;
	if (total > 0)
		add_bias_k<<<blocks_for(total < (1 << 24) ? total : (1 << 24), 256), 256, 0, s>>>(
			out, (const uint8_t *)bias, btype, rows, total);
}

/* ---- rope ---- */
__global__ void rope_k(float *x, const float *cs, int heads, int hd, int neox, int64_t total)
{
	int half = hd / 2;
	for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = g / half;
		int i = (int)(g % half);
		float *xr = x + r * hd;
		const float *c = cs + ((r / heads) * half + i) * 2;
		int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
		float x0 = xr[i0], x1 = xr[i1];
		xr[i0] = __fsub_rn(__fmul_rn(x0, c[0]), __fmul_rn(x1, c[1]));
		xr[i1] = __fadd_rn(__fmul_rn(x1, c[0]), __fmul_rn(x0, c[1]));
	}
}

extern "C" void k_rope(cudaStream_t s, float *x, const float *cs, int n, int heads, int hd, int neox)
{
	int64_t total = (int64_t)n * heads * (hd / 2);
	if (total > 0)
		rope_k<<<blocks_for(total < (1 << 24) ? total : (1 << 24), 256), 256, 0, s>>>(x, cs, heads, hd, neox,
											  total);
}

/* ---- paged KV cache: [layer][block][bs][kvdim] for K and for V ---- */
__device__ __forceinline__ size_t kv_at(int layer, int n_blocks, int blk, int bs, int off, int kvdim)
{
	return (((size_t)layer * n_blocks + blk) * bs + off) * (size_t)kvdim;
}

__global__ void store_kv_k(float *kc, float *vc, const float *k, const float *v, const int32_t *pos,
			   const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs, int kvdim,
			   int layer)
{
	int t = blockIdx.x, p = pos[t];
	size_t o = kv_at(layer, n_blocks, tables[(size_t)seq[t] * max_nb + p / bs], bs, p % bs, kvdim);
	for (int j = threadIdx.x; j < kvdim; j += blockDim.x) {
		kc[o + j] = k[(size_t)t * kvdim + j];
		vc[o + j] = v[(size_t)t * kvdim + j];
	}
}

extern "C" void k_store_kv(cudaStream_t s, float *kc, float *vc, const float *k, const float *v, const int32_t *pos,
			   const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs, int kvdim,
			   int layer, int n)
{
	if (n > 0)
		store_kv_k<<<(unsigned)n, 128, 0, s>>>(kc, vc, k, v, pos, seq, tables, max_nb, n_blocks, bs, kvdim,
						       layer);
}

/* rope of q (in place) and of k, with k and v stored in the cache:
 * rope_k's and store_kv_k's values in one launch; blockIdx.x is the token,
 * each thread one rotated pair or one value of v */
#define RS_T 128
__global__ void rope_store_k(float *q, const float *k, const float *v, float *kc, float *vc, const float *cs,
			     const int32_t *pos, const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks,
			     int bs, int heads, int kv_heads, int hd, int neox, int layer)
{
	int t = blockIdx.x, p = pos[t], half = hd / 2, kvdim = kv_heads * hd, np = (heads + kv_heads) * half;
	int g = blockIdx.y * RS_T + threadIdx.x;
	pdl_trigger();
	pdl_wait();
	size_t o = kv_at(layer, n_blocks, tables[(size_t)seq[t] * max_nb + p / bs], bs, p % bs, kvdim);
	if (g >= np) {
		if (g - np < kvdim)
			vc[o + g - np] = v[(size_t)t * kvdim + g - np];
		return;
	}
	const float *c = cs + (size_t)t * half * 2;
	float *qt = q + (size_t)t * heads * hd;
	const float *kt = k + (size_t)t * kvdim;
	int h = g / half, i = g % half, i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
	const float *xr = h < heads ? qt + (size_t)h * hd : kt + (size_t)(h - heads) * hd;
	float *dst = h < heads ? qt + (size_t)h * hd : kc + o + (size_t)(h - heads) * hd;
	float x0 = xr[i0], x1 = xr[i1];
	dst[i0] = __fsub_rn(__fmul_rn(x0, c[2 * i]), __fmul_rn(x1, c[2 * i + 1]));
	dst[i1] = __fadd_rn(__fmul_rn(x1, c[2 * i]), __fmul_rn(x0, c[2 * i + 1]));
}

extern "C" void k_rope_store(cudaStream_t s, float *q, const float *k, const float *v, float *kc, float *vc,
			     const float *cs, const int32_t *pos, const int32_t *seq, const int32_t *tables, int max_nb,
			     int n_blocks, int bs, int heads, int kv_heads, int hd, int neox, int layer, int n)
{
	int items = (heads + kv_heads) * (hd / 2) + kv_heads * hd;
	if (n > 0)
		launch_pdl(rope_store_k, dim3((unsigned)n, blocks_for(items, RS_T)), RS_T, 0, s, q, k, v, kc, vc, cs, pos, seq,
			   tables, max_nb, n_blocks, bs, heads, kv_heads, hd, neox, layer);
}

/* One block per (token, head); warp w takes positions w, w + ATT_W, ...
 * with an online softmax, then warp 0 merges the ATT_W partial results.
 * head_dim <= 256 (8 values per lane). */
#define ATT_W 4
#define ATT_PER 8
__global__ void attention_k(float *out, const float *q, const float *kc, const float *vc, const int32_t *pos,
			    const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks, int bs, int kvdim,
			    int layer, int heads, int group, int hd, float scale)
{
	__shared__ float sm[ATT_W], sl[ATT_W], sacc[ATT_W][ATT_PER * 32];
	int t = blockIdx.x, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const float *qp = q + ((size_t)t * heads + h) * hd;
	const int32_t *tab = tables + (size_t)seq[t] * max_nb;
	size_t hoff = (size_t)(h / group) * hd;
	float qr[ATT_PER], acc[ATT_PER];
#pragma unroll
	for (int j = 0; j < ATT_PER; j++) {
		int i = lane + 32 * j;
		qr[j] = i < hd ? qp[i] : 0.0f;
		acc[j] = 0;
	}
	float m = -INFINITY, l = 0;
	int L = pos[t] + 1;
	for (int p = warp; p < L; p += ATT_W) {
		size_t o = kv_at(layer, n_blocks, tab[p / bs], bs, p % bs, kvdim) + hoff;
		float d = 0;
#pragma unroll
		for (int j = 0; j < ATT_PER; j++) {
			int i = lane + 32 * j;
			if (i < hd)
				d = fmaf(qr[j], kc[o + i], d);
		}
		for (int x = 16; x > 0; x >>= 1)
			d += __shfl_xor_sync(0xffffffffu, d, x);
		float sc = d * scale, mn = fmaxf(m, sc), a = expf(m - mn), e = expf(sc - mn);
		l = l * a + e;
#pragma unroll
		for (int j = 0; j < ATT_PER; j++) {
			int i = lane + 32 * j;
			if (i < hd)
				acc[j] = acc[j] * a + e * vc[o + i];
		}
		m = mn;
	}
	if (lane == 0) {
		sm[warp] = m;
		sl[warp] = l;
	}
#pragma unroll
	for (int j = 0; j < ATT_PER; j++)
		sacc[warp][lane + 32 * j] = acc[j];
	__syncthreads();
	if (warp != 0)
		return;
	float M = sm[0];
	for (int w = 1; w < ATT_W; w++)
		M = fmaxf(M, sm[w]);
	float den = 0, f[ATT_W];
	for (int w = 0; w < ATT_W; w++) {
		f[w] = sl[w] > 0 ? expf(sm[w] - M) : 0.0f;
		den += sl[w] * f[w];
	}
	float *op = out + ((size_t)t * heads + h) * hd;
	for (int j = 0; j < ATT_PER; j++) {
		int i = lane + 32 * j;
		if (i >= hd)
			break;
		float num = 0;
		for (int w = 0; w < ATT_W; w++)
			num += sacc[w][i] * f[w];
		op[i] = num / den;
	}
}

/* The same attention with G lanes per position (16 head values per lane):
 * a block of AG_T threads keeps AG_T / G positions in flight instead of 4,
 * each group with its own online softmax over positions g, g + groups, ...;
 * the groups are merged in a fixed order at the end (warp shuffles). hd =
 * 16 * G. */
#define AG_T 256
template <int G>
__global__ void __launch_bounds__(AG_T) attention_g_k(float *out, const float *q, const float *kc, const float *vc,
						      const int32_t *pos, const int32_t *seq, const int32_t *tables,
						      int max_nb, int n_blocks, int bs, int kvdim, int layer, int heads,
						      int group, float scale)
{
	const int hd = 16 * G, NG = AG_T / G;
	__shared__ float sm[NG], sl[NG], sacc[NG * 16 * G];
	int t = blockIdx.x, h = blockIdx.y, g = threadIdx.x / G, j = threadIdx.x % G;
	pdl_trigger();
	pdl_wait();
	const float *qp = q + ((size_t)t * heads + h) * hd + j * 16;
	const int32_t *tab = tables + (size_t)seq[t] * max_nb;
	size_t hoff = (size_t)(h / group) * hd + j * 16;
	float qr[16], acc[16];
#pragma unroll
	for (int i = 0; i < 16; i += 4) {
		float4 v = *(const float4 *)(qp + i);
		qr[i] = v.x, qr[i + 1] = v.y, qr[i + 2] = v.z, qr[i + 3] = v.w;
		acc[i] = acc[i + 1] = acc[i + 2] = acc[i + 3] = 0;
	}
	float m = -INFINITY, l = 0;
	int L = pos[t] + 1;
	/* every lane of a warp runs the same number of iterations (the shuffles
	 * need the whole warp); a group past the end computes nothing */
	for (int p0 = 0; p0 < L; p0 += NG) {
		int p = p0 + g;
		bool live = p < L;
		size_t o = live ? kv_at(layer, n_blocks, tab[p / bs], bs, p % bs, kvdim) + hoff : 0;
		float d = 0;
		float4 vv[4]; /* V loaded with K: one memory latency per position, not two */
		if (live) {
#pragma unroll
			for (int i = 0; i < 4; i++)
				vv[i] = *(const float4 *)(vc + o + 4 * i);
#pragma unroll
			for (int i = 0; i < 16; i += 4) {
				float4 k = *(const float4 *)(kc + o + i);
				d = fmaf(qr[i], k.x, d);
				d = fmaf(qr[i + 1], k.y, d);
				d = fmaf(qr[i + 2], k.z, d);
				d = fmaf(qr[i + 3], k.w, d);
			}
		}
#pragma unroll
		for (int x = G / 2; x > 0; x >>= 1)
			d += __shfl_xor_sync(0xffffffffu, d, x);
		if (!live)
			continue;
		float sc = d * scale, mn = fmaxf(m, sc), a = expf(m - mn), e = expf(sc - mn);
		l = l * a + e;
#pragma unroll
		for (int i = 0; i < 16; i += 4) {
			float4 v = vv[i / 4];
			acc[i] = acc[i] * a + e * v.x;
			acc[i + 1] = acc[i + 1] * a + e * v.y;
			acc[i + 2] = acc[i + 2] * a + e * v.z;
			acc[i + 3] = acc[i + 3] * a + e * v.w;
		}
		m = mn;
	}
	if (j == 0) {
		sm[g] = m;
		sl[g] = l;
	}
#pragma unroll
	for (int i = 0; i < 16; i++)
		sacc[g * hd + j * 16 + i] = acc[i];
	__syncthreads();
	/* the merge, in parallel: the maximum and the denominator by each warp
	 * (the same fixed order in all), each output value by P = AG_T / hd
	 * adjacent lanes over every P-th group, then a shuffle tree */
	__shared__ float sf[NG];
	int lane = threadIdx.x & 31;
	float M = -INFINITY;
	for (int w = lane; w < NG; w += 32)
		M = fmaxf(M, sm[w]);
	for (int x = 16; x > 0; x >>= 1)
		M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, x));
	if (threadIdx.x < NG) /* each group's weight, once */
		sf[threadIdx.x] = sl[threadIdx.x] > 0 ? expf(sm[threadIdx.x] - M) : 0.0f;
	__syncthreads();
	float den = 0;
	for (int w = lane; w < NG; w += 32)
		den += sl[w] * sf[w];
	for (int x = 16; x > 0; x >>= 1)
		den += __shfl_xor_sync(0xffffffffu, den, x);
	const int P = AG_T / hd;
	int i = threadIdx.x / P, part = threadIdx.x % P;
	float num = 0;
	for (int w = part; w < NG; w += P)
		num += sacc[w * hd + i] * sf[w];
	for (int x = P / 2; x > 0; x >>= 1)
		num += __shfl_xor_sync(0xffffffffu, num, x);
	if (part == 0)
		out[((size_t)t * heads + h) * hd + i] = num / den;
}

extern "C" void k_attention(cudaStream_t s, float *out, const float *q, const float *kc, const float *vc,
			    const int32_t *pos, const int32_t *seq, const int32_t *tables, int max_nb, int n_blocks,
			    int bs, int kvdim, int layer, int n, int heads, int group, int hd)
{
	if (n <= 0)
		return;
	dim3 grid((unsigned)n, (unsigned)heads);
	float sc = 1.0f / sqrtf((float)hd);
	int aligned = kvdim % 4 == 0; /* float4 loads of q, K and V */
	switch (aligned ? hd : 0) {
	case 32: launch_pdl(attention_g_k<2>, grid, AG_T, 0, s, out, q, kc, vc, pos, seq, tables, max_nb, n_blocks, bs, kvdim, layer, heads, group, sc); return;
	case 64: launch_pdl(attention_g_k<4>, grid, AG_T, 0, s, out, q, kc, vc, pos, seq, tables, max_nb, n_blocks, bs, kvdim, layer, heads, group, sc); return;
	case 128: launch_pdl(attention_g_k<8>, grid, AG_T, 0, s, out, q, kc, vc, pos, seq, tables, max_nb, n_blocks, bs, kvdim, layer, heads, group, sc); return;
	case 256: launch_pdl(attention_g_k<16>, grid, AG_T, 0, s, out, q, kc, vc, pos, seq, tables, max_nb, n_blocks, bs, kvdim, layer, heads, group, sc); return;
	}
	attention_k<<<grid, 32 * ATT_W, 0, s>>>(out, q, kc, vc, pos, seq, tables, max_nb, n_blocks, bs, kvdim, layer,
					       heads, group, hd, sc);
}

/* ---- elementwise ---- */
__global__ void swiglu_k(float *out, const float *g, const float *u, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		float x = g[i];
		out[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
	}
}

__global__ void add_k(float *x, const float *y, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
		x[i] = __fadd_rn(x[i], y[i]);
}

extern "C" void k_swiglu(cudaStream_t s, float *out, const float *g, const float *u, int64_t n)
{
	if (n > 0)
		swiglu_k<<<blocks_for(n < (1 << 24) ? n : (1 << 24), 256), 256, 0, s>>>(out, g, u, n);
}

extern "C" void k_add(cudaStream_t s, float *x, const float *y, int64_t n)
{
	if (n > 0)
		add_k<<<blocks_for(n < (1 << 24) ? n : (1 << 24), 256), 256, 0, s>>>(x, y, n);
}

__global__ void gather_k(float *dst, const float *src, const int32_t *rows, int dim)
{
	int i = blockIdx.y;
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < dim; j += gridDim.x * blockDim.x)
		dst[(size_t)i * dim + j] = src[(size_t)rows[i] * dim + j];
}

extern "C" void k_gather(cudaStream_t s, float *dst, const float *src, const int32_t *rows, int n, int dim)
{
	for (int i0 = 0; i0 < n; i0 += 65535)
		gather_k<<<dim3(blocks_for(dim, 256), (unsigned)(n - i0 < 65535 ? n - i0 : 65535)), 256, 0, s>>>(
			dst + (size_t)i0 * dim, src, rows + i0, dim);
}

__global__ void fault_k(float *p) { p[threadIdx.x] = 1.0f; }

extern "C" void k_fault(cudaStream_t s)
{
	fault_k<<<1, 32, 0, s>>>((float *)(uintptr_t)0x10);
}
