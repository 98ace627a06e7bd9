/*
 * cmd_serve.c — `inferd serve`: flags and environment (INFERD_*) into
 * serve_opts, validated before anything starts (exit code 2 on a bad
 * value, naming it).
 */
#include "cmds.h"
#include "serve.h"
#include "registry.h"

#include <math.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *serve_help =
	"usage: inferd serve --model [NAME=]PATH [--model ...] [--models-dir DIR] [--config FILE] [options]\n"
	"Serve the models over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
	"POST /v1/completions, GET /v1/models, GET /v1/models/{id}, POST /tokenize,\n"
	"POST /detokenize, GET /health, GET /metrics.\n"
	"  -m, --model [NAME=]PATH  a GGUF file or Hugging Face directory; NAME (default:\n"
	"                           the file name) is the API's model id. Repeatable.\n"
	"Models: those named with --model load at start; those under --models-dir load on\n"
	"their first request (or POST /v1/models/{id}/load); all count against one memory\n"
	"budget, and idle ones are unloaded (least recently used first) to make room.\n"
	"  --models-dir DIR         every .gguf file and model directory (config.json with\n"
	"                           .safetensors) below DIR, named by its path under DIR\n"
	"                           without .gguf (\"qwen/q4_k_m.gguf\" is \"qwen/q4_k_m\")\n"
	"  --config FILE            per-model settings (JSON; see the README): alias,\n"
	"                           context_length, kv_tokens, parallel, queue, device,\n"
	"                           keep_alive, sampling defaults, chat_template, preload\n"
	"  --memory-budget BYTES    what the loaded models may take together (weights + KV\n"
	"                           caches; suffix K, M or G; default 80%% of RAM)\n"
	"  --max-loaded-models N    models loaded at once at most (default: no limit)\n"
	"  --keep-alive DURATION    unload a model idle this long (\"30s\", \"5m\", \"1h\"; -1\n"
	"                           never; default: never for --model and --config models,\n"
	"                           5m for --models-dir ones); a request's keep_alive\n"
	"                           field overrides it for its model\n"
	"  --host ADDR              address to bind (default 127.0.0.1; env INFERD_HOST)\n"
	"  --port N                 port (default 8080; env INFERD_PORT)\n"
	"  --parallel N             sequences in one step per model (default 16; env INFERD_PARALLEL)\n"
	"  --queue N                requests waiting per model before 429 (default 64; env INFERD_QUEUE)\n"
	"  --timeout S              total deadline per request in seconds; 0 (default) =\n"
	"                           30 s + 0.5 s per max token (env INFERD_TIMEOUT); on expiry\n"
	"                           the sequence is cancelled and the client gets 504\n"
	"  --queue-timeout S        deadline for a request to start running (default 60;\n"
	"                           env INFERD_QUEUE_TIMEOUT; 0 = none)\n"
	"  --token-timeout S        deadline between two tokens (default 30;\n"
	"                           env INFERD_TOKEN_TIMEOUT; 0 = none)\n"
	"  --cors-origin ORIGIN     allow this browser origin (repeatable; * for any)\n"
	"  --kv-tokens N            KV cache positions per model (default 8192; env INFERD_KV_TOKENS)\n"
	"  --kv-dtype T             KV cache storage: f16 (the CPU's default), f32 or q8_0 (CPU);\n"
	"                           the GPU keeps f32\n"
	"  --max-connections N      open connections at most (default 256)\n"
	"  --idle-timeout S         close connections idle this long (default 30)\n"
	"  --request-timeout S      a request's headers and body must arrive within this\n"
	"                           (default 30; slow clients are cut off)\n"
	"  --api-key KEY            require \"Authorization: Bearer KEY\" on every route but\n"
	"                           /health; repeatable (env INFERD_API_KEY)\n"
	"  --api-key-file FILE      more keys, one per line (# comments and blank lines skipped)\n"
	"  -t, --threads N          CPU threads per model (default: all online CPUs)\n"
	"  --device DEV             cpu (default), cuda or cuda:N: where the models run (env\n"
	"                           INFERD_DEVICE; CUDA needs a build with make CUDA=1). Each\n"
	"                           model gets its own CUDA stream and cuBLAS handle. A lost GPU\n"
	"                           context (illegal address...) ends the process with status 3\n"
	"  --gpu-memory MIB         GPU memory the models on the device may take together\n"
	"                           (weights + KV caches; default: what the GPU has). A model\n"
	"                           that does not fit fails to load with the sizes named\n"
	"  --gpu-exact              float32 for every GPU product (default: prompts and large\n"
	"                           batches use tensor cores with F16/BF16 activations)\n"
	"  --cpu-exact              float32 activations for quantized weights on the CPU\n"
	"                           (default: 8-bit activations and integer products, as llama.cpp)\n"
	"Supervision: a supervisor process holds the device lock and the listening socket and\n"
	"runs the server in a worker process that it restarts when it crashes or hangs\n"
	"(exponential backoff 0.5 s .. 30 s; one JSON log line per event, with the cause).\n"
	"  --no-supervise           run the worker alone (debugging): no restarts\n"
	"  --hang-timeout S         an executor inside one step this long is hung: /health says\n"
	"                           503 from half of it, the worker is restarted at S (default 60)\n"
	"  --drain-timeout S        on SIGTERM/SIGINT, in-flight requests get this long to finish;\n"
	"                           the rest end with a clear error (default 30)\n"
	"  --reload loaded|all      after a restart, load the models that loaded before (default),\n"
	"                           or retry the ones that had failed too\n"
	"  --runtime-dir DIR        where the per-device lock files live (default:\n"
	"                           $INFERD_RUNTIME_DIR, $XDG_RUNTIME_DIR/inferd, /run/user/UID/inferd\n"
	"                           or /tmp/inferd-UID)\n"
	"  --allow-shared-cpu       take no lock on the CPU (several servers may share it)\n"
	"One server per device: a second one exits (status 1) naming the holder's PID.\n"
	"Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP re-checks the models (retries failed\n"
	"loads, names files changed on disk).\n";

