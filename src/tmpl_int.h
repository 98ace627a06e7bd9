/*
 * tmpl_int.h — internals shared by the template interpreter's files:
 *   tmpl_lex.c    Jinja's lexer (whitespace control, trim/lstrip_blocks)
 *   tmpl.c        parser to an AST, compile-time checks, the public API
 *   tmpl_val.c    values, arenas, strings with taint masks, repr, JSON
 *   tmpl_eval.c   evaluation of expressions and statements, scopes, macros
 *   tmpl_lib.c    filters, tests, methods of str/dict/list, globals,
 *                 Python's % and str.format formatting
 *
 * Memory: a template owns one arena holding its AST and constants; a render
 * owns another holding every value it creates, freed in one go at the end.
 * Values are small structs passed by value; strings, lists and dicts point
 * into an arena and are never freed one by one. Lists and dicts are shared
 * by reference (Python semantics); namespaces are the mutable objects.
 * Nothing here is global or static-mutable, so renders run in parallel.
 */
#ifndef INFERD_TMPL_INT_H
#define INFERD_TMPL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

#include "inferd.h"
#include "tmpl.h"

/* ---------------------------------------------------------------- arena */

struct achunk;
struct arena {
	struct achunk *head;
	size_t total;   /* bytes obtained from malloc */
	size_t limit;   /* 0 = none */
};
void *ar_alloc(struct arena *a, size_t n);  /* zeroed; NULL when over limit or OOM */
void ar_free(struct arena *a);

/* ---------------------------------------------------------------- values */

enum vtype {
	V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT,
	V_NS, V_FUNC, V_LOOP, V_ITER
};
enum { TN_CLEAN = 0, TN_ALL = 1, TN_MIXED = 2 };           /* string taint */
enum { LK_LIST, LK_TUPLE, LK_ITEMS, LK_KEYS, LK_VALUES, LK_RANGE };  /* list kinds */
#define SUB_MARKUP 1                                       /* strings: markupsafe.Markup */
#define SUB_GROW 2   /* strings: bytes follow a struct sgrow (see str_concat); never copied to other values */

struct list;
struct dict;
struct nsobj;
struct func;
struct loop;
struct iter;

struct val {
	uint8_t t;      /* enum vtype */
	uint8_t taint;  /* V_STR: TN_*; V_UNDEF: U_* (what was missing, for the message) */
	uint8_t sub;    /* V_STR: SUB_*; V_LIST: LK_*; V_UNDEF: 1 = SecurityError */
	size_t n;       /* V_STR: bytes; V_UNDEF: length of the name or hint in s */
	union {
		bool b;
		int64_t i;
		double f;
		const char *s;
		struct list *l;
		struct dict *d;
		struct nsobj *ns;
		struct func *fn;
		struct loop *lp;
		struct iter *it;
	};
	const uint8_t *m;  /* V_STR with TN_MIXED: one 0/1 per byte; V_UNDEF: the object's type (char *) */
};

struct lgrow;
struct list {
	size_t n, cap;
	struct val *v;
	struct lgrow *grow;  /* v is a shared growable array (list_concat); copy before mutating */
	bool shared;         /* v is (part of) another list's array (a slice): copy before mutating */
	bool group;   /* a tuple from groupby: attributes grouper and list */
	int64_t rstart, rstop, rstep;  /* LK_RANGE: what range() was given */
};

struct dict {
	size_t n, cap;
	struct val *k, *v;
	uint32_t *hix;   /* open-addressed index (slot = entry + 1), NULL while small */
	size_t hcap;
};

struct nsobj {
	struct dict d;
};

/* Undefined values carry what is needed for jinja2's message without an
 * allocation: s/n the name (or hint), m the object's type, i the missing
 * integer index (U_ELEM). */
enum { U_PLAIN, U_NAME, U_ATTR, U_ELEM, U_HINT };
/* the hint of an Undefined from a slice Jinja folds at compile time */
#define FOLDED_SLICE "a slice folded at compile time"

/* A generator or iterator: items materialised, consumed once. */
enum { IK_GENERATOR, IK_REVERSED };
struct iter {
	struct val *v;
	size_t n, pos;
	uint8_t kind;
};

struct node;
struct scope;

enum fkind { FK_MACRO, FK_CALLER, FK_GLOBAL, FK_METHOD, FK_LOOP, FK_JOINER, FK_CYCLER };
struct func {
	uint8_t kind;
	int id;                   /* FK_GLOBAL / FK_METHOD: which */
	struct val self;          /* FK_METHOD: bound object */
	const struct node *def;   /* FK_MACRO / FK_CALLER: definition */
	struct scope *closure;
	const char *name;
	size_t name_n;
	int64_t pos;              /* FK_JOINER: used; FK_CYCLER: position */
	struct list *items;       /* FK_CYCLER */
};

