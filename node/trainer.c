#include "node/trainer.h"

#include <dirent.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/safetensors.h"

#ifdef LOCO_CUDA
#include <math.h>

#include "model/gpt_cuda.h"
#endif

// Whether dir holds any file that data_set_open(dir, val = 1, ...) would take.
static int s_has_val_shards(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) found = fnmatch("*val*.bin", e->d_name, 0) == 0;
    closedir(d);
    return found;
}

trainer_t *trainer_new(const loco_config_t *cfg, int need_data, uint64_t stream, char *err, size_t errlen) {
    trainer_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    int B = cfg->batch, T = cfg->model.seq_len;
    if (need_data & TRAINER_TRAIN_DATA) {
        t->train = data_set_open(cfg->data, 0, cfg->model.vocab, err, errlen);
        if (!t->train) goto fail;
        // Without one window of T+1 tokens every batch would be empty: refuse rather than train on
        // stale buffers.
        int usable = 0;
        for (int i = 0; i < t->train->n; i++) usable |= t->train->shard[i]->ntok > (size_t)T;
        if (!usable) {
            snprintf(err, errlen, "%s: no training shard holds seq_len + 1 = %d tokens", cfg->data, T + 1);
            goto fail;
        }
        data_stream_init(&t->stream, t->train, (uint64_t)cfg->seed, stream);
    }
    if (need_data & TRAINER_VAL_DATA) {
        t->val = data_set_open(cfg->data, 1, cfg->model.vocab, err, errlen);
        // Optional means there may be no validation shards, not that a bad one may be skipped.
        if (!t->val && (!(need_data & TRAINER_VAL_OPTIONAL) || s_has_val_shards(cfg->data))) goto fail;
        err[0] = '\0';
    }
#ifdef LOCO_CUDA
    if (!strcmp(cfg->device, "cuda")) {
        gpt_cuda_adamw_hparams_t ghp = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
        char why[512];
        t->gpu = gpt_cuda_new(&cfg->model, B, T, cfg->device_index, cfg->tf32, ghp, why, sizeof why);
        if (!t->gpu || gpt_cuda_init_params(t->gpu, (uint64_t)cfg->seed) != 0) {
            snprintf(err, errlen, "[train] device = cuda: %s", t->gpu ? gpt_cuda_last_error(t->gpu) : why);
            goto fail;
        }
    }
#endif
    // With a GPU model the CPU one only holds host copies of the parameters: no activations.
    t->model = t->gpu || (need_data & TRAINER_PARAMS_ONLY) ? gpt_new(&cfg->model, 1, 1, err, errlen)
                                                          : gpt_new(&cfg->model, B, T, err, errlen);
    if (!t->model) goto fail;
    gpt_set_threads(t->model, cfg->threads);
    gpt_init_params(t->model, (uint64_t)cfg->seed);
    size_t n = t->model->num_params;
    uint8_t *mask = malloc(n);
    if (!mask) goto oom;
    for (int i = 0; i < gpt_num_tensors(&cfg->model); i++) {
        gpt_tensor_t tt;
        gpt_tensor(&cfg->model, i, &tt);
        memset(mask + tt.offset, tt.decay, tt.numel);
    }
    optim_adamw_hparams_t hp = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
    t->opt = optim_adamw_new(n, mask, hp);
    free(mask);
    t->inputs = calloc((size_t)B * T, sizeof(int32_t));
    t->targets = calloc((size_t)B * T, sizeof(int32_t));
    if (!t->opt || !t->inputs || !t->targets) goto oom;
    if (cfg->init[0]) { // [train] init: the run's initial weights from a safetensors file
        char why[700];
        if (safetensors_load_gpt(cfg->init, &cfg->model, t->model->params, why, sizeof why) != 0) {
            snprintf(err, errlen, "[train] init: %s", why);
            goto fail;
        }
        if (trainer_sync(t, 1, err, errlen) != 0) goto fail;
    }
    return t;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    trainer_destroy(&t);
    return NULL;
}

void trainer_destroy(trainer_t **self_p) {
    if (!self_p || !*self_p) return;
    trainer_t *t = *self_p;
    gpt_destroy(&t->model);
#ifdef LOCO_CUDA
    gpt_cuda_destroy(&t->gpu);
#endif
    optim_adamw_destroy(&t->opt);
    data_set_destroy(&t->train);
    data_set_destroy(&t->val);
    free(t->inputs);
    free(t->targets);
    free(t);
    *self_p = NULL;
}

