/*
 * toolcall.h — tool calls and reasoning in a model's generated text
 * (OpenAI `tool_calls`, `reasoning_content`), issue 11.
 *
 * Three parts:
 *   1. tc_detect: from the chat template's source, which tool-call syntax
 *      and which reasoning markers the model was trained with, and which
 *      thinking variables the template reads (enable_thinking, ...).
 *   2. a restartable streaming parser: tc_parser_push(piece) turns generated
 *      text into events (content delta, reasoning delta, tool call begin,
 *      tool call arguments) and tc_parser_finish gives the final message.
 *   3. tc_parse: the same over a whole text (push everything + finish).
 *
 * Guarantees (each tested in tests/unit/test_toolcall.c):
 *   - Any split of the text into pieces (byte by byte included) gives the
 *     same events, concatenated, and the same final message as the whole
 *     text at once: the parser decides only what the bytes seen so far
 *     decide, and holds back the rest (text that may still become a marker,
 *     trailing whitespace, an unfinished call), so streamed content never
 *     shows a partial "<tool_c".
 *   - Text that looks like a call but is not one (bad JSON, unknown
 *     structure, cut off by max_tokens) stays content, byte for byte (also
 *     when a call in it had begun streaming, see below).
 *     Nothing crashes, nothing is lost except whitespace between segments
 *     and the structure markers themselves: leading whitespace of the
 *     message, of the reasoning and of content after reasoning, after a
 *     call or after a dropped marker (<|END_RESPONSE|>, <|return|>, ...),
 *     trailing whitespace of the reasoning, and whitespace just before a
 *     call or a dropped marker. Trailing whitespace of the content at the
 *     end of the output is kept. Content is bytes as generated (invalid
 *     UTF-8 included); a call needs valid UTF-8 to be a call.
 *   - Arguments a template JSON-encoded twice ("{\"city\": ..}" as a
 *     string, what many templates render when the client sent string
 *     arguments) and Python dicts are accepted as the object they hold.
 *   - A call's text longer than tc_options.max_section (4 MiB) is content:
 *     nothing is held back without bound. Time is linear in the output.
 *   - Streaming arguments. Every syntax streams a call's arguments in
 *     pieces while it is generated, the name first.
 *     JSON bodies: HERMES, MISTRAL, MISTRAL_V11, LLAMA3 (bare JSON and
 *     <|python_tag|>{..}), GRANITE, FIREFUNCTION, JSON_TAGS, NEMOTRON_V2,
 *     GIGACHAT, DEEPSEEK (V3.1's f<｜tool▁sep｜>{..} and R1's fenced JSON),
 *     KIMI_K2, SOLAR, FUNCTIONARY_V31 (<function=f>{..}), FUNCTIONARY_V32
 *     (>>>f\n{..}), HARMONY (to=functions.f ...<|message|>{..}),
 *     COMMAND_R7B, COMMAND_R_PLUS and APERTUS ({"f": {..}}).
 *     The call is decided when its header is read (the name, e.g. a whole
 *     "name" string and the "arguments" key, and the "{" that opens the
 *     arguments) and the first top-level member of the arguments is
 *     complete and valid JSON (or the object closes empty): then
 *     TC_EV_CALL_BEGIN, and one TC_EV_CALL_ARGS per top-level member as
 *     each completes ("{" + "\"k\":v" for the first, "," + "\"k\":v" for
 *     the next, "}" with the last), each member re-serialized as jansson's
 *     compact dump does, so the pieces concatenate to exactly the final
 *     arguments (compact, key order as written: the whole-text parse gives
 *     the same). Python calls (LFM2's [f(k='v'), ..], Llama's
 *     <|python_tag|>f.call(k="v")) and Gemma 4's call:f{k:<|"|>v<|"|>,..}
 *     go the same way, member by member, each member read by the payload
 *     parser's own value reader and written as JSON.
 *     Tagged parameters: QWEN3_XML, SEED_XML, GLM, HY3, MINIMAX_M2, DSML,
 *     MINICPM, KIMI_K3, MINIMAX_M3 (<k>v</k>, each tag after its
 *     ]<]minimax[>[ token; that token inside a value stops the streaming
 *     there). The call begins with its first parameter: `{"k":`
 *     and, for a value that is a string (the tool's schema says "string",
 *     or string="true" / type="string"), its text as it arrives, escaped
 *     as jansson escapes it, in whole UTF-8 characters, holding back what
 *     may still be the closing tag (and Qwen's stripped newline); a value
 *     whose JSON form is known only at its end (a number, an object, an
 *     untyped parameter, a CDATA section) goes out whole at its closing
 *     tag; "}" at the call's end. The pieces of any split concatenate to
 *     the same text, which is the final arguments.
 *     functionary's <|python_tag|>code (a call of "python", {"code": ..})
 *     begins at the code's first byte that is not whitespace and streams
 *     the code as a string value, the same way; trailing whitespace
 *     waits (the code is trimmed).
 *     A call only begins when parallel_tool_calls and
 *     tool_choice let it be kept (and, for Llama's bare JSON with tools
 *     given, when it names one of them). The model's own Mistral id is
 *     kept when it comes before the arguments ([CALL_ID]); an "id" key
 *     after them is not seen in time and the id is generated.
 *     Text malformed before that point (a bad name, no arguments key,
 *     arguments not an object, a bad first member, cut off before it)
 *     is content as always, and nothing was emitted. A call that began and
 *     then breaks (bad JSON later, a duplicate key, no closing bracket or
 *     tag, invalid UTF-8 in a value, cut off by max_tokens, its section
 *     over max_section, calls opened one after another without a closing
 *     tag) cannot be retracted: it stays in tool_calls with what streamed,
 *     closed with "}" (a string cut short with "\"}"), and the
 *     whole text of its section (the whitespace before the marker through
 *     the end marker) is ALSO content, byte for byte, not scanned for calls
 *     again. Anything the streamer does not recognise before a call is
 *     decided (another shape, Python dicts, arguments JSON-encoded as a
 *     string, "function": {..} wrappers, keys before "name", Kimi K3's
 *     and Gemma 4's JSON forms) just comes whole when its section is
 *     complete: TC_EV_CALL_BEGIN, then one TC_EV_CALL_ARGS with the whole
 *     arguments JSON. Clients concatenate argument deltas (the OpenAI
 *     clients do).
 *   - arguments are always a JSON object text (compact, jansson's dump),
 *     whatever the model's syntax (JSON, XML parameters, Python literals).
 *     Values of XML-style parameters are typed by the request's tool schema
 *     (tc_options.tools): a "string" parameter stays a string, others are
 *     parsed as JSON when they are JSON.
 *
 * Formats (enum tc_format) and the fixture templates that map to them
 * (../shared/fixtures/templates; tc_detect is checked on every one):
 *   HERMES        <tool_call>{"name":..,"arguments":..}</tool_call> (the
 *                 closing tag may be missing at the end of the output, as
 *                 with QWEN3_XML and GLM): Qwen2.5,
 *                 Qwen3, QwQ, Hermes 2 Pro / 3, MiMo-VL, Granite 4.0/4.1,
 *                 Bielik 11B v3, Reka Edge
 *   QWEN3_XML     <tool_call><function=f><parameter=p>v</parameter>
 *                 </function></tool_call>: Qwen3-Coder, Qwen3.5,
 *                 Nemotron 3 Nano, StepFun 3.5
 *   SEED_XML      the same inside <seed:tool_call>: ByteDance Seed-OSS
 *   LLAMA3        {"name": f, "parameters": {..}} as the whole reply, or
 *                 <|python_tag|>{json} / <|python_tag|>f.call(k="v"):
 *                 Llama 3.1, 3.2, 3.3
 *   MISTRAL       [TOOL_CALLS][{"name":..,"arguments":..,"id":..}, ...]:
 *                 Mistral Nemo 2407
 *   MISTRAL_V11   [TOOL_CALLS]f[ARGS]{..} (optionally [CALL_ID]id before
 *                 [ARGS]), repeated: Mistral Small 3.2, Devstral 2507,
 *                 Ministral 3 Reasoning
 *   DEEPSEEK      <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{..}
 *                 <｜tool▁call▁end｜>...<｜tool▁calls▁end｜> (V3.1), and R1's
 *                 function<｜tool▁sep｜>f\n```json\n{..}\n```: DeepSeek V3.1,
 *                 R1 distills, llama.cpp's deepseek-r1 template
 *   DSML          <｜DSML｜function_calls> / <｜DSML｜tool_calls> with
 *                 <｜DSML｜invoke name="f"><｜DSML｜parameter name="p"
 *                 string="true">v</｜DSML｜parameter>: DeepSeek V3.2, V4
 *   FUNCTIONARY_V31 <function=f>{..}</function>, <|python_tag|>code (call
 *                 "python" with {"code": ..}): functionary medium v3.1
 *   FUNCTIONARY_V32 >>>f\n{..} and >>>all\ntext (the prompt ends in >>>):
 *                 functionary medium v3.2
 *   GRANITE       <|tool_call|>[{..}, ...]: Granite 3.3
 *   FIREFUNCTION  functools[{..}, ...]: firefunction v2
 *   GLM           <tool_call>f<arg_key>k</arg_key><arg_value>v</arg_value>
 *                 </tool_call>: GLM-4.6, GLM-4.7-Flash, poolside Laguna
 *   HY3           the same with :opensource tags and <tool_sep:opensource>:
 *                 Tencent Hy3
 *   KIMI_K2       <|tool_calls_section_begin|><|tool_call_begin|>
 *                 functions.f:0<|tool_call_argument_begin|>{..}
 *                 <|tool_call_end|>...: Kimi K2 (Instruct, Thinking)
 *   HARMONY       gpt-oss: <|channel|>analysis<|message|>..<|end|> is
 *                 reasoning, <|channel|>final<|message|> content,
 *                 to=functions.f ...<|message|>{..}<|call|> a call
 *   COMMAND_R7B   <|START_ACTION|>[{"tool_call_id":..,"tool_name":..,
 *                 "parameters":{..}}]<|END_ACTION|>: Command R7B, Cohere2MoE
 *   JSON_TAGS     <tool_calls>[{..}]</tool_calls> or JSON lines inside:
 *                 Apriel 1.5 / 1.6, MiniMax-M1
 *   NEMOTRON_V2   <TOOLCALL>[{..}]</TOOLCALL>: Nemotron Nano v2
 *   MINIMAX_M2    <minimax:tool_call><invoke name="f"><parameter name="p">
 *                 v</parameter></invoke></minimax:tool_call>: MiniMax-M2
 *   MINICPM       <function name="f"><param name="p">v</param></function>:
 *                 MiniCPM5
 *   LFM2          <|tool_call_start|>[f(a='x', n=1)]<|tool_call_end|>
 *                 (Python literals): LFM2.5-8B-A1B
 *   SOLAR         <|tool_call:begin|>id<|tool_call:name|>f<|tool_call:args|>
 *                 {..}<|tool_call:end|>: Solar Open 100B
 *   APERTUS       <|tools_prefix|>[{"f": {..}}]<|tools_suffix|>: Apertus
 *   GIGACHAT      <|function_call|>{"name":..,"arguments":..}: GigaChat 3.1
 *   GEMMA4        <|tool_call>call:f{k:<|"|>v<|"|>,n:1}<tool_call|>: Gemma 4
 *   KIMI_K3       <|open|>call tool="f" ...<|sep|><|open|>argument key="k"
 *                 type="string"<|sep|>v<|close|>argument<|sep|>
 *                 <|close|>call<|sep|>: Kimi K3
 *   COMMAND_R_PLUS Action: ```json\n[{"tool_name": f, "parameters": {..}}]
 *                 \n```: Command R+ (tool_use template)
 *   MINIMAX_M3    ]<]minimax[>[<tool_call> ]<]minimax[>[<invoke name="f">
 *                 ]<]minimax[>[<k>v]<]minimax[>[</k>... (the ]<]minimax[>[
 *                 special token before every tag): MiniMax-M3
 * Templates with no tool-call syntax get TC_FMT_NONE (Gemma 2, Phi-3.5,
 * LFM2 8B, LFM2.5 Instruct, SmolLM3, RWKV world, GigaChat 3, muse-glimmer): their output is content (and reasoning).
 *
 * Reasoning markers (enum tc_reasoning): THINK <think>..</think> (Qwen3,
 * QwQ, DeepSeek R1/V3.x/V4, SmolLM3, GLM, MiniMax-M2, Nemotron, Kimi K2
 * Thinking, ...), SEED <seed:think>, COHERE <|START_THINKING|>, MISTRAL
 * [THINK]..[/THINK], HY3 <think:opensource>, GEMMA4 <|channel>thought..
 * <channel|>, KIMI_K3 <|open|>think<|sep|>, APRIEL "Here are my reasoning
 * steps:\n" .. [BEGIN FINAL RESPONSE], MINIMAX_M3 <mm:think>, and harmony's
 * analysis channel. The opening marker counts only at the start of the
 * output; when the rendered prompt already ends inside an open reasoning
 * block (e.g. "<think>\n"), pass the prompt in tc_options and the output
 * starts in reasoning.
 *
 * Threads: a parser is used by one thread at a time; everything else is
 * stateless. Memory: all malloc'd, freed by tc_parser_free /
 * tc_message_free.
 *
 * Usage (server):
 *
 *   struct tc_syntax syn;                       // once per model
 *   tc_detect(template_src, template_len, &syn);
 *   // pass "enable_thinking"/"reasoning_effort" to the template only if
 *   // syn.vars has TC_VAR_ENABLE_THINKING / TC_VAR_REASONING_EFFORT
 *
 *   struct tc_options o = {
 *       .tool_choice = TC_CHOICE_AUTO,       // NONE: calls stay content
 *       .parallel_tool_calls = 1,
 *       .tools = request_tools,              // json_t array or NULL
 *       .prompt = rendered, .prompt_len = n, // the rendered chat prompt
 *       .id_seed = request_counter,          // ids call_<24 chars>
 *   };
 *   // the text fed to the parser must keep special tokens' text: decode
 *   // with tok_stream_new(tok, 0), not TOK_SKIP_SPECIAL, or "<tool_call>",
 *   // "<think>", "[TOOL_CALLS]", "<|python_tag|>" vanish (the stop token
 *   // itself, e.g. <|im_end|>, need not be passed).
 *   // non-streaming:
 *   struct tc_message m;
 *   if (tc_parse(&syn, &o, text, len, &m, err) == 0) {
 *       json_t *msg = tc_message_json(&m);   // {"role":"assistant",...}
 *       ... finish_reason = m.n_calls ? "tool_calls" : "stop";
 *       tc_message_free(&m);
 *   }
 *   // streaming:
 *   struct tc_parser *p;
 *   tc_parser_new(&syn, &o, &p, err);
 *   for each decoded text piece:
 *       tc_parser_push(p, piece, n, on_event, ctx);  // 0..k events
 *   tc_parser_finish(p, on_event, ctx, &m);          // last events + message
 *   tc_parser_free(p);
 *   // on_event: CONTENT -> delta.content, REASONING ->
 *   // delta.reasoning_content, CALL_BEGIN -> delta.tool_calls[{index, id,
 *   // type:"function", function:{name, arguments:""}}], CALL_ARGS ->
 *   // delta.tool_calls[{index, function:{arguments: text}}].
 *
 * Ids: "call_" + 24 alphanumerics from (id_seed, the call's index), so a
 * given seed always gives the same ids; Mistral formats, whose templates
 * insist on 9 alphanumerics, keep the model's own [CALL_ID]/"id" when it
 * has 9 characters, else 9 generated ones.
 *
 * parallel_tool_calls = 0: only the first call is kept; later calls are
 * parsed and dropped (their text does not become content), so the client
 * sees at most one call, as with OpenAI.
 */
