/*
 * tmpl_lex.c — Jinja's lexer, rule for rule (jinja2/lexer.py, 3.1), with
 * trim_blocks and lstrip_blocks on as transformers configures them.
 *
 * The source is first normalised as Jinja does: \r\n and \r become \n and
 * one trailing newline is dropped. Root state: the text up to the earliest
 * "{{", "{%" or "{#" is data; a '-' after the tag start strips all
 * whitespace before it, otherwise (not '+', not "{{") lstrip_blocks strips
 * spaces between the last newline (or the start of a line) and the tag.
 * Tag state: the end rule ("-%}" eats following whitespace, "%}" eats one
 * newline) is tried first, but only while brackets are balanced; then
 * whitespace, float, integer, name, string, operator. Comments and
 * {% raw %} bodies follow the same strip rules.
 *
 * Output: a malloc'd token array ending in TK_EOF; names point into the
 * normalised source, decoded strings and data into the arena. The lexer
 * never reads past its input and reports line:column on errors.
 */
#include "tmpl_int.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEX_MAX_NEST 512

struct lexer {
	const char *s;
	size_t n, pos;
	struct arena *ar;
	const char *name;
	char *err;
	struct token *t;
	size_t nt, cap;
	size_t lc_pos, lc_ls;  /* line/column cache: position, its line start */
	int lc_line;
	bool line_starting;
	char bal[LEX_MAX_NEST];
	int nbal;
};

static void lc_at(struct lexer *L, size_t pos, int *line, int *col)
{
	if (pos < L->lc_pos) {
		L->lc_pos = 0;
		L->lc_ls = 0;
		L->lc_line = 1;
	}
	for (size_t i = L->lc_pos; i < pos; i++)
		if (L->s[i] == '\n') {
			L->lc_line++;
			L->lc_ls = i + 1;
		}
	L->lc_pos = pos;
	*line = L->lc_line;
	*col = (int)u8_len(L->s + L->lc_ls, pos - L->lc_ls) + 1;
}

static int lex_fail(struct lexer *L, size_t pos, const char *fmt, const char *a)
{
	int line, col;
	lc_at(L, pos, &line, &col);
	char msg[256];
	snprintf(msg, sizeof msg, fmt, a);
	return seterr(L->err, INFERD_EFORMAT, "%s:%d:%d: %s", L->name, line, col, msg);
}

static struct token *emit(struct lexer *L, int type, size_t pos)
{
	if (L->nt == L->cap) {
		size_t nc = L->cap ? L->cap * 2 : 256;
		struct token *nt = realloc(L->t, nc * sizeof *nt);
		if (!nt)
			return NULL;
		L->t = nt;
		L->cap = nc;
	}
	struct token *t = &L->t[L->nt++];
	memset(t, 0, sizeof *t);
	t->type = (uint8_t)type;
	lc_at(L, pos, &t->line, &t->col);
	return t;
}

static int nomem(struct lexer *L)
{
	return seterr(L->err, INFERD_ENOMEM, "%s: out of memory while lexing", L->name);
}

/* whitespace code point at p (Python's \s); its byte length, 0 if none */
static size_t ws_at(const char *s, size_t n, size_t p)
{
	if (p >= n)
		return 0;
	unsigned char c = (unsigned char)s[p];
	if (c < 0x80)
		return py_isspace(c) ? 1 : 0;
	size_t adv;
	uint32_t cp = u8_dec(s + p, n - p, &adv);
	return py_isspace(cp) ? adv : 0;
}

static size_t skip_ws(const char *s, size_t n, size_t p)
{
	size_t k;
	while ((k = ws_at(s, n, p)) > 0)
		p += k;
	return p;
}

/* length of text[0..len) after Python's str.rstrip() */
static size_t rstrip_len(const char *s, size_t len)
{
	while (len > 0) {
		size_t st = len - 1;
		while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80)
			st--;
		if (ws_at(s, len, st) != len - st)
			break;
		len = st;
	}
	return len;
}

