/*
 * suplib.h — helpers shared by the supervision tests (test_supervise.c,
 * test_chaos.c): start `inferd serve` (the real binary, or the
 * fault-injection build) with its stderr in a log file, raw HTTP/1.0 on
 * 127.0.0.1 with a deadline, SSE parsing, the supervisor's JSON log
 * events, and process checks through /proc. Header-only (static).
 */
#ifndef INFERD_SUPLIB_H
#define INFERD_SUPLIB_H

#include "testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(INFERD_TSAN) || defined(INFERD_ASAN)
#define SUP_SLOW 1 /* sanitizer builds: scale down, allow longer */
#else
#define SUP_SLOW 0
#endif

static inline double sup_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}


/* the fault-injection build of inferd ($INFERD_FAULTS_BIN) */
static inline const char *sup_faults_bin(void)
{
	const char *b = getenv("INFERD_FAULTS_BIN");
	return b && *b ? b : "build/tests/inferd-faults";
}

struct sup_server {
	pid_t pid;
	int port;
	char log[512];
};

/* Start BIN serve --port P ARGS... with stderr into a fresh log file;
 * `fault` and `backoff` go to the environment when not NULL. */
static inline pid_t sup_start(struct sup_server *s, const char *bin, const char *name, const char *fault,
			      const char *backoff, const char *const *args)
{
	if (!s->port)
		s->port = t_free_port();
	snprintf(s->log, sizeof s->log, "%s", t_tmp(name));
	char port[16];
	snprintf(port, sizeof port, "%d", s->port);
	const char *argv[64];
	int n = 0;
	argv[n++] = bin;
	argv[n++] = "serve";
	argv[n++] = "--port";
	argv[n++] = port;
	argv[n++] = "--threads";
	argv[n++] = "2";
	for (int i = 0; args && args[i] && n < 62; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	fflush(NULL);
	s->pid = fork();
	if (s->pid == 0) {
		/* a test that dies (a timeout, a sanitizer abort) leaves no server */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
		dup2(fd, 2);
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, 1);
		if (fault)
			setenv("INFERD_FAULT", fault, 1);
		else
			unsetenv("INFERD_FAULT");
		if (backoff)
			setenv("INFERD_RESTART_BACKOFF", backoff, 1);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	return s->pid;
}

/* Wait for a process we started; returns its wait status or -1 after
 * timeout_s (it is then left running). */
static inline int sup_wait(pid_t pid, double timeout_s)
{
	for (double t0 = sup_now(); sup_now() - t0 < timeout_s;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		usleep(10000);
	}
	return -1;
}

/* Stop a server we started: SIGTERM, then SIGKILL after timeout_s.
 * Returns the wait status. */
static inline int sup_stop(struct sup_server *s, double timeout_s)
{
	if (s->pid <= 0)
		return -1;
	kill(s->pid, SIGTERM);
	int st = sup_wait(s->pid, timeout_s);
	if (st == -1) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &st, 0);
		st = -1;
	}
	s->pid = 0;
	return st;
}

enum { SUP_REFUSED = -1, SUP_TIMEOUT = -2, SUP_CLOSED = 0 };

/* One HTTP/1.0 exchange (the server closes after the response, and a
 * stream comes unchunked). Returns the status; SUP_CLOSED when the
 * connection ended without a whole status line, SUP_REFUSED when connect
 * failed (errno in *err_out), SUP_TIMEOUT past the deadline. The whole
 * response (headers and body) goes to out (NUL-terminated, truncated to
 * cap - 1); *body points at the body. */
