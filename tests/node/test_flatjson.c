// The flat JSON reader behind `loco plot`: every record kind loco writes parses with its values;
// what is not a flat JSON object is refused with the column and the reason; it never reads past the
// given length.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/flatjson.h"

static flatjson_record_t s_rec;
static char s_err[256];

static int s_parse(const char *text) {
    s_err[0] = '\0';
    return flatjson_parse(text, strlen(text), &s_rec, s_err, sizeof s_err);
}

static void s_expect_error(const char *text, int column, const char *frag) {
    cr_assert_eq(s_parse(text), -1, "accepted: %s", text);
    char col[32];
    snprintf(col, sizeof col, "column %d: ", column);
    cr_expect(strstr(s_err, col) == s_err, "%s: '%s' does not start with '%s'", text, s_err, col);
    cr_expect(strstr(s_err, frag) != NULL, "%s: '%s' does not say '%s'", text, s_err, frag);
}

Test(flatjson, records_loco_writes) {
    // Lines as node/metrics.c writes them (docs/metrics.md's examples).
    cr_assert_eq(s_parse("{\"kind\":\"outer\",\"time\":1795750000.123,\"peer\":\"8aa9b4c04fb0174c\",\"step\":50,"
                         "\"round\":0,\"algorithm\":\"noloco\",\"result\":\"mean\",\"group\":[\"54a14bd8ceb51f2f\"],"
                         "\"contributors\":2,\"early\":false,\"short\":false,\"bytes_sent\":965004,"
                         "\"utilisation\":0.9712,\"overlap\":true}"),
                 0, "%s", s_err);
    cr_expect_str_eq(flatjson_str(&s_rec, "kind"), "outer");
    cr_expect_str_eq(flatjson_str(&s_rec, "peer"), "8aa9b4c04fb0174c");
    double v = 0;
    cr_expect_eq(flatjson_num(&s_rec, "time", &v), 0);
    cr_expect_float_eq(v, 1795750000.123, 1e-6);
    cr_expect_eq(flatjson_num(&s_rec, "bytes_sent", &v), 0);
    cr_expect_eq(v, 965004);
    const flatjson_field_t *g = flatjson_get(&s_rec, "group");
    cr_assert_not_null(g);
    cr_expect_eq(g->type, FLATJSON_ARRAY);
    cr_expect_eq(g->num, 1);
    const flatjson_field_t *o = flatjson_get(&s_rec, "overlap"), *e = flatjson_get(&s_rec, "early");
    cr_expect(o && o->type == FLATJSON_BOOL && o->num == 1);
    cr_expect(e && e->type == FLATJSON_BOOL && e->num == 0);
    cr_expect_eq(flatjson_num(&s_rec, "kind", &v), -1, "a string is not a number");
    cr_expect_null(flatjson_str(&s_rec, "time"), "a number is not a string");
    cr_expect_null(flatjson_get(&s_rec, "missing"));

    cr_assert_eq(s_parse("{\"kind\":\"step\",\"time\":1.5,\"peer\":\"local\",\"step\":10,\"loss\":4.818300,\"lr\":0.0003}\r\n"), 0);
    cr_expect_eq(flatjson_num(&s_rec, "lr", &v), 0);
    cr_expect_float_eq(v, 3e-4, 1e-12);
    cr_expect_eq(s_rec.n, 6);
}

Test(flatjson, json_values) {
    cr_assert_eq(s_parse("  { \"a\" : -0.5e+2 , \"b\":0, \"c\":1E-3, \"d\":null, \"e\":[], \"f\":[1, \"x\", true, null],"
                         "\"g\":\"\" }  "), 0, "%s", s_err);
    double v;
    cr_expect(flatjson_num(&s_rec, "a", &v) == 0 && v == -50);
    cr_expect(flatjson_num(&s_rec, "b", &v) == 0 && v == 0);
    cr_expect(flatjson_num(&s_rec, "c", &v) == 0 && fabs(v - 1e-3) < 1e-15);
    cr_expect_eq(flatjson_get(&s_rec, "d")->type, FLATJSON_NULL);
    cr_expect_eq(flatjson_get(&s_rec, "e")->num, 0);
    cr_expect_eq(flatjson_get(&s_rec, "f")->num, 4);
    cr_expect_str_eq(flatjson_str(&s_rec, "g"), "");
    cr_assert_eq(s_parse("{}"), 0);
    cr_expect_eq(s_rec.n, 0);
    // printf's spellings of a diverged loss.
    cr_assert_eq(s_parse("{\"a\":nan,\"b\":-nan,\"c\":inf,\"d\":-inf}"), 0, "%s", s_err);
    cr_expect(flatjson_num(&s_rec, "a", &v) == 0 && isnan(v));
    cr_expect(flatjson_num(&s_rec, "b", &v) == 0 && isnan(v));
    cr_expect(flatjson_num(&s_rec, "c", &v) == 0 && isinf(v) && v > 0);
    cr_expect(flatjson_num(&s_rec, "d", &v) == 0 && isinf(v) && v < 0);
}

