/*
 * test_cuda.c — the CUDA backend against the references and against the
 * CPU backend, on a real GPU. Without one (or in a build without CUDA) it
 * checks the clear "no CUDA" errors and prints SKIP: `make CUDA=1 test-gpu`
 * runs it where a GPU is.
 *
 *  1. fixtures: logits of every checkpoint with a reference.json within
 *     1e-4 of transformers with gpu_exact (float32 everywhere), within 2e-2
 *     in the default mode (16-bit activations on tensor cores); greedy ids
 *     equal where the margin is clear;
 *  2. op by op, CUDA against CPU on the same weights, for every weight type
 *     (generated f32/f16/bf16/q8_0/q4_0/q4_k_m/q5_k_m/q6_k models, 896-wide
 *     K mixes, llama.cpp's quantized files): dequantized rows and rope
 *     bitwise equal, products, norms, attention within stated bounds; end
 *     to end logits; default-mode decode (8-bit activations) within 2e-2;
 *  3. batch invariance: one sequence alone and inside batches of 1 to 64
 *     sequences (decode and prefill mixed, blocks scattered): logits within
 *     the bound, argmax equal wherever the top-1 margin exceeds delta;
 *     seeded sampling through the engine gives the same tokens alone and
 *     among 63 others; device sampling equals host sampling (greedy,
 *     logit_bias, logprobs);
 *  4. two models driven from two threads at once on one GPU equal each alone;
 *  5. faults: a load that does not fit (budget, and a real out-of-memory)
 *     fails with a clear message while another model keeps serving; an
 *     injected illegal address (in a child process: it poisons the context)
 *     ends every request with the CUDA error text, calls on_fatal, marks the
 *     model failed and refuses new requests; through the real server
 *     (inferd-faults): a 503 and exit status 3, restarts and quarantine under
 *     the supervisor, the --gpu-memory budget, a second server on the same
 *     GPU refused.
 * INFERD_CUDA_QUICK=1 (memcheck) or 2 (racecheck) shrinks the loops and
 * skips the injected faults (memcheck would report them, as it should).
 */
#include "testlib.h"
#include "inferd.h"

#include <stdio.h>
#include <string.h>

/* Asking for CUDA where it cannot run is a clear error, not a crash. */
static void no_cuda_error(const char *want)
{
	char path[600], err[INFERD_ERR_LEN];
	snprintf(path, sizeof path, "%s/qwen2-tiny-f16", t_fixtures());
	struct inferd_model_opts o = {.device = "cuda:0"};
	inferd_model_t *m = NULL;
	int rc = inferd_model_open(path, &o, &m, err);
	printf("  --device cuda:0 here: rc %d: %s\n", rc, rc ? err : "");
	CHECK(rc == INFERD_EUNSUPPORTED && strstr(err, want), "device cuda:0 without a GPU: rc %d: %s", rc, err);
	char id[128];
	CHECK(inferd_device_id("cpu", id, sizeof id, err) == 0 && !strcmp(id, "cpu"), "device id of cpu: %s", id);
	rc = inferd_device_id("cuda:0", id, sizeof id, err);
	CHECK(rc == INFERD_EUNSUPPORTED && strstr(err, want), "device id of cuda:0 here: rc %d: %s", rc, err);
	o.device = "tpu";
	rc = inferd_model_open(path, &o, &m, err);
	CHECK(rc == INFERD_EINVAL && strstr(err, "unknown device \"tpu\""), "device tpu: rc %d: %s", rc, err);
	if (!rc)
		inferd_model_close(m);
}

#ifndef INFERD_CUDA
int main(void)
{
	printf("SKIP test_cuda: this build has no CUDA backend (run make CUDA=1 test-gpu)\n");
	no_cuda_error("no CUDA backend");
	return t_done("test_cuda");
}
#else

#include "backend.h"
#include "dtype.h"
#include "model.h"
#include "cuda/cuda_backend.h"

#include <arpa/inet.h>
#include <cuda_runtime_api.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BATCH_BOUND 1e-5 /* relative, per row: cuBLAS (>= 32 tokens) vs the warp kernels */
#define DELTA 1e-3       /* top-1 margin above which ids must agree */

static int quick;        /* 1: memcheck (smaller loops), 2: racecheck (smaller still) */
#define NTOK(n) (quick >= 2 ? 6 : (n))

static uint64_t rng = 0x1234567;
static float frand(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((rng >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

static int exact = 1; /* float32 products everywhere (gpu_exact) */

static inferd_model_t *open_on(const char *path, const char *dev, char *err)
{
	/* the CPU model is the float32 reference (cpu_exact) */
	struct inferd_model_opts o = {.device = dev, .kv_tokens = 4096, .n_threads = 2, .gpu_exact = exact, .cpu_exact = 1, .kv_dtype = "f32"};
	inferd_model_t *m = NULL;
	if (inferd_model_open(path, &o, &m, err))
		return NULL;
	return m;
}

/* ---- 1. fixtures ---- */
static void fixtures(double bound)
{
	const char *fx = t_fixtures();
	DIR *d = opendir(fx);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		char dir[512], p[600], err[INFERD_ERR_LEN];
		snprintf(dir, sizeof dir, "%s/%s", fx, de->d_name);
		snprintf(p, sizeof p, "%s/reference.json", dir);
		if (de->d_name[0] == '.' || access(p, R_OK))
			continue;
		struct t_ref r;
		if (t_ref_load(dir, &r)) {
			CHECK(0, "cannot load %s", p);
			continue;
		}
		inferd_model_t *m = open_on(dir, "cuda:0", err);
		CHECK(m, "%s: %s", de->d_name, err);
		for (int c = 0; m && c < (quick >= 2 ? 1 : r.n_cases); c++) {
			int ni;
			int32_t *ids = t_ref_ids(&r, c, &ni);
			float *lg = malloc((size_t)ni * r.vocab * sizeof *lg);
			inferd_seq_t *s;
			CHECK(inferd_seq_new(m, ni, &s, err) == 0, "%s", err);
			CHECK(inferd_seq_eval(m, s, ids, ni, lg, 1, err) == 0, "%s: %s", de->d_name, err);
			double e = t_rel_err(lg, r.logits + r.case_off[c], (size_t)ni * r.vocab);
			json_t *cs = t_ref_case(&r, c), *in = json_object_get(cs, "input_ids");
			json_t *out = json_object_get(cs, "output_ids");
			double margin = json_real_value(json_object_get(cs, "min_margin_generated"));
			int np = (int)json_array_size(in), greedy_ok = 1;
			for (int i = np - 1; i < ni; i++) {
				const float *row = lg + (size_t)i * r.vocab;
				int a = 0;
				for (int v = 1; v < r.vocab; v++)
					if (row[v] > row[a])
						a = v;
				greedy_ok &= a == (int)json_integer_value(json_array_get(out, (size_t)(i - np + 1)));
			}
			printf("  fixture %-18s case %d  %s rel err %.3e (bound %.0e)  greedy %s (margin %.3f)\n", de->d_name,
			       c, exact ? "f32  " : "mixed", e, bound, greedy_ok ? "matches" : "differs", margin);
			CHECK(e <= bound, "%s case %d: relative error %.3e", de->d_name, c, e);
			if (margin > (exact ? 0.01 : 0.1))
				CHECK(greedy_ok, "%s case %d: greedy ids differ (margin %.3f)", de->d_name, c, margin);
			inferd_seq_free(s);
			free(lg);
			free(ids);
		}
		inferd_model_close(m);
		t_ref_free(&r);
		n++;
	}
	if (d)
		closedir(d);
	CHECK(n >= 4, "only %d fixtures with a reference", n);
}

/* ---- 2. op by op ---- */
static float *dev_copy(struct backend *be, const float *h, size_t n)
{
	char err[INFERD_ERR_LEN];
	float *d = be->ops->alloc(be, n);
	be->ops->sync(be, err); /* the stream-ordered allocation is ready */
	CHECK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess, "cudaMemcpy");
	return d;
}

static void host_copy(struct backend *be, float *h, const float *d, size_t n) { be->ops->read(be, h, d, n); }

static double max_abs_diff(const float *a, const float *b, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= m))
			m = d;
	}
	return m;
}

