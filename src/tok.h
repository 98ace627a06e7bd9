/*
 * tok.h — tokenizers: byte-level BPE (GPT-2 style: Llama 3, Qwen2/3) and
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma),
 * loaded from GGUF metadata or from Hugging Face tokenizer.json +
 * tokenizer_config.json; encoding, decoding and streaming decoding.
 *
 * A tokenizer is immutable after loading and may be used from any number
 * of threads at once; a tok_stream belongs to one caller.
 */
#ifndef INFERD_TOK_H
#define INFERD_TOK_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct gguf;
struct tokenizer;

enum {
	TOK_ADD_SPECIAL = 1,    /* add BOS/EOS as the tokenizer's files say */
	TOK_PARSE_SPECIAL = 2,  /* match special/added-token strings in the text */
	TOK_SKIP_SPECIAL = 4,   /* decode: leave out special tokens */
};

/* Load from a GGUF file, an HF model directory, or a directory holding
 * tokenizer.json (and tokenizer_config.json). */
int tok_load(const char *path, struct tokenizer **out, char *err);
/* From the tokenizer.ggml.* metadata of an open GGUF; `path` for messages. */
int tok_load_gguf(const struct gguf *g, const char *path, struct tokenizer **out, char *err);
/* From dir/tokenizer.json + dir/tokenizer_config.json. */
int tok_load_hf(const char *dir, struct tokenizer **out, char *err);
void tok_free(struct tokenizer *t);

/* Encode `len` bytes of UTF-8 text. *ids is malloc'd. Invalid UTF-8 is
 * encoded as the reference does (bytes kept, never dropped). */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, int *n, char *err);
/* As tok_encode with TOK_PARSE_SPECIAL, except that bytes whose `untrusted`
 * mask is nonzero (message content) never match special tokens. */
int tok_encode_masked(const struct tokenizer *t, const char *text, size_t len, const uint8_t *untrusted, int flags,
		      int32_t **ids, int *n, char *err);
/* Decode ids to text as Hugging Face's decode() does (*out malloc'd,
 * NUL-terminated). Ids out of range are an error. */
int tok_decode(const struct tokenizer *t, const int32_t *ids, int n, int flags, char **out, size_t *len, char *err);

int tok_n_vocab(const struct tokenizer *t);
int tok_bos(const struct tokenizer *t);   /* -1 if none */
int tok_eos(const struct tokenizer *t);   /* -1 if none */
bool tok_is_special(const struct tokenizer *t, int32_t id);
/* Text of a token as stored (GGUF / tokenizer.json spelling), or NULL. */
const char *tok_piece(const struct tokenizer *t, int32_t id);
/* The raw bytes token `id` stands for inside a longer output: byte-level
 * pieces through GPT-2's byte map, SentencePiece <0xXX> as its byte and
 * ▁ as a space. Writes at most `cap` bytes to buf (NULL with cap 0 to ask
 * the length); returns the full length, or -1 for an id out of range. */
int tok_token_bytes(const struct tokenizer *t, int32_t id, uint8_t *buf, size_t cap);
/* The chat template the files carry, or NULL. */
const char *tok_chat_template(const struct tokenizer *t);
/* bos/eos token text for templates ("" if none). */
const char *tok_bos_text(const struct tokenizer *t);
const char *tok_eos_text(const struct tokenizer *t);

/* Streaming decode: push ids one at a time; each push returns the text
 * that is complete so far (never a partial UTF-8 sequence); flush returns
 * what is left. Concatenated, the pieces equal tok_decode of all ids. */
struct tok_stream;
struct tok_stream *tok_stream_new(const struct tokenizer *t, int flags);
/* Appends the newly complete text to *out (malloc'd, NUL-terminated; the
 * caller frees it); returns 0 or an error status. */
int tok_stream_push(struct tok_stream *s, int32_t id, char **out, size_t *len, char *err);
int tok_stream_flush(struct tok_stream *s, char **out, size_t *len);
void tok_stream_free(struct tok_stream *s);

/* Write the tokenizer into a GGUF being written (tokenizer.ggml.* keys,
 * including the chat template). */
struct gguf_writer;
void tok_write_gguf(const struct tokenizer *t, struct gguf_writer *w);

#endif
