/*
 * tmpl_eval.c — evaluation of a parsed template: expressions with Python's
 * operators, statements with Jinja's scoping, macros and call blocks, and
 * tmpl_render.
 *
 * Scopes: a chain of small symbol->value tables, one per Jinja frame. The
 * template body runs in the root scope; `if` adds none; every for-loop
 * iteration gets a fresh scope (assignments inside a loop are gone after
 * the iteration, as in Jinja); macros, call blocks, {% generation %},
 * set/filter blocks and `with` get a child scope. A macro closes over the
 * scope it was defined in, read at call time. Names found nowhere come from
 * the render's globals (the vars object, then the builtins), else they are
 * Undefined. A frame starts with the names Jinja's symbol analysis marks
 * as missing (node->unset, see tmpl.c) bound to Undefined.
 *
 * Constant folding: Jinja evaluates constant subexpressions at compile
 * time, which only shows where a literal is sliced that cannot be; see
 * struct rctx's nonconst and pending.
 *
 * Statements return 0, R_BREAK or R_CONTINUE, or a negative status with
 * the message in r->err. Every loop iteration, call and nested evaluation
 * is counted against the limits in tmpl.h.
 */
#include "tmpl_int.h"
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define R_BREAK 1
#define R_CONTINUE 2
#define MAX_EVAL_DEPTH 3000

struct svar {
	int sym;
	struct val v;
};

struct scope {
	struct scope *parent;
	struct svar *v;
	int n, cap;
};

