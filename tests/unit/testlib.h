/*
 * testlib.h — the small harness every test binary uses: CHECK macros that
 * print both operands, fixture and binary lookup, running the real inferd
 * binary with its output captured, and float comparisons.
 * -DTESTLIB_NO_JSON leaves out the fixture references (jansson).
 */
#ifndef INFERD_TESTLIB_H
#define INFERD_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifndef TESTLIB_NO_JSON
#include <jansson.h>
#endif

extern int t_failures, t_checks;

#define CHECK(cond, ...)                                                                 \
	do {                                                                             \
		t_checks++;                                                              \
		if (!(cond)) {                                                           \
			t_failures++;                                                    \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
			fprintf(stderr, __VA_ARGS__);                                    \
			fputc('\n', stderr);                                             \
		}                                                                        \
	} while (0)

/* Finish: print a summary, return the process exit status. */
int t_done(const char *name);

/* ../shared/fixtures (or $INFERD_FIXTURES); exits with a message if absent. */
const char *t_fixtures(void);
/* the inferd binary under test ($INFERD_BIN, default bin/inferd) */
const char *t_bin(void);
/* a fresh temporary directory, removed by t_done */
const char *t_tmpdir(void);
/* path in the temporary directory (static buffer rotated among 8) */
const char *t_tmp(const char *name);

/* Run argv (NULL-terminated) with a 120 s limit; capture stdout and stderr
 * (each truncated to cap-1 bytes, NUL-terminated). Returns the exit code,
 * or 128 + signal, or -1 when it could not run. */
int t_run(const char *const *argv, char *out, size_t out_cap, char *err, size_t err_cap);
/* The same with another time limit than t_run's 120 s. */
int t_run_for(const char *const *argv, unsigned seconds, char *out, size_t out_cap, char *err, size_t err_cap);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int t_free_port(void);
/* A socket connected to 127.0.0.1:port (close-on-exec), or -1 with errno
 * set when nothing listens there. */
int t_connect(int port);
/* One HTTP/1.1 exchange with 127.0.0.1:port (Connection: close): method,
 * path, JSON body (or NULL), extra header lines ("Name: v\r\n", or NULL).
 * The whole response goes to out (truncated to cap - 1); returns the
 * status, or -1 when nothing could be sent. */
int t_http(int port, const char *method, const char *path, const char *body, const char *headers, char *out,
	   size_t cap);
/* The body of a response t_http filled in (after the blank line). */
const char *t_http_body(const char *resp);
/* Resident memory of a process in KiB (VmRSS), -1 if unknown. */
long t_rss_kb(int pid);
/* The first child of pid (a supervised server's worker), or pid itself. */
int t_worker_of(int pid);

float *t_read_f32(const char *path, size_t *n);
void *t_read_file(const char *path, size_t *n);
int t_write_file(const char *path, const void *data, size_t n);
double t_rel_err(const float *ours, const float *ref, size_t n);

#ifndef TESTLIB_NO_JSON
/* Reference data of one fixture checkpoint (not in a TESTLIB_NO_JSON
 * build: the cross-compiled kernel test of `make test-neon` has no jansson). */
struct t_ref {
	json_t *root;
	int vocab;
	int n_cases;
	float *logits;        /* all cases concatenated */
	size_t case_off[16];  /* offset (in floats) of each case's block */
};
int t_ref_load(const char *fixture_dir, struct t_ref *r);
void t_ref_free(struct t_ref *r);
/* ids of case c: input_ids + output_ids[:-1] (teacher forcing); caller frees */
int32_t *t_ref_ids(const struct t_ref *r, int c, int *n);
json_t *t_ref_case(const struct t_ref *r, int c);
#endif

#endif
