/*
 * supervise.c — `inferd serve`'s parent process: device locks, the
 * listening socket, and a worker process that it restarts.
 *
 * Processes: the supervisor (this file, single-threaded) and one worker
 * (serve.c's serve_worker, forked without exec, so it shares the parsed
 * options). The supervisor never loads a model or touches a device; the
 * worker does all the serving.
 *
 * Ordering at start: (1) take the device locks (flock on
 * RUNTIME_DIR/device-ID.lock, holding our PID), so a second instance on
 * the same device exits with the holder's PID before it binds anything;
 * (2) bind and listen; (3) fork the worker. The worker inherits the
 * listening socket and the lock descriptors: the socket outlives every
 * worker, so connections made during a restart wait in the kernel's
 * backlog instead of being refused, and a lock is released only when
 * both processes are gone. The worker sets PR_SET_PDEATHSIG(SIGKILL), so it
 * dies with the supervisor and no orphan keeps a device.
 *
 * Fds: listen socket (shared), lock fds (shared), a pipe worker → supervisor
 * (O_NONBLOCK on both ends; fixed-size struct serve_report messages below
 * PIPE_BUF, so never interleaved), and the supervisor's signalfd (closed
 * in the worker).
 *
 * Signals: the supervisor blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP and
 * reads them from a signalfd in its poll loop. SIGTERM/SIGINT: close the
 * listening socket (new connections are refused), forward to the worker,
 * which drains (serve.c), wait for it (--drain-timeout plus a grace, then
 * SIGKILL), exit 0. A second SIGTERM/SIGINT kills the worker at once.
 * SIGHUP is forwarded (the worker re-checks its models).
 *
 * Watching: the worker reports each executor's liveness every 250 ms and
 * model states as they change. The supervisor restarts the worker when it
 * exits (any cause but a drain), reports a stalled executor, or sends
 * nothing for --hang-timeout (then it is killed with SIGKILL). Restarts wait
 * an exponential backoff: 0.5 s doubling to 30 s, back to 0.5 s once a
 * worker has been ready for 10 s (INFERD_RESTART_BACKOFF=INITIAL,CAP,STABLE
 * changes these, for tests). One JSON log line per event, with the cause.
 *
 * Quarantine: a crash (a fatal signal other than SIGKILL/SIGTERM, a
 * non-zero exit) or a hang is held against every model that was loading
 * or inside a step at that moment; a model held responsible for two deaths
 * in a row is not loaded again: the next workers list it as failed with
 * the reason. A SIGKILL from outside (an operator, the OOM killer, the
 * chaos test) restarts the worker but counts against no model.
 */
#include "supervise.h"
#include "inferd.h"
#include "serve.h"
#include "registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MODELS 256

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------- device locks ---------------- */

/* The lock name of a GPU ("gpu-GPU-<UUID>": CUDA_VISIBLE_DEVICES reorders
 * indices, not UUIDs), asked in a child process: the supervisor itself must
 * never initialise CUDA, whose context does not survive the fork of the
 * worker. Returns 0, or -1 with the reason in err. */
