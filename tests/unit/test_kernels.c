/*
 * test_kernels.c — every CPU weight-row kernel (src/cpu/qmm.c) against its
 * scalar reference, on fresh random inputs each run (the seed is printed;
 * INFERD_KERNEL_SEED repeats a run), at many shapes.
 *
 *  1. activation quantization: every value within d/2 of its source, the
 *     stored sums equal the codes' sums;
 *  2. the scalar reference against the float64 dot of the dequantized
 *     weights (dtype.c, the format's definition) and the dequantized
 *     activations: within 1e-5 of sum |w x|;
 *  3. each SIMD set this CPU runs (AVX2, AVX-512 VNNI; on aarch64 NEON and
 *     NEON dotprod) against the reference within 2e-5 of sum |w x| (float
 *     rounding of 8 or 4 lanes);
 *  4. batch invariance: with 1, 2, 3 or 4 tokens per call, each token's
 *     result bitwise equal to the call with it alone; the SIMD sets of the
 *     build (AVX2 and VNNI, or NEON and dotprod) bitwise equal to each
 *     other.
 * `make test-neon` runs it cross-compiled for aarch64 under qemu-user.
 * Weight code bytes are random (every code value, Q8_0's -128 included);
 * scales come from quantizing random floats.
 */
#include "testlib.h"
#include "dtype.h"
#include "cpu/ops.h"
#include "cpu/qmm.h"
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rs;
static uint32_t rnd(void)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return (uint32_t)(rs >> 16);
}
static float frnd(void) { return (float)((double)rnd() / 4294967296.0 * 2.0 - 1.0); }

struct tinfo { int type; int lo, hi; }; /* code bytes [lo, hi) of each block: random */
static const struct tinfo types[] = {
	{DT_Q8_0, 2, 34}, {DT_Q4_0, 2, 18}, {DT_Q4_1, 4, 20}, {DT_Q5_0, 2, 22}, {DT_Q5_1, 4, 24},
	{DT_Q4_K, 4, 144}, {DT_Q5_K, 4, 176}, {DT_Q6_K, 0, 208}, {DT_F16, 0, 0}, {DT_BF16, 0, 0},
};

