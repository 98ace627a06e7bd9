/*
 * membw.c — this machine's memory read bandwidth, the ceiling of CPU
 * decoding (every weight is read once per generated token): sums a 1 GiB
 * buffer (far larger than the caches) with 1 thread and with N, and prints
 * GB/s as JSON. Each thread reads its own contiguous share with 32-byte
 * vector loads (AVX2 where the CPU has it; 64-bit loads otherwise, which
 * on fast memory measure the core, not the memory); the best of a few
 * passes counts.
 *   membw [threads]   (default: all online CPUs)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BYTES ((size_t)1 << 30)

struct job {
	const uint64_t *p;
	size_t n;
	uint64_t sum;
};

/* 64-bit sums: a baseline any CPU runs, but on a fast memory system it is
 * held back by one load of 8 bytes per add */
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
/* 32-byte loads, four independent adds in flight: the memory, not the
 * core, sets the pace (the kernels of the CPU backend load this way) */
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

static uint64_t (*sum_fn)(const uint64_t *, size_t) = sum_scalar;

static void *reader(void *arg)
{
	struct job *j = arg;
	j->sum = sum_fn(j->p, j->n);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double read_gb_s(const uint64_t *buf, int nth, uint64_t *check)
{
	double best = 1e30;
	struct job jobs[256];
	pthread_t th[256];
	size_t n = BYTES / 8, per = n / (size_t)nth;
	for (int pass = 0; pass < 4; pass++) {
		double t0 = now_s();
		for (int i = 0; i < nth; i++) {
			jobs[i] = (struct job){buf + per * (size_t)i, per, 0};
			pthread_create(&th[i], NULL, reader, &jobs[i]);
		}
		for (int i = 0; i < nth; i++) {
			pthread_join(th[i], NULL);
			*check += jobs[i].sum;
		}
		double t = now_s() - t0;
		if (t < best)
			best = t;
	}
	return (double)(per * (size_t)nth * 8) / best / 1e9;
}

int main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int nth = argc > 1 ? atoi(argv[1]) : (int)(ncpu > 0 ? ncpu : 1);
	if (nth < 1 || nth > 256) {
		fprintf(stderr, "membw: threads must be 1..256\n");
		return 2;
	}
	uint64_t *buf = malloc(BYTES);
	if (!buf) {
		fprintf(stderr, "membw: out of memory for 1 GiB\n");
		return 1;
	}
	for (size_t i = 0; i < BYTES / 8; i++) /* touch every page, no zero pages */
		buf[i] = i * 0x9e3779b97f4a7c15ull;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		sum_fn = sum_avx2;
#endif
	uint64_t check = 0;
	double one = read_gb_s(buf, 1, &check), all = read_gb_s(buf, nth, &check);
	printf("{\"read_gb_s_1\": %.2f, \"read_gb_s_n\": %.2f, \"threads\": %d, \"check\": %llu}\n", one, all, nth,
	       (unsigned long long)(check & 0xffff));
	free(buf);
	return 0;
}
