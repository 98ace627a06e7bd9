/*
 * test_badinput.c — bad model files, configs and flags through the real
 * binary: each gives exit code 1 (2 for command-line usage) and a message
 * that names the file, tensor or key and what is wrong; never a crash,
 * hang or huge allocation (each run is limited to 120 s and the process
 * runs under the sanitizers in `make SAN=address test`).
 *
 * Broken inputs are made in a temporary directory from a generated GGUF
 * and from the llama-tiny-f32 fixture (its header rewritten; the fixture
 * itself is only read).
 */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_cases;

/* Run `inferd logits -m model --ids ids -o out` and check code + messages. */
static void expect(const char *what, const char *model, const char *ids, int code, const char *m1, const char *m2)
{
	char out[4096], err[8192];
	const char *argv[] = {t_bin(), "logits", "-m", model, "--ids", ids, "-o", t_tmp("out.f32"), NULL};
	int rc = t_run(argv, out, sizeof out, err, sizeof err);
	n_cases++;
	CHECK(rc == code, "%s: exit code %d, expected %d; stderr: %s", what, rc, code, err);
	CHECK(m1 == NULL || strstr(err, m1), "%s: stderr lacks \"%s\": %s", what, m1, err);
	CHECK(m2 == NULL || strstr(err, m2), "%s: stderr lacks \"%s\": %s", what, m2, err);
	printf("  %-34s -> %d: %s%s", what, rc, err, err[0] ? "" : "\n");
}

static void expect_args(const char *what, const char *const *argv, int code, const char *msg)
{
	char out[4096], err[8192];
	int rc = t_run(argv, out, sizeof out, err, sizeof err);
	n_cases++;
	CHECK(rc == code, "%s: exit code %d, expected %d; stderr: %s", what, rc, code, err);
	CHECK(strstr(err, msg), "%s: stderr lacks \"%s\": %s", what, msg, err);
	printf("  %-34s -> %d: %.*s\n", what, rc, (int)strcspn(err, "\n"), err);
}

/* ---- GGUF byte patches ---- */
static unsigned char *gguf;
static size_t gguf_n;

static const char *patched(const char *name, size_t off, const void *bytes, size_t k, size_t truncate_to)
{
	unsigned char *c = malloc(gguf_n);
	memcpy(c, gguf, gguf_n);
	if (bytes)
		memcpy(c + off, bytes, k);
	const char *p = t_tmp(name);
	t_write_file(p, c, truncate_to ? truncate_to : gguf_n);
	free(c);
	return p;
}

/* offset of the tensor info that follows the name `tname` */
static size_t tensor_info(const char *tname)
{
	size_t k = strlen(tname);
	for (size_t i = 8; i + k < gguf_n; i++)
		if (memcmp(gguf + i, tname, k) == 0 && gguf[i - 8] == k)
			return i + k;
	return 0;
}

