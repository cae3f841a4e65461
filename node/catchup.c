// Catch-up: fetching the current outer state from several donors (see catchup.h).
#include "node/catchup.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/fingerprint.h"
#include "net/frame.h"
#include "net/identity.h"
#include "node/log.h"
#include "optim/codec.h"

#define MOD "catchup"
#define S_FORMAT 1u
#define S_CHUNK_REQ_LEN 40
#define S_NACK_LEN 40
#define S_FIFO 16
#define S_MAX_REQUESTERS 64
#define S_SEND_TIMEOUT_MS 1000
#define S_PER_DONOR 2 // outstanding chunk requests per donor (joiner side)

enum { J_IDLE = 0, J_WAIT, J_FETCH, J_DONE, J_FAILED };
enum { C_MISSING = 0, C_OUT = 1, C_DONE = 2 };

typedef struct {
    uint8_t id[32];
    int answered;         // manifest, NACK, or a failed send
    int bad, gone, stalled, nacked;
    int holder;           // named the chosen version
    uint8_t *mbytes;      // owned manifest bytes; m.digests points into them
    catchup_manifest_t m;
    int has_m;
    uint32_t out[S_PER_DONOR];
    int nout;
    uint64_t since_ms;    // start of the current wait for this donor
    uint32_t ack;         // a chunk received from it, not yet acknowledged
    uint64_t requested;
} s_donor_t;

typedef struct {
    int used;
    uint8_t id[32];
    uint32_t fifo[S_FIFO];
    int head, len;
    uint32_t infl[CATCHUP_SERVE_PER_PEER];
    uint64_t infl_ms[CATCHUP_SERVE_PER_PEER];
    int ninfl;
    uint64_t last_ms;
} s_requester_t;

struct catchup_t {
    net_node_t *net;
    size_t chunk_values;
    uint64_t stall_ms, manifest_wait_ms, expected_n, max_values;
    uint64_t serve_rate, serve_timeout_ms;
    uint64_t fetch_rate;        // joiner: chunk bytes/s requested, all donors together (0 = unlimited)
    double fbudget;
    uint64_t fbudget_ms;
    int serve_total;
    int corrupt;
    uint64_t last_ms; // latest now seen

    // donor side: the published version
    float *pub;
    size_t pub_n, pub_cap;
    uint64_t pub_round, pub_step;
    uint32_t pub_nchunks;
    uint8_t *pub_manifest;
    size_t pub_mlen;
    uint8_t pub_id[32];
    int has_pub;
    s_requester_t req[S_MAX_REQUESTERS];
    int rr, total_infl;
    double budget;
    uint64_t budget_ms;
    float *scratch; // corrupting hook

    // joiner side
    int phase;
    uint64_t min_round;
    s_donor_t donor[CATCHUP_MAX_DONORS];
    int nd;
    uint64_t begin_ms, done_ms; // UINT64_MAX: set at the next now seen
    int chosen;                 // index of a holder whose manifest is the chosen one
    catchup_manifest_t m;       // the chosen version (digests point into donor[chosen].mbytes)
    float *state;
    uint8_t *cst;
    uint32_t ndone, cursor;
    char error[200];

    catchup_stats_t st;
};

// ---------------------------------------------------------------------------------------------
// Little-endian helpers and hashing

// Feeds x's fp32 little-endian bytes to a SHA-256 context (the host order on every machine loco
// targets; the byte swap keeps the digest portable elsewhere).
static void s_hash_update(EVP_MD_CTX *ctx, const float *x, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    EVP_DigestUpdate(ctx, x, n * sizeof(float));
#else
    uint8_t buf[4096];
    while (n) {
        size_t k = n < sizeof buf / 4 ? n : sizeof buf / 4;
        for (size_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, x + i, 4);
            net_put_u32(buf + 4 * i, u);
        }
        EVP_DigestUpdate(ctx, buf, k * 4);
        x += k;
        n -= k;
    }
#endif
}

