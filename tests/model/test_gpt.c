// The GPT model against itself, in pure C: layer-range chaining equals the whole model, gradients
// equal central finite differences, the fast attention kernels equal the reference ones, and the
// results are bit-identical with 1 and 2 threads. (tests/model/test_reference.c checks it
// against PyTorch.)
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gpt.h"
#include "model/kernels.h"
#include "model/rng.h"
#include "optim/adamw.h"
#include "tests/model/wide_init.h"

static gpt_t *s_model(const gpt_config_t *cfg, int B, int T, uint64_t seed) {
    char err[256];
    gpt_t *m = gpt_new(cfg, B, T, err, sizeof err);
    cr_assert(m, "gpt_new: %s", err);
    s_wide_init(m, seed);
    return m;
}

static void s_tokens(int32_t *x, size_t n, int V, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)rng_below(&r, (uint64_t)V);
}

static void s_randn(float *x, size_t n, float std, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(&r);
}

// Checks |got − ref| ≤ atol + rtol·|ref| element-wise; prints the worst element either way and
// returns the largest absolute error.
static double s_expect_close(const char *label, const float *got, const float *ref, size_t n, double atol, double rtol) {
    double max_err = 0.0, worst_ratio = 0.0;
    size_t worst = 0, imax = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        double bound = atol + rtol * fabs((double)ref[i]);
        double ratio = bound > 0 ? e / bound : (e > 0 ? INFINITY : 0.0);
        if (!(e <= max_err)) { max_err = e; imax = i; }   // also catches NaN
        if (!(ratio <= worst_ratio)) { worst_ratio = ratio; worst = i; }
    }
    int ok = worst_ratio <= 1.0;
    printf("%s %-40s n=%-6zu max_abs=%.3e at %zu (got %.9g ref %.9g)  err/bound max %.3f at %zu\n",
           ok ? "ok  " : "FAIL", label, n, max_err, imax, n ? got[imax] : 0.0f, n ? ref[imax] : 0.0f, worst_ratio, worst);
    fflush(stdout);
    cr_expect(ok, "%s: element %zu is %.9g, reference %.9g (|err| %.3e > %.3e + %.3e·|ref|)", label, worst,
              got[worst], ref[worst], fabs((double)got[worst] - (double)ref[worst]), atol, rtol);
    return max_err;
}

static float s_maxabs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

// ---------------------------------------------------------------------------------------------
// Layer ranges: the model split into stages [b0,b1), [b1,b2), ... chained through x_in / dx_in
// equals the whole model.