#ifndef INFERD_TOOLCALL_H
#define INFERD_TOOLCALL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define TC_FORMATS(X)                                                         \
	X(NONE, "none") X(HERMES, "hermes") X(QWEN3_XML, "qwen3_xml")          \
	X(SEED_XML, "seed_xml") X(LLAMA3, "llama3") X(MISTRAL, "mistral")       \
	X(MISTRAL_V11, "mistral_v11") X(DEEPSEEK, "deepseek") X(DSML, "dsml")   \
	X(FUNCTIONARY_V31, "functionary_v3.1")                                 \
	X(FUNCTIONARY_V32, "functionary_v3.2") X(GRANITE, "granite")           \
	X(FIREFUNCTION, "firefunction") X(GLM, "glm") X(HY3, "hy3")            \
	X(KIMI_K2, "kimi_k2") X(HARMONY, "harmony")                            \
	X(COMMAND_R7B, "command_r7b") X(JSON_TAGS, "json_tags")                \
	X(NEMOTRON_V2, "nemotron_v2") X(MINIMAX_M2, "minimax_m2")              \
	X(MINICPM, "minicpm") X(LFM2, "lfm2") X(SOLAR, "solar")                \
	X(APERTUS, "apertus") X(GIGACHAT, "gigachat") X(GEMMA4, "gemma4")      \
	X(KIMI_K3, "kimi_k3") X(MINIMAX_M3, "minimax_m3")                      \
	X(COMMAND_R_PLUS, "command_r_plus")

