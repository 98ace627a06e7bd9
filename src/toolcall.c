/*
 * toolcall.c — tool calls and reasoning in generated text: format detection
 * from the chat template, a restartable streaming parser, and the grammars
 * that hold strict tools' calls to their schemas (toolcall.h has the API,
 * the formats and the templates that use them).
 *
 * Design. The parser keeps the whole output in one buffer and a position
 * `pos` up to which everything is decided (emitted or dropped). Each push
 * appends and runs the state machine from `pos` as far as the bytes decide;
 * finish runs it once more with eof set. A decision at any point depends
 * only on the bytes from `pos` on and on eof, never on how the text was
 * split, so streaming and whole-text parsing give the same result by
 * construction (the tests check it at every split point anyway).
 *
 * Modes:
 *   CONTENT    look for the earliest trigger: a reasoning opener (only at
 *              the start of the output), a section start (a tool call) or
 *              a skip marker (dropped structure such as <|END_RESPONSE|>).
 *              Bytes before it are content; bytes that could be the start
 *              of a trigger, and trailing whitespace, are held back.
 *   REASONING  up to the closing marker; the same hold-back.
 *   SECTION    a tool-call section started at a trigger. Sections with an
 *              end marker wait for it (or for eof where the end is
 *              optional) and hand the body to a payload parser; others
 *              (JSON until its last bracket, harmony headers, functionary
 *              recipients) parse themselves and say how much they used.
 *              A section that parses becomes calls (committed, emitted);
 *              one that does not gives back its marker (and the whitespace
 *              held before it) as content, and scanning goes on after the
 *              marker, so no byte is lost.
 *
 * Calls are collected as pending while a section parses and committed only
 * when the whole section did.
 *
 * Streaming (sections whose struct sec has a stream kind SS_*: the JSON
 * syntaxes where the name comes before the arguments object, and the
 * tagged-parameter ones, see "tagged parameters" below). While such a
 * section is open, strm_run reads, ahead of the section's own parser and
 * over the same bytes (up to its end marker, or what may be its start),
 * each call's header (`{"name": "f", "arguments": {`, `f[ARGS]{`,
 * `<｜tool▁call▁begin｜>f<｜tool▁sep｜>{`, ...) and then the arguments object
 * member by member (strings and nesting tracked, one pass). A top-level
 * member is complete at its `,` or the closing `}`; jansson parses its key
 * and value and the canonical text goes out: "{" or "," + key + ":" +
 * compact value (+ "}" at the end), which is exactly json_dumps(JSON_COMPACT)
 * of the whole object, piece by piece. The first complete member decides
 * the call: CALL_BEGIN (its index and id are those the commit would give),
 * then one CALL_ARGS per member. Anything unexpected (a header of another
 * shape, a member jansson rejects, a duplicate key, deep nesting) only
 * stops the streaming for the rest of the section; it never guesses.
 * When the section ends its parser decides as before, and:
 *   - it parsed and agrees (same names, the canonical arguments start with
 *     what streamed): the rest of the arguments text is emitted, later
 *     calls of the section come whole;
 *   - otherwise, if calls began: they stay, their arguments closed with
 *     "}" after the last member that streamed, and the section's whole text
 *     (from the whitespace before its marker through its end marker) is
 *     content, with no trigger looked for inside it (p->fence);
 *   - otherwise (nothing streamed): content as always.
 * Every decision depends on bytes only (a member is complete at a fixed
 * byte, a header longer than MAX_HEADER fails wherever the split), so the
 * split-independence above still holds.
 Tagged parameters (xs_*, one table XS of each syntax's literals, read
 * as its payload parser reads them): the header up to the name, then per
 * parameter its key (and attributes), then its value: a string streams
 * as its text comes (whole UTF-8 characters, JSON-escaped piece by piece,
 * which is the escaping of the whole; nothing that may still be the
 * closing tag), other values go out whole at their closing tag, typed by
 * typed_value as the payload parser types them. What a piece contains is
 * decided by the bytes before it, so a call that breaks later has sent
 * the same text whatever the split.
 * MiniMax-M3 is one of them: its value's closing tag names the key
 * (XF_KEYTAG), and its token inside a value stops the streaming there
 * (the parse drops it). functionary's <|python_tag|>code (code_run)
 * streams as one string value, {"code": ..}, of a call of "python".
 *
 * Strict calls (tc_strict_grammar, at the end): one table (XG) of how
 * each covered syntax writes a call after its marker, turned into GBNF
 * text: literals for the structure, %json (grammar.h) for JSON values, and
 * for raw string values a small automaton over the closing tags a value
 * must not contain (rules xt*: one per proper prefix of those tags).
 * Markers that are special tokens (TOKS: DeepSeek's, Kimi K2's, Solar's,
 * harmony's, Kimi K3's)
 * go out as token terminals (g_seq), and a format may have a second call
 * form (DeepSeek R1's), an alternative of `call`. Gemma 4's and LFM2's
 * Python-like literals have their own writer (py_strict_grammar: a value
 * per schema keyword, members as A(i) = m(i) B(i+1) | A(i+1)).
 *
 * Ids: call_ + 24 characters from a splitmix64
 * of (id_seed, index); Mistral formats, whose templates require 9
 * alphanumerics, use the model's own id when it gave one, else 9 generated.
 *
 * Memory: one growable buffer for the output, one each for content and
 * reasoning, jansson values for pending arguments; no static state.
 */
#include "toolcall.h"
#include "inferd.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_NEED, S_FAIL, S_OK };
enum { M_CONTENT, M_REASONING, M_SECTION };
enum { TK_REASON, TK_SECTION, TK_SKIP };

#define F_EOF_END 1   /* end marker may be missing at the end of the output */
#define F_START_ONLY 2 /* trigger only at the start of the output */
#define F_KEEP 4      /* the payload includes the start and end markers */
#define F_ALWAYS 8    /* also with tool_choice none (structure, not only calls) */

#define MAX_NAME 200
#define MAX_HEADER 512 /* bytes of a harmony header or functionary recipient */

struct tc_parser;

struct secres {
	size_t used;
	int next_mode;       /* M_CONTENT or M_REASONING */
	const char *close;   /* closing marker when next_mode is M_REASONING */
};

typedef int (*payload_fn)(struct tc_parser *p, const char *s, size_t n);
typedef int (*self_fn)(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r);

/* how a section's calls stream their arguments before the section ends
 * (see "Streaming" above); SS_NONE: whole calls when the section ends */
enum {
	SS_NONE, SS_JSON, SS_JSON1, SS_JSON_OBJ, SS_FENCED, SS_APERTUS, SS_MV11, SS_FV31, SS_FV32, SS_DEEPSEEK, SS_KIMI,
	SS_SOLAR, SS_HARMONY, SS_PY, SS_GEMMA, SS_CODE,
	/* parameters written as tagged text (struct xsyn, XS[kind - SS_XML]) */
	SS_XML, SS_XML_QWEN = SS_XML, SS_XML_QWEN_FN, SS_XML_GLM, SS_XML_HY3, SS_XML_MINIMAX, SS_XML_DSML, SS_XML_MINICPM,
	SS_XML_KIMI3, SS_XML_MM3
};

struct sec {
	const char *start, *end;
	int flags;
	payload_fn payload; /* with an end marker */
	self_fn self;       /* without one */
	int stream;         /* SS_* */
};

#define MAX_SECS 4
#define MAX_SKIPS 6

struct fmt_spec {
	struct sec secs[MAX_SECS];
	const char *skips[MAX_SKIPS];
};

struct rsn_spec {
	const char *open, *close;
	const char *skips[3];
};

struct trigger {
	const char *s;
	size_t len;
	int kind;
	const struct sec *sec;
	bool start_only;
};

/* a Python-literal reader (LFM2, Llama built-ins, Hermes dicts) */
struct py {
	const char *s;
	size_t n, i;
	int depth;
};
static json_t *py_value(struct py *y);

struct pcall {
	char *name;
	char *id; /* the model's own id, or NULL */
	json_t *args;
};

struct buf {
	char *p;
	size_t n, cap;
};

struct jstate {
	size_t abs;   /* where the value starts in the output */
	size_t i;     /* scanned up to here (relative to abs) */
	size_t rlen;  /* the value's length once result is S_OK */
	int depth, result;
	bool valid, started, str, esc, isstr;
};

/* a call of the open section whose arguments are streaming */
struct scall {
	char *name, *id;
	struct buf args; /* the arguments text emitted so far */
	bool closed;     /* the arguments object is complete */
	bool instr;      /* the text emitted ends inside a string value */
};

/* the open section's streaming state (linear: each byte scanned once) */
struct strm {
	bool init, off;
	int kind;
	size_t cur;   /* absolute: scanned up to here */
	int phase;    /* SP_CALL, SP_ARGS, SP_AFTER */
	int list;     /* JSON shapes: 0 not yet, 1 in an array, 2 bare objects */
	int ncand;    /* call headers found */
	char name[MAX_NAME + 1], id[72];
	size_t mstart; /* start of the current member of the arguments */
	int depth, nmem;
	bool str, esc;
	json_t *keys; /* keys emitted in the current call */
	bool fenced;  /* DeepSeek R1: the current call's JSON is fenced */
	char quote;   /* Python: the open string's quote */
	/* tagged parameters (SS_XML kinds): the current one */
	bool eaten;   /* its key's opener was read with the name (GLM) */
	char key[MAX_NAME + 1];
	int force;    /* its type: 1 a string, -1 JSON when it parses, 0 by schema */
	int vmode;    /* 0 undecided, 1 streams as a string, 2 held to its end */
	bool vpre;    /* its `,"key":` went out */
	char vend[MAX_NAME + 32]; /* its closing tag when it names the key (XF_KEYTAG) */
	size_t vstart, vemit, vscan; /* its value's start, emitted up to, searched from */
	struct scall *calls; /* begun (CALL_BEGIN emitted) */
	int n, cap;
};

struct tc_parser {
	struct tc_syntax syn;
	enum tc_choice choice;
	int parallel, no_reasoning;
	json_t *tools;
	uint64_t seed;
	struct trigger trig[MAX_SECS + MAX_SKIPS + 4];
	int ntrig;
	const char *close; /* current reasoning close marker */
	struct buf in, content, reasoning;
	size_t pos;
	size_t fence; /* no trigger before it (the rest of a section that broke) */
	int mode;
	bool skip_ws, at_start, had_reasoning, finished;
	/* the open section */
	const struct sec *sec;
	size_t sec_ws, sec_body; /* held whitespace start; body start (after the marker) */
	size_t sec_scan;         /* where to resume looking for the section's end marker */
	size_t max_section;      /* bytes of a section's body considered at most */
	struct jstate js;        /* the JSON value being scanned in the open section */
	struct strm st;          /* its calls that stream */
	struct pcall *pend;
	int npend, cappend;
	struct tc_call *calls;
	int ncalls, capcalls;
	int seen_calls; /* committed or dropped (parallel_tool_calls = false) */
	tc_emit_fn emit;
	void *ctx;
};

/* ------------------------------------------------------------ small helpers */

static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *find(const char *s, size_t n, const char *needle)
{
	size_t l = strlen(needle);
	return l <= n ? memmem(s, n, needle, l) : NULL;
}

static bool has(const char *s, size_t n, const char *needle)
{
	return find(s, n, needle) != NULL;
}

static void trim(const char **s, size_t *n)
{
	while (*n && is_ws(**s))
		(*s)++, (*n)--;
	while (*n && is_ws((*s)[*n - 1]))
		(*n)--;
}

static bool starts(const char *s, size_t n, const char *prefix)
{
	size_t l = strlen(prefix);
	return n >= l && memcmp(s, prefix, l) == 0;
}

/* Skip whitespace, then expect `lit`; advance *i past it. */
static bool expect(const char *s, size_t n, size_t *i, const char *lit)
{
	while (*i < n && is_ws(s[*i]))
		(*i)++;
	if (!starts(s + *i, n - *i, lit))
		return false;
	*i += strlen(lit);
	return true;
}

/* The text from *i up to `lit` (not included); advance *i past `lit`. */
static bool until(const char *s, size_t n, size_t *i, const char *lit, const char **out, size_t *outn)
{
	const char *q = find(s + *i, n - *i, lit);
	if (!q)
		return false;
	*out = s + *i;
	*outn = (size_t)(q - (s + *i));
	*i = (size_t)(q - s) + strlen(lit);
	return true;
}

static bool rest_is_ws(const char *s, size_t n, size_t i)
{
	for (; i < n; i++)
		if (!is_ws(s[i]))
			return false;
	return true;
}

static bool valid_name(const char *s, size_t n)
{
	if (n == 0 || n > MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == '<' || c == '>' || c == '{' || c == '}' || c == '"' || c == '\'' || c == '[' ||
		    c == ']' || c == '(' || c == ')' || c == ',' || c == 127)
			return false;
	}
	return true;
}

/* End of the JSON object or array (or with `strings` a string) at s
 * (after whitespace): S_OK with *len covering it, S_NEED when it is not
 * closed yet, S_FAIL when s holds no such value. Restartable: the scan
 * state of the value that starts at s stays in the parser (p->js), so a
 * value that arrives in many pieces is scanned once, not once per piece. */
static int json_span(struct tc_parser *p, const char *s, size_t n, bool eof, bool strings, size_t *len)
{
	struct jstate *j = &p->js;
	size_t abs = (size_t)(s - p->in.p);
	if (!j->valid || j->abs != abs)
		*j = (struct jstate){.abs = abs, .valid = true};
	if (j->result == S_OK && j->rlen <= n) {
		*len = j->rlen;
		return S_OK;
	}
	if (j->result == S_FAIL)
		return S_FAIL;
	size_t i = j->i;
	if (!j->started) {
		while (i < n && is_ws(s[i]))
			i++;
		if (i == n) {
			j->i = i;
			return eof ? S_FAIL : S_NEED;
		}
		if (s[i] == '"' && strings) { /* arguments a template wrote JSON-encoded twice */
			j->isstr = j->str = true;
			i++;
		} else if (s[i] != '{' && s[i] != '[') {
			j->result = S_FAIL;
			return S_FAIL;
		}
		j->started = true;
	}
	for (; i < n; i++) {
		char c = s[i];
		if (j->str) {
			if (j->esc)
				j->esc = false;
			else if (c == '\\')
				j->esc = true;
			else if (c == '"') {
				j->str = false;
				if (j->isstr)
					goto done;
			}
			continue;
		}
		if (c == '"') {
			j->str = true;
		} else if (c == '{' || c == '[') {
			if (++j->depth > 512) {
				j->i = i;
				j->result = S_FAIL;
				return S_FAIL;
			}
		} else if (c == '}' || c == ']') {
			if (--j->depth == 0)
				goto done;
		}
	}
	j->i = i;
	return eof ? S_FAIL : S_NEED;
done:
	j->result = S_OK;
	j->rlen = *len = i + 1;
	return S_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void make_id(uint64_t seed, int index, char *out, int nchars, const char *prefix)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	uint64_t x = seed ^ ((uint64_t)(index + 1) * 0xd1b54a32d192ed03ull);
	size_t k = strlen(prefix);
	memcpy(out, prefix, k);
	uint64_t r = 0;
	for (int i = 0; i < nchars; i++) {
		if (i % 8 == 0)
			r = splitmix64(&x);
		out[k + (size_t)i] = al[r % 62];
		r /= 62;
	}
	out[k + (size_t)nchars] = 0;
}

/* --------------------------------------------------------- pending calls */

static void pend_clear(struct tc_parser *p)
{
	for (int i = 0; i < p->npend; i++) {
		free(p->pend[i].name);
		free(p->pend[i].id);
		json_decref(p->pend[i].args);
	}
	p->npend = 0;
}

/* A call with arguments `args` (stolen; NULL = {}; a string holding a JSON
 * object is parsed). -1 when the call is not acceptable. */
static int add_call(struct tc_parser *p, const char *name, size_t nl, json_t *args, const char *id, size_t idl)
{
	if (p->choice == TC_CHOICE_NONE || !valid_name(name, nl))
		goto bad;
	if (!args)
		args = json_object();
	if (json_is_string(args)) {
		json_t *o = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
		json_decref(args);
		args = o;
	}
	if (!json_is_object(args))
		goto bad;
	if (p->npend == p->cappend) {
		int cap = p->cappend ? 2 * p->cappend : 4;
		struct pcall *q = realloc(p->pend, (size_t)cap * sizeof *q);
		if (!q)
			goto bad;
		p->pend = q;
		p->cappend = cap;
	}
	struct pcall *c = &p->pend[p->npend++];
	c->name = strndup(name, nl);
	c->id = NULL;
	if (id && idl > 0 && idl <= 64) {
		bool ok = true;
		for (size_t i = 0; i < idl; i++)
			ok = ok && (isalnum((unsigned char)id[i]) || id[i] == '_' || id[i] == '-');
		if (ok)
			c->id = strndup(id, idl);
	}
	c->args = args;
	return 0;
bad:
	json_decref(args);
	return -1;
}

static bool tool_known(const struct tc_parser *p, const char *name)
{
	size_t i;
	json_t *t;
	json_array_foreach(p->tools, i, t)
	{
		json_t *f = json_object_get(t, "function");
		const char *nm = json_string_value(json_object_get(f ? f : t, "name"));
		if (nm && !strcmp(nm, name))
			return true;
	}
	return false;
}

/* Name and arguments from a JSON object in one of the usual shapes:
 * {"name", "arguments"|"parameters"|"args"}, {"function": {"name",
 * "arguments"}}, {"tool_name", "parameters"} (Command R), and with
 * single_key also {"f": {..}} (Apertus). */
static int call_from_object(struct tc_parser *p, json_t *o, bool single_key)
{
	if (!json_is_object(o))
		return -1;
	json_t *fn = json_object_get(o, "function");
	if (json_is_object(fn))
		o = fn;
	json_t *name = json_object_get(o, "name");
	if (!name)
		name = json_object_get(o, "tool_name");
	if (!name && json_is_string(fn))
		name = fn;
	json_t *args = json_object_get(o, "arguments");
	if (!args)
		args = json_object_get(o, "parameters");
	if (!args)
		args = json_object_get(o, "args");
	if (p->syn.format == TC_FMT_LLAMA3 && json_is_string(name)) {
		/* a bare JSON reply is a call only when it looks like one */
		if (!args || (json_array_size(p->tools) && !tool_known(p, json_string_value(name))))
			return -1;
	}
	if (json_is_string(name)) {
		const char *id = json_string_value(json_object_get(o, "id"));
		return add_call(p, json_string_value(name), json_string_length(name), json_incref(args), id,
				id ? strlen(id) : 0);
	}
	if (single_key && json_object_size(o) == 1) {
		const char *k = json_object_iter_key(json_object_iter(o));
		json_t *v = json_object_iter_value(json_object_iter(o));
		if (json_is_object(v) || json_is_string(v))
			return add_call(p, k, strlen(k), json_incref(v), NULL, 0);
	}
	return -1;
}

/* One or more JSON values (objects or arrays of objects, JSON lines too). */
static int pl_json(struct tc_parser *p, const char *s, size_t n)
{
	bool single = p->syn.format == TC_FMT_APERTUS;
	size_t i = 0;
	int got = 0;
	for (;;) {
		while (i < n && is_ws(s[i]))
			i++;
		if (i == n)
			break;
		if (s[i] != '{' && s[i] != '[')
			return -1;
		json_error_t e;
		json_t *v = json_loadb(s + i, n - i, JSON_DISABLE_EOF_CHECK, &e);
		if (v) {
			i += (size_t)e.position;
		} else { /* a Python dict ({'name': 'f', 'arguments': {...}}), as Hermes 2 Pro writes at times */
			struct py y = {s, n, i, 0};
			v = py_value(&y);
			if (!v)
				return -1;
			i = y.i;
		}
		int rc = 0;
		if (json_is_array(v)) {
			for (size_t k = 0; k < json_array_size(v) && rc == 0; k++, got++)
				rc = call_from_object(p, json_array_get(v, k), single);
		} else {
			rc = call_from_object(p, v, single);
			got++;
		}
		json_decref(v);
		if (rc)
			return -1;
	}
	return got ? 0 : -1;
}

