/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader (src/gguf.c) and the
 * GGUF metadata -> configuration path (config_from_gguf in src/config.c).
 *
 * The input is a whole GGUF image. On a successful parse every key/value is
 * walked (each element of every array, each string of a string array, using
 * only the lengths the parser accepted), every typed getter is called on
 * every key, every tensor's first and last data byte is read and its bounds
 * are checked against the buffer, and the configuration is derived and the
 * weights bound (model_bind) as inferd_model_open would. libFuzzer hands the
 * input over in a heap buffer of exactly `size` bytes, so ASan reports any
 * read past it. Build and run: `make fuzz` (see fuzz/README.md).
 */
#include "gguf.h"
#include "dtype.h"
#include "model.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint8_t sink;

static void touch(const void *p, uint64_t n)
{
	if (!n)
		return;
	const volatile uint8_t *b = p;
	sink ^= b[0];
	sink ^= b[n - 1];
}

#define CHECK(c)                                                                            \
	do {                                                                                \
		if (!(c)) {                                                                 \
			fprintf(stderr, "fuzz_gguf: invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                            \
		}                                                                           \
	} while (0)

static const int esize[GV_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static bool inside(const uint8_t *data, size_t size, const void *p, uint64_t n)
{
	const uint8_t *q = p;
	return q >= data && q <= data + size && n <= (uint64_t)(data + size - q);
}

/* A NUL-terminated copy of a key/name, or false if it holds a NUL or is long. */
static bool cstr(struct gguf_str s, char *buf, size_t cap)
{
	if (s.n >= cap || memchr(s.p, 0, s.n))
		return false;
	memcpy(buf, s.p, s.n);
	buf[s.n] = 0;
	return true;
}

static void walk_kv(const uint8_t *data, size_t size, const struct gguf *g, const struct gguf_kv *kv)
{
	CHECK(inside(data, size, kv->key.p, kv->key.n));
	touch(kv->key.p, kv->key.n);
	CHECK(kv->type < GV_COUNT);
	(void)gguf_type_name(kv->type);
	if (kv->type == GV_STR) {
		CHECK(inside(data, size, kv->v.s.p, kv->v.s.n));
		touch(kv->v.s.p, kv->v.s.n);
	} else if (kv->type == GV_ARR) {
		CHECK(kv->arr_type < GV_COUNT && kv->arr_type != GV_ARR);
		(void)gguf_type_name(kv->arr_type);
		const uint8_t *p = kv->arr_data;
		if (kv->arr_type == GV_STR) {
			for (uint64_t i = 0; i < kv->arr_n; i++) {
				uint64_t n;
				CHECK(inside(data, size, p, 8));
				memcpy(&n, p, 8);
				p += 8;
				CHECK(inside(data, size, p, n));
				touch(p, n);
				p += n;
			}
		} else {
			uint64_t bytes = kv->arr_n * (uint64_t)esize[kv->arr_type];
			CHECK(inside(data, size, p, bytes));
			touch(p, bytes);
		}
	}
	char key[256], buf[256];
	if (!cstr(kv->key, key, sizeof key))
		return;
	CHECK(gguf_find(g, key) == kv); /* keys are unique */
	int64_t i;
	double f;
	(void)gguf_get_int(g, key, &i);
	(void)gguf_get_float(g, key, &f);
	(void)gguf_get_str(g, key, buf, 1);
	(void)gguf_get_str(g, key, buf, 8);
	if (gguf_get_str(g, key, buf, sizeof buf))
		CHECK(strlen(buf) <= sizeof buf - 1);
}

static void walk_tensor(const uint8_t *data, size_t size, const struct gguf *g, const struct gguf_tensor *t)
{
	CHECK(inside(data, size, t->name.p, t->name.n));
	touch(t->name.p, t->name.n);
	CHECK(t->n_dims >= 1 && t->n_dims <= 4);
	CHECK(dtype_get(t->type) != NULL);
	uint64_t rowb, n = 1;
	for (int d = 0; d < 4; d++) {
		CHECK(t->ne[d] >= 1);
		n *= t->ne[d];
	}
	CHECK(dtype_row_bytes((int)t->type, t->ne[0], &rowb) && rowb * (n / t->ne[0]) == t->nbytes);
	CHECK(t->offset % g->alignment == 0);
	CHECK(t->data == data + g->data_off + t->offset);
	CHECK(t->data >= data + g->data_off && inside(data, size, t->data, t->nbytes));
	touch(t->data, t->nbytes);
	char name[256];
	if (cstr(t->name, name, sizeof name)) {
		const struct gguf_tensor *f = gguf_find_tensor(g, name);
		CHECK(f == t); /* names are unique */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[INFERD_ERR_LEN];
	struct gguf g;
	err[0] = 0;
	int rc = gguf_parse(data, size, "fuzz.gguf", &g, err);
	if (rc) {
		CHECK(rc < 0 && err[0] && strlen(err) < sizeof err);
		CHECK(g.kv == NULL && g.t == NULL);
		return 0;
	}
	CHECK(g.version == 2 || g.version == 3);
	CHECK(g.alignment && !(g.alignment & (g.alignment - 1)));
	CHECK(g.data_off % g.alignment == 0);
	for (uint64_t i = 0; i < g.n_kv; i++)
		walk_kv(data, size, &g, &g.kv[i]);
	for (uint64_t i = 0; i < g.n_tensors; i++)
		walk_tensor(data, size, &g, &g.t[i]);

	/* the typed getters on keys a loader asks for, present or not */
	static const char *keys[] = {"general.architecture", "general.alignment", "general.name",
				     "llama.block_count", "qwen2.embedding_length", "qwen3.rope.freq_base",
				     "tokenizer.ggml.bos_token_id", "tokenizer.ggml.tokens", ""};
	for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
		int64_t i;
		double f;
		char s[32];
		(void)gguf_get_int(&g, keys[k], &i);
		(void)gguf_get_float(&g, keys[k], &f);
		(void)gguf_get_str(&g, keys[k], s, sizeof s);
	}

	/* the configuration and the weight binding, as inferd_model_open does */
	struct inferd_model *m = calloc(1, sizeof *m);
	CHECK(m);
	rc = config_from_gguf(&g, "fuzz.gguf", &m->c, err);
	if (rc == 0) {
		CHECK(config_validate(&m->c, "fuzz.gguf", err) == 0);
		/* token ids: the metadata value if it is a valid id, else -1 */
		int64_t tok;
		bool ok = gguf_get_int(&g, "tokenizer.ggml.bos_token_id", &tok) && tok >= 0 && tok <= INT_MAX;
		CHECK(m->c.bos_id == (ok ? tok : -1));
		ok = gguf_get_int(&g, "tokenizer.ggml.eos_token_id", &tok) && tok >= 0 && tok <= INT_MAX;
		CHECK(m->c.eos_id == (ok ? tok : -1));
		m->gguf = g;
		m->format = "gguf";
		snprintf(m->path, sizeof m->path, "fuzz.gguf");
		rc = model_bind(m, err);
		if (rc == 0)
			for (int i = 0; i < m->n_tensors; i++) {
				const struct tensor *t = &m->tensors[i];
				CHECK(inside(data, size, t->data, t->nbytes));
				touch(t->data, t->nbytes);
			}
		free(m->tensors);
		free(m->layers);
	} else {
		CHECK(rc < 0 && err[0]);
	}
	free(m);
	gguf_close(&g);
	return 0;
}