/* one op on both backends; inputs copied to each */
struct pair {
	struct backend *cpu, *gpu;
};

static void op_matmul(struct pair *p, const struct tensor *w, const struct tensor *bias, int n, const char *what)
{
	int cols = (int)w->ne[0], rows = (int)w->ne[1];
	float *x = malloc((size_t)n * cols * sizeof *x), *oc = malloc((size_t)n * rows * sizeof *oc);
	float *og = malloc((size_t)n * rows * sizeof *og);
	for (size_t i = 0; i < (size_t)n * cols; i++)
		x[i] = frand();
	p->cpu->ops->matmul(p->cpu, oc, w, bias, x, n);
	float *dx = dev_copy(p->gpu, x, (size_t)n * cols), *dout = p->gpu->ops->alloc(p->gpu, (size_t)n * rows);
	p->gpu->ops->matmul(p->gpu, dout, w, bias, dx, n);
	host_copy(p->gpu, og, dout, (size_t)n * rows);
	char err[INFERD_ERR_LEN];
	CHECK(p->gpu->ops->sync(p->gpu, err) == 0, "%s", err);
	double e = t_rel_err(og, oc, (size_t)n * rows);
	const struct dtype_info *di = dtype_get((uint32_t)w->type);
	printf("  op matmul %-5s %-28s %5d x %-5d n=%-3d rel err %.2e (bound 1e-5)\n", di->name, w->name, rows, cols, n,
	       e);
	CHECK(e <= 1e-5, "%s: matmul %s (%s) n=%d rel err %.3e", what, w->name, di->name, n, e);
	p->gpu->ops->dealloc(p->gpu, dx);
	p->gpu->ops->dealloc(p->gpu, dout);
	free(x);
	free(oc);
	free(og);
}

static int fused_ran; /* fused ops that did not decline, over all models */

