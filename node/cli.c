#include "node/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "node/log.h"

volatile sig_atomic_t cli_stop;

static void s_on_stop(int sig) {
    (void)sig;
    cli_stop = 1;
}

void cli_catch_stop(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    fprintf(stderr, "loco %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'loco %s --help')\n", cmd);
    return 2;
}

int cli_load_config(loco_config_t *cfg, int argc, char **argv, int require_file) {
    config_defaults(cfg);
    char err[1536];
    const char *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (argv[i] && (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loco: %s needs a file\n", argv[i]);
                return 2;
            }
            file = argv[i + 1];
            argv[i] = argv[i + 1] = NULL;
            i++;
        }
    }
    if (!file && require_file) {
        fprintf(stderr, "loco: a config file is required (-c FILE)\n");
        return 2;
    }
    if (file && config_load(cfg, file, err, sizeof err) != 0) {
        fprintf(stderr, "loco: config error: %s\n", err);
        return 2;
    }
    for (int i = 0; i < argc; i++) {
        if (argv[i] && !strcmp(argv[i], "--init")) { // sugar for --set train.init=FILE
            if (i + 1 >= argc || !argv[i + 1]) {
                fprintf(stderr, "loco: --init needs a safetensors file\n");
                return 2;
            }
            snprintf(cfg->init, sizeof cfg->init, "%s", argv[i + 1]);
            argv[i] = argv[i + 1] = NULL;
            continue;
        }
        if (argv[i] && !strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loco: --set needs section.key=value\n");
                return 2;
            }
            if (config_set(cfg, argv[i + 1], err, sizeof err) != 0) {
                fprintf(stderr, "loco: config error: %s\n", err);
                return 2;
            }
            argv[i] = argv[i + 1] = NULL;
            i++;
        }
    }
    if (config_validate(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "loco: config error: %s\n", err);
        return 2;
    }
    log_set_level(cfg->log_level);
    return 0;
}
