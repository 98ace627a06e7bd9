/*
 * qmm.c — see qmm.h. Activation quantization, the scalar reference kernels
 * (one per weight type: integer block sums as the format defines the
 * values, the float combination in double) and the choice of kernels by
 * CPU. The SIMD kernels are qmm_x86.inc, compiled twice below: AVX2 (byte
 * products by maddubs + madd) and AVX-512 VNNI (vpdpbusd on 256-bit
 * vectors); both produce the same integers and the same float sequence.
 * On aarch64 qmm_neon.inc is compiled twice the same way: baseline NEON
 * (every aarch64 CPU) and dotprod (sdot, where the hwcaps have it).
 */
#include "cpu/qmm.h"
#include "dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* activation block views */
struct x32 { float d; int16_t s; int16_t pad; int8_t q[32]; };
struct x256 { float d; int16_t bs[16]; int16_t b32[8]; int8_t q[256]; };
_Static_assert(sizeof(struct x32) == QMM_X32, "x32 layout");
_Static_assert(sizeof(struct x256) == QMM_X256, "x256 layout");

static int xblock(int wtype)
{
	switch (wtype) {
	case DT_Q4_0: case DT_Q4_1: case DT_Q5_0: case DT_Q5_1: case DT_Q8_0: return 32;
	case DT_Q4_K: case DT_Q5_K: case DT_Q6_K: return 256;
	default: return 0;
	}
}

size_t qmm_xbytes(int wtype, int64_t cols)
{
	int b = xblock(wtype);
	if (!b)
		return 0;
	return (size_t)(cols / b) * (b == 32 ? QMM_X32 : QMM_X256);
}

static enum qmm_isa cpu_isa(void);

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* quant_block with AVX2: the same max (NaN ignored), the same products and
 * the same rounding (to nearest even), so the same bytes */
__attribute__((target("avx2,fma"))) static float quant_block_avx2(const float *x, int n, int8_t *q)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 mx = _mm256_setzero_ps();
	for (int i = 0; i < n; i += 8)
		mx = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), mx);
	float l[8], amax = 0;
	_mm256_storeu_ps(l, mx);
	for (int k = 0; k < 8; k++)
		amax = l[k] > amax ? l[k] : amax;
	float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
	const __m256 vid = _mm256_set1_ps(id);
	const __m256i lo = _mm256_set1_epi32(-127), perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	for (int i = 0; i < n; i += 32) {
		__m256i v[4];
		for (int k = 0; k < 4; k++)
			v[k] = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), vid)), lo);
		__m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
		_mm256_storeu_si256((__m256i *)(void *)(q + i), _mm256_permutevar8x32_epi32(p, perm));
	}
	return d;
}
#endif

/* d = max|x| / 127, q = round(x / d): error at most d / 2 per value */
static float quant_block_ref(const float *x, int n, int8_t *q)
{
	float amax = 0;
	for (int i = 0; i < n; i++)
		amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
	float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
	for (int i = 0; i < n; i++) {
		long v = lrintf(x[i] * id);
		q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
	}
	return d;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* AVX2 and F16C here (the AVX-512 set has them too) */
static int x86_avx2(void)
{
	enum qmm_isa isa = cpu_isa();
	return isa == QMM_AVX2 || isa == QMM_AVX512;
}
#endif

static void quantize_with(float (*qb)(const float *, int, int8_t *), int wtype, const float *x, int64_t cols,
			  void *xq)
{
	int b = xblock(wtype);
	if (b == 32) {
		struct x32 *o = xq;
		for (int64_t i = 0; i < cols / 32; i++, x += 32) {
			o[i].d = qb(x, 32, o[i].q);
			int s = 0;
			for (int k = 0; k < 32; k++)
				s += o[i].q[k];
			o[i].s = (int16_t)s;
			o[i].pad = 0;
		}
	} else if (b == 256) {
		struct x256 *o = xq;
		for (int64_t i = 0; i < cols / 256; i++, x += 256) {
			o[i].d = qb(x, 256, o[i].q);
			for (int g = 0; g < 16; g++) {
				int s = 0;
				for (int k = 0; k < 16; k++)
					s += o[i].q[16 * g + k];
				o[i].bs[g] = (int16_t)s;
			}
			for (int g = 0; g < 8; g++)
				o[i].b32[g] = (int16_t)(o[i].bs[2 * g] + o[i].bs[2 * g + 1]);
		}
	}
}

void qmm_quantize(int wtype, const float *x, int64_t cols, void *xq)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (x86_avx2()) {
		quantize_with(quant_block_avx2, wtype, x, cols, xq);
		return;
	}
#endif
	quantize_with(quant_block_ref, wtype, x, cols, xq);
}