/* OptionalLStrip: the data before a tag with strip sign `sign` */
static size_t strip_text(struct lexer *L, const char *text, size_t len, char sign, bool is_var)
{
	if (sign == '-')
		return rstrip_len(text, len);
	if (sign == '+' || is_var)
		return len;
	size_t lpos = 0;
	for (size_t i = len; i > 0; i--)
		if (text[i - 1] == '\n') {
			lpos = i;
			break;
		}
	if (lpos > 0 || L->line_starting) {
		if (lpos == len)
			return len;
		size_t p = lpos;
		while (p < len) {
			size_t k = ws_at(text, len, p);
			if (!k)
				return len;
			p += k;
		}
		return lpos;
	}
	return len;
}

static int emit_data(struct lexer *L, size_t pos, size_t len)
{
	if (len == 0)
		return 0;
	struct token *t = emit(L, TK_DATA, pos);
	if (!t)
		return nomem(L);
	t->p = L->s + pos;
	t->n = len;
	return 0;
}

/* "{%" sign? \s* "raw" \s* ("-%}" \s* | "%}") at q; sets *end, *sign */
static bool match_raw_begin(struct lexer *L, size_t q, size_t *end, char *sign)
{
	size_t p = q + 2;
	*sign = 0;
	if (p < L->n && (L->s[p] == '-' || L->s[p] == '+'))
		*sign = L->s[p++];
	p = skip_ws(L->s, L->n, p);
	if (p + 3 > L->n || memcmp(L->s + p, "raw", 3) != 0)
		return false;
	p = skip_ws(L->s, L->n, p + 3);
	if (p + 3 <= L->n && memcmp(L->s + p, "-%}", 3) == 0) {
		*end = skip_ws(L->s, L->n, p + 3);
		return true;
	}
	if (p + 2 <= L->n && memcmp(L->s + p, "%}", 2) == 0) {
		*end = p + 2;
		return true;
	}
	return false;
}

/* the end of a block-end-like rule at p: "+%}" | "-%}"\s* | "%}"\n? ; 0 if none */
static size_t match_end(struct lexer *L, size_t p, char c1, bool plus_ok, bool trim)
{
	const char *s = L->s;
	size_t n = L->n;
	if (plus_ok && p + 3 <= n && s[p] == '+' && s[p + 1] == c1 && s[p + 2] == '}')
		return p + 3;
	if (p + 3 <= n && s[p] == '-' && s[p + 1] == c1 && s[p + 2] == '}')
		return skip_ws(s, n, p + 3);
	if (p + 2 <= n && s[p] == c1 && s[p + 1] == '}') {
		if (trim && p + 2 < n && s[p + 2] == '\n')
			return p + 3;
		return p + 2;
	}
	return 0;
}

static int lex_comment(struct lexer *L, size_t body, size_t start)
{
	for (size_t p = body; p + 1 < L->n; p++) {
		if (L->s[p] != '#' || L->s[p + 1] != '}')
			continue;
		size_t e;
		if (p > body && (L->s[p - 1] == '-' || L->s[p - 1] == '+'))
			e = match_end(L, p - 1, '#', true, true);
		else
			e = match_end(L, p, '#', true, true);
		L->line_starting = L->s[e - 1] == '\n';
		L->pos = e;
		return 0;
	}
	return lex_fail(L, start, "%s", "missing end of comment tag '#}'");
}

