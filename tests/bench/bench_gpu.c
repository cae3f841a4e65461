// GPU training throughput of loco's CUDA backend: full inner steps (zero_grad, forward, backward,
// clip at 1.0, AdamW) on random tokens, timed after warm-up, with the loss read back every step as
// the trainer does. Prints one JSON line; tests/gpu/run.sh runs it beside tests/gpu/torch_gpt.py
// (the PyTorch baseline, same shapes) and computes the ratio.
//
//   bench_gpu L C NH T V B [steps=20] [warmup=5] [tf32=1]
//
// Model FLOPs per token: 6·N + 12·L·C·T (N = all parameters, tied head counted once; the second
// term is the attention score and value products, forward and backward, as in PaLM's appendix B).
#include <stdio.h>
#include <stdlib.h>

#ifndef LOCO_CUDA
int main(void) {
    fprintf(stderr, "bench_gpu: built without CUDA (make CUDA=1)\n");
    return 0;
}
#else

#include <time.h>

#include "model/gpt_cuda.h"
#include "model/rng.h"

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: bench_gpu L C NH T V B [steps] [warmup] [tf32]\n");
        return 2;
    }
    gpt_config_t cfg = {atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5])};
    int B = atoi(argv[6]), T = cfg.seq_len;
    int steps = argc > 7 ? atoi(argv[7]) : 20, warmup = argc > 8 ? atoi(argv[8]) : 5;
    int tf32 = argc > 9 ? atoi(argv[9]) : 1;
    if (steps < 1 || steps > 100000 || warmup < 0) {
        fprintf(stderr, "bench_gpu: bad step counts\n");
        return 2;
    }
    char err[512], name[256] = "?";
    int cc = 0;
    if (gpt_cuda_available(0, err, sizeof err) != 0) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 1;
    }
    gpt_cuda_device_info(0, name, sizeof name, &cc);
    gpt_cuda_adamw_hparams_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    double t0 = s_now();
    gpt_cuda_t *g = gpt_cuda_new(&cfg, B, T, 0, tf32, hp, err, sizeof err);
    if (!g) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 1;
    }
    if (gpt_cuda_init_params(g, 1337) != 0) {
        fprintf(stderr, "bench_gpu: %s\n", gpt_cuda_last_error(g));
        return 1;
    }
    double t_setup = s_now() - t0;
    size_t BT = (size_t)B * T;
    int32_t *inp = malloc(BT * sizeof(int32_t)), *tgt = malloc(BT * sizeof(int32_t));
    double *dt = malloc((size_t)steps * sizeof(double));
    if (!inp || !tgt || !dt) return 1;
    rng_t r;
    rng_seed(&r, 1);
    float loss = 0.0f, first_loss = 0.0f;
    for (int s = 0; s < warmup + steps; s++) {
        for (size_t i = 0; i < BT; i++) {
            inp[i] = (int32_t)rng_below(&r, (uint64_t)cfg.vocab);
            tgt[i] = (int32_t)rng_below(&r, (uint64_t)cfg.vocab);
        }
        double a = s_now();
        int rc = gpt_cuda_zero_grad(g) || gpt_cuda_forward(g, inp, tgt, B, T) || gpt_cuda_backward(g) ||
                 gpt_cuda_clip_grad_norm(g, 1.0f) || gpt_cuda_adamw_update(g, 3e-4f);
        loss = gpt_cuda_loss(g); // waits for the step, as the trainer's logging does
        if (rc || loss != loss) {
            fprintf(stderr, "bench_gpu: step %d failed: %s\n", s,
                    gpt_cuda_last_error(g) ? gpt_cuda_last_error(g) : "NaN loss");
            return 1;
        }
        if (s == 0) first_loss = loss;
        if (s >= warmup) dt[s - warmup] = s_now() - a;
    }
    qsort(dt, (size_t)steps, sizeof(double), s_cmp);
    double med = dt[steps / 2];
    double n = (double)gpt_cuda_num_params(g);
    double flops_tok = 6.0 * n + 12.0 * cfg.layers * (double)cfg.d_model * T;
    double tps = (double)BT / med;
    printf("{\"impl\":\"loco\",\"gpu\":\"%s\",\"cc\":%d,\"L\":%d,\"C\":%d,\"NH\":%d,\"T\":%d,\"V\":%d,\"B\":%d,"
           "\"tf32\":%d,\"params\":%.0f,\"steps\":%d,\"ms_per_step_median\":%.3f,\"ms_per_step_min\":%.3f,"
           "\"tokens_per_s\":%.1f,\"model_tflops\":%.2f,\"first_loss\":%.4f,\"last_loss\":%.4f,"
           "\"setup_s\":%.2f,\"gpu_mem_gib\":%.2f}\n",
           name, cc, cfg.layers, cfg.d_model, cfg.heads, T, cfg.vocab, B, tf32, n, steps, 1e3 * med, 1e3 * dt[0], tps,
           tps * flops_tok / 1e12, first_loss, loss, t_setup, (double)gpt_cuda_memory_bytes(g) / (1 << 30));
    free(inp);
    free(tgt);
    free(dt);
    gpt_cuda_destroy(&g);
    return 0;
}
#endif
