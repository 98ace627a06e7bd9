/*
 * inferd.c — the command-line front end over libinferd:
 *   inferd run        generate token ids from prompt ids
 *   inferd logits     write teacher-forced logits as float32
 *   inferd convert    write a model as GGUF (llama.cpp's layout)
 *   inferd gen-model  write a random-weight GGUF of a given shape
 *   inferd info       print a model's configuration
 * Exit codes: 0 success, 1 the model or its input is bad (with a message
 * naming what is wrong), 2 bad command-line usage.
 */
#include "inferd.h"
#include "sample.h"
#include "tok.h"
#include "mlx.h"
#include "cmds.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define USAGE_ERR 2

static const char *top_help =
	"usage: inferd <command> [options]\n"
	"\n"
	"commands:\n"
	"  serve      serve models over an OpenAI-compatible HTTP API\n"
	"  run        generate token ids from prompt ids\n"
	"  logits     write teacher-forced logits (float32, one row per input id)\n"
	"  convert    convert a model to GGUF (inferd convert SRC OUT.gguf --type T)\n"
	"             or to an MLX directory (inferd convert SRC OUT_DIR --to mlx)\n"
	"  gen-model  write a random-weight GGUF model of a given shape\n"
	"  info       print a model's configuration\n"
	"  tokenize   print the token ids of a text\n"
	"  detokenize print the text of token ids\n"
	"  template   render a model's chat template for a conversation\n"
	"  batch      run a JSONL file of requests through the engine\n"
	"  bench      prompt and generation tokens/s, peak memory (like llama-bench)\n"
	"\n"
	"MODEL is a GGUF file or a Hugging Face directory (config.json +\n"
	"model.safetensors or model.safetensors.index.json).\n"
	"Run 'inferd <command> --help' for the options of a command.\n";

static const char *run_help =
	"usage: inferd run -m MODEL --ids 1,2,3 [options]\n"
	"Generate tokens after the prompt ids and print the generated ids on one\n"
	"line, space-separated.\n"
	"  -m, --model MODEL   GGUF file or Hugging Face directory (required)\n"
	"  --ids LIST          prompt token ids, comma-separated (required)\n"
	"  -n, --n-predict N   tokens to generate (default 16)\n"
	"  --temp T            sampling temperature; 0 = greedy (default 0)\n"
	"  --top-k K           keep the K most likely tokens; 0 = off (default 0)\n"
	"  --top-p P           nucleus sampling mass; 1 = off (default 1)\n"
	"  --seed S            sampling seed (default 0)\n"
	"  --ignore-eos        do not stop at the model's end-of-sequence id\n"
	"  -t, --threads N     CPU threads (default: all online CPUs)\n"
	"  --device DEV        cpu (default), cuda or cuda:N (a build with make CUDA=1)\n"
	"  --gpu-exact         float32 for every GPU product (default: 8+ tokens use\n"
	"                      tensor cores with F16/BF16 activations)\n"
	"  --cpu-exact         float32 activations for quantized weights on the CPU\n"
	"                      (default: 8-bit activations, integer products)\n"
	"  --kv-dtype T        KV cache storage: f16 (the CPU's default), f32, q8_0\n";

static const char *logits_help =
	"usage: inferd logits -m MODEL --ids 1,2,3 -o FILE [options]\n"
	"Run the ids teacher-forced (causal) and write little-endian float32\n"
	"logits: one row of vocab_size values per input id.\n"
	"  -m, --model MODEL   GGUF file or Hugging Face directory (required)\n"
	"  --ids LIST          token ids, comma-separated (required)\n"
	"  -o, --output FILE   where to write the logits (required)\n"
	"  -t, --threads N     CPU threads (default: all online CPUs)\n"
	"  --device DEV        cpu (default), cuda or cuda:N (a build with make CUDA=1)\n"
	"  --gpu-exact         float32 for every GPU product (default: 8+ tokens use\n"
	"                      tensor cores with F16/BF16 activations)\n"
	"  --cpu-exact         float32 activations for quantized weights on the CPU\n"
	"                      (default: 8-bit activations, integer products)\n"
	"  --kv-dtype T        KV cache storage: f16 (the CPU's default), f32, q8_0\n";

