// The transport: one net_node_t per peer process, owned and used by one thread (the net thread).
//
// It owns the ZeroMQ context, a ROUTER socket bound to [net] listen with CURVE server keys, a ZAP
// handler (a REP socket on inproc://zeromq.zap.01, serviced in the same thread, no czmq), and one
// DEALER (CURVE client) per peer it connects to. Replies to a peer that connected to us go back
// over our ROUTER, so one connection serves both directions.
//
// Admission ([run] admission = open | allowlist | ticket; deny always wins):
//   ZAP sees only the connecting X25519 key. It refuses denied keys, and in allowlist mode keys not
//   listed. Every connection then starts with a HELLO (id, run description, optional ticket); until
//   a HELLO is accepted, any other message from that key is dropped unprocessed ("not admitted").
//   A HELLO is accepted if the claimed id maps to the CURVE key, the id is not denied, admission
//   holds (open; listed; or, in ticket mode, a ticket that verifies for this run and this id), and
//   the run description matches ours. A refused peer gets REFUSE with a short reason, and learns
//   nothing about the run unless it passed admission (then it is told which field differs).
//   The answer WELCOME carries the same body back: the connecting side checks the server's id,
//   its deny list and the run description (not the admission mode: it chose that server by id).
//
// Every received message is checked (frame count, header, run id, lengths against the frames,
// incarnation, sequence window, round floor, type-specific bodies) and, if it fails, dropped,
// counted per reason and per peer, and logged with the peer id. Nothing malformed reaches the
// caller. Sends block with backpressure: when a peer's high-water mark is reached, the node
// services its other sockets until the peer drains or the deadline passes.
//
// Reconnection: libzmq re-dials a DEALER whose peer went away. Every handshake after the first
// (seen through a socket monitor) makes the node send HELLO again, so a restarted peer admits us
// without the caller calling net_node_connect again (a WELCOME event follows).
//
// Tensors stream (net/xfer.h): each chunk is encoded and hashed into a reusable send buffer (at
// most 32 per node, lent to libzmq zero-copy and handed back once it has encrypted or written the
// bytes) just before it is queued; the receiver hashes and decodes each chunk straight from the
// received frame into the destination tensor as it arrives, and delivers the tensor only after
// every chunk digest and the transfer digest matched.
#ifndef LOCO_NET_NODE_H
#define LOCO_NET_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "net/frame.h"
#include "net/identity.h"
#include "net/ticket.h"
#include "net/xfer.h"
#include "node/config.h"

typedef enum { NET_ADMIT_OPEN = 0, NET_ADMIT_ALLOWLIST = 1, NET_ADMIT_TICKET = 2 } net_admission_t;

#define NET_MAX_LIST 64

typedef struct {
    net_identity_t identity;
    char listen[256];          // endpoint to bind, e.g. "tcp://127.0.0.1:0"; "" = no listener
    net_admission_t admission;
    uint8_t allow[NET_MAX_LIST][32];
    int n_allow;
    uint8_t deny[NET_MAX_LIST][32];
    int n_deny;
    uint8_t authority[32];     // ticket mode: the run authority's id
    int has_authority;
    uint8_t ticket[NET_TICKET_BYTES]; // our own ticket, sent in HELLO/WELCOME
    int has_ticket;
    char run_desc[NET_RUN_DESC_MAX]; // net_run_describe()
    size_t run_desc_len;
    net_limits_t limits;
    size_t chunk_bytes;        // encoded bytes per chunk (1–4 MiB)
    int hwm;                   // ZeroMQ high-water mark, messages per peer connection
    int transfer_timeout_ms;   // an incomplete transfer idle this long is abandoned
    uint64_t incarnation;      // 0 = now in µs
    int plaintext;             // benchmarks only: no CURVE, no ZAP (never from a config file)
    int io_threads;            // libzmq I/O threads (each connection's cipher runs on one); default 2
} net_opts_t;

// Defaults for limits, chunking and HWM; admission open; no listener; empty description.
void net_opts_defaults(net_opts_t *o);
// Fills options from a config: loads [node] key (refusing readable secret keys) and [node] ticket,
// parses [run] admission/allow/deny/authority, [net] and [limits], computes the run description.
// Returns 0 or -1 with the reason.
int net_opts_from_config(net_opts_t *o, const loco_config_t *c, char *err, size_t errlen);

