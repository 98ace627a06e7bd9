/*
 * sample.h — choosing the next token from a row of logits: logit bias,
 * repetition / presence / frequency penalties, then greedy (temperature 0)
 * or temperature with top-k, top-p and min-p, drawn with a counter-based
 * RNG: hash(seed, step) gives the same number on any thread, alone or in
 * any batch. Logprobs are those of the biased, penalised distribution
 * before temperature and truncation.
 */
#ifndef INFERD_SAMPLE_H
#define INFERD_SAMPLE_H

#include <stdint.h>
#include "inferd.h"

struct sample_params {
	float temperature;  /* 0: greedy */
	int top_k;          /* 0: off */
	float top_p;        /* 1: off */
	uint64_t seed;
};

/* The uniform number in [0, 1) that draws the token of `step`. */
double sample_uniform(uint64_t seed, uint64_t step);
/* Index of the largest logit; ties go to the lowest index. */
int sample_argmax(const float *logits, int n);
/* Draw the token for `step`; `scratch` holds 8 * n bytes. */
int sample_token(const float *logits, int n, const struct sample_params *p, uint64_t step, void *scratch);

/* Scratch for sample_next: allocate with sample_scratch_new(n_vocab). */
struct sample_scratch;
struct sample_scratch *sample_scratch_new(int n_vocab);
void sample_scratch_free(struct sample_scratch *s);

/* The full sampler. `logits` (n values) is modified in place. `tokens` are
 * the sequence so far (prompt then output; n_prompt of them are prompt).
 * Fills *logprob and the n_top most likely ids/logprobs when asked. */
int sample_next(float *logits, int n, const struct inferd_request *r, const int32_t *tokens, int n_tokens,
		int n_prompt, uint64_t step, struct sample_scratch *s, float *logprob, int n_top, int32_t *top_ids,
		float *top_lp);

#endif
