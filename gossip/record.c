#include "gossip/record.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t s_magic[4] = {'L', 'M', 'R', 'C'};

const char *gossip_rec_status_name(gossip_rec_status_t s) {
    switch (s) {
    case GOSSIP_REC_OK: return "ok";
    case GOSSIP_REC_MALFORMED: return "malformed";
    case GOSSIP_REC_VERSION: return "unknown version";
    case GOSSIP_REC_FORGED: return "forged";
    case GOSSIP_REC_WRONG_RUN: return "wrong run";
    default: return "?";
    }
}

static bool s_printable(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

bool gossip_endpoint_valid(const char *s, size_t len) {
    if (len < 9 || len > GOSSIP_ENDPOINT_MAX || memcmp(s, "tcp://", 6) != 0) return false;
    const char *h = s + 6, *end = s + len;
    const char *colon;
    if (*h == '[') { // [v6]:port
        const char *close = memchr(h, ']', (size_t)(end - h));
        if (!close || close == h + 1 || close + 1 >= end || close[1] != ':') return false;
        for (const char *c = h + 1; c < close; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F') || *c == ':' ||
                  *c == '.'))
                return false;
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *c = h; c < end; c++) {
            if (*c == ':') { colon = c; break; }
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '.' ||
                  *c == '-' || *c == '_'))
                return false;
        }
        if (!colon || colon == h) return false;
    }
    const char *p = colon + 1;
    if (p >= end || end - p > 5) return false;
    unsigned port = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return false;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port >= 1 && port <= 65535 && colon[1] != '0';
}

int gossip_record_check(const gossip_record_t *r, char *err, size_t errlen) {
    if (r->status != GOSSIP_STATUS_ALIVE && r->status != GOSSIP_STATUS_LEAVING) {
        snprintf(err, errlen, "status %d is neither alive nor leaving", (int)r->status);
        return -1;
    }
    size_t dl = strnlen(r->caps.device, sizeof r->caps.device);
    if (dl > GOSSIP_DEVICE_MAX || !s_printable(r->caps.device, dl)) {
        snprintf(err, errlen, "device name is not printable text of at most %d bytes", GOSSIP_DEVICE_MAX);
        return -1;
    }
    if (r->n_endpoints < 0 || r->n_endpoints > GOSSIP_MAX_ENDPOINTS) {
        snprintf(err, errlen, "%d endpoints (at most %d)", r->n_endpoints, GOSSIP_MAX_ENDPOINTS);
        return -1;
    }
    for (int i = 0; i < r->n_endpoints; i++) {
        size_t el = strnlen(r->endpoints[i], sizeof r->endpoints[i]);
        if (!gossip_endpoint_valid(r->endpoints[i], el)) {
            snprintf(err, errlen, "endpoint %d '%.*s' is not tcp://host:port", i + 1, (int)(el > 80 ? 80 : el),
                     r->endpoints[i]);
            return -1;
        }
    }
    if (r->caps.reachable && r->n_endpoints == 0) {
        snprintf(err, errlen, "reachable, but advertises no endpoint");
        return -1;
    }
    if (r->ticket_len > GOSSIP_TICKET_MAX) {
        snprintf(err, errlen, "ticket of %u bytes (at most %d)", r->ticket_len, GOSSIP_TICKET_MAX);
        return -1;
    }
    return 0;
}

// Ed25519 over context ‖ body. The body is at most GOSSIP_RECORD_MAX bytes, so one stack buffer holds both.
static void s_signed_msg(const uint8_t *body, size_t len, uint8_t *msg, size_t *mlen) {
    memcpy(msg, GOSSIP_RECORD_CONTEXT, sizeof GOSSIP_RECORD_CONTEXT);
    memcpy(msg + sizeof GOSSIP_RECORD_CONTEXT, body, len);
    *mlen = sizeof GOSSIP_RECORD_CONTEXT + len;
}

