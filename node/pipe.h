// A pipeline stage (issue #9): this node runs blocks [l0, l1) of the model as named by the plan
// (node/plan_file.h); stage 0 reads the data, the last stage computes the loss; activations go
// forward and their gradients backward between stage nodes.
//
// Transport. The stage owns its sockets, on the compute thread (they never cross threads): its own
// ZeroMQ context, a ROUTER bound on the plan's pipeline endpoint for this node (the NIC the planner
// chose), CURVE server with the node's identity, and a ZAP handler in the same context that admits
// only the CURVE keys of the plan's nodes (User-Id = the sender's Ed25519 id, so every message's
// sender is authenticated); and one DEALER (CURVE client, ZMQ_IMMEDIATE: nothing queues towards a
// peer that is not connected) per node it sends to. Everything is sent on DEALERs and received on
// the ROUTER. A separate socket rather than the net thread's transport: activations are on the
// critical path and must not queue behind outer-exchange chunks, they cross the link the plan chose
// (not the [net] listener's), and the compute thread that produces and consumes them needs no
// hand-over through the net thread.
//
// Wire format. A message is a ZeroMQ multipart message; frame 0 is this 64-byte header, every
// integer little-endian:
//   0 magic "LPIP"   4 version u16 (1)   6 type u16   8 run id u64 (first 8 bytes of the run
//   fingerprint, LE)   16 step u64 (inner step)   24 origin u32 (plan index of the stage-0 node
//   that drew the micro-batch)   28 micro-batch u32 (0..M-1 within the origin's step)
//   32 B u32 (= plan micro_batch)   36 T u32 (= [model] seq_len)   40 count u32 (END)
//   44 loss f32 (GRAD: the micro-batch's mean loss)   48 bytes of frame 1 u64   56 bytes of frame 2 u64
// Types and their frames (fp32 and int32 arrays are little-endian, the host order: the build
// refuses big-endian hosts):
//   ACT   1  stage s → a replica of s+1: (B,T,C) block output, (B,T) int32 targets
//   GRAD  2  s+1 → the node that sent the ACT: (B,T,C) gradient of that activation
//   END   3  s → every replica of s+1: "step done; count of my micro-batches you completed"
//   WGRAD 4  last stage → its stage-0 partner: the head's gradient of the tied wte (V,C), already
//            divided by the micro-batches it processed
//   WTE   5  stage 0 → the last-stage nodes it partners: the updated wte (V,C)
// Every message is checked: frame count, header, version, run id, the sender is a plan node of the
// stage that may send this type, B and T, frame sizes, targets < vocab, every float finite, the
// step (stale or too far ahead), and that a GRAD answers an ACT sent to that very node. A failing
// message is dropped, counted per reason and logged (rate-limited) with the sender; never fatal.
//
// Schedule. Stage 0 keeps at most W micro-batches in flight (1F1B: W = min(M, S); GPipe: W = M)
// and always runs a backward before a new forward when one is ready; later stages run whatever
// arrives, backward first, in a bounded set of activation slots (model/gpt.h gpt_new_shared: one
// set of weights, several micro-batches' activations). An inner step ends at stage 0 when its M
// micro-batches came back; it then sends END to the next stage, whose step ends when every live
// upstream node sent END and all it was sent is done, and so on. The gradient of a step is the mean
// over the micro-batches this node processed (for one pipeline, exactly the gradient of the mean
// loss of the M·B sequences, as `loco train` with batch M·B computes it).
//
// Tied embedding (GPT-2's wte is both the token embedding, on stage 0, and the head, on the last
// stage). wte belongs to stage 0: it is in stage 0's parameter range, optimizer and outer steps.
// The last stage holds a copy for its head. At the end of every inner step each last-stage node
// sends its head part of the wte gradient (WGRAD) to its stage-0 partner, which adds the mean of
// the head parts it received to its embedding part, steps AdamW, and sends the new wte (WTE) back
// to its partners; the last stage waits for it before its next head forward. Partners: last-stage
// replica j → the live stage-0 node with replica index j mod R0 (the next live one if that is
// dead). For one pipeline this is exactly the single-node update. Cost: 2·V·C·4 bytes per inner
// step between the last stage and stage 0. A missing WGRAD or WTE (timeout) is counted; the step
// goes on with what arrived (embedding part only, or the previous wte).
//
// Replicas. A micro-batch goes to a replica of the next stage drawn at random (NoLoCo-style, the
// portable PRNG) among those not taken for dead — or, with the plan's `routing chain`, to replica
// r mod R' of the next stage while that one is not taken for dead (R pipelines; any other live
// replica otherwise). A node is taken for dead when a micro-batch sent
// to it is not answered within [pipeline] timeout_ms (that micro-batch is then resent to another
// replica: "rerouted"), when membership reports it dead or left (pipe_peer_gone), or when it is an
// upstream node we wait on for END and it has been silent for timeout_ms. Any message from it
// revives it. Gradients always go back to the node that sent the activation.
//
// Gradient clipping ([train] grad_clip) is by the global norm of the whole model, as one node
// clips, when the stages form R separate pipelines (one replica per stage, or routing chain with the
// same count on every stage): each step the sums of squares go up the pipeline (NORM) and the total
// comes back down (TOTAL). With a part missing (a node dead or late) a stage clips by what came;
// with replicas that share micro-batches (random routing) each stage clips by its own norm.
#ifndef LOCO_NODE_PIPE_H
#define LOCO_NODE_PIPE_H

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "net/identity.h"
#include "node/metrics.h"
#include "node/outer_run.h"
#include "node/plan_file.h"
#include "node/trainer.h"

