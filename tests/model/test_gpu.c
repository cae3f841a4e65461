// The GPU backend (model/gpt_cuda.h) against the CPU model (model/gpt.h, optim/adamw.h), TF32 off.
// Without a GPU, or in a build without CUDA, every test reports itself skipped (never passed).
//
// Tolerances (fp32 on both sides, different summation orders; CPU and GPU exp/tanh differ by ulps):
//   logits            max |gpu − cpu| ≤ 1e-4 · max |cpu| + 1e-6
//   loss              |gpu − cpu| ≤ 1e-5 · cpu + 1e-6
//   each gradient     per tensor, max |gpu − cpu| ≤ 1e-3 · max |cpu over the tensor| + 1e-8
//   AdamW kernel      bit-identical to optim_adamw_update for identical inputs; grad-norm and
//                     clipping within 1e-6 relative
//   5 AdamW steps     loss at each step within 1e-4 relative; ‖θgpu − θcpu‖ ≤ 1e-2 · ‖θcpu − θ0‖
//                     (Adam turns ulp-sized gradient differences of near-zero gradients into
//                     lr-sized update differences, so single elements are bounded by 2·lr·steps)
//   loss curve        40 steps, each loss within 2e-3 relative, and the loss falls
//   range execution   layer ranges give bit-identical block gradients to the whole model
#include <criterion/criterion.h>

#ifndef LOCO_CUDA

#define SKIP_NO_CUDA(name) \
    Test(gpu, name) { cr_skip_test("built without CUDA: make CUDA=1 builds the GPU backend and these tests"); }
SKIP_NO_CUDA(forward_backward_match_cpu)
SKIP_NO_CUDA(adamw_and_clip_match_cpu)
SKIP_NO_CUDA(five_adamw_steps_match_cpu)
SKIP_NO_CUDA(loss_curve_matches_cpu)
SKIP_NO_CUDA(layer_ranges_match_whole_model)
SKIP_NO_CUDA(state_moves_between_backends)
SKIP_NO_CUDA(checkpoint_resumes_across_backends)
SKIP_NO_CUDA(tf32_stays_close)

#else

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gpt.h"
#include "model/gpt_cuda.h"
#include "model/data.h"
#include "model/rng.h"
#include "node/checkpoint.h"
#include "node/config.h"
#include "node/trainer.h"
#include "optim/adamw.h"

static void s_need_gpu(void) {
    char err[512];
    if (gpt_cuda_available(0, err, sizeof err) != 0) cr_skip_test("no GPU: %s", err);
}

typedef struct {
    gpt_config_t cfg;
    int B, T;
} tcase_t;

// Small shapes that exercise the edges: C not a multiple of 32, T below seq_len, one head,
// vocabularies that are not multiples of the logits padding.
static const tcase_t CASES[] = {
    {{2, 64, 4, 16, 97}, 3, 16},
    {{1, 48, 3, 9, 50}, 2, 7},
    {{3, 32, 1, 33, 256}, 4, 33},
    {{2, 128, 8, 64, 500}, 2, 64},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

static const gpt_cuda_adamw_hparams_t HP = {0.9f, 0.95f, 1e-8f, 0.1f};

// Fills a batch: random tokens, or, with pattern, a learnable sequence (each next token a function
// of the current one) so that loss curves fall.
static void s_batch(rng_t *r, int32_t *inp, int32_t *tgt, int B, int T, int V, int pattern) {
    for (int b = 0; b < B; b++) {
        int32_t x = (int32_t)rng_below(r, (uint64_t)V);
        for (int t = 0; t < T; t++) {
            int32_t next = pattern ? (int32_t)((x * 5 + 3) % V) : (int32_t)rng_below(r, (uint64_t)V);
            inp[b * T + t] = x;
            tgt[b * T + t] = next;
            x = next;
        }
    }
}

// The last s_close's worst |got − ref| and max |ref|, for the figures logged on success (--verbose).
static double s_last_worst, s_last_maxref;

// max |got − ref| ≤ rtol · max |ref| + atol; prints the worst element otherwise (or the first NaN).
static int s_close(const char *what, const float *got, const float *ref, size_t n, double rtol, double atol) {
    double maxref = 0.0, worst = -1.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
        if (isnan(got[i]) || isnan(ref[i])) {
            cr_log_error("%s: NaN at element %zu (gpu %g, cpu %g)", what, i, got[i], ref[i]);
            return 0;
        }
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    double tol = rtol * maxref + atol;
    s_last_worst = worst;
    s_last_maxref = maxref;
    if (n && worst > tol) {
        cr_log_error("%s: worst element %zu of %zu: gpu %.9g cpu %.9g, |diff| %.3g > tolerance %.3g (max |cpu| %.3g)",
                     what, wi, n, got[wi], ref[wi], worst, tol, maxref);
        return 0;
    }
    return 1;
}

static gpt_cuda_t *s_gpu_new(const gpt_config_t *cfg, int B, int T, int tf32) {
    char err[512];
    gpt_cuda_t *g = gpt_cuda_new(cfg, B, T, 0, tf32, HP, err, sizeof err);
    cr_assert_not_null(g, "gpt_cuda_new: %s", err);
    return g;
}

static gpt_t *s_cpu_new(const gpt_config_t *cfg, int B, int T) {
    char err[512];
    gpt_t *c = gpt_new(cfg, B, T, err, sizeof err);
    cr_assert_not_null(c, "gpt_new: %s", err);
    gpt_set_threads(c, 1);
    return c;
}

static optim_adamw_t *s_cpu_opt(const gpt_config_t *cfg) {
    size_t n = gpt_num_params(cfg);
    uint8_t *mask = malloc(n);
    cr_assert_not_null(mask);
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        memset(mask + t.offset, t.decay, t.numel);
    }
    optim_adamw_hparams_t hp = {HP.beta1, HP.beta2, HP.eps, HP.weight_decay};
    optim_adamw_t *o = optim_adamw_new(n, mask, hp);
    free(mask);
    cr_assert_not_null(o);
    return o;
}

