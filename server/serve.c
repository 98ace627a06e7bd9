/*
 * serve.c — `inferd serve`: the OpenAI-compatible HTTP API over the engine.
 *
 * Threads: libmicrohttpd runs one thread per connection (bounded by
 * --max-connections, with an idle timeout against slow clients). A request
 * thread parses and validates the body (jansson), renders the chat template
 * and tokenizes (masked: text typed by users never becomes control tokens),
 * submits to the model's executor and then waits on two things at once:
 * the request's event fd and its own socket (POLLRDHUP), so a client that
 * goes away cancels its sequence within one engine step, queued or running.
 * The server never touches compute: it only uses the engine's C API.
 * Models: the model manager (models.c) loads a model on its first request
 * and unloads idle ones (keep-alive, memory budget); a request holds its
 * model from models_acquire to models_release, which is also the admission
 * (per model, parallel running plus queue waiting; beyond that 429 at
 * once). Batch requests wait in the server while the batch lane is paused.
 * Slow clients: a watchdog thread shuts down connections whose request has
 * not arrived whole within --request-timeout.
 * Shared state: the model manager's slots (under its mutex), the
 * watchdog's table (under its mutex) and atomic counters for /metrics.
 *
 * This is the worker process of `inferd serve` (supervise.c starts it and
 * passes the listening socket). Its main thread blocks SIGTERM, SIGINT and
 * SIGHUP before any other thread starts and takes them with sigtimedwait;
 * every 250 ms it sends the supervisor a heartbeat built from each
 * executor's progress (an executor inside a step for --hang-timeout is
 * stalled). The server answers at once; a loader thread loads the preload
 * models (--model, --config) and /health is 503 until that first pass is
 * over. SIGTERM/SIGINT: drain
 * (stop accepting, wait for the requests being answered up to
 * --drain-timeout, then end the rest with a clear error). SIGHUP: retry
 * failed models, name changed files.
 */
#include "serve.h"
#include "models.h"
#include "registry.h"
#include "inferd.h"
#include "tok.h"
#include "tmpl.h"
#include "toolcall.h"
#include "fault.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (8u << 20)

struct server {
	const char **keys;
	int n_keys;
	double timeout_s, queue_timeout_s, token_timeout_s;
	const char **cors;
	int n_cors;
	atomic_int stopping;        /* draining: new requests get 503 */
	atomic_int aborting;        /* the drain timeout passed: in-flight requests end now */
	atomic_int active;          /* requests being answered (drain waits for 0) */
	atomic_int ready;           /* the first loading pass is over (and reported) */
	atomic_int batch_paused;    /* POST /admin/batch/pause: batch requests wait */
	atomic_int batch_waiting;   /* batch requests waiting for the lane */
	double hang_timeout_s;      /* an executor in a step this long is stalled */
	double drain_timeout_s;
	atomic_ullong ttft_hist[11], itl_hist[11]; /* buckets of HIST_LE, then +Inf */
	atomic_ullong ttft_sum_us, itl_sum_us;
	atomic_ullong n_requests, n_errors, n_rejected, n_tokens_out, n_tokens_in, n_cancelled, n_timeouts;
};

static struct server S;
static void report_busy(struct slot *s);

/* requests by route and status, for /metrics */
static const char *ROUTES[] = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/tokenize",
			       "/detokenize", "/health", "/metrics", "other"};
static const unsigned STATUSES[] = {200, 204, 400, 401, 404, 405, 413, 429, 503, 504, 0};
static atomic_ullong by_route[9][11];

static void count_request(const char *url, unsigned status)
{
	int r = 8, k = 10;
	for (int i = 0; i < 8; i++)
		if (url && (!strcmp(url, ROUTES[i]) || (i == 3 && !strncmp(url, "/v1/models/", 11))))
			r = i;
	for (int i = 0; i < 10; i++)
		if (STATUSES[i] == status)
			k = i;
	atomic_fetch_add(&by_route[r][k], 1);
}

/* Slow clients: a request must arrive whole (headers and body) within
 * --request-timeout of its connection opening; a watchdog shuts down the
 * sockets of those that do not (libmicrohttpd's idle timeout alone lets a
 * slowloris client trickle bytes forever). */
#define MAX_WATCH 4096
static struct watch {
	int fd;
	double t0;
	int received;
} watches[MAX_WATCH];
static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static double request_timeout_s = 30;
static atomic_ullong n_slow_closed;
static const double HIST_LE[10] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static __thread unsigned last_status; /* thread per connection: the status just queued */

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void observe(atomic_ullong *hist, atomic_ullong *sum_us, double secs)
{
	int b = 0;
	while (b < 10 && secs > HIST_LE[b])
		b++;
	atomic_fetch_add(&hist[b], 1);
	atomic_fetch_add(sum_us, (unsigned long long)(secs * 1e6));
}

/* ---------------- responses ---------------- */

/* Access-Control-Allow-Origin for the origins given by --cors-origin only */
static void add_cors(struct MHD_Connection *c, struct MHD_Response *r)
{
	const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
	for (int i = 0; origin && i < S.n_cors; i++)
		if (!strcmp(S.cors[i], origin) || !strcmp(S.cors[i], "*")) {
			MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
			MHD_add_response_header(r, "Vary", "Origin");
			return;
		}
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *body, const char *retry_after)
{
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (retry_after)
		MHD_add_response_header(r, "Retry-After", retry_after);
	if (status == 408 || status == 504)
		MHD_add_response_header(r, "x-should-retry", "false");
	add_cors(c, r);
	last_status = status;
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *type, const char *param,
				  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *type, const char *param,
				  const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	atomic_fetch_add(&S.n_errors, 1);
	json_t *e = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", msg, "type", type, "param",
			      param ? json_string(param) : json_null(), "code", json_null());
	return send_json(c, status, e, status == 429 || status == 503 ? "1" : NULL);
}

/* ---------------- per-connection state ---------------- */

struct conn {
	char *body;
	size_t len;
	int too_big;
	/* streaming */
	inferd_req_t *q;
	int fd;                 /* the client's socket */
	int chat;               /* chat.completion.chunk or text_completion */
	char id[40];
	const char *model;
	char *out;              /* pending bytes of the SSE stream */
	size_t out_len, out_off;
	int done, include_usage, logprobs;
	int n_tokens;
	int responses;          /* the Responses API event sequence */
	int seq_no;
	char *resp_text;        /* Responses: the open message's text (or call's arguments), for the done events */
	size_t resp_len;
	/* for the log line and the latency histograms */
	double t_start, t_first, t_last;
	const char *route;
	unsigned status;
	int prompt_tokens, completion_tokens;
	const char *finish;
	char error[256];
	struct slot *slot;      /* held (models_acquire) while set */
	/* tool calls and reasoning (chat and Responses) */
	struct tc_parser *tcp;  /* streaming: splits the output (NULL: plain text) */
	json_t *tools;          /* the request's tools (the parser types XML parameters) */
	char *prompt_text;      /* the rendered prompt (the parser reads its tail) */
	int forced;             /* FORCED_*: tool_choice named or required */
	char forced_name[72];
	int parallel;           /* parallel_tool_calls */
	uint64_t call_seed;     /* derives this response's call ids */
	char *ftext;            /* forced: the JSON output so far */
	size_t flen;
	int n_calls;
	/* Responses streaming: output items */
	int r_open;             /* 0 none, 1 reasoning, 2 message, 3 function_call (the last of r_output) */
	char r_item[48];        /* id of the open item */
	json_t *r_output;       /* the items so far (for response.completed) */
	char *r_reason;         /* the open reasoning item's text */
	size_t r_reason_len;
	double keep_alive;      /* the request's keep_alive, or NAN */
	char url[64];           /* for the per-route counters */
	int url_seen;
};

/* A connection's watch lives in its libmicrohttpd socket context from
 * "started" to "closed", so a later connection that reuses the file
 * descriptor can never be cut off by a stale entry. */
static struct watch *conn_watch(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

/* mark the connection's current request as arrived (1) or re-arm its
 * deadline for the next request on a keep-alive connection (0) */
static void watch_mark(struct MHD_Connection *c, int received)
{
	pthread_mutex_lock(&watch_mu);
	struct watch *w = conn_watch(c);
	if (w && w->fd) {
		w->received = received;
		if (!received)
			w->t0 = mono();
	}
	pthread_mutex_unlock(&watch_mu);
}

static void notify_conn(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	pthread_mutex_lock(&watch_mu);
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		*socket_context = NULL;
		for (int i = 0; ci && i < MAX_WATCH; i++)
			if (watches[i].fd == 0) {
				watches[i] = (struct watch){ci->connect_fd + 1, mono(), 0};
				*socket_context = &watches[i];
				break;
			}
	} else if (*socket_context) {
		((struct watch *)*socket_context)->fd = 0;
		*socket_context = NULL;
	}
	pthread_mutex_unlock(&watch_mu);
}

static void *watchdog(void *arg)
{
	(void)arg;
	while (!atomic_load(&S.stopping)) {
		usleep(200000);
		double now = mono();
		pthread_mutex_lock(&watch_mu);
		for (int i = 0; i < MAX_WATCH; i++)
			if (watches[i].fd && !watches[i].received && now - watches[i].t0 > request_timeout_s) {
				shutdown(watches[i].fd - 1, SHUT_RDWR);
				watches[i].received = 1; /* once */
				atomic_fetch_add(&n_slow_closed, 1);
			}
		pthread_mutex_unlock(&watch_mu);
	}
	return NULL;
}

static void log_request(const struct conn *k)
{
	if (!k->route)
		return;
	double now = mono();
	json_t *l = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:f,s:f,s:s}", "id", k->id[0] ? k->id : "-", "model",
			      k->model ? k->model : "-", "route", k->route, "status", k->status, "prompt_tokens",
			      k->prompt_tokens, "completion_tokens", k->completion_tokens, "ttft_ms",
			      k->t_first ? (k->t_first - k->t_start) * 1e3 : -1.0, "duration_ms", (now - k->t_start) * 1e3,
			      "finish_reason", k->finish ? k->finish : "-");
	if (k->error[0])
		json_object_set_new(l, "error", json_string(k->error));
	if (k->error[0] && k->body) /* the parameters of failed and timed-out requests */
		json_object_set_new(l, "request", json_loadb(k->body, k->len < 4096 ? k->len : 0, 0, NULL));
	char *t = json_dumps(l, JSON_COMPACT);
	fprintf(stderr, "%s\n", t);
	free(t);
	json_decref(l);
}

static void token_seen(struct conn *k)
{
	double now = mono();
	if (!k->t_first) {
		k->t_first = now;
		observe(S.ttft_hist, &S.ttft_sum_us, now - k->t_start);
	} else {
		observe(S.itl_hist, &S.itl_sum_us, now - k->t_last);
	}
	k->t_last = now;
}

/* The request's engine work is over (finished, failed or abandoned): it
 * no longer counts against the model's admission limit. Called as soon as
 * that is known, not when libmicrohttpd later completes the connection. */
static void release_slot(struct conn *k)
{
	if (k->slot)
		models_release(k->slot, k->keep_alive);
	k->slot = NULL;
}

static void conn_free(struct conn *k)
{
	if (!k)
		return;
	log_request(k);
	release_slot(k);
	free(k->resp_text);
	tc_parser_free(k->tcp);
	json_decref(k->tools);
	json_decref(k->r_output);
	free(k->prompt_text);
	free(k->ftext);
	free(k->r_reason);
	if (k->q) {
		inferd_req_cancel(k->q);
		inferd_req_release(k->q);
	}
	free(k->body);
	free(k->out);
	free(k);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	struct conn *kk = *con_cls;
	if (kk && kk->url_seen)
		count_request(kk->url, kk->status ? kk->status : last_status);
	if (kk && kk->url_seen)
		atomic_fetch_sub(&S.active, 1);
	watch_mark(c, 0); /* the next request on this connection gets a fresh deadline */
	conn_free(*con_cls);
	*con_cls = NULL;
}

