// CPU kernels of the GPT model. Shapes are in the comments: (B,T,C) etc., row-major.
// Backward kernels accumulate into their gradient outputs with +=; callers zero them explicitly.
// Non-matmul kernels run with OpenMP over the threads set by gpt_set_threads; matrix products
// go to OpenBLAS. Every kernel gives the same bits whatever the thread count: reductions never
// split across threads.
#ifndef LOCO_MODEL_KERNELS_H
#define LOCO_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

// out (B,T,C) = wte[inp] + wpe[t]
void k_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T, int C);
// dwte (V,C) += scatter of dout, dwpe (maxT,C) += sum over batch
void k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T, int C);

// out (N,C), mean (N), rstd (N) from inp (N,C); eps = 1e-5
void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                         const float *b, size_t N, int C);
// dinp (N,C) +=, dw (C) +=, db (C) +=
void k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *w, const float *mean, const float *rstd, size_t N, int C);

// out (N,OC) = inp (N,IC) · w^T (w is (OC,IC)) + bias (OC, may be NULL)
void k_matmul_forward(float *out, const float *inp, const float *w, const float *bias, size_t N, int IC, int OC);
// dinp (N,IC) +=, dw (OC,IC) +=, dbias (OC) += (dbias may be NULL)
void k_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                       const float *w, size_t N, int IC, int OC);

// Causal self-attention. qkv (B,T,3C) → out (B,T,C); att (B,NH,T,T) keeps the probabilities.
void k_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
// dqkv (B,T,3C) is overwritten; scratch holds 2·T·T floats per thread.
void k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                          float *scratch, int B, int T, int C, int NH);
// Reference attention written as plain loops (llm.c style), for tests of the fast kernel.
void k_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void k_attention_backward_ref(float *dqkv, float *datt_scratch /*(B,NH,T,T)*/, const float *dout,
                              const float *qkv, const float *att, int B, int T, int C, int NH);

// GELU, tanh approximation (GPT-2's).
void k_gelu_forward(float *out, const float *inp, size_t n);
void k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n); // dinp overwritten

// a (n) += b (n)
void k_add_inplace(float *a, const float *b, size_t n);

// Cross-entropy of softmax(logits (N,V)) against targets (N). losses (N) per position.
// Returns the mean loss.
float k_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, size_t N, int V);
// dlogits (N,V) = (softmax(logits) − onehot) / N; dlogits may alias logits.
void k_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, size_t N, int V);

#endif