/* The JSON object of a call's arguments (whitespace around allowed). */
static json_t *args_json(const char *s, size_t n)
{
	trim(&s, &n);
	json_t *v = json_loadb(s, n, JSON_DECODE_ANY, NULL);
	if (json_is_string(v)) { /* JSON-encoded twice (templates given string arguments) */
		json_t *o = json_loadb(json_string_value(v), json_string_length(v), 0, NULL);
		json_decref(v);
		v = o;
	}
	if (v && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

static int add_call_json(struct tc_parser *p, const char *name, size_t nl, const char *a, size_t an)
{
	trim(&name, &nl);
	json_t *args = args_json(a, an);
	if (!args)
		return -1;
	return add_call(p, name, nl, args, NULL, 0);
}

/* The JSON type of parameter `pname` of tool `fname` in the request's
 * tools, or NULL. */
static const char *param_type(const struct tc_parser *p, const char *fname, size_t fl, const char *pname, size_t pl)
{
	size_t i;
	json_t *t;
	json_array_foreach(p->tools, i, t)
	{
		json_t *f = json_object_get(t, "function");
		if (!f)
			f = t;
		const char *nm = json_string_value(json_object_get(f, "name"));
		if (!nm || strlen(nm) != fl || memcmp(nm, fname, fl))
			continue;
		json_t *props = json_object_get(json_object_get(f, "parameters"), "properties");
		const char *k;
		json_t *v;
		json_object_foreach(props, k, v)
			if (strlen(k) == pl && !memcmp(k, pname, pl))
				return json_string_value(json_object_get(v, "type"));
	}
	return NULL;
}

/* A parameter value written as raw text: a string when the schema says so
 * (or force_string), else JSON when it parses as JSON, else a string. */
static json_t *typed_value(const struct tc_parser *p, const char *fname, size_t fl, const char *pname, size_t pl,
			   const char *v, size_t vn, int force_string)
{
	const char *type = force_string > 0 ? "string" : param_type(p, fname, fl, pname, pl);
	if (force_string < 0)
		type = NULL;
	if (!type || strcmp(type, "string")) {
		const char *t = v;
		size_t tn = vn;
		trim(&t, &tn);
		json_t *j = tn ? json_loadb(t, tn, JSON_DECODE_ANY, NULL) : NULL;
		if (j)
			return j;
	}
	return json_stringn(v, vn);
}

static int set_param(struct tc_parser *p, json_t *args, const char *fname, size_t fl, const char *k, size_t kl,
		     const char *v, size_t vn, int force_string)
{
	if (kl == 0 || kl > MAX_NAME)
		return -1;
	json_t *val = typed_value(p, fname, fl, k, kl, v, vn, force_string);
	if (!val)
		return -1;
	char key[MAX_NAME + 1];
	memcpy(key, k, kl);
	key[kl] = 0;
	return json_object_set_new(args, key, val) ? -1 : 0;
}

/* one leading and one trailing newline of an XML parameter value go */
static void strip_nl(const char **v, size_t *n)
{
	if (*n && (*v)[0] == '\n')
		(*v)++, (*n)--;
	if (*n && (*v)[*n - 1] == '\n')
		(*n)--;
}

/* ------------------------------------------------------- payload parsers */

/* Qwen3-Coder: name>\n<parameter=p>\nv\n</parameter>... (after "<function=",
 * up to "</function>") */
static int qwen_fn(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	const char *name;
	size_t nl;
	if (!until(s, n, &i, ">", &name, &nl) || !valid_name(name, nl))
		return -1;
	json_t *args = json_object();
	while (!rest_is_ws(s, n, i)) {
		const char *k, *v;
		size_t kl, vl;
		if (!expect(s, n, &i, "<parameter=") || !until(s, n, &i, ">", &k, &kl) ||
		    !until(s, n, &i, "</parameter>", &v, &vl))
			goto bad;
		strip_nl(&v, &vl);
		if (set_param(p, args, name, nl, k, kl, v, vl, 0))
			goto bad;
	}
	return add_call(p, name, nl, args, NULL, 0);
bad:
	json_decref(args);
	return -1;
}

static int pl_qwen_xml(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	int got = 0;
	while (!rest_is_ws(s, n, i)) {
		const char *f;
		size_t fl;
		if (!expect(s, n, &i, "<function=") || !until(s, n, &i, "</function>", &f, &fl) || qwen_fn(p, f, fl))
			return -1;
		got++;
	}
	return got ? 0 : -1;
}

/* GLM: name<arg_key>k</arg_key><arg_value>v</arg_value>... ; Hy3 the same
 * with ":opensource" tags and the name ended by <tool_sep:opensource>. */
static int glm_call(struct tc_parser *p, const char *s, size_t n, const char *sfx)
{
	char kopen[48], kclose[48], vopen[48], vclose[48], sep[48];
	snprintf(kopen, sizeof kopen, "<arg_key%s>", sfx);
	snprintf(kclose, sizeof kclose, "</arg_key%s>", sfx);
	snprintf(vopen, sizeof vopen, "<arg_value%s>", sfx);
	snprintf(vclose, sizeof vclose, "</arg_value%s>", sfx);
	snprintf(sep, sizeof sep, "<tool_sep%s>", sfx);
	const char *name = s, *q = find(s, n, kopen), *t = find(s, n, sep);
	size_t nl = q ? (size_t)(q - s) : n, i;
	if (t && (!q || t < q)) {
		nl = (size_t)(t - s);
		i = nl + strlen(sep);
	} else {
		i = nl;
	}
	trim(&name, &nl);
	if (!valid_name(name, nl))
		return -1;
	json_t *args = json_object();
	while (!rest_is_ws(s, n, i)) {
		const char *k, *v;
		size_t kl, vl;
		if (!expect(s, n, &i, kopen) || !until(s, n, &i, kclose, &k, &kl) || !expect(s, n, &i, vopen) ||
		    !until(s, n, &i, vclose, &v, &vl))
			goto bad;
		trim(&k, &kl);
		if (set_param(p, args, name, nl, k, kl, v, vl, 0))
			goto bad;
	}
	return add_call(p, name, nl, args, NULL, 0);
bad:
	json_decref(args);
	return -1;
}

static int pl_glm(struct tc_parser *p, const char *s, size_t n)
{
	return glm_call(p, s, n, "");
}

static int pl_hy3(struct tc_parser *p, const char *s, size_t n)
{
	return glm_call(p, s, n, ":opensource");
}

/* the type a parameter's attributes give its value (as typed_value's
 * force_string): string="true" a string, string="false" JSON */
static int attr_force(const char *attrs, size_t al)
{
	return has(attrs, al, "string=\"true\"") ? 1 : has(attrs, al, "string=\"false\"") ? -1 : 0;
}

/* a <![CDATA[..]]> value is its inside, a string */
static void cdata(const char **v, size_t *vl, int *force)
{
	if (starts(*v, *vl, "<![CDATA[") && *vl >= 12 && !memcmp(*v + *vl - 3, "]]>", 3)) {
		*v += 9;
		*vl -= 12;
		*force = 1;
	}
}

/* <TAG name="f">(<PTAG name="k" [string="true|false"]>v</PTAG>)*</TAG>,
 * repeated: MiniMax-M2 (invoke/parameter), DSML, MiniCPM (function/param,
 * values may be CDATA). */
static int invoke_list(struct tc_parser *p, const char *s, size_t n, const char *tag, const char *ptag)
{
	char open[64], close[64], popen[64], pclose[64];
	snprintf(open, sizeof open, "<%s name=\"", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	snprintf(popen, sizeof popen, "<%s name=\"", ptag);
	snprintf(pclose, sizeof pclose, "</%s>", ptag);
	size_t i = 0;
	int got = 0;
	while (!rest_is_ws(s, n, i)) {
		const char *name, *body;
		size_t nl, bl, j = 0;
		if (!expect(s, n, &i, open) || !until(s, n, &i, "\"", &name, &nl) || !expect(s, n, &i, ">") ||
		    !until(s, n, &i, close, &body, &bl) || !valid_name(name, nl))
			return -1;
		json_t *args = json_object();
		while (!rest_is_ws(body, bl, j)) {
			const char *k, *attrs, *v;
			size_t kl, al, vl;
			if (!expect(body, bl, &j, popen) || !until(body, bl, &j, "\"", &k, &kl) ||
			    !until(body, bl, &j, ">", &attrs, &al) || !until(body, bl, &j, pclose, &v, &vl)) {
				json_decref(args);
				return -1;
			}
			int force = attr_force(attrs, al);
			cdata(&v, &vl, &force);
			if (set_param(p, args, name, nl, k, kl, v, vl, force)) {
				json_decref(args);
				return -1;
			}
		}
		if (add_call(p, name, nl, args, NULL, 0))
			return -1;
		got++;
	}
	return got ? 0 : -1;
}

static int pl_minimax(struct tc_parser *p, const char *s, size_t n)
{
	return invoke_list(p, s, n, "invoke", "parameter");
}

static int pl_dsml(struct tc_parser *p, const char *s, size_t n)
{
	return invoke_list(p, s, n, "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c" "invoke",
			   "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c" "parameter");
}

static int pl_minicpm(struct tc_parser *p, const char *s, size_t n)
{
	return invoke_list(p, s, n, "function", "param");
}

#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"
#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"

/* DeepSeek: <｜tool▁call▁begin｜>X<｜tool▁sep｜>Y<｜tool▁call▁end｜>, repeated.
 * V3.1: X = name, Y = JSON. R1: X = "function", Y = name\n```json\n{..}\n``` */
static int pl_deepseek(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	int got = 0;
	while (!rest_is_ws(s, n, i)) {
		const char *x, *y;
		size_t xl, yl;
		if (!expect(s, n, &i, DS_CALL_BEGIN) || !until(s, n, &i, DS_SEP, &x, &xl) ||
		    !until(s, n, &i, DS_CALL_END, &y, &yl))
			return -1;
		trim(&x, &xl);
		const char *fence = find(y, yl, "```json");
		if (xl == 8 && !memcmp(x, "function", 8) && fence) {
			const char *name = y, *a = fence + 7;
			size_t nl = (size_t)(fence - y), al = yl - (size_t)(a - y);
			trim(&a, &al);
			if (al < 3 || memcmp(a + al - 3, "```", 3))
				return -1;
			if (add_call_json(p, name, nl, a, al - 3))
				return -1;
		} else if (add_call_json(p, x, xl, y, yl)) {
			return -1;
		}
		got++;
	}
	return got ? 0 : -1;
}

/* Kimi K2: <|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{..}<|tool_call_end|> */
static int pl_kimi(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	int got = 0;
	while (!rest_is_ws(s, n, i)) {
		const char *h, *a;
		size_t hl, al;
		if (!expect(s, n, &i, "<|tool_call_begin|>") || !until(s, n, &i, "<|tool_call_argument_begin|>", &h, &hl) ||
		    !until(s, n, &i, "<|tool_call_end|>", &a, &al))
			return -1;
		trim(&h, &hl);
		if (starts(h, hl, "functions."))
			h += 10, hl -= 10;
		const char *colon = hl ? memrchr(h, ':', hl) : NULL;
		if (colon)
			hl = (size_t)(colon - h);
		if (add_call_json(p, h, hl, a, al))
			return -1;
		got++;
	}
	return got ? 0 : -1;
}

/* Solar: id<|tool_call:name|>f<|tool_call:args|>{..} */
static int pl_solar(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	const char *id, *name;
	size_t idl, nl;
	if (!until(s, n, &i, "<|tool_call:name|>", &id, &idl) || !until(s, n, &i, "<|tool_call:args|>", &name, &nl))
		return -1;
	trim(&name, &nl);
	json_t *args = args_json(s + i, n - i);
	if (!args)
		return -1;
	trim(&id, &idl);
	return add_call(p, name, nl, args, id, idl);
}

/* functionary v3.1: f>{..} (after "<function=", up to "</function>") */
static int pl_fv31(struct tc_parser *p, const char *s, size_t n)
{
	const char *gt = memchr(s, '>', n);
	if (!gt)
		return -1;
	return add_call_json(p, s, (size_t)(gt - s), gt + 1, n - (size_t)(gt + 1 - s));
}

/* functionary v3.1: <|python_tag|>code is a call of "python" */
static int pl_python_code(struct tc_parser *p, const char *s, size_t n)
{
	trim(&s, &n);
	json_t *code = json_stringn(s, n);
	if (!n || !code) {
		json_decref(code);
		return -1;
	}
	json_t *args = json_object();
	json_object_set_new(args, "code", code);
	return add_call(p, "python", 6, args, NULL, 0);
}

/* ---- Python literals (LFM2, Llama's built-in tools): f(k=v, ...) */


static void py_ws(struct py *y)
{
	while (y->i < y->n && is_ws(y->s[y->i]))
		y->i++;
}

static bool py_lit(struct py *y, const char *lit)
{
	py_ws(y);
	if (!starts(y->s + y->i, y->n - y->i, lit))
		return false;
	y->i += strlen(lit);
	return true;
}

static json_t *py_string(struct py *y)
{
	char q = y->s[y->i++];
	struct buf b = {0};
	while (y->i < y->n && y->s[y->i] != q) {
		char c = y->s[y->i++];
		if (c == '\\' && y->i < y->n) {
			c = y->s[y->i++];
			switch (c) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case '0': c = 0; break;
			default: break; /* \\, \', \" and the rest: the character */
			}
		}
		buf_add(&b, &c, 1);
	}
	json_t *r = NULL;
	if (y->i < y->n) {
		y->i++;
		r = json_stringn(b.p ? b.p : "", b.n);
	}
	free(b.p);
	return r;
}

static json_t *py_value(struct py *y)
{
	py_ws(y);
	if (y->i >= y->n || ++y->depth > 64)
		return NULL;
	json_t *r = NULL;
	char c = y->s[y->i];
	if (c == '\'' || c == '"') {
		r = py_string(y);
	} else if (c == '[' || c == '(') {
		char end = c == '[' ? ']' : ')';
		y->i++;
		r = json_array();
		py_ws(y);
		if (y->i < y->n && y->s[y->i] == end) {
			y->i++;
		} else {
			for (;;) {
				json_t *v = py_value(y);
				if (!v || json_array_append_new(r, v))
					goto bad;
				py_ws(y);
				if (y->i < y->n && y->s[y->i] == ',') {
					y->i++;
					continue;
				}
				if (y->i < y->n && y->s[y->i] == end) {
					y->i++;
					break;
				}
				goto bad;
			}
		}
	} else if (c == '{') {
		y->i++;
		r = json_object();
		py_ws(y);
		if (y->i < y->n && y->s[y->i] == '}') {
			y->i++;
		} else {
			for (;;) {
				py_ws(y);
				json_t *k = y->i < y->n && (y->s[y->i] == '\'' || y->s[y->i] == '"') ? py_string(y) : NULL;
				if (!k || !py_lit(y, ":")) {
					json_decref(k);
					goto bad;
				}
				json_t *v = py_value(y);
				int rc = v ? json_object_set_new(r, json_string_value(k), v) : -1;
				json_decref(k);
				if (rc)
					goto bad;
				if (py_lit(y, ","))
					continue;
				if (py_lit(y, "}"))
					break;
				goto bad;
			}
		}
	} else if (py_lit(y, "True")) {
		r = json_true();
	} else if (py_lit(y, "False")) {
		r = json_false();
	} else if (py_lit(y, "None")) {
		r = json_null();
	} else {
		size_t j = y->i;
		while (j < y->n && (isdigit((unsigned char)y->s[j]) || strchr("+-.eE", y->s[j])))
			j++;
		if (j > y->i) {
			r = json_loadb(y->s + y->i, j - y->i, JSON_DECODE_ANY, NULL);
			y->i = j;
		}
	}
	y->depth--;
	return r;
bad:
	y->depth--;
	json_decref(r);
	return NULL;
}

/* f(k=v, ...); a trailing ".call" of the name goes (Llama built-ins). */
static int py_call(struct tc_parser *p, struct py *y)
{
	py_ws(y);
	size_t a = y->i;
	while (y->i < y->n && (isalnum((unsigned char)y->s[y->i]) || strchr("_.-", y->s[y->i])))
		y->i++;
	size_t nl = y->i - a;
	if (nl > 5 && !memcmp(y->s + y->i - 5, ".call", 5))
		nl -= 5;
	if (!nl || !py_lit(y, "("))
		return -1;
	json_t *args = json_object();
	if (!py_lit(y, ")")) {
		for (;;) {
			py_ws(y);
			size_t k = y->i;
			while (y->i < y->n && (isalnum((unsigned char)y->s[y->i]) || y->s[y->i] == '_'))
				y->i++;
			size_t kl = y->i - k;
			char key[MAX_NAME + 1];
			if (!kl || kl > MAX_NAME || !py_lit(y, "="))
				goto bad;
			memcpy(key, y->s + k, kl);
			key[kl] = 0;
			json_t *v = py_value(y);
			if (!v || json_object_set_new(args, key, v))
				goto bad;
			if (py_lit(y, ","))
				continue;
			if (py_lit(y, ")"))
				break;
			goto bad;
		}
	}
	return add_call(p, y->s + a, nl, args, NULL, 0);
bad:
	json_decref(args);
	return -1;
}

/* [f(..), g(..)] or f(..) */
static int pl_pylist(struct tc_parser *p, const char *s, size_t n)
{
	struct py y = {s, n, 0, 0};
	if (py_lit(&y, "[")) {
		for (;;) {
			if (py_call(p, &y))
				return -1;
			if (py_lit(&y, ","))
				continue;
			if (py_lit(&y, "]"))
				break;
			return -1;
		}
	} else if (py_call(p, &y)) {
		return -1;
	}
	return rest_is_ws(s, n, y.i) ? 0 : -1;
}

/* Llama <|python_tag|>: JSON call(s) or a built-in f.call(k="v") */
static int pl_llama_tag(struct tc_parser *p, const char *s, size_t n)
{
	const char *t = s;
	size_t tl = n;
	trim(&t, &tl);
	if (tl && t[0] == '{')
		return pl_json(p, t, tl);
	return pl_pylist(p, t, tl);
}

/* ---- Gemma 4: call:f{k:<|"|>text<|"|>,n:1,o:{..},l:[..]} */

#define GQ "<|\"|>"

static json_t *gemma_value(struct py *y);

static json_t *gemma_object(struct py *y)
{
	json_t *o = json_object();
	y->i++; /* { */
	if (py_lit(y, "}"))
		return o;
	for (;;) {
		py_ws(y);
		size_t k = y->i;
		while (y->i < y->n && y->s[y->i] != ':' && y->s[y->i] != '}' && y->i - k <= MAX_NAME)
			y->i++;
		size_t kl = y->i - k;
		if (!kl || kl > MAX_NAME || !py_lit(y, ":"))
			break;
		char key[MAX_NAME + 1];
		memcpy(key, y->s + k, kl);
		key[kl] = 0;
		json_t *v = gemma_value(y);
		if (!v || json_object_set_new(o, key, v))
			break;
		if (py_lit(y, ","))
			continue;
		if (py_lit(y, "}"))
			return o;
		break;
	}
	json_decref(o);
	return NULL;
}

static json_t *gemma_value(struct py *y)
{
	py_ws(y);
	if (y->i >= y->n || ++y->depth > 64)
		return NULL;
	json_t *r = NULL;
	if (starts(y->s + y->i, y->n - y->i, GQ)) {
		y->i += strlen(GQ);
		const char *q = find(y->s + y->i, y->n - y->i, GQ);
		if (q) {
			r = json_stringn(y->s + y->i, (size_t)(q - (y->s + y->i)));
			y->i = (size_t)(q - y->s) + strlen(GQ);
		}
	} else if (y->s[y->i] == '{') {
		r = gemma_object(y);
	} else if (y->s[y->i] == '[') {
		y->i++;
		r = json_array();
		if (!py_lit(y, "]")) {
			for (;;) {
				json_t *v = gemma_value(y);
				if (!v || json_array_append_new(r, v)) {
					json_decref(r);
					r = NULL;
					break;
				}
				if (py_lit(y, ","))
					continue;
				if (py_lit(y, "]"))
					break;
				json_decref(r);
				r = NULL;
				break;
			}
		}
	} else {
		size_t j = y->i;
		while (j < y->n && !strchr(",}]", y->s[j]))
			j++;
		const char *t = y->s + y->i;
		size_t tl = j - y->i;
		trim(&t, &tl);
		r = tl ? json_loadb(t, tl, JSON_DECODE_ANY, NULL) : NULL;
		if (r && (json_is_object(r) || json_is_array(r) || json_is_string(r))) {
			json_decref(r);
			r = NULL;
		}
		if (!r && tl)
			r = json_stringn(t, tl);
		y->i = j;
	}
	y->depth--;
	return r;
}

static int pl_gemma(struct tc_parser *p, const char *s, size_t n)
{
	struct py y = {s, n, 0, 0};
	if (!py_lit(&y, "call:"))
		return -1;
	const char *br = find(s + y.i, n - y.i, "{");
	if (!br)
		return -1;
	const char *name = s + y.i;
	size_t nl = (size_t)(br - name);
	y.i = (size_t)(br - s);
	if (starts(br, n - y.i, "{{")) { /* string arguments: the JSON text in braces */
		const char *a = br + 1;
		size_t al = n - y.i - 1;
		trim(&a, &al);
		if (!al || a[al - 1] != '}')
			return -1;
		json_t *args = args_json(a, al - 1);
		return args ? add_call(p, name, nl, args, NULL, 0) : -1;
	}
	json_t *args = gemma_object(&y);
	if (!args || !rest_is_ws(s, n, y.i)) {
		json_decref(args);
		return -1;
	}
	return add_call(p, name, nl, args, NULL, 0);
}

/* ---- Kimi K3: <|open|>call tool="f" index="1"<|sep|>
 * (<|open|>argument key="k" type="T"<|sep|>v<|close|>argument<|sep|>)*
 * <|close|>call<|sep|> (the payload includes both markers) */
static int pl_kimi3(struct tc_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	const char *name, *attrs;
	size_t nl, al;
	if (!expect(s, n, &i, "<|open|>call tool=\"") || !until(s, n, &i, "\"", &name, &nl) ||
	    !until(s, n, &i, "<|sep|>", &attrs, &al))
		return -1;
	json_t *args = NULL;
	if (expect(s, n, &i, "<|open|>json")) { /* the arguments as one JSON object */
		const char *a;
		size_t al2;
		if (!until(s, n, &i, "<|sep|>", &attrs, &al) || !until(s, n, &i, "<|close|>json<|sep|>", &a, &al2) ||
		    !(args = args_json(a, al2)) || !expect(s, n, &i, "<|close|>call<|sep|>") || !rest_is_ws(s, n, i))
			goto bad;
		return add_call(p, name, nl, args, NULL, 0);
	}
	args = json_object();
	while (!starts(s + i, n - i, "<|close|>call<|sep|>")) {
		const char *k, *v;
		size_t kl, vl;
		if (!expect(s, n, &i, "<|open|>argument key=\"") || !until(s, n, &i, "\"", &k, &kl) ||
		    !until(s, n, &i, "<|sep|>", &attrs, &al) || !until(s, n, &i, "<|close|>argument<|sep|>", &v, &vl))
			goto bad;
		int force = has(attrs, al, "type=\"string\"") ? 1 : -1;
		if (set_param(p, args, name, nl, k, kl, v, vl, force))
			goto bad;
		while (i < n && is_ws(s[i]))
			i++;
	}
	return add_call(p, name, nl, args, NULL, 0);
bad:
	json_decref(args);
	return -1;
}

/* MiniMax-M3: the ]<]minimax[>[ token before every tag goes, then
 * <invoke name="f">(<k>v</k>)*</invoke>, repeated */
#define MM3 "]<]minimax[>["
static int pl_minimax3(struct tc_parser *p, const char *s0, size_t n0)
{
	struct buf b = {0};
	for (size_t i = 0; i < n0;) {
		if (starts(s0 + i, n0 - i, MM3)) {
			i += strlen(MM3);
			continue;
		}
		buf_add(&b, s0 + i, 1);
		i++;
	}
	const char *s = b.p ? b.p : "";
	size_t n = b.n, i = 0;
	int got = 0, rc = -1;
	while (!rest_is_ws(s, n, i)) {
		const char *name, *body;
		size_t nl, bl, j = 0;
		if (!expect(s, n, &i, "<invoke name=\"") || !until(s, n, &i, "\"", &name, &nl) || !expect(s, n, &i, ">") ||
		    !until(s, n, &i, "</invoke>", &body, &bl) || !valid_name(name, nl))
			goto out;
		json_t *args = json_object();
		while (!rest_is_ws(body, bl, j)) {
			const char *k, *v;
			size_t kl, vl;
			char close[MAX_NAME + 4];
			if (!expect(body, bl, &j, "<") || !until(body, bl, &j, ">", &k, &kl) || !valid_name(k, kl)) {
				json_decref(args);
				goto out;
			}
			snprintf(close, sizeof close, "</%.*s>", (int)kl, k);
			if (!until(body, bl, &j, close, &v, &vl) || set_param(p, args, name, nl, k, kl, v, vl, 0)) {
				json_decref(args);
				goto out;
			}
		}
		if (add_call(p, name, nl, args, NULL, 0))
			goto out;
		got++;
	}
	rc = got ? 0 : -1;
out:
	free(b.p);
	return rc;
}

/* ------------------------------------------------- self-delimited sections */

/* A JSON object/array right after the marker (Mistral, Granite 3.3,
 * firefunction, GigaChat, Llama's bare JSON). */
static int self_json(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	size_t len;
	int rc = json_span(p, s, n, eof, false, &len);
	if (rc != S_OK)
		return rc;
	if (pl_json(p, s, len))
		return S_FAIL;
	r->used = len;
	return S_OK;
}

/* Mistral v11: f[ARGS]{..} or f[CALL_ID]id[ARGS]{..} */
static int self_mistral_v11(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	const char *a = find(s, n, "[ARGS]");
	if (!a) {
		if (eof || n > MAX_HEADER)
			return S_FAIL;
		return S_NEED;
	}
	const char *name = s, *id = NULL;
	size_t nl = (size_t)(a - s), idl = 0;
	const char *c = find(s, nl, "[CALL_ID]");
	if (c) {
		id = c + 9;
		idl = (size_t)(a - id);
		nl = (size_t)(c - s);
	}
	const char *j = a + 6;
	size_t len;
	int rc = json_span(p, j, n - (size_t)(j - s), eof, true, &len);
	if (rc != S_OK)
		return rc;
	trim(&name, &nl);
	json_t *args = args_json(j, len);
	if (!args)
		return S_FAIL;
	if (id)
		trim(&id, &idl);
	if (add_call(p, name, nl, args, id, idl))
		return S_FAIL;
	r->used = (size_t)(j - s) + len;
	return S_OK;
}

/* Command R+: Action: ```json\n[{"tool_name": f, "parameters": {..}}]\n``` */
static int self_command_r(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	size_t i = 0;
	while (i < n && is_ws(s[i]))
		i++;
	static const char fence[] = "```json";
	size_t avail = n - i < 7 ? n - i : 7;
	if (memcmp(s + i, fence, avail))
		return S_FAIL;
	if (avail < 7)
		return eof ? S_FAIL : S_NEED;
	i += 7;
	size_t len;
	int rc = json_span(p, s + i, n - i, eof, false, &len);
	if (rc != S_OK)
		return rc;
	size_t j = i + len;
	while (j < n && is_ws(s[j]))
		j++;
	if (n - j < 3)
		return eof || (n > j && s[j] != '`') ? S_FAIL : S_NEED;
	if (memcmp(s + j, "```", 3) || pl_json(p, s + i, len))
		return S_FAIL;
	r->used = j + 3;
	return S_OK;
}

/* functionary v3.2: recipient\n then JSON arguments, or "all\n" then text */
static int self_fv32(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	const char *nl = memchr(s, '\n', n);
	if (!nl)
		return eof || n > MAX_NAME ? S_FAIL : S_NEED;
	const char *name = s;
	size_t len = (size_t)(nl - s);
	trim(&name, &len);
	if (len == 3 && !memcmp(name, "all", 3)) {
		r->used = (size_t)(nl + 1 - s);
		return S_OK;
	}
	const char *j = nl + 1;
	size_t jl;
	int rc = json_span(p, j, n - (size_t)(j - s), eof, true, &jl);
	if (rc != S_OK)
		return rc;
	json_t *args = args_json(j, jl);
	if (!args || add_call(p, name, len, args, NULL, 0))
		return S_FAIL;
	r->used = (size_t)(j - s) + jl;
	return S_OK;
}

/* gpt-oss harmony: a header up to <|message|> (after <|channel|> or
 * <|start|>): analysis opens reasoning, a recipient to=functions.f takes a
 * JSON body, anything else (final, commentary) is content. */
static int self_harmony(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r, bool channel)
{
	const char *m = find(s, n, "<|message|>");
	if (!m)
		return eof || n > MAX_HEADER ? S_FAIL : S_NEED;
	size_t hl = (size_t)(m - s), body = hl + 11;
	const char *ch = s;
	size_t cl = 0;
	if (!channel) {
		const char *c = find(s, hl, "<|channel|>");
		ch = c ? c + 11 : s + hl;
	}
	while (ch + cl < s + hl && !is_ws(ch[cl]) && ch[cl] != '<')
		cl++;
	const char *to = find(s, hl, "to=");
	if (to) {
		const char *name = to + 3;
		size_t nl = 0;
		while (name + nl < s + hl && !is_ws(name[nl]) && name[nl] != '<')
			nl++;
		if (starts(name, nl, "functions."))
			name += 10, nl -= 10;
		size_t jl;
		int rc = json_span(p, s + body, n - body, eof, true, &jl);
		if (rc != S_OK)
			return rc;
		json_t *args = args_json(s + body, jl);
		if (!args || add_call(p, name, nl, args, NULL, 0))
			return S_FAIL;
		r->used = body + jl;
		return S_OK;
	}
	r->used = body;
	if (cl == 8 && !memcmp(ch, "analysis", 8) && !p->no_reasoning) {
		r->next_mode = M_REASONING;
		r->close = "<|end|>";
	}
	return S_OK;
}

static int self_harmony_channel(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	return self_harmony(p, s, n, eof, r, true);
}

static int self_harmony_start(struct tc_parser *p, const char *s, size_t n, bool eof, struct secres *r)
{
	return self_harmony(p, s, n, eof, r, false);
}

/* ------------------------------------------------------------ the tables */

static const struct fmt_spec FMT[TC_FMT_COUNT] = {
	[TC_FMT_HERMES] = {{{"<tool_call>", "</tool_call>", F_EOF_END, pl_json, NULL, SS_JSON}}, {NULL}},
	[TC_FMT_QWEN3_XML] = {{{"<tool_call>", "</tool_call>", F_EOF_END, pl_qwen_xml, NULL, SS_XML_QWEN},
			       {"<function=", "</function>", 0, qwen_fn, NULL, SS_XML_QWEN_FN}},
			      {NULL}},
	[TC_FMT_SEED_XML] = {{{"<seed:tool_call>", "</seed:tool_call>", 0, pl_qwen_xml, NULL, SS_XML_QWEN}}, {NULL}},
	[TC_FMT_LLAMA3] = {{{"{", NULL, F_START_ONLY | F_KEEP, NULL, self_json, SS_JSON1},
			    {"<|python_tag|>", "<|eom_id|>", F_EOF_END, pl_llama_tag, NULL, SS_JSON_OBJ}},
			   {NULL}},
	[TC_FMT_MISTRAL] = {{{"[TOOL_CALLS]", NULL, 0, NULL, self_json, SS_JSON1}}, {NULL}},
	[TC_FMT_MISTRAL_V11] = {{{"[TOOL_CALLS]", NULL, 0, NULL, self_mistral_v11, SS_MV11}}, {NULL}},
	[TC_FMT_DEEPSEEK] = {{{DS_CALLS_BEGIN, DS_CALLS_END, F_EOF_END, pl_deepseek, NULL, SS_DEEPSEEK}}, {NULL}},
	[TC_FMT_DSML] = {{{"<\xef\xbd\x9c" "DSML\xef\xbd\x9c" "function_calls>",
			   "</\xef\xbd\x9c" "DSML\xef\xbd\x9c" "function_calls>", F_EOF_END, pl_dsml, NULL, SS_XML_DSML},
			  {"<\xef\xbd\x9c" "DSML\xef\xbd\x9c" "tool_calls>", "</\xef\xbd\x9c" "DSML\xef\xbd\x9c" "tool_calls>",
			   F_EOF_END, pl_dsml, NULL, SS_XML_DSML}},
			 {NULL}},
	[TC_FMT_FUNCTIONARY_V31] = {{{"<function=", "</function>", 0, pl_fv31, NULL, SS_FV31},
				     {"<|python_tag|>", "<|eom_id|>", F_EOF_END, pl_python_code, NULL, SS_CODE}},
				    {NULL}},
	[TC_FMT_FUNCTIONARY_V32] = {{{">>>", NULL, F_ALWAYS, NULL, self_fv32, SS_FV32}}, {NULL}},
	[TC_FMT_GRANITE] = {{{"<|tool_call|>", NULL, 0, NULL, self_json, SS_JSON1}}, {"<response>", "</response>"}},
	[TC_FMT_FIREFUNCTION] = {{{"functools", NULL, 0, NULL, self_json, SS_JSON1}}, {NULL}},
	[TC_FMT_GLM] = {{{"<tool_call>", "</tool_call>", F_EOF_END, pl_glm, NULL, SS_XML_GLM}}, {NULL}},
	[TC_FMT_COMMAND_R_PLUS] = {{{"Action:", NULL, 0, NULL, self_command_r, SS_FENCED}}, {NULL}},
	[TC_FMT_HY3] = {{{"<tool_call:opensource>", "</tool_call:opensource>", 0, pl_hy3, NULL, SS_XML_HY3}},
			{"<tool_calls:opensource>", "</tool_calls:opensource>"}},
	[TC_FMT_KIMI_K2] = {{{"<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", F_EOF_END, pl_kimi, NULL, SS_KIMI}},
			    {NULL}},
	[TC_FMT_HARMONY] = {{{"<|channel|>", NULL, F_ALWAYS, NULL, self_harmony_channel, SS_HARMONY},
			     {"<|start|>", NULL, F_ALWAYS, NULL, self_harmony_start, SS_HARMONY}},
			    {"<|end|>", "<|return|>", "<|call|>"}},
	[TC_FMT_COMMAND_R7B] = {{{"<|START_ACTION|>", "<|END_ACTION|>", F_EOF_END, pl_json, NULL, SS_JSON}},
				{"<|START_RESPONSE|>", "<|END_RESPONSE|>"}},
	[TC_FMT_JSON_TAGS] = {{{"<tool_calls>", "</tool_calls>", F_EOF_END, pl_json, NULL, SS_JSON}}, {NULL}},
	[TC_FMT_NEMOTRON_V2] = {{{"<TOOLCALL>", "</TOOLCALL>", F_EOF_END, pl_json, NULL, SS_JSON}}, {NULL}},
	[TC_FMT_MINIMAX_M2] = {{{"<minimax:tool_call>", "</minimax:tool_call>", F_EOF_END, pl_minimax, NULL, SS_XML_MINIMAX}}, {NULL}},
	[TC_FMT_MINICPM] = {{{"<function name=\"", "</function>", F_KEEP, pl_minicpm, NULL, SS_XML_MINICPM}}, {NULL}},
	[TC_FMT_LFM2] = {{{"<|tool_call_start|>", "<|tool_call_end|>", 0, pl_pylist, NULL, SS_PY}}, {NULL}},
	[TC_FMT_SOLAR] = {{{"<|tool_call:begin|>", "<|tool_call:end|>", 0, pl_solar, NULL, SS_SOLAR}}, {"<|tool_calls|>", "<|calls|>"}},
	[TC_FMT_APERTUS] = {{{"<|tools_prefix|>", "<|tools_suffix|>", F_EOF_END, pl_json, NULL, SS_APERTUS}}, {NULL}},
	[TC_FMT_GIGACHAT] = {{{"<|function_call|>", NULL, 0, NULL, self_json, SS_JSON1}}, {NULL}},
	[TC_FMT_GEMMA4] = {{{"<|tool_call>", "<tool_call|>", 0, pl_gemma, NULL, SS_GEMMA}}, {NULL}},
	[TC_FMT_KIMI_K3] = {{{"<|open|>call tool=\"", "<|close|>call<|sep|>", F_KEEP, pl_kimi3, NULL, SS_XML_KIMI3}},
			    {"<|open|>tools<|sep|>", "<|close|>tools<|sep|>"}},
	[TC_FMT_MINIMAX_M3] = {{{MM3 "<tool_call>", MM3 "</tool_call>", F_EOF_END, pl_minimax3, NULL, SS_XML_MM3}}, {NULL}},
};

static const struct rsn_spec RSN[TC_RSN_COUNT] = {
	[TC_RSN_THINK] = {"<think>", "</think>", {NULL}},
	[TC_RSN_SEED] = {"<seed:think>", "</seed:think>", {NULL}},
	[TC_RSN_COHERE] = {"<|START_THINKING|>", "<|END_THINKING|>", {NULL}},
	[TC_RSN_MISTRAL] = {"[THINK]", "[/THINK]", {NULL}},
	[TC_RSN_HY3] = {"<think:opensource>", "</think:opensource>", {NULL}},
	[TC_RSN_GEMMA4] = {"<|channel>thought", "<channel|>", {NULL}},
	[TC_RSN_KIMI_K3] = {"<|open|>think<|sep|>", "<|close|>think<|sep|>",
			    {"<|open|>response<|sep|>", "<|close|>response<|sep|>"}},
	[TC_RSN_APRIEL] = {"Here are my reasoning steps:\n", "[BEGIN FINAL RESPONSE]", {"[END FINAL RESPONSE]"}},
	[TC_RSN_MINIMAX_M3] = {"<mm:think>", "</mm:think>", {NULL}},
};

const char *tc_format_name(enum tc_format f)
{
	static const char *const names[] = {
#define TC_X_NAME(id, name) name,
		TC_FORMATS(TC_X_NAME)
#undef TC_X_NAME
	};
	return (unsigned)f < TC_FMT_COUNT ? names[f] : "unknown";
}

const char *tc_reasoning_name(enum tc_reasoning r)
{
	static const char *const names[] = {
#define TC_X_NAME(id, name) name,
		TC_REASONINGS(TC_X_NAME)
#undef TC_X_NAME
	};
	return (unsigned)r < TC_RSN_COUNT ? names[r] : "unknown";
}

/* ------------------------------------------------------------- detection */

unsigned tc_template_vars(const char *src, size_t n)
{
	static const struct {
		const char *name;
		unsigned bit;
	} V[] = {{"enable_thinking", TC_VAR_ENABLE_THINKING},
		 {"reasoning_effort", TC_VAR_REASONING_EFFORT},
		 {"thinking", TC_VAR_THINKING},
		 {"thinking_budget", TC_VAR_THINKING_BUDGET},
		 {"thinking_mode", TC_VAR_THINKING_MODE}};
	unsigned bits = 0;
	size_t i = 0;
	while (src && i + 1 < n) {
		/* the code of {{ }} and {% %} blocks; text outside is output */
		if (src[i] != '{' || (src[i + 1] != '{' && src[i + 1] != '%')) {
			i++;
			continue;
		}
		char close = src[i + 1] == '{' ? '}' : '%';
		i += 2;
		while (i + 1 < n && !(src[i] == close && src[i + 1] == '}')) {
			char c = src[i];
			if (c == '\'' || c == '"') { /* a string literal */
				for (i++; i < n && src[i] != c; i++)
					if (src[i] == '\\')
						i++;
				i++;
			} else if (isalpha((unsigned char)c) || c == '_') {
				size_t a = i;
				while (i < n && (isalnum((unsigned char)src[i]) || src[i] == '_'))
					i++;
				size_t b = a;
				while (b > 0 && is_ws(src[b - 1]))
					b--;
				if (b > 0 && src[b - 1] == '.')
					continue; /* an attribute, not a variable */
				for (size_t k = 0; k < sizeof V / sizeof V[0]; k++)
					if (strlen(V[k].name) == i - a && !memcmp(src + a, V[k].name, i - a))
						bits |= V[k].bit;
			} else {
				i++;
			}
		}
		i += 2;
	}
	return bits;
}

void tc_detect(const char *s, size_t n, struct tc_syntax *out)
{
	memset(out, 0, sizeof *out);
	if (!s)
		return;
	enum tc_format f = TC_FMT_NONE;
	if (has(s, n, "<|channel|>") && has(s, n, "<|message|>"))
		f = TC_FMT_HARMONY;
	else if (has(s, n, "tool_calls_section_begin"))
		f = TC_FMT_KIMI_K2;
	else if (has(s, n, "open_tag('call'") && has(s, n, "'<|open|>'"))
		f = TC_FMT_KIMI_K3;
	else if (has(s, n, "\xef\xbd\x9c" "DSML\xef\xbd\x9c"))
		f = TC_FMT_DSML;
	else if (has(s, n, "tool\xe2\x96\x81" "call\xe2\x96\x81" "begin"))
		f = TC_FMT_DEEPSEEK;
	else if (has(s, n, "<minimax:tool_call>"))
		f = TC_FMT_MINIMAX_M2;
	else if (has(s, n, "<seed:tool_call>"))
		f = TC_FMT_SEED_XML;
	else if (has(s, n, "<tool_call:opensource>") || has(s, n, "<arg_key:opensource>") ||
		 (has(s, n, ":opensource") && has(s, n, "'<tool_call{}>'.format")))
		f = TC_FMT_HY3;
	else if (has(s, n, MM3) && has(s, n, "<invoke name="))
		f = TC_FMT_MINIMAX_M3;
	else if (has(s, n, "<arg_key>"))
		f = TC_FMT_GLM;
	else if (has(s, n, "<function=") && has(s, n, "<parameter="))
		f = TC_FMT_QWEN3_XML;
	else if (has(s, n, "[TOOL_CALLS]") && has(s, n, "[ARGS]"))
		f = TC_FMT_MISTRAL_V11;
	else if (has(s, n, "[TOOL_CALLS]"))
		f = TC_FMT_MISTRAL;
	else if (has(s, n, "<|tool_call|>"))
		f = TC_FMT_GRANITE;
	else if (has(s, n, "functools"))
		f = TC_FMT_FIREFUNCTION;
	else if (has(s, n, "<|START_ACTION|>"))
		f = TC_FMT_COMMAND_R7B;
	else if (has(s, n, "Action:\\n```json"))
		f = TC_FMT_COMMAND_R_PLUS;
	else if (has(s, n, "<TOOLCALL>"))
		f = TC_FMT_NEMOTRON_V2;
	else if (has(s, n, "<tool_calls>"))
		f = TC_FMT_JSON_TAGS;
	else if (has(s, n, "<|tool_call_start|>"))
		f = TC_FMT_LFM2;
	else if (has(s, n, "<|tool_call:begin|>"))
		f = TC_FMT_SOLAR;
	else if (has(s, n, "<|tools_prefix|>"))
		f = TC_FMT_APERTUS;
	else if (has(s, n, "<|function_call|>"))
		f = TC_FMT_GIGACHAT;
	else if (has(s, n, "<|tool_call>call:"))
		f = TC_FMT_GEMMA4;
	else if (has(s, n, "<function name=\"") && has(s, n, "<param name=\""))
		f = TC_FMT_MINICPM;
	else if (has(s, n, ">>>all") || (has(s, n, "'>>>'") && has(s, n, "recipient")))
		f = TC_FMT_FUNCTIONARY_V32;
	else if (has(s, n, "<function=") && has(s, n, "<|python_tag|>"))
		f = TC_FMT_FUNCTIONARY_V31;
	else if (has(s, n, "<tool_call>"))
		f = TC_FMT_HERMES;
	else if (has(s, n, "<|start_header_id|>") &&
		 (has(s, n, "<|python_tag|>") || has(s, n, "\"parameters\": dictionary of argument name")))
		f = TC_FMT_LLAMA3;
	out->format = f;

	enum tc_reasoning r = TC_RSN_NONE;
	if (f == TC_FMT_HARMONY)
		r = TC_RSN_HARMONY;
	else if (has(s, n, "<seed:think>"))
		r = TC_RSN_SEED;
	else if (has(s, n, "<|START_THINKING|>"))
		r = TC_RSN_COHERE;
	else if (has(s, n, "[THINK]"))
		r = TC_RSN_MISTRAL;
	else if (has(s, n, "<think:opensource>") || (has(s, n, ":opensource") && has(s, n, "'<think{}>'.format")))
		r = TC_RSN_HY3;
	else if (has(s, n, "<|channel>thought"))
		r = TC_RSN_GEMMA4;
	else if (has(s, n, "open_tag('think'") || has(s, n, "open_tag(\"think\""))
		r = TC_RSN_KIMI_K3;
	else if (has(s, n, "Here are my reasoning steps"))
		r = TC_RSN_APRIEL;
	else if (has(s, n, "<mm:think>"))
		r = TC_RSN_MINIMAX_M3;
	else if (has(s, n, "<think>") || has(s, n, "</think>"))
		r = TC_RSN_THINK;
	out->reasoning = r;
	out->vars = tc_template_vars(s, n);
}

void tc_detect_tokens(const char *const *tokens, size_t n, struct tc_syntax *out)
{
	static const struct {
		const char *tok;
		enum tc_format f;
	} F[] = {
		{"<|channel|>", TC_FMT_HARMONY},
		{"<|tool_calls_section_begin|>", TC_FMT_KIMI_K2},
		{DS_CALLS_BEGIN, TC_FMT_DEEPSEEK},
		{"<minimax:tool_call>", TC_FMT_MINIMAX_M2},
		{"<seed:tool_call>", TC_FMT_SEED_XML},
		{"[ARGS]", TC_FMT_MISTRAL_V11}, /* before [TOOL_CALLS] */
		{"[TOOL_CALLS]", TC_FMT_MISTRAL},
		{"<|START_ACTION|>", TC_FMT_COMMAND_R7B},
		{"<TOOLCALL>", TC_FMT_NEMOTRON_V2},
		{"<|tool_call_start|>", TC_FMT_LFM2},
		{"<|tool_call:begin|>", TC_FMT_SOLAR},
		{"<|tools_prefix|>", TC_FMT_APERTUS},
		{"<|function_call|>", TC_FMT_GIGACHAT},
		{"<|tool_call>", TC_FMT_GEMMA4},
		{"<|tool_call|>", TC_FMT_GRANITE},
		{"<tool_call>", TC_FMT_HERMES},
		{"<|python_tag|>", TC_FMT_LLAMA3},
	};
	static const struct {
		const char *tok;
		enum tc_reasoning r;
	} R[] = {
		{"<seed:think>", TC_RSN_SEED},     {"<|START_THINKING|>", TC_RSN_COHERE},
		{"[THINK]", TC_RSN_MISTRAL},       {"<mm:think>", TC_RSN_MINIMAX_M3},
		{"<|channel>", TC_RSN_GEMMA4},     {"<think>", TC_RSN_THINK},
	};
	for (size_t k = 0; out->format == TC_FMT_NONE && k < sizeof F / sizeof F[0]; k++)
		for (size_t i = 0; i < n; i++)
			if (tokens[i] && !strcmp(tokens[i], F[k].tok)) {
				out->format = F[k].f;
				break;
			}
	if (out->format == TC_FMT_HARMONY && out->reasoning == TC_RSN_NONE)
		out->reasoning = TC_RSN_HARMONY;
	for (size_t k = 0; out->reasoning == TC_RSN_NONE && k < sizeof R / sizeof R[0]; k++)
		for (size_t i = 0; i < n; i++)
			if (tokens[i] && !strcmp(tokens[i], R[k].tok)) {
				out->reasoning = R[k].r;
				break;
			}
}

/* ---------------------------------------------------------------- parser */

static void add_trigger(struct tc_parser *p, const char *s, int kind, const struct sec *sec, bool start_only)
{
	if (!s || p->ntrig >= (int)(sizeof p->trig / sizeof p->trig[0]))
		return;
	p->trig[p->ntrig++] = (struct trigger){s, strlen(s), kind, sec, start_only};
}

static void emit_text(struct tc_parser *p, int type, const char *s, size_t n)
{
	if (!n)
		return;
	buf_add(type == TC_EV_CONTENT ? &p->content : &p->reasoning, s, n);
	if (type == TC_EV_CONTENT)
		p->at_start = false;
	if (p->emit) {
		struct tc_event ev = {.type = type, .text = s, .len = n};
		p->emit(p->ctx, &ev);
	}
}

static void strm_emit(struct tc_parser *p, int j, int index, const char *s, size_t n);
static void strm_final(struct tc_parser *p, int j, const char *args);

static void commit(struct tc_parser *p)
{
	bool mistral = p->syn.format == TC_FMT_MISTRAL || p->syn.format == TC_FMT_MISTRAL_V11;
	for (int i = 0; i < p->npend; i++) {
		struct pcall *c = &p->pend[i];
		if (i < p->st.n) { /* streamed: the rest of its canonical arguments */
			char *a = json_dumps(c->args, JSON_COMPACT);
			size_t done = p->st.calls[i].args.n;
			if (a && strlen(a) > done)
				strm_emit(p, i, p->ncalls, a + done, strlen(a) - done);
			strm_final(p, i, a ? a : "{}");
			free(a);
			continue;
		}
		int k = p->seen_calls++;
		if (!p->parallel && p->ncalls >= 1)
			continue;
		if (p->ncalls == p->capcalls) {
			int cap = p->capcalls ? 2 * p->capcalls : 4;
			struct tc_call *q = realloc(p->calls, (size_t)cap * sizeof *q);
			if (!q)
				continue;
			p->calls = q;
			p->capcalls = cap;
		}
		char id[80];
		if (mistral && c->id && strlen(c->id) == 9)
			snprintf(id, sizeof id, "%s", c->id);
		else if (mistral)
			make_id(p->seed, k, id, 9, "");
		else
			make_id(p->seed, k, id, 24, "call_");
		struct tc_call *t = &p->calls[p->ncalls];
		t->id = strdup(id);
		t->name = strdup(c->name);
		t->arguments = json_dumps(c->args, JSON_COMPACT);
		if (!t->id || !t->name || !t->arguments) {
			free(t->id);
			free(t->name);
			free(t->arguments);
			continue;
		}
		int index = p->ncalls++;
		p->at_start = false;
		if (p->emit) {
			struct tc_event ev = {.type = TC_EV_CALL_BEGIN, .index = index, .id = t->id, .name = t->name};
			p->emit(p->ctx, &ev);
			ev = (struct tc_event){.type = TC_EV_CALL_ARGS, .index = index, .text = t->arguments,
					       .len = strlen(t->arguments)};
			p->emit(p->ctx, &ev);
		}
	}
	pend_clear(p);
}

/* --------------------------------------------------- streaming arguments */

enum { SP_CALL, SP_ARGS, SP_AFTER };
#define STRM_DEPTH 256 /* below json_span's 512, so the stream stops first */

static void strm_clear(struct tc_parser *p)
{
	struct strm *t = &p->st;
	for (int i = 0; i < t->n; i++) {
		free(t->calls[i].name);
		free(t->calls[i].id);
		free(t->calls[i].args.p);
	}
	free(t->calls);
	json_decref(t->keys);
	memset(t, 0, sizeof *t);
}

static void strm_init(struct tc_parser *p)
{
	struct strm *t = &p->st;
	strm_clear(p);
	t->init = true;
	t->kind = p->sec->stream;
	t->off = t->kind == SS_NONE || p->choice == TC_CHOICE_NONE;
	t->cur = p->sec_body - ((p->sec->flags & F_KEEP) ? strlen(p->sec->start) : 0);
}

/* append to streamed call j's arguments and emit the piece */
static void strm_emit(struct tc_parser *p, int j, int index, const char *s, size_t n)
{
	struct scall *c = &p->st.calls[j];
	size_t o = c->args.n;
	if (!n || buf_add(&c->args, s, n))
		return;
	if (p->emit) {
		struct tc_event ev = {.type = TC_EV_CALL_ARGS, .index = index, .text = c->args.p + o, .len = n};
		p->emit(p->ctx, &ev);
	}
}

/* streamed call j becomes a call of the message, with arguments `args` */
static void strm_final(struct tc_parser *p, int j, const char *args)
{
	struct scall *c = &p->st.calls[j];
	p->seen_calls++;
	if (p->ncalls == p->capcalls) {
		int cap = p->capcalls ? 2 * p->capcalls : 4;
		struct tc_call *q = realloc(p->calls, (size_t)cap * sizeof *q);
		if (!q)
			return;
		p->calls = q;
		p->capcalls = cap;
	}
	struct tc_call *t = &p->calls[p->ncalls];
	t->id = c->id;
	t->name = c->name;
	t->arguments = strdup(args);
	c->id = c->name = NULL;
	if (!t->arguments) {
		free(t->id);
		free(t->name);
		return;
	}
	p->ncalls++;
}

/* header matching over b[*i, lim): S_OK and *i past it, S_NEED, S_FAIL */
static int h_wlit(const char *b, size_t lim, size_t *i, const char *lit)
{
	while (*i < lim && is_ws(b[*i]))
		(*i)++;
	size_t l = strlen(lit), avail = lim - *i;
	if (memcmp(b + *i, lit, avail < l ? avail : l))
		return S_FAIL;
	if (avail < l)
		return S_NEED;
	*i += l;
	return S_OK;
}

/* the text up to `lit` (within MAX_HEADER) as a trimmed name; *i past lit */
static int h_text(const char *b, size_t lim, size_t *i, const char *lit, char *out, size_t cap, bool raw);
static int h_until(const char *b, size_t lim, size_t *i, const char *lit, char *out, size_t cap)
{
	return h_text(b, lim, i, lit, out, cap, false);
}

/* the same, untrimmed when raw (a name or key with NUL bytes fails) */
static int h_text(const char *b, size_t lim, size_t *i, const char *lit, char *out, size_t cap, bool raw)
{
	size_t l = strlen(lit), end = lim - *i > MAX_HEADER + l ? *i + MAX_HEADER + l : lim;
	const char *q = find(b + *i, end - *i, lit);
	if (!q)
		return end < lim ? S_FAIL : S_NEED;
	const char *s = b + *i;
	size_t n = (size_t)(q - s);
	if (!raw)
		trim(&s, &n);
	if (n >= cap || memchr(s, 0, n))
		return S_FAIL;
	memcpy(out, s, n);
	out[n] = 0;
	*i = (size_t)(q - b) + l;
	return S_OK;
}

#define H(x)                                                                                                           \
	do {                                                                                                           \
		int rc_ = (x);                                                                                         \
		if (rc_ != S_OK)                                                                                       \
			return rc_;                                                                                    \
	} while (0)

/* a JSON string without escapes (a name or a key, at most MAX_NAME bytes)
 * into out */
static int h_jname(const char *b, size_t lim, size_t *i, char *out)
{
	H(h_wlit(b, lim, i, "\""));
	size_t a = *i;
	for (; *i < lim && b[*i] != '"'; (*i)++)
		if (b[*i] == '\\' || (unsigned char)b[*i] < 0x20 || *i - a >= MAX_NAME)
			return S_FAIL;
	if (*i == lim)
		return S_NEED;
	size_t nl = *i - a;
	(*i)++;
	json_t *v = json_loadb(b + a - 1, nl + 2, JSON_DECODE_ANY, NULL);
	bool ok = json_is_string(v);
	json_decref(v);
	if (!ok)
		return S_FAIL;
	memcpy(out, b + a, nl);
	out[nl] = 0;
	return S_OK;
}

/* {"name": "f", "arguments": {  (or "parameters", "args"; "tool_name"; a
 * "tool_call_id" first, as Command R7B writes) */
static int h_jcall(struct strm *t, const char *b, size_t lim, size_t *i)
{
	char key[MAX_NAME + 1];
	H(h_wlit(b, lim, i, "{"));
	H(h_jname(b, lim, i, key));
	if (!strcmp(key, "tool_call_id")) {
		H(h_wlit(b, lim, i, ":"));
		H(h_jname(b, lim, i, key));
		H(h_wlit(b, lim, i, ","));
		H(h_jname(b, lim, i, key));
	}
	if (strcmp(key, "name") && strcmp(key, "tool_name"))
		return S_FAIL;
	H(h_wlit(b, lim, i, ":"));
	H(h_jname(b, lim, i, t->name));
	H(h_wlit(b, lim, i, ","));
	H(h_jname(b, lim, i, key));
	if (strcmp(key, "arguments") && strcmp(key, "parameters") && strcmp(key, "args"))
		return S_FAIL;
	H(h_wlit(b, lim, i, ":"));
	return h_wlit(b, lim, i, "{");
}

/* gpt-oss: a header with to=functions.f up to <|message|>, then { */
static int h_harmony(struct strm *t, const char *b, size_t lim, size_t *i)
{
	char head[MAX_HEADER + 1];
	H(h_until(b, lim, i, "<|message|>", head, sizeof head));
	const char *to = strstr(head, "to=");
	if (!to)
		return S_FAIL;
	const char *name = to + 3;
	size_t nl = 0;
	while (name[nl] && !is_ws(name[nl]) && name[nl] != '<')
		nl++;
	if (starts(name, nl, "functions."))
		name += 10, nl -= 10;
	if (nl > MAX_NAME)
		return S_FAIL;
	memcpy(t->name, name, nl);
	t->name[nl] = 0;
	return h_wlit(b, lim, i, "{");
}

static bool json_list_kind(int kind)
{
	return kind == SS_JSON || kind == SS_JSON1 || kind == SS_JSON_OBJ || kind == SS_FENCED || kind == SS_APERTUS;
}

/* the next call's header from t->cur: up to and including the "{" that
 * opens its arguments */
static int strm_header(struct tc_parser *p, size_t lim, size_t *i)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	t->id[0] = 0;
	if (t->kind == SS_FENCED && !t->ncand)
		H(h_wlit(b, lim, i, "```json"));
	switch (t->kind) {
	case SS_JSON:
	case SS_JSON1:
	case SS_JSON_OBJ:
	case SS_FENCED:
	case SS_APERTUS:
		if (t->ncand == 0) {
			H(h_wlit(b, lim, i, "")); /* skip whitespace; text to come */
			if (*i == lim)
				return S_NEED;
			t->list = b[*i] == '[' && t->kind != SS_JSON_OBJ ? 1 : 2;
			if (t->list == 1)
				(*i)++;
		} else if (t->list == 1) {
			H(h_wlit(b, lim, i, ","));
		} else if (t->kind == SS_JSON1) {
			return S_FAIL; /* one object */
		}
		if (t->kind != SS_APERTUS)
			return h_jcall(t, b, lim, i);
		H(h_wlit(b, lim, i, "{")); /* {"f": {..}} */
		H(h_jname(b, lim, i, t->name));
		H(h_wlit(b, lim, i, ":"));
		return h_wlit(b, lim, i, "{");
	case SS_HARMONY:
		return t->ncand ? S_FAIL : h_harmony(t, b, lim, i);
	case SS_MV11: {
		if (t->ncand)
			return S_FAIL;
		char head[MAX_HEADER + 1];
		H(h_until(b, lim, i, "[ARGS]", head, sizeof head));
		char *c = strstr(head, "[CALL_ID]");
		if (c) {
			const char *id = c + 9;
			size_t idl = strlen(id);
			trim(&id, &idl);
			bool ok = idl > 0 && idl <= 64;
			for (size_t k = 0; k < idl; k++)
				ok = ok && (isalnum((unsigned char)id[k]) || id[k] == '_' || id[k] == '-');
			if (ok)
				snprintf(t->id, sizeof t->id, "%.*s", (int)idl, id);
			*c = 0;
		}
		const char *nm = head;
		size_t nl = strlen(head);
		trim(&nm, &nl);
		if (nl > MAX_NAME)
			return S_FAIL;
		memmove(t->name, nm, nl);
		t->name[nl] = 0;
		return h_wlit(b, lim, i, "{");
	}
	case SS_FV31:
		if (t->ncand)
			return S_FAIL;
		H(h_until(b, lim, i, ">", t->name, sizeof t->name));
		return h_wlit(b, lim, i, "{");
	case SS_FV32:
		if (t->ncand)
			return S_FAIL;
		H(h_until(b, lim, i, "\n", t->name, sizeof t->name));
		if (!strcmp(t->name, "all"))
			return S_FAIL;
		return h_wlit(b, lim, i, "{");
	case SS_DEEPSEEK: {
		if (t->ncand && t->fenced)
			H(h_wlit(b, lim, i, "```"));
		if (t->ncand)
			H(h_wlit(b, lim, i, DS_CALL_END));
		H(h_wlit(b, lim, i, DS_CALL_BEGIN));
		H(h_until(b, lim, i, DS_SEP, t->name, sizeof t->name));
		bool fenced = !strcmp(t->name, "function"); /* R1: function<sep>f\n```json\n{..}\n``` */
		if (fenced)
			H(h_until(b, lim, i, "```json", t->name, sizeof t->name));
		H(h_wlit(b, lim, i, "{"));
		t->fenced = fenced; /* only now: a retry reads the previous call's end again */
		return S_OK;
	}
	case SS_KIMI: {
		if (t->ncand)
			H(h_wlit(b, lim, i, "<|tool_call_end|>"));
		H(h_wlit(b, lim, i, "<|tool_call_begin|>"));
		char head[MAX_HEADER + 1];
		H(h_until(b, lim, i, "<|tool_call_argument_begin|>", head, sizeof head));
		const char *h = head;
		size_t hl = strlen(head);
		if (starts(h, hl, "functions."))
			h += 10, hl -= 10;
		const char *colon = hl ? memrchr(h, ':', hl) : NULL;
		if (colon)
			hl = (size_t)(colon - h);
		trim(&h, &hl);
		if (hl > MAX_NAME)
			return S_FAIL;
		memmove(t->name, h, hl);
		t->name[hl] = 0;
		return h_wlit(b, lim, i, "{");
	}
	case SS_SOLAR: {
		if (t->ncand)
			return S_FAIL;
		char id[MAX_HEADER + 1];
		H(h_until(b, lim, i, "<|tool_call:name|>", id, sizeof id));
		H(h_until(b, lim, i, "<|tool_call:args|>", t->name, sizeof t->name));
		return h_wlit(b, lim, i, "{");
	}
	}
	return S_FAIL;
}

/* may the call whose header was just read stream? (what add_call and
 * commit would accept; later calls under parallel_tool_calls = 0 do not) */
static bool strm_may(struct tc_parser *p)
{
	struct strm *t = &p->st;
	if (!valid_name(t->name, strlen(t->name)))
		return false;
	if (!p->parallel && (p->ncalls > 0 || t->ncand > 0))
		return false;
	if (p->syn.format == TC_FMT_LLAMA3 && json_array_size(p->tools) && !tool_known(p, t->name))
		return false;
	return true;
}

/* The call whose header was read last begins: CALL_BEGIN, with the index
 * and id the commit would give it. -1 when out of memory. */
static int strm_begin(struct tc_parser *p)
{
	struct strm *t = &p->st;
	if (t->n == t->cap) {
		int cap = t->cap ? 2 * t->cap : 4;
		struct scall *q = realloc(t->calls, (size_t)cap * sizeof *q);
		if (!q)
			return -1;
		t->calls = q;
		t->cap = cap;
	}
	struct scall *c = &t->calls[t->n];
	*c = (struct scall){0};
	char id[80];
	int k = p->seen_calls + t->n;
	bool mistral = p->syn.format == TC_FMT_MISTRAL || p->syn.format == TC_FMT_MISTRAL_V11;
	if (mistral && strlen(t->id) == 9)
		snprintf(id, sizeof id, "%s", t->id);
	else if (mistral)
		make_id(p->seed, k, id, 9, "");
	else
		make_id(p->seed, k, id, 24, "call_");
	c->id = strdup(id);
	c->name = strdup(t->name);
	if (!c->id || !c->name) {
		free(c->id);
		free(c->name);
		return -1;
	}
	t->n++;
	p->at_start = false;
	if (p->emit) {
		struct tc_event ev = {.type = TC_EV_CALL_BEGIN, .index = p->ncalls + t->n - 1, .id = c->id, .name = c->name};
		p->emit(p->ctx, &ev);
	}
	return 0;
}

/* The next call's header from t->cur by hdr: S_OK (its arguments start,
 * at bracket depth `depth`), S_NEED (wait), S_FAIL (streaming stops). */
static int strm_head(struct tc_parser *p, int (*hdr)(struct tc_parser *, size_t, size_t *), size_t lim, bool fin,
		     int depth)
{
	struct strm *t = &p->st;
	size_t i = t->cur;
	int rc = hdr(p, lim, &i);
	if (rc == S_NEED && (fin || lim - t->cur > MAX_HEADER))
		rc = S_FAIL;
	if (rc == S_NEED)
		return S_NEED;
	if (rc == S_FAIL || i - t->cur > MAX_HEADER || !strm_may(p)) {
		t->off = true;
		return S_FAIL;
	}
	t->ncand++;
	t->cur = t->mstart = i;
	t->phase = SP_ARGS;
	t->depth = depth;
	t->nmem = 0;
	t->str = t->esc = false;
	json_decref(t->keys);
	t->keys = json_object();
	return S_OK;
}

/* A piece of the current call's arguments (the call begins with its first). */
static int strm_piece(struct tc_parser *p, const char *s, size_t n)
{
	struct strm *t = &p->st;
	if (t->n < t->ncand && strm_begin(p))
		return -1;
	strm_emit(p, t->n - 1, p->ncalls + t->n - 1, s, n);
	return 0;
}

/* A member of the current call's arguments: key (NUL-terminated, klen
 * bytes) and val (NULL with no key: the object closes empty), `last` when
 * the object closes after it. Emits "{" or "," + "key":value (+ "}") as
 * jansson's compact dump writes them (the call begins with the first).
 * -1: not a member that can go out (a duplicate key, a NUL in the key). */
static int strm_put(struct tc_parser *p, const char *key, size_t klen, const json_t *val, bool last)
{
	struct strm *t = &p->st;
	struct buf piece = {0};
	char *kd = NULL, *vd = NULL;
	int rc = -1;
	if (!key) {
		if (!last || t->nmem)
			return -1;
		buf_add(&piece, "{}", 2);
	} else {
		json_t *k = json_stringn(key, klen);
		kd = k ? json_dumps(k, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(k);
		vd = val ? json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		if (!kd || !vd || strlen(key) != klen || json_object_get(t->keys, key) ||
		    json_object_set(t->keys, key, json_null()))
			goto out;
		buf_add(&piece, t->nmem ? "," : "{", 1);
		buf_add(&piece, kd, strlen(kd));
		buf_add(&piece, ":", 1);
		buf_add(&piece, vd, strlen(vd));
		if (last)
			buf_add(&piece, "}", 1);
	}
	if (!piece.p || strm_piece(p, piece.p, piece.n))
		goto out;
	t->calls[t->n - 1].closed = last;
	t->nmem++;
	rc = 0;
out:
	free(kd);
	free(vd);
	free(piece.p);
	return rc;
}

/* A top-level member of the arguments is complete: s[0, n) ("key": value),
 * `last` when the object closes after it. -1: not a valid member. */
static int strm_member(struct tc_parser *p, const char *s, size_t n, bool last)
{
	trim(&s, &n);
	if (!n)
		return strm_put(p, NULL, 0, NULL, last);
	if (s[0] != '"')
		return -1;
	size_t k = 1;
	while (k < n && s[k] != '"')
		k += s[k] == '\\' ? 2 : 1;
	if (k >= n)
		return -1;
	json_t *key = json_loadb(s, k + 1, JSON_DECODE_ANY, NULL), *val = NULL;
	size_t r = k + 1;
	while (r < n && is_ws(s[r]))
		r++;
	int rc = -1;
	if (json_is_string(key) && r < n && s[r] == ':') {
		val = json_loadb(s + r + 1, n - r - 1, JSON_DECODE_ANY, NULL);
		if (val)
			rc = strm_put(p, json_string_value(key), json_string_length(key), val, last);
	}
	json_decref(key);
	json_decref(val);
	return rc;
}

/* ---- Python calls (LFM2's [f(k='v'), ..], Llama's <|python_tag|>f.call(..))
 * and Gemma 4's call:f{k:<|"|>v<|"|>,..}: member by member. A member is
 * complete at a ',' or the closing bracket outside strings and brackets;
 * it is parsed with the payload parser's own value reader (py_value,
 * gemma_value), which must take all of it, and goes out as JSON. */

static bool ms_gemma(const struct strm *t)
{
	return t->kind == SS_GEMMA;
}

/* the next call's header: up to and including the "(" or "{" */
static int ms_header(struct tc_parser *p, size_t lim, size_t *i)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	if (ms_gemma(t)) {
		if (t->ncand)
			return S_FAIL;
		H(h_wlit(b, lim, i, "call:"));
		H(h_text(b, lim, i, "{", t->name, sizeof t->name, true));
		size_t j = *i;
		int rc = h_wlit(b, lim, &j, "{"); /* call:f{{..}}: JSON text, comes whole */
		return rc == S_FAIL ? S_OK : rc == S_OK ? S_FAIL : S_NEED;
	}
	if (!t->ncand) {
		H(h_wlit(b, lim, i, ""));
		if (*i == lim)
			return S_NEED;
		t->list = b[*i] == '[';
		*i += t->list;
	} else if (t->list) {
		H(h_wlit(b, lim, i, ","));
	} else {
		return S_FAIL;
	}
	H(h_wlit(b, lim, i, ""));
	size_t a = *i;
	while (*i < lim && *i - a <= MAX_NAME + 5 && (isalnum((unsigned char)b[*i]) || strchr("_.-", b[*i])))
		(*i)++;
	if (*i == lim)
		return S_NEED;
	size_t nl = *i - a;
	if (nl > 5 && !memcmp(b + *i - 5, ".call", 5))
		nl -= 5;
	if (!nl || nl > MAX_NAME)
		return S_FAIL;
	memcpy(t->name, b + a, nl);
	t->name[nl] = 0;
	return h_wlit(b, lim, i, "(");
}

/* a complete member s[0, n): key=value (Python) or key:value (Gemma) */
static int ms_member(struct tc_parser *p, const char *s, size_t n, bool last)
{
	struct strm *t = &p->st;
	trim(&s, &n);
	if (!n)
		return strm_put(p, NULL, 0, NULL, last);
	size_t k = 0;
	if (ms_gemma(t))
		while (k < n && s[k] != ':' && s[k] != '}')
			k++;
	else
		while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '_'))
			k++;
	char key[MAX_NAME + 1];
	if (!k || k > MAX_NAME)
		return -1;
	memcpy(key, s, k);
	key[k] = 0;
	struct py y = {s, n, k, 0};
	if (!py_lit(&y, ms_gemma(t) ? ":" : "="))
		return -1;
	json_t *v = ms_gemma(t) ? gemma_value(&y) : py_value(&y);
	int rc = v && rest_is_ws(s, n, y.i) ? strm_put(p, key, k, v, last) : -1;
	json_decref(v);
	return rc;
}

