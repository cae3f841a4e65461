// [train] init: safetensors written by loco export (or converted elsewhere) load back into the
// flat parameter buffer exactly; a "transformer." prefix is accepted; every malformed
// or mismatched file is refused with the tensor and the reason named.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gpt.h"
#include "node/safetensors.h"

static const gpt_config_t s_cfg = {2, 32, 2, 16, 64};
static char s_path[64];

static void s_setup(void) {
    snprintf(s_path, sizeof s_path, "/tmp/loco_test_st_XXXXXX");
    int fd = mkstemp(s_path);
    cr_assert(fd >= 0);
    close(fd);
}
static void s_teardown(void) { unlink(s_path); }
TestSuite(safetensors, .init = s_setup, .fini = s_teardown);

static float *s_params(uint64_t seed) {
    size_t n = gpt_num_params(&s_cfg);
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)((seed * 2654435761u + i * 40503u) % 20011) / 20011.0f - 0.5f;
    return p;
}

static void s_write(const void *data, size_t len) {
    FILE *f = fopen(s_path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static uint8_t *s_read(size_t *len) {
    FILE *f = fopen(s_path, "rb");
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 64);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

Test(safetensors, export_round_trip_is_exact) {
    size_t n = gpt_num_params(&s_cfg);
    float *p = s_params(1), *q = calloc(n, sizeof(float));
    char err[512];
    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq(safetensors_load_gpt(s_path, &s_cfg, q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(p, q, n * sizeof(float)), 0);
    free(p);
    free(q);
}

// Rewrites the exported header with a replacement (same length, so the offsets stay valid).
static void s_patch_header(const char *from, const char *to) {
    size_t len;
    uint8_t *b = s_read(&len);
    char *h = (char *)b + 8;
    char *at = strstr(h, from);
    cr_assert(at, "no '%s' in the header", from);
    cr_assert_eq(strlen(from), strlen(to));
    memcpy(at, to, strlen(to));
    s_write(b, len);
    free(b);
}

static void s_expect_error(const char *needle) {
    size_t n = gpt_num_params(&s_cfg);
    float *q = calloc(n, sizeof(float));
    char err[512] = "";
    cr_assert_eq(safetensors_load_gpt(s_path, &s_cfg, q, err, sizeof err), -1);
    cr_assert(strstr(err, needle), "error '%s' does not name '%s'", err, needle);
    free(q);
}

Test(safetensors, refuses_missing_mismatched_and_malformed_files) {
    float *p = s_params(2);
    char err[512];
    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0);
    s_patch_header("\"ln_f.bias\"", "\"ln_x.bias\"");
    s_expect_error("ln_f.bias is missing");

    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0);
    s_patch_header("\"shape\":[64,32]", "\"shape\":[32,64]"); // wte transposed
    s_expect_error("wte.weight has shape [32, 64], the model config needs [64, 32]");

    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0);
    s_patch_header("\"F32\"", "\"I64\"");
    s_expect_error("unsupported dtype");

    // A config the file was not written for.
    gpt_config_t other = s_cfg;
    other.d_model = 64;
    float *big = calloc(gpt_num_params(&other), sizeof(float));
    cr_assert_eq(safetensors_load_gpt(s_path, &other, big, err, sizeof err), -1);
    free(big);

    // Truncated data, a header longer than the file, an empty file.
    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0);
    size_t len;
    uint8_t *b = s_read(&len);
    s_write(b, len - 100);
    s_expect_error("leaves the file");
    b[0] = 0xff, b[1] = 0xff, b[2] = 0xff;
    s_write(b, len);
    s_expect_error("header length");
    s_write(b, 3);
    s_expect_error("too short");
    free(b);
    free(p);
}

Test(safetensors, transformer_prefixed_names) {
    // Some converters write "transformer.h.0...." names: the same file with every name prefixed loads
    // to the same bytes.
    float *p = s_params(3);
    char err[512];
    cr_assert_eq(safetensors_save_gpt(s_path, &s_cfg, p, err, sizeof err), 0);
    size_t len;
    uint8_t *b = s_read(&len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)b[i] << (8 * i);
    // Prefix every name: build a new header.
    char *h = malloc(hlen * 2 + 64), *o = h;
    const char *src = (const char *)b + 8;
    for (size_t i = 0; i < hlen; i++) {
        if (src[i] == '"' && i + 1 < hlen && (src[i + 1] == 'w' || src[i + 1] == 'h' || !strncmp(src + i + 1, "ln_f", 4))) {
            o += sprintf(o, "\"transformer.");
            continue;
        }
        *o++ = src[i];
    }
    size_t nh = (size_t)(o - h);
    uint8_t *nb = malloc(8 + nh + (len - 8 - hlen));
    for (int i = 0; i < 8; i++) nb[i] = (uint8_t)(nh >> (8 * i));
    memcpy(nb + 8, h, nh);
    memcpy(nb + 8 + nh, b + 8 + hlen, len - 8 - hlen);
    s_write(nb, 8 + nh + len - 8 - hlen);
    size_t n = gpt_num_params(&s_cfg);
    float *q = calloc(n, sizeof(float));
    cr_assert_eq(safetensors_load_gpt(s_path, &s_cfg, q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(p, q, n * sizeof(float)), 0);
    free(q);
    free(nb);
    free(h);
    free(b);
    free(p);
}
