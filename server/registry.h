/*
 * registry.h — the models a server offers (registry.c): the models named
 * with --model, every GGUF file and Hugging Face / MLX directory found
 * below --models-dir, and the per-model settings of --config. Built once,
 * before the supervisor forks its worker, so both see the same list (the
 * supervisor counts crashes against these indices). Immutable after that.
 */
#ifndef INFERD_REGISTRY_H
#define INFERD_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define REG_MAX_ALIASES 8

/* Per-model settings; 0 / NULL / NAN mean "the server's flag". */
struct model_cfg {
	int context_length;    /* prompt + max_tokens at most */
	int kv_tokens;         /* KV cache positions */
	int parallel, queue;   /* sequences per step; waiting requests */
	const char *device;    /* "cpu", "cuda", "cuda:N" */
	const char *kv_dtype;  /* "f16", "f32", "q8_0" */
	double keep_alive;     /* seconds idle before unloading; < 0 forever */
	json_t *sampling;      /* request defaults (temperature, top_p, ...) */
	char *chat_template;   /* replaces the model's own template */
	char *aliases[REG_MAX_ALIASES];
	int n_aliases;
	int preload;           /* load at start (models named with --model) */
};

struct model_entry {
	char name[128];
	char *path;
	struct model_cfg cfg;
};

struct registry {
	struct model_entry *e;
	int n;
};

struct serve_opts;
/* Build the list from o->models, o->models_dir and o->config_path.
 * Returns 0, or -1 with `err` naming the flag, file or key at fault. */
int registry_build(const struct serve_opts *o, struct registry *r, char *err, size_t cap);
void registry_free(struct registry *r);

/* A keep-alive: a number of seconds, or a string "30s", "5m", "1h",
 * "250ms", "-1" (forever), "0" (unload when idle). 0 on success. */
int parse_duration(const json_t *v, double *secs);
int parse_duration_str(const char *s, double *secs);

/* The request defaults a configuration may set (sampling object). */
extern const char *const REG_SAMPLING_KEYS[];

#endif
