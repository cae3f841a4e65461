// The transport against live nodes on 127.0.0.1 (CURVE, ZAP, real sockets), in one process: the
// test drives both nodes' poll loops in turn, so every step is deterministic and bounded.
//   - admission: unknown key, wrong-run / expired / forged tickets, deny, allow list, fingerprint;
//     a refused peer's application messages and tensors are never processed
//   - a table of malformed inputs, each dropped with its counted reason, each followed by a valid
//     message that must be delivered
//   - error feedback across the wire
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/rng.h"
#include "net/node.h"
#include "optim/codec.h"

static loco_config_t s_cfg;

static void s_opts(net_opts_t *o, uint8_t seed, const char *run) {
    net_opts_defaults(o);
    uint8_t s[32];
    memset(s, seed, 32);
    cr_assert_eq(net_identity_from_seed(&o->identity, s), 0);
    config_defaults(&s_cfg);
    snprintf(s_cfg.run_name, sizeof s_cfg.run_name, "%s", run);
    o->run_desc_len = net_run_describe(&s_cfg, o->run_desc, sizeof o->run_desc);
    o->incarnation = 1000 + seed;
}

static void s_fp_of(const char *run, uint8_t fp[32]) {
    loco_config_t c;
    config_defaults(&c);
    snprintf(c.run_name, sizeof c.run_name, "%s", run);
    net_run_fingerprint(&c, fp);
}

static net_node_t *s_node(net_opts_t *o, int listen) {
    snprintf(o->listen, sizeof o->listen, "%s", listen ? "tcp://127.0.0.1:0" : "");
    char err[256];
    net_node_t *n = net_node_new(o, err, sizeof err);
    cr_assert_not_null(n, "%s", err);
    return n;
}

typedef struct {
    int admitted, tensors, messages;
    net_event_t last_tensor;
} seen_t;

// Services the server for up to ms, counting what it delivers.
static void s_pump(net_node_t *server, seen_t *seen, int ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        net_event_t ev;
        int r = net_node_poll(server, &ev, 5);
        if (r == 1) {
            if (ev.kind == NET_EV_ADMITTED) seen->admitted++;
            if (ev.kind == NET_EV_MESSAGE) seen->messages++;
            if (ev.kind == NET_EV_TENSOR) {
                seen->tensors++;
                net_event_clear(&seen->last_tensor);
                seen->last_tensor = ev;
                continue;
            }
            net_event_clear(&ev);
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms) return;
    }
}

// Connects client to server and runs both until the client is welcomed or refused.
static int s_connect(net_node_t *client, net_node_t *server, seen_t *seen, char *why, size_t wl, int max_ms) {
    char addr[400];
    net_node_address(server, addr, sizeof addr);
    cr_assert_eq(net_node_connect(client, addr, why, wl), 0, "%s", why);
    for (int waited = 0; waited < max_ms; waited += 20) {
        s_pump(server, seen, 10);
        int rc = net_node_handshake(client, net_node_id(server), 10, why, wl);
        if (rc == 0) return 0;
        if (!strstr(why, "did not answer")) return -1; // refused
    }
    return -1;
}

// Sends what a refused peer might try anyway: a user message and a small tensor.
static void s_try_anyway(net_node_t *client, net_node_t *server) {
    char err[256];
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = (float)i;
    net_node_send(client, net_node_id(server), NET_MSG_USER, 0, "hi", 2, 200, err, sizeof err);
    net_node_send_tensor(client, net_node_id(server), 1, 0, CODEC_FP32, x, 256, NULL, 200, err, sizeof err);
    net_node_send(client, net_node_id(server), NET_MSG_USER + 1, 0, "again", 5, 200, err, sizeof err);
}

