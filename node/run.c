#include "node/run.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gossip/members.h"
#include "net/fingerprint.h"
#include "net/identity.h"
#include "net/node.h"
#include "net/ticket.h"
#include "node/control.h"
#include "node/http_metrics.h"
#include "node/log.h"
#include "node/metrics.h"
#include "node/outer_run.h"
#include "node/pipe.h"
#include "node/prom.h"
#include "node/telemetry.h"
#include "node/train_loop.h"
#include "node/trainer.h"
#include "node/window.h"

#define RUN_MAX_MEMBERS 4096
#define RUN_REACH_TABLE 64

typedef struct {
    loco_config_t cfg;
    net_opts_t no;
    net_node_t *net;
    gossip_members_t *gm;
    metrics_t mx;
    uint8_t fp[32];
    char self_hex[NET_ID_HEX];
    volatile sig_atomic_t *stop;
    atomic_int compute_done;
    _Atomic(trainer_t *) trainer;     // set by the compute thread while it trains
    uint64_t rate_ms, rate_steps;     // last step-rate sample
    uint32_t rate_published;          // steps/s × 1000 in our record
    window_t win;                     // [train] active
    int idle;                         // outside it: our record says step rate 0
    uint32_t rate_before_idle;
    int reach_auto, reachable;        // reachable: what our record says
    char advertise[256];
    uint64_t reach_asked_ms;
    uint8_t seed_ids[CONFIG_LIST_MAX][32];
    char seed_eps[CONFIG_LIST_MAX][256];
    int seed_refused[CONFIG_LIST_MAX];
    int n_seeds;
    int refused_out;                  // every seed refused us: stop
    struct { uint8_t id[32]; uint64_t ms; } served[RUN_REACH_TABLE];
    int cache_dirty;
    uint64_t cache_saved_ms;
    uint8_t (*dialed)[32];            // ids we opened a connection to
    int n_dialed;
    gossip_member_info_t *info;       // scratch for member listings
    outer_run_t *outer;               // the outer-step exchange (training peers)
    plan_t *plan;                     // [pipeline] plan (node/pipe.h), or NULL
    _Atomic uint32_t pipe_gone[PLAN_MAX_NODES]; // bumped when membership reports a plan node dead or left
    pipe_outer_t pipe_outer;          // outer steps between the replicas of our stage
    prom_t *prom;                     // metrics registry: Prometheus endpoint and loco status
    http_metrics_t *http;
    control_t *ctl;
    uint64_t tele_ms;                 // last telemetry sample (net thread)
} run_t;

