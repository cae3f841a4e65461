// Codecs: round-trip error bounds on N(0,1) data (ALGORITHMS.md's int8 bin width ≈ 0.023σ),
// exact layouts, NaN/Inf rejection, error feedback keeping the sum of decoded updates on track.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/rng.h"
#include "optim/codec.h"

static float *s_normal(size_t n, uint64_t seed, float sd) {
    float *x = malloc(n * sizeof *x);
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = sd * rng_normal(&r);
    return x;
}

static float *s_roundtrip(int id, const float *x, size_t n) {
    uint8_t *enc = malloc(codec_encoded_size(id, n));
    float *deq = malloc(n * 4), *dec = malloc(n * 4);
    cr_assert_eq(codec_encode(id, x, n, enc, deq), 0);
    char err[128];
    cr_assert_eq(codec_decode(id, enc, codec_encoded_size(id, n), n, dec, err, sizeof err), 0, "%s", err);
    // What the encoder says the receiver sees is what it sees, bit for bit (error feedback relies on it).
    cr_assert_eq(memcmp(deq, dec, n * 4), 0, "%s: deq != decode", codec_name(id));
    free(enc);
    free(deq);
    return dec;
}

Test(codec, names_and_sizes) {
    cr_assert_str_eq(codec_name(CODEC_INT4), "int4");
    cr_assert_eq(codec_from_name("bf16"), CODEC_BF16);
    cr_assert_eq(codec_from_name("int16"), -1);
    cr_assert_null(codec_name(7));
    cr_assert_eq(codec_encoded_size(CODEC_INT8, 1000), 2024);
    cr_assert_eq(codec_encoded_size(CODEC_INT4, 128), 4 + 64);
    cr_assert_eq(codec_encoded_size(CODEC_INT4, 65), 4 + 33);
    // ≈ 0.53 B/value for int4 (ALGORITHMS.md)
    double bpv = (double)codec_encoded_size(CODEC_INT4, 1 << 20) / (1 << 20);
    cr_assert(bpv > 0.53 && bpv < 0.532, "%f", bpv);
    for (int id = 0; id < CODEC_COUNT; id++) {
        size_t e = codec_chunk_elems(id, 4 << 20);
        cr_assert(codec_encoded_size(id, e) <= (4u << 20) && e % 64 == 0, "%s", codec_name(id));
        cr_assert(codec_encoded_size(id, e + 64) > (4u << 20) - 64, "%s chunk too small", codec_name(id));
    }
}

Test(codec, f16_conversion) {
    cr_assert_eq(codec_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(codec_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(codec_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(codec_f32_to_f16(65520.0f), 0x7c00); // rounds to Inf
    cr_assert_eq(codec_f32_to_f16(5.9604645e-8f), 0x0001);
    cr_assert_eq(codec_f32_to_f16(1e-9f), 0x0000);
    // Every finite half round-trips exactly.
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        cr_assert_eq(codec_f32_to_f16(codec_f16_to_f32((uint16_t)h)), h, "half %04x", h);
    }
}

Test(codec, fp32_exact_bf16_relative) {
    size_t n = 100003;
    float *x = s_normal(n, 1, 3.0f);
    float *d = s_roundtrip(CODEC_FP32, x, n);
    cr_assert_eq(memcmp(x, d, n * 4), 0);
    free(d);
    d = s_roundtrip(CODEC_BF16, x, n);
    size_t worst = 0;
    double wr = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs(d[i] - x[i]) / fabs(x[i]);
        if (r > wr) wr = r, worst = i;
    }
    cr_assert(wr <= 1.0 / 256, "bf16 worst rel err %g at %zu (x=%g, got %g)", wr, worst, x[worst], d[worst]);
    free(d);
    float big[2] = {3.4e38f, -3.4e38f}; // must saturate, not become Inf
    d = s_roundtrip(CODEC_BF16, big, 2);
    cr_assert(isfinite(d[0]) && isfinite(d[1]) && d[0] > 3e38f && d[1] < -3e38f);
    free(d);
    free(x);
}

Test(codec, int8_bin_width_on_normal_data) {
    size_t n = 1 << 20;
    float sd = 0.01f;
    float *x = s_normal(n, 2, sd);
    float *d = s_roundtrip(CODEC_INT8, x, n);
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double sigma = sqrt(ss / (n - 1)), width = 6 * sigma / 256;
    cr_assert(fabs(width / sd - 0.0234) < 0.001, "bin width %g σ", width / sd);
    double se = 0, worst = 0;
    size_t wi = 0, nin = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(d[i] - x[i]);
        // Inside the table's range (±3σ) a value lands within one bin width of its bin's mean.
        if (fabs(x[i]) < 2.9 * sigma) {
            se += e * e, nin++;
            if (e > worst) worst = e, wi = i;
        }
    }
    cr_assert(worst <= width * 1.0001, "in-range error %g > bin width %g at %zu (x=%g got %g)", worst, width,
              wi, x[wi], d[wi]);
    // Error roughly uniform within a bin: RMS ≈ width/√12 ≈ 0.29 width.
    double rms = sqrt(se / nin);
    cr_assert(rms < width * 0.35, "rms %g vs width %g", rms, width);
    free(d);
    free(x);
}

