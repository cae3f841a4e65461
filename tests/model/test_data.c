// Token shards, data sets, batch streams and `loco data`: what a user sees when the data is good,
// and the message naming the file and the problem when it is not.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/data.h"

static char s_dir[64];

static void s_setup(void) {
    snprintf(s_dir, sizeof s_dir, "/tmp/loco_test_data_XXXXXX");
    cr_assert(mkdtemp(s_dir));
}

static void s_teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", s_dir);
}

TestSuite(data, .init = s_setup, .fini = s_teardown);

static void s_put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// A header for ntok tokens (magic, version, count as given).
static void s_header(uint8_t *h, uint32_t magic, uint32_t version, uint32_t ntok) {
    memset(h, 0, DATA_HEADER_BYTES);
    s_put32(h, magic);
    s_put32(h + 4, version);
    s_put32(h + 8, ntok);
}

// Writes a raw file: header (magic, version, claimed) then the n tokens, then `extra` junk bytes,
// truncated to `cut` bytes if cut > 0. Returns its path (static).
static const char *s_raw(const char *name, uint32_t magic, uint32_t version, uint32_t claimed,
                         const uint16_t *tok, size_t n, size_t extra, size_t cut) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    size_t len = DATA_HEADER_BYTES + 2 * n + extra;
    uint8_t *buf = calloc(1, len);
    s_header(buf, magic, version, claimed);
    for (size_t i = 0; i < n; i++) {
        buf[DATA_HEADER_BYTES + 2 * i] = (uint8_t)(tok[i] & 0xff);
        buf[DATA_HEADER_BYTES + 2 * i + 1] = (uint8_t)(tok[i] >> 8);
    }
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(buf, 1, cut ? cut : len, f), cut ? cut : len);
    fclose(f);
    free(buf);
    return path;
}

// Writes tokens first, first+1, ... (mod 65536) as a shard through data_shard_write.
static void s_seq_shard(const char *name, uint16_t first, size_t n) {
    uint16_t *t = malloc(n * sizeof *t + 1);
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)(first + i);
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    cr_assert_eq(data_shard_write(path, t, n, err, sizeof err), 0, "%s", err);
    free(t);
}

// Opens path expecting a refusal whose message starts with the path and contains frag.
static void s_expect_refused(const char *path, int vocab, const char *frag) {
    char err[1024] = "";
    data_shard_t *s = data_shard_open(path, vocab, err, sizeof err);
    cr_assert_null(s, "%s was accepted", path);
    char head[300];
    snprintf(head, sizeof head, "%s: ", path);
    cr_expect(strncmp(err, head, strlen(head)) == 0, "the message does not name the file: %s", err);
    cr_expect(strstr(err, frag) != NULL, "expected '%s' in: %s", frag, err);
}

// ---------------------------------------------------------------------------------------------
// data_header_parse

Test(data, header_parse_accepts_a_consistent_header) {
    uint8_t h[DATA_HEADER_BYTES];
    char err[256];
    s_header(h, DATA_MAGIC, DATA_VERSION, 3);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 6, err, sizeof err), 3);
    s_header(h, DATA_MAGIC, DATA_VERSION, 0);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES, err, sizeof err), 0);
    // The largest count a header can state does not overflow the size check.
    s_header(h, DATA_MAGIC, DATA_VERSION, UINT32_MAX);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 2ull * UINT32_MAX, err, sizeof err),
                 (int64_t)UINT32_MAX);
}

