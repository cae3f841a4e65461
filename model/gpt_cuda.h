// The GPT-2 model on an NVIDIA GPU: the same model, parameter layout and math as model/gpt.h, with
// matrix products through cuBLAS and the other kernels written in CUDA (model/gpt_cuda.cu). Built
// only with `make CUDA=1` (which defines LOCO_CUDA); a plain C header, callable from C.
//
// Memory follows the CPU model: parameters, gradients, AdamW moments, activations and scratch each
// live in one flat device buffer, allocated once by gpt_cuda_new; nothing is allocated inside a
// step. The parameter buffer has exactly gpt.h's layer-major layout, so uploads, downloads,
// checkpoints, gossip slices and pipeline stages are the same offset ranges on both backends.
//
// Math is the CPU's: tanh GELU, LayerNorm eps 1e-5, causal attention scaled by 1/sqrt(head size),
// mean cross-entropy over B·T, AdamW with PyTorch's semantics (bias corrections in double on the
// host), torch's clip_grad_norm_ (norm accumulated in double). Results agree with the CPU within
// floating-point tolerance, not bit for bit (different summation orders; TF32 when enabled).
// Every reduction is deterministic: the same inputs give the same bits on the same GPU and build
// (no floating-point atomics; the embedding backward is a gather over a token index built on the
// host).
//
// Streams and synchronisation. All work of a model runs in order on its own compute stream;
// calls return once the work is queued, except the ones documented as waiting (they read results
// back: gpt_cuda_loss, gpt_cuda_grad_norm, downloads, ...). Host pointers passed to queued calls
// (tokens, x_in, dout) are copied before the call returns, so the caller may reuse them at once.
// A second "copy" stream moves parameter slices to pinned host memory while the compute stream
// runs on (gpt_cuda_params_to_host_async): this is how the outer step's pseudo-gradients leave
// the GPU without stalling inner steps.
//
// Errors. A CUDA or cuBLAS failure inside queued work (out of memory at gpt_cuda_new, a lost
// device, an illegal address) is sticky: every later call fails with -1 (or NaN for the float
// getters) and gpt_cuda_last_error() says what happened. Nothing here calls exit() or abort().
#ifndef LOCO_MODEL_GPT_CUDA_H
#define LOCO_MODEL_GPT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "model/gpt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpt_cuda gpt_cuda_t;

// 0 if a CUDA GPU with index `device` can be used; -1 with a user-facing reason in err ("no CUDA
// driver found", "no GPU with index 1 (this machine has 1)", ...) otherwise.
int gpt_cuda_available(int device, char *err, size_t errlen);

// Name and compute capability of GPU `device` (e.g. "NVIDIA H100 80GB HBM3", 90). 0 or -1.
int gpt_cuda_device_info(int device, char *name, size_t namelen, int *cc);

typedef struct {
    float beta1, beta2, eps, weight_decay;
} gpt_cuda_adamw_hparams_t;

// Allocates a model on GPU `device` for batches up to (maxB, maxT), maxT ≤ cfg->seq_len, with
// AdamW state (zero moments, step 0). tf32 = 1 lets cuBLAS use TF32 tensor cores for the matrix
// products (CUBLAS_TF32_TENSOR_OP_MATH); tf32 = 0 keeps them in full fp32 (CUBLAS_DEFAULT_MATH).
// Parameters are zero until gpt_cuda_init_params or an upload. NULL with the reason in err.
gpt_cuda_t *gpt_cuda_new(const gpt_config_t *cfg, int maxB, int maxT, int device, int tf32,
                         gpt_cuda_adamw_hparams_t hp, char *err, size_t errlen);
// Waits for queued work, frees everything and nulls *self_p. Idempotent.
void gpt_cuda_destroy(gpt_cuda_t **self_p);

// The last sticky error, or NULL if none.
const char *gpt_cuda_last_error(const gpt_cuda_t *m);

const gpt_config_t *gpt_cuda_config(const gpt_cuda_t *m);
size_t gpt_cuda_num_params(const gpt_cuda_t *m);
// Device bytes held by the model (params, grads, moments, activations, scratch).
size_t gpt_cuda_memory_bytes(const gpt_cuda_t *m);
// 0 or 1: whether TF32 is in use; can be changed between steps.
void gpt_cuda_set_tf32(gpt_cuda_t *m, int tf32);

// GPT-2 initialisation from seed, identical to gpt_init_params (computed on the host, uploaded).
int gpt_cuda_init_params(gpt_cuda_t *m, uint64_t seed);

