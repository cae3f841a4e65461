#include "node/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

int metrics_open(metrics_t *m, const char *path, const char *peer, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    snprintf(m->peer, sizeof m->peer, "%s", peer ? peer : "local");
    if (!path || !*path) return 0;
    m->f = fopen(path, "a");
    if (!m->f) {
        snprintf(err, errlen, "%s: cannot open metrics file: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void metrics_close(metrics_t *m) {
    if (m->f) fclose(m->f);
    m->f = NULL;
}

void metrics_write(metrics_t *m, const char *kind, uint64_t step, const char *fields_fmt, ...) {
    if (!m->f) return;
    char fields[1536];
    va_list ap;
    va_start(ap, fields_fmt);
    vsnprintf(fields, sizeof fields, fields_fmt, ap);
    va_end(ap);
    fprintf(m->f, "{\"kind\":\"%s\",\"time\":%.3f,\"peer\":\"%s\",\"step\":%llu%s%s}\n", kind,
            metrics_now(), m->peer, (unsigned long long)step, fields[0] ? "," : "", fields);
    fflush(m->f);
}

double metrics_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double metrics_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