static void ops_model(const char *path, const char *what)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *m = open_on(path, "cpu", err);
	CHECK(m, "%s: %s", what, err);
	if (!m)
		return;
	struct pair p = {m->be, NULL};
	CHECK(cuda_backend_new(m, 0, 0, 1, &p.gpu, err) == 0, "%s: %s", what, err);
	if (!p.gpu) {
		inferd_model_close(m);
		return;
	}
	const struct model_config *c = &m->c;
	/* get_rows: bitwise */
	int32_t ids[5] = {0, 1, c->n_vocab - 1, c->n_vocab / 2, 3};
	size_t ne = (size_t)5 * c->n_embd;
	float *a = malloc(ne * sizeof *a), *b = malloc(ne * sizeof *b);
	p.cpu->ops->get_rows(p.cpu, a, m->tok_embd, ids, 5);
	float *d = p.gpu->ops->alloc(p.gpu, ne);
	p.gpu->ops->get_rows(p.gpu, d, m->tok_embd, ids, 5);
	host_copy(p.gpu, b, d, ne);
	CHECK(memcmp(a, b, ne * sizeof *a) == 0, "%s: get_rows differs (max %.3e)", what, max_abs_diff(a, b, ne));
	printf("  op get_rows %-5s bitwise %s\n", dtype_get((uint32_t)m->tok_embd->type)->name,
	       memcmp(a, b, ne * sizeof *a) ? "DIFFERENT" : "equal");
	/* rmsnorm */
	for (size_t i = 0; i < ne; i++)
		a[i] = frand();
	float *dx = dev_copy(p.gpu, a, ne), *ref = malloc(ne * sizeof *ref);
	p.cpu->ops->rmsnorm(p.cpu, ref, a, m->layers[0].attn_norm, 5, c->n_embd, (float)c->norm_eps);
	p.gpu->ops->rmsnorm(p.gpu, dx, dx, m->layers[0].attn_norm, 5, c->n_embd, (float)c->norm_eps);
	host_copy(p.gpu, b, dx, ne);
	double e = t_rel_err(b, ref, ne);
	printf("  op rmsnorm rel err %.2e (bound 1e-6)\n", e);
	CHECK(e <= 1e-6, "%s: rmsnorm %.3e", what, e);
	p.gpu->ops->dealloc(p.gpu, dx);
	p.gpu->ops->dealloc(p.gpu, d);
	/* every weight of layer 0 and the output head, decode (warp kernel) and prefill (cuBLAS) sizes */
	const struct layer_weights *w = &m->layers[0];
	const struct tensor *ws[] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down, m->output};
	const struct tensor *bs[] = {w->bq, w->bk, w->bv, NULL, NULL, NULL, NULL, NULL};
	for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
		op_matmul(&p, ws[i], bs[i], 3, what);
		if (!quick)
			op_matmul(&p, ws[i], bs[i], 70, what); /* the cuBLAS path */
	}
	/* the fused product + residual add against matmul then add on the CPU */
	{
		const struct tensor *wo = m->layers[0].wo;
		int cols = (int)wo->ne[0], rows = (int)wo->ne[1], nn = 3;
		float *in = malloc((size_t)nn * cols * sizeof *in), *xc = malloc((size_t)nn * rows * sizeof *xc);
		float *tmp = malloc((size_t)nn * rows * sizeof *tmp), *xg = malloc((size_t)nn * rows * sizeof *xg);
		for (size_t i = 0; i < (size_t)nn * cols; i++)
			in[i] = frand();
		for (size_t i = 0; i < (size_t)nn * rows; i++)
			xc[i] = frand();
		float *din = dev_copy(p.gpu, in, (size_t)nn * cols), *dres = dev_copy(p.gpu, xc, (size_t)nn * rows);
		float *dt = p.gpu->ops->alloc(p.gpu, (size_t)nn * rows);
		p.cpu->ops->matmul(p.cpu, tmp, wo, NULL, in, nn);
		p.cpu->ops->add(p.cpu, xc, tmp, (int64_t)nn * rows);
		if (!p.gpu->ops->matmul_add(p.gpu, dres, wo, din, nn)) { /* declined: what forward.c does */
			printf("  op matmul_add %s declined %d tokens\n", dtype_get((uint32_t)wo->type)->name, nn);
			p.gpu->ops->matmul(p.gpu, dt, wo, NULL, din, nn);
			p.gpu->ops->add(p.gpu, dres, dt, (int64_t)nn * rows);
		}
		host_copy(p.gpu, xg, dres, (size_t)nn * rows);
		double e2 = t_rel_err(xg, xc, (size_t)nn * rows);
		printf("  op matmul_add %s rel err %.2e (bound 1e-5)\n", dtype_get((uint32_t)wo->type)->name, e2);
		CHECK(e2 <= 1e-5, "%s: matmul_add %.3e", what, e2);
		p.gpu->ops->dealloc(p.gpu, din);
		p.gpu->ops->dealloc(p.gpu, dres);
		p.gpu->ops->dealloc(p.gpu, dt);
		free(in);
		free(xc);
		free(tmp);
		free(xg);
	}
	/* the fused ops (rmsnorm + q/k/v, rmsnorm + gate/up + swiglu) bitwise
	 * equal the ops one by one, at 1 token and at 7 */
	for (int nn = 1; nn <= 7; nn += 6) {
		int E = c->n_embd, F = c->n_ff, qd = c->n_head * c->head_dim, kd = c->n_head_kv * c->head_dim;
		float eps = (float)c->norm_eps;
		size_t sz[] = {(size_t)nn * E, (size_t)nn * qd, (size_t)nn * kd, (size_t)nn * kd, (size_t)nn * F};
		size_t big = 0;
		for (int i = 0; i < 5; i++)
			big = sz[i] > big ? sz[i] : big;
		float *hx = malloc(sz[0] * sizeof *hx), *f1 = malloc(big * sizeof *f1), *f2 = malloc(big * sizeof *f2);
		for (size_t i = 0; i < sz[0]; i++)
			hx[i] = frand();
		float *dxx = dev_copy(p.gpu, hx, sz[0]), *dh = p.gpu->ops->alloc(p.gpu, sz[0]);
		float *o1[5], *o2[5];
		for (int i = 1; i < 5; i++) {
			o1[i] = p.gpu->ops->alloc(p.gpu, sz[i]);
			o2[i] = p.gpu->ops->alloc(p.gpu, sz[i]);
		}
		/* an op may decline (mixed weight types, say): o1 then stays
		 * unwritten, forward.c would run the ops one by one, and there is
		 * nothing to compare */
		int fq = p.gpu->ops->norm_qkv(p.gpu, o1[1], o1[2], o1[3], dxx, w, nn, eps);
		p.gpu->ops->rmsnorm(p.gpu, dh, dxx, w->attn_norm, nn, E, eps);
		p.gpu->ops->matmul(p.gpu, o2[1], w->wq, w->bq, dh, nn);
		p.gpu->ops->matmul(p.gpu, o2[2], w->wk, w->bk, dh, nn);
		p.gpu->ops->matmul(p.gpu, o2[3], w->wv, w->bv, dh, nn);
		int fg = p.gpu->ops->norm_gate_up(p.gpu, o1[4], dxx, w, nn, eps);
		fused_ran += fq + fg;
		if (!fq || !fg)
			printf("  %s declined %d tokens:%s%s\n", what, nn, fq ? "" : " norm_qkv", fg ? "" : " norm_gate_up");
		int same = 1;
		for (int i = 1; i < 5; i++) {
			if (i == 4) { /* gate/up, one by one */
				p.gpu->ops->rmsnorm(p.gpu, dh, dxx, w->ffn_norm, nn, E, eps);
				p.gpu->ops->matmul(p.gpu, o2[4], w->w_gate, NULL, dh, nn);
				float *du = p.gpu->ops->alloc(p.gpu, sz[4]);
				p.gpu->ops->matmul(p.gpu, du, w->w_up, NULL, dh, nn);
				p.gpu->ops->swiglu(p.gpu, o2[4], o2[4], du, (int64_t)sz[4]);
				p.gpu->ops->dealloc(p.gpu, du);
			}
			if (i < 4 ? !fq : !fg)
				continue;
			host_copy(p.gpu, f1, o1[i], sz[i]);
			host_copy(p.gpu, f2, o2[i], sz[i]);
			if (memcmp(f1, f2, sz[i] * sizeof *f1)) {
				same = 0;
				printf("  fused op output %d at n=%d differs (max %.3e)\n", i, nn, max_abs_diff(f1, f2, sz[i]));
			}
		}
		printf("  op norm_qkv, norm_gate_up (n=%d) bitwise %s\n", nn, same ? "equal" : "DIFFERENT");
		CHECK(same, "%s: fused ops differ from the ops one by one at n=%d", what, nn);
		CHECK(p.gpu->ops->sync(p.gpu, err) == 0, "%s", err);
		p.gpu->ops->dealloc(p.gpu, dxx);
		p.gpu->ops->dealloc(p.gpu, dh);
		for (int i = 1; i < 5; i++) {
			p.gpu->ops->dealloc(p.gpu, o1[i]);
			p.gpu->ops->dealloc(p.gpu, o2[i]);
		}
		free(hx);
		free(f1);
		free(f2);
	}
	/* rope, swiglu, add, attention over a step of two sequences */
	int n = 7, hd = c->head_dim, H = c->n_head, KV = c->n_head_kv, kvd = KV * hd;
	int32_t pos[7] = {0, 1, 2, 3, 0, 1, 2}, seq[7] = {0, 0, 0, 0, 1, 1, 1};
	int32_t t0[2] = {5, 2}, t1[2] = {0, 7};
	const int32_t *tables[2] = {t0, t1};
	uint8_t want[7] = {0};
	struct batch bt = {.n_tokens = n, .pos = pos, .seq = seq, .block_table = tables, .n_seq = 2, .want = want};
	void *kc = p.cpu->ops->kv_new(p.cpu, 8, 4, err), *kg = p.gpu->ops->kv_new(p.gpu, 8, 4, err);
	CHECK(kc && kg, "%s", err);
	size_t nq = (size_t)n * H * hd, nk = (size_t)n * kvd;
	float *q = malloc(nq * sizeof *q), *k = malloc(nk * sizeof *k), *v = malloc(nk * sizeof *v);
	float *oc = malloc(nq * sizeof *oc), *og = malloc(nq * sizeof *og);
	for (size_t i = 0; i < nq; i++)
		q[i] = frand();
	for (size_t i = 0; i < nk; i++) {
		k[i] = frand();
		v[i] = frand();
	}
	float *dq = dev_copy(p.gpu, q, nq), *dk = dev_copy(p.gpu, k, nk), *dv = dev_copy(p.gpu, v, nk);
	float *dout = p.gpu->ops->alloc(p.gpu, nq);
	bt.kv = kc;
	p.cpu->ops->begin_step(p.cpu, &bt, err);
	bt.kv = kg;
	CHECK(p.gpu->ops->begin_step(p.gpu, &bt, err) == 0, "%s", err);
	p.cpu->ops->rope(p.cpu, q, n, H);
	p.gpu->ops->rope(p.gpu, dq, n, H);
	host_copy(p.gpu, og, dq, nq);
	CHECK(memcmp(og, q, nq * sizeof *q) == 0, "%s: rope differs (max %.3e)", what, max_abs_diff(og, q, nq));
	printf("  op rope bitwise %s\n", memcmp(og, q, nq * sizeof *q) ? "DIFFERENT" : "equal");
	bt.kv = kc;
	p.cpu->ops->attention(p.cpu, oc, q, k, v, &bt, 0);
	bt.kv = kg;
	p.gpu->ops->attention(p.gpu, dout, dq, dk, dv, &bt, 0);
	host_copy(p.gpu, og, dout, nq);
	e = t_rel_err(og, oc, nq);
	printf("  op attention rel err %.2e (bound 1e-6)\n", e);
	CHECK(e <= 1e-6, "%s: attention %.3e", what, e);
	p.cpu->ops->swiglu(p.cpu, oc, q, oc, (int64_t)nq);
	p.gpu->ops->swiglu(p.gpu, dout, dq, dout, (int64_t)nq);
	host_copy(p.gpu, og, dout, nq);
	e = t_rel_err(og, oc, nq);
	printf("  op swiglu rel err %.2e (bound 1e-6)\n", e);
	CHECK(e <= 1e-6, "%s: swiglu %.3e", what, e);
	p.cpu->ops->add(p.cpu, oc, q, (int64_t)nq);
	p.gpu->ops->add(p.gpu, dout, dq, (int64_t)nq);
	host_copy(p.gpu, og, dout, nq);
	e = t_rel_err(og, oc, nq);
	CHECK(e <= 1e-6, "%s: add %.3e", what, e);
	CHECK(p.gpu->ops->sync(p.gpu, err) == 0, "%s", err);
	float *bufs[] = {dq, dk, dv, dout};
	for (int i = 0; i < 4; i++)
		p.gpu->ops->dealloc(p.gpu, bufs[i]);
	p.cpu->ops->kv_free(p.cpu, kc);
	p.gpu->ops->kv_free(p.gpu, kg);
	p.gpu->ops->free(p.gpu);
	free(a);
	free(b);
	free(ref);
	free(q);
	free(k);
	free(v);
	free(oc);
	free(og);
	inferd_model_close(m);
}

/* logits of a prompt on the CPU and on the GPU */
static void end_to_end(const char *path, const char *what, double bound)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *mc = open_on(path, "cpu", err), *mg = mc ? open_on(path, "cuda:0", err) : NULL;
	CHECK(mc && mg, "%s: %s", what, err);
	if (mc && mg) {
		int V = mc->c.n_vocab, n = 37;
		int32_t ids[37];
		for (int i = 0; i < n; i++)
			ids[i] = (int32_t)((i * 7919 + 13) % V);
		float *a = malloc((size_t)n * V * sizeof *a), *b = malloc((size_t)n * V * sizeof *b);
		inferd_seq_t *s1, *s2;
		inferd_seq_new(mc, n, &s1, err);
		inferd_seq_new(mg, n, &s2, err);
		CHECK(inferd_seq_eval(mc, s1, ids, n, a, 1, err) == 0, "%s", err);
		CHECK(inferd_seq_eval(mg, s2, ids, n, b, 1, err) == 0, "%s", err);
		double e = t_rel_err(b, a, (size_t)n * V);
		printf("  end to end %-34s CUDA vs CPU rel err %.2e (bound %.0e)\n", what, e, bound);
		CHECK(e <= bound, "%s: CUDA vs CPU logits rel err %.3e", what, e);
		inferd_seq_free(s1);
		inferd_seq_free(s2);
		free(a);
		free(b);
	}
	inferd_model_close(mc);
	inferd_model_close(mg);
}

