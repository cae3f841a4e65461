// Checkpoint files and directories: round trip, refusal of every corruption with a reason, atomic
// replacement, retention, and resolution of a directory to its newest complete checkpoint.
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/checkpoint.h"
#include "node/trainer.h"

static char s_dir[64];

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/loco_test_ckpt_XXXXXX");
    cr_assert(mkdtemp(s_dir));
}

static void s_teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", s_dir);
}

TestSuite(ckpt, .init = s_setup, .fini = s_teardown);

static const char *s_path(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", s_dir, name);
    return p[k];
}

static uint8_t *s_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void s_write(const char *path, const uint8_t *b, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

// A small checkpoint with a few sections, one of them empty; saved to path.
static const float s_params[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-7f, -0.0f};
static const char s_note[] = "run-name";
static void s_save_small(const char *path, uint64_t tag) {
    ckpt_t c = {0};
    static uint8_t t[8];
    ckpt_put_u64(t, tag);
    cr_assert_eq(ckpt_add(&c, "params", s_params, sizeof s_params), 0);
    cr_assert_eq(ckpt_add(&c, "empty", "", 0), 0);
    cr_assert_eq(ckpt_add(&c, "run_name", s_note, strlen(s_note)), 0);
    cr_assert_eq(ckpt_add(&c, "tag", t, 8), 0);
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof err), 0, "%s", err);
}

// Appends a correct SHA-256 trailer to body (len bytes; body must have room for 32 more).
static size_t s_seal(uint8_t *body, size_t len) {
    unsigned int dl = 0;
    EVP_Digest(body, len, body + len, &dl, EVP_sha256(), NULL);
    return len + 32;
}

static void s_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// ---------------------------------------------------------------------------------------------
// Files

Test(ckpt, roundtrip_and_layout) {
    const char *p = s_path("a.bin");
    s_save_small(p, 42);
    ckpt_t c;
    char err[512];
    cr_assert_eq(ckpt_load(&c, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.n, 4);
    size_t len = 0;
    const uint8_t *d = ckpt_get(&c, "params", &len);
    cr_assert_not_null(d);
    cr_expect_eq(len, sizeof s_params);
    cr_expect_arr_eq(d, s_params, sizeof s_params); // bit-exact, -0.0 included
    cr_expect_not_null(ckpt_get(&c, "empty", &len));
    cr_expect_eq(len, 0);
    d = ckpt_get(&c, "run_name", &len);
    cr_expect(len == strlen(s_note) && memcmp(d, s_note, len) == 0);
    cr_expect_eq(ckpt_get_u64(ckpt_get(&c, "tag", NULL)), 42);
    cr_expect_null(ckpt_get(&c, "missing", &len));
    // The documented layout: magic, version, count, sections, SHA-256 of all before it.
    size_t flen;
    uint8_t *raw = s_read(p, &flen);
    size_t want = 16 + (1 + 6 + 8 + sizeof s_params) + (1 + 5 + 8) + (1 + 8 + 8 + strlen(s_note)) + (1 + 3 + 8 + 8) + 32;
    cr_expect_eq(flen, want);
    cr_expect(memcmp(raw, "LOCOCKPT", 8) == 0);
    cr_expect(raw[8] == CKPT_VERSION && raw[9] == 0 && raw[12] == 4);
    uint8_t md[32];
    unsigned int dl;
    EVP_Digest(raw, flen - 32, md, &dl, EVP_sha256(), NULL);
    cr_expect(memcmp(md, raw + flen - 32, 32) == 0);
    cr_expect(memcmp(c.digest, md, 32) == 0);
    free(raw);
    ckpt_free(&c);
    cr_expect_null(c.file);
    // No temp file is left beside it.
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    cr_expect_neq(access(tmp, F_OK), 0);
}

Test(ckpt, add_limits) {
    ckpt_t c = {0};
    char name[80];
    memset(name, 'n', sizeof name);
    name[64] = '\0';
    cr_expect_eq(ckpt_add(&c, name, "", 0), -1, "a 64-character name does not fit");
    name[63] = '\0';
    cr_expect_eq(ckpt_add(&c, name, "", 0), 0);
    cr_expect_eq(ckpt_add(&c, "", "", 0), -1);
    while (c.n < CKPT_MAX_SECTIONS) cr_assert_eq(ckpt_add(&c, "s", "", 0), 0);
    cr_expect_eq(ckpt_add(&c, "one_too_many", "", 0), -1);
    char err[512];
    const char *p = s_path("full.bin");
    cr_assert_eq(ckpt_save(&c, p, err, sizeof err), 0, "%s", err);
    ckpt_t r;
    cr_assert_eq(ckpt_load(&r, p, err, sizeof err), 0, "%s", err);
    cr_expect_eq(r.n, CKPT_MAX_SECTIONS);
    cr_expect_str_eq(r.sec[0].name, name);
    ckpt_free(&r);
}

Test(ckpt, every_flipped_byte_is_refused) {
    const char *p = s_path("a.bin");
    s_save_small(p, 7);
    size_t len;
    uint8_t *raw = s_read(p, &len);
    ckpt_t c;
    char err[512];
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            raw[i] ^= (uint8_t)(1u << bit);
            err[0] = '\0';
            cr_assert_eq(ckpt_parse(&c, raw, len, err, sizeof err), -1, "a flip of bit %d of byte %zu was accepted", bit, i);
            cr_assert(err[0], "no reason given for byte %zu", i);
            if (i >= 16) cr_assert(strstr(err, "SHA-256 mismatch"), "byte %zu: %s", i, err);
            raw[i] ^= (uint8_t)(1u << bit);
        }
    }
    cr_assert_eq(ckpt_parse(&c, raw, len, err, sizeof err), 0, "%s", err);
    // Through the file API the message names the file.
    raw[len / 2] ^= 0x10;
    s_write(p, raw, len);
    cr_expect_eq(ckpt_load(&c, p, err, sizeof err), -1);
    char want[400];
    snprintf(want, sizeof want, "%s: SHA-256 mismatch: the file is corrupted or truncated", p);
    cr_expect_str_eq(err, want);
    cr_expect_null(c.file);
    free(raw);
}

