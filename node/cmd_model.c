// loco export, loco sample: what a user does with a trained checkpoint.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gpt.h"
#include "model/rng.h"
#include "node/checkpoint.h"
#include "node/cli.h"
#include "node/safetensors.h"
#include "node/trainer.h"

// Loads the model config and weights of a checkpoint file or directory into a fresh buffer.
// which: "params" (local θ), "anchor" (φ) or NULL (φ when the checkpoint has it, else θ). path_out
// receives the resolved file. Returns 0 or -1 with the reason.
static int s_load_weights(const char *ck, const char *which, gpt_config_t *cfg, float **out, char *path_out,
                          size_t path_len, char *err, size_t errlen) {
    char why[512];
    ckpt_t c;
    const float *p;
    if (ckpt_resolve(ck, path_out, path_len, err, errlen) != 0) return -1;
    if (ckpt_load(&c, path_out, err, errlen) != 0) return -1;
    size_t len;
    if (!which) which = ckpt_get(&c, "anchor", &len) ? "anchor" : "params";
    if (ckpt_model(&c, which, cfg, &p, why, sizeof why) != 0) {
        snprintf(err, errlen, "%.600s: %.400s", path_out, why);
        ckpt_free(&c);
        return -1;
    }
    size_t n = gpt_num_params(cfg);
    *out = malloc(n * sizeof(float));
    if (*out) memcpy(*out, p, n * sizeof(float));
    ckpt_free(&c);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

// The first model-config field on which a and b differ, or NULL.
static const char *s_config_diff(const gpt_config_t *a, const gpt_config_t *b, int *va, int *vb) {
    const struct { const char *name; int a, b; } f[] = {
        {"layers", a->layers, b->layers}, {"d_model", a->d_model, b->d_model}, {"heads", a->heads, b->heads},
        {"seq_len", a->seq_len, b->seq_len}, {"vocab", a->vocab, b->vocab},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].a != f[i].b) {
            *va = f[i].a;
            *vb = f[i].b;
            return f[i].name;
        }
    return NULL;
}

int cli_mean_weights(const char *const *cks, int n, const char *which, gpt_config_t *cfg, float **out,
                     char *err, size_t errlen) {
    char first[1200], path[1200];
    gpt_config_t c2;
    float *sum = NULL, *w = NULL;
    *out = NULL;
    if (n < 1) {
        snprintf(err, errlen, "no checkpoint given");
        return -1;
    }
    if (s_load_weights(cks[0], which, cfg, &sum, first, sizeof first, err, errlen) != 0) return -1;
    size_t np = gpt_num_params(cfg);
    for (int i = 1; i < n; i++) {
        if (s_load_weights(cks[i], which, &c2, &w, path, sizeof path, err, errlen) != 0) {
            free(sum);
            return -1;
        }
        int va, vb;
        const char *field = s_config_diff(cfg, &c2, &va, &vb);
        if (field) {
            snprintf(err, errlen, "%.500s and %.500s have different models: model.%s is %d in the first, %d in the second",
                     first, path, field, va, vb);
            free(w);
            free(sum);
            return -1;
        }
        // Summed in checkpoint order in fp32: the mean of the same files is the same bits anywhere.
        for (size_t k = 0; k < np; k++) sum[k] += w[k];
        free(w);
        w = NULL;
    }
    if (n > 1)
        for (size_t k = 0; k < np; k++) sum[k] /= (float)n;
    *out = sum;
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *out = NULL, *which = NULL;
    const char **cks = calloc((size_t)argc + 1, sizeof *cks);
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            free(cks);
            printf("usage: loco export [--checkpoint] PATH [[--checkpoint] PATH]... --out FILE.safetensors\n"
                   "                   [--weights local|anchor]\n"
                   "  Writes fp32 safetensors with Hugging Face GPT-2 names and layouts. PATH is a\n"
                   "  checkpoint file or directory (its newest complete checkpoint). Given several,\n"
                   "  writes their element-wise mean (e.g. the final model of a NoLoCo swarm:\n"
                   "  loco export build/swarm/peer-*/checkpoints --out model.safetensors); they must\n"
                   "  share one model config. A run checkpoint gives its anchor by default;\n"
                   "  --weights local takes the local weights, --weights anchor requires the anchor.\n");
            return 0;
        } else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) cks[n++] = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            const char *w = argv[++i];
            if (!strcmp(w, "local")) which = "params";
            else if (!strcmp(w, "anchor")) which = "anchor";
            else {
                free(cks);
                return cli_usage_error("export", "--weights must be local or anchor");
            }
        } else if (argv[i][0] != '-') cks[n++] = argv[i];
        else {
            free(cks);
            return cli_usage_error("export", "unexpected argument '%s'", argv[i]);
        }
    }
    if (n == 0 || !out) {
        free(cks);
        return cli_usage_error("export", "a checkpoint PATH and --out FILE are required");
    }
    char err[1536];
    gpt_config_t cfg;
    float *mean = NULL;
    int rc = 0;
    if (cli_mean_weights(cks, n, which, &cfg, &mean, err, sizeof err) != 0 ||
        safetensors_save_gpt(out, &cfg, mean, err, sizeof err) != 0) {
        fprintf(stderr, "loco export: %s\n", err);
        rc = 1;
    }
    if (rc == 0) {
        if (n == 1) printf("exported %zu parameters to %s\n", gpt_num_params(&cfg), out);
        else printf("exported the mean of %d checkpoints (%zu parameters) to %s\n", n, gpt_num_params(&cfg), out);
    }
    free(mean);
    free(cks);
    return rc;
}

