/*
 * tmpl_lib.c — what templates call: Jinja's builtin filters and tests
 * (jinja2/filters.py, tests.py, 3.1), transformers' tojson, the methods of
 * Python's str, dict and list that the sandbox allows, the loop object's
 * attributes, the globals (range, dict, namespace, raise_exception,
 * strftime_now), and Python's two string formatting languages (% and
 * str.format).
 *
 * Each function follows the Python original's semantics, including which
 * results are generators (select, map, ... are consumed once and always
 * truthy) and which modifications the ImmutableSandboxedEnvironment refuses
 * (list.append, dict.update, ...: an Undefined that raises SecurityError
 * when used). Taint: slicing-like operations keep each byte's mask through
 * str_sub / sbuf; other transformations of tainted input taint the whole
 * result (str_retaint).
 */
#include "tmpl_int.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>



/* ---------------------------------------------------------------- names */

#define FILTER_LIST(X) X(abs) X(attr) X(batch) X(capitalize) X(center) X(count) X(d) X(default) \
	X(dictsort) X(e) X(escape) X(filesizeformat) X(first) X(float) X(forceescape) X(format)    \
	X(groupby) X(indent) X(int) X(join) X(last) X(length) X(list) X(lower) X(items) X(map)      \
	X(min) X(max) X(pprint) X(random) X(reject) X(rejectattr) X(replace) X(reverse) X(round)   \
	X(safe) X(select) X(selectattr) X(slice) X(sort) X(string) X(striptags) X(sum) X(title)     \
	X(tojson) X(trim) X(truncate) X(unique) X(upper) X(urlencode) X(urlize) X(wordcount)        \
	X(wordwrap) X(xmlattr)

enum {
#define X(n) F_##n,
	FILTER_LIST(X)
#undef X
	F_COUNT
};
static const char *const filter_names[] = {
#define X(n) #n,
	FILTER_LIST(X)
#undef X
};

#define TEST_LIST(X) X(odd, "odd") X(even, "even") X(divisibleby, "divisibleby") X(defined, "defined")  \
	X(undefined, "undefined") X(filter, "filter") X(test, "test") X(none, "none")                     \
	X(boolean, "boolean") X(false, "false") X(true, "true") X(integer, "integer") X(float, "float")   \
	X(lower, "lower") X(upper, "upper") X(string, "string") X(mapping, "mapping")                     \
	X(number, "number") X(sequence, "sequence") X(iterable, "iterable") X(callable, "callable")       \
	X(sameas, "sameas") X(escaped, "escaped") X(in, "in") X(eq, "==") X(eq2, "eq")                    \
	X(equalto, "equalto") X(ne, "!=") X(ne2, "ne") X(gt, ">") X(gt2, "gt")                            \
	X(greaterthan, "greaterthan") X(ge, "ge") X(ge2, ">=") X(lt, "<") X(lt2, "lt")                    \
	X(lessthan, "lessthan") X(le, "<=") X(le2, "le")

enum {
#define X(id, s) T_##id,
	TEST_LIST(X)
#undef X
	T_COUNT
};
static const char *const test_names[] = {
#define X(id, s) s,
	TEST_LIST(X)
#undef X
};

static int find_name(const char *const *names, int n, const char *s, size_t len)
{
	for (int i = 0; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return i;
	return -1;
}

int filter_id(const char *name, size_t n) { return find_name(filter_names, F_COUNT, name, n); }
int test_id(const char *name, size_t n) { return find_name(test_names, T_COUNT, name, n); }
const char *filter_name(int id) { return id >= 0 && id < F_COUNT ? filter_names[id] : "?"; }
/* @pass_context filters: Jinja never folds them at compile time */
bool filter_needs_context(int id)
{
	return id == F_map || id == F_select || id == F_reject || id == F_selectattr || id == F_rejectattr || id == F_random || id < 0;
}

/* ---------------------------------------------------------------- argument binding */

#define MAXP 8
struct bound {
	struct val v[MAXP];
	bool given[MAXP];
};

static int bind(struct rctx *r, const char *what, const char *const *params, struct val *args, int nargs,
		const char **kwn, struct val *kwv, int nkw, struct bound *b)
{
	int np = 0;
	while (params[np])
		np++;
	memset(b, 0, sizeof *b);
	if (nargs > np)
		return rerr(r, INFERD_EINVAL, "TypeError: %s takes at most %d argument(s) (%d given)", what, np, nargs);
	for (int i = 0; i < nargs; i++) {
		b->v[i] = args[i];
		b->given[i] = true;
	}
	for (int k = 0; k < nkw; k++) {
		int i = 0;
		while (i < np && strcmp(params[i], kwn[k]))
			i++;
		if (i == np)
			return rerr(r, INFERD_EINVAL, "TypeError: %s got an unexpected keyword argument '%s'", what, kwn[k]);
		if (b->given[i])
			return rerr(r, INFERD_EINVAL, "TypeError: %s got multiple values for argument '%s'", what, kwn[k]);
		b->v[i] = kwv[k];
		b->given[i] = true;
	}
	return 0;
}

static bool b_has(const struct bound *b, int i) { return b->given[i] && b->v[i].t != V_NONE; }
static bool b_bool(const struct bound *b, int i, bool def) { return b->given[i] ? v_truthy(&b->v[i]) : def; }

static int want_int(struct rctx *r, const struct val *v, const char *what, int64_t *out)
{
	if (v->t == V_INT) {
		*out = v->i;
		return 0;
	}
	if (v->t == V_BOOL) {
		*out = v->b;
		return 0;
	}
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	return rerr(r, INFERD_EINVAL, "TypeError: %s must be an integer, not '%s'", what, v_typename(v));
}

static int want_str(struct rctx *r, const struct val *v, const char *what)
{
	if (v->t == V_STR)
		return 0;
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	return rerr(r, INFERD_EINVAL, "TypeError: %s must be str, not %s", what, v_typename(v));
}

static int b_int(struct rctx *r, const struct bound *b, int i, int64_t def, const char *what, int64_t *out)
{
	if (!b->given[i]) {
		*out = def;
		return 0;
	}
	return want_int(r, &b->v[i], what, out);
}

/* soft_str: str(x) unless already a string (Markup stays Markup) */
static int soft_str(struct rctx *r, const struct val *v, struct val *out)
{
	return v_str(r, v, out);
}

static int new_str(struct rctx *r, struct sbuf *sb, uint8_t sub, struct val *out)
{
	int rc;
	if (sb->over)
		rc = rerr(r, INFERD_ERANGE, "string larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
	else
		rc = sb_to_val(r, sb, out);
	sb_free(sb);
	if (!rc)
		out->sub = sub & SUB_MARKUP;
	return rc;
}

static int mk_iter(struct rctx *r, const struct val *items, size_t n, int kind, struct val *out)
{
	struct iter *it = ralloc(r, sizeof *it);
	if (!it)
		return room(r);
	it->v = n ? ralloc(r, n * sizeof *it->v) : NULL;
	if (n && !it->v)
		return room(r);
	if (n)
		memcpy(it->v, items, n * sizeof *items);
	it->n = n;
	it->kind = (uint8_t)kind;
	*out = (struct val){0};
	out->t = V_ITER;
	out->it = it;
	return 0;
}

static int mk_tuple2(struct rctx *r, struct val a, struct val b, struct val *out)
{
	int rc = v_newlist(r, 2, LK_TUPLE, out);
	if (rc)
		return rc;
	out->l->v[0] = a;
	out->l->v[1] = b;
	out->l->n = 2;
	return 0;
}

/* ---------------------------------------------------------------- string helpers */

static bool is_markup(const struct val *v) { return v->t == V_STR && (v->sub & SUB_MARKUP); }

int markup_escape(struct rctx *r, const struct val *v, struct val *out)
{
	if (is_markup(v)) {
		*out = *v;
		return 0;
	}
	struct val s;
	int rc = v_str(r, v, &s);
	if (rc)
		return rc;
	struct sbuf sb;
	sb_init(&sb);
	size_t run = 0;
	for (size_t i = 0; i < s.n; i++) {
		const char *e = NULL;
		switch (s.s[i]) {
		case '&': e = "&amp;"; break;
		case '<': e = "&lt;"; break;
		case '>': e = "&gt;"; break;
		case '\'': e = "&#39;"; break;
		case '"': e = "&#34;"; break;
		default: break;
		}
		if (!e) {
			run++;
			continue;
		}
		sb_putv_range(&sb, &s, i - run, run);
		run = 0;
		sb_put(&sb, e, strlen(e), s.taint != TN_CLEAN);
	}
	sb_putv_range(&sb, &s, s.n - run, run);
	rc = new_str(r, &sb, SUB_MARKUP, out);
	if (!rc && s.taint != TN_CLEAN)
		*out = str_retaint(*out, true);
	return rc;
}

/* full (multi-character) uppercase mappings of Python's str.upper */
static const char *upper_special(uint32_t c)
{
	switch (c) {
	case 0xDF: return "SS";
	case 0x149: return "\xca\xbcN";
	case 0xFB00: return "FF";
	case 0xFB01: return "FI";
	case 0xFB02: return "FL";
	case 0xFB03: return "FFI";
	case 0xFB04: return "FFL";
	case 0xFB05: case 0xFB06: return "ST";
	default: return NULL;
	}
}

/* case mapping keeping each character's taint bit */
enum { CM_UPPER, CM_LOWER, CM_CAPITALIZE, CM_TITLE_JINJA, CM_TITLE_PY, CM_SWAPCASE };

static bool is_cased(uint32_t c) { return py_upper(c) != c || py_lower(c) != c; }

struct cm_state {
	bool prev_cased, at_start;
};

/* one character of a case mapping: the new code point, or *extra for a
 * multi-character result */
static uint32_t map_char(int mode, uint32_t c, bool first, struct cm_state *st, const char **extra)
{
	uint32_t o = c;
	*extra = NULL;
	switch (mode) {
	case CM_UPPER:
		o = py_upper(c);
		*extra = upper_special(c);
		break;
	case CM_LOWER:
		o = py_lower(c);
		if (c == 0x130)
			*extra = "i\xcc\x87";
		break;
	case CM_CAPITALIZE:
		o = first ? py_upper(c) : py_lower(c);
		if (first && c == 0xDF)
			*extra = "Ss";
		break;
	case CM_TITLE_JINJA: {
		/* words begin after runs of -, whitespace, (, {, [, < */
		bool sep = c == '-' || py_isspace(c) || c == '(' || c == '{' || c == '[' || c == '<';
		o = (!sep && st->at_start) ? py_upper(c) : py_lower(c);
		if (!sep && st->at_start && c == 0xDF)
			*extra = "SS";
		st->at_start = sep;
		break;
	}
	case CM_TITLE_PY:
		o = st->prev_cased ? py_lower(c) : py_upper(c);
		if (!st->prev_cased && c == 0xDF)
			*extra = "Ss";
		st->prev_cased = is_cased(c) || py_isalpha(c);
		break;
	case CM_SWAPCASE:
		o = py_upper(c) != c ? py_upper(c) : py_lower(c);
		break;
	}
	return o;
}

static int case_map(struct rctx *r, const struct val *s, int mode, struct val *out)
{
	/* most mappings change nothing (role names, flags): no copy then */
	struct cm_state st = {false, true};
	bool changed = false;
	for (size_t i = 0; i < s->n && !changed;) {
		size_t adv;
		const char *extra;
		uint32_t c = u8_dec(s->s + i, s->n - i, &adv);
		changed = map_char(mode, c, i == 0, &st, &extra) != c || extra;
		i += adv;
	}
	if (!changed) {
		*out = *s;
		return 0;
	}
	struct sbuf sb;
	sb_init(&sb);
	st = (struct cm_state){false, true};
	for (size_t i = 0; i < s->n;) {
		size_t adv;
		const char *extra;
		uint32_t c = u8_dec(s->s + i, s->n - i, &adv);
		uint32_t o = map_char(mode, c, i == 0, &st, &extra);
		uint8_t t = s->taint == TN_ALL ? 1 : s->taint == TN_MIXED ? s->m[i] : 0;
		if (extra) {
			sb_put(&sb, extra, strlen(extra), t);
		} else if (o == c) {
			sb_put(&sb, s->s + i, adv, t);
		} else {
			char tmp[4];
			sb_put(&sb, tmp, u8_enc(o, tmp), t);
		}
		i += adv;
	}
	return new_str(r, &sb, s->sub, out);
}

/* Python's str.strip family; chars NULL = whitespace */
static bool in_chars(uint32_t c, const struct val *chars)
{
	if (!chars)
		return py_isspace(c);
	for (size_t i = 0; i < chars->n;) {
		size_t adv;
		if (u8_dec(chars->s + i, chars->n - i, &adv) == c)
			return true;
		i += adv;
	}
	return false;
}

static int do_strip(struct rctx *r, const struct val *s, const struct val *chars, bool left, bool right, struct val *out)
{
	size_t a = 0, b = s->n;
	if (left)
		while (a < b) {
			size_t adv;
			uint32_t c = u8_dec(s->s + a, b - a, &adv);
			if (!in_chars(c, chars))
				break;
			a += adv;
		}
	if (right)
		while (b > a) {
			size_t st = b - 1;
			while (st > a && ((unsigned char)s->s[st] & 0xC0) == 0x80)
				st--;
			size_t adv;
			uint32_t c = u8_dec(s->s + st, b - st, &adv);
			if (!in_chars(c, chars))
				break;
			b = st;
		}
	return str_sub(r, s, a, b - a, out);
}

static bool find_sub(const struct val *h, const struct val *nd, size_t from, size_t to, size_t *at)
{
	if (nd->n == 0) {
		*at = from;
		return from <= to;
	}
	for (size_t i = from; i + nd->n <= to; i++)
		if (h->s[i] == nd->s[0] && memcmp(h->s + i, nd->s, nd->n) == 0) {
			*at = i;
			return true;
		}
	return false;
}

static bool rfind_sub(const struct val *h, const struct val *nd, size_t from, size_t to, size_t *at)
{
	if (nd->n > to - from)
		return false;
	for (size_t i = to - nd->n + 1; i-- > from;)
		if (memcmp(h->s + i, nd->s, nd->n) == 0) {
			*at = i;
			return true;
		}
	return false;
}

static int do_split(struct rctx *r, const struct val *s, const struct val *sep, int64_t maxsplit, bool from_right,
		    struct val *out)
{
	int rc = v_newlist(r, 0, LK_LIST, out);
	if (rc)
		return rc;
	struct val part;
	if (!sep) {
		/* runs of whitespace; leading/trailing ignored */
		size_t n = s->n;
		if (!from_right) {
			size_t i = 0;
			int64_t splits = 0;
			for (;;) {
				while (i < n) {
					size_t adv;
					if (!py_isspace(u8_dec(s->s + i, n - i, &adv)))
						break;
					i += adv;
				}
				if (i >= n)
					break;
				if (maxsplit >= 0 && splits == maxsplit) {
					/* the rest, trailing whitespace included */
					str_sub(r, s, i, n - i, &part);
					return list_push(r, out->l, part);
				}
				size_t j = i;
				while (j < n) {
					size_t adv;
					if (py_isspace(u8_dec(s->s + j, n - j, &adv)))
						break;
					j += adv;
				}
				str_sub(r, s, i, j - i, &part);
				if ((rc = list_push(r, out->l, part)))
					return rc;
				splits++;
				i = j;
			}
			return 0;
		}
		/* rsplit(None): collect from the right, then reverse */
		size_t e = n;
		int64_t splits = 0;
		for (;;) {
			while (e > 0) {
				size_t st = e - 1, adv;
				while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80)
					st--;
				if (!py_isspace(u8_dec(s->s + st, e - st, &adv)))
					break;
				e = st;
			}
			if (e == 0)
				break;
			if (maxsplit >= 0 && splits == maxsplit) {
				/* the rest, leading whitespace included */
				str_sub(r, s, 0, e, &part);
				if ((rc = list_push(r, out->l, part)))
					return rc;
				break;
			}
			size_t b0 = e;
			while (b0 > 0) {
				size_t st = b0 - 1, adv;
				while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80)
					st--;
				if (py_isspace(u8_dec(s->s + st, b0 - st, &adv)))
					break;
				b0 = st;
			}
			str_sub(r, s, b0, e - b0, &part);
			if ((rc = list_push(r, out->l, part)))
				return rc;
			splits++;
			e = b0;
		}
		for (size_t i = 0, j = out->l->n; i < j / 2; i++) {
			struct val t = out->l->v[i];
			out->l->v[i] = out->l->v[j - 1 - i];
			out->l->v[j - 1 - i] = t;
		}
		return 0;
	}
	if (sep->n == 0)
		return rerr(r, INFERD_EINVAL, "ValueError: empty separator");
	if (!from_right) {
		size_t i = 0, at;
		int64_t splits = 0;
		while ((maxsplit < 0 || splits < maxsplit) && find_sub(s, sep, i, s->n, &at)) {
			str_sub(r, s, i, at - i, &part);
			if ((rc = list_push(r, out->l, part)))
				return rc;
			i = at + sep->n;
			splits++;
		}
		str_sub(r, s, i, s->n - i, &part);
		return list_push(r, out->l, part);
	}
	size_t e = s->n, at;
	int64_t splits = 0;
	while ((maxsplit < 0 || splits < maxsplit) && rfind_sub(s, sep, 0, e, &at)) {
		str_sub(r, s, at + sep->n, e - at - sep->n, &part);
		if ((rc = list_push(r, out->l, part)))
			return rc;
		e = at;
		splits++;
	}
	str_sub(r, s, 0, e, &part);
	if ((rc = list_push(r, out->l, part)))
		return rc;
	for (size_t i = 0, j = out->l->n; i < j / 2; i++) {
		struct val t = out->l->v[i];
		out->l->v[i] = out->l->v[j - 1 - i];
		out->l->v[j - 1 - i] = t;
	}
	return 0;
}

