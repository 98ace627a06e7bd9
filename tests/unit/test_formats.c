/*
 * test_formats.c — file formats and numeric conversions:
 *   - GGUF metadata of every value type parses to the values written;
 *     the writer's output re-reads exactly
 *   - f16 / bf16 conversions round to nearest even (exhaustive round trip)
 *   - the Q8_0 quantizer's error never exceeds the max/127 rule's
 *   - sharded safetensors (index.json) give bitwise the single-file logits
 *   - older config keys (rope_theta + rope_scaling) equal the newer
 *     rope_parameters bitwise; linear and yarn scaling keep their
 *     parameters through GGUF and follow Hugging Face's formulas
 */
#include "testlib.h"
#include "inferd.h"
#include "gguf.h"
#include "dtype.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a raw GGUF builder for the reader test ---- */
struct buf { unsigned char b[4096]; size_t n; };
static void put(struct buf *b, const void *p, size_t k) { memcpy(b->b + b->n, p, k); b->n += k; }
static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void put_kv(struct buf *b, const char *k, uint32_t type, const void *v, size_t n)
{
	put_str(b, k);
	put_u32(b, type);
	put(b, v, n);
}

static void gguf_every_type(void)
{
	struct buf b = {.n = 0};
	put(&b, "GGUF", 4);
	put_u32(&b, 3);
	put_u64(&b, 1);  /* tensors */
	put_u64(&b, 14); /* kvs */
	uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
	uint32_t u32 = 4000000000u; int32_t i32 = -2000000000; float f32 = 1.5f; uint8_t bo = 1;
	uint64_t u64 = 1ull << 40; int64_t i64 = -(1ll << 40); double f64 = 0.125;
	put_kv(&b, "t.u8", GV_U8, &u8, 1);
	put_kv(&b, "t.i8", GV_I8, &i8, 1);
	put_kv(&b, "t.u16", GV_U16, &u16, 2);
	put_kv(&b, "t.i16", GV_I16, &i16, 2);
	put_kv(&b, "t.u32", GV_U32, &u32, 4);
	put_kv(&b, "t.i32", GV_I32, &i32, 4);
	put_kv(&b, "t.f32", GV_F32, &f32, 4);
	put_kv(&b, "t.bool", GV_BOOL, &bo, 1);
	put_str(&b, "t.str"); put_u32(&b, GV_STR); put_str(&b, "héllo");
	put_kv(&b, "t.u64", GV_U64, &u64, 8);
	put_kv(&b, "t.i64", GV_I64, &i64, 8);
	put_kv(&b, "t.f64", GV_F64, &f64, 8);
	put_str(&b, "t.arr"); put_u32(&b, GV_ARR); put_u32(&b, GV_STR); put_u64(&b, 2); put_str(&b, "a"); put_str(&b, "bc");
	put_str(&b, "general.alignment"); put_u32(&b, GV_U32); put_u32(&b, 64);
	put_str(&b, "w"); put_u32(&b, 2); put_u64(&b, 4); put_u64(&b, 2); put_u32(&b, DT_F32); put_u64(&b, 0);
	size_t data = (b.n + 63) / 64 * 64;
	memset(b.b + b.n, 0, data - b.n);
	b.n = data;
	for (int i = 0; i < 8; i++) {
		float x = (float)i;
		put(&b, &x, 4);
	}
	struct gguf g;
	char err[INFERD_ERR_LEN];
	int rc = gguf_parse(b.b, b.n, "mem", &g, err);
	CHECK(rc == 0, "parse: %s", err);
	if (rc)
		return;
	int64_t iv;
	double fv;
	char s[32];
	CHECK(gguf_get_int(&g, "t.u8", &iv) && iv == 200, "u8 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.i8", &iv) && iv == -100, "i8 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.u16", &iv) && iv == 60000, "u16 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.i16", &iv) && iv == -30000, "i16 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.u32", &iv) && iv == 4000000000ll, "u32 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.i32", &iv) && iv == -2000000000, "i32 %lld", (long long)iv);
	CHECK(gguf_get_float(&g, "t.f32", &fv) && fv == 1.5, "f32 %g", fv);
	CHECK(gguf_get_int(&g, "t.bool", &iv) && iv == 1, "bool %lld", (long long)iv);
	CHECK(gguf_get_str(&g, "t.str", s, sizeof s) && strcmp(s, "héllo") == 0, "str %s", s);
	CHECK(gguf_get_int(&g, "t.u64", &iv) && iv == 1ll << 40, "u64 %lld", (long long)iv);
	CHECK(gguf_get_int(&g, "t.i64", &iv) && iv == -(1ll << 40), "i64 %lld", (long long)iv);
	CHECK(gguf_get_float(&g, "t.f64", &fv) && fv == 0.125, "f64 %g", fv);
	CHECK(!gguf_get_int(&g, "t.str", &iv), "a string read as an integer");
	const struct gguf_kv *arr = gguf_find(&g, "t.arr");
	CHECK(arr && arr->type == GV_ARR && arr->arr_type == GV_STR && arr->arr_n == 2, "string array");
	CHECK(g.alignment == 64 && g.data_off == data, "alignment %llu, data at %llu (want %zu)",
	      (unsigned long long)g.alignment, (unsigned long long)g.data_off, data);
	const struct gguf_tensor *t = gguf_find_tensor(&g, "w");
	CHECK(t && t->ne[0] == 4 && t->ne[1] == 2 && t->nbytes == 32 && ((const float *)t->data)[7] == 7.0f,
	      "tensor w wrong");
	gguf_close(&g);
	/* every strict prefix of the file is rejected, never read past */
	int rejected = 0;
	for (size_t k = 0; k < b.n; k++) {
		unsigned char *cut = malloc(k ? k : 1);
		memcpy(cut, b.b, k);
		if (gguf_parse(cut, k, "cut", &g, err) != 0)
			rejected++;
		else
			gguf_close(&g);
		free(cut);
	}
	CHECK(rejected == (int)b.n, "%d of %zu truncations rejected", rejected, b.n);
}

