#include "model/part.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int s_whole(const part_t *p) { return !p || p->n == 0; }

int part_check(const part_t *p, size_t n, char *err, size_t errlen) {
    if (s_whole(p)) return 0;
    if (p->n < 0 || p->n > PART_MAX) {
        snprintf(err, errlen, "%d parts (at most %d)", p->n, PART_MAX);
        return -1;
    }
    for (int i = 0; i < p->n; i++) {
        if (p->len[i] == 0 || p->off[i] > n || p->len[i] > n - p->off[i]) {
            snprintf(err, errlen, "part %d [%zu, +%zu) is empty or outside [0, %zu)", i, p->off[i], p->len[i], n);
            return -1;
        }
        if (i > 0 && p->off[i] < p->off[i - 1] + p->len[i - 1]) {
            snprintf(err, errlen, "part %d overlaps or precedes part %d", i, i - 1);
            return -1;
        }
    }
    return 0;
}

static size_t s_page(void) {
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

static size_t s_round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Page-rounded byte span [*b, *e) of part i.
static void s_span(const part_t *p, int i, size_t elsize, size_t total, size_t *b, size_t *e) {
    size_t pg = s_page();
    *b = p->off[i] * elsize / pg * pg;
    *e = s_round_up((p->off[i] + p->len[i]) * elsize, pg);
    if (*e > total) *e = total;
}

void *part_alloc(size_t n, size_t elsize, const part_t *p) {
    if (s_whole(p)) {
        size_t bytes = s_round_up(n * elsize, 64);
        void *b = aligned_alloc(64, bytes ? bytes : 64);
        if (b) memset(b, 0, bytes ? bytes : 64);
        return b;
    }
    size_t total = s_round_up(n * elsize > 0 ? n * elsize : 1, s_page());
    // Address space only: a PROT_NONE private mapping is not charged against memory.
    void *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return NULL;
    for (int i = 0; i < p->n; i++) {
        size_t b, e;
        s_span(p, i, elsize, total, &b, &e);
        // Fresh anonymous pages read as zero, so the parts start zeroed.
        if (e > b && mprotect((uint8_t *)base + b, e - b, PROT_READ | PROT_WRITE) != 0) {
            munmap(base, total);
            return NULL;
        }
    }
    return base;
}

void part_free(void *buf, size_t n, size_t elsize, const part_t *p) {
    if (!buf) return;
    if (s_whole(p)) {
        free(buf);
        return;
    }
    munmap(buf, s_round_up(n * elsize > 0 ? n * elsize : 1, s_page()));
}

size_t part_bytes(size_t n, size_t elsize, const part_t *p) {
    if (s_whole(p)) return n * elsize;
    size_t total = s_round_up(n * elsize > 0 ? n * elsize : 1, s_page()), k = 0, last = 0;
    for (int i = 0; i < p->n; i++) {
        size_t b, e;
        s_span(p, i, elsize, total, &b, &e);
        if (b < last) b = last; // two parts sharing a page
        if (e > b) k += e - b;
        last = e;
    }
    return k;
}
