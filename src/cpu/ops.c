/*
 * ops.c — row kernels (see ops.h). Every dot product keeps 8 lane
 * accumulators (lane k sums elements k, k+8, ...) and combines them in a
 * fixed order. The portable version is plain C; on x86-64 CPUs with
 * AVX2/FMA the same order runs with intrinsics (chosen once by cpuid), and
 * dot4 reads a weight row once for up to four tokens, bitwise equal to
 * four separate dots. Attention's vector helpers (ops_vec: exp of shifted
 * scores with their sum, axpy) come in the same two versions; the AVX2 exp
 * is a polynomial within 2e-7 of expf.
 */
#include "ops.h"

#include <math.h>
#include <string.h>

/* The same 8-lane order in every variant; the AVX2/FMA one is chosen once
 * per process by ops_dot_best() (cpuid), so a sequence always sees one. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int64_t n)
{
	__m256 acc = _mm256_setzero_ps(); /* lane k accumulates elements k, k+8, ... */
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
	float l[8];
	_mm256_storeu_ps(l, acc);
	for (int k = 0; i < n; i++, k++)
		l[k] += a[i] * b[i];
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

/* out[t] = dot(w, x + t * xs) for t < n (n <= 4): the row is loaded once
 * for all tokens; each token's lanes and final combine are exactly those
 * of dot_avx2, so results are bitwise the same as n separate calls. */
__attribute__((target("avx2,fma"))) static void dot4_avx2(const float *w, const float *x, int64_t xs, int n,
							int64_t cols, float *out)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 8 <= cols; i += 8) {
		__m256 wv = _mm256_loadu_ps(w + i);
		a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
		if (n > 1)
			a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + xs + i), a1);
		if (n > 2)
			a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 2 * xs + i), a2);
		if (n > 3)
			a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 3 * xs + i), a3);
	}
	__m256 acc[4] = {a0, a1, a2, a3};
	for (int t = 0; t < n; t++) {
		float l[8];
		_mm256_storeu_ps(l, acc[t]);
		const float *xt = x + t * xs;
		int64_t j = i;
		for (int k = 0; j < cols; j++, k++)
			l[k] += xt[j] * w[j];
		out[t] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
	}
}

/* exp(v) for v <= 0: range reduction by powers of two, then exp(r) on
 * |r| <= ln2/2 by its Taylor polynomial of degree 6 (relative error about
 * 2e-7); below -87.3 the result is 0 */
__attribute__((target("avx2,fma"))) static inline __m256 exp_neg_avx2(__m256 v)
{
	const __m256 l2e = _mm256_set1_ps(1.44269504f), ln2hi = _mm256_set1_ps(0.693359375f),
		     ln2lo = _mm256_set1_ps(-2.12194440e-4f), lo = _mm256_set1_ps(-87.3f);
	const float c[7] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
	__m256 keep = _mm256_cmp_ps(v, lo, _CMP_GE_OQ);
	v = _mm256_max_ps(v, lo);
	__m256 k = _mm256_round_ps(_mm256_mul_ps(v, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(k, ln2lo, _mm256_fnmadd_ps(k, ln2hi, v));
	__m256 p = _mm256_set1_ps(c[0]);
	for (int j = 1; j < 7; j++)
		p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[j]));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
	return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

/* exp of x - m (x <= m) for n values, in place, and their sum, lanes
 * summed in a fixed order */
__attribute__((target("avx2,fma"))) static float exp_shift_avx2(float *x, int n, float m)
{
	const __m256 vm = _mm256_set1_ps(m);
	__m256 acc = _mm256_setzero_ps();
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 y = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
		_mm256_storeu_ps(x + i, y);
		acc = _mm256_add_ps(acc, y);
	}
	float l[8];
	_mm256_storeu_ps(l, acc);
	for (int k = 0; i < n; i++, k++) {
		x[i] = expf(x[i] - m);
		l[k] += x[i];
	}
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

/* out = silu(g) * u: with e = exp(-|g|), sigmoid(g) is 1 / (1 + e) for
 * g >= 0 and e / (1 + e) below, so the exponent never overflows; a value's
 * result does not depend on its position (the tail takes the same path) */
__attribute__((target("avx2,fma"))) static void swiglu_avx2(float *out, const float *g, const float *u, int64_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
	int64_t i = 0;
	for (;; i += 8) {
		__m256 gv, uv;
		float tg[8] = {0}, tu[8] = {0};
		if (i + 8 <= n) {
			gv = _mm256_loadu_ps(g + i);
			uv = _mm256_loadu_ps(u + i);
		} else if (i < n) {
			memcpy(tg, g + i, (size_t)(n - i) * sizeof(float));
			memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
			gv = _mm256_loadu_ps(tg);
			uv = _mm256_loadu_ps(tu);
		} else {
			break;
		}
		__m256 e = exp_neg_avx2(_mm256_or_ps(gv, sign)); /* exp(-|g|) */
		__m256 num = _mm256_blendv_ps(one, e, gv);     /* sign bit set: g < 0 */
		__m256 y = _mm256_mul_ps(_mm256_mul_ps(gv, _mm256_div_ps(num, _mm256_add_ps(one, e))), uv);
		if (i + 8 <= n) {
			_mm256_storeu_ps(out + i, y);
		} else {
			_mm256_storeu_ps(tg, y);
			memcpy(out + i, tg, (size_t)(n - i) * sizeof(float));
			break;
		}
	}
}

/* y += a * x */
__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x, int n)
{
	__m256 va = _mm256_set1_ps(a);
	int i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * x[i];
}
#endif

static float exp_shift_portable(float *x, int n, float m)
{
	float l[8] = {0};
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - m);
		l[i & 7] += x[i];
	}
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

static void axpy_portable(float *y, float a, const float *x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

static void swiglu_portable(float *out, const float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

struct ops_vec ops_vec_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return (struct ops_vec){exp_shift_avx2, axpy_avx2, swiglu_avx2};
#endif
	return (struct ops_vec){exp_shift_portable, axpy_portable, swiglu_portable};
}

static void dot4_portable(const float *w, const float *x, int64_t xs, int n, int64_t cols, float *out)
{
	for (int t = 0; t < n; t++)
		out[t] = ops_dot(w, x + t * xs, cols);
}

ops_dot4_fn ops_dot4_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return dot4_avx2;
#endif
	return dot4_portable;
}

ops_dot_fn ops_dot_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return dot_avx2;
#endif
	return ops_dot;
}

float ops_dot(const float *a, const float *b, int64_t n)
{
	float acc[8] = {0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			acc[k] += a[i + k] * b[i + k];
	for (int k = 0; i < n; i++, k++)
		acc[k] += a[i] * b[i];
	return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void ops_rmsnorm_row(float *out, const float *x, const float *w, int dim, float eps)
{
	double ss = 0;
	for (int i = 0; i < dim; i++)
		ss += (double)x[i] * x[i];
	float s = (float)(1.0 / sqrt(ss / dim + eps));
	for (int i = 0; i < dim; i++)
		out[i] = x[i] * s * (w ? w[i] : 1.0f);
}

void ops_softmax(float *x, int n)
{
	float mx = -INFINITY;
	for (int i = 0; i < n; i++)
		mx = x[i] > mx ? x[i] : mx;
	double sum = 0;
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - mx);
		sum += x[i];
	}
	float inv = (float)(1.0 / sum);
	for (int i = 0; i < n; i++)
		x[i] *= inv;
}
