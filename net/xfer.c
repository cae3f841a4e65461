#include "net/xfer.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/codec.h"

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
}

static uint64_t s_chunk_values(const net_chunk_hdr_t *h, uint32_t i) {
    uint64_t lo = (uint64_t)i * h->per_chunk;
    return h->total - lo < h->per_chunk ? h->total - lo : h->per_chunk;
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
    uint64_t last = s_chunk_values(h, h->nchunks - 1);
    if (h->encoded_total != (uint64_t)(h->nchunks - 1) * stride + codec_encoded_size(h->codec, last))
        return NET_DROP_BAD_CHUNK;
    if (data_len != codec_encoded_size(h->codec, s_chunk_values(h, h->index))) return NET_DROP_LENGTH;
    return NET_DROP_NONE;
}

static void s_digest(const uint8_t *p, size_t n, uint8_t out[32]) {
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
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
    net_xfer_tx_t *tx = calloc(1, sizeof *tx);
    size_t stride = codec_encoded_size(codec, per);
    size_t total = (size_t)(nchunks - 1) * stride + codec_encoded_size(codec, n - (size_t)(nchunks - 1) * per);
    float *scratch = residual && codec_is_lossy(codec) ? malloc(per * sizeof(float)) : NULL;
    if (!tx || !(tx->enc = malloc(total)) || (residual && codec_is_lossy(codec) && !scratch)) {
        snprintf(err, errlen, "out of memory encoding %zu values", n);
        free(scratch);
        net_xfer_tx_destroy(&tx);
        return NULL;
    }
    for (uint64_t i = 0; i < nchunks; i++) {
        size_t lo = (size_t)i * per, m = n - lo < per ? n - lo : per;
        int rc = scratch ? codec_ef_encode(codec, residual + lo, x + lo, m, tx->enc + i * stride, scratch)
                         : codec_encode(codec, x + lo, m, tx->enc + i * stride, NULL);
        if (rc != 0) {
            snprintf(err, errlen, "tensor holds NaN or Inf in values %zu..%zu; not sent", lo, lo + m);
            free(scratch);
            net_xfer_tx_destroy(&tx);
            return NULL;
        }
    }
    free(scratch);
    tx->chunk_stride = stride;
    tx->h = (net_chunk_hdr_t){.xfer_id = xfer_id,
                              .quantity = quantity,
                              .codec = (uint8_t)codec,
                              .total = n,
                              .per_chunk = (uint32_t)per,
                              .nchunks = (uint32_t)nchunks,
                              .encoded_total = total};
    s_digest(tx->enc, total, tx->h.digest);
    return tx;
}

void net_xfer_tx_destroy(net_xfer_tx_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->enc);
    free(*self_p);
    *self_p = NULL;
}

const uint8_t *net_xfer_tx_chunk(const net_xfer_tx_t *tx, uint32_t i, size_t *len) {
    *len = codec_encoded_size(tx->h.codec, s_chunk_values(&tx->h, i));
    return tx->enc + (size_t)i * tx->chunk_stride;
}

net_xfer_rx_t *net_xfer_rx_new(const net_chunk_hdr_t *h) {
    net_xfer_rx_t *rx = calloc(1, sizeof *rx);
    if (!rx) return NULL;
    rx->h = *h;
    // calloc: pages a hostile sender never fills are never touched, so never really allocated.
    rx->enc = calloc(1, h->encoded_total);
    rx->have = calloc(h->nchunks, 1);
    if (!rx->enc || !rx->have) net_xfer_rx_destroy(&rx);
    return rx;
}

void net_xfer_rx_destroy(net_xfer_rx_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->enc);
    free((*self_p)->have);
    free(*self_p);
    *self_p = NULL;
}

net_drop_t net_xfer_rx_add(net_xfer_rx_t *rx, const net_chunk_hdr_t *h, const uint8_t *data, size_t len) {
    const net_chunk_hdr_t *t = &rx->h;
    if (h->xfer_id != t->xfer_id || h->quantity != t->quantity || h->codec != t->codec || h->total != t->total ||
        h->per_chunk != t->per_chunk || h->encoded_total != t->encoded_total ||
        memcmp(h->digest, t->digest, 32) != 0 || h->index >= t->nchunks)
        return NET_DROP_CHUNK_RANGE;
    if (rx->have[h->index]) return NET_DROP_DUP_CHUNK;
    size_t stride = codec_encoded_size(t->codec, t->per_chunk);
    if (len != codec_encoded_size(t->codec, s_chunk_values(t, h->index))) return NET_DROP_LENGTH;
    memcpy(rx->enc + (size_t)h->index * stride, data, len);
    rx->have[h->index] = 1;
    rx->received++;
    return NET_DROP_NONE;
}

int net_xfer_rx_complete(const net_xfer_rx_t *rx) { return rx->received == rx->h.nchunks; }

net_drop_t net_xfer_rx_finish(net_xfer_rx_t *rx, float **out, char *err, size_t errlen) {
    *out = NULL;
    uint8_t d[32];
    s_digest(rx->enc, rx->h.encoded_total, d);
    if (memcmp(d, rx->h.digest, 32) != 0) {
        snprintf(err, errlen, "SHA-256 of the %llu received bytes does not match the transfer's digest",
                 (unsigned long long)rx->h.encoded_total);
        return NET_DROP_DIGEST;
    }
    float *x = malloc(rx->h.total * sizeof(float));
    if (!x) {
        snprintf(err, errlen, "out of memory decoding %llu values", (unsigned long long)rx->h.total);
        return NET_DROP_TOO_LARGE;
    }
    size_t stride = codec_encoded_size(rx->h.codec, rx->h.per_chunk);
    for (uint32_t i = 0; i < rx->h.nchunks; i++) {
        size_t m = s_chunk_values(&rx->h, i);
        char why[160];
        if (codec_decode(rx->h.codec, rx->enc + (size_t)i * stride, codec_encoded_size(rx->h.codec, m), m,
                         x + (size_t)i * rx->h.per_chunk, why, sizeof why) != 0) {
            snprintf(err, errlen, "chunk %u: %s", i, why);
            free(x);
            return NET_DROP_NONFINITE;
        }
    }
    *out = x;
    return NET_DROP_NONE;
}