/* Stream the members b[t->cur, lim) completes. */
static void ms_run(struct tc_parser *p, size_t lim, bool fin)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	bool gemma = ms_gemma(t);
	size_t gl = strlen(GQ);
	while (!t->off && lim >= t->cur) {
		size_t i = t->cur;
		if (t->phase == SP_CALL) {
			if (strm_head(p, ms_header, lim, fin, 0) != S_OK)
				return;
			continue;
		}
		bool end = false;
		for (; i < lim && !t->off && !end; i++) {
			char c = b[i];
			size_t q = lim - i < gl ? lim - i : gl;
			if (gemma && c == '<' && !memcmp(b + i, GQ, q)) {
				if (q < gl)
					break; /* maybe a quote: more text */
				t->str = !t->str;
				i += gl - 1;
			} else if (t->str) {
				if (t->esc)
					t->esc = false;
				else if (c == '\\' && !gemma)
					t->esc = true;
				else if (c == t->quote && !gemma)
					t->str = false;
			} else if (!gemma && (c == '\'' || c == '"')) {
				t->str = true;
				t->quote = c;
			} else if (c == '(' || c == '[' || c == '{') {
				t->off = ++t->depth > STRM_DEPTH;
			} else if ((c == ')' || c == ']' || c == '}') && t->depth) {
				t->depth--;
			} else if (c == ',' || c == (gemma ? '}' : ')')) {
				end = c != ',';
				t->off = ms_member(p, b + t->mstart, i - t->mstart, end) != 0;
				t->mstart = i + 1;
			} else if (c == ')' || c == ']' || c == '}') {
				t->off = true;
			}
		}
		t->cur = i;
		if (end)
			t->phase = SP_CALL; /* the next call of a list, if any */
		else if (!t->off && fin)
			t->off = true;
		if (!end)
			return;
	}
}