static int s_hash_values(const float *x, size_t n, uint8_t out[32]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return -1;
    unsigned len = 0;
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    if (ok) s_hash_update(ctx, x, n);
    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

static const char *s_hex8(const uint8_t *id, char out[17]) {
    net_hex_encode(id, 8, out);
    out[16] = '\0';
    return out;
}

static uint64_t s_values(uint64_t n, uint32_t cv, uint32_t i) {
    uint64_t lo = (uint64_t)i * cv, hi = lo + cv;
    return (hi > n ? n : hi) - lo;
}

// ---------------------------------------------------------------------------------------------
// Manifest

int catchup_manifest_decode(catchup_manifest_t *m, const uint8_t *buf, size_t len, uint64_t max_values, char *err,
                            size_t errlen) {
    memset(m, 0, sizeof *m);
    if (!buf || len < CATCHUP_MANIFEST_HDR) {
        snprintf(err, errlen, "manifest of %zu bytes is shorter than its header", len);
        return -1;
    }
    uint32_t format = net_get_u32(buf);
    m->chunk_values = net_get_u32(buf + 4);
    m->n = net_get_u64(buf + 8);
    m->round = net_get_u64(buf + 16);
    m->inner_step = net_get_u64(buf + 24);
    m->nchunks = net_get_u32(buf + 32);
    if (format != S_FORMAT) {
        snprintf(err, errlen, "manifest format %u, expected %u", format, S_FORMAT);
        return -1;
    }
    if (net_get_u32(buf + 36) != 0) {
        snprintf(err, errlen, "manifest reserved field set");
        return -1;
    }
    if (m->chunk_values == 0 || m->chunk_values % 64 || m->n == 0) {
        snprintf(err, errlen, "manifest with %u values per chunk, %llu values", m->chunk_values,
                 (unsigned long long)m->n);
        return -1;
    }
    if (max_values && m->n > max_values) {
        snprintf(err, errlen, "manifest of %llu values exceeds the limit %llu", (unsigned long long)m->n,
                 (unsigned long long)max_values);
        return -1;
    }
    uint64_t want = m->n / m->chunk_values + (m->n % m->chunk_values != 0);
    if (m->nchunks != want || m->nchunks > CATCHUP_MAX_CHUNKS) {
        snprintf(err, errlen, "manifest claims %u chunks, %llu values need %llu (at most %u)", m->nchunks,
                 (unsigned long long)m->n, (unsigned long long)want, CATCHUP_MAX_CHUNKS);
        return -1;
    }
    if ((uint64_t)len != CATCHUP_MANIFEST_HDR + 32ull * m->nchunks) {
        snprintf(err, errlen, "manifest of %zu bytes, %u chunks need %llu", len, m->nchunks,
                 (unsigned long long)(CATCHUP_MANIFEST_HDR + 32ull * m->nchunks));
        return -1;
    }
    memcpy(m->state_hash, buf + 40, 32);
    m->digests = buf + CATCHUP_MANIFEST_HDR;
    net_sha256(buf, len, m->id);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Life cycle and settings

catchup_t *catchup_new(net_node_t *net, size_t chunk_values, char *err, size_t errlen) {
    if (!net) {
        snprintf(err, errlen, "catchup: no net node");
        return NULL;
    }
    if (chunk_values < 64 || chunk_values % 64 || chunk_values > UINT32_MAX / 2) {
        snprintf(err, errlen, "catchup: %zu values per chunk (want a multiple of 64, ≥ 64)", chunk_values);
        return NULL;
    }
    catchup_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "catchup: out of memory");
        return NULL;
    }
    c->net = net;
    c->chunk_values = chunk_values;
    c->stall_ms = 5000;
    c->manifest_wait_ms = 2000;
    c->max_values = 1ull << 32;
    c->serve_total = 8;
    c->serve_timeout_ms = 60000;
    c->chosen = -1;
    return c;
}

static void s_joiner_reset(catchup_t *c) {
    for (int i = 0; i < c->nd; i++) free(c->donor[i].mbytes);
    memset(c->donor, 0, sizeof c->donor);
    c->nd = 0;
    free(c->state);
    free(c->cst);
    c->state = NULL;
    c->cst = NULL;
    c->chosen = -1;
    memset(&c->m, 0, sizeof c->m);
    c->ndone = c->cursor = 0;
    c->fbudget_ms = 0;
    c->phase = J_IDLE;
    c->error[0] = '\0';
    // joiner counters restart; donor counters are cumulative
    catchup_stats_t keep = c->st;
    memset(&c->st, 0, sizeof c->st);
    c->st.served_chunks = keep.served_chunks;
    c->st.served_bytes = keep.served_bytes;
    c->st.served_nacks = keep.served_nacks;
    c->st.manifests_sent = keep.manifests_sent;
    c->st.serve_expired = keep.serve_expired;
    c->st.malformed = keep.malformed;
}

void catchup_destroy(catchup_t **self_p) {
    if (!self_p || !*self_p) return;
    catchup_t *c = *self_p;
    s_joiner_reset(c);
    free(c->pub);
    free(c->pub_manifest);
    free(c->scratch);
    free(c);
    *self_p = NULL;
}

void catchup_set_stall_ms(catchup_t *c, uint64_t ms) { c->stall_ms = ms ? ms : 5000; }
void catchup_set_manifest_wait_ms(catchup_t *c, uint64_t ms) { c->manifest_wait_ms = ms ? ms : 2000; }
void catchup_set_expected_n(catchup_t *c, uint64_t n) { c->expected_n = n; }
void catchup_set_max_values(catchup_t *c, uint64_t n) { c->max_values = n ? n : 1ull << 32; }
void catchup_set_serve_rate(catchup_t *c, uint64_t bytes_per_s) { c->serve_rate = bytes_per_s; }
void catchup_set_fetch_rate(catchup_t *c, uint64_t bytes_per_s) { c->fetch_rate = bytes_per_s; }
void catchup_set_serve_total(catchup_t *c, int chunks) { c->serve_total = chunks > 0 ? chunks : 8; }
void catchup_set_serve_timeout_ms(catchup_t *c, uint64_t ms) { c->serve_timeout_ms = ms ? ms : 60000; }
void catchup_test_corrupt(catchup_t *c, int on) { c->corrupt = on; }

// ---------------------------------------------------------------------------------------------
// Donor side

static void s_send_nack(catchup_t *c, const uint8_t peer[32], const uint8_t *id, uint32_t index, uint32_t reason,
                        uint64_t round) {
    uint8_t b[S_NACK_LEN] = {0};
    if (id) memcpy(b, id, 32);
    net_put_u32(b + 32, index);
    net_put_u32(b + 36, reason);
    char err[200];
    if (net_node_send(c->net, peer, CATCHUP_MSG_NACK, round, b, sizeof b, S_SEND_TIMEOUT_MS, err, sizeof err) == 0)
        c->st.served_nacks++;
}

