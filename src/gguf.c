/*
 * gguf.c — GGUF reader and writer (see gguf.h).
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, the key/values,
 * the tensor infos, padding to `general.alignment` (default 32), then the
 * tensor data, each tensor at an aligned offset. All little-endian.
 * Every read goes through `rd_*`, which checks the bytes are there first.
 */
#include "gguf.h"
#include "dtype.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rd {
	const uint8_t *p;
	size_t n, off;
	const char *name;
	char *err;
};

static bool need(struct rd *r, uint64_t k, const char *what)
{
	if (k > r->n - r->off) {
		seterr(r->err, INFERD_EFORMAT, "%s: truncated file: %s at byte %zu needs %llu bytes, %zu left",
		       r->name, what, r->off, (unsigned long long)k, r->n - r->off);
		return false;
	}
	return true;
}

static bool rd_bytes(struct rd *r, void *dst, size_t k, const char *what)
{
	if (!need(r, k, what))
		return false;
	memcpy(dst, r->p + r->off, k);
	r->off += k;
	return true;
}

static bool rd_u32(struct rd *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static bool rd_u64(struct rd *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

static bool rd_str(struct rd *r, struct gguf_str *s, const char *what)
{
	uint64_t n;
	if (!rd_u64(r, &n, what) || !need(r, n, what))
		return false;
	s->p = (const char *)r->p + r->off;
	s->n = n;
	r->off += n;
	return true;
}

static const int vsize[GV_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *vnames[GV_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
				       "bool", "string", "array", "u64", "i64", "f64"};

const char *gguf_type_name(uint32_t t) { return t < GV_COUNT ? vnames[t] : "unknown"; }

static void read_scalar(const uint8_t *p, uint32_t type, struct gguf_kv *kv)
{
	uint8_t b[8] = {0};
	memcpy(b, p, (size_t)vsize[type]);
	switch (type) {
	case GV_U8: kv->v.u = b[0]; break;
	case GV_I8: kv->v.i = (int8_t)b[0]; break;
	case GV_BOOL: kv->v.u = b[0] != 0; break;
	case GV_U16: { uint16_t x; memcpy(&x, b, 2); kv->v.u = x; break; }
	case GV_I16: { int16_t x; memcpy(&x, b, 2); kv->v.i = x; break; }
	case GV_U32: { uint32_t x; memcpy(&x, b, 4); kv->v.u = x; break; }
	case GV_I32: { int32_t x; memcpy(&x, b, 4); kv->v.i = x; break; }
	case GV_F32: { float x; memcpy(&x, b, 4); kv->v.f = x; break; }
	case GV_U64: { uint64_t x; memcpy(&x, b, 8); kv->v.u = x; break; }
	case GV_I64: { int64_t x; memcpy(&x, b, 8); kv->v.i = x; break; }
	case GV_F64: { double x; memcpy(&x, b, 8); kv->v.f = x; break; }
	}
}

static int parse_kv(struct rd *r, struct gguf_kv *kv, uint64_t idx)
{
	char what[96];
	snprintf(what, sizeof what, "key of key/value %llu", (unsigned long long)idx);
	if (!rd_str(r, &kv->key, what) || !rd_u32(r, &kv->type, "key/value type"))
		return INFERD_EFORMAT;
	int kl = kv->key.n > 64 ? 64 : (int)kv->key.n;
	if (kv->type >= GV_COUNT)
		return seterr(r->err, INFERD_EFORMAT, "%s: key '%.*s' has unknown value type %u",
			      r->name, kl, kv->key.p, kv->type);
	snprintf(what, sizeof what, "value of key '%.*s'", kl, kv->key.p);
	if (kv->type == GV_STR)
		return rd_str(r, &kv->v.s, what) ? 0 : INFERD_EFORMAT;
	if (kv->type != GV_ARR) {
		if (!need(r, (uint64_t)vsize[kv->type], what))
			return INFERD_EFORMAT;
		read_scalar(r->p + r->off, kv->type, kv);
		r->off += (size_t)vsize[kv->type];
		return 0;
	}
	if (!rd_u32(r, &kv->arr_type, what) || !rd_u64(r, &kv->arr_n, what))
		return INFERD_EFORMAT;
	if (kv->arr_type >= GV_COUNT || kv->arr_type == GV_ARR)
		return seterr(r->err, INFERD_EFORMAT, "%s: key '%.*s' is an array of unsupported element type %u",
			      r->name, kl, kv->key.p, kv->arr_type);
	kv->arr_data = r->p + r->off;
	if (kv->arr_type != GV_STR) {
		uint64_t bytes;
		if (!mul_ok(kv->arr_n, (uint64_t)vsize[kv->arr_type], &bytes))
			return seterr(r->err, INFERD_EFORMAT, "%s: key '%.*s' is an array of %llu %s values, too many for any file",
				      r->name, kl, kv->key.p, (unsigned long long)kv->arr_n, vnames[kv->arr_type]);
		if (!need(r, bytes, what))
			return INFERD_EFORMAT;
		r->off += bytes;
		return 0;
	}
	if (kv->arr_n > (r->n - r->off) / 8) /* each string takes at least 8 bytes */
		return seterr(r->err, INFERD_EFORMAT, "%s: truncated file: %s at byte %zu is an array of %llu strings, %zu bytes left",
			      r->name, what, r->off, (unsigned long long)kv->arr_n, r->n - r->off);
	for (uint64_t i = 0; i < kv->arr_n; i++) {
		struct gguf_str s;
		if (!rd_str(r, &s, what))
			return INFERD_EFORMAT;
	}
	return 0;
}

static int parse_tensor(struct rd *r, struct gguf_tensor *t, uint64_t idx)
{
	char what[96];
	snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)idx);
	if (!rd_str(r, &t->name, what))
		return INFERD_EFORMAT;
	int nl = t->name.n > 96 ? 96 : (int)t->name.n;
	snprintf(what, sizeof what, "info of tensor '%.*s'", nl, t->name.p);
	if (!rd_u32(r, &t->n_dims, what))
		return INFERD_EFORMAT;
	if (t->n_dims < 1 || t->n_dims > 4)
		return seterr(r->err, INFERD_EFORMAT, "%s: tensor '%.*s' has %u dimensions (1 to 4 allowed)",
			      r->name, nl, t->name.p, t->n_dims);
	uint64_t n = 1;
	for (uint32_t d = 0; d < 4; d++) {
		t->ne[d] = 1;
		if (d < t->n_dims && !rd_u64(r, &t->ne[d], what))
			return INFERD_EFORMAT;
		if (t->ne[d] == 0 || !mul_ok(n, t->ne[d], &n) || n > (1ull << 48))
			return seterr(r->err, INFERD_EFORMAT, "%s: tensor '%.*s' has an invalid shape (dimension %u is %llu)",
				      r->name, nl, t->name.p, d, (unsigned long long)t->ne[d]);
	}
	if (!rd_u32(r, &t->type, what) || !rd_u64(r, &t->offset, what))
		return INFERD_EFORMAT;
	const struct dtype_info *ti = dtype_get(t->type);
	if (!ti)
		return seterr(r->err, INFERD_EFORMAT, "%s: tensor '%.*s' has unknown type %u", r->name, nl,
			      t->name.p, t->type);
	uint64_t rowb;
	if (!dtype_row_bytes((int)t->type, t->ne[0], &rowb))
		return seterr(r->err, INFERD_EFORMAT,
			      "%s: tensor '%.*s': row of %llu values is not a whole number of %s blocks (%d)",
			      r->name, nl, t->name.p, (unsigned long long)t->ne[0], ti->name, ti->block);
	if (!mul_ok(rowb, n / t->ne[0], &t->nbytes))
		return seterr(r->err, INFERD_EFORMAT, "%s: tensor '%.*s' is too large", r->name, nl, t->name.p);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	const struct gguf_str *x = *(const struct gguf_str *const *)a, *y = *(const struct gguf_str *const *)b;
	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	int c = x->n ? memcmp(x->p, y->p, x->n) : 0;
	return c ? c : (x > y) - (x < y);
}

/* Refuse a file in which two of the n strings (the `field` of entries
 * `stride` bytes apart: key/value keys, tensor names) are equal. Sorting
 * keeps this O(n log n): the counts are only bounded by the file size, and
 * comparing every pair of a few million tensor names would take hours. */
static int check_unique(const void *first, size_t stride, size_t field, uint64_t n, const char *name,
			const char *what, char *err)
{
	if (n < 2)
		return 0;
	const struct gguf_str **v = malloc(n * sizeof *v);
	if (!v)
		return seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
	for (uint64_t i = 0; i < n; i++)
		v[i] = (const struct gguf_str *)((const char *)first + i * stride + field);
	qsort(v, n, sizeof *v, cmp_str);
	int rc = 0;
	for (uint64_t i = 1; i < n && !rc; i++)
		if (v[i]->n == v[i - 1]->n && (!v[i]->n || memcmp(v[i]->p, v[i - 1]->p, v[i]->n) == 0))
			rc = seterr(err, INFERD_EFORMAT, "%s: %s '%.*s' appears twice", name, what,
				    v[i]->n > 96 ? 96 : (int)v[i]->n, v[i]->p);
	free(v);
	return rc;
}

int gguf_parse(const uint8_t *data, size_t size, const char *name, struct gguf *g, char *err)
{
	memset(g, 0, sizeof *g);
	struct rd r = {.p = data, .n = size, .off = 0, .name = name, .err = err};
	int rc = INFERD_EFORMAT;
	char magic[4];
	if (!rd_bytes(&r, magic, 4, "magic"))
		return INFERD_EFORMAT;
	if (memcmp(magic, "GGUF", 4) != 0)
		return seterr(err, INFERD_EFORMAT, "%s: bad magic (not a GGUF file)", name);
	if (!rd_u32(&r, &g->version, "version"))
		return INFERD_EFORMAT;
	if (g->version != 2 && g->version != 3)
		return seterr(err, INFERD_EUNSUPPORTED, "%s: unsupported GGUF version %u (2 and 3 are supported)",
			      name, g->version);
	if (!rd_u64(&r, &g->n_tensors, "tensor count") || !rd_u64(&r, &g->n_kv, "key/value count"))
		return INFERD_EFORMAT;
	/* every key/value takes >= 12 bytes and every tensor info >= 28: a count
	 * the file cannot hold is refused before anything is allocated */
	if (g->n_kv > size / 12 || g->n_tensors > size / 28)
		return seterr(err, INFERD_EFORMAT,
			      "%s: truncated or corrupt header: %llu tensors and %llu key/values cannot fit in %zu bytes",
			      name, (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, size);
	g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
	g->t = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->t);
	if (!g->kv || !g->t) {
		rc = seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
		goto fail;
	}
	for (uint64_t i = 0; i < g->n_kv; i++)
		if ((rc = parse_kv(&r, &g->kv[i], i)) != 0)
			goto fail;
	if ((rc = check_unique(g->kv, sizeof *g->kv, offsetof(struct gguf_kv, key), g->n_kv, name, "key", err)) != 0)
		goto fail;
	g->alignment = 32;
	const struct gguf_kv *al = gguf_find(g, "general.alignment");
	if (al) {
		if (al->type != GV_U32 || al->v.u == 0 || (al->v.u & (al->v.u - 1)) || al->v.u > 1u << 20) {
			rc = seterr(err, INFERD_EFORMAT, "%s: general.alignment must be a u32 power of two", name);
			goto fail;
		}
		g->alignment = al->v.u;
	}
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if ((rc = parse_tensor(&r, &g->t[i], i)) != 0)
			goto fail;
	g->data_off = (r.off + g->alignment - 1) / g->alignment * g->alignment;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct gguf_tensor *t = &g->t[i];
		int nl = t->name.n > 96 ? 96 : (int)t->name.n;
		uint64_t start, end;
		if (t->offset % g->alignment) {
			rc = seterr(err, INFERD_EFORMAT, "%s: tensor '%.*s' offset %llu is not aligned to %llu", name, nl,
				    t->name.p, (unsigned long long)t->offset, (unsigned long long)g->alignment);
			goto fail;
		}
		if (!add_ok(g->data_off, t->offset, &start) || !add_ok(start, t->nbytes, &end) || end > size) {
			rc = seterr(err, INFERD_EFORMAT,
				    "%s: tensor '%.*s' data (offset %llu, %llu bytes) runs past the end of the file (%zu bytes)",
				    name, nl, t->name.p, (unsigned long long)t->offset, (unsigned long long)t->nbytes, size);
			goto fail;
		}
		t->data = data + start;
	}
	if ((rc = check_unique(g->t, sizeof *g->t, offsetof(struct gguf_tensor, name), g->n_tensors, name, "tensor",
			       err)) != 0)
		goto fail;
	return 0;
fail:
	free(g->kv);
	free(g->t);
	g->kv = NULL;
	g->t = NULL;
	return rc;
}