static void s_check_chain(const gpt_t *whole, const float *whole_logits, const int *bounds, int nstages,
                          const int32_t *inputs, const int32_t *targets, int B, int T) {
    const gpt_config_t *cfg = &whole->cfg;
    int L = cfg->layers, C = cfg->d_model, V = cfg->vocab;
    size_t BTC = (size_t)B * T * C, np = whole->num_params;
    char label[128], split[64] = "";
    for (int s = 0; s <= nstages; s++)
        snprintf(split + strlen(split), sizeof split - strlen(split), s ? ",%d" : "%d", bounds[s]);

    gpt_t *st[8];
    float *x[8], *dx[8];
    cr_assert(nstages <= 8);
    for (int s = 0; s < nstages; s++) {
        st[s] = s_model(cfg, B, T, 0);
        memcpy(st[s]->params, whole->params, np * sizeof(float));
        gpt_zero_grad(st[s]);
        x[s] = aligned_alloc(64, (BTC * sizeof(float) + 63) / 64 * 64);
        dx[s] = aligned_alloc(64, (BTC * sizeof(float) + 63) / 64 * 64);
    }
    float loss = 0.0f;
    for (int s = 0; s < nstages; s++) {
        // Each stage gets its input as a copy, as it would from the network.
        loss = gpt_forward_range(st[s], bounds[s], bounds[s + 1], inputs, s ? x[s - 1] : NULL,
                                 bounds[s + 1] == L ? targets : NULL, B, T);
        if (bounds[s + 1] < L) {
            cr_assert_float_eq(loss, 0.0f, 0.0f, "a range without the head returns loss 0");
            memcpy(x[s], gpt_range_output(st[s]), BTC * sizeof(float));
        }
    }
    snprintf(label, sizeof label, "split %s: loss", split);
    s_expect_close(label, &loss, &whole->loss, 1, 0.0, 0.0);
    snprintf(label, sizeof label, "split %s: logits", split);
    s_expect_close(label, st[nstages - 1]->logits, whole_logits, (size_t)B * T * V, 0.0, 0.0);
    for (int s = nstages - 1; s >= 0; s--)
        gpt_backward_range(st[s], s < nstages - 1 ? dx[s + 1] : NULL, s ? dx[s] : NULL);

    // Each stage's gradients stay inside its own parameters (wte is shared by the first and the
    // last stage); their sum equals the whole model's gradients. Everything but wte goes through
    // the same kernels in the same order, so it must match bit for bit; wte sums the embedding and
    // head contributions in a different order.
    float *sum = calloc(np, sizeof(float));
    for (int s = 0; s < nstages; s++) {
        size_t own_begin, own_end;
        gpt_layer_span(cfg, bounds[s], bounds[s + 1], &own_begin, &own_end);
        size_t wte_end = (size_t)V * C, emb_end = wte_end + (size_t)cfg->seq_len * C;
        for (size_t i = 0; i < np; i++) {
            int own = (i >= own_begin && i < own_end) || (bounds[s] == 0 && i < emb_end) ||
                      (bounds[s + 1] == L && (i >= np - 2 * (size_t)C || i < wte_end));
            if (!own) cr_assert(st[s]->grads[i] == 0.0f, "split %s: stage %d wrote gradient element %zu outside its range", split, s, i);
            sum[i] += st[s]->grads[i];
        }
    }
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        snprintf(label, sizeof label, "split %s: grad %s", split, t.name);
        double atol = i == 0 ? 1e-6 * s_maxabs(whole->grads, t.numel) : 0.0;
        s_expect_close(label, sum + t.offset, whole->grads + t.offset, t.numel, atol, i == 0 ? 1e-6 : 0.0);
    }
    free(sum);
    for (int s = 0; s < nstages; s++) {
        gpt_destroy(&st[s]);
        free(x[s]);
        free(dx[s]);
    }
}

Test(gpt, layer_ranges_chain_to_the_whole_model, .timeout = 60) {
    gpt_config_t cfg = {4, 32, 2, 12, 50};
    int B = 2, T = 11; // T < seq_len: strides of a short batch
    gpt_t *whole = s_model(&cfg, B, T, 21);
    gpt_set_threads(whole, 2);
    size_t bt = (size_t)B * T;
    int32_t *inputs = malloc(bt * sizeof(int32_t)), *targets = malloc(bt * sizeof(int32_t));
    s_tokens(inputs, bt, cfg.vocab, 1);
    s_tokens(targets, bt, cfg.vocab, 2);
    gpt_zero_grad(whole);
    gpt_forward(whole, inputs, targets, B, T);
    float *logits = malloc(bt * cfg.vocab * sizeof(float));
    memcpy(logits, whole->logits, bt * cfg.vocab * sizeof(float));
    gpt_backward(whole);

    for (int k = 1; k < cfg.layers; k++) {
        int b[3] = {0, k, cfg.layers};
        s_check_chain(whole, logits, b, 2, inputs, targets, B, T);
    }
    int three[4] = {0, 1, 3, 4}, four[5] = {0, 1, 2, 3, 4};
    s_check_chain(whole, logits, three, 3, inputs, targets, B, T);
    s_check_chain(whole, logits, four, 4, inputs, targets, B, T);
    free(logits);
    free(inputs);
    free(targets);
    gpt_destroy(&whole);
}

// ---------------------------------------------------------------------------------------------
// Finite differences. Cross-entropy over a GELU/LayerNorm/softmax network is smooth, so central
// differences (error O(h²)) are accurate to the fp32 rounding of the loss: with the loss near 3,
// one ulp is 2.4e-7 and the difference quotient carries ~ulp·few/2h of noise.