#define PIPE_HDR_SIZE 64
#define PIPE_PROTOCOL_VERSION 1

// AT (no frames): the sender, a node of the next stage, is at `step`; sent in answer to an ACT of a
// finished step or one far ahead. The receiver, when behind, skips to that step (pipe_step returns
// 3); when ahead, it answers with an END of its last finished step, so that a node restarted from an
// older checkpoint steps through to it.
// NORM and TOTAL (no frames; a double in origin (high 32 bits) and mb): the gradient's sum of
// squares, going up the pipeline (stage s + 1 to s, each stage adding its own) and the whole
// pipeline's sum coming back down, so that every stage clips by the global norm as one node would.
enum {
    PIPE_MSG_ACT = 1, PIPE_MSG_GRAD = 2, PIPE_MSG_END = 3, PIPE_MSG_WGRAD = 4, PIPE_MSG_WTE = 5, PIPE_MSG_AT = 6,
    PIPE_MSG_NORM = 7, PIPE_MSG_TOTAL = 8
};

// Why a received message was dropped (counter indices; names in pipe_drop_name).
typedef enum {
    PIPE_DROP_FRAMES = 0,   // frame count or header size
    PIPE_DROP_HEADER,       // magic, version, unknown type
    PIPE_DROP_RUN,          // run id is not ours (another fingerprint: another plan or config)
    PIPE_DROP_SENDER,       // not a plan node, or a type its stage may not send us
    PIPE_DROP_SHAPE,        // B, T or a frame size differs from the plan's
    PIPE_DROP_VALUE,        // a target ≥ vocab, or a non-finite float
    PIPE_DROP_STALE,        // a step already finished, or too far ahead
    PIPE_DROP_UNEXPECTED,   // a GRAD/WTE/WGRAD nobody here waits for (e.g. after a reroute)
    PIPE_DROP_FULL,         // too many activations queued
    PIPE_DROP_COUNT
} pipe_drop_t;

const char *pipe_drop_name(pipe_drop_t d);

