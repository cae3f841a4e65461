// Catch-up (node/catchup.h) between live nodes on 127.0.0.1, driven in turn by this one thread:
//   - a joiner fetches a 3M-value state (12 chunks of 256K) from 3 donors: byte-identical, its SHA-256
//     is the version's state hash, and the chunks came from more than one donor
//   - a donor destroyed after it delivered a chunk: the joiner notices the silence (stall timeout),
//     or is told (catchup_donor_gone), and the others deliver the rest — nothing fetched twice but
//     what was reassigned
//   - a donor that flips a bit in what it serves: caught by the manifest's digest, counted, fetched
//     from another donor
//   - two versions among the donors (2 hold A, 1 holds a newer B): the joiner takes A
//   - malformed manifests and requests are dropped and counted; a request for an unknown version is
//     refused; a donor that republishes mid-transfer refuses the old version and the joiner goes on
// Counters and results only: no timing assertions.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/fingerprint.h"
#include "net/node.h"
#include "node/catchup.h"
#include "node/log.h"

#define N_VALUES (3u << 20) // 3M values
#define CHUNK (256u << 10)  // 12 chunks
#define NCHUNKS 12

static loco_config_t s_cfg;

static uint64_t s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static net_node_t *s_node(uint8_t seed, int listen) {
    net_opts_t o;
    net_opts_defaults(&o);
    uint8_t s[32];
    memset(s, seed, 32);
    cr_assert_eq(net_identity_from_seed(&o.identity, s), 0);
    config_defaults(&s_cfg);
    o.run_desc_len = net_run_describe(&s_cfg, o.run_desc, sizeof o.run_desc);
    o.incarnation = 2000 + seed;
    snprintf(o.listen, sizeof o.listen, "%s", listen ? "tcp://127.0.0.1:0" : "");
    char err[256];
    net_node_t *n = net_node_new(&o, err, sizeof err);
    cr_assert_not_null(n, "%s", err);
    return n;
}

static void s_connect(net_node_t *client, net_node_t *server) {
    char addr[400], why[300];
    net_node_address(server, addr, sizeof addr);
    cr_assert_eq(net_node_connect(client, addr, why, sizeof why), 0, "%s", why);
    for (int i = 0; i < 200; i++) {
        net_event_t ev;
        while (net_node_poll(server, &ev, 5) == 1) net_event_clear(&ev);
        if (net_node_handshake(client, net_node_id(server), 10, why, sizeof why) == 0) return;
    }
    cr_assert_fail("no handshake: %s", why);
}

typedef struct {
    net_node_t *net;
    catchup_t *cu;
    int paused; // not driven (its messages wait in its sockets)
} peer_t;

static void s_peer(peer_t *p, uint8_t seed, int listen) {
    p->net = s_node(seed, listen);
    char err[256];
    p->cu = catchup_new(p->net, CHUNK, err, sizeof err);
    cr_assert_not_null(p->cu, "%s", err);
    p->paused = 0;
}

static void s_peer_destroy(peer_t *p) {
    catchup_destroy(&p->cu);
    net_node_destroy(&p->net);
}

// One pass of one peer's poll loop, as the net thread runs it.
static void s_pump(peer_t *p, int timeout_ms) {
    if (!p->net || p->paused) return;
    net_event_t ev;
    for (int k = 0; k < 64 && net_node_poll(p->net, &ev, k == 0 ? timeout_ms : 0) == 1; k++) {
        catchup_on_event(p->cu, &ev, s_now());
        net_event_clear(&ev);
    }
    catchup_tick(p->cu, s_now());
}

// Drives donors and joiner in turn until stop(joiner) holds or the joiner finished (bounded).
static void s_drive(peer_t *donors, int k, peer_t *joiner, int (*stop)(peer_t *)) {
    uint64_t t0 = s_now();
    while (s_now() - t0 < 40000) {
        for (int i = 0; i < k; i++) s_pump(&donors[i], 0);
        s_pump(joiner, 1);
        if ((stop && stop(joiner)) || catchup_done(joiner->cu) != 0) return;
    }
}

static void s_fill(float *x, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
}

typedef struct {
    peer_t d[3], j;
    float *x;
} swarm_t;

