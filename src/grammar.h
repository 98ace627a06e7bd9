/*
 * grammar.h — constrained decoding (structured output).
 *
 * Three front ends compile into one representation, a context-free grammar
 * over BYTES:
 *   - GBNF text (llama.cpp's grammar syntax: `name ::= ...` rules, "literals",
 *     [a-z] / [^...] classes, ( groups ), |, *, +, ?, {m}, {m,}, {m,n}, `.`,
 *     # comments; the start rule is `root`; tokens as llama.cpp writes
 *     them, <TEXT> (e.g. <|tool_call_begin|>: the brackets are part of the
 *     token's text) and <[ID]> (negation, !<..>, is not supported); and
 *     an extension, `%json`
 *     followed by a JSON Schema object: a JSON value that schema accepts,
 *     compiled as below, so a grammar can hold typed values inside text);
 *   - a JSON Schema (the subset OpenAI's strict structured outputs accept,
 *     see grammar_from_json_schema);
 *   - json_object mode: any JSON object.
 * Unicode character classes are compiled into alternatives of UTF-8 byte
 * ranges, so the matcher only ever tests one byte against a 256-bit set.
 * A token terminal is matched by token id, never by bytes: <TEXT> is the
 * vocabulary's special token of that text (else its one ordinary token of
 * exactly those bytes), so a grammar can write a call's special-token
 * markers; the mask allows that token only where the terminal is next,
 * and a special token is refused everywhere else.
 *
 * A compiled `struct grammar` is immutable and may be shared by any number
 * of matchers on any threads. A `struct grammar_vocab` (a byte trie of a
 * tokenizer's vocabulary) is built once per tokenizer, immutable and
 * shareable too. A `struct grammar_matcher` is the state of one generation
 * and belongs to one thread at a time (the executor).
 *
 * The matcher is a pushdown recognizer: its state is a set of stacks of
 * grammar positions, kept as hash-consed persistent lists so that equal
 * stacks are one node. The token mask walks the vocabulary trie depth
 * first with the state's stack set, interning each set reached and caching
 * its transition per byte, and prunes a branch as soon as no stack accepts
 * its byte: the cost is about one array lookup per trie node visited.
 *
 * Whitespace between JSON tokens is bounded (GRAMMAR_JSON_WS_MAX bytes of
 * space, tab or newline) and numbers have bounded digit counts, so a model
 * cannot loop forever inside a value that never closes except in strings,
 * which max_tokens bounds.
 */
#ifndef INFERD_GRAMMAR_H
#define INFERD_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;
struct grammar;
struct grammar_vocab;
struct grammar_matcher;

#define GRAMMAR_JSON_WS_MAX 16  /* whitespace bytes allowed between JSON tokens */
#define GRAMMAR_MAX_REPEAT 10000 /* largest bounded repetition ({m,n}, maxItems) */

/* Compile by kind: "gbnf", "json_schema" (text = the schema as JSON) or
 * "json_object" (text ignored, may be NULL). Errors (INFERD_EINVAL) fill
 * err with a sentence: for GBNF the line and column, for a schema the
 * unsupported keyword and its JSON path (e.g. `unsupported JSON Schema
 * keyword "pattern" at /properties/name`). */
int grammar_compile(const char *kind, const char *text, struct grammar **out, char *err);

/* GBNF text; the start rule is `root`. Left recursion and undefined rules
 * are errors. */
int grammar_from_gbnf(const char *text, struct grammar **out, char *err);

