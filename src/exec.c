/*
 * exec.c — the executor: one thread per open model that alone drives the
 * model's backend (weights, KV pool, scratch). Nothing else touches them,
 * so there is no lock around compute.
 *
 * Threads and ownership:
 *   - submitters push requests into a bounded queue (mutex + condvar);
 *     a full queue answers INFERD_EAGAIN at once;
 *   - the executor owns every admitted sequence, the KV block allocator and
 *     the sampler scratch; it pushes events into each request's bounded
 *     channel and never blocks on a client: a channel that fills up cancels
 *     its request with a reason;
 *   - a request (inferd_req) is shared by its submitter and the executor and
 *     is refcounted; only its channel and cancel flag are touched by both.
 * Every request gets exactly one DONE event, always its last.
 *
 * A step: take new requests (validate, tokenize) → end cancelled and
 * expired sequences (their blocks are free before the step) → schedule by
 * priority class, highest first (interactive before batch): within a
 * class the next token of every decoding sequence, then prefill chunks
 * within the token budget (chunked prefill), so batch work only gets what
 * interactive work leaves → one batched forward pass → sample (on
 * the host, or on the device when the backend has a sample op: then the
 * logits never leave it) → emit, check stops. When the KV pool runs out for a decoding sequence the
 * executor preempts the lowest-priority, newest running sequence: its
 * blocks are freed and it is recomputed later from its tokens; nothing is
 * aborted. Results are bitwise the same whatever the batch (the CPU
 * kernels reduce each sequence alone) and whatever the preemptions.
 *
 * Prefix cache: once a KV block is full it is named by a hash of its
 * tokens and of its parent block's name; a sequence starting from nothing
 * takes the named blocks of its longest cached prefix by reference (always
 * computing its last prompt token itself, so shared blocks are never
 * written). Unreferenced named blocks wait in an LRU list and are reused
 * only when no free block is left.
 *
 * A lost device (a step failing with INFERD_EDEVICE: the CUDA context is
 * gone) ends every sequence with that error, marks the model failed so that
 * later submissions are refused with the same message, and calls the
 * model's on_fatal once so the process can exit and be restarted.
 */
#include "exec.h"
#include "backend.h"
#include "fault.h"
#include "grammar.h"
#include "model.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define CHAN_CAP 4096

/* ---------------- requests and their channels ---------------- */

struct chan_ev {
	struct inferd_event ev;
	char *text;
};

struct inferd_req {
	atomic_int refs;
	atomic_int cancel;          /* 1: asked by the client; 2: channel overflow */
	struct inferd_request r;    /* deep copy */
	double t_submit;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int efd;
	struct chan_ev *ring;
	int head, n;
	int done_read;
	char *cur_text;             /* text of the event last returned */
	struct grammar *gram;       /* the compiled constraint, or NULL */
	char *trigger;              /* lazy constraint: its trigger text, or NULL */
	struct inferd_req *next;    /* submission queue */
};

static void req_unref(inferd_req_t *q)
{
	if (atomic_fetch_sub(&q->refs, 1) != 1)
		return;
	for (int i = 0; i < q->n; i++)
		free(q->ring[(q->head + i) % CHAN_CAP].text);
	free(q->ring);
	free(q->cur_text);
	free((void *)q->r.ids);
	free((void *)q->r.prompt);
	for (int i = 0; i < q->r.n_stop; i++)
		free((void *)q->r.stop[i]);
	free((void *)q->r.stop);
	free((void *)q->r.stop_ids);
	free((void *)q->r.logit_bias);
	grammar_free(q->gram);
	free(q->trigger);
	if (q->efd >= 0)
		close(q->efd);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}

/* Push an event; returns -1 when a TOKEN event does not fit (the caller
 * then cancels the request: one slot is always kept for DONE). */
static int chan_push(inferd_req_t *q, const struct inferd_event *ev, const char *text, size_t len)
{
	pthread_mutex_lock(&q->mu);
	if (ev->type == INFERD_EV_TOKEN && q->n >= CHAN_CAP - 1) {
		pthread_mutex_unlock(&q->mu);
		return -1;
	}
	struct chan_ev *c = &q->ring[(q->head + q->n) % CHAN_CAP];
	c->ev = *ev;
	c->text = NULL;
	if (len) {
		c->text = malloc(len + 1);
		if (c->text) {
			memcpy(c->text, text, len);
			c->text[len] = 0;
		}
	}
	c->ev.text_len = c->text ? len : 0;
	q->n++;
	uint64_t one = 1;
	if (q->efd >= 0 && write(q->efd, &one, 8) < 0) {
		/* the counter cannot overflow at CHAN_CAP events */
	}
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return 0;
}

int inferd_req_next(inferd_req_t *q, struct inferd_event *ev, int timeout_ms)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (timeout_ms > 0) {
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&q->mu);
	while (q->n == 0 && !q->done_read) {
		if (timeout_ms == 0)
			break;
		if (timeout_ms < 0)
			pthread_cond_wait(&q->cv, &q->mu);
		else if (pthread_cond_timedwait(&q->cv, &q->mu, &until) == ETIMEDOUT)
			break;
	}
	if (q->n == 0) {
		int rc = q->done_read ? INFERD_ECLOSED : INFERD_EAGAIN;
		pthread_mutex_unlock(&q->mu);
		return rc;
	}
	struct chan_ev *c = &q->ring[q->head];
	q->head = (q->head + 1) % CHAN_CAP;
	q->n--;
	free(q->cur_text);
	q->cur_text = c->text;
	*ev = c->ev;
	ev->text = q->cur_text ? q->cur_text : "";
	if (ev->type == INFERD_EV_DONE)
		q->done_read = 1;
	if (q->n == 0 && q->efd >= 0) {
		uint64_t v;
		if (read(q->efd, &v, 8) < 0) {
			/* nothing to drain */
		}
	}
	pthread_mutex_unlock(&q->mu);
	return 0;
}

void inferd_req_cancel(inferd_req_t *q)
{
	int zero = 0;
	atomic_compare_exchange_strong(&q->cancel, &zero, 1);
}

int inferd_req_fd(const inferd_req_t *q) { return q->efd; }

void inferd_req_release(inferd_req_t *q)
{
	if (!q)
		return;
	inferd_req_cancel(q);
	req_unref(q);
}

void inferd_request_init(struct inferd_request *r)
{
	memset(r, 0, sizeof *r);
	r->max_tokens = 16;
	r->temperature = 1.0f;
	r->top_p = 1.0f;
	r->repetition_penalty = 1.0f;
}

const char *inferd_finish_name(int f)
{
	static const char *n[] = {"none", "stop", "length", "cancelled", "timeout", "error"};
	return f >= 0 && f <= 5 ? n[f] : "unknown";
}

static void *dup_mem(const void *p, size_t n)
{
	if (!p || !n)
		return NULL;
	void *d = malloc(n);
	if (d)
		memcpy(d, p, n);
	return d;
}

/* ---------------- the executor ---------------- */

