// Chunked tensor transfers, streamed: the sender encodes a flat float tensor with a codec
// (optim/codec.h; optional error feedback) one chunk at a time, hashes that chunk while it is
// still in cache, and sends it as a NET_MSG_CHUNK message [header][chunk header][chunk data] before
// encoding the next, so the wire, the cipher and the codec overlap. The receiver hashes and
// decodes each chunk into the destination tensor as it arrives (any order), and hands the tensor
// to the caller only when every chunk is in and every digest matched. Pure code, no sockets:
// net/node.c drives it and tests/fuzz/fuzz_transfer.c fuzzes it.
//
// Chunk header (NET_CHUNK_HDR_SIZE = 112 bytes, little-endian):
//   0  transfer id u64 (per sender)   8  quantity u32 (what the tensor is; chosen by the caller)
//   12 codec u8   13 reserved (3 bytes, zero)
//   16 total values u64   24 values per chunk u32 (a multiple of 64; the last chunk holds the rest)
//   28 chunk count u32    32 chunk index u32    36 reserved u32 (zero)
//   40 encoded total u64 (sum of every chunk's encoded size)
//   48 chunk digest[32]: SHA-256 of this chunk's data frame
//   80 transfer digest[32]: in the last chunk (index = count − 1) only, zero in every other:
//      SHA-256 of the concatenation of every chunk's digest in index order (a digest of digests,
//      so chunks can be hashed on arrival in any order — several streams may carry one transfer).
// Chunk i holds values [i·per, min(n, (i+1)·per)) encoded on their own; its data frame is exactly
// codec_encoded_size(codec, values in chunk i) bytes.
// Verification: a chunk whose data does not match its chunk digest, or does not decode (NaN/Inf),
// marks the transfer failed (nothing of it is ever delivered; the failure is reported once, when
// its last chunk arrives); when all chunks are in, the digest of the received chunk digests must
// equal the transfer digest. (An 80-byte header from the previous, hash-at-the-end format is refused
// as a bad chunk.)
#ifndef LOCO_NET_XFER_H
#define LOCO_NET_XFER_H

#include <stddef.h>
#include <stdint.h>

#include "net/frame.h"

#define NET_CHUNK_HDR_SIZE 112

typedef struct {
    uint64_t max_message;  // bytes of one ZeroMQ frame (also ZMQ_MAXMSGSIZE)
    uint64_t max_tensor;   // bytes of one received tensor, as fp32
    uint32_t max_inflight; // concurrent incomplete transfers per peer
} net_limits_t;

typedef struct {
    uint64_t xfer_id;
    uint32_t quantity;
    uint8_t codec;
    uint64_t total;
    uint32_t per_chunk, nchunks, index;
    uint64_t encoded_total;
    uint8_t digest[32];      // this chunk's SHA-256
    uint8_t xfer_digest[32]; // digest of digests; zero unless index == nchunks − 1
} net_chunk_hdr_t;

void net_chunk_hdr_encode(const net_chunk_hdr_t *h, uint8_t out[NET_CHUNK_HDR_SIZE]);
// Parses and checks a chunk header against the limits and the size of its data frame.
net_drop_t net_chunk_hdr_decode(net_chunk_hdr_t *h, const uint8_t *buf, size_t len, size_t data_len,
                                const net_limits_t *lim);
// Values in chunk i of a (checked) header's transfer.
uint64_t net_chunk_values(const net_chunk_hdr_t *h, uint32_t i);

typedef struct net_xfer_tx net_xfer_tx_t;

// Prepares a transfer of x (n values) in chunks of at most chunk_bytes encoded bytes; nothing is
// encoded yet. residual: error-feedback state of n floats for lossy codecs (NULL = none; ignored for
// fp32). x (and residual) must stay valid until the last chunk is encoded. Returns NULL with the
// reason (NaN/Inf in x — checked up front, so a bad tensor sends nothing —, bad codec, out of memory).
net_xfer_tx_t *net_xfer_tx_new(int codec, const float *x, size_t n, size_t chunk_bytes, float *residual,
                               uint32_t quantity, uint64_t xfer_id, char *err, size_t errlen);
void net_xfer_tx_destroy(net_xfer_tx_t **self_p);
// The transfer's header (index 0, digests not yet known) and the largest chunk's encoded size.
const net_chunk_hdr_t *net_xfer_tx_header(const net_xfer_tx_t *tx);
size_t net_xfer_tx_stride(const net_xfer_tx_t *tx);
// Encodes the next chunk (in index order) into out (net_xfer_tx_stride bytes), hashes it and
// writes its header. Returns the chunk's encoded size, or 0 when every chunk was produced, or
// -1 with the reason (e + Δ not finite under error feedback: chunks before it were produced).
long net_xfer_tx_next(net_xfer_tx_t *tx, uint8_t *out, uint8_t hdr[NET_CHUNK_HDR_SIZE], char *err, size_t errlen);

typedef struct {
    net_chunk_hdr_t h;     // index and chunk digest unused; xfer_digest once the last chunk came
    float *out;            // owned: the decoded tensor, filled chunk by chunk
    uint8_t *have;         // owned: one byte per chunk
    uint8_t *digests;      // owned: 32 bytes per chunk
    uint32_t received;
    net_drop_t failed;     // first chunk failure (NET_DROP_DIGEST / NET_DROP_NONFINITE), or NONE
    char why[200];         // its reason
    int64_t last_ms;       // for abandoning stalled transfers (set by the caller)
} net_xfer_rx_t;

// Starts reassembly from a checked header (net_chunk_hdr_decode). buf: a destination of exactly
// h->total floats to decode into (taken over: freed with the reassembler unless delivered), or NULL
// to allocate one. NULL on out of memory.
net_xfer_rx_t *net_xfer_rx_new(const net_chunk_hdr_t *h, float *buf);
void net_xfer_rx_destroy(net_xfer_rx_t **self_p);
// Adds one chunk (header already checked): verifies its digest and decodes it into rx->out.
// Returns NET_DROP_NONE, NET_DROP_CHUNK_RANGE if the header disagrees with the transfer's, or
// NET_DROP_DUP_CHUNK, NET_DROP_LENGTH. A chunk that fails its digest or decoding is counted as
// received but marks the transfer failed (see net_xfer_rx_finish).
net_drop_t net_xfer_rx_add(net_xfer_rx_t *rx, const net_chunk_hdr_t *h, const uint8_t *data, size_t len);
int net_xfer_rx_complete(const net_xfer_rx_t *rx);
// After the last chunk: checks the chunk failures and the transfer digest, then hands over the
// tensor (*out, owned by the caller, free()). Returns NET_DROP_NONE, NET_DROP_DIGEST or
// NET_DROP_NONFINITE (reason in err).
net_drop_t net_xfer_rx_finish(net_xfer_rx_t *rx, float **out, char *err, size_t errlen);

#endif
