/* Subcommands of the memfold command. Each takes (argc, argv) with argv[0] = its name and returns
 * the process exit code: 0 success, 1 failure (message on stderr), 2 usage error. */
#ifndef MF_APPS_COMMANDS_H
#define MF_APPS_COMMANDS_H

#include <stdio.h>

typedef struct {
    const char *name;
    const char *help;
    int (*run)(int argc, char **argv);
} mf_command;

int mf_cmd_version(int argc, char **argv);
int mf_cmd_verify(int argc, char **argv);
int mf_cmd_config(int argc, char **argv);
int mf_cmd_bench(int argc, char **argv);
int mf_cmd_eval(int argc, char **argv);
int mf_cmd_featurize(int argc, char **argv);
int mf_cmd_inspect(int argc, char **argv);
int mf_cmd_predict(int argc, char **argv);
int mf_cmd_train_step(int argc, char **argv);
int mf_cmd_train(int argc, char **argv);
int mf_cmd_memplan(int argc, char **argv);
int mf_cmd_ablate(int argc, char **argv);

/* Prints "memfold <cmd>: <message>" for the last error and returns 1. */
int mf_report_error(const char *cmd);

#endif