static void gguf_writer_roundtrip(void)
{
	struct gguf_writer *w = gguf_w_new();
	const char *strs[] = {"x", "", "yz"};
	float fs[] = {1, -2, 3.5f};
	int32_t is[] = {-1, 0, 7};
	gguf_w_str(w, "a.s", "value");
	gguf_w_u32(w, "a.u", 42);
	gguf_w_f32(w, "a.f", 0.25f);
	gguf_w_bool(w, "a.b", true);
	gguf_w_arr_str(w, "a.as", strs, 3);
	gguf_w_arr_f32(w, "a.af", fs, 3);
	gguf_w_arr_i32(w, "a.ai", is, 3);
	const char *path = t_tmp("w.gguf");
	CHECK(gguf_w_write(w, path, NULL) == 0, "write");
	gguf_w_free(w);
	struct gguf g;
	char err[INFERD_ERR_LEN], s[16];
	int64_t iv;
	double fv;
	CHECK(gguf_open(path, &g, err) == 0, "%s", err);
	CHECK(gguf_get_str(&g, "a.s", s, sizeof s) && !strcmp(s, "value"), "a.s");
	CHECK(gguf_get_int(&g, "a.u", &iv) && iv == 42, "a.u");
	CHECK(gguf_get_float(&g, "a.f", &fv) && fv == 0.25, "a.f");
	CHECK(gguf_get_int(&g, "a.b", &iv) && iv == 1, "a.b");
	const struct gguf_kv *kv = gguf_find(&g, "a.ai");
	CHECK(kv && kv->arr_n == 3 && memcmp(kv->arr_data, is, sizeof is) == 0, "a.ai");
	kv = gguf_find(&g, "a.af");
	CHECK(kv && kv->arr_n == 3 && memcmp(kv->arr_data, fs, sizeof fs) == 0, "a.af");
	gguf_close(&g);
}