struct loop {
	int64_t index0, length;
	const struct val *items;
	int depth0;
	bool changed_set;
	struct val last_changed;
	const struct node *fornode;   /* recursive loops: the for node */
	struct scope *outer;          /* recursive loops: scope of the for */
};

/* ---------------------------------------------------------------- strings */

/* A growable string with a parallel taint mask (malloc'd). */
struct sbuf {
	char *p;
	uint8_t *m;
	size_t n, cap;
	size_t limit;    /* max bytes; 0 = TMPL_MAX_OUTPUT */
	bool over;       /* an append went past limit or failed to allocate */
};
void sb_init(struct sbuf *b);
void sb_free(struct sbuf *b);
bool sb_put(struct sbuf *b, const char *p, size_t n, uint8_t taint);
bool sb_puts(struct sbuf *b, const char *s);  /* clean */
bool sb_putc(struct sbuf *b, char c);         /* clean */
bool sb_putv(struct sbuf *b, const struct val *s);  /* a V_STR with its mask */
bool sb_putv_range(struct sbuf *b, const struct val *s, size_t off, size_t n);
bool sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copy into the arena as a V_STR (compact taint). */
struct rctx;
int sb_to_val(struct rctx *r, const struct sbuf *b, struct val *out);

/* UTF-8 and Python's str */
size_t u8_len(const char *p, size_t n);                   /* code points */
uint32_t u8_dec(const char *p, size_t n, size_t *adv);    /* one code point */
size_t u8_enc(uint32_t cp, char *out);
size_t u8_off(const char *p, size_t n, int64_t cpi);      /* byte offset of code point cpi */
bool py_isspace(uint32_t cp);
uint32_t py_upper(uint32_t cp);
uint32_t py_lower(uint32_t cp);
bool py_isalpha(uint32_t cp);
bool py_isdigit(uint32_t cp);
bool py_isalnum(uint32_t cp);
bool py_isprintable(uint32_t cp);

/* ---------------------------------------------------------------- AST */

enum nkind {
	/* expressions */
	N_CONST, N_NAME, N_GETATTR, N_GETITEM, N_SLICE, N_CALL, N_FILTER, N_TEST,
	N_UNARY, N_BIN, N_AND, N_OR, N_CMP, N_CONCAT, N_COND, N_LIST, N_TUPLE, N_DICT,
	N_NSREF,
	/* statements */
	S_OUTPUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK,
	S_BREAK, S_CONTINUE, S_WITH, S_SCOPE, S_UNSUPPORTED
};
enum { U_NOT, U_NEG, U_POS };
enum { B_ADD, B_SUB, B_MUL, B_DIV, B_FLOORDIV, B_MOD, B_POW };
enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_IN, C_NOTIN };

/* node flags */
#define NF_RECURSIVE   1u   /* S_FOR */
#define NF_CALLER      2u   /* S_MACRO / S_CALLBLOCK: body reads `caller` */
#define NF_VARARGS     4u   /* ... reads `varargs` */
#define NF_KWARGS      8u   /* ... reads `kwargs` */
#define NF_SOFTMISSING 16u  /* N_FILTER / N_TEST: unknown, fail when run */
#define NF_ELIF 64u         /* S_IF: made from {% elif %} */

struct callargs {
	struct node **pos;
	int npos;
	const char **kwn;
	struct node **kwv;
	int nkw;
	struct node *dyn_args, *dyn_kwargs;
};

struct node {
	uint8_t kind;
	uint8_t op;
	uint16_t flags;
	int line, col;
	struct node *a, *b, *c;
	struct node **kids;  /* items, operands, body */
	int nk;
	struct node **kids2; /* dict values, else body, defaults, with values */
	int nk2;
	struct node **tg;    /* with targets */
	int ntg;
	uint8_t *ops;        /* N_CMP */
	int *psyms;          /* S_MACRO / S_CALLBLOCK parameters */
	const char **pnames;
	int np;
	int sym;             /* N_NAME, S_MACRO, N_NSREF: symbol */
	const char *s;       /* attribute / filter / test / macro name; message */
	size_t sn;
	int fid;             /* filter / test id */
	struct callargs *ca;
	struct val cv;       /* N_CONST */
	int *unset;          /* frames: names bound as Undefined on entry (Jinja's */
	int nunset;          /*   VAR_LOAD_UNDEFINED); S_FOR: of the body */
	int *unset2;         /* S_FOR: of the else block */
	int nunset2;
};

