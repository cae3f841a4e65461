// The cluster description of `loco plan` (an INI file; docs/plan-example.ini documents every key):
//   [model]          layers, d_model, heads, seq_len, vocab — as in loco's config
//   [train]          micro_batch, micro_batches, schedule (1f1b|gpipe), calib_block, calib_head
//   [outer]          algorithm (diloco|noloco), inner_steps (H), codec (fp32|bf16|int8|int4|bytes), overlap
//   [island NAME]    bandwidth, latency of the fabric inside the island (optional)
//   [link A B]       bandwidth, latency between islands A and B (required for islands that both have nodes)
//   [node NAME]      island, id (64 hex) or key (a key file or its .pub, relative to the INI's folder),
//                    device, flops (FLOP/s it sustains on this model), memory,
//                    nic = NAME tcp://host:port BANDWIDTH LATENCY [local|global] (repeatable, ≤ 4),
//                    peer = [ID@]tcp://host:port (its running `loco run`, for `loco plan --probe`)
//   [pair A B]       bandwidth, latency between nodes A and B (measured: `loco plan --probe-out`);
//                    they replace the NICs' and islands' figures for that pair; named twice, the
//                    slower figures count (lower bandwidth, higher latency)
// Units: bandwidth B/s kB/s MB/s GB/s KiB/s MiB/s GiB/s bit/s Mbit/s Gbit/s (Gb/s); latency s ms us ns;
// memory B kB MB GB KiB MiB GiB TiB; flops a number with k M G T P or FLOP/s, TFLOP/s...
#ifndef LOCO_NODE_PLAN_INI_H
#define LOCO_NODE_PLAN_INI_H

#include <stddef.h>
#include <stdint.h>

#include "node/plan.h"

// Parses a description. 0, or -1 with err naming the source, line and what is wrong (or what is
// missing). Reads key files named by `key =` (relative to source's folder).
int plan_cluster_parse(const char *text, size_t len, const char *source, plan_cluster_t *c, char *err,
                       size_t errlen);
// Reads and parses a file.
int plan_cluster_load(const char *path, plan_cluster_t *c, char *err, size_t errlen);
// The peer id in a loco key file or its .pub (its "id = HEX" line). 0, or -1 with the reason.
int plan_key_file_id(const char *path, uint8_t id[32], char *err, size_t errlen);

#endif
