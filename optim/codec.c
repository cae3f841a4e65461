#include "optim/codec.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *s_names[CODEC_COUNT] = {"fp32", "bf16", "int8", "int4"};

const char *codec_name(int id) { return id >= 0 && id < CODEC_COUNT ? s_names[id] : NULL; }

int codec_from_name(const char *name) {
    for (int i = 0; i < CODEC_COUNT; i++)
        if (name && !strcmp(name, s_names[i])) return i;
    return -1;
}

int codec_is_lossy(int id) { return id > CODEC_FP32 && id < CODEC_COUNT; }

size_t codec_encoded_size(int id, size_t n) {
    switch (id) {
    case CODEC_FP32: return n * 4;
    case CODEC_BF16: return n * 2;
    case CODEC_INT8: return CODEC_INT8_TABLE * 4 + n;
    case CODEC_INT4: return (n + CODEC_INT4_BLOCK - 1) / CODEC_INT4_BLOCK * 2 + (n + 1) / 2;
    default: return 0;
    }
}

size_t codec_chunk_elems(int id, size_t chunk_bytes) {
    size_t n;
    switch (id) {
    case CODEC_FP32: n = chunk_bytes / 4; break;
    case CODEC_BF16: n = chunk_bytes / 2; break;
    case CODEC_INT8: n = chunk_bytes > 1024 ? chunk_bytes - 1024 : 0; break;
    case CODEC_INT4: n = chunk_bytes / 34 * 64; break; // 34 B per block of 64
    default: return 0;
    }
    n -= n % CODEC_INT4_BLOCK;
    return n < CODEC_INT4_BLOCK ? CODEC_INT4_BLOCK : n;
}

// --- little-endian helpers (the codec layouts are LE whatever the host is) ---------------------

static inline uint32_t s_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float s_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void s_put_f32(uint8_t *p, float f) {
    uint32_t u = s_f32_bits(f);
    p[0] = (uint8_t)u, p[1] = (uint8_t)(u >> 8), p[2] = (uint8_t)(u >> 16), p[3] = (uint8_t)(u >> 24);
}
static inline float s_get_f32(const uint8_t *p) {
    return s_bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

// --- half precision ----------------------------------------------------------------------------

uint16_t codec_f32_to_f16(float f) {
    uint32_t x = s_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00); // NaN / Inf
    if (ax >= 0x477ff000u) return sign | 0x7c00;                                 // rounds to Inf
    if (ax < 0x38800000u) {                                                     // subnormal half
        if (ax < 0x33000000u) return sign;                                      // < 2^-25: zero
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;                                               // 14..24
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t h = ((ax >> 13) - (112u << 10)), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float codec_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        // subnormal: m · 2^-24, exact in f32
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (e == 31) return s_bits_f32(sign | 0x7f800000u | (m << 13));
    return s_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

// --- codecs ------------------------------------------------------------------------------------

// All values finite? Sum of squares in double cannot overflow for finite floats (≤ 2^56 · 1.2e77).
static double s_sumsq(const float *x, size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * x[i];
        s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2];
        s3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) s0 += (double)x[i] * x[i];
    return (s0 + s1) + (s2 + s3);
}

static int s_all_finite(const float *x, size_t n) {
    // NaN/Inf have every exponent bit set; OR-ing a mask test keeps this branch-free and vectorized.
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return !bad;
}

static int s_enc_fp32(const float *x, size_t n, uint8_t *out, float *deq) {
    if (!s_all_finite(x, n)) return -1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, x, n * 4);
#else
    for (size_t i = 0; i < n; i++) s_put_f32(out + 4 * i, x[i]);
#endif
    if (deq && deq != x) memcpy(deq, x, n * 4);
    return 0;
}