/* well-known symbols, interned first by the parser in this order */
enum { SYM_LOOP, SYM_CALLER, SYM_VARARGS, SYM_KWARGS, SYM_RANGE, SYM_DICT,
       SYM_NAMESPACE, SYM_RAISE, SYM_STRFTIME, SYM_CYCLER, SYM_JOINER, SYM_LIPSUM,
       SYM_NBUILTIN };

struct tmpl {
	struct arena ar;
	char *name;
	struct node *root;     /* S_SCOPE-like body: kids */
	const char **syms;
	size_t *symlen;
	int nsyms;
};

/* ---------------------------------------------------------------- lexer */

enum tktype { TK_EOF, TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
	      TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP };
enum {
	OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
	OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
	OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ, OP_ASSIGN, OP_DOT, OP_COLON,
	OP_PIPE, OP_COMMA, OP_SEMICOLON
};
struct token {
	uint8_t type;
	uint8_t op;
	int line, col;
	const char *p;   /* TK_NAME: the name; TK_DATA / TK_STRING: decoded text (arena) */
	size_t n;
	int64_t i;
	double f;
};
/* Tokenise normalised source (newlines \n, one trailing newline dropped).
 * Tokens are allocated in `ar`; *toks ends with TK_EOF. */
int tmpl_lex(const char *src, size_t len, const char *name, struct arena *ar,
	     struct token **toks, size_t *ntoks, char *err);
const char *tk_describe(const struct token *t, char *buf, size_t cap);

/* ---------------------------------------------------------------- render */

struct rctx {
	const struct tmpl *t;
	struct arena ar;
	char *err;
	struct val *gv;         /* globals by symbol */
	struct sbuf *out;       /* where output goes now */
	int64_t iters;
	int call_depth, eval_depth;
	int line;
	time_t now;
	int errcode;
	/* Jinja's optimizer evaluates constant subexpressions (literals and
	 * operators, no names, calls or context filters) at compile time through
	 * the sandbox, where slicing what cannot be sliced gives Undefined. The
	 * folded value is kept when it has a safe repr (or the expression is a
	 * whole {{ }} child); otherwise the code runs and raises TypeError.
	 * nonconst counts names/calls evaluated so far; a slice error in a
	 * constant subtree waits in pending_err until a folding ancestor
	 * discharges it or its statement raises it. */
	uint64_t nonconst;
	bool pending;
	char pending_err[200];
};

