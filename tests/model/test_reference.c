// loco's GPT-2 against an independent PyTorch GPT-2 (tests/ref/check_gpt.py).
//
// For each tiny config, loco runs a forward and backward pass and five AdamW steps (grad clipping,
// decay mask, warmup + cosine LR) and writes its initial parameters, inputs, targets, logits,
// loss, gradients, learning rates, grad norms and final parameters as raw little-endian files into
// a fresh temp directory. The Python script loads the same initial parameters into torch, redoes
// everything in float32, prints the worst element per tensor and exits non-zero on any mismatch.
// This test fails when the script does.
#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gpt.h"
#include "model/rng.h"
#include "optim/adamw.h"
#include "tests/model/wide_init.h"

#define STEPS 5

typedef struct {
    const char *name;
    gpt_config_t cfg;
    int B, T;       // batch used; the model is allocated for (B + 1, seq_len) to exercise strides
    int wide_init;  // 0: loco's GPT-2 init; 1: the test's wider init (see s_wide_init)
    uint64_t seed;
} ref_case_t;

// {layers, d_model, heads, seq_len, vocab}
static const ref_case_t s_cases[] = {
    {"l1_c16_h1_v256", {1, 16, 1, 8, 256}, 2, 8, 0, 11},
    {"l2_c32_h2_v97", {2, 32, 2, 20, 97}, 3, 13, 1, 12},
    {"l3_c64_h4_v256", {3, 64, 4, 16, 256}, 4, 16, 1, 13},
    {"l2_c48_h3_v97", {2, 48, 3, 8, 97}, 2, 5, 1, 14},
    {"l1_c24_h4_v256", {1, 24, 4, 16, 256}, 2, 16, 1, 15},
};


// Raw dumps: the build refuses big-endian hosts (model/data.c), so float32/int32 arrays written
// as they are in memory are little-endian.
static void s_dump(const char *dir, const char *file, const void *p, size_t bytes) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert_eq(fwrite(p, 1, bytes, f), bytes, "short write to %s", path);
    cr_assert_eq(fclose(f), 0);
}