/* line boundary at p: its length, 0 if none (\r\n counts as one) */
static size_t line_break(const char *s, size_t n, size_t p)
{
	unsigned char c = (unsigned char)s[p];
	if (c == '\r')
		return (p + 1 < n && s[p + 1] == '\n') ? 2 : 1;
	if (c == '\n' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e)
		return 1;
	if (c >= 0x80) {
		size_t adv;
		uint32_t cp = u8_dec(s + p, n - p, &adv);
		if (cp == 0x85 || cp == 0x2028 || cp == 0x2029)
			return adv;
	}
	return 0;
}

static int do_splitlines(struct rctx *r, const struct val *s, bool keepends, struct val *out)
{
	int rc = v_newlist(r, 0, LK_LIST, out);
	if (rc)
		return rc;
	size_t start = 0, i = 0;
	struct val part;
	while (i < s->n) {
		size_t k = line_break(s->s, s->n, i);
		if (!k) {
			i++;
			continue;
		}
		str_sub(r, s, start, (keepends ? i + k : i) - start, &part);
		if ((rc = list_push(r, out->l, part)))
			return rc;
		i += k;
		start = i;
	}
	if (start < s->n) {
		str_sub(r, s, start, s->n - start, &part);
		rc = list_push(r, out->l, part);
	}
	return rc;
}

static int do_replace(struct rctx *r, const struct val *s, const struct val *old, const struct val *nw, int64_t count,
		      struct val *out)
{
	struct sbuf sb;
	sb_init(&sb);
	bool taint = s->taint || old->taint || nw->taint;
	if (old->n == 0) {
		/* Python inserts `new` between every character and at both ends */
		int64_t done = 0;
		for (size_t i = 0;; ) {
			if (count < 0 || done < count) {
				sb_putv(&sb, nw);
				done++;
			}
			if (i >= s->n)
				break;
			size_t adv;
			u8_dec(s->s + i, s->n - i, &adv);
			sb_putv_range(&sb, s, i, adv);
			i += adv;
		}
	} else {
		size_t i = 0, at;
		int64_t done = 0;
		while ((count < 0 || done < count) && find_sub(s, old, i, s->n, &at)) {
			sb_putv_range(&sb, s, i, at - i);
			sb_putv(&sb, nw);
			i = at + old->n;
			done++;
		}
		sb_putv_range(&sb, s, i, s->n - i);
	}
	int rc = new_str(r, &sb, 0, out);
	if (!rc)
		*out = str_retaint(*out, taint);
	return rc;
}

/* code point indices [start, end) of Python's optional start/end arguments, as byte offsets */
static int sub_range(struct rctx *r, const struct val *s, const struct val *a, const struct val *b, size_t *bs,
		     size_t *be)
{
	int64_t len = (int64_t)u8_len(s->s, s->n), x = 0, y = len;
	if (a && a->t != V_NONE) {
		int rc = want_int(r, a, "slice index", &x);
		if (rc)
			return rc;
		if (x < 0)
			x += len;
		if (x < 0)
			x = 0;
	}
	if (b && b->t != V_NONE) {
		int rc = want_int(r, b, "slice index", &y);
		if (rc)
			return rc;
		if (y < 0)
			y += len;
		if (y < 0)
			y = 0;
	}
	if (y > len)
		y = len;
	if (x > len) {
		*bs = s->n + 1;
		*be = s->n;
		return 0;
	}
	*bs = u8_off(s->s, s->n, x);
	*be = y < x ? *bs : u8_off(s->s, s->n, y);
	return 0;
}

static int64_t cp_index(const struct val *s, size_t boff)
{
	return (int64_t)u8_len(s->s, boff);
}

static int pad_str(struct rctx *r, const struct val *s, int64_t width, const struct val *fill, int how, struct val *out)
{
	/* how: 0 center, 1 ljust, 2 rjust */
	int64_t len = (int64_t)u8_len(s->s, s->n);
	if (width <= len) {
		*out = *s;
		return 0;
	}
	int64_t marg = width - len, left;
	if (how == 0)
		left = marg / 2 + (marg & width & 1);
	else if (how == 1)
		left = 0;
	else
		left = marg;
	const char *f = fill ? fill->s : " ";
	size_t fn = fill ? fill->n : 1;
	struct sbuf sb;
	sb_init(&sb);
	for (int64_t i = 0; i < left; i++)
		sb_put(&sb, f, fn, fill ? fill->taint != TN_CLEAN : 0);
	sb_putv(&sb, s);
	for (int64_t i = 0; i < marg - left; i++)
		sb_put(&sb, f, fn, fill ? fill->taint != TN_CLEAN : 0);
	return new_str(r, &sb, s->sub, out);
}

/* ---------------------------------------------------------------- attribute getters */

static int attr_path(struct rctx *r, const struct val *attr, struct val **parts, int *nparts)
{
	/* _prepare_attribute_parts: "a.b.0" -> ["a", "b", 0]; an int stays an int */
	if (attr->t != V_STR) {
		*parts = ralloc(r, sizeof **parts);
		if (!*parts)
			return room(r);
		(*parts)[0] = *attr;
		*nparts = 1;
		return 0;
	}
	int cnt = 1;
	for (size_t i = 0; i < attr->n; i++)
		if (attr->s[i] == '.')
			cnt++;
	*parts = ralloc(r, (size_t)cnt * sizeof **parts);
	if (!*parts)
		return room(r);
	size_t st = 0;
	int k = 0;
	for (size_t i = 0; i <= attr->n; i++) {
		if (i < attr->n && attr->s[i] != '.')
			continue;
		struct val p = v_strc(attr->s + st, i - st);
		bool digits = i > st;
		for (size_t j = st; j < i; j++)
			if (attr->s[j] < '0' || attr->s[j] > '9')
				digits = false;
		if (digits && i - st < 18) {
			int64_t v = 0;
			for (size_t j = st; j < i; j++)
				v = v * 10 + (attr->s[j] - '0');
			p = v_int(v);
		}
		(*parts)[k++] = p;
		st = i + 1;
	}
	*nparts = k;
	return 0;
}

struct getter {
	struct val *parts;
	int nparts;
	bool lower;          /* ignore_case postprocess */
	struct val dflt;     /* default for undefined results (map / groupby) */
	bool has_dflt;
};

static int get_by(struct rctx *r, const struct getter *g, const struct val *item, struct val *out)
{
	struct val cur = *item;
	for (int i = 0; i < g->nparts; i++) {
		struct val nx;
		int rc = getitem_v(r, &cur, &g->parts[i], &nx);
		if (rc)
			return rc;
		cur = nx;
		if (g->has_dflt && cur.t == V_UNDEF)
			cur = g->dflt;
	}
	if (g->lower && cur.t == V_STR)
		return case_map(r, &cur, CM_LOWER, out);
	*out = cur;
	return 0;
}

static int make_getter(struct rctx *r, const struct val *attr, bool lower, struct getter *g)
{
	memset(g, 0, sizeof *g);
	g->lower = lower;
	if (!attr || attr->t == V_NONE)
		return 0;
	return attr_path(r, attr, &g->parts, &g->nparts);
}

/* stable merge sort of idx[] by keys[] (Python's sorted, reverse keeps stability) */
struct sorter {
	struct rctx *r;
	const struct val *keys;
	bool reverse;
	int rc;
};

static bool sort_less(struct sorter *s, size_t a, size_t b)
{
	if (s->rc)
		return false;
	int c;
	s->rc = v_order(s->r, &s->keys[a], &s->keys[b], &c);
	return s->reverse ? c > 0 : c < 0;
}

static void merge_sort(struct sorter *s, size_t *idx, size_t *tmp, size_t n)
{
	if (n < 2)
		return;
	size_t h = n / 2;
	merge_sort(s, idx, tmp, h);
	merge_sort(s, idx + h, tmp, n - h);
	size_t i = 0, j = h, k = 0;
	while (i < h && j < n) {
		if (sort_less(s, idx[j], idx[i]))
			tmp[k++] = idx[j++];
		else
			tmp[k++] = idx[i++];
	}
	while (i < h)
		tmp[k++] = idx[i++];
	while (j < n)
		tmp[k++] = idx[j++];
	memcpy(idx, tmp, n * sizeof *idx);
}

static int sort_items(struct rctx *r, const struct val *items, size_t n, const struct val *keys, bool reverse,
		      struct val *out)
{
	size_t *idx = ralloc(r, (n + 1) * sizeof *idx), *tmp = ralloc(r, (n + 1) * sizeof *tmp);
	if (!idx || !tmp)
		return room(r);
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	struct sorter s = {r, keys, reverse, 0};
	merge_sort(&s, idx, tmp, n);
	if (s.rc)
		return s.rc;
	int rc = v_newlist(r, n, LK_LIST, out);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++)
		out->l->v[i] = items[idx[i]];
	out->l->n = n;
	return 0;
}

/* ---------------------------------------------------------------- tests */

static int int_mod(struct rctx *r, const struct val *v, int64_t m, int64_t *res)
{
	if (v->t == V_INT || v->t == V_BOOL) {
		int64_t x = v->t == V_INT ? v->i : v->b;
		if (m == 0)
			return rerr(r, INFERD_EINVAL, "ZeroDivisionError: integer division or modulo by zero");
		int64_t z = m == -1 ? 0 : x % m;
		if (z != 0 && ((z < 0) != (m < 0)))
			z += m;
		*res = z;
		return 0;
	}
	if (v->t == V_FLOAT) {
		double z = fmod(v->f, (double)m);
		if (z != 0 && ((z < 0) != (m < 0)))
			z += (double)m;
		*res = z == 0 ? 0 : (z == 1 ? 1 : 2);
		return 0;
	}
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	return rerr(r, INFERD_EINVAL, "TypeError: unsupported operand type(s) for %%: '%s' and 'int'", v_typename(v));
}

static bool str_case_test(const struct val *v, bool want_lower)
{
	bool cased = false;
	for (size_t i = 0; i < v->n;) {
		size_t adv;
		uint32_t c = u8_dec(v->s + i, v->n - i, &adv);
		i += adv;
		if (py_upper(c) != c) {  /* a lowercase letter */
			if (!want_lower)
				return false;
			cased = true;
		} else if (py_lower(c) != c) {  /* an uppercase letter */
			if (want_lower)
				return false;
			cased = true;
		}
	}
	return cased;
}

int apply_test(struct rctx *r, int id, const char *name, struct val *v, struct val *args, int nargs, const char **kwn,
	       struct val *kwv, int nkw, bool *out)
{
	struct bound b;
	int rc;
	static const char *const p_none[] = {NULL};
	static const char *const p_one[] = {"other", NULL};
	const char *const *params = p_none;
	switch (id) {
	case T_divisibleby: case T_sameas: case T_in: case T_eq: case T_eq2:
	case T_equalto: case T_ne: case T_ne2: case T_gt: case T_gt2: case T_greaterthan: case T_ge: case T_ge2:
	case T_lt: case T_lt2: case T_lessthan: case T_le: case T_le2:
		params = p_one;
		break;
	default:
		break;
	}
	char what[64];
	snprintf(what, sizeof what, "test '%s'", name);
	if ((rc = bind(r, what, params, args, nargs, kwn, kwv, nkw, &b)))
		return rc;
	if (params == p_one && !b.given[0])
		return rerr(r, INFERD_EINVAL, "TypeError: test '%s' needs an argument", name);
	struct val *o = &b.v[0];
	int64_t m;
	switch (id) {
	case T_odd:
	case T_even:
		if (v->t == V_STR) {  /* value % 2 == 1 formats a string, which never equals an int */
			struct val two = v_int(2), res;
			if ((rc = py_percent_format(r, v, &two, &res)))
				return rc;
			*out = false;
			return 0;
		}
		if ((rc = int_mod(r, v, 2, &m)))
			return rc;
		*out = id == T_odd ? m == 1 : m == 0;
		return 0;
	case T_divisibleby: {
		int64_t d;
		if (v->t == V_STR) {
			struct val res;
			if ((rc = py_percent_format(r, v, o, &res)))
				return rc;
			*out = false;
			return 0;
		}
		if ((rc = want_int(r, o, "divisibleby argument", &d)) || (rc = int_mod(r, v, d, &m)))
			return rc;
		*out = m == 0;
		return 0;
	}
	case T_defined: *out = v->t != V_UNDEF; return 0;
	case T_undefined: *out = v->t == V_UNDEF; return 0;
	case T_filter: *out = v->t == V_STR && filter_id(v->s, v->n) >= 0; return 0;
	case T_test: *out = v->t == V_STR && test_id(v->s, v->n) >= 0; return 0;
	case T_none: *out = v->t == V_NONE; return 0;
	case T_boolean: *out = v->t == V_BOOL; return 0;
	case T_false: *out = v->t == V_BOOL && !v->b; return 0;
	case T_true: *out = v->t == V_BOOL && v->b; return 0;
	case T_integer: *out = v->t == V_INT; return 0;
	case T_float: *out = v->t == V_FLOAT; return 0;
	case T_lower:
	case T_upper: {
		struct val s;
		if ((rc = v_str(r, v, &s)))
			return rc;
		*out = str_case_test(&s, id == T_lower);
		return 0;
	}
	case T_string: *out = v->t == V_STR; return 0;
	case T_mapping: *out = v->t == V_DICT; return 0;
	case T_number: *out = v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; return 0;
	case T_sequence:
		*out = v->t == V_STR || v->t == V_UNDEF || v->t == V_DICT ||
		       (v->t == V_LIST && (v->sub == LK_LIST || v->sub == LK_TUPLE || v->sub == LK_RANGE));
		return 0;
	case T_iterable:
		*out = v->t == V_STR || v->t == V_UNDEF || v->t == V_DICT || v->t == V_LIST || v->t == V_ITER || v->t == V_LOOP;
		return 0;
	case T_callable: *out = v->t == V_FUNC || v->t == V_LOOP || v->t == V_UNDEF; return 0;
	case T_sameas:
		if (v->t != o->t) {
			*out = false;
		} else {
			switch (v->t) {
			case V_NONE: *out = true; break;
			case V_UNDEF: *out = v->taint == o->taint && v->s == o->s && v->m == o->m; break;
			case V_BOOL: *out = v->b == o->b; break;
			case V_INT: *out = v->i == o->i && v->i >= -5 && v->i <= 256; break;
			case V_STR: *out = v->s == o->s && v->n == o->n; break;
			case V_LIST: *out = v->l == o->l; break;
			case V_DICT: *out = v->d == o->d; break;
			case V_NS: *out = v->ns == o->ns; break;
			case V_FUNC: *out = v->fn == o->fn; break;
			default: *out = false; break;
			}
		}
		return 0;
	case T_escaped: *out = is_markup(v); return 0;
	case T_in: return v_contains(r, o, v, out);
	case T_eq: case T_eq2: case T_equalto: return v_cmp(r, v, o, C_EQ, out);
	case T_ne: case T_ne2: return v_cmp(r, v, o, C_NE, out);
	case T_gt: case T_gt2: case T_greaterthan: return v_cmp(r, v, o, C_GT, out);
	case T_ge: case T_ge2: return v_cmp(r, v, o, C_GE, out);
	case T_lt: case T_lt2: case T_lessthan: return v_cmp(r, v, o, C_LT, out);
	case T_le: case T_le2: return v_cmp(r, v, o, C_LE, out);
	default:
		return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No test named '%s'.", name);
	}
}

/* call a test named by a value (select/reject): name plus extra args */
static int call_test_named(struct rctx *r, const struct val *name, struct val *item, struct val *args, int nargs,
			   const char **kwn, struct val *kwv, int nkw, bool *out)
{
	if (name->t != V_STR)
		return rerr(r, INFERD_EINVAL, "TypeError: a test name must be a string");
	int id = test_id(name->s, name->n);
	char nm[64];
	snprintf(nm, sizeof nm, "%.*s", (int)(name->n < 60 ? name->n : 60), name->s);
	if (id < 0)
		return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No test named '%s'.", nm);
	return apply_test(r, id, nm, item, args, nargs, kwn, kwv, nkw, out);
}

/* ---------------------------------------------------------------- filters */

static int unsupported_filter(struct rctx *r, const char *name)
{
	return rerr(r, INFERD_EUNSUPPORTED, "the '%s' filter is not supported by inferd's template engine", name);
}

