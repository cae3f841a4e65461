// The outer updates (optim/outer.h) against a PyTorch reference of ALGORITHMS.md's formulas
// (tests/ref/outer_ref.py), over several rounds with the state carried:
//   - DiLoCo: outer_diloco_step vs torch.optim.SGD(lr=η, momentum=μ, nesterov=True) fed grad = Δ̄/λ,
//     with λ = 1 and λ = 1.5; with a momentum clip c > 0 that takes effect, vs the formula of
//     outer.h written out in torch (which the script first checks against SGD where c = 0);
//   - NoLoCo: outer_noloco_step for 4 peers with differing anchors in groups of 1, 2 and 4 (from
//     outer_groups), the group means taken with outer_weighted_mean as the node does, vs the
//     heavy-ball formula written out in torch with torch's own means;
//   - outer_weighted_mean vs numpy's Σ w_j x_j / Σ w_j in float64.
// The C side writes inputs, the script writes the reference and deliberately wrong variants (μ off
// by 1e-3, heavy ball instead of Nesterov, λ in one place only, the clip discarded as in the public
// CO2 code, no NoLoCo pull, unweighted mean); each variant must land outside the tolerance, which
// shows the comparison can fail.
//
// Tolerances (u = 2^-24, fp32's unit roundoff: one rounding errs by at most u·|result|):
//   Outer steps: |loco − ref| ≤ K·u·S element-wise, K = 8, where S is the sum over the rounds so
//   far of that round's largest operand magnitude for the element (φ, b or m before and after,
//   |g| + μ|b| for DiLoCo, and for NoLoCo every group member's φ_j and Δ_j). A round is about six fp32 operations per
//   element (plus the group means) on each side; the two sides round differently only where torch
//   fuses a multiply-add, divides by λ where loco multiplies by 1/λ, or sums a mean in another
//   order, and errors carried from earlier rounds add up (μ < 1 and the means do not amplify them),
//   hence a budget of a few roundings per round, summed over rounds.
//   Weighted mean (float64 reference): |loco − ref| ≤ (k + 2)·u·Σ_j |w_j x_j| / Σ w: the standard
//   bound of a k-term recursive fp32 sum plus the rounding of each normalised weight and product.
// Every comparison prints its worst element, in absolute terms and in units of u·S.
#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/rng.h"
#include "optim/outer.h"

#define U 5.9604644775390625e-08 // 2^-24
#define K_STEP 8.0

// ---------------------------------------------------------------------------------------------
// Plumbing: temp dirs, raw dumps, the script

static const char *s_python(void) {
    const char *py = getenv("PYTHON");
    return py && *py ? py : "/usr/bin/python3";
}

static void s_need_torch(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch, numpy' >/dev/null 2>&1", s_python());
    if (system(cmd) != 0) {
        fprintf(stderr, "\n*** SKIPPED: %s cannot import torch and numpy; the outer updates are NOT checked "
                "against PyTorch (apt-get install python3-torch python3-numpy) ***\n\n", s_python());
        cr_skip_test("%s cannot import torch: PyTorch reference check of the outer updates skipped", s_python());
    }
    cr_assert_eq(access("tests/ref/outer_ref.py", R_OK), 0, "tests/ref/outer_ref.py not found: run from the repository root");
}

static void s_mkroot(char *root) {
    strcpy(root, "/tmp/loco-outer-ref-XXXXXX");
    cr_assert(mkdtemp(root), "mkdtemp failed");
}

static void s_mkcase(char *dir, size_t dirlen, const char *root, const char *name) {
    snprintf(dir, dirlen, "%s/%s", root, name);
    cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s", dir);
}

// The build refuses big-endian hosts (model/data.c): arrays written as they lie in memory are LE.
static void s_dump(const char *dir, const char *file, const void *p, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(p, 1, bytes, f), bytes, "short write to %s", path);
    cr_assert_eq(fclose(f), 0);
}

// Reads a file of exactly `bytes` bytes (caller frees).
static void *s_load(const char *dir, const char *file, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "the reference did not write %s", path);
    void *p = malloc(bytes + 1);
    size_t got = fread(p, 1, bytes + 1, f);
    fclose(f);
    cr_assert_eq(got, bytes, "%s: %zu bytes, expected %zu", path, got, bytes);
    return p;
}

static void s_meta(const char *dir, const char *text) {
    s_dump(dir, "meta.txt", text, strlen(text));
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void s_run_ref(const char *root) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tests/ref/outer_ref.py %s", s_python(), root);
    fflush(stdout);
    fflush(stderr);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "tests/ref/outer_ref.py failed (status %d)", rc);
}

