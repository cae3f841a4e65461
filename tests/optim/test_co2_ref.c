// The CO2 overlap (ALGORITHMS.md, "CO2") against a float64 reference of its formulas written from the
// text (tests/ref/co2_ref.py), on small vectors over K = 8 rounds.
//
// The C side drives loco's own functions in the order node/outer_run.c's outer_run_train uses with
// `[outer] overlap = on`: at the end of round 0 a peer posts Δ = φ − θ and trains on; at the end of
// round t+1 it takes round t's result (outer_weighted_mean of the posted Δ_j, weights = inner steps;
// for NoLoCo the partners' anchors rebuilt from φ₀ + drift as outer_run.c's collector does), applies
// outer_diloco_step / outer_noloco_step to φ, then outer_co2_carry(θ, φ_new, θ_start), posts
// Δ = φ_new − θ and saves θ_start = θ; after the last round the last result is applied with nothing
// trained (L = 0). Local training is synthetic, standing in for H inner steps: θ ← θ + p with
// p = a·(θ* − θ) + ξ_t, ξ random per round and peer (a = 0: purely random progress; a > 0 makes the
// progress depend on where the round starts, so staleness changes the trajectory of φ).
//
// Cases: DiLoCo with 1 peer and with 3 (Δ̄ their mean), NoLoCo with 1 peer and with a group of 2
// whose anchors differ; gap penalty λ = 1 and 2.5; momentum clip off and on, with c small enough to
// bind on a good fraction of the momentum (b in DiLoCo, in pseudo-gradient units; m in NoLoCo, in
// parameter units per round). After every outer step φ, the momentum and θ (after the carry-over)
// are compared with the reference, as is every posted contribution Δ.
//
// Further checks:
//   - the clip takes effect (the public CO2 code discards the clamp's result): every clipped run
//     keeps |momentum| ≤ c, has values sitting at ±c (at least 10% of them), and its φ differs from
//     the same run with c = 0 by more than 100× the tolerance somewhere;
//   - the first contribution is φ − θ_end(round 0) (against the reference's, on its own);
//   - exactly one round of staleness, straight from loco's functions: changing round t+1's local
//     progress leaves φ and the momentum after the outer step applied at the end of round t+1
//     bit-identical (that step used round t's contributions only) while θ after its carry-over
//     changes, and the next outer step changes; changing round t's progress changes that step;
//   - wrong implementations the reference also writes (staleness 0 or 2, the progress dropped
//     instead of carried, L measured from before the previous carry-over, a zero first contribution,
//     λ missing or in one place only or also on NoLoCo's pull, the clip discarded, no pull, μ off by
//     1e-3) must land outside the tolerance: the comparison can fail.
//
// Tolerance (u = 2^-24, fp32's unit roundoff: one rounding errs by at most u·|result|). The reference
// is float64, so the difference is loco's fp32 rounding alone. For element i after outer step s:
//     |loco − ref| ≤ K_TOL · u · S_s(i),   S_s(i) = Σ_{r ≤ s} M_r(i),   K_TOL = 16,
// where M_r(i) is the largest magnitude, over peers, of anything round r's outer step and the
// training round feeding it touch (θ at the start and end, θ*, p, L, every Δ_j and φ_j, φ and the
// momentum before and after, |g| + μ|b| or NoLoCo's three terms). Per outer step an element sees
// about 12–16 fp32 roundings (progress 3 + 1, the mean 2 per contributor plus the rounded 1/k weight,
// 1/λ as a rounded reciprocal, the step 5, the carry-over 2, Δ 1), each at most u·M_r. Errors
// carried from earlier rounds are not amplified: the progress map contracts θ (factor 1 − a), the
// carry-over and Δ = −L cancel φ's error, the means average, μ < 1, and clipping is 1-Lipschitz — so
// the sum over rounds bounds them. The momentum's memory (η μ/(1 − μ) ≈ 6 for DiLoCo) would exceed
// this only if every rounding erred the same way; the test is deterministic (fixed seeds) and the
// measured worst (printed) sits well inside. The wrong variants miss it by orders of magnitude.
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
#define K_TOL 16.0
#define N 257   // elements per vector
#define K 8     // rounds (and outer steps)
#define PMAX 3  // peers at most
#define H 50.0  // inner steps per round: the weights of the means, as the node passes them
#define T_STALE 2 // the round whose successor's progress the staleness check changes

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
        fprintf(stderr, "\n*** SKIPPED: %s cannot import torch and numpy; the CO2 overlap is NOT checked against "
                "its reference (apt-get install python3-torch python3-numpy) ***\n\n", s_python());
        cr_skip_test("%s cannot import torch: reference check of the CO2 overlap skipped", s_python());
    }
    cr_assert_eq(access("tests/ref/co2_ref.py", R_OK), 0, "tests/ref/co2_ref.py not found: run from the repository root");
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
    cr_assert(p);
    size_t got = fread(p, 1, bytes + 1, f);
    fclose(f);
    cr_assert_eq(got, bytes, "%s: %zu bytes, expected %zu", path, got, bytes);
    return p;
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void s_randn(float *x, size_t n, uint64_t seed, float scale) {
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&r);
}

