// loco run: the peer daemon (node/run.h).
#include <stdio.h>
#include <string.h>

#include "node/cli.h"
#include "node/control.h"
#include "node/run.h"

int cmd_run(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loco run -c FILE [--set section.key=value]...\n"
                   "  Runs a peer: joins the swarm from [bootstrap] seed (and the peer cache), keeps\n"
                   "  membership by gossip, and trains when [train] steps > 0 (resuming from the newest\n"
                   "  checkpoint). [node] key names the identity (loco keygen). Ctrl-C or SIGTERM leaves\n"
                   "  the swarm cleanly: checkpoint written, leave announced, exit 0.\n");
            return 0;
        }
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 1);
    if (rc) return rc;
    for (int i = 0; i < argc; i++)
        if (argv[i]) return cli_usage_error("run", "unexpected argument '%s'", argv[i]);
    if (!cfg.key[0]) {
        fprintf(stderr, "loco run: %s: [node] key is not set (create one with 'loco keygen --out FILE')\n", cfg.source);
        return 2;
    }
#ifndef LOCO_CUDA
    if (strcmp(cfg.device, "cpu") != 0) {
        fprintf(stderr, "loco run: [train] device = %s: this binary was built without the GPU backend "
                "(rebuild with make CUDA=1)\n", cfg.device);
        return 2;
    }
#endif
    char ctl[CONFIG_PATH_MAX + 32], why[1400];
    if (control_path(&cfg, ctl, sizeof ctl, why, sizeof why) != 0) { // [node] control: node/control.h
        fprintf(stderr, "loco run: %s: %s\n", cfg.source, why);
        return 2;
    }
    cli_catch_stop();
    return run_node(&cfg, &cli_stop);
}
