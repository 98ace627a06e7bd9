/*
 * grammar.c — see grammar.h. Four parts:
 *
 *  1. a builder: rules of alternatives of symbols, where a symbol is a set
 *     of bytes (256 bits) or a reference to a rule. Code point classes
 *     become alternatives of UTF-8 byte ranges (the split of Rust's
 *     regex-syntax Utf8Sequences, written from the UTF-8 encoding rules);
 *     repetitions become right-recursive rules (x* as S ::= x S | ε, x{m,n}
 *     as m copies then a chain of n-m optional ones), so the matcher never
 *     sees anything but bytes and rule calls;
 *  2. the GBNF parser and the JSON Schema compiler, both over the builder;
 *  3. checks and flattening: undefined rules, left recursion (a rule that
 *     can call itself before reading a byte would expand forever), then one
 *     array of symbols where each alternative ends with an END symbol;
 *  4. the matcher: a set of stacks, each stack a hash-consed persistent
 *     list of positions (pos: the next symbol of the current alternative;
 *     parent: where to go on at END). A rule call followed by END reuses
 *     its caller's frame (a tail call), so right recursion runs in constant
 *     space. The mask walks the vocabulary trie: sets reached are interned
 *     with a lazily filled 256-entry transition row, so after the first
 *     visit a byte costs one lookup; a set that every printable ASCII byte
 *     but " and \ leads back to (a JSON string's inside) takes a subtree
 *     made only of such bytes whole, without walking it (the trie is laid
 *     out depth first, so a subtree's tokens are one range); everything
 *     the walk adds to the arena is dropped when it returns.
 *
 * Ownership: grammar and vocab are immutable once built (any thread); a
 * matcher is one sequence's and is driven by one thread at a time.
 */
#include "grammar.h"
#include "inferd.h"
#include "tok.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_END = 0, S_CHARS = 1, S_RULE = 2 };

#define MAX_RULES 200000
#define MAX_SYMS 2000000

/* ---------------- 1. builder ---------------- */

struct bsym {
	uint8_t kind;
	int32_t rule;
	uint64_t set[4];
};

struct balt {
	struct bsym *s;
	int n, cap;
};

struct brule {
	char *name;
	struct balt *alt;
	int n_alt, cap_alt;
	int defined;
	long use_off;           /* GBNF: offset of the first reference (-1 none) */
};

struct builder {
	struct brule *r;
	int n, cap;
	long n_syms;
	int oom;
	int anon;
};

static void set_add(uint64_t *set, int lo, int hi)
{
	for (int c = lo; c <= hi; c++)
		set[c >> 6] |= 1ull << (c & 63);
}

static int set_has(const uint64_t *set, int c) { return (int)(set[c >> 6] >> (c & 63)) & 1; }

static struct bsym sym_chars(int lo, int hi)
{
	struct bsym s = {.kind = S_CHARS};
	set_add(s.set, lo, hi);
	return s;
}

static struct bsym sym_rule(int r) { return (struct bsym){.kind = S_RULE, .rule = r}; }

static int alt_push(struct builder *b, struct balt *a, struct bsym s)
{
	if (a->n == a->cap) {
		int cap = a->cap ? a->cap * 2 : 4;
		struct bsym *ns = realloc(a->s, (size_t)cap * sizeof *ns);
		if (!ns) {
			b->oom = 1;
			return -1;
		}
		a->s = ns;
		a->cap = cap;
	}
	a->s[a->n++] = s;
	b->n_syms++;
	return 0;
}

static int b_new_rule(struct builder *b, const char *name)
{
	if (b->n >= MAX_RULES) {
		b->oom = 1;
		return -1;
	}
	if (b->n == b->cap) {
		int cap = b->cap ? b->cap * 2 : 64;
		struct brule *nr = realloc(b->r, (size_t)cap * sizeof *nr);
		if (!nr) {
			b->oom = 1;
			return -1;
		}
		b->r = nr;
		b->cap = cap;
	}
	char buf[96];
	if (!name) {
		snprintf(buf, sizeof buf, "_%d", b->anon++);
		name = buf;
	}
	b->r[b->n] = (struct brule){.name = strdup(name), .use_off = -1, .defined = name == buf};
	if (!b->r[b->n].name) {
		b->oom = 1;
		return -1;
	}
	return b->n++;
}

static int b_find(const struct builder *b, const char *name, size_t len)
{
	for (int i = 0; i < b->n; i++)
		if (strlen(b->r[i].name) == len && memcmp(b->r[i].name, name, len) == 0)
			return i;
	return -1;
}

/* a new (empty) alternative of rule r; its index */
static int b_alt(struct builder *b, int r)
{
	struct brule *R = &b->r[r];
	if (R->n_alt == R->cap_alt) {
		int cap = R->cap_alt ? R->cap_alt * 2 : 2;
		struct balt *na = realloc(R->alt, (size_t)cap * sizeof *na);
		if (!na) {
			b->oom = 1;
			return -1;
		}
		R->alt = na;
		R->cap_alt = cap;
	}
	R->alt[R->n_alt] = (struct balt){0};
	return R->n_alt++;
}

static void b_sym(struct builder *b, int r, int a, struct bsym s)
{
	if (r < 0 || a < 0)
		return;
	alt_push(b, &b->r[r].alt[a], s);
}

static void b_lit(struct builder *b, int r, int a, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b_sym(b, r, a, sym_chars((uint8_t)s[i], (uint8_t)s[i]));
}

static void b_str(struct builder *b, int r, int a, const char *s) { b_lit(b, r, a, s, strlen(s)); }

static void b_ref(struct builder *b, int r, int a, int rule)
{
	if (rule >= 0)
		b_sym(b, r, a, sym_rule(rule));
}

static void builder_free(struct builder *b)
{
	for (int i = 0; i < b->n; i++) {
		for (int k = 0; k < b->r[i].n_alt; k++)
			free(b->r[i].alt[k].s);
		free(b->r[i].alt);
		free(b->r[i].name);
	}
	free(b->r);
}

/* UTF-8 byte sequences of code points [lo, hi] as alternatives of rule r */
static void u8_encode(uint32_t c, uint8_t *o)
{
	if (c < 0x80) {
		o[0] = (uint8_t)c;
	} else if (c < 0x800) {
		o[0] = (uint8_t)(0xC0 | c >> 6);
		o[1] = (uint8_t)(0x80 | (c & 63));
	} else if (c < 0x10000) {
		o[0] = (uint8_t)(0xE0 | c >> 12);
		o[1] = (uint8_t)(0x80 | ((c >> 6) & 63));
		o[2] = (uint8_t)(0x80 | (c & 63));
	} else {
		o[0] = (uint8_t)(0xF0 | c >> 18);
		o[1] = (uint8_t)(0x80 | ((c >> 12) & 63));
		o[2] = (uint8_t)(0x80 | ((c >> 6) & 63));
		o[3] = (uint8_t)(0x80 | (c & 63));
	}
}