/* select / reject / selectattr / rejectattr */
static int select_reject(struct rctx *r, struct val *v, struct val *args, int nargs, const char **kwn, struct val *kwv,
			 int nkw, bool reject, bool attr, struct val *out)
{
	struct val *items = NULL;
	size_t n = 0;
	int rc;
	struct val *kept = NULL;
	size_t k = 0;
	if (v_truthy(v) || v->t == V_ITER) {
		if ((rc = v_iterate(r, v, &items, &n)))
			return rc;
		struct getter g = {0};
		int off = 0;
		if (attr) {
			if (nargs < 1)
				return rerr(r, INFERD_EINVAL, "FilterArgumentError: Missing parameter for attribute name");
			if ((rc = make_getter(r, &args[0], false, &g)))
				return rc;
			off = 1;
		}
		kept = n ? ralloc(r, n * sizeof *kept) : NULL;
		if (n && !kept)
			return room(r);
		for (size_t i = 0; i < n; i++) {
			struct val x = items[i];
			if (attr && (rc = get_by(r, &g, &items[i], &x)))
				return rc;
			bool t;
			if (nargs > off) {
				if ((rc = call_test_named(r, &args[off], &x, args + off + 1, nargs - off - 1, kwn, kwv, nkw, &t)))
					return rc;
			} else {
				t = v_truthy(&x);
			}
			if (t != reject)
				kept[k++] = items[i];
		}
	}
	return mk_iter(r, kept, k, IK_GENERATOR, out);
}

static int f_map(struct rctx *r, struct val *v, struct val *args, int nargs, const char **kwn, struct val *kwv, int nkw,
		 struct val *out)
{
	struct val *items;
	size_t n;
	if (!v_truthy(v) && v->t != V_ITER)
		return mk_iter(r, NULL, 0, IK_GENERATOR, out);  /* `if value:` guards the generator */
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	struct val *res = n ? ralloc(r, n * sizeof *res) : NULL;
	if (n && !res)
		return room(r);
	if (nargs == 0) {
		/* map(attribute='x', default=...) */
		struct val attr = v_none(), dflt = v_none();
		bool has_attr = false;
		for (int i = 0; i < nkw; i++) {
			if (!strcmp(kwn[i], "attribute")) {
				attr = kwv[i];
				has_attr = true;
			} else if (!strcmp(kwn[i], "default")) {
				dflt = kwv[i];
			} else {
				return rerr(r, INFERD_EINVAL, "FilterArgumentError: Unexpected keyword argument '%s'", kwn[i]);
			}
		}
		if (!has_attr)
			return rerr(r, INFERD_EINVAL, "FilterArgumentError: map requires a filter argument");
		struct getter g;
		if ((rc = make_getter(r, &attr, false, &g)))
			return rc;
		if (dflt.t != V_NONE) {
			g.dflt = dflt;
			g.has_dflt = true;
		}
		for (size_t i = 0; i < n; i++)
			if ((rc = get_by(r, &g, &items[i], &res[i])))
				return rc;
		return mk_iter(r, res, n, IK_GENERATOR, out);
	}
	if (args[0].t != V_STR)
		return rerr(r, INFERD_EINVAL, "TypeError: map's first argument must be a filter name");
	int id = filter_id(args[0].s, args[0].n);
	char nm[64];
	snprintf(nm, sizeof nm, "%.*s", (int)(args[0].n < 60 ? args[0].n : 60), args[0].s);
	if (id < 0)
		return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No filter named '%s'.", nm);
	for (size_t i = 0; i < n; i++)
		if ((rc = apply_filter(r, id, nm, &items[i], args + 1, nargs - 1, kwn, kwv, nkw, &res[i])))
			return rc;
	return mk_iter(r, res, n, IK_GENERATOR, out);
}

static int f_join(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val d = v_strc("", 0), ds;
	int rc;
	if (b->given[0])
		d = b->v[0];
	if ((rc = v_str(r, &d, &ds)))
		return rc;
	struct val *items;
	size_t n;
	if ((rc = v_iterate(r, v, &items, &n)))
		return rc;
	struct getter g = {0};
	bool use_attr = b_has(b, 1);
	if (use_attr && (rc = make_getter(r, &b->v[1], false, &g)))
		return rc;
	struct sbuf sb;
	sb_init(&sb);
	for (size_t i = 0; i < n; i++) {
		struct val x = items[i];
		if (use_attr && (rc = get_by(r, &g, &items[i], &x))) {
			sb_free(&sb);
			return rc;
		}
		if (i)
			sb_putv(&sb, &ds);
		if ((rc = v_write_str(r, &sb, &x))) {
			sb_free(&sb);
			return rc;
		}
	}
	return new_str(r, &sb, 0, out);
}

static int f_tojson(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	/* transformers: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
	struct json_opts o = {0};
	o.ensure_ascii = b_bool(b, 0, false);
	o.sort_keys = b_bool(b, 3, false);
	char spaces[64];
	int rc;
	if (b_has(b, 1)) {
		const struct val *ind = &b->v[1];
		o.has_indent = true;
		if (ind->t == V_STR) {
			o.indent = ind->s;
			o.indent_n = ind->n;
		} else {
			int64_t k;
			if ((rc = want_int(r, ind, "indent", &k)))
				return rc;
			if (k > (int64_t)sizeof spaces)
				k = sizeof spaces;
			if (k < 0)
				k = 0;
			memset(spaces, ' ', (size_t)k);
			o.indent = spaces;
			o.indent_n = (size_t)k;
		}
	}
	if (b_has(b, 2)) {
		const struct val *sep = &b->v[2];
		if (sep->t != V_LIST || sep->l->n != 2 || sep->l->v[0].t != V_STR || sep->l->v[1].t != V_STR)
			return rerr(r, INFERD_EINVAL, "TypeError: tojson separators must be a pair of strings");
		o.item_sep = sep->l->v[0].s;
		o.item_sep_n = sep->l->v[0].n;
		o.key_sep = sep->l->v[1].s;
		o.key_sep_n = sep->l->v[1].n;
	} else {
		o.item_sep = o.has_indent ? "," : ", ";
		o.item_sep_n = strlen(o.item_sep);
		o.key_sep = ": ";
		o.key_sep_n = 2;
	}
	struct sbuf sb;
	sb_init(&sb);
	if ((rc = v_write_json(r, &sb, v, &o, 0))) {
		sb_free(&sb);
		return rc;
	}
	rc = new_str(r, &sb, 0, out);
	if (!rc)
		*out = str_retaint(*out, v_any_taint(v, 0));
	return rc;
}

static int f_indent(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val s = *v, ind;
	int rc;
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	if (v->t != V_STR)  /* `s += newline` on the value itself */
		return rerr(r, INFERD_EINVAL, "TypeError: unsupported operand type(s) for +=: '%s' and 'str'", v_typename(v));
	char spaces[256];
	if (b->given[0] && b->v[0].t == V_STR) {
		ind = b->v[0];
	} else {
		int64_t w;
		if ((rc = b_int(r, b, 0, 4, "indent width", &w)))
			return rc;
		if (w < 0)
			w = 0;
		if (w > (int64_t)sizeof spaces)
			w = sizeof spaces;
		memset(spaces, ' ', (size_t)w);
		ind = v_strc(spaces, (size_t)w);
	}
	bool first = b_bool(b, 1, false), blank = b_bool(b, 2, false);
	/* s += "\n"; lines = s.splitlines() */
	struct val lines;
	struct sbuf tmp;
	sb_init(&tmp);
	sb_putv(&tmp, &s);
	sb_putc(&tmp, '\n');
	struct val s2;
	if ((rc = new_str(r, &tmp, 0, &s2)) || (rc = do_splitlines(r, &s2, false, &lines)))
		return rc;
	struct sbuf sb;
	sb_init(&sb);
	if (first)
		sb_putv(&sb, &ind);
	for (size_t i = 0; i < lines.l->n; i++) {
		const struct val *ln = &lines.l->v[i];
		if (i)
			sb_putc(&sb, '\n');
		if (i && (blank || ln->n))
			sb_putv(&sb, &ind);
		sb_putv(&sb, ln);
	}
	rc = new_str(r, &sb, s.sub, out);
	if (!rc && s.taint != TN_CLEAN)
		*out = str_retaint(*out, true);
	return rc;
}

static int f_truncate(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val s = *v;
	int rc;
	int64_t length, leeway;
	if ((rc = b_int(r, b, 0, 255, "length", &length)) || (rc = b_int(r, b, 3, 5, "leeway", &leeway)))
		return rc;
	if (v->t != V_STR) {
		/* Jinja takes len(s) and slices s itself */
		int64_t len;
		if ((rc = v_len(r, v, &len)))
			return rc;
		if (len <= length + leeway) {
			*out = *v;
			return 0;
		}
		return rerr(r, INFERD_EINVAL, "TypeError: truncate of a long %s is not supported (only strings)", v_typename(v));
	}
	bool killwords = b_bool(b, 1, false);
	struct val end = b->given[2] ? b->v[2] : v_strc("...", 3);
	if ((rc = want_str(r, &end, "end")))
		return rc;
	int64_t len = (int64_t)u8_len(s.s, s.n), elen = (int64_t)u8_len(end.s, end.n);
	if (length < elen)
		return rerr(r, INFERD_EINVAL, "AssertionError: expected length >= %lld, got %lld", (long long)elen, (long long)length);
	if (len <= length + leeway) {
		*out = s;
		return 0;
	}
	size_t cut = u8_off(s.s, s.n, length - elen);
	struct val head;
	str_sub(r, &s, 0, cut, &head);
	if (!killwords) {
		size_t at;
		struct val sp = v_strc(" ", 1);
		if (rfind_sub(&head, &sp, 0, head.n, &at))
			str_sub(r, &head, 0, at, &head);
	}
	struct sbuf sb;
	sb_init(&sb);
	sb_putv(&sb, &head);
	sb_putv(&sb, &end);
	return new_str(r, &sb, 0, out);
}

static int f_round(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	int64_t prec;
	int rc = b_int(r, b, 0, 0, "precision", &prec);
	if (rc)
		return rc;
	const char *method = "common";
	if (b->given[1]) {
		if ((rc = want_str(r, &b->v[1], "method")))
			return rc;
		method = b->v[1].n == 4 && !memcmp(b->v[1].s, "ceil", 4) ? "ceil"
			 : b->v[1].n == 5 && !memcmp(b->v[1].s, "floor", 5) ? "floor"
			 : b->v[1].n == 6 && !memcmp(b->v[1].s, "common", 6) ? "common" : NULL;
		if (!method)
			return rerr(r, INFERD_EINVAL, "FilterArgumentError: method must be common, ceil or floor");
	}
	if (v->t != V_INT && v->t != V_FLOAT && v->t != V_BOOL) {
		if (v->t == V_UNDEF)
			return undef_fail(r, v);
		return rerr(r, INFERD_EINVAL, "TypeError: type %s doesn't define __round__ method", v_typename(v));
	}
	if (!strcmp(method, "common")) {
		if (v->t != V_FLOAT) {
			int64_t x = v->t == V_INT ? v->i : v->b;
			if (prec < 0) {
				/* round half to even to a multiple of 10**-prec */
				if (prec < -18) {
					*out = v_int(0);
					return 0;
				}
				int64_t p = 1;
				for (int64_t k = 0; k < -prec; k++)
					p *= 10;
				int64_t q = x / p, rem = x % p;
				if (rem < 0) {
					rem += p;
					q--;
				}
				if (rem * 2 > p || (rem * 2 == p && (q & 1)))
					q++;
				if (__builtin_mul_overflow(q, p, &x))
					return rerr(r, INFERD_ERANGE, "integer overflow");
			}
			*out = v_int(x);
			return 0;
		}
		if (prec > 300 || isnan(v->f) || isinf(v->f)) {
			*out = *v;
			return 0;
		}
		if (prec >= 0) {
			char tmp[512];
			snprintf(tmp, sizeof tmp, "%.*f", (int)prec, v->f);
			*out = v_float(strtod(tmp, NULL));
		} else {
			double p = pow(10.0, (double)-prec);
			double q = v->f / p, fl = floor(q), d = q - fl;
			double rq = d > 0.5 ? fl + 1 : d < 0.5 ? fl : (fmod(fl, 2) == 0 ? fl : fl + 1);
			*out = v_float(rq * p);
		}
		return 0;
	}
	double p = pow(10.0, (double)prec), x = v->t == V_FLOAT ? v->f : (double)(v->t == V_INT ? v->i : v->b);
	*out = v_float((method[0] == 'c' ? ceil(x * p) : floor(x * p)) / p);
	return 0;
}