static const char *convert_help =
	"usage: inferd convert SRC OUT.gguf --type f32|f16|bf16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k\n"
	"Write SRC (GGUF or Hugging Face directory) as a GGUF file in llama.cpp's\n"
	"layout. 1-D tensors stay f32. q4_k_m / q5_k_m mix types as llama.cpp does:\n"
	"Q6_K for the output head and for attn_v / ffn_down of the first and last\n"
	"eighth of the layers and every third between, Q4_K / Q5_K elsewhere (q4_0:\n"
	"Q6_K for the head). Rows that are not whole blocks fall back to q8_0 (or\n"
	"f16 when not whole q8_0 blocks either).\n"
	"  --type T            output type (default f16)\n"
	"SRC may be an MLX affine directory (mlx-community): its weights are\n"
	"dequantized exactly to float32 and then written as T (f32 keeps them\n"
	"exactly; q8_0 / q4_k_m quantize them again).\n"
	"\n"
	"usage: inferd convert SRC OUT_DIR --to mlx [--bits 4|8] [--group-size N] [--head-bits N]\n"
	"Write SRC (a Hugging Face directory) as an MLX affine directory, the layout\n"
	"mlx-lm writes: model.safetensors with X.weight (U32 codes), X.scales and\n"
	"X.biases for every 2-D weight, config.json with \"quantization\" (and\n"
	"\"quantization_config\"), and the tokenizer files. Weights whose rows do not\n"
	"split into groups of the group size use groups of 32 (a per-module entry),\n"
	"or stay float when they do not split into 32 either.\n"
	"  --to gguf|mlx       output format (default gguf)\n"
	"  --bits N            MLX bits per value: 4 or 8 (default 4)\n"
	"  --group-size N      MLX values per scale and bias: 32, 64, 128 (default 64)\n"
	"  --head-bits N       bits of the embedding and output head (default: --bits),\n"
	"                      recorded as per-module entries like mlx-lm's mixed recipes\n";

static const char *gen_help =
	"usage: inferd gen-model -o OUT.gguf [--shape NAME | dimensions] [options]\n"
	"Write a random-weight model (nothing to download).\n"
	"  -o, --output FILE   output GGUF path (required)\n"
	"  --shape NAME        a real model's shape: llama-1b, llama-3b, llama-8b,\n"
	"                      qwen2-0.5b, qwen2-1.5b, qwen3-0.6b, qwen3-1.7b,\n"
	"                      qwen3-4b, tiny (dimension flags given after it\n"
	"                      override it)\n"
	"  --tokenizer DIR     embed this tokenizer and chat template (a directory\n"
	"                      holding tokenizer.json, or a GGUF); the vocabulary\n"
	"                      size follows it\n"
	"  --arch A            llama, qwen2 or qwen3 (default llama)\n"
	"  --layers N          decoder layers (default 2)\n"
	"  --hidden N          hidden size (default 64)\n"
	"  --ffn N             feed-forward size (default 172)\n"
	"  --heads N           attention heads (default 4)\n"
	"  --kv-heads N        key/value heads (default: = heads)\n"
	"  --head-dim N        head dimension (default hidden / heads)\n"
	"  --vocab N           vocabulary size (default 512)\n"
	"  --ctx N             training context length (default 4096)\n"
	"  --rope-theta X      rope base (default 10000)\n"
	"  --tied              share the embedding as the output head\n"
	"  --untied            a separate output head (after --shape of a tied model)\n"
	"  --type T            f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k (default f32)\n"
	"  --seed S            weight seed (default 1)\n";

static const char *tokenize_help =
	"usage: inferd tokenize -m PATH (--text STR | --file F) [--no-special]\n"
	"Print the token ids of the text, space-separated, as Hugging Face's\n"
	"encode gives them: BOS/EOS added as the tokenizer's files say, and\n"
	"special-token strings in the text matched as special tokens.\n"
	"  -m, --model PATH    GGUF file, HF model directory, or a directory\n"
	"                      holding tokenizer.json (required)\n"
	"  --text STR          the text\n"
	"  --file F            read the text from a file (bytes as they are)\n"
	"  --no-special        add no BOS/EOS\n";

static const char *detokenize_help =
	"usage: inferd detokenize -m PATH --ids 1,2,3 [--skip-special]\n"
	"Print the text of the ids exactly (no newline added), as Hugging Face's\n"
	"decode gives it.\n"
	"  -m, --model PATH    GGUF file, HF model directory, or a directory\n"
	"                      holding tokenizer.json (required)\n"
	"  --ids LIST          token ids, comma-separated (required)\n"
	"  --skip-special      leave special tokens out\n";