size_t gossip_record_sign(gossip_record_t *r, const uint8_t sk[GOSSIP_SK_BYTES], uint8_t *out, size_t cap,
                          char *err, size_t errlen) {
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return 0;
    }
    memcpy(r->id, sk + 32, GOSSIP_ID_BYTES);
    if (gossip_record_check(r, err, errlen) != 0) return 0;
    uint8_t body[GOSSIP_RECORD_MAX];
    size_t n = 0;
    memcpy(body, s_magic, 4);
    body[4] = GOSSIP_RECORD_VERSION;
    body[5] = (uint8_t)r->status;
    body[6] = r->caps.reachable ? 1 : 0;
    body[7] = (uint8_t)r->n_endpoints;
    memcpy(body + 8, r->id, 32);
    memcpy(body + 40, r->run_fp, 32);
    gossip_put_u64(body + 72, r->incarnation);
    gossip_put_u64(body + 80, r->time_ms);
    gossip_put_u32(body + 88, r->caps.step_rate_milli);
    gossip_put_u64(body + 92, r->caps.upload_Bps);
    gossip_put_u64(body + 100, r->caps.download_Bps);
    n = GOSSIP_RECORD_FIXED;
    size_t dl = strnlen(r->caps.device, sizeof r->caps.device);
    body[n++] = (uint8_t)dl;
    memcpy(body + n, r->caps.device, dl);
    n += dl;
    for (int i = 0; i < r->n_endpoints; i++) {
        size_t el = strnlen(r->endpoints[i], sizeof r->endpoints[i]);
        body[n++] = (uint8_t)el;
        memcpy(body + n, r->endpoints[i], el);
        n += el;
    }
    gossip_put_u16(body + n, r->ticket_len);
    n += 2;
    memcpy(body + n, r->ticket, r->ticket_len);
    n += r->ticket_len;
    if (n + GOSSIP_SIG_BYTES > cap) {
        snprintf(err, errlen, "record needs %zu bytes, buffer holds %zu", n + GOSSIP_SIG_BYTES, cap);
        return 0;
    }
    uint8_t msg[sizeof GOSSIP_RECORD_CONTEXT + GOSSIP_RECORD_MAX];
    size_t mlen;
    s_signed_msg(body, n, msg, &mlen);
    crypto_sign_detached(r->sig, NULL, msg, mlen, sk);
    memcpy(out, body, n);
    memcpy(out + n, r->sig, GOSSIP_SIG_BYTES);
    return n + GOSSIP_SIG_BYTES;
}

#define FAIL(code, ...)                                                                                      \
    do {                                                                                                     \
        snprintf(err, errlen, __VA_ARGS__);                                                                  \
        return (code);                                                                                       \
    } while (0)

static uint8_t (*s_vcache)[crypto_generichash_BYTES];
static size_t s_vcache_n;

void gossip_record_verify_cache(size_t entries) {
    free(s_vcache);
    s_vcache = NULL;
    s_vcache_n = 0;
    if (entries == 0) return;
    size_t n = 1;
    while (n < entries) n *= 2;
    s_vcache = calloc(n, sizeof *s_vcache);
    if (s_vcache) s_vcache_n = n;
}

