#include "gossip/members.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/rng.h"
#include "node/log.h"

#define MAX_CONTACTS 256
#define MAX_FORWARDS 64
#define MAX_HELPERS 16
#define DIGEST_ENTRY (GOSSIP_ID_BYTES + 8 + 1)
#define UPD_RECORD 1
#define UPD_SUSPECT 2
#define UPD_DEAD 3
#define ROUND_BURST 3 // dissemination rounds: bursts of up to 3, then ROUND_RATE per period on average
#define ROUND_RATE 1

typedef struct {
    uint8_t id[GOSSIP_ID_BYTES];
    gossip_record_t rec;
    uint8_t *raw; // the signed wire form, raw_len bytes (malloc'd to size)
    size_t raw_len;
    gossip_state_t state;
    uint64_t inc;          // incarnation of the state; always rec.incarnation (claims about others are refused)
    uint64_t state_since;  // now_ms when the state last changed (tombstone age)
    uint64_t suspect_since; // the suspicion timer runs from here; its length follows our health
    double srtt, rttvar;   // ms, RFC 6298; srtt < 0: no sample yet
    bool is_self;
    bool my_suspicion;     // suspect because our own probe failed (not because we heard a claim)
    int32_t it_rec, it_claim; // its record / claim item in the dissemination queue (index), or -1
} member_t;

typedef struct {
    uint8_t id[GOSSIP_ID_BYTES];
    char endpoint[GOSSIP_ENDPOINT_MAX + 1];
} contact_t;

// A ping we sent on someone's behalf (ping-req): its ack is passed back to the requester.
typedef struct {
    uint32_t my_seq, their_seq;
    uint8_t requester[GOSSIP_ID_BYTES], target[GOSSIP_ID_BYTES];
    uint64_t nack_at, expires;
    bool nacked;
} forward_t;

// An update being disseminated. Its content is read from the member at send time, so a newer
// state about the same member simply replaces the item. The queue is kept in enqueue order (a
// replaced item is removed and appended anew), so ties in transmit count go oldest first; each
// member links to its items (at most a record and a claim), so enqueueing and checking an item are
// O(1) and a send is one pass over the queue.
typedef struct {
    member_t *x;  // NULL: removed, compacted away by the next pass
    uint8_t kind;     // UPD_*
    uint64_t inc;
    int transmits;
    uint64_t since; // when it was enqueued
} item_t;

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} buf_t;

struct gossip_members {
    gossip_config_t cfg;
    uint8_t sk[GOSSIP_SK_BYTES];
    uint8_t self_id[GOSSIP_ID_BYTES];
    uint64_t wall_base, mono_base;
    rng_t rng;
    bool left;
    bool joining; // the message being applied reached us while we held no other live member

    member_t **mem; // sorted by id
    size_t n_mem, cap_mem;
    member_t *self;

    contact_t contacts[MAX_CONTACTS];
    size_t n_contacts;

    // Probing: the shuffled round-robin and the probe in flight.
    uint8_t (*order)[GOSSIP_ID_BYTES];
    size_t n_order, cap_order, pos;
    bool probing;
    uint8_t target[GOSSIP_ID_BYTES];
    uint32_t probe_seq, retry_seq, retry2_seq; // retries: the direct ping re-sent (s_probe_tick)
    uint64_t probe_start, retry_start, retry2_start, probe_ack_deadline, probe_retry2_at, probe_end, next_probe;
    bool retried2;
    bool probe_indirect;
    uint8_t helpers[MAX_HELPERS][GOSSIP_ID_BYTES];
    int n_helpers;
    uint32_t helper_nacked; // bit i: helpers[i] sent a NACK for this probe
    int health;             // Lifeguard's local health: timeouts scale by 1 + health
    uint32_t seq;
    forward_t fwd[MAX_FORWARDS];
    int n_fwd;

    item_t *items;
    size_t n_items, cap_items; // queue slots, removed ones included until the next pass
    size_t n_pending, n_fresh; // items not removed; of them, sent fewer than gossip_fanout times
    uint32_t *scratch;         // a send's ordering of the queue
    size_t cap_scratch;
    size_t n_live;             // members alive or suspect, self included
    // Timer bounds that spare next_wakeup and tick a pass over the view: the members suspected
    // and the tombstones (dead or left, self excluded), and a lower bound on the suspect_since /
    // state_since of each (exact after each pass, UINT64_MAX when there is none).
    size_t n_suspect, n_tomb;
    uint64_t susp_min, tomb_min;

    uint64_t next_sync, next_join, sync_rounds, next_gossip;
    uint64_t now;        // the latest now_ms given to tick, receive, leave or update_caps
    double round_tokens; // dissemination rounds this peer may still run now (see s_gossip_tick)
    uint64_t round_refill;
    double g_srtt, g_rttvar; // over all direct probes; g_srtt < 0: no sample

    gossip_msg_t *out;
    size_t n_out, cap_out, out_head;
    gossip_event_t *ev;
    size_t n_ev, cap_ev, ev_head;
    gossip_stats_t st;
};

// ---------------------------------------------------------------------------------------------
// Names

const char *gossip_state_name(gossip_state_t s) {
    switch (s) {
    case GOSSIP_ALIVE: return "alive";
    case GOSSIP_SUSPECT: return "suspect";
    case GOSSIP_DEAD: return "dead";
    case GOSSIP_LEFT: return "left";
    }
    return "?";
}

const char *gossip_event_name(gossip_event_kind_t k) {
    switch (k) {
    case GOSSIP_EV_JOINED: return "joined";
    case GOSSIP_EV_SUSPECT: return "suspect";
    case GOSSIP_EV_ALIVE: return "alive";
    case GOSSIP_EV_DEAD: return "dead";
    case GOSSIP_EV_LEFT: return "left";
    case GOSSIP_EV_UPDATED: return "updated";
    case GOSSIP_EV_REFUTED: return "refuted";
    }
    return "?";
}

const char *gossip_msg_name(int type) {
    switch (type) {
    case GOSSIP_MSG_PING: return "ping";
    case GOSSIP_MSG_ACK: return "ack";
    case GOSSIP_MSG_PING_REQ: return "ping-req";
    case GOSSIP_MSG_SYNC: return "sync";
    case GOSSIP_MSG_SYNC_REPLY: return "sync-reply";
    case GOSSIP_MSG_UPDATES: return "updates";
    case GOSSIP_MSG_GOSSIP: return "gossip";
    case GOSSIP_MSG_NACK: return "nack";
    }
    return "?";
}

void gossip_config_default(gossip_config_t *c) {
    memset(c, 0, sizeof *c);
    c->period_ms = 1000;
    c->ack_timeout_ms = 300;
    c->ack_timeout_min_ms = 200;
    c->ack_timeout_max_ms = 2000;
    c->indirect_k = 3;
    c->suspicion_mult = 4.0;
    c->retransmit_mult = 3;
    c->gossip_interval_ms = 200;
    c->gossip_fanout = 3;
    c->sync_interval_ms = 10000;
    c->reconnect_every = 4;
    c->join_retry_ms = 2000;
    c->reap_ms = 900000;
    c->max_piggyback_bytes = 8192;
    c->max_sync_bytes = 1u << 20;
    c->max_members = 4096;
    c->max_health = 8;
    c->seed = 1;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

static void s_buf_need(buf_t *b, size_t n) {
    if (b->oom || b->len + n <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}
static void s_buf_put(buf_t *b, const void *d, size_t n) {
    s_buf_need(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, d, n);
    b->len += n;
}
static void s_buf_u8(buf_t *b, uint8_t v) { s_buf_put(b, &v, 1); }
static void s_buf_u16(buf_t *b, uint16_t v) {
    uint8_t t[2];
    gossip_put_u16(t, v);
    s_buf_put(b, t, 2);
}
static void s_buf_u32(buf_t *b, uint32_t v) {
    uint8_t t[4];
    gossip_put_u32(t, v);
    s_buf_put(b, t, 4);
}
static void s_buf_u64(buf_t *b, uint64_t v) {
    uint8_t t[8];
    gossip_put_u64(t, v);
    s_buf_put(b, t, 8);
}

static int s_rank(gossip_state_t s) {
    switch (s) {
    case GOSSIP_ALIVE: return 0;
    case GOSSIP_SUSPECT: return 1;
    case GOSSIP_DEAD: return 2;
    case GOSSIP_LEFT: return 3;
    }
    return 0;
}

// (inc, state) ordering: >0 when a supersedes b.
static int s_cmp_state(uint64_t ia, gossip_state_t sa, uint64_t ib, gossip_state_t sb) {
    if (ia != ib) return ia > ib ? 1 : -1;
    return s_rank(sa) - s_rank(sb);
}

static bool s_is_live_state(gossip_state_t s) { return s == GOSSIP_ALIVE || s == GOSSIP_SUSPECT; }
static bool s_is_live(const member_t *x) { return s_is_live_state(x->state); }

// The reachability rule as gossip applies it to its own choices.
static bool s_linkable(const gossip_members_t *m, const member_t *x) {
    return m->self->rec.caps.reachable || x->rec.caps.reachable;
}

static size_t s_find_pos(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES], bool *found) {
    size_t lo = 0, hi = m->n_mem;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = memcmp(m->mem[mid]->id, id, GOSSIP_ID_BYTES);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = false;
    return lo;
}

static member_t *s_find(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]) {
    bool found;
    size_t i = s_find_pos(m, id, &found);
    return found ? m->mem[i] : NULL;
}

