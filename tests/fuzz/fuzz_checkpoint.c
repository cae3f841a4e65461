// Fuzz target: checkpoint images (ckpt_parse) and the model sections read from them (ckpt_model).
//
// A random image almost never carries a matching SHA-256 trailer, so the parser would stop at the
// hash check. Each input is therefore parsed twice: as is (the hash check itself), and with a
// correct trailer appended, which lets the fuzzer reach the section table. Accepted images must
// satisfy the format's invariants, and ckpt_model must accept or refuse their sections cleanly.
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/checkpoint.h"
#include "node/trainer.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_checkpoint: invariant failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void s_check(const uint8_t *buf, size_t len) {
    ckpt_t c;
    char err[512];
    memset(&c, 0, sizeof c);
    memset(err, 0x55, sizeof err);
    if (ckpt_parse(&c, buf, len, err, sizeof err) != 0) {
        CHECK(memchr(err, '\0', sizeof err) && err[0]);
        return;
    }
    // Sections tile the image between the 16-byte header and the 32-byte trailer.
    CHECK(c.n >= 0 && c.n <= CKPT_MAX_SECTIONS);
    size_t pos = 16;
    for (int i = 0; i < c.n; i++) {
        size_t nl = strnlen(c.sec[i].name, sizeof c.sec[i].name);
        CHECK(nl > 0 && nl < sizeof c.sec[i].name);
        pos += 1 + 8 + nl;
        CHECK(c.sec[i].data == buf + pos);
        CHECK(c.sec[i].len <= len - 32 - pos);
        pos += c.sec[i].len;
        size_t l = 0;
        CHECK(ckpt_get(&c, c.sec[i].name, &l) != NULL);
    }
    CHECK(pos == len - 32);
    CHECK(memcmp(c.digest, buf + len - 32, 32) == 0);
    // The decoder of the model sections that eval/export/sample/resume use.
    gpt_config_t mc;
    const float *params = NULL;
    const char *which[] = {"params", "anchor"};
    for (int w = 0; w < 2; w++) {
        memset(err, 0x55, sizeof err);
        if (ckpt_model(&c, which[w], &mc, &params, err, sizeof err) == 0) {
            size_t l = 0;
            const uint8_t *p = ckpt_get(&c, which[w], &l);
            CHECK((const uint8_t *)params == p && l == gpt_num_params(&mc) * sizeof(float));
        } else {
            CHECK(memchr(err, '\0', sizeof err) && err[0]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    s_check(data, size);
    // The same bytes with a valid SHA-256 trailer.
    uint8_t *buf = malloc(size + 32);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    unsigned int dl = 0;
    EVP_Digest(data, size, buf + size, &dl, EVP_sha256(), NULL);
    s_check(buf, size + 32);
    free(buf);
    return 0;
}
