/*
 * safetensors.c — see safetensors.h. Layout: u64 LE header length N, N
 * bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, ...,
 * "__metadata__": {...}}, then the data section; offsets are relative to
 * the start of the data section. The writer pads the header with spaces to
 * a multiple of 8 bytes (as the Python library does), so tensors start
 * 8-byte aligned.
 */
#include "safetensors.h"
#include "dtype.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; int type, size; } st_types[] = {
	{"F32", DT_F32, 4}, {"F16", DT_F16, 2}, {"BF16", DT_BF16, 2},
	{"F64", -1, 8}, {"I64", -1, 8}, {"I32", -1, 4}, {"U32", -1, 4}, {"I16", -1, 2},
	{"U16", -1, 2}, {"I8", -1, 1}, {"U8", -1, 1}, {"BOOL", -1, 1}, {"U64", -1, 8},
	{"F8_E4M3", -1, 1}, {"F8_E5M2", -1, 1},
};

void st_free_tensors(struct st_tensor *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

static int parse_one(const char *file, const char *key, json_t *v, const uint8_t *data, uint64_t data_len,
		     struct st_tensor *t, char *err)
{
	if (!json_is_object(v))
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': header entry is not an object", file, key);
	json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
	       *of = json_object_get(v, "data_offsets");
	if (!json_is_string(dt))
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", file, key);
	int size = 0;
	t->type = -1;
	for (size_t i = 0; i < sizeof st_types / sizeof st_types[0]; i++)
		if (strcmp(st_types[i].name, json_string_value(dt)) == 0) {
			size = st_types[i].size;
			t->type = st_types[i].type;
		}
	if (!size)
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': unknown dtype \"%.16s\"", file, key,
			      json_string_value(dt));
	snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(dt));
	if (!json_is_array(sh) || json_array_size(sh) > 4)
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': \"shape\" must be an array of at most 4 sizes",
			      file, key);
	uint64_t n = 1;
	t->n_dims = (int)json_array_size(sh);
	for (int d = 0; d < t->n_dims; d++) {
		json_t *e = json_array_get(sh, (size_t)d);
		if (!json_is_integer(e) || json_integer_value(e) < 0 || !mul_ok(n, (uint64_t)json_integer_value(e), &n) ||
		    n > (1ull << 48))
			return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': invalid size in \"shape\" at dimension %d",
				      file, key, d);
		t->shape[d] = (uint64_t)json_integer_value(e);
	}
	if (!json_is_array(of) || json_array_size(of) != 2 || !json_is_integer(json_array_get(of, 0)) ||
	    !json_is_integer(json_array_get(of, 1)))
		return seterr(err, INFERD_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", file, key);
	json_int_t b = json_integer_value(json_array_get(of, 0)), e = json_integer_value(json_array_get(of, 1));
	if (b < 0 || e < b || (uint64_t)e > data_len)
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s': data_offsets [%lld, %lld] lie outside the data section (%llu bytes)", file,
			      key, (long long)b, (long long)e, (unsigned long long)data_len);
	t->nbytes = (uint64_t)(e - b);
	if (t->nbytes != n * (uint64_t)size)
		return seterr(err, INFERD_EFORMAT,
			      "%s: tensor '%s': data_offsets hold %llu bytes but shape and dtype %s need %llu", file, key,
			      (unsigned long long)t->nbytes, t->dtype, (unsigned long long)(n * (uint64_t)size));
	t->data = data + b;
	return 0;
}

