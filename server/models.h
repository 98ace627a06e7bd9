/*
 * models.h — the model manager of the server worker (models.c): one slot
 * per registry entry, loaded on demand, unloaded when idle past its
 * keep-alive or to make room, all against one memory budget.
 *
 * States: AVAILABLE (known, not loaded) → LOADING → READY → UNLOADING →
 * AVAILABLE; a failed load is FAILED (with its reason) until SIGHUP or an
 * admin load retries it. A request holds a READY model through
 * models_acquire / models_release: a held model is never unloaded, and its
 * m / tok / tmpl stay valid until the release. Everything but the atomic
 * state is under one mutex (models_lock); loads and unloads run outside it.
 */
#ifndef INFERD_MODELS_H
#define INFERD_MODELS_H

#include "inferd.h"
#include "registry.h"
#include "serve.h"
#include "toolcall.h"

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>

enum { SLOT_AVAILABLE, SLOT_LOADING, SLOT_READY, SLOT_FAILED, SLOT_UNLOADING };

struct slot {
	const char *name;
	const char *path;
	const struct model_cfg *cfg;
	int index;                  /* in the registry (the supervisor's numbering) */
	int parallel, queue;        /* admission: running + waiting at most */
	atomic_int state;           /* SLOT_*; written under the mutex */
	/* set before READY, valid while the slot is held */
	inferd_model_t *m;
	const struct tokenizer *tok;
	struct tmpl *tmpl;
	char *bos, *eos;
	int n_ctx;                  /* prompt + max_tokens at most */
	struct tc_syntax syn;       /* tool-call and reasoning syntax of its template */
	/* under the mutex */
	char error[INFERD_ERR_LEN]; /* why FAILED, or why the last load gave up */
	atomic_int in_flight;       /* requests holding it (changed under the mutex) */
	int waiters;                /* requests waiting for its load */
	int unload_when_idle;       /* admin unload of a busy model */
	uint64_t load_gen;          /* +1 at the end of each load attempt */
	double last_used;           /* monotonic time of the last release */
	double keep_alive;          /* idle seconds before unloading; < 0 never */
	uint64_t bytes;             /* estimate: weights + KV cache */
	time_t created;
	struct timespec mtime;      /* the file's, when loaded (SIGHUP compares) */
	off_t size;
	unsigned long long loads, unloads, evictions;
};

struct models_hooks {
	/* the supervisor's view (serve.c): a model loading / ready / failed,
	 * and whether it has requests */
	void (*report_model)(int index, int state, const char *text);
	void (*report_busy)(struct slot *s);
	void (*on_fatal)(void *arg, const char *msg);
};

int models_init(const struct serve_opts *o, const struct serve_worker_ctx *w, const struct models_hooks *h);
/* Load the preload models in order (the start-up pass). */
void models_preload(void);
void models_shutdown(void);

int models_count(void);
struct slot *models_at(int i);
/* By name or alias; NULL name picks the only model. NULL if unknown. */
struct slot *models_find(const char *name);

/* Outcome of models_acquire / models_load, as an HTTP status: 0 success,
 * 404, 429 (admission), 503 (failed, no room, still loading at the
 * deadline, shutting down), 499 (the client went away). */
int models_acquire(struct slot *s, double deadline, int client_fd, int admit, char *msg, size_t cap);
/* keep_alive: the request's (seconds, < 0 forever), or NAN to keep the
 * model's current one. 0 unloads the model once it is idle. */
void models_release(struct slot *s, double keep_alive);

/* Admin: load now (waits up to deadline), or unload (now if idle, else
 * when its requests finish: returns 1 then). */
int models_load(struct slot *s, double deadline, int client_fd, char *msg, size_t cap);
int models_unload(struct slot *s, char *msg, size_t cap);

/* Every 250 ms from the main loop: unload models idle past keep-alive. */
void models_tick(void);
/* SIGHUP: failed models (not quarantined) become loadable again; preload
 * ones are loaded; changed files are named. Returns how many retried. */
int models_rehup(void);

/* Readers of m outside a hold (health, metrics, heartbeat) take the lock:
 * a READY model is not unloaded while it is held. */
void models_lock(void);
void models_unlock(void);
uint64_t models_budget(void);
uint64_t models_used(void);  /* under the lock */

#endif