void qmm_quantize_ref(int wtype, const float *x, int64_t cols, void *xq)
{
	quantize_with(quant_block_ref, wtype, x, cols, xq);
}

void qmm_dequantize_x(int wtype, const void *xq, int64_t cols, float *out)
{
	int b = xblock(wtype);
	for (int64_t i = 0; i < cols / (b ? b : 1); i++)
		for (int k = 0; k < b; k++) {
			if (b == 32) {
				const struct x32 *x = (const struct x32 *)xq + i;
				out[i * 32 + k] = x->d * (float)x->q[k];
			} else {
				const struct x256 *x = (const struct x256 *)xq + i;
				out[i * 256 + k] = x->d * (float)x->q[k];
			}
		}
}

/* ---- scalar reference: codes of one 32-value block, as the format defines them ---- */

/* codes[k] of a 32-value block and its value = scale * code + offset */
static void codes32(int wtype, const uint8_t *b, int *c, double *scale, double *offset)
{
	double d = f16_to_f32(rd16(b));
	const uint8_t *qs;
	uint32_t qh = 0;
	switch (wtype) {
	case DT_Q8_0:
		for (int k = 0; k < 32; k++)
			c[k] = (int8_t)b[2 + k];
		*scale = d, *offset = 0;
		return;
	case DT_Q4_0: qs = b + 2; *scale = d; *offset = -8 * d; break;
	case DT_Q4_1: qs = b + 4; *scale = d; *offset = f16_to_f32(rd16(b + 2)); break;
	case DT_Q5_0: qh = rd32(b + 2); qs = b + 6; *scale = d; *offset = -16 * d; break;
	default: /* Q5_1 */ qh = rd32(b + 4); qs = b + 8; *scale = d; *offset = f16_to_f32(rd16(b + 2)); break;
	}
	for (int k = 0; k < 16; k++) {
		c[k] = (qs[k] & 0xF) | (int)(((qh >> k) & 1) << 4);
		c[k + 16] = (qs[k] >> 4) | (int)(((qh >> (k + 16)) & 1) << 4);
	}
}

static double ref_row32(int wtype, const uint8_t *w, const struct x32 *x, int64_t nb)
{
	size_t bytes = dtype_get((uint32_t)wtype)->block_bytes;
	double sum = 0;
	for (int64_t i = 0; i < nb; i++, w += bytes) {
		int c[32];
		double scale, offset;
		codes32(wtype, w, c, &scale, &offset);
		long isum = 0;
		for (int k = 0; k < 32; k++)
			isum += (long)c[k] * x[i].q[k];
		sum += (double)x[i].d * (scale * (double)isum + offset * (double)x[i].s);
	}
	return sum;
}

/* Q4_K / Q5_K: the 8 six-bit scales and mins packed in 12 bytes (bytes
 * 0-3: scales 0-3 and the top bits of scales 4-7; 4-7: mins 0-3 and the
 * top bits of mins 4-7; 8-11: the low nibbles of scales 4-7 and mins 4-7) */