int catchup_publish(catchup_t *c, uint64_t round, uint64_t inner_step, const float *state, size_t n) {
    if (!state || n == 0) return -1;
    uint32_t cv = (uint32_t)c->chunk_values;
    uint64_t nchunks = n / cv + (n % cv != 0);
    if (nchunks > CATCHUP_MAX_CHUNKS) {
        log_error(MOD, "cannot publish %zu values: %llu chunks of %u exceed %u", n, (unsigned long long)nchunks, cv,
                  CATCHUP_MAX_CHUNKS);
        return -1;
    }
    size_t mlen = CATCHUP_MANIFEST_HDR + 32 * (size_t)nchunks;
    uint8_t *man = malloc(mlen);
    float *buf = c->pub;
    if (n > c->pub_cap) buf = malloc(n * sizeof(float));
    EVP_MD_CTX *all = EVP_MD_CTX_new();
    if (!man || !buf || !all || EVP_DigestInit_ex(all, EVP_sha256(), NULL) != 1) {
        free(man);
        if (buf != c->pub) free(buf);
        EVP_MD_CTX_free(all);
        log_error(MOD, "cannot publish %zu values: out of memory", n);
        return -1;
    }
    // Queued transfers copied their chunk (copy = 1), so the old buffer can be overwritten in place.
    // Copy, check and hash chunk by chunk while the chunk is in cache.
    int finite = 1;
    for (uint32_t i = 0; i < nchunks; i++) {
        size_t off = (size_t)i * cv, k = (size_t)s_values(n, cv, i);
        memcpy(buf + off, state + off, k * sizeof(float));
        for (size_t j = 0; j < k; j++) finite &= isfinite(buf[off + j]) != 0;
        if (s_hash_values(buf + off, k, man + CATCHUP_MANIFEST_HDR + 32 * (size_t)i) != 0) finite = -1;
        s_hash_update(all, buf + off, k);
    }
    unsigned hl = 0;
    int hok = EVP_DigestFinal_ex(all, man + 40, &hl) == 1 && hl == 32;
    EVP_MD_CTX_free(all);
    if (finite != 1 || !hok) {
        log_error(MOD, "cannot publish round %llu: %s", (unsigned long long)round,
                  finite == 0 ? "the state holds NaN/Inf" : "SHA-256 failed");
        free(man);
        if (buf != c->pub)
            free(buf);
        else
            c->has_pub = 0; // partly overwritten: the previous version is withdrawn too (requests get NACKs)
        return -1;
    }
    net_put_u32(man, S_FORMAT);
    net_put_u32(man + 4, cv);
    net_put_u64(man + 8, n);
    net_put_u64(man + 16, round);
    net_put_u64(man + 24, inner_step);
    net_put_u32(man + 32, (uint32_t)nchunks);
    net_put_u32(man + 36, 0);
    if (buf != c->pub) {
        free(c->pub);
        c->pub = buf;
        c->pub_cap = n;
    }
    free(c->pub_manifest);
    c->pub_manifest = man;
    c->pub_mlen = mlen;
    c->pub_n = n;
    c->pub_round = round;
    c->pub_step = inner_step;
    c->pub_nchunks = (uint32_t)nchunks;
    uint8_t old_id[32];
    memcpy(old_id, c->pub_id, 32);
    net_sha256(man, mlen, c->pub_id);
    int had = c->has_pub;
    c->has_pub = 1;
    // Waiting requests named the old version: tell their requesters to look elsewhere.
    for (int r = 0; had && r < S_MAX_REQUESTERS; r++) {
        s_requester_t *q = &c->req[r];
        if (!q->used || !q->len) continue;
        s_send_nack(c, q->id, old_id, q->fifo[q->head], CATCHUP_NACK_NO_VERSION, round);
        q->len = 0;
        q->head = 0;
    }
    char hx[17];
    log_debug(MOD, "published version %s: round %llu, step %llu, %zu values in %u chunks", s_hex8(c->pub_id, hx),
              (unsigned long long)round, (unsigned long long)inner_step, n, c->pub_nchunks);
    return 0;
}

const uint8_t *catchup_published_id(const catchup_t *c) { return c->has_pub ? c->pub_id : NULL; }

static s_requester_t *s_requester(catchup_t *c, const uint8_t id[32], uint64_t now) {
    int free_slot = -1;
    for (int i = 0; i < S_MAX_REQUESTERS; i++) {
        s_requester_t *q = &c->req[i];
        if (q->used && memcmp(q->id, id, 32) == 0) return q;
        if (free_slot < 0 && (!q->used || (!q->len && !q->ninfl && now - q->last_ms > c->serve_timeout_ms)))
            free_slot = i;
    }
    if (free_slot < 0) return NULL;
    s_requester_t *q = &c->req[free_slot];
    memset(q, 0, sizeof *q);
    q->used = 1;
    memcpy(q->id, id, 32);
    q->last_ms = now;
    return q;
}

