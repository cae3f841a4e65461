// Catch-up (issue #7): a peer that joins a running swarm fetches the current outer state as a named
// version, in chunks from several donors in parallel, each chunk verified against the version's
// manifest. No threads: it runs on the net thread, which feeds it events (catchup_on_event) and
// ticks (catchup_tick); every node both serves (donor side) and fetches (joiner side).
//
// A version is what a donor published: n fp32 values (for loco: anchor φ ‖ outer momentum), the
// outer round and the inner step it belongs to, cut into chunks of chunk_values values. Its
// manifest (byte layout below) lists the SHA-256 of every chunk's fp32 little-endian bytes and of
// the whole state; the version id is the SHA-256 of the manifest bytes, so two donors that name the
// same id hold bit-identical state, and a chunk that matches its manifest digest is the right chunk
// whoever sent it.
//
// Messages (types 57..60; round = the version's round, or the joiner's min_round for VERSION_REQ;
// all integers little-endian):
//   VERSION_REQ  57: u64 min_round. Answered with MANIFEST if the donor holds a version of round
//                    ≥ min_round, else NACK (index CATCHUP_NONE).
//   MANIFEST     58: the manifest:
//                      0 u32 format (1)   4 u32 chunk_values   8 u64 n   16 u64 round   24 u64 inner_step
//                     32 u32 nchunks (= ceil(n / chunk_values))   36 u32 reserved (0)   40 state hash[32]
//                     72 chunk digests, nchunks × 32 bytes
//   CHUNK_REQ    59: version id[32], u32 want, u32 got. want: a chunk index to send, or CATCHUP_NONE;
//                    got: a chunk this donor sent that the joiner has received, or CATCHUP_NONE. The
//                    acknowledgement is what frees the donor's in-flight slot for that requester.
//   NACK         60: version id[32] (zero for a VERSION_REQ), u32 index (CATCHUP_NONE for a
//                    VERSION_REQ), u32 reason (CATCHUP_NACK_*). The joiner stops asking that donor.
//   A chunk travels as a tensor (net_node_queue_tensor, fp32, copy = 1) with quantity
//   CATCHUP_QUANTITY(index) = (7 << 24) | index and round = the version's round.
// Every received message's length and counts are checked before use; a malformed one is dropped
// and counted (stats.malformed), never trusted. Caveat for integration: net_node_set_round_floor
// drops messages below the floor, so a donor's floor must stay ≤ the round of the version it serves.
//
// Donor side. catchup_publish copies a state into the module's own buffer (the last published
// version stays servable while the next round runs; publishing replaces it, and requests for the
// old one are then NACKed so the joiner moves on). Rate limits on what a donor serves: at most
// CATCHUP_SERVE_PER_PEER (2) chunks in flight per requester (the rest wait in a per-requester FIFO of
// up to 16, served round-robin across requesters), at most serve_total (default 8) in flight across
// all requesters (each in-flight chunk is a private copy inside the net layer: this bounds that
// memory), an optional serve rate in bytes/s (catchup_set_serve_rate), and the node's own
// [limits] upload_rate and per-destination caps underneath. An in-flight slot is freed by the
// requester's acknowledgement, or after the transfer's timeout (serve_timeout_ms, default 60 s).
//
// Joiner side. catchup_begin asks k donors for their version; once all answered (manifest, NACK or
// send failure) or manifest_wait_ms passed with at least one manifest, it chooses the state held
// by the most donors (one state: the same round, size, chunking and state hash — DiLoCo members publish
// one state under ids that differ by the inner step each reached; chunk requests carry each donor's own
// id) (ties: higher round, then smaller id) among those with round ≥ min_round (and
// n = expected_n when set), allocates the state and requests chunks from that version's holders,
// at most 2 outstanding per donor, spreading chunks to the least-loaded holder. Each received chunk
// is checked against the manifest; a mismatch is counted, the chunk dropped and requested
// elsewhere, and that donor marked bad (nothing more from it is used). A donor with outstanding
// chunks that delivers nothing for stall_ms (default 5000; set it above the time 2 chunks take at
// the slowest donor's rate), or that the caller reports gone (catchup_donor_gone), or that NACKs,
// loses its outstanding chunks to the other holders: the transfer goes on, never restarts. A late
// manifest (or catchup_add_donor) naming the chosen version adds a holder mid-transfer. When every
// chunk is in, the whole state's SHA-256 is checked against the manifest's state hash and a one-line
// summary is logged. It fails (catchup_done = -1) when no usable donor is left.
//
// Threads: every function runs on the net thread (the thread that owns net); the compute thread hands
// its state over by the mailbox, as the outer exchange does. Ownership: the module owns its published
// copy and the fetched state; catchup_result's pointer is borrowed until catchup_take_state hands it
// over (then the caller frees it with free()). Limits that interact: the net layer's [limits]
// max_inflight (default 4 incomplete transfers per peer) must leave room for the 2 catch-up chunks
// next to the outer exchange's; a manifest is 72 + 32·nchunks bytes and must fit [limits] max_message.
#ifndef LOCO_NODE_CATCHUP_H
#define LOCO_NODE_CATCHUP_H

