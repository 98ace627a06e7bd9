/*
 * models.c — the worker's model manager: load on demand, one load per
 * model however many requests wait for it, a memory budget with
 * least-recently-used eviction of idle models, keep-alive, and safe unload.
 *
 * Concurrency: one mutex (mu) and one condition variable (cv) cover every
 * slot's bookkeeping; the slow parts (opening a model, closing one) run
 * outside it. A slot's state only changes under mu:
 *   AVAILABLE --acquire/admin load--> LOADING (a loader thread is started)
 *   LOADING --opened--> READY | --failed--> FAILED | --gave up (no room,
 *     nobody waiting)--> AVAILABLE
 *   READY --idle (in_flight 0) and (keep-alive over | evicted | unload)-->
 *     UNLOADING --closed--> AVAILABLE
 * A request holds a READY model (in_flight, incremented under mu): an
 * evictor only picks READY slots with in_flight 0 and flips them to
 * UNLOADING under mu, so no request can take a model that is being closed,
 * and a model still loading is never evicted. Every change broadcasts cv;
 * waiters re-check with a 100 ms timeout so that a client that goes away
 * or a deadline that passes ends the wait.
 *
 * Memory: a model counts its estimate (inferd_model_estimate: weights +
 * KV cache) from the moment its load is admitted until its unload has
 * finished. Unloading closes the model (munmap of the weights, the KV
 * cache freed, device memory returned) and trims the heap (malloc_trim).
 */
#include "models.h"
#include "fault.h"
#include "tmpl.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
	struct slot *s;
	int n;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t budget;
	int max_loaded;
	const struct serve_opts *o;
	const struct serve_worker_ctx *w;
	struct models_hooks h;
	int loaders;  /* loader threads running (under mu) */
	int stopping; /* under mu */
	atomic_int trim; /* ticks left to trim the heap again after an unload */
} M = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int state_of(const struct slot *s) { return atomic_load(&((struct slot *)s)->state); }
static void set_state(struct slot *s, int st) { atomic_store(&s->state, st); }

static int client_gone(int fd)
{
	if (fd < 0)
		return 0;
	struct pollfd p = {fd, POLLRDHUP, 0};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* wait on cv for up to 100 ms (under mu) */
static void wait_a_bit(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 100 * 1000 * 1000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&M.cv, &M.mu, &ts);
}

static uint64_t physical_ram(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
	return pages > 0 && ps > 0 ? (uint64_t)pages * (uint64_t)ps : 8ull << 30;
}

int models_init(const struct serve_opts *o, const struct serve_worker_ctx *w, const struct models_hooks *h)
{
	M.o = o;
	M.w = w;
	M.h = *h;
	M.n = o->reg->n;
	M.s = calloc((size_t)M.n, sizeof *M.s);
	M.budget = o->memory_budget ? o->memory_budget : physical_ram() / 10 * 8;
	M.max_loaded = o->max_loaded;
	M.stopping = 0;
	M.loaders = 0;
	if (!M.s)
		return -1;
	for (int i = 0; i < M.n; i++) {
		const struct model_entry *e = &o->reg->e[i];
		struct slot *s = &M.s[i];
		s->name = e->name;
		s->path = e->path;
		s->cfg = &e->cfg;
		s->index = i;
		s->parallel = e->cfg.parallel ? e->cfg.parallel : o->parallel;
		s->queue = e->cfg.queue ? e->cfg.queue : o->queue;
		s->keep_alive = !isnan(e->cfg.keep_alive) ? e->cfg.keep_alive
				: !isnan(o->keep_alive_s) ? o->keep_alive_s
				: e->cfg.preload ? -1 : 300;
		s->created = time(NULL);
		set_state(s, SLOT_AVAILABLE);
		if (w && w->skip && w->skip[i]) {
			fprintf(stderr, "inferd serve: model %s: not loaded: %s\n", s->name, w->skip[i]);
			snprintf(s->error, sizeof s->error, "%s", w->skip[i]);
			set_state(s, SLOT_FAILED);
			h->report_model(i, REPORT_MODEL_FAILED, w->skip[i]);
		}
	}
	return 0;
}

