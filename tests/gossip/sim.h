// A deterministic simulated network for the sans-IO membership core: N gossip_members_t instances,
// a fake clock advanced in fixed steps, and a router with per-link delay, random loss, blocked
// links (partitions), a reachability rule (two unreachable peers cannot reach each other) and a
// "mute" hook that strips disseminated updates from messages to one node. Included by the tests in
// this folder; everything is static.
#ifndef LOCO_TESTS_GOSSIP_SIM_H
#define LOCO_TESTS_GOSSIP_SIM_H

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members.h"
#include "model/rng.h"
#include "node/log.h"

#define SIM_MAXN 256 // the bitmask helpers (sim_view_is, sim_all_see, sim_mask_range) take n <= 64
#define SIM_STEP_MS 10
#define SIM_PERIOD_MS 1000
#define SIM_WALL0 1700000000000ULL // unix ms at sim time 0

typedef struct {
    gossip_members_t *m;
    uint8_t sk[64], id[32];
    bool up, reachable, left;
    uint64_t first_inc;
} sim_node_t;

typedef struct {
    uint64_t at, order;
    int from, to;
    gossip_msg_type_t type;
    uint8_t *p;
    size_t len;
} sim_flight_t;

typedef struct {
    uint64_t at;
    int node, about; // about: index of the member the event is about (-1: not a sim node)
    gossip_event_kind_t kind;
    uint64_t inc;
} sim_event_t;

typedef struct {
    sim_node_t nodes[SIM_MAXN];
    int n;
    uint64_t now, order;
    gossip_config_t cfg;
    sim_flight_t *fl;
    size_t nfl, capfl;
    double loss;
    bool block[SIM_MAXN][SIM_MAXN]; // from → to dropped
    uint32_t delay[SIM_MAXN][SIM_MAXN];
    int mute; // node whose incoming gossip loses its piggybacked updates (-1: none)
    bool mute_sync; // also drop SYNC / SYNC_REPLY / UPDATES to the muted node
    rng_t rng;
    uint64_t sent, delivered, dropped, unreachable_pairs;
    uint64_t sent_by_type[GOSSIP_MSG_COUNT];
    sim_event_t *ev;
    size_t nev, capev;
    gossip_admit_fn admit;
} sim_t;

static void sim_init(sim_t *s, int n, uint64_t seed) {
    memset(s, 0, sizeof *s);
    cr_assert(sodium_init() >= 0);
    // GOSSIP_SIM_SEED=k re-runs every scenario on other keys, delays and losses (for sweeps).
    const char *env = getenv("GOSSIP_SIM_SEED");
    if (env) seed ^= strtoull(env, NULL, 10) << 8;
    cr_assert(n <= SIM_MAXN);
    log_min_level = LOG_ERROR; // forged-record tests log warnings by design
    s->n = n;
    s->mute = -1;
    rng_seed(&s->rng, seed);
    gossip_config_default(&s->cfg);
    for (int i = 0; i < n; i++) {
        uint8_t seedb[32] = {0};
        seedb[0] = (uint8_t)i;
        memcpy(seedb + 1, &seed, sizeof seed);
        seedb[31] = 0x5a;
        uint8_t pk[32];
        crypto_sign_seed_keypair(pk, s->nodes[i].sk, seedb);
        memcpy(s->nodes[i].id, pk, 32);
        s->nodes[i].reachable = true;
        for (int j = 0; j < n; j++) s->delay[i][j] = 5 + (uint32_t)rng_below(&s->rng, 40); // 5..44 ms one way
    }
}

static int sim_index(const sim_t *s, const uint8_t *id) {
    for (int i = 0; i < s->n; i++)
        if (memcmp(s->nodes[i].id, id, 32) == 0) return i;
    return -1;
}

static void sim_endpoint(int i, char *out, size_t len) { snprintf(out, len, "tcp://10.0.0.%d:7000", i + 1); }