Test(ckpt, every_truncation_and_extension_is_refused) {
    const char *p = s_path("a.bin");
    s_save_small(p, 7);
    size_t len;
    uint8_t *raw = s_read(p, &len);
    raw = realloc(raw, len + 1);
    ckpt_t c;
    char err[512];
    for (size_t n = 0; n < len; n++)
        cr_assert_eq(ckpt_parse(&c, raw, n, err, sizeof err), -1, "a checkpoint cut to %zu bytes was accepted", n);
    raw[len] = 0;
    cr_expect_eq(ckpt_parse(&c, raw, len + 1, err, sizeof err), -1);
    cr_expect_eq(ckpt_parse(&c, raw, 10, err, sizeof err), -1);
    cr_expect(strstr(err, "truncated: 10 bytes") != NULL, "%s", err);
    free(raw);
}

Test(ckpt, bad_magic_and_version) {
    const char *p = s_path("a.bin");
    s_save_small(p, 7);
    size_t len;
    uint8_t *raw = s_read(p, &len);
    ckpt_t c;
    char err[512];
    raw[0] = 'X';
    cr_expect_eq(ckpt_parse(&c, raw, len, err, sizeof err), -1);
    cr_expect_str_eq(err, "not a loco checkpoint (bad magic)");
    raw[0] = 'L';
    s_le32(raw + 8, 2);
    s_seal(raw, len - 32); // a correct hash: the version check itself refuses it
    cr_expect_eq(ckpt_parse(&c, raw, len, err, sizeof err), -1);
    cr_expect(strstr(err, "checkpoint version 2 is not supported") != NULL, "%s", err);
    free(raw);
}

// Crafted images with a valid hash but a bad section table: each is refused with its reason.
static void s_expect_table_error(const uint8_t *body, size_t blen, const char *frag) {
    uint8_t buf[512];
    cr_assert_lt(blen + 32, sizeof buf);
    memcpy(buf, body, blen);
    size_t len = s_seal(buf, blen);
    ckpt_t c;
    char err[512] = "";
    cr_expect_eq(ckpt_parse(&c, buf, len, err, sizeof err), -1, "accepted a table that should fail with '%s'", frag);
    cr_expect(strstr(err, frag) != NULL, "expected '%s' in: %s", frag, err);
}

