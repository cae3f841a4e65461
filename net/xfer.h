// Chunked tensor transfers: the sender encodes a flat float tensor chunk by chunk with a codec
// (optim/codec.h; optional error feedback), hashes the whole encoding with SHA-256, and sends each
// chunk as a NET_MSG_CHUNK message: [header][chunk header][chunk data]. The receiver reassembles the
// encoded bytes, verifies the digest, then decodes (rejecting NaN/Inf) before anything is used.
// Pure code, no sockets: net/node.c drives it and tests/fuzz/fuzz_transfer.c fuzzes it.
//
// Chunk header (NET_CHUNK_HDR_SIZE = 80 bytes, little-endian):
//   0  transfer id u64 (per sender)   8  quantity u32 (what the tensor is; chosen by the caller)
//   12 codec u8   13 reserved (3 bytes, zero)
//   16 total values u64   24 values per chunk u32 (a multiple of 64; the last chunk holds the rest)
//   28 chunk count u32    32 chunk index u32    36 reserved u32 (zero)
//   40 encoded total u64 (sum of every chunk's encoded size)   48 SHA-256 of the encoding[32]
// Chunk i holds values [i·per, min(n, (i+1)·per)) encoded on their own; its data frame is exactly
// codec_encoded_size(codec, values in chunk i) bytes and sits at offset i·encoded_size(per).
#ifndef LOCO_NET_XFER_H
#define LOCO_NET_XFER_H

#include <stddef.h>
#include <stdint.h>

#include "net/frame.h"

#define NET_CHUNK_HDR_SIZE 80

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
    uint8_t digest[32];
} net_chunk_hdr_t;

void net_chunk_hdr_encode(const net_chunk_hdr_t *h, uint8_t out[NET_CHUNK_HDR_SIZE]);
// Parses and checks a chunk header against the limits and the size of its data frame.
net_drop_t net_chunk_hdr_decode(net_chunk_hdr_t *h, const uint8_t *buf, size_t len, size_t data_len,
                                const net_limits_t *lim);

typedef struct {
    net_chunk_hdr_t h;  // index unused
    uint8_t *enc;       // owned: the whole encoding
    size_t chunk_stride; // encoded size of a full chunk
} net_xfer_tx_t;

// Encodes x (n values) in chunks of at most chunk_bytes encoded bytes. residual: error-feedback
// state of n floats for lossy codecs (NULL = none; ignored for fp32). Returns NULL with the reason
// (NaN/Inf in x, bad codec, out of memory).
net_xfer_tx_t *net_xfer_tx_new(int codec, const float *x, size_t n, size_t chunk_bytes, float *residual,
                               uint32_t quantity, uint64_t xfer_id, char *err, size_t errlen);
void net_xfer_tx_destroy(net_xfer_tx_t **self_p);
// Chunk i's encoded bytes; its header is tx->h with index = i.
const uint8_t *net_xfer_tx_chunk(const net_xfer_tx_t *tx, uint32_t i, size_t *len);

typedef struct {
    net_chunk_hdr_t h;
    uint8_t *enc, *have; // owned: encoding, one byte per chunk
    uint32_t received;
    int64_t last_ms;     // for abandoning stalled transfers (set by the caller)
} net_xfer_rx_t;

// Starts reassembly from a checked header (net_chunk_hdr_decode). NULL on out of memory.
net_xfer_rx_t *net_xfer_rx_new(const net_chunk_hdr_t *h);
void net_xfer_rx_destroy(net_xfer_rx_t **self_p);
// Adds one chunk (header already checked). Returns NET_DROP_NONE, NET_DROP_CHUNK_RANGE if the header
// disagrees with the transfer's, or NET_DROP_DUP_CHUNK.
net_drop_t net_xfer_rx_add(net_xfer_rx_t *rx, const net_chunk_hdr_t *h, const uint8_t *data, size_t len);
int net_xfer_rx_complete(const net_xfer_rx_t *rx);
// Verifies the digest and decodes every chunk into a new buffer (*out, owned by the caller, free()).
// Returns NET_DROP_NONE, NET_DROP_DIGEST or NET_DROP_NONFINITE (reason in err).
net_drop_t net_xfer_rx_finish(net_xfer_rx_t *rx, float **out, char *err, size_t errlen);

#endif