static const char *info_help = "usage: inferd info -m MODEL\nPrint the model's architecture and shape.\n";

struct args {
	int argc;
	char **argv;
	int i;
	const char *cmd;
};

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "inferd %s: ", cmd);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see 'inferd %s --help')\n", cmd);
	return USAGE_ERR;
}

/* If argv[i] is `flag` (or `flag=value`), set *val and return 1; -1 when
 * the value is missing; 0 when not this flag. */
static int opt(struct args *a, const char *s1, const char *s2, const char **val)
{
	const char *arg = a->argv[a->i];
	for (int k = 0; k < 2; k++) {
		const char *f = k ? s2 : s1;
		if (!f)
			continue;
		size_t n = strlen(f);
		if (strncmp(arg, f, n) != 0)
			continue;
		if (arg[n] == '=') {
			*val = arg + n + 1;
			return 1;
		}
		if (arg[n] == 0) {
			if (a->i + 1 >= a->argc)
				return -1;
			*val = a->argv[++a->i];
			return 1;
		}
	}
	return 0;
}

static int parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "inferd %s: %s expects an integer from %ld to %ld, got \"%s\"\n", cmd, flag, lo, hi, s);
		return USAGE_ERR;
	}
	*out = v;
	return 0;
}

static int parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "inferd %s: %s expects a number from %g to %g, got \"%s\"\n", cmd, flag, lo, hi, s);
		return USAGE_ERR;
	}
	*out = v;
	return 0;
}

static int parse_ids(const char *cmd, const char *s, int32_t **ids, int *n)
{
	int cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	*ids = malloc((size_t)cap * sizeof **ids);
	if (!*ids)
		return USAGE_ERR;
	*n = 0;
	const char *p = s;
	for (int k = 0; k < cap; k++) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (errno || end == p || (*end != ',' && *end) || v < 0 || v > INT32_MAX) {
			fprintf(stderr, "inferd %s: --ids: element %d is not a token id (\"%.*s\")\n", cmd, k + 1,
				(int)strcspn(p, ","), p);
			free(*ids);
			*ids = NULL;
			return USAGE_ERR;
		}
		(*ids)[(*n)++] = (int32_t)v;
		p = end + (*end == ',');
	}
	return 0;
}

static int open_model_on(const char *path, const struct inferd_model_opts *o, inferd_model_t **m)
{
	char err[INFERD_ERR_LEN];
	if (inferd_model_open(path, o, m, err) != 0) {
		fprintf(stderr, "inferd: %s\n", err);
		return 1;
	}
	return 0;
}

/* Each op ends at a barrier, so a thread the system has set aside holds up
 * the others: 4 threads on 2 CPUs decoded about 5x slower than 2 */
void warn_threads(const char *cmd, long threads, const char *device)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus > 0 && threads > cpus && !(device && !strncmp(device, "cuda", 4)))
		fprintf(stderr,
			"inferd %s: warning: %ld threads on %ld online CPUs: every op waits for the threads the system "
			"has set aside, and decoding runs several times slower (leave out -t to use %ld)\n",
			cmd, threads, cpus, cpus);
}

static int open_model(const char *path, int threads, inferd_model_t **m)
{
	struct inferd_model_opts o = {.n_threads = threads};
	return open_model_on(path, &o, m);
}

/* options common to run and logits */
struct common {
	const char *model, *ids_s, *out, *device;
	int gpu_exact, cpu_exact;
	const char *kv_dtype;
	long n_predict, threads, top_k, seed;
	double temp, top_p;
	int ignore_eos;
};

static int open_common(const char *cmd, const struct common *c, inferd_model_t **m)
{
	warn_threads(cmd, c->threads, c->device);
	struct inferd_model_opts o = {.n_threads = (int)c->threads, .device = c->device, .gpu_exact = c->gpu_exact,
				      .cpu_exact = c->cpu_exact, .kv_dtype = c->kv_dtype};
	return open_model_on(c->model, &o, m);
}

