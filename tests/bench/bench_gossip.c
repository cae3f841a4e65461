// Membership benchmark (issue 4): the sans-IO SWIM core of gossip/members.c driven over an
// in-process, deterministic simulated network — no sockets, a simulated clock, per-message delay and
// loss from a seeded rng — for N = 16 … 1000 peers and 0%, 5%, 20% message loss.
//
//   build/<dir>/tests/bench/bench_gossip
//   env: BENCH_GOSSIP_N=16,64,256,1000  BENCH_GOSSIP_LOSS=0,5,20 (percent)  BENCH_GOSSIP_SEED=1
//        BENCH_GOSSIP_STEADY=30 (periods)  BENCH_GOSSIP_CRASH=60 (periods)  BENCH_GOSSIP_JOBS=2
//        BENCH_GOSSIP_SETTLE=200 (at most this many periods for the dissemination queues to drain
//        before the steady window; see phase 2)
//        (configurations run in parallel, one process each; 1 = serial)
//
// Budget: the whole table (N = 16…1000 × 0/5/20%) takes about 2 minutes of one core (N = 1000:
// 20–70 s per loss rate, 1.8 GB). What keeps it there: each signed record is verified once
// for the whole process (gossip_record_verify_cache), not once per simulated peer, and the
// membership core itself does O(1) work per queued update and per timer check (gossip/members.c).
//
// A wakeup at or before now right after a tick would make node/run.c's net thread poll with
// timeout 0 (a spin). Here such a wakeup is counted (the "!" line under a row) and the node is
// polled every BENCH_GOSSIP_SPIN_MS (default 10) instead.
//
// Each configuration (N, loss) is one run of four phases on the same network:
//  1. join     every node starts at a random time in the first period with one contact, node 0, and
//              an empty view; measured: time from t = 0 until every view holds all N as live.
//              Target: O(log N) periods, printed as periods / log2 N (the baseline: a push epidemic
//              needs about log2 N rounds).
//  2. steady   after convergence, the dissemination queues drain (a mass start leaves every peer
//              holding up to N records to piggyback; "settl" is how long that took), or stop
//              shrinking (under heavy loss new updates keep coming), at most SETTLE periods; then
//              STEADY periods measured: messages and payload bytes each peer sends per period (mean
//              and the busiest peer). Target: O(1) messages per peer, i.e. flat in N.
//  3. crash    1% of the nodes (at least 1, never node 0) are killed; CRASH periods measured: time
//              until the first survivor suspects a victim and until every survivor marks every
//              victim dead, next to the configured suspicion timeout (the floor: each peer's own timer
//              buries a member, suspicion_mult · max(1, log10 N) periods after it heard the suspicion).
//  4. late joiner  one more peer starts with node 0 as its contact; measured: time until every
//              survivor holds it as live ("in all") and until its own view holds exactly the
//              survivors ("full").
//  False positives: "dead" markings of a live node by anyone, over the steady and crash windows
//  together (target: zero at 5% loss); suspicions of live nodes and refutations are shown beside them.
//
// The network: each directed link has a base one-way delay of 5..44 ms (a hash of the pair), each
// message adds 0..9 ms of jitter (so messages can overtake each other) and is lost with probability
// `loss`. Deliveries sit in a binary heap ordered by (time, send order); each node's next wakeup
// sits in a second heap (entries replaced lazily); the clock jumps to whichever comes first.
// Counted bytes are gossip payloads only (no frame or transport overhead). The view of each node
// is tracked from the events it emits (an N×N state matrix), so convergence and detection times are
// exact to the millisecond without polling; at the end of each run the tracked views are checked
// against gossip_members_live.
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gossip/members.h"
#include "model/rng.h"
#include "node/log.h"

#define PERIOD_MS 1000ULL
#define JOIN_MAX_PERIODS 150
#define JOIN1_MAX_PERIODS 60
static int g_settle_max = 200; // BENCH_GOSSIP_SETTLE: periods allowed for the dissemination queues to drain

typedef enum { V_UNKNOWN = 0, V_ALIVE, V_SUSPECT, V_DEAD, V_LEFT } vstate_t;

typedef struct {
    gossip_members_t *m;
    uint8_t sk[64], id[32];
    bool up, started, victim;
    uint64_t start_at, wake;
    uint64_t sent, bytes; // in the measured steady window
} node_t;

typedef struct {
    uint64_t at, order;
    int from, to, type;
    uint8_t *p;
    size_t len;
} flight_t;

typedef struct {
    uint64_t at;
    int node;
} wake_t;

