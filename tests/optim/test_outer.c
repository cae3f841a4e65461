// The outer optimizers against the formulas of ALGORITHMS.md and its sanity identities.
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "model/rng.h"
#include "optim/outer.h"

#define N 1000

static void s_randn(float *x, size_t n, uint64_t seed, float scale) {
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&r);
}

static uint32_t s_ulps(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = (int32_t)0x80000000 - ia;
    if (ib < 0) ib = (int32_t)0x80000000 - ib;
    return (uint32_t)(ia > ib ? ia - ib : ib - ia);
}

Test(outer, diloco_one_peer_lr1_mu0_reproduces_inner_weights) {
    // One peer, η = 1, μ = 0: the new anchor is θ up to the rounding of φ − (φ − θ).
    static float phi[N], theta[N], delta[N], b[N];
    s_randn(phi, N, 1, 0.05f);
    s_randn(theta, N, 2, 0.01f);
    for (int i = 0; i < N; i++) {
        theta[i] += phi[i];
        delta[i] = phi[i] - theta[i];
    }
    outer_hparams_t hp = {1.0f, 0.0f, 1.0f, 0.0f};
    outer_diloco_step(phi, b, delta, N, &hp);
    uint32_t worst = 0;
    int wi = 0;
    for (int i = 0; i < N; i++)
        if (s_ulps(phi[i], theta[i]) > worst) worst = s_ulps(phi[i], theta[i]), wi = i;
    cr_assert(worst <= 8, "worst element %d: %g vs %g (%u ulps)", wi, phi[wi], theta[wi], worst);
}

Test(outer, diloco_nesterov_matches_torch_sgd_nesterov_formula) {
    // torch.optim.SGD(nesterov=True) with grad = Δ̄: b ← μb + g; φ ← φ − η(g + μb). Three rounds,
    // computed here in double as the reference.
    static float phi[N], b[N], d[N];
    static double rphi[N], rb[N];
    s_randn(phi, N, 3, 1.0f);
    for (int i = 0; i < N; i++) rphi[i] = phi[i];
    outer_hparams_t hp = {0.7f, 0.9f, 1.0f, 0.0f};
    for (int round = 0; round < 3; round++) {
        s_randn(d, N, 10 + round, 0.01f);
        outer_diloco_step(phi, b, d, N, &hp);
        for (int i = 0; i < N; i++) {
            rb[i] = 0.9 * rb[i] + d[i];
            rphi[i] -= 0.7 * (d[i] + 0.9 * rb[i]);
        }
    }
    for (int i = 0; i < N; i++) cr_assert(fabs(phi[i] - rphi[i]) < 1e-6 + 1e-6 * fabs(rphi[i]), "elem %d: %g vs %g", i, phi[i], rphi[i]);
}

Test(outer, noloco_full_group_identical_anchors_equals_heavy_ball_diloco) {
    static float phi_a[N], m[N], phi_b[N], b[N], d[N];
    s_randn(phi_a, N, 4, 1.0f);
    memcpy(phi_b, phi_a, sizeof phi_a);
    outer_hparams_t hp = {0.7f, 0.5f, 1.0f, 0.0f};
    for (int round = 0; round < 5; round++) {
        s_randn(d, N, 20 + round, 0.01f);
        outer_noloco_step(phi_a, m, d, phi_a /* identical anchors: mean φ_j = φ */, N, &hp);
        for (int i = 0; i < N; i++) {
            b[i] = 0.5f * b[i] + d[i];
            phi_b[i] = phi_b[i] - 0.7f * b[i];
        }
    }
    for (int i = 0; i < N; i++) {
        cr_assert(fabsf(phi_a[i] - phi_b[i]) <= 1e-6f + 1e-6f * fabsf(phi_b[i]), "elem %d: %g vs %g", i, phi_a[i], phi_b[i]);
        cr_assert(fabsf(m[i] + 0.7f * b[i]) <= 1e-6f, "m = −ηb fails at %d", i);
    }
}

