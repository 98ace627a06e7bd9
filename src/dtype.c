/*
 * dtype.c — type table and reference (scalar) conversions. These are the
 * definitions the fast kernels are tested against; they favour clarity.
 */
#include "dtype.h"

#include <math.h>
#include <string.h>
#include <strings.h>

static const struct dtype_info infos[DT_COUNT] = {
	[0] = {"F32", 1, 4, true},
	[1] = {"F16", 1, 2, true},
	[2] = {"Q4_0", 32, 18, true},
	[3] = {"Q4_1", 32, 20, true},
	[6] = {"Q5_0", 32, 22, true},
	[7] = {"Q5_1", 32, 24, true},
	[8] = {"Q8_0", 32, 34, true},
	[9] = {"Q8_1", 32, 36, false},
	[10] = {"Q2_K", 256, 84, false},
	[11] = {"Q3_K", 256, 110, false},
	[12] = {"Q4_K", 256, 144, true},
	[13] = {"Q5_K", 256, 176, true},
	[14] = {"Q6_K", 256, 210, true},
	[15] = {"Q8_K", 256, 292, false},
	[16] = {"IQ2_XXS", 256, 66, false},
	[17] = {"IQ2_XS", 256, 74, false},
	[18] = {"IQ3_XXS", 256, 98, false},
	[19] = {"IQ1_S", 256, 50, false},
	[20] = {"IQ4_NL", 32, 18, false},
	[21] = {"IQ3_S", 256, 110, false},
	[22] = {"IQ2_S", 256, 82, false},
	[23] = {"IQ4_XS", 256, 136, false},
	[24] = {"I8", 1, 1, false},
	[25] = {"I16", 1, 2, false},
	[26] = {"I32", 1, 4, false},
	[27] = {"I64", 1, 8, false},
	[28] = {"F64", 1, 8, false},
	[29] = {"IQ1_M", 256, 56, false},
	[30] = {"BF16", 1, 2, true},
	[34] = {"TQ1_0", 256, 54, false},
	[35] = {"TQ2_0", 256, 66, false},
	[39] = {"MXFP4", 32, 17, false},
};

const struct dtype_info *dtype_get(uint32_t type)
{
	if (type >= DT_COUNT || !infos[type].name)
		return NULL;
	return &infos[type];
}

int dtype_from_name(const char *name)
{
	for (int i = 0; i < DT_COUNT; i++)
		if (infos[i].name && strcasecmp(infos[i].name, name) == 0)
			return i;
	return -1;
}

