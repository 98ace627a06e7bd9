/*
 * fault.h — fault injection for the supervision tests, compiled in only
 * with -DINFERD_FAULTS (the test binary build/tests/inferd-faults). In the
 * production build every hook is the constant 0 and no fault code or
 * fault string exists in the binary.
 *
 * The faults come from one environment variable (its name is spelt in
 * fault.c only), a ';'-separated list of ACTION@POINT[,model=NAME][,gen=G]:
 *   ACTION  segv (also: crash), abort, exit (status 3), hang (sleep forever
 *           on the thread that reached the point), fail (the point returns
 *           an error: a model load fails, a step's allocation fails once),
 *           sleep (1.5 s, then go on: a slow model load)
 *   POINT   start (worker start-up), load (a model load), step=N (the
 *           executor's Nth forward step, counting from 1, per model)
 *   model=NAME  only this model (API name, file name or path)
 *   gen=G       only in the Gth worker the supervisor started (from 1)
 * Shorthands: startcrash = segv@start, loadfail@model=X = fail@load,model=X,
 * allocfail@step=N = fail@step=N.
 */
#ifndef INFERD_FAULT_H
#define INFERD_FAULT_H

enum { FAULT_AT_START, FAULT_AT_LOAD, FAULT_AT_STEP };

#ifdef INFERD_FAULTS
/* Check a fault point. Crashes, exits or hangs here when a matching fault
 * says so; returns 1 when the caller must fail (the "fail" action), 0
 * otherwise. `model` may be NULL; `step` is used for FAULT_AT_STEP. */
int fault_hit(int point, const char *model, long step);
/* The worker generation faults match gen= against (the supervisor sets it
 * in each worker it starts; 1 when unsupervised). */
void fault_set_generation(int gen);
#else
static inline int fault_hit(int point, const char *model, long step)
{
	(void)point;
	(void)model;
	(void)step;
	return 0;
}
static inline void fault_set_generation(int gen)
{
	(void)gen;
}
#endif

#endif