struct seq {
	inferd_req_t *q;
	int32_t *tok;
	int n_tok, cap_tok, n_prompt, n_computed, n_gen;
	int32_t *blocks;
	int n_blocks, cap_blocks;
	int n_named;             /* leading blocks already named in the cache */
	uint64_t chain;          /* name of the last named block */
	uint64_t arrival;
	double deadline, next_token_deadline;
	struct tok_stream *ts;
	char *hold;              /* text held back while it may start a stop string */
	size_t hold_len;
	int chunk;               /* tokens scheduled in this step */
	int scheduled;           /* has run in a step (left the queue) */
	int row;                 /* logits row in this step, or -1 */
	struct grammar_matcher *gm; /* constrained decoding: the output's state */
	uint32_t *gbits;         /* [n_vocab / 32] the allowed-token mask */
	int g_wait;              /* lazy constraint: waiting for its trigger */
	char gtail[64];          /* lazy: the output's last bytes (trigger search) */
	int gtail_len;
};

/* The constraint applies to this sequence's next token. */
static int g_on(const struct seq *s) { return s->gm && !s->g_wait; }

struct exec {
	inferd_model_t *m;
	pthread_t th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	inferd_req_t *q_head, *q_tail;
	int q_n, q_cap, closing;
	struct inferd_model_stats st;  /* published under mu */
	/* executor-private */
	struct inferd_model_stats cnt; /* counters, copied into st by publish */
	struct seq **act;
	int n_act, cap_act;
	void *kv;
	int n_blocks, bs, reserve, step_tokens, max_seqs;
	int32_t *free_blocks;      /* blocks nobody uses and no prefix names */
	int n_free;
	/* prefix cache: a full block is named by the hash of its tokens and of
	 * every token before it; unreferenced named blocks stay cached (LRU)
	 * until a block is needed */
	int32_t *ref;              /* [n_blocks] sequences using the block */
	uint64_t *bhash, *bparent; /* [n_blocks] name (0 = none), parent's name */
	int32_t *btok;             /* [n_blocks * bs] tokens of named blocks */
	int32_t *lru_prev, *lru_next; /* unreferenced named blocks, oldest first */
	int lru_head, lru_tail, n_lru;
	uint64_t *hkey;            /* open addressing: name -> block */
	int32_t *hval;
	uint32_t hcap;
	struct sample_scratch *ss;
	uint64_t arrival;
	int n_ctx;
	/* a lost device (INFERD_EDEVICE): every request ends with fail_msg */
	int failed;                /* written by the executor, read under mu */
	char fail_msg[INFERD_ERR_LEN];
	void (*on_fatal)(void *arg, const char *msg);
	void *fatal_arg;
	/* the tokenizer's byte trie for constrained decoding: built once by
	 * the first submission that needs it (under gv_mu), then immutable;
	 * the submission queue's mutex orders it before the executor's use */
	pthread_mutex_t gv_mu;
	struct grammar_vocab *gv;
};

static uint64_t block_name(uint64_t parent, const int32_t *tok, int n)
{
	uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < n; i++) {
		h ^= (uint32_t)tok[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h ? h : 1;
}

static void lru_unlink(struct exec *e, int32_t b)
{
	if (e->lru_prev[b] >= 0)
		e->lru_next[e->lru_prev[b]] = e->lru_next[b];
	else
		e->lru_head = e->lru_next[b];
	if (e->lru_next[b] >= 0)
		e->lru_prev[e->lru_next[b]] = e->lru_prev[b];
	else
		e->lru_tail = e->lru_prev[b];
	e->n_lru--;
}

static int32_t *hslot(struct exec *e, uint64_t key)
{
	uint32_t i = (uint32_t)(key ^ (key >> 32)) & (e->hcap - 1);
	while (e->hkey[i] && e->hkey[i] != key)
		i = (i + 1) & (e->hcap - 1);
	return &e->hval[i];
}

static void unname(struct exec *e, int32_t b)
{
	/* remove b from the table: backward-shift deletion keeps probes intact */
	uint32_t i = (uint32_t)(hslot(e, e->bhash[b]) - e->hval);
	e->hkey[i] = 0;
	for (uint32_t j = (i + 1) & (e->hcap - 1); e->hkey[j]; j = (j + 1) & (e->hcap - 1)) {
		uint64_t k = e->hkey[j];
		int32_t v = e->hval[j];
		e->hkey[j] = 0;
		*hslot(e, k) = v;
		e->hkey[hslot(e, k) - e->hval] = k;
	}
	e->bhash[b] = 0;
}

/* Blocks a sequence can get now: free ones and evictable cached ones. */
static int blocks_avail(const struct exec *e) { return e->n_free + e->n_lru; }

static int32_t block_alloc(struct exec *e)
{
	int32_t b;
	if (e->n_free)
		b = e->free_blocks[--e->n_free];
	else if (e->n_lru) { /* evict the least recently used cached prefix block */
		b = e->lru_head;
		lru_unlink(e, b);
		unname(e, b);
	} else
		return -1;
	e->ref[b] = 1;
	return b;
}

static void block_release(struct exec *e, int32_t b)
{
	if (--e->ref[b] > 0)
		return;
	if (!e->bhash[b]) {
		e->free_blocks[e->n_free++] = b;
		return;
	}
	e->lru_prev[b] = e->lru_tail;
	e->lru_next[b] = -1;
	if (e->lru_tail >= 0)
		e->lru_next[e->lru_tail] = b;
	else
		e->lru_head = b;
	e->lru_tail = b;
	e->n_lru++;
}

static void seq_free_blocks(struct exec *e, struct seq *s)
{
	for (int i = 0; i < s->n_blocks; i++)
		block_release(e, s->blocks[i]);
	s->n_blocks = 0;
	s->n_named = 0;
	s->chain = 0;
}

/* Name the sequence's blocks that are now full (their K/V are final). */
static void name_blocks(struct exec *e, struct seq *s)
{
	while ((s->n_named + 1) * e->bs <= s->n_computed && s->n_named < s->n_blocks) {
		int32_t b = s->blocks[s->n_named];
		const int32_t *tok = s->tok + (size_t)s->n_named * e->bs;
		uint64_t h = block_name(s->chain, tok, e->bs);
		int32_t *slot = hslot(e, h);
		if (!e->hkey[slot - e->hval] && !e->bhash[b]) {
			e->hkey[slot - e->hval] = h;
			*slot = b;
			e->bhash[b] = h;
			e->bparent[b] = s->chain;
			memcpy(e->btok + (size_t)b * e->bs, tok, (size_t)e->bs * sizeof *tok);
		}
		s->chain = h;
		s->n_named++;
	}
}

/* A sequence starting from nothing takes the cached blocks of its longest
 * named prefix (always leaving its last token to compute for logits). */
static void take_prefix(struct exec *e, struct seq *s)
{
	uint64_t h = 0;
	while ((s->n_blocks + 1) * e->bs < s->n_tok) {
		const int32_t *tok = s->tok + (size_t)s->n_blocks * e->bs;
		uint64_t nh = block_name(h, tok, e->bs);
		int32_t *slot = hslot(e, nh);
		if (!e->hkey[slot - e->hval])
			break;
		int32_t b = *slot;
		if (e->bparent[b] != h || memcmp(e->btok + (size_t)b * e->bs, tok, (size_t)e->bs * sizeof *tok) != 0)
			break;
		if (e->ref[b]++ == 0)
			lru_unlink(e, b);
		s->blocks[s->n_blocks++] = b;
		h = nh;
		e->cnt.prefix_hit_tokens += (uint64_t)e->bs;
	}
	s->n_computed = s->n_blocks * e->bs;
	s->n_named = s->n_blocks;
	s->chain = h;
}

/* Blocks to hold positions [0, n). */
static int seq_reserve(struct exec *e, struct seq *s, int n)
{
	int need = (n + e->bs - 1) / e->bs;
	if (need > s->cap_blocks) {
		int32_t *nb = realloc(s->blocks, (size_t)need * sizeof *nb);
		if (!nb)
			return -1;
		s->blocks = nb;
		s->cap_blocks = need;
	}
	if (need - s->n_blocks > blocks_avail(e))
		return -1;
	while (s->n_blocks < need)
		s->blocks[s->n_blocks++] = block_alloc(e);
	return 0;
}

static void done_event(struct exec *e, struct seq *s, inferd_req_t *q, int finish, int status, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static void done_event(struct exec *e, struct seq *s, inferd_req_t *q, int finish, int status, const char *fmt, ...)
{
	struct inferd_event ev = {.type = INFERD_EV_DONE, .finish = finish, .status = status};
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ev.message, sizeof ev.message, fmt, ap);
		va_end(ap);
	}
	ev.step = e->cnt.steps;
	if (s) {
		ev.prompt_tokens = s->n_prompt;
		ev.completion_tokens = s->n_gen;
	}
	/* text still held back (a partial stop string that never completed) */
	const char *text = s && finish != INFERD_FINISH_STOP ? s->hold : NULL;
	size_t len = s && finish != INFERD_FINISH_STOP ? s->hold_len : 0;
	chan_push(q, &ev, text, len);
	e->cnt.completed++;
	req_unref(q); /* the executor's reference */
}

