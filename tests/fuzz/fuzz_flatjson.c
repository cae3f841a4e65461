// Fuzz target: the flat JSON reader of `loco plot` (node/flatjson.h). The input is copied into a
// buffer of exactly its size (no NUL after it), so AddressSanitizer catches any read past the end.
// A refusal must say "column C: ..." with C within the input (+1 for "the end of the line"); an
// accepted record must hold terminated keys and strings, and re-parsing it gives the same fields.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/flatjson.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_flatjson: invariant failed: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static flatjson_record_t rec, again;
    char err[256];
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    memset(err, 0x55, sizeof err);
    if (flatjson_parse(buf, size, &rec, err, sizeof err) == 0) {
        CHECK(rec.n >= 0 && rec.n <= FLATJSON_MAX_FIELDS);
        for (int i = 0; i < rec.n; i++) {
            CHECK(memchr(rec.f[i].key, '\0', sizeof rec.f[i].key));
            CHECK(memchr(rec.f[i].str, '\0', sizeof rec.f[i].str));
            const flatjson_field_t *f = flatjson_get(&rec, rec.f[i].key);
            CHECK(rec.f[i].key_truncated || (f && f <= &rec.f[i]));
        }
        CHECK(flatjson_parse(buf, size, &again, err, sizeof err) == 0 && again.n == rec.n);
    } else {
        CHECK(memchr(err, '\0', sizeof err));
        size_t col = 0;
        CHECK(sscanf(err, "column %zu: ", &col) == 1);
        CHECK(col >= 1 && col <= size + 1);
    }
    free(buf);
    return 0;
}
