// The GPT-2 model on an NVIDIA GPU (see model/gpt_cuda.h). The structure mirrors model/gpt.c
// function by function, so the two can be read side by side: every cblas_sgemm of the CPU code is
// one s_gemm here with the same row-major arguments, and every CPU kernel of model/kernels.c has
// a CUDA kernel below with the same shapes and the same += / overwrite convention.
extern "C" {
#include "model/gpt.h"
}
#include "model/gpt_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Sizes

enum {
    ROWS_PER_CHUNK = 32,    // rows summed by one thread in the two-stage column sums
    NORM_BLOCKS = 1024,     // fixed grid of the grad-norm reduction: same bits on every GPU
    STAGE_FLOATS = 1 << 22, // device staging for gpt_cuda_params_axpby (16 MiB)
};
static const size_t CUBLAS_WORKSPACE = (size_t)32 << 20; // Hopper wants 32 MiB

typedef gpt_block_acts_t block_acts_t; // the CPU model's layout (model/gpt.h)

struct gpt_cuda {
    gpt_config_t cfg;
    int maxB, maxT, Vp;        // Vp: row stride of the logits, V rounded up to 64
    int device, tf32;
    size_t num_params;
    cudaStream_t stream, copy_stream;
    cudaEvent_t compute_mark, copy_done, tok_done;
    int copy_pending;
    cublasHandle_t blas;
    void *blas_ws;

    gpt_cuda_adamw_hparams_t hp;
    uint64_t adam_step;

    // Device buffers.
    float *params, *grads, *moments; // moments: m (n) then v (n)
    uint8_t *decay;                  // (n) 1 where weight decay applies
    gpt_params_t p, g;               // views (device pointers)
    gpt_block_t *views_mem;
    size_t num_acts;
    float *acts, *encoded;
    block_acts_t *a;
    float *lnf, *lnf_mean, *lnf_rstd, *logits /*(B,T,Vp)*/, *losses;
    size_t num_scratch;
    float *scratch, *dres, *dln, *datty, *dqkv, *dfch, *datt, *x_in, *partial, *stage;
    double *norm_partial;
    float *scal;                     // [0] mean loss, [1] grad norm, [2] clip coefficient
    int32_t *tok;                    // inputs, targets, order, bucket start, bucket token

    // Host buffers.
    int32_t *htok;                   // pinned, same layout as tok
    int32_t *hcount;                 // (V) counting-sort cursors
    float *hscal;                    // pinned (3)

    // Last forward.
    int B, T, l0, l1, has_targets, nbuckets, fwd_valid, loss_valid;

    int failed;
    char err[512];
};

// ---------------------------------------------------------------------------------------------
// Errors

static void s_set_err(gpt_cuda_t *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
}

// Marks the model failed (sticky) and records why. Returns 0 so it can end a `&&` chain.
static int s_cuda_fail(gpt_cuda_t *m, cudaError_t e, const char *what, int line) {
    if (!m->failed) s_set_err(m, "CUDA error in %s (gpt_cuda.cu:%d): %s", what, line, cudaGetErrorString(e));
    m->failed = 1;
    return 0;
}
#define CU(call) ((e_ = (call)) == cudaSuccess ? 1 : s_cuda_fail(m, e_, #call, __LINE__))
#define CHECK_LAUNCH() CU(cudaGetLastError())

static int s_blas_ok(gpt_cuda_t *m, cublasStatus_t s, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    if (!m->failed) s_set_err(m, "cuBLAS error %d (gpt_cuda.cu:%d)", (int)s, line);
    m->failed = 1;
    return 0;
}

// Entry of every public operation: refuses after a sticky error, selects the model's device.
static int s_enter(gpt_cuda_t *m) {
    cudaError_t e_;
    if (m->failed) return -1;
    return CU(cudaSetDevice(m->device)) ? 0 : -1;
}

static unsigned s_blocks(size_t n, int threads) { return (unsigned)((n + (size_t)threads - 1) / (size_t)threads); }

// ---------------------------------------------------------------------------------------------
// Matrix products. s_gemm takes row-major operands exactly like the CPU's cblas_sgemm(CblasRowMajor,
// ...) calls: C (M,N) = alpha·op(A)·op(B) + beta·C, batched with element strides sA, sB, sC.
// cuBLAS is column-major, where a row-major X is Xᵀ, so it computes Cᵀ = op(B)ᵀ·op(A)ᵀ: the
// operands swap places and keep their transpose flags.

static void s_gemm(gpt_cuda_t *m, int transA, int transB, int M, int N, int K, float alpha,
                   const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                   float beta, float *C, int ldc, long long sC, int batch) {
    if (m->failed) return;
    cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N, opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (batch == 1)
        s = cublasSgemm(m->blas, opB, opA, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc);
    else
        s = cublasSgemmStridedBatched(m->blas, opB, opA, N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta,
                                      C, ldc, sC, batch);
    s_blas_ok(m, s, __LINE__);
}

// ---------------------------------------------------------------------------------------------
// Kernels. Shapes in comments; backward kernels say whether they accumulate (+=) or overwrite.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// out (B,T,C) = wte[inp] + wpe[t]
__global__ void k_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe,
                                  int BT, int T, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)BT * C) return;
    int bt = (int)(i / C), c = (int)(i % C), t = bt % T;
    out[i] = wte[(size_t)inp[bt] * C + c] + wpe[(size_t)t * C + c];
}

// dwte (V,C) += Σ dout over the positions holding each token. The host sorted the positions by
// token (order, bucket start, bucket token), so one thread owns one (token, channel) and adds the
// positions in increasing (b,t) order, starting from the current dwte: the CPU's order exactly.
// grid (nbuckets, ceil(C/threads))
__global__ void k_wte_backward(float *dwte, const float *dout, const int32_t *order, const int32_t *bstart,
                               const int32_t *btok, int C) {
    int bkt = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *w = dwte + (size_t)btok[bkt] * C + c;
    float acc = *w;
    for (int p = bstart[bkt]; p < bstart[bkt + 1]; p++) acc += dout[(size_t)order[p] * C + c];
    *w = acc;
}

// dwpe (T,C) += Σ_b dout[b,t]
__global__ void k_wpe_backward(float *dwpe, const float *dout, int B, int T, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * C) return;
    float acc = dwpe[i];
    for (int b = 0; b < B; b++) acc += dout[(size_t)b * T * C + i];
    dwpe[i] = acc;
}