int models_count(void) { return M.n; }
struct slot *models_at(int i) { return &M.s[i]; }
uint64_t models_budget(void) { return M.budget; }
void models_lock(void) { pthread_mutex_lock(&M.mu); }
void models_unlock(void) { pthread_mutex_unlock(&M.mu); }

struct slot *models_find(const char *name)
{
	if (!name)
		return M.n == 1 ? &M.s[0] : NULL;
	for (int i = 0; i < M.n; i++) {
		if (!strcmp(M.s[i].name, name))
			return &M.s[i];
		for (int a = 0; a < M.s[i].cfg->n_aliases; a++)
			if (!strcmp(M.s[i].cfg->aliases[a], name))
				return &M.s[i];
	}
	return NULL;
}

/* memory held by the other slots (under mu): loading, loaded, unloading */
static uint64_t used_by_others(const struct slot *self, int *n_loaded)
{
	uint64_t used = 0;
	int n = 0;
	for (int i = 0; i < M.n; i++) {
		const struct slot *o = &M.s[i];
		int st = state_of(o);
		if (o == self || (st != SLOT_LOADING && st != SLOT_READY && st != SLOT_UNLOADING))
			continue;
		used += o->bytes;
		n += st != SLOT_UNLOADING;
	}
	if (n_loaded)
		*n_loaded = n;
	return used;
}

uint64_t models_used(void) { return used_by_others(NULL, NULL); }

/* Close a model whose state is UNLOADING (in_flight 0, nobody can take
 * it); called without mu. */
static void unload_now(struct slot *s, const char *why)
{
	double t0 = mono();
	inferd_model_close(s->m);
	tmpl_free(s->tmpl);
	free(s->bos);
	free(s->eos);
	s->m = NULL;
	s->tok = NULL;
	s->tmpl = NULL;
	s->bos = s->eos = NULL;
	malloc_trim(0); /* hand the freed heap back to the system */
	atomic_store(&M.trim, 4); /* and again on the next ticks: the request
				   * threads free their buffers after this */
	fprintf(stderr, "{\"event\":\"model_unloaded\",\"model\":\"%s\",\"reason\":\"%s\",\"duration_ms\":%.1f}\n", s->name,
		why, (mono() - t0) * 1e3);
	M.h.report_model(s->index, REPORT_MODEL_UNLOADED, why);
	pthread_mutex_lock(&M.mu);
	s->unloads++;
	s->unload_when_idle = 0;
	set_state(s, SLOT_AVAILABLE);
	pthread_cond_broadcast(&M.cv);
	pthread_mutex_unlock(&M.mu);
}

static void fail_locked(struct slot *s, const char *why)
{
	snprintf(s->error, sizeof s->error, "%s", why);
	set_state(s, SLOT_FAILED);
	s->load_gen++;
	pthread_cond_broadcast(&M.cv);
}

static void slot_opts(struct slot *s, struct inferd_model_opts *mo)
{
	const struct serve_opts *o = M.o;
	const char *dev = s->cfg->device ? s->cfg->device : o->device;
	/* --gpu-memory is one budget for every model on the device */
	size_t used = 0;
	for (int j = 0; j < M.n; j++)
		if (&M.s[j] != s && state_of(&M.s[j]) == SLOT_READY && M.s[j].m) {
			struct inferd_model_info mi;
			inferd_model_get_info(M.s[j].m, &mi);
			used += mi.device_bytes;
		}
	/* the engine's queue holds every admitted request: they may all be
	 * submitted at once (the server's admission is the bound) */
	*mo = (struct inferd_model_opts){.n_threads = o->threads, .max_seqs = s->parallel, .queue = s->parallel + s->queue,
					 .kv_tokens = s->cfg->kv_tokens ? s->cfg->kv_tokens : o->kv_tokens,
					 .device = dev, .gpu_exact = o->gpu_exact, .cpu_exact = o->cpu_exact,
					 .kv_dtype = s->cfg->kv_dtype ? s->cfg->kv_dtype : o->kv_dtype,
					 .device_memory = o->device_memory ? (o->device_memory > used ? o->device_memory - used : 1) : 0,
					 .on_fatal = M.h.on_fatal, .fatal_arg = s};
}