static int u8_len_cp(uint32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

static void u8_ranges(struct builder *b, int r, uint32_t lo, uint32_t hi)
{
	static const uint32_t lim[] = {0x7F, 0x7FF, 0xFFFF};
	for (int i = 0; i < 3; i++)
		if (lo <= lim[i] && hi > lim[i]) {
			u8_ranges(b, r, lo, lim[i]);
			u8_ranges(b, r, lim[i] + 1, hi);
			return;
		}
	int n = u8_len_cp(hi);
	for (int i = 1; i < n; i++) {
		uint32_t m = (1u << (6 * i)) - 1;
		if ((lo & ~m) != (hi & ~m)) {
			if ((lo & m) != 0) {
				u8_ranges(b, r, lo, lo | m);
				u8_ranges(b, r, (lo | m) + 1, hi);
				return;
			}
			if ((hi & m) != m) {
				u8_ranges(b, r, lo, (hi & ~m) - 1);
				u8_ranges(b, r, hi & ~m, hi);
				return;
			}
		}
	}
	uint8_t x[4], y[4];
	u8_encode(lo, x);
	u8_encode(hi, y);
	int a = b_alt(b, r);
	for (int k = 0; k < n; k++)
		b_sym(b, r, a, sym_chars(x[k], y[k]));
}

struct cprange {
	uint32_t lo, hi;
};

static int cmp_range(const void *a, const void *b)
{
	const struct cprange *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A code point class (ranges, maybe negated) as one symbol: a byte set when
 * it is all ASCII, else a rule of UTF-8 alternatives. Surrogates never
 * match. Consumes (frees) rg. */
static struct bsym b_class(struct builder *b, struct cprange *rg, int n, int negated)
{
	qsort(rg, (size_t)n, sizeof *rg, cmp_range);
	int m = 0; /* merge */
	for (int i = 0; i < n; i++) {
		if (m && rg[i].lo <= rg[m - 1].hi + 1) {
			if (rg[i].hi > rg[m - 1].hi)
				rg[m - 1].hi = rg[i].hi;
		} else {
			rg[m++] = rg[i];
		}
	}
	n = m;
	struct cprange *out = malloc((size_t)(n + 3) * 2 * sizeof *out);
	int k = 0;
	if (!out) {
		b->oom = 1;
		free(rg);
		return sym_chars(0, 0);
	}
	if (negated) {
		uint32_t next = 0;
		for (int i = 0; i < n; i++) {
			if (rg[i].lo > next)
				out[k++] = (struct cprange){next, rg[i].lo - 1};
			next = rg[i].hi + 1;
		}
		if (next <= 0x10FFFF)
			out[k++] = (struct cprange){next, 0x10FFFF};
	} else {
		if (n)
		memcpy(out, rg, (size_t)n * sizeof *rg);
		k = n;
	}
	free(rg);
	/* cut out the surrogates */
	struct cprange *fin = malloc((size_t)(k * 2 + 1) * sizeof *fin);
	int f = 0;
	if (!fin) {
		b->oom = 1;
		free(out);
		return sym_chars(0, 0);
	}
	for (int i = 0; i < k; i++) {
		uint32_t lo = out[i].lo, hi = out[i].hi > 0x10FFFF ? 0x10FFFF : out[i].hi;
		if (lo > hi)
			continue;
		if (hi < 0xD800 || lo > 0xDFFF) {
			fin[f++] = (struct cprange){lo, hi};
			continue;
		}
		if (lo < 0xD800)
			fin[f++] = (struct cprange){lo, 0xD7FF};
		if (hi > 0xDFFF)
			fin[f++] = (struct cprange){0xE000, hi};
	}
	free(out);
	struct bsym ascii = {.kind = S_CHARS};
	int all_ascii = 1;
	for (int i = 0; i < f; i++) {
		if (fin[i].lo < 0x80)
			set_add(ascii.set, (int)fin[i].lo, (int)(fin[i].hi < 0x80 ? fin[i].hi : 0x7F));
		all_ascii &= fin[i].hi < 0x80;
	}
	if (all_ascii) {
		free(fin);
		return ascii;
	}
	int r = b_new_rule(b, NULL);
	if (r < 0) {
		free(fin);
		return sym_chars(0, 0);
	}
	if (ascii.set[0] | ascii.set[1])
		b_sym(b, r, b_alt(b, r), ascii);
	for (int i = 0; i < f; i++) {
		uint32_t lo = fin[i].lo < 0x80 ? 0x80 : fin[i].lo;
		if (lo <= fin[i].hi)
			u8_ranges(b, r, lo, fin[i].hi);
	}
	free(fin);
	return sym_rule(r);
}

/* x{min,max} (max < 0: unbounded) as one symbol */
static struct bsym b_repeat(struct builder *b, struct bsym x, int min, int max)
{
	int r = b_new_rule(b, NULL);
	if (r < 0)
		return sym_chars(0, 0);
	int tail = -1;
	if (max < 0) { /* S ::= x S | ε */
		tail = b_new_rule(b, NULL);
		if (tail < 0)
			return sym_chars(0, 0);
		int a = b_alt(b, tail);
		b_sym(b, tail, a, x);
		b_sym(b, tail, a, sym_rule(tail));
		b_alt(b, tail);
	} else {
		for (int k = 1; k <= max - min; k++) { /* O_k ::= x O_{k-1} | ε */
			int o = b_new_rule(b, NULL);
			if (o < 0)
				return sym_chars(0, 0);
			int a = b_alt(b, o);
			b_sym(b, o, a, x);
			if (tail >= 0)
				b_sym(b, o, a, sym_rule(tail));
			b_alt(b, o);
			tail = o;
		}
	}
	int a = b_alt(b, r);
	for (int k = 0; k < min; k++)
		b_sym(b, r, a, x);
	if (tail >= 0)
		b_sym(b, r, a, sym_rule(tail));
	return sym_rule(r);
}

/* ---------------- 2a. GBNF ---------------- */

struct gp {
	const char *s;
	size_t i, n;
	struct builder *b;
	char *err;
	int failed;
	int depth;
};

static void gp_pos(const char *s, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (s[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((uint8_t)s[i] & 0xC0) != 0x80) {
			(*col)++;
		}
	}
}

static void gp_err(struct gp *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void gp_err(struct gp *p, size_t off, const char *fmt, ...)
{
	if (p->failed)
		return;
	p->failed = 1;
	int line, col;
	gp_pos(p->s, off, &line, &col);
	char msg[INFERD_ERR_LEN - 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	seterr(p->err, INFERD_EINVAL, "grammar line %d, column %d: %s", line, col, msg);
}

static void gp_space(struct gp *p)
{
	while (p->i < p->n) {
		char c = p->s[p->i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			p->i++;
		} else if (c == '#') {
			while (p->i < p->n && p->s[p->i] != '\n')
				p->i++;
		} else {
			break;
		}
	}
}

static int is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static size_t gp_name_len(const struct gp *p, size_t i)
{
	size_t k = i;
	while (k < p->n && is_name_char(p->s[k]))
		k++;
	return k - i;
}

/* at `name ::=`: the start of the next rule */
static int gp_rule_start(const struct gp *p)
{
	size_t k = p->i + gp_name_len(p, p->i);
	if (k == p->i)
		return 0;
	while (k < p->n && (p->s[k] == ' ' || p->s[k] == '\t'))
		k++;
	return k + 3 <= p->n && memcmp(p->s + k, "::=", 3) == 0;
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* one code point of a literal or class (escapes, UTF-8); -1 on error */
static long gp_char(struct gp *p)
{
	size_t at = p->i;
	if (p->i >= p->n) {
		gp_err(p, at, "unexpected end of the grammar");
		return -1;
	}
	uint8_t c = (uint8_t)p->s[p->i];
	if (c == '\\') {
		if (p->i + 1 >= p->n) {
			gp_err(p, at, "unfinished escape");
			return -1;
		}
		char e = p->s[p->i + 1];
		p->i += 2;
		int nh = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
		if (nh) {
			long v = 0;
			for (int k = 0; k < nh; k++) {
				int h = p->i < p->n ? hexv(p->s[p->i]) : -1;
				if (h < 0) {
					gp_err(p, at, "\\%c needs %d hex digits", e, nh);
					return -1;
				}
				v = v * 16 + h;
				p->i++;
			}
			if (v > 0x10FFFF) {
				gp_err(p, at, "code point U+%lX is beyond U+10FFFF", v);
				return -1;
			}
			return v;
		}
		switch (e) {
		case 'n': return '\n';
		case 'r': return '\r';
		case 't': return '\t';
		case '0': return 0;
		case '\\': case '"': case '[': case ']': case '-': case '/': case '^': case '\'': return e;
		default: gp_err(p, at, "unknown escape \\%c", e); return -1;
		}
	}
	if (c < 0x80) {
		p->i++;
		return c;
	}
	int len = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
	if (c >= 0xF5)
		len = 0;
	if (!len || p->i + (size_t)len > p->n) {
		gp_err(p, at, "invalid UTF-8");
		return -1;
	}
	long v = c & (0x7F >> len);
	for (int k = 1; k < len; k++) {
		uint8_t d = (uint8_t)p->s[p->i + (size_t)k];
		if ((d & 0xC0) != 0x80) {
			gp_err(p, at, "invalid UTF-8");
			return -1;
		}
		v = v << 6 | (d & 63);
	}
	p->i += (size_t)len;
	return v;
}

static void gp_alts(struct gp *p, int r);

/* one primary into tmp (literal: several byte symbols) */
static void gp_primary(struct gp *p, struct balt *tmp)
{
	struct builder *b = p->b;
	size_t at = p->i;
	char c = p->s[p->i];
	if (c == '"' || c == '\'') {
		char q = c;
		p->i++;
		while (!p->failed) {
			if (p->i >= p->n || p->s[p->i] == '\n') {
				gp_err(p, at, "unterminated string literal");
				return;
			}
			if (p->s[p->i] == q) {
				p->i++;
				return;
			}
			long cp = gp_char(p);
			if (cp < 0)
				return;
			uint8_t u[4];
			u8_encode((uint32_t)cp, u);
			for (int k = 0; k < u8_len_cp((uint32_t)cp); k++)
				alt_push(b, tmp, sym_chars(u[k], u[k]));
		}
	} else if (c == '[') {
		p->i++;
		int neg = 0;
		if (p->i < p->n && p->s[p->i] == '^') {
			neg = 1;
			p->i++;
		}
		struct cprange *rg = NULL;
		int n = 0, cap = 0;
		while (!p->failed) {
			if (p->i >= p->n) {
				gp_err(p, at, "unterminated character class");
				break;
			}
			if (p->s[p->i] == ']') {
				p->i++;
				break;
			}
			long lo = gp_char(p), hi = lo;
			if (lo < 0)
				break;
			if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
				p->i++;
				hi = gp_char(p);
				if (hi < 0)
					break;
				if (hi < lo) {
					gp_err(p, at, "character range is backwards (U+%04lX-U+%04lX)", lo, hi);
					break;
				}
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				struct cprange *nr = realloc(rg, (size_t)cap * sizeof *nr);
				if (!nr) {
					b->oom = 1;
					break;
				}
				rg = nr;
			}
			rg[n++] = (struct cprange){(uint32_t)lo, (uint32_t)hi};
		}
		if (p->failed || b->oom) {
			free(rg);
			return;
		}
		if (!n && !neg) {
			free(rg);
			gp_err(p, at, "empty character class");
			return;
		}
		alt_push(b, tmp, b_class(b, rg ? rg : calloc(1, sizeof *rg), n, neg));
	} else if (c == '.') {
		p->i++;
		alt_push(b, tmp, b_class(b, calloc(1, sizeof(struct cprange)), 0, 1));
	} else if (c == '(') {
		p->i++;
		if (++p->depth > 200) {
			gp_err(p, at, "groups nested too deeply");
			return;
		}
		int g = b_new_rule(b, NULL);
		if (g < 0)
			return;
		b->r[g].defined = 1;
		gp_alts(p, g);
		p->depth--;
		if (p->failed)
			return;
		gp_space(p);
		if (p->i >= p->n || p->s[p->i] != ')') {
			gp_err(p, p->i, "expected ')' to close the group opened at offset %zu", at);
			return;
		}
		p->i++;
		alt_push(b, tmp, sym_rule(g));
	} else if (is_name_char(c)) {
		size_t len = gp_name_len(p, p->i);
		int r = b_find(b, p->s + p->i, len);
		if (r < 0) {
			char name[128];
			snprintf(name, sizeof name, "%.*s", (int)(len < 127 ? len : 127), p->s + p->i);
			r = b_new_rule(b, name);
			if (r < 0)
				return;
		}
		if (b->r[r].use_off < 0)
			b->r[r].use_off = (long)p->i;
		p->i += len;
		alt_push(b, tmp, sym_rule(r));
	} else {
		gp_err(p, at, "unexpected character '%c'", c);
	}
}

static int gp_int(struct gp *p, int *v)
{
	size_t k = p->i;
	long x = 0;
	while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && x <= GRAMMAR_MAX_REPEAT)
		x = x * 10 + (p->s[p->i++] - '0');
	*v = (int)x;
	return p->i > k;
}

static void gp_seq(struct gp *p, int r, int a)
{
	struct builder *b = p->b;
	for (;;) {
		gp_space(p);
		if (p->failed || b->oom || p->i >= p->n)
			return;
		char c = p->s[p->i];
		if (c == '|' || c == ')' || gp_rule_start(p))
			return;
		struct balt tmp = {0};
		gp_primary(p, &tmp);
		if (p->failed || b->oom) {
			free(tmp.s);
			return;
		}
		/* postfix operators (spaces allowed, not newlines) */
		size_t k = p->i;
		while (k < p->n && (p->s[k] == ' ' || p->s[k] == '\t'))
			k++;
		char op = k < p->n ? p->s[k] : 0;
		if (op == '*' || op == '+' || op == '?' || op == '{') {
			size_t at = k;
			p->i = k + 1;
			int min = 0, max = -1;
			if (op == '+')
				min = 1;
			else if (op == '?')
				max = 1;
			else if (op == '{') {
				gp_space(p);
				if (!gp_int(p, &min)) {
					gp_err(p, at, "expected a number after '{'");
					free(tmp.s);
					return;
				}
				gp_space(p);
				max = min;
				if (p->i < p->n && p->s[p->i] == ',') {
					p->i++;
					gp_space(p);
					max = -1;
					if (p->i < p->n && p->s[p->i] != '}')
						gp_int(p, &max);
					gp_space(p);
				}
				if (p->i >= p->n || p->s[p->i] != '}') {
					gp_err(p, at, "expected '}' to close the repetition");
					free(tmp.s);
					return;
				}
				p->i++;
				if (min > GRAMMAR_MAX_REPEAT || max > GRAMMAR_MAX_REPEAT || (max >= 0 && max < min)) {
					gp_err(p, at, "bad repetition {%d,%d} (at most %d, and min <= max)", min, max,
					       GRAMMAR_MAX_REPEAT);
					free(tmp.s);
					return;
				}
			}
			struct bsym x;
			if (tmp.n == 1) {
				x = tmp.s[0];
			} else { /* a literal of several bytes (or none) as one rule */
				int w = b_new_rule(b, NULL);
				if (w < 0) {
					free(tmp.s);
					return;
				}
				int wa = b_alt(b, w);
				for (int i = 0; i < tmp.n; i++)
					b_sym(b, w, wa, tmp.s[i]);
				x = sym_rule(w);
			}
			b_sym(b, r, a, b_repeat(b, x, min, max));
		} else {
			for (int i = 0; i < tmp.n; i++)
				b_sym(b, r, a, tmp.s[i]);
		}
		free(tmp.s);
	}
}

static void gp_alts(struct gp *p, int r)
{
	for (;;) {
		int a = b_alt(p->b, r);
		if (a < 0)
			return;
		gp_seq(p, r, a);
		if (p->failed || p->b->oom)
			return;
		gp_space(p);
		if (p->i < p->n && p->s[p->i] == '|') {
			p->i++;
			continue;
		}
		return;
	}
}

static int gbnf_parse(const char *text, struct builder *b, char *err)
{
	struct gp p = {.s = text, .n = strlen(text), .b = b, .err = err};
	for (;;) {
		gp_space(&p);
		if (p.i >= p.n || p.failed || b->oom)
			break;
		size_t at = p.i, len = gp_name_len(&p, p.i);
		if (!len) {
			gp_err(&p, at, "expected a rule name");
			break;
		}
		int r = b_find(b, p.s + at, len);
		if (r >= 0 && b->r[r].defined) {
			gp_err(&p, at, "rule \"%.*s\" is defined twice", (int)(len < 100 ? len : 100), p.s + at);
			break;
		}
		if (r < 0) {
			char name[128];
			snprintf(name, sizeof name, "%.*s", (int)(len < 127 ? len : 127), p.s + at);
			if ((r = b_new_rule(b, name)) < 0)
				break;
		}
		p.i += len;
		while (p.i < p.n && (p.s[p.i] == ' ' || p.s[p.i] == '\t'))
			p.i++;
		if (p.i + 3 > p.n || memcmp(p.s + p.i, "::=", 3) != 0) {
			gp_err(&p, p.i, "expected '::=' after the rule name \"%.*s\"", (int)(len < 100 ? len : 100), p.s + at);
			break;
		}
		p.i += 3;
		b->r[r].defined = 1;
		gp_alts(&p, r);
		if (p.failed || b->oom)
			break;
		gp_space(&p);
		if (p.i < p.n && !gp_rule_start(&p)) {
			gp_err(&p, p.i, "unexpected '%c'", p.s[p.i]);
			break;
		}
	}
	if (b->oom)
		return seterr(err, INFERD_ENOMEM, "out of memory (or more than %d rules) compiling the grammar", MAX_RULES);
	if (p.failed)
		return INFERD_EINVAL;
	for (int i = 0; i < b->n; i++)
		if (!b->r[i].defined) {
			p.failed = 0;
			gp_err(&p, b->r[i].use_off > 0 ? (size_t)b->r[i].use_off : 0, "rule \"%s\" is used but never defined",
			       b->r[i].name);
			return INFERD_EINVAL;
		}
	if (b_find(b, "root", 4) < 0)
		return seterr(err, INFERD_EINVAL, "the grammar has no \"root\" rule");
	return 0;
}

/* ---------------- 3. checks and flattening ---------------- */

struct gsym {
	uint8_t kind;
	int32_t rule;           /* S_RULE */
	uint64_t set[4];        /* S_CHARS */
};

struct grammar {
	struct gsym *sym;       /* [n_sym]: every alternative, each ending with S_END */
	int n_sym;
	int32_t *alt_pos;       /* [n_alt] first symbol of each alternative */
	int32_t *rule_alt0, *rule_nalt; /* [n_rule] */
	int n_rule, n_alt;
	int32_t root;
	int32_t start_pos;      /* a private start rule: root then END */
};

void grammar_free(struct grammar *g)
{
	if (!g)
		return;
	free(g->sym);
	free(g->alt_pos);
	free(g->rule_alt0);
	free(g->rule_nalt);
	free(g);
}

int grammar_n_rules(const struct grammar *g) { return g->n_rule; }

/* rule r can reach itself before reading a byte: DFS over "first call"
 * edges (a call preceded only by nullable symbols) */
static int left_rec(const struct builder *b, const uint8_t *nullable, int r, uint8_t *color, int *cycle)
{
	color[r] = 1;
	const struct brule *R = &b->r[r];
	for (int a = 0; a < R->n_alt; a++)
		for (int k = 0; k < R->alt[a].n; k++) {
			const struct bsym *s = &R->alt[a].s[k];
			if (s->kind != S_RULE)
				break;
			if (color[s->rule] == 1) {
				*cycle = s->rule;
				return 1;
			}
			if (color[s->rule] == 0 && left_rec(b, nullable, s->rule, color, cycle))
				return 1;
			if (!nullable[s->rule])
				break;
		}
	color[r] = 2;
	return 0;
}

static int finalize(struct builder *b, int root, struct grammar **out, char *err)
{
	*out = NULL;
	if (b->oom || b->n_syms > MAX_SYMS)
		return seterr(err, INFERD_ENOMEM, "the grammar is too large (or out of memory): %ld symbols", b->n_syms);
	uint8_t *nullable = calloc((size_t)b->n + 1, 1), *color = calloc((size_t)b->n + 1, 1);
	if (!nullable || !color) {
		free(nullable);
		free(color);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	for (int changed = 1; changed;) {
		changed = 0;
		for (int r = 0; r < b->n; r++) {
			if (nullable[r])
				continue;
			for (int a = 0; a < b->r[r].n_alt && !nullable[r]; a++) {
				int all = 1;
				for (int k = 0; k < b->r[r].alt[a].n && all; k++) {
					const struct bsym *s = &b->r[r].alt[a].s[k];
					all = s->kind == S_RULE && nullable[s->rule];
				}
				if (all)
					nullable[r] = 1, changed = 1;
			}
		}
	}
	int cycle = -1, bad = 0;
	/* the DFS recurses along first calls only: at most one frame per rule */
	for (int r = 0; r < b->n && !bad; r++)
		if (!color[r])
			bad = left_rec(b, nullable, r, color, &cycle);
	free(nullable);
	free(color);
	if (bad)
		return seterr(err, INFERD_EINVAL,
			      "rule \"%s\" is left-recursive (it can reach itself without reading anything)",
			      b->r[cycle].name[0] == '_' ? "(a group or repetition)" : b->r[cycle].name);
	struct grammar *g = calloc(1, sizeof *g);
	if (!g)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	int n_alt = 1;
	long n_sym = 2;
	for (int r = 0; r < b->n; r++) {
		n_alt += b->r[r].n_alt;
		for (int a = 0; a < b->r[r].n_alt; a++)
			n_sym += b->r[r].alt[a].n + 1;
	}
	g->sym = calloc((size_t)n_sym, sizeof *g->sym);
	g->alt_pos = malloc((size_t)n_alt * sizeof *g->alt_pos);
	g->rule_alt0 = malloc((size_t)(b->n + 1) * sizeof *g->rule_alt0);
	g->rule_nalt = malloc((size_t)(b->n + 1) * sizeof *g->rule_nalt);
	if (!g->sym || !g->alt_pos || !g->rule_alt0 || !g->rule_nalt) {
		grammar_free(g);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	int ns = 0, na = 0;
	for (int r = 0; r < b->n; r++) {
		g->rule_alt0[r] = na;
		g->rule_nalt[r] = b->r[r].n_alt;
		for (int a = 0; a < b->r[r].n_alt; a++) {
			g->alt_pos[na++] = ns;
			for (int k = 0; k < b->r[r].alt[a].n; k++) {
				const struct bsym *s = &b->r[r].alt[a].s[k];
				g->sym[ns++] = (struct gsym){.kind = s->kind, .rule = s->rule,
							     .set = {s->set[0], s->set[1], s->set[2], s->set[3]}};
			}
			g->sym[ns++] = (struct gsym){.kind = S_END};
		}
	}
	g->start_pos = ns;
	g->sym[ns++] = (struct gsym){.kind = S_RULE, .rule = root};
	g->sym[ns++] = (struct gsym){.kind = S_END};
	g->n_sym = ns;
	g->n_alt = na;
	g->n_rule = b->n;
	g->root = root;
	*out = g;
	return 0;
}

int grammar_from_gbnf(const char *text, struct grammar **out, char *err)
{
	*out = NULL;
	if (!text)
		return seterr(err, INFERD_EINVAL, "no grammar text");
	struct builder b = {0};
	int rc = gbnf_parse(text, &b, err);
	if (!rc)
		rc = finalize(&b, b_find(&b, "root", 4), out, err);
	builder_free(&b);
	return rc;
}

/* ---------------- 2b. JSON Schema ---------------- */

struct sc {
	struct builder *b;
	json_t *root;
	char *err;
	int failed;
	int depth;
	struct sref {
		char *ref;
		int rule;
	} *refs;
	int n_refs, cap_refs;
	/* shared rules, made on first use (-1 before) */
	int ws, chr, string, number, integer, boolean, null, value, object, array;
};

static void sc_err(struct sc *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sc_err(struct sc *c, const char *path, const char *fmt, ...)
{
	if (c->failed)
		return;
	c->failed = 1;
	char msg[INFERD_ERR_LEN - 80];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	seterr(c->err, INFERD_EINVAL, "%s at %s", msg, path[0] ? path : "the schema root");
}

/* a new named rule (the names only help reading a dump of the grammar) */
static int sc_rule1(struct sc *c, const char *name) { return b_new_rule(c->b, name); }

static int sc_ws(struct sc *c)
{
	if (c->ws < 0) {
		struct builder *b = c->b;
		int r = sc_rule1(c, "ws");
		struct bsym s = {.kind = S_CHARS};
		set_add(s.set, ' ', ' ');
		set_add(s.set, '\t', '\n');
		b_sym(b, r, b_alt(b, r), b_repeat(b, s, 0, GRAMMAR_JSON_WS_MAX));
		c->ws = r;
	}
	return c->ws;
}

/* a string character: anything but " \ and controls, or an escape */
static int sc_char(struct sc *c)
{
	if (c->chr < 0) {
		struct builder *b = c->b;
		int r = sc_rule1(c, "char");
		struct cprange *rg = malloc(3 * sizeof *rg);
		if (!rg) {
			b->oom = 1;
			return r;
		}
		rg[0] = (struct cprange){0, 0x1F};
		rg[1] = (struct cprange){'"', '"'};
		rg[2] = (struct cprange){'\\', '\\'};
		b_sym(b, r, b_alt(b, r), b_class(b, rg, 3, 1));
		int a = b_alt(b, r);
		b_str(b, r, a, "\\");
		struct bsym e = {.kind = S_CHARS};
		for (const char *p = "\"\\/bfnrt"; *p; p++)
			set_add(e.set, *p, *p);
		b_sym(b, r, a, e);
		/* \uXXXX but never a surrogate (strict parsers reject lone ones;
		 * characters beyond the BMP can be written as UTF-8) */
		struct bsym hx = {.kind = S_CHARS}, h1 = {.kind = S_CHARS}, d = sym_chars('d', 'd'), lo = sym_chars('0', '7');
		set_add(hx.set, '0', '9');
		set_add(hx.set, 'a', 'f');
		set_add(hx.set, 'A', 'F');
		memcpy(h1.set, hx.set, sizeof h1.set);
		h1.set['d' >> 6] &= ~(1ull << ('d' & 63));
		h1.set['D' >> 6] &= ~(1ull << ('D' & 63));
		set_add(d.set, 'D', 'D');
		for (int k = 0; k < 2; k++) {
			a = b_alt(b, r);
			b_str(b, r, a, "\\u");
			b_sym(b, r, a, k ? d : h1);
			if (k)
				b_sym(b, r, a, lo);
			for (int j = k; j < 3; j++)
				b_sym(b, r, a, hx);
		}
		c->chr = r;
	}
	return c->chr;
}

static int sc_string(struct sc *c, int min, int max)
{
	int unbounded = min == 0 && max < 0;
	if (unbounded && c->string >= 0)
		return c->string;
	struct builder *b = c->b;
	int ch = sc_char(c);
	int r = sc_rule1(c, "string");
	int a = b_alt(b, r);
	b_str(b, r, a, "\"");
	b_sym(b, r, a, b_repeat(b, sym_rule(ch), min, max));
	b_str(b, r, a, "\"");
	if (unbounded)
		c->string = r;
	return r;
}

/* "-"? ("0" | [1-9][0-9]{0,15}) */
static void sc_int_part(struct sc *c, int r, int a)
{
	struct builder *b = c->b;
	int sign = b_new_rule(b, NULL);
	b_str(b, sign, b_alt(b, sign), "-");
	b_alt(b, sign);
	int digits = b_new_rule(b, NULL);
	b_str(b, digits, b_alt(b, digits), "0");
	int d = b_alt(b, digits);
	b_sym(b, digits, d, sym_chars('1', '9'));
	b_sym(b, digits, d, b_repeat(b, sym_chars('0', '9'), 0, 15));
	b_ref(b, r, a, sign);
	b_ref(b, r, a, digits);
}

static int sc_integer(struct sc *c)
{
	if (c->integer < 0) {
		int r = sc_rule1(c, "integer");
		sc_int_part(c, r, b_alt(c->b, r));
		c->integer = r;
	}
	return c->integer;
}

static int sc_number(struct sc *c)
{
	if (c->number < 0) {
		struct builder *b = c->b;
		int r = sc_rule1(c, "number");
		int a = b_alt(b, r);
		sc_int_part(c, r, a);
		int frac = b_new_rule(b, NULL);
		int fa = b_alt(b, frac);
		b_str(b, frac, fa, ".");
		b_sym(b, frac, fa, b_repeat(b, sym_chars('0', '9'), 1, 16));
		b_alt(b, frac);
		int ex = b_new_rule(b, NULL);
		int ea = b_alt(b, ex);
		struct bsym e = sym_chars('e', 'e'), pm = sym_chars('+', '+');
		set_add(e.set, 'E', 'E');
		set_add(pm.set, '-', '-');
		b_sym(b, ex, ea, e);
		b_sym(b, ex, ea, b_repeat(b, pm, 0, 1));
		b_sym(b, ex, ea, b_repeat(b, sym_chars('0', '9'), 1, 2)); /* 1e999 overflows doubles */
		b_alt(b, ex);
		b_ref(b, r, a, frac);
		b_ref(b, r, a, ex);
		c->number = r;
	}
	return c->number;
}

static int sc_literal_rule(struct sc *c, const char *name, const char *text)
{
	int r = sc_rule1(c, name);
	b_str(c->b, r, b_alt(c->b, r), text);
	return r;
}

static int sc_value(struct sc *c);

/* open ws ( item (ws "," ws item)* ws )? close, item a rule */
static int sc_list(struct sc *c, const char *name, const char *open, const char *close, int item)
{
	struct builder *b = c->b;
	int ws = sc_ws(c);
	int r = sc_rule1(c, name);
	int more = b_new_rule(b, NULL); /* ws "," ws item */
	int ma = b_alt(b, more);
	b_ref(b, more, ma, ws);
	b_str(b, more, ma, ",");
	b_ref(b, more, ma, ws);
	b_ref(b, more, ma, item);
	int body = b_new_rule(b, NULL);
	int ba = b_alt(b, body);
	b_ref(b, body, ba, item);
	b_sym(b, body, ba, b_repeat(b, sym_rule(more), 0, -1));
	b_ref(b, body, ba, ws);
	b_alt(b, body);
	int a = b_alt(b, r);
	b_str(b, r, a, open);
	b_ref(b, r, a, ws);
	b_ref(b, r, a, body);
	b_str(b, r, a, close);
	return r;
}

/* string ws ":" ws value */
static int sc_member(struct sc *c, int key, int val)
{
	struct builder *b = c->b;
	int ws = sc_ws(c);
	int r = b_new_rule(b, NULL);
	int a = b_alt(b, r);
	b_ref(b, r, a, key);
	b_ref(b, r, a, ws);
	b_str(b, r, a, ":");
	b_ref(b, r, a, ws);
	b_ref(b, r, a, val);
	return r;
}

static int sc_any_object(struct sc *c)
{
	if (c->object < 0) {
		c->object = sc_rule1(c, "object"); /* reserve: value refers back */
		int v = sc_value(c);
		int l = sc_list(c, "object-body", "{", "}", sc_member(c, sc_string(c, 0, -1), v));
		b_ref(c->b, c->object, b_alt(c->b, c->object), l);
	}
	return c->object;
}

static int sc_any_array(struct sc *c)
{
	if (c->array < 0) {
		c->array = sc_rule1(c, "array");
		int l = sc_list(c, "array-body", "[", "]", sc_value(c));
		b_ref(c->b, c->array, b_alt(c->b, c->array), l);
	}
	return c->array;
}

static int sc_value(struct sc *c)
{
	if (c->value < 0) {
		struct builder *b = c->b;
		int r = c->value = sc_rule1(c, "value");
		if (c->boolean < 0) {
			c->boolean = sc_rule1(c, "boolean");
			b_str(b, c->boolean, b_alt(b, c->boolean), "true");
			b_str(b, c->boolean, b_alt(b, c->boolean), "false");
		}
		if (c->null < 0)
			c->null = sc_literal_rule(c, "null", "null");
		int alts[] = {sc_any_object(c), sc_any_array(c), sc_string(c, 0, -1), sc_number(c), c->boolean, c->null};
		for (size_t i = 0; i < sizeof alts / sizeof alts[0]; i++)
			b_ref(b, r, b_alt(b, r), alts[i]);
	}
	return c->value;
}

static int sc_schema(struct sc *c, json_t *s, const char *path);

static void path_add(char *out, size_t cap, const char *path, const char *key)
{
	size_t n = (size_t)snprintf(out, cap, "%s/", path);
	for (const char *k = key; *k && n + 3 < cap; k++) { /* JSON pointer escapes */
		if (*k == '~' || *k == '/') {
			out[n++] = '~';
			out[n++] = *k == '~' ? '0' : '1';
		} else {
			out[n++] = *k;
		}
	}
	out[n < cap ? n : cap - 1] = 0;
}

/* the rule of a JSON value as a literal (enum / const) */
static void sc_literal_alt(struct sc *c, int r, json_t *v)
{
	char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!t) {
		c->b->oom = 1;
		return;
	}
	b_str(c->b, r, b_alt(c->b, r), t);
	free(t);
}

static int sc_ref(struct sc *c, const char *ref, const char *path)
{
	for (int i = 0; i < c->n_refs; i++)
		if (strcmp(c->refs[i].ref, ref) == 0)
			return c->refs[i].rule;
	if (ref[0] != '#' || (ref[1] && ref[1] != '/')) {
		sc_err(c, path, "$ref \"%.200s\" is not supported (only references inside the schema, \"#/...\")", ref);
		return -1;
	}
	/* resolve the JSON pointer */
	json_t *t = c->root;
	const char *p = ref + 1;
	while (*p == '/' && t) {
		p++;
		char tok[256];
		size_t n = 0;
		while (*p && *p != '/' && n + 1 < sizeof tok) {
			if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
				tok[n++] = p[1] == '0' ? '~' : '/';
				p += 2;
			} else {
				tok[n++] = *p++;
			}
		}
		tok[n] = 0;
		if (json_is_object(t)) {
			t = json_object_get(t, tok);
		} else if (json_is_array(t)) {
			char *end;
			long k = strtol(tok, &end, 10);
			t = *tok && !*end ? json_array_get(t, (size_t)k) : NULL;
		} else {
			t = NULL;
		}
	}
	if (!t) {
		sc_err(c, path, "$ref \"%.200s\" points to nothing in the schema", ref);
		return -1;
	}
	if (c->n_refs == c->cap_refs) {
		int cap = c->cap_refs ? c->cap_refs * 2 : 8;
		struct sref *nr = realloc(c->refs, (size_t)cap * sizeof *nr);
		if (!nr) {
			c->b->oom = 1;
			return -1;
		}
		c->refs = nr;
		c->cap_refs = cap;
	}
	char name[128];
	snprintf(name, sizeof name, "ref%.100s", ref + 1);
	int r = sc_rule1(c, name);
	if (r < 0)
		return -1;
	c->refs[c->n_refs++] = (struct sref){strdup(ref), r};
	if (!c->refs[c->n_refs - 1].ref)
		c->b->oom = 1;
	int target = sc_schema(c, t, ref + 1);
	b_ref(c->b, r, b_alt(c->b, r), target);
	return r;
}

static int get_count(struct sc *c, json_t *s, const char *key, int def, const char *path)
{
	json_t *v = json_object_get(s, key);
	if (!v)
		return def;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > GRAMMAR_MAX_REPEAT) {
		char p[1024];
		path_add(p, sizeof p, path, key);
		sc_err(c, p, "\"%s\" must be an integer from 0 to %d", key, GRAMMAR_MAX_REPEAT);
		return def;
	}
	return (int)json_integer_value(v);
}

static int sc_object(struct sc *c, json_t *s, const char *path)
{
	struct builder *b = c->b;
	json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
	json_t *addl = json_object_get(s, "additionalProperties");
	char p[1024];
	if (props && !json_is_object(props)) {
		path_add(p, sizeof p, path, "properties");
		sc_err(c, p, "\"properties\" must be an object");
		return -1;
	}
	if (req && !json_is_array(req)) {
		path_add(p, sizeof p, path, "required");
		sc_err(c, p, "\"required\" must be an array of property names");
		return -1;
	}
	size_t i;
	json_t *rv;
	json_array_foreach(req, i, rv)
	{
		if (!json_is_string(rv) || !props || !json_object_get(props, json_string_value(rv))) {
			path_add(p, sizeof p, path, "required");
			sc_err(c, p, "required property %s is not in \"properties\"",
			       json_is_string(rv) ? json_string_value(rv) : "(not a string)");
			return -1;
		}
	}
	if (addl && !json_is_boolean(addl) && !json_is_object(addl)) {
		path_add(p, sizeof p, path, "additionalProperties");
		sc_err(c, p, "\"additionalProperties\" must be a boolean or a schema");
		return -1;
	}
	size_t np = props ? json_object_size(props) : 0;
	if (!np) {
		if (addl && json_is_false(addl)) /* {} only */
			return sc_literal_rule(c, "empty-object", "{}");
		if (addl && json_is_object(addl)) { /* a map of one value type */
			path_add(p, sizeof p, path, "additionalProperties");
			int v = sc_schema(c, addl, p);
			return sc_list(c, "map", "{", "}", sc_member(c, sc_string(c, 0, -1), v));
		}
		return sc_any_object(c);
	}
	/* F_i: members i.. with none written yet; T_i: some written (each
	 * member after the first has its comma; T_n is the closing ws) */
	int ws = sc_ws(c);
	int *F = malloc((np + 1) * sizeof *F), *T = malloc((np + 1) * sizeof *T), *kv = malloc(np * sizeof *kv);
	char *opt = calloc(np, 1);
	if (!F || !T || !kv || !opt) {
		free(F), free(T), free(kv), free(opt);
		b->oom = 1;
		return -1;
	}
	const char *key;
	json_t *ps;
	size_t k = 0;
	json_object_foreach(props, key, ps)
	{
		char pp[1024], kp[1024];
		path_add(pp, sizeof pp, path, "properties");
		path_add(kp, sizeof kp, pp, key);
		int v = sc_schema(c, ps, kp);
		json_t *ks = json_string(key);
		int kr = b_new_rule(b, NULL);
		if (!ks || kr < 0) {
			json_decref(ks);
			b->oom = 1;
			break;
		}
		sc_literal_alt(c, kr, ks);
		json_decref(ks);
		kv[k] = sc_member(c, kr, v);
		opt[k] = 1;
		json_array_foreach(req, i, rv) if (strcmp(json_string_value(rv), key) == 0) opt[k] = 0;
		k++;
	}
	int obj = -1;
	if (k == np && !c->failed && !b->oom) {
		F[np] = b_new_rule(b, NULL);
		b_alt(b, F[np]);
		T[np] = b_new_rule(b, NULL);
		b_ref(b, T[np], b_alt(b, T[np]), ws);
		for (size_t j = np; j-- > 0;) {
			F[j] = b_new_rule(b, NULL);
			T[j] = b_new_rule(b, NULL);
			int a = b_alt(b, F[j]);
			b_ref(b, F[j], a, kv[j]);
			b_ref(b, F[j], a, T[j + 1]);
			if (opt[j])
				b_ref(b, F[j], b_alt(b, F[j]), F[j + 1]);
			a = b_alt(b, T[j]);
			b_ref(b, T[j], a, ws);
			b_str(b, T[j], a, ",");
			b_ref(b, T[j], a, ws);
			b_ref(b, T[j], a, kv[j]);
			b_ref(b, T[j], a, T[j + 1]);
			if (opt[j])
				b_ref(b, T[j], b_alt(b, T[j]), T[j + 1]);
		}
		obj = b_new_rule(b, "object-props");
		int a = b_alt(b, obj);
		b_str(b, obj, a, "{");
		b_ref(b, obj, a, ws);
		b_ref(b, obj, a, F[0]);
		b_str(b, obj, a, "}");
	}
	free(F), free(T), free(kv), free(opt);
	return obj;
}

static int sc_array(struct sc *c, json_t *s, const char *path)
{
	struct builder *b = c->b;
	json_t *items = json_object_get(s, "items");
	int min = get_count(c, s, "minItems", 0, path), max = get_count(c, s, "maxItems", -1, path);
	if (max >= 0 && max < min) {
		sc_err(c, path, "maxItems %d is less than minItems %d", max, min);
		return -1;
	}
	if (!items && min == 0 && max < 0)
		return sc_any_array(c);
	char p[1024];
	path_add(p, sizeof p, path, "items");
	int item = items ? sc_schema(c, items, p) : sc_value(c);
	int ws = sc_ws(c);
	int r = sc_rule1(c, "array-items");
	int a = b_alt(b, r);
	b_str(b, r, a, "[");
	b_ref(b, r, a, ws);
	if (max != 0) {
		int more = b_new_rule(b, NULL); /* ws "," ws item */
		int ma = b_alt(b, more);
		b_ref(b, more, ma, ws);
		b_str(b, more, ma, ",");
		b_ref(b, more, ma, ws);
		b_ref(b, more, ma, item);
		int body = b_new_rule(b, NULL);
		int ba = b_alt(b, body);
		b_ref(b, body, ba, item);
		b_sym(b, body, ba, b_repeat(b, sym_rule(more), min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1));
		b_ref(b, body, ba, ws);
		if (min == 0)
			b_alt(b, body);
		b_ref(b, r, a, body);
	}
	b_str(b, r, a, "]");
	return r;
}

static const char *const SC_IGNORED[] = {"description", "title", "$schema", "$id", "$comment", "default", "examples",
					  "deprecated", "readOnly", "writeOnly", "strict", "$defs", "definitions", NULL};
static const char *const SC_KNOWN[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
				       "anyOf", "allOf", "items", "minItems", "maxItems", "minLength", "maxLength",
				       "$ref", NULL};

static int in_list(const char *const *l, const char *k)
{
	for (; *l; l++)
		if (strcmp(*l, k) == 0)
			return 1;
	return 0;
}

static int sc_typed(struct sc *c, json_t *s, const char *type, const char *path)
{
	if (strcmp(type, "object") == 0)
		return sc_object(c, s, path);
	if (strcmp(type, "array") == 0)
		return sc_array(c, s, path);
	if (strcmp(type, "string") == 0) {
		int min = get_count(c, s, "minLength", 0, path), max = get_count(c, s, "maxLength", -1, path);
		if (max >= 0 && max < min) {
			sc_err(c, path, "maxLength %d is less than minLength %d", max, min);
			return -1;
		}
		return sc_string(c, min, max);
	}
	if (strcmp(type, "number") == 0)
		return sc_number(c);
	if (strcmp(type, "integer") == 0)
		return sc_integer(c);
	if (strcmp(type, "boolean") == 0) {
		sc_value(c);
		return c->boolean;
	}
	if (strcmp(type, "null") == 0) {
		sc_value(c);
		return c->null;
	}
	char p[1024];
	path_add(p, sizeof p, path, "type");
	sc_err(c, p, "unknown type \"%.100s\"", type);
	return -1;
}

static int sc_schema(struct sc *c, json_t *s, const char *path)
{
	if (c->failed || c->b->oom)
		return -1;
	if (json_is_true(s))
		return sc_value(c);
	if (!json_is_object(s)) {
		sc_err(c, path, "a schema must be an object or true");
		return -1;
	}
	if (++c->depth > 64) {
		sc_err(c, path, "the schema is nested too deeply");
		return -1;
	}
	int r = -1;
	const char *key;
	json_t *v;
	json_object_foreach(s, key, v)
	{
		if (in_list(SC_IGNORED, key) || in_list(SC_KNOWN, key))
			continue;
		char p[1024];
		path_add(p, sizeof p, path, key);
		sc_err(c, p, "unsupported JSON Schema keyword \"%.100s\"", key);
		goto out;
	}
	char p[1024];
	json_t *ref = json_object_get(s, "$ref"), *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
	json_t *any = json_object_get(s, "anyOf"), *all = json_object_get(s, "allOf"), *ty = json_object_get(s, "type");
	if (ref) {
		if (!json_is_string(ref)) {
			path_add(p, sizeof p, path, "$ref");
			sc_err(c, p, "\"$ref\" must be a string");
			goto out;
		}
		r = sc_ref(c, json_string_value(ref), path);
	} else if (cn) {
		r = sc_rule1(c, "const");
		sc_literal_alt(c, r, cn);
	} else if (en) {
		if (!json_is_array(en) || !json_array_size(en)) {
			path_add(p, sizeof p, path, "enum");
			sc_err(c, p, "\"enum\" must be a non-empty array");
			goto out;
		}
		r = sc_rule1(c, "enum");
		size_t i;
		json_array_foreach(en, i, v) sc_literal_alt(c, r, v);
	} else if (any || all) {
		const char *kw = any ? "anyOf" : "allOf";
		json_t *l = any ? any : all;
		path_add(p, sizeof p, path, kw);
		if (!json_is_array(l) || !json_array_size(l)) {
			sc_err(c, p, "\"%s\" must be a non-empty array", kw);
			goto out;
		}
		if (all && json_array_size(l) != 1) {
			sc_err(c, p, "\"allOf\" with more than one schema is not supported");
			goto out;
		}
		if (ty || json_object_get(s, "properties") || json_object_get(s, "items")) {
			sc_err(c, path, "\"%s\" beside \"type\", \"properties\" or \"items\" is not supported", kw);
			goto out;
		}
		r = sc_rule1(c, kw);
		size_t i;
		json_array_foreach(l, i, v)
		{
			char q[1024], num[24];
			snprintf(num, sizeof num, "%zu", i);
			path_add(q, sizeof q, p, num);
			b_ref(c->b, r, b_alt(c->b, r), sc_schema(c, v, q));
		}
	} else if (json_is_string(ty)) {
		r = sc_typed(c, s, json_string_value(ty), path);
	} else if (json_is_array(ty) && json_array_size(ty)) {
		r = sc_rule1(c, "types");
		size_t i;
		json_array_foreach(ty, i, v)
		{
			path_add(p, sizeof p, path, "type");
			if (!json_is_string(v)) {
				sc_err(c, p, "\"type\" must be a string or an array of strings");
				goto out;
			}
			b_ref(c->b, r, b_alt(c->b, r), sc_typed(c, s, json_string_value(v), path));
		}
	} else if (ty) {
		path_add(p, sizeof p, path, "type");
		sc_err(c, p, "\"type\" must be a string or an array of strings");
	} else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties")) {
		r = sc_object(c, s, path);
	} else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
		r = sc_array(c, s, path);
	} else {
		r = sc_value(c);
	}
out:
	c->depth--;
	return c->failed ? -1 : r;
}

int grammar_from_json_schema(const char *json, struct grammar **out, char *err)
{
	*out = NULL;
	if (!json)
		return seterr(err, INFERD_EINVAL, "no JSON schema");
	json_error_t je;
	json_t *root = json_loads(json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return seterr(err, INFERD_EINVAL, "the JSON schema is not valid JSON: %s (line %d, column %d)", je.text,
			      je.line, je.column);
	struct builder b = {0};
	struct sc c = {.b = &b, .root = root, .err = err, .ws = -1, .chr = -1, .string = -1, .number = -1,
		       .integer = -1, .boolean = -1, .null = -1, .value = -1, .object = -1, .array = -1};
	int top = b_new_rule(&b, "root");
	int r = sc_schema(&c, root, "");
	int rc;
	if (b.oom)
		rc = seterr(err, INFERD_ENOMEM, "the schema is too large (or out of memory)");
	else if (c.failed || r < 0)
		rc = c.failed ? INFERD_EINVAL : seterr(err, INFERD_EINVAL, "the schema could not be compiled");
	else {
		/* leading and trailing whitespace around the value */
		int ws = sc_ws(&c), a = b_alt(&b, top);
		b_ref(&b, top, a, ws);
		b_ref(&b, top, a, r);
		b_ref(&b, top, a, ws);
		rc = finalize(&b, top, out, err);
	}
	for (int i = 0; i < c.n_refs; i++)
		free(c.refs[i].ref);
	free(c.refs);
	builder_free(&b);
	json_decref(root);
	return rc;
}

int grammar_json_object(struct grammar **out, char *err) { return grammar_from_json_schema("{\"type\":\"object\"}", out, err); }

int grammar_compile(const char *kind, const char *text, struct grammar **out, char *err)
{
	*out = NULL;
	if (!kind)
		return seterr(err, INFERD_EINVAL, "no grammar kind");
	if (strcmp(kind, "gbnf") == 0)
		return grammar_from_gbnf(text, out, err);
	if (strcmp(kind, "json_schema") == 0)
		return grammar_from_json_schema(text, out, err);
	if (strcmp(kind, "json_object") == 0)
		return grammar_json_object(out, err);
	return seterr(err, INFERD_EINVAL, "unknown grammar kind \"%.60s\" (json_schema, json_object or gbnf)", kind);
}

/* ---------------- 4a. the vocabulary trie ---------------- */

struct tnode {
	int32_t child, sibling; /* first child, next sibling (-1 none) */
	int32_t tok;            /* first token ending here (-1 none) */
	uint8_t byte;
};

struct grammar_vocab {
	int n;                  /* token ids 0..n-1 */
	uint8_t *bytes;
	uint32_t *off;          /* [n] */
	int32_t *len;           /* [n]; -1: special or empty, never allowed */
	struct tnode *tr;       /* [n_tr]; 0 is the root */
	int n_tr, cap_tr;
	int32_t *tok_next;      /* [n] next token ending at the same node */
	/* the trie flattened in depth-first order for the walk: node i's
	 * children are i+1, then each next one at the previous one's end, so
	 * the walk reads memory forwards only */
	struct fnode {
		int32_t end;    /* one past the last node of the subtree */
		int32_t tok;    /* its tokens: toks[tok .. tok + n_tok) */
		int32_t n_tok;
		int32_t tok_end; /* the subtree's tokens: toks[tok .. tok_end) */
		uint8_t byte;
		uint8_t plain;  /* every byte in the subtree (its own too) is PLAIN */
	} *fl;
	int32_t *toks;
};

void grammar_vocab_free(struct grammar_vocab *v)
{
	if (!v)
		return;
	free(v->bytes);
	free(v->off);
	free(v->len);
	free(v->tr);
	free(v->tok_next);
	free(v->fl);
	free(v->toks);
	free(v);
}

int grammar_vocab_n(const struct grammar_vocab *v) { return v->n; }

const uint8_t *grammar_vocab_bytes(const struct grammar_vocab *v, int32_t id, int *len)
{
	if (id < 0 || id >= v->n || v->len[id] < 0) {
		*len = 0;
		return NULL;
	}
	*len = v->len[id];
	return v->bytes + v->off[id];
}

static int32_t trie_child(struct grammar_vocab *v, int32_t node, uint8_t c)
{
	for (int32_t k = v->tr[node].child; k >= 0; k = v->tr[k].sibling)
		if (v->tr[k].byte == c)
			return k;
	if (v->n_tr == v->cap_tr) {
		int cap = v->cap_tr * 2;
		struct tnode *nt = realloc(v->tr, (size_t)cap * sizeof *nt);
		if (!nt)
			return -1;
		v->tr = nt;
		v->cap_tr = cap;
	}
	int32_t k = v->n_tr++;
	v->tr[k] = (struct tnode){.child = -1, .sibling = v->tr[node].child, .tok = -1, .byte = c};
	v->tr[node].child = k;
	return k;
}

/* the linked trie in depth-first order (an explicit stack: tokens can be
 * hundreds of bytes long) */
/* printable ASCII but " and \: a JSON string's character class (and
 * many others) loops on these, so a subtree of them can be taken whole */
static int plain_byte(uint8_t c) { return c >= 0x20 && c < 0x7F && c != '"' && c != '\\'; }

static int flatten(struct grammar_vocab *v)
{
	v->fl = malloc((size_t)v->n_tr * sizeof *v->fl);
	v->toks = malloc(((size_t)v->n + 1) * sizeof *v->toks);
	int32_t *stack = malloc((size_t)v->n_tr * sizeof *stack), *idx = malloc((size_t)v->n_tr * sizeof *idx);
	if (!v->fl || !v->toks || !stack || !idx) {
		free(stack);
		free(idx);
		return -1;
	}
	int sp = 0, n = 0, nt = 0;
	stack[sp++] = 0;
	while (sp) {
		int32_t k = stack[--sp];
		if (k < 0) { /* subtree of ~k done */
			struct fnode *f = &v->fl[idx[~k]];
			f->end = n;
			f->tok_end = nt;
			f->plain = plain_byte(f->byte);
			for (int32_t c = idx[~k] + 1; c < f->end && f->plain; c = v->fl[c].end)
				f->plain = v->fl[c].plain;
			continue;
		}
		idx[k] = n;
		struct fnode *f = &v->fl[n++];
		f->byte = v->tr[k].byte;
		f->tok = nt;
		for (int32_t t = v->tr[k].tok; t >= 0; t = v->tok_next[t])
			v->toks[nt++] = t;
		f->n_tok = nt - f->tok;
		stack[sp++] = ~k;
		for (int32_t c = v->tr[k].child; c >= 0; c = v->tr[c].sibling)
			stack[sp++] = c;
	}
	free(stack);
	free(idx);
	free(v->tr); /* the linked form was only for building */
	free(v->tok_next);
	v->tr = NULL;
	v->tok_next = NULL;
	return 0;
}

int grammar_vocab_new(const struct tokenizer *t, struct grammar_vocab **out, char *err)
{
	*out = NULL;
	struct grammar_vocab *v = calloc(1, sizeof *v);
	if (!v)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	v->n = tok_n_vocab(t);
	size_t cap = (size_t)v->n * 8 + 256, used = 0;
	v->bytes = malloc(cap);
	v->off = calloc((size_t)v->n + 1, sizeof *v->off);
	v->len = calloc((size_t)v->n + 1, sizeof *v->len);
	v->tok_next = malloc(((size_t)v->n + 1) * sizeof *v->tok_next);
	v->cap_tr = v->n * 4 + 16;
	v->tr = malloc((size_t)v->cap_tr * sizeof *v->tr);
	if (!v->bytes || !v->off || !v->len || !v->tok_next || !v->tr)
		goto oom;
	v->tr[0] = (struct tnode){.child = -1, .sibling = -1, .tok = -1};
	v->n_tr = 1;
	for (int32_t id = 0; id < v->n; id++) {
		v->tok_next[id] = -1;
		int n = tok_token_bytes(t, id, NULL, 0);
		if (n <= 0 || tok_is_special(t, id)) {
			v->len[id] = -1;
			continue;
		}
		if (used + (size_t)n > cap) {
			while (used + (size_t)n > cap)
				cap *= 2;
			uint8_t *nb = realloc(v->bytes, cap);
			if (!nb)
				goto oom;
			v->bytes = nb;
		}
		tok_token_bytes(t, id, v->bytes + used, (size_t)n);
		v->off[id] = (uint32_t)used;
		v->len[id] = n;
		int32_t node = 0;
		for (int k = 0; k < n && node >= 0; k++)
			node = trie_child(v, node, v->bytes[used + (size_t)k]);
		if (node < 0)
			goto oom;
		v->tok_next[id] = v->tr[node].tok;
		v->tr[node].tok = id;
		used += (size_t)n;
	}
	if (flatten(v))
		goto oom;
	*out = v;
	return 0;
oom:
	grammar_vocab_free(v);
	return seterr(err, INFERD_ENOMEM, "out of memory for the vocabulary trie");
}

/* ---------------- 4b. the matcher ---------------- */

#define HBUCKETS 4096
#define SBUCKETS 1024

struct gnode {
	int32_t pos, parent, next; /* next: hash chain */
	uint32_t h;
	uint64_t sh;            /* hash of the whole stack (pos and every parent's),
				 * the same in any arena: the mask cache's key */
};

#define MASK_CACHE 4

struct gset {
	int32_t off, len;       /* leaves in pool */
	int complete;
	uint32_t hash;
	int32_t next;           /* hash chain */
	uint64_t uni[4];        /* bytes some leaf accepts */
	int loops;              /* -1 unknown; 1: every plain byte leads back here */
};

struct grammar_matcher {
	const struct grammar *g;
	struct gnode *nd;
	uint32_t *mark, *vis;
	int n_nd, cap_nd;
	uint32_t stamp;
	int32_t head[HBUCKETS];
	int32_t *cur;           /* the state: leaf stacks, sorted */
	int n_cur, cap_cur;
	int complete;
	int32_t *tmp;           /* advance() result */
	int n_tmp, cap_tmp, tmp_complete;
	int oom;
	/* mask walk scratch */
	struct gset *sets;
	int n_sets, cap_sets;
	int32_t *pool;
	int n_pool, cap_pool;
	int32_t *trans;         /* [n_sets][256]: -2 unknown, -1 dead, else a set */
	int cap_trans;          /* sets trans has rows for */
	int32_t shead[SBUCKETS];
	/* the last masks computed, by the state's stack hashes: inside a
	 * string every token leads back to the same state, so most steps
	 * there reuse the previous mask */
	struct mask_memo {
		uint64_t key;
		const struct grammar_vocab *v;
		int n_bits, count;
		uint32_t *bits;
	} memo[MASK_CACHE];
	int memo_next;
};

static int grow(void **p, int *cap, int need, size_t el)
{
	if (need <= *cap)
		return 0;
	int c = *cap ? *cap : 16;
	while (c < need)
		c *= 2;
	void *np = realloc(*p, (size_t)c * el);
	if (!np)
		return -1;
	*p = np;
	*cap = c;
	return 0;
}

static int32_t cons(struct grammar_matcher *m, int32_t pos, int32_t parent)
{
	uint32_t h = (uint32_t)pos * 0x9E3779B1u ^ (uint32_t)(parent + 1) * 0x85EBCA77u;
	h ^= h >> 15;
	int32_t *b = &m->head[h & (HBUCKETS - 1)];
	for (int32_t i = *b; i >= 0; i = m->nd[i].next)
		if (m->nd[i].pos == pos && m->nd[i].parent == parent)
			return i;
	if (m->n_nd == m->cap_nd) {
		int cap = m->cap_nd * 2;
		struct gnode *nn = realloc(m->nd, (size_t)cap * sizeof *nn);
		uint32_t *nm = nn ? realloc(m->mark, (size_t)cap * sizeof *nm) : NULL;
		if (nn)
			m->nd = nn;
		if (nm)
			m->mark = nm;
		uint32_t *nv = nm ? realloc(m->vis, (size_t)cap * sizeof *nv) : NULL;
		if (nv)
			m->vis = nv;
		if (!nn || !nm || !nv) {
			m->oom = 1;
			return -2;
		}
		m->cap_nd = cap;
	}
	int32_t i = m->n_nd++;
	uint64_t sh = (parent >= 0 ? m->nd[parent].sh : 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(uint32_t)pos + 1);
	sh *= 0xBF58476D1CE4E5B9ull;
	sh ^= sh >> 31;
	m->nd[i] = (struct gnode){pos, parent, *b, h, sh};
	m->mark[i] = m->vis[i] = 0;
	*b = i;
	return i;
}

/* drop nodes from n0 on (they were made last, so each heads its chain) */
static void truncate_nodes(struct grammar_matcher *m, int n0)
{
	for (int i = m->n_nd - 1; i >= n0; i--)
		m->head[m->nd[i].h & (HBUCKETS - 1)] = m->nd[i].next;
	m->n_nd = n0;
}

static void tmp_push(struct grammar_matcher *m, int32_t id)
{
	if (grow((void **)&m->tmp, &m->cap_tmp, m->n_tmp + 1, sizeof *m->tmp)) {
		m->oom = 1;
		return;
	}
	m->tmp[m->n_tmp++] = id;
}

/* every leaf (a stack whose top is a byte symbol) reachable from stack
 * (pos, parent) without reading, into tmp; END at the bottom: complete */
static void expand(struct grammar_matcher *m, int32_t pos, int32_t parent)
{
	const struct grammar *g = m->g;
	for (;;) {
		const struct gsym *s = &g->sym[pos];
		if (s->kind == S_END) {
			if (parent < 0) {
				m->tmp_complete = 1;
				return;
			}
			pos = m->nd[parent].pos;
			parent = m->nd[parent].parent;
			continue;
		}
		int32_t id = cons(m, pos, parent);
		if (id < 0)
			return;
		if (s->kind == S_CHARS) {
			if (m->mark[id] != m->stamp) {
				m->mark[id] = m->stamp;
				tmp_push(m, id);
			}
			return;
		}
		if (m->vis[id] == m->stamp)
			return;
		m->vis[id] = m->stamp;
		int32_t ret = g->sym[pos + 1].kind == S_END ? parent : cons(m, pos + 1, parent);
		if (ret < -1)
			return;
		int32_t a0 = g->rule_alt0[s->rule], na = g->rule_nalt[s->rule];
		for (int32_t a = 0; a < na; a++)
			expand(m, g->alt_pos[a0 + a], ret);
		return;
	}
}

static void next_stamp(struct grammar_matcher *m)
{
	if (++m->stamp == 0) { /* wrapped: clear every mark */
		memset(m->mark, 0, (size_t)m->cap_nd * sizeof *m->mark);
		memset(m->vis, 0, (size_t)m->cap_nd * sizeof *m->vis);
		m->stamp = 1;
	}
}

/* tmp = the leaves after reading `c` from the leaves set[0..n) */
static void advance(struct grammar_matcher *m, const int32_t *set, int n, uint8_t c)
{
	next_stamp(m);
	m->n_tmp = 0;
	m->tmp_complete = 0;
	for (int i = 0; i < n; i++) {
		int32_t pos = m->nd[set[i]].pos;
		if (set_has(m->g->sym[pos].set, c))
			expand(m, pos + 1, m->nd[set[i]].parent);
	}
}

static void sort_ids(int32_t *a, int n)
{
	for (int i = 1; i < n; i++) {
		int32_t x = a[i];
		int j = i;
		while (j > 0 && a[j - 1] > x) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = x;
	}
}

struct grammar_matcher *grammar_matcher_new(const struct grammar *g)
{
	struct grammar_matcher *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->g = g;
	m->cap_nd = 256;
	m->nd = malloc((size_t)m->cap_nd * sizeof *m->nd);
	m->mark = calloc((size_t)m->cap_nd, sizeof *m->mark);
	m->vis = calloc((size_t)m->cap_nd, sizeof *m->vis);
	for (int i = 0; i < HBUCKETS; i++)
		m->head[i] = -1;
	if (!m->nd || !m->mark || !m->vis) {
		grammar_matcher_free(m);
		return NULL;
	}
	next_stamp(m);
	m->n_tmp = 0;
	m->tmp_complete = 0;
	expand(m, g->start_pos, -1);
	if (m->oom || grow((void **)&m->cur, &m->cap_cur, m->n_tmp + 1, sizeof *m->cur)) {
		grammar_matcher_free(m);
		return NULL;
	}
	if (m->n_tmp)
		memcpy(m->cur, m->tmp, (size_t)m->n_tmp * sizeof *m->cur);
	m->n_cur = m->n_tmp;
	sort_ids(m->cur, m->n_cur);
	m->complete = m->tmp_complete;
	return m;
}

void grammar_matcher_free(struct grammar_matcher *m)
{
	if (!m)
		return;
	free(m->nd);
	free(m->mark);
	free(m->vis);
	free(m->cur);
	free(m->tmp);
	free(m->sets);
	free(m->pool);
	free(m->trans);
	for (int i = 0; i < MASK_CACHE; i++)
		free(m->memo[i].bits);
	free(m);
}

bool grammar_matcher_complete(const struct grammar_matcher *m) { return m->complete; }
bool grammar_matcher_can_continue(const struct grammar_matcher *m) { return m->n_cur > 0; }

/* keep only the nodes the state reaches (the arena would grow forever) */
static int32_t copy_node(struct grammar_matcher *m, const struct gnode *old, int32_t *remap, int32_t i)
{
	if (i < 0)
		return -1;
	if (remap[i] >= 0)
		return remap[i];
	int32_t p = copy_node(m, old, remap, old[i].parent);
	if (old[i].parent >= 0 && p < 0)
		return -2;
	int32_t n = cons(m, old[i].pos, p);
	return n < 0 ? -2 : (remap[i] = n);
}

static int compact(struct grammar_matcher *m)
{
	int n_old = m->n_nd;
	struct gnode *old = malloc((size_t)n_old * sizeof *old);
	int32_t *remap = malloc((size_t)n_old * sizeof *remap);
	if (!old || !remap) {
		free(old);
		free(remap);
		return 0; /* keep the uncompacted state: still correct */
	}
	memcpy(old, m->nd, (size_t)n_old * sizeof *old);
	for (int i = 0; i < n_old; i++)
		remap[i] = -1;
	truncate_nodes(m, 0);
	int rc = 0;
	for (int i = 0; i < m->n_cur; i++) {
		int32_t n = copy_node(m, old, remap, m->cur[i]);
		if (n < 0) {
			rc = INFERD_ENOMEM;
			break;
		}
		m->cur[i] = n;
	}
	sort_ids(m->cur, m->n_cur);
	free(old);
	free(remap);
	return rc;
}

int grammar_matcher_accept(struct grammar_matcher *m, const uint8_t *bytes, size_t n)
{
	if (!n)
		return 0;
	int n0 = m->n_nd;
	int32_t *work = malloc(((size_t)m->n_cur + 1) * sizeof *work);
	if (!work)
		return INFERD_ENOMEM;
	if (m->n_cur)
		memcpy(work, m->cur, (size_t)m->n_cur * sizeof *work);
	int nw = m->n_cur, complete = 0;
	for (size_t k = 0; k < n; k++) {
		advance(m, work, nw, bytes[k]);
		complete = m->tmp_complete;
		if (m->oom || (m->n_tmp == 0 && (!complete || k + 1 < n))) {
			int rc = m->oom ? INFERD_ENOMEM : -1;
			m->oom = 0;
			truncate_nodes(m, n0);
			free(work);
			return rc;
		}
		int32_t *nw_p = realloc(work, ((size_t)m->n_tmp + 1) * sizeof *work);
		if (!nw_p) {
			truncate_nodes(m, n0);
			free(work);
			return INFERD_ENOMEM;
		}
		work = nw_p;
		if (m->n_tmp)
			memcpy(work, m->tmp, (size_t)m->n_tmp * sizeof *work);
		nw = m->n_tmp;
	}
	free(m->cur);
	m->cur = work;
	m->n_cur = nw;
	m->cap_cur = nw + 1;
	m->complete = complete;
	sort_ids(m->cur, m->n_cur);
	return m->n_nd > 512 ? compact(m) : 0;
}

int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int32_t id)
{
	int len;
	const uint8_t *b = grammar_vocab_bytes(v, id, &len);
	return b ? grammar_matcher_accept(m, b, (size_t)len) : -1;
}

/* the set of leaves tmp (sorted here) as an interned set id; -1 oom */
static int32_t intern(struct grammar_matcher *m, int complete)
{
	sort_ids(m->tmp, m->n_tmp);
	uint32_t h = 2166136261u ^ (uint32_t)complete;
	for (int i = 0; i < m->n_tmp; i++)
		h = (h ^ (uint32_t)m->tmp[i]) * 16777619u;
	for (int32_t s = m->shead[h & (SBUCKETS - 1)]; s >= 0; s = m->sets[s].next) {
		const struct gset *x = &m->sets[s];
		if (x->hash == h && x->len == m->n_tmp && x->complete == complete &&
		    (!m->n_tmp || memcmp(m->pool + x->off, m->tmp, (size_t)m->n_tmp * sizeof *m->tmp) == 0))
			return s;
	}
	int32_t s = m->n_sets;
	if (grow((void **)&m->sets, &m->cap_sets, s + 1, sizeof *m->sets) ||
	    grow((void **)&m->pool, &m->cap_pool, m->n_pool + m->n_tmp + 1, sizeof *m->pool)) {
		m->oom = 1;
		return -1;
	}
	if (m->cap_trans < m->cap_sets) { /* a row of 256 per set */
		int32_t *nt = realloc(m->trans, (size_t)m->cap_sets * 256 * sizeof *nt);
		if (!nt) {
			m->oom = 1;
			return -1;
		}
		m->trans = nt;
		m->cap_trans = m->cap_sets;
	}
	struct gset *x = &m->sets[s];
	*x = (struct gset){.off = m->n_pool, .len = m->n_tmp, .complete = complete, .hash = h,
			   .next = m->shead[h & (SBUCKETS - 1)], .loops = -1};
	for (int i = 0; i < m->n_tmp; i++) {
		const uint64_t *cs = m->g->sym[m->nd[m->tmp[i]].pos].set;
		for (int k = 0; k < 4; k++)
			x->uni[k] |= cs[k];
	}
	if (m->n_tmp)
		memcpy(m->pool + m->n_pool, m->tmp, (size_t)m->n_tmp * sizeof *m->tmp);
	m->n_pool += m->n_tmp;
	for (int k = 0; k < 256; k++)
		m->trans[(size_t)s * 256 + (size_t)k] = -2;
	m->shead[h & (SBUCKETS - 1)] = s;
	m->n_sets++;
	return s;
}

static int32_t step_set(struct grammar_matcher *m, int32_t sid, uint8_t c)
{
	advance(m, m->pool + m->sets[sid].off, m->sets[sid].len, c);
	if (m->oom)
		return -1;
	if (m->n_tmp == 0 && !m->tmp_complete)
		return -1;
	return intern(m, m->tmp_complete);
}

struct walk {
	struct grammar_matcher *m;
	const struct grammar_vocab *v;
	uint32_t *bits;
	int n_bits, count;
};

static void allow(struct walk *w, int32_t from, int32_t to)
{
	for (int32_t k = from; k < to; k++) {
		int32_t t = w->v->toks[k];
		if (t < w->n_bits) {
			w->bits[t >> 5] |= 1u << (t & 31);
			w->count++;
		}
	}
}

/* does every plain byte lead from set sid back to sid? */
static int set_loops(struct grammar_matcher *m, int32_t sid)
{
	if (m->sets[sid].loops >= 0)
		return m->sets[sid].loops;
	int loops = 1;
	for (int c = 0x20; c < 0x7F && loops && !m->oom; c++) {
		if (!plain_byte((uint8_t)c))
			continue;
		int32_t ns = m->trans[(size_t)sid * 256 + (size_t)c];
		if (ns == -2) {
			ns = step_set(m, sid, (uint8_t)c);
			m->trans[(size_t)sid * 256 + (size_t)c] = ns;
		}
		loops = ns == sid;
	}
	return m->sets[sid].loops = loops && !m->oom;
}

static void walk(struct walk *w, int32_t node, int32_t sid)
{
	struct grammar_matcher *m = w->m;
	const struct fnode *fl = w->v->fl;
	int loops = -1;
	for (int32_t c = node + 1; c < fl[node].end; c = fl[c].end) {
		uint8_t by = fl[c].byte;
		if (!set_has(m->sets[sid].uni, by))
			continue;
		if (fl[c].plain) { /* inside a string, say: the whole subtree is allowed */
			if (loops < 0)
				loops = set_loops(m, sid);
			if (m->oom)
				return;
			if (loops) {
				allow(w, fl[c].tok, fl[c].tok_end);
				continue;
			}
		}
		int32_t ns = m->trans[(size_t)sid * 256 + by];
		if (ns == -2) {
			ns = step_set(m, sid, by);
			if (m->oom)
				return;
			m->trans[(size_t)sid * 256 + by] = ns;
		}
		if (ns < 0)
			continue;
		allow(w, fl[c].tok, fl[c].tok + fl[c].n_tok);
		if (m->sets[ns].len)
			walk(w, c, ns);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* the state's key: its stacks' hashes, sorted (node ids differ between
 * arenas; the stacks they stand for do not) */
static uint64_t state_key(const struct grammar_matcher *m)
{
	uint64_t local[64], *hs = m->n_cur <= 64 ? local : malloc((size_t)m->n_cur * sizeof *hs);
	if (!hs)
		return 0;
	for (int i = 0; i < m->n_cur; i++)
		hs[i] = m->nd[m->cur[i]].sh;
	qsort(hs, (size_t)m->n_cur, sizeof *hs, cmp_u64);
	uint64_t k = 0x84222325CBF29CE4ull ^ (uint64_t)m->complete ^ ((uint64_t)m->n_cur << 32);
	for (int i = 0; i < m->n_cur; i++) {
		k = (k ^ hs[i]) * 0x100000001B3ull;
		k ^= k >> 29;
	}
	if (hs != local)
		free(hs);
	return k ? k : 1;
}

int grammar_matcher_mask(struct grammar_matcher *m, const struct grammar_vocab *v, uint32_t *bits, int n_bits)
{
	size_t words = (size_t)(n_bits + 31) / 32;
	memset(bits, 0, words * sizeof *bits);
	if (!m->n_cur)
		return 0;
	uint64_t key = state_key(m);
	for (int i = 0; i < MASK_CACHE; i++) {
		const struct mask_memo *c = &m->memo[i];
		if (key && c->key == key && c->v == v && c->n_bits == n_bits) {
			memcpy(bits, c->bits, words * sizeof *bits);
			return c->count;
		}
	}
	int n0 = m->n_nd;
	m->n_sets = 0;
	m->n_pool = 0;
	for (int i = 0; i < SBUCKETS; i++)
		m->shead[i] = -1;
	if (grow((void **)&m->tmp, &m->cap_tmp, m->n_cur + 1, sizeof *m->tmp))
		return INFERD_ENOMEM;
	memcpy(m->tmp, m->cur, (size_t)m->n_cur * sizeof *m->tmp);
	m->n_tmp = m->n_cur;
	struct walk w = {.m = m, .v = v, .bits = bits, .n_bits = n_bits};
	int32_t s0 = intern(m, m->complete);
	if (s0 >= 0)
		walk(&w, 0, s0);
	truncate_nodes(m, n0);
	if (m->oom) {
		m->oom = 0;
		return INFERD_ENOMEM;
	}
	struct mask_memo *c = &m->memo[m->memo_next];
	if (c->n_bits != n_bits || !c->bits) {
		free(c->bits);
		c->bits = malloc(words * sizeof *bits);
		c->key = 0;
	}
	if (c->bits && key) {
		memcpy(c->bits, bits, words * sizeof *bits);
		*c = (struct mask_memo){key, v, n_bits, w.count, c->bits};
		m->memo_next = (m->memo_next + 1) % MASK_CACHE;
	}
	return w.count;
}

int inferd_grammar_check(const char *kind, const char *text, char *err)
{
	struct grammar *g;
	int rc = grammar_compile(kind, text, &g, err);
	grammar_free(g);
	return rc;
}