Test(data, header_parse_refuses_with_a_reason) {
    uint8_t h[DATA_HEADER_BYTES];
    char err[256];
    s_header(h, DATA_MAGIC, DATA_VERSION, 3);
    cr_expect_eq(data_header_parse(h, 100, 100, err, sizeof err), -1);
    cr_expect(strstr(err, "truncated header: 100 bytes") != NULL, "%s", err);
    cr_expect_eq(data_header_parse(h, sizeof h, 1000, err, sizeof err), -1);
    cr_expect(strstr(err, "truncated header: 1000 bytes") != NULL, "%s", err);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 4, err, sizeof err), -1);
    cr_expect(strstr(err, "3 tokens") && strstr(err, ": truncated"), "%s", err);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 8, err, sizeof err), -1);
    cr_expect(strstr(err, ": trailing bytes") != NULL, "%s", err);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 7, err, sizeof err), -1);
    s_header(h, 20240521, DATA_VERSION, 3);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 6, err, sizeof err), -1);
    cr_expect(strstr(err, "bad magic 20240521") != NULL, "%s", err);
    s_header(h, DATA_MAGIC, 2, 3);
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES + 6, err, sizeof err), -1);
    cr_expect(strstr(err, "unsupported version 2") != NULL, "%s", err);
    // Fields are little-endian: a big-endian magic is not the magic.
    memset(h, 0, sizeof h);
    h[0] = 0x01; h[1] = 0x35; h[2] = 0x4d; h[3] = 0x58; // 20240520 = 0x01344d58, byte-swapped and off
    cr_expect_eq(data_header_parse(h, sizeof h, DATA_HEADER_BYTES, err, sizeof err), -1);
}

// ---------------------------------------------------------------------------------------------
// data_shard_open

Test(data, shard_roundtrip) {
    uint16_t tok[5] = {0, 1, 255, 7, 42};
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/train_000.bin", s_dir);
    cr_assert_eq(data_shard_write(path, tok, 5, err, sizeof err), 0, "%s", err);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect_neq(access(tmp, F_OK), 0, "the temp file was left behind");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_size, DATA_HEADER_BYTES + 10);
    data_shard_t *s = data_shard_open(path, 256, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_expect_eq(s->ntok, 5);
    cr_expect_arr_eq(s->tok, tok, sizeof tok);
    cr_expect_str_eq(s->path, path);
    data_shard_destroy(&s);
    cr_expect_null(s);
    data_shard_destroy(&s); // idempotent
}

