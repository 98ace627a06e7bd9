/*
 * util.c — error formatting, read-only file mapping, path joining.
 * Mappings are private and read-only; the caller owns and unmaps them.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int seterr(char *err, int status, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, INFERD_ERR_LEN, fmt, ap);
		va_end(ap);
	}
	return status;
}

const char *inferd_strerror(int status)
{
	switch (status) {
#define X(name, val, msg) case val: return msg;
		INFERD_STATUS_MAP(X)
#undef X
	}
	return "unknown status";
}

int map_file(const char *path, struct mapped_file *out, char *err)
{
	out->data = NULL;
	out->size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return seterr(err, INFERD_EIO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return seterr(err, INFERD_EIO, "%s: cannot stat: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return seterr(err, INFERD_EIO, "%s: not a regular file", path);
	}
	if (st.st_size == 0) {
		close(fd);
		return seterr(err, INFERD_EFORMAT, "%s: file is empty", path);
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED)
		return seterr(err, INFERD_EIO, "%s: cannot map: %s", path, strerror(e));
	out->data = p;
	out->size = (size_t)st.st_size;
	return 0;
}

void unmap_file(struct mapped_file *f)
{
	if (f->data)
		munmap((void *)f->data, f->size);
	f->data = NULL;
	f->size = 0;
}

bool path_join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	return n > 0 && (size_t)n < cap;
}

double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
