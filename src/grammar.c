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
 *     numeric bounds become digit-wise range alternatives (times the
 *     remainder for multipleOf), a string's pattern or format becomes a
 *     Thompson NFA whose live (state, length so far) pairs become rules,
 *     so minLength/maxLength hold exactly and no path dead-ends;
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
 * Token terminals (S_TOKEN, GBNF <TEXT> / <[ID]>) are leaves that no
 * byte advances: the mask adds the ids a leaf's terminal stands for
 * (tk_ids: the vocabulary's special tokens of that text, kept aside from
 * the trie, else the ordinary token of exactly those bytes), and
 * accept_token lets such a leaf take its token whole before trying bytes.
 *
 * Ownership: grammar and vocab are immutable once built (any thread); a
 * matcher is one sequence's and is driven by one thread at a time.
 */
#include "grammar.h"
#include "inferd.h"
#include "tok.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_END = 0, S_CHARS = 1, S_RULE = 2, S_TOKEN = 3 /* a token terminal: rule = its index in tk */ };

/* a token terminal (GBNF <TEXT> or <[ID]>): the token whose text is
 * text[0, len) (a special token of the vocabulary, else the one ordinary
 * token of exactly those bytes), or the token `id` (text NULL) */
struct gtok {
	char *text;
	int len;
	int32_t id;
};

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
	struct gtok *tk;        /* token terminals */
	int n_tk, cap_tk;
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
	for (int i = 0; i < b->n_tk; i++)
		free(b->tk[i].text);
	free(b->tk);
}

/* a token terminal: text[0, len) (or the token id when text is NULL) */
static struct bsym b_token(struct builder *b, const char *text, int len, int32_t id)
{
	struct bsym s = {.kind = S_TOKEN};
	for (int i = 0; i < b->n_tk; i++)
		if (text ? b->tk[i].text && b->tk[i].len == len && !memcmp(b->tk[i].text, text, (size_t)len)
			 : !b->tk[i].text && b->tk[i].id == id) {
			s.rule = i;
			return s;
		}
	if (b->n_tk == b->cap_tk) {
		int cap = b->cap_tk ? 2 * b->cap_tk : 8;
		struct gtok *nt = realloc(b->tk, (size_t)cap * sizeof *nt);
		if (!nt) {
			b->oom = 1;
			return s;
		}
		b->tk = nt;
		b->cap_tk = cap;
	}
	char *t = text ? malloc((size_t)len + 1) : NULL;
	if (text && !t) {
		b->oom = 1;
		return s;
	}
	if (t) {
		memcpy(t, text, (size_t)len);
		t[len] = 0;
	}
	b->tk[b->n_tk] = (struct gtok){t, len, id};
	s.rule = b->n_tk++;
	return s;
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
static int gp_json(struct gp *p);

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
	} else if (c == '<') { /* a token: <[ID]>, or <TEXT> (the brackets are the token's text) */
		size_t e = p->i + 1;
		while (e < p->n && p->s[e] != '>' && p->s[e] != '\n' && e - p->i < 256)
			e++;
		if (e >= p->n || p->s[e] != '>' || e == p->i + 1) {
			gp_err(p, at, "a token is <TEXT> or <[ID]> on one line (at most 255 bytes)");
			return;
		}
		int32_t id = -1;
		if (p->s[p->i + 1] == '[') {
			long v = 0;
			size_t k = p->i + 2;
			for (; k < e && p->s[k] >= '0' && p->s[k] <= '9' && v < INT32_MAX / 10; k++)
				v = v * 10 + (p->s[k] - '0');
			if (k == p->i + 2 || k + 1 != e || p->s[k] != ']') {
				gp_err(p, at, "a token id is <[digits]>");
				return;
			}
			id = (int32_t)v;
		}
		alt_push(b, tmp, id >= 0 ? b_token(b, NULL, 0, id) : b_token(b, p->s + p->i, (int)(e + 1 - p->i), -1));
		p->i = e + 1;
	} else if (c == '%' && p->n - p->i >= 5 && !memcmp(p->s + p->i, "%json", 5)) {
		p->i += 5;
		int r = gp_json(p);
		if (r >= 0)
			alt_push(b, tmp, sym_rule(r));
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
	struct gtok *tk;        /* [n_tk] token terminals (S_TOKEN's rule indexes it) */
	int n_tk;
};