static uint64_t s_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t s_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void s_short(const uint8_t id[32], char out[17]) {
    char hex[NET_ID_HEX];
    net_id_to_hex(id, hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

// ---------------------------------------------------------------------------------------------
// Peer cache

int run_cache_load(const char *path, uint8_t (*ids)[32], char (*eps)[256], int cap) {
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : -1;
    char line[512], err[200];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        if (net_peer_addr_parse(line, ids[n], eps[n], 256, err, sizeof err) != 0) {
            log_warn("run", "%s: skipping bad entry '%.80s': %s", path, line, err);
            continue;
        }
        n++;
    }
    fclose(f);
    return n;
}

int run_cache_save(const char *path, const uint8_t (*ids)[32], char (*eps)[256], int n) {
    char tmp[CONFIG_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = fprintf(f, "# loco peer cache: last-known live peers, rewritten as membership changes\n") > 0;
    for (int i = 0; ok && i < n; i++) {
        char hex[NET_ID_HEX];
        net_id_to_hex(ids[i], hex);
        ok = fprintf(f, "%s@%s\n", hex, eps[i]) > 0;
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void s_cache_write(run_t *r) {
    if (!r->cfg.peer_cache[0]) return;
    size_t n = gossip_members_live(r->gm, r->info, RUN_MAX_MEMBERS);
    static uint8_t ids[RUN_MAX_MEMBERS][32];
    static char eps[RUN_MAX_MEMBERS][256];
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (r->info[i].is_self) continue;
        const char *ep = gossip_members_endpoint(r->gm, r->info[i].id);
        if (!ep) continue; // unreachable members cannot be dialed from a cache
        memcpy(ids[k], r->info[i].id, 32);
        snprintf(eps[k], 256, "%s", ep);
        k++;
    }
    // Keep the last non-empty list: after everyone left (or we did), the old entries are still the best
    // guess of whom to call at the next start.
    if (k == 0) return;
    if (run_cache_save(r->cfg.peer_cache, (const uint8_t (*)[32])ids, eps, k) != 0)
        log_warn("run", "%s: cannot write the peer cache: %s", r->cfg.peer_cache, strerror(errno));
    r->cache_dirty = 0;
}

// ---------------------------------------------------------------------------------------------
// Sending what the membership view queued

static int s_dialed(run_t *r, const uint8_t id[32]) {
    for (int i = 0; i < r->n_dialed; i++)
        if (!memcmp(r->dialed[i], id, 32)) return 1;
    return 0;
}

// Opens a connection to a member at the endpoint of its signed record and remembers that we dialed
// it. 0, or -1 with the reason.
static int s_dial(run_t *r, const uint8_t id[32], char *err, size_t errlen) {
    const char *ep = gossip_members_endpoint(r->gm, id);
    if (!ep) {
        snprintf(err, errlen, "no endpoint to dial (the member is not reachable)");
        return -1;
    }
    char addr[NET_ID_HEX + 260], hex[NET_ID_HEX];
    net_id_to_hex(id, hex);
    snprintf(addr, sizeof addr, "%s@%s", hex, ep);
    if (net_node_connect(r->net, addr, err, errlen) != 0) return -1;
    if (!s_dialed(r, id) && r->n_dialed < RUN_MAX_MEMBERS) memcpy(r->dialed[r->n_dialed++], id, 32);
    return 0;
}

static int s_send(run_t *r, const uint8_t to[32], int type, const void *payload, size_t len) {
    char err[300];
    if (net_node_send(r->net, to, (uint16_t)type, 0, payload, len, 50, err, sizeof err) == 0) return 0;
    // Not connected yet (or the connection is gone): dial the endpoint of its signed record, once.
    if (!gossip_members_endpoint(r->gm, to) || s_dialed(r, to)) {
        log_debug("run", "cannot send %s: %s", gossip_msg_name(type), err);
        return -1;
    }
    if (s_dial(r, to, err, sizeof err) != 0) {
        char hex[NET_ID_HEX];
        net_id_to_hex(to, hex);
        log_warn("run", "cannot dial %.16s at %s: %s", hex, gossip_members_endpoint(r->gm, to), err);
        return -1;
    }
    return net_node_send(r->net, to, (uint16_t)type, 0, payload, len, 50, err, sizeof err);
}

// outer_env_t.connect: dial a member by its record's endpoint (the exchange's sends failed).
static int s_connect_member(void *ctx, const uint8_t id[32]) {
    run_t *r = ctx;
    char err[300];
    if (*r->stop) return -1; // stopping: a new handshake (up to 2 s) would only delay the leave
    if (s_dial(r, id, err, sizeof err) != 0) return -1;
    return net_node_handshake(r->net, id, 2000, err, sizeof err);
}

static void s_flush_outbox(run_t *r) {
    gossip_msg_t m;
    while (gossip_members_pop(r->gm, &m)) {
        s_send(r, m.to, m.type, m.payload, m.len);
        gossip_msg_release(&m);
    }
}

static void s_drain_events(run_t *r) {
    gossip_event_t ev;
    while (gossip_members_pop_event(r->gm, &ev)) {
        size_t live = gossip_members_live(r->gm, r->info, RUN_MAX_MEMBERS);
        char who[17], from[17];
        s_short(ev.id, who);
        s_short(ev.from, from);
        // Pace what we send to it by the download cap it announces.
        gossip_member_info_t mi;
        if ((ev.kind == GOSSIP_EV_JOINED || ev.kind == GOSSIP_EV_UPDATED) && gossip_members_get(r->gm, ev.id, &mi) == 0 &&
            mi.record)
            net_node_set_peer_rate(r->net, ev.id, mi.record->caps.download_Bps);
        log_info("members", "%s %s (incarnation %llu, via %s); %zu live", gossip_event_name(ev.kind), who,
                 (unsigned long long)ev.incarnation, from, live);
        metrics_write(&r->mx, "member", 0, "\"event\":\"%s\",\"member\":\"%s\",\"incarnation\":%llu,\"live\":%zu",
                      gossip_event_name(ev.kind), who, (unsigned long long)ev.incarnation, live);
        r->cache_dirty = 1;
        if (r->plan && (ev.kind == GOSSIP_EV_DEAD || ev.kind == GOSSIP_EV_LEFT)) pipe_member_gone(r->plan, r->pipe_gone, ev.id);
    }
}

// ---------------------------------------------------------------------------------------------
// Reachability: a seed is asked to open a TCP connection to our advertised endpoint.

// Non-blocking TCP connect to tcp://host:port within timeout_ms. 1 reachable, 0 not.
static int s_tcp_reachable(const char *endpoint, int timeout_ms) {
    char host[256];
    const char *p = strncmp(endpoint, "tcp://", 6) == 0 ? endpoint + 6 : NULL;
    const char *colon = p ? strrchr(p, ':') : NULL;
    if (!colon || (size_t)(colon - p) >= sizeof host) return 0;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    // Numeric hosts only: a name lookup could hold the net thread for seconds, and the endpoint comes
    // from another peer. A peer advertising a host name is answered "not reachable".
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai) return 0;
    int ok = 0;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc == 0) ok = 1;
        else if (errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, timeout_ms) == 1) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
                ok = e == 0;
            }
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return ok;
}

