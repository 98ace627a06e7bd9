/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors reader
 * (st_parse in src/safetensors.c).
 *
 * The input is a whole .safetensors file. Every tensor st_parse returns
 * (all of them on success, the ones accepted before the error on failure)
 * is checked to lie inside the data section and its first and last byte are
 * read; the file is then parsed a second time, appending to the same table
 * (as the sharded loader does), and every name is looked up with st_find.
 * libFuzzer hands the input over in a heap buffer of exactly `size` bytes,
 * so ASan reports any read past it. Build and run: `make fuzz`.
 */
#include "safetensors.h"
#include "dtype.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint8_t sink;

#define CHECK(c)                                                                                  \
	do {                                                                                      \
		if (!(c)) {                                                                       \
			fprintf(stderr, "fuzz_safetensors: invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                                  \
		}                                                                                 \
	} while (0)

static void check_tensors(const uint8_t *data, size_t size, const struct st_tensor *t, size_t n0, size_t n,
			  int file_idx)
{
	if (n0 == n)
		return;
	uint64_t hlen;
	memcpy(&hlen, data, 8);
	CHECK(hlen <= size - 8); /* tensors exist, so the header was read */
	const uint8_t *base = data + 8 + hlen, *end = data + size;
	for (size_t i = n0; i < n; i++) {
		const struct st_tensor *x = &t[i];
		CHECK(x->name != NULL);
		sink ^= (uint8_t)strlen(x->name);
		CHECK(x->file == file_idx);
		CHECK(memchr(x->dtype, 0, sizeof x->dtype) != NULL);
		CHECK(x->n_dims >= 0 && x->n_dims <= 4);
		CHECK(x->type == -1 || x->type == DT_F32 || x->type == DT_F16 || x->type == DT_BF16);
		uint64_t elems = 1;
		for (int d = 0; d < x->n_dims; d++)
			elems *= x->shape[d];
		if (x->type == DT_F32)
			CHECK(x->nbytes == elems * 4);
		else if (x->type == DT_F16 || x->type == DT_BF16)
			CHECK(x->nbytes == elems * 2);
		CHECK(x->data >= base && x->data <= end && x->nbytes <= (uint64_t)(end - x->data));
		if (x->nbytes) {
			const volatile uint8_t *b = x->data;
			sink ^= b[0];
			sink ^= b[x->nbytes - 1];
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[INFERD_ERR_LEN];
	struct st_tensor *t = NULL;
	size_t n = 0;
	err[0] = 0;
	int rc = st_parse(data, size, "fuzz.safetensors", 0, &t, &n, err);
	if (rc)
		CHECK(rc < 0 && err[0] && strlen(err) < sizeof err);
	else
		CHECK(size >= 8);
	if (size >= 8)
		check_tensors(data, size, t, 0, n, 0);
	else
		CHECK(n == 0);
	if (rc == 0) {
		/* a second shard with the same bytes appends after the first */
		size_t n1 = n;
		rc = st_parse(data, size, "fuzz2.safetensors", 1, &t, &n, err);
		CHECK(rc == 0 && n == 2 * n1);
		check_tensors(data, size, t, n1, n, 1);
		struct st_set s = {.t = t, .n_t = n};
		for (size_t i = 0; i < n1; i++)
			CHECK(st_find(&s, t[i].name) == &t[i]);
	}
	st_free_tensors(t, n);
	return 0;
}