/* ---- tagged parameters (Qwen3-Coder XML, GLM, MiniMax, DSML, ...): the
 * call begins with its first parameter's first piece: `{"key":` and a
 * string's text as it arrives (JSON-escaped, whole UTF-8 characters, none
 * of what may still be a closing tag or a newline the parser strips), or
 * a value typed JSON (a number, an object, a schema that is not "string")
 * whole at its closing tag; "}" at the call's end. Every byte emitted is
 * decided by the bytes before it, so the split of the text changes the
 * pieces, never their concatenation. */

enum { SP_PARAM = SP_AFTER + 1, SP_VALUE };

#define XF_STRIP_NL 1 /* one newline after a value's opener and before its closer go (Qwen) */
#define XF_TRIM 2     /* the name and keys are trimmed (GLM) */
#define XF_ONE 4      /* one call in a section */
#define XF_EATEN 8    /* name_end is the first key's opener (GLM) */
#define XF_ATTRS 16   /* string="true|false" attributes and CDATA values (invoke_list) */
#define XF_KTYPE 32   /* type="string": a string, else JSON (Kimi K3) */
#define XF_KEYTAG 64  /* the value ends at val_end + key + ">" (MiniMax-M3's <k>v</k>), and
		       * val_end alone (the ]<]minimax[>[ token) may not occur inside a value */

/* the literals of a syntax, as its payload parser reads them: `expect`
 * ones may follow whitespace, `until` ones end the text before them */
struct xsyn {
	const char *call;       /* expect: opens a call ("" none) */
	const char *name_end;   /* until: ends the name */
	const char *name_gt;    /* expect: then (or NULL) */
	const char *name_attrs; /* until: then attributes up to it (or NULL) */
	const char *sep;        /* a separator that may end the name before name_end (Hy3) */
	const char *not_after;  /* the call is not streamed when this follows (Kimi K3's JSON form) */
	const char *key;        /* expect: opens a parameter */
	const char *key_end;    /* until: ends its key */
	const char *attrs_end;  /* until: then attributes up to it (or NULL) */
	const char *val;        /* expect: then opens the value (or NULL) */
	const char *val_end;    /* until: ends the value */
	const char *call_end;   /* expect: ends the call (NULL: the section's end does) */
	int flags;
};

#define DSML_TAG(t) "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c" t
static const struct xsyn XS[] = {
	[SS_XML_QWEN - SS_XML] = {"<function=", ">", NULL, NULL, NULL, NULL, "<parameter=", ">", NULL, NULL,
				  "</parameter>", "</function>", XF_STRIP_NL},
	[SS_XML_QWEN_FN - SS_XML] = {"", ">", NULL, NULL, NULL, NULL, "<parameter=", ">", NULL, NULL, "</parameter>", NULL,
				     XF_STRIP_NL | XF_ONE},
	[SS_XML_GLM - SS_XML] = {"", "<arg_key>", NULL, NULL, "<tool_sep>", NULL, "<arg_key>", "</arg_key>", NULL,
				 "<arg_value>", "</arg_value>", NULL, XF_TRIM | XF_ONE | XF_EATEN},
	[SS_XML_HY3 - SS_XML] = {"", "<arg_key:opensource>", NULL, NULL, "<tool_sep:opensource>", NULL,
				 "<arg_key:opensource>", "</arg_key:opensource>", NULL, "<arg_value:opensource>",
				 "</arg_value:opensource>", NULL, XF_TRIM | XF_ONE | XF_EATEN},
	[SS_XML_MINIMAX - SS_XML] = {"<invoke name=\"", "\"", ">", NULL, NULL, NULL, "<parameter name=\"", "\"", ">", NULL,
				     "</parameter>", "</invoke>", XF_ATTRS},
	[SS_XML_DSML - SS_XML] = {"<" DSML_TAG("invoke name=\""), "\"", ">", NULL, NULL, NULL,
				  "<" DSML_TAG("parameter name=\""), "\"", ">", NULL, "</" DSML_TAG("parameter>"),
				  "</" DSML_TAG("invoke>"), XF_ATTRS},
	[SS_XML_MINICPM - SS_XML] = {"<function name=\"", "\"", ">", NULL, NULL, NULL, "<param name=\"", "\"", ">", NULL,
				     "</param>", NULL, XF_ATTRS | XF_ONE},
	[SS_XML_KIMI3 - SS_XML] = {"<|open|>call tool=\"", "\"", NULL, "<|sep|>", NULL, "<|open|>json",
				   "<|open|>argument key=\"", "\"", "<|sep|>", NULL, "<|close|>argument<|sep|>", NULL,
				   XF_KTYPE | XF_ONE},
	[SS_XML_MM3 - SS_XML] = {MM3 "<invoke name=\"", "\"", ">", NULL, NULL, NULL, MM3 "<", ">", NULL, NULL, MM3 "</",
				 MM3 "</invoke>", XF_KEYTAG},
};

/* bytes at the end of b[from, lim) that may be the start of marker m */
static size_t tail_prefix(const char *b, size_t from, size_t lim, const char *m)
{
	for (size_t k = strlen(m) - 1; k > 0; k--)
		if (lim - from >= k && !memcmp(b + lim - k, m, k))
			return k;
	return 0;
}

/* How many bytes of s[0, n) are whole UTF-8 characters that jansson
 * accepts; *bad when an invalid sequence follows them (an unfinished one
 * at the end is neither). */
static size_t utf8_prefix(const unsigned char *s, size_t n, bool *bad)
{
	size_t i = 0;
	*bad = false;
	while (i < n) {
		unsigned c = s[i];
		size_t l = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		uint32_t v = l == 1 ? c : c & (0x7Fu >> l);
		size_t k = 1;
		for (; k < l && i + k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				break;
			v = v << 6 | (s[i + k] & 0x3F);
		}
		if (l && k < l && i + k == n)
			return i; /* unfinished */
		if (!l || k < l || (l == 3 && v < 0x800) || (l == 4 && v < 0x10000) || v > 0x10FFFF ||
		    (v >= 0xD800 && v <= 0xDFFF)) {
			*bad = true;
			return i;
		}
		i += l;
	}
	return i;
}

/* the call's header: its name (and attributes) */
static int xs_header(struct tc_parser *p, const struct xsyn *x, size_t lim, size_t *i)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	char attrs[MAX_HEADER + 1];
	if (t->ncand && (x->flags & XF_ONE))
		return S_FAIL;
	if (*x->call)
		H(h_wlit(b, lim, i, x->call));
	H(h_text(b, lim, i, x->name_end, t->name, sizeof t->name, !(x->flags & XF_TRIM)));
	char *sep = x->sep ? strstr(t->name, x->sep) : NULL;
	if (sep) { /* name<tool_sep>ws<arg_key> */
		if (!rest_is_ws(sep, strlen(sep), strlen(x->sep)))
			return S_FAIL;
		*sep = 0;
		const char *nm = t->name;
		size_t nl = strlen(nm);
		trim(&nm, &nl);
		memmove(t->name, nm, nl);
		t->name[nl] = 0;
	}
	if (x->name_gt)
		H(h_wlit(b, lim, i, x->name_gt));
	if (x->name_attrs)
		H(h_text(b, lim, i, x->name_attrs, attrs, sizeof attrs, true));
	if (x->not_after) {
		size_t j = *i;
		int rc = h_wlit(b, lim, &j, x->not_after);
		if (rc != S_FAIL)
			return rc == S_OK ? S_FAIL : S_NEED;
	}
	if (!strm_may(p))
		return S_FAIL;
	t->ncand++;
	t->nmem = 0;
	t->eaten = x->flags & XF_EATEN;
	json_decref(t->keys);
	t->keys = json_object();
	t->phase = SP_PARAM;
	return S_OK;
}

