// The node's configuration: one INI file, overridden by --set section.key=value flags.
//
// Every key is declared in one table (config.c) with its type, range and default; the same table
// drives parsing, validation and `deploy/loco.example.ini`'s documentation test. Unknown sections
// and keys, malformed lines and out-of-range values are errors that name the file, the line, the
// key and the reason (Redis-style), and commands exit 2 on them.
#ifndef LOCO_NODE_CONFIG_H
#define LOCO_NODE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "model/gpt.h"

#define CONFIG_PATH_MAX 1024
#define CONFIG_LIST_MAX 64

typedef struct {
    int n;
    char item[CONFIG_LIST_MAX][160];
} config_list_t;

typedef struct {
    // [run]
    char run_name[64];
    // [node]
    char log_level[16];
    // [model]
    gpt_config_t model;
    // [train]
    char data[CONFIG_PATH_MAX];
    char init[CONFIG_PATH_MAX];     // safetensors with the run's initial weights; "" = from seed
    int batch;
    int64_t steps;
    float lr, lr_min;
    int64_t warmup;
    float weight_decay, grad_clip, beta1, beta2, eps;
    int64_t seed;
    int64_t data_stream;            // -1: derived from the peer id (or 0 for `loco train`)
    int threads;
    char train_active[32];          // daily window "HH:MM-HH:MM" (local time) when loco run trains; "" = always
    char checkpoint_dir[CONFIG_PATH_MAX];
    int64_t checkpoint_every;       // inner steps; 0 = only at the end
    int checkpoint_keep;
    int64_t eval_every;             // 0 = never
    int eval_batches;
    char metrics[CONFIG_PATH_MAX];  // JSONL path, empty = none
    char device[16];                // cpu | cuda
    int device_index;
    int tf32;

    // identity, admission, transport (net/node.h): [node] key/ticket, [run] admission..., [net], [limits]
    char key[CONFIG_PATH_MAX];      // Ed25519 key file (loco keygen)
    char ticket[1024];              // ticket text or a file holding it (loco admit)
    char admission[16];             // open | allowlist | ticket
    config_list_t allow, deny;      // peer ids (repeatable keys)
    char authority[72];             // ticket mode: id of the run authority
    char net_listen[256];           // ROUTER endpoint
    int64_t chunk_size;             // encoded bytes per transfer chunk
    int hwm;                        // ZeroMQ high-water mark (messages per connection)
    int64_t max_message, max_tensor;
    int max_inflight;
    int64_t upload_rate, download_rate; // bytes/s of tensor data; 0 = unlimited

    // membership (gossip/, node/run.c): [net] advertise/reachable, [gossip], [bootstrap], [node] peer_cache
    char net_advertise[256];        // endpoint others dial; "" = the bound endpoint
    char net_reachable[8];          // auto | yes | no
    int gossip_period_ms;           // [gossip] period_ms: SWIM protocol period
    int gossip_ack_timeout_ms;      // ack timeout before the first round-trip sample
    int gossip_indirect_k;          // ping-req helpers
    float gossip_suspicion_mult;    // suspicion timeout in (scaled) protocol periods
    int gossip_sync_interval_ms;    // anti-entropy digest exchange period
    config_list_t seeds;            // [bootstrap] seed = ID@tcp://host:port (repeatable)
    char peer_cache[CONFIG_PATH_MAX]; // last-known live peers, used when the seeds are down

    // operations (node/control.h, node/http_metrics.h): [node] control, [metrics] listen
    char control[CONFIG_PATH_MAX];  // loco status socket; "" = CHECKPOINT_DIR/control/loco.sock, "off" = none
    char metrics_listen[256];       // Prometheus endpoint address; "" = off

    // outer steps (optim/outer.h, node/outer_run.c): [outer]
    char outer_algorithm[8];        // diloco | noloco
    int64_t inner_steps;            // H
    float outer_lr;                 // η
    float outer_momentum;           // μ; < 0 = the algorithm's default (diloco 0.9, noloco 0.5)
    int group_size;                 // NoLoCo group size n
    char outer_codec[8];            // fp32 | bf16 | int8 | int4
    int error_feedback;
    int deadline_ms;                // per exchange; 0 = adaptive to observed exchange times
    int overlap;                    // CO2: the exchange of round t runs while round t+1 computes
    float co2_gap_penalty;          // λ ≥ 1: the stale averaged pseudo-gradient is divided by it
    float co2_clip;                 // element-wise clip of the outer momentum; 0 = off
    float max_norm_ratio;           // robust acceptance: reject pseudo-gradients this many × larger

    // pipeline stages (node/pipe.h): [pipeline]
    char pipeline_plan[CONFIG_PATH_MAX]; // plan file (node/plan_file.h); "" = no pipeline
    int pipeline_timeout_ms;        // a micro-batch unanswered this long is rerouted; a silent peer is taken for dead

    // Where each value came from, for error messages after loading.
    char source[CONFIG_PATH_MAX];
} loco_config_t;

// Fills every key with its default.
void config_defaults(loco_config_t *c);

// Parses an INI file over the current values. Returns 0, or -1 with "FILE:LINE: reason\n  > line"
// in err.
int config_load(loco_config_t *c, const char *path, char *err, size_t errlen);

// Applies one "section.key=value" override (from --set). Returns 0 or -1 with the reason in err.
int config_set(loco_config_t *c, const char *assignment, char *err, size_t errlen);

// Cross-key checks (heads divide d_model, lr_min ≤ lr, ...). Returns 0 or -1 with the reason.
int config_validate(const loco_config_t *c, char *err, size_t errlen);

// Number of declared keys and the "section.key" name of key i, for documentation checks.
int config_num_keys(void);
const char *config_key_name(int i, char *buf, size_t len);

#endif