// ---------------------------------------------------------------------------------------------
// Cases

typedef struct {
    const char *name;
    int noloco;           // 0: DiLoCo (shared anchor, Nesterov); 1: NoLoCo (own anchors, heavy ball)
    int peers;            // DiLoCo: all of them contribute; NoLoCo: one group of all of them
    float lr, mu, pen, clip, a;
    uint64_t seed;
    const char *wrong[10]; // variants the reference writes that must be outside the tolerance; NULL-terminated
} co2_case_t;

// Twins share a seed: the clipped case and its c = 0 counterpart see the same inputs.
static const co2_case_t s_cases[] = {
    // a = 0: purely random progress. Staleness then only shifts when φ is observed, not its values
    // (every Δ is −p either way), so the staleness variants are not listed; the carry-over ones are.
    {"diloco_1p", 0, 1, 0.7f, 0.9f, 1.0f, 0.0f, 0.0f, 11,
     {"progress_dropped", "start_before_carry", "first_zero", "mu_perturbed", NULL}},
    {"diloco_1p_pen", 0, 1, 0.7f, 0.9f, 2.5f, 0.0f, 0.2f, 12,
     {"sync", "stale_by_two", "progress_dropped", "start_before_carry", "first_zero", "no_penalty", "penalty_b_only",
      "mu_perturbed", NULL}},
    {"diloco_1p_pen_clip", 0, 1, 0.7f, 0.9f, 2.5f, 0.006f, 0.2f, 12,
     {"clip_discarded", "sync", "stale_by_two", "progress_dropped", "first_zero", "no_penalty", "penalty_b_only", NULL}},
    {"diloco_3p", 0, 3, 0.7f, 0.9f, 1.0f, 0.0f, 0.2f, 13,
     {"sync", "stale_by_two", "progress_dropped", "start_before_carry", "first_zero", "mu_perturbed", NULL}},
    {"diloco_3p_pen", 0, 3, 0.7f, 0.9f, 2.5f, 0.0f, 0.2f, 14,
     {"sync", "stale_by_two", "no_penalty", "penalty_b_only", "first_zero", NULL}},
    {"diloco_3p_pen_clip", 0, 3, 0.7f, 0.9f, 2.5f, 0.006f, 0.2f, 14,
     {"clip_discarded", "sync", "stale_by_two", "no_penalty", "penalty_b_only", "first_zero", NULL}},
    {"noloco_1p", 1, 1, 0.7f, 0.5f, 1.0f, 0.0f, 0.2f, 21,
     {"sync", "stale_by_two", "progress_dropped", "start_before_carry", "first_zero", "mu_perturbed", NULL}},
    {"noloco_1p_pen", 1, 1, 0.7f, 0.5f, 2.5f, 0.0f, 0.2f, 22, {"sync", "no_penalty", "first_zero", NULL}},
    {"noloco_1p_pen_clip", 1, 1, 0.7f, 0.5f, 2.5f, 0.002f, 0.2f, 22,
     {"clip_discarded", "sync", "no_penalty", "first_zero", NULL}},
    {"noloco_2p", 1, 2, 0.7f, 0.5f, 1.0f, 0.0f, 0.2f, 23,
     {"no_pull", "sync", "stale_by_two", "progress_dropped", "start_before_carry", "first_zero", "mu_perturbed", NULL}},
    {"noloco_2p_pen", 1, 2, 0.7f, 0.5f, 2.5f, 0.0f, 0.2f, 24,
     {"no_pull", "penalty_on_pull", "no_penalty", "sync", "first_zero", NULL}},
    {"noloco_2p_pen_clip", 1, 2, 0.7f, 0.5f, 2.5f, 0.002f, 0.2f, 24,
     {"clip_discarded", "no_pull", "penalty_on_pull", "no_penalty", "sync", NULL}},
};
#define NCASES (sizeof s_cases / sizeof s_cases[0])

