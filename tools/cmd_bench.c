/*
 * cmd_bench.c — `inferd bench`: prompt processing and generation speed of
 * one model, in the sense of llama.cpp's llama-bench (pp: a prompt of P
 * tokens in one evaluation; tg: N tokens generated one at a time after it),
 * with the process's peak resident memory and the weight bandwidth that the
 * generation rate implies. Each repetition uses a fresh sequence; the
 * figures are the mean over repetitions after one warm-up. Single-threaded
 * driver over the library's sequence API; the model's own threads compute.
 */
#include "inferd.h"
#include "cpu/membw.h"
#include "cpu/qmm.h"
#include "sample.h"
#include "cmds.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *bench_help =
	"usage: inferd bench -m MODEL [-p 512] [-n 128] [-t THREADS] [-r 3] [-b B] [--probe] [--device DEV] [--kv-dtype T] [--cpu-exact] [--json]\n"
	"Prompt processing (pp: P tokens in one evaluation) and generation (tg: N tokens one at a\n"
	"time from an empty context), each as llama-bench measures them, in tokens/s, the mean of R repetitions after a warm-up; the peak\n"
	"resident memory of the process; and the weight bandwidth the generation rate implies\n"
	"(bytes of weights read per token x tg). --json prints one object with pp_tok_s,\n"
	"tg_tok_s, peak_rss_bytes, weight_bytes, tg_weight_gb_s, file_bytes, kv_cache_bytes,\n"
	"cpu_kernels and the settings.\n"
	"--probe: also generate N tokens with the memory read probe (bench/membw's, a 512 MiB\n"
	"buffer, the same threads) run between every 4 of them, and print the weight bandwidth\n"
	"of those tokens against the probe's (tg_probe_weight_gb_s, probe_read_gb_s,\n"
	"tg_probe_ratio): both sampled in the same seconds, so a machine whose bandwidth moves\n"
	"from minute to minute is compared with itself.\n"
	"-b B (2..64): also decode through the engine, 1 sequence and then B at once (16-token\n"
	"prompts, N tokens each), alternating R times, and print the best decode rate of each:\n"
	"tokens after every prompt is done, all sequences together, as llama-batched-bench's S_TG\n"
	"(engine_tg1_tok_s, engine_tgb_tok_s).\n"
	"--cpu-exact: float32 activations for quantized weights on the CPU (default: 8-bit).\n"
	"INFERD_CPU_ISA=avx2|neon|scalar lowers the CPU kernel set (default: the best this CPU runs).\n";

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int num(const char *flag, const char *v, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || errno || end == v || *end || x < lo || x > hi) {
		fprintf(stderr, "inferd bench: %s must be an integer from %ld to %ld, got \"%s\"\n", flag, lo, hi,
			v ? v : "");
		return 2;
	}
	*out = x;
	return 0;
}

/* Decode through the engine: b requests at once, each a 16-token prompt
 * and n greedy tokens (EOS ignored). The rate is of decoding alone, as
 * llama-batched-bench's S_TG: the engine's count of generated tokens
 * (inferd_model_stats) from the moment every request has its first token
 * (all prompts done) to the end, over that time. Counting the prompts too
 * would charge b prompts to the batch and one to the single sequence.
 * Events are read as they come (poll on every request's fd); the engine's
 * counter, not the events' arrival, counts the tokens, so a reader that
 * falls behind does not change the figure. A model so small that decoding
 * ends before the reader sees the last first token gets the rate from
 * submission instead. */