static double mib(uint64_t b) { return (double)b / (1 << 20); }

/* Describe who holds the memory (under mu), for a 503. */
static void room_report(const struct slot *s, char *out, size_t cap)
{
	int n;
	uint64_t used = used_by_others(s, &n);
	int k = snprintf(out, cap,
			 "no room to load model '%s' (%.1f MiB: weights and KV cache): %.1f MiB of the %.1f MiB memory "
			 "budget are held by %d model%s",
			 s->name, mib(s->bytes), mib(used), mib(M.budget), n, n == 1 ? "" : "s");
	if (M.max_loaded && n >= M.max_loaded && k > 0 && (size_t)k < cap)
		k += snprintf(out + k, cap - (size_t)k, " (--max-loaded-models %d)", M.max_loaded);
	for (int i = 0; i < M.n && k > 0 && (size_t)k < cap; i++) {
		const struct slot *o = &M.s[i];
		int st = state_of(o);
		if (o == s || (st != SLOT_READY && st != SLOT_LOADING))
			continue;
		k += snprintf(out + k, cap - (size_t)k, "; %s %s with %d request%s in flight", o->name,
			      st == SLOT_LOADING ? "loading" : "loaded", atomic_load(&((struct slot *)o)->in_flight),
			      atomic_load(&((struct slot *)o)->in_flight) == 1 ? "" : "s");
	}
}

