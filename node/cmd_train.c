// loco data, loco train, loco eval.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/data.h"
#include "node/checkpoint.h"
#include "node/cli.h"
#include "node/log.h"
#include "node/metrics.h"
#include "node/train_loop.h"
#include "node/trainer.h"
#ifdef LOCO_CUDA
#include "model/gpt_cuda.h"
#endif

static int s_help(const char *text) {
    fputs(text, stdout);
    return 0;
}

int cmd_data(int argc, char **argv) {
    const char *out = NULL;
    double val = 0.1;
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            free(inputs);
            return s_help("usage: loco data --input PATH... --out DIR [--val-fraction F]\n"
                          "  Turns text into byte-level token shards DIR/train_NNN.bin and DIR/val_000.bin.\n"
                          "  A directory input takes its regular files without an extension or ending\n"
                          "  in .txt (symlinks skipped), in name order. The last F (default 0.1) of each\n"
                          "  input, from a line start, goes to validation.\n");
        } else if (!strcmp(argv[i], "--input")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) inputs[n++] = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--val-fraction") && i + 1 < argc) {
            char *end;
            val = strtod(argv[++i], &end);
            if (*end) {
                free(inputs);
                return cli_usage_error("data", "--val-fraction: '%s' is not a number", argv[i]);
            }
        } else {
            free(inputs);
            return cli_usage_error("data", "unexpected argument '%s'", argv[i]);
        }
    }
    if (n == 0 || !out) {
        free(inputs);
        return cli_usage_error("data", "--input PATH... and --out DIR are required");
    }
    char err[1024];
    int rc = data_prepare(inputs, n, out, val, err, sizeof err);
    free(inputs);
    if (rc != 0) {
        fprintf(stderr, "loco data: %s\n", err);
        return 1;
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help"))
            return s_help("usage: loco train [-c FILE] [--set section.key=value]... [--resume]\n"
                          "  Trains one model on this machine. Keys: deploy/loco.example.ini.\n"
                          "  --resume continues from the newest checkpoint in [train] checkpoint_dir.\n");
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 0);
    if (rc) return rc;
    int resume = 0;
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) continue;
        if (!strcmp(argv[i], "--resume")) resume = 1;
        else return cli_usage_error("train", "unexpected argument '%s'", argv[i]);
    }
#ifndef LOCO_CUDA
    if (strcmp(cfg.device, "cpu") != 0) {
        fprintf(stderr, "loco train: [train] device = %s: this binary was built without the GPU backend "
                "(rebuild with make CUDA=1)\n", cfg.device);
        return 2;
    }
#endif
    char err[1536];
    uint64_t stream = cfg.data_stream >= 0 ? (uint64_t)cfg.data_stream : 0;
    trainer_t *t = trainer_new(&cfg, TRAINER_TRAIN_DATA | TRAINER_VAL_DATA | TRAINER_VAL_OPTIONAL, stream, err, sizeof err);
    if (!t) {
        fprintf(stderr, "loco train: %s\n", err);
        return 1;
    }
    if (resume) {
        int resumed = 0;
        if (train_resume(t, &resumed, err, sizeof err) != 0) {
            fprintf(stderr, "loco train: %s\n", err);
            trainer_destroy(&t);
            return 1;
        }
        if (!resumed) log_warn("train", "--resume: no checkpoint in %s; starting from step 0", cfg.checkpoint_dir);
    }
    metrics_t mx;
    if (metrics_open(&mx, cfg.metrics, "local", err, sizeof err) != 0) {
        fprintf(stderr, "loco train: %s\n", err);
        trainer_destroy(&t);
        return 1;
    }
    log_info("train", "model: %d layers, d_model %d, %d heads, seq_len %d, vocab %d: %zu parameters; "
             "batch %d, %d threads, seed %lld, %zu training tokens", cfg.model.layers, cfg.model.d_model,
             cfg.model.heads, cfg.model.seq_len, cfg.model.vocab, t->model->num_params, cfg.batch,
             cfg.threads, (long long)cfg.seed, t->train->total);

    cli_catch_stop();
    rc = train_loop(t, &mx, &cli_stop);
    metrics_close(&mx);
    trainer_destroy(&t);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help"))
            return s_help("usage: loco eval -c FILE --checkpoint PATH [--batches K] [--weights local|anchor]\n"
                          "  Prints val_loss=<float>: the mean next-token cross-entropy over the first K\n"
                          "  (default [train] eval_batches) consecutive windows of seq_len tokens of the\n"
                          "  first validation shard. PATH is a checkpoint or a checkpoint directory. A loco run\n"
                          "  checkpoint is evaluated on its anchor by default, others on their weights.\n");
    loco_config_t cfg;
    int rc = cli_load_config(&cfg, argc, argv, 0);
    if (rc) return rc;
    const char *ck = NULL, *weights = NULL; // NULL: the anchor when the checkpoint has one
    long k = cfg.eval_batches;
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) continue;
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) ck = argv[++i];
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc) k = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            const char *w = argv[++i];
            if (!strcmp(w, "local")) weights = "params";
            else if (!strcmp(w, "anchor")) weights = "anchor";
            else return cli_usage_error("eval", "--weights must be local or anchor");
        } else return cli_usage_error("eval", "unexpected argument '%s'", argv[i]);
    }
    if (!ck) return cli_usage_error("eval", "--checkpoint PATH is required");
    if (k < 1) return cli_usage_error("eval", "--batches must be at least 1");
    char err[1536], path[1200];
    ckpt_t c;
    gpt_config_t mc;
    const float *params;
    if (ckpt_resolve(ck, path, sizeof path, err, sizeof err) != 0 || ckpt_load(&c, path, err, sizeof err) != 0) {
        fprintf(stderr, "loco eval: %s\n", err);
        return 1;
    }
    size_t alen;
    if (!weights) weights = ckpt_get(&c, "anchor", &alen) ? "anchor" : "params";
    if (ckpt_model(&c, weights, &mc, &params, err, sizeof err) != 0) {
        fprintf(stderr, "loco eval: %s: %s\n", path, err);
        ckpt_free(&c);
        return 1;
    }
    cfg.model = mc; // the checkpoint's model, whatever the config says
    trainer_t *t = trainer_new(&cfg, TRAINER_VAL_DATA, 0, err, sizeof err);
    if (!t) {
        fprintf(stderr, "loco eval: %s\n", err);
        ckpt_free(&c);
        return 1;
    }
    memcpy(t->model->params, params, t->model->num_params * sizeof(float));
    ckpt_free(&c);
    if (trainer_sync(t, 1, err, sizeof err) != 0) {
        fprintf(stderr, "loco eval: %s\n", err);
        trainer_destroy(&t);
        return 1;
    }
    float vl = trainer_eval(t, (int)k);
    trainer_destroy(&t);
    if (vl < 0) {
        fprintf(stderr, "loco eval: the first validation shard holds no window of %d tokens\n", cfg.model.seq_len + 1);
        return 1;
    }
    printf("val_loss=%.6f\n", vl);
    return 0;
}