typedef enum {
    NET_EV_NONE = 0,
    NET_EV_MESSAGE,  // a NET_MSG_USER+ message: type, round, payload
    NET_EV_TENSOR,   // a verified, decoded tensor: data (n floats), quantity, codec, round
    NET_EV_ADMITTED, // a peer's HELLO was accepted
    NET_EV_WELCOME,  // a peer we connected to accepted us
    NET_EV_REFUSED,  // a peer we connected to refused us (reason in text)
} net_event_kind_t;

typedef struct {
    net_event_kind_t kind;
    uint8_t peer[32];      // Ed25519 id of the other side
    uint16_t type;
    uint64_t round;
    uint8_t *payload;      // MESSAGE: owned by the event
    size_t len;
    float *data;           // TENSOR: owned by the event
    size_t n;
    uint32_t quantity;
    int codec;
    char text[200];        // REFUSED: the reason
} net_event_t;

// Frees what the event owns; the caller may steal payload/data first by setting them to NULL.
void net_event_clear(net_event_t *ev);

typedef struct {
    uint64_t tx_bytes[NET_MSG_TYPE_MAX], rx_bytes[NET_MSG_TYPE_MAX]; // all frames, header included
    uint64_t tx_msgs[NET_MSG_TYPE_MAX], rx_msgs[NET_MSG_TYPE_MAX];   // rx: accepted messages
    uint64_t drops[NET_DROP_COUNT];
    uint64_t delivered;    // events handed to the caller (messages + tensors)
} net_stats_t;

typedef struct net_node_t net_node_t;

// Creates the node: context, ZAP handler, ROUTER bound to o->listen. NULL with the reason.
net_node_t *net_node_new(const net_opts_t *o, char *err, size_t errlen);
void net_node_destroy(net_node_t **self_p);

// The bound endpoint with the real port ("tcp://127.0.0.1:41234"), or "" without a listener.
const char *net_node_endpoint(const net_node_t *n);
// "ID@endpoint" for this node, for other peers' configs.
void net_node_address(const net_node_t *n, char *out, size_t len);
const uint8_t *net_node_id(const net_node_t *n);

// A plain TCP connect to tcp://host:port (also tcp://[v6]:port) within timeout_ms, to tell "nothing
// answers there" apart from "answers but the handshake fails": ZeroMQ itself retries in silence and
// reports neither. 0, or -1 with why ("connection refused (nothing listens on that port)", "no answer
// within 5 s", "cannot resolve ...").
int net_tcp_check(const char *endpoint, int timeout_ms, char *why, size_t wlen);

// Connects a DEALER to "ID@tcp://host:port" and queues our HELLO. Returns 0 or -1 with the reason.
// Connecting twice to the same id reuses the connection.
int net_node_connect(net_node_t *n, const char *addr, char *err, size_t errlen);
// Services the node until the peer answered our HELLO. Returns 0 (welcomed) or -1 (refused, with
// its reason, or timed out). Events that arrive meanwhile are queued for net_node_poll.
int net_node_handshake(net_node_t *n, const uint8_t peer[32], int timeout_ms, char *err, size_t errlen);

// Sends one message of type ≥ NET_MSG_USER (payload ≤ limits.max_message). Returns 0 or -1.
int net_node_send(net_node_t *n, const uint8_t peer[32], uint16_t type, uint64_t round, const void *payload,
                  size_t len, int timeout_ms, char *err, size_t errlen);
// Sends a tensor in chunks with a codec; residual (n floats, may be NULL) is the error-feedback
// state for lossy codecs and is updated. Blocks (servicing the node) under backpressure until every
// chunk is queued or timeout_ms passes. Returns 0 or -1 with the reason.
int net_node_send_tensor(net_node_t *n, const uint8_t peer[32], uint32_t quantity, uint64_t round, int codec,
                         const float *x, size_t count, float *residual, int timeout_ms, char *err, size_t errlen);

// Queues a tensor transfer and returns at once: its chunks go out from every pass of the node's
// service loop (net_node_poll and any blocking call) as the socket, the send buffers and the rate
// caps allow, interleaved with other queued transfers, so gossip keeps flowing while a large tensor
// crosses a slow link. With copy = 0, x (and residual) must stay untouched until the transfer is done
// (net_node_queued() reaches zero, or by the exchange's own logic); copy = 1 sends from a private
// copy. A transfer not finished by timeout_ms is abandoned and logged. Returns 0 or -1 with the reason.
// chunk_bytes: the encoded size of each chunk (it decides how lossy codecs split the tensor, so a
// sender that must give several receivers identical bytes passes one value for all); 0 = the
// default for that destination (net_node_chunk_bytes_for).
int net_node_queue_tensor(net_node_t *n, const uint8_t peer[32], uint32_t quantity, uint64_t round, int codec,
                          const float *x, size_t count, float *residual, int copy, size_t chunk_bytes,
                          int timeout_ms, char *err, size_t errlen);
