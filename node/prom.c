#include "node/prom.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_LABELS_MAX 1024
#define PROM_NOTES 32

typedef struct {
    char *labels;                      // rendered label pairs without braces: a="x",b="y" ("" for none)
    double value;                      // counter, gauge
    double sum;                        // histogram
    uint64_t count;
    uint64_t bucket[PROM_MAX_BUCKETS]; // histogram: observations in (bound[i-1], bound[i]], not cumulative
} series_t;

typedef struct {
    char name[96];
    prom_type_t type;
    char *help;
    double bound[PROM_MAX_BUCKETS];
    int nb;
    series_t *series;                  // PROM_MAX_SERIES slots, allocated at declare
    int ns;
} family_t;

struct prom {
    pthread_mutex_t mu;
    family_t fam[PROM_MAX_FAMILIES];
    int nf;
    struct { char key[32]; char text[1024]; } note[PROM_NOTES];
    int nnotes;
};

prom_t *prom_new(void) {
    prom_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void prom_destroy(prom_t **self_p) {
    if (!self_p || !*self_p) return;
    prom_t *p = *self_p;
    for (int i = 0; i < p->nf; i++) {
        for (int j = 0; j < p->fam[i].ns; j++) free(p->fam[i].series[j].labels);
        free(p->fam[i].series);
        free(p->fam[i].help);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
    *self_p = NULL;
}

// [a-zA-Z_:][a-zA-Z0-9_:]* for metric names (colon allowed), [a-zA-Z_][a-zA-Z0-9_]* for labels.
static int s_valid_name(const char *s, int colon) {
    if (!s || !*s) return 0;
    for (const char *c = s; *c; c++) {
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || (colon && *c == ':') ||
                 (c > s && *c >= '0' && *c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

size_t prom_escape_label(const char *in, char *out, size_t outlen) {
    size_t n = 0;
    for (const char *c = in; *c; c++) {
        const char *rep = NULL;
        char one[2] = {*c, 0};
        if (*c == '\\') rep = "\\\\";
        else if (*c == '"') rep = "\\\"";
        else if (*c == '\n') rep = "\\n";
        else rep = one;
        for (const char *r = rep; *r; r++, n++)
            if (outlen && n < outlen - 1) out[n] = *r;
    }
    if (outlen) out[n < outlen - 1 ? n : outlen - 1] = '\0';
    return n;
}

size_t prom_escape_help(const char *in, char *out, size_t outlen) {
    size_t n = 0;
    for (const char *c = in; *c; c++) {
        const char *rep = NULL;
        char one[2] = {*c, 0};
        if (*c == '\\') rep = "\\\\";
        else if (*c == '\n') rep = "\\n";
        else rep = one;
        for (const char *r = rep; *r; r++, n++)
            if (outlen && n < outlen - 1) out[n] = *r;
    }
    if (outlen) out[n < outlen - 1 ? n : outlen - 1] = '\0';
    return n;
}

void prom_format_value(double v, char *out, size_t outlen) {
    if (!out || outlen == 0) return;
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) { // integers as integers: "10", not "1e+01"
        snprintf(out, outlen, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) { // the shortest text that reads back as the same double
        snprintf(out, outlen, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static family_t *s_family(prom_t *p, const char *name) {
    for (int i = 0; i < p->nf; i++)
        if (!strcmp(p->fam[i].name, name)) return &p->fam[i];
    return NULL;
}

int prom_declare(prom_t *p, const char *name, prom_type_t type, const char *help, const double *buckets,
                 int nbuckets) {
    if (!p) return 0;
    if (!s_valid_name(name, 1) || strlen(name) >= sizeof p->fam[0].name) return -1;
    if (type == PROM_HISTOGRAM) {
        if (!buckets || nbuckets < 1 || nbuckets > PROM_MAX_BUCKETS) return -1;
        for (int i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) return -1;
    } else if (nbuckets != 0) {
        return -1;
    }
    pthread_mutex_lock(&p->mu);
    int rc = -1;
    if (p->nf < PROM_MAX_FAMILIES && !s_family(p, name)) {
        family_t *f = &p->fam[p->nf];
        memset(f, 0, sizeof *f);
        f->series = calloc(PROM_MAX_SERIES, sizeof *f->series);
        f->help = strdup(help ? help : "");
        if (f->series && f->help) {
            snprintf(f->name, sizeof f->name, "%s", name);
            f->type = type;
            f->nb = type == PROM_HISTOGRAM ? nbuckets : 0;
            for (int i = 0; i < f->nb; i++) f->bound[i] = buckets[i];
            p->nf++;
            rc = 0;
        } else {
            free(f->series);
            free(f->help);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

// Renders a label list into out (name="escaped",...). 0, or -1 for a bad name or an odd list.
static int s_labels(const char *const *labels, char *out, size_t outlen) {
    size_t n = 0;
    out[0] = '\0';
    if (!labels) return 0;
    for (int i = 0; labels[i]; i += 2) {
        if (!labels[i + 1] || !s_valid_name(labels[i], 0) || !strcmp(labels[i], "le")) return -1;
        char esc[PROM_LABELS_MAX];
        if (prom_escape_label(labels[i + 1], esc, sizeof esc) >= sizeof esc) return -1;
        int w = snprintf(out + n, outlen - n, "%s%s=\"%s\"", i ? "," : "", labels[i], esc);
        if (w < 0 || (size_t)w >= outlen - n) return -1;
        n += (size_t)w;
    }
    return 0;
}

// The series of f with these labels (created when create). NULL when absent, bad or full.
static series_t *s_series(family_t *f, const char *const *labels, int create) {
    char key[PROM_LABELS_MAX];
    if (s_labels(labels, key, sizeof key) != 0) return NULL;
    for (int i = 0; i < f->ns; i++)
        if (!strcmp(f->series[i].labels, key)) return &f->series[i];
    if (!create || f->ns == PROM_MAX_SERIES) return NULL;
    series_t *s = &f->series[f->ns];
    memset(s, 0, sizeof *s);
    if (!(s->labels = strdup(key))) return NULL;
    f->ns++;
    return s;
}

enum { OP_SET, OP_ADD, OP_OBSERVE };

static int s_update(prom_t *p, const char *name, const char *const *labels, double v, int op) {
    if (!p) return 0;
    pthread_mutex_lock(&p->mu);
    int rc = -1;
    family_t *f = s_family(p, name);
    int ok = f && (op == OP_OBSERVE ? f->type == PROM_HISTOGRAM : f->type != PROM_HISTOGRAM);
    series_t *s = ok ? s_series(f, labels, 1) : NULL;
    if (s) {
        rc = 0;
        if (op == OP_SET) s->value = v;
        else if (op == OP_ADD) s->value += v;
        else if (!isfinite(v)) rc = -1; // a NaN would poison the sum forever
        else {
            int i = 0;
            while (i < f->nb && v > f->bound[i]) i++;
            if (i < f->nb) s->bucket[i]++;
            s->count++;
            s->sum += v;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int prom_set(prom_t *p, const char *name, const char *const *labels, double v) {
    return s_update(p, name, labels, v, OP_SET);
}
int prom_add(prom_t *p, const char *name, const char *const *labels, double v) {
    return s_update(p, name, labels, v, OP_ADD);
}
int prom_observe(prom_t *p, const char *name, const char *const *labels, double v) {
    return s_update(p, name, labels, v, OP_OBSERVE);
}

int prom_clear(prom_t *p, const char *name) {
    if (!p) return 0;
    pthread_mutex_lock(&p->mu);
    family_t *f = s_family(p, name);
    if (f) {
        for (int i = 0; i < f->ns; i++) free(f->series[i].labels);
        f->ns = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return f ? 0 : -1;
}

int prom_get(prom_t *p, const char *name, const char *const *labels, double *v, double *sum) {
    if (!p) return -1;
    pthread_mutex_lock(&p->mu);
    family_t *f = s_family(p, name);
    series_t *s = f ? s_series(f, labels, 0) : NULL;
    if (s) {
        *v = f->type == PROM_HISTOGRAM ? (double)s->count : s->value;
        if (sum) *sum = s->sum;
    }
    pthread_mutex_unlock(&p->mu);
    return s ? 0 : -1;
}

static const char *s_type_name(prom_type_t t) {
    return t == PROM_COUNTER ? "counter" : t == PROM_GAUGE ? "gauge" : "histogram";
}

char *prom_render(prom_t *p, size_t *len) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    if (p) {
        pthread_mutex_lock(&p->mu);
        char val[40], le[40];
        for (int i = 0; i < p->nf; i++) {
            const family_t *fm = &p->fam[i];
            size_t hl = prom_escape_help(fm->help, NULL, 0);
            char *help = malloc(hl + 1);
            if (help) prom_escape_help(fm->help, help, hl + 1);
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fm->name, help ? help : "", fm->name, s_type_name(fm->type));
            free(help);
            for (int j = 0; j < fm->ns; j++) {
                const series_t *s = &fm->series[j];
                const char *sep = s->labels[0] ? "," : "";
                if (fm->type != PROM_HISTOGRAM) {
                    prom_format_value(s->value, val, sizeof val);
                    if (s->labels[0]) fprintf(f, "%s{%s} %s\n", fm->name, s->labels, val);
                    else fprintf(f, "%s %s\n", fm->name, val);
                    continue;
                }
                uint64_t cum = 0;
                for (int b = 0; b < fm->nb; b++) {
                    cum += s->bucket[b];
                    prom_format_value(fm->bound[b], le, sizeof le);
                    fprintf(f, "%s_bucket{%s%sle=\"%s\"} %llu\n", fm->name, s->labels, sep, le, (unsigned long long)cum);
                }
                fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fm->name, s->labels, sep, (unsigned long long)s->count);
                prom_format_value(s->sum, val, sizeof val);
                if (s->labels[0]) {
                    fprintf(f, "%s_sum{%s} %s\n", fm->name, s->labels, val);
                    fprintf(f, "%s_count{%s} %llu\n", fm->name, s->labels, (unsigned long long)s->count);
                } else {
                    fprintf(f, "%s_sum %s\n", fm->name, val);
                    fprintf(f, "%s_count %llu\n", fm->name, (unsigned long long)s->count);
                }
            }
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len) *len = n;
    return buf;
}

void prom_note_set(prom_t *p, const char *key, const char *text) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    int i = 0;
    while (i < p->nnotes && strcmp(p->note[i].key, key) != 0) i++;
    if (i == p->nnotes && p->nnotes < PROM_NOTES && strlen(key) < sizeof p->note[0].key) {
        snprintf(p->note[i].key, sizeof p->note[i].key, "%s", key);
        p->nnotes++;
    }
    if (i < p->nnotes) snprintf(p->note[i].text, sizeof p->note[i].text, "%s", text ? text : "");
    pthread_mutex_unlock(&p->mu);
}

int prom_note_get(prom_t *p, const char *key, char *out, size_t outlen) {
    if (!p) return -1;
    pthread_mutex_lock(&p->mu);
    int rc = -1;
    for (int i = 0; i < p->nnotes; i++)
        if (!strcmp(p->note[i].key, key)) {
            snprintf(out, outlen, "%s", p->note[i].text);
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&p->mu);
    return rc;
}
