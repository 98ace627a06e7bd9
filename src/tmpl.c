/*
 * tmpl.c — the template parser (jinja2/parser.py, production for
 * production, so precedence and what is accepted match Jinja) and the
 * public API: tmpl_parse, tmpl_render, tmpl_free.
 *
 * Parsing builds an AST in the template's arena; names are interned into
 * symbol ids so a render resolves globals once. A check pass then does what
 * Jinja's compiler does at compile time: an unknown filter or test is an
 * error unless it sits inside an {% if %} or an inline if (then it fails
 * only when run); `break`/`continue` outside a loop is an error; macros
 * note whether they read caller, varargs or kwargs.
 *
 * Recursion is bounded (TMPL_PARSE_DEPTH) so hostile input cannot exhaust
 * the stack. Errors read "name:line:column: what, near which construct".
 */
#include "tmpl_int.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TMPL_PARSE_DEPTH 200

struct parser {
	struct token *t;
	size_t nt, i;
	struct tmpl *T;
	const char *name;
	char *err;
	int depth;
	int nsyms, capsyms;
	/* open blocks, for messages */
	const char *tags[TMPL_PARSE_DEPTH + 8];
	int tag_line[TMPL_PARSE_DEPTH + 8];
	int ntags;
	const char *const *ends[TMPL_PARSE_DEPTH + 8];
	int nends;
};

static const struct token *cur(struct parser *P) { return &P->t[P->i]; }
static const struct token *peek(struct parser *P, int k)
{
	size_t j = P->i + (size_t)k;
	return &P->t[j < P->nt ? j : P->nt - 1];
}
static void next(struct parser *P)
{
	if (P->i + 1 < P->nt)
		P->i++;
}

static bool tk_name(const struct token *t, const char *s)
{
	return t->type == TK_NAME && t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}
static bool tk_op(const struct token *t, int op) { return t->type == TK_OP && t->op == op; }