static void s_serve_reach_check(run_t *r, const uint8_t from[32], const uint8_t *payload, size_t len, uint64_t now) {
    // At most one check per peer every 30 s: a peer must not turn us into a port scanner.
    int slot = -1, oldest = 0;
    for (int i = 0; i < RUN_REACH_TABLE; i++) {
        if (!memcmp(r->served[i].id, from, 32)) { slot = i; break; }
        if (r->served[i].ms < r->served[oldest].ms) oldest = i;
    }
    if (slot >= 0 && now - r->served[slot].ms < 30000) return;
    if (slot < 0) slot = oldest;
    memcpy(r->served[slot].id, from, 32);
    r->served[slot].ms = now;
    char ep[256];
    if (len == 0 || len >= sizeof ep) return;
    memcpy(ep, payload, len);
    ep[len] = '\0';
    uint8_t ans = (uint8_t)s_tcp_reachable(ep, 1000);
    char who[17];
    s_short(from, who);
    log_info("run", "dial-back to %s at %s: %s", who, ep, ans ? "reachable" : "not reachable");
    s_send(r, from, RUN_MSG_REACH_RESULT, &ans, 1);
}

static void s_publish_caps(run_t *r, uint64_t now) {
    gossip_caps_t caps = {0};
    snprintf(caps.device, sizeof caps.device, "%s", r->cfg.device);
    caps.reachable = r->reachable;
    caps.step_rate_milli = r->rate_published;
    caps.upload_Bps = (uint64_t)r->cfg.upload_rate;
    caps.download_Bps = (uint64_t)r->cfg.download_rate;
    char err[200];
    if (gossip_members_update_caps(r->gm, &caps, now, err, sizeof err) != 0)
        log_warn("run", "cannot update our record: %s", err);
}

// Every 30 s: the measured inner-step rate; our record is re-signed when it moved by more than 20%,
// so peers (pacing, placement) see a current figure without a record per step.
static void s_sample_step_rate(run_t *r, uint64_t now) {
    trainer_t *t = atomic_load(&r->trainer);
    if (!t || r->idle || now - r->rate_ms < 30000) return;
    uint64_t steps = atomic_load(&t->progress);
    if (r->rate_ms && steps >= r->rate_steps) {
        uint32_t milli = (uint32_t)((double)(steps - r->rate_steps) * 1e6 / (double)(now - r->rate_ms));
        if (milli == 0) milli = 1; // non-zero marks a training member (outer steps pick partners by it)
        uint32_t old = r->rate_published;
        if (milli > old + old / 5 || milli + milli / 5 < old) {
            r->rate_published = milli;
            s_publish_caps(r, now);
        }
    }
    r->rate_ms = now;
    r->rate_steps = steps;
}

// [train] active: while the compute thread waits outside the window (or, at start-up, has not yet
// reached it) our record says step rate 0, so no outer step picks this peer as a partner; when it
// trains again the rate it had before comes back until the next sample.
static void s_window_caps(run_t *r, uint64_t now) {
    int idle = window_idle() || (r->idle && !window_active_at(&r->win, window_now()));
    if (idle == r->idle) return;
    r->idle = idle;
    if (idle) r->rate_before_idle = r->rate_published;
    r->rate_published = idle ? 0 : r->rate_before_idle ? r->rate_before_idle : 1;
    r->rate_ms = 0; // the next step-rate sample starts afresh
    s_publish_caps(r, now);
    log_info("run", "member record: %s", idle ? "not training (outside [train] active), step rate 0" : "training again");
}

