/*
 * cuda_backend.h — entry points of the CUDA backend (backend_cuda.c), built
 * only with `make CUDA=1` (INFERD_CUDA defined).
 */
#ifndef INFERD_CUDA_BACKEND_H
#define INFERD_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

struct backend;
struct inferd_model;

/* Number of CUDA devices; an error (with the CUDA text) when there is no
 * usable driver or device. */
int cuda_device_count(int *n, char *err);
/* A backend for `m` on device `dev`: uploads the weights in their file
 * format. budget: bytes of weights + KV cache allowed (0 = what the device
 * has). exact: float32 everywhere; otherwise products of 8 tokens or more
 * use tensor cores with 16-bit activations. */
int cuda_backend_new(const struct inferd_model *m, int dev, size_t budget, int exact, struct backend **out,
		     char *err);
/* Test hook: every step after `step` starts with a kernel that writes to an
 * invalid address (a sticky error). Nothing but tests calls it. */
void cuda_backend_fault_at(struct backend *be, int64_t step);
/* "gpu-" + the UUID of device dev (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) */
int cuda_device_uuid(int dev, char *out, size_t cap, char *err);

#endif