static int client_gone(int fd)
{
	if (fd < 0)
		return 0;
	struct pollfd p = {fd, POLLRDHUP, 0};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait for the next event, watching the socket: returns 0 with an event,
 * 1 when the client went away, 2 on timeout (keep-alive due), 3 when the
 * server is ending the requests a drain left unfinished. */
static int next_event(inferd_req_t *q, int fd, struct inferd_event *ev, int timeout_ms)
{
	for (int waited = 0;;) {
		if (inferd_req_next(q, ev, 0) == 0)
			return 0;
		if (client_gone(fd))
			return 1;
		if (atomic_load(&S.aborting))
			return 3;
		if (waited >= timeout_ms)
			return 2;
		struct pollfd p[2] = {{inferd_req_fd(q), POLLIN, 0}, {fd, POLLRDHUP, 0}};
		poll(p, fd >= 0 ? 2 : 1, 100);
		waited += 100;
	}
}

/* ---------------- requests ---------------- */

static struct slot *find_model(const char *name) { return models_find(name); }

#define DRAIN_MSG "the server is shutting down and this request did not finish within the drain timeout (--drain-timeout %g s); retry it"

static const char *finish_str(int f)
{
	return f == INFERD_FINISH_STOP ? "stop" : f == INFERD_FINISH_LENGTH ? "length" : inferd_finish_name(f);
}

struct built {
	struct inferd_request r;
	int32_t *ids;
	const char **stop;
	struct inferd_logit_bias *bias;
	int stream, include_usage, prompt_tokens;
	char err[512];
	const char *err_param;
	const char *prio_header; /* X-Priority, or NULL */
	int max_tokens_given;
	/* tools and reasoning (chat, Responses) */
	json_t *tools;          /* validated (chat format), borrowed */
	struct tc_options tco;
	int parse;              /* split reasoning / tool calls out of the output */
	int forced;             /* FORCED_NAMED / FORCED_REQUIRED */
	char forced_name[72];
	char *prompt_text;      /* the rendered chat prompt */
	size_t prompt_len;
	char *grammar_text;     /* a schema or grammar built for the request */
	struct tc_syntax slot_syn; /* the model's */
};

enum { FORCED_NONE, FORCED_NAMED, FORCED_REQUIRED };

static void built_free(struct built *b)
{
	free(b->prompt_text);
	free(b->grammar_text);
	free(b->ids);
	free(b->stop);
	free(b->bias);
}

#define FAIL(param, ...) do { b->err_param = param; snprintf(b->err, sizeof b->err, __VA_ARGS__); return -1; } while (0)

static int num_field(json_t *o, const char *k, double lo, double hi, double *v, struct built *b)
{
	json_t *x = json_object_get(o, k);
	if (!x || json_is_null(x))
		return 0;
	if (!json_is_number(x))
		FAIL(k, "'%s' must be a number", k);
	*v = json_number_value(x);
	if (!(*v >= lo && *v <= hi))
		FAIL(k, "'%s' must be between %g and %g", k, lo, hi);
	return 0;
}

/* Sampling fields shared by both endpoints. */
static int common_fields(json_t *o, struct built *b, const struct slot *s)
{
	struct inferd_request *r = &b->r;
	inferd_request_init(r);
	double d;
	d = 1.0;
	if (num_field(o, "temperature", 0, 2, &d, b))
		return -1;
	r->temperature = (float)d;
	d = 1.0;
	if (num_field(o, "top_p", 0, 1, &d, b))
		return -1;
	if (d <= 0)
		FAIL("top_p", "'top_p' must be greater than 0");
	r->top_p = (float)d;
	d = 0;
	if (num_field(o, "top_k", 0, 1e9, &d, b))
		return -1;
	r->top_k = (int)d;
	d = 0;
	if (num_field(o, "min_p", 0, 1, &d, b))
		return -1;
	r->min_p = (float)d;
	d = 0;
	if (num_field(o, "presence_penalty", -2, 2, &d, b))
		return -1;
	r->presence_penalty = (float)d;
	d = 0;
	if (num_field(o, "frequency_penalty", -2, 2, &d, b))
		return -1;
	r->frequency_penalty = (float)d;
	d = 1;
	if (num_field(o, "repetition_penalty", 0.01, 10, &d, b))
		return -1;
	r->repetition_penalty = (float)d;
	d = 0;
	if (num_field(o, "seed", -9.2e18, 9.2e18, &d, b))
		return -1;
	r->seed = (uint64_t)(int64_t)d;
	d = 1;
	if (num_field(o, "n", 1, 1, &d, b))
		FAIL("n", "only n=1 is supported");
	/* interactive (default) or batch work: batch may not use the KV reserve
	 * and is preempted first; the field wins over the X-Priority header */
	json_t *pr = json_object_get(o, "priority");
	const char *prio = pr && !json_is_null(pr) ? json_string_value(pr) : b->prio_header;
	if ((pr && !json_is_null(pr) && !json_is_string(pr)) ||
	    (prio && strcmp(prio, "interactive") && strcmp(prio, "batch")))
		FAIL(pr && !json_is_null(pr) ? "priority" : "X-Priority",
		     "priority must be \"interactive\" or \"batch\"%s", pr && !json_is_null(pr) ? "" : " (X-Priority header)");
	r->priority = prio && !strcmp(prio, "batch") ? -1 : 0;
	d = 16;
	json_t *mt = json_object_get(o, "max_completion_tokens");
	const char *mtk = mt && !json_is_null(mt) ? "max_completion_tokens" : "max_tokens";
	if (num_field(o, mtk, 1, 1e7, &d, b))
		return -1;
	if (!json_object_get(o, mtk) || json_is_null(json_object_get(o, mtk)))
		d = s->n_ctx < 4096 ? s->n_ctx / 2 : 1024;
	else
		b->max_tokens_given = 1;
	r->max_tokens = (int)d;
	json_t *st = json_object_get(o, "stop");
	if (json_is_string(st)) {
		b->stop = malloc(sizeof *b->stop);
		b->stop[0] = json_string_value(st);
		r->n_stop = 1;
	} else if (json_is_array(st)) {
		if (json_array_size(st) > 16)
			FAIL("stop", "at most 16 stop sequences");
		b->stop = malloc((json_array_size(st) + 1) * sizeof *b->stop);
		for (size_t i = 0; i < json_array_size(st); i++) {
			if (!json_is_string(json_array_get(st, i)) || !json_string_length(json_array_get(st, i)))
				FAIL("stop", "'stop' must be a non-empty string or a list of them");
			b->stop[i] = json_string_value(json_array_get(st, i));
		}
		r->n_stop = (int)json_array_size(st);
	} else if (st && !json_is_null(st)) {
		FAIL("stop", "'stop' must be a string or a list of strings");
	}
	r->stop = b->stop;
	json_t *lb = json_object_get(o, "logit_bias");
	if (lb && !json_is_null(lb)) {
		if (!json_is_object(lb))
			FAIL("logit_bias", "'logit_bias' must be an object of token id -> bias");
		b->bias = malloc((json_object_size(lb) + 1) * sizeof *b->bias);
		const char *key;
		json_t *v;
		int k = 0;
		json_object_foreach(lb, key, v)
		{
			char *end;
			long id = strtol(key, &end, 10);
			if (*end || end == key || !json_is_number(v) || json_number_value(v) < -100 || json_number_value(v) > 100)
				FAIL("logit_bias", "'logit_bias' entry \"%.32s\" must map a token id to a number in [-100, 100]", key);
			b->bias[k++] = (struct inferd_logit_bias){(int32_t)id, (float)json_number_value(v)};
		}
		r->logit_bias = b->bias;
		r->n_logit_bias = k;
	}
	json_t *lp = json_object_get(o, "logprobs");
	if (json_is_true(lp))
		r->logprobs = 1;
	else if (json_is_integer(lp)) { /* completions API: logprobs = n */
		r->logprobs = 1;
		r->top_logprobs = (int)json_integer_value(lp);
	} else if (lp && !json_is_null(lp) && !json_is_false(lp))
		FAIL("logprobs", "'logprobs' must be a boolean");
	d = r->top_logprobs;
	if (num_field(o, "top_logprobs", 0, 20, &d, b))
		return -1;
	r->top_logprobs = (int)d;
	r->ignore_eos = json_is_true(json_object_get(o, "ignore_eos")); /* extension, as vLLM */
	/* structured output: response_format (json_object, json_schema) or the
	 * grammar extension (GBNF text, llama.cpp's syntax) */
	json_t *rf = json_object_get(o, "response_format"), *gr = json_object_get(o, "grammar");
	if (gr && !json_is_null(gr)) {
		if (!json_is_string(gr))
			FAIL("grammar", "'grammar' must be GBNF text (start rule root)");
		r->grammar_kind = "gbnf";
		r->grammar = json_string_value(gr);
	}
	if (rf && !json_is_null(rf)) {
		const char *t = json_string_value(json_object_get(rf, "type"));
		if (!json_is_object(rf) || !t)
			FAIL("response_format", "'response_format' must be {\"type\": \"text\", \"json_object\" or \"json_schema\"}");
		if (strcmp(t, "text") && r->grammar_kind)
			FAIL("grammar", "give either 'grammar' or 'response_format', not both");
		if (!strcmp(t, "json_object")) {
			r->grammar_kind = "json_object";
		} else if (!strcmp(t, "json_schema")) {
			json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
			if (!json_is_object(schema))
				FAIL("response_format", "response_format.json_schema.schema must be a JSON Schema object");
			b->grammar_text = json_dumps(schema, JSON_COMPACT);
			r->grammar_kind = "json_schema";
			r->grammar = b->grammar_text;
		} else if (strcmp(t, "text")) {
			FAIL("response_format", "response_format.type must be \"text\", \"json_object\" or \"json_schema\", got \"%s\"", t);
		}
	}
	if (r->grammar_kind) {
		char gerr[INFERD_ERR_LEN];
		if (inferd_grammar_check(r->grammar_kind, r->grammar, gerr))
			FAIL(gr && !json_is_null(gr) ? "grammar" : "response_format", "%s", gerr);
	}
	json_t *stream = json_object_get(o, "stream");
	if (stream && !json_is_null(stream) && !json_is_boolean(stream))
		FAIL("stream", "'stream' must be a boolean");
	b->stream = json_is_true(stream);
	b->include_usage = json_is_true(json_object_get(json_object_get(o, "stream_options"), "include_usage"));
	/* deadlines: the total one derives from max_tokens unless --timeout sets it */
	r->timeout_s = S.timeout_s > 0 ? S.timeout_s : 30.0 + 0.5 * r->max_tokens;
	r->queue_timeout_s = S.queue_timeout_s;
	r->token_timeout_s = S.token_timeout_s;
	return 0;
}

/* A function name as OpenAI accepts it: 1 to 64 of [A-Za-z0-9_-] (and '.') */
static int good_tool_name(const char *n)
{
	size_t l = n ? strlen(n) : 0;
	return l >= 1 && l <= 64 && strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == l;
}

/* tools, tool_choice, parallel_tool_calls (chat format; build_responses
 * converts the Responses shapes first) */
static int tool_fields(json_t *o, struct built *b, const struct slot *s)
{
	json_t *tools = json_object_get(o, "tools");
	b->tco.parallel_tool_calls = 1;
	size_t nt = 0;
	if (tools && !json_is_null(tools)) {
		if (!json_is_array(tools))
			FAIL("tools", "'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\", ...}}");
		nt = json_array_size(tools);
		if (nt > 256)
			FAIL("tools", "at most 256 tools");
		for (size_t i = 0; i < nt; i++) {
			json_t *t = json_array_get(tools, i), *f = json_object_get(t, "function");
			const char *ty = json_string_value(json_object_get(t, "type"));
			if (!json_is_object(t) || !ty || strcmp(ty, "function"))
				FAIL("tools", "tools[%zu].type must be \"function\"", i);
			if (!json_is_object(f))
				FAIL("tools", "tools[%zu].function must be an object with a 'name'", i);
			const char *name = json_string_value(json_object_get(f, "name"));
			if (!good_tool_name(name))
				FAIL("tools", "tools[%zu].function.name must be 1 to 64 letters, digits, '_', '-' or '.'", i);
			for (size_t j = 0; j < i; j++)
				if (!strcmp(name, json_string_value(json_object_get(json_object_get(json_array_get(tools, j), "function"),
											    "name"))))
					FAIL("tools", "tools[%zu]: the function name '%s' is used twice", i, name);
			json_t *pa = json_object_get(f, "parameters"), *st = json_object_get(f, "strict");
			if (pa && !json_is_null(pa) && !json_is_object(pa))
				FAIL("tools", "tools[%zu].function.parameters must be a JSON Schema object", i);
			if (st && !json_is_null(st) && !json_is_boolean(st))
				FAIL("tools", "tools[%zu].function.strict must be a boolean", i);
		}
		b->tools = nt ? tools : NULL;
	}
	json_t *tc = json_object_get(o, "tool_choice");
	b->tco.tool_choice = TC_CHOICE_AUTO;
	if (json_is_string(tc)) {
		const char *v = json_string_value(tc);
		if (!strcmp(v, "none"))
			b->tco.tool_choice = TC_CHOICE_NONE;
		else if (!strcmp(v, "required"))
			b->tco.tool_choice = TC_CHOICE_REQUIRED;
		else if (strcmp(v, "auto"))
			FAIL("tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
					    "{\"type\": \"function\", \"function\": {\"name\": ...}}");
	} else if (json_is_object(tc)) {
		const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
		if (!name) /* the Responses shape: {"type": "function", "name": ...} */
			name = json_string_value(json_object_get(tc, "name"));
		int found = 0;
		for (size_t i = 0; name && i < nt; i++)
			found |= !strcmp(name, json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"),
										"name")));
		if (!found)
			FAIL("tool_choice", "tool_choice names the function '%s', which is not among the tools",
			     name ? name : "(none)");
		b->tco.tool_choice = TC_CHOICE_NAMED;
		snprintf(b->forced_name, sizeof b->forced_name, "%s", name);
	} else if (tc && !json_is_null(tc)) {
		FAIL("tool_choice", "'tool_choice' must be a string or an object");
	}
	if ((b->tco.tool_choice == TC_CHOICE_REQUIRED || b->tco.tool_choice == TC_CHOICE_NAMED) && !nt)
		FAIL("tool_choice", "tool_choice \"%s\" needs 'tools'", json_is_string(tc) ? json_string_value(tc) : "function");
	json_t *ptc = json_object_get(o, "parallel_tool_calls");
	if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc))
		FAIL("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
	if (json_is_false(ptc))
		b->tco.parallel_tool_calls = 0;
	b->tco.tools = b->tools;
	b->slot_syn = s->syn;
	int calls = b->tools && b->tco.tool_choice != TC_CHOICE_NONE;
	b->forced = !calls ? FORCED_NONE : b->tco.tool_choice == TC_CHOICE_NAMED ? FORCED_NAMED
		    : b->tco.tool_choice == TC_CHOICE_REQUIRED ? FORCED_REQUIRED : FORCED_NONE;
	/* the model's own syntax: its tool calls (when tools are offered) and
	 * its reasoning markers */
	b->parse = !b->forced && ((calls && s->syn.format != TC_FMT_NONE) || s->syn.reasoning != TC_RSN_NONE);
	if (b->forced && b->r.grammar_kind)
		FAIL("tool_choice", "tool_choice \"required\" or a named function cannot be combined with 'response_format' "
				    "or 'grammar'");
	int strict = 0;
	for (size_t i = 0; i < nt; i++)
		strict |= json_is_true(json_object_get(json_object_get(json_array_get(tools, i), "function"), "strict"));
	if (calls && !b->forced && strict && !b->r.grammar_kind) {
		/* strict tools under "auto": the model writes what it likes, but
		 * once it opens a call (its syntax's marker) the call is
		 * constrained to the tools' schemas (a lazy grammar): JSON right
		 * after the marker by a schema (LAZY), other syntaxes by
		 * tc_strict_grammar's GBNF */
		static const struct { enum tc_format f; const char *trigger; int array; } LAZY[] = {
			{TC_FMT_HERMES, "<tool_call>", 0},    {TC_FMT_GIGACHAT, "<|function_call|>", 0},
			{TC_FMT_MISTRAL, "[TOOL_CALLS]", 1},  {TC_FMT_GRANITE, "<|tool_call|>", 1},
			{TC_FMT_NEMOTRON_V2, "<TOOLCALL>", 1}, {TC_FMT_JSON_TAGS, "<tool_calls>", 1},
		};
		int li = -1;
		const char *trigger;
		char *gbnf = NULL;
		for (size_t i = 0; i < sizeof LAZY / sizeof LAZY[0]; i++)
			if (LAZY[i].f == s->syn.format)
				li = (int)i;
		if (li < 0 && tc_strict_grammar(s->syn.format, tools, &trigger, &gbnf) == 0) {
			/* tagged parameters (Qwen3-Coder XML, GLM, ...) or JSON after a
			 * header (Mistral v11, ...): a GBNF of the whole call in the
			 * model's syntax, its JSON parts typed by %json */
			b->grammar_text = gbnf;
			b->r.grammar_kind = "gbnf";
			b->r.grammar = gbnf;
			b->r.grammar_trigger = trigger;
			char gerr[INFERD_ERR_LEN];
			if (inferd_grammar_check(b->r.grammar_kind, b->r.grammar, gerr))
				FAIL("tools", "a strict tool's parameters cannot constrain its calls: %.400s", gerr);
		} else if (li >= 0) {
			json_t *any = json_array();
			for (size_t i = 0; i < nt; i++) {
				json_t *f = json_object_get(json_array_get(tools, i), "function"), *pa = json_object_get(f, "parameters");
				int st = json_is_true(json_object_get(f, "strict")) && json_is_object(pa);
				json_array_append_new(any, json_pack("{s:s,s:{s:{s:O},s:O},s:[s,s],s:b}", "type", "object", "properties",
								     "name", "const", json_object_get(f, "name"), "arguments",
								     st ? pa : json_pack("{s:s}", "type", "object"), "required", "name",
								     "arguments", "additionalProperties", 0));
			}
			json_t *one = json_pack("{s:o}", "anyOf", any);
			json_t *schema = LAZY[li].array ? json_pack("{s:s,s:i,s:o}", "type", "array", "minItems", 1, "items", one)
							: one;
			b->grammar_text = json_dumps(schema, JSON_COMPACT);
			json_decref(schema);
			b->r.grammar_kind = "json_schema";
			b->r.grammar = b->grammar_text;
			b->r.grammar_trigger = LAZY[li].trigger;
			char gerr[INFERD_ERR_LEN];
			if (inferd_grammar_check(b->r.grammar_kind, b->r.grammar, gerr))
				FAIL("tools", "a strict tool's parameters cannot constrain its calls: %.400s", gerr);
		}
	}
	if (b->forced) {
		/* the output is constrained to JSON: the named function's
		 * arguments, or a list of {"name", "arguments"} (as vLLM does) */
		json_t *schema;
		if (b->forced == FORCED_NAMED) {
			json_t *pa = NULL;
			for (size_t i = 0; i < nt; i++) {
				json_t *f = json_object_get(json_array_get(tools, i), "function");
				if (!strcmp(json_string_value(json_object_get(f, "name")), b->forced_name))
					pa = json_object_get(f, "parameters");
			}
			schema = json_is_object(pa) ? json_incref(pa) : json_pack("{s:s}", "type", "object");
		} else {
			json_t *any = json_array();
			for (size_t i = 0; i < nt; i++) {
				json_t *f = json_object_get(json_array_get(tools, i), "function"), *pa = json_object_get(f, "parameters");
				json_array_append_new(any, json_pack("{s:s,s:{s:{s:O},s:O},s:[s,s],s:b}", "type", "object", "properties",
								     "name", "const", json_object_get(f, "name"), "arguments",
								     json_is_object(pa) ? pa : json_pack("{s:s}", "type", "object"),
								     "required", "name", "arguments", "additionalProperties", 0));
			}
			schema = json_pack("{s:s,s:i,s:{s:o}}", "type", "array", "minItems", 1, "items", "anyOf", any);
			if (!b->tco.parallel_tool_calls)
				json_object_set_new(schema, "maxItems", json_integer(1));
		}
		b->grammar_text = json_dumps(schema, JSON_COMPACT);
		json_decref(schema);
		b->r.grammar_kind = "json_schema";
		b->r.grammar = b->grammar_text;
		char gerr[INFERD_ERR_LEN];
		if (inferd_grammar_check(b->r.grammar_kind, b->r.grammar, gerr))
			FAIL("tools", "the tool's parameters cannot constrain the output: %.400s", gerr);
	}
	if (!calls)
		b->tco.tool_choice = TC_CHOICE_NONE;
	b->r.keep_special = b->parse;
	return 0;
}