Test(gpt, gradients_match_finite_differences, .timeout = 60) {
    gpt_config_t cfg = {2, 8, 2, 6, 13};
    int B = 2, T = 5;
    gpt_t *m = s_model(&cfg, B, T, 31);
    gpt_set_threads(m, 1);
    size_t bt = (size_t)B * T;
    int32_t inputs[10], targets[10];
    s_tokens(inputs, bt, cfg.vocab, 3);
    s_tokens(targets, bt, cfg.vocab, 4);
    gpt_zero_grad(m);
    gpt_forward(m, inputs, targets, B, T);
    gpt_backward(m);
    float *an = malloc(m->num_params * sizeof(float));
    memcpy(an, m->grads, m->num_params * sizeof(float));

    const float h = 1e-2f;
    const double atol = 3e-4, rtol = 1e-2; // ~10x the worst error measured (see the printout)
    rng_t r;
    rng_seed(&r, 5);
    double worst_abs = 0.0;
    for (int i = 0; i < gpt_num_tensors(&cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(&cfg, i, &t);
        enum { SAMPLES = 8 };
        float fd[SAMPLES], ref[SAMPLES];
        int ns = t.numel < SAMPLES ? (int)t.numel : SAMPLES;
        for (int s = 0; s < ns; s++) {
            size_t k = t.offset + (t.numel <= SAMPLES ? (size_t)s : (size_t)rng_below(&r, t.numel));
            if (i == 1) k = t.offset + (size_t)rng_below(&r, (uint64_t)T * cfg.d_model); // wpe rows < T are used
            float p0 = m->params[k];
            m->params[k] = p0 + h;
            double lp = gpt_forward(m, inputs, targets, B, T);
            m->params[k] = p0 - h;
            double lm = gpt_forward(m, inputs, targets, B, T);
            m->params[k] = p0;
            fd[s] = (float)((lp - lm) / (2.0 * h));
            ref[s] = an[k];
        }
        char label[96];
        snprintf(label, sizeof label, "finite differences %s", t.name);
        double e = s_expect_close(label, fd, ref, (size_t)ns, atol, rtol);
        worst_abs = e > worst_abs ? e : worst_abs;
    }
    printf("finite differences: worst |fd − backward| = %.3e (h = %g)\n", worst_abs, h);
    // A wrong gradient is usually wrong by far more than the tolerance; make sure the check is
    // not vacuous by seeing that the sampled gradients are well above it.
    cr_expect(s_maxabs(an, m->num_params) > 100 * atol, "gradients too small for the check to mean anything");
    free(an);
    gpt_destroy(&m);
}

// ---------------------------------------------------------------------------------------------
// Fast attention (sgemm per head, vectorised exp) against the plain-loop reference.

Test(gpt, fast_attention_matches_reference, .timeout = 60) {
    static const struct { int B, T, C, NH; } shapes[] = {{2, 1, 24, 3}, {2, 7, 24, 3}, {3, 16, 32, 4}, {1, 33, 16, 1}};
    omp_set_num_threads(2);
    int threads = omp_get_max_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int B = shapes[si].B, T = shapes[si].T, C = shapes[si].C, NH = shapes[si].NH;
        size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
        float *qkv = malloc(nqkv * sizeof(float)), *dout = malloc(nout * sizeof(float));
        float *o1 = malloc(nout * sizeof(float)), *o2 = malloc(nout * sizeof(float));
        float *a1 = malloc(natt * sizeof(float)), *a2 = malloc(natt * sizeof(float));
        float *d1 = malloc(nqkv * sizeof(float)), *d2 = malloc(nqkv * sizeof(float));
        float *scratch = malloc((size_t)threads * 2 * T * T * sizeof(float));
        float *datt = malloc(natt * sizeof(float));
        // Scores of O(several) so the softmax is far from uniform.
        s_randn(qkv, nqkv, 1.5f, 40 + si);
        s_randn(dout, nout, 1.0f, 50 + si);
        k_attention_forward(o1, a1, qkv, B, T, C, NH);
        k_attention_forward_ref(o2, a2, qkv, B, T, C, NH);
        memset(d1, 0xff, nqkv * sizeof(float)); // NaN: the fast kernel must overwrite dqkv
        k_attention_backward(d1, dout, qkv, a1, scratch, B, T, C, NH);
        k_attention_backward_ref(d2, datt, dout, qkv, a2, B, T, C, NH);

        char label[96];
        snprintf(label, sizeof label, "attention B%d T%d C%d NH%d: out", B, T, C, NH);
        s_expect_close(label, o1, o2, nout, 1e-6 * s_maxabs(o2, nout), 1e-5);
        snprintf(label, sizeof label, "attention B%d T%d C%d NH%d: probabilities", B, T, C, NH);
        s_expect_close(label, a1, a2, natt, 1e-7, 1e-5);
        snprintf(label, sizeof label, "attention B%d T%d C%d NH%d: dqkv", B, T, C, NH);
        s_expect_close(label, d1, d2, nqkv, 1e-6 * s_maxabs(d2, nqkv), 1e-4);
        // Causal rows: zero above the diagonal, summing to 1.
        for (size_t row = 0; row < (size_t)B * NH * T; row++) {
            int i = (int)(row % (size_t)T);
            double sum = 0;
            for (int j = 0; j < T; j++) {
                float p = a1[row * T + j];
                if (j > i) cr_assert(p == 0.0f, "attention row %zu has weight %g at future position %d", row, p, j);
                sum += p;
            }
            cr_assert(fabs(sum - 1.0) < 1e-5, "attention row %zu sums to %.9f", row, sum);
        }
        free(qkv); free(dout); free(o1); free(o2); free(a1); free(a2); free(d1); free(d2);
        free(scratch); free(datt);
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism: the kernels promise the same bits at any thread count (gpt.h, kernels.h). Odd sizes
// so that the row and channel partitions have tails, and big enough that OpenBLAS threads too.

typedef struct {
    float loss, norm;
    float *logits, *grads, *params, *range_out;
} run_result_t;

static void s_run(run_result_t *res, int threads, const gpt_config_t *cfg, int B, int T,
                  const int32_t *inputs, const int32_t *targets) {
    omp_set_num_threads(2); // gpt_new sizes the per-thread scratch for at least this many
    gpt_t *m = s_model(cfg, B, T, 61);
    gpt_set_threads(m, threads);
    cr_assert_eq(m->threads, threads, "gpt_set_threads(%d) gave %d threads", threads, m->threads);
    cr_assert_eq(omp_get_max_threads(), threads);
    size_t np = m->num_params, bt = (size_t)B * T;
    gpt_zero_grad(m);
    res->loss = gpt_forward(m, inputs, targets, B, T);
    res->logits = malloc(bt * cfg->vocab * sizeof(float));
    memcpy(res->logits, m->logits, bt * cfg->vocab * sizeof(float));
    gpt_backward(m);
    res->grads = malloc(np * sizeof(float));
    memcpy(res->grads, m->grads, np * sizeof(float));
    // One optimizer step, which has its own reductions (the grad norm).
    uint8_t *mask = calloc(np, 1);
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        memset(mask + t.offset, t.decay, t.numel);
    }
    optim_adamw_t *opt = optim_adamw_new(np, mask, (optim_adamw_hparams_t){0.9f, 0.95f, 1e-8f, 0.1f});
    res->norm = optim_clip_grad_norm(m->grads, np, 1.0f);
    optim_adamw_update(opt, m->params, m->grads, 1e-3f);
    res->params = malloc(np * sizeof(float));
    memcpy(res->params, m->params, np * sizeof(float));
    // A range that stops before the head, on a smaller batch.
    gpt_forward_range(m, 0, 1, inputs, NULL, NULL, B - 1, T);
    res->range_out = malloc((size_t)(B - 1) * T * cfg->d_model * sizeof(float));
    memcpy(res->range_out, gpt_range_output(m), (size_t)(B - 1) * T * cfg->d_model * sizeof(float));
    optim_adamw_destroy(&opt);
    free(mask);
    gpt_destroy(&m);
}

static void s_expect_same_bits(const char *what, const float *a, const float *b, size_t n) {
    size_t diff = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            if (first == n) first = i;
            diff++;
        }
    printf("%s %-10s %zu elements, %zu differ between 1 and 2 threads\n", diff ? "FAIL" : "ok  ", what, n, diff);
    cr_expect_eq(diff, 0, "%s: %zu of %zu elements differ between 1 and 2 threads (first at %zu: %.9g vs %.9g)",
                 what, diff, n, first, a[first], b[first]);
}

