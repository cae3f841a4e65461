// loco: a peer node for low-bandwidth, decentralized training of GPT models.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} s_cmds[] = {
    {"data", cmd_data, "turn text into byte-level token shards"},
    {"train", cmd_train, "train a model on this machine alone"},
    {"run", cmd_run, "run a peer: join the swarm, keep membership, train"},
    {"status", cmd_status, "ask the running peer of a config what it is doing (local control socket)"},
    {"swarm", cmd_swarm, "run a swarm of N peers on this machine (the demo), then their losses"},
    {"eval", cmd_eval, "validation loss of a checkpoint"},
    {"export", cmd_export, "write a checkpoint's weights as Hugging Face GPT-2 safetensors"},
    {"sample", cmd_sample, "generate text from a checkpoint"},
    {"keygen", cmd_keygen, "create a peer identity key (Ed25519)"},
    {"admit", cmd_admit, "sign a ticket admitting a peer id to a run"},
    {"doctor", cmd_doctor, "check that this node can join its run (key, config, listen, seeds, reachability)"},
    {"plan", cmd_plan, "place pipeline stages and replicas on a cluster's nodes and NICs (cost model, search)"},
    {"plot", cmd_plot, "draw metrics JSONL files (loss, utilisation, bytes sent) as a PNG with gnuplot"},
    {"net-test", cmd_net_test, "transport test helper (serve / send reference tensors)"},
};

static void s_usage(FILE *f) {
    fprintf(f, "usage: loco COMMAND [options]   (loco COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", s_cmds[i].name, s_cmds[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        s_usage(argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++)
        if (!strcmp(argv[1], s_cmds[i].name)) exit(s_cmds[i].fn(argc - 2, argv + 2));
    fprintf(stderr, "loco: unknown command '%s'\n", argv[1]);
    s_usage(stderr);
    exit(2);
}