#define GPU_OK(g, call) cr_assert_eq((call), 0, "%s failed: %s", #call, gpt_cuda_last_error(g) ? gpt_cuda_last_error(g) : "?")

// Every gradient tensor, by name.
// Logs (info) the worst tensor: max |gpu − cpu| relative to that tensor's max |cpu|.
static int s_grads_close(const gpt_config_t *cfg, const float *got, const float *ref, double rtol, const char *ctx) {
    int ok = 1;
    double worst_rel = 0.0, worst_abs = 0.0;
    char worst_name[64] = "-";
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        char what[160];
        snprintf(what, sizeof what, "%s: grad %s", ctx, t.name);
        ok &= s_close(what, got + t.offset, ref + t.offset, t.numel, rtol, 1e-8);
        double rel = s_last_maxref > 0.0 ? s_last_worst / s_last_maxref : s_last_worst;
        if (rel > worst_rel) {
            worst_rel = rel;
            worst_abs = s_last_worst;
            snprintf(worst_name, sizeof worst_name, "%s", t.name);
        }
    }
    cr_log_info("%s: grads: worst tensor %s, max |gpu - cpu| %.3g = %.3g of its max |cpu| (tolerance %.0e)", ctx,
                worst_name, worst_abs, worst_rel, rtol);
    return ok;
}

