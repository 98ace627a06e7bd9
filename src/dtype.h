/*
 * dtype.h — tensor element types, numbered as GGUF numbers them, with the
 * block geometry of each and plain reference conversions to and from
 * float32. Block layouts (bytes):
 *   Q8_0  32 values: f16 d, int8 qs[32]                     (34)
 *   Q4_0  32 values: f16 d, uint8 qs[16] (low nibbles first) (18)
 *   Q4_1  32 values: f16 d, f16 m, qs[16]: d*q + m            (20)
 *   Q5_0  32 values: f16 d, u32 qh (5th bits), qs[16]: d*(q-16) (22)
 *   Q5_1  32 values: f16 d, f16 m, u32 qh, qs[16]: d*q + m     (24)
 *   Q4_K 256 values: f16 d, f16 dmin, u8 scales[12], u8 qs[128]       (144)
 *   Q5_K 256 values: f16 d, f16 dmin, u8 scales[12], u8 qh[32], qs[128] (176)
 *   Q6_K 256 values: u8 ql[128], u8 qh[64], i8 scales[16], f16 d      (210)
 */
#ifndef INFERD_DTYPE_H
#define INFERD_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum dtype {
	DT_F32 = 0,
	DT_F16 = 1,
	DT_Q4_0 = 2,
	DT_Q4_1 = 3,
	DT_Q5_0 = 6,
	DT_Q5_1 = 7,
	DT_Q8_0 = 8,
	DT_Q4_K = 12,
	DT_Q5_K = 13,
	DT_Q6_K = 14,
	DT_BF16 = 30,
	DT_COUNT = 40,
};

struct dtype_info {
	const char *name;  /* GGUF's spelling, e.g. "Q8_0" */
	int block;         /* values per block */
	int block_bytes;   /* bytes per block */
	bool supported;    /* inferd can compute with it */
};

/* Info for a GGUF type number; NULL if the number is unknown. The entry of
 * a known but unsupported type (Q2_K, IQ4_XS, ...) has supported = false. */
const struct dtype_info *dtype_get(uint32_t type);
/* Look up by lower/upper-case name ("f16", "Q8_0"); -1 if none. */
int dtype_from_name(const char *name);
/* Bytes of a row of `n` values; false if n is not a whole number of blocks
 * or the type is unknown. */
bool dtype_row_bytes(int type, uint64_t n, uint64_t *bytes);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);    /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);   /* round to nearest even, NaN kept */

/* Dequantize / convert `n` values of `type` at src into dst. */
void dtype_to_f32(int type, const void *src, float *dst, int64_t n);
/* Convert `n` float32 values into `type` (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K); returns false for types without a quantizer or when n
 * is not a whole number of blocks. */
bool dtype_from_f32(int type, const float *src, void *dst, int64_t n);

#endif