#include <stddef.h>
#include <stdint.h>

#include "net/node.h"

enum {
    CATCHUP_MSG_VERSION_REQ = 57,
    CATCHUP_MSG_MANIFEST = 58,
    CATCHUP_MSG_CHUNK_REQ = 59,
    CATCHUP_MSG_NACK = 60,
    CATCHUP_MSG_FIRST = 57,
    CATCHUP_MSG_LAST = 60,
};

#define CATCHUP_KIND 7u                              // tensor quantity kind (outer_run uses 1..6)
#define CATCHUP_QUANTITY(index) ((CATCHUP_KIND << 24) | (uint32_t)(index))
#define CATCHUP_NONE 0xffffffffu
#define CATCHUP_MAX_DONORS 64
#define CATCHUP_MAX_CHUNKS (1u << 24)                // the index must fit the quantity's low 24 bits
#define CATCHUP_MANIFEST_HDR 72
#define CATCHUP_SERVE_PER_PEER 2

enum { CATCHUP_NACK_NO_VERSION = 1, CATCHUP_NACK_BUSY = 2, CATCHUP_NACK_BAD_INDEX = 3 };

typedef struct catchup_t catchup_t;

// A parsed manifest. digests points into the bytes it was decoded from (borrowed).
typedef struct {
    uint32_t chunk_values, nchunks;
    uint64_t n, round, inner_step;
    uint8_t state_hash[32];
    const uint8_t *digests; // nchunks × 32
    uint8_t id[32];         // SHA-256 of the manifest bytes
} catchup_manifest_t;

// Checks and parses manifest bytes (format, counts, lengths; n ≤ max_values when max_values > 0).
// Returns 0, or -1 with the reason. Pure: the fuzz target's entry point.
int catchup_manifest_decode(catchup_manifest_t *m, const uint8_t *buf, size_t len, uint64_t max_values, char *err,
                            size_t errlen);

// chunk_values: values per chunk (a multiple of 64, ≥ 64; e.g. 262144 = 1 MiB of fp32). net: borrowed,
// must outlive the module. NULL with the reason.
catchup_t *catchup_new(net_node_t *net, size_t chunk_values, char *err, size_t errlen);
void catchup_destroy(catchup_t **self_p);

// Settings (any time; 0 keeps the default).
void catchup_set_stall_ms(catchup_t *c, uint64_t ms);          // joiner: donor silence before reassigning (5000)
void catchup_set_manifest_wait_ms(catchup_t *c, uint64_t ms);  // joiner: wait for all manifests (2000)
void catchup_set_expected_n(catchup_t *c, uint64_t n);         // joiner: accept only versions of n values
void catchup_set_max_values(catchup_t *c, uint64_t n);         // joiner: largest n accepted (1 << 32)
void catchup_set_serve_rate(catchup_t *c, uint64_t bytes_per_s); // donor: chunk bytes/s served (0 = unlimited)
void catchup_set_fetch_rate(catchup_t *c, uint64_t bytes_per_s); // joiner: chunk bytes/s requested from all
                                                                  // donors together (0 = unlimited)
void catchup_set_serve_total(catchup_t *c, int chunks);        // donor: chunks in flight, all requesters (8)
void catchup_set_serve_timeout_ms(catchup_t *c, uint64_t ms);  // donor: transfer timeout, slot expiry (60000)

