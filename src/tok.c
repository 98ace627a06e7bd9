/*
 * tok.c — encoding, decoding and streaming decoding over the pipeline in
 * tok_impl.h (loaders are in tok_load.c).
 *
 * Encode: invalid UTF-8 becomes U+FFFD; added tokens are matched first
 * (leftmost, longest; special ones only when asked and only in trusted
 * bytes); each text segment is normalized, pre-tokenized into pieces, and
 * each piece goes through BPE. BPE keeps its symbols in a linked list and
 * candidate pairs in a binary heap ordered by (rank, position), so a piece
 * of n characters costs O(n log n), never O(n^2).
 * Decode follows Hugging Face's decoders step by step, then the optional
 * clean-up of spaces before punctuation.
 */
#include "tok_impl.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---------------- small dynamic buffers ---------------- */

struct sbuf {
	char *p;
	size_t n, cap;
	int oom;
};

static void sb_put(struct sbuf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_cp(struct sbuf *b, uint32_t cp)
{
	uint8_t u[4];
	ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, u);
	sb_put(b, u, (size_t)k);
}

struct ibuf {
	int32_t *p;
	int n, cap;
	int oom;
};

static void ib_put(struct ibuf *b, int32_t v)
{
	if (b->oom)
		return;
	if (b->n == b->cap) {
		int cap = b->cap ? b->cap * 2 : 64;
		int32_t *np = realloc(b->p, (size_t)cap * sizeof *np);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	b->p[b->n++] = v;
}

/* ---------------- hash map ---------------- */

static uint32_t fnv(const char *k, uint32_t n)
{
	uint32_t h = 2166136261u;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)k[i]) * 16777619u;
	return h;
}

int smap_init(struct smap *m, uint32_t n)
{
	memset(m, 0, sizeof *m);
	uint32_t cap = 16;
	while (cap < n * 2)
		cap *= 2;
	m->cap = cap;
	m->slot = malloc(cap * sizeof *m->slot);
	m->key = malloc(cap / 2 * sizeof *m->key);
	m->klen = malloc(cap / 2 * sizeof *m->klen);
	m->val = malloc(cap / 2 * sizeof *m->val);
	if (!m->slot || !m->key || !m->klen || !m->val)
		return -1;
	memset(m->slot, 0xff, cap * sizeof *m->slot);
	return 0;
}

void smap_free(struct smap *m)
{
	free(m->slot);
	free(m->key);
	free(m->klen);
	free(m->val);
	memset(m, 0, sizeof *m);
}

int smap_put(struct smap *m, const char *k, uint32_t klen, int32_t v);

static int smap_grow(struct smap *m)
{
	struct smap g;
	if (smap_init(&g, m->cap))
		return -1;
	for (uint32_t i = 0; i < m->n; i++)
		smap_put(&g, m->key[i], m->klen[i], m->val[i]);
	smap_free(m);
	*m = g;
	return 0;
}

int smap_put(struct smap *m, const char *k, uint32_t klen, int32_t v)
{
	if (m->n >= m->cap / 2 && smap_grow(m))
		return -1;
	uint32_t i = fnv(k, klen) & (m->cap - 1);
	while (m->slot[i] >= 0) {
		int32_t e = m->slot[i];
		if (m->klen[e] == klen && memcmp(m->key[e], k, klen) == 0)
			return 1; /* first one wins, as in Hugging Face's vocab maps */
		i = (i + 1) & (m->cap - 1);
	}
	m->slot[i] = (int32_t)m->n;
	m->key[m->n] = k;
	m->klen[m->n] = klen;
	m->val[m->n] = v;
	m->n++;
	return 0;
}

int32_t smap_get(const struct smap *m, const char *k, uint32_t klen)
{
	if (!m->cap)
		return -1;
	uint32_t i = fnv(k, klen) & (m->cap - 1);
	while (m->slot[i] >= 0) {
		int32_t e = m->slot[i];
		if (m->klen[e] == klen && memcmp(m->key[e], k, klen) == 0)
			return m->val[e];
		i = (i + 1) & (m->cap - 1);
	}
	return -1;
}

/* ---------------- merges ---------------- */

static uint64_t mhash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

int tok_add_merge(struct tokenizer *t, int32_t a, int32_t b, int32_t rank)
{
	if (t->n_merges * 2 >= t->mcap) {
		uint32_t cap = t->mcap ? t->mcap * 2 : 1024;
		uint64_t *k = calloc(cap, sizeof *k);
		int32_t *r = malloc(cap * sizeof *r), *s = malloc(cap * sizeof *s);
		if (!k || !r || !s) {
			free(k);
			free(r);
			free(s);
			return -1;
		}
		for (uint32_t i = 0; i < t->mcap; i++) {
			if (!t->mkey[i])
				continue;
			uint32_t j = (uint32_t)mhash(t->mkey[i]) & (cap - 1);
			while (k[j])
				j = (j + 1) & (cap - 1);
			k[j] = t->mkey[i];
			r[j] = t->mrank[i];
			s[j] = t->mres[i];
		}
		free(t->mkey);
		free(t->mrank);
		free(t->mres);
		t->mkey = k;
		t->mrank = r;
		t->mres = s;
		t->mcap = cap;
	}
	/* the merged token must exist */
	struct sbuf cat = {0};
	sb_put(&cat, t->tok[a].text, t->tok[a].len);
	sb_put(&cat, t->tok[b].text, t->tok[b].len);
	if (cat.oom)
		return -1;
	int32_t res = smap_get(&t->vocab, cat.p, (uint32_t)cat.n);
	free(cat.p);
	if (res < 0)
		return 1;
	uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	uint32_t j = (uint32_t)mhash(key) & (t->mcap - 1);
	while (t->mkey[j]) {
		if (t->mkey[j] == key)
			return 0; /* keep the first (best) rank */
		j = (j + 1) & (t->mcap - 1);
	}
	t->mkey[j] = key;
	t->mrank[j] = rank;
	t->mres[j] = res;
	t->n_merges++;
	return 0;
}

static int merge_get(const struct tokenizer *t, int32_t a, int32_t b, int32_t *res)
{
	if (!t->mcap)
		return -1;
	uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
	uint32_t j = (uint32_t)mhash(key) & (t->mcap - 1);
	while (t->mkey[j]) {
		if (t->mkey[j] == key) {
			*res = t->mres[j];
			return t->mrank[j];
		}
		j = (j + 1) & (t->mcap - 1);
	}
	return -1;
}

/* ---------------- byte-level map (GPT-2) ---------------- */

static int bl_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

uint32_t bytelevel_cp(uint8_t b)
{
	if (bl_printable(b))
		return b;
	int n = 0;
	for (int i = 0; i < b; i++)
		n += !bl_printable(i);
	return 256u + (uint32_t)n;
}

