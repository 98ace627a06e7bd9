/*
 * inferd.h — the only public header of libinferd.
 *
 * Handles are opaque. Every function returns 0 or a negative INFERD_E*
 * status; functions that can fail on input also fill a caller-supplied
 * `char err[INFERD_ERR_LEN]` with a sentence that names the file, tensor or
 * key and what is wrong. The library never exits or aborts on bad input.
 *
 * Threads: every function may be called from any thread at any time. Each
 * open model has one executor thread that alone drives its compute context;
 * requests reach it through a bounded queue and their events come back
 * through a bounded per-request channel (inferd_submit / inferd_req_next).
 * inferd_seq_* evaluate directly for tools and tests, serialised per model.
 * There is no global mutable state.
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
	X(ECONFIG, -7, "inconsistent model configuration")    \
	X(EAGAIN, -8, "try again: queue full or no event yet") \
	X(ECLOSED, -9, "model closed")                         \
	X(ETEMPLATE, -10, "chat template error")              \
	X(EDEVICE, -11, "device error (the GPU context is lost)")

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
	int n_threads;      /* CPU worker threads; 0 = number of online CPUs */
	int kv_tokens;      /* KV cache size in positions; 0 = 8192 */
	int kv_block;       /* positions per KV block; 0 = 16 */
	int step_tokens;    /* token budget of one step (chunked prefill); 0 = 64 */
	int max_seqs;       /* sequences in one step at most; 0 = 64 */
	int queue;          /* submissions waiting for the executor; 0 = 1024 */
	int kv_reserve;     /* blocks kept for interactive admission; 0 = 1/16 */
	const char *device; /* "cpu" (NULL: the default), "cuda" or "cuda:N" */
	size_t device_memory; /* GPU bytes for weights + KV cache; 0 = no limit */
	int gpu_exact;      /* float32 for every GPU product; 0 (default): products
			     * of 8 tokens or more (prefill, batches) use
			     * tensor cores with F16/BF16 activations */
	const char *kv_dtype; /* KV cache storage: "f16" (the CPU's default), "f32"
			       * or "q8_0" (CPU); the GPU keeps "f32" */
	int cpu_exact;      /* float32 activations for quantized weights on the
			     * CPU; 0 (default): 8-bit activations and integer
			     * products (as llama.cpp), 2-4x faster */
	/* Called once, from the executor thread, when the model's device fails
	 * for good (INFERD_EDEVICE: a CUDA context lost to an illegal address
	 * and the like). Every request of the model has ended with the error;
	 * the process should exit so a supervisor restarts it. May be NULL. */
	void (*on_fatal)(void *arg, const char *msg);
	void *fatal_arg;
};

struct inferd_model_info {
	const char *arch;    /* "llama", "qwen2", "qwen3" */
	const char *format;  /* "gguf" or "safetensors" */
	int n_vocab;
	int n_layer;
	int n_embd;
	int n_ctx_train;     /* max_position_embeddings / context_length */
	int bos_id, eos_id;  /* -1 when the model does not say */
	int has_tokenizer;   /* text prompts and text output work */
	const char *device;  /* "cpu" or "cuda:N" */
	size_t device_bytes; /* GPU memory it holds (weights + KV cache); 0 on the CPU */
	uint64_t weight_bytes; /* weights read per generated token: every matrix
				* but the embedding table (which only gives rows) */
};

/* A stable name of a device for locks and logs: "cpu", or for "cuda:N"
 * "gpu-" and the GPU's UUID (not its index, which CUDA_VISIBLE_DEVICES
 * reorders). Initialises CUDA in the calling process for a GPU. */
int inferd_device_id(const char *device, char *out, size_t cap, char *err);

/* Open a GGUF file or a Hugging Face directory (config.json +
 * model.safetensors or model.safetensors.index.json). Weights are mmapped. */
int inferd_model_open(const char *path, const struct inferd_model_opts *opts,
		      inferd_model_t **out, char *err);
