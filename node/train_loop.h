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

// The same with extra checkpoint sections restored by restore_extra (the outer state of loco run).
int train_resume_ex(trainer_t *t, int *resumed, int (*restore_extra)(void *ctx, const ckpt_t *c, char *err, size_t errlen),
                    void *ctx, char *err, size_t errlen);

// The bookkeeping around inner steps, for loops that interleave other work (loco run's outer steps).
typedef struct {
    metrics_t *mx;
    volatile sig_atomic_t *stop;
    int tty;
    double t_start, t_last;
    double compute_s;        // wall time spent inside inner steps (compute utilisation)
    double eval_s;           // wall time spent in periodic evaluations ([train] eval_every)
    uint64_t first;
    int final_checkpoint;    // checkpoint when [train] steps are reached (default 1)
    int periodic_checkpoints; // every [train] checkpoint_every steps, inside the step (default 1)
    char status[96];         // appended to the progress line (e.g. " | outer 12")
    void (*ckpt_extra)(void *ctx, ckpt_t *c); // adds sections to every checkpoint; may be NULL
    void *ckpt_ctx;
} train_ctx_t;

void train_ctx_init(train_ctx_t *x, trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop);
// One inner step with its metrics, progress line, evaluation and due checkpoint. 0, or 1 on a
// failure (logged).
int train_step_logged(trainer_t *t, train_ctx_t *x);
// Writes a checkpoint now (with the extra sections). 0 or -1 with the reason.
int train_save(trainer_t *t, train_ctx_t *x, char *err, size_t errlen);
// After the loop: the checkpoint when stopped, the closing line. Returns rc, or 1 if that failed.
int train_finish(trainer_t *t, train_ctx_t *x, int rc);

// Runs inner steps until [train] steps are done or *stop becomes nonzero (then writes a checkpoint).
// Returns 0, or 1 after a failure (logged): a checkpoint that cannot be written, a GPU error.
int train_loop(trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop);

#endif
