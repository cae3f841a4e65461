#include "node/safetensors.h"

#include <errno.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/checkpoint.h"
#include "optim/codec.h"

#define ST_HEADER_MAX (100u << 20)

// Finds the object of tensor `name` in the JSON header: the text after `"name":` up to its closing
// brace. NULL when absent.
static const char *s_find_tensor(const char *hdr, const char *name, size_t *objlen) {
    char key[80];
    snprintf(key, sizeof key, "\"%s\"", name);
    for (const char *p = strstr(hdr, key); p; p = strstr(p + 1, key)) {
        const char *q = p + strlen(key);
        while (*q == ' ') q++;
        if (*q != ':') continue;
        q++;
        while (*q == ' ') q++;
        if (*q != '{') continue;
        const char *end = strchr(q, '}');
        if (!end) return NULL;
        *objlen = (size_t)(end - q + 1);
        return q;
    }
    return NULL;
}

// Reads up to max unsigned integers of the array after "field": in obj. Returns the count, -1 if malformed.
static int s_array(const char *obj, size_t len, const char *field, uint64_t *out, int max) {
    char key[40];
    snprintf(key, sizeof key, "\"%s\"", field);
    const char *p = strstr(obj, key);
    if (!p || p >= obj + len) return -1;
    p = strchr(p, '[');
    if (!p || p >= obj + len) return -1;
    int n = 0;
    for (p++;;) {
        while (*p == ' ') p++;
        if (*p == ']') return n;
        if (*p < '0' || *p > '9' || n == max) return -1;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno) return -1;
        out[n++] = v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ']') return -1;
    }
}

static int s_dtype(const char *obj, size_t len) {
    const char *p = strstr(obj, "\"dtype\"");
    if (!p || p >= obj + len) return -1;
    p = strchr(p + 7, '"');
    if (!p || p >= obj + len) return -1;
    if (!strncmp(p, "\"F32\"", 5)) return 4;
    if (!strncmp(p, "\"F16\"", 5)) return 2;
    if (!strncmp(p, "\"BF16\"", 6)) return 3; // 2 bytes; 3 marks bfloat16
    return -1;
}

