/*
 * ops.c — plain row kernels (see ops.h). The 8-lane loops are written so
 * the compiler vectorises them without reassociating: each lane is its
 * own accumulator and the final combine order is fixed.
 */
#include "ops.h"

#include <math.h>

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