int gguf_open(const char *path, struct gguf *g, char *err)
{
	struct mapped_file f;
	int rc = map_file(path, &f, err);
	if (rc)
		return rc;
	rc = gguf_parse(f.data, f.size, path, g, err);
	if (rc) {
		unmap_file(&f);
		return rc;
	}
	g->f = f;
	return 0;
}

void gguf_close(struct gguf *g)
{
	free(g->kv);
	free(g->t);
	unmap_file(&g->f);
	memset(g, 0, sizeof *g);
}

bool gguf_str_eq(struct gguf_str s, const char *c)
{
	size_t n = strlen(c);
	return s.n == n && memcmp(s.p, c, n) == 0;
}

const struct gguf_kv *gguf_find(const struct gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (gguf_str_eq(g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

bool gguf_get_int(const struct gguf *g, const char *key, int64_t *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return false;
	switch (kv->type) {
	case GV_U8: case GV_U16: case GV_U32: case GV_U64: case GV_BOOL:
		if (kv->v.u > INT64_MAX)
			return false;
		*out = (int64_t)kv->v.u;
		return true;
	case GV_I8: case GV_I16: case GV_I32: case GV_I64:
		*out = kv->v.i;
		return true;
	}
	return false;
}

bool gguf_get_float(const struct gguf *g, const char *key, double *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return false;
	if (kv->type == GV_F32 || kv->type == GV_F64) {
		*out = kv->v.f;
		return true;
	}
	int64_t i;
	if (!gguf_get_int(g, key, &i))
		return false;
	*out = (double)i;
	return true;
}

bool gguf_get_str(const struct gguf *g, const char *key, char *buf, size_t cap)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv || kv->type != GV_STR || kv->v.s.n >= cap)
		return false;
	memcpy(buf, kv->v.s.p, kv->v.s.n);
	buf[kv->v.s.n] = 0;
	return true;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (gguf_str_eq(g->t[i].name, name))
			return &g->t[i];
	return NULL;
}

/* ---------------- writer ---------------- */

struct wtensor {
	char *name;
	uint32_t type, n_dims;
	uint64_t ne[4], nbytes, offset;
	gguf_produce_fn produce;
	void *ctx;
	int idx;
};

struct gguf_writer {
	uint8_t *kv;           /* serialized key/values */
	size_t kv_len, kv_cap;
	uint64_t n_kv;
	struct wtensor *t;
	size_t n_t, cap_t;
	bool oom;
};

struct gguf_writer *gguf_w_new(void) { return calloc(1, sizeof(struct gguf_writer)); }

void gguf_w_free(struct gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_t; i++)
		free(w->t[i].name);
	free(w->t);
	free(w->kv);
	free(w);
}

