// Fuzz target: signed membership records (gossip_record_decode) and every gossip message type as the membership core
// receives it (gossip_members_receive), since each of those carries records.
//
// Input: any bytes. They are decoded as a record under the run fingerprint FP (the committed corpus
// holds records signed for it, so the accepting path is reached) and under the fingerprint the
// input itself names; and as the payload of each gossip message type, sent to
// one long-lived view that already holds three signed members, from one of them. Accepted records
// must satisfy the format's invariants; nothing may crash, leak or read out of bounds.
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip/members.h"
#include "gossip/record.h"
#include "node/log.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_member_record: invariant failed: %s (line %d)\n", #cond, __LINE__);       \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

#define FP_BYTE 0xfb // the run fingerprint is 32 × FP_BYTE (tests/gossip/sim.h uses the same)

static gossip_members_t *s_view;
static uint8_t s_peer[3][32];
static uint64_t s_now = 1000;

static void s_key(uint8_t b, uint8_t pk[32], uint8_t sk[64]) {
    uint8_t seed[32];
    memset(seed, b, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
}

static void s_template(gossip_record_t *r, int i) {
    memset(r, 0, sizeof *r);
    memset(r->run_fp, FP_BYTE, 32);
    r->incarnation = 1700000000000ULL + (uint64_t)i;
    r->time_ms = 1700000000000ULL;
    snprintf(r->caps.device, sizeof r->caps.device, "cpu");
    r->caps.reachable = true;
    r->n_endpoints = 1;
    snprintf(r->endpoints[0], sizeof r->endpoints[0], "tcp://10.0.0.%d:7000", i + 1);
}

static void s_drain(void) {
    gossip_msg_t msg;
    while (gossip_members_pop(s_view, &msg)) gossip_msg_release(&msg);
    gossip_event_t ev;
    while (gossip_members_pop_event(s_view, &ev)) {}
}

static void s_setup(void) {
    CHECK(sodium_init() >= 0);
    log_min_level = LOG_ERROR;
    uint8_t pk[32], sk[64];
    s_key(0x42, pk, sk);
    gossip_config_t cfg;
    gossip_config_default(&cfg);
    cfg.max_members = 64; // keeps a long fuzzing run's view small
    gossip_record_t self;
    s_template(&self, 0);
    char err[256];
    s_view = gossip_members_new(&cfg, sk, &self, s_now, err, sizeof err);
    CHECK(s_view != NULL);
    // Three known members, delivered as an UPDATES message from the first.
    uint8_t msg[2 + 3 * (3 + GOSSIP_RECORD_MAX)];
    size_t n = 2;
    gossip_put_u16(msg, 3);
    for (int i = 0; i < 3; i++) {
        uint8_t psk[64];
        s_key((uint8_t)(0x50 + i), s_peer[i], psk);
        gossip_record_t r;
        s_template(&r, i + 1);
        size_t rl = gossip_record_sign(&r, psk, msg + n + 3, GOSSIP_RECORD_MAX, err, sizeof err);
        CHECK(rl > 0);
        msg[n] = 1;
        gossip_put_u16(msg + n + 1, (uint16_t)rl);
        n += 3 + rl;
    }
    CHECK(gossip_members_receive(s_view, s_now, s_peer[0], GOSSIP_MSG_UPDATES, msg, n) == 0);
    s_drain();
}

static void s_check_record(const gossip_record_t *r) {
    CHECK(r->n_endpoints >= 0 && r->n_endpoints <= GOSSIP_MAX_ENDPOINTS);
    CHECK(r->status == GOSSIP_STATUS_ALIVE || r->status == GOSSIP_STATUS_LEAVING);
    CHECK(memchr(r->caps.device, '\0', sizeof r->caps.device) != NULL);
    for (int i = 0; i < r->n_endpoints; i++) {
        CHECK(memchr(r->endpoints[i], '\0', sizeof r->endpoints[i]) != NULL);
        CHECK(gossip_endpoint_valid(r->endpoints[i], strlen(r->endpoints[i])));
    }
    CHECK(!r->caps.reachable || r->n_endpoints > 0);
    CHECK(r->ticket_len <= GOSSIP_TICKET_MAX);
    char err[256];
    CHECK(gossip_record_check(r, err, sizeof err) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_view) s_setup();
    char err[512];
    gossip_record_t r;
    uint8_t fp[32];
    memset(fp, FP_BYTE, sizeof fp);

    gossip_rec_status_t st = gossip_record_decode(&r, data, size, fp, err, sizeof err);
    CHECK(st >= GOSSIP_REC_OK && st < GOSSIP_REC_STATUS_COUNT);
    CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (st == GOSSIP_REC_OK) {
        s_check_record(&r);
        CHECK(size >= GOSSIP_RECORD_MIN && size <= GOSSIP_RECORD_MAX);
        CHECK(memcmp(r.run_fp, fp, 32) == 0);
    } else {
        CHECK(err[0] != '\0');
    }
    // Under the fingerprint it names itself, only the signature stands between it and acceptance.
    if (size >= 72) {
        st = gossip_record_decode(&r, data, size, data + 40, err, sizeof err);
        CHECK(st != GOSSIP_REC_WRONG_RUN);
        if (st == GOSSIP_REC_OK) s_check_record(&r);
    }

    for (int type = GOSSIP_MSG_FIRST - 1; type <= GOSSIP_MSG_FIRST + GOSSIP_MSG_COUNT; type++) {
        int rc = gossip_members_receive(s_view, s_now, s_peer[type % 3], type, data, size);
        CHECK(rc == 0 || rc == -1);
        s_drain();
    }
    s_now += 137;
    gossip_members_tick(s_view, s_now);
    s_drain();
    gossip_member_info_t live[80];
    size_t nl = gossip_members_live(s_view, live, 80);
    CHECK(nl >= 1 && nl <= 64);
    for (size_t i = 1; i < nl && i < 80; i++) CHECK(memcmp(live[i - 1].id, live[i].id, 32) < 0);
    return 0;
}
