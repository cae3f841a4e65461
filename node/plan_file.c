#include "node/plan_file.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/fingerprint.h"
#include "net/identity.h"

#define PLAN_LINE_MAX 1024
#define PLAN_FILE_MAX (1 << 20)
#define PLAN_MAX_TOKENS 8

static void s_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// Parses a decimal integer token in [lo, hi]. Returns 0 or -1 with the reason.
static int s_int(const char *tok, const char *what, long lo, long hi, int *out, char *why, size_t wl) {
    char *end = NULL;
    errno = 0;
    long v = strtol(tok, &end, 10);
    if (*tok == '\0' || *end != '\0' || errno == ERANGE || (!isdigit((unsigned char)tok[0]) && tok[0] != '-')) {
        snprintf(why, wl, "%s: '%s' is not an integer", what, tok);
        return -1;
    }
    if (v < lo || v > hi) {
        snprintf(why, wl, "%s: %ld is out of range [%ld, %ld]", what, v, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int s_real(const char *tok, const char *what, double *out, char *why, size_t wl) {
    char *end = NULL;
    errno = 0;
    double v = strtod(tok, &end);
    if (*tok == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0) {
        snprintf(why, wl, "%s: '%s' is not a finite number >= 0", what, tok);
        return -1;
    }
    *out = v;
    return 0;
}

static int s_name_ok(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return 0;
    return 1;
}

// "tcp://host:port" with a port in 1..65535 and no blanks.
int plan_endpoint_ok(const char *e) {
    if (strncmp(e, "tcp://", 6) != 0) return 0;
    const char *host = e + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host) return 0;
    for (const char *p = host; *p; p++)
        if (isspace((unsigned char)*p) || !isprint((unsigned char)*p)) return 0;
    const char *port = colon + 1;
    if (!*port || strlen(port) > 5) return 0;
    for (const char *p = port; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    long v = strtol(port, NULL, 10);
    return v >= 1 && v <= 65535;
}

static int s_node_cmp(const void *a, const void *b) {
    const plan_node_t *x = a, *y = b;
    if (x->stage != y->stage) return x->stage < y->stage ? -1 : 1;
    if (x->replica != y->replica) return x->replica < y->replica ? -1 : 1;
    return 0;
}

int plan_stage_window(plan_schedule_t schedule, int M, int S, int window, int s) {
    if (schedule == PLAN_GPIPE) return M;
    int w = (window > 0 ? window : S) - s;
    if (w < 1) w = 1;
    return w < M ? w : M;
}

int plan_validate(const plan_t *p, char *err, size_t errlen) {
    if (p->layers < 1 || p->layers > PLAN_MAX_LAYERS) {
        s_errf(err, errlen, "layers %d is out of range [1, %d]", p->layers, PLAN_MAX_LAYERS);
        return -1;
    }
    if (p->routing != PLAN_ROUTE_RANDOM && p->routing != PLAN_ROUTE_CHAIN) {
        s_errf(err, errlen, "unknown routing %d", (int)p->routing);
        return -1;
    }
    if (p->schedule != PLAN_1F1B && p->schedule != PLAN_GPIPE) {
        s_errf(err, errlen, "unknown schedule %d", (int)p->schedule);
        return -1;
    }
    if (p->micro_batch < 1 || p->micro_batches < 1) {
        s_errf(err, errlen, "micro_batch and micro_batches must be >= 1 (have %d and %d)", p->micro_batch,
               p->micro_batches);
        return -1;
    }
    if (p->window < 0 || p->window > p->micro_batches || (p->window && p->schedule != PLAN_1F1B)) {
        s_errf(err, errlen, "window %d: must be 1..micro_batches (%d), and only with schedule 1f1b", p->window,
               p->micro_batches);
        return -1;
    }
    if (p->n_stages < 1 || p->n_stages > PLAN_MAX_STAGES) {
        s_errf(err, errlen, "%d stages: need 1 to %d", p->n_stages, PLAN_MAX_STAGES);
        return -1;
    }
    if (p->n_stages > p->layers) {
        s_errf(err, errlen, "%d stages for %d layers: every stage needs at least one layer", p->n_stages, p->layers);
        return -1;
    }
    int at = 0;
    for (int s = 0; s < p->n_stages; s++) {
        const plan_stage_t *st = &p->stages[s];
        if (st->l0 != at) {
            s_errf(err, errlen, "stage %d starts at block %d, expected %d (stages must tile [0, %d) in order)", s,
                   st->l0, at, p->layers);
            return -1;
        }
        if (st->l1 <= st->l0) {
            s_errf(err, errlen, "stage %d: empty block range [%d, %d)", s, st->l0, st->l1);
            return -1;
        }
        at = st->l1;
    }
    if (at != p->layers) {
        s_errf(err, errlen, "stages end at block %d but the model has %d layers", at, p->layers);
        return -1;
    }
    if (p->n_nodes < 1 || p->n_nodes > PLAN_MAX_NODES) {
        s_errf(err, errlen, "%d nodes: need 1 to %d", p->n_nodes, PLAN_MAX_NODES);
        return -1;
    }
    for (int i = 0; i < p->n_nodes; i++) {
        const plan_node_t *n = &p->nodes[i];
        if (!memchr(n->name, '\0', sizeof n->name) || !s_name_ok(n->name)) {
            s_errf(err, errlen, "node %d: name must be 1-%zu characters of [A-Za-z0-9._-]", i, sizeof n->name - 1);
            return -1;
        }
        if (!memchr(n->endpoint, '\0', sizeof n->endpoint) || !plan_endpoint_ok(n->endpoint)) {
            s_errf(err, errlen, "node %s: endpoint must be tcp://host:port (port 1-65535)", n->name);
            return -1;
        }
        if (n->stage < 0 || n->stage >= p->n_stages) {
            s_errf(err, errlen, "node %s: stage %d does not exist (plan has %d stages)", n->name, n->stage,
                   p->n_stages);
            return -1;
        }
        if (n->replica < 0 || n->replica >= PLAN_MAX_NODES) {
            s_errf(err, errlen, "node %s: replica %d is out of range", n->name, n->replica);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            const plan_node_t *m = &p->nodes[j];
            if (!strcmp(m->name, n->name)) {
                s_errf(err, errlen, "node name %s appears twice", n->name);
                return -1;
            }
            if (!memcmp(m->id, n->id, 32)) {
                s_errf(err, errlen, "nodes %s and %s have the same peer id", m->name, n->name);
                return -1;
            }
            if (m->stage == n->stage && m->replica == n->replica) {
                s_errf(err, errlen, "nodes %s and %s are both replica %d of stage %d", m->name, n->name, n->replica,
                       n->stage);
                return -1;
            }
            if (!strcmp(m->endpoint, n->endpoint)) {
                s_errf(err, errlen, "nodes %s and %s share the endpoint %s", m->name, n->name, n->endpoint);
                return -1;
            }
        }
    }
    // Replicas of each stage are exactly 0..R-1: with (stage, replica) unique, the largest replica
    // number must be the count minus one.
    for (int s = 0; s < p->n_stages; s++) {
        int count = 0, maxr = -1;
        for (int i = 0; i < p->n_nodes; i++)
            if (p->nodes[i].stage == s) {
                count++;
                if (p->nodes[i].replica > maxr) maxr = p->nodes[i].replica;
            }
        if (count == 0) {
            s_errf(err, errlen, "stage %d has no node", s);
            return -1;
        }
        if (maxr != count - 1) {
            s_errf(err, errlen, "stage %d: replicas must be numbered 0..%d (found replica %d)", s, count - 1, maxr);
            return -1;
        }
    }
    if (!isfinite(p->predicted_step_s) || p->predicted_step_s < 0 || !isfinite(p->predicted_tokens_per_s) ||
        p->predicted_tokens_per_s < 0) {
        s_errf(err, errlen, "predicted figures must be finite and >= 0");
        return -1;
    }
    return 0;
}

// Splits s (modified) into blank-separated tokens. Returns the count, or PLAN_MAX_TOKENS + 1 if more.
static int s_tokens(char *s, char **tok) {
    int n = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (!*s) return n;
        if (n == PLAN_MAX_TOKENS) return n + 1;
        tok[n++] = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '\r') s++;
        if (*s) *s++ = '\0';
    }
}

enum { F_LAYERS = 1, F_SCHEDULE = 2, F_MB = 4, F_MBS = 8, F_STEP = 16, F_TOKS = 32, F_ROUTING = 64, F_WINDOW = 128 };

// One line (comment already stripped, tokenised). Returns 0 or -1 with the reason in why.
static int s_line(plan_t *p, char **tok, int nt, unsigned *seen, char *why, size_t wl) {
    const char *k = tok[0];
    int want = -1;
    unsigned flag = 0;
    if (!strcmp(k, "layers")) want = 2, flag = F_LAYERS;
    else if (!strcmp(k, "schedule")) want = 2, flag = F_SCHEDULE;
    else if (!strcmp(k, "micro_batch")) want = 2, flag = F_MB;
    else if (!strcmp(k, "micro_batches")) want = 2, flag = F_MBS;
    else if (!strcmp(k, "predicted_step_s")) want = 2, flag = F_STEP;
    else if (!strcmp(k, "predicted_tokens_per_s")) want = 2, flag = F_TOKS;
    else if (!strcmp(k, "routing")) want = 2, flag = F_ROUTING;
    else if (!strcmp(k, "window")) want = 2, flag = F_WINDOW;
    else if (!strcmp(k, "stage")) want = 4;
    else if (!strcmp(k, "node")) want = 6;
    else if (!strcmp(k, "loco-plan")) {
        snprintf(why, wl, "'loco-plan' header repeated");
        return -1;
    } else {
        snprintf(why, wl, "unknown keyword '%.40s'", k);
        return -1;
    }
    if (nt != want) {
        snprintf(why, wl, "'%s' takes %d field%s, found %d", k, want - 1, want == 2 ? "" : "s", nt - 1);
        return -1;
    }
    if (flag) {
        if (*seen & flag) {
            snprintf(why, wl, "'%s' given twice", k);
            return -1;
        }
        *seen |= flag;
    }
    switch (flag) {
    case F_LAYERS: return s_int(tok[1], "layers", 1, PLAN_MAX_LAYERS, &p->layers, why, wl);
    case F_MB: return s_int(tok[1], "micro_batch", 1, 1 << 20, &p->micro_batch, why, wl);
    case F_MBS: return s_int(tok[1], "micro_batches", 1, 1 << 20, &p->micro_batches, why, wl);
    case F_STEP: return s_real(tok[1], "predicted_step_s", &p->predicted_step_s, why, wl);
    case F_TOKS: return s_real(tok[1], "predicted_tokens_per_s", &p->predicted_tokens_per_s, why, wl);
    case F_WINDOW: return s_int(tok[1], "window", 1, 1 << 20, &p->window, why, wl);
    case F_ROUTING:
        if (!strcmp(tok[1], "random")) p->routing = PLAN_ROUTE_RANDOM;
        else if (!strcmp(tok[1], "chain")) p->routing = PLAN_ROUTE_CHAIN;
        else {
            snprintf(why, wl, "routing: '%.40s' is not random or chain", tok[1]);
            return -1;
        }
        return 0;
    case F_SCHEDULE:
        if (!strcmp(tok[1], "1f1b")) p->schedule = PLAN_1F1B;
        else if (!strcmp(tok[1], "gpipe")) p->schedule = PLAN_GPIPE;
        else {
            snprintf(why, wl, "schedule: '%.40s' is not 1f1b or gpipe", tok[1]);
            return -1;
        }
        return 0;
    default: break;
    }
    if (!strcmp(k, "stage")) {
        int idx, l0, l1;
        if (s_int(tok[1], "stage index", 0, PLAN_MAX_STAGES - 1, &idx, why, wl) ||
            s_int(tok[2], "stage first block", 0, PLAN_MAX_LAYERS, &l0, why, wl) ||
            s_int(tok[3], "stage end block", 0, PLAN_MAX_LAYERS, &l1, why, wl))
            return -1;
        if (idx != p->n_stages) {
            snprintf(why, wl, "stage %d out of order (expected stage %d next)", idx, p->n_stages);
            return -1;
        }
        if (l1 <= l0) {
            snprintf(why, wl, "stage %d: end block %d must be greater than first block %d", idx, l1, l0);
            return -1;
        }
        p->stages[p->n_stages++] = (plan_stage_t){l0, l1};
        return 0;
    }
    // node NAME ID STAGE REPLICA ENDPOINT
    if (p->n_nodes >= PLAN_MAX_NODES) {
        snprintf(why, wl, "more than %d nodes", PLAN_MAX_NODES);
        return -1;
    }
    plan_node_t *n = &p->nodes[p->n_nodes];
    memset(n, 0, sizeof *n);
    if (strlen(tok[1]) >= sizeof n->name || !s_name_ok(tok[1])) {
        snprintf(why, wl, "node name '%.40s' must be 1-%zu characters of [A-Za-z0-9._-]", tok[1], sizeof n->name - 1);
        return -1;
    }
    snprintf(n->name, sizeof n->name, "%s", tok[1]);
    if (strlen(tok[2]) != 64 || net_hex_decode(tok[2], 64, n->id) != 0) {
        snprintf(why, wl, "node %s: peer id must be 64 hex digits", n->name);
        return -1;
    }
    if (s_int(tok[3], "node stage", 0, PLAN_MAX_STAGES - 1, &n->stage, why, wl) ||
        s_int(tok[4], "node replica", 0, PLAN_MAX_NODES - 1, &n->replica, why, wl))
        return -1;
    if (strlen(tok[5]) >= sizeof n->endpoint || !plan_endpoint_ok(tok[5])) {
        snprintf(why, wl, "node %s: endpoint '%.60s' is not tcp://host:port (port 1-65535, at most %zu characters)",
                 n->name, tok[5], sizeof n->endpoint - 1);
        return -1;
    }
    snprintf(n->endpoint, sizeof n->endpoint, "%s", tok[5]);
    p->n_nodes++;
    return 0;
}

int plan_parse(const char *text, size_t len, plan_t *p, const char *source, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (!source) source = "(plan)";
    if (len > PLAN_FILE_MAX) {
        s_errf(err, errlen, "%s: larger than %d bytes", source, PLAN_FILE_MAX);
        return -1;
    }
    unsigned seen = 0;
    int header = 0, lineno = 0;
    size_t pos = 0;
    char line[PLAN_LINE_MAX + 1], why[256];
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        lineno++;
        char shown[96];
        size_t sn = n < sizeof shown - 1 ? n : sizeof shown - 1;
        for (size_t i = 0; i < sn; i++) {
            unsigned char ch = (unsigned char)text[pos + i];
            shown[i] = isprint(ch) ? (char)ch : '?';
        }
        shown[sn] = '\0';
        int rc = 0;
        if (n > PLAN_LINE_MAX) {
            snprintf(why, sizeof why, "line longer than %d characters", PLAN_LINE_MAX);
            rc = -1;
        } else if (memchr(text + pos, '\0', n)) {
            snprintf(why, sizeof why, "NUL byte in line");
            rc = -1;
        } else {
            memcpy(line, text + pos, n);
            line[n] = '\0';
            char *hash = strchr(line, '#');
            if (hash) *hash = '\0';
            char *tok[PLAN_MAX_TOKENS];
            int nt = s_tokens(line, tok);
            if (nt > PLAN_MAX_TOKENS) {
                snprintf(why, sizeof why, "too many fields");
                rc = -1;
            } else if (nt == 0) {
                rc = 0;
            } else if (!header) {
                if (strcmp(tok[0], "loco-plan") != 0) {
                    snprintf(why, sizeof why, "not a loco plan (the first line must be 'loco-plan 1')");
                    rc = -1;
                } else if (nt != 2 || strcmp(tok[1], "1") != 0) {
                    snprintf(why, sizeof why, "unsupported plan version '%.20s' (this loco reads version 1)",
                             nt > 1 ? tok[1] : "");
                    rc = -1;
                } else {
                    header = 1;
                }
            } else {
                rc = s_line(p, tok, nt, &seen, why, sizeof why);
            }
        }
        if (rc != 0) {
            s_errf(err, errlen, "%s:%d: %s\n  > %s", source, lineno, why, shown);
            return -1;
        }
        pos += n + (nl ? 1 : 0);
    }
    if (!header) {
        s_errf(err, errlen, "%s: empty: not a loco plan (expected 'loco-plan 1')", source);
        return -1;
    }
    const char *missing = !(seen & F_LAYERS)      ? "layers"
                          : !(seen & F_SCHEDULE)  ? "schedule"
                          : !(seen & F_MB)        ? "micro_batch"
                          : !(seen & F_MBS)       ? "micro_batches"
                          : p->n_stages == 0      ? "stage"
                          : p->n_nodes == 0       ? "node"
                                                  : NULL;
    if (missing) {
        s_errf(err, errlen, "%s: no '%s' line", source, missing);
        return -1;
    }
    if (plan_validate(p, why, sizeof why) != 0) {
        s_errf(err, errlen, "%s: %s", source, why);
        return -1;
    }
    qsort(p->nodes, (size_t)p->n_nodes, sizeof p->nodes[0], s_node_cmp);
    return 0;
}

