#include "model/gpt.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/rng.h"

// ---------------------------------------------------------------------------------------------
// Parameter layout

enum { BLOCK_TENSORS = 12 };

static size_t s_block_numel(int C) {
    size_t c = (size_t)C;
    return 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c);
}

int gpt_config_check(const gpt_config_t *cfg, char *err, size_t errlen) {
    if (cfg->layers < 1 || cfg->layers > 1024) {
        snprintf(err, errlen, "layers must be in 1..1024, got %d", cfg->layers);
        return -1;
    }
    if (cfg->d_model < 1 || cfg->d_model > 65536) {
        snprintf(err, errlen, "d_model must be in 1..65536, got %d", cfg->d_model);
        return -1;
    }
    if (cfg->heads < 1 || cfg->d_model % cfg->heads != 0) {
        snprintf(err, errlen, "heads must divide d_model (%d), got %d", cfg->d_model, cfg->heads);
        return -1;
    }
    if (cfg->seq_len < 1 || cfg->seq_len > 65536) {
        snprintf(err, errlen, "seq_len must be in 1..65536, got %d", cfg->seq_len);
        return -1;
    }
    if (cfg->vocab < 2 || cfg->vocab > 65536) {
        // Shards store uint16 tokens, so no vocabulary can exceed 65536.
        snprintf(err, errlen, "vocab must be in 2..65536, got %d", cfg->vocab);
        return -1;
    }
    return 0;
}

size_t gpt_num_params(const gpt_config_t *cfg) {
    size_t C = (size_t)cfg->d_model;
    return (size_t)cfg->vocab * C + (size_t)cfg->seq_len * C + (size_t)cfg->layers * s_block_numel(cfg->d_model) + 2 * C;
}

int gpt_num_tensors(const gpt_config_t *cfg) { return 2 + BLOCK_TENSORS * cfg->layers + 2; }

void gpt_layer_span(const gpt_config_t *cfg, int l0, int l1, size_t *begin, size_t *end) {
    size_t base = ((size_t)cfg->vocab + (size_t)cfg->seq_len) * (size_t)cfg->d_model;
    size_t bl = s_block_numel(cfg->d_model);
    *begin = base + (size_t)l0 * bl;
    *end = base + (size_t)l1 * bl;
}

static void s_set(gpt_tensor_t *t, const char *name, size_t off, int d0, int d1, int layer, int decay, int tr) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = off;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    t->layer = layer;
    t->decay = decay;
    t->transposed = tr;
}

void gpt_tensor(const gpt_config_t *cfg, int i, gpt_tensor_t *t) {
    int C = cfg->d_model, L = cfg->layers;
    size_t off = 0;
    if (i == 0) { s_set(t, "wte.weight", 0, cfg->vocab, C, -1, 1, 0); return; }
    off += (size_t)cfg->vocab * C;
    if (i == 1) { s_set(t, "wpe.weight", off, cfg->seq_len, C, -1, 1, 0); return; }
    off += (size_t)cfg->seq_len * C;
    int k = i - 2;
    if (k < BLOCK_TENSORS * L) {
        int l = k / BLOCK_TENSORS, j = k % BLOCK_TENSORS;
        off += (size_t)l * s_block_numel(C);
        static const struct { const char *suffix; int d0, d1, decay, tr; } spec[BLOCK_TENSORS] = {
            {"ln_1.weight", 1, 0, 0, 0},        {"ln_1.bias", 1, 0, 0, 0},
            {"attn.c_attn.weight", 3, 1, 1, 1}, {"attn.c_attn.bias", 3, 0, 0, 0},
            {"attn.c_proj.weight", 1, 1, 1, 1}, {"attn.c_proj.bias", 1, 0, 0, 0},
            {"ln_2.weight", 1, 0, 0, 0},        {"ln_2.bias", 1, 0, 0, 0},
            {"mlp.c_fc.weight", 4, 1, 1, 1},    {"mlp.c_fc.bias", 4, 0, 0, 0},
            {"mlp.c_proj.weight", 1, 4, 1, 1},  {"mlp.c_proj.bias", 1, 0, 0, 0},
        };
        for (int q = 0; q < j; q++) off += (size_t)spec[q].d0 * C * (spec[q].d1 ? (size_t)spec[q].d1 * C : 1);
        char name[48];
        snprintf(name, sizeof name, "h.%d.%s", l, spec[j].suffix);
        s_set(t, name, off, spec[j].d0 * C, spec[j].d1 ? spec[j].d1 * C : 0, l, spec[j].decay, spec[j].tr);
        return;
    }
    off += (size_t)L * s_block_numel(C);
    if (k == BLOCK_TENSORS * L) s_set(t, "ln_f.weight", off, C, 0, -1, 0, 0);
    else s_set(t, "ln_f.bias", off + C, C, 0, -1, 0, 0);
}

