/*
 * registry.c — the list of models a server offers, built at start-up:
 *
 *   --model [NAME=]PATH   a model by path (loaded at start: preload)
 *   --models-dir DIR      every *.gguf file and every model directory
 *                         (config.json beside *.safetensors: Hugging Face
 *                         and MLX layouts) below DIR, by its path relative
 *                         to DIR ("qwen/q4.gguf" → "qwen/q4"); loaded on
 *                         the first request
 *   --config FILE         per-model settings (JSON, see README): entries
 *                         name a model of the two lists above or bring
 *                         their own "path"
 *
 * Requests can only name entries of this list (or their aliases): a model
 * name never becomes a path, so no request can load an arbitrary file.
 * Every error names the flag, file or configuration key at fault.
 */
#include "registry.h"
#include "serve.h"
#include "tmpl.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const REG_SAMPLING_KEYS[] = {"temperature", "top_p", "top_k", "min_p", "presence_penalty",
					 "frequency_penalty", "repetition_penalty", "seed", "max_tokens", "stop",
					 NULL};
/* the ranges the API accepts (serve.c checks each request again) */
static const double SAMPLING_RANGE[][2] = {{0, 2}, {1e-9, 1}, {0, 1e9}, {0, 1}, {-2, 2}, {-2, 2}, {0.01, 10},
					   {-9.2e18, 9.2e18}, {1, 1e7}};

static int fail(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
	return -1;
}

int parse_duration_str(const char *s, double *secs)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !isfinite(v))
		return -1;
	double unit = 1;
	if (!*end)
		unit = 1;
	else if (!strcmp(end, "ms"))
		unit = 1e-3;
	else if (!strcmp(end, "s"))
		unit = 1;
	else if (!strcmp(end, "m"))
		unit = 60;
	else if (!strcmp(end, "h"))
		unit = 3600;
	else
		return -1;
	*secs = v < 0 ? -1 : v * unit;
	return 0;
}

int parse_duration(const json_t *v, double *secs)
{
	if (json_is_number(v)) {
		double x = json_number_value(v);
		*secs = x < 0 ? -1 : x;
		return 0;
	}
	return json_is_string(v) ? parse_duration_str(json_string_value(v), secs) : -1;
}

static struct model_entry *add_entry(struct registry *r, const char *name, const char *path, char *err, size_t cap)
{
	for (int i = 0; i < r->n; i++) {
		if (!strcmp(r->e[i].name, name)) {
			fail(err, cap, "two models are named '%s' (%s and %s); give one another name with --model NAME=PATH",
			     name, r->e[i].path, path);
			return NULL;
		}
	}
	if (strlen(name) >= sizeof r->e[0].name) {
		fail(err, cap, "model name '%.40s...' is longer than %zu bytes", name, sizeof r->e[0].name - 1);
		return NULL;
	}
	struct model_entry *ne = realloc(r->e, (size_t)(r->n + 1) * sizeof *ne);
	if (!ne) {
		fail(err, cap, "out of memory");
		return NULL;
	}
	r->e = ne;
	struct model_entry *e = &r->e[r->n++];
	memset(e, 0, sizeof *e);
	snprintf(e->name, sizeof e->name, "%s", name);
	e->path = strdup(path);
	e->cfg.keep_alive = NAN;
	return e;
}

static int is_model_dir(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof p, "%s/config.json", dir) >= (int)sizeof p || stat(p, &st) != 0)
		return 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d))) {
		size_t n = strlen(de->d_name);
		found = n > 12 && !strcmp(de->d_name + n - 12, ".safetensors");
	}
	closedir(d);
	return found;
}