/* Messages as the templates expect them: content parts joined into text,
 * assistant tool_calls with their arguments as an object (OpenAI clients
 * send a JSON string; templates index it, as vLLM and transformers give). */
static int normalise_messages(json_t *vm, struct built *b)
{
	for (size_t i = 0; i < json_array_size(vm); i++) {
		json_t *m = json_array_get(vm, i), *c = json_object_get(m, "content");
		json_t *calls = json_object_get(m, "tool_calls");
		for (size_t k = 0; json_is_array(calls) && k < json_array_size(calls); k++) {
			json_t *f = json_object_get(json_array_get(calls, k), "function");
			json_t *a = json_object_get(f, "arguments");
			if (!json_is_object(f) || !json_is_string(json_object_get(f, "name")))
				FAIL("messages", "messages[%zu].tool_calls[%zu].function must have a 'name'", i, k);
			if (json_is_string(a)) {
				json_t *obj = json_loads(json_string_value(a), JSON_DECODE_ANY, NULL);
				if (json_is_object(obj))
					json_object_set_new(f, "arguments", obj);
				else
					json_decref(obj);
			}
		}
		if (calls && !json_is_array(calls) && !json_is_null(calls))
			FAIL("messages", "messages[%zu].tool_calls must be a list", i);
		if (json_is_null(c) || !c) { /* OpenAI clients send null beside tool_calls; templates test strings */
			json_object_set_new(m, "content", json_string(""));
			continue;
		}
		if (!json_is_array(c))
			continue;
		char *text = NULL;
		size_t tl = 0;
		for (size_t k = 0; k < json_array_size(c); k++) {
			json_t *part = json_array_get(c, k);
			const char *t = json_string_value(json_object_get(part, "text"));
			if (!t) {
				free(text);
				FAIL("messages", "messages[%zu].content[%zu] must be a text part", i, k);
			}
			size_t l = strlen(t);
			char *nt = realloc(text, tl + l + 1);
			if (!nt) {
				free(text);
				FAIL("messages", "out of memory");
			}
			text = nt;
			memcpy(text + tl, t, l + 1);
			tl += l;
		}
		json_object_set_new(m, "content", json_string(text ? text : ""));
		free(text);
	}
	return 0;
}

static int build_chat(json_t *o, struct built *b, const struct slot *s)
{
	if (common_fields(o, b, s))
		return -1;
	json_t *msgs = json_object_get(o, "messages");
	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		FAIL("messages", "'messages' must be a non-empty list");
	for (size_t i = 0; i < json_array_size(msgs); i++) {
		json_t *m = json_array_get(msgs, i);
		if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
			FAIL("messages", "messages[%zu] must be an object with a 'role' string", i);
	}
	if (!s->tmpl || !s->tok)
		FAIL("model", "model '%s' has no chat template or tokenizer", s->name);
	if (tool_fields(o, b, s))
		return -1;
	json_t *vm = json_deep_copy(msgs);
	if (normalise_messages(vm, b)) {
		json_decref(vm);
		return -1;
	}
	json_t *vars = json_pack("{s:o,s:O,s:b,s:s,s:s}", "messages", vm, "tools", b->tools ? b->tools : json_null(),
				 "add_generation_prompt", 1, "bos_token", s->bos ? s->bos : "", "eos_token",
				 s->eos ? s->eos : "");
	if (json_object_get(o, "tool_choice"))
		json_object_set(vars, "tool_choice", json_object_get(o, "tool_choice"));
	if (b->tools) { /* "functions": the tools as a JSON text (firefunction v2 reads it) */
		json_t *fl = json_array();
		for (size_t i = 0; i < json_array_size(b->tools); i++)
			json_array_append(fl, json_object_get(json_array_get(b->tools, i), "function"));
		char *ft = json_dumps(fl, JSON_INDENT(4));
		json_object_set_new(vars, "functions", json_string(ft ? ft : "[]"));
		free(ft);
		json_decref(fl);
	}
	{
		char dt[64];
		time_t now = time(NULL);
		struct tm tmv;
		gmtime_r(&now, &tmv);
		strftime(dt, sizeof dt, "%b %d %Y %H:%M:%S GMT", &tmv);
		json_object_set_new(vars, "datetime", json_string(dt));
	}
	/* thinking switches, for the templates that read them */
	json_t *re = json_object_get(o, "reasoning_effort"), *et = json_object_get(o, "enable_thinking");
	if (re && !json_is_null(re) && !json_is_string(re))
		FAIL("reasoning_effort", "'reasoning_effort' must be a string (\"low\", \"medium\", \"high\")");
	if (et && !json_is_null(et) && !json_is_boolean(et))
		FAIL("enable_thinking", "'enable_thinking' must be a boolean");
	if (json_is_string(re) && (s->syn.vars & TC_VAR_REASONING_EFFORT))
		json_object_set(vars, "reasoning_effort", re);
	if (json_is_boolean(et) && (s->syn.vars & TC_VAR_ENABLE_THINKING))
		json_object_set(vars, "enable_thinking", et);
	if (json_is_boolean(et) && (s->syn.vars & TC_VAR_THINKING))
		json_object_set(vars, "thinking", et);
	if (json_object_get(o, "chat_template_kwargs") && json_is_object(json_object_get(o, "chat_template_kwargs")))
		json_object_update(vars, json_object_get(o, "chat_template_kwargs"));
	char *text = NULL, err[INFERD_ERR_LEN];
	size_t tl;
	uint8_t *mask = NULL;
	int rc = tmpl_render(s->tmpl, vars, NULL, &text, &tl, &mask, err);
	json_decref(vars);
	if (rc)
		FAIL("messages", "chat template: %.400s", err);
	int n;
	/* the template already wrote BOS if the model wants it */
	rc = tok_encode_masked(s->tok, text, tl, mask, 0, &b->ids, &n, err);
	b->prompt_text = text; /* the parser reads its tail (an open <think>...) */
	b->prompt_len = tl;
	b->tco.prompt = text;
	b->tco.prompt_len = tl;
	free(mask);
	if (rc)
		FAIL("messages", "tokenizer: %.400s", err);
	b->r.ids = b->ids;
	b->r.n_ids = n;
	b->prompt_tokens = n;
	return 0;
}

static int build_completion(json_t *o, struct built *b, const struct slot *s)
{
	if (common_fields(o, b, s))
		return -1;
	json_t *p = json_object_get(o, "prompt");
	if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
		p = json_array_get(p, 0);
	if (json_is_string(p)) {
		if (!s->tok)
			FAIL("prompt", "model '%s' has no tokenizer: give the prompt as token ids", s->name);
		char err[INFERD_ERR_LEN];
		int n;
		if (tok_encode(s->tok, json_string_value(p), json_string_length(p), TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &b->ids,
			       &n, err))
			FAIL("prompt", "tokenizer: %.400s", err);
		b->r.n_ids = n;
	} else if (json_is_array(p) && json_array_size(p) > 0 && json_is_integer(json_array_get(p, 0))) {
		b->ids = malloc(json_array_size(p) * sizeof *b->ids);
		for (size_t i = 0; i < json_array_size(p); i++) {
			json_t *x = json_array_get(p, i);
			if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
				FAIL("prompt", "prompt[%zu] is not a token id", i);
			b->ids[i] = (int32_t)json_integer_value(x);
		}
		b->r.n_ids = (int)json_array_size(p);
	} else if (json_is_array(p) && json_array_size(p) > 1) {
		FAIL("prompt", "a list of several prompts is not supported (n=1); send one request per prompt");
	} else {
		FAIL("prompt", "'prompt' must be a string or a list of token ids");
	}
	b->r.ids = b->ids;
	b->prompt_tokens = b->r.n_ids;
	return 0;
}

/* The Responses API's input and instructions as chat messages. */
/* The Responses API's input and tools as chat messages and chat tools:
 * message items, function_call items (an assistant turn's tool_calls) and
 * function_call_output items (role "tool" messages). */
static int build_responses(json_t *o, struct built *b, const struct slot *s)
{
	json_t *msgs = json_array(), *in = json_object_get(o, "input"), *ins = json_object_get(o, "instructions");
	if (ins && !json_is_null(ins)) {
		if (!json_is_string(ins)) {
			json_decref(msgs);
			FAIL("instructions", "'instructions' must be a string");
		}
		json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins));
	}
	if (json_is_string(in)) {
		json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", in));
	} else if (json_is_array(in)) {
		for (size_t i = 0; i < json_array_size(in); i++) {
			json_t *it = json_array_get(in, i), *role = json_object_get(it, "role"), *c = json_object_get(it, "content");
			const char *type = json_string_value(json_object_get(it, "type"));
			if (type && !strcmp(type, "function_call")) {
				json_t *n = json_object_get(it, "name"), *a = json_object_get(it, "arguments"),
				       *cid = json_object_get(it, "call_id");
				if (!json_is_string(n) || !json_is_string(a) || !json_is_string(cid)) {
					json_decref(msgs);
					FAIL("input", "input[%zu]: a function_call item needs 'call_id', 'name' and 'arguments' strings", i);
				}
				json_t *call = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", cid, "type", "function", "function", "name", n,
							 "arguments", a);
				json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
				const char *lr = json_string_value(json_object_get(last, "role"));
				if (last && lr && !strcmp(lr, "assistant") && json_is_array(json_object_get(last, "tool_calls")))
					json_array_append_new(json_object_get(last, "tool_calls"), call); /* parallel calls: one turn */
				else
					json_array_append_new(msgs, json_pack("{s:s,s:n,s:[o]}", "role", "assistant", "content",
									      "tool_calls", call));
				continue;
			}
			if (type && !strcmp(type, "function_call_output")) {
				json_t *cid = json_object_get(it, "call_id"), *out = json_object_get(it, "output");
				if (!json_is_string(cid) || !json_is_string(out)) {
					json_decref(msgs);
					FAIL("input", "input[%zu]: a function_call_output item needs 'call_id' and 'output' strings", i);
				}
				json_array_append_new(msgs, json_pack("{s:s,s:O,s:O}", "role", "tool", "tool_call_id", cid, "content", out));
				continue;
			}
			if (type && !strcmp(type, "reasoning"))
				continue; /* earlier reasoning is not sent back to the model */
			if (!json_is_string(role) || !(json_is_string(c) || json_is_array(c))) {
				json_decref(msgs);
				FAIL("input", "input[%zu] must be a message item with 'role' and 'content', a function_call or a "
					      "function_call_output item", i);
			}
			json_t *m = json_pack("{s:O,s:O}", "role", role, "content", c);
			json_array_append_new(msgs, m);
		}
	} else {
		json_decref(msgs);
		FAIL("input", "'input' must be a string or a list of items");
	}
	json_t *o2 = json_deep_copy(o);
	json_object_set_new(o2, "messages", msgs);
	json_t *mot = json_object_get(o, "max_output_tokens");
	if (mot)
		json_object_set(o2, "max_tokens", mot);
	json_object_del(o2, "stream_options");
	/* tools: {"type": "function", "name", "description", "parameters",
	 * "strict"} → the chat shape */
	json_t *tools = json_object_get(o, "tools");
	if (json_is_array(tools)) {
		json_t *ct = json_array();
		for (size_t i = 0; i < json_array_size(tools); i++) {
			json_t *t = json_array_get(tools, i);
			if (json_is_object(t) && !json_object_get(t, "function") && json_is_string(json_object_get(t, "name"))) {
				json_t *f = json_deep_copy(t);
				json_object_del(f, "type");
				json_array_append_new(ct, json_pack("{s:s,s:o}", "type", "function", "function", f));
			} else {
				json_array_append(ct, t);
			}
		}
		json_object_set_new(o2, "tools", ct);
	}
	/* text.format: {"type": "json_schema", "name", "schema", "strict"} or
	 * {"type": "json_object"} → response_format */
	json_t *fmt = json_object_get(json_object_get(o, "text"), "format");
	if (json_is_object(fmt)) {
		const char *ft = json_string_value(json_object_get(fmt, "type"));
		if (ft && !strcmp(ft, "json_schema"))
			json_object_set_new(o2, "response_format",
					    json_pack("{s:s,s:{s:O}}", "type", "json_schema", "json_schema", "schema",
						      json_object_get(fmt, "schema") ? json_object_get(fmt, "schema") : json_null()));
		else if (ft)
			json_object_set_new(o2, "response_format", json_pack("{s:s}", "type", ft));
	}
	/* reasoning: {"effort": ...} */
	json_t *rs = json_object_get(o, "reasoning");
	if (json_is_object(rs) && json_is_string(json_object_get(rs, "effort")))
		json_object_set(o2, "reasoning_effort", json_object_get(rs, "effort"));
	int rc = build_chat(o2, b, s);
	/* the request points into o2 (grammar, stop, tools) until it is
	 * submitted: o2 lives as long as the body */
	json_object_set_new(o, "\x01chat", o2);
	return rc;
}

