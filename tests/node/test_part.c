// A model held in parts (model/part.h), as a pipeline stage holds it: the parts initialise to
// exactly the whole model's values, commit only their own memory, and checkpoint round trips —
// parts to parts, whole to parts — restore them bit for bit; a parts checkpoint is refused by a
// whole model and by other parts, with a reason.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/gpt.h"
#include "model/part.h"
#include "node/checkpoint.h"
#include "node/config.h"
#include "node/trainer.h"

static const gpt_config_t s_cfg = {.layers = 4, .d_model = 64, .heads = 4, .seq_len = 16, .vocab = 96};

// The part of a 2-stage split at block k: stage 0 = [0, block k), last = wte + [block k, end).
static void s_stage_part(int stage, int k, part_t *p) {
    size_t b0, b1, n = gpt_num_params(&s_cfg), wte = (size_t)s_cfg.vocab * s_cfg.d_model;
    gpt_layer_span(&s_cfg, k, s_cfg.layers, &b0, &b1);
    memset(p, 0, sizeof *p);
    if (stage == 0) {
        p->n = 1, p->off[0] = 0, p->len[0] = b0;
    } else {
        p->n = 2, p->off[0] = 0, p->len[0] = wte, p->off[1] = b0, p->len[1] = n - b0;
    }
}

Test(part, checks_refuse_bad_parts) {
    char err[200];
    part_t p = {.n = 2, .off = {10, 5}, .len = {5, 2}};
    cr_expect_eq(part_check(&p, 100, err, sizeof err), -1);
    cr_expect(strstr(err, "overlaps or precedes"), "%s", err);
    p = (part_t){.n = 1, .off = {90}, .len = {20}};
    cr_expect_eq(part_check(&p, 100, err, sizeof err), -1);
    cr_expect(strstr(err, "outside"), "%s", err);
    p = (part_t){.n = 1, .off = {0}, .len = {0}};
    cr_expect_eq(part_check(&p, 100, err, sizeof err), -1);
    p = (part_t){.n = 3};
    cr_expect_eq(part_check(&p, 100, err, sizeof err), -1);
    p = (part_t){.n = 2, .off = {0, 50}, .len = {10, 50}};
    cr_expect_eq(part_check(&p, 100, err, sizeof err), 0);
}

// The kernel's count of this process's writable private memory (what `ulimit -d` limits), in kB.
static long s_vmdata_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

Test(part, memory_is_committed_for_the_parts_only) {
    size_t n = (size_t)64 << 20; // 256 MiB of floats reserved
    part_t p = {.n = 2, .off = {0, n - 1000}, .len = {1000, 1000}};
    long before = s_vmdata_kb();
    float *b = part_alloc(n, sizeof(float), &p);
    cr_assert(b);
    long grew = s_vmdata_kb() - before;
    printf("VmData grew by %ld kB for a 256 MiB buffer with two 4000-byte parts\n", grew);
    cr_expect(before >= 0 && grew < 1024, "the reservation counts as %ld kB of data", grew);
    for (size_t i = 0; i < 1000; i++) cr_assert(b[i] == 0.0f && b[n - 1000 + i] == 0.0f, "parts start zeroed");
    b[0] = 1.0f, b[n - 1] = 2.0f;
    size_t bytes = part_bytes(n, sizeof(float), &p);
    long pg = sysconf(_SC_PAGESIZE);
    printf("reserved %zu MiB, committed %zu bytes (page %ld)\n", n * 4 >> 20, bytes, pg);
    cr_expect_leq(bytes, 2 * (4000 + 2 * (size_t)pg));
    cr_expect_eq(part_bytes(n, sizeof(float), NULL), n * 4);
    part_free(b, n, sizeof(float), &p);
}

Test(part, stage_parts_initialise_to_the_whole_models_values) {
    char err[256];
    gpt_t *whole = gpt_new(&s_cfg, 1, 1, err, sizeof err);
    cr_assert(whole, "%s", err);
    gpt_init_params(whole, 77);
    for (int k = 1; k < s_cfg.layers; k++)
        for (int stage = 0; stage < 2; stage++) {
            part_t p;
            s_stage_part(stage, k, &p);
            gpt_t *m = gpt_new_part(&s_cfg, &p, 1, 1, err, sizeof err);
            cr_assert(m, "%s", err);
            gpt_init_params(m, 77);
            for (int i = 0; i < p.n; i++)
                cr_expect(!memcmp(m->params + p.off[i], whole->params + p.off[i], p.len[i] * sizeof(float)),
                          "split at block %d, stage %d, part %d differs from the whole model's init", k, stage, i);
            gpt_zero_grad(m); // writes only inside the parts (a write outside would fault)
            cr_expect_lt(gpt_memory_bytes(m), gpt_memory_bytes(whole));
            gpt_destroy(&m);
        }
    gpt_destroy(&whole);
}

static char s_dir[64];

static void s_trainer_cfg(loco_config_t *c, const char *ckdir) {
    config_defaults(c);
    c->model = s_cfg;
    c->seed = 9;
    c->threads = 1;
    c->eval_every = 0;
    snprintf(c->checkpoint_dir, sizeof c->checkpoint_dir, "%s", ckdir);
}