// Three donors (seeds 11..13) publishing x (round 5, step 500), a joiner (seed 20) connected to all.
static void s_swarm(swarm_t *s) {
    log_set_level(getenv("LOCO_TEST_LOG") ? getenv("LOCO_TEST_LOG") : "warn");
    s->x = malloc(N_VALUES * sizeof(float));
    cr_assert_not_null(s->x);
    s_fill(s->x, N_VALUES, 1);
    for (int i = 0; i < 3; i++) s_peer(&s->d[i], (uint8_t)(11 + i), 1);
    s_peer(&s->j, 20, 0);
    for (int i = 0; i < 3; i++) {
        s_connect(s->j.net, s->d[i].net);
        cr_assert_eq(catchup_publish(s->d[i].cu, 5, 500, s->x, N_VALUES), 0);
    }
    // No stall is declared unless a test asks for it: a loaded machine must not change the counts.
    catchup_set_stall_ms(s->j.cu, 60000);
}

static void s_begin(swarm_t *s) {
    uint8_t ids[3][32];
    for (int i = 0; i < 3; i++) memcpy(ids[i], net_node_id(s->d[i].net), 32);
    cr_assert_eq(catchup_begin(s->j.cu, (const uint8_t(*)[32])ids, 3, 0), 0);
}

static void s_swarm_free(swarm_t *s) {
    for (int i = 0; i < 3; i++) s_peer_destroy(&s->d[i]);
    s_peer_destroy(&s->j);
    free(s->x);
}

// The result is x, byte for byte, and hashes to the version's state hash.
static void s_check_result(catchup_t *j, const float *x, const uint8_t *want_id) {
    cr_assert_eq(catchup_done(j), 1, "catch-up did not finish: %s", catchup_error(j));
    catchup_result_t r;
    cr_assert_eq(catchup_result(j, &r), 0);
    cr_assert_eq(r.n, N_VALUES);
    cr_assert_not_null(r.state);
    size_t bad = 0;
    while (bad < r.n && memcmp(&r.state[bad], &x[bad], sizeof(float)) == 0) bad++;
    cr_assert_eq(bad, r.n, "first difference at value %zu: %.9g, want %.9g", bad, (double)r.state[bad], (double)x[bad]);
    uint8_t h[32];
    net_sha256(r.state, r.n * sizeof(float), h);
    cr_assert_eq(memcmp(h, r.state_hash, 32), 0, "the state's SHA-256 is the version's state hash");
    net_sha256(x, r.n * sizeof(float), h);
    cr_assert_eq(memcmp(h, r.state_hash, 32), 0, "the state hash is that of what was published");
    if (want_id) cr_assert_eq(memcmp(r.id, want_id, 32), 0, "the version id is the donors'");
}

static uint32_t s_sum(const catchup_stats_t *st) {
    uint32_t s = 0;
    for (int i = 0; i < st->ndonors; i++) s += st->donor_chunks[i];
    return s;
}

Test(catchup, three_donors_byte_identical_spread_over_donors, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[0].cu));
    catchup_result_t r;
    catchup_result(s.j.cu, &r);
    cr_assert_eq(r.round, 5);
    cr_assert_eq(r.inner_step, 500);
    catchup_stats_t st;
    catchup_stats(s.j.cu, &st);
    cr_assert_eq(st.nchunks, NCHUNKS);
    cr_assert_eq(st.holders, 3);
    cr_assert_eq(s_sum(&st), NCHUNKS);
    int used = 0;
    for (int i = 0; i < 3; i++) used += st.donor_chunks[i] > 0;
    cr_assert_geq(used, 2, "chunks came from %d donor(s): %u %u %u", used, st.donor_chunks[0], st.donor_chunks[1],
                  st.donor_chunks[2]);
    cr_assert_eq(st.bad_chunks, 0);
    cr_assert_eq(st.reassigned, 0);
    cr_assert_eq(st.chunks_requested, NCHUNKS, "one request per chunk");
    uint64_t served = 0;
    for (int i = 0; i < 3; i++) {
        catchup_stats_t ds;
        catchup_stats(s.d[i].cu, &ds);
        cr_assert_eq(ds.manifests_sent, 1);
        served += ds.served_chunks;
    }
    cr_assert_eq(served, st.chunks_requested);
    // Handing the state over.
    size_t n = 0;
    float *mine = catchup_take_state(s.j.cu, &n);
    cr_assert_not_null(mine);
    cr_assert_eq(n, N_VALUES);
    cr_assert_null(catchup_take_state(s.j.cu, &n));
    free(mine);
    s_swarm_free(&s);
}

static int s_fetching(peer_t *j) {
    catchup_stats_t st;
    catchup_stats(j->cu, &st);
    return st.holders == 3;
}

static int s_first_from_d0(peer_t *j) {
    catchup_stats_t st;
    catchup_stats(j->cu, &st);
    return st.donor_chunks[0] >= 1;
}

