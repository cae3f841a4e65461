// Fuzz target: token-shard headers (data_header_parse) and whole shards (data_shard_open).
//
// Input: the bytes of a shard file. The header parser sees them with the real file size, and with
// a claimed file size taken from the input's last 8 bytes (so sizes far from the buffer length,
// e.g. 2^64-1, are reached too). The input is then opened as a file, through an in-memory file
// (memfd), with a vocabulary drawn from the input, so the mmap path and the token check run as
// `loco train` runs them. Each accepted shard must satisfy the format's invariants.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/data.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_shard: invariant failed: %s (line %d)\n", #cond, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t s_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void s_check_err(const char *err, size_t cap) {
    CHECK(memchr(err, '\0', cap) != NULL);
    CHECK(err[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];

    // 1. The header against the true file size.
    memset(err, 0x55, sizeof err);
    int64_t n = data_header_parse(data, size, size, err, sizeof err);
    if (n >= 0) {
        CHECK(size >= DATA_HEADER_BYTES);
        CHECK((uint64_t)size == DATA_HEADER_BYTES + 2 * (uint64_t)n);
    } else {
        s_check_err(err, sizeof err);
    }

    // 2. The header against an arbitrary claimed size (a file larger or smaller than the buffer).
    if (size >= 8) {
        uint64_t claimed = s_le64(data + size - 8);
        memset(err, 0x55, sizeof err);
        int64_t m = data_header_parse(data, size, claimed, err, sizeof err);
        if (m >= 0) CHECK(claimed == DATA_HEADER_BYTES + 2 * (uint64_t)m && m <= (int64_t)UINT32_MAX);
        else s_check_err(err, sizeof err);
    }

    // 3. The whole file through data_shard_open, as loco reads shards.
    int fd = memfd_create("fuzz_shard", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int vocab = size > 12 ? 2 + (data[12] | data[13 % size] << 8) % 65535 : 256;
    memset(err, 0x55, sizeof err);
    data_shard_t *s = data_shard_open(path, vocab, err, sizeof err);
    if (s) {
        CHECK(n >= 0 && s->ntok == (size_t)n);
        for (size_t i = 0; i < s->ntok; i++) CHECK(s->tok[i] < vocab);
        data_shard_destroy(&s);
        CHECK(s == NULL);
    } else {
        s_check_err(err, sizeof err);
        CHECK(strncmp(err, path, strlen(path)) == 0); // the message names the file
    }
    close(fd);
    return 0;
}