static void seq_end(struct exec *e, int i, int finish, int status, const char *msg)
{
	struct seq *s = e->act[i];
	seq_free_blocks(e, s);
	if (s->ts && finish != INFERD_FINISH_STOP) { /* flush what the detokenizer still holds */
		char *rest;
		size_t rl;
		if (tok_stream_flush(s->ts, &rest, &rl) == 0) {
			char *nh = realloc(s->hold, s->hold_len + rl + 1);
			if (nh) {
				memcpy(nh + s->hold_len, rest, rl);
				s->hold = nh;
				s->hold_len += rl;
			}
			free(rest);
		}
	}
	if (msg)
		done_event(e, s, s->q, finish, status, "%s", msg);
	else
		done_event(e, s, s->q, finish, status, NULL);
	tok_stream_free(s->ts);
	grammar_matcher_free(s->gm);
	free(s->gbits);
	free(s->tok);
	free(s->blocks);
	free(s->hold);
	free(s);
	e->act[i] = e->act[--e->n_act];
}

/* Validate and admit one request; on a bad request it ends at once. */
static void lazy_prompt(struct exec *e, struct seq *s);

static void admit(struct exec *e, inferd_req_t *q)
{
	const struct inferd_request *r = &q->r;
	const struct model_config *c = &e->m->c;
	char err[INFERD_ERR_LEN] = "";
	int32_t *ids = NULL;
	int n = 0;
	struct seq *s = NULL;
#define BAD(...) do { snprintf(err, sizeof err, __VA_ARGS__); goto bad; } while (0)
	if (r->prompt && r->n_ids)
		BAD("give either prompt ids or a text prompt, not both");
	if (r->prompt) {
		if (!e->m->tok)
			BAD("the model has no tokenizer: give prompt ids");
		if (tok_encode(e->m->tok, r->prompt, strlen(r->prompt), TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &ids, &n, err))
			goto bad;
	} else {
		ids = dup_mem(r->ids, (size_t)r->n_ids * sizeof *ids);
		n = r->n_ids;
	}
	if (n <= 0)
		BAD("empty prompt");
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= c->n_vocab)
			BAD("prompt token id %d at index %d is out of range (vocab size %d)", ids[i], i, c->n_vocab);
	if (r->max_tokens <= 0)
		BAD("max_tokens must be at least 1 (got %d)", r->max_tokens);
	if ((long)n + r->max_tokens > e->n_ctx)
		BAD("prompt of %d tokens plus max_tokens %d exceeds the context of %d tokens", n, r->max_tokens, e->n_ctx);
	if (!(r->temperature >= 0 && r->temperature <= 100))
		BAD("temperature must be between 0 and 100");
	if (!(r->top_p > 0 && r->top_p <= 1))
		BAD("top_p must be in (0, 1]");
	if (r->top_k < 0)
		BAD("top_k must be >= 0");
	if (!(r->min_p >= 0 && r->min_p <= 1))
		BAD("min_p must be in [0, 1]");
	if (!(r->repetition_penalty > 0 && r->repetition_penalty <= 10))
		BAD("repetition_penalty must be in (0, 10]");
	if (!(fabsf(r->presence_penalty) <= 2) || !(fabsf(r->frequency_penalty) <= 2))
		BAD("presence_penalty and frequency_penalty must be in [-2, 2]");
	if (r->top_logprobs < 0 || r->top_logprobs > INFERD_MAX_TOP_LOGPROBS)
		BAD("top_logprobs must be between 0 and %d", INFERD_MAX_TOP_LOGPROBS);
	if (!(r->timeout_s >= 0) || !(r->token_timeout_s >= 0) || !(r->queue_timeout_s >= 0))
		BAD("timeouts must be >= 0");
	for (int i = 0; i < r->n_logit_bias; i++)
		if (r->logit_bias[i].id < 0 || r->logit_bias[i].id >= c->n_vocab || !isfinite(r->logit_bias[i].bias))
			BAD("logit_bias for token %d is invalid (vocab size %d)", r->logit_bias[i].id, c->n_vocab);
	for (int i = 0; i < r->n_stop_ids; i++)
		if (r->stop_ids[i] < 0 || r->stop_ids[i] >= c->n_vocab)
			BAD("stop token id %d is out of range", r->stop_ids[i]);
	for (int i = 0; i < r->n_stop; i++)
		if (!r->stop[i][0])
			BAD("stop strings must not be empty");
	if (r->n_stop && !e->m->tok)
		BAD("stop strings need a tokenizer");
	if ((n + r->max_tokens + e->bs - 1) / e->bs > e->n_blocks)
		BAD("the request needs %d positions but the KV cache holds %d", n + r->max_tokens, e->n_blocks * e->bs);
	s = calloc(1, sizeof *s);
	if (!s || !(s->tok = malloc((size_t)(n + r->max_tokens) * sizeof *s->tok)))
		BAD("out of memory");
	if (e->n_act == e->cap_act) {
		int cap = e->cap_act ? e->cap_act * 2 : 64;
		struct seq **na = realloc(e->act, (size_t)cap * sizeof *na);
		if (!na)
			BAD("out of memory");
		e->act = na;
		e->cap_act = cap;
	}
	memcpy(s->tok, ids, (size_t)n * sizeof *ids);
	s->n_tok = s->n_prompt = n;
	s->cap_tok = n + r->max_tokens;
	s->q = q;
	s->arrival = e->arrival++;
	s->deadline = r->timeout_s > 0 ? q->t_submit + r->timeout_s : 0;
	if (e->m->tok)
		s->ts = tok_stream_new(e->m->tok, r->keep_special ? 0 : TOK_SKIP_SPECIAL);
	if (q->gram) {
		s->gm = grammar_matcher_new(q->gram);
		s->gbits = malloc(((size_t)c->n_vocab + 31) / 32 * sizeof *s->gbits);
		s->g_wait = q->trigger != NULL;
		if (q->trigger && e->m->tok)
			lazy_prompt(e, s);
		if (!s->gm || !s->gbits) {
			grammar_matcher_free(s->gm);
			free(s->gbits);
			tok_stream_free(s->ts);
			BAD("out of memory");
		}
	}
	e->act[e->n_act++] = s;
	free(ids);
	return;