// ---- Host <-> device transfers of the flat buffers. Offsets and counts are in floats of the
// flat layout; each call waits until the copy is done. 0, or -1 (range out of bounds, CUDA error).
int gpt_cuda_params_upload(gpt_cuda_t *m, const float *src, size_t off, size_t n);
int gpt_cuda_params_download(gpt_cuda_t *m, float *dst, size_t off, size_t n);
int gpt_cuda_grads_download(gpt_cuda_t *m, float *dst, size_t off, size_t n);
// Sets gradients, e.g. summed from elsewhere (tied embeddings across pipeline stages, tests).
int gpt_cuda_grads_upload(gpt_cuda_t *m, const float *src, size_t off, size_t n);
// AdamW state, for checkpoints: the moments m and v (num_params each) and Adam's step counter.
// A checkpoint written from these is the CPU trainer's (same sections, same layout).
int gpt_cuda_adamw_download(gpt_cuda_t *m, float *mom1, float *mom2, uint64_t *step);
int gpt_cuda_adamw_upload(gpt_cuda_t *m, const float *mom1, const float *mom2, uint64_t step);

// ---- Forward and backward (queued; see the stream notes above).

// Whole model: inputs and targets are host (B,T) token ids < V; targets may be NULL (no loss).
// With targets, the fused cross-entropy kernel leaves d(loss)/d(logits) in the logits buffer
// (llm.c's trick): read logits with gpt_cuda_logits_download after a forward *without* targets.
// 0 or -1 (bad shape, token out of range, sticky error).
int gpt_cuda_forward(gpt_cuda_t *m, const int32_t *inputs, const int32_t *targets, int B, int T);
// Blocks [l0, l1) as gpt_forward_range: with l0 == 0 from tokens, else from x_in (host, (B,T,C),
// copied to the device before the call returns). With l1 == L the range ends with the head (and
// the loss when targets are given); otherwise its output is read with gpt_cuda_range_output.
int gpt_cuda_forward_range(gpt_cuda_t *m, int l0, int l1, const int32_t *inputs, const float *x_in,
                           const int32_t *targets, int B, int T);
// Mean loss of the last forward with targets; waits for it. NaN on a sticky error.
float gpt_cuda_loss(gpt_cuda_t *m);
// Copies the last forward's logits (B,T,V) to dst; waits. See gpt_cuda_forward about targets.
int gpt_cuda_logits_download(gpt_cuda_t *m, float *dst);
// Copies the last range forward's output (B,T,C) to dst; waits.
int gpt_cuda_range_output(gpt_cuda_t *m, float *dst);

// Zeroes the gradients; backward passes accumulate into them (+=), as on the CPU.
int gpt_cuda_zero_grad(gpt_cuda_t *m);
// Backward of the last forward (which must have had targets if it ran the head).
int gpt_cuda_backward(gpt_cuda_t *m);
// Backward of the last range forward. dout (host, (B,T,C)) is the gradient of the range output
// (ignored when the range ended with the head). When l0 > 0 and dx_in is not NULL, dx_in (host,
// (B,T,C)) receives the gradient of x_in (this call then waits for it).
int gpt_cuda_backward_range(gpt_cuda_t *m, const float *dout, float *dx_in);

// ---- Optimizer (queued).

// Global L2 norm of the gradients (accumulated in double) and, when max_norm > 0, torch's
// clip_grad_norm_ scaling max_norm/(norm + 1e-6) if that is < 1; the gradients are scaled in place.
// Nothing is read back: gpt_cuda_grad_norm returns the norm (before clipping) when needed.
int gpt_cuda_clip_grad_norm(gpt_cuda_t *m, float max_norm);
// The norm computed by the last gpt_cuda_clip_grad_norm; waits. NaN on a sticky error.
float gpt_cuda_grad_norm(gpt_cuda_t *m);
// One AdamW update at learning rate lr: increments the step counter, then the PyTorch update with
// weight decay where the tensor is a matrix or an embedding (gpt_tensor_t.decay), as the CPU
// optimizer (rounded the same way element by element: no fused multiply-adds).
int gpt_cuda_adamw_update(gpt_cuda_t *m, float lr);

// ---- Outer-step support.
//
// The outer state (anchor φ, momentum) stays on the host, in pinned memory from
// gpt_cuda_host_alloc. gpt_cuda_params_to_host_async queues a copy of params[off, off+n) into
// pinned dst on the copy stream, ordered after all compute work queued so far, and returns at
// once: the compute stream runs on (the next inner steps) while the copy proceeds. The copy
// reads the parameters as they are when the queued work before the call has finished; the next
// AdamW update waits for an unfinished copy, so the snapshot is never torn. gpt_cuda_copy_wait
// waits for every queued copy; only then may the host read dst.
float *gpt_cuda_host_alloc(size_t n);   // pinned; NULL on failure
void gpt_cuda_host_free(float *p);
int gpt_cuda_params_to_host_async(gpt_cuda_t *m, float *dst, size_t off, size_t n);
int gpt_cuda_copy_wait(gpt_cuda_t *m);
// params[off, off+n) ← a·params[off, off+n) + b·x (x on the host, n floats, copied in first), each
// element rounded as the CPU's -ffp-contract=off code: fl(fl(a·p) + fl(b·x)). Covers the outer
// steps' θ ← φ (a = 0, b = 1) and θ ← θ + L style updates. Queued; x may be reused on return.
int gpt_cuda_params_axpby(gpt_cuda_t *m, size_t off, size_t n, float a, float b, const float *x);

#ifdef __cplusplus
}
#endif

#endif