typedef struct {
    float base[N];           // φ₀, the run's initial anchor (NoLoCo rebuilds partners' anchors from it)
    float phi0[PMAX][N];     // each peer's anchor at the start (NoLoCo, 2 peers: base + own offset)
    float target[N];         // θ*
    float xi[K][PMAX][N];    // the random part of the progress
} co2_in_t;

// Trajectories, (K, P, N) each, P = the case's peers (packed for the dump).
typedef struct {
    float *phi, *mom, *theta, *delta;
} co2_out_t;

#define AT(s, p, i) (((size_t)(s) * P + (size_t)(p)) * N + (size_t)(i))

static void s_out_alloc(co2_out_t *o, int P) {
    size_t tot = (size_t)K * P * N;
    o->phi = calloc(tot, sizeof(float)), o->mom = calloc(tot, sizeof(float));
    o->theta = calloc(tot, sizeof(float)), o->delta = calloc(tot, sizeof(float));
    cr_assert(o->phi && o->mom && o->theta && o->delta);
}

static void s_out_free(co2_out_t *o) {
    free(o->phi), free(o->mom), free(o->theta), free(o->delta);
}

static void s_inputs(const co2_case_t *c, co2_in_t *in) {
    memset(in, 0, sizeof *in);
    s_randn(in->base, N, c->seed, 0.05f);
    float off[N];
    s_randn(off, N, c->seed * 10 + 1, 0.05f);
    for (int i = 0; i < N; i++) in->target[i] = in->base[i] + off[i];
    for (int p = 0; p < c->peers; p++) {
        memcpy(in->phi0[p], in->base, sizeof in->base);
        if (c->noloco && c->peers > 1) {
            // Differing anchors, as partial averaging leaves them: an offset of a few rounds' drift.
            s_randn(off, N, c->seed * 10 + 2 + (uint64_t)p, 0.02f);
            for (int i = 0; i < N; i++) in->phi0[p][i] += off[i];
        }
    }
    // A direction shared by rounds and peers (so the momentum builds up) plus per-round noise.
    float dir[N], noise[N];
    s_randn(dir, N, c->seed * 10 + 9, 0.005f);
    for (int t = 0; t < K; t++)
        for (int p = 0; p < c->peers; p++) {
            s_randn(noise, N, c->seed * 1000 + (uint64_t)(t * PMAX + p), 0.003f);
            for (int i = 0; i < N; i++) in->xi[t][p][i] = dir[i] + noise[i];
        }
}

// ---------------------------------------------------------------------------------------------
// The node's sequence (node/outer_run.c, outer_run_train with overlap on)

// One round of synthetic local training: θ ← θ + p, p = a·(θ* − θ) + ξ.
static void s_train(float *theta, const float *target, const float *xi, float a) {
    for (int i = 0; i < N; i++) {
        float p = a * (target[i] - theta[i]) + xi[i];
        theta[i] = theta[i] + p;
    }
}

