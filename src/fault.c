/*
 * fault.c — the fault injection hooks (see fault.h); empty unless built
 * with -DINFERD_FAULTS. The specification is parsed once, on first use,
 * under a once-flag; afterwards it is read-only, so any thread may call
 * fault_hit. The worker generation is an atomic set before any worker
 * thread starts.
 */
#include "fault.h"

#ifdef INFERD_FAULTS
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ACT_SEGV, ACT_ABORT, ACT_EXIT, ACT_HANG, ACT_FAIL, ACT_SLEEP };

struct fault {
	int action, point, gen;
	long step;
	char model[128];
	atomic_int fired; /* a failing step fails once (the step is retried) */
};

static struct fault faults[16];
static int n_faults;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_int generation = 1;

static int parse_one(char *s, struct fault *f)
{
	memset(f, 0, sizeof *f);
	f->point = -1;
	/* shorthands */
	if (!strcmp(s, "startcrash")) {
		f->action = ACT_SEGV;
		f->point = FAULT_AT_START;
		return 0;
	}
	char *at = strchr(s, '@');
	if (!at)
		return -1;
	*at = 0;
	const char *act = s;
	if (!strcmp(act, "segv") || !strcmp(act, "crash"))
		f->action = ACT_SEGV;
	else if (!strcmp(act, "abort"))
		f->action = ACT_ABORT;
	else if (!strcmp(act, "exit"))
		f->action = ACT_EXIT;
	else if (!strcmp(act, "hang"))
		f->action = ACT_HANG;
	else if (!strcmp(act, "fail"))
		f->action = ACT_FAIL;
	else if (!strcmp(act, "sleep"))
		f->action = ACT_SLEEP;
	else if (!strcmp(act, "loadfail")) {
		f->action = ACT_FAIL;
		f->point = FAULT_AT_LOAD;
	} else if (!strcmp(act, "allocfail")) {
		f->action = ACT_FAIL;
		f->point = FAULT_AT_STEP;
	} else
		return -1;
	for (char *save = NULL, *kv = strtok_r(at + 1, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		if (!strcmp(kv, "start"))
			f->point = FAULT_AT_START;
		else if (!strcmp(kv, "load"))
			f->point = FAULT_AT_LOAD;
		else if (!strncmp(kv, "step=", 5)) {
			f->point = FAULT_AT_STEP;
			f->step = atol(kv + 5);
		} else if (!strncmp(kv, "model=", 6)) {
			snprintf(f->model, sizeof f->model, "%s", kv + 6);
			if (f->point < 0)
				f->point = FAULT_AT_LOAD;
		} else if (!strncmp(kv, "gen=", 4))
			f->gen = atoi(kv + 4);
		else
			return -1;
	}
	return f->point < 0 ? -1 : 0;
}

static void parse_all(void)
{
	const char *env = getenv("INFERD_FAULT");
	if (!env || !*env)
		return;
	char *copy = strdup(env);
	for (char *save = NULL, *one = strtok_r(copy, ";", &save); one && n_faults < 16; one = strtok_r(NULL, ";", &save)) {
		char buf[256];
		snprintf(buf, sizeof buf, "%s", one);
		if (parse_one(buf, &faults[n_faults]) == 0)
			n_faults++;
		else
			fprintf(stderr, "inferd: INFERD_FAULT: cannot parse \"%s\"\n", one);
	}
	free(copy);
}

void fault_set_generation(int gen)
{
	atomic_store(&generation, gen);
}

static int model_matches(const char *want, const char *model)
{
	if (!want[0])
		return 1;
	if (!model)
		return 0;
	const char *base = strrchr(model, '/');
	return !strcmp(want, model) || (base && !strcmp(want, base + 1));
}

int fault_hit(int point, const char *model, long step)
{
	pthread_once(&once, parse_all);
	for (int i = 0; i < n_faults; i++) {
		struct fault *f = &faults[i];
		if (f->point != point || (f->gen && f->gen != atomic_load(&generation)) || !model_matches(f->model, model) ||
		    (point == FAULT_AT_STEP && f->step != step))
			continue;
		if (f->action == ACT_FAIL && point == FAULT_AT_STEP && atomic_exchange(&f->fired, 1))
			continue;
		fprintf(stderr, "inferd: INFERD_FAULT: injecting %s at %s%s%s (step %ld, worker %d)\n",
			(const char *[]){"segv", "abort", "exit", "hang", "fail", "sleep"}[f->action],
			point == FAULT_AT_START ? "start" : point == FAULT_AT_LOAD ? "load" : "step", model ? " of " : "",
			model ? model : "", step, atomic_load(&generation));
		switch (f->action) {
		case ACT_SEGV:
			signal(SIGSEGV, SIG_DFL); /* a real death by signal, also under the sanitizers */
			raise(SIGSEGV);
			break;
		case ACT_ABORT:
			signal(SIGABRT, SIG_DFL);
			abort();
		case ACT_EXIT:
			_exit(3);
		case ACT_HANG:
			for (;;)
				pause();
		case ACT_FAIL:
			return 1;
		case ACT_SLEEP:
			usleep(1500000);
			break;
		}
	}
	return 0;
}
#else
typedef int fault_unused_t; /* ISO C wants something in a translation unit */
#endif