static int s_serve_one(catchup_t *c, s_requester_t *q, uint64_t now) {
    uint32_t idx = q->fifo[q->head];
    q->head = (q->head + 1) % S_FIFO;
    q->len--;
    size_t off = (size_t)idx * c->chunk_values, k = (size_t)s_values(c->pub_n, (uint32_t)c->chunk_values, idx);
    const float *x = c->pub + off;
    if (c->corrupt) {
        if (!c->scratch) c->scratch = malloc(c->chunk_values * sizeof(float));
        if (c->scratch) {
            memcpy(c->scratch, x, k * sizeof(float));
            uint32_t u;
            memcpy(&u, c->scratch, 4);
            u ^= 1u; // lowest mantissa bit: still finite, so only the manifest can tell
            memcpy(c->scratch, &u, 4);
            x = c->scratch;
        }
    }
    char err[256];
    if (net_node_queue_tensor(c->net, q->id, CATCHUP_QUANTITY(idx), c->pub_round, CODEC_FP32, x, k, NULL, 1, 0,
                              (int)c->serve_timeout_ms, err, sizeof err) != 0) {
        char hx[17];
        log_warn(MOD, "cannot serve chunk %u to %s: %s", idx, s_hex8(q->id, hx), err);
        s_send_nack(c, q->id, c->pub_id, idx, CATCHUP_NACK_BUSY, c->pub_round);
        return -1;
    }
    q->infl[q->ninfl] = idx;
    q->infl_ms[q->ninfl] = now;
    q->ninfl++;
    c->total_infl++;
    c->st.served_chunks++;
    c->st.served_bytes += k * sizeof(float);
    if (c->serve_rate) c->budget -= (double)(k * sizeof(float));
    return 0;
}

// Starts waiting requests, round-robin across requesters, within the in-flight and rate limits.
static void s_serve(catchup_t *c, uint64_t now) {
    if (!c->has_pub) return;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int j = 0; j < S_MAX_REQUESTERS; j++) {
            if (c->total_infl >= c->serve_total || (c->serve_rate && c->budget <= 0)) return;
            s_requester_t *q = &c->req[(c->rr + j) % S_MAX_REQUESTERS];
            if (!q->used || !q->len || q->ninfl >= CATCHUP_SERVE_PER_PEER) continue;
            s_serve_one(c, q, now);
            progress = 1;
        }
        c->rr = (c->rr + 1) % S_MAX_REQUESTERS;
    }
}

static void s_release_slot(catchup_t *c, s_requester_t *q, int i) {
    q->infl[i] = q->infl[q->ninfl - 1];
    q->infl_ms[i] = q->infl_ms[q->ninfl - 1];
    q->ninfl--;
    c->total_infl--;
}

static void s_on_version_req(catchup_t *c, net_event_t *ev) {
    char hx[17];
    if (ev->len != 8) {
        c->st.malformed++;
        log_warn(MOD, "dropped a VERSION_REQ of %zu bytes from %s", ev->len, s_hex8(ev->peer, hx));
        return;
    }
    uint64_t min_round = net_get_u64(ev->payload);
    if (!c->has_pub || c->pub_round < min_round) {
        s_send_nack(c, ev->peer, NULL, CATCHUP_NONE, CATCHUP_NACK_NO_VERSION, ev->round);
        return;
    }
    char err[200];
    if (net_node_send(c->net, ev->peer, CATCHUP_MSG_MANIFEST, c->pub_round, c->pub_manifest, c->pub_mlen,
                      S_SEND_TIMEOUT_MS, err, sizeof err) == 0)
        c->st.manifests_sent++;
    else
        log_warn(MOD, "cannot send the manifest to %s: %s", s_hex8(ev->peer, hx), err);
}

static void s_on_chunk_req(catchup_t *c, net_event_t *ev, uint64_t now) {
    char hx[17];
    if (ev->len != S_CHUNK_REQ_LEN) {
        c->st.malformed++;
        log_warn(MOD, "dropped a CHUNK_REQ of %zu bytes from %s", ev->len, s_hex8(ev->peer, hx));
        return;
    }
    const uint8_t *id = ev->payload;
    uint32_t want = net_get_u32(ev->payload + 32), got = net_get_u32(ev->payload + 36);
    s_requester_t *q = s_requester(c, ev->peer, now);
    if (!q) {
        if (want != CATCHUP_NONE) s_send_nack(c, ev->peer, id, want, CATCHUP_NACK_BUSY, ev->round);
        return;
    }
    q->last_ms = now;
    if (got != CATCHUP_NONE)
        for (int i = 0; i < q->ninfl; i++)
            if (q->infl[i] == got) {
                s_release_slot(c, q, i);
                break;
            }
    if (want != CATCHUP_NONE) {
        if (!c->has_pub || memcmp(id, c->pub_id, 32) != 0)
            s_send_nack(c, ev->peer, id, want, CATCHUP_NACK_NO_VERSION, ev->round);
        else if (want >= c->pub_nchunks)
            s_send_nack(c, ev->peer, id, want, CATCHUP_NACK_BAD_INDEX, ev->round);
        else if (q->len >= S_FIFO)
            s_send_nack(c, ev->peer, id, want, CATCHUP_NACK_BUSY, ev->round);
        else {
            q->fifo[(q->head + q->len) % S_FIFO] = want;
            q->len++;
        }
    }
    s_serve(c, now);
}

static void s_donor_tick(catchup_t *c, uint64_t now) {
    for (int r = 0; r < S_MAX_REQUESTERS; r++) {
        s_requester_t *q = &c->req[r];
        for (int i = 0; q->used && i < q->ninfl;) {
            if (now - q->infl_ms[i] > c->serve_timeout_ms) {
                s_release_slot(c, q, i);
                c->st.serve_expired++;
            } else {
                i++;
            }
        }
    }
    if (c->serve_rate) {
        if (c->budget_ms && now > c->budget_ms) c->budget += (double)c->serve_rate * (double)(now - c->budget_ms) / 1e3;
        double cap = 2.0 * (double)(c->chunk_values * sizeof(float));
        if (c->budget > cap) c->budget = cap;
    }
    c->budget_ms = now;
    s_serve(c, now);
}

