// A node's local training state — model, AdamW, data stream, counters — and the operations on it:
// one inner step, evaluation, and checkpoint save/restore. `loco train` drives it directly; the
// peer run loop drives it between outer steps.
#ifndef LOCO_NODE_TRAINER_H
#define LOCO_NODE_TRAINER_H

#include <stdatomic.h>
#include <stdint.h>

#include "model/data.h"
#include "model/gpt.h"
#include "node/checkpoint.h"
#include "node/config.h"
#include "optim/adamw.h"

typedef struct {
    loco_config_t cfg;
    gpt_t *model;
    optim_adamw_t *opt;
    data_set_t *train, *val;     // val may be NULL (no validation shards)
    data_stream_t stream;
    int32_t *inputs, *targets;   // (B,T)
    uint64_t step;               // inner steps completed
    _Atomic uint64_t progress;   // = step, readable from other threads (the net thread's step rate)
    // Last step's figures.
    float loss, grad_norm, lr;
    // [train] device = cuda (LOCO_CUDA builds): the GPU model (model/gpt_cuda.h) holds the training
    // state; model (allocated 1 x 1) and opt then hold host copies of params and AdamW moments,
    // current only after trainer_sync (trainer_ckpt_add and _restore call it themselves).
    struct gpt_cuda *gpu;
} trainer_t;

// TRAINER_PARAMS_ONLY: the model holds parameters and gradients but activations for a 1 x 1 batch only
// (a pipeline stage runs its micro-batches in contexts of its own, node/pipe.h); no trainer_step/eval.
enum { TRAINER_TRAIN_DATA = 1, TRAINER_VAL_DATA = 2, TRAINER_VAL_OPTIONAL = 4, TRAINER_PARAMS_ONLY = 8 };

// Builds the state from a validated config: opens the data named by need_data (TRAINER_* flags), allocates the model for (batch, seq_len), initialises parameters from [train] seed.
// stream is the batch-stream id. NULL with a reason in err.
trainer_t *trainer_new(const loco_config_t *cfg, int need_data, uint64_t stream, char *err, size_t errlen);
// The same holding only part of the model (model/part.h; NULL or n = 0: all): parameters, gradients
// and AdamW state exist inside the parts only, and checkpoints hold those parts. CPU only.
trainer_t *trainer_new_part(const loco_config_t *cfg, int need_data, uint64_t stream, const part_t *part, char *err,
                            size_t errlen);
void trainer_destroy(trainer_t **self_p);

// One inner step: batch, forward, backward, clip, AdamW. Returns the loss.
float trainer_step(trainer_t *t);

// Mean validation loss over the first `batches` windows of seq_len tokens of the first validation
// shard (in batches of up to [train] batch windows). -1 if there is no validation data.
float trainer_eval(trainer_t *t, int windows);

// Adds the trainer's sections to a checkpoint (borrowed pointers: keep t alive until saved).
// scratch must hold trainer_ckpt_scratch_len() bytes and outlive the save.
size_t trainer_ckpt_scratch_len(void);
void trainer_ckpt_add(trainer_t *t, ckpt_t *c, uint8_t *scratch);
// Restores everything saved by trainer_ckpt_add. The checkpoint's model config must equal the
// trainer's. 0 or -1 with the reason.
int trainer_ckpt_restore(trainer_t *t, const ckpt_t *c, char *err, size_t errlen);

// With a GPU model: to_device = 0 copies params, AdamW moments and step to the host copies,
// to_device = 1 the other way (after writing model->params, e.g. loco eval). No-op on the CPU.
int trainer_sync(trainer_t *t, int to_device, char *err, size_t errlen);

// For eval/export/sample: the model config and parameters stored in a checkpoint. which =
// "params" (local θ) or, for run checkpoints, "anchor" (φ). params_out points into c.
int ckpt_model(const ckpt_t *c, const char *which, gpt_config_t *cfg, const float **params_out,
               char *err, size_t errlen);

#endif
