/*
 * tmpl_val.c — the interpreter's values with Python's semantics: arenas,
 * strings with per-byte taint masks, lists and insertion-ordered dicts
 * (hash-indexed once they grow), Undefined with jinja2's messages,
 * truthiness, ==, ordering, `in`, len(), str(), repr(), json.dumps() and
 * the conversion from jansson values.
 *
 * Every allocation of a render comes from its arena (ralloc); a failed
 * allocation returns NULL and the caller reports room(). Buffers that grow
 * (struct sbuf) use malloc and are freed by whoever created them.
 * Strings are UTF-8; lengths and indices count code points like Python.
 */
#include "tmpl_int.h"
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- arena */

struct achunk {
	struct achunk *next;
	size_t cap, used;
	max_align_t data[];
};

#define ACHUNK_MIN (64u << 10)

void *ar_alloc(struct arena *a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (n == 0)
		n = sizeof(max_align_t);
	struct achunk *c = a->head;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > ACHUNK_MIN ? n : ACHUNK_MIN;
		if (c && cap < c->cap && c->cap < (8u << 20))
			cap = c->cap * 2;  /* grow chunks geometrically up to 8 MiB */
		if (a->limit && a->total + cap + sizeof *c > a->limit)
			return NULL;
		c = malloc(sizeof *c + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
		a->total += cap + sizeof *c;
	}
	void *p = (char *)c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

void ar_free(struct arena *a)
{
	struct achunk *c = a->head;
	while (c) {
		struct achunk *nx = c->next;
		free(c);
		c = nx;
	}
	a->head = NULL;
	a->total = 0;
}

void *ralloc(struct rctx *r, size_t n)
{
	return ar_alloc(&r->ar, n);
}

int room(struct rctx *r)
{
	return rerr(r, INFERD_ERANGE, "the template used more than %u MiB of memory while rendering",
		    (unsigned)(TMPL_MAX_MEMORY >> 20));
}

/* ---------------------------------------------------------------- sbuf */

void sb_init(struct sbuf *b)
{
	memset(b, 0, sizeof *b);
}

void sb_free(struct sbuf *b)
{
	free(b->p);
	free(b->m);
	memset(b, 0, sizeof *b);
}

static bool sb_grow(struct sbuf *b, size_t add)
{
	size_t lim = b->limit ? b->limit : TMPL_MAX_OUTPUT;
	if (b->over || add > lim - b->n) {
		b->over = true;
		return false;
	}
	if (b->n + add + 1 <= b->cap)
		return true;
	size_t nc = b->cap ? b->cap : 256;
	while (nc < b->n + add + 1)
		nc *= 2;
	char *p = realloc(b->p, nc);
	if (!p) {
		b->over = true;
		return false;
	}
	b->p = p;
	uint8_t *m = realloc(b->m, nc);
	if (!m) {
		b->over = true;
		return false;
	}
	b->m = m;
	b->cap = nc;
	return true;
}

bool sb_put(struct sbuf *b, const char *p, size_t n, uint8_t taint)
{
	if (n == 0)
		return !b->over;
	if (!sb_grow(b, n))
		return false;
	memcpy(b->p + b->n, p, n);
	memset(b->m + b->n, taint ? 1 : 0, n);
	b->n += n;
	b->p[b->n] = 0;
	return true;
}

bool sb_puts(struct sbuf *b, const char *s)
{
	return sb_put(b, s, strlen(s), 0);
}

bool sb_putc(struct sbuf *b, char c)
{
	return sb_put(b, &c, 1, 0);
}

bool sb_putv_range(struct sbuf *b, const struct val *s, size_t off, size_t n)
{
	if (n == 0)
		return !b->over;
	if (!sb_grow(b, n))
		return false;
	memcpy(b->p + b->n, s->s + off, n);
	if (s->taint == TN_MIXED)
		memcpy(b->m + b->n, s->m + off, n);
	else
		memset(b->m + b->n, s->taint == TN_ALL ? 1 : 0, n);
	b->n += n;
	b->p[b->n] = 0;
	return true;
}

bool sb_putv(struct sbuf *b, const struct val *s)
{
	return sb_putv_range(b, s, 0, s->n);
}

bool sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (k < 0)
		return false;
	if ((size_t)k < sizeof tmp)
		return sb_put(b, tmp, (size_t)k, 0);
	char *big = malloc((size_t)k + 1);
	if (!big)
		return false;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)k + 1, fmt, ap);
	va_end(ap);
	bool ok = sb_put(b, big, (size_t)k, 0);
	free(big);
	return ok;
}

static uint8_t mask_taint(const uint8_t *m, size_t n)
{
	bool any0 = false, any1 = false;
	for (size_t i = 0; i < n && !(any0 && any1); i++) {
		if (m[i])
			any1 = true;
		else
			any0 = true;
	}
	return any1 ? (any0 ? TN_MIXED : TN_ALL) : TN_CLEAN;
}

int sb_to_val(struct rctx *r, const struct sbuf *b, struct val *out)
{
	char *p = ralloc(r, b->n + 1);
	if (!p)
		return room(r);
	if (b->n)
		memcpy(p, b->p, b->n);
	*out = v_strc(p, b->n);
	uint8_t t = b->n ? mask_taint(b->m, b->n) : TN_CLEAN;
	out->taint = t;
	if (t == TN_MIXED) {
		uint8_t *m = ralloc(r, b->n);
		if (!m)
			return room(r);
		memcpy(m, b->m, b->n);
		out->m = m;
	}
	return 0;
}

/* ---------------------------------------------------------------- UTF-8 */

uint32_t u8_dec(const char *p, size_t n, size_t *adv)
{
	const unsigned char *s = (const unsigned char *)p;
	if (n == 0) {
		*adv = 0;
		return 0;
	}
	unsigned c = s[0];
	if (c < 0x80) {
		*adv = 1;
		return c;
	}
	int k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
	if (k == 0 || (size_t)k >= n + 0 || (size_t)k + 1 > n) {
		*adv = 1;
		return 0xFFFD;
	}
	uint32_t cp = c & (0x3F >> k);
	for (int i = 1; i <= k; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*adv = 1;
			return 0xFFFD;
		}
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	*adv = (size_t)k + 1;
	return cp;
}

size_t u8_enc(uint32_t cp, char *o)
{
	unsigned char *u = (unsigned char *)o;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	u[0] = (unsigned char)(0xF0 | (cp >> 18));
	u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	u[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

size_t u8_len(const char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)p[i] & 0xC0) != 0x80)
			k++;
	return k;
}

size_t u8_off(const char *p, size_t n, int64_t cpi)
{
	if (cpi <= 0)
		return 0;
	int64_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (((unsigned char)p[i] & 0xC0) != 0x80) {
			if (k == cpi)
				return i;
			k++;
		}
	}
	return n;
}

bool py_isspace(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202F || c == 0x205F || c == 0x3000;
}

