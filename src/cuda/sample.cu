/*
 * sample.cu — the sampler on the device: one block of SAMP_T threads per
 * row of logits, so a step copies back a few bytes per sequence instead of
 * its vocabulary of logits. The semantics are sample.c's, step for step:
 *   logit_bias, repetition penalty (each distinct token of the sequence),
 *   presence/frequency penalties (output tokens), then greedy (ties to the
 *   lowest id) or: candidates within e^-28 of the best after temperature,
 *   sorted by (logit desc, id asc), cut by top-k, top-p and min-p, drawn
 *   with the host's counter-based uniform u = hash(seed, step).
 *   Logprobs are those of the biased, penalised logits (log-softmax).
 * Every reduction is a fixed tree over a fixed thread assignment, so a row's
 * result never depends on the other rows of the launch (batch invariance).
 * The candidate sort is a block-wide bitonic sort in global scratch of
 * `cap` keys per sampled row; each key packs the order of the scaled logit
 * and the id, so the sort is total and deterministic.
 */
#include "kernels.h"

#include <math.h>

#define SAMP_T 1024

/* float → uint32 whose unsigned order is the float order */
__device__ __forceinline__ uint32_t ford(float f)
{
	uint32_t u = __float_as_uint(f);
	return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

__device__ __forceinline__ float ford_inv(uint32_t o)
{
	return __uint_as_float((o & 0x80000000u) ? o & 0x7fffffffu : ~o);
}

/* key: ascending order = logit descending, then id ascending */
__device__ __forceinline__ unsigned long long cand_key(float l, int id)
{
	return ((unsigned long long)(~ford(l)) << 32) | (uint32_t)id;
}

__device__ __forceinline__ float key_logit(unsigned long long k) { return ford_inv(~(uint32_t)(k >> 32)); }
__device__ __forceinline__ int key_id(unsigned long long k) { return (int)(uint32_t)k; }

/* argmax over x[0..n) skipping `taken` ids; ties to the lowest id */
__device__ int block_argmax(const float *x, int n, const int *taken, int n_taken, float *sv, int *si)
{
	float bv = -INFINITY;
	int bi = -1;
	for (int i = threadIdx.x; i < n; i += SAMP_T) {
		int skip = 0;
		for (int q = 0; q < n_taken; q++)
			skip |= taken[q] == i;
		if (!skip && (bi < 0 || x[i] > bv)) {
			bv = x[i];
			bi = i;
		}
	}
	sv[threadIdx.x] = bv;
	si[threadIdx.x] = bi;
	__syncthreads();
	for (int o = SAMP_T / 2; o > 0; o >>= 1) {
		if ((int)threadIdx.x < o) {
			float v2 = sv[threadIdx.x + o];
			int i2 = si[threadIdx.x + o];
			int cur = si[threadIdx.x];
			if (i2 >= 0 && (cur < 0 || v2 > sv[threadIdx.x] || (v2 == sv[threadIdx.x] && i2 < cur))) {
				sv[threadIdx.x] = v2;
				si[threadIdx.x] = i2;
			}
		}
		__syncthreads();
	}
	int r = si[0];
	__syncthreads();
	return r;
}

__device__ double block_sum(double v, double *sd)
{
	sd[threadIdx.x] = v;
	__syncthreads();
	for (int o = SAMP_T / 2; o > 0; o >>= 1) {
		if ((int)threadIdx.x < o)
			sd[threadIdx.x] += sd[threadIdx.x + o];
		__syncthreads();
	}
	double r = sd[0];
	__syncthreads();
	return r;
}

/* smallest i in [lo, hi) with pred(i), or hi */
template <typename P> __device__ int block_first(int lo, int hi, P pred, int *si)
{
	int best = hi;
	for (int i = lo + threadIdx.x; i < hi; i += SAMP_T)
		if (pred(i)) {
			best = i;
			break;
		}
	si[threadIdx.x] = best;
	__syncthreads();
	for (int o = SAMP_T / 2; o > 0; o >>= 1) {
		if ((int)threadIdx.x < o && si[threadIdx.x + o] < si[threadIdx.x])
			si[threadIdx.x] = si[threadIdx.x + o];
		__syncthreads();
	}
	int r = si[0];
	__syncthreads();
	return r;
}

__global__ void __launch_bounds__(SAMP_T) sample_k(float *logits, int V, const struct ks_row *rows,
						   const struct ks_bias *bias, const struct ks_pen *pen,
						   struct ks_out *out, unsigned long long *keys_all,
						   double *pref_all, int cap)
{
	__shared__ float sv[SAMP_T];
	__shared__ int si[SAMP_T];
	__shared__ double sd[SAMP_T];
	__shared__ int taken[KS_MAX_TOP], n_cand;
	const struct ks_row R = rows[blockIdx.x];
	float *x = logits + (size_t)blockIdx.x * V;
	int tid = threadIdx.x;

	if (tid == 0)
		for (int i = 0; i < R.n_bias; i++) {
			struct ks_bias b = bias[R.bias_off + i];
			if (b.id >= 0 && b.id < V)
				x[b.id] = __fadd_rn(x[b.id], b.bias);
		}
	__syncthreads();
	for (int i = tid; i < R.n_pen; i += SAMP_T) { /* distinct ids: no two threads touch one logit */
		struct ks_pen p = pen[R.pen_off + i];
		float v = x[p.id];
		if (p.rep)
			v = v > 0 ? __fdiv_rn(v, R.rep) : __fmul_rn(v, R.rep);
		if (p.count)
			v = __fsub_rn(v, __fadd_rn(__fmul_rn(R.frequency, (float)p.count), R.presence));
		x[p.id] = v;
	}
	__syncthreads();

	int tok = block_argmax(x, V, taken, 0, sv, si);
	float mx = x[tok];
	if (R.temperature > 0) {
		unsigned long long *keys = keys_all + (size_t)R.slot * cap;
		double *pref = pref_all + (size_t)R.slot * cap;
		if (tid == 0)
			n_cand = 0;
		__syncthreads();
		for (int i = tid; i < V; i += SAMP_T) {
			float l = __fdiv_rn(__fsub_rn(x[i], mx), R.temperature);
			if (l > -28.0f)
				keys[atomicAdd(&n_cand, 1)] = cand_key(l, i);
		}
		__syncthreads();
		int m = n_cand, P = 1;
		while (P < m)
			P <<= 1;
		for (int i = m + tid; i < P; i += SAMP_T)
			keys[i] = ~0ull;
		__syncthreads();
		for (int k = 2; k <= P; k <<= 1)
			for (int j = k >> 1; j > 0; j >>= 1) {
				for (int i = tid; i < P; i += SAMP_T) {
					int ixj = i ^ j;
					if (ixj > i) {
						unsigned long long a = keys[i], b = keys[ixj];
						if ((a > b) == ((i & k) == 0)) {
							keys[i] = b;
							keys[ixj] = a;
						}
					}
				}
				__syncthreads();
			}
		int kk = R.top_k > 0 && R.top_k < m ? R.top_k : m;
		double l0 = key_logit(keys[0]);
		/* prefix sums of the weights, in fixed segments per thread */
		int seg = (kk + SAMP_T - 1) / SAMP_T, a = tid * seg, b = a + seg < kk ? a + seg : kk;
		double run = 0;
		for (int i = a; i < b; i++)
			run += (double)(float)exp((double)key_logit(keys[i]) - l0);
		sd[tid] = run;
		__syncthreads();
		if (tid == 0) {
			double acc = 0;
			for (int t = 0; t < SAMP_T; t++) {
				double v = sd[t];
				sd[t] = acc;
				acc += v;
			}
		}
		__syncthreads();
		run = sd[tid];
		for (int i = a; i < b; i++) {
			run += (double)(float)exp((double)key_logit(keys[i]) - l0);
			pref[i] = run;
		}
		__syncthreads();
		double sum = pref[kk - 1];
		if (R.top_p > 0 && R.top_p < 1) {
			double tp = R.top_p;
			int c = block_first(0, kk, [&](int i) { return pref[i] / sum >= tp; }, si);
			if (c < kk)
				kk = c + 1;
		}
		if (R.min_p > 0) {
			float mp = R.min_p;
			kk = block_first(1, kk, [&](int i) { return (float)exp((double)key_logit(keys[i]) - l0) < mp; },
					 si);
		}
		double target = R.u * pref[kk - 1];
		int c = block_first(0, kk, [&](int i) { return pref[i] > target; }, si);
		tok = key_id(keys[c < kk ? c : kk - 1]);
	}
	struct ks_out *o = out + blockIdx.x;
	if (R.want_lp || R.n_top) {
		double part = 0;
		for (int i = tid; i < V; i += SAMP_T)
			part += exp((double)x[i] - mx);
		double lse = mx + log(block_sum(part, sd));
		if (tid == 0)
			o->lp = (float)(x[tok] - lse);
		for (int j = 0; j < R.n_top && j < KS_MAX_TOP; j++) {
			int id = block_argmax(x, V, taken, j, sv, si);
			if (tid == 0) {
				taken[j] = id;
				o->top_ids[j] = id;
				o->top_lp[j] = (float)(x[id] - lse);
			}
			__syncthreads();
		}
	}
	if (tid == 0)
		o->tok = tok;
}

extern "C" void k_sample(cudaStream_t s, float *logits, int V, int n, const struct ks_row *rows,
			 const struct ks_bias *bias, const struct ks_pen *pen, struct ks_out *out,
			 unsigned long long *keys, double *pref, int cap)
{
	if (n > 0)
		sample_k<<<(unsigned)n, SAMP_T, 0, s>>>(logits, V, rows, bias, pen, out, keys, pref, cap);
}
