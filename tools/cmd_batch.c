/*
 * cmd_batch.c — `inferd batch`: offline batch inference. Every line of a
 * JSONL file is a request; N worker threads submit them to the engine at
 * once and drain their events; results are written in input order, one
 * JSON line each, as soon as each one (and all before it) is done.
 * A progress bar goes to stderr when stderr is a terminal.
 */
#include "inferd.h"
#include "cmds.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *batch_help =
	"usage: inferd batch -m MODEL --requests FILE.jsonl [--concurrency N] [-t THREADS]\n"
	"Run every request of FILE.jsonl through the engine concurrently and write\n"
	"one JSON line per request, in input order:\n"
	"  {\"index\": i, \"output_ids\": [...], \"finish_reason\": \"...\", \"usage\": {...}}\n"
	"with \"text\" when the model has a tokenizer, and \"error\" when the request\n"
	"was refused. Input lines: {\"ids\": [...]} or {\"prompt\": \"...\"} plus\n"
	"max_tokens, temperature, top_p, top_k, min_p, seed, stop (string or list),\n"
	"stop_token_ids, repetition_penalty, presence_penalty, frequency_penalty,\n"
	"logit_bias ({\"id\": bias}), ignore_eos, logprobs, top_logprobs, timeout,\n"
	"priority.\n"
	"  -m, --model MODEL    GGUF file or Hugging Face directory (required)\n"
	"  --requests FILE      JSONL requests (required; - for stdin)\n"
	"  --concurrency N      requests in flight at once (default 16)\n"
	"  -t, --threads N      CPU threads (default: all online CPUs)\n"
	"  --kv-tokens N        KV cache size in positions (default 8192)\n";

struct job {
	json_t *in;        /* the parsed line, or NULL */
	char *parse_error;
	char *out;         /* the result line */
	atomic_int done;
};

