// The placement planner: a cost model of pipeline-parallel training with DiLoCo/NoLoCo replicas on
// a cluster of nodes with heterogeneous devices and NICs, and an exact search over layouts
// (../shared/PLACEMENT.md). Pure functions: no I/O, no clocks; `loco plan` (node/cmd_plan.c) reads
// the cluster description and prints the result.
//
// A layout is R replicas × S stages: stage s holds blocks [cut[s], cut[s+1]) on R nodes, one per
// replica; replica r's pipeline is slot[0][r] → slot[1][r] → ... Every node runs at most one slot.
//
// Cost model (one inner step, times in seconds):
//   work per token of block l, fwd+bwd:  w_l = calib_block · 3 · (24 C² + 4 T C)
//   head (final LayerNorm + tied LM head): calib_head · 6 C V, on the last stage
//   stage s:   t_s = mb · T · Σ w / v_s, v_s = the slowest FLOP/s among the stage's nodes
//   boundary:  k_s = max over replicas of (α + mb·T·C·4 / β) between slot[s][r] and slot[s+1][r]
//              (α, β: the best NIC pair both ends can use, or the pair's [pair] figures; see plan_link_t),
//              q_s = the same without α (how long a message occupies the link)
//   makespan:  mk = Σ + max((M − 1) · B, ⌊(M − 1) / W⌋ · Σ + ((M − 1) mod W) · B), with
//              Σ = Σ t_s + 2 Σ k_s (fill and drain: one micro-batch's round trip), B = max(max t_s,
//              max q_s) (the steady rate), W = min(M, S) micro-batches in flight with 1F1B (the second
//              term: the window binds when latency is large against compute), W = M with GPipe.
//              node/plan_sim.h simulates the schedule to check this closed form.
//   exchange:  X_s = DiLoCo ring: 2(R−1)/R · P_s · codec / β_s + 2(R−1) α_s; NoLoCo pair:
//              P_s · codec / β_s + α_s, with β_s, α_s the worst pair among the stage's nodes;
//              X = max_s X_s, once every H inner steps (none when R = 1)
//   tied wte:  W = max over replicas of 2 (α + V·C·4 / β) between the last stage and stage 0 (S > 1):
//              the head's part of the embedding gradient goes to stage 0, the new embedding comes
//              back before the next head forward (the pipeline runtime's protocol); counted whole
//   step:      overlap ? max(mk + W, X / H) : mk + W + X / H
//   memory:    17 bytes · P_s (params, grads, Adam m and v, decay mask) + with replicas 4 bytes ·
//              (10 + 1 with error feedback) · P'_s of outer state and 4 · (3 P_s + 2 P'_s) of background
//              checkpoint snapshot (P'_s: the range the outer step covers, P_s less the last stage's wte
//              copy) + in-flight activations (min(M, S − s) micro-batches for 1F1B, M for GPipe) ≤ the
//              smallest node's memory (tests/bench/bench_pipe_memory.sh checks it against peak RSS)
//   objective: the most tokens per second, R · M · mb · T / step
// P_s counts the blocks' parameters, the embeddings on stage 0 and the final LayerNorm on the last
// stage, plus a copy of the tied token embedding there when S > 1 (the head needs it).
#ifndef LOCO_NODE_PLAN_H
#define LOCO_NODE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "model/gpt.h"
#include "node/plan_file.h"

#define PLAN_CL_MAX_NODES 64
#define PLAN_MAX_NICS 4
#define PLAN_MAX_ISLANDS 16

typedef struct {
    char name[16];
    char endpoint[128];  // tcp://host:port on this NIC (what the plan file names)
    double bw;           // bytes/s
    double lat;          // seconds, one way, this NIC's share
    int local;           // 1: reaches only nodes of its own island (an RDMA fabric); 0: any node
} plan_nic_t;

typedef struct {
    char name[32];
    uint8_t id[32];
    int has_id;
    int island;
    char device[32];
    double flops;        // FLOP/s this node sustains on this model (calib_* scale the work instead)
    double mem;          // bytes
    int n_nics;
    plan_nic_t nic[PLAN_MAX_NICS];
    char peer[160];      // tcp://host:port of the node's running `loco run` ([node] peer), for
                         // `loco plan --probe`; "" when not given
} plan_cnode_t;

typedef struct {
    double bw, lat;      // bw 0: not declared (inside an island: the NICs alone limit)
} plan_fabric_t;

typedef enum { PLAN_DILOCO = 0, PLAN_NOLOCO = 1 } plan_algo_t;

typedef struct {
    int n_nodes;
    plan_cnode_t node[PLAN_CL_MAX_NODES];
    int n_islands;
    char island[PLAN_MAX_ISLANDS][32];
    plan_fabric_t fabric[PLAN_MAX_ISLANDS][PLAN_MAX_ISLANDS]; // [i][i] inside island i; symmetric
    gpt_config_t model;
    int micro_batch, micro_batches;
    plan_schedule_t schedule;
    plan_algo_t algorithm;
    int inner_steps;     // H
    double codec_bytes;  // bytes per parameter in the outer exchange (fp32 4, bf16 2, int8 1, int4 0.5)
    int overlap;
    double calib_block, calib_head; // multiply the FLOP estimates (measured / predicted time)
    // Figures of the link between two nodes ([pair A B], e.g. measured by `loco plan --probe`):
    // when bw > 0 they replace the NICs' and islands' figures for that pair (the NIC pair is still
    // chosen as without them). Symmetric; the diagonal is unused.
    plan_fabric_t pair[PLAN_CL_MAX_NODES][PLAN_CL_MAX_NODES];
} plan_cluster_t;