static void s_set_reachable(run_t *r, int yes, uint64_t now) {
    r->reach_auto = 0;
    if (yes == r->reachable) return;
    r->reachable = yes;
    s_publish_caps(r, now);
    log_info("run", "reachable = %s (learned by dial-back)", yes ? "yes" : "no");
}

// ---------------------------------------------------------------------------------------------

// A peer refused us (another run, not admitted, denied). When every seed has, nothing will change
// by waiting: the node stops with the reason logged above (a config error to fix, not a network fault).
static void s_on_refused(run_t *r, const uint8_t peer[32]) {
    int all = r->n_seeds > 0;
    for (int i = 0; i < r->n_seeds; i++) {
        if (!memcmp(r->seed_ids[i], peer, 32)) r->seed_refused[i] = 1;
        all = all && r->seed_refused[i];
    }
    if (all && gossip_members_live(r->gm, r->info, RUN_MAX_MEMBERS) <= 1) {
        log_error("run", "every seed refused this peer: stopping (fix the config and start again)");
        r->refused_out = 1;
    }
}

static void s_on_event(run_t *r, net_event_t *ev, uint64_t now) {
    char who[17];
    s_short(ev->peer, who);
    switch (ev->kind) {
    case NET_EV_TENSOR:
        if (!r->outer || !outer_run_on_event(r->outer, ev, now))
            log_debug("run", "ignoring a tensor (quantity %u) from %s", ev->quantity, who);
        break;
    case NET_EV_MESSAGE:
        if (r->outer && outer_run_on_event(r->outer, ev, now)) {
        } else if (ev->type >= GOSSIP_MSG_FIRST && ev->type < GOSSIP_MSG_FIRST + GOSSIP_MSG_COUNT) {
            gossip_members_receive(r->gm, now, ev->peer, ev->type, ev->payload, ev->len);
        } else if (ev->type == RUN_MSG_REACH_CHECK) {
            s_serve_reach_check(r, ev->peer, ev->payload, ev->len, now);
        } else if (ev->type == RUN_MSG_REACH_RESULT && ev->len == 1 && r->reach_auto) {
            s_set_reachable(r, ev->payload[0] == 1, now);
        } else {
            log_debug("run", "ignoring message type %u from %s", ev->type, who);
        }
        break;
    case NET_EV_WELCOME:
        log_info("run", "connected to %s", who);
        // The first seed that welcomes us checks our reachability.
        if (r->reach_auto && !r->reach_asked_ms) {
            for (int i = 0; i < r->n_seeds; i++) {
                if (memcmp(r->seed_ids[i], ev->peer, 32) != 0) continue;
                s_send(r, ev->peer, RUN_MSG_REACH_CHECK, r->advertise, strlen(r->advertise));
                r->reach_asked_ms = now;
            }
        }
        break;
    case NET_EV_REFUSED:
        log_error("run", "refused by %s, which says: %s", who, ev->text);
        s_on_refused(r, ev->peer);
        break;
    default:
        break;
    }
}

static void *s_compute(void *arg) {
    run_t *r = arg;
    if (r->plan) { // a pipeline stage (node/pipe.h)
        int prc = pipe_run(&r->cfg, r->plan, &r->no.identity, r->fp, r->pipe_gone, &r->mx, &r->trainer, r->outer,
                           &r->pipe_outer, r->stop);
        atomic_store(&r->compute_done, prc ? 2 : 1);
        return NULL;
    }
    char err[1536];
    loco_config_t cfg = r->cfg;
    uint64_t stream = (uint64_t)cfg.data_stream;
    if (cfg.data_stream < 0) { // each peer draws its own stream, derived from its id
        stream = 0;
        for (int i = 0; i < 8; i++) stream |= (uint64_t)r->no.identity.pk[i] << (8 * i);
    }
    trainer_t *t = trainer_new(&cfg, TRAINER_TRAIN_DATA | TRAINER_VAL_DATA | TRAINER_VAL_OPTIONAL, stream, err, sizeof err);
    int rc = 1;
    if (!t) {
        log_error("train", "%s", err);
    } else {
        log_info("train", "%zu parameters, data stream %llu", t->model->num_params, (unsigned long long)stream);
        atomic_store(&r->trainer, t);
        rc = outer_run_train(r->outer, t, r->stop);
        atomic_store(&r->trainer, NULL);
    }
    trainer_destroy(&t);
    atomic_store(&r->compute_done, rc ? 2 : 1);
    return NULL;
}