struct ctx {
	inferd_model_t *m;
	struct job *jobs;
	int n;
	atomic_int next;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static int get_num(json_t *o, const char *k, double *v, char *err)
{
	json_t *x = json_object_get(o, k);
	if (!x || json_is_null(x))
		return 0;
	if (!json_is_number(x)) {
		snprintf(err, 256, "\"%s\" must be a number", k);
		return -1;
	}
	*v = json_number_value(x);
	return 0;
}

/* Fill r from the line; arrays are allocated into the pointers given. */
static int build(json_t *o, struct inferd_request *r, int32_t **ids, const char ***stop, int32_t **stop_ids,
		 struct inferd_logit_bias **bias, char *err)
{
	static const char *known[] = {"ids", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
				      "stop", "stop_token_ids", "repetition_penalty", "presence_penalty",
				      "frequency_penalty", "logit_bias", "ignore_eos", "logprobs", "top_logprobs",
				      "timeout", "token_timeout", "priority", NULL};
	const char *key;
	json_t *v;
	if (!json_is_object(o)) {
		snprintf(err, 256, "a request line must be a JSON object");
		return -1;
	}
	json_object_foreach(o, key, v)
	{
		int ok = 0;
		for (int i = 0; known[i]; i++)
			ok |= !strcmp(known[i], key);
		if (!ok) {
			snprintf(err, 256, "unknown field \"%.64s\"", key);
			return -1;
		}
	}
	inferd_request_init(r);
	json_t *jids = json_object_get(o, "ids"), *jp = json_object_get(o, "prompt");
	if (jids) {
		if (!json_is_array(jids)) {
			snprintf(err, 256, "\"ids\" must be a list of token ids");
			return -1;
		}
		*ids = malloc((json_array_size(jids) + 1) * sizeof **ids);
		for (size_t i = 0; i < json_array_size(jids); i++) {
			json_t *x = json_array_get(jids, i);
			if (!json_is_integer(x) || json_integer_value(x) < INT32_MIN || json_integer_value(x) > INT32_MAX) {
				snprintf(err, 256, "\"ids\"[%zu] is not an integer", i);
				return -1;
			}
			(*ids)[i] = (int32_t)json_integer_value(x);
		}
		r->ids = *ids;
		r->n_ids = (int)json_array_size(jids);
	}
	if (jp) {
		if (!json_is_string(jp)) {
			snprintf(err, 256, "\"prompt\" must be a string");
			return -1;
		}
		r->prompt = json_string_value(jp);
	}
	if (!jids && !jp) {
		snprintf(err, 256, "a request needs \"ids\" or \"prompt\"");
		return -1;
	}
	double d;
	struct { const char *k; float *f; } fl[] = {{"temperature", &r->temperature}, {"top_p", &r->top_p},
						      {"min_p", &r->min_p}, {"repetition_penalty", &r->repetition_penalty},
						      {"presence_penalty", &r->presence_penalty},
						      {"frequency_penalty", &r->frequency_penalty}};
	for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
		d = *fl[i].f;
		if (get_num(o, fl[i].k, &d, err))
			return -1;
		*fl[i].f = (float)d;
	}
	struct { const char *k; int *v; } in[] = {{"max_tokens", &r->max_tokens}, {"top_k", &r->top_k},
						   {"top_logprobs", &r->top_logprobs}, {"priority", &r->priority}};
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		json_t *x = json_object_get(o, in[i].k);
		if (!x || json_is_null(x))
			continue;
		if (!json_is_integer(x) || json_integer_value(x) < INT32_MIN || json_integer_value(x) > INT32_MAX) {
			snprintf(err, 256, "\"%s\" must be an integer", in[i].k);
			return -1;
		}
		*in[i].v = (int)json_integer_value(x);
	}
	json_t *seed = json_object_get(o, "seed");
	if (seed && !json_is_null(seed)) {
		if (!json_is_integer(seed)) {
			snprintf(err, 256, "\"seed\" must be an integer");
			return -1;
		}
		r->seed = (uint64_t)json_integer_value(seed);
	}
	if (get_num(o, "timeout", &r->timeout_s, err) || get_num(o, "token_timeout", &r->token_timeout_s, err))
		return -1;
	r->ignore_eos = json_is_true(json_object_get(o, "ignore_eos"));
	r->logprobs = json_is_true(json_object_get(o, "logprobs"));
	json_t *st = json_object_get(o, "stop");
	if (json_is_string(st)) {
		*stop = malloc(sizeof **stop);
		(*stop)[0] = json_string_value(st);
		r->n_stop = 1;
	} else if (json_is_array(st)) {
		*stop = malloc((json_array_size(st) + 1) * sizeof **stop);
		for (size_t i = 0; i < json_array_size(st); i++) {
			if (!json_is_string(json_array_get(st, i))) {
				snprintf(err, 256, "\"stop\" must be a string or a list of strings");
				return -1;
			}
			(*stop)[i] = json_string_value(json_array_get(st, i));
		}
		r->n_stop = (int)json_array_size(st);
	} else if (st && !json_is_null(st)) {
		snprintf(err, 256, "\"stop\" must be a string or a list of strings");
		return -1;
	}
	r->stop = *stop;
	json_t *si = json_object_get(o, "stop_token_ids");
	if (si && !json_is_null(si)) {
		if (!json_is_array(si)) {
			snprintf(err, 256, "\"stop_token_ids\" must be a list");
			return -1;
		}
		*stop_ids = malloc((json_array_size(si) + 1) * sizeof **stop_ids);
		for (size_t i = 0; i < json_array_size(si); i++)
			(*stop_ids)[i] = (int32_t)json_integer_value(json_array_get(si, i));
		r->stop_ids = *stop_ids;
		r->n_stop_ids = (int)json_array_size(si);
	}
	json_t *lb = json_object_get(o, "logit_bias");
	if (lb && !json_is_null(lb)) {
		if (!json_is_object(lb)) {
			snprintf(err, 256, "\"logit_bias\" must be an object {\"token id\": bias}");
			return -1;
		}
		*bias = malloc((json_object_size(lb) + 1) * sizeof **bias);
		int k = 0;
		json_object_foreach(lb, key, v)
		{
			char *end;
			long id = strtol(key, &end, 10);
			if (*end || end == key || !json_is_number(v)) {
				snprintf(err, 256, "logit_bias key \"%.32s\" is not a token id with a number", key);
				return -1;
			}
			(*bias)[k++] = (struct inferd_logit_bias){(int32_t)id, (float)json_number_value(v)};
		}
		r->logit_bias = *bias;
		r->n_logit_bias = k;
	}
	return 0;
}

