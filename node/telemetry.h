// loco's own series in a metrics registry (node/prom.h): what the Prometheus endpoint
// (node/http_metrics.h) exposes and what `loco status` (node/control.h) summarises. docs/metrics.md
// lists every series.
//
// Updates come from the threads that own the facts, at the places that write the JSONL metrics:
//  - compute thread: telemetry_step / telemetry_eval (node/train_loop.c), telemetry_outer
//    (node/outer_run.c, with the `outer` record);
//  - net thread: telemetry_reject (with the `reject` record), and once a second from node/run.c
//    telemetry_members, telemetry_net (byte counters by traffic type, catch-up progress);
//  - the reader (an HTTP scrape, a status request): telemetry_refresh (checkpoint age from the
//    checkpoint directory's manifest) right before it renders.
// The hooks take the metrics_t of the JSONL file and use its prom pointer: NULL (loco train, no
// endpoint) makes them no-ops. Nothing here ever holds key material or training data: ids are public
// keys' prefixes, the rest are numbers.
#ifndef LOCO_NODE_TELEMETRY_H
#define LOCO_NODE_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "net/node.h"
#include "node/catchup.h"
#include "node/metrics.h"
#include "node/prom.h"

// Declares every loco_ family in p and creates the fixed label sets (members by state, bytes by type,
// rejections by reason) at zero. Returns 0, or -1 (a programmer error: a bad declaration).
int telemetry_declare(prom_t *p);

// Facts that do not change while the node runs: the peer id prefix (16 hex digits), run name,
// outer algorithm, [train] steps, the checkpoint directory and the process id. Sets loco_info and
// loco_start_time_seconds.
void telemetry_start(prom_t *p, const char *peer, const char *run, const char *algorithm, uint64_t steps,
                     const char *checkpoint_dir);

// Compute thread.
void telemetry_step(metrics_t *mx, uint64_t step, double loss, double tokens_per_s, double compute_s, double elapsed_s);
void telemetry_eval(metrics_t *mx, double val_loss);
// An applied outer step: the round it completed, contributors and expected group size, the exchange
// and wait times, whether it was short, the group as the JSONL's array text (e.g. ["ab..","cd.."]).
void telemetry_outer(metrics_t *mx, uint64_t round, int contributors, int expected, double exchange_s, double wait_s,
                     int short_round, const char *group_json);

// Net thread: a rejected contribution. The free-text reason is mapped to a small fixed set of label
// values (not_finite, size, steps, norm, drift, other) so the series stay bounded.
void telemetry_reject(metrics_t *mx, const char *reason);
const char *telemetry_reject_class(const char *reason);

// Net thread: membership counts by state (self included while it has not left).
void telemetry_members(prom_t *p, int alive, int suspect, int dead, int left);
// Net thread: cumulative bytes by traffic type from the transport's per-type counters, split into
// outer exchange, gossip, catch-up and other (handshakes, probes, reachability); catch-up chunks
// travel as tensors like the exchange's, so its chunk payload bytes (cs) are moved from the outer
// figure to catch-up. cs may be NULL (no catch-up module). cu_state: -1 failed, 0 running or idle,
// 1 done, as catchup_done says.
void telemetry_net(prom_t *p, const net_stats_t *ns, const catchup_stats_t *cs, int cu_state);

// Reader: re-reads the checkpoint directory's manifest (LATEST) and sets the checkpoint age, step
// and time. Cheap: one open and one stat.
void telemetry_refresh(prom_t *p);

// The `loco status` answer: a compact human summary (json = 0) or one JSON object (json = 1), from
// the registry. Returns a malloc'd text (the caller frees it), or NULL when out of memory.
char *telemetry_status(prom_t *p, int json);

#endif