static inline void scales_k4(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
	uint32_t w0, w1, w2;
	memcpy(&w0, q, 4);
	memcpy(&w1, q + 4, 4);
	memcpy(&w2, q + 8, 4);
	uint32_t s03 = w0 & 0x3f3f3f3fu, m03 = w1 & 0x3f3f3f3fu;
	uint32_t s47 = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
	uint32_t m47 = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
	memcpy(sc, &s03, 4);
	memcpy(sc + 4, &s47, 4);
	memcpy(mn, &m03, 4);
	memcpy(mn + 4, &m47, 4);
}

/* codes of a 256-value K block, per 16 a scale (and for Q4_K/Q5_K a min):
 * value k = d * sc[k/16] * code[k] - dmin * mn[k/16]  (Q6_K: code - 32) */
static void codes256(int wtype, const uint8_t *b, int *c, int *sc, int *mn, double *d, double *dmin)
{
	if (wtype == DT_Q6_K) {
		const uint8_t *ql = b, *qh = b + 128;
		*d = f16_to_f32(rd16(b + 208));
		*dmin = 0;
		for (int h = 0; h < 2; h++, ql += 64, qh += 32)
			for (int l = 0; l < 32; l++) {
				c[128 * h + l] = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				c[128 * h + l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				c[128 * h + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				c[128 * h + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
			}
		for (int k = 0; k < 16; k++)
			sc[k] = (int8_t)b[192 + k], mn[k] = 0;
		return;
	}
	*d = f16_to_f32(rd16(b));
	*dmin = f16_to_f32(rd16(b + 2));
	const uint8_t *scb = b + 4, *qh = b + 16, *ql = wtype == DT_Q5_K ? b + 48 : b + 16;
	uint8_t s8[8], m8[8];
	scales_k4(scb, s8, m8);
	for (int j = 0; j < 8; j++) {
		sc[2 * j] = sc[2 * j + 1] = s8[j];
		mn[2 * j] = mn[2 * j + 1] = m8[j];
		const uint8_t *q = ql + 32 * (j / 2);
		for (int l = 0; l < 32; l++) {
			int v = j % 2 ? q[l] >> 4 : q[l] & 0xF;
			if (wtype == DT_Q5_K)
				v += ((qh[l] >> j) & 1) << 4;
			c[32 * j + l] = v;
		}
	}
}

static double ref_row256(int wtype, const uint8_t *w, const struct x256 *x, int64_t nb)
{
	size_t bytes = dtype_get((uint32_t)wtype)->block_bytes;
	double sum = 0;
	for (int64_t i = 0; i < nb; i++, w += bytes) {
		int c[256], sc[16], mn[16];
		double d, dmin;
		codes256(wtype, w, c, sc, mn, &d, &dmin);
		long isum = 0, msum = 0;
		for (int g = 0; g < 16; g++) {
			long s = 0;
			for (int k = 0; k < 16; k++)
				s += (long)c[16 * g + k] * x[i].q[16 * g + k];
			isum += s * sc[g];
			msum += (long)mn[g] * x[i].bs[g];
		}
		sum += (double)x[i].d * (d * (double)isum - dmin * (double)msum);
	}
	return sum;
}

#define REF_KERNEL(name, body)                                                                                   \
	static void name(const void *w, const void *x, size_t xstride, int nt, int64_t cols, float *out)       \
	{                                                                                                        \
		for (int t = 0; t < nt; t++) {                                                                   \
			const void *xt = (const uint8_t *)x + (size_t)t * xstride;                               \
			out[t] = (float)(body);                                                                  \
		}                                                                                                \
	}
REF_KERNEL(ref_q8_0, ref_row32(DT_Q8_0, w, xt, cols / 32))
REF_KERNEL(ref_q4_0, ref_row32(DT_Q4_0, w, xt, cols / 32))
REF_KERNEL(ref_q4_1, ref_row32(DT_Q4_1, w, xt, cols / 32))
REF_KERNEL(ref_q5_0, ref_row32(DT_Q5_0, w, xt, cols / 32))
REF_KERNEL(ref_q5_1, ref_row32(DT_Q5_1, w, xt, cols / 32))
REF_KERNEL(ref_q4_k, ref_row256(DT_Q4_K, w, xt, cols / 256))
REF_KERNEL(ref_q5_k, ref_row256(DT_Q5_K, w, xt, cols / 256))
REF_KERNEL(ref_q6_k, ref_row256(DT_Q6_K, w, xt, cols / 256))

static double ref_rowf(int wtype, const uint8_t *w, const float *x, int64_t cols)
{
	double sum = 0;
	for (int64_t k = 0; k < cols; k++) {
		float v = wtype == DT_F16 ? f16_to_f32(rd16(w + 2 * k)) : bf16_to_f32(rd16(w + 2 * k));
		sum += (double)v * x[k];
	}
	return sum;
}
REF_KERNEL(ref_f16, ref_rowf(DT_F16, w, xt, cols))
REF_KERNEL(ref_bf16, ref_rowf(DT_BF16, w, xt, cols))

static qmm_fn ref_get(int wtype)
{
	switch (wtype) {
	case DT_Q8_0: return ref_q8_0;
	case DT_Q4_0: return ref_q4_0;
	case DT_Q4_1: return ref_q4_1;
	case DT_Q5_0: return ref_q5_0;
	case DT_Q5_1: return ref_q5_1;
	case DT_Q4_K: return ref_q4_k;
	case DT_Q5_K: return ref_q5_k;
	case DT_Q6_K: return ref_q6_k;
	case DT_F16: return ref_f16;
	case DT_BF16: return ref_bf16;
	default: return NULL;
	}
}


/* ---- SIMD kernels, compiled twice ---- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define QK_TARGET __attribute__((target("avx2,fma,f16c")))
#define QK(name) name##_avx2
#define QK_VNNI 0
#include "cpu/qmm_x86.inc"
#undef QK_TARGET
#undef QK
#undef QK_VNNI
#define QK_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
#define QK(name) name##_vnni
#define QK_VNNI 1
#include "cpu/qmm_x86.inc"
#include "cpu/qmm_x8.inc"
#endif

#if defined(__aarch64__) && defined(__GNUC__)
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP /* older C libraries: the kernel's bit */
#define HWCAP_ASIMDDP (1 << 20)
#endif
#define QK_TARGET
#define QK(name) name##_neon
#define QK_DOT 0
#include "cpu/qmm_neon.inc"
#undef QK_TARGET
#undef QK
#undef QK_DOT
#if defined(__clang__)
#define QK_TARGET __attribute__((target("dotprod")))
#else
#define QK_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define QK(name) name##_ndot
#define QK_DOT 1
#include "cpu/qmm_neon.inc"
#endif

size_t qmm_x8_bytes(int wtype, int64_t cols)
{
#if defined(__x86_64__) && defined(__GNUC__)
	int bs = wtype == DT_F16 || wtype == DT_BF16 ? 1 : xblock(wtype);
	if (bs && x8_block_bytes(wtype) && cpu_isa() == QMM_AVX512)
		return (size_t)(cols / bs) * x8_block_bytes(wtype);
#else
	(void)wtype, (void)cols;
#endif
	return 0;
}

void qmm_x8_pack(int wtype, const void *rows, size_t row_bytes, int64_t cols, void *dst)
{
#if defined(__x86_64__) && defined(__GNUC__)
	x8_pack(wtype, rows, row_bytes, cols, dst);
#else
	(void)wtype, (void)rows, (void)row_bytes, (void)cols, (void)dst;
#endif
}

void qmm_x8_row(int wtype, const void *group, int r, int64_t cols, void *dst)
{
#if defined(__x86_64__) && defined(__GNUC__)
	x8_unpack_row(wtype, group, r, cols, dst);
#else
	(void)wtype, (void)group, (void)r, (void)cols, (void)dst;
#endif
}

qmm_fn qmm_x8_get(int wtype)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (cpu_isa() == QMM_AVX512)
		switch (wtype) {
		case DT_Q8_0: return x8_q8_0_e;
		case DT_Q4_0: return x8_q4_0_e;
		case DT_Q4_1: return x8_q4_1_e;
		case DT_Q5_0: return x8_q5_0_e;
		case DT_Q5_1: return x8_q5_1_e;
		case DT_Q4_K: return x8_q4_k_e;
		case DT_Q5_K: return x8_q5_k_e;
		case DT_Q6_K: return x8_q6_k_e;
		case DT_F16: return x8_f16_e;
		case DT_BF16: return x8_bf16_e;
		default: break;
		}
#else
	(void)wtype;
#endif
	return NULL;
}

int qmm_x8_max_nt(int wtype)
{
	return wtype == DT_F16 || wtype == DT_BF16 ? 6 : 8;
}

int qmm_x8_rows(int wtype)
{
#if defined(__x86_64__) && defined(__GNUC__)
	return x8_rows(wtype);
#else
	(void)wtype;
	return 8;
#endif
}

/* what this CPU runs (qmm_isa_best lowers it by INFERD_CPU_ISA) */
static enum qmm_isa cpu_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	/* every AVX2 CPU has F16C (clang cannot ask for it by name here) */
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
		    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
			return QMM_AVX512;
		return QMM_AVX2;
	}
#endif
#if defined(__aarch64__) && defined(__GNUC__)
	return getauxval(AT_HWCAP) & HWCAP_ASIMDDP ? QMM_NEON_DOT : QMM_NEON;
#endif
	return QMM_SCALAR;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,f16c"))) static void h2f_f16c(const uint16_t *s, float *d, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + i))));
	for (; i < n; i++)
		d[i] = f16_to_f32(s[i]);
}

