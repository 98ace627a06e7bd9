/*
 * safetensors.h — reader for Hugging Face safetensors files, single or
 * sharded through model.safetensors.index.json. Files are mmapped; tensors
 * point into the mappings (no copy). The header is checked in full before
 * use: dtypes, shapes, offsets inside the data section, sizes matching the
 * shape, no overlap with the header.
 */
#ifndef INFERD_SAFETENSORS_H
#define INFERD_SAFETENSORS_H

#include <stdint.h>
#include <stddef.h>
#include "util.h"

struct st_tensor {
	char *name;
	char dtype[12];        /* as written: "F32", "BF16", "U32", ... */
	int type;              /* enum dtype, or -1 if inferd cannot use it */
	int n_dims;
	uint64_t shape[4];     /* outermost first, as in the file */
	const uint8_t *data;
	uint64_t nbytes;
	int file;              /* index into st_set.files */
};

struct st_set {
	struct mapped_file *files;
	char **file_names;
	int n_files;
	struct st_tensor *t;
	size_t n_t;
};

/* Open dir/model.safetensors, or the shards listed in
 * dir/model.safetensors.index.json. */
int st_open_dir(const char *dir, struct st_set *s, char *err);
/* Parse one in-memory file; appends to *t / *n (realloc'd). */
int st_parse(const uint8_t *data, size_t size, const char *name, int file_idx,
	     struct st_tensor **t, size_t *n, char *err);
void st_free_tensors(struct st_tensor *t, size_t n);
void st_close(struct st_set *s);
const struct st_tensor *st_find(const struct st_set *s, const char *name);

/* Writing: one file holding tensors in the order given, with
 * "__metadata__": {"format": format} (format may be NULL). Each tensor's
 * bytes come from produce(ctx, idx, dst, nbytes, err), called once per
 * tensor in order with a buffer of exactly nbytes. */
struct st_wtensor {
	const char *name;
	const char *dtype;     /* "F32", "F16", "BF16", "U32", ... */
	int n_dims;
	uint64_t shape[2];
};
typedef int (*st_produce_fn)(void *ctx, int idx, uint8_t *dst, uint64_t nbytes, char *err);
int st_write(const char *path, const struct st_wtensor *t, int n, const char *format, st_produce_fn produce,
	     void *ctx, char *err);

#endif
