// The run fingerprint (DESIGN.md): SHA-256 of what must match for peers to train together.
//
// It is computed over a canonical description, one "key=value\n" line per field in a fixed order,
// starting with "loco-run\n". Peers exchange the description in their HELLO, so a peer with a
// different fingerprint is refused with the name of the field that differs. Today's fields: protocol
// version, run name, model shape and vocabulary, train seed (the init seed), outer algorithm, H,
// codec, and — only when [pipeline] plan is set — pipeline.plan, the SHA-256 of the plan's canonical
// form (node/plan_file.h; "unreadable" when the file cannot be read, which loco run refuses before
// it gets here). Append lines in net_run_describe(); the protocol version line makes old and new
// peers disagree cleanly.
#ifndef LOCO_NET_FINGERPRINT_H
#define LOCO_NET_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#include "node/config.h"

#define NET_PROTOCOL_VERSION 1
#define NET_RUN_DESC_MAX 1024

// Writes the canonical description into out. Returns its length, or 0 if it does not fit.
size_t net_run_describe(const loco_config_t *c, char *out, size_t len);
// SHA-256 of a description.
void net_run_fingerprint_desc(const char *desc, size_t len, uint8_t fp[32]);
// net_run_describe + net_run_fingerprint_desc.
void net_run_fingerprint(const loco_config_t *c, uint8_t fp[32]);
// Compares two descriptions line by line; writes "model.layers: 4 here, 6 there" (here = ours) or
// "x: missing there" into out. Returns 0 if identical, 1 otherwise.
int net_run_diff(const char *ours, size_t olen, const char *theirs, size_t tlen, char *out, size_t outlen);

// One-shot SHA-256 (OpenSSL EVP).
void net_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