__attribute__((target("avx2,f16c"))) static void f2h_f16c(const float *s, uint16_t *d, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(void *)(d + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	for (; i < n; i++)
		d[i] = f32_to_f16(s[i]);
}
#endif

void qmm_f16_to_f32(const void *src, float *dst, int64_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (x86_avx2()) {
		h2f_f16c(src, dst, n);
		return;
	}
#endif
	dtype_to_f32(DT_F16, src, dst, n);
}

void qmm_f32_to_f16(const float *src, void *dst, int64_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (x86_avx2()) {
		f2h_f16c(src, dst, n);
		return;
	}
#endif
	dtype_from_f32(DT_F16, src, dst, n);
}

enum qmm_isa qmm_isa_best(void)
{
	enum qmm_isa isa = cpu_isa();
	const char *e = getenv("INFERD_CPU_ISA");
	if (e && !strcmp(e, "scalar"))
		return QMM_SCALAR;
#if defined(__aarch64__) && defined(__GNUC__)
	if (e && !strcmp(e, "neon") && isa > QMM_NEON)
		return QMM_NEON;
	return isa;
#endif
	if (e && !strcmp(e, "avx2") && isa > QMM_AVX2)
		return QMM_AVX2;
	return isa;
}

const char *qmm_isa_name(enum qmm_isa isa)
{
	if (isa == QMM_NEON || isa == QMM_NEON_DOT)
		return isa == QMM_NEON ? "neon" : "neon-dotprod";
	return isa == QMM_AVX512 ? "avx512-vnni" : isa == QMM_AVX2 ? "avx2" : "scalar";
}

qmm_fn qmm_get(int wtype, enum qmm_isa isa)
{
	if (isa == QMM_SCALAR)
		return ref_get(wtype);
#if defined(__x86_64__) && defined(__GNUC__)
	if (isa > cpu_isa())
		return NULL;
	return isa == QMM_AVX512 ? get_vnni(wtype) : get_avx2(wtype);
#elif defined(__aarch64__) && defined(__GNUC__)
	if (isa == QMM_NEON)
		return get_neon(wtype);
	return isa == QMM_NEON_DOT && cpu_isa() == QMM_NEON_DOT ? get_ndot(wtype) : NULL;
#else
	return NULL;
#endif
}