/* Python's int(str, base) */
static bool parse_pyint(const struct val *s, int base, int64_t *out)
{
	size_t i = 0, n = s->n;
	while (i < n && py_isspace((unsigned char)s->s[i]))
		i++;
	while (n > i && py_isspace((unsigned char)s->s[n - 1]))
		n--;
	bool neg = false;
	if (i < n && (s->s[i] == '+' || s->s[i] == '-'))
		neg = s->s[i++] == '-';
	if (i + 1 < n && s->s[i] == '0') {
		char x = s->s[i + 1];
		int pb = (x == 'x' || x == 'X') ? 16 : (x == 'o' || x == 'O') ? 8 : (x == 'b' || x == 'B') ? 2 : 0;
		if (pb && (base == pb || base == 0)) {
			base = pb;
			i += 2;
			if (i < n && s->s[i] == '_')
				i++;
		}
	}
	if (base == 0)
		base = 10;
	if (i >= n)
		return false;
	uint64_t v = 0;
	bool prev_us = true;
	for (; i < n; i++) {
		char c = s->s[i];
		if (c == '_') {
			if (prev_us)
				return false;
			prev_us = true;
			continue;
		}
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'z' ? c - 'a' + 10 : c >= 'A' && c <= 'Z' ? c - 'A' + 10 : 99;
		if (d >= base)
			return false;
		if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + (uint64_t)d;
		prev_us = false;
	}
	if (prev_us || v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

/* Python's float(str) */
static bool parse_pyfloat(const struct val *s, double *out)
{
	size_t i = 0, n = s->n;
	while (i < n && py_isspace((unsigned char)s->s[i]))
		i++;
	while (n > i && py_isspace((unsigned char)s->s[n - 1]))
		n--;
	if (i >= n || n - i > 300)
		return false;
	char buf[320];
	size_t k = 0;
	for (size_t j = i; j < n; j++) {
		char c = s->s[j];
		if (c == '_') {
			if (j == i || j + 1 >= n || !(s->s[j - 1] >= '0' && s->s[j - 1] <= '9') || !(s->s[j + 1] >= '0' && s->s[j + 1] <= '9'))
				return false;
			continue;
		}
		if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' ||
		      (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
		buf[k++] = c;
	}
	buf[k] = 0;
	/* only decimal, inf, infinity, nan (strtod also takes hex; Python does not) */
	const char *p = buf + (buf[0] == '+' || buf[0] == '-');
	bool special = !strcasecmp(p, "inf") || !strcasecmp(p, "infinity") || !strcasecmp(p, "nan");
	if (!special) {
		for (const char *q = p; *q; q++)
			if ((*q >= 'a' && *q <= 'z' && *q != 'e') || (*q >= 'A' && *q <= 'Z' && *q != 'E'))
				return false;
	}
	char *end;
	double d = strtod(buf, &end);
	if (*end || end == buf)
		return false;
	*out = d;
	return true;
}

static int f_int(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	int64_t base;
	int rc = b_int(r, b, 1, 10, "base", &base);
	if (rc)
		return rc;
	struct val d = b->given[0] ? b->v[0] : v_int(0);
	switch (v->t) {
	case V_UNDEF:
		return undef_fail(r, v);  /* int(Undefined) raises UndefinedError, which int() does not catch */
	case V_INT: *out = *v; return 0;
	case V_BOOL: *out = v_int(v->b); return 0;
	case V_FLOAT:
		if (isnan(v->f)) {
			*out = d;
			return 0;
		}
		if (isinf(v->f) || fabs(v->f) >= 9.2e18)
			return rerr(r, INFERD_ERANGE, "OverflowError: cannot convert float to a 64-bit integer");
		*out = v_int((int64_t)v->f);
		return 0;
	case V_STR: {
		int64_t x;
		if (parse_pyint(v, (int)base, &x)) {
			*out = v_int(x);
			return 0;
		}
		double f;
		if (parse_pyfloat(v, &f) && !isnan(f)) {
			if (isinf(f) || fabs(f) >= 9.2e18)
				return rerr(r, INFERD_ERANGE, "OverflowError: cannot convert float to a 64-bit integer");
			*out = v_int((int64_t)f);
			return 0;
		}
		*out = d;
		return 0;
	}
	default:
		*out = d;
		return 0;
	}
}

static int f_float(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	(void)r;
	struct val d = b->given[0] ? b->v[0] : v_float(0.0);
	double f;
	switch (v->t) {
	case V_UNDEF:
		return undef_fail(r, v);
	case V_INT: *out = v_float((double)v->i); return 0;
	case V_BOOL: *out = v_float(v->b); return 0;
	case V_FLOAT: *out = *v; return 0;
	case V_STR:
		*out = parse_pyfloat(v, &f) ? v_float(f) : d;
		return 0;
	default:
		*out = d;
		return 0;
	}
}

static int f_minmax(struct rctx *r, struct val *v, struct bound *b, bool is_max, struct val *out)
{
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	if (n == 0)
		return v_undef_hint(r, "No aggregated item, sequence was empty.", false, out);
	struct getter g;
	if ((rc = make_getter(r, b_has(b, 1) ? &b->v[1] : NULL, !b_bool(b, 0, false), &g)))
		return rc;
	size_t best = 0;
	struct val bk;
	if ((rc = get_by(r, &g, &items[0], &bk)))
		return rc;
	for (size_t i = 1; i < n; i++) {
		struct val k;
		int c;
		if ((rc = get_by(r, &g, &items[i], &k)) || (rc = v_order(r, &k, &bk, &c)))
			return rc;
		if (is_max ? c > 0 : c < 0) {
			best = i;
			bk = k;
		}
	}
	*out = items[best];
	return 0;
}

static int f_sort(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	bool reverse = b_bool(b, 0, false), cs = b_bool(b, 1, false);
	struct val *keys = n ? ralloc(r, n * sizeof *keys) : NULL;
	if (n && !keys)
		return room(r);
	/* attribute may be "a,b": a list of keys per item */
	struct val attr = b_has(b, 2) ? b->v[2] : v_none();
	int nattr = 1;
	struct getter gs[8];
	if (attr.t == V_STR) {
		size_t st = 0;
		nattr = 0;
		for (size_t i = 0; i <= attr.n && nattr < 8; i++)
			if (i == attr.n || attr.s[i] == ',') {
				struct val part = v_strc(attr.s + st, i - st);
				if ((rc = make_getter(r, &part, !cs, &gs[nattr++])))
					return rc;
				st = i + 1;
			}
	} else if ((rc = make_getter(r, attr.t == V_NONE ? NULL : &attr, !cs, &gs[0]))) {
		return rc;
	}
	/* keys are lists, as make_multi_attrgetter builds them: equal elements
	 * (Undefined == Undefined) compare without ordering them */
	for (size_t i = 0; i < n; i++) {
		if ((rc = v_newlist(r, (size_t)nattr, LK_LIST, &keys[i])))
			return rc;
		for (int k = 0; k < nattr; k++)
			if ((rc = get_by(r, &gs[k], &items[i], &keys[i].l->v[keys[i].l->n++])))
				return rc;
	}
	return sort_items(r, items, n, keys, reverse, out);
}

static int f_dictsort(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	if (v->t != V_DICT) {
		if (v->t == V_UNDEF)
			return undef_fail(r, v);
		return rerr(r, INFERD_EINVAL, "AttributeError: '%s' object has no attribute 'items'", v_typename(v));
	}
	bool cs = b_bool(b, 0, false), reverse = b_bool(b, 2, false);
	int pos = 0;
	if (b->given[1]) {
		const struct val *by = &b->v[1];
		if (by->t == V_STR && by->n == 5 && !memcmp(by->s, "value", 5))
			pos = 1;
		else if (!(by->t == V_STR && by->n == 3 && !memcmp(by->s, "key", 3)))
			return rerr(r, INFERD_EINVAL, "FilterArgumentError: You can only sort by either \"key\" or \"value\"");
	}
	size_t n = v->d->n;
	struct val *items = n ? ralloc(r, n * sizeof *items) : NULL, *keys = n ? ralloc(r, n * sizeof *keys) : NULL;
	if (n && (!items || !keys))
		return room(r);
	int rc;
	for (size_t i = 0; i < n; i++) {
		if ((rc = mk_tuple2(r, v->d->k[i], v->d->v[i], &items[i])))
			return rc;
		keys[i] = pos ? v->d->v[i] : v->d->k[i];
		if (!cs && keys[i].t == V_STR && (rc = case_map(r, &keys[i], CM_LOWER, &keys[i])))
			return rc;
	}
	return sort_items(r, items, n, keys, reverse, out);
}

static int f_unique(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	struct getter g;
	if ((rc = make_getter(r, b_has(b, 1) ? &b->v[1] : NULL, !b_bool(b, 0, false), &g)))
		return rc;
	struct val seen;
	if ((rc = v_newdict(r, &seen)))
		return rc;
	struct val *kept = n ? ralloc(r, n * sizeof *kept) : NULL;
	if (n && !kept)
		return room(r);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct val key, tmp;
		uint64_t h;
		if ((rc = get_by(r, &g, &items[i], &key)))
			return rc;
		if (v_hash(&key, &h))
			return rerr(r, INFERD_EINVAL, "TypeError: unhashable type: '%s'", v_typename(&key));
		if (dict_get(seen.d, &key, &tmp))
			continue;
		if ((rc = dict_set(r, seen.d, key, v_none())))
			return rc;
		kept[k++] = items[i];
	}
	return mk_iter(r, kept, k, IK_GENERATOR, out);
}

static int f_groupby(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	if (!b->given[0])
		return rerr(r, INFERD_EINVAL, "TypeError: groupby needs an attribute");
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	bool cs = b_bool(b, 2, false);
	struct getter g, go;
	if ((rc = make_getter(r, &b->v[0], !cs, &g)) || (rc = make_getter(r, &b->v[0], false, &go)))
		return rc;
	if (b_has(b, 1)) {
		g.dflt = go.dflt = b->v[1];
		g.has_dflt = go.has_dflt = true;
	}
	struct val *keys = n ? ralloc(r, n * sizeof *keys) : NULL;
	if (n && !keys)
		return room(r);
	for (size_t i = 0; i < n; i++)
		if ((rc = get_by(r, &g, &items[i], &keys[i])))
			return rc;
	struct val sorted;
	if ((rc = sort_items(r, items, n, keys, false, &sorted)))
		return rc;
	if ((rc = v_newlist(r, 0, LK_LIST, out)))
		return rc;
	struct val cur_key = v_undef(), grp = v_undef();
	for (size_t i = 0; i < n; i++) {
		struct val k;
		bool eq = false;
		if ((rc = get_by(r, &g, &sorted.l->v[i], &k)))
			return rc;
		if (grp.t == V_LIST && (rc = v_eq(r, &k, &cur_key, &eq)))
			return rc;
		if (grp.t != V_LIST || !eq) {
			struct val tk, tup;
			if ((rc = v_newlist(r, 0, LK_LIST, &grp)) || (rc = get_by(r, &go, &sorted.l->v[i], &tk)) ||
			    (rc = mk_tuple2(r, cs ? k : tk, grp, &tup)))
				return rc;
			tup.l->group = true;  /* a _GroupTuple: .grouper, .list */
			if ((rc = list_push(r, out->l, tup)))
				return rc;
			cur_key = k;
		}
		if ((rc = list_push(r, grp.l, sorted.l->v[i])))
			return rc;
	}
	return 0;
}

static int f_batch_slice(struct rctx *r, struct val *v, struct bound *b, bool is_slice, struct val *out)
{
	struct val *items;
	size_t n;
	int64_t cnt;
	int rc = v_iterate(r, v, &items, &n);
	if (rc || (rc = want_int(r, &b->v[0], is_slice ? "slices" : "linecount", &cnt)))
		return rc;
	if (cnt <= 0)
		return rerr(r, INFERD_EINVAL, "ValueError: %s must be positive", is_slice ? "slices" : "linecount");
	bool fill = b_has(b, 1);
	struct val res;
	if ((rc = v_newlist(r, 0, LK_LIST, &res)))
		return rc;
	if (!is_slice) {
		for (size_t i = 0; i < n; i += (size_t)cnt) {
			struct val chunk;
			size_t m = n - i < (size_t)cnt ? n - i : (size_t)cnt;
			if ((rc = v_newlist(r, (size_t)cnt, LK_LIST, &chunk)))
				return rc;
			for (size_t j = 0; j < m; j++)
				chunk.l->v[chunk.l->n++] = items[i + j];
			if (fill)
				while ((int64_t)chunk.l->n < cnt)
					chunk.l->v[chunk.l->n++] = b->v[1];
			if ((rc = list_push(r, res.l, chunk)))
				return rc;
		}
	} else {
		if (cnt > 100000)
			return rerr(r, INFERD_ERANGE, "slice count too large");
		size_t per = n / (size_t)cnt, extra = n % (size_t)cnt, off = 0;
		for (size_t s = 0; s < (size_t)cnt; s++) {
			size_t start = off + s * per;
			if (s < extra)
				off++;
			size_t end = off + (s + 1) * per;
			struct val chunk;
			if ((rc = v_newlist(r, end - start + 1, LK_LIST, &chunk)))
				return rc;
			for (size_t j = start; j < end; j++)
				chunk.l->v[chunk.l->n++] = items[j];
			if (fill && s >= extra)
				chunk.l->v[chunk.l->n++] = b->v[1];
			if ((rc = list_push(r, res.l, chunk)))
				return rc;
		}
	}
	return mk_iter(r, res.l->v, res.l->n, IK_GENERATOR, out);
}

static int f_first_last(struct rctx *r, struct val *v, bool last, struct val *out)
{
	if (last && v->t == V_ITER)
		return rerr(r, INFERD_EINVAL, "TypeError: '%s' object is not reversible", v_typename(v));
	if (v->t == V_ITER && !last) {
		if (v->it->pos < v->it->n) {
			*out = v->it->v[v->it->pos++];
			return 0;
		}
		return v_undef_hint(r, "No first item, sequence was empty.", false, out);
	}
	if (last && v->t != V_LIST && v->t != V_STR && v->t != V_DICT && v->t != V_UNDEF)
		return rerr(r, INFERD_EINVAL, "TypeError: '%s' object is not reversible", v_typename(v));
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	if (n == 0)
		return v_undef_hint(r, last ? "No last item, sequence was empty." : "No first item, sequence was empty.", false, out);
	*out = items[last ? n - 1 : 0];
	return 0;
}

static int f_sum(struct rctx *r, struct val *v, struct bound *b, struct val *out)
{
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	struct getter g;
	if ((rc = make_getter(r, b_has(b, 0) ? &b->v[0] : NULL, false, &g)))
		return rc;
	struct val acc = b->given[1] ? b->v[1] : v_int(0);
	for (size_t i = 0; i < n; i++) {
		struct val x;
		if ((rc = get_by(r, &g, &items[i], &x)) || (rc = binop(r, B_ADD, &acc, &x, &acc)))
			return rc;
	}
	*out = acc;
	return 0;
}

static int f_reverse(struct rctx *r, struct val *v, struct val *out)
{
	if (v->t == V_STR) {
		struct sbuf sb;
		sb_init(&sb);
		size_t e = v->n;
		while (e > 0) {
			size_t st = e - 1;
			while (st > 0 && ((unsigned char)v->s[st] & 0xC0) == 0x80)
				st--;
			sb_putv_range(&sb, v, st, e - st);
			e = st;
		}
		return new_str(r, &sb, v->sub, out);
	}
	struct val *items;
	size_t n;
	bool to_list = v->t == V_ITER;
	if (v->t != V_LIST && v->t != V_DICT && v->t != V_UNDEF && v->t != V_ITER)
		return rerr(r, INFERD_EINVAL, "FilterArgumentError: argument must be iterable");
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	struct val *rev = n ? ralloc(r, n * sizeof *rev) : NULL;
	if (n && !rev)
		return room(r);
	for (size_t i = 0; i < n; i++)
		rev[i] = items[n - 1 - i];
	if (to_list) {
		if ((rc = v_newlist(r, n, LK_LIST, out)))
			return rc;
		if (n)
			memcpy(out->l->v, rev, n * sizeof *rev);
		out->l->n = n;
		return 0;
	}
	return mk_iter(r, rev, n, IK_REVERSED, out);
}

static int f_items(struct rctx *r, struct val *v, struct val *out)
{
	if (v->t == V_UNDEF)
		return mk_iter(r, NULL, 0, IK_GENERATOR, out);
	if (v->t != V_DICT)
		return rerr(r, INFERD_EINVAL, "TypeError: Can only get item pairs from a mapping.");
	size_t n = v->d->n;
	struct val *t = n ? ralloc(r, n * sizeof *t) : NULL;
	if (n && !t)
		return room(r);
	for (size_t i = 0; i < n; i++) {
		int rc = mk_tuple2(r, v->d->k[i], v->d->v[i], &t[i]);
		if (rc)
			return rc;
	}
	return mk_iter(r, t, n, IK_GENERATOR, out);
}

static int f_wordcount(struct rctx *r, struct val *v, struct val *out)
{
	struct val s;
	int rc = soft_str(r, v, &s);
	if (rc)
		return rc;
	int64_t words = 0;
	bool in = false;
	for (size_t i = 0; i < s.n;) {
		size_t adv;
		uint32_t c = u8_dec(s.s + i, s.n - i, &adv);
		bool w = py_isalnum(c) || c == '_';
		if (w && !in)
			words++;
		in = w;
		i += adv;
	}
	*out = v_int(words);
	return 0;
}

static const char *const P0[] = {NULL};

/* a copy of v with every dict's items in sorted key order (pprint) */
static int sort_dicts(struct rctx *r, const struct val *v, struct val *out, int depth)
{
	int rc;
	if (depth > 100)
		return rerr(r, INFERD_ERANGE, "RecursionError: value nested too deeply to print");
	if (v->t == V_LIST && (v->sub == LK_LIST || v->sub == LK_TUPLE)) {
		if ((rc = v_newlist(r, v->l->n, v->sub, out)))
			return rc;
		for (size_t i = 0; i < v->l->n; i++)
			if ((rc = sort_dicts(r, &v->l->v[i], &out->l->v[out->l->n++], depth + 1)))
				return rc;
		return 0;
	}
	if (v->t != V_DICT) {
		*out = *v;
		return 0;
	}
	size_t n = v->d->n;
	struct val keys, sorted;
	if ((rc = v_newlist(r, n, LK_LIST, &keys)))
		return rc;
	for (size_t i = 0; i < n; i++)
		keys.l->v[keys.l->n++] = v->d->k[i];
	if ((rc = sort_items(r, keys.l->v, n, keys.l->v, false, &sorted)) || (rc = v_newdict(r, out)))
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct val x, y;
		dict_get(v->d, &sorted.l->v[i], &x);
		if ((rc = sort_dicts(r, &x, &y, depth + 1)) || (rc = dict_set(r, out->d, sorted.l->v[i], y)))
			return rc;
	}
	return 0;
}

int apply_filter(struct rctx *r, int id, const char *name, struct val *v, struct val *args, int nargs,
		 const char **kwn, struct val *kwv, int nkw, struct val *out)
{
	static const char *const p_default[] = {"default_value", "boolean", NULL};
	static const char *const p_join[] = {"d", "attribute", NULL};
	static const char *const p_tojson[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
	static const char *const p_replace[] = {"old", "new", "count", NULL};
	static const char *const p_trim[] = {"chars", NULL};
	static const char *const p_indent[] = {"width", "first", "blank", NULL};
	static const char *const p_int[] = {"default", "base", NULL};
	static const char *const p_float[] = {"default", NULL};
	static const char *const p_round[] = {"precision", "method", NULL};
	static const char *const p_center[] = {"width", NULL};
	static const char *const p_sort[] = {"reverse", "case_sensitive", "attribute", NULL};
	static const char *const p_dictsort[] = {"case_sensitive", "by", "reverse", NULL};
	static const char *const p_minmax[] = {"case_sensitive", "attribute", NULL};
	static const char *const p_unique[] = {"case_sensitive", "attribute", NULL};
	static const char *const p_sum[] = {"attribute", "start", NULL};
	static const char *const p_batch[] = {"linecount", "fill_with", NULL};
	static const char *const p_slice[] = {"slices", "fill_with", NULL};
	static const char *const p_truncate[] = {"length", "killwords", "end", "leeway", NULL};
	static const char *const p_groupby[] = {"attribute", "default", "case_sensitive", NULL};
	static const char *const p_attr[] = {"name", NULL};
	char what[64];
	snprintf(what, sizeof what, "filter '%s'", name);
	struct bound b;
	int rc;
	struct val s;
#define BIND(p) do { if ((rc = bind(r, what, p, args, nargs, kwn, kwv, nkw, &b))) return rc; } while (0)
	switch (id) {
	case F_abs:
		BIND(P0);
		if (v->t == V_INT) {
			if (v->i == INT64_MIN)
				return rerr(r, INFERD_ERANGE, "integer overflow");
			*out = v_int(v->i < 0 ? -v->i : v->i);
		} else if (v->t == V_BOOL) {
			*out = v_int(v->b);
		} else if (v->t == V_FLOAT) {
			*out = v_float(fabs(v->f));
		} else if (v->t == V_UNDEF) {
			return undef_fail(r, v);
		} else {
			return rerr(r, INFERD_EINVAL, "TypeError: bad operand type for abs(): '%s'", v_typename(v));
		}
		return 0;
	case F_attr: {
		BIND(p_attr);
		if (!b.given[0] || (rc = want_str(r, &b.v[0], "attribute name")))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: attr needs a name");
		if (v->t == V_UNDEF)  /* hasattr() on an Undefined raises */
			return undef_fail(r, v);
		rc = method_lookup(r, v, b.v[0].s, b.v[0].n, out);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return 0;
		if (v->t == V_NS && dict_get_str(&v->ns->d, b.v[0].s, b.v[0].n, out))
			return 0;
		return v_undef_attr(r, v, b.v[0].s, b.v[0].n, out);
	}
	case F_batch:
		BIND(p_batch);
		if (!b.given[0])
			return rerr(r, INFERD_EINVAL, "TypeError: batch needs a line count");
		return f_batch_slice(r, v, &b, false, out);
	case F_slice:
		BIND(p_slice);
		if (!b.given[0])
			return rerr(r, INFERD_EINVAL, "TypeError: slice needs a count");
		return f_batch_slice(r, v, &b, true, out);
	case F_capitalize:
		BIND(P0);
		if ((rc = soft_str(r, v, &s)))
			return rc;
		return case_map(r, &s, CM_CAPITALIZE, out);
	case F_center: {
		BIND(p_center);
		int64_t w;
		if ((rc = soft_str(r, v, &s)) || (rc = b_int(r, &b, 0, 80, "width", &w)))
			return rc;
		return pad_str(r, &s, w, NULL, 0, out);
	}
	case F_count:
	case F_length: {
		BIND(P0);
		int64_t n;
		if ((rc = v_len(r, v, &n)))
			return rc;
		*out = v_int(n);
		return 0;
	}
	case F_d:
	case F_default:
		BIND(p_default);
		if (v->t == V_UNDEF || (b_bool(&b, 1, false) && !v_truthy(v)))
			*out = b.given[0] ? b.v[0] : v_strc("", 0);
		else
			*out = *v;
		return 0;
	case F_dictsort:
		BIND(p_dictsort);
		return f_dictsort(r, v, &b, out);
	case F_e:
	case F_escape:
		BIND(P0);
		return markup_escape(r, v, out);
	case F_forceescape: {
		BIND(P0);
		struct val plain;
		if ((rc = v_str(r, v, &plain)))
			return rc;
		plain.sub = 0;
		return markup_escape(r, &plain, out);
	}
	case F_first:
		BIND(P0);
		return f_first_last(r, v, false, out);
	case F_last:
		BIND(P0);
		return f_first_last(r, v, true, out);
	case F_float:
		BIND(p_float);
		return f_float(r, v, &b, out);
	case F_format: {
		if (nargs && nkw)
			return rerr(r, INFERD_EINVAL, "FilterArgumentError: can't handle positional and keyword arguments at the same time");
		if ((rc = soft_str(r, v, &s)))
			return rc;
		struct val a;
		if (nkw) {
			if ((rc = v_newdict(r, &a)))
				return rc;
			for (int i = 0; i < nkw; i++)
				if ((rc = dict_set(r, a.d, v_strc(kwn[i], strlen(kwn[i])), kwv[i])))
					return rc;
		} else {
			if ((rc = v_newlist(r, (size_t)nargs, LK_TUPLE, &a)))
				return rc;
			for (int i = 0; i < nargs; i++)
				a.l->v[a.l->n++] = args[i];
		}
		return py_percent_format(r, &s, &a, out);
	}
	case F_groupby:
		BIND(p_groupby);
		return f_groupby(r, v, &b, out);
	case F_indent:
		BIND(p_indent);
		return f_indent(r, v, &b, out);
	case F_int:
		BIND(p_int);
		return f_int(r, v, &b, out);
	case F_join:
		BIND(p_join);
		return f_join(r, v, &b, out);
	case F_list:
		BIND(P0);
		return v_to_list(r, v, out);
	case F_lower:
	case F_upper:
		BIND(P0);
		if ((rc = soft_str(r, v, &s)))
			return rc;
		return case_map(r, &s, id == F_lower ? CM_LOWER : CM_UPPER, out);
	case F_title:
		BIND(P0);
		if ((rc = soft_str(r, v, &s)))
			return rc;
		return case_map(r, &s, CM_TITLE_JINJA, out);
	case F_items:
		BIND(P0);
		return f_items(r, v, out);
	case F_map:
		return f_map(r, v, args, nargs, kwn, kwv, nkw, out);
	case F_min:
	case F_max:
		BIND(p_minmax);
		return f_minmax(r, v, &b, id == F_max, out);
	case F_pprint:
		BIND(P0);
		{
			/* pprint.pformat: dict keys sorted; one line when it fits in 80 columns */
			struct val sorted;
			if ((rc = sort_dicts(r, v, &sorted, 0)))
				return rc;
			struct sbuf sb;
			sb_init(&sb);
			if ((rc = v_write_repr(r, &sb, &sorted, 0))) {
				sb_free(&sb);
				return rc;
			}
			if (u8_len(sb.p ? sb.p : "", sb.n) > 80) {
				sb_free(&sb);
				return rerr(r, INFERD_EUNSUPPORTED, "pprint of a value longer than 80 characters (pprint's line "
					    "wrapping) is not supported by inferd's template engine");
			}
			rc = new_str(r, &sb, 0, out);
			if (!rc)
				*out = str_retaint(*out, v_any_taint(v, 0));
			return rc;
		}
	case F_reject:
	case F_select:
		return select_reject(r, v, args, nargs, kwn, kwv, nkw, id == F_reject, false, out);
	case F_rejectattr:
	case F_selectattr:
		return select_reject(r, v, args, nargs, kwn, kwv, nkw, id == F_rejectattr, true, out);
	case F_replace: {
		BIND(p_replace);
		if (!b.given[0] || !b.given[1])
			return rerr(r, INFERD_EINVAL, "TypeError: replace needs the old and the new string");
		struct val o, n2;
		int64_t cnt = -1;
		if ((rc = v_str(r, v, &s)) || (rc = v_str(r, &b.v[0], &o)) || (rc = v_str(r, &b.v[1], &n2)))
			return rc;
		if (b_has(&b, 2) && (rc = want_int(r, &b.v[2], "count", &cnt)))
			return rc;
		return do_replace(r, &s, &o, &n2, cnt, out);
	}
	case F_reverse:
		BIND(P0);
		return f_reverse(r, v, out);
	case F_round:
		BIND(p_round);
		return f_round(r, v, &b, out);
	case F_safe:
		BIND(P0);
		if ((rc = v_str(r, v, out)))
			return rc;
		out->sub |= SUB_MARKUP;
		return 0;
	case F_sort:
		BIND(p_sort);
		return f_sort(r, v, &b, out);
	case F_string:
		BIND(P0);
		return soft_str(r, v, out);
	case F_sum:
		BIND(p_sum);
		return f_sum(r, v, &b, out);
	case F_tojson:
		BIND(p_tojson);
		return f_tojson(r, v, &b, out);
	case F_trim:
		BIND(p_trim);
		if ((rc = soft_str(r, v, &s)))
			return rc;
		if (b_has(&b, 0) && (rc = want_str(r, &b.v[0], "chars")))
			return rc;
		return do_strip(r, &s, b_has(&b, 0) ? &b.v[0] : NULL, true, true, out);
	case F_truncate:
		BIND(p_truncate);
		return f_truncate(r, v, &b, out);
	case F_unique:
		BIND(p_unique);
		return f_unique(r, v, &b, out);
	case F_wordcount:
		BIND(P0);
		return f_wordcount(r, v, out);
	case F_filesizeformat: case F_random: case F_striptags: case F_urlencode: case F_urlize: case F_wordwrap:
	case F_xmlattr:
		return unsupported_filter(r, name);
	default:
		return rerr(r, INFERD_EINVAL, "TemplateRuntimeError: No filter named '%s'.", name);
	}
#undef BIND
}

/* ---------------------------------------------------------------- methods */

enum {
	/* str */
	M_STRIP, M_LSTRIP, M_RSTRIP, M_SPLIT, M_RSPLIT, M_SPLITLINES, M_STARTSWITH, M_ENDSWITH, M_REPLACE,
	M_UPPER, M_LOWER, M_TITLE, M_CAPITALIZE, M_SWAPCASE, M_CASEFOLD, M_FIND, M_RFIND, M_INDEX, M_RINDEX,
	M_COUNT, M_JOIN, M_FORMAT, M_FORMAT_MAP, M_ISDIGIT, M_ISNUMERIC, M_ISDECIMAL, M_ISALPHA, M_ISALNUM,
	M_ISSPACE, M_ISLOWER, M_ISUPPER, M_ISTITLE, M_ISASCII, M_CENTER, M_LJUST, M_RJUST, M_ZFILL,
	M_PARTITION, M_RPARTITION, M_REMOVEPREFIX, M_REMOVESUFFIX,
	/* dict */
	MD_GET, MD_ITEMS, MD_KEYS, MD_VALUES, MD_COPY,
	/* list / tuple */
	ML_INDEX, ML_COUNT, ML_COPY, ML_POP, ML_CLEAR,
	/* loop */
	MLOOP_CYCLE, MLOOP_CHANGED,
	/* cycler */
	MCYC_NEXT, MCYC_RESET,
	M_UNSAFE
};

struct mdef {
	const char *name;
	int id;
};

static const struct mdef str_methods[] = {
	{"strip", M_STRIP}, {"lstrip", M_LSTRIP}, {"rstrip", M_RSTRIP}, {"split", M_SPLIT}, {"rsplit", M_RSPLIT},
	{"splitlines", M_SPLITLINES}, {"startswith", M_STARTSWITH}, {"endswith", M_ENDSWITH}, {"replace", M_REPLACE},
	{"upper", M_UPPER}, {"lower", M_LOWER}, {"title", M_TITLE}, {"capitalize", M_CAPITALIZE},
	{"swapcase", M_SWAPCASE}, {"casefold", M_CASEFOLD}, {"find", M_FIND}, {"rfind", M_RFIND}, {"index", M_INDEX},
	{"rindex", M_RINDEX}, {"count", M_COUNT}, {"join", M_JOIN}, {"format", M_FORMAT}, {"format_map", M_FORMAT_MAP},
	{"isdigit", M_ISDIGIT}, {"isnumeric", M_ISNUMERIC}, {"isdecimal", M_ISDECIMAL}, {"isalpha", M_ISALPHA},
	{"isalnum", M_ISALNUM}, {"isspace", M_ISSPACE}, {"islower", M_ISLOWER}, {"isupper", M_ISUPPER},
	{"istitle", M_ISTITLE}, {"isascii", M_ISASCII}, {"center", M_CENTER}, {"ljust", M_LJUST}, {"rjust", M_RJUST},
	{"zfill", M_ZFILL}, {"partition", M_PARTITION}, {"rpartition", M_RPARTITION},
	{"removeprefix", M_REMOVEPREFIX}, {"removesuffix", M_REMOVESUFFIX}, {NULL, 0}};
static const struct mdef dict_methods[] = {
	{"get", MD_GET}, {"items", MD_ITEMS}, {"keys", MD_KEYS}, {"values", MD_VALUES}, {"copy", MD_COPY},
	{"pop", M_UNSAFE}, {"popitem", M_UNSAFE}, {"setdefault", M_UNSAFE}, {"update", M_UNSAFE}, {"clear", M_UNSAFE},
	{"fromkeys", M_UNSAFE}, {NULL, 0}};
static const struct mdef list_methods[] = {
	{"index", ML_INDEX}, {"count", ML_COUNT}, {"copy", ML_COPY}, {"pop", ML_POP}, {"clear", ML_CLEAR},
	{"append", M_UNSAFE}, {"extend", M_UNSAFE}, {"insert", M_UNSAFE}, {"remove", M_UNSAFE},
	{"reverse", M_UNSAFE}, {"sort", M_UNSAFE}, {NULL, 0}};
static const struct mdef tuple_methods[] = {{"index", ML_INDEX}, {"count", ML_COUNT}, {NULL, 0}};
static const struct mdef view_methods[] = {{NULL, 0}};

static int table_id(const struct mdef *tab, const char *name, size_t n)
{
	for (int i = 0; tab[i].name; i++)
		if (strlen(tab[i].name) == n && !memcmp(tab[i].name, name, n))
			return tab[i].id;
	return -1;
}

int method_id(const struct val *obj, const char *name, size_t n)
{
	int id = -1;
	switch (obj->t) {
	case V_STR: id = table_id(str_methods, name, n); break;
	case V_DICT: id = table_id(dict_methods, name, n); break;
	case V_LIST:
		if (obj->sub == LK_LIST)
			id = table_id(list_methods, name, n);
		else if (obj->sub == LK_TUPLE || obj->sub == LK_RANGE)
			id = table_id(tuple_methods, name, n);
		break;
	default:
		break;
	}
	return id == M_UNSAFE ? -1 : id;
}

static int bound_method(struct rctx *r, const struct val *obj, int id, const char *name, size_t n, struct val *out)
{
	if (id == M_UNSAFE) {
		char msg[160];
		snprintf(msg, sizeof msg, "access to attribute '%.*s' of '%s' object is unsafe.", (int)(n < 60 ? n : 60), name,
			 v_typename(obj));
		char *h = ralloc(r, strlen(msg) + 1);
		if (!h)
			return room(r);
		strcpy(h, msg);
		int rc = v_undef_hint(r, h, true, out);
		return rc ? rc : 1;
	}
	struct func *f = ralloc(r, sizeof *f);
	if (!f)
		return room(r);
	f->kind = FK_METHOD;
	f->id = id;
	f->self = *obj;
	f->name = name;
	f->name_n = n;
	*out = (struct val){0};
	out->t = V_FUNC;
	out->fn = f;
	return 1;
}

static int lookup_table(struct rctx *r, const struct mdef *tab, const struct val *obj, const char *name, size_t n,
			struct val *out)
{
	for (int i = 0; tab[i].name; i++)
		if (strlen(tab[i].name) == n && !memcmp(tab[i].name, name, n))
			return bound_method(r, obj, tab[i].id, tab[i].name, n, out);
	return 0;
}

static int loop_attr(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out)
{
	const struct loop *lp = obj->lp;
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
	if (IS("index0")) *out = v_int(lp->index0);
	else if (IS("index")) *out = v_int(lp->index0 + 1);
	else if (IS("revindex")) *out = v_int(lp->length - lp->index0);
	else if (IS("revindex0")) *out = v_int(lp->length - lp->index0 - 1);
	else if (IS("first")) *out = v_bool(lp->index0 == 0);
	else if (IS("last")) *out = v_bool(lp->index0 == lp->length - 1);
	else if (IS("length")) *out = v_int(lp->length);
	else if (IS("depth")) *out = v_int(lp->depth0 + 1);
	else if (IS("depth0")) *out = v_int(lp->depth0);
	else if (IS("previtem")) {
		if (lp->index0 > 0)
			*out = lp->items[lp->index0 - 1];
		else
			return v_undef_hint(r, "there is no previous item", false, out) ? -1 : 1;
	} else if (IS("nextitem")) {
		if (lp->index0 + 1 < lp->length)
			*out = lp->items[lp->index0 + 1];
		else
			return v_undef_hint(r, "there is no next item", false, out) ? -1 : 1;
	} else if (IS("cycle")) {
		return bound_method(r, obj, MLOOP_CYCLE, "cycle", 5, out);
	} else if (IS("changed")) {
		return bound_method(r, obj, MLOOP_CHANGED, "changed", 7, out);
	} else {
		return 0;
	}
#undef IS
	return 1;
}

/* 1 = found (a method, or a property value), 0 = no such attribute */
int method_lookup(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out)
{
	if (n >= 2 && name[0] == '_' && name[1] == '_') {
		/* Python objects have dunder attributes; the sandbox refuses them */
		int rc = bound_method(r, obj, M_UNSAFE, name, n, out);
		return rc;
	}
	switch (obj->t) {
	case V_STR: return lookup_table(r, str_methods, obj, name, n, out);
	case V_DICT: return lookup_table(r, dict_methods, obj, name, n, out);
	case V_LIST:
		if (obj->sub == LK_TUPLE && obj->l->group && n == 7 && !memcmp(name, "grouper", 7)) {
			*out = obj->l->v[0];
			return 1;
		}
		if (obj->sub == LK_TUPLE && obj->l->group && n == 4 && !memcmp(name, "list", 4)) {
			*out = obj->l->v[1];
			return 1;
		}
		return lookup_table(r, obj->sub == LK_LIST ? list_methods : (obj->sub == LK_TUPLE || obj->sub == LK_RANGE) ? tuple_methods : view_methods,
				    obj, name, n, out);
	case V_LOOP: return loop_attr(r, obj, name, n, out);
	case V_FUNC:
		if (obj->fn->kind == FK_CYCLER) {
			if (n == 4 && !memcmp(name, "next", 4))
				return bound_method(r, obj, MCYC_NEXT, "next", 4, out);
			if (n == 5 && !memcmp(name, "reset", 5))
				return bound_method(r, obj, MCYC_RESET, "reset", 5, out);
			if (n == 7 && !memcmp(name, "current", 7)) {
				*out = obj->fn->items->v[obj->fn->pos];
				return 1;
			}
			if (n == 5 && !memcmp(name, "items", 5)) {
				*out = (struct val){0};
				out->t = V_LIST;
				out->sub = LK_TUPLE;
				out->l = obj->fn->items;
				return 1;
			}
			return 0;
		}
		if (obj->fn->kind == FK_MACRO && n == 4 && !memcmp(name, "name", 4)) {
			*out = v_strc(obj->fn->name, obj->fn->name_n);
			return 1;
		}
		if ((obj->fn->kind == FK_MACRO || obj->fn->kind == FK_CALLER) && n == 9 && !memcmp(name, "arguments", 9)) {
			const struct node *d = obj->fn->def;
			int rc = v_newlist(r, (size_t)d->np, LK_TUPLE, out);
			if (rc)
				return rc;
			for (int i = 0; i < d->np; i++)
				out->l->v[out->l->n++] = v_strc(d->pnames[i], strlen(d->pnames[i]));
			return 1;
		}
		return 0;
	default:
		return 0;
	}
}

static int str_pred(const struct val *s, int id)
{
	if (s->n == 0)
		return 0;
	bool any_cased = false, prev_cased = false, title_ok = true;
	for (size_t i = 0; i < s->n;) {
		size_t adv;
		uint32_t c = u8_dec(s->s + i, s->n - i, &adv);
		i += adv;
		switch (id) {
		case M_ISDIGIT: case M_ISNUMERIC: case M_ISDECIMAL: if (!py_isdigit(c)) return 0; break;
		case M_ISALPHA: if (!py_isalpha(c)) return 0; break;
		case M_ISALNUM: if (!py_isalnum(c)) return 0; break;
		case M_ISSPACE: if (!py_isspace(c)) return 0; break;
		case M_ISASCII: if (c >= 0x80) return 0; break;
		case M_ISTITLE: {
			bool up = py_lower(c) != c, lo = py_upper(c) != c;
			if (up) {
				if (prev_cased)
					title_ok = false;
				prev_cased = any_cased = true;
			} else if (lo) {
				if (!prev_cased)
					title_ok = false;
				prev_cased = any_cased = true;
			} else {
				prev_cased = false;
			}
			break;
		}
		default: break;
		}
	}
	if (id == M_ISTITLE)
		return title_ok && any_cased;
	return 1;
}

static int arg_str(struct rctx *r, struct bound *b, int i, const char *what, struct val **out)
{
	*out = NULL;
	if (!b_has(b, i))
		return 0;
	int rc = want_str(r, &b->v[i], what);
	if (!rc)
		*out = &b->v[i];
	return rc;
}

static int affix_test(struct rctx *r, const struct val *s, struct bound *b, bool ends, struct val *out)
{
	if (!b->given[0])
		return rerr(r, INFERD_EINVAL, "TypeError: %s takes at least 1 argument", ends ? "endswith" : "startswith");
	size_t bs, be;
	int rc = sub_range(r, s, b->given[1] ? &b->v[1] : NULL, b->given[2] ? &b->v[2] : NULL, &bs, &be);
	if (rc)
		return rc;
	const struct val *p = &b->v[0];
	const struct val *cands = p;
	size_t nc = 1;
	if (p->t == V_LIST && p->sub == LK_TUPLE) {
		cands = p->l->v;
		nc = p->l->n;
	} else if (p->t != V_STR) {
		return rerr(r, INFERD_EINVAL, "TypeError: %s first arg must be str or a tuple of str, not %s",
			    ends ? "endswith" : "startswith", v_typename(p));
	}
	bool hit = false;
	for (size_t i = 0; i < nc && !hit; i++) {
		const struct val *c = &cands[i];
		if (c->t != V_STR)
			return rerr(r, INFERD_EINVAL, "TypeError: tuple for %s must only contain str", ends ? "endswith" : "startswith");
		if (bs > s->n || be < bs || c->n > be - bs)
			continue;
		hit = ends ? !memcmp(s->s + be - c->n, c->s, c->n) : !memcmp(s->s + bs, c->s, c->n);
	}
	*out = v_bool(hit);
	return 0;
}

static int str_method(struct rctx *r, const struct func *f, struct val *args, int nargs, const char **kwn,
		      struct val *kwv, int nkw, struct val *out)
{
	const struct val *s = &f->self;
	static const char *const p_chars[] = {"chars", NULL};
	static const char *const p_split[] = {"sep", "maxsplit", NULL};
	static const char *const p_keep[] = {"keepends", NULL};
	static const char *const p_affix[] = {"prefix", "start", "end", NULL};
	static const char *const p_replace[] = {"old", "new", "count", NULL};
	static const char *const p_find[] = {"sub", "start", "end", NULL};
	static const char *const p_join[] = {"iterable", NULL};
	static const char *const p_pad[] = {"width", "fillchar", NULL};
	static const char *const p_one[] = {"arg", NULL};
	char what[64];
	snprintf(what, sizeof what, "str.%.*s()", (int)f->name_n, f->name);
	struct bound b;
	int rc;
	struct val *a0;
#define BIND(p) do { if ((rc = bind(r, what, p, args, nargs, kwn, kwv, nkw, &b))) return rc; } while (0)
	switch (f->id) {
	case M_STRIP: case M_LSTRIP: case M_RSTRIP:
		BIND(p_chars);
		if ((rc = arg_str(r, &b, 0, "strip arg", &a0)))
			return rc;
		return do_strip(r, s, a0, f->id != M_RSTRIP, f->id != M_LSTRIP, out);
	case M_SPLIT: case M_RSPLIT: {
		BIND(p_split);
		int64_t maxsplit = -1;
		if ((rc = arg_str(r, &b, 0, "separator", &a0)) || (b.given[1] && (rc = want_int(r, &b.v[1], "maxsplit", &maxsplit))))
			return rc;
		return do_split(r, s, a0, maxsplit, f->id == M_RSPLIT, out);
	}
	case M_SPLITLINES:
		BIND(p_keep);
		return do_splitlines(r, s, b_bool(&b, 0, false), out);
	case M_STARTSWITH: case M_ENDSWITH:
		BIND(p_affix);
		return affix_test(r, s, &b, f->id == M_ENDSWITH, out);
	case M_REPLACE: {
		BIND(p_replace);
		int64_t cnt = -1;
		if (!b.given[0] || !b.given[1])
			return rerr(r, INFERD_EINVAL, "TypeError: replace expected at least 2 arguments");
		if ((rc = want_str(r, &b.v[0], "replace arg")) || (rc = want_str(r, &b.v[1], "replace arg")) ||
		    (b.given[2] && (rc = want_int(r, &b.v[2], "count", &cnt))))
			return rc;
		rc = do_replace(r, s, &b.v[0], &b.v[1], cnt, out);
		if (!rc)
			out->sub = s->sub & SUB_MARKUP;
		return rc;
	}
	case M_UPPER: BIND(P0); return case_map(r, s, CM_UPPER, out);
	case M_LOWER: case M_CASEFOLD: BIND(P0); return case_map(r, s, CM_LOWER, out);
	case M_TITLE: BIND(P0); return case_map(r, s, CM_TITLE_PY, out);
	case M_CAPITALIZE: BIND(P0); return case_map(r, s, CM_CAPITALIZE, out);
	case M_SWAPCASE: BIND(P0); return case_map(r, s, CM_SWAPCASE, out);
	case M_FIND: case M_RFIND: case M_INDEX: case M_RINDEX: case M_COUNT: {
		BIND(p_find);
		if (!b.given[0] || (rc = want_str(r, &b.v[0], "substring")))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: %s takes at least 1 argument", what);
		size_t bs, be, at;
		if ((rc = sub_range(r, s, b.given[1] ? &b.v[1] : NULL, b.given[2] ? &b.v[2] : NULL, &bs, &be)))
			return rc;
		const struct val *nd = &b.v[0];
		if (f->id == M_COUNT) {
			int64_t c = 0;
			if (bs > s->n) {
				*out = v_int(0);
				return 0;
			}
			if (nd->n == 0) {
				*out = v_int((int64_t)u8_len(s->s + bs, be - bs) + 1);
				return 0;
			}
			size_t i = bs;
			while (find_sub(s, nd, i, be, &at)) {
				c++;
				i = at + nd->n;
			}
			*out = v_int(c);
			return 0;
		}
		bool found = bs <= s->n && (f->id == M_FIND || f->id == M_INDEX ? find_sub(s, nd, bs, be, &at)
										  : rfind_sub(s, nd, bs, be, &at));
		if (!found) {
			if (f->id == M_INDEX || f->id == M_RINDEX)
				return rerr(r, INFERD_EINVAL, "ValueError: substring not found");
			*out = v_int(-1);
			return 0;
		}
		*out = v_int(cp_index(s, at));
		return 0;
	}
	case M_JOIN: {
		BIND(p_join);
		if (!b.given[0])
			return rerr(r, INFERD_EINVAL, "TypeError: join() takes exactly one argument");
		struct val *items;
		size_t n;
		if ((rc = v_iterate(r, &b.v[0], &items, &n)))
			return rc;
		struct sbuf sb;
		sb_init(&sb);
		for (size_t i = 0; i < n; i++) {
			struct val x = items[i];
			if (x.t != V_STR) {
				sb_free(&sb);
				return rerr(r, INFERD_EINVAL, "TypeError: sequence item %zu: expected str instance, %s found", i,
					    v_typename(&x));
			}
			if (is_markup(s) && (rc = markup_escape(r, &items[i], &x))) {
				sb_free(&sb);
				return rc;
			}
			if (i)
				sb_putv(&sb, s);
			sb_putv(&sb, &x);
		}
		return new_str(r, &sb, s->sub, out);
	}
	case M_FORMAT:
		return py_str_format(r, s, args, nargs, kwn, kwv, nkw, out);
	case M_FORMAT_MAP: {
		if (nargs != 1 || nkw)
			return rerr(r, INFERD_EINVAL, "TypeError: format_map() takes exactly one argument");
		if (args[0].t != V_DICT)
			return rerr(r, INFERD_EINVAL, "TypeError: format_map() needs a mapping");
		const struct dict *d = args[0].d;
		const char **kn = d->n ? ralloc(r, d->n * sizeof *kn) : NULL;
		if (d->n && !kn)
			return room(r);
		for (size_t i = 0; i < d->n; i++) {
			if (d->k[i].t != V_STR)
				return rerr(r, INFERD_EINVAL, "TypeError: format_map keys must be strings");
			char *k = ralloc(r, d->k[i].n + 1);
			if (!k)
				return room(r);
			memcpy(k, d->k[i].s, d->k[i].n);
			kn[i] = k;
		}
		return py_str_format(r, s, NULL, 0, kn, d->v, (int)d->n, out);
	}
	case M_ISDIGIT: case M_ISNUMERIC: case M_ISDECIMAL: case M_ISALPHA: case M_ISALNUM: case M_ISSPACE:
	case M_ISTITLE: case M_ISASCII:
		BIND(P0);
		*out = v_bool(f->id == M_ISASCII && s->n == 0 ? true : str_pred(s, f->id));
		return 0;
	case M_ISLOWER: case M_ISUPPER:
		BIND(P0);
		*out = v_bool(str_case_test(s, f->id == M_ISLOWER));
		return 0;
	case M_CENTER: case M_LJUST: case M_RJUST: {
		BIND(p_pad);
		int64_t w;
		if (!b.given[0] || (rc = want_int(r, &b.v[0], "width", &w)))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: %s takes at least 1 argument", what);
		if ((rc = arg_str(r, &b, 1, "fillchar", &a0)))
			return rc;
		if (a0 && u8_len(a0->s, a0->n) != 1)
			return rerr(r, INFERD_EINVAL, "TypeError: The fill character must be exactly one character long");
		return pad_str(r, s, w, a0, f->id == M_CENTER ? 0 : f->id == M_LJUST ? 1 : 2, out);
	}
	case M_ZFILL: {
		BIND(p_one);
		int64_t w;
		if (!b.given[0] || (rc = want_int(r, &b.v[0], "width", &w)))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: zfill() takes exactly one argument");
		int64_t len = (int64_t)u8_len(s->s, s->n);
		if (w <= len) {
			*out = *s;
			return 0;
		}
		struct sbuf sb;
		sb_init(&sb);
		size_t off = 0;
		if (s->n && (s->s[0] == '+' || s->s[0] == '-')) {
			sb_putv_range(&sb, s, 0, 1);
			off = 1;
		}
		for (int64_t i = 0; i < w - len; i++)
			sb_putc(&sb, '0');
		sb_putv_range(&sb, s, off, s->n - off);
		return new_str(r, &sb, s->sub, out);
	}
	case M_PARTITION: case M_RPARTITION: {
		BIND(p_one);
		if (!b.given[0] || (rc = want_str(r, &b.v[0], "separator")))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: partition() takes exactly one argument");
		if (b.v[0].n == 0)
			return rerr(r, INFERD_EINVAL, "ValueError: empty separator");
		size_t at;
		bool found = f->id == M_PARTITION ? find_sub(s, &b.v[0], 0, s->n, &at) : rfind_sub(s, &b.v[0], 0, s->n, &at);
		if ((rc = v_newlist(r, 3, LK_TUPLE, out)))
			return rc;
		struct val *t = out->l->v;
		out->l->n = 3;
		if (!found) {
			struct val empty = v_strc("", 0);
			t[0] = f->id == M_PARTITION ? *s : empty;
			t[1] = empty;
			t[2] = f->id == M_PARTITION ? empty : *s;
			return 0;
		}
		str_sub(r, s, 0, at, &t[0]);
		str_sub(r, s, at, b.v[0].n, &t[1]);
		str_sub(r, s, at + b.v[0].n, s->n - at - b.v[0].n, &t[2]);
		return 0;
	}
	case M_REMOVEPREFIX: case M_REMOVESUFFIX: {
		BIND(p_one);
		if (!b.given[0] || (rc = want_str(r, &b.v[0], "affix")))
			return rc ? rc : rerr(r, INFERD_EINVAL, "TypeError: %s takes exactly one argument", what);
		const struct val *x = &b.v[0];
		if (x->n <= s->n && x->n) {
			if (f->id == M_REMOVEPREFIX && !memcmp(s->s, x->s, x->n))
				return str_sub(r, s, x->n, s->n - x->n, out);
			if (f->id == M_REMOVESUFFIX && !memcmp(s->s + s->n - x->n, x->s, x->n))
				return str_sub(r, s, 0, s->n - x->n, out);
		}
		*out = *s;
		return 0;
	}
	default:
		return rerr(r, INFERD_EINVAL, "internal error: str method %d", f->id);
	}
#undef BIND
}

int call_method(struct rctx *r, const struct func *f, struct val *args, int nargs, const char **kwn, struct val *kwv,
		int nkw, struct val *out)
{
	const struct val *self = &f->self;
	char what[64];
	snprintf(what, sizeof what, "%s.%.*s()", v_typename(self), (int)f->name_n, f->name);
	struct bound b;
	int rc;
	static const char *const p_get[] = {"key", "default", NULL};
	static const char *const p_index[] = {"value", "start", "stop", NULL};
	static const char *const p_pop[] = {"index", NULL};
	if (self->t == V_STR)
		return str_method(r, f, args, nargs, kwn, kwv, nkw, out);
	switch (f->id) {
	case MD_GET: {
		if ((rc = bind(r, what, p_get, args, nargs, kwn, kwv, nkw, &b)))
			return rc;
		if (!b.given[0])
			return rerr(r, INFERD_EINVAL, "TypeError: get expected at least 1 argument, got 0");
		uint64_t h;
		if (v_hash(&b.v[0], &h))
			return rerr(r, INFERD_EINVAL, "TypeError: unhashable type: '%s'", v_typename(&b.v[0]));
		if (!dict_get(self->d, &b.v[0], out))
			*out = b.given[1] ? b.v[1] : v_none();
		return 0;
	}
	case MD_ITEMS: case MD_KEYS: case MD_VALUES: {
		if ((rc = bind(r, what, P0, args, nargs, kwn, kwv, nkw, &b)))
			return rc;
		size_t n = self->d->n;
		if ((rc = v_newlist(r, n, f->id == MD_ITEMS ? LK_ITEMS : f->id == MD_KEYS ? LK_KEYS : LK_VALUES, out)))
			return rc;
		for (size_t i = 0; i < n; i++) {
			if (f->id == MD_ITEMS) {
				if ((rc = mk_tuple2(r, self->d->k[i], self->d->v[i], &out->l->v[i])))
					return rc;
			} else {
				out->l->v[i] = f->id == MD_KEYS ? self->d->k[i] : self->d->v[i];
			}
		}
		out->l->n = n;
		return 0;
	}
	case MD_COPY: {
		if ((rc = bind(r, what, P0, args, nargs, kwn, kwv, nkw, &b)) || (rc = v_newdict(r, out)))
			return rc;
		for (size_t i = 0; i < self->d->n; i++)
			if ((rc = dict_set(r, out->d, self->d->k[i], self->d->v[i])))
				return rc;
		return 0;
	}
	case ML_INDEX: case ML_COUNT: {
		if ((rc = bind(r, what, p_index, args, nargs, kwn, kwv, nkw, &b)))
			return rc;
		if (!b.given[0])
			return rerr(r, INFERD_EINVAL, "TypeError: %s takes at least 1 argument", what);
		int64_t c = 0;
		for (size_t i = 0; i < self->l->n; i++) {
			bool eq;
			if ((rc = v_eq(r, &self->l->v[i], &b.v[0], &eq)))
				return rc;
			if (eq && f->id == ML_INDEX) {
				*out = v_int((int64_t)i);
				return 0;
			}
			c += eq;
		}
		if (f->id == ML_INDEX)
			return rerr(r, INFERD_EINVAL, "ValueError: value is not in list");
		*out = v_int(c);
		return 0;
	}
	case ML_COPY:
		if ((rc = bind(r, what, P0, args, nargs, kwn, kwv, nkw, &b)))
			return rc;
		return v_to_list(r, self, out);
	case ML_POP: {
		if ((rc = bind(r, what, p_pop, args, nargs, kwn, kwv, nkw, &b)))
			return rc;
		struct list *l = self->l;
		if (l->n == 0)
			return rerr(r, INFERD_EINVAL, "IndexError: pop from empty list");
		if ((rc = list_unshare(r, l)))
			return rc;
		int64_t i = (int64_t)l->n - 1;
		if (b.given[0] && (rc = want_int(r, &b.v[0], "index", &i)))
			return rc;
		if (i < 0)
			i += (int64_t)l->n;
		if (i < 0 || i >= (int64_t)l->n)
			return rerr(r, INFERD_EINVAL, "IndexError: pop index out of range");
		*out = l->v[i];
		memmove(&l->v[i], &l->v[i + 1], (l->n - (size_t)i - 1) * sizeof *l->v);
		l->n--;
		return 0;
	}
	case ML_CLEAR:
		if ((rc = bind(r, what, P0, args, nargs, kwn, kwv, nkw, &b)) || (rc = list_unshare(r, self->l)))
			return rc;
		self->l->n = 0;
		*out = v_none();
		return 0;
	case MLOOP_CYCLE:
		if (nkw)
			return rerr(r, INFERD_EINVAL, "TypeError: cycle() takes no keyword arguments");
		if (nargs == 0)
			return rerr(r, INFERD_EINVAL, "TypeError: no items for cycling given");
		*out = args[self->lp->index0 % nargs];
		return 0;
	case MCYC_NEXT:
	case MCYC_RESET: {
		struct func *c = self->fn;
		if (nargs || nkw)
			return rerr(r, INFERD_EINVAL, "TypeError: %s takes no arguments", what);
		if (f->id == MCYC_RESET) {
			c->pos = 0;
			*out = v_none();
			return 0;
		}
		*out = c->items->v[c->pos];
		c->pos = (c->pos + 1) % (int64_t)c->items->n;
		return 0;
	}
	case MLOOP_CHANGED: {
		struct val cur;
		if ((rc = v_newlist(r, (size_t)nargs, LK_LIST, &cur)))
			return rc;
		for (int i = 0; i < nargs; i++)
			cur.l->v[cur.l->n++] = args[i];
		bool eq = false;
		if (self->lp->changed_set && (rc = v_eq(r, &cur, &self->lp->last_changed, &eq)))
			return rc;
		if (self->lp->changed_set && eq) {
			*out = v_bool(false);
			return 0;
		}
		self->lp->last_changed = cur;
		self->lp->changed_set = true;
		*out = v_bool(true);
		return 0;
	}
	default:
		return rerr(r, INFERD_EINVAL, "internal error: method %d", f->id);
	}
}

/* ---------------------------------------------------------------- globals */

int call_global(struct rctx *r, int id, struct val *args, int nargs, const char **kwn, struct val *kwv, int nkw,
		struct val *out)
{
	int rc;
	switch (id) {
	case SYM_RANGE: {
		if (nkw)
			return rerr(r, INFERD_EINVAL, "TypeError: range() takes no keyword arguments");
		if (nargs < 1 || nargs > 3)
			return rerr(r, INFERD_EINVAL, "TypeError: range expected 1 to 3 arguments, got %d", nargs);
		int64_t a[3] = {0, 0, 1};
		for (int i = 0; i < nargs; i++)
			if ((rc = want_int(r, &args[i], "range() argument", &a[nargs == 1 ? 1 : i])))
				return rc;
		if (a[2] == 0)
			return rerr(r, INFERD_EINVAL, "ValueError: range() arg 3 must not be zero");
		int64_t len = 0;
		if (a[2] > 0 && a[1] > a[0])
			len = (a[1] - a[0] - 1) / a[2] + 1;
		else if (a[2] < 0 && a[0] > a[1])
			len = (a[0] - a[1] - 1) / -a[2] + 1;
		if (len > 100000)
			return rerr(r, INFERD_ERANGE, "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
		if ((rc = v_newlist(r, (size_t)len, LK_RANGE, out)))
			return rc;
		for (int64_t i = 0; i < len; i++)
			out->l->v[out->l->n++] = v_int(a[0] + i * a[2]);
		out->l->rstart = a[0];
		out->l->rstop = a[1];
		out->l->rstep = a[2];
		return 0;
	}
	case SYM_DICT:
	case SYM_NAMESPACE: {
		struct val d;
		if ((rc = v_newdict(r, &d)))
			return rc;
		if (nargs > 1)
			return rerr(r, INFERD_EINVAL, "TypeError: %s expected at most 1 positional argument, got %d",
				    id == SYM_DICT ? "dict" : "namespace", nargs);
		if (nargs == 1) {
			if (args[0].t == V_DICT) {
				for (size_t i = 0; i < args[0].d->n; i++)
					if ((rc = dict_set(r, d.d, args[0].d->k[i], args[0].d->v[i])))
						return rc;
			} else {
				struct val *items;
				size_t n;
				if ((rc = v_iterate(r, &args[0], &items, &n)))
					return rc;
				for (size_t i = 0; i < n; i++) {
					struct val *kv;
					size_t m;
					if ((rc = v_iterate(r, &items[i], &kv, &m)))
						return rc;
					if (m != 2)
						return rerr(r, INFERD_EINVAL, "ValueError: dictionary update sequence element #%zu has length %zu; 2 is required", i, m);
					uint64_t h;
					if (v_hash(&kv[0], &h))
						return rerr(r, INFERD_EINVAL, "TypeError: unhashable type: '%s'", v_typename(&kv[0]));
					if ((rc = dict_set(r, d.d, kv[0], kv[1])))
						return rc;
				}
			}
		}
		for (int i = 0; i < nkw; i++)
			if ((rc = dict_set(r, d.d, v_strc(kwn[i], strlen(kwn[i])), kwv[i])))
				return rc;
		if (id == SYM_DICT) {
			*out = d;
			return 0;
		}
		struct nsobj *ns = ralloc(r, sizeof *ns);
		if (!ns)
			return room(r);
		ns->d = *d.d;
		*out = (struct val){0};
		out->t = V_NS;
		out->ns = ns;
		return 0;
	}
	case SYM_RAISE: {
		struct val m = nargs ? args[0] : v_strc("", 0), s;
		if ((rc = v_str(r, &m, &s)))
			return rc;
		return rerr(r, INFERD_EINVAL, "TemplateError (raise_exception): %.*s", (int)(s.n > 400 ? 400 : s.n), s.s);
	}
	case SYM_STRFTIME: {
		if (nargs != 1 || args[0].t != V_STR)
			return rerr(r, INFERD_EINVAL, "TypeError: strftime_now() takes one format string");
		char fmt[256], buf[512];
		if (args[0].n >= sizeof fmt)
			return rerr(r, INFERD_EINVAL, "strftime_now format too long");
		memcpy(fmt, args[0].s, args[0].n);
		fmt[args[0].n] = 0;
		struct tm tm;
		time_t now = r->now;
		localtime_r(&now, &tm);
		size_t k = fmt[0] ? strftime(buf, sizeof buf, fmt, &tm) : 0;
		if (fmt[0] && k == 0)
			buf[0] = 0;
		return v_strdup(r, buf, k, out);
	}
	case SYM_JOINER:
	case SYM_CYCLER: {
		struct func *f = ralloc(r, sizeof *f);
		if (!f)
			return room(r);
		if (id == SYM_JOINER) {
			static const char *const p_sep[] = {"sep", NULL};
			struct bound b;
			if ((rc = bind(r, "joiner()", p_sep, args, nargs, kwn, kwv, nkw, &b)))
				return rc;
			f->kind = FK_JOINER;
			f->self = b.given[0] ? b.v[0] : v_strc(", ", 2);
		} else {
			if (nkw)
				return rerr(r, INFERD_EINVAL, "TypeError: cycler() takes no keyword arguments");
			if (!nargs)
				return rerr(r, INFERD_EINVAL, "RuntimeError: at least one item has to be provided");
			struct val l;
			if ((rc = v_newlist(r, (size_t)nargs, LK_TUPLE, &l)))
				return rc;
			for (int i = 0; i < nargs; i++)
				l.l->v[l.l->n++] = args[i];
			f->kind = FK_CYCLER;
			f->items = l.l;
		}
		*out = (struct val){0};
		out->t = V_FUNC;
		out->fn = f;
		return 0;
	}
	default:
		return rerr(r, INFERD_EUNSUPPORTED, "the global 'lipsum' is not supported by inferd's template engine");
	}
}

/* ---------------------------------------------------------------- % formatting */

/* ascii(): a repr with non-ASCII characters escaped */
static int ascii_escape(struct rctx *r, struct val *v)
{
	struct sbuf sb;
	sb_init(&sb);
	for (size_t i = 0; i < v->n;) {
		size_t adv;
		uint32_t c = u8_dec(v->s + i, v->n - i, &adv);
		if (c < 0x80)
			sb_putv_range(&sb, v, i, adv);
		else if (c < 0x100)
			sb_printf(&sb, "\\x%02x", c);
		else if (c < 0x10000)
			sb_printf(&sb, "\\u%04x", c);
		else
			sb_printf(&sb, "\\U%08x", c);
		i += adv;
	}
	bool taint = v->taint != TN_CLEAN;
	int rc = new_str(r, &sb, 0, v);
	if (!rc)
		*v = str_retaint(*v, taint);
	return rc;
}

struct spec {
	bool left, plus, space, alt, zero;
	int64_t width, prec;   /* -1 = none */
	char type;
};

static void pad_out(struct sbuf *sb, const char *body, size_t n, const struct spec *sp, bool numeric)
{
	int64_t len = (int64_t)u8_len(body, n);
	int64_t pad = sp->width > len ? sp->width - len : 0;
	if (sp->left) {
		sb_put(sb, body, n, 0);
		for (int64_t i = 0; i < pad; i++)
			sb_putc(sb, ' ');
		return;
	}
	if (sp->zero && numeric && pad) {
		size_t sign = (n && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) ? 1 : 0;
		if (n > sign + 1 && body[sign] == '0' && (body[sign + 1] == 'x' || body[sign + 1] == 'X' || body[sign + 1] == 'o'))
			sign += 2;
		sb_put(sb, body, sign, 0);
		for (int64_t i = 0; i < pad; i++)
			sb_putc(sb, '0');
		sb_put(sb, body + sign, n - sign, 0);
		return;
	}
	for (int64_t i = 0; i < pad; i++)
		sb_putc(sb, ' ');
	sb_put(sb, body, n, 0);
}

static int num_arg(struct rctx *r, const struct val *v, char type, bool want_int_v, int64_t *i, double *f, bool *is_f)
{
	*is_f = false;
	switch (v->t) {
	case V_INT: *i = v->i; *f = (double)v->i; return 0;
	case V_BOOL: *i = v->b; *f = v->b; return 0;
	case V_FLOAT:
		*is_f = true;
		*f = v->f;
		if (want_int_v) {
			if (isnan(v->f) || isinf(v->f) || fabs(v->f) >= 9.2e18)
				return rerr(r, INFERD_EINVAL, "cannot convert float %s to integer", isnan(v->f) ? "NaN" : "infinity");
			*i = (int64_t)v->f;
		}
		return 0;
	case V_UNDEF:
		return undef_fail(r, v);
	default:
		return rerr(r, INFERD_EINVAL, "TypeError: %%%c format: a %s is required, not %s", type,
			    want_int_v ? "real number" : "real number", v_typename(v));
	}
}

static void fmt_int_body(char *buf, size_t cap, int64_t x, const struct spec *sp)
{
	char digits[80];
	uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
	const char *pre = "";
	switch (sp->type) {
	case 'x': snprintf(digits, sizeof digits, "%llx", (unsigned long long)u); pre = sp->alt ? "0x" : ""; break;
	case 'X': snprintf(digits, sizeof digits, "%llX", (unsigned long long)u); pre = sp->alt ? "0X" : ""; break;
	case 'o': snprintf(digits, sizeof digits, "%llo", (unsigned long long)u); pre = sp->alt ? "0o" : ""; break;
	default: snprintf(digits, sizeof digits, "%llu", (unsigned long long)u); break;
	}
	/* precision = minimum digits */
	char padded[160];
	int dl = (int)strlen(digits);
	if (sp->prec > dl && sp->prec < 100)
		snprintf(padded, sizeof padded, "%0*d%s", (int)(sp->prec - dl), 0, digits);
	else
		snprintf(padded, sizeof padded, "%s", digits);
	const char *sign = x < 0 ? "-" : sp->plus ? "+" : sp->space ? " " : "";
	snprintf(buf, cap, "%s%s%s", sign, pre, padded);
}

static void fmt_float_body(char *buf, size_t cap, double f, const struct spec *sp, char type)
{
	int prec = sp->prec < 0 ? 6 : (int)(sp->prec > 100 ? 100 : sp->prec);
	if (isnan(f) || isinf(f)) {
		const char *s = isnan(f) ? "nan" : "inf";
		bool up = type == 'F' || type == 'E' || type == 'G';
		snprintf(buf, cap, "%s%s", f < 0 ? "-" : sp->plus ? "+" : sp->space ? " " : "", up ? (isnan(f) ? "NAN" : "INF") : s);
		return;
	}
	char fmt[16];
	snprintf(fmt, sizeof fmt, "%%%s%s%s.%d%c", sp->plus ? "+" : "", sp->space ? " " : "", sp->alt ? "#" : "", prec, type);
	snprintf(buf, cap, fmt, f);
}

int py_percent_format(struct rctx *r, const struct val *fmt, const struct val *args, struct val *out)
{
	const struct val *pos = args;
	size_t npos = 1, used = 0;
	bool is_tuple = args->t == V_LIST && args->sub == LK_TUPLE;
	bool is_map = args->t == V_DICT;
	if (is_tuple) {
		pos = args->l->v;
		npos = args->l->n;
	}
	bool taint = fmt->taint != TN_CLEAN || v_any_taint(args, 0);
	bool markup = is_markup(fmt);
	struct sbuf sb;
	sb_init(&sb);
	int rc = 0;
	const char *s = fmt->s;
	size_t n = fmt->n;
	for (size_t i = 0; i < n && !rc;) {
		if (s[i] != '%') {
			size_t j = i;
			while (j < n && s[j] != '%')
				j++;
			sb_put(&sb, s + i, j - i, 0);
			i = j;
			continue;
		}
		i++;
		if (i >= n) {
			rc = rerr(r, INFERD_EINVAL, "ValueError: incomplete format");
			break;
		}
		const struct val *arg = NULL;
		struct val mapped;
		if (s[i] == '(') {
			size_t j = i + 1;
			int depth = 1;
			while (j < n && depth) {
				if (s[j] == '(')
					depth++;
				else if (s[j] == ')')
					depth--;
				j++;
			}
			if (depth) {
				rc = rerr(r, INFERD_EINVAL, "ValueError: incomplete format key");
				break;
			}
			if (!is_map) {
				rc = rerr(r, INFERD_EINVAL, "TypeError: format requires a mapping");
				break;
			}
			struct val key = v_strc(s + i + 1, j - i - 2);
			if (!dict_get(args->d, &key, &mapped)) {
				rc = rerr(r, INFERD_EINVAL, "KeyError: '%.*s'", (int)key.n, key.s);
				break;
			}
			arg = &mapped;
			i = j;
		}
		struct spec sp = {0};
		sp.width = -1;
		sp.prec = -1;
		for (; i < n; i++) {
			if (s[i] == '-') sp.left = true;
			else if (s[i] == '+') sp.plus = true;
			else if (s[i] == ' ') sp.space = true;
			else if (s[i] == '#') sp.alt = true;
			else if (s[i] == '0') sp.zero = true;
			else break;
		}
		if (i < n && s[i] == '*') {
			if (used >= npos || (pos[used].t != V_INT)) {
				rc = rerr(r, INFERD_EINVAL, "TypeError: * wants int");
				break;
			}
			sp.width = pos[used++].i;
			if (sp.width < 0) {
				sp.left = true;
				sp.width = -sp.width;
			}
			i++;
		} else {
			while (i < n && s[i] >= '0' && s[i] <= '9') {
				sp.width = (sp.width < 0 ? 0 : sp.width) * 10 + (s[i] - '0');
				if (sp.width > 100000)
					sp.width = 100000;
				i++;
			}
		}
		if (i < n && s[i] == '.') {
			i++;
			sp.prec = 0;
			if (i < n && s[i] == '*') {
				if (used >= npos || pos[used].t != V_INT) {
					rc = rerr(r, INFERD_EINVAL, "TypeError: * wants int");
					break;
				}
				sp.prec = pos[used++].i;
				i++;
			} else {
				while (i < n && s[i] >= '0' && s[i] <= '9') {
					sp.prec = sp.prec * 10 + (s[i] - '0');
					if (sp.prec > 1000)
						sp.prec = 1000;
					i++;
				}
			}
		}
		while (i < n && (s[i] == 'h' || s[i] == 'l' || s[i] == 'L'))
			i++;
		if (i >= n) {
			rc = rerr(r, INFERD_EINVAL, "ValueError: incomplete format");
			break;
		}
		char type = s[i++];
		sp.type = type;
		if (type == '%') {
			sb_putc(&sb, '%');
			continue;
		}
		if (!arg) {
			if (is_map) {
				arg = args;
				} else {
				if (used >= npos) {
					rc = rerr(r, INFERD_EINVAL, "TypeError: not enough arguments for format string");
					break;
				}
				arg = &pos[used++];
			}
		}
		char body[512];
		switch (type) {
		case 's': case 'r': case 'a': {
			struct sbuf tmp;
			sb_init(&tmp);
			struct val x = *arg;
			if (markup && type == 's' && (rc = markup_escape(r, arg, &x)))
				break;
			rc = type == 's' ? v_write_str(r, &tmp, &x) : v_write_repr(r, &tmp, &x, 0);
			if (!rc && type == 'a') {
				struct val tv;
				if (!(rc = sb_to_val(r, &tmp, &tv)) && !(rc = ascii_escape(r, &tv))) {
					sb_free(&tmp);
					sb_init(&tmp);
					sb_putv(&tmp, &tv);
				}
			}
			if (!rc) {
				size_t len = tmp.n;
				if (sp.prec >= 0)
					len = u8_off(tmp.p ? tmp.p : "", tmp.n, sp.prec);
				pad_out(&sb, tmp.p ? tmp.p : "", len, &sp, false);
			}
			sb_free(&tmp);
			break;
		}
		case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': {
			int64_t iv;
			double fv;
			bool isf;
			if ((rc = num_arg(r, arg, type, true, &iv, &fv, &isf)))
				break;
			if (isf && (type == 'x' || type == 'X' || type == 'o')) {
				rc = rerr(r, INFERD_EINVAL, "TypeError: %%%c format: an integer is required, not float", type);
				break;
			}
			fmt_int_body(body, sizeof body, iv, &sp);
			pad_out(&sb, body, strlen(body), &sp, true);
			break;
		}
		case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': {
			int64_t iv;
			double fv;
			bool isf;
			if ((rc = num_arg(r, arg, type, false, &iv, &fv, &isf)))
				break;
			fmt_float_body(body, sizeof body, fv, &sp, type);
			pad_out(&sb, body, strlen(body), &sp, true);
			break;
		}
		case 'c': {
			if (arg->t == V_INT) {
				char tmp[8];
				size_t k = u8_enc((uint32_t)arg->i, tmp);
				pad_out(&sb, tmp, k, &sp, false);
			} else if (arg->t == V_STR && u8_len(arg->s, arg->n) == 1) {
				pad_out(&sb, arg->s, arg->n, &sp, false);
			} else {
				rc = rerr(r, INFERD_EINVAL, "TypeError: %%c requires int or char");
			}
			break;
		}
		default:
			rc = rerr(r, INFERD_EINVAL, "ValueError: unsupported format character '%c'", type);
			break;
		}
	}
	/* Python: leftovers are an error unless the argument is a mapping-like
	 * non-tuple (anything with __getitem__: dict, list, Undefined, ...) */
	bool mapping_like = !is_tuple && (args->t == V_DICT || args->t == V_UNDEF ||
					  (args->t == V_LIST && (args->sub == LK_LIST || args->sub == LK_RANGE)));
	if (!rc && !is_map && used < npos && !mapping_like)
		rc = rerr(r, INFERD_EINVAL, "TypeError: not all arguments converted during string formatting");
	if (rc) {
		sb_free(&sb);
		return rc;
	}
	rc = new_str(r, &sb, markup ? SUB_MARKUP : 0, out);
	if (!rc)
		*out = str_retaint(*out, taint);
	return rc;
}

/* ---------------------------------------------------------------- str.format */

struct fspec {
	uint32_t fill;
	char align;   /* 0, '<', '>', '^', '=' */
	char sign;    /* 0, '+', '-', ' ' */
	bool alt, zero;
	int64_t width, prec;
	char group;   /* 0, ',', '_' */
	char type;
};

static int parse_fspec(struct rctx *r, const char *s, size_t n, struct fspec *f)
{
	memset(f, 0, sizeof *f);
	f->fill = ' ';
	f->width = -1;
	f->prec = -1;
	size_t i = 0;
	size_t adv = 0;
	uint32_t c0 = n ? u8_dec(s, n, &adv) : 0;
	if (n > adv && (s[adv] == '<' || s[adv] == '>' || s[adv] == '^' || s[adv] == '=')) {
		f->fill = c0;
		f->align = s[adv];
		i = adv + 1;
	} else if (n && (s[0] == '<' || s[0] == '>' || s[0] == '^' || s[0] == '=')) {
		f->align = s[0];
		i = 1;
	}
	if (i < n && (s[i] == '+' || s[i] == '-' || s[i] == ' '))
		f->sign = s[i++];
	if (i < n && s[i] == '#') {
		f->alt = true;
		i++;
	}
	if (i < n && s[i] == '0') {
		f->zero = true;
		i++;
	}
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		f->width = (f->width < 0 ? 0 : f->width) * 10 + (s[i++] - '0');
		if (f->width > 100000)
			f->width = 100000;
	}
	if (i < n && (s[i] == ',' || s[i] == '_'))
		f->group = s[i++];
	if (i < n && s[i] == '.') {
		i++;
		f->prec = 0;
		if (i >= n || s[i] < '0' || s[i] > '9')
			return rerr(r, INFERD_EINVAL, "ValueError: Format specifier missing precision");
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			f->prec = f->prec * 10 + (s[i++] - '0');
			if (f->prec > 1000)
				f->prec = 1000;
		}
	}
	if (i < n)
		f->type = s[i++];
	if (i < n)
		return rerr(r, INFERD_EINVAL, "ValueError: Invalid format specifier '%.*s'", (int)n, s);
	return 0;
}

