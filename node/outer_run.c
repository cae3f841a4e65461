#include "node/outer_run.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/fingerprint.h"
#include "net/frame.h"
#include "node/catchup.h"
#include "node/log.h"
#include "node/telemetry.h"
#include "node/train_loop.h"
#include "node/window.h"
#include "optim/codec.h"
#include "optim/outer.h"

#define PEND_MAX 4096
#define OUTER_MAX_MEMBERS 1024
#define HIST 8

// What a pending entry holds. Tensors carry quantity = kind << 24 | chunk.
enum { P_META = 1, P_DELTA, P_DRIFT, P_READY, P_PARTMETA, P_PART, P_REDMETA, P_RED, P_DECLINE };
enum { Q_DELTA = 1, Q_DRIFT = 2, Q_PART = 3, Q_RED = 4 }; // 7: catch-up chunks (node/catchup.h)
// Result kinds.
enum { RES_MEAN = 1, RES_REFETCH = 2 };
// Exchange phases on the net thread.
enum { PH_IDLE = 0, PH_NOLOCO, PH_READY, PH_REDUCE, PH_REFETCH };
// A member's state in the current exchange.
enum { M_WAIT = 0, M_DONE = 1, M_GONE = 2 };

typedef struct {
    int kind;
    uint8_t peer[32];
    uint64_t round;
    uint32_t chunk, steps;
    uint64_t value;        // META/READY: the sender's last-round flag
    uint8_t hash[32];
    float *data;
    size_t n;
} pend_t;

struct outer_run_t {
    outer_env_t env;
    loco_config_t cfg;
    int diloco, codec, ef;
    size_t chunk_bytes;
    outer_hparams_t hp;

    // Mailbox (mu): compute → net: posted, post_*; net → compute: done, res_*.
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int posted, done;
    uint64_t post_round;
    uint32_t post_steps;
    int post_last, res_last;
    uint8_t post_hash[32];
    int res_kind, res_contributors, res_expected, res_short;
    uint64_t res_round, res_tx, res_rx;
    uint64_t res_step;             // RES_REFETCH: the inner step of the version fetched
    double res_exchange_s;
    char res_group[16 * 20 + 64];
    _Atomic uint64_t cur_round;    // the round the compute thread is running
    uint64_t cur_step;             // compute thread: inner steps done (for the published version)
    _Atomic uint64_t ready_above;  // > cur_round: a partner is ready, end the round (pacing)
    atomic_int view_n, training;   // training members in view (until training starts)
    net_waker_t *waker;

    // Buffers: allocated by the compute thread before its first post; the net thread reads phi,
    // phi0, delta, drift and writes mean_delta/mean_phi only between a post and its result.
    size_t n;
    float *phi, *mom, *phi0, *delta, *drift, *resid, *mean_delta, *mean_phi, *scratch;
    // The last completed outer state φ ‖ momentum, for peers that catch up (node/catchup.h): the
    // compute thread copies it here after every outer step (mu); the net thread publishes it when a
    // peer asks for a version.
    float *srv_state;
    uint64_t srv_next_round, srv_step;
    int srv_dirty;
    catchup_t *cu;
    uint64_t cu_retry_ms;
    uint8_t (*cu_donors)[32];
    int cu_ndonors;
    uint64_t cu_min_round;
    int cu_sized;
    int restored_outer;            // the resumed checkpoint held an outer state
    uint8_t last_hash[32];         // of the anchor φ as it is now (taken when φ changes)
    uint8_t phi0_hash[32];         // of the run's initial weights φ₀
    // Robust acceptance (see s_check): recent accepted RMS norms, and offenders.
    double norm_hist[16];
    int nnorm;
    struct { uint8_t id[32]; uint64_t strikes_round[3]; int nstrikes; uint64_t refused_until; } bad[64];
    int nbad;
    useconds_t step_delay_us;      // LOCO_TEST_STEP_DELAY_MS (tests: a peer k× slower)
    char hold_file[256];           // LOCO_TEST_HOLD_FILE: results are held while this file exists
    float poison;                  // LOCO_TEST_POISON: scale our own Δ by this (a hostile peer)
    int held;

    // Net thread: the exchange in progress.
    int phase;
    uint64_t round, t_begin_ms, deadline_ms, ready_deadline_ms;
    uint8_t (*mem)[32];            // group partners (NoLoCo) or R (DiLoCo, self included)
    int nm, self_k, reduced, ready_expected;
    int *mstate;
    uint32_t *msteps;
    uint8_t rhash[32];
    uint64_t tx0, rx0, round_hint;
    uint8_t (*view)[32];
    int *group_of;
    pend_t *pend;
    int npend;
    double hist[HIST];
    int nhist;
    outer_stats_t st;
};