int bytelevel_byte(uint32_t cp)
{
	if (cp < 256)
		return bl_printable((int)cp) ? (int)cp : -1;
	int n = (int)cp - 256;
	for (int b = 0; b < 256; b++)
		if (!bl_printable(b) && n-- == 0)
			return b;
	return -1;
}

/* ---------------- regex ---------------- */

/*
 * Unicode properties. Hugging Face compiles its patterns with Oniguruma:
 * \s is Unicode White_Space (U+0085 included), and \p{..} follows Unicode
 * 16.0. PCRE2 10.42's tables are Unicode 14.0, so the code points assigned
 * since are added to each \p{..} class explicitly: those of 15.0 with the
 * category utf8proc gives them, and the letters and numbers of 16.0 from
 * the table below. The list is computed once per process (pthread_once)
 * and never changes after.
 */
struct newcp {
	uint32_t cp;
	uint8_t cat;
};

/* Letters and numbers of Unicode 16.0 that utf8proc 2.8 (Unicode 15.0)
 * does not know yet, with their categories (utf8proc numbering: 1 Lu,
 * 2 Ll, 3 Lt, 4 Lm, 5 Lo, 9 Nd, 10 Nl, 11 No). Oniguruma in Hugging Face
 * tokenizers 0.23.2 has Unicode 16 tables; the list is Node's Unicode
 * data without the Unicode 17 additions that tests/tok/ref.mjs lists. */
static const uint32_t unicode16[][3] = {
	{0x1C89, 0x1C89, 1}, {0x1C8A, 0x1C8A, 2}, {0xA7CB, 0xA7CC, 1}, {0xA7CD, 0xA7CD, 2}, {0xA7DA, 0xA7DA, 1},
	{0xA7DB, 0xA7DB, 2}, {0xA7DC, 0xA7DC, 1}, {0x105C0, 0x105F3, 5}, {0x10D40, 0x10D49, 9},
	{0x10D4A, 0x10D4D, 5}, {0x10D4E, 0x10D4E, 4}, {0x10D4F, 0x10D4F, 5}, {0x10D50, 0x10D65, 1},
	{0x10D6F, 0x10D6F, 4}, {0x10D70, 0x10D85, 2}, {0x10EC2, 0x10EC4, 5}, {0x11380, 0x11389, 5},
	{0x1138B, 0x1138B, 5}, {0x1138E, 0x1138E, 5}, {0x11390, 0x113B5, 5}, {0x113B7, 0x113B7, 5},
	{0x113D1, 0x113D1, 5}, {0x113D3, 0x113D3, 5}, {0x116D0, 0x116E3, 9}, {0x11BC0, 0x11BE0, 5},
	{0x11BF0, 0x11BF9, 9}, {0x13460, 0x143FA, 5}, {0x16100, 0x1611D, 5}, {0x16130, 0x16139, 9},
	{0x16D40, 0x16D42, 4}, {0x16D43, 0x16D6A, 5}, {0x16D6B, 0x16D6C, 4}, {0x16D70, 0x16D79, 9},
	{0x18CFF, 0x18CFF, 5}, {0x1CCF0, 0x1CCF9, 9}, {0x1E5D0, 0x1E5ED, 5}, {0x1E5F0, 0x1E5F0, 5},
	{0x1E5F1, 0x1E5FA, 9}, {0x2EBF0, 0x2EE5D, 5},
};

static int cmp_newcp(const void *a, const void *b)
{
	const struct newcp *x = a, *y = b;
	return x->cp < y->cp ? -1 : x->cp > y->cp;
}
static struct newcp *newcps;
static int n_newcps;
static pthread_once_t newcps_once = PTHREAD_ONCE_INIT;

static void newcps_init(void)
{
	int ec;
	PCRE2_SIZE off;
	pcre2_code *cn = pcre2_compile((PCRE2_SPTR) "^\\p{Cn}", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &off, NULL);
	pcre2_match_data *md = cn ? pcre2_match_data_create(1, NULL) : NULL;
	int cap = 0;
	for (uint32_t cp = 0; md && cp < 0x110000; cp++) {
		if (cp >= 0xD800 && cp < 0xE000)
			continue;
		utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
		if (cat == UTF8PROC_CATEGORY_CN)
			continue;
		uint8_t u[4];
		ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, u);
		if (pcre2_match(cn, u, (PCRE2_SIZE)k, 0, 0, md, NULL) < 0)
			continue; /* PCRE2 knows it */
		if (n_newcps == cap) {
			cap = cap ? cap * 2 : 1024;
			struct newcp *nn = realloc(newcps, (size_t)cap * sizeof *nn);
			if (!nn)
				break;
			newcps = nn;
		}
		newcps[n_newcps++] = (struct newcp){cp, (uint8_t)cat};
	}
	pcre2_match_data_free(md);
	pcre2_code_free(cn);
	for (size_t r = 0; r < sizeof unicode16 / sizeof unicode16[0]; r++)
		for (uint32_t cp = unicode16[r][0]; cp <= unicode16[r][1]; cp++) {
			if (n_newcps == cap) {
				cap = cap ? cap * 2 : 1024;
				struct newcp *nn = realloc(newcps, (size_t)cap * sizeof *nn);
				if (!nn)
					return;
				newcps = nn;
			}
			newcps[n_newcps++] = (struct newcp){cp, (uint8_t)unicode16[r][2]};
		}
	qsort(newcps, (size_t)n_newcps, sizeof *newcps, cmp_newcp);
}

/* categories (bit per utf8proc category) named by a \p{..} property */
static uint32_t prop_mask(const char *name, size_t n)
{
	static const char *cats[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd",
				     "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf",
				     "Cs", "Co"};
	uint32_t m = 0;
	for (int c = 0; c < 30; c++)
		if ((n == 1 && cats[c][0] == name[0]) || (n == 2 && cats[c][0] == name[0] && cats[c][1] == name[1]))
			m |= 1u << c;
	if (n == 2 && name[0] == 'L' && name[1] == '&')
		m = (1u << 1) | (1u << 2) | (1u << 3);
	return m;
}

static void put_newcps(struct sbuf *b, uint32_t mask)
{
	char x[48];
	for (int i = 0; i < n_newcps;) {
		if (!(mask & (1u << newcps[i].cat))) {
			i++;
			continue;
		}
		int j = i;
		while (j + 1 < n_newcps && newcps[j + 1].cp == newcps[j].cp + 1 && (mask & (1u << newcps[j + 1].cat)))
			j++;
		snprintf(x, sizeof x, j > i ? "\\x{%X}-\\x{%X}" : "\\x{%X}", newcps[i].cp, newcps[j].cp);
		sb_put(b, x, strlen(x));
		i = j + 1;
	}
}