// Transfers still queued.
int net_node_queued(const net_node_t *n);
// Drops the queued transfers to peer for round (a partner that left the exchange: its bytes would only
// hold up the link). Returns how many were dropped.
int net_node_cancel_queued(net_node_t *n, const uint8_t peer[32], uint64_t round);

// Rate caps on tensor data (chunks): [limits] upload_rate for everything this node sends, and per
// destination the download cap that peer announced (its member record), so a sender never floods a
// volunteer's downlink. Bytes per second; 0 = unlimited. Chunks shrink to about 1/8 s of the rate
// that applies (at least 64 KiB), so pacing is smooth and gossip never waits long behind a chunk:
// net_node_chunk_bytes is the size under our upload cap, net_node_chunk_bytes_for the size for one
// destination (also under its download cap).
void net_node_set_upload_rate(net_node_t *n, uint64_t bytes_per_s);
void net_node_set_peer_rate(net_node_t *n, const uint8_t peer[32], uint64_t bytes_per_s);
size_t net_node_chunk_bytes(const net_node_t *n);
size_t net_node_chunk_bytes_for(net_node_t *n, const uint8_t peer[32]);

// Services sockets until an event is ready or timeout_ms passes (0: don't wait, -1: forever).
// Returns 1 with *ev filled (release with net_event_clear), 0 on timeout, -1 on a fatal socket error.
int net_node_poll(net_node_t *n, net_event_t *ev, int timeout_ms);

// Hands a delivered tensor (ev.data, ev.n; steal it from the event first) back instead of freeing
// it: the next received tensor of the same size is decoded into it, whose pages are already
// faulted in — a fresh 256 MiB destination costs 65536 page faults and the kernel zeroing it. The
// node keeps at most 4 and frees them at destroy. Optional: free() is always fine too.
void net_node_recycle(net_node_t *n, float *data, size_t count);

// Waking the net thread from another thread (over inproc://, as DESIGN.md's threads talk): the
// other thread creates the waker (it owns it from then on, at most one per node), and each
// net_waker_wake makes the node's current or next net_node_poll return 0 early. Destroy the waker
// in its thread before the node is destroyed.
typedef struct net_waker_t net_waker_t;
net_waker_t *net_waker_new(net_node_t *n);
void net_waker_wake(net_waker_t *w);
void net_waker_destroy(net_waker_t **w_p);

// Messages of round-scoped types (CHUNK, USER) older than this round are dropped as stale.
void net_node_set_round_floor(net_node_t *n, uint64_t round);

const net_stats_t *net_node_stats(const net_node_t *n);
// Per-peer counters; returns -1 for an unknown peer.
int net_node_peer_stats(const net_node_t *n, const uint8_t peer[32], net_stats_t *out);
// Logs one summary line per peer and the drop counters.
void net_node_log_stats(const net_node_t *n);

// Bandwidth/latency probe to a welcomed peer: `pings` echo round trips (median RTT), then `bytes`
// of probe data acknowledged by the peer (goodput through CURVE). The peer answers from its own
// poll loop. Returns 0 or -1 with the reason.
typedef struct {
    double rtt_ms_median, rtt_ms_min;
    double mbytes_per_s;
    uint64_t bytes;
} net_probe_result_t;
int net_probe(net_node_t *n, const uint8_t peer[32], int pings, size_t bytes, int timeout_ms, net_probe_result_t *r,
              char *err, size_t errlen);

// ZAP (RFC 27) for a CURVE server socket: answers one request waiting on the REP socket zap (bound to
// inproc://zeromq.zap.01; nothing happens when none waits). decide gets the client's X25519 key and
// returns 1 to admit it, with the User-Id to report (hex, NUL-terminated) in uid, or 0 with a short
// reason in *text. Requests of another mechanism are refused. The net node and pipeline stages share it.
typedef int (*net_zap_decide_fn)(void *ctx, const uint8_t key[32], char uid[NET_ID_HEX], const char **text);
void net_zap_answer_one(void *zap, net_zap_decide_fn decide, void *ctx);

// Test hooks: send raw frames (frame 0 = header, etc.) to a peer over our connection, bypassing
// every check, and the sequence number our next message will carry.
int net_node_send_raw(net_node_t *n, const uint8_t peer[32], const void *const *frames, const size_t *lens,
                      int nframes);
uint64_t net_node_next_seq(const net_node_t *n);

#endif
