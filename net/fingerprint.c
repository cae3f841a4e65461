#include "net/fingerprint.h"

#include "net/identity.h"
#include "node/plan_file.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void net_sha256(const void *data, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

size_t net_run_describe(const loco_config_t *c, char *out, size_t len) {
    int n = snprintf(out, len,
                     "loco-run\n"
                     "protocol=%d\n"
                     "run.name=%s\n"
                     "model.layers=%d\n"
                     "model.d_model=%d\n"
                     "model.heads=%d\n"
                     "model.seq_len=%d\n"
                     "model.vocab=%d\n"
                     "train.seed=%lld\n"
                     "outer.algorithm=%s\n"
                     "outer.inner_steps=%lld\n"
                     "outer.codec=%s\n",
                     NET_PROTOCOL_VERSION, c->run_name, c->model.layers, c->model.d_model, c->model.heads,
                     c->model.seq_len, c->model.vocab, (long long)c->seed, c->outer_algorithm,
                     (long long)c->inner_steps, c->outer_codec);
    if (n <= 0 || (size_t)n >= len) return 0;
    if (c->pipeline_plan[0]) { // pipelined runs only, so other runs keep their fingerprint
        char hex[65] = "unreadable";
        plan_t *p = malloc(sizeof *p);
        char why[512];
        if (p && plan_read(c->pipeline_plan, p, why, sizeof why) == 0) {
            uint8_t h[32];
            plan_hash(p, h);
            net_hex_encode(h, 32, hex);
        }
        free(p);
        int k = snprintf(out + n, len - (size_t)n, "pipeline.plan=%s\n", hex);
        if (k <= 0 || (size_t)k >= len - (size_t)n) return 0;
        n += k;
    }
    return (size_t)n;
}

void net_run_fingerprint_desc(const char *desc, size_t len, uint8_t fp[32]) { net_sha256(desc, len, fp); }

void net_run_fingerprint(const loco_config_t *c, uint8_t fp[32]) {
    char d[NET_RUN_DESC_MAX];
    size_t n = net_run_describe(c, d, sizeof d);
    net_run_fingerprint_desc(d, n, fp);
}

// Finds "key=" at a line start in desc; returns the value's start and length, or NULL.
static const char *s_lookup(const char *desc, size_t len, const char *key, size_t klen, size_t *vlen) {
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(desc + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - desc) : len;
        if (end - i > klen && desc[i + klen] == '=' && memcmp(desc + i, key, klen) == 0) {
            *vlen = end - i - klen - 1;
            return desc + i + klen + 1;
        }
        i = end + 1;
    }
    return NULL;
}

static int s_diff_one(const char *a, size_t alen, const char *b, size_t blen, int a_is_ours, char *out,
                      size_t outlen) {
    for (size_t i = 0; i < alen;) {
        const char *nl = memchr(a + i, '\n', alen - i);
        size_t end = nl ? (size_t)(nl - a) : alen;
        const char *eq = memchr(a + i, '=', end - i);
        if (eq) {
            size_t klen = (size_t)(eq - (a + i)), avl = end - i - klen - 1, bvl = 0;
            const char *bv = s_lookup(b, blen, a + i, klen, &bvl);
            if (!bv) {
                snprintf(out, outlen, "%.*s: missing %s", (int)(klen > 64 ? 64 : klen), a + i,
                         a_is_ours ? "there" : "here");
                return 1;
            }
            if (bvl != avl || memcmp(bv, eq + 1, avl) != 0) {
                const char *ov = a_is_ours ? eq + 1 : bv, *tv = a_is_ours ? bv : eq + 1;
                size_t ol = a_is_ours ? avl : bvl, tl = a_is_ours ? bvl : avl;
                // The form: "model.heads: 4 here, 6 there".
                snprintf(out, outlen, "%.*s: %.*s here, %.*s there", (int)(klen > 64 ? 64 : klen),
                         a + i, (int)(ol > 64 ? 64 : ol), ov, (int)(tl > 64 ? 64 : tl), tv);
                return 1;
            }
        }
        i = end + 1;
    }
    return 0;
}

int net_run_diff(const char *ours, size_t olen, const char *theirs, size_t tlen, char *out, size_t outlen) {
    if (olen == tlen && memcmp(ours, theirs, olen) == 0) return 0;
    if (s_diff_one(ours, olen, theirs, tlen, 1, out, outlen)) return 1;
    if (s_diff_one(theirs, tlen, ours, olen, 0, out, outlen)) return 1;
    snprintf(out, outlen, "descriptions differ in form (line order or duplicates)");
    return 1;
}