static int gpu_lock_id(const char *device, char *out, size_t cap, char *err, size_t errn)
{
	int p[2];
	if (pipe(p)) {
		snprintf(err, errn, "pipe: %s", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		char id[128], e[INFERD_ERR_LEN];
		int rc = inferd_device_id(device, id, sizeof id, e);
		dprintf(p[1], "%c%s", rc ? 'E' : 'K', rc ? e : id);
		_exit(0);
	}
	close(p[1]);
	char buf[INFERD_ERR_LEN + 2];
	size_t got = 0;
	ssize_t r;
	while (pid > 0 && got < sizeof buf - 1 && (r = read(p[0], buf + got, sizeof buf - 1 - got)) > 0)
		got += (size_t)r;
	buf[got] = 0;
	close(p[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	if (pid < 0 || got < 2 || buf[0] != 'K') {
		const char *why = pid < 0 ? strerror(errno) : got > 1 ? buf + 1 : "no answer";
		if (strncmp(why, "device ", 7) == 0) /* it names the device already */
			snprintf(err, errn, "%s", why);
		else
			snprintf(err, errn, "device %s: %s", device, why);
		return -1;
	}
	if (strlen(buf + 1) >= cap) {
		snprintf(err, errn, "device %s: its id is too long", device);
		return -1;
	}
	memcpy(out, buf + 1, strlen(buf + 1) + 1);
	return 0;
}

int sup_device_ids(const struct serve_opts *o, char ids[][96], int max, char *err, size_t errn)
{
	/* every device a model may run on: the server's, and the ones the
	 * configuration gives single models; a GPU is locked by its UUID, the
	 * CPU only when a model computes on it */
	int n = 0, cpu = 0, nd = o->reg ? o->reg->n : 0, uses_default = nd == 0;
	for (int i = 0; i < nd; i++)
		uses_default |= !o->reg->e[i].cfg.device;
	for (int i = -1; i < nd; i++) {
		const char *dev = i < 0 ? (uses_default ? (o->device ? o->device : "cpu") : NULL) : o->reg->e[i].cfg.device;
		if (!dev)
			continue;
		if (strncmp(dev, "cuda", 4) != 0) {
			cpu = 1;
			continue;
		}
		char id[96];
		if (gpu_lock_id(dev, id, sizeof id, err, errn))
			return -1;
		int seen = 0;
		for (int j = 0; j < n; j++)
			seen |= !strcmp(ids[j], id);
		if (!seen && n < max)
			snprintf(ids[n++], 96, "%s", id);
	}
	if (cpu && !o->allow_shared_cpu && n < max)
		snprintf(ids[n++], 96, "cpu");
	return n;
}

static int mkdir_p(const char *path)
{
	char tmp[512];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0700) && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(tmp, 0700) && errno != EEXIST ? -1 : 0;
}

int sup_runtime_dir(const struct serve_opts *o, char *out, size_t n, char *err, size_t errn)
{
	const char *env = getenv("INFERD_RUNTIME_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
	char run_user[64];
	snprintf(run_user, sizeof run_user, "/run/user/%u", (unsigned)getuid());
	struct stat st;
	if (o->runtime_dir)
		snprintf(out, n, "%s", o->runtime_dir);
	else if (env && *env)
		snprintf(out, n, "%s", env);
	else if (xdg && *xdg)
		snprintf(out, n, "%s/inferd", xdg);
	else if (stat(run_user, &st) == 0 && S_ISDIR(st.st_mode) && access(run_user, W_OK) == 0)
		snprintf(out, n, "%s/inferd", run_user);
	else
		snprintf(out, n, "/tmp/inferd-%u", (unsigned)getuid());
	if (mkdir_p(out)) {
		snprintf(err, errn, "cannot create the runtime directory %s: %s", out, strerror(errno));
		return -1;
	}
	/* lock files are only as good as their directory: ours, not a link */
	if (lstat(out, &st) || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
		snprintf(err, errn, "the runtime directory %s is not a directory owned by this user", out);
		return -1;
	}
	return 0;
}

int sup_lock_devices(const char *dir, char ids[][96], int n, int *fds, char *err, size_t errn)
{
	for (int i = 0; i < n; i++) {
		char path[700];
		snprintf(path, sizeof path, "%s/device-%s.lock", dir, ids[i]);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			snprintf(err, errn, "cannot open the lock file %s: %s", path, strerror(errno));
			goto fail;
		}
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			int e = errno;
			char pid[32] = "";
			for (int t = 0; t < 20 && !pid[0]; t++) { /* the holder may be writing it */
				ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
				pid[r > 0 ? r : 0] = 0;
				pid[strcspn(pid, "\n")] = 0;
				if (!pid[0])
					usleep(10000);
			}
			close(fd);
			if (e == EWOULDBLOCK)
				snprintf(err, errn,
					 "device %s is in use by another inferd server (pid %s; lock file %s). One server per "
					 "device: stop that one, or give this one other devices%s",
					 ids[i], pid[0] ? pid : "unknown", path,
					 strcmp(ids[i], "cpu") ? "" : " (--allow-shared-cpu lets servers share the CPU)");
			else
				snprintf(err, errn, "cannot lock %s: %s", path, strerror(e));
			goto fail;
		}
		char pid[32];
		int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
		if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)len, 0) != len) {
			snprintf(err, errn, "cannot write the lock file %s: %s", path, strerror(errno));
			close(fd);
			goto fail;
		}
		fds[i] = fd;
		continue;
	fail:
		while (i-- > 0)
			close(fds[i]);
		return -1;
	}
	return 0;
}