bad:
#undef BAD
	free(ids);
	if (s)
		free(s->tok);
	free(s);
	done_event(e, NULL, q, INFERD_FINISH_ERROR, INFERD_EINVAL, "invalid request: %s", err);
}

/* The longest suffix of text that is a prefix of a stop string. */
static size_t stop_prefix(const struct inferd_request *r, const char *t, size_t n)
{
	size_t best = 0;
	for (int i = 0; i < r->n_stop; i++) {
		size_t sl = strlen(r->stop[i]);
		for (size_t k = sl - 1 < n ? sl - 1 : n; k > best; k--)
			if (memcmp(t + n - k, r->stop[i], k) == 0) {
				best = k;
				break;
			}
	}
	return best;
}

/* After sampling `tok`: emit its event; returns a finish reason or 0. */
static int emit_token(struct exec *e, struct seq *s, int32_t tok, float lp, int n_top, const int32_t *top_ids,
		      const float *top_lp)
{
	const struct inferd_request *r = &s->q->r;
	s->n_gen++;
	int eos = !r->ignore_eos && tok == e->m->c.eos_id;
	for (int i = 0; i < r->n_stop_ids; i++)
		eos |= tok == r->stop_ids[i];
	if (eos)
		return INFERD_FINISH_STOP;
	struct inferd_event ev = {.type = INFERD_EV_TOKEN, .token = tok, .logprob = lp, .n_top = n_top};
	memcpy(ev.top_ids, top_ids, (size_t)n_top * sizeof *top_ids);
	memcpy(ev.top_logprobs, top_lp, (size_t)n_top * sizeof *top_lp);
	char *piece = NULL, err[INFERD_ERR_LEN];
	size_t pl = 0;
	int finish = 0;
	const char *out = NULL;
	size_t out_len = 0;
	if (s->ts && tok_stream_push(s->ts, tok, &piece, &pl, err) == 0 && (pl || s->hold_len)) {
		char *buf = realloc(s->hold, s->hold_len + pl + 1);
		if (buf) {
			memcpy(buf + s->hold_len, piece, pl);
			s->hold = buf;
			s->hold_len += pl;
			buf[s->hold_len] = 0;
		}
		/* a complete stop string ends the generation; its text is never sent */
		size_t cut = s->hold_len;
		for (int i = 0; i < r->n_stop; i++) {
			const char *f = memmem(s->hold, s->hold_len, r->stop[i], strlen(r->stop[i]));
			if (f && (size_t)(f - s->hold) < cut) {
				cut = (size_t)(f - s->hold);
				finish = INFERD_FINISH_STOP;
			}
		}
		size_t keep = finish ? 0 : stop_prefix(r, s->hold, s->hold_len);
		out = s->hold;
		out_len = finish ? cut : s->hold_len - keep;
		if (chan_push(s->q, &ev, out, out_len) < 0) {
			free(piece);
			atomic_store(&s->q->cancel, 2);
			return 0;
		}
		memmove(s->hold, s->hold + out_len, s->hold_len - out_len);
		s->hold_len = finish ? 0 : s->hold_len - out_len;
	} else if (chan_push(s->q, &ev, NULL, 0) < 0) {
		atomic_store(&s->q->cancel, 2);
	}
	free(piece);
	if (!finish && s->n_gen >= r->max_tokens)
		finish = INFERD_FINISH_LENGTH;
	return finish;
}

/* Preempt one running sequence other than `keep` (lowest priority, then
 * newest); returns 0 if one was preempted. */
static int preempt(struct exec *e, struct seq *keep)
{
	int v = -1;
	for (int i = 0; i < e->n_act; i++) {
		struct seq *s = e->act[i];
		if (s == keep || !s->n_blocks)
			continue;
		if (v < 0 || s->q->r.priority < e->act[v]->q->r.priority ||
		    (s->q->r.priority == e->act[v]->q->r.priority && s->arrival > e->act[v]->arrival))
			v = i;
	}
	if (v < 0)
		return -1;
	seq_free_blocks(e, e->act[v]);
	e->act[v]->n_computed = 0; /* resume by recomputation */
	e->act[v]->chunk = 0;      /* and out of this step if it was in */
	e->cnt.preemptions++;
	return 0;
}