static int pfail_at(struct parser *P, const struct token *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pfail_at(struct parser *P, const struct token *t, const char *fmt, ...)
{
	char msg[INFERD_ERR_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return seterr(P->err, INFERD_EFORMAT, "%s:%d:%d: %s", P->name, t->line, t->col, msg);
}

static const char *desc(const struct token *t, char *buf, size_t cap)
{
	return tk_describe(t, buf, cap);
}

static void *palloc(struct parser *P, size_t n)
{
	return ar_alloc(&P->T->ar, n);
}

static int pnomem(struct parser *P)
{
	return seterr(P->err, INFERD_ENOMEM, "%s: out of memory while parsing", P->name);
}

static struct node *mk(struct parser *P, int kind, const struct token *t)
{
	struct node *n = palloc(P, sizeof *n);
	if (!n)
		return NULL;
	n->kind = (uint8_t)kind;
	n->line = t->line;
	n->col = t->col;
	return n;
}

/* growable node arrays in the arena */
struct nvec {
	struct node **v;
	int n, cap;
};
static int nv_push(struct parser *P, struct nvec *a, struct node *x)
{
	if (a->n == a->cap) {
		int nc = a->cap ? a->cap * 2 : 4;
		struct node **nv = palloc(P, (size_t)nc * sizeof *nv);
		if (!nv)
			return pnomem(P);
		if (a->n)
			memcpy(nv, a->v, (size_t)a->n * sizeof *nv);
		a->v = nv;
		a->cap = nc;
	}
	a->v[a->n++] = x;
	return 0;
}

static int intern(struct parser *P, const char *s, size_t n)
{
	struct tmpl *T = P->T;
	for (int i = 0; i < P->nsyms; i++)
		if (T->symlen[i] == n && memcmp(T->syms[i], s, n) == 0)
			return i;
	if (P->nsyms == P->capsyms) {
		int nc = P->capsyms ? P->capsyms * 2 : 64;
		const char **ns = palloc(P, (size_t)nc * sizeof *ns);
		size_t *nl = palloc(P, (size_t)nc * sizeof *nl);
		if (!ns || !nl)
			return -1;
		if (P->nsyms) {
			memcpy(ns, T->syms, (size_t)P->nsyms * sizeof *ns);
			memcpy(nl, T->symlen, (size_t)P->nsyms * sizeof *nl);
		}
		T->syms = ns;
		T->symlen = nl;
		P->capsyms = nc;
	}
	char *c = palloc(P, n + 1);
	if (!c)
		return -1;
	memcpy(c, s, n);
	T->syms[P->nsyms] = c;
	T->symlen[P->nsyms] = n;
	return P->nsyms++;
}

static const char *pstrdup(struct parser *P, const char *s, size_t n)
{
	char *c = palloc(P, n + 1);
	if (c)
		memcpy(c, s, n);
	return c;
}

static int expect_op(struct parser *P, int op, const char *what)
{
	if (!tk_op(cur(P), op)) {
		char b[80];
		return pfail_at(P, cur(P), "expected token '%s', got '%s'", what, desc(cur(P), b, sizeof b));
	}
	next(P);
	return 0;
}

static int expect_type(struct parser *P, int type, const char *what)
{
	if (cur(P)->type != type) {
		char b[80];
		return pfail_at(P, cur(P), "expected token '%s', got '%s'", what, desc(cur(P), b, sizeof b));
	}
	next(P);
	return 0;
}

static int expect_name(struct parser *P, const char *name)
{
	if (!tk_name(cur(P), name)) {
		char b[80];
		return pfail_at(P, cur(P), "expected token '%s', got '%s'", name, desc(cur(P), b, sizeof b));
	}
	next(P);
	return 0;
}

/* ---------------------------------------------------------------- expressions */

static int parse_expression(struct parser *P, bool with_condexpr, struct node **out);
static int parse_tuple(struct parser *P, bool simplified, bool with_condexpr, const char *const *extra_end,
		       bool explicit_paren, struct node **out);
static int parse_unary(struct parser *P, bool with_filter, struct node **out);
static int parse_primary(struct parser *P, struct node **out);
static int parse_postfix(struct parser *P, struct node **node);
static int parse_filter_expr(struct parser *P, struct node **node);
static int parse_or(struct parser *P, struct node **out);

static int deeper(struct parser *P)
{
	if (++P->depth > TMPL_PARSE_DEPTH)
		return pfail_at(P, cur(P), "expression or block nesting deeper than %d levels", TMPL_PARSE_DEPTH);
	return 0;
}

static int parse_condexpr(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	struct node *e1;
	int rc = parse_or(P, &e1);
	if (rc)
		return rc;
	while (tk_name(cur(P), "if")) {
		next(P);
		struct node *e2, *e3 = NULL;
		if ((rc = parse_or(P, &e2)))
			return rc;
		if (tk_name(cur(P), "else")) {
			next(P);
			if ((rc = deeper(P)) || (rc = parse_condexpr(P, &e3)))
				return rc;
			P->depth--;
		}
		struct node *n = mk(P, N_COND, start);
		if (!n)
			return pnomem(P);
		n->a = e2;
		n->b = e1;
		n->c = e3;
		e1 = n;
	}
	*out = e1;
	return 0;
}

static int parse_expression(struct parser *P, bool with_condexpr, struct node **out)
{
	int rc = deeper(P);
	if (rc)
		return rc;
	rc = with_condexpr ? parse_condexpr(P, out) : parse_or(P, out);
	P->depth--;
	return rc;
}

static int parse_not(struct parser *P, struct node **out);
static int parse_and(struct parser *P, struct node **out)
{
	struct node *l;
	int rc = parse_not(P, &l);
	while (!rc && tk_name(cur(P), "and")) {
		const struct token *t = cur(P);
		next(P);
		struct node *rr = NULL;
		if ((rc = parse_not(P, &rr)))
			break;
		struct node *n = mk(P, N_AND, t);
		if (!n)
			return pnomem(P);
		n->a = l;
		n->b = rr;
		l = n;
	}
	*out = l;
	return rc;
}

static int parse_or(struct parser *P, struct node **out)
{
	struct node *l;
	int rc = parse_and(P, &l);
	while (!rc && tk_name(cur(P), "or")) {
		const struct token *t = cur(P);
		next(P);
		struct node *rr = NULL;
		if ((rc = parse_and(P, &rr)))
			break;
		struct node *n = mk(P, N_OR, t);
		if (!n)
			return pnomem(P);
		n->a = l;
		n->b = rr;
		l = n;
	}
	*out = l;
	return rc;
}

static int parse_compare(struct parser *P, struct node **out);
static int parse_not(struct parser *P, struct node **out)
{
	if (tk_name(cur(P), "not")) {
		const struct token *t = cur(P);
		next(P);
		int rc = deeper(P);
		struct node *x = NULL;
		if (rc || (rc = parse_not(P, &x)))
			return rc;
		P->depth--;
		struct node *n = mk(P, N_UNARY, t);
		if (!n)
			return pnomem(P);
		n->op = U_NOT;
		n->a = x;
		*out = n;
		return 0;
	}
	return parse_compare(P, out);
}

static int parse_math1(struct parser *P, struct node **out);
static int parse_compare(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	struct node *e;
	int rc = parse_math1(P, &e);
	if (rc)
		return rc;
	struct nvec ops = {0};
	uint8_t opc[64];
	int nop = 0;
	for (;;) {
		const struct token *t = cur(P);
		int op = -1;
		if (t->type == TK_OP) {
			switch (t->op) {
			case OP_EQ: op = C_EQ; break;
			case OP_NE: op = C_NE; break;
			case OP_LT: op = C_LT; break;
			case OP_LTEQ: op = C_LE; break;
			case OP_GT: op = C_GT; break;
			case OP_GTEQ: op = C_GE; break;
			default: break;
			}
			if (op >= 0)
				next(P);
		} else if (tk_name(t, "in")) {
			op = C_IN;
			next(P);
		} else if (tk_name(t, "not") && tk_name(peek(P, 1), "in")) {
			op = C_NOTIN;
			next(P);
			next(P);
		}
		if (op < 0)
			break;
		if (nop >= 64)
			return pfail_at(P, t, "too many chained comparisons");
		struct node *x = NULL;
		if ((rc = parse_math1(P, &x)))
			return rc;
		if ((rc = nv_push(P, &ops, x)))
			return rc;
		opc[nop++] = (uint8_t)op;
	}
	if (!nop) {
		*out = e;
		return 0;
	}
	struct node *n = mk(P, N_CMP, start);
	if (!n)
		return pnomem(P);
	n->a = e;
	n->kids = ops.v;
	n->nk = ops.n;
	n->ops = palloc(P, (size_t)nop);
	if (!n->ops)
		return pnomem(P);
	memcpy(n->ops, opc, (size_t)nop);
	*out = n;
	return 0;
}

static int parse_concat(struct parser *P, struct node **out);
static int parse_math1(struct parser *P, struct node **out)
{
	struct node *l;
	int rc = parse_concat(P, &l);
	while (!rc && (tk_op(cur(P), OP_ADD) || tk_op(cur(P), OP_SUB))) {
		const struct token *t = cur(P);
		next(P);
		struct node *rr = NULL;
		if ((rc = parse_concat(P, &rr)))
			break;
		struct node *n = mk(P, N_BIN, t);
		if (!n)
			return pnomem(P);
		n->op = t->op == OP_ADD ? B_ADD : B_SUB;
		n->a = l;
		n->b = rr;
		l = n;
	}
	*out = l;
	return rc;
}

static int parse_math2(struct parser *P, struct node **out);
static int parse_concat(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	struct node *first;
	int rc = parse_math2(P, &first);
	if (rc)
		return rc;
	if (!tk_op(cur(P), OP_TILDE)) {
		*out = first;
		return 0;
	}
	struct nvec args = {0};
	if ((rc = nv_push(P, &args, first)))
		return rc;
	while (tk_op(cur(P), OP_TILDE)) {
		next(P);
		struct node *x = NULL;
		if ((rc = parse_math2(P, &x)) || (rc = nv_push(P, &args, x)))
			return rc;
	}
	struct node *n = mk(P, N_CONCAT, start);
	if (!n)
		return pnomem(P);
	n->kids = args.v;
	n->nk = args.n;
	*out = n;
	return 0;
}

static int parse_pow(struct parser *P, struct node **out);
static int parse_math2(struct parser *P, struct node **out)
{
	struct node *l;
	int rc = parse_pow(P, &l);
	while (!rc && cur(P)->type == TK_OP &&
	       (cur(P)->op == OP_MUL || cur(P)->op == OP_DIV || cur(P)->op == OP_FLOORDIV || cur(P)->op == OP_MOD)) {
		const struct token *t = cur(P);
		next(P);
		struct node *rr = NULL;
		if ((rc = parse_pow(P, &rr)))
			break;
		struct node *n = mk(P, N_BIN, t);
		if (!n)
			return pnomem(P);
		n->op = t->op == OP_MUL ? B_MUL : t->op == OP_DIV ? B_DIV : t->op == OP_FLOORDIV ? B_FLOORDIV : B_MOD;
		n->a = l;
		n->b = rr;
		l = n;
	}
	*out = l;
	return rc;
}

static int parse_pow(struct parser *P, struct node **out)
{
	struct node *l;
	int rc = parse_unary(P, true, &l);
	while (!rc && tk_op(cur(P), OP_POW)) {
		const struct token *t = cur(P);
		next(P);
		struct node *rr = NULL;
		if ((rc = parse_unary(P, true, &rr)))
			break;
		struct node *n = mk(P, N_BIN, t);
		if (!n)
			return pnomem(P);
		n->op = B_POW;
		n->a = l;
		n->b = rr;
		l = n;
	}
	*out = l;
	return rc;
}

static int parse_unary(struct parser *P, bool with_filter, struct node **out)
{
	const struct token *t = cur(P);
	struct node *node;
	int rc = deeper(P);
	if (rc)
		return rc;
	if (tk_op(t, OP_SUB) || tk_op(t, OP_ADD)) {
		next(P);
		struct node *x = NULL;
		if ((rc = parse_unary(P, false, &x)))
			return rc;
		node = mk(P, N_UNARY, t);
		if (!node)
			return pnomem(P);
		node->op = t->op == OP_SUB ? U_NEG : U_POS;
		node->a = x;
	} else if ((rc = parse_primary(P, &node))) {
		return rc;
	}
	if ((rc = parse_postfix(P, &node)))
		return rc;
	if (with_filter && (rc = parse_filter_expr(P, &node)))
		return rc;
	P->depth--;
	*out = node;
	return 0;
}

static int parse_list(struct parser *P, struct node **out);
static int parse_dict(struct parser *P, struct node **out);

static int parse_primary(struct parser *P, struct node **out)
{
	const struct token *t = cur(P);
	struct node *n;
	char b[80];
	switch (t->type) {
	case TK_NAME:
		if (!(n = mk(P, N_CONST, t)))
			return pnomem(P);
		if (tk_name(t, "true") || tk_name(t, "True"))
			n->cv = v_bool(true);
		else if (tk_name(t, "false") || tk_name(t, "False"))
			n->cv = v_bool(false);
		else if (tk_name(t, "none") || tk_name(t, "None"))
			n->cv = v_none();
		else {
			n->kind = N_NAME;
			n->sym = intern(P, t->p, t->n);
			if (n->sym < 0)
				return pnomem(P);
			n->s = P->T->syms[n->sym];
			n->sn = t->n;
		}
		next(P);
		break;
	case TK_STRING: {
		if (!(n = mk(P, N_CONST, t)))
			return pnomem(P);
		size_t total = 0, j = P->i;
		while (P->t[j].type == TK_STRING)
			total += P->t[j++].n;
		char *s = palloc(P, total + 1);
		if (!s)
			return pnomem(P);
		size_t k = 0;
		while (cur(P)->type == TK_STRING) {
			memcpy(s + k, cur(P)->p, cur(P)->n);
			k += cur(P)->n;
			next(P);
		}
		n->cv = v_strc(s, k);
		break;
	}
	case TK_INT:
	case TK_FLOAT:
		if (!(n = mk(P, N_CONST, t)))
			return pnomem(P);
		n->cv = t->type == TK_INT ? v_int(t->i) : v_float(t->f);
		next(P);
		break;
	case TK_OP:
		if (t->op == OP_LPAREN) {
			next(P);
			int rc = parse_tuple(P, false, true, NULL, true, &n);
			if (rc || (rc = expect_op(P, OP_RPAREN, ")")))
				return rc;
			break;
		}
		if (t->op == OP_LBRACKET)
			return parse_list(P, out);
		if (t->op == OP_LBRACE)
			return parse_dict(P, out);
		/* fall through */
	default:
		return pfail_at(P, t, "unexpected '%s'", desc(t, b, sizeof b));
	}
	*out = n;
	return 0;
}

static bool is_tuple_end(struct parser *P, const char *const *extra)
{
	const struct token *t = cur(P);
	if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || tk_op(t, OP_RPAREN) || t->type == TK_EOF)
		return true;
	if (extra)
		for (int i = 0; extra[i]; i++)
			if (tk_name(t, extra[i]))
				return true;
	return false;
}

static int parse_tuple(struct parser *P, bool simplified, bool with_condexpr, const char *const *extra_end,
		       bool explicit_paren, struct node **out)
{
	const struct token *start = cur(P);
	struct nvec args = {0};
	bool is_tuple = false;
	int rc;
	for (;;) {
		if (args.n && (rc = expect_op(P, OP_COMMA, ",")))
			return rc;
		if (is_tuple_end(P, extra_end))
			break;
		struct node *x = NULL;
		if (simplified)
			rc = parse_primary(P, &x);
		else
			rc = parse_expression(P, with_condexpr, &x);
		if (rc || (rc = nv_push(P, &args, x)))
			return rc;
		if (tk_op(cur(P), OP_COMMA))
			is_tuple = true;
		else
			break;
	}
	if (!is_tuple) {
		if (args.n) {
			*out = args.v[0];
			return 0;
		}
		if (!explicit_paren) {
			char b[80];
			return pfail_at(P, cur(P), "expected an expression, got '%s'", desc(cur(P), b, sizeof b));
		}
	}
	struct node *n = mk(P, N_TUPLE, start);
	if (!n)
		return pnomem(P);
	n->kids = args.v;
	n->nk = args.n;
	*out = n;
	return 0;
}

static int parse_list(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	next(P);
	struct nvec items = {0};
	int rc;
	while (!tk_op(cur(P), OP_RBRACKET)) {
		if (items.n && (rc = expect_op(P, OP_COMMA, ",")))
			return rc;
		if (tk_op(cur(P), OP_RBRACKET))
			break;
		struct node *x = NULL;
		if ((rc = parse_expression(P, true, &x)) || (rc = nv_push(P, &items, x)))
			return rc;
	}
	if ((rc = expect_op(P, OP_RBRACKET, "]")))
		return rc;
	struct node *n = mk(P, N_LIST, start);
	if (!n)
		return pnomem(P);
	n->kids = items.v;
	n->nk = items.n;
	*out = n;
	return 0;
}

static int parse_dict(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	next(P);
	struct nvec keys = {0}, vals = {0};
	int rc;
	while (!tk_op(cur(P), OP_RBRACE)) {
		if (keys.n && (rc = expect_op(P, OP_COMMA, ",")))
			return rc;
		if (tk_op(cur(P), OP_RBRACE))
			break;
		struct node *k = NULL, *v = NULL;
		if ((rc = parse_expression(P, true, &k)) || (rc = expect_op(P, OP_COLON, ":")) ||
		    (rc = parse_expression(P, true, &v)) || (rc = nv_push(P, &keys, k)) || (rc = nv_push(P, &vals, v)))
			return rc;
	}
	if ((rc = expect_op(P, OP_RBRACE, "}")))
		return rc;
	struct node *n = mk(P, N_DICT, start);
	if (!n)
		return pnomem(P);
	n->kids = keys.v;
	n->nk = keys.n;
	n->kids2 = vals.v;
	n->nk2 = vals.n;
	*out = n;
	return 0;
}

static int parse_subscribed(struct parser *P, struct node **out)
{
	const struct token *start = cur(P);
	struct node *parts[3] = {NULL, NULL, NULL};
	int rc;
	if (tk_op(cur(P), OP_COLON)) {
		next(P);
	} else {
		struct node *x = NULL;
		if ((rc = parse_expression(P, true, &x)))
			return rc;
		if (!tk_op(cur(P), OP_COLON)) {
			*out = x;
			return 0;
		}
		next(P);
		parts[0] = x;
	}
	if (tk_op(cur(P), OP_COLON)) {
		/* no stop */
	} else if (!tk_op(cur(P), OP_RBRACKET) && !tk_op(cur(P), OP_COMMA)) {
		if ((rc = parse_expression(P, true, &parts[1])))
			return rc;
	}
	if (tk_op(cur(P), OP_COLON)) {
		next(P);
		if (!tk_op(cur(P), OP_RBRACKET) && !tk_op(cur(P), OP_COMMA))
			if ((rc = parse_expression(P, true, &parts[2])))
				return rc;
	}
	struct node *n = mk(P, N_SLICE, start);
	if (!n)
		return pnomem(P);
	n->a = parts[0];
	n->b = parts[1];
	n->c = parts[2];
	*out = n;
	return 0;
}

static int parse_subscript(struct parser *P, struct node **node)
{
	const struct token *t = cur(P);
	next(P);
	int rc;
	if (t->op == OP_DOT) {
		const struct token *a = cur(P);
		next(P);
		if (a->type == TK_NAME) {
			struct node *n = mk(P, N_GETATTR, t);
			if (!n)
				return pnomem(P);
			n->a = *node;
			n->s = pstrdup(P, a->p, a->n);
			n->sn = a->n;
			if (!n->s)
				return pnomem(P);
			*node = n;
			return 0;
		}
		if (a->type != TK_INT)
			return pfail_at(P, a, "expected name or number after '.'");
		struct node *k = mk(P, N_CONST, a), *n = mk(P, N_GETITEM, t);
		if (!k || !n)
			return pnomem(P);
		k->cv = v_int(a->i);
		n->a = *node;
		n->b = k;
		*node = n;
		return 0;
	}
	struct nvec args = {0};
	while (!tk_op(cur(P), OP_RBRACKET)) {
		if (args.n && (rc = expect_op(P, OP_COMMA, ",")))
			return rc;
		if (cur(P)->type == TK_EOF)
			break;
		struct node *x = NULL;
		if ((rc = parse_subscribed(P, &x)) || (rc = nv_push(P, &args, x)))
			return rc;
	}
	if ((rc = expect_op(P, OP_RBRACKET, "]")))
		return rc;
	struct node *n = mk(P, N_GETITEM, t);
	if (!n)
		return pnomem(P);
	n->a = *node;
	if (args.n == 1) {
		n->b = args.v[0];
	} else {
		struct node *tu = mk(P, N_TUPLE, t);
		if (!tu)
			return pnomem(P);
		tu->kids = args.v;
		tu->nk = args.n;
		n->b = tu;
	}
	*node = n;
	return 0;
}

static int parse_call_args(struct parser *P, struct callargs **out)
{
	const struct token *lp = cur(P);
	int rc = expect_op(P, OP_LPAREN, "(");
	if (rc)
		return rc;
	struct callargs *ca = palloc(P, sizeof *ca);
	if (!ca)
		return pnomem(P);
	struct nvec pos = {0}, kwv = {0};
	const char **kwn = NULL;
	int kwcap = 0;
	bool require_comma = false;
	while (!tk_op(cur(P), OP_RPAREN)) {
		if (require_comma) {
			if ((rc = expect_op(P, OP_COMMA, ",")))
				return rc;
			if (tk_op(cur(P), OP_RPAREN))
				break;
		}
		if (cur(P)->type == TK_EOF)
			return pfail_at(P, lp, "unclosed '(' in a call");
		if (tk_op(cur(P), OP_MUL)) {
			if (ca->dyn_args || ca->dyn_kwargs)
				return pfail_at(P, lp, "invalid syntax for function call expression");
			next(P);
			if ((rc = parse_expression(P, true, &ca->dyn_args)))
				return rc;
		} else if (tk_op(cur(P), OP_POW)) {
			if (ca->dyn_kwargs)
				return pfail_at(P, lp, "invalid syntax for function call expression");
			next(P);
			if ((rc = parse_expression(P, true, &ca->dyn_kwargs)))
				return rc;
		} else if (cur(P)->type == TK_NAME && tk_op(peek(P, 1), OP_ASSIGN)) {
			if (ca->dyn_kwargs)
				return pfail_at(P, lp, "invalid syntax for function call expression");
			const struct token *k = cur(P);
			next(P);
			next(P);
			struct node *v;
			if ((rc = parse_expression(P, true, &v)))
				return rc;
			if (kwv.n == kwcap) {
				int nc = kwcap ? kwcap * 2 : 4;
				const char **nn = palloc(P, (size_t)nc * sizeof *nn);
				if (!nn)
					return pnomem(P);
				if (kwv.n)
					memcpy(nn, kwn, (size_t)kwv.n * sizeof *nn);
				kwn = nn;
				kwcap = nc;
			}
			kwn[kwv.n] = pstrdup(P, k->p, k->n);
			if (!kwn[kwv.n] || (rc = nv_push(P, &kwv, v)))
				return rc ? rc : pnomem(P);
		} else {
			if (ca->dyn_args || ca->dyn_kwargs || kwv.n)
				return pfail_at(P, lp, "invalid syntax for function call expression "
					       "(a positional argument after keyword arguments)");
			struct node *x = NULL;
			if ((rc = parse_expression(P, true, &x)) || (rc = nv_push(P, &pos, x)))
				return rc;
		}
		require_comma = true;
	}
	if ((rc = expect_op(P, OP_RPAREN, ")")))
		return rc;
	ca->pos = pos.v;
	ca->npos = pos.n;
	ca->kwn = kwn;
	ca->kwv = kwv.v;
	ca->nkw = kwv.n;
	*out = ca;
	return 0;
}

static int parse_call(struct parser *P, struct node **node)
{
	const struct token *t = cur(P);
	struct node *n = mk(P, N_CALL, t);
	if (!n)
		return pnomem(P);
	int rc = parse_call_args(P, &n->ca);
	if (rc)
		return rc;
	n->a = *node;
	*node = n;
	return 0;
}

static int parse_postfix(struct parser *P, struct node **node)
{
	for (;;) {
		const struct token *t = cur(P);
		int rc = 0;
		if (tk_op(t, OP_DOT) || tk_op(t, OP_LBRACKET))
			rc = parse_subscript(P, node);
		else if (tk_op(t, OP_LPAREN))
			rc = parse_call(P, node);
		else
			return 0;
		if (rc)
			return rc;
	}
}

static int dotted_name(struct parser *P, const char **name, size_t *n)
{
	const struct token *t = cur(P);
	if (t->type != TK_NAME) {
		char b[80];
		return pfail_at(P, t, "expected a filter or test name, got '%s'", desc(t, b, sizeof b));
	}
	size_t total = t->n;
	const char *start = t->p;
	next(P);
	/* names joined by dots: rebuild as one string */
	char buf[256];
	size_t k = 0;
	memcpy(buf, start, total < sizeof buf ? total : sizeof buf - 1);
	k = total < sizeof buf ? total : sizeof buf - 1;
	while (tk_op(cur(P), OP_DOT)) {
		next(P);
		const struct token *x = cur(P);
		if (x->type != TK_NAME)
			return pfail_at(P, x, "expected a name after '.'");
		if (k + 1 + x->n < sizeof buf) {
			buf[k++] = '.';
			memcpy(buf + k, x->p, x->n);
			k += x->n;
		}
		next(P);
	}
	*name = pstrdup(P, buf, k);
	*n = k;
	return *name ? 0 : pnomem(P);
}

static int parse_filter(struct parser *P, struct node *node, bool start_inline, struct node **out)
{
	int rc;
	while (tk_op(cur(P), OP_PIPE) || start_inline) {
		if (!start_inline)
			next(P);
		const struct token *t = cur(P);
		struct node *n = mk(P, N_FILTER, t);
		if (!n)
			return pnomem(P);
		if ((rc = dotted_name(P, &n->s, &n->sn)))
			return rc;
		n->fid = filter_id(n->s, n->sn);
		if (tk_op(cur(P), OP_LPAREN)) {
			if ((rc = parse_call_args(P, &n->ca)))
				return rc;
		}
		n->a = node;
		node = n;
		start_inline = false;
	}
	*out = node;
	return 0;
}

static int parse_test(struct parser *P, struct node **node)
{
	const struct token *is = cur(P);
	next(P);
	bool negated = false;
	if (tk_name(cur(P), "not")) {
		next(P);
		negated = true;
	}
	struct node *n = mk(P, N_TEST, is);
	if (!n)
		return pnomem(P);
	int rc = dotted_name(P, &n->s, &n->sn);
	if (rc)
		return rc;
	n->fid = test_id(n->s, n->sn);
	const struct token *t = cur(P);
	if (tk_op(t, OP_LPAREN)) {
		if ((rc = parse_call_args(P, &n->ca)))
			return rc;
	} else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT || t->type == TK_FLOAT ||
		    tk_op(t, OP_LBRACKET) || tk_op(t, OP_LBRACE)) &&
		   !tk_name(t, "else") && !tk_name(t, "or") && !tk_name(t, "and")) {
		if (tk_name(t, "is"))
			return pfail_at(P, t, "You cannot chain multiple tests with is");
		struct node *arg;
		if ((rc = parse_primary(P, &arg)) || (rc = parse_postfix(P, &arg)))
			return rc;
		struct callargs *ca = palloc(P, sizeof *ca);
		struct node **pv = palloc(P, sizeof *pv);
		if (!ca || !pv)
			return pnomem(P);
		pv[0] = arg;
		ca->pos = pv;
		ca->npos = 1;
		n->ca = ca;
	}
	n->a = *node;
	if (negated) {
		struct node *nn = mk(P, N_UNARY, is);
		if (!nn)
			return pnomem(P);
		nn->op = U_NOT;
		nn->a = n;
		n = nn;
	}
	*node = n;
	return 0;
}

