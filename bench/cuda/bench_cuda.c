/*
 * bench_cuda.c — GPU throughput through the engine (the real executor,
 * device sampling, CUDA graphs), each figure beside the device's own
 * ceiling measured in the same run:
 *   - a device-to-device copy: read + write bandwidth (the decode bound);
 *   - decode at batch 1 (tokens/s after the first token), its weight bytes
 *     per token and the fraction of the copy bandwidth that makes;
 *   - aggregate decode at 8, 32 and 64 sequences (128-token prompts);
 *   - two models decoding at once against each alone;
 *   - time to first token of a 2,000-token prompt while 32 sequences
 *     decode, and their inter-token latency meanwhile.
 *   bench_cuda MODEL.gguf [new_tokens] [b1]   (b1: batch 1 only, for profilers)
 * INFERD_CUDA_GRAPHS=0 turns CUDA graphs off (to measure them).
 */
#include "inferd.h"
#include "model.h"
#include "util.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int NEW = 128;

static double copy_bandwidth(void)
{
	size_t bytes = (size_t)2 << 30;
	void *a = NULL, *b = NULL;
	if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes))
		return 0;
	cudaMemset(a, 1, bytes);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	float best = 1e30f;
	for (int i = 0; i < 6; i++) {
		cudaEventRecord(e0, 0);
		cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
		cudaEventRecord(e1, 0);
		cudaEventSynchronize(e1);
		float ms;
		cudaEventElapsedTime(&ms, e0, e1);
		if (i > 0 && ms < best)
			best = ms;
	}
	cudaFree(a);
	cudaFree(b);
	return 2.0 * (double)bytes / (best / 1e3); /* read + write */
}

struct run {
	inferd_model_t *m;
	int id, prompt, max;
	double t_submit, t_first, t_last;
	int n;
	double *gaps;
	int n_gaps;
};

static void *one(void *arg)
{
	struct run *r = arg;
	int V = 1000;
	int32_t *ids = malloc((size_t)r->prompt * sizeof *ids);
	for (int i = 0; i < r->prompt; i++)
		ids[i] = (r->id * 131 + i * 17) % V + 1;
	struct inferd_request q;
	inferd_request_init(&q);
	q.ids = ids;
	q.n_ids = r->prompt;
	q.max_tokens = r->max;
	q.temperature = 0;
	q.ignore_eos = 1;
	inferd_req_t *h;
	char err[INFERD_ERR_LEN];
	r->t_submit = now_sec();
	while (inferd_submit(r->m, &q, &h, err) == INFERD_EAGAIN)
		;
	struct inferd_event ev;
	r->n = 0;
	while (inferd_req_next(h, &ev, -1) == 0) {
		if (ev.type == INFERD_EV_TOKEN) {
			double t = now_sec();
			if (!r->n)
				r->t_first = t;
			else if (r->gaps)
				r->gaps[r->n_gaps++] = t - r->t_last;
			r->t_last = t;
			r->n++;
		}
		if (ev.type == INFERD_EV_DONE) {
			if (ev.status)
				fprintf(stderr, "request %d: %s\n", r->id, ev.message);
			break;
		}
	}
	inferd_req_release(h);
	free(ids);
	return NULL;
}

/* k concurrent requests; returns aggregate decode tokens/s (tokens after
 * each one's first, over the span from the last first token... to the
 * last token) and the wall-clock rate */