Test(outer, noloco_pull_term_moves_toward_group_mean) {
    static float phi[N], m[N], d[N], mean[N];
    for (int i = 0; i < N; i++) { phi[i] = 1.0f; mean[i] = 0.0f; }
    outer_hparams_t hp = {0.5f, 0.0f, 1.0f, 0.0f};
    outer_noloco_step(phi, m, d, mean, N, &hp);
    for (int i = 0; i < N; i++) cr_assert_float_eq(phi[i], 0.5f, 1e-7f);
}

Test(outer, co2_clip_takes_effect) {
    static float phi[N], b[N], d[N], phi2[N], b2[N];
    s_randn(phi, N, 5, 1.0f);
    memcpy(phi2, phi, sizeof phi);
    s_randn(d, N, 6, 0.1f);
    outer_hparams_t clipped = {0.7f, 0.9f, 1.0f, 0.05f}, free_ = {0.7f, 0.9f, 1.0f, 0.0f};
    outer_diloco_step(phi, b, d, N, &clipped);
    outer_diloco_step(phi2, b2, d, N, &free_);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(fabsf(b[i]) <= 0.05f, "momentum %g escapes the clip", b[i]);
        differ += phi[i] != phi2[i];
    }
    // N(0, 0.1) draws exceed 0.05 in about 62% of elements: the clip must change those.
    cr_assert(differ > N / 2, "the clip changed only %d of %d elements", differ, N);
}

Test(outer, co2_gap_penalty_divides_the_pseudo_gradient) {
    static float phi[N], b[N], d[N], phi2[N], b2[N], d2[N];
    s_randn(phi, N, 7, 1.0f);
    memcpy(phi2, phi, sizeof phi);
    s_randn(d, N, 8, 0.1f);
    for (int i = 0; i < N; i++) d2[i] = d[i] * 0.25f; // exact: a power of two
    outer_hparams_t pen = {0.7f, 0.9f, 4.0f, 0.0f}, none = {0.7f, 0.9f, 1.0f, 0.0f};
    outer_diloco_step(phi, b, d, N, &pen);
    outer_diloco_step(phi2, b2, d2, N, &none);
    cr_assert(memcmp(phi, phi2, sizeof phi) == 0 && memcmp(b, b2, sizeof b) == 0);
}

Test(outer, weighted_mean_by_inner_steps) {
    float a[4] = {1, 2, 3, 4}, c[4] = {5, 6, 7, 8}, out[4];
    const float *x[2] = {a, c};
    double w[2] = {3, 1}; // a peer that ran 3× the inner steps counts 3×
    outer_weighted_mean(out, x, w, 2, 4);
    for (int i = 0; i < 4; i++) cr_assert_float_eq(out[i], (3 * a[i] + c[i]) / 4, 1e-6f);
}

Test(outer, groups_pinned_test_vector) {
    // Pinned so that every build on every machine computes the same grouping (ALGORITHMS.md).
    const uint8_t fp[4] = {'l', 'o', 'c', 'o'};
    int g[10];
    int ng = outer_groups(fp, sizeof fp, 7, 10, 2, g);
    cr_assert_eq(ng, 5);
    // Derived independently from the spec by a Python transcription (hashlib + splitmix64).
    int want[10] = {1, 0, 0, 2, 1, 4, 3, 2, 3, 4};
    for (int i = 0; i < 10; i++) cr_assert_eq(g[i], want[i], "member %d: group %d, pinned %d", i, g[i], want[i]);
}

Test(outer, groups_are_balanced_and_change_with_round) {
    const uint8_t fp[4] = {1, 2, 3, 4};
    int g1[11], g2[11], count[5] = {0};
    int ng = outer_groups(fp, 4, 1, 11, 2, g1);
    cr_assert_eq(ng, 5);
    for (int i = 0; i < 11; i++) count[g1[i]]++;
    for (int k = 0; k < 5; k++) cr_assert(count[k] == 2 || count[k] == 3, "group %d has %d members", k, count[k]);
    outer_groups(fp, 4, 2, 11, 2, g2);
    cr_assert(memcmp(g1, g2, sizeof g1) != 0, "rounds 1 and 2 gave the same grouping");
    int one;
    cr_assert_eq(outer_groups(fp, 4, 3, 1, 2, &one), 1);
    cr_assert_eq(one, 0);
}
