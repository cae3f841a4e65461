// Streamed transfers (net/xfer.h) without sockets: every codec through the chunk encoder and the
// reassembler, chunks delivered in a shuffled order (as several streams would), decoded values equal
// to what the codec alone gives; a corrupted chunk, a wrong transfer digest and a NaN each refuse
// the whole tensor.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/rng.h"
#include "net/fingerprint.h"
#include "net/xfer.h"
#include "optim/codec.h"

typedef struct {
    uint8_t hdr[NET_CHUNK_HDR_SIZE];
    uint8_t *data;
    size_t len;
} chunk_t;

static const net_limits_t s_lim = {.max_message = 1u << 20, .max_tensor = 1u << 26, .max_inflight = 4};

// Encodes x into chunks of at most chunk_bytes; returns them in index order (caller frees).
static chunk_t *s_encode(int codec, const float *x, size_t n, size_t chunk_bytes, float *residual, uint32_t *nch) {
    char err[200];
    net_xfer_tx_t *tx = net_xfer_tx_new(codec, x, n, chunk_bytes, residual, 7, 42, err, sizeof err);
    cr_assert_not_null(tx, "%s", err);
    *nch = net_xfer_tx_header(tx)->nchunks;
    chunk_t *c = calloc(*nch, sizeof *c);
    for (uint32_t i = 0; i < *nch; i++) {
        c[i].data = malloc(net_xfer_tx_stride(tx));
        long l = net_xfer_tx_next(tx, c[i].data, c[i].hdr, err, sizeof err);
        cr_assert_gt(l, 0, "%s", err);
        c[i].len = (size_t)l;
    }
    uint8_t spare[NET_CHUNK_HDR_SIZE];
    cr_assert_eq(net_xfer_tx_next(tx, c[0].data, spare, err, sizeof err), 0, "no chunk after the last");
    net_xfer_tx_destroy(&tx);
    return c;
}

// Feeds the chunks in the order given; returns the drop reason of finish (tensor in *out).
static net_drop_t s_receive(chunk_t *c, const uint32_t *order, uint32_t nch, float **out) {
    net_xfer_rx_t *rx = NULL;
    net_drop_t d = NET_DROP_NONE;
    for (uint32_t k = 0; k < nch; k++) {
        net_chunk_hdr_t h;
        chunk_t *ck = &c[order[k]];
        cr_assert_eq(net_chunk_hdr_decode(&h, ck->hdr, NET_CHUNK_HDR_SIZE, ck->len, &s_lim), NET_DROP_NONE);
        if (!rx) cr_assert_not_null(rx = net_xfer_rx_new(&h, NULL));
        cr_assert_eq(net_xfer_rx_add(rx, &h, ck->data, ck->len), NET_DROP_NONE);
        cr_assert_eq(net_xfer_rx_complete(rx), k + 1 == nch);
    }
    char err[256];
    d = net_xfer_rx_finish(rx, out, err, sizeof err);
    net_xfer_rx_destroy(&rx);
    return d;
}

static void s_free(chunk_t *c, uint32_t nch) {
    for (uint32_t i = 0; i < nch; i++) free(c[i].data);
    free(c);
}

static uint32_t *s_shuffled(uint32_t nch, uint64_t seed) {
    uint32_t *o = malloc(nch * sizeof *o);
    for (uint32_t i = 0; i < nch; i++) o[i] = nch - 1 - i; // last chunk first
    rng_t r;
    rng_seed(&r, seed);
    for (uint32_t i = nch - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng_next(&r) % (i + 1));
        uint32_t t = o[i];
        o[i] = o[j], o[j] = t;
    }
    return o;
}