void inferd_model_close(inferd_model_t *m);
/* What opening `path` with `opts` will take, read from the headers only
 * (nothing is mapped for long, no backend starts): the weight bytes (the
 * tensor data of the file or of the directory's .safetensors files) and the
 * KV cache of opts->kv_tokens positions (float32 keys and values for every
 * layer). The server's model manager admits loads against its budget with
 * this. */
int inferd_model_estimate(const char *path, const struct inferd_model_opts *opts, uint64_t *weight_bytes,
			  uint64_t *kv_bytes, char *err);
void inferd_model_get_info(const inferd_model_t *m, struct inferd_model_info *info);
struct tokenizer;
/* The model's tokenizer (tok.h), or NULL; owned by the model. */
const struct tokenizer *inferd_model_tokenizer(const inferd_model_t *m);

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

/* ---------------- engine ---------------- */

typedef struct inferd_req inferd_req_t;

enum inferd_finish {
	INFERD_FINISH_STOP = 1,      /* end-of-sequence, stop id or stop string */
	INFERD_FINISH_LENGTH = 2,    /* max_tokens */
	INFERD_FINISH_CANCELLED = 3, /* inferd_req_cancel, release, or close */
	INFERD_FINISH_TIMEOUT = 4,   /* total or inter-token deadline */
	INFERD_FINISH_ERROR = 5,     /* bad request or engine failure: see message */
};
const char *inferd_finish_name(int finish); /* "stop", "length", ... */

struct inferd_logit_bias {
	int32_t id;
	float bias;
};

/* A generation request. Call inferd_request_init first for the defaults. */
struct inferd_request {
	const int32_t *ids;     /* prompt ids ... */
	int n_ids;
	const char *prompt;     /* ... or text, tokenized with the model's tokenizer */
	int max_tokens;         /* > 0 */
	float temperature;      /* 0 = greedy (default 1) */
	int top_k;              /* 0 = off */
	float top_p;            /* 1 = off */
	float min_p;            /* 0 = off */
	float repetition_penalty; /* 1 = off (applies to prompt and output) */
	float presence_penalty, frequency_penalty; /* 0 = off (output tokens) */
	uint64_t seed;          /* sampling: the same seed gives the same tokens */
	const struct inferd_logit_bias *logit_bias;
	int n_logit_bias;
	const int32_t *stop_ids; /* extra ids that end the generation */
	int n_stop_ids;
	const char *const *stop; /* strings that end it (never emitted) */
	int n_stop;
	int ignore_eos;
	int keep_special;       /* the text of events keeps special tokens
				 * (<tool_call>, <|python_tag|>, ...) but the
				 * end-of-sequence and stop ids, for parsers of
				 * tool calls and reasoning; 0: leave them out */
	int logprobs;           /* report each token's logprob */
	int top_logprobs;       /* and the n most likely (0..20) */
	double timeout_s;       /* total deadline from submission; 0 = none */
	double queue_timeout_s; /* deadline for being scheduled at all; 0 = none */
	double token_timeout_s; /* deadline between tokens; 0 = none */
	int priority;           /* higher runs first and is preempted last;
				 * < 0 is batch work that may not use the reserve */
	/* Constrained decoding (structured output). grammar_kind NULL: none;
	 * "json_schema": `grammar` is a JSON Schema as JSON text (OpenAI's
	 * strict subset, see src/grammar.h); "json_object": any JSON object
	 * (`grammar` unused); "gbnf": `grammar` is GBNF text (llama.cpp syntax,
	 * start rule `root`). Every generated token keeps the output a prefix
	 * of a sentence of the grammar; EOS and stop ids are allowed only once
	 * it is complete, and the request ends with "stop" as soon as it is
	 * complete and nothing can follow. Logprobs are those of the masked
	 * distribution. Needs a model with a tokenizer.
	 * inferd_submit compiles it and returns INFERD_EINVAL with a message
	 * naming the fault (GBNF line and column; the unsupported schema
	 * keyword and its JSON path), fit for an HTTP 400. Both strings are
	 * copied (compiled) at submission. */
	const char *grammar_kind;
	const char *grammar;
	/* A lazy constraint (strict tool calls among free text): the grammar
	 * applies only once the output has produced this text (e.g.
	 * "<tool_call>"), until it is complete; then the output is free again
	 * until the next trigger; a prompt that ends with the trigger starts
	 * triggered. NULL: the grammar applies from the start. A grammar token
	 * (<TEXT>, <[ID]>) that is no token of the model makes the request
	 * INFERD_EINVAL, or, with a trigger, drops the constraint. */
	const char *grammar_trigger;
};
void inferd_request_init(struct inferd_request *r);