/* Rewrite \s, \S and \p{..} / \P{..} as described above. */
static char *onig_compat(const char *re)
{
	pthread_once(&newcps_once, newcps_init);
	struct sbuf b = {0};
	int in_class = 0;
	for (const char *p = re; *p; p++) {
		if (p[0] == '\\' && (p[1] == 's' || p[1] == 'S')) {
			sb_put(&b, p[1] == 's' ? "\\p{White_Space}" : "\\P{White_Space}", 15);
			p++;
		} else if (p[0] == '\\' && (p[1] == 'p' || p[1] == 'P') && p[2]) {
			const char *name = p + 2, *end = p + 3;
			size_t nl = 1;
			if (p[2] == '{') {
				name = p + 3;
				end = strchr(name, '}');
				if (!end) {
					sb_put(&b, p, strlen(p));
					break;
				}
				nl = (size_t)(end - name);
				end++;
			}
			uint32_t mask = prop_mask(name, nl);
			int neg = p[1] == 'P';
			if (!mask || (neg && in_class)) { /* keep PCRE2's own */
				sb_put(&b, p, (size_t)(end - p));
			} else {
				if (!in_class)
					sb_put(&b, neg ? "[^" : "[", neg ? 2 : 1);
				sb_put(&b, "\\p{", 3);
				sb_put(&b, name, nl);
				sb_put(&b, "}", 1);
				put_newcps(&b, mask);
				if (!in_class)
					sb_put(&b, "]", 1);
			}
			p = end - 1;
		} else if (p[0] == '\\' && p[1]) {
			sb_put(&b, p, 2);
			p++;
		} else {
			if (p[0] == '[' && !in_class) {
				in_class = 1;
				sb_put(&b, p, 1);
				if (p[1] == '^')
					sb_put(&b, ++p, 1);
				if (p[1] == ']') /* a literal ] first in a class */
					sb_put(&b, ++p, 1);
				continue;
			}
			if (p[0] == ']' && in_class)
				in_class = 0;
			sb_put(&b, p, 1);
		}
	}
	if (!b.p)
		sb_put(&b, "", 0);
	return b.oom ? NULL : b.p;
}

pcre2_code *tok_regex(const char *pattern, char *err)
{
	int ec;
	PCRE2_SIZE off;
	char *pat = onig_compat(pattern);
	if (!pat) {
		seterr(err, INFERD_ENOMEM, "out of memory");
		return NULL;
	}
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &off, NULL);
	free(pat);
	if (!re) {
		PCRE2_UCHAR msg[128];
		pcre2_get_error_message(ec, msg, sizeof msg);
		seterr(err, INFERD_EFORMAT, "pre-tokenizer regex \"%.80s\": %s at offset %zu", pattern, msg, (size_t)off);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up */
	return re;
}

/* ---------------- UTF-8 ---------------- */

/* length of the valid UTF-8 sequence at p (max n bytes), 0 if invalid */
static int u8_len(const uint8_t *p, size_t n)
{
	utf8proc_int32_t cp;
	ssize_t k = utf8proc_iterate(p, (ssize_t)(n > 4 ? 4 : n), &cp);
	return k > 0 ? (int)k : 0;
}

/* Copy s with invalid UTF-8 replaced by U+FFFD (per maximal invalid
 * prefix byte, as Python's "replace" does for lone bytes), with the mask
 * carried along. */
static int sanitize(const char *s, size_t n, const uint8_t *mask, struct sbuf *out, uint8_t **omask)
{
	size_t cap = n * 3 + 1;
	*omask = mask ? malloc(cap) : NULL;
	if (mask && !*omask)
		return -1;
	for (size_t i = 0; i < n;) {
		int k = u8_len((const uint8_t *)s + i, n - i);
		size_t at = out->n;
		if (k) {
			sb_put(out, s + i, (size_t)k);
		} else {
			sb_put(out, "\xEF\xBF\xBD", 3);
			k = 1;
		}
		if (mask)
			memset(*omask + at, mask[i], out->n - at);
		i += (size_t)k;
	}
	if (!out->p)
		sb_put(out, "", 0);
	return out->oom ? -1 : 0;
}

/* ---------------- normalizers ---------------- */

/*
 * Hugging Face tokenizers normalize with Unicode 9.0 tables. The code
 * points below have canonical combining classes or decompositions in
 * Unicode 15.0 (utf8proc) but none in those tables, so HF leaves them as
 * they are: here they split the text, and each piece between them is
 * normalized on its own (such a code point acts as a starter that composes
 * with nothing, so this is exactly HF's result). The list was made by
 * probing HF's normalizers (tokenizers 0.23.2) with every code point that
 * utf8proc reorders or decomposes.
 */