// Donor 0 leaves after it delivered a chunk; told: the caller reports it gone, else the stall timeout.
static void s_donor_leaves(int told) {
    swarm_t s;
    s_swarm(&s);
    if (!told) catchup_set_stall_ms(s.j.cu, 1000);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, s_fetching); // every manifest in, the first requests sent
    cr_assert(s_fetching(&s.j));
    s.d[1].paused = s.d[2].paused = 1; // so donor 0 surely delivers first, with requests still out
    s_drive(s.d, 3, &s.j, s_first_from_d0);
    cr_assert(s_first_from_d0(&s.j), "donor 0 delivered nothing");
    uint8_t gone[32];
    memcpy(gone, net_node_id(s.d[0].net), 32);
    s_peer_destroy(&s.d[0]);
    if (told) catchup_donor_gone(s.j.cu, gone);
    s.d[1].paused = s.d[2].paused = 0;
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[1].cu));
    catchup_stats_t st;
    catchup_stats(s.j.cu, &st);
    fprintf(stderr, "donor 0 delivered %u, donors 1, 2: %u, %u; reassigned %llu, stalls %llu\n", st.donor_chunks[0],
                st.donor_chunks[1], st.donor_chunks[2], (unsigned long long)st.reassigned, (unsigned long long)st.stalls);
    cr_assert_geq(st.donor_chunks[0], 1);
    cr_assert_lt(st.donor_chunks[0], NCHUNKS);
    cr_assert_eq(s_sum(&st), NCHUNKS, "chunks from the others + those already received = all, each once");
    cr_assert_eq(st.chunks_received, NCHUNKS);
    cr_assert_geq(st.reassigned, 1, "donor 0 still had a chunk outstanding");
    cr_assert_leq(st.chunks_requested, NCHUNKS + st.reassigned, "nothing was fetched again but what was reassigned");
    cr_assert_leq(st.dup_chunks, st.reassigned);
    if (told)
        cr_assert_eq(st.stalls, 0, "a donor reported gone is not waited for");
    else
        cr_assert_geq(st.stalls, 1, "the silent donor was detected by the stall timeout");
    uint64_t served = 0;
    for (int i = 1; i < 3; i++) {
        catchup_stats_t ds;
        catchup_stats(s.d[i].cu, &ds);
        served += ds.served_chunks;
    }
    cr_assert_geq(served, NCHUNKS - st.donor_chunks[0]);
    cr_assert_leq(served, NCHUNKS - st.donor_chunks[0] + st.reassigned, "the others served nothing twice but what was reassigned");
    s_swarm_free(&s);
}

Test(catchup, a_donor_that_stalls_mid_transfer_is_replaced, .timeout = 90) { s_donor_leaves(0); }
Test(catchup, a_donor_reported_gone_is_replaced_at_once, .timeout = 90) { s_donor_leaves(1); }

Test(catchup, a_corrupt_chunk_is_caught_by_hash_and_fetched_elsewhere, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    catchup_test_corrupt(s.d[1].cu, 1);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[0].cu));
    catchup_stats_t st, ds;
    catchup_stats(s.j.cu, &st);
    catchup_stats(s.d[1].cu, &ds);
    cr_assert_geq(ds.served_chunks, 1, "the corrupting donor served something");
    cr_assert_eq(st.bad_chunks, 1, "its first chunk fails the digest; nothing more from it is used");
    cr_assert_eq(st.donor_chunks[1], 0);
    cr_assert_geq(st.reassigned, 1);
    cr_assert_eq(s_sum(&st), NCHUNKS);
    s_swarm_free(&s);
}

Test(catchup, the_version_held_by_most_donors_wins, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    float *b = malloc(N_VALUES * sizeof(float));
    s_fill(b, N_VALUES, 2);
    cr_assert_eq(catchup_publish(s.d[2].cu, 6, 600, b, N_VALUES), 0); // newer, but held by one donor
    cr_assert_neq(memcmp(catchup_published_id(s.d[2].cu), catchup_published_id(s.d[0].cu), 32), 0);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[0].cu));
    catchup_result_t r;
    catchup_result(s.j.cu, &r);
    cr_assert_eq(r.round, 5);
    catchup_stats_t st, ds;
    catchup_stats(s.j.cu, &st);
    catchup_stats(s.d[2].cu, &ds);
    cr_assert_eq(st.holders, 2);
    cr_assert_eq(st.donor_chunks[2], 0);
    cr_assert_eq(ds.served_chunks, 0, "the minority donor was never asked for chunks");
    cr_assert_eq(st.donor_chunks[0] + st.donor_chunks[1], NCHUNKS);
    free(b);
    s_swarm_free(&s);
}