static int cmp_seq(const void *a, const void *b)
{
	const struct seq *x = *(const struct seq *const *)a, *y = *(const struct seq *const *)b;
	if (x->q->r.priority != y->q->r.priority)
		return x->q->r.priority > y->q->r.priority ? -1 : 1;
	return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

/* Plan one step; returns the number of tokens scheduled. */
static int schedule(struct exec *e)
{
	qsort(e->act, (size_t)e->n_act, sizeof *e->act, cmp_seq);
	int budget = e->step_tokens, n_seqs = 0;
	for (int i = 0; i < e->n_act; i++)
		e->act[i]->chunk = 0;
	/* by priority class, highest first (act is sorted): within a class,
	 * decoding sequences first (one token each), then prefill chunks in
	 * arrival order. An interactive prompt therefore never waits behind
	 * batch decodes: batch work gets the step's budget that interactive
	 * work leaves. */
	for (int c0 = 0, c1; c0 < e->n_act; c0 = c1) {
		int prio = e->act[c0]->q->r.priority;
		for (c1 = c0; c1 < e->n_act && e->act[c1]->q->r.priority == prio; c1++)
			;
		for (int i = c0; i < c1 && budget > 0 && n_seqs < e->max_seqs; i++) {
			struct seq *s = e->act[i];
			if (s->n_computed == 0 || s->n_tok - s->n_computed != 1)
				continue;
			while (seq_reserve(e, s, s->n_computed + 1) < 0)
				if (preempt(e, s) < 0)
					break;
			if (s->n_computed == 0 || s->n_blocks * e->bs < s->n_computed + 1)
				continue; /* preempted itself, or no room */
			s->chunk = 1;
			budget--;
			n_seqs++;
		}
		for (int i = c0; i < c1 && budget > 0 && n_seqs < e->max_seqs; i++) {
			struct seq *s = e->act[i];
			if (s->chunk || (s->n_computed > 0 && s->n_tok - s->n_computed == 1))
				continue;
			int pending = s->n_tok - s->n_computed;
			int chunk = pending < budget ? pending : budget;
			if (s->n_computed == 0 && s->n_blocks == 0) {
				if (s->n_tok > s->cap_blocks * e->bs) { /* room for the block table */
					int nb = (s->cap_tok + e->bs - 1) / e->bs;
					int32_t *bl = realloc(s->blocks, (size_t)nb * sizeof *bl);
					if (!bl)
						continue;
					s->blocks = bl;
					s->cap_blocks = nb;
				}
				take_prefix(e, s);
				pending = s->n_tok - s->n_computed;
				chunk = pending < budget ? pending : budget;
			}
			int avail = blocks_avail(e) - (s->n_blocks == 0 && s->q->r.priority < 0 ? e->reserve : 0);
			int room = (s->n_blocks + (avail > 0 ? avail : 0)) * e->bs - s->n_computed;
			if (chunk > room)
				chunk = room;
			if (chunk <= 0 || seq_reserve(e, s, s->n_computed + chunk) < 0)
				continue;
			s->chunk = chunk;
			budget -= chunk;
			n_seqs++;
		}
	}
	/* count again: a sequence scheduled above may have been preempted */
	int n = 0;
	for (int i = 0; i < e->n_act; i++)
		n += e->act[i]->chunk;
	return n;
}

/* A lazy constraint whose trigger ends the prompt (functionary v3.2's
 * generation prompt ends in ">>>") starts triggered. */
static void lazy_prompt(struct exec *e, struct seq *s)
{
	uint8_t tail[64], b[256];
	int n = 0, cap = (int)sizeof tail;
	for (int i = s->n_prompt - 1; i >= 0 && n < cap; i--) {
		int l = tok_token_bytes(e->m->tok, s->tok[i], b, sizeof b);
		if (l > (int)sizeof b)
			break; /* not a trigger's tail anyway */
		if (l <= 0)
			continue;
		int k = l < cap - n ? l : cap - n; /* the last k bytes of this token go in front */
		memmove(tail + k, tail, (size_t)n);
		memcpy(tail, b + l - k, (size_t)k);
		n += k;
	}
	size_t tl = strlen(s->q->trigger);
	if ((size_t)n >= tl && !memcmp(tail + n - tl, s->q->trigger, tl))
		s->g_wait = 0;
}

/* A lazy constraint after token `tok`: a complete grammar goes back to
 * waiting; a waiting one starts afresh when the output ends with its
 * trigger. */
static int lazy_step(struct exec *e, struct seq *s, int32_t tok)
{
	if (!s->g_wait) {
		if (grammar_matcher_complete(s->gm)) { /* the call is closed: free text again */
			s->g_wait = 1;
			s->gtail_len = 0;
		}
		return 0;
	}
	uint8_t b[256];
	int n = tok_token_bytes(e->m->tok, tok, b, sizeof b);
	if (n <= 0)
		return 0;
	int cap = (int)sizeof s->gtail;
	if (n >= cap) {
		memcpy(s->gtail, b + n - cap, (size_t)cap);
		s->gtail_len = cap;
	} else {
		int keep = s->gtail_len + n > cap ? cap - n : s->gtail_len;
		memmove(s->gtail, s->gtail + s->gtail_len - keep, (size_t)keep);
		memcpy(s->gtail + keep, b, (size_t)n);
		s->gtail_len = keep + n;
	}
	size_t tl = strlen(s->q->trigger);
	if ((size_t)s->gtail_len >= tl && !memcmp(s->gtail + s->gtail_len - tl, s->q->trigger, tl)) {
		struct grammar_matcher *gm = grammar_matcher_new(s->q->gram);
		if (!gm)
			return INFERD_ENOMEM;
		grammar_matcher_free(s->gm);
		s->gm = gm;
		s->g_wait = 0;
	}
	return 0;
}

/* Constrained decoding: -inf for every token the grammar does not allow
 * next (EOS and stop ids only once it is complete). Returns how many are
 * allowed, or a negative status. Per sequence, so batching changes
 * nothing. */
static int constrain(struct exec *e, struct seq *s, float *row, int V)
{
	const struct inferd_request *r = &s->q->r;
	int n = grammar_matcher_mask(s->gm, e->gv, s->gbits, V);
	if (n < 0)
		return n;
	if (grammar_matcher_complete(s->gm)) {
		int eos = e->m->c.eos_id;
		if (!r->ignore_eos && eos >= 0 && eos < V && !(s->gbits[eos >> 5] >> (eos & 31) & 1)) {
			s->gbits[eos >> 5] |= 1u << (eos & 31);
			n++;
		}
		for (int i = 0; i < r->n_stop_ids; i++) {
			int32_t t = r->stop_ids[i];
			if (t >= 0 && t < V && !(s->gbits[t >> 5] >> (t & 31) & 1)) {
				s->gbits[t >> 5] |= 1u << (t & 31);
				n++;
			}
		}
	}
	for (int i = 0; i < V; i += 32) {
		uint32_t w = s->gbits[i >> 5];
		if (w == 0xFFFFFFFFu)
			continue;
		for (int k = 0; k < 32 && i + k < V; k++)
			if (!(w >> k & 1))
				row[i + k] = -INFINITY;
	}
	return n;
}

static int run_step(struct exec *e, int n_tokens, char *err)
{
	struct inferd_model *m = e->m;
	int V = m->c.n_vocab, n_seq = 0, n_rows = 0;
	int32_t *ids = malloc((size_t)n_tokens * sizeof *ids), *pos = malloc((size_t)n_tokens * sizeof *pos);
	int32_t *seqi = malloc((size_t)n_tokens * sizeof *seqi);
	uint8_t *want = calloc((size_t)n_tokens, 1);
	const int32_t **tables = malloc((size_t)e->n_act * sizeof *tables);
	struct seq **ss = malloc((size_t)e->n_act * sizeof *ss);
	float *logits = NULL;
	struct sample_req *sr = NULL;
	int32_t *toks = NULL;
	float *lps = NULL, *top_lps = NULL;
	int32_t *top_idss = NULL;
	uint8_t *host_rows = NULL;
	int device_sampling = m->be->ops->sample != NULL;
	int rc = 0, t = 0, n_con = 0;
	if (!ids || !pos || !seqi || !want || !tables || !ss) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory for a step");
		goto out;
	}
	for (int i = 0; i < e->n_act; i++) {
		struct seq *s = e->act[i];
		s->row = -1;
		if (!s->chunk)
			continue;
		for (int k = 0; k < s->chunk; k++, t++) {
			ids[t] = s->tok[s->n_computed + k];
			pos[t] = s->n_computed + k;
			seqi[t] = n_seq;
		}
		if (s->n_computed + s->chunk == s->n_tok) {
			want[t - 1] = 1;
			s->row = n_rows++;
			n_con += g_on(s);
		}
		tables[n_seq] = s->blocks;
		ss[n_seq++] = s;
		s->scheduled = 1;
	}
	size_t nr = (size_t)(n_rows ? n_rows : 1);
	if (device_sampling) {
		sr = calloc(nr, sizeof *sr);
		toks = malloc(nr * sizeof *toks);
		lps = calloc(nr, sizeof *lps);
		top_idss = calloc(nr * INFERD_MAX_TOP_LOGPROBS, sizeof *top_idss);
		top_lps = calloc(nr * INFERD_MAX_TOP_LOGPROBS, sizeof *top_lps);
		if (!sr || !toks || !lps || !top_idss || !top_lps) {
			rc = seterr(err, INFERD_ENOMEM, "out of memory for sampling");
			goto out;
		}
		for (int i = 0; i < e->n_act; i++) {
			struct seq *s = e->act[i];
			if (s->row < 0)
				continue;
			const struct inferd_request *r = &s->q->r;
			sr[s->row] = (struct sample_req){.r = r, .tokens = s->tok, .n_tokens = s->n_tok,
							 .n_prompt = s->n_prompt, .step = (uint64_t)s->n_gen,
							 .tok = &toks[s->row], .logprob = r->logprobs ? &lps[s->row] : NULL,
							 .n_top = r->logprobs ? r->top_logprobs : 0,
							 .top_ids = top_idss + (size_t)s->row * INFERD_MAX_TOP_LOGPROBS,
							 .top_lp = top_lps + (size_t)s->row * INFERD_MAX_TOP_LOGPROBS};
		}
		/* constrained rows are masked and sampled on the host: their
		 * logits come back beside the device's choices (ignored for them) */
		if (n_con) {
			host_rows = calloc(nr, 1);
			logits = malloc(nr * (size_t)V * sizeof *logits);
			if (!host_rows || !logits) {
				rc = seterr(err, INFERD_ENOMEM, "out of memory for logits");
				goto out;
			}
			for (int i = 0; i < e->n_act; i++)
				if (e->act[i]->row >= 0 && g_on(e->act[i]))
					host_rows[e->act[i]->row] = 1;
		}
	} else if (!(logits = malloc(nr * (size_t)V * sizeof *logits))) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory for logits");
		goto out;
	}
	if (fault_hit(FAULT_AT_STEP, m->path, (long)e->cnt.steps + 1)) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory for a step (injected fault)");
		goto out;
	}
	struct batch b = {.n_tokens = n_tokens, .ids = ids, .pos = pos, .seq = seqi, .kv = e->kv, .block_table = tables,
			  .n_seq = n_seq, .want = want, .logits = logits, .sample = sr, .host_rows = host_rows};
	if ((rc = forward(m, &b, err)))
		goto out;
	e->cnt.steps++;
	for (int i = 0; i < n_seq; i++) {
		struct seq *s = ss[i];
		s->n_computed += s->chunk;
		e->cnt.tokens_prefilled += (uint64_t)(s->chunk > 1 ? s->chunk : 0);
		name_blocks(e, s);
	}
	double now = now_sec();
	for (int i = e->n_act - 1; i >= 0; i--) {
		struct seq *s = e->act[i];
		if (s->row < 0)
			continue;
		const struct inferd_request *r = &s->q->r;
		float lp = 0, top_lp[INFERD_MAX_TOP_LOGPROBS];
		int32_t top_ids[INFERD_MAX_TOP_LOGPROBS];
		int n_top = r->logprobs ? r->top_logprobs : 0;
		int32_t tok;
		if (g_on(s)) {
			float *row = logits + (size_t)s->row * V;
			int allowed = constrain(e, s, row, V);
			if (allowed == 0 && grammar_matcher_complete(s->gm)) {
				seq_end(e, i, INFERD_FINISH_STOP, 0, NULL); /* complete; EOS is ignored */
				continue;
			}
			if (allowed <= 0) {
				seq_end(e, i, INFERD_FINISH_ERROR, allowed < 0 ? allowed : INFERD_EINVAL,
					allowed < 0 ? "out of memory for the grammar's token mask"
						    : "no token of the vocabulary can continue the grammar");
				continue;
			}
			if (n_top > allowed) /* never report a masked (-inf) token */
				n_top = allowed;
			tok = sample_next(row, V, r, s->tok, s->n_tok, s->n_prompt, (uint64_t)s->n_gen, e->ss,
					  r->logprobs ? &lp : NULL, n_top, top_ids, top_lp);
		} else if (device_sampling) {
			tok = toks[s->row];
			lp = lps[s->row];
			memcpy(top_ids, top_idss + (size_t)s->row * INFERD_MAX_TOP_LOGPROBS, sizeof top_ids);
			memcpy(top_lp, top_lps + (size_t)s->row * INFERD_MAX_TOP_LOGPROBS, sizeof top_lp);
		} else {
			tok = sample_next(logits + (size_t)s->row * V, V, r, s->tok, s->n_tok, s->n_prompt, (uint64_t)s->n_gen,
					  e->ss, r->logprobs ? &lp : NULL, n_top, top_ids, top_lp);
		}
		s->tok[s->n_tok++] = tok;
		e->cnt.tokens_generated++;
		s->next_token_deadline = r->token_timeout_s > 0 ? now + r->token_timeout_s : 0;
		int is_end = tok == e->m->c.eos_id && !r->ignore_eos;
		for (int k = 0; k < r->n_stop_ids; k++)
			is_end |= tok == r->stop_ids[k];
		if (g_on(s) && !is_end && grammar_matcher_accept_token(s->gm, e->gv, tok) != 0) {
			/* cannot happen: the mask allowed only tokens it accepts */
			seq_end(e, i, INFERD_FINISH_ERROR, INFERD_EINVAL, "the grammar rejected a token its mask allowed");
			continue;
		}
		if (s->gm && s->q->trigger && !is_end && lazy_step(e, s, tok) != 0) {
			seq_end(e, i, INFERD_FINISH_ERROR, INFERD_ENOMEM, "out of memory for the grammar");
			continue;
		}
		int finish = emit_token(e, s, tok, lp, n_top, top_ids, top_lp);
		/* complete and nothing can follow: the output is done */
		if (!finish && g_on(s) && !s->q->trigger && grammar_matcher_complete(s->gm) &&
		    !grammar_matcher_can_continue(s->gm))
			finish = INFERD_FINISH_STOP;
		if (finish)
			seq_end(e, i, finish, 0, NULL);
	}
