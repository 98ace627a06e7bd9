/*
 * cmd_template.c — `inferd template`: render a model's chat template for a
 * conversation exactly as transformers' apply_chat_template(tokenize=False)
 * does, and print it byte for byte (no newline added).
 *
 * The variables are set as transformers sets them: messages, tools (null
 * when none), documents (null), add_generation_prompt, bos_token and
 * eos_token from the model, then every --var NAME=JSON. Errors in the
 * model, the JSON files or the template go to stderr with exit 1; bad
 * usage exits 2.
 */
#include "cmds.h"
#include "inferd.h"
#include "tmpl.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_BAD 1
#define EXIT_USAGE 2

static const char *template_help =
	"usage: inferd template -m PATH --messages FILE.json [options]\n"
	"Render the model's chat template for a conversation as Hugging Face\n"
	"transformers' apply_chat_template(tokenize=False) does, and print the\n"
	"prompt exactly (no newline added).\n"
	"  -m, --model PATH          GGUF file (tokenizer.chat_template), Hugging Face\n"
	"                            model directory or tokenizer_config.json, or a\n"
	"                            .jinja file; bos/eos token text come from it too\n"
	"  --template FILE           render this Jinja template instead of the model's\n"
	"                            (-m is then optional)\n"
	"  --messages FILE.json      a JSON array of messages, or an object\n"
	"                            {\"messages\": [...], \"tools\": [...]} (required)\n"
	"  --tools FILE.json         a JSON array of tool definitions (OpenAI\n"
	"                            function format); overrides \"tools\" in --messages\n"
	"  --add-generation-prompt   end with the header of the assistant's turn\n"
	"  --var NAME=JSON           set a template variable (repeatable), e.g.\n"
	"                            --var enable_thinking=false; a value that is not\n"
	"                            valid JSON is taken as a string\n"
	"Variables: messages, tools (null when none), documents (null),\n"
	"add_generation_prompt, bos_token, eos_token, then each --var in order.\n"
	"strftime_now() reads the clock, or INFERD_TEST_NOW (seconds since the\n"
	"epoch) when that is set.\n"
	"Exit codes: 0 rendered; 1 bad model, JSON file or template (the message\n"
	"names the file, line and construct); 2 bad usage.\n";

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "inferd template: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see 'inferd template --help')\n");
	return EXIT_USAGE;
}

/* argv[*i] is `flag` or `flag=value`: 1 with *val set, -1 value missing, 0 other */
static int flag_val(int argc, char **argv, int *i, const char *f1, const char *f2, const char **val)
{
	const char *arg = argv[*i];
	for (int k = 0; k < 2; k++) {
		const char *f = k ? f2 : f1;
		if (!f)
			continue;
		size_t n = strlen(f);
		if (strncmp(arg, f, n) != 0)
			continue;
		if (arg[n] == '=') {
			*val = arg + n + 1;
			return 1;
		}
		if (arg[n] == 0) {
			if (*i + 1 >= argc)
				return -1;
			*val = argv[++*i];
			return 1;
		}
	}
	return 0;
}

static char *read_file(const char *path, size_t *len);