Test(gpu, forward_backward_match_cpu, .timeout = 120) {
    s_need_gpu();
    for (int k = 0; k < NCASES; k++) {
        const tcase_t *tc = &CASES[k];
        const gpt_config_t *cfg = &tc->cfg;
        int B = tc->B, T = tc->T, V = cfg->vocab;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "L%d C%d NH%d T%d V%d B%d", cfg->layers, cfg->d_model, cfg->heads, T, V, B);
        gpt_t *c = s_cpu_new(cfg, B, T);
        gpt_cuda_t *g = s_gpu_new(cfg, B, T, 0);
        gpt_init_params(c, 42 + (uint64_t)k);
        GPU_OK(g, gpt_cuda_init_params(g, 42 + (uint64_t)k));
        size_t n = c->num_params;
        float *buf = malloc(n * sizeof(float));
        cr_assert_not_null(buf);
        GPU_OK(g, gpt_cuda_params_download(g, buf, 0, n));
        cr_assert(memcmp(buf, c->params, n * sizeof(float)) == 0, "%s: initial parameters differ from the CPU's", ctx);

        rng_t r;
        rng_seed(&r, 7 + (uint64_t)k);
        int32_t *inp = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
        s_batch(&r, inp, tgt, B, T, V, 0);

        // Logits: a forward without targets leaves them in place on both backends.
        gpt_forward(c, inp, NULL, B, T);
        GPU_OK(g, gpt_cuda_forward(g, inp, NULL, B, T));
        size_t nl = (size_t)B * T * V;
        float *logits = malloc(nl * sizeof(float));
        GPU_OK(g, gpt_cuda_logits_download(g, logits));
        char what[160];
        snprintf(what, sizeof what, "%s: logits", ctx);
        int ok = s_close(what, logits, c->logits, nl, 1e-4, 1e-6);
        cr_log_info("%s: logits max |gpu - cpu| %.3g (max |cpu| %.3g, tolerance %.3g)", ctx, s_last_worst,
                    s_last_maxref, 1e-4 * s_last_maxref + 1e-6);

        float lc = gpt_forward(c, inp, tgt, B, T);
        GPU_OK(g, gpt_cuda_forward(g, inp, tgt, B, T));
        float lg = gpt_cuda_loss(g);
        cr_log_info("%s: loss gpu %.9g cpu %.9g, |diff| %.3g", ctx, lg, lc, fabs((double)lg - lc));
        if (!(fabsf(lg - lc) <= 1e-5f * lc + 1e-6f)) {
            cr_log_error("%s: loss gpu %.9g cpu %.9g", ctx, lg, lc);
            ok = 0;
        }
        gpt_zero_grad(c);
        gpt_backward(c);
        GPU_OK(g, gpt_cuda_zero_grad(g));
        GPU_OK(g, gpt_cuda_backward(g));
        GPU_OK(g, gpt_cuda_grads_download(g, buf, 0, n));
        ok &= s_grads_close(cfg, buf, c->grads, 1e-3, ctx);

        // Backward accumulates (+=) like the CPU: a second pass without zeroing doubles the grads.
        gpt_forward(c, inp, tgt, B, T);
        gpt_backward(c);
        GPU_OK(g, gpt_cuda_forward(g, inp, tgt, B, T));
        GPU_OK(g, gpt_cuda_backward(g));
        GPU_OK(g, gpt_cuda_grads_download(g, buf, 0, n));
        snprintf(ctx + strlen(ctx), sizeof ctx - strlen(ctx), " (accumulated)");
        ok &= s_grads_close(cfg, buf, c->grads, 1e-3, ctx);

        free(inp);
        free(tgt);
        free(logits);
        free(buf);
        gpt_cuda_destroy(&g);
        gpt_destroy(&c);
        cr_assert(ok, "GPU and CPU differ beyond tolerance (see the errors above)");
    }
}

Test(gpu, adamw_and_clip_match_cpu, .timeout = 60) {
    s_need_gpu();
    const gpt_config_t cfg = {2, 64, 4, 16, 97};
    size_t n = gpt_num_params(&cfg);
    gpt_cuda_t *g = s_gpu_new(&cfg, 1, 16, 0);
    optim_adamw_t *o = s_cpu_opt(&cfg);
    float *p = malloc(n * sizeof(float)), *gr = malloc(n * sizeof(float)), *buf = malloc(n * sizeof(float));
    float *m1 = malloc(n * sizeof(float)), *m2 = malloc(n * sizeof(float));
    rng_t r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < n; i++) {
        p[i] = rng_normal(&r) * 0.05f;
        gr[i] = rng_normal(&r) * 0.01f;
        o->m[i] = rng_normal(&r) * 0.001f;
        o->v[i] = rng_uniform(&r) * 1e-4f;
    }
    o->step = 7;
    GPU_OK(g, gpt_cuda_params_upload(g, p, 0, n));
    GPU_OK(g, gpt_cuda_adamw_upload(g, o->m, o->v, 7));

    // Clipping: the norm is ≈ 0.01·sqrt(n) ≫ 1, so max_norm = 1 scales.
    GPU_OK(g, gpt_cuda_grads_upload(g, gr, 0, n));
    GPU_OK(g, gpt_cuda_clip_grad_norm(g, 1.0f));
    float ng = gpt_cuda_grad_norm(g);
    float nc = optim_clip_grad_norm(gr, n, 1.0f);
    cr_assert(fabsf(ng - nc) <= 1e-6f * nc, "grad norm gpu %.9g cpu %.9g", ng, nc);
    GPU_OK(g, gpt_cuda_grads_download(g, buf, 0, n));
    cr_assert(s_close("clipped grads", buf, gr, n, 1e-6, 0.0));
    // Identical inputs from here on: the GPU's clipped grads go to both optimizers.
    memcpy(gr, buf, n * sizeof(float));

    const float lrs[3] = {1e-3f, 3e-4f, 2e-3f};
    for (int s = 0; s < 3; s++) {
        optim_adamw_update(o, p, gr, lrs[s]);
        GPU_OK(g, gpt_cuda_adamw_update(g, lrs[s]));
    }
    uint64_t step = 0;
    GPU_OK(g, gpt_cuda_params_download(g, buf, 0, n));
    GPU_OK(g, gpt_cuda_adamw_download(g, m1, m2, &step));
    cr_assert_eq(step, o->step);
    size_t diff_p = 0, diff_m = 0, first = n;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&buf[i], &p[i], 4) != 0) {
            diff_p++;
            if (first == n) first = i;
        }
        if (memcmp(&m1[i], &o->m[i], 4) != 0 || memcmp(&m2[i], &o->v[i], 4) != 0) diff_m++;
    }
    cr_assert(diff_p == 0 && diff_m == 0,
              "AdamW is not bit-identical: %zu params, %zu moments differ (first param %zu: gpu %.9g cpu %.9g)",
              diff_p, diff_m, first, first < n ? buf[first] : 0.0f, first < n ? p[first] : 0.0f);

    // Without clipping (norm below max_norm) the gradients are untouched.
    GPU_OK(g, gpt_cuda_grads_upload(g, gr, 0, n));
    GPU_OK(g, gpt_cuda_clip_grad_norm(g, 1e9f));
    GPU_OK(g, gpt_cuda_grads_download(g, buf, 0, n));
    cr_assert(memcmp(buf, gr, n * sizeof(float)) == 0, "clip_grad_norm changed gradients below max_norm");

    free(p);
    free(gr);
    free(buf);
    free(m1);
    free(m2);
    optim_adamw_destroy(&o);
    gpt_cuda_destroy(&g);
}