// The link two nodes' pipeline traffic uses: the best NIC pair for an activation message; with a
// [pair] figure for the two nodes, that pair's α and β on the same NICs.
typedef struct {
    int nic_a, nic_b;    // -1 when no pair of NICs connects them
    double alpha, beta;  // seconds, bytes/s
    double msg_s;        // α + message / β (INFINITY when unreachable)
    double ser_s;        // message / β: how long a message occupies the link (INFINITY when unreachable)
} plan_link_t;

typedef struct {
    int R, S;
    int cut[PLAN_MAX_STAGES + 1];
    int slot[PLAN_MAX_STAGES][PLAN_MAX_STAGES]; // [s][r]: node index; R ≤ PLAN_MAX_STAGES as well
    int window;          // 1F1B micro-batches in flight at stage 0 (the plan file's window); 0: min(M, S)
} plan_layout_t;

typedef struct {
    int feasible;
    char why[160];        // when infeasible
    double step_s, makespan_s, exchange_s, exposed_s, tokens_per_s, tokens_per_step;
    double wte_s;                            // tied-embedding sync per step (S > 1)
    double t[PLAN_MAX_STAGES], k[PLAN_MAX_STAGES], x[PLAN_MAX_STAGES];
    double q[PLAN_MAX_STAGES];               // boundary serialisation (message / β, worst replica)
    int window_bound;                        // 1F1B's window, not a stage or link, sets the rate
    double round_trip_s;                     // one micro-batch from stage 0's forward to its backward
    double mem_need[PLAN_MAX_STAGES], mem_have[PLAN_MAX_STAGES];
    double params[PLAN_MAX_STAGES];          // parameters held by each stage
    double act_bytes_link_step;              // per boundary per replica per step, both directions
    double x_bytes_node_step[PLAN_MAX_STAGES]; // sent per node per inner step (amortised over H)
    int bottleneck_stage, bottleneck_link;   // argmax t, argmax k (-1 none)
} plan_eval_t;

// Search options. R, S: 0 = free. constraint: see below. skip_R/skip_S: a (R, S) pair to leave out
// (0 = none), for "the best with another count". exhaustive_limit: the most stage-set sequences the
// exact enumeration may visit per (R, S) before local search takes over (0 = default 200000).
typedef enum {
    PLAN_FREE = 0,
    PLAN_STAGE_IN_ISLAND = 1,   // Holmes: each stage's replicas inside one island
    PLAN_REPLICA_IN_ISLAND = 2, // each replica's pipeline inside one island, replicas on ≥ 2 islands
                                // when the cluster has them (data-parallel across islands)
} plan_constraint_t;

typedef struct {
    int R, S;
    plan_constraint_t constraint;
    int skip_R, skip_S;
    long exhaustive_limit;
} plan_opts_t;

typedef struct {
    long sequences;      // stage-set sequences evaluated
    long pruned;         // skipped by the lower bound
    long dp_runs;        // layer-split DPs (one per bound B)
    int exhaustive;      // 1: every (R, S) was searched exhaustively (the result is the model's optimum)
} plan_stats_t;

// Checks a cluster description (sizes, positive speeds, NICs, links between islands, model).
int plan_cluster_check(const plan_cluster_t *c, char *err, size_t errlen);

// Work of a block / the head per token, fwd+bwd, calibrated (FLOP); parameters of a block.
double plan_block_flops(const plan_cluster_t *c);
double plan_head_flops(const plan_cluster_t *c);

// The pipeline link between nodes a and b (see plan_link_t).
plan_link_t plan_link(const plan_cluster_t *c, int a, int b);

// Evaluates a concrete layout with the cost model. Returns 0 when the layout is well formed (e->feasible
// may still be 0: memory, unreachable link), -1 when malformed (reason in e->why).
int plan_eval(const plan_cluster_t *c, const plan_layout_t *l, plan_eval_t *e);

// The best layout under opts. 0, or -1 when no layout is feasible (reason in err).
int plan_search(const plan_cluster_t *c, const plan_opts_t *opts, plan_layout_t *best, plan_eval_t *e,
                plan_stats_t *st, char *err, size_t errlen);

// Best cuts for a fixed assignment (slot[][] of l, R, S): the exact layer split. 0 or -1 if none.
int plan_split(const plan_cluster_t *c, plan_layout_t *l, char *err, size_t errlen);

// When 1F1B's window binds (e->window_bound), raises l->window above S to the smallest that gives
// the most tokens/s within every stage's memory, re-evaluating *e. The search itself keeps the
// runtime's default window; this is applied to its result. 1 when the window changed.
int plan_widen_window(const plan_cluster_t *c, plan_layout_t *l, plan_eval_t *e);

// Even layer split of L blocks into S stages (the first L mod S stages get one more).
void plan_even_cuts(int L, int S, int *cut);

// Fills a plan file from a layout: names, ids, stage, replica and each node's pipeline endpoint (the
// NIC its incoming activations use; for stage 0, its link to stage 1; with one stage, its first
// NIC that is not island-local).
void plan_to_file(const plan_cluster_t *c, const plan_layout_t *l, const plan_eval_t *e, plan_t *p);

#endif
