#include "node/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/http_metrics.h"
#include "node/window.h"

// K_LIST: repeatable key (config_list_t); each line appends one value, an empty value adds none.
typedef enum { K_INT, K_I64, K_FLOAT, K_STR, K_BOOL, K_ENUM, K_LIST } key_type_t;

typedef struct {
    const char *section, *key;
    key_type_t type;
    size_t offset, size;   // size: buffer size for K_STR/K_ENUM
    double min, max;       // numeric range
    const char *def;       // default, as text (parsed at config_defaults)
    const char *choices;   // K_ENUM: "a|b|c"
} key_spec_t;

#define OFF(field) offsetof(loco_config_t, field), sizeof(((loco_config_t *)0)->field)

static const key_spec_t s_keys[] = {
    {"run", "name", K_STR, OFF(run_name), 0, 0, "loco", NULL},
    {"node", "log_level", K_ENUM, OFF(log_level), 0, 0, "info", "debug|info|warn|error"},
    {"model", "layers", K_INT, OFF(model.layers), 1, 1024, "4", NULL},
    {"model", "d_model", K_INT, OFF(model.d_model), 1, 65536, "128", NULL},
    {"model", "heads", K_INT, OFF(model.heads), 1, 1024, "4", NULL},
    {"model", "seq_len", K_INT, OFF(model.seq_len), 1, 65536, "128", NULL},
    {"model", "vocab", K_INT, OFF(model.vocab), 2, 65536, "256", NULL},
    {"train", "data", K_STR, OFF(data), 0, 0, "data/fortunes", NULL},
    {"train", "batch", K_INT, OFF(batch), 1, 1 << 20, "16", NULL},
    {"train", "steps", K_I64, OFF(steps), 0, 1e15, "2000", NULL},
    {"train", "lr", K_FLOAT, OFF(lr), 0, 10, "3e-3", NULL},
    {"train", "lr_min", K_FLOAT, OFF(lr_min), 0, 10, "3e-4", NULL},
    {"train", "warmup", K_I64, OFF(warmup), 0, 1e15, "100", NULL},
    {"train", "weight_decay", K_FLOAT, OFF(weight_decay), 0, 10, "0.1", NULL},
    {"train", "grad_clip", K_FLOAT, OFF(grad_clip), 0, 1e9, "1.0", NULL},
    {"train", "beta1", K_FLOAT, OFF(beta1), 0, 0.999999, "0.9", NULL},
    {"train", "beta2", K_FLOAT, OFF(beta2), 0, 0.999999, "0.95", NULL},
    {"train", "eps", K_FLOAT, OFF(eps), 0, 1, "1e-8", NULL},
    {"train", "init", K_STR, OFF(init), 0, 0, "", NULL},
    {"train", "seed", K_I64, OFF(seed), 0, 9.2e18, "1337", NULL},
    {"train", "data_stream", K_I64, OFF(data_stream), -1, 9.2e18, "-1", NULL},
    {"train", "threads", K_INT, OFF(threads), 1, 1024, "2", NULL},
    {"train", "active", K_STR, OFF(train_active), 0, 0, "", NULL},
    {"train", "checkpoint_dir", K_STR, OFF(checkpoint_dir), 0, 0, "checkpoints", NULL},
    {"train", "checkpoint_every", K_I64, OFF(checkpoint_every), 0, 1e15, "500", NULL},
    {"train", "checkpoint_keep", K_INT, OFF(checkpoint_keep), 1, 1000000, "3", NULL},
    {"train", "eval_every", K_I64, OFF(eval_every), 0, 1e15, "100", NULL},
    {"train", "eval_batches", K_INT, OFF(eval_batches), 1, 1000000, "20", NULL},
    {"train", "metrics", K_STR, OFF(metrics), 0, 0, "", NULL},
    {"train", "device", K_ENUM, OFF(device), 0, 0, "cpu", "cpu|cuda"},
    {"train", "device_index", K_INT, OFF(device_index), 0, 64, "0", NULL},
    {"train", "tf32", K_BOOL, OFF(tf32), 0, 0, "on", NULL},
    // identity, admission, transport (net/)
    {"node", "key", K_STR, OFF(key), 0, 0, "", NULL},
    {"node", "ticket", K_STR, OFF(ticket), 0, 0, "", NULL},
    {"run", "admission", K_ENUM, OFF(admission), 0, 0, "open", "open|allowlist|ticket"},
    {"run", "allow", K_LIST, OFF(allow), 0, 0, "", NULL},
    {"run", "deny", K_LIST, OFF(deny), 0, 0, "", NULL},
    {"run", "authority", K_STR, OFF(authority), 0, 0, "", NULL},
    {"net", "listen", K_STR, OFF(net_listen), 0, 0, "tcp://0.0.0.0:7700", NULL},
    {"net", "chunk_size", K_I64, OFF(chunk_size), 65536, 67108864, "4194304", NULL},
    {"net", "hwm", K_INT, OFF(hwm), 1, 100000, "16", NULL},
    {"net", "advertise", K_STR, OFF(net_advertise), 0, 0, "", NULL},
    {"net", "reachable", K_ENUM, OFF(net_reachable), 0, 0, "auto", "auto|yes|no"},
    {"gossip", "period_ms", K_INT, OFF(gossip_period_ms), 50, 600000, "1000", NULL},
    {"gossip", "ack_timeout_ms", K_INT, OFF(gossip_ack_timeout_ms), 10, 600000, "300", NULL},
    {"gossip", "indirect_probes", K_INT, OFF(gossip_indirect_k), 0, 16, "3", NULL},
    {"gossip", "suspicion_mult", K_FLOAT, OFF(gossip_suspicion_mult), 1, 100, "4", NULL},
    {"gossip", "sync_interval_ms", K_INT, OFF(gossip_sync_interval_ms), 100, 3600000, "10000", NULL},
    {"bootstrap", "seed", K_LIST, OFF(seeds), 0, 0, "", NULL},
    {"node", "peer_cache", K_STR, OFF(peer_cache), 0, 0, "peers.cache", NULL},
    {"node", "control", K_STR, OFF(control), 0, 0, "", NULL},
    {"metrics", "listen", K_STR, OFF(metrics_listen), 0, 0, "", NULL},
    {"outer", "algorithm", K_ENUM, OFF(outer_algorithm), 0, 0, "noloco", "diloco|noloco"},
    {"outer", "inner_steps", K_I64, OFF(inner_steps), 1, 1e12, "50", NULL},
    {"outer", "lr", K_FLOAT, OFF(outer_lr), 0, 10, "0.7", NULL},
    {"outer", "momentum", K_FLOAT, OFF(outer_momentum), -1, 0.999999, "-1", NULL},
    {"outer", "group_size", K_INT, OFF(group_size), 1, 1024, "2", NULL},
    {"outer", "codec", K_ENUM, OFF(outer_codec), 0, 0, "fp32", "fp32|bf16|int8|int4"},
    {"outer", "error_feedback", K_BOOL, OFF(error_feedback), 0, 0, "on", NULL},
    {"outer", "deadline_ms", K_INT, OFF(deadline_ms), 0, 86400000, "0", NULL},
    {"outer", "overlap", K_BOOL, OFF(overlap), 0, 0, "off", NULL},
    {"outer", "co2_gap_penalty", K_FLOAT, OFF(co2_gap_penalty), 1, 1000, "1", NULL},
    {"outer", "co2_clip", K_FLOAT, OFF(co2_clip), 0, 1e9, "0", NULL},
    {"outer", "max_norm_ratio", K_FLOAT, OFF(max_norm_ratio), 0, 1e9, "10", NULL},
    {"pipeline", "plan", K_STR, OFF(pipeline_plan), 0, 0, "", NULL},
    {"pipeline", "timeout_ms", K_INT, OFF(pipeline_timeout_ms), 100, 86400000, "10000", NULL},
    {"limits", "max_message", K_I64, OFF(max_message), 65536, 1073741824, "16777216", NULL},
    {"limits", "max_tensor", K_I64, OFF(max_tensor), 4, 4.6e18, "4294967296", NULL},
    {"limits", "max_inflight", K_INT, OFF(max_inflight), 1, 1024, "4", NULL},
    {"limits", "upload_rate", K_I64, OFF(upload_rate), 0, 1e12, "0", NULL},
    {"limits", "download_rate", K_I64, OFF(download_rate), 0, 1e12, "0", NULL},
};
#define NKEYS ((int)(sizeof s_keys / sizeof s_keys[0]))