static size_t s_hdr(uint8_t *b, uint32_t n) {
    memcpy(b, "LOCOCKPT", 8);
    s_le32(b + 8, CKPT_VERSION);
    s_le32(b + 12, n);
    return 16;
}

Test(ckpt, bad_section_tables_are_refused) {
    uint8_t b[256];
    size_t n;
    n = s_hdr(b, CKPT_MAX_SECTIONS + 1);
    s_expect_table_error(b, n, "65 sections exceed the limit of 64");
    n = s_hdr(b, 0xffffffffu);
    s_expect_table_error(b, n, "sections exceed the limit");
    n = s_hdr(b, 1);
    s_expect_table_error(b, n, "truncated section table");
    b[n++] = 0;
    s_expect_table_error(b, n, "section 0: bad name length 0");
    n = s_hdr(b, 1);
    b[n++] = 64;
    memset(b + n, 'a', 64);
    n += 64;
    memset(b + n, 0, 8);
    s_expect_table_error(b, n + 8, "section 0: bad name length 64");
    n = s_hdr(b, 1);
    b[n++] = 3;
    memcpy(b + n, "abc", 3);
    n += 3;
    s_expect_table_error(b, n + 4, "truncated section table"); // half a length field
    b[n - 2] = '\0'; // "a\0c": would read as "a"
    ckpt_put_u64(b + n, 0);
    s_expect_table_error(b, n + 8, "section 0: name holds a NUL byte");
    b[n - 2] = 'b';
    ckpt_put_u64(b + n, 5);
    s_expect_table_error(b, n + 8 + 4, "section 'abc': length 5 runs past the end of the file");
    ckpt_put_u64(b + n, UINT64_MAX);
    s_expect_table_error(b, n + 8 + 4, "section 'abc': length 18446744073709551615 runs past the end");
    ckpt_put_u64(b + n, 4);
    memset(b + n + 8, 'x', 6);
    s_expect_table_error(b, n + 8 + 6, "2 unexpected bytes after the last section");
    n = s_hdr(b, 0);
    s_expect_table_error(b, n + 1, "1 unexpected bytes after the last section");
    // And the well-formed versions of the same tables are accepted.
    uint8_t ok[64];
    size_t m = s_hdr(ok, 1);
    ok[m++] = 3;
    memcpy(ok + m, "abc", 3);
    m += 3;
    ckpt_put_u64(ok + m, 4);
    memcpy(ok + m + 8, "wxyz", 4);
    m = s_seal(ok, m + 12);
    ckpt_t c;
    char err[512];
    cr_expect_eq(ckpt_parse(&c, ok, m, err, sizeof err), 0, "%s", err);
    size_t l;
    cr_expect(ckpt_get(&c, "abc", &l) == ok + 16 + 1 + 3 + 8 && l == 4);
    m = s_seal(ok, s_hdr(ok, 0));
    cr_expect_eq(ckpt_parse(&c, ok, m, err, sizeof err), 0, "%s", err);
    cr_expect_eq(c.n, 0);
}

Test(ckpt, load_of_a_missing_file) {
    ckpt_t c;
    char err[512];
    const char *p = s_path("nope.bin");
    cr_expect_eq(ckpt_load(&c, p, err, sizeof err), -1);
    cr_expect(strstr(err, p) && strstr(err, "No such file"), "%s", err);
}

Test(ckpt, failed_save_leaves_the_previous_file) {
    const char *p = s_path("a.bin");
    s_save_small(p, 1);
    size_t len0;
    uint8_t *before = s_read(p, &len0);
    // The temp file cannot be created (a directory stands in its place).
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    cr_assert_eq(mkdir(tmp, 0755), 0);
    ckpt_t c = {0};
    ckpt_add(&c, "params", "zzzz", 4);
    char err[512] = "";
    cr_expect_eq(ckpt_save(&c, p, err, sizeof err), -1);
    cr_expect(strstr(err, tmp) && strstr(err, "cannot create"), "%s", err);
    size_t len1;
    uint8_t *after = s_read(p, &len1);
    cr_expect(len0 == len1 && memcmp(before, after, len0) == 0, "the previous checkpoint was changed");
    free(before);
    free(after);
    // A missing directory is reported too.
    cr_expect_eq(ckpt_save(&c, s_path("no/such/dir/a.bin"), err, sizeof err), -1);
    cr_expect(strstr(err, "No such file or directory") != NULL, "%s", err);
}

