// Membership records: what a peer says about itself, signed with its own Ed25519 key so that a
// record relayed by anyone else cannot be forged or altered (DESIGN.md "Identity, admission,
// transport"). Every peer gossips other peers' records verbatim; the signature travels with them.
//
// Wire form, version 1 (every integer little-endian, never a struct written raw):
//   0   magic "LMRC"            4   version u8 = 1
//   5   status u8               0 alive, 1 leaving (graceful leave; only the owner can say it)
//   6   flags u8                bit 0: reachable (accepts inbound connections); other bits 0
//   7   endpoint count u8       0..GOSSIP_MAX_ENDPOINTS (≥ 1 when reachable)
//   8   id[32]                  Ed25519 public key: the peer id and the signing key
//   40  run fingerprint[32]
//   72  incarnation u64         bumped by the owner on every re-signing (refutation, leave,
//                               capability change); a restarted peer starts above its last one
//   80  time u64                owner's unix time in ms when it signed
//   88  step rate u32           measured inner steps per second × 1000 (0 = not measured yet)
//   92  upload u64              measured upload bandwidth, bytes/s (0 = unknown)
//   100 download u64            measured download bandwidth, bytes/s (0 = unknown)
//   108 device length u8, device (printable ASCII, ≤ GOSSIP_DEVICE_MAX, e.g. "cpu", "cuda:H100")
//       per endpoint: length u8, "tcp://host:port" (printable ASCII, ≤ GOSSIP_ENDPOINT_MAX)
//       ticket length u16 (0..GOSSIP_TICKET_MAX), ticket bytes (opaque here: an admission ticket
//       checked by the admission callback, net/ticket.h)
//   end signature[64]           Ed25519 over GOSSIP_RECORD_CONTEXT ‖ every byte before it
//
// The context string keeps a record signature from ever verifying as another kind of loco
// signature (tickets, frames) made with the same key.
#ifndef LOCO_GOSSIP_RECORD_H
#define LOCO_GOSSIP_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSSIP_ID_BYTES 32
#define GOSSIP_FP_BYTES 32
#define GOSSIP_SK_BYTES 64 // libsodium Ed25519 secret key (seed ‖ public key)
#define GOSSIP_SIG_BYTES 64
#define GOSSIP_MAX_ENDPOINTS 4
#define GOSSIP_ENDPOINT_MAX 200
#define GOSSIP_DEVICE_MAX 31
#define GOSSIP_TICKET_MAX 256
#define GOSSIP_RECORD_VERSION 1
#define GOSSIP_RECORD_FIXED 108 // bytes before the device field
#define GOSSIP_RECORD_MIN (GOSSIP_RECORD_FIXED + 1 + 2 + GOSSIP_SIG_BYTES)
#define GOSSIP_RECORD_MAX                                                                                    \
    (GOSSIP_RECORD_FIXED + 1 + GOSSIP_DEVICE_MAX + GOSSIP_MAX_ENDPOINTS * (1 + GOSSIP_ENDPOINT_MAX) + 2 +     \
     GOSSIP_TICKET_MAX + GOSSIP_SIG_BYTES)
#define GOSSIP_RECORD_CONTEXT "loco member record v1" // signed with its NUL

typedef enum { GOSSIP_STATUS_ALIVE = 0, GOSSIP_STATUS_LEAVING = 1 } gossip_status_t;

typedef struct {
    char device[GOSSIP_DEVICE_MAX + 1];
    uint32_t step_rate_milli; // inner steps/s × 1000
    uint64_t upload_Bps, download_Bps;
    bool reachable; // false: outbound-only (behind NAT); dialed only over its own connection
} gossip_caps_t;

typedef struct {
    uint8_t id[GOSSIP_ID_BYTES];
    uint8_t run_fp[GOSSIP_FP_BYTES];
    uint64_t incarnation;
    uint64_t time_ms;
    gossip_status_t status;
    gossip_caps_t caps;
    int n_endpoints;
    char endpoints[GOSSIP_MAX_ENDPOINTS][GOSSIP_ENDPOINT_MAX + 1];
    uint16_t ticket_len;
    uint8_t ticket[GOSSIP_TICKET_MAX];
    uint8_t sig[GOSSIP_SIG_BYTES]; // filled by sign and decode
} gossip_record_t;

// Why a record was refused. Order is stable (counter indices); names in gossip_rec_status_name().
typedef enum {
    GOSSIP_REC_OK = 0,
    GOSSIP_REC_MALFORMED, // truncated, a length past the buffer or a limit, a bad field
    GOSSIP_REC_VERSION,   // a record version this build does not know
    GOSSIP_REC_FORGED,    // the signature does not verify under the record's own id
    GOSSIP_REC_WRONG_RUN, // signed by its owner, but for another run
    GOSSIP_REC_STATUS_COUNT
} gossip_rec_status_t;

const char *gossip_rec_status_name(gossip_rec_status_t s);

// Checks the fields a record may carry (endpoint syntax, device text, counts, reachable ⇒ an
// endpoint). Returns 0, or -1 with the reason in err.
int gossip_record_check(const gossip_record_t *r, char *err, size_t errlen);

// Checks r, sets r->id from sk (the public half), signs r with sk and writes the wire form into
// out (cap bytes; GOSSIP_RECORD_MAX always suffices). Fills r->sig. Returns the encoded length, or 0
// with the reason in err.
size_t gossip_record_sign(gossip_record_t *r, const uint8_t sk[GOSSIP_SK_BYTES], uint8_t *out, size_t cap,
                          char *err, size_t errlen);

// Parses and verifies a wire record of exactly len bytes. Every length is checked against the
// buffer before it is used; nothing is allocated. The signature is checked before anything about
// the run, and run_fp must match. Returns GOSSIP_REC_OK and fills r, or the reason (r then holds
// nothing meaningful) with a sentence in err.
gossip_rec_status_t gossip_record_decode(gossip_record_t *r, const uint8_t *buf, size_t len,
                                         const uint8_t run_fp[GOSSIP_FP_BYTES], char *err, size_t errlen);

// Simulations only (not thread-safe): a process-wide cache of `entries` (rounded up to a power of
// two) successful signature checks, keyed by a BLAKE2b-256 hash of the whole wire record, so that
// N peers simulated in one process verify each distinct signed record once instead of N times.
// A hit needs the very bytes that verified before. 0 turns it off (the default).
void gossip_record_verify_cache(size_t entries);

// "tcp://host:port" with a non-empty host name, IPv4 address or bracketed IPv6 address and a port
// in 1..65535 (no wildcard: this is an address to dial). Returns true when s (len bytes) is one.
bool gossip_endpoint_valid(const char *s, size_t len);

// Lowercase hex of an id (64 digits + NUL), and its first 8 digits for log lines.
void gossip_id_hex(const uint8_t id[GOSSIP_ID_BYTES], char out[2 * GOSSIP_ID_BYTES + 1]);
void gossip_id_short(const uint8_t id[GOSSIP_ID_BYTES], char out[9]);

// Little-endian helpers shared by gossip/.
static inline void gossip_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void gossip_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void gossip_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t gossip_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t gossip_get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t gossip_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#endif