Test(codec, int4_block_bound) {
    size_t n = 64 * 1000 + 17; // ends with a partial block
    float *x = s_normal(n, 3, 1.0f);
    x[5] = 40.0f;              // one outlier blows up one block's scale only
    float *d = s_roundtrip(CODEC_INT4, x, n);
    for (size_t b = 0; b * 64 < n; b++) {
        size_t lo = b * 64, hi = lo + 64 < n ? lo + 64 : n;
        float amax = 0;
        for (size_t i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(x[i]));
        double step = amax / 7.0;
        for (size_t i = lo; i < hi; i++)
            cr_assert(fabs(d[i] - x[i]) <= 0.5 * step * 1.002 + 1e-7, "block %zu elem %zu: x=%g got %g step %g",
                      b, i, x[i], d[i], step);
    }
    free(d);
    free(x);
}

Test(codec, zero_and_tiny_inputs) {
    float z[130] = {0};
    for (int id = 0; id < CODEC_COUNT; id++) {
        float *d = s_roundtrip(id, z, 130);
        for (int i = 0; i < 130; i++) cr_assert_eq(d[i], 0.0f, "%s", codec_name(id));
        free(d);
        float one = 1.5f;
        d = s_roundtrip(id, &one, 1);
        cr_assert(fabsf(d[0] - 1.5f) < 0.2f, "%s single value: %g", codec_name(id), d[0]);
        free(d);
    }
}

Test(codec, nan_inf_rejected_both_ways) {
    size_t n = 256;
    float *x = s_normal(n, 4, 1.0f);
    uint8_t *enc = malloc(codec_encoded_size(CODEC_INT8, n) + 4 * n);
    float out[256];
    char err[128];
    for (int id = 0; id < CODEC_COUNT; id++) {
        float keep = x[77];
        x[77] = NAN;
        cr_assert_eq(codec_encode(id, x, n, enc, NULL), -1, "%s encoded a NaN", codec_name(id));
        x[77] = -INFINITY;
        cr_assert_eq(codec_encode(id, x, n, enc, NULL), -1, "%s encoded an Inf", codec_name(id));
        x[77] = keep;
        size_t len = codec_encoded_size(id, n);
        cr_assert_eq(codec_encode(id, x, n, enc, NULL), 0);
        // Forge a NaN into the encoding where each layout can carry one.
        uint32_t nanbits = 0x7fc00000u;
        switch (id) {
        case CODEC_FP32: memcpy(enc + 4 * 10, &nanbits, 4); break;
        case CODEC_BF16: enc[2 * 10] = 0xc0, enc[2 * 10 + 1] = 0x7f; break;
        case CODEC_INT8: memcpy(enc + 4 * 3, &nanbits, 4); break;          // a table entry
        case CODEC_INT4: enc[0] = 0x00, enc[1] = 0x7c; break;             // scale = +Inf
        }
        cr_assert_eq(codec_decode(id, enc, len, n, out, err, sizeof err), -1, "%s accepted NaN", codec_name(id));
        cr_assert(strstr(err, "NaN"), "%s", err);
        cr_assert_eq(codec_decode(id, enc, len - 1, n, out, err, sizeof err), -1);
    }
    cr_assert_eq(codec_decode(9, enc, 4, 1, out, err, sizeof err), -1);
    cr_assert(strstr(err, "unknown codec"), "%s", err);
    free(enc);
    free(x);
}