// ---------------------------------------------------------------------------------------------
// Joiner side

static int s_find_donor(const catchup_t *c, const uint8_t id[32]) {
    for (int i = 0; i < c->nd; i++)
        if (memcmp(c->donor[i].id, id, 32) == 0) return i;
    return -1;
}

// Two manifests describe the same state (round, size, chunking and state hash): their ids may still
// differ, e.g. by the inner step each donor reached.
static int s_same_state(const catchup_manifest_t *a, const catchup_manifest_t *b) {
    return a->round == b->round && a->n == b->n && a->chunk_values == b->chunk_values &&
           memcmp(a->state_hash, b->state_hash, 32) == 0;
}

static int s_usable(const s_donor_t *d) { return d->holder && !d->bad && !d->gone && !d->stalled && !d->nacked; }

static void s_fail(catchup_t *c, const char *why) {
    if (c->phase == J_DONE || c->phase == J_FAILED) return;
    c->phase = J_FAILED;
    snprintf(c->error, sizeof c->error, "%s", why);
    log_warn(MOD, "catch-up failed: %s", why);
}

// Puts a donor's outstanding chunks back for others to fetch.
static void s_release_donor(catchup_t *c, s_donor_t *d) {
    for (int i = 0; i < d->nout; i++) {
        uint32_t idx = d->out[i];
        if (c->cst && c->cst[idx] == C_OUT) {
            c->cst[idx] = C_MISSING;
            if (idx < c->cursor) c->cursor = idx;
            c->st.reassigned++;
        }
    }
    d->nout = 0;
}

static int s_send_version_req(catchup_t *c, s_donor_t *d) {
    uint8_t b[8];
    net_put_u64(b, c->min_round);
    char err[200], hx[17];
    if (net_node_send(c->net, d->id, CATCHUP_MSG_VERSION_REQ, c->min_round, b, sizeof b, S_SEND_TIMEOUT_MS, err,
                      sizeof err) != 0) {
        log_warn(MOD, "cannot ask %s for its version: %s", s_hex8(d->id, hx), err);
        d->answered = 1;
        d->gone = 1;
        return -1;
    }
    return 0;
}

// Sends a CHUNK_REQ (want and/or the pending acknowledgement). On a send failure the donor counts as gone.
static int s_send_chunk_req(catchup_t *c, s_donor_t *d, uint32_t want) {
    uint8_t b[S_CHUNK_REQ_LEN];
    memcpy(b, d->m.id, 32); // the id of the version this donor published
    net_put_u32(b + 32, want);
    net_put_u32(b + 36, d->ack);
    char err[200], hx[17];
    if (net_node_send(c->net, d->id, CATCHUP_MSG_CHUNK_REQ, c->m.round, b, sizeof b, S_SEND_TIMEOUT_MS, err,
                      sizeof err) != 0) {
        log_warn(MOD, "cannot request from %s: %s; its chunks go elsewhere", s_hex8(d->id, hx), err);
        d->gone = 1;
        return -1;
    }
    d->ack = CATCHUP_NONE;
    return 0;
}

// Hands missing chunks to usable holders (least loaded first, at most S_PER_DONOR outstanding each),
// then sends pending acknowledgements on their own.
static void s_assign(catchup_t *c, uint64_t now) {
    if (c->phase != J_FETCH) return;
    // The joiner's download cap holds for all donors together: chunks are pulled, so requesting them
    // no faster than the cap allows keeps the sum of what the donors send under it. The bucket holds
    // at most two chunks' worth, so an idle spell does not turn into a burst.
    double chunk_bytes = (double)c->m.chunk_values * sizeof(float);
    if (c->fetch_rate) {
        if (c->fbudget_ms == 0) c->fbudget = chunk_bytes;
        else if (now > c->fbudget_ms) c->fbudget += (double)c->fetch_rate * (double)(now - c->fbudget_ms) / 1e3;
        double cap = 2 * chunk_bytes > (double)c->fetch_rate / 4 ? 2 * chunk_bytes : (double)c->fetch_rate / 4;
        if (c->fbudget > cap) c->fbudget = cap;
        c->fbudget_ms = now;
    }
    while (c->ndone < c->m.nchunks) {
        if (c->fetch_rate && c->fbudget <= 0) break;
        while (c->cursor < c->m.nchunks && c->cst[c->cursor] != C_MISSING) c->cursor++;
        if (c->cursor >= c->m.nchunks) break;
        int best = -1;
        for (int i = 0; i < c->nd; i++) {
            s_donor_t *d = &c->donor[i];
            if (!s_usable(d) || d->nout >= S_PER_DONOR) continue;
            if (best < 0 || d->nout < c->donor[best].nout ||
                (d->nout == c->donor[best].nout && d->requested < c->donor[best].requested))
                best = i;
        }
        if (best < 0) break;
        s_donor_t *d = &c->donor[best];
        uint32_t idx = c->cursor;
        if (s_send_chunk_req(c, d, idx) != 0) {
            s_release_donor(c, d);
            continue;
        }
        if (d->nout == 0) d->since_ms = now;
        d->out[d->nout++] = idx;
        d->requested++;
        if (c->fetch_rate) c->fbudget -= (double)s_values(c->m.n, c->m.chunk_values, idx) * sizeof(float);
        c->cst[idx] = C_OUT;
        c->st.chunks_requested++;
    }
    for (int i = 0; i < c->nd; i++) {
        s_donor_t *d = &c->donor[i];
        if (d->ack != CATCHUP_NONE && !d->bad && !d->gone && s_send_chunk_req(c, d, CATCHUP_NONE) != 0)
            s_release_donor(c, d);
    }
}