static const uint32_t hf_unnormalized[][2] = {
	{0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C},
	{0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27},
	{0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070},
	{0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11938, 0x11938}, {0x1193D, 0x1193E},
	{0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
	{0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
	{0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

static int hf_unknown(uint32_t cp)
{
	int lo = 0, hi = (int)(sizeof hf_unnormalized / sizeof hf_unnormalized[0]) - 1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if (cp < hf_unnormalized[mid][0])
			hi = mid - 1;
		else if (cp > hf_unnormalized[mid][1])
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

/* utf8proc normalization of s[0..n) appended to out, split at the code
 * points HF's tables do not know, and at U+11A7 (HANGUL JONGSEONG TIEUT-
 * filler, TBase): it normalizes to itself, but utf8proc's composition
 * swallows it after an LV syllable (께 U+AED8 + U+11A7 -> U+AED8), which
 * Unicode (and HF) do not. */
static int normalize_hf(const char *s, size_t n, int opt, struct sbuf *out)
{
	size_t seg = 0;
	for (size_t i = 0; i <= n;) {
		utf8proc_int32_t cp = 0;
		ssize_t k = 0;
		if (i < n) {
			k = utf8proc_iterate((const uint8_t *)s + i, (ssize_t)(n - i), &cp);
			if (k <= 0)
				k = 1, cp = -1;
		}
		if (i == n || (cp >= 0 && (hf_unknown((uint32_t)cp) || cp == 0x11A7))) {
			if (i > seg) {
				utf8proc_uint8_t *o = NULL;
				ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s + seg, (ssize_t)(i - seg), &o, opt);
				if (r < 0) {
					free(o);
					return -1;
				}
				sb_put(out, (char *)o, (size_t)r);
				free(o);
			}
			if (i == n)
				break;
			sb_put(out, s + i, (size_t)k);
			seg = i + (size_t)k;
		}
		i += (size_t)k;
	}
	return out->oom ? -1 : 0;
}


static int normalize(const struct tokenizer *t, const char *s, size_t n, struct sbuf *out)
{
	struct sbuf cur = {0};
	sb_put(&cur, s, n);
	for (int i = 0; i < t->n_norm && !cur.oom; i++) {
		const struct norm_step *st = &t->norm[i];
		struct sbuf nx = {0};
		switch (st->kind) {
		case N_NFC: case N_NFD: case N_NFKC: case N_NFKD: {
			int opt = UTF8PROC_STABLE | (st->kind == N_NFC || st->kind == N_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
				  (st->kind == N_NFKC || st->kind == N_NFKD ? UTF8PROC_COMPAT : 0);
			if (normalize_hf(cur.p ? cur.p : "", cur.n, opt, &nx)) {
				free(nx.p);
				free(cur.p);
				return -1;
			}
			break;
		}
		case N_LOWER:
			for (size_t j = 0; j < cur.n;) {
				utf8proc_int32_t cp;
				ssize_t k = utf8proc_iterate((const uint8_t *)cur.p + j, (ssize_t)(cur.n - j), &cp);
				if (k <= 0)
					k = 1, cp = 0xFFFD;
				sb_cp(&nx, (uint32_t)utf8proc_tolower(cp));
				j += (size_t)k;
			}
			break;
		case N_PREPEND:
			if (cur.n)
				sb_put(&nx, st->a, strlen(st->a));
			sb_put(&nx, cur.p ? cur.p : "", cur.n);
			break;
		case N_REPLACE: {
			size_t al = strlen(st->a), bl = strlen(st->b);
			for (size_t j = 0; j < cur.n;) {
				if (al && j + al <= cur.n && memcmp(cur.p + j, st->a, al) == 0) {
					sb_put(&nx, st->b, bl);
					j += al;
				} else {
					sb_put(&nx, cur.p + j, 1);
					j++;
				}
			}
			break;
		}
		case N_STRIP: {
			size_t a = 0, b = cur.n;
			while (st->strip_left && a < b && (cur.p[a] == ' ' || cur.p[a] == '\t' || cur.p[a] == '\n' || cur.p[a] == '\r'))
				a++;
			while (st->strip_right && b > a && (cur.p[b - 1] == ' ' || cur.p[b - 1] == '\t' || cur.p[b - 1] == '\n' || cur.p[b - 1] == '\r'))
				b--;
			sb_put(&nx, cur.p + a, b - a);
			break;
		}
		}
		if (!nx.p)
			sb_put(&nx, "", 0);
		free(cur.p);
		cur = nx;
	}
	if (cur.oom) {
		free(cur.p);
		return -1;
	}
	*out = cur;
	if (!out->p)
		sb_put(out, "", 0);
	return out->oom ? -1 : 0;
}

/* ---------------- pre-tokenizers ---------------- */

struct span {
	size_t a, b; /* byte range in the working string */
};

struct spans {
	struct span *p;
	int n, cap;
	int oom;
};

static void sp_put(struct spans *s, size_t a, size_t b)
{
	if (a >= b || s->oom)
		return;
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		struct span *np = realloc(s->p, (size_t)cap * sizeof *np);
		if (!np) {
			s->oom = 1;
			return;
		}
		s->p = np;
		s->cap = cap;
	}
	s->p[s->n++] = (struct span){a, b};
}

/* Split [a, b) of str by the matches of step `st`, per its behavior. */
static void split_piece(const struct pre_step *st, const char *str, size_t a, size_t b, pcre2_match_data *md,
			struct spans *out)
{
	struct span m[1];
	size_t pos = a, gap = a;
	size_t pend_a = (size_t)-1; /* MergedWithNext: pending match start */
	for (;;) {
		int found = 0;
		if (st->kind == P_SPLIT_STRING || st->kind == P_METASPACE) {
			const char *pat = st->str;
			size_t pl = strlen(pat);
			for (size_t i = pos; pl && i + pl <= b; i++)
				if (memcmp(str + i, pat, pl) == 0) {
					m[0] = (struct span){i, i + pl};
					found = 1;
					break;
				}
		} else if (st->kind == P_DIGITS) {
			size_t i = pos;
			while (i < b && !(str[i] >= '0' && str[i] <= '9'))
				i++;
			if (i < b) {
				size_t j = i + 1;
				while (!st->individual && j < b && str[j] >= '0' && str[j] <= '9')
					j++;
				m[0] = (struct span){i, j};
				found = 1;
			}
		} else {
			int rc = pcre2_match(st->re, (PCRE2_SPTR)str, b, pos, PCRE2_NO_UTF_CHECK, md, NULL);
			if (rc > 0) {
				PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
				m[0] = (struct span){ov[0], ov[1]};
				found = 1;
				if (ov[1] == ov[0]) { /* empty match: step one character */
					int k = u8_len((const uint8_t *)str + ov[0], b - ov[0]);
					pos = ov[0] + (size_t)(k ? k : 1);
					if (pos > b)
						break;
					continue;
				}
			}
		}
		if (!found)
			break;
		size_t ma = m[0].a, mb = m[0].b;
		switch (st->invert ? SB_ISOLATED : st->behavior) {
		case SB_ISOLATED:
			sp_put(out, gap, ma);
			sp_put(out, ma, mb);
			break;
		case SB_REMOVED:
			sp_put(out, gap, ma);
			break;
		case SB_MERGED_PREV:
			sp_put(out, gap, mb);
			break;
		case SB_MERGED_NEXT:
			if (pend_a != (size_t)-1)
				sp_put(out, pend_a, ma);
			else
				sp_put(out, gap, ma);
			pend_a = ma;
			break;
		case SB_CONTIGUOUS:
			sp_put(out, gap, ma);
			if (out->n && out->p[out->n - 1].b == ma && gap == ma && ma > a)
				out->p[out->n - 1].b = mb;
			else
				sp_put(out, ma, mb);
			break;
		}
		gap = pos = mb;
	}
	if (st->behavior == SB_MERGED_NEXT && !st->invert && pend_a != (size_t)-1)
		sp_put(out, pend_a, b);
	else
		sp_put(out, gap, b);
}

/* ---------------- BPE ---------------- */

struct sym {
	int32_t a, len, id, prev, next;
};

struct cand {
	double pri;
	int32_t left, right, lid, rid, res;
};

struct heap {
	struct cand *p;
	int n, cap;
};

static int cand_less(const struct cand *x, const struct cand *y, const struct sym *s)
{
	if (x->pri != y->pri)
		return x->pri < y->pri;
	return s[x->left].a < s[y->left].a;
}

static int heap_push(struct heap *h, struct cand c, const struct sym *s)
{
	if (h->n == h->cap) {
		int cap = h->cap ? h->cap * 2 : 64;
		struct cand *np = realloc(h->p, (size_t)cap * sizeof *np);
		if (!np)
			return -1;
		h->p = np;
		h->cap = cap;
	}
	int i = h->n++;
	h->p[i] = c;
	while (i > 0) {
		int parent = (i - 1) / 2;
		if (!cand_less(&h->p[i], &h->p[parent], s))
			break;
		struct cand tmp = h->p[i];
		h->p[i] = h->p[parent];
		h->p[parent] = tmp;
		i = parent;
	}
	return 0;
}

static struct cand heap_pop(struct heap *h, const struct sym *s)
{
	struct cand top = h->p[0];
	h->p[0] = h->p[--h->n];
	int i = 0;
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->n && cand_less(&h->p[l], &h->p[m], s))
			m = l;
		if (r < h->n && cand_less(&h->p[r], &h->p[m], s))
			m = r;
		if (m == i)
			break;
		struct cand tmp = h->p[i];
		h->p[i] = h->p[m];
		h->p[m] = tmp;
		i = m;
	}
	return top;
}

static int try_pair(const struct tokenizer *t, const char *w, struct sym *s, int l, int r, struct heap *h)
{
	if (l < 0 || r < 0)
		return 0;
	struct cand c = {.left = l, .right = r, .lid = s[l].id, .rid = s[r].id};
	if (t->use_scores) {
		int32_t id = smap_get(&t->vocab, w + s[l].a, (uint32_t)(s[l].len + s[r].len));
		if (id < 0)
			return 0;
		c.pri = -(double)t->tok[id].score;
		c.res = id;
	} else {
		if (c.lid < 0 || c.rid < 0)
			return 0;
		int rank = merge_get(t, c.lid, c.rid, &c.res);
		if (rank < 0)
			return 0;
		c.pri = rank;
	}
	return heap_push(h, c, s);
}

/* BPE over the word w[0..n) (already in the model's alphabet); ids out. */
static int bpe_word(const struct tokenizer *t, const char *w, size_t n, struct ibuf *out)
{
	if (t->ignore_merges) {
		int32_t id = smap_get(&t->vocab, w, (uint32_t)n);
		if (id >= 0) {
			ib_put(out, id);
			return 0;
		}
	}
	struct sym *s = malloc((n + 1) * 4 * sizeof *s);
	struct heap h = {0};
	if (!s)
		return -1;
	int ns = 0;
	for (size_t i = 0; i < n;) {
		int k = u8_len((const uint8_t *)w + i, n - i);
		if (!k)
			k = 1;
		int32_t id = smap_get(&t->vocab, w + i, (uint32_t)k);
		if (id < 0 && t->byte_fallback && !t->use_scores) {
			/* Hugging Face: a character outside the vocabulary becomes its bytes */
			int all = 1;
			for (int j = 0; j < k; j++)
				all &= t->byte_id[(uint8_t)w[i + j]] >= 0;
			if (all) {
				for (int j = 0; j < k; j++) {
					s[ns] = (struct sym){(int32_t)(i + (size_t)j), 1, t->byte_id[(uint8_t)w[i + j]], ns - 1, ns + 1};
					ns++;
				}
				i += (size_t)k;
				continue;
			}
		}
		s[ns] = (struct sym){(int32_t)i, k, id, ns - 1, ns + 1};
		ns++;
		i += (size_t)k;
	}
	if (ns)
		s[ns - 1].next = -1;
	int rc = 0;
	for (int i = 0; i + 1 < ns && !rc; i++)
		rc = try_pair(t, w, s, i, i + 1, &h);
	while (h.n && !rc) {
		struct cand c = heap_pop(&h, s);
		struct sym *L = &s[c.left], *R = &s[c.right];
		if (!L->len || !R->len || L->next != c.right || L->id != c.lid || R->id != c.rid)
			continue; /* stale */
		L->len += R->len;
		L->id = c.res;
		R->len = 0;
		L->next = R->next;
		if (R->next >= 0)
			s[R->next].prev = c.left;
		rc = try_pair(t, w, s, L->prev, c.left, &h);
		if (!rc)
			rc = try_pair(t, w, s, c.left, L->next, &h);
	}
	int prev_unk = 0;
	for (int i = 0; ns && i >= 0 && !rc; i = s[i].next) {
		if (s[i].id >= 0) {
			ib_put(out, s[i].id);
			prev_unk = 0;
			continue;
		}
		/* not in the vocabulary: bytes, else unk (fused when asked) */
		int all = t->byte_fallback;
		for (int j = 0; all && j < s[i].len; j++)
			all &= t->byte_id[(uint8_t)w[s[i].a + j]] >= 0;
		if (all) {
			for (int j = 0; j < s[i].len; j++)
				ib_put(out, t->byte_id[(uint8_t)w[s[i].a + j]]);
			prev_unk = 0;
		} else if (t->unk_id >= 0 && !(t->fuse_unk && prev_unk)) {
			ib_put(out, t->unk_id);
			prev_unk = 1;
		}
	}
	free(h.p);
	free(s);
	return rc || out->oom ? -1 : 0;
}

/* ---------------- encode ---------------- */

static int encode_segment(const struct tokenizer *t, const char *s, size_t n, int first, struct ibuf *out,
			  pcre2_match_data *md)
{
	struct sbuf norm = {0};
	if (normalize(t, s, n, &norm))
		return -1;
	/* byte-level add_prefix_space / metaspace prepend */
	for (int i = 0; i < t->n_pre; i++) {
		const struct pre_step *st = &t->pre[i];
		if ((st->kind == P_BYTELEVEL && st->add_prefix_space && norm.n && norm.p[0] != ' ') ||
		    (st->kind == P_METASPACE && (st->add_prefix_space == 2 || (st->add_prefix_space == 1 && first)) &&
		     !(norm.n >= strlen(st->str) && memcmp(norm.p, st->str, strlen(st->str)) == 0) && norm.n)) {
			struct sbuf nx = {0};
			sb_put(&nx, st->kind == P_BYTELEVEL ? " " : st->str, st->kind == P_BYTELEVEL ? 1 : strlen(st->str));
			sb_put(&nx, norm.p, norm.n);
			free(norm.p);
			norm = nx;
		}
		if (st->kind == P_METASPACE) { /* spaces become the replacement */
			struct sbuf nx = {0};
			for (size_t j = 0; j < norm.n; j++)
				if (norm.p[j] == ' ')
					sb_put(&nx, st->str, strlen(st->str));
				else
					sb_put(&nx, norm.p + j, 1);
			if (!nx.p)
				sb_put(&nx, "", 0);
			free(norm.p);
			norm = nx;
		}
	}
	struct spans cur = {0}, nx = {0};
	sp_put(&cur, 0, norm.n);
	for (int i = 0; i < t->n_pre && !cur.oom; i++) {
		const struct pre_step *st = &t->pre[i];
		if (st->kind == P_BYTELEVEL && !st->re)
			continue;
		if (st->kind == P_METASPACE && !st->individual)
			continue; /* split = false */
		nx.n = 0;
		for (int k = 0; k < cur.n; k++)
			split_piece(st, norm.p, cur.p[k].a, cur.p[k].b, md, &nx);
		struct spans tmp = cur;
		cur = nx;
		nx = tmp;
	}
	int rc = cur.oom || nx.oom || norm.oom ? -1 : 0;
	struct sbuf w = {0};
	for (int k = 0; k < cur.n && !rc; k++) {
		const char *p = norm.p + cur.p[k].a;
		size_t len = cur.p[k].b - cur.p[k].a;
		if (t->bytelevel) {
			w.n = 0;
			for (size_t j = 0; j < len; j++)
				sb_cp(&w, bytelevel_cp((uint8_t)p[j]));
			p = w.p;
			len = w.n;
		}
		rc = bpe_word(t, p, len, out);
	}
	free(w.p);
	free(cur.p);
	free(nx.p);
	free(norm.p);
	return rc;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The added token matching at text[i], or -1. */
static int match_added(const struct tokenizer *t, const char *s, size_t n, size_t i, int parse_special,
		       const uint8_t *mask)
{
	int first = (uint8_t)s[i];
	for (int k = t->added_first[first]; k < t->added_first[first + 1]; k++) {
		const struct added_token *a = &t->added[k];
		if (a->len > n - i || memcmp(s + i, a->text, a->len) != 0)
			continue;
		if (a->special && !parse_special)
			continue;
		if (a->special && mask) {
			int tainted = 0;
			for (uint32_t j = 0; j < a->len; j++)
				tainted |= mask[i + j];
			if (tainted)
				continue;
		}
		return k; /* sorted longest first within a first byte */
	}
	return -1;
}

static int encode(const struct tokenizer *t, const char *text, size_t len, const uint8_t *mask, int flags,
		  int32_t **ids, int *n, char *err)
{
	struct sbuf s = {0};
	uint8_t *m = NULL;
	struct ibuf out = {0};
	int rc = 0;
	pcre2_match_data *md = pcre2_match_data_create(4, NULL);
	if (!md || sanitize(text, len, mask, &s, &m)) {
		rc = seterr(err, INFERD_ENOMEM, "out of memory");
		goto done;
	}
	if ((flags & TOK_ADD_SPECIAL) && t->add_bos && t->bos_id >= 0)
		ib_put(&out, t->bos_id);
	int parse = (flags & TOK_PARSE_SPECIAL) != 0;
	size_t seg = 0;
	int first = 1;
	for (size_t i = 0; i < s.n && !rc;) {
		int k = t->n_added ? match_added(t, s.p, s.n, i, parse, m) : -1;
		if (k < 0) {
			i++;
			continue;
		}
		const struct added_token *a = &t->added[k];
		size_t end = seg < i ? i : seg, next = i + a->len;
		if (a->lstrip)
			while (end > seg && is_ws(s.p[end - 1]))
				end--;
		if (end > seg) {
			if (encode_segment(t, s.p + seg, end - seg, first, &out, md))
				rc = seterr(err, INFERD_ENOMEM, "out of memory while encoding");
		}
		first = 0;
		ib_put(&out, a->id);
		if (a->rstrip)
			while (next < s.n && is_ws(s.p[next]))
				next++;
		seg = i = next;
	}
	if (!rc && seg < s.n && encode_segment(t, s.p + seg, s.n - seg, first, &out, md))
		rc = seterr(err, INFERD_ENOMEM, "out of memory while encoding");
	if ((flags & TOK_ADD_SPECIAL) && t->add_eos && t->eos_id >= 0)
		ib_put(&out, t->eos_id);
	if (!rc && out.oom)
		rc = seterr(err, INFERD_ENOMEM, "out of memory while encoding");
done:
	pcre2_match_data_free(md);
	free(s.p);
	free(m);
	if (rc) {
		free(out.p);
		return rc;
	}
	*ids = out.p ? out.p : malloc(sizeof(int32_t));
	*n = out.n;
	return 0;
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, int *n, char *err)
{
	return encode(t, text, len, NULL, flags, ids, n, err);
}

int tok_encode_masked(const struct tokenizer *t, const char *text, size_t len, const uint8_t *untrusted, int flags,
		      int32_t **ids, int *n, char *err)
{
	return encode(t, text, len, untrusted, flags | TOK_PARSE_SPECIAL, ids, n, err);
}

/* ---------------- decode ---------------- */

struct strs {
	char **p;
	size_t *len;
	int n;
};

static void strs_free(struct strs *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->p[i]);
	free(s->p);
	free(s->len);
	s->n = 0;
}

static char *dupn(const char *p, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, p, n);
		d[n] = 0;
	}
	return d;
}

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static int byte_token(const char *p, size_t n)
{
	if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>' || hexval(p[3]) < 0 || hexval(p[4]) < 0)
		return -1;
	return hexval(p[3]) * 16 + hexval(p[4]);
}