/* the call's end: "}" (or "{}" when it had no parameters: it begins) */
static int xs_close(struct tc_parser *p)
{
	struct strm *t = &p->st;
	bool begun = t->n == t->ncand;
	if (strm_piece(p, begun ? "}" : "{}", begun ? 1 : 2))
		return -1;
	t->calls[t->n - 1].closed = true;
	t->phase = SP_CALL;
	return 0;
}

/* the next parameter's key (and attributes), or the call's end */
static int xs_param(struct tc_parser *p, const struct xsyn *x, size_t lim, size_t *i)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	char attrs[MAX_HEADER + 1];
	if (!t->eaten) {
		size_t j = *i;
		int rc = x->call_end ? h_wlit(b, lim, &j, x->call_end) : S_FAIL;
		if (rc == S_OK) {
			*i = j;
			return xs_close(p) ? S_FAIL : S_OK;
		}
		if (rc == S_NEED)
			return S_NEED;
		H(h_wlit(b, lim, i, x->key));
	}
	H(h_text(b, lim, i, x->key_end, t->key, sizeof t->key, !(x->flags & XF_TRIM)));
	t->force = 0;
	if (x->attrs_end) {
		H(h_text(b, lim, i, x->attrs_end, attrs, sizeof attrs, true));
		if (x->flags & XF_ATTRS)
			t->force = attr_force(attrs, strlen(attrs));
		else
			t->force = strstr(attrs, "type=\"string\"") ? 1 : -1;
	}
	if (x->val)
		H(h_wlit(b, lim, i, x->val));
	if (!*t->key || json_object_get(t->keys, t->key) || json_object_set(t->keys, t->key, json_null()))
		return S_FAIL; /* no key, or twice: the last value would win */
	if ((x->flags & XF_KEYTAG) && !valid_name(t->key, strlen(t->key)))
		return S_FAIL;
	snprintf(t->vend, sizeof t->vend, "%s%s", x->val_end, (x->flags & XF_KEYTAG) ? t->key : "");
	if (x->flags & XF_KEYTAG)
		strcat(t->vend, ">");
	t->eaten = false;
	t->phase = SP_VALUE;
	t->vmode = 0;
	t->vpre = false;
	t->vstart = t->vemit = t->vscan = *i;
	return S_OK;
}