// One warp per row. out (N,C), mean (N), rstd (N) from inp (N,C); eps 1e-5, two-pass variance.
__global__ void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                    const float *b, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float mu = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - mu;
        v += d * d;
    }
    float r = 1.0f / sqrtf(warp_sum(v) / (float)C + 1e-5f);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - mu) * r * w[c] + b[c];
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// One warp per row: dinp (N,C) += (or = when !accumulate) the LayerNorm input gradient.
__global__ void k_layernorm_backward_rows(float *dinp, const float *dout, const float *inp, const float *w,
                                          const float *mean, const float *rstd, int N, int C, int accumulate) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float mu = mean[row], r = rstd[row];
    float a = 0.0f, bsum = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float dn = dy[c] * w[c];
        a += dn;
        bsum += dn * ((x[c] - mu) * r);
    }
    float dnorm_mean = warp_sum(a) / (float)C, dnorm_norm_mean = warp_sum(bsum) / (float)C;
    float *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - mu) * r;
        float g = (dy[c] * w[c] - dnorm_mean - norm * dnorm_norm_mean) * r;
        dx[c] = accumulate ? dx[c] + g : g;
    }
}

// First stage of dw, db for LayerNorm: partial (nchunks, 2C), chunk k holds Σ over its rows of
// dout·norm (first C) and dout (next C). grid (nchunks, ceil(C/threads))
__global__ void k_layernorm_backward_partial(float *partial, const float *dout, const float *inp,
                                             const float *mean, const float *rstd, int N, int C) {
    int k = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int i0 = k * ROWS_PER_CHUNK, i1 = min(N, i0 + ROWS_PER_CHUNK);
    float aw = 0.0f, ab = 0.0f;
    for (int i = i0; i < i1; i++) {
        float dy = dout[(size_t)i * C + c];
        aw += dy * ((inp[(size_t)i * C + c] - mean[i]) * rstd[i]);
        ab += dy;
    }
    partial[(size_t)k * 2 * C + c] = aw;
    partial[(size_t)k * 2 * C + C + c] = ab;
}

// First stage of a bias gradient: partial (nchunks, C) = per-chunk column sums of x (N,C).
__global__ void k_colsum_partial(float *partial, const float *x, int N, int C) {
    int k = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int i0 = k * ROWS_PER_CHUNK, i1 = min(N, i0 + ROWS_PER_CHUNK);
    float acc = 0.0f;
    for (int i = i0; i < i1; i++) acc += x[(size_t)i * C + c];
    partial[(size_t)k * C + c] = acc;
}

// Second stage: out0 (C) += Σ_k partial[k·stride + c]; out1 (C, may be NULL) += Σ_k partial[k·stride + C + c].
__global__ void k_colsum_finalize(float *out0, float *out1, const float *partial, int nchunks, int C, int stride) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < nchunks; k++) {
        a += partial[(size_t)k * stride + c];
        if (out1) b += partial[(size_t)k * stride + C + c];
    }
    out0[c] += a;
    if (out1) out1[c] += b;
}

// out (N,OC) += bias (OC, may be NULL) + resid (N,OC, may be NULL)
__global__ void k_bias_residual(float *out, const float *bias, const float *resid, size_t n, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = out[i];
    if (bias) v += bias[i % OC];
    if (resid) v += resid[i];
    out[i] = v;
}

// One warp per row of att (B·NH·T rows of T): scaled scores in, causal softmax out (0 above the
// diagonal). The row index modulo T is the query position.
__global__ void k_softmax_causal_forward(float *att, int rows, int T) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int i = r % T;
    float *row = att + (size_t)r * T;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, row[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j <= i; j += 32) s += expf(row[j] - mx);
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) row[j] = j <= i ? expf(row[j] - mx) * inv : 0.0f;
}

// One warp per row: datt holds dP on entry, dS = P ⊙ (dP − Σ_j P·dP) on return, 0 above the diagonal.
__global__ void k_softmax_causal_backward(float *datt, const float *att, int rows, int T) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= rows) return;
    int i = r % T;
    float *dr = datt + (size_t)r * T;
    const float *pr = att + (size_t)r * T;
    float d = 0.0f;
    for (int j = lane; j <= i; j += 32) d += pr[j] * dr[j];
    d = warp_sum(d);
    for (int j = lane; j < T; j += 32) dr[j] = j <= i ? pr[j] * (dr[j] - d) : 0.0f;
}

#define GELU_SCALE 0.7978845608028654f // sqrt(2/pi)

__global__ void k_gelu_forward(float *out, const float *inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float u = GELU_SCALE * (x + 0.044715f * x * x * x);
    out[i] = 0.5f * x * (1.0f + tanhf(u));
}

// dinp (n) = gelu'(inp) · dout, overwritten; dinp may alias dout.
__global__ void k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float u = GELU_SCALE * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float sech2 = 1.0f - th * th;
    float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = g * dout[i];
}

// Online softmax state (max, sum of exp(x − max)), merged across threads.
__device__ __forceinline__ void s_softmax_merge(float &m, float &s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        s = s2;
        return;
    }
    float nm = fmaxf(m, m2);
    s = s * expf(m - nm) + s2 * expf(m2 - nm);
    m = nm;
}

// One block per row of logits (N rows of V, row stride ldv). Writes losses[row] = −log softmax at
// the target and overwrites the row with d(mean loss)/d(logits) = (softmax − onehot)·invN: the
// cross-entropy forward and backward fused, as the logits are read anyway.
__global__ void k_crossentropy_fused(float *logits, float *losses, const int32_t *targets, int V, int ldv,
                                     float invN) {
    __shared__ float sm[32], ss[32];
    int row = blockIdx.x;
    float *x = logits + (size_t)row * ldv;
    int tgt = targets[row];
    float xt = x[tgt];
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = x[i];
        if (v > m) {
            s = s * expf(m - v) + 1.0f; // expf(-inf) = 0 on the first element
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        s_softmax_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nwarps ? sm[lane] : -INFINITY;
        s = lane < nwarps ? ss[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            s_softmax_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            sm[0] = m;
            ss[0] = s;
            losses[row] = logf(s) + m - xt;
        }
    }
    __syncthreads();
    float mx = sm[0], inv = 1.0f / ss[0];
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float d = expf(x[i] - mx) * inv * invN;
        x[i] = i == tgt ? d - invN : d;
    }
}

// scal[0] = mean of losses (N), summed in double in a fixed order. One block of 256 threads.
__global__ void k_mean_loss(float *scal, const float *losses, int N) {
    __shared__ double sh[256];
    double a = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) a += (double)losses[i];
    sh[threadIdx.x] = a;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) scal[0] = (float)(sh[0] / (double)N);
}