int config_num_keys(void) { return NKEYS; }

const char *config_key_name(int i, char *buf, size_t len) {
    snprintf(buf, len, "%s.%s", s_keys[i].section, s_keys[i].key);
    return buf;
}

static const key_spec_t *s_find(const char *section, const char *key) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(s_keys[i].section, section) == 0 && strcmp(s_keys[i].key, key) == 0) return &s_keys[i];
    return NULL;
}

static int s_known_section(const char *section) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(s_keys[i].section, section) == 0) return 1;
    return 0;
}

// Parses value into the field of spec. Returns 0, or -1 with the reason in err.
static int s_assign(loco_config_t *c, const key_spec_t *k, const char *value, char *err, size_t errlen) {
    char *field = (char *)c + k->offset;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case K_INT:
    case K_I64: {
        long long v = strtoll(value, &end, 10);
        if (*value == '\0' || *end != '\0' || errno == ERANGE) {
            snprintf(err, errlen, "'%s' is not an integer", value);
            return -1;
        }
        if ((double)v < k->min || (double)v > k->max) {
            snprintf(err, errlen, "%lld is out of range [%.0f, %.0f]", v, k->min, k->max);
            return -1;
        }
        if (k->type == K_INT) *(int *)field = (int)v;
        else *(int64_t *)field = (int64_t)v;
        return 0;
    }
    case K_FLOAT: {
        double v = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v)) {
            snprintf(err, errlen, "'%s' is not a finite number", value);
            return -1;
        }
        if (v < k->min || v > k->max) {
            snprintf(err, errlen, "%g is out of range [%g, %g]", v, k->min, k->max);
            return -1;
        }
        *(float *)field = (float)v;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(value, "on") || !strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1")) {
            *(int *)field = 1;
        } else if (!strcmp(value, "off") || !strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0")) {
            *(int *)field = 0;
        } else {
            snprintf(err, errlen, "'%s' is not on/off", value);
            return -1;
        }
        return 0;
    case K_ENUM: {
        size_t vl = strlen(value);
        for (const char *p = k->choices; *p;) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == vl && strncmp(p, value, n) == 0) {
                snprintf(field, k->size, "%s", value);
                return 0;
            }
            p += n + (bar ? 1 : 0);
        }
        snprintf(err, errlen, "'%s' is not one of %s", value, k->choices);
        return -1;
    }
    case K_LIST: {
        config_list_t *l = (config_list_t *)field;
        if (*value == '\0') return 0;
        if (l->n >= CONFIG_LIST_MAX) {
            snprintf(err, errlen, "more than %d values", CONFIG_LIST_MAX);
            return -1;
        }
        if (strlen(value) >= sizeof l->item[0]) {
            snprintf(err, errlen, "value is longer than %zu characters", sizeof l->item[0] - 1);
            return -1;
        }
        snprintf(l->item[l->n++], sizeof l->item[0], "%s", value);
        return 0;
    }
    case K_STR:
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "value is longer than %zu characters", k->size - 1);
            return -1;
        }
        snprintf(field, k->size, "%s", value);
        return 0;
    }
    return -1;
}

