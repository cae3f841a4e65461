#include "node/plan_sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One directed channel (a boundary's direction, or the wte link): FIFO, busy until free_at.
typedef struct {
    double alpha, beta, free_at;
} chan_t;

// Sends `bytes` on ch at time t: returns the arrival time.
static double s_send(chan_t *ch, double t, double bytes) {
    double start = t > ch->free_at ? t : ch->free_at;
    ch->free_at = start + bytes / ch->beta;
    return ch->free_at + ch->alpha;
}

typedef struct {
    int S, M, W;              // stages, micro-batches, stage 0's window
    int cap[PLAN_MAX_STAGES]; // micro-batches a middle stage may hold (node/pipe.c's slots)
    double f[PLAN_MAX_STAGES], b[PLAN_MAX_STAGES];
    chan_t fwd[PLAN_MAX_STAGES], bwd[PLAN_MAX_STAGES]; // boundary s → s+1 and back
    chan_t wgrad, wte;        // last → 0, 0 → last
    double act_bytes, grad_bytes, wte_bytes;
} pipe_sim_t;

// Per stage and micro-batch of the current step: when its ACT / GRAD arrived (INFINITY: not yet).
typedef struct {
    double act_at[PLAN_MAX_STAGES][PLAN_SIM_MAX_MB];
    double grad_at[PLAN_MAX_STAGES][PLAN_SIM_MAX_MB];
    int fwd_done[PLAN_MAX_STAGES][PLAN_SIM_MAX_MB], bwd_done[PLAN_MAX_STAGES][PLAN_SIM_MAX_MB];
} step_state_t;

// A backward of micro-batch m at stage s ending at `end`: its gradient goes upstream (at stage 0
// the micro-batch is done and leaves the window).
static void s_backward_done(pipe_sim_t *p, step_state_t *st, int s, int m, double end, int *held, int *inflight) {
    st->bwd_done[s][m] = 1;
    if (s > 0) {
        st->grad_at[s - 1][m] = s_send(&p->bwd[s - 1], end, p->grad_bytes);
        held[s]--;
    } else {
        (*inflight)--;
    }
}

// One step of one pipeline. start[s]: when stage s may begin it (stage 0: after its previous step;
// a middle stage: when it finished its previous one; the last stage: when the new wte arrived).
// Writes next[s], when stage s may begin the next step; busy[s] += compute time.
static void s_step(pipe_sim_t *p, step_state_t *st, const double *start, double *next, double *busy) {
    int S = p->S, M = p->M;
    double free_at[PLAN_MAX_STAGES];
    int issued = 0, inflight = 0, held[PLAN_MAX_STAGES] = {0};
    for (int s = 0; s < S; s++) {
        free_at[s] = start[s];
        for (int m = 0; m < M; m++) {
            st->act_at[s][m] = st->grad_at[s][m] = INFINITY;
            st->fwd_done[s][m] = st->bwd_done[s][m] = 0;
        }
    }
    // Event loop: repeatedly give the stage that can start a task earliest its next task (backward
    // first among those ready when it frees). Ties go to the later stage (drains the pipeline).
    for (;;) {
        int best_s = -1, best_m = -1, best_bwd = 0;
        double best_t = INFINITY;
        for (int s = S - 1; s >= 0; s--) {
            // Earliest ready backward and forward at stage s.
            double tb = INFINITY, tf = INFINITY;
            int mb = -1, mf = -1;
            for (int m = 0; m < M; m++) {
                if (st->fwd_done[s][m] && !st->bwd_done[s][m] && s < S - 1 && st->grad_at[s][m] < tb)
                    tb = st->grad_at[s][m], mb = m;
                if (!st->fwd_done[s][m]) {
                    double a = s == 0 ? (m == issued ? start[0] : INFINITY) : st->act_at[s][m];
                    if (a < tf) tf = a, mf = m;
                }
            }
            int cap = s == 0 ? p->W : s == S - 1 ? 1 : p->cap[s];
            int busy_slots = s == 0 ? inflight : held[s];
            if (busy_slots >= cap) tf = INFINITY;
            double rb = tb > free_at[s] ? tb : free_at[s], rf = tf > free_at[s] ? tf : free_at[s];
            // At the moment the stage frees, a ready backward goes first.
            int use_bwd = mb >= 0 && (rb <= rf || (tb <= free_at[s] && tf <= free_at[s]));
            double t = use_bwd ? rb : rf;
            int m = use_bwd ? mb : mf;
            if (m >= 0 && t < best_t) best_t = t, best_s = s, best_m = m, best_bwd = use_bwd;
        }
        if (best_s < 0) break;
        int s = best_s, m = best_m;
        if (best_bwd) {
            double end = best_t + p->b[s];
            busy[s] += p->b[s];
            free_at[s] = end;
            s_backward_done(p, st, s, m, end, held, &inflight);
        } else {
            st->fwd_done[s][m] = 1;
            if (s == 0) issued++, inflight++;
            else held[s]++;
            if (s == S - 1) { // forward and backward back to back
                double end = best_t + p->f[s] + p->b[s];
                busy[s] += p->f[s] + p->b[s];
                free_at[s] = end;
                s_backward_done(p, st, s, m, end, held, &inflight);
            } else {
                double end = best_t + p->f[s];
                busy[s] += p->f[s];
                free_at[s] = end;
                st->act_at[s + 1][m] = s_send(&p->fwd[s], end, p->act_bytes);
            }
        }
    }
    // Step end: the last stage sends the head's wte gradient to stage 0, which steps and sends the
    // new wte back, then begins its next step; the last stage begins its next when the wte is in.
    for (int s = 0; s < S; s++) next[s] = free_at[s];
    if (S > 1) {
        double wg = s_send(&p->wgrad, free_at[S - 1], p->wte_bytes);
        next[0] = free_at[0] > wg ? free_at[0] : wg;
        double wt = s_send(&p->wte, next[0], p->wte_bytes);
        if (wt > next[S - 1]) next[S - 1] = wt;
    }
}