static int parse_common(struct args *a, struct common *c, const char *help, int allow_run, int allow_out)
{
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r, rc = 0;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(help, stdout);
			exit(0);
		}
		if ((r = opt(a, "-m", "--model", &v)))
			c->model = v;
		else if ((r = opt(a, "--ids", NULL, &v)))
			c->ids_s = v;
		else if ((r = opt(a, "-t", "--threads", &v)))
			rc = v ? parse_int(a->cmd, "--threads", v, 1, 1024, &c->threads) : 0;
		else if ((r = opt(a, "--device", NULL, &v)))
			c->device = v;
		else if (!strcmp(arg, "--gpu-exact"))
			r = 1, c->gpu_exact = 1;
		else if (!strcmp(arg, "--cpu-exact"))
			r = 1, c->cpu_exact = 1;
		else if ((r = opt(a, "--kv-dtype", NULL, &v)))
			c->kv_dtype = v;
		else if (allow_out && (r = opt(a, "-o", "--output", &v)))
			c->out = v;
		else if (allow_run && (r = opt(a, "-n", "--n-predict", &v)))
			rc = v ? parse_int(a->cmd, "--n-predict", v, 0, 1 << 24, &c->n_predict) : 0;
		else if (allow_run && (r = opt(a, "--temp", NULL, &v)))
			rc = v ? parse_float(a->cmd, "--temp", v, 0, 100, &c->temp) : 0;
		else if (allow_run && (r = opt(a, "--top-k", NULL, &v)))
			rc = v ? parse_int(a->cmd, "--top-k", v, 0, INT_MAX, &c->top_k) : 0;
		else if (allow_run && (r = opt(a, "--top-p", NULL, &v)))
			rc = v ? parse_float(a->cmd, "--top-p", v, 0, 1, &c->top_p) : 0;
		else if (allow_run && (r = opt(a, "--seed", NULL, &v)))
			rc = v ? parse_int(a->cmd, "--seed", v, 0, LONG_MAX, &c->seed) : 0;
		else if (allow_run && !strcmp(arg, "--ignore-eos"))
			r = 1, c->ignore_eos = 1;
		else
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		if (r < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
		if (rc)
			return rc;
	}
	if (!c->model)
		return usage_error(a->cmd, "%s", "missing -m MODEL");
	if (!c->ids_s)
		return usage_error(a->cmd, "%s", "missing --ids LIST");
	if (allow_out && !c->out)
		return usage_error(a->cmd, "%s", "missing -o FILE");
	return 0;
}