enum tc_format {
#define TC_X_ENUM(id, name) TC_FMT_##id,
	TC_FORMATS(TC_X_ENUM)
#undef TC_X_ENUM
	TC_FMT_COUNT
};

#define TC_REASONINGS(X)                                                      \
	X(NONE, "none") X(THINK, "think") X(SEED, "seed") X(COHERE, "cohere")  \
	X(MISTRAL, "mistral") X(HY3, "hy3") X(GEMMA4, "gemma4")                \
	X(KIMI_K3, "kimi_k3") X(APRIEL, "apriel") X(MINIMAX_M3, "minimax_m3")  \
	X(HARMONY, "harmony")

enum tc_reasoning {
#define TC_X_ENUM(id, name) TC_RSN_##id,
	TC_REASONINGS(TC_X_ENUM)
#undef TC_X_ENUM
	TC_RSN_COUNT
};

/* Template variables about thinking that a template reads (bits of vars). */
enum {
	TC_VAR_ENABLE_THINKING = 1,   /* enable_thinking (Qwen3, GLM, SmolLM3, ...) */
	TC_VAR_REASONING_EFFORT = 2,  /* reasoning_effort (gpt-oss, DeepSeek V4, ...) */
	TC_VAR_THINKING = 4,          /* thinking (DeepSeek V3.1/V3.2, Seed, ...) */
	TC_VAR_THINKING_BUDGET = 8,   /* thinking_budget (Seed-OSS) */
	TC_VAR_THINKING_MODE = 16,    /* thinking_mode (MiniMax-M3, ...) */
};