static void s_cleanup(const char *root) {
    const char *keep = getenv("LOCO_REF_KEEP"); // debugging: keep the dumps for a rerun of the script
    if (keep && *keep == '1') fprintf(stderr, "dumps kept in %s\n", root);
    else nftw(root, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void s_randn(float *x, size_t n, uint64_t seed, float scale) {
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&r);
}

static double s_max3(double a, double b, double c) {
    double m = a > b ? a : b;
    return m > c ? m : c;
}

// ---------------------------------------------------------------------------------------------
// Comparison: |got − ref| ≤ k·u·scale element-wise

typedef struct {
    double max_err;   // largest |got − ref|
    double max_units; // largest |got − ref| / (u·scale)
    double ratio;     // largest |got − ref| / tolerance (> 1: outside)
    size_t worst;     // index of the largest ratio
} cmp_t;

static cmp_t s_cmp(const float *got, const double *ref, const double *scale, size_t n, double k) {
    cmp_t c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        double unit = U * scale[i];
        double units = err == 0 ? 0 : (unit > 0 ? err / unit : INFINITY);
        double ratio = units / k;
        if (err > c.max_err) c.max_err = err;
        if (units > c.max_units) c.max_units = units;
        if (ratio > c.ratio || i == 0) c.ratio = ratio, c.worst = i;
    }
    return c;
}

static void s_report(const char *what, const cmp_t *c, const float *got, const double *ref, const double *scale) {
    fprintf(stderr, "  %-44s max |err| %.3g, max %.2f u·S (bound %.0f), worst element %zu: %.9g vs %.9g (S %.3g)\n",
            what, c->max_err, c->max_units, K_STEP, c->worst, got[c->worst], ref[c->worst], scale[c->worst]);
}

