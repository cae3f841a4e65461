// AdamW with PyTorch's semantics, global grad-norm clipping, and the warmup + cosine schedule
// (ALGORITHMS.md, inner loop). Operates on flat buffers; the decay mask says which elements get
// weight decay (matrices and embeddings, not biases or LayerNorm parameters).
#ifndef LOCO_OPTIM_ADAMW_H
#define LOCO_OPTIM_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "model/part.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
} optim_adamw_hparams_t;

typedef struct {
    optim_adamw_hparams_t hp;
    size_t n;
    float *m, *v;        // first and second moments (n each)
    uint8_t *decay;      // (n) 1 where weight decay applies
    uint64_t step;       // s, Adam's step counter; the next update uses s+1
    part_t part;         // the parts of m, v and decay that exist (optim_adamw_new_part); n = 0: all
} optim_adamw_t;

// Allocates zero moments for n parameters; decay_mask (n bytes) is copied. NULL on OOM.
optim_adamw_t *optim_adamw_new(size_t n, const uint8_t *decay_mask, optim_adamw_hparams_t hp);
// Zero moments and a zero decay mask over the parts of n parameters only (model/part.h); the
// caller fills decay inside the parts and updates views of them. NULL on OOM.
optim_adamw_t *optim_adamw_new_part(size_t n, const part_t *part, optim_adamw_hparams_t hp);
void optim_adamw_destroy(optim_adamw_t **self_p);

// One update of params (n) with grads (n) at learning rate lr; increments step first.
void optim_adamw_update(optim_adamw_t *o, float *params, const float *grads, float lr);

// L2 norm of grads (n), accumulated in double; its square (a part of a norm summed elsewhere, e.g.
// over pipeline stages), the same sum before the root.
float optim_grad_norm(const float *grads, size_t n);
double optim_grad_sumsq(const float *grads, size_t n);
// Scales grads by max_norm/(norm + 1e-6) when that is below 1, for a norm computed elsewhere (the
// whole model's, of which grads is a part); max_norm ≤ 0 disables.
void optim_clip_to_norm(float *grads, size_t n, float norm, float max_norm);
// Scales grads by max_norm/norm when norm > max_norm (torch.nn.utils.clip_grad_norm_ semantics,
// including its 1e-6 in the denominator). max_norm ≤ 0 disables. Returns the norm before clipping.
float optim_clip_grad_norm(float *grads, size_t n, float max_norm);

// Learning rate at inner step `step` (0-based): linear warmup over `warmup` steps from lr/warmup
// to lr, then cosine from lr to lr_min at step `total`.
float optim_lr_schedule(uint64_t step, uint64_t warmup, uint64_t total, float lr, float lr_min);

#endif