static int parse_filter_expr(struct parser *P, struct node **node)
{
	for (;;) {
		const struct token *t = cur(P);
		int rc = 0;
		if (tk_op(t, OP_PIPE))
			rc = parse_filter(P, *node, false, node);
		else if (tk_name(t, "is"))
			rc = parse_test(P, node);
		else if (tk_op(t, OP_LPAREN))
			rc = parse_call(P, node);
		else
			return 0;
		if (rc)
			return rc;
	}
}

/* ---------------------------------------------------------------- statements */

static int subparse(struct parser *P, const char *const *end_tokens, struct nvec *body);
static int parse_statement(struct parser *P, struct nvec *body);

static bool can_assign(const struct node *n)
{
	if (n->kind == N_NAME || n->kind == N_NSREF)
		return true;
	if (n->kind == N_TUPLE) {
		for (int i = 0; i < n->nk; i++)
			if (!can_assign(n->kids[i]))
				return false;
		return true;
	}
	return false;
}

static const char *node_what(const struct node *n)
{
	switch (n->kind) {
	case N_CONST: return "const";
	case N_GETATTR: return "getattr";
	case N_GETITEM: return "getitem";
	case N_CALL: return "call";
	case N_LIST: return "list";
	case N_DICT: return "dict";
	default: return "expression";
	}
}

