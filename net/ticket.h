// Admission tickets (`loco admit`): the run authority's Ed25519 signature binding a peer id to a run
// fingerprint, with an expiry. A ticket travels in the peer's first application message (HELLO),
// since ZAP sees only the connecting key.
//
// Binary form (184 bytes, little-endian):
//   0  magic "LTKT"        4  version u8 = 1     5  reserved, zero (3 bytes)
//   8  run fingerprint[32] 40 peer id[32]        72 authority id[32]
//   104 issued u64 (unix s) 112 expires u64 (unix s, 0 = never)
//   120 Ed25519 signature[64] over bytes 0..119
// Text form: the 184 bytes as 368 lowercase hex digits (what `loco admit` prints).
#ifndef LOCO_NET_TICKET_H
#define LOCO_NET_TICKET_H

#include <stddef.h>
#include <stdint.h>

#include "net/identity.h"

#define NET_TICKET_BYTES 184
#define NET_TICKET_TEXT (2 * NET_TICKET_BYTES + 1)

typedef struct {
    uint8_t run_fp[32], peer[32], authority[32];
    uint64_t issued, expires;
    uint8_t sig[64];
} net_ticket_t;

typedef enum {
    NET_TICKET_OK = 0,
    NET_TICKET_MALFORMED,
    NET_TICKET_FORGED,       // signature does not verify
    NET_TICKET_WRONG_AUTHORITY,
    NET_TICKET_WRONG_RUN,
    NET_TICKET_WRONG_PEER,
    NET_TICKET_EXPIRED,
} net_ticket_status_t;

// Fills authority and sig from the authority's key over the other fields.
void net_ticket_sign(net_ticket_t *t, const net_identity_t *authority);
void net_ticket_encode(const net_ticket_t *t, uint8_t out[NET_TICKET_BYTES]);
// Structural parse (magic, version, reserved bytes, length). Returns 0 or -1 with the reason.
int net_ticket_decode(net_ticket_t *t, const uint8_t *buf, size_t len, char *err, size_t errlen);
void net_ticket_to_text(const net_ticket_t *t, char out[NET_TICKET_TEXT]);
// Parses the hex text (surrounding whitespace allowed). Returns 0 or -1 with the reason.
int net_ticket_from_text(net_ticket_t *t, const char *text, char *err, size_t errlen);
// Reads a ticket given either inline (the hex text) or as the path of a file holding it.
int net_ticket_load(net_ticket_t *t, const char *value, char *err, size_t errlen);

// Checks signature, authority, run, peer and expiry (in that order: nothing about the run is
// compared before the signature holds). Returns NET_TICKET_OK or the first failure, with a reason.
net_ticket_status_t net_ticket_verify(const net_ticket_t *t, const uint8_t authority[32], const uint8_t run_fp[32],
                                      const uint8_t peer[32], uint64_t now, char *err, size_t errlen);
const char *net_ticket_status_name(net_ticket_status_t s);

// Parses an expiry: "YYYY-MM-DD" (end of that day, UTC), "YYYY-MM-DDTHH:MM[:SS][Z]" (UTC),
// "+Nd", "+Nh", "+Ns" (relative to now), or "never" (0). Returns 0 or -1.
int net_ticket_parse_expiry(const char *s, uint64_t now, uint64_t *out);

#endif