int st_parse(const uint8_t *data, size_t size, const char *name, int file_idx, struct st_tensor **tp, size_t *np,
	     char *err)
{
	uint64_t hlen;
	if (size < 8)
		return seterr(err, INFERD_EFORMAT, "%s: truncated file (%zu bytes, no header length)", name, size);
	memcpy(&hlen, data, 8);
	if (hlen > size - 8 || hlen > 100u << 20)
		return seterr(err, INFERD_EFORMAT, "%s: header length %llu exceeds the file (%zu bytes)", name,
			      (unsigned long long)hlen, size);
	json_error_t je;
	json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return seterr(err, INFERD_EFORMAT, "%s: malformed JSON header at byte %d: %s", name, je.position,
			      je.text);
	int rc = 0;
	if (!json_is_object(root)) {
		rc = seterr(err, INFERD_EFORMAT, "%s: header is not a JSON object", name);
		goto out;
	}
	size_t n0 = *np, add = json_object_size(root);
	struct st_tensor *t = realloc(*tp, (n0 + add + 1) * sizeof *t);
	if (!t) {
		rc = seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
		goto out;
	}
	*tp = t;
	const char *key;
	json_t *v;
	const uint8_t *base = data + 8 + hlen;
	uint64_t dlen = size - 8 - hlen;
	json_object_foreach(root, key, v)
	{
		if (strcmp(key, "__metadata__") == 0)
			continue;
		struct st_tensor *x = &t[*np];
		memset(x, 0, sizeof *x);
		if ((rc = parse_one(name, key, v, base, dlen, x, err)) != 0)
			goto out;
		x->file = file_idx;
		if (!(x->name = strdup(key))) {
			rc = seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
			goto out;
		}
		(*np)++;
	}
out:
	json_decref(root);
	return rc;
}

static int add_file(struct st_set *s, const char *dir, const char *fname, char *err)
{
	for (int i = 0; i < s->n_files; i++)
		if (strcmp(s->file_names[i], fname) == 0)
			return 0;
	if (strchr(fname, '/') || strcmp(fname, "..") == 0 || !*fname)
		return seterr(err, INFERD_EFORMAT, "%s: shard name \"%s\" must be a plain file name", dir, fname);
	char path[PATH_MAX];
	if (!path_join(path, sizeof path, dir, fname))
		return seterr(err, INFERD_EINVAL, "%s: path too long", dir);
	struct mapped_file *nf = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *nf);
	if (nf)
		s->files = nf;
	char **nn = realloc(s->file_names, (size_t)(s->n_files + 1) * sizeof *nn);
	if (nn)
		s->file_names = nn;
	if (!nf || !nn || !(s->file_names[s->n_files] = strdup(fname)))
		return seterr(err, INFERD_ENOMEM, "out of memory");
	int rc = map_file(path, &s->files[s->n_files], err);
	if (rc) {
		free(s->file_names[s->n_files]);
		return rc;
	}
	int idx = s->n_files++;
	return st_parse(s->files[idx].data, s->files[idx].size, path, idx, &s->t, &s->n_t, err);
}

int st_open_dir(const char *dir, struct st_set *s, char *err)
{
	memset(s, 0, sizeof *s);
	char path[PATH_MAX];
	if (!path_join(path, sizeof path, dir, "model.safetensors.index.json"))
		return seterr(err, INFERD_EINVAL, "%s: path too long", dir);
	FILE *f = fopen(path, "rb");
	if (!f) {
		int rc = add_file(s, dir, "model.safetensors", err);
		if (rc)
			st_close(s);
		return rc;
	}
	json_error_t je;
	json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
	fclose(f);
	if (!root)
		return seterr(err, INFERD_EFORMAT, "%s: malformed JSON at line %d column %d: %s", path, je.line,
			      je.column, je.text);
	int rc = 0;
	json_t *map = json_object_get(root, "weight_map");
	if (!json_is_object(map)) {
		rc = seterr(err, INFERD_EFORMAT, "%s: missing \"weight_map\" object", path);
		goto out;
	}
	const char *key;
	json_t *v;
	json_object_foreach(map, key, v)
	{
		if (!json_is_string(v)) {
			rc = seterr(err, INFERD_EFORMAT, "%s: weight_map[\"%s\"] is not a file name", path, key);
			goto out;
		}
		if ((rc = add_file(s, dir, json_string_value(v), err)) != 0)
			goto out;
	}
	json_object_foreach(map, key, v)
	{
		const struct st_tensor *t = st_find(s, key);
		if (!t || strcmp(s->file_names[t->file], json_string_value(v)) != 0) {
			rc = seterr(err, INFERD_EFORMAT, "%s: tensor '%s' is not in shard %s", path, key,
				    json_string_value(v));
			goto out;
		}
	}
	for (size_t i = 0; i < s->n_t; i++)
		for (size_t j = i + 1; j < s->n_t; j++)
			if (strcmp(s->t[i].name, s->t[j].name) == 0) {
				rc = seterr(err, INFERD_EFORMAT, "%s: tensor '%s' appears in two shards", dir,
					    s->t[i].name);
				goto out;
			}
out:
	json_decref(root);
	if (rc)
		st_close(s);
	return rc;
}