// Starts node i (again, after a kill: same key, a later incarnation) with the given seeds.
static void sim_start(sim_t *s, int i, const int *seeds, int nseeds) {
    sim_node_t *nd = &s->nodes[i];
    cr_assert(!nd->up);
    gossip_record_t r;
    memset(&r, 0, sizeof r);
    memset(r.run_fp, 0xfb, 32);
    snprintf(r.caps.device, sizeof r.caps.device, "cpu");
    r.caps.step_rate_milli = 1000;
    r.caps.reachable = nd->reachable;
    if (nd->reachable) {
        r.n_endpoints = 1;
        sim_endpoint(i, r.endpoints[0], sizeof r.endpoints[0]);
    }
    r.time_ms = SIM_WALL0 + s->now;
    r.incarnation = r.time_ms; // loco's rule: start time in unix ms
    gossip_config_t c = s->cfg;
    c.seed = 1000 + (uint64_t)i * 7919 + s->now;
    c.admit = s->admit;
    char err[256];
    nd->m = gossip_members_new(&c, nd->sk, &r, s->now, err, sizeof err);
    cr_assert(nd->m, "node %d: %s", i, err);
    nd->first_inc = r.incarnation;
    for (int k = 0; k < nseeds; k++) {
        char ep[64];
        sim_endpoint(seeds[k], ep, sizeof ep);
        cr_assert_eq(gossip_members_add_contact(nd->m, s->nodes[seeds[k]].id, ep), 0);
    }
    nd->up = true;
    nd->left = false;
}

static void sim_kill(sim_t *s, int i) {
    s->nodes[i].up = false;
    gossip_members_destroy(&s->nodes[i].m);
}

static void sim_free(sim_t *s) {
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].m) gossip_members_destroy(&s->nodes[i].m);
    for (size_t k = 0; k < s->nfl; k++) free(s->fl[k].p);
    free(s->fl);
    free(s->ev);
}

// Rewrites a ping/ack/ping-req/gossip message so it carries no updates (the "mute" hook).
static void sim_strip(sim_flight_t *f) {
    size_t head = f->type == GOSSIP_MSG_PING_REQ ? 36 : f->type == GOSSIP_MSG_GOSSIP ? 0 : 4;
    if (f->len < head + 2) return;
    f->p[head] = f->p[head + 1] = 0;
    f->len = head + 2;
}

static void sim_route(sim_t *s, int from, gossip_msg_t *msg) {
    int to = sim_index(s, msg->to);
    s->sent++;
    s->sent_by_type[msg->type - GOSSIP_MSG_FIRST]++;
    bool drop = to < 0 || s->block[from][to];
    if (to >= 0 && !s->nodes[from].reachable && !s->nodes[to].reachable) {
        s->unreachable_pairs++; // the rule says this never happens; the network would drop it
        drop = true;
    }
    if (!drop && s->loss > 0 && (double)rng_next(&s->rng) / 18446744073709551616.0 < s->loss) drop = true;
    if (!drop && to == s->mute && s->mute_sync &&
        (msg->type == GOSSIP_MSG_SYNC || msg->type == GOSSIP_MSG_SYNC_REPLY || msg->type == GOSSIP_MSG_UPDATES))
        drop = true;
    if (drop) {
        s->dropped++;
        gossip_msg_release(msg);
        return;
    }
    if (s->nfl == s->capfl) {
        s->capfl = s->capfl ? 2 * s->capfl : 256;
        s->fl = realloc(s->fl, s->capfl * sizeof *s->fl);
        cr_assert(s->fl);
    }
    sim_flight_t *f = &s->fl[s->nfl++];
    f->at = s->now + s->delay[from][to];
    f->order = s->order++;
    f->from = from;
    f->to = to;
    f->type = msg->type;
    f->p = msg->payload;
    f->len = msg->len;
    if (to == s->mute && f->type != GOSSIP_MSG_SYNC && f->type != GOSSIP_MSG_SYNC_REPLY &&
        f->type != GOSSIP_MSG_UPDATES)
        sim_strip(f);
}

static void sim_drain(sim_t *s, int i) {
    sim_node_t *nd = &s->nodes[i];
    if (!nd->m) return;
    gossip_msg_t msg;
    while (gossip_members_pop(nd->m, &msg)) sim_route(s, i, &msg);
    gossip_event_t e;
    while (gossip_members_pop_event(nd->m, &e)) {
        if (s->nev == s->capev) {
            s->capev = s->capev ? 2 * s->capev : 1024;
            s->ev = realloc(s->ev, s->capev * sizeof *s->ev);
            cr_assert(s->ev);
        }
        s->ev[s->nev++] = (sim_event_t){s->now, i, sim_index(s, e.id), e.kind, e.incarnation};
    }
}