static void put(struct gguf_writer *w, const void *p, size_t n)
{
	if (w->kv_len + n > w->kv_cap) {
		size_t cap = w->kv_cap ? w->kv_cap * 2 : 4096;
		while (cap < w->kv_len + n)
			cap *= 2;
		uint8_t *nb = realloc(w->kv, cap);
		if (!nb) {
			w->oom = true;
			return;
		}
		w->kv = nb;
		w->kv_cap = cap;
	}
	memcpy(w->kv + w->kv_len, p, n);
	w->kv_len += n;
}

static void put_u32(struct gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(struct gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(struct gguf_writer *w, const char *s)
{
	put_u64(w, strlen(s));
	put(w, s, strlen(s));
}
static void put_key(struct gguf_writer *w, const char *key, uint32_t type)
{
	put_str(w, key);
	put_u32(w, type);
	w->n_kv++;
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *val) { put_key(w, key, GV_STR); put_str(w, val); }
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t val) { put_key(w, key, GV_U32); put_u32(w, val); }
void gguf_w_f32(struct gguf_writer *w, const char *key, float val) { put_key(w, key, GV_F32); put(w, &val, 4); }
void gguf_w_bool(struct gguf_writer *w, const char *key, bool val)
{
	uint8_t b = val;
	put_key(w, key, GV_BOOL);
	put(w, &b, 1);
}
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *vals, uint64_t n)
{
	put_key(w, key, GV_ARR);
	put_u32(w, GV_STR);
	put_u64(w, n);
	for (uint64_t i = 0; i < n; i++)
		put_str(w, vals[i]);
}
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *vals, uint64_t n)
{
	put_key(w, key, GV_ARR);
	put_u32(w, GV_F32);
	put_u64(w, n);
	put(w, vals, n * 4);
}
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *vals, uint64_t n)
{
	put_key(w, key, GV_ARR);
	put_u32(w, GV_I32);
	put_u64(w, n);
	put(w, vals, n * 4);
}

int gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t type, const uint64_t *ne,
		  int n_dims, gguf_produce_fn produce, void *ctx, int idx, char *err)
{
	struct wtensor t = {.type = type, .n_dims = (uint32_t)n_dims, .produce = produce, .ctx = ctx, .idx = idx};
	uint64_t n = 1;
	for (int d = 0; d < 4; d++) {
		t.ne[d] = d < n_dims ? ne[d] : 1;
		n *= t.ne[d];
	}
	uint64_t rowb;
	if (!dtype_row_bytes((int)type, t.ne[0], &rowb))
		return seterr(err, INFERD_EINVAL, "tensor %s: %llu values per row do not fit type %u", name,
			      (unsigned long long)t.ne[0], type);
	t.nbytes = rowb * (n / t.ne[0]);
	if (w->n_t == w->cap_t) {
		size_t cap = w->cap_t ? w->cap_t * 2 : 64;
		struct wtensor *nt = realloc(w->t, cap * sizeof *nt);
		if (!nt)
			return seterr(err, INFERD_ENOMEM, "out of memory");
		w->t = nt;
		w->cap_t = cap;
	}
	t.name = strdup(name);
	if (!t.name)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	w->t[w->n_t++] = t;
	return 0;
}

static bool wr(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

static bool pad_to(FILE *f, uint64_t *pos, uint64_t align)
{
	static const uint8_t zeros[64];
	while (*pos % align) {
		uint64_t k = align - *pos % align;
		if (k > sizeof zeros)
			k = sizeof zeros;
		if (fwrite(zeros, 1, k, f) != k)
			return false;
		*pos += k;
	}
	return true;
}

int gguf_w_write(struct gguf_writer *w, const char *path, char *err)
{
	const uint64_t align = 32;
	if (w->oom)
		return seterr(err, INFERD_ENOMEM, "%s: out of memory building the header", path);
	/* the tensor infos go in a second buffer of the same kind */
	struct gguf_writer hdr = {0};
	uint64_t off = 0;
	for (size_t i = 0; i < w->n_t; i++) {
		struct wtensor *t = &w->t[i];
		t->offset = off;
		off = (off + t->nbytes + align - 1) / align * align;
		put_str(&hdr, t->name);
		put_u32(&hdr, t->n_dims);
		for (uint32_t d = 0; d < t->n_dims; d++)
			put_u64(&hdr, t->ne[d]);
		put_u32(&hdr, t->type);
		put_u64(&hdr, t->offset);
	}
	int rc = 0;
	uint8_t *buf = NULL;
	FILE *f = NULL;
	if (hdr.oom) {
		rc = seterr(err, INFERD_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	f = fopen(path, "wb");
	if (!f) {
		rc = seterr(err, INFERD_EIO, "%s: cannot create: %s", path, strerror(errno));
		goto out;
	}
	uint32_t version = 3;
	uint64_t n_t = w->n_t, pos = 24 + w->kv_len + hdr.kv_len;
	bool ok = wr(f, "GGUF", 4) && wr(f, &version, 4) && wr(f, &n_t, 8) && wr(f, &w->n_kv, 8) &&
		  wr(f, w->kv, w->kv_len) && wr(f, hdr.kv, hdr.kv_len) && pad_to(f, &pos, align);
	for (size_t i = 0; ok && i < w->n_t; i++) {
		struct wtensor *t = &w->t[i];
		uint8_t *nb = realloc(buf, t->nbytes ? t->nbytes : 1);
		if (!nb) {
			rc = seterr(err, INFERD_ENOMEM, "%s: out of memory for tensor %s", path, t->name);
			goto out;
		}
		buf = nb;
		if ((rc = t->produce(t->ctx, t->idx, buf, t->nbytes, err)) != 0)
			goto out;
		ok = wr(f, buf, t->nbytes);
		pos += t->nbytes;
		ok = ok && pad_to(f, &pos, align);
	}
	if (!ok)
		rc = seterr(err, INFERD_EIO, "%s: write failed: %s", path, strerror(errno));
out:
	if (f && fclose(f) != 0 && !rc)
		rc = seterr(err, INFERD_EIO, "%s: write failed: %s", path, strerror(errno));
	if (rc && f)
		remove(path);
	free(buf);
	free(hdr.kv);
	return rc;
}