void grammar_free(struct grammar *g)
{
	if (!g)
		return;
	free(g->sym);
	free(g->alt_pos);
	free(g->rule_alt0);
	free(g->rule_nalt);
	for (int i = 0; i < g->n_tk; i++)
		free(g->tk[i].text);
	free(g->tk);
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
	g->tk = b->tk; /* the grammar owns them now */
	g->n_tk = b->n_tk;
	b->tk = NULL;
	b->n_tk = b->cap_tk = 0;
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

/* ---------------- 2c. numeric bounds, patterns, formats ---------------- */

#define SC_INT_MAX 9999999999999999LL /* the 16 digits an integer may have */

/* digit sequences of [x, y] (decimal strings of one length L, no leading
 * zero unless L == 1) as alternatives of rule r: pre (a literal or NULL),
 * then digit sets, then rule tail (-1 none): the usual regex range split */
/* multipleOf k for integers: m more digits from remainder rem reach 0 */
struct mulctx {
	struct builder *b;
	int k;
	int8_t *live;           /* [17 * k] */
	int *rule;              /* [17 * k], -1 not made yet */
};

static int mc_rule(struct mulctx *mc, int m, int rem)
{
	int *slot = &mc->rule[m * mc->k + rem];
	if (*slot >= 0)
		return *slot;
	struct builder *b = mc->b;
	int r = *slot = b_new_rule(b, NULL);
	if (r < 0)
		return r;
	int done[10] = {0};
	for (int d = 0; d <= 9; d++) { /* digits leading to one remainder share an alternative */
		int r1 = (rem * 10 + d) % mc->k;
		if (done[d] || !mc->live[(m - 1) * mc->k + r1])
			continue;
		struct bsym s = {.kind = S_CHARS};
		for (int e = d; e <= 9; e++)
			if ((rem * 10 + e) % mc->k == r1) {
				set_add(s.set, '0' + e, '0' + e);
				done[e] = 1;
			}
		int a = b_alt(b, r);
		b_sym(b, r, a, s);
		if (m > 1)
			b_ref(b, r, a, mc_rule(mc, m - 1, r1));
	}
	return r;
}

static int digit_lo(const struct bsym *s)
{
	for (int c = '0'; c <= '9'; c++)
		if (set_has(s->set, c))
			return c - '0';
	return -1;
}

static int digit_hi(const struct bsym *s)
{
	for (int c = '9'; c >= '0'; c--)
		if (set_has(s->set, c))
			return c - '0';
	return -1;
}

static void range_same_len(struct builder *b, int r, const char *pre, struct bsym *acc, int na, const char *x,
			   const char *y, int L, int tail, struct mulctx *mc)
{
	if (L == 0 && mc) { /* known digits, then one range, then free digits */
		int rem = 0, q = 0;
		while (q < na && digit_lo(&acc[q]) == digit_hi(&acc[q]))
			rem = (rem * 10 + digit_lo(&acc[q++])) % mc->k;
		int lo = q < na ? digit_lo(&acc[q]) : 0, hi = q < na ? digit_hi(&acc[q]) : -1, m = na - q - 1;
		if (q == na && rem == 0) {
			int a = b_alt(b, r);
			if (pre)
				b_str(b, r, a, pre);
			for (int i = 0; i < na; i++)
				b_sym(b, r, a, acc[i]);
		}
		for (int d = lo; d <= hi; d++) {
			int r1 = (rem * 10 + d) % mc->k;
			if (!mc->live[m * mc->k + r1])
				continue;
			int a = b_alt(b, r);
			if (pre)
				b_str(b, r, a, pre);
			for (int i = 0; i < q; i++)
				b_sym(b, r, a, acc[i]);
			b_sym(b, r, a, sym_chars('0' + d, '0' + d));
			if (m > 0)
				b_ref(b, r, a, mc_rule(mc, m, r1));
		}
		return;
	}
	if (L == 0) {
		int a = b_alt(b, r);
		if (pre)
			b_str(b, r, a, pre);
		for (int i = 0; i < na; i++)
			b_sym(b, r, a, acc[i]);
		b_ref(b, r, a, tail);
		return;
	}
	if (x[0] == y[0]) {
		acc[na] = sym_chars(x[0], x[0]);
		range_same_len(b, r, pre, acc, na + 1, x + 1, y + 1, L - 1, tail, mc);
		return;
	}
	int z = 1, nines = 1;
	for (int i = 1; i < L; i++) {
		z &= x[i] == '0';
		nines &= y[i] == '9';
	}
	char lo = x[0], hi = y[0];
	char n9[24], n0[24];
	memset(n9, '9', (size_t)L);
	memset(n0, '0', (size_t)L);
	if (!z) { /* x0 then x[1..] .. 99..9 */
		acc[na] = sym_chars(x[0], x[0]);
		range_same_len(b, r, pre, acc, na + 1, x + 1, n9, L - 1, tail, mc);
		lo++;
	}
	if (!nines) {
		acc[na] = sym_chars(y[0], y[0]);
		range_same_len(b, r, pre, acc, na + 1, n0, y + 1, L - 1, tail, mc);
		hi--;
	}
	if (lo <= hi) {
		acc[na] = sym_chars(lo, hi);
		for (int i = 1; i < L; i++)
			acc[na + i] = sym_chars('0', '9');
		range_same_len(b, r, pre, acc, na + L, "", "", 0, tail, mc);
	}
}

/* the decimal integers of [lo, hi] (0 <= lo <= hi <= SC_INT_MAX) */
static void range_alts(struct builder *b, int r, const char *pre, long long lo, long long hi, int tail,
		       struct mulctx *mc)
{
	long long p = 1;
	for (int L = 1; L <= 16; L++, p *= 10) {
		long long a = lo > (L == 1 ? 0 : p) ? lo : (L == 1 ? 0 : p), z = hi < p * 10 - 1 ? hi : p * 10 - 1;
		if (a > z)
			continue;
		char xs[24], ys[24];
		struct bsym acc[24];
		snprintf(xs, sizeof xs, "%lld", a);
		snprintf(ys, sizeof ys, "%lld", z);
		range_same_len(b, r, pre, acc, 0, xs, ys, L, tail, mc);
	}
}

/* integer magnitudes L <(=) m <(=) U (U < 0: unbounded), multiples of mc's k */
static void magnitude_alts(struct builder *b, int r, const char *pre, long long L, int lx, long long U, int ux,
			   struct mulctx *mc)
{
	long long lo = L + lx, hi = U < 0 ? SC_INT_MAX : U - ux;
	if (lo <= hi)
		range_alts(b, r, pre, lo, hi > SC_INT_MAX ? SC_INT_MAX : hi, -1, mc);
}

/* Numbers with bounds: a bound is a decimal of at most 15 significant
 * digits and the values are too (integer part of L digits, fraction of at
 * most 15 - L), so that a double parser (ajv, jansson) orders a value and
 * a bound as the decimals are ordered: no value rounds onto a bound. */
struct dec {
	long long ip;           /* integer part of the magnitude */
	char f[32];             /* fraction digits, no trailing zeros */
	int nf;
};

#define DEC_INT_MAX 999999999999999LL /* 15 digits */

static int dec_of(double x, struct dec *d)
{
	x = fabs(x);
	if (x > (double)DEC_INT_MAX)
		return -1;
	char s[64];
	for (int k = 0; k <= 15; k++) {
		snprintf(s, sizeof s, "%.*f", k, x);
		if (strtod(s, NULL) != x)
			continue;
		int sig = 0, seen = 0;
		for (const char *p = s; *p; p++)
			if (*p >= '0' && *p <= '9') {
				seen |= *p != '0';
				sig += seen;
			}
		if (sig > 15)
			return -1;
		d->ip = strtoll(s, NULL, 10);
		const char *dot = strchr(s, '.');
		snprintf(d->f, sizeof d->f, "%s", dot ? dot + 1 : "");
		d->nf = (int)strlen(d->f);
		while (d->nf && d->f[d->nf - 1] == '0')
			d->f[--d->nf] = 0;
		return 0;
	}
	return -1;
}

/* fraction digits D (at most maxd) with lo <(=) 0.D <(=) hi, where lo / hi
 * are the fractions of the bounds when the integer part equals theirs
 * (NULL: no constraint). State: position, still equal to lo, to hi. */
struct fctx {
	struct builder *b;
	const struct dec *lo, *hi;
	int lx, hx, maxd;
	int rule[17][2][2];
	int8_t live[17][2][2];  /* -1 unknown */
};

static int fx_empty_ok(const struct fctx *f, int i, int le, int he)
{
	int lok = !le || (i >= f->lo->nf && !f->lx);
	int hok = !he || i < f->hi->nf || !f->hx;
	return lok && hok;
}

/* digit d at position i from (le, he): -1 when it breaks a bound, else the
 * new flags as le*2+he */
static int fx_step(const struct fctx *f, int i, int le, int he, int d)
{
	int nl = 0, nh = 0;
	if (le) {
		int a = i < f->lo->nf ? f->lo->f[i] - '0' : 0;
		if (d < a)
			return -1;
		nl = d == a;
	}
	if (he) {
		int z = i < f->hi->nf ? f->hi->f[i] - '0' : 0;
		if (d > z)
			return -1;
		nh = d == z;
	}
	return nl * 2 + nh;
}

static int fx_live(struct fctx *f, int i, int le, int he)
{
	if (f->live[i][le][he] >= 0)
		return f->live[i][le][he];
	int ok = fx_empty_ok(f, i, le, he);
	for (int d = 0; d <= 9 && !ok && i < f->maxd; d++) {
		int st = fx_step(f, i, le, he, d);
		ok = st >= 0 && fx_live(f, i + 1, st >> 1, st & 1);
	}
	return f->live[i][le][he] = (int8_t)ok;
}

/* the digit alternatives at position i (each followed by the rest) into r */
static int fx_rule(struct fctx *f, int i, int le, int he);

static void fx_digits(struct fctx *f, int r, int i, int le, int he)
{
	for (int d = 0; d <= 9 && i < f->maxd;) {
		int st = fx_step(f, i, le, he, d);
		if (st < 0 || !fx_live(f, i + 1, st >> 1, st & 1)) {
			d++;
			continue;
		}
		int e = d;
		while (e + 1 <= 9 && fx_step(f, i, le, he, e + 1) == st)
			e++;
		int a = b_alt(f->b, r);
		b_sym(f->b, r, a, sym_chars('0' + d, '0' + e));
		b_ref(f->b, r, a, fx_rule(f, i + 1, st >> 1, st & 1));
		d = e + 1;
	}
}

static int fx_rule(struct fctx *f, int i, int le, int he)
{
	if (f->rule[i][le][he] >= 0)
		return f->rule[i][le][he];
	int r = f->rule[i][le][he] = b_new_rule(f->b, NULL);
	if (r < 0)
		return r;
	if (fx_empty_ok(f, i, le, he))
		b_alt(f->b, r);
	fx_digits(f, r, i, le, he);
	return r;
}

/* the optional fraction after integer part ip (or -1: none is possible) */
static int frac_opt(struct builder *b, long long ip, const struct dec *lo, int lx, const struct dec *hi, int hx)
{
	int nd = 0;
	for (long long v = ip; v; v /= 10)
		nd++;
	static const struct dec zero = {0};
	struct fctx f = {.b = b, .lo = lo ? lo : &zero, .hi = hi ? hi : &zero, .lx = lx, .hx = hx,
			 .maxd = 15 - nd};
	memset(f.rule, -1, sizeof f.rule);
	memset(f.live, -1, sizeof f.live);
	int le = lo != NULL, he = hi != NULL;
	if (!fx_live(&f, 0, le, he))
		return -1;
	int r = b_new_rule(b, NULL);
	if (fx_empty_ok(&f, 0, le, he))
		b_alt(b, r);
	int g = b_new_rule(b, NULL);
	fx_digits(&f, g, 0, le, he);
	if (b->r[g].n_alt) {
		int a = b_alt(b, r);
		b_str(b, r, a, ".");
		b_ref(b, r, a, g);
	}
	return r;
}

/* decimal magnitudes A <(=) m <(=) B (B NULL: unbounded) */
static void dec_range(struct builder *b, int r, const char *pre, const struct dec *A, int ax, const struct dec *B, int bx)
{
	long long ia = A->ip, ib = B ? B->ip : DEC_INT_MAX;
	int t;
	if (ia > ib)
		return;
	if (B && ia == ib) {
		if ((t = frac_opt(b, ia, A, ax, B, bx)) >= 0)
			range_alts(b, r, pre, ia, ia, t, NULL);
		return;
	}
	if ((t = frac_opt(b, ia, A, ax, NULL, 0)) >= 0)
		range_alts(b, r, pre, ia, ia, t, NULL);
	long long p = 10;
	for (int L = 1; L <= 15; L++, p *= 10) { /* whole parts between, by length */
		long long lo = ia + 1 > p / 10 ? ia + 1 : p / 10, hi = (B ? ib - 1 : ib) < p - 1 ? (B ? ib - 1 : ib) : p - 1;
		if (lo <= hi && (t = frac_opt(b, lo, NULL, 0, NULL, 0)) >= 0)
			range_alts(b, r, pre, lo, hi, t, NULL);
	}
	if (B && (t = frac_opt(b, ib, NULL, 0, B, bx)) >= 0)
		range_alts(b, r, pre, ib, ib, t, NULL);
}

static int sc_num_bound(struct sc *c, json_t *s, const char *key, double *v, const char *path)
{
	json_t *x = json_object_get(s, key);
	if (!x)
		return 0;
	if (!json_is_number(x)) {
		char p[1024];
		path_add(p, sizeof p, path, key);
		sc_err(c, p, "\"%s\" must be a number", key);
		return 0;
	}
	*v = json_number_value(x);
	return 1;
}

/* integer or number with minimum / maximum / exclusiveMinimum /
 * exclusiveMaximum: -1 when it has none of them (the shared rule does) */
static int sc_bounded(struct sc *c, json_t *s, int number, const char *path)
{
	double mn = 0, mx = 0, emn = 0, emx = 0;
	int hmn = sc_num_bound(c, s, "minimum", &mn, path), hmx = sc_num_bound(c, s, "maximum", &mx, path);
	int hemn = 0, hemx = 0;
	json_t *x;
	/* draft 4: exclusiveMinimum / exclusiveMaximum are booleans */
	if ((x = json_object_get(s, "exclusiveMinimum")) && json_is_boolean(x)) {
		if (json_is_true(x) && hmn)
			hemn = 1, emn = mn, hmn = 0;
	} else {
		hemn = sc_num_bound(c, s, "exclusiveMinimum", &emn, path);
	}
	if ((x = json_object_get(s, "exclusiveMaximum")) && json_is_boolean(x)) {
		if (json_is_true(x) && hmx)
			hemx = 1, emx = mx, hmx = 0;
	} else {
		hemx = sc_num_bound(c, s, "exclusiveMaximum", &emx, path);
	}
	/* multipleOf: a whole number from 1 to 1000 (the values are then
	 * integers, for "number" too: every such value has its integer spelling) */
	int k = 0;
	if ((x = json_object_get(s, "multipleOf"))) {
		double kv = json_is_number(x) ? json_number_value(x) : 0;
		if (kv < 1 || kv > 1000 || floor(kv) != kv) {
			char p[1024];
			path_add(p, sizeof p, path, "multipleOf");
			sc_err(c, p, "\"multipleOf\" is supported as a whole number from 1 to 1000");
			return -1;
		}
		k = (int)kv;
		number = 0;
	}
	if (c->failed || !(hmn || hmx || hemn || hemx || k > 1))
		return -1;
	double lim = (double)SC_INT_MAX;
	const double *bs[4] = {hmn ? &mn : NULL, hmx ? &mx : NULL, hemn ? &emn : NULL, hemx ? &emx : NULL};
	struct dec dd;
	for (int i = 0; i < 4; i++)
		if (bs[i] && number && dec_of(*bs[i], &dd)) {
			char p[1024];
			static const char *const names[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
			path_add(p, sizeof p, path, names[i]);
			sc_err(c, p, "\"%s\" of a \"number\" is supported with at most 15 significant digits (and below 1e15)",
			       names[i]);
			return -1;
		}
	/* the interval: lo (excl lx) .. hi (excl hx), in doubles, then exact integers */
	double lo = -INFINITY, hi = INFINITY;
	int lx = 0, hx = 0;
	if (hmn)
		lo = mn;
	if (hemn && (emn > lo || (emn == lo && !lx)))
		lo = emn, lx = 1;
	if (hmx)
		hi = mx;
	if (hemx && (emx < hi || (emx == hi && !hx)))
		hi = emx, hx = 1;
	if (!number) { /* integers: inclusive integer bounds */
		double l = lx ? floor(lo) + 1 : ceil(lo), h = hx ? ceil(hi) - 1 : floor(hi);
		lo = l < -lim ? -lim : l;
		hi = h > lim ? lim : h;
		lx = hx = 0;
	}
	if (lo > hi || (lo == hi && (lx || hx))) {
		sc_err(c, path, "no %s satisfies the bounds", number ? "number" : "integer");
		return -1;
	}
	struct builder *b = c->b;
	int r = sc_rule1(c, number ? "number-range" : "integer-range");
	if (number) {
		struct dec dl = {0}, dh = {0}, zero = {0};
		int lo_inf = isinf(lo), hi_inf = isinf(hi);
		if (!lo_inf)
			dec_of(lo, &dl);
		if (!hi_inf)
			dec_of(hi, &dh);
		if (hi_inf || hi > 0 || (hi == 0 && !hx)) /* value >= 0 */
			dec_range(b, r, NULL, !lo_inf && lo >= 0 ? &dl : &zero, !lo_inf && lo >= 0 ? lx : 0,
				  hi_inf ? NULL : &dh, hx);
		if (lo_inf || lo < 0) /* value < 0: magnitude (0 or -hi) .. -lo */
			dec_range(b, r, "-", !hi_inf && hi < 0 ? &dh : &zero, !hi_inf && hi < 0 ? hx : 1, lo_inf ? NULL : &dl, lx);
	} else {
		struct mulctx mc = {.b = b, .k = k};
		if (k > 1) {
			mc.live = calloc((size_t)17 * (size_t)k, 1);
			mc.rule = malloc((size_t)17 * (size_t)k * sizeof *mc.rule);
			if (!mc.live || !mc.rule) {
				free(mc.live);
				free(mc.rule);
				b->oom = 1;
				return -1;
			}
			mc.live[0] = 1;
			for (int m = 1; m < 17; m++)
				for (int rem = 0; rem < k; rem++) {
					mc.rule[m * k + rem] = -1;
					for (int d = 0; d <= 9 && !mc.live[m * k + rem]; d++)
						mc.live[m * k + rem] = mc.live[(m - 1) * k + (rem * 10 + d) % k];
				}
		}
		struct mulctx *pm = k > 1 ? &mc : NULL;
		long long L = (long long)lo, H = (long long)hi;
		if (H >= 0) /* value >= 0 */
			magnitude_alts(b, r, NULL, L < 0 ? 0 : L, 0, H, 0, pm);
		if (L < 0) { /* value < 0: magnitude (0 or -hi) .. -lo, and -0 as JSON allows */
			magnitude_alts(b, r, "-", H >= 0 ? 1 : -H, 0, -L, 0, pm);
			if (H >= 0)
				b_str(b, r, b_alt(b, r), "-0");
		} else if (L == 0) {
			b_str(b, r, b_alt(b, r), "-0");
		}
		free(mc.live);
		free(mc.rule);
	}
	if (!b->r[r].n_alt) {
		sc_err(c, path, "no %s satisfies the bounds", number ? "number" : "integer");
		return -1;
	}
	return r;
}

/* regular expressions: ECMAScript syntax, a subset, over code points */

enum { RX_CLASS, RX_CAT, RX_ALT, RX_REP, RX_EMPTY };

struct rx {
	int kind;
	struct rx *a, *b;
	int min, max;           /* RX_REP; max < 0 unbounded */
	struct cprange *rg;     /* RX_CLASS: sorted, merged, no surrogates */
	int n;
	int has_sym;            /* RX_CLASS: sym is its JSON string symbol */
	struct bsym sym;
};

struct rp {
	const char *s;
	size_t i, n;
	int failed;
	int depth;
	char msg[240];
};

static void rx_free(struct rx *x)
{
	if (!x)
		return;
	rx_free(x->a);
	rx_free(x->b);
	free(x->rg);
	free(x);
}

static void rp_err(struct rp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rp_err(struct rp *p, const char *fmt, ...)
{
	if (p->failed)
		return;
	p->failed = 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof p->msg, fmt, ap);
	va_end(ap);
}

static struct rx *rx_new(struct rp *p, int kind)
{
	struct rx *x = calloc(1, sizeof *x);
	if (!x)
		rp_err(p, "out of memory");
	else
		x->kind = kind;
	return x;
}

static struct rx *rx_two(struct rp *p, int kind, struct rx *a, struct rx *b)
{
	if (!a || !b) {
		rx_free(a);
		rx_free(b);
		return NULL;
	}
	struct rx *x = rx_new(p, kind);
	if (!x) {
		rx_free(a);
		rx_free(b);
		return NULL;
	}
	x->a = a;
	x->b = b;
	return x;
}

/* ranges: add, then normalize (sort, merge, negate, cut surrogates) */
struct rgs {
	struct cprange *r;
	int n, cap;
};

static int rgs_add(struct rgs *g, uint32_t lo, uint32_t hi)
{
	if (g->n == g->cap) {
		int cap = g->cap ? g->cap * 2 : 8;
		struct cprange *nr = realloc(g->r, (size_t)cap * sizeof *nr);
		if (!nr)
			return -1;
		g->r = nr;
		g->cap = cap;
	}
	g->r[g->n++] = (struct cprange){lo, hi};
	return 0;
}

static struct rx *rx_class(struct rp *p, struct rgs *g, int negated)
{
	struct rx *x = rx_new(p, RX_CLASS);
	if (!x) {
		free(g->r);
		return NULL;
	}
	if (g->n)
		qsort(g->r, (size_t)g->n, sizeof *g->r, cmp_range);
	int m = 0;
	for (int i = 0; i < g->n; i++) {
		if (m && g->r[i].lo <= g->r[m - 1].hi + 1) {
			if (g->r[i].hi > g->r[m - 1].hi)
				g->r[m - 1].hi = g->r[i].hi;
		} else {
			g->r[m++] = g->r[i];
		}
	}
	struct rgs out = {0};
	int bad = 0;
	if (negated) {
		uint32_t next = 0;
		for (int i = 0; i < m; i++) {
			if (g->r[i].lo > next)
				bad |= rgs_add(&out, next, g->r[i].lo - 1);
			next = g->r[i].hi + 1;
		}
		if (next <= 0x10FFFF)
			bad |= rgs_add(&out, next, 0x10FFFF);
	} else {
		for (int i = 0; i < m; i++)
			bad |= rgs_add(&out, g->r[i].lo, g->r[i].hi);
	}
	free(g->r);
	struct rgs fin = {0};
	for (int i = 0; i < out.n; i++) {
		uint32_t lo = out.r[i].lo, hi = out.r[i].hi;
		if (hi < 0xD800 || lo > 0xDFFF) {
			bad |= rgs_add(&fin, lo, hi);
			continue;
		}
		if (lo < 0xD800)
			bad |= rgs_add(&fin, lo, 0xD7FF);
		if (hi > 0xDFFF)
			bad |= rgs_add(&fin, 0xE000, hi);
	}
	free(out.r);
	if (bad)
		rp_err(p, "out of memory");
	x->rg = fin.r;
	x->n = fin.n;
	return x;
}

static int rp_cp(struct rp *p) /* the next code point (UTF-8), advancing */
{
	uint8_t c = (uint8_t)p->s[p->i];
	int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if (p->i + (size_t)len > p->n)
		len = 1;
	uint32_t v = len == 1 ? c : (uint32_t)(c & (0x7F >> len));
	for (int k = 1; k < len; k++)
		v = v << 6 | ((uint8_t)p->s[p->i + (size_t)k] & 63);
	p->i += (size_t)len;
	return (int)v;
}

static const uint32_t RX_SPACE[][2] = {{9, 13}, {32, 32}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
				       {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
				       {0xFEFF, 0xFEFF}};

/* \d \w \s (upper case: negated) into g; 0 when e is none of them */
static int rx_shorthand(struct rgs *g, int e, int *neg)
{
	int lower = e | 0x20;
	*neg = e != lower;
	if (lower == 'd')
		return rgs_add(g, '0', '9') == 0 ? 1 : -1;
	if (lower == 'w')
		return rgs_add(g, '0', '9') | rgs_add(g, 'A', 'Z') | rgs_add(g, 'a', 'z') | rgs_add(g, '_', '_') ? -1 : 1;
	if (lower == 's') {
		for (size_t k = 0; k < sizeof RX_SPACE / sizeof RX_SPACE[0]; k++)
			if (rgs_add(g, RX_SPACE[k][0], RX_SPACE[k][1]))
				return -1;
		return 1;
	}
	return 0;
}

/* after a backslash: one code point (>= 0), or -2 for a shorthand class
 * added to g (negated: *neg), or -1 on error */
static int rx_escape(struct rp *p, struct rgs *g, int *neg, int in_class)
{
	if (p->i >= p->n) {
		rp_err(p, "the pattern ends with a lone backslash");
		return -1;
	}
	int e = rp_cp(p);
	if (e < 128 && strchr("dDwWsS", e) && e) {
		if (!g) {
			rp_err(p, "out of memory");
			return -1;
		}
		if (rx_shorthand(g, e, neg) < 0) {
			rp_err(p, "out of memory");
			return -1;
		}
		return -2;
	}
	switch (e) {
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'f': return '\f';
	case 'v': return '\v';
	case '0': return 0;
	case 'b':
		if (in_class)
			return '\b';
		rp_err(p, "word boundaries (\\b, \\B) are not supported");
		return -1;
	case 'B': rp_err(p, "word boundaries (\\b, \\B) are not supported"); return -1;
	case 'x':
	case 'u': {
		int nh = e == 'x' ? 2 : 4, v = 0;
		for (int k = 0; k < nh; k++) {
			int h = p->i < p->n ? hexv(p->s[p->i]) : -1;
			if (h < 0) {
				rp_err(p, "\\%c needs %d hex digits", e, nh);
				return -1;
			}
			v = v * 16 + h;
			p->i++;
		}
		return v;
	}
	case 'k': rp_err(p, "backreferences (\\k<name>) are not supported"); return -1;
	case 'p':
	case 'P': rp_err(p, "Unicode property escapes (\\p{...}) are not supported"); return -1;
	case 'c': rp_err(p, "control escapes (\\cX) are not supported"); return -1;
	default: break;
	}
	if (e >= '1' && e <= '9') {
		rp_err(p, "backreferences (\\%c) are not supported", e);
		return -1;
	}
	if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
		rp_err(p, "unknown escape \\%c", e);
		return -1;
	}
	return e; /* \. \\ \/ \- \$ ... */
}

/* replace the ranges g->r[start..] with their complement (in code points) */
static int rx_negate_tail(struct rgs *g, int start)
{
	int n = g->n - start;
	struct cprange *t = malloc((size_t)(n ? n : 1) * sizeof *t);
	if (!t)
		return -1;
	memcpy(t, g->r + start, (size_t)n * sizeof *t);
	qsort(t, (size_t)n, sizeof *t, cmp_range);
	g->n = start;
	uint32_t next = 0;
	int bad = 0;
	for (int i = 0; i < n; i++) {
		if (t[i].lo > next)
			bad |= rgs_add(g, next, t[i].lo - 1);
		if (t[i].hi + 1 > next)
			next = t[i].hi + 1;
	}
	if (next <= 0x10FFFF)
		bad |= rgs_add(g, next, 0x10FFFF);
	free(t);
	return bad;
}

static struct rx *rx_alt(struct rp *p);

static struct rx *rx_bracket(struct rp *p)
{
	struct rgs g = {0};
	int negated = 0;
	if (p->i < p->n && p->s[p->i] == '^') {
		negated = 1;
		p->i++;
	}
	for (;;) {
		if (p->i >= p->n) {
			rp_err(p, "unterminated character class [...]");
			free(g.r);
			return NULL;
		}
		if (p->s[p->i] == ']') {
			p->i++;
			break;
		}
		int lo, neg = 0, start = g.n;
		if (p->s[p->i] == '\\') {
			p->i++;
			lo = rx_escape(p, &g, &neg, 1);
		} else {
			lo = rp_cp(p);
		}
		if (lo == -1) {
			free(g.r);
			return NULL;
		}
		if (lo == -2) {
			if (neg && rx_negate_tail(&g, start)) { /* [\D...]: the complement of what it added */
				rp_err(p, "out of memory");
				free(g.r);
				return NULL;
			}
			continue;
		}
		int hi = lo;
		if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
			p->i++;
			if (p->s[p->i] == '\\') {
				p->i++;
				hi = rx_escape(p, &g, &neg, 1);
			} else {
				hi = rp_cp(p);
			}
			if (hi < 0) {
				if (hi == -2)
					rp_err(p, "a shorthand class cannot end a range");
				free(g.r);
				return NULL;
			}
			if (hi < lo) {
				rp_err(p, "character range is backwards (U+%04X-U+%04X)", lo, hi);
				free(g.r);
				return NULL;
			}
		}
		if (rgs_add(&g, (uint32_t)lo, (uint32_t)hi)) {
			rp_err(p, "out of memory");
			free(g.r);
			return NULL;
		}
	}
	return rx_class(p, &g, negated);
}

static struct rx *rx_atom(struct rp *p)
{
	char c = p->s[p->i];
	struct rgs g = {0};
	if (c == '(') {
		p->i++;
		if (p->i < p->n && p->s[p->i] == '?') {
			const char *q = p->s + p->i;
			if (!strncmp(q, "?:", 2)) {
				p->i += 2;
			} else if (!strncmp(q, "?=", 2) || !strncmp(q, "?!", 2) || !strncmp(q, "?<=", 3) || !strncmp(q, "?<!", 3)) {
				rp_err(p, "lookaround ((?=, (?!, (?<=, (?<!) is not supported");
				return NULL;
			} else if (q[1] == '<') { /* a named group */
				const char *e = memchr(q, '>', p->n - p->i);
				if (!e) {
					rp_err(p, "unterminated group name");
					return NULL;
				}
				p->i = (size_t)(e - p->s) + 1;
			} else {
				rp_err(p, "group modifiers (?...) are not supported");
				return NULL;
			}
		}
		if (++p->depth > 100) {
			rp_err(p, "groups nested too deeply");
			return NULL;
		}
		struct rx *x = rx_alt(p);
		p->depth--;
		if (!x)
			return NULL;
		if (p->i >= p->n || p->s[p->i] != ')') {
			rx_free(x);
			rp_err(p, "missing ')'");
			return NULL;
		}
		p->i++;
		return x;
	}
	if (c == '[') {
		p->i++;
		return rx_bracket(p);
	}
	if (c == '.') {
		p->i++;
		if (rgs_add(&g, '\n', '\n') | rgs_add(&g, '\r', '\r') | rgs_add(&g, 0x2028, 0x2029)) {
			free(g.r);
			rp_err(p, "out of memory");
			return NULL;
		}
		return rx_class(p, &g, 1);
	}
	if (c == '^' || c == '$') {
		rp_err(p, "the anchors ^ and $ are supported only at the start and the end of the pattern");
		return NULL;
	}
	if (c == '*' || c == '+' || c == '?') {
		rp_err(p, "nothing to repeat before '%c'", c);
		return NULL;
	}
	int v, neg = 0;
	if (c == '\\') {
		p->i++;
		v = rx_escape(p, &g, &neg, 0);
		if (v == -1) {
			free(g.r);
			return NULL;
		}
		if (v == -2)
			return rx_class(p, &g, neg);
	} else {
		v = rp_cp(p);
	}
	if (rgs_add(&g, (uint32_t)v, (uint32_t)v)) {
		rp_err(p, "out of memory");
		return NULL;
	}
	return rx_class(p, &g, 0);
}

/* {m}, {m,}, {m,n} at p->i ('{'); 0 when it is not one (a literal '{') */
static int rx_braces(struct rp *p, int *min, int *max)
{
	size_t k = p->i + 1;
	long a = 0, b = -1;
	int nd = 0;
	while (k < p->n && p->s[k] >= '0' && p->s[k] <= '9' && a < 100000)
		a = a * 10 + (p->s[k++] - '0'), nd++;
	if (!nd)
		return 0;
	b = a;
	if (k < p->n && p->s[k] == ',') {
		k++;
		b = -1;
		if (k < p->n && p->s[k] >= '0' && p->s[k] <= '9') {
			b = 0;
			while (k < p->n && p->s[k] >= '0' && p->s[k] <= '9' && b < 100000)
				b = b * 10 + (p->s[k++] - '0');
		}
	}
	if (k >= p->n || p->s[k] != '}')
		return 0;
	p->i = k + 1;
	*min = (int)a;
	*max = (int)b;
	return 1;
}

static struct rx *rx_seq(struct rp *p)
{
	struct rx *acc = rx_new(p, RX_EMPTY);
	while (acc && !p->failed && p->i < p->n && p->s[p->i] != '|' && p->s[p->i] != ')') {
		struct rx *x = rx_atom(p);
		if (!x)
			break;
		for (;;) { /* quantifiers (several: a{2}? is fine in JS) */
			int min = 0, max = -1;
			if (p->i >= p->n)
				break;
			char q = p->s[p->i];
			if (q == '*' || q == '+' || q == '?') {
				p->i++;
				min = q == '+';
				max = q == '?' ? 1 : -1;
			} else if (q != '{' || !rx_braces(p, &min, &max)) {
				break;
			} else if ((max >= 0 && max < min) || min > 1000 || max > 1000) {
				rp_err(p, "bad repetition {%d,%d} (at most 1000, and min <= max)", min, max);
				rx_free(x);
				x = NULL;
				break;
			}
			if (p->i < p->n && p->s[p->i] == '?') /* lazy: the same language */
				p->i++;
			struct rx *r = rx_new(p, RX_REP);
			if (!r) {
				rx_free(x);
				x = NULL;
				break;
			}
			r->a = x;
			r->min = min;
			r->max = max;
			x = r;
		}
		if (!x)
			break;
		acc = rx_two(p, RX_CAT, acc, x);
	}
	if (p->failed) {
		rx_free(acc);
		return NULL;
	}
	return acc;
}

static struct rx *rx_alt(struct rp *p)
{
	struct rx *x = rx_seq(p);
	while (x && p->i < p->n && p->s[p->i] == '|') {
		p->i++;
		x = rx_two(p, RX_ALT, x, rx_seq(p));
	}
	return p->failed ? (rx_free(x), NULL) : x;
}

/* the NFA (Thompson): each state has epsilon edges and at most one class edge */
struct nst {
	int *eps;
	int neps, ceps;
	struct rx *cls;       /* RX_CLASS node or NULL */
	int to;
};

struct nfa {
	struct nst *st;
	int n, cap;
	int full;
};

#define NFA_MAX 30000

static int nfa_state(struct nfa *A)
{
	if (A->n >= NFA_MAX) {
		A->full = 1;
		return -1;
	}
	if (A->n == A->cap) {
		int cap = A->cap ? A->cap * 2 : 64;
		struct nst *ns = realloc(A->st, (size_t)cap * sizeof *ns);
		if (!ns) {
			A->full = 1;
			return -1;
		}
		A->st = ns;
		A->cap = cap;
	}
	A->st[A->n] = (struct nst){.to = -1};
	return A->n++;
}

static void nfa_eps(struct nfa *A, int from, int to)
{
	if (from < 0 || to < 0)
		return;
	struct nst *s = &A->st[from];
	if (s->neps == s->ceps) {
		int cap = s->ceps ? s->ceps * 2 : 2;
		int *ne = realloc(s->eps, (size_t)cap * sizeof *ne);
		if (!ne) {
			A->full = 1;
			return;
		}
		s->eps = ne;
		s->ceps = cap;
	}
	s->eps[s->neps++] = to;
}

/* x from state `in`; returns the state at its end */
static int nfa_build(struct nfa *A, struct rx *x, int in)
{
	if (in < 0 || A->full)
		return -1;
	switch (x->kind) {
	case RX_EMPTY:
		return in;
	case RX_CLASS: {
		int out = nfa_state(A);
		if (out < 0)
			return -1;
		A->st[in].cls = x; /* in is always a fresh state here */
		A->st[in].to = out;
		return out;
	}
	case RX_CAT:
		return nfa_build(A, x->b, nfa_build(A, x->a, in));
	case RX_ALT: {
		int s1 = nfa_state(A), s2 = nfa_state(A), out = nfa_state(A);
		nfa_eps(A, in, s1);
		nfa_eps(A, in, s2);
		nfa_eps(A, nfa_build(A, x->a, s1), out);
		nfa_eps(A, nfa_build(A, x->b, s2), out);
		return out;
	}
	default: { /* RX_REP */
		int cur = in;
		for (int k = 0; k < x->min && cur >= 0; k++) {
			int s = nfa_state(A);
			nfa_eps(A, cur, s);
			cur = nfa_build(A, x->a, s);
		}
		if (cur < 0)
			return -1;
		int out = nfa_state(A);
		if (x->max < 0) {
			int s = nfa_state(A);
			nfa_eps(A, cur, s);
			nfa_eps(A, cur, out);
			nfa_eps(A, nfa_build(A, x->a, s), cur);
		} else {
			for (int k = x->min; k < x->max && cur >= 0; k++) {
				int s = nfa_state(A);
				nfa_eps(A, cur, s);
				nfa_eps(A, cur, out);
				cur = nfa_build(A, x->a, s);
			}
			nfa_eps(A, cur, out);
		}
		return out;
	}
	}
}

/* a class as JSON string contents: raw UTF-8 except " \ and controls,
 * which are written escaped (one spelling each) */
static struct bsym sc_jclass(struct sc *c, const struct rx *x)
{
	struct builder *b = c->b;
	static const uint32_t ok[][2] = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}};
	struct cprange *raw = malloc((size_t)(x->n * 3 + 1) * sizeof *raw);
	if (!raw) {
		b->oom = 1;
		return sym_chars(0, 0);
	}
	int k = 0;
	for (int i = 0; i < x->n; i++)
		for (int j = 0; j < 3; j++) {
			uint32_t lo = x->rg[i].lo > ok[j][0] ? x->rg[i].lo : ok[j][0];
			uint32_t hi = x->rg[i].hi < ok[j][1] ? x->rg[i].hi : ok[j][1];
			if (lo <= hi)
				raw[k++] = (struct cprange){lo, hi};
		}
	char esc[40][8];
	int ne = 0;
	for (int i = 0; i < x->n; i++)
		for (uint32_t cp = x->rg[i].lo; cp <= x->rg[i].hi && cp <= '\\'; cp++) {
			if (cp >= 0x20 && cp != '"' && cp != '\\')
				continue;
			const char *s = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\b' ? "\\b" : cp == '\f' ? "\\f"
				      : cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : cp == '\t' ? "\\t" : NULL;
			if (s)
				snprintf(esc[ne++], 8, "%s", s);
			else
				snprintf(esc[ne++], 8, "\\u%04x", (unsigned)cp);
		}
	if (!ne)
		return b_class(b, raw, k, 0);
	int r = b_new_rule(b, NULL);
	if (r < 0) {
		free(raw);
		return sym_chars(0, 0);
	}
	if (k)
		b_sym(b, r, b_alt(b, r), b_class(b, raw, k, 0));
	else
		free(raw);
	for (int i = 0; i < ne; i++)
		b_str(b, r, b_alt(b, r), esc[i]);
	return sym_rule(r);
}