static int s_listed(const uint8_t (*list)[32], int n, const uint8_t id[32]) {
    for (int i = 0; i < n; i++)
        if (!memcmp(list[i], id, 32)) return 1;
    return 0;
}

// The run's admission rule applied to relayed member records, so a key the transport would refuse
// never enters a view through gossip either (deny always wins; tickets travel in the record).
static bool s_admit(void *ctx, const gossip_record_t *rec) {
    const run_t *r = ctx;
    const net_opts_t *o = &r->no;
    if (!memcmp(rec->id, o->identity.pk, 32)) return true;
    if (s_listed((const uint8_t (*)[32])o->deny, o->n_deny, rec->id)) return false;
    if (o->admission == NET_ADMIT_OPEN) return true;
    if (s_listed((const uint8_t (*)[32])o->allow, o->n_allow, rec->id)) return true;
    if (o->admission != NET_ADMIT_TICKET || rec->ticket_len != NET_TICKET_BYTES) return false;
    net_ticket_t t;
    char why[200];
    if (net_ticket_decode(&t, rec->ticket, rec->ticket_len, why, sizeof why) != 0) return false;
    return net_ticket_verify(&t, o->authority, r->fp, rec->id, s_unix_ms() / 1000, why, sizeof why) == NET_TICKET_OK;
}

// The metrics registry, the Prometheus endpoint ([metrics] listen) and the loco status socket.
static int s_ops_start(run_t *r, const loco_config_t *cfg, const char *prefix, char *err, size_t errlen) {
    if (!(r->prom = prom_new()) || telemetry_declare(r->prom) != 0) {
        snprintf(err, errlen, "cannot set up the metrics registry");
        return -1;
    }
    r->mx.prom = r->prom;
    telemetry_start(r->prom, prefix, cfg->run_name, cfg->steps > 0 ? cfg->outer_algorithm : "none",
                    (uint64_t)cfg->steps, cfg->checkpoint_dir);
    if (cfg->metrics_listen[0]) {
        if (!(r->http = http_metrics_start(cfg->metrics_listen, r->prom, err, errlen))) return -1;
        prom_note_set(r->prom, "metrics_url", http_metrics_url(r->http));
    }
    char path[CONFIG_PATH_MAX + 32];
    if (control_path(cfg, path, sizeof path, err, errlen) != 0) return -1;
    // A node that does not train shares the default socket path with any other in its directory
    // (no checkpoints to collide on): the first one answers loco status, the others say so and go on.
    if (path[0] && !cfg->control[0] && cfg->steps == 0 && control_in_use(path)) {
        log_warn("control", "%s: another loco node answers there; this one has no control socket (set [node] control)", path);
        return 0;
    }
    if (path[0] && !(r->ctl = control_start(path, !cfg->control[0], r->prom, err, errlen))) return -1;
    return 0;
}

static void s_ops_stop(run_t *r) {
    control_stop(&r->ctl);
    http_metrics_stop(&r->http);
    r->mx.prom = NULL;
    prom_destroy(&r->prom);
}

// Net thread, every 250 ms: membership by state, bytes by type, catch-up progress.
static void s_telemetry(run_t *r, uint64_t now) {
    if (!r->prom || now - r->tele_ms < 250) return;
    r->tele_ms = now;
    int by[4] = {0};
    size_t n = gossip_members_all(r->gm, r->info, RUN_MAX_MEMBERS);
    for (size_t i = 0; i < n; i++)
        if ((int)r->info[i].state >= 0 && r->info[i].state <= GOSSIP_LEFT) by[r->info[i].state]++;
    telemetry_members(r->prom, by[GOSSIP_ALIVE], by[GOSSIP_SUSPECT], by[GOSSIP_DEAD], by[GOSSIP_LEFT]);
    const catchup_t *cu = outer_run_catchup(r->outer);
    catchup_stats_t cs;
    if (cu) catchup_stats(cu, &cs);
    telemetry_net(r->prom, net_node_stats(r->net), cu ? &cs : NULL, cu ? catchup_done(cu) : 0);
}

