/*
 * mlx.h — MLX affine-quantized Hugging Face directories, as mlx-lm writes
 * them (the mlx-community layout): the "quantization" block of config.json
 * (also spelled "quantization_config"), the binding of a quantized layer's
 * three tensors (X.weight packed U32, X.scales, X.biases) as one tensor of
 * type DT_MLX4 / DT_MLX8 that points into the mmapped files, and the writer
 * of such a directory from any loaded model (inferd convert --to mlx).
 *
 * Which layers are quantized is decided as mlx-lm decides it: a module path
 * listed in the quantization block takes its own entry (an object with
 * group_size / bits / mode, true for the defaults, false for not
 * quantized); any other layer is quantized exactly when X.scales exists.
 * Everything read is validated against the configuration, and every
 * mismatch is an error naming the tensor and what is wrong.
 */
#ifndef INFERD_MLX_H
#define INFERD_MLX_H

#include <jansson.h>
#include "model.h"

struct mlx_cfg {
	json_t *root;        /* config.json (owned) */
	json_t *q;           /* the quantization object in it, or NULL */
	const char *key;     /* "quantization" or "quantization_config" */
	char file[4200];     /* path of config.json, for messages */
};

/* Read dir/config.json's quantization block (q stays NULL without one).
 * A quantization_config of another method (awq, gptq, fp8, ...) is
 * INFERD_EUNSUPPORTED. */
int mlx_cfg_load(const char *dir, struct mlx_cfg *q, char *err);
void mlx_cfg_free(struct mlx_cfg *q);

/* The 2-D weight `name` ("X.weight") of expected shape ne (ne[0] values per
 * row, ne[1] rows): when MLX quantizes it, check its triplet and fill t
 * (returns 1); 0 when it is a plain tensor (bind it the usual way); a
 * negative INFERD_E* with err naming the tensor on any mismatch. */
int mlx_bind(const struct st_set *st, const struct mlx_cfg *q, const char *dir, const char *name,
	     const int64_t ne[2], struct tensor *t, char *err);

/* Write model m (loaded from a Hugging Face directory) to out_dir as an
 * MLX affine directory: every 2-D weight whose rows split into groups of
 * `group` values quantized to `bits` (4 or 8); rows that do not but split
 * into groups of 32 get group 32 (a per-module entry in the quantization
 * block); others stay float (entry false). Scales and biases take the
 * source weight's float type (F32, F16 or BF16); 1-D tensors are copied.
 * Writes model.safetensors, config.json (the source's, with
 * "quantization" and "quantization_config") and copies the tokenizer
 * files found beside the source. head_bits (0: = bits) quantizes the
 * embedding and the output head with their own bits, as mlx-lm's mixed
 * recipes do (a per-module entry). */
int mlx_write_dir(const struct inferd_model *m, const char *out_dir, int bits, int group, int head_bits, char *err);

#endif
