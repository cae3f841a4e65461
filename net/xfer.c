#include "net/xfer.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/codec.h"

// Elementwise codecs are hashed and en/decoded in cache-sized slices, so each byte is touched
// while it is still in L1/L2; the others (per-chunk table or scales first) a whole chunk at a time.
#define SLICE_VALUES 16384

static int s_elementwise(int codec) { return codec == CODEC_FP32 || codec == CODEC_BF16; }

void net_chunk_hdr_encode(const net_chunk_hdr_t *h, uint8_t out[NET_CHUNK_HDR_SIZE]) {
    memset(out, 0, NET_CHUNK_HDR_SIZE);
    net_put_u64(out, h->xfer_id);
    net_put_u32(out + 8, h->quantity);
    out[12] = h->codec;
    net_put_u64(out + 16, h->total);
    net_put_u32(out + 24, h->per_chunk);
    net_put_u32(out + 28, h->nchunks);
    net_put_u32(out + 32, h->index);
    net_put_u64(out + 40, h->encoded_total);
    memcpy(out + 48, h->digest, 32);
    memcpy(out + 80, h->xfer_digest, 32);
}

uint64_t net_chunk_values(const net_chunk_hdr_t *h, uint32_t i) {
    uint64_t lo = (uint64_t)i * h->per_chunk;
    return h->total - lo < h->per_chunk ? h->total - lo : h->per_chunk;
}

static int s_zero32(const uint8_t *p) {
    uint8_t acc = 0;
    for (int i = 0; i < 32; i++) acc |= p[i];
    return acc == 0;
}

net_drop_t net_chunk_hdr_decode(net_chunk_hdr_t *h, const uint8_t *buf, size_t len, size_t data_len,
                                const net_limits_t *lim) {
    if (len != NET_CHUNK_HDR_SIZE) return NET_DROP_BAD_CHUNK;
    h->xfer_id = net_get_u64(buf);
    h->quantity = net_get_u32(buf + 8);
    h->codec = buf[12];
    h->total = net_get_u64(buf + 16);
    h->per_chunk = net_get_u32(buf + 24);
    h->nchunks = net_get_u32(buf + 28);
    h->index = net_get_u32(buf + 32);
    h->encoded_total = net_get_u64(buf + 40);
    memcpy(h->digest, buf + 48, 32);
    memcpy(h->xfer_digest, buf + 80, 32);
    if (buf[13] | buf[14] | buf[15] || net_get_u32(buf + 36)) return NET_DROP_BAD_CHUNK;
    if (!codec_name(h->codec)) return NET_DROP_BAD_CHUNK;
    // Sizes: every product below is bounded by max_tensor (≤ 2^62 by config) before it is formed.
    if (h->total == 0) return NET_DROP_BAD_CHUNK;
    if (h->total > lim->max_tensor / 4) return NET_DROP_TOO_LARGE;
    if (h->per_chunk == 0 || h->per_chunk % CODEC_INT4_BLOCK) return NET_DROP_BAD_CHUNK;
    uint64_t n = (h->total + h->per_chunk - 1) / h->per_chunk;
    if (n != h->nchunks) return NET_DROP_BAD_CHUNK;
    if (h->index >= h->nchunks) return NET_DROP_CHUNK_RANGE;
    size_t stride = codec_encoded_size(h->codec, h->per_chunk);
    if (stride > lim->max_message) return NET_DROP_TOO_LARGE;
    uint64_t last = net_chunk_values(h, h->nchunks - 1);
    if (h->encoded_total != (uint64_t)(h->nchunks - 1) * stride + codec_encoded_size(h->codec, last))
        return NET_DROP_BAD_CHUNK;
    if (h->index + 1 != h->nchunks && !s_zero32(h->xfer_digest)) return NET_DROP_BAD_CHUNK;
    if (data_len != codec_encoded_size(h->codec, net_chunk_values(h, h->index))) return NET_DROP_LENGTH;
    return NET_DROP_NONE;
}

// --- sending -----------------------------------------------------------------------------------

struct net_xfer_tx {
    net_chunk_hdr_t h;
    int codec;
    const float *x;
    float *residual, *scratch; // error feedback (lossy codecs only)
    size_t stride;
    uint32_t next;
    EVP_MD_CTX *chunk_md, *dd; // this chunk; digest of digests
};

// 1 if every value is finite: an OR of the exponent fields, vectorized, no early exit per value.
static int s_all_finite(const float *x, size_t n) {
    const uint32_t *u = (const uint32_t *)(const void *)x;
    for (size_t lo = 0; lo < n; lo += 4096) {
        size_t m = n - lo < 4096 ? n - lo : 4096;
        uint32_t worst = 0;
        for (size_t i = 0; i < m; i++) {
            uint32_t e = u[lo + i] & 0x7f800000u;
            worst = e > worst ? e : worst;
        }
        if (worst == 0x7f800000u) return 0;
    }
    return 1;
}