static int s_setup(run_t *r, const loco_config_t *cfg, char *err, size_t errlen) {
    r->cfg = *cfg;
    if (net_opts_from_config(&r->no, cfg, err, errlen) != 0) return -1;
    int reach_no = !strcmp(cfg->net_reachable, "no");
    if (reach_no) r->no.listen[0] = '\0'; // behind NAT: dial out only
    r->net = net_node_new(&r->no, err, errlen);
    if (!r->net) return -1;
    net_id_to_hex(r->no.identity.pk, r->self_hex);
    net_run_fingerprint(cfg, r->fp);

    // What others should dial: [net] advertise, else the bound endpoint (0.0.0.0 → 127.0.0.1).
    const char *bound = net_node_endpoint(r->net);
    if (cfg->net_advertise[0]) {
        snprintf(r->advertise, sizeof r->advertise, "%s", cfg->net_advertise);
    } else if (bound[0]) {
        const char *any = strstr(bound, "0.0.0.0");
        if (any) {
            snprintf(r->advertise, sizeof r->advertise, "%.*s127.0.0.1%s", (int)(any - bound), bound, any + 7);
            log_warn("run", "[net] advertise is not set: other peers will be told %s (this machine only)", r->advertise);
        } else {
            snprintf(r->advertise, sizeof r->advertise, "%s", bound);
        }
    }

    for (int i = 0; i < cfg->seeds.n; i++) {
        if (net_peer_addr_parse(cfg->seeds.item[i], r->seed_ids[r->n_seeds], r->seed_eps[r->n_seeds],
                                sizeof r->seed_eps[0], err, errlen) != 0) {
            char why[300];
            snprintf(why, sizeof why, "%.290s", err);
            snprintf(err, errlen, "[bootstrap] seed = %s: %s", cfg->seeds.item[i], why);
            return -1;
        }
        if (!memcmp(r->seed_ids[r->n_seeds], r->no.identity.pk, 32)) continue; // ourselves
        r->n_seeds++;
    }
    // auto: reachable only once a seed has dialed us back; with no seed to ask, a listener counts.
    r->reach_auto = !strcmp(cfg->net_reachable, "auto") && r->n_seeds > 0 && r->advertise[0];
    r->reachable = !reach_no && r->advertise[0] && !r->reach_auto;

    gossip_config_t gc;
    gossip_config_default(&gc);
    gc.period_ms = (uint32_t)cfg->gossip_period_ms;
    gc.ack_timeout_ms = (uint32_t)cfg->gossip_ack_timeout_ms;
    gc.indirect_k = cfg->gossip_indirect_k;
    gc.suspicion_mult = cfg->gossip_suspicion_mult;
    gc.sync_interval_ms = (uint32_t)cfg->gossip_sync_interval_ms;
    if (gc.ack_timeout_ms > gc.period_ms / 2) gc.ack_timeout_ms = gc.period_ms / 2;
    if (gc.ack_timeout_min_ms > gc.ack_timeout_ms) gc.ack_timeout_min_ms = gc.ack_timeout_ms;
    if (gc.gossip_interval_ms > gc.period_ms) gc.gossip_interval_ms = gc.period_ms;
    if (gc.sync_interval_ms > 10 * gc.period_ms) gc.sync_interval_ms = 10 * gc.period_ms;
    if (gc.join_retry_ms > 2 * gc.period_ms) gc.join_retry_ms = 2 * gc.period_ms;
    gc.admit = s_admit;
    gc.admit_ctx = r;
    for (int i = 0; i < 8; i++) gc.seed |= (uint64_t)r->no.identity.pk[i] << (8 * i);
    gc.seed ^= s_unix_ms();

    gossip_record_t self;
    memset(&self, 0, sizeof self);
    memcpy(self.run_fp, r->fp, 32);
    self.incarnation = s_unix_ms(); // a restarted peer always comes back above its last incarnation
    self.time_ms = s_unix_ms();
    snprintf(self.caps.device, sizeof self.caps.device, "%s", cfg->device);
    self.caps.reachable = r->reachable;
    if (window_parse(&r->win, cfg->train_active, err, errlen) != 0) return -1;
    r->idle = cfg->steps > 0 && !window_active_at(&r->win, window_now());
    self.caps.step_rate_milli = cfg->steps > 0 && !r->idle; // a placeholder until measured: non-zero = trains
    self.caps.upload_Bps = (uint64_t)cfg->upload_rate;
    self.caps.download_Bps = (uint64_t)cfg->download_rate;
    net_node_set_upload_rate(r->net, (uint64_t)cfg->upload_rate);
    r->rate_published = self.caps.step_rate_milli;
    if (r->advertise[0] && !reach_no) {
        self.n_endpoints = 1;
        snprintf(self.endpoints[0], sizeof self.endpoints[0], "%.200s", r->advertise);
    }
    if (r->no.has_ticket) {
        self.ticket_len = NET_TICKET_BYTES;
        memcpy(self.ticket, r->no.ticket, NET_TICKET_BYTES);
    }
    r->gm = gossip_members_new(&gc, r->no.identity.sk, &self, s_mono_ms(), err, errlen);
    if (!r->gm) return -1;

    for (int i = 0; i < r->n_seeds; i++) gossip_members_add_contact(r->gm, r->seed_ids[i], r->seed_eps[i]);
    static uint8_t cids[256][32];
    static char ceps[256][256];
    int nc = cfg->peer_cache[0] ? run_cache_load(cfg->peer_cache, cids, ceps, 256) : 0;
    if (nc < 0) log_warn("run", "%s: cannot read the peer cache: %s", cfg->peer_cache, strerror(errno));
    for (int i = 0; i < nc; i++)
        if (memcmp(cids[i], r->no.identity.pk, 32) != 0) gossip_members_add_contact(r->gm, cids[i], ceps[i]);
    if (nc > 0) log_info("run", "%d peers from the cache %s", nc, cfg->peer_cache);

    r->info = calloc(RUN_MAX_MEMBERS, sizeof *r->info);
    r->dialed = calloc(RUN_MAX_MEMBERS, 32);
    if (!r->info || !r->dialed) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (cfg->pipeline_plan[0]) {
        if (!(r->plan = malloc(sizeof *r->plan))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (pipe_plan_load(cfg, r->no.identity.pk, r->plan, err, errlen) != 0) return -1;
    }
    if (cfg->steps > 0) {
        outer_env_t env = {.cfg = &r->cfg, .net = r->net, .gm = r->gm, .mx = &r->mx, .fp = r->fp,
                           .connect = s_connect_member, .ctx = r, .has_contacts = r->n_seeds > 0 || nc > 0};
        if (r->plan) { // outer steps over our stage's parameters, with the replicas of our stage only
            int self = plan_find(r->plan, r->no.identity.pk);
            r->pipe_outer = (pipe_outer_t){.plan = r->plan, .stage = r->plan->nodes[self].stage, .mx = &r->mx};
            pipe_plan_range(r->plan, self, &cfg->model, &env.off, &env.len);
            env.member_ok = pipe_outer_member_ok;
            env.inner_step = pipe_outer_inner_step;
            env.hook_ctx = &r->pipe_outer;
            env.has_contacts = env.has_contacts && plan_replicas(r->plan, r->pipe_outer.stage) > 1;
        }
        r->outer = outer_run_new(&env, err, errlen);
        if (!r->outer) return -1;
    }
    char prefix[17];
    memcpy(prefix, r->self_hex, 16);
    prefix[16] = '\0';
    if (metrics_open(&r->mx, cfg->metrics, prefix, err, errlen) != 0) return -1;
    if (s_ops_start(r, cfg, prefix, err, errlen) != 0) return -1;
    char addr[NET_ID_HEX + 260];
    snprintf(addr, sizeof addr, "%s@%s", r->self_hex, r->advertise[0] ? r->advertise : "(no listener)");
    log_info("run", "peer %s, run '%s', reachable %s, %d seed(s)", addr, cfg->run_name,
             r->reach_auto ? "auto (asking a seed)" : r->reachable ? "yes" : "no", r->n_seeds);
    return 0;
}

static void s_pump(run_t *r, int max_wait_ms) {
    uint64_t now = s_mono_ms();
    uint64_t wake = gossip_members_next_wakeup(r->gm);
    // next_wakeup may be UINT64_MAX (nothing scheduled, e.g. after leaving): compare before narrowing.
    int timeout = wake <= now ? 0 : wake - now > (uint64_t)max_wait_ms ? max_wait_ms : (int)(wake - now);
    net_event_t ev;
    memset(&ev, 0, sizeof ev);
    int rc = net_node_poll(r->net, &ev, timeout);
    now = s_mono_ms();
    if (rc == 1) {
        s_on_event(r, &ev, now);
        net_event_clear(&ev);
    }
    s_window_caps(r, now);
    s_sample_step_rate(r, now);
    if (r->outer) outer_run_tick(r->outer, now);
    gossip_members_tick(r->gm, now);
    s_flush_outbox(r);
    s_drain_events(r);
    s_telemetry(r, now);
    if (r->cache_dirty && now - r->cache_saved_ms >= 2000) {
        s_cache_write(r);
        r->cache_saved_ms = now;
    }
    if (r->reach_auto && r->reach_asked_ms && now - r->reach_asked_ms > 10000) {
        log_warn("run", "no dial-back answer from the seed in 10 s: taking reachable = no");
        s_set_reachable(r, 0, now);
    }
}

// The view as this peer leaves (log and metrics): what tests compare across survivors.
static void s_log_view(run_t *r) {
    size_t n = gossip_members_live(r->gm, r->info, RUN_MAX_MEMBERS);
    char list[16 * 20 + 32], json[16 * 20 + 32];
    size_t a = 0, b = 0;
    json[b++] = '[';
    for (size_t i = 0; i < n && i < 16; i++) {
        char id[17];
        s_short(r->info[i].id, id);
        a += (size_t)snprintf(list + a, sizeof list - a, "%s%s", i ? " " : "", id);
        b += (size_t)snprintf(json + b, sizeof json - b, "%s\"%s\"", i ? "," : "", id);
    }
    list[a] = '\0';
    snprintf(json + b, sizeof json - b, "]");
    log_info("run", "view at the end: %zu live: %s%s", n, list, n > 16 ? " ..." : "");
    metrics_write(&r->mx, "view", 0, "\"live\":%zu,\"members\":%s", n, json);
}

int run_node(const loco_config_t *cfg, volatile sig_atomic_t *stop) {
    static run_t r; // one per process; static keeps the large tables off the stack
    memset(&r, 0, sizeof r);
    r.stop = stop;
    char err[1536];
    if (s_setup(&r, cfg, err, sizeof err) != 0) {
        log_error("run", "%s", err);
        s_ops_stop(&r);
        outer_run_destroy(&r.outer);
        gossip_members_destroy(&r.gm);
        net_node_destroy(&r.net);
        free(r.info);
        free(r.dialed);
        free(r.plan);
        return 1;
    }
    pthread_t compute;
    int training = cfg->steps > 0;
    if (training && pthread_create(&compute, NULL, s_compute, &r) != 0) {
        log_error("run", "cannot start the compute thread");
        training = 0;
        atomic_store(&r.compute_done, 2);
    }
    while (!*stop && !r.refused_out && (!training || !atomic_load(&r.compute_done))) s_pump(&r, 100);

    s_log_view(&r);
    // Graceful leave: tell every live member, keep answering for a protocol period so it spreads.
    uint64_t now = s_mono_ms(), t_leave = now;
    int signalled = *stop != 0; // SIGINT/SIGTERM: the stop's duration is logged (README "Stopping a node")
    log_info("run", "leaving the swarm");
    gossip_members_leave(r.gm, now);
    s_flush_outbox(&r);
    uint64_t until = now + (uint64_t)cfg->gossip_period_ms;
    while (s_mono_ms() < until) s_pump(&r, 50);
    if (training) {
        *stop = 1;
        pthread_join(compute, NULL);
    }
    s_drain_events(&r);
    s_cache_write(&r);
    net_node_log_stats(r.net);
    int rc = atomic_load(&r.compute_done) == 2 || r.refused_out ? 1 : 0;
    s_ops_stop(&r);
    metrics_close(&r.mx);
    outer_run_destroy(&r.outer);
    gossip_members_destroy(&r.gm);
    net_node_destroy(&r.net);
    free(r.info);
    free(r.dialed);
    free(r.plan);
    if (signalled) log_info("run", "stopped %.2f s after the stop signal", (double)(s_mono_ms() - t_leave) / 1000);
    else log_info("run", "stopped");
    return rc;
}