// partial[block] = Σ x² over a fixed grid-stride slice, in double. 256 threads, NORM_BLOCKS blocks.
__global__ void k_sumsq_partial(double *partial, const float *x, size_t n) {
    __shared__ double sh[256];
    double a = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        a += (double)x[i] * (double)x[i];
    sh[threadIdx.x] = a;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// scal[1] = norm, scal[2] = torch's clip coefficient (1 when no clipping). One block of 256.
__global__ void k_norm_finalize(float *scal, const double *partial, int nparts, float max_norm) {
    __shared__ double sh[256];
    double a = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) a += partial[i];
    sh[threadIdx.x] = a;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float norm = (float)sqrt(sh[0]);
        float coef = 1.0f;
        if (max_norm > 0.0f) {
            float c = __fdiv_rn(max_norm, __fadd_rn(norm, 1e-6f));
            if (c < 1.0f) coef = c;
        }
        scal[1] = norm;
        scal[2] = coef;
    }
}

__global__ void k_scale_by(float *x, size_t n, const float *coefp) {
    float c = *coefp;
    if (c == 1.0f) return;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fmul_rn(x[i], c);
}

// AdamW, element by element as optim_adamw_update on the CPU (built with -ffp-contract=off): the
// _rn intrinsics keep the compiler from fusing multiply-adds, so the same inputs give the same bits.
__global__ void k_adamw(float *params, const float *grads, float *m1, float *m2, const uint8_t *decay, size_t n,
                        float b1, float b2, float eps, float step_size, float bc2_sqrt, float decay_factor) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = grads[i];
    float p = decay[i] ? __fmul_rn(params[i], decay_factor) : params[i];
    float mi = __fadd_rn(__fmul_rn(m1[i], b1), __fmul_rn(g, 1.0f - b1));
    float vi = __fadd_rn(__fmul_rn(m2[i], b2), __fmul_rn(__fmul_rn(g, g), 1.0f - b2));
    m1[i] = mi;
    m2[i] = vi;
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    params[i] = __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
}

// y (n) = a·y + b·x, rounded as fl(fl(a·y) + fl(b·x)).
__global__ void k_axpby(float *y, const float *x, size_t n, float a, float b) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __fadd_rn(__fmul_rn(a, y[i]), __fmul_rn(b, x[i]));
}

// ---------------------------------------------------------------------------------------------
// Layer operations (host side, queue work on m->stream)

// out (N,OC) = inp (N,IC) · wᵀ (w is (OC,IC)) + bias (OC, may be NULL) + resid (N,OC, may be NULL)
static void s_matmul_forward(gpt_cuda_t *m, float *out, const float *inp, const float *w, const float *bias,
                             const float *resid, int N, int IC, int OC) {
    cudaError_t e_;
    s_gemm(m, 0, 1, N, OC, IC, 1.0f, inp, IC, 0, w, IC, 0, 0.0f, out, OC, 0, 1);
    if (bias || resid) {
        size_t n = (size_t)N * OC;
        k_bias_residual<<<s_blocks(n, 256), 256, 0, m->stream>>>(out, bias, resid, n, OC);
        CHECK_LAUNCH();
    }
}

// Column sums of x (N,C) added to out (C): deterministic two-stage reduction.
static void s_colsum_add(gpt_cuda_t *m, float *out, const float *x, int N, int C) {
    cudaError_t e_;
    int nchunks = (N + ROWS_PER_CHUNK - 1) / ROWS_PER_CHUNK;
    dim3 grid((unsigned)nchunks, s_blocks((size_t)C, 128));
    k_colsum_partial<<<grid, 128, 0, m->stream>>>(m->partial, x, N, C);
    k_colsum_finalize<<<s_blocks((size_t)C, 128), 128, 0, m->stream>>>(out, NULL, m->partial, nchunks, C, C);
    CHECK_LAUNCH();
}

// dinp (N,IC) = dout · w (overwritten), dw (OC,IC) += doutᵀ · inp, dbias (OC) += Σ_rows dout.
static void s_matmul_backward(gpt_cuda_t *m, float *dinp, float *dw, float *dbias, const float *dout,
                              const float *inp, const float *w, int N, int IC, int OC) {
    s_gemm(m, 0, 0, N, IC, OC, 1.0f, dout, OC, 0, w, IC, 0, 0.0f, dinp, IC, 0, 1);
    s_gemm(m, 1, 0, OC, IC, N, 1.0f, dout, OC, 0, inp, IC, 0, 1.0f, dw, IC, 0, 1);
    if (dbias) s_colsum_add(m, dbias, dout, N, OC);
}

static void s_layernorm_forward(gpt_cuda_t *m, float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int N, int C) {
    cudaError_t e_;
    k_layernorm_forward<<<s_blocks((size_t)N, 8), 256, 0, m->stream>>>(out, mean, rstd, inp, w, b, N, C);
    CHECK_LAUNCH();
}

// dinp (N,C) += (or = when !accumulate), dw (C) +=, db (C) +=
static void s_layernorm_backward(gpt_cuda_t *m, float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const float *w, const float *mean, const float *rstd,
                                 int N, int C, int accumulate) {
    cudaError_t e_;
    k_layernorm_backward_rows<<<s_blocks((size_t)N, 8), 256, 0, m->stream>>>(dinp, dout, inp, w, mean, rstd, N, C,
                                                                             accumulate);
    int nchunks = (N + ROWS_PER_CHUNK - 1) / ROWS_PER_CHUNK;
    dim3 grid((unsigned)nchunks, s_blocks((size_t)C, 128));
    k_layernorm_backward_partial<<<grid, 128, 0, m->stream>>>(m->partial, dout, inp, mean, rstd, N, C);
    k_colsum_finalize<<<s_blocks((size_t)C, 128), 128, 0, m->stream>>>(dw, db, m->partial, nchunks, C, 2 * C);
    CHECK_LAUNCH();
}

// Causal self-attention, per batch element one strided-batched product over the heads, read in
// place from the packed qkv buffer (head h of Q at column h·hs, row stride 3C).
static void s_attention_forward(gpt_cuda_t *m, float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    cudaError_t e_;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * 3 * C, *k = q + C;
        s_gemm(m, 0, 1, T, T, hs, scale, q, 3 * C, hs, k, 3 * C, hs, 0.0f, att + (size_t)b * NH * TT, T, TT, NH);
    }
    int rows = B * NH * T;
    k_softmax_causal_forward<<<s_blocks((size_t)rows, 8), 256, 0, m->stream>>>(att, rows, T);
    CHECK_LAUNCH();
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * 3 * C + 2 * C;
        s_gemm(m, 0, 0, T, hs, T, 1.0f, att + (size_t)b * NH * TT, T, TT, v, 3 * C, hs, 0.0f,
               out + (size_t)b * T * C, C, hs, NH);
    }
}

