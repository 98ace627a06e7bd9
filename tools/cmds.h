/*
 * cmds.h — subcommands of the inferd command line that live in their own
 * files (tools/cmd_*.c). Each takes the whole argv (argv[0] "inferd",
 * argv[1] the command name) and returns the process exit code: 0 success,
 * 1 bad model or input (message on stderr), 2 bad usage.
 */
#ifndef INFERD_CMDS_H
#define INFERD_CMDS_H

/* inferd template: render a model's chat template for a conversation */
int cmd_template(int argc, char **argv);
/* inferd batch: offline batch inference through the engine (cmd_batch.c). */
int cmd_batch(int argc, char **argv);
/* inferd bench: prompt and generation tokens/s, peak RSS (cmd_bench.c). */
int cmd_bench(int argc, char **argv);
/* inferd serve: the OpenAI-compatible HTTP server (cmd_serve.c, server/). */
int cmd_serve(int argc, char **argv);

/* -t above the online CPUs, on the CPU: a warning on stderr that says what
 * it costs (inferd.c); the command goes on with the threads asked for */
void warn_threads(const char *cmd, long threads, const char *device);

#endif
