/*
 * sample.c — see sample.h. Candidates are sorted by logit (ties by id),
 * cut by top-k then top-p, and one is drawn with a uniform number made
 * from hash(seed, step): no RNG state is shared between threads.
 */
#include "sample.h"

#include <math.h>
#include <stdlib.h>

int sample_argmax(const float *x, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct cand { float logit; int id; };

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return x->id - y->id;
}

int sample_token(const float *logits, int n, const struct sample_params *p, uint64_t step, void *scratch)
{
	if (!(p->temperature > 0))
		return sample_argmax(logits, n);
	struct cand *c = scratch;
	for (int i = 0; i < n; i++)
		c[i] = (struct cand){logits[i] / p->temperature, i};
	qsort(c, (size_t)n, sizeof *c, cmp_cand);
	int k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
	double sum = 0;
	for (int i = 0; i < k; i++) {
		c[i].logit = (float)exp((double)c[i].logit - c[0].logit);
		sum += c[i].logit;
	}
	if (p->top_p > 0 && p->top_p < 1) {
		double acc = 0;
		for (int i = 0; i < k; i++) {
			acc += c[i].logit / sum;
			if (acc >= p->top_p) {
				k = i + 1;
				break;
			}
		}
		sum = 0;
		for (int i = 0; i < k; i++)
			sum += c[i].logit;
	}
	double u = (double)(mix(p->seed * 0x9e3779b97f4a7c15ull + mix(step + 1)) >> 11) * 0x1p-53 * sum;
	for (int i = 0; i < k; i++) {
		u -= c[i].logit;
		if (u < 0)
			return c[i].id;
	}
	return c[k - 1].id;
}
