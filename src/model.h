/*
 * model.h — a loaded model: its configuration (an architecture is a row of
 * options, not a forked forward pass), its weight tensors (views into
 * mmapped files, or owned buffers for generated models) and the backend
 * that computes with them.
 *
 * Tensor shapes follow GGUF: ne[0] is the number of values in a row (the
 * input dimension of a weight), ne[1] the number of rows (its output
 * dimension). A Hugging Face weight of shape [out, in] has ne = {in, out}.
 */
#ifndef INFERD_MODEL_H
#define INFERD_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include "inferd.h"
#include "gguf.h"
#include "safetensors.h"

enum arch { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3 };
enum rope_style {
	ROPE_NEOX,   /* rotate (i, i + d/2): Hugging Face layout, qwen GGUFs */
	ROPE_NORM,   /* rotate (2i, 2i + 1): llama-arch GGUFs (Q/K rows permuted) */
};
enum rope_scaling { RS_NONE, RS_LINEAR, RS_LLAMA3, RS_YARN };

struct model_config {
	enum arch arch;
	int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train;
	double norm_eps;
	bool qkv_bias;   /* qwen2; llama with attention_bias */
	bool qk_norm;    /* qwen3: RMSNorm over each head of q and k */
	bool tied;       /* output head shares token_embd */
	/* rope */
	enum rope_style rope_style;
	enum rope_scaling rs;
	double rope_theta, rs_factor, rs_low_freq, rs_high_freq, rs_beta_fast, rs_beta_slow, rs_attn_factor;
	int rs_orig_ctx;
	int bos_id, eos_id; /* -1 if unknown */
};

struct tensor {
	const char *name;
	int type;            /* enum dtype */
	int64_t ne[2];       /* values per row, rows */
	const void *data;
	uint64_t nbytes;
	/* MLX affine only (type DT_MLX4 / DT_MLX8, see dtype.h): data holds the
	 * packed codes, [ne[1]][ne[0] * bits / 32] uint32; value j of row r is
	 * scale * q + bias with the scale and bias of group j / group of row r */
	const void *scales, *biases; /* [ne[1]][ne[0] / group], type sb_type */
	int sb_type, group;
	uint64_t sb_nbytes;          /* bytes of scales (biases: the same) */
};

/* Row r of t as float32 (ne[0] values), any type (the reference decoders
 * of dtype.c). */
void tensor_row_f32(const struct tensor *t, int64_t r, float *dst);

struct layer_weights {
	struct tensor *attn_norm;         /* [n_embd] */
	struct tensor *wq, *wk, *wv;      /* [n_embd] x [n_head*hd], [n_kv*hd], [n_kv*hd] rows */
	struct tensor *bq, *bk, *bv;      /* optional biases, one per row */
	struct tensor *q_norm, *k_norm;   /* [head_dim], qwen3 */
	struct tensor *wo;                /* [n_head*hd] x [n_embd] rows */
	struct tensor *ffn_norm;          /* [n_embd] */
	struct tensor *w_gate, *w_up;     /* [n_embd] x [n_ff] rows */
	struct tensor *w_down;            /* [n_ff] x [n_embd] rows */
};

struct backend;

struct inferd_model {
	struct model_config c;
	const char *format;               /* "gguf" or "safetensors" */
	char path[4096];
	struct tensor *tensors;           /* all bound tensors */
	int n_tensors;
	struct tensor *tok_embd;          /* [n_embd] x [n_vocab] rows */
	struct tensor *out_norm;          /* [n_embd] */
	struct tensor *output;            /* [n_embd] x [n_vocab]; == tok_embd if tied */
	struct layer_weights *layers;
	float *rope_freqs;                /* [head_dim/2] llama3 factors from a GGUF, or NULL */
	double *inv_freq;                 /* [head_dim/2] final rotary frequencies */
	double rope_mscale;               /* yarn attention factor on cos/sin */
	/* sources (one of them is open) */
	struct gguf gguf;
	struct st_set st;
	void **owned;                     /* owned buffers (generated models) */
	int n_owned;
	/* text */
	struct tokenizer *tok;            /* NULL when the files carry none */
	/* compute */
	struct backend *be;
	char device[32];                  /* "cpu" or "cuda:N" */
	struct exec *ex;                  /* the executor thread (exec.c) */
	pthread_mutex_t eval_lock;        /* one evaluation at a time per model */
};

/* Names of each weight in both formats: %d is the layer. */
enum wrole {
	W_TOK_EMBD, W_OUT_NORM, W_OUTPUT,
	W_ATTN_NORM, W_Q, W_K, W_V, W_BQ, W_BK, W_BV, W_Q_NORM, W_K_NORM, W_O,
	W_FFN_NORM, W_GATE, W_UP, W_DOWN, W_COUNT
};
const char *wrole_name(enum wrole r, bool gguf);
bool wrole_per_layer(enum wrole r);

/* config.c: fill the config from each source; validate it. */
int config_from_hf(const char *dir, struct model_config *c, char *err);
int config_from_gguf(const struct gguf *g, const char *path, struct model_config *c, char *err);
int config_validate(const struct model_config *c, const char *where, char *err);
const char *arch_name(enum arch a);
/* Rotary frequencies for the config (HF's rope_init functions, computed in
 * double); `factors` (GGUF rope_freqs, may be NULL) divide them. */
void rope_compute(const struct model_config *c, const float *factors, double *inv_freq, double *mscale);

/* model.c */
int model_bind(struct inferd_model *m, char *err);  /* find, check and bind every weight */
/* Expected shape of a weight (ne[0] values per row, ne[1] rows, nd dims);
 * false if this configuration has no such weight. */
bool role_shape(const struct model_config *c, enum wrole r, int64_t ne[2], int *nd);
/* The tensor bound to a role (layer -1 for the global ones), or NULL. */
const struct tensor *model_role(const struct inferd_model *m, enum wrole r, int layer);
struct tensor **model_role_slot(struct inferd_model *m, enum wrole r, int layer);

#endif