/* The default (mixed) mode one token at a time: for Q8_0 weights the
 * activations go to 8 bits per 32 values (error <= max/254 per value), dp4a
 * products; bound 2e-2 on the logits against the CPU's float32. */
static void decode_mixed(const char *path, const char *what)
{
	char err[INFERD_ERR_LEN];
	int saved = exact;
	exact = 0;
	inferd_model_t *mg = open_on(path, "cuda:0", err);
	exact = saved;
	inferd_model_t *mc = mg ? open_on(path, "cpu", err) : NULL;
	CHECK(mg && mc, "%s: %s", what, err);
	if (mg && mc) {
		int V = mc->c.n_vocab;
		float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
		inferd_seq_t *s1, *s2;
		inferd_seq_new(mc, 16, &s1, err);
		inferd_seq_new(mg, 16, &s2, err);
		double worst = 0;
		for (int i = 0; i < 12; i++) {
			int32_t id = (int32_t)((i * 7919 + 5) % V);
			CHECK(inferd_seq_eval(mc, s1, &id, 1, a, 0, err) == 0, "%s", err);
			CHECK(inferd_seq_eval(mg, s2, &id, 1, b, 0, err) == 0, "%s", err);
			double e = t_rel_err(b, a, (size_t)V);
			if (e > worst)
				worst = e;
		}
		printf("  decode %-36s default mode vs CPU rel err %.2e (bound 2e-2)\n", what, worst);
		CHECK(worst <= 2e-2, "%s: default-mode decode rel err %.3e", what, worst);
		inferd_seq_free(s1);
		inferd_seq_free(s2);
		free(a);
		free(b);
	}
	inferd_model_close(mg);
	inferd_model_close(mc);
}

static char *gen(const char *name, const char *arch, const char *type)
{
	static char paths[16][512];
	static int np;
	char *p = paths[np++ % 16];
	snprintf(p, 512, "%s", t_tmp(name));
	struct inferd_gen_opts o = {.arch = arch, .n_layer = 2, .n_embd = 256, .n_ff = 512, .n_head = 4, .n_head_kv = 2,
				    .head_dim = 64, .n_vocab = 512, .n_ctx = 2048, .rope_theta = 10000, .seed = 7, .type = type};
	char err[INFERD_ERR_LEN];
	CHECK(inferd_gen_model(&o, p, err) == 0, "%s", err);
	return p;
}

/* Steps of 1 to 8 tokens at Llama-1B width (2048): the fused products keep
 * up to 8 tokens' normalized activations in shared memory, so their limits
 * only show at this width. F16 and Q8_0, float32 and the default mode,
 * against the CPU. */
static void wide_steps(void)
{
	const char *types[] = {"f16", "q8_0"};
	char err[INFERD_ERR_LEN];
	int saved = exact;
	for (int ti = 0; ti < 2; ti++) {
		char name[64];
		snprintf(name, sizeof name, "wide-%s.gguf", types[ti]);
		char p[512];
		snprintf(p, sizeof p, "%s", t_tmp(name));
		struct inferd_gen_opts o = {.arch = "llama", .n_layer = 1, .n_embd = 2048, .n_ff = 1024, .n_head = 32,
					    .n_head_kv = 8, .head_dim = 64, .n_vocab = 256, .n_ctx = 512, .rope_theta = 10000,
					    .seed = 11, .type = types[ti]};
		CHECK(inferd_gen_model(&o, p, err) == 0, "%s", err);
		for (int mode = 0; mode < 2; mode++) {
			exact = mode == 0;
			double bound = exact ? 1e-4 : 2e-2, worst = 0;
			inferd_model_t *mg = open_on(p, "cuda:0", err), *mc = mg ? open_on(p, "cpu", err) : NULL;
			CHECK(mg && mc, "wide %s: %s", types[ti], err);
			for (int n = 1; mg && mc && n <= 8; n++) {
				int32_t ids[8];
				float *a = malloc((size_t)n * 256 * sizeof *a), *b = malloc((size_t)n * 256 * sizeof *b);
				for (int i = 0; i < n; i++)
					ids[i] = (int32_t)((i * 31 + n) % 256);
				inferd_seq_t *s1, *s2;
				inferd_seq_new(mc, n, &s1, err);
				inferd_seq_new(mg, n, &s2, err);
				CHECK(inferd_seq_eval(mc, s1, ids, n, a, 1, err) == 0, "%s", err);
				int rc = inferd_seq_eval(mg, s2, ids, n, b, 1, err);
				CHECK(rc == 0, "wide %s, %d tokens: %s", types[ti], n, err);
				double e = rc ? 1 : t_rel_err(b, a, (size_t)n * 256);
				worst = e > worst ? e : worst;
				inferd_seq_free(s1);
				inferd_seq_free(s2);
				free(a);
				free(b);
			}
			printf("  2048 wide %-5s %s, steps of 1-8 tokens: CUDA vs CPU rel err %.2e (bound %.0e)\n", types[ti],
			       exact ? "float32" : "default", worst, bound);
			CHECK(worst <= bound, "wide %s: rel err %.3e", types[ti], worst);
			if (mg)
				inferd_model_close(mg);
			if (mc)
				inferd_model_close(mc);
		}
	}
	exact = saved;
}

static void weight_types(void)
{
	/* inferd's own quantizers, then llama.cpp's files of every type */
	const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"};
	const char *archs[] = {"llama", "qwen2", "qwen3"};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		char name[64], what[96];
		const char *arch = archs[i % 3];
		snprintf(name, sizeof name, "gen-%s-%s.gguf", arch, types[i]);
		char *p = gen(name, arch, types[i]);
		snprintf(what, sizeof what, "generated %s %s", arch, types[i]);
		ops_model(p, what);
		end_to_end(p, what, 1e-5);
		decode_mixed(p, what);
	}
	/* 896 wide (Qwen2.5-0.5B's width): the K mixes fall back to Q5_0 / Q5_1 */
	const char *wide[] = {"q4_k_m", "q5_k_m"};
	for (size_t i = 0; i < sizeof wide / sizeof wide[0] && !quick; i++) {
		char p[512], what[96], err[INFERD_ERR_LEN];
		snprintf(p, sizeof p, "%s-896.gguf", t_tmp(wide[i]));
		struct inferd_gen_opts o = {.arch = "qwen2", .n_layer = 2, .n_embd = 896, .n_ff = 4864, .n_head = 14,
					    .n_head_kv = 2, .head_dim = 64, .n_vocab = 1024, .n_ctx = 2048,
					    .rope_theta = 1e6, .seed = 5, .type = wide[i]};
		CHECK(inferd_gen_model(&o, p, err) == 0, "%s", err);
		snprintf(what, sizeof what, "generated qwen2 896 %s", wide[i]);
		ops_model(p, what);
		end_to_end(p, what, 1e-5);
	}
	const char *zoo[] = {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "f32"};
	for (size_t i = 0; i < (quick >= 2 ? 3 : sizeof zoo / sizeof zoo[0]); i++) {
		char p[600], what[96];
		snprintf(p, sizeof p, "%s/quant/quant-zoo-%s.gguf", t_fixtures(), zoo[i]);
		snprintf(what, sizeof what, "llama.cpp %s", zoo[i]);
		ops_model(p, what);
		end_to_end(p, what, 1e-5);
	}
	/* the eight generated models have one type per layer's matrices: at
	 * 1 and 7 tokens both fused ops run for each (H100: 56 in all) */
	printf("  fused decode ops run (not declined): %d\n", fused_ran);
	CHECK(fused_ran >= 32, "only %d fused decode ops ran (at least 32 expected)", fused_ran);
}