static int batched(inferd_model_t *m, const struct inferd_model_info *info, int b, int n, double *tok_s, char *err)
{
	inferd_req_t **rq = calloc((size_t)b, sizeof *rq);
	struct pollfd *pf = calloc((size_t)b, sizeof *pf);
	char *seen = calloc((size_t)b, 1); /* request i has its first token */
	int32_t ids[16 * 64];
	int rc = rq && pf && seen ? 0 : INFERD_ENOMEM, left = 0, firsts = 0, total = 0;
	struct inferd_model_stats st;
	inferd_model_stats(m, &st);
	double ts = now_s(), t0 = 0;
	uint64_t g0 = 0, gs = st.tokens_generated;
	for (int i = 0; i < b && !rc; i++) {
		for (int k = 0; k < 16; k++)
			ids[16 * i + k] = (int32_t)(((i + 1) * 7919 + k * 104729) % info->n_vocab);
		struct inferd_request r;
		inferd_request_init(&r);
		r.ids = ids + 16 * i;
		r.n_ids = 16;
		r.max_tokens = n;
		r.temperature = 0;
		r.ignore_eos = 1;
		if (!(rc = inferd_submit(m, &r, &rq[i], err))) {
			pf[i] = (struct pollfd){inferd_req_fd(rq[i]), POLLIN, 0};
			left++;
		}
	}
	while (!rc && left) {
		if (poll(pf, (nfds_t)b, -1) < 0 && errno != EINTR) {
			rc = INFERD_EIO;
			snprintf(err, INFERD_ERR_LEN, "poll: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < b && !rc; i++) {
			struct inferd_event ev;
			while (pf[i].fd >= 0 && inferd_req_next(rq[i], &ev, 0) == 0) {
				if (ev.type == INFERD_EV_TOKEN) {
					if (!seen[i]) {
						seen[i] = 1;
						if (++firsts == b) {
							inferd_model_stats(m, &st);
							t0 = now_s();
							g0 = st.tokens_generated;
						}
					}
					continue;
				}
				if (ev.status) {
					snprintf(err, INFERD_ERR_LEN, "%s", ev.message);
					rc = ev.status;
				}
				total += ev.completion_tokens;
				pf[i].fd = -1; /* done: poll skips it */
				left--;
			}
		}
	}
	if (!rc) {
		inferd_model_stats(m, &st);
		double t1 = now_s();
		if (firsts == b && st.tokens_generated > g0 && t1 > t0)
			*tok_s = (double)(st.tokens_generated - g0) / (t1 - t0);
		else if (st.tokens_generated > gs)
			*tok_s = (double)total / (t1 - ts);
		else {
			rc = INFERD_EINVAL;
			snprintf(err, INFERD_ERR_LEN, "no tokens generated (-n %d)", n);
		}
	}
	for (int i = 0; rq && i < b; i++)
		if (rq[i])
			inferd_req_release(rq[i]);
	free(rq);
	free(pf);
	free(seen);
	return rc;
}

/* Generation with the read probe between every 4 tokens: the seconds of
 * the tokens and of the probe's passes, each summed, so both are sampled
 * across the same stretch of time (a VM's bandwidth moves by 2x from
 * minute to minute; a probe run before or after compares two machines). */
static int probed(inferd_model_t *m, const struct inferd_model_info *info, int n, int nth, double *tg_gb_s,
		  double *probe_gb_s, char *err)
{
	size_t bytes = (size_t)512 << 20;
	bytes -= bytes % (8 * (size_t)nth);
	uint64_t *buf = malloc(bytes), sum = 0;
	float *lg = malloc((size_t)info->n_vocab * sizeof *lg);
	inferd_seq_t *g = NULL;
	int rc = INFERD_ENOMEM;
	if (!buf || !lg) {
		snprintf(err, INFERD_ERR_LEN, "out of memory for the probe's 512 MiB");
		goto out;
	}
	if ((rc = inferd_seq_new(m, n + 1, &g, err))) /* err says why */
		goto out;
	for (size_t i = 0; i < bytes / 8; i++) /* touch every page, no zero pages */
		buf[i] = i * 0x9e3779b97f4a7c15ull;
	double t_tg = 0, t_probe = 0;
	int passes = 0;
	for (int i = 0; i < n && !rc;) {
		double t0 = now_s();
		for (int k = 0; k < 4 && i < n && !rc; k++, i++) {
			int32_t id = i ? sample_argmax(lg, info->n_vocab) : 1;
			rc = inferd_seq_eval(m, g, &id, 1, lg, 0, err);
		}
		t_tg += now_s() - t0;
		double t = membw_pass(buf, bytes, nth, &sum);
		if (t < 0 && !rc) {
			rc = INFERD_EIO;
			snprintf(err, INFERD_ERR_LEN, "the probe could not start %d threads", nth);
		}
		t_probe += t;
		passes++;
	}
	if (!rc) {
		*tg_gb_s = (double)info->weight_bytes * n / t_tg / 1e9;
		*probe_gb_s = (double)bytes * passes / t_probe / 1e9;
	}
out:
	inferd_seq_free(g);
	free(buf);
	free(lg);
	return rc;
}

/* one repetition: pp and tg seconds, each on a fresh sequence as
 * llama-bench measures them (pp: p tokens in one evaluation; tg: n tokens
 * one at a time from an empty context) */
static int one(inferd_model_t *m, const struct inferd_model_info *info, int p, int n, double *pp_s, double *tg_s,
	       char *err)
{
	inferd_seq_t *s = NULL, *g = NULL;
	int32_t *ids = malloc((size_t)(p > 0 ? p : 1) * sizeof *ids);
	float *lg = malloc((size_t)info->n_vocab * sizeof *lg);
	int rc = INFERD_ENOMEM;
	if (!ids || !lg || (rc = inferd_seq_new(m, p + 1, &s, err)) || (rc = inferd_seq_new(m, n + 1, &g, err)))
		goto out;
	for (int i = 0; i < p; i++)
		ids[i] = (int32_t)((i * 7919 + 17) % info->n_vocab);
	double t0 = now_s();
	if (p > 0 && (rc = inferd_seq_eval(m, s, ids, p, lg, 0, err)))
		goto out;
	double t1 = now_s();
	for (int i = 0; i < n; i++) { /* greedy: the next id is the argmax */
		int32_t id = i ? sample_argmax(lg, info->n_vocab) : 1;
		if ((rc = inferd_seq_eval(m, g, &id, 1, lg, 0, err)))
			goto out;
	}
	double t2 = now_s();
	*pp_s = t1 - t0;
	*tg_s = t2 - t1;
	rc = 0;
out:
	inferd_seq_free(s);
	inferd_seq_free(g);
	free(ids);
	free(lg);
	return rc;
}

int cmd_bench(int argc, char **argv)
{
	const char *model = NULL, *device = NULL;
	long p = 512, n = 128, threads = 0, reps = 3;
	int json = 0, cpu_exact = 0, probe = 0;
	long batch = 1;
	const char *kv_dtype = NULL;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(bench_help, stdout);
			return 0;
		}
		if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		}
		if (!strcmp(a, "--cpu-exact")) {
			cpu_exact = 1;
			continue;
		}
		if (!strcmp(a, "--probe")) {
			probe = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "inferd bench: %s \"%s\"\n(see 'inferd bench --help')\n",
				a[0] == '-' ? "option needs a value:" : "unexpected argument", a);
			return 2;
		}
		int rc = 0;
		if (!strcmp(a, "-m") || !strcmp(a, "--model"))
			model = v;
		else if (!strcmp(a, "--device"))
			device = v;
		else if (!strcmp(a, "-p"))
			rc = num("-p", v, 0, 1 << 20, &p);
		else if (!strcmp(a, "-n"))
			rc = num("-n", v, 0, 1 << 20, &n);
		else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
			rc = num("-t", v, 1, 1024, &threads);
		else if (!strcmp(a, "-r"))
			rc = num("-r", v, 1, 1000, &reps);
		else if (!strcmp(a, "--kv-dtype"))
			kv_dtype = v;
		else if (!strcmp(a, "-b") || !strcmp(a, "--batch"))
			rc = num("-b", v, 1, 64, &batch);
		else {
			fprintf(stderr, "inferd bench: unknown option \"%s\"\n(see 'inferd bench --help')\n", a);
			return 2;
		}
		if (rc)
			return rc;
		i++;
	}
	if (!model) {
		fprintf(stderr, "inferd bench: missing -m MODEL\n");
		return 2;
	}
	if (p + n < 1) {
		fprintf(stderr, "inferd bench: -p and -n are both 0: nothing to measure\n");
		return 2;
	}
	warn_threads("bench", threads, device);
	char err[INFERD_ERR_LEN];
	struct inferd_model_opts o = {.n_threads = (int)threads, .device = device, .cpu_exact = cpu_exact, .kv_dtype = kv_dtype,
				      .kv_tokens = (int)(p + n + 16 > 8192 ? p + n + 16 : 8192)};
	if (batch * (16 + n) + 16 > o.kv_tokens)
		o.kv_tokens = (int)(batch * (16 + n) + 16);
	inferd_model_t *m;
	if (inferd_model_open(model, &o, &m, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		return 1;
	}
	struct inferd_model_info info;
	inferd_model_get_info(m, &info);
	double pp = 0, tg = 0, a, b;
	int rc = one(m, &info, (int)(p < 32 ? p : 32), (int)(n < 4 ? n : 4), &a, &b, err); /* warm-up */
	for (long r = 0; r < reps && !rc; r++) {
		rc = one(m, &info, (int)p, (int)n, &a, &b, err);
		pp += a;
		tg += b;
	}
	if (rc) {
		fprintf(stderr, "inferd: %s: %s\n", model, err);
		inferd_model_close(m);
		return 1;
	}
	double pp_tok_s = p > 0 ? (double)p * (double)reps / pp : 0, tg_tok_s = n > 0 ? (double)n * (double)reps / tg : 0;
	double b1 = 0, bn = 0; /* engine decode: 1 sequence, then `batch` at once */
	if (batch > 1 && n > 0) {
		/* alternating, the best of R each: the machine's memory bandwidth
		 * can change between two runs, and one of each would compare two
		 * machines */
		for (long i = 0; i < reps && !rc; i++) {
			double r1 = 0, rn = 0;
			rc = batched(m, &info, 1, (int)n, &r1, err);
			if (!rc)
				rc = batched(m, &info, (int)batch, (int)n, &rn, err);
			b1 = r1 > b1 ? r1 : b1;
			bn = rn > bn ? rn : bn;
		}
		if (rc) {
			fprintf(stderr, "inferd: %s: %s\n", model, err);
			inferd_model_close(m);
			return 1;
		}
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	unsigned long long rss = (unsigned long long)ru.ru_maxrss * 1024ull; /* before the probe's buffer */
	double ptg = 0, pbw = 0; /* --probe: tg's weight bandwidth and the probe's, interleaved */
	if (probe && n > 0) {
		long nth = threads ? threads : sysconf(_SC_NPROCESSORS_ONLN);
		if (probed(m, &info, (int)n, (int)(nth < 1 ? 1 : nth > 256 ? 256 : nth), &ptg, &pbw, err)) {
			fprintf(stderr, "inferd: %s: %s\n", model, err);
			inferd_model_close(m);
			return 1;
		}
	}
	double gbs = (double)info.weight_bytes * tg_tok_s / 1e9;
	const char *kern = cpu_exact ? "float32" : qmm_isa_name(qmm_isa_best());
	uint64_t file_bytes = 0, kv_bytes = 0; /* what the resident size should be made of */
	inferd_model_estimate(model, &o, &file_bytes, &kv_bytes, err);
	if (json) {
		json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I,s:f,s:I,s:I}", "model", model,
				      "device", info.device, "cpu_kernels", kern, "batch", (json_int_t)batch,
				      "engine_tg1_tok_s", b1, "engine_tgb_tok_s", bn,
				      "threads", (json_int_t)threads, "p", (json_int_t)p, "n", (json_int_t)n, "reps",
				      (json_int_t)reps, "pp_tok_s", pp_tok_s, "tg_tok_s", tg_tok_s, "peak_rss_bytes",
				      (json_int_t)rss, "weight_bytes", (json_int_t)info.weight_bytes, "tg_weight_gb_s", gbs,
				      "file_bytes", (json_int_t)file_bytes, "kv_cache_bytes", (json_int_t)kv_bytes);
		if (j && probe && n > 0) {
			json_object_set_new(j, "tg_probe_weight_gb_s", json_real(ptg));
			json_object_set_new(j, "probe_read_gb_s", json_real(pbw));
			json_object_set_new(j, "tg_probe_ratio", json_real(pbw > 0 ? ptg / pbw : 0));
		}
		char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
		printf("%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(j);
	} else
		printf("model %s on %s (%ld threads; 0 = all; CPU kernels %s)\n  pp%ld: %.2f tok/s\n  tg%ld: %.2f tok/s (%.2f GB/s of "
		       "weights, %.3f GB per token)\n  peak RSS: %.1f MiB (file %.1f MiB; KV cache %.1f MiB, touched as it fills)\n",
		       model, info.device, threads, kern, p, pp_tok_s, n, tg_tok_s, gbs, (double)info.weight_bytes / 1e9,
		       (double)rss / 1048576.0, (double)file_bytes / 1048576.0, (double)kv_bytes / 1048576.0);
	if (!json && probe && n > 0)
		printf("  tg%ld with the read probe between every 4 tokens: %.2f GB/s of weights, the probe %.2f GB/s (%.0f%%)\n",
		       n, ptg, pbw, pbw > 0 ? 100 * ptg / pbw : 0);
	if (!json && batch > 1 && n > 0)
		printf("  engine decode, %ld tokens each: 1 sequence %.2f tok/s, %ld at once %.2f tok/s (%.2fx)\n", n, b1,
		       batch, bn, b1 > 0 ? bn / b1 : 0);
	inferd_model_close(m);
	return 0;
}
