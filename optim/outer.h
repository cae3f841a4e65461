// Outer optimizers (ALGORITHMS.md): DiLoCo's Nesterov step over the averaged pseudo-gradient,
// NoLoCo's heavy-ball partial averaging, CO2's staleness controls, and NoLoCo's deterministic group
// assignment. All arithmetic is fp32 in a fixed order (the build uses -ffp-contract=off), so every
// peer that applies the same inputs ends with the same bytes.
#ifndef LOCO_OPTIM_OUTER_H
#define LOCO_OPTIM_OUTER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float lr;           // η
    float momentum;     // μ
    float gap_penalty;  // λ ≥ 1 (CO2); 1 = none
    float clip;         // c: momentum clipped element-wise to [−c, c]; 0 = off
} outer_hparams_t;

// out (n) = Σ_k w_k · x_k / Σ_k w_k, summed in k order. Weights are inner steps actually run.
void outer_weighted_mean(float *out, const float *const *x, const double *w, int k, size_t n);

// DiLoCo: g = Δ̄/λ; b ← μ b + g; b ← clip(b); φ ← φ − η (g + μ b).
// delta_mean (n) is the averaged pseudo-gradient Σ w_j (φ − θ_j) / Σ w_j. The momentum clip is in
// units of the pseudo-gradient (parameter units per round).
void outer_diloco_step(float *phi, float *b, const float *delta_mean, size_t n, const outer_hparams_t *hp);

// NoLoCo heavy-ball: m ← μ m − (η/λ)·mean_j Δ_j + η·(mean_j φ_j − φ); m ← clip(m); φ ← φ + m.
// delta_mean = mean over the group of Δ_j = φ_j − θ_j; phi_mean = mean over the group of φ_j
// (both include this peer). A group of one has phi_mean = φ: the pull term is zero. The clip is in
// units of m, i.e. of a parameter change per round.
void outer_noloco_step(float *phi, float *m, const float *delta_mean, const float *phi_mean, size_t n,
                       const outer_hparams_t *hp);

// CO2 carry-over (overlap on), at the end of round t+1 once round t's outer step gave phi_new:
// theta ← phi_new + (theta − theta_start), the new anchor plus the local progress of round t+1
// (theta_start: θ when round t+1 began, after the previous carry-over). The next contribution is
// then Δ = phi_new − theta = −(progress).
void outer_co2_carry(float *theta, const float *phi_new, const float *theta_start, size_t n);

// NoLoCo groups for round t over N members indexed in sorted-id order (the caller sorts the live
// member ids; index k is the k-th smallest). splitmix64 is seeded
// with the first 8 bytes (LE) of SHA-256(fingerprint ‖ t as 8 LE bytes); a Fisher–Yates shuffle
// with unbiased bounded draws permutes 0..N−1; with g = max(1, ⌊N/group_size⌋) groups, member
// perm[k] goes to group k mod g. group_of (N) receives each member's group. Returns g.
int outer_groups(const uint8_t *fingerprint, size_t fplen, uint64_t t, int N, int group_size, int *group_of);

#endif
