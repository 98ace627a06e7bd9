/*
 * util.h — small shared helpers: error strings, mapped files, checked
 * arithmetic. No state; every function is safe from any thread.
 */
#ifndef INFERD_UTIL_H
#define INFERD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "inferd.h"

/* Format into err (INFERD_ERR_LEN bytes) and return `status`. */
int seterr(char *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A read-only mapping of a whole file. */
struct mapped_file {
	const uint8_t *data;
	size_t size;
};
int map_file(const char *path, struct mapped_file *out, char *err);
void unmap_file(struct mapped_file *f);

/* Checked size arithmetic: return false on overflow. */
static inline bool mul_ok(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool add_ok(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* Join dir and name into out (PATH_MAX); false if too long. */
bool path_join(char *out, size_t cap, const char *dir, const char *name);

/* Seconds from a monotonic clock. */
double now_sec(void);

#endif