static void group_digits(char *buf, size_t cap, char sep)
{
	/* insert sep every 3 digits in the integer part of buf (which may have a sign) */
	char tmp[256];
	size_t n = strlen(buf), start = (buf[0] == '-' || buf[0] == '+' || buf[0] == ' ') ? 1 : 0, end = start;
	while (end < n && buf[end] >= '0' && buf[end] <= '9')
		end++;
	size_t k = 0;
	for (size_t i = 0; i < start; i++)
		tmp[k++] = buf[i];
	for (size_t i = start; i < end; i++) {
		tmp[k++] = buf[i];
		size_t left = end - i - 1;
		if (left && left % 3 == 0 && k < sizeof tmp - 2)
			tmp[k++] = sep;
	}
	for (size_t i = end; i < n && k < sizeof tmp - 1; i++)
		tmp[k++] = buf[i];
	tmp[k] = 0;
	snprintf(buf, cap, "%s", tmp);
}

static void align_out(struct sbuf *sb, const char *body, size_t n, const struct fspec *f, char default_align, bool numeric,
		      uint8_t taint)
{
	int64_t len = (int64_t)u8_len(body, n), pad = f->width > len ? f->width - len : 0;
	char align = f->align ? f->align : (f->zero && numeric ? '=' : default_align);
	uint32_t fill = f->align ? f->fill : (f->zero && numeric ? '0' : ' ');
	char fb[4];
	size_t fl = u8_enc(fill, fb);
	int64_t left = 0;
	if (align == '>')
		left = pad;
	else if (align == '^')
		left = pad / 2;
	else if (align == '=') {
		size_t sign = (n && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) ? 1 : 0;
		if (n > sign + 1 && body[sign] == '0' && strchr("xXobB", body[sign + 1]))
			sign += 2;
		sb_put(sb, body, sign, taint);
		for (int64_t i = 0; i < pad; i++)
			sb_put(sb, fb, fl, 0);
		sb_put(sb, body + sign, n - sign, taint);
		return;
	}
	for (int64_t i = 0; i < left; i++)
		sb_put(sb, fb, fl, 0);
	sb_put(sb, body, n, taint);
	for (int64_t i = 0; i < pad - left; i++)
		sb_put(sb, fb, fl, 0);
}

