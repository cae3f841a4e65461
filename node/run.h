// `loco run`: the peer daemon. Two threads:
//  - the net thread owns the transport (net/node.h) and the membership view (gossip/members.h): it
//    feeds received gossip to the view, runs its timers, sends what the view queues (dialing members
//    by the endpoints in their signed records), learns reachability when [net] reachable = auto,
//    logs membership changes and writes them to the metrics JSONL, and keeps the peer cache file;
//  - the compute thread trains (node/train_loop.h) when [train] steps > 0, resuming from the newest
//    checkpoint; with steps = 0 the node only takes part in membership (a seed that does not train).
// SIGINT/SIGTERM stop both: the compute thread writes a checkpoint, the net thread broadcasts a
// graceful leave, keeps answering for one protocol period so it spreads, then exits.
#ifndef LOCO_NODE_RUN_H
#define LOCO_NODE_RUN_H

#include <signal.h>

#include "node/config.h"

// Message types of the run loop itself, after gossip's (32..39); loco doctor sends them too.
// REACH_CHECK carries an endpoint ("tcp://host:port"): the receiver TCP-connects to it (at most once
// per asking peer per 30 s) and answers REACH_RESULT with one byte, 1 reachable or 0 not.
enum { RUN_MSG_REACH_CHECK = 48, RUN_MSG_REACH_RESULT = 49 };

// Runs the daemon until *stop. Returns the process exit code (0 clean stop, 1 runtime failure).
int run_node(const loco_config_t *cfg, volatile sig_atomic_t *stop);

// Peer cache: one "ID@endpoint" per line. Load returns the number of entries added to ids/eps (up to
// cap), 0 for a missing file, -1 for an unreadable one. Save writes atomically; 0 or -1.
int run_cache_load(const char *path, uint8_t (*ids)[32], char (*eps)[256], int cap);
int run_cache_save(const char *path, const uint8_t (*ids)[32], char (*eps)[256], int n);

#endif