void gpt_param_views(const gpt_config_t *cfg, float *base, gpt_params_t *v, gpt_block_t *blocks) {
    size_t C = (size_t)cfg->d_model;
    float *p = base;
    v->wte = p; p += (size_t)cfg->vocab * C;
    v->wpe = p; p += (size_t)cfg->seq_len * C;
    v->h = blocks;
    for (int l = 0; l < cfg->layers; l++) {
        gpt_block_t *b = &blocks[l];
        b->ln1w = p; p += C;
        b->ln1b = p; p += C;
        b->qkvw = p; p += 3 * C * C;
        b->qkvb = p; p += 3 * C;
        b->projw = p; p += C * C;
        b->projb = p; p += C;
        b->ln2w = p; p += C;
        b->ln2b = p; p += C;
        b->fcw = p; p += 4 * C * C;
        b->fcb = p; p += 4 * C;
        b->fcprojw = p; p += 4 * C * C;
        b->fcprojb = p; p += C;
    }
    v->lnfw = p; p += C;
    v->lnfb = p;
}

// ---------------------------------------------------------------------------------------------
// Construction

size_t gpt_block_acts_numel(size_t BT, int C, int NH, int T) {
    size_t c = (size_t)C;
    return BT * c * 5 + BT * 4 + BT * 3 * c + BT * (size_t)NH * (size_t)T + BT * 4 * c * 2;
}

float *gpt_block_acts_views(gpt_block_acts_t *a, int L, float *p, size_t BT, int C, int NH, int T) {
    size_t c = (size_t)C;
    for (int l = 0; l < L; l++, a++) {
        a->ln1 = p; p += BT * c;
        a->ln1_mean = p; p += BT;
        a->ln1_rstd = p; p += BT;
        a->qkv = p; p += BT * 3 * c;
        a->att = p; p += BT * (size_t)NH * (size_t)T;
        a->atty = p; p += BT * c;
        a->res2 = p; p += BT * c;
        a->ln2 = p; p += BT * c;
        a->ln2_mean = p; p += BT;
        a->ln2_rstd = p; p += BT;
        a->fch = p; p += BT * 4 * c;
        a->fch_gelu = p; p += BT * 4 * c;
        a->res3 = p; p += BT * c;
    }
    return p;
}

static float *s_alloc(size_t n) {
    // 64-byte alignment for vector loads; calloc-like zeroing so untouched memory is defined.
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes);
    return p;
}

static gpt_t *s_new(const gpt_config_t *cfg, int maxB, int maxT, gpt_t *owner, int l0, int l1, const part_t *part,
                    char *err, size_t errlen);

gpt_t *gpt_new(const gpt_config_t *cfg, int maxB, int maxT, char *err, size_t errlen) {
    return s_new(cfg, maxB, maxT, NULL, 0, cfg->layers, NULL, err, errlen);
}

gpt_t *gpt_new_part(const gpt_config_t *cfg, const part_t *part, int maxB, int maxT, char *err, size_t errlen) {
    return s_new(cfg, maxB, maxT, NULL, 0, cfg->layers, part, err, errlen);
}

gpt_t *gpt_new_shared(gpt_t *owner, int l0, int l1, int maxB, int maxT, char *err, size_t errlen) {
    if (l0 < 0 || l1 > owner->cfg.layers || l0 >= l1) {
        snprintf(err, errlen, "block range [%d, %d) is not inside [0, %d)", l0, l1, owner->cfg.layers);
        return NULL;
    }
    gpt_t *m = s_new(&owner->cfg, maxB, maxT, owner, l0, l1, NULL, err, errlen);
    if (m) gpt_set_threads(m, owner->threads);
    return m;
}