// Donor: copies state (n values) as the servable version of (round, inner_step), replacing the
// previous one, and computes its manifest and id. Returns 0 or -1 (out of memory, n = 0, too many
// chunks, non-finite values — the net layer refuses to send those). Costs one copy and one SHA-256
// pass over the state on the calling (net) thread.
int catchup_publish(catchup_t *c, uint64_t round, uint64_t inner_step, const float *state, size_t n);
// The published version's id (32 bytes); NULL before the first publish (or after a failed one).
const uint8_t *catchup_published_id(const catchup_t *c);

// Joiner: starts a catch-up from k donors (k ≤ CATCHUP_MAX_DONORS; the caller has connected to them)
// for a version of round ≥ min_round. Forgets any earlier catch-up's result. Returns 0, or -1 if k is
// out of range or no VERSION_REQ could be sent.
int catchup_begin(catchup_t *c, const uint8_t (*donors)[32], int k, uint64_t min_round);
// Joiner: adds a donor to a running catch-up (asks its version; it becomes a holder if it names the
// version being fetched, or a candidate while manifests are still awaited). Returns 0 or -1.
// Adds a donor mid-transfer (asks it for its version); a known donor that answered NACK (no version of
// the wanted round yet) is asked again.
int catchup_add_donor(catchup_t *c, const uint8_t id[32]);
// Joiner: the caller learned a donor left (membership, connection loss); its chunks go elsewhere.
void catchup_donor_gone(catchup_t *c, const uint8_t id[32]);

// Offers an event. Returns 1 if it was the module's (types 57..60, tensors of kind 7): it was
// handled and the caller still calls net_event_clear (the module may have taken ev->data). 0 otherwise.
int catchup_on_event(catchup_t *c, net_event_t *ev, uint64_t now_ms);
// Progress: version choice after the manifest wait, stall detection, donor-side serving and expiry.
// Call after every poll (it is cheap when idle).
void catchup_tick(catchup_t *c, uint64_t now_ms);

// Joiner: 0 running (or never begun), 1 done, -1 failed (reason in catchup_error).
int catchup_done(const catchup_t *c);
const char *catchup_error(const catchup_t *c);

typedef struct {
    const float *state;   // borrowed; NULL unless done
    size_t n;
    uint64_t round, inner_step;
    uint8_t id[32];       // version id
    uint8_t state_hash[32];
} catchup_result_t;
// Fills r with the fetched version. Returns 0 when done, -1 otherwise.
int catchup_result(const catchup_t *c, catchup_result_t *r);
// Hands the fetched state over (free() it); NULL unless done. After it, catchup_result's state is NULL.
float *catchup_take_state(catchup_t *c, size_t *n);

typedef struct {
    // joiner
    int ndonors;                              // donors asked
    uint8_t donor[CATCHUP_MAX_DONORS][32];
    uint32_t donor_chunks[CATCHUP_MAX_DONORS]; // verified chunks used from each donor
    int holders;                              // donors that named the chosen version
    uint32_t nchunks;
    uint64_t chunks_requested;                // CHUNK_REQs with a want, all donors
    uint64_t chunks_received;                 // verified chunks used
    uint64_t dup_chunks;                      // verified chunks that were already in (after a reassignment)
    uint64_t bad_chunks;                      // chunks whose SHA-256 did not match the manifest
    uint64_t ignored;                         // chunks from bad donors, for another version, unrequested
    uint64_t reassigned;                      // chunk requests moved to another donor
    uint64_t stalls;                          // donors dropped for silence
    uint64_t nacks;                           // NACKs received
    uint64_t bytes;                           // chunk payload bytes received (fp32)
    double seconds;                           // begin → done
    // donor
    uint64_t served_chunks, served_bytes;
    uint64_t served_nacks;                    // NACKs sent
    uint64_t manifests_sent;
    uint64_t serve_expired;                   // in-flight slots freed by timeout, not by an ack
    // both
    uint64_t malformed;                       // messages dropped by the module's checks
} catchup_stats_t;
void catchup_stats(const catchup_t *c, catchup_stats_t *out);

// Test hook: a donor that flips one bit of every chunk it serves (after the manifest was computed), so
// joiners must catch it by hash. 0 turns it off.
void catchup_test_corrupt(catchup_t *c, int on);

#endif