static int sim_flight_cmp(const void *a, const void *b) {
    const sim_flight_t *x = a, *y = b;
    if (x->at != y->at) return x->at < y->at ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

// Advances the clock by one step: delivers due messages, ticks every running node, routes output.
static void sim_step(sim_t *s) {
    s->now += SIM_STEP_MS;
    if (s->nfl == 0) goto tick; // (qsort and memcpy on a NULL array are undefined, even for 0 items)
    qsort(s->fl, s->nfl, sizeof *s->fl, sim_flight_cmp);
    size_t due = 0;
    while (due < s->nfl && s->fl[due].at <= s->now) due++;
    sim_flight_t *batch = malloc((due ? due : 1) * sizeof *batch);
    cr_assert(batch);
    memcpy(batch, s->fl, due * sizeof *batch);
    memmove(s->fl, s->fl + due, (s->nfl - due) * sizeof *s->fl);
    s->nfl -= due;
    for (size_t k = 0; k < due; k++) {
        sim_flight_t *f = &batch[k];
        sim_node_t *nd = &s->nodes[f->to];
        if (nd->up) {
            int rc = gossip_members_receive(nd->m, s->now, s->nodes[f->from].id, f->type, f->p, f->len);
            cr_assert_eq(rc, 0, "node %d rejected a %s from node %d", f->to, gossip_msg_name(f->type), f->from);
            s->delivered++;
            sim_drain(s, f->to);
        }
        free(f->p);
    }
    free(batch);
tick:
    for (int i = 0; i < s->n; i++) {
        if (!s->nodes[i].up) continue;
        if (gossip_members_next_wakeup(s->nodes[i].m) <= s->now) gossip_members_tick(s->nodes[i].m, s->now);
        sim_drain(s, i);
    }
}

static void sim_run(sim_t *s, uint64_t ms) {
    uint64_t end = s->now + ms;
    while (s->now < end) sim_step(s);
}

// True when every running node's live list holds exactly the n running nodes (any n; no mask).
static bool sim_all_complete(const sim_t *s) {
    int up = 0;
    for (int i = 0; i < s->n; i++) up += s->nodes[i].up;
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up && gossip_members_live(s->nodes[i].m, NULL, 0) != (size_t)up) return false;
    return true;
}

// Messages sent by every node together (delivered or not).
static uint64_t sim_sent(const sim_t *s) { return s->sent; }

// State of node j in node i's view; -1 when unknown.
static int sim_state(const sim_t *s, int i, int j) {
    gossip_member_info_t info;
    if (gossip_members_get(s->nodes[i].m, s->nodes[j].id, &info) != 0) return -1;
    return (int)info.state;
}

static uint64_t sim_inc(const sim_t *s, int i, int j) {
    gossip_member_info_t info;
    if (gossip_members_get(s->nodes[i].m, s->nodes[j].id, &info) != 0) return 0;
    return info.incarnation;
}

// True when node i's live list is exactly the nodes in `expect` (a bitmask over indices).
static bool sim_view_is(const sim_t *s, int i, uint64_t expect) {
    gossip_member_info_t live[SIM_MAXN + 8];
    size_t n = gossip_members_live(s->nodes[i].m, live, SIM_MAXN + 8);
    if (n > SIM_MAXN + 8) return false;
    uint64_t got = 0;
    for (size_t k = 0; k < n; k++) {
        int j = sim_index(s, live[k].id);
        if (j < 0) return false;
        got |= 1ULL << j;
        if (k > 0) cr_assert(memcmp(live[k - 1].id, live[k].id, 32) < 0, "live list not sorted by id");
    }
    return got == expect;
}

// True when every running node that has not left sees exactly `expect`.
static bool sim_all_see(const sim_t *s, uint64_t expect) {
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up && !s->nodes[i].left && !sim_view_is(s, i, expect)) return false;
    return true;
}

static uint64_t sim_mask_range(int lo, int hi) { // [lo, hi)
    uint64_t m = 0;
    for (int i = lo; i < hi; i++) m |= 1ULL << i;
    return m;
}

// Runs until pred holds (checked every step) or max_ms passes; out receives the elapsed ms, or
// UINT64_MAX when pred never held.
#define SIM_UNTIL(s, max_ms, pred, out)                                                                     \
    do {                                                                                                     \
        uint64_t t0_ = (s)->now;                                                                             \
        (out) = UINT64_MAX;                                                                                  \
        while ((s)->now - t0_ <= (max_ms)) {                                                                 \
            if (pred) {                                                                                      \
                (out) = (s)->now - t0_;                                                                      \
                break;                                                                                       \
            }                                                                                                \
            sim_step(s);                                                                                     \
        }                                                                                                    \
    } while (0)

// Events of a kind about node j seen by anyone (about = -1: about anyone), at or after time t.
static int sim_count_events(const sim_t *s, gossip_event_kind_t kind, int about, uint64_t since) {
    int c = 0;
    for (size_t k = 0; k < s->nev; k++)
        if (s->ev[k].kind == kind && s->ev[k].at >= since && (about < 0 || s->ev[k].about == about)) c++;
    return c;
}

#endif