/* depth-first, sorted (stable names and order); hidden entries skipped */
static int scan(struct registry *r, const char *root, const char *rel, int depth, char *err, size_t cap)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
	if (depth > 8)
		return 0;
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort);
	if (n < 0)
		return depth ? 0 : fail(err, cap, "--models-dir %s: %s", root, strerror(errno));
	int rc = 0;
	for (int i = 0; i < n; i++) {
		const char *nm = list[i]->d_name;
		char path[PATH_MAX], sub[PATH_MAX];
		int too_long = snprintf(path, sizeof path, "%s/%s", dir, nm) >= (int)sizeof path ||
			       snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", nm) >= (int)sizeof sub;
		struct stat st;
		size_t len = strlen(nm);
		if (rc || too_long || nm[0] == '.' || stat(path, &st) != 0)
			;
		else if (S_ISDIR(st.st_mode)) {
			if (is_model_dir(path))
				rc = add_entry(r, sub, path, err, cap) ? 0 : -1;
			else
				rc = scan(r, root, sub, depth + 1, err, cap);
		} else if (S_ISREG(st.st_mode) && len > 5 && !strcmp(nm + len - 5, ".gguf")) {
			sub[strlen(sub) - 5] = 0;
			rc = add_entry(r, sub, path, err, cap) ? 0 : -1;
		}
		free(list[i]);
	}
	free(list);
	return rc;
}

static int cfg_int(json_t *v, const char *where, const char *key, long lo, long hi, int *out, char *err, size_t cap)
{
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return fail(err, cap, "%s.%s must be an integer from %ld to %ld", where, key, lo, hi);
	*out = (int)json_integer_value(v);
	return 0;
}

static int check_sampling(json_t *v, const char *where, char *err, size_t cap)
{
	if (!json_is_object(v))
		return fail(err, cap, "%s.sampling must be an object", where);
	const char *k;
	json_t *x;
	json_object_foreach(v, k, x)
	{
		int i = 0;
		while (REG_SAMPLING_KEYS[i] && strcmp(REG_SAMPLING_KEYS[i], k))
			i++;
		if (!REG_SAMPLING_KEYS[i])
			return fail(err, cap, "%s.sampling.%s: unknown key (known: temperature, top_p, top_k, min_p, "
				    "presence_penalty, frequency_penalty, repetition_penalty, seed, max_tokens, stop)", where, k);
		if (!strcmp(k, "stop")) {
			int ok = json_is_string(x) || json_is_array(x);
			for (size_t j = 0; ok && json_is_array(x) && j < json_array_size(x); j++)
				ok = json_is_string(json_array_get(x, j));
			if (!ok)
				return fail(err, cap, "%s.sampling.stop must be a string or a list of strings", where);
		} else if (!json_is_number(x) || json_number_value(x) < SAMPLING_RANGE[i][0] ||
			   json_number_value(x) > SAMPLING_RANGE[i][1]) {
			return fail(err, cap, "%s.sampling.%s must be a number from %g to %g", where, k, SAMPLING_RANGE[i][0],
				    SAMPLING_RANGE[i][1]);
		}
	}
	return 0;
}

static char *read_text(const char *path, char *err, size_t cap, const char *key)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fail(err, cap, "%s: %s: %s", key, path, strerror(errno));
		return NULL;
	}
	size_t n = 0, c = 4096;
	char *s = malloc(c);
	size_t k;
	while (s && (k = fread(s + n, 1, c - n - 1, f)) > 0) {
		n += k;
		if (n + 1 == c) {
			char *t = realloc(s, c *= 2);
			if (!t) {
				free(s);
				s = NULL;
			}
			s = t;
		}
	}
	fclose(f);
	if (s)
		s[n] = 0;
	return s;
}

/* a configured chat template must parse: a start-up error otherwise */
static int check_template(const char *src, const char *where, const char *key, char *err, size_t cap)
{
	struct tmpl *t = NULL;
	char e[512];
	if (tmpl_parse(src, strlen(src), where, &t, e) != 0)
		return fail(err, cap, "%s.%s: %s", where, key, e);
	tmpl_free(t);
	return 0;
}