// A message header (frame 0), decoded.
typedef struct {
    int type;
    uint64_t run_id, step;
    uint32_t origin, mb, B, T, count;
    float loss;
    uint64_t n1, n2;               // bytes of frames 1 and 2
} pipe_hdr_t;

// What a stage expects of every message: micro-batch shape, and the element counts of activations
// (B·T·C), targets (B·T) and wte (V·C).
typedef struct {
    uint32_t B, T;
    size_t act_n, tok_n, wte_n;
    int vocab;
    uint64_t run_id;
} pipe_shape_t;

void pipe_hdr_encode(const pipe_hdr_t *h, uint8_t out[PIPE_HDR_SIZE]);
// The checks that need no state: frame count for the type, header (magic, version, type), run id,
// B and T, frame sizes against the header and the shape, targets < vocab, every float finite (frames
// may be unaligned). frames[0] is the header. Returns 0 with *h filled, or -1 with the drop reason
// in *reason and a description in why. Pure and bounded: the fuzz target drives it.
int pipe_msg_check(const uint8_t *const *frames, const size_t *lens, int nframes, const pipe_shape_t *sh,
                   pipe_hdr_t *h, pipe_drop_t *reason, char *why, size_t wl);

typedef struct {
    const plan_t *plan;            // borrowed; outlives the stage
    net_identity_t identity;       // this node's keys (copied)
    uint8_t fp[32];                // run fingerprint: its run id is in every message
    int timeout_ms;                // [pipeline] timeout_ms
    uint64_t route_seed;           // seeds the replica choice
    // Optional: membership's view, written by another thread: gone[i] is incremented each time plan
    // node i is reported dead or left. NULL = per-message timeouts only.
    _Atomic uint32_t *gone;
} pipe_opts_t;

typedef struct {
    uint64_t steps;                // inner steps completed here
    uint64_t fwd, bwd;             // micro-batch forwards / backwards run here
    uint64_t sent, recv;           // messages
    uint64_t bytes_sent, bytes_recv;
    uint64_t rerouted;             // micro-batches resent to another replica after a timeout
    uint64_t dead_marks;           // times a node was taken for dead
    uint64_t revived;              // times a node taken for dead was heard from again
    uint64_t wte_missing;          // tied-wte messages (WGRAD at stage 0, WTE at the last) that timed out
    uint64_t dropped;              // all drops
    uint64_t drop[PIPE_DROP_COUNT];
    uint64_t undelivered;          // messages we gave up sending (their node gone or not connected)
    uint64_t skipped;              // inner steps skipped after restarting behind the next stage (AT)
    uint64_t partial_norms;        // steps clipped by a partial norm (a NORM or TOTAL did not come in time)
    double wait_s;                 // time spent waiting for messages (pipeline bubbles)
} pipe_stats_t;

typedef struct pipe_t pipe_t;

// Finds this node in the plan (by identity), checks the plan against the model config
// (t->cfg.model.layers), allocates activation slots over t->model's weights (activations of the
// stage's blocks only: gpt_new_shared) and binds the pipeline endpoint. The trainer needs training
// data at stage 0; its own model's activations are not used (TRAINER_PARAMS_ONLY). NULL with the reason.
pipe_t *pipe_new(const pipe_opts_t *o, trainer_t *t, char *err, size_t errlen);
void pipe_destroy(pipe_t **self_p);

// This node's stage, replica, plan index, and its parameter range [*off, *off + *len) in the flat
// buffer (stage 0: wte, wpe and its blocks; the last stage: its blocks and the final LayerNorm).
int pipe_stage(const pipe_t *p);
int pipe_replica(const pipe_t *p);
int pipe_index(const pipe_t *p);
void pipe_range(const pipe_t *p, size_t *off, size_t *len);