static json_t *usage_json(int prompt, int completion)
{
	return json_pack("{s:i,s:i,s:i}", "prompt_tokens", prompt, "completion_tokens", completion, "total_tokens",
			 prompt + completion);
}

static json_t *logprob_entry(const struct slot *s, const struct inferd_event *ev)
{
	const char *t = s->tok ? tok_piece(s->tok, ev->token) : NULL;
	json_t *top = json_array();
	for (int k = 0; k < ev->n_top; k++) {
		const char *tt = s->tok ? tok_piece(s->tok, ev->top_ids[k]) : NULL;
		json_array_append_new(top, json_pack("{s:s,s:f,s:i}", "token", tt ? tt : "", "logprob", ev->top_logprobs[k],
						     "id", ev->top_ids[k]));
	}
	return json_pack("{s:s,s:f,s:i,s:o}", "token", t ? t : "", "logprob", ev->logprob, "id", ev->token,
			 "top_logprobs", top);
}

static void gen_id(char *id, size_t n, const char *prefix)
{
	static atomic_ullong counter;
	snprintf(id, n, "%s-%llx%04llx", prefix, (unsigned long long)time(NULL),
		 (unsigned long long)atomic_fetch_add(&counter, 1) & 0xffff);
}

static json_t *response_object(struct conn *k, const struct slot *s, json_t *output, int finish, int in_tokens,
			       int out_tokens);
static void resp_done(struct conn *k, const struct slot *s, const struct inferd_event *ev);
static void final_message(const struct built *b, const char *text, size_t len, uint64_t seed, struct tc_message *m);
static json_t *message_items(struct conn *k, const struct tc_message *m);

/* Non-streaming: wait for the whole result while watching the socket. */
/* An error of the engine or the device rather than of the request. */
static int engine_failure(int status)
{
	return status == INFERD_EDEVICE || status == INFERD_ENOMEM || status == INFERD_EIO;
}

static enum MHD_Result answer_blocking(struct MHD_Connection *c, struct conn *k, const struct slot *s, struct built *b,
				       int chat)
{
	char *text = NULL;
	size_t tl = 0;
	json_t *lps = json_array();
	struct inferd_event ev;
	int finish = 0, completion = 0, status = 0;
	char message[256] = "";
	for (;;) {
		int w = next_event(k->q, k->fd, &ev, 1 << 30);
		if (w == 1) { /* the client went away: cancel now */
			inferd_req_cancel(k->q);
			release_slot(k);
			atomic_fetch_add(&S.n_cancelled, 1);
			free(text);
			json_decref(lps);
			return MHD_NO;
		}
		if (w == 3) { /* drain timeout: end with a clear, retryable error */
			inferd_req_cancel(k->q);
			release_slot(k);
			free(text);
			json_decref(lps);
			snprintf(k->error, sizeof k->error, "drain timeout");
			return send_error(c, 503, "unavailable", NULL, DRAIN_MSG, S.drain_timeout_s);
		}
		if (w)
			continue;
		if (ev.text_len) {
			text = realloc(text, tl + ev.text_len + 1);
			memcpy(text + tl, ev.text, ev.text_len);
			tl += ev.text_len;
			text[tl] = 0;
		}
		if (ev.type == INFERD_EV_TOKEN) {
			token_seen(k);
			if (b->r.logprobs)
				json_array_append_new(lps, logprob_entry(s, &ev));
		}
		if (ev.type == INFERD_EV_DONE) {
			finish = ev.finish;
			status = ev.status;
			completion = ev.completion_tokens;
			snprintf(message, sizeof message, "%s", ev.message);
			break;
		}
	}
	release_slot(k);
	atomic_fetch_add(&S.n_tokens_out, (unsigned long long)completion);
	k->completion_tokens = completion;
	k->finish = finish_str(finish);
	if (finish == INFERD_FINISH_ERROR || finish == INFERD_FINISH_TIMEOUT)
		snprintf(k->error, sizeof k->error, "%s", message);
	struct tc_message msg;
	memset(&msg, 0, sizeof msg);
	int shaped = chat && finish != INFERD_FINISH_ERROR && finish != INFERD_FINISH_TIMEOUT;
	if (shaped) /* reasoning and tool calls out of the text */
		final_message(b, text, tl, k->call_seed, &msg);
	if (k->responses && shaped) {
		enum MHD_Result rr = send_json(
			c, 200, response_object(k, s, message_items(k, &msg), finish, b->prompt_tokens, completion), NULL);
		tc_message_free(&msg);
		free(text);
		json_decref(lps);
		return rr;
	}
	if (finish == INFERD_FINISH_ERROR) {
		free(text);
		json_decref(lps);
		tc_message_free(&msg);
		if (engine_failure(status)) /* not the request's fault: the client may retry */
			return send_error(c, status == INFERD_EIO ? 500 : 503, "server_error", NULL, "%s", message);
		return send_error(c, 400, "invalid_request_error", NULL, "%s", message);
	}
	if (finish == INFERD_FINISH_TIMEOUT) {
		free(text);
		json_decref(lps);
		tc_message_free(&msg);
		atomic_fetch_add(&S.n_timeouts, 1);
		return send_error(c, 504, "timeout", NULL, "%s", message);
	}
	const char *id = k->id;
	json_t *choice;
	json_t *jt = json_stringn(text ? text : "", tl);
	if (!jt) /* never invalid UTF-8 from the decoder; be safe */
		jt = json_string("");
	if (chat) {
		json_decref(jt);
		choice = json_pack("{s:i,s:o,s:s,s:o}", "index", 0, "message", tc_message_json(&msg), "finish_reason",
				   msg.n_calls && finish == INFERD_FINISH_STOP ? "tool_calls" : finish_str(finish), "logprobs",
				   b->r.logprobs ? json_pack("{s:O}", "content", lps) : json_null());
		tc_message_free(&msg);
	} else
		choice = json_pack("{s:i,s:o,s:s,s:o}", "index", 0, "text", jt, "finish_reason", finish_str(finish),
				   "logprobs", b->r.logprobs ? json_pack("{s:O}", "content", lps) : json_null());
	json_decref(lps);
	free(text);
	json_t *resp = json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", id, "object", chat ? "chat.completion" : "text_completion",
				 "created", (json_int_t)time(NULL), "model", s->name, "choices", choice, "usage",
				 usage_json(b->prompt_tokens, completion));
	return send_json(c, 200, resp, NULL);
}

/* ---------------- streaming (SSE) ---------------- */

static void out_put(struct conn *k, const char *s, size_t n)
{
	if (k->out_off == k->out_len)
		k->out_off = k->out_len = 0;
	char *nb = realloc(k->out, k->out_len + n);
	if (!nb)
		return;
	k->out = nb;
	memcpy(k->out + k->out_len, s, n);
	k->out_len += n;
}

static void sse_json(struct conn *k, json_t *o)
{
	char *t = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	out_put(k, "data: ", 6);
	out_put(k, t, strlen(t));
	out_put(k, "\n\n", 2);
	free(t);
}

/* ---- tool calls, reasoning and the output's shape ---- */

static json_t *chunk(struct conn *k, json_t *delta_or_text, const char *finish, json_t *logprobs);

static void call_id(char *out, size_t n, uint64_t seed, int index)
{
	static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + (uint64_t)index * 0xbf58476d1ce4e5b9ull + 1;
	size_t k = (size_t)snprintf(out, n, "call_");
	for (; k + 1 < n && k < 29; k++) {
		x ^= x >> 31;
		x *= 0x94d049bb133111ebull;
		x ^= x >> 29;
		out[k] = al[x % 62];
	}
	out[k] = 0;
}

static void msg_add_call(struct tc_message *m, const char *id, const char *name, const char *args)
{
	struct tc_call *nc = realloc(m->calls, (size_t)(m->n_calls + 1) * sizeof *nc);
	if (!nc)
		return;
	m->calls = nc;
	m->calls[m->n_calls++] = (struct tc_call){strdup(id), strdup(name), strdup(args)};
}

/* tool_choice named / required: the output was constrained to JSON (the
 * named function's arguments, or [{"name", "arguments"}, ...]); it becomes
 * the calls. Output that is not that (cut off by max_tokens) stays content. */
static void forced_message(int forced, const char *name, const char *text, size_t len, uint64_t seed,
			   int parallel, struct tc_message *m)
{
	memset(m, 0, sizeof *m);
	m->reasoning = strdup("");
	json_t *v = json_loadb(text ? text : "", len, JSON_DECODE_ANY, NULL);
	char id[40];
	if (forced == FORCED_NAMED && json_is_object(v)) {
		char *a = json_dumps(v, JSON_COMPACT);
		call_id(id, sizeof id, seed, 0);
		msg_add_call(m, id, name, a ? a : "{}");
		free(a);
	} else if (forced == FORCED_REQUIRED && json_is_array(v) && json_array_size(v) > 0) {
		for (size_t i = 0; i < json_array_size(v) && (parallel || i == 0); i++) {
			json_t *c = json_array_get(v, i);
			const char *n = json_string_value(json_object_get(c, "name"));
			char *a = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
			call_id(id, sizeof id, seed, (int)i);
			if (n && a)
				msg_add_call(m, id, n, a);
			free(a);
		}
	}
	json_decref(v);
	if (m->n_calls) {
		m->content = strdup("");
	} else {
		m->content = malloc(len + 1);
		if (m->content) {
			memcpy(m->content, text ? text : "", len);
			m->content[len] = 0;
			m->content_len = len;
		}
	}
}

/* The whole output as a message (non-streaming). */
static void final_message(const struct built *b, const char *text, size_t len, uint64_t seed, struct tc_message *m)
{
	char err[INFERD_ERR_LEN];
	if (b->forced) {
		forced_message(b->forced, b->forced_name, text, len, seed, b->tco.parallel_tool_calls, m);
		return;
	}
	struct tc_options o = b->tco;
	o.id_seed = seed;
	const struct tc_syntax none = {TC_FMT_NONE, TC_RSN_NONE, 0};
	if (tc_parse(b->parse ? &b->slot_syn : &none, &o, text ? text : "", len, m, err) != 0) {
		memset(m, 0, sizeof *m);
		m->content = strndup(text ? text : "", len);
		m->content_len = len;
		m->reasoning = strdup("");
	}
}

/* ---- streaming: one emitter for chat chunks and Responses events ---- */

static void resp_event(struct conn *k, const char *type, json_t *o);

static void item_id(struct conn *k, const char *prefix, char *out, size_t n)
{
	snprintf(out, n, "%s_%s_%zu", prefix, k->id + 5, json_array_size(k->r_output));
}

/* close the open Responses output item (its .done events) */
static void resp_close(struct conn *k)
{
	int idx = (int)json_array_size(k->r_output);
	if (k->r_open == 1) {
		json_t *t = json_stringn(k->r_reason ? k->r_reason : "", k->r_reason_len);
		resp_event(k, "response.reasoning_text.done",
			   json_pack("{s:s,s:i,s:i,s:O}", "item_id", k->r_item, "output_index", idx, "content_index", 0, "text", t));
		json_t *item = json_pack("{s:s,s:s,s:[],s:[{s:s,s:O}],s:s}", "type", "reasoning", "id", k->r_item, "summary",
					 "content", "type", "reasoning_text", "text", t, "status", "completed");
		resp_event(k, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", idx, "item", item));
		json_array_append_new(k->r_output, item);
		json_decref(t);
		k->r_reason_len = 0;
	} else if (k->r_open == 2) {
		json_t *t = json_stringn(k->resp_text ? k->resp_text : "", k->resp_len);
		if (!t)
			t = json_string("");
		resp_event(k, "response.output_text.done",
			   json_pack("{s:s,s:i,s:i,s:O}", "item_id", k->r_item, "output_index", idx, "content_index", 0, "text", t));
		resp_event(k, "response.content_part.done",
			   json_pack("{s:s,s:i,s:i,s:{s:s,s:O,s:[]}}", "item_id", k->r_item, "output_index", idx, "content_index",
				     0, "part", "type", "output_text", "text", t, "annotations"));
		json_t *item = json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:O,s:[]}]}", "type", "message", "id", k->r_item, "status",
					 "completed", "role", "assistant", "content", "type", "output_text", "text", t,
					 "annotations");
		resp_event(k, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", idx, "item", item));
		json_array_append_new(k->r_output, item);
		json_decref(t);
		k->resp_len = 0;
	} else if (k->r_open == 3) { /* a call's arguments stream in pieces: done once, here */
		json_t *item = json_array_get(k->r_output, (size_t)idx - 1), *a = json_stringn(k->resp_text ? k->resp_text : "",
											k->resp_len);
		json_object_set_new(item, "arguments", a ? a : json_string("{}"));
		resp_event(k, "response.function_call_arguments.done",
			   json_pack("{s:s,s:i,s:O}", "item_id", json_string_value(json_object_get(item, "id")), "output_index",
				     idx - 1, "arguments", json_object_get(item, "arguments")));
		resp_event(k, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", idx - 1, "item", item));
		k->resp_len = 0;
	}
	k->r_open = 0;
}