static int format_one(struct rctx *r, struct sbuf *sb, const struct val *v, const char *spec, size_t sn)
{
	struct fspec f;
	int rc = parse_fspec(r, spec, sn, &f);
	if (rc)
		return rc;
	char body[600];
	if (v->t == V_STR || (sn == 0)) {
		if (v->t != V_STR && sn == 0)
			return v_write_str(r, sb, v);
		if (f.type && f.type != 's')
			return rerr(r, INFERD_EINVAL, "ValueError: Unknown format code '%c' for object of type 'str'", f.type);
		size_t len = v->n;
		if (f.prec >= 0)
			len = u8_off(v->s, v->n, f.prec);
		align_out(sb, v->s, len, &f, '<', false, v->taint != TN_CLEAN);
		return 0;
	}
	if (v->t == V_INT || v->t == V_BOOL || v->t == V_FLOAT) {
		bool isf = v->t == V_FLOAT;
		char t = f.type;
		if (!isf && (t == 0 || t == 'd' || t == 'n' || t == 'b' || t == 'x' || t == 'X' || t == 'o' || t == 'c')) {
			int64_t x = v->t == V_INT ? v->i : v->b;
			if (t == 'c') {
				char tmp[8];
				size_t k = u8_enc((uint32_t)x, tmp);
				align_out(sb, tmp, k, &f, '<', false, 0);
				return 0;
			}
			uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
			char digits[80];
			const char *pre = "";
			if (t == 'x') { snprintf(digits, sizeof digits, "%llx", (unsigned long long)u); pre = f.alt ? "0x" : ""; }
			else if (t == 'X') { snprintf(digits, sizeof digits, "%llX", (unsigned long long)u); pre = f.alt ? "0X" : ""; }
			else if (t == 'o') { snprintf(digits, sizeof digits, "%llo", (unsigned long long)u); pre = f.alt ? "0o" : ""; }
			else if (t == 'b') {
				int k = 0;
				char tmp[70];
				do { tmp[k++] = (char)('0' + (u & 1)); u >>= 1; } while (u);
				for (int i = 0; i < k; i++)
					digits[i] = tmp[k - 1 - i];
				digits[k] = 0;
				pre = f.alt ? "0b" : "";
			} else snprintf(digits, sizeof digits, "%llu", (unsigned long long)u);
			const char *sign = x < 0 ? "-" : f.sign == '+' ? "+" : f.sign == ' ' ? " " : "";
			snprintf(body, sizeof body, "%s%s%s", sign, pre, digits);
			if (f.group)
				group_digits(body, sizeof body, f.group);
			align_out(sb, body, strlen(body), &f, '>', true, 0);
			return 0;
		}
		double x = isf ? v->f : (double)(v->t == V_INT ? v->i : v->b);
		if (t == 0 && f.prec < 0) {
			fmt_float_repr(x, body, sizeof body);
			if (f.sign == '+' && x >= 0)
				memmove(body + 1, body, strlen(body) + 1), body[0] = '+';
		} else {
			struct spec sp = {0};
			sp.plus = f.sign == '+';
			sp.space = f.sign == ' ';
			sp.alt = f.alt;
			sp.prec = f.prec;
			char ct = t == 0 ? 'g' : t == 'n' ? 'g' : t;
			if (ct == '%') {
				fmt_float_body(body, sizeof body - 1, x * 100, &sp, 'f');
				strcat(body, "%");
			} else if (strchr("eEfFgG", ct)) {
				if (ct == 'g' && t == 0 && sp.prec < 0)
					sp.prec = 12;
				fmt_float_body(body, sizeof body, x, &sp, ct);
			} else {
				return rerr(r, INFERD_EINVAL, "ValueError: Unknown format code '%c' for object of type '%s'", t,
					    v_typename(v));
			}
		}
		if (f.group)
			group_digits(body, sizeof body, f.group);
		align_out(sb, body, strlen(body), &f, '>', true, 0);
		return 0;
	}
	if (v->t == V_UNDEF)
		return undef_fail(r, v);
	return rerr(r, INFERD_EINVAL, "TypeError: unsupported format string passed to %s.__format__", v_typename(v));
}

