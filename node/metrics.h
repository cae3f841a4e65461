// The metrics JSONL file: one JSON object per line, in the schema of docs/metrics.md.
// Every record starts with "kind", "time" (unix seconds), "peer" (id prefix), "step" (inner step),
// then the record's own fields.
#ifndef LOCO_NODE_METRICS_H
#define LOCO_NODE_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char peer[17];
    struct prom *prom; // loco run: the registry the Prometheus endpoint and loco status read (node/telemetry.h); NULL = none
} metrics_t;

// Opens path for appending (NULL or "" = metrics off: writes become no-ops). 0 or -1 with err.
int metrics_open(metrics_t *m, const char *path, const char *peer, char *err, size_t errlen);
void metrics_close(metrics_t *m);
// Writes one record; fields_fmt formats the record's own fields as JSON members without braces,
// e.g. "\"loss\":%.6f". The line is flushed so a crash loses nothing written.
void metrics_write(metrics_t *m, const char *kind, uint64_t step, const char *fields_fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Wall-clock seconds (CLOCK_REALTIME) and a monotonic clock for durations.
double metrics_now(void);
double metrics_mono(void);

#endif