/* ---- 3. batch invariance ---- */
static void batch_invariance(const char *path, double bound, double delta)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *m = open_on(path, "cuda:0", err);
	CHECK(m, "%s", err);
	if (!m)
		return;
	struct backend *be = m->be;
	int V = m->c.n_vocab, na = 12, bs = 16;
	int nb = 64 * 2 + 8;
	void *kv = be->ops->kv_new(be, nb, bs, err);
	CHECK(kv, "%s", err);
	int32_t aid[12];
	for (int i = 0; i < na; i++)
		aid[i] = (int32_t)((i * 31 + 5) % V);
	float *alone = malloc((size_t)na * V * sizeof *alone);
	double worst = 0;
	int id_checked = 0, id_equal = 0;
	int sizes[] = {1, 2, 3, 4, 8, 16, 31, 32, 33, 48, 64};
	for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
		int k = sizes[si];
		if (quick && k > (quick >= 2 ? 3 : 8))
			break;
		/* sequence 0 is A (its 12 prompt tokens); the others have 1..3 tokens at
		 * positions 0.. (prefill) with the rows wanted; blocks scattered */
		int n = na, nseq = k;
		int32_t *ids = malloc(sizeof(int32_t) * (size_t)(na + 3 * k)), *pos = malloc(sizeof(int32_t) * (size_t)(na + 3 * k));
		int32_t *seq = malloc(sizeof(int32_t) * (size_t)(na + 3 * k));
		uint8_t *want = calloc((size_t)(na + 3 * k), 1);
		int32_t (*tab)[1] = malloc(sizeof(int32_t[1]) * (size_t)k);
		const int32_t **tables = malloc(sizeof(int32_t *) * (size_t)k);
		for (int i = 0; i < na; i++) {
			ids[i] = aid[i];
			pos[i] = i;
			seq[i] = 0;
			want[i] = 1;
		}
		for (int s = 1; s < k; s++)
			for (int j = 0; j < 1 + s % 3; j++, n++) {
				ids[n] = (int32_t)((s * 101 + j * 7) % V);
				pos[n] = j;
				seq[n] = s;
				want[n] = 1;
			}
		for (int s = 0; s < k; s++) {
			tab[s][0] = (int32_t)((s * 37 + (int)si * 11) % nb);
			tables[s] = tab[s];
		}
		/* distinct blocks: nb > 64 and 37 is coprime to nb (136 = 8*17) */
		float *lg = malloc((size_t)n * V * sizeof *lg);
		struct batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .kv = kv, .block_table = tables,
				  .n_seq = nseq, .want = want, .logits = lg};
		int rc = forward(m, &b, err);
		CHECK(rc == 0, "batch of %d: %s", k, err);
		if (k == 1)
			memcpy(alone, lg, (size_t)na * V * sizeof *lg);
		for (int i = 0; i < na && !rc; i++) {
			const float *x = alone + (size_t)i * V, *y = lg + (size_t)i * V;
			double e = t_rel_err(y, x, (size_t)V);
			if (e > worst)
				worst = e;
			int a1 = 0, a2 = -1, b1 = 0;
			for (int v = 1; v < V; v++) {
				if (x[v] > x[a1]) {
					a2 = a1;
					a1 = v;
				} else if (a2 < 0 || x[v] > x[a2])
					a2 = v;
				if (y[v] > y[b1])
					b1 = v;
			}
			if (x[a1] - x[a2] > delta) {
				id_checked++;
				id_equal += a1 == b1;
				CHECK(a1 == b1, "batch of %d row %d: argmax %d vs %d alone (margin %.4f)", k, i, b1, a1,
				      x[a1] - x[a2]);
			}
		}
		printf("  batch of %2d sequences (%3d tokens): worst rel err so far %.2e\n", k, n, worst);
		free(ids);
		free(pos);
		free(seq);
		free(want);
		free(tab);
		free(tables);
		free(lg);
	}
	printf("  batch invariance (%s): logits rel err <= %.2e (bound %.0e); ids equal %d/%d rows with margin > %.0e\n",
	       exact ? "f32" : "mixed", worst, bound, id_equal, id_checked, delta);
	CHECK(worst <= bound, "batch invariance: %.3e", worst);
	CHECK(id_checked > 0, "no row with a clear margin");
	be->ops->kv_free(be, kv);
	free(alone);
	inferd_model_close(m);
}

struct result {
	int32_t ids[64];
	float lp[64];
	int n, finish, status;
	char msg[INFERD_ERR_LEN];
};

static void run(inferd_model_t *m, const struct inferd_request *r, struct result *res, inferd_req_t **hold)
{
	char err[INFERD_ERR_LEN];
	inferd_req_t *q;
	memset(res, 0, sizeof *res);
	int rc = inferd_submit(m, r, &q, err);
	if (rc) {
		res->status = rc;
		snprintf(res->msg, sizeof res->msg, "%s", err);
		return;
	}
	if (hold) {
		*hold = q;
		return;
	}
	struct inferd_event ev;
	while (inferd_req_next(q, &ev, 60000) == 0) {
		if (ev.type == INFERD_EV_TOKEN && res->n < 64) {
			res->lp[res->n] = ev.logprob;
			res->ids[res->n++] = ev.token;
		}
		if (ev.type == INFERD_EV_DONE) {
			res->finish = ev.finish;
			res->status = ev.status;
			snprintf(res->msg, sizeof res->msg, "%s", ev.message);
			break;
		}
	}
	inferd_req_release(q);
}

static void collect(inferd_req_t *q, struct result *res)
{
	struct inferd_event ev;
	memset(res, 0, sizeof *res);
	while (inferd_req_next(q, &ev, 60000) == 0) {
		if (ev.type == INFERD_EV_TOKEN && res->n < 64) {
			res->lp[res->n] = ev.logprob;
			res->ids[res->n++] = ev.token;
		}
		if (ev.type == INFERD_EV_DONE) {
			res->finish = ev.finish;
			res->status = ev.status;
			snprintf(res->msg, sizeof res->msg, "%s", ev.message);
			break;
		}
	}
	inferd_req_release(q);
}

static void request(struct inferd_request *r, const int32_t *ids, int n, float temp, uint64_t seed, int max)
{
	inferd_request_init(r);
	r->ids = ids;
	r->n_ids = n;
	r->temperature = temp;
	r->seed = seed;
	r->max_tokens = max;
	r->ignore_eos = 1;
	r->top_p = temp > 0 ? 0.9f : 1;
	r->top_k = temp > 0 ? 40 : 0;
	r->logprobs = 1;
}