void config_defaults(loco_config_t *c) {
    memset(c, 0, sizeof *c);
    char err[256];
    for (int i = 0; i < NKEYS; i++) {
        int rc = s_assign(c, &s_keys[i], s_keys[i].def, err, sizeof err);
        (void)rc; // defaults are valid by construction; test_config checks it
    }
    snprintf(c->source, sizeof c->source, "(defaults)");
}

static char *s_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int s_set_key(loco_config_t *c, const char *section, const char *key, const char *value,
                     char *reason, size_t rlen) {
    if (!s_known_section(section)) {
        snprintf(reason, rlen, "unknown section [%s]", section);
        return -1;
    }
    const key_spec_t *k = s_find(section, key);
    if (!k) {
        snprintf(reason, rlen, "unknown key '%s' in [%s]", key, section);
        return -1;
    }
    char why[200];
    if (s_assign(c, k, value, why, sizeof why) != 0) {
        snprintf(reason, rlen, "%s.%s: %s", section, key, why);
        return -1;
    }
    return 0;
}

int config_load(loco_config_t *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char line[4096], section[64] = "";
    int lineno = 0, rc = 0;
    char reason[512];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        char shown[256];
        snprintf(shown, sizeof shown, "%.*s", (int)(len && line[len - 1] == '\n' ? len - 1 : len), line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            snprintf(reason, sizeof reason, "line longer than %zu characters", sizeof line - 2);
            rc = -1;
        } else {
            char *s = s_trim(line);
            if (*s == '\0' || *s == '#' || *s == ';') continue;
            if (*s == '[') {
                char *close = strchr(s, ']');
                if (!close || *s_trim(close + 1) != '\0') {
                    snprintf(reason, sizeof reason, "malformed section header (expected [name])");
                    rc = -1;
                } else {
                    *close = '\0';
                    char *name = s_trim(s + 1);
                    if (!s_known_section(name)) {
                        snprintf(reason, sizeof reason, "unknown section [%s]", name);
                        rc = -1;
                    } else {
                        snprintf(section, sizeof section, "%s", name);
                    }
                }
            } else {
                char *eq = strchr(s, '=');
                if (!eq) {
                    snprintf(reason, sizeof reason, "expected 'key = value'");
                    rc = -1;
                } else if (!*section) {
                    snprintf(reason, sizeof reason, "key outside any [section]");
                    rc = -1;
                } else {
                    *eq = '\0';
                    char *key = s_trim(s), *value = s_trim(eq + 1);
                    // A '#' or ';' after whitespace starts a comment.
                    for (char *p = value; *p; p++) {
                        if ((*p == '#' || *p == ';') && p > value && isspace((unsigned char)p[-1])) {
                            *p = '\0';
                            value = s_trim(value);
                            break;
                        }
                    }
                    rc = s_set_key(c, section, key, value, reason, sizeof reason);
                }
            }
        }
        if (rc != 0) {
            snprintf(err, errlen, "%s:%d: %s\n  > %s", path, lineno, reason, shown);
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc == 0) snprintf(c->source, sizeof c->source, "%s", path);
    return rc;
}