Test(admission, ticket_mode_refuses_bad_tickets_and_processes_nothing_from_them, .timeout = 60) {
    net_opts_t so, ao;
    s_opts(&ao, 9, "run-a"); // the authority
    s_opts(&so, 1, "run-a");
    so.admission = NET_ADMIT_TICKET;
    memcpy(so.authority, ao.identity.pk, 32);
    so.has_authority = 1;
    net_node_t *server = s_node(&so, 1);
    uint8_t fp_a[32], fp_b[32];
    s_fp_of("run-a", fp_a), s_fp_of("run-b", fp_b);
    uint64_t now = (uint64_t)time(NULL);
    net_identity_t forger;
    uint8_t fs[32];
    memset(fs, 77, 32);
    net_identity_from_seed(&forger, fs);

    struct {
        const char *name;
        int has_ticket;
        const uint8_t *fp;
        uint64_t expires;
        int forge;
        const char *reason; // in the client's refusal
    } cases[] = {
        {"unknown key, no ticket", 0, NULL, 0, 0, "ticket is required"},
        {"wrong-run ticket", 1, fp_b, 0, 0, "wrong run"},
        {"expired ticket", 1, fp_a, now - 10, 0, "expired"},
        {"forged ticket", 1, fp_a, 0, 1, "forged"},
        {"valid ticket", 1, fp_a, now + 3600, 0, NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        net_opts_t co;
        s_opts(&co, (uint8_t)(20 + k), "run-a");
        if (cases[k].has_ticket) {
            net_ticket_t t = {.issued = now, .expires = cases[k].expires};
            memcpy(t.run_fp, cases[k].fp, 32);
            memcpy(t.peer, co.identity.pk, 32);
            net_ticket_sign(&t, cases[k].forge ? &forger : &ao.identity);
            if (cases[k].forge) memcpy(t.authority, ao.identity.pk, 32); // claims the real authority
            net_ticket_encode(&t, co.ticket);
            co.has_ticket = 1;
        }
        net_node_t *client = s_node(&co, 0);
        seen_t seen = {0};
        char why[300];
        uint64_t before = net_node_stats(server)->drops[NET_DROP_NOT_ADMITTED];
        uint64_t refused_before = net_node_stats(server)->drops[NET_DROP_REFUSED];
        int rc = s_connect(client, server, &seen, why, sizeof why, 5000);
        s_try_anyway(client, server);
        s_pump(server, &seen, 300);
        const net_stats_t *st = net_node_stats(server);
        if (cases[k].reason) {
            cr_assert_eq(rc, -1, "%s: admitted", cases[k].name);
            cr_assert(strstr(why, cases[k].reason), "%s: refusal says '%s'", cases[k].name, why);
            cr_assert(!strstr(why, "run-a"), "%s: refusal leaks the run: %s", cases[k].name, why);
            cr_assert_eq(seen.admitted + seen.messages + seen.tensors, 0, "%s: something was processed",
                         cases[k].name);
            cr_assert_eq(st->drops[NET_DROP_REFUSED], refused_before + 1, "%s", cases[k].name);
            // user message + tensor chunk + second message: all dropped unprocessed
            cr_assert_eq(st->drops[NET_DROP_NOT_ADMITTED], before + 3, "%s: %llu not-admitted drops", cases[k].name,
                         (unsigned long long)(st->drops[NET_DROP_NOT_ADMITTED] - before));
            net_stats_t ps;
            cr_assert_eq(net_node_peer_stats(server, co.identity.pk, &ps), 0);
            cr_assert_eq(ps.delivered, 0);
        } else {
            cr_assert_eq(rc, 0, "%s: %s", cases[k].name, why);
            cr_assert_eq(seen.admitted, 1);
            cr_assert_eq(seen.messages, 2);
            cr_assert_eq(seen.tensors, 1);
            cr_assert_eq(seen.last_tensor.n, 256);
            cr_assert_eq(seen.last_tensor.data[255], 255.0f);
        }
        net_event_clear(&seen.last_tensor);
        net_node_destroy(&client);
    }
    net_node_destroy(&server);
}

Test(admission, allowlist_deny_and_fingerprint, .timeout = 60) {
    net_opts_t so, good, stranger, denied, otherrun;
    s_opts(&good, 31, "run-a");
    s_opts(&stranger, 32, "run-a");
    s_opts(&denied, 33, "run-a");
    s_opts(&otherrun, 34, "run-b");
    s_opts(&so, 30, "run-a");
    so.admission = NET_ADMIT_ALLOWLIST;
    memcpy(so.allow[so.n_allow++], good.identity.pk, 32);
    memcpy(so.allow[so.n_allow++], denied.identity.pk, 32);
    memcpy(so.allow[so.n_allow++], otherrun.identity.pk, 32);
    memcpy(so.deny[so.n_deny++], denied.identity.pk, 32);
    net_node_t *server = s_node(&so, 1);
    char why[300];
    seen_t seen = {0};

    net_node_t *c = s_node(&good, 0);
    cr_assert_eq(s_connect(c, server, &seen, why, sizeof why, 5000), 0, "%s", why);
    net_node_destroy(&c);

    // Not listed / denied: ZAP refuses the CURVE handshake itself; the client never gets an answer.
    net_opts_t *refused[] = {&stranger, &denied};
    for (int k = 0; k < 2; k++) {
        c = s_node(refused[k], 0);
        cr_assert_eq(s_connect(c, server, &seen, why, sizeof why, 1000), -1);
        cr_assert(strstr(why, "did not answer"), "%s", why);
        s_try_anyway(c, server);
        s_pump(server, &seen, 200);
        net_node_destroy(&c);
    }
    cr_assert_eq(seen.messages + seen.tensors, 0);
    cr_assert_eq(seen.admitted, 1);

    // Listed but another run: refused with the differing field named.
    c = s_node(&otherrun, 0);
    cr_assert_eq(s_connect(c, server, &seen, why, sizeof why, 5000), -1);
    cr_assert(strstr(why, "run.name") && strstr(why, "run-b"), "%s", why);
    net_node_destroy(&c);
    net_node_destroy(&server);
}

// --- malformed inputs --------------------------------------------------------------------------

typedef struct {
    net_node_t *server, *client;
    uint64_t run_id, incarnation;
    seen_t seen;
} rig_t;

static void s_hdr(rig_t *r, uint8_t out[NET_HDR_SIZE], uint16_t type, uint64_t round, uint64_t seq, uint64_t plen) {
    net_hdr_t h = {.version = NET_PROTOCOL_VERSION, .type = type, .run_id = r->run_id,
                   .incarnation = r->incarnation, .round = round, .seq = seq, .payload_len = plen};
    net_hdr_encode(&h, out);
}

static void s_raw(rig_t *r, int n, const void *f0, size_t l0, const void *f1, size_t l1, const void *f2, size_t l2) {
    const void *f[3] = {f0, f1, f2};
    size_t l[3] = {l0, l1, l2};
    cr_assert_eq(net_node_send_raw(r->client, net_node_id(r->server), f, l, n), 0);
}

static void s_chunk(rig_t *r, net_chunk_hdr_t *ch, const uint8_t *data, size_t dlen, int hdr_len) {
    uint8_t hb[NET_CHUNK_HDR_SIZE + 1] = {0}, h[NET_HDR_SIZE];
    net_chunk_hdr_encode(ch, hb);
    s_hdr(r, h, NET_MSG_CHUNK, 0, net_node_next_seq(r->client), (size_t)hdr_len + dlen);
    s_raw(r, 3, h, sizeof h, hb, (size_t)hdr_len, data, dlen);
}

// A single-chunk fp32 transfer of 64 values (correct digest unless told otherwise).
static void s_fp32_xfer(rig_t *r, uint64_t id, const float *x, int break_digest) {
    net_chunk_hdr_t ch = {.xfer_id = id, .quantity = 5, .codec = CODEC_FP32, .total = 64, .per_chunk = 64,
                          .nchunks = 1, .index = 0, .encoded_total = 256};
    net_sha256(x, 256, ch.digest);
    net_sha256(ch.digest, 32, ch.xfer_digest); // one chunk: the digest of its digest
    if (break_digest) ch.digest[0] ^= 1;
    s_chunk(r, &ch, (const uint8_t *)x, 256, NET_CHUNK_HDR_SIZE);
}

typedef void (*case_fn)(rig_t *r);
#define SEQ (net_node_next_seq(r->client))

static void c_hdr_truncated(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); s_raw(r, 2, h, 10, "x", 1, 0, 0); }
static void c_hdr_long(rig_t *r) { uint8_t h[NET_HDR_SIZE + 1] = {0}; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_hdr_empty(rig_t *r) { s_raw(r, 2, "", 0, "x", 1, 0, 0); }
static void c_magic(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[1] = 'X'; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_version2(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[4] = 2; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_version0(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[4] = 0; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_type0(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, 0, 0, SEQ, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_type9(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, 9, 0, SEQ, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_type_max(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, 0xffff, 0, SEQ, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_flags(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[8] = 1; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_reserved(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[15] = 0x80; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_run(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1); h[16] ^= 1; s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_len_larger(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 100); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_len_sizemax(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, UINT64_MAX - 3); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_len_smaller(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 0); s_raw(r, 2, h, sizeof h, "xyz", 3, 0, 0); }
static void c_frames_extra(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 2); s_raw(r, 3, h, sizeof h, "x", 1, "y", 1); }
static void c_frames_many(rig_t *r) {
    uint8_t h[NET_HDR_SIZE];
    s_hdr(r, h, NET_MSG_USER, 0, SEQ, 9);
    const void *f[10] = {h, "a", "b", "c", "d", "e", "f", "g", "h", "i"};
    size_t l[10] = {sizeof h, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    cr_assert_eq(net_node_send_raw(r->client, net_node_id(r->server), f, l, 10), 0);
}
static void c_frames_missing(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ, 0); s_raw(r, 1, h, sizeof h, 0, 0, 0, 0); }
static void c_hello_short(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_HELLO, 0, SEQ, 5); s_raw(r, 2, h, sizeof h, "hello", 5, 0, 0); }
static void c_hello_other_id(rig_t *r) {
    uint8_t body[2048], other[32];
    memset(other, 0x55, 32);
    net_identity_t id;
    net_identity_from_seed(&id, other);
    loco_config_t c;
    config_defaults(&c);
    char desc[NET_RUN_DESC_MAX];
    size_t dl = net_run_describe(&c, desc, sizeof desc);
    size_t bl = net_hello_encode(id.pk, desc, dl, NULL, body, sizeof body);
    uint8_t h[NET_HDR_SIZE];
    s_hdr(r, h, NET_MSG_HELLO, 0, SEQ, bl);
    s_raw(r, 2, h, sizeof h, body, bl, 0, 0);
}
static void c_welcome_wrong_side(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_WELCOME, 0, SEQ, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_replay(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, SEQ - 1, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_seq0(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_USER, 0, 0, 1); s_raw(r, 2, h, sizeof h, "x", 1, 0, 0); }
static void c_seq_ancient(rig_t *r) {
    // Jump the window ahead by 300 with a valid message, then replay a sequence 300 back.
    uint8_t h[NET_HDR_SIZE];
    uint64_t s = SEQ;
    s_hdr(r, h, NET_MSG_PING, 0, s + 300, 8);
    s_raw(r, 2, h, sizeof h, "12345678", 8, 0, 0);
    s_hdr(r, h, NET_MSG_USER, 0, s + 1, 1);
    s_raw(r, 2, h, sizeof h, "x", 1, 0, 0);
}
static void c_stale_incarnation(rig_t *r) {
    uint8_t h[NET_HDR_SIZE];
    r->incarnation--;
    s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1);
    r->incarnation++;
    s_raw(r, 2, h, sizeof h, "x", 1, 0, 0);
}
static void c_new_incarnation_no_hello(rig_t *r) {
    uint8_t h[NET_HDR_SIZE];
    r->incarnation++;
    s_hdr(r, h, NET_MSG_USER, 0, SEQ, 1);
    r->incarnation--;
    s_raw(r, 2, h, sizeof h, "x", 1, 0, 0);
}
static void c_stale_round(rig_t *r) {
    net_node_set_round_floor(r->server, 5);
    uint8_t h[NET_HDR_SIZE];
    s_hdr(r, h, NET_MSG_USER, 4, SEQ, 1);
    s_raw(r, 2, h, sizeof h, "x", 1, 0, 0);
}
static void c_probe_short(rig_t *r) { uint8_t h[NET_HDR_SIZE]; s_hdr(r, h, NET_MSG_PROBE, 0, SEQ, 3); s_raw(r, 2, h, sizeof h, "abc", 3, 0, 0); }

static net_chunk_hdr_t s_ch(void) {
    return (net_chunk_hdr_t){.xfer_id = 900, .quantity = 1, .codec = CODEC_FP32, .total = 128, .per_chunk = 64,
                             .nchunks = 2, .index = 0, .encoded_total = 512};
}
static uint8_t s_zeros[1024];
static void c_chunk_hdr_size(rig_t *r) { net_chunk_hdr_t c = s_ch(); s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE - 1); }
static void c_chunk_codec(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.codec = 9; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_index(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.index = 2; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_index_max(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.index = UINT32_MAX; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_total0(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.total = 0; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_huge(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.total = 1ull << 40; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_sizemax(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.total = UINT64_MAX; c.encoded_total = UINT64_MAX; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_per(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.per_chunk = 65; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_count(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.nchunks = 3; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_enc_total(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.encoded_total = 1ull << 50; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_chunk_data_len(rig_t *r) { net_chunk_hdr_t c = s_ch(); s_chunk(r, &c, s_zeros, 255, NET_CHUNK_HDR_SIZE); }
static void c_digest(rig_t *r) { float x[64] = {1, 2, 3}; s_fp32_xfer(r, 901, x, 1); }
static void c_xfer_digest(rig_t *r) {
    float x[64] = {4, 5, 6};
    net_chunk_hdr_t ch = {.xfer_id = 910, .quantity = 5, .codec = CODEC_FP32, .total = 64, .per_chunk = 64,
                          .nchunks = 1, .index = 0, .encoded_total = 256};
    net_sha256(x, 256, ch.digest); // the chunk is intact, the transfer digest is not
    net_sha256(x, 32, ch.xfer_digest);
    s_chunk(r, &ch, (const uint8_t *)x, 256, NET_CHUNK_HDR_SIZE);
}
static void c_xfer_digest_early(rig_t *r) { net_chunk_hdr_t c = s_ch(); c.xfer_id = 911; c.xfer_digest[5] = 1; s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE); }
static void c_nan(rig_t *r) { float x[64] = {1, 2, 3}; x[7] = NAN; s_fp32_xfer(r, 902, x, 0); }
static void c_int8_inf_table(rig_t *r) {
    uint8_t enc[1024 + 64];
    float x[64] = {1, -1, 0.5f};
    codec_encode(CODEC_INT8, x, 64, enc, NULL);
    float inf = INFINITY;
    memcpy(enc + 4 * 200, &inf, 4);
    net_chunk_hdr_t c = {.xfer_id = 903, .quantity = 1, .codec = CODEC_INT8, .total = 64, .per_chunk = 64,
                         .nchunks = 1, .encoded_total = sizeof enc};
    net_sha256(enc, sizeof enc, c.digest);
    s_chunk(r, &c, enc, sizeof enc, NET_CHUNK_HDR_SIZE);
}
static void c_dup_chunk(rig_t *r) {
    net_chunk_hdr_t c = s_ch();
    c.xfer_id = 904;
    s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE);
    s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE);
}
static void c_chunk_inconsistent(rig_t *r) {
    net_chunk_hdr_t c = s_ch();
    c.xfer_id = 904; // still open from the previous case
    c.index = 1;
    c.quantity = 2;
    s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE);
}
static void c_inflight(rig_t *r) {
    // max_inflight = 3 and transfer 904 is still open: two more start, the third is refused.
    for (uint64_t id = 905; id < 908; id++) {
        net_chunk_hdr_t c = s_ch();
        c.xfer_id = id;
        s_chunk(r, &c, s_zeros, 256, NET_CHUNK_HDR_SIZE);
    }
}
static void c_oversized_frame(rig_t *r) {
    // Beyond ZMQ_MAXMSGSIZE: libzmq drops the connection before allocating; the dealer reconnects.
    static uint8_t big[(1 << 20) + 4096];
    uint8_t h[NET_HDR_SIZE];
    s_hdr(r, h, NET_MSG_USER, 0, SEQ, sizeof big);
    s_raw(r, 2, h, sizeof h, big, sizeof big, 0, 0);
}

Test(malformed, each_input_dropped_counted_and_node_still_answers, .timeout = 120) {
    net_opts_t so, co;
    s_opts(&so, 40, "run-a");
    so.limits.max_message = 1 << 20;
    so.limits.max_tensor = 1 << 20;
    so.limits.max_inflight = 3;
    s_opts(&co, 41, "run-a");
    co.limits = so.limits;
    rig_t r = {0};
    r.server = s_node(&so, 1);
    r.client = s_node(&co, 0);
    char why[300];
    cr_assert_eq(s_connect(r.client, r.server, &r.seen, why, sizeof why, 5000), 0, "%s", why);
    uint8_t fp[32];
    net_run_fingerprint_desc(so.run_desc, so.run_desc_len, fp);
    r.run_id = net_run_id(fp);
    r.incarnation = co.incarnation;

    struct {
        const char *name;
        case_fn fn;
        net_drop_t want;
    } cases[] = {
        {"truncated header", c_hdr_truncated, NET_DROP_HDR_SIZE},
        {"header one byte long", c_hdr_long, NET_DROP_HDR_SIZE},
        {"empty header frame", c_hdr_empty, NET_DROP_HDR_SIZE},
        {"wrong magic", c_magic, NET_DROP_MAGIC},
        {"wrong version (2)", c_version2, NET_DROP_VERSION},
        {"wrong version (0)", c_version0, NET_DROP_VERSION},
        {"type 0", c_type0, NET_DROP_TYPE},
        {"undefined type 9", c_type9, NET_DROP_TYPE},
        {"type 0xffff", c_type_max, NET_DROP_TYPE},
        {"flags set", c_flags, NET_DROP_FLAGS},
        {"reserved bits set", c_reserved, NET_DROP_FLAGS},
        {"another run's id", c_run, NET_DROP_RUN},
        {"length larger than the frame", c_len_larger, NET_DROP_LENGTH},
        {"length near SIZE_MAX", c_len_sizemax, NET_DROP_LENGTH},
        {"length smaller than the frame", c_len_smaller, NET_DROP_LENGTH},
        {"one frame too many", c_frames_extra, NET_DROP_FRAMES},
        {"ten frames", c_frames_many, NET_DROP_FRAMES},
        {"payload frame missing", c_frames_missing, NET_DROP_FRAMES},
        {"HELLO body truncated", c_hello_short, NET_DROP_BAD_HELLO},
        {"HELLO claiming another id", c_hello_other_id, NET_DROP_BAD_HELLO},
        {"WELCOME sent to a server", c_welcome_wrong_side, NET_DROP_BAD_HELLO},
        {"replayed sequence", c_replay, NET_DROP_REPLAY},
        {"sequence 0", c_seq0, NET_DROP_REPLAY},
        {"sequence older than the window", c_seq_ancient, NET_DROP_REPLAY},
        {"stale incarnation", c_stale_incarnation, NET_DROP_STALE_INCARNATION},
        {"new incarnation without HELLO", c_new_incarnation_no_hello, NET_DROP_NOT_ADMITTED},
        {"stale round", c_stale_round, NET_DROP_STALE_ROUND},
        {"probe body too short", c_probe_short, NET_DROP_BAD_PAYLOAD},
        {"chunk header truncated", c_chunk_hdr_size, NET_DROP_BAD_CHUNK},
        {"codec id unknown", c_chunk_codec, NET_DROP_BAD_CHUNK},
        {"chunk index out of range", c_chunk_index, NET_DROP_CHUNK_RANGE},
        {"chunk index UINT32_MAX", c_chunk_index_max, NET_DROP_CHUNK_RANGE},
        {"tensor of 0 values", c_chunk_total0, NET_DROP_BAD_CHUNK},
        {"tensor beyond max_tensor", c_chunk_huge, NET_DROP_TOO_LARGE},
        {"tensor of SIZE_MAX values", c_chunk_sizemax, NET_DROP_TOO_LARGE},
        {"chunk size not a multiple of 64", c_chunk_per, NET_DROP_BAD_CHUNK},
        {"chunk count inconsistent", c_chunk_count, NET_DROP_BAD_CHUNK},
        {"encoded total inconsistent", c_chunk_enc_total, NET_DROP_BAD_CHUNK},
        {"chunk data one byte short", c_chunk_data_len, NET_DROP_LENGTH},
        {"digest mismatch", c_digest, NET_DROP_DIGEST},
        {"transfer digest (digest of chunk digests) mismatch", c_xfer_digest, NET_DROP_DIGEST},
        {"transfer digest in a chunk other than the last", c_xfer_digest_early, NET_DROP_BAD_CHUNK},
        {"NaN in an fp32 payload", c_nan, NET_DROP_NONFINITE},
        {"Inf in an int8 table", c_int8_inf_table, NET_DROP_NONFINITE},
        {"duplicate chunk", c_dup_chunk, NET_DROP_DUP_CHUNK},
        {"chunk disagreeing with its transfer", c_chunk_inconsistent, NET_DROP_CHUNK_RANGE},
        {"too many transfers in flight", c_inflight, NET_DROP_INFLIGHT},
        {"frame beyond ZMQ_MAXMSGSIZE", c_oversized_frame, NET_DROP_NONE},
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    cr_assert_geq(ncases, 30);
    for (size_t k = 0; k < ncases; k++) {
        net_stats_t before = *net_node_stats(r.server);
        int msgs = r.seen.messages, tensors = r.seen.tensors;
        cases[k].fn(&r);
        s_pump(r.server, &r.seen, 50);
        const net_stats_t *st = net_node_stats(r.server);
        if (cases[k].want != NET_DROP_NONE) {
            for (int w = 0; w < 100 && st->drops[cases[k].want] == before.drops[cases[k].want]; w++)
                s_pump(r.server, &r.seen, 20);
            cr_assert_gt(st->drops[cases[k].want], before.drops[cases[k].want], "case '%s': no '%s' drop counted",
                         cases[k].name, net_drop_name(cases[k].want));
        }
        cr_assert_eq(r.seen.messages, msgs, "case '%s' delivered a message", cases[k].name);
        cr_assert_eq(r.seen.tensors, tensors, "case '%s' delivered a tensor", cases[k].name);
        // The node answers a valid request right after.
        if (cases[k].fn == c_seq_ancient)
            for (int i = 0; i < 300; i++) { // catch our sequence up with the one the case used
                uint8_t h[NET_HDR_SIZE];
                s_hdr(&r, h, NET_MSG_PING, 0, net_node_next_seq(r.client), 8);
                s_raw(&r, 2, h, sizeof h, "12345678", 8, 0, 0);
            }
        if (cases[k].fn == c_stale_round) net_node_set_round_floor(r.server, 0);
        char err[256];
        cr_assert_eq(net_node_send(r.client, net_node_id(r.server), NET_MSG_USER + 3, 0, "ok", 2, 2000, err, sizeof err), 0,
                     "%s", err);
        for (int w = 0; w < 200 && r.seen.messages == msgs; w++) {
            s_pump(r.server, &r.seen, 10);
            net_event_t ev;
            while (net_node_poll(r.client, &ev, 0) == 1) net_event_clear(&ev);
        }
        cr_assert_eq(r.seen.messages, msgs + 1, "after case '%s' the valid message was not delivered", cases[k].name);
    }
    // Every drop above was counted and nothing else was: total drops ≥ cases with a reason.
    uint64_t total = 0;
    for (int d = 1; d < NET_DROP_COUNT; d++) total += net_node_stats(r.server)->drops[d];
    cr_assert_geq(total, ncases - 1);
    net_event_clear(&r.seen.last_tensor);
    net_node_destroy(&r.client);
    net_node_destroy(&r.server);
}

// Error feedback through the transport: 100 rounds of int8 transfers with a residual; the sum of
// what the receiver decoded tracks the sum of the true updates to within the final residual.
Test(transfer, error_feedback_over_the_wire, .timeout = 60) {
    net_opts_t so, co;
    s_opts(&so, 50, "run-a");
    s_opts(&co, 51, "run-a");
    so.chunk_bytes = co.chunk_bytes = 64 * 1024;
    net_node_t *server = s_node(&so, 1), *client = s_node(&co, 0);
    seen_t seen = {0};
    char why[300];
    cr_assert_eq(s_connect(client, server, &seen, why, sizeof why, 5000), 0, "%s", why);
    size_t n = 50000; // several chunks, the last one partial
    float *res = calloc(n, 4), *d = malloc(n * 4);
    double *st = calloc(n, 8), *sd = calloc(n, 8);
    rng_t g;
    rng_seed(&g, 5);
    float *recycled = NULL;
    int reused = 0;
    for (int t = 0; t < 100; t++) {
        for (size_t i = 0; i < n; i++) d[i] = 0.01f * rng_normal(&g) + 0.001f, st[i] += d[i];
        cr_assert_eq(net_node_send_tensor(client, net_node_id(server), 7, (uint64_t)t, CODEC_INT8, d, n, res, 5000, why,
                                          sizeof why), 0, "%s", why);
        int before = seen.tensors;
        for (int w = 0; w < 500 && seen.tensors == before; w++) s_pump(server, &seen, 10);
        cr_assert_eq(seen.tensors, before + 1, "round %d not delivered", t);
        cr_assert_eq(seen.last_tensor.n, n);
        cr_assert_eq(seen.last_tensor.round, (uint64_t)t);
        for (size_t i = 0; i < n; i++) sd[i] += seen.last_tensor.data[i];
        // Hand the tensor back: the next round is decoded into the same memory.
        reused += seen.last_tensor.data == recycled;
        recycled = seen.last_tensor.data;
        net_node_recycle(server, seen.last_tensor.data, seen.last_tensor.n);
        seen.last_tensor.data = NULL;
    }
    cr_assert_eq(reused, 99, "recycled tensors reused in %d of 99 rounds", reused);
    double worst = 0, rmax = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(sd[i] - st[i]));
        rmax = fmax(rmax, fabsf(res[i]));
        cr_assert(fabs(sd[i] - st[i] + res[i]) < 1e-4, "value %zu: gap %g, residual %g", i, sd[i] - st[i], res[i]);
    }
    cr_log_info("int8 over the wire, 100 rounds: max |Σdecoded − Σtrue| = %g (max residual %g)\n", worst, rmax);
    cr_assert(worst < 0.05, "gap %g", worst);
    const net_stats_t *s = net_node_stats(server);
    cr_assert_gt(s->rx_bytes[NET_MSG_CHUNK], 100 * n);          // ≈ 1 B/value + tables + headers
    cr_assert_lt(s->rx_bytes[NET_MSG_CHUNK], 100 * n * 12 / 10); // not 4 B/value
    net_stats_t ps;
    cr_assert_eq(net_node_peer_stats(client, net_node_id(server), &ps), 0);
    cr_assert_eq(ps.tx_msgs[NET_MSG_CHUNK], s->rx_msgs[NET_MSG_CHUNK]);
    free(res), free(d), free(st), free(sd);
    net_event_clear(&seen.last_tensor);
    net_node_destroy(&client);
    net_node_destroy(&server);
}

static atomic_int s_serve_stop;
static void *s_serve_thread(void *arg) {
    while (!atomic_load(&s_serve_stop)) {
        net_event_t ev;
        if (net_node_poll(arg, &ev, 10) == 1) net_event_clear(&ev);
    }
    return NULL;
}

Test(transfer, probe_measures_rtt_and_goodput, .timeout = 60) {
    net_opts_t so, co;
    s_opts(&so, 60, "run-a");
    s_opts(&co, 61, "run-a");
    net_node_t *server = s_node(&so, 1), *client = s_node(&co, 0);
    seen_t seen = {0};
    char why[300];
    cr_assert_eq(s_connect(client, server, &seen, why, sizeof why, 5000), 0, "%s", why);
    // The server must keep polling while the client probes: hand it to a thread for the duration
    // (one thread at a time owns a node's sockets).
    pthread_t th;
    s_serve_stop = 0;
    pthread_create(&th, NULL, s_serve_thread, server);
    net_probe_result_t pr;
    int rc = net_probe(client, net_node_id(server), 10, 8 << 20, 10000, &pr, why, sizeof why);
    s_serve_stop = 1;
    pthread_join(th, NULL);
    cr_assert_eq(rc, 0, "%s", why);
    cr_log_info("probe: rtt median %.3f ms, min %.3f ms, %.1f MB/s\n", pr.rtt_ms_median, pr.rtt_ms_min, pr.mbytes_per_s);
    cr_assert(pr.rtt_ms_median > 0 && pr.rtt_ms_min <= pr.rtt_ms_median);
    cr_assert(pr.mbytes_per_s > 0 && pr.bytes >= (8u << 20));
    net_node_destroy(&client);
    net_node_destroy(&server);
}

// A server restarts (same id and port, new incarnation): the client's DEALER reconnects by itself
// and the client says HELLO again without being told to, so the new server admits it and processes
// its messages — nobody calls net_node_connect a second time.
Test(reconnect, client_says_hello_again_after_the_server_restarts, .timeout = 60) {
    net_opts_t so, co;
    s_opts(&so, 60, "run-a");
    s_opts(&co, 61, "run-a");
    net_node_t *server = s_node(&so, 1), *client = s_node(&co, 0);
    seen_t seen = {0};
    char why[300], ep[200];
    cr_assert_eq(s_connect(client, server, &seen, why, sizeof why, 5000), 0, "%s", why);
    cr_assert_eq(seen.admitted, 1);
    net_event_t old;
    while (net_node_poll(client, &old, 0) == 1) net_event_clear(&old); // the first WELCOME
    snprintf(ep, sizeof ep, "%s", net_node_endpoint(server));
    net_node_destroy(&server);

    s_opts(&so, 60, "run-a");
    so.incarnation += 1; // a restarted process
    snprintf(so.listen, sizeof so.listen, "%s", ep);
    server = net_node_new(&so, why, sizeof why);
    cr_assert_not_null(server, "%s", why);
    seen_t seen2 = {0};
    int welcomed = 0;
    for (int w = 0; w < 500 && (!seen2.admitted || !welcomed); w++) {
        s_pump(server, &seen2, 5);
        net_event_t ev;
        while (net_node_poll(client, &ev, 5) == 1) {
            if (ev.kind == NET_EV_WELCOME) welcomed++;
            net_event_clear(&ev);
        }
    }
    cr_assert_eq(seen2.admitted, 1, "the restarted server never got a HELLO");
    cr_assert_eq(welcomed, 1, "the client was not welcomed again");
    cr_assert_eq(net_node_send(client, net_node_id(server), NET_MSG_USER, 1, "after", 5, 2000, why, sizeof why), 0,
                 "%s", why);
    for (int w = 0; w < 200 && !seen2.messages; w++) s_pump(server, &seen2, 10);
    cr_assert_eq(seen2.messages, 1, "a message after the reconnection was not delivered");
    cr_assert_eq(net_node_stats(server)->drops[NET_DROP_NOT_ADMITTED], 0);
    net_node_destroy(&client);
    net_node_destroy(&server);
}