static void gguf_cases(void)
{
	const char *src = strdup(t_tmp("gen.gguf"));
	const char *argv[] = {t_bin(), "gen-model", "-o", src, "--layers", "1", "--hidden", "64", "--ffn", "128",
			      "--heads", "4", "--vocab", "64", NULL};
	char out[256], err[1024];
	CHECK(t_run(argv, out, sizeof out, err, sizeof err) == 0, "gen-model: %s", err);
	gguf = t_read_file(src, &gguf_n);
	CHECK(gguf && gguf_n > 1000, "generated GGUF missing");
	if (!gguf)
		return;
	expect("valid generated GGUF", src, "1,2", 0, NULL, NULL);
	t_write_file(t_tmp("empty.gguf"), "", 0);
	expect("empty file", t_tmp("empty.gguf"), "1", 1, "empty.gguf", "empty");
	expect("bad magic", patched("magic.gguf", 0, "GGUX", 4, 0), "1", 1, "magic.gguf", "bad magic");
	uint32_t v = 7;
	expect("unknown GGUF version", patched("ver.gguf", 4, &v, 4, 0), "1", 1, "ver.gguf", "version 7");
	expect("truncated in the header", patched("trunc.gguf", 0, NULL, 0, 200), "1", 1, "trunc.gguf", "truncated");
	expect("truncated in the data", patched("trunc2.gguf", 0, NULL, 0, gguf_n - 100), "1", 1, "trunc2.gguf",
	       "past the end of the file");
	uint64_t huge = 1ull << 60;
	expect("absurd tensor count", patched("count.gguf", 8, &huge, 8, 0), "1", 1, "count.gguf", "cannot fit");
	size_t ti = tensor_info("token_embd.weight");
	CHECK(ti > 0, "token_embd.weight not found in the generated file");
	uint32_t nd;
	memcpy(&nd, gguf + ti, 4);
	size_t type_off = ti + 4 + 8 * nd, offs_off = type_off + 4;
	uint32_t t99 = 99, tq2k = 10; /* Q2_K: known, not supported */
	expect("unknown tensor type", patched("type.gguf", type_off, &t99, 4, 0), "1", 1, "token_embd.weight",
	       "unknown type 99");
	expect("unsupported tensor type", patched("q2k.gguf", type_off, &tq2k, 4, 0), "1", 1, "token_embd.weight",
	       "Q2_K");
	uint64_t far = 1ull << 40;
	expect("tensor offset past the end", patched("off.gguf", offs_off, &far, 8, 0), "1", 1, "token_embd.weight",
	       "past the end of the file");
	uint64_t odd = 4;
	expect("misaligned tensor offset", patched("align.gguf", offs_off, &odd, 8, 0), "1", 1, "token_embd.weight",
	       "not aligned");
	uint64_t ne0 = 63;
	expect("tensor with the wrong shape", patched("shape.gguf", ti + 4, &ne0, 8, 0), "1", 1, "token_embd.weight",
	       "expected [64, 64]");
	for (size_t i = 0; i + 5 < gguf_n; i++)
		if (memcmp(gguf + i, "llama", 5) == 0 && gguf[i - 8] == 5 && memcmp(gguf + i - 12, "ture", 4) != 0) {
			expect("unsupported architecture", patched("arch.gguf", i, "mamba", 5, 0), "1", 1, "arch.gguf",
			       "\"mamba\" is not supported");
			break;
		}
	expect("token id past the vocabulary", src, "1,64", 1, "token id 64 at index 1", "vocab size 64");
	free((void *)src);
}

/* ---- Hugging Face directory cases ---- */
static const char *fx_dir;

/* A model dir `name` with config edited by `edit` and the fixture's weights
 * (symlinked) or `st` (a rewritten safetensors file) if given. */
static const char *hf_dir(const char *name, json_t *config, const char *config_text, const void *st, size_t st_n)
{
	const char *d = t_tmp(name);
	static char dir[512];
	snprintf(dir, sizeof dir, "%s", d);
	mkdir(dir, 0755);
	char p[600], src[600];
	snprintf(p, sizeof p, "%s/config.json", dir);
	if (config)
		json_dump_file(config, p, JSON_INDENT(1));
	else if (config_text)
		t_write_file(p, config_text, strlen(config_text));
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	if (st) {
		t_write_file(p, st, st_n);
	} else {
		snprintf(src, sizeof src, "%s/model.safetensors", fx_dir);
		if (src[0] != '/') {
			char cwd[400];
			snprintf(src, sizeof src, "%s/%s/model.safetensors", getcwd(cwd, sizeof cwd), fx_dir);
		}
		CHECK(symlink(src, p) == 0, "symlink %s", src);
	}
	return dir;
}

static json_t *fx_config(void)
{
	char p[600];
	snprintf(p, sizeof p, "%s/config.json", fx_dir);
	return json_load_file(p, 0, NULL);
}

