/*
 * bench_tok.c — tokenizer throughput: encode every string of a JSON list
 * (tests/tok/corpus.json) repeatedly for at least `seconds`, and a long
 * single "word" (the merge loop's worst case), and print MB/s.
 *   bench_tok TOKENIZER_DIR CORPUS.json [seconds]
 */
#include "inferd.h"
#include "tok.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: bench_tok TOKENIZER_DIR CORPUS.json [seconds]\n");
		return 2;
	}
	double secs = argc > 3 ? atof(argv[3]) : 2.0;
	char err[INFERD_ERR_LEN];
	struct tokenizer *t;
	double t0 = now_sec();
	if (tok_load(argv[1], &t, err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double load = now_sec() - t0;
	json_t *c = json_load_file(argv[2], JSON_ALLOW_NUL, NULL);
	if (!json_is_array(c)) {
		fprintf(stderr, "%s: not a JSON list\n", argv[2]);
		return 1;
	}
	size_t bytes = 0, tokens = 0;
	int rounds = 0;
	t0 = now_sec();
	do {
		for (size_t i = 0; i < json_array_size(c); i++) {
			json_t *s = json_array_get(c, i);
			int32_t *ids;
			int n;
			if (tok_encode(t, json_string_value(s), json_string_length(s), TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &ids, &n,
				       err) == 0) {
				tokens += (size_t)n;
				free(ids);
			}
			bytes += json_string_length(s);
		}
		rounds++;
	} while (now_sec() - t0 < secs);
	double dt = now_sec() - t0;
	/* one 1 MB word of one letter: a quadratic merge loop would never finish */
	size_t wl = 1 << 20;
	char *w = malloc(wl);
	memset(w, 'a', wl);
	double w0 = now_sec();
	int32_t *ids;
	int n = 0;
	tok_encode(t, w, wl, 0, &ids, &n, err);
	double wdt = now_sec() - w0;
	free(ids);
	free(w);
	printf("{\"tokenizer\": \"%s\", \"load_s\": %.3f, \"corpus_mb_s\": %.2f, \"tokens_per_s\": %.0f, \"rounds\": %d, "
	       "\"long_word_mb_s\": %.2f, \"long_word_tokens\": %d}\n",
	       argv[1], load, bytes / dt / 1e6, tokens / dt, rounds, wl / wdt / 1e6, n);
	json_decref(c);
	tok_free(t);
	return 0;
}