/* A JSON Schema (as JSON text). Supported: type (object, array, string,
 * number, integer, boolean, null, or an array of them), properties,
 * required, additionalProperties (false; true/absent are treated as false
 * when properties are given — the output only ever has the listed
 * properties, which any such schema accepts; a schema value with no
 * properties gives a map of that value type), enum, const, anyOf, allOf
 * with one member, items, minItems, maxItems, minLength, maxLength, $ref
 * to "#", "#/$defs/..." or "#/definitions/..." (any JSON pointer into the
 * document; recursion works);
 *   - beside "type": "integer" / "number": minimum, maximum,
 *     exclusiveMinimum, exclusiveMaximum (numbers; draft 4's booleans too),
 *     compiled exactly digit by digit (integers of at most 16 digits; for
 *     "number" a bound may be any decimal of at most 15 significant digits
 *     below 1e15, and the values then have at most 15 significant digits
 *     and no exponent, so that no double parser rounds one onto a bound:
 *     the integer part's range, and at a bound's integer part a digit-wise
 *     range of the fraction); multipleOf a whole number from 1 to 1000
 *     (integer values, for "number" too: a product of the digit-wise
 *     range with the remainder so far, dead remainders pruned);
 *   - beside "type": "string": pattern (an ECMAScript regex subset: literals,
 *     escapes \d \w \s \D \W \S \. \xHH \uHHHH ..., classes [...] and
 *     [^...], groups ( ) (?: ) (?<name> ), |, * + ? {m} {m,} {m,n} (lazy
 *     forms too), `.`, ^ and $ only at the very start and end; without them
 *     any text may come around the match, as JSON Schema says; lookaround,
 *     backreferences, \b and \p{..} are errors naming them) and format
 *     (date, time, date-time, duration, uuid, ipv4, ipv6 without an embedded
 *     IPv4, email, hostname; another format is an error naming it), both
 *     compiled through an NFA into one rule per (state, length so far) so
 *     that minLength/maxLength hold exactly; characters that JSON must
 *     escape are written \" \\ \n ... \u00XX (one spelling each);
 * and the annotations description, title,
 * $schema, $id, $comment, default, examples, deprecated, readOnly,
 * writeOnly, strict (ignored). Properties are generated in the order the
 * schema lists them; a property not in `required` may be left out. Any
 * other keyword is an error naming it and its path. */
int grammar_from_json_schema(const char *json, struct grammar **out, char *err);

/* Any JSON object (OpenAI's response_format {"type": "json_object"}). */
int grammar_json_object(struct grammar **out, char *err);

void grammar_free(struct grammar *g);
int grammar_n_rules(const struct grammar *g);

/* The vocabulary of a tokenizer as a byte trie: every token's raw bytes
 * (tok_token_bytes). Special tokens are not in it (their text is kept
 * aside for token terminals): a mask allows one only where a token
 * terminal expects it (the executor adds EOS when the grammar is
 * complete). */
int grammar_vocab_new(const struct tokenizer *t, struct grammar_vocab **out, char *err);
void grammar_vocab_free(struct grammar_vocab *v);
/* 0 when every token terminal of g stands for a token of v, else
 * INFERD_EINVAL naming the first that does not (it could never match). */
int grammar_vocab_check(const struct grammar *g, const struct grammar_vocab *v, char *err);
int grammar_vocab_n(const struct grammar_vocab *v);   /* ids 0..n-1 */
/* The bytes of token `id` (NULL for a special token or an id outside). */
const uint8_t *grammar_vocab_bytes(const struct grammar_vocab *v, int32_t id, int *len);

/* A matcher at the start of the grammar; NULL when out of memory. */
struct grammar_matcher *grammar_matcher_new(const struct grammar *g);
void grammar_matcher_free(struct grammar_matcher *m);
/* Feed bytes: 0 when the grammar accepts them (the state advances), -1
 * when it does not (the state is unchanged), INFERD_ENOMEM. */
int grammar_matcher_accept(struct grammar_matcher *m, const uint8_t *bytes, size_t n);
/* Feed token `id` of v: a token terminal expecting it takes it whole,
 * else its bytes go in (-1 for a special token nothing expects). */
int grammar_matcher_accept_token(struct grammar_matcher *m, const struct grammar_vocab *v, int32_t id);
/* The bytes fed so far form a complete sentence of the grammar. */
bool grammar_matcher_complete(const struct grammar_matcher *m);
/* Some byte may still follow (false: complete and nothing can follow). */
bool grammar_matcher_can_continue(const struct grammar_matcher *m);
/* The tokens of v whose bytes can follow now: bit id of `bits` (n_bits
 * bits, cleared first; ids >= grammar_vocab_n stay clear). Returns how many
 * are allowed, or INFERD_ENOMEM. Special tokens are set only where a
 * token terminal expects them. */
int grammar_matcher_mask(struct grammar_matcher *m, const struct grammar_vocab *v, uint32_t *bits, int n_bits);

#endif