int py_str_format(struct rctx *r, const struct val *fmt, struct val *args, int nargs, const char **kwn, struct val *kwv,
		  int nkw, struct val *out)
{
	const char *s = fmt->s;
	size_t n = fmt->n;
	struct sbuf sb;
	sb_init(&sb);
	int rc = 0, auto_idx = 0;
	bool taint = fmt->taint != TN_CLEAN;
	for (int i = 0; i < nargs; i++)
		taint = taint || v_any_taint(&args[i], 0);
	for (int i = 0; i < nkw; i++)
		taint = taint || v_any_taint(&kwv[i], 0);
	for (size_t i = 0; i < n && !rc;) {
		char c = s[i];
		if (c == '{' && i + 1 < n && s[i + 1] == '{') {
			sb_putc(&sb, '{');
			i += 2;
			continue;
		}
		if (c == '}' && i + 1 < n && s[i + 1] == '}') {
			sb_putc(&sb, '}');
			i += 2;
			continue;
		}
		if (c == '}') {
			rc = rerr(r, INFERD_EINVAL, "ValueError: Single '}' encountered in format string");
			break;
		}
		if (c != '{') {
			size_t j = i;
			while (j < n && s[j] != '{' && s[j] != '}')
				j++;
			sb_put(&sb, s + i, j - i, 0);
			i = j;
			continue;
		}
		/* a field: {name[.attr|[key]]...[!conv][:spec]} */
		size_t j = i + 1;
		int depth = 1;
		while (j < n) {
			if (s[j] == '{')
				depth++;
			else if (s[j] == '}' && --depth == 0)
				break;
			j++;
		}
		if (j >= n) {
			rc = rerr(r, INFERD_EINVAL, "ValueError: expected '}' before end of string");
			break;
		}
		const char *fs = s + i + 1;
		size_t fn = j - i - 1, k = 0;
		while (k < fn && fs[k] != '.' && fs[k] != '[' && fs[k] != '!' && fs[k] != ':')
			k++;
		struct val v;
		if (k == 0) {
			if (auto_idx >= nargs) {
				rc = rerr(r, INFERD_EINVAL, "IndexError: Replacement index %d out of range for positional args tuple", auto_idx);
				break;
			}
			v = args[auto_idx++];
		} else if (fs[0] >= '0' && fs[0] <= '9') {
			int idx = atoi(fs);
			if (idx >= nargs) {
				rc = rerr(r, INFERD_EINVAL, "IndexError: Replacement index %d out of range for positional args tuple", idx);
				break;
			}
			v = args[idx];
		} else {
			int w = -1;
			for (int q = 0; q < nkw; q++)
				if (strlen(kwn[q]) == k && !memcmp(kwn[q], fs, k))
					w = q;
			if (w < 0) {
				rc = rerr(r, INFERD_EINVAL, "KeyError: '%.*s'", (int)k, fs);
				break;
			}
			v = kwv[w];
		}
		while (k < fn && (fs[k] == '.' || fs[k] == '[')) {
			struct val nx;
			if (fs[k] == '.') {
				size_t e = k + 1;
				while (e < fn && fs[e] != '.' && fs[e] != '[' && fs[e] != '!' && fs[e] != ':')
					e++;
				if ((rc = getattr_v(r, &v, fs + k + 1, e - k - 1, &nx)))
					break;
				k = e;
			} else {
				size_t e = k + 1;
				while (e < fn && fs[e] != ']')
					e++;
				struct val key = v_strc(fs + k + 1, e - k - 1);
				bool dig = key.n > 0;
				for (size_t q = 0; q < key.n; q++)
					if (key.s[q] < '0' || key.s[q] > '9')
						dig = false;
				if (dig)
					key = v_int(atoll(key.s));
				if ((rc = getitem_v(r, &v, &key, &nx)))
					break;
				k = e + 1;
			}
			v = nx;
		}
		if (rc)
			break;
		char conv = 0;
		if (k < fn && fs[k] == '!') {
			conv = k + 1 < fn ? fs[k + 1] : 0;
			k += 2;
		}
		const char *spec = "";
		size_t specn = 0;
		char specbuf[128];
		if (k < fn && fs[k] == ':') {
			spec = fs + k + 1;
			specn = fn - k - 1;
			if (memchr(spec, '{', specn)) {
				/* nested fields in the spec: format them first */
				struct val sv = v_strc(spec, specn), fv;
				if ((rc = py_str_format(r, &sv, args, nargs, kwn, kwv, nkw, &fv)))
					break;
				specn = fv.n < sizeof specbuf ? fv.n : sizeof specbuf - 1;
				memcpy(specbuf, fv.s, specn);
				spec = specbuf;
			}
		}
		if (conv == 'r' || conv == 'a' || conv == 's') {
			struct sbuf tmp;
			sb_init(&tmp);
			rc = conv == 's' ? v_write_str(r, &tmp, &v) : v_write_repr(r, &tmp, &v, 0);
			if (!rc)
				rc = sb_to_val(r, &tmp, &v);
			sb_free(&tmp);
			if (!rc && conv == 'a')
				rc = ascii_escape(r, &v);
			if (rc)
				break;
		} else if (conv) {
			rc = rerr(r, INFERD_EINVAL, "ValueError: Unknown conversion specifier %c", conv);
			break;
		}
		if (is_markup(fmt) && (rc = markup_escape(r, &v, &v)))
			break;
		rc = format_one(r, &sb, &v, spec, specn);
		i = j + 1;
	}
	if (rc) {
		sb_free(&sb);
		return rc;
	}
	rc = new_str(r, &sb, fmt->sub, out);
	if (!rc)
		*out = str_retaint(*out, taint);
	return rc;
}