int cmd_sample(int argc, char **argv) {
    const char *ck = NULL, *prompt = "\n", *which = NULL;
    long ntok = 256, seed = 0;
    double temp = 0.8;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loco sample --checkpoint PATH [--prompt TEXT] [--tokens N] [--temperature T] [--seed S]\n"
                   "                   [--weights local|anchor]\n"
                   "  Prints text generated by a byte-level model (vocab 256). A run checkpoint gives\n"
                   "  its anchor by default; --weights local takes the local weights.\n");
            return 0;
        } else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) ck = argv[++i];
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) ntok = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--temperature") && i + 1 < argc) temp = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            const char *w = argv[++i];
            if (!strcmp(w, "local")) which = "params";
            else if (!strcmp(w, "anchor")) which = "anchor";
            else return cli_usage_error("sample", "--weights must be local or anchor");
        }
        else return cli_usage_error("sample", "unexpected argument '%s'", argv[i]);
    }
    if (!ck) return cli_usage_error("sample", "--checkpoint PATH is required");
    if (ntok < 0 || !(temp >= 0)) return cli_usage_error("sample", "--tokens must be ≥ 0 and --temperature ≥ 0");
    char err[1536], path[1200];
    gpt_config_t cfg;
    float *w;
    if (s_load_weights(ck, which, &cfg, &w, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "loco sample: %s\n", err);
        return 1;
    }
    if (cfg.vocab != 256) {
        fprintf(stderr, "loco sample: the model's vocab is %d; sample prints bytes and needs a byte-level model (256)\n", cfg.vocab);
        free(w);
        return 1;
    }
    int T = cfg.seq_len;
    gpt_t *m = gpt_new(&cfg, 1, T, err, sizeof err);
    if (!m) {
        fprintf(stderr, "loco sample: %s\n", err);
        free(w);
        return 1;
    }
    memcpy(m->params, w, m->num_params * sizeof(float));
    free(w);
    gpt_set_threads(m, 1);
    size_t plen = strlen(prompt), cap = plen + (size_t)ntok + 1;
    int32_t *ctx = malloc(cap * sizeof *ctx);
    size_t len = 0;
    for (size_t i = 0; i < plen; i++) ctx[len++] = (unsigned char)prompt[i];
    if (len == 0) ctx[len++] = '\n';
    fwrite(prompt, 1, plen, stdout);
    rng_t r;
    rng_seed(&r, (uint64_t)seed);
    float *probs = malloc(256 * sizeof(float));
    for (long k = 0; k < ntok; k++) {
        size_t start = len > (size_t)T ? len - (size_t)T : 0;
        int t = (int)(len - start);
        gpt_forward(m, ctx + start, NULL, 1, t);
        const float *lg = m->logits + (size_t)(t - 1) * 256;
        int next = 0;
        if (temp == 0.0) {
            for (int v = 1; v < 256; v++) if (lg[v] > lg[next]) next = v;
        } else {
            float mx = lg[0];
            for (int v = 1; v < 256; v++) mx = lg[v] > mx ? lg[v] : mx;
            double sum = 0;
            for (int v = 0; v < 256; v++) sum += probs[v] = expf((float)((lg[v] - mx) / temp));
            double u = rng_uniform(&r) * sum, acc = 0;
            next = 255;
            for (int v = 0; v < 256; v++) {
                acc += probs[v];
                if (u < acc) { next = v; break; }
            }
        }
        ctx[len++] = next;
        fputc(next, stdout);
    }
    fputc('\n', stdout);
    free(probs);
    free(ctx);
    gpt_destroy(&m);
    return 0;
}
