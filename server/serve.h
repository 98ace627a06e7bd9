/*
 * serve.h — the HTTP server (serve.c), started by `inferd serve`.
 */
#ifndef INFERD_SERVE_H
#define INFERD_SERVE_H

#include <stddef.h>

struct serve_opts {
	const char **models;   /* [NAME=]PATH */
	int n_models;
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
};

/* Serve until SIGINT/SIGTERM; returns the process exit code. */
int serve_main(const struct serve_opts *o);

#endif