typedef struct {
    int n;       // nodes, the late joiner included
    int n_swarm; // the swarm started at t = 0 (the late joiner is node n_swarm)
    node_t *nodes;
    int *by_id; // node indices sorted by id
    uint64_t now, order;
    double loss;
    rng_t rng;
    gossip_config_t cfg;
    flight_t *fl;
    size_t nfl, capfl;
    wake_t *wk;
    size_t nwk, capwk;
    // views as tracked from events: view[i * n + j] = what node i thinks of node j
    uint8_t *view;
    int *live_known; // other nodes i holds as alive or suspect
    int n_complete;  // started nodes whose live_known == n - 1
    uint64_t join_done;
    // crash phase
    int n_victims, dead_marks, dead_marks_needed;
    uint64_t crash_at, first_suspect, all_dead;
    double detect_sum; // over (survivor, victim) pairs
    // counters
    bool counting;     // inside the steady window
    bool fp_window;    // steady + crash windows
    uint64_t fp_dead, fp_suspect, refutations;
    uint64_t sent, dropped, delivered, bytes, malformed, clamped_wakeups;
    uint64_t sent_by_type[GOSSIP_MSG_COUNT], bytes_by_type[GOSSIP_MSG_COUNT];
} sim_t;

typedef struct { // one configuration's figures, passed from a worker process to the parent
    int n;
    double loss;
    double join_periods, settle_periods;
    double msgs_mean, msgs_max, bytes_mean, bytes_max;
    double type_share[GOSSIP_MSG_COUNT], byte_share[GOSSIP_MSG_COUNT];
    double join1_in_all, join1_full;
    int victims;
    double first_suspect, all_dead, mean_detect, susp_timeout;
    uint64_t fp_dead, fp_suspect, refutations, malformed, clamped, mismatched;
    double fp_periods, wall_s, cpu_s;
    long max_rss_kib;
} result_t;

static double s_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t s_env(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

// ---------------------------------------------------------------------------------------------
// Heaps

static bool s_fl_less(const flight_t *a, const flight_t *b) {
    return a->at != b->at ? a->at < b->at : a->order < b->order;
}

static void s_fl_push(sim_t *s, flight_t f) {
    if (s->nfl == s->capfl) {
        s->capfl = s->capfl ? 2 * s->capfl : 4096;
        s->fl = realloc(s->fl, s->capfl * sizeof *s->fl);
        if (!s->fl) abort();
    }
    size_t i = s->nfl++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_fl_less(&f, &s->fl[p])) break;
        s->fl[i] = s->fl[p];
        i = p;
    }
    s->fl[i] = f;
}

static flight_t s_fl_pop(sim_t *s) {
    flight_t top = s->fl[0], last = s->fl[--s->nfl];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nfl) break;
        if (c + 1 < s->nfl && s_fl_less(&s->fl[c + 1], &s->fl[c])) c++;
        if (!s_fl_less(&s->fl[c], &last)) break;
        s->fl[i] = s->fl[c];
        i = c;
    }
    if (s->nfl) s->fl[i] = last;
    return top;
}

static bool s_wk_less(const wake_t *a, const wake_t *b) {
    return a->at != b->at ? a->at < b->at : a->node < b->node;
}

static void s_wk_push(sim_t *s, uint64_t at, int node) {
    if (s->nwk == s->capwk) {
        s->capwk = s->capwk ? 2 * s->capwk : 4096;
        s->wk = realloc(s->wk, s->capwk * sizeof *s->wk);
        if (!s->wk) abort();
    }
    wake_t w = {at, node};
    size_t i = s->nwk++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!s_wk_less(&w, &s->wk[p])) break;
        s->wk[i] = s->wk[p];
        i = p;
    }
    s->wk[i] = w;
}

static void s_wk_pop(sim_t *s) {
    wake_t last = s->wk[--s->nwk];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nwk) break;
        if (c + 1 < s->nwk && s_wk_less(&s->wk[c + 1], &s->wk[c])) c++;
        if (!s_wk_less(&s->wk[c], &last)) break;
        s->wk[i] = s->wk[c];
        i = c;
    }
    if (s->nwk) s->wk[i] = last;
}

