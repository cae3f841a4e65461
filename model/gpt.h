// The GPT-2 model on the CPU: parameter layout, forward and backward, layer ranges.
//
// Memory follows llm.c: parameters, gradients and activations each live in one contiguous fp32
// buffer, with named views into it, and nothing is allocated inside a step. Parameters are laid out
// layer by layer, so a pipeline stage or a gossip fragment is an offset range of the flat buffer:
//
//   wte (V,C) | wpe (maxT,C) | block 0 | block 1 | ... | block L-1 | lnf.w (C) | lnf.b (C)
//   block = ln1.w ln1.b (C) | qkv.w (3C,C) qkv.b (3C) | proj.w (C,C) proj.b (C) |
//           ln2.w ln2.b (C) | fc.w (4C,C) fc.b (4C) | fcproj.w (C,4C) fcproj.b (C)
//
// Weight matrices are stored (out, in) as torch.nn.Linear does; export transposes them to the
// (in, out) layout of Hugging Face's GPT-2 Conv1D. The LM head is tied to wte.
#ifndef LOCO_MODEL_GPT_H
#define LOCO_MODEL_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "model/part.h"

typedef struct {
    int layers;   // L
    int d_model;  // C
    int heads;    // NH; C % NH == 0
    int seq_len;  // maximum T, the number of learned positions
    int vocab;    // V
} gpt_config_t;

// Checks a config; on failure writes the reason to err and returns -1.
int gpt_config_check(const gpt_config_t *cfg, char *err, size_t errlen);

// Number of parameters of a config (all tensors, tied head counted once).
size_t gpt_num_params(const gpt_config_t *cfg);

// One named tensor of the flat parameter buffer, in storage order. Names are Hugging Face GPT-2's
// ("wte.weight", "h.3.attn.c_attn.weight", "ln_f.bias"); shape is loco's storage shape (out, in).
typedef struct {
    char name[48];
    size_t offset;     // in floats, from the start of the flat buffer
    size_t numel;
    int ndim;
    int shape[2];
    int layer;         // block index, or -1 for embeddings and the final LayerNorm
    int decay;         // 1 for matrices and embeddings (AdamW weight decay applies), 0 otherwise
    int transposed;    // 1 if Hugging Face stores it as (in, out), i.e. a Conv1D weight
} gpt_tensor_t;

// Number of tensors: 2 + 12·L + 2.
int gpt_num_tensors(const gpt_config_t *cfg);
// Fills *t with tensor i (0 ≤ i < gpt_num_tensors).
void gpt_tensor(const gpt_config_t *cfg, int i, gpt_tensor_t *t);
// Flat offset range [*begin, *end) of blocks [l0, l1).
void gpt_layer_span(const gpt_config_t *cfg, int l0, int l1, size_t *begin, size_t *end);

typedef struct {
    float *ln1w, *ln1b;         // (C)
    float *qkvw, *qkvb;         // (3C, C), (3C)
    float *projw, *projb;       // (C, C), (C)
    float *ln2w, *ln2b;         // (C)
    float *fcw, *fcb;           // (4C, C), (4C)
    float *fcprojw, *fcprojb;   // (C, 4C), (C)
} gpt_block_t;

typedef struct {
    float *wte;  // (V, C)
    float *wpe;  // (maxT, C)
    gpt_block_t *h; // L blocks
    float *lnfw, *lnfb; // (C)
} gpt_params_t;

// Named views of a flat buffer laid out as above (params, grads, or a device buffer of the GPU
// backend): fills *v, pointing v->h at blocks (L entries, caller-owned).
void gpt_param_views(const gpt_config_t *cfg, float *base, gpt_params_t *v, gpt_block_t *blocks);

// Per-block activations saved by the forward pass for the backward pass.
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; // (B,T,C), (B,T), (B,T)
    float *qkv;                       // (B,T,3C)
    float *att;                       // (B,NH,T,T) softmax probabilities, 0 above the diagonal
    float *atty;                      // (B,T,C) attention output before projection
    float *res2;                      // (B,T,C) residual after attention
    float *ln2, *ln2_mean, *ln2_rstd; // (B,T,C), (B,T), (B,T)
    float *fch;                       // (B,T,4C) before GELU
    float *fch_gelu;                  // (B,T,4C)
    float *res3;                      // (B,T,C) block output
} gpt_block_acts_t;

// Lays out the saved activations of L blocks, for a batch capacity of BT = B·T tokens, from base:
// fills a[0..L) and returns the first float after them. The CPU and the GPU model share it.
float *gpt_block_acts_views(gpt_block_acts_t *a, int L, float *base, size_t BT, int C, int NH, int T);
// Floats of one block's saved activations (what gpt_block_acts_views advances per block).
size_t gpt_block_acts_numel(size_t BT, int C, int NH, int T);

