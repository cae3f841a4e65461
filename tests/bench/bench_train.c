// Training throughput of loco's CPU trainer, for `make bench` (tests/bench/run.sh compares it
// with PyTorch measured in the same run).
//
//   bench_train CONFIG STEPS THREADS   CONFIG = small | medium | LxCxHxTxB
//   bench_train sgemm THREADS          peak cblas_sgemm GFLOP/s on this machine
//
// Prints one line of JSON. Tokens are random (throughput does not depend on the data); every step
// is a full forward, backward, grad clip and AdamW update, as in `loco train`.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "model/gpt.h"
#include "model/rng.h"
#include "node/metrics.h"
#include "optim/adamw.h"

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int s_sgemm(int threads) {
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
    int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 0;
    for (int r = 0; r < 6; r++) {
        double t0 = metrics_mono();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = metrics_mono() - t0;
        double gf = 2.0 * n * (double)n * n / dt / 1e9;
        if (r > 0 && gf > best) best = gf;
    }
    printf("{\"sgemm_gflops\":%.2f,\"n\":%d,\"threads\":%d}\n", best, n, threads);
    free(a); free(b); free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "sgemm")) return s_sgemm(atoi(argv[2]));
    if (argc < 4) {
        fprintf(stderr, "usage: bench_train small|medium|LxCxHxTxB STEPS THREADS | bench_train sgemm THREADS\n");
        return 2;
    }
    int L, C, NH, T, B;
    if (!strcmp(argv[1], "small")) { L = 4; C = 128; NH = 4; T = 128; B = 16; }
    else if (!strcmp(argv[1], "medium")) { L = 6; C = 384; NH = 6; T = 256; B = 8; }
    else if (sscanf(argv[1], "%dx%dx%dx%dx%d", &L, &C, &NH, &T, &B) != 5) { fprintf(stderr, "bad config\n"); return 2; }
    int steps = atoi(argv[2]), threads = atoi(argv[3]);
    gpt_config_t cfg = {L, C, NH, T, 256};
    char err[256];
    gpt_t *m = gpt_new(&cfg, B, T, err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); return 1; }
    gpt_set_threads(m, threads);
    gpt_init_params(m, 1);
    uint8_t *mask = calloc(m->num_params, 1);
    for (int i = 0; i < gpt_num_tensors(&cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(&cfg, i, &t);
        memset(mask + t.offset, t.decay, t.numel);
    }
    optim_adamw_t *opt = optim_adamw_new(m->num_params, mask, (optim_adamw_hparams_t){0.9f, 0.95f, 1e-8f, 0.1f});
    int32_t *x = malloc(sizeof(int32_t) * B * T), *y = malloc(sizeof(int32_t) * B * T);
    rng_t r;
    rng_seed(&r, 7);
    double *dt = malloc(sizeof(double) * (steps + 2));
    float loss = 0;
    for (int s = 0; s < steps + 2; s++) {
        for (int i = 0; i < B * T; i++) { x[i] = (int32_t)rng_below(&r, 256); y[i] = (int32_t)rng_below(&r, 256); }
        double t0 = metrics_mono();
        gpt_zero_grad(m);
        loss = gpt_forward(m, x, y, B, T);
        gpt_backward(m);
        optim_clip_grad_norm(m->grads, m->num_params, 1.0f);
        optim_adamw_update(opt, m->params, m->grads, 1e-4f);
        dt[s] = metrics_mono() - t0;
    }
    // The first two steps warm caches and thread pools; the median of the rest is reported.
    qsort(dt + 2, (size_t)steps, sizeof(double), s_cmp_double);
    double med = dt[2 + steps / 2];
    double tps = (double)B * T / med;
    double N = (double)m->num_params;
    double flops_per_tok = 6.0 * N + 12.0 * L * C * (double)T;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double theo = (double)(4 * m->num_params + m->num_acts + m->num_scratch) * sizeof(float);
    printf("{\"config\":\"%s\",\"params\":%zu,\"B\":%d,\"T\":%d,\"threads\":%d,\"step_s_median\":%.5f,"
           "\"tokens_per_s\":%.1f,\"model_gflops\":%.2f,\"peak_rss_bytes\":%ld,\"theoretical_bytes\":%.0f,\"loss\":%.4f}\n",
           argv[1], m->num_params, B, T, threads, med, tps, tps * flops_per_tok / 1e9, ru.ru_maxrss * 1024L, theo, loss);
    free(dt); free(x); free(y); free(mask);
    optim_adamw_destroy(&opt);
    gpt_destroy(&m);
    return 0;
}