static int listen_on(const struct serve_opts *o)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	if (inet_pton(AF_INET, o->host, &addr.sin_addr) != 1) {
		fprintf(stderr, "inferd serve: --host \"%s\" is not an IPv4 address\n", o->host);
		return -2;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
	    bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 1024)) {
		fprintf(stderr, "inferd serve: cannot listen on %s:%d: %s\n", o->host, o->port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* ---------------- the supervisor ---------------- */

struct sup {
	const struct serve_opts *o;
	int listen_fd, sfd;
	double t0;                     /* start, for the log's "t" */
	double initial, cap, stable;   /* backoff */
	double delay;                  /* the next restart's wait */
	pid_t worker;
	int gen;
	int rep_fd;                    /* read end of the worker's pipe */
	double started, ready_at, last_msg;
	int ready;
	int killed_hung;               /* we killed it for a hang */
	char hang_cause[240];
	unsigned long long running;    /* last heartbeat's models inside steps */
	double restart_at;             /* 0: no restart pending */
	int draining;
	double drain_deadline;
	int n_models;
	int mstate[MAX_MODELS];        /* last REPORT_MODEL_* per model, -1 none */
	int busy[MAX_MODELS];          /* last REPORT_BUSY per model */
	char merr[MAX_MODELS][232];
	int strikes[MAX_MODELS];
	char *quarantine[MAX_MODELS];
	char *skip_text[MAX_MODELS];
};

static void sup_log(struct sup *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sup_log(struct sup *s, const char *fmt, ...)
{
	char body[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	fprintf(stderr, "{\"t\":%.3f,\"supervisor\":%d,%s}\n", mono_s() - s->t0, (int)getpid(), body);
}

/* text for JSON: quotes and backslashes dropped, control characters as spaces */
static const char *jtext(const char *in, char *out, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; in[i] && j + 1 < n; i++)
		if (in[i] != '"' && in[i] != '\\')
			out[j++] = (unsigned char)in[i] < 32 ? ' ' : in[i];
	out[j] = 0;
	return out;
}

static const char *sig_name(int sig)
{
	static const struct { int s; const char *n; } names[] = {
		{SIGSEGV, "SIGSEGV"}, {SIGABRT, "SIGABRT"}, {SIGKILL, "SIGKILL"}, {SIGTERM, "SIGTERM"}, {SIGINT, "SIGINT"},
		{SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"}, {SIGSYS, "SIGSYS"},
		{SIGHUP, "SIGHUP"},   {SIGQUIT, "SIGQUIT"}, {SIGPIPE, "SIGPIPE"}, {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"},
		{SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGALRM, "SIGALRM"},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].s == sig)
			return names[i].n;
	return "a signal";
}

static void start_worker(struct sup *s)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK)) {
		sup_log(s, "\"event\":\"error\",\"cause\":\"pipe: %s\"", strerror(errno));
		s->restart_at = mono_s() + s->cap;
		return;
	}
	const char *skip[MAX_MODELS];
	int quarantined[MAX_MODELS];
	for (int i = 0; i < s->n_models; i++) {
		free(s->skip_text[i]);
		s->skip_text[i] = NULL;
		quarantined[i] = s->quarantine[i] != NULL;
		if (s->quarantine[i])
			s->skip_text[i] = strdup(s->quarantine[i]);
		else if (!s->o->reload_all && s->mstate[i] == REPORT_MODEL_FAILED) {
			char t[400];
			snprintf(t, sizeof t, "%.232s (not retried after the worker restart; SIGHUP or --reload all retries it)",
				 s->merr[i]);
			if (!strstr(s->merr[i], "not retried after the worker restart"))
				s->skip_text[i] = strdup(t);
			else
				s->skip_text[i] = strdup(s->merr[i]);
		}
		skip[i] = s->skip_text[i];
	}
	s->gen++;
	fflush(NULL);
	pid_t parent = getpid(), pid = fork();
	if (pid < 0) {
		sup_log(s, "\"event\":\"error\",\"cause\":\"fork: %s\"", strerror(errno));
		close(p[0]);
		close(p[1]);
		s->restart_at = mono_s() + s->delay;
		return;
	}
	if (pid == 0) {
		/* the worker: dies with the supervisor; default signal mask */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(p[0]);
		close(s->sfd);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		struct serve_worker_ctx w = {.report_fd = p[1], .generation = s->gen, .skip = skip, .quarantined = quarantined};
		exit(serve_worker(s->o, s->listen_fd, &w));
	}
	close(p[1]);
	s->rep_fd = p[0];
	s->worker = pid;
	s->started = s->last_msg = mono_s();
	s->ready = 0;
	s->killed_hung = 0;
	s->running = 0;
	s->restart_at = 0;
	for (int i = 0; i < s->n_models; i++) {
		s->busy[i] = 0;
		if (!skip[i])
			s->mstate[i] = -1;
	}
	sup_log(s, "\"event\":\"worker_start\",\"pid\":%d,\"generation\":%d", (int)pid, s->gen);
}

static void read_reports(struct sup *s)
{
	struct serve_report r;
	while (s->rep_fd >= 0) {
		ssize_t n = read(s->rep_fd, &r, sizeof r);
		if (n != (ssize_t)sizeof r)
			break;
		s->last_msg = mono_s();
		r.text[sizeof r.text - 1] = 0;
		char t[240];
		switch (r.type) {
		case REPORT_HEARTBEAT:
			s->running = r.running;
			if (r.state == 1 && !s->killed_hung && !s->draining) {
				snprintf(s->hang_cause, sizeof s->hang_cause, "hung: %s", r.text);
				sup_log(s, "\"event\":\"worker_hung\",\"pid\":%d,\"cause\":\"%s\"", (int)s->worker,
					jtext(s->hang_cause, t, sizeof t));
				s->killed_hung = 1;
				kill(s->worker, SIGKILL);
			}
			break;
		case REPORT_MODEL:
			if (r.model >= 0 && r.model < s->n_models) {
				s->mstate[r.model] = r.state;
				snprintf(s->merr[r.model], sizeof s->merr[r.model], "%s", r.text);
			}
			break;
		case REPORT_BUSY:
			if (r.model >= 0 && r.model < s->n_models && r.model < MAX_MODELS)
				s->busy[r.model] = r.state;
			break;
		case REPORT_READY:
			s->ready = 1;
			s->ready_at = mono_s();
			sup_log(s, "\"event\":\"worker_ready\",\"pid\":%d,\"generation\":%d,\"models_ready\":%d,\"start_ms\":%.1f",
				(int)s->worker, s->gen, r.state, (s->ready_at - s->started) * 1e3);
			break;
		default:
			break;
		}
	}
}

/* The worker is gone: log the cause, count it against the models involved,
 * schedule the restart. */
static void worker_gone(struct sup *s, int status)
{
	read_reports(s); /* its last words */
	close(s->rep_fd);
	s->rep_fd = -1;
	double now = mono_s(), uptime = now - s->started;
	char cause[300], t[300];
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0, code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
	if (s->killed_hung)
		snprintf(cause, sizeof cause, "%s", s->hang_cause);
	else if (sig)
		snprintf(cause, sizeof cause, "killed by %s (signal %d)", sig_name(sig), sig);
	else
		snprintf(cause, sizeof cause, "exited with status %d", code);
	pid_t pid = s->worker;
	s->worker = 0;
	if (s->draining) {
		sup_log(s, "\"event\":\"worker_exit\",\"pid\":%d,\"cause\":\"%s\",\"draining\":true", (int)pid,
			jtext(cause, t, sizeof t));
		return;
	}
	/* the worker's own doing: a crash, a failing exit, a hang */
	int own = s->killed_hung || (sig && sig != SIGKILL && sig != SIGTERM && sig != SIGINT && sig != SIGHUP) ||
		  (!sig && code != 0);
	for (int i = 0; own && i < s->n_models && i < MAX_MODELS; i++) {
		int involved = s->mstate[i] == REPORT_MODEL_LOADING || s->busy[i] || (i < 64 && (s->running >> i & 1));
		s->strikes[i] = involved ? s->strikes[i] + 1 : 0;
		if (involved && s->strikes[i] >= 2 && !s->quarantine[i]) {
			char q[600];
			snprintf(q, sizeof q,
				 "quarantined: the worker died twice in a row while this model was %s (last: %s); restart "
				 "the server to try it again",
				 s->mstate[i] == REPORT_MODEL_LOADING ? "loading" : "running", cause);
			s->quarantine[i] = strdup(q);
			char qt[600];
			sup_log(s, "\"event\":\"quarantine\",\"model\":\"%s\",\"reason\":\"%s\"",
				jtext(s->o->reg->e[i].name, t, sizeof t), jtext(q, qt, sizeof qt));
		}
	}
	if (s->ready && now - s->ready_at >= s->stable)
		s->delay = s->initial; /* it had been stable: no crash loop */
	double wait = s->delay;
	s->delay = s->delay * 2 < s->cap ? s->delay * 2 : s->cap;
	s->restart_at = now + wait;
	sup_log(s,
		"\"event\":\"worker_exit\",\"pid\":%d,\"generation\":%d,\"cause\":\"%s\",\"uptime_s\":%.3f,\"was_ready\":%s,"
		"\"restart_in_s\":%.3f",
		(int)pid, s->gen, jtext(s->killed_hung ? s->hang_cause : cause, t, sizeof t), uptime,
		s->ready ? "true" : "false", wait);
}

static int supervise(const struct serve_opts *o, int listen_fd)
{
	struct sup *s = calloc(1, sizeof *s);
	if (!s)
		return 1;
	s->o = o;
	s->listen_fd = listen_fd;
	s->rep_fd = -1;
	s->t0 = mono_s();
	s->initial = 0.5;
	s->cap = 30;
	s->stable = 10;
	const char *bo = getenv("INFERD_RESTART_BACKOFF");
	if (bo && sscanf(bo, "%lf,%lf,%lf", &s->initial, &s->cap, &s->stable) != 3) {
		fprintf(stderr, "inferd serve: INFERD_RESTART_BACKOFF must be INITIAL,CAP,STABLE in seconds\n");
		free(s);
		return 2;
	}
	s->delay = s->initial;
	s->n_models = o->reg->n < MAX_MODELS ? o->reg->n : MAX_MODELS;
	for (int i = 0; i < MAX_MODELS; i++)
		s->mstate[i] = -1;
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	s->sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	double hang = o->hang_timeout_s > 0 ? o->hang_timeout_s : 60, drain = o->drain_timeout_s > 0 ? o->drain_timeout_s : 30;
	sup_log(s, "\"event\":\"supervisor_start\",\"listen\":\"%s:%d\",\"hang_timeout_s\":%g,\"drain_timeout_s\":%g,"
		"\"backoff\":[%g,%g,%g]", o->host, o->port, hang, drain, s->initial, s->cap, s->stable);
	start_worker(s);
	int rc = 0;
	for (;;) {
		double now = mono_s(), next = now + 1;
		if (s->worker && !s->draining && !s->killed_hung && now - s->last_msg > hang) {
			snprintf(s->hang_cause, sizeof s->hang_cause, "hung: no heartbeat for %.1f s", now - s->last_msg);
			sup_log(s, "\"event\":\"worker_hung\",\"pid\":%d,\"cause\":\"%s\"", (int)s->worker, s->hang_cause);
			s->killed_hung = 1;
			kill(s->worker, SIGKILL);
		}
		if (s->worker && s->draining && now > s->drain_deadline) {
			sup_log(s, "\"event\":\"drain_overrun\",\"pid\":%d,\"cause\":\"the worker did not exit in time; killed\"",
				(int)s->worker);
			kill(s->worker, SIGKILL);
			s->drain_deadline = now + 3600;
			rc = 1;
		}
		if (!s->worker && s->draining)
			break;
		if (!s->worker && s->restart_at && now >= s->restart_at)
			start_worker(s);
		if (s->worker && !s->draining && s->last_msg + hang < next)
			next = s->last_msg + hang;
		if (!s->worker && s->restart_at && s->restart_at < next)
			next = s->restart_at;
		if (s->draining && s->drain_deadline < next)
			next = s->drain_deadline;
		now = mono_s();
		int ms = next > now ? (int)((next - now) * 1e3) + 1 : 0;
		struct pollfd p[2] = {{s->sfd, POLLIN, 0}, {s->rep_fd, POLLIN, 0}};
		int np = s->rep_fd >= 0 ? 2 : 1;
		if (poll(p, (nfds_t)np, ms) < 0 && errno != EINTR)
			break;
		if (np == 2 && (p[1].revents & POLLIN))
			read_reports(s);
		struct signalfd_siginfo si;
		while (read(s->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
			int sig = (int)si.ssi_signo;
			if (sig == SIGCHLD) {
				int status;
				pid_t w;
				while ((w = waitpid(-1, &status, WNOHANG)) > 0)
					if (w == s->worker) {
						/* a drain ends with status 0 (or SIGTERM itself when
						 * it came before the worker took its signals) */
						if (s->draining && !(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
						    !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM))
							rc = 1;
						worker_gone(s, status);
					}
			} else if (sig == SIGHUP) {
				sup_log(s, "\"event\":\"sighup\",\"action\":\"forwarded to the worker (pid %d): re-check the models\"",
					(int)s->worker);
				if (s->worker)
					kill(s->worker, SIGHUP);
			} else if (s->draining) {
				sup_log(s, "\"event\":\"%s\",\"action\":\"second signal: the worker is killed now\"", sig_name(sig));
				if (s->worker)
					kill(s->worker, SIGKILL);
			} else {
				s->draining = 1;
				s->drain_deadline = mono_s() + drain + 10;
				close(s->listen_fd); /* the worker closes its copy: new connections are refused */
				s->listen_fd = -1;
				sup_log(s, "\"event\":\"%s\",\"action\":\"draining: the worker (pid %d) finishes in-flight requests "
					"within %g s\"", sig_name(sig), (int)s->worker, drain);
				if (s->worker)
					kill(s->worker, SIGTERM);
			}
		}
	}
	sup_log(s, "\"event\":\"supervisor_exit\",\"status\":%d,\"workers_started\":%d", rc, s->gen);
	close(s->sfd);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	for (int i = 0; i < MAX_MODELS; i++) {
		free(s->quarantine[i]);
		free(s->skip_text[i]);
	}
	free(s);
	return rc;
}

int serve_main(const struct serve_opts *o)
{
	char dir[512], err[1024], ids[SUP_MAX_DEVICES][96];
	int fds[SUP_MAX_DEVICES];
	if (sup_runtime_dir(o, dir, sizeof dir, err, sizeof err)) {
		fprintf(stderr, "inferd serve: %s\n", err);
		return 1;
	}
	int n = sup_device_ids(o, ids, SUP_MAX_DEVICES, err, sizeof err);
	if (n < 0 || sup_lock_devices(dir, ids, n, fds, err, sizeof err)) {
		fprintf(stderr, "inferd serve: %s\n", err);
		return 1;
	}
	int rc, fd = listen_on(o);
	if (fd < 0)
		rc = fd == -2 ? 2 : 1;
	else if (o->no_supervise)
		rc = serve_worker(o, fd, NULL); /* it closes the socket when it drains */
	else
		rc = supervise(o, fd);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	return rc;
}