/* One settings object (a model's, or "defaults"); `allow_path` for models. */
static int apply_cfg(struct model_cfg *c, json_t *o, const char *where, const char *base_dir, char *err, size_t cap)
{
	if (!json_is_object(o))
		return fail(err, cap, "%s must be an object", where);
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		int rc = 0;
		if (!strcmp(k, "path"))
			rc = json_is_string(v) ? 0 : fail(err, cap, "%s.path must be a string", where);
		else if (!strcmp(k, "alias")) {
			json_t *one = json_is_string(v) ? v : NULL;
			size_t n = one ? 1 : json_array_size(v);
			if ((!one && !json_is_array(v)) || n > REG_MAX_ALIASES)
				return fail(err, cap, "%s.alias must be a name or a list of at most %d names", where,
					    REG_MAX_ALIASES);
			for (size_t i = 0; i < n; i++) {
				json_t *a = one ? one : json_array_get(v, i);
				if (!json_is_string(a) || !json_string_length(a) || json_string_length(a) >= 128)
					return fail(err, cap, "%s.alias must hold non-empty names shorter than 128 bytes", where);
				c->aliases[c->n_aliases++] = strdup(json_string_value(a));
			}
		} else if (!strcmp(k, "context_length"))
			rc = cfg_int(v, where, k, 16, 1 << 24, &c->context_length, err, cap);
		else if (!strcmp(k, "kv_tokens"))
			rc = cfg_int(v, where, k, 16, 1 << 26, &c->kv_tokens, err, cap);
		else if (!strcmp(k, "parallel"))
			rc = cfg_int(v, where, k, 1, 4096, &c->parallel, err, cap);
		else if (!strcmp(k, "queue"))
			rc = cfg_int(v, where, k, 1, 1 << 20, &c->queue, err, cap);
		else if (!strcmp(k, "kv_dtype")) {
			const char *d = json_string_value(v);
			if (!d || (strcmp(d, "f16") && strcmp(d, "f32") && strcmp(d, "q8_0")))
				return fail(err, cap, "%s.kv_dtype must be \"f16\", \"f32\" or \"q8_0\"", where);
			free((char *)c->kv_dtype);
			c->kv_dtype = strdup(d);
		} else if (!strcmp(k, "device")) {
			const char *d = json_string_value(v);
			if (!d || (strcmp(d, "cpu") && strcmp(d, "cuda") &&
				   !(!strncmp(d, "cuda:", 5) && d[5] && strspn(d + 5, "0123456789") == strlen(d + 5))))
				return fail(err, cap, "%s.device must be \"cpu\", \"cuda\" or \"cuda:N\"", where);
			c->device = strdup(d);
		} else if (!strcmp(k, "keep_alive")) {
			if (parse_duration(v, &c->keep_alive))
				return fail(err, cap, "%s.keep_alive must be seconds or a duration like \"30s\", \"5m\", \"1h\", -1 "
					    "(forever)", where);
		} else if (!strcmp(k, "sampling")) {
			if ((rc = check_sampling(v, where, err, cap)) == 0) {
				json_decref(c->sampling);
				c->sampling = json_deep_copy(v);
			}
		} else if (!strcmp(k, "chat_template")) {
			if (!json_is_string(v))
				return fail(err, cap, "%s.chat_template must be a string (the template's text)", where);
			free(c->chat_template);
			c->chat_template = strdup(json_string_value(v));
			rc = check_template(c->chat_template, where, k, err, cap);
		} else if (!strcmp(k, "chat_template_file")) {
			char p[PATH_MAX], key[300];
			if (!json_is_string(v))
				return fail(err, cap, "%s.chat_template_file must be a path", where);
			const char *f = json_string_value(v);
			snprintf(p, sizeof p, "%s%s%s", f[0] == '/' ? "" : base_dir, f[0] == '/' ? "" : "/", f);
			snprintf(key, sizeof key, "%s.chat_template_file", where);
			free(c->chat_template);
			if (!(c->chat_template = read_text(p, err, cap, key)))
				return -1;
			rc = check_template(c->chat_template, where, k, err, cap);
		} else if (!strcmp(k, "preload")) {
			if (!json_is_boolean(v))
				return fail(err, cap, "%s.preload must be true or false", where);
			c->preload = json_is_true(v);
		} else
			return fail(err, cap, "%s.%s: unknown key (known: path, alias, context_length, kv_tokens, kv_dtype, "
				    "parallel, queue, device, keep_alive, sampling, chat_template, chat_template_file, preload)",
				    where, k);
		if (rc)
			return rc;
	}
	return 0;
}