static void sampling(const char *path)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *mg = open_on(path, "cuda:0", err), *mc = mg ? open_on(path, "cpu", err) : NULL;
	CHECK(mg && mc, "%s", err);
	if (!mg || !mc) {
		inferd_model_close(mg);
		return;
	}
	int V = mg->c.n_vocab;
	int32_t p[64][8];
	for (int i = 0; i < 64; i++)
		for (int j = 0; j < 8; j++)
			p[i][j] = (int32_t)((i * 13 + j * 29 + 1) % V);
	/* greedy: device sampling = host sampling (CPU backend) */
	struct inferd_request r;
	struct result a, b;
	int greedy_eq = 0;
	for (int i = 0; i < 4; i++) {
		request(&r, p[i], 8, 0, 0, NTOK(24));
		run(mg, &r, &a, NULL);
		run(mc, &r, &b, NULL);
		CHECK(a.status == 0 && a.n == NTOK(24), "greedy on the GPU: %s", a.msg);
		int eq = a.n == b.n && !memcmp(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n);
		greedy_eq += eq;
		double lpd = 0;
		for (int j = 0; j < a.n && j < b.n; j++)
			if (fabs(a.lp[j] - b.lp[j]) > lpd)
				lpd = fabs(a.lp[j] - b.lp[j]);
		CHECK(eq, "greedy prompt %d: GPU and CPU tokens differ", i);
		CHECK(lpd < 1e-4, "greedy prompt %d: logprobs differ by %.3e", i, lpd);
	}
	printf("  greedy: device sampling = host sampling on %d/4 prompts (24 tokens each)\n", greedy_eq);
	/* logit_bias and min_p on the device, against the host */
	{
		struct inferd_logit_bias lb[2] = {{7, 1000.0f}, {9, 999.0f}};
		request(&r, p[5], 8, 0, 0, NTOK(24));
		r.logit_bias = lb;
		r.n_logit_bias = 2;
		run(mg, &r, &a, NULL);
		run(mc, &r, &b, NULL);
		int all7 = a.n == NTOK(24);
		for (int j = 0; j < a.n; j++)
			all7 &= a.ids[j] == 7;
		CHECK(all7 && !memcmp(a.ids, b.ids, sizeof a.ids), "logit_bias: GPU tokens %d %d..., CPU %d", a.ids[0],
		      a.ids[1], b.ids[0]);
		CHECK(fabs(a.lp[0] - b.lp[0]) < 1e-4, "logit_bias logprob GPU %f CPU %f", a.lp[0], b.lp[0]);
		request(&r, p[6], 8, 1.0f, 77, NTOK(24));
		r.top_k = 0;
		r.top_p = 1;
		r.min_p = 0.2f;
		run(mg, &r, &a, NULL);
		run(mc, &r, &b, NULL);
		printf("  logit_bias on the device: %s; min_p 0.2 seeded GPU %s CPU\n", all7 ? "forces the token" : "FAILED",
		       !memcmp(a.ids, b.ids, sizeof a.ids) ? "=" : "!=");
	}
	/* seeded: alone vs among k others */
	int counts[] = {1, 8, 64};
	struct result alone[4];
	for (int i = 0; i < 4; i++) {
		request(&r, p[i], 8, 0.8f, 1000 + (uint64_t)i, NTOK(24));
		r.presence_penalty = 0.5f;
		r.repetition_penalty = 1.1f;
		run(mg, &r, &alone[i], NULL);
		CHECK(alone[i].status == 0 && alone[i].n == NTOK(24), "seeded: %s", alone[i].msg);
	}
	for (size_t ci = 1; ci < sizeof counts / sizeof counts[0]; ci++) {
		int k = counts[ci];
		if (quick && k > 8)
			break;
		inferd_req_t *q[64];
		struct inferd_request rs[64];
		for (int i = 0; i < k; i++) {
			request(&rs[i], p[i], 8, 0.8f, 1000 + (uint64_t)i, NTOK(24));
			rs[i].presence_penalty = 0.5f;
			rs[i].repetition_penalty = 1.1f;
			run(mg, &rs[i], &a, &q[i]);
		}
		int same = 0;
		for (int i = 0; i < k; i++) {
			collect(q[i], &a);
			if (i < 4) {
				int eq = a.n == alone[i].n && !memcmp(a.ids, alone[i].ids, sizeof(int32_t) * (size_t)a.n);
				same += eq;
				CHECK(eq, "seeded request %d among %d: tokens differ from alone", i, k);
			}
		}
		printf("  seeded sampling among %2d requests: %d/4 equal to alone\n", k, same);
	}
	/* seeded: GPU and CPU samplers implement the same draw */
	int eq_cpu = 0;
	for (int i = 0; i < 4; i++) {
		request(&r, p[i], 8, 0.8f, 1000 + (uint64_t)i, NTOK(24));
		r.presence_penalty = 0.5f;
		r.repetition_penalty = 1.1f;
		run(mc, &r, &b, NULL);
		eq_cpu += b.n == alone[i].n && !memcmp(b.ids, alone[i].ids, sizeof(int32_t) * (size_t)b.n);
	}
	printf("  seeded sampling: GPU = CPU on %d/4 prompts (not required: float sums differ)\n", eq_cpu);
	inferd_model_close(mg);
	inferd_model_close(mc);
}

/* ---- 4. two models, two threads ---- */
struct twin {
	inferd_model_t *m;
	struct result res[8];
};

static void twin_run(struct twin *t)
{
	int V = t->m->c.n_vocab;
	for (int i = 0; i < 8; i++) {
		int32_t ids[6];
		for (int j = 0; j < 6; j++)
			ids[j] = (int32_t)((i * 17 + j * 5 + 2) % V);
		struct inferd_request r;
		request(&r, ids, 6, i % 2 ? 0.7f : 0, (uint64_t)i, NTOK(20));
		run(t->m, &r, &t->res[i], NULL);
	}
}

static void *twin_main(void *arg)
{
	twin_run(arg);
	return NULL;
}

static void two_models(const char *pa, const char *pb)
{
	char err[INFERD_ERR_LEN];
	struct twin a = {.m = open_on(pa, "cuda:0", err)}, b = {.m = a.m ? open_on(pb, "cuda:0", err) : NULL};
	CHECK(a.m && b.m, "%s", err);
	if (!a.m || !b.m) {
		inferd_model_close(a.m);
		return;
	}
	struct twin a1 = a, b1 = b;
	twin_run(&a1);
	twin_run(&b1);
	pthread_t ta, tb;
	pthread_create(&ta, NULL, twin_main, &a);
	pthread_create(&tb, NULL, twin_main, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int same = 0;
	for (int i = 0; i < 8; i++) {
		same += a.res[i].n == NTOK(20) && !memcmp(a.res[i].ids, a1.res[i].ids, sizeof a.res[i].ids);
		same += b.res[i].n == NTOK(20) && !memcmp(b.res[i].ids, b1.res[i].ids, sizeof b.res[i].ids);
	}
	printf("  two models from two threads on one GPU: %d/16 requests equal to alone\n", same);
	CHECK(same == 16, "two models at once: %d/16 equal", same);
	inferd_model_close(a.m);
	inferd_model_close(b.m);
}

/* ---- 5. faults ---- */
static void load_faults(const char *small, const char *other)
{
	char err[INFERD_ERR_LEN];
	inferd_model_t *busy = open_on(other, "cuda:0", err);
	CHECK(busy, "%s", err);
	if (!busy)
		return;
	/* keep a request running on the other model through both failed loads */
	int32_t ids[4] = {1, 2, 3, 4};
	struct inferd_request r;
	request(&r, ids, 4, 0, 0, NTOK(48));
	inferd_req_t *q;
	struct result before, during;
	run(busy, &r, &before, NULL);
	run(busy, &r, &during, &q);
	struct inferd_model_opts o = {.device = "cuda:0", .device_memory = 1 << 16};
	inferd_model_t *m = NULL;
	int rc = inferd_model_open(small, &o, &m, err);
	printf("  budget too small: rc %d: %s\n", rc, err);
	CHECK(rc == INFERD_ENOMEM && strstr(err, "budget"), "budget: rc %d: %s", rc, err);
	/* a real cudaMalloc failure (not under compute-sanitizer, which reports
	 * every failed API call as an error) */
	o = (struct inferd_model_opts){.device = "cuda:0", .kv_tokens = 1 << 30}; /* 2 x 256 GiB */
	if (!quick) {
		rc = inferd_model_open(small, &o, &m, err);
		printf("  KV cache larger than the GPU: rc %d: %s\n", rc, err);
		CHECK(rc == INFERD_ENOMEM && strstr(err, "out of GPU memory"), "oom: rc %d: %s", rc, err);
	}
	o = (struct inferd_model_opts){.device = "cuda:99"};
	rc = inferd_model_open(small, &o, &m, err);
	CHECK(rc == INFERD_EINVAL && strstr(err, "cuda:99"), "cuda:99: rc %d: %s", rc, err);
	collect(q, &during);
	CHECK(during.status == 0 && during.n == NTOK(48) && !memcmp(during.ids, before.ids, sizeof during.ids),
	      "the other model's request during the failed loads: %d tokens, %s", during.n, during.msg);
	run(busy, &r, &during, NULL);
	CHECK(during.status == 0 && !memcmp(during.ids, before.ids, sizeof during.ids), "after: %s", during.msg);
	inferd_model_close(busy);
}

static char fatal_msg[512];
static int fatal_calls;
static void on_fatal(void *arg, const char *msg)
{
	(void)arg;
	fatal_calls++;
	snprintf(fatal_msg, sizeof fatal_msg, "%s", msg);
}

static int sticky_child(const char *path)
{
	char err[INFERD_ERR_LEN];
	struct inferd_model_opts o = {.device = "cuda:0", .on_fatal = on_fatal};
	inferd_model_t *m = NULL;
	if (inferd_model_open(path, &o, &m, err)) {
		fprintf(stderr, "open: %s\n", err);
		return 10;
	}
	int32_t ids[4] = {1, 2, 3, 4};
	struct inferd_request r;
	request(&r, ids, 4, 0, 0, 40);
	struct result ok, bad;
	run(m, &r, &ok, NULL);
	if (ok.status || ok.n != 40)
		return 11;
	struct inferd_model_stats st;
	inferd_model_stats(m, &st);
	cuda_backend_fault_at(m->be, (int64_t)st.steps + 0 /* the backend counts its own steps */);
	inferd_req_t *q[3];
	for (int i = 0; i < 3; i++)
		run(m, &r, &bad, &q[i]);
	int ended = 0;
	for (int i = 0; i < 3; i++) {
		collect(q[i], &bad);
		printf("  injected fault: request %d: finish %s status %d: %s\n", i, inferd_finish_name(bad.finish), bad.status,
		       bad.msg);
		ended += bad.finish == INFERD_FINISH_ERROR && bad.status == INFERD_EDEVICE &&
			 strstr(bad.msg, "illegal memory access") != NULL;
	}
	if (ended != 3)
		return 12;
	if (fatal_calls != 1 || !strstr(fatal_msg, "illegal memory access") || !strstr(fatal_msg, "must restart"))
		return 13;
	inferd_model_stats(m, &st);
	if (st.state != INFERD_STATE_FAILED)
		return 14;
	inferd_req_t *q2;
	int rc = inferd_submit(m, &r, &q2, err);
	printf("  after the fault: submit rc %d: %s\n", rc, err);
	if (rc != INFERD_EDEVICE || !strstr(err, "illegal memory access"))
		return 15;
	printf("  on_fatal called once: %s\n", fatal_msg);
	inferd_model_close(m);
	return 0;
}

/* CUDA does not survive fork: the child is a fresh exec of this binary */
static void sticky(const char *path)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", "test_cuda", "--sticky-child", path, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sticky-error child: status %d (exit %d)", st,
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}


