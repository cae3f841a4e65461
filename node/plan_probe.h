// `loco plan --probe`: measures the links from this node to the other nodes of a cluster description
// over loco's own transport, and hands the figures to the planner in place of the declared ones.
//
// This node dials each other node's running `loco run` ([node] peer = tcp://host:port in the
// description, its id from id / key / peer = ID@...) as `loco doctor` dials its seeds: a TCP connect
// first (to tell "nothing listens" from a failed handshake), the CURVE handshake and HELLO with this
// run's description (the run config's [run] and [model] must match the peer's: the same run
// fingerprint), then net_probe (net/node.h): pings for the round trip, and a bulk transfer for the
// bandwidth. The prober never gossips, so it never joins the peers' membership views.
//
// It dials with its own identity, not this node's [node] key: a second process holding the running
// node's key would replace that node's session at every peer it reaches (a newer incarnation), and
// the running node's own messages would be dropped as stale. By default the identity is derived from
// the node's key (a keyed hash of its secret seed): another id, the same on every probe from this node,
// so it takes one entry in each peer's table and an allowlist run can list it; or give a key the peers
// admit (and its ticket).
//
// Measured figures: latency α = median round trip / 2; bandwidth β = probe bytes / (time until the
// peer acknowledged them − one median round trip), the best of the bulk runs.
#ifndef LOCO_NODE_PLAN_PROBE_H
#define LOCO_NODE_PLAN_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "node/plan.h"

typedef struct {
    const char *run_config; // this node's `loco run` config (required): run fingerprint, transport options
    const char *from;       // this node's [node NAME] in the description; NULL: the node whose id is the
                            // run config's [node] key's
    const char *key;        // identity to dial with (a loco key file); NULL: derived from [node] key
    const char *ticket;     // ticket for that key (text or a file), ticket-mode runs; NULL: none
    int pings;              // round trips (default 9)
    size_t bytes;           // bytes per bulk run (default 4 MiB)
    int bulk_runs;          // bulk runs, the best counts (default 2)
    int timeout_ms;         // deadline per node for each step: connect, handshake, pings, each bulk run (5000)
} plan_probe_opts_t;

typedef enum {
    PLAN_PROBE_SKIPPED = 0, // nothing to dial (no peer endpoint or no id): declared figures kept
    PLAN_PROBE_FAILED,      // dialled, not measured (why): declared figures kept
    PLAN_PROBE_PARTIAL,     // round trip measured, the bulk run failed (why): declared bandwidth kept
    PLAN_PROBE_OK,
} plan_probe_state_t;

typedef struct {
    int node;                  // index in the description
    plan_probe_state_t state;
    double decl_alpha, decl_beta; // the description's figures for the link (plan_link), s and B/s
    double rtt_median, rtt_min;   // seconds
    double alpha, beta;           // measured (β only when OK)
    char why[768];                // SKIPPED, FAILED, PARTIAL: what went wrong, with advice
} plan_probe_row_t;

typedef struct {
    int self;                  // this node's index in the description
    char how[200];             // "9 round trips, 2 x 4 MiB, ...": for the table and the file
    char probe_id[65];         // the probe identity's id (hex)
    int n_rows;
    plan_probe_row_t row[PLAN_CL_MAX_NODES];
} plan_probe_t;

// Fills unset (zero) options with their defaults.
void plan_probe_defaults(plan_probe_opts_t *o);

// Probes every other node of c. Returns 0 with one row per other node (reached or not), or -1 with
// the reason when it cannot start: the run config, the keys, or which node this is.
int plan_probe_run(const plan_cluster_t *c, const plan_probe_opts_t *o, plan_probe_t *p, char *err, size_t errlen);

// Puts the measured figures into c as [pair] figures between this node and each measured node (a
// partial row keeps the declared bandwidth). Returns how many pairs it set.
int plan_probe_apply(plan_cluster_t *c, const plan_probe_t *p);

// Writes the measured links as [pair A B] sections that can be appended to the description (with a
// comment for each node not measured), through a temporary file and a rename. 0, or -1 with the reason.
int plan_probe_write(const char *path, const plan_cluster_t *c, const plan_probe_t *p, const char *source, char *err,
                     size_t errlen);

#endif
