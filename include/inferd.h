/*
 * inferd.h — the only public header of libinferd.
 *
 * Handles are opaque. Every function returns 0 or a negative INFERD_E*
 * status; functions that can fail on input also fill a caller-supplied
 * `char err[INFERD_ERR_LEN]` with a sentence that names the file, tensor or
 * key and what is wrong. The library never exits or aborts on bad input.
 *
 * Threads: a model handle is immutable after inferd_model_open and may be
 * read from any thread. A sequence (inferd_seq_t) belongs to one caller at a
 * time; inferd_seq_eval on one model is serialised by the model's compute
 * context (the Engine issue replaces direct evaluation with one executor
 * thread per model). There is no global mutable state.
 */
#ifndef INFERD_H
#define INFERD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INFERD_ERR_LEN 512

/* X(name, value, message): the one table of status codes. */
#define INFERD_STATUS_MAP(X)                                   \
	X(OK, 0, "success")                                    \
	X(EINVAL, -1, "invalid argument")                      \
	X(EIO, -2, "input/output error")                       \
	X(EFORMAT, -3, "malformed model file")                 \
	X(EUNSUPPORTED, -4, "unsupported model or tensor type") \
	X(ENOMEM, -5, "out of memory")                         \
	X(ERANGE, -6, "value out of range")                    \
	X(ECONFIG, -7, "inconsistent model configuration")

enum inferd_status {
#define INFERD_X_ENUM(name, val, msg) INFERD_##name = (val),
	INFERD_STATUS_MAP(INFERD_X_ENUM)
#undef INFERD_X_ENUM
};

/* Message for a status code ("unknown status" for anything else). */
const char *inferd_strerror(int status);

typedef struct inferd_model inferd_model_t;
typedef struct inferd_seq inferd_seq_t;

struct inferd_model_opts {
	int n_threads; /* CPU worker threads; 0 = number of online CPUs */
};

struct inferd_model_info {
	const char *arch;    /* "llama", "qwen2", "qwen3" */
	const char *format;  /* "gguf" or "safetensors" */
	int n_vocab;
	int n_layer;
	int n_embd;
	int n_ctx_train;     /* max_position_embeddings / context_length */
	int bos_id, eos_id;  /* -1 when the model does not say */
};

/* Open a GGUF file or a Hugging Face directory (config.json +
 * model.safetensors or model.safetensors.index.json). Weights are mmapped. */
int inferd_model_open(const char *path, const struct inferd_model_opts *opts,
		      inferd_model_t **out, char *err);
void inferd_model_close(inferd_model_t *m);
void inferd_model_get_info(const inferd_model_t *m, struct inferd_model_info *info);

/* A sequence: its own KV cache of `capacity` positions, sized by the caller
 * from the request (prompt + tokens to generate), never from the model's
 * training context. */
int inferd_seq_new(inferd_model_t *m, int capacity, inferd_seq_t **out, char *err);
void inferd_seq_free(inferd_seq_t *s);
int inferd_seq_len(const inferd_seq_t *s);

/* Append `n` tokens to the sequence (causal, teacher-forced) and compute
 * logits. If `all_rows`, `logits` receives n × n_vocab floats (one row per
 * input token); otherwise only the last row (n_vocab floats). `logits` may
 * be NULL to only fill the cache. */
int inferd_seq_eval(inferd_model_t *m, inferd_seq_t *s, const int32_t *ids, int n,
		    float *logits, int all_rows, char *err);

/* Write `m` as a GGUF file llama.cpp accepts. `type` is "f32", "f16",
 * "bf16" or "q8_0"; tensors whose rows do not split into whole blocks fall
 * back to f16 as llama.cpp's converter does, and 1-D tensors stay f32. */
int inferd_convert(const inferd_model_t *m, const char *out_path, const char *type, char *err);

struct inferd_gen_opts {
	const char *arch; /* "llama", "qwen2" or "qwen3" */
	int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx;
	float rope_theta;
	int tied;          /* share the embedding as output head */
	uint64_t seed;
	const char *type;  /* as for inferd_convert */
	const char *tokenizer; /* optional: embed this tokenizer (GGUF, or a
				* directory with tokenizer.json); the vocabulary
				* size then follows it */
};

/* Fill `o` with a named real shape ("llama-1b", "qwen3-0.6b", ...);
 * returns INFERD_EINVAL for an unknown name. */
int inferd_gen_shape(const char *name, struct inferd_gen_opts *o);
/* The names inferd_gen_shape knows, comma-separated. */
const char *inferd_gen_shapes(void);

/* Write a random-weight GGUF model of the given shape. */
int inferd_gen_model(const struct inferd_gen_opts *o, const char *out_path, char *err);

#ifdef __cplusplus
}
#endif
#endif