/* The loader thread of one model: make room, open it, publish it. */
static void *loader_main(void *arg)
{
	struct slot *s = arg;
	char err[INFERD_ERR_LEN];
	struct inferd_model_opts mo;
	pthread_mutex_lock(&M.mu);
	slot_opts(s, &mo);
	if (!s->bytes) {
		uint64_t wb, kb;
		pthread_mutex_unlock(&M.mu);
		int rc = inferd_model_estimate(s->path, &mo, &wb, &kb, err);
		pthread_mutex_lock(&M.mu);
		if (rc) {
			fprintf(stderr, "inferd serve: model %s: %s\n", s->name, err);
			fail_locked(s, err);
			goto out;
		}
		s->bytes = wb + kb;
	}
	if (s->bytes > M.budget) {
		snprintf(err, sizeof err,
			 "model '%s' needs %.1f MiB (weights and KV cache) but the memory budget is %.1f MiB "
			 "(--memory-budget; a smaller kv_tokens also helps)",
			 s->name, mib(s->bytes), mib(M.budget));
		fprintf(stderr, "inferd serve: %s\n", err);
		fail_locked(s, err);
		goto out;
	}
	for (;;) {
		int n_loaded;
		uint64_t used = used_by_others(s, &n_loaded);
		if (M.stopping) {
			snprintf(s->error, sizeof s->error, "the server is shutting down");
			goto gave_up;
		}
		if (used + s->bytes <= M.budget && (!M.max_loaded || n_loaded < M.max_loaded))
			break;
		/* evict the least recently used idle model */
		struct slot *victim = NULL;
		for (int i = 0; i < M.n; i++) {
			struct slot *o = &M.s[i];
			/* idle: no request holds it, and none is waiting to take it
			 * (a model that just loaded is its waiters' first) */
			if (o != s && state_of(o) == SLOT_READY && atomic_load(&o->in_flight) == 0 && o->waiters == 0 &&
			    (!victim || o->last_used < victim->last_used))
				victim = o;
		}
		if (victim) {
			set_state(victim, SLOT_UNLOADING);
			victim->evictions++;
			char why[300];
			snprintf(why, sizeof why, "evicted (least recently used) to load %s", s->name);
			pthread_mutex_unlock(&M.mu);
			unload_now(victim, why);
			pthread_mutex_lock(&M.mu);
			continue;
		}
		if (s->waiters == 0) { /* nobody wants it any more */
			room_report(s, s->error, sizeof s->error);
			goto gave_up;
		}
		wait_a_bit();
	}
	pthread_mutex_unlock(&M.mu);
	M.h.report_model(s->index, REPORT_MODEL_LOADING, NULL);
	inferd_model_t *m = NULL;
	double t0 = mono();
	int rc = fault_hit(FAULT_AT_LOAD, s->name, 0)
			 ? (snprintf(err, sizeof err, "cannot load %s: injected load failure", s->path), -1)
			 : inferd_model_open(s->path, &mo, &m, err);
	if (!rc) {
		s->m = m;
		s->tok = inferd_model_tokenizer(m);
		struct inferd_model_info info;
		inferd_model_get_info(m, &info);
		int kv = mo.kv_tokens > 0 ? mo.kv_tokens : 8192;
		s->n_ctx = info.n_ctx_train > 0 && info.n_ctx_train < kv ? info.n_ctx_train : kv;
		if (s->cfg->context_length && s->cfg->context_length < s->n_ctx)
			s->n_ctx = s->cfg->context_length;
		char *src = NULL;
		size_t sl = 0;
		char terr[INFERD_ERR_LEN];
		if (tmpl_model_source(s->path, &src, &sl, &s->bos, &s->eos, terr) != 0)
			src = NULL;
		if (s->cfg->chat_template) { /* the configuration's template wins */
			free(src);
			src = strdup(s->cfg->chat_template);
			sl = strlen(src);
		}
		tc_detect(src, src ? sl : 0, &s->syn);
		if (src && tmpl_parse(src, sl, s->name, &s->tmpl, terr) != 0) {
			fprintf(stderr, "inferd serve: model %s: chat template: %s\n", s->name, terr);
			s->tmpl = NULL;
		}
		free(src);
		struct stat st;
		if (stat(s->path, &st) == 0) {
			s->mtime = st.st_mtim;
			s->size = st.st_size;
		}
	}
	pthread_mutex_lock(&M.mu);
	if (rc) {
		fprintf(stderr, "inferd serve: model %s: %s\n", s->name, err);
		fail_locked(s, err);
		pthread_mutex_unlock(&M.mu);
		M.h.report_model(s->index, REPORT_MODEL_FAILED, err);
		pthread_mutex_lock(&M.mu);
		goto out;
	}
	s->loads++;
	s->error[0] = 0;
	s->last_used = mono();
	set_state(s, SLOT_READY);
	s->load_gen++;
	pthread_cond_broadcast(&M.cv);
	fprintf(stderr, "{\"event\":\"model_loaded\",\"model\":\"%s\",\"path\":\"%s\",\"bytes\":%llu,\"duration_ms\":%.1f}\n",
		s->name, s->path, (unsigned long long)s->bytes, (mono() - t0) * 1e3);
	pthread_mutex_unlock(&M.mu);
	M.h.report_model(s->index, REPORT_MODEL_READY, NULL);
	pthread_mutex_lock(&M.mu);
	goto out;
gave_up:
	fprintf(stderr, "inferd serve: model %s: load given up: %s\n", s->name, s->error);
	set_state(s, SLOT_AVAILABLE);
	s->load_gen++;
	pthread_cond_broadcast(&M.cv);
out:
	M.loaders--;
	pthread_cond_broadcast(&M.cv);
	pthread_mutex_unlock(&M.mu);
	return NULL;
}

/* Start a load (under mu; the slot is AVAILABLE). */
static int start_load_locked(struct slot *s, char *msg, size_t cap)
{
	set_state(s, SLOT_LOADING);
	s->error[0] = 0;
	pthread_t th;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	M.loaders++;
	int rc = pthread_create(&th, &a, loader_main, s);
	pthread_attr_destroy(&a);
	if (rc) {
		M.loaders--;
		set_state(s, SLOT_AVAILABLE);
		snprintf(msg, cap, "cannot start a loader thread for model '%s'", s->name);
		return -1;
	}
	return 0;
}

