/*
 * tok_impl.h — the tokenizer's private representation, shared by the
 * loaders (tok_load.c) and the encoder/decoder (tok.c).
 *
 * A tokenizer is a pipeline read from its files: added-token matching,
 * then per text segment a list of normalizer steps, a list of
 * pre-tokenizer steps, the BPE model, and for decoding a list of decoder
 * steps. Everything is immutable after loading.
 */
#ifndef INFERD_TOK_IMPL_H
#define INFERD_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "tok.h"

/* open-addressing hash map: key bytes -> int value */
struct smap {
	uint32_t cap;        /* power of two */
	uint32_t n;
	int32_t *slot;       /* index into keys, -1 empty */
	const char **key;
	uint32_t *klen;
	int32_t *val;
};

struct tok_piece {
	char *text;
	uint32_t len;
	float score;
	uint8_t type;        /* TT_* */
};

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

enum norm_kind { N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_PREPEND, N_REPLACE, N_STRIP };
struct norm_step {
	enum norm_kind kind;
	char *a, *b;         /* prepend text; replace from/to */
	int strip_left, strip_right;
};

enum pre_kind { P_SPLIT_REGEX, P_SPLIT_STRING, P_BYTELEVEL, P_METASPACE, P_DIGITS };
enum split_behavior { SB_ISOLATED, SB_REMOVED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS };
struct pre_step {
	enum pre_kind kind;
	pcre2_code *re;      /* P_SPLIT_REGEX, and P_BYTELEVEL with use_regex */
	char *str;           /* P_SPLIT_STRING pattern; P_METASPACE replacement */
	enum split_behavior behavior;
	int invert;
	int add_prefix_space;/* bytelevel; metaspace prepend (1 first, 2 always) */
	int individual;      /* digits */
};

enum dec_kind { D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_METASPACE };
struct dec_step {
	enum dec_kind kind;
	char *a, *b;
	int start, stop;
	int prepend_first;   /* metaspace: strip the first token's leading space */
};

struct added_token {
	int32_t id;
	char *text;
	uint32_t len;
	uint8_t special, lstrip, rstrip;
};

struct tokenizer {
	struct tok_piece *tok;  /* [n_vocab] */
	int n_vocab;
	struct smap vocab;      /* text -> id */
	/* merges: (left id, right id) -> rank; the merged token's id */
	uint64_t *mkey;         /* [mcap] (left << 32 | right) + 1, 0 empty */
	int32_t *mrank, *mres;
	uint32_t mcap, n_merges;
	int use_scores;         /* SentencePiece: merge by the score of the result */
	int byte_fallback, fuse_unk, ignore_merges;
	int32_t byte_id[256];   /* <0xXX> tokens, -1 if absent */
	int32_t unk_id, bos_id, eos_id;
	int add_bos, add_eos;
	int clean_up_spaces;
	struct added_token *added; /* sorted by first byte, then longest first */
	int n_added;
	int added_first[257];      /* index of the first added token per first byte */
	struct norm_step *norm;
	int n_norm;
	struct pre_step *pre;
	int n_pre;
	struct dec_step *dec;
	int n_dec;
	int bytelevel;             /* the model's tokens are GPT-2 byte-level text */
	char *chat_template;
	char *bos_text, *eos_text;
	char *pre_name;            /* GGUF tokenizer.ggml.pre, for writing back */
	int gguf_model_spm;        /* written as tokenizer.ggml.model "llama" */
	int add_space_prefix;      /* SentencePiece-style prefix on each segment */
	/* the pipeline as tokenizer.json spells it, kept to write into GGUF */
	char *norm_json, *pre_json, *dec_json;
	/* replaced token texts still named by the vocabulary map */
	char **retired;
	int n_retired;
};

/* smap */
int smap_init(struct smap *m, uint32_t n);
void smap_free(struct smap *m);
int smap_put(struct smap *m, const char *k, uint32_t klen, int32_t v); /* keys are borrowed */
int32_t smap_get(const struct smap *m, const char *k, uint32_t klen);  /* -1 if absent */

/* tok.c helpers used by the loaders */
int tok_finish(struct tokenizer *t, char *err);  /* build indexes after loading */
int tok_add_merge(struct tokenizer *t, int32_t a, int32_t b, int32_t rank);
pcre2_code *tok_regex(const char *pattern, char *err);
/* GPT-2's byte <-> printable code point map */
uint32_t bytelevel_cp(uint8_t b);
int bytelevel_byte(uint32_t cp);  /* -1 if cp is not in the map */

#endif
