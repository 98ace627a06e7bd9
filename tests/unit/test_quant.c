/*
 * test_quant.c — quantized GGUF files made by llama.cpp load, decode to
 * exactly the values llama.cpp's reference dequantizer gives, and their
 * logits stay within a stated bound of the float32 model's.
 *
 * Fixtures: quant/quant-zoo-{f32,Q8_0,Q4_0,Q4_K_M,Q5_K_M,Q6_K}.gguf with
 * NAME.dequant.json: per tensor its type, rows, cols, float64 sum and sumsq
 * and exact first_row / last_row.
 */
#include "testlib.h"
#include "inferd.h"
#include "gguf.h"
#include "dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qfile {
	const char *name;
	double logit_bound; /* relative to the f32 model's logits */
};

/* Bounds: the measured error in the comment, with headroom. The zoo's
 * weights carry rare 8x outliers, so the errors are larger than on the
 * fixture checkpoints; llama.cpp's own CPU path (which also quantizes the
 * activations) measured 3.4e-2, 7.8e-2, 1.1e-1, 2.2e-1, 3.4e-1 on ids 1..5. */
static const struct qfile files[] = {
	{"f32", 1e-6},      /* measured 0 (same weights) */
	{"Q8_0", 5e-2},     /* measured 2.9e-2 */
	{"Q6_K", 1.5e-1},   /* measured 9.2e-2 */
	{"Q5_K_M", 2.5e-1}, /* measured 1.5e-1 */
	{"Q4_K_M", 4.5e-1}, /* measured 2.9e-1 */
	{"Q4_0", 5e-1},     /* measured 3.4e-1 */
};

static void check_dequant(const char *dir, const char *name)
{
	char p[600], err[INFERD_ERR_LEN];
	snprintf(p, sizeof p, "%s/quant-zoo-%s.dequant.json", dir, name);
	json_error_t je;
	json_t *ref = json_load_file(p, 0, &je);
	CHECK(ref != NULL, "%s: %s", p, je.text);
	if (!ref)
		return;
	snprintf(p, sizeof p, "%s/quant-zoo-%s.gguf", dir, name);
	struct gguf g;
	int rc = gguf_open(p, &g, err);
	CHECK(rc == 0, "%s", err);
	if (rc) {
		json_decref(ref);
		return;
	}
	CHECK(g.n_tensors == json_object_size(ref), "%s: %llu tensors, reference lists %zu", p,
	      (unsigned long long)g.n_tensors, json_object_size(ref));
	const char *tname;
	json_t *tv;
	int n_tensors = 0, rows_exact = 0;
	json_object_foreach(ref, tname, tv)
	{
		const struct gguf_tensor *t = gguf_find_tensor(&g, tname);
		CHECK(t != NULL, "%s: tensor %s missing", p, tname);
		if (!t)
			continue;
		n_tensors++;
		const char *ty = json_string_value(json_object_get(tv, "type"));
		CHECK(strcmp(dtype_get(t->type)->name, ty) == 0, "%s: %s type %s, expected %s", p, tname,
		      dtype_get(t->type)->name, ty);
		int64_t rows = json_integer_value(json_object_get(tv, "rows")), cols = json_integer_value(json_object_get(tv, "cols"));
		uint64_t n_rows = t->n_dims > 1 ? t->ne[1] : 1;
		CHECK((int64_t)t->ne[0] == cols && (int64_t)n_rows == rows, "%s: %s shape %llu x %llu, expected %lld x %lld",
		      p, tname, (unsigned long long)n_rows, (unsigned long long)t->ne[0], (long long)rows, (long long)cols);
		float *row = malloc((size_t)cols * sizeof *row);
		uint64_t rb = t->nbytes / n_rows;
		double sum = 0, sumsq = 0;
		for (uint64_t r = 0; r < n_rows; r++) {
			dtype_to_f32((int)t->type, t->data + r * rb, row, cols);
			for (int64_t i = 0; i < cols; i++) {
				sum += row[i];
				sumsq += (double)row[i] * row[i];
			}
			json_t *want = r == 0 ? json_object_get(tv, "first_row") : r == n_rows - 1 ? json_object_get(tv, "last_row") : NULL;
			if (!want)
				continue;
			int bad = -1;
			for (int64_t i = 0; i < cols && bad < 0; i++)
				if ((double)row[i] != json_number_value(json_array_get(want, (size_t)i)))
					bad = (int)i;
			CHECK(bad < 0 && json_array_size(want) == (size_t)cols, "%s: %s row %llu value %d: ours %.9g, reference %.9g",
			      p, tname, (unsigned long long)r, bad, bad >= 0 ? row[bad] : 0.0,
			      bad >= 0 ? json_number_value(json_array_get(want, (size_t)bad)) : 0.0);
			rows_exact += bad < 0;
		}
		double rs = json_number_value(json_object_get(tv, "sum")), rq = json_number_value(json_object_get(tv, "sumsq"));
		CHECK(fabs(sum - rs) <= 1e-9 * (fabs(rs) + rq), "%s: %s sum %.12g, reference %.12g", p, tname, sum, rs);
		CHECK(fabs(sumsq - rq) <= 1e-9 * rq, "%s: %s sumsq %.12g, reference %.12g", p, tname, sumsq, rq);
		free(row);
	}
	printf("  %-8s %d tensors, %d first/last rows exactly equal\n", name, n_tensors, rows_exact);
	gguf_close(&g);
	json_decref(ref);
}

static float *logits_of(const char *path, const int32_t *ids, int n, int *vocab)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *m;
	if (inferd_model_open(path, NULL, &m, err)) {
		CHECK(0, "%s", err);
		return NULL;
	}
	struct inferd_model_info info;
	inferd_model_get_info(m, &info);
	*vocab = info.n_vocab;
	float *lg = malloc((size_t)n * info.n_vocab * sizeof *lg);
	inferd_seq_t *s;
	int rc = inferd_seq_new(m, n, &s, err) || inferd_seq_eval(m, s, ids, n, lg, 1, err);
	CHECK(rc == 0, "%s: %s", path, err);
	inferd_seq_free(s);
	inferd_model_close(m);
	return lg;
}

int main(void)
{
	char dir[512], p[600];
	snprintf(dir, sizeof dir, "%s/quant", t_fixtures());
	const int32_t ids[] = {1, 17, 300, 5, 999, 42, 7, 512, 1023, 0, 64, 128};
	int n = sizeof ids / sizeof ids[0], vocab = 0;
	snprintf(p, sizeof p, "%s/quant-zoo-f32.gguf", dir);
	float *base = logits_of(p, ids, n, &vocab);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		check_dequant(dir, files[i].name);
		snprintf(p, sizeof p, "%s/quant-zoo-%s.gguf", dir, files[i].name);
		int v2;
		float *lg = logits_of(p, ids, n, &v2);
		if (!lg || !base)
			continue;
		double e = t_rel_err(lg, base, (size_t)n * vocab);
		printf("  %-8s logits vs f32: rel err %.3e (bound %.1e)\n", files[i].name, e, files[i].logit_bound);
		CHECK(e <= files[i].logit_bound, "%s: relative error %.3e > %.1e", files[i].name, e, files[i].logit_bound);
		free(lg);
	}
	free(base);
	return t_done("test_quant");
}