static size_t s_live_count(const gossip_members_t *m) { return m->n_live; }

// No other live member we can talk to: the join retries run instead of anti-entropy.
static bool s_alone(const gossip_members_t *m) {
    for (size_t i = 0; i < m->n_mem; i++)
        if (!m->mem[i]->is_self && s_is_live(m->mem[i]) && s_linkable(m, m->mem[i])) return false;
    return true;
}

static void s_event(gossip_members_t *m, gossip_event_kind_t kind, const uint8_t id[GOSSIP_ID_BYTES], uint64_t inc,
                    const uint8_t from[GOSSIP_ID_BYTES]) {
    if (m->ev_head == m->n_ev) m->ev_head = m->n_ev = 0;
    if (m->n_ev == m->cap_ev) {
        size_t cap = m->cap_ev ? 2 * m->cap_ev : 32;
        gossip_event_t *p = realloc(m->ev, cap * sizeof *p);
        if (!p) return; // events are reporting; losing one under OOM is not worth failing for
        m->ev = p;
        m->cap_ev = cap;
    }
    gossip_event_t *e = &m->ev[m->n_ev++];
    e->kind = kind;
    memcpy(e->id, id, GOSSIP_ID_BYTES);
    e->incarnation = inc;
    memcpy(e->from, from ? from : m->self_id, GOSSIP_ID_BYTES);
    char who[9];
    gossip_id_short(id, who);
    log_debug("gossip", "member %s %s (incarnation %llu)", who, gossip_event_name(kind), (unsigned long long)inc);
}

static void s_send(gossip_members_t *m, const uint8_t to[GOSSIP_ID_BYTES], gossip_msg_type_t type, buf_t *b) {
    if (b->oom) {
        free(b->p);
        *b = (buf_t){0};
        return;
    }
    if (m->out_head == m->n_out) m->out_head = m->n_out = 0;
    if (m->n_out == m->cap_out) {
        size_t cap = m->cap_out ? 2 * m->cap_out : 32;
        gossip_msg_t *p = realloc(m->out, cap * sizeof *p);
        if (!p) {
            free(b->p);
            *b = (buf_t){0};
            return;
        }
        m->out = p;
        m->cap_out = cap;
    }
    gossip_msg_t *msg = &m->out[m->n_out++];
    memcpy(msg->to, to, GOSSIP_ID_BYTES);
    msg->type = type;
    msg->payload = b->p;
    msg->len = b->len;
    m->st.msgs_out[type - GOSSIP_MSG_FIRST]++;
    m->st.bytes_out += b->len;
    *b = (buf_t){0};
}

// ---------------------------------------------------------------------------------------------
// RTT and timeouts

static double s_ack_timeout(const gossip_members_t *m, const member_t *x) {
    double srtt = x && x->srtt >= 0 ? x->srtt : m->g_srtt, var = x && x->srtt >= 0 ? x->rttvar : m->g_rttvar;
    double t = srtt >= 0 ? srtt + 4 * var : (double)m->cfg.ack_timeout_ms;
    if (t < m->cfg.ack_timeout_min_ms) t = m->cfg.ack_timeout_min_ms;
    if (t > m->cfg.ack_timeout_max_ms) t = m->cfg.ack_timeout_max_ms;
    return t;
}

static uint64_t s_probe_interval(const gossip_members_t *m, const member_t *x) {
    double t = 3 * s_ack_timeout(m, x);
    return t > m->cfg.period_ms ? (uint64_t)t : m->cfg.period_ms;
}

static double s_lhm(const gossip_members_t *m) { return 1.0 + m->health; }

static uint64_t s_suspicion_timeout(const gossip_members_t *m) {
    double n = (double)s_live_count(m);
    double f = n > 10 ? log10(n) : 1.0;
    return (uint64_t)(m->cfg.suspicion_mult * f * (double)s_probe_interval(m, NULL) * s_lhm(m));
}

static void s_health(gossip_members_t *m, int delta) {
    m->health += delta;
    if (m->health < 0) m->health = 0;
    if (m->health > m->cfg.max_health) m->health = m->cfg.max_health;
}

static void s_rtt_sample(double *srtt, double *rttvar, double r) {
    if (*srtt < 0) {
        *srtt = r;
        *rttvar = r / 2;
    } else {
        *rttvar = 0.75 * *rttvar + 0.25 * fabs(*srtt - r);
        *srtt = 0.875 * *srtt + 0.125 * r;
    }
}

static int s_retransmit_limit(const gossip_members_t *m) {
    double n = (double)s_live_count(m);
    int l = m->cfg.retransmit_mult * (int)ceil(log2(n + 1));
    return l < 1 ? 1 : l;
}

// ---------------------------------------------------------------------------------------------
// Dissemination queue

static int32_t *s_item_slot(member_t *x, uint8_t kind) { return kind == UPD_RECORD ? &x->it_rec : &x->it_claim; }

static void s_item_drop(gossip_members_t *m, int32_t *slot) {
    if (*slot < 0) return;
    item_t *it = &m->items[*slot];
    if (it->transmits < m->cfg.gossip_fanout) m->n_fresh--;
    it->x = NULL;
    m->n_pending--;
    *slot = -1;
}

static void s_enqueue(gossip_members_t *m, member_t *x, uint8_t kind, uint64_t inc) {
    // A record at a higher incarnation replaces everything older; at the same incarnation a claim
    // and the record may both be worth sending (the claim needs the record first), so each has its
    // own slot.
    int32_t *slot = s_item_slot(x, kind);
    s_item_drop(m, slot);
    if (kind == UPD_RECORD && x->it_claim >= 0 && m->items[x->it_claim].inc < inc) s_item_drop(m, &x->it_claim);
    if (m->n_items == m->cap_items) {
        size_t cap = m->cap_items ? 2 * m->cap_items : 32;
        item_t *p = realloc(m->items, cap * sizeof *p);
        if (!p) return;
        m->items = p;
        m->cap_items = cap;
    }
    *slot = (int32_t)m->n_items;
    m->items[m->n_items++] = (item_t){x, kind, inc, 0, m->now};
    m->n_pending++;
    m->n_fresh++;
}

// Whether an item still says something the member's current state supports.
static bool s_item_valid(const item_t *it) {
    const member_t *x = it->x;
    if (!x || x->inc != it->inc) return false;
    if (it->kind == UPD_SUSPECT) return x->state == GOSSIP_SUSPECT;
    if (it->kind == UPD_DEAD) return x->state == GOSSIP_DEAD;
    return true;
}

// Compacts the queue: drops removed items, those whose content the view no longer supports, those
// sent `limit` times (INT32_MAX keeps them) and those older than 2·λ·log2 N periods, and recounts
// the fresh ones. An update normally goes out two or three times a period, so it is done well
// before that age; one still queued is stuck behind a backlog that nobody else spreads any more
// (a seed that saw N peers start at once holds N records: N·λ·log2 N transmissions, at some eighty
// a period), and what its dissemination missed the digest exchanges have long repaired.
static void s_compact_items(gossip_members_t *m, int limit) {
    size_t w = 0;
    m->n_fresh = 0;
    uint64_t max_age = 2 * (uint64_t)s_retransmit_limit(m) * m->cfg.period_ms;
    for (size_t i = 0; i < m->n_items; i++) {
        item_t it = m->items[i];
        if (!it.x) continue;
        int32_t *slot = s_item_slot(it.x, it.kind);
        if (!s_item_valid(&it) || it.transmits >= limit || m->now - it.since > max_age) {
            *slot = -1;
            m->n_pending--;
            continue;
        }
        *slot = (int32_t)w;
        m->n_fresh += it.transmits < m->cfg.gossip_fanout;
        m->items[w++] = it;
    }
    m->n_items = w;
}

static void s_purge_items(gossip_members_t *m) { s_compact_items(m, INT32_MAX); }

// Whether an item is still fresh: sent fewer than gossip_fanout times, i.e. not yet through one
// dissemination round. Only fresh items start rounds (see s_gossip_tick).
static bool s_have_fresh(const gossip_members_t *m) { return m->n_fresh > 0; }

static size_t s_update_size(uint8_t kind, const member_t *x) {
    return kind == UPD_RECORD ? 1 + 2 + x->raw_len : 1 + GOSSIP_ID_BYTES + 8;
}

static void s_put_update(buf_t *b, uint8_t kind, const member_t *x) {
    s_buf_u8(b, kind);
    if (kind == UPD_RECORD) {
        s_buf_u16(b, (uint16_t)x->raw_len);
        s_buf_put(b, x->raw, x->raw_len);
    } else {
        s_buf_put(b, x->id, GOSSIP_ID_BYTES);
        s_buf_u64(b, x->inc);
    }
}