// One training step on each backend, as node/trainer.c does it.
static float s_cpu_step(gpt_t *c, optim_adamw_t *o, const int32_t *inp, const int32_t *tgt, int B, int T, float lr) {
    gpt_zero_grad(c);
    float loss = gpt_forward(c, inp, tgt, B, T);
    gpt_backward(c);
    optim_clip_grad_norm(c->grads, c->num_params, 1.0f);
    optim_adamw_update(o, c->params, c->grads, lr);
    return loss;
}

static float s_gpu_step(gpt_cuda_t *g, const int32_t *inp, const int32_t *tgt, int B, int T, float lr) {
    GPU_OK(g, gpt_cuda_zero_grad(g));
    GPU_OK(g, gpt_cuda_forward(g, inp, tgt, B, T));
    GPU_OK(g, gpt_cuda_backward(g));
    GPU_OK(g, gpt_cuda_clip_grad_norm(g, 1.0f));
    GPU_OK(g, gpt_cuda_adamw_update(g, lr));
    return gpt_cuda_loss(g);
}

// ‖got − ref‖ ≤ frac · ‖ref − start‖, and every element within bound.
static int s_trajectory_close(const char *what, const float *got, const float *ref, const float *start, size_t n,
                              double frac, double bound) {
    double dd = 0.0, moved = 0.0, worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i], mv = (double)ref[i] - start[i];
        if (isnan(got[i])) {
            cr_log_error("%s: NaN at %zu", what, i);
            return 0;
        }
        dd += d * d;
        moved += mv * mv;
        if (fabs(d) > worst) {
            worst = fabs(d);
            wi = i;
        }
    }
    cr_log_info("%s: |gpu - cpu| = %.3g vs |cpu - start| = %.3g; worst element %.3g (bound %.3g)", what, sqrt(dd),
                sqrt(moved), worst, bound);
    if (sqrt(dd) > frac * sqrt(moved) || worst > bound) {
        cr_log_error("%s: |gpu - cpu| = %.3g vs |cpu - start| = %.3g (limit %.0e of it); worst element %zu: gpu %.9g "
                     "cpu %.9g (bound %.3g)", what, sqrt(dd), sqrt(moved), frac, wi, got[wi], ref[wi], bound);
        return 0;
    }
    return 1;
}

