/*
 * ops.h — row kernels of the CPU backend. Each reduces in an order that
 * depends only on its own row (8 interleaved partial sums, then a fixed
 * pairwise combine), so a sequence's results are bitwise the same alone
 * or inside any batch.
 */
#ifndef INFERD_CPU_OPS_H
#define INFERD_CPU_OPS_H

#include <stdint.h>

float ops_dot(const float *a, const float *b, int64_t n);
typedef float (*ops_dot_fn)(const float *a, const float *b, int64_t n);
/* The fastest dot this CPU runs (AVX2/FMA where available). */
ops_dot_fn ops_dot_best(void);
/* out[t] = dot(w, x + t * xs) for t < n <= 4, bitwise equal to n calls of
 * the dot ops_dot_best returns; the row w is read once for all of them. */
typedef void (*ops_dot4_fn)(const float *w, const float *x, int64_t xs, int n, int64_t cols, float *out);
ops_dot4_fn ops_dot4_best(void);
/* Attention's vector helpers, chosen once for this CPU: exp_shift sets
 * x[i] = exp(x[i] - m) (x[i] <= m) and returns their sum (lanes in a fixed
 * order); axpy adds a * x to y; swiglu sets out = silu(g) * u
 * (out may be g or u). */
struct ops_vec {
	float (*exp_shift)(float *x, int n, float m);
	void (*axpy)(float *y, float a, const float *x, int n);
	void (*swiglu)(float *out, const float *g, const float *u, int64_t n);
};
struct ops_vec ops_vec_best(void);
/* out = x / sqrt(mean(x^2) + eps) * w (w may be NULL); out may equal x */
void ops_rmsnorm_row(float *out, const float *x, const float *w, int dim, float eps);
/* in place, numerically stable */
void ops_softmax(float *x, int n);

#endif
