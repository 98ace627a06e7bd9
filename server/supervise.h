/*
 * supervise.h — the device locks and the supervisor process of
 * `inferd serve` (supervise.c). serve_main (serve.h) is the entry point.
 */
#ifndef INFERD_SUPERVISE_H
#define INFERD_SUPERVISE_H

#include "serve.h"

#include <stddef.h>

#define SUP_MAX_DEVICES 16

/* The devices this instance uses, one lock each: with --device cuda[:N]
 * the GPU, as "gpu-" + its UUID (never the index: CUDA_VISIBLE_DEVICES
 * renumbers them); else "cpu" (none with --allow-shared-cpu). Returns how
 * many ids were written, or -1 with the reason in err (no such GPU). */
int sup_device_ids(const struct serve_opts *o, char ids[][96], int max, char *err, size_t errn);

/* The runtime directory for lock files: --runtime-dir, else
 * $INFERD_RUNTIME_DIR, $XDG_RUNTIME_DIR/inferd, /run/user/UID/inferd, or
 * /tmp/inferd-UID (created 0700). */
int sup_runtime_dir(const struct serve_opts *o, char *out, size_t n, char *err, size_t errn);

/* Take an exclusive lock per device (flock on DIR/device-ID.lock, which
 * then holds our PID). On failure names the holder's PID in err and
 * returns -1; the locks taken so far are released. */
int sup_lock_devices(const char *dir, char ids[][96], int n, int *fds, char *err, size_t errn);

#endif