static void batch(inferd_model_t *m, int k, int prompt, double *decode_tps, double *wall_tps)
{
	struct run *r = calloc((size_t)k, sizeof *r);
	pthread_t *th = calloc((size_t)k, sizeof *th);
	double t0 = now_sec();
	for (int i = 0; i < k; i++) {
		r[i] = (struct run){.m = m, .id = i, .prompt = prompt, .max = NEW};
		pthread_create(&th[i], NULL, one, &r[i]);
	}
	for (int i = 0; i < k; i++)
		pthread_join(th[i], NULL);
	double first = 0, last = 0;
	long toks = 0;
	for (int i = 0; i < k; i++) {
		if (r[i].t_first > first)
			first = r[i].t_first;
		if (r[i].t_last > last)
			last = r[i].t_last;
		toks += r[i].n;
	}
	/* decode rate: tokens produced while all k were decoding, approximated
	 * by all tokens but each request's first over the decode span */
	double span = last - first;
	*decode_tps = span > 0 ? (double)(toks - k) / span : 0;
	*wall_tps = (double)toks / (last - t0);
	free(r);
	free(th);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_cuda MODEL.gguf [new_tokens]\n");
		return 2;
	}
	if (argc > 2)
		NEW = atoi(argv[2]);
	char err[INFERD_ERR_LEN];
	struct inferd_model_opts o = {.device = "cuda:0", .kv_tokens = 65536, .max_seqs = 64, .step_tokens = 512};
	inferd_model_t *m;
	if (inferd_model_open(argv[1], &o, &m, err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double bw = copy_bandwidth();
	uint64_t wbytes = 0;
	for (int i = 0; i < m->n_tensors; i++)
		if (m->tensors[i].ne[1] > 1 && &m->tensors[i] != m->tok_embd) /* read each token: all matrices but the embedding */
			wbytes += m->tensors[i].nbytes;
	if (m->output == m->tok_embd)
		wbytes += m->tok_embd->nbytes;
	printf("model %s: %.2f GB of weights read per decode step\n", argv[1], wbytes / 1e9);
	printf("device-to-device copy: %.0f GB/s (read + write) -> batch-1 bound %.0f tok/s\n", bw / 1e9, bw / wbytes);
	double d, w;
	batch(m, 1, 128, &d, &w); /* warm-up: graphs recorded, arena sized */
	batch(m, 1, 128, &d, &w);
	printf("batch 1: %.1f tok/s decode (%.0f%% of the copy bound, %.0f GB/s of weights)\n", d, 100.0 * d * wbytes / bw,
	       d * wbytes / 1e9);
	if (argc > 3 && !strcmp(argv[3], "b1")) { /* batch 1 only (for profilers) */
		inferd_model_close(m);
		return 0;
	}
	int ks[] = {8, 32, 64};
	double agg[3];
	for (int i = 0; i < 3; i++) {
		batch(m, ks[i], 128, &agg[i], &w);
		printf("batch %2d: %.0f tok/s decode aggregate (%.0f tok/s over the whole run incl. prefill)\n", ks[i], agg[i],
		       w);
	}
	/* two models at once */
	inferd_model_t *m2;
	if (inferd_model_open(argv[1], &o, &m2, err) == 0) {
		double a1, a2, w1;
		batch(m2, 1, 128, &a2, &w1);
		batch(m2, 1, 128, &a2, &w1);
		struct run r1 = {.m = m, .id = 1, .prompt = 128, .max = NEW}, r2 = {.m = m2, .id = 2, .prompt = 128, .max = NEW};
		pthread_t t1, t2;
		pthread_create(&t1, NULL, one, &r1);
		pthread_create(&t2, NULL, one, &r2);
		pthread_join(t1, NULL);
		pthread_join(t2, NULL);
		a1 = (r1.n - 1) / (r1.t_last - r1.t_first);
		a2 = (r2.n - 1) / (r2.t_last - r2.t_first);
		printf("two models at once: %.1f + %.1f = %.1f tok/s (each alone %.1f: %.2fx)\n", a1, a2, a1 + a2, d,
		       (a1 + a2) / d);
		inferd_model_close(m2);
	}
	/* a 2,000-token prompt while 32 sequences decode */
	{
		int k = 32;
		struct run *r = calloc((size_t)k + 1, sizeof *r);
		pthread_t *th = calloc((size_t)k + 1, sizeof *th);
		for (int i = 0; i < k; i++) {
			r[i] = (struct run){.m = m, .id = i, .prompt = 128, .max = NEW * 2};
			r[i].gaps = calloc((size_t)NEW * 2, sizeof(double));
			pthread_create(&th[i], NULL, one, &r[i]);
		}
		struct timespec ts = {0, 300 * 1000 * 1000};
		nanosleep(&ts, NULL);
		r[k] = (struct run){.m = m, .id = 999, .prompt = 2000, .max = 4};
		pthread_create(&th[k], NULL, one, &r[k]);
		for (int i = 0; i <= k; i++)
			pthread_join(th[i], NULL);
		double lo = r[k].t_submit, hi = r[k].t_first;
		int ng = 0;
		double *all = calloc((size_t)k * NEW * 2, sizeof(double));
		for (int i = 0; i < k; i++)
			for (int j = 0; j < r[i].n_gaps; j++)
				all[ng++] = r[i].gaps[j];
		qsort(all, (size_t)ng, sizeof *all, cmp_d);
		printf("2,000-token prompt among 32 decoding: TTFT %.0f ms; their inter-token latency p50 %.1f ms, p99 %.1f "
		       "ms, max %.1f ms\n",
		       (hi - lo) * 1e3, all[ng / 2] * 1e3, all[(int)(ng * 0.99)] * 1e3, all[ng - 1] * 1e3);
		for (int i = 0; i < k; i++)
			free(r[i].gaps);
		free(all);
		free(r);
		free(th);
	}
	inferd_model_close(m);
	return 0;
}
