/*
 * tmpl.h — a Jinja2 interpreter for chat templates, rendering byte for byte
 * what Hugging Face transformers renders: jinja2's
 * ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
 * loopcontrols extension, {% generation %} blocks rendered as their body,
 * transformers' tojson (json.dumps, ensure_ascii=False) and its globals
 * raise_exception and strftime_now.
 *
 * A parsed template is immutable: any number of threads may render it at
 * once. A render owns all its memory (one arena, freed at the end) and is
 * bounded: loop iterations, call and evaluation depth, memory and output
 * size are capped, so no template or input can crash or hang it.
 *
 * Taint: every output byte carries a mask bit, 1 when it came from
 * untrusted data (by default the strings under the top-level variables
 * messages, tools and documents), 0 when it came from the template itself
 * or from trusted variables (bos_token, ...). Slicing, stripping and
 * splitting keep each byte's bit; any other transformation of a tainted
 * string (replace, format, tojson, ...) taints its whole result. The
 * tokenizer matches special tokens only in bytes whose bit is 0.
 */
#ifndef INFERD_TMPL_H
#define INFERD_TMPL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct tmpl;

/* Parse `len` bytes of template source; `name` appears in messages.
 * Syntax errors name the line, column and construct. */
int tmpl_parse(const char *src, size_t len, const char *name, struct tmpl **out, char *err);

/* Render with the top-level variables of the object `vars` (messages,
 * tools, add_generation_prompt, bos_token, ... — rendered exactly as given:
 * pass tools = null to match transformers when there are none).
 * `untrusted_keys`: NULL for the default ["messages", "tools", "documents"],
 * else a JSON array of top-level names whose strings are untrusted.
 * On success *out (NUL-terminated, *out_len bytes) and *mask (*out_len
 * bytes, may be NULL when not wanted) are malloc'd for the caller. */
int tmpl_render(const struct tmpl *t, const json_t *vars, const json_t *untrusted_keys,
		char **out, size_t *out_len, uint8_t **mask, char *err);

void tmpl_free(struct tmpl *t);

/* A model's chat template source and its bos/eos token text (either may
 * come back NULL). PATH: a GGUF file (tokenizer.chat_template; tokens at
 * tokenizer.ggml.bos/eos_token_id), a Hugging Face directory
 * (tokenizer_config.json's chat_template, a string or a list of
 * {name, template} of which "default" is used, else chat_template.jinja or
 * chat_template.json), a tokenizer_config.json, or a .jinja file. All
 * outputs are malloc'd for the caller. */
int tmpl_model_source(const char *path, char **src, size_t *len, char **bos, char **eos, char *err);

/* Limits of one render. */
#define TMPL_MAX_OUTPUT     (64u << 20)   /* bytes of output */
#define TMPL_MAX_MEMORY     (512u << 20)  /* bytes of render-time values */
#define TMPL_MAX_ITERATIONS 10000000      /* loop iterations, all loops together */
#define TMPL_MAX_CALL_DEPTH 200           /* nested macro calls */

#endif
