/*
 * forward.c — the architecture, written once over backend ops (backend.h).
 * Options in the config select what differs between llama, qwen2 and
 * qwen3: q/k/v bias, per-head q/k RMSNorm, tied output head, rope style.
 *
 * Per layer (x: [n][n_embd] float32 residual stream):
 *   h = rmsnorm(x) ; q, k, v = h·Wq, h·Wk, h·Wv (+ bias)
 *   q, k = rmsnorm per head (qwen3) ; rope(q, k)
 *   a = attention(q, cache(k, v)) ; x += a·Wo
 *   h = rmsnorm(x) ; x += (silu(h·Wgate) * h·Wup)·Wdown
 * then logits = rmsnorm(x)·Woutput for the rows the batch wants, read back
 * to the host (written there in place when the backend's buffers are host
 * memory: backend.host_mem) or sampled on the device (backend.h); with device sampling,
 * the rows in b->host_rows (constrained sequences) are also read back.
 * A backend may run a norm with the products after it, or rope with
 * attention, as one op (norm_qkv, norm_gate_up, rope_attention, matmul_add:
 * backend.h); without those ops, or where one declines a step (returns 0),
 * forward runs the steps one by one: the only copy of that sequence.
 */
#include "backend.h"

#include <stdlib.h>

/* x += in·W, fused when the backend can */
static void matmul_add(struct backend *be, float *x, const struct tensor *w, const float *in, int n, float *tmp)
{
	if (be->ops->matmul_add && be->ops->matmul_add(be, x, w, in, n))
		return;
	be->ops->matmul(be, tmp, w, NULL, in, n);
	be->ops->add(be, x, tmp, (int64_t)n * w->ne[1]);
}

int forward(struct inferd_model *m, const struct batch *b, char *err)
{
	struct backend *be = m->be;
	const struct backend_ops *op = be->ops;
	const struct model_config *c = &m->c;
	int n = b->n_tokens, E = c->n_embd, hd = c->head_dim;
	int qd = c->n_head * hd, kvd = c->n_head_kv * hd, F = c->n_ff;
	float eps = (float)c->norm_eps;
	int rc = 0;
	int n_out = 0;
	/* the step's descriptor first: a backend may carve the step's buffers
	 * from an arena sized for it */
	if ((rc = op->begin_step(be, b, err)) != 0)
		return rc;
	int32_t *rows = malloc((size_t)(n ? n : 1) * sizeof *rows);
	float *x = op->alloc(be, (size_t)n * E), *h = op->alloc(be, (size_t)n * (E > qd ? E : qd));
	float *q = op->alloc(be, (size_t)n * qd), *k = op->alloc(be, (size_t)n * kvd);
	float *v = op->alloc(be, (size_t)n * kvd), *att = op->alloc(be, (size_t)n * qd);
	float *g = op->alloc(be, (size_t)n * F), *u = op->alloc(be, (size_t)n * F);
	float *lg = NULL;
	int direct = be->host_mem && b->logits && !(b->sample && op->sample); /* logits into b->logits */
	if (!rows || !x || !h || !q || !k || !v || !att || !g || !u) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory for a step of %d tokens", n);
		goto out;
	}
	for (int t = 0; t < n; t++)
		if (b->want[t])
			rows[n_out++] = t;
	if (n_out && !(lg = direct ? b->logits : op->alloc(be, (size_t)n_out * c->n_vocab))) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory for %d rows of logits", n_out);
		goto out;
	}
	op->get_rows(be, x, m->tok_embd, b->ids, n);
	for (int l = 0; l < c->n_layer; l++) {
		const struct layer_weights *w = &m->layers[l];
		if (!op->norm_qkv || !op->norm_qkv(be, q, k, v, x, w, n, eps)) {
			op->rmsnorm(be, h, x, w->attn_norm, n, E, eps);
			op->matmul(be, q, w->wq, w->bq, h, n);
			op->matmul(be, k, w->wk, w->bk, h, n);
			op->matmul(be, v, w->wv, w->bv, h, n);
		}
		if (c->qk_norm) {
			op->rmsnorm(be, q, q, w->q_norm, n * c->n_head, hd, eps);
			op->rmsnorm(be, k, k, w->k_norm, n * c->n_head_kv, hd, eps);
		}
		if (op->rope_attention) {
			op->rope_attention(be, att, q, k, v, b, l);
		} else {
			op->rope(be, q, n, c->n_head);
			op->rope(be, k, n, c->n_head_kv);
			op->attention(be, att, q, k, v, b, l);
		}
		matmul_add(be, x, w->wo, att, n, h);
		if (!op->norm_gate_up || !op->norm_gate_up(be, g, x, w, n, eps)) {
			op->rmsnorm(be, h, x, w->ffn_norm, n, E, eps);
			op->matmul(be, g, w->w_gate, NULL, h, n);
			op->matmul(be, u, w->w_up, NULL, h, n);
			op->swiglu(be, g, g, u, (int64_t)n * F);
		}
		matmul_add(be, x, w->w_down, g, n, h);
	}
	if (n_out) {
		op->gather(be, h, x, rows, n_out, E);
		op->rmsnorm(be, h, h, m->out_norm, n_out, E, eps);
		op->matmul(be, lg, m->output, NULL, h, n_out);
		if (b->sample && op->sample) {
			for (int j = 0; b->host_rows && b->logits && j < n_out; j++)
				if (b->host_rows[j])
					op->read(be, b->logits + (size_t)j * c->n_vocab, lg + (size_t)j * c->n_vocab,
						 (size_t)c->n_vocab);
			rc = op->sample(be, lg, n_out, b->sample, err);
		} else if (!direct) {
			op->read(be, b->logits, lg, (size_t)n_out * c->n_vocab);
		}
	}
	if (!rc && op->sync)
		rc = op->sync(be, err);
out:
	free(rows);
	float *bufs[] = {x, h, q, k, v, att, g, u, direct ? NULL : lg};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		if (bufs[i])
			op->dealloc(be, bufs[i]);
	return rc;
}
