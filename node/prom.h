// A small thread-safe registry of metrics and its Prometheus text exposition (format 0.0.4):
// counters, gauges and histograms with fixed buckets, each family with optional labels.
//
// Families are declared once (name, type, help, buckets); series are created the first time a label
// set is touched. Every update takes the registry's mutex, so any thread may update while another
// renders. A NULL registry is accepted everywhere and does nothing, so code that is also run without
// a metrics endpoint (loco train) calls the same hooks.
//
// Labels are given as a NULL-terminated array of name/value pairs, e.g. PROM_L("type", "outer"), or
// NULL for none. Values are escaped on output (backslash, double quote, newline); names must match
// [a-zA-Z_][a-zA-Z0-9_]*. A registry also keeps short text notes (e.g. the current group) that
// loco status shows; notes are never part of the exposition.
#ifndef LOCO_NODE_PROM_H
#define LOCO_NODE_PROM_H

#include <stddef.h>

typedef enum { PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM } prom_type_t;

typedef struct prom prom_t;

#define PROM_MAX_FAMILIES 96
#define PROM_MAX_BUCKETS 24
#define PROM_MAX_SERIES 64 // per family: label sets beyond this are dropped (bounded memory)

// A label list literal: PROM_L("state", "alive") or PROM_L("a", x, "b", y).
#define PROM_L(...) ((const char *const[]){__VA_ARGS__, NULL})

prom_t *prom_new(void);
void prom_destroy(prom_t **self_p);

// Declares a family. buckets: ascending finite upper bounds of a histogram (+Inf is implied), at
// most PROM_MAX_BUCKETS; NULL/0 for other types. Returns 0, or -1 for a bad name, a duplicate, a
// bad bucket list or a full registry (programmer errors: the caller's tests catch them).
int prom_declare(prom_t *p, const char *name, prom_type_t type, const char *help, const double *buckets,
                 int nbuckets);

// Updates one series (created on first use). set: gauges, and counters mirrored from a cumulative
// source (the caller keeps them monotonic); add: counters and gauges; observe: histograms.
// Return 0, or -1 for an unknown family, a type mismatch, bad labels or a full family.
int prom_set(prom_t *p, const char *name, const char *const *labels, double v);
int prom_add(prom_t *p, const char *name, const char *const *labels, double v);
int prom_observe(prom_t *p, const char *name, const char *const *labels, double v);
// Removes every series of a family (e.g. before re-publishing a changing label set).
int prom_clear(prom_t *p, const char *name);

// Reads a series: the value of a counter or gauge, the observation count of a histogram (and its sum
// in *sum when sum is not NULL). Returns 0, or -1 when the family or series does not exist.
int prom_get(prom_t *p, const char *name, const char *const *labels, double *v, double *sum);

// The exposition of every family, in declaration order: "# HELP", "# TYPE", then one line per
// series (histograms: _bucket{le=...} cumulative, _sum, _count). A family without series shows its
// HELP and TYPE only. Returns a malloc'd NUL-terminated text (the caller frees it) and its length in
// *len, or NULL when out of memory.
char *prom_render(prom_t *p, size_t *len);

// Notes: key (at most 31 characters) → text (truncated to 1023). get returns 0, or -1 when unset.
void prom_note_set(prom_t *p, const char *key, const char *text);
int prom_note_get(prom_t *p, const char *key, char *out, size_t outlen);

// Escaping, exposed for tests. label: backslash → \\, " → \", newline → \n. help: backslash and
// newline only. Writes at most outlen bytes with the terminating NUL (truncating) and returns the
// full escaped length.
size_t prom_escape_label(const char *in, char *out, size_t outlen);
size_t prom_escape_help(const char *in, char *out, size_t outlen);
// A sample value as the exposition writes it: shortest round-trip decimal, NaN, +Inf, -Inf.
void prom_format_value(double v, char *out, size_t outlen);

#endif
