// `loco plan --probe`: the links from this node, measured over loco's transport (node/plan_probe.h).
#include "node/plan_probe.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/identity.h"
#include "net/node.h"
#include "node/config.h"
#include "node/log.h"
#include "node/plan_ini.h"

void plan_probe_defaults(plan_probe_opts_t *o) {
    if (o->pings <= 0) o->pings = 9;
    if (o->bytes == 0) o->bytes = 4u << 20;
    if (o->bulk_runs <= 0) o->bulk_runs = 2;
    if (o->timeout_ms <= 0) o->timeout_ms = 5000;
}

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Advice for a refusal ("peer HEX: reason" from net_node_handshake).
static void s_refused(const char *err, char *why, size_t wl) {
    const char *r = strstr(err, ": ");
    r = r ? r + 2 : err;
    if (strstr(r, "different run"))
        snprintf(why, wl, "refused: %.300s — --run-config must be this run's config (every [run] and [model] value "
                 "as at the peer)", r);
    else if (strstr(r, "deny"))
        snprintf(why, wl, "refused: %.300s", r);
    else
        snprintf(why, wl, "refused: %.300s — the run does not admit the probe's key: list the probe id in [run] "
                 "allow, or give --probe-key with a key it admits (and --probe-ticket)", r);
}

static void s_probe_one(net_node_t *n, const plan_cluster_t *c, const plan_probe_opts_t *o, plan_probe_row_t *r) {
    const plan_cnode_t *nd = &c->node[r->node];
    char err[400], hex[NET_ID_HEX], addr[NET_ID_HEX + 200];
    if (!nd->peer[0]) {
        snprintf(r->why, sizeof r->why, "no 'peer = tcp://host:port' (where its loco run listens) in its [node]");
        return;
    }
    if (!nd->has_id) {
        snprintf(r->why, sizeof r->why, "no peer id (id, key, or peer = ID@tcp://...) in its [node]");
        return;
    }
    r->state = PLAN_PROBE_FAILED;
    if (net_tcp_check(nd->peer, o->timeout_ms, err, sizeof err) != 0) {
        snprintf(r->why, sizeof r->why, "not reached: %.200s: %.300s — is its loco run up, and the port open?", nd->peer, err);
        return;
    }
    net_id_to_hex(nd->id, hex);
    snprintf(addr, sizeof addr, "%s@%s", hex, nd->peer);
    if (net_node_connect(n, addr, err, sizeof err) != 0) {
        snprintf(r->why, sizeof r->why, "not reached: %.400s", err);
        return;
    }
    if (net_node_handshake(n, nd->id, o->timeout_ms, err, sizeof err) != 0) {
        if (strstr(err, "did not answer our HELLO"))
            snprintf(r->why, sizeof r->why, "%s answers, but the CURVE handshake did not complete within %d ms — the "
                     "node's id in the description is not its key's, or its run does not admit the probe's key "
                     "([run] admission allowlist/ticket: list the probe id in [run] allow, or give --probe-key FILE)", nd->peer, o->timeout_ms);
        else s_refused(err, r->why, sizeof r->why);
        return;
    }
    net_probe_result_t pr;
    if (net_probe(n, nd->id, o->pings, 0, o->timeout_ms, &pr, err, sizeof err) != 0) {
        snprintf(r->why, sizeof r->why, "welcomed, but the round trips did not finish: %.400s", err);
        return;
    }
    r->rtt_median = pr.rtt_ms_median * 1e-3;
    r->rtt_min = pr.rtt_ms_min * 1e-3;
    r->alpha = r->rtt_median / 2;
    r->state = PLAN_PROBE_PARTIAL;
    double best = 0;
    for (int i = 0; i < o->bulk_runs; i++) {
        double t0 = s_now();
        if (net_probe(n, nd->id, 0, o->bytes, o->timeout_ms, &pr, err, sizeof err) != 0) {
            snprintf(r->why, sizeof r->why, "round trip measured, the bandwidth probe (%zu bytes) did not finish "
                     "within %d ms: %.200s — a slow link: try a smaller --probe-bytes or a longer --probe-timeout-ms; "
                     "declared bandwidth kept", o->bytes, o->timeout_ms, err);
            return;
        }
        // Until the acknowledgement came back: the bytes' transfer plus about one round trip.
        double dt = s_now() - t0, tx = dt - r->rtt_median;
        if (tx < dt / 10) tx = dt / 10;
        double beta = (double)pr.bytes / tx;
        if (beta > best) best = beta;
    }
    r->beta = best;
    r->state = PLAN_PROBE_OK;
}