static void s_simulate(const co2_case_t *c, const co2_in_t *in, float clip, co2_out_t *out) {
    const int P = c->peers;
    outer_hparams_t hp = {c->lr, c->mu, c->pen, clip};
    float theta[PMAX][N], start[PMAX][N], phi[PMAX][N], mom[PMAX][N];
    float delta[PMAX][N], drift[PMAX][N]; // what each peer posted for the round in flight
    float dmean[N], pmean[N];
    memcpy(phi, in->phi0, sizeof phi);
    memcpy(theta, in->phi0, sizeof theta);
    memset(mom, 0, sizeof mom);
    for (int r = 0; r <= K; r++) { // r = K: training is over, only the in-flight exchange remains
        if (r < K)
            for (int p = 0; p < P; p++) s_train(theta[p], in->target, in->xi[r][p], c->a);
        if (r > 0) {
            // Round r−1's result, due at the end of round r: every peer applies it, then carries over.
            for (int p = 0; p < P; p++) {
                const float *xs[PMAX];
                double w[PMAX];
                int k = 0;
                // NoLoCo's collector puts our own contribution first; DiLoCo's all-reduce leaves every
                // member with the chunk owner's bytes, so every peer here sums in one order (peer 0's).
                int first = c->noloco ? p : 0;
                xs[k] = delta[first], w[k++] = H;
                for (int j = 0; j < P; j++)
                    if (j != first) xs[k] = delta[j], w[k++] = H;
                outer_weighted_mean(dmean, xs, w, k, N);
                if (c->noloco) {
                    // outer_run.c's collector: our anchor exactly, the partners' rebuilt from φ₀ + drift.
                    float inv = 1.0f / (float)k;
                    for (int i = 0; i < N; i++) {
                        float s = phi[p][i];
                        for (int j = 0; j < P; j++)
                            if (j != p) s += in->base[i] + drift[j][i];
                        pmean[i] = s * inv;
                    }
                    outer_noloco_step(phi[p], mom[p], dmean, pmean, N, &hp);
                } else {
                    outer_diloco_step(phi[p], mom[p], dmean, N, &hp);
                }
                outer_co2_carry(theta[p], phi[p], start[p], N);
                memcpy(&out->phi[AT(r - 1, p, 0)], phi[p], sizeof phi[p]);
                memcpy(&out->mom[AT(r - 1, p, 0)], mom[p], sizeof mom[p]);
                memcpy(&out->theta[AT(r - 1, p, 0)], theta[p], sizeof theta[p]);
            }
        }
        if (r < K)
            for (int p = 0; p < P; p++) {
                // s_post: Δ = φ − θ and the drift φ − φ₀; then θ_start = θ, and round r+1 trains.
                for (int i = 0; i < N; i++) delta[p][i] = phi[p][i] - theta[p][i];
                for (int i = 0; i < N; i++) drift[p][i] = phi[p][i] - in->base[i];
                memcpy(start[p], theta[p], sizeof theta[p]);
                memcpy(&out->delta[AT(r, p, 0)], delta[p], sizeof delta[p]);
            }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison: |got − ref| ≤ K_TOL·u·S element-wise, S = S_s(i) for every peer

typedef struct {
    double max_err;   // largest |got − ref|
    double max_units; // largest |got − ref| / (u·S)
    size_t worst;     // index of the largest units
} cmp_t;

static cmp_t s_cmp(const float *got, const double *ref, const double *S, int P, int rows) {
    cmp_t c = {0, 0, 0};
    for (int s = 0; s < rows; s++)
        for (int p = 0; p < P; p++)
            for (int i = 0; i < N; i++) {
                size_t at = AT(s, p, i);
                double err = fabs((double)got[at] - ref[at]);
                double units = err == 0 ? 0 : err / (U * S[s * N + i]);
                if (err > c.max_err) c.max_err = err;
                if (units > c.max_units || at == 0) c.max_units = units, c.worst = at;
            }
    return c;
}

typedef struct {
    double units[4], err[4]; // φ, momentum, θ, Δ: worst over the cases
} worst_t;

static const char *const s_what[4] = {"φ", "momentum", "θ", "Δ"};

static void s_check(const co2_case_t *c, const char *dir, const co2_out_t *o, const double *S, worst_t *wt) {
    const int P = c->peers;
    size_t tot = (size_t)K * P * N;
    const float *got[4] = {o->phi, o->mom, o->theta, o->delta};
    const char *files[4] = {"ref_phi.f64", "ref_mom.f64", "ref_theta.f64", "ref_delta.f64"};
    for (int q = 0; q < 4; q++) {
        double *ref = s_load(dir, files[q], tot * sizeof(double));
        cmp_t m = s_cmp(got[q], ref, S, P, K);
        size_t w = m.worst;
        int s = (int)(w / ((size_t)P * N)), p = (int)(w / N % (size_t)P), i = (int)(w % N);
        fprintf(stderr, "  %-9s max |err| %.3g, max %5.2f u·S (bound %.0f); worst: step %d peer %d element %d, %.9g vs %.12g\n",
                s_what[q], m.max_err, m.max_units, K_TOL, s, p, i, got[q][w], ref[w]);
        cr_assert(m.max_units <= K_TOL, "%s: %s after outer step %d, peer %d, element %d: loco %.9g, reference %.12g, "
                  "|err| %.3g > %.0f u·S = %.3g", c->name, s_what[q], s, p, i, got[q][w], ref[w], fabs(got[q][w] - ref[w]),
                  K_TOL, K_TOL * U * S[s * N + i]);
        if (m.max_units > wt->units[q]) wt->units[q] = m.max_units;
        if (m.max_err > wt->err[q]) wt->err[q] = m.max_err;
        if (q == 3) {
            // The first contribution on its own: Δ₀ = φ − θ_end(round 0), before any outer step.
            cmp_t f = s_cmp(got[q], ref, S, P, 1);
            fprintf(stderr, "  first contribution Δ₀ vs φ − θ_end(round 0): max |err| %.3g (%.2f u·S)\n", f.max_err,
                    f.max_units);
            cr_assert(f.max_units <= K_TOL, "%s: the first contribution is not φ − θ_end(round 0)", c->name);
        }
        free(ref);
    }
    for (int v = 0; c->wrong[v]; v++) {
        char file[200];
        snprintf(file, sizeof file, "wrong_%s_phi.f64", c->wrong[v]);
        double *wr = s_load(dir, file, tot * sizeof(double));
        cmp_t m = s_cmp(o->phi, wr, S, P, K);
        fprintf(stderr, "    wrong variant %-18s φ differs from loco's by up to %.3g = %.3g× the bound\n", c->wrong[v],
                m.max_err, m.max_units / K_TOL);
        cr_assert(m.max_units > K_TOL, "%s: the wrong variant '%s' is within the tolerance (%.3g× the bound): the "
                  "comparison could not catch it", c->name, c->wrong[v], m.max_units / K_TOL);
        free(wr);
    }
}

// ---------------------------------------------------------------------------------------------

Test(co2_ref, overlap_matches_reference_of_the_formulas, .timeout = 180) {
    s_need_torch();
    char root[64], dir[256];
    strcpy(root, "/tmp/loco-co2-ref-XXXXXX");
    cr_assert(mkdtemp(root), "mkdtemp failed");
    static co2_in_t in[NCASES];
    co2_out_t out[NCASES];
    for (size_t ci = 0; ci < NCASES; ci++) {
        const co2_case_t *c = &s_cases[ci];
        const int P = c->peers;
        s_inputs(c, &in[ci]);
        s_out_alloc(&out[ci], P);
        s_simulate(c, &in[ci], c->clip, &out[ci]);
        snprintf(dir, sizeof dir, "%s/%s", root, c->name);
        cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s", dir);
        char meta[512];
        snprintf(meta, sizeof meta, "kind=%s\nn=%d\nrounds=%d\npeers=%d\nlr=%.17g\nmu=%.17g\npen=%.17g\nclip=%.17g\na=%.17g\n",
                 c->noloco ? "noloco" : "diloco", N, K, P, (double)c->lr, (double)c->mu, (double)c->pen,
                 (double)c->clip, (double)c->a);
        s_dump(dir, "meta.txt", meta, strlen(meta));
        float packed[PMAX * N];
        for (int p = 0; p < P; p++) memcpy(&packed[p * N], in[ci].phi0[p], N * sizeof(float));
        s_dump(dir, "phi0.f32", packed, (size_t)P * N * sizeof(float));
        s_dump(dir, "target.f32", in[ci].target, sizeof in[ci].target);
        float *xi = malloc((size_t)K * P * N * sizeof(float));
        for (int t = 0; t < K; t++)
            for (int p = 0; p < P; p++) memcpy(&xi[AT(t, p, 0)], in[ci].xi[t][p], N * sizeof(float));
        s_dump(dir, "xi.f32", xi, (size_t)K * P * N * sizeof(float));
        free(xi);
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tests/ref/co2_ref.py %s", s_python(), root);
    fflush(stdout), fflush(stderr);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "tests/ref/co2_ref.py failed (status %d)", rc);

    worst_t wt = {{0}, {0}};
    for (size_t ci = 0; ci < NCASES; ci++) {
        const co2_case_t *c = &s_cases[ci];
        const int P = c->peers;
        snprintf(dir, sizeof dir, "%s/%s", root, c->name);
        double *mag = s_load(dir, "ref_mag.f64", (size_t)K * N * sizeof(double));
        double S[K * N];
        for (int i = 0; i < N; i++) {
            double acc = 0;
            for (int s = 0; s < K; s++) S[s * N + i] = acc += mag[s * N + i];
        }
        free(mag);
        fprintf(stderr, "%s (%s, %d peer%s, η %.2g, μ %.2g, λ %.2g, c %.3g, a %.2g):\n", c->name,
                c->noloco ? "NoLoCo" : "DiLoCo", P, P > 1 ? "s" : "", c->lr, c->mu, c->pen, c->clip, c->a);
        s_check(c, dir, &out[ci], S, &wt);
        if (c->clip > 0) {
            // The clip takes effect: momentum within ±c, a good fraction pinned at ±c, and φ far from
            // the same run without the clip.
            size_t tot = (size_t)K * P * N, at = 0;
            for (size_t j = 0; j < tot; j++) {
                float m = out[ci].mom[j];
                cr_assert_leq(fabsf(m), c->clip, "%s: momentum value %zu = %g outside ±%g", c->name, j, m, c->clip);
                at += fabsf(m) == c->clip;
            }
            co2_out_t free_run;
            s_out_alloc(&free_run, P);
            s_simulate(c, &in[ci], 0.0f, &free_run);
            double far = 0, far_err = 0;
            for (int s = 0; s < K; s++)
                for (int p = 0; p < P; p++)
                    for (int i = 0; i < N; i++) {
                        double e = fabs((double)out[ci].phi[AT(s, p, i)] - free_run.phi[AT(s, p, i)]);
                        far = fmax(far, e / (K_TOL * U * S[s * N + i]));
                        far_err = fmax(far_err, e);
                    }
            s_out_free(&free_run);
            fprintf(stderr, "  clip: %zu of %zu momentum values (%.0f%%) sit at ±c; φ differs from the unclipped run "
                    "by up to %.3g = %.3g× the tolerance\n", at, tot, 100.0 * (double)at / (double)tot, far_err, far);
            cr_assert(at > 0 && at >= tot / 10, "%s: the clip binds on only %zu of %zu momentum values", c->name, at, tot);
            cr_assert(far > 100, "%s: the clipped run is within %.3g× the tolerance of the unclipped one", c->name, far);
        }
    }
    fprintf(stderr, "CO2 overlap vs reference, worst over %zu cases (bound %.0f u·S):", NCASES, K_TOL);
    for (int q = 0; q < 4; q++) fprintf(stderr, " %s %.3g (%.2f u·S)%s", s_what[q], wt.err[q], wt.units[q], q < 3 ? "," : "\n");
    for (size_t ci = 0; ci < NCASES; ci++) s_out_free(&out[ci]);
    const char *keep = getenv("LOCO_REF_KEEP"); // debugging: keep the dumps for a rerun of the script
    if (keep && *keep == '1') fprintf(stderr, "dumps kept in %s\n", root);
    else nftw(root, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

// One round of staleness, from loco's functions alone (no reference needed): the outer step applied
// at the end of round t+1 must not see round t+1's progress, and must see round t's.
Test(co2_ref, outer_step_uses_the_previous_rounds_contributions_only) {
    for (size_t ci = 0; ci < NCASES; ci++) {
        const co2_case_t *c = &s_cases[ci];
        const int P = c->peers;
        size_t row = (size_t)P * N * sizeof(float);
        static co2_in_t in, later, now;
        s_inputs(c, &in);
        co2_out_t o, ol, on;
        s_out_alloc(&o, P), s_out_alloc(&ol, P), s_out_alloc(&on, P);
        s_simulate(c, &in, c->clip, &o);
        // Change round T+1's progress (every peer) ...
        later = in;
        float bump[N];
        s_randn(bump, N, 777, 0.01f);
        for (int p = 0; p < P; p++)
            for (int i = 0; i < N; i++) later.xi[T_STALE + 1][p][i] += bump[i];
        s_simulate(c, &later, c->clip, &ol);
        // ... and, separately, round T's.
        now = in;
        for (int p = 0; p < P; p++)
            for (int i = 0; i < N; i++) now.xi[T_STALE][p][i] += bump[i];
        s_simulate(c, &now, c->clip, &on);
        for (int s = 0; s <= T_STALE; s++) {
            cr_assert_eq(memcmp(&o.phi[AT(s, 0, 0)], &ol.phi[AT(s, 0, 0)], row), 0,
                         "%s: φ after outer step %d (applied at the end of round %d) depends on round %d's progress",
                         c->name, s, s + 1, T_STALE + 1);
            cr_assert_eq(memcmp(&o.mom[AT(s, 0, 0)], &ol.mom[AT(s, 0, 0)], row), 0,
                         "%s: the momentum after outer step %d depends on round %d's progress", c->name, s, T_STALE + 1);
        }
        // The carry-over at the end of round T+1 brings round T+1's progress onto the new anchor ...
        cr_assert_neq(memcmp(&o.theta[AT(T_STALE, 0, 0)], &ol.theta[AT(T_STALE, 0, 0)], row), 0,
                      "%s: θ after the carry-over at the end of round %d ignores that round's progress", c->name, T_STALE + 1);
        // ... and round T+1's contributions reach the next outer step.
        cr_assert_neq(memcmp(&o.phi[AT(T_STALE + 1, 0, 0)], &ol.phi[AT(T_STALE + 1, 0, 0)], row), 0,
                      "%s: round %d's progress never reaches φ", c->name, T_STALE + 1);
        // Round T's progress is what the step at the end of round T+1 applies; earlier steps never saw it.
        for (int s = 0; s < T_STALE; s++)
            cr_assert_eq(memcmp(&o.phi[AT(s, 0, 0)], &on.phi[AT(s, 0, 0)], row), 0,
                         "%s: φ after outer step %d depends on the later round %d", c->name, s, T_STALE);
        cr_assert_neq(memcmp(&o.phi[AT(T_STALE, 0, 0)], &on.phi[AT(T_STALE, 0, 0)], row), 0,
                      "%s: the outer step at the end of round %d ignores round %d's contributions", c->name, T_STALE + 1,
                      T_STALE);
        s_out_free(&o), s_out_free(&ol), s_out_free(&on);
    }
}