static void one_shape(const struct tinfo *ti, int64_t cols, int *worst_set, double *worst)
{
	const struct dtype_info *di = dtype_get((uint32_t)ti->type);
	int64_t nb = cols / di->block;
	size_t wbytes = (size_t)nb * (size_t)di->block_bytes;
	float *src = malloc((size_t)cols * sizeof(float)), *wf = malloc((size_t)cols * sizeof(float));
	float *x = malloc(4 * (size_t)cols * sizeof(float)), *xd = malloc(4 * (size_t)cols * sizeof(float));
	uint8_t *w = malloc(wbytes);
	for (int64_t k = 0; k < cols; k++)
		src[k] = frnd() * (k % 97 == 0 ? 8.0f : 1.0f);
	CHECK(dtype_from_f32(ti->type, src, w, cols), "quantize %s", di->name);
	for (int64_t b = 0; b < nb; b++)
		for (int k = ti->lo; k < ti->hi; k++)
			w[(size_t)b * (size_t)di->block_bytes + (size_t)k] = (uint8_t)rnd();
	dtype_to_f32(ti->type, w, wf, cols);
	for (int64_t k = 0; k < 4 * cols; k++)
		x[k] = frnd() * (k % 61 == 0 ? 5.0f : 1.0f);

	/* activations: quantized rows, or the float rows themselves */
	size_t xb = qmm_xbytes(ti->type, cols), stride = xb ? xb : (size_t)cols * sizeof(float);
	uint8_t *xq = malloc(4 * stride);
	for (int t = 0; t < 4; t++) {
		if (!xb) {
			memcpy(xq + t * stride, x + t * cols, (size_t)cols * sizeof(float));
			memcpy(xd + t * cols, x + t * cols, (size_t)cols * sizeof(float));
			continue;
		}
		if (t == 3) /* a row of zeros and one of huge values too */
			for (int64_t k = 0; k < cols; k++)
				x[t * cols + k] = cols % 64 == 0 ? 0.0f : x[t * cols + k] * 1e30f;
		qmm_quantize(ti->type, x + t * cols, cols, xq + t * stride);
		uint8_t *rq = malloc(stride);
		qmm_quantize_ref(ti->type, x + t * cols, cols, rq);
		CHECK(memcmp(rq, xq + t * stride, stride) == 0, "%s cols %lld: SIMD activation bytes differ from the reference",
		      di->name, (long long)cols);
		free(rq);
		qmm_dequantize_x(ti->type, xq + t * stride, cols, xd + t * cols);
		int bs = ti->type == DT_Q4_K || ti->type == DT_Q5_K || ti->type == DT_Q6_K ? 256 : 32;
		double qerr = 0;
		for (int64_t b = 0; b < cols / bs; b++) {
			float amax = 0;
			for (int k = 0; k < bs; k++)
				amax = fmaxf(amax, fabsf(x[t * cols + b * bs + k]));
			for (int k = 0; k < bs; k++) {
				double e = fabs((double)x[t * cols + b * bs + k] - xd[t * cols + b * bs + k]) / (amax / 127.0);
				qerr = e > qerr ? e : qerr;
			}
		}
		CHECK(qerr <= 0.5 + 1e-5, "%s cols %lld: activation error %.4f of a step (bound 0.5)", di->name,
		      (long long)cols, qerr);
	}

	qmm_fn ref = qmm_get(ti->type, QMM_SCALAR);
	CHECK(ref != NULL, "no reference kernel for %s", di->name);
	float r[4], one[4], multi[4], first[4];
	for (int t = 0; t < 4; t++) {
		double truth = 0, mag = 0;
		for (int64_t k = 0; k < cols; k++) {
			truth += (double)wf[k] * xd[t * cols + k];
			mag += fabs((double)wf[k] * xd[t * cols + k]);
		}
		ref(w, xq + t * stride, stride, 1, cols, &r[t]);
		double e = fabs(r[t] - truth) / (mag + 1e-30);
		CHECK(e <= 1e-5, "%s cols %lld: reference %.9g vs float64 %.9g (rel %.2e)", di->name, (long long)cols,
		      r[t], truth, e);
		enum qmm_isa first_isa = QMM_SCALAR;
		for (enum qmm_isa isa = QMM_SCALAR + 1; isa < QMM_ISA_COUNT; isa++) {
			qmm_fn f = qmm_get(ti->type, isa);
			if (!f)
				continue;
			f(w, xq + t * stride, stride, 1, cols, &one[t]);
			double es = fabs((double)one[t] - r[t]) / (mag + 1e-30);
			CHECK(es <= 2e-5, "%s cols %lld %s: %.9g vs reference %.9g (rel %.2e)", di->name, (long long)cols,
			      qmm_isa_name(isa), one[t], r[t], es);
			if (es > *worst)
				*worst = es;
			if (first_isa == QMM_SCALAR)
				first_isa = isa, first[t] = one[t];
			else
				CHECK(memcmp(&one[t], &first[t], sizeof(float)) == 0, "%s cols %lld: %s %.9g != %s %.9g",
				      di->name, (long long)cols, qmm_isa_name(isa), one[t], qmm_isa_name(first_isa),
				      first[t]);
			*worst_set = 1;
		}
	}
	/* batch invariance: nt tokens at once equal each alone, every set */
	for (enum qmm_isa isa = QMM_SCALAR; isa < QMM_ISA_COUNT; isa++) {
		qmm_fn f = qmm_get(ti->type, isa);
		if (!f)
			continue;
		for (int t = 0; t < 4; t++)
			f(w, xq + t * stride, stride, 1, cols, &one[t]);
		for (int nt = 2; nt <= 4; nt++) {
			int off = (int)(rnd() % (unsigned)(5 - nt));
			f(w, xq + off * stride, stride, nt, cols, multi);
			for (int t = 0; t < nt; t++)
				CHECK(memcmp(&multi[t], &one[off + t], sizeof(float)) == 0,
				      "%s cols %lld %s: token %d of %d: %.9g alone %.9g", di->name, (long long)cols,
				      qmm_isa_name(isa), t, nt, multi[t], one[off + t]);
		}
	}
	free(src);
	free(wf);
	free(x);
	free(xd);
	free(xq);
	free(w);
}