#define RX_NODES_MAX 400000
#define RX_EDGES_MAX 1000000
#define RX_PATTERN_MAX 4096

/* the JSON string rule of the strings the NFA (start .. accept) matches
 * whole, with minLength lmin and maxLength lmax (-1: none): one rule per
 * (NFA state, characters so far) that can still reach the end; the count
 * stops at lmin when there is no maximum */
static int sc_nfa_string(struct sc *c, struct nfa *A, int start, int accept, int lmin, int lmax, const char *path,
			 const char *what)
{
	struct builder *b = c->b;
	int n = A->n, ni = 0;
	int *imp = malloc((size_t)n * sizeof *imp), *ord = malloc((size_t)n * sizeof *ord);
	int *stamp = calloc((size_t)n, sizeof *stamp), *stk = malloc((size_t)n * sizeof *stk);
	int result = -1;
	int *eoff = NULL, *eto = NULL, *ecls = NULL, *rev_off = NULL, *rev = NULL;
	uint8_t *acc = NULL, *live = NULL;
	int *rid = NULL, *work = NULL;
	if (!imp || !ord || !stamp || !stk) {
		b->oom = 1;
		goto done;
	}
	for (int i = 0; i < n; i++)
		imp[i] = -1;
	imp[start] = ni;
	ord[ni++] = start;
	for (int i = 0; i < n; i++)
		if (A->st[i].cls && A->st[i].cls->n && imp[A->st[i].to] < 0) {
			imp[A->st[i].to] = ni;
			ord[ni++] = A->st[i].to;
		}
	/* closures: the class edges each important state reaches */
	int ne = 0, cap = 64;
	eoff = malloc((size_t)(ni + 1) * sizeof *eoff);
	eto = malloc((size_t)cap * sizeof *eto);
	ecls = malloc((size_t)cap * sizeof *ecls);
	acc = calloc((size_t)ni, 1);
	if (!eoff || !eto || !ecls || !acc) {
		b->oom = 1;
		goto done;
	}
	for (int i = 0; i < ni; i++) {
		eoff[i] = ne;
		int sp = 0;
		stk[sp++] = ord[i];
		stamp[ord[i]] = i + 1;
		while (sp) {
			int s = stk[--sp];
			if (s == accept)
				acc[i] = 1;
			if (A->st[s].cls && A->st[s].cls->n) {
				if (ne >= RX_EDGES_MAX) {
					sc_err(c, path, "the %s is too complex (more than %d transitions once its empty steps are "
						       "removed)", what, RX_EDGES_MAX);
					goto done;
				}
				if (ne == cap) {
					cap *= 2;
					int *a1 = realloc(eto, (size_t)cap * sizeof *eto), *a2 = realloc(ecls, (size_t)cap * sizeof *ecls);
					if (a1)
						eto = a1;
					if (a2)
						ecls = a2;
					if (!a1 || !a2) {
						b->oom = 1;
						goto done;
					}
				}
				eto[ne] = imp[A->st[s].to];
				ecls[ne++] = s;
			}
			for (int k = 0; k < A->st[s].neps; k++) {
				int t = A->st[s].eps[k];
				if (stamp[t] != i + 1) {
					stamp[t] = i + 1;
					stk[sp++] = t;
				}
			}
		}
	}
	eoff[ni] = ne;
	int K = lmax >= 0 ? lmax : lmin;
	long nodes = (long)ni * (K + 1);
	if (nodes > RX_NODES_MAX) {
		sc_err(c, path, "the %s is too large with this minLength/maxLength (%ld states, at most %d)", what, nodes,
		       RX_NODES_MAX);
		goto done;
	}
	/* reverse edges, then the live nodes backwards from the accepting ones */
	rev_off = calloc((size_t)ni + 1, sizeof *rev_off);
	rev = malloc((size_t)(ne + 1) * sizeof *rev);
	live = calloc((size_t)nodes, 1);
	work = malloc((size_t)nodes * sizeof *work);
	rid = malloc((size_t)nodes * sizeof *rid);
	if (!rev_off || !rev || !live || !work || !rid) {
		b->oom = 1;
		goto done;
	}
	for (int e = 0; e < ne; e++)
		rev_off[eto[e] + 1]++;
	for (int i = 0; i < ni; i++)
		rev_off[i + 1] += rev_off[i];
	{
		int *fill = calloc((size_t)ni + 1, sizeof *fill);
		if (!fill) {
			b->oom = 1;
			goto done;
		}
		for (int i = 0; i < ni; i++)
			for (int e = eoff[i]; e < eoff[i + 1]; e++)
				rev[rev_off[eto[e]] + fill[eto[e]]++] = i;
		free(fill);
	}
	long wn = 0;
	for (int i = 0; i < ni; i++)
		for (int k = lmin; k <= K; k++)
			if (acc[i]) {
				live[(long)i * (K + 1) + k] = 1;
				work[wn++] = (int)((long)i * (K + 1) + k);
			}
	while (wn) {
		int node = work[--wn], j = node / (K + 1), k2 = node % (K + 1);
		int ks[2], nk = 0;
		if (k2 > 0)
			ks[nk++] = k2 - 1;
		if (lmax < 0 && k2 == K)
			ks[nk++] = K;
		for (int e = rev_off[j]; e < rev_off[j + 1]; e++)
			for (int q = 0; q < nk; q++) {
				long pn = (long)rev[e] * (K + 1) + ks[q];
				if (!live[pn]) {
					live[pn] = 1;
					work[wn++] = (int)pn;
				}
			}
	}
	if (!live[0]) {
		sc_err(c, path, "no string satisfies the %s%s", what, lmin || lmax >= 0 ? " within minLength/maxLength" : "");
		goto done;
	}
	/* forward from (start, 0): a rule per reachable live node */
	for (long q = 0; q < nodes; q++)
		rid[q] = -1;
	rid[0] = b_new_rule(b, NULL);
	wn = 0;
	work[wn++] = 0;
	while (wn && !b->oom) {
		int node = work[--wn], i = node / (K + 1), k = node % (K + 1);
		int r = rid[node];
		int k2 = lmax >= 0 ? (k + 1 <= K ? k + 1 : -1) : (k + 1 < K ? k + 1 : K);
		for (int e = eoff[i]; e < eoff[i + 1] && k2 >= 0; e++) {
			int to = eto[e] * (K + 1) + k2;
			if (!live[to])
				continue;
			if (rid[to] < 0) {
				rid[to] = b_new_rule(b, NULL);
				work[wn++] = to;
			}
			struct rx *x = A->st[ecls[e]].cls;
			if (!x->has_sym) {
				x->sym = sc_jclass(c, x);
				x->has_sym = 1;
			}
			int a = b_alt(b, r);
			b_sym(b, r, a, x->sym);
			b_ref(b, r, a, rid[to]);
		}
		if (acc[i] && k >= lmin)
			b_alt(b, r);
	}
	result = sc_rule1(c, "pattern-string");
	int a = b_alt(b, result);
	b_str(b, result, a, "\"");
	b_ref(b, result, a, rid[0]);
	b_str(b, result, a, "\"");
done:
	free(imp), free(ord), free(stamp), free(stk), free(eoff), free(eto), free(ecls), free(acc);
	free(rev_off), free(rev), free(live), free(work), free(rid);
	return result;
}