static gpt_t *s_new(const gpt_config_t *cfg, int maxB, int maxT, gpt_t *owner, int l0, int l1, const part_t *part,
                    char *err, size_t errlen) {
    if (gpt_config_check(cfg, err, errlen) != 0) return NULL;
    if (part && part_check(part, gpt_num_params(cfg), err, errlen) != 0) return NULL;
    if (maxB < 1 || maxT < 1 || maxT > cfg->seq_len) {
        snprintf(err, errlen, "batch %d x %d does not fit the model (seq_len %d)", maxB, maxT, cfg->seq_len);
        return NULL;
    }
    gpt_t *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->cfg = *cfg;
    m->maxB = maxB;
    m->maxT = maxT;
    m->threads = 1;
    int L = cfg->layers;
    size_t C = (size_t)cfg->d_model, NH = (size_t)cfg->heads, V = (size_t)cfg->vocab;
    size_t BT = (size_t)maxB * (size_t)maxT, T = (size_t)maxT;

    m->num_params = gpt_num_params(cfg);
    m->views_mem = calloc(2 * (size_t)L, sizeof(gpt_block_t));
    if (owner) { // an activation context over the owner's parameters and gradients
        m->params = owner->params;
        m->grads = owner->grads;
        m->part = owner->part;
        m->shared = 1;
    } else {
        if (part) m->part = *part;
        m->params = part_alloc(m->num_params, sizeof(float), &m->part);
        m->grads = part_alloc(m->num_params, sizeof(float), &m->part);
    }
    m->a = calloc((size_t)L, sizeof(gpt_block_acts_t));
    if (!m->views_mem || !m->params || !m->grads || !m->a) goto oom;
    gpt_param_views(cfg, m->params, &m->p, m->views_mem);
    gpt_param_views(cfg, m->grads, &m->g, m->views_mem + L);

    // Activations of blocks [l0, l1) only (a pipeline stage's context); the embedding output with
    // block 0, the head's with block L-1. Views outside stay NULL.
    m->acts_l0 = l0;
    m->acts_l1 = l1;
    int head = l1 == L;
    m->num_acts = (l0 == 0 ? BT * C : 0) + (size_t)(l1 - l0) * gpt_block_acts_numel(BT, (int)C, (int)NH, (int)T) +
                  (head ? BT * C + 2 * BT + BT * V + BT : 0);
    m->acts = s_alloc(m->num_acts);
    if (!m->acts) goto oom;
    float *p = m->acts;
    if (l0 == 0) m->encoded = p, p += BT * C;
    p = gpt_block_acts_views(m->a + l0, l1 - l0, p, BT, (int)C, (int)NH, (int)T);
    if (head) {
        m->lnf = p; p += BT * C;
        m->lnf_mean = p; p += BT;
        m->lnf_rstd = p; p += BT;
        m->logits = p; p += BT * V;
        m->losses = p; p += BT;
    }

    // Per-thread attention scratch for as many threads as gpt_set_threads may later ask for: an
    // earlier model's gpt_set_threads(1) must not cap this one at 1.
    int maxthreads = omp_get_max_threads();
    if (omp_get_num_procs() > maxthreads) maxthreads = omp_get_num_procs();
    if (maxthreads < 1) maxthreads = 1;
    m->num_scratch = BT * C * 4 + BT * 3 * C + BT * 4 * C * 2 + (size_t)maxthreads * 2 * T * T;
    m->scratch = s_alloc(m->num_scratch);
    if (!m->scratch) goto oom;
    p = m->scratch;
    m->dres = p; p += BT * C;
    m->dln = p; p += BT * C;
    m->datty = p; p += BT * C;
    m->dtmp = p; p += BT * C;
    m->dqkv = p; p += BT * 3 * C;
    m->dfch = p; p += BT * 4 * C;
    m->dfch_gelu = p; p += BT * 4 * C;
    m->dattn_tl = p;
    return m;
oom:
    snprintf(err, errlen, "out of memory allocating a %zu-parameter model for batch %d x %d",
             gpt_num_params(cfg), maxB, maxT);
    gpt_destroy(&m);
    return NULL;
}

void gpt_destroy(gpt_t **self_p) {
    if (!self_p || !*self_p) return;
    gpt_t *m = *self_p;
    if (!m->shared) {
        part_free(m->params, m->num_params, sizeof(float), &m->part);
        part_free(m->grads, m->num_params, sizeof(float), &m->part);
    }
    free(m->acts);
    free(m->scratch);
    free(m->views_mem);
    free(m->a);
    free(m);
    *self_p = NULL;
}

size_t gpt_memory_bytes(const gpt_t *m) {
    return 2 * part_bytes(m->num_params, sizeof(float), &m->part) + (m->num_acts + m->num_scratch) * sizeof(float);
}