float trainer_step(trainer_t *t) {
    const loco_config_t *c = &t->cfg;
    int B = c->batch, T = c->model.seq_len;
    data_stream_next(&t->stream, t->inputs, t->targets, B, T);
#ifdef LOCO_CUDA
    if (t->gpu) {
        // Queued on the GPU; the loss and norm reads at the end are the step's only waits. A GPU
        // failure gives a NaN loss and gpt_cuda_last_error(t->gpu) says why.
        t->lr = optim_lr_schedule(t->step, (uint64_t)c->warmup, (uint64_t)c->steps, c->lr, c->lr_min);
        int rc = gpt_cuda_zero_grad(t->gpu) || gpt_cuda_forward(t->gpu, t->inputs, t->targets, B, T) ||
                 gpt_cuda_backward(t->gpu) || gpt_cuda_clip_grad_norm(t->gpu, c->grad_clip) ||
                 gpt_cuda_adamw_update(t->gpu, t->lr);
        t->loss = rc ? NAN : gpt_cuda_loss(t->gpu);
        t->grad_norm = rc ? NAN : gpt_cuda_grad_norm(t->gpu);
        t->step++;
    atomic_store(&t->progress, t->step);
        atomic_store(&t->progress, t->step);
        return t->loss;
    }
#endif
    gpt_zero_grad(t->model);
    t->loss = gpt_forward(t->model, t->inputs, t->targets, B, T);
    gpt_backward(t->model);
    t->grad_norm = optim_clip_grad_norm(t->model->grads, t->model->num_params, c->grad_clip);
    t->lr = optim_lr_schedule(t->step, (uint64_t)c->warmup, (uint64_t)c->steps, c->lr, c->lr_min);
    optim_adamw_update(t->opt, t->model->params, t->model->grads, t->lr);
    t->step++;
    atomic_store(&t->progress, t->step);
    return t->loss;
}