static inline uint16_t s_bf16(float f) {
    uint32_t u = s_f32_bits(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    // Rounding up from the largest finite values reaches Inf: saturate instead.
    if ((r & 0x7f80u) == 0x7f80u) r = (u >> 16 & 0x8000u) | 0x7f7fu;
    return (uint16_t)r;
}

static int s_enc_bf16(const float *x, size_t n, uint8_t *out, float *deq) {
    if (!s_all_finite(x, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        uint16_t b = s_bf16(x[i]);
        out[2 * i] = (uint8_t)b;
        out[2 * i + 1] = (uint8_t)(b >> 8);
        if (deq) deq[i] = s_bits_f32((uint32_t)b << 16);
    }
    return 0;
}

static int s_enc_int8(const float *x, size_t n, uint8_t *out, float *deq) {
    double ss = s_sumsq(x, n);
    if (!isfinite(ss)) return -1;
    double sigma = sqrt(ss / (double)(n > 1 ? n - 1 : 1));
    float scale = (float)(6.0 * sigma / 256.0);
    uint8_t *q = out + CODEC_INT8_TABLE * 4;
    float table[CODEC_INT8_TABLE];
    if (!(scale > 0) || !isfinite(1.0f / scale)) {
        // All zero (or so small that 1/scale overflows): every value is bin 128, mean 0.
        memset(q, 128, n);
        for (int b = 0; b < CODEC_INT8_TABLE; b++) table[b] = 0;
    } else {
        float inv = 1.0f / scale;
        // Quantize (vectorizes: clamp in float, then truncate a non-negative value + 0.5).
        for (size_t i = 0; i < n; i++) {
            float v = x[i] * inv + 128.0f;
            v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
            q[i] = (uint8_t)(v + 0.5f);
        }
        // Bin means. Four interleaved accumulator sets break the store-to-load chain on hot bins.
        double sum[4][CODEC_INT8_TABLE];
        uint32_t cnt[4][CODEC_INT8_TABLE];
        memset(sum, 0, sizeof sum);
        memset(cnt, 0, sizeof cnt);
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            sum[0][q[i]] += x[i], cnt[0][q[i]]++;
            sum[1][q[i + 1]] += x[i + 1], cnt[1][q[i + 1]]++;
            sum[2][q[i + 2]] += x[i + 2], cnt[2][q[i + 2]]++;
            sum[3][q[i + 3]] += x[i + 3], cnt[3][q[i + 3]]++;
        }
        for (; i < n; i++) sum[0][q[i]] += x[i], cnt[0][q[i]]++;
        for (int b = 0; b < CODEC_INT8_TABLE; b++) {
            double s = sum[0][b] + sum[1][b] + sum[2][b] + sum[3][b];
            uint64_t c = (uint64_t)cnt[0][b] + cnt[1][b] + cnt[2][b] + cnt[3][b];
            table[b] = c ? (float)(s / (double)c) : (float)(b - 128) * scale;
        }
    }
    for (int b = 0; b < CODEC_INT8_TABLE; b++) s_put_f32(out + 4 * b, table[b]);
    if (deq)
        for (size_t i = 0; i < n; i++) deq[i] = table[q[i]];
    return 0;
}

static int s_enc_int4(const float *x, size_t n, uint8_t *out, float *deq) {
    if (!s_all_finite(x, n)) return -1;
    size_t nb = (n + CODEC_INT4_BLOCK - 1) / CODEC_INT4_BLOCK;
    uint8_t *lv = out + nb * 2;
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * CODEC_INT4_BLOCK, hi = lo + CODEC_INT4_BLOCK < n ? lo + CODEC_INT4_BLOCK : n;
        float amax = 0;
        for (size_t i = lo; i < hi; i++) {
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax; // not fmaxf: its NaN rules keep it scalar (x is finite here)
        }
        float s = amax / 7.0f;
        if (s > 65504.0f) s = 65504.0f; // fp16's largest finite: larger blocks saturate at ±7·65504
        uint16_t h = codec_f32_to_f16(s);
        float sd = codec_f16_to_f32(h);
        out[2 * b] = (uint8_t)h;
        out[2 * b + 1] = (uint8_t)(h >> 8);
        float inv = sd > 0 ? 1.0f / sd : 0.0f;
        if (!isfinite(inv)) inv = 0.0f;
        // Levels into a small buffer, then pack pairs: both loops vectorize (blocks start at even
        // indices, so a block's pairs never straddle a byte).
        // A partial last block is padded with zeros (level 0 = nibble 8 is never read back).
        float blk[CODEC_INT4_BLOCK] = {0};
        size_t m = hi - lo;
        memcpy(blk, x + lo, m * sizeof(float));
        uint8_t nib[CODEC_INT4_BLOCK];
        for (int j = 0; j < CODEC_INT4_BLOCK; j++) {
            float v = blk[j] * inv;
            v = v < -7.0f ? -7.0f : (v > 7.0f ? 7.0f : v);
            nib[j] = (uint8_t)(int32_t)(v + 8.5f); // round half up on a positive value: 1..15
        }
        uint8_t packed[CODEC_INT4_BLOCK / 2];
        for (int j = 0; j < CODEC_INT4_BLOCK / 2; j++) packed[j] = (uint8_t)(nib[2 * j] | nib[2 * j + 1] << 4);
        if ((m & 1) == 1) packed[m / 2] &= 0x0f; // odd n: the unused high nibble stays 0
        memcpy(lv + (lo >> 1), packed, (m + 1) / 2);
        if (deq)
            for (size_t j = 0; j < m; j++) deq[lo + j] = (float)((int)nib[j] - 8) * sd;
    }
    return 0;
}

