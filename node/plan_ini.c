// The cluster description `loco plan -c FILE` reads (docs/plan-example.ini documents it).
#include "node/plan_ini.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/identity.h"
#include "node/config.h"

#define INI_LINE_MAX 1024
#define INI_FILE_MAX (1 << 20)

static char *s_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

typedef struct {
    const char *unit;
    double mult;
} unit_t;

// A number with an optional unit from `units` (case-sensitive, a blank between them allowed).
// `what` names the kind for the error. Returns 0 or -1 with the reason in why.
static int s_quantity(const char *text, const unit_t *units, const char *what, double *out, char *why, size_t wl) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno == ERANGE || !isfinite(v)) {
        snprintf(why, wl, "'%s' is not a %s", text, what);
        return -1;
    }
    while (*end == ' ' || *end == '\t') end++;
    double mult = 1;
    if (*end) {
        int found = 0;
        for (const unit_t *u = units; u->unit; u++)
            if (!strcmp(end, u->unit)) {
                mult = u->mult;
                found = 1;
                break;
            }
        if (!found) {
            char list[200] = "";
            size_t at = 0;
            for (const unit_t *u = units; u->unit && at + 12 < sizeof list; u++)
                at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", at ? " " : "", u->unit);
            snprintf(why, wl, "'%s': unknown unit '%s' for a %s (use %s)", text, end, what, list);
            return -1;
        }
    }
    if (v < 0) {
        snprintf(why, wl, "'%s': a %s cannot be negative", text, what);
        return -1;
    }
    *out = v * mult;
    return 0;
}

static const unit_t s_bw_units[] = {
    {"B/s", 1},         {"kB/s", 1e3},       {"MB/s", 1e6},         {"GB/s", 1e9},         {"TB/s", 1e12},
    {"KiB/s", 1024.0},  {"MiB/s", 1048576.0}, {"GiB/s", 1073741824.0}, {"bit/s", 0.125},    {"kbit/s", 125.0},
    {"Mbit/s", 125e3},  {"Gbit/s", 125e6},   {"Tbit/s", 125e9},     {"kb/s", 125.0},       {"Mb/s", 125e3},
    {"Gb/s", 125e6},    {"Tb/s", 125e9},     {NULL, 0}};
