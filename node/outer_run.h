// Outer steps across a live swarm (ALGORITHMS.md, DESIGN.md "Outer steps"): the compute thread's
// round loop and the net thread's exchange, joined by a mailbox (a mutex-guarded hand-over of
// buffers, with an inproc wake-up of the net thread).
//
// A round. The compute thread runs inner steps until it has run H of them, or — pacing — a member
// of its group is ready for this round (or a later one) and it has run at least one step. It then
// hands the net thread its contribution (Δ = φ − θ and the inner steps h it ran) and waits for the
// exchange's result, applies the outer step, and restarts the next round from the new anchor.
//
// Pacing rule: a round is H inner steps of the fastest member of the group. A member that learns a
// partner is ready ends its round after its current step (never before its first), so no one waits
// for more than one inner step of the slowest partner plus the transfer; every contribution is
// weighted by the inner steps actually run. A peer that learns its partners are two or more rounds
// ahead (a joiner, a returning peer) jumps to their round; one round ahead is served next round,
// which then ends after one step. A NoLoCo peer that jumps before its first outer step, or ten or
// more rounds, first takes a partner's outer state by catch-up (node/catchup.h: NoLoCo anchors
// differ, so it takes one donor's version — the one with the highest round, then the smallest id).
//
// Who takes part. The live members of this peer's view that train (their record's step rate is
// non-zero: a seed with [train] steps = 0 is never a partner), sorted by id.
//
// NoLoCo: groups for round t by outer_groups(fingerprint, t, members, n). Each member sends each
// partner its Δ (codec, with error feedback) and its anchor drift φ − φ₀ (φ₀: the run's initial
// weights, identical everywhere, so the drift is a small-range difference of anchors; codec, no
// error feedback), i.e. two tensors of codec bytes per parameter. It waits for its partners until
// they delivered or the deadline; a partner that is missing, declines (it is at another round) or
// fails shrinks the group — a group of one applies no pull term. Nothing ever waits for a peer
// outside its group.
//
// DiLoCo: 1. every member sends READY(t, h, anchor hash) to every training member it sees and
// waits for READY from all of them (or half the deadline). 2. The round's members R are this peer
// and the READY senders whose anchor hash is the majority hash (ties: the smallest hash); a member
// whose own hash is not the majority's catches up instead of contributing: it fetches the outer
// state the round produces (anchor ‖ momentum, version of round ≥ t + 1) from all majority members
// in parallel (node/catchup.h) and enters round t + 1 with it. 3. Reduce-scatter: R sorted by id, chunk c = [c·n/M, (c+1)·n/M) is owned
// by R[c]; each member sends chunk c of its Δ to its owner (codec + error feedback), tagged with the
// hash of R, and the owner — which sees every raw contribution — takes the weighted mean of those
// whose R-hash equals its own, quantizes it once, applies the dequantized values itself and sends
// the same encoded bytes to every member of R (all-gather). 4. A member completes the round when it
// holds every chunk; at the deadline a missing chunk counts as zero (the outer step then only
// carries momentum there). All members that miss the same chunks end with identical anchors; one
// that ends different is caught by the anchor hash at the next READY and re-fetches.
//
// The end: DiLoCo's READY carries a "last" flag, set by a member that reached [train] steps; the
// round whose R holds such a member is the last for every member of R, so the run ends with one
// anchor (pacing leaves slower members a few steps short of [train] steps). NoLoCo peers each run
// their own [train] steps (their anchors differ by design).
#ifndef LOCO_NODE_OUTER_RUN_H
#define LOCO_NODE_OUTER_RUN_H

#include <signal.h>
#include <stdint.h>

#include "gossip/members.h"
#include "net/node.h"
#include "node/catchup.h"
#include "node/config.h"
#include "node/metrics.h"
#include "node/train_loop.h"
#include "node/trainer.h"

// Message types of the outer exchange (after run.h's 48, 49).
enum {
    OUTER_MSG_META = 50,     // NoLoCo: u32 steps (round in the header); precedes Δ and drift
    OUTER_MSG_READY = 51,    // DiLoCo: u32 steps, 32-byte anchor hash
    OUTER_MSG_PART = 52,     // DiLoCo: 32-byte R-hash, u32 chunk; with the tensor of that chunk
    OUTER_MSG_REDUCED = 53,  // DiLoCo: 32-byte R-hash, u32 chunk, u32 contributors
    OUTER_MSG_ROUND_IS = 54, // "I am at round u64": the answer to a message for a past round
    OUTER_MSG_FIRST = 50,
    OUTER_MSG_LAST = 54,     // 57..60: catch-up (node/catchup.h)
};

typedef struct outer_run_t outer_run_t;

typedef struct {
    const loco_config_t *cfg;
    net_node_t *net;
    gossip_members_t *gm;
    metrics_t *mx;
    const uint8_t *fp;          // run fingerprint, 32 bytes
    // Dials a member this node has no connection to (run.c: by its record's endpoint). 0 or -1.
    int (*connect)(void *ctx, const uint8_t id[32]);
    void *ctx;
    int has_contacts;           // seeds or a peer cache: wait (bounded) to join before training
    // Pipeline stages (node/pipe.h): the outer step covers parameters [off, off + len) only (len 0:
    // all), its partners are the training members for which member_ok() holds (the replicas of this
    // stage), and inner steps run through inner_step (NULL: train_step_logged; 0 or 1 as that).
    size_t off, len;
    int (*member_ok)(void *hook_ctx, const uint8_t id[32]);
    int (*inner_step)(void *hook_ctx, trainer_t *t, train_ctx_t *x);
    void *hook_ctx;
} outer_env_t;

outer_run_t *outer_run_new(const outer_env_t *env, char *err, size_t errlen);
void outer_run_destroy(outer_run_t **self_p);

// Net thread: offer an event (1: it was the exchange's and is consumed; the caller still clears it),
// and progress the exchange (call after every poll).
int outer_run_on_event(outer_run_t *o, net_event_t *ev, uint64_t now_ms);
void outer_run_tick(outer_run_t *o, uint64_t now_ms);

// Compute thread: trains [train] steps inner steps in rounds of H with outer steps in between,
// resuming from the newest checkpoint (with its outer state). Returns 0, or 1 after a failure.
int outer_run_train(outer_run_t *o, trainer_t *t, volatile sig_atomic_t *stop);

// Counters of the exchange, for tests and the closing summary.
typedef struct {
    uint64_t rounds;            // completed outer steps
    uint64_t bytes_sent, bytes_recv; // outer exchange bytes at the socket layer, cumulative
    uint64_t short_rounds;      // rounds in which a partner or chunk was missing
    uint64_t early_ends;        // rounds this peer ended before H (pacing)
    uint64_t refetches;         // DiLoCo anchor re-fetches
    uint64_t waits;             // overlap: round boundaries at which the exchange was still running
    uint64_t rejected;          // contributions dropped (wrong size, NaN, norm, wrong round set)
    uint64_t refused_peers;     // times a repeated offender was refused for a while
} outer_stats_t;
void outer_run_stats(const outer_run_t *o, outer_stats_t *out);
// The catch-up module (net thread only: its stats and state for the metrics; node/telemetry.h).
const catchup_t *outer_run_catchup(const outer_run_t *o);

#endif
