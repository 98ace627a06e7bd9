/*
 * bench_grammar.c — the cost of constrained decoding per step, as a ratio
 * to an unconstrained sampling step measured in the same run.
 *
 * For each tokenizer given (a small and a ~150k-token vocabulary): a JSON
 * document is tokenized, and at every position of it (the states a real
 * generation passes through: inside strings, after keys, in numbers,
 * between members) the matcher's token mask is computed and applied
 * (logits of disallowed tokens to -inf), then the token is accepted. The
 * baseline is sample_next on the same vocabulary size with typical
 * parameters (temperature 0.8, top_p 0.95) over random logits (flat:
 * every token is a candidate, the sampler's worst case), and greedy
 * (temperature 0: one scan, the cheapest step). Prints one line per
 * tokenizer and grammar: the trie's build time, mean and worst mask time,
 * both baselines and the mask's cost as a ratio to each.
 *
 * usage: bench_grammar TOKENIZER_DIR... (make bench passes two)
 */
#include "grammar.h"
#include "inferd.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *DOC =
	"{\"id\": 1234, \"name\": \"Ada Lovelace\", \"email\": \"ada@example.com\", \"active\": true,\n"
	"  \"scores\": [98.5, 87.25, -3e5], \"address\": {\"city\": \"London\", \"zip\": null},\n"
	"  \"tags\": [\"math\", \"engines\", \"poetry\"], \"note\": \"Line one\\nline \\\"two\\\" caf\\u00e9 — ok\"}";

static const char *SCHEMA =
	"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
	"\"email\":{\"type\":\"string\"},\"active\":{\"type\":\"boolean\"},\"scores\":{\"type\":\"array\",\"items\":"
	"{\"type\":\"number\"}},\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
	"\"zip\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"city\",\"zip\"],\"additionalProperties\":false},"
	"\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"note\":{\"type\":\"string\"}},"
	"\"required\":[\"id\",\"name\",\"email\",\"active\",\"scores\",\"address\",\"tags\",\"note\"],"
	"\"additionalProperties\":false}";

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)(rng >> 40) / (float)(1 << 24);
}

static void bench(const char *dir, const char *kind, const char *text)
{
	char err[INFERD_ERR_LEN];
	struct tokenizer *t;
	if (tok_load(dir, &t, err)) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	int V = tok_n_vocab(t);
	double t0 = now_sec();
	struct grammar_vocab *v;
	struct grammar *g;
	if (grammar_vocab_new(t, &v, err) || grammar_compile(kind, text, &g, err)) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	double trie_ms = (now_sec() - t0) * 1e3;
	int32_t *ids;
	int n;
	if (tok_encode(t, DOC, strlen(DOC), 0, &ids, &n, err)) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	float *logits = malloc((size_t)V * sizeof *logits), *work = malloc((size_t)V * sizeof *work);
	uint32_t *bits = malloc(((size_t)V + 31) / 32 * sizeof *bits);
	for (int i = 0; i < V; i++)
		logits[i] = frand() * 8.0f - 4.0f;
	/* baseline: an unconstrained sampling step */
	struct sample_scratch *ss = sample_scratch_new(V);
	struct inferd_request r;
	inferd_request_init(&r);
	r.temperature = 0.8f;
	r.top_p = 0.95f;
	int reps = 200;
	volatile int sink = 0;
	t0 = now_sec();
	for (int k = 0; k < reps / 4; k++) {
		memcpy(work, logits, (size_t)V * sizeof *work);
		sink += sample_next(work, V, &r, NULL, 0, 0, (uint64_t)k, ss, NULL, 0, NULL, NULL);
	}
	double sample_us = (now_sec() - t0) / (reps / 4) * 1e6;
	r.temperature = 0; /* greedy: the cheapest step there is (one scan) */
	t0 = now_sec();
	for (int k = 0; k < reps; k++) {
		memcpy(work, logits, (size_t)V * sizeof *work);
		sink += sample_next(work, V, &r, NULL, 0, 0, (uint64_t)k, ss, NULL, 0, NULL, NULL);
	}
	double greedy_us = (now_sec() - t0) / reps * 1e6;
	/* constrained: mask + apply at every position of the document */
	double total = 0, worst = 0;
	int steps = 0, rounds = 5;
	for (int rd = 0; rd < rounds; rd++) {
		struct grammar_matcher *m = grammar_matcher_new(g);
		for (int i = 0; i < n; i++) {
			double a = now_sec();
			int allowed = grammar_matcher_mask(m, v, bits, V);
			memcpy(work, logits, (size_t)V * sizeof *work);
			for (int k = 0; k < V; k++)
				if (!(bits[k >> 5] >> (k & 31) & 1))
					work[k] = -INFINITY;
			double dt = now_sec() - a;
			if (allowed <= 0 || grammar_matcher_accept_token(m, v, ids[i]) != 0) {
				fprintf(stderr, "the grammar rejects token %d of the document (%s)\n", i, kind);
				exit(1);
			}
			total += dt;
			worst = dt > worst ? dt : worst;
			steps++;
		}
		if (!grammar_matcher_complete(m)) {
			fprintf(stderr, "the document does not complete the grammar (%s)\n", kind);
			exit(1);
		}
		grammar_matcher_free(m);
	}
	double mask_us = total / steps * 1e6;
	char name[32];
	const char *dash = strstr(dir, "tokenizer-");
	snprintf(name, sizeof name, "%s", dash ? dash + 10 : dir);
	name[strcspn(name, "/")] = 0;
	printf("%-14.14s %7d %-12s %6d %8.1f %9.1f %9.1f %9.1f %9.1f %8.2fx %8.2fx\n", name, V, kind, n, trie_ms, mask_us,
	       worst * 1e6, greedy_us, sample_us, mask_us / greedy_us, mask_us / sample_us);
	(void)sink;
	free(ids);
	free(logits);
	free(work);
	free(bits);
	sample_scratch_free(ss);
	grammar_free(g);
	grammar_vocab_free(v);
	tok_free(t);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_grammar TOKENIZER_DIR...\n");
		return 2;
	}
	printf("%-14s %7s %-12s %6s %8s %9s %9s %9s %9s %9s %9s\n", "vocab", "tokens", "grammar", "steps", "trie ms",
	       "mask us", "worst us", "greedy us", "sample us", "/greedy", "/sample");
	for (int i = 1; i < argc; i++) {
		bench(argv[i], "json_object", NULL);
		bench(argv[i], "json_schema", SCHEMA);
	}
	return 0;
}