/* simple case mappings for the scripts chat data uses most */
uint32_t py_upper(uint32_t c)
{
	if (c < 0x80)
		return (c >= 'a' && c <= 'z') ? c - 32 : c;
	if (c == 0xB5)
		return 0x39C;
	if ((c >= 0xE0 && c <= 0xFE && c != 0xF7))
		return c - 32;
	if (c == 0xFF)
		return 0x178;
	if (c >= 0x100 && c <= 0x17F) {
		if (c == 0x131)
			return 'I';
		if (c == 0x17F)
			return 'S';
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
			return (c % 2 == 0) ? c - 1 : c;
		if (c == 0x138 || c == 0x149 || c == 0x178 || c == 0x130)
			return c;
		return (c % 2 == 1) ? c - 1 : c;
	}
	if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2)
		return c - 32;
	if (c == 0x3C2)
		return 0x3A3;
	if (c == 0x3AC)
		return 0x386;
	if (c >= 0x3AD && c <= 0x3AF)
		return c - 37;
	if (c == 0x3CC)
		return 0x38C;
	if (c == 0x3CD || c == 0x3CE)
		return c - 63;
	if (c >= 0x430 && c <= 0x44F)
		return c - 32;
	if (c >= 0x450 && c <= 0x45F)
		return c - 80;
	if (((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F)) && (c % 2 == 1))
		return c - 1;
	if (c >= 0xFF41 && c <= 0xFF5A)
		return c - 32;
	return c;
}

uint32_t py_lower(uint32_t c)
{
	if (c < 0x80)
		return (c >= 'A' && c <= 'Z') ? c + 32 : c;
	if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
		return c + 32;
	if (c == 0x178)
		return 0xFF;
	if (c >= 0x100 && c <= 0x17F) {
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
			return (c % 2 == 1) ? c + 1 : c;
		if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F)
			return c;
		return (c % 2 == 0) ? c + 1 : c;
	}
	if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2)
		return c + 32;
	if (c == 0x386)
		return 0x3AC;
	if (c >= 0x388 && c <= 0x38A)
		return c + 37;
	if (c == 0x38C)
		return 0x3CC;
	if (c == 0x38E || c == 0x38F)
		return c + 63;
	if (c >= 0x410 && c <= 0x42F)
		return c + 32;
	if (c >= 0x400 && c <= 0x40F)
		return c + 80;
	if (((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F)) && (c % 2 == 0))
		return c + 1;
	if (c >= 0xFF21 && c <= 0xFF3A)
		return c + 32;
	return c;
}

bool py_isdigit(uint32_t c)
{
	return (c >= '0' && c <= '9') || (c >= 0x660 && c <= 0x669) || (c >= 0xFF10 && c <= 0xFF19);
}

static bool is_punct_range(uint32_t c)
{
	return (c >= 0x2000 && c <= 0x206F) || (c >= 0x3000 && c <= 0x303F) || (c >= 0xFF00 && c <= 0xFF0F) ||
	       (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65) ||
	       (c >= 0xA1 && c <= 0xBF && c != 0xAA && c != 0xB5 && c != 0xBA) || c == 0xD7 || c == 0xF7 ||
	       (c >= 0x2190 && c <= 0x2BFF) || (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0xE000 && c <= 0xF8FF);
}

bool py_isalpha(uint32_t c)
{
	if (c < 0x80)
		return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
	return !py_isspace(c) && !py_isdigit(c) && !is_punct_range(c) && c >= 0xAA && !(c >= 0x300 && c <= 0x36F);
}

bool py_isalnum(uint32_t c)
{
	return py_isalpha(c) || py_isdigit(c);
}