Test(flatjson, escapes) {
    cr_assert_eq(s_parse("{\"k\\\"ey\":\"a\\\\b\\/c\\n\\t\\u00e9\\u20ac\\ud83d\\ude00\\ud800x\"}"), 0, "%s", s_err);
    cr_expect_str_eq(s_rec.f[0].key, "k\"ey");
    cr_expect_str_eq(s_rec.f[0].str, "a\\b/c\n\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbdx");
    // A key with an escaped NUL cannot be matched by a C string: it never matches "kind".
    cr_assert_eq(s_parse("{\"kind\\u0000x\":\"step\"}"), 0);
    cr_expect_null(flatjson_get(&s_rec, "kind"));
}

Test(flatjson, long_keys_and_strings_are_truncated_not_matched) {
    char line[600];
    snprintf(line, sizeof line, "{\"%0100d\":1,\"s\":\"%0300d\"}", 0, 0);
    cr_assert_eq(s_parse(line), 0, "%s", s_err);
    cr_expect(s_rec.f[0].key_truncated);
    cr_expect_eq(strlen(s_rec.f[0].key), FLATJSON_KEY_MAX - 1);
    cr_expect(s_rec.f[1].str_truncated);
    cr_expect_eq(strlen(s_rec.f[1].str), FLATJSON_STR_MAX - 1);
    char key[FLATJSON_KEY_MAX];
    memcpy(key, s_rec.f[0].key, sizeof key);
    cr_expect_null(flatjson_get(&s_rec, key), "a truncated key matched");
}

Test(flatjson, malformed_lines_name_the_column) {
    s_expect_error("", 1, "empty record");
    s_expect_error("   ", 4, "empty record");
    s_expect_error("[1,2]", 1, "expected '{'");
    s_expect_error("{\"kind\":\"step\",\"time\":1.5", 26, "unterminated object");
    s_expect_error("{\"kind\":\"step\" \"time\":1}", 16, "expected ',' or '}'");
    s_expect_error("{kind:1}", 2, "expected a key");
    s_expect_error("{\"kind\" 1}", 9, "expected ':'");
    s_expect_error("{\"a\":}", 6, "expected a value");
    s_expect_error("{\"a\":", 6, "found the end of the line");
    s_expect_error("{\"a\":01}", 7, "expected ',' or '}'");
    s_expect_error("{\"a\":1.}", 8, "digit after '.'");
    s_expect_error("{\"a\":1e}", 8, "exponent");
    s_expect_error("{\"a\":+1}", 6, "expected a value");
    s_expect_error("{\"a\":tru}", 6, "expected a value");
    s_expect_error("{\"a\":\"x}", 9, "unterminated string");
    s_expect_error("{\"a\":\"x\ty\"}", 8, "control character");
    s_expect_error("{\"a\":\"\\q\"}", 8, "unknown escape");
    s_expect_error("{\"a\":\"\\u12\"}", 11, "four hex digits");
    s_expect_error("{\"a\":{\"b\":1}}", 6, "nested objects");
    s_expect_error("{\"a\":[[1]]}", 7, "nested arrays");
    s_expect_error("{\"a\":[1 2]}", 9, "expected ',' or ']'");
    s_expect_error("{\"a\":1}}", 8, "text after the end");
    s_expect_error("{\"a\":1,}", 8, "expected a key");
    char many[2000] = "{";
    for (int i = 0; i <= FLATJSON_MAX_FIELDS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s\"k%d\":1", i ? "," : "", i);
    strcat(many, "}");
    cr_assert_eq(s_parse(many), -1);
    cr_expect(strstr(s_err, "more than 64 fields"), "%s", s_err);
}

Test(flatjson, never_reads_past_len) {
    // The buffer holds exactly the record, without a terminating NUL, at the end of a heap block
    // (AddressSanitizer catches a read past it); every prefix is parsed too.
    const char *text = "{\"kind\":\"eval\",\"val\":-1.25e-3,\"s\":\"\\u00e9\",\"g\":[1,\"a\"],\"n\":-nan}";
    size_t n = strlen(text);
    for (size_t k = 0; k <= n; k++) {
        char *buf = malloc(k ? k : 1);
        memcpy(buf, text, k);
        int rc = flatjson_parse(buf, k, &s_rec, s_err, sizeof s_err);
        cr_expect_eq(rc, k == n ? 0 : -1, "prefix of %zu bytes: rc %d (%s)", k, rc, s_err);
        free(buf);
    }
}