bool dtype_row_bytes(int type, uint64_t n, uint64_t *bytes)
{
	const struct dtype_info *t = dtype_get((uint32_t)type);
	if (!t || n % (uint64_t)t->block)
		return false;
	return !__builtin_mul_overflow(n / (uint64_t)t->block, (uint64_t)t->block_bytes, bytes);
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0) {
		/* zero or subnormal: man * 2^-24, exact in float */
		float v = (float)man * 0x1p-24f;
		return sign ? -v : v;
	}
	if (exp == 31)
		return u2f(sign | 0x7f800000u | (man << 13));
	return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f)
{
	uint32_t u = f2u(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t au = u & 0x7fffffffu;
	if (au >= 0x7f800000u) /* inf or nan */
		return sign | 0x7c00 | (au > 0x7f800000u ? 0x200 : 0);
	if (au >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
		return sign | 0x7c00;
	if (au < 0x38800000u) {
		/* result is subnormal or zero: round au * 2^24 to an integer */
		float a = u2f(au) * 0x1p24f;
		return sign | (uint16_t)lrintf(a); /* default rounding: nearest even */
	}
	uint32_t man = au & 0x7fffff, exp = (au >> 23) - 112;
	uint32_t h = (exp << 10) | (man >> 13);
	uint32_t rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;
	return sign | (uint16_t)h;
}

float bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f)
{
	uint32_t u = f2u(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

static void deq_q8_0(const uint8_t *b, float *y)
{
	float d = f16_to_f32(rd16(b));
	const int8_t *q = (const int8_t *)(b + 2);
	for (int j = 0; j < 32; j++)
		y[j] = (float)q[j] * d;
}

static void deq_q4_0(const uint8_t *b, float *y)
{
	float d = f16_to_f32(rd16(b));
	const uint8_t *q = b + 2;
	for (int j = 0; j < 16; j++) {
		y[j] = (float)((q[j] & 0xF) - 8) * d;
		y[j + 16] = (float)((q[j] >> 4) - 8) * d;
	}
}

/* Q4_1, Q5_0, Q5_1: value j < 16 from the low nibble of qs[j], value
 * j + 16 from the high nibble; Q5's fifth bit of value j is bit j of qh. */
static void deq_q4_1(const uint8_t *b, float *y)
{
	float d = f16_to_f32(rd16(b)), m = f16_to_f32(rd16(b + 2));
	const uint8_t *q = b + 4;
	for (int j = 0; j < 16; j++) {
		y[j] = (float)(q[j] & 0xF) * d + m;
		y[j + 16] = (float)(q[j] >> 4) * d + m;
	}
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void deq_q5(const uint8_t *b, float *y, int has_min)
{
	float d = f16_to_f32(rd16(b)), m = has_min ? f16_to_f32(rd16(b + 2)) : 0;
	uint32_t qh = rd32(b + (has_min ? 4 : 2));
	const uint8_t *q = b + (has_min ? 8 : 6);
	for (int j = 0; j < 16; j++) {
		int x0 = (q[j] & 0xF) | (int)(((qh >> j) & 1) << 4), x1 = (q[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
		if (has_min) {
			y[j] = (float)x0 * d + m;
			y[j + 16] = (float)x1 * d + m;
		} else {
			y[j] = (float)(x0 - 16) * d;
			y[j + 16] = (float)(x1 - 16) * d;
		}
	}
}

static void deq_q5_0(const uint8_t *b, float *y) { deq_q5(b, y, 0); }
static void deq_q5_1(const uint8_t *b, float *y) { deq_q5(b, y, 1); }

static void deq_q4_k(const uint8_t *b, float *y)
{
	float d = f16_to_f32(rd16(b)), dmin = f16_to_f32(rd16(b + 2));
	const uint8_t *sc = b + 4, *q = b + 16;
	for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
		uint8_t s, m;
		get_scale_min_k4(is, sc, &s, &m);
		float d1 = d * s, m1 = dmin * m;
		get_scale_min_k4(is + 1, sc, &s, &m);
		float d2 = d * s, m2 = dmin * m;
		for (int l = 0; l < 32; l++) {
			*y++ = d1 * (float)(q[l] & 0xF) - m1;
		}
		for (int l = 0; l < 32; l++)
			*y++ = d2 * (float)(q[l] >> 4) - m2;
	}
}

static void deq_q5_k(const uint8_t *b, float *y)
{
	float d = f16_to_f32(rd16(b)), dmin = f16_to_f32(rd16(b + 2));
	const uint8_t *sc = b + 4, *qh = b + 16, *ql = b + 48;
	uint8_t u1 = 1, u2 = 2;
	for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
		uint8_t s, m;
		get_scale_min_k4(is, sc, &s, &m);
		float d1 = d * s, m1 = dmin * m;
		get_scale_min_k4(is + 1, sc, &s, &m);
		float d2 = d * s, m2 = dmin * m;
		for (int l = 0; l < 32; l++)
			*y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
		for (int l = 0; l < 32; l++)
			*y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
	}
}

static void deq_q6_k(const uint8_t *b, float *y)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = (const int8_t *)(b + 192);
	float d = f16_to_f32(rd16(b + 208));
	for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
			int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
			int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
			int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
			y[l] = d * (float)sc[is + 0] * (float)q1;
			y[l + 32] = d * (float)sc[is + 2] * (float)q2;
			y[l + 64] = d * (float)sc[is + 4] * (float)q3;
			y[l + 96] = d * (float)sc[is + 6] * (float)q4;
		}
	}
}

void dtype_to_f32(int type, const void *src, float *dst, int64_t n)
{
	const uint8_t *s = src;
	switch (type) {
	case DT_F32:
		memcpy(dst, src, (size_t)n * 4);
		return;
	case DT_F16:
		for (int64_t i = 0; i < n; i++)
			dst[i] = f16_to_f32(rd16(s + 2 * i));
		return;
	case DT_BF16:
		for (int64_t i = 0; i < n; i++)
			dst[i] = bf16_to_f32(rd16(s + 2 * i));
		return;
	default:
		break;
	}
	if (dtype_is_mlx(type)) { /* needs its scales and biases: dtype_mlx_to_f32 */
		for (int64_t i = 0; i < n; i++)
			dst[i] = NAN;
		return;
	}
	void (*deq)(const uint8_t *, float *) = NULL;
	switch (type) {
	case DT_Q8_0: deq = deq_q8_0; break;
	case DT_Q4_0: deq = deq_q4_0; break;
	case DT_Q4_1: deq = deq_q4_1; break;
	case DT_Q5_0: deq = deq_q5_0; break;
	case DT_Q5_1: deq = deq_q5_1; break;
	case DT_Q4_K: deq = deq_q4_k; break;
	case DT_Q5_K: deq = deq_q5_k; break;
	case DT_Q6_K: deq = deq_q6_k; break;
	default: return;
	}
	const struct dtype_info *t = dtype_get((uint32_t)type);
	for (int64_t i = 0; i < n / t->block; i++)
		deq(s + i * t->block_bytes, dst + i * t->block);
}

/* Q8_0 with the scale that minimises the block's squared error: starting
 * from amax / 127 (llama.cpp's choice) and a few nearby scales, refit the
 * scale by least squares for the rounded values, round it to f16 and keep
 * the best. Decoders see an ordinary Q8_0 block. */
static float q8_err(const float *x, float d, int8_t *q)
{
	float id = d != 0 ? 1.0f / d : 0.0f, e = 0;
	for (int j = 0; j < 32; j++) {
		float v = roundf(x[j] * id);
		v = v > 127 ? 127 : v < -127 ? -127 : v;
		q[j] = (int8_t)v;
		e += (x[j] - v * d) * (x[j] - v * d);
	}
	return e;
}

static void quant_q8_0(const float *x, uint8_t *b)
{
	float amax = 0;
	for (int j = 0; j < 32; j++)
		amax = fmaxf(amax, fabsf(x[j]));
	int8_t q[32], bq[32];
	float best_d = f16_to_f32(f32_to_f16(amax / 127.0f));
	float best = q8_err(x, best_d, bq);
	for (int k = -6; k <= 6 && amax > 0; k++) {
		float d0 = amax / 127.0f * (1.0f + 0.004f * (float)k);
		q8_err(x, d0, q);
		float sxq = 0, sqq = 0;
		for (int j = 0; j < 32; j++) {
			sxq += x[j] * q[j];
			sqq += (float)q[j] * q[j];
		}
		if (sqq == 0)
			continue;
		float d = f16_to_f32(f32_to_f16(sxq / sqq));
		float e = q8_err(x, d, q);
		if (e < best) {
			best = e;
			best_d = d;
			memcpy(bq, q, 32);
		}
	}
	wr16(b, f32_to_f16(best_d));
	memcpy(b + 2, bq, 32);
}

static void quant_q4_0(const float *x, uint8_t *b)
{
	float amax = 0, max = 0;
	for (int j = 0; j < 32; j++)
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
	wr16(b, f32_to_f16(d));
	for (int j = 0; j < 16; j++) {
		int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
		q0 = q0 > 15 ? 15 : q0;
		q1 = q1 > 15 ? 15 : q1;
		b[2 + j] = (uint8_t)(q0 | (q1 << 4));
	}
}

/* ---- K-quants: 256 values per block, a float16 scale (and min) per block,
 * 6-bit (Q4_K, Q5_K) or 8-bit (Q6_K) scales per sub-block. Each sub-block
 * takes the range it needs; the integer sub-scales are then fixed and the
 * values re-quantized against the scales as they will be decoded. */
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Q4_K (nmax 15) and Q5_K (nmax 31): value = d*sc*q - dmin*m, q in [0, nmax] */
static void quant_k45(const float *x, uint8_t *b, int nmax)
{
	float sub_s[8], sub_m[8], maxs = 0, maxm = 0;
	for (int j = 0; j < 8; j++) {
		float mn = x[32 * j], mx = x[32 * j];
		for (int l = 1; l < 32; l++) {
			mn = fminf(mn, x[32 * j + l]);
			mx = fmaxf(mx, x[32 * j + l]);
		}
		mn = fminf(mn, 0.0f); /* the offset only ever lowers values */
		float sc0 = (mx - mn) / (float)nmax, m0 = -mn, sc_r = sc0, m_r = m0;
		/* refine: least-squares scale and offset for the codes they give,
		 * a few rounds (the offset stays >= 0) */
		for (int it = 0; it < 4 && sc0 > 0; it++) {
			double sq = 0, sqq = 0, sx = 0, sxq = 0;
			for (int l = 0; l < 32; l++) {
				float xv = x[32 * j + l];
				int q = clampi((int)lrintf((xv + m0) / sc0), 0, nmax);
				sq += q;
				sqq += (double)q * q;
				sx += xv;
				sxq += (double)xv * q;
			}
			double den = sqq - sq * sq / 32, ns, nm;
			if (den <= 0)
				break;
			ns = (sxq - sx * sq / 32) / den;
			nm = (ns * sq - sx) / 32;
			if (nm < 0) {
				nm = 0;
				ns = sqq > 0 ? sxq / sqq : ns;
			}
			if (!(ns > 0))
				break;
			sc0 = (float)ns;
			m0 = (float)nm;
		}
		/* keep the refit only where it lowers this sub-block's error */
		double e_r = 0, e_f = 0;
		for (int l = 0; l < 32 && sc_r > 0 && sc0 > 0; l++) {
			float xv = x[32 * j + l];
			float a1 = sc_r * (float)clampi((int)lrintf((xv + m_r) / sc_r), 0, nmax) - m_r;
			float a2 = sc0 * (float)clampi((int)lrintf((xv + m0) / sc0), 0, nmax) - m0;
			e_r += (double)(a1 - xv) * (a1 - xv);
			e_f += (double)(a2 - xv) * (a2 - xv);
		}
		sub_s[j] = e_f < e_r ? sc0 : sc_r;
		sub_m[j] = e_f < e_r ? m0 : m_r;
		maxs = fmaxf(maxs, sub_s[j]);
		maxm = fmaxf(maxm, sub_m[j]);
	}
	float d = f16_to_f32(f32_to_f16(maxs / 63.0f)), dmin = f16_to_f32(f32_to_f16(maxm / 63.0f));
	uint8_t sc[8], m[8];
	for (int j = 0; j < 8; j++) {
		sc[j] = (uint8_t)(d > 0 ? clampi((int)lrintf(sub_s[j] / d), 0, 63) : 0);
		m[j] = (uint8_t)(dmin > 0 ? clampi((int)lrintf(sub_m[j] / dmin), 0, 63) : 0);
	}
	wr16(b, f32_to_f16(d));
	wr16(b + 2, f32_to_f16(dmin));
	uint8_t *q = b + 4;
	memset(q, 0, 12);
	for (int j = 0; j < 8; j++) {
		if (j < 4) {
			q[j] |= sc[j] & 63;
			q[j + 4] |= m[j] & 63;
		} else {
			q[j + 4] = (uint8_t)((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
			q[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
			q[j] |= (uint8_t)((m[j] >> 4) << 6);
		}
	}
	int k5 = nmax == 31;
	uint8_t *qh = b + 16, *qs = b + (k5 ? 48 : 16);
	if (k5)
		memset(qh, 0, 32);
	memset(qs, 0, 128);
	for (int j = 0; j < 8; j++) {
		/* the scale and offset exactly as dequantization computes them */
		float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
		for (int l = 0; l < 32; l++) {
			int v = d1 > 0 ? clampi((int)lrintf((x[32 * j + l] + m1) / d1), 0, nmax) : 0;
			int g = j / 2, hi = j % 2;
			qs[32 * g + l] |= (uint8_t)((v & 0xF) << (hi ? 4 : 0));
			if (k5 && (v & 16))
				qh[l] |= (uint8_t)(1 << j);
		}
	}
}

/* Q6_K: value = d * sc * (q - 32), q in [0, 63], 16 sub-blocks of 16 */
static void quant_q6_k(const float *x, uint8_t *b)
{
	float sub[16], amax = 0;
	for (int s = 0; s < 16; s++) {
		float best = 0;
		for (int l = 0; l < 16; l++)
			if (fabsf(x[16 * s + l]) > fabsf(best))
				best = x[16 * s + l];
		sub[s] = best / -32.0f; /* the largest magnitude maps to -32 */
		amax = fmaxf(amax, fabsf(sub[s]));
	}
	float d = f16_to_f32(f32_to_f16(amax / 127.0f));
	uint8_t *ql = b, *qh = b + 128;
	int8_t *sc = (int8_t *)(b + 192);
	memset(b, 0, 210);
	for (int s = 0; s < 16; s++)
		sc[s] = (int8_t)(d > 0 ? clampi((int)lrintf(sub[s] / d), -127, 127) : 0);
	wr16(b + 208, f32_to_f16(d));
	for (int i = 0; i < 256; i++) {
		float ds = d * (float)sc[i / 16];
		int v = ds != 0 ? clampi((int)lrintf(x[i] / ds), -32, 31) + 32 : 32;
		int half = i / 128, k = (i % 128) / 32, l = i % 32;
		uint8_t *qlb = ql + half * 64 + l + (k & 1) * 32;
		*qlb |= (uint8_t)((v & 0xF) << (k >= 2 ? 4 : 0));
		qh[half * 32 + l] |= (uint8_t)((v >> 4) << (2 * k));
	}
}

/* Q4_1 / Q5_1: d = (max - min) / (2^b - 1), m = min; Q5_0: like Q4_0 with
 * the value of largest magnitude at -16 */
static void quant_q451(const float *x, uint8_t *b, int bits, int has_min)
{
	float mn = x[0], mx = x[0], amax = 0, big = 0;
	for (int j = 0; j < 32; j++) {
		mn = fminf(mn, x[j]);
		mx = fmaxf(mx, x[j]);
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			big = x[j];
		}
	}
	int nmax = (1 << bits) - 1;
	float d = has_min ? (mx - mn) / (float)nmax : big / -16.0f;
	uint16_t dh = f32_to_f16(d), mh = f32_to_f16(mn);
	float dd = f16_to_f32(dh), mm = has_min ? f16_to_f32(mh) : 0;
	uint8_t q[32];
	for (int j = 0; j < 32; j++) {
		float v = dd != 0 ? (has_min ? (x[j] - mm) / dd : x[j] / dd + 16.0f) : (has_min ? 0.0f : 16.0f);
		long r = lrintf(v);
		q[j] = (uint8_t)(r < 0 ? 0 : r > nmax ? nmax : r);
	}
	wr16(b, dh);
	int off = 2;
	if (has_min) {
		wr16(b + 2, mh);
		off = 4;
	}
	if (bits == 5) {
		uint32_t qh = 0;
		for (int j = 0; j < 32; j++)
			qh |= (uint32_t)((q[j] >> 4) & 1) << (j < 16 ? j : j);
		b[off] = (uint8_t)qh;
		b[off + 1] = (uint8_t)(qh >> 8);
		b[off + 2] = (uint8_t)(qh >> 16);
		b[off + 3] = (uint8_t)(qh >> 24);
		off += 4;
	}
	for (int j = 0; j < 16; j++)
		b[off + j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

bool dtype_from_f32(int type, const float *src, void *dst, int64_t n)
{
	uint8_t *d = dst;
	switch (type) {
	case DT_F32:
		memcpy(dst, src, (size_t)n * 4);
		return true;
	case DT_F16:
		for (int64_t i = 0; i < n; i++)
			wr16(d + 2 * i, f32_to_f16(src[i]));
		return true;
	case DT_BF16:
		for (int64_t i = 0; i < n; i++)
			wr16(d + 2 * i, f32_to_bf16(src[i]));
		return true;
	case DT_Q8_0:
		if (n % 32)
			return false;
		for (int64_t i = 0; i < n / 32; i++)
			quant_q8_0(src + 32 * i, d + 34 * i);
		return true;
	case DT_Q4_0:
		if (n % 32)
			return false;
		for (int64_t i = 0; i < n / 32; i++)
			quant_q4_0(src + 32 * i, d + 18 * i);
		return true;
	case DT_Q4_1:
	case DT_Q5_0:
	case DT_Q5_1:
		if (n % 32)
			return false;
		for (int64_t i = 0; i < n / 32; i++)
			quant_q451(src + 32 * i, d + (type == DT_Q4_1 ? 20 : type == DT_Q5_0 ? 22 : 24) * i,
				   type == DT_Q4_1 ? 4 : 5, type != DT_Q5_0);
		return true;
	case DT_Q4_K:
	case DT_Q5_K:
		if (n % 256)
			return false;
		for (int64_t i = 0; i < n / 256; i++)
			quant_k45(src + 256 * i, d + (type == DT_Q4_K ? 144 : 176) * i, type == DT_Q4_K ? 15 : 31);
		return true;
	case DT_Q6_K:
		if (n % 256)
			return false;
		for (int64_t i = 0; i < n / 256; i++)
			quant_q6_k(src + 256 * i, d + 210 * i);
		return true;
	}
	return false;
}

/* ---- MLX affine (see dtype.h) ---- */

const char *dtype_name(int type)
{
	if (type == DT_MLX4)
		return "MLX4";
	if (type == DT_MLX8)
		return "MLX8";
	const struct dtype_info *t = type >= 0 ? dtype_get((uint32_t)type) : NULL;
	return t ? t->name : "?";
}

/* value i of an F32 / F16 / BF16 array at any alignment */
static float sb_get(int sb_type, const uint8_t *p, int64_t i)
{
	if (sb_type == DT_F32) {
		float f;
		memcpy(&f, p + 4 * i, 4);
		return f;
	}
	uint16_t h = rd16(p + 2 * i);
	return sb_type == DT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

void dtype_mlx_to_f32(int type, const void *q, const void *scales, const void *biases, int sb_type, int group,
		      float *dst, int64_t n)
{
	const uint8_t *qb = q;
	int bits = dtype_mlx_bits(type);
	uint32_t mask = (1u << bits) - 1;
	for (int64_t g = 0; g < n / group; g++) {
		float s = sb_get(sb_type, scales, g), b = sb_get(sb_type, biases, g);
		for (int64_t j = g * group; j < (g + 1) * group; j++) {
			int64_t bit = j * bits;
			uint32_t word = rd32(qb + 4 * (bit / 32));
			float v = s * (float)((word >> (bit % 32)) & mask); /* rounded here: no fused multiply-add */
			dst[j] = v + b;
		}
	}
}

/* the next 16-bit float (F16 or BF16 bit pattern, sign-magnitude) toward
 * -inf / +inf; NaN and infinities are not passed in */
static uint16_t h16_down(uint16_t h) { return h == 0 ? 0x8001 : (h & 0x8000) ? (uint16_t)(h + 1) : (uint16_t)(h - 1); }
static uint16_t h16_up(uint16_t h) { return h == 0x8000 ? 1 : (h & 0x8000) ? (uint16_t)(h - 1) : (uint16_t)(h + 1); }

/* x rounded to sb_type, toward -inf (up = 0) or +inf (up = 1); stores the
 * bits at p[i] and returns the value as float (inf when it does not fit) */
static float sb_put_directed(int sb_type, uint8_t *p, int64_t i, double x, int up)
{
	if (sb_type == DT_F32) {
		float f = (float)x;
		if (up ? (double)f < x : (double)f > x)
			f = nextafterf(f, up ? INFINITY : -INFINITY);
		memcpy(p + 4 * i, &f, 4);
		return f;
	}
	int f16 = sb_type == DT_F16;
	uint16_t h = f16 ? f32_to_f16((float)x) : f32_to_bf16((float)x);
	float v = f16 ? f16_to_f32(h) : bf16_to_f32(h);
	for (int k = 0; k < 4 && isfinite(v) && (up ? (double)v < x : (double)v > x); k++) {
		h = up ? h16_up(h) : h16_down(h);
		v = f16 ? f16_to_f32(h) : bf16_to_f32(h);
	}
	wr16(p + 2 * i, h);
	return v;
}

bool dtype_mlx_from_f32(int type, int group, int sb_type, const float *src, void *q, void *scales, void *biases,
			int64_t n)
{
	if (!dtype_is_mlx(type) || (sb_type != DT_F32 && sb_type != DT_F16 && sb_type != DT_BF16) || group <= 0 ||
	    group % 32 || n % group)
		return false;
	int bits = dtype_mlx_bits(type);
	int nmax = (1 << bits) - 1;
	uint8_t *qb = q;
	memset(qb, 0, (size_t)(n * bits / 8));
	for (int64_t g = 0; g < n / group; g++) {
		const float *x = src + g * group;
		float mn = x[0], mx = x[0];
		for (int j = 1; j < group; j++) {
			mn = fminf(mn, x[j]);
			mx = fmaxf(mx, x[j]);
		}
		if (!isfinite(mn) || !isfinite(mx))
			return false;
		/* bias <= min and bias + nmax * scale >= max: no code is clipped */
		float b = sb_put_directed(sb_type, biases, g, mn, 0);
		float s = sb_put_directed(sb_type, scales, g, ((double)mx - b) / nmax, 1);
		if (!isfinite(b) || !isfinite(s))
			return false;
		for (int j = 0; j < group; j++) {
			long c = s > 0 ? lrint(((double)x[j] - b) / s) : 0;
			c = c < 0 ? 0 : c > nmax ? nmax : c;
			int64_t bit = (g * group + j) * bits;
			uint8_t *w = qb + 4 * (bit / 32);
			uint32_t word = rd32(w) | (uint32_t)c << (bit % 32);
			w[0] = (uint8_t)word;
			w[1] = (uint8_t)(word >> 8);
			w[2] = (uint8_t)(word >> 16);
			w[3] = (uint8_t)(word >> 24);
		}
	}
	return true;
}