static unsigned char *st_data;
static size_t st_n;

/* safetensors file with its header replaced by `hdr` (data section kept) */
static unsigned char *st_with_header(const char *hdr, size_t *n)
{
	uint64_t old;
	memcpy(&old, st_data, 8);
	size_t hl = strlen(hdr), dl = st_n - 8 - old;
	unsigned char *b = malloc(8 + hl + dl);
	uint64_t nl = hl;
	memcpy(b, &nl, 8);
	memcpy(b + 8, hdr, hl);
	memcpy(b + 8 + hl, st_data + 8 + old, dl);
	*n = 8 + hl + dl;
	return b;
}

static json_t *st_header(void)
{
	uint64_t hl;
	memcpy(&hl, st_data, 8);
	return json_loadb((const char *)st_data + 8, hl, 0, NULL);
}

static void st_case(const char *what, const char *name, json_t *hdr, const char *raw, const char *m1, const char *m2)
{
	char *text = raw ? strdup(raw) : json_dumps(hdr, JSON_COMPACT);
	size_t n;
	unsigned char *b = st_with_header(text, &n);
	json_t *cfg = fx_config();
	expect(what, hf_dir(name, cfg, NULL, b, n), "1,2", 1, m1, m2);
	json_decref(cfg);
	json_decref(hdr);
	free(b);
	free(text);
}

static void hf_cases(void)
{
	char p[600];
	snprintf(p, sizeof p, "%s/llama-tiny-f32", t_fixtures());
	fx_dir = strdup(p);
	snprintf(p, sizeof p, "%s/model.safetensors", fx_dir);
	st_data = t_read_file(p, &st_n);
	json_t *c;

	c = fx_config();
	expect("valid HF directory", hf_dir("ok", c, NULL, NULL, 0), "1,2", 0, NULL, NULL);
	json_decref(c);
	expect("malformed config.json", hf_dir("badjson", NULL, "{\"model_type\": \"llama\", \"hidden_size\": 64,", NULL, 0),
	       "1", 1, "config.json", "malformed JSON at line 1");
	c = fx_config();
	json_object_del(c, "head_dim");
	json_object_set_new(c, "num_attention_heads", json_integer(5));
	json_object_set_new(c, "num_key_value_heads", json_integer(5));
	expect("heads do not divide hidden size", hf_dir("heads", c, NULL, NULL, 0), "1", 1, "config.json",
	       "num_attention_heads (5) does not divide hidden_size (64)");
	json_decref(c);
	c = fx_config();
	json_object_set_new(c, "num_key_value_heads", json_integer(3));
	expect("kv heads do not divide heads", hf_dir("kvheads", c, NULL, NULL, 0), "1", 1, "config.json",
	       "kv head count (3) does not divide head count (4)");
	json_decref(c);
	c = fx_config();
	json_object_del(c, "hidden_size");
	expect("missing config key", hf_dir("missing", c, NULL, NULL, 0), "1", 1, "config.json",
	       "missing required key \"hidden_size\"");
	json_decref(c);
	c = fx_config();
	json_object_set_new(c, "intermediate_size", json_string("172"));
	expect("config key of the wrong type", hf_dir("strkey", c, NULL, NULL, 0), "1", 1, "config.json",
	       "\"intermediate_size\" must be a non-negative integer");
	json_decref(c);
	c = fx_config();
	json_object_set_new(c, "model_type", json_string("gpt2"));
	expect("unsupported model_type", hf_dir("gpt2", c, NULL, NULL, 0), "1", 1, "config.json",
	       "model_type \"gpt2\" is not supported");
	json_decref(c);

	json_t *h = st_header();
	json_object_del(h, "model.layers.1.mlp.down_proj.weight");
	st_case("missing tensor", "notensor", h, NULL, "missing tensor", "model.layers.1.mlp.down_proj.weight");
	h = st_header();
	json_t *q = json_object_get(h, "model.layers.0.self_attn.q_proj.weight");
	json_object_set_new(q, "shape", json_pack("[ii]", 32, 128));
	st_case("misshapen tensor", "shape", h, NULL, "model.layers.0.self_attn.q_proj.weight",
		"has shape [32, 128], expected [64, 64]");
	h = st_header();
	json_object_set_new(json_object_get(h, "model.norm.weight"), "dtype", json_string("I32"));
	st_case("unsupported dtype", "dtype", h, NULL, "model.norm.weight", "dtype I32");
	h = st_header();
	json_object_set_new(json_object_get(h, "model.norm.weight"), "data_offsets", json_pack("[II]", (json_int_t)1 << 40,
											 ((json_int_t)1 << 40) + 256));
	st_case("tensor offsets past the end", "offsets", h, NULL, "model.norm.weight", "outside the data section");
	h = st_header();
	json_object_set_new(json_object_get(h, "model.norm.weight"), "shape", json_pack("[i]", 65));
	st_case("tensor size does not match shape", "size", h, NULL, "model.norm.weight", "need 260");
	st_case("malformed safetensors header", "hdrjson", NULL, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1],", "model.safetensors",
		"malformed JSON header");
	unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
	json_t *cfg = fx_config();
	expect("safetensors header length past EOF", hf_dir("hlen", cfg, NULL, big, sizeof big), "1", 1,
	       "model.safetensors", "exceeds the file");
	json_decref(cfg);
	const char *empty = t_tmp("noconfig");
	mkdir(empty, 0755);
	expect("directory without config.json", empty, "1", 1, "config.json", NULL);
	expect("no such model", t_tmp("nothing-here"), "1", 1, "nothing-here", "no such file");
	free(st_data);
	free((void *)fx_dir);
}