static void conversions(void)
{
	int bad = -1;
	for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
			continue; /* NaN payloads */
		if (f32_to_f16(f16_to_f32((uint16_t)h)) != h)
			bad = (int)h;
	}
	CHECK(bad < 0, "f16 %04x does not round-trip", bad);
	bad = -1;
	for (uint32_t h = 0; h < 65536 && bad < 0; h++) {
		if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
			continue;
		if (f32_to_bf16(bf16_to_f32((uint16_t)h)) != h)
			bad = (int)h;
	}
	CHECK(bad < 0, "bf16 %04x does not round-trip", bad);
	struct { float in; float f16, bf16; } cases[] = {
		{1.0f + 0x1p-11f, 1.0f, 1.0f},                      /* tie -> even */
		{1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-9f, 1.0f},        /* tie -> even (up) */
		{1.0f + 3 * 0x1p-9f, 1.0f + 3 * 0x1p-9f, 1.0f + 0x1p-7f},
		{65519.0f, 65504.0f, 65536.0f},
		{65520.0f, INFINITY, 65536.0f},
		{0x1p-25f, 0.0f, 0x1p-25f},                         /* f16 subnormal tie -> 0 */
		{3 * 0x1p-25f, 0x1p-23f, 3 * 0x1p-25f},
		{-2.5f, -2.5f, -2.5f},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		float a = f16_to_f32(f32_to_f16(cases[i].in)), b = bf16_to_f32(f32_to_bf16(cases[i].in));
		CHECK(a == cases[i].f16, "f16(%a) = %a, want %a", cases[i].in, a, cases[i].f16);
		CHECK(b == cases[i].bf16, "bf16(%a) = %a, want %a", cases[i].in, b, cases[i].bf16);
	}
	/* Q8_0: decode(encode(x)) is never worse than the max/127 rule */
	uint64_t seed = 12345;
	int worse = 0;
	for (int blk = 0; blk < 2000; blk++) {
		float x[32], y[32], ref = 0, ours = 0, amax = 0;
		for (int j = 0; j < 32; j++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			x[j] = (float)((int64_t)(seed >> 11) - (1ll << 52)) * 0x1p-52f * (blk % 7 == 0 && j == 3 ? 8 : 1);
			amax = fmaxf(amax, fabsf(x[j]));
		}
		unsigned char q[34];
		dtype_from_f32(DT_Q8_0, x, q, 32);
		dtype_to_f32(DT_Q8_0, q, y, 32);
		float d = f16_to_f32(f32_to_f16(amax / 127)), id = 1 / (amax / 127);
		for (int j = 0; j < 32; j++) {
			ours += (x[j] - y[j]) * (x[j] - y[j]);
			float r = roundf(x[j] * id) * d;
			ref += (x[j] - r) * (x[j] - r);
		}
		worse += ours > ref * 1.0001f;
	}
	CHECK(worse == 0, "Q8_0 encoding worse than max/127 in %d of 2000 blocks", worse);
}

static float *logits(const char *path, const int32_t *ids, int n, int vocab)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *m;
	if (inferd_model_open(path, NULL, &m, err)) {
		CHECK(0, "%s", err);
		return NULL;
	}
	float *lg = malloc((size_t)n * vocab * sizeof *lg);
	inferd_seq_t *s;
	CHECK(inferd_seq_new(m, n, &s, err) == 0 && inferd_seq_eval(m, s, ids, n, lg, 1, err) == 0, "%s", err);
	inferd_seq_free(s);
	inferd_model_close(m);
	return lg;
}

static const int32_t IDS[] = {5, 100, 7, 300, 42, 1, 250, 99, 3, 17, 200, 150, 60, 61, 62, 63};
#define NIDS 16

static void write_json(const char *path, json_t *j)
{
	CHECK(json_dump_file(j, path, JSON_INDENT(1)) == 0, "write %s", path);
}

/* dir/ with config `cfg` and a symlink to the fixture's weights */
static const char *model_dir(const char *name, json_t *cfg, const char *fixture)
{
	char *dir = strdup(t_tmp(name)), p[700], src[700], cwd[400];
	mkdir(dir, 0755);
	snprintf(p, sizeof p, "%s/config.json", dir);
	write_json(p, cfg);
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	if (fixture[0] == '/')
		snprintf(src, sizeof src, "%s/model.safetensors", fixture);
	else
		snprintf(src, sizeof src, "%s/%s/model.safetensors", getcwd(cwd, sizeof cwd), fixture);
	CHECK(symlink(src, p) == 0, "symlink");
	return dir;
}