net_xfer_tx_t *net_xfer_tx_new(int codec, const float *x, size_t n, size_t chunk_bytes, float *residual,
                               uint32_t quantity, uint64_t xfer_id, char *err, size_t errlen) {
    if (!codec_name(codec) || n == 0) {
        snprintf(err, errlen, "bad codec %d or empty tensor", codec);
        return NULL;
    }
    size_t per = codec_chunk_elems(codec, chunk_bytes);
    uint64_t nchunks = (n + per - 1) / per;
    if (per > UINT32_MAX || nchunks > UINT32_MAX) {
        snprintf(err, errlen, "chunking of %zu values into %zu-value chunks out of range", n, per);
        return NULL;
    }
    if (!s_all_finite(x, n)) {
        snprintf(err, errlen, "tensor of %zu values holds NaN or Inf; not sent", n);
        return NULL;
    }
    net_xfer_tx_t *tx = calloc(1, sizeof *tx);
    int ef = residual && codec_is_lossy(codec);
    if (!tx || !(tx->chunk_md = EVP_MD_CTX_new()) || !(tx->dd = EVP_MD_CTX_new()) ||
        (ef && !(tx->scratch = malloc(per * sizeof(float))))) {
        snprintf(err, errlen, "out of memory encoding %zu values", n);
        net_xfer_tx_destroy(&tx);
        return NULL;
    }
    EVP_DigestInit_ex(tx->dd, EVP_sha256(), NULL);
    tx->codec = codec;
    tx->x = x;
    tx->residual = ef ? residual : NULL;
    tx->stride = codec_encoded_size(codec, per);
    size_t total = (size_t)(nchunks - 1) * tx->stride + codec_encoded_size(codec, n - (size_t)(nchunks - 1) * per);
    tx->h = (net_chunk_hdr_t){.xfer_id = xfer_id,
                              .quantity = quantity,
                              .codec = (uint8_t)codec,
                              .total = n,
                              .per_chunk = (uint32_t)per,
                              .nchunks = (uint32_t)nchunks,
                              .encoded_total = total};
    return tx;
}

void net_xfer_tx_destroy(net_xfer_tx_t **self_p) {
    if (!self_p || !*self_p) return;
    net_xfer_tx_t *tx = *self_p;
    EVP_MD_CTX_free(tx->chunk_md);
    EVP_MD_CTX_free(tx->dd);
    free(tx->scratch);
    free(tx);
    *self_p = NULL;
}

const net_chunk_hdr_t *net_xfer_tx_header(const net_xfer_tx_t *tx) { return &tx->h; }
size_t net_xfer_tx_stride(const net_xfer_tx_t *tx) { return tx->stride; }

long net_xfer_tx_next(net_xfer_tx_t *tx, uint8_t *out, uint8_t hdr[NET_CHUNK_HDR_SIZE], char *err, size_t errlen) {
    if (tx->next >= tx->h.nchunks) return 0;
    uint32_t i = tx->next;
    size_t lo = (size_t)i * tx->h.per_chunk, m = net_chunk_values(&tx->h, i);
    size_t len = codec_encoded_size(tx->codec, m);
    EVP_DigestInit_ex(tx->chunk_md, EVP_sha256(), NULL);
    int rc = 0;
    if (tx->residual) {
        rc = codec_ef_encode(tx->codec, tx->residual + lo, tx->x + lo, m, out, tx->scratch);
        if (rc == 0) EVP_DigestUpdate(tx->chunk_md, out, len);
    } else if (s_elementwise(tx->codec)) {
        size_t vb = codec_encoded_size(tx->codec, 1);
        for (size_t s = 0; s < m && rc == 0; s += SLICE_VALUES) {
            size_t k = m - s < SLICE_VALUES ? m - s : SLICE_VALUES;
            rc = codec_encode(tx->codec, tx->x + lo + s, k, out + s * vb, NULL);
            EVP_DigestUpdate(tx->chunk_md, out + s * vb, k * vb);
        }
    } else {
        rc = codec_encode(tx->codec, tx->x + lo, m, out, NULL);
        if (rc == 0) EVP_DigestUpdate(tx->chunk_md, out, len);
    }
    if (rc != 0) {
        snprintf(err, errlen, "values %zu..%zu (with the error-feedback residual) hold NaN or Inf; transfer cut short",
                 lo, lo + m);
        return -1;
    }
    net_chunk_hdr_t h = tx->h;
    h.index = i;
    unsigned int dl = 32;
    EVP_DigestFinal_ex(tx->chunk_md, h.digest, &dl);
    EVP_DigestUpdate(tx->dd, h.digest, 32);
    if (i + 1 == tx->h.nchunks) EVP_DigestFinal_ex(tx->dd, h.xfer_digest, &dl);
    net_chunk_hdr_encode(&h, hdr);
    tx->next++;
    return (long)len;
}

// --- receiving ---------------------------------------------------------------------------------