Test(catchup, manifest_decoder_checks_every_length) {
    uint8_t buf[CATCHUP_MANIFEST_HDR + 2 * 32] = {0};
    buf[0] = 1;              // format
    buf[4] = 64;             // 64 values per chunk
    buf[8] = 100;            // 100 values: 2 chunks
    buf[32] = 2;             // nchunks
    catchup_manifest_t m;
    char err[200];
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.nchunks, 2);
    cr_assert_eq(m.n, 100);
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf - 1, 0, err, sizeof err), -1, "length vs chunk count");
    cr_assert_eq(catchup_manifest_decode(&m, buf, 40, 0, err, sizeof err), -1, "short header");
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf, 99, err, sizeof err), -1, "over the value limit");
    buf[32] = 3;
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf, 0, err, sizeof err), -1, "chunk count vs values");
    buf[32] = 2;
    buf[4] = 65;
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf, 0, err, sizeof err), -1, "chunk size not a multiple of 64");
    buf[4] = 64;
    buf[0] = 2;
    cr_assert_eq(catchup_manifest_decode(&m, buf, sizeof buf, 0, err, sizeof err), -1, "unknown format");
}

Test(catchup, malformed_messages_are_dropped_and_counted, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    // A fake donor (a bare node) that answers VERSION_REQ with a manifest whose chunk count lies.
    net_node_t *fake = s_node(30, 1);
    s_connect(s.j.net, fake);
    uint8_t ids[2][32];
    memcpy(ids[0], net_node_id(fake), 32);
    memcpy(ids[1], net_node_id(s.d[0].net), 32);
    cr_assert_eq(catchup_begin(s.j.cu, (const uint8_t(*)[32])ids, 2, 0), 0);
    char err[256];
    int answered = 0;
    for (int it = 0; it < 5000 && !answered; it++) {
        net_event_t ev;
        while (net_node_poll(fake, &ev, 1) == 1) {
            if (ev.kind == NET_EV_MESSAGE && ev.type == CATCHUP_MSG_VERSION_REQ) {
                uint8_t man[CATCHUP_MANIFEST_HDR + 32] = {0};
                man[0] = 1;
                man[4] = 64;
                man[8] = 200; // 200 values need 4 chunks of 64, it lists 1
                man[32] = 1;
                cr_assert_eq(net_node_send(fake, ev.peer, CATCHUP_MSG_MANIFEST, 0, man, sizeof man, 1000, err, sizeof err), 0);
                answered = 1;
            }
            net_event_clear(&ev);
        }
        s_pump(&s.j, 0);
    }
    cr_assert(answered);
    // And a short CHUNK_REQ, and one for a version donor 0 does not hold, straight to donor 0.
    uint8_t req[40];
    memset(req, 0xab, sizeof req);
    cr_assert_eq(net_node_send(s.j.net, ids[1], CATCHUP_MSG_CHUNK_REQ, 0, req, 39, 1000, err, sizeof err), 0);
    memset(req + 32, 0, 4);             // want chunk 0
    memset(req + 36, 0xff, 4);          // got nothing
    cr_assert_eq(net_node_send(s.j.net, ids[1], CATCHUP_MSG_CHUNK_REQ, 0, req, 40, 1000, err, sizeof err), 0);
    s_drive(s.d, 1, &s.j, NULL);
    // The joiner went on with the honest donor alone.
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[0].cu));
    catchup_stats_t st, ds;
    catchup_stats(s.j.cu, &st);
    catchup_stats(s.d[0].cu, &ds);
    cr_assert_eq(st.malformed, 1, "the lying manifest was dropped");
    cr_assert_eq(st.holders, 1);
    cr_assert_eq(ds.malformed, 1, "the short request was dropped");
    cr_assert_geq(ds.served_nacks, 1, "the request for an unknown version was refused");
    net_node_destroy(&fake);
    s_swarm_free(&s);
}