/* formats as (anchored) patterns of the subset above */
#define RX_LEAP "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26]|00)00)-02-29"
#define RX_DATE "([0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|" \
		"02-(0[1-9]|1[0-9]|2[0-8]))|" RX_LEAP ")"
#define RX_TIME "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
#define RX_H16 "[0-9a-fA-F]{1,4}"
#define RX_OCTET "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
#define RX_LABEL "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
static const struct {
	const char *name, *rx;
	int maxlen; /* a length limit of its own (0 none) */
} SC_FORMATS[] = {
	{"date", RX_DATE, 0},
	{"time", RX_TIME, 0},
	{"date-time", RX_DATE "T" RX_TIME, 0},
	{"duration", "P(([0-9]+Y([0-9]+M)?([0-9]+D)?|[0-9]+M([0-9]+D)?|[0-9]+D)(T([0-9]+H([0-9]+M)?([0-9]+S)?|"
		     "[0-9]+M([0-9]+S)?|[0-9]+S))?|T([0-9]+H([0-9]+M)?([0-9]+S)?|[0-9]+M([0-9]+S)?|[0-9]+S)|[0-9]+W)", 0},
	{"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", 0},
	{"ipv4", RX_OCTET "\\." RX_OCTET "\\." RX_OCTET "\\." RX_OCTET, 0},
	{"ipv6", "((" RX_H16 ":){7}" RX_H16 "|(" RX_H16 ":){1,7}:|(" RX_H16 ":){1,6}:" RX_H16 "|(" RX_H16 ":){1,5}(:" RX_H16
		 "){1,2}|(" RX_H16 ":){1,4}(:" RX_H16 "){1,3}|(" RX_H16 ":){1,3}(:" RX_H16 "){1,4}|(" RX_H16 ":){1,2}(:" RX_H16
		 "){1,5}|" RX_H16 ":(:" RX_H16 "){1,6}|:((:" RX_H16 "){1,7}|:))", 0},
	{"email", "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(" RX_LABEL "\\.)+" RX_LABEL, 0},
	{"hostname", RX_LABEL "(\\." RX_LABEL ")*", 253},
};

