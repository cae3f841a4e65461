// A discrete-event simulation of a layout's inner steps as the pipeline runtime schedules them
// (node/pipe.c), driven by the same per-block, per-head and per-link figures as the cost model
// (node/plan.h) — the check of the cost model's closed form on layouts too large to run here.
//
// Each replica's pipeline (routing chain: replica r of a stage feeds replica r of the next) is
// simulated on its own; a step of the layout takes as long as its slowest pipeline's. A stage node
// is one compute resource; the forward of a micro-batch takes a third of its t_s, the backward two
// thirds (the last stage runs both back to back, its head included). Stage 0 keeps at most
// min(M, S) micro-batches in flight with 1F1B, M with GPipe; every stage runs a ready backward before
// a ready forward and a middle stage holds at most min(M, S − s) micro-batches. Each direction of a
// boundary is a FIFO channel: a message occupies it for its bytes / β and arrives α after leaving
// (activations carry their targets too). At the end of a step the last stage sends the head's wte
// gradient to stage 0, which steps and sends the new wte back; stage 0 then starts its next step and
// the last stage waits for the wte before its next forward. The outer exchange is added as the cost
// model adds it (X / H, or hidden up to the step with overlap). Optimizer time is not modelled (as in
// the cost model).
#ifndef LOCO_NODE_PLAN_SIM_H
#define LOCO_NODE_PLAN_SIM_H

#include "node/plan.h"

#define PLAN_SIM_MAX_MB 256 // micro-batches per step the simulation handles

typedef struct {
    double step_s;           // mean inner-step time in steady state (after the first step), exchange included
    double pipe_s;           // the same without the outer exchange: micro-batches and wte sync
    double first_step_s;     // the first step (from an empty pipeline)
    double busy[PLAN_MAX_STAGES]; // fraction of steady-state time each stage's slowest replica computes
} plan_sim_t;

// Simulates `steps` inner steps (≥ 2) of layout l on cluster c. 0, or -1 with the reason in err
// (an infeasible layout: plan_eval's reason).
int plan_simulate(const plan_cluster_t *c, const plan_layout_t *l, int steps, plan_sim_t *out, char *err,
                  size_t errlen);

#endif