/* Check a constraint without a model (as inferd_submit would): 0, or
 * INFERD_EINVAL with err naming what is wrong. */
int inferd_grammar_check(const char *kind, const char *text, char *err);

enum { INFERD_EV_TOKEN = 1, INFERD_EV_DONE = 2 };
#define INFERD_MAX_TOP_LOGPROBS 20

struct inferd_event {
	int type;
	/* INFERD_EV_TOKEN */
	int32_t token;
	const char *text;       /* newly complete text (may be empty); valid until
				 * the next inferd_req_next or release */
	size_t text_len;
	float logprob;
	int n_top;
	int32_t top_ids[INFERD_MAX_TOP_LOGPROBS];
	float top_logprobs[INFERD_MAX_TOP_LOGPROBS];
	/* INFERD_EV_DONE (exactly one per request, always the last) */
	int finish;             /* enum inferd_finish */
	int status;             /* 0, or the INFERD_E* of an error */
	char message[256];      /* why it ended, for errors, cancels, timeouts */
	int prompt_tokens, completion_tokens;
	uint64_t step;          /* executor step counter when it ended */
};

/* Queue a request. Returns INFERD_EAGAIN at once when the model's queue is
 * full, INFERD_ECLOSED when it is closing. Bad request contents are not an
 * error here: they end the request with an INFERD_FINISH_ERROR event. The
 * handle is the caller's until inferd_req_release. */
int inferd_submit(inferd_model_t *m, const struct inferd_request *r, inferd_req_t **out, char *err);
/* Wait up to timeout_ms (-1 = forever) for the next event: 0 with *ev
 * filled, INFERD_EAGAIN on timeout, INFERD_ECLOSED after the DONE event. */
int inferd_req_next(inferd_req_t *r, struct inferd_event *ev, int timeout_ms);
/* Ask the executor to stop the request; it ends within one step. */
void inferd_req_cancel(inferd_req_t *r);
/* A file descriptor that is readable while events are waiting (eventfd). */
int inferd_req_fd(const inferd_req_t *r);
/* Drop the caller's handle; cancels the request if it is still running. */
void inferd_req_release(inferd_req_t *r);

enum { INFERD_STATE_IDLE = 0, INFERD_STATE_RUNNING = 1, INFERD_STATE_FAILED = 2, INFERD_STATE_STOPPED = 3 };
struct inferd_model_stats {
	uint64_t steps;         /* forward steps run (the heartbeat) */
	double last_step_s;     /* monotonic time of the last step or idle check */
	int state;              /* INFERD_STATE_* */
	int queued, active;     /* waiting for the executor, admitted */
	int kv_blocks, kv_free; /* KV blocks in all, free (including cached) */
	int kv_cached;          /* unreferenced blocks kept for their prefix */
	uint64_t prefix_hit_tokens; /* prompt positions served from the cache */
	uint64_t preemptions;   /* sequences preempted when the cache ran out */
	uint64_t completed, tokens_generated, tokens_prefilled;
};
void inferd_model_stats(inferd_model_t *m, struct inferd_model_stats *st);

/* Write `m` as a GGUF file llama.cpp accepts. `type` is "f32", "f16",
 * "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m" or "q6_k" (the mixes follow
 * llama.cpp's rules); rows that do not split into whole blocks fall back
 * to q8_0 or f16, and 1-D tensors stay f32. */
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