Test(data, shard_with_gpt2_tokens_needs_the_gpt2_vocab) {
    uint16_t tok[3] = {50256, 0, 50000};
    const char *p = s_raw("gpt2_train.bin", DATA_MAGIC, DATA_VERSION, 3, tok, 3, 0, 0);
    char err[512];
    data_shard_t *s = data_shard_open(p, 50257, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_expect_eq(s->tok[0], 50256);
    data_shard_destroy(&s);
    s_expect_refused(p, 256, "token 50256 at position 0 is not below the model's vocab 256");
    s_expect_refused(p, 50256, "token 50256 at position 0");
}

Test(data, shard_with_a_token_at_or_above_vocab_is_refused) {
    uint16_t tok[4] = {1, 2, 255, 256};
    const char *p = s_raw("big_token.bin", DATA_MAGIC, DATA_VERSION, 4, tok, 4, 0, 0);
    s_expect_refused(p, 256, "token 256 at position 3 is not below the model's vocab 256");
    // vocab - 1 is the largest token a model takes.
    char err[512];
    data_shard_t *s = data_shard_open(p, 257, err, sizeof err);
    cr_expect_not_null(s, "%s", err);
    data_shard_destroy(&s);
}

Test(data, truncated_shards_are_refused) {
    uint16_t tok[10] = {0};
    char path[256];
    snprintf(path, sizeof path, "%s/zero_train.bin", s_dir);
    FILE *f = fopen(path, "wb");
    fclose(f);
    s_expect_refused(path, 256, "truncated header: 0 bytes, a shard header is 1024 bytes");
    s_expect_refused(s_raw("cut_header.bin", DATA_MAGIC, DATA_VERSION, 10, tok, 10, 0, 600), 256,
                     "truncated header: 600 bytes");
    s_expect_refused(s_raw("cut_tokens.bin", DATA_MAGIC, DATA_VERSION, 10, tok, 10, 0, DATA_HEADER_BYTES + 9), 256,
                     "size 1033 bytes does not match the header's 10 tokens (1044 bytes): truncated");
    s_expect_refused(s_raw("no_tokens.bin", DATA_MAGIC, DATA_VERSION, 10, tok, 0, 0, 0), 256, ": truncated");
}

Test(data, header_only_shard_is_an_empty_shard) {
    uint16_t none[1] = {0};
    const char *p = s_raw("empty_train.bin", DATA_MAGIC, DATA_VERSION, 0, none, 0, 0, 0);
    char err[512];
    data_shard_t *s = data_shard_open(p, 256, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_expect_eq(s->ntok, 0);
    data_shard_destroy(&s);
}

Test(data, wrong_magic_version_and_trailing_bytes_are_refused) {
    uint16_t tok[4] = {1, 2, 3, 4};
    s_expect_refused(s_raw("magic.bin", 12345, DATA_VERSION, 4, tok, 4, 0, 0), 256,
                     "bad magic 12345 (expected 20240520): not a token shard");
    s_expect_refused(s_raw("v2.bin", DATA_MAGIC, 2, 4, tok, 4, 0, 0), 256,
                     "unsupported version 2 (expected 1; version 2 shards hold uint32 tokens)");
    s_expect_refused(s_raw("v0.bin", DATA_MAGIC, 0, 4, tok, 4, 0, 0), 256, "unsupported version 0");
    s_expect_refused(s_raw("trailing.bin", DATA_MAGIC, DATA_VERSION, 4, tok, 4, 1, 0), 256,
                     "size 1033 bytes does not match the header's 4 tokens (1032 bytes): trailing bytes");
    s_expect_refused(s_raw("understated.bin", DATA_MAGIC, DATA_VERSION, 3, tok, 4, 0, 0), 256, "trailing bytes");
}

Test(data, missing_shard_is_refused) {
    char path[256];
    snprintf(path, sizeof path, "%s/nope_train.bin", s_dir);
    s_expect_refused(path, 256, "cannot open: No such file or directory");
}

// ---------------------------------------------------------------------------------------------
// Data sets

Test(data, set_takes_train_and_val_shards_in_name_order) {
    s_seq_shard("train_001.bin", 1000, 50);
    s_seq_shard("train_000.bin", 0, 40);
    s_seq_shard("fineweb_train_000002.bin", 2000, 30); // llm.c's naming matches too
    s_seq_shard("val_000.bin", 3000, 20);
    s_seq_shard("fineweb_val_000000.bin", 4000, 10);
    char other[256]; // unrelated files are ignored
    snprintf(other, sizeof other, "%s/notes.txt", s_dir);
    FILE *f = fopen(other, "w");
    fputs("not a shard", f);
    fclose(f);
    char err[512];
    data_set_t *tr = data_set_open(s_dir, 0, 65536, err, sizeof err);
    cr_assert_not_null(tr, "%s", err);
    cr_assert_eq(tr->n, 3);
    cr_expect_eq(tr->total, 120);
    // strcmp order: "fineweb_train_..." < "train_000" < "train_001"
    cr_expect_eq(tr->shard[0]->tok[0], 2000);
    cr_expect_eq(tr->shard[1]->tok[0], 0);
    cr_expect_eq(tr->shard[2]->tok[0], 1000);
    data_set_t *va = data_set_open(s_dir, 1, 65536, err, sizeof err);
    cr_assert_not_null(va, "%s", err);
    cr_expect_eq(va->n, 2);
    cr_expect_eq(va->total, 30);
    data_set_destroy(&tr);
    data_set_destroy(&va);
    cr_expect_null(tr);
}

Test(data, set_without_shards_says_how_to_make_them) {
    s_seq_shard("train_000.bin", 0, 40);
    char err[512];
    data_set_t *va = data_set_open(s_dir, 1, 256, err, sizeof err);
    cr_assert_null(va);
    cr_expect(strstr(err, s_dir) && strstr(err, "no validation shards") && strstr(err, "loco data"), "%s", err);
    char missing[256];
    snprintf(missing, sizeof missing, "%s/absent", s_dir);
    cr_assert_null(data_set_open(missing, 0, 256, err, sizeof err));
    cr_expect(strstr(err, missing) && strstr(err, "cannot open data directory"), "%s", err);
}

Test(data, set_with_one_bad_shard_is_refused_naming_it) {
    s_seq_shard("train_000.bin", 0, 40);
    uint16_t tok[2] = {1, 2};
    s_raw("train_001.bin", DATA_MAGIC, DATA_VERSION, 2, tok, 2, 3, 0);
    char err[512];
    cr_assert_null(data_set_open(s_dir, 0, 256, err, sizeof err));
    cr_expect(strstr(err, "train_001.bin: size") && strstr(err, "trailing bytes"), "%s", err);
}

// ---------------------------------------------------------------------------------------------
// Batch streams

enum { B = 4, T = 16 };

static data_set_t *s_open_train(void) {
    char err[512];
    data_set_t *set = data_set_open(s_dir, 0, 65536, err, sizeof err);
    cr_assert_not_null(set, "%s", err);
    return set;
}

Test(data, stream_windows_are_consecutive_tokens_of_one_shard) {
    // Shard A holds 0..999, shard B 2000..3999: a window that crossed shards, or read outside
    // one, would show a jump.
    s_seq_shard("train_000.bin", 0, 1000);
    s_seq_shard("train_001.bin", 2000, 2000);
    data_set_t *set = s_open_train();
    data_stream_t s;
    data_stream_init(&s, set, 7, 0);
    int32_t in[B * T], tg[B * T];
    int from_a = 0, from_b = 0;
    for (int k = 0; k < 500; k++) {
        cr_assert_eq(data_stream_next(&s, in, tg, B, T), 0);
        for (int b = 0; b < B; b++) {
            const int32_t *x = in + b * T, *y = tg + b * T;
            int first = x[0];
            cr_assert((first >= 0 && first + T <= 999) || (first >= 2000 && first + T <= 3999),
                      "window starting at token %d leaves its shard", first);
            for (int t = 0; t < T; t++) {
                cr_assert_eq(x[t], first + t);
                cr_assert_eq(y[t], first + t + 1, "targets are the inputs shifted by one");
            }
            if (first < 1000) from_a++;
            else from_b++;
        }
    }
    cr_expect_eq(s.draws, 500 * B);
    // Shards are drawn in proportion to their usable windows (984 : 1984): about a third from A.
    double frac = (double)from_a / (from_a + from_b);
    cr_expect(frac > 0.25 && frac < 0.42, "fraction of windows from the smaller shard: %.3f", frac);
    data_set_destroy(&set);
}

Test(data, stream_same_seed_and_id_reproduce) {
    s_seq_shard("train_000.bin", 0, 60000);
    data_set_t *set = s_open_train();
    data_stream_t a, b;
    data_stream_init(&a, set, 1337, 3);
    data_stream_init(&b, set, 1337, 3);
    int32_t ia[B * T], ta[B * T], ib[B * T], tb[B * T];
    for (int k = 0; k < 5; k++) {
        data_stream_next(&a, ia, ta, B, T);
        data_stream_next(&b, ib, tb, B, T);
        cr_assert_arr_eq(ia, ib, sizeof ia);
        cr_assert_arr_eq(ta, tb, sizeof ta);
    }
    data_set_destroy(&set);
}

// Start tokens of the first n windows of a stream.
static void s_starts(const data_set_t *set, uint64_t seed, uint64_t id, int n, int32_t *starts) {
    data_stream_t s;
    data_stream_init(&s, set, seed, id);
    int32_t in[T], tg[T];
    for (int i = 0; i < n; i++) {
        data_stream_next(&s, in, tg, 1, T);
        starts[i] = in[0];
    }
}

static int s_overlap(const int32_t *a, const int32_t *b, int n) {
    int common = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) common += a[i] == b[j];
    return common;
}

Test(data, stream_ids_and_seeds_draw_different_windows) {
    s_seq_shard("train_000.bin", 0, 60000);
    data_set_t *set = s_open_train();
    enum { N = 256 };
    int32_t s0[N], s1[N], s2[N], other_seed[N];
    s_starts(set, 1337, 0, N, s0);
    s_starts(set, 1337, 1, N, s1);
    s_starts(set, 1337, 2, N, s2);
    s_starts(set, 1338, 0, N, other_seed);
    // By chance two independent streams share about N·N/59984 ≈ 1 start; a stream that were a
    // shifted copy of another would share nearly all of them.
    cr_expect_lt(s_overlap(s0, s1, N), 8, "streams 0 and 1 share %d of %d windows", s_overlap(s0, s1, N), N);
    cr_expect_lt(s_overlap(s0, s2, N), 8);
    cr_expect_lt(s_overlap(s1, s2, N), 8);
    cr_expect_lt(s_overlap(s0, other_seed, N), 8);
    // Within one stream, windows are spread over the shard rather than repeating.
    cr_expect_lt(s_overlap(s0, s0, N), N + 8);
    data_set_destroy(&set);
}

Test(data, stream_resumes_from_its_counter) {
    // A checkpoint saves only (seed, id, draws); a stream rebuilt from them continues identically,
    // however the draws were split into batches.
    s_seq_shard("train_000.bin", 0, 60000);
    data_set_t *set = s_open_train();
    data_stream_t a, b;
    data_stream_init(&a, set, 99, 5);
    int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T];
    for (int k = 0; k < 3; k++) data_stream_next(&a, in, tg, B, T);
    data_stream_init(&b, set, 99, 5);
    b.draws = a.draws;
    data_stream_next(&a, in, tg, B, T);
    data_stream_next(&b, in2, tg2, 2, T);
    data_stream_next(&b, in2 + 2 * T, tg2 + 2 * T, 2, T);
    cr_expect_arr_eq(in, in2, sizeof in);
    cr_expect_arr_eq(tg, tg2, sizeof tg);
    data_set_destroy(&set);
}