/* the shortest and longest match (max -1: unbounded; both capped) */
static void rx_len(const struct rx *x, long *mn, long *mx)
{
	long a, b, c, d;
	switch (x->kind) {
	case RX_CLASS: *mn = *mx = 1; return;
	case RX_EMPTY: *mn = *mx = 0; return;
	case RX_CAT:
		rx_len(x->a, &a, &b);
		rx_len(x->b, &c, &d);
		*mn = a + c > 1000000000 ? 1000000000 : a + c;
		*mx = b < 0 || d < 0 || b + d > 1000000000 ? -1 : b + d;
		return;
	case RX_ALT:
		rx_len(x->a, &a, &b);
		rx_len(x->b, &c, &d);
		*mn = a < c ? a : c;
		*mx = b < 0 || d < 0 ? -1 : b > d ? b : d;
		return;
	default:
		rx_len(x->a, &a, &b);
		*mn = a * x->min > 1000000000 ? 1000000000 : a * x->min;
		*mx = b == 0 ? 0 : x->max < 0 || b < 0 || b * x->max > 1000000000 ? -1 : b * x->max;
		return;
	}
}

/* a string with "pattern" or "format" (and maybe min/maxLength) */
static int sc_regex_string(struct sc *c, json_t *s, int lmin, int lmax, const char *path)
{
	json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
	char p[1024];
	const char *src, *what;
	int anch_s = 1, anch_e = 1;
	if (pat && fmt) {
		sc_err(c, path, "\"pattern\" together with \"format\" is not supported");
		return -1;
	}
	if (pat) {
		path_add(p, sizeof p, path, "pattern");
		if (!json_is_string(pat)) {
			sc_err(c, p, "\"pattern\" must be a string");
			return -1;
		}
		src = json_string_value(pat);
		what = "pattern";
		if (strlen(src) > RX_PATTERN_MAX) {
			sc_err(c, p, "the pattern is longer than %d bytes", RX_PATTERN_MAX);
			return -1;
		}
	} else {
		path_add(p, sizeof p, path, "format");
		const char *f = json_is_string(fmt) ? json_string_value(fmt) : "";
		size_t k = 0;
		while (k < sizeof SC_FORMATS / sizeof SC_FORMATS[0] && strcmp(SC_FORMATS[k].name, f))
			k++;
		if (k == sizeof SC_FORMATS / sizeof SC_FORMATS[0]) {
			sc_err(c, p, "unsupported string format \"%.60s\" (supported: date, time, date-time, duration, uuid, "
				     "ipv4, ipv6, email, hostname)", f);
			return -1;
		}
		src = SC_FORMATS[k].rx;
		what = "format";
		if (SC_FORMATS[k].maxlen && (lmax < 0 || lmax > SC_FORMATS[k].maxlen))
			lmax = SC_FORMATS[k].maxlen;
	}
	struct rp rp = {.s = src, .n = strlen(src)};
	if (pat) {
		anch_s = rp.n && src[0] == '^';
		if (anch_s)
			rp.i = 1;
		size_t bs = 0; /* "$" at the end, not escaped */
		while (bs + 2 <= rp.n && src[rp.n - 2 - bs] == '\\')
			bs++;
		anch_e = rp.n > rp.i && src[rp.n - 1] == '$' && bs % 2 == 0;
		if (anch_e)
			rp.n--;
	}
	struct rx *x = rx_alt(&rp);
	if (x && rp.i < rp.n)
		rp_err(&rp, "unmatched ')'");
	if (!rp.failed && (!anch_s || !anch_e)) { /* unanchored: any text around */
		struct rgs g = {0};
		struct rx *any = rx_class(&rp, &g, 1);
		struct rx *rep = any ? rx_new(&rp, RX_REP) : NULL;
		if (rep) {
			rep->a = any;
			rep->max = -1;
		} else {
			rx_free(any);
		}
		if (!anch_s && !anch_e) {
			struct rx *rep2 = rx_new(&rp, RX_REP);
			struct rgs g2 = {0};
			if (rep2) {
				rep2->a = rx_class(&rp, &g2, 1);
				rep2->max = -1;
			}
			x = rx_two(&rp, RX_CAT, rx_two(&rp, RX_CAT, rep, x), rep2);
		} else {
			x = anch_s ? rx_two(&rp, RX_CAT, x, rep) : rx_two(&rp, RX_CAT, rep, x);
		}
	}
	if (rp.failed || !x) {
		rx_free(x);
		sc_err(c, p, "%s \"%.80s\": %s", what, src, rp.failed ? rp.msg : "out of memory");
		return -1;
	}
	/* a length bound the pattern implies anyway costs nothing */
	long xmin, xmax;
	rx_len(x, &xmin, &xmax);
	if (lmax >= 0 && xmax >= 0 && xmax <= lmax)
		lmax = -1;
	if (xmin >= lmin)
		lmin = 0;
	struct nfa A = {0};
	int start = nfa_state(&A);
	int end = nfa_build(&A, x, start);
	int r = -1;
	if (A.full || end < 0)
		sc_err(c, p, "the %s is too large (more than %d NFA states)", what, NFA_MAX);
	else
		r = sc_nfa_string(c, &A, start, end, lmin, lmax, p, what);
	for (int i = 0; i < A.n; i++)
		free(A.st[i].eps);
	free(A.st);
	rx_free(x);
	return r;
}

