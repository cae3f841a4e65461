#include "net/ticket.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void s_put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t s_get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void s_body(const net_ticket_t *t, uint8_t out[120]) {
    memcpy(out, "LTKT", 4);
    out[4] = 1, out[5] = out[6] = out[7] = 0;
    memcpy(out + 8, t->run_fp, 32);
    memcpy(out + 40, t->peer, 32);
    memcpy(out + 72, t->authority, 32);
    s_put64(out + 104, t->issued);
    s_put64(out + 112, t->expires);
}

void net_ticket_sign(net_ticket_t *t, const net_identity_t *authority) {
    memcpy(t->authority, authority->pk, 32);
    uint8_t body[120];
    s_body(t, body);
    crypto_sign_detached(t->sig, NULL, body, sizeof body, authority->sk);
}

void net_ticket_encode(const net_ticket_t *t, uint8_t out[NET_TICKET_BYTES]) {
    s_body(t, out);
    memcpy(out + 120, t->sig, 64);
}

int net_ticket_decode(net_ticket_t *t, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    if (len != NET_TICKET_BYTES) {
        snprintf(err, errlen, "ticket of %zu bytes (expected %d)", len, NET_TICKET_BYTES);
        return -1;
    }
    if (memcmp(buf, "LTKT", 4) != 0) {
        snprintf(err, errlen, "not a loco ticket (bad magic)");
        return -1;
    }
    if (buf[4] != 1) {
        snprintf(err, errlen, "ticket version %u not supported (expected 1)", buf[4]);
        return -1;
    }
    if (buf[5] | buf[6] | buf[7]) {
        snprintf(err, errlen, "ticket reserved bytes not zero");
        return -1;
    }
    memcpy(t->run_fp, buf + 8, 32);
    memcpy(t->peer, buf + 40, 32);
    memcpy(t->authority, buf + 72, 32);
    t->issued = s_get64(buf + 104);
    t->expires = s_get64(buf + 112);
    memcpy(t->sig, buf + 120, 64);
    return 0;
}

void net_ticket_to_text(const net_ticket_t *t, char out[NET_TICKET_TEXT]) {
    uint8_t b[NET_TICKET_BYTES];
    net_ticket_encode(t, b);
    net_hex_encode(b, sizeof b, out);
}

int net_ticket_from_text(net_ticket_t *t, const char *text, char *err, size_t errlen) {
    while (isspace((unsigned char)*text)) text++;
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1])) n--;
    uint8_t b[NET_TICKET_BYTES];
    if (n != 2 * NET_TICKET_BYTES || net_hex_decode(text, n, b) != 0) {
        snprintf(err, errlen, "ticket text is not %d hex digits", 2 * NET_TICKET_BYTES);
        return -1;
    }
    return net_ticket_decode(t, b, sizeof b, err, errlen);
}

int net_ticket_load(net_ticket_t *t, const char *value, char *err, size_t errlen) {
    const char *p = value;
    while (isspace((unsigned char)*p)) p++;
    if (strlen(p) >= 2 * NET_TICKET_BYTES && net_hex_decode(p, 2, (uint8_t[1]){0}) == 0 && !strchr(p, '/'))
        return net_ticket_from_text(t, p, err, errlen);
    FILE *f = fopen(value, "r");
    if (!f) {
        snprintf(err, errlen, "ticket '%s': neither ticket text nor a readable file (%s)", value, strerror(errno));
        return -1;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char why[200];
    if (net_ticket_from_text(t, buf, why, sizeof why) != 0) {
        snprintf(err, errlen, "ticket file %s: %s", value, why);
        return -1;
    }
    return 0;
}

const char *net_ticket_status_name(net_ticket_status_t s) {
    switch (s) {
    case NET_TICKET_OK: return "ok";
    case NET_TICKET_MALFORMED: return "malformed";
    case NET_TICKET_FORGED: return "forged";
    case NET_TICKET_WRONG_AUTHORITY: return "wrong authority";
    case NET_TICKET_WRONG_RUN: return "wrong run";
    case NET_TICKET_WRONG_PEER: return "wrong peer";
    case NET_TICKET_EXPIRED: return "expired";
    }
    return "?";
}

net_ticket_status_t net_ticket_verify(const net_ticket_t *t, const uint8_t authority[32], const uint8_t run_fp[32],
                                      const uint8_t peer[32], uint64_t now, char *err, size_t errlen) {
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return NET_TICKET_MALFORMED;
    }
    if (memcmp(t->authority, authority, 32) != 0) {
        snprintf(err, errlen, "ticket signed by another authority");
        return NET_TICKET_WRONG_AUTHORITY;
    }
    uint8_t body[120];
    s_body(t, body);
    if (crypto_sign_verify_detached(t->sig, body, sizeof body, authority) != 0) {
        snprintf(err, errlen, "ticket signature does not verify (forged or corrupted)");
        return NET_TICKET_FORGED;
    }
    if (memcmp(t->run_fp, run_fp, 32) != 0) {
        snprintf(err, errlen, "ticket is for another run (fingerprint differs)");
        return NET_TICKET_WRONG_RUN;
    }
    if (memcmp(t->peer, peer, 32) != 0) {
        snprintf(err, errlen, "ticket was issued to another peer id");
        return NET_TICKET_WRONG_PEER;
    }
    if (t->expires != 0 && now >= t->expires) {
        snprintf(err, errlen, "ticket expired %llu s ago", (unsigned long long)(now - t->expires));
        return NET_TICKET_EXPIRED;
    }
    return NET_TICKET_OK;
}

int net_ticket_parse_expiry(const char *s, uint64_t now, uint64_t *out) {
    if (!strcmp(s, "never")) {
        *out = 0;
        return 0;
    }
    if (s[0] == '+') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s + 1, &end, 10);
        uint64_t mul = *end == 'd' ? 86400 : *end == 'h' ? 3600 : *end == 's' ? 1 : 0;
        if (errno || end == s + 1 || !mul || end[1] || v > (UINT64_MAX - now) / mul) return -1;
        *out = now + v * mul;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int y, mo, d, h = 23, mi = 59, sec = 59, used = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3) return -1;
    const char *rest = s + used;
    if (*rest == 'T') {
        int u2 = 0;
        sec = 0;
        if (sscanf(rest, "T%2d:%2d%n", &h, &mi, &u2) != 2) return -1;
        rest += u2;
        if (*rest == ':') {
            if (sscanf(rest, ":%2d%n", &sec, &u2) != 1) return -1;
            rest += u2;
        }
        if (*rest == 'Z') rest++;
    }
    if (*rest || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970) return -1;
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t < 0) return -1;
    *out = (uint64_t)t + (used && !strchr(s, 'T') ? 1 : 0); // a bare date expires after its last second
    return 0;
}
