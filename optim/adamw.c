#include "optim/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

optim_adamw_t *optim_adamw_new_part(size_t n, const part_t *part, optim_adamw_hparams_t hp) {
    optim_adamw_t *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->hp = hp;
    o->n = n;
    if (part) o->part = *part;
    o->m = part_alloc(n, sizeof(float), &o->part);
    o->v = part_alloc(n, sizeof(float), &o->part);
    o->decay = part_alloc(n, 1, &o->part);
    if (!o->m || !o->v || !o->decay) optim_adamw_destroy(&o);
    return o;
}

optim_adamw_t *optim_adamw_new(size_t n, const uint8_t *decay_mask, optim_adamw_hparams_t hp) {
    optim_adamw_t *o = optim_adamw_new_part(n, NULL, hp);
    if (o) memcpy(o->decay, decay_mask, n);
    return o;
}

void optim_adamw_destroy(optim_adamw_t **self_p) {
    if (!self_p || !*self_p) return;
    optim_adamw_t *o = *self_p;
    part_free(o->m, o->n, sizeof(float), &o->part);
    part_free(o->v, o->n, sizeof(float), &o->part);
    part_free(o->decay, o->n, 1, &o->part);
    free(o);
    *self_p = NULL;
}

void optim_adamw_update(optim_adamw_t *o, float *params, const float *grads, float lr) {
    o->step++;
    const float b1 = o->hp.beta1, b2 = o->hp.beta2, eps = o->hp.eps;
    // PyTorch (single-tensor AdamW): step_size = lr / bc1; denom = sqrt(v)/sqrt(bc2) + eps.
    // Scalars in double, as PyTorch computes them in Python floats.
    const double bc1 = 1.0 - pow((double)b1, (double)o->step);
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)o->step));
    const float step_size = (float)((double)lr / bc1);
    const float decay_factor = 1.0f - lr * o->hp.weight_decay;
    float *m = o->m, *v = o->v;
    const uint8_t *dm = o->decay;
    size_t n = o->n;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float p = dm[i] ? params[i] * decay_factor : params[i];
        float mi = m[i] * b1 + g * (1.0f - b1);   // torch: m.lerp_(g, 1-b1)
        float vi = v[i] * b2 + g * g * (1.0f - b2);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = p - step_size * (mi / denom);
    }
}

float optim_grad_norm(const float *grads, size_t n) { return (float)sqrt(optim_grad_sumsq(grads, n)); }

void optim_clip_to_norm(float *grads, size_t n, float norm, float max_norm) {
    if (!(max_norm > 0.0f)) return;
    float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f) {
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grads[i] *= coef;
    }
}

double optim_grad_sumsq(const float *grads, size_t n) {
    double s = 0.0;
    // Blocks summed in a fixed order so the result does not depend on the thread count.
    enum { BLK = 1 << 14 };
    size_t nb = (n + BLK - 1) / BLK;
    double part[256];
    size_t done = 0;
    while (done < nb) {
        size_t cnt = nb - done < 256 ? nb - done : 256;
        #pragma omp parallel for schedule(static)
        for (size_t b = 0; b < cnt; b++) {
            size_t i0 = (done + b) * BLK, i1 = i0 + BLK < n ? i0 + BLK : n;
            double a = 0.0;
            for (size_t i = i0; i < i1; i++) a += (double)grads[i] * grads[i];
            part[b] = a;
        }
        for (size_t b = 0; b < cnt; b++) s += part[b];
        done += cnt;
    }
    return s;
}

float optim_clip_grad_norm(float *grads, size_t n, float max_norm) {
    float norm = optim_grad_norm(grads, n);
    optim_clip_to_norm(grads, n, norm, max_norm);
    return norm;
}

float optim_lr_schedule(uint64_t step, uint64_t warmup, uint64_t total, float lr, float lr_min) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup || step >= total) return step >= total && total > warmup ? lr_min : lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    double coeff = 0.5 * (1.0 + cos(M_PI * progress));
    return lr_min + (float)coeff * (lr - lr_min);
}