static int s_acceptable(const catchup_t *c, const s_donor_t *d) {
    return d->has_m && !d->bad && !d->gone && d->m.round >= c->min_round && (!c->expected_n || d->m.n == c->expected_n);
}

// Picks the version held by the most donors (ties: higher round, then smaller id) and starts fetching.
static void s_choose(catchup_t *c, uint64_t now) {
    int best = -1, best_count = 0;
    for (int i = 0; i < c->nd; i++) {
        if (!s_acceptable(c, &c->donor[i])) continue;
        int count = 0;
        for (int j = 0; j < c->nd; j++)
            count += s_acceptable(c, &c->donor[j]) && s_same_state(&c->donor[j].m, &c->donor[i].m);
        const catchup_manifest_t *a = &c->donor[i].m;
        if (best < 0 || count > best_count ||
            (count == best_count && (a->round > c->donor[best].m.round ||
                                     (a->round == c->donor[best].m.round && memcmp(a->id, c->donor[best].m.id, 32) < 0)))) {
            best = i;
            best_count = count;
        }
    }
    if (best < 0) {
        s_fail(c, "no donor offered a usable version");
        return;
    }
    c->chosen = best;
    c->m = c->donor[best].m;
    c->state = malloc((size_t)c->m.n * sizeof(float));
    c->cst = calloc(c->m.nchunks, 1);
    if (!c->state || !c->cst) {
        s_fail(c, "out of memory for the state");
        return;
    }
    int holders = 0;
    for (int i = 0; i < c->nd; i++) {
        s_donor_t *d = &c->donor[i];
        d->holder = s_acceptable(c, d) && s_same_state(&d->m, &c->m);
        holders += d->holder;
    }
    c->st.holders = holders;
    c->st.nchunks = c->m.nchunks;
    c->phase = J_FETCH;
    char hx[17];
    log_info(MOD, "fetching version %s (round %llu, %llu values, %u chunks) from %d of %d donors",
             s_hex8(c->m.id, hx), (unsigned long long)c->m.round, (unsigned long long)c->m.n, c->m.nchunks, holders,
             c->nd);
    s_assign(c, now);
}

static void s_finish(catchup_t *c, uint64_t now) {
    uint8_t h[32];
    if (s_hash_values(c->state, (size_t)c->m.n, h) != 0 || memcmp(h, c->m.state_hash, 32) != 0) {
        s_fail(c, "every chunk matched but the state hash did not: the manifest is inconsistent");
        return;
    }
    c->phase = J_DONE;
    c->done_ms = now;
    c->st.seconds = c->begin_ms != UINT64_MAX && now >= c->begin_ms ? (double)(now - c->begin_ms) / 1e3 : 0.0;
    char per[CATCHUP_MAX_DONORS * 24 + 1] = "";
    size_t k = 0;
    int used = 0;
    for (int i = 0; i < c->nd && k < sizeof per - 1; i++) {
        if (!c->st.donor_chunks[i]) continue;
        char hx[17];
        int w = snprintf(per + k, sizeof per - k, "%s%s:%u", used ? " " : "", s_hex8(c->donor[i].id, hx),
                         c->st.donor_chunks[i]);
        if (w < 0) break;
        k += (size_t)w < sizeof per - k ? (size_t)w : sizeof per - k - 1;
        used++;
    }
    char hx[17];
    log_info(MOD,
             "caught up to version %s (round %llu) from %d donors in %.1f s: chunks per donor %s; %llu bad, %llu "
             "reassigned, %.1f MiB",
             s_hex8(c->m.id, hx), (unsigned long long)c->m.round, used, c->st.seconds, per,
             (unsigned long long)c->st.bad_chunks, (unsigned long long)c->st.reassigned,
             (double)c->st.bytes / (1024.0 * 1024.0));
}