/* the row-interleaved kernels: 8 rows (F16/BF16 16) at once, against the reference row
 * by row; each token's results bitwise the same for 1..qmm_x8_max_nt tokens */
static int x8_shape(const struct tinfo *ti, int64_t cols, double *worst)
{
	size_t gb = qmm_x8_bytes(ti->type, cols);
	qmm_fn f = qmm_x8_get(ti->type), ref = qmm_get(ti->type, QMM_SCALAR);
	if (!gb || !f)
		return 0;
	const struct dtype_info *di = dtype_get((uint32_t)ti->type);
	int64_t nb = cols / di->block;
	size_t rb = (size_t)nb * (size_t)di->block_bytes, xs = qmm_xbytes(ti->type, cols);
	int fl = !xs; /* F16/BF16: float activations */
	if (fl)
		xs = (size_t)cols * sizeof(float);
	int mt = qmm_x8_max_nt(ti->type), R = qmm_x8_rows(ti->type);
	uint8_t *w = malloc((size_t)R * rb), *w8 = malloc(gb), *xq = malloc((size_t)mt * xs);
	float *src = malloc((size_t)cols * sizeof(float)), *wf = malloc((size_t)cols * sizeof(float));
	float *xd = malloc((size_t)cols * sizeof(float));
	for (int r = 0; r < R; r++) {
		for (int64_t k = 0; k < cols; k++)
			src[k] = frnd() * (k % 89 == 0 ? 8.0f : 1.0f);
		dtype_from_f32(ti->type, src, w + r * rb, cols);
		for (int64_t b = 0; b < nb; b++)
			for (int k = ti->lo; k < ti->hi; k++)
				w[r * rb + (size_t)b * (size_t)di->block_bytes + (size_t)k] = (uint8_t)rnd();
	}
	for (int t = 0; t < mt; t++) {
		for (int64_t k = 0; k < cols; k++)
			src[k] = frnd() * (k % 61 == 0 ? 5.0f : 1.0f);
		if (fl)
			memcpy(xq + t * xs, src, (size_t)cols * sizeof(float));
		else
			qmm_quantize(ti->type, src, cols, xq + t * xs);
	}
	qmm_x8_pack(ti->type, w, rb, cols, w8);
	uint8_t *back = malloc(rb);
	for (int r = 0; r < R; r++) {
		qmm_x8_row(ti->type, w8, r, cols, back);
		CHECK(memcmp(back, w + r * rb, rb) == 0, "%s x8 cols %lld: row %d unpacked differs from the original",
		      di->name, (long long)cols, r);
	}
	free(back);
	float alone[8][16], multi[128];
	for (int t = 0; t < mt; t++)
		f(w8, xq + t * xs, xs, 1, cols, alone[t]);
	for (int r = 0; r < R; r++) {
		dtype_to_f32(ti->type, w + r * rb, wf, cols);
		for (int t = 0; t < mt; t++) {
			float rv;
			ref(w + r * rb, xq + t * xs, xs, 1, cols, &rv);
			if (fl)
				memcpy(xd, xq + t * xs, (size_t)cols * sizeof(float));
			else
				qmm_dequantize_x(ti->type, xq + t * xs, cols, xd);
			double mag = 0;
			for (int64_t k = 0; k < cols; k++)
				mag += fabs((double)wf[k] * xd[k]);
			double e = fabs((double)alone[t][r] - rv) / (mag + 1e-30);
			if (e > *worst)
				*worst = e;
			CHECK(e <= 2e-5, "%s x8 cols %lld row %d token %d: %.9g vs reference %.9g (rel %.2e)", di->name,
			      (long long)cols, r, t, alone[t][r], rv, e);
		}
	}
	for (int nt = 2; nt <= mt; nt++) {
		int off = (int)(rnd() % (unsigned)(mt + 1 - nt));
		f(w8, xq + off * xs, xs, nt, cols, multi);
		for (int t = 0; t < nt; t++)
			CHECK(memcmp(multi + R * t, alone[off + t], (size_t)R * sizeof(float)) == 0,
			      "%s x8 cols %lld: token %d of %d differs from alone", di->name, (long long)cols, t, nt);
	}
	free(w);
	free(w8);
	free(xq);
	free(src);
	free(wf);
	free(xd);
	return 1;
}