static json_t *load_json(const char *path)
{
	size_t n;
	char *text = read_file(path, &n);  /* one read: json_load_file reads by getc */
	if (!text) {
		fprintf(stderr, "inferd template: %s: cannot read: %s\n", path, strerror(errno));
		return NULL;
	}
	json_error_t je;
	json_t *j = json_loadb(text, n, JSON_ALLOW_NUL, &je);
	free(text);
	if (!j)
		fprintf(stderr, "inferd template: %s:%d:%d: invalid JSON: %s\n", path, je.line, je.column, je.text);
	return j;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	while (buf) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		char *nb = realloc(buf, cap * 2);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

int cmd_template(int argc, char **argv)
{
	const char *model = NULL, *tfile = NULL, *mfile = NULL, *tools_file = NULL;
	bool agp = false;
	json_t *vars = json_object(), *extra = json_object();
	int rc = EXIT_USAGE;
	char *src = NULL, *bos = NULL, *eos = NULL, *out = NULL;
	struct tmpl *t = NULL;
	json_t *msgs = NULL, *tools = NULL;
	char err[INFERD_ERR_LEN];
	if (!vars || !extra) {
		fprintf(stderr, "inferd template: out of memory\n");
		rc = EXIT_BAD;
		goto done;
	}
	for (int i = 2; i < argc; i++) {
		const char *v = NULL;
		int k;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(template_help, stdout);
			rc = 0;
			goto done;
		}
		if (!strcmp(argv[i], "--add-generation-prompt")) {
			agp = true;
			continue;
		}
		const char **dst = NULL;
		const char *flag = argv[i];
		if ((k = flag_val(argc, argv, &i, "-m", "--model", &v)))
			dst = &model;
		else if ((k = flag_val(argc, argv, &i, "--template", NULL, &v)))
			dst = &tfile;
		else if ((k = flag_val(argc, argv, &i, "--messages", NULL, &v)))
			dst = &mfile;
		else if ((k = flag_val(argc, argv, &i, "--tools", NULL, &v)))
			dst = &tools_file;
		else if ((k = flag_val(argc, argv, &i, "--var", NULL, &v)))
			dst = NULL;
		if (k < 0) {
			rc = usage("%s needs a value", flag);
			goto done;
		}
		if (k > 0 && dst) {
			*dst = v;
			continue;
		}
		if (k > 0) {
			/* --var NAME=JSON */
			const char *eq = strchr(v, '=');
			if (!eq || eq == v) {
				rc = usage("--var expects NAME=JSON, got \"%s\"", v);
				goto done;
			}
			char name[256];
			snprintf(name, sizeof name, "%.*s", (int)(eq - v), v);
			json_error_t je;
			json_t *val = json_loads(eq + 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
			if (!val)
				val = json_string(eq + 1);
			json_object_set_new(extra, name, val);
			continue;
		}
		rc = usage("unknown option \"%s\"", argv[i]);
		goto done;
	}
	if (!model && !tfile) {
		rc = usage("%s", "-m PATH (or --template FILE) is required");
		goto done;
	}
	if (!mfile) {
		rc = usage("%s", "--messages FILE.json is required");
		goto done;
	}
	rc = EXIT_BAD;
	size_t len = 0;
	if (model && tmpl_model_source(model, &src, &len, &bos, &eos, err)) {
		if (!tfile || !strstr(err, "no chat template")) {
			fprintf(stderr, "inferd template: %s\n", err);
			goto done;
		}
	}
	if (tfile) {
		free(src);
		src = read_file(tfile, &len);
		if (!src) {
			fprintf(stderr, "inferd template: %s: cannot read the template: %s\n", tfile, strerror(errno));
			goto done;
		}
	}
	json_t *m = load_json(mfile);
	if (!m)
		goto done;
	if (json_is_object(m)) {
		msgs = json_incref(json_object_get(m, "messages"));
		tools = json_incref(json_object_get(m, "tools"));
		json_decref(m);
	} else {
		msgs = m;
	}
	if (!json_is_array(msgs)) {
		fprintf(stderr, "inferd template: %s: expected a JSON array of messages (or {\"messages\": [...]})\n", mfile);
		goto done;
	}
	if (tools_file) {
		json_decref(tools);
		if (!(tools = load_json(tools_file)))
			goto done;
		if (!json_is_array(tools)) {
			fprintf(stderr, "inferd template: %s: expected a JSON array of tools\n", tools_file);
			goto done;
		}
	}
	json_object_set(vars, "messages", msgs);
	json_object_set(vars, "tools", tools ? tools : json_null());
	json_object_set_new(vars, "documents", json_null());
	json_object_set_new(vars, "add_generation_prompt", json_boolean(agp));
	if (bos)
		json_object_set_new(vars, "bos_token", json_string(bos));
	if (eos)
		json_object_set_new(vars, "eos_token", json_string(eos));
	json_object_update(vars, extra);
	const char *name = tfile ? tfile : model;
	if (tmpl_parse(src, len, name, &t, err)) {
		fprintf(stderr, "inferd template: %s\n", err);
		goto done;
	}
	size_t n;
	if (tmpl_render(t, vars, NULL, &out, &n, NULL, err)) {
		fprintf(stderr, "inferd template: %s\n", err);
		goto done;
	}
	if (fwrite(out, 1, n, stdout) != n || fflush(stdout) != 0) {
		fprintf(stderr, "inferd template: cannot write the output\n");
		goto done;
	}
	rc = 0;
done:
	free(out);
	tmpl_free(t);
	free(src);
	free(bos);
	free(eos);
	json_decref(msgs);
	json_decref(tools);
	json_decref(vars);
	json_decref(extra);
	return rc;
}