int plan_read(const char *path, plan_t *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    FILE *f = fopen(path, "rb");
    if (!f) {
        s_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(PLAN_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        s_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, PLAN_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad) {
        s_errf(err, errlen, "%s: read error", path);
        rc = -1;
    } else if (n > PLAN_FILE_MAX) {
        s_errf(err, errlen, "%s: larger than %d bytes", path, PLAN_FILE_MAX);
        rc = -1;
    } else {
        rc = plan_parse(buf, n, p, path, err, errlen);
    }
    free(buf);
    return rc;
}

// Appends to buf at *at; returns -1 once it no longer fits.
static int s_put(char *buf, size_t buflen, size_t *at, const char *fmt, ...) {
    if (*at >= buflen) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, buflen - *at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= buflen - *at) return -1;
    *at += (size_t)n;
    return 0;
}

int plan_format(const plan_t *p, char *buf, size_t buflen) {
    if (!buf || buflen == 0) return -1;
    buf[0] = '\0';
    size_t at = 0;
    int rc = s_put(buf, buflen, &at, "loco-plan 1\nlayers %d\nschedule %s\nmicro_batch %d\nmicro_batches %d\n",
                   p->layers, p->schedule == PLAN_GPIPE ? "gpipe" : "1f1b", p->micro_batch, p->micro_batches);
    if (rc == 0 && p->routing == PLAN_ROUTE_CHAIN) rc = s_put(buf, buflen, &at, "routing chain\n");
    if (rc == 0 && p->window > 0) rc = s_put(buf, buflen, &at, "window %d\n", p->window);
    for (int s = 0; rc == 0 && s < p->n_stages && s < PLAN_MAX_STAGES; s++)
        rc = s_put(buf, buflen, &at, "stage %d %d %d\n", s, p->stages[s].l0, p->stages[s].l1);
    // Nodes in (stage, replica) order, whatever order the caller holds them in, so the same layout
    // always hashes the same.
    int n = p->n_nodes < 0 ? 0 : p->n_nodes > PLAN_MAX_NODES ? PLAN_MAX_NODES : p->n_nodes;
    int order[PLAN_MAX_NODES];
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) // insertion sort: stable, n is small
        for (int j = i; j > 0 && s_node_cmp(&p->nodes[order[j - 1]], &p->nodes[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; rc == 0 && i < n; i++) {
        const plan_node_t *nd = &p->nodes[order[i]];
        char hex[65];
        net_hex_encode(nd->id, 32, hex);
        rc = s_put(buf, buflen, &at, "node %.31s %s %d %d %.127s\n", nd->name, hex, nd->stage, nd->replica,
                   nd->endpoint);
    }
    // %.6g re-reads to a double that prints the same, so format(parse(format(p))) == format(p).
    if (rc == 0 && p->predicted_step_s > 0) rc = s_put(buf, buflen, &at, "predicted_step_s %.6g\n", p->predicted_step_s);
    if (rc == 0 && p->predicted_tokens_per_s > 0)
        rc = s_put(buf, buflen, &at, "predicted_tokens_per_s %.6g\n", p->predicted_tokens_per_s);
    if (rc != 0) {
        buf[0] = '\0';
        return -1;
    }
    return (int)at;
}

void plan_hash(const plan_t *p, uint8_t out[32]) {
    char *buf = malloc(PLAN_TEXT_MAX);
    int n = buf ? plan_format(p, buf, PLAN_TEXT_MAX) : -1;
    if (n < 0) memset(out, 0, 32); // cannot happen for a plan within PLAN_MAX_*: PLAN_TEXT_MAX covers it
    else net_sha256(buf, (size_t)n, out);
    free(buf);
}

static void s_fsync_dir_of(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int plan_write(const char *path, const plan_t *p, char *err, size_t errlen) {
    char why[256];
    if (plan_validate(p, why, sizeof why) != 0) {
        s_errf(err, errlen, "%s: refusing to write an invalid plan: %s", path, why);
        return -1;
    }
    char *buf = malloc(PLAN_TEXT_MAX);
    if (!buf) {
        s_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int n = plan_format(p, buf, PLAN_TEXT_MAX);
    if (n < 0) {
        free(buf);
        s_errf(err, errlen, "%s: plan does not fit in %d bytes", path, PLAN_TEXT_MAX);
        return -1;
    }
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        free(buf);
        s_errf(err, errlen, "%.100s...: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(buf);
        return -1;
    }
    size_t off = 0;
    int rc = 0;
    while (off < (size_t)n) {
        ssize_t w = write(fd, buf + off, (size_t)n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = -1;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0) rc = fsync(fd);
    int saved = errno;
    if (close(fd) != 0 && rc == 0) rc = -1, saved = errno;
    free(buf);
    if (rc != 0) {
        s_errf(err, errlen, "%s: write failed: %s", tmp, strerror(saved));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        s_errf(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s_fsync_dir_of(path);
    return 0;
}

int plan_find(const plan_t *p, const uint8_t id[32]) {
    for (int i = 0; i < p->n_nodes && i < PLAN_MAX_NODES; i++)
        if (!memcmp(p->nodes[i].id, id, 32)) return i;
    return -1;
}

int plan_replicas(const plan_t *p, int s) {
    int r = 0;
    for (int i = 0; i < p->n_nodes && i < PLAN_MAX_NODES; i++)
        if (p->nodes[i].stage == s) r++;
    return r;
}