// dqkv (B,T,3C) overwritten from dout (B,T,C); datt (B,NH,T,T) is scratch.
static void s_attention_backward(gpt_cuda_t *m, float *dqkv, float *datt, const float *dout, const float *qkv,
                                 const float *att, int B, int T, int C, int NH) {
    cudaError_t e_;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    long long TT = (long long)T * T;
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * T * 3 * C + 2 * C;
        const float *dO = dout + (size_t)b * T * C;
        const float *p = att + (size_t)b * NH * TT;
        float *dv = dqkv + (size_t)b * T * 3 * C + 2 * C;
        // dP = dO · Vᵀ (T,T);  dV = Pᵀ · dO (T,hs)
        s_gemm(m, 0, 1, T, T, hs, 1.0f, dO, C, hs, v, 3 * C, hs, 0.0f, datt + (size_t)b * NH * TT, T, TT, NH);
        s_gemm(m, 1, 0, T, hs, T, 1.0f, p, T, TT, dO, C, hs, 0.0f, dv, 3 * C, hs, NH);
    }
    int rows = B * NH * T;
    k_softmax_causal_backward<<<s_blocks((size_t)rows, 8), 256, 0, m->stream>>>(datt, att, rows, T);
    CHECK_LAUNCH();
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * 3 * C, *k = q + C;
        const float *ds = datt + (size_t)b * NH * TT;
        float *dq = dqkv + (size_t)b * T * 3 * C, *dk = dq + C;
        // dQ = scale · dS · K;  dK = scale · dSᵀ · Q
        s_gemm(m, 0, 0, T, hs, T, scale, ds, T, TT, k, 3 * C, hs, 0.0f, dq, 3 * C, hs, NH);
        s_gemm(m, 1, 0, T, hs, T, scale, ds, T, TT, q, 3 * C, hs, 0.0f, dk, 3 * C, hs, NH);
    }
}

static void s_gelu_forward(gpt_cuda_t *m, float *out, const float *inp, size_t n) {
    cudaError_t e_;
    k_gelu_forward<<<s_blocks(n, 256), 256, 0, m->stream>>>(out, inp, n);
    CHECK_LAUNCH();
}

static void s_gelu_backward(gpt_cuda_t *m, float *dinp, const float *inp, const float *dout, size_t n) {
    cudaError_t e_;
    k_gelu_backward<<<s_blocks(n, 256), 256, 0, m->stream>>>(dinp, inp, dout, n);
    CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Construction

static int s_device_error(int device, cudaError_t e, char *err, size_t errlen) {
    switch (e) {
    case cudaErrorNoDevice:
        snprintf(err, errlen, "no CUDA GPU found on this machine");
        break;
    case cudaErrorInsufficientDriver:
        snprintf(err, errlen, "no usable NVIDIA driver: the driver is missing or older than this build's CUDA "
                 "runtime %d.%d (%s)", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, cudaGetErrorString(e));
        break;
    default:
        snprintf(err, errlen, "cannot use CUDA GPU %d: %s", device, cudaGetErrorString(e));
    }
    return -1;
}

extern "C" int gpt_cuda_available(int device, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return s_device_error(device, e, err, errlen);
    if (n == 0) return s_device_error(device, cudaErrorNoDevice, err, errlen);
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "no CUDA GPU with index %d (this machine has %d)", device, n);
        return -1;
    }
    return 0;
}

extern "C" int gpt_cuda_device_info(int device, char *name, size_t namelen, int *cc) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return -1;
    if (name) snprintf(name, namelen, "%s", prop.name);
    if (cc) *cc = prop.major * 10 + prop.minor;
    return 0;
}