int codec_encode(int id, const float *x, size_t n, uint8_t *out, float *deq) {
    switch (id) {
    case CODEC_FP32: return s_enc_fp32(x, n, out, deq);
    case CODEC_BF16: return s_enc_bf16(x, n, out, deq);
    case CODEC_INT8: return s_enc_int8(x, n, out, deq);
    case CODEC_INT4: return s_enc_int4(x, n, out, deq);
    default: return -1;
    }
}

int codec_decode(int id, const uint8_t *in, size_t len, size_t n, float *out, char *err, size_t errlen) {
    const char *name = codec_name(id);
    if (!name) {
        snprintf(err, errlen, "unknown codec id %d", id);
        return -1;
    }
    size_t want = codec_encoded_size(id, n);
    if (len != want) {
        snprintf(err, errlen, "%s payload of %zu bytes for %zu values (expected %zu)", name, len, n, want);
        return -1;
    }
    switch (id) {
    case CODEC_FP32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(out, in, n * 4);
#else
        for (size_t i = 0; i < n; i++) out[i] = s_get_f32(in + 4 * i);
#endif
        if (!s_all_finite(out, n)) goto nonfinite;
        return 0;
    case CODEC_BF16: {
        uint32_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t b = (uint32_t)in[2 * i] | (uint32_t)in[2 * i + 1] << 8;
            bad |= (uint32_t)((b & 0x7f80u) == 0x7f80u);
            out[i] = s_bits_f32(b << 16);
        }
        if (bad) goto nonfinite;
        return 0;
    }
    case CODEC_INT8: {
        float table[CODEC_INT8_TABLE];
        for (int b = 0; b < CODEC_INT8_TABLE; b++) table[b] = s_get_f32(in + 4 * b);
        if (!s_all_finite(table, CODEC_INT8_TABLE)) goto nonfinite;
        const uint8_t *q = in + CODEC_INT8_TABLE * 4;
        for (size_t i = 0; i < n; i++) out[i] = table[q[i]];
        return 0;
    }
    case CODEC_INT4: {
        size_t nb = (n + CODEC_INT4_BLOCK - 1) / CODEC_INT4_BLOCK;
        const uint8_t *lv = in + nb * 2;
        for (size_t b = 0; b < nb; b++) {
            uint16_t h = (uint16_t)(in[2 * b] | in[2 * b + 1] << 8);
            if ((h & 0x7c00) == 0x7c00) goto nonfinite;
            float sd = codec_f16_to_f32(h);
            size_t lo = b * CODEC_INT4_BLOCK, hi = lo + CODEC_INT4_BLOCK < n ? lo + CODEC_INT4_BLOCK : n;
            for (size_t i = lo; i < hi; i++) {
                int nib = (lv[i >> 1] >> ((i & 1) * 4)) & 0xf;
                out[i] = (float)(nib - 8) * sd;
            }
        }
        return 0;
    }
    }
nonfinite:
    snprintf(err, errlen, "%s payload decodes to NaN or Inf", name);
    return -1;
}

int codec_ef_encode(int id, float *residual, const float *delta, size_t n, uint8_t *out, float *scratch) {
    // Refuse before touching the residual: a NaN in Δ would poison every later round.
    if (!codec_name(id) || !s_all_finite(delta, n)) return -1;
    for (size_t i = 0; i < n; i++) scratch[i] = residual[i] + delta[i];
    if (!s_all_finite(scratch, n)) return -1; // e + Δ overflowed
    memcpy(residual, scratch, n * 4);
    if (codec_encode(id, residual, n, out, scratch) != 0) return -1;
    for (size_t i = 0; i < n; i++) residual[i] -= scratch[i];
    return 0;
}