struct tc_syntax {
	enum tc_format format;
	enum tc_reasoning reasoning;
	unsigned vars; /* TC_VAR_* */
};

/* Fill *out from a chat template's source (len bytes; NULL/0 gives NONE). */
void tc_detect(const char *tmpl_src, size_t len, struct tc_syntax *out);
/* For a model without a chat template: fill the format and reasoning
 * fields of *out that are still NONE from the text of its tokens (pass the
 * added/special tokens, or every piece: only exact matches of marker
 * tokens such as "<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<think>"
 * count). A template is the better source: Qwen3-Coder's XML calls and
 * Hermes JSON share the <tool_call> token. */
void tc_detect_tokens(const char *const *tokens, size_t n, struct tc_syntax *out);
/* TC_VAR_* bits of the thinking variables the template's code reads (names
 * outside string literals, not after a dot). tc_detect sets syn.vars. */
unsigned tc_template_vars(const char *tmpl_src, size_t len);
const char *tc_format_name(enum tc_format f);
const char *tc_reasoning_name(enum tc_reasoning r);

enum tc_choice {
	TC_CHOICE_AUTO = 0, /* parse calls */
	TC_CHOICE_NONE,     /* do not parse calls: their text stays content */
	TC_CHOICE_REQUIRED, /* parsed as auto; the server enforces (prompt, grammar) */
	TC_CHOICE_NAMED,    /* parsed as auto; the server enforces */
};