static double *s_widen(const float *x, size_t n) {
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// Asserts loco's trajectory (rows × n) within the bound of the reference's, and every named wrong
// variant outside it somewhere.
static void s_check_trajectory(const char *dir, const char *name, const char *what, const float *loco,
                               const char *ref_file, const double *scale, size_t rows, size_t n,
                               const char *const *wrong, double *worst_units) {
    size_t tot = rows * n;
    float *ref = s_load(dir, ref_file, tot * sizeof(float));
    double *refd = s_widen(ref, tot);
    cmp_t c = s_cmp(loco, refd, scale, tot, K_STEP);
    char label[200];
    snprintf(label, sizeof label, "%s %s (%zu rounds):", name, what, rows);
    s_report(label, &c, loco, refd, scale);
    if (c.max_units > *worst_units) *worst_units = c.max_units;
    cr_assert(c.ratio <= 1.0, "%s: %s of round %zu element %zu: loco %.9g, reference %.9g, |err| %.3g > %.0f u·S = %.3g",
              name, what, c.worst / n, c.worst % n, loco[c.worst], refd[c.worst], fabs(loco[c.worst] - refd[c.worst]),
              K_STEP, K_STEP * U * scale[c.worst]);
    for (int v = 0; wrong && wrong[v]; v++) {
        char file[200];
        snprintf(file, sizeof file, "wrong_%s_phi.f32", wrong[v]);
        float *w = s_load(dir, file, tot * sizeof(float));
        double *wd = s_widen(w, tot);
        cmp_t cw = s_cmp(loco, wd, scale, tot, K_STEP);
        fprintf(stderr, "    wrong variant %-18s differs by up to %.3g = %.3g× the bound\n", wrong[v], cw.max_err, cw.ratio);
        cr_assert(cw.ratio > 1.0, "%s: the wrong variant '%s' is within the tolerance (%.3g× the bound): the comparison "
                  "could not catch it", name, wrong[v], cw.ratio);
        free(w), free(wd);
    }
    free(ref), free(refd);
}

// ---------------------------------------------------------------------------------------------
// DiLoCo

#define DN 1001
#define DSTEPS 8

typedef struct {
    const char *name;
    float lr, mu, pen, clip;
    uint64_t seed;
    const char *wrong[5]; // NULL-terminated
} diloco_case_t;

static const diloco_case_t s_diloco[] = {
    {"diloco_plain", 0.7f, 0.9f, 1.0f, 0.0f, 101, {"heavy_ball", "mu_perturbed", NULL}},
    // λ = 1.5 is not a power of two, so Δ̄/λ (torch) and Δ̄·(1/λ) (loco) can round differently.
    {"diloco_penalty", 0.7f, 0.9f, 1.5f, 0.0f, 102, {"heavy_ball", "mu_perturbed", "no_penalty", "penalty_in_b_only"}},
    {"diloco_penalty_clip", 0.7f, 0.9f, 1.5f, 0.01f, 103, {"clip_discarded", "mu_perturbed", NULL}},
    {"diloco_other_lr_mu", 1.0f, 0.5f, 1.0f, 0.0f, 104, {"heavy_ball", "mu_perturbed", NULL}},
};

typedef struct {
    float phi0[DN], deltas[DSTEPS][DN], phi[DSTEPS][DN], b[DSTEPS][DN];
} diloco_run_t;

Test(outer_ref, diloco_matches_torch_sgd_nesterov, .timeout = 120) {
    s_need_torch();
    char root[64], dir[256];
    s_mkroot(root);
    size_t nc = sizeof s_diloco / sizeof s_diloco[0];
    diloco_run_t *runs = calloc(nc, sizeof *runs);
    for (size_t c = 0; c < nc; c++) {
        const diloco_case_t *dc = &s_diloco[c];
        diloco_run_t *r = &runs[c];
        s_mkcase(dir, sizeof dir, root, dc->name);
        s_randn(r->phi0, DN, dc->seed, 0.05f);
        for (int s = 0; s < DSTEPS; s++) {
            // Pseudo-gradients with a persistent direction (momentum builds up) plus noise.
            float noise[DN];
            s_randn(noise, DN, dc->seed * 100 + (uint64_t)s, 0.01f);
            for (int i = 0; i < DN; i++) r->deltas[s][i] = 0.1f * r->phi0[i] + noise[i];
        }
        static float phi[DN], b[DN];
        memcpy(phi, r->phi0, sizeof phi);
        memset(b, 0, sizeof b);
        outer_hparams_t hp = {dc->lr, dc->mu, dc->pen, dc->clip};
        for (int s = 0; s < DSTEPS; s++) {
            outer_diloco_step(phi, b, r->deltas[s], DN, &hp);
            memcpy(r->phi[s], phi, sizeof phi);
            memcpy(r->b[s], b, sizeof b);
        }
        char meta[512];
        snprintf(meta, sizeof meta, "kind=diloco\nn=%d\nsteps=%d\nlr=%.9g\nmu=%.9g\npen=%.9g\nclip=%.9g\n", DN, DSTEPS,
                 dc->lr, dc->mu, dc->pen, dc->clip);
        s_meta(dir, meta);
        s_dump(dir, "phi0.f32", r->phi0, sizeof r->phi0);
        s_dump(dir, "deltas.f32", r->deltas, sizeof r->deltas);
    }
    s_run_ref(root);

    double worst_phi = 0, worst_b = 0;
    for (size_t c = 0; c < nc; c++) {
        const diloco_case_t *dc = &s_diloco[c];
        diloco_run_t *r = &runs[c];
        snprintf(dir, sizeof dir, "%s/%s", root, dc->name);
        float *ref_phi = s_load(dir, "ref_phi.f32", sizeof r->phi), *ref_b = s_load(dir, "ref_b.f32", sizeof r->b);
        // S: the running sum over rounds of the round's largest operand (from the reference).
        double *scale = malloc(DSTEPS * DN * sizeof *scale);
        for (int i = 0; i < DN; i++) {
            double acc = 0, prev_phi = fabs(r->phi0[i]), prev_b = 0;
            for (int s = 0; s < DSTEPS; s++) {
                double g = fabs(r->deltas[s][i] / dc->pen), phi = fabs(ref_phi[s * DN + i]), b = fabs(ref_b[s * DN + i]);
                // g + μb, the Nesterov direction, is the largest intermediate (up to ~2 |g|).
                acc += fmax(s_max3(prev_phi, phi, g + dc->mu * b), fmax(prev_b, b));
                scale[s * DN + i] = acc;
                prev_phi = phi, prev_b = b;
            }
        }
        fprintf(stderr, "%s (η %.2g, μ %.2g, λ %.2g, c %.2g):\n", dc->name, dc->lr, dc->mu, dc->pen, dc->clip);
        s_check_trajectory(dir, dc->name, "φ", &r->phi[0][0], "ref_phi.f32", scale, DSTEPS, DN, dc->wrong, &worst_phi);
        s_check_trajectory(dir, dc->name, "b", &r->b[0][0], "ref_b.f32", scale, DSTEPS, DN, NULL, &worst_b);
        if (dc->clip > 0) {
            // The clip must take effect (unlike the public CO2 code) without pinning everything.
            size_t at = 0;
            for (int s = 0; s < DSTEPS; s++)
                for (int i = 0; i < DN; i++) {
                    cr_assert_leq(fabsf(r->b[s][i]), dc->clip, "b[%d][%d] = %g outside the clip", s, i, r->b[s][i]);
                    at += fabsf(r->b[s][i]) == dc->clip;
                }
            fprintf(stderr, "    %zu of %d momentum values sit at ±c\n", at, DSTEPS * DN);
            cr_assert(at > DN / 10 && at < (size_t)DSTEPS * DN * 9 / 10, "the clip acts on %zu of %d values", at, DSTEPS * DN);
        }
        free(ref_phi), free(ref_b), free(scale);
    }
    fprintf(stderr, "DiLoCo: worst |err| %.2f u·S for φ, %.2f u·S for b (bound %.0f)\n", worst_phi, worst_b, K_STEP);
    free(runs);
    s_cleanup(root);
}

// ---------------------------------------------------------------------------------------------
// NoLoCo

#define NN 513
#define NPEERS 4
#define NROUNDS 7

typedef struct {
    const char *name;
    float lr, mu, pen, clip;
    uint64_t seed;
    const char *wrong[5]; // NULL-terminated
} noloco_case_t;

static const noloco_case_t s_noloco[] = {
    {"noloco_plain", 0.7f, 0.5f, 1.0f, 0.0f, 201, {"mu_perturbed", "no_pull", NULL}},
    {"noloco_penalty", 0.7f, 0.5f, 1.5f, 0.0f, 202, {"mu_perturbed", "no_pull", "penalty_on_pull", NULL}},
    {"noloco_penalty_clip", 0.7f, 0.5f, 1.5f, 0.01f, 203, {"mu_perturbed", "no_pull", "penalty_on_pull", "clip_discarded"}},
};

// Group size asked of outer_groups in each round: with 4 peers, groups of 2, 1 and 4.
static const int s_group_size[NROUNDS] = {2, 1, 4, 2, 4, 1, 2};

typedef struct {
    float phi0[NPEERS][NN], deltas[NROUNDS][NPEERS][NN], phi[NROUNDS][NPEERS][NN], m[NROUNDS][NPEERS][NN];
    int32_t groups[NROUNDS][NPEERS];
} noloco_run_t;

Test(outer_ref, noloco_matches_heavy_ball_formula, .timeout = 120) {
    s_need_torch();
    char root[64], dir[256];
    s_mkroot(root);
    size_t nc = sizeof s_noloco / sizeof s_noloco[0];
    noloco_run_t *runs = calloc(nc, sizeof *runs);
    const uint8_t fp[] = "outer-ref-fingerprint";
    for (size_t c = 0; c < nc; c++) {
        const noloco_case_t *nc_ = &s_noloco[c];
        noloco_run_t *r = &runs[c];
        s_mkcase(dir, sizeof dir, root, nc_->name);
        // Differing anchors: a common base plus a per-peer offset of the size of a few rounds' drift.
        float base[NN];
        s_randn(base, NN, nc_->seed, 0.05f);
        for (int p = 0; p < NPEERS; p++) {
            s_randn(r->phi0[p], NN, nc_->seed * 10 + (uint64_t)p, 0.02f);
            for (int i = 0; i < NN; i++) r->phi0[p][i] += base[i];
        }
        int seen[NPEERS + 1] = {0};
        for (int t = 0; t < NROUNDS; t++) {
            int g = outer_groups(fp, sizeof fp, (uint64_t)t, NPEERS, s_group_size[t], r->groups[t]);
            for (int k = 0; k < g; k++) {
                int size = 0;
                for (int p = 0; p < NPEERS; p++) size += r->groups[t][p] == k;
                seen[size]++;
            }
            for (int p = 0; p < NPEERS; p++) s_randn(r->deltas[t][p], NN, nc_->seed * 1000 + (uint64_t)(t * NPEERS + p), 0.01f);
        }
        cr_assert(seen[1] && seen[2] && seen[4], "groups of 1, 2 and 4 expected (saw %d, %d, %d)", seen[1], seen[2], seen[4]);

        static float phi[NPEERS][NN], m[NPEERS][NN], start[NPEERS][NN], dmean[NN], pmean[NN];
        memcpy(phi, r->phi0, sizeof phi);
        memset(m, 0, sizeof m);
        outer_hparams_t hp = {nc_->lr, nc_->mu, nc_->pen, nc_->clip};
        for (int t = 0; t < NROUNDS; t++) {
            memcpy(start, phi, sizeof start); // partners' anchors as they were sent, before anyone updates
            for (int p = 0; p < NPEERS; p++) {
                const float *ds[NPEERS], *ps[NPEERS];
                double w[NPEERS];
                int k = 0;
                for (int j = 0; j < NPEERS; j++)
                    if (r->groups[t][j] == r->groups[t][p]) ds[k] = r->deltas[t][j], ps[k] = start[j], w[k++] = 1.0;
                outer_weighted_mean(dmean, ds, w, k, NN);
                outer_weighted_mean(pmean, ps, w, k, NN);
                outer_noloco_step(phi[p], m[p], dmean, pmean, NN, &hp);
            }
            memcpy(r->phi[t], phi, sizeof phi);
            memcpy(r->m[t], m, sizeof m);
        }
        char meta[512];
        snprintf(meta, sizeof meta, "kind=noloco\nn=%d\nrounds=%d\npeers=%d\nlr=%.9g\nmu=%.9g\npen=%.9g\nclip=%.9g\n", NN,
                 NROUNDS, NPEERS, nc_->lr, nc_->mu, nc_->pen, nc_->clip);
        s_meta(dir, meta);
        s_dump(dir, "phi0.f32", r->phi0, sizeof r->phi0);
        s_dump(dir, "deltas.f32", r->deltas, sizeof r->deltas);
        s_dump(dir, "groups.i32", r->groups, sizeof r->groups);
    }
    s_run_ref(root);

    double worst_phi = 0, worst_m = 0;
    for (size_t c = 0; c < nc; c++) {
        const noloco_case_t *nc_ = &s_noloco[c];
        noloco_run_t *r = &runs[c];
        snprintf(dir, sizeof dir, "%s/%s", root, nc_->name);
        float *ref_phi = s_load(dir, "ref_phi.f32", sizeof r->phi), *ref_m = s_load(dir, "ref_m.f32", sizeof r->m);
        // S per (round, element): running sum over rounds of the largest magnitude any peer's update
        // of that element touched (anchors before and after, Δ_j, m before and after); the means
        // mix peers, so one scale serves every peer.
        size_t per_round = (size_t)NPEERS * NN;
        double *scale = malloc(NROUNDS * per_round * sizeof *scale);
        for (int i = 0; i < NN; i++) {
            double acc = 0;
            for (int t = 0; t < NROUNDS; t++) {
                double big = 0;
                for (int p = 0; p < NPEERS; p++) {
                    double before_phi = t ? ref_phi[(t - 1) * per_round + p * NN + i] : r->phi0[p][i];
                    double before_m = t ? ref_m[(t - 1) * per_round + p * NN + i] : 0;
                    big = fmax(big, s_max3(fabs(before_phi), fabs(ref_phi[t * per_round + p * NN + i]), fabs(r->deltas[t][p][i])));
                    big = fmax(big, fmax(fabs(before_m), fabs(ref_m[t * per_round + p * NN + i])));
                }
                acc += big;
                for (int p = 0; p < NPEERS; p++) scale[t * per_round + p * NN + i] = acc;
            }
        }
        fprintf(stderr, "%s (η %.2g, μ %.2g, λ %.2g, c %.2g; 4 peers, group sizes 2 1 4 2 4 1 2):\n", nc_->name, nc_->lr,
                nc_->mu, nc_->pen, nc_->clip);
        s_check_trajectory(dir, nc_->name, "φ", &r->phi[0][0][0], "ref_phi.f32", scale, NROUNDS, per_round, nc_->wrong,
                           &worst_phi);
        s_check_trajectory(dir, nc_->name, "m", &r->m[0][0][0], "ref_m.f32", scale, NROUNDS, per_round, NULL, &worst_m);
        // The anchors really differ (so the pull term is exercised) and stay apart after groups of one.
        cr_assert_neq(memcmp(r->phi[NROUNDS - 1][0], r->phi[NROUNDS - 1][1], NN * sizeof(float)), 0);
        if (nc_->clip > 0) {
            size_t at = 0, tot = (size_t)NROUNDS * per_round;
            const float *mm = &r->m[0][0][0];
            for (size_t i = 0; i < tot; i++) {
                cr_assert_leq(fabsf(mm[i]), nc_->clip, "m value %zu = %g outside the clip", i, mm[i]);
                at += fabsf(mm[i]) == nc_->clip;
            }
            fprintf(stderr, "    %zu of %zu momentum values sit at ±c\n", at, tot);
            cr_assert(at > tot / 20 && at < tot * 9 / 10, "the clip acts on %zu of %zu values", at, tot);
        }
        free(ref_phi), free(ref_m), free(scale);
    }
    fprintf(stderr, "NoLoCo: worst |err| %.2f u·S for φ, %.2f u·S for m (bound %.0f)\n", worst_phi, worst_m, K_STEP);
    free(runs);
    s_cleanup(root);
}

// ---------------------------------------------------------------------------------------------
// Weighted mean

#define WN 1001
#define WMAXK 5

// Weights are inner steps actually run (pacing): unequal, not powers of two.
static const double s_weights[WMAXK] = {500, 437, 12.5, 499, 3};
static const int s_wk[] = {1, 2, 3, 5};

Test(outer_ref, weighted_mean_matches_numpy, .timeout = 120) {
    s_need_torch();
    char root[64], dir[256];
    s_mkroot(root);
    size_t nc = sizeof s_wk / sizeof s_wk[0];
    static float x[sizeof s_wk / sizeof s_wk[0]][WMAXK][WN], out[sizeof s_wk / sizeof s_wk[0]][WN];
    for (size_t c = 0; c < nc; c++) {
        int k = s_wk[c];
        char name[32];
        snprintf(name, sizeof name, "wmean_k%d", k);
        s_mkcase(dir, sizeof dir, root, name);
        const float *xs[WMAXK];
        for (int j = 0; j < k; j++) {
            // Contributions with a shared part and a per-peer part, as pseudo-gradients are.
            float common[WN];
            s_randn(common, WN, 300, 0.01f);
            s_randn(x[c][j], WN, 300 + 10 * c + (uint64_t)j + 1, 0.01f);
            for (int i = 0; i < WN; i++) x[c][j][i] += common[i];
            xs[j] = x[c][j];
        }
        outer_weighted_mean(out[c], xs, s_weights, k, WN);
        char meta[128];
        snprintf(meta, sizeof meta, "kind=wmean\nn=%d\nk=%d\n", WN, k);
        s_meta(dir, meta);
        s_dump(dir, "x.f32", x[c], (size_t)k * WN * sizeof(float));
        s_dump(dir, "w.f64", s_weights, (size_t)k * sizeof(double));
    }
    s_run_ref(root);

    double worst = 0;
    for (size_t c = 0; c < nc; c++) {
        int k = s_wk[c];
        char name[32];
        snprintf(name, sizeof name, "wmean_k%d", k);
        snprintf(dir, sizeof dir, "%s/%s", root, name);
        double *ref = s_load(dir, "ref_out.f64", WN * sizeof(double));
        double *wrong = s_load(dir, "wrong_unweighted_out.f64", WN * sizeof(double));
        double wsum = 0, scale[WN];
        for (int j = 0; j < k; j++) wsum += s_weights[j];
        for (int i = 0; i < WN; i++) {
            scale[i] = 0;
            for (int j = 0; j < k; j++) scale[i] += fabs(s_weights[j] / wsum * x[c][j][i]);
        }
        double kb = k + 2;
        cmp_t cm = s_cmp(out[c], ref, scale, WN, kb);
        fprintf(stderr, "  %s: max |err| %.3g, max %.2f u·Σ|w x|/Σw (bound %.0f), worst element %zu: %.9g vs %.12g\n", name,
                cm.max_err, cm.max_units, kb, cm.worst, out[c][cm.worst], ref[cm.worst]);
        if (cm.max_units > worst) worst = cm.max_units;
        cr_assert(cm.ratio <= 1.0, "%s element %zu: loco %.9g, numpy %.12g, |err| %.3g > %.0f u·Σ|w x|/Σw", name, cm.worst,
                  out[c][cm.worst], ref[cm.worst], fabs(out[c][cm.worst] - ref[cm.worst]), kb);
        if (k > 1) {
            cmp_t cw = s_cmp(out[c], wrong, scale, WN, kb);
            fprintf(stderr, "    wrong variant unweighted differs by up to %.3g = %.3g× the bound\n", cw.max_err, cw.ratio);
            cr_assert(cw.ratio > 1.0, "%s: the unweighted mean is within the tolerance: the comparison could not catch it", name);
        }
        free(ref), free(wrong);
    }
    fprintf(stderr, "weighted mean: worst |err| %.2f u·Σ|w x|/Σw\n", worst);
    s_cleanup(root);
}
