// Peer identity: an Ed25519 key pair (libsodium). The peer id is the public key as 64 lowercase hex
// digits (DESIGN.md: never Z85, whose alphabet has '@' ':' '/'). The CURVE (X25519) pair every socket
// uses is derived from it with libsodium's ed25519→curve25519 conversion, so one file serves both.
//
// Key file (text, created 0600 with O_EXCL; refused when group/world can read it):
//     # loco identity key (Ed25519) ...
//     id = <64 hex: public key>
//     seed = <64 hex: the 32-byte secret seed>
// A FILE.pub beside it holds "id = ..." only (mode 0644), for handing out.
#ifndef LOCO_NET_IDENTITY_H
#define LOCO_NET_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define NET_ID_BYTES 32
#define NET_ID_HEX 65 // 64 digits + NUL

typedef struct {
    uint8_t pk[32];       // Ed25519 public key: the peer id
    uint8_t sk[64];       // libsodium Ed25519 secret key (seed ‖ pk)
    uint8_t curve_pk[32]; // X25519, for CURVE
    uint8_t curve_sk[32];
} net_identity_t;

// Makes a fresh key pair. Returns 0 or -1 (libsodium failed to initialise).
int net_identity_generate(net_identity_t *id);
// Derives the pair from a 32-byte seed (tests use fixed seeds). Returns 0 or -1.
int net_identity_from_seed(net_identity_t *id, const uint8_t seed[32]);
// Writes path (0600, must not exist) and path.pub. Returns 0 or -1 with the reason.
int net_identity_save(const net_identity_t *id, const char *path, char *err, size_t errlen);
// Reads a key file. Refuses a file others can read (with the chmod that fixes it), a malformed file
// and an id that does not match the seed. Returns 0 or -1 with the reason.
int net_identity_load(net_identity_t *id, const char *path, char *err, size_t errlen);
// Overwrites the secret parts.
void net_identity_wipe(net_identity_t *id);

// 64 lowercase hex digits + NUL.
void net_id_to_hex(const uint8_t pk[32], char out[NET_ID_HEX]);
// Parses exactly 64 hex digits (either case). Returns 0 or -1.
int net_id_from_hex(const char *hex, uint8_t pk[32]);
// Ed25519 public key → X25519 public key. Returns 0, or -1 when pk is not a valid curve point.
int net_id_to_curve(const uint8_t pk[32], uint8_t curve_pk[32]);

// Parses "ID@tcp://host:port" into the id and the endpoint. Returns 0 or -1 with the reason.
int net_peer_addr_parse(const char *addr, uint8_t pk[32], char *endpoint, size_t len, char *err, size_t errlen);

// Constant-time-free hex helpers shared by net/ (lowercase out; in accepts either case).
void net_hex_encode(const uint8_t *in, size_t n, char *out);
int net_hex_decode(const char *in, size_t hexlen, uint8_t *out);

#endif