static int num(const char *flag, const char *v, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || errno || end == v || *end || x < lo || x > hi) {
		fprintf(stderr, "inferd serve: %s must be an integer from %ld to %ld, got \"%s\"\n", flag, lo, hi,
			v ? v : "");
		return 2;
	}
	*out = x;
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	const char *models[64], *keys[16];
	int nm = 0, nk = 0;
	long port = 8080, parallel = 16, queue = 64, timeout = 0, qtimeout = 60, ttimeout = 30, kv = 8192, maxc = 256,
	     idle = 30, threads = 0, reqto = 30, gpu_mib = 0, hang = 60, drain = 30;
	int no_sup = 0, shared_cpu = 0, reload_all = 0;
	const char *runtime_dir = NULL, *models_dir = NULL, *config = NULL;
	unsigned long long budget = 0;
	long max_loaded = 0;
	double keep_alive = NAN;
	const char *cors[16];
	int nc = 0;
	const char *host = getenv("INFERD_HOST") ? getenv("INFERD_HOST") : "127.0.0.1";
	int gpu_exact = 0, cpu_exact = 0;
	const char *kv_dtype = NULL;
	const char *device = getenv("INFERD_DEVICE") && *getenv("INFERD_DEVICE") ? getenv("INFERD_DEVICE") : "cpu";
	struct { const char *env, *flag; long *v; long lo, hi; } envs[] = {
		{"INFERD_PORT", "INFERD_PORT", &port, 1, 65535}, {"INFERD_PARALLEL", "INFERD_PARALLEL", &parallel, 1, 4096},
		{"INFERD_QUEUE", "INFERD_QUEUE", &queue, 1, 1 << 20}, {"INFERD_TIMEOUT", "INFERD_TIMEOUT", &timeout, 0, 1 << 30},
		{"INFERD_KV_TOKENS", "INFERD_KV_TOKENS", &kv, 16, 1 << 26},
		{"INFERD_QUEUE_TIMEOUT", "INFERD_QUEUE_TIMEOUT", &qtimeout, 0, 1 << 30},
		{"INFERD_TOKEN_TIMEOUT", "INFERD_TOKEN_TIMEOUT", &ttimeout, 0, 1 << 30},
	};
	for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++)
		if (getenv(envs[i].env) && num(envs[i].flag, getenv(envs[i].env), envs[i].lo, envs[i].hi, envs[i].v))
			return 2;
	if (getenv("INFERD_API_KEY") && *getenv("INFERD_API_KEY"))
		keys[nk++] = getenv("INFERD_API_KEY");
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(serve_help, stdout);
			return 0;
		}
		struct { const char *f; long *v; long lo, hi; } nums[] = {
			{"--port", &port, 1, 65535}, {"--parallel", &parallel, 1, 4096}, {"--queue", &queue, 1, 1 << 20},
			{"--timeout", &timeout, 0, 1 << 30}, {"--kv-tokens", &kv, 16, 1 << 26},
			{"--queue-timeout", &qtimeout, 0, 1 << 30}, {"--token-timeout", &ttimeout, 0, 1 << 30},
			{"--request-timeout", &reqto, 1, 86400},
			{"--max-connections", &maxc, 1, 100000}, {"--idle-timeout", &idle, 1, 86400},
			{"--threads", &threads, 1, 1024}, {"-t", &threads, 1, 1024},
			{"--gpu-memory", &gpu_mib, 1, 1L << 30},
			{"--hang-timeout", &hang, 1, 86400}, {"--drain-timeout", &drain, 0, 86400},
			{"--max-loaded-models", &max_loaded, 1, 100000},
		};
		int done = 0;
		for (size_t k = 0; k < sizeof nums / sizeof nums[0] && !done; k++)
			if (!strcmp(a, nums[k].f)) {
				if (num(a, v, nums[k].lo, nums[k].hi, nums[k].v))
					return 2;
				i++;
				done = 1;
			}
		if (done)
			continue;
		if (!strcmp(a, "--models-dir") && v) {
			models_dir = v;
			i++;
		} else if (!strcmp(a, "--config") && v) {
			config = v;
			i++;
		} else if (!strcmp(a, "--keep-alive") && v) {
			if (parse_duration_str(v, &keep_alive)) {
				fprintf(stderr, "inferd serve: --keep-alive must be seconds or a duration like 30s, 5m, 1h, or -1 "
						"(never), got \"%s\"\n", v);
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--memory-budget") && v) {
			char *end;
			errno = 0;
			double x = strtod(v, &end);
			double mul = !*end ? 1 : !strcmp(end, "K") ? 1024.0 : !strcmp(end, "M") ? 1048576.0
				     : !strcmp(end, "G") ? 1073741824.0 : -1;
			if (end == v || errno || mul < 0 || !(x * mul >= 1048576.0) || x * mul > 1e18) {
				fprintf(stderr, "inferd serve: --memory-budget must be a number of bytes (suffix K, M or G) of at "
						"least 1M, got \"%s\"\n", v);
				return 2;
			}
			budget = (unsigned long long)(x * mul);
			i++;
		} else if (!strcmp(a, "--no-supervise")) {
			no_sup = 1;
		} else if (!strcmp(a, "--allow-shared-cpu")) {
			shared_cpu = 1;
		} else if (!strcmp(a, "--runtime-dir") && v) {
			runtime_dir = v;
			i++;
		} else if (!strcmp(a, "--reload") && v) {
			if (strcmp(v, "loaded") && strcmp(v, "all")) {
				fprintf(stderr, "inferd serve: --reload must be loaded or all, got \"%s\"\n", v);
				return 2;
			}
			reload_all = !strcmp(v, "all");
			i++;
		} else if ((!strcmp(a, "--model") || !strcmp(a, "-m")) && v) {
			if (nm == 64) {
				fprintf(stderr, "inferd serve: at most 64 models\n");
				return 2;
			}
			models[nm++] = v;
			i++;
		} else if (!strcmp(a, "--api-key-file") && v) {
			FILE *f = fopen(v, "r");
			if (!f) {
				fprintf(stderr, "inferd serve: --api-key-file %s: %s\n", v, strerror(errno));
				return 2;
			}
			char line[512];
			while (fgets(line, sizeof line, f)) {
				line[strcspn(line, "\r\n")] = 0;
				if (!line[0] || line[0] == '#')
					continue;
				if (nk == 16) {
					fprintf(stderr, "inferd serve: at most 16 API keys\n");
					fclose(f);
					return 2;
				}
				keys[nk++] = strdup(line);
			}
			fclose(f);
			i++;
		} else if (!strcmp(a, "--cors-origin") && v) {
			if (nc == 16) {
				fprintf(stderr, "inferd serve: at most 16 CORS origins\n");
				return 2;
			}
			cors[nc++] = v;
			i++;
		} else if (!strcmp(a, "--gpu-exact")) {
			gpu_exact = 1;
		} else if (!strcmp(a, "--cpu-exact")) {
			cpu_exact = 1;
		} else if (!strcmp(a, "--kv-dtype") && v) {
			if (strcmp(v, "f16") && strcmp(v, "f32") && strcmp(v, "q8_0")) {
				fprintf(stderr, "inferd serve: --kv-dtype must be f16, f32 or q8_0, got \"%s\"\n", v);
				return 2;
			}
			kv_dtype = v;
			i++;
		} else if (!strcmp(a, "--device") && v) {
			device = v;
			i++;
		} else if (!strcmp(a, "--host") && v) {
			host = v;
			i++;
		} else if (!strcmp(a, "--api-key") && v) {
			if (nk == 16) {
				fprintf(stderr, "inferd serve: at most 16 API keys\n");
				return 2;
			}
			keys[nk++] = v;
			i++;
		} else {
			fprintf(stderr, "inferd serve: %s \"%s\"\n(see 'inferd serve --help')\n",
				v || a[0] != '-' ? "unknown option" : "option needs a value:", a);
			return 2;
		}
	}
	if (strcmp(device, "cpu") && strcmp(device, "cuda") &&
	    !(strncmp(device, "cuda:", 5) == 0 && device[5] && strspn(device + 5, "0123456789") == strlen(device + 5))) {
		fprintf(stderr, "inferd serve: --device must be cpu, cuda or cuda:N, got \"%s\"\n", device);
		return 2;
	}
	warn_threads("serve", threads, device);
	struct serve_opts o = {.models = models, .n_models = nm, .host = host, .port = (int)port, .parallel = (int)parallel,
			       .queue = (int)queue, .threads = (int)threads, .kv_tokens = (int)kv,
			       .max_connections = (int)maxc, .idle_timeout = (int)idle, .timeout_s = (double)timeout,
			       .keys = keys, .n_keys = nk, .queue_timeout_s = (double)qtimeout,
			       .token_timeout_s = (double)ttimeout, .cors = cors, .n_cors = nc,
			       .request_timeout_s = (double)reqto, .device = device,
			       .gpu_exact = gpu_exact, .cpu_exact = cpu_exact, .kv_dtype = kv_dtype, .device_memory = (size_t)gpu_mib << 20, .no_supervise = no_sup,
			       .hang_timeout_s = (double)hang, .drain_timeout_s = drain ? (double)drain : 0.001,
			       .runtime_dir = runtime_dir, .allow_shared_cpu = shared_cpu, .reload_all = reload_all,
			       .models_dir = models_dir, .config_path = config, .memory_budget = budget,
			       .max_loaded = (int)max_loaded, .keep_alive_s = keep_alive};
	struct registry reg;
	char err[1024];
	if (registry_build(&o, &reg, err, sizeof err)) {
		fprintf(stderr, "inferd serve: %s\n", err);
		return 2;
	}
	o.reg = &reg;
	int rc = serve_main(&o);
	registry_free(&reg);
	return rc;
}