extern "C" gpt_cuda_t *gpt_cuda_new(const gpt_config_t *cfg, int maxB, int maxT, int device, int tf32,
                                    gpt_cuda_adamw_hparams_t hp, char *err, size_t errlen) {
    if (gpt_config_check(cfg, err, errlen) != 0) return NULL;
    if (maxB < 1 || maxT < 1 || maxT > cfg->seq_len) {
        snprintf(err, errlen, "batch %d x %d does not fit the model (seq_len %d)", maxB, maxT, cfg->seq_len);
        return NULL;
    }
    if ((size_t)maxB * (size_t)maxT > (size_t)1 << 30) {
        snprintf(err, errlen, "batch %d x %d is too large", maxB, maxT);
        return NULL;
    }
    if (gpt_cuda_available(device, err, errlen) != 0) return NULL;
    gpt_cuda_t *m = (gpt_cuda_t *)calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    cudaError_t e_;
    m->cfg = *cfg;
    m->maxB = maxB;
    m->maxT = maxT;
    m->device = device;
    m->hp = hp;
    int L = cfg->layers;
    size_t C = (size_t)cfg->d_model, NH = (size_t)cfg->heads, V = (size_t)cfg->vocab;
    size_t BT = (size_t)maxB * (size_t)maxT, T = (size_t)maxT;
    m->Vp = (int)((V + 63) / 64 * 64);
    size_t Vp = (size_t)m->Vp;
    m->num_params = gpt_num_params(cfg);
    size_t n = m->num_params;

    m->views_mem = (gpt_block_t *)calloc(2 * (size_t)L, sizeof(gpt_block_t));
    m->a = (block_acts_t *)calloc((size_t)L, sizeof(block_acts_t));
    m->hcount = (int32_t *)calloc(V, sizeof(int32_t));
    uint8_t *mask = (uint8_t *)malloc(n);
    if (!m->views_mem || !m->a || !m->hcount || !mask) {
        free(mask);
        snprintf(err, errlen, "out of host memory");
        gpt_cuda_destroy(&m);
        return NULL;
    }
    for (int i = 0; i < gpt_num_tensors(cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(cfg, i, &t);
        memset(mask + t.offset, t.decay, t.numel);
    }

    m->num_acts = BT * C + (size_t)L * gpt_block_acts_numel(BT, C, NH, T) + BT * C + 2 * BT + BT * Vp + BT;
    size_t nchunks = (BT + ROWS_PER_CHUNK - 1) / ROWS_PER_CHUNK;
    m->num_scratch = BT * C * 4 + BT * 3 * C + BT * 4 * C + BT * NH * T + nchunks * 4 * C + STAGE_FLOATS + 4;
    size_t ntok = 5 * BT + 1;

    int ok = CU(cudaSetDevice(device)) &&
             CU(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) &&
             CU(cudaStreamCreateWithFlags(&m->copy_stream, cudaStreamNonBlocking)) &&
             CU(cudaEventCreateWithFlags(&m->compute_mark, cudaEventDisableTiming)) &&
             CU(cudaEventCreateWithFlags(&m->copy_done, cudaEventDisableTiming)) &&
             CU(cudaEventCreateWithFlags(&m->tok_done, cudaEventDisableTiming)) &&
             CU(cudaMalloc((void **)&m->params, n * sizeof(float))) &&
             CU(cudaMalloc((void **)&m->grads, n * sizeof(float))) &&
             CU(cudaMalloc((void **)&m->moments, 2 * n * sizeof(float))) &&
             CU(cudaMalloc((void **)&m->decay, n)) &&
             CU(cudaMalloc((void **)&m->acts, m->num_acts * sizeof(float))) &&
             CU(cudaMalloc((void **)&m->scratch, m->num_scratch * sizeof(float))) &&
             CU(cudaMalloc((void **)&m->norm_partial, NORM_BLOCKS * sizeof(double))) &&
             CU(cudaMalloc((void **)&m->tok, ntok * sizeof(int32_t))) &&
             CU(cudaMalloc(&m->blas_ws, CUBLAS_WORKSPACE)) &&
             CU(cudaMallocHost((void **)&m->htok, ntok * sizeof(int32_t))) &&
             CU(cudaMallocHost((void **)&m->hscal, 4 * sizeof(float))) &&
             CU(cudaMemcpy(m->decay, mask, n, cudaMemcpyHostToDevice)) &&
             CU(cudaMemset(m->params, 0, n * sizeof(float))) &&
             CU(cudaMemset(m->grads, 0, n * sizeof(float))) &&
             CU(cudaMemset(m->moments, 0, 2 * n * sizeof(float))) &&
             CU(cudaMemset(m->acts, 0, m->num_acts * sizeof(float))) &&
             CU(cudaMemset(m->scratch, 0, m->num_scratch * sizeof(float)));
    free(mask);
    if (ok) {
        ok = s_blas_ok(m, cublasCreate(&m->blas), __LINE__) &&
             s_blas_ok(m, cublasSetStream(m->blas, m->stream), __LINE__) &&
             s_blas_ok(m, cublasSetWorkspace(m->blas, m->blas_ws, CUBLAS_WORKSPACE), __LINE__);
    }
    if (!ok) {
        snprintf(err, errlen, "cannot set up a %zu-parameter model for batch %d x %d on GPU %d (%.1f GiB): %s", n, maxB,
                 maxT, device, (double)((4 * n + m->num_acts + m->num_scratch) * sizeof(float)) / (1 << 30), m->err);
        gpt_cuda_destroy(&m);
        return NULL;
    }
    gpt_cuda_set_tf32(m, tf32);

    gpt_param_views(cfg, m->params, &m->p, m->views_mem);
    gpt_param_views(cfg, m->grads, &m->g, m->views_mem + L);
    float *p = m->acts;
    m->encoded = p; p += BT * C;
    p = gpt_block_acts_views(m->a, L, p, BT, C, NH, T);
    m->lnf = p; p += BT * C;
    m->lnf_mean = p; p += BT;
    m->lnf_rstd = p; p += BT;
    m->logits = p; p += BT * Vp;
    m->losses = p; p += BT;
    p = m->scratch;
    m->dres = p; p += BT * C;
    m->dln = p; p += BT * C;
    m->datty = p; p += BT * C;
    m->x_in = p; p += BT * C;
    m->dqkv = p; p += BT * 3 * C;
    m->dfch = p; p += BT * 4 * C;
    m->datt = p; p += BT * NH * T;
    m->partial = p; p += nchunks * 4 * C;
    m->stage = p; p += STAGE_FLOATS;
    m->scal = p;
    return m;
}

extern "C" void gpt_cuda_destroy(gpt_cuda_t **self_p) {
    if (!self_p || !*self_p) return;
    gpt_cuda_t *m = *self_p;
    cudaSetDevice(m->device);
    if (m->stream) cudaStreamSynchronize(m->stream);
    if (m->copy_stream) cudaStreamSynchronize(m->copy_stream);
    if (m->blas) cublasDestroy(m->blas);
    cudaFree(m->blas_ws);
    cudaFree(m->params);
    cudaFree(m->grads);
    cudaFree(m->moments);
    cudaFree(m->decay);
    cudaFree(m->acts);
    cudaFree(m->scratch);
    cudaFree(m->norm_partial);
    cudaFree(m->tok);
    if (m->htok) cudaFreeHost(m->htok);
    if (m->hscal) cudaFreeHost(m->hscal);
    if (m->compute_mark) cudaEventDestroy(m->compute_mark);
    if (m->copy_done) cudaEventDestroy(m->copy_done);
    if (m->tok_done) cudaEventDestroy(m->tok_done);
    if (m->stream) cudaStreamDestroy(m->stream);
    if (m->copy_stream) cudaStreamDestroy(m->copy_stream);
    free(m->views_mem);
    free(m->a);
    free(m->hcount);
    free(m);
    *self_p = NULL;
}

extern "C" const char *gpt_cuda_last_error(const gpt_cuda_t *m) { return m->err[0] ? m->err : NULL; }
extern "C" const gpt_config_t *gpt_cuda_config(const gpt_cuda_t *m) { return &m->cfg; }
extern "C" size_t gpt_cuda_num_params(const gpt_cuda_t *m) { return m->num_params; }

extern "C" size_t gpt_cuda_memory_bytes(const gpt_cuda_t *m) {
    return (4 * m->num_params + m->num_acts + m->num_scratch) * sizeof(float) + m->num_params + CUBLAS_WORKSPACE;
}

extern "C" void gpt_cuda_set_tf32(gpt_cuda_t *m, int tf32) {
    m->tf32 = tf32 ? 1 : 0;
    s_blas_ok(m, cublasSetMathMode(m->blas, m->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), __LINE__);
}

// Work that writes the parameters waits for an in-flight snapshot copy (gpt_cuda_params_to_host_async).
static int s_wait_copy(gpt_cuda_t *m) {
    cudaError_t e_;
    if (!m->copy_pending) return 1;
    return CU(cudaStreamWaitEvent(m->stream, m->copy_done, 0));
}

extern "C" int gpt_cuda_init_params(gpt_cuda_t *m, uint64_t seed) {
    if (s_enter(m) != 0) return -1;
    float *host = (float *)malloc(m->num_params * sizeof(float));
    if (!host) {
        s_set_err(m, "out of host memory");
        return -1;
    }
    // gpt_init_params reads only cfg and params: a stand-in model shares the CPU code, and with it
    // the exact initial weights of every CPU peer.
    gpt_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.cfg = m->cfg;
    tmp.params = host;
    tmp.num_params = m->num_params;
    gpt_init_params(&tmp, seed);
    int rc = gpt_cuda_params_upload(m, host, 0, m->num_params);
    free(host);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Transfers

static int s_range_ok(gpt_cuda_t *m, size_t off, size_t n, size_t total) {
    if (off > total || n > total - off) {
        s_set_err(m, "range [%zu, %zu) is outside the %zu-element buffer", off, off + n, total);
        return 0;
    }
    return 1;
}

extern "C" int gpt_cuda_params_upload(gpt_cuda_t *m, const float *src, size_t off, size_t n) {
    cudaError_t e_;
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params) || !s_wait_copy(m)) return -1;
    return CU(cudaMemcpyAsync(m->params + off, src, n * sizeof(float), cudaMemcpyHostToDevice, m->stream)) &&
           CU(cudaStreamSynchronize(m->stream)) ? 0 : -1;
}