static void s_run_case(const char *root, const ref_case_t *rc) {
    const gpt_config_t *cfg = &rc->cfg;
    int B = rc->B, T = rc->T, V = cfg->vocab;
    char dir[1024], err[256];
    snprintf(dir, sizeof dir, "%s/%s", root, rc->name);
    cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s", dir);

    gpt_t *m = gpt_new(cfg, B + 1, cfg->seq_len, err, sizeof err);
    cr_assert(m, "gpt_new: %s", err);
    gpt_set_threads(m, 2);
    if (rc->wide_init) s_wide_init(m, rc->seed);
    else gpt_init_params(m, rc->seed);
    size_t np = m->num_params;

    // Hyperparameters: the defaults of ALGORITHMS.md, a short warmup + cosine over the 5 steps.
    const float lr = 1e-2f, lr_min = 1e-3f, clip = 1.0f;
    const uint64_t warmup = 2, total = STEPS;
    optim_adamw_hparams_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    uint8_t *mask = malloc(np);
    FILE *tf;
    {
        char path[1100];
        snprintf(path, sizeof path, "%s/tensors.txt", dir);
        tf = fopen(path, "w");
        cr_assert(tf);
    }
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        memset(mask + t.offset, t.decay, t.numel);
        fprintf(tf, "%s %zu %zu %d %d %d %d %d\n", t.name, t.offset, t.numel, t.ndim, t.shape[0],
                t.ndim == 2 ? t.shape[1] : 0, t.decay, t.transposed);
    }
    fclose(tf);
    optim_adamw_t *opt = optim_adamw_new(np, mask, hp);
    cr_assert(opt);

    FILE *mf;
    {
        char path[1100];
        snprintf(path, sizeof path, "%s/meta.txt", dir);
        mf = fopen(path, "w");
        cr_assert(mf);
    }
    fprintf(mf, "layers=%d\nd_model=%d\nheads=%d\nseq_len=%d\nvocab=%d\nB=%d\nT=%d\nsteps=%d\n"
            "warmup=%d\ntotal=%d\nlr=%.9g\nlr_min=%.9g\nclip=%.9g\nbeta1=%.9g\nbeta2=%.9g\neps=%.9g\n"
            "weight_decay=%.9g\nnum_params=%zu\nthreads=%d\n",
            cfg->layers, cfg->d_model, cfg->heads, cfg->seq_len, V, B, T, STEPS, (int)warmup, (int)total,
            lr, lr_min, clip, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, np, m->threads);
    fclose(mf);

    s_dump(dir, "params0.f32", m->params, np * sizeof(float));
    size_t bt = (size_t)B * T;
    int32_t *inputs = malloc(STEPS * bt * sizeof(int32_t)), *targets = malloc(STEPS * bt * sizeof(int32_t));
    rng_t r;
    rng_seed(&r, rc->seed * 1000 + 7);
    for (size_t i = 0; i < STEPS * bt; i++) {
        inputs[i] = (int32_t)rng_below(&r, (uint64_t)V);
        targets[i] = (int32_t)rng_below(&r, (uint64_t)V);
    }
    s_dump(dir, "inputs.i32", inputs, STEPS * bt * sizeof(int32_t));
    s_dump(dir, "targets.i32", targets, STEPS * bt * sizeof(int32_t));

    float *grads = malloc(STEPS * np * sizeof(float));
    float losses[STEPS], norms[STEPS], lrs[STEPS];
    for (int s = 0; s < STEPS; s++) {
        gpt_zero_grad(m);
        losses[s] = gpt_forward(m, inputs + s * bt, targets + s * bt, B, T);
        if (s == 0) s_dump(dir, "logits.f32", m->logits, bt * V * sizeof(float)); // backward overwrites them
        gpt_backward(m);
        memcpy(grads + s * np, m->grads, np * sizeof(float)); // before clipping
        norms[s] = optim_clip_grad_norm(m->grads, np, clip);
        lrs[s] = optim_lr_schedule((uint64_t)s, warmup, total, lr, lr_min);
        optim_adamw_update(opt, m->params, m->grads, lrs[s]);
    }
    s_dump(dir, "grads.f32", grads, STEPS * np * sizeof(float));
    s_dump(dir, "losses.f32", losses, sizeof losses);
    s_dump(dir, "norms.f32", norms, sizeof norms);
    s_dump(dir, "lrs.f32", lrs, sizeof lrs);
    s_dump(dir, "params_final.f32", m->params, np * sizeof(float));

    free(grads);
    free(inputs);
    free(targets);
    free(mask);
    optim_adamw_destroy(&opt);
    gpt_destroy(&m);
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

Test(reference, matches_pytorch, .timeout = 120) {
    const char *py = getenv("PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch, numpy' >/dev/null 2>&1", py);
    if (system(cmd) != 0) {
        fprintf(stderr, "\n*** SKIPPED: %s cannot import torch and numpy; loco's model is NOT checked against "
                "PyTorch (apt-get install python3-torch python3-numpy) ***\n\n", py);
        cr_skip_test("%s cannot import torch: PyTorch reference check skipped", py);
    }
    cr_assert_eq(access("tests/ref/check_gpt.py", R_OK), 0, "tests/ref/check_gpt.py not found: run from the repository root");

    char root[] = "/tmp/loco-ref-XXXXXX";
    cr_assert(mkdtemp(root), "mkdtemp failed");
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) s_run_case(root, &s_cases[i]);

    snprintf(cmd, sizeof cmd, "%s tests/ref/check_gpt.py %s", py, root);
    fflush(stdout);
    int rc = system(cmd);
    const char *keep = getenv("LOCO_REF_KEEP"); // debugging: keep the dumps for a rerun of the script
    if (keep && *keep == '1') fprintf(stderr, "dumps kept in %s\n", root);
    else nftw(root, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(rc, 0, "PyTorch reference check failed (status %d); see the table above", rc);
}