// Appends the updates section: first what `about` (the destination, may be NULL) must hear about
// itself (its suspicion or death, so it refutes at once), then queued items least-sent first within
// budget bytes. Sent items count one transmission; exhausted or outdated ones leave the queue.
static void s_put_piggyback(gossip_members_t *m, buf_t *b, size_t budget, const uint8_t *about) {
    size_t count_at = b->len;
    uint16_t count = 0;
    s_buf_u16(b, 0);
    size_t used = 2;
    const member_t *dest = about ? s_find(m, about) : NULL;
    if (dest && !dest->is_self && (dest->state == GOSSIP_SUSPECT || dest->state == GOSSIP_DEAD)) {
        uint8_t kind = dest->state == GOSSIP_SUSPECT ? UPD_SUSPECT : UPD_DEAD;
        s_put_update(b, kind, dest);
        used += s_update_size(kind, dest);
        count++;
    }
    // Drop removed, invalid and exhausted items, then order the rest by transmit count (a counting
    // sort: counts stay below the limit), enqueue order within a count.
    int limit = s_retransmit_limit(m);
    s_compact_items(m, limit);
    if (m->n_items && budget >= used + 1 + GOSSIP_ID_BYTES + 8) {
        if (m->cap_scratch < m->n_items) {
            uint32_t *p = realloc(m->scratch, m->n_items * sizeof *p);
            if (!p) goto done;
            m->scratch = p;
            m->cap_scratch = m->n_items;
        }
        size_t start[limit + 1];
        memset(start, 0, sizeof start);
        for (size_t i = 0; i < m->n_items; i++) start[m->items[i].transmits + 1]++;
        for (int t = 1; t <= limit; t++) start[t] += start[t - 1];
        for (size_t i = 0; i < m->n_items; i++) m->scratch[start[m->items[i].transmits]++] = (uint32_t)i;
        for (size_t k = 0; k < m->n_items && count < UINT16_MAX; k++) {
            if (budget < used + 1 + GOSSIP_ID_BYTES + 8) break; // not even a claim fits any more
            item_t *it = &m->items[m->scratch[k]];
            // Telling a member its own state is wasted (the claim about it went first anyway).
            if (it->x == dest) continue;
            size_t sz = s_update_size(it->kind, it->x);
            if (used + sz > budget) continue; // a smaller item further on may still fit
            s_put_update(b, it->kind, it->x);
            used += sz;
            count++;
            if (++it->transmits == m->cfg.gossip_fanout) m->n_fresh--;
            if (it->transmits >= limit) s_item_drop(m, s_item_slot(it->x, it->kind));
        }
    }
done:
    if (!b->oom) gossip_put_u16(b->p + count_at, count);
}

// ---------------------------------------------------------------------------------------------
// The view

static void s_order_insert(gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]) {
    if (m->n_order == m->cap_order) {
        size_t cap = m->cap_order ? 2 * m->cap_order : 16;
        void *p = realloc(m->order, cap * sizeof *m->order);
        if (!p) return;
        m->order = p;
        m->cap_order = cap;
    }
    // SWIM: a joiner goes to a random place in the rest of this round.
    size_t at = m->pos + (size_t)rng_below(&m->rng, m->n_order - m->pos + 1);
    memmove(m->order + at + 1, m->order + at, (m->n_order - at) * sizeof *m->order);
    memcpy(m->order[at], id, GOSSIP_ID_BYTES);
    m->n_order++;
}

static void s_count_state(gossip_members_t *m, const member_t *x, int sign, uint64_t now) {
    if (x->state == GOSSIP_SUSPECT) {
        m->n_suspect += (size_t)sign;
        if (sign > 0 && now < m->susp_min) m->susp_min = now;
        if (m->n_suspect == 0) m->susp_min = UINT64_MAX; // a bound left from gone suspects is no bound
    }
    if (!s_is_live(x) && !x->is_self) {
        m->n_tomb += (size_t)sign;
        if (sign > 0 && now < m->tomb_min) m->tomb_min = now;
        if (m->n_tomb == 0) m->tomb_min = UINT64_MAX;
    }
    if (s_is_live(x)) m->n_live += (size_t)sign;
}

// Replaces x's wire record with len bytes of raw. Returns false (x unchanged) when out of memory.
static bool s_set_raw(member_t *x, const uint8_t *raw, size_t len) {
    if (len != x->raw_len || !x->raw) {
        uint8_t *p = realloc(x->raw, len ? len : 1);
        if (!p) return false;
        x->raw = p;
    }
    memcpy(x->raw, raw, len);
    x->raw_len = len;
    return true;
}

static void s_member_free(gossip_members_t *m, member_t *x) {
    s_count_state(m, x, -1, 0);
    s_item_drop(m, &x->it_rec);
    s_item_drop(m, &x->it_claim);
    free(x->raw);
    free(x);
}

static member_t *s_add(gossip_members_t *m, const gossip_record_t *r, const uint8_t *raw, size_t raw_len,
                       gossip_state_t state, uint64_t now) {
    if (m->n_mem >= m->cfg.max_members) {
        m->st.view_full++;
        return NULL;
    }
    if (m->n_mem == m->cap_mem) {
        size_t cap = m->cap_mem ? 2 * m->cap_mem : 16;
        member_t **p = realloc(m->mem, cap * sizeof *p);
        if (!p) return NULL;
        m->mem = p;
        m->cap_mem = cap;
    }
    member_t *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    if (!s_set_raw(x, raw, raw_len)) {
        free(x);
        return NULL;
    }
    memcpy(x->id, r->id, GOSSIP_ID_BYTES);
    x->rec = *r;
    x->it_rec = x->it_claim = -1;
    x->state = state;
    s_count_state(m, x, +1, now);
    x->inc = r->incarnation;
    x->state_since = now;
    x->srtt = x->rttvar = -1;
    bool found;
    size_t at = s_find_pos(m, r->id, &found);
    memmove(m->mem + at + 1, m->mem + at, (m->n_mem - at) * sizeof *m->mem);
    m->mem[at] = x;
    m->n_mem++;
    if (m->self && s_is_live(x)) s_order_insert(m, x->id);
    return x;
}

static void s_set_state(gossip_members_t *m, member_t *x, gossip_state_t s, uint64_t now) {
    s_count_state(m, x, -1, now);
    x->state = s;
    x->state_since = now;
    x->my_suspicion = false;
    if (s == GOSSIP_SUSPECT) x->suspect_since = now;
    s_count_state(m, x, +1, now);
}