// Drops stale wake entries (superseded by a later next_wakeup, or of a node that is down) from the top.
static void s_wk_clean(sim_t *s) {
    while (s->nwk) {
        const wake_t *w = &s->wk[0];
        const node_t *nd = &s->nodes[w->node];
        if (nd->wake == w->at && (nd->up || !nd->started)) return;
        s_wk_pop(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes and routing

static const sim_t *g_sort_sim; // for the qsort comparator
static int s_cmp_by_id(const void *a, const void *b) {
    return memcmp(g_sort_sim->nodes[*(const int *)a].id, g_sort_sim->nodes[*(const int *)b].id, 32);
}

static int s_index(const sim_t *s, const uint8_t *id) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, k = s->by_id[mid];
        int c = memcmp(s->nodes[k].id, id, 32);
        if (c == 0) return k;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void s_set_wake(sim_t *s, int i, uint64_t w) {
    node_t *nd = &s->nodes[i];
    if (w == UINT64_MAX || w == nd->wake) return;
    nd->wake = w;
    s_wk_push(s, w, i);
}

static uint64_t g_spin_ms = 10;

static bool s_is_live(uint8_t v) { return v == V_ALIVE || v == V_SUSPECT; }

// Applies one event of node i to the tracked views.
static void s_on_event(sim_t *s, int i, const gossip_event_t *e) {
    if (e->kind == GOSSIP_EV_REFUTED) {
        if (s->fp_window) s->refutations++;
        return;
    }
    int j = s_index(s, e->id);
    if (j < 0 || j == i) return;
    uint8_t *v = &s->view[(size_t)i * s->n + j], old = *v, nv = old;
    switch (e->kind) {
    case GOSSIP_EV_JOINED:
    case GOSSIP_EV_ALIVE:
    case GOSSIP_EV_UPDATED: nv = V_ALIVE; break;
    case GOSSIP_EV_SUSPECT: nv = V_SUSPECT; break;
    case GOSSIP_EV_DEAD: nv = V_DEAD; break;
    case GOSSIP_EV_LEFT: nv = V_LEFT; break;
    default: break;
    }
    *v = nv;
    if (s_is_live(old) != s_is_live(nv)) {
        int before = s->live_known[i];
        s->live_known[i] += s_is_live(nv) ? 1 : -1;
        if (before == s->n_swarm - 1) s->n_complete--;
        if (s->live_known[i] == s->n_swarm - 1) s->n_complete++;
    }
    bool subject_up = s->nodes[j].up;
    if (e->kind == GOSSIP_EV_SUSPECT) {
        if (subject_up && s->fp_window) s->fp_suspect++;
        if (!subject_up && s->nodes[j].victim && s->first_suspect == UINT64_MAX) s->first_suspect = s->now;
    }
    if (e->kind == GOSSIP_EV_DEAD && old != V_DEAD) {
        if (subject_up) {
            if (s->fp_window) s->fp_dead++;
        } else if (s->nodes[j].victim && s->crash_at != UINT64_MAX) {
            s->dead_marks++;
            s->detect_sum += (double)(s->now - s->crash_at);
            if (s->dead_marks == s->dead_marks_needed) s->all_dead = s->now;
        }
    }
    if (s->join_done == UINT64_MAX && s->n_complete == s->n_swarm) s->join_done = s->now;
}

static void s_route(sim_t *s, int from, gossip_msg_t *msg) {
    int to = s_index(s, msg->to);
    int t = msg->type - GOSSIP_MSG_FIRST;
    s->sent++;
    s->sent_by_type[t]++;
    s->bytes_by_type[t] += msg->len;
    s->bytes += msg->len;
    if (s->counting) {
        s->nodes[from].sent++;
        s->nodes[from].bytes += msg->len;
    }
    if (to < 0 || (s->loss > 0 && (double)(rng_next(&s->rng) >> 11) * 0x1p-53 < s->loss)) {
        s->dropped++;
        gossip_msg_release(msg);
        return;
    }
    // base one-way delay of the link: 5..44 ms, fixed per directed pair
    uint64_t h = (uint64_t)from * 0x9e3779b97f4a7c15ULL ^ (uint64_t)to * 0xc2b2ae3d27d4eb4fULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    uint64_t delay = 5 + h % 40 + rng_below(&s->rng, 10);
    flight_t f = {s->now + delay, s->order++, from, to, msg->type, msg->payload, msg->len};
    msg->payload = NULL;
    s_fl_push(s, f);
}

// Sends node i's outbox, records its events and reschedules its wakeup. after_tick: the node has
// just run its timers at now, so a wakeup at or before now would spin (clamped and counted).
static void s_drain(sim_t *s, int i, bool after_tick) {
    node_t *nd = &s->nodes[i];
    gossip_msg_t msg;
    while (gossip_members_pop(nd->m, &msg)) s_route(s, i, &msg);
    gossip_event_t e;
    while (gossip_members_pop_event(nd->m, &e)) s_on_event(s, i, &e);
    uint64_t w = gossip_members_next_wakeup(nd->m);
    if (w <= s->now) {
        if (after_tick) {
            // The node has nothing due now but says otherwise: a stale timer in next_wakeup (see
            // the note at the top). The real net thread would spin; here it is polled every
            // g_spin_ms instead, as tests/gossip/sim.h steps its clock.
            s->clamped_wakeups++;
            w = s->now + g_spin_ms;
        } else {
            w = s->now;
        }
    }
    s_set_wake(s, i, w);
}

static void s_start(sim_t *s, int i) {
    node_t *nd = &s->nodes[i];
    gossip_record_t r;
    memset(&r, 0, sizeof r);
    memset(r.run_fp, 0xfb, 32);
    snprintf(r.caps.device, sizeof r.caps.device, "cpu");
    r.caps.step_rate_milli = 1000;
    r.caps.reachable = true;
    r.n_endpoints = 1;
    snprintf(r.endpoints[0], sizeof r.endpoints[0], "tcp://10.%d.%d.%d:7000", i >> 16 & 255, i >> 8 & 255, i & 255);
    r.time_ms = 1700000000000ULL + s->now;
    r.incarnation = r.time_ms;
    gossip_config_t c = s->cfg;
    c.seed = 1000 + (uint64_t)i * 7919 + s->now;
    char err[256];
    nd->m = gossip_members_new(&c, nd->sk, &r, s->now, err, sizeof err);
    if (!nd->m) {
        fprintf(stderr, "bench_gossip: node %d: %s\n", i, err);
        exit(1);
    }
    if (i != 0) {
        char ep[64];
        snprintf(ep, sizeof ep, "tcp://10.0.0.0:7000");
        if (gossip_members_add_contact(nd->m, s->nodes[0].id, ep) != 0) abort();
    }
    nd->started = nd->up = true;
    s->live_known[i] = 0;
    if (s->n_swarm == 1 && i == 0) s->n_complete++;
    gossip_members_tick(nd->m, s->now);
    s_drain(s, i, true);
}

static void s_kill(sim_t *s, int i) {
    s->nodes[i].up = false;
    gossip_members_destroy(&s->nodes[i].m);
}

// Processes every delivery and wakeup due at or before t, in time order, then sets the clock to t.
static void s_run_until(sim_t *s, uint64_t t) {
    for (;;) {
        s_wk_clean(s);
        uint64_t tf = s->nfl ? s->fl[0].at : UINT64_MAX, tw = s->nwk ? s->wk[0].at : UINT64_MAX;
        uint64_t next = tf < tw ? tf : tw;
        if (next > t) break;
        s->now = next;
        if (tf <= tw) { // deliveries first at equal times: a tick then sees what arrived
            flight_t f = s_fl_pop(s);
            node_t *nd = &s->nodes[f.to];
            if (nd->up) {
                if (gossip_members_receive(nd->m, s->now, s->nodes[f.from].id, f.type, f.p, f.len) != 0)
                    s->malformed++;
                s->delivered++;
                s_drain(s, f.to, false);
            }
            free(f.p);
        } else {
            int i = s->wk[0].node;
            s_wk_pop(s);
            node_t *nd = &s->nodes[i];
            nd->wake = UINT64_MAX;
            if (!nd->started) {
                s_start(s, i);
            } else {
                gossip_members_tick(nd->m, s->now);
                s_drain(s, i, true);
            }
        }
    }
    s->now = t;
}

static size_t s_pending(const sim_t *s) {
    size_t p = 0;
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) p += gossip_members_pending_updates(s->nodes[i].m);
    return p;
}

// Nodes whose gossip_members_live disagrees with the event-tracked view of which nodes are live.
static uint64_t s_check_views(const sim_t *s) {
    uint64_t bad = 0;
    gossip_member_info_t *live = malloc(((size_t)s->n + 8) * sizeof *live);
    for (int i = 0; i < s->n; i++) {
        if (!s->nodes[i].up) continue;
        size_t k = gossip_members_live(s->nodes[i].m, live, (size_t)s->n + 8);
        int tracked = s->live_known[i] + 1, found = 0;
        for (size_t a = 0; a < k && a < (size_t)s->n + 8; a++) {
            int j = s_index(s, live[a].id);
            if (j == i || (j >= 0 && s_is_live(s->view[(size_t)i * s->n + j]))) found++;
        }
        if ((int)k != tracked || found != tracked) bad++;
    }
    free(live);
    return bad;
}

// ---------------------------------------------------------------------------------------------
// One configuration

static void s_run_config(int n, double loss, uint64_t seed, int steady_periods, int crash_periods, result_t *res) {
    double t0 = s_wall();
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    sim_t *s = calloc(1, sizeof *s);
    int n_swarm = n;
    n = n_swarm + 1; // node n_swarm joins late (phase 4)
    s->n = n;
    s->n_swarm = n_swarm;
    s->loss = loss;
    s->join_done = s->first_suspect = s->all_dead = s->crash_at = UINT64_MAX;
    rng_seed(&s->rng, seed * 0x100000001b3ULL + (uint64_t)n_swarm * 1000 + (uint64_t)(loss * 1000));
    gossip_config_default(&s->cfg);
    s->nodes = calloc((size_t)n, sizeof *s->nodes);
    s->by_id = malloc((size_t)n * sizeof *s->by_id);
    s->view = calloc((size_t)n * n, 1);
    s->live_known = calloc((size_t)n, sizeof *s->live_known);
    if (!s->nodes || !s->by_id || !s->view || !s->live_known) abort();
    for (int i = 0; i < n; i++) {
        uint8_t seedb[32] = {0};
        memcpy(seedb, &i, sizeof i);
        memcpy(seedb + 8, &seed, sizeof seed);
        seedb[31] = 0x5b;
        crypto_sign_seed_keypair(s->nodes[i].id, s->nodes[i].sk, seedb);
        s->by_id[i] = i;
        s->nodes[i].wake = UINT64_MAX;
    }
    g_sort_sim = s;
    qsort(s->by_id, (size_t)n, sizeof *s->by_id, s_cmp_by_id);

    // 1. join: node 0 at t = 0, the others at random times in the first period
    for (int i = 0; i < n_swarm; i++) {
        uint64_t at = i == 0 ? 0 : rng_below(&s->rng, PERIOD_MS);
        s->nodes[i].wake = at;
        s_wk_push(s, at, i);
    }
    for (int p = 1; p <= JOIN_MAX_PERIODS && s->join_done == UINT64_MAX; p++) s_run_until(s, p * PERIOD_MS);
    res->join_periods = s->join_done == UINT64_MAX ? -1 : (double)s->join_done / PERIOD_MS;

    // 2. steady state: let the dissemination queues drain, then measure
    uint64_t settle0 = s->now;
    // Drained, or no smaller than 10 periods ago (a steady inflow of new updates), or SETTLE periods.
    size_t hist[10];
    for (int p = 0; p < g_settle_max; p++) {
        size_t pend = s_pending(s);
        if (pend == 0 || (p >= 10 && pend >= hist[p % 10])) break;
        hist[p % 10] = pend;
        s_run_until(s, s->now + PERIOD_MS);
    }
    res->settle_periods = (double)(s->now - settle0) / PERIOD_MS;
    uint64_t sent0[GOSSIP_MSG_COUNT], bytes0[GOSSIP_MSG_COUNT];
    memcpy(sent0, s->sent_by_type, sizeof sent0);
    memcpy(bytes0, s->bytes_by_type, sizeof bytes0);
    uint64_t fp0 = s->now;
    s->counting = s->fp_window = true;
    s_run_until(s, s->now + (uint64_t)steady_periods * PERIOD_MS);
    s->counting = false;
    double msum = 0, mmax = 0, bsum = 0, bmax = 0;
    for (int i = 0; i < n_swarm; i++) {
        double mi = (double)s->nodes[i].sent / steady_periods, bi = (double)s->nodes[i].bytes / steady_periods;
        msum += mi;
        bsum += bi;
        if (mi > mmax) mmax = mi;
        if (bi > bmax) bmax = bi;
    }
    res->msgs_mean = msum / n_swarm;
    res->msgs_max = mmax;
    res->bytes_mean = bsum / n_swarm;
    res->bytes_max = bmax;
    uint64_t tot = 0, btot = 0;
    for (int k = 0; k < GOSSIP_MSG_COUNT; k++) {
        tot += s->sent_by_type[k] - sent0[k];
        btot += s->bytes_by_type[k] - bytes0[k];
    }
    for (int k = 0; k < GOSSIP_MSG_COUNT; k++) {
        res->type_share[k] = tot ? (double)(s->sent_by_type[k] - sent0[k]) / (double)tot : 0;
        res->byte_share[k] = btot ? (double)(s->bytes_by_type[k] - bytes0[k]) / (double)btot : 0;
    }

    // 3. crash 1% (at least one), never node 0 (everyone's seed)
    int nv = n_swarm / 100 > 0 ? n_swarm / 100 : 1;
    for (int k = 0; k < nv;) {
        int v = 1 + (int)rng_below(&s->rng, (uint64_t)n_swarm - 1);
        if (s->nodes[v].victim) continue;
        s->nodes[v].victim = true;
        k++;
    }
    s->n_victims = nv;
    s->dead_marks_needed = nv * (n_swarm - nv);
    s->crash_at = s->now;
    for (int i = 0; i < n; i++)
        if (s->nodes[i].victim) s_kill(s, i);
    s_run_until(s, s->now + (uint64_t)crash_periods * PERIOD_MS);
    s->fp_window = false;
    res->victims = nv;
    res->first_suspect = s->first_suspect == UINT64_MAX ? -1 : (double)(s->first_suspect - s->crash_at) / PERIOD_MS;
    res->all_dead = s->all_dead == UINT64_MAX ? -1 : (double)(s->all_dead - s->crash_at) / PERIOD_MS;
    res->mean_detect = s->dead_marks ? s->detect_sum / s->dead_marks / PERIOD_MS : -1;
    double f = n_swarm > 10 ? log10((double)n_swarm) : 1.0; // the suspicion timeout at LHM = 1 (members.h)
    res->susp_timeout = s->cfg.suspicion_mult * f * (double)s->cfg.period_ms / PERIOD_MS;
    res->fp_dead = s->fp_dead;
    res->fp_suspect = s->fp_suspect;
    res->refutations = s->refutations;
    res->fp_periods = (double)(s->now - fp0) / PERIOD_MS;

    // 4. one late joiner (node n_swarm, contact node 0) into the settled swarm: time until every
    //    survivor holds it as live, and until its own view holds every survivor (and nothing else)
    int J = n_swarm, survivors = n_swarm - nv;
    uint64_t tj = s->now, in_all = UINT64_MAX, full = UINT64_MAX;
    s->nodes[J].wake = s->now;
    s_wk_push(s, s->now, J);
    while ((in_all == UINT64_MAX || full == UINT64_MAX) && s->now - tj < (uint64_t)JOIN1_MAX_PERIODS * PERIOD_MS) {
        s_run_until(s, s->now + 10);
        if (!s->nodes[J].started) continue;
        int seen = 0, known = 0;
        for (int i = 0; i < n_swarm; i++) {
            if (!s->nodes[i].up) continue;
            seen += s_is_live(s->view[(size_t)i * n + J]);
            known += s_is_live(s->view[(size_t)J * n + i]);
        }
        if (in_all == UINT64_MAX && seen == survivors) in_all = s->now - tj;
        if (full == UINT64_MAX && known == survivors && s->live_known[J] == survivors) full = s->now - tj;
    }
    res->join1_in_all = in_all == UINT64_MAX ? -1 : (double)in_all / PERIOD_MS;
    res->join1_full = full == UINT64_MAX ? -1 : (double)full / PERIOD_MS;

    res->malformed = s->malformed;
    res->clamped = s->clamped_wakeups;
    res->mismatched = s_check_views(s);
    res->n = n_swarm;
    res->loss = loss;

    for (int i = 0; i < n; i++)
        if (s->nodes[i].m) gossip_members_destroy(&s->nodes[i].m);
    while (s->nfl) free(s_fl_pop(s).p);
    free(s->fl);
    free(s->wk);
    free(s->view);
    free(s->live_known);
    free(s->by_id);
    free(s->nodes);
    free(s);
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    res->wall_s = s_wall() - t0;
    res->cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + 1e-6 * (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec);
    res->max_rss_kib = ru1.ru_maxrss;
}

// ---------------------------------------------------------------------------------------------
// Table

static void s_fmt(char *out, size_t len, double v, const char *fmt) {
    if (v < 0) snprintf(out, len, "never");
    else snprintf(out, len, fmt, v);
}

static void s_print(const result_t *r) {
    char join[32], ratio[32], fs[32], ad[32], md[32], j1a[32], j1f[32];
    s_fmt(j1a, sizeof j1a, r->join1_in_all, "%.2f");
    s_fmt(j1f, sizeof j1f, r->join1_full, "%.2f");
    s_fmt(join, sizeof join, r->join_periods, "%.2f");
    s_fmt(ratio, sizeof ratio, r->join_periods < 0 ? -1 : r->join_periods / log2((double)r->n), "%.2f");
    s_fmt(fs, sizeof fs, r->first_suspect, "%.2f");
    s_fmt(ad, sizeof ad, r->all_dead, "%.2f");
    s_fmt(md, sizeof md, r->mean_detect, "%.2f");
    printf("%5d %4.0f%% | %6s %6s | %5.1f %6.2f %5.1f %8.0f %8.0f | %3d %6s %6s %6s %6.1f | %4llu %6llu %6llu %5.0f | %6s %6s | %6.1f %6.0f\n",
           r->n, r->loss * 100, join, ratio, r->settle_periods, r->msgs_mean, r->msgs_max, r->bytes_mean,
           r->bytes_max, r->victims, fs, md, ad, r->susp_timeout, (unsigned long long)r->fp_dead,
           (unsigned long long)r->fp_suspect, (unsigned long long)r->refutations, r->fp_periods, j1a, j1f, r->wall_s,
           (double)r->max_rss_kib / 1024);
    if (r->malformed || r->clamped || r->mismatched)
        printf("      ! %llu malformed messages, %llu wakeups at or before now after a tick, %llu views that "
               "disagree with their events\n",
               (unsigned long long)r->malformed, (unsigned long long)r->clamped, (unsigned long long)r->mismatched);
    fflush(stdout);
}

static int s_parse_list(const char *env, const char *dflt, double *out, int cap) {
    const char *v = getenv(env);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v && *v ? v : dflt);
    int k = 0;
    for (char *tok = strtok(buf, ","); tok && k < cap; tok = strtok(NULL, ",")) out[k++] = strtod(tok, NULL);
    return k;
}

int main(void) {
    if (sodium_init() < 0) return 1;
    log_min_level = LOG_ERROR;
    gossip_record_verify_cache(1 << 16); // each signed record is verified once, not by all N peers
    double ns[16], losses[16];
    int nn = s_parse_list("BENCH_GOSSIP_N", "16,64,256,1000", ns, 16);
    int nl = s_parse_list("BENCH_GOSSIP_LOSS", "0,5,20", losses, 16);
    uint64_t seed = s_env("BENCH_GOSSIP_SEED", 1);
    int steady = (int)s_env("BENCH_GOSSIP_STEADY", 30), crash = (int)s_env("BENCH_GOSSIP_CRASH", 60);
    int jobs = (int)s_env("BENCH_GOSSIP_JOBS", 2);
    g_settle_max = (int)s_env("BENCH_GOSSIP_SETTLE", 200);
    g_spin_ms = s_env("BENCH_GOSSIP_SPIN_MS", 10);
    if (g_spin_ms < 1) g_spin_ms = 1;
    if (jobs < 1) jobs = 1;
    if (steady < 1) steady = 1;

    gossip_config_t dc;
    gossip_config_default(&dc);
    printf("gossip membership, simulated network (seed %llu): period %u ms, ack timeout %u ms (min %u), k = %d "
           "ping-req helpers, suspicion_mult %.0f, λ = %d, gossip rounds every %u ms to %d, sync every %u ms; "
           "link delay 5..44 ms + 0..9 ms jitter\n",
           (unsigned long long)seed, dc.period_ms, dc.ack_timeout_ms, dc.ack_timeout_min_ms, dc.indirect_k,
           dc.suspicion_mult, dc.retransmit_mult, dc.gossip_interval_ms, dc.gossip_fanout, dc.sync_interval_ms);
    printf("times in protocol periods (%llu ms); join from t = 0 (starts spread over the first period); steady "
           "window %d periods; crash window %d periods; false positives over steady + crash windows\n",
           (unsigned long long)PERIOD_MS, steady, crash);
    printf("%11s | %13s | %5s %13s %17s | %3s %20s %6s | %25s | %13s | %13s\n", "", "join", "", "msgs/peer/period",
           "bytes/peer/period", "", "crash detection", "susp.", "false positives", "late joiner", "cost");
    printf("%5s %5s | %6s %6s | %5s %6s %5s %8s %8s | %3s %6s %6s %6s %6s | %4s %6s %6s %5s | %6s %6s | %6s %6s\n", "N",
           "loss", "full", "/log2N", "settl", "mean", "max", "mean", "max", "dead", "first", "mean", "all",
           "timeo", "dead", "susp", "refut", "over", "in all", "full", "wall s", "RSS MB");

    int ncfg = nn * nl;
    result_t *res = calloc((size_t)ncfg, sizeof *res);
    // Configurations in increasing N, spread over `jobs` worker processes (each owns every jobs-th
    // configuration); results come back over a pipe and are printed in order.
    int fds[2];
    if (jobs > 1 && pipe(fds) != 0) jobs = 1;
    if (jobs == 1) {
        for (int c = 0; c < ncfg; c++) {
            s_run_config((int)ns[c / nl], losses[c % nl] / 100, seed, steady, crash, &res[c]);
            s_print(&res[c]);
        }
    } else {
        for (int w = 0; w < jobs; w++) {
            pid_t pid = fork();
            if (pid == 0) {
                close(fds[0]);
                for (int c = w; c < ncfg; c += jobs) {
                    result_t r;
                    memset(&r, 0, sizeof r);
                    s_run_config((int)ns[c / nl], losses[c % nl] / 100, seed, steady, crash, &r);
                    struct {
                        int c;
                        result_t r;
                    } msg = {c, r};
                    if (write(fds[1], &msg, sizeof msg) != (ssize_t)sizeof msg) _exit(1);
                }
                _exit(0);
            }
        }
        close(fds[1]);
        bool *have = calloc((size_t)ncfg, 1);
        int next = 0;
        struct {
            int c;
            result_t r;
        } msg;
        while (read(fds[0], &msg, sizeof msg) == (ssize_t)sizeof msg) {
            res[msg.c] = msg.r;
            have[msg.c] = true;
            while (next < ncfg && have[next]) s_print(&res[next++]);
        }
        while (wait(NULL) > 0) {
        }
        free(have);
        if (next < ncfg) {
            fprintf(stderr, "bench_gossip: a worker failed\n");
            return 1;
        }
    }

    // The O(log N) comparison: full-view time against log2 N, per loss rate.
    printf("\njoin time vs log2 N (periods / log2 N; flat or falling = O(log N)):\n");
    for (int l = 0; l < nl; l++) {
        printf("  loss %3.0f%%:", losses[l]);
        for (int k = 0; k < nn; k++) {
            const result_t *r = &res[k * nl + l];
            if (r->join_periods < 0) printf("  N=%d never", r->n);
            else printf("  N=%d %.2f/%.2f = %.2f", r->n, r->join_periods, log2((double)r->n), r->join_periods / log2((double)r->n));
        }
        printf("\n");
    }
    printf("messages per peer per period (steady, mean; flat = O(1)):\n");
    for (int l = 0; l < nl; l++) {
        printf("  loss %3.0f%%:", losses[l]);
        for (int k = 0; k < nn; k++) printf("  N=%d %.2f", res[k * nl + l].n, res[k * nl + l].msgs_mean);
        printf("\n");
    }
    printf("payload bytes per peer per period (steady, mean):\n");
    for (int l = 0; l < nl; l++) {
        printf("  loss %3.0f%%:", losses[l]);
        for (int k = 0; k < nn; k++) printf("  N=%d %.0f", res[k * nl + l].n, res[k * nl + l].bytes_mean);
        printf("\n");
    }
    printf("late joiner: periods until it is in every view / until its view is complete:\n");
    for (int l = 0; l < nl; l++) {
        printf("  loss %3.0f%%:", losses[l]);
        for (int k = 0; k < nn; k++) {
            const result_t *r = &res[k * nl + l];
            if (r->join1_in_all < 0 || r->join1_full < 0) printf("  N=%d never", r->n);
            else printf("  N=%d %.2f / %.2f", r->n, r->join1_in_all, r->join1_full);
        }
        printf("\n");
    }
    printf("message mix in the steady window (share of messages sent / of payload bytes, largest N):\n");
    for (int l = 0; l < nl; l++) {
        const result_t *r = &res[(nn - 1) * nl + l];
        printf("  N=%d loss %3.0f%%:", r->n, losses[l]);
        for (int t = 0; t < GOSSIP_MSG_COUNT; t++)
            if (r->type_share[t] > 0)
                printf(" %s %.1f%%/%.1f%%", gossip_msg_name(GOSSIP_MSG_FIRST + t), 100 * r->type_share[t],
                       100 * r->byte_share[t]);
        printf("\n");
    }
    uint64_t fp5 = 0;
    bool any5 = false;
    for (int c = 0; c < ncfg; c++)
        if (res[c].loss > 0.049 && res[c].loss < 0.051) {
            fp5 += res[c].fp_dead;
            any5 = true;
        }
    if (any5) printf("false-positive dead markings at 5%% loss, all N: %llu (target 0)\n", (unsigned long long)fp5);
    free(res);
    return 0;
}
