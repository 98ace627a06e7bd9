/*
 * membw.c — this machine's memory read bandwidth, the ceiling of CPU
 * decoding (every weight is read once per generated token): sums a 1 GiB
 * buffer (far larger than the caches) with 1 thread and with N through the
 * library's probe (src/cpu/membw.c), and prints GB/s as JSON; the best of
 * four passes counts.
 *   membw [threads]   (default: all online CPUs)
 */
#include "cpu/membw.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BYTES ((size_t)1 << 30)

static double read_gb_s(const uint64_t *buf, int nth, uint64_t *check)
{
	double best = 1e30;
	size_t bytes = BYTES / (8 * (size_t)nth) * (8 * (size_t)nth);
	for (int pass = 0; pass < 4; pass++) {
		double t = membw_pass(buf, bytes, nth, check);
		if (t < 0) {
			fprintf(stderr, "membw: could not start %d threads\n", nth);
			exit(1);
		}
		if (t < best)
			best = t;
	}
	return (double)bytes / best / 1e9;
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
	uint64_t check = 0;
	double one = read_gb_s(buf, 1, &check), all = read_gb_s(buf, nth, &check);
	printf("{\"read_gb_s_1\": %.2f, \"read_gb_s_n\": %.2f, \"threads\": %d, \"check\": %llu}\n", one, all, nth,
	       (unsigned long long)(check & 0xffff));
	free(buf);
	return 0;
}