// Signs the self template at its current fields and stamps the time. Returns 0 or -1.
static int s_sign_self(gossip_members_t *m, uint64_t now, char *err, size_t errlen) {
    member_t *s = m->self;
    s->rec.time_ms = m->wall_base + (now - m->mono_base);
    uint8_t raw[GOSSIP_RECORD_MAX];
    size_t n = gossip_record_sign(&s->rec, m->sk, raw, sizeof raw, err, errlen);
    if (!n) return -1;
    if (!s_set_raw(s, raw, n)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->inc = s->rec.incarnation;
    return 0;
}

static void s_refute(gossip_members_t *m, uint64_t claimed_inc, uint64_t now, const uint8_t *from) {
    if (m->left) return;
    uint64_t inc = (claimed_inc > m->self->inc ? claimed_inc : m->self->inc) + 1;
    m->self->rec.incarnation = inc;
    char err[256];
    if (s_sign_self(m, now, err, sizeof err) != 0) {
        log_error("gossip", "cannot re-sign own record: %s", err);
        return;
    }
    m->st.refutations++;
    s_health(m, +1); // being suspected hints that it is our side that is slow
    s_enqueue(m, m->self, UPD_RECORD, inc);
    s_event(m, GOSSIP_EV_REFUTED, m->self_id, inc, from);
}

// A member appeared, or a digest partner lacked records we hold: others may be appearing too, or
// lack them too (a mass start, two groups merging), and what dissemination missed (about
// e^-fanout of the peers per update, see s_gossip_tick) the next digest exchange repairs, so it
// comes within a period instead of sync_interval_ms. Each exchange that finds a difference brings
// the next one forward again — a push-pull epidemic for as long as views differ — and in a
// settled view the interval is back to sync_interval_ms.
static void s_sync_soon(gossip_members_t *m, uint64_t now) {
    uint64_t t = now + m->cfg.period_ms;
    if (t < m->next_sync) m->next_sync = t;
}

// Whether a record learned now stays out of the dissemination queue: a joiner learns the whole
// view at once from its contact, news to the joiner alone, which would otherwise cost it N·λ·log2 N
// piggybacked transmissions. (A joiner whose contacts sit in two groups that do not know each
// other passes the first group's records on through its digest exchanges, which s_sync_soon brings
// forward.) A leave is always passed on.
static bool s_quiet(const gossip_members_t *m, gossip_state_t ns) { return m->joining && ns != GOSSIP_LEFT; }

typedef enum { APPLY_NOTHING, APPLY_CHANGED } apply_t;

// A signed record from the wire. raw is verified unless it equals what we already hold.
static apply_t s_apply_record(gossip_members_t *m, const uint8_t *raw, size_t len, uint64_t now, const uint8_t *from) {
    if (len >= 8 + GOSSIP_ID_BYTES) {
        member_t *known = s_find(m, raw + 8);
        if (known && known->raw_len == len && memcmp(known->raw, raw, len) == 0) return APPLY_NOTHING;
    }
    gossip_record_t r;
    char err[256];
    gossip_rec_status_t rs = gossip_record_decode(&r, raw, len, m->self->rec.run_fp, err, sizeof err);
    if (rs != GOSSIP_REC_OK) {
        m->st.rejected[rs]++;
        char who[9];
        gossip_id_short(from, who);
        log_warn("gossip", "dropped a record relayed by %s: %s", who, err);
        return APPLY_NOTHING;
    }
    if (memcmp(r.id, m->self_id, GOSSIP_ID_BYTES) == 0) {
        // Our own record as someone else holds it. Anything at or above our incarnation that is not
        // byte-identical (an earlier life's record, a leave we did not send) must be outranked.
        if (r.incarnation >= m->self->inc) s_refute(m, r.incarnation, now, from);
        else m->st.stale++;
        return APPLY_NOTHING;
    }
    if (m->cfg.admit && !m->cfg.admit(m->cfg.admit_ctx, &r)) {
        m->st.not_admitted++;
        return APPLY_NOTHING;
    }
    gossip_state_t ns = r.status == GOSSIP_STATUS_LEAVING ? GOSSIP_LEFT : GOSSIP_ALIVE;
    member_t *x = s_find(m, r.id);
    if (!x) {
        x = s_add(m, &r, raw, len, ns, now);
        if (!x) return APPLY_NOTHING;
        if (!s_quiet(m, ns)) s_enqueue(m, x, UPD_RECORD, x->inc);
        if (ns == GOSSIP_ALIVE) {
            s_event(m, GOSSIP_EV_JOINED, x->id, x->inc, from);
            s_sync_soon(m, now);
        }
        return APPLY_CHANGED;
    }
    if (r.incarnation < x->inc) {
        m->st.stale++;
        return APPLY_NOTHING;
    }
    if (r.incarnation == x->inc) {
        if (ns == GOSSIP_LEFT && x->state != GOSSIP_LEFT) {
            // fall through: a leave outranks any claim at its incarnation
        } else if (r.time_ms > x->rec.time_ms && ns == (x->state == GOSSIP_LEFT ? GOSSIP_LEFT : GOSSIP_ALIVE)) {
            // Same incarnation, re-signed later by its owner (only if it restarted without raising
            // its incarnation): keep the newer bytes, the state stands.
            if (s_set_raw(x, raw, len)) x->rec = r;
            return APPLY_NOTHING;
        } else {
            m->st.stale++;
            return APPLY_NOTHING;
        }
    }
    gossip_state_t old = x->state;
    bool was_live = s_is_live(x);
    if (!s_set_raw(x, raw, len)) return APPLY_NOTHING;
    x->rec = r;
    x->inc = r.incarnation;
    s_set_state(m, x, ns, now);
    if (!s_quiet(m, ns)) s_enqueue(m, x, UPD_RECORD, x->inc);
    if (ns == GOSSIP_LEFT) {
        if (old != GOSSIP_LEFT) s_event(m, GOSSIP_EV_LEFT, x->id, x->inc, from);
    } else if (!was_live) {
        s_event(m, GOSSIP_EV_JOINED, x->id, x->inc, from);
        s_sync_soon(m, now);
        s_order_insert(m, x->id);
    } else if (old == GOSSIP_SUSPECT) {
        s_event(m, GOSSIP_EV_ALIVE, x->id, x->inc, from);
    } else {
        s_event(m, GOSSIP_EV_UPDATED, x->id, x->inc, from);
    }
    return APPLY_CHANGED;
}

// A suspect/dead claim about (id, inc).
static void s_apply_claim(gossip_members_t *m, uint8_t kind, const uint8_t id[GOSSIP_ID_BYTES], uint64_t inc,
                          uint64_t now, const uint8_t *from) {
    if (memcmp(id, m->self_id, GOSSIP_ID_BYTES) == 0) {
        if (inc >= m->self->inc) {
            s_refute(m, inc, now, from);
        } else if (!m->left && memcmp(from, m->self_id, GOSSIP_ID_BYTES) != 0) {
            // The sender still holds an incarnation of ours we have already refuted (it missed the
            // refutation while cut off): hand it our current record directly.
            m->st.stale++;
            buf_t b = {0};
            s_buf_u16(&b, 1);
            s_put_update(&b, UPD_RECORD, m->self);
            s_send(m, from, GOSSIP_MSG_GOSSIP, &b);
        }
        return;
    }
    member_t *x = s_find(m, id);
    if (!x) {
        m->st.unknown_claims++;
        return;
    }
    if (inc < x->inc) {
        m->st.stale++;
        return;
    }
    if (inc > x->inc) { // about a record we have not seen: it will reach us, and the claim again if it stands
        m->st.unknown_claims++;
        return;
    }
    // Only our own suspicion timer buries a member: someone else's death claim starts (or keeps)
    // a suspicion here. The claim may be stale (from the far side of a healed partition) or made by
    // a peer that was itself cut off; the member then refutes before our timer runs out, and a
    // member that is really gone dies here one suspicion timeout after we first heard of it.
    if (kind == UPD_DEAD) kind = UPD_SUSPECT;
    gossip_state_t ns = kind == UPD_SUSPECT ? GOSSIP_SUSPECT : GOSSIP_DEAD;
    if (s_rank(ns) <= s_rank(x->state)) return;
    s_set_state(m, x, ns, now);
    s_enqueue(m, x, kind, x->inc);
    s_event(m, ns == GOSSIP_SUSPECT ? GOSSIP_EV_SUSPECT : GOSSIP_EV_DEAD, x->id, x->inc, from);
}

// ---------------------------------------------------------------------------------------------
// Parsing. Every section is walked once to check its framing before anything is applied, so a
// malformed message changes nothing.

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} rd_t;

static bool s_rd_take(rd_t *r, size_t n, const uint8_t **out) {
    if (n > r->len - r->pos) return false;
    *out = r->p + r->pos;
    r->pos += n;
    return true;
}

// Checks an updates section spanning the rest of r. Returns 0 or -1.
static int s_updates_check(rd_t r, const char **why) {
    const uint8_t *q = NULL;
    if (!s_rd_take(&r, 2, &q)) {
        *why = "no update count";
        return -1;
    }
    unsigned count = gossip_get_u16(q);
    for (unsigned i = 0; i < count; i++) {
        if (!s_rd_take(&r, 1, &q)) {
            *why = "update list shorter than its count";
            return -1;
        }
        uint8_t kind = q[0];
        if (kind == UPD_RECORD) {
            if (!s_rd_take(&r, 2, &q)) {
                *why = "record update truncated";
                return -1;
            }
            size_t l = gossip_get_u16(q);
            if (l > GOSSIP_RECORD_MAX || !s_rd_take(&r, l, &q)) {
                *why = "record update length runs past the message";
                return -1;
            }
        } else if (kind == UPD_SUSPECT || kind == UPD_DEAD) {
            if (!s_rd_take(&r, GOSSIP_ID_BYTES + 8, &q)) {
                *why = "claim update truncated";
                return -1;
            }
        } else {
            *why = "unknown update kind";
            return -1;
        }
    }
    if (r.pos != r.len) {
        *why = "stray bytes after the updates";
        return -1;
    }
    return 0;
}

