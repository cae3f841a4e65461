// First-contact check of the run parameters (DESIGN.md: "A peer with a different fingerprint is
// refused with a message that says which field differs"). The fingerprint is a hash, so it can only
// say "different"; the parameters behind it say which. Both sides of a refused contact run the same
// comparison and so print the same field, each from its own side ("heads: 4 here, 6 there" on one
// peer, "heads: 6 here, 4 there" on the other).
//
// Wire form (what a HELLO may carry so the other side can compare), version 1, little-endian:
//   0 magic "LRUN"   4 version u8 = 1   5 protocol u16   7 layers u32   11 d_model u32   15 heads u32
//   19 seq_len u32   23 vocab u32   27 seed u64   35 H u32
//   39 then three strings, each length u8 + printable ASCII: run name, outer algorithm, codec
#ifndef LOCO_GOSSIP_RUNPARAMS_H
#define LOCO_GOSSIP_RUNPARAMS_H

#include <stddef.h>
#include <stdint.h>

#define GOSSIP_RUN_NAME_MAX 63
#define GOSSIP_RUN_WORD_MAX 15
#define GOSSIP_RUNPARAMS_MAX (39 + 3 + GOSSIP_RUN_NAME_MAX + 2 * GOSSIP_RUN_WORD_MAX)

typedef struct {
    uint16_t protocol_version;
    char run_name[GOSSIP_RUN_NAME_MAX + 1];
    uint32_t layers, d_model, heads, seq_len, vocab;
    uint64_t seed;                               // [train] seed: the initial weights
    char outer_algorithm[GOSSIP_RUN_WORD_MAX + 1]; // "diloco" | "noloco"
    uint32_t H;                                  // inner steps per outer step
    char codec[GOSSIP_RUN_WORD_MAX + 1];           // pseudo-gradient codec ("fp32", "int8", ...)
} gossip_run_params_t;

// Compares our parameters with a peer's. Returns 0 when every field matches; otherwise the number
// of differing fields, and msg names each as "field: ours here, theirs there", joined by "; ", the
// protocol version first (when it differs, the other fields may mean different things).
int gossip_run_params_compare(const gossip_run_params_t *ours, const gossip_run_params_t *theirs, char *msg,
                              size_t msglen);

// Writes the wire form into out (GOSSIP_RUNPARAMS_MAX always suffices). Returns its length, or 0
// when a string field is too long or not printable.
size_t gossip_run_params_encode(const gossip_run_params_t *p, uint8_t *out, size_t cap);
// Parses exactly len bytes. Returns 0, or -1 with the reason.
int gossip_run_params_decode(gossip_run_params_t *p, const uint8_t *buf, size_t len, char *err, size_t errlen);

#endif