/* A piece of the current value: `,"key":` first (with `"` for a string),
 * then s[0, n) (escaped inside a string, as is for a JSON value), then
 * `"` when close. */
static int xs_emit(struct tc_parser *p, const char *s, size_t n, bool str, bool close)
{
	struct strm *t = &p->st;
	if (!n && !close)
		return 0;
	struct buf piece = {0};
	int rc = -1;
	if (!t->vpre) {
		json_t *k = json_string(t->key);
		char *kd = k ? json_dumps(k, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(k);
		if (!kd)
			return -1;
		buf_add(&piece, t->nmem ? "," : "{", 1);
		buf_add(&piece, kd, strlen(kd));
		buf_add(&piece, str ? ":\"" : ":", str ? 2 : 1);
		free(kd);
	}
	if (str && n) {
		json_t *v = json_stringn(s, n);
		char *d = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
		json_decref(v);
		if (!d)
			goto out;
		buf_add(&piece, d + 1, strlen(d) - 2);
		free(d);
	} else {
		buf_add(&piece, s, n);
	}
	if (str && close)
		buf_add(&piece, "\"", 1);
	if (!piece.p || strm_piece(p, piece.p, piece.n))
		goto out;
	t->vpre = true;
	t->calls[t->n - 1].instr = str && !close;
	rc = 0;
out:
	free(piece.p);
	return rc;
}

/* the value: a string streams as it comes, other values at their end */
static int xs_value(struct tc_parser *p, const struct xsyn *x, size_t lim, size_t *i)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	const char *ve = t->vend;
	const char *q = find(b + t->vscan, lim - t->vscan, ve);
	size_t end = q ? (size_t)(q - b) : lim, el = strlen(ve);
	/* the call ends inside the value: it will not parse; a string goes
	 * out up to there (what a stream of any split has sent by then).
	 * MiniMax-M3: its token inside a value is not what the parse reads */
	const char *cut = (x->flags & XF_KEYTAG) ? MM3 : x->call_end;
	const char *c = cut ? find(b + t->vscan, end - t->vscan, cut) : NULL;
	if (c && !q && (x->flags & XF_KEYTAG)) { /* the token may still begin the closing tag */
		size_t av = (size_t)(b + lim - c);
		if (!memcmp(c, ve, av < el ? av : el))
			c = NULL;
	}
	if (c) {
		end = (size_t)(c - b);
		q = NULL;
	}
	if (!q) {
		size_t ml = el, cl = x->call_end ? strlen(x->call_end) : 0;
		ml = (cl > ml ? cl : ml) - 1;
		t->vscan = lim - t->vstart > ml ? lim - ml : t->vstart;
	}
	if (!t->vmode) {
		if (end == t->vstart && !q)
			return c ? S_FAIL : S_NEED;
		const char *ty = param_type(p, t->name, strlen(t->name), t->key, strlen(t->key));
		bool str = t->force > 0 || (!t->force && ty && !strcmp(ty, "string"));
		if ((x->flags & XF_ATTRS) && end > t->vstart && b[t->vstart] == '<')
			str = false; /* maybe CDATA: decided at the end */
		t->vmode = str ? 1 : 2;
		if ((x->flags & XF_STRIP_NL) && end > t->vstart && b[t->vstart] == '\n')
			t->vemit++;
	}
	if (t->vmode == 1) {
		size_t safe = end;
		if (!q && !c) {
			size_t h = tail_prefix(b, t->vemit, lim, ve);
			size_t h2 = x->call_end ? tail_prefix(b, t->vemit, lim, x->call_end) : 0;
			safe = lim - (h > h2 ? h : h2);
		}
		if ((x->flags & XF_STRIP_NL) && safe > t->vemit && b[safe - 1] == '\n')
			safe--;
		bool bad;
		size_t ok = utf8_prefix((const unsigned char *)b + t->vemit, safe - t->vemit, &bad);
		bool close = q && !bad && ok == safe - t->vemit;
		if (xs_emit(p, b + t->vemit, ok, true, close))
			return S_FAIL;
		t->vemit += ok;
		if (bad || c || (q && !close))
			return S_FAIL; /* not UTF-8 (or cut): the parse will fail */
		if (!q)
			return S_NEED;
	} else {
		if (!q)
			return c ? S_FAIL : S_NEED;
		const char *v = b + t->vstart;
		size_t vl = end - t->vstart;
		int force = t->force;
		if (x->flags & XF_STRIP_NL)
			strip_nl(&v, &vl);
		if (x->flags & XF_ATTRS)
			cdata(&v, &vl, &force);
		json_t *j = typed_value(p, t->name, strlen(t->name), t->key, strlen(t->key), v, vl, force);
		char *d = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(j);
		int rc = d ? xs_emit(p, d, strlen(d), false, true) : -1;
		free(d);
		if (rc)
			return S_FAIL;
	}
	t->nmem++;
	t->phase = SP_PARAM;
	*i = end + el;
	return S_OK;
}

/* Stream the tagged parameters b[t->cur, lim) decide. */
static void xs_run(struct tc_parser *p, size_t lim, bool fin)
{
	struct strm *t = &p->st;
	const struct xsyn *x = &XS[t->kind - SS_XML];
	while (!t->off && lim >= t->cur) {
		size_t i = t->cur;
		int rc = t->phase == SP_VALUE ? xs_value(p, x, lim, &i)
			 : t->phase == SP_PARAM ? xs_param(p, x, lim, &i)
						: xs_header(p, x, lim, &i);
		if (rc == S_NEED && (fin || (t->phase != SP_VALUE && lim - t->cur > MAX_HEADER)))
			rc = S_FAIL;
		if (rc == S_NEED)
			return;
		if (rc == S_FAIL) {
			t->off = true;
			return;
		}
		t->cur = i;
	}
}

/* functionary's <|python_tag|>code: a call of "python" whose {"code": ..}
 * streams as the code comes, as a tagged string value does (whole UTF-8
 * characters, JSON-escaped), trimmed as pl_python_code trims it: the call
 * begins at the first byte that is not whitespace, and trailing
 * whitespace waits for what follows it ("\"}" comes with the commit). */
static void code_run(struct tc_parser *p, size_t lim, bool fin)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	if (t->off || lim < t->cur)
		return;
	if (!t->ncand) {
		while (t->cur < lim && is_ws(b[t->cur]))
			t->cur++;
		if (t->cur == lim)
			return;
		snprintf(t->name, sizeof t->name, "python");
		snprintf(t->key, sizeof t->key, "code");
		if (!strm_may(p)) {
			t->off = true;
			return;
		}
		t->ncand = 1;
		t->nmem = 0;
		t->vpre = false;
	}
	size_t safe = lim;
	while (safe > t->cur && is_ws(b[safe - 1]))
		safe--;
	bool bad;
	size_t ok = utf8_prefix((const unsigned char *)b + t->cur, safe - t->cur, &bad);
	if (xs_emit(p, b + t->cur, ok, true, false) || bad || (fin && t->cur + ok < safe))
		t->off = true; /* not UTF-8: the parse fails */
	t->cur += ok;
}

/* Stream what b[t->cur, lim) decides; fin: nothing more will come before lim. */
static void strm_run(struct tc_parser *p, size_t lim, bool fin)
{
	struct strm *t = &p->st;
	const char *b = p->in.p;
	if (t->kind == SS_JSON_OBJ && !t->ncand) { /* Llama's <|python_tag|>: JSON or f.call(..) */
		size_t i = t->cur;
		while (i < lim && is_ws(b[i]))
			i++;
		if (i < lim && b[i] != '{')
			t->kind = SS_PY;
	}
	if (t->kind == SS_CODE)
		code_run(p, lim, fin);
	else if (t->kind >= SS_XML)
		xs_run(p, lim, fin);
	else if (t->kind == SS_PY || t->kind == SS_GEMMA)
		ms_run(p, lim, fin);
	if (t->kind >= SS_PY)
		return;
	while (!t->off && lim >= t->cur) {
		size_t i = t->cur;
		if (t->phase == SP_CALL) {
			if (strm_head(p, strm_header, lim, fin, 1) != S_OK)
				return;
			continue;
		}
		bool args = t->phase == SP_ARGS;
		if (!args && !json_list_kind(t->kind)) {
			/* headed calls: the next header says the rest */
			if (t->kind == SS_DEEPSEEK || t->kind == SS_KIMI)
				t->phase = SP_CALL;
			else
				t->off = true;
			continue;
		}
		/* the arguments' members, or (SP_AFTER) the rest of the call's object */
		for (; i < lim; i++) {
			char c = b[i];
			if (t->str) {
				if (t->esc)
					t->esc = false;
				else if (c == '\\')
					t->esc = true;
				else if (c == '"')
					t->str = false;
				continue;
			}
			if (c == '"') {
				t->str = true;
			} else if (c == '{' || c == '[') {
				if (++t->depth > STRM_DEPTH)
					break;
			} else if ((c == '}' || c == ']') && t->depth > 1) {
				t->depth--;
			} else if (c == ']') {
				break;
			} else if (c == '}' && !args) {
				t->phase = SP_CALL;
				i++;
				break;
			} else if (args && (c == '}' || (c == ',' && t->depth == 1))) {
				if (strm_member(p, b + t->mstart, i - t->mstart, c == '}'))
					break;
				t->mstart = i + 1;
				if (c == '}') {
					t->phase = SP_AFTER;
					t->depth = 1;
					i++;
					break;
				}
			}
		}
		if (i < lim && t->phase == (args ? SP_ARGS : SP_AFTER)) { /* stopped on a bad byte */
			t->off = true;
			return;
		}
		t->cur = i;
		if (t->phase == (args ? SP_ARGS : SP_AFTER))
			return; /* needs more text */
	}
}

/* Does the section's parse agree with what streamed (names, and the
 * canonical arguments start with the text emitted)? */
static bool strm_agrees(struct tc_parser *p)
{
	struct strm *t = &p->st;
	if (p->npend < t->n)
		return false;
	for (int j = 0; j < t->n; j++) {
		struct scall *c = &t->calls[j];
		char *a = json_dumps(p->pend[j].args, JSON_COMPACT);
		bool ok = a && !strcmp(p->pend[j].name, c->name) && !strncmp(a, c->args.p, c->args.n) &&
			  (!c->closed || strlen(a) == c->args.n);
		free(a);
		if (!ok)
			return false;
	}
	return true;
}

/* A section whose calls began streaming did not parse (or disagrees): the
 * begun calls are kept, their arguments closed as far as they streamed. */
static void strm_break(struct tc_parser *p)
{
	struct strm *t = &p->st;
	for (int j = 0; j < t->n; j++) {
		if (!t->calls[j].closed)
			strm_emit(p, j, p->ncalls, t->calls[j].instr ? "\"}" : "}", t->calls[j].instr ? 2 : 1);
		strm_final(p, j, t->calls[j].args.p ? t->calls[j].args.p : "{}");
	}
	pend_clear(p);
}

/* The earliest trigger at or after `from`: *at, *t (NULL when none), or
 * *partial when the text ends inside what may be one (then *at is there). */
static void scan(const struct tc_parser *p, size_t from, size_t *at, const struct trigger **t, bool *partial)
{
	const char *b = p->in.p;
	size_t n = p->in.n;
	*t = NULL;
	*partial = false;
	for (size_t i = from < p->fence ? p->fence : from; i < n; i++) {
		const struct trigger *best = NULL;
		for (int k = 0; k < p->ntrig; k++) {
			const struct trigger *g = &p->trig[k];
			/* openers and start-only triggers: only where nothing but
			 * (skipped) whitespace came before, whatever the split */
			if ((g->start_only || g->kind == TK_REASON) && !(p->at_start && i == from))
				continue;
			if (g->kind == TK_REASON && p->had_reasoning)
				continue;
			size_t avail = n - i;
			if (avail < g->len) {
				if (!memcmp(b + i, g->s, avail)) {
					*at = i;
					*partial = true;
					return;
				}
			} else if (!memcmp(b + i, g->s, g->len) && (!best || g->len > best->len)) {
				best = g;
			}
		}
		if (best) {
			*at = i;
			*t = best;
			return;
		}
	}
	*at = n;
}

static void run(struct tc_parser *p, bool eof)
{
	for (;;) {
		const char *b = p->in.p;
		size_t n = p->in.n;
		if (p->mode != M_SECTION && p->skip_ws) {
			while (p->pos < n && is_ws(b[p->pos]))
				p->pos++;
			if (p->pos == n)
				return;
			p->skip_ws = false;
		}
		if (p->mode == M_CONTENT) {
			size_t at;
			const struct trigger *t;
			bool partial;
			scan(p, p->pos, &at, &t, &partial);
			size_t e = at;
			if (!(eof && !t))
				while (e > p->pos && is_ws(b[e - 1]))
					e--;
			if (!t) {
				if (eof)
					e = n;
				emit_text(p, TC_EV_CONTENT, b + p->pos, e - p->pos);
				p->pos = e;
				return;
			}
			if (t->kind == TK_SECTION) {
				emit_text(p, TC_EV_CONTENT, b + p->pos, e - p->pos);
				p->mode = M_SECTION;
				p->sec = t->sec;
				p->sec_ws = e;
				p->sec_body = at + t->len;
				p->sec_scan = 0;
				p->js.valid = false;
				p->pos = p->sec_body;
				continue;
			}
			/* a skip marker or a reasoning opener: whitespace before goes */
			emit_text(p, TC_EV_CONTENT, b + p->pos, e - p->pos);
			p->pos = at + t->len;
			p->skip_ws = true;
			if (t->kind == TK_REASON) {
				p->mode = M_REASONING;
				p->close = RSN[p->syn.reasoning].close;
			}
			continue;
		}
		if (p->mode == M_REASONING) {
			const char *c = find(b + p->pos, n - p->pos, p->close);
			size_t cl = strlen(p->close), at = c ? (size_t)(c - b) : n;
			if (!c && !eof) /* hold a possible start of the closer */
				for (size_t k = cl - 1; k > 0; k--)
					if (n - p->pos >= k && !memcmp(b + n - k, p->close, k)) {
						at = n - k;
						break;
					}
			size_t e = at;
			while (e > p->pos && is_ws(b[e - 1]))
				e--;
			emit_text(p, TC_EV_REASONING, b + p->pos, e - p->pos);
			if (!c) {
				p->pos = eof ? n : e;
				return;
			}
			p->pos = at + cl;
			p->mode = M_CONTENT;
			p->had_reasoning = true;
			p->skip_ws = true;
			continue;
		}
		/* M_SECTION: only the first max_section bytes of the body count,
		 * so a marker mentioned in prose does not hold the rest of the
		 * output back for ever, and the decision stays split-independent */
		const struct sec *s = p->sec;
		size_t body = p->sec_body, avail = n - body;
		bool capped = avail >= p->max_section, fin = eof || capped;
		if (capped)
			avail = p->max_section;
		struct secres r = {0, M_CONTENT, NULL};
		int rc;
		size_t drop, mark = 0; /* where a section that broke after calls began
					  * streaming ends; the length of its end marker there */
		if (!p->st.init)
			strm_init(p);
		if (s->end) {
			/* resume the search where the last push left it */
			size_t el = strlen(s->end), from0 = p->sec_scan > body ? p->sec_scan : body;
			const char *q = find(b + from0, body + avail - from0, s->end);
			size_t lim = q ? (size_t)(q - b) : body + avail;
			if (!q && !fin) /* not what may be the start of the end marker */
				for (size_t k = el - 1; k > 0; k--)
					if (n - body >= k && !memcmp(b + n - k, s->end, k)) {
						lim = n - k;
						break;
					}
			strm_run(p, lim, q || fin);
			drop = q ? (size_t)(q - b) : body + avail;
			mark = q ? el : 0;
			if (!q && !fin) {
				p->sec_scan = n >= el ? n - el + 1 : 0;
				return;
			}
			size_t bl = q ? (size_t)(q - (b + body)) : n - body;
			if (!q && (!(s->flags & F_EOF_END) || !eof || capped)) {
				rc = S_FAIL;
			} else {
				size_t from = body, len = bl;
				if (s->flags & F_KEEP) {
					size_t sl = strlen(s->start);
					from = body - sl;
					len = bl + sl + (q ? el : 0);
				}
				rc = s->payload(p, b + from, len) == 0 ? S_OK : S_FAIL;
				r.used = bl + (q ? el : 0);
			}
		} else {
			size_t sl = (s->flags & F_KEEP) ? strlen(s->start) : 0;
			strm_run(p, body + avail, fin);
			rc = s->self(p, b + body - sl, avail + sl, fin, &r);
			drop = body + avail;
			if (p->js.valid && p->js.result == S_OK)
				drop = p->js.abs + p->js.rlen;
			else if (p->js.valid && p->js.result == S_FAIL && !fin)
				drop = p->js.abs + p->js.i + 1;
			if (rc == S_NEED && fin)
				rc = S_FAIL;
			if (rc == S_OK)
				r.used -= sl;
		}
		if (rc == S_NEED)
			return;
		if (rc == S_OK && p->st.n && !strm_agrees(p))
			rc = S_FAIL;
		if (rc != S_OK && p->st.n) {
			/* calls began streaming: they stay (closed as far as they
			 * streamed), and the section's whole text, from the whitespace
			 * before its marker to its end, is content as if it had not
			 * been a call, without looking for calls in it again */
			strm_break(p);
			strm_clear(p);
			p->mode = M_CONTENT;
			p->skip_ws = false;
			p->pos = p->sec_ws;
			p->fence = drop + mark;
			continue;
		}
		if (rc == S_OK) {
			commit(p);
			strm_clear(p);
			p->pos = body + r.used;
			p->mode = r.next_mode;
			if (r.next_mode == M_REASONING)
				p->close = r.close;
			p->skip_ws = true;
			continue;
		}
		/* not a call: the whitespace and the marker are content */
		strm_clear(p);
		pend_clear(p);
		emit_text(p, TC_EV_CONTENT, b + p->sec_ws, body - p->sec_ws);
		p->pos = body;
		p->mode = M_CONTENT;
	}
}

