/*
 * quant_mlx.h — the CPU's decoder of MLX affine rows (dtype.h): the fastest
 * this CPU runs (AVX2 where available, chosen once by cpuid), bitwise equal
 * to dtype_mlx_to_f32, the reference. Products with MLX weights either
 * decode a row with it and then use the common dot, or (AVX2/FMA) decode
 * into registers inside that same dot: the reduction order (and batch
 * invariance) is that of every other weight type either way.
 */
#ifndef INFERD_CPU_QUANT_MLX_H
#define INFERD_CPU_QUANT_MLX_H

#include <stdint.h>

typedef void (*ops_mlx_fn)(int type, const void *q, const void *scales, const void *biases, int sb_type, int group,
			   float *dst, int64_t n);
ops_mlx_fn ops_mlx_best(void);

/* out[t] = dot(row, x + t * xs) for t < n <= 4, the row given as for
 * ops_mlx_fn (cols values): decoded 8 values at a time into registers and
 * accumulated exactly as ops_dot4_best()'s AVX2/FMA dot does, so the result
 * is bitwise that of decoding the row and calling that dot. NULL when this
 * CPU has no AVX2/FMA (then decode, and use ops_dot4_best). */
typedef void (*ops_mlx_dot4_fn)(int type, const void *q, const void *scales, const void *biases, int sb_type,
				int group, const float *x, int64_t xs, int n, int64_t cols, float *out);
ops_mlx_dot4_fn ops_mlx_dot4_best(void);

#endif