int rerr(struct rctx *r, int status, const char *fmt, ...)
{
	if (r->errcode)
		return r->errcode;  /* keep the first, innermost message */
	char msg[INFERD_ERR_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	seterr(r->err, status, "%s:%d: %s", r->t->name, r->line, msg);
	r->errcode = status;
	return status;
}

static struct scope *scope_new(struct rctx *r, struct scope *parent)
{
	struct scope *s = ralloc(r, sizeof *s);
	if (s)
		s->parent = parent;
	return s;
}

static int scope_set(struct rctx *r, struct scope *s, int sym, struct val v)
{
	for (int i = 0; i < s->n; i++)
		if (s->v[i].sym == sym) {
			s->v[i].v = v;
			return 0;
		}
	if (s->n == s->cap) {
		int nc = s->cap ? s->cap * 2 : 8;
		struct svar *nv = ralloc(r, (size_t)nc * sizeof *nv);
		if (!nv)
			return room(r);
		if (s->n)
			memcpy(nv, s->v, (size_t)s->n * sizeof *nv);
		s->v = nv;
		s->cap = nc;
	}
	s->v[s->n].sym = sym;
	s->v[s->n].v = v;
	s->n++;
	return 0;
}

static bool scope_get(const struct scope *s, int sym, struct val *out)
{
	for (; s; s = s->parent)
		for (int i = s->n - 1; i >= 0; i--)
			if (s->v[i].sym == sym) {
				*out = s->v[i].v;
				return true;
			}
	return false;
}

static int exec_body(struct rctx *r, struct node **kids, int n, struct scope *sc);
static int eval_root(struct rctx *r, const struct node *n, struct scope *sc, struct val *out);

/* a frame's locals that read as Undefined until assigned (see scope_analysis in tmpl.c) */
static int bind_unset(struct rctx *r, struct scope *sc, const int *syms, int n)
{
	for (int i = 0; i < n; i++) {
		struct val u;
		int rc = v_undef_name(r, r->t->syms[syms[i]], r->t->symlen[syms[i]], &u);
		if (rc || (rc = scope_set(r, sc, syms[i], u)))
			return rc;
	}
	return 0;
}

static int lookup(struct rctx *r, const struct node *n, struct scope *sc, struct val *out)
{
	if (scope_get(sc, n->sym, out))
		return 0;
	*out = r->gv[n->sym];
	if (out->t == V_UNDEF && out->taint == U_PLAIN)
		return v_undef_name(r, n->s, n->sn, out);
	return 0;
}

/* ---------------------------------------------------------------- arithmetic */

static bool num(const struct val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double fval(const struct val *v) { return v->t == V_FLOAT ? v->f : v->t == V_INT ? (double)v->i : (double)v->b; }
static int64_t ival(const struct val *v) { return v->t == V_INT ? v->i : v->t == V_BOOL ? (int64_t)v->b : 0; }

static const char *binop_sym(int op)
{
	static const char *s[] = {"+", "-", "*", "/", "//", "%", "** or pow()"};
	return s[op];
}

static int type_err(struct rctx *r, int op, const struct val *a, const struct val *b)
{
	if (op == B_ADD && a->t == V_STR)
		return rerr(r, INFERD_EINVAL, "TypeError: can only concatenate str (not \"%s\") to str", v_typename(b));
	if (op == B_ADD && a->t == V_LIST && a->sub == LK_LIST)
		return rerr(r, INFERD_EINVAL, "TypeError: can only concatenate list (not \"%s\") to list", v_typename(b));
	return rerr(r, INFERD_EINVAL, "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", binop_sym(op),
		    v_typename(a), v_typename(b));
}

static int overflow(struct rctx *r)
{
	return rerr(r, INFERD_ERANGE, "integer overflow (inferd integers are 64-bit)");
}

static int repeat_seq(struct rctx *r, const struct val *seq, int64_t k, struct val *out)
{
	if (k < 0)
		k = 0;
	if (seq->t == V_STR) {
		if (seq->n && (uint64_t)k > TMPL_MAX_OUTPUT / seq->n)
			return rerr(r, INFERD_ERANGE, "string repetition larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
		struct sbuf b;
		sb_init(&b);
		for (int64_t i = 0; i < k; i++)
			sb_putv(&b, seq);
		int rc = b.over ? rerr(r, INFERD_ERANGE, "string too large") : sb_to_val(r, &b, out);
		sb_free(&b);
		if (!rc)
			out->sub = seq->sub & SUB_MARKUP;
		return rc;
	}
	size_t n = seq->l->n;
	if (n && (uint64_t)k > 10000000 / n)
		return rerr(r, INFERD_ERANGE, "list repetition too large");
	int rc = v_newlist(r, n * (size_t)k, seq->sub, out);
	if (rc)
		return rc;
	for (int64_t i = 0; i < k; i++)
		for (size_t j = 0; j < n; j++)
			out->l->v[out->l->n++] = seq->l->v[j];
	return 0;
}

static int concat_str(struct rctx *r, const struct val *a, const struct val *b, struct val *out)
{
	/* Markup + str escapes the str; str + Markup escapes the left */
	struct val x = *a, y = *b;
	int rc;
	bool markup = (a->sub & SUB_MARKUP) || (b->sub & SUB_MARKUP);
	if ((a->sub & SUB_MARKUP) && !(b->sub & SUB_MARKUP) && (rc = markup_escape(r, b, &y)))
		return rc;
	if (!(a->sub & SUB_MARKUP) && (b->sub & SUB_MARKUP) && (rc = markup_escape(r, a, &x)))
		return rc;
	rc = str_concat(r, &x, &y, out);
	if (!rc && markup)
		out->sub |= SUB_MARKUP;
	return rc;
}

static double py_fmod(double a, double b)
{
	double m = fmod(a, b);
	if (m != 0 && ((b < 0) != (m < 0)))
		m += b;
	else if (m == 0)
		m = copysign(0.0, b);
	return m;
}

int binop(struct rctx *r, int op, const struct val *a, const struct val *b, struct val *out)
{
	if (op == B_MOD && a->t == V_STR)  /* str.__mod__ takes any right operand */
		return py_percent_format(r, a, b, out);
	if (a->t == V_UNDEF)
		return undef_fail(r, a);
	if (b->t == V_UNDEF)
		return undef_fail(r, b);
	if (num(a) && num(b)) {
		bool fl = a->t == V_FLOAT || b->t == V_FLOAT;
		int64_t x = ival(a), y = ival(b), z;
		double fx = fval(a), fy = fval(b);
		switch (op) {
		case B_ADD:
			if (fl) { *out = v_float(fx + fy); return 0; }
			if (__builtin_add_overflow(x, y, &z)) return overflow(r);
			*out = v_int(z);
			return 0;
		case B_SUB:
			if (fl) { *out = v_float(fx - fy); return 0; }
			if (__builtin_sub_overflow(x, y, &z)) return overflow(r);
			*out = v_int(z);
			return 0;
		case B_MUL:
			if (fl) { *out = v_float(fx * fy); return 0; }
			if (__builtin_mul_overflow(x, y, &z)) return overflow(r);
			*out = v_int(z);
			return 0;
		case B_DIV:
			if (fy == 0)
				return rerr(r, INFERD_EINVAL, "ZeroDivisionError: division by zero");
			*out = v_float(fx / fy);
			return 0;
		case B_FLOORDIV:
			if (fl) {
				if (fy == 0)
					return rerr(r, INFERD_EINVAL, "ZeroDivisionError: float floor division by zero");
				double m = py_fmod(fx, fy);
				*out = v_float(floor((fx - m) / fy + 0.5) == (fx - m) / fy ? (fx - m) / fy : floor(fx / fy));
				return 0;
			}
			if (y == 0)
				return rerr(r, INFERD_EINVAL, "ZeroDivisionError: integer division or modulo by zero");
			if (x == INT64_MIN && y == -1)
				return overflow(r);
			z = x / y;
			if ((x % y != 0) && ((x < 0) != (y < 0)))
				z--;
			*out = v_int(z);
			return 0;
		case B_MOD:
			if (fl) {
				if (fy == 0)
					return rerr(r, INFERD_EINVAL, "ZeroDivisionError: float modulo");
				*out = v_float(py_fmod(fx, fy));
				return 0;
			}
			if (y == 0)
				return rerr(r, INFERD_EINVAL, "ZeroDivisionError: integer division or modulo by zero");
			if (y == -1) {
				*out = v_int(0);
				return 0;
			}
			z = x % y;
			if (z != 0 && ((z < 0) != (y < 0)))
				z += y;
			*out = v_int(z);
			return 0;
		case B_POW:
			if (!fl && y >= 0) {
				int64_t res = 1, base = x;
				int64_t e = y;
				while (e > 0) {
					if (e & 1)
						if (__builtin_mul_overflow(res, base, &res))
							return overflow(r);
					e >>= 1;
					if (e && __builtin_mul_overflow(base, base, &base))
						return overflow(r);
				}
				*out = v_int(res);
				return 0;
			}
			if (fx == 0 && fy < 0)
				return rerr(r, INFERD_EINVAL, "ZeroDivisionError: 0.0 cannot be raised to a negative power");
			*out = v_float(pow(fx, fy));
			return 0;
		}
	}
	if (op == B_ADD) {
		if (a->t == V_STR && b->t == V_STR)
			return concat_str(r, a, b, out);
		if (a->t == V_LIST && b->t == V_LIST && a->sub == b->sub && (a->sub == LK_LIST || a->sub == LK_TUPLE))
			return list_concat(r, a, b, out);
	}
	if (op == B_MUL) {
		if ((a->t == V_STR || (a->t == V_LIST && (a->sub == LK_LIST || a->sub == LK_TUPLE))) &&
		    (b->t == V_INT || b->t == V_BOOL))
			return repeat_seq(r, a, ival(b), out);
		if ((b->t == V_STR || (b->t == V_LIST && (b->sub == LK_LIST || b->sub == LK_TUPLE))) &&
		    (a->t == V_INT || a->t == V_BOOL))
			return repeat_seq(r, b, ival(a), out);
	}
	if (op == B_MOD && a->t == V_STR)
		return py_percent_format(r, a, b, out);
	return type_err(r, op, a, b);
}

/* ---------------------------------------------------------------- attributes and items */

int getattr_v(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out)
{
	if (obj->t == V_UNDEF)
		return undef_fail(r, obj);
	int rc = method_lookup(r, obj, name, n, out);
	if (rc < 0)
		return rc;
	if (rc == 1)
		return 0;
	switch (obj->t) {
	case V_DICT:
		if (dict_get_str(obj->d, name, n, out))
			return 0;
		break;
	case V_NS:
		if (dict_get_str(&obj->ns->d, name, n, out))
			return 0;
		break;
	default:
		break;
	}
	return v_undef_attr(r, obj, name, n, out);
}

static void index_of(const struct val *key, int64_t len, int64_t *idx, bool *ok)
{
	int64_t i = key->t == V_INT ? key->i : (int64_t)key->b;
	if (i < 0)
		i += len;
	*ok = i >= 0 && i < len;
	*idx = i;
}

int getitem_v(struct rctx *r, const struct val *obj, const struct val *key, struct val *out)
{
	if (obj->t == V_UNDEF)
		return undef_fail(r, obj);
	bool intkey = key->t == V_INT || key->t == V_BOOL;
	switch (obj->t) {
	case V_DICT: {
		uint64_t h;
		if (!v_hash(key, &h) && dict_get(obj->d, key, out))
			return 0;
		break;
	}
	case V_LIST:
		if (intkey && (obj->sub == LK_LIST || obj->sub == LK_TUPLE || obj->sub == LK_RANGE)) {
			int64_t i;
			bool ok;
			index_of(key, (int64_t)obj->l->n, &i, &ok);
			if (ok) {
				*out = obj->l->v[i];
				return 0;
			}
		}
		break;
	case V_STR:
		if (intkey) {
			int64_t len = (int64_t)u8_len(obj->s, obj->n), i;
			bool ok;
			index_of(key, len, &i, &ok);
			if (ok) {
				size_t off = u8_off(obj->s, obj->n, i), adv;
				u8_dec(obj->s + off, obj->n - off, &adv);
				return str_sub(r, obj, off, adv, out);
			}
		}
		break;
	default:
		break;
	}
	if (key->t == V_STR) {
		/* sandbox getitem falls back to the attribute */
		int rc = method_lookup(r, obj, key->s, key->n, out);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return 0;
		if (obj->t == V_NS && dict_get_str(&obj->ns->d, key->s, key->n, out))
			return 0;
		if (obj->t == V_LOOP)
			return getattr_v(r, obj, key->s, key->n, out);
	}
	return v_undef_elem(r, obj, key, out);
}

static int slice_index(struct rctx *r, const struct val *v, int64_t *out, bool *none)
{
	*none = false;
	if (!v || v->t == V_NONE) {
		*none = true;
		return 0;
	}
	if (v->t == V_INT || v->t == V_BOOL) {
		*out = v->t == V_INT ? v->i : v->b;
		return 0;
	}
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	return rerr(r, INFERD_EINVAL, "TypeError: slice indices must be integers or None");
}

/* Python's slice.indices */
static int slice_bounds(struct rctx *r, int64_t len, const struct val *a, const struct val *b, const struct val *c,
			int64_t *start, int64_t *stop, int64_t *step)
{
	bool na, nb, nc;
	int64_t x = 0, y = 0, s = 1;
	int rc;
	if ((rc = slice_index(r, c, &s, &nc)))
		return rc;
	if (nc)
		s = 1;
	if (s == 0)
		return rerr(r, INFERD_EINVAL, "ValueError: slice step cannot be zero");
	if ((rc = slice_index(r, a, &x, &na)) || (rc = slice_index(r, b, &y, &nb)))
		return rc;
	if (na) {
		x = s < 0 ? len - 1 : 0;
	} else {
		if (x < 0)
			x += len;
		if (x < 0)
			x = s < 0 ? -1 : 0;
		if (x >= len)
			x = s < 0 ? len - 1 : len;
	}
	if (nb) {
		y = s < 0 ? -1 : len;
	} else {
		if (y < 0)
			y += len;
		if (y < 0)
			y = s < 0 ? -1 : 0;
		if (y >= len)
			y = s < 0 ? len - 1 : len;
	}
	*start = x;
	*stop = y;
	*step = s;
	return 0;
}

static int do_slice(struct rctx *r, const struct val *obj, const struct val *a, const struct val *b,
		    const struct val *c, bool const_operands, struct val *out)
{
	if (obj->t == V_UNDEF)
		return undef_fail(r, obj);
	int64_t start, stop, step;
	int rc;
	if (obj->t == V_LIST && (obj->sub == LK_LIST || obj->sub == LK_TUPLE || obj->sub == LK_RANGE)) {
		if ((rc = slice_bounds(r, (int64_t)obj->l->n, a, b, c, &start, &stop, &step)))
			return rc;
		if (step == 1) {
			/* a contiguous slice shares the array; both sides copy it before a pop or clear */
			struct list *l = ralloc(r, sizeof *l);
			if (!l)
				return room(r);
			l->v = obj->l->v + start;
			l->n = l->cap = stop > start ? (size_t)(stop - start) : 0;
			l->shared = true;
			obj->l->shared = true;
			*out = (struct val){0};
			out->t = V_LIST;
			out->sub = obj->sub;
			out->l = l;
		} else {
			if ((rc = v_newlist(r, obj->l->n, obj->sub, out)))
				return rc;
			for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
				out->l->v[out->l->n++] = obj->l->v[i];
		}
		if (obj->sub == LK_RANGE) {
			/* a slice of a range is a range */
			const struct list *l = obj->l;
			out->l->rstart = l->rstart + start * l->rstep;
			out->l->rstop = l->rstart + stop * l->rstep;
			out->l->rstep = l->rstep * step;
		}
		return 0;
	}
	if (obj->t == V_STR) {
		int64_t len = (int64_t)u8_len(obj->s, obj->n);
		if ((rc = slice_bounds(r, len, a, b, c, &start, &stop, &step)))
			return rc;
		if (step == 1) {
			if (stop <= start)
				return str_sub(r, obj, 0, 0, out);
			size_t bo = u8_off(obj->s, obj->n, start), be = u8_off(obj->s, obj->n, stop);
			return str_sub(r, obj, bo, be - bo, out);
		}
		/* general step: collect characters with their masks */
		size_t *offs = ralloc(r, (size_t)(len + 1) * sizeof *offs);
		if (!offs)
			return room(r);
		int64_t k = 0;
		for (size_t i = 0; i < obj->n; i++)
			if (((unsigned char)obj->s[i] & 0xC0) != 0x80)
				offs[k++] = i;
		offs[k] = obj->n;
		struct sbuf sb;
		sb_init(&sb);
		for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
			sb_putv_range(&sb, obj, offs[i], offs[i + 1] - offs[i]);
		rc = sb_to_val(r, &sb, out);
		sb_free(&sb);
		if (!rc)
			out->sub = obj->sub & SUB_MARKUP;
		return rc;
	}
	/* slices bypass the sandbox's getitem: Python's own errors */
	char msg[120];
	if (obj->t == V_DICT)
		snprintf(msg, sizeof msg, "TypeError: unhashable type: 'slice'");
	else
		snprintf(msg, sizeof msg, "TypeError: '%s' object is not subscriptable", v_typename(obj));
	if (const_operands) {
		if (!r->pending) {
			r->pending = true;
			snprintf(r->pending_err, sizeof r->pending_err, "%s", msg);
		}
		return v_undef_hint(r, FOLDED_SLICE, false, out);
	}
	return rerr(r, INFERD_EINVAL, "%s", msg);
}

/* ---------------------------------------------------------------- calls */

struct argv {
	struct val *pos;
	int npos;
	const char **kwn;
	struct val *kwv;
	int nkw;
};

static int eval_args(struct rctx *r, const struct callargs *ca, struct scope *sc, int extra_kw, struct argv *a)
{
	memset(a, 0, sizeof *a);
	if (!ca && !extra_kw)
		return 0;
	int rc;
	int npos = ca ? ca->npos : 0, nkw = ca ? ca->nkw : 0;
	struct val dyn = v_undef(), dynk = v_undef();
	if (ca && ca->dyn_args) {
		if ((rc = eval(r, ca->dyn_args, sc, &dyn)))
			return rc;
		struct val *items;
		size_t n;
		if ((rc = v_iterate(r, &dyn, &items, &n)))
			return rc;
		dyn = v_undef();
		if ((rc = v_newlist(r, n, LK_TUPLE, &dyn)))
			return rc;
		if (n)
			memcpy(dyn.l->v, items, n * sizeof *items);
		dyn.l->n = n;
		npos += (int)n;
	}
	if (ca && ca->dyn_kwargs) {
		if ((rc = eval(r, ca->dyn_kwargs, sc, &dynk)))
			return rc;
		if (dynk.t != V_DICT)
			return rerr(r, INFERD_EINVAL, "TypeError: argument after ** must be a mapping, not %s", v_typename(&dynk));
		nkw += (int)dynk.d->n;
	}
	nkw += extra_kw;
	a->pos = npos ? ralloc(r, (size_t)npos * sizeof *a->pos) : NULL;
	a->kwn = nkw ? ralloc(r, (size_t)nkw * sizeof *a->kwn) : NULL;
	a->kwv = nkw ? ralloc(r, (size_t)nkw * sizeof *a->kwv) : NULL;
	if ((npos && !a->pos) || (nkw && (!a->kwn || !a->kwv)))
		return room(r);
	if (ca) {
		for (int i = 0; i < ca->npos; i++)
			if ((rc = eval(r, ca->pos[i], sc, &a->pos[a->npos++])))
				return rc;
		if (dyn.t == V_LIST)
			for (size_t i = 0; i < dyn.l->n; i++)
				a->pos[a->npos++] = dyn.l->v[i];
		for (int i = 0; i < ca->nkw; i++) {
			a->kwn[a->nkw] = ca->kwn[i];
			if ((rc = eval(r, ca->kwv[i], sc, &a->kwv[a->nkw++])))
				return rc;
		}
		if (dynk.t == V_DICT)
			for (size_t i = 0; i < dynk.d->n; i++) {
				const struct val *k = &dynk.d->k[i];
				if (k->t != V_STR)
					return rerr(r, INFERD_EINVAL, "TypeError: keywords must be strings");
				char *kn = ralloc(r, k->n + 1);
				if (!kn)
					return room(r);
				memcpy(kn, k->s, k->n);
				a->kwn[a->nkw] = kn;
				a->kwv[a->nkw++] = dynk.d->v[i];
			}
	}
	return 0;
}

static int call_macro(struct rctx *r, const struct func *f, struct val *args, int nargs, const char **kwn,
		      struct val *kwv, int nkw, struct val *out)
{
	const struct node *m = f->def;
	if (r->call_depth >= TMPL_MAX_CALL_DEPTH)
		return rerr(r, INFERD_ERANGE, "macro calls nested deeper than %d (runaway recursion?)", TMPL_MAX_CALL_DEPTH);
	struct scope *sc = scope_new(r, f->closure);
	if (!sc)
		return room(r);
	int rc = bind_unset(r, sc, m->unset, m->nunset);
	if (rc)
		return rc;
	bool *used = nkw ? ralloc(r, (size_t)nkw) : NULL;
	if (nkw && !used)
		return room(r);
	const char *mname = f->kind == FK_CALLER ? "caller" : f->name;
	int mlen = f->kind == FK_CALLER ? 6 : (int)f->name_n;
	if (nargs > m->np && !(m->flags & NF_VARARGS))
		return rerr(r, INFERD_EINVAL, "TypeError: macro '%.*s' takes not more than %d argument(s)", mlen, mname, m->np);
	/* positional, then keywords by name, then defaults (evaluated in the
	 * macro's scope, so they may read earlier parameters) */
	struct val caller = v_undef();
	bool have_caller = false;
	for (int i = 0; i < nkw; i++)
		if (!strcmp(kwn[i], "caller") && (m->flags & NF_CALLER)) {
			caller = kwv[i];
			have_caller = true;
		}
	for (int p = 0; p < m->np; p++) {
		struct val v;
		bool got = false;
		if (p < nargs) {
			v = args[p];
			got = true;
		} else {
			for (int i = 0; i < nkw; i++)
				if (!used[i] && !strcmp(kwn[i], m->pnames[p])) {
					v = kwv[i];
					used[i] = true;
					got = true;
					break;
				}
		}
		if (!got) {
			if (m->kids2[p]) {
				if ((rc = eval_root(r, m->kids2[p], sc, &v)))
					return rc;
			} else {
				char hint[160];
				snprintf(hint, sizeof hint, "parameter '%s' was not provided", m->pnames[p]);
				char *h = ralloc(r, strlen(hint) + 1);
				if (!h)
					return room(r);
				strcpy(h, hint);
				if ((rc = v_undef_hint(r, h, false, &v)))
					return rc;
			}
		}
		if ((rc = scope_set(r, sc, m->psyms[p], v)))
			return rc;
	}
	if (m->flags & NF_CALLER) {
		if (!have_caller && (rc = v_undef_hint(r, "No caller defined", false, &caller)))
			return rc;
		if ((rc = scope_set(r, sc, SYM_CALLER, caller)))
			return rc;
	}
	struct val kwd = v_undef();
	if (m->flags & NF_KWARGS) {
		if ((rc = v_newdict(r, &kwd)))
			return rc;
	}
	for (int i = 0; i < nkw; i++) {
		if (used[i] || (have_caller && !strcmp(kwn[i], "caller")))
			continue;
		if (!(m->flags & NF_KWARGS))
			return rerr(r, INFERD_EINVAL, "TypeError: macro '%.*s' takes no keyword argument '%s'", mlen, mname, kwn[i]);
		if ((rc = dict_set(r, kwd.d, v_strc(kwn[i], strlen(kwn[i])), kwv[i])))
			return rc;
	}
	if (m->flags & NF_KWARGS && (rc = scope_set(r, sc, SYM_KWARGS, kwd)))
		return rc;
	if (m->flags & NF_VARARGS) {
		struct val va;
		int extra = nargs > m->np ? nargs - m->np : 0;
		if ((rc = v_newlist(r, (size_t)extra, LK_TUPLE, &va)))
			return rc;
		for (int i = 0; i < extra; i++)
			va.l->v[va.l->n++] = args[m->np + i];
		if ((rc = scope_set(r, sc, SYM_VARARGS, va)))
			return rc;
	}
	struct sbuf buf, *saved = r->out;
	sb_init(&buf);
	r->out = &buf;
	r->call_depth++;
	int line = r->line;
	rc = exec_body(r, m->kids, m->nk, sc);
	r->call_depth--;
	r->out = saved;
	if (rc > 0)
		rc = rerr(r, INFERD_EINVAL, "'break' or 'continue' outside a loop");
	if (!rc) {
		r->line = line;
		if (buf.over)
			rc = rerr(r, INFERD_ERANGE, "output larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
		else
			rc = sb_to_val(r, &buf, out);
	}
	sb_free(&buf);
	return rc;
}

static int call_loop(struct rctx *r, struct loop *lp, struct val *args, int nargs, struct val *out);

int call_value(struct rctx *r, const struct val *fn, struct val *args, int nargs, const char **kwn,
	       struct val *kwv, int nkw, struct val *out)
{
	switch (fn->t) {
	case V_UNDEF:
		return undef_fail(r, fn);
	case V_FUNC:
		switch (fn->fn->kind) {
		case FK_MACRO:
		case FK_CALLER:
			return call_macro(r, fn->fn, args, nargs, kwn, kwv, nkw, out);
		case FK_GLOBAL:
			return call_global(r, fn->fn->id, args, nargs, kwn, kwv, nkw, out);
		case FK_METHOD:
			return call_method(r, fn->fn, args, nargs, kwn, kwv, nkw, out);
		case FK_JOINER:
			if (nargs || nkw)
				return rerr(r, INFERD_EINVAL, "TypeError: a joiner takes no arguments");
			*out = fn->fn->pos ? fn->fn->self : v_strc("", 0);
			fn->fn->pos = 1;
			return 0;
		case FK_CYCLER:
			return rerr(r, INFERD_EINVAL, "TypeError: 'Cycler' object is not callable");
		default:
			break;
		}
		break;
	case V_LOOP:
		if (fn->lp->fornode)
			return call_loop(r, fn->lp, args, nargs, out);
		return rerr(r, INFERD_EINVAL, "TypeError: The loop must be marked 'recursive' to be called recursively.");
	default:
		break;
	}
	return rerr(r, INFERD_EINVAL, "TypeError: '%s' object is not callable", v_typename(fn));
}

static int eval_call(struct rctx *r, const struct node *n, struct scope *sc, const struct val *caller, struct val *out)
{
	struct val fn;
	int rc;
	struct argv a;
	if (n->a->kind == N_GETATTR && !caller) {
		/* obj.method(...): call str/dict/list methods without a bound-method object */
		struct val obj;
		if ((rc = eval(r, n->a->a, sc, &obj)))
			return rc;
		int id = method_id(&obj, n->a->s, n->a->sn);
		if (id >= 0) {
			struct func f = {0};
			f.kind = FK_METHOD;
			f.id = id;
			f.self = obj;
			f.name = n->a->s;
			f.name_n = n->a->sn;
			if ((rc = eval_args(r, n->ca, sc, 0, &a)))
				return rc;
			r->line = n->line;
			return call_method(r, &f, a.pos, a.npos, a.kwn, a.kwv, a.nkw, out);
		}
		r->line = n->a->line;
		if ((rc = getattr_v(r, &obj, n->a->s, n->a->sn, &fn)))
			return rc;
	} else if ((rc = eval(r, n->a, sc, &fn))) {
		return rc;
	}
	if ((rc = eval_args(r, n->ca, sc, caller ? 1 : 0, &a)))
		return rc;
	if (caller) {
		a.kwn[a.nkw] = "caller";
		a.kwv[a.nkw++] = *caller;
	}
	r->line = n->line;
	return call_value(r, &fn, a.pos, a.npos, a.kwn, a.kwv, a.nkw, out);
}

static int eval_filter(struct rctx *r, const struct node *n, struct scope *sc, const struct val *input, struct val *out)
{
	struct val v;
	int rc;
	if (n->a) {
		if ((rc = eval(r, n->a, sc, &v)))
			return rc;
	} else {
		v = *input;
	}
	struct argv a;
	if ((rc = eval_args(r, n->ca, sc, 0, &a)))
		return rc;
	r->line = n->line;
	if (n->flags & NF_SOFTMISSING)
		return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No filter named '%.*s' found.", (int)n->sn, n->s);
	return apply_filter(r, n->fid, n->s, &v, a.pos, a.npos, a.kwn, a.kwv, a.nkw, out);
}

/* a filter chain whose innermost filter has no operand (filter blocks) */
static int eval_filter_chain(struct rctx *r, const struct node *n, struct scope *sc, const struct val *input, struct val *out)
{
	if (n->a) {
		struct val inner;
		int rc = eval_filter_chain(r, n->a, sc, input, &inner);
		if (rc)
			return rc;
		struct node copy = *n;
		copy.a = NULL;
		return eval_filter(r, &copy, sc, &inner, out);
	}
	return eval_filter(r, n, sc, input, out);
}

/* ---------------------------------------------------------------- expressions */

static int eval_inner(struct rctx *r, const struct node *n, struct scope *sc, struct val *out)
{
	int rc;
	struct val a, b;
	switch (n->kind) {
	case N_CONST:
		*out = n->cv;
		return 0;
	case N_NAME:
		r->nonconst++;
		return lookup(r, n, sc, out);
	case N_GETATTR:
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		r->line = n->line;
		return getattr_v(r, &a, n->s, n->sn, out);
	case N_GETITEM: {
		uint64_t nc0 = r->nonconst;
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		if (n->b->kind == N_SLICE) {
			struct val s[3];
			const struct node *parts[3] = {n->b->a, n->b->b, n->b->c};
			for (int i = 0; i < 3; i++) {
				s[i] = v_none();
				if (parts[i] && (rc = eval(r, parts[i], sc, &s[i])))
					return rc;
			}
			r->line = n->line;
			return do_slice(r, &a, &s[0], &s[1], &s[2], r->nonconst == nc0, out);
		}
		if ((rc = eval(r, n->b, sc, &b)))
			return rc;
		r->line = n->line;
		return getitem_v(r, &a, &b, out);
	}
	case N_SLICE:
		return rerr(r, INFERD_EINVAL, "a slice outside a subscript");
	case N_CALL:
		r->nonconst++;
		return eval_call(r, n, sc, NULL, out);
	case N_FILTER:
		if (filter_needs_context(n->fid))
			r->nonconst++;
		return eval_filter(r, n, sc, NULL, out);
	case N_TEST: {
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		struct argv av;
		if ((rc = eval_args(r, n->ca, sc, 0, &av)))
			return rc;
		r->line = n->line;
		if (n->flags & NF_SOFTMISSING)
			return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No test named '%.*s' found.", (int)n->sn, n->s);
		bool res;
		if ((rc = apply_test(r, n->fid, n->s, &a, av.pos, av.npos, av.kwn, av.kwv, av.nkw, &res)))
			return rc;
		*out = v_bool(res);
		return 0;
	}
	case N_UNARY:
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		if (n->op == U_NOT) {
			*out = v_bool(!v_truthy(&a));
			return 0;
		}
		if (a.t == V_UNDEF)
			return undef_fail(r, &a);
		if (a.t == V_INT || a.t == V_BOOL) {
			int64_t x = a.t == V_INT ? a.i : a.b;
			if (n->op == U_NEG && x == INT64_MIN)
				return overflow(r);
			*out = v_int(n->op == U_NEG ? -x : x);
			return 0;
		}
		if (a.t == V_FLOAT) {
			*out = v_float(n->op == U_NEG ? -a.f : a.f);
			return 0;
		}
		return rerr(r, INFERD_EINVAL, "TypeError: bad operand type for unary %c: '%s'", n->op == U_NEG ? '-' : '+',
			    v_typename(&a));
	case N_BIN:
		if ((rc = eval(r, n->a, sc, &a)) || (rc = eval(r, n->b, sc, &b)))
			return rc;
		r->line = n->line;
		return binop(r, n->op, &a, &b, out);
	case N_AND:
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		if (!v_truthy(&a)) {
			*out = a;
			return 0;
		}
		return eval(r, n->b, sc, out);
	case N_OR:
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		if (v_truthy(&a)) {
			*out = a;
			return 0;
		}
		return eval(r, n->b, sc, out);
	case N_CMP: {
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		bool res = true;
		for (int i = 0; i < n->nk; i++) {
			if ((rc = eval(r, n->kids[i], sc, &b)))
				return rc;
			r->line = n->line;
			int op = n->ops[i];
			if (op == C_IN || op == C_NOTIN) {
				if ((rc = v_contains(r, &b, &a, &res)))
					return rc;
				if (op == C_NOTIN)
					res = !res;
			} else if ((rc = v_cmp(r, &a, &b, op, &res))) {
				return rc;
			}
			if (!res)
				break;
			a = b;
		}
		*out = v_bool(res);
		return 0;
	}
	case N_CONCAT: {
		/* str(x) ~ str(y) ~ ...: a plain str (Markup is not kept) */
		struct val acc;
		for (int i = 0; i < n->nk; i++) {
			if ((rc = eval(r, n->kids[i], sc, &a)) || (rc = v_str(r, &a, &b)))
				return rc;
			b.sub &= (uint8_t)~SUB_MARKUP;
			if (i == 0)
				acc = b;
			else if ((rc = str_concat(r, &acc, &b, &acc)))
				return rc;
		}
		*out = acc;
		return 0;
	}
	case N_COND:
		if ((rc = eval(r, n->a, sc, &a)))
			return rc;
		if (v_truthy(&a))
			return eval(r, n->b, sc, out);
		if (n->c)
			return eval(r, n->c, sc, out);
		r->nonconst++;  /* Jinja does not fold an if-expression without else that is false */
		return v_undef_hint(r, "the inline if-expression evaluated to false and no else section was defined.", false, out);
	case N_LIST:
	case N_TUPLE:
		if ((rc = v_newlist(r, (size_t)n->nk, n->kind == N_LIST ? LK_LIST : LK_TUPLE, out)))
			return rc;
		for (int i = 0; i < n->nk; i++)
			if ((rc = eval(r, n->kids[i], sc, &out->l->v[out->l->n++])))
				return rc;
		return 0;
	case N_DICT:
		if ((rc = v_newdict(r, out)))
			return rc;
		for (int i = 0; i < n->nk; i++) {
			if ((rc = eval(r, n->kids[i], sc, &a)) || (rc = eval(r, n->kids2[i], sc, &b)))
				return rc;
			uint64_t h;
			if (v_hash(&a, &h))
				return rerr(r, INFERD_EINVAL, "TypeError: unhashable type: '%s'", v_typename(&a));
			if ((rc = dict_set(r, out->d, a, b)))
				return rc;
		}
		return 0;
	default:
		return rerr(r, INFERD_EINVAL, "internal error: cannot evaluate node kind %d", n->kind);
	}
}

/* jinja2.compiler.has_safe_repr: what a folded constant may be */
static bool safe_repr(const struct val *v, int depth)
{
	if (depth > 100)
		return false;
	switch (v->t) {
	case V_NONE: case V_BOOL: case V_INT: case V_FLOAT: case V_STR:
		return true;
	case V_LIST:
		if (v->sub != LK_LIST && v->sub != LK_TUPLE && v->sub != LK_RANGE)
			return false;
		for (size_t i = 0; i < v->l->n; i++)
			if (!safe_repr(&v->l->v[i], depth + 1))
				return false;
		return true;
	case V_DICT:
		for (size_t i = 0; i < v->d->n; i++)
			if (!safe_repr(&v->d->k[i], depth + 1) || !safe_repr(&v->d->v[i], depth + 1))
				return false;
		return true;
	default:
		return false;
	}
}

int eval(struct rctx *r, const struct node *n, struct scope *sc, struct val *out)
{
	if (++r->eval_depth > MAX_EVAL_DEPTH) {
		r->eval_depth--;
		return rerr(r, INFERD_ERANGE, "evaluation nested deeper than %d levels", MAX_EVAL_DEPTH);
	}
	r->line = n->line;
	uint64_t nc0 = r->nonconst;
	bool had_pending = r->pending;
	int rc = eval_inner(r, n, sc, out);
	/* a constant subtree with a safe value was folded: its slice error never happened */
	if (!rc && r->pending && !had_pending && r->nonconst == nc0 && n->kind != N_CONST && safe_repr(out, 0))
		r->pending = false;
	r->eval_depth--;
	return rc;
}

/* an expression a statement evaluates: a pending slice error is raised now */
static int eval_root(struct rctx *r, const struct node *n, struct scope *sc, struct val *out)
{
	int rc = eval(r, n, sc, out);
	if (!rc && r->pending) {
		r->pending = false;
		rc = rerr(r, INFERD_EINVAL, "%s", r->pending_err);
	}
	return rc;
}

/* ---------------------------------------------------------------- assignment */

static int unpack(struct rctx *r, const struct val *v, int want, struct val **items)
{
	size_t n;
	int rc = v_iterate(r, v, items, &n);
	if (rc)
		return rc;
	if ((int64_t)n < want)
		return rerr(r, INFERD_EINVAL, "ValueError: not enough values to unpack (expected %d, got %zu)", want, n);
	if ((int64_t)n > want)
		return rerr(r, INFERD_EINVAL, "ValueError: too many values to unpack (expected %d)", want);
	return 0;
}

static int assign(struct rctx *r, const struct node *target, struct val v, struct scope *sc)
{
	int rc;
	switch (target->kind) {
	case N_NAME:
		return scope_set(r, sc, target->sym, v);
	case N_TUPLE: {
		struct val *items;
		if ((rc = unpack(r, &v, target->nk, &items)))
			return rc;
		for (int i = 0; i < target->nk; i++)
			if ((rc = assign(r, target->kids[i], items[i], sc)))
				return rc;
		return 0;
	}
	case N_NSREF: {
		struct val ns;
		if (!scope_get(sc, target->sym, &ns))
			ns = r->gv[target->sym];
		if (ns.t != V_NS)
			return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: cannot assign attribute on non-namespace object");
		return dict_set(r, &ns.ns->d, v_strc(target->s, target->sn), v);
	}
	default:
		return rerr(r, INFERD_EINVAL, "cannot assign to this target");
	}
}

/* ---------------------------------------------------------------- statements */

static int emit_val(struct rctx *r, const struct val *v)
{
	return v_write_str(r, r->out, v);
}

static int exec_body(struct rctx *r, struct node **kids, int n, struct scope *sc);

static int capture_body(struct rctx *r, struct node **kids, int n, struct scope *sc, struct val *out)
{
	struct sbuf buf, *saved = r->out;
	sb_init(&buf);
	r->out = &buf;
	int rc = exec_body(r, kids, n, sc);
	r->out = saved;
	if (rc == 0) {
		if (buf.over)
			rc = rerr(r, INFERD_ERANGE, "output larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
		else
			rc = sb_to_val(r, &buf, out);
	}
	sb_free(&buf);
	return rc;
}

static int run_for(struct rctx *r, const struct node *n, struct scope *sc, const struct val *iterable, int depth0);

static int call_loop(struct rctx *r, struct loop *lp, struct val *args, int nargs, struct val *out)
{
	if (nargs != 1)
		return rerr(r, INFERD_EINVAL, "TypeError: loop() takes exactly one argument");
	if (r->call_depth >= TMPL_MAX_CALL_DEPTH)
		return rerr(r, INFERD_ERANGE, "recursive loop nested deeper than %d", TMPL_MAX_CALL_DEPTH);
	struct sbuf buf, *saved = r->out;
	sb_init(&buf);
	r->out = &buf;
	r->call_depth++;
	int rc = run_for(r, lp->fornode, lp->outer, &args[0], lp->depth0 + 1);
	r->call_depth--;
	r->out = saved;
	if (!rc)
		rc = buf.over ? rerr(r, INFERD_ERANGE, "output too large") : sb_to_val(r, &buf, out);
	sb_free(&buf);
	return rc;
}

static int run_for(struct rctx *r, const struct node *n, struct scope *sc, const struct val *iterable, int depth0)
{
	struct val *items;
	size_t cnt;
	int rc = v_iterate(r, iterable, &items, &cnt);
	if (rc)
		return rc;
	if (n->c) {
		/* `for x in y if cond`: filter first, so loop.length counts what is kept */
		struct val *kept = cnt ? ralloc(r, cnt * sizeof *kept) : NULL;
		if (cnt && !kept)
			return room(r);
		size_t k = 0;
		struct scope *ts = scope_new(r, sc);
		if (!ts)
			return room(r);
		for (size_t i = 0; i < cnt; i++) {
			if (++r->iters > TMPL_MAX_ITERATIONS)
				return rerr(r, INFERD_ERANGE, "more than %d loop iterations", TMPL_MAX_ITERATIONS);
			ts->n = 0;
			struct val t;
			if ((rc = assign(r, n->a, items[i], ts)) || (rc = eval_root(r, n->c, ts, &t)))
				return rc;
			if (v_truthy(&t))
				kept[k++] = items[i];
		}
		items = kept;
		cnt = k;
	}
	if (cnt == 0) {
		if (!n->nk2)
			return 0;
		struct scope *es = scope_new(r, sc);
		if (!es)
			return room(r);
		if ((rc = bind_unset(r, es, n->unset2, n->nunset2)))
			return rc;
		return exec_body(r, n->kids2, n->nk2, es);
	}
	struct loop *lp = ralloc(r, sizeof *lp);
	struct scope *is = scope_new(r, sc);
	if (!lp || !is)
		return room(r);
	lp->items = items;
	lp->length = (int64_t)cnt;
	lp->depth0 = depth0;
	if (n->flags & NF_RECURSIVE) {
		lp->fornode = n;
		lp->outer = sc;
	}
	struct val lv = {0};
	lv.t = V_LOOP;
	lv.lp = lp;
	for (size_t i = 0; i < cnt; i++) {
		if (++r->iters > TMPL_MAX_ITERATIONS)
			return rerr(r, INFERD_ERANGE, "more than %d loop iterations", TMPL_MAX_ITERATIONS);
		lp->index0 = (int64_t)i;
		is->n = 0;  /* assignments made in an iteration end with it */
		if ((rc = bind_unset(r, is, n->unset, n->nunset)) || (rc = scope_set(r, is, SYM_LOOP, lv)) ||
		    (rc = assign(r, n->a, items[i], is)))
			return rc;
		rc = exec_body(r, n->kids, n->nk, is);
		if (rc == R_BREAK)
			break;
		if (rc == R_CONTINUE)
			continue;
		if (rc)
			return rc;
	}
	return 0;
}

static int exec_stmt(struct rctx *r, const struct node *s, struct scope *sc)
{
	int rc;
	struct val v;
	r->line = s->line;
	switch (s->kind) {
	case S_OUTPUT:
		for (int i = 0; i < s->nk; i++) {
			const struct node *k = s->kids[i];
			if (k->kind == N_CONST && k->cv.t == V_STR) {
				if (!sb_putv(r->out, &k->cv))
					return rerr(r, INFERD_ERANGE, "output larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
				continue;
			}
			/* a constant {{ }} child is folded whatever its value */
			uint64_t nc0 = r->nonconst;
			if ((rc = eval(r, k, sc, &v)))
				return rc;
			if (r->pending) {
				r->pending = false;
				if (r->nonconst != nc0)
					return rerr(r, INFERD_EINVAL, "%s", r->pending_err);
			}
			if ((rc = emit_val(r, &v)))
				return rc;
		}
		return 0;
	case S_IF:
		if ((rc = eval_root(r, s->a, sc, &v)))
			return rc;
		if (v_truthy(&v))
			return exec_body(r, s->kids, s->nk, sc);
		return exec_body(r, s->kids2, s->nk2, sc);
	case S_FOR:
		if ((rc = eval_root(r, s->b, sc, &v)))
			return rc;
		return run_for(r, s, sc, &v, 0);
	case S_SET:
		if ((rc = eval_root(r, s->b, sc, &v)))
			return rc;
		return assign(r, s->a, v, sc);
	case S_SETBLOCK: {
		struct scope *bs = scope_new(r, sc);
		if (!bs)
			return room(r);
		if ((rc = bind_unset(r, bs, s->unset, s->nunset)))
			return rc;
		if ((rc = capture_body(r, s->kids, s->nk, bs, &v)))
			return rc;
		if (s->b && (rc = eval_filter_chain(r, s->b, bs, &v, &v)))
			return rc;
		return assign(r, s->a, v, sc);
	}
	case S_FILTERBLOCK: {
		struct scope *bs = scope_new(r, sc);
		if (!bs)
			return room(r);
		if ((rc = bind_unset(r, bs, s->unset, s->nunset)))
			return rc;
		if ((rc = capture_body(r, s->kids, s->nk, bs, &v)))
			return rc;
		if ((rc = eval_filter_chain(r, s->b, bs, &v, &v)))
			return rc;
		return emit_val(r, &v);
	}
	case S_MACRO:
	case S_CALLBLOCK: {
		struct func *f = ralloc(r, sizeof *f);
		if (!f)
			return room(r);
		f->kind = s->kind == S_MACRO ? FK_MACRO : FK_CALLER;
		f->def = s;
		f->closure = sc;
		f->name = s->s;
		f->name_n = s->sn;
		struct val fv = {0};
		fv.t = V_FUNC;
		fv.fn = f;
		if (s->kind == S_MACRO)
			return scope_set(r, sc, s->sym, fv);
		if ((rc = eval_call(r, s->a, sc, &fv, &v)))
			return rc;
		return emit_val(r, &v);
	}
	case S_WITH: {
		struct scope *ws = scope_new(r, sc);
		if (!ws)
			return room(r);
		if ((rc = bind_unset(r, ws, s->unset, s->nunset)))
			return rc;
		for (int i = 0; i < s->nk2; i++) {
			if ((rc = eval_root(r, s->kids2[i], sc, &v)) || (rc = assign(r, s->tg[i], v, ws)))
				return rc;
		}
		return exec_body(r, s->kids, s->nk, ws);
	}
	case S_SCOPE: {
		struct scope *bs = scope_new(r, sc);
		if (!bs)
			return room(r);
		if ((rc = bind_unset(r, bs, s->unset, s->nunset)))
			return rc;
		return exec_body(r, s->kids, s->nk, bs);
	}
	case S_BREAK:
		return R_BREAK;
	case S_CONTINUE:
		return R_CONTINUE;
	case S_UNSUPPORTED:
		return rerr(r, INFERD_EUNSUPPORTED, "%s", s->s);
	default:
		return rerr(r, INFERD_EINVAL, "internal error: unknown statement kind %d", s->kind);
	}
}

static int exec_body(struct rctx *r, struct node **kids, int n, struct scope *sc)
{
	if (++r->eval_depth > MAX_EVAL_DEPTH) {
		r->eval_depth--;
		return rerr(r, INFERD_ERANGE, "evaluation nested deeper than %d levels", MAX_EVAL_DEPTH);
	}
	int rc = 0;
	for (int i = 0; i < n && !rc; i++) {
		rc = exec_stmt(r, kids[i], sc);
		if (!rc && r->pending) {
			r->pending = false;
			rc = rerr(r, INFERD_EINVAL, "%s", r->pending_err);
		}
	}
	r->eval_depth--;
	return rc;
}

/* ---------------------------------------------------------------- render */

static const char *const default_untrusted[] = {"messages", "tools", "documents", NULL};

static bool is_untrusted(const json_t *keys, const char *name)
{
	if (!keys) {
		for (int i = 0; default_untrusted[i]; i++)
			if (!strcmp(default_untrusted[i], name))
				return true;
		return false;
	}
	size_t i;
	json_t *k;
	json_array_foreach(keys, i, k)
		if (json_is_string(k) && !strcmp(json_string_value(k), name))
			return true;
	return false;
}

int tmpl_render(const struct tmpl *t, const json_t *vars, const json_t *untrusted_keys, char **out, size_t *out_len,
		uint8_t **mask, char *err)
{
	*out = NULL;
	*out_len = 0;
	if (mask)
		*mask = NULL;
	if (!t)
		return seterr(err, INFERD_EINVAL, "no template");
	if (vars && !json_is_object(vars))
		return seterr(err, INFERD_EINVAL, "%s: template variables must be a JSON object", t->name);
	if (untrusted_keys && !json_is_array(untrusted_keys))
		return seterr(err, INFERD_EINVAL, "%s: untrusted keys must be a JSON array of names", t->name);
	struct rctx R;
	memset(&R, 0, sizeof R);
	struct rctx *r = &R;
	r->t = t;
	r->err = err;
	r->ar.limit = TMPL_MAX_MEMORY;
	r->line = 1;
	const char *fixed = getenv("INFERD_TEST_NOW");
	r->now = fixed && *fixed ? (time_t)strtoll(fixed, NULL, 10) : time(NULL);
	struct sbuf ob;
	sb_init(&ob);
	r->out = &ob;
	int rc = 0;
	r->gv = ralloc(r, (size_t)(t->nsyms ? t->nsyms : 1) * sizeof *r->gv);
	if (!r->gv)
		rc = room(r);
	for (int i = 0; !rc && i < t->nsyms; i++) {
		r->gv[i] = v_undef();
		json_t *j = vars ? json_object_get(vars, t->syms[i]) : NULL;
		if (j) {
			rc = v_from_json(r, j, is_untrusted(untrusted_keys, t->syms[i]), &r->gv[i], 0);
			continue;
		}
		int gid = -1;
		switch (i) {
		case SYM_RANGE: case SYM_DICT: case SYM_NAMESPACE: case SYM_RAISE: case SYM_STRFTIME:
		case SYM_CYCLER: case SYM_JOINER: case SYM_LIPSUM:
			gid = i;
			break;
		default:
			break;
		}
		if (gid >= 0) {
			struct func *f = ralloc(r, sizeof *f);
			if (!f) {
				rc = room(r);
				break;
			}
			f->kind = FK_GLOBAL;
			f->id = gid;
			f->name = t->syms[i];
			f->name_n = t->symlen[i];
			r->gv[i].t = V_FUNC;
			r->gv[i].fn = f;
		}
	}
	if (!rc) {
		struct scope *root = scope_new(r, NULL);
		rc = root ? bind_unset(r, root, t->root->unset, t->root->nunset) : room(r);
		if (!rc)
			rc = exec_body(r, t->root->kids, t->root->nk, root);
		if (rc > 0)
			rc = rerr(r, INFERD_EINVAL, "'break' or 'continue' outside a loop");
	}
	if (!rc && ob.over)
		rc = rerr(r, INFERD_ERANGE, "output larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
	if (!rc) {
		if (!ob.p) {
			ob.p = malloc(1);
			ob.m = malloc(1);
			if (!ob.p || !ob.m)
				rc = seterr(err, INFERD_ENOMEM, "out of memory");
			else
				ob.p[0] = 0;
		}
	}
	ar_free(&r->ar);
	if (rc) {
		sb_free(&ob);
		return rc;
	}
	*out = ob.p;
	*out_len = ob.n;
	if (mask)
		*mask = ob.m;
	else
		free(ob.m);
	return 0;
}
