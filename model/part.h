// Memory for part of a flat buffer: a pipeline stage holds one or two ranges of the model's flat
// parameter layout (its blocks, plus the tied wte at the ends), and so do its gradients and AdamW
// moments. The whole buffer's address space is reserved (PROT_NONE, no memory behind it) and only
// the parts are made readable and writable, so offsets stay those of the full layout while the
// memory committed is the stage's share. A stray access outside the parts faults at once instead of
// silently using memory the stage should not hold.
#ifndef LOCO_MODEL_PART_H
#define LOCO_MODEL_PART_H

#include <stddef.h>

#define PART_MAX 2

typedef struct {
    int n;                    // 0: the whole buffer
    size_t off[PART_MAX];     // in elements, ascending, not overlapping
    size_t len[PART_MAX];
} part_t;

// Checks the parts against a buffer of n elements; -1 with the reason in err.
int part_check(const part_t *p, size_t n, char *err, size_t errlen);

// Zeroed buffer of n elements of elsize bytes, 64-byte aligned. With p whole (or NULL) an ordinary
// allocation; otherwise a reservation with only the parts committed (rounded out to pages).
// Release with part_free(buf, n, elsize, p) — the same n, elsize and p. NULL when out of memory.
void *part_alloc(size_t n, size_t elsize, const part_t *p);
void part_free(void *buf, size_t n, size_t elsize, const part_t *p);
// Bytes of memory the buffer commits (what part_alloc made writable).
size_t part_bytes(size_t n, size_t elsize, const part_t *p);

#endif