// Runs the micro-batches of inner step t->step: afterwards t->model->grads holds this stage's
// gradient over its range (stage 0: with the head's part of wte added), t->loss the mean loss of
// the micro-batches that passed here. Returns 0, 1 when *stop was set, 2 when every node of the
// previous stage has been gone for three timeouts (the run is over for this stage), 3 when an AT
// said the next stage is past this step (the step is abandoned), -1 on a failure.
int pipe_grads(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop);
// Clips, steps AdamW over the stage's range (not when no micro-batch came here), exchanges the tied
// wte, advances t->step. 0, or 1 when *stop was set.
int pipe_apply(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop);
// Both. On 3 (see pipe_grads) t->step jumps to the next stage's step, nothing applied: the steps
// in between are lost here (the node restarted from an older checkpoint than the others' state).
int pipe_step(pipe_t *p, trainer_t *t, volatile sig_atomic_t *stop);

// Services the sockets for up to ms (answers handshakes, queues what arrives); for idle waits.
void pipe_service(pipe_t *p, int ms);

void pipe_stats(const pipe_t *p, pipe_stats_t *out);
// One log line with the counters.
void pipe_log_stats(const pipe_t *p);

// The compute thread of a pipelined `loco run` without outer steps between replicas: [train] steps
// inner steps with log lines and "step" metrics records (fields of train_step_logged plus stage,
// micro-batch and reroute counters), a checkpoint at the end and when stopped. 0 or 1.
int pipe_train(pipe_t *p, trainer_t *t, metrics_t *mx, volatile sig_atomic_t *stop);

// loco run: reads [pipeline] plan and finds this peer in it; checks it against [model] (layers) and
// the trainer's needs. 0, or -1 with a reason that names the file (a peer the plan does not name is
// refused here, before it joins anything).
int pipe_plan_load(const loco_config_t *cfg, const uint8_t self_id[32], plan_t *plan, char *err, size_t errlen);
// Net thread: membership reports id dead or left; bumps gone[] for the plan node it is (if any).
void pipe_member_gone(const plan_t *plan, _Atomic uint32_t *gone, const uint8_t id[32]);
// The parameter range of plan node i's stage (what pipe_range says once the stage exists).
void pipe_plan_range(const plan_t *plan, int i, const gpt_config_t *cfg, size_t *off, size_t *len);
// The part of the model plan node i holds (model/part.h): its stage's range, and at the last stage
// also the tied wte (the head's copy, sent by stage 0 every step). One stage: the whole model (n = 0).
void pipe_plan_part(const plan_t *plan, int i, const gpt_config_t *cfg, part_t *part);

// Outer steps between the replicas of a stage, through node/outer_run.h's hooks (outer_env_t
// off/len = the stage's range, member_ok, inner_step, hook_ctx = a pipe_outer_t): DiLoCo or NoLoCo
// exactly as for whole models, over the stage's parameters, with the replicas of the same stage
// as the only partners. wte is stage 0's (its replicas average it); a last-stage node takes the
// new wte with the next WTE message, one inner step later.
typedef struct {
    const plan_t *plan;
    int stage;
    pipe_t *pipe;               // set by pipe_run
    metrics_t *mx;
} pipe_outer_t;
int pipe_outer_member_ok(void *hook_ctx, const uint8_t id[32]);
int pipe_outer_inner_step(void *hook_ctx, trainer_t *t, train_ctx_t *x);

// loco run's compute thread for a pipelined run: the trainer ([train] batch = micro_batch, data at
// stage 0 only, no evaluation: a stage holds only part of the model), the stage, and then
// outer_run_train with the hooks above when outer is not NULL and the stage has several replicas,
// else pipe_train. *trainer_out is set
// while training (the net thread samples the step rate). Returns 0 or 1.
int pipe_run(const loco_config_t *cfg, const plan_t *plan, const net_identity_t *id, const uint8_t fp[32],
             _Atomic uint32_t *gone, metrics_t *mx, _Atomic(trainer_t *) *trainer_out, outer_run_t *outer,
             pipe_outer_t *oc, volatile sig_atomic_t *stop);

#endif
