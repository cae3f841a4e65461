// Signed membership records, the run-parameter check, NoLoCo groups under the reachability rule,
// and the membership core's handling of hostile input (forged, wrong-run, replayed, malformed).
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "gossip/members.h"
#include "gossip/record.h"
#include "node/log.h"
#include "optim/outer.h"

static void s_key(uint8_t b, uint8_t pk[32], uint8_t sk[64]) {
    cr_assert(sodium_init() >= 0);
    uint8_t seed[32];
    memset(seed, b, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
}

static void s_record(gossip_record_t *r, uint8_t fp_byte) {
    memset(r, 0, sizeof *r);
    memset(r->run_fp, fp_byte, 32);
    r->incarnation = 1700000000123ULL;
    r->time_ms = 1700000000456ULL;
    snprintf(r->caps.device, sizeof r->caps.device, "cuda:H100");
    r->caps.step_rate_milli = 2500;
    r->caps.upload_Bps = 12500000;
    r->caps.download_Bps = 125000000;
    r->caps.reachable = true;
    r->n_endpoints = 2;
    snprintf(r->endpoints[0], sizeof r->endpoints[0], "tcp://peer.example.org:7000");
    snprintf(r->endpoints[1], sizeof r->endpoints[1], "tcp://[2001:db8::1]:7001");
    r->ticket_len = 5;
    memcpy(r->ticket, "TICKT", 5);
}

Test(record, round_trip) {
    uint8_t pk[32], sk[64], buf[GOSSIP_RECORD_MAX];
    s_key(1, pk, sk);
    gossip_record_t r, d;
    s_record(&r, 0xab);
    char err[256];
    size_t n = gossip_record_sign(&r, sk, buf, sizeof buf, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    cr_assert_eq(memcmp(r.id, pk, 32), 0);
    cr_assert_eq(buf[4], GOSSIP_RECORD_VERSION);
    cr_assert_eq(gossip_record_decode(&d, buf, n, r.run_fp, err, sizeof err), GOSSIP_REC_OK, "%s", err);
    cr_assert_eq(memcmp(d.id, pk, 32), 0);
    cr_assert_eq(d.incarnation, r.incarnation);
    cr_assert_eq(d.time_ms, r.time_ms);
    cr_assert_eq(d.status, GOSSIP_STATUS_ALIVE);
    cr_assert_str_eq(d.caps.device, "cuda:H100");
    cr_assert_eq(d.caps.step_rate_milli, 2500);
    cr_assert_eq(d.caps.upload_Bps, 12500000);
    cr_assert_eq(d.caps.download_Bps, 125000000);
    cr_assert(d.caps.reachable);
    cr_assert_eq(d.n_endpoints, 2);
    cr_assert_str_eq(d.endpoints[0], "tcp://peer.example.org:7000");
    cr_assert_str_eq(d.endpoints[1], "tcp://[2001:db8::1]:7001");
    cr_assert_eq(d.ticket_len, 5);
    cr_assert_eq(memcmp(d.ticket, "TICKT", 5), 0);
    // Explicit little-endian layout: the incarnation's low byte first, at offset 72.
    cr_assert_eq(buf[72], (uint8_t)(r.incarnation & 0xff));
    cr_assert_eq(buf[79], (uint8_t)(r.incarnation >> 56));
    // A leaving, unreachable record with no endpoint round-trips too.
    s_record(&r, 0xab);
    r.status = GOSSIP_STATUS_LEAVING;
    r.caps.reachable = false;
    r.n_endpoints = 0;
    r.ticket_len = 0;
    n = gossip_record_sign(&r, sk, buf, sizeof buf, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    cr_assert_eq(gossip_record_decode(&d, buf, n, r.run_fp, err, sizeof err), GOSSIP_REC_OK, "%s", err);
    cr_assert_eq(d.status, GOSSIP_STATUS_LEAVING);
    cr_assert(!d.caps.reachable);
    cr_assert_eq(d.n_endpoints, 0);
}

Test(record, forged_wrong_run_truncated_refused) {
    uint8_t pk[32], sk[64], pk2[32], sk2[64], buf[GOSSIP_RECORD_MAX], bad[GOSSIP_RECORD_MAX];
    s_key(1, pk, sk);
    s_key(2, pk2, sk2);
    gossip_record_t r, d;
    s_record(&r, 0xab);
    char err[256];
    size_t n = gossip_record_sign(&r, sk, buf, sizeof buf, err, sizeof err);
    cr_assert_gt(n, 0);

    // Any changed byte (an altered field, a bad signature) fails; the reason depends on where.
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, buf, n);
        bad[i] ^= 0x01;
        gossip_rec_status_t st = gossip_record_decode(&d, bad, n, r.run_fp, err, sizeof err);
        cr_assert_neq(st, GOSSIP_REC_OK, "flipping byte %zu went unnoticed", i);
    }
    // Someone else's key claiming peer 1's id: signed by 2, id of 1.
    memcpy(bad, buf, n);
    gossip_record_t f = r;
    size_t n2 = gossip_record_sign(&f, sk2, bad, sizeof bad, err, sizeof err);
    cr_assert_gt(n2, 0);
    memcpy(bad + 8, pk, 32); // the id field says peer 1
    cr_assert_eq(gossip_record_decode(&d, bad, n2, r.run_fp, err, sizeof err), GOSSIP_REC_FORGED);
    cr_assert(strstr(err, "not signed by"), "%s", err);
    // Correctly signed, but for another run.
    uint8_t other_fp[32];
    memset(other_fp, 0xcd, 32);
    cr_assert_eq(gossip_record_decode(&d, buf, n, other_fp, err, sizeof err), GOSSIP_REC_WRONG_RUN);
    cr_assert(strstr(err, "another run"), "%s", err);
    // Every truncation (and one extra byte) is refused without reading past the buffer.
    for (size_t len = 0; len < n; len++)
        cr_assert_neq(gossip_record_decode(&d, buf, len, r.run_fp, err, sizeof err), GOSSIP_REC_OK, "len %zu", len);
    memcpy(bad, buf, n);
    bad[n] = 0;
    cr_assert_eq(gossip_record_decode(&d, bad, n + 1, r.run_fp, err, sizeof err), GOSSIP_REC_MALFORMED);
    // A future version is named as such.
    memcpy(bad, buf, n);
    bad[4] = 2;
    cr_assert_eq(gossip_record_decode(&d, bad, n, r.run_fp, err, sizeof err), GOSSIP_REC_VERSION);
    // Signing refuses what decode would refuse.
    s_record(&r, 0xab);
    snprintf(r.endpoints[0], sizeof r.endpoints[0], "tcp://*:7000");
    cr_assert_eq(gossip_record_sign(&r, sk, buf, sizeof buf, err, sizeof err), 0);
    cr_assert(strstr(err, "endpoint 1"), "%s", err);
    s_record(&r, 0xab);
    r.n_endpoints = 0;
    cr_assert_eq(gossip_record_sign(&r, sk, buf, sizeof buf, err, sizeof err), 0);
    cr_assert(strstr(err, "reachable"), "%s", err);
}

Test(record, endpoint_syntax) {
    const char *good[] = {"tcp://a:1", "tcp://10.0.0.1:7000", "tcp://host-1.example.org:65535", "tcp://[::1]:80"};
    const char *badv[] = {"tcp://:7000", "tcp://host", "tcp://host:", "tcp://host:0", "tcp://host:65536",
                          "tcp://host:07", "udp://host:7", "tcp://*:7000", "tcp://ho st:7", "tcp://[]:7",
                          "tcp://[::1]7", "tcp://host:12a", "tcp://host:123456"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_assert(gossip_endpoint_valid(good[i], strlen(good[i])), "%s", good[i]);
    for (size_t i = 0; i < sizeof badv / sizeof *badv; i++)
        cr_assert(!gossip_endpoint_valid(badv[i], strlen(badv[i])), "%s", badv[i]);
}


Test(groups, no_group_holds_two_unreachable_members) {
    uint8_t fp[32];
    memset(fp, 7, sizeof fp);
    for (int N = 1; N <= 40; N++) {
        for (int gs = 2; gs <= 5; gs++) {
            for (uint64_t t = 0; t < 6; t++) {
                int g0[64], g1[64], g2[64];
                bool reach[64];
                int g = outer_groups(fp, sizeof fp, t, N, gs, g0);
                // Every member reachable: unchanged.
                for (int i = 0; i < N; i++) reach[i] = true;
                memcpy(g1, g0, sizeof g0);
                cr_assert_eq(gossip_groups_separate_unreachable(reach, N, g, g1), g);
                cr_assert_eq(memcmp(g1, g0, (size_t)N * sizeof *g0), 0);
                // Some unreachable (a pattern that varies with N and t).
                int nu = 0;
                for (int i = 0; i < N; i++) {
                    reach[i] = ((i * 7 + (int)t * 3 + N) % 5) >= 2;
                    nu += !reach[i];
                }
                memcpy(g1, g0, sizeof g0);
                int gn = gossip_groups_separate_unreachable(reach, N, g, g1);
                memcpy(g2, g0, sizeof g0);
                cr_assert_eq(gossip_groups_separate_unreachable(reach, N, g, g2), gn);
                cr_assert_eq(memcmp(g1, g2, (size_t)N * sizeof *g1), 0, "not deterministic");
                int unr[128] = {0}, size_before[128] = {0}, size_after[128] = {0}, left_alone[128] = {0};
                for (int i = 0; i < N; i++) {
                    cr_assert(g1[i] >= 0 && g1[i] < gn);
                    unr[g1[i]] += !reach[i];
                    size_before[g0[i]]++;
                    size_after[g1[i]]++;
                    if (g1[i] >= g) left_alone[g0[i]]++;
                }
                for (int h = 0; h < gn; h++)
                    cr_assert_leq(unr[h], 1, "N=%d group %d holds %d unreachable", N, h, unr[h]);
                // Extras sit out alone only when every group already holds an unreachable member;
                // swaps keep the groups' sizes.
                cr_assert_eq(gn - g, nu > g ? nu - g : 0, "N=%d g=%d nu=%d: %d sat out", N, g, nu, gn - g);
                for (int h = 0; h < g; h++)
                    cr_assert_eq(size_after[h], size_before[h] - left_alone[h], "N=%d group %d resized", N, h);
                for (int h = g; h < gn; h++) cr_assert_eq(size_after[h], 1);
            }
        }
    }
}