/* Wait (under mu) until s is READY, or say why not. `hold` takes it. */
static int wait_ready(struct slot *s, double deadline, int client_fd, int admit, int hold, char *msg, size_t cap)
{
	uint64_t gen = 0;
	int waiting = 0, rc = 0;
	for (;;) {
		int st = state_of(s);
		if (M.stopping) {
			snprintf(msg, cap, "the server is shutting down");
			rc = 503;
			break;
		}
		if (st == SLOT_READY) {
			if (admit && atomic_load(&s->in_flight) >= s->parallel + s->queue) {
				snprintf(msg, cap,
					 "model '%s' is busy: %d requests running or queued (parallel %d, queue %d); retry later",
					 s->name, s->parallel + s->queue, s->parallel, s->queue);
				rc = 429;
			} else if (hold) {
				if (atomic_fetch_add(&s->in_flight, 1) == 0)
					M.h.report_busy(s);
			}
			break;
		}
		if (st == SLOT_FAILED) {
			snprintf(msg, cap, "model '%s' failed to load: %s", s->name, s->error);
			rc = 503;
			break;
		}
		if (st == SLOT_AVAILABLE) {
			if (waiting && s->load_gen != gen && s->error[0]) { /* the load we waited for gave up */
				snprintf(msg, cap, "%s", s->error);
				rc = 503;
				break;
			}
			if (start_load_locked(s, msg, cap)) {
				rc = 503;
				break;
			}
			gen = s->load_gen;
		}
		if (!waiting) {
			waiting = 1;
			s->waiters++;
			gen = s->load_gen;
		}
		if (client_gone(client_fd)) {
			rc = 499;
			snprintf(msg, cap, "the client went away");
			break;
		}
		if (mono() > deadline) {
			if (state_of(s) == SLOT_LOADING && used_by_others(s, NULL) + s->bytes > M.budget)
				room_report(s, msg, cap); /* waiting for memory */
			else
				snprintf(msg, cap, "model '%s' is still loading; retry shortly", s->name);
			rc = 503;
			break;
		}
		wait_a_bit();
	}
	if (waiting)
		s->waiters--;
	pthread_cond_broadcast(&M.cv);
	return rc;
}

int models_acquire(struct slot *s, double deadline, int client_fd, int admit, char *msg, size_t cap)
{
	pthread_mutex_lock(&M.mu);
	int rc = wait_ready(s, deadline, client_fd, admit, 1, msg, cap);
	if (!rc)
		s->last_used = mono();
	pthread_mutex_unlock(&M.mu);
	return rc;
}

void models_release(struct slot *s, double keep_alive)
{
	pthread_mutex_lock(&M.mu);
	if (!isnan(keep_alive))
		s->keep_alive = keep_alive;
	s->last_used = mono();
	int idle = atomic_fetch_sub(&s->in_flight, 1) == 1;
	int now = idle && state_of(s) == SLOT_READY && s->waiters == 0 && (s->keep_alive == 0 || s->unload_when_idle) &&
		  !M.stopping;
	if (now)
		set_state(s, SLOT_UNLOADING);
	pthread_cond_broadcast(&M.cv);
	pthread_mutex_unlock(&M.mu);
	if (idle)
		M.h.report_busy(s);
	if (now)
		unload_now(s, s->unload_when_idle ? "unload requested" : "keep_alive 0");
	else if (idle)
		malloc_trim(0); /* the model went idle: give freed memory back */
}

int models_load(struct slot *s, double deadline, int client_fd, char *msg, size_t cap)
{
	pthread_mutex_lock(&M.mu);
	int q = M.w && M.w->quarantined && M.w->quarantined[s->index];
	if (state_of(s) == SLOT_FAILED && !q) { /* an admin load retries a failure */
		set_state(s, SLOT_AVAILABLE);
		s->bytes = 0;
	}
	s->unload_when_idle = 0;
	int rc = wait_ready(s, deadline, client_fd, 0, 0, msg, cap);
	if (!rc)
		s->last_used = mono();
	pthread_mutex_unlock(&M.mu);
	return rc;
}

