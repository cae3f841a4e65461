// A small, strict reader for flat JSON objects: one metrics record per line (docs/metrics.md).
//
// Accepts one object whose values are strings, numbers, true, false, null, or arrays of those
// (the "group" field); nested objects and arrays of arrays are refused (loco never writes them).
// Also accepts the bare tokens nan, -nan, inf and -inf as numbers: C's printf writes them for a
// diverged loss, and a plot of a diverged run should still be drawn. Anything else that is not JSON
// is an error with the byte column (1-based) and what was expected. Never reads past len; the input
// need not be NUL-terminated.
//
// Keys and string values are unescaped (\uXXXX becomes UTF-8; a lone surrogate becomes U+FFFD)
// into fixed buffers: a longer key or string is kept truncated with a flag, and a truncated key
// never matches flatjson_get. Array values keep only their element count.
#ifndef LOCO_NODE_FLATJSON_H
#define LOCO_NODE_FLATJSON_H

#include <stddef.h>

#define FLATJSON_MAX_FIELDS 64
#define FLATJSON_KEY_MAX 48
#define FLATJSON_STR_MAX 96

typedef enum { FLATJSON_STRING, FLATJSON_NUMBER, FLATJSON_BOOL, FLATJSON_NULL, FLATJSON_ARRAY } flatjson_type_t;

typedef struct {
    char key[FLATJSON_KEY_MAX];
    int key_truncated;
    flatjson_type_t type;
    double num;                    // NUMBER; BOOL: 1 or 0; ARRAY: element count
    char str[FLATJSON_STR_MAX];    // STRING
    int str_truncated;
} flatjson_field_t;

typedef struct {
    int n;
    flatjson_field_t f[FLATJSON_MAX_FIELDS];
} flatjson_record_t;

// Parses s[0..len) (surrounding whitespace allowed) into rec. Returns 0, or -1 with
// "column C: reason" in err.
int flatjson_parse(const char *s, size_t len, flatjson_record_t *rec, char *err, size_t errlen);

// The first field named key, or NULL. Borrowed from rec.
const flatjson_field_t *flatjson_get(const flatjson_record_t *rec, const char *key);

// Number of field key, when it is a NUMBER: 0 and *v set, else -1 (absent or another type).
int flatjson_num(const flatjson_record_t *rec, const char *key, double *v);

// String of field key, when it is a STRING, else NULL.
const char *flatjson_str(const flatjson_record_t *rec, const char *key);

#endif
