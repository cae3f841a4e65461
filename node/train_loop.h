// The inner-step loop shared by `loco train` and the compute thread of `loco run`: steps, progress
// line or log lines, metrics, evaluation, checkpoints (every [train] checkpoint_every steps, at the
// end, and when stopped), and resuming from the newest checkpoint.
#ifndef LOCO_NODE_TRAIN_LOOP_H
#define LOCO_NODE_TRAIN_LOOP_H

#include <signal.h>

#include "node/metrics.h"
#include "node/trainer.h"

// Restores the newest valid checkpoint of [train] checkpoint_dir into t. *resumed is 0 when there is
// none. Returns 0, or -1 with the reason when a checkpoint exists but cannot be used.
int train_resume(trainer_t *t, int *resumed, char *err, size_t errlen);

// Runs inner steps until [train] steps are done or *stop becomes nonzero (then writes a checkpoint).
// Returns 0, or 1 after a failure (logged): a checkpoint that cannot be written, a GPU error.
int train_loop(trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop);

#endif