static void s_on_tensor(catchup_t *c, net_event_t *ev, uint64_t now) {
    char hx[17];
    int di = s_find_donor(c, ev->peer);
    if (c->phase != J_FETCH || di < 0) {
        c->st.ignored++;
        return;
    }
    s_donor_t *d = &c->donor[di];
    uint32_t idx = ev->quantity & 0xffffffu;
    int was_out = 0;
    for (int i = 0; i < d->nout; i++)
        if (d->out[i] == idx) {
            d->out[i] = d->out[--d->nout];
            was_out = 1;
            break;
        }
    if (d->bad || ev->round != c->m.round) {
        c->st.ignored++;
        if (was_out && c->cst[idx] == C_OUT) {
            c->cst[idx] = C_MISSING;
            if (idx < c->cursor) c->cursor = idx;
            c->st.reassigned++;
        }
        s_assign(c, now);
        return;
    }
    d->since_ms = now;
    int ok = idx < c->m.nchunks && ev->codec == CODEC_FP32 && ev->data && ev->n == s_values(c->m.n, c->m.chunk_values, idx);
    uint8_t h[32];
    if (ok) ok = s_hash_values(ev->data, ev->n, h) == 0 && memcmp(h, c->m.digests + 32 * (size_t)idx, 32) == 0;
    if (!ok) {
        c->st.bad_chunks++;
        char hv[17];
        log_warn(MOD, "chunk %u from %s does not match version %s: dropped, donor no longer used", idx,
                 s_hex8(d->id, hx), s_hex8(c->m.id, hv));
        d->bad = 1;
        if (was_out && c->cst[idx] == C_OUT) {
            c->cst[idx] = C_MISSING;
            if (idx < c->cursor) c->cursor = idx;
            c->st.reassigned++;
        }
        s_release_donor(c, d);
        s_assign(c, now);
        return;
    }
    d->ack = idx;
    if (c->cst[idx] == C_DONE) {
        c->st.dup_chunks++;
    } else {
        memcpy(c->state + (size_t)idx * c->m.chunk_values, ev->data, ev->n * sizeof(float));
        c->cst[idx] = C_DONE;
        c->ndone++;
        c->st.donor_chunks[di]++;
        c->st.chunks_received++;
        c->st.bytes += ev->n * sizeof(float);
    }
    // The next received chunk of this size is decoded into these pages.
    net_node_recycle(c->net, ev->data, ev->n);
    ev->data = NULL;
    if (c->ndone == c->m.nchunks) {
        for (int i = 0; i < c->nd; i++)
            if (c->donor[i].ack != CATCHUP_NONE && !c->donor[i].bad && !c->donor[i].gone)
                s_send_chunk_req(c, &c->donor[i], CATCHUP_NONE);
        s_finish(c, now);
        return;
    }
    s_assign(c, now);
}

static int s_all_answered(const catchup_t *c) {
    for (int i = 0; i < c->nd; i++)
        if (!c->donor[i].answered) return 0;
    return 1;
}

static int s_any_manifest(const catchup_t *c) {
    for (int i = 0; i < c->nd; i++)
        if (s_acceptable(c, &c->donor[i])) return 1;
    return 0;
}

static void s_on_manifest(catchup_t *c, net_event_t *ev, uint64_t now) {
    char hx[17], err[200];
    int di = s_find_donor(c, ev->peer);
    if (di < 0 || (c->phase != J_WAIT && c->phase != J_FETCH)) {
        c->st.ignored++;
        return;
    }
    s_donor_t *d = &c->donor[di];
    if (d->has_m) return;
    d->answered = 1;
    catchup_manifest_t m;
    if (catchup_manifest_decode(&m, ev->payload, ev->len, c->max_values, err, sizeof err) != 0) {
        c->st.malformed++;
        log_warn(MOD, "dropped a manifest from %s: %s", s_hex8(ev->peer, hx), err);
        return;
    }
    d->mbytes = ev->payload; // keep: m.digests points into it
    ev->payload = NULL;
    d->m = m;
    d->has_m = 1;
    if (c->phase == J_FETCH) {
        if (s_acceptable(c, d) && s_same_state(&d->m, &c->m)) {
            d->holder = 1;
            c->st.holders++;
            s_assign(c, now);
        }
        return;
    }
    if (s_all_answered(c)) {
        if (s_any_manifest(c))
            s_choose(c, now);
        else
            s_fail(c, "no donor holds a version of the wanted round");
    }
}

static void s_on_nack(catchup_t *c, net_event_t *ev, uint64_t now) {
    char hx[17];
    if (ev->len != S_NACK_LEN) {
        c->st.malformed++;
        log_warn(MOD, "dropped a NACK of %zu bytes from %s", ev->len, s_hex8(ev->peer, hx));
        return;
    }
    int di = s_find_donor(c, ev->peer);
    if (di < 0 || (c->phase != J_WAIT && c->phase != J_FETCH)) {
        c->st.ignored++;
        return;
    }
    s_donor_t *d = &c->donor[di];
    c->st.nacks++;
    uint32_t idx = net_get_u32(ev->payload + 32);
    if (idx == CATCHUP_NONE) { // the answer to VERSION_REQ: nothing to offer
        d->answered = 1;
        d->nacked = 1; // catchup_add_donor asks again (it may have finished the round since)
        if (c->phase == J_WAIT && s_all_answered(c)) {
            if (s_any_manifest(c))
                s_choose(c, now);
            else
                s_fail(c, "no donor holds a version of the wanted round");
        }
        return;
    }
    if (memcmp(ev->payload, d->m.id, 32) != 0 || !d->holder) return;
    log_info(MOD, "%s refused chunk %u (reason %u): its chunks go elsewhere", s_hex8(d->id, hx), idx,
             net_get_u32(ev->payload + 36));
    d->nacked = 1;
    s_release_donor(c, d);
    s_assign(c, now);
}

int catchup_begin(catchup_t *c, const uint8_t (*donors)[32], int k, uint64_t min_round) {
    if (!donors || k <= 0 || k > CATCHUP_MAX_DONORS) return -1;
    s_joiner_reset(c);
    c->min_round = min_round;
    c->begin_ms = UINT64_MAX;
    c->phase = J_WAIT;
    int sent = 0;
    for (int i = 0; i < k; i++) {
        if (s_find_donor(c, donors[i]) >= 0) continue;
        s_donor_t *d = &c->donor[c->nd++];
        memcpy(d->id, donors[i], 32);
        d->ack = CATCHUP_NONE;
        memcpy(c->st.donor[c->nd - 1], d->id, 32);
        sent += s_send_version_req(c, d) == 0;
    }
    c->st.ndonors = c->nd;
    if (!sent) {
        s_fail(c, "no donor could be asked");
        return -1;
    }
    log_info(MOD, "catching up from %d donors (round ≥ %llu)", c->nd, (unsigned long long)min_round);
    return 0;
}