static int s_download(gpt_cuda_t *m, float *dst, const float *src, size_t n) {
    cudaError_t e_;
    return CU(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, m->stream)) &&
           CU(cudaStreamSynchronize(m->stream)) ? 0 : -1;
}

extern "C" int gpt_cuda_params_download(gpt_cuda_t *m, float *dst, size_t off, size_t n) {
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params)) return -1;
    return s_download(m, dst, m->params + off, n);
}

extern "C" int gpt_cuda_grads_download(gpt_cuda_t *m, float *dst, size_t off, size_t n) {
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params)) return -1;
    return s_download(m, dst, m->grads + off, n);
}

extern "C" int gpt_cuda_grads_upload(gpt_cuda_t *m, const float *src, size_t off, size_t n) {
    cudaError_t e_;
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params)) return -1;
    return CU(cudaMemcpyAsync(m->grads + off, src, n * sizeof(float), cudaMemcpyHostToDevice, m->stream)) &&
           CU(cudaStreamSynchronize(m->stream)) ? 0 : -1;
}

extern "C" int gpt_cuda_adamw_download(gpt_cuda_t *m, float *mom1, float *mom2, uint64_t *step) {
    if (s_enter(m) != 0) return -1;
    if (s_download(m, mom1, m->moments, m->num_params) != 0) return -1;
    if (s_download(m, mom2, m->moments + m->num_params, m->num_params) != 0) return -1;
    *step = m->adam_step;
    return 0;
}

extern "C" int gpt_cuda_adamw_upload(gpt_cuda_t *m, const float *mom1, const float *mom2, uint64_t step) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    size_t bytes = m->num_params * sizeof(float);
    if (!(CU(cudaMemcpyAsync(m->moments, mom1, bytes, cudaMemcpyHostToDevice, m->stream)) &&
          CU(cudaMemcpyAsync(m->moments + m->num_params, mom2, bytes, cudaMemcpyHostToDevice, m->stream)) &&
          CU(cudaStreamSynchronize(m->stream))))
        return -1;
    m->adam_step = step;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Forward

// Packs the tokens into the pinned staging buffer and queues one copy: inputs (BT), targets (BT),
// and for the embedding backward the positions sorted by token (order, BT), each distinct token's
// first index into order (bucket start, nbuckets + 1) and the token itself (bucket token).
static int s_upload_tokens(gpt_cuda_t *m, const int32_t *inputs, const int32_t *targets, int BT) {
    cudaError_t e_;
    int V = m->cfg.vocab;
    for (int i = 0; i < BT; i++) {
        if ((inputs && (inputs[i] < 0 || inputs[i] >= V)) || (targets && (targets[i] < 0 || targets[i] >= V))) {
            s_set_err(m, "token at position %d is outside the vocabulary (%d)", i, V);
            return 0;
        }
    }
    // The previous forward's copy may still read the staging buffer.
    if (!CU(cudaEventSynchronize(m->tok_done))) return 0;
    int32_t *h_in = m->htok, *h_tg = h_in + BT, *order = h_tg + BT, *bstart = order + BT, *btok = bstart + BT + 1;
    if (inputs) memcpy(h_in, inputs, (size_t)BT * sizeof(int32_t));
    if (targets) memcpy(h_tg, targets, (size_t)BT * sizeof(int32_t));
    int nb = 0;
    if (inputs) {
        int32_t *cnt = m->hcount;
        memset(cnt, 0, (size_t)V * sizeof(int32_t));
        for (int i = 0; i < BT; i++) cnt[inputs[i]]++;
        int pos = 0;
        for (int v = 0; v < V; v++) {
            if (!cnt[v]) continue;
            btok[nb] = v;
            bstart[nb] = pos;
            pos += cnt[v];
            cnt[v] = bstart[nb]; // now the fill cursor
            nb++;
        }
        bstart[nb] = BT;
        for (int i = 0; i < BT; i++) order[cnt[inputs[i]]++] = i;
        // bucket token goes right after bucket start's nb + 1 entries
        memmove(bstart + nb + 1, btok, (size_t)nb * sizeof(int32_t));
    }
    m->nbuckets = nb;
    size_t count = 3 * (size_t)BT + 2 * (size_t)nb + 1;
    return CU(cudaMemcpyAsync(m->tok, m->htok, count * sizeof(int32_t), cudaMemcpyHostToDevice, m->stream)) &&
           CU(cudaEventRecord(m->tok_done, m->stream));
}

static void s_block_forward(gpt_cuda_t *m, int l, const float *x, int B, int T) {
    int C = m->cfg.d_model, NH = m->cfg.heads, N = B * T;
    gpt_block_t *w = &m->p.h[l];
    block_acts_t *a = &m->a[l];
    s_layernorm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1w, w->ln1b, N, C);
    s_matmul_forward(m, a->qkv, a->ln1, w->qkvw, w->qkvb, NULL, N, C, 3 * C);
    s_attention_forward(m, a->atty, a->att, a->qkv, B, T, C, NH);
    s_matmul_forward(m, a->res2, a->atty, w->projw, w->projb, x, N, C, C);
    s_layernorm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, w->ln2w, w->ln2b, N, C);
    s_matmul_forward(m, a->fch, a->ln2, w->fcw, w->fcb, NULL, N, C, 4 * C);
    s_gelu_forward(m, a->fch_gelu, a->fch, (size_t)N * 4 * C);
    s_matmul_forward(m, a->res3, a->fch_gelu, w->fcprojw, w->fcprojb, a->res2, N, 4 * C, C);
}

// Input of block l of the last forward (l0 ≤ l ≤ l1; l == l1 is the range output).
static const float *s_block_input(const gpt_cuda_t *m, int l) {
    if (l > m->l0) return m->a[l - 1].res3;
    return m->l0 == 0 ? m->encoded : m->x_in;
}