// ---------------------------------------------------------------------------------------------
// Directories

static void s_dir_save(const char *dir, uint64_t step, int keep) {
    ckpt_t c = {0};
    static uint8_t t[8];
    ckpt_put_u64(t, step);
    ckpt_add(&c, "params", s_params, sizeof s_params);
    ckpt_add(&c, "tag", t, 8);
    char err[512], out[1200];
    cr_assert_eq(ckpt_dir_save(&c, dir, step, keep, out, sizeof out, err, sizeof err), 0, "%s", err);
    char want[1200];
    snprintf(want, sizeof want, "%s/ckpt_%012llu.bin", dir, (unsigned long long)step);
    cr_expect_str_eq(out, want);
}

static uint64_t s_resolved_step(const char *dir) {
    char out[1200], err[512];
    cr_assert_eq(ckpt_resolve(dir, out, sizeof out, err, sizeof err), 0, "%s", err);
    ckpt_t c;
    cr_assert_eq(ckpt_load(&c, out, err, sizeof err), 0, "%s", err);
    uint64_t step = ckpt_get_u64(ckpt_get(&c, "tag", NULL));
    ckpt_free(&c);
    return step;
}

static void s_flip(const char *path, size_t at) {
    size_t len;
    uint8_t *b = s_read(path, &len);
    b[at % len] ^= 0x01;
    s_write(path, b, len);
    free(b);
}

Test(ckpt, dir_keeps_the_newest_and_writes_the_manifest) {
    const char *d = s_path("ck");
    for (uint64_t s = 10; s <= 50; s += 10) s_dir_save(d, s, 2);
    for (uint64_t s = 10; s <= 50; s += 10) {
        char f[300];
        snprintf(f, sizeof f, "%s/ckpt_%012llu.bin", d, (unsigned long long)s);
        cr_expect_eq(access(f, F_OK) == 0, s >= 40, "step %llu: kept = %d", (unsigned long long)s, access(f, F_OK) == 0);
    }
    char man[300];
    snprintf(man, sizeof man, "%s/LATEST", d);
    size_t len;
    uint8_t *m = s_read(man, &len);
    m[len] = 0;
    cr_expect_str_eq((char *)m, "ckpt_000000000050.bin\n");
    free(m);
    cr_expect_eq(s_resolved_step(d), 50);
}

Test(ckpt, resolve_falls_back_to_the_newest_valid_checkpoint) {
    const char *d = s_path("ck");
    for (uint64_t s = 10; s <= 30; s += 10) s_dir_save(d, s, 5);
    char f30[300], f20[300], f10[300], man[300];
    snprintf(f30, sizeof f30, "%s/ckpt_000000000030.bin", d);
    snprintf(f20, sizeof f20, "%s/ckpt_000000000020.bin", d);
    snprintf(f10, sizeof f10, "%s/ckpt_000000000010.bin", d);
    snprintf(man, sizeof man, "%s/LATEST", d);
    // A flipped byte in the newest: the previous one.
    s_flip(f30, 100);
    cr_expect_eq(s_resolved_step(d), 20);
    // And in that one too.
    s_flip(f20, 3);
    cr_expect_eq(s_resolved_step(d), 10);
    // Nothing valid left.
    s_flip(f10, 50);
    char out[1200], err[512];
    cr_expect_eq(ckpt_resolve(d, out, sizeof out, err, sizeof err), -1);
    cr_expect(strstr(err, d) && strstr(err, "no complete checkpoint"), "%s", err);
}