Test(data, stream_needs_a_window_of_seq_len_plus_one) {
    s_seq_shard("train_000.bin", 0, T);
    data_set_t *set = s_open_train();
    data_stream_t s;
    data_stream_init(&s, set, 1, 0);
    int32_t in[T], tg[T];
    cr_expect_eq(data_stream_next(&s, in, tg, 1, T), -1);
    data_set_destroy(&set);
    // With exactly T+1 tokens there is one window, and every draw is it.
    s_seq_shard("train_000.bin", 100, T + 1);
    set = s_open_train();
    data_stream_init(&s, set, 1, 0);
    for (int k = 0; k < 20; k++) {
        cr_assert_eq(data_stream_next(&s, in, tg, 1, T), 0);
        cr_assert_eq(in[0], 100);
        cr_assert_eq(tg[T - 1], 100 + T);
    }
    data_set_destroy(&set);
}

Test(data, eval_windows_tile_the_first_val_shard) {
    s_seq_shard("val_000.bin", 0, 10 * T + 5);
    s_seq_shard("val_001.bin", 5000, 100 * T); // only the first shard is used
    char err[512];
    data_set_t *va = data_set_open(s_dir, 1, 65536, err, sizeof err);
    cr_assert_not_null(va, "%s", err);
    cr_expect_eq(data_eval_windows(va, T), 10);
    int32_t in[T], tg[T];
    data_eval_window(va, 9, in, tg, T);
    for (int t = 0; t < T; t++) {
        cr_expect_eq(in[t], 9 * T + t);
        cr_expect_eq(tg[t], 9 * T + t + 1);
    }
    data_set_destroy(&va);
    // 10·T tokens hold only 9 windows: the last target would be token 10·T.
    s_seq_shard("val_000.bin", 0, 10 * T);
    va = data_set_open(s_dir, 1, 65536, err, sizeof err);
    cr_expect_eq(data_eval_windows(va, T), 9);
    data_set_destroy(&va);
}

