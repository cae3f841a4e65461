// loco status: asks the running `loco run` of a config over its control socket (node/control.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli.h"
#include "node/control.h"

int cmd_status(int argc, char **argv) {
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loco status [-c FILE] [--set section.key=value]... [--json]\n"
                   "  Asks the `loco run` node of this config, over its local control socket ([node] control,\n"
                   "  by default CHECKPOINT_DIR/control/loco.sock), what it is doing: peer id, run, round, step,\n"
                   "  loss, tokens/s, utilisation, members by state, group, bytes, last checkpoint and its age,\n"
                   "  catch-up. --json prints one JSON object for scripts. Only the node's user and root are\n"
                   "  answered. Exit 0, or 1 when no node is running for the config (or it refused).\n");
            return 0;
        }
        if (!strcmp(argv[i], "--json")) {
            json = 1;
            argv[i] = NULL;
        }
    }
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 0);
    if (rc) return rc;
    for (int i = 0; i < argc; i++)
        if (argv[i]) return cli_usage_error("status", "unexpected argument '%s'", argv[i]);
    char path[CONFIG_PATH_MAX + 32], err[1400];
    if (control_path(&cfg, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "loco status: %s: %s\n", cfg.source, err);
        return 2;
    }
    if (!path[0]) {
        fprintf(stderr, "loco status: %s: [node] control = off: the node has no control socket to ask\n", cfg.source);
        return 2;
    }
    char *answer = NULL;
    rc = control_query(path, json ? "status json" : "status", 5000, &answer, err, sizeof err);
    if (rc == -1) {
        fprintf(stderr, "loco status: no loco node is running for %s: %s\n", cfg.source, err);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "loco status: cannot ask the node of %s: %s\n", cfg.source, err);
        return 1;
    }
    if (!strncmp(answer, "error: ", 7)) {
        fprintf(stderr, "loco status: the node at %s says: %s", path, answer + 7);
        free(answer);
        return 1;
    }
    fputs(answer, stdout);
    free(answer);
    return 0;
}