static int parse_assign_target(struct parser *P, bool with_tuple, bool name_only, const char *const *extra_end,
			       bool with_namespace, struct node **out)
{
	int rc;
	struct node *target;
	if (with_namespace && tk_op(peek(P, 1), OP_DOT)) {
		const struct token *t = cur(P);
		if ((rc = expect_type(P, TK_NAME, "name")))
			return rc;
		next(P);
		const struct token *a = cur(P);
		if ((rc = expect_type(P, TK_NAME, "name")))
			return rc;
		target = mk(P, N_NSREF, t);
		if (!target)
			return pnomem(P);
		target->sym = intern(P, t->p, t->n);
		target->s = pstrdup(P, a->p, a->n);
		target->sn = a->n;
		if (target->sym < 0 || !target->s)
			return pnomem(P);
	} else if (name_only) {
		const struct token *t = cur(P);
		if ((rc = expect_type(P, TK_NAME, "name")))
			return rc;
		target = mk(P, N_NAME, t);
		if (!target)
			return pnomem(P);
		target->sym = intern(P, t->p, t->n);
		if (target->sym < 0)
			return pnomem(P);
		target->s = P->T->syms[target->sym];
		target->sn = t->n;
	} else {
		if (with_tuple)
			rc = parse_tuple(P, true, true, extra_end, false, &target);
		else
			rc = parse_primary(P, &target);
		if (rc)
			return rc;
	}
	if (!can_assign(target))
		return pfail_at(P, cur(P), "can't assign to '%s'", node_what(target));
	*out = target;
	return 0;
}

/* parse the body of a statement up to one of end_tokens; leaves the
 * current token at the end tag name (or past it with drop_needle) */
static int parse_statements(struct parser *P, const char *const *end_tokens, bool drop_needle, struct nvec *body)
{
	if (tk_op(cur(P), OP_COLON))
		next(P);
	int rc = expect_type(P, TK_BLOCK_END, "end of statement block");
	if (rc)
		return rc;
	if ((rc = subparse(P, end_tokens, body)))
		return rc;
	if (cur(P)->type == TK_EOF) {
		int k = P->ntags - 1;
		char want[160];
		size_t w = 0;
		for (int i = 0; end_tokens[i] && w < sizeof want - 40; i++)
			w += (size_t)snprintf(want + w, sizeof want - w, "%s'%s'", i ? " or " : "", end_tokens[i]);
		if (k >= 0)
			return pfail_at(P, cur(P), "unexpected end of template: the '%s' block opened at line %d is not "
				       "closed (Jinja was looking for %s)", P->tags[k], P->tag_line[k], want);
		return pfail_at(P, cur(P), "unexpected end of template (Jinja was looking for %s)", want);
	}
	if (drop_needle)
		next(P);
	return 0;
}