Test(gpu, five_adamw_steps_match_cpu, .timeout = 120) {
    s_need_gpu();
    for (int k = 0; k < NCASES; k++) {
        const tcase_t *tc = &CASES[k];
        const gpt_config_t *cfg = &tc->cfg;
        int B = tc->B, T = tc->T;
        gpt_t *c = s_cpu_new(cfg, B, T);
        gpt_cuda_t *g = s_gpu_new(cfg, B, T, 0);
        optim_adamw_t *o = s_cpu_opt(cfg);
        gpt_init_params(c, 5);
        GPU_OK(g, gpt_cuda_init_params(g, 5));
        size_t n = c->num_params;
        float *start = malloc(n * sizeof(float)), *buf = malloc(n * sizeof(float));
        memcpy(start, c->params, n * sizeof(float));
        int32_t *inp = malloc((size_t)B * T * 4), *tgt = malloc((size_t)B * T * 4);
        rng_t r;
        rng_seed(&r, 11);
        const float lr = 1e-3f;
        int ok = 1;
        double worst_rel = 0.0;
        for (int s = 0; s < 5; s++) {
            s_batch(&r, inp, tgt, B, T, cfg->vocab, 0);
            float lc = s_cpu_step(c, o, inp, tgt, B, T, lr);
            float lg = s_gpu_step(g, inp, tgt, B, T, lr);
            if (fabs((double)lg - lc) / lc > worst_rel) worst_rel = fabs((double)lg - lc) / lc;
            if (!(fabsf(lg - lc) <= 1e-4f * lc)) {
                cr_log_error("case %d step %d: loss gpu %.9g cpu %.9g", k, s, lg, lc);
                ok = 0;
            }
        }
        cr_log_info("case %d: 5 steps, worst loss |gpu - cpu| / cpu %.3g (tolerance 1e-4)", k, worst_rel);
        GPU_OK(g, gpt_cuda_params_download(g, buf, 0, n));
        char what[64];
        snprintf(what, sizeof what, "case %d: params after 5 steps", k);
        ok &= s_trajectory_close(what, buf, c->params, start, n, 1e-2, 2.0 * lr * 5);
        free(start);
        free(buf);
        free(inp);
        free(tgt);
        optim_adamw_destroy(&o);
        gpt_cuda_destroy(&g);
        gpt_destroy(&c);
        cr_assert(ok, "GPU and CPU training differ beyond tolerance (see above)");
    }
}

Test(gpu, loss_curve_matches_cpu, .timeout = 180) {
    s_need_gpu();
    const gpt_config_t cfg = {2, 64, 4, 32, 64};
    int B = 4, T = 32;
    gpt_t *c = s_cpu_new(&cfg, B, T);
    gpt_cuda_t *g = s_gpu_new(&cfg, B, T, 0);
    optim_adamw_t *o = s_cpu_opt(&cfg);
    gpt_init_params(c, 1337);
    GPU_OK(g, gpt_cuda_init_params(g, 1337));
    int32_t inp[4 * 32], tgt[4 * 32];
    rng_t r;
    rng_seed(&r, 3);
    float first = 0.0f, last = 0.0f;
    int ok = 1;
    double worst_rel = 0.0;
    for (int s = 0; s < 40; s++) {
        s_batch(&r, inp, tgt, B, T, cfg.vocab, 1);
        float lc = s_cpu_step(c, o, inp, tgt, B, T, 3e-3f);
        float lg = s_gpu_step(g, inp, tgt, B, T, 3e-3f);
        if (fabs((double)lg - lc) / lc > worst_rel) worst_rel = fabs((double)lg - lc) / lc;
        if (!(fabsf(lg - lc) <= 2e-3f * lc)) {
            cr_log_error("step %d: loss gpu %.6f cpu %.6f", s, lg, lc);
            ok = 0;
        }
        if (s == 0) first = lc;
        last = lc;
    }
    cr_log_info("loss curve: %.4f -> %.4f; worst loss |gpu - cpu| / cpu %.3g (tolerance 2e-3)", first, last, worst_rel);
    optim_adamw_destroy(&o);
    gpt_cuda_destroy(&g);
    gpt_destroy(&c);
    cr_assert(ok, "loss curves differ (see above)");
    cr_assert(last < 0.8f * first, "the loss did not fall (%.4f -> %.4f): the comparison shows nothing", first, last);
}