static char *result_line(int index, const char *error, json_t *ids, const char *text, size_t text_len, int has_text,
			 const struct inferd_event *done)
{
	json_t *o = json_object();
	json_object_set_new(o, "index", json_integer(index));
	if (error) {
		json_object_set_new(o, "error", json_string(error));
	} else {
		json_object_set(o, "output_ids", ids);
		if (has_text)
			json_object_set_new(o, "text", json_stringn(text ? text : "", text_len));
		json_object_set_new(o, "finish_reason", json_string(inferd_finish_name(done->finish)));
		if (done->finish == INFERD_FINISH_ERROR || done->message[0])
			json_object_set_new(o, "message", json_string(done->message));
		json_object_set_new(o, "usage", json_pack("{s:i,s:i,s:i}", "prompt_tokens", done->prompt_tokens,
							  "completion_tokens", done->completion_tokens, "total_tokens",
							  done->prompt_tokens + done->completion_tokens));
	}
	char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(o);
	return s;
}

static void run_one(struct ctx *c, int i, int has_text)
{
	struct job *j = &c->jobs[i];
	char err[INFERD_ERR_LEN] = "";
	if (j->parse_error) {
		j->out = result_line(i, j->parse_error, NULL, NULL, 0, 0, NULL);
		return;
	}
	struct inferd_request r;
	int32_t *ids = NULL, *stop_ids = NULL;
	const char **stop = NULL;
	struct inferd_logit_bias *bias = NULL;
	if (build(j->in, &r, &ids, &stop, &stop_ids, &bias, err)) {
		j->out = result_line(i, err, NULL, NULL, 0, 0, NULL);
		goto out;
	}
	inferd_req_t *q = NULL;
	int rc;
	while ((rc = inferd_submit(c->m, &r, &q, err)) == INFERD_EAGAIN)
		usleep(1000);
	if (rc) {
		j->out = result_line(i, err, NULL, NULL, 0, 0, NULL);
		goto out;
	}
	json_t *out_ids = json_array();
	char *text = NULL;
	size_t tl = 0;
	struct inferd_event ev;
	while (inferd_req_next(q, &ev, -1) == 0) {
		if (ev.text_len) {
			char *nt = realloc(text, tl + ev.text_len + 1);
			if (nt) {
				memcpy(nt + tl, ev.text, ev.text_len);
				text = nt;
				tl += ev.text_len;
			}
		}
		if (ev.type == INFERD_EV_TOKEN)
			json_array_append_new(out_ids, json_integer(ev.token));
		if (ev.type == INFERD_EV_DONE) {
			j->out = ev.finish == INFERD_FINISH_ERROR && ev.completion_tokens == 0
					 ? result_line(i, ev.message, NULL, NULL, 0, 0, NULL)
					 : result_line(i, NULL, out_ids, text, tl, has_text, &ev);
			break;
		}
	}
	json_decref(out_ids);
	free(text);
	inferd_req_release(q);
out:
	free(ids);
	free(stop);
	free(stop_ids);
	free(bias);
}

struct worker_arg {
	struct ctx *c;
	int has_text;
};

static void *worker(void *arg)
{
	struct worker_arg *w = arg;
	struct ctx *c = w->c;
	for (;;) {
		int i = atomic_fetch_add(&c->next, 1);
		if (i >= c->n)
			break;
		run_one(c, i, w->has_text);
		pthread_mutex_lock(&c->mu);
		atomic_store(&c->jobs[i].done, 1);
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
	}
	return NULL;
}