static struct node **nv_take(struct nvec *v, int *n)
{
	*n = v->n;
	return v->v;
}

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR_ONLY[] = {"endfor", NULL};
static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_IF_ONLY[] = {"endif", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_MACRO[] = {"endmacro", NULL};
static const char *const END_CALL[] = {"endcall", NULL};
static const char *const END_FILTER[] = {"endfilter", NULL};
static const char *const END_WITH[] = {"endwith", NULL};
static const char *const END_BLOCK[] = {"endblock", NULL};
static const char *const END_GEN[] = {"endgeneration", NULL};
static const char *const END_AUTOESC[] = {"endautoescape", NULL};
static const char *const IN_END[] = {"in", NULL};
static const char *const RECURSIVE_END[] = {"recursive", NULL};

static int parse_for(struct parser *P, const struct token *t, struct node **out)
{
	struct node *n = mk(P, S_FOR, t);
	if (!n)
		return pnomem(P);
	int rc;
	if ((rc = parse_assign_target(P, true, false, IN_END, false, &n->a)) || (rc = expect_name(P, "in")) ||
	    (rc = parse_tuple(P, false, false, RECURSIVE_END, false, &n->b)))
		return rc;
	if (tk_name(cur(P), "if")) {
		next(P);
		if ((rc = parse_expression(P, true, &n->c)))
			return rc;
	}
	if (tk_name(cur(P), "recursive")) {
		next(P);
		n->flags |= NF_RECURSIVE;
	}
	struct nvec body = {0}, els = {0};
	if ((rc = parse_statements(P, END_FOR, false, &body)))
		return rc;
	bool is_end = tk_name(cur(P), "endfor");
	next(P);
	if (!is_end && (rc = parse_statements(P, END_FOR_ONLY, true, &els)))
		return rc;
	n->kids = nv_take(&body, &n->nk);
	n->kids2 = nv_take(&els, &n->nk2);
	*out = n;
	return 0;
}

static int parse_if(struct parser *P, const struct token *t, struct node **out)
{
	struct node *result = mk(P, S_IF, t), *node = result;
	if (!result)
		return pnomem(P);
	int rc;
	for (;;) {
		if ((rc = parse_tuple(P, false, false, NULL, false, &node->a)))
			return rc;
		struct nvec body = {0};
		if ((rc = parse_statements(P, END_IF, false, &body)))
			return rc;
		node->kids = nv_take(&body, &node->nk);
		const struct token *tok = cur(P);
		next(P);
		if (tk_name(tok, "elif")) {
			struct node *e = mk(P, S_IF, cur(P));
			struct node **k = palloc(P, sizeof *k);
			if (!e || !k)
				return pnomem(P);
			e->flags |= NF_ELIF;
			k[0] = e;
			node->kids2 = k;
			node->nk2 = 1;
			node = e;
			continue;
		}
		if (tk_name(tok, "else")) {
			struct nvec els = {0};
			if ((rc = parse_statements(P, END_IF_ONLY, true, &els)))
				return rc;
			node->kids2 = nv_take(&els, &node->nk2);
		}
		break;
	}
	*out = result;
	return 0;
}

static int parse_set(struct parser *P, const struct token *t, struct node **out)
{
	struct node *target;
	int rc = parse_assign_target(P, true, false, NULL, true, &target);
	if (rc)
		return rc;
	if (tk_op(cur(P), OP_ASSIGN)) {
		next(P);
		struct node *n = mk(P, S_SET, t);
		if (!n)
			return pnomem(P);
		n->a = target;
		if ((rc = parse_tuple(P, false, true, NULL, false, &n->b)))
			return rc;
		*out = n;
		return 0;
	}
	struct node *n = mk(P, S_SETBLOCK, t);
	if (!n)
		return pnomem(P);
	n->a = target;
	if ((rc = parse_filter(P, NULL, false, &n->b)))
		return rc;
	struct nvec body = {0};
	if ((rc = parse_statements(P, END_SET, true, &body)))
		return rc;
	n->kids = nv_take(&body, &n->nk);
	*out = n;
	return 0;
}

static int parse_signature(struct parser *P, struct node *n)
{
	int rc = expect_op(P, OP_LPAREN, "(");
	if (rc)
		return rc;
	int cap = 0;
	while (!tk_op(cur(P), OP_RPAREN)) {
		if (n->np && (rc = expect_op(P, OP_COMMA, ",")))
			return rc;
		struct node *arg;
		if ((rc = parse_assign_target(P, true, true, NULL, false, &arg)))
			return rc;
		struct node *def = NULL;
		if (tk_op(cur(P), OP_ASSIGN)) {
			next(P);
			if ((rc = parse_expression(P, true, &def)))
				return rc;
		} else if (n->np && n->kids2[n->np - 1]) {
			return pfail_at(P, cur(P), "non-default argument follows default argument");
		}
		if (n->np == cap) {
			int nc = cap ? cap * 2 : 4;
			int *ps = palloc(P, (size_t)nc * sizeof *ps);
			const char **pn = palloc(P, (size_t)nc * sizeof *pn);
			struct node **pd = palloc(P, (size_t)nc * sizeof *pd);
			if (!ps || !pn || !pd)
				return pnomem(P);
			if (n->np) {
				memcpy(ps, n->psyms, (size_t)n->np * sizeof *ps);
				memcpy(pn, n->pnames, (size_t)n->np * sizeof *pn);
				memcpy(pd, n->kids2, (size_t)n->np * sizeof *pd);
			}
			n->psyms = ps;
			n->pnames = pn;
			n->kids2 = pd;
			cap = nc;
		}
		n->psyms[n->np] = arg->sym;
		n->pnames[n->np] = arg->s;
		n->kids2[n->np] = def;
		n->np++;
		n->nk2 = n->np;
	}
	return expect_op(P, OP_RPAREN, ")");
}

static int parse_macro(struct parser *P, const struct token *t, struct node **out)
{
	struct node *n = mk(P, S_MACRO, t);
	if (!n)
		return pnomem(P);
	struct node *name;
	int rc = parse_assign_target(P, true, true, NULL, false, &name);
	if (rc || (rc = parse_signature(P, n)))
		return rc;
	n->sym = name->sym;
	n->s = name->s;
	n->sn = name->sn;
	struct nvec body = {0};
	if ((rc = parse_statements(P, END_MACRO, true, &body)))
		return rc;
	n->kids = nv_take(&body, &n->nk);
	*out = n;
	return 0;
}

static int parse_call_block(struct parser *P, const struct token *t, struct node **out)
{
	struct node *n = mk(P, S_CALLBLOCK, t);
	if (!n)
		return pnomem(P);
	int rc;
	if (tk_op(cur(P), OP_LPAREN) && (rc = parse_signature(P, n)))
		return rc;
	struct node *call;
	if ((rc = parse_expression(P, true, &call)))
		return rc;
	if (call->kind != N_CALL)
		return pfail_at(P, t, "expected a call after 'call'");
	n->a = call;
	n->s = "caller";
	n->sn = 6;
	struct nvec body = {0};
	if ((rc = parse_statements(P, END_CALL, true, &body)))
		return rc;
	n->kids = nv_take(&body, &n->nk);
	*out = n;
	return 0;
}

static int parse_scoped_body(struct parser *P, const struct token *t, const char *const *end, int kind,
			     struct node **out)
{
	struct node *n = mk(P, kind, t);
	if (!n)
		return pnomem(P);
	struct nvec body = {0};
	int rc = parse_statements(P, end, true, &body);
	if (rc)
		return rc;
	n->kids = nv_take(&body, &n->nk);
	*out = n;
	return 0;
}

static int skip_to_block_end(struct parser *P)
{
	while (cur(P)->type != TK_BLOCK_END && cur(P)->type != TK_EOF)
		next(P);
	return 0;
}

static int parse_statement(struct parser *P, struct nvec *body)
{
	const struct token *t = cur(P);
	if (t->type != TK_NAME)
		return pfail_at(P, t, "tag name expected");
	if (P->ntags >= TMPL_PARSE_DEPTH)
		return pfail_at(P, t, "blocks nested deeper than %d levels", TMPL_PARSE_DEPTH);
	int rc = deeper(P);
	if (rc)
		return rc;
	char tag[32];
	snprintf(tag, sizeof tag, "%.*s", (int)(t->n < 31 ? t->n : 31), t->p);
	P->tags[P->ntags] = pstrdup(P, tag, strlen(tag));
	P->tag_line[P->ntags] = t->line;
	P->ntags++;
	next(P);
	struct node *n = NULL;
	if (!strcmp(tag, "for"))
		rc = parse_for(P, t, &n);
	else if (!strcmp(tag, "if"))
		rc = parse_if(P, t, &n);
	else if (!strcmp(tag, "set"))
		rc = parse_set(P, t, &n);
	else if (!strcmp(tag, "macro"))
		rc = parse_macro(P, t, &n);
	else if (!strcmp(tag, "call"))
		rc = parse_call_block(P, t, &n);
	else if (!strcmp(tag, "filter")) {
		n = mk(P, S_FILTERBLOCK, t);
		if (!n)
			return pnomem(P);
		struct nvec b = {0};
		if (!(rc = parse_filter(P, NULL, true, &n->b)) && !(rc = parse_statements(P, END_FILTER, true, &b)))
			n->kids = nv_take(&b, &n->nk);
	} else if (!strcmp(tag, "with")) {
		n = mk(P, S_WITH, t);
		if (!n)
			return pnomem(P);
		struct nvec tg = {0}, vals = {0}, b = {0};
		while (!rc && cur(P)->type != TK_BLOCK_END && cur(P)->type != TK_EOF) {
			if (tg.n && (rc = expect_op(P, OP_COMMA, ",")))
				break;
			struct node *x = NULL, *v = NULL;
			if ((rc = parse_assign_target(P, true, false, NULL, false, &x)) || (rc = expect_op(P, OP_ASSIGN, "=")) ||
			    (rc = parse_expression(P, true, &v)) || (rc = nv_push(P, &tg, x)) || (rc = nv_push(P, &vals, v)))
				break;
		}
		if (!rc && !(rc = parse_statements(P, END_WITH, true, &b))) {
			n->tg = nv_take(&tg, &n->ntg);
			n->kids2 = nv_take(&vals, &n->nk2);
			n->kids = nv_take(&b, &n->nk);
		}
	} else if (!strcmp(tag, "block")) {
		const struct token *nm = cur(P);
		if (!(rc = expect_type(P, TK_NAME, "block name"))) {
			if (tk_name(cur(P), "scoped"))
				next(P);
			if (tk_name(cur(P), "required"))
				next(P);
			if (!(rc = parse_scoped_body(P, t, END_BLOCK, S_SCOPE, &n)) && cur(P)->type == TK_NAME &&
			    cur(P)->n == nm->n && memcmp(cur(P)->p, nm->p, nm->n) == 0)
				next(P);
		}
	} else if (!strcmp(tag, "print")) {
		n = mk(P, S_OUTPUT, t);
		if (!n)
			return pnomem(P);
		struct nvec items = {0};
		while (!rc && cur(P)->type != TK_BLOCK_END && cur(P)->type != TK_EOF) {
			if (items.n && (rc = expect_op(P, OP_COMMA, ",")))
				break;
			struct node *x = NULL;
			if (!(rc = parse_expression(P, true, &x)))
				rc = nv_push(P, &items, x);
		}
		n->kids = nv_take(&items, &n->nk);
	} else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
		n = mk(P, tag[0] == 'b' ? S_BREAK : S_CONTINUE, t);
		if (!n)
			return pnomem(P);
	} else if (!strcmp(tag, "generation")) {
		rc = parse_scoped_body(P, t, END_GEN, S_SCOPE, &n);
		if (!rc)
			n->op = 1; /* a macro-like body: break/continue cannot cross it */
	} else if (!strcmp(tag, "autoescape")) {
		struct node *x = NULL;
		if (!(rc = parse_expression(P, true, &x)) && !(rc = parse_scoped_body(P, t, END_AUTOESC, S_UNSUPPORTED, &n)))
			n->s = "{% autoescape %} is not supported (transformers renders without autoescaping)";
	} else if (!strcmp(tag, "include") || !strcmp(tag, "import") || !strcmp(tag, "from") || !strcmp(tag, "extends")) {
		skip_to_block_end(P);
		n = mk(P, S_UNSUPPORTED, t);
		if (!n)
			return pnomem(P);
		char msg[120];
		snprintf(msg, sizeof msg, "{%% %s %%} needs a template loader, and chat templates have none", tag);
		n->s = pstrdup(P, msg, strlen(msg));
	} else {
		/* unknown tag: name the innermost open block, as Jinja does */
		P->ntags--;
		for (int i = P->nends - 1; i >= 0; i--)
			for (int j = 0; P->ends[i][j]; j++)
				if (!strcmp(P->ends[i][j], tag)) {
					int k = P->ntags - 1;
					return pfail_at(P, t, "encountered unknown tag '%s': you probably made a nesting mistake; "
						       "the innermost block that needs to be closed is '%s' (line %d)",
						       tag, k >= 0 ? P->tags[k] : "?", k >= 0 ? P->tag_line[k] : 0);
				}
		if (P->ntags > 0)
			return pfail_at(P, t, "encountered unknown tag '%s' (the innermost open block is '%s' from line %d)",
					tag, P->tags[P->ntags - 1], P->tag_line[P->ntags - 1]);
		return pfail_at(P, t, "encountered unknown tag '%s'", tag);
	}
	P->ntags--;
	P->depth--;
	if (rc)
		return rc;
	if (n && (rc = nv_push(P, body, n)))
		return rc;
	return 0;
}