/* Does the rendered prompt end inside an open reasoning block, or (for
 * functionary v3.2) right after ">>>"? */
static void prompt_state(struct tc_parser *p, const char *s, size_t n)
{
	const char *t = s;
	size_t tn = n;
	while (tn && is_ws(t[tn - 1]))
		tn--;
	const struct rsn_spec *r = &RSN[p->syn.reasoning];
	if (r->open && !p->no_reasoning) {
		size_t ol = strlen(r->open), k;
		const char *o = NULL;
		for (k = n >= ol ? n - ol + 1 : 0; k-- > 0;)
			if (!memcmp(s + k, r->open, ol)) {
				o = s + k;
				break;
			}
		if (o && rest_is_ws(s, n, (size_t)(o - s) + ol)) {
			p->mode = M_REASONING;
			p->close = r->close;
			p->skip_ws = true;
			return;
		}
	}
	if (p->syn.format == TC_FMT_FUNCTIONARY_V32 && tn >= 3 && !memcmp(t + tn - 3, ">>>", 3)) {
		p->mode = M_SECTION;
		p->sec = &FMT[TC_FMT_FUNCTIONARY_V32].secs[0];
		p->sec_ws = p->sec_body = 0;
	}
	/* gpt-oss: after "<|start|>assistant" the output begins with the rest of
	 * a header (" to=functions.f<|channel|>..." or "<|channel|>...") */
	if (p->syn.format == TC_FMT_HARMONY && tn >= 18 && !memcmp(t + tn - 18, "<|start|>assistant", 18)) {
		p->mode = M_SECTION;
		p->sec = &FMT[TC_FMT_HARMONY].secs[1];
		p->sec_ws = p->sec_body = 0;
	}
}

int tc_parser_new(const struct tc_syntax *syn, const struct tc_options *o, struct tc_parser **out, char *err)
{
	*out = NULL;
	if (!syn || (unsigned)syn->format >= TC_FMT_COUNT || (unsigned)syn->reasoning >= TC_RSN_COUNT) {
		if (err)
			snprintf(err, INFERD_ERR_LEN, "tool-call parser: invalid syntax description");
		return INFERD_EINVAL;
	}
	struct tc_parser *p = calloc(1, sizeof *p);
	if (!p) {
		if (err)
			snprintf(err, INFERD_ERR_LEN, "tool-call parser: out of memory");
		return INFERD_ENOMEM;
	}
	p->syn = *syn;
	p->parallel = 1;
	if (o) {
		p->choice = o->tool_choice;
		p->parallel = o->parallel_tool_calls;
		p->no_reasoning = o->no_reasoning;
		p->seed = o->id_seed;
		if (json_is_array(o->tools))
			p->tools = json_incref((json_t *)o->tools);
	}
	p->max_section = o && o->max_section ? o->max_section : TC_MAX_SECTION;
	p->mode = M_CONTENT;
	p->at_start = true;
	p->skip_ws = true;
	const struct rsn_spec *r = &RSN[syn->reasoning];
	if (r->open && !p->no_reasoning) {
		add_trigger(p, r->open, TK_REASON, NULL, false);
		/* a closer first thing in the output: empty reasoning (MiniMax-M3
		 * answers after "</mm:think>" when thinking is off) */
		add_trigger(p, r->close, TK_SKIP, NULL, true);
		for (int i = 0; i < 3; i++)
			add_trigger(p, r->skips[i], TK_SKIP, NULL, false);
	}
	const struct fmt_spec *f = &FMT[syn->format];
	for (int i = 0; i < MAX_SECS; i++)
		if (f->secs[i].start && (p->choice != TC_CHOICE_NONE || (f->secs[i].flags & F_ALWAYS)))
			add_trigger(p, f->secs[i].start, TK_SECTION, &f->secs[i], f->secs[i].flags & F_START_ONLY);
	for (int i = 0; i < MAX_SKIPS; i++)
		add_trigger(p, f->skips[i], TK_SKIP, NULL, false);
	if (o && o->prompt)
		prompt_state(p, o->prompt, o->prompt_len);
	if (buf_add(&p->in, "", 0) || buf_add(&p->content, "", 0) || buf_add(&p->reasoning, "", 0)) {
		tc_parser_free(p);
		if (err)
			snprintf(err, INFERD_ERR_LEN, "tool-call parser: out of memory");
		return INFERD_ENOMEM;
	}
	*out = p;
	return 0;
}

int tc_parser_push(struct tc_parser *p, const char *text, size_t len, tc_emit_fn emit, void *ctx)
{
	if (!p || p->finished)
		return INFERD_EINVAL;
	if (buf_add(&p->in, text, len))
		return INFERD_ENOMEM;
	p->emit = emit;
	p->ctx = ctx;
	run(p, false);
	return 0;
}

int tc_parser_finish(struct tc_parser *p, tc_emit_fn emit, void *ctx, struct tc_message *out)
{
	if (out)
		memset(out, 0, sizeof *out);
	if (!p || p->finished)
		return INFERD_EINVAL;
	p->emit = emit;
	p->ctx = ctx;
	run(p, true);
	p->finished = true;
	if (!out)
		return 0;
	out->content = strdup(p->content.p);
	out->content_len = p->content.n;
	out->reasoning = strdup(p->reasoning.p);
	out->reasoning_len = p->reasoning.n;
	out->n_calls = p->ncalls;
	out->calls = p->calls;
	p->calls = NULL;
	p->ncalls = p->capcalls = 0;
	if (!out->content || !out->reasoning) {
		tc_message_free(out);
		return INFERD_ENOMEM;
	}
	return 0;
}

void tc_parser_free(struct tc_parser *p)
{
	if (!p)
		return;
	pend_clear(p);
	strm_clear(p);
	free(p->pend);
	for (int i = 0; i < p->ncalls; i++) {
		free(p->calls[i].id);
		free(p->calls[i].name);
		free(p->calls[i].arguments);
	}
	free(p->calls);
	free(p->in.p);
	free(p->content.p);
	free(p->reasoning.p);
	json_decref(p->tools);
	free(p);
}

int tc_parse(const struct tc_syntax *syn, const struct tc_options *o, const char *text, size_t len,
	     struct tc_message *out, char *err)
{
	struct tc_parser *p;
	memset(out, 0, sizeof *out);
	int rc = tc_parser_new(syn, o, &p, err);
	if (rc)
		return rc;
	rc = tc_parser_push(p, text, len, NULL, NULL);
	if (!rc)
		rc = tc_parser_finish(p, NULL, NULL, out);
	tc_parser_free(p);
	if (rc && err)
		snprintf(err, INFERD_ERR_LEN, "tool-call parser: %s", inferd_strerror(rc));
	return rc;
}

json_t *tc_message_json(const struct tc_message *m)
{
	json_t *o = json_object();
	json_object_set_new(o, "role", json_string("assistant"));
	if (m->content_len || !m->n_calls)
		json_object_set_new(o, "content", json_stringn(m->content ? m->content : "", m->content_len));
	else
		json_object_set_new(o, "content", json_null());
	if (m->reasoning_len)
		json_object_set_new(o, "reasoning_content", json_stringn(m->reasoning, m->reasoning_len));
	if (m->n_calls) {
		json_t *a = json_array();
		for (int i = 0; i < m->n_calls; i++)
			json_array_append_new(a, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", m->calls[i].id, "type",
							   "function", "function", "name", m->calls[i].name,
							   "arguments", m->calls[i].arguments));
		json_object_set_new(o, "tool_calls", a);
	}
	return o;
}

void tc_message_free(struct tc_message *m)
{
	if (!m)
		return;
	free(m->content);
	free(m->reasoning);
	for (int i = 0; i < m->n_calls; i++) {
		free(m->calls[i].id);
		free(m->calls[i].name);
		free(m->calls[i].arguments);
	}
	free(m->calls);
	memset(m, 0, sizeof *m);
}

/* ------------------------------------------- strict calls under "auto" */

/* How calls are written in the syntaxes tc_strict_grammar constrains, with
 * the canonical spacing of their templates: after the trigger,
 *   open call (sep call)* close          (sep NULL: one call)
 *   call ::= pre NAME name_close ARGS post
 * where ARGS are tagged parameters (kopen KEY kclose VALUE vclose ..., a
 * raw string value never containing `avoid`: each of those starts with
 * '<' and has no other '<') or, without kopen, the arguments' JSON. */
