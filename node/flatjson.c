#include "node/flatjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
} parser_t;

static int s_fail(parser_t *p, const char *why) {
    snprintf(p->err, p->errlen, "column %zu: %s", p->pos + 1, why);
    return -1;
}

static void s_ws(parser_t *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
        p->pos++;
    }
}

static int s_peek(const parser_t *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static int s_literal(parser_t *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static int s_hex4(parser_t *p, unsigned *v) {
    if (p->len - p->pos < 4) return s_fail(p, "\\u needs four hex digits");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
        if (d == 16) return s_fail(p, "\\u needs four hex digits");
        *v = *v * 16 + d;
        p->pos++;
    }
    return 0;
}

// Appends the UTF-8 form of cp to out (cap bytes including the NUL); sets *trunc when it does not fit.
static void s_put_utf8(char *out, size_t cap, size_t *n, unsigned cp, int *trunc) {
    char b[4];
    size_t k;
    if (cp < 0x80) b[0] = (char)cp, k = 1;
    else if (cp < 0x800) b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[2] = (char)(0x80 | (cp & 0x3F)), k = 3;
    else
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F)), b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        b[3] = (char)(0x80 | (cp & 0x3F)), k = 4;
    if (*n + k >= cap) {
        *trunc = 1;
        return;
    }
    memcpy(out + *n, b, k);
    *n += k;
}

// A string starting at the opening quote, unescaped into out (cap bytes); out may be NULL to skip.
static int s_string(parser_t *p, char *out, size_t cap, int *trunc) {
    size_t n = 0;
    int dummy = 0;
    if (!trunc) trunc = &dummy;
    *trunc = 0;
    p->pos++; // the opening quote
    for (;;) {
        if (p->pos >= p->len) return s_fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) return s_fail(p, "control character inside a string");
        if (c != '\\') {
            if (out) {
                if (n + 1 < cap) out[n++] = (char)c;
                else *trunc = 1;
            }
            p->pos++;
            continue;
        }
        p->pos++;
        if (p->pos >= p->len) return s_fail(p, "unterminated string");
        char e = p->s[p->pos++];
        unsigned cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (s_hex4(p, &cp) != 0) return -1;
            if (cp >= 0xD800 && cp < 0xDC00 && p->len - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                size_t keep = p->pos;
                unsigned lo;
                p->pos += 2;
                if (s_hex4(p, &lo) != 0) return -1;
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = keep, cp = 0xFFFD; // the second escape is read again on its own
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            break;
        default:
            p->pos--;
            return s_fail(p, "unknown escape in a string");
        }
        if (cp == 0) *trunc = 1; // a NUL cannot be kept in a C string: mark it rather than cut silently
        else if (out) s_put_utf8(out, cap, &n, cp, trunc);
    }
    if (out) out[n] = '\0';
    return 0;
}

// A JSON number (strict grammar), or nan / -nan / inf / -inf as printf writes them.
static int s_number(parser_t *p, double *v) {
    size_t start = p->pos;
    int neg = s_peek(p) == '-';
    if (neg) p->pos++;
    if (s_literal(p, "nan")) {
        *v = NAN;
        return 0;
    }
    if (s_literal(p, "inf")) {
        *v = neg ? -INFINITY : INFINITY;
        return 0;
    }
    int c = s_peek(p);
    if (c == '0') {
        p->pos++;
    } else if (c >= '1' && c <= '9') {
        while ((c = s_peek(p)) >= '0' && c <= '9') p->pos++;
    } else {
        return s_fail(p, "expected a digit");
    }
    if (s_peek(p) == '.') {
        p->pos++;
        if (!((c = s_peek(p)) >= '0' && c <= '9')) return s_fail(p, "expected a digit after '.'");
        while ((c = s_peek(p)) >= '0' && c <= '9') p->pos++;
    }
    if (s_peek(p) == 'e' || s_peek(p) == 'E') {
        p->pos++;
        if (s_peek(p) == '+' || s_peek(p) == '-') p->pos++;
        if (!((c = s_peek(p)) >= '0' && c <= '9')) return s_fail(p, "expected a digit in the exponent");
        while ((c = s_peek(p)) >= '0' && c <= '9') p->pos++;
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf) {
        p->pos = start;
        return s_fail(p, "number longer than 63 characters");
    }
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    *v = strtod(buf, NULL); // the grammar above is a subset of strtod's; overflow gives ±HUGE_VAL
    return 0;
}