Test(ckpt, resolve_without_a_usable_manifest) {
    const char *d = s_path("ck");
    for (uint64_t s = 10; s <= 30; s += 10) s_dir_save(d, s, 5);
    char man[300];
    snprintf(man, sizeof man, "%s/LATEST", d);
    // The manifest names a deleted file.
    char f30[300];
    snprintf(f30, sizeof f30, "%s/ckpt_000000000030.bin", d);
    unlink(f30);
    cr_expect_eq(s_resolved_step(d), 20);
    // Garbage, an escaping name, or no manifest at all: the newest valid file.
    s_write(man, (const uint8_t *)"garbage\n", 8);
    cr_expect_eq(s_resolved_step(d), 20);
    s_write(man, (const uint8_t *)"../../etc/passwd\n", 17);
    cr_expect_eq(s_resolved_step(d), 20);
    unlink(man);
    cr_expect_eq(s_resolved_step(d), 20);
}

Test(ckpt, resolve_trusts_the_manifest_over_a_newer_unlisted_file) {
    // A crash between writing ckpt_40 and the manifest: LATEST still names 30, which is complete.
    const char *d = s_path("ck");
    s_dir_save(d, 30, 5);
    s_save_small(s_path("ck/ckpt_000000000040.bin"), 40);
    cr_expect_eq(s_resolved_step(d), 30);
}

Test(ckpt, resolve_of_a_file_an_empty_dir_and_nothing) {
    char out[1200], err[512];
    const char *f = s_path("some.bin");
    s_save_small(f, 3);
    cr_assert_eq(ckpt_resolve(f, out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_expect_str_eq(out, f);
    const char *e = s_path("empty");
    cr_assert_eq(mkdir(e, 0755), 0);
    cr_expect_eq(ckpt_resolve(e, out, sizeof out, err, sizeof err), -1);
    cr_expect(strstr(err, "no complete checkpoint") != NULL, "%s", err);
    const char *m = s_path("missing");
    cr_expect_eq(ckpt_resolve(m, out, sizeof out, err, sizeof err), -1);
    cr_expect(strstr(err, m) && strstr(err, "No such file"), "%s", err);
}

// ---------------------------------------------------------------------------------------------
// The model sections (ckpt_model), which eval/export/sample read without a config file

Test(ckpt, model_sections_are_checked) {
    gpt_config_t cfg = {1, 8, 2, 4, 16};
    size_t np = gpt_num_params(&cfg);
    float *params = calloc(np, sizeof *params);
    uint8_t mc[40];
    uint64_t w[5] = {1, 8, 2, 4, 16};
    for (int i = 0; i < 5; i++) ckpt_put_u64(mc + 8 * i, w[i]);
    ckpt_t c = {0};
    ckpt_add(&c, "model_config", mc, sizeof mc);
    ckpt_add(&c, "params", params, np * sizeof(float));
    gpt_config_t got;
    const float *p;
    char err[512] = "";
    cr_assert_eq(ckpt_model(&c, "params", &got, &p, err, sizeof err), 0, "%s", err);
    cr_expect(got.layers == 1 && got.d_model == 8 && got.heads == 2 && got.seq_len == 4 && got.vocab == 16);
    cr_expect_eq(p, params);
    cr_expect_eq(ckpt_model(&c, "anchor", &got, &p, err, sizeof err), -1);
    cr_expect(strstr(err, "no 'anchor' section") != NULL, "%s", err);
    c.sec[1].len -= 4; // one parameter short
    cr_expect_eq(ckpt_model(&c, "params", &got, &p, err, sizeof err), -1);
    ckpt_put_u64(mc + 8 * 2, 3); // heads 3 does not divide d_model 8
    cr_expect_eq(ckpt_model(&c, "params", &got, &p, err, sizeof err), -1);
    cr_expect(strstr(err, "heads must divide d_model") != NULL, "%s", err);
    ckpt_put_u64(mc + 8 * 2, 1ull << 40);
    cr_expect_eq(ckpt_model(&c, "params", &got, &p, err, sizeof err), -1);
    cr_expect(strstr(err, "out of range") != NULL, "%s", err);
    c.sec[0].len = 32;
    cr_expect_eq(ckpt_model(&c, "params", &got, &p, err, sizeof err), -1);
    cr_expect(strstr(err, "no valid model_config") != NULL, "%s", err);
    free(params);
}