static void sharded(void)
{
	char fx[512], p[700];
	snprintf(fx, sizeof fx, "%s/llama-tiny-f32", t_fixtures());
	float *one = logits(fx, IDS, NIDS, 512);
	/* split the file: tensors alternate between two shards */
	snprintf(p, sizeof p, "%s/model.safetensors", fx);
	size_t n;
	unsigned char *st = t_read_file(p, &n);
	uint64_t hl;
	memcpy(&hl, st, 8);
	json_t *hdr = json_loadb((char *)st + 8, hl, 0, NULL), *h[2] = {json_object(), json_object()};
	json_t *map = json_object();
	const char *key;
	json_t *v;
	uint64_t off[2] = {0, 0};
	unsigned char *data[2] = {malloc(n), malloc(n)};
	int k = 0;
	json_object_foreach(hdr, key, v)
	{
		if (!strcmp(key, "__metadata__"))
			continue;
		json_t *o = json_object_get(v, "data_offsets");
		uint64_t a = (uint64_t)json_integer_value(json_array_get(o, 0)), e = (uint64_t)json_integer_value(json_array_get(o, 1));
		memcpy(data[k] + off[k], st + 8 + hl + a, e - a);
		json_t *c = json_deep_copy(v);
		json_object_set_new(c, "data_offsets", json_pack("[II]", (json_int_t)off[k], (json_int_t)(off[k] + e - a)));
		json_object_set_new(h[k], key, c);
		json_object_set_new(map, key, json_string(k ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors"));
		off[k] += e - a;
		k ^= 1;
	}
	char *dir = strdup(t_tmp("sharded"));
	mkdir(dir, 0755);
	for (k = 0; k < 2; k++) {
		char *text = json_dumps(h[k], JSON_COMPACT);
		uint64_t tl = strlen(text);
		snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, k + 1);
		FILE *f = fopen(p, "wb");
		fwrite(&tl, 8, 1, f);
		fwrite(text, 1, tl, f);
		fwrite(data[k], 1, off[k], f);
		fclose(f);
		free(text);
		free(data[k]);
		json_decref(h[k]);
	}
	json_t *idx = json_pack("{s:{},s:O}", "metadata", "weight_map", map);
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
	write_json(p, idx);
	snprintf(p, sizeof p, "%s/config.json", fx);
	json_t *cfg = json_load_file(p, 0, NULL);
	snprintf(p, sizeof p, "%s/config.json", dir);
	write_json(p, cfg);
	float *two = logits(dir, IDS, NIDS, 512);
	CHECK(one && two && memcmp(one, two, NIDS * 512 * sizeof(float)) == 0, "sharded logits differ from single-file");
	/* an index naming a shard outside the directory is refused */
	json_object_set_new(map, "model.norm.weight", json_string("../model-00001-of-00002.safetensors"));
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
	write_json(p, idx);
	char err[INFERD_ERR_LEN];
	inferd_model_t *m = NULL;
	CHECK(inferd_model_open(dir, NULL, &m, err) != 0 && strstr(err, "must be a plain file name"), "traversal: %s", err);
	json_decref(idx);
	json_decref(map);
	json_decref(cfg);
	json_decref(hdr);
	free(st);
	free(one);
	free(two);
	free(dir);
}

static void old_rope_keys(void)
{
	char fx[512], p[700];
	snprintf(fx, sizeof fx, "%s/llama3-rope-bf16", t_fixtures());
	snprintf(p, sizeof p, "%s/config.json", fx);
	json_t *cfg = json_load_file(p, 0, NULL);
	float *newer = logits(fx, IDS, NIDS, 1024);
	for (int variant = 0; variant < 2; variant++) {
		json_t *c = json_deep_copy(cfg), *rp = json_deep_copy(json_object_get(cfg, "rope_parameters"));
		json_object_set(c, "rope_theta", json_object_get(rp, "rope_theta"));
		json_object_del(rp, "rope_theta");
		if (variant) { /* oldest spelling: "type" */
			json_object_set(rp, "type", json_object_get(rp, "rope_type"));
			json_object_del(rp, "rope_type");
		}
		json_object_set_new(c, "rope_scaling", rp);
		json_object_del(c, "rope_parameters");
		const char *dir = model_dir(variant ? "old2" : "old1", c, fx);
		float *older = logits(dir, IDS, NIDS, 1024);
		CHECK(newer && older && memcmp(newer, older, NIDS * 1024 * sizeof(float)) == 0,
		      "rope_theta + rope_scaling (variant %d) differ from rope_parameters", variant);
		free(older);
		free((void *)dir);
		json_decref(c);
	}
	free(newer);
	json_decref(cfg);
}

/* linear and yarn: HF formulas, and the parameters survive GGUF */
static void rope_scaling(void)
{
	struct model_config c = {.head_dim = 64, .rope_theta = 10000, .rs = RS_NONE};
	double base[32], lin[32], yarn[32], ms;
	rope_compute(&c, NULL, base, &ms);
	CHECK(base[1] == 1.0 / pow(10000, 2.0 / 64) && ms == 1.0, "default inv_freq[1] %.17g", base[1]);
	c.rs = RS_LINEAR;
	c.rs_factor = 4;
	rope_compute(&c, NULL, lin, &ms);
	int bad = 0;
	for (int i = 0; i < 32; i++)
		bad += lin[i] != base[i] / 4;
	CHECK(bad == 0 && ms == 1.0, "linear scaling is not inv_freq / factor");
	c.rs = RS_YARN;
	c.rs_factor = 4;
	c.rs_orig_ctx = 2048;
	c.rs_beta_fast = 32;
	c.rs_beta_slow = 1;
	c.rs_attn_factor = 0.1 * log(4.0) + 1.0;
	rope_compute(&c, NULL, yarn, &ms);
	/* correction range: low = floor(dim*ln(2048/(32*2pi))/(2 ln 1e4)), high = ceil(same with 1) */
	double lo = floor(64 * log(2048 / (32 * 2 * M_PI)) / (2 * log(10000))),
	       hi = ceil(64 * log(2048 / (1 * 2 * M_PI)) / (2 * log(10000)));
	for (int i = 0; i < 32; i++) {
		if (i <= lo)
			CHECK(yarn[i] == base[i], "yarn dim %d (fast) changed", i);
		else if (i >= hi)
			CHECK(fabs(yarn[i] - base[i] / 4) <= 1e-15 * base[i], "yarn dim %d (slow) not interpolated", i);
		else
			CHECK(yarn[i] < base[i] && yarn[i] > base[i] / 4, "yarn dim %d not blended", i);
	}
	CHECK(ms == c.rs_attn_factor, "yarn mscale %g", ms);

	char fx[512], p[700];
	snprintf(fx, sizeof fx, "%s/qwen2-tiny-f16", t_fixtures());
	snprintf(p, sizeof p, "%s/config.json", fx);
	json_t *cfg = json_load_file(p, 0, NULL);
	const char *specs[] = {"{s:f, s:s, s:f}", "{s:f, s:s, s:f, s:i}"};
	for (int v = 0; v < 2; v++) {
		json_t *c2 = json_deep_copy(cfg), *rp;
		if (v == 0)
			rp = json_pack(specs[0], "rope_theta", 1e6, "rope_type", "linear", "factor", 2.0);
		else
			rp = json_pack(specs[1], "rope_theta", 1e6, "rope_type", "yarn", "factor", 4.0,
				       "original_max_position_embeddings", 8);
		json_object_set_new(c2, "rope_parameters", rp);
		const char *dir = model_dir(v ? "yarn" : "linear", c2, fx);
		float *hf = logits(dir, IDS, NIDS, 512);
		char err[INFERD_ERR_LEN];
		inferd_model_t *m;
		const char *gg = t_tmp(v ? "yarn.gguf" : "linear.gguf");
		CHECK(inferd_model_open(dir, NULL, &m, err) == 0 && inferd_convert(m, gg, "f16", err) == 0, "%s", err);
		inferd_model_close(m);
		float *g = logits(gg, IDS, NIDS, 512);
		double e = hf && g ? t_rel_err(g, hf, NIDS * 512) : 1;
		CHECK(e < 1e-6, "%s scaling through GGUF: rel err %.3e", v ? "yarn" : "linear", e);
		/* and scaling changes the result (the parameters are used) */
		float *plain = logits(fx, IDS, NIDS, 512);
		CHECK(plain && hf && t_rel_err(hf, plain, NIDS * 512) > 1e-4, "%s scaling had no effect",
		      v ? "yarn" : "linear");
		free(plain);
		free(hf);
		free(g);
		free((void *)dir);
		json_decref(c2);
	}
	json_decref(cfg);
}

int main(void)
{
	gguf_every_type();
	gguf_writer_roundtrip();
	conversions();
	sharded();
	old_rope_keys();
	rope_scaling();
	return t_done("test_formats");
}