struct tc_options {
	enum tc_choice tool_choice;
	int parallel_tool_calls;   /* 0: keep only the first call */
	int no_reasoning;          /* 1: reasoning markers are content (no split) */
	const json_t *tools;       /* the request's tools (typing of XML params), may be NULL */
	const char *prompt;        /* the rendered prompt (its tail), may be NULL */
	size_t prompt_len;
	uint64_t id_seed;          /* ids are call_ + 24 chars derived from it and the index */
	size_t max_section;        /* 0: TC_MAX_SECTION. A call whose text (after its opening
				    * marker) is longer is not a call: its text is content */
};

#define TC_MAX_SECTION (4u << 20)

enum tc_event_type {
	TC_EV_CONTENT = 1,   /* text, len: a piece of content */
	TC_EV_REASONING,     /* text, len: a piece of reasoning_content */
	TC_EV_CALL_BEGIN,    /* index, id, name */
	TC_EV_CALL_ARGS,     /* index, text, len: a piece of the arguments JSON */
};

struct tc_event {
	enum tc_event_type type;
	int index;          /* the call's index in tool_calls */
	const char *id;     /* CALL_BEGIN */
	const char *name;   /* CALL_BEGIN */
	const char *text;   /* CONTENT, REASONING, CALL_ARGS: not NUL-terminated */
	size_t len;
};