// A scalar value into f (f may be NULL: an array element). Returns 0 or -1.
static int s_scalar(parser_t *p, flatjson_field_t *f) {
    int c = s_peek(p);
    double v;
    if (c == '"') {
        if (f) f->type = FLATJSON_STRING;
        return s_string(p, f ? f->str : NULL, FLATJSON_STR_MAX, f ? &f->str_truncated : NULL);
    }
    int yes = s_literal(p, "true");
    if (yes || s_literal(p, "false")) {
        if (f) f->type = FLATJSON_BOOL, f->num = yes;
        return 0;
    }
    if (s_literal(p, "null")) {
        if (f) f->type = FLATJSON_NULL;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9') || c == 'n' || c == 'i') {
        if (s_number(p, &v) != 0) return -1;
        if (f) f->type = FLATJSON_NUMBER, f->num = v;
        return 0;
    }
    if (c == '{') return s_fail(p, "nested objects are not supported in a metrics record");
    if (c == '[') return s_fail(p, "nested arrays are not supported in a metrics record");
    return s_fail(p, c < 0 ? "expected a value, found the end of the line" : "expected a value");
}

static int s_value(parser_t *p, flatjson_field_t *f) {
    if (s_peek(p) != '[') return s_scalar(p, f);
    p->pos++;
    f->type = FLATJSON_ARRAY;
    f->num = 0;
    s_ws(p);
    if (s_peek(p) == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        s_ws(p);
        if (s_scalar(p, NULL) != 0) return -1;
        f->num++;
        s_ws(p);
        int c = s_peek(p);
        p->pos++;
        if (c == ']') return 0;
        if (c != ',') {
            p->pos--;
            return s_fail(p, "expected ',' or ']' in an array");
        }
    }
}

int flatjson_parse(const char *s, size_t len, flatjson_record_t *rec, char *err, size_t errlen) {
    parser_t p = {.s = s, .len = len, .pos = 0, .err = err, .errlen = errlen};
    rec->n = 0;
    s_ws(&p);
    if (s_peek(&p) != '{') return s_fail(&p, p.pos >= len ? "empty record" : "expected '{' (a JSON object)");
    p.pos++;
    s_ws(&p);
    if (s_peek(&p) == '}') {
        p.pos++;
    } else {
        for (;;) {
            s_ws(&p);
            if (s_peek(&p) != '"') return s_fail(&p, "expected a key in double quotes");
            if (rec->n == FLATJSON_MAX_FIELDS) return s_fail(&p, "more than 64 fields");
            flatjson_field_t *f = &rec->f[rec->n];
            memset(f, 0, sizeof *f);
            if (s_string(&p, f->key, sizeof f->key, &f->key_truncated) != 0) return -1;
            s_ws(&p);
            if (s_peek(&p) != ':') return s_fail(&p, "expected ':' after the key");
            p.pos++;
            s_ws(&p);
            if (s_value(&p, f) != 0) return -1;
            rec->n++;
            s_ws(&p);
            int c = s_peek(&p);
            if (c == '}') {
                p.pos++;
                break;
            }
            if (c != ',') return s_fail(&p, c < 0 ? "unterminated object (the line ends before '}')" : "expected ',' or '}'");
            p.pos++;
        }
    }
    s_ws(&p);
    if (p.pos < len) return s_fail(&p, "text after the end of the object");
    return 0;
}

const flatjson_field_t *flatjson_get(const flatjson_record_t *rec, const char *key) {
    for (int i = 0; i < rec->n; i++)
        if (!rec->f[i].key_truncated && !strcmp(rec->f[i].key, key)) return &rec->f[i];
    return NULL;
}

int flatjson_num(const flatjson_record_t *rec, const char *key, double *v) {
    const flatjson_field_t *f = flatjson_get(rec, key);
    if (!f || f->type != FLATJSON_NUMBER) return -1;
    *v = f->num;
    return 0;
}

const char *flatjson_str(const flatjson_record_t *rec, const char *key) {
    const flatjson_field_t *f = flatjson_get(rec, key);
    return f && f->type == FLATJSON_STRING ? f->str : NULL;
}