/* Lossy UTF-8 (invalid sequences -> U+FFFD), like String::from_utf8_lossy. */
static void lossy(struct sbuf *out, const char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		int k = u8_len((const uint8_t *)p + i, n - i);
		if (k) {
			sb_put(out, p + i, (size_t)k);
			i += (size_t)k;
			continue;
		}
		/* maximal prefix of a valid sequence counts as one error */
		const uint8_t *u = (const uint8_t *)p + i;
		size_t need = u[0] >= 0xF0 && u[0] <= 0xF4 ? 4 : u[0] >= 0xE0 && u[0] <= 0xEF ? 3 : u[0] >= 0xC2 && u[0] <= 0xDF ? 2 : 1;
		size_t j = 1;
		while (j < need && i + j < n && (u[j] & 0xC0) == 0x80) {
			if (j == 1 && ((u[0] == 0xE0 && u[1] < 0xA0) || (u[0] == 0xED && u[1] > 0x9F) ||
				       (u[0] == 0xF0 && u[1] < 0x90) || (u[0] == 0xF4 && u[1] > 0x8F)))
				break;
			j++;
		}
		sb_put(out, "\xEF\xBF\xBD", 3);
		i += j;
	}
}

static int decode_steps(const struct tokenizer *t, struct strs *x)
{
	for (int d = 0; d < t->n_dec; d++) {
		const struct dec_step *st = &t->dec[d];
		if (st->kind == D_REPLACE || st->kind == D_METASPACE) {
			const char *from = st->a, *to = st->b;
			size_t fl = strlen(from), tl = strlen(to);
			for (int i = 0; i < x->n; i++) {
				struct sbuf b = {0};
				for (size_t j = 0; j < x->len[i];) {
					if (fl && j + fl <= x->len[i] && memcmp(x->p[i] + j, from, fl) == 0) {
						sb_put(&b, to, tl);
						j += fl;
					} else {
						sb_put(&b, x->p[i] + j++, 1);
					}
				}
				if (st->kind == D_METASPACE && i == 0 && st->prepend_first && b.n && b.p[0] == ' ') {
					memmove(b.p, b.p + 1, b.n);
					b.n--;
				}
				if (!b.p)
					sb_put(&b, "", 0);
				if (b.oom)
					return -1;
				free(x->p[i]);
				x->p[i] = b.p;
				x->len[i] = b.n;
			}
		} else if (st->kind == D_BYTEFALLBACK) {
			struct strs y = {malloc((size_t)(x->n + 1) * sizeof(char *)), malloc((size_t)(x->n + 1) * sizeof(size_t)) , 0};
			struct sbuf bytes = {0};
			int nbytes = 0;
			if (!y.p || !y.len)
				return -1;
			for (int i = 0; i <= x->n; i++) {
				int b = i < x->n ? byte_token(x->p[i], x->len[i]) : -1;
				if (b >= 0) {
					uint8_t c = (uint8_t)b;
					sb_put(&bytes, &c, 1);
					nbytes++;
					continue;
				}
				if (nbytes) {
					int valid = 1;
					for (size_t j = 0; j < bytes.n && valid;) {
						int k = u8_len((const uint8_t *)bytes.p + j, bytes.n - j);
						valid = k > 0;
						j += (size_t)(k ? k : 1);
					}
					struct sbuf piece = {0};
					if (valid)
						sb_put(&piece, bytes.p, bytes.n);
					else
						for (int j = 0; j < nbytes; j++)
							sb_put(&piece, "\xEF\xBF\xBD", 3);
					y.p[y.n] = piece.p;
					y.len[y.n++] = piece.n;
					bytes.n = 0;
					nbytes = 0;
				}
				if (i < x->n) {
					y.p[y.n] = x->p[i];
					y.len[y.n++] = x->len[i];
					x->p[i] = NULL;
				}
			}
			free(bytes.p);
			strs_free(x);
			*x = y;
		} else if (st->kind == D_FUSE || st->kind == D_BYTELEVEL) {
			struct sbuf b = {0};
			for (int i = 0; i < x->n; i++) {
				if (st->kind == D_FUSE) {
					sb_put(&b, x->p[i], x->len[i]);
					continue;
				}
				/* byte-level: every character back to its byte, or the raw text */
				struct sbuf raw = {0};
				int ok = 1;
				for (size_t j = 0; j < x->len[i] && ok;) {
					utf8proc_int32_t cp;
					ssize_t k = utf8proc_iterate((const uint8_t *)x->p[i] + j, (ssize_t)(x->len[i] - j), &cp);
					int by = k > 0 ? bytelevel_byte((uint32_t)cp) : -1;
					if (by < 0) {
						ok = 0;
						break;
					}
					uint8_t c = (uint8_t)by;
					sb_put(&raw, &c, 1);
					j += (size_t)k;
				}
				if (ok)
					sb_put(&b, raw.p ? raw.p : "", raw.n);
				else
					sb_put(&b, x->p[i], x->len[i]);
				free(raw.p);
			}
			struct sbuf fin = {0};
			if (st->kind == D_BYTELEVEL)
				lossy(&fin, b.p ? b.p : "", b.n);
			else
				sb_put(&fin, b.p ? b.p : "", b.n);
			free(b.p);
			if (!fin.p)
				sb_put(&fin, "", 0);
			strs_free(x);
			x->p = malloc(sizeof(char *));
			x->len = malloc(sizeof(size_t));
			if (!x->p || !x->len || fin.oom)
				return -1;
			x->p[0] = fin.p;
			x->len[0] = fin.n;
			x->n = 1;
		} else if (st->kind == D_STRIP) {
			const char *c = st->a;
			size_t cl = strlen(c);
			for (int i = 0; i < x->n; i++) {
				size_t a = 0, b = x->len[i];
				for (int k = 0; k < st->start && cl && a + cl <= b && memcmp(x->p[i] + a, c, cl) == 0; k++)
					a += cl;
				for (int k = 0; k < st->stop && cl && b >= a + cl && memcmp(x->p[i] + b - cl, c, cl) == 0; k++)
					b -= cl;
				memmove(x->p[i], x->p[i] + a, b - a);
				x->len[i] = b - a;
				x->p[i][x->len[i]] = 0;
			}
		}
	}
	return 0;
}

