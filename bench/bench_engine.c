/*
 * bench_engine.c — aggregate generation throughput through the engine at
 * 1, 2, 4, 8 and 16 concurrent sequences, as a ratio to the serialised
 * baseline (the same requests one at a time, what a semaphore of 1 gives),
 * measured in the same run; and the inter-token latency (p50/p99) of
 * running sequences while a long prompt prefills, against the same
 * sequences alone.
 *   bench_engine MODEL.gguf [tokens_per_request] [prefill_tokens]
 */
#include "inferd.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int T = 32;

struct run {
	inferd_model_t *m;
	int id;
	int n_tokens;
	double *gaps; /* inter-token gaps, seconds */
	int n_gaps, cap_gaps;
	int prompt_len;
};

static void *one(void *arg)
{
	struct run *r = arg;
	int32_t ids[4096];
	for (int i = 0; i < r->prompt_len; i++)
		ids[i] = (r->id * 131 + i * 17) % 1000 + 1;
	struct inferd_request q;
	inferd_request_init(&q);
	q.ids = ids;
	q.n_ids = r->prompt_len;
	q.max_tokens = r->n_tokens;
	q.temperature = 0;
	q.ignore_eos = 1;
	char err[INFERD_ERR_LEN];
	inferd_req_t *h;
	if (inferd_submit(r->m, &q, &h, err)) {
		fprintf(stderr, "%s\n", err);
		return NULL;
	}
	struct inferd_event ev;
	double last = 0;
	while (inferd_req_next(h, &ev, -1) == 0) {
		if (ev.type != INFERD_EV_TOKEN)
			continue;
		double now = now_sec();
		if (last && r->gaps && r->n_gaps < r->cap_gaps)
			r->gaps[r->n_gaps++] = now - last;
		last = now;
	}
	inferd_req_release(h);
	return NULL;
}

static double concurrent(inferd_model_t *m, int c, int serial)
{
	pthread_t th[64];
	struct run rs[64];
	double t0 = now_sec();
	for (int i = 0; i < c; i++) {
		rs[i] = (struct run){.m = m, .id = i, .n_tokens = T, .prompt_len = 16};
		if (serial)
			one(&rs[i]);
		else
			pthread_create(&th[i], NULL, one, &rs[i]);
	}
	for (int i = 0; !serial && i < c; i++)
		pthread_join(th[i], NULL);
	return (double)c * T / (now_sec() - t0);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void latency(inferd_model_t *m, int prefill, double *p50, double *p99)
{
	struct run rs[4];
	pthread_t th[5];
	double *gaps = malloc(4 * 256 * sizeof *gaps);
	for (int i = 0; i < 4; i++) {
		rs[i] = (struct run){.m = m, .id = 100 + i, .n_tokens = 48, .prompt_len = 8, .gaps = gaps + i * 256, .cap_gaps = 256};
		pthread_create(&th[i], NULL, one, &rs[i]);
	}
	struct run big = {.m = m, .id = 7, .n_tokens = 1, .prompt_len = prefill};
	if (prefill) {
		struct timespec ts = {0, 200000000};
		nanosleep(&ts, NULL); /* the four are decoding when the long prompt arrives */
		pthread_create(&th[4], NULL, one, &big);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	if (prefill)
		pthread_join(th[4], NULL);
	int n = 0;
	double *all = malloc(4 * 256 * sizeof *all);
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < rs[i].n_gaps; k++)
			all[n++] = rs[i].gaps[k];
	qsort(all, (size_t)n, sizeof *all, cmp_d);
	*p50 = n ? all[n / 2] : 0;
	*p99 = n ? all[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] : 0;
	free(all);
	free(gaps);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_engine MODEL.gguf [tokens_per_request] [prefill_tokens]\n");
		return 2;
	}
	T = argc > 2 ? atoi(argv[2]) : 32;
	int prefill = argc > 3 ? atoi(argv[3]) : 2000;
	char err[INFERD_ERR_LEN];
	inferd_model_t *m;
	struct inferd_model_opts o = {.kv_tokens = 16384};
	if (inferd_model_open(argv[1], &o, &m, err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	concurrent(m, 1, 1); /* warm up */
	double base = concurrent(m, 4, 1);
	printf("serialised (one request at a time): %.2f tokens/s\n", base);
	printf("%-12s %14s %10s\n", "concurrency", "tokens/s", "vs serial");
	int cs[] = {1, 2, 4, 8, 16};
	for (int i = 0; i < 5; i++) {
		double r = concurrent(m, cs[i], 0);
		printf("%-12d %14.2f %9.2fx\n", cs[i], r, r / base);
	}
	double a50, a99, b50, b99;
	latency(m, 0, &a50, &a99);
	latency(m, prefill, &b50, &b99);
	printf("inter-token latency of 4 running sequences (ms): alone p50 %.1f p99 %.1f; while a %d-token prompt "
	       "prefills p50 %.1f p99 %.1f\n",
	       a50 * 1e3, a99 * 1e3, prefill, b50 * 1e3, b99 * 1e3);
	inferd_model_close(m);
	return 0;
}