static const unit_t s_time_units[] = {{"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}, {NULL, 0}};
static const unit_t s_mem_units[] = {{"B", 1},           {"kB", 1e3},           {"MB", 1e6},
                                     {"GB", 1e9},        {"TB", 1e12},          {"KiB", 1024.0},
                                     {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
                                     {NULL, 0}};
static const unit_t s_flops_units[] = {{"FLOP/s", 1},     {"k", 1e3},         {"M", 1e6},         {"G", 1e9},
                                       {"T", 1e12},       {"P", 1e15},        {"kFLOP/s", 1e3},   {"MFLOP/s", 1e6},
                                       {"GFLOP/s", 1e9},  {"TFLOP/s", 1e12},  {"PFLOP/s", 1e15},  {NULL, 0}};

static int s_island_index(plan_cluster_t *c, const char *name, int create) {
    for (int i = 0; i < c->n_islands; i++)
        if (!strcmp(c->island[i], name)) return i;
    if (!create || c->n_islands >= PLAN_MAX_ISLANDS || strlen(name) >= sizeof c->island[0]) return -1;
    snprintf(c->island[c->n_islands], sizeof c->island[0], "%s", name);
    return c->n_islands++;
}

static int s_name_ok(const char *s, size_t max) {
    if (!*s || strlen(s) > max) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return 0;
    return 1;
}

// "id = HEX" from a loco key file or its .pub.
static int s_read_key_id(const char *path, uint8_t id[32], char *why, size_t wl) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, wl, "key file %.300s: cannot open: %.60s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        char *s = s_trim(line);
        if (strncmp(s, "id", 2) != 0) continue;
        s = s_trim(s + 2);
        if (*s != '=') continue;
        s = s_trim(s + 1);
        if (net_id_from_hex(s, id) == 0) rc = 0;
        break;
    }
    fclose(f);
    if (rc != 0) snprintf(why, wl, "key file %.300s: no 'id = <64 hex>' line", path);
    return rc;
}

int plan_key_file_id(const char *path, uint8_t id[32], char *err, size_t errlen) {
    return s_read_key_id(path, id, err, errlen);
}

typedef enum { SEC_NONE, SEC_MODEL, SEC_TRAIN, SEC_OUTER, SEC_ISLAND, SEC_LINK, SEC_NODE, SEC_PAIR } sec_t;

typedef struct {
    int have_island, have_flops, have_mem;
    int have_peer_id;    // peer = ID@tcp://...: checked against id/key (or taken as the id) at the end
    uint8_t peer_id[32];
} node_seen_t;

// A [pair A B] section, resolved to node indices once every node is known (they may come later).
#define INI_MAX_PAIR_SECTIONS (PLAN_CL_MAX_NODES * PLAN_CL_MAX_NODES) // every node's --probe-out merged
typedef struct {
    char a[32], b[32];
    double bw, lat;
    int have_bw, have_lat, line;
} pair_sec_t;

int plan_cluster_parse(const char *text, size_t len, const char *source, plan_cluster_t *c, char *err,
                       size_t errlen) {
    static loco_config_t cfg; // large; only [model] is used
    memset(c, 0, sizeof *c);
    config_defaults(&cfg);
    c->micro_batch = 1;
    c->micro_batches = 8;
    c->schedule = PLAN_1F1B;
    c->algorithm = PLAN_DILOCO;
    c->inner_steps = 50;
    c->codec_bytes = 4;
    c->overlap = 0;
    c->calib_block = c->calib_head = 1;
    node_seen_t seen[PLAN_CL_MAX_NODES];
    memset(seen, 0, sizeof seen);
    static pair_sec_t pairs[INI_MAX_PAIR_SECTIONS]; // large: off the stack, like cfg
    int n_pairs = 0;
    int node_line[PLAN_CL_MAX_NODES] = {0};
    if (!source) source = "(cluster)";
    if (len > INI_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %d bytes", source, INI_FILE_MAX);
        return -1;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", source);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else dir[0] = '\0';

    sec_t sec = SEC_NONE;
    int cur = -1, isl_a = -1, isl_b = -1, lineno = 0;
    size_t pos = 0;
    char line[INI_LINE_MAX + 1], why[400];
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        lineno++;
        char shown[120];
        size_t sn = n < sizeof shown - 1 ? n : sizeof shown - 1;
        for (size_t i = 0; i < sn; i++) {
            unsigned char ch = (unsigned char)text[pos + i];
            shown[i] = isprint(ch) ? (char)ch : '?';
        }
        shown[sn] = '\0';
        pos += n + (nl ? 1 : 0);
        int rc = 0;
        why[0] = '\0';
        if (n > INI_LINE_MAX) {
            snprintf(why, sizeof why, "line longer than %d characters", INI_LINE_MAX);
            rc = -1;
            goto done;
        }
        if (memchr(text + pos - n - (nl ? 1 : 0), '\0', n)) {
            snprintf(why, sizeof why, "NUL byte in line");
            rc = -1;
            goto done;
        }
        memcpy(line, text + pos - n - (nl ? 1 : 0), n);
        line[n] = '\0';
        // '#' or ';' at the start, or after a blank, starts a comment.
        for (char *p = line; *p; p++)
            if ((*p == '#' || *p == ';') && (p == line || isspace((unsigned char)p[-1]))) {
                *p = '\0';
                break;
            }
        char *s = s_trim(line);
        if (!*s) continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || *s_trim(close + 1)) {
                snprintf(why, sizeof why, "malformed section header (expected [name] or [kind NAME])");
                rc = -1;
                goto done;
            }
            *close = '\0';
            char *inner = s_trim(s + 1), *kind = inner, *arg = NULL, *arg2 = NULL;
            char *sp = strpbrk(inner, " \t");
            if (sp) {
                *sp = '\0';
                arg = s_trim(sp + 1);
                char *sp2 = strpbrk(arg, " \t");
                if (sp2) {
                    *sp2 = '\0';
                    arg2 = s_trim(sp2 + 1);
                }
            }
            if (!strcmp(kind, "model") || !strcmp(kind, "train") || !strcmp(kind, "outer")) {
                if (arg) {
                    snprintf(why, sizeof why, "[%s] takes no name", kind);
                    rc = -1;
                    goto done;
                }
                sec = !strcmp(kind, "model") ? SEC_MODEL : !strcmp(kind, "train") ? SEC_TRAIN : SEC_OUTER;
            } else if (!strcmp(kind, "island")) {
                if (!arg || arg2 || !s_name_ok(arg, 31)) {
                    snprintf(why, sizeof why, "expected [island NAME] (NAME: 1-31 characters of [A-Za-z0-9._-])");
                    rc = -1;
                    goto done;
                }
                if ((isl_a = s_island_index(c, arg, 1)) < 0) {
                    snprintf(why, sizeof why, "more than %d islands", PLAN_MAX_ISLANDS);
                    rc = -1;
                    goto done;
                }
                sec = SEC_ISLAND;
            } else if (!strcmp(kind, "link")) {
                if (!arg || !arg2 || strpbrk(arg2, " \t") || !s_name_ok(arg, 31) || !s_name_ok(arg2, 31) ||
                    !strcmp(arg, arg2)) {
                    snprintf(why, sizeof why, "expected [link ISLAND1 ISLAND2] with two different islands");
                    rc = -1;
                    goto done;
                }
                isl_a = s_island_index(c, arg, 1);
                isl_b = s_island_index(c, arg2, 1);
                if (isl_a < 0 || isl_b < 0) {
                    snprintf(why, sizeof why, "more than %d islands", PLAN_MAX_ISLANDS);
                    rc = -1;
                    goto done;
                }
                sec = SEC_LINK;
            } else if (!strcmp(kind, "node")) {
                if (!arg || arg2 || !s_name_ok(arg, 31)) {
                    snprintf(why, sizeof why, "expected [node NAME] (NAME: 1-31 characters of [A-Za-z0-9._-])");
                    rc = -1;
                    goto done;
                }
                for (int i = 0; i < c->n_nodes; i++)
                    if (!strcmp(c->node[i].name, arg)) {
                        snprintf(why, sizeof why, "node %s is described twice (first on line %d)", arg, node_line[i]);
                        rc = -1;
                        goto done;
                    }
                if (c->n_nodes >= PLAN_CL_MAX_NODES) {
                    snprintf(why, sizeof why, "more than %d nodes", PLAN_CL_MAX_NODES);
                    rc = -1;
                    goto done;
                }
                cur = c->n_nodes++;
                node_line[cur] = lineno;
                snprintf(c->node[cur].name, sizeof c->node[cur].name, "%s", arg);
                c->node[cur].island = -1;
                sec = SEC_NODE;
            } else if (!strcmp(kind, "pair")) {
                if (!arg || !arg2 || strpbrk(arg2, " \t") || !s_name_ok(arg, 31) || !s_name_ok(arg2, 31) ||
                    !strcmp(arg, arg2)) {
                    snprintf(why, sizeof why, "expected [pair NODE1 NODE2] with two different nodes");
                    rc = -1;
                    goto done;
                }
                if (n_pairs >= INI_MAX_PAIR_SECTIONS) {
                    snprintf(why, sizeof why, "more than %d [pair] sections", INI_MAX_PAIR_SECTIONS);
                    rc = -1;
                    goto done;
                }
                pair_sec_t *ps = &pairs[n_pairs++];
                memset(ps, 0, sizeof *ps);
                snprintf(ps->a, sizeof ps->a, "%s", arg);
                snprintf(ps->b, sizeof ps->b, "%s", arg2);
                ps->line = lineno;
                sec = SEC_PAIR;
            } else {
                snprintf(why, sizeof why,
                         "unknown section [%s] (known: [model] [train] [outer] [island NAME] [link A B] [node NAME] "
                         "[pair NODE1 NODE2])",
                         kind);
                rc = -1;
                goto done;
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(why, sizeof why, "expected 'key = value'");
            rc = -1;
            goto done;
        }
        *eq = '\0';
        char *key = s_trim(s), *val = s_trim(eq + 1);
        switch (sec) {
        case SEC_NONE:
            snprintf(why, sizeof why, "key outside any [section]");
            rc = -1;
            break;
        case SEC_MODEL: {
            char assign[1200], e2[600];
            snprintf(assign, sizeof assign, "model.%s=%s", key, val);
            if (config_set(&cfg, assign, e2, sizeof e2) != 0) {
                // "--set model.x=y: reason" → the reason
                const char *r = strstr(e2, ": ");
                snprintf(why, sizeof why, "%.390s", r ? r + 2 : e2);
                rc = -1;
            }
            break;
        }
        case SEC_TRAIN: {
            double v;
            if (!strcmp(key, "micro_batch") || !strcmp(key, "micro_batches")) {
                char *end;
                errno = 0;
                long x = strtol(val, &end, 10);
                if (*val == '\0' || *end || errno || x < 1 || x > (1 << 20)) {
                    snprintf(why, sizeof why, "%s: '%s' is not an integer in [1, %d]", key, val, 1 << 20);
                    rc = -1;
                } else if (!strcmp(key, "micro_batch")) {
                    c->micro_batch = (int)x;
                } else {
                    c->micro_batches = (int)x;
                }
            } else if (!strcmp(key, "schedule")) {
                if (!strcmp(val, "1f1b")) c->schedule = PLAN_1F1B;
                else if (!strcmp(val, "gpipe")) c->schedule = PLAN_GPIPE;
                else snprintf(why, sizeof why, "schedule: '%s' is not 1f1b or gpipe", val), rc = -1;
            } else if (!strcmp(key, "calib_block") || !strcmp(key, "calib_head")) {
                static const unit_t none[] = {{NULL, 0}};
                if (s_quantity(val, none, "factor", &v, why, sizeof why) != 0 || !(v > 0)) {
                    if (!why[0]) snprintf(why, sizeof why, "%s must be > 0", key);
                    rc = -1;
                } else if (!strcmp(key, "calib_block")) {
                    c->calib_block = v;
                } else {
                    c->calib_head = v;
                }
            } else {
                snprintf(why, sizeof why,
                         "unknown key '%s' in [train] (micro_batch, micro_batches, schedule, calib_block, calib_head)",
                         key);
                rc = -1;
            }
            break;
        }
        case SEC_OUTER:
            if (!strcmp(key, "algorithm")) {
                if (!strcmp(val, "diloco")) c->algorithm = PLAN_DILOCO;
                else if (!strcmp(val, "noloco")) c->algorithm = PLAN_NOLOCO;
                else snprintf(why, sizeof why, "algorithm: '%s' is not diloco or noloco", val), rc = -1;
            } else if (!strcmp(key, "inner_steps")) {
                char *end;
                errno = 0;
                long x = strtol(val, &end, 10);
                if (*val == '\0' || *end || errno || x < 1 || x > 1000000000) {
                    snprintf(why, sizeof why, "inner_steps: '%s' is not an integer in [1, 1e9]", val);
                    rc = -1;
                } else {
                    c->inner_steps = (int)x;
                }
            } else if (!strcmp(key, "codec")) {
                if (!strcmp(val, "fp32")) c->codec_bytes = 4;
                else if (!strcmp(val, "bf16")) c->codec_bytes = 2;
                else if (!strcmp(val, "int8")) c->codec_bytes = 1;
                else if (!strcmp(val, "int4")) c->codec_bytes = 0.5;
                else {
                    static const unit_t none[] = {{NULL, 0}};
                    double v;
                    if (s_quantity(val, none, "codec", &v, why, sizeof why) != 0 || !(v > 0) || v > 16) {
                        snprintf(why, sizeof why, "codec: '%s' is not fp32, bf16, int8, int4 or bytes per parameter (0-16]",
                                 val);
                        rc = -1;
                    } else {
                        c->codec_bytes = v;
                    }
                }
            } else if (!strcmp(key, "overlap")) {
                if (!strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1")) c->overlap = 1;
                else if (!strcmp(val, "off") || !strcmp(val, "no") || !strcmp(val, "false") || !strcmp(val, "0"))
                    c->overlap = 0;
                else snprintf(why, sizeof why, "overlap: '%s' is not on/off", val), rc = -1;
            } else {
                snprintf(why, sizeof why, "unknown key '%s' in [outer] (algorithm, inner_steps, codec, overlap)", key);
                rc = -1;
            }
            break;
        case SEC_ISLAND:
        case SEC_LINK: {
            plan_fabric_t *f = sec == SEC_ISLAND ? &c->fabric[isl_a][isl_a] : &c->fabric[isl_a][isl_b];
            double v;
            if (!strcmp(key, "bandwidth")) {
                if (s_quantity(val, s_bw_units, "bandwidth", &v, why, sizeof why) != 0) rc = -1;
                else if (!(v > 0)) snprintf(why, sizeof why, "bandwidth must be > 0"), rc = -1;
                else f->bw = v;
            } else if (!strcmp(key, "latency")) {
                if (s_quantity(val, s_time_units, "latency", &v, why, sizeof why) != 0) rc = -1;
                else f->lat = v;
            } else {
                snprintf(why, sizeof why, "unknown key '%s' in [%s] (bandwidth, latency)", key,
                         sec == SEC_ISLAND ? "island" : "link");
                rc = -1;
            }
            if (rc == 0 && sec == SEC_LINK) c->fabric[isl_b][isl_a] = *f;
            break;
        }
        case SEC_PAIR: {
            pair_sec_t *ps = &pairs[n_pairs - 1];
            if (!strcmp(key, "bandwidth")) {
                if (s_quantity(val, s_bw_units, "bandwidth", &ps->bw, why, sizeof why) != 0) rc = -1;
                else if (!(ps->bw > 0)) snprintf(why, sizeof why, "bandwidth must be > 0"), rc = -1;
                else ps->have_bw = 1;
            } else if (!strcmp(key, "latency")) {
                if (s_quantity(val, s_time_units, "latency", &ps->lat, why, sizeof why) != 0) rc = -1;
                else ps->have_lat = 1;
            } else {
                snprintf(why, sizeof why, "unknown key '%s' in [pair] (bandwidth, latency)", key);
                rc = -1;
            }
            break;
        }
        case SEC_NODE: {
            plan_cnode_t *nd = &c->node[cur];
            if (!strcmp(key, "island")) {
                if (!s_name_ok(val, 31)) {
                    snprintf(why, sizeof why, "island: '%s' is not a name of [A-Za-z0-9._-]", val);
                    rc = -1;
                } else if ((nd->island = s_island_index(c, val, 1)) < 0) {
                    snprintf(why, sizeof why, "more than %d islands", PLAN_MAX_ISLANDS);
                    rc = -1;
                } else {
                    seen[cur].have_island = 1;
                }
            } else if (!strcmp(key, "id")) {
                if (net_id_from_hex(val, nd->id) != 0) {
                    snprintf(why, sizeof why, "id: not 64 hex digits (a peer id, as `loco keygen` prints)");
                    rc = -1;
                } else {
                    nd->has_id = 1;
                }
            } else if (!strcmp(key, "key")) {
                char path[2048];
                if (val[0] == '/' || !dir[0]) snprintf(path, sizeof path, "%s", val);
                else snprintf(path, sizeof path, "%s%s", dir, val);
                if (s_read_key_id(path, nd->id, why, sizeof why) != 0) rc = -1;
                else nd->has_id = 1;
            } else if (!strcmp(key, "peer")) {
                // peer = [ID@]tcp://host:port: where the node's `loco run` listens (for --probe)
                const char *at = strchr(val, '@'), *ep = at ? at + 1 : val;
                if (at && (at - val != 64 || net_hex_decode(val, 64, seen[cur].peer_id) != 0)) {
                    snprintf(why, sizeof why, "peer: '%.*s' before '@' is not a peer id (64 hex digits)",
                             (int)(at - val > 80 ? 80 : at - val), val);
                    rc = -1;
                } else if (!plan_endpoint_ok(ep) || strlen(ep) >= sizeof nd->peer) {
                    snprintf(why, sizeof why, "peer: '%.200s' is not [ID@]tcp://host:port (port 1-65535)", val);
                    rc = -1;
                } else {
                    snprintf(nd->peer, sizeof nd->peer, "%s", ep);
                    seen[cur].have_peer_id = at != NULL;
                }
            } else if (!strcmp(key, "device")) {
                if (strlen(val) >= sizeof nd->device) {
                    snprintf(why, sizeof why, "device: longer than %zu characters", sizeof nd->device - 1);
                    rc = -1;
                } else {
                    snprintf(nd->device, sizeof nd->device, "%s", val);
                }
            } else if (!strcmp(key, "flops")) {
                if (s_quantity(val, s_flops_units, "FLOP/s figure", &nd->flops, why, sizeof why) != 0) rc = -1;
                else if (!(nd->flops > 0)) snprintf(why, sizeof why, "flops must be > 0"), rc = -1;
                else seen[cur].have_flops = 1;
            } else if (!strcmp(key, "memory")) {
                if (s_quantity(val, s_mem_units, "memory size", &nd->mem, why, sizeof why) != 0) rc = -1;
                else if (!(nd->mem > 0)) snprintf(why, sizeof why, "memory must be > 0"), rc = -1;
                else seen[cur].have_mem = 1;
            } else if (!strcmp(key, "nic")) {
                // nic = NAME ENDPOINT BANDWIDTH LATENCY [local|global]
                char buf[INI_LINE_MAX + 1], *tok[6];
                snprintf(buf, sizeof buf, "%s", val);
                int nt = 0;
                for (char *p = strtok(buf, " \t"); p && nt < 6; p = strtok(NULL, " \t")) tok[nt++] = p;
                if (nd->n_nics >= PLAN_MAX_NICS) {
                    snprintf(why, sizeof why, "more than %d NICs", PLAN_MAX_NICS);
                    rc = -1;
                } else if (nt < 4 || nt > 5) {
                    snprintf(why, sizeof why, "nic: expected NAME ENDPOINT BANDWIDTH LATENCY [local|global]");
                    rc = -1;
                } else {
                    plan_nic_t *nic = &nd->nic[nd->n_nics];
                    memset(nic, 0, sizeof *nic);
                    if (!s_name_ok(tok[0], sizeof nic->name - 1)) {
                        snprintf(why, sizeof why, "nic: name '%s' must be 1-%zu characters of [A-Za-z0-9._-]", tok[0],
                                 sizeof nic->name - 1);
                        rc = -1;
                    } else if (!plan_endpoint_ok(tok[1]) || strlen(tok[1]) >= sizeof nic->endpoint) {
                        snprintf(why, sizeof why, "nic %s: endpoint '%.200s' is not tcp://host:port (port 1-65535)",
                                 tok[0], tok[1]);
                        rc = -1;
                    } else if (s_quantity(tok[2], s_bw_units, "bandwidth", &nic->bw, why, sizeof why) != 0 ||
                               s_quantity(tok[3], s_time_units, "latency", &nic->lat, why, sizeof why) != 0) {
                        rc = -1;
                    } else if (!(nic->bw > 0)) {
                        snprintf(why, sizeof why, "nic %s: bandwidth must be > 0", tok[0]);
                        rc = -1;
                    } else if (nt == 5 && strcmp(tok[4], "local") && strcmp(tok[4], "global")) {
                        snprintf(why, sizeof why, "nic %s: '%s' is not local or global", tok[0], tok[4]);
                        rc = -1;
                    } else {
                        snprintf(nic->name, sizeof nic->name, "%s", tok[0]);
                        snprintf(nic->endpoint, sizeof nic->endpoint, "%s", tok[1]);
                        nic->local = nt == 5 && !strcmp(tok[4], "local");
                        nd->n_nics++;
                    }
                }
            } else {
                snprintf(why, sizeof why,
                         "unknown key '%s' in [node] (island, id, key, peer, device, flops, memory, nic)", key);
                rc = -1;
            }
            break;
        }
        }
    done:
        if (rc != 0) {
            snprintf(err, errlen, "%s:%d: %s\n  > %s", source, lineno, why, shown);
            return -1;
        }
    }
    c->model = cfg.model;
    if (c->n_nodes == 0) {
        snprintf(err, errlen, "%s: no [node NAME] section", source);
        return -1;
    }
    for (int i = 0; i < c->n_nodes; i++) {
        const char *miss = !seen[i].have_island ? "island" : !seen[i].have_flops ? "flops" : !seen[i].have_mem ? "memory"
                           : c->node[i].n_nics == 0 ? "nic" : NULL;
        if (miss) {
            snprintf(err, errlen, "%s:%d: node %s has no '%s'", source, node_line[i], c->node[i].name, miss);
            return -1;
        }
        plan_cnode_t *nd = &c->node[i];
        if (seen[i].have_peer_id && nd->has_id && memcmp(seen[i].peer_id, nd->id, 32) != 0) {
            snprintf(err, errlen, "%s:%d: node %s: the id in 'peer' is not the node's id (id or key)", source,
                     node_line[i], nd->name);
            return -1;
        }
        if (seen[i].have_peer_id && !nd->has_id) {
            memcpy(nd->id, seen[i].peer_id, 32);
            nd->has_id = 1;
        }
    }
    // [pair A B]: figures for two nodes; a pair named twice (every node's --probe-out appended)
    // keeps the slower figures, as traffic goes both ways.
    for (int k = 0; k < n_pairs; k++) {
        const pair_sec_t *ps = &pairs[k];
        int a = -1, b = -1;
        for (int i = 0; i < c->n_nodes; i++) {
            if (!strcmp(c->node[i].name, ps->a)) a = i;
            if (!strcmp(c->node[i].name, ps->b)) b = i;
        }
        if (a < 0 || b < 0) {
            snprintf(err, errlen, "%s:%d: [pair %s %s]: no [node %s] in the description", source, ps->line, ps->a,
                     ps->b, a < 0 ? ps->a : ps->b);
            return -1;
        }
        if (!ps->have_bw || !ps->have_lat) {
            snprintf(err, errlen, "%s:%d: [pair %s %s] has no '%s'", source, ps->line, ps->a, ps->b,
                     !ps->have_bw ? "bandwidth" : "latency");
            return -1;
        }
        plan_fabric_t f = {ps->bw, ps->lat}, *old = &c->pair[a][b];
        if (old->bw > 0) f.bw = fmin(f.bw, old->bw), f.lat = fmax(f.lat, old->lat);
        c->pair[a][b] = c->pair[b][a] = f;
    }
    // Two nodes with one peer id, or one endpoint, are a copy-paste slip the plan file would refuse.
    for (int i = 0; i < c->n_nodes; i++)
        for (int j = 0; j < i; j++) {
            const plan_cnode_t *x = &c->node[i], *y = &c->node[j];
            if (x->has_id && y->has_id && !memcmp(x->id, y->id, 32)) {
                snprintf(err, errlen, "%s:%d: nodes %s and %s have the same peer id", source, node_line[i], y->name,
                         x->name);
                return -1;
            }
            if (x->peer[0] && !strcmp(x->peer, y->peer)) {
                snprintf(err, errlen, "%s:%d: nodes %s and %s have the same peer endpoint %.150s", source,
                         node_line[i], y->name, x->name, x->peer);
                return -1;
            }
            for (int a = 0; a < x->n_nics; a++)
                for (int b = 0; b < y->n_nics; b++)
                    if (!strcmp(x->nic[a].endpoint, y->nic[b].endpoint)) {
                        snprintf(err, errlen, "%s:%d: node %s's NIC %s has node %s's endpoint %.150s", source,
                                 node_line[i], x->name, x->nic[a].name, y->name, x->nic[a].endpoint);
                        return -1;
                    }
        }
    // Every pair of islands with nodes needs a declared link (a missing one is almost always a typo).
    for (int a = 0; a < c->n_islands; a++)
        for (int b = a + 1; b < c->n_islands; b++) {
            int na = 0, nb = 0;
            for (int i = 0; i < c->n_nodes; i++) na += c->node[i].island == a, nb += c->node[i].island == b;
            if (na && nb && !(c->fabric[a][b].bw > 0)) {
                snprintf(err, errlen, "%s: no [link %s %s] with a bandwidth: how do islands %s and %s reach each other?",
                         source, c->island[a], c->island[b], c->island[a], c->island[b]);
                return -1;
            }
        }
    if (plan_cluster_check(c, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", source, why);
        return -1;
    }
    return 0;
}

int plan_cluster_load(const char *path, plan_cluster_t *c, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(INI_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, INI_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    } else if (n > INI_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, INI_FILE_MAX);
        rc = -1;
    } else {
        rc = plan_cluster_parse(buf, n, path, c, err, errlen);
    }
    free(buf);
    return rc;
}