static void resp_open(struct conn *k, int kind)
{
	if (k->r_open == kind)
		return;
	resp_close(k);
	int idx = (int)json_array_size(k->r_output);
	item_id(k, kind == 1 ? "rs" : "msg", k->r_item, sizeof k->r_item);
	if (kind == 1)
		resp_event(k, "response.output_item.added",
			   json_pack("{s:i,s:{s:s,s:s,s:[],s:[],s:s}}", "output_index", idx, "item", "type", "reasoning", "id",
				     k->r_item, "summary", "content", "status", "in_progress"));
	else {
		resp_event(k, "response.output_item.added",
			   json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:[]}}", "output_index", idx, "item", "type", "message", "id",
				     k->r_item, "status", "in_progress", "role", "assistant", "content"));
		resp_event(k, "response.content_part.added",
			   json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", k->r_item, "output_index", idx, "content_index",
				     0, "part", "type", "output_text", "text", "", "annotations"));
	}
	k->r_open = kind;
}

static void append(char **buf, size_t *len, const char *t, size_t n)
{
	char *nb = realloc(*buf, *len + n + 1);
	if (!nb)
		return;
	memcpy(nb + *len, t, n);
	*len += n;
	nb[*len] = 0;
	*buf = nb;
}

/* One piece of the output (a parser event, or plain text as content). */
static void emit_piece(void *ctx, const struct tc_event *e)
{
	struct conn *k = ctx;
	if (e->type == TC_EV_CALL_BEGIN)
		k->n_calls = e->index + 1;
	if (!k->responses) { /* chat.completion.chunk deltas */
		json_t *d = NULL, *t = e->type == TC_EV_CALL_BEGIN ? NULL : json_stringn(e->text, e->len);
		if (e->type != TC_EV_CALL_BEGIN && !t)
			t = json_string("");
		if (e->type == TC_EV_CONTENT)
			d = json_pack("{s:o}", "content", t);
		else if (e->type == TC_EV_REASONING)
			d = json_pack("{s:o}", "reasoning_content", t);
		else if (e->type == TC_EV_CALL_BEGIN)
			d = json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index", e->index, "id", e->id, "type",
				      "function", "function", "name", e->name, "arguments", "");
		else
			d = json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls", "index", e->index, "function", "arguments", t);
		if (d && (e->type == TC_EV_CALL_BEGIN || e->len))
			sse_json(k, chunk(k, d, NULL, NULL));
		else
			json_decref(d);
		return;
	}
	int idx = (int)json_array_size(k->r_output);
	if (e->type == TC_EV_CONTENT || e->type == TC_EV_REASONING) {
		if (!e->len)
			return;
		int kind = e->type == TC_EV_CONTENT ? 2 : 1;
		resp_open(k, kind);
		idx = (int)json_array_size(k->r_output);
		if (kind == 2)
			append(&k->resp_text, &k->resp_len, e->text, e->len);
		else
			append(&k->r_reason, &k->r_reason_len, e->text, e->len);
		json_t *d = json_stringn(e->text, e->len);
		resp_event(k, kind == 2 ? "response.output_text.delta" : "response.reasoning_text.delta",
			   json_pack("{s:s,s:i,s:i,s:o}", "item_id", k->r_item, "output_index", idx, "content_index", 0, "delta",
				     d ? d : json_string("")));
	} else if (e->type == TC_EV_CALL_BEGIN) {
		resp_close(k);
		idx = (int)json_array_size(k->r_output);
		item_id(k, "fc", k->r_item, sizeof k->r_item);
		json_t *item = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "function_call", "id", k->r_item, "call_id", e->id,
					 "name", e->name, "arguments", "", "status", "in_progress");
		resp_event(k, "response.output_item.added", json_pack("{s:i,s:O}", "output_index", idx, "item", item));
		json_object_set_new(item, "status", json_string("completed"));
		json_array_append_new(k->r_output, item); /* its arguments follow, in pieces */
		k->r_open = 3;
		k->resp_len = 0;
	} else if (e->type == TC_EV_CALL_ARGS && k->r_open == 3) {
		json_t *item = json_array_get(k->r_output, json_array_size(k->r_output) - 1);
		append(&k->resp_text, &k->resp_len, e->text, e->len);
		json_t *d = json_stringn(e->text, e->len);
		resp_event(k, "response.function_call_arguments.delta",
			   json_pack("{s:s,s:i,s:o}", "item_id", json_string_value(json_object_get(item, "id")), "output_index",
				     idx - 1, "delta", d ? d : json_string("")));
	}
}

/* Generated text of a streaming request: through the parser, held back
 * (forced tool calls: the JSON comes whole at the end), or as content. */
static void stream_text(struct conn *k, const char *text, size_t len)
{
	if (k->forced == FORCED_NAMED && !k->responses) {
		/* the whole output is the named function's arguments, held to its
		 * schema: they stream as they are generated */
		if (!k->n_calls) {
			char id[40];
			call_id(id, sizeof id, k->call_seed, 0);
			struct tc_event b = {.type = TC_EV_CALL_BEGIN, .index = 0, .id = id, .name = k->forced_name};
			emit_piece(k, &b);
		}
		struct tc_event a = {.type = TC_EV_CALL_ARGS, .index = 0, .text = text, .len = len};
		if (len)
			emit_piece(k, &a);
		return;
	}
	if (k->forced)
		append(&k->ftext, &k->flen, text, len);
	else if (k->tcp)
		tc_parser_push(k->tcp, text, len, emit_piece, k);
	else if (len) {
		struct tc_event e = {.type = TC_EV_CONTENT, .text = text, .len = len};
		emit_piece(k, &e);
	}
}

/* The end of a streaming output: what the parser held back, forced calls. */
static void stream_finish(struct conn *k)
{
	struct tc_message m;
	memset(&m, 0, sizeof m);
	if (k->forced == FORCED_NAMED && !k->responses) {
		stream_text(k, "", 0); /* an empty output still names the call */
	} else if (k->forced) {
		forced_message(k->forced, k->forced_name, k->ftext, k->flen, k->call_seed,
			       k->parallel, &m);
		for (int i = 0; i < m.n_calls; i++) {
			struct tc_event b = {.type = TC_EV_CALL_BEGIN, .index = i, .id = m.calls[i].id, .name = m.calls[i].name};
			emit_piece(k, &b);
			struct tc_event a = {.type = TC_EV_CALL_ARGS, .index = i, .text = m.calls[i].arguments,
					     .len = strlen(m.calls[i].arguments)};
			emit_piece(k, &a);
		}
		if (!m.n_calls && m.content_len) {
			struct tc_event c = {.type = TC_EV_CONTENT, .text = m.content, .len = m.content_len};
			emit_piece(k, &c);
		}
		tc_message_free(&m);
	} else if (k->tcp) {
		tc_parser_finish(k->tcp, emit_piece, k, NULL);
	}
	if (k->responses) {
		if (!json_array_size(k->r_output) && !k->r_open)
			resp_open(k, 2); /* an empty answer is still a message */
		resp_close(k);
	}
}

/* ---- the Responses API ---- */

/* Output items of a whole message (non-streaming). */
static json_t *message_items(struct conn *k, const struct tc_message *m)
{
	json_t *out = json_array();
	char id[48];
	if (m->reasoning_len) {
		json_t *t = json_stringn(m->reasoning, m->reasoning_len);
		snprintf(id, sizeof id, "rs_%s_%zu", k->id + 5, json_array_size(out));
		json_array_append_new(out, json_pack("{s:s,s:s,s:[],s:[{s:s,s:o}],s:s}", "type", "reasoning", "id", id,
						     "summary", "content", "type", "reasoning_text", "text",
						     t ? t : json_string(""), "status", "completed"));
	}
	if (m->content_len || !m->n_calls) {
		json_t *t = json_stringn(m->content ? m->content : "", m->content_len);
		snprintf(id, sizeof id, "msg_%s_%zu", k->id + 5, json_array_size(out));
		json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:o,s:[]}]}", "type", "message", "id", id,
						     "status", "completed", "role", "assistant", "content", "type",
						     "output_text", "text", t ? t : json_string(""), "annotations"));
	}
	for (int i = 0; i < m->n_calls; i++) {
		snprintf(id, sizeof id, "fc_%s_%zu", k->id + 5, json_array_size(out));
		json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "function_call", "id", id, "call_id",
						     m->calls[i].id, "name", m->calls[i].name, "arguments",
						     m->calls[i].arguments, "status", "completed"));
	}
	return out;
}

/* The response object; `output` (stolen) is NULL while in progress. */
static json_t *response_object(struct conn *k, const struct slot *s, json_t *output, int finish, int in_tokens,
			       int out_tokens)
{
	int done = finish == INFERD_FINISH_STOP || finish == INFERD_FINISH_LENGTH;
	return json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:o}", "id", k->id, "object", "response", "created_at",
			 (json_int_t)time(NULL), "model", s->name, "status",
			 !finish ? "in_progress" : finish == INFERD_FINISH_LENGTH ? "incomplete" : done ? "completed" : "failed",
			 "output", output ? output : json_array(), "incomplete_details",
			 finish == INFERD_FINISH_LENGTH ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null(),
			 "usage", json_pack("{s:i,s:i,s:i}", "input_tokens", in_tokens, "output_tokens", out_tokens,
					    "total_tokens", in_tokens + out_tokens));
}

static void resp_event(struct conn *k, const char *type, json_t *o)
{
	json_object_set_new(o, "type", json_string(type));
	json_object_set_new(o, "sequence_number", json_integer(k->seq_no++));
	char *t = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	out_put(k, "event: ", 7);
	out_put(k, type, strlen(type));
	out_put(k, "\ndata: ", 7);
	out_put(k, t, strlen(t));
	out_put(k, "\n\n", 2);
	free(t);
}

static void resp_start(struct conn *k, const struct slot *s, int in_tokens)
{
	k->r_output = json_array();
	resp_event(k, "response.created", json_pack("{s:o}", "response", response_object(k, s, NULL, 0, in_tokens, 0)));
	resp_event(k, "response.in_progress", json_pack("{s:o}", "response", response_object(k, s, NULL, 0, in_tokens, 0)));
}

static void resp_done(struct conn *k, const struct slot *s, const struct inferd_event *ev)
{
	stream_text(k, ev->text, ev->text_len);
	if (ev->finish == INFERD_FINISH_ERROR || ev->finish == INFERD_FINISH_TIMEOUT) {
		resp_event(k, "error", json_pack("{s:s,s:s}", "code", ev->finish == INFERD_FINISH_TIMEOUT ? "timeout" : "invalid_request",
						 "message", ev->message));
		k->done = 1;
		return;
	}
	stream_finish(k);
	json_t *full = response_object(k, s, json_deep_copy(k->r_output), ev->finish, ev->prompt_tokens, ev->completion_tokens);
	resp_event(k, ev->finish == INFERD_FINISH_LENGTH ? "response.incomplete" : "response.completed",
		   json_pack("{s:o}", "response", full));
	k->done = 1;
}

static json_t *chunk(struct conn *k, json_t *delta_or_text, const char *finish, json_t *logprobs)
{
	json_t *choice = k->chat ? json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "delta", delta_or_text, "finish_reason",
					     finish ? json_string(finish) : json_null(), "logprobs",
					     logprobs ? logprobs : json_null())
				 : json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "text", delta_or_text, "finish_reason",
					     finish ? json_string(finish) : json_null(), "logprobs",
					     logprobs ? logprobs : json_null());
	return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", k->id, "object", k->chat ? "chat.completion.chunk" : "text_completion",
			 "created", (json_int_t)time(NULL), "model", k->model, "choices", choice);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	struct conn *k = cls;
	while (k->out_off == k->out_len) {
		if (k->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		struct inferd_event ev;
		int w = next_event(k->q, k->fd, &ev, 10000);
		if (w == 1) {
			inferd_req_cancel(k->q);
			release_slot(k);
			atomic_fetch_add(&S.n_cancelled, 1);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (w == 2) {
			out_put(k, ": keep-alive\n\n", 14);
			break;
		}
		if (w == 3) { /* drain timeout: an error event, then the end of the stream */
			inferd_req_cancel(k->q);
			release_slot(k);
			char msg[256];
			snprintf(msg, sizeof msg, DRAIN_MSG, S.drain_timeout_s);
			snprintf(k->error, sizeof k->error, "drain timeout");
			if (k->responses)
				resp_event(k, "error", json_pack("{s:s,s:s}", "code", "server_shutting_down", "message", msg));
			else {
				sse_json(k, json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type", "unavailable",
						      "param", "code", "server_shutting_down"));
				out_put(k, "data: [DONE]\n\n", 14);
			}
			k->done = 1;
			break;
		}
		const struct slot *s = find_model(k->model);
		if (ev.type == INFERD_EV_TOKEN) {
			k->n_tokens++;
			token_seen(k);
			json_t *lp = k->logprobs && s && !k->responses ? json_pack("{s:[o]}", "content", logprob_entry(s, &ev)) : NULL;
			if (k->responses || (k->chat && (k->tcp || k->forced))) {
				stream_text(k, ev.text, ev.text_len);
				if (lp) /* the token's logprobs, apart from the parsed text */
					sse_json(k, chunk(k, json_object(), NULL, lp));
				continue;
			}
			json_t *t = json_stringn(ev.text, ev.text_len);
			if (!t)
				t = json_string("");
			if (ev.text_len || lp)
				sse_json(k, chunk(k, k->chat ? json_pack("{s:o}", "content", t) : t, NULL, lp));
			else
				json_decref(t);
			continue;
		}
		/* DONE: what is left, the finish reason, usage, [DONE] */
		release_slot(k);
		atomic_fetch_add(&S.n_tokens_out, (unsigned long long)ev.completion_tokens);
		k->completion_tokens = ev.completion_tokens;
		k->finish = finish_str(ev.finish);
		if (ev.finish == INFERD_FINISH_ERROR || ev.finish == INFERD_FINISH_TIMEOUT)
			snprintf(k->error, sizeof k->error, "%s", ev.message);
		if (k->responses) {
			resp_done(k, s, &ev);
			continue;
		}
		if (k->chat && (k->tcp || k->forced)) {
			stream_text(k, ev.text, ev.text_len);
			if (ev.finish != INFERD_FINISH_ERROR && ev.finish != INFERD_FINISH_TIMEOUT)
				stream_finish(k);
		} else if (ev.text_len) {
			json_t *t = json_stringn(ev.text, ev.text_len);
			sse_json(k, chunk(k, k->chat ? json_pack("{s:o}", "content", t ? t : json_string("")) : (t ? t : json_string("")), NULL, NULL));
		}
		if (ev.finish == INFERD_FINISH_ERROR || ev.finish == INFERD_FINISH_TIMEOUT) {
			if (ev.finish == INFERD_FINISH_TIMEOUT)
				atomic_fetch_add(&S.n_timeouts, 1);
			sse_json(k, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message", ev.message, "type",
					      ev.finish == INFERD_FINISH_TIMEOUT ? "timeout"
					      : engine_failure(ev.status)         ? "server_error"
										  : "invalid_request_error",
					      "param", "code"));
		} else {
			int calls = k->n_calls && ev.finish == INFERD_FINISH_STOP;
			sse_json(k, chunk(k, k->chat ? json_object() : json_string(""), calls ? "tool_calls" : finish_str(ev.finish),
					  NULL));
		}
		if (k->include_usage) {
			json_t *u = chunk(k, k->chat ? json_object() : json_string(""), NULL, NULL);
			json_object_set_new(u, "choices", json_array());
			json_object_set_new(u, "usage", usage_json(ev.prompt_tokens, ev.completion_tokens));
			sse_json(k, u);
		}
		out_put(k, "data: [DONE]\n\n", 14);
		k->done = 1;
	}
	size_t n = k->out_len - k->out_off < max ? k->out_len - k->out_off : max;
	memcpy(buf, k->out + k->out_off, n);
	k->out_off += n;
	return (ssize_t)n;
}