static void cfg_free(struct model_cfg *c)
{
	json_decref(c->sampling);
	free(c->chat_template);
	free((char *)c->device);
	free((char *)c->kv_dtype);
	for (int i = 0; i < c->n_aliases; i++)
		free(c->aliases[i]);
}

/* a copy of the defaults, then the model's own keys over it */
static void cfg_copy(struct model_cfg *dst, const struct model_cfg *src)
{
	*dst = *src;
	dst->sampling = src->sampling ? json_deep_copy(src->sampling) : NULL;
	dst->chat_template = src->chat_template ? strdup(src->chat_template) : NULL;
	dst->device = src->device ? strdup(src->device) : NULL;
	dst->kv_dtype = src->kv_dtype ? strdup(src->kv_dtype) : NULL;
	dst->n_aliases = 0;
}

static int load_config(struct registry *r, const char *path, char *err, size_t cap)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	if (!root)
		return fail(err, cap, "--config %s: line %d column %d: %s", path, je.line, je.column, je.text);
	char base[PATH_MAX];
	snprintf(base, sizeof base, "%s", path);
	char *slash = strrchr(base, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(base, sizeof base, ".");
	int rc = 0;
	struct model_cfg defaults;
	memset(&defaults, 0, sizeof defaults);
	defaults.keep_alive = NAN;
	const char *k;
	json_t *v;
	if (!json_is_object(root))
		rc = fail(err, cap, "--config %s: the file must hold a JSON object with a \"models\" object", path);
	json_object_foreach(root, k, v)
	{
		if (rc)
			break;
		if (strcmp(k, "models") && strcmp(k, "defaults"))
			rc = fail(err, cap, "--config %s: %s: unknown key (known: models, defaults)", path, k);
		else if (!json_is_object(v))
			rc = fail(err, cap, "--config %s: %s must be an object", path, k);
	}
	json_t *d = json_object_get(root, "defaults");
	if (!rc && d) {
		if (json_object_get(d, "path") || json_object_get(d, "alias"))
			rc = fail(err, cap, "--config %s: defaults: path and alias belong to a model", path);
		else
			rc = apply_cfg(&defaults, d, "defaults", base, err, cap);
	}
	json_object_foreach(json_object_get(root, "models"), k, v)
	{
		if (rc)
			break;
		char where[200];
		snprintf(where, sizeof where, "models.%.150s", k);
		if (!json_is_object(v)) {
			rc = fail(err, cap, "--config %s: %s must be an object", path, where);
			break;
		}
		struct model_entry *e = NULL;
		for (int i = 0; i < r->n && !e; i++)
			if (!strcmp(r->e[i].name, k))
				e = &r->e[i];
		json_t *p = json_object_get(v, "path");
		if (e && p) {
			rc = fail(err, cap, "--config %s: %s.path: a model named '%s' is already given (%s)", path, where, k, e->path);
			break;
		}
		if (!e && !json_is_string(p)) {
			rc = fail(err, cap, "--config %s: %s: no model of that name (from --model or --models-dir) and no "
				  "\"path\"", path, where);
			break;
		}
		if (!e) {
			char full[PATH_MAX];
			const char *f = json_string_value(p);
			struct stat st;
			if (snprintf(full, sizeof full, "%s%s%s", f[0] == '/' ? "" : base, f[0] == '/' ? "" : "/", f) >=
				    (int)sizeof full ||
			    stat(full, &st) != 0) {
				rc = fail(err, cap, "--config %s: %s.path: %s: %s", path, where, full, strerror(errno));
				break;
			}
			if (!(e = add_entry(r, k, full, err, cap))) {
				rc = -1;
				break;
			}
			e->cfg.preload = 1; /* named in the configuration: served from the start */
		}
		int preload = e->cfg.preload;
		cfg_free(&e->cfg);
		cfg_copy(&e->cfg, &defaults);
		e->cfg.preload = preload;
		char msg[512];
		if ((rc = apply_cfg(&e->cfg, v, where, base, msg, sizeof msg))) {
			fail(err, cap, "--config %s: %s", path, msg);
			break;
		}
	}
	if (!rc && d) { /* defaults reach the models the file does not name */
		for (int i = 0; i < r->n; i++) {
			if (json_object_get(json_object_get(root, "models"), r->e[i].name))
				continue;
			int preload = r->e[i].cfg.preload;
			cfg_free(&r->e[i].cfg);
			cfg_copy(&r->e[i].cfg, &defaults);
			r->e[i].cfg.preload = preload;
		}
	}
	if (rc && strncmp(err, "--config", 8)) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", err);
		fail(err, cap, "--config %s: %s", path, msg);
	}
	cfg_free(&defaults);
	json_decref(root);
	return rc;
}