extern "C" int gpt_cuda_forward(gpt_cuda_t *m, const int32_t *inputs, const int32_t *targets, int B, int T) {
    return gpt_cuda_forward_range(m, 0, m->cfg.layers, inputs, NULL, targets, B, T);
}

extern "C" int gpt_cuda_forward_range(gpt_cuda_t *m, int l0, int l1, const int32_t *inputs, const float *x_in,
                                      const int32_t *targets, int B, int T) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    const gpt_config_t *cfg = &m->cfg;
    int L = cfg->layers, C = cfg->d_model, V = cfg->vocab, N = B * T;
    m->fwd_valid = 0;
    m->loss_valid = 0;
    if (B < 1 || T < 1 || B > m->maxB || T > m->maxT || l0 < 0 || l1 > L || l0 > l1 ||
        (l0 == 0 && !inputs) || (l0 > 0 && !x_in)) {
        s_set_err(m, "forward: bad arguments (layers [%d, %d) of %d, batch %d x %d of at most %d x %d, %s)", l0, l1,
                  L, B, T, m->maxB, m->maxT, l0 == 0 ? "tokens" : "x_in");
        return -1;
    }
    m->B = B;
    m->T = T;
    m->l0 = l0;
    m->l1 = l1;
    m->has_targets = targets && l1 == L;
    const int32_t *tin = l0 == 0 ? inputs : NULL, *ttg = m->has_targets ? targets : NULL;
    if ((tin || ttg) && !s_upload_tokens(m, tin, ttg, N)) return -1;
    const int32_t *d_in = m->tok, *d_tg = m->tok + N;

    const float *x;
    if (l0 == 0) {
        size_t n = (size_t)N * C;
        k_encoder_forward<<<s_blocks(n, 256), 256, 0, m->stream>>>(m->encoded, d_in, m->p.wte, m->p.wpe, N, T, C);
        CHECK_LAUNCH();
        x = m->encoded;
    } else {
        if (!CU(cudaMemcpyAsync(m->x_in, x_in, (size_t)N * C * sizeof(float), cudaMemcpyHostToDevice, m->stream)))
            return -1;
        x = m->x_in;
    }
    for (int l = l0; l < l1; l++) {
        s_block_forward(m, l, x, B, T);
        x = m->a[l].res3;
    }
    if (l1 == L) {
        s_layernorm_forward(m, m->lnf, m->lnf_mean, m->lnf_rstd, x, m->p.lnfw, m->p.lnfb, N, C);
        s_gemm(m, 0, 1, N, V, C, 1.0f, m->lnf, C, 0, m->p.wte, C, 0, 0.0f, m->logits, m->Vp, 0, 1);
        if (m->has_targets) {
            k_crossentropy_fused<<<(unsigned)N, 512, 0, m->stream>>>(m->logits, m->losses, d_tg, V, m->Vp,
                                                                     1.0f / (float)N);
            k_mean_loss<<<1, 256, 0, m->stream>>>(m->scal, m->losses, N);
            CHECK_LAUNCH();
        }
    }
    if (m->failed) return -1;
    m->fwd_valid = 1;
    m->loss_valid = m->has_targets;
    return 0;
}

static float s_read_scalar(gpt_cuda_t *m, int i) {
    cudaError_t e_;
    if (s_enter(m) != 0) return NAN;
    if (!(CU(cudaMemcpyAsync(m->hscal, m->scal, 3 * sizeof(float), cudaMemcpyDeviceToHost, m->stream)) &&
          CU(cudaStreamSynchronize(m->stream))))
        return NAN;
    return m->hscal[i];
}

extern "C" float gpt_cuda_loss(gpt_cuda_t *m) {
    if (!m->loss_valid) return 0.0f; // as the CPU: 0 without targets
    return s_read_scalar(m, 0);
}

extern "C" int gpt_cuda_logits_download(gpt_cuda_t *m, float *dst) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    if (!m->fwd_valid || m->l1 != m->cfg.layers) {
        s_set_err(m, "no logits: the last forward did not run the head");
        return -1;
    }
    size_t V = (size_t)m->cfg.vocab;
    return CU(cudaMemcpy2DAsync(dst, V * sizeof(float), m->logits, (size_t)m->Vp * sizeof(float), V * sizeof(float),
                                (size_t)m->B * m->T, cudaMemcpyDeviceToHost, m->stream)) &&
           CU(cudaStreamSynchronize(m->stream)) ? 0 : -1;
}

extern "C" int gpt_cuda_range_output(gpt_cuda_t *m, float *dst) {
    if (s_enter(m) != 0) return -1;
    if (!m->fwd_valid) {
        s_set_err(m, "no range output: no valid forward");
        return -1;
    }
    return s_download(m, dst, s_block_input(m, m->l1), (size_t)m->B * m->T * m->cfg.d_model);
}

// ---------------------------------------------------------------------------------------------
// Backward

extern "C" int gpt_cuda_zero_grad(gpt_cuda_t *m) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    return CU(cudaMemsetAsync(m->grads, 0, m->num_params * sizeof(float), m->stream)) ? 0 : -1;
}

extern "C" int gpt_cuda_backward(gpt_cuda_t *m) { return gpt_cuda_backward_range(m, NULL, NULL); }