static uint64_t s_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void s_short(const uint8_t id[32], char out[17]) {
    char hex[NET_ID_HEX];
    net_id_to_hex(id, hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

// ---------------------------------------------------------------------------------------------
// Pending messages and tensors, keyed by (kind, peer, round, chunk)

static void s_pend_free(pend_t *p) {
    free(p->data);
    memset(p, 0, sizeof *p);
}

static pend_t *s_pend_find(outer_run_t *o, int kind, const uint8_t peer[32], uint64_t round, uint32_t chunk) {
    for (int i = 0; i < o->npend; i++) {
        pend_t *p = &o->pend[i];
        if (p->kind == kind && p->round == round && p->chunk == chunk && !memcmp(p->peer, peer, 32)) return p;
    }
    return NULL;
}

static pend_t *s_pend_add(outer_run_t *o, int kind, const uint8_t peer[32], uint64_t round, uint32_t chunk) {
    pend_t *p = s_pend_find(o, kind, peer, round, chunk);
    if (p) { // a repeat replaces the earlier one
        free(p->data);
        p->data = NULL;
        return p;
    }
    if (o->npend == PEND_MAX) { // full: the entry of the oldest round goes
        int victim = 0;
        for (int i = 1; i < o->npend; i++)
            if (o->pend[i].round < o->pend[victim].round) victim = i;
        s_pend_free(&o->pend[victim]);
        o->pend[victim] = o->pend[--o->npend];
        o->st.rejected++;
    }
    p = &o->pend[o->npend++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    memcpy(p->peer, peer, 32);
    p->round = round;
    p->chunk = chunk;
    return p;
}

static void s_pend_drop_below(outer_run_t *o, uint64_t round) {
    for (int i = 0; i < o->npend;) {
        if (o->pend[i].round < round) {
            s_pend_free(&o->pend[i]);
            o->pend[i] = o->pend[--o->npend];
        } else {
            i++;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Views, groups, sending

// The live training members of this peer's view, sorted by id (self included). Returns the count.
static int s_view(outer_run_t *o) {
    static gossip_member_info_t info[OUTER_MAX_MEMBERS];
    size_t n = gossip_members_live(o->env.gm, info, OUTER_MAX_MEMBERS);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!info[i].is_self && (!info[i].record || info[i].record->caps.step_rate_milli == 0)) continue;
        if (!info[i].is_self && o->env.member_ok && !o->env.member_ok(o->env.hook_ctx, info[i].id)) continue;
        memcpy(o->view[k++], info[i].id, 32);
    }
    return k;
}

static int s_self_index(outer_run_t *o, int nv) {
    const uint8_t *self = gossip_members_self_id(o->env.gm);
    for (int i = 0; i < nv; i++)
        if (!memcmp(o->view[i], self, 32)) return i;
    return -1;
}

// Is `peer` in this peer's NoLoCo group for `round` (by the current view)?
static int s_in_group(outer_run_t *o, const uint8_t peer[32], uint64_t round) {
    int nv = s_view(o), me = s_self_index(o, nv);
    if (me < 0 || nv < 2) return 0;
    outer_groups(o->env.fp, 32, round, nv, o->cfg.group_size, o->group_of);
    for (int i = 0; i < nv; i++)
        if (i != me && o->group_of[i] == o->group_of[me] && !memcmp(o->view[i], peer, 32)) return 1;
    return 0;
}

// Alive or suspect in our view (a dead or departed member will not deliver).
static int s_alive(outer_run_t *o, const uint8_t id[32]) {
    gossip_member_info_t mi;
    if (gossip_members_get(o->env.gm, id, &mi) != 0) return 0;
    return mi.state == GOSSIP_ALIVE || mi.state == GOSSIP_SUSPECT;
}

static int s_send_msg(outer_run_t *o, const uint8_t to[32], int type, uint64_t round, const void *p, size_t len) {
    char err[300];
    if (net_node_send(o->env.net, to, (uint16_t)type, round, p, len, 1000, err, sizeof err) == 0) return 0;
    if (o->env.connect && o->env.connect(o->env.ctx, to) == 0 &&
        net_node_send(o->env.net, to, (uint16_t)type, round, p, len, 1000, err, sizeof err) == 0)
        return 0;
    char who[17];
    s_short(to, who);
    log_debug("outer", "cannot send to %s: %s", who, err);
    return -1;
}

// Queues a tensor for `to` (net_node_queue_tensor: sent from a private copy, chunk by chunk, while the
// net thread goes on with gossip and other transfers). The copy frees the caller's buffer at once:
// the next round may rewrite it while a slow partner is still receiving this one.
static int s_send_tensor_chunked(outer_run_t *o, const uint8_t to[32], uint32_t quantity, uint64_t round, int codec,
                                 const float *x, size_t n, float *resid, size_t chunk) {
    char err[300];
    // Bandwidth-bound, not deadline-bound: a transfer the partner is still waiting for must not be
    // abandoned because our own deadline is near; transfers to partners that leave the exchange are
    // cancelled instead (s_complete).
    int timeout = (int)(o->deadline_ms > s_mono_ms() ? o->deadline_ms - s_mono_ms() : 0);
    if (timeout < 120000) timeout = 120000;
    if (net_node_queue_tensor(o->env.net, to, quantity, round, codec, x, n, resid, 1, chunk, timeout, err, sizeof err) == 0)
        return 0;
    if (o->env.connect && o->env.connect(o->env.ctx, to) == 0 &&
        net_node_queue_tensor(o->env.net, to, quantity, round, codec, x, n, resid, 1, chunk, timeout, err, sizeof err) == 0)
        return 0;
    char who[17];
    s_short(to, who);
    log_warn("outer", "round %llu: cannot send to %s: %s", (unsigned long long)round, who, err);
    return -1;
}

static int s_send_tensor(outer_run_t *o, const uint8_t to[32], uint32_t quantity, uint64_t round, int codec,
                         const float *x, size_t n, float *resid) {
    return s_send_tensor_chunked(o, to, quantity, round, codec, x, n, resid, 0);
}

// The round this peer exchanges next: the exchange in progress; else a posted one the net thread has
// not begun yet (with overlap the compute thread is already a round further, so its round would
// tell a late partner a round we have not closed, and it would skip a round we still wait for it
// in); else the round the compute thread runs.
static uint64_t s_mine(outer_run_t *o) {
    if (o->phase != PH_IDLE) return o->round;
    pthread_mutex_lock(&o->mu);
    uint64_t r = o->posted && !o->done ? o->post_round : atomic_load(&o->cur_round);
    pthread_mutex_unlock(&o->mu);
    return r;
}

// Has this member already sent for a round after ours? Then it will not take part in ours.
static int s_moved_on(outer_run_t *o, const uint8_t peer[32]) {
    for (int i = 0; i < o->npend; i++) {
        pend_t *p = &o->pend[i];
        if ((p->kind == P_READY || p->kind == P_META) && p->round > o->round && !memcmp(p->peer, peer, 32)) return 1;
    }
    return 0;
}

static uint64_t s_outer_bytes(const net_stats_t *s, int rx) {
    const uint64_t *b = rx ? s->rx_bytes : s->tx_bytes;
    uint64_t sum = b[NET_MSG_CHUNK];
    for (int t = OUTER_MSG_FIRST; t <= OUTER_MSG_LAST; t++) sum += b[t];
    return sum;
}

static uint64_t s_deadline_span(const outer_run_t *o) {
    if (o->cfg.deadline_ms > 0) return (uint64_t)o->cfg.deadline_ms;
    double worst = 0;
    for (int i = 0; i < o->nhist && i < HIST; i++)
        if (o->hist[i] > worst) worst = o->hist[i];
    uint64_t d = (uint64_t)(4.0 * worst * 1000.0);
    return d < 10000 ? 10000 : d;
}

// ---------------------------------------------------------------------------------------------
// NoLoCo

static void s_noloco_begin(outer_run_t *o, uint64_t round) {
    o->phase = PH_NOLOCO;
    o->round = round;
    o->nm = 0;
    int nv = s_view(o), me = s_self_index(o, nv);
    if (me >= 0 && nv >= 2) {
        outer_groups(o->env.fp, 32, round, nv, o->cfg.group_size, o->group_of);
        for (int i = 0; i < nv; i++)
            if (i != me && o->group_of[i] == o->group_of[me]) {
                memcpy(o->mem[o->nm], o->view[i], 32);
                o->mstate[o->nm++] = M_WAIT;
            }
    }
    uint8_t meta[5];
    net_put_u32(meta, o->post_steps);
    meta[4] = (uint8_t)o->post_last;
    for (int k = 0; k < o->nm; k++) {
        int ok = s_send_msg(o, o->mem[k], OUTER_MSG_META, round, meta, sizeof meta) == 0;
        ok = ok && s_send_tensor(o, o->mem[k], (uint32_t)Q_DELTA << 24, round, o->codec, o->delta, o->n,
                                 o->ef ? o->resid : NULL) == 0;
        // The drift is a state, not an increment: no error feedback (ALGORITHMS.md).
        ok = ok && s_send_tensor(o, o->mem[k], (uint32_t)Q_DRIFT << 24, round, o->codec, o->drift, o->n, NULL) == 0;
        if (!ok) o->mstate[k] = M_GONE;
    }
}

static int s_finite(const float *x, size_t n) {
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f; // NaN or Inf anywhere makes acc NaN
    return acc == 0.0f;
}

static double s_rms(const float *x, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return n ? sqrt(ss / (double)n) : 0;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// The offender entry of id (created when add).
static int s_bad_index(outer_run_t *o, const uint8_t id[32], int add) {
    for (int i = 0; i < o->nbad; i++)
        if (!memcmp(o->bad[i].id, id, 32)) return i;
    if (!add) return -1;
    int i = o->nbad < 64 ? o->nbad++ : (int)(o->round % 64);
    memset(&o->bad[i], 0, sizeof o->bad[i]);
    memcpy(o->bad[i].id, id, 32);
    return i;
}

// Is this peer's contribution refused for now (a repeated offender)?
static int s_refused(outer_run_t *o, const uint8_t id[32]) {
    int i = s_bad_index(o, id, 0);
    return i >= 0 && o->round < o->bad[i].refused_until;
}

// Counts a rejection; three within ten rounds refuse the peer's contributions for the next twenty.
static void s_strike(outer_run_t *o, const uint8_t id[32], const char *why) {
    char who[17];
    s_short(id, who);
    o->st.rejected++;
    log_warn("outer", "round %llu: rejected the contribution of %s: %s", (unsigned long long)o->round, who, why);
    metrics_write(o->env.mx, "reject", 0, "\"round\":%llu,\"from\":\"%s\",\"reason\":\"%s\"",
                  (unsigned long long)o->round, who, why);
    telemetry_reject(o->env.mx, why);
    int i = s_bad_index(o, id, 1);
    int k = 0;
    for (int j = 0; j < o->bad[i].nstrikes; j++)
        if (o->bad[i].strikes_round[j] + 10 > o->round) o->bad[i].strikes_round[k++] = o->bad[i].strikes_round[j];
    if (k == 3) k = 2;
    o->bad[i].strikes_round[k++] = o->round;
    o->bad[i].nstrikes = k;
    if (k >= 3) {
        o->bad[i].refused_until = o->round + 20;
        o->bad[i].nstrikes = 0;
        o->st.refused_peers++;
        log_warn("outer", "%s: three rejected contributions within ten rounds: refusing its contributions until round %llu",
                 who, (unsigned long long)o->bad[i].refused_until);
    }
}

// Robust acceptance of a received pseudo-gradient x (n values) from h inner steps: finite, and its
// RMS per inner step at most [outer] max_norm_ratio times the larger of our own (own_rms over
// own_h steps) and the median of recently accepted ones. Honest peers on the same data
// distribution and learning-rate schedule move their weights by similar amounts per step; a
// scaled-up or random pseudo-gradient stands out by orders of magnitude. Per step, because pacing
// makes rounds of different lengths. Returns NULL when accepted, else the reason (static buffer).
static const char *s_check(outer_run_t *o, const float *x, size_t n, uint32_t h, double own_rms, uint32_t own_h) {
    static char why[160];
    if (!s_finite(x, n)) return "not finite";
    double rms = s_rms(x, n) / (h ? h : 1);
    double ref = own_rms / (own_h ? own_h : 1);
    if (o->nnorm > 0) {
        double h[16];
        int k = o->nnorm < 16 ? o->nnorm : 16;
        memcpy(h, o->norm_hist, (size_t)k * sizeof(double));
        qsort(h, (size_t)k, sizeof(double), s_cmp_double);
        if (h[k / 2] > ref) ref = h[k / 2];
    }
    if (o->cfg.max_norm_ratio > 0 && ref > 0 && rms > o->cfg.max_norm_ratio * ref) {
        snprintf(why, sizeof why, "RMS per inner step %.3g is over %g x the reference %.3g", rms,
                 (double)o->cfg.max_norm_ratio, ref);
        return why;
    }
    o->norm_hist[o->nnorm++ % 16] = rms;
    return NULL;
}

static void s_noloco_finish(outer_run_t *o) {
    const float *xs[OUTER_MAX_MEMBERS + 1], *ds[OUTER_MAX_MEMBERS + 1];
    double w[OUTER_MAX_MEMBERS + 1];
    int k = 0;
    xs[k] = o->delta;
    w[k++] = o->post_steps;
    double own_rms = s_rms(o->delta, o->n), own_drift = s_rms(o->drift, o->n);
    char *g = o->res_group;
    g += sprintf(g, "[");
    for (int j = 0; j < o->nm; j++) {
        if (o->mstate[j] != M_DONE) continue;
        pend_t *m = s_pend_find(o, P_META, o->mem[j], o->round, 0);
        pend_t *d = s_pend_find(o, P_DELTA, o->mem[j], o->round, 0);
        pend_t *f = s_pend_find(o, P_DRIFT, o->mem[j], o->round, 0);
        char who[17];
        s_short(o->mem[j], who);
        const char *why = NULL;
        if (s_refused(o, o->mem[j])) why = "refused for now (a repeated offender)";
        else if (!m || !d || !f || d->n != o->n || f->n != o->n) why = "incomplete or wrong size";
        else if (m->steps > o->cfg.inner_steps) why = "claims more inner steps than H";
        else if (!(why = s_check(o, d->data, d->n, m->steps, own_rms, o->post_steps)) && !s_finite(f->data, f->n))
            why = "anchor drift not finite";
        else if (!why && o->cfg.max_norm_ratio > 0 && s_rms(f->data, f->n) > o->cfg.max_norm_ratio * (own_drift + own_rms))
            why = "anchor drift far larger than ours";
        if (why) {
            if (s_refused(o, o->mem[j])) o->st.rejected++;
            else s_strike(o, o->mem[j], why);
            o->mstate[j] = M_GONE;
            continue;
        }
        ds[k] = f->data;
        xs[k] = d->data;
        w[k++] = m->steps;
        // (NoLoCo peers each run their own [train] steps: anchors differ by design, nothing to keep equal.)
        if (g - o->res_group < 16 * 20) g += sprintf(g, "%s\"%s\"", k > 2 ? "," : "", who);
    }
    sprintf(g, "]");
    // Weighted mean of Δ (weights: inner steps run; a peer with none still pulls by its anchor).
    double wsum = 0;
    for (int i = 0; i < k; i++) wsum += w[i];
    if (wsum <= 0) for (int i = 0; i < k; i++) w[i] = 1;
    outer_weighted_mean(o->mean_delta, xs, w, k, o->n);
    // Mean anchor: our own exactly, the partners' rebuilt from φ₀ + drift, summed in a fixed order.
    float inv = 1.0f / (float)k;
    for (size_t i = 0; i < o->n; i++) {
        float s = o->phi[i];
        for (int j = 1; j < k; j++) s += o->phi0[i] + ds[j][i];
        o->mean_phi[i] = s * inv;
    }
    o->res_kind = RES_MEAN;
    o->res_contributors = k;
    o->res_expected = o->nm + 1;
}

// ---------------------------------------------------------------------------------------------
// DiLoCo

static void s_chunk_range(const outer_run_t *o, int c, int M, size_t *lo, size_t *hi) {
    *lo = (size_t)((unsigned __int128)o->n * (unsigned)c / (unsigned)M);
    *hi = (size_t)((unsigned __int128)o->n * (unsigned)(c + 1) / (unsigned)M);
}

static void s_diloco_begin(outer_run_t *o, uint64_t round) {
    o->phase = PH_READY;
    o->round = round;
    o->reduced = 0;
    int nv = s_view(o);
    o->ready_expected = nv;
    uint8_t msg[37];
    net_put_u32(msg, o->post_steps);
    memcpy(msg + 4, o->post_hash, 32);
    msg[36] = (uint8_t)o->post_last;
    const uint8_t *self = gossip_members_self_id(o->env.gm);
    for (int i = 0; i < nv; i++)
        if (memcmp(o->view[i], self, 32) != 0) s_send_msg(o, o->view[i], OUTER_MSG_READY, round, msg, sizeof msg);
    o->ready_deadline_ms = o->t_begin_ms + (o->deadline_ms - o->t_begin_ms) / 2;
}

static int s_cmp_id(const void *a, const void *b) { return memcmp(a, b, 32); }

// Starts catching up (phase PH_REFETCH) from the k donors in o->cu_donors to a version of round
// ≥ min_round. Donors that have not finished that round yet answer NACK: the attempt is repeated
// every half second until the exchange's deadline.
static void s_catchup_start(outer_run_t *o, int k, uint64_t min_round, uint64_t now) {
    o->phase = PH_REFETCH;
    // A catch-up is not bound to one exchange's deadline: give it 30 s at least (it ends earlier when
    // every donor is gone).
    if (o->deadline_ms < now + 30000) o->deadline_ms = now + 30000;
    o->cu_ndonors = k;
    o->cu_min_round = min_round;
    o->cu_retry_ms = now + 500;
    log_info("outer", "round %llu: catching up: asking %d donor%s for the outer state of round %llu or later",
             (unsigned long long)o->round, k, k == 1 ? "" : "s", (unsigned long long)min_round);
    if (k == 0 || catchup_begin(o->cu, (const uint8_t (*)[32])o->cu_donors, k, min_round) != 0)
        log_warn("outer", "catch-up could not start: %s", catchup_error(o->cu));
}

// READY phase over: fix R (or decide to re-fetch) and send our parts.
static void s_diloco_fix(outer_run_t *o) {
    const uint8_t *self = gossip_members_self_id(o->env.gm);
    // Candidates: us and every READY sender of this round.
    int nc = 0;
    uint8_t (*ids)[32] = o->view; // reuse as scratch
    static uint8_t hashes[OUTER_MAX_MEMBERS][32];
    static uint32_t steps[OUTER_MAX_MEMBERS];
    static int lasts[OUTER_MAX_MEMBERS];
    lasts[nc] = o->post_last;
    memcpy(ids[nc], self, 32), memcpy(hashes[nc], o->post_hash, 32), steps[nc++] = o->post_steps;
    for (int i = 0; i < o->npend && nc < OUTER_MAX_MEMBERS; i++) {
        pend_t *p = &o->pend[i];
        if (p->kind != P_READY || p->round != o->round) continue;
        lasts[nc] = (int)p->value;
        memcpy(ids[nc], p->peer, 32), memcpy(hashes[nc], p->hash, 32), steps[nc++] = p->steps;
    }
    // The majority anchor hash (ties: the smallest hash). The initial weights' hash is no anchor a
    // round produced: it wins only when nobody holds another (round 0), so joiners that start from
    // φ₀ never outvote, on a tie, the members that trained.
    int trained = 0;
    for (int i = 0; i < nc; i++) trained |= memcmp(hashes[i], o->phi0_hash, 32) != 0;
    int best = -1, best_count = 0;
    for (int i = 0; i < nc; i++) {
        if (trained && !memcmp(hashes[i], o->phi0_hash, 32)) continue;
        int c = 0;
        for (int j = 0; j < nc; j++) c += !memcmp(hashes[i], hashes[j], 32);
        if (best < 0 || c > best_count || (c == best_count && memcmp(hashes[i], hashes[best], 32) < 0)) best = i, best_count = c;
    }
    if (memcmp(hashes[best], o->post_hash, 32) != 0) {
        // Our anchor is not the round's: catch up to the state this round produces (version ≥ r + 1)
        // from the members that hold the majority's anchor, in parallel.
        log_warn("outer", "round %llu: our anchor differs from the majority's (%d of %d members): catching up",
                 (unsigned long long)o->round, best_count, nc);
        int k = 0;
        for (int i = 0; i < nc && k < CATCHUP_MAX_DONORS; i++)
            if (!memcmp(hashes[i], hashes[best], 32)) memcpy(o->cu_donors[k++], ids[i], 32);
        s_catchup_start(o, k, o->round + 1, s_mono_ms());
        return;
    }
    o->nm = 0;
    for (int i = 0; i < nc; i++)
        if (!memcmp(hashes[i], hashes[best], 32)) {
            memcpy(o->mem[o->nm], ids[i], 32);
            o->msteps[o->nm++] = steps[i];
            if (lasts[i]) o->res_last = 1; // every member of R sees the same READYs: they all stop together
        }
    // Sort R by id, carrying the steps along.
    for (int i = 1; i < o->nm; i++)
        for (int j = i; j > 0 && s_cmp_id(o->mem[j - 1], o->mem[j]) > 0; j--) {
            uint8_t t[32];
            memcpy(t, o->mem[j], 32), memcpy(o->mem[j], o->mem[j - 1], 32), memcpy(o->mem[j - 1], t, 32);
            uint32_t s = o->msteps[j];
            o->msteps[j] = o->msteps[j - 1], o->msteps[j - 1] = s;
        }
    for (int i = 0; i < o->nm; i++) {
        o->mstate[i] = M_WAIT;
        if (!memcmp(o->mem[i], self, 32)) o->self_k = i, o->mstate[i] = M_DONE;
    }
    // R-hash: SHA-256(round ‖ sorted ids).
    size_t blen = 8 + 32 * (size_t)o->nm;
    uint8_t *buf = malloc(blen);
    if (buf) {
        net_put_u64(buf, o->round);
        memcpy(buf + 8, o->mem, 32 * (size_t)o->nm);
        net_sha256(buf, blen, o->rhash);
        free(buf);
    }
    if (o->nm < o->ready_expected) {
        log_warn("outer", "round %llu: %d of the %d members in view take part (the others were not ready in time, "
                 "dead, or on another anchor)", (unsigned long long)o->round, o->nm, o->ready_expected);
        o->res_short = 1;
    }
    o->phase = PH_REDUCE;
    uint8_t meta[36];
    memcpy(meta, o->rhash, 32);
    for (int c = 0; c < o->nm; c++) {
        if (c == o->self_k) continue;
        size_t lo, hi;
        s_chunk_range(o, c, o->nm, &lo, &hi);
        net_put_u32(meta + 32, (uint32_t)c);
        int ok = s_send_msg(o, o->mem[c], OUTER_MSG_PART, o->round, meta, sizeof meta) == 0;
        ok = ok && s_send_tensor(o, o->mem[c], (uint32_t)Q_PART << 24 | (uint32_t)c, o->round, o->codec,
                                 o->delta + lo, hi - lo, o->ef ? o->resid + lo : NULL) == 0;
        if (!ok) o->mstate[c] = M_GONE; // its chunk will not come back either
    }
}

// The owner's reduce of its chunk, then the all-gather of the encoded result.
static void s_diloco_reduce(outer_run_t *o) {
    size_t lo, hi;
    s_chunk_range(o, o->self_k, o->nm, &lo, &hi);
    size_t len = hi - lo;
    const float *xs[OUTER_MAX_MEMBERS];
    double w[OUTER_MAX_MEMBERS];
    int k = 0, expected = o->nm;
    xs[k] = o->delta + lo;
    w[k++] = o->msteps[o->self_k];
    double own_rms = s_rms(o->delta + lo, len);
    for (int j = 0; j < o->nm; j++) {
        if (j == o->self_k) continue;
        pend_t *m = s_pend_find(o, P_PARTMETA, o->mem[j], o->round, (uint32_t)o->self_k);
        pend_t *d = s_pend_find(o, P_PART, o->mem[j], o->round, (uint32_t)o->self_k);
        if (!m || !d) continue;
        char who[17];
        s_short(o->mem[j], who);
        const char *why = NULL;
        if (s_refused(o, o->mem[j])) why = "refused for now (a repeated offender)";
        else if (memcmp(m->hash, o->rhash, 32) != 0) why = "counts other members in this round";
        else if (d->n != len) why = "wrong size";
        else if (o->msteps[j] > o->cfg.inner_steps) why = "claims more inner steps than H";
        else why = s_check(o, d->data, d->n, o->msteps[j], own_rms, o->msteps[o->self_k]);
        if (why) {
            if (!strcmp(why, "counts other members in this round") || s_refused(o, o->mem[j])) {
                log_warn("outer", "round %llu: left out the part of %s: %s", (unsigned long long)o->round, who, why);
                o->st.rejected++;
            } else {
                s_strike(o, o->mem[j], why);
            }
            continue;
        }
        xs[k] = d->data;
        w[k++] = o->msteps[j];
    }
    double wsum = 0;
    for (int i = 0; i < k; i++) wsum += w[i];
    if (wsum <= 0) for (int i = 0; i < k; i++) w[i] = 1;
    // The raw mean goes on the wire; the transfer encodes it chunk by chunk, and we apply exactly
    // what the receivers will decode: the same encoding of the same values, split the same way.
    float *raw = o->scratch + lo, *out = o->mean_delta + lo;
    outer_weighted_mean(raw, xs, w, k, len);
    // One chunk size for every member (the smallest any of them needs under the caps): the split
    // decides the encoding, and every member must decode the same values we apply.
    size_t chunk = net_node_chunk_bytes(o->env.net);
    for (int j = 0; j < o->nm; j++) {
        if (j == o->self_k) continue;
        size_t c = net_node_chunk_bytes_for(o->env.net, o->mem[j]);
        if (c < chunk) chunk = c;
    }
    size_t per = codec_chunk_elems(o->codec, chunk);
    uint8_t *enc = malloc(codec_encoded_size(o->codec, per < len ? per : (len ? len : 1)));
    for (size_t off = 0; off < len; off += per) {
        size_t m = len - off < per ? len - off : per;
        if (!enc || codec_encode(o->codec, raw + off, m, enc, out + off) != 0) memset(out + off, 0, m * sizeof(float));
    }
    free(enc);
    o->res_contributors = k;
    if (k < expected)
        log_warn("outer", "round %llu: chunk %d reduced over %d of %d members", (unsigned long long)o->round, o->self_k,
                 k, expected);
    uint8_t meta[40];
    memcpy(meta, o->rhash, 32);
    net_put_u32(meta + 32, (uint32_t)o->self_k);
    net_put_u32(meta + 36, (uint32_t)k);
    for (int j = 0; j < o->nm; j++) {
        if (j == o->self_k || o->mstate[j] == M_GONE) continue;
        if (s_send_msg(o, o->mem[j], OUTER_MSG_REDUCED, o->round, meta, sizeof meta) != 0 ||
            s_send_tensor_chunked(o, o->mem[j], (uint32_t)Q_RED << 24 | (uint32_t)o->self_k, o->round, o->codec, raw, len,
                                  NULL, chunk) != 0)
            o->mstate[j] = M_GONE;
    }
    o->reduced = 1;
}

// Collects the reduced chunks that arrived. Returns 1 when every chunk is here.
static int s_diloco_collect(outer_run_t *o) {
    int all = 1;
    for (int c = 0; c < o->nm; c++) {
        if (c == o->self_k || o->mstate[c] == M_DONE) continue;
        pend_t *m = s_pend_find(o, P_REDMETA, o->mem[c], o->round, (uint32_t)c);
        pend_t *d = s_pend_find(o, P_RED, o->mem[c], o->round, (uint32_t)c);
        size_t lo, hi;
        s_chunk_range(o, c, o->nm, &lo, &hi);
        if (m && d) {
            if (memcmp(m->hash, o->rhash, 32) != 0 || d->n != hi - lo || !s_finite(d->data, d->n)) {
                char who[17];
                s_short(o->mem[c], who);
                log_warn("outer", "round %llu: rejected chunk %d from %s", (unsigned long long)o->round, c, who);
                o->st.rejected++;
                s_pend_free(d);
                d->kind = 0;
                all = 0;
                continue;
            }
            memcpy(o->mean_delta + lo, d->data, (hi - lo) * sizeof(float));
            o->mstate[c] = M_DONE;
            continue;
        }
        all = 0;
    }
    return all;
}

static void s_diloco_finish(outer_run_t *o) {
    int missing = 0;
    char *g = o->res_group;
    g += sprintf(g, "[");
    for (int c = 0; c < o->nm; c++) {
        char who[17];
        s_short(o->mem[c], who);
        if (g - o->res_group < 16 * 20) g += sprintf(g, "%s\"%s\"", c ? "," : "", who);
        if (c == o->self_k || o->mstate[c] == M_DONE) continue;
        size_t lo, hi;
        s_chunk_range(o, c, o->nm, &lo, &hi);
        memset(o->mean_delta + lo, 0, (hi - lo) * sizeof(float)); // a missing chunk counts as zero
        missing++;
        log_warn("outer", "round %llu: chunk %d from %s missing at the deadline: counted as zero",
                 (unsigned long long)o->round, c, who);
    }
    sprintf(g, "]");
    if (!o->reduced) o->res_contributors = 1;
    o->res_kind = RES_MEAN;
    o->res_expected = o->nm;
    o->res_short |= missing > 0 || o->res_contributors < o->nm;
}

// ---------------------------------------------------------------------------------------------
// The exchange on the net thread

static void s_begin(outer_run_t *o, uint64_t round, uint64_t now) {
    o->t_begin_ms = now;
    o->deadline_ms = now + s_deadline_span(o);
    o->res_short = 0;
    o->res_last = o->diloco && o->post_last;
    o->res_group[0] = '\0';
    s_pend_drop_below(o, round);
    if (o->diloco) s_diloco_begin(o, round);
    else s_noloco_begin(o, round);
}

static void s_complete(outer_run_t *o, uint64_t now) {
    // What we still queue for members that left this exchange would only hold up the link.
    if (o->phase == PH_NOLOCO || o->phase == PH_REDUCE)
        for (int j = 0; j < o->nm; j++)
            if (o->mstate[j] == M_GONE) net_node_cancel_queued(o->env.net, o->mem[j], o->round);
    const net_stats_t *s = net_node_stats(o->env.net);
    pthread_mutex_lock(&o->mu);
    o->res_round = o->round;
    o->res_tx = s_outer_bytes(s, 0) - o->tx0;
    o->res_rx = s_outer_bytes(s, 1) - o->rx0;
    o->res_exchange_s = (double)(now - o->t_begin_ms) / 1000.0;
    o->tx0 = s_outer_bytes(s, 0); // windows are contiguous: what arrives between rounds counts in the next
    o->rx0 = s_outer_bytes(s, 1);
    o->hist[o->nhist++ % HIST] = o->res_exchange_s;
    o->posted = 0;
    o->done = 1;
    o->phase = PH_IDLE;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

// A partner told us its round, or sent for a later one: move the exchange to that round.
static void s_retarget(outer_run_t *o, uint64_t round, uint64_t now) {
    log_info("outer", "round %llu: the group is at round %llu; joining it", (unsigned long long)o->round,
             (unsigned long long)round);
    s_begin(o, round, now);
}

void outer_run_tick(outer_run_t *o, uint64_t now) {
    if (o->held) {
        if (access(o->hold_file, F_OK) == 0) return;
        log_info("outer", "round %llu: test hook released", (unsigned long long)o->round);
        o->held = 0;
        s_complete(o, now);
        return;
    }
    if (!atomic_load(&o->training)) atomic_store(&o->view_n, s_view(o));
    else if (!o->cu_sized) {
        catchup_set_expected_n(o->cu, 2 * (uint64_t)o->n); // a version of another size is never accepted
        o->cu_sized = 1;
    }
    if (o->phase == PH_IDLE) {
        pthread_mutex_lock(&o->mu);
        int go = o->posted && !o->done;
        pthread_mutex_unlock(&o->mu);
        if (!go) return;
        // Join a later round where partners already are (two or more rounds ahead: see the header).
        uint64_t target = o->post_round;
        if (o->round_hint > target) target = o->round_hint; // a partner told us it is past our round
        for (int i = 0; i < o->npend; i++) {
            pend_t *p = &o->pend[i];
            if ((p->kind == P_META || p->kind == P_READY) && p->round >= target + 2 &&
                (o->diloco || s_in_group(o, p->peer, p->round)))
                target = p->round;
        }
        if (target != o->post_round)
            log_info("outer", "round %llu: partners are at round %llu; joining it", (unsigned long long)o->post_round,
                     (unsigned long long)target);
        // A NoLoCo joiner (no outer step yet) or a peer far behind takes a partner's outer state first
        // rather than pulling the swarm toward its stale anchor (DiLoCo does the same by anchor hash).
        if (!o->diloco && target >= o->post_round + 2 && (o->st.rounds == 0 || target >= o->post_round + 10)) {
            int k = 0;
            for (int i = 0; i < o->npend && k < CATCHUP_MAX_DONORS; i++) {
                pend_t *p = &o->pend[i];
                int dup = 0;
                for (int j = 0; j < k; j++) dup |= !memcmp(o->cu_donors[j], p->peer, 32);
                if (p->kind == P_META && p->round == target && !dup) memcpy(o->cu_donors[k++], p->peer, 32);
            }
            if (k == 0) { // told by ROUND_IS only: ask the training members we see
                int nv = s_view(o), me = s_self_index(o, nv);
                for (int i = 0; i < nv && k < 8; i++)
                    if (i != me) memcpy(o->cu_donors[k++], o->view[i], 32);
            }
            o->t_begin_ms = now;
            o->deadline_ms = now + s_deadline_span(o);
            o->res_short = 0;
            o->res_last = 0;
            o->res_group[0] = '\0';
            o->round = target;
            s_pend_drop_below(o, target);
            s_catchup_start(o, k, target, now);
        } else {
            s_begin(o, target, now);
        }
    }
    int finished = 0;
    switch (o->phase) {
    case PH_NOLOCO: {
        int waiting = 0;
        for (int j = 0; j < o->nm; j++) {
            if (o->mstate[j] != M_WAIT) continue;
            if (!s_alive(o, o->mem[j])) {
                char who[17];
                s_short(o->mem[j], who);
                log_warn("outer", "round %llu: %s is dead or left; the group shrinks", (unsigned long long)o->round, who);
                o->mstate[j] = M_GONE;
                continue;
            }
            if (s_pend_find(o, P_META, o->mem[j], o->round, 0) && s_pend_find(o, P_DELTA, o->mem[j], o->round, 0) &&
                s_pend_find(o, P_DRIFT, o->mem[j], o->round, 0)) {
                o->mstate[j] = M_DONE;
            } else if (!s_pend_find(o, P_META, o->mem[j], o->round, 0) && s_moved_on(o, o->mem[j])) {
                char who[17];
                s_short(o->mem[j], who);
                log_info("outer", "round %llu: %s has moved on to a later round; the group shrinks",
                         (unsigned long long)o->round, who);
                o->mstate[j] = M_GONE;
            } else {
                waiting++;
            }
        }
        if (waiting && now >= o->deadline_ms) {
            for (int j = 0; j < o->nm; j++)
                if (o->mstate[j] == M_WAIT) {
                    char who[17];
                    s_short(o->mem[j], who);
                    log_warn("outer", "round %llu: %s missed the deadline; the group shrinks", (unsigned long long)o->round, who);
                    o->mstate[j] = M_GONE;
                }
            waiting = 0;
        }
        if (!waiting) {
            s_noloco_finish(o);
            o->res_short = o->res_contributors < o->res_expected;
            finished = 1;
        }
        break;
    }
    case PH_READY: {
        int nv = s_view(o), all = 1;
        const uint8_t *self = gossip_members_self_id(o->env.gm);
        for (int i = 0; i < nv && all; i++)
            if (memcmp(o->view[i], self, 32) != 0 && !s_pend_find(o, P_READY, o->view[i], o->round, 0) &&
                !s_pend_find(o, P_DECLINE, o->view[i], o->round, 0) && !s_moved_on(o, o->view[i]))
                all = 0;
        if (all || now >= o->ready_deadline_ms) s_diloco_fix(o);
        if (o->phase != PH_REDUCE) break;
    }
    // fall through
    case PH_REDUCE: {
        if (!o->reduced) {
            int parts = 1;
            for (int j = 0; j < o->nm; j++)
                if (j != o->self_k && (!s_pend_find(o, P_PARTMETA, o->mem[j], o->round, (uint32_t)o->self_k) ||
                                       !s_pend_find(o, P_PART, o->mem[j], o->round, (uint32_t)o->self_k)))
                    parts = 0;
            uint64_t reduce_by = o->t_begin_ms + (o->deadline_ms - o->t_begin_ms) * 3 / 4;
            if (parts || now >= reduce_by) s_diloco_reduce(o);
        }
        for (int j = 0; j < o->nm; j++)
            if (j != o->self_k && o->mstate[j] == M_WAIT && !s_alive(o, o->mem[j])) o->mstate[j] = M_GONE;
        if (!o->reduced) {
            int parts = 1;
            for (int j = 0; j < o->nm; j++)
                if (j != o->self_k && o->mstate[j] != M_GONE &&
                    (!s_pend_find(o, P_PARTMETA, o->mem[j], o->round, (uint32_t)o->self_k) ||
                     !s_pend_find(o, P_PART, o->mem[j], o->round, (uint32_t)o->self_k)))
                    parts = 0;
            if (parts) s_diloco_reduce(o);
        }
        int gone_all = 1; // every chunk still missing is owned by a member that is gone
        for (int c = 0; c < o->nm; c++)
            if (c != o->self_k && o->mstate[c] == M_WAIT) gone_all = 0;
        if (o->reduced && (s_diloco_collect(o) || gone_all || now >= o->deadline_ms)) {
            s_diloco_finish(o);
            finished = 1;
        }
        break;
    }
    case PH_REFETCH: {
        int alive = 0;
        for (int i = 0; i < o->cu_ndonors; i++) { // a donor the failure detector gave up on: reassign now
            if (s_alive(o, o->cu_donors[i])) alive++;
            else catchup_donor_gone(o->cu, o->cu_donors[i]);
        }
        if (!alive && catchup_done(o->cu) != 1) o->deadline_ms = now; // nobody left to catch up from
        catchup_tick(o->cu, now);
        int d = catchup_done(o->cu);
        catchup_result_t cr;
        if (d == 1 && catchup_result(o->cu, &cr) == 0 && cr.n == 2 * o->n) {
            memcpy(o->mean_delta, cr.state, o->n * sizeof(float));        // φ
            memcpy(o->mean_phi, cr.state + o->n, o->n * sizeof(float));   // momentum
            if (cr.round > 0) o->round = cr.round - 1; // the compute thread continues at the version's round
            o->res_step = cr.inner_step;
            o->res_kind = RES_REFETCH;
            o->res_contributors = 1;
            o->res_expected = 1;
            snprintf(o->res_group, sizeof o->res_group, "[]");
            o->st.refetches++;
            finished = 1;
        } else if (now >= o->deadline_ms) {
            log_warn("outer", "round %llu: could not catch up in time (%s); applying our own pseudo-gradient alone",
                     (unsigned long long)o->round, d < 0 ? catchup_error(o->cu) : "still running");
            memcpy(o->mean_delta, o->delta, o->n * sizeof(float));
            memcpy(o->mean_phi, o->phi, o->n * sizeof(float));
            o->res_kind = RES_MEAN;
            o->res_contributors = 1;
            o->res_expected = 1;
            o->res_short = 1;
            snprintf(o->res_group, sizeof o->res_group, "[]");
            finished = 1;
        } else if (d != 0 && now >= o->cu_retry_ms) { // donors not there yet (NACK) or gone: ask again
            o->cu_retry_ms = now + 500;
            catchup_begin(o->cu, (const uint8_t (*)[32])o->cu_donors, o->cu_ndonors, o->cu_min_round);
        } else if (d == 0 && now >= o->cu_retry_ms) { // running: donors that had not finished the round yet join in
            o->cu_retry_ms = now + 500;
            for (int i = 0; i < o->cu_ndonors; i++) catchup_add_donor(o->cu, o->cu_donors[i]);
        }
        break;
    }
    default:
        break;
    }
    if (finished) {
        if (o->hold_file[0] && access(o->hold_file, F_OK) == 0) {
            log_info("outer", "round %llu: test hook: holding the result while %s exists", (unsigned long long)o->round,
                     o->hold_file);
            o->held = 1;
            return;
        }
        s_complete(o, now);
    }
}

// Net thread: hands the newest completed outer state to the catch-up module (on demand: hashing it
// every round would cost the net thread a pass over the state for nothing when nobody asks).
static void s_publish(outer_run_t *o) {
    pthread_mutex_lock(&o->mu);
    if (o->srv_dirty && catchup_publish(o->cu, o->srv_next_round, o->srv_step, o->srv_state, 2 * o->n) == 0)
        o->srv_dirty = 0;
    pthread_mutex_unlock(&o->mu);
}

int outer_run_on_event(outer_run_t *o, net_event_t *ev, uint64_t now) {
    // Catch-up messages and chunks go to the module; a version request first publishes our newest state.
    if ((ev->kind == NET_EV_MESSAGE && ev->type >= CATCHUP_MSG_FIRST && ev->type <= CATCHUP_MSG_LAST) ||
        (ev->kind == NET_EV_TENSOR && ev->quantity >> 24 == CATCHUP_KIND)) {
        if (ev->kind == NET_EV_MESSAGE && ev->type == CATCHUP_MSG_VERSION_REQ) s_publish(o);
        catchup_on_event(o->cu, ev, now);
        return 1;
    }
    if (ev->kind == NET_EV_TENSOR) {
        int kind = (int)(ev->quantity >> 24);
        uint32_t chunk = ev->quantity & 0xffffff;
        static const int map[] = {0, P_DELTA, P_DRIFT, P_PART, P_RED};
        if (kind < Q_DELTA || kind > Q_RED) return 0;
        if (o->phase != PH_IDLE && ev->round < o->round) return 1; // stale
        uint64_t mine = s_mine(o);
        // Bounded memory: whole-model tensors must have the model's size, chunks at most that, and
        // nothing is kept for rounds far ahead (a joiner learns those rounds from messages).
        int whole = kind == Q_DELTA || kind == Q_DRIFT;
        const char *bad = NULL;
        if (atomic_load(&o->training) && (whole ? ev->n != o->n : ev->n > o->n)) bad = "wrong size";
        else if (ev->round > mine + 64) bad = "for a round too far ahead";
        if (bad) {
            char who[17];
            s_short(ev->peer, who);
            log_warn("outer", "rejected a tensor (quantity %#x, round %llu, %zu values) from %s: %s", ev->quantity,
                     (unsigned long long)ev->round, ev->n, who, bad);
            o->st.rejected++;
            return 1;
        }
        pend_t *p = s_pend_add(o, map[kind], ev->peer, ev->round, chunk);
        p->data = ev->data;
        p->n = ev->n;
        ev->data = NULL;
        return 1;
    }
    if (ev->kind != NET_EV_MESSAGE || ev->type < OUTER_MSG_FIRST || ev->type > OUTER_MSG_LAST) return 0;
    const uint8_t *b = ev->payload;
    size_t len = ev->len;
    uint64_t r = ev->round;
    uint64_t mine = s_mine(o);
    char who[17];
    s_short(ev->peer, who);
    switch (ev->type) {
    case OUTER_MSG_META:
    case OUTER_MSG_READY: {
        int ready = ev->type == OUTER_MSG_READY;
        if (len != (ready ? 37u : 5u)) break;
        // A peer catching up keeps what arrives for the rounds ahead and does not decline them: the others
        // wait for its READY (up to half the deadline), which is what lets it enter the round whose
        // anchor it fetched; a decline would close that round to it and keep it catching up forever.
        if (r < mine) { // it waits for a round we passed: tell it where we are
            uint8_t m[8];
            net_put_u64(m, mine);
            s_send_msg(o, ev->peer, OUTER_MSG_ROUND_IS, r, m, sizeof m);
            break;
        }
        pend_t *p = s_pend_add(o, ready ? P_READY : P_META, ev->peer, r, 0);
        p->steps = net_get_u32(b);
        p->value = b[ready ? 36 : 4] == 1; // the sender's last round: the swarm's run ends with it
        if (ready) memcpy(p->hash, b + 4, 32);
        int partner = ready || s_in_group(o, ev->peer, r);
        // Pacing: a partner is ready for the round we compute or a later one; end ours after this step.
        if (partner && r >= atomic_load(&o->cur_round)) {
            uint64_t want = r + 1, cur = atomic_load(&o->ready_above);
            while (cur < want && !atomic_compare_exchange_weak(&o->ready_above, &cur, want)) {}
        }
        if (o->phase != PH_IDLE && o->phase != PH_REFETCH && partner && r >= o->round + 2 && !o->held)
            s_retarget(o, r, now);
        break;
    }
    case OUTER_MSG_PART:
    case OUTER_MSG_REDUCED: {
        int red = ev->type == OUTER_MSG_REDUCED;
        if (len != (red ? 40u : 36u) || r < mine) break;
        pend_t *p = s_pend_add(o, red ? P_REDMETA : P_PARTMETA, ev->peer, r, net_get_u32(b + 32));
        memcpy(p->hash, b, 32);
        if (o->phase == PH_REDUCE && r == o->round && memcmp(b, o->rhash, 32) != 0) {
            // It counts other members in this round than we do: it is not in ours. Its chunk will not
            // come; the other members of our round see the same and count it as zero too.
            for (int j = 0; j < o->nm; j++)
                if (j != o->self_k && !memcmp(o->mem[j], ev->peer, 32) && o->mstate[j] == M_WAIT) {
                    log_warn("outer", "round %llu: %s counts other members in this round; leaving it out",
                             (unsigned long long)o->round, who);
                    o->mstate[j] = M_GONE;
                }
        }
        break;
    }
    case OUTER_MSG_ROUND_IS: {
        if (len != 8) break;
        uint64_t theirs = net_get_u64(b);
        if (theirs > o->round_hint) o->round_hint = theirs;
        if (o->phase == PH_IDLE) break;
        if (o->phase == PH_READY) s_pend_add(o, P_DECLINE, ev->peer, r, 0);
        for (int j = 0; j < o->nm; j++)
            if (!memcmp(o->mem[j], ev->peer, 32) && o->mstate[j] == M_WAIT && o->phase == PH_NOLOCO &&
                !(s_pend_find(o, P_META, ev->peer, o->round, 0) && s_pend_find(o, P_DELTA, ev->peer, o->round, 0) &&
                  s_pend_find(o, P_DRIFT, ev->peer, o->round, 0))) {
                log_info("outer", "round %llu: %s is at round %llu and leaves our group",
                         (unsigned long long)o->round, who, (unsigned long long)theirs);
                o->mstate[j] = M_GONE;
            }
        // It is past our round for good: move to its round (everyone converges on the latest round).
        if (theirs > o->round && o->phase != PH_REFETCH) s_retarget(o, theirs, now);
        break;
    }
    default:
        break;
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Setup

outer_run_t *outer_run_new(const outer_env_t *env, char *err, size_t errlen) {
    outer_run_t *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    o->env = *env;
    o->cfg = *env->cfg;
    o->diloco = !strcmp(o->cfg.outer_algorithm, "diloco");
    o->codec = codec_from_name(o->cfg.outer_codec);
    o->ef = o->cfg.error_feedback && codec_is_lossy(o->codec);
    o->chunk_bytes = (size_t)o->cfg.chunk_size;
    o->hp.lr = o->cfg.outer_lr;
    // Default μ: the papers' (DiLoCo 0.9, NoLoCo 0.5) without overlap. With overlap the update lands
    // a round late and a large momentum overshoots: measured (tests/bench/bench_overlap_loss.sh, 4
    // peers, H = 20, 12 rounds) the final loss with overlap fell from 4.2% to 0.6% above no-overlap's
    // for DiLoCo at μ = 0.5, and from 2.3% to 1.3% for NoLoCo at μ = 0.3.
    o->hp.momentum = o->cfg.outer_momentum >= 0 ? o->cfg.outer_momentum
                     : o->diloco ? (o->cfg.overlap ? 0.5f : 0.9f)
                                 : (o->cfg.overlap ? 0.3f : 0.5f);
    // CO2's staleness controls: the gap penalty only with overlap (there is no staleness without it);
    // the momentum clip whenever set.
    o->hp.gap_penalty = o->cfg.overlap ? o->cfg.co2_gap_penalty : 1.0f;
    o->hp.clip = o->cfg.co2_clip;
    const char *poison = getenv("LOCO_TEST_POISON");
    if (poison) o->poison = (float)atof(poison);
    const char *hold = getenv("LOCO_TEST_HOLD_FILE");
    if (hold) snprintf(o->hold_file, sizeof o->hold_file, "%s", hold);
    const char *delay = getenv("LOCO_TEST_STEP_DELAY_MS");
    if (delay && atoi(delay) > 0) o->step_delay_us = (useconds_t)atoi(delay) * 1000;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->pend = calloc(PEND_MAX, sizeof *o->pend);
    o->mem = calloc(OUTER_MAX_MEMBERS, 32);
    o->view = calloc(OUTER_MAX_MEMBERS, 32);
    o->mstate = calloc(OUTER_MAX_MEMBERS, sizeof *o->mstate);
    o->msteps = calloc(OUTER_MAX_MEMBERS, sizeof *o->msteps);
    o->group_of = calloc(OUTER_MAX_MEMBERS, sizeof *o->group_of);
    o->cu_donors = calloc(CATCHUP_MAX_DONORS, 32);
    char why[256];
    // 32768 values (128 KiB) per chunk: enough chunks to spread a small model over several donors, a
    // manifest of 32 bytes per 128 KiB for a large one.
    o->cu = catchup_new(env->net, 32768, why, sizeof why);
    if (!o->cu) log_error("outer", "catch-up: %s", why);
    else catchup_set_fetch_rate(o->cu, (uint64_t)o->cfg.download_rate); // [limits] download_rate, aggregate
    if (!o->pend || !o->mem || !o->view || !o->mstate || !o->msteps || !o->group_of || !o->cu_donors || !o->cu ||
        o->codec < 0) {
        snprintf(err, errlen, o->codec < 0 ? "unknown codec" : "out of memory");
        outer_run_destroy(&o);
        return NULL;
    }
    return o;
}

void outer_run_destroy(outer_run_t **self_p) {
    if (!self_p || !*self_p) return;
    outer_run_t *o = *self_p;
    for (int i = 0; i < o->npend; i++) s_pend_free(&o->pend[i]);
    free(o->pend);
    free(o->mem);
    free(o->view);
    free(o->mstate);
    free(o->msteps);
    free(o->group_of);
    free(o->cu_donors);
    catchup_destroy(&o->cu);
    float *bufs[] = {o->phi, o->mom, o->phi0, o->delta, o->drift, o->resid, o->mean_delta, o->mean_phi,
                     o->scratch, o->srv_state};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
    *self_p = NULL;
}

void outer_run_stats(const outer_run_t *o, outer_stats_t *out) { *out = o->st; }
const catchup_t *outer_run_catchup(const outer_run_t *o) { return o ? o->cu : NULL; }

// ---------------------------------------------------------------------------------------------
// The compute thread

static void s_ckpt_extra(void *ctx, ckpt_t *c) {
    outer_run_t *o = ctx;
    static uint8_t state[16];
    net_put_u64(state, atomic_load(&o->cur_round));
    net_put_u64(state + 8, o->st.rounds);
    ckpt_add(c, "anchor", o->phi, o->n * sizeof(float));
    ckpt_add(c, "outer_momentum", o->mom, o->n * sizeof(float));
    ckpt_add(c, "outer_state", state, sizeof state);
    if (o->resid) ckpt_add(c, "outer_residual", o->resid, o->n * sizeof(float));
}

static int s_ckpt_restore(void *ctx, const ckpt_t *c, char *err, size_t errlen) {
    outer_run_t *o = ctx;
    size_t la = 0, lm = 0, ls = 0, lr = 0;
    const uint8_t *a = ckpt_get(c, "anchor", &la), *m = ckpt_get(c, "outer_momentum", &lm);
    const uint8_t *s = ckpt_get(c, "outer_state", &ls), *r = ckpt_get(c, "outer_residual", &lr);
    if (!a) { // a `loco train` checkpoint: start the outer loop from its weights
        log_info("outer", "checkpoint has no outer state: its weights become the anchor");
        return 0;
    }
    size_t nb = o->n * sizeof(float);
    if (la != nb || !m || lm != nb || !s || ls != 16) {
        snprintf(err, errlen, "checkpoint's outer state has the wrong size");
        return -1;
    }
    memcpy(o->phi, a, nb);
    memcpy(o->mom, m, nb);
    atomic_store(&o->cur_round, ckpt_get_u64(s));
    o->st.rounds = ckpt_get_u64(s + 8);
    if (o->resid && r && lr == nb) memcpy(o->resid, r, nb);
    o->restored_outer = 1;
    return 1;
}

static int s_resume_extra(void *ctx, const ckpt_t *c, char *err, size_t errlen) {
    return s_ckpt_restore(ctx, c, err, errlen) < 0 ? -1 : 0;
}

// Compute thread: the outer state just completed (φ ‖ momentum, the next round, the inner step),
// kept servable for peers that catch up while the next round runs.
static void s_serve_update(outer_run_t *o, uint64_t next_round, uint64_t step) {
    pthread_mutex_lock(&o->mu);
    memcpy(o->srv_state, o->phi, o->n * sizeof(float));
    memcpy(o->srv_state + o->n, o->mom, o->n * sizeof(float));
    o->srv_next_round = next_round;
    o->srv_step = step;
    o->srv_dirty = 1;
    pthread_mutex_unlock(&o->mu);
}

// Hands the round's contribution to the net thread: Δ = φ − θ, the drift φ − φ₀ (NoLoCo), the
// anchor hash, and wakes it.
static void s_post(outer_run_t *o, uint64_t round, uint32_t h, int last, const float *theta) {
    size_t n = o->n;
    for (size_t i = 0; i < n; i++) o->delta[i] = o->phi[i] - theta[i];
    if (o->poison != 0) // test hook: a hostile peer sends a scaled pseudo-gradient
        for (size_t i = 0; i < n; i++) o->delta[i] *= o->poison;
    if (!o->diloco)
        for (size_t i = 0; i < n; i++) o->drift[i] = o->phi[i] - o->phi0[i];
    pthread_mutex_lock(&o->mu);
    o->post_round = round;
    o->post_steps = h;
    o->post_last = last;
    memcpy(o->post_hash, o->last_hash, 32); // φ has not changed since its hash was taken
    o->posted = 1;
    o->done = 0;
    pthread_mutex_unlock(&o->mu);
    net_waker_wake(o->waker);
}

static int s_exchange_done(outer_run_t *o) {
    pthread_mutex_lock(&o->mu);
    int d = o->done;
    pthread_mutex_unlock(&o->mu);
    return d;
}

// Waits for the posted exchange's result. 1 with it; 0 when stopped first (the exchange is abandoned).
static int s_wait_result(outer_run_t *o, volatile sig_atomic_t *stop, double *waited) {
    double w0 = metrics_mono();
    pthread_mutex_lock(&o->mu);
    while (!o->done && !*stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&o->cv, &o->mu, &ts);
    }
    int got = o->done;
    pthread_mutex_unlock(&o->mu);
    *waited = metrics_mono() - w0;
    return got;
}

// The outer step on φ (and the momentum) from the result. 0, or -1 when φ is no longer finite.
static int s_apply(outer_run_t *o, const char **how) {
    size_t n = o->n, nb = n * sizeof(float);
    *how = "mean";
    if (o->res_kind == RES_REFETCH) {
        memcpy(o->phi, o->mean_delta, nb);
        memcpy(o->mom, o->mean_phi, nb);
        *how = "refetch";
    } else if (o->diloco) {
        outer_diloco_step(o->phi, o->mom, o->mean_delta, n, &o->hp);
    } else {
        outer_noloco_step(o->phi, o->mom, o->mean_delta, o->mean_phi, n, &o->hp);
    }
    if (!s_finite(o->phi, n)) {
        log_error("outer", "round %llu: the anchor is not finite after the outer step; stopping with the last checkpoint",
                  (unsigned long long)o->res_round);
        return -1;
    }
    o->st.rounds++;
    o->st.bytes_sent += o->res_tx;
    o->st.bytes_recv += o->res_rx;
    if (o->res_short) o->st.short_rounds++;
    net_sha256(o->phi, nb, o->last_hash);
    s_serve_update(o, o->res_round + 1, o->cur_step);
    return 0;
}

// After a catch-up: a peer behind the swarm's schedule (a joiner, or one back from a long absence)
// takes the version's inner step as its own, so its learning rate follows the swarm's schedule and it
// reaches [train] steps with the others. Its AdamW moments stay (they only scale the next steps).
static void s_adopt_schedule(outer_run_t *o, trainer_t *t) {
    if (o->res_kind != RES_REFETCH || o->res_step <= t->step) return;
    log_info("outer", "round %llu: caught up; taking the swarm's schedule position: inner step %llu -> %llu",
             (unsigned long long)o->res_round, (unsigned long long)t->step, (unsigned long long)o->res_step);
    t->step = o->res_step;
    atomic_store(&t->progress, t->step);
}

// The log line and the metrics record of an applied outer step.
static void s_record(outer_run_t *o, trainer_t *t, train_ctx_t *x, const char *how, uint64_t h, int early,
                     uint64_t overlap_steps, int waited_flag, double waited, double *c0, double *w0) {
    double now = metrics_mono(), wall = now - x->t_start;
    double util = wall > 0 ? x->compute_s / wall : 0;
    double ru = now > *w0 ? (x->compute_s - *c0) / (now - *w0) : 0;
    *c0 = x->compute_s;
    *w0 = now;
    char a16[17];
    net_hex_encode(o->last_hash, 8, a16);
    if (x->tty) fputc('\n', stderr);
    log_info("outer", "round %llu %s: %d of %d contributed, %llu inner steps%s, sent %.2f MB, received %.2f MB, "
             "exchange %.2fs%s, anchor %s, utilisation %.1f%% (round %.1f%%)%s", (unsigned long long)o->res_round, how,
             o->res_contributors, o->res_expected, (unsigned long long)h, early ? " (ended early)" : "", o->res_tx / 1e6,
             o->res_rx / 1e6, o->res_exchange_s, o->cfg.overlap ? (waited_flag ? ", overlapped, then waited" : ", overlapped") : "",
             a16, 100 * util, 100 * ru, o->res_short ? " (short round)" : "");
    metrics_write(o->env.mx, "outer", t->step,
                  "\"round\":%llu,\"algorithm\":\"%s\",\"result\":\"%s\",\"group\":%s,\"contributors\":%d,"
                  "\"expected\":%d,\"steps\":%llu,\"early\":%s,\"short\":%s,\"bytes_sent\":%llu,\"bytes_recv\":%llu,"
                  "\"total_bytes_sent\":%llu,\"total_bytes_recv\":%llu,\"exchange_s\":%.3f,\"wait_s\":%.3f,"
                  "\"overlap\":%s,\"overlap_steps\":%llu,\"waited\":%s,"
                  "\"anchor\":\"%s\",\"utilisation\":%.4f,\"round_utilisation\":%.4f,\"compute_s\":%.3f,\"wall_s\":%.3f,"
                  "\"eval_s\":%.3f",
                  (unsigned long long)o->res_round, o->cfg.outer_algorithm, how, o->res_group[0] ? o->res_group : "[]",
                  o->res_contributors, o->res_expected, (unsigned long long)h, early ? "true" : "false",
                  o->res_short ? "true" : "false", (unsigned long long)o->res_tx, (unsigned long long)o->res_rx,
                  (unsigned long long)o->st.bytes_sent, (unsigned long long)o->st.bytes_recv, o->res_exchange_s, waited,
                  o->cfg.overlap ? "true" : "false", (unsigned long long)overlap_steps,
                  waited_flag ? "true" : "false", a16, util, ru, x->compute_s, wall, x->eval_s);
    telemetry_outer(o->env.mx, o->res_round, o->res_contributors, o->res_expected, o->res_exchange_s, waited, o->res_short, o->res_group);
}

// Checkpoints during loco run: at a round boundary, a snapshot of every section is copied into one
// buffer (the compute thread pays a memcpy), and a writer thread saves it atomically (temp file,
// fsync, rename, manifest). One write at a time: a snapshot due while the previous one is still
// being written is skipped (logged).
typedef struct {
    pthread_t th;
    atomic_int busy;
    int started;
    ckpt_t c;
    uint8_t *arena;
    char dir[CONFIG_PATH_MAX];
    uint64_t step;
    int keep;
} ckpt_writer_t;

static void *s_ckpt_write(void *arg) {
    ckpt_writer_t *w = arg;
    char err[1536], path[1200];
    double t0 = metrics_mono();
    if (ckpt_dir_save(&w->c, w->dir, w->step, w->keep, path, sizeof path, err, sizeof err) != 0)
        log_error("train", "checkpoint at step %llu failed (the previous one is intact): %s", (unsigned long long)w->step, err);
    else
        log_info("train", "checkpoint step %llu -> %s (written in the background in %.2fs)", (unsigned long long)w->step,
                 path, metrics_mono() - t0);
    free(w->arena);
    w->arena = NULL;
    atomic_store(&w->busy, 0);
    return NULL;
}

static void s_ckpt_join(ckpt_writer_t *w) {
    if (w->started) pthread_join(w->th, NULL);
    w->started = 0;
}

static void s_ckpt_async(ckpt_writer_t *w, outer_run_t *o, trainer_t *t) {
    if (atomic_load(&w->busy)) {
        log_warn("train", "step %llu: the previous checkpoint is still being written; skipping this one",
                 (unsigned long long)t->step);
        return;
    }
    s_ckpt_join(w);
    ckpt_t c = {0};
    uint8_t scratch[256];
    trainer_ckpt_add(t, &c, scratch);
    s_ckpt_extra(o, &c);
    size_t total = 0;
    for (int i = 0; i < c.n; i++) total += c.sec[i].len;
    w->arena = malloc(total ? total : 1);
    if (!w->arena || c.n == 0) {
        log_error("train", "step %llu: no memory for a checkpoint snapshot; skipping it", (unsigned long long)t->step);
        free(w->arena);
        w->arena = NULL;
        return;
    }
    size_t off = 0;
    for (int i = 0; i < c.n; i++) {
        memcpy(w->arena + off, c.sec[i].data, c.sec[i].len);
        c.sec[i].data = w->arena + off;
        off += c.sec[i].len;
    }
    w->c = c;
    snprintf(w->dir, sizeof w->dir, "%s", t->cfg.checkpoint_dir);
    w->step = t->step;
    w->keep = t->cfg.checkpoint_keep;
    atomic_store(&w->busy, 1);
    if (pthread_create(&w->th, NULL, s_ckpt_write, w) != 0) {
        log_error("train", "cannot start the checkpoint writer: writing in this thread");
        s_ckpt_write(w);
        return;
    }
    w->started = 1;
}

int outer_run_train(outer_run_t *o, trainer_t *t, volatile sig_atomic_t *stop) {
    char err[1536];
    // The parameters the outer step covers: all, or a pipeline stage's range (outer_env_t).
    size_t n = o->env.len ? o->env.len : t->model->num_params, nb = n * sizeof(float);
    float *theta = t->model->params + (o->env.len ? o->env.off : 0);
    o->n = n;
    float **bufs[] = {&o->phi, &o->mom, &o->phi0, &o->delta, &o->drift, &o->mean_delta, &o->mean_phi, &o->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i] = calloc(n, sizeof(float));
        if (!*bufs[i]) {
            log_error("outer", "out of memory for the outer state (%zu parameters)", n);
            return 1;
        }
    }
    if (!(o->srv_state = calloc(2 * n, sizeof(float))) || (o->ef && !(o->resid = calloc(n, sizeof(float))))) {
        log_error("outer", "out of memory");
        return 1;
    }
    // Every peer starts from the same weights ([train] seed): log their hash so that it can be checked.
    memcpy(o->phi0, theta, nb);
    uint8_t h[32];
    net_sha256(o->phi0, nb, h);
    memcpy(o->phi0_hash, h, 32);
    char full[65];
    net_hex_encode(h, 32, full);
    log_info("outer", "initial parameters sha256 %s", full);
    memcpy(o->phi, theta, nb);

    int resumed = 0;
    if (train_resume_ex(t, &resumed, s_resume_extra, o, err, sizeof err) != 0) {
        log_error("train", "%s", err);
        return 1;
    }
    if (resumed && !o->restored_outer) memcpy(o->phi, theta, nb);
    net_sha256(o->phi, nb, o->last_hash); // the anchor's hash, taken again whenever φ changes (s_apply)
    uint64_t round = atomic_load(&o->cur_round);
    log_info("outer", "%s, H = %lld, η = %g, μ = %g, codec %s%s, %s at round %llu", o->cfg.outer_algorithm,
             (long long)o->cfg.inner_steps, o->hp.lr, o->hp.momentum, codec_name(o->codec),
             o->ef ? " + error feedback" : "", resumed ? "resuming" : "starting", (unsigned long long)round);
    o->waker = net_waker_new(o->env.net);

    // A peer with somewhere to join first joins (bounded): training alone while the swarm is a few
    // hundred milliseconds away only makes its first rounds solo.
    if (o->env.has_contacts) {
        uint64_t t0 = s_mono_ms(), limit = 10 * (uint64_t)o->cfg.gossip_period_ms;
        if (limit < 5000) limit = 5000;
        while (!*stop && atomic_load(&o->view_n) < 2 && s_mono_ms() - t0 < limit) usleep(20000);
        if (atomic_load(&o->view_n) < 2)
            log_warn("outer", "no other training member in view after %.1fs: starting alone", (double)limit / 1000);
        else
            log_info("outer", "%d training members in view: starting", atomic_load(&o->view_n));
    }
    atomic_store(&o->training, 1);
    train_ctx_t x;
    train_ctx_init(&x, t, o->env.mx, stop);
    x.final_checkpoint = 0;
    x.periodic_checkpoints = 0; // at round boundaries, written in the background (below)
    x.ckpt_extra = s_ckpt_extra;
    x.ckpt_ctx = o;
    static ckpt_writer_t writer; // one per process
    memset(&writer, 0, sizeof writer);
    uint64_t every = (uint64_t)t->cfg.checkpoint_every, next_ckpt = every ? (t->step / every + 1) * every : UINT64_MAX;
    int rc = 0, inflight = 0, ended = 0; // ended: the swarm's last round came before our [train] steps
    uint64_t total = (uint64_t)t->cfg.steps, H = (uint64_t)o->cfg.inner_steps;
    uint64_t posted_round = 0, posted_h = 0, overlap_steps = 0;
    double wait_total = 0, round_c0 = x.compute_s, round_w0 = metrics_mono();
    float *theta_start = o->cfg.overlap ? malloc(nb) : NULL;
    if (o->cfg.overlap && !theta_start) {
        log_error("outer", "out of memory");
        rc = 1;
    }
    for (;;) {
        uint64_t h = 0;
        int early = 0, last = 0;
        if (rc == 0 && t->step < total) window_wait_spec(o->cfg.train_active, stop); // [train] active: node/window.h
        if (t->step >= next_ckpt && t->step < total && !*stop) { // the round boundary after checkpoint_every steps
            if (trainer_sync(t, 0, err, sizeof err) == 0) s_ckpt_async(&writer, o, t);
            next_ckpt = (t->step / every + 1) * every;
        }
        if (rc == 0 && t->step < total && !*stop) {
            atomic_store(&o->cur_round, round);
            snprintf(x.status, sizeof x.status, " | outer %llu%s", (unsigned long long)round, inflight ? " (exchanging)" : "");
            while (t->step < total && h < H && !*stop) {
                // Pacing: a partner is ready for this round, end it (with overlap too: measured, keeping
                // partners' round boundaries aligned matters more than the steps an early end gives up).
                // Not while our previous exchange is still in flight (overlap): ending now would only
                // turn compute into waiting for it, since its result is due before the next post.
                if (h > 0 && atomic_load(&o->ready_above) > round && (!inflight || s_exchange_done(o))) {
                    early = 1;
                    break;
                }
                rc = o->env.inner_step ? o->env.inner_step(o->env.hook_ctx, t, &x) : train_step_logged(t, &x);
                if (rc != 0) break;
                if (o->step_delay_us) usleep(o->step_delay_us); // test hook: a slower peer
                h++;
            }
            if (inflight) overlap_steps += h;
        }
        if (rc || *stop) break;
        last = h == 0; // training is over: only the in-flight exchange (overlap) remains
        if (last && !inflight) break;
        if (early) o->st.early_ends++;
        if (trainer_sync(t, 0, err, sizeof err) != 0) {
            log_error("outer", "%s", err);
            rc = 1;
            break;
        }
        // Overlap: round t−1's result is due now, at the end of round t (or of training).
        if (inflight) {
            int ready = s_exchange_done(o);
            if (!ready) {
                if (x.tty) fputc('\n', stderr);
                log_info("outer", "round %llu: its exchange is still running at the end of round %llu: waiting",
                         (unsigned long long)posted_round, (unsigned long long)round);
                o->st.waits++;
            }
            double waited;
            if (!s_wait_result(o, stop, &waited)) break; // stopped: leave without an outer step
            wait_total += waited;
            const char *how;
            o->cur_step = t->step;
            if (s_apply(o, &how) != 0) {
                rc = 1;
                break;
            }
            // Carry over the local progress of the round just run: θ ← φ_new + (θ − θ_start).
            if (o->res_kind == RES_REFETCH) memcpy(theta, o->phi, nb); // caught up: nothing to carry
            else outer_co2_carry(theta, o->phi, theta_start, n);
            s_adopt_schedule(o, t);
            if (!last && trainer_sync(t, 1, err, sizeof err) != 0) { // the GPU model trains on from θ
                log_error("outer", "%s", err);
                rc = 1;
                break;
            }
            if (o->res_round + 1 > round) round = o->res_round + 1;
            s_record(o, t, &x, how, posted_h, 0, overlap_steps, !ready, waited, &round_c0, &round_w0);
            overlap_steps = 0;
            inflight = 0;
            if (o->res_last && !last) {
                log_info("outer", "round %llu was the swarm's last (a member reached [train] steps): stopping at step %llu",
                         (unsigned long long)o->res_round, (unsigned long long)t->step);
                ended = 1;
                last = 1;
            }
            if (last) {
                if (trainer_sync(t, 1, err, sizeof err) != 0) {
                    log_error("outer", "%s", err);
                    rc = 1;
                }
                break;
            }
        }
        // Contribution: Δ = φ − θ (and the anchor drift φ − φ₀ for NoLoCo), a copy the net thread owns
        // until the result comes back.
        s_post(o, round, (uint32_t)h, t->step >= total, theta);
        posted_round = round;
        posted_h = h;
        if (o->cfg.overlap) {
            memcpy(theta_start, theta, nb);
            inflight = 1;
            round++;
            continue; // round t+1 trains while round t's exchange runs
        }
        double waited;
        if (!s_wait_result(o, stop, &waited)) break;
        wait_total += waited;
        const char *how;
        o->cur_step = t->step;
        if (s_apply(o, &how) != 0) {
            rc = 1;
            break;
        }
        memcpy(theta, o->phi, nb);
        s_adopt_schedule(o, t);
        if (trainer_sync(t, 1, err, sizeof err) != 0) {
            log_error("outer", "%s", err);
            rc = 1;
            break;
        }
        round = o->res_round + 1;
        s_record(o, t, &x, how, h, early, 0, 1, waited, &round_c0, &round_w0);
        if (o->res_last && t->step < total) {
            log_info("outer", "round %llu was the swarm's last (a member reached [train] steps): stopping at step %llu",
                     (unsigned long long)o->res_round, (unsigned long long)t->step);
            ended = 1;
            break;
        }
    }
    free(theta_start);
    s_ckpt_join(&writer); // the last checkpoint is written after any background one
    if (rc == 0 && !*stop && (t->step >= total || ended)) {
        if (t->cfg.eval_every > 0) {
            // The final anchor's loss (θ may hold carried progress with overlap): evaluate φ.
            float *keep = malloc(nb);
            if (keep) memcpy(keep, theta, nb), memcpy(theta, o->phi, nb);
            if (keep && trainer_sync(t, 1, err, sizeof err) != 0) log_warn("outer", "%s", err);
            float vl = trainer_eval(t, t->cfg.eval_batches);
            if (keep) {
                memcpy(theta, keep, nb);
                if (trainer_sync(t, 1, err, sizeof err) != 0) log_warn("outer", "%s", err);
                free(keep);
            }
            if (vl >= 0) {
                log_info("train", "step %llu val_loss %.4f (anchor after the last outer step)", (unsigned long long)t->step, vl);
                metrics_write(o->env.mx, "eval", t->step, "\"val_loss\":%.6f,\"elapsed_s\":%.3f,\"anchor\":true", vl,
                              metrics_mono() - x.t_start);
            }
        }
        if (train_save(t, &x, err, sizeof err) != 0) {
            log_error("train", "checkpoint failed: %s", err);
            rc = 1;
        }
    }
    rc = train_finish(t, &x, rc);
    double wall = metrics_mono() - x.t_start;
    log_info("outer", "%llu outer steps (%llu short, %llu ended early, %llu re-fetches, %llu rejected%s); sent %.2f MB, "
             "received %.2f MB; compute utilisation %.1f%%, waited %.1fs%s",
             (unsigned long long)o->st.rounds, (unsigned long long)o->st.short_rounds, (unsigned long long)o->st.early_ends,
             (unsigned long long)o->st.refetches, (unsigned long long)o->st.rejected, "", o->st.bytes_sent / 1e6,
             o->st.bytes_recv / 1e6, wall > 0 ? 100 * x.compute_s / wall : 0, wait_total,
             o->cfg.overlap ? (o->st.waits ? " (overlap: waited at some round boundaries)" : " (overlap: never waited)") : "");
    net_waker_destroy(&o->waker);
    return rc;
}
