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
    return trainer_new_part(cfg, need_data, stream, NULL, err, errlen);
}

trainer_t *trainer_new_part(const loco_config_t *cfg, int need_data, uint64_t stream, const part_t *part, char *err,
                            size_t errlen) {
    if (part && part->n == 0) part = NULL;
    if (part && !strcmp(cfg->device, "cuda")) {
        snprintf(err, errlen, "a model held in parts (a pipeline stage) runs on the CPU only ([train] device = cpu)");
        return NULL;
    }
    if (part && cfg->init[0]) {
        snprintf(err, errlen, "[train] init is not supported for a pipeline stage yet (it holds part of the model): "
                 "start the stages without it");
        return NULL;
    }
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
    // With a GPU model, or for a pipeline stage, the CPU model needs no activations: 1 x 1.
    int small = t->gpu || (need_data & TRAINER_PARAMS_ONLY);
    t->model = gpt_new_part(&cfg->model, part, small ? 1 : B, small ? 1 : T, err, errlen);
    if (!t->model) goto fail;
    gpt_set_threads(t->model, cfg->threads);
    gpt_init_params(t->model, (uint64_t)cfg->seed);
    size_t n = t->model->num_params;
    optim_adamw_hparams_t hp = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
    t->opt = optim_adamw_new_part(n, part, hp);
    if (!t->opt) goto oom;
    // The decay mask, inside the parts only (all of it without parts).
    const part_t *pt = &t->model->part;
    for (int i = 0; i < gpt_num_tensors(&cfg->model); i++) {
        gpt_tensor_t tt;
        gpt_tensor(&cfg->model, i, &tt);
        for (int k = 0; k < (pt->n ? pt->n : 1); k++) {
            size_t lo = pt->n ? pt->off[k] : 0, hi = pt->n ? pt->off[k] + pt->len[k] : n;
            size_t b = lo > tt.offset ? lo : tt.offset, e = hi < tt.offset + tt.numel ? hi : tt.offset + tt.numel;
            if (e > b) memset(t->opt->decay + b, tt.decay, e - b);
        }
    }
    t->inputs = calloc((size_t)B * T, sizeof(int32_t));
    t->targets = calloc((size_t)B * T, sizeof(int32_t));
    if (!t->inputs || !t->targets) goto oom;
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

size_t trainer_ckpt_scratch_len(void) { return 8 * (CFG_WORDS + STATE_WORDS) + 8 + 16 * PART_MAX; }

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
    const part_t *pt = &t->model->part;
    if (pt->n == 0) {
        ckpt_add(c, "params", t->model->params, pb);
        ckpt_add(c, "adam_m", t->opt->m, pb);
        ckpt_add(c, "adam_v", t->opt->v, pb);
        return;
    }
    // A model held in parts (a pipeline stage): "parts" = count, then (offset, length) in floats per
    // part; "params.K", "adam_m.K", "adam_v.K" hold part K.
    uint8_t *w = scratch + 8 * (CFG_WORDS + STATE_WORDS);
    ckpt_put_u64(w, (uint64_t)pt->n);
    for (int k = 0; k < pt->n; k++) {
        ckpt_put_u64(w + 8 + 16 * k, pt->off[k]);
        ckpt_put_u64(w + 16 + 16 * k, pt->len[k]);
    }
    ckpt_add(c, "parts", w, 8 + 16 * (size_t)pt->n);
    static const char *names[3] = {"params", "adam_m", "adam_v"};
    const float *bufs[3] = {t->model->params, t->opt->m, t->opt->v};
    for (int k = 0; k < pt->n; k++)
        for (int j = 0; j < 3; j++) {
            char name[32];
            snprintf(name, sizeof name, "%s.%d", names[j], k);
            ckpt_add(c, name, bufs[j] + pt->off[k], pt->len[k] * sizeof(float));
        }
}

// The checkpoint's parts ("parts" section) into *pt: 0, 1 with none (a whole model), -1 malformed.
static int s_ckpt_parts(const ckpt_t *c, size_t n, part_t *pt, char *err, size_t errlen) {
    size_t len = 0;
    const uint8_t *w = ckpt_get(c, "parts", &len);
    memset(pt, 0, sizeof *pt);
    if (!w) return 1;
    uint64_t k = len >= 8 ? ckpt_get_u64(w) : 0;
    if (len < 8 || k < 1 || k > PART_MAX || len != 8 + 16 * k) {
        snprintf(err, errlen, "checkpoint 'parts' section is malformed (%zu bytes)", len);
        return -1;
    }
    pt->n = (int)k;
    for (int i = 0; i < pt->n; i++) {
        pt->off[i] = (size_t)ckpt_get_u64(w + 8 + 16 * i);
        pt->len[i] = (size_t)ckpt_get_u64(w + 16 + 16 * i);
    }
    char why[160];
    if (part_check(pt, n, why, sizeof why) != 0) {
        snprintf(err, errlen, "checkpoint 'parts' section: %s", why);
        return -1;
    }
    return 0;
}

