/*
 * testlib.c — see testlib.h. Child processes run with a hard time limit
 * (alarm in the child) so no test can hang the suite.
 */
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int t_failures, t_checks;
static char tmpdir[256];

int t_done(const char *name)
{
	if (tmpdir[0] && getenv("INFERD_TEST_KEEP")) /* debugging: keep the files */
		fprintf(stderr, "kept %s\n", tmpdir);
	else if (tmpdir[0]) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: could not remove %s\n", tmpdir);
	}
	printf("%s: %d checks, %d failed\n", name, t_checks, t_failures);
	return t_failures ? 1 : 0;
}

const char *t_fixtures(void)
{
	static const char *cands[] = {NULL, "../shared/fixtures", "/work/shared/fixtures"};
	cands[0] = getenv("INFERD_FIXTURES");
	for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
		char p[512];
		if (!cands[i])
			continue;
		snprintf(p, sizeof p, "%s/README.md", cands[i]);
		if (access(p, R_OK) == 0)
			return cands[i];
	}
	fprintf(stderr, "FAIL: fixtures not found: set INFERD_FIXTURES to the shared fixtures directory\n");
	exit(1);
}

const char *t_bin(void)
{
	const char *b = getenv("INFERD_BIN");
	return b ? b : "bin/inferd";
}

const char *t_tmpdir(void)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof tmpdir, "%s/inferd-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return tmpdir;
}

const char *t_tmp(const char *name)
{
	static char bufs[8][512];
	static int k;
	char *b = bufs[k++ % 8];
	snprintf(b, sizeof bufs[0], "%s/%s", t_tmpdir(), name);
	return b;
}

int t_run(const char *const *argv, char *out, size_t out_cap, char *err, size_t err_cap)
{
	return t_run_for(argv, 120, out, out_cap, err, err_cap);
}

int t_run_for(const char *const *argv, unsigned seconds, char *out, size_t out_cap, char *err, size_t err_cap)
{
	int po[2], pe[2];
	if (pipe(po) || pipe(pe))
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		alarm(seconds);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	size_t no = 0, ne = 0;
	struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
	int open_fds = 2;
	char sink[4096];
	while (open_fds > 0) {
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
				continue;
			char *buf = i ? err : out;
			size_t cap = i ? err_cap : out_cap, *len = i ? &ne : &no;
			ssize_t r;
			if (buf && *len + 1 < cap)
				r = read(fds[i].fd, buf + *len, cap - 1 - *len);
			else
				r = read(fds[i].fd, sink, sizeof sink);
			if (r <= 0) {
				close(fds[i].fd);
				fds[i].fd = -1;
				open_fds--;
			} else if (buf && *len + 1 < cap) {
				*len += (size_t)r;
			}
		}
	}
	if (out && out_cap)
		out[no] = 0;
	if (err && err_cap)
		err[ne] = 0;
	int st;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void *t_read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)len + 1);
	if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b)
		b[len] = 0;
	*n = (size_t)len;
	return b;
}

float *t_read_f32(const char *path, size_t *n)
{
	size_t bytes;
	float *f = t_read_file(path, &bytes);
	*n = bytes / 4;
	return f;
}

int t_write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(data, 1, n, f);
	return fclose(f) == 0 && w == n ? 0 : -1;
}

double t_rel_err(const float *a, const float *b, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		double d = (double)a[i] - b[i];
		num += d * d;
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

#ifndef TESTLIB_NO_JSON
int t_ref_load(const char *dir, struct t_ref *r)
{
	char p[512];
	memset(r, 0, sizeof *r);
	snprintf(p, sizeof p, "%s/reference.json", dir);
	json_error_t je;
	if (!(r->root = json_load_file(p, 0, &je))) {
		fprintf(stderr, "FAIL: %s: %s\n", p, je.text);
		return -1;
	}
	r->vocab = (int)json_integer_value(json_object_get(r->root, "vocab_size"));
	json_t *cases = json_object_get(r->root, "cases");
	r->n_cases = (int)json_array_size(cases);
	snprintf(p, sizeof p, "%s/logits.f32", dir);
	size_t n;
	if (!(r->logits = t_read_f32(p, &n)) || r->n_cases > 16)
		return -1;
	size_t off = 0;
	for (int c = 0; c < r->n_cases; c++) {
		r->case_off[c] = off;
		off += (size_t)json_integer_value(json_object_get(json_array_get(cases, (size_t)c), "logits_rows")) *
		       (size_t)r->vocab;
	}
	if (off != n) {
		fprintf(stderr, "FAIL: %s: %zu floats, expected %zu\n", p, n, off);
		return -1;
	}
	return 0;
}

void t_ref_free(struct t_ref *r)
{
	json_decref(r->root);
	free(r->logits);
}

json_t *t_ref_case(const struct t_ref *r, int c)
{
	return json_array_get(json_object_get(r->root, "cases"), (size_t)c);
}

int32_t *t_ref_ids(const struct t_ref *r, int c, int *n)
{
	json_t *cs = t_ref_case(r, c), *in = json_object_get(cs, "input_ids"), *out = json_object_get(cs, "output_ids");
	size_t ni = json_array_size(in), no = json_array_size(out);
	int32_t *ids = malloc((ni + no) * sizeof *ids);
	for (size_t i = 0; i < ni; i++)
		ids[i] = (int32_t)json_integer_value(json_array_get(in, i));
	for (size_t i = 0; i + 1 < no; i++)
		ids[ni + i] = (int32_t)json_integer_value(json_array_get(out, i));
	*n = (int)(ni + no - 1);
	return ids;
}
#endif

int t_free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof a;
	int ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &l) == 0;
	if (s >= 0)
		close(s);
	return ok ? ntohs(a.sin_port) : -1;
}

int t_connect(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0)
		return s;
	int e = errno;
	if (s >= 0)
		close(s);
	errno = e;
	return -1;
}

int t_http(int port, const char *method, const char *path, const char *body, const char *headers, char *out,
	   size_t cap)
{
	out[0] = 0;
	int s = t_connect(port);
	if (s < 0)
		return -1;
	size_t blen = body ? strlen(body) : 0;
	char req[2048];
	int n = snprintf(req, sizeof req,
			 "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n%s"
			 "Content-Length: %zu\r\n\r\n",
			 method, path, headers ? headers : "", blen);
	if (n >= (int)sizeof req || write(s, req, (size_t)n) != n) {
		close(s);
		return -1;
	}
	for (size_t off = 0; off < blen;) { /* the server may answer and close before it has all of a huge body */
		ssize_t w = write(s, body + off, blen - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	size_t got = 0;
	ssize_t r;
	while (got + 1 < cap && (r = read(s, out + got, cap - 1 - got)) > 0)
		got += (size_t)r;
	out[got] = 0;
	close(s);
	int status = 0;
	sscanf(out, "HTTP/1.1 %d", &status);
	return status;
}

const char *t_http_body(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : resp;
}

long t_rss_kb(int pid)
{
	char p[64], line[256];
	snprintf(p, sizeof p, "/proc/%d/status", pid);
	FILE *f = fopen(p, "r");
	long kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

int t_worker_of(int pid)
{
	char p[128], buf[64] = "";
	snprintf(p, sizeof p, "/proc/%d/task/%d/children", pid, pid);
	FILE *f = fopen(p, "r");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = 0;
		fclose(f);
	}
	return atoi(buf) > 0 ? atoi(buf) : pid;
}