/* ---------------- routes ---------------- */

static int authorized(struct MHD_Connection *c)
{
	if (!S.n_keys)
		return 1;
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!h || strncmp(h, "Bearer ", 7))
		return 0;
	for (int i = 0; i < S.n_keys; i++)
		if (!strcmp(h + 7, S.keys[i]))
			return 1;
	return 0;
}

static enum MHD_Result health(struct MHD_Connection *c)
{
	if (atomic_load(&S.stopping))
		return send_json(c, 503, json_pack("{s:s,s:s}", "status", "unavailable", "reason", "shutting down"), "1");
	double now;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
	if (!atomic_load(&S.ready))
		return send_json(c, 503, json_pack("{s:s,s:s}", "status", "loading", "reason", "loading models"), "1");
	/* a stalled or dead executor of a loaded model: unavailable (a model
	 * loading on demand or unloaded is not a liveness problem) */
	char bad[160] = "", why[40] = "";
	models_lock();
	for (int i = 0; i < models_count() && !bad[0]; i++) {
		struct slot *s = models_at(i);
		if (atomic_load(&s->state) != SLOT_READY)
			continue;
		struct inferd_model_stats st;
		inferd_model_stats(s->m, &st);
		/* half the hang timeout: a load balancer stops sending traffic
		 * before the supervisor replaces the worker at the full timeout */
		int stalled = st.state == INFERD_STATE_RUNNING && now - st.last_step_s > S.hang_timeout_s / 2;
		if (st.state == INFERD_STATE_FAILED || st.state == INFERD_STATE_STOPPED || stalled) {
			snprintf(bad, sizeof bad, "%s", s->name);
			snprintf(why, sizeof why, "%s", stalled ? "executor stalled" : "executor not running");
		}
	}
	models_unlock();
	if (bad[0])
		return send_json(c, 503, json_pack("{s:s,s:s,s:s}", "status", "unavailable", "model", bad, "reason", why), "1");
	return send_json(c, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

static const char *state_name(int st)
{
	static const char *const names[] = {"available", "loading", "loaded", "failed", "unloading"};
	return st >= 0 && st <= SLOT_UNLOADING ? names[st] : "unknown";
}

/* under models_lock */
static json_t *model_json(struct slot *s)
{
	int st = atomic_load(&s->state);
	json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", s->name, "object", "model", "created", (json_int_t)s->created,
			      "owned_by", "inferd", "status", state_name(st));
	struct stat fst;
	json_object_set_new(o, "size_bytes", json_integer(s->bytes ? (json_int_t)s->bytes
							   : stat(s->path, &fst) == 0 ? (json_int_t)fst.st_size : 0));
	if (s->cfg->n_aliases) {
		json_t *a = json_array();
		for (int i = 0; i < s->cfg->n_aliases; i++)
			json_array_append_new(a, json_string(s->cfg->aliases[i]));
		json_object_set_new(o, "aliases", a);
	}
	if (st == SLOT_READY) {
		json_object_set_new(o, "requests_in_flight", json_integer(atomic_load(&s->in_flight)));
		json_object_set_new(o, "context_length", json_integer(s->n_ctx));
	}
	json_object_set_new(o, "keep_alive", json_real(s->keep_alive));
	if (st == SLOT_FAILED || (s->error[0] && st == SLOT_AVAILABLE))
		json_object_set_new(o, "error", json_string(s->error));
	return o;
}

/* POST /v1/models/{id}/load and /unload (behind the API key) */
static enum MHD_Result model_admin(struct MHD_Connection *c, const char *id, int load)
{
	struct slot *s = find_model(id);
	if (!s)
		return send_error(c, 404, "invalid_request_error", "model", "model '%s' does not exist", id);
	char msg[INFERD_ERR_LEN];
	int rc;
	if (load) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		rc = models_load(s, mono() + (S.queue_timeout_s > 0 ? S.queue_timeout_s : 60), ci ? ci->connect_fd : -1, msg,
				 sizeof msg);
		if (rc == 499)
			return MHD_NO;
	} else {
		rc = models_unload(s, msg, sizeof msg);
	}
	if (rc > 1)
		return send_error(c, (unsigned)rc, rc == 409 ? "conflict" : "unavailable", "model", "%s", msg);
	models_lock();
	json_t *o = model_json(s);
	models_unlock();
	if (!load)
		json_object_set_new(o, "message", json_string(msg));
	return send_json(c, rc == 1 ? 202 : 200, o, NULL);
}

static enum MHD_Result models(struct MHD_Connection *c, const char *url)
{
	if (!strncmp(url, "/v1/models/", 11)) {
		struct slot *s = find_model(url + 11);
		if (!s || !url[11])
			return send_error(c, 404, "invalid_request_error", "model", "model '%s' does not exist", url + 11);
		models_lock();
		json_t *o = model_json(s);
		models_unlock();
		return send_json(c, 200, o, NULL);
	}
	json_t *data = json_array();
	models_lock();
	for (int i = 0; i < models_count(); i++)
		json_array_append_new(data, model_json(models_at(i)));
	models_unlock();
	return send_json(c, 200, json_pack("{s:s,s:o}", "object", "list", "data", data), NULL);
}