// The checkpoint's model config: 0 or -1 with the reason.
static int s_ckpt_config(const ckpt_t *c, gpt_config_t *cfg, char *err, size_t errlen) {
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
    return 0;
}

int ckpt_model(const ckpt_t *c, const char *which, gpt_config_t *cfg, const float **params_out,
               char *err, size_t errlen) {
    size_t len = 0;
    if (s_ckpt_config(c, cfg, err, errlen) != 0) return -1;
    const uint8_t *p = ckpt_get(c, which, &len);
    if (!p || len != gpt_num_params(cfg) * sizeof(float)) {
        if (ckpt_get(c, "parts", &len))
            snprintf(err, errlen, "this is a pipeline stage's checkpoint: it holds only the stage's part of the model's "
                     "%zu parameters", gpt_num_params(cfg));
        else
            snprintf(err, errlen, "checkpoint has no '%s' section of %zu parameters", which, gpt_num_params(cfg));
        return -1;
    }
    *params_out = (const float *)p;
    return 0;
}

int trainer_ckpt_restore(trainer_t *t, const ckpt_t *c, char *err, size_t errlen) {
    gpt_config_t mc;
    if (s_ckpt_config(c, &mc, err, errlen) != 0) return -1;
    const gpt_config_t *m = &t->cfg.model;
    if (mc.layers != m->layers || mc.d_model != m->d_model || mc.heads != m->heads ||
        mc.seq_len != m->seq_len || mc.vocab != m->vocab) {
        snprintf(err, errlen, "checkpoint model (layers %d, d_model %d, heads %d, seq_len %d, vocab %d) "
                 "differs from the config's (%d, %d, %d, %d, %d)", mc.layers, mc.d_model, mc.heads,
                 mc.seq_len, mc.vocab, m->layers, m->d_model, m->heads, m->seq_len, m->vocab);
        return -1;
    }
    size_t n = t->model->num_params, ls = 0;
    const uint8_t *st = ckpt_get(c, "train_state", &ls);
    if (!st || ls != 8 * STATE_WORDS) {
        snprintf(err, errlen, "checkpoint lacks the training state needed to resume");
        return -1;
    }
    part_t cp;
    int whole = s_ckpt_parts(c, n, &cp, err, errlen);
    if (whole < 0) return -1;
    const part_t *pt = &t->model->part;
    static const char *names[3] = {"params", "adam_m", "adam_v"};
    float *bufs[3] = {t->model->params, t->opt->m, t->opt->v};
    if (whole) {
        // A whole checkpoint; a model held in parts takes its parts from it.
        const uint8_t *sec[3];
        for (int j = 0; j < 3; j++) {
            size_t len = 0;
            sec[j] = ckpt_get(c, names[j], &len);
            if (!sec[j] || len != n * sizeof(float)) {
                snprintf(err, errlen, "checkpoint lacks the %s needed to resume (a '%s' section of %zu floats)",
                         j ? "optimizer state" : "parameters", names[j], n);
                return -1;
            }
        }
        for (int k = 0; k < (pt->n ? pt->n : 1); k++) {
            size_t off = pt->n ? pt->off[k] : 0, len = pt->n ? pt->len[k] : n;
            for (int j = 0; j < 3; j++) memcpy(bufs[j] + off, sec[j] + off * sizeof(float), len * sizeof(float));
        }
    } else {
        // A checkpoint of parts restores only the same parts.
        int same = pt->n == cp.n;
        for (int k = 0; same && k < cp.n; k++) same = pt->off[k] == cp.off[k] && pt->len[k] == cp.len[k];
        if (!same) {
            snprintf(err, errlen, "checkpoint holds part of the model (%d part(s), the first %zu parameters from %zu), "
                     "not the part%s this node holds (a pipeline stage's checkpoint resumes that stage only)", cp.n,
                     cp.len[0], cp.off[0], pt->n ? "" : "s: it holds the whole model");
            return -1;
        }
        for (int k = 0; k < cp.n; k++)
            for (int j = 0; j < 3; j++) {
                char name[32];
                size_t len = 0;
                snprintf(name, sizeof name, "%s.%d", names[j], k);
                const uint8_t *sec = ckpt_get(c, name, &len);
                if (!sec || len != cp.len[k] * sizeof(float)) {
                    snprintf(err, errlen, "checkpoint lacks section '%s' of %zu floats", name, cp.len[k]);
                    return -1;
                }
                memcpy(bufs[j] + cp.off[k], sec, len);
            }
    }
    t->step = ckpt_get_u64(st);
    t->opt->step = ckpt_get_u64(st + 8);
    t->stream.seed = ckpt_get_u64(st + 16);
    t->stream.stream = ckpt_get_u64(st + 24);
    t->stream.draws = ckpt_get_u64(st + 32);
    return trainer_sync(t, 1, err, errlen);
}