extern "C" int gpt_cuda_backward_range(gpt_cuda_t *m, const float *dout, float *dx_in) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    const gpt_config_t *cfg = &m->cfg;
    int L = cfg->layers, C = cfg->d_model, NH = cfg->heads, V = cfg->vocab;
    int B = m->B, T = m->T, l0 = m->l0, l1 = m->l1, N = B * T;
    if (!m->fwd_valid || (l1 == L && !m->has_targets) || (l1 < L && !dout)) {
        s_set_err(m, "backward: %s", !m->fwd_valid ? "no valid forward" :
                  l1 == L ? "the forward had no targets" : "dout is needed for a range without the head");
        return -1;
    }
    m->fwd_valid = 0; // the backward consumes the dlogits
    float *dres = m->dres; // gradient flowing along the residual stream (B,T,C)
    if (l1 == L) {
        const float *x = s_block_input(m, l1);
        // The forward left d(loss)/d(logits) in the logits (k_crossentropy_fused).
        s_gemm(m, 0, 0, N, C, V, 1.0f, m->logits, m->Vp, 0, m->p.wte, C, 0, 0.0f, m->dln, C, 0, 1);
        s_gemm(m, 1, 0, V, C, N, 1.0f, m->logits, m->Vp, 0, m->lnf, C, 0, 1.0f, m->g.wte, C, 0, 1);
        s_layernorm_backward(m, dres, m->g.lnfw, m->g.lnfb, m->dln, x, m->p.lnfw, m->lnf_mean, m->lnf_rstd, N, C, 0);
    } else if (!CU(cudaMemcpyAsync(dres, dout, (size_t)N * C * sizeof(float), cudaMemcpyHostToDevice, m->stream))) {
        return -1;
    }

    for (int l = l1 - 1; l >= l0; l--) {
        gpt_block_t *w = &m->p.h[l], *g = &m->g.h[l];
        block_acts_t *a = &m->a[l];
        const float *x = s_block_input(m, l);
        // MLP branch: res3 = res2 + fcproj(gelu(fc(ln2(res2)))); dres is d(res3) and becomes d(res2).
        s_matmul_backward(m, m->dfch, g->fcprojw, g->fcprojb, dres, a->fch_gelu, w->fcprojw, N, 4 * C, C);
        s_gelu_backward(m, m->dfch, a->fch, m->dfch, (size_t)N * 4 * C);
        s_matmul_backward(m, m->dln, g->fcw, g->fcb, m->dfch, a->ln2, w->fcw, N, C, 4 * C);
        s_layernorm_backward(m, dres, g->ln2w, g->ln2b, m->dln, a->res2, w->ln2w, a->ln2_mean, a->ln2_rstd, N, C, 1);
        // Attention branch: res2 = x + proj(attn(qkv(ln1(x)))); dres becomes d(x).
        s_matmul_backward(m, m->datty, g->projw, g->projb, dres, a->atty, w->projw, N, C, C);
        s_attention_backward(m, m->dqkv, m->datt, m->datty, a->qkv, a->att, B, T, C, NH);
        s_matmul_backward(m, m->dln, g->qkvw, g->qkvb, m->dqkv, a->ln1, w->qkvw, N, C, 3 * C);
        s_layernorm_backward(m, dres, g->ln1w, g->ln1b, m->dln, x, w->ln1w, a->ln1_mean, a->ln1_rstd, N, C, 1);
    }

    if (l0 == 0) {
        const int32_t *order = m->tok + 2 * N, *bstart = order + N, *btok = bstart + m->nbuckets + 1;
        if (m->nbuckets > 0) {
            dim3 grid((unsigned)m->nbuckets, s_blocks((size_t)C, 128));
            k_wte_backward<<<grid, 128, 0, m->stream>>>(m->g.wte, dres, order, bstart, btok, C);
        }
        k_wpe_backward<<<s_blocks((size_t)T * C, 256), 256, 0, m->stream>>>(m->g.wpe, dres, B, T, C);
        CHECK_LAUNCH();
    } else if (dx_in) {
        if (s_download(m, dx_in, dres, (size_t)N * C) != 0) return -1;
    }
    return m->failed ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Optimizer

extern "C" int gpt_cuda_clip_grad_norm(gpt_cuda_t *m, float max_norm) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    size_t n = m->num_params;
    k_sumsq_partial<<<NORM_BLOCKS, 256, 0, m->stream>>>(m->norm_partial, m->grads, n);
    k_norm_finalize<<<1, 256, 0, m->stream>>>(m->scal, m->norm_partial, NORM_BLOCKS, max_norm);
    if (max_norm > 0.0f) k_scale_by<<<s_blocks(n, 256), 256, 0, m->stream>>>(m->grads, n, m->scal + 2);
    return CHECK_LAUNCH() ? 0 : -1;
}

extern "C" float gpt_cuda_grad_norm(gpt_cuda_t *m) { return s_read_scalar(m, 1); }

extern "C" int gpt_cuda_adamw_update(gpt_cuda_t *m, float lr) {
    cudaError_t e_;
    if (s_enter(m) != 0 || !s_wait_copy(m)) return -1;
    m->adam_step++;
    const float b1 = m->hp.beta1, b2 = m->hp.beta2;
    // Host scalars exactly as optim_adamw_update computes them (double bias corrections).
    const double bc1 = 1.0 - pow((double)b1, (double)m->adam_step);
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)b2, (double)m->adam_step));
    const float step_size = (float)((double)lr / bc1);
    const float decay_factor = 1.0f - lr * m->hp.weight_decay;
    size_t n = m->num_params;
    k_adamw<<<s_blocks(n, 256), 256, 0, m->stream>>>(m->params, m->grads, m->moments, m->moments + n, m->decay, n, b1,
                                                     b2, m->hp.eps, step_size, bc2_sqrt, decay_factor);
    return CHECK_LAUNCH() ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------
// Outer-step support

extern "C" float *gpt_cuda_host_alloc(size_t n) {
    void *p = NULL;
    if (cudaMallocHost(&p, (n ? n : 1) * sizeof(float)) != cudaSuccess) return NULL;
    return (float *)p;
}

extern "C" void gpt_cuda_host_free(float *p) {
    if (p) cudaFreeHost(p);
}

extern "C" int gpt_cuda_params_to_host_async(gpt_cuda_t *m, float *dst, size_t off, size_t n) {
    cudaError_t e_;
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params)) return -1;
    if (!(CU(cudaEventRecord(m->compute_mark, m->stream)) &&
          CU(cudaStreamWaitEvent(m->copy_stream, m->compute_mark, 0)) &&
          CU(cudaMemcpyAsync(dst, m->params + off, n * sizeof(float), cudaMemcpyDeviceToHost, m->copy_stream)) &&
          CU(cudaEventRecord(m->copy_done, m->copy_stream))))
        return -1;
    m->copy_pending = 1;
    return 0;
}

extern "C" int gpt_cuda_copy_wait(gpt_cuda_t *m) {
    cudaError_t e_;
    if (s_enter(m) != 0) return -1;
    if (!CU(cudaStreamSynchronize(m->copy_stream))) return -1;
    m->copy_pending = 0;
    return 0;
}

extern "C" int gpt_cuda_params_axpby(gpt_cuda_t *m, size_t off, size_t n, float a, float b, const float *x) {
    cudaError_t e_;
    if (s_enter(m) != 0 || !s_range_ok(m, off, n, m->num_params) || !s_wait_copy(m)) return -1;
    // Chunks through the fixed staging buffer; a pageable cudaMemcpyAsync returns once x is staged,
    // and the next chunk's copy is ordered after the previous chunk's kernel on the same stream.
    for (size_t done = 0; done < n; done += STAGE_FLOATS) {
        size_t k = n - done < (size_t)STAGE_FLOATS ? n - done : (size_t)STAGE_FLOATS;
        if (!CU(cudaMemcpyAsync(m->stage, x + done, k * sizeof(float), cudaMemcpyHostToDevice, m->stream))) return -1;
        k_axpby<<<s_blocks(k, 256), 256, 0, m->stream>>>(m->params + off + done, m->stage, k, a, b);
        if (!CHECK_LAUNCH()) return -1;
    }
    return 0;
}