/* One HTTP request to 127.0.0.1:port (connection: close); the whole
 * response into resp. Waits up to 30 s for the server to listen. */
static int http(int port, const char *method, const char *path, const char *body, char *resp, size_t cap)
{
	int fd = -1;
	for (int i = 0; i < 300 && fd < 0; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
			close(fd);
			fd = -1;
			usleep(100 * 1000);
		}
	}
	resp[0] = 0;
	if (fd < 0)
		return -1;
	char req[1024];
	int len = snprintf(req, sizeof req,
			   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
			   "Connection: close\r\n\r\n%s",
			   method, path, body ? strlen(body) : 0, body ? body : "");
	if (write(fd, req, (size_t)len) != len) {
		close(fd);
		return -1;
	}
	size_t got = 0;
	ssize_t r;
	while (got < cap - 1 && (r = read(fd, resp + got, cap - 1 - got)) > 0)
		got += (size_t)r;
	resp[got] = 0;
	close(fd);
	return 0;
}

static const char *server_bin(void)
{
	static char bin[700];
	char exe[600];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	snprintf(bin, sizeof bin, "%s/inferd-faults", exe);
	return bin;
}

/* Closing a model (what the server's unload does) gives its device memory
 * back: the free memory cudaMemGetInfo reports returns to within 8 MiB of
 * what it was before the open, three times over (no creeping leak). */
static void close_frees(const char *path)
{
	size_t free0 = 0, total = 0, free1 = 0, free2 = 0;
	cudaMemGetInfo(&free0, &total);
	for (int round = 0; round < 3; round++) {
		char err[INFERD_ERR_LEN];
		struct inferd_model_opts o = {.device = "cuda:0", .kv_tokens = 4096};
		inferd_model_t *m = NULL;
		if (inferd_model_open(path, &o, &m, err)) {
			CHECK(0, "%s", err);
			return;
		}
		struct inferd_model_info info;
		inferd_model_get_info(m, &info);
		inferd_seq_t *sq = NULL;
		int32_t ids[4] = {1, 2, 3, 4};
		CHECK(inferd_seq_new(m, 64, &sq, err) == 0 && inferd_seq_eval(m, sq, ids, 4, NULL, 0, err) == 0, "%s", err);
		inferd_seq_free(sq);
		cudaMemGetInfo(&free1, &total);
		inferd_model_close(m);
		cudaMemGetInfo(&free2, &total);
		CHECK(free0 - free1 >= info.device_bytes / 2, "open took %zu bytes of the device, the model says %zu",
		      free0 - free1, info.device_bytes);
		CHECK(free2 + (8u << 20) >= free0, "round %d: after close %zu MiB free, before open %zu MiB", round,
		      free2 >> 20, free0 >> 20);
	}
	printf("  close frees: free before %zu MiB, open %zu MiB, after close %zu MiB\n", free0 >> 20, free1 >> 20,
	       free2 >> 20);
}

/* --gpu-memory is one budget for the device: the first model fits, the
 * second does not and is reported failed with the sizes; the first serves. */
static void serve_budget(const char *model)
{
	const char *bin = server_bin();
	int port = 23000 + (int)(getpid() % 2000);
	char ports[16], a[700], b[700];
	snprintf(ports, sizeof ports, "%d", port);
	snprintf(a, sizeof a, "a=%s", model);
	snprintf(b, sizeof b, "b=%s", model);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		FILE *f = freopen(t_tmp("serve-budget.log"), "w", stderr);
		(void)f;
		setenv("INFERD_RUNTIME_DIR", t_tmp("run-budget"), 1);
		execl(bin, "inferd", "serve", "--device", "cuda:0", "--gpu-memory", "1", "--kv-tokens", "256", "--model", a,
		      "--model", b, "--port", ports, (char *)NULL);
		_exit(127);
	}
	char resp[8192];
	for (int i = 0; i < 300; i++) { /* the models load after the server starts listening */
		http(port, "GET", "/v1/models", NULL, resp, sizeof resp);
		if (!strstr(resp, "\"loading\"") && strstr(resp, "\"b\""))
			break;
		usleep(100 * 1000);
	}
	const char *bb = strstr(resp, "\"b\"");
	printf("  --gpu-memory 1: /v1/models: %.300s\n", strstr(resp, "\r\n\r\n") ? strstr(resp, "\r\n\r\n") + 4 : resp);
	CHECK(bb && strstr(bb, "budget"), "model b should have failed on the device budget: %s", resp);
	http(port, "POST", "/v1/completions", "{\"model\": \"a\", \"prompt\": [1, 2, 3], \"max_tokens\": 4}", resp,
	     sizeof resp);
	CHECK(strstr(resp, "HTTP/1.1 200"), "model a should serve: %.300s", resp);
	kill(pid, SIGTERM);
	int st;
	waitpid(pid, &st, 0);
}

/* Under its supervisor: a lost GPU context ends the worker (status 3), the
 * supervisor starts a fresh one that serves again; the second death with the
 * same model running quarantines it, and the server stays up (/health 200).
 * A second server on the same GPU (its lock is the GPU's UUID) exits at
 * once naming the holder's PID. */