Test(xfer, every_codec_streams_in_any_order) {
    size_t n = 100000 + 37; // several chunks, a short last one
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want);
    rng_t r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
    for (int codec = 0; codec < CODEC_COUNT; codec++) {
        uint32_t nch;
        chunk_t *c = s_encode(codec, x, n, 16384, NULL, &nch);
        cr_assert_gt(nch, 3, "codec %s: %u chunks", codec_name(codec), nch);
        // What the codec alone decodes, chunk by chunk.
        size_t per = codec_chunk_elems(codec, 16384);
        for (size_t lo = 0; lo < n; lo += per) {
            size_t m = n - lo < per ? n - lo : per;
            uint8_t *e = malloc(codec_encoded_size(codec, m));
            char err[128];
            cr_assert_eq(codec_encode(codec, x + lo, m, e, NULL), 0);
            cr_assert_eq(codec_decode(codec, e, codec_encoded_size(codec, m), m, want + lo, err, sizeof err), 0);
            free(e);
        }
        uint32_t *order = s_shuffled(nch, (uint64_t)codec + 1);
        float *got = NULL;
        cr_assert_eq(s_receive(c, order, nch, &got), NET_DROP_NONE, "codec %s", codec_name(codec));
        cr_assert_eq(memcmp(got, want, n * sizeof *got), 0, "codec %s: decoded values differ", codec_name(codec));
        free(got);
        free(order);
        s_free(c, nch);
    }
    free(x), free(want);
}

Test(xfer, error_feedback_residual_is_updated_per_chunk) {
    size_t n = 5000;
    float *x = malloc(n * sizeof *x), *res = calloc(n, sizeof *res);
    rng_t r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
    uint32_t nch;
    chunk_t *c = s_encode(CODEC_INT4, x, n, 1024, res, &nch);
    uint32_t *order = s_shuffled(nch, 5);
    float *got = NULL;
    cr_assert_eq(s_receive(c, order, nch, &got), NET_DROP_NONE);
    // e = x − deQ(Q(x)) for every value: residual + received reconstructs the input.
    for (size_t i = 0; i < n; i++) cr_assert_float_eq(got[i] + res[i], x[i], 1e-5, "value %zu", i);
    free(got), free(order), free(x), free(res);
    s_free(c, nch);
}

Test(xfer, corrupted_chunk_wrong_transfer_digest_and_nan_refuse_the_tensor) {
    size_t n = 4096;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)i * 0.5f;
    uint32_t nch;
    uint32_t *order;
    float *got = NULL;
    // One flipped bit in one chunk's data.
    chunk_t *c = s_encode(CODEC_FP32, x, n, 4096, NULL, &nch);
    order = s_shuffled(nch, 1);
    c[1].data[100] ^= 4;
    cr_assert_eq(s_receive(c, order, nch, &got), NET_DROP_DIGEST);
    cr_assert_null(got);
    s_free(c, nch);
    // Every chunk intact, but the transfer digest (in the last chunk's header) altered.
    c = s_encode(CODEC_BF16, x, n, 2048, NULL, &nch);
    cr_assert_eq(nch, 4);
    c[nch - 1].hdr[80] ^= 1;
    cr_assert_eq(s_receive(c, order, nch, &got), NET_DROP_DIGEST);
    cr_assert_null(got);
    // A chunk swapped for another with its own (valid) digest: the digest of digests catches it.
    s_free(c, nch);
    c = s_encode(CODEC_FP32, x, n, 4096, NULL, &nch);
    memcpy(c[0].data, c[1].data, c[0].len);
    memcpy(c[0].hdr + 48, c[1].hdr + 48, 32);
    cr_assert_eq(s_receive(c, order, nch, &got), NET_DROP_DIGEST);
    cr_assert_null(got);
    s_free(c, nch);
    free(order);
    // A NaN anywhere: nothing is produced at all.
    char err[200];
    x[n - 3] = NAN;
    cr_assert_null(net_xfer_tx_new(CODEC_FP32, x, n, 4096, NULL, 1, 1, err, sizeof err));
    cr_assert(strstr(err, "NaN"), "%s", err);
    x[n - 3] = INFINITY;
    cr_assert_null(net_xfer_tx_new(CODEC_INT8, x, n, 4096, NULL, 1, 1, err, sizeof err));
    free(x);
}
