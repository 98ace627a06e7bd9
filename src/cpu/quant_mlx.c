/*
 * quant_mlx.c — AVX2 decoder of MLX affine rows and the fused decode-dot
 * (see quant_mlx.h). Per
 * group the scale and bias are read once; 4-bit: one uint32 word gives 8
 * values (a variable shift by 0, 4, ..., 28 and a mask); 8-bit: two words
 * give 8 values (zero-extended bytes). Each value is scale * q rounded,
 * then + bias rounded (separate multiply and add, never fused), exactly as
 * the reference computes it, so the two are bitwise equal.
 */
#include "cpu/quant_mlx.h"
#include "dtype.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

static float sb_at(int sb_type, const uint8_t *p, int64_t i)
{
	if (sb_type == DT_F32) {
		float f;
		memcpy(&f, p + 4 * i, 4);
		return f;
	}
	uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
	return sb_type == DT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

__attribute__((target("avx2"))) static void mlx_avx2(int type, const void *q, const void *scales,
						    const void *biases, int sb_type, int group, float *dst, int64_t n)
{
	const uint8_t *qb = q;
	const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), m4 = _mm256_set1_epi32(0xF);
	int bits = dtype_mlx_bits(type);
	for (int64_t g = 0; g < n / group; g++) {
		__m256 s = _mm256_set1_ps(sb_at(sb_type, scales, g)), b = _mm256_set1_ps(sb_at(sb_type, biases, g));
		for (int64_t j = g * group; j < (g + 1) * group; j += 8) {
			__m256i v;
			if (bits == 4) {
				uint32_t w;
				memcpy(&w, qb + j / 2, 4);
				v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), shifts), m4);
			} else {
				long long w;
				memcpy(&w, qb + j, 8);
				v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(w));
			}
			__m256 p = _mm256_mul_ps(s, _mm256_cvtepi32_ps(v));
			_mm256_storeu_ps(dst + j, _mm256_add_ps(p, b));
		}
	}
}

/* 8 codes starting at value j of the row, as int32 lanes */
__attribute__((target("avx2"))) static inline __m256i codes8(const uint8_t *qb, int bits, int64_t j)
{
	if (bits == 4) {
		uint32_t w;
		memcpy(&w, qb + j / 2, 4);
		return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w),
							  _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
					_mm256_set1_epi32(0xF));
	}
	long long w;
	memcpy(&w, qb + j, 8);
	return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(w));
}

/* the lanes and the final combine of ops.c's dot4_avx2, with the weight
 * vector decoded in registers (scale * q, then + bias) instead of loaded */
__attribute__((target("avx2,fma"))) static void mlx_dot4_avx2(int type, const void *q, const void *scales,
							     const void *biases, int sb_type, int group, const float *x,
							     int64_t xs, int n, int64_t cols, float *out)
{
	const uint8_t *qb = q;
	int bits = dtype_mlx_bits(type);
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	for (int64_t g = 0; g < cols / group; g++) {
		__m256 s = _mm256_set1_ps(sb_at(sb_type, scales, g)), b = _mm256_set1_ps(sb_at(sb_type, biases, g));
		for (int64_t i = g * group; i < (g + 1) * group; i += 8) {
			__m256 wv = _mm256_add_ps(_mm256_mul_ps(s, _mm256_cvtepi32_ps(codes8(qb, bits, i))), b);
			a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
			if (n > 1)
				a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + xs + i), a1);
			if (n > 2)
				a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 2 * xs + i), a2);
			if (n > 3)
				a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 3 * xs + i), a3);
		}
	}
	__m256 acc[4] = {a0, a1, a2, a3};
	for (int t = 0; t < n; t++) {
		float l[8];
		_mm256_storeu_ps(l, acc[t]);
		out[t] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
	}
}
#endif

ops_mlx_dot4_fn ops_mlx_dot4_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return mlx_dot4_avx2;
#endif
	return NULL;
}

ops_mlx_fn ops_mlx_best(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		return mlx_avx2;
#endif
	return dtype_mlx_to_f32;
}