Test(gpu, layer_ranges_match_whole_model, .timeout = 60) {
    s_need_gpu();
    const gpt_config_t cfg = {3, 64, 4, 16, 97};
    int B = 2, T = 16, C = cfg.d_model, split = 1;
    size_t n = gpt_num_params(&cfg), nx = (size_t)B * T * C;
    gpt_cuda_t *whole = s_gpu_new(&cfg, B, T, 0), *s0 = s_gpu_new(&cfg, B, T, 0), *s1 = s_gpu_new(&cfg, B, T, 0);
    GPU_OK(whole, gpt_cuda_init_params(whole, 9));
    GPU_OK(s0, gpt_cuda_init_params(s0, 9));
    GPU_OK(s1, gpt_cuda_init_params(s1, 9));
    int32_t inp[2 * 16], tgt[2 * 16];
    rng_t r;
    rng_seed(&r, 4);
    s_batch(&r, inp, tgt, B, T, cfg.vocab, 0);
    float *x = malloc(nx * sizeof(float)), *dx = malloc(nx * sizeof(float));
    float *gw = malloc(n * sizeof(float)), *g0 = malloc(n * sizeof(float)), *g1 = malloc(n * sizeof(float));

    GPU_OK(whole, gpt_cuda_zero_grad(whole));
    GPU_OK(whole, gpt_cuda_forward(whole, inp, tgt, B, T));
    float lw = gpt_cuda_loss(whole);
    GPU_OK(whole, gpt_cuda_backward(whole));
    GPU_OK(whole, gpt_cuda_grads_download(whole, gw, 0, n));

    // Stage 0: embeddings + blocks [0, split); stage 1: blocks [split, L) + head.
    GPU_OK(s0, gpt_cuda_zero_grad(s0));
    GPU_OK(s1, gpt_cuda_zero_grad(s1));
    GPU_OK(s0, gpt_cuda_forward_range(s0, 0, split, inp, NULL, NULL, B, T));
    GPU_OK(s0, gpt_cuda_range_output(s0, x));
    GPU_OK(s1, gpt_cuda_forward_range(s1, split, cfg.layers, NULL, x, tgt, B, T));
    float l1 = gpt_cuda_loss(s1);
    cr_assert(l1 == lw, "range loss %.9g differs from the whole model's %.9g", l1, lw);
    GPU_OK(s1, gpt_cuda_backward_range(s1, NULL, dx));
    GPU_OK(s0, gpt_cuda_backward_range(s0, dx, NULL));
    GPU_OK(s0, gpt_cuda_grads_download(s0, g0, 0, n));
    GPU_OK(s1, gpt_cuda_grads_download(s1, g1, 0, n));

    size_t b0, b1, e0, e1;
    gpt_layer_span(&cfg, 0, split, &b0, &e0);
    gpt_layer_span(&cfg, split, cfg.layers, &b1, &e1);
    cr_assert(memcmp(g0 + b0, gw + b0, (e0 - b0) * sizeof(float)) == 0, "stage 0 block gradients differ");
    cr_assert(memcmp(g1 + b1, gw + b1, (e1 - b1) * sizeof(float)) == 0, "stage 1 block gradients differ");
    gpt_tensor_t wpe, lnf;
    gpt_tensor(&cfg, 1, &wpe);
    gpt_tensor(&cfg, gpt_num_tensors(&cfg) - 2, &lnf);
    cr_assert(memcmp(g0 + wpe.offset, gw + wpe.offset, wpe.numel * sizeof(float)) == 0, "wpe gradients differ");
    cr_assert(memcmp(g1 + lnf.offset, gw + lnf.offset, 2 * lnf.numel * sizeof(float)) == 0, "ln_f gradients differ");
    // The tied embedding's gradient is split between the stages: head part on stage 1, lookup part on 0.
    size_t nwte = (size_t)cfg.vocab * C;
    for (size_t i = 0; i < nwte; i++) g0[i] += g1[i];
    cr_assert(s_close("tied wte gradient, stages summed", g0, gw, nwte, 1e-5, 1e-9));
    // Blocks outside a stage's range are untouched.
    for (size_t i = b1; i < e1; i++) cr_assert(g0[i] == 0.0f, "stage 0 wrote a gradient outside its range");

    free(x);
    free(dx);
    free(gw);
    free(g0);
    free(g1);
    gpt_cuda_destroy(&whole);
    gpt_cuda_destroy(&s0);
    gpt_cuda_destroy(&s1);
}