void gpt_set_threads(gpt_t *m, int threads) {
    if (threads < 1) threads = 1;
    int cap = omp_get_max_threads();
    // The per-thread attention scratch was sized at gpt_new time (see there).
    size_t T = (size_t)m->maxT;
    size_t avail = (m->num_scratch - (size_t)(m->dattn_tl - m->scratch)) / (2 * T * T);
    if ((size_t)threads > avail) threads = (int)avail;
    (void)cap;
    m->threads = threads;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

// The draws of tensor elements [0, numel) go in order; elements outside the model's parts are skipped
// without being drawn (rng_skip_normals), so a part holds exactly what the whole model would.
void gpt_init_params(gpt_t *m, uint64_t seed) {
    const gpt_config_t *cfg = &m->cfg;
    const part_t *pt = m->part.n ? &m->part : NULL;
    rng_t r;
    rng_seed(&r, seed);
    float resid_std = 0.02f / sqrtf(2.0f * (float)cfg->layers);
    int n = gpt_num_tensors(cfg);
    for (int i = 0; i < n; i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        const char *dot = t.name + strlen(t.name) - 5; // ".bias" or "eight"
        // Output projections of the residual branches (attn.c_proj, mlp.c_proj) get the scaled std.
        float std = strstr(t.name, "c_proj.weight") ? resid_std : 0.02f;
        float one = strcmp(dot, ".bias") == 0 ? 0.0f : 1.0f;
        // Spans of this tensor inside the parts, in order: [b, e) relative to the tensor.
        size_t at = 0; // elements of the tensor drawn or skipped so far
        for (int k = 0; k < (pt ? pt->n : 1); k++) {
            size_t lo = pt ? pt->off[k] : 0, hi = pt ? pt->off[k] + pt->len[k] : t.offset + t.numel;
            size_t b = lo > t.offset ? lo - t.offset : 0, e = hi < t.offset + t.numel ? hi - t.offset : t.numel;
            if (hi <= t.offset || b >= t.numel || e <= b) continue;
            float *w = m->params + t.offset;
            if (t.ndim == 1) {
                for (size_t j = b; j < e; j++) w[j] = one;
                continue;
            }
            rng_skip_normals(&r, b - at);
            for (size_t j = b; j < e; j++) w[j] = std * rng_normal(&r);
            at = e;
        }
        if (t.ndim == 2) rng_skip_normals(&r, t.numel - at);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

float gpt_forward(gpt_t *m, const int32_t *inputs, const int32_t *targets, int B, int T) {
    return gpt_forward_range(m, 0, m->cfg.layers, inputs, NULL, targets, B, T);
}

static void s_block_forward(gpt_t *m, int l, const float *x, int B, int T) {
    int C = m->cfg.d_model, NH = m->cfg.heads;
    size_t BT = (size_t)B * T;
    gpt_block_t *w = &m->p.h[l];
    gpt_block_acts_t *a = &m->a[l];
    k_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1w, w->ln1b, BT, C);
    k_matmul_forward(a->qkv, a->ln1, w->qkvw, w->qkvb, BT, C, 3 * C);
    k_attention_forward(a->atty, a->att, a->qkv, B, T, C, NH);
    k_matmul_forward(a->res2, a->atty, w->projw, w->projb, BT, C, C);
    k_add_inplace(a->res2, x, BT * C);
    k_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, w->ln2w, w->ln2b, BT, C);
    k_matmul_forward(a->fch, a->ln2, w->fcw, w->fcb, BT, C, 4 * C);
    k_gelu_forward(a->fch_gelu, a->fch, BT * 4 * C);
    k_matmul_forward(a->res3, a->fch_gelu, w->fcprojw, w->fcprojb, BT, 4 * C, C);
    k_add_inplace(a->res3, a->res2, BT * C);
}

// OpenMP's thread count is per calling thread and shared by every model it runs: set this model's
// own before its kernels run, or k_attention_backward could run more threads than the model has
// scratch for (another model's gpt_set_threads, or a model driven from another thread).
static void s_use_threads(const gpt_t *m) {
    if (omp_get_max_threads() != m->threads) {
        omp_set_num_threads(m->threads);
        openblas_set_num_threads(m->threads);
    }
}

float gpt_forward_range(gpt_t *m, int l0, int l1, const int32_t *inputs, const float *x_in,
                        const int32_t *targets, int B, int T) {
    assert(l0 >= m->acts_l0 && l1 <= m->acts_l1); // a range context runs only its own blocks
    s_use_threads(m);
    const gpt_config_t *cfg = &m->cfg;
    int L = cfg->layers, C = cfg->d_model, V = cfg->vocab;
    size_t BT = (size_t)B * T;
    m->B = B;
    m->T = T;
    m->l0 = l0;
    m->l1 = l1;
    m->inputs = inputs;
    m->targets = targets;
    m->x_in = x_in;
    m->loss = 0.0f;

    const float *x;
    if (l0 == 0) {
        k_encoder_forward(m->encoded, inputs, m->p.wte, m->p.wpe, B, T, C);
        x = m->encoded;
    } else {
        x = x_in;
    }
    for (int l = l0; l < l1; l++) {
        s_block_forward(m, l, x, B, T);
        x = m->a[l].res3;
    }
    if (l1 < L) return 0.0f;

    k_layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, x, m->p.lnfw, m->p.lnfb, BT, C);
    k_matmul_forward(m->logits, m->lnf, m->p.wte, NULL, BT, C, V);
    if (!targets) return 0.0f;
    m->loss = k_crossentropy_forward(m->losses, m->logits, targets, BT, V);
    return m->loss;
}

