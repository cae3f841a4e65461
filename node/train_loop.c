#include "node/train_loop.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "node/log.h"
#include "node/telemetry.h"
#ifdef LOCO_CUDA
#include "model/gpt_cuda.h"
#endif

int train_save(trainer_t *t, train_ctx_t *x, char *err, size_t errlen) {
    ckpt_t c = {0};
    uint8_t scratch[256];
    trainer_ckpt_add(t, &c, scratch);
    if (c.n == 0) { // only when a GPU model's state could not be read back
        snprintf(err, errlen, "cannot read the training state back from the GPU");
        return -1;
    }
    if (x && x->ckpt_extra) x->ckpt_extra(x->ckpt_ctx, &c);
    char path[1200];
    if (ckpt_dir_save(&c, t->cfg.checkpoint_dir, t->step, t->cfg.checkpoint_keep, path, sizeof path, err, errlen) != 0)
        return -1;
    log_info("train", "checkpoint step %llu -> %s", (unsigned long long)t->step, path);
    return 0;
}

static void s_fmt_eta(char *buf, size_t len, double s) {
    if (s < 0 || s > 1e7) snprintf(buf, len, "?");
    else if (s >= 3600) snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

int train_resume(trainer_t *t, int *resumed, char *err, size_t errlen) {
    return train_resume_ex(t, resumed, NULL, NULL, err, errlen);
}

int train_resume_ex(trainer_t *t, int *resumed, int (*restore_extra)(void *ctx, const ckpt_t *c, char *err, size_t errlen),
                    void *ctx, char *err, size_t errlen) {
    char path[1200], why[1024];
    ckpt_t c;
    *resumed = 0;
    if (ckpt_resolve(t->cfg.checkpoint_dir, path, sizeof path, why, sizeof why) != 0) return 0; // nothing to resume
    if (ckpt_load(&c, path, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot resume: %.1000s", why);
        return -1;
    }
    if (trainer_ckpt_restore(t, &c, why, sizeof why) != 0 ||
        (restore_extra && restore_extra(ctx, &c, why, sizeof why) != 0)) {
        snprintf(err, errlen, "cannot resume from %.600s: %.400s", path, why);
        ckpt_free(&c);
        return -1;
    }
    ckpt_free(&c);
    *resumed = 1;
    log_info("train", "resumed from %s at step %llu", path, (unsigned long long)t->step);
    return 0;
}

void train_ctx_init(train_ctx_t *x, trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop) {
    memset(x, 0, sizeof *x);
    x->mx = mx;
    x->stop = stop;
    x->tty = isatty(STDERR_FILENO);
    x->t_start = x->t_last = metrics_mono();
    x->first = t->step;
    x->final_checkpoint = 1;
    x->periodic_checkpoints = 1;
}

int train_step_logged(trainer_t *t, train_ctx_t *x) {
    char err[1536];
    uint64_t total = (uint64_t)t->cfg.steps;
    size_t tok_per_step = (size_t)t->cfg.batch * t->cfg.model.seq_len;
    double t0 = metrics_mono();
    float loss = trainer_step(t);
#ifdef LOCO_CUDA
    if (t->gpu && gpt_cuda_last_error(t->gpu)) {
        log_error("train", "GPU: %s", gpt_cuda_last_error(t->gpu));
        return 1;
    }
#endif
    double t1 = metrics_mono();
    x->compute_s += t1 - t0;
    double tps = (double)tok_per_step / (t1 - t0);
    metrics_write(x->mx, "step", t->step, "\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                  "\"elapsed_s\":%.3f", loss, t->lr, t->grad_norm, tps, t1 - x->t_start);
    telemetry_step(x->mx, t->step, loss, tps, x->compute_s, t1 - x->t_start);
    double rate = (double)(t->step - x->first) / (t1 - x->t_start);
    char eta[32];
    s_fmt_eta(eta, sizeof eta, (double)(total - t->step) / rate);
    if (x->tty) {
        fprintf(stderr, "\r\033[Kstep %llu/%llu | loss %.4f | lr %.2e | %.0f tok/s | ETA %s%s",
                (unsigned long long)t->step, (unsigned long long)total, loss, t->lr, tps, eta, x->status);
    } else if (t->step % 10 == 0 || t->step == total || t1 - x->t_last > 30) {
        log_info("train", "step %llu/%llu loss %.4f lr %.2e grad_norm %.3f %.0f tok/s ETA %s%s",
                 (unsigned long long)t->step, (unsigned long long)total, loss, t->lr, t->grad_norm, tps, eta, x->status);
        x->t_last = t1;
    }
    if (t->cfg.eval_every > 0 && (t->step % (uint64_t)t->cfg.eval_every == 0 || t->step == total)) {
        double e0 = metrics_mono();
        float vl = trainer_eval(t, t->cfg.eval_batches);
        x->eval_s += metrics_mono() - e0;
        if (vl >= 0) {
            if (x->tty) fputc('\n', stderr);
            log_info("train", "step %llu val_loss %.4f", (unsigned long long)t->step, vl);
            metrics_write(x->mx, "eval", t->step, "\"val_loss\":%.6f,\"elapsed_s\":%.3f", vl, metrics_mono() - x->t_start);
            telemetry_eval(x->mx, vl);
        }
    }
    if ((x->periodic_checkpoints && t->cfg.checkpoint_every > 0 && t->step % (uint64_t)t->cfg.checkpoint_every == 0) ||
        (x->final_checkpoint && t->step == total)) {
        if (x->tty) fputc('\n', stderr);
        if (train_save(t, x, err, sizeof err) != 0) {
            // A full disk must not lose the run: the previous checkpoint is intact.
            log_error("train", "checkpoint failed: %s", err);
            return 1;
        }
    }
    return 0;
}

int train_finish(trainer_t *t, train_ctx_t *x, int rc) {
    char err[1536];
    if (x->tty) fputc('\n', stderr);
    if (*x->stop && rc == 0) {
        log_info("train", "interrupted at step %llu; writing a checkpoint", (unsigned long long)t->step);
        if (train_save(t, x, err, sizeof err) != 0) {
            log_error("train", "checkpoint failed: %s", err);
            rc = 1;
        }
    }
    if (rc == 0) log_info("train", "done: step %llu, last loss %.4f", (unsigned long long)t->step, t->loss);
    return rc;
}

int train_loop(trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop) {
    train_ctx_t x;
    train_ctx_init(&x, t, mx, stop);
    int rc = 0;
    while (t->step < (uint64_t)t->cfg.steps && !*stop && rc == 0) rc = train_step_logged(t, &x);
    return train_finish(t, &x, rc);
}