static int lex_raw(struct lexer *L, size_t body, size_t start)
{
	for (size_t p = body; p + 1 < L->n; p++) {
		if (L->s[p] != '{' || L->s[p + 1] != '%')
			continue;
		size_t q = p + 2;
		char sign = 0;
		if (q < L->n && (L->s[q] == '-' || L->s[q] == '+'))
			sign = L->s[q++];
		q = skip_ws(L->s, L->n, q);
		if (q + 6 > L->n || memcmp(L->s + q, "endraw", 6) != 0)
			continue;
		q = skip_ws(L->s, L->n, q + 6);
		size_t e = match_end(L, q, '%', true, true);
		if (!e)
			continue;
		size_t len = strip_text(L, L->s + body, p - body, sign, false);
		int rc = emit_data(L, body, len);
		if (rc)
			return rc;
		L->line_starting = L->s[e - 1] == '\n';
		L->pos = e;
		return 0;
	}
	return lex_fail(L, start, "%s", "missing end of raw directive ({% endraw %})");
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* (\d+_)*\d+ : digits with single underscores between; returns end or p */
static size_t digits_us(const char *s, size_t n, size_t p)
{
	if (p >= n || !is_digit(s[p]))
		return p;
	size_t q = p;
	while (q < n && is_digit(s[q]))
		q++;
	while (q + 1 < n && s[q] == '_' && is_digit(s[q + 1])) {
		q++;
		while (q < n && is_digit(s[q]))
			q++;
	}
	return q;
}

static size_t match_float(struct lexer *L, size_t p)
{
	const char *s = L->s;
	size_t n = L->n;
	if (p > 0 && s[p - 1] == '.')
		return 0;
	size_t q = digits_us(s, n, p);
	if (q == p)
		return 0;
	/* (\.digits)? e[+-]?digits  |  \.digits */
	size_t r = q;
	bool frac = false;
	if (r < n && s[r] == '.') {
		size_t f = digits_us(s, n, r + 1);
		if (f > r + 1) {
			r = f;
			frac = true;
		}
	}
	if (r < n && (s[r] == 'e' || s[r] == 'E')) {
		size_t e = r + 1;
		if (e < n && (s[e] == '+' || s[e] == '-'))
			e++;
		size_t d = digits_us(s, n, e);
		if (d > e)
			return d;
	}
	return frac ? r : 0;
}

static bool hexd(char c, int base)
{
	if (base == 2)
		return c == '0' || c == '1';
	if (base == 8)
		return c >= '0' && c <= '7';
	if (base == 10)
		return is_digit(c);
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static size_t match_int(struct lexer *L, size_t p, int *base)
{
	const char *s = L->s;
	size_t n = L->n;
	if (p + 1 < n && s[p] == '0') {
		char x = s[p + 1];
		int b = (x == 'b' || x == 'B') ? 2 : (x == 'o' || x == 'O') ? 8 : (x == 'x' || x == 'X') ? 16 : 0;
		if (b) {
			size_t q = p + 2, last = 0;
			for (;;) {
				size_t r = q;
				if (r < n && s[r] == '_')
					r++;
				if (r < n && hexd(s[r], b)) {
					q = r + 1;
					last = q;
				} else {
					break;
				}
			}
			if (last) {
				*base = b;
				return last;
			}
		}
	}
	*base = 10;
	if (p < n && s[p] >= '1' && s[p] <= '9') {
		size_t q = p + 1;
		for (;;) {
			size_t r = q;
			if (r < n && s[r] == '_')
				r++;
			if (r < n && is_digit(s[r]))
				q = r + 1;
			else
				break;
		}
		return q;
	}
	if (p < n && s[p] == '0') {
		size_t q = p + 1;
		for (;;) {
			size_t r = q;
			if (r < n && s[r] == '_')
				r++;
			if (r < n && s[r] == '0')
				q = r + 1;
			else
				break;
		}
		return q;
	}
	return 0;
}

static bool name_start(uint32_t cp) { return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_' || (cp >= 0x80 && !py_isspace(cp)); }
static bool name_cont(uint32_t cp) { return name_start(cp) || (cp >= '0' && cp <= '9'); }

static size_t match_name(struct lexer *L, size_t p)
{
	size_t adv;
	if (p >= L->n || !name_start(u8_dec(L->s + p, L->n - p, &adv)))
		return 0;
	size_t q = p + adv;
	while (q < L->n && name_cont(u8_dec(L->s + q, L->n - q, &adv)))
		q += adv;
	return q;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Python's unicode-escape decoding of a string literal body (after the
 * backslashreplace encoding Jinja applies first) */
static int decode_string(struct lexer *L, size_t start, const char *s, size_t n, struct token *t)
{
	char *o = ar_alloc(L->ar, 2 * n + 16); /* an escape at most doubles */
	if (!o)
		return nomem(L);
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		if (s[i] != '\\') {
			o[k++] = s[i++];
			continue;
		}
		if (i + 1 >= n) {
			return lex_fail(L, start, "%s", "string literal ends in a lone backslash");
		}
		char c = s[i + 1];
		i += 2;
		switch (c) {
		case '\\': o[k++] = '\\'; break;
		case '\'': o[k++] = '\''; break;
		case '"': o[k++] = '"'; break;
		case 'a': o[k++] = '\a'; break;
		case 'b': o[k++] = '\b'; break;
		case 'f': o[k++] = '\f'; break;
		case 'n': o[k++] = '\n'; break;
		case 'r': o[k++] = '\r'; break;
		case 't': o[k++] = '\t'; break;
		case 'v': o[k++] = '\v'; break;
		case '\n': break;
		case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
			uint32_t v = (uint32_t)(c - '0');
			for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
				v = v * 8 + (uint32_t)(s[i++] - '0');
			k += u8_enc(v, o + k);
			break;
		}
		case 'x': case 'u': case 'U': {
			int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			uint32_t v = 0;
			for (int d = 0; d < nd; d++) {
				int h = i < n ? hexval(s[i]) : -1;
				if (h < 0) {
					char m[64];
					snprintf(m, sizeof m, "truncated \\%c escape in a string literal", c);
					return lex_fail(L, start, "%s", m);
				}
				v = v * 16 + (uint32_t)h;
				i++;
			}
			if (v > 0x10FFFF)
				return lex_fail(L, start, "%s", "\\U escape out of range in a string literal");
			k += u8_enc(v, o + k);
			break;
		}
		case 'N':
			return lex_fail(L, start, "%s", "\\N{...} escapes in string literals are not supported");
		default:
			if ((unsigned char)c >= 0x80) {
				/* backslashreplace turned the character into \xNN /
				 * \uNNNN text, whose backslash the escaped backslash
				 * consumed: the result is that text */
				size_t adv;
				uint32_t cp = u8_dec(s + i - 1, n - (i - 1), &adv);
				int w = cp < 0x100 ? sprintf(o + k, "\\x%02x", cp)
					: cp < 0x10000 ? sprintf(o + k, "\\u%04x", cp)
					: sprintf(o + k, "\\U%08x", cp);
				k += (size_t)w;
				i = i - 1 + adv;
			} else {
				o[k++] = '\\';
				o[k++] = c;
			}
			break;
		}
	}
	o[k] = 0;
	t->p = o;
	t->n = k;
	return 0;
}

static const struct {
	const char *s;
	uint8_t op;
} ops2[] = {{"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ}, {"<=", OP_LTEQ}};

static int match_op(const char *s, size_t n, size_t p, size_t *len)
{
	if (p + 1 < n)
		for (size_t i = 0; i < sizeof ops2 / sizeof ops2[0]; i++)
			if (s[p] == ops2[i].s[0] && s[p + 1] == ops2[i].s[1]) {
				*len = 2;
				return ops2[i].op;
			}
	*len = 1;
	switch (s[p]) {
	case '+': return OP_ADD;
	case '-': return OP_SUB;
	case '/': return OP_DIV;
	case '*': return OP_MUL;
	case '%': return OP_MOD;
	case '~': return OP_TILDE;
	case '[': return OP_LBRACKET;
	case ']': return OP_RBRACKET;
	case '(': return OP_LPAREN;
	case ')': return OP_RPAREN;
	case '{': return OP_LBRACE;
	case '}': return OP_RBRACE;
	case '|': return OP_PIPE;
	case ',': return OP_COMMA;
	case '.': return OP_DOT;
	case ':': return OP_COLON;
	case ';': return OP_SEMICOLON;
	case '=': return OP_ASSIGN;
	case '<': return OP_LT;
	case '>': return OP_GT;
	default: return -1;
	}
}

static int lex_tag(struct lexer *L, size_t q, size_t after, bool block)
{
	struct token *t = emit(L, block ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, q);
	if (!t)
		return nomem(L);
	L->pos = after;
	L->nbal = 0;
	const char *s = L->s;
	size_t n = L->n;
	for (;;) {
		size_t p = L->pos;
		if (p >= n)
			return 0; /* end of input inside a tag: the parser reports it */
		if (L->nbal == 0) {
			size_t e = block ? match_end(L, p, '%', true, true) : match_end(L, p, '}', false, false);
			if (e) {
				if (!emit(L, block ? TK_BLOCK_END : TK_VAR_END, p))
					return nomem(L);
				L->line_starting = s[e - 1] == '\n';
				L->pos = e;
				return 0;
			}
		}
		size_t e = ws_at(s, n, p);
		if (e) {
			L->pos = skip_ws(s, n, p);
			continue;
		}
		if ((e = match_float(L, p)) > 0) {
			char buf[128];
			size_t k = 0;
			for (size_t i = p; i < e && k + 1 < sizeof buf; i++)
				if (s[i] != '_')
					buf[k++] = s[i];
			buf[k] = 0;
			if (!(t = emit(L, TK_FLOAT, p)))
				return nomem(L);
			t->f = strtod(buf, NULL);
			t->p = s + p;
			t->n = e - p;
			L->pos = e;
			continue;
		}
		int base;
		if ((e = match_int(L, p, &base)) > 0) {
			uint64_t v = 0;
			size_t i = p + (base != 10 ? 2 : 0);
			for (; i < e; i++) {
				if (s[i] == '_')
					continue;
				uint64_t d = (uint64_t)hexval(s[i]);
				if (v > (UINT64_MAX - d) / (uint64_t)base || v * (uint64_t)base + d > (uint64_t)INT64_MAX)
					return lex_fail(L, p, "%s", "integer literal too large (inferd integers are 64-bit)");
				v = v * (uint64_t)base + d;
			}
			if (!(t = emit(L, TK_INT, p)))
				return nomem(L);
			t->i = (int64_t)v;
			t->p = s + p;
			t->n = e - p;
			L->pos = e;
			continue;
		}
		if ((e = match_name(L, p)) > 0) {
			if (!(t = emit(L, TK_NAME, p)))
				return nomem(L);
			t->p = s + p;
			t->n = e - p;
			L->pos = e;
			continue;
		}
		if (s[p] == '\'' || s[p] == '"') {
			char qc = s[p];
			size_t i = p + 1;
			bool closed = false;
			while (i < n) {
				if (s[i] == '\\') {
					i += 2;
					continue;
				}
				if (s[i] == qc) {
					closed = true;
					break;
				}
				i++;
			}
			if (!closed || i >= n)
				return lex_fail(L, p, "%s", "unterminated string literal");
			if (!(t = emit(L, TK_STRING, p)))
				return nomem(L);
			int rc = decode_string(L, p, s + p + 1, i - p - 1, t);
			if (rc)
				return rc;
			L->pos = i + 1;
			continue;
		}
		size_t ol;
		int op = match_op(s, n, p, &ol);
		if (op < 0) {
			char c[8];
			size_t adv;
			u8_dec(s + p, n - p, &adv);
			memcpy(c, s + p, adv < 5 ? adv : 4);
			c[adv < 5 ? adv : 4] = 0;
			return lex_fail(L, p, "unexpected char '%s'", c);
		}
		if (op == OP_LBRACE || op == OP_LPAREN || op == OP_LBRACKET) {
			if (L->nbal >= LEX_MAX_NEST)
				return lex_fail(L, p, "%s", "brackets nested too deeply");
			L->bal[L->nbal++] = op == OP_LBRACE ? '}' : op == OP_LPAREN ? ')' : ']';
		} else if (op == OP_RBRACE || op == OP_RPAREN || op == OP_RBRACKET) {
			char c = s[p];
			if (L->nbal == 0) {
				char m[4] = {c, 0};
				return lex_fail(L, p, "unexpected '%s'", m);
			}
			char want = L->bal[--L->nbal];
			if (want != c) {
				char m[64];
				snprintf(m, sizeof m, "unexpected '%c', expected '%c'", c, want);
				return lex_fail(L, p, "%s", m);
			}
		}
		if (!(t = emit(L, TK_OP, p)))
			return nomem(L);
		t->op = (uint8_t)op;
		t->p = s + p;
		t->n = ol;
		L->pos = p + ol;
	}
}

static int lex_root(struct lexer *L)
{
	const char *s = L->s;
	size_t n = L->n;
	while (L->pos < n) {
		size_t pos = L->pos, q = pos;
		bool found = false;
		for (; q + 1 < n; q++)
			if (s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')) {
				found = true;
				break;
			}
		if (!found)
			return emit_data(L, pos, n - pos);
		size_t after;
		char sign = 0;
		bool raw = false;
		char kind = s[q + 1];
		if (kind == '%' && match_raw_begin(L, q, &after, &sign)) {
			raw = true;
		} else {
			after = q + 2;
			if (after < n && (s[after] == '-' || s[after] == '+'))
				sign = s[after++];
		}
		size_t len = strip_text(L, s + pos, q - pos, sign, kind == '{');
		int rc = emit_data(L, pos, len);
		if (rc)
			return rc;
		L->line_starting = raw && s[after - 1] == '\n';
		if (raw)
			rc = lex_raw(L, after, q);
		else if (kind == '#')
			rc = lex_comment(L, after, q);
		else
			rc = lex_tag(L, q, after, kind == '%');
		if (rc)
			return rc;
	}
	return 0;
}

int tmpl_lex(const char *src, size_t len, const char *name, struct arena *ar,
	     struct token **toks, size_t *ntoks, char *err)
{
	struct lexer L;
	memset(&L, 0, sizeof L);
	L.ar = ar;
	L.name = name;
	L.err = err;
	L.lc_line = 1;
	L.line_starting = true;
	/* normalise newlines; drop one trailing newline */
	char *s = ar_alloc(ar, len + 1);
	if (!s)
		return seterr(err, INFERD_ENOMEM, "%s: out of memory", name);
	size_t k = 0;
	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\r') {
			s[k++] = '\n';
			if (i + 1 < len && src[i + 1] == '\n')
				i++;
		} else {
			s[k++] = src[i];
		}
	}
	if (k > 0 && s[k - 1] == '\n')
		k--;
	s[k] = 0;
	L.s = s;
	L.n = k;
	int rc = lex_root(&L);
	if (!rc && !emit(&L, TK_EOF, L.n))
		rc = nomem(&L);
	if (rc) {
		free(L.t);
		return rc;
	}
	*toks = L.t;
	*ntoks = L.nt;
	return 0;
}

const char *tk_describe(const struct token *t, char *buf, size_t cap)
{
	switch (t->type) {
	case TK_EOF: return "end of template";
	case TK_DATA: return "template data";
	case TK_VAR_BEGIN: return "begin of print statement '{{'";
	case TK_VAR_END: return "end of print statement '}}'";
	case TK_BLOCK_BEGIN: return "begin of statement block '{%'";
	case TK_BLOCK_END: return "end of statement block '%}'";
	case TK_STRING: return "string literal";
	default:
		snprintf(buf, cap, "%.*s", (int)(t->n < 60 ? t->n : 60), t->p);
		return buf;
	}
}