static void serve_supervised(const char *model)
{
	const char *bin = server_bin(), *log = t_tmp("serve-sup.log"), *rundir = t_tmp("run-sup");
	int port = 25000 + (int)(getpid() % 2000);
	char ports[16], spec[700], resp[8192] = "";
	snprintf(ports, sizeof ports, "%d", port);
	snprintf(spec, sizeof spec, "q=%s", model);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		setenv("INFERD_CUDA_FAULT_STEP", "3", 1);
		setenv("INFERD_RESTART_BACKOFF", "0.1,0.2,30", 1);
		setenv("INFERD_RUNTIME_DIR", rundir, 1);
		execl(bin, "inferd", "serve", "--device", "cuda:0", "--model", spec, "--port", ports, (char *)NULL);
		_exit(127);
	}
	const char *body = "{\"model\": \"q\", \"prompt\": [1, 2, 3], \"max_tokens\": 20}";
	int got503 = 0, healthy = 0;
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 200 && !strstr(resp, "HTTP/1.1 200"); i++) { /* wait for a worker that serves */
			http(port, "GET", "/health", NULL, resp, sizeof resp);
			if (!strstr(resp, "HTTP/1.1 200"))
				usleep(100 * 1000);
		}
		http(port, "POST", "/v1/completions", body, resp, sizeof resp);
		got503 += strstr(resp, "HTTP/1.1 503") && strstr(resp, "illegal memory access");
		usleep(800 * 1000); /* the worker exits half a second after the error */
		resp[0] = 0;
	}
	/* after the second death the model is quarantined; the server serves on */
	int quarantined = 0;
	for (int i = 0; i < 100 && !quarantined; i++) {
		http(port, "GET", "/v1/models", NULL, resp, sizeof resp);
		quarantined = strstr(resp, "quarantined") != NULL;
		if (!quarantined)
			usleep(100 * 1000);
	}
	http(port, "GET", "/health", NULL, resp, sizeof resp);
	healthy = strstr(resp, "HTTP/1.1 200") != NULL;
	printf("  supervised: %d/2 requests got 503 with the CUDA error; model quarantined: %s; /health 200: %s\n", got503,
	       quarantined ? "yes" : "no", healthy ? "yes" : "no");
	CHECK(got503 == 2, "both workers should answer the fault with 503");
	CHECK(quarantined, "the model should be quarantined after two deaths: %.400s", resp);
	CHECK(healthy, "the server should stay healthy: %.200s", resp);
	/* a second server on the same GPU */
	char out[256], err[2048];
	char port2[16];
	snprintf(port2, sizeof port2, "%d", port + 1);
	setenv("INFERD_RUNTIME_DIR", rundir, 1);
	const char *argv2[] = {bin, "serve", "--device", "cuda:0", "--model", spec, "--port", port2, NULL};
	int rc = t_run(argv2, out, sizeof out, err, sizeof err);
	unsetenv("INFERD_RUNTIME_DIR");
	char pids[32];
	snprintf(pids, sizeof pids, "pid %d", (int)pid);
	printf("  second server on cuda:0: exit %d: %.200s\n", rc, err);
	CHECK(rc == 1 && strstr(err, pids) && strstr(err, "gpu-GPU-"), "second instance: exit %d: %s", rc, err);
	kill(pid, SIGTERM);
	int st = 0;
	waitpid(pid, &st, 0);
	size_t ln = 0;
	char *txt = t_read_file(log, &ln);
	int exits = 0;
	for (const char *q = txt; q && (q = strstr(q, "\"cause\":\"exited with status 3\"")); q++)
		exits++;
	printf("  supervisor log: %d worker exits with status 3; supervisor exit %d\n", exits,
	       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	CHECK(exits == 2 && txt && strstr(txt, "quarantined"), "two worker exits with status 3 and the quarantine in the log: %s",
	      txt ? txt : "");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "supervisor exit %d", st);
	free(txt);
}

/* The real server with the fault hook compiled in: a sticky error in a
 * request's step gives that client a 503 naming the CUDA error, and the
 * process exits with status 3 (for its supervisor to restart it). */
static void serve_fault(const char *model)
{
	char exe[600], bin[700];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	snprintf(bin, sizeof bin, "%s/inferd-faults", exe);
	if (access(bin, X_OK)) {
		CHECK(0, "%s is missing (make CUDA=1 test-gpu builds it)", bin);
		return;
	}
	int port = 21000 + (int)(getpid() % 2000);
	char ports[16], spec[700];
	snprintf(ports, sizeof ports, "%d", port);
	snprintf(spec, sizeof spec, "q=%s", model);
	const char *log = t_tmp("serve-fault.log");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		setenv("INFERD_CUDA_FAULT_STEP", "3", 1);
		setenv("INFERD_RUNTIME_DIR", t_tmp("run-fault"), 1);
		execl(bin, "inferd", "serve", "--no-supervise", "--device", "cuda:0", "--model", spec, "--port", ports,
		      (char *)NULL);
		_exit(127);
	}
	/* wait for it to listen */
	int fd = -1;
	for (int i = 0; i < 300 && fd < 0; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
			close(fd);
			fd = -1;
			usleep(100 * 1000);
		}
	}
	CHECK(fd >= 0, "the server did not start listening on port %d", port);
	char resp[8192] = "";
	if (fd >= 0) {
		const char *body = "{\"model\": \"q\", \"prompt\": [1, 2, 3], \"max_tokens\": 20}";
		char req[512];
		int len = snprintf(req, sizeof req,
				   "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
				   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
				   strlen(body), body);
		CHECK(write(fd, req, (size_t)len) == len, "write");
		size_t got = 0;
		ssize_t r;
		while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
			got += (size_t)r;
		resp[got] = 0;
		close(fd);
	}
	printf("  server, injected fault: response: %.160s\n", resp);
	CHECK(strstr(resp, "HTTP/1.1 503") && strstr(resp, "illegal memory access") && strstr(resp, "server_error"),
	      "the client should get a 503 naming the CUDA error: %s", resp);
	int st = 0, waited = 0;
	for (; waited < 200 && waitpid(pid, &st, WNOHANG) == 0; waited++)
		usleep(100 * 1000);
	if (waited == 200) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	size_t ln = 0;
	char *txt = t_read_file(log, &ln);
	printf("  server exit status %d after the fault\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "the server should exit with status 3, got %d", st);
	CHECK(txt && strstr(txt, "illegal memory access") && strstr(txt, "exiting (status 3)"), "server log: %s",
	      txt ? txt : "(none)");
	free(txt);
}

int main(int argc, char **argv)
{
	char err[INFERD_ERR_LEN];
	int n = 0;
	if (argc == 3 && !strcmp(argv[1], "--sticky-child")) {
		setvbuf(stdout, NULL, _IOLBF, 0);
		return sticky_child(argv[2]);
	}
	if (cuda_device_count(&n, err) || n == 0) {
		printf("SKIP test_cuda: %s\n", n == 0 && !err[0] ? "no CUDA device" : err);
		if (n == 0 && err[0])
			no_cuda_error("CUDA");
		return t_done("test_cuda");
	}
	quick = getenv("INFERD_CUDA_QUICK") ? atoi(getenv("INFERD_CUDA_QUICK")) : 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("%d CUDA device(s)%s\n", n, quick ? " (quick)" : "");
	char fq[600], fl[600];
	snprintf(fq, sizeof fq, "%s/qwen2-tiny-f16", t_fixtures());
	snprintf(fl, sizeof fl, "%s/llama3-rope-bf16", t_fixtures());
	{ /* the lock name of a GPU is its UUID, as nvidia-smi prints it */
		char id[128], out[4096] = "", se[256];
		CHECK(inferd_device_id("cuda:0", id, sizeof id, err) == 0, "%s", err);
		const char *smi[] = {"nvidia-smi", "-L", NULL};
		if (t_run(smi, out, sizeof out, se, sizeof se) == 0)
			CHECK(strstr(out, id + 4) != NULL, "device id %s not in nvidia-smi -L: %s", id, out);
		printf("  device id of cuda:0: %s\n", id);
	}
	fixtures(1e-4);
	weight_types();
	wide_steps();
	batch_invariance(fq, BATCH_BOUND, DELTA);
	batch_invariance(fl, BATCH_BOUND, DELTA);
	/* the default: products of >= 16 tokens on tensor cores with F16 (BF16
	 * for BF16 weights) activations, float32 accumulation. An activation
	 * rounded to 8 (BF16) or 11 (F16) mantissa bits has a relative error
	 * <= 2^-9 (2^-12 for F16); over a dot product of random-sign terms the
	 * errors partly cancel, and each layer's RMSNorm rescales, so the
	 * logits move by a few times that (measured: up to 8.3e-3 on the BF16
	 * fixtures, 4e-4 on the F16 one): bound 2e-2, and ids agree where the
	 * margin exceeds 0.1 */
	exact = 0;
	fixtures(2e-2);
	batch_invariance(fq, 2e-2, 0.1);
	batch_invariance(fl, 2e-2, 0.1);
	exact = 1;
	sampling(fq);
	two_models(fq, fl);
	load_faults(fq, fl);
	close_frees(fl);
	if (!quick) {
		sticky(fq);
		serve_fault(fq);
		serve_budget(fq);
		serve_supervised(fq);
	}
	return t_done("test_cuda");
}
#endif