static trainer_t *s_trainer(const part_t *p, uint64_t seed) {
    loco_config_t c;
    s_trainer_cfg(&c, s_dir);
    c.seed = seed;
    char err[512];
    trainer_t *t = trainer_new_part(&c, TRAINER_PARAMS_ONLY, 1, p, err, sizeof err);
    cr_assert(t, "%s", err);
    return t;
}

// Fills the trainer's parts (all of it when p is NULL) with values derived from k.
static void s_fill(trainer_t *t, const part_t *p, float k) {
    size_t n = t->model->num_params;
    for (int i = 0; i < (p && p->n ? p->n : 1); i++) {
        size_t off = p && p->n ? p->off[i] : 0, len = p && p->n ? p->len[i] : n;
        for (size_t j = off; j < off + len; j++) {
            t->model->params[j] = k + (float)j;
            t->opt->m[j] = -k - (float)j;
            t->opt->v[j] = k * 0.5f + (float)j;
        }
    }
    t->step = 42;
    t->opt->step = 42;
}

static int s_same_parts(const trainer_t *a, const trainer_t *b, const part_t *p) {
    for (int i = 0; i < p->n; i++) {
        size_t off = p->off[i], nb = p->len[i] * sizeof(float);
        if (memcmp(a->model->params + off, b->model->params + off, nb) || memcmp(a->opt->m + off, b->opt->m + off, nb) ||
            memcmp(a->opt->v + off, b->opt->v + off, nb))
            return 0;
    }
    return 1;
}

static void s_save(trainer_t *t, const char *path) {
    ckpt_t c = {0};
    uint8_t scratch[256];
    cr_assert_leq(trainer_ckpt_scratch_len(), sizeof scratch);
    trainer_ckpt_add(t, &c, scratch);
    char err[512];
    cr_assert_eq(ckpt_save(&c, path, err, sizeof err), 0, "%s", err);
}

static int s_restore(trainer_t *t, const char *path, char *err, size_t errlen) {
    ckpt_t c;
    cr_assert_eq(ckpt_load(&c, path, err, errlen), 0, "%s", err);
    int rc = trainer_ckpt_restore(t, &c, err, errlen);
    ckpt_free(&c);
    return rc;
}

Test(part, checkpoints_of_parts_round_trip_and_refuse_other_holders) {
    snprintf(s_dir, sizeof s_dir, "/tmp/loco_test_part_XXXXXX");
    cr_assert(mkdtemp(s_dir));
    char f_part[128], f_whole[128], err[512];
    snprintf(f_part, sizeof f_part, "%s/part.bin", s_dir);
    snprintf(f_whole, sizeof f_whole, "%s/whole.bin", s_dir);
    part_t last, first;
    s_stage_part(1, 2, &last);
    s_stage_part(0, 2, &first);

    // Parts to the same parts, bit for bit.
    trainer_t *a = s_trainer(&last, 9), *b = s_trainer(&last, 10);
    s_fill(a, &last, 3.0f);
    s_save(a, f_part);
    cr_assert_eq(s_restore(b, f_part, err, sizeof err), 0, "%s", err);
    cr_expect(s_same_parts(a, b, &last), "a stage's checkpoint restores its parts bit for bit");
    cr_expect_eq(b->step, 42);

    // Whole to parts: the parts are taken from the whole checkpoint.
    trainer_t *w = s_trainer(NULL, 9);
    s_fill(w, NULL, 5.0f);
    s_save(w, f_whole);
    cr_assert_eq(s_restore(b, f_whole, err, sizeof err), 0, "%s", err);
    cr_expect(s_same_parts(w, b, &last), "a stage resumes its parts from a whole checkpoint");

    // Parts to a whole model, and to other parts: refused, saying why.
    trainer_t *f = s_trainer(&first, 9);
    cr_expect_eq(s_restore(w, f_part, err, sizeof err), -1);
    cr_expect(strstr(err, "part of the model"), "%s", err);
    cr_expect_eq(s_restore(f, f_part, err, sizeof err), -1);
    cr_expect(strstr(err, "part of the model"), "%s", err);
    // eval/export: a clear reason rather than a missing section.
    ckpt_t c;
    cr_assert_eq(ckpt_load(&c, f_part, err, sizeof err), 0, "%s", err);
    gpt_config_t mc;
    const float *params;
    cr_expect_eq(ckpt_model(&c, "params", &mc, &params, err, sizeof err), -1);
    cr_expect(strstr(err, "pipeline stage's checkpoint"), "%s", err);
    ckpt_free(&c);

    trainer_destroy(&a), trainer_destroy(&b), trainer_destroy(&w), trainer_destroy(&f);
    unlink(f_part), unlink(f_whole), rmdir(s_dir);
}

// A whole-model trainer with [train] batch = 1 holds activations for whole sequences (a 1 x 1 model
// is only for GPU host copies and pipeline stages).
Test(part, a_batch_of_one_gets_whole_sequences) {
    loco_config_t c;
    s_trainer_cfg(&c, "/tmp");
    c.batch = 1;
    char err[512];
    trainer_t *t = trainer_new(&c, 0, 1, err, sizeof err);
    cr_assert(t, "%s", err);
    cr_expect_eq(t->model->maxB, 1);
    cr_expect_eq(t->model->maxT, c.model.seq_len);
    trainer_destroy(&t);
}