Test(gpt, same_bits_with_one_and_two_threads, .timeout = 60) {
    gpt_config_t cfg = {2, 80, 5, 40, 97};
    int B = 3, T = 37;
    size_t bt = (size_t)B * T;
    int32_t *inputs = malloc(bt * sizeof(int32_t)), *targets = malloc(bt * sizeof(int32_t));
    s_tokens(inputs, bt, cfg.vocab, 7);
    s_tokens(targets, bt, cfg.vocab, 8);
    run_result_t r1, r2;
    s_run(&r1, 1, &cfg, B, T, inputs, targets);
    s_run(&r2, 2, &cfg, B, T, inputs, targets);
    size_t np = gpt_num_params(&cfg);
    s_expect_same_bits("loss", &r1.loss, &r2.loss, 1);
    s_expect_same_bits("logits", r1.logits, r2.logits, bt * cfg.vocab);
    s_expect_same_bits("grads", r1.grads, r2.grads, np);
    s_expect_same_bits("grad norm", &r1.norm, &r2.norm, 1);
    s_expect_same_bits("params", r1.params, r2.params, np);
    s_expect_same_bits("range out", r1.range_out, r2.range_out, (size_t)(B - 1) * T * cfg.d_model);
    run_result_t *rs[2] = {&r1, &r2};
    for (int i = 0; i < 2; i++) {
        free(rs[i]->logits);
        free(rs[i]->grads);
        free(rs[i]->params);
        free(rs[i]->range_out);
    }
    free(inputs);
    free(targets);
}

