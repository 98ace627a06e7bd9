/*
 * exec.h — the executor's lifecycle (exec.c). Started by inferd_model_open
 * after the backend and tokenizer; stopped by inferd_model_close, which
 * ends every request still queued or running with a CANCELLED event.
 */
#ifndef INFERD_EXEC_H
#define INFERD_EXEC_H

#include "inferd.h"

int exec_start(inferd_model_t *m, const struct inferd_model_opts *o, char *err);
void exec_stop(inferd_model_t *m);

#endif