net_xfer_rx_t *net_xfer_rx_new(const net_chunk_hdr_t *h, float *buf) {
    net_xfer_rx_t *rx = calloc(1, sizeof *rx);
    if (!rx) {
        free(buf);
        return NULL;
    }
    rx->h = *h;
    memset(rx->h.digest, 0, 32);
    memset(rx->h.xfer_digest, 0, 32);
    // Every value is written by a chunk's decode before the tensor can be delivered, so no zeroing;
    // pages a hostile sender never fills are never touched. (MADV_HUGEPAGE was tried: with memory
    // fragmented, direct compaction for 2 MiB pages stalled cold transfers far more than the 4 KiB
    // faults cost; net_node_recycle avoids the faults altogether.)
    rx->out = buf ? buf : malloc((size_t)h->total * sizeof(float));
    rx->have = calloc(h->nchunks, 1);
    rx->digests = calloc(h->nchunks, 32);
    if (!rx->out || !rx->have || !rx->digests) net_xfer_rx_destroy(&rx);
    return rx;
}

void net_xfer_rx_destroy(net_xfer_rx_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->out);
    free((*self_p)->have);
    free((*self_p)->digests);
    free(*self_p);
    *self_p = NULL;
}

static void s_fail(net_xfer_rx_t *rx, net_drop_t why, const char *fmt, uint32_t i, const char *detail) {
    if (rx->failed != NET_DROP_NONE) return;
    rx->failed = why;
    snprintf(rx->why, sizeof rx->why, fmt, i, detail);
}

net_drop_t net_xfer_rx_add(net_xfer_rx_t *rx, const net_chunk_hdr_t *h, const uint8_t *data, size_t len) {
    const net_chunk_hdr_t *t = &rx->h;
    if (h->xfer_id != t->xfer_id || h->quantity != t->quantity || h->codec != t->codec || h->total != t->total ||
        h->per_chunk != t->per_chunk || h->nchunks != t->nchunks || h->encoded_total != t->encoded_total ||
        h->index >= t->nchunks)
        return NET_DROP_CHUNK_RANGE;
    if (rx->have[h->index]) return NET_DROP_DUP_CHUNK;
    size_t m = net_chunk_values(t, h->index);
    if (len != codec_encoded_size(t->codec, m)) return NET_DROP_LENGTH;
    rx->have[h->index] = 1;
    rx->received++;
    memcpy(rx->digests + (size_t)h->index * 32, h->digest, 32);
    if (h->index + 1 == t->nchunks) memcpy(rx->h.xfer_digest, h->xfer_digest, 32);
    if (rx->failed != NET_DROP_NONE) return NET_DROP_NONE; // already lost: don't spend CPU on it
    float *out = rx->out + (size_t)h->index * t->per_chunk;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) {
        s_fail(rx, NET_DROP_DIGEST, "chunk %u: %s", h->index, "out of memory hashing");
        return NET_DROP_NONE;
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char why[160] = "";
    int rc = 0;
    if (s_elementwise(t->codec)) {
        size_t vb = codec_encoded_size(t->codec, 1);
        for (size_t s = 0; s < m; s += SLICE_VALUES) {
            size_t k = m - s < SLICE_VALUES ? m - s : SLICE_VALUES;
            EVP_DigestUpdate(md, data + s * vb, k * vb);
            if (rc == 0) rc = codec_decode(t->codec, data + s * vb, k * vb, k, out + s, why, sizeof why);
        }
    } else {
        EVP_DigestUpdate(md, data, len);
    }
    uint8_t d[32];
    unsigned int dl = 32;
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    if (memcmp(d, h->digest, 32) != 0) {
        s_fail(rx, NET_DROP_DIGEST, "chunk %u: %s", h->index, "SHA-256 of its data does not match its digest");
        return NET_DROP_NONE;
    }
    if (rc == 0 && !s_elementwise(t->codec)) rc = codec_decode(t->codec, data, len, m, out, why, sizeof why);
    if (rc != 0) s_fail(rx, NET_DROP_NONFINITE, "chunk %u: %s", h->index, why);
    return NET_DROP_NONE;
}

int net_xfer_rx_complete(const net_xfer_rx_t *rx) { return rx->received == rx->h.nchunks; }

net_drop_t net_xfer_rx_finish(net_xfer_rx_t *rx, float **out, char *err, size_t errlen) {
    *out = NULL;
    if (rx->failed != NET_DROP_NONE) {
        snprintf(err, errlen, "%s", rx->why);
        return rx->failed;
    }
    uint8_t d[32];
    unsigned int dl = 32;
    EVP_Digest(rx->digests, (size_t)rx->h.nchunks * 32, d, &dl, EVP_sha256(), NULL);
    if (memcmp(d, rx->h.xfer_digest, 32) != 0) {
        snprintf(err, errlen, "digest of the %u chunk digests does not match the transfer's digest", rx->h.nchunks);
        return NET_DROP_DIGEST;
    }
    *out = rx->out;
    rx->out = NULL;
    return NET_DROP_NONE;
}