static inline int sup_http(int port, const char *method, const char *path, const char *body, char *out, size_t cap,
			   double timeout_s, int *err_out)
{
	out[0] = 0;
	int s = t_connect(port);
	if (s < 0) {
		if (err_out)
			*err_out = errno;
		return SUP_REFUSED;
	}
	size_t blen = body ? strlen(body) : 0;
	char hdr[512];
	int n = snprintf(hdr, sizeof hdr, "%s %s HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			 method, path, blen);
	if (write(s, hdr, (size_t)n) != n || (blen && write(s, body, blen) != (ssize_t)blen)) {
		close(s);
		return SUP_CLOSED;
	}
	double deadline = sup_now() + timeout_s;
	size_t got = 0;
	int timed_out = 0;
	for (;;) {
		double left = deadline - sup_now();
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		struct pollfd p = {s, POLLIN, 0};
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		char tmp[8192];
		ssize_t r = read(s, tmp, sizeof tmp);
		if (r <= 0)
			break;
		size_t take = got + (size_t)r < cap - 1 ? (size_t)r : cap - 1 - got;
		memcpy(out + got, tmp, take);
		got += take;
	}
	out[got] = 0;
	close(s);
	if (timed_out)
		return SUP_TIMEOUT;
	int status = 0;
	if (sscanf(out, "HTTP/1.%*d %d", &status) != 1 || !strstr(out, "\r\n\r\n"))
		return SUP_CLOSED;
	return status;
}

static inline const char *sup_body(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");
	return b ? b + 4 : "";
}

/* GET /health until it answers `want`; returns the seconds waited, or -1
 * after timeout_s. */
static inline double sup_wait_health(int port, int want, double timeout_s)
{
	char out[4096];
	double t0 = sup_now();
	while (sup_now() - t0 < timeout_s) {
		if (sup_http(port, "GET", "/health", NULL, out, sizeof out, 5, NULL) == want)
			return sup_now() - t0;
		usleep(20000);
	}
	return -1;
}

/* SSE body → the concatenated text; *done when "data: [DONE]" came, *error
 * when an error event came (its message into errmsg). */
static inline char *sup_sse_text(const char *body, int chat, int *done, int *error, char *errmsg, size_t errn)
{
	size_t cap = 256, len = 0;
	char *text = malloc(cap);
	text[0] = 0;
	*done = *error = 0;
	for (const char *p = body; (p = strstr(p, "data: ")); p += 6) {
		const char *end = strstr(p, "\n\n");
		if (!end)
			break; /* an event cut in the middle */
		if (!strncmp(p + 6, "[DONE]", 6)) {
			*done = 1;
			continue;
		}
		json_t *o = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
		if (!o)
			continue;
		json_t *e = json_object_get(o, "error");
		if (e) {
			*error = 1;
			if (errmsg)
				snprintf(errmsg, errn, "%s", json_string_value(json_object_get(e, "message")));
		}
		json_t *c = json_array_get(json_object_get(o, "choices"), 0);
		json_t *t = chat ? json_object_get(json_object_get(c, "delta"), "content") : json_object_get(c, "text");
		if (json_is_string(t)) {
			size_t l = json_string_length(t);
			while (len + l + 1 > cap)
				text = realloc(text, cap *= 2);
			memcpy(text + len, json_string_value(t), l);
			len += l;
			text[len] = 0;
		}
		json_decref(o);
	}
	return text;
}

/* the text of a non-streamed chat or text completion; NULL if malformed */
static inline char *sup_json_text(const char *body, int chat)
{
	json_t *o = json_loads(body, 0, NULL);
	json_t *c = json_array_get(json_object_get(o, "choices"), 0);
	json_t *t = chat ? json_object_get(json_object_get(c, "message"), "content") : json_object_get(c, "text");
	char *r = json_is_string(t) ? strdup(json_string_value(t)) : NULL;
	json_decref(o);
	return r;
}

/* The supervisor's log events named `event` (JSON lines), in order. */
static inline json_t *sup_events(const char *log, const char *event)
{
	json_t *a = json_array();
	FILE *f = fopen(log, "r");
	char line[8192];
	while (f && fgets(line, sizeof line, f)) {
		if (line[0] != '{' || !strstr(line, "\"supervisor\""))
			continue;
		json_t *o = json_loads(line, 0, NULL);
		if (o && !strcmp(json_string_value(json_object_get(o, "event")) ? json_string_value(json_object_get(o, "event")) : "", event))
			json_array_append(a, o);
		json_decref(o);
	}
	if (f)
		fclose(f);
	return a;
}

static inline int sup_count(const char *log, const char *event)
{
	json_t *a = sup_events(log, event);
	int n = (int)json_array_size(a);
	json_decref(a);
	return n;
}

/* wait until the log has at least n `event` lines; returns 1 if it did */
static inline int sup_wait_event(const char *log, const char *event, int n, double timeout_s)
{
	for (double t0 = sup_now(); sup_now() - t0 < timeout_s; usleep(20000))
		if (sup_count(log, event) >= n)
			return 1;
	return 0;
}

/* the current worker: the supervisor's child */
static inline pid_t sup_worker(pid_t sup)
{
	char p[128], buf[256] = "";
	snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)sup, (int)sup);
	FILE *f = fopen(p, "r");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = 0;
		fclose(f);
	}
	return (pid_t)atoi(buf);
}

/* alive and not a zombie */
static inline int sup_alive(pid_t pid)
{
	char p[64], buf[512];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/* every worker PID the supervisor's log names */
static inline int sup_worker_pids(const char *log, pid_t *pids, int max)
{
	json_t *a = sup_events(log, "worker_start");
	int n = 0;
	for (size_t i = 0; i < json_array_size(a) && n < max; i++)
		pids[n++] = (pid_t)json_integer_value(json_object_get(json_array_get(a, i), "pid"));
	json_decref(a);
	return n;
}

/* seconds of CPU (user + system) a process has used */
static inline double sup_cpu_s(pid_t pid)
{
	char p[64], buf[1024];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *rp = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	if (!rp || sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

#endif
