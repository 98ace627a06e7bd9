/*
 * sample.h — token sampling from a row of logits: greedy (temperature 0)
 * or temperature with top-k and top-p, driven by a counter-based RNG so a
 * (seed, step) pair always draws the same number on any thread.
 */
#ifndef INFERD_SAMPLE_H
#define INFERD_SAMPLE_H

#include <stdint.h>

struct sample_params {
	float temperature;  /* 0: greedy */
	int top_k;          /* 0: off */
	float top_p;        /* 1: off */
	uint64_t seed;
};

/* Index of the largest logit; ties go to the lowest index. */
int sample_argmax(const float *logits, int n);
/* Draw the token for `step`; `scratch` holds 8 * n bytes. */
int sample_token(const float *logits, int n, const struct sample_params *p, uint64_t step, void *scratch);

#endif