int registry_build(const struct serve_opts *o, struct registry *r, char *err, size_t cap)
{
	memset(r, 0, sizeof *r);
	for (int i = 0; i < o->n_models; i++) {
		const char *spec = o->models[i], *eq = strchr(spec, '=');
		const char *path = eq ? eq + 1 : spec;
		char name[128];
		if (eq)
			snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
		else {
			const char *base = strrchr(path, '/');
			snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : path);
		}
		if (!*name || !*path) {
			registry_free(r);
			return fail(err, cap, "--model \"%s\": give [NAME=]PATH", spec);
		}
		struct model_entry *e = add_entry(r, name, path, err, cap);
		if (!e) {
			registry_free(r);
			return -1;
		}
		e->cfg.preload = 1;
	}
	if (o->models_dir && scan(r, o->models_dir, "", 0, err, cap)) {
		registry_free(r);
		return -1;
	}
	if (o->config_path && load_config(r, o->config_path, err, cap)) {
		registry_free(r);
		return -1;
	}
	/* aliases are names too: unique across the list */
	for (int i = 0; i < r->n; i++)
		for (int a = 0; a < r->e[i].cfg.n_aliases; a++)
			for (int j = 0; j < r->n; j++) {
				const char *al = r->e[i].cfg.aliases[a];
				int clash = !strcmp(r->e[j].name, al);
				for (int b = 0; !clash && b < r->e[j].cfg.n_aliases; b++)
					clash = (j != i || b != a) && !strcmp(r->e[j].cfg.aliases[b], al);
				if (clash) {
					fail(err, cap, "--config: alias '%s' of model '%s' is already the name of model '%s'", al,
					     r->e[i].name, r->e[j].name);
					registry_free(r);
					return -1;
				}
			}
	if (!r->n) {
		registry_free(r);
		return fail(err, cap, o->models_dir ? "no models: --models-dir %s holds no .gguf file or model directory"
						    : "give at least one --model [NAME=]PATH, --models-dir DIR or --config FILE",
			    o->models_dir);
	}
	return 0;
}

void registry_free(struct registry *r)
{
	for (int i = 0; i < r->n; i++) {
		cfg_free(&r->e[i].cfg);
		free(r->e[i].path);
	}
	free(r->e);
	memset(r, 0, sizeof *r);
}
