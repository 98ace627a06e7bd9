/*
 * qmm.h — weight-row dot products of the CPU backend for every GGUF weight
 * type, against up to four tokens at once.
 *
 * Quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) meet
 * activations quantized to 8 bits (what llama.cpp does too): one float scale
 * per 32 values for the 32-value block types, one per 256 (with sums per 16)
 * for the K types. Products are integer and exact; each block's sum is
 * scaled into 8 float lanes combined in a fixed order at the end, so a
 * token's result depends only on its own row: bitwise the same alone or in
 * any batch, and the same on AVX2 and AVX-512 VNNI (both compute the same
 * integers and the same float sequence), and likewise on aarch64 between
 * baseline NEON and NEON with dotprod. F16 and BF16 rows meet float32
 * activations, converted in registers, two 8-lane accumulators per token.
 *
 * The scalar kernels are the reference: plain C, integer block sums, the
 * float combination in double.
 */
#ifndef INFERD_CPU_QMM_H
#define INFERD_CPU_QMM_H

#include <stddef.h>
#include <stdint.h>

/* QMM_ISA_COUNT: the number of values (tests loop over every set) */
enum qmm_isa { QMM_SCALAR, QMM_AVX2, QMM_AVX512, QMM_NEON, QMM_NEON_DOT, QMM_ISA_COUNT };

/* Activation blocks. 32 values: float d, int16 sum of q, 2 pad bytes, q[32]
 * (40 bytes). 256 values: float d, int16 sums of each 16 and of each 32,
 * q[256] (308). */
enum { QMM_X32 = 40, QMM_X256 = 308 };

/* Bytes of one quantized activation row of `cols` values for weights of
 * type wtype; 0 when wtype takes float32 activations (F32, F16, BF16) or
 * has no kernel here. */
size_t qmm_xbytes(int wtype, int64_t cols);
/* Quantize one row (cols a multiple of the block) for weights of wtype. */
void qmm_quantize(int wtype, const float *x, int64_t cols, void *xq);
/* the same in plain C (the reference; the bytes are the same) */
void qmm_quantize_ref(int wtype, const float *x, int64_t cols, void *xq);
/* The same, with the values each quantized activation stands for (d * q),
 * for tests. */
void qmm_dequantize_x(int wtype, const void *xq, int64_t cols, float *out);

/* out[t] = dot(weight row w, activation row t) for t < nt (1..4); rows of
 * activations are xstride bytes apart (float32 rows for F16/BF16, quantized
 * rows otherwise). */
typedef void (*qmm_fn)(const void *w, const void *x, size_t xstride, int nt, int64_t cols, float *out);
/* The kernel for wtype on isa, or NULL (no such kernel, or the CPU lacks
 * the instructions). */
qmm_fn qmm_get(int wtype, enum qmm_isa isa);
/* The best isa this CPU runs (cpuid; on aarch64 the auxv hwcaps). */
enum qmm_isa qmm_isa_best(void);

/* Row-interleaved weights (qmm_x8.inc: every quantized type, F16 and BF16
 * on CPUs with AVX-512 VNNI; activations as for qmm_fn), in groups of
 * R = qmm_x8_rows(wtype) rows: bytes of one group (0: no such layout here),
 * the repacking of R consecutive rows (row_bytes apart) into it, and the
 * kernel: out[R * t + r] = dot(row r of the group, activation row t) for
 * t < nt (1..qmm_x8_max_nt), each token's results the same whatever nt is. */
size_t qmm_x8_bytes(int wtype, int64_t cols);
void qmm_x8_pack(int wtype, const void *rows, size_t row_bytes, int64_t cols, void *dst);
/* row r (0..R-1) of a group back in the GGUF layout: exactly its bytes */
void qmm_x8_row(int wtype, const void *group, int r, int64_t cols, void *dst);
qmm_fn qmm_x8_get(int wtype);
/* The most tokens one call of qmm_x8_get(wtype) takes: 8 (F16/BF16: 6). */
int qmm_x8_max_nt(int wtype);
/* R: 16 for F16/BF16 (a column of them fills a 512-bit vector) and the
 * 32-value types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (4 codes of 16 rows fill
 * one), 8 for the K types. */
int qmm_x8_rows(int wtype);
const char *qmm_isa_name(enum qmm_isa isa);

/* F16 <-> float32 rows, bitwise those of dtype.c (F16C where the CPU has it) */
void qmm_f16_to_f32(const void *src, float *dst, int64_t n);
void qmm_f32_to_f16(const float *src, void *dst, int64_t n);

#endif