float trainer_eval(trainer_t *t, int windows) {
    if (!t->val) return -1.0f;
    int B = t->cfg.batch, T = t->cfg.model.seq_len;
    size_t avail = data_eval_windows(t->val, T);
    size_t n = (size_t)windows < avail ? (size_t)windows : avail;
    if (n == 0) return -1.0f;
    double sum = 0.0;
    for (size_t w = 0; w < n; w += (size_t)B) {
        int b = (int)((n - w) < (size_t)B ? (n - w) : (size_t)B);
        for (int i = 0; i < b; i++)
            data_eval_window(t->val, w + (size_t)i, t->inputs + (size_t)i * T, t->targets + (size_t)i * T, T);
        float loss;
#ifdef LOCO_CUDA
        if (t->gpu) loss = gpt_cuda_forward(t->gpu, t->inputs, t->targets, b, T) ? NAN : gpt_cuda_loss(t->gpu);
        else
#endif
        loss = gpt_forward(t->model, t->inputs, t->targets, b, T);
        sum += (double)loss * b;
    }
    return (float)(sum / (double)n);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint sections. Floats are stored in the host's IEEE-754 little-endian layout (the build
// refuses big-endian hosts in model/data.c); integers through ckpt_put_u64.

enum { CFG_WORDS = 5, STATE_WORDS = 6 };

size_t trainer_ckpt_scratch_len(void) { return 8 * (CFG_WORDS + STATE_WORDS); }

int trainer_sync(trainer_t *t, int to_device, char *err, size_t errlen) {
#ifdef LOCO_CUDA
    if (t->gpu) {
        size_t n = t->model->num_params;
        int rc = to_device ? gpt_cuda_params_upload(t->gpu, t->model->params, 0, n) ||
                                 gpt_cuda_adamw_upload(t->gpu, t->opt->m, t->opt->v, t->opt->step)
                           : gpt_cuda_params_download(t->gpu, t->model->params, 0, n) ||
                                 gpt_cuda_adamw_download(t->gpu, t->opt->m, t->opt->v, &t->opt->step);
        if (rc) {
            snprintf(err, errlen, "GPU: %s", gpt_cuda_last_error(t->gpu));
            return -1;
        }
    }
#endif
    (void)t;
    (void)to_device;
    (void)err;
    (void)errlen;
    return 0;
}

void trainer_ckpt_add(trainer_t *t, ckpt_t *c, uint8_t *scratch) {
    char why[600];
    if (trainer_sync(t, 0, why, sizeof why) != 0) return; // the caller sees gpt_cuda_last_error: no sections
    const gpt_config_t *m = &t->cfg.model;
    uint64_t cfgw[CFG_WORDS] = {(uint64_t)m->layers, (uint64_t)m->d_model, (uint64_t)m->heads,
                                (uint64_t)m->seq_len, (uint64_t)m->vocab};
    uint64_t st[STATE_WORDS] = {t->step, t->opt->step, t->stream.seed, t->stream.stream, t->stream.draws,
                                (uint64_t)t->cfg.seed};
    for (int i = 0; i < CFG_WORDS; i++) ckpt_put_u64(scratch + 8 * i, cfgw[i]);
    for (int i = 0; i < STATE_WORDS; i++) ckpt_put_u64(scratch + 8 * (CFG_WORDS + i), st[i]);
    size_t pb = t->model->num_params * sizeof(float);
    ckpt_add(c, "model_config", scratch, 8 * CFG_WORDS);
    ckpt_add(c, "run_name", t->cfg.run_name, strlen(t->cfg.run_name));
    ckpt_add(c, "train_state", scratch + 8 * CFG_WORDS, 8 * STATE_WORDS);
    ckpt_add(c, "params", t->model->params, pb);
    ckpt_add(c, "adam_m", t->opt->m, pb);
    ckpt_add(c, "adam_v", t->opt->v, pb);
}

int ckpt_model(const ckpt_t *c, const char *which, gpt_config_t *cfg, const float **params_out,
               char *err, size_t errlen) {
    size_t len = 0;
    const uint8_t *mc = ckpt_get(c, "model_config", &len);
    if (!mc || len != 8 * CFG_WORDS) {
        snprintf(err, errlen, "checkpoint has no valid model_config section");
        return -1;
    }
    uint64_t w[CFG_WORDS];
    for (int i = 0; i < CFG_WORDS; i++) {
        w[i] = ckpt_get_u64(mc + 8 * i);
        if (w[i] > 65536) {
            snprintf(err, errlen, "checkpoint model_config field %d is out of range", i);
            return -1;
        }
    }
    *cfg = (gpt_config_t){(int)w[0], (int)w[1], (int)w[2], (int)w[3], (int)w[4]};
    char why[200];
    if (gpt_config_check(cfg, why, sizeof why) != 0) {
        snprintf(err, errlen, "checkpoint model config: %s", why);
        return -1;
    }
    const uint8_t *p = ckpt_get(c, which, &len);
    if (!p || len != gpt_num_params(cfg) * sizeof(float)) {
        snprintf(err, errlen, "checkpoint has no '%s' section of %zu parameters", which, gpt_num_params(cfg));
        return -1;
    }
    *params_out = (const float *)p;
    return 0;
}

int trainer_ckpt_restore(trainer_t *t, const ckpt_t *c, char *err, size_t errlen) {
    gpt_config_t mc;
    const float *params;
    if (ckpt_model(c, "params", &mc, &params, err, errlen) != 0) return -1;
    const gpt_config_t *m = &t->cfg.model;
    if (mc.layers != m->layers || mc.d_model != m->d_model || mc.heads != m->heads ||
        mc.seq_len != m->seq_len || mc.vocab != m->vocab) {
        snprintf(err, errlen, "checkpoint model (layers %d, d_model %d, heads %d, seq_len %d, vocab %d) "
                 "differs from the config's (%d, %d, %d, %d, %d)", mc.layers, mc.d_model, mc.heads,
                 mc.seq_len, mc.vocab, m->layers, m->d_model, m->heads, m->seq_len, m->vocab);
        return -1;
    }
    size_t pb = t->model->num_params * sizeof(float), lm = 0, lv = 0, ls = 0;
    const uint8_t *am = ckpt_get(c, "adam_m", &lm), *av = ckpt_get(c, "adam_v", &lv);
    const uint8_t *st = ckpt_get(c, "train_state", &ls);
    if (!am || !av || lm != pb || lv != pb || !st || ls != 8 * STATE_WORDS) {
        snprintf(err, errlen, "checkpoint lacks the optimizer or training state needed to resume");
        return -1;
    }
    memcpy(t->model->params, params, pb);
    memcpy(t->opt->m, am, pb);
    memcpy(t->opt->v, av, pb);
    t->step = ckpt_get_u64(st);
    t->opt->step = ckpt_get_u64(st + 8);
    t->stream.seed = ckpt_get_u64(st + 16);
    t->stream.stream = ckpt_get_u64(st + 24);
    t->stream.draws = ckpt_get_u64(st + 32);
    return trainer_sync(t, 1, err, errlen);
}