typedef struct gpt {
    gpt_config_t cfg;
    int maxB, maxT;                   // activation capacity
    size_t num_params;
    float *params;                    // flat (num_params)
    float *grads;                     // flat (num_params), same layout
    gpt_params_t p, g;                // views
    gpt_block_t *views_mem;           // storage for p.h and g.h

    size_t num_acts;
    float *acts;                      // flat activations
    float *encoded;                   // (B,T,C) embedding output = block 0 input
    gpt_block_acts_t *a;              // L entries
    float *lnf, *lnf_mean, *lnf_rstd; // (B,T,C), (B,T), (B,T)
    float *logits;                    // (B,T,V); holds d(loss)/d(logits) after backward
    float *losses;                    // (B,T)

    size_t num_scratch;
    float *scratch;                   // backward scratch, reused by every block
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_gelu, *dtmp; // views into scratch
    float *dattn_tl;                  // per-thread (T,T) attention scratch
    int threads;

    // State of the last forward pass, used by backward.
    int B, T, l0, l1;
    const int32_t *inputs, *targets;
    const float *x_in;                // block l0 input when l0 > 0
    float loss;                       // mean cross-entropy of the last forward with targets
    int shared;                       // params/grads belong to another model (gpt_new_shared)
    part_t part;                      // the parts of params/grads that exist (gpt_new_part); n = 0: all
    int acts_l0, acts_l1;             // blocks whose activations this model holds ([0, L) but for gpt_new_shared)
} gpt_t;

// Allocates a model able to run batches up to (maxB, maxT), maxT ≤ cfg->seq_len. Parameters are
// zero until gpt_init_params or a load. Returns NULL with a reason in err on failure.
gpt_t *gpt_new(const gpt_config_t *cfg, int maxB, int maxT, char *err, size_t errlen);
// The same, holding only part of the parameters and gradients (model/part.h): offsets stay those of
// the full layout, the memory is the parts' (a pipeline stage: its blocks, plus wte at the ends).
// Nothing outside the parts may be touched; gpt_init_params writes only the parts.
gpt_t *gpt_new_part(const gpt_config_t *cfg, const part_t *part, int maxB, int maxT, char *err, size_t errlen);
void gpt_destroy(gpt_t **self_p);
// An activation context over owner's parameters and gradients (borrowed: owner outlives it) for
// blocks [l0, l1) only: its forward/backward (of ranges inside [l0, l1)) read owner's params and
// accumulate into owner's grads, with activations and scratch of its own, sized for those blocks
// (plus the embedding output when l0 = 0, the head's when l1 = L) — so a pipeline stage keeps
// several micro-batches in flight (1F1B) over one set of weights, holding only its blocks'
// activations. Takes owner's thread count. NULL with a reason in err.
gpt_t *gpt_new_shared(gpt_t *owner, int l0, int l1, int maxB, int maxT, char *err, size_t errlen);

// GPT-2 initialisation, deterministic from seed: N(0, 0.02) weights, residual output projections
// N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weights 1.
void gpt_init_params(gpt_t *m, uint64_t seed);

// Threads for the non-matmul kernels and for OpenBLAS.
void gpt_set_threads(gpt_t *m, int threads);

// Whole model. inputs and targets are (B,T) token ids < V; targets may be NULL (no loss).
// Returns the mean loss (0 without targets). Logits are in m->logits until the next backward.
float gpt_forward(gpt_t *m, const int32_t *inputs, const int32_t *targets, int B, int T);

// A contiguous range of blocks [l0, l1). With l0 == 0 the range starts from tokens (embeddings);
// otherwise from x_in (B,T,C), which must stay valid until backward. With l1 == L the range ends
// with the final LayerNorm, head and loss (targets needed for a loss); otherwise its output is
// gpt_range_output(). Returns the mean loss when the head ran with targets, else 0.
float gpt_forward_range(gpt_t *m, int l0, int l1, const int32_t *inputs, const float *x_in,
                        const int32_t *targets, int B, int T);
// (B,T,C) output of the last forward's range (block l1-1's output).
const float *gpt_range_output(const gpt_t *m);

// Zeroes the gradient buffer. Backward passes accumulate into it (+=).
void gpt_zero_grad(gpt_t *m);

// Backward of the last forward (which must have had targets if it ran the head).
void gpt_backward(gpt_t *m);
// Backward of the last range forward. dout (B,T,C) is the gradient of the range output (ignored
// when the range ended with the head). When l0 > 0, dx_in (B,T,C) receives the gradient of x_in
// (overwritten, not accumulated).
void gpt_backward_range(gpt_t *m, const float *dout, float *dx_in);

// Bytes held by the model: params, grads, activations and scratch.
size_t gpt_memory_bytes(const gpt_t *m);

#endif