static enum MHD_Result metrics(struct MHD_Connection *c)
{
	char buf[16384];
	int n = snprintf(buf, sizeof buf,
			 "# TYPE inferd_requests_total counter\ninferd_requests_total %llu\n"
			 "# TYPE inferd_errors_total counter\ninferd_errors_total %llu\n"
			 "# TYPE inferd_rejected_total counter\ninferd_rejected_total %llu\n"
			 "# TYPE inferd_cancelled_total counter\ninferd_cancelled_total %llu\n"
			 "# TYPE inferd_timeouts_total counter\ninferd_timeouts_total %llu\n"
			 "# TYPE inferd_generated_tokens_total counter\ninferd_generated_tokens_total %llu\n"
			 "# TYPE inferd_prompt_tokens_total counter\ninferd_prompt_tokens_total %llu\n"
			 "# TYPE inferd_slow_clients_closed_total counter\ninferd_slow_clients_closed_total %llu\n",
			 (unsigned long long)S.n_requests, (unsigned long long)S.n_errors, (unsigned long long)S.n_rejected,
			 (unsigned long long)S.n_cancelled, (unsigned long long)S.n_timeouts,
			 (unsigned long long)S.n_tokens_out, (unsigned long long)S.n_tokens_in,
			 (unsigned long long)atomic_load(&n_slow_closed));
	n += snprintf(buf + n, sizeof buf - (size_t)n, "# TYPE inferd_http_requests_total counter\n");
	for (int r = 0; r < 9; r++)
		for (int st = 0; st < 11; st++) {
			unsigned long long v = atomic_load(&by_route[r][st]);
			if (v)
				n += snprintf(buf + n, sizeof buf - (size_t)n, "inferd_http_requests_total{route=\"%s\",status=\"%s%u\"} %llu\n",
					      ROUTES[r], STATUSES[st] ? "" : "other", STATUSES[st] ? STATUSES[st] : 0u, v);
		}
	struct { const char *name; atomic_ullong *h, *sum; } hs[2] = {{"inferd_time_to_first_token_seconds", S.ttft_hist, &S.ttft_sum_us},
								       {"inferd_inter_token_latency_seconds", S.itl_hist, &S.itl_sum_us}};
	for (int h = 0; h < 2; h++) {
		unsigned long long cum = 0;
		n += snprintf(buf + n, sizeof buf - (size_t)n, "# TYPE %s histogram\n", hs[h].name);
		for (int bk = 0; bk < 11; bk++) {
			cum += atomic_load(&hs[h].h[bk]);
			if (bk < 10)
				n += snprintf(buf + n, sizeof buf - (size_t)n, "%s_bucket{le=\"%g\"} %llu\n", hs[h].name, HIST_LE[bk], cum);
			else
				n += snprintf(buf + n, sizeof buf - (size_t)n, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n",
					      hs[h].name, cum, hs[h].name, (double)atomic_load(hs[h].sum) * 1e-6, hs[h].name, cum);
		}
	}
	models_lock();
	n += snprintf(buf + n, sizeof buf - (size_t)n,
		      "# TYPE inferd_memory_budget_bytes gauge\ninferd_memory_budget_bytes %llu\n"
		      "# TYPE inferd_memory_used_bytes gauge\ninferd_memory_used_bytes %llu\n"
		      "# TYPE inferd_batch_paused gauge\ninferd_batch_paused %d\n"
		      "# TYPE inferd_batch_waiting gauge\ninferd_batch_waiting %d\n",
		      (unsigned long long)models_budget(), (unsigned long long)models_used(), atomic_load(&S.batch_paused),
		      atomic_load(&S.batch_waiting));
	for (int i = 0; i < models_count() && n < (int)sizeof buf - 1024; i++) {
		struct slot *s = models_at(i);
		int state = atomic_load(&s->state);
		n += snprintf(buf + n, sizeof buf - (size_t)n,
			      "inferd_model_loaded{model=\"%s\"} %d\ninferd_model_loads_total{model=\"%s\"} %llu\n"
			      "inferd_model_unloads_total{model=\"%s\"} %llu\ninferd_model_evictions_total{model=\"%s\"} %llu\n",
			      s->name, state == SLOT_READY, s->name, s->loads, s->name, s->unloads, s->name, s->evictions);
		if (state != SLOT_READY)
			continue;
		struct inferd_model_stats st;
		inferd_model_stats(s->m, &st);
		n += snprintf(buf + n, sizeof buf - (size_t)n,
			      "inferd_requests_in_flight{model=\"%s\"} %d\n"
			      "inferd_queue_depth{model=\"%s\"} %d\ninferd_running_sequences{model=\"%s\"} %d\n"
			      "inferd_kv_blocks_free{model=\"%s\"} %d\ninferd_kv_blocks_total{model=\"%s\"} %d\n"
			      "inferd_engine_steps_total{model=\"%s\"} %llu\ninferd_preemptions_total{model=\"%s\"} %llu\n"
			      "inferd_prefix_cache_hit_tokens_total{model=\"%s\"} %llu\n",
			      s->name, atomic_load(&s->in_flight), s->name, st.queued, s->name, st.active, s->name, st.kv_free,
			      s->name, st.kv_blocks, s->name, (unsigned long long)st.steps, s->name,
			      (unsigned long long)st.preemptions, s->name, (unsigned long long)st.prefix_hit_tokens);
	}
	models_unlock();
	struct MHD_Response *r = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4");
	enum MHD_Result ok = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result tokenize_held(struct MHD_Connection *c, json_t *o, int detok, const struct slot *s)
{
	if (!s->tok)
		return send_error(c, 400, "invalid_request_error", "model", "model '%s' has no tokenizer", s->name);
	char err[INFERD_ERR_LEN];
	if (!detok) {
		json_t *p = json_object_get(o, "prompt");
		if (!json_is_string(p))
			return send_error(c, 400, "invalid_request_error", "prompt", "'prompt' must be a string");
		int32_t *ids;
		int n;
		int add = !json_is_false(json_object_get(o, "add_special_tokens"));
		if (tok_encode(s->tok, json_string_value(p), json_string_length(p), (add ? TOK_ADD_SPECIAL : 0) | TOK_PARSE_SPECIAL,
			       &ids, &n, err))
			return send_error(c, 400, "invalid_request_error", "prompt", "%s", err);
		json_t *a = json_array();
		for (int i = 0; i < n; i++)
			json_array_append_new(a, json_integer(ids[i]));
		free(ids);
		return send_json(c, 200, json_pack("{s:o,s:i}", "tokens", a, "count", n), NULL);
	}
	json_t *t = json_object_get(o, "tokens");
	if (!json_is_array(t))
		return send_error(c, 400, "invalid_request_error", "tokens", "'tokens' must be a list of token ids");
	int32_t *ids = malloc((json_array_size(t) + 1) * sizeof *ids);
	for (size_t i = 0; i < json_array_size(t); i++) {
		if (!json_is_integer(json_array_get(t, i))) {
			free(ids);
			return send_error(c, 400, "invalid_request_error", "tokens", "tokens[%zu] is not an integer", i);
		}
		ids[i] = (int32_t)json_integer_value(json_array_get(t, i));
	}
	char *text;
	size_t tl;
	int rc = tok_decode(s->tok, ids, (int)json_array_size(t), 0, &text, &tl, err);
	free(ids);
	if (rc)
		return send_error(c, 400, "invalid_request_error", "tokens", "%s", err);
	json_t *r = json_pack("{s:s%}", "prompt", text, tl);
	free(text);
	return send_json(c, 200, r, NULL);
}

/* The body's model, held for a route that does not generate (no
 * admission limit; loaded on demand): NULL after an answer was queued
 * (*r is set) or the client went away (*r is MHD_NO). */
static struct slot *hold_model(struct MHD_Connection *c, json_t *o, enum MHD_Result *r)
{
	json_t *jm = json_object_get(o, "model");
	struct slot *s = find_model(json_string_value(jm));
	if (!s) {
		*r = send_error(c, 404, "invalid_request_error", "model", "model '%s' does not exist",
				json_is_string(jm) ? json_string_value(jm) : "(none)");
		return NULL;
	}
	char msg[INFERD_ERR_LEN];
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int rc = models_acquire(s, mono() + (S.queue_timeout_s > 0 ? S.queue_timeout_s : 60), ci ? ci->connect_fd : -1, 0,
				msg, sizeof msg);
	if (rc) {
		*r = rc == 499 ? MHD_NO : send_error(c, (unsigned)rc, "unavailable", "model", "%s", msg);
		return NULL;
	}
	return s;
}

/* POST /apply-template: the prompt a chat request renders to (messages,
 * tools, tool_choice, thinking switches), as llama-server offers it */
static enum MHD_Result apply_template(struct MHD_Connection *c, json_t *o)
{
	enum MHD_Result r;
	struct slot *s = hold_model(c, o, &r);
	if (!s)
		return r;
	struct built b;
	memset(&b, 0, sizeof b);
	if (build_chat(o, &b, s))
		r = send_error(c, 400, "invalid_request_error", b.err_param, "%s", b.err);
	else
		r = send_json(c, 200, json_pack("{s:s%,s:i}", "prompt", b.prompt_text, b.prompt_len, "prompt_tokens",
						 b.prompt_tokens), NULL);
	built_free(&b);
	models_release(s, NAN);
	return r;
}

/* /tokenize and /detokenize: the model is loaded for it if need be */
static enum MHD_Result tokenize(struct MHD_Connection *c, json_t *o, int detok)
{
	enum MHD_Result r;
	struct slot *s = hold_model(c, o, &r);
	if (!s)
		return r;
	r = tokenize_held(c, o, detok, s);
	models_release(s, NAN);
	return r;
}

/* /v1/completions with a list of several text prompts (not streamed): all
 * are submitted at once, so they run in the same batches; one choice each. */
static enum MHD_Result answer_multi(struct MHD_Connection *c, struct conn *k, struct slot *s, json_t *o)
{
	json_t *prompts = json_object_get(o, "prompt");
	size_t np = json_array_size(prompts);
	if (np > 64)
		return send_error(c, 400, "invalid_request_error", "prompt", "at most 64 prompts in one request");
	if (json_is_true(json_object_get(o, "stream")))
		return send_error(c, 400, "invalid_request_error", "prompt",
				  "streaming several prompts in one request is not supported; send one request per prompt");
	inferd_req_t **qs = calloc(np, sizeof *qs);
	json_t *choices = json_array();
	int prompt_tokens = 0, completion_tokens = 0, status = 200, before;
	char msg[512] = "";
	for (size_t i = 0; i < np && status == 200; i++) {
		json_t *one = json_deep_copy(o);
		json_object_set(one, "prompt", json_array_get(prompts, i));
		struct built b;
		memset(&b, 0, sizeof b);
		b.prio_header = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Priority");
		if (build_completion(one, &b, s)) {
			status = 400;
			snprintf(msg, sizeof msg, "prompt[%zu]: %.400s", i, b.err);
		} else if (i > 0 && (before = models_acquire(s, mono(), k->fd, 1, msg, sizeof msg)) != 0) {
			status = before == 499 ? -1 : before; /* the first prompt holds the model since generate() */
		} else {
			char err[INFERD_ERR_LEN];
			if (inferd_submit(s->m, &b.r, &qs[i], err)) {
				if (i > 0)
					models_release(s, NAN);
				status = 429;
				snprintf(msg, sizeof msg, "%.400s", err);
			}
			prompt_tokens += b.prompt_tokens;
		}
		built_free(&b);
		json_decref(one);
	}
	for (size_t i = 0; i < np; i++) {
		if (!qs[i])
			continue;
		char *text = NULL;
		size_t tl = 0;
		struct inferd_event ev;
		int finish = 0, gone = 0;
		while (status == 200 && !gone) {
			int w = next_event(qs[i], k->fd, &ev, 1 << 30);
			if (w == 1) {
				gone = 1;
				break;
			}
			if (w == 3) {
				status = 503;
				snprintf(msg, sizeof msg, DRAIN_MSG, S.drain_timeout_s);
				break;
			}
			if (w)
				continue;
			if (ev.text_len) {
				text = realloc(text, tl + ev.text_len + 1);
				memcpy(text + tl, ev.text, ev.text_len);
				tl += ev.text_len;
			}
			if (ev.type == INFERD_EV_DONE) {
				finish = ev.finish;
				completion_tokens += ev.completion_tokens;
				if (finish == INFERD_FINISH_TIMEOUT || finish == INFERD_FINISH_ERROR) {
					status = finish == INFERD_FINISH_TIMEOUT ? 504 : 400;
					snprintf(msg, sizeof msg, "prompt[%zu]: %s", i, ev.message);
				}
				break;
			}
		}
		if (gone) {
			status = -1;
			atomic_fetch_add(&S.n_cancelled, 1);
		}
		json_t *jt = json_stringn(text ? text : "", tl);
		json_array_append_new(choices, json_pack("{s:i,s:o,s:s,s:n}", "index", (int)i, "text", jt ? jt : json_string(""),
							 "finish_reason", finish_str(finish), "logprobs"));
		free(text);
	}
	for (size_t i = 0; i < np; i++)
		if (qs[i]) {
			inferd_req_cancel(qs[i]);
			inferd_req_release(qs[i]);
			if (i > 0)
				models_release(s, NAN);
		}
	free(qs);
	k->prompt_tokens = prompt_tokens;
	k->completion_tokens = completion_tokens;
	if (status == -1) {
		json_decref(choices);
		return MHD_NO;
	}
	if (status != 200) {
		json_decref(choices);
		snprintf(k->error, sizeof k->error, "%.200s", msg);
		return send_error(c, (unsigned)status, status == 429 ? "rate_limit_exceeded" : status == 504 ? "timeout"
							 : status == 503 ? "unavailable" : "invalid_request_error",
				  "prompt", "%s", msg);
	}
	return send_json(c, 200,
			 json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", k->id, "object", "text_completion", "created",
				   (json_int_t)time(NULL), "model", s->name, "choices", choices, "usage",
				   usage_json(prompt_tokens, completion_tokens)),
			 NULL);
}

static enum MHD_Result generate(struct MHD_Connection *c, struct conn *k, json_t *o, int chat)
{
	int responses = chat == 2;
	k->t_start = mono();
	k->responses = responses;
	json_t *jm = json_object_get(o, "model");
	if (jm && !json_is_string(jm))
		return send_error(c, 400, "invalid_request_error", "model", "'model' must be a string");
	struct slot *s = find_model(json_string_value(jm));
	if (!s)
		return send_error(c, 404, "invalid_request_error", "model", "model '%s' does not exist",
				  jm ? json_string_value(jm) : "(none)");
	/* keep_alive: how long the model stays loaded once idle (Ollama's field) */
	k->keep_alive = NAN;
	json_t *ka = json_object_get(o, "keep_alive");
	if (ka && !json_is_null(ka) && parse_duration(ka, &k->keep_alive))
		return send_error(c, 400, "invalid_request_error", "keep_alive",
				  "'keep_alive' must be seconds or a duration such as \"30s\", \"5m\", \"1h\"; -1 keeps the "
				  "model loaded, 0 unloads it after this request");
	/* batch work waits while the batch lane is paused (its queue deadline
	 * still applies) */
	struct built b;
	memset(&b, 0, sizeof b);
	b.prio_header = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Priority");
	json_t *pr = json_object_get(o, "priority");
	const char *prio = json_is_string(pr) ? json_string_value(pr) : pr && !json_is_null(pr) ? NULL : b.prio_header;
	const union MHD_ConnectionInfo *lci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int cfd = lci ? lci->connect_fd : -1;
	double deadline = mono() + (S.queue_timeout_s > 0 ? S.queue_timeout_s : 60);
	if (prio && !strcmp(prio, "batch") && atomic_load(&S.batch_paused)) {
		atomic_fetch_add(&S.batch_waiting, 1);
		while (atomic_load(&S.batch_paused) && mono() < deadline && !atomic_load(&S.stopping) && !client_gone(cfd))
			usleep(20000);
		atomic_fetch_sub(&S.batch_waiting, 1);
		if (client_gone(cfd))
			return MHD_NO;
		if (atomic_load(&S.batch_paused)) {
			atomic_fetch_add(&S.n_timeouts, 1);
			snprintf(k->error, sizeof k->error, "batch lane paused");
			return send_error(c, 503, "unavailable", "priority",
					  "the batch lane is paused (POST /admin/batch/resume) and this batch request's queue "
					  "deadline (--queue-timeout %g s) passed",
					  S.queue_timeout_s > 0 ? S.queue_timeout_s : 60);
		}
	}
	/* the model: loaded on demand (one load however many wait), admitted
	 * against --parallel running plus --queue waiting (429 beyond) */
	char amsg[INFERD_ERR_LEN];
	int arc = models_acquire(s, deadline, cfd, 1, amsg, sizeof amsg);
	if (arc == 499)
		return MHD_NO;
	if (arc) {
		atomic_fetch_add(&S.n_rejected, 1);
		snprintf(k->error, sizeof k->error, "%.200s", amsg);
		return send_error(c, (unsigned)arc, arc == 429 ? "rate_limit_exceeded" : "unavailable",
				  arc == 429 ? NULL : "model", "%s", amsg);
	}
	k->slot = s;
	/* the model's configured defaults fill what the request leaves out */
	if (s->cfg->sampling) {
		const char *key;
		json_t *v;
		json_object_foreach(s->cfg->sampling, key, v)
		{
			if (!strcmp(key, "max_tokens") && json_object_get(o, "max_completion_tokens"))
				continue;
			if (!json_object_get(o, key) || json_is_null(json_object_get(o, key)))
				json_object_set(o, key, v);
		}
	}
	k->model = s->name;
	json_t *jp = json_object_get(o, "prompt");
	if (!chat && json_is_array(jp) && json_array_size(jp) > 1 && json_is_string(json_array_get(jp, 0))) {
		const union MHD_ConnectionInfo *mci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k->fd = mci ? mci->connect_fd : -1;
		gen_id(k->id, sizeof k->id, "cmpl");
		return answer_multi(c, k, s, o);
	}
	if ((responses ? build_responses(o, &b, s) : chat ? build_chat(o, &b, s) : build_completion(o, &b, s))) {
		built_free(&b);
		snprintf(k->error, sizeof k->error, "%.200s", b.err);
		return send_error(c, 400, "invalid_request_error", b.err_param, "%s", b.err);
	}
	k->prompt_tokens = b.prompt_tokens;
	if (b.prompt_tokens >= s->n_ctx || b.prompt_tokens + b.r.max_tokens > s->n_ctx) {
		if (b.prompt_tokens >= s->n_ctx || b.max_tokens_given) {
			built_free(&b);
			snprintf(k->error, sizeof k->error, "context length");
			return send_error(c, 400, "invalid_request_error", b.prompt_tokens >= s->n_ctx ? "messages" : "max_tokens",
					  "this request needs %d tokens (%d of prompt + %d to generate) but model '%s' has a "
					  "context length of %d",
					  b.prompt_tokens + b.r.max_tokens, b.prompt_tokens, b.r.max_tokens, s->name, s->n_ctx);
		}
		b.r.max_tokens = s->n_ctx - b.prompt_tokens; /* the default shrinks to what fits */
	}
	gen_id(k->id, sizeof k->id, responses ? "resp" : chat ? "chatcmpl" : "cmpl");
	k->call_seed = (uint64_t)(uintptr_t)k ^ (uint64_t)time(NULL);
	char err[INFERD_ERR_LEN];
	int rc = inferd_submit(s->m, &b.r, &k->q, err);
	if (rc) {
		built_free(&b);
		atomic_fetch_add(&S.n_rejected, 1);
		if (rc == INFERD_EINVAL) /* the request's fault (a constraint that does not compile...) */
			return send_error(c, 400, "invalid_request_error", NULL, "%s", err);
		return send_error(c, rc == INFERD_EAGAIN ? 429 : 503, rc == INFERD_EAGAIN ? "rate_limit_exceeded" : "unavailable",
				  NULL, "%s", err);
	}
	atomic_fetch_add(&S.n_tokens_in, (unsigned long long)b.prompt_tokens);
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	k->fd = ci ? ci->connect_fd : -1;
	if (!b.stream) {
		enum MHD_Result r = answer_blocking(c, k, s, &b, chat);
		built_free(&b);
		return r;
	}
	k->chat = chat != 0;
	k->include_usage = b.include_usage;
	k->logprobs = b.r.logprobs;
	k->forced = b.forced;
	k->parallel = b.tco.parallel_tool_calls;
	snprintf(k->forced_name, sizeof k->forced_name, "%s", b.forced_name);
	if (b.parse) { /* the parser keeps its own copies of the tools and prompt */
		k->tools = b.tools ? json_deep_copy(b.tools) : NULL;
		k->prompt_text = b.prompt_text;
		b.prompt_text = NULL;
		struct tc_options to = b.tco;
		to.tools = k->tools;
		to.prompt = k->prompt_text;
		to.id_seed = k->call_seed;
		char perr[INFERD_ERR_LEN];
		if (tc_parser_new(&b.slot_syn, &to, &k->tcp, perr) != 0)
			k->tcp = NULL; /* plain text then */
	}
	if (responses)
		resp_start(k, s, b.prompt_tokens);
	else if (chat)
		sse_json(k, chunk(k, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL));
	built_free(&b);
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, k, NULL);
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
	add_cors(c, r);
	last_status = 200;
	enum MHD_Result ok = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			       const char *version, const char *data, size_t *size, void **con_cls)
{
	(void)cls;
	(void)version;
	struct conn *k = *con_cls;
	if (!k) {
		k = calloc(1, sizeof *k);
		if (!k)
			return MHD_NO;
		k->fd = -1;
		*con_cls = k;
		return MHD_YES;
	}
	if (*size) { /* body arrives in pieces */
		if (k->len + *size > MAX_BODY)
			k->too_big = 1;
		else {
			char *nb = realloc(k->body, k->len + *size + 1);
			if (!nb)
				return MHD_NO;
			k->body = nb;
			memcpy(k->body + k->len, data, *size);
			k->len += *size;
			k->body[k->len] = 0;
		}
		*size = 0;
		return MHD_YES;
	}
	atomic_fetch_add(&S.n_requests, 1);
	snprintf(k->url, sizeof k->url, "%s", url);
	if (!k->url_seen)
		atomic_fetch_add(&S.active, 1);
	k->url_seen = 1;
	last_status = 0;
	watch_mark(c, 1);
	if (!strcmp(method, "OPTIONS")) { /* CORS preflight */
		struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
		add_cors(c, r);
		MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
		MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
		enum MHD_Result ok = MHD_queue_response(c, 204, r);
		MHD_destroy_response(r);
		return ok;
	}
	if (!strcmp(url, "/health"))
		return health(c);
	if (!authorized(c))
		return send_error(c, 401, "invalid_request_error", NULL, "missing or invalid API key (Authorization: Bearer ...)");
	int is_get = !strcmp(method, "GET"), is_post = !strcmp(method, "POST");
	size_t ul = strlen(url);
	int adm_load = ul > 16 && !strncmp(url, "/v1/models/", 11) && !strcmp(url + ul - 5, "/load");
	int adm_unload = ul > 18 && !strncmp(url, "/v1/models/", 11) && !strcmp(url + ul - 7, "/unload");
	if ((adm_load || adm_unload) && is_post) { /* a name inside the registry, never a path */
		char id[160];
		snprintf(id, sizeof id, "%.*s", (int)(ul - 11 - (adm_load ? 5 : 7)), url + 11);
		if (atomic_load(&S.stopping))
			return send_error(c, 503, "unavailable", NULL, "the server is shutting down");
		return model_admin(c, id, adm_load);
	}
	if (!strcmp(url, "/admin/batch/pause") || !strcmp(url, "/admin/batch/resume")) {
		if (!is_post)
			return send_error(c, 405, "invalid_request_error", NULL, "use POST for %s", url);
		int pause = !strcmp(url, "/admin/batch/pause");
		atomic_store(&S.batch_paused, pause);
		fprintf(stderr, "{\"event\":\"batch_lane\",\"state\":\"%s\",\"waiting\":%d}\n", pause ? "paused" : "running",
			atomic_load(&S.batch_waiting));
		return send_json(c, 200, json_pack("{s:s,s:i}", "batch_lane", pause ? "paused" : "running", "waiting",
						   atomic_load(&S.batch_waiting)), NULL);
	}
	if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11))
		return is_get ? models(c, url) : send_error(c, 405, "invalid_request_error", NULL, "use GET for %s", url);
	if (!strcmp(url, "/metrics"))
		return is_get ? metrics(c) : send_error(c, 405, "invalid_request_error", NULL, "use GET for %s", url);
	int route = !strcmp(url, "/v1/chat/completions") ? 1 : !strcmp(url, "/v1/completions") ? 2
		    : !strcmp(url, "/tokenize") ? 3 : !strcmp(url, "/detokenize") ? 4 : !strcmp(url, "/v1/responses") ? 5
		    : !strcmp(url, "/apply-template") ? 6 : 0;
	if (!route)
		return send_error(c, 404, "invalid_request_error", NULL, "no route %s %s", method, url);
	if (!is_post)
		return send_error(c, 405, "invalid_request_error", NULL, "use POST for %s", url);
	if (atomic_load(&S.stopping))
		return send_error(c, 503, "unavailable", NULL, "the server is shutting down");
	if (k->too_big)
		return send_error(c, 413, "invalid_request_error", NULL, "request body larger than %u bytes", MAX_BODY);
	json_error_t je;
	json_t *o = k->body ? json_loadb(k->body, k->len, 0, &je) : NULL;
	if (!o)
		return send_error(c, 400, "invalid_request_error", NULL, "malformed JSON body%s%s",
				  k->body ? ": " : " (empty)", k->body ? je.text : "");
	if (!json_is_object(o)) {
		json_decref(o);
		return send_error(c, 400, "invalid_request_error", NULL, "the body must be a JSON object");
	}
	k->route = url;
	last_status = 0;
	enum MHD_Result r = route == 6 ? apply_template(c, o) : route == 5 ? generate(c, k, o, 2)
			    : route <= 2 ? generate(c, k, o, route == 1) : tokenize(c, o, route == 4);
	k->status = last_status;
	json_decref(o);
	return r;
}