static int cmd_logits(struct args *a)
{
	struct common c = {0};
	int32_t *ids = NULL;
	int n, rc;
	if ((rc = parse_common(a, &c, logits_help, 0, 1)) || (rc = parse_ids(a->cmd, c.ids_s, &ids, &n)))
		return rc;
	inferd_model_t *m = NULL;
	inferd_seq_t *s = NULL;
	float *lg = NULL;
	char err[INFERD_ERR_LEN];
	FILE *f = NULL;
	if ((rc = open_common(a->argv[1], &c, &m)))
		goto out;
	struct inferd_model_info info;
	inferd_model_get_info(m, &info);
	rc = 1;
	if (inferd_seq_new(m, n, &s, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		goto out;
	}
	if (!(lg = malloc((size_t)n * (size_t)info.n_vocab * sizeof *lg))) {
		fprintf(stderr, "inferd: out of memory for %d rows of logits\n", n);
		goto out;
	}
	if (inferd_seq_eval(m, s, ids, n, lg, 1, err)) {
		fprintf(stderr, "inferd: %s: %s\n", c.model, err);
		goto out;
	}
	if (!(f = fopen(c.out, "wb")) || fwrite(lg, sizeof *lg, (size_t)n * info.n_vocab, f) != (size_t)n * info.n_vocab) {
		fprintf(stderr, "inferd: %s: cannot write: %s\n", c.out, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (f && fclose(f) && !rc) {
		fprintf(stderr, "inferd: %s: cannot write: %s\n", c.out, strerror(errno));
		rc = 1;
	}
	free(lg);
	free(ids);
	inferd_seq_free(s);
	inferd_model_close(m);
	return rc;
}

static int cmd_run(struct args *a)
{
	struct common c = {.n_predict = 16, .top_p = 1.0};
	int32_t *ids = NULL;
	int n, rc;
	if ((rc = parse_common(a, &c, run_help, 1, 0)) || (rc = parse_ids(a->cmd, c.ids_s, &ids, &n)))
		return rc;
	inferd_model_t *m = NULL;
	inferd_seq_t *s = NULL;
	float *lg = NULL;
	void *scratch = NULL;
	char err[INFERD_ERR_LEN];
	if ((rc = open_common(a->argv[1], &c, &m)))
		goto out;
	struct inferd_model_info info;
	inferd_model_get_info(m, &info);
	rc = 1;
	if (inferd_seq_new(m, n + (int)c.n_predict, &s, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		goto out;
	}
	lg = malloc((size_t)info.n_vocab * sizeof *lg);
	scratch = malloc((size_t)info.n_vocab * 8);
	if (!lg || !scratch) {
		fprintf(stderr, "inferd: out of memory\n");
		goto out;
	}
	struct sample_params sp = {(float)c.temp, (int)c.top_k, (float)c.top_p, (uint64_t)c.seed};
	int32_t tok;
	const int32_t *in = ids;
	int n_in = n;
	int eos = info.eos_id;
	for (long i = 0; i < c.n_predict; i++) {
		if (inferd_seq_eval(m, s, in, n_in, lg, 0, err)) {
			fprintf(stderr, "inferd: %s: %s\n", c.model, err);
			goto out;
		}
		tok = sample_token(lg, info.n_vocab, &sp, (uint64_t)i, scratch);
		printf(i ? " %d" : "%d", tok);
		if (!c.ignore_eos && tok == eos)
			break;
		in = &tok;
		n_in = 1;
	}
	printf("\n");
	rc = 0;
out:
	free(lg);
	free(scratch);
	free(ids);
	inferd_seq_free(s);
	inferd_model_close(m);
	return rc;
}

static int cmd_convert(struct args *a)
{
	const char *pos[2] = {0}, *type = "f16", *to = "gguf";
	long bits = 4, group = 64, head_bits = 0;
	int np = 0;
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(convert_help, stdout);
			return 0;
		}
		if ((r = opt(a, "--type", NULL, &v)) < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
		if (r)
			type = v;
		else if ((r = opt(a, "--to", NULL, &v)) != 0) {
			if (r < 0)
				return usage_error(a->cmd, "option %s needs a value", arg);
			to = v;
		} else if ((r = opt(a, "--bits", NULL, &v)) != 0) {
			if (r < 0 || parse_int(a->cmd, "--bits", v, 1, 64, &bits))
				return r < 0 ? usage_error(a->cmd, "option %s needs a value", arg) : USAGE_ERR;
		} else if ((r = opt(a, "--head-bits", NULL, &v)) != 0) {
			if (r < 0 || parse_int(a->cmd, "--head-bits", v, 1, 64, &head_bits))
				return r < 0 ? usage_error(a->cmd, "option %s needs a value", arg) : USAGE_ERR;
		} else if ((r = opt(a, "--group-size", NULL, &v)) != 0) {
			if (r < 0 || parse_int(a->cmd, "--group-size", v, 1, 4096, &group))
				return r < 0 ? usage_error(a->cmd, "option %s needs a value", arg) : USAGE_ERR;
		} else if (arg[0] == '-' && arg[1])
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		else if (np < 2)
			pos[np++] = arg;
		else
			return usage_error(a->cmd, "unexpected argument \"%s\"", arg);
	}
	if (np != 2)
		return usage_error(a->cmd, "%s", "needs SRC and OUT.gguf (or OUT_DIR with --to mlx)");
	if (strcmp(to, "gguf") != 0 && strcmp(to, "mlx") != 0)
		return usage_error(a->cmd, "--to must be gguf or mlx, got \"%s\"", to);
	if (!strcmp(to, "mlx")) {
		char got[32];
		snprintf(got, sizeof got, "%ld", bits);
		if (bits != 4 && bits != 8)
			return usage_error(a->cmd, "--bits must be 4 or 8 for MLX affine, got %s", got);
		snprintf(got, sizeof got, "%ld", head_bits);
		if (head_bits && head_bits != 4 && head_bits != 8)
			return usage_error(a->cmd, "--head-bits must be 4 or 8 for MLX affine, got %s", got);
		snprintf(got, sizeof got, "%ld", group);
		if (group != 32 && group != 64 && group != 128)
			return usage_error(a->cmd, "--group-size must be 32, 64 or 128, got %s", got);
		inferd_model_t *m;
		if (open_model(pos[0], 1, &m))
			return 1;
		char err[INFERD_ERR_LEN];
		int rc = mlx_write_dir(m, pos[1], (int)bits, (int)group, (int)head_bits, err);
		if (rc)
			fprintf(stderr, "inferd: %s\n", err);
		inferd_model_close(m);
		return rc ? 1 : 0;
	}
	static const char *const types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"};
	int known = 0;
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		known |= !strcmp(type, types[i]);
	if (!known)
		return usage_error(a->cmd, "--type must be f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k, got \"%s\"",
				   type);
	inferd_model_t *m;
	if (open_model(pos[0], 1, &m))
		return 1;
	char err[INFERD_ERR_LEN];
	int rc = inferd_convert(m, pos[1], type, err);
	if (rc)
		fprintf(stderr, "inferd: %s\n", err);
	inferd_model_close(m);
	return rc ? 1 : 0;
}

static int cmd_gen(struct args *a)
{
	struct inferd_gen_opts o = {.arch = "llama", .n_layer = 2, .n_embd = 64, .n_ff = 172, .n_head = 4,
				    .n_vocab = 512, .n_ctx = 4096, .rope_theta = 10000, .seed = 1, .type = "f32"};
	const char *out = NULL;
	static const struct { const char *flag; size_t off; } ints[] = {
		{"--layers", offsetof(struct inferd_gen_opts, n_layer)},
		{"--hidden", offsetof(struct inferd_gen_opts, n_embd)},
		{"--ffn", offsetof(struct inferd_gen_opts, n_ff)},
		{"--heads", offsetof(struct inferd_gen_opts, n_head)},
		{"--kv-heads", offsetof(struct inferd_gen_opts, n_head_kv)},
		{"--head-dim", offsetof(struct inferd_gen_opts, head_dim)},
		{"--vocab", offsetof(struct inferd_gen_opts, n_vocab)},
		{"--ctx", offsetof(struct inferd_gen_opts, n_ctx)},
	};
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r = 0, rc = 0;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(gen_help, stdout);
			return 0;
		}
		for (size_t k = 0; !r && k < sizeof ints / sizeof ints[0]; k++)
			if ((r = opt(a, ints[k].flag, NULL, &v)) > 0) {
				long x;
				if ((rc = parse_int(a->cmd, ints[k].flag, v, 1, 1 << 24, &x)))
					return rc;
				*(int *)((char *)&o + ints[k].off) = (int)x;
			}
		if (r)
			;
		else if ((r = opt(a, "-o", "--output", &v)))
			out = v;
		else if ((r = opt(a, "--arch", NULL, &v)))
			o.arch = v;
		else if ((r = opt(a, "--tokenizer", NULL, &v)))
			o.tokenizer = v;
		else if ((r = opt(a, "--shape", NULL, &v)) > 0) {
			if (inferd_gen_shape(v, &o))
				return usage_error(a->cmd, "unknown --shape \"%s\"", v);
		}
		else if ((r = opt(a, "--type", NULL, &v)))
			o.type = v;
		else if ((r = opt(a, "--rope-theta", NULL, &v)) > 0) {
			double x;
			if ((rc = parse_float(a->cmd, "--rope-theta", v, 2, 1e12, &x)))
				return rc;
			o.rope_theta = (float)x;
		} else if ((r = opt(a, "--seed", NULL, &v)) > 0) {
			long x;
			if ((rc = parse_int(a->cmd, "--seed", v, 0, LONG_MAX, &x)))
				return rc;
			o.seed = (uint64_t)x;
		} else if (!strcmp(arg, "--tied"))
			r = 1, o.tied = 1;
		else if (!strcmp(arg, "--untied"))
			r = 1, o.tied = 0;
		else
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		if (r < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
	}
	if (!out)
		return usage_error(a->cmd, "%s", "missing -o OUT.gguf");
	char err[INFERD_ERR_LEN];
	if (inferd_gen_model(&o, out, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		return 1;
	}
	return 0;
}

static int cmd_info(struct args *a)
{
	const char *model = NULL;
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(info_help, stdout);
			return 0;
		}
		if ((r = opt(a, "-m", "--model", &v)) < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
		if (!r)
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		model = v;
	}
	if (!model)
		return usage_error(a->cmd, "%s", "missing -m MODEL");
	inferd_model_t *m;
	if (open_model(model, 1, &m))
		return 1;
	struct inferd_model_info i;
	inferd_model_get_info(m, &i);
	printf("format %s\narch %s\nlayers %d\nhidden %d\nvocab %d\ncontext %d\n", i.format, i.arch, i.n_layer,
	       i.n_embd, i.n_vocab, i.n_ctx_train);
	inferd_model_close(m);
	return 0;
}

static char *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *b = NULL;
	size_t cap = 0;
	*n = 0;
	for (;;) {
		if (*n + 65536 > cap) {
			char *nb = realloc(b, cap = cap * 2 + 65536);
			if (!nb) {
				free(b);
				fclose(f);
				return NULL;
			}
			b = nb;
		}
		size_t r = fread(b + *n, 1, cap - *n, f);
		*n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	return b;
}

static int cmd_tokenize(struct args *a)
{
	const char *model = NULL, *text = NULL, *file = NULL;
	int flags = TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL;
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(tokenize_help, stdout);
			return 0;
		}
		if ((r = opt(a, "-m", "--model", &v)))
			model = v;
		else if ((r = opt(a, "--text", NULL, &v)))
			text = v;
		else if ((r = opt(a, "--file", NULL, &v)))
			file = v;
		else if (!strcmp(arg, "--no-special"))
			r = 1, flags &= ~TOK_ADD_SPECIAL;
		else
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		if (r < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
	}
	if (!model)
		return usage_error(a->cmd, "%s", "missing -m PATH");
	if (!text == !file)
		return usage_error(a->cmd, "%s", "give exactly one of --text and --file");
	size_t len = text ? strlen(text) : 0;
	char *buf = NULL, err[INFERD_ERR_LEN];
	if (file && !(buf = read_all(file, &len))) {
		fprintf(stderr, "inferd: %s: cannot read: %s\n", file, strerror(errno));
		return 1;
	}
	struct tokenizer *t;
	int32_t *ids = NULL;
	int n = 0, rc = 1;
	if (tok_load(model, &t, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		free(buf);
		return 1;
	}
	if (tok_encode(t, text ? text : buf, len, flags, &ids, &n, err)) {
		fprintf(stderr, "inferd: %s\n", err);
	} else {
		for (int i = 0; i < n; i++)
			printf(i ? " %d" : "%d", ids[i]);
		printf("\n");
		rc = 0;
	}
	free(ids);
	free(buf);
	tok_free(t);
	return rc;
}

static int cmd_detokenize(struct args *a)
{
	const char *model = NULL, *ids_s = NULL;
	int flags = 0;
	for (a->i = 2; a->i < a->argc; a->i++) {
		const char *v = NULL, *arg = a->argv[a->i];
		int r;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			fputs(detokenize_help, stdout);
			return 0;
		}
		if ((r = opt(a, "-m", "--model", &v)))
			model = v;
		else if ((r = opt(a, "--ids", NULL, &v)))
			ids_s = v;
		else if (!strcmp(arg, "--skip-special"))
			r = 1, flags |= TOK_SKIP_SPECIAL;
		else
			return usage_error(a->cmd, "unknown option \"%s\"", arg);
		if (r < 0)
			return usage_error(a->cmd, "option %s needs a value", arg);
	}
	if (!model)
		return usage_error(a->cmd, "%s", "missing -m PATH");
	if (!ids_s)
		return usage_error(a->cmd, "%s", "missing --ids LIST");
	int32_t *ids = NULL;
	int n = 0, rc;
	if (*ids_s && (rc = parse_ids(a->cmd, ids_s, &ids, &n)))
		return rc;
	char err[INFERD_ERR_LEN], *out = NULL;
	size_t len;
	struct tokenizer *t;
	if (tok_load(model, &t, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		free(ids);
		return 1;
	}
	rc = tok_decode(t, ids, n, flags, &out, &len, err);
	if (rc)
		fprintf(stderr, "inferd: %s\n", err);
	else
		fwrite(out, 1, len, stdout);
	free(out);
	free(ids);
	tok_free(t);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(top_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? USAGE_ERR : 0;
	}
	if (!strcmp(argv[1], "template"))
		return cmd_template(argc, argv);
	if (!strcmp(argv[1], "batch"))
		return cmd_batch(argc, argv);
	if (!strcmp(argv[1], "bench"))
		return cmd_bench(argc, argv);
	if (!strcmp(argv[1], "serve"))
		return cmd_serve(argc, argv);
	struct args a = {argc, argv, 2, argv[1]};
	static const struct { const char *name; int (*fn)(struct args *); } cmds[] = {
		{"run", cmd_run}, {"logits", cmd_logits}, {"convert", cmd_convert},
		{"gen-model", cmd_gen}, {"info", cmd_info}, {"tokenize", cmd_tokenize},
		{"detokenize", cmd_detokenize},
	};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(&a);
	fprintf(stderr, "inferd: unknown command \"%s\"\n%s", argv[1], top_help);
	return USAGE_ERR;
}