/* the KV cache's F16 conversions: every half to float, random and special
 * floats to half, bitwise as dtype.c's (NaNs only as NaNs) */
static void f16_rows(void)
{
	static uint16_t h[65536], h2[4096];
	static float f[65536], g[65536];
	for (int i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	qmm_f16_to_f32(h, f, 65536);
	dtype_to_f32(DT_F16, h, g, 65536);
	int bad = 0;
	for (int i = 0; i < 65536; i++)
		bad += isnan(g[i]) ? !isnan(f[i]) : memcmp(&f[i], &g[i], 4) != 0;
	CHECK(bad == 0, "F16 -> F32: %d of 65536 halves differ from dtype.c", bad);
	float x[4096];
	const float special[] = {0.0f, -0.0f, 65504.0f, 65520.0f, 1e9f, -1e9f, 5.96e-8f, 2.98e-8f, 1e-10f, 6.1035e-5f};
	for (int i = 0; i < 4096; i++) {
		uint32_t u = rnd() << 16 ^ rnd();
		memcpy(&x[i], &u, 4);
		if (isnan(x[i]))
			x[i] = 1.0f;
		if (i % 3 == 0)
			x[i] = frnd() * 70000.0f;
		if (i < 10)
			x[i] = special[i];
	}
	qmm_f32_to_f16(x, h, 4096);
	dtype_from_f32(DT_F16, x, h2, 4096);
	bad = 0;
	for (int i = 0; i < 4096; i++)
		bad += h[i] != h2[i];
	CHECK(bad == 0, "F32 -> F16: %d of 4096 values differ from dtype.c", bad);
	printf("  F16 rows: 65536 halves and 4096 floats converted as dtype.c does\n");
}

/* attention's exp (ops_vec): within 1e-6 of expf, 0 below -87.3, the
 * returned sum equal to the values' sum; axpy exact against the loop */
static void attn_vec(void)
{
	struct ops_vec v = ops_vec_best();
	float x[203], ref[203], y[203], y2[203], z[203];
	double worst = 0;
	for (int rep = 0; rep < 50; rep++) {
		int n = 1 + (int)(rnd() % 203);
		float m = frnd() * 10;
		for (int i = 0; i < n; i++) {
			x[i] = m - (float)(rnd() % 1000) * 0.1f * (rep % 5 == 0 ? 2.0f : 0.15f);
			ref[i] = expf(x[i] - m);
		}
		float sum = v.exp_shift(x, n, m);
		double s2 = 0;
		for (int i = 0; i < n; i++) {
			double e = ref[i] > 1e-30f ? fabs((double)x[i] - ref[i]) / ref[i] : fabs((double)x[i]);
			worst = e > worst ? e : worst;
			s2 += x[i];
		}
		CHECK(fabs(sum - s2) <= 1e-5 * s2 + 1e-30, "exp_shift sum %.9g, values sum to %.9g", sum, s2);
		float a = frnd();
		for (int i = 0; i < n; i++)
			y[i] = y2[i] = frnd(), z[i] = frnd();
		v.axpy(y, a, z, n);
		int bad = 0;
		for (int i = 0; i < n; i++)
			bad += fabsf(y[i] - (y2[i] + a * z[i])) > 1e-6f * (fabsf(y2[i]) + fabsf(a * z[i]));
		CHECK(bad == 0, "axpy: %d of %d values off", bad, n);
	}
	CHECK(worst <= 1e-6, "exp_shift: worst relative error %.3e (bound 1e-6)", worst);
	printf("  attention exp: worst relative error %.2e of expf\n", worst);
}

/* swiglu (ops_vec): within 1e-6 of g / (1 + expf(-g)) * u over the whole
 * range (large |g| included: no overflow, no NaN), and a value's result
 * bitwise the same at any position (the pool splits rows anywhere) */
static void swiglu_vec(void)
{
	struct ops_vec v = ops_vec_best();
	enum { N = 301 };
	float g[N], u[N], out[N], part[N];
	double worst = 0;
	for (int rep = 0; rep < 40; rep++) {
		int n = 1 + (int)(rnd() % N);
		for (int i = 0; i < n; i++) {
			g[i] = frnd() * (rep % 4 == 0 ? 200.0f : 8.0f);
			u[i] = frnd();
		}
		if (rep == 1 && n > 3)
			g[0] = -0.0f, g[1] = 0.0f, g[2] = -1000.0f, g[3] = 1000.0f;
		v.swiglu(out, g, u, n);
		int bad = 0;
		for (int i = 0; i < n; i++) {
			double r = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
			double e = fabs(out[i] - r) / (fabs(r) + 1e-30);
			if (fabs(r) < 1e-30)
				e = fabs(out[i]) > 1e-30;
			worst = e > worst ? e : worst;
			bad += out[i] != out[i];
		}
		CHECK(bad == 0, "swiglu: %d NaN of %d", bad, n);
		int cut = (int)(rnd() % (unsigned)n); /* the same values, split at cut */
		v.swiglu(part, g, u, cut);
		v.swiglu(part + cut, g + cut, u + cut, n - cut);
		CHECK(memcmp(part, out, (size_t)n * sizeof(float)) == 0, "swiglu: split at %d of %d changes results", cut, n);
	}
	CHECK(worst <= 1e-6, "swiglu: worst relative error %.3e (bound 1e-6)", worst);
	printf("  swiglu: worst relative error %.2e\n", worst);
}

/* greedy sampling's argmax: the first index of the largest value, NaNs
 * skipped (a NaN at 0 returned), at every length and position */
static void argmax_check(void)
{
	float x[100];
	int bad = 0;
	for (int rep = 0; rep < 400; rep++) {
		int n = 1 + (int)(rnd() % 100);
		for (int i = 0; i < n; i++)
			x[i] = (float)(rnd() % 7); /* many ties */
		if (rep % 3 == 0)
			x[rnd() % (unsigned)n] = NAN;
		int want = 0;
		for (int i = 1; i < n; i++)
			if (x[i] > x[want])
				want = i;
		bad += sample_argmax(x, n) != want;
	}
	CHECK(bad == 0, "argmax: %d of 400 rows differ from the first largest", bad);
}

int main(void)
{
	const char *s = getenv("INFERD_KERNEL_SEED");
	rs = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
	if (!rs)
		rs = 88172645463325252ULL;
	printf("seed %llu (INFERD_KERNEL_SEED repeats it); best set here: %s; SIMD sets run:", (unsigned long long)rs,
	       qmm_isa_name(qmm_isa_best()));
	for (enum qmm_isa isa = QMM_SCALAR + 1; isa < QMM_ISA_COUNT; isa++)
		if (qmm_get(DT_Q8_0, isa))
			printf(" %s", qmm_isa_name(isa));
	printf("\n");
	f16_rows();
	attn_vec();
	swiglu_vec();
	argmax_check();
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		const struct dtype_info *di = dtype_get((uint32_t)types[i].type);
		int bs = (int)di->block;
		double worst = 0;
		int any = 0, shapes = 0;
		/* fixed edge shapes, then random ones */
		int64_t fixed[] = {1, 2, 3, 7, 28};
		for (int k = 0; k < 12; k++) {
			int64_t mult = k < 5 ? fixed[k] : 1 + (int64_t)(rnd() % 40);
			int64_t cols = mult * (bs == 1 ? 32 : bs);
			if (bs == 1 && k >= 5) /* float rows: any width, tails included */
				cols = 1 + (int64_t)(rnd() % 3000);
			one_shape(&types[i], cols, &any, &worst);
			shapes++;
		}
		printf("  %-5s %2d shapes: SIMD vs reference worst rel %.2e%s\n", di->name, shapes, worst,
		       any ? "" : " (no SIMD here)");
		double w8 = 0;
		int n8 = 0;
		for (int k = 0; k < 6; k++)
			n8 += x8_shape(&types[i], bs == 1 ? 1 + (int64_t)(rnd() % 3000) : (k < 2 ? 1 + k : 1 + (int64_t)(rnd() % 24)) * bs,
				       &w8);
		if (n8)
			printf("  %-5s %2d shapes, %d interleaved rows: worst rel %.2e\n", di->name, n8, qmm_x8_rows(types[i].type), w8);
	}
	return t_done("test_kernels");
}