int catchup_add_donor(catchup_t *c, const uint8_t id[32]) {
    if (c->phase != J_WAIT && c->phase != J_FETCH) return -1;
    int known = s_find_donor(c, id);
    if (known >= 0) {
        // A donor that had no version of the wanted round yet (NACK) may have one now: ask again.
        s_donor_t *d = &c->donor[known];
        if (d->nacked && !d->holder && !d->bad && !d->gone && !d->has_m) {
            d->nacked = 0;
            d->answered = 0;
            return s_send_version_req(c, d);
        }
        return 0;
    }
    if (c->nd >= CATCHUP_MAX_DONORS) return -1;
    s_donor_t *d = &c->donor[c->nd++];
    memcpy(d->id, id, 32);
    d->ack = CATCHUP_NONE;
    memcpy(c->st.donor[c->nd - 1], id, 32);
    c->st.ndonors = c->nd;
    return s_send_version_req(c, d);
}

void catchup_donor_gone(catchup_t *c, const uint8_t id[32]) {
    int di = s_find_donor(c, id);
    if (di < 0) return;
    s_donor_t *d = &c->donor[di];
    d->gone = 1;
    d->answered = 1;
    s_release_donor(c, d);
    s_assign(c, c->last_ms);
}

int catchup_on_event(catchup_t *c, net_event_t *ev, uint64_t now_ms) {
    if (!c || !ev) return 0;
    if (ev->kind == NET_EV_TENSOR) {
        if ((ev->quantity >> 24) != CATCHUP_KIND) return 0;
    } else if (ev->kind != NET_EV_MESSAGE || ev->type < CATCHUP_MSG_FIRST || ev->type > CATCHUP_MSG_LAST) {
        return 0;
    }
    c->last_ms = now_ms;
    if (c->begin_ms == UINT64_MAX) c->begin_ms = now_ms;
    if (ev->kind == NET_EV_TENSOR) {
        s_on_tensor(c, ev, now_ms);
        return 1;
    }
    switch (ev->type) {
    case CATCHUP_MSG_VERSION_REQ: s_on_version_req(c, ev); break;
    case CATCHUP_MSG_CHUNK_REQ: s_on_chunk_req(c, ev, now_ms); break;
    case CATCHUP_MSG_MANIFEST: s_on_manifest(c, ev, now_ms); break;
    case CATCHUP_MSG_NACK: s_on_nack(c, ev, now_ms); break;
    default: break;
    }
    return 1;
}

void catchup_tick(catchup_t *c, uint64_t now_ms) {
    if (!c) return;
    c->last_ms = now_ms;
    s_donor_tick(c, now_ms);
    if (c->phase != J_WAIT && c->phase != J_FETCH) return;
    if (c->begin_ms == UINT64_MAX) c->begin_ms = now_ms;
    uint64_t age = now_ms - c->begin_ms;
    if (c->phase == J_WAIT) {
        if (s_any_manifest(c) && (s_all_answered(c) || age >= c->manifest_wait_ms))
            s_choose(c, now_ms);
        else if (age >= c->manifest_wait_ms + c->stall_ms)
            s_fail(c, "no donor answered with a version");
        return;
    }
    char hx[17];
    for (int i = 0; i < c->nd; i++) {
        s_donor_t *d = &c->donor[i];
        if (!d->nout || !s_usable(d) || now_ms - d->since_ms <= c->stall_ms) continue;
        log_warn(MOD, "%s sent nothing for %llu ms: its %d chunks go elsewhere", s_hex8(d->id, hx),
                 (unsigned long long)(now_ms - d->since_ms), d->nout);
        d->stalled = 1;
        c->st.stalls++;
        s_release_donor(c, d);
    }
    s_assign(c, now_ms);
    if (c->phase != J_FETCH) return;
    int usable = 0;
    for (int i = 0; i < c->nd; i++) usable += s_usable(&c->donor[i]);
    if (!usable && c->ndone < c->m.nchunks) s_fail(c, "no donor left holding the version");
}

int catchup_done(const catchup_t *c) { return c->phase == J_DONE ? 1 : c->phase == J_FAILED ? -1 : 0; }

const char *catchup_error(const catchup_t *c) { return c->error; }

int catchup_result(const catchup_t *c, catchup_result_t *r) {
    memset(r, 0, sizeof *r);
    if (c->phase != J_DONE) return -1;
    r->state = c->state;
    r->n = (size_t)c->m.n;
    r->round = c->m.round;
    r->inner_step = c->m.inner_step;
    memcpy(r->id, c->m.id, 32);
    memcpy(r->state_hash, c->m.state_hash, 32);
    return 0;
}

float *catchup_take_state(catchup_t *c, size_t *n) {
    if (c->phase != J_DONE || !c->state) return NULL;
    float *s = c->state;
    c->state = NULL;
    if (n) *n = (size_t)c->m.n;
    return s;
}

void catchup_stats(const catchup_t *c, catchup_stats_t *out) { *out = c->st; }