static void flag_cases(void)
{
	const char *m = t_tmp("gen.gguf");
	const char *a1[] = {t_bin(), "run", "-m", m, "--ids", "1,x,3", NULL};
	expect_args("--ids with a non-number", a1, 2, "element 2 is not a token id");
	const char *a2[] = {t_bin(), "run", "-m", m, "--ids", "1", "-n", "lots", NULL};
	expect_args("-n not a number", a2, 2, "--n-predict expects an integer");
	const char *a3[] = {t_bin(), "run", "-m", m, "--ids", "1", "--frobnicate", NULL};
	expect_args("unknown option", a3, 2, "unknown option \"--frobnicate\"");
	const char *a4[] = {t_bin(), "logits", "-m", m, "--ids", "1", NULL};
	expect_args("missing -o", a4, 2, "missing -o FILE");
	const char *a5[] = {t_bin(), "convert", m, t_tmp("x.gguf"), "--type", "q3", NULL};
	expect_args("convert to an unknown type", a5, 2, "--type must be f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k, got \"q3\"");
	const char *a6[] = {t_bin(), "frob", NULL};
	expect_args("unknown command", a6, 2, "unknown command \"frob\"");
	const char *a7[] = {t_bin(), "run", "-m", m, "--ids", "1", "--temp", NULL};
	expect_args("option without its value", a7, 2, "option --temp needs a value");
	const char *a8[] = {t_bin(), "gen-model", "-o", t_tmp("g.gguf"), "--arch", "gpt2", NULL};
	expect_args("gen-model unknown arch", a8, 1, "unknown architecture \"gpt2\"");
	const char *a9[] = {t_bin(), "gen-model", "-o", t_tmp("g.gguf"), "--hidden", "64", "--heads", "3", NULL};
	expect_args("gen-model heads not dividing", a9, 1, "head dim");
}

int main(void)
{
	gguf_cases();
	hf_cases();
	flag_cases();
	free(gguf);
	printf("%d bad-input cases\n", n_cases);
	CHECK(n_cases >= 12, "only %d cases", n_cases);
	return t_done("test_badinput");
}