static void clean_up(struct sbuf *b)
{
	static const char *from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
	static const char *to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
	for (size_t r = 0; r < sizeof from / sizeof from[0]; r++) {
		size_t fl = strlen(from[r]), tl = strlen(to[r]), w = 0;
		for (size_t i = 0; i < b->n;) {
			if (i + fl <= b->n && memcmp(b->p + i, from[r], fl) == 0) {
				memcpy(b->p + w, to[r], tl);
				w += tl;
				i += fl;
			} else {
				b->p[w++] = b->p[i++];
			}
		}
		b->n = w;
		b->p[w] = 0;
	}
}

int tok_decode(const struct tokenizer *t, const int32_t *ids, int n, int flags, char **out, size_t *len, char *err)
{
	struct strs x = {calloc((size_t)(n + 1), sizeof(char *)), calloc((size_t)(n + 1), sizeof(size_t)), 0};
	if (!x.p || !x.len) {
		free(x.p);
		free(x.len);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	for (int i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= t->n_vocab) {
			strs_free(&x);
			return seterr(err, INFERD_ERANGE, "token id %d at index %d is out of range (vocab size %d)", ids[i], i,
				      t->n_vocab);
		}
		if ((flags & TOK_SKIP_SPECIAL) && tok_is_special(t, ids[i]))
			continue;
		const struct tok_piece *p = &t->tok[ids[i]];
		x.p[x.n] = dupn(p->text ? p->text : "", p->len);
		x.len[x.n++] = p->len;
	}
	int rc = decode_steps(t, &x);
	struct sbuf b = {0};
	for (int i = 0; i < x.n && !rc; i++)
		sb_put(&b, x.p[i], x.len[i]);
	if (!b.p)
		sb_put(&b, "", 0);
	strs_free(&x);
	if (rc || b.oom) {
		free(b.p);
		return seterr(err, INFERD_ENOMEM, "out of memory");
	}
	if (t->clean_up_spaces)
		clean_up(&b);
	*out = b.p;
	if (len)
		*len = b.n;
	return 0;
}

