/*
 * backend.h — the compute boundary. A backend is a vtable of device
 * buffers and ops; the architecture (forward.c) is written once over these
 * ops and never knows whether it runs on the CPU or a GPU.
 *
 * Buffers passed to ops live in the backend's memory (host memory for the
 * CPU, device memory for CUDA); ids and positions are host arrays the
 * backend copies as it needs. Ops return nothing: a backend that can fail
 * mid-step (a GPU) keeps the first error and reports it from sync. Each backend instance belongs to one model
 * and is driven by one thread at a time (the model's executor), so ops
 * take no locks. The KV cache's layout is the backend's private business.
 */
#ifndef INFERD_BACKEND_H
#define INFERD_BACKEND_H

#include <stdint.h>
#include "model.h"

/* Sampling of one row of logits on the device (backend_ops.sample): the
 * request's parameters and the sequence so far, as sample_next takes them
 * (sample.h); the results go to tok, *logprob and the top_* arrays. */
struct sample_req {
	const struct inferd_request *r;
	const int32_t *tokens;  /* prompt then output */
	int n_tokens, n_prompt;
	uint64_t step;          /* the RNG counter: tokens generated so far */
	int32_t *tok;
	float *logprob;         /* NULL: not wanted */
	int n_top;
	int32_t *top_ids;
	float *top_lp;
};

/* One forward step over tokens of one or more sequences. */
struct batch {
	int n_tokens;
	const int32_t *ids;     /* [n_tokens] token ids */
	const int32_t *pos;     /* [n_tokens] absolute positions */
	const int32_t *seq;     /* [n_tokens] index into block_table[] */
	void *kv;               /* the backend KV pool the sequences live in */
	const int32_t *const *block_table; /* [n_seq]: block of position p is
				 * block_table[s][p / block_size] */
	int n_seq;
	const uint8_t *want;    /* [n_tokens] nonzero: this row's logits are wanted */
	float *logits;          /* host: [number of wanted rows][n_vocab], or NULL
				 * when `sample` is given */
	const struct sample_req *sample; /* [wanted rows]: sample on the device
				 * (only when the backend has a sample op) */
	const uint8_t *host_rows; /* with `sample`: [wanted rows] nonzero: also
				 * copy this row's logits to logits[row] (before
				 * sampling; a constrained sequence samples on
				 * the host), or NULL */
};

struct backend;

struct backend_ops {
	const char *name;
	/* release everything the backend holds */
	void (*free)(struct backend *be);
	/* device memory for activations; alloc returns NULL when out of memory */
	float *(*alloc)(struct backend *be, size_t n_floats);
	void (*dealloc)(struct backend *be, float *p);
	/* a paged KV pool: n_blocks blocks of block_size positions (all layers) */
	void *(*kv_new)(struct backend *be, int n_blocks, int block_size, char *err);
	void (*kv_free)(struct backend *be, void *kv);
	/* copy block src to dst (copy-on-write of shared prefix blocks) */
	void (*kv_copy)(struct backend *be, void *kv, int dst, int src);
	/* out[i] = row ids[i] of emb (any dtype), as float */
	void (*get_rows)(struct backend *be, float *out, const struct tensor *emb, const int32_t *ids, int n);
	/* out[r] = x[r] / rms(x[r]) * w, rows of `dim`; out may equal x */
	void (*rmsnorm)(struct backend *be, float *out, const float *x, const struct tensor *w, int rows, int dim,
			float eps);
	/* out[t][r] = dot(x[t], row r of w) (+ bias[r]) for t < n */
	void (*matmul)(struct backend *be, float *out, const struct tensor *w, const struct tensor *bias,
		       const float *x, int n);
	/* before each step: size scratch for the batch and compute the rotary
	 * table of its positions; fails only when out of memory */
	int (*begin_step)(struct backend *be, const struct batch *b, char *err);
	/* rotate x[t][h][head_dim] in place for t < n, h < n_heads */
	void (*rope)(struct backend *be, float *x, int n, int n_heads);
	/* store k, v of every token in its sequence's cache at its position in
	 * `layer`, then out[t] = causal attention of q[t] over its sequence */
	void (*attention)(struct backend *be, float *out, const float *q, const float *k, const float *v,
			  const struct batch *b, int layer);
	/* out = silu(gate) * up over n values; out may equal gate */
	void (*swiglu)(struct backend *be, float *out, const float *gate, const float *up, int64_t n);
	/* x += y over n values */
	void (*add)(struct backend *be, float *x, const float *y, int64_t n);
	/* dst[i] = src[rows[i]] for rows of `dim` floats */
	void (*gather)(struct backend *be, float *dst, const float *src, const int32_t *rows, int n, int dim);
	/* copy n floats to host memory */
	void (*read)(struct backend *be, float *host, const float *src, size_t n);
	/* The three fused ops below are optional twice over: NULL, or a call
	 * that returns 0 (a shape or weight type the backend does not fuse,
	 * having done nothing), and forward runs the separate ops instead, the
	 * only copy of that sequence. A fused op must give each value exactly
	 * as the separate ops would on the same backend. 1: done. */
	/* optional: x[t] += dot(in[t], row r of w) for t < n (a product and the
	 * residual add in one pass); otherwise matmul into tmp (n * rows
	 * floats), then add */
	int (*matmul_add)(struct backend *be, float *x, const struct tensor *w, const float *in, int n);
	/* optional: q, k, v = rmsnorm(x)·Wq, ·Wk, ·Wv (+ biases) of layer w, in as
	 * few passes as the backend can; otherwise rmsnorm and three matmuls */
	int (*norm_qkv)(struct backend *be, float *q, float *k, float *v, const float *x,
			const struct layer_weights *w, int n, float eps);
	/* optional: out = silu(rmsnorm(x)·Wgate) * rmsnorm(x)·Wup; otherwise
	 * rmsnorm, two matmuls, swiglu */
	int (*norm_gate_up)(struct backend *be, float *out, const float *x, const struct layer_weights *w, int n,
			    float eps);
	/* optional: rope q and k (n_head and n_head_kv heads), then attention as
	 * the attention op (k, v stored first); q is rotated in place, k may be
	 * left as it was. NULL: rope, rope, attention */
	void (*rope_attention)(struct backend *be, float *out, float *q, const float *k, const float *v,
			       const struct batch *b, int layer);
	/* optional: end of a step; waits for the device and returns the first
	 * error of the step's ops (INFERD_EDEVICE for a lost device) */
	int (*sync)(struct backend *be, char *err);
	/* optional: choose the next token of each of n rows of logits (backend
	 * memory, modified) on the device; NULL: the executor reads the logits
	 * and samples on the host */
	int (*sample)(struct backend *be, float *logits, int n, const struct sample_req *rq, char *err);
};

struct backend {
	const struct backend_ops *ops;
	const struct inferd_model *m;
	size_t device_bytes;    /* device memory held: weights + KV (0 on the CPU) */
	int host_mem;           /* 1: alloc gives host memory, so forward has the
				 * output head write the logits straight into the
				 * batch's (no read: a 150k vocabulary's row is 0.6 MB
				 * copied a token) */
};

/* cpu/backend_cpu.c */
/* kv_type: the KV cache's storage, DT_F32, DT_F16 or DT_Q8_0 */
int cpu_backend_new(const struct inferd_model *m, int n_threads, int exact, int kv_type, struct backend **out,
		    char *err);

/* forward.c: one step of the architecture over the backend */
int forward(struct inferd_model *m, const struct batch *b, char *err);

#endif
