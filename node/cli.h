// Subcommands of the loco binary. Each takes the arguments after its name and returns the process
// exit code: 0 ok, 1 runtime failure, 2 usage or config error. Only main() calls exit().
#ifndef LOCO_NODE_CLI_H
#define LOCO_NODE_CLI_H

#include <signal.h>

#include "node/config.h"

int cmd_data(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_keygen(int argc, char **argv);  // node/cmd_net.c
int cmd_admit(int argc, char **argv);
int cmd_net_test(int argc, char **argv); // test helper for tests/integration/test_net_*.sh
int cmd_doctor(int argc, char **argv);   // node/cmd_doctor.c
int cmd_swarm(int argc, char **argv);    // node/cmd_swarm.c
int cmd_plan(int argc, char **argv);     // node/cmd_plan.c
int cmd_status(int argc, char **argv);   // node/cmd_status.c
int cmd_plot(int argc, char **argv);     // node/cmd_plot.c

// node/cmd_model.c: the element-wise mean of the model weights of n checkpoints (each a file or a
// directory: its newest complete checkpoint), as `loco export` writes it and `loco swarm` evaluates
// it. which = "params" (local θ), "anchor" (φ; a checkpoint without one is an error) or NULL (φ
// where a checkpoint has it, else θ). All must share one model config, else -1 with both files and
// the differing field named. On success *cfg is the config and *out (caller frees) the mean.
int cli_mean_weights(const char *const *cks, int n, const char *which, gpt_config_t *cfg, float **out,
                     char *err, size_t errlen);

// Shared option handling: "-c FILE" and "--set section.key=value" (repeatable), applied in order
// over the defaults, then validated. Other options are left for the caller: argv entries consumed
// here are set to NULL. Returns 0, or 2 after printing the error.
int cli_load_config(loco_config_t *cfg, int argc, char **argv, int require_file);

// SIGINT and SIGTERM set this flag (installed by cli_catch_stop); long-running commands poll it
// and stop cleanly. SIGPIPE is ignored so a dropped connection is an error return, not a death.
extern volatile sig_atomic_t cli_stop;
void cli_catch_stop(void);

// Prints "loco CMD: message" to stderr and returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