/* ---------------- streaming ---------------- */

struct tok_stream {
	const struct tokenizer *t;
	int flags;
	struct ibuf ids;
	size_t emitted;
};

struct tok_stream *tok_stream_new(const struct tokenizer *t, int flags)
{
	struct tok_stream *s = calloc(1, sizeof *s);
	if (s) {
		s->t = t;
		s->flags = flags;
	}
	return s;
}

void tok_stream_free(struct tok_stream *s)
{
	if (s) {
		free(s->ids.p);
		free(s);
	}
}

/* Bytes of `full` that can no longer change as more ids arrive. */
static size_t stable_len(const struct tokenizer *t, const char *full, size_t n)
{
	/* a trailing U+FFFD may be an incomplete character */
	while (n >= 3 && memcmp(full + n - 3, "\xEF\xBF\xBD", 3) == 0)
		n -= 3;
	if (t->clean_up_spaces) { /* " n't", " 'm", " ." ... may still lose their space */
		for (size_t k = 1; k <= 4 && k <= n; k++)
			if (full[n - k] == ' ') {
				n -= k;
				break;
			}
	}
	return n;
}

static int stream_emit(struct tok_stream *s, int final, char **out, size_t *len, char *err)
{
	char *full;
	size_t n;
	int rc = tok_decode(s->t, s->ids.p, s->ids.n, s->flags, &full, &n, err);
	if (rc)
		return rc;
	size_t st = final ? n : stable_len(s->t, full, n);
	/* byte-fallback: a later byte can turn the whole trailing run of byte
	 * tokens into U+FFFDs, so the text stops before that run */
	int fb = 0;
	for (int i = 0; i < s->t->n_dec; i++)
		fb |= s->t->dec[i].kind == D_BYTEFALLBACK;
	int j = s->ids.n;
	while (fb && !final && j > 0) {
		const struct tok_piece *p = &s->t->tok[s->ids.p[j - 1]];
		int skipped = (s->flags & TOK_SKIP_SPECIAL) && tok_is_special(s->t, s->ids.p[j - 1]);
		if (!skipped && byte_token(p->text ? p->text : "", p->len) < 0)
			break;
		j--; /* a skipped token does not end the run: the bytes around it join */
	}
	if (j < s->ids.n) {
		char *pre;
		size_t pn;
		if ((rc = tok_decode(s->t, s->ids.p, j, s->flags, &pre, &pn, err))) {
			free(full);
			return rc;
		}
		size_t ps = stable_len(s->t, pre, pn);
		if (ps < st)
			st = ps;
		free(pre);
	}
	if (st < s->emitted)
		st = s->emitted;
	*len = st - s->emitted;
	*out = dupn(full + s->emitted, *len);
	s->emitted = st;
	free(full);
	return *out ? 0 : seterr(err, INFERD_ENOMEM, "out of memory");
}