// The state a checkpoint holds (params, AdamW moments, Adam's step) moved GPU→CPU and CPU→GPU
// mid-training: both continuations follow the same trajectory as the uninterrupted run.
Test(gpu, state_moves_between_backends, .timeout = 120) {
    s_need_gpu();
    const gpt_config_t cfg = {2, 64, 4, 16, 97};
    int B = 3, T = 16;
    size_t n = gpt_num_params(&cfg);
    int32_t inp[6][3 * 16], tgt[6][3 * 16];
    rng_t r;
    rng_seed(&r, 21);
    for (int s = 0; s < 6; s++) s_batch(&r, inp[s], tgt[s], B, T, cfg.vocab, 0);
    const float lr = 1e-3f;

    for (int dir = 0; dir < 2; dir++) {
        // dir 0: 3 steps on the GPU, then the CPU continues; dir 1: the other way round.
        gpt_t *c = s_cpu_new(&cfg, B, T), *cref = s_cpu_new(&cfg, B, T);
        optim_adamw_t *o = s_cpu_opt(&cfg), *oref = s_cpu_opt(&cfg);
        gpt_cuda_t *g = s_gpu_new(&cfg, B, T, 0);
        gpt_init_params(c, 77);
        gpt_init_params(cref, 77);
        GPU_OK(g, gpt_cuda_init_params(g, 77));
        float *start = malloc(n * sizeof(float)), *buf = malloc(n * sizeof(float));
        memcpy(start, c->params, n * sizeof(float));
        for (int s = 0; s < 6; s++) s_cpu_step(cref, oref, inp[s], tgt[s], B, T, lr);
        for (int s = 0; s < 3; s++) {
            if (dir == 0) s_gpu_step(g, inp[s], tgt[s], B, T, lr);
            else s_cpu_step(c, o, inp[s], tgt[s], B, T, lr);
        }
        if (dir == 0) {
            GPU_OK(g, gpt_cuda_params_download(g, c->params, 0, n));
            GPU_OK(g, gpt_cuda_adamw_download(g, o->m, o->v, &o->step));
            cr_assert_eq(o->step, 3);
            for (int s = 3; s < 6; s++) s_cpu_step(c, o, inp[s], tgt[s], B, T, lr);
            memcpy(buf, c->params, n * sizeof(float));
        } else {
            GPU_OK(g, gpt_cuda_params_upload(g, c->params, 0, n));
            GPU_OK(g, gpt_cuda_adamw_upload(g, o->m, o->v, o->step));
            for (int s = 3; s < 6; s++) s_gpu_step(g, inp[s], tgt[s], B, T, lr);
            GPU_OK(g, gpt_cuda_params_download(g, buf, 0, n));
        }
        cr_assert(s_trajectory_close(dir == 0 ? "GPU->CPU resume" : "CPU->GPU resume", buf, cref->params, start, n,
                                     1e-2, 2.0 * lr * 6));
        free(start);
        free(buf);
        optim_adamw_destroy(&o);
        optim_adamw_destroy(&oref);
        gpt_cuda_destroy(&g);
        gpt_destroy(&c);
        gpt_destroy(&cref);
    }
}

// Checkpoint files through the trainer: 6 steps on one backend, saved, resumed by a trainer on the
// other backend for 6 more; both must follow the uninterrupted 12-step CPU run.
static float s_run_steps(trainer_t *t, int n, float *losses) {
    float l = 0.0f;
    for (int i = 0; i < n; i++) {
        l = trainer_step(t);
        if (losses) losses[i] = l;
    }
    return l;
}

static trainer_t *s_trainer(const loco_config_t *base, const char *device) {
    loco_config_t cfg = *base;
    snprintf(cfg.device, sizeof cfg.device, "%s", device);
    char err[1024];
    trainer_t *t = trainer_new(&cfg, TRAINER_TRAIN_DATA, 0, err, sizeof err);
    cr_assert_not_null(t, "trainer_new(%s): %s", device, err);
    return t;
}