Test(catchup, a_donor_that_moves_to_a_new_version_is_left_for_the_others, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, s_fetching);
    s.d[1].paused = s.d[2].paused = 1;
    s_drive(s.d, 3, &s.j, s_first_from_d0); // donor 0 delivered, and was asked for more
    cr_assert(s_first_from_d0(&s.j));
    // Donor 0 finishes its next round: the version being fetched is no longer served by it.
    float *b = malloc(N_VALUES * sizeof(float));
    s_fill(b, N_VALUES, 3);
    cr_assert_eq(catchup_publish(s.d[0].cu, 6, 600, b, N_VALUES), 0);
    s.d[1].paused = s.d[2].paused = 0;
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[1].cu));
    catchup_stats_t st, ds;
    catchup_stats(s.j.cu, &st);
    catchup_stats(s.d[0].cu, &ds);
    cr_assert_geq(ds.served_nacks, 1, "donor 0 refused the old version");
    cr_assert_geq(st.nacks, 1);
    cr_assert_geq(st.reassigned, 1);
    cr_assert_leq(st.donor_chunks[0], 2, "only what it had queued before moving on came from donor 0");
    cr_assert_eq(s_sum(&st), NCHUNKS);
    cr_assert_eq(st.stalls, 0, "a refusal needs no stall timeout");
    free(b);
    s_swarm_free(&s);
}

Test(catchup, rate_limited_donors_still_deliver, .timeout = 90) {
    swarm_t s;
    s_swarm(&s);
    for (int i = 0; i < 3; i++) catchup_set_serve_rate(s.d[i].cu, 8u << 20);
    s_begin(&s);
    s_drive(s.d, 3, &s.j, NULL);
    s_check_result(s.j.cu, s.x, catchup_published_id(s.d[0].cu));
    s_swarm_free(&s);
}

// Counts kind-7 tensors a bare node received, driving it and the donor for a while.
static int s_greedy_pump(peer_t *donor, net_node_t *greedy, uint32_t *last) {
    int got = 0;
    for (int it = 0; it < 300; it++) {
        s_pump(donor, 0);
        net_event_t ev;
        while (net_node_poll(greedy, &ev, 1) == 1) {
            if (ev.kind == NET_EV_TENSOR && (ev.quantity >> 24) == CATCHUP_KIND) {
                got++;
                *last = ev.quantity & 0xffffffu;
            }
            net_event_clear(&ev);
        }
    }
    return got;
}

static void s_req(net_node_t *from, const uint8_t *to, const uint8_t *version, uint32_t want, uint32_t got) {
    uint8_t b[40];
    memcpy(b, version, 32);
    for (int i = 0; i < 4; i++) {
        b[32 + i] = (uint8_t)(want >> (8 * i));
        b[36 + i] = (uint8_t)(got >> (8 * i));
    }
    char err[256];
    cr_assert_eq(net_node_send(from, to, CATCHUP_MSG_CHUNK_REQ, 5, b, sizeof b, 1000, err, sizeof err), 0, "%s", err);
}

Test(catchup, a_donor_serves_two_chunks_at_a_time_per_requester, .timeout = 90) {
    log_set_level(getenv("LOCO_TEST_LOG") ? getenv("LOCO_TEST_LOG") : "warn");
    float *x = malloc(N_VALUES * sizeof(float));
    s_fill(x, N_VALUES, 4);
    peer_t d;
    s_peer(&d, 40, 1);
    cr_assert_eq(catchup_publish(d.cu, 5, 500, x, N_VALUES), 0);
    net_node_t *greedy = s_node(41, 0);
    s_connect(greedy, d.net);
    const uint8_t *id = catchup_published_id(d.cu), *to = net_node_id(d.net);
    for (uint32_t i = 0; i < 10; i++) s_req(greedy, to, id, i, CATCHUP_NONE); // asks for 10 at once, acks nothing
    uint32_t last = CATCHUP_NONE;
    int got = s_greedy_pump(&d, greedy, &last);
    catchup_stats_t ds;
    catchup_stats(d.cu, &ds);
    cr_assert_eq(got, 2, "a requester that acknowledges nothing gets 2 chunks, got %d", got);
    cr_assert_eq(ds.served_chunks, 2);
    s_req(greedy, to, id, CATCHUP_NONE, last); // one acknowledged: one more
    got = s_greedy_pump(&d, greedy, &last);
    catchup_stats(d.cu, &ds);
    cr_assert_eq(got, 1);
    cr_assert_eq(ds.served_chunks, 3);
    // 7 wait in its FIFO of 16: of 20 more, 9 fit and 11 are refused.
    for (uint32_t i = 0; i < 20; i++) s_req(greedy, to, id, i % NCHUNKS, CATCHUP_NONE);
    s_greedy_pump(&d, greedy, &last);
    catchup_stats(d.cu, &ds);
    cr_assert_eq(ds.served_nacks, 11, "refused %llu", (unsigned long long)ds.served_nacks);
    cr_assert_eq(ds.served_chunks, 3, "still nothing acknowledged");
    net_node_destroy(&greedy);
    s_peer_destroy(&d);
    free(x);
}