out:
	free(ids);
	free(pos);
	free(seqi);
	free(want);
	free(tables);
	free(ss);
	free(logits);
	free(sr);
	free(toks);
	free(lps);
	free(top_idss);
	free(top_lps);
	free(host_rows);
	return rc;
}

/* End cancelled and expired sequences. */
static void reap(struct exec *e)
{
	double now = now_sec();
	for (int i = e->n_act - 1; i >= 0; i--) {
		struct seq *s = e->act[i];
		int c = atomic_load(&s->q->cancel);
		if (c)
			seq_end(e, i, INFERD_FINISH_CANCELLED, 0,
				c == 2 ? "cancelled: the client did not read its events fast enough" : "cancelled");
		else if (!s->scheduled && s->q->r.queue_timeout_s > 0 && now >= s->q->t_submit + s->q->r.queue_timeout_s)
			seq_end(e, i, INFERD_FINISH_TIMEOUT, 0, "timeout: the request waited too long in the queue");
		else if (s->deadline && now >= s->deadline)
			seq_end(e, i, INFERD_FINISH_TIMEOUT, 0, "timeout: the request's deadline passed");
		else if (s->next_token_deadline && now >= s->next_token_deadline)
			seq_end(e, i, INFERD_FINISH_TIMEOUT, 0, "timeout: no token within the inter-token deadline");
	}
}