// ---------------------------------------------------------------------------------------------
// loco data

static void s_write_text(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

// Reads a shard's tokens back as text.
static size_t s_shard_text(const char *name, char *out, size_t cap) {
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/out/%s", s_dir, name);
    data_shard_t *s = data_shard_open(path, 256, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_assert_lt(s->ntok, cap);
    for (size_t i = 0; i < s->ntok; i++) out[i] = (char)s->tok[i];
    out[s->ntok] = '\0';
    size_t n = s->ntok;
    data_shard_destroy(&s);
    return n;
}

Test(data, prepare_splits_each_input_at_a_line_start) {
    char indir[256];
    snprintf(indir, sizeof indir, "%s/in", s_dir);
    cr_assert_eq(mkdir(indir, 0755), 0);
    s_write_text("in/b", "bbbbbbbbbbbbbbbbbbbb\nBBBBBBBBBBBBBBBBBBBBBBB\nbye\n");
    s_write_text("in/a.txt", "first line\nsecond line\nthird line\nlast\n");
    s_write_text("in/a.dat", "an index file: skipped");
    s_write_text("in/.hidden", "skipped");
    char link[256], target[256], in[256], out[256], err[512];
    snprintf(link, sizeof link, "%s/in/b.u8", s_dir);
    snprintf(target, sizeof target, "%s/in/b", s_dir);
    cr_assert_eq(symlink(target, link), 0);
    snprintf(link, sizeof link, "%s/in/c", s_dir);
    cr_assert_eq(symlink(target, link), 0); // symlinks are skipped even without an extension
    snprintf(in, sizeof in, "%s/in", s_dir);
    snprintf(out, sizeof out, "%s/out", s_dir);
    const char *inputs[] = {in};
    cr_assert_eq(data_prepare(inputs, 1, out, 0.2, err, sizeof err), 0, "%s", err);
    char tr[512], va[512];
    s_shard_text("train_000.bin", tr, sizeof tr);
    s_shard_text("val_000.bin", va, sizeof va);
    // Name order (a.txt, then b); each file's tail from a line start goes to validation.
    cr_expect_str_eq(tr, "first line\nsecond line\nthird line\nbbbbbbbbbbbbbbbbbbbb\nBBBBBBBBBBBBBBBBBBBBBBB\n");
    cr_expect_str_eq(va, "last\nbye\n");
}

Test(data, prepare_refuses_bad_inputs) {
    char out[256], missing[256], err[512];
    snprintf(out, sizeof out, "%s/out", s_dir);
    snprintf(missing, sizeof missing, "%s/missing.txt", s_dir);
    const char *inputs[] = {missing};
    cr_expect_eq(data_prepare(inputs, 1, out, 0.1, err, sizeof err), -1);
    cr_expect(strstr(err, missing) && strstr(err, "No such file"), "%s", err);
    s_write_text("empty.txt", "");
    char empty[256];
    snprintf(empty, sizeof empty, "%s/empty.txt", s_dir);
    inputs[0] = empty;
    cr_expect_eq(data_prepare(inputs, 1, out, 0.1, err, sizeof err), -1);
    cr_expect(strstr(err, "no text found") != NULL, "%s", err);
    cr_expect_eq(data_prepare(inputs, 1, out, 1.0, err, sizeof err), -1);
    cr_expect(strstr(err, "--val-fraction must be in [0, 1)") != NULL, "%s", err);
    // An empty directory holds no text either.
    char edir[256];
    snprintf(edir, sizeof edir, "%s/emptydir", s_dir);
    mkdir(edir, 0755);
    inputs[0] = edir;
    cr_expect_eq(data_prepare(inputs, 1, out, 0.1, err, sizeof err), -1);
    cr_expect(strstr(err, "no text found") != NULL, "%s", err);
}