Test(gpu, checkpoint_resumes_across_backends, .timeout = 180) {
    s_need_gpu();
    char dir[] = "/tmp/loco_gpu_ckpt_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    enum { NTOK = 20000 };
    static uint16_t tok[NTOK];
    rng_t r;
    rng_seed(&r, 5);
    for (int i = 0; i < NTOK; i++) tok[i] = (uint16_t)((i % 7 == 0 ? rng_below(&r, 64) : (uint64_t)(i * 5 + 3)) % 64);
    char path[256], err[1024];
    snprintf(path, sizeof path, "%s/train_000.bin", dir);
    cr_assert_eq(data_shard_write(path, tok, NTOK, err, sizeof err), 0, "%s", err);

    loco_config_t cfg;
    config_defaults(&cfg);
    cfg.model = (gpt_config_t){2, 64, 4, 32, 64};
    cfg.batch = 4;
    cfg.steps = 12;
    cfg.warmup = 2;
    cfg.lr = 3e-3f;
    cfg.threads = 1;
    cfg.tf32 = 0;
    snprintf(cfg.data, sizeof cfg.data, "%s", dir);

    trainer_t *ref = s_trainer(&cfg, "cpu");
    float ref_loss[12];
    s_run_steps(ref, 12, ref_loss);
    size_t n = ref->model->num_params;
    float *start = malloc(n * sizeof(float));
    gpt_t *init = s_cpu_new(&cfg.model, 1, 1);
    gpt_init_params(init, (uint64_t)cfg.seed);
    memcpy(start, init->params, n * sizeof(float));
    gpt_destroy(&init);

    const char *dev[2][2] = {{"cuda", "cpu"}, {"cpu", "cuda"}};
    for (int k = 0; k < 2; k++) {
        trainer_t *a = s_trainer(&cfg, dev[k][0]);
        s_run_steps(a, 6, NULL);
        ckpt_t c = {0};
        uint8_t scratch[256];
        cr_assert(trainer_ckpt_scratch_len() <= sizeof scratch);
        trainer_ckpt_add(a, &c, scratch);
        cr_assert(c.n > 0, "%s trainer added no checkpoint sections", dev[k][0]);
        snprintf(path, sizeof path, "%s/ckpt_%d.bin", dir, k);
        cr_assert_eq(ckpt_save(&c, path, err, sizeof err), 0, "%s", err);
        trainer_destroy(&a);

        trainer_t *b = s_trainer(&cfg, dev[k][1]);
        ckpt_t in;
        cr_assert_eq(ckpt_load(&in, path, err, sizeof err), 0, "%s", err);
        cr_assert_eq(trainer_ckpt_restore(b, &in, err, sizeof err), 0, "%s resuming a %s checkpoint: %s", dev[k][1],
                     dev[k][0], err);
        ckpt_free(&in);
        cr_assert_eq(b->step, 6);
        float loss[6];
        s_run_steps(b, 6, loss);
        int ok = 1;
        for (int i = 0; i < 6; i++)
            if (!(fabsf(loss[i] - ref_loss[6 + i]) <= 2e-3f * ref_loss[6 + i])) {
                cr_log_error("%s -> %s: step %d loss %.6f, uninterrupted CPU run %.6f", dev[k][0], dev[k][1], 7 + i,
                             loss[i], ref_loss[6 + i]);
                ok = 0;
            }
        cr_assert_eq(trainer_sync(b, 0, err, sizeof err), 0, "%s", err);
        char what[64];
        snprintf(what, sizeof what, "%s -> %s resumed params", dev[k][0], dev[k][1]);
        ok &= s_trajectory_close(what, b->model->params, ref->model->params, start, n, 2e-2, 2.0 * 3e-3 * 12);
        trainer_destroy(&b);
        cr_assert(ok, "resumed training differs from the uninterrupted run (see above)");
        remove(path);
    }
    trainer_destroy(&ref);
    free(start);
    snprintf(path, sizeof path, "%s/train_000.bin", dir);
    remove(path);
    rmdir(dir);
}

// TF32 changes rounding, not the model: the loss stays within 1e-2 relative of the fp32 GPU's.
Test(gpu, tf32_stays_close, .timeout = 60) {
    s_need_gpu();
    const gpt_config_t cfg = {2, 128, 8, 64, 500};
    int B = 2, T = 64;
    gpt_cuda_t *g = s_gpu_new(&cfg, B, T, 0);
    GPU_OK(g, gpt_cuda_init_params(g, 3));
    int32_t inp[2 * 64], tgt[2 * 64];
    rng_t r;
    rng_seed(&r, 8);
    s_batch(&r, inp, tgt, B, T, cfg.vocab, 0);
    GPU_OK(g, gpt_cuda_forward(g, inp, tgt, B, T));
    float l32 = gpt_cuda_loss(g);
    gpt_cuda_set_tf32(g, 1);
    GPU_OK(g, gpt_cuda_forward(g, inp, tgt, B, T));
    float ltf = gpt_cuda_loss(g);
    cr_log_info("TF32 loss %.6f, fp32 %.6f: |diff| / fp32 %.3g (tolerance 1e-2)", ltf, l32, fabs((double)ltf - l32) / l32);
    cr_assert(fabsf(ltf - l32) <= 1e-2f * l32, "TF32 loss %.6f vs fp32 %.6f", ltf, l32);
    gpt_cuda_destroy(&g);
}

#endif