/* ---------------- the worker: loading, heartbeats, signals, drain ---------------- */

/* A model's GPU context is lost (a sticky CUDA error): its requests have
 * ended with the error; give their error events a moment to reach the
 * clients, then exit so that the supervisor starts a fresh worker. */
static void report(struct serve_report *r);
static atomic_int dying; /* the worker is exiting for a lost device */

static void on_device_lost(void *arg, const char *msg)
{
	const struct slot *s = arg;
	/* the supervisor holds this death against the model (two in a row
	 * quarantine it): it was inside a step; no later "idle" report */
	atomic_store(&dying, 1);
	struct serve_report r = {.type = REPORT_BUSY, .model = s->index, .state = 1};
	report(&r);
	fprintf(stderr, "inferd serve: model %s: %s; exiting (status 3) so the worker can be restarted\n", s->name, msg);
	fflush(stderr);
	usleep(500 * 1000);
	_exit(3);
}

static const struct serve_opts *O;
static const struct serve_worker_ctx *W;
static atomic_int loader_done;

static void report(struct serve_report *r)
{
	if (!W || W->report_fd < 0)
		return;
	/* non-blocking: a supervisor that does not read never stalls the
	 * worker (a full pipe drops the message; a gone one is EPIPE) */
	ssize_t n = write(W->report_fd, r, sizeof *r);
	(void)n;
}

static void report_model(int i, int state, const char *text)
{
	struct serve_report r = {.type = REPORT_MODEL, .model = i, .state = state};
	snprintf(r.text, sizeof r.text, "%.*s", (int)sizeof r.text - 1, text ? text : "");
	report(&r);
}

/* The model has requests (or has none): told to the supervisor at each
 * change, before the request reaches the executor, so a crash in the very
 * first step is held against the right model. The state sent is read under
 * the mutex, so the last message is always the current state. */
static pthread_mutex_t busy_mu = PTHREAD_MUTEX_INITIALIZER;
static void report_busy(struct slot *s)
{
	if (atomic_load(&dying))
		return;
	pthread_mutex_lock(&busy_mu);
	struct serve_report r = {.type = REPORT_BUSY, .model = s->index, .state = atomic_load(&s->in_flight) > 0};
	report(&r);
	pthread_mutex_unlock(&busy_mu);
}

/* The start-up pass: the preload models (--model, --config), in order. */
static void *loader(void *arg)
{
	(void)arg;
	models_preload();
	int ok = 0;
	for (int i = 0; i < models_count(); i++)
		ok += atomic_load(&models_at(i)->state) == SLOT_READY;
	fprintf(stderr, "inferd serve: ready (%d of %d models loaded)\n", ok, models_count());
	struct serve_report r = {.type = REPORT_READY, .state = ok};
	report(&r); /* reported before /health can say 200 */
	atomic_store(&S.ready, 1);
	atomic_store(&loader_done, 1);
	return NULL;
}

/* Heartbeat to the supervisor, from the executors' own progress: an
 * executor inside steps (RUNNING) whose last step ended longer than
 * --hang-timeout ago is stalled. */
static void heartbeat(void)
{
	struct serve_report r = {.type = REPORT_HEARTBEAT};
	double now = mono();
	models_lock();
	for (int i = 0; i < models_count(); i++) {
		struct slot *s = models_at(i);
		if (atomic_load(&s->state) != SLOT_READY)
			continue;
		struct inferd_model_stats st;
		inferd_model_stats(s->m, &st);
		if (st.state == INFERD_STATE_RUNNING && i < 64)
			r.running |= 1ull << i;
		if (st.state == INFERD_STATE_RUNNING && now - st.last_step_s > S.hang_timeout_s && !r.state) {
			r.state = 1;
			snprintf(r.text, sizeof r.text, "the executor of model %s made no progress for %.1f s (after step %llu)",
				 s->name, now - st.last_step_s, (unsigned long long)st.steps);
		}
	}
	models_unlock();
	report(&r);
}

/* SIGHUP: re-read the model list the server was given: models that failed
 * to load are tried again (not quarantined ones); loaded models whose file
 * changed are named (a restart loads the new file). */
static pthread_t loader_th;
static int loader_started;

static void on_hup(void)
{
	fprintf(stderr, "{\"event\":\"sighup\",\"pid\":%d,\"action\":\"re-checking %d models\"}\n", (int)getpid(),
		models_count());
	if (!atomic_load(&loader_done)) {
		fprintf(stderr, "inferd serve: SIGHUP: models are still loading; nothing re-checked\n");
		return;
	}
	int retry = models_rehup();
	fprintf(stderr, "inferd serve: SIGHUP: retrying %d failed model%s\n", retry, retry == 1 ? "" : "s");
}

/* SIGTERM/SIGINT: stop accepting, let in-flight requests finish within
 * --drain-timeout, end the rest with a clear error. */
static void drain(struct MHD_Daemon *d)
{
	double t0 = mono();
	atomic_store(&S.stopping, 1);
	MHD_socket ls = MHD_quiesce_daemon(d);
	if (ls != MHD_INVALID_SOCKET)
		close(ls);
	struct serve_report r = {.type = REPORT_DRAINING};
	report(&r);
	int n0 = atomic_load(&S.active);
	fprintf(stderr, "{\"event\":\"drain\",\"pid\":%d,\"in_flight\":%d,\"drain_timeout_s\":%g}\n", (int)getpid(), n0,
		S.drain_timeout_s);
	while (atomic_load(&S.active) > 0 && mono() - t0 < S.drain_timeout_s) {
		heartbeat();
		usleep(20000);
	}
	int left = atomic_load(&S.active);
	if (left) {
		atomic_store(&S.aborting, 1);
		for (double t1 = mono(); atomic_load(&S.active) > 0 && mono() - t1 < 5;)
			usleep(20000);
	}
	fprintf(stderr, "{\"event\":\"drained\",\"pid\":%d,\"finished\":%d,\"ended_with_error\":%d,\"duration_ms\":%.1f}\n",
		(int)getpid(), n0 - left, left, (mono() - t0) * 1e3);
}

int serve_worker(const struct serve_opts *o, int listen_fd, const struct serve_worker_ctx *w)
{
	/* signals are taken by the main thread (sigtimedwait) only: block them
	 * before any thread starts, so every thread inherits the mask */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	fault_set_generation(w ? w->generation : 1);
	fault_hit(FAULT_AT_START, NULL, 0);
	O = o;
	W = w;
	memset(&S, 0, sizeof S);
	S.keys = o->keys;
	S.n_keys = o->n_keys;
	S.timeout_s = o->timeout_s;
	S.queue_timeout_s = o->queue_timeout_s;
	S.token_timeout_s = o->token_timeout_s;
	S.hang_timeout_s = o->hang_timeout_s > 0 ? o->hang_timeout_s : 60;
	S.drain_timeout_s = o->drain_timeout_s > 0 ? o->drain_timeout_s : 30;
	S.cors = o->cors;
	S.n_cors = o->n_cors;
	struct models_hooks hooks = {.report_model = report_model, .report_busy = report_busy, .on_fatal = on_device_lost};
	if (models_init(o, w, &hooks)) {
		fprintf(stderr, "inferd serve: out of memory\n");
		return 1;
	}
	/* serve at once: /health answers 503 until the models are loaded */
	struct MHD_Daemon *d = MHD_start_daemon(
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC, 0, NULL,
		NULL, handler, NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd, MHD_OPTION_NOTIFY_COMPLETED, completed,
		NULL, MHD_OPTION_NOTIFY_CONNECTION, notify_conn, NULL, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "inferd serve: cannot serve on %s:%d: %s\n", o->host, o->port, strerror(errno));
		models_shutdown();
		return 1;
	}
	int npre = 0;
	for (int i = 0; i < models_count(); i++)
		npre += models_at(i)->cfg->preload;
	fprintf(stderr, "inferd serve: listening on http://%s:%d (pid %d; %d models, loading %d; memory budget %.1f MiB)\n",
		o->host, o->port, (int)getpid(), models_count(), npre, (double)models_budget() / (1 << 20));
	request_timeout_s = o->request_timeout_s > 0 ? o->request_timeout_s : 30;
	pthread_t wd;
	pthread_create(&wd, NULL, watchdog, NULL);
	atomic_store(&loader_done, 0);
	loader_started = pthread_create(&loader_th, NULL, loader, NULL) == 0;
	for (;;) {
		heartbeat();
		models_tick(); /* keep-alive: unload idle models */
		struct timespec ts = {0, 250000000};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGHUP)
			on_hup();
		else if (sig == SIGTERM || sig == SIGINT)
			break;
	}
	drain(d);
	pthread_join(wd, NULL);
	MHD_stop_daemon(d);
	/* an executor stuck inside a step would never join: leave it to the exit */
	double now = mono();
	for (int i = 0; i < models_count(); i++) {
		struct slot *s = models_at(i);
		struct inferd_model_stats st;
		if (atomic_load(&s->state) != SLOT_READY)
			continue;
		inferd_model_stats(s->m, &st);
		if (st.state == INFERD_STATE_RUNNING && now - st.last_step_s > S.hang_timeout_s / 2) {
			fprintf(stderr, "inferd serve: the executor of model %s is stuck in a step (%.1f s); exiting without closing it\n",
				s->name, now - st.last_step_s);
			return 1;
		}
	}
	if (loader_started)
		pthread_join(loader_th, NULL);
	models_shutdown();
	fprintf(stderr, "inferd serve: stopped\n");
	return 0;
}