static const char *const SC_IGNORED[] = {"description", "title", "$schema", "$id", "$comment", "default", "examples",
					  "deprecated", "readOnly", "writeOnly", "strict", "$defs", "definitions", NULL};
static const char *const SC_KNOWN[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
				       "anyOf", "allOf", "items", "minItems", "maxItems", "minLength", "maxLength",
				       "$ref", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "pattern",
				       "format", NULL};

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
		if (json_object_get(s, "pattern") || json_object_get(s, "format"))
			return sc_regex_string(c, s, min, max, path);
		return sc_string(c, min, max);
	}
	if (strcmp(type, "number") == 0 || strcmp(type, "integer") == 0) {
		int number = type[0] == 'n';
		int r = sc_bounded(c, s, number, path);
		if (c->failed)
			return -1;
		return r >= 0 ? r : number ? sc_number(c) : sc_integer(c);
	}
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
	/* value keywords apply only beside a "type" that they constrain (and
	 * would be ignored beside $ref, enum, const, anyOf) */
	static const char *const num_kw[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", NULL};
	static const char *const str_kw[] = {"pattern", "format", NULL};
	for (int pass = 0; pass < 2; pass++)
		for (const char *const *kw = pass ? str_kw : num_kw; *kw; kw++) {
			if (!json_object_get(s, *kw))
				continue;
			int typed = 0;
			size_t i;
			json_t *t;
			if (json_is_string(ty))
				typed = pass ? !strcmp(json_string_value(ty), "string")
					     : !strcmp(json_string_value(ty), "integer") || !strcmp(json_string_value(ty), "number");
			json_array_foreach(ty, i, t) if (json_is_string(t))
				typed |= pass ? !strcmp(json_string_value(t), "string")
					      : !strcmp(json_string_value(t), "integer") || !strcmp(json_string_value(t), "number");
			if (!typed || ref || en || cn || any || all) {
				path_add(p, sizeof p, path, *kw);
				sc_err(c, p, "unsupported JSON Schema keyword \"%s\" here (supported beside \"type\": %s only)", *kw,
				       pass ? "\"string\"" : "\"integer\" or \"number\"");
				goto out;
			}
		}
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

static void sc_init(struct sc *c, struct builder *b, json_t *root, char *err)
{
	*c = (struct sc){.b = b, .root = root, .err = err, .ws = -1, .chr = -1, .string = -1, .number = -1,
			 .integer = -1, .boolean = -1, .null = -1, .value = -1, .object = -1, .array = -1};
}

static void sc_free(struct sc *c)
{
	for (int i = 0; i < c->n_refs; i++)
		free(c->refs[i].ref);
	free(c->refs);
}

/* GBNF's %json SCHEMA (an extension): a JSON value that SCHEMA (a JSON
 * Schema object written inline, up to its closing brace) accepts, compiled
 * as response_format's schemas are. Its rules are private: renamed so that
 * no GBNF name finds them. The rule, or -1 (p->failed). */
static int gp_json(struct gp *p)
{
	gp_space(p);
	size_t at = p->i;
	json_error_t je;
	json_t *schema = json_loadb(p->s + p->i, p->n - p->i, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
	if (!schema) {
		gp_err(p, at, "%%json needs a JSON Schema object: %s", je.text);
		return -1;
	}
	p->i += (size_t)je.position;
	char err[INFERD_ERR_LEN];
	struct sc c;
	int n0 = p->b->n;
	sc_init(&c, p->b, schema, err);
	int r = sc_schema(&c, schema, "");
	sc_free(&c);
	json_decref(schema);
	if (p->b->oom)
		return -1;
	if (c.failed || r < 0) {
		gp_err(p, at, "%%json: %s", c.failed ? err : "the schema could not be compiled");
		return -1;
	}
	for (int i = n0; i < p->b->n; i++) {
		char name[32];
		snprintf(name, sizeof name, "%%json%d", i);
		free(p->b->r[i].name);
		p->b->r[i].name = strdup(name);
		p->b->r[i].defined = 1;
		if (!p->b->r[i].name)
			p->b->oom = 1;
	}
	return r;
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
	struct sc c;
	sc_init(&c, &b, root, err);
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
	sc_free(&c);
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
	/* special tokens (never in the trie): ids and text, for token terminals */
	int32_t *sp_id;
	uint32_t *sp_off;
	int32_t *sp_len;
	uint8_t *sp_bytes;
	int n_sp;
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
	free(v->sp_id);
	free(v->sp_off);
	free(v->sp_len);
	free(v->sp_bytes);
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

/* remember special token id's text (n bytes) for token terminals */
static int sp_add(struct grammar_vocab *v, const struct tokenizer *t, int32_t id, int n)
{
	size_t used = v->n_sp ? v->sp_off[v->n_sp - 1] + (size_t)v->sp_len[v->n_sp - 1] : 0;
	int32_t *ni = realloc(v->sp_id, ((size_t)v->n_sp + 1) * sizeof *ni);
	if (ni)
		v->sp_id = ni;
	uint32_t *no = ni ? realloc(v->sp_off, ((size_t)v->n_sp + 1) * sizeof *no) : NULL;
	if (no)
		v->sp_off = no;
	int32_t *nl = no ? realloc(v->sp_len, ((size_t)v->n_sp + 1) * sizeof *nl) : NULL;
	if (nl)
		v->sp_len = nl;
	uint8_t *nb = nl ? realloc(v->sp_bytes, used + (size_t)n) : NULL;
	if (!nb)
		return -1;
	v->sp_bytes = nb;
	tok_token_bytes(t, id, nb + used, (size_t)n);
	v->sp_id[v->n_sp] = id;
	v->sp_off[v->n_sp] = (uint32_t)used;
	v->sp_len[v->n_sp++] = n;
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
		if (n > 0 && tok_is_special(t, id) && sp_add(v, t, id, n))
			goto oom;
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
		if (s->kind == S_CHARS || s->kind == S_TOKEN) {
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

/* The tokens token terminal k stands for in v, into ids (at most cap);
 * how many. By text: the special tokens of that text, else the ordinary
 * tokens of exactly those bytes (one token spelling it whole). */
static int tk_ids(const struct grammar *g, int k, const struct grammar_vocab *v, int32_t *ids, int cap)
{
	const struct gtok *t = &g->tk[k];
	int n = 0;
	if (!t->text) {
		if (t->id < v->n && cap > 0)
			ids[n++] = t->id;
		return n;
	}
	for (int i = 0; i < v->n_sp && n < cap; i++)
		if (v->sp_len[i] == t->len && !memcmp(v->sp_bytes + v->sp_off[i], t->text, (size_t)t->len))
			ids[n++] = v->sp_id[i];
	if (n)
		return n;
	int32_t node = 0; /* the flattened trie: node's children are node + 1, then each one's end */
	for (int i = 0; i < t->len && node >= 0; i++) {
		int32_t c = node + 1, found = -1;
		for (; c < v->fl[node].end; c = v->fl[c].end)
			if (v->fl[c].byte == (uint8_t)t->text[i]) {
				found = c;
				break;
			}
		node = found;
	}
	for (int32_t i = 0; node > 0 && i < v->fl[node].n_tok && n < cap; i++)
		ids[n++] = v->toks[v->fl[node].tok + i];
	return n;
}

#define TK_IDS 8

int grammar_vocab_check(const struct grammar *g, const struct grammar_vocab *v, char *err)
{
	int32_t id;
	for (int k = 0; k < g->n_tk; k++)
		if (!tk_ids(g, k, v, &id, 1)) {
			if (g->tk[k].text)
				return seterr(err, INFERD_EINVAL, "the grammar's token %.100s is not a token of the model", g->tk[k].text);
			return seterr(err, INFERD_EINVAL, "the grammar's token <[%d]> is outside the vocabulary (%d tokens)",
				      (int)g->tk[k].id, v->n);
		}
	return 0;
}

/* Is token id one that token terminal k stands for? */
static int tk_is(const struct grammar *g, int k, const struct grammar_vocab *v, int32_t id)
{
	int32_t ids[TK_IDS];
	int n = tk_ids(g, k, v, ids, TK_IDS);
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return 1;
	return 0;
}

/* A token that a token terminal expects now is taken by it, whole (the
 * byte path is not tried then); any other token goes by its bytes, and a
 * special token no terminal expects is refused. */
int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int32_t id)
{
	if (id < 0 || id >= v->n)
		return -1;
	int n0 = m->n_nd, any = 0;
	next_stamp(m);
	m->n_tmp = 0;
	m->tmp_complete = 0;
	for (int i = 0; i < m->n_cur && m->g->n_tk; i++) {
		const struct gsym *s = &m->g->sym[m->nd[m->cur[i]].pos];
		if (s->kind == S_TOKEN && tk_is(m->g, s->rule, v, id)) {
			expand(m, m->nd[m->cur[i]].pos + 1, m->nd[m->cur[i]].parent);
			any = 1;
		}
	}
	if (m->oom || (any && grow((void **)&m->cur, &m->cap_cur, m->n_tmp + 1, sizeof *m->cur))) {
		m->oom = 0;
		truncate_nodes(m, n0);
		return INFERD_ENOMEM;
	}
	if (any) {
		if (m->n_tmp)
			memcpy(m->cur, m->tmp, (size_t)m->n_tmp * sizeof *m->cur);
		m->n_cur = m->n_tmp;
		m->complete = m->tmp_complete;
		sort_ids(m->cur, m->n_cur);
		return m->n_nd > 512 ? compact(m) : 0;
	}
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
	for (int i = 0; i < m->n_cur && m->g->n_tk; i++) { /* token terminals expected now */
		const struct gsym *s = &m->g->sym[m->nd[m->cur[i]].pos];
		int32_t ids[TK_IDS];
		int n = s->kind == S_TOKEN ? tk_ids(m->g, s->rule, v, ids, TK_IDS) : 0;
		for (int k = 0; k < n; k++)
			if (ids[k] >= 0 && ids[k] < n_bits && !(bits[ids[k] >> 5] >> (ids[k] & 31) & 1)) {
				bits[ids[k] >> 5] |= 1u << (ids[k] & 31);
				w.count++;
			}
	}
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