int config_set(loco_config_t *c, const char *assignment, char *err, size_t errlen) {
    char buf[2048];
    if (strlen(assignment) >= sizeof buf) {
        snprintf(err, errlen, "--set %.40s...: too long", assignment);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", assignment);
    char *dot = strchr(buf, '.'), *eq = strchr(buf, '=');
    if (!dot || !eq || dot > eq) {
        snprintf(err, errlen, "--set %s: expected section.key=value", assignment);
        return -1;
    }
    *dot = '\0';
    *eq = '\0';
    char reason[512];
    if (s_set_key(c, s_trim(buf), s_trim(dot + 1), s_trim(eq + 1), reason, sizeof reason) != 0) {
        snprintf(err, errlen, "--set %s: %s", assignment, reason);
        return -1;
    }
    return 0;
}

int config_validate(const loco_config_t *c, char *err, size_t errlen) {
    char why[256];
    if (gpt_config_check(&c->model, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: [model] %s", c->source, why);
        return -1;
    }
    if (c->lr_min > c->lr) {
        snprintf(err, errlen, "%s: [train] lr_min (%g) is larger than lr (%g)", c->source, c->lr_min, c->lr);
        return -1;
    }
    if (c->outer_momentum < 0 && c->outer_momentum != -1) {
        snprintf(err, errlen, "%s: [outer] momentum (%g) must be in [0, 1), or -1 for the algorithm's default",
                 c->source, c->outer_momentum);
        return -1;
    }
    char why2[300];
    struct sockaddr_storage sa;
    socklen_t salen;
    int loopback;
    if (c->metrics_listen[0] && http_metrics_parse_listen(c->metrics_listen, &sa, &salen, &loopback, why2, sizeof why2) != 0) {
        snprintf(err, errlen, "%s: [metrics] listen = %s", c->source, why2);
        return -1;
    }
    window_t win;
    if (window_parse(&win, c->train_active, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: [train] active = %s", c->source, why);
        return -1;
    }
    if (!c->data[0]) {
        snprintf(err, errlen, "%s: [train] data is empty (expected a directory of token shards)", c->source);
        return -1;
    }
    return 0;
}