int plan_simulate(const plan_cluster_t *c, const plan_layout_t *l, int steps, plan_sim_t *out, char *err,
                  size_t errlen) {
    memset(out, 0, sizeof *out);
    plan_eval_t e;
    if (plan_eval(c, l, &e) != 0 || !e.feasible) {
        snprintf(err, errlen, "%s", e.why[0] ? e.why : "infeasible layout");
        return -1;
    }
    if (steps < 2) steps = 2;
    int S = l->S, R = l->R, M = c->micro_batches;
    if (M > PLAN_SIM_MAX_MB) {
        snprintf(err, errlen, "%d micro-batches: the simulation handles at most %d", M, PLAN_SIM_MAX_MB);
        return -1;
    }
    step_state_t *st = malloc(sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double C = c->model.d_model, T = c->model.seq_len, V = c->model.vocab, tok = (double)c->micro_batch * T;
    double worst = 0, worst_first = 0, busy[PLAN_MAX_STAGES] = {0};
    for (int r = 0; r < R; r++) {
        pipe_sim_t p = {.S = S, .M = M, .W = plan_stage_window(c->schedule, M, S, l->window, 0)};
        for (int s = 0; s < S; s++) p.cap[s] = plan_stage_window(c->schedule, M, S, l->window, s);
        p.act_bytes = 4.0 * tok * C + 4.0 * tok; // activations and their targets
        p.grad_bytes = 4.0 * tok * C;
        p.wte_bytes = 4.0 * V * C;
        for (int s = 0; s < S; s++) {
            p.f[s] = e.t[s] / 3.0;
            p.b[s] = e.t[s] - p.f[s];
            if (s + 1 < S) {
                plan_link_t lk = plan_link(c, l->slot[s][r], l->slot[s + 1][r]);
                p.fwd[s] = p.bwd[s] = (chan_t){lk.alpha, lk.beta, 0};
            }
        }
        if (S > 1) {
            plan_link_t lk = plan_link(c, l->slot[S - 1][r], l->slot[0][r]);
            p.wgrad = p.wte = (chan_t){lk.alpha, lk.beta, 0};
        }
        double start[PLAN_MAX_STAGES] = {0}, first = 0, pb[PLAN_MAX_STAGES] = {0}; // first: stage 0's first step
        for (int k = 0; k < steps; k++) {
            double next[PLAN_MAX_STAGES], kb[PLAN_MAX_STAGES] = {0};
            s_step(&p, st, start, next, kb);
            if (k == 0) first = next[0];
            else
                for (int s = 0; s < S; s++) pb[s] += kb[s];
            memcpy(start, next, sizeof next);
        }
        double steady = (start[0] - first) / (steps - 1);
        if (steady > worst) worst = steady;
        if (first > worst_first) worst_first = first;
        for (int s = 0; s < S; s++) {
            double f = pb[s] / (start[0] - first);
            if (f > busy[s]) busy[s] = f;
        }
    }
    free(st);
    double H = c->inner_steps, X = e.exchange_s;
    out->pipe_s = worst;
    out->first_step_s = worst_first;
    out->step_s = c->overlap ? fmax(worst, X / H) : worst + X / H;
    for (int s = 0; s < S; s++) out->busy[s] = busy[s];
    return 0;
}
