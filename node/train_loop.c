#include "node/train_loop.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "node/log.h"
#ifdef LOCO_CUDA
#include "model/gpt_cuda.h"
#endif

static int s_save(trainer_t *t, char *err, size_t errlen) {
    ckpt_t c = {0};
    uint8_t scratch[256];
    trainer_ckpt_add(t, &c, scratch);
    if (c.n == 0) { // only when a GPU model's state could not be read back
        snprintf(err, errlen, "cannot read the training state back from the GPU");
        return -1;
    }
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
    char path[1200], why[1024];
    ckpt_t c;
    *resumed = 0;
    if (ckpt_resolve(t->cfg.checkpoint_dir, path, sizeof path, why, sizeof why) != 0) return 0; // nothing to resume
    if (ckpt_load(&c, path, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot resume: %.1000s", why);
        return -1;
    }
    if (trainer_ckpt_restore(t, &c, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot resume from %.600s: %.400s", path, why);
        ckpt_free(&c);
        return -1;
    }
    ckpt_free(&c);
    *resumed = 1;
    log_info("train", "resumed from %s at step %llu", path, (unsigned long long)t->step);
    return 0;
}

int train_loop(trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop) {
    char err[1536];
    int rc = 0;
    int tty = isatty(STDERR_FILENO);
    double t_start = metrics_mono(), t_last = t_start;
    uint64_t first = t->step, total = (uint64_t)t->cfg.steps;
    size_t tok_per_step = (size_t)t->cfg.batch * t->cfg.model.seq_len;
    while (t->step < total && !*stop) {
        double t0 = metrics_mono();
        float loss = trainer_step(t);
#ifdef LOCO_CUDA
        if (t->gpu && gpt_cuda_last_error(t->gpu)) {
            log_error("train", "GPU: %s", gpt_cuda_last_error(t->gpu));
            rc = 1;
            break;
        }
#endif
        double t1 = metrics_mono();
        double tps = (double)tok_per_step / (t1 - t0);
        metrics_write(mx, "step", t->step, "\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,"
                      "\"elapsed_s\":%.3f", loss, t->lr, t->grad_norm, tps, t1 - t_start);
        double rate = (double)(t->step - first) / (t1 - t_start);
        char eta[32];
        s_fmt_eta(eta, sizeof eta, (double)(total - t->step) / rate);
        if (tty) {
            fprintf(stderr, "\r\033[Kstep %llu/%llu | loss %.4f | lr %.2e | %.0f tok/s | ETA %s",
                    (unsigned long long)t->step, (unsigned long long)total, loss, t->lr, tps, eta);
        } else if (t->step % 10 == 0 || t->step == total || t1 - t_last > 30) {
            log_info("train", "step %llu/%llu loss %.4f lr %.2e grad_norm %.3f %.0f tok/s ETA %s",
                     (unsigned long long)t->step, (unsigned long long)total, loss, t->lr, t->grad_norm, tps, eta);
            t_last = t1;
        }
        if (t->cfg.eval_every > 0 && (t->step % (uint64_t)t->cfg.eval_every == 0 || t->step == total)) {
            float vl = trainer_eval(t, t->cfg.eval_batches);
            if (vl >= 0) {
                if (tty) fputc('\n', stderr);
                log_info("train", "step %llu val_loss %.4f", (unsigned long long)t->step, vl);
                metrics_write(mx, "eval", t->step, "\"val_loss\":%.6f,\"elapsed_s\":%.3f", vl, metrics_mono() - t_start);
            }
        }
        if ((t->cfg.checkpoint_every > 0 && t->step % (uint64_t)t->cfg.checkpoint_every == 0) || t->step == total) {
            if (tty) fputc('\n', stderr);
            if (s_save(t, err, sizeof err) != 0) {
                // A full disk must not lose the run: the previous checkpoint is intact.
                log_error("train", "checkpoint failed: %s", err);
                rc = 1;
                break;
            }
        }
    }
    if (tty) fputc('\n', stderr);
    if (*stop && rc == 0) {
        log_info("train", "interrupted at step %llu; writing a checkpoint", (unsigned long long)t->step);
        if (s_save(t, err, sizeof err) != 0) {
            log_error("train", "checkpoint failed: %s", err);
            rc = 1;
        }
    }
    if (rc == 0) log_info("train", "done: step %llu, last loss %.4f", (unsigned long long)t->step, t->loss);
    return rc;
}