int cmd_batch(int argc, char **argv)
{
	const char *model = NULL, *reqs = NULL;
	long conc = 16, threads = 0, kv = 0;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(batch_help, stdout);
			return 0;
		}
		long *num = !strcmp(a, "--concurrency") ? &conc : !strcmp(a, "-t") || !strcmp(a, "--threads") ? &threads
			    : !strcmp(a, "--kv-tokens") ? &kv : NULL;
		const char **str = !strcmp(a, "-m") || !strcmp(a, "--model") ? &model : !strcmp(a, "--requests") ? &reqs : NULL;
		if (!num && !str) {
			fprintf(stderr, "inferd batch: unknown option \"%s\"\n(see 'inferd batch --help')\n", a);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "inferd batch: option %s needs a value\n", a);
			return 2;
		}
		i++;
		if (str) {
			*str = v;
			continue;
		}
		char *end;
		*num = strtol(v, &end, 10);
		if (*end || end == v || *num < 1 || *num > 1 << 20) {
			fprintf(stderr, "inferd batch: %s expects a positive integer, got \"%s\"\n", a, v);
			return 2;
		}
	}
	if (!model || !reqs) {
		fprintf(stderr, "inferd batch: %s\n(see 'inferd batch --help')\n", !model ? "missing -m MODEL" : "missing --requests FILE");
		return 2;
	}
	FILE *f = strcmp(reqs, "-") ? fopen(reqs, "rb") : stdin;
	if (!f) {
		fprintf(stderr, "inferd: %s: cannot open: %s\n", reqs, strerror(errno));
		return 1;
	}
	struct ctx c = {0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int lineno = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = 0;
		if (len == 0)
			continue;
		struct job *nj = realloc(c.jobs, (size_t)(c.n + 1) * sizeof *nj);
		if (!nj)
			break;
		c.jobs = nj;
		memset(&c.jobs[c.n], 0, sizeof c.jobs[c.n]);
		json_error_t je;
		c.jobs[c.n].in = json_loadb(line, (size_t)len, 0, &je);
		if (!c.jobs[c.n].in) {
			char msg[300];
			snprintf(msg, sizeof msg, "%s line %d: malformed JSON at column %d: %s", reqs, lineno, je.column, je.text);
			c.jobs[c.n].parse_error = strdup(msg);
		}
		c.n++;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	warn_threads("batch", threads, NULL);
	char err[INFERD_ERR_LEN];
	struct inferd_model_opts o = {.n_threads = (int)threads, .kv_tokens = (int)kv};
	if (inferd_model_open(model, &o, &c.m, err)) {
		fprintf(stderr, "inferd: %s\n", err);
		return 1;
	}
	struct inferd_model_info info;
	inferd_model_get_info(c.m, &info);
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	int nw = conc < c.n ? (int)conc : c.n;
	pthread_t *th = calloc((size_t)(nw ? nw : 1), sizeof *th);
	struct worker_arg wa = {&c, info.has_tokenizer};
	for (int i = 0; i < nw; i++)
		pthread_create(&th[i], NULL, worker, &wa);
	int tty = isatty(2);
	for (int i = 0; i < c.n; i++) {
		pthread_mutex_lock(&c.mu);
		while (!atomic_load(&c.jobs[i].done))
			pthread_cond_wait(&c.cv, &c.mu);
		pthread_mutex_unlock(&c.mu);
		puts(c.jobs[i].out ? c.jobs[i].out : "{}");
		fflush(stdout);
		if (tty) {
			int w = 40, k = (i + 1) * w / c.n;
			fprintf(stderr, "\r[%.*s%*s] %d/%d", k, "########################################", w - k, "", i + 1, c.n);
		}
	}
	if (tty)
		fputc('\n', stderr);
	for (int i = 0; i < nw; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < c.n; i++) {
		json_decref(c.jobs[i].in);
		free(c.jobs[i].parse_error);
		free(c.jobs[i].out);
	}
	free(c.jobs);
	free(th);
	pthread_mutex_destroy(&c.mu);
	pthread_cond_destroy(&c.cv);
	inferd_model_close(c.m);
	return 0;
}
