/*
 * membw.h — the memory read-bandwidth probe, the ceiling of CPU decoding
 * (every weight is read once per generated token): nth threads each sum
 * their contiguous share of a buffer far larger than the caches with
 * 32-byte loads (AVX2 where the CPU has it; 64-bit loads otherwise, which
 * on fast memory measure the core, not the memory). Used by bench/membw
 * and by `inferd bench --probe`, which interleaves it with generation.
 */
#ifndef INFERD_MEMBW_H
#define INFERD_MEMBW_H
#include <stddef.h>
#include <stdint.h>

/* One pass over bytes of buf (a multiple of 8 * nth) with nth threads
 * (1..256): the seconds it took, or a negative value when a thread could
 * not start; *sum gets the sum, so the reads cannot be optimized away. */
double membw_pass(const void *buf, size_t bytes, int nth, uint64_t *sum);

#endif
