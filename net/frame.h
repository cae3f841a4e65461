// Wire format (DESIGN.md "Wire format"). A message is a ZeroMQ multipart message:
//   frame 0    the fixed header below (NET_HDR_SIZE bytes)
//   frame 1..  the payload frames of its type (at most NET_MAX_PAYLOAD_FRAMES)
// Header, 56 bytes, every integer little-endian, never a struct written raw:
//   0  magic "LOCO"   4  version u16 (= NET_PROTOCOL_VERSION)   6  type u16
//   8  flags u32 (no flag is defined yet: must be 0)            12 reserved u32 (must be 0)
//   16 run id u64: the first 8 bytes (LE) of the run fingerprint
//   24 incarnation u64: the sender's start time in µs; a restarted peer has a larger one, so its
//      fresh sequence numbers are not taken for replays (DESIGN.md lists no incarnation field in
//      the header; it lives here because replay checks need it on every message)
//   32 round u64 (outer step)   40 sequence u64 (per sender, from 1, strictly increasing)
//   48 payload length u64: the sum of the sizes of frames 1.. , checked against what arrived
//
// Every decode here is pure and bounded: lengths are compared with the received sizes and limits
// before anything is allocated; failures name a drop reason (counted per reason and per peer).
#ifndef LOCO_NET_FRAME_H
#define LOCO_NET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "net/fingerprint.h"

#define NET_HDR_SIZE 56
#define NET_MAX_PAYLOAD_FRAMES 2

typedef enum {
    NET_MSG_HELLO = 1,   // first message on a connection: id, run description, optional ticket
    NET_MSG_WELCOME = 2, // the answer to an accepted HELLO; same body as HELLO
    NET_MSG_REFUSE = 3,  // the answer to a refused HELLO: a short reason text
    NET_MSG_PING = 4,    // echo request (latency probe); payload echoed in PONG
    NET_MSG_PONG = 5,
    NET_MSG_CHUNK = 6,   // one chunk of a tensor transfer: chunk header frame + data frame
    NET_MSG_PROBE = 7,   // bandwidth probe data; PROBE_ACK once the announced bytes arrived
    NET_MSG_PROBE_ACK = 8,
    NET_MSG_USER = 32,   // first type for layers above (gossip, averaging): delivered as events
    NET_MSG_TYPE_MAX = 64 // types ≥ this are unknown
} net_msg_type_t;

// Why a message was dropped. Order is stable (counter indices); names in net_drop_name().
typedef enum {
    NET_DROP_NONE = 0,
    NET_DROP_FRAMES,         // no header frame, or more frames than the type allows
    NET_DROP_HDR_SIZE,       // header frame not exactly NET_HDR_SIZE bytes
    NET_DROP_MAGIC,
    NET_DROP_VERSION,
    NET_DROP_TYPE,           // unknown message type
    NET_DROP_FLAGS,          // reserved flags/bytes set
    NET_DROP_RUN,            // run id is not ours
    NET_DROP_LENGTH,         // payload length differs from the bytes received
    NET_DROP_TOO_LARGE,      // a length beyond [limits]
    NET_DROP_NOT_ADMITTED,   // anything but HELLO from a peer not (yet) admitted
    NET_DROP_REFUSED,        // HELLO refused (deny, allow list, ticket, fingerprint)
    NET_DROP_BAD_HELLO,      // malformed HELLO/WELCOME body, or id not matching the CURVE key
    NET_DROP_STALE_INCARNATION,
    NET_DROP_REPLAY,         // sequence number seen before or too old for the window
    NET_DROP_STALE_ROUND,
    NET_DROP_BAD_CHUNK,      // malformed chunk header (codec, counts, sizes)
    NET_DROP_CHUNK_RANGE,    // chunk index out of range / inconsistent with its transfer
    NET_DROP_DUP_CHUNK,
    NET_DROP_INFLIGHT,       // more concurrent transfers from this peer than [limits] max_inflight
    NET_DROP_DIGEST,         // SHA-256 of the reassembled transfer differs
    NET_DROP_NONFINITE,      // decoded tensor holds NaN/Inf
    NET_DROP_TIMEOUT,        // incomplete transfer abandoned
    NET_DROP_BAD_PAYLOAD,    // malformed body of a small message type
    NET_DROP_COUNT
} net_drop_t;

const char *net_drop_name(net_drop_t d);

typedef struct {
    uint16_t version, type;
    uint32_t flags;
    uint64_t run_id, incarnation, round, seq, payload_len;
} net_hdr_t;

void net_put_u16(uint8_t *p, uint16_t v);
void net_put_u32(uint8_t *p, uint32_t v);
void net_put_u64(uint8_t *p, uint64_t v);
uint16_t net_get_u16(const uint8_t *p);
uint32_t net_get_u32(const uint8_t *p);
uint64_t net_get_u64(const uint8_t *p);

// The run id of a fingerprint: its first 8 bytes, little-endian.
uint64_t net_run_id(const uint8_t fp[32]);

void net_hdr_encode(const net_hdr_t *h, uint8_t out[NET_HDR_SIZE]);
// Checks size, magic, version, type, reserved fields. Returns NET_DROP_NONE or the reason.
net_drop_t net_hdr_decode(net_hdr_t *h, const uint8_t *buf, size_t len);
// Number of payload frames a type must have: exact count. -1 for unknown types.
int net_msg_frames(uint16_t type);

// HELLO / WELCOME body: id[32], desc_len u16, desc, ticket_len u16 (0 or NET_TICKET_BYTES), ticket.
typedef struct {
    uint8_t id[32];
    const char *desc; // points into the buffer
    size_t desc_len;
    const uint8_t *ticket; // NULL if none
} net_hello_t;

// Returns the encoded size (≤ len) or 0 if it does not fit.
size_t net_hello_encode(const uint8_t id[32], const char *desc, size_t desc_len, const uint8_t *ticket,
                        uint8_t *out, size_t len);
net_drop_t net_hello_decode(net_hello_t *h, const uint8_t *buf, size_t len);

#endif
