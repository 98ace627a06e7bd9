/*
 * gguf.h — strict GGUF v2/v3 reader over a mapped file, and a writer.
 *
 * Reader: gguf_parse validates the whole header (every key/value of every
 * type, every tensor info, alignment, offsets and sizes against the file)
 * before anything is used; strings point into the mapping and are not
 * NUL-terminated. It never reads past the buffer and never allocates more
 * than the counts the file proves it can hold.
 * Writer: collects key/values and tensor infos, then streams the tensors'
 * bytes through one producer callback per tensor.
 */
#ifndef INFERD_GGUF_H
#define INFERD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

enum gguf_vtype {
	GV_U8 = 0, GV_I8 = 1, GV_U16 = 2, GV_I16 = 3, GV_U32 = 4, GV_I32 = 5,
	GV_F32 = 6, GV_BOOL = 7, GV_STR = 8, GV_ARR = 9, GV_U64 = 10,
	GV_I64 = 11, GV_F64 = 12, GV_COUNT = 13
};

struct gguf_str {
	const char *p;
	uint64_t n;
};

struct gguf_kv {
	struct gguf_str key;
	uint32_t type;
	union {
		uint64_t u;
		int64_t i;
		double f;
		struct gguf_str s;
	} v;                   /* scalars (integers widened, floats as double) */
	uint32_t arr_type;     /* arrays: element type, count, first element */
	uint64_t arr_n;
	const uint8_t *arr_data;
};

struct gguf_tensor {
	struct gguf_str name;
	uint32_t n_dims;
	uint64_t ne[4];        /* ne[0] = values per row (innermost) */
	uint32_t type;         /* enum dtype */
	uint64_t offset;       /* from the start of the data section */
	const uint8_t *data;
	uint64_t nbytes;
};

struct gguf {
	struct mapped_file f;  /* owned when opened by gguf_open */
	uint32_t version;
	uint64_t n_kv, n_tensors;
	struct gguf_kv *kv;
	struct gguf_tensor *t;
	uint64_t alignment;
	uint64_t data_off;
};

int gguf_open(const char *path, struct gguf *g, char *err);
/* Parse an in-memory image; `name` is used in messages. */
int gguf_parse(const uint8_t *data, size_t size, const char *name, struct gguf *g, char *err);
void gguf_close(struct gguf *g);

const struct gguf_kv *gguf_find(const struct gguf *g, const char *key);
bool gguf_str_eq(struct gguf_str s, const char *c);
/* Typed getters: false if missing or of an incompatible type. Integer
 * getters accept any integer type whose value fits; float getters accept
 * floats and integers. */
bool gguf_get_int(const struct gguf *g, const char *key, int64_t *out);
bool gguf_get_float(const struct gguf *g, const char *key, double *out);
bool gguf_get_str(const struct gguf *g, const char *key, char *buf, size_t cap);
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);
const char *gguf_type_name(uint32_t vtype);

/* --- writer --- */
struct gguf_writer;
typedef int (*gguf_produce_fn)(void *ctx, int idx, uint8_t *dst, uint64_t nbytes, char *err);

struct gguf_writer *gguf_w_new(void);
void gguf_w_free(struct gguf_writer *w);
void gguf_w_str(struct gguf_writer *w, const char *key, const char *val);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t val);
void gguf_w_f32(struct gguf_writer *w, const char *key, float val);
void gguf_w_bool(struct gguf_writer *w, const char *key, bool val);
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *vals, uint64_t n);
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *vals, uint64_t n);
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *vals, uint64_t n);
/* Add a tensor; its bytes come from produce(ctx, idx, ...) at write time. */
int gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t type, const uint64_t *ne,
		  int n_dims, gguf_produce_fn produce, void *ctx, int idx, char *err);
int gguf_w_write(struct gguf_writer *w, const char *path, char *err);

#endif
