/*
 * pool.h — the process's worker threads, shared by every CPU model.
 * pool_new(nth) gives a model a handle on the one process-wide pool (made
 * at the first handle with max(nth, online CPUs) threads, freed with the
 * last handle); pool_run(fn, ctx) calls fn(ctx, ith, nth) once for every
 * ith in [0, nth) — the caller's thread is ith 0 — and returns when all
 * have finished (one barrier per call). Runs of different models take
 * turns op by op, so several busy executors never put more threads on the
 * CPUs than the pool has. Idle workers spin briefly for the next op, then
 * sleep. Kernels split their rows by (ith, nth), or take chunks where
 * threads may run at different speeds: from one shared counter
 * (pool_chunk, where the order matters) or from per-thread regions
 * (pool_region_chunk, rows streamed from memory). Inside a run, threads
 * may wait for a count the others make (pool_wait_count) instead of a
 * second barrier.
 */
#ifndef INFERD_POOL_H
#define INFERD_POOL_H

#include <stdatomic.h>
#include <sched.h>
#include <stdint.h>

typedef void (*pool_fn)(void *ctx, int ith, int nth);
static inline void pool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}
/* Inside a run: wait until *c (counted up by the run's threads, with
 * release) reaches n. Spins, and gives the CPU away now and then in case
 * the thread it waits for has lost its own (more threads than CPUs). */
static inline void pool_wait_count(atomic_int *c, int n)
{
	for (int i = 1; atomic_load_explicit(c, memory_order_acquire) < n; i++) {
		pool_relax();
		if ((i & 1023) == 0)
			sched_yield();
	}
}
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

/* The next chunk [*a, *b) of n items, taken from *next (0 at the start of
 * the run, shared by its threads): about 32 chunks per thread, so a thread
 * slowed by the machine (another process, a hypervisor) leaves its share to
 * the others instead of holding up the barrier; 0 when none is left. For
 * work whose order matters (the costliest items first). */
static inline int pool_chunk(atomic_int_fast64_t *next, int64_t n, int nth, int64_t *a, int64_t *b)
{
	int64_t per = n / ((int64_t)nth * 32);
	if (per < 1)
		per = 1;
	int64_t c = atomic_fetch_add_explicit(next, 1, memory_order_relaxed) * per;
	if (c >= n)
		return 0;
	*a = c;
	*b = c + per < n ? c + per : n;
	return 1;
}

/* Rows streamed from memory: n items in POOL_REGIONS-at-most contiguous
 * regions, one per thread, each handed out from its own cursor in chunks
 * of a quarter of what is left (at least 1/64 of the region): a thread
 * takes its region's chunks in order (one forward stream for the hardware
 * prefetcher), then helps in the others' from where they are, and the
 * small last chunks leave little for the barrier to wait on. Chunks from
 * one shared counter interleaved the threads' reads: two threads read
 * 40-44 GB/s that way, 50-53 in runs of a megabyte. cur: all 0 at the
 * start of the run. */
enum { POOL_REGIONS = 16 };
static inline int pool_region_chunk(atomic_int_fast64_t *cur, int64_t n, int ith, int nth, int64_t *a, int64_t *b)
{
	int nr = nth < POOL_REGIONS ? nth : POOL_REGIONS;
	for (int k = 0; k < nr; k++) {
		int r = (ith + k) % nr;
		int64_t r0 = n * r / nr, len = n * (r + 1) / nr - r0, least = (len + 63) / 64;
		int64_t c = atomic_load_explicit(&cur[r], memory_order_relaxed), take;
		do {
			if (c >= len)
				break;
			take = (len - c) / 4;
			take = take < least ? least : take;
			take = take < len - c ? take : len - c;
		} while (!atomic_compare_exchange_weak_explicit(&cur[r], &c, c + take, memory_order_relaxed,
								memory_order_relaxed));
		if (c < len) {
			*a = r0 + c;
			*b = r0 + c + take;
			return 1;
		}
	}
	return 0;
}
#endif
