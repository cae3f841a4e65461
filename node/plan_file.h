// A pipeline plan: which peer runs which layers of the model, and over which NIC each stage boundary
// is crossed. `loco plan` writes it; every node of a pipelined run loads the same file
// (`[pipeline] plan = FILE`) and finds its role by its peer id. The SHA-256 of the file's canonical
// form is part of the run fingerprint, so a node holding another plan is refused.
//
// The file is line-oriented text, '#' starts a comment, fields are separated by spaces:
//
//   loco-plan 1
//   layers 12                      model blocks L (must match the run's [model] layers)
//   schedule 1f1b                  1f1b | gpipe
//   micro_batch 4                  sequences per micro-batch
//   micro_batches 8                micro-batches per inner step (per pipeline replica)
//   routing chain                  optional: random (the default when absent) | chain — chain: replica
//                                  r of stage s sends to replica r of stage s+1 (R pipelines that the
//                                  outer steps join, what `loco plan` models and writes when R > 1);
//                                  random: any live replica of the next stage
//   window 6                       optional, 1f1b only: micro-batches stage 0 keeps in flight (1..M;
//                                  absent: min(M, S)); stage s holds up to min(M, window − s). More
//                                  than S covers a round trip over slow links, at the memory of the
//                                  extra activations (`loco plan` raises it when the window binds)
//   stage 0 0 5                    stage index, first block l0, end block l1 (blocks [l0, l1))
//   stage 1 5 12                   stages are listed in order and tile [0, L) without gaps
//   node a1 <64 hex peer id> 0 0 tcp://10.0.0.1:7100
//                                  name, peer id, stage, replica, pipeline endpoint (the address on
//                                  the NIC the plan chose for this node's stage-boundary links)
//   predicted_step_s 0.412         optional: the planner's predicted inner-step time
//   predicted_tokens_per_s 9941    optional
//
// Stage 0 holds the embeddings (l0 = 0); the last stage holds the final LayerNorm and the head.
// Every stage has at least one node; replicas of one stage are numbered 0..R_s-1.
#ifndef LOCO_NODE_PLAN_FILE_H
#define LOCO_NODE_PLAN_FILE_H

#include <stddef.h>
#include <stdint.h>

#define PLAN_MAX_STAGES 64
#define PLAN_MAX_NODES  256
#define PLAN_MAX_LAYERS 1024          // as [model] layers allows
#define PLAN_TEXT_MAX   (128 * 1024)  // the canonical text of any plan within the limits above fits

typedef enum { PLAN_1F1B = 0, PLAN_GPIPE = 1 } plan_schedule_t;
typedef enum { PLAN_ROUTE_RANDOM = 0, PLAN_ROUTE_CHAIN = 1 } plan_routing_t;

typedef struct {
    int l0, l1;                   // blocks [l0, l1)
} plan_stage_t;

typedef struct {
    char name[32];
    uint8_t id[32];               // peer id (Ed25519 public key)
    int stage, replica;
    char endpoint[128];           // pipeline endpoint, tcp://host:port
} plan_node_t;

typedef struct {
    int layers;
    plan_schedule_t schedule;
    int micro_batch, micro_batches;
    int n_stages;
    plan_stage_t stages[PLAN_MAX_STAGES];
    int n_nodes;
    plan_node_t nodes[PLAN_MAX_NODES];
    double predicted_step_s;      // 0 when absent
    double predicted_tokens_per_s;
    plan_routing_t routing;       // random when the file has no routing line
    int window;                   // 1F1B window (micro-batches in flight at stage 0); 0: min(M, S)
} plan_t;

// Micro-batches stage s keeps in flight (activation slots for its own micro-batches): GPipe all M;
// 1F1B min(M, W − s), at least 1, with W the plan's window or S.
int plan_stage_window(plan_schedule_t schedule, int M, int S, int window, int s);

// Parses and validates a plan file. 0, or -1 with err naming the file, line and what is wrong.
// On success p->nodes is sorted by (stage, replica); plan_find indexes into that order.
// Besides the invariants of plan_validate, the parser refuses unknown keywords, repeated scalar
// lines, stages out of order, a version other than 1 and files over 1 MiB.
int plan_read(const char *path, plan_t *p, char *err, size_t errlen);
int plan_parse(const char *text, size_t len, plan_t *p, const char *source, char *err, size_t errlen);
// Checks the invariants above (stages tile [0, layers), every stage has a replica 0..R-1, ids unique).
// Also: names [A-Za-z0-9._-]{1,31} and unique, endpoints tcp://host:port and unique, at most one node
// per (stage, replica), predicted figures finite and >= 0. err gets the reason without a file name.
int plan_validate(const plan_t *p, char *err, size_t errlen);
// Writes the canonical form (the format above, without comments). 0 or -1 with err.
int plan_write(const char *path, const plan_t *p, char *err, size_t errlen);
// Canonical text into buf (NUL-terminated); returns its length, or -1 when buf is too small.
// Nodes are written in (stage, replica) order; predicted figures with 6 significant digits and only
// when > 0, so format(parse(format(p))) == format(p). The routing line only when chain and the
// window line only when set (a plan without them hashes as before the lines existed).
int plan_format(const plan_t *p, char *buf, size_t buflen);
// SHA-256 of the canonical text (what the run fingerprint holds).
void plan_hash(const plan_t *p, uint8_t out[32]);
// This peer's node entry, or -1 when the plan does not name it.
int plan_find(const plan_t *p, const uint8_t id[32]);
// Number of replicas of stage s.
int plan_replicas(const plan_t *p, int s);
// 1 when e is an endpoint a plan accepts: tcp://host:port, port 1-65535, no blanks; else 0.
int plan_endpoint_ok(const char *e);

#endif