static int flush_data(struct parser *P, struct nvec *data, struct nvec *body)
{
	if (!data->n)
		return 0;
	struct node *n = mk(P, S_OUTPUT, &P->t[0]);
	if (!n)
		return pnomem(P);
	n->line = data->v[0]->line;
	n->col = data->v[0]->col;
	n->kids = data->v;
	n->nk = data->n;
	memset(data, 0, sizeof *data);
	return nv_push(P, body, n);
}

static int subparse(struct parser *P, const char *const *end_tokens, struct nvec *body)
{
	struct nvec data = {0};
	int rc = 0;
	if (end_tokens)
		P->ends[P->nends++] = end_tokens;
	while (!rc && cur(P)->type != TK_EOF) {
		const struct token *t = cur(P);
		if (t->type == TK_DATA) {
			struct node *n = mk(P, N_CONST, t);
			if (!n) {
				rc = pnomem(P);
				break;
			}
			n->cv = v_strc(t->p, t->n);
			rc = nv_push(P, &data, n);
			next(P);
		} else if (t->type == TK_VAR_BEGIN) {
			next(P);
			struct node *x = NULL;
			if (!(rc = parse_tuple(P, false, true, NULL, false, &x)) && !(rc = nv_push(P, &data, x)))
				rc = expect_type(P, TK_VAR_END, "end of print statement");
		} else if (t->type == TK_BLOCK_BEGIN) {
			if ((rc = flush_data(P, &data, body)))
				break;
			next(P);
			if (end_tokens) {
				bool hit = false;
				for (int i = 0; end_tokens[i]; i++)
					if (tk_name(cur(P), end_tokens[i]))
						hit = true;
				if (hit) {
					P->nends--;
					return 0;
				}
			}
			if (!(rc = parse_statement(P, body)))
				rc = expect_type(P, TK_BLOCK_END, "end of statement block");
		} else {
			char b[80];
			rc = pfail_at(P, t, "unexpected '%s'", desc(t, b, sizeof b));
		}
	}
	if (!rc)
		rc = flush_data(P, &data, body);
	if (end_tokens)
		P->nends--;
	return rc;
}

/* ---------------------------------------------------------------- checks */

struct check {
	struct parser *P;
	unsigned reads;  /* NF_CALLER | NF_VARARGS | NF_KWARGS seen in this macro body */
};

static int check_stmts(struct check *C, struct node **k, int n, bool soft, bool in_loop);

static int check_args(struct check *C, const struct callargs *ca, bool soft);

static int check_expr(struct check *C, struct node *e, bool soft)
{
	if (!e)
		return 0;
	int rc = 0;
	switch (e->kind) {
	case N_NAME:
		if (e->sym == SYM_CALLER)
			C->reads |= NF_CALLER;
		else if (e->sym == SYM_VARARGS)
			C->reads |= NF_VARARGS;
		else if (e->sym == SYM_KWARGS)
			C->reads |= NF_KWARGS;
		return 0;
	case N_FILTER:
	case N_TEST:
		if (e->fid < 0) {
			if (!soft)
				return pfail_at(C->P, &(struct token){.line = e->line, .col = e->col},
						"no %s named '%.*s'", e->kind == N_FILTER ? "filter" : "test", (int)e->sn, e->s);
			e->flags |= NF_SOFTMISSING;
		}
		if ((rc = check_expr(C, e->a, soft)))
			return rc;
		return check_args(C, e->ca, soft);
	case N_CALL:
		if ((rc = check_expr(C, e->a, soft)))
			return rc;
		return check_args(C, e->ca, soft);
	case N_COND:
		if ((rc = check_expr(C, e->a, true)) || (rc = check_expr(C, e->b, true)))
			return rc;
		return check_expr(C, e->c, true);
	default:
		if ((rc = check_expr(C, e->a, soft)) || (rc = check_expr(C, e->b, soft)) || (rc = check_expr(C, e->c, soft)))
			return rc;
		if (e->kind >= S_OUTPUT)
			return 0;
		for (int i = 0; i < e->nk; i++)
			if ((rc = check_expr(C, e->kids[i], soft)))
				return rc;
		for (int i = 0; i < e->nk2; i++)
			if ((rc = check_expr(C, e->kids2[i], soft)))
				return rc;
		return 0;
	}
}

static int check_args(struct check *C, const struct callargs *ca, bool soft)
{
	if (!ca)
		return 0;
	int rc;
	for (int i = 0; i < ca->npos; i++)
		if ((rc = check_expr(C, ca->pos[i], soft)))
			return rc;
	for (int i = 0; i < ca->nkw; i++)
		if ((rc = check_expr(C, ca->kwv[i], soft)))
			return rc;
	if ((rc = check_expr(C, ca->dyn_args, soft)))
		return rc;
	return check_expr(C, ca->dyn_kwargs, soft);
}