void st_close(struct st_set *s)
{
	st_free_tensors(s->t, s->n_t);
	for (int i = 0; i < s->n_files; i++) {
		unmap_file(&s->files[i]);
		free(s->file_names[i]);
	}
	free(s->files);
	free(s->file_names);
	memset(s, 0, sizeof *s);
}

const struct st_tensor *st_find(const struct st_set *s, const char *name)
{
	for (size_t i = 0; i < s->n_t; i++)
		if (strcmp(s->t[i].name, name) == 0)
			return &s->t[i];
	return NULL;
}

static uint64_t st_elem_size(const char *dtype)
{
	for (size_t i = 0; i < sizeof st_types / sizeof st_types[0]; i++)
		if (strcmp(st_types[i].name, dtype) == 0)
			return (uint64_t)st_types[i].size;
	return 0;
}

int st_write(const char *path, const struct st_wtensor *t, int n, const char *format, st_produce_fn produce,
	     void *ctx, char *err)
{
	json_t *root = json_object();
	uint64_t off = 0, biggest = 0;
	int rc = 0;
	char *hdr = NULL;
	uint8_t *buf = NULL;
	FILE *f = NULL;
	if (!root)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	if (format)
		json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", format));
	for (int i = 0; i < n; i++) {
		uint64_t sz = st_elem_size(t[i].dtype);
		json_t *shape = json_array();
		for (int d = 0; d < t[i].n_dims; d++) {
			sz *= t[i].shape[d];
			json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]));
		}
		if (!sz && !st_elem_size(t[i].dtype)) {
			json_decref(shape);
			rc = seterr(err, INFERD_EINVAL, "%s: tensor '%s': unknown dtype %s", path, t[i].name, t[i].dtype);
			goto out;
		}
		json_object_set_new(root, t[i].name,
				    json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype, "shape", shape, "data_offsets",
					      (json_int_t)off, (json_int_t)(off + sz)));
		off += sz;
		biggest = sz > biggest ? sz : biggest;
	}
	hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	buf = malloc(biggest ? biggest : 1);
	if (!hdr || !buf) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto out;
	}
	size_t hl = strlen(hdr);
	uint64_t padded = (hl + 7) / 8 * 8;
	if (!(f = fopen(path, "wb"))) {
		rc = seterr(err, INFERD_EIO, "%s: cannot create the file", path);
		goto out;
	}
	uint8_t len[8];
	for (int k = 0; k < 8; k++)
		len[k] = (uint8_t)(padded >> (8 * k));
	int ok = fwrite(len, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
	for (uint64_t k = hl; ok && k < padded; k++)
		ok = fputc(' ', f) != EOF;
	for (int i = 0; ok && i < n; i++) {
		uint64_t sz = st_elem_size(t[i].dtype);
		for (int d = 0; d < t[i].n_dims; d++)
			sz *= t[i].shape[d];
		if ((rc = produce(ctx, i, buf, sz, err)))
			goto out;
		ok = fwrite(buf, 1, sz, f) == sz;
	}
	if (fclose(f) != 0)
		ok = 0;
	f = NULL;
	if (!ok)
		rc = seterr(err, INFERD_EIO, "%s: write failed (disk full?)", path);
out:
	if (f)
		fclose(f);
	if (rc)
		remove(path);
	free(hdr);
	free(buf);
	json_decref(root);
	return rc;
}
