/*
 * pool.h — a persistent pool of worker threads. pool_run(fn, ctx) calls
 * fn(ctx, ith, nth) once for every ith in [0, nth) — the caller's thread
 * is ith 0 — and returns when all have finished (one barrier per call).
 * Kernels split their rows by (ith, nth). One caller at a time per pool.
 */
#ifndef INFERD_POOL_H
#define INFERD_POOL_H

#include <stdint.h>

typedef void (*pool_fn)(void *ctx, int ith, int nth);
struct pool;

struct pool *pool_new(int nth);
void pool_free(struct pool *p);
int pool_size(const struct pool *p);
void pool_run(struct pool *p, pool_fn fn, void *ctx);

/* rows [*a, *b) of n for thread ith of nth */
static inline void pool_split(int64_t n, int ith, int nth, int64_t *a, int64_t *b)
{
	int64_t per = (n + nth - 1) / nth;
	*a = per * ith < n ? per * ith : n;
	*b = *a + per < n ? *a + per : n;
}

#endif