static void s_updates_apply(gossip_members_t *m, rd_t r, uint64_t now, const uint8_t *from) {
    const uint8_t *q = NULL;
    s_rd_take(&r, 2, &q);
    unsigned count = gossip_get_u16(q);
    for (unsigned i = 0; i < count; i++) {
        s_rd_take(&r, 1, &q);
        uint8_t kind = q[0];
        if (kind == UPD_RECORD) {
            s_rd_take(&r, 2, &q);
            size_t l = gossip_get_u16(q);
            s_rd_take(&r, l, &q);
            s_apply_record(m, q, l, now, from);
        } else {
            s_rd_take(&r, GOSSIP_ID_BYTES + 8, &q);
            s_apply_claim(m, kind, q, gossip_get_u64(q + GOSSIP_ID_BYTES), now, from);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building messages

static void s_send_ping(gossip_members_t *m, const uint8_t to[GOSSIP_ID_BYTES], uint32_t seq) {
    buf_t b = {0};
    s_buf_u32(&b, seq);
    s_put_piggyback(m, &b, m->cfg.max_piggyback_bytes, to);
    s_send(m, to, GOSSIP_MSG_PING, &b);
}

static void s_send_ack(gossip_members_t *m, const uint8_t to[GOSSIP_ID_BYTES], uint32_t seq) {
    buf_t b = {0};
    s_buf_u32(&b, seq);
    s_put_piggyback(m, &b, m->cfg.max_piggyback_bytes, to);
    s_send(m, to, GOSSIP_MSG_ACK, &b);
}

static void s_send_sync(gossip_members_t *m, const uint8_t to[GOSSIP_ID_BYTES]) {
    buf_t b = {0};
    s_buf_u32(&b, (uint32_t)m->n_mem);
    for (size_t i = 0; i < m->n_mem; i++) {
        s_buf_put(&b, m->mem[i]->id, GOSSIP_ID_BYTES);
        s_buf_u64(&b, m->mem[i]->inc);
        s_buf_u8(&b, (uint8_t)m->mem[i]->state);
    }
    // Our own record always rides along: on first contact the other side does not know us yet.
    size_t count_at = b.len;
    s_buf_u16(&b, 1);
    s_put_update(&b, UPD_RECORD, m->self);
    // Then the usual piggyback, merged into the same section.
    buf_t pb = {0};
    s_put_piggyback(m, &pb, m->cfg.max_piggyback_bytes, to);
    if (!pb.oom && pb.len >= 2) {
        uint16_t extra = gossip_get_u16(pb.p);
        s_buf_put(&b, pb.p + 2, pb.len - 2);
        if (!b.oom) gossip_put_u16(b.p + count_at, (uint16_t)(1 + extra));
    }
    free(pb.p);
    m->st.syncs++;
    s_send(m, to, GOSSIP_MSG_SYNC, &b);
}

// Appends x's record and, when it is suspect or dead, the claim. Returns false when over budget.
static bool s_put_member_full(buf_t *b, const member_t *x, size_t *used, size_t budget, uint16_t *count) {
    size_t sz = s_update_size(UPD_RECORD, x);
    bool claim = x->state == GOSSIP_SUSPECT || x->state == GOSSIP_DEAD;
    if (claim) sz += s_update_size(UPD_SUSPECT, x);
    if (*used + sz > budget || *count > UINT16_MAX - 2) return false;
    s_put_update(b, UPD_RECORD, x);
    (*count)++;
    if (claim) {
        s_put_update(b, x->state == GOSSIP_SUSPECT ? UPD_SUSPECT : UPD_DEAD, x);
        (*count)++;
    }
    *used += sz;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Handlers

static void s_on_ack(gossip_members_t *m, uint64_t now, const uint8_t from[GOSSIP_ID_BYTES], uint32_t seq) {
    // The target answers the first ping or the retry (which has its own sequence number, so each
    // RTT sample is measured from the ping it answers).
    bool retry = m->probing && m->probe_indirect && seq == m->retry_seq;
    bool retry2 = m->probing && m->retried2 && seq == m->retry2_seq;
    if (m->probing && (seq == m->probe_seq || retry || retry2)) {
        if (memcmp(from, m->target, GOSSIP_ID_BYTES) == 0) {
            member_t *x = s_find(m, from);
            double r = (double)(now - (retry2 ? m->retry2_start : retry ? m->retry_start : m->probe_start));
            if (x) s_rtt_sample(&x->srtt, &x->rttvar, r);
            s_rtt_sample(&m->g_srtt, &m->g_rttvar, r);
            m->st.direct_acks++;
            m->probing = false;
            s_health(m, -1);
            return;
        }
        for (int i = 0; i < m->n_helpers; i++)
            if (memcmp(from, m->helpers[i], GOSSIP_ID_BYTES) == 0) {
                m->st.indirect_acks++;
                m->probing = false;
                s_health(m, -1);
                return;
            }
    }
    for (int i = 0; i < m->n_fwd; i++) {
        forward_t *f = &m->fwd[i];
        if (f->my_seq == seq && memcmp(f->target, from, GOSSIP_ID_BYTES) == 0) {
            s_send_ack(m, f->requester, f->their_seq);
            m->fwd[i] = m->fwd[--m->n_fwd];
            return;
        }
    }
    m->st.late_acks++;
}

static void s_on_ping_req(gossip_members_t *m, uint64_t now, const uint8_t from[GOSSIP_ID_BYTES], uint32_t seq,
                          const uint8_t target[GOSSIP_ID_BYTES]) {
    if (memcmp(target, m->self_id, GOSSIP_ID_BYTES) == 0) { // asked to ping ourselves: we are alive
        s_send_ack(m, from, seq);
        return;
    }
    member_t *t = s_find(m, target);
    if (!t || !s_linkable(m, t)) return; // we cannot reach it either; the requester asked others too
    if (m->n_fwd == MAX_FORWARDS) m->fwd[0] = m->fwd[--m->n_fwd]; // drop the oldest-placed one
    forward_t *f = &m->fwd[m->n_fwd++];
    f->my_seq = ++m->seq;
    f->their_seq = seq;
    memcpy(f->requester, from, GOSSIP_ID_BYTES);
    memcpy(f->target, target, GOSSIP_ID_BYTES);
    f->nack_at = now + (uint64_t)s_ack_timeout(m, t);
    f->nacked = false;
    f->expires = now + 2 * s_probe_interval(m, t);
    s_send_ping(m, target, f->my_seq);
}

static void s_on_sync(gossip_members_t *m, uint64_t now, const uint8_t from[GOSSIP_ID_BYTES], rd_t digest,
                      uint32_t n, size_t budget) {
    // What they lack or hold older goes back; what they hold newer (or we lack) we ask for.
    bool *mentioned = calloc(m->n_mem ? m->n_mem : 1, sizeof *mentioned);
    buf_t want = {0};
    uint32_t n_want = 0;
    buf_t upd = {0};
    uint16_t count = 0;
    size_t used = 2;
    s_buf_u16(&upd, 0);
    if (!mentioned) return;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = NULL;
        s_rd_take(&digest, DIGEST_ENTRY, &e);
        uint64_t inc = gossip_get_u64(e + GOSSIP_ID_BYTES);
        uint8_t st = e[GOSSIP_ID_BYTES + 8];
        if (st > GOSSIP_LEFT) continue;
        bool found;
        size_t at = s_find_pos(m, e, &found);
        if (!found) {
            // Tombstones we do not hold are not fetched: re-learning them would restart their reap
            // timers, and two peers could pass a long-gone member back and forth for ever.
            if (st == GOSSIP_ALIVE || st == GOSSIP_SUSPECT) {
                n_want++;
                s_buf_put(&want, e, GOSSIP_ID_BYTES);
            }
            continue;
        }
        member_t *x = m->mem[at];
        mentioned[at] = true;
        int c = s_cmp_state(x->inc, x->state, inc, (gossip_state_t)st);
        if (c < 0 && x->is_self) {
            // They hold us suspect or dead (or an earlier life's record above ours): outrank it and
            // send the new record back with this answer.
            s_refute(m, inc, now, from);
            s_put_member_full(&upd, x, &used, budget, &count);
        } else if (c < 0) {
            n_want++;
            s_buf_put(&want, e, GOSSIP_ID_BYTES);
        } else if (c > 0) {
            if (x->inc > inc) s_put_member_full(&upd, x, &used, budget, &count);
            else if (x->state == GOSSIP_SUSPECT || x->state == GOSSIP_DEAD) {
                if (used + s_update_size(UPD_SUSPECT, x) <= budget && count < UINT16_MAX) {
                    s_put_update(&upd, x->state == GOSSIP_SUSPECT ? UPD_SUSPECT : UPD_DEAD, x);
                    used += s_update_size(UPD_SUSPECT, x);
                    count++;
                }
            } else { // e.g. left at the same incarnation: the record says it
                s_put_member_full(&upd, x, &used, budget, &count);
            }
        }
    }
    for (size_t i = 0; i < m->n_mem; i++)
        if (!mentioned[i] && s_is_live(m->mem[i])) s_put_member_full(&upd, m->mem[i], &used, budget, &count);
    free(mentioned);
    if (!upd.oom) gossip_put_u16(upd.p, count);
    buf_t b = {0};
    s_buf_u32(&b, n_want);
    if (want.len) s_buf_put(&b, want.p, want.len);
    if (upd.len) s_buf_put(&b, upd.p, upd.len);
    b.oom |= want.oom || upd.oom;
    free(want.p);
    free(upd.p);
    s_send(m, from, GOSSIP_MSG_SYNC_REPLY, &b);
}

static void s_on_sync_reply_wants(gossip_members_t *m, const uint8_t from[GOSSIP_ID_BYTES], rd_t ids, uint32_t n) {
    if (n == 0) return;
    buf_t b = {0};
    uint16_t count = 0;
    size_t used = 2;
    s_buf_u16(&b, 0);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *id = NULL;
        s_rd_take(&ids, GOSSIP_ID_BYTES, &id);
        member_t *x = s_find(m, id);
        if (x && !s_put_member_full(&b, x, &used, m->cfg.max_sync_bytes, &count)) break;
    }
    if (!b.oom) gossip_put_u16(b.p, count);
    if (count) s_send(m, from, GOSSIP_MSG_UPDATES, &b);
    else free(b.p);
}

static int s_malformed(gossip_members_t *m, const uint8_t from[GOSSIP_ID_BYTES], int type, const char *why) {
    m->st.malformed++;
    char who[9];
    gossip_id_short(from, who);
    log_warn("gossip", "dropped a %s message from %s: %s", gossip_msg_name(type), who, why);
    return -1;
}

int gossip_members_receive(gossip_members_t *m, uint64_t now, const uint8_t from[GOSSIP_ID_BYTES], int type,
                           const uint8_t *payload, size_t len) {
    if (type < GOSSIP_MSG_FIRST || type >= GOSSIP_MSG_FIRST + GOSSIP_MSG_COUNT)
        return s_malformed(m, from, type, "unknown message type");
    if (memcmp(from, m->self_id, GOSSIP_ID_BYTES) == 0) return s_malformed(m, from, type, "sent by ourselves");
    static const uint8_t empty[1];
    if (!payload) {
        payload = empty;
        len = 0;
    }
    rd_t r = {payload, len, 0};
    const uint8_t *q = NULL;
    const char *why = NULL;
    uint32_t seq = 0, n = 0;
    const uint8_t *target = NULL;
    rd_t list = {0};
    switch (type) {
    case GOSSIP_MSG_PING:
    case GOSSIP_MSG_ACK:
    case GOSSIP_MSG_NACK:
    case GOSSIP_MSG_PING_REQ:
        if (!s_rd_take(&r, 4, &q)) return s_malformed(m, from, type, "truncated before the sequence number");
        seq = gossip_get_u32(q);
        if (type == GOSSIP_MSG_PING_REQ && !s_rd_take(&r, GOSSIP_ID_BYTES, &target))
            return s_malformed(m, from, type, "truncated before the target");
        break;
    case GOSSIP_MSG_SYNC:
    case GOSSIP_MSG_SYNC_REPLY: {
        if (!s_rd_take(&r, 4, &q)) return s_malformed(m, from, type, "truncated before the count");
        n = gossip_get_u32(q);
        size_t entry = type == GOSSIP_MSG_SYNC ? DIGEST_ENTRY : GOSSIP_ID_BYTES;
        if (n > m->cfg.max_members) return s_malformed(m, from, type, "more entries than the view limit");
        list = (rd_t){r.p + r.pos, (size_t)n * entry, 0};
        if (!s_rd_take(&r, (size_t)n * entry, &q)) return s_malformed(m, from, type, "entries run past the message");
        break;
    }
    default: break;
    }
    rd_t upd = {r.p + r.pos, r.len - r.pos, 0};
    if (s_updates_check(upd, &why) != 0) return s_malformed(m, from, type, why);

    m->st.msgs_in[type - GOSSIP_MSG_FIRST]++;
    m->now = now;
    m->joining = !m->left && s_alone(m);
    s_updates_apply(m, upd, now, from);
    m->joining = false;
    switch (type) {
    case GOSSIP_MSG_PING:
        s_send_ack(m, from, seq);
        break;
    case GOSSIP_MSG_ACK:
        s_on_ack(m, now, from, seq);
        break;
    case GOSSIP_MSG_PING_REQ:
        s_on_ping_req(m, now, from, seq, target);
        break;
    case GOSSIP_MSG_SYNC:
        s_on_sync(m, now, from, list, n, m->cfg.max_sync_bytes);
        break;
    case GOSSIP_MSG_SYNC_REPLY:
        // They lacked something we hold: so may others, and our next digest goes out soon too —
        // informed peers keep pushing while partners keep lacking (see s_sync_soon).
        if (n > 0 && !s_alone(m)) s_sync_soon(m, now);
        s_on_sync_reply_wants(m, from, list, n);
        break;
    case GOSSIP_MSG_NACK:
        if (m->probing && seq == m->probe_seq)
            for (int i = 0; i < m->n_helpers; i++)
                if (memcmp(from, m->helpers[i], GOSSIP_ID_BYTES) == 0) {
                    m->helper_nacked |= 1u << i;
                    m->st.nacks++;
                }
        break;
    default: break;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Timers

// Next probe target from the shuffled round-robin; NULL when nobody can be probed.
static member_t *s_next_target(gossip_members_t *m) {
    for (int pass = 0; pass < 2; pass++) {
        while (m->pos < m->n_order) {
            member_t *x = s_find(m, m->order[m->pos++]);
            if (x && !x->is_self && s_is_live(x) && s_linkable(m, x)) return x;
        }
        // End of a round: rebuild from the view and shuffle (Fisher–Yates, unbiased draws).
        m->n_order = m->pos = 0;
        for (size_t i = 0; i < m->n_mem; i++) {
            member_t *x = m->mem[i];
            if (x->is_self || !s_is_live(x) || !s_linkable(m, x)) continue;
            if (m->n_order == m->cap_order) {
                size_t cap = m->cap_order ? 2 * m->cap_order : 16;
                void *p = realloc(m->order, cap * sizeof *m->order);
                if (!p) return NULL;
                m->order = p;
                m->cap_order = cap;
            }
            memcpy(m->order[m->n_order++], x->id, GOSSIP_ID_BYTES);
        }
        for (size_t i = m->n_order; i > 1; i--) {
            size_t j = (size_t)rng_below(&m->rng, i);
            uint8_t t[GOSSIP_ID_BYTES];
            memcpy(t, m->order[i - 1], GOSSIP_ID_BYTES);
            memcpy(m->order[i - 1], m->order[j], GOSSIP_ID_BYTES);
            memcpy(m->order[j], t, GOSSIP_ID_BYTES);
        }
        if (m->n_order == 0) return NULL;
    }
    return NULL;
}

static void s_send_ping_reqs(gossip_members_t *m, const member_t *t) {
    // Candidates: live, not the target, and able to talk to both ends (the reachability rule).
    member_t **cand = malloc((m->n_mem ? m->n_mem : 1) * sizeof *cand);
    if (!cand) return;
    size_t nc = 0;
    for (size_t i = 0; i < m->n_mem; i++) {
        member_t *x = m->mem[i];
        if (x->is_self || x == t || x->state != GOSSIP_ALIVE || !s_linkable(m, x)) continue;
        if (!gossip_can_talk(&x->rec, &t->rec)) continue;
        cand[nc++] = x;
    }
    int k = m->cfg.indirect_k < MAX_HELPERS ? m->cfg.indirect_k : MAX_HELPERS;
    m->n_helpers = 0;
    for (size_t i = 0; i < nc && m->n_helpers < k; i++) { // partial Fisher–Yates: k distinct helpers
        size_t j = i + (size_t)rng_below(&m->rng, nc - i);
        member_t *h = cand[j];
        cand[j] = cand[i];
        cand[i] = h;
        memcpy(m->helpers[m->n_helpers++], h->id, GOSSIP_ID_BYTES);
        buf_t b = {0};
        s_buf_u32(&b, m->probe_seq);
        s_buf_put(&b, t->id, GOSSIP_ID_BYTES);
        s_put_piggyback(m, &b, m->cfg.max_piggyback_bytes, h->id);
        s_send(m, h->id, GOSSIP_MSG_PING_REQ, &b);
    }
    if (m->n_helpers) m->st.indirect_probes++;
    free(cand);
}

// A dissemination round: pending updates to gossip_fanout random live members we can talk to,
// run only while an update is fresh (sent fewer than gossip_fanout times here). Each peer thus
// pushes an update in about one round of its own — a push epidemic with fanout gossip_fanout,
// which reaches all but about e^-fanout of the peers in log_fanout N short rounds — and the rest of
// its λ·log2 N transmissions ride on pings and acks, which cost no message of their own. Running
// rounds for as long as any update had transmissions left (as before) cost every peer λ·log2 N
// messages per update, and since under message loss false suspicions (each one an update, and its
// refutation another) arise at a rate ∝ N, messages per peer per period grew with N.
static void s_gossip_tick(gossip_members_t *m, uint64_t now) {
    if (now < m->next_gossip) return;
    m->next_gossip = now + m->cfg.gossip_interval_ms;
    if (m->n_pending == 0 || m->cfg.gossip_fanout <= 0) return;
    s_purge_items(m);
    if (!s_have_fresh(m)) return;
    // The round budget: ROUND_BURST rounds at once, refilled at one per period. One update costs
    // a peer one round, well inside the burst; only when fresh updates keep coming (a mass start,
    // heavy loss with its stream of false suspicions and refutations) does the budget bind, and then
    // rounds carry several updates each, at gossip_fanout messages per peer per period at most.
    m->round_tokens += ROUND_RATE * (double)(now - m->round_refill) / m->cfg.period_ms;
    if (m->round_tokens > ROUND_BURST) m->round_tokens = ROUND_BURST;
    m->round_refill = now;
    if (m->round_tokens < 1) {
        uint64_t wait = (uint64_t)ceil((1 - m->round_tokens) * m->cfg.period_ms);
        if (wait > m->cfg.gossip_interval_ms) m->next_gossip = now + wait;
        return;
    }
    m->round_tokens -= 1;
    member_t **cand = malloc((m->n_mem ? m->n_mem : 1) * sizeof *cand);
    if (!cand) return;
    size_t nc = 0;
    for (size_t i = 0; i < m->n_mem; i++)
        if (!m->mem[i]->is_self && s_is_live(m->mem[i]) && s_linkable(m, m->mem[i])) cand[nc++] = m->mem[i];
    for (size_t i = 0; i < nc && i < (size_t)m->cfg.gossip_fanout && m->n_pending; i++) {
        size_t j = i + (size_t)rng_below(&m->rng, nc - i);
        member_t *x = cand[j];
        cand[j] = cand[i];
        cand[i] = x;
        buf_t b = {0};
        s_put_piggyback(m, &b, m->cfg.max_piggyback_bytes, x->id);
        s_send(m, x->id, GOSSIP_MSG_GOSSIP, &b);
    }
    free(cand);
}

// Tells every member we suspect because our own probe failed about it, once per probe interval
// (Lifeguard's "buddy system"), so a live one refutes at once, or answers with the record that
// already refuted it. Only our own suspicions: were every peer that heard a suspicion to nudge its
// subject, a suspected member would receive one message from nearly every peer each period (N per
// period, and O(N) per peer per period over the run, since suspicions arise at a rate ∝ N under
// message loss). The others reach the subject anyway: piggybacked on any probe of it (which carries
// the destination's own suspicion first) and in the dissemination.
static void s_nudge_suspects(gossip_members_t *m) {
    for (size_t i = 0; i < m->n_mem; i++) {
        member_t *x = m->mem[i];
        if (x->state != GOSSIP_SUSPECT || !x->my_suspicion || !s_linkable(m, x)) continue;
        buf_t b = {0};
        s_buf_u16(&b, 1);
        s_put_update(&b, UPD_SUSPECT, x);
        s_send(m, x->id, GOSSIP_MSG_GOSSIP, &b);
    }
}

static void s_probe_tick(gossip_members_t *m, uint64_t now) {
    if (m->probing) {
        member_t *t = s_find(m, m->target);
        if (!t || !s_is_live(t)) {
            m->probing = false; // it died or left meanwhile: nothing to decide
        } else {
            if (!m->probe_indirect && now >= m->probe_ack_deadline) {
                m->probe_indirect = true;
                s_send_ping_reqs(m, t);
                // And ping the target directly once more now (memberlist sends a TCP ping here),
                // and again an ack timeout later if nothing came back: one lost packet on the
                // direct path is the usual reason for a missing ack, and each retry makes a false
                // suspicion need one more loss (about 10× rarer per retry at 5% loss, 3× at 20%).
                // A false suspicion costs a dissemination to every peer and a refutation back, and
                // under loss suspicions arise at a rate ∝ N: at N = 1000 and 20% loss, one retry
                // left about 25 a period, more than the piggyback and the round budget carry in
                // time (false deaths); two leave about 9.
                m->retry_seq = ++m->seq;
                m->retry_start = now;
                s_send_ping(m, t->id, m->retry_seq);
            }
            if (m->probe_indirect && !m->retried2 && now >= m->probe_retry2_at && now < m->probe_end) {
                m->retried2 = true;
                m->retry2_seq = ++m->seq;
                m->retry2_start = now;
                s_send_ping(m, t->id, m->retry2_seq);
            }
            if (now >= m->probe_end) {
                m->probing = false;
                m->st.probe_failures++;
                // Every helper answered "no answer": the target is the problem. A missing NACK:
                // perhaps we are.
                uint32_t all = m->n_helpers >= 32 ? UINT32_MAX : (1u << m->n_helpers) - 1;
                if ((m->helper_nacked & all) != all) s_health(m, +1);
                if (t->state == GOSSIP_ALIVE) {
                    s_set_state(m, t, GOSSIP_SUSPECT, now);
                    t->my_suspicion = true;
                    s_enqueue(m, t, UPD_SUSPECT, t->inc);
                    s_event(m, GOSSIP_EV_SUSPECT, t->id, t->inc, NULL);
                }
            }
        }
    }
    if (m->probing || now < m->next_probe) return;
    s_nudge_suspects(m);
    member_t *t = s_next_target(m);
    if (!t) {
        m->next_probe = now + m->cfg.period_ms;
        return;
    }
    uint64_t interval = (uint64_t)((double)s_probe_interval(m, t) * s_lhm(m));
    m->probing = true;
    m->probe_indirect = false;
    m->n_helpers = 0;
    m->helper_nacked = 0;
    memcpy(m->target, t->id, GOSSIP_ID_BYTES);
    m->probe_seq = ++m->seq;
    m->probe_start = now;
    m->probe_ack_deadline = now + (uint64_t)(s_ack_timeout(m, t) * s_lhm(m));
    m->probe_retry2_at = 2 * m->probe_ack_deadline - now;
    m->retried2 = false;
    m->probe_end = now + interval;
    m->next_probe = now + interval;
    m->st.probes++;
    s_send_ping(m, t->id, m->probe_seq);
}

static void s_suspicion_tick(gossip_members_t *m, uint64_t now) {
    // Each death shrinks the live count and with it the timeout, so pass again until none expires.
    for (bool again = true; again && m->n_suspect && now >= m->susp_min + s_suspicion_timeout(m);) {
        uint64_t timeout = s_suspicion_timeout(m);
        again = false;
        m->susp_min = UINT64_MAX;
        for (size_t i = 0; i < m->n_mem; i++) {
            member_t *x = m->mem[i];
            if (x->state != GOSSIP_SUSPECT) continue;
            if (now < x->suspect_since + timeout) {
                if (x->suspect_since < m->susp_min) m->susp_min = x->suspect_since;
                continue;
            }
            s_set_state(m, x, GOSSIP_DEAD, now);
            s_enqueue(m, x, UPD_DEAD, x->inc);
            s_event(m, GOSSIP_EV_DEAD, x->id, x->inc, NULL);
            again = true;
        }
    }
}

static void s_reap(gossip_members_t *m, uint64_t now) {
    if (m->n_tomb == 0 || now < m->tomb_min + m->cfg.reap_ms) return;
    size_t w = 0;
    uint64_t tmin = UINT64_MAX;
    for (size_t i = 0; i < m->n_mem; i++) {
        member_t *x = m->mem[i];
        bool tomb = !x->is_self && !s_is_live(x);
        if (tomb && now - x->state_since >= m->cfg.reap_ms) {
            s_member_free(m, x);
            continue;
        }
        if (tomb && x->state_since < tmin) tmin = x->state_since;
        m->mem[w++] = x;
    }
    m->n_mem = w;
    m->tomb_min = tmin;
}

static bool s_contact_absent(const gossip_members_t *m, const contact_t *c) {
    const member_t *x = s_find(m, c->id);
    return !x || !s_is_live(x);
}

static void s_sync_tick(gossip_members_t *m, uint64_t now) {
    if (s_alone(m)) {
        if (now < m->next_join) return;
        m->next_join = now + m->cfg.join_retry_ms;
        for (size_t i = 0; i < m->n_contacts; i++) s_send_sync(m, m->contacts[i].id);
        // Dead members we still remember are worth a try too: we may be the ones cut off.
        for (size_t i = 0, tried = 0; i < m->n_mem && tried < 3; i++)
            if (m->mem[i]->state == GOSSIP_DEAD && s_linkable(m, m->mem[i])) {
                s_send_sync(m, m->mem[i]->id);
                tried++;
            }
        return;
    }
    if (now < m->next_sync) return;
    m->next_sync = now + m->cfg.sync_interval_ms;
    m->sync_rounds++;
    if (m->cfg.reconnect_every > 0 && m->sync_rounds % (uint64_t)m->cfg.reconnect_every == 0) {
        size_t nd = 0, na = 0;
        for (size_t i = 0; i < m->n_mem; i++) nd += m->mem[i]->state == GOSSIP_DEAD && s_linkable(m, m->mem[i]);
        for (size_t i = 0; i < m->n_contacts; i++) na += s_contact_absent(m, &m->contacts[i]);
        if (nd + na > 0) {
            size_t pick = (size_t)rng_below(&m->rng, nd + na);
            for (size_t i = 0; i < m->n_mem; i++)
                if (m->mem[i]->state == GOSSIP_DEAD && s_linkable(m, m->mem[i]) && pick-- == 0) {
                    s_send_sync(m, m->mem[i]->id);
                    return;
                }
            for (size_t i = 0; i < m->n_contacts; i++)
                if (s_contact_absent(m, &m->contacts[i]) && pick-- == 0) {
                    s_send_sync(m, m->contacts[i].id);
                    return;
                }
        }
    }
    size_t nl = 0;
    for (size_t i = 0; i < m->n_mem; i++)
        nl += !m->mem[i]->is_self && s_is_live(m->mem[i]) && s_linkable(m, m->mem[i]);
    size_t pick = (size_t)rng_below(&m->rng, nl);
    for (size_t i = 0; i < m->n_mem; i++)
        if (!m->mem[i]->is_self && s_is_live(m->mem[i]) && s_linkable(m, m->mem[i]) && pick-- == 0) {
            s_send_sync(m, m->mem[i]->id);
            return;
        }
}

void gossip_members_tick(gossip_members_t *m, uint64_t now) {
    m->now = now;
    int w = 0;
    for (int i = 0; i < m->n_fwd; i++) {
        forward_t *f = &m->fwd[i];
        if (!f->nacked && now >= f->nack_at) {
            f->nacked = true;
            buf_t b = {0};
            s_buf_u32(&b, f->their_seq);
            s_put_piggyback(m, &b, m->cfg.max_piggyback_bytes, f->requester);
            s_send(m, f->requester, GOSSIP_MSG_NACK, &b);
        }
        if (now < f->expires) m->fwd[w++] = *f;
    }
    m->n_fwd = w;
    s_reap(m, now);
    if (m->left) return;
    s_suspicion_tick(m, now);
    s_probe_tick(m, now);
    s_sync_tick(m, now);
    s_gossip_tick(m, now);
}

uint64_t gossip_members_next_wakeup(const gossip_members_t *m) {
    uint64_t t = UINT64_MAX;
#define AT(x)                                                                                                \
    do {                                                                                                     \
        if ((x) < t) t = (x);                                                                                \
    } while (0)
    for (int i = 0; i < m->n_fwd; i++) AT(m->fwd[i].nacked ? m->fwd[i].expires : m->fwd[i].nack_at);
    if (m->n_tomb) AT(m->tomb_min + m->cfg.reap_ms);
    if (!m->left && m->n_suspect) AT(m->susp_min + s_suspicion_timeout(m));
    if (!m->left) {
        if (m->probing) {
            if (!m->probe_indirect) AT(m->probe_ack_deadline);
            else if (!m->retried2 && m->probe_retry2_at < m->probe_end) AT(m->probe_retry2_at);
            else AT(m->probe_end);
        } else {
            AT(m->next_probe);
        }
        // Only the timer s_sync_tick keeps current counts: the other one is stale and would make
        // every poll return at once (a busy loop in the net thread).
        AT(s_alone(m) ? m->next_join : m->next_sync);
        if (m->cfg.gossip_fanout > 0 && s_have_fresh(m)) AT(m->next_gossip);
    }
#undef AT
    return t;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle and accessors

gossip_members_t *gossip_members_new(const gossip_config_t *cfg, const uint8_t sk[GOSSIP_SK_BYTES],
                                     const gossip_record_t *self, uint64_t now, char *err, size_t errlen) {
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return NULL;
    }
    if (cfg->period_ms == 0 || cfg->ack_timeout_min_ms > cfg->ack_timeout_max_ms || cfg->indirect_k < 0 ||
        cfg->suspicion_mult <= 0 || cfg->retransmit_mult < 1 || cfg->retransmit_mult > 100 || cfg->sync_interval_ms == 0 ||
        cfg->join_retry_ms == 0 || cfg->max_members < 2 || cfg->gossip_interval_ms == 0 || cfg->max_health < 0) {
        snprintf(err, errlen, "gossip settings out of range (period, timeouts, k, multipliers, intervals)");
        return NULL;
    }
    gossip_members_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    memcpy(m->sk, sk, GOSSIP_SK_BYTES);
    memcpy(m->self_id, sk + 32, GOSSIP_ID_BYTES);
    rng_seed(&m->rng, cfg->seed);
    m->wall_base = self->time_ms;
    m->mono_base = now;
    m->g_srtt = m->g_rttvar = -1;
    m->now = now;
    m->susp_min = m->tomb_min = UINT64_MAX;
    gossip_record_t r = *self;
    memcpy(r.id, m->self_id, GOSSIP_ID_BYTES);
    r.status = GOSSIP_STATUS_ALIVE;
    uint8_t raw[GOSSIP_RECORD_MAX];
    size_t n = gossip_record_sign(&r, sk, raw, sizeof raw, err, errlen);
    if (!n || !s_add(m, &r, raw, n, GOSSIP_ALIVE, now)) {
        if (n) snprintf(err, errlen, "out of memory");
        gossip_members_destroy(&m);
        return NULL;
    }
    m->self = m->mem[0];
    m->self->is_self = true;
    m->next_probe = now + (uint64_t)rng_below(&m->rng, cfg->period_ms); // desynchronise peers started together
    m->next_sync = now + cfg->sync_interval_ms / 2 + rng_below(&m->rng, cfg->sync_interval_ms);
    m->next_join = now;
    m->round_tokens = ROUND_BURST;
    m->round_refill = now;
    // A joiner announces itself: its record spreads from it as from every peer that learns it.
    s_enqueue(m, m->self, UPD_RECORD, m->self->inc);
    return m;
}

void gossip_members_destroy(gossip_members_t **m_p) {
    if (!m_p || !*m_p) return;
    gossip_members_t *m = *m_p;
    free(m->items); // first: s_member_free then finds no item to drop
    m->items = NULL;
    m->n_items = 0;
    for (size_t i = 0; i < m->n_mem; i++) {
        m->mem[i]->it_rec = m->mem[i]->it_claim = -1;
        s_member_free(m, m->mem[i]);
    }
    free(m->mem);
    free(m->order);
    free(m->scratch);
    for (size_t i = m->out_head; i < m->n_out; i++) free(m->out[i].payload);
    free(m->out);
    free(m->ev);
    sodium_memzero(m->sk, sizeof m->sk);
    free(m);
    *m_p = NULL;
}

int gossip_members_add_contact(gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES], const char *endpoint) {
    size_t el = strnlen(endpoint, GOSSIP_ENDPOINT_MAX + 1);
    if (!gossip_endpoint_valid(endpoint, el)) return -1;
    if (memcmp(id, m->self_id, GOSSIP_ID_BYTES) == 0) return 0; // our own seed line: nothing to do
    for (size_t i = 0; i < m->n_contacts; i++)
        if (memcmp(m->contacts[i].id, id, GOSSIP_ID_BYTES) == 0) {
            memcpy(m->contacts[i].endpoint, endpoint, el + 1);
            return 0;
        }
    if (m->n_contacts == MAX_CONTACTS) return -1;
    contact_t *c = &m->contacts[m->n_contacts++];
    memcpy(c->id, id, GOSSIP_ID_BYTES);
    memcpy(c->endpoint, endpoint, el + 1);
    return 0;
}

bool gossip_members_pop(gossip_members_t *m, gossip_msg_t *out) {
    if (m->out_head == m->n_out) return false;
    *out = m->out[m->out_head++];
    return true;
}

void gossip_msg_release(gossip_msg_t *msg) {
    if (!msg) return;
    free(msg->payload);
    msg->payload = NULL;
    msg->len = 0;
}

bool gossip_members_pop_event(gossip_members_t *m, gossip_event_t *out) {
    if (m->ev_head == m->n_ev) return false;
    *out = m->ev[m->ev_head++];
    return true;
}

int gossip_members_leave(gossip_members_t *m, uint64_t now) {
    if (m->left) return 0;
    m->now = now;
    m->self->rec.status = GOSSIP_STATUS_LEAVING;
    m->self->rec.incarnation = m->self->inc + 1;
    char err[256];
    if (s_sign_self(m, now, err, sizeof err) != 0) {
        log_error("gossip", "cannot sign the leave record: %s", err);
        return -1;
    }
    s_set_state(m, m->self, GOSSIP_LEFT, now);
    m->left = true;
    m->probing = false;
    s_enqueue(m, m->self, UPD_RECORD, m->self->inc);
    for (size_t i = 0; i < m->n_mem; i++) {
        member_t *x = m->mem[i];
        if (x->is_self || !s_is_live(x) || !s_linkable(m, x)) continue;
        buf_t b = {0};
        s_buf_u16(&b, 1);
        s_put_update(&b, UPD_RECORD, m->self);
        s_send(m, x->id, GOSSIP_MSG_UPDATES, &b);
    }
    return 0;
}

int gossip_members_update_caps(gossip_members_t *m, const gossip_caps_t *caps, uint64_t now, char *err,
                               size_t errlen) {
    if (m->left) {
        snprintf(err, errlen, "this peer has left");
        return -1;
    }
    m->now = now;
    gossip_record_t keep = m->self->rec;
    m->self->rec.caps = *caps;
    m->self->rec.incarnation = m->self->inc + 1;
    if (s_sign_self(m, now, err, errlen) != 0) {
        m->self->rec = keep;
        return -1;
    }
    s_enqueue(m, m->self, UPD_RECORD, m->self->inc);
    return 0;
}

static void s_info(const member_t *x, gossip_member_info_t *o) {
    o->id = x->id;
    o->state = x->state;
    o->incarnation = x->inc;
    o->record = &x->rec;
    o->record_bytes = x->raw;
    o->record_len = x->raw_len;
    o->is_self = x->is_self;
}

size_t gossip_members_live(const gossip_members_t *m, gossip_member_info_t *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_mem; i++) {
        if (!s_is_live(m->mem[i])) continue;
        if (n < cap) s_info(m->mem[i], &out[n]);
        n++;
    }
    return n;
}

size_t gossip_members_all(const gossip_members_t *m, gossip_member_info_t *out, size_t cap) {
    for (size_t i = 0; i < m->n_mem && i < cap; i++) s_info(m->mem[i], &out[i]);
    return m->n_mem;
}

int gossip_members_get(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES], gossip_member_info_t *out) {
    const member_t *x = s_find(m, id);
    if (!x) return -1;
    s_info(x, out);
    return 0;
}

const char *gossip_members_endpoint(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]) {
    const member_t *x = s_find(m, id);
    if (x && x->rec.n_endpoints > 0 && x->rec.caps.reachable) return x->rec.endpoints[0];
    for (size_t i = 0; i < m->n_contacts; i++)
        if (memcmp(m->contacts[i].id, id, GOSSIP_ID_BYTES) == 0) return m->contacts[i].endpoint;
    return NULL;
}