static void publish(struct exec *e, int state)
{
	pthread_mutex_lock(&e->mu);
	e->st.steps = e->cnt.steps;
	e->st.preemptions = e->cnt.preemptions;
	e->st.completed = e->cnt.completed;
	e->st.tokens_generated = e->cnt.tokens_generated;
	e->st.tokens_prefilled = e->cnt.tokens_prefilled;
	e->st.state = state;
	e->st.active = e->n_act;
	e->st.queued = e->q_n;
	e->st.kv_free = blocks_avail(e);
	e->st.kv_cached = e->n_lru;
	e->st.prefix_hit_tokens = e->cnt.prefix_hit_tokens;
	e->st.last_step_s = now_sec();
	pthread_mutex_unlock(&e->mu);
}

static void *exec_main(void *arg)
{
	struct exec *e = arg;
	char err[INFERD_ERR_LEN];
	for (;;) {
		pthread_mutex_lock(&e->mu);
		while (!e->q_head && !e->closing && e->n_act == 0) {
			e->st.state = e->failed ? INFERD_STATE_FAILED : INFERD_STATE_IDLE;
			pthread_cond_wait(&e->cv, &e->mu);
		}
		if (e->st.state == INFERD_STATE_IDLE) {
			/* work arrived: the heartbeat restarts now, so a first step
			 * that never ends is seen as a stall (not as idleness) */
			e->st.state = INFERD_STATE_RUNNING;
			e->st.last_step_s = now_sec();
		}
		inferd_req_t *q = e->q_head;
		e->q_head = e->q_tail = NULL;
		e->q_n = 0;
		int closing = e->closing;
		pthread_mutex_unlock(&e->mu);
		while (q) {
			inferd_req_t *next = q->next;
			if (closing)
				done_event(e, NULL, q, INFERD_FINISH_CANCELLED, INFERD_ECLOSED, "cancelled: the model is closing");
			else
				admit(e, q);
			q = next;
		}
		if (closing) {
			while (e->n_act)
				seq_end(e, e->n_act - 1, INFERD_FINISH_CANCELLED, INFERD_ECLOSED, "cancelled: the model is closing");
			break;
		}
		if (e->failed) { /* the device is lost: nothing runs any more */
			while (e->n_act)
				seq_end(e, e->n_act - 1, INFERD_FINISH_ERROR, INFERD_EDEVICE, e->fail_msg);
			publish(e, INFERD_STATE_FAILED);
			continue;
		}
		reap(e);
		int n = e->n_act ? schedule(e) : 0;
		int rc = n > 0 ? run_step(e, n, err) : 0;
		if (rc == INFERD_EDEVICE) {
			pthread_mutex_lock(&e->mu);
			e->failed = 1;
			snprintf(e->fail_msg, sizeof e->fail_msg, "%s", err);
			pthread_mutex_unlock(&e->mu);
			while (e->n_act)
				seq_end(e, e->n_act - 1, INFERD_FINISH_ERROR, INFERD_EDEVICE, e->fail_msg);
			publish(e, INFERD_STATE_FAILED);
			if (e->on_fatal)
				e->on_fatal(e->fatal_arg, e->fail_msg);
			continue;
		}
		if (rc) {
			/* the step failed as a whole: every sequence in it ends with the reason */
			for (int i = e->n_act - 1; i >= 0; i--)
				if (e->act[i]->chunk)
					seq_end(e, i, INFERD_FINISH_ERROR, rc, err);
		} else if (n == 0 && e->n_act) {
			/* nothing fits while nothing runs: cannot happen after admit's
			 * size check unless memory is gone; end the oldest waiting */
			int running = 0;
			for (int i = 0; i < e->n_act; i++)
				running |= e->act[i]->n_blocks > 0;
			if (!running)
				seq_end(e, 0, INFERD_FINISH_ERROR, INFERD_ENOMEM, "no KV blocks available");
		}
		publish(e, e->n_act ? INFERD_STATE_RUNNING : INFERD_STATE_IDLE);
	}
	publish(e, INFERD_STATE_STOPPED);
	return NULL;
}

static void exec_free_tables(struct exec *e)
{
	grammar_vocab_free(e->gv);
	pthread_mutex_destroy(&e->gv_mu);
	sample_scratch_free(e->ss);
	free(e->free_blocks);
	free(e->ref);
	free(e->bhash);
	free(e->bparent);
	free(e->btok);
	free(e->lru_prev);
	free(e->lru_next);
	free(e->hkey);
	free(e->hval);
}