// Error feedback: over 100 rounds, Σ decoded tracks Σ true: the gap is exactly the residual, it
// stays below the largest single update and does not grow between round 50 and round 100, while
// without feedback a per-element bias makes plain rounding drift.
typedef struct {
    double gap_ef, gap_ef50, gap_plain, max_delta;
} ef_result_t;

static double s_gap(const double *a, const double *b, size_t n) {
    double g = 0;
    for (size_t i = 0; i < n; i++) g = fmax(g, fabs(a[i] - b[i]));
    return g;
}

static ef_result_t s_ef_rounds(int id) {
    size_t n = 4096;
    ef_result_t r = {0};
    float *e = calloc(n, 4), *scratch = malloc(n * 4), *dec = malloc(n * 4);
    double *sum_true = calloc(n, 8), *sum_ef = calloc(n, 8), *sum_plain = calloc(n, 8);
    uint8_t *enc = malloc(codec_encoded_size(id, n));
    char err[128];
    float *bias = s_normal(n, 99, 0.002f); // a constant per-element drift, the hard case for rounding
    for (int t = 0; t < 100; t++) {
        float *d = s_normal(n, 1000 + t, 0.01f);
        for (size_t i = 0; i < n; i++) {
            d[i] += bias[i], sum_true[i] += d[i];
            r.max_delta = fmax(r.max_delta, fabsf(d[i]));
        }
        cr_assert_eq(codec_ef_encode(id, e, d, n, enc, scratch), 0);
        cr_assert_eq(codec_decode(id, enc, codec_encoded_size(id, n), n, dec, err, sizeof err), 0);
        for (size_t i = 0; i < n; i++) sum_ef[i] += dec[i];
        cr_assert_eq(codec_encode(id, d, n, enc, dec), 0);
        for (size_t i = 0; i < n; i++) sum_plain[i] += dec[i];
        free(d);
        if (t < 50) r.gap_ef50 = fmax(r.gap_ef50, s_gap(sum_ef, sum_true, n));
    }
    r.gap_ef = s_gap(sum_ef, sum_true, n);
    r.gap_plain = s_gap(sum_plain, sum_true, n);
    // Σ decoded = Σ true − e_T up to fp32 rounding: the residual is the whole gap.
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(sum_ef[i] - sum_true[i] + e[i]) < 1e-4, "%s: gap != residual at %zu", codec_name(id), i);
    free(e), free(scratch), free(dec), free(sum_true), free(sum_ef), free(sum_plain), free(enc), free(bias);
    return r;
}

Test(codec, error_feedback_tracks_sum) {
    for (int id = CODEC_BF16; id < CODEC_COUNT; id++) {
        ef_result_t r = s_ef_rounds(id);
        cr_log_info("%s: max |Σdec−Σtrue| over 100 rounds: EF %.3g (≤ round 50: %.3g), plain %.3g, max |Δ| %.3g\n",
                    codec_name(id), r.gap_ef, r.gap_ef50, r.gap_plain, r.max_delta);
        cr_assert(r.gap_ef < r.max_delta, "%s: residual %g above the largest update %g", codec_name(id), r.gap_ef,
                  r.max_delta);
        cr_assert(r.gap_ef <= 1.5 * r.gap_ef50 + 1e-6, "%s: residual grows (%g after 50, %g after 100)",
                  codec_name(id), r.gap_ef50, r.gap_ef);
        cr_assert(r.gap_ef * 2 < r.gap_plain, "%s: EF gap %g not well below plain %g", codec_name(id), r.gap_ef,
                  r.gap_plain);
    }
    // fp32: no residual at all.
    float e[3] = {0}, d[3] = {1, 2, 3}, s[3];
    uint8_t enc[12];
    cr_assert_eq(codec_ef_encode(CODEC_FP32, e, d, 3, enc, s), 0);
    cr_assert(e[0] == 0 && e[1] == 0 && e[2] == 0);
    d[1] = NAN;
    cr_assert_eq(codec_ef_encode(CODEC_INT8, e, d, 3, enc, s), -1);
    cr_assert(e[0] == 0 && !isnan(e[1]), "residual touched by a refused Δ");
}