const float *gpt_range_output(const gpt_t *m) {
    return m->l1 > m->l0 ? m->a[m->l1 - 1].res3 : (m->l0 == 0 ? m->encoded : m->x_in);
}

// ---------------------------------------------------------------------------------------------
// Backward

void gpt_zero_grad(gpt_t *m) {
    if (!m->part.n) {
        memset(m->grads, 0, m->num_params * sizeof(float));
        return;
    }
    for (int i = 0; i < m->part.n; i++) memset(m->grads + m->part.off[i], 0, m->part.len[i] * sizeof(float));
}

void gpt_backward(gpt_t *m) { gpt_backward_range(m, NULL, NULL); }

void gpt_backward_range(gpt_t *m, const float *dout, float *dx_in) {
    s_use_threads(m);
    const gpt_config_t *cfg = &m->cfg;
    int L = cfg->layers, C = cfg->d_model, NH = cfg->heads, V = cfg->vocab;
    int B = m->B, T = m->T, l0 = m->l0, l1 = m->l1;
    size_t BT = (size_t)B * T;
    float *dres = m->dres; // gradient flowing along the residual stream (B,T,C)

    if (l1 == L) {
        const float *x = l1 > l0 ? m->a[l1 - 1].res3 : (l0 == 0 ? m->encoded : m->x_in);
        // dlogits overwrite the logits: llm.c's trick, one (B,T,V) buffer instead of two.
        k_crossentropy_backward(m->logits, m->logits, m->targets, BT, V);
        memset(m->dln, 0, BT * C * sizeof(float));
        k_matmul_backward(m->dln, m->g.wte, NULL, m->logits, m->lnf, m->p.wte, BT, C, V);
        memset(dres, 0, BT * C * sizeof(float));
        k_layernorm_backward(dres, m->g.lnfw, m->g.lnfb, m->dln, x, m->p.lnfw, m->lnf_mean, m->lnf_rstd, BT, C);
    } else {
        memcpy(dres, dout, BT * C * sizeof(float));
    }

    for (int l = l1 - 1; l >= l0; l--) {
        gpt_block_t *w = &m->p.h[l], *g = &m->g.h[l];
        gpt_block_acts_t *a = &m->a[l];
        const float *x = l > l0 ? m->a[l - 1].res3 : (l0 == 0 ? m->encoded : m->x_in);
        // MLP branch: res3 = res2 + fcproj(gelu(fc(ln2(res2)))); dres is d(res3) and becomes d(res2).
        memset(m->dfch_gelu, 0, BT * 4 * C * sizeof(float));
        k_matmul_backward(m->dfch_gelu, g->fcprojw, g->fcprojb, dres, a->fch_gelu, w->fcprojw, BT, 4 * C, C);
        k_gelu_backward(m->dfch, a->fch, m->dfch_gelu, BT * 4 * C);
        memset(m->dln, 0, BT * C * sizeof(float));
        k_matmul_backward(m->dln, g->fcw, g->fcb, m->dfch, a->ln2, w->fcw, BT, C, 4 * C);
        k_layernorm_backward(dres, g->ln2w, g->ln2b, m->dln, a->res2, w->ln2w, a->ln2_mean, a->ln2_rstd, BT, C);
        // Attention branch: res2 = x + proj(attn(qkv(ln1(x)))); dres becomes d(x).
        memset(m->datty, 0, BT * C * sizeof(float));
        k_matmul_backward(m->datty, g->projw, g->projb, dres, a->atty, w->projw, BT, C, C);
        k_attention_backward(m->dqkv, m->datty, a->qkv, a->att, m->dattn_tl, B, T, C, NH);
        memset(m->dln, 0, BT * C * sizeof(float));
        k_matmul_backward(m->dln, g->qkvw, g->qkvb, m->dqkv, a->ln1, w->qkvw, BT, C, 3 * C);
        k_layernorm_backward(dres, g->ln1w, g->ln1b, m->dln, x, w->ln1w, a->ln1_mean, a->ln1_rstd, BT, C);
    }

    if (l0 == 0) {
        k_encoder_backward(m->g.wte, m->g.wpe, dres, m->inputs, B, T, C);
    } else if (dx_in) {
        memcpy(dx_in, dres, BT * C * sizeof(float));
    }
}