double gossip_members_rtt_ms(const gossip_members_t *m, const uint8_t id[GOSSIP_ID_BYTES]) {
    const member_t *x = s_find(m, id);
    return x && x->srtt >= 0 ? x->srtt : -1;
}

size_t gossip_members_pending_updates(const gossip_members_t *m) { return m->n_pending; }
int gossip_members_health(const gossip_members_t *m) { return m->health; }
const gossip_stats_t *gossip_members_stats(const gossip_members_t *m) { return &m->st; }
const uint8_t *gossip_members_self_id(const gossip_members_t *m) { return m->self_id; }
const uint8_t *gossip_members_self_record(const gossip_members_t *m, size_t *len) {
    *len = m->self->raw_len;
    return m->self->raw;
}

// ---------------------------------------------------------------------------------------------
// NoLoCo groups under the reachability rule

int gossip_groups_separate_unreachable(const bool *reachable, int N, int g, int *group_of) {
    if (N <= 0 || g <= 0) return g;
    // unr[h]: unreachable members now in group h (room for the extra groups of one, too).
    int unr[g + N];
    bool kept[g + N];
    memset(unr, 0, sizeof unr);
    memset(kept, 0, sizeof kept);
    for (int i = 0; i < N; i++)
        if (!reachable[i]) unr[group_of[i]]++;
    int g_new = g;
    for (int i = 0; i < N; i++) {
        if (reachable[i]) continue;
        int grp = group_of[i];
        if (!kept[grp]) { // the first (lowest-index) unreachable member of a group stays
            kept[grp] = true;
            continue;
        }
        // An extra one: swap it with the lowest-index reachable member of the lowest-numbered group
        // that holds no unreachable member.
        int dest = -1, swap = -1;
        for (int h = 0; h < g && dest < 0; h++) {
            if (unr[h]) continue;
            for (int j = 0; j < N; j++)
                if (group_of[j] == h && reachable[j]) {
                    dest = h;
                    swap = j;
                    break;
                }
        }
        unr[grp]--;
        if (dest < 0) {
            group_of[i] = g_new;
            unr[g_new] = 1;
            kept[g_new] = true;
            g_new++;
            continue;
        }
        group_of[swap] = grp;
        group_of[i] = dest;
        unr[dest] = 1;
        kept[dest] = true;
    }
    return g_new;
}
