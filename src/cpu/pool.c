/*
 * pool.c — see pool.h. One process-wide core: workers wait for the job
 * generation to move, spinning up to SPIN_NS and then sleeping on a
 * condition variable (a runner only signals when someone sleeps: the
 * sleeper count and the generation are sequentially consistent, so either
 * the runner sees the sleeper or the sleeper sees the new generation). The
 * job (fn, ctx) is written before the generation moves (release) and read
 * after it is seen (acquire); the generation word carries the job's thread
 * count in its low 16 bits, so a worker outside one job never reads the
 * count of the next. A runner holds the core's run lock for
 * its op, so ops of different models take turns.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { SPIN_NS = 200000 }; /* a decode step's ops follow each other within µs */
_Static_assert(sizeof(uint_fast64_t) >= 8, "generation word");

struct core {
	int nth, refs;
	pthread_mutex_t run;      /* one op at a time */
	pthread_mutex_t mu;       /* sleepers' lock */
	pthread_cond_t go;
	atomic_uint_fast64_t gen;
	atomic_int pending, sleepers;
	atomic_bool stop;
	pool_fn fn;               /* the job: written before gen moves */
	void *ctx;
	pthread_t *th;
};

struct pool {
	struct core *c;
	int nth;
};

static pthread_mutex_t core_mu = PTHREAD_MUTEX_INITIALIZER;
static struct core *the_core;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct warg { struct core *c; int ith; };

static void *worker_main(void *arg)
{
	struct warg w = *(struct warg *)arg;
	free(arg);
	struct core *c = w.c;
	uint64_t seen = 0;
	for (;;) {
		uint64_t g = atomic_load_explicit(&c->gen, memory_order_acquire);
		if (g == seen) {
			uint64_t t0 = now_ns();
			for (int i = 1; g == seen; i++) {
				pool_relax();
				g = atomic_load_explicit(&c->gen, memory_order_acquire);
				if (g == seen && (i & 63) == 0 && now_ns() - t0 > SPIN_NS)
					break;
			}
		}
		if (g == seen) {
			pthread_mutex_lock(&c->mu);
			atomic_fetch_add(&c->sleepers, 1);
			while ((g = atomic_load(&c->gen)) == seen && !atomic_load(&c->stop))
				pthread_cond_wait(&c->go, &c->mu);
			atomic_fetch_sub(&c->sleepers, 1);
			pthread_mutex_unlock(&c->mu);
		}
		if (atomic_load(&c->stop))
			break;
		seen = g;
		int nth = (int)(g & 0xFFFF);
		if (w.ith < nth) {
			c->fn(c->ctx, w.ith, nth);
			atomic_fetch_sub_explicit(&c->pending, 1, memory_order_release);
		}
	}
	return NULL;
}

static void core_free(struct core *c)
{
	pthread_mutex_lock(&c->mu);
	atomic_store(&c->stop, true);
	atomic_fetch_add(&c->gen, 1u << 16);
	pthread_cond_broadcast(&c->go);
	pthread_mutex_unlock(&c->mu);
	for (int i = 1; i < c->nth; i++)
		pthread_join(c->th[i], NULL);
	pthread_mutex_destroy(&c->run);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->go);
	free(c->th);
	free(c);
}

static struct core *core_new(int nth)
{
	struct core *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->th = calloc((size_t)nth, sizeof *c->th);
	if (!c->th) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->run, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->go, NULL);
	atomic_init(&c->gen, 0);
	atomic_init(&c->pending, 0);
	atomic_init(&c->sleepers, 0);
	atomic_init(&c->stop, false);
	c->nth = 1;
	for (int i = 1; i < nth; i++) {
		struct warg *a = malloc(sizeof *a);
		if (a)
			*a = (struct warg){c, i};
		if (!a || pthread_create(&c->th[i], NULL, worker_main, a) != 0) {
			free(a);
			break; /* run with the threads we have */
		}
		c->nth = i + 1;
	}
	return c;
}

struct pool *pool_new(int nth)
{
	if (nth < 1)
		nth = 1;
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	pthread_mutex_lock(&core_mu);
	if (!the_core) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		the_core = core_new(nth > cpus ? nth : (int)(cpus > 0 ? cpus : 1));
	}
	if (the_core)
		the_core->refs++;
	p->c = the_core;
	pthread_mutex_unlock(&core_mu);
	if (!p->c) {
		free(p);
		return NULL;
	}
	p->nth = nth < p->c->nth ? nth : p->c->nth;
	return p;
}

void pool_free(struct pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&core_mu);
	struct core *c = --p->c->refs == 0 ? p->c : NULL;
	if (c)
		the_core = NULL;
	pthread_mutex_unlock(&core_mu);
	if (c)
		core_free(c);
	free(p);
}

int pool_size(const struct pool *p) { return p->nth; }

void pool_run(struct pool *p, pool_fn fn, void *ctx)
{
	if (p->nth == 1) {
		fn(ctx, 0, 1);
		return;
	}
	struct core *c = p->c;
	pthread_mutex_lock(&c->run);
	c->fn = fn;
	c->ctx = ctx;
	atomic_store_explicit(&c->pending, p->nth - 1, memory_order_relaxed);
	uint64_t g = atomic_load_explicit(&c->gen, memory_order_relaxed);
	atomic_store(&c->gen, ((g >> 16) + 1) << 16 | (uint64_t)p->nth); /* seq_cst: see above */
	if (atomic_load(&c->sleepers) > 0) {
		pthread_mutex_lock(&c->mu);
		pthread_cond_broadcast(&c->go);
		pthread_mutex_unlock(&c->mu);
	}
	fn(ctx, 0, p->nth);
	uint64_t t0 = 0;
	for (int i = 1; atomic_load_explicit(&c->pending, memory_order_acquire) > 0; i++) {
		pool_relax();
		if ((i & 255) == 0) { /* a worker lost its CPU: stop spinning for it */
			if (!t0)
				t0 = now_ns();
			else if (now_ns() - t0 > SPIN_NS)
				sched_yield();
		}
	}
	pthread_mutex_unlock(&c->run);
}
