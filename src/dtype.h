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
 *
 * MLX affine (mlx.core.quantize, mode "affine") is not a GGUF type and has
 * no blocks of its own: a row's codes are packed in uint32 words (8 of 4
 * bits or 4 of 8 bits per word, value j at bit (j * bits) % 32 of word
 * j * bits / 32, little-endian), and its groups' scales and biases live in
 * two other tensors (F32, F16 or BF16). Value j = scale * q + bias with the
 * scale and bias of group j / group_size; q is unsigned, 0 .. 2^bits - 1.
 * Its type numbers (DT_MLX4, DT_MLX8) lie outside the GGUF table: dtype_get
 * and dtype_row_bytes do not know them, so no GGUF file can claim them.
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
	/* MLX affine, bits = type - DT_MLX_BASE (not GGUF types) */
	DT_MLX_BASE = 256,
	DT_MLX4 = 260,
	DT_MLX8 = 264,
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

/* ---- MLX affine ---- */
static inline bool dtype_is_mlx(int type) { return type == DT_MLX4 || type == DT_MLX8; }
static inline int dtype_mlx_bits(int type) { return type - DT_MLX_BASE; }
/* A name for any type inferd uses ("Q8_0", "MLX4"), "?" if unknown. */
const char *dtype_name(int type);
/* Dequantize n values (whole groups) of one MLX row: q the packed words
 * (any alignment), scales / biases the row's n / group values of sb_type
 * (F32, F16 or BF16). Each value is computed as (scale * q) + bias in
 * float32, the product rounded before the add (no fused multiply-add), so
 * every kernel can reproduce it bitwise. */
void dtype_mlx_to_f32(int type, const void *q, const void *scales, const void *biases, int sb_type, int group,
		      float *dst, int64_t n);
/* Quantize n float32 values (whole groups) into MLX form: q gets
 * n * bits / 8 bytes, scales and biases n / group values of sb_type. Per
 * group the bias is the minimum rounded down and the scale the range over
 * 2^bits - 1 rounded up (in sb_type), so no code is clipped and every value
 * is within scale / 2 of scale * q + bias (plus the float32 rounding of
 * that sum). False when the row is not whole groups, the type or sb_type
 * is wrong, or a scale or bias does not fit sb_type. */
bool dtype_mlx_from_f32(int type, int group, int sb_type, const float *src, void *q, void *scales, void *biases,
			int64_t n);

#endif
