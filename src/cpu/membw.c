/*
 * membw.c — the read-bandwidth probe (membw.h): one pass, nth threads,
 * each over its own contiguous share, four independent vector adds in
 * flight so that the memory, not the core, sets the pace (the CPU
 * backend's kernels load this way).
 */
#include "cpu/membw.h"

#include <pthread.h>
#include <time.h>

struct job {
	const uint64_t *p;
	size_t n;
	uint64_t sum;
};

/* 64-bit sums: a baseline any CPU runs */
static uint64_t sum_scalar(const uint64_t *p, size_t n)
{
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	for (size_t i = 0; i + 4 <= n; i += 4) {
		s0 += p[i];
		s1 += p[i + 1];
		s2 += p[i + 2];
		s3 += p[i + 3];
	}
	return s0 + s1 + s2 + s3;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n)
{
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	for (size_t i = 0; i + 16 <= n; i += 16) {
		a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
		a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
		a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
		a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
	}
	uint64_t l[4];
	_mm256_storeu_si256((__m256i *)l, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
	return l[0] + l[1] + l[2] + l[3];
}
#endif

static void *reader(void *arg)
{
	struct job *j = arg;
#if defined(__x86_64__) && defined(__GNUC__)
	if (__builtin_cpu_supports("avx2")) {
		j->sum = sum_avx2(j->p, j->n);
		return NULL;
	}
#endif
	j->sum = sum_scalar(j->p, j->n);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double membw_pass(const void *buf, size_t bytes, int nth, uint64_t *sum)
{
	struct job jobs[256];
	pthread_t th[256];
	size_t per = bytes / 8 / (size_t)nth;
	int started = 0;
	if (nth < 1 || nth > 256)
		return -1;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
#endif
	double t0 = now_s();
	for (int i = 0; i < nth; i++) {
		jobs[i] = (struct job){(const uint64_t *)buf + per * (size_t)i, per, 0};
		if (i == 0 || pthread_create(&th[i], NULL, reader, &jobs[i]) == 0)
			started++;
		else
			break;
	}
	if (started == nth)
		reader(&jobs[0]); /* the caller's thread reads the first share */
	for (int i = 1; i < started; i++)
		pthread_join(th[i], NULL);
	double t = now_s() - t0;
	for (int i = 0; i < started; i++)
		*sum += jobs[i].sum;
	return started == nth ? t : -1;
}