int exec_start(inferd_model_t *m, const struct inferd_model_opts *o, char *err)
{
	struct exec *e = calloc(1, sizeof *e);
	if (!e)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	e->m = m;
	e->bs = o && o->kv_block > 0 ? o->kv_block : 16;
	int kv_tokens = o && o->kv_tokens > 0 ? o->kv_tokens : 8192;
	e->n_blocks = (kv_tokens + e->bs - 1) / e->bs;
	e->reserve = o && o->kv_reserve > 0 ? o->kv_reserve : e->n_blocks / 16;
	e->step_tokens = o && o->step_tokens > 0 ? o->step_tokens : 64;
	e->max_seqs = o && o->max_seqs > 0 ? o->max_seqs : 64;
	e->q_cap = o && o->queue > 0 ? o->queue : 1024;
	e->on_fatal = o ? o->on_fatal : NULL;
	e->fatal_arg = o ? o->fatal_arg : NULL;
	e->n_ctx = m->c.n_ctx_train < e->n_blocks * e->bs ? m->c.n_ctx_train : e->n_blocks * e->bs;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	pthread_mutex_init(&e->gv_mu, NULL);
	int rc = 0;
	e->free_blocks = malloc((size_t)e->n_blocks * sizeof *e->free_blocks);
	e->ss = sample_scratch_new(m->c.n_vocab);
	e->ref = calloc((size_t)e->n_blocks, sizeof *e->ref);
	e->bhash = calloc((size_t)e->n_blocks, sizeof *e->bhash);
	e->bparent = calloc((size_t)e->n_blocks, sizeof *e->bparent);
	e->btok = malloc((size_t)e->n_blocks * (size_t)e->bs * sizeof *e->btok);
	e->lru_prev = malloc((size_t)e->n_blocks * sizeof *e->lru_prev);
	e->lru_next = malloc((size_t)e->n_blocks * sizeof *e->lru_next);
	for (e->hcap = 16; e->hcap < (uint32_t)e->n_blocks * 2; e->hcap *= 2)
		;
	e->hkey = calloc(e->hcap, sizeof *e->hkey);
	e->hval = calloc(e->hcap, sizeof *e->hval);
	e->lru_head = e->lru_tail = -1;
	if (!e->free_blocks || !e->ss || !e->ref || !e->bhash || !e->bparent || !e->btok || !e->lru_prev || !e->lru_next ||
	    !e->hkey || !e->hval) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < e->n_blocks; i++)
		e->free_blocks[i] = e->n_blocks - 1 - i;
	e->n_free = e->n_blocks;
	if (!(e->kv = m->be->ops->kv_new(m->be, e->n_blocks, e->bs, err))) {
		rc = INFERD_ENOMEM;
		goto fail;
	}
	e->st.kv_blocks = e->n_blocks;
	e->st.kv_free = e->n_free;
	e->st.last_step_s = now_sec();
	if (pthread_create(&e->th, NULL, exec_main, e) != 0) {
		rc = seterr(err, INFERD_ENOMEM, "cannot start the executor thread");
		goto fail;
	}
	e->started = 1;
	m->ex = e;
	return 0;
fail:
	if (e->kv)
		m->be->ops->kv_free(m->be, e->kv);
	exec_free_tables(e);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
	return rc;
}

void exec_stop(inferd_model_t *m)
{
	struct exec *e = m->ex;
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->closing = 1;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (e->started)
		pthread_join(e->th, NULL);
	m->be->ops->kv_free(m->be, e->kv);
	exec_free_tables(e);
	free(e->act);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
	m->ex = NULL;
}

int inferd_submit(inferd_model_t *m, const struct inferd_request *r, inferd_req_t **out, char *err)
{
	*out = NULL;
	struct exec *e = m->ex;
	if (!r)
		return seterr(err, INFERD_EINVAL, "no request");
	if (r->n_ids < 0 || (r->n_ids && !r->ids) || r->n_stop < 0 || r->n_stop > 16 || r->n_stop_ids < 0 ||
	    r->n_logit_bias < 0 || (r->n_stop && !r->stop) || (r->n_stop_ids && !r->stop_ids) ||
	    (r->n_logit_bias && !r->logit_bias))
		return seterr(err, INFERD_EINVAL, "malformed request structure (counts and arrays disagree)");
	struct grammar *gram = NULL;
	if (r->grammar_kind) {
		int grc;
		if (!m->tok)
			return seterr(err, INFERD_EINVAL, "constrained decoding needs a model with a tokenizer");
		if ((grc = grammar_compile(r->grammar_kind, r->grammar, &gram, err)))
			return grc;
		pthread_mutex_lock(&e->gv_mu);
		grc = e->gv ? 0 : grammar_vocab_new(m->tok, &e->gv, err);
		pthread_mutex_unlock(&e->gv_mu);
		if (!grc && (grc = grammar_vocab_check(gram, e->gv, err)) && r->grammar_trigger && *r->grammar_trigger) {
			grammar_free(gram); /* a lazy constraint (strict tools under auto) is best effort: none */
			gram = NULL;
			grc = 0;
		}
		if (grc) {
			grammar_free(gram);
			return grc;
		}
	}
	inferd_req_t *q = calloc(1, sizeof *q);
	if (!q) {
		grammar_free(gram);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	q->gram = gram;
	if (gram && r->grammar_trigger && *r->grammar_trigger) {
		if (strlen(r->grammar_trigger) >= 64) {
			grammar_free(gram);
			free(q);
			return seterr(err, INFERD_EINVAL, "the grammar trigger is longer than 63 bytes");
		}
		q->trigger = strdup(r->grammar_trigger);
	}
	atomic_init(&q->refs, 2);
	atomic_init(&q->cancel, 0);
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* inferd_req_next's deadlines */
	pthread_cond_init(&q->cv, &ca);
	pthread_condattr_destroy(&ca);
	q->r = *r;
	q->r.grammar_kind = q->r.grammar = q->r.grammar_trigger = NULL; /* compiled into q->gram */
	q->r.ids = dup_mem(r->ids, (size_t)r->n_ids * sizeof *r->ids);
	q->r.prompt = r->prompt ? strdup(r->prompt) : NULL;
	q->r.stop_ids = dup_mem(r->stop_ids, (size_t)r->n_stop_ids * sizeof *r->stop_ids);
	q->r.logit_bias = dup_mem(r->logit_bias, (size_t)r->n_logit_bias * sizeof *r->logit_bias);
	q->r.stop = r->n_stop ? calloc((size_t)r->n_stop, sizeof(char *)) : NULL;
	for (int i = 0; i < r->n_stop && q->r.stop; i++)
		((const char **)q->r.stop)[i] = strdup(r->stop[i] ? r->stop[i] : "");
	q->ring = malloc(CHAN_CAP * sizeof *q->ring);
	q->t_submit = now_sec();
	if (!q->ring || (r->n_ids && !q->r.ids) || (r->prompt && !q->r.prompt) || (r->n_stop && !q->r.stop)) {
		atomic_store(&q->refs, 1);
		req_unref(q);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&e->mu);
	if (e->closing || e->failed || e->q_n >= e->q_cap) {
		int closing = e->closing, failed = e->failed;
		char msg[INFERD_ERR_LEN];
		snprintf(msg, sizeof msg, "%s", e->fail_msg);
		pthread_mutex_unlock(&e->mu);
		atomic_store(&q->refs, 1);
		req_unref(q);
		return closing ? seterr(err, INFERD_ECLOSED, "the model is closing")
		       : failed ? seterr(err, INFERD_EDEVICE, "%s", msg)
				: seterr(err, INFERD_EAGAIN, "the model's queue is full (%d requests waiting)", e->q_cap);
	}
	if (e->q_tail)
		e->q_tail->next = q;
	else
		e->q_head = q;
	e->q_tail = q;
	e->q_n++;
	e->st.queued = e->q_n;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	*out = q;
	return 0;
}

void inferd_model_stats(inferd_model_t *m, struct inferd_model_stats *st)
{
	struct exec *e = m->ex;
	memset(st, 0, sizeof *st);
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	*st = e->st;
	pthread_mutex_unlock(&e->mu);
}
