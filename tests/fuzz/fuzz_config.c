// Fuzz target: the INI config parser (config_load) and --set overrides (config_set).
//
// The input is written to an in-memory file (memfd, reached through /proc/self/fd) and loaded over
// the defaults, exactly as `loco train -c FILE` loads it. Every line of the input is also tried as
// a --set assignment. A refusal must come with a message naming the file (and, for file errors,
// the line); an accepted file must leave every string field terminated.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "node/config.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: invariant failed: %s (line %d)\n", #cond, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void s_check_strings(const loco_config_t *c) {
    CHECK(memchr(c->run_name, '\0', sizeof c->run_name));
    CHECK(memchr(c->log_level, '\0', sizeof c->log_level));
    CHECK(memchr(c->data, '\0', sizeof c->data));
    CHECK(memchr(c->checkpoint_dir, '\0', sizeof c->checkpoint_dir));
    CHECK(memchr(c->metrics, '\0', sizeof c->metrics));
    CHECK(memchr(c->device, '\0', sizeof c->device));
    CHECK(memchr(c->source, '\0', sizeof c->source));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static loco_config_t c; // large (several KiB): keep it off the stack
    char err[2048];
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    config_defaults(&c);
    memset(err, 0x55, sizeof err);
    if (config_load(&c, path, err, sizeof err) == 0) {
        s_check_strings(&c);
        CHECK(strcmp(c.source, path) == 0);
        CHECK(c.batch >= 1 && c.model.layers >= 1 && c.model.vocab >= 2);
        memset(err, 0x55, sizeof err);
        if (config_validate(&c, err, sizeof err) != 0) CHECK(memchr(err, '\0', sizeof err) && err[0]);
    } else {
        CHECK(memchr(err, '\0', sizeof err));
        CHECK(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
    }
    close(fd);

    // Each line as a --set override.
    char line[4200];
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n') continue;
        size_t n = i - start;
        if (n < sizeof line) {
            memcpy(line, data + start, n);
            line[n] = '\0';
            config_defaults(&c);
            memset(err, 0x55, sizeof err);
            if (config_set(&c, line, err, sizeof err) == 0) s_check_strings(&c);
            else CHECK(memchr(err, '\0', sizeof err) && strncmp(err, "--set ", 6) == 0);
        }
        start = i + 1;
    }
    return 0;
}