/* a macro-like body: its own frame; records which specials it reads */
static int check_macro_body(struct check *C, struct node *m)
{
	struct check inner = {C->P, 0};
	int rc;
	for (int i = 0; i < m->np; i++)
		if ((rc = check_expr(&inner, m->kids2[i], false)))
			return rc;
	if ((rc = check_stmts(&inner, m->kids, m->nk, false, false)))
		return rc;
	m->flags |= (uint16_t)inner.reads;
	/* a parameter named like a special is an ordinary parameter */
	for (int i = 0; i < m->np; i++) {
		if (m->psyms[i] == SYM_CALLER)
			m->flags &= (uint16_t)~NF_CALLER;
		if (m->psyms[i] == SYM_VARARGS)
			m->flags &= (uint16_t)~NF_VARARGS;
		if (m->psyms[i] == SYM_KWARGS)
			m->flags &= (uint16_t)~NF_KWARGS;
	}
	return 0;
}

static int check_stmts(struct check *C, struct node **k, int n, bool soft, bool in_loop)
{
	int rc;
	for (int i = 0; i < n; i++) {
		struct node *s = k[i];
		switch (s->kind) {
		case S_OUTPUT:
			for (int j = 0; j < s->nk; j++)
				if ((rc = check_expr(C, s->kids[j], soft)))
					return rc;
			break;
		case S_IF:
			if ((rc = check_expr(C, s->a, true)) || (rc = check_stmts(C, s->kids, s->nk, true, in_loop)) ||
			    (rc = check_stmts(C, s->kids2, s->nk2, true, in_loop)))
				return rc;
			break;
		case S_FOR:
			if ((rc = check_expr(C, s->b, soft)) || (rc = check_expr(C, s->c, false)) ||
			    (rc = check_stmts(C, s->kids, s->nk, false, true)) ||
			    (rc = check_stmts(C, s->kids2, s->nk2, false, in_loop)))
				return rc;
			break;
		case S_SET:
			if ((rc = check_expr(C, s->b, soft)))
				return rc;
			break;
		case S_SETBLOCK:
			if ((rc = check_expr(C, s->b, false)) || (rc = check_stmts(C, s->kids, s->nk, false, in_loop)))
				return rc;
			break;
		case S_FILTERBLOCK:
			if ((rc = check_expr(C, s->b, false)) || (rc = check_stmts(C, s->kids, s->nk, false, in_loop)))
				return rc;
			break;
		case S_MACRO:
			if ((rc = check_macro_body(C, s)))
				return rc;
			break;
		case S_CALLBLOCK:
			if ((rc = check_expr(C, s->a, soft)) || (rc = check_macro_body(C, s)))
				return rc;
			break;
		case S_WITH:
			for (int j = 0; j < s->nk2; j++)
				if ((rc = check_expr(C, s->kids2[j], soft)))
					return rc;
			if ((rc = check_stmts(C, s->kids, s->nk, false, in_loop)))
				return rc;
			break;
		case S_SCOPE:
			/* a generation body is a caller macro and a block its own function: no loop around */
			if ((rc = check_stmts(C, s->kids, s->nk, false, false)))
				return rc;
			break;
		case S_BREAK:
		case S_CONTINUE:
			if (!in_loop)
				return pfail_at(C->P, &(struct token){.line = s->line, .col = s->col}, "'%s' outside a loop",
						s->kind == S_BREAK ? "break" : "continue");
			break;
		default:
			break;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- scopes */

/*
 * Jinja's symbol analysis (jinja2/idtracking.py), to find the names a frame
 * starts with as "missing": a name whose first reference in a frame is an
 * unconditional store, with no outer frame referring to it, is a local of
 * that frame that reads as Undefined until assigned — also from loops and
 * macros nested in the frame — instead of the global of that name. Every
 * other name falls through to outer frames and the globals, as the render
 * does anyway. Frames: the template, a for body (and its else), a macro,
 * a call block's body, with, set and filter blocks, {% generation %}.
 */
enum { REF_RESOLVE = 1, REF_ALIAS, REF_UNDEF, REF_PARAM };

struct fref {
	int sym;
	uint8_t mode;
	bool stored;
};

struct frame_an {
	const struct frame_an *parent;
	struct fref *v;
	int n, cap;
	bool oom;
};

static struct fref *fa_self(const struct frame_an *f, int sym)
{
	for (int i = 0; i < f->n; i++)
		if (f->v[i].sym == sym)
			return &f->v[i];
	return NULL;
}

static bool fa_has_ref(const struct frame_an *f, int sym)
{
	for (; f; f = f->parent)
		if (fa_self(f, sym))
			return true;
	return false;
}

static struct fref *fa_define(struct frame_an *f, int sym, uint8_t mode)
{
	struct fref *r = fa_self(f, sym);
	if (r) {
		r->mode = mode;
		return r;
	}
	if (f->n == f->cap) {
		int nc = f->cap ? f->cap * 2 : 16;
		struct fref *nv = realloc(f->v, (size_t)nc * sizeof *nv);
		if (!nv) {
			f->oom = true;
			return NULL;
		}
		f->v = nv;
		f->cap = nc;
	}
	r = &f->v[f->n++];
	r->sym = sym;
	r->mode = mode;
	r->stored = false;
	return r;
}

static void fa_load(struct frame_an *f, int sym)
{
	if (!fa_has_ref(f, sym))
		fa_define(f, sym, REF_RESOLVE);
}

static void fa_store(struct frame_an *f, int sym, bool param)
{
	struct fref *r = fa_self(f, sym);
	if (param)
		r = fa_define(f, sym, REF_PARAM);
	else if (!r)
		r = fa_define(f, sym, fa_has_ref(f->parent, sym) ? REF_ALIAS : REF_UNDEF);
	if (r)
		r->stored = true;
}

static void fa_expr(struct frame_an *f, const struct node *e);

static void fa_args(struct frame_an *f, const struct callargs *ca)
{
	if (!ca)
		return;
	for (int i = 0; i < ca->npos; i++)
		fa_expr(f, ca->pos[i]);
	for (int i = 0; i < ca->nkw; i++)
		fa_expr(f, ca->kwv[i]);
	fa_expr(f, ca->dyn_args);
	fa_expr(f, ca->dyn_kwargs);
}

static void fa_expr(struct frame_an *f, const struct node *e)
{
	if (!e)
		return;
	switch (e->kind) {
	case N_NAME:
	case N_NSREF:
		fa_load(f, e->sym);
		return;
	case N_CALL:
	case N_FILTER:
	case N_TEST:
		fa_expr(f, e->a);
		fa_args(f, e->ca);
		return;
	default:
		fa_expr(f, e->a);
		fa_expr(f, e->b);
		fa_expr(f, e->c);
		for (int i = 0; i < e->nk; i++)
			fa_expr(f, e->kids[i]);
		if (e->kind == N_DICT)
			for (int i = 0; i < e->nk2; i++)
				fa_expr(f, e->kids2[i]);
		return;
	}
}

static void fa_target(struct frame_an *f, const struct node *t, bool param)
{
	if (t->kind == N_NAME)
		fa_store(f, t->sym, param);
	else if (t->kind == N_NSREF)
		fa_load(f, t->sym);
	else if (t->kind == N_TUPLE)
		for (int i = 0; i < t->nk; i++)
			fa_target(f, t->kids[i], param);
}

static void fa_stmts(struct frame_an *f, struct node **k, int n);

static bool fa_copy(struct frame_an *dst, const struct frame_an *src)
{
	*dst = *src;
	dst->v = src->cap ? malloc((size_t)src->cap * sizeof *dst->v) : NULL;
	if (src->cap && !dst->v)
		return false;
	if (src->n)
		memcpy(dst->v, src->v, (size_t)src->n * sizeof *dst->v);
	return true;
}

/* Symbols.branch_update: names stored in some but not all branches (and
 * not stored before the if) start as the outer value, never as missing */
static void fa_branch_update(struct frame_an *f, struct frame_an *br, int nb)
{
	int total = 0;
	for (int b = 0; b < nb; b++) {
		f->oom = f->oom || br[b].oom;
		total += br[b].n;
	}
	int *syms = total ? malloc((size_t)total * sizeof *syms) : NULL, *counts = total ? calloc((size_t)total, sizeof *counts) : NULL;
	int nsyms = 0;
	if (total && (!syms || !counts)) {
		f->oom = true;
		free(syms);
		free(counts);
		return;
	}
	for (int b = 0; b < nb; b++)
		for (int j = 0; j < br[b].n; j++) {
			const struct fref *x = &br[b].v[j], *old = fa_self(f, x->sym);
			if (!x->stored || (old && old->stored))
				continue;
			int k = 0;
			while (k < nsyms && syms[k] != x->sym)
				k++;
			if (k == nsyms)
				syms[nsyms++] = x->sym;
			counts[k]++;
		}
	for (int b = 0; b < nb; b++)
		for (int j = 0; j < br[b].n; j++) {
			const struct fref *x = &br[b].v[j];
			struct fref *nr = fa_define(f, x->sym, x->mode);
			if (nr)
				nr->stored = nr->stored || x->stored;
		}
	for (int k = 0; k < nsyms; k++)
		if (counts[k] < nb) {
			struct fref *r = fa_self(f, syms[k]);
			if (r)
				r->mode = fa_has_ref(f->parent, syms[k]) ? REF_ALIAS : REF_RESOLVE;
		}
	free(syms);
	free(counts);
}

/* FrameSymbolVisitor.visit_If: the test, then three branches (body, the
 * elif nodes, else) analysed from copies, then branch_update */
static void fa_if_parts(struct frame_an *f, const struct node *test, struct node **body, int nbody,
			const struct node *const *elifs, int nelif, struct node **els, int nels)
{
	fa_expr(f, test);
	struct frame_an br[3];
	for (int b = 0; b < 3; b++) {
		if (!fa_copy(&br[b], f)) {
			f->oom = true;
			for (int j = 0; j < b; j++)
				free(br[j].v);
			return;
		}
	}
	fa_stmts(&br[0], body, nbody);
	for (int i = 0; i < nelif; i++)
		fa_if_parts(&br[1], elifs[i]->a, elifs[i]->kids, elifs[i]->nk, NULL, 0, NULL, 0);
	fa_stmts(&br[2], els, nels);
	fa_branch_update(f, br, 3);
	for (int b = 0; b < 3; b++)
		free(br[b].v);
}

static void fa_if(struct frame_an *f, const struct node *s)
{
	/* my AST nests an elif in the else of the if before it */
	const struct node *elifs[TMPL_PARSE_DEPTH + 8];
	int nelif = 0;
	const struct node *e = s;
	while (e->nk2 == 1 && e->kids2[0]->kind == S_IF && (e->kids2[0]->flags & NF_ELIF) && nelif < TMPL_PARSE_DEPTH)
		e = elifs[nelif++] = e->kids2[0];
	fa_if_parts(f, s->a, s->kids, s->nk, elifs, nelif, e->kids2, e->nk2);
}

static void fa_stmts(struct frame_an *f, struct node **k, int n)
{
	for (int i = 0; i < n; i++) {
		const struct node *s = k[i];
		switch (s->kind) {
		case S_OUTPUT:
			for (int j = 0; j < s->nk; j++)
				fa_expr(f, s->kids[j]);
			break;
		case S_IF:
			fa_if(f, s);
			break;
		case S_FOR:
			fa_expr(f, s->b);
			break;
		case S_SET:
			fa_expr(f, s->b);
			fa_target(f, s->a, false);
			break;
		case S_SETBLOCK:
			fa_target(f, s->a, false);
			break;
		case S_MACRO:
			fa_store(f, s->sym, false);
			break;
		case S_CALLBLOCK:
			fa_expr(f, s->a);
			break;
		case S_FILTERBLOCK:
			fa_expr(f, s->b);
			break;
		case S_WITH:
			for (int j = 0; j < s->nk2; j++)
				fa_expr(f, s->kids2[j]);
			break;
		default:
			break;
		}
	}
}

static int scope_frames(struct parser *P, struct node **k, int n, const struct frame_an *parent);

/* analyse one frame (already filled by the caller's visits), keep its
 * undefined-initialised names, then descend into the frames nested in it */
static int scope_finish(struct parser *P, struct frame_an *f, int **out, int *nout, struct node **k, int n)
{
	int rc = 0;
	if (f->oom)
		rc = pnomem(P);
	int cnt = 0;
	for (int i = 0; i < f->n; i++)
		cnt += f->v[i].mode == REF_UNDEF;
	if (!rc && cnt) {
		*out = palloc(P, (size_t)cnt * sizeof **out);
		if (!*out)
			rc = pnomem(P);
		for (int i = 0; !rc && i < f->n; i++)
			if (f->v[i].mode == REF_UNDEF)
				(*out)[(*nout)++] = f->v[i].sym;
	}
	if (!rc)
		rc = scope_frames(P, k, n, f);
	free(f->v);
	f->v = NULL;
	return rc;
}

static int scope_frame_of(struct parser *P, struct node *s, const struct frame_an *parent)
{
	struct frame_an f = {parent, NULL, 0, 0, false};
	switch (s->kind) {
	case S_FOR: {
		fa_target(&f, s->a, true);
		fa_store(&f, SYM_LOOP, true);
		fa_stmts(&f, s->kids, s->nk);
		int rc = scope_finish(P, &f, &s->unset, &s->nunset, s->kids, s->nk);
		if (rc)
			return rc;
		struct frame_an g = {parent, NULL, 0, 0, false};
		fa_stmts(&g, s->kids2, s->nk2);
		return scope_finish(P, &g, &s->unset2, &s->nunset2, s->kids2, s->nk2);
	}
	case S_MACRO:
	case S_CALLBLOCK:
		for (int i = 0; i < s->np; i++)
			fa_store(&f, s->psyms[i], true);
		for (int i = 0; i < s->np; i++)
			fa_expr(&f, s->kids2[i]);
		fa_store(&f, SYM_CALLER, true);
		fa_store(&f, SYM_VARARGS, true);
		fa_store(&f, SYM_KWARGS, true);
		break;
	case S_WITH:
		for (int i = 0; i < s->ntg; i++)
			fa_target(&f, s->tg[i], true);
		break;
	case S_FILTERBLOCK:
		fa_expr(&f, s->b);
		break;
	default:
		break;
	}
	fa_stmts(&f, s->kids, s->nk);
	return scope_finish(P, &f, &s->unset, &s->nunset, s->kids, s->nk);
}

/* the frames directly nested in a frame's statements (if bodies belong to
 * the frame itself) */
static int scope_frames(struct parser *P, struct node **k, int n, const struct frame_an *parent)
{
	int rc = 0;
	for (int i = 0; i < n && !rc; i++) {
		struct node *s = k[i];
		switch (s->kind) {
		case S_IF:
			rc = scope_frames(P, s->kids, s->nk, parent);
			if (!rc)
				rc = scope_frames(P, s->kids2, s->nk2, parent);
			break;
		case S_FOR: case S_MACRO: case S_CALLBLOCK: case S_WITH: case S_SETBLOCK: case S_FILTERBLOCK: case S_SCOPE:
			rc = scope_frame_of(P, s, parent);
			break;
		default:
			break;
		}
	}
	return rc;
}

static int scope_analysis(struct parser *P, struct node *root)
{
	struct frame_an f = {NULL, NULL, 0, 0, false};
	fa_stmts(&f, root->kids, root->nk);
	return scope_finish(P, &f, &root->unset, &root->nunset, root->kids, root->nk);
}

/* ---------------------------------------------------------------- API */

static const char *const builtin_syms[SYM_NBUILTIN] = {
	"loop", "caller", "varargs", "kwargs", "range", "dict", "namespace", "raise_exception",
	"strftime_now", "cycler", "joiner", "lipsum"};

int tmpl_parse(const char *src, size_t len, const char *name, struct tmpl **out, char *err)
{
	*out = NULL;
	if (!name)
		name = "template";
	struct tmpl *T = calloc(1, sizeof *T);
	if (!T)
		return seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
	T->name = strdup(name);
	if (!T->name) {
		free(T);
		return seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
	}
	struct parser P;
	memset(&P, 0, sizeof P);
	P.T = T;
	P.name = T->name;
	P.err = err;
	int rc = 0;
	for (int i = 0; i < SYM_NBUILTIN; i++)
		if (intern(&P, builtin_syms[i], strlen(builtin_syms[i])) != i)
			rc = pnomem(&P);
	struct token *toks = NULL;
	size_t nt = 0;
	if (!rc)
		rc = tmpl_lex(src, len, T->name, &T->ar, &toks, &nt, err);
	if (!rc) {
		P.t = toks;
		P.nt = nt;
		struct nvec body = {0};
		rc = subparse(&P, NULL, &body);
		if (!rc) {
			T->root = mk(&P, S_SCOPE, &toks[0]);
			if (!T->root)
				rc = pnomem(&P);
			else
				T->root->kids = nv_take(&body, &T->root->nk);
		}
		if (!rc) {
			struct check C = {&P, 0};
			rc = check_stmts(&C, T->root->kids, T->root->nk, false, false);
		}
		if (!rc)
			rc = scope_analysis(&P, T->root);
	}
	free(toks);
	T->nsyms = P.nsyms;
	if (rc) {
		tmpl_free(T);
		return rc;
	}
	*out = T;
	return 0;
}

void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	ar_free(&t->ar);
	free(t->name);
	free(t);
}
