/*
 * quant_mlx.h — the CPU's decoder of MLX affine rows (dtype.h): the fastest
 * this CPU runs (AVX2 where available, chosen once by cpuid), bitwise equal
 * to dtype_mlx_to_f32, the reference. Products with MLX weights decode a
 * row with it and then use the common dot, so their reduction order (and
 * batch invariance) is that of every other weight type.
 */
#ifndef INFERD_CPU_QUANT_MLX_H
#define INFERD_CPU_QUANT_MLX_H

#include <stdint.h>

typedef void (*ops_mlx_fn)(int type, const void *q, const void *scales, const void *biases, int sb_type, int group,
			   float *dst, int64_t n);
ops_mlx_fn ops_mlx_best(void);

#endif