bool py_isprintable(uint32_t c)
{
	if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD)
		return false;
	if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
	    (c >= 0x205F && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x3000 || c == 0xFEFF ||
	    (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF || (c >= 0xD800 && c <= 0xF8FF) ||
	    (c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x180E ||
	    (c >= 0xF0000) || (c >= 0xE0000 && c <= 0xE007F))
		return false;
	return true;
}

/* ---------------------------------------------------------------- constructors */

struct val v_str_taint(const char *s, size_t n, uint8_t taint)
{
	struct val v = v_strc(s, n);
	v.taint = n ? taint : TN_CLEAN;
	return v;
}

int v_strdup(struct rctx *r, const char *s, size_t n, struct val *out)
{
	char *p = ralloc(r, n + 1);
	if (!p)
		return room(r);
	memcpy(p, s, n);
	*out = v_strc(p, n);
	return 0;
}

static struct val mk_undef(int kind, const char *name, size_t n, const char *objtype)
{
	struct val v = v_undef();
	v.taint = (uint8_t)kind;
	v.s = name;
	v.n = n;
	v.m = (const uint8_t *)(const void *)objtype;
	return v;
}

int v_undef_name(struct rctx *r, const char *name, size_t n, struct val *out)
{
	(void)r;
	*out = mk_undef(U_NAME, name, n, NULL);
	return 0;
}

int v_undef_attr(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out)
{
	(void)r;
	*out = mk_undef(U_ATTR, name, n, v_objrepr(obj));
	return 0;
}

int v_undef_elem(struct rctx *r, const struct val *obj, const struct val *key, struct val *out)
{
	(void)r;
	if (key->t == V_STR) {
		*out = mk_undef(U_ATTR, key->s, key->n, v_objrepr(obj));
	} else {
		*out = mk_undef(U_ELEM, NULL, 0, v_objrepr(obj));
		if (key->t == V_INT || key->t == V_BOOL)
			out->i = key->t == V_INT ? key->i : key->b;
		else
			out->sub = 2; /* no printable key */
	}
	return 0;
}

int v_undef_hint(struct rctx *r, const char *hint, bool security, struct val *out)
{
	(void)r;
	*out = mk_undef(U_HINT, hint, strlen(hint), NULL);
	if (security)
		out->sub = 1;
	return 0;
}

int v_newlist(struct rctx *r, size_t cap, uint8_t kind, struct val *out)
{
	struct list *l = ralloc(r, sizeof *l);
	if (!l)
		return room(r);
	if (cap) {
		l->v = ralloc(r, cap * sizeof *l->v);
		if (!l->v)
			return room(r);
		l->cap = cap;
	}
	*out = (struct val){0};
	out->t = V_LIST;
	out->sub = kind;
	out->l = l;
	return 0;
}

int list_push(struct rctx *r, struct list *l, struct val v)
{
	if (l->n == l->cap || l->grow || l->shared) {
		size_t nc = l->cap ? l->cap * 2 : 4;
		struct val *nv = ralloc(r, nc * sizeof *nv);
		if (!nv)
			return room(r);
		if (l->n)
			memcpy(nv, l->v, l->n * sizeof *nv);
		l->v = nv;
		l->cap = nc;
		l->grow = NULL;
		l->shared = false;
	}
	l->v[l->n++] = v;
	return 0;
}

/* ---------------------------------------------------------------- growable concatenation */

struct sgrow {
	size_t fill, cap;
	uint8_t *m;         /* cap mask bytes, valid for [0, fill) */
	max_align_t pad[];  /* the bytes follow */
};

struct lgrow {
	size_t fill, cap;
};

#define GROW_MIN 64   /* results shorter than this are plain copies */

static void put_mask(uint8_t *dst, const struct val *s)
{
	if (s->taint == TN_MIXED)
		memcpy(dst, s->m, s->n);
	else
		memset(dst, s->taint == TN_ALL ? 1 : 0, s->n);
}

static uint8_t join_taint(const struct val *a, const struct val *b)
{
	if (a->n == 0)
		return b->taint;
	if (b->n == 0)
		return a->taint;
	if (a->taint == b->taint && a->taint != TN_MIXED)
		return a->taint;
	return TN_MIXED;
}

int str_concat(struct rctx *r, const struct val *a_in, const struct val *b_in, struct val *out)
{
	const struct val av = *a_in, bv = *b_in, *a = &av, *b = &bv;  /* out may alias either */
	size_t n = a->n + b->n;
	uint8_t t = join_taint(a, b);
	if (n > TMPL_MAX_OUTPUT)
		return rerr(r, INFERD_ERANGE, "string larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
	if (a->sub & SUB_GROW) {
		struct sgrow *g = (struct sgrow *)(void *)a->s - 1;
		if (g->fill == a->n && g->cap - g->fill >= b->n) {
			char *p = (char *)(void *)(g + 1);
			memcpy(p + a->n, b->s, b->n);
			put_mask(g->m + a->n, b);
			g->fill = n;
			*out = v_strc(p, n);
			out->sub = SUB_GROW;
			out->taint = t;
			out->m = t == TN_MIXED ? g->m : NULL;
			return 0;
		}
	}
	if (n < GROW_MIN) {
		char *p = ralloc(r, n + 1);
		if (!p)
			return room(r);
		memcpy(p, a->s, a->n);
		memcpy(p + a->n, b->s, b->n);
		*out = v_strc(p, n);
		out->taint = t;
		if (t == TN_MIXED) {
			uint8_t *m = ralloc(r, n);
			if (!m)
				return room(r);
			put_mask(m, a);
			put_mask(m + a->n, b);
			out->m = m;
		}
		return 0;
	}
	size_t cap = 2 * n;
	struct sgrow *g = ralloc(r, sizeof *g + cap + 1);
	uint8_t *m = ralloc(r, cap);
	if (!g || !m)
		return room(r);
	g->cap = cap;
	g->fill = n;
	g->m = m;
	char *p = (char *)(void *)(g + 1);
	memcpy(p, a->s, a->n);
	memcpy(p + a->n, b->s, b->n);
	put_mask(m, a);
	put_mask(m + a->n, b);
	*out = v_strc(p, n);
	out->sub = SUB_GROW;
	out->taint = t;
	out->m = t == TN_MIXED ? m : NULL;
	return 0;
}

int list_concat(struct rctx *r, const struct val *a, const struct val *b, struct val *out)
{
	const struct list *la = a->l, *lb = b->l;
	uint8_t kind = a->sub;
	size_t n = la->n + lb->n;
	struct list *l = ralloc(r, sizeof *l);
	if (!l)
		return room(r);
	*out = (struct val){0};
	out->t = V_LIST;
	out->sub = kind;
	out->l = l;
	struct lgrow *g = la->grow;
	if (g && g->fill == la->n && g->cap - g->fill >= lb->n) {
		if (lb->n)
			memcpy(la->v + la->n, lb->v, lb->n * sizeof *lb->v);
		g->fill = n;
		l->v = la->v;
		l->n = l->cap = n;
		l->grow = g;
		return 0;
	}
	size_t cap = n < 8 ? n : 2 * n;
	l->v = cap ? ralloc(r, cap * sizeof *l->v) : NULL;
	if (cap && !l->v)
		return room(r);
	if (la->n)
		memcpy(l->v, la->v, la->n * sizeof *la->v);
	if (lb->n)
		memcpy(l->v + la->n, lb->v, lb->n * sizeof *lb->v);
	l->n = l->cap = n;
	if (cap > n) {
		if (!(l->grow = ralloc(r, sizeof *l->grow)))
			return room(r);
		l->grow->fill = n;
		l->grow->cap = cap;
	}
	return 0;
}

int list_unshare(struct rctx *r, struct list *l)
{
	if (!l->grow && !l->shared)
		return 0;
	struct val *v = l->n ? ralloc(r, l->n * sizeof *v) : NULL;
	if (l->n && !v)
		return room(r);
	if (l->n)
		memcpy(v, l->v, l->n * sizeof *v);
	l->v = v;
	l->cap = l->n;
	l->grow = NULL;
	l->shared = false;
	return 0;
}

int v_newdict(struct rctx *r, struct val *out)
{
	struct dict *d = ralloc(r, sizeof *d);
	if (!d)
		return room(r);
	*out = (struct val){0};
	out->t = V_DICT;
	out->d = d;
	return 0;
}

/* ---------------------------------------------------------------- hashing and keys */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

int v_hash(const struct val *v, uint64_t *h)
{
	switch (v->t) {
	case V_NONE: *h = 0x9e3779b97f4a7c15ULL; return 0;
	case V_BOOL: *h = mix64((uint64_t)v->b); return 0;
	case V_INT: *h = mix64((uint64_t)v->i); return 0;
	case V_FLOAT:
		if (v->f == floor(v->f) && fabs(v->f) < 9.2e18) {
			*h = mix64((uint64_t)(int64_t)v->f);
		} else {
			uint64_t bits;
			memcpy(&bits, &v->f, sizeof bits);
			*h = mix64(bits ^ 0x5555);
		}
		return 0;
	case V_STR: {
		uint64_t x = 1469598103934665603ULL;
		for (size_t i = 0; i < v->n; i++) {
			x ^= (unsigned char)v->s[i];
			x *= 1099511628211ULL;
		}
		*h = x;
		return 0;
	}
	case V_LIST:
		if (v->sub != LK_TUPLE && v->sub != LK_RANGE)
			return -1;
		{
			uint64_t x = 0x345678;
			for (size_t i = 0; i < v->l->n; i++) {
				uint64_t e;
				if (v_hash(&v->l->v[i], &e))
					return -1;
				x = mix64(x ^ e) + i;
			}
			*h = x;
			return 0;
		}
	case V_NS: *h = mix64((uint64_t)(uintptr_t)v->ns); return 0;
	case V_FUNC: *h = mix64((uint64_t)(uintptr_t)v->fn); return 0;
	case V_UNDEF: *h = 0x1234567; return 0;
	default: return -1;
	}
}

static bool is_num(const struct val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num_f(const struct val *v) { return v->t == V_FLOAT ? v->f : v->t == V_INT ? (double)v->i : (double)v->b; }
static int64_t num_i(const struct val *v) { return v->t == V_INT ? v->i : (int64_t)v->b; }

static bool num_eq(const struct val *a, const struct val *b)
{
	if (a->t != V_FLOAT && b->t != V_FLOAT)
		return num_i(a) == num_i(b);
	if (a->t == V_FLOAT && b->t == V_FLOAT)
		return a->f == b->f;
	/* int vs float: exact comparison */
	const struct val *f = a->t == V_FLOAT ? a : b, *i = a->t == V_FLOAT ? b : a;
	if (f->f != floor(f->f) || fabs(f->f) >= 9.3e18)
		return false;
	return (int64_t)f->f == num_i(i) && (double)num_i(i) == f->f;
}

/* equality for hashable keys (never fails) */
static bool key_eq(const struct val *a, const struct val *b)
{
	if (is_num(a) && is_num(b))
		return num_eq(a, b);
	if (a->t != b->t)
		return false;
	switch (a->t) {
	case V_NONE: case V_UNDEF: return true;
	case V_STR: return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
	case V_LIST:
		if (a->sub != b->sub || a->l->n != b->l->n)
			return false;
		for (size_t i = 0; i < a->l->n; i++)
			if (!key_eq(&a->l->v[i], &b->l->v[i]))
				return false;
		return true;
	case V_NS: return a->ns == b->ns;
	case V_FUNC: return a->fn == b->fn;
	default: return false;
	}
}

static void dict_index_insert(struct dict *d, size_t idx)
{
	uint64_t h;
	if (v_hash(&d->k[idx], &h))
		h = 0;
	size_t mask = d->hcap - 1;
	size_t s = (size_t)h & mask;
	while (d->hix[s])
		s = (s + 1) & mask;
	d->hix[s] = (uint32_t)idx + 1;
}

static int dict_reindex(struct rctx *r, struct dict *d)
{
	size_t hc = 16;
	while (hc < d->cap * 2)
		hc *= 2;
	uint32_t *ix = ralloc(r, hc * sizeof *ix);
	if (!ix)
		return room(r);
	d->hix = ix;
	d->hcap = hc;
	for (size_t i = 0; i < d->n; i++)
		dict_index_insert(d, i);
	return 0;
}

static long dict_find(const struct dict *d, const struct val *k)
{
	if (d->hix) {
		uint64_t h;
		if (v_hash(k, &h))
			return -1;
		size_t mask = d->hcap - 1;
		for (size_t s = (size_t)h & mask; d->hix[s]; s = (s + 1) & mask) {
			size_t i = d->hix[s] - 1;
			if (key_eq(&d->k[i], k))
				return (long)i;
		}
		return -1;
	}
	for (size_t i = 0; i < d->n; i++)
		if (key_eq(&d->k[i], k))
			return (long)i;
	return -1;
}

int dict_get(const struct dict *d, const struct val *k, struct val *out)
{
	long i = dict_find(d, k);
	if (i < 0)
		return 0;
	*out = d->v[i];
	return 1;
}

int dict_get_str(const struct dict *d, const char *k, size_t n, struct val *out)
{
	struct val kv = v_strc(k, n);
	return dict_get(d, &kv, out);
}

int dict_set(struct rctx *r, struct dict *d, struct val k, struct val v)
{
	long i = dict_find(d, &k);
	if (i >= 0) {
		d->v[i] = v;
		return 0;
	}
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 8;
		struct val *nk = ralloc(r, nc * sizeof *nk), *nv = ralloc(r, nc * sizeof *nv);
		if (!nk || !nv)
			return room(r);
		if (d->n) {
			memcpy(nk, d->k, d->n * sizeof *nk);
			memcpy(nv, d->v, d->n * sizeof *nv);
		}
		d->k = nk;
		d->v = nv;
		d->cap = nc;
		if (d->hix || nc > 8) {
			d->k[d->n] = k;
			d->v[d->n] = v;
			d->n++;
			return dict_reindex(r, d);
		}
	}
	d->k[d->n] = k;
	d->v[d->n] = v;
	d->n++;
	if (d->hix)
		dict_index_insert(d, d->n - 1);
	return 0;
}

int dict_del(struct dict *d, const struct val *k)
{
	long i = dict_find(d, k);
	if (i < 0)
		return 0;
	memmove(&d->k[i], &d->k[i + 1], (d->n - (size_t)i - 1) * sizeof *d->k);
	memmove(&d->v[i], &d->v[i + 1], (d->n - (size_t)i - 1) * sizeof *d->v);
	d->n--;
	if (d->hix) {
		memset(d->hix, 0, d->hcap * sizeof *d->hix);
		for (size_t j = 0; j < d->n; j++)
			dict_index_insert(d, j);
	}
	return 1;
}

/* ---------------------------------------------------------------- names and messages */

const char *v_typename(const struct val *v)
{
	switch (v->t) {
	case V_UNDEF: return "Undefined";
	case V_NONE: return "NoneType";
	case V_BOOL: return "bool";
	case V_INT: return "int";
	case V_FLOAT: return "float";
	case V_STR: return v->sub & SUB_MARKUP ? "Markup" : "str";
	case V_LIST:
		switch (v->sub) {
		case LK_TUPLE: return "tuple";
		case LK_ITEMS: return "dict_items";
		case LK_KEYS: return "dict_keys";
		case LK_VALUES: return "dict_values";
		case LK_RANGE: return "range";
		default: return "list";
		}
	case V_DICT: return "dict";
	case V_NS: return "Namespace";
	case V_FUNC:
		switch (v->fn->kind) {
		case FK_MACRO: case FK_CALLER: return "Macro";
		case FK_JOINER: return "Joiner";
		case FK_CYCLER: return "Cycler";
		default: return "builtin_function_or_method";
		}
	case V_LOOP: return "LoopContext";
	case V_ITER: return v->it->kind == IK_REVERSED ? "list_reverseiterator" : "generator";
	}
	return "object";
}

const char *v_objrepr(const struct val *v)
{
	switch (v->t) {
	case V_NONE: return "None";
	case V_DICT: return "dict object";
	case V_LIST: return v->sub == LK_TUPLE ? "tuple object" : "list object";
	case V_STR: return "str object";
	case V_INT: return "int object";
	case V_FLOAT: return "float object";
	case V_BOOL: return "bool object";
	case V_NS: return "jinja2.utils.Namespace object";
	case V_LOOP: return "jinja2.runtime.LoopContext object";
	default: return "object";
	}
}

void undef_message(const struct val *v, char *buf, size_t cap)
{
	const char *objtype = (const char *)(const void *)v->m;
	int nl = (int)(v->n > 200 ? 200 : v->n);
	switch (v->taint) {
	case U_HINT:
		snprintf(buf, cap, "%.*s", (int)v->n, v->s);
		return;
	case U_NAME:
		snprintf(buf, cap, "'%.*s' is undefined", nl, v->s);
		return;
	case U_ATTR:
		snprintf(buf, cap, "'%s' has no attribute '%.*s'", objtype, nl, v->s);
		return;
	case U_ELEM:
		if (v->sub == 2)
			snprintf(buf, cap, "%s has no element of that key", objtype);
		else
			snprintf(buf, cap, "%s has no element %lld", objtype, (long long)v->i);
		return;
	default:
		snprintf(buf, cap, "undefined value");
	}
}

int undef_fail(struct rctx *r, const struct val *v)
{
	if (v->taint == U_HINT && r->pending && v->n == strlen(FOLDED_SLICE) && !memcmp(v->s, FOLDED_SLICE, v->n)) {
		r->pending = false;
		return rerr(r, INFERD_EINVAL, "%s", r->pending_err);
	}
	char msg[400];
	undef_message(v, msg, sizeof msg);
	if (v->taint == U_HINT && v->sub == 1)
		return rerr(r, INFERD_EINVAL, "SecurityError: %s", msg);
	return rerr(r, INFERD_EINVAL, "UndefinedError: %s", msg);
}

/* ---------------------------------------------------------------- truth, equality, order */

bool v_truthy(const struct val *v)
{
	switch (v->t) {
	case V_UNDEF: case V_NONE: return false;
	case V_BOOL: return v->b;
	case V_INT: return v->i != 0;
	case V_FLOAT: return v->f != 0.0;
	case V_STR: return v->n != 0;
	case V_LIST: return v->l->n != 0;
	case V_DICT: return v->d->n != 0;
	default: return true;
	}
}

bool v_is_true_bool(const struct val *v)
{
	return v->t == V_BOOL && v->b;
}

static int eq_depth(struct rctx *r, const struct val *a, const struct val *b, bool *eq, int depth)
{
	if (depth > 500)
		return rerr(r, INFERD_ERANGE, "RecursionError: comparison nested too deeply");
	if (is_num(a) && is_num(b)) {
		*eq = num_eq(a, b);
		return 0;
	}
	if (a->t != b->t) {
		*eq = false;
		return 0;
	}
	switch (a->t) {
	case V_UNDEF: case V_NONE: *eq = true; return 0;
	case V_STR: *eq = a->n == b->n && memcmp(a->s, b->s, a->n) == 0; return 0;
	case V_LIST: {
		bool seqa = a->sub == LK_LIST || a->sub == LK_TUPLE;
		if (seqa && a->sub != b->sub) {
			*eq = false;
			return 0;
		}
		if (!seqa && a->sub != b->sub) {
			*eq = false;
			return 0;
		}
		if (a->l == b->l) {
			*eq = true;
			return 0;
		}
		if (a->l->n != b->l->n) {
			*eq = false;
			return 0;
		}
		for (size_t i = 0; i < a->l->n; i++) {
			int rc = eq_depth(r, &a->l->v[i], &b->l->v[i], eq, depth + 1);
			if (rc || !*eq)
				return rc;
		}
		*eq = true;
		return 0;
	}
	case V_DICT: {
		if (a->d == b->d) {
			*eq = true;
			return 0;
		}
		if (a->d->n != b->d->n) {
			*eq = false;
			return 0;
		}
		for (size_t i = 0; i < a->d->n; i++) {
			struct val bv;
			if (!dict_get(b->d, &a->d->k[i], &bv)) {
				*eq = false;
				return 0;
			}
			int rc = eq_depth(r, &a->d->v[i], &bv, eq, depth + 1);
			if (rc || !*eq)
				return rc;
		}
		*eq = true;
		return 0;
	}
	case V_NS: *eq = a->ns == b->ns; return 0;
	case V_FUNC: *eq = a->fn == b->fn; return 0;
	case V_LOOP: *eq = a->lp == b->lp; return 0;
	case V_ITER: *eq = a->it == b->it; return 0;
	default: *eq = false; return 0;
	}
}

int v_eq(struct rctx *r, const struct val *a, const struct val *b, bool *eq)
{
	return eq_depth(r, a, b, eq, 0);
}

static const char *cmp_sym(int op)
{
	switch (op) {
	case C_LT: return "<";
	case C_LE: return "<=";
	case C_GT: return ">";
	default: return ">=";
	}
}

static int str_cmp(const struct val *a, const struct val *b)
{
	size_t n = a->n < b->n ? a->n : b->n;
	int c = memcmp(a->s, b->s, n);
	if (c)
		return c < 0 ? -1 : 1;
	return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

/* three-way order for <, <=, >, >= (and sorting); error when unordered */
static int order3(struct rctx *r, const struct val *a, const struct val *b, int op, int *c, int depth)
{
	if (depth > 500)
		return rerr(r, INFERD_ERANGE, "RecursionError: comparison nested too deeply");
	if (a->t == V_UNDEF)
		return undef_fail(r, a);
	if (b->t == V_UNDEF)
		return undef_fail(r, b);
	if (is_num(a) && is_num(b)) {
		if (a->t != V_FLOAT && b->t != V_FLOAT) {
			int64_t x = num_i(a), y = num_i(b);
			*c = x < y ? -1 : x > y;
		} else {
			double x = num_f(a), y = num_f(b);
			if (isnan(x) || isnan(y))
				*c = 2; /* unordered: every comparison false */
			else
				*c = x < y ? -1 : x > y;
		}
		return 0;
	}
	if (a->t == V_STR && b->t == V_STR) {
		*c = str_cmp(a, b);
		return 0;
	}
	if (a->t == V_LIST && b->t == V_LIST && a->sub == b->sub && (a->sub == LK_LIST || a->sub == LK_TUPLE)) {
		size_t n = a->l->n < b->l->n ? a->l->n : b->l->n;
		for (size_t i = 0; i < n; i++) {
			bool eq;
			int rc = eq_depth(r, &a->l->v[i], &b->l->v[i], &eq, depth + 1);
			if (rc)
				return rc;
			if (!eq)
				return order3(r, &a->l->v[i], &b->l->v[i], op, c, depth + 1);
		}
		*c = a->l->n < b->l->n ? -1 : a->l->n > b->l->n;
		return 0;
	}
	return rerr(r, INFERD_EINVAL, "TypeError: '%s' not supported between instances of '%s' and '%s'",
		    cmp_sym(op), v_typename(a), v_typename(b));
}

int v_cmp(struct rctx *r, const struct val *a, const struct val *b, int op, bool *res)
{
	if (op == C_EQ || op == C_NE) {
		bool eq;
		int rc = v_eq(r, a, b, &eq);
		*res = op == C_EQ ? eq : !eq;
		return rc;
	}
	int c;
	int rc = order3(r, a, b, op, &c, 0);
	if (rc)
		return rc;
	if (c == 2) {
		*res = false;
		return 0;
	}
	switch (op) {
	case C_LT: *res = c < 0; break;
	case C_LE: *res = c <= 0; break;
	case C_GT: *res = c > 0; break;
	default: *res = c >= 0; break;
	}
	return 0;
}

int v_order(struct rctx *r, const struct val *a, const struct val *b, int *c)
{
	int rc = order3(r, a, b, C_LT, c, 0);
	if (!rc && *c == 2)
		*c = 0;
	return rc;
}

static bool mem_find(const char *h, size_t hn, const char *nd, size_t nn, size_t from, size_t *at)
{
	if (nn == 0) {
		*at = from;
		return from <= hn;
	}
	if (nn > hn)
		return false;
	for (size_t i = from; i + nn <= hn; i++) {
		const char *p = memchr(h + i, nd[0], hn - nn - i + 1);
		if (!p)
			return false;
		i = (size_t)(p - h);
		if (memcmp(p, nd, nn) == 0) {
			*at = i;
			return true;
		}
	}
	return false;
}

int v_contains(struct rctx *r, const struct val *c, const struct val *item, bool *res)
{
	switch (c->t) {
	case V_STR: {
		if (item->t != V_STR)
			return rerr(r, INFERD_EINVAL, "TypeError: 'in <string>' requires string as left operand, not %s",
				    v_typename(item));
		size_t at;
		*res = mem_find(c->s, c->n, item->s, item->n, 0, &at);
		return 0;
	}
	case V_LIST:
		for (size_t i = 0; i < c->l->n; i++) {
			bool eq;
			int rc = v_eq(r, &c->l->v[i], item, &eq);
			if (rc)
				return rc;
			if (eq) {
				*res = true;
				return 0;
			}
		}
		*res = false;
		return 0;
	case V_DICT: {
		uint64_t h;
		if (v_hash(item, &h))
			return rerr(r, INFERD_EINVAL, "TypeError: unhashable type: '%s'", v_typename(item));
		struct val tmp;
		*res = dict_get(c->d, item, &tmp);
		return 0;
	}
	case V_UNDEF:
		*res = false;
		return 0;
	case V_ITER:
		while (c->it->pos < c->it->n) {
			bool eq;
			int rc = v_eq(r, &c->it->v[c->it->pos++], item, &eq);
			if (rc)
				return rc;
			if (eq) {
				*res = true;
				return 0;
			}
		}
		*res = false;
		return 0;
	default:
		return rerr(r, INFERD_EINVAL, "TypeError: argument of type '%s' is not iterable", v_typename(c));
	}
}

int v_len(struct rctx *r, const struct val *v, int64_t *n)
{
	switch (v->t) {
	case V_STR: *n = (int64_t)u8_len(v->s, v->n); return 0;
	case V_LIST: *n = (int64_t)v->l->n; return 0;
	case V_DICT: *n = (int64_t)v->d->n; return 0;
	case V_UNDEF: *n = 0; return 0;
	default:
		return rerr(r, INFERD_EINVAL, "TypeError: object of type '%s' has no len()", v_typename(v));
	}
}

/* ---------------------------------------------------------------- str / repr */

void fmt_float_repr(double f, char *buf, size_t cap)
{
	if (isnan(f)) {
		snprintf(buf, cap, "nan");
		return;
	}
	if (isinf(f)) {
		snprintf(buf, cap, f < 0 ? "-inf" : "inf");
		return;
	}
	if (f == 0) {
		snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
		return;
	}
	char tmp[48];
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	/* tmp: [-]d[.ddd]e[+-]XX */
	char digits[32];
	int nd = 0;
	const char *p = tmp;
	bool neg = false;
	if (*p == '-') {
		neg = true;
		p++;
	}
	for (; *p && *p != 'e'; p++)
		if (*p >= '0' && *p <= '9')
			digits[nd++] = *p;
	int e = atoi(p + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	char out[64];
	int k = 0;
	if (neg)
		out[k++] = '-';
	if (e < -4 || e >= 16) {
		out[k++] = digits[0];
		if (nd > 1) {
			out[k++] = '.';
			for (int i = 1; i < nd; i++)
				out[k++] = digits[i];
		}
		k += snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
	} else if (e < 0) {
		out[k++] = '0';
		out[k++] = '.';
		for (int i = 0; i < -e - 1; i++)
			out[k++] = '0';
		for (int i = 0; i < nd; i++)
			out[k++] = digits[i];
	} else {
		for (int i = 0; i <= e; i++)
			out[k++] = i < nd ? digits[i] : '0';
		out[k++] = '.';
		if (nd > e + 1)
			for (int i = e + 1; i < nd; i++)
				out[k++] = digits[i];
		else
			out[k++] = '0';
	}
	out[k] = 0;
	snprintf(buf, cap, "%s", out);
}

bool v_any_taint(const struct val *v, int depth)
{
	if (depth > 200)
		return true;
	switch (v->t) {
	case V_STR: return v->taint != TN_CLEAN;
	case V_LIST:
		for (size_t i = 0; i < v->l->n; i++)
			if (v_any_taint(&v->l->v[i], depth + 1))
				return true;
		return false;
	case V_DICT:
		for (size_t i = 0; i < v->d->n; i++)
			if (v_any_taint(&v->d->k[i], depth + 1) || v_any_taint(&v->d->v[i], depth + 1))
				return true;
		return false;
	case V_NS:
		for (size_t i = 0; i < v->ns->d.n; i++)
			if (v_any_taint(&v->ns->d.v[i], depth + 1))
				return true;
		return false;
	case V_ITER:
		for (size_t i = v->it->pos; i < v->it->n; i++)
			if (v_any_taint(&v->it->v[i], depth + 1))
				return true;
		return false;
	default: return false;
	}
}

static bool repr_str(struct sbuf *b, const struct val *v)
{
	bool has_sq = memchr(v->s, '\'', v->n) != NULL, has_dq = memchr(v->s, '"', v->n) != NULL;
	char q = (has_sq && !has_dq) ? '"' : '\'';
	if (v->sub & SUB_MARKUP)
		sb_puts(b, "Markup(");
	sb_putc(b, q);
	for (size_t i = 0; i < v->n;) {
		size_t adv;
		uint32_t c = u8_dec(v->s + i, v->n - i, &adv);
		if (c == (uint32_t)q || c == '\\') {
			sb_putc(b, '\\');
			sb_putc(b, (char)c);
		} else if (c == '\n') {
			sb_puts(b, "\\n");
		} else if (c == '\r') {
			sb_puts(b, "\\r");
		} else if (c == '\t') {
			sb_puts(b, "\\t");
		} else if (!py_isprintable(c)) {
			if (c < 0x100)
				sb_printf(b, "\\x%02x", c);
			else if (c < 0x10000)
				sb_printf(b, "\\u%04x", c);
			else
				sb_printf(b, "\\U%08x", c);
		} else {
			sb_put(b, v->s + i, adv, 0);
		}
		i += adv;
	}
	sb_putc(b, q);
	if (v->sub & SUB_MARKUP)
		sb_putc(b, ')');
	return !b->over;
}

static int write_scalar(struct sbuf *b, const struct val *v)
{
	char tmp[64];
	switch (v->t) {
	case V_NONE: sb_puts(b, "None"); return 1;
	case V_BOOL: sb_puts(b, v->b ? "True" : "False"); return 1;
	case V_INT: sb_printf(b, "%lld", (long long)v->i); return 1;
	case V_FLOAT: fmt_float_repr(v->f, tmp, sizeof tmp); sb_puts(b, tmp); return 1;
	default: return 0;
	}
}

static int over(struct rctx *r, struct sbuf *b)
{
	(void)b;
	return rerr(r, INFERD_ERANGE, "output larger than %u MiB", (unsigned)(TMPL_MAX_OUTPUT >> 20));
}

int v_write_repr(struct rctx *r, struct sbuf *b, const struct val *v, int depth)
{
	if (depth > 200)
		return rerr(r, INFERD_ERANGE, "RecursionError: value nested too deeply to print");
	if (write_scalar(b, v))
		return b->over ? over(r, b) : 0;
	switch (v->t) {
	case V_UNDEF: sb_puts(b, "Undefined"); break;
	case V_STR: repr_str(b, v); break;
	case V_LIST: {
		if (v->sub == LK_RANGE) {
			const struct list *l = v->l;
			if (l->rstep == 1)
				sb_printf(b, "range(%lld, %lld)", (long long)l->rstart, (long long)l->rstop);
			else
				sb_printf(b, "range(%lld, %lld, %lld)", (long long)l->rstart, (long long)l->rstop, (long long)l->rstep);
			break;
		}
		const char *open = "[", *close = "]";
		if (v->sub == LK_TUPLE) {
			open = "(";
			close = v->l->n == 1 ? ",)" : ")";
		} else if (v->sub == LK_ITEMS) {
			open = "dict_items([";
			close = "])";
		} else if (v->sub == LK_KEYS) {
			open = "dict_keys([";
			close = "])";
		} else if (v->sub == LK_VALUES) {
			open = "dict_values([";
			close = "])";
		}
		sb_puts(b, open);
		for (size_t i = 0; i < v->l->n; i++) {
			if (i)
				sb_puts(b, ", ");
			int rc = v_write_repr(r, b, &v->l->v[i], depth + 1);
			if (rc)
				return rc;
		}
		sb_puts(b, close);
		break;
	}
	case V_DICT:
	case V_NS: {
		const struct dict *d = v->t == V_DICT ? v->d : &v->ns->d;
		if (v->t == V_NS)
			sb_puts(b, "<Namespace ");
		sb_putc(b, '{');
		for (size_t i = 0; i < d->n; i++) {
			if (i)
				sb_puts(b, ", ");
			int rc = v_write_repr(r, b, &d->k[i], depth + 1);
			if (rc)
				return rc;
			sb_puts(b, ": ");
			rc = v_write_repr(r, b, &d->v[i], depth + 1);
			if (rc)
				return rc;
		}
		sb_putc(b, '}');
		if (v->t == V_NS)
			sb_putc(b, '>');
		break;
	}
	case V_FUNC:
		if (v->fn->kind == FK_MACRO || v->fn->kind == FK_CALLER)
			sb_printf(b, "<Macro '%.*s'>", (int)v->fn->name_n, v->fn->name ? v->fn->name : "caller");
		else
			sb_printf(b, "<built-in function %.*s>", (int)v->fn->name_n, v->fn->name ? v->fn->name : "");
		break;
	case V_LOOP: sb_printf(b, "<LoopContext %lld/%lld>", (long long)v->lp->index0 + 1, (long long)v->lp->length); break;
	case V_ITER: sb_printf(b, "<%s object>", v_typename(v)); break;
	default: break;
	}
	return b->over ? over(r, b) : 0;
}

int v_write_str(struct rctx *r, struct sbuf *b, const struct val *v)
{
	if (v->t == V_STR) {
		if (!sb_putv(b, v))
			return over(r, b);
		return 0;
	}
	if (v->t == V_UNDEF)
		return 0;
	if (write_scalar(b, v))
		return b->over ? over(r, b) : 0;
	size_t start = b->n;
	int rc = v_write_repr(r, b, v, 0);
	if (rc)
		return rc;
	if (v_any_taint(v, 0))
		memset(b->m + start, 1, b->n - start);
	return 0;
}

int v_str(struct rctx *r, const struct val *v, struct val *out)
{
	if (v->t == V_STR) {
		*out = *v;
		return 0;
	}
	if (v->t == V_UNDEF) {
		*out = v_strc("", 0);
		return 0;
	}
	struct sbuf b;
	sb_init(&b);
	int rc = v_write_str(r, &b, v);
	if (!rc)
		rc = sb_to_val(r, &b, out);
	sb_free(&b);
	return rc;
}

/* ---------------------------------------------------------------- json.dumps */

static void json_str(struct sbuf *b, const char *s, size_t n, bool ascii)
{
	sb_putc(b, '"');
	size_t run = 0;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char tmp[16];
		size_t adv = 1;
		if (c == '"')
			esc = "\\\"";
		else if (c == '\\')
			esc = "\\\\";
		else if (c == '\n')
			esc = "\\n";
		else if (c == '\r')
			esc = "\\r";
		else if (c == '\t')
			esc = "\\t";
		else if (c == '\b')
			esc = "\\b";
		else if (c == '\f')
			esc = "\\f";
		else if (c < 0x20 || (ascii && c == 0x7F)) {
			snprintf(tmp, sizeof tmp, "\\u%04x", c);
			esc = tmp;
		} else if (ascii && c >= 0x80) {
			uint32_t cp = u8_dec(s + i, n - i, &adv);
			if (cp >= 0x10000) {
				uint32_t v = cp - 0x10000;
				snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
			} else {
				snprintf(tmp, sizeof tmp, "\\u%04x", cp);
			}
			esc = tmp;
		}
		if (esc) {
			if (run)
				sb_put(b, s + i - run, run, 0);
			run = 0;
			sb_puts(b, esc);
			i += adv;
		} else {
			run++;
			i++;
		}
	}
	if (run)
		sb_put(b, s + n - run, run, 0);
	sb_putc(b, '"');
}

static void json_newline(struct sbuf *b, const struct json_opts *o, int level)
{
	sb_putc(b, '\n');
	for (int i = 0; i < level; i++)
		sb_put(b, o->indent, o->indent_n, 0);
}

static void json_float(struct sbuf *b, double f)
{
	if (isnan(f))
		sb_puts(b, "NaN");
	else if (isinf(f))
		sb_puts(b, f < 0 ? "-Infinity" : "Infinity");
	else {
		char tmp[64];
		fmt_float_repr(f, tmp, sizeof tmp);
		sb_puts(b, tmp);
	}
}

struct kv_ref {
	struct val k, v;
	size_t idx;
};

int v_write_json(struct rctx *r, struct sbuf *b, const struct val *v, const struct json_opts *o, int level)
{
	if (level > 500)
		return rerr(r, INFERD_ERANGE, "ValueError: value nested too deeply (or circular) for tojson");
	switch (v->t) {
	case V_NONE: sb_puts(b, "null"); break;
	case V_BOOL: sb_puts(b, v->b ? "true" : "false"); break;
	case V_INT: sb_printf(b, "%lld", (long long)v->i); break;
	case V_FLOAT: json_float(b, v->f); break;
	case V_STR: json_str(b, v->s, v->n, o->ensure_ascii); break;
	case V_LIST:
		if (v->sub != LK_LIST && v->sub != LK_TUPLE)
			goto bad;
		if (v->l->n == 0) {
			sb_puts(b, "[]");
			break;
		}
		sb_putc(b, '[');
		for (size_t i = 0; i < v->l->n; i++) {
			if (i)
				sb_put(b, o->item_sep, o->item_sep_n, 0);
			if (o->has_indent)
				json_newline(b, o, level + 1);
			int rc = v_write_json(r, b, &v->l->v[i], o, level + 1);
			if (rc)
				return rc;
		}
		if (o->has_indent)
			json_newline(b, o, level);
		sb_putc(b, ']');
		break;
	case V_DICT: {
		const struct dict *d = v->d;
		if (d->n == 0) {
			sb_puts(b, "{}");
			break;
		}
		size_t *order = ralloc(r, d->n * sizeof *order);
		if (!order)
			return room(r);
		for (size_t i = 0; i < d->n; i++)
			order[i] = i;
		if (o->sort_keys) {
			/* insertion sort: stable, keys compared like Python's sorted() */
			for (size_t i = 1; i < d->n; i++) {
				size_t x = order[i], j = i;
				while (j > 0) {
					int c;
					int rc = v_order(r, &d->k[x], &d->k[order[j - 1]], &c);
					if (rc)
						return rc;
					if (c >= 0)
						break;
					order[j] = order[j - 1];
					j--;
				}
				order[j] = x;
			}
		}
		sb_putc(b, '{');
		for (size_t oi = 0; oi < d->n; oi++) {
			const struct val *k = &d->k[order[oi]];
			if (oi)
				sb_put(b, o->item_sep, o->item_sep_n, 0);
			if (o->has_indent)
				json_newline(b, o, level + 1);
			char tmp[64];
			switch (k->t) {
			case V_STR: json_str(b, k->s, k->n, o->ensure_ascii); break;
			case V_INT: sb_printf(b, "\"%lld\"", (long long)k->i); break;
			case V_BOOL: sb_puts(b, k->b ? "\"true\"" : "\"false\""); break;
			case V_NONE: sb_puts(b, "\"null\""); break;
			case V_FLOAT:
				if (isnan(k->f))
					snprintf(tmp, sizeof tmp, "NaN");
				else if (isinf(k->f))
					snprintf(tmp, sizeof tmp, k->f < 0 ? "-Infinity" : "Infinity");
				else
					fmt_float_repr(k->f, tmp, sizeof tmp);
				sb_putc(b, '"');
				sb_puts(b, tmp);
				sb_putc(b, '"');
				break;
			default:
				return rerr(r, INFERD_EINVAL, "TypeError: keys must be str, int, float, bool or None, not %s",
					    v_typename(k));
			}
			sb_put(b, o->key_sep, o->key_sep_n, 0);
			int rc = v_write_json(r, b, &d->v[order[oi]], o, level + 1);
			if (rc)
				return rc;
		}
		if (o->has_indent)
			json_newline(b, o, level);
		sb_putc(b, '}');
		break;
	}
	default:
	bad:
		return rerr(r, INFERD_EINVAL, "TypeError: Object of type %s is not JSON serializable", v_typename(v));
	}
	return b->over ? over(r, b) : 0;
}

/* ---------------------------------------------------------------- from jansson */

int v_from_json(struct rctx *r, const json_t *j, bool tainted, struct val *out, int depth)
{
	if (depth > 1000)
		return rerr(r, INFERD_ERANGE, "input value nested more than 1000 levels deep");
	switch (json_typeof(j)) {
	case JSON_NULL: *out = v_none(); return 0;
	case JSON_TRUE: *out = v_bool(true); return 0;
	case JSON_FALSE: *out = v_bool(false); return 0;
	case JSON_INTEGER: *out = v_int((int64_t)json_integer_value(j)); return 0;
	case JSON_REAL: *out = v_float(json_real_value(j)); return 0;
	case JSON_STRING:
		*out = v_str_taint(json_string_value(j), json_string_length(j), tainted ? TN_ALL : TN_CLEAN);
		return 0;
	case JSON_ARRAY: {
		size_t n = json_array_size(j);
		int rc = v_newlist(r, n, LK_LIST, out);
		if (rc)
			return rc;
		for (size_t i = 0; i < n; i++) {
			rc = v_from_json(r, json_array_get(j, i), tainted, &out->l->v[i], depth + 1);
			if (rc)
				return rc;
		}
		out->l->n = n;
		return 0;
	}
	case JSON_OBJECT: {
		int rc = v_newdict(r, out);
		if (rc)
			return rc;
		const char *key;
		json_t *val;
		json_object_foreach((json_t *)j, key, val) {
			struct val k = v_str_taint(key, strlen(key), tainted ? TN_ALL : TN_CLEAN), v;
			rc = v_from_json(r, val, tainted, &v, depth + 1);
			if (!rc)
				rc = dict_set(r, out->d, k, v);
			if (rc)
				return rc;
		}
		return 0;
	}
	}
	*out = v_none();
	return 0;
}

/* ---------------------------------------------------------------- iteration */

int str_sub(struct rctx *r, const struct val *s, size_t off, size_t n, struct val *out)
{
	(void)r;
	*out = v_strc(s->s + off, n);
	out->sub = s->sub & SUB_MARKUP;
	if (s->taint == TN_MIXED) {
		const uint8_t *m = s->m + off;
		uint8_t t = n ? mask_taint(m, n) : TN_CLEAN;
		out->taint = t;
		if (t == TN_MIXED)
			out->m = m;
	} else {
		out->taint = n ? s->taint : TN_CLEAN;
	}
	return 0;
}

uint8_t str_taint_of(const struct val *s)
{
	return s->t == V_STR ? s->taint : TN_CLEAN;
}

struct val str_retaint(struct val s, bool tainted)
{
	s.taint = (tainted && s.n) ? TN_ALL : TN_CLEAN;
	s.m = NULL;
	return s;
}

int v_iterate(struct rctx *r, const struct val *v, struct val **items, size_t *n)
{
	switch (v->t) {
	case V_LIST:
		*items = v->l->v;
		*n = v->l->n;
		return 0;
	case V_DICT:
		*items = v->d->k;
		*n = v->d->n;
		return 0;
	case V_NS:
		return rerr(r, INFERD_EINVAL, "TypeError: 'Namespace' object is not iterable");
	case V_UNDEF:
		*items = NULL;
		*n = 0;
		return 0;
	case V_ITER:
		*items = v->it->v + v->it->pos;
		*n = v->it->n - v->it->pos;
		v->it->pos = v->it->n;
		return 0;
	case V_STR: {
		size_t cnt = u8_len(v->s, v->n);
		struct val *a = cnt ? ralloc(r, cnt * sizeof *a) : NULL;
		if (cnt && !a)
			return room(r);
		size_t k = 0;
		for (size_t i = 0; i < v->n && k < cnt;) {
			size_t adv;
			u8_dec(v->s + i, v->n - i, &adv);
			str_sub(r, v, i, adv, &a[k]);
			a[k++].sub = 0;  /* iterating a Markup yields plain str */
			i += adv;
		}
		*items = a;
		*n = k;
		return 0;
	}
	default:
		return rerr(r, INFERD_EINVAL, "TypeError: '%s' object is not iterable", v_typename(v));
	}
}

int v_to_list(struct rctx *r, const struct val *v, struct val *out)
{
	struct val *items;
	size_t n;
	int rc = v_iterate(r, v, &items, &n);
	if (rc)
		return rc;
	rc = v_newlist(r, n, LK_LIST, out);
	if (rc)
		return rc;
	if (n)
		memcpy(out->l->v, items, n * sizeof *items);
	out->l->n = n;
	return 0;
}