gossip_rec_status_t gossip_record_decode(gossip_record_t *r, const uint8_t *buf, size_t len,
                                         const uint8_t run_fp[GOSSIP_FP_BYTES], char *err, size_t errlen) {
    if (len < 5) FAIL(GOSSIP_REC_MALFORMED, "record of %zu bytes is truncated", len);
    if (memcmp(buf, s_magic, 4) != 0) FAIL(GOSSIP_REC_MALFORMED, "record magic is not LMRC");
    if (buf[4] != GOSSIP_RECORD_VERSION)
        FAIL(GOSSIP_REC_VERSION, "record version %u (this build reads %d)", buf[4], GOSSIP_RECORD_VERSION);
    if (len < GOSSIP_RECORD_MIN || len > GOSSIP_RECORD_MAX)
        FAIL(GOSSIP_REC_MALFORMED, "record of %zu bytes (must be %d..%d)", len, GOSSIP_RECORD_MIN, GOSSIP_RECORD_MAX);
    memset(r, 0, sizeof *r);
    if (buf[5] > GOSSIP_STATUS_LEAVING) FAIL(GOSSIP_REC_MALFORMED, "record status %u unknown", buf[5]);
    if (buf[6] & ~1u) FAIL(GOSSIP_REC_MALFORMED, "record flags 0x%02x: reserved bits set", buf[6]);
    if (buf[7] > GOSSIP_MAX_ENDPOINTS)
        FAIL(GOSSIP_REC_MALFORMED, "record lists %u endpoints (at most %d)", buf[7], GOSSIP_MAX_ENDPOINTS);
    r->status = (gossip_status_t)buf[5];
    r->caps.reachable = buf[6] & 1;
    r->n_endpoints = buf[7];
    memcpy(r->id, buf + 8, 32);
    memcpy(r->run_fp, buf + 40, 32);
    r->incarnation = gossip_get_u64(buf + 72);
    r->time_ms = gossip_get_u64(buf + 80);
    r->caps.step_rate_milli = gossip_get_u32(buf + 88);
    r->caps.upload_Bps = gossip_get_u64(buf + 92);
    r->caps.download_Bps = gossip_get_u64(buf + 100);
    // Variable part: everything up to the signature. `body_end` is where the signature must start.
    size_t body_end = len - GOSSIP_SIG_BYTES, p = GOSSIP_RECORD_FIXED;
    if (p + 1 > body_end) FAIL(GOSSIP_REC_MALFORMED, "record truncated before the device name");
    size_t dl = buf[p++];
    if (dl > GOSSIP_DEVICE_MAX || dl > body_end - p)
        FAIL(GOSSIP_REC_MALFORMED, "device name of %zu bytes runs past the record", dl);
    if (!s_printable((const char *)buf + p, dl)) FAIL(GOSSIP_REC_MALFORMED, "device name is not printable text");
    memcpy(r->caps.device, buf + p, dl);
    p += dl;
    for (int i = 0; i < r->n_endpoints; i++) {
        if (p + 1 > body_end) FAIL(GOSSIP_REC_MALFORMED, "record truncated before endpoint %d", i + 1);
        size_t el = buf[p++];
        if (el > GOSSIP_ENDPOINT_MAX || el > body_end - p)
            FAIL(GOSSIP_REC_MALFORMED, "endpoint %d of %zu bytes runs past the record", i + 1, el);
        if (!gossip_endpoint_valid((const char *)buf + p, el))
            FAIL(GOSSIP_REC_MALFORMED, "endpoint %d is not tcp://host:port", i + 1);
        memcpy(r->endpoints[i], buf + p, el);
        p += el;
    }
    if (r->caps.reachable && r->n_endpoints == 0) FAIL(GOSSIP_REC_MALFORMED, "reachable record with no endpoint");
    if (p + 2 > body_end) FAIL(GOSSIP_REC_MALFORMED, "record truncated before the ticket");
    size_t tl = gossip_get_u16(buf + p);
    p += 2;
    if (tl > GOSSIP_TICKET_MAX || tl > body_end - p)
        FAIL(GOSSIP_REC_MALFORMED, "ticket of %zu bytes runs past the record", tl);
    r->ticket_len = (uint16_t)tl;
    memcpy(r->ticket, buf + p, tl);
    p += tl;
    if (p != body_end) FAIL(GOSSIP_REC_MALFORMED, "%zu stray bytes before the signature", body_end - p);
    memcpy(r->sig, buf + body_end, GOSSIP_SIG_BYTES);

    if (sodium_init() < 0) FAIL(GOSSIP_REC_FORGED, "libsodium failed to initialise");
    uint8_t msg[sizeof GOSSIP_RECORD_CONTEXT + GOSSIP_RECORD_MAX];
    size_t mlen;
    s_signed_msg(buf, body_end, msg, &mlen);
    uint8_t h[crypto_generichash_BYTES];
    uint8_t *slot = NULL;
    if (s_vcache) { // the whole wire form (signer id, body, signature) names a verification
        crypto_generichash(h, sizeof h, buf, len, NULL, 0);
        uint64_t k;
        memcpy(&k, h, sizeof k);
        slot = s_vcache[k & (s_vcache_n - 1)];
    }
    if (!(slot && memcmp(slot, h, sizeof h) == 0)) {
        if (crypto_sign_verify_detached(r->sig, msg, mlen, r->id) != 0) {
            char who[9];
            gossip_id_short(r->id, who);
            FAIL(GOSSIP_REC_FORGED, "record for %s is not signed by %s", who, who);
        }
        if (slot) memcpy(slot, h, sizeof h);
    }
    if (sodium_memcmp(r->run_fp, run_fp, GOSSIP_FP_BYTES) != 0) {
        char who[9];
        gossip_id_short(r->id, who);
        FAIL(GOSSIP_REC_WRONG_RUN, "record of %s is for another run (fingerprint %02x%02x%02x%02x…)", who,
             r->run_fp[0], r->run_fp[1], r->run_fp[2], r->run_fp[3]);
    }
    return GOSSIP_REC_OK;
}

void gossip_id_hex(const uint8_t id[GOSSIP_ID_BYTES], char out[2 * GOSSIP_ID_BYTES + 1]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < GOSSIP_ID_BYTES; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[2 * GOSSIP_ID_BYTES] = '\0';
}

void gossip_id_short(const uint8_t id[GOSSIP_ID_BYTES], char out[9]) {
    char full[2 * GOSSIP_ID_BYTES + 1];
    gossip_id_hex(id, full);
    memcpy(out, full, 8);
    out[8] = '\0';
}