/* errors: format "<name>:<line>: msg" into r->err, return status */
int rerr(struct rctx *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int room(struct rctx *r);  /* the arena ran out: ENOMEM/ERANGE with message */

void *ralloc(struct rctx *r, size_t n);

/* constructors */
static inline struct val v_undef(void) { struct val v = {0}; v.t = V_UNDEF; return v; }
static inline struct val v_none(void) { struct val v = {0}; v.t = V_NONE; return v; }
static inline struct val v_bool(bool b) { struct val v = {0}; v.t = V_BOOL; v.b = b; return v; }
static inline struct val v_int(int64_t i) { struct val v = {0}; v.t = V_INT; v.i = i; return v; }
static inline struct val v_float(double f) { struct val v = {0}; v.t = V_FLOAT; v.f = f; return v; }
static inline struct val v_strc(const char *s, size_t n) { struct val v = {0}; v.t = V_STR; v.s = s; v.n = n; return v; }
struct val v_str_taint(const char *s, size_t n, uint8_t taint);
int v_undef_name(struct rctx *r, const char *name, size_t n, struct val *out);
int v_undef_attr(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out);
int v_undef_elem(struct rctx *r, const struct val *obj, const struct val *key, struct val *out);
int v_undef_hint(struct rctx *r, const char *hint, bool security, struct val *out);
int v_strdup(struct rctx *r, const char *s, size_t n, struct val *out);
int v_newlist(struct rctx *r, size_t cap, uint8_t kind, struct val *out);
int v_newdict(struct rctx *r, struct val *out);
int list_push(struct rctx *r, struct list *l, struct val v);
int dict_set(struct rctx *r, struct dict *d, struct val k, struct val v);
int dict_get(const struct dict *d, const struct val *k, struct val *out); /* 1 found, 0 not */
int dict_get_str(const struct dict *d, const char *k, size_t n, struct val *out);
int dict_del(struct dict *d, const struct val *k);

/* messages */
const char *v_typename(const struct val *v);     /* Python type name: 'str', 'dict', ... */
const char *v_objrepr(const struct val *v);      /* jinja object_type_repr: "dict object" */
void undef_message(const struct val *v, char *buf, size_t cap);
int undef_fail(struct rctx *r, const struct val *v);  /* raise the UndefinedError */

/* Python semantics */
bool v_truthy(const struct val *v);
bool v_is_true_bool(const struct val *v);
int v_eq(struct rctx *r, const struct val *a, const struct val *b, bool *eq);
int v_cmp(struct rctx *r, const struct val *a, const struct val *b, int op, bool *res); /* C_LT.. */
int v_order(struct rctx *r, const struct val *a, const struct val *b, int *c); /* sort order */
int v_contains(struct rctx *r, const struct val *container, const struct val *item, bool *res);
int v_len(struct rctx *r, const struct val *v, int64_t *n);  /* TypeError when no len */
int v_hash(const struct val *v, uint64_t *h);                 /* -1 unhashable */

/* str(), repr() and json.dumps into a buffer; taint: whole result tainted
 * when any string inside is */
int v_str(struct rctx *r, const struct val *v, struct val *out);   /* str(x) as a value */
int v_write_str(struct rctx *r, struct sbuf *b, const struct val *v); /* str(x) appended */
int v_write_repr(struct rctx *r, struct sbuf *b, const struct val *v, int depth);
struct json_opts {
	bool ensure_ascii;
	bool sort_keys;
	bool has_indent;
	const char *indent; size_t indent_n;
	const char *item_sep; size_t item_sep_n;
	const char *key_sep; size_t key_sep_n;
};
int v_write_json(struct rctx *r, struct sbuf *b, const struct val *v, const struct json_opts *o, int level);
void fmt_float_repr(double f, char *buf, size_t cap);
bool v_any_taint(const struct val *v, int depth);

/* conversions from jansson */
int v_from_json(struct rctx *r, const json_t *j, bool tainted, struct val *out, int depth);

/* iteration: a materialised list of items (strings give characters, dicts
 * keys, iterators their rest) */
int v_iterate(struct rctx *r, const struct val *v, struct val **items, size_t *n);
int v_to_list(struct rctx *r, const struct val *v, struct val *out);

/* string slicing by code points, keeping masks */
int str_sub(struct rctx *r, const struct val *s, size_t boff, size_t bn, struct val *out);
uint8_t str_taint_of(const struct val *s);
/* a + b for strings (masks kept): appends in place when a ends at the fill
 * mark of its growable buffer, so building a string piece by piece is
 * linear; a's own bytes never change */
int str_concat(struct rctx *r, const struct val *a, const struct val *b, struct val *out);
/* a + b for lists / tuples of one kind, in place likewise */
int list_concat(struct rctx *r, const struct val *a, const struct val *b, struct val *out);
/* give a list its own array before it is mutated (pop, clear) */
int list_unshare(struct rctx *r, struct list *l);  /* TN_CLEAN if no byte tainted */
struct val str_retaint(struct val s, bool tainted);  /* whole-result taint after a transform */

/* ---------------------------------------------------------------- eval / lib */

int eval(struct rctx *r, const struct node *n, struct scope *sc, struct val *out);
int binop(struct rctx *r, int op, const struct val *a, const struct val *b, struct val *out);
int call_value(struct rctx *r, const struct val *fn, struct val *args, int nargs,
	       const char **kwn, struct val *kwv, int nkw, struct val *out);
int getattr_v(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out);
int getitem_v(struct rctx *r, const struct val *obj, const struct val *key, struct val *out);

/* filters and tests: ids resolved at parse time; -1 unknown */
int filter_id(const char *name, size_t n);
int test_id(const char *name, size_t n);
const char *filter_name(int id);
bool filter_needs_context(int id);
int apply_filter(struct rctx *r, int id, const char *name, struct val *v, struct val *args, int nargs,
		 const char **kwn, struct val *kwv, int nkw, struct val *out);
int apply_test(struct rctx *r, int id, const char *name, struct val *v, struct val *args, int nargs,
	       const char **kwn, struct val *kwv, int nkw, bool *out);
/* the id of a plain (safe) str/dict/list method, -1 otherwise */
int method_id(const struct val *obj, const char *name, size_t n);
int method_lookup(struct rctx *r, const struct val *obj, const char *name, size_t n, struct val *out); /* 1 found */
int call_method(struct rctx *r, const struct func *f, struct val *args, int nargs,
		const char **kwn, struct val *kwv, int nkw, struct val *out);
int call_global(struct rctx *r, int id, struct val *args, int nargs,
		const char **kwn, struct val *kwv, int nkw, struct val *out);
int py_percent_format(struct rctx *r, const struct val *fmt, const struct val *args, struct val *out);
int py_str_format(struct rctx *r, const struct val *fmt, struct val *args, int nargs,
		  const char **kwn, struct val *kwv, int nkw, struct val *out);
int markup_escape(struct rctx *r, const struct val *v, struct val *out);  /* escape() -> Markup */

#endif