int models_unload(struct slot *s, char *msg, size_t cap)
{
	pthread_mutex_lock(&M.mu);
	int st = state_of(s);
	if (st != SLOT_READY) {
		pthread_mutex_unlock(&M.mu);
		snprintf(msg, cap, "model '%s' is %s", s->name,
			 st == SLOT_LOADING ? "loading; unload it when it has loaded" : "not loaded");
		return st == SLOT_LOADING ? 409 : 0;
	}
	int busy = atomic_load(&s->in_flight);
	if (busy) {
		s->unload_when_idle = 1;
		pthread_mutex_unlock(&M.mu);
		snprintf(msg, cap, "model '%s' has %d request%s in flight; it unloads when they finish", s->name, busy,
			 busy == 1 ? "" : "s");
		return 1;
	}
	set_state(s, SLOT_UNLOADING);
	pthread_mutex_unlock(&M.mu);
	unload_now(s, "unload requested");
	snprintf(msg, cap, "model '%s' unloaded", s->name);
	return 0;
}

void models_tick(void)
{
	double now = mono();
	int t = atomic_load(&M.trim);
	if (t > 0 && atomic_compare_exchange_strong(&M.trim, &t, t - 1))
		malloc_trim(0);
	for (;;) {
		struct slot *victim = NULL;
		pthread_mutex_lock(&M.mu);
		for (int i = 0; i < M.n && !victim && !M.stopping; i++) {
			struct slot *s = &M.s[i];
			if (state_of(s) == SLOT_READY && atomic_load(&s->in_flight) == 0 && s->waiters == 0 &&
			    s->keep_alive >= 0 && now - s->last_used >= s->keep_alive)
				victim = s;
		}
		if (victim)
			set_state(victim, SLOT_UNLOADING);
		pthread_mutex_unlock(&M.mu);
		if (!victim)
			return;
		unload_now(victim, "idle past its keep_alive");
	}
}

void models_preload(void)
{
	for (int i = 0; i < M.n; i++) {
		struct slot *s = &M.s[i];
		if (!s->cfg->preload || state_of(s) != SLOT_AVAILABLE)
			continue;
		char msg[INFERD_ERR_LEN];
		/* waits for the load; a model that does not fit stays available */
		models_load(s, mono() + 3600, -1, msg, sizeof msg);
		pthread_mutex_lock(&M.mu);
		int stop = M.stopping;
		pthread_mutex_unlock(&M.mu);
		if (stop)
			break;
	}
}

int models_rehup(void)
{
	int retry = 0;
	for (int i = 0; i < M.n; i++) {
		struct slot *s = &M.s[i];
		struct stat st;
		pthread_mutex_lock(&M.mu);
		int state = state_of(s);
		if (state == SLOT_READY) {
			if (stat(s->path, &st) != 0)
				fprintf(stderr, "inferd serve: model %s: %s is gone; the loaded copy keeps serving\n", s->name, s->path);
			else if (st.st_mtim.tv_sec != s->mtime.tv_sec || st.st_mtim.tv_nsec != s->mtime.tv_nsec ||
				 st.st_size != s->size)
				fprintf(stderr, "inferd serve: model %s: %s changed on disk; restart the server to load it\n", s->name,
					s->path);
		} else if (state == SLOT_FAILED && !(M.w && M.w->quarantined && M.w->quarantined[i])) {
			set_state(s, SLOT_AVAILABLE);
			s->bytes = 0;
			retry++;
			if (s->cfg->preload) {
				char msg[INFERD_ERR_LEN];
				s->waiters++; /* the load runs on; nobody waits for it here */
				start_load_locked(s, msg, sizeof msg);
				s->waiters--;
			}
		}
		pthread_mutex_unlock(&M.mu);
	}
	return retry;
}

void models_shutdown(void)
{
	pthread_mutex_lock(&M.mu);
	M.stopping = 1;
	pthread_cond_broadcast(&M.cv);
	/* loads cannot be interrupted: wait for them (a minute at most) */
	for (double t0 = mono(); M.loaders > 0 && mono() - t0 < 60;)
		wait_a_bit();
	pthread_mutex_unlock(&M.mu);
	for (int i = 0; i < M.n; i++) {
		struct slot *s = &M.s[i];
		if (state_of(s) == SLOT_READY)
			inferd_model_close(s->m);
		tmpl_free(s->tmpl);
		free(s->bos);
		free(s->eos);
	}
	free(M.s);
	M.s = NULL;
	M.n = 0;
}