int plan_probe_run(const plan_cluster_t *c, const plan_probe_opts_t *opts, plan_probe_t *p, char *err,
                   size_t errlen) {
    memset(p, 0, sizeof *p);
    plan_probe_opts_t o = *opts;
    plan_probe_defaults(&o);
    if (!o.run_config) {
        snprintf(err, errlen, "--probe needs --run-config FILE (this node's loco run config: its run fingerprint)");
        return -1;
    }
    static loco_config_t cfg; // large: off the stack
    config_defaults(&cfg);
    if (config_load(&cfg, o.run_config, err, errlen) != 0 || config_validate(&cfg, err, errlen) != 0) return -1;
    // Which node is this one.
    p->self = -1;
    if (o.from) {
        for (int i = 0; i < c->n_nodes; i++)
            if (!strcmp(c->node[i].name, o.from)) p->self = i;
        if (p->self < 0) {
            snprintf(err, errlen, "--from %s: no [node %s] in the description", o.from, o.from);
            return -1;
        }
    } else {
        uint8_t id[32];
        if (!cfg.key[0]) {
            snprintf(err, errlen, "%s has no [node] key: give --from NAME (this node's name in the description)",
                     o.run_config);
            return -1;
        }
        if (plan_key_file_id(cfg.key, id, err, errlen) != 0) return -1;
        for (int i = 0; i < c->n_nodes; i++)
            if (c->node[i].has_id && !memcmp(c->node[i].id, id, 32)) p->self = i;
        if (p->self < 0) {
            char hex[NET_ID_HEX];
            net_id_to_hex(id, hex);
            snprintf(err, errlen, "this node's id %.16s… (%s's [node] key) is no node's id in the description: give "
                     "--from NAME", hex, o.run_config);
            return -1;
        }
    }
    // Transport: this run's description and options, the probe's own identity, no listener.
    uint8_t node_id[32];
    int have_node_id = cfg.key[0] && plan_key_file_id(cfg.key, node_id, err, errlen) == 0;
    if (o.key) {
        snprintf(cfg.key, sizeof cfg.key, "%s", o.key);
        snprintf(cfg.ticket, sizeof cfg.ticket, "%s", o.ticket ? o.ticket : "");
    } else if (!cfg.key[0]) {
        // net_opts_from_config wants a key; the one-time identity replaces it below anyway.
        snprintf(err, errlen, "%s has no [node] key (give --probe-key FILE)", o.run_config);
        return -1;
    }
    static net_opts_t no;
    if (net_opts_from_config(&no, &cfg, err, errlen) != 0) return -1;
    if (o.key && ((have_node_id && !memcmp(no.identity.pk, node_id, 32)) ||
                  (c->node[p->self].has_id && !memcmp(no.identity.pk, c->node[p->self].id, 32)))) {
        net_identity_wipe(&no.identity);
        snprintf(err, errlen, "--probe-key %s is this node's own key: a second session under the running node's id "
                 "would replace its session at every peer; give another key (or none: one derived from it)", o.key);
        return -1;
    }
    if (!o.key) {
        // The probe's identity, derived from the node's secret seed: another id than the node's, the
        // same on every probe from this node (one entry in each peer's table, an id an allowlist can name).
        uint8_t seed[32];
        static const char label[] = "loco plan --probe identity v1";
        int bad = sodium_init() < 0 ||
                  crypto_generichash(seed, sizeof seed, (const unsigned char *)label, sizeof label - 1,
                                     no.identity.sk, 32) != 0;
        net_identity_wipe(&no.identity);
        if (bad || net_identity_from_seed(&no.identity, seed) != 0) {
            sodium_memzero(seed, sizeof seed);
            snprintf(err, errlen, "cannot derive the probe's key (libsodium)");
            return -1;
        }
        sodium_memzero(seed, sizeof seed);
        no.has_ticket = 0; // the node's ticket names the node's id, not this key's
    }
    char probe_hex[NET_ID_HEX];
    net_id_to_hex(no.identity.pk, probe_hex);
    no.listen[0] = '\0';
    int ms = o.timeout_ms;
    snprintf(p->how, sizeof p->how, "%d round trips, %d x %.3g MiB, %d ms per step; probe id %.16s…%s", o.pings,
             o.bulk_runs, (double)o.bytes / 1048576.0, ms, probe_hex, o.key ? " (--probe-key)" : ", derived from [node] key");
    snprintf(p->probe_id, sizeof p->probe_id, "%s", probe_hex);
    signal(SIGPIPE, SIG_IGN);
    log_set_level("error"); // the table says what went wrong; the transport's own lines are noise here
    net_node_t *n = net_node_new(&no, err, errlen);
    net_identity_wipe(&no.identity);
    if (!n) return -1;
    for (int i = 0; i < c->n_nodes; i++) {
        if (i == p->self) continue;
        plan_probe_row_t *r = &p->row[p->n_rows++];
        r->node = i;
        plan_link_t lk = plan_link(c, p->self, i);
        r->decl_alpha = lk.alpha;
        r->decl_beta = lk.nic_a >= 0 ? lk.beta : 0;
        s_probe_one(n, c, &o, r);
    }
    net_node_destroy(&n);
    return 0;
}