int tok_stream_push(struct tok_stream *s, int32_t id, char **out, size_t *len, char *err)
{
	if (id < 0 || id >= s->t->n_vocab)
		return seterr(err, INFERD_ERANGE, "token id %d is out of range (vocab size %d)", id, s->t->n_vocab);
	ib_put(&s->ids, id);
	if (s->ids.oom)
		return seterr(err, INFERD_ENOMEM, "out of memory");
	return stream_emit(s, 0, out, len, err);
}

int tok_stream_flush(struct tok_stream *s, char **out, size_t *len)
{
	return stream_emit(s, 1, out, len, NULL);
}

/* ---------------- accessors ---------------- */

/* Raw bytes of one token inside a longer output (for constrained
 * decoding): byte-level pieces go back through GPT-2's byte map,
 * SentencePiece byte pieces <0xXX> are their byte, and the decoder's
 * Replace / Metaspace steps turn ▁ into a space. No step that looks at the
 * token's place in the text (Strip of a leading space) is applied. */
int tok_token_bytes(const struct tokenizer *t, int32_t id, uint8_t *buf, size_t cap)
{
	if (id < 0 || id >= t->n_vocab)
		return -1;
	const struct tok_piece *p = &t->tok[id];
	const char *s = p->text ? p->text : "";
	size_t n = p->len, o = 0;
#define PUT(c) do { if (o < cap) buf[o] = (uint8_t)(c); o++; } while (0)
	int by = t->bytelevel ? -1 : byte_token(s, n);
	if (by >= 0) {
		PUT(by);
		return 1;
	}
	if (t->bytelevel) {
		size_t o0 = o;
		int ok = 1;
		for (size_t j = 0; j < n && ok;) {
			utf8proc_int32_t cp;
			ssize_t k = utf8proc_iterate((const uint8_t *)s + j, (ssize_t)(n - j), &cp);
			int b = k > 0 ? bytelevel_byte((uint32_t)cp) : -1;
			if (b < 0)
				ok = 0;
			else
				PUT(b);
			j += (size_t)(k > 0 ? k : 1);
		}
		if (ok)
			return (int)o;
		o = o0; /* not byte-level text (an added token): its raw text */
		for (size_t j = 0; j < n; j++)
			PUT(s[j]);
		return (int)o;
	}
	for (size_t j = 0; j < n;) {
		int done = 0;
		for (int d = 0; d < t->n_dec && !done; d++) {
			const struct dec_step *st = &t->dec[d];
			const char *from = st->kind == D_REPLACE ? st->a : st->kind == D_METASPACE ? "\xE2\x96\x81" : NULL;
			const char *to = st->kind == D_REPLACE ? st->b : " ";
			size_t fl = from ? strlen(from) : 0;
			if (fl && j + fl <= n && memcmp(s + j, from, fl) == 0) {
				for (const char *q = to ? to : ""; *q; q++)
					PUT(*q);
				j += fl;
				done = 1;
			}
		}
		if (!done) {
			PUT(s[j]);
			j++;
		}
	}
#undef PUT
	return (int)o;
}

int tok_n_vocab(const struct tokenizer *t) { return t->n_vocab; }
int tok_bos(const struct tokenizer *t) { return t->bos_id; }
int tok_eos(const struct tokenizer *t) { return t->eos_id; }
const char *tok_chat_template(const struct tokenizer *t) { return t->chat_template; }
const char *tok_bos_text(const struct tokenizer *t) { return t->bos_text ? t->bos_text : ""; }
const char *tok_eos_text(const struct tokenizer *t) { return t->eos_text ? t->eos_text : ""; }

bool tok_is_special(const struct tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab && (t->tok[id].type == TT_CONTROL || t->tok[id].type == TT_UNKNOWN);
}

const char *tok_piece(const struct tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab ? t->tok[id].text : NULL;
}

static int cmp_added(const void *a, const void *b)
{
	const struct added_token *x = a, *y = b;
	uint8_t fx = x->len ? (uint8_t)x->text[0] : 0, fy = y->len ? (uint8_t)y->text[0] : 0;
	if (fx != fy)
		return fx - fy;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id - y->id;
}

int tok_finish(struct tokenizer *t, char *err)
{
	(void)err;
	for (int b = 0; b < 256; b++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", b);
		t->byte_id[b] = smap_get(&t->vocab, name, 6);
	}
	/* drop empty added tokens; index by first byte */
	int w = 0;
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].len)
			t->added[w++] = t->added[i];
		else
			free(t->added[i].text);
	t->n_added = w;
	qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
	for (int b = 0, k = 0; b <= 256; b++) {
		while (k < t->n_added && (uint8_t)t->added[k].text[0] < b)
			k++;
		t->added_first[b] = k;
	}
	return 0;
}
