/*
 * serve.h — the HTTP server (serve.c), started by `inferd serve`.
 */
#ifndef INFERD_SERVE_H
#define INFERD_SERVE_H

#include <stddef.h>

struct registry;

struct serve_opts {
	const char **models;   /* [NAME=]PATH (--model) */
	int n_models;
	const char *models_dir;  /* --models-dir: more models, loaded on demand */
	const char *config_path; /* --config: per-model settings */
	const struct registry *reg; /* every model: built from the three above
				     * (registry_build) before serve_main */
	unsigned long long memory_budget; /* bytes the loaded models may take
				     * (weights + KV caches); 0 = 80% of RAM */
	int max_loaded;        /* models loaded at once at most; 0 = no limit */
	double keep_alive_s;   /* idle seconds before a model unloads; < 0
				* never; NAN: never for --model / --config
				* models, 5 minutes for --models-dir ones */
	const char *host;
	int port;
	int parallel;          /* sequences per step per model */
	int queue;             /* waiting requests per model */
	int threads;
	int kv_tokens;
	int max_connections;
	int idle_timeout;      /* seconds a connection may sit idle */
	double timeout_s;      /* total deadline per request; 0 = 30 s + 0.5 s per max token */
	double queue_timeout_s;/* deadline for leaving the queue; 0 = none */
	double token_timeout_s;/* deadline between tokens; 0 = none */
	double request_timeout_s; /* a request must arrive whole within this */
	const char **cors;     /* origins allowed by CORS */
	int n_cors;
	const char **keys;     /* API keys (none: open) */
	int n_keys;
	const char *device;    /* "cpu", "cuda", "cuda:N" (NULL: cpu) */
	size_t device_memory;  /* GPU bytes for weights + KV of all models on the
				* device; 0 = no limit */
	int gpu_exact;         /* float32 for every GPU product */
	int cpu_exact;         /* float32 activations for quantized CPU products */
	const char *kv_dtype;  /* KV cache storage (NULL: the device's default) */
	/* supervision (supervise.c) */
	int no_supervise;      /* run the worker alone (--no-supervise) */
	double hang_timeout_s; /* an executor inside one step this long: stalled */
	double drain_timeout_s;/* SIGTERM: in-flight requests get this long */
	const char *runtime_dir; /* lock files; NULL: the default (supervise.c) */
	int allow_shared_cpu;  /* take no lock for the CPU */
	int reload_all;        /* after a restart, retry models that had failed too */
};

/* Serve until SIGINT/SIGTERM: take the device locks, open the listening
 * socket, then supervise a worker (or run it, --no-supervise). Returns the
 * process exit code. */
int serve_main(const struct serve_opts *o);

/* What a supervised worker gets from its supervisor. */
struct serve_worker_ctx {
	int report_fd;          /* pipe to the supervisor (struct serve_report) */
	int generation;         /* 1 for the first worker, +1 per restart */
	const char *const *skip; /* per model: NULL to load it, else why it is
				 * not loaded (quarantined, failed before) */
	const int *quarantined; /* per model: 1 if a SIGHUP must not retry it */
};

/* The worker: serve on listen_fd until SIGTERM/SIGINT, then drain. `w` is
 * NULL when unsupervised. Returns the exit code. */
int serve_worker(const struct serve_opts *o, int listen_fd, const struct serve_worker_ctx *w);

/* Worker → supervisor messages, one write each (smaller than PIPE_BUF, so
 * never interleaved). */
enum { REPORT_HEARTBEAT = 1, REPORT_MODEL, REPORT_READY, REPORT_DRAINING, REPORT_BUSY };
enum { REPORT_MODEL_LOADING, REPORT_MODEL_READY, REPORT_MODEL_FAILED, REPORT_MODEL_UNLOADED };
struct serve_report {
	int type;               /* REPORT_* */
	int model;              /* REPORT_MODEL: index in serve_opts.models */
	int state;              /* REPORT_MODEL: REPORT_MODEL_*; REPORT_HEARTBEAT:
				 * 0 every executor alive, 1 one is stalled;
				 * REPORT_BUSY: 1 the model has requests, 0 none */
	int pad;
	unsigned long long running; /* REPORT_HEARTBEAT: bit i: model i is inside steps */
	char text[232];         /* the failure or the stall, in words */
};

#endif
