#include "gossip/runparams.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gossip/record.h"

// Appends "; " (unless first) and one formatted difference, truncating safely at msglen.
static void s_append(char *msg, size_t msglen, size_t *used, const char *fmt, const char *name, const char *a,
                     const char *b) {
    if (*used >= msglen) return;
    int n = snprintf(msg + *used, msglen - *used, fmt, *used ? "; " : "", name, a, b);
    if (n > 0) *used += (size_t)n < msglen - *used ? (size_t)n : msglen - *used - 1;
}

static void s_num(char *msg, size_t msglen, size_t *used, int *diffs, const char *name, uint64_t a, uint64_t b) {
    if (a == b) return;
    char sa[24], sb[24];
    snprintf(sa, sizeof sa, "%" PRIu64, a);
    snprintf(sb, sizeof sb, "%" PRIu64, b);
    s_append(msg, msglen, used, "%s%s: %s here, %s there", name, sa, sb);
    (*diffs)++;
}

static void s_str(char *msg, size_t msglen, size_t *used, int *diffs, const char *name, const char *a, const char *b) {
    if (strcmp(a, b) == 0) return;
    s_append(msg, msglen, used, "%s%s: '%s' here, '%s' there", name, a, b);
    (*diffs)++;
}

int gossip_run_params_compare(const gossip_run_params_t *o, const gossip_run_params_t *t, char *msg, size_t msglen) {
    size_t used = 0;
    int d = 0;
    if (msglen) msg[0] = '\0';
    s_num(msg, msglen, &used, &d, "protocol version", o->protocol_version, t->protocol_version);
    s_str(msg, msglen, &used, &d, "run name", o->run_name, t->run_name);
    s_num(msg, msglen, &used, &d, "layers", o->layers, t->layers);
    s_num(msg, msglen, &used, &d, "d_model", o->d_model, t->d_model);
    s_num(msg, msglen, &used, &d, "heads", o->heads, t->heads);
    s_num(msg, msglen, &used, &d, "seq_len", o->seq_len, t->seq_len);
    s_num(msg, msglen, &used, &d, "vocab", o->vocab, t->vocab);
    s_num(msg, msglen, &used, &d, "seed", o->seed, t->seed);
    s_str(msg, msglen, &used, &d, "outer algorithm", o->outer_algorithm, t->outer_algorithm);
    s_num(msg, msglen, &used, &d, "H", o->H, t->H);
    s_str(msg, msglen, &used, &d, "codec", o->codec, t->codec);
    return d;
}

static bool s_text_ok(const char *s, size_t max, size_t *len) {
    *len = strnlen(s, max + 1);
    if (*len > max) return false;
    for (size_t i = 0; i < *len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

size_t gossip_run_params_encode(const gossip_run_params_t *p, uint8_t *out, size_t cap) {
    const char *strs[3] = {p->run_name, p->outer_algorithm, p->codec};
    const size_t maxes[3] = {GOSSIP_RUN_NAME_MAX, GOSSIP_RUN_WORD_MAX, GOSSIP_RUN_WORD_MAX};
    size_t lens[3], total = 39;
    for (int i = 0; i < 3; i++) {
        if (!s_text_ok(strs[i], maxes[i], &lens[i])) return 0;
        total += 1 + lens[i];
    }
    if (total > cap) return 0;
    memcpy(out, "LRUN", 4);
    out[4] = 1;
    gossip_put_u16(out + 5, p->protocol_version);
    gossip_put_u32(out + 7, p->layers);
    gossip_put_u32(out + 11, p->d_model);
    gossip_put_u32(out + 15, p->heads);
    gossip_put_u32(out + 19, p->seq_len);
    gossip_put_u32(out + 23, p->vocab);
    gossip_put_u64(out + 27, p->seed);
    gossip_put_u32(out + 35, p->H);
    size_t n = 39;
    for (int i = 0; i < 3; i++) {
        out[n++] = (uint8_t)lens[i];
        memcpy(out + n, strs[i], lens[i]);
        n += lens[i];
    }
    return n;
}

int gossip_run_params_decode(gossip_run_params_t *p, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    if (len < 39 + 3) {
        snprintf(err, errlen, "run parameters of %zu bytes are truncated", len);
        return -1;
    }
    if (memcmp(buf, "LRUN", 4) != 0 || buf[4] != 1) {
        snprintf(err, errlen, "run parameters: bad magic or version %u", buf[4]);
        return -1;
    }
    memset(p, 0, sizeof *p);
    p->protocol_version = gossip_get_u16(buf + 5);
    p->layers = gossip_get_u32(buf + 7);
    p->d_model = gossip_get_u32(buf + 11);
    p->heads = gossip_get_u32(buf + 15);
    p->seq_len = gossip_get_u32(buf + 19);
    p->vocab = gossip_get_u32(buf + 23);
    p->seed = gossip_get_u64(buf + 27);
    p->H = gossip_get_u32(buf + 35);
    char *strs[3] = {p->run_name, p->outer_algorithm, p->codec};
    const size_t maxes[3] = {GOSSIP_RUN_NAME_MAX, GOSSIP_RUN_WORD_MAX, GOSSIP_RUN_WORD_MAX};
    static const char *names[3] = {"run name", "outer algorithm", "codec"};
    size_t n = 39;
    for (int i = 0; i < 3; i++) {
        if (n + 1 > len) {
            snprintf(err, errlen, "run parameters truncated before the %s", names[i]);
            return -1;
        }
        size_t l = buf[n++];
        if (l > maxes[i] || l > len - n) {
            snprintf(err, errlen, "run parameters: %s of %zu bytes is too long or runs past the end", names[i], l);
            return -1;
        }
        for (size_t k = 0; k < l; k++)
            if (buf[n + k] < 0x20 || buf[n + k] > 0x7e) {
                snprintf(err, errlen, "run parameters: %s is not printable text", names[i]);
                return -1;
            }
        memcpy(strs[i], buf + n, l);
        n += l;
    }
    if (n != len) {
        snprintf(err, errlen, "run parameters: %zu stray bytes at the end", len - n);
        return -1;
    }
    return 0;
}