// Two models in one process (a trainer and an evaluator, pipeline stages): each runs with its own
// thread count, whatever OpenMP's global setting is when it runs. The per-thread attention scratch
// is sized when a model is created; running a model with more threads than that must not happen
// (it would write past the scratch).
Test(gpt, models_keep_their_own_thread_count, .timeout = 60) {
    gpt_config_t cfg = {1, 32, 4, 16, 40};
    int B = 2, T = 16;
    size_t bt = (size_t)B * T;
    int32_t inputs[32], targets[32];
    s_tokens(inputs, bt, cfg.vocab, 9);
    s_tokens(targets, bt, cfg.vocab, 10);
    omp_set_num_threads(1);  // as left by an earlier model's gpt_set_threads(m, 1)
    gpt_t *a = s_model(&cfg, B, T, 71);
    gpt_set_threads(a, 1);
    gpt_t *b = s_model(&cfg, B, T, 71);
    gpt_set_threads(b, 2);
    int want = omp_get_num_procs() >= 2 ? 2 : 1;
    cr_expect_eq(b->threads, want, "a model created while OpenMP was set to 1 thread got %d threads, asked for 2", b->threads);
    omp_set_num_threads(4);  // anything else in the process may change the global setting
    gpt_zero_grad(a);
    gpt_zero_grad(b);
    float la = gpt_forward(a, inputs, targets, B, T);
    gpt_backward(a);
    float lb = gpt_forward(b, inputs, targets, B, T);
    gpt_backward(b);
    cr_expect(la == lb, "loss %.9g with 1 thread, %.9g with 2", la, lb);
    cr_expect(memcmp(a->grads, b->grads, a->num_params * sizeof(float)) == 0, "gradients differ between the two models");
    gpt_destroy(&a);
    gpt_destroy(&b);
}