int safetensors_load_gpt(const char *path, const gpt_config_t *cfg, float *params, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char *hdr = NULL;
    uint8_t *raw = NULL;
    uint8_t l8[8];
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (fsize < 8 || fread(l8, 1, 8, f) != 8) {
        snprintf(err, errlen, "%s: too short for a safetensors file", path);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)l8[i] << (8 * i);
    if (hlen == 0 || hlen > ST_HEADER_MAX || hlen > (uint64_t)fsize - 8) {
        snprintf(err, errlen, "%s: header length %llu does not fit the file (%ld bytes)", path, (unsigned long long)hlen, fsize);
        goto out;
    }
    hdr = malloc(hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, f) != hlen) {
        snprintf(err, errlen, "%s: cannot read the header", path);
        goto out;
    }
    hdr[hlen] = '\0';
    uint64_t data0 = 8 + hlen, dlen = (uint64_t)fsize - data0;
    int nt = gpt_num_tensors(cfg);
    for (int i = 0; i < nt; i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        size_t olen = 0;
        const char *obj = s_find_tensor(hdr, t.name, &olen);
        char prefixed[64];
        snprintf(prefixed, sizeof prefixed, "transformer.%s", t.name);
        if (!obj) obj = s_find_tensor(hdr, prefixed, &olen);
        if (!obj) {
            snprintf(err, errlen, "%s: tensor %s is missing", path, t.name);
            goto out;
        }
        uint64_t shape[4], offs[2];
        int nd = s_array(obj, olen, "shape", shape, 4), no = s_array(obj, olen, "data_offsets", offs, 2);
        int dt = s_dtype(obj, olen);
        if (nd < 0 || no != 2 || dt < 0) {
            snprintf(err, errlen, "%s: tensor %s: malformed entry or unsupported dtype (F32, F16, BF16)", path, t.name);
            goto out;
        }
        // Expected Hugging Face shape: Conv1D weights are (in, out).
        uint64_t want[2] = {(uint64_t)t.shape[0], (uint64_t)t.shape[1]};
        if (t.ndim == 2 && t.transposed) want[0] = (uint64_t)t.shape[1], want[1] = (uint64_t)t.shape[0];
        int ok = nd == t.ndim && shape[0] == want[0] && (t.ndim == 1 || shape[1] == want[1]);
        if (!ok) {
            char got[64], need[64];
            if (nd >= 2) snprintf(got, sizeof got, "[%llu, %llu%s]", (unsigned long long)shape[0], (unsigned long long)shape[1], nd > 2 ? ", ..." : "");
            else if (nd == 1) snprintf(got, sizeof got, "[%llu]", (unsigned long long)shape[0]);
            else snprintf(got, sizeof got, "[]");
            if (t.ndim == 2) snprintf(need, sizeof need, "[%llu, %llu]", (unsigned long long)want[0], (unsigned long long)want[1]);
            else snprintf(need, sizeof need, "[%llu]", (unsigned long long)want[0]);
            snprintf(err, errlen, "%s: tensor %s has shape %s, the model config needs %s", path, t.name, got, need);
            goto out;
        }
        size_t esize = dt == 4 ? 4 : 2;
        if (offs[1] < offs[0] || offs[1] > dlen || offs[1] - offs[0] != t.numel * esize) {
            snprintf(err, errlen, "%s: tensor %s: data range [%llu, %llu) does not hold %zu values or leaves the file",
                     path, t.name, (unsigned long long)offs[0], (unsigned long long)offs[1], t.numel);
            goto out;
        }
        uint8_t *nr = realloc(raw, t.numel * esize);
        if (!nr) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        raw = nr;
        if (fseek(f, (long)(data0 + offs[0]), SEEK_SET) != 0 || fread(raw, esize, t.numel, f) != t.numel) {
            snprintf(err, errlen, "%s: tensor %s: read failed", path, t.name);
            goto out;
        }
        float *dst = params + t.offset;
        int R = t.ndim == 2 ? (int)want[0] : 1, C = t.ndim == 2 ? (int)want[1] : (int)t.numel;
        for (size_t k = 0; k < t.numel; k++) {
            float v;
            if (dt == 4) {
                uint32_t u = (uint32_t)raw[4 * k] | (uint32_t)raw[4 * k + 1] << 8 | (uint32_t)raw[4 * k + 2] << 16 |
                             (uint32_t)raw[4 * k + 3] << 24;
                memcpy(&v, &u, 4);
            } else {
                uint16_t h = (uint16_t)(raw[2 * k] | raw[2 * k + 1] << 8);
                if (dt == 2) {
                    v = codec_f16_to_f32(h);
                } else {
                    uint32_t u = (uint32_t)h << 16;
                    memcpy(&v, &u, 4);
                }
            }
            if (t.ndim == 2 && t.transposed) { // file (in=R, out=C) → loco (out, in)
                size_t r = k / (size_t)C, c = k % (size_t)C;
                dst[c * (size_t)R + r] = v;
            } else {
                dst[k] = v;
            }
        }
    }
    rc = 0;
out:
    free(raw);
    free(hdr);
    fclose(f);
    return rc;
}

int safetensors_save_gpt(const char *out, const gpt_config_t *cfg, const float *params, char *err, size_t errlen) {
    int nt = gpt_num_tensors(cfg);
    size_t cap = (size_t)nt * 160 + 64, len = 0;
    char *hdr = malloc(cap);
    if (!hdr) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        size_t bytes = t.numel * sizeof(float);
        if (t.ndim == 2) {
            int r = t.transposed ? t.shape[1] : t.shape[0], c = t.transposed ? t.shape[0] : t.shape[1];
            len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                    t.name, r, c, off, off + bytes);
        } else {
            len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                                    t.name, t.shape[0], off, off + bytes);
        }
        off += bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' '; // 8-byte aligned data, as the format recommends
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(hdr);
        return -1;
    }
    uint8_t l8[8];
    ckpt_put_u64(l8, len);
    int ok = fwrite(l8, 1, 8, f) == 8 && fwrite(hdr, 1, len, f) == len;
    free(hdr);
    float *buf = NULL;
    for (int i = 0; ok && i < nt; i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        const float *src = params + t.offset;
        if (t.transposed) {
            // loco stores (out, in); Hugging Face's Conv1D stores (in, out).
            int R = t.shape[0], C = t.shape[1];
            float *nb = realloc(buf, t.numel * sizeof(float));
            if (!nb) { ok = 0; break; }
            buf = nb;
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) buf[(size_t)c * R + r] = src[(size_t)r * C + c];
            src = buf;
        }
        ok = fwrite(src, sizeof(float), t.numel, f) == t.numel;
    }
    free(buf);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", out, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

