/*
 * sample.c — see sample.h. Candidates are sorted by logit (ties by id),
 * cut by top-k, top-p and min-p, and one is drawn with a uniform number
 * made from hash(seed, step): no RNG state is shared between threads or
 * carried between steps.
 */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the first index of the largest value (NaNs never win, but a NaN at 0
 * is returned as before: nothing compares greater than it). Eight lanes
 * keep their best in registers: comparing against x[best] made each step
 * wait on the load the last one chose (0.3 ms per 150k-token vocabulary). */
int sample_argmax(const float *x, int n)
{
	if (n <= 0 || x[0] != x[0])
		return 0;
	float bv[8];
	int bi[8];
	for (int l = 0; l < 8; l++)
		bv[l] = x[0], bi[l] = 0;
	int i = 1;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			if (x[i + l] > bv[l])
				bv[l] = x[i + l], bi[l] = i + l;
	for (; i < n; i++)
		if (x[i] > bv[0])
			bv[0] = x[i], bi[0] = i;
	int best = 0;
	for (int l = 0; l < 8; l++)
		if (bv[l] > bv[best] || (bv[l] == bv[best] && bi[l] < bi[best]))
			best = l;
	return bi[best];
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double uniform01(uint64_t seed, uint64_t step)
{
	return (double)(mix(seed * 0x9e3779b97f4a7c15ull + mix(step + 1)) >> 11) * 0x1p-53;
}

double sample_uniform(uint64_t seed, uint64_t step) { return uniform01(seed, step); }

struct cand {
	float logit;
	int id;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return x->id - y->id;
}

/* Draw from sorted candidates c[0..k) after top-p and min-p. */
static int draw(struct cand *c, int k, float top_p, float min_p, double u)
{
	double sum = 0;
	for (int i = 0; i < k; i++) {
		c[i].logit = (float)exp((double)c[i].logit - c[0].logit);
		sum += c[i].logit;
	}
	if (top_p > 0 && top_p < 1) {
		double acc = 0;
		for (int i = 0; i < k; i++) {
			acc += c[i].logit / sum;
			if (acc >= top_p) {
				k = i + 1;
				break;
			}
		}
	}
	if (min_p > 0) /* c[0] holds the largest probability (exp(0) = 1) */
		for (int i = 1; i < k; i++)
			if (c[i].logit < min_p) {
				k = i;
				break;
			}
	sum = 0;
	for (int i = 0; i < k; i++)
		sum += c[i].logit;
	u *= sum;
	for (int i = 0; i < k; i++) {
		u -= c[i].logit;
		if (u < 0)
			return c[i].id;
	}
	return c[k - 1].id;
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
	return draw(c, k, p->top_p, 0, uniform01(p->seed, step));
}

struct sample_scratch {
	int n;
	struct cand *c;
	int32_t *count;   /* occurrences in the output, all zero between calls */
	int32_t *seen;    /* in the whole sequence, for repetition_penalty */
};

struct sample_scratch *sample_scratch_new(int n)
{
	struct sample_scratch *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->n = n;
	s->c = malloc((size_t)n * sizeof *s->c);
	s->count = calloc((size_t)n, sizeof *s->count);
	s->seen = calloc((size_t)n, sizeof *s->seen);
	if (!s->c || !s->count || !s->seen) {
		sample_scratch_free(s);
		return NULL;
	}
	return s;
}

void sample_scratch_free(struct sample_scratch *s)
{
	if (!s)
		return;
	free(s->c);
	free(s->count);
	free(s->seen);
	free(s);
}

/* quickselect-free top-n: n <= 20, one pass each */
static void top_n(const float *x, int n, int k, int32_t *ids)
{
	for (int j = 0; j < k; j++) {
		int best = -1;
		for (int i = 0; i < n; i++) {
			int taken = 0;
			for (int q = 0; q < j && !taken; q++)
				taken = ids[q] == i;
			if (!taken && (best < 0 || x[i] > x[best]))
				best = i;
		}
		ids[j] = best;
	}
}

int sample_next(float *x, int n, const struct inferd_request *r, const int32_t *tokens, int n_tokens, int n_prompt,
		uint64_t step, struct sample_scratch *s, float *logprob, int n_top, int32_t *top_ids, float *top_lp)
{
	for (int i = 0; i < r->n_logit_bias; i++)
		if (r->logit_bias[i].id >= 0 && r->logit_bias[i].id < n)
			x[r->logit_bias[i].id] += r->logit_bias[i].bias;
	int rep = r->repetition_penalty > 0 && r->repetition_penalty != 1.0f;
	int pen = r->presence_penalty != 0 || r->frequency_penalty != 0;
	if (rep || pen) {
		for (int i = 0; i < n_tokens; i++) {
			int32_t t = tokens[i];
			if (t < 0 || t >= n)
				continue;
			if (rep && !s->seen[t]) {
				s->seen[t] = 1;
				x[t] = x[t] > 0 ? x[t] / r->repetition_penalty : x[t] * r->repetition_penalty;
			}
			if (i >= n_prompt)
				s->count[t]++;
		}
		for (int i = n_prompt; pen && i < n_tokens; i++) {
			int32_t t = tokens[i];
			if (t < 0 || t >= n || !s->count[t])
				continue;
			x[t] -= r->frequency_penalty * (float)s->count[t] + r->presence_penalty;
			s->count[t] = 0; /* applied once per distinct token */
		}
		for (int i = 0; i < n_tokens; i++)
			if (tokens[i] >= 0 && tokens[i] < n)
				s->seen[tokens[i]] = s->count[tokens[i]] = 0;
	}
	int tok;
	if (!(r->temperature > 0)) {
		tok = sample_argmax(x, n);
	} else {
		/* candidates within e^-28 of the best (the rest carry < 1e-12 of the
		 * mass); sorting only those keeps a 150k vocabulary cheap */
		float mx = x[sample_argmax(x, n)];
		int m = 0;
		for (int i = 0; i < n; i++) {
			float l = (x[i] - mx) / r->temperature;
			if (l > -28.0f)
				s->c[m++] = (struct cand){l, i};
		}
		qsort(s->c, (size_t)m, sizeof *s->c, cmp_cand);
		int k = r->top_k > 0 && r->top_k < m ? r->top_k : m;
		tok = draw(s->c, k, r->top_p, r->min_p, uniform01(r->seed, step));
	}
	if (logprob || n_top) {
		float mx = x[sample_argmax(x, n)];
		double sum = 0;
		for (int i = 0; i < n; i++)
			sum += exp((double)x[i] - mx);
		double lse = mx + log(sum);
		if (logprob)
			*logprob = (float)(x[tok] - lse);
		if (n_top > 0) {
			top_n(x, n, n_top, top_ids);
			for (int j = 0; j < n_top; j++)
				top_lp[j] = (float)(x[top_ids[j]] - lse);
		}
	}
	return tok;
}