static const struct xgram {
	enum tc_format f;
	const char *trigger, *open, *sep, *close, *pre, *name_close, *post;
	const char *kopen, *kclose, *vclose;
	const char *avoid[4];
	const char *kclose_json; /* kclose before a value that is not a string (NULL: kclose) */
	const char *open2, *close2; /* another pair around the calls (or NULL) */
} XG[] = {
	{TC_FMT_QWEN3_XML, "<tool_call>", "\n", NULL, "</tool_call>", "<function=", ">\n", "</function>\n", "<parameter=",
	 ">\n", "\n</parameter>\n", {"</parameter>", "</function>", "</tool_call>"}, NULL, NULL, NULL},
	{TC_FMT_SEED_XML, "<seed:tool_call>", "\n", NULL, "</seed:tool_call>", "<function=", ">\n", "</function>\n",
	 "<parameter=", ">\n", "\n</parameter>\n", {"</parameter>", "</function>", "</seed:tool_call>"}, NULL, NULL, NULL},
	{TC_FMT_GLM, "<tool_call>", "", NULL, "</tool_call>", "", "\n", "", "<arg_key>", "</arg_key>\n<arg_value>",
	 "</arg_value>\n", {"</arg_value>", "</tool_call>"}, NULL, NULL, NULL},
	{TC_FMT_MINIMAX_M2, "<minimax:tool_call>", "\n", NULL, "</minimax:tool_call>", "<invoke name=\"", "\">\n",
	 "</invoke>\n", "<parameter name=\"", "\">", "</parameter>\n", {"</parameter>", "</invoke>", "</minimax:tool_call>"}, NULL, NULL, NULL},
	{TC_FMT_HY3, "<tool_call:opensource>", "", NULL, "</tool_call:opensource>", "", "<tool_sep:opensource>\n", "",
	 "<arg_key:opensource>", "</arg_key:opensource>\n<arg_value:opensource>", "</arg_value:opensource>\n",
	 {"</arg_value:opensource>", "</tool_call:opensource>"}, NULL, NULL, NULL},
	{TC_FMT_MINICPM, "<function name=\"", "", NULL, "</function>", "", "\">", "", "<param name=\"", "\">", "</param>",
	 {"</param>", "</function>"}, NULL, NULL, NULL},
	/* DeepSeek V3.2 writes function_calls, V4 tool_calls: the trigger is their common start */
	{TC_FMT_DSML, "<" DSML_TAG(""), "function_calls>\n", NULL, "</" DSML_TAG("function_calls>"),
	 "<" DSML_TAG("invoke name=\""), "\">\n", "</" DSML_TAG("invoke>\n"), "<" DSML_TAG("parameter name=\""),
	 "\" string=\"true\">", "</" DSML_TAG("parameter>\n"),
	 {"</" DSML_TAG("parameter>"), "</" DSML_TAG("invoke>"), "</" DSML_TAG("function_calls>"), "</" DSML_TAG("tool_calls>")},
	 "\" string=\"false\">", "tool_calls>\n", "</" DSML_TAG("tool_calls>")},
	{TC_FMT_MISTRAL_V11, "[TOOL_CALLS]", "", NULL, "", "", "[ARGS]", "", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_FUNCTIONARY_V31, "<function=", "", NULL, "", "", ">", "</function>", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_LLAMA3, "<|python_tag|>", "", NULL, "", "{\"name\": \"", "\", \"parameters\": ", "}", NULL, NULL, NULL,
	 {NULL}, NULL, NULL, NULL},
	{TC_FMT_FIREFUNCTION, "functools", "[", ", ", "]", "{\"name\": \"", "\", \"arguments\": ", "}", NULL, NULL, NULL,
	 {NULL}, NULL, NULL, NULL},
	{TC_FMT_COMMAND_R7B, "<|START_ACTION|>", "[\n    ", ",\n    ", "\n]", "{\"tool_call_id\": \"0\", \"tool_name\": \"",
	 "\", \"parameters\": ", "}", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_COMMAND_R_PLUS, "Action:", " ```json\n[", ", ", "]\n```", "{\"tool_name\": \"", "\", \"parameters\": ", "}",
	 NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_APERTUS, "<|tools_prefix|>", "[", ", ", "]", "{\"", "\": ", "}", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	/* >>>f\n{..}, or >>>all\n and free text (root's other alternative);
	 * the generation prompt ends in ">>>": the executor starts triggered */
	{TC_FMT_FUNCTIONARY_V32, ">>>", "", NULL, "", "", "\n", "", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	/* markers that are special tokens (TOKS: written as GBNF token
	 * terminals); \x01 is a call index, \x02 a call id (G_SLOTS) */
	{TC_FMT_DEEPSEEK, DS_CALLS_BEGIN, "", "", DS_CALLS_END, DS_CALL_BEGIN, DS_SEP, DS_CALL_END, NULL, NULL, NULL, {NULL},
	 NULL, NULL, NULL},
	/* the same format's second call form (R1): call's alternatives */
	{TC_FMT_DEEPSEEK, DS_CALLS_BEGIN, "", "", DS_CALLS_END, DS_CALL_BEGIN "function" DS_SEP, "\n```json\n",
	 "\n```" DS_CALL_END, NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_KIMI_K2, "<|tool_calls_section_begin|>", "", "", "<|tool_calls_section_end|>", "<|tool_call_begin|>functions.",
	 ":\x01<|tool_call_argument_begin|>", "<|tool_call_end|>", NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	{TC_FMT_SOLAR, "<|tool_call:begin|>", "", NULL, "", "\x02<|tool_call:name|>", "<|tool_call:args|>", "<|tool_call:end|>",
	 NULL, NULL, NULL, {NULL}, NULL, NULL, NULL},
	/* gpt-oss: ..to=functions.f <|constrain|>json<|message|>{..}<|call|> (or the recipient
	 * in the role: to=functions.f<|channel|>commentary json<|message|>); \x03 the header's rest */
	{TC_FMT_HARMONY, "to=functions.", "", NULL, "", "", "\x03<|message|>", "<|call|>", NULL, NULL, NULL, {NULL}, NULL,
	 NULL, NULL},
	/* Kimi K3: tagged parameters between <|open|>, <|sep|> and <|close|>; the
	 * type attribute says "string" or (\x04) another JSON type */
	{TC_FMT_KIMI_K3, "<|open|>tools<|sep|>", "", "", "<|close|>tools<|sep|>", "<|open|>call tool=\"",
	 "\" index=\"\x01\"<|sep|>", "<|close|>call<|sep|>", "<|open|>argument key=\"", "\" type=\"string\"<|sep|>",
	 "<|close|>argument<|sep|>", {"<|close|>"}, "\" type=\"\x04\"<|sep|>", NULL, NULL},
};

/* the special-token markers of XG's literals */
static const char *const TOKS[] = {
	DS_CALLS_BEGIN, DS_CALLS_END, DS_CALL_BEGIN, DS_CALL_END, DS_SEP, "<|tool_calls_section_begin|>",
	"<|tool_calls_section_end|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>",
	"<|tool_call:begin|>", "<|tool_call:name|>", "<|tool_call:args|>", "<|tool_call:end|>", "<|message|>", "<|call|>",
	"<|open|>", "<|sep|>", "<|close|>",
};
/* what \x01 .. \x04 stand for */
static const char *const G_SLOTS[] = {
	"", "[0-9]{1,4}", "[A-Za-z0-9_-]{1,64}",
	"( \" \" <|constrain|>? \"json\" | <|channel|> \"commentary\" ( \" \" <|constrain|>? \"json\" )? )?",
	"( \"number\" | \"boolean\" | \"null\" | \"object\" | \"array\" )"};

static void g_add(struct buf *g, const char *s)
{
	buf_add(g, s, strlen(s));
}

/* a GBNF string literal of s[0, n) */
static void g_lit(struct buf *g, const char *s, size_t n)
{
	buf_add(g, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[8];
		if (c == '"' || c == '\\')
			snprintf(e, sizeof e, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			snprintf(e, sizeof e, "\\x%02x", c);
		else
			snprintf(e, sizeof e, "%c", c);
		g_add(g, e);
	}
	buf_add(g, "\"", 1);
}

static void g_str(struct buf *g, const char *s)
{
	g_lit(g, s, strlen(s));
}

/* a literal of XG: its special-token markers as token terminals, its
 * slots as their classes, the rest as string literals */
static void g_seq(struct buf *g, const char *s)
{
	size_t n = strlen(s), a = 0;
	if (!n)
		g_add(g, "\"\"");
	for (size_t i = 0; i <= n; i++) {
		const char *tk = NULL;
		for (size_t k = 0; k < sizeof TOKS / sizeof TOKS[0] && i < n && !tk; k++)
			if (starts(s + i, n - i, TOKS[k]))
				tk = TOKS[k];
		bool slot = i < n && s[i] >= 1 && s[i] <= 4;
		if (!tk && !slot && i < n)
			continue;
		if (i > a) {
			g_lit(g, s + a, i - a);
			g_add(g, " ");
		}
		if (tk) {
			g_add(g, tk);
			g_add(g, " ");
			i += strlen(tk) - 1;
		} else if (slot) {
			g_add(g, G_SLOTS[(int)s[i]]);
			g_add(g, " ");
		}
		a = i + 1;
	}
}

/* the UTF-8 character at s (its bytes) */
static size_t u8_clen(const char *s)
{
	unsigned char c = (unsigned char)*s;
	size_t l = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	for (size_t k = 1; k < l; k++)
		if (!s[k])
			return k;
	return l;
}

/* one character as GBNF writes it inside a literal or a class */
static void g_char(struct buf *g, const char *c, size_t l)
{
	if (l == 1 && (strchr("\"\\[]^-", *c) || (unsigned char)*c < 0x20)) {
		char e[8];
		snprintf(e, sizeof e, "\\x%02x", (unsigned char)*c);
		g_add(g, e);
	} else {
		buf_add(g, c, l);
	}
}

/* rules xt0.. : any text (UTF-8) that contains none of x->avoid; xt0 is
 * the start. States are the proper prefixes of the markers (whole
 * characters): a character that goes on with a marker moves on, '<'
 * starts again at "<", anything else goes back to the start; a whole
 * marker has no way in. */
static void g_text(struct buf *g, const struct xgram *x)
{
	const char *st[96];
	size_t sl[96];
	int n = 1;
	st[0] = "";
	sl[0] = 0;
	for (int m = 0; m < 4 && x->avoid[m]; m++)
		for (size_t l = u8_clen(x->avoid[m]); l < strlen(x->avoid[m]) && n < 96; l += u8_clen(x->avoid[m] + l)) {
			bool seen = false;
			for (int k = 0; k < n; k++)
				seen = seen || (sl[k] == l && !memcmp(st[k], x->avoid[m], l));
			if (!seen) {
				st[n] = x->avoid[m];
				sl[n++] = l;
			}
		}
	for (int k = 0; k < n; k++) {
		char e[48];
		struct buf cls = {0};
		const char *seen[8];
		int ns = 0;
		snprintf(e, sizeof e, "xt%d ::= ", k);
		g_add(g, e);
		for (int m = 0; m < 4 && x->avoid[m]; m++) {
			const char *a = x->avoid[m];
			if (strlen(a) <= sl[k] || memcmp(a, st[k], sl[k]))
				continue; /* a marker that does not go on from this prefix */
			const char *c = a + sl[k];
			size_t cl = u8_clen(c);
			bool dup = false;
			for (int j = 0; j < ns; j++)
				dup = dup || !strncmp(seen[j], c, cl);
			if (*c == '<' || dup || ns == 8)
				continue;
			seen[ns++] = c;
			g_char(&cls, c, cl);
			for (int j = 0; j < n; j++) /* else the character completes a marker: no way on */
				if (sl[j] == sl[k] + cl && !memcmp(st[j], a, sl[j])) {
					g_add(g, "\"");
					g_char(g, c, cl);
					snprintf(e, sizeof e, "\" xt%d | ", j);
					g_add(g, e);
				}
		}
		g_add(g, "\"<\" xt1 | [^<");
		if (cls.p)
			g_add(g, cls.p);
		g_add(g, "] xt0 | \"\"\n");
		free(cls.p);
	}
}

static bool has_key(const json_t *v, const char *key)
{
	const char *k;
	json_t *x;
	size_t i;
	if (json_is_array(v))
		json_array_foreach(v, i, x) if (has_key(x, key)) return true;
	if (json_is_object(v))
		json_object_foreach((json_t *)v, k, x) if (!strcmp(k, key) || has_key(x, key)) return true;
	return false;
}

/* tc_strict_grammar's result: none (1, g dropped), out of memory (-1),
 * or 0 with *gbnf = g's text and *trigger = trig */
static int g_finish(struct buf *g, int none, const char *trig, const char **trigger, char **gbnf)
{
	if (none) {
		free(g->p);
		return 1;
	}
	if (!g->p)
		return -1;
	*trigger = trig;
	*gbnf = g->p;
	return 0;
}

/* %json with schema ps (-1 out of memory) */
static int g_json(struct buf *g, const json_t *ps)
{
	char *d = json_dumps(ps, JSON_COMPACT);
	if (!d)
		return -1;
	g_add(g, "%json ");
	g_add(g, d);
	g_add(g, " ");
	free(d);
	return 0;
}

/* One parameter's value: raw text for a "string" (its enum or const as
 * literals), else %json with its schema. -1: a string constraint raw text
 * cannot be held to. */
static int g_value(struct buf *g, const json_t *ps)
{
	const char *ty = json_string_value(json_object_get(ps, "type"));
	if (!ty || strcmp(ty, "string"))
		return g_json(g, ps);
	if (json_object_get(ps, "pattern") || json_object_get(ps, "format") || json_object_get(ps, "minLength") ||
	    json_object_get(ps, "maxLength"))
		return -1;
	json_t *en = json_object_get(ps, "enum"), *c = json_object_get(ps, "const"), *v;
	size_t i, n = 0;
	if (json_is_string(c)) {
		g_lit(g, json_string_value(c), json_string_length(c));
		return 0;
	}
	if (c || (en && !json_is_array(en)))
		return -1;
	if (!en) {
		g_add(g, "xt0 ");
		return 0;
	}
	g_add(g, "(");
	json_array_foreach(en, i, v)
	{
		if (!json_is_string(v))
			continue;
		g_add(g, n++ ? " | " : "");
		g_lit(g, json_string_value(v), json_string_length(v));
	}
	g_add(g, ") ");
	return n ? 0 : -1;
}

/* One tool's arguments: a strict tool's parameters (JSON held to its
 * schema; or each tagged parameter in the schema's order, the required
 * ones always), else any. */
static int g_call(struct buf *g, const struct xgram *x, const json_t *f)
{
	const json_t *pa = json_object_get(f, "parameters");
	bool strict = json_is_true(json_object_get(f, "strict")) && json_is_object(pa);
	if (!x->kopen) {
		char *d = strict ? json_dumps(pa, JSON_COMPACT) : NULL;
		g_add(g, "%json ");
		g_add(g, d ? d : "{\"type\":\"object\"}");
		g_add(g, " ");
		free(d);
		return strict && !d ? -1 : 0;
	}
	if (!strict) {
		g_add(g, "( ");
		g_seq(g, x->kopen);
		g_add(g, " [A-Za-z0-9_.-]{1,64} ");
		g_seq(g, x->kclose);
		g_add(g, " xt0 ");
		g_seq(g, x->vclose);
		g_add(g, ")*");
		return 0;
	}
	if (has_key(pa, "$ref"))
		return -1; /* a property's schema alone could not resolve it */
	const json_t *req = json_object_get(pa, "required");
	const char *k;
	json_t *ps;
	json_object_foreach(json_object_get(pa, "properties"), k, ps)
	{
		bool required = false;
		size_t i;
		json_t *r;
		json_array_foreach(req, i, r) required = required || (json_is_string(r) && !strcmp(json_string_value(r), k));
		char key[MAX_NAME + 8];
		const char *ty = json_string_value(json_object_get(ps, "type"));
		bool str = ty && !strcmp(ty, "string");
		snprintf(key, sizeof key, "%s%s", x->kopen, k);
		g_add(g, "( ");
		g_seq(g, key);
		g_add(g, " ");
		g_seq(g, !str && x->kclose_json ? x->kclose_json : x->kclose);
		g_add(g, " ");
		if (!valid_name(k, strlen(k)) || g_value(g, ps))
			return -1;
		g_seq(g, x->vclose);
		g_add(g, required ? ") " : ")? ");
	}
	return 0;
}

/* ---- strict calls in Python-like literals: Gemma 4's call:f{k:<|"|>v<|"|>,n:1}
 * and LFM2's [f(k='v', n=1)]. A strict tool's arguments follow its schema
 * (properties in order, required ones always; strings, their enum or
 * const, numbers, booleans, null, objects with properties, arrays of
 * items, in the dialect's spelling); a schema beyond that (anyOf, $ref,
 * string bounds or patterns, item counts, a list of types) gives no
 * grammar. Other tools take any arguments (rules pv, pk, ps). */
struct pydial {
	bool gemma;          /* Gemma: bare keys, strings in <|"|>; else Python */
	const char *ksep;    /* after a top-level key: ":" or "=" */
	const char *sep;     /* between members and items */
};

static int g_pyval(struct buf *g, const struct pydial *d, const json_t *ps, int depth);

/* a string literal in the dialect: -1 when it cannot be one */
static int g_pystr(struct buf *g, const struct pydial *d, const char *v, size_t n)
{
	if (d->gemma) {
		if (find(v, n, GQ) || memchr(v, 0, n))
			return -1;
		g_add(g, "gq ");
		if (n)
			g_lit(g, v, n);
		g_add(g, " gq ");
		return 0;
	}
	struct buf q = {0};
	buf_add(&q, "'", 1);
	for (size_t i = 0; i < n; i++) {
		const char *e = v[i] == '\'' ? "\\'" : v[i] == '\\' ? "\\\\" : v[i] == '\n' ? "\\n" : v[i] == '\t' ? "\\t"
			       : v[i] == '\r' ? "\\r" : v[i] == 0 ? "\\0" : NULL;
		buf_add(&q, e ? e : v + i, e ? strlen(e) : 1);
	}
	buf_add(&q, "'", 1);
	int rc = q.p ? 0 : -1;
	if (q.p)
		g_lit(g, q.p, q.n);
	g_add(g, " ");
	free(q.p);
	return rc;
}

/* the members of an object schema, in order, required ones always:
 * A(i) = m(i) B(i+1) | A(i+1) when m(i) is optional, B(i) = (sep m(i))? B(i+1) */
static int g_pymembers(struct buf *g, const struct pydial *d, const json_t *pa, int depth, bool top, size_t from)
{
	const json_t *props = json_object_get(pa, "properties"), *req = json_object_get(pa, "required");
	const char *keys[64];
	const json_t *vals[64];
	size_t n = 0;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)props, k, v)
	{
		if (n == 64)
			return -1;
		keys[n] = k;
		vals[n++] = v;
	}
	for (size_t a = from; a < n; a++) { /* the first member written is a */
		bool req_a = false;
		size_t i;
		json_t *r;
		json_array_foreach(req, i, r) req_a = req_a || (json_is_string(r) && !strcmp(json_string_value(r), keys[a]));
		g_add(g, a > from ? "| ( " : "( ");
		for (size_t b = a; b < n; b++) {
			bool req_b = false;
			json_array_foreach(req, i, r) req_b = req_b || (json_is_string(r) && !strcmp(json_string_value(r), keys[b]));
			size_t kl = strlen(keys[b]);
			bool ok = kl && kl <= 64;
			for (size_t c = 0; c < kl; c++)
				ok = ok && (isalnum((unsigned char)keys[b][c]) || keys[b][c] == '_');
			if (!ok)
				return -1;
			g_add(g, b > a ? "( " : "");
			if (b > a)
				g_str(g, d->sep);
			if (d->gemma || top) {
				g_add(g, " ");
				g_str(g, keys[b]);
				g_add(g, " ");
				g_str(g, top ? d->ksep : ":");
				g_add(g, " ");
			} else {
				g_add(g, " ");
				if (g_pystr(g, d, keys[b], kl))
					return -1;
				g_add(g, "\": \" ");
			}
			if (g_pyval(g, d, vals[b], depth + 1))
				return -1;
			g_add(g, b > a ? (req_b ? ") " : ")? ") : "");
		}
		g_add(g, ") ");
		if (req_a)
			return 0; /* a later first member would leave a required one out */
	}
	g_add(g, n > from ? "| \"\" " : "\"\" ");
	return 0;
}

static int g_pyval(struct buf *g, const struct pydial *d, const json_t *ps, int depth)
{
	if (!json_is_object(ps) || depth > 16 || json_object_get(ps, "anyOf") || json_object_get(ps, "$ref") ||
	    json_object_get(ps, "allOf") || json_object_get(ps, "oneOf") || json_object_get(ps, "pattern") ||
	    json_object_get(ps, "format") || json_object_get(ps, "minLength") || json_object_get(ps, "maxLength") ||
	    json_object_get(ps, "minItems") || json_object_get(ps, "maxItems"))
		return -1;
	const json_t *ty = json_object_get(ps, "type"), *en = json_object_get(ps, "enum"), *c = json_object_get(ps, "const");
	const char *t = json_string_value(ty);
	if (ty && !t)
		return -1; /* a list of types */
	json_t *one = c ? json_pack("[O]", c) : NULL;
	const json_t *lits = one ? one : en;
	int rc = 0;
	if (lits) { /* an enum or a const: its values, written in the dialect */
		size_t i, k = 0;
		json_t *v;
		g_add(g, "( ");
		json_array_foreach(lits, i, v)
		{
			g_add(g, k++ ? "| " : "");
			if (json_is_string(v))
				rc |= g_pystr(g, d, json_string_value(v), json_string_length(v));
			else if (json_is_boolean(v))
				g_add(g, d->gemma ? (json_is_true(v) ? "\"true\" " : "\"false\" ") : json_is_true(v) ? "\"True\" " : "\"False\" ");
			else if (json_is_null(v))
				g_add(g, d->gemma ? "\"null\" " : "\"None\" ");
			else if (json_is_number(v)) {
				char *x = json_dumps(v, JSON_ENCODE_ANY);
				if (x)
					g_str(g, x);
				g_add(g, " ");
				rc |= x ? 0 : -1;
				free(x);
			} else
				rc = -1;
		}
		g_add(g, ") ");
		json_decref(one);
		return k ? rc : -1;
	}
	if (!t)
		return g_add(g, "pv "), 0;
	if (!strcmp(t, "string"))
		return g_add(g, d->gemma ? "gq xt0 gq " : "ps "), 0;
	if (!strcmp(t, "integer") || !strcmp(t, "number"))
		return g_json(g, ps);
	if (!strcmp(t, "boolean"))
		return g_add(g, d->gemma ? "( \"true\" | \"false\" ) " : "( \"True\" | \"False\" ) "), 0;
	if (!strcmp(t, "null"))
		return g_add(g, d->gemma ? "\"null\" " : "\"None\" "), 0;
	if (!strcmp(t, "array")) {
		const json_t *it = json_object_get(ps, "items");
		if (!it)
			return g_add(g, "pa "), 0;
		g_add(g, "\"[\" ( ");
		if (g_pyval(g, d, it, depth + 1))
			return -1;
		g_add(g, "( ");
		g_str(g, d->sep);
		g_add(g, " ");
		if (g_pyval(g, d, it, depth + 1))
			return -1;
		g_add(g, ")* )? \"]\" ");
		return 0;
	}
	if (!strcmp(t, "object")) {
		if (!json_object_size(json_object_get(ps, "properties")))
			return g_add(g, "po "), 0;
		g_add(g, "\"{\" ( ");
		if (g_pymembers(g, d, ps, depth, false, 0))
			return -1;
		g_add(g, ") \"}\" ");
		return 0;
	}
	return -1;
}

/* GEMMA4 and LFM2: 0 and *gbnf, 1 none, -1 out of memory */
static int py_strict_grammar(enum tc_format f, const json_t *tools, const char **trigger, char **gbnf)
{
	bool gemma = f == TC_FMT_GEMMA4;
	const struct pydial d = {gemma, gemma ? ":" : "=", gemma ? "," : ", "};
	struct buf g = {0};
	g_add(&g, gemma ? "root ::= \"call:\" call end\nend ::= <tool_call|> | \"<tool_call|>\"\n"
			: "root ::= \"[\" call ( \", \" call )* \"]\" end\nend ::= <|tool_call_end|> | \"<|tool_call_end|>\"\n");
	g_add(&g, "call ::= ");
	for (size_t i = 0; i < json_array_size(tools); i++) {
		const json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
		fn = fn ? fn : t;
		const char *name = json_string_value(json_object_get(fn, "name"));
		const json_t *pa = json_object_get(fn, "parameters");
		bool strict = json_is_true(json_object_get(fn, "strict")) && json_is_object(pa);
		if (!name || !valid_name(name, strlen(name)))
			goto none;
		g_add(&g, i ? "\n  | " : "");
		g_str(&g, name);
		g_add(&g, gemma ? " \"{\" ( " : " \"(\" ( ");
		if (!strict) {
			g_add(&g, "pk ");
			g_str(&g, d.ksep);
			g_add(&g, " pv ( ");
			g_str(&g, d.sep);
			g_add(&g, " pk ");
			g_str(&g, d.ksep);
			g_add(&g, " pv )* )? ");
		} else {
			const json_t *ty = json_object_get(pa, "type");
			if ((ty && !json_is_string(ty)) || (ty && strcmp(json_string_value(ty), "object")) ||
			    json_object_get(pa, "$ref") || json_object_get(pa, "anyOf") ||
			    g_pymembers(&g, &d, pa, 0, true, 0))
				goto none;
			g_add(&g, ") ");
		}
		g_add(&g, gemma ? "\"}\"" : "\")\"");
	}
	g_add(&g, "\npk ::= [A-Za-z_] [A-Za-z0-9_]{0,63}\n");
	if (gemma) {
		g_add(&g, "gq ::= <|\"|> | \"<|\\\"|>\"\n"
			  "pv ::= gq xt0 gq | %json {\"type\":[\"number\",\"boolean\",\"null\"]} | po | pa\n"
			  "po ::= \"{\" ( pk \":\" pv ( \",\" pk \":\" pv )* )? \"}\"\n"
			  "pa ::= \"[\" ( pv ( \",\" pv )* )? \"]\"\n");
		static const struct xgram gx = {TC_FMT_GEMMA4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
						{GQ}, NULL, NULL, NULL};
		g_text(&g, &gx);
	} else {
		g_add(&g, "ps ::= \"'\" ( [^'\\\\\\x0a\\x0d] | \"\\\\\" ['\\\\nt] )* \"'\"\n"
			  "pv ::= ps | %json {\"type\":\"number\"} | \"True\" | \"False\" | \"None\" | po | pa\n"
			  "po ::= \"{\" ( ps \": \" pv ( \", \" ps \": \" pv )* )? \"}\"\n"
			  "pa ::= \"[\" ( pv ( \", \" pv )* )? \"]\"\n");
	}
	return g_finish(&g, 0, gemma ? "<|tool_call>" : "<|tool_call_start|>", trigger, gbnf);
none:
	return g_finish(&g, 1, NULL, trigger, gbnf);
}

int tc_strict_grammar(enum tc_format f, const json_t *tools, const char **trigger, char **gbnf)
{
	const struct xgram *x = NULL, *x2 = NULL; /* x2: a second call form */
	for (size_t i = 0; i < sizeof XG / sizeof XG[0]; i++)
		if (XG[i].f == f && !x)
			x = &XG[i];
		else if (XG[i].f == f)
			x2 = &XG[i];
	*gbnf = NULL;
	if ((f == TC_FMT_GEMMA4 || f == TC_FMT_LFM2) && json_array_size(tools))
		return py_strict_grammar(f, tools, trigger, gbnf);
	if (!x || !json_array_size(tools))
		return 1;
	struct buf g = {0};
	g_add(&g, "root ::= ");
	for (int k = 0; k < (x->open2 ? 2 : 1); k++) {
		g_add(&g, k ? " | " : "");
		g_seq(&g, k ? x->open2 : x->open);
		g_add(&g, " call ");
		if (x->sep) {
			g_add(&g, "( ");
			g_seq(&g, x->sep);
			g_add(&g, " call )* ");
		}
		g_seq(&g, k ? x->close2 : x->close);
	}
	if (f == TC_FMT_FUNCTIONARY_V32) /* text for the user: complete at once, so free again */
		g_add(&g, " | \"all\\n\" .*");
	g_add(&g, "\ncall ::= ");
	for (size_t i = 0; i < json_array_size(tools); i++) {
		const json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
		const char *name = json_string_value(json_object_get(fn ? fn : t, "name"));
		if (!name || !valid_name(name, strlen(name)))
			goto none;
		for (int k = 0; k < (x2 ? 2 : 1); k++) {
			const struct xgram *y = k ? x2 : x;
			g_add(&g, i || k ? "\n  | " : "");
			g_seq(&g, y->pre);
			g_add(&g, " ");
			g_str(&g, name);
			g_add(&g, " ");
			g_seq(&g, y->name_close);
			g_add(&g, " ");
			if (g_call(&g, y, fn ? fn : t))
				goto none;
			g_seq(&g, y->post);
		}
	}
	g_add(&g, "\n");
	if (x->kopen)
		g_text(&g, x);
	return g_finish(&g, 0, x->trigger, trigger, gbnf);
none:
	return g_finish(&g, 1, NULL, trigger, gbnf);
}