int plan_probe_apply(plan_cluster_t *c, const plan_probe_t *p) {
    int set = 0;
    for (int k = 0; k < p->n_rows; k++) {
        const plan_probe_row_t *r = &p->row[k];
        if (r->state != PLAN_PROBE_OK && r->state != PLAN_PROBE_PARTIAL) continue;
        double beta = r->state == PLAN_PROBE_OK ? r->beta : r->decl_beta;
        if (!(beta > 0)) continue; // no declared link to keep the bandwidth of
        plan_fabric_t f = {beta, r->alpha};
        c->pair[p->self][r->node] = c->pair[r->node][p->self] = f;
        set++;
    }
    return set;
}

// A reason in a comment line: one line, printable.
static void s_comment_safe(const char *in, char *out, size_t len) {
    size_t i = 0;
    for (; in[i] && i + 1 < len; i++) out[i] = (in[i] == '\n' || in[i] == '\r') ? ' ' : in[i];
    out[i] = '\0';
}

int plan_probe_write(const char *path, const plan_cluster_t *c, const plan_probe_t *p, const char *source, char *err,
                     size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    const char *me = c->node[p->self].name;
    char when[64] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    fprintf(f,
            "# Links from node %s measured by `loco plan --probe` (%s), %s,\n"
            "# for the cluster description %s. Latency: median round trip / 2; bandwidth: probe bytes /\n"
            "# (time to their acknowledgement - one round trip), the best run; over loco's transport (CURVE).\n"
            "# Append it to the description: run --probe on every node and append every node's file, e.g.\n"
            "#   cat cluster.ini a.probe b.probe > measured.ini && loco plan -c measured.ini\n"
            "# (a pair measured from both ends keeps the slower figures).\n",
            me, p->how, when, source ? source : "(cluster)");
    for (int k = 0; k < p->n_rows; k++) {
        const plan_probe_row_t *r = &p->row[k];
        const char *other = c->node[r->node].name;
        char why[sizeof r->why];
        s_comment_safe(r->why, why, sizeof why);
        if (r->state == PLAN_PROBE_OK || (r->state == PLAN_PROBE_PARTIAL && r->decl_beta > 0)) {
            fprintf(f, "\n[pair %s %s]\n", me, other);
            fprintf(f, "latency = %.3f us      # round trip median %.3f us, min %.3f us\n", r->alpha * 1e6,
                    r->rtt_median * 1e6, r->rtt_min * 1e6);
            if (r->state == PLAN_PROBE_OK) fprintf(f, "bandwidth = %.6g MB/s\n", r->beta / 1e6);
            else fprintf(f, "bandwidth = %.6g MB/s  # declared, not measured: %s\n", r->decl_beta / 1e6, why);
        } else {
            fprintf(f, "\n# %s-%s: not measured: %s\n", me, other, why);
        }
    }
    int bad = ferror(f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) bad = 1;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