/* Events are valid only during the call; emit may be NULL. */
typedef void (*tc_emit_fn)(void *ctx, const struct tc_event *ev);

struct tc_call {
	char *id;        /* "call_..." */
	char *name;
	char *arguments; /* JSON object text */
};

struct tc_message {
	char *content;   /* NUL-terminated, "" when none */
	size_t content_len;
	char *reasoning; /* NUL-terminated, "" when none */
	size_t reasoning_len;
	int n_calls;
	struct tc_call *calls;
};

struct tc_parser;

/* opts may be NULL (auto, parallel, no tools, no prompt). err: INFERD_ERR_LEN. */
int tc_parser_new(const struct tc_syntax *syn, const struct tc_options *opts, struct tc_parser **out, char *err);
/* Feed generated text. Returns 0, or INFERD_EINVAL after finish. */
int tc_parser_push(struct tc_parser *p, const char *text, size_t len, tc_emit_fn emit, void *ctx);
/* End of the output: emits what was held back and fills *out (may be NULL). */
int tc_parser_finish(struct tc_parser *p, tc_emit_fn emit, void *ctx, struct tc_message *out);
void tc_parser_free(struct tc_parser *p);

/* The whole text at once: tc_parser_new + push + finish. */
int tc_parse(const struct tc_syntax *syn, const struct tc_options *opts, const char *text, size_t len,
	     struct tc_message *out, char *err);

/* strict tools under tool_choice "auto" in syntaxes whose calls are not
 * plain JSON after a marker (those go by a JSON Schema, in the server):
 * tagged parameters QWEN3_XML, SEED_XML, GLM, HY3, MINIMAX_M2, MINICPM,
 * KIMI_K3 (below),
 * DSML (V3.2's function_calls and V4's tool_calls: the trigger is their
 * common "<｜DSML｜"), and JSON
 * arguments after a header MISTRAL_V11 (f[ARGS]{..}), FUNCTIONARY_V31
 * (<function=f>{..}), LLAMA3 (<|python_tag|>{"name", "parameters"}),
 * FIREFUNCTION, COMMAND_R7B, COMMAND_R_PLUS, APERTUS, and JSON between
 * special-token markers DEEPSEEK (V3.1's f<｜tool▁sep｜>{..} or R1's
 * function<｜tool▁sep｜>f + fenced JSON), KIMI_K2, SOLAR, HARMONY (after
 * "to=functions.": f, its header's rest, <|message|>{..}<|call|>), and
 * KIMI_K3's tagged parameters (after <|open|>tools<|sep|>): those markers
 * are written as GBNF token terminals (<｜tool▁sep｜>, grammar.h), which
 * only the special token itself matches; and FUNCTIONARY_V32 (>>>f\n{..},
 * or >>>all\n and free text; its generation prompt ends in ">>>", and the
 * executor starts a lazy constraint whose trigger ends the prompt
 * triggered); GEMMA4 and LFM2 (Python-like literals: a strict tool's
 * arguments by its schema's properties, in the syntax's spelling, when
 * the schema uses only types, properties, required, items, enum, const
 * and numeric bounds). The lazy
 * constraint (inferd_request.grammar_trigger) for a call: *trigger, the
 * call's marker (static text), and *gbnf (malloc'd), a GBNF grammar (with
 * grammar.h's %json for typed values) of what follows the marker up to the
 * end of the call(s), written as the syntax's templates write it: one of
 * the tools by name, a strict tool's arguments held to its parameters
 * (JSON by the schema; tagged parameters in the schema's order, the
 * required ones always, the others optional, a "string" as raw text that
 * cannot end the value early, or its enum or const, any other type as
 * JSON held to its schema), a non-strict tool's any arguments, then the
 * closing tags. Returns 0; 1 when there is none (another syntax, no
 * tools, a tagged strict string parameter with pattern, format,
 * minLength or maxLength, or a $ref; for GEMMA4 and LFM2 any schema
 * beyond that list): nothing is enforced then; -1 out of memory. */
int tc_strict_grammar(enum tc_format f, const json_t *tools, const char **trigger, char **gbnf);

/* {"role":"assistant","content": text or null (null when empty and there
 * are calls), "reasoning_content": (only when not empty), "tool_calls":
 * [{"id","type":"function","function":{"name","arguments"}}] (only when
 * there are calls)}. New reference. */
json_t *tc_message_json(const struct tc_message *m);
void tc_message_free(struct tc_message *m);

#endif
