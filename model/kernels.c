#include "model/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Helpers that vectorise without -ffast-math and give the same bits at any thread count.

// Sum with 16 independent lanes then a fixed tree: the compiler vectorises the lane loop, and the
// order of additions depends only on n.
static inline float s_sum(const float *x, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += x[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

static inline float s_dot(const float *x, const float *y, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j] * y[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += x[i] * y[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

static inline float s_max(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// exp(x) for float in plain arithmetic (Cephes' expf polynomial, ~1 ulp), so loops calling it
// vectorise. Inputs are clamped to the normal range: exp(-87.3) is the smallest normal float.
static inline float s_exp(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    float k = rintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int i; float f; } s;
    s.i = ((int)k + 127) << 23;
    return p * s.f;
}

static inline float s_tanh(float u) {
    // 1 − 2/(e^{2u}+1): exact limits ±1, error ~1e-7 absolute.
    return 1.0f - 2.0f / (s_exp(2.0f * u) + 1.0f);
}

// ---------------------------------------------------------------------------------------------

void k_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T, int C) {
    #pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        float *o = out + (size_t)bt * C;
        const float *we = wte + (size_t)inp[bt] * C, *wp = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = we[c] + wp[c];
    }
}

void k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T, int C) {
    // Parallel over channel blocks: every (token, channel) is summed by one thread in (b,t) order.
    int nblk = (C + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int bt = 0; bt < B * T; bt++) {
            int t = bt % T;
            const float *d = dout + (size_t)bt * C;
            float *we = dwte + (size_t)inp[bt] * C, *wp = dwpe + (size_t)t * C;
            for (int c = c0; c < c1; c++) {
                we[c] += d[c];
                wp[c] += d[c];
            }
        }
    }
}

void k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                         const float *b, size_t N, int C) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float m = s_sum(x, C) / (float)C;
        float acc[16] = {0};
        int c = 0;
        for (; c + 16 <= C; c += 16)
            for (int j = 0; j < 16; j++) { float d = x[c + j] - m; acc[j] += d * d; }
        for (int j = 0; c < C; c++, j++) { float d = x[c] - m; acc[j] += d * d; }
        for (int wd = 8; wd >= 1; wd /= 2)
            for (int j = 0; j < wd; j++) acc[j] += acc[j + wd];
        float v = acc[0] / (float)C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        float *o = out + i * C;
        for (c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

void k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *w, const float *mean, const float *rstd, size_t N, int C) {
    #pragma omp parallel
    {
        float tmp[C];
        // Rows: dx = rstd · (dnorm − mean(dnorm) − norm · mean(dnorm · norm)), dnorm = dout · w.
        #pragma omp for schedule(static)
        for (size_t i = 0; i < N; i++) {
            const float *x = inp + i * C, *dy = dout + i * C;
            float m = mean[i], s = rstd[i];
            for (int c = 0; c < C; c++) tmp[c] = dy[c] * w[c];
            float dnorm_mean = s_sum(tmp, C) / (float)C;
            float acc[16] = {0};
            int c = 0;
            for (; c + 16 <= C; c += 16)
                for (int j = 0; j < 16; j++) acc[j] += tmp[c + j] * ((x[c + j] - m) * s);
            for (int j = 0; c < C; c++, j++) acc[j] += tmp[c] * ((x[c] - m) * s);
            for (int wd = 8; wd >= 1; wd /= 2)
                for (int j = 0; j < wd; j++) acc[j] += acc[j + wd];
            float dnorm_norm_mean = acc[0] / (float)C;
            float *dx = dinp + i * C;
            for (c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                dx[c] += (tmp[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
        // Columns: dw += Σ_rows dout · norm, db += Σ_rows dout, one thread per channel block.
        int nblk = (C + 15) / 16;
        #pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * 16, c1 = c0 + 16 < C ? c0 + 16 : C;
            float aw[16] = {0}, ab[16] = {0};
            for (size_t i = 0; i < N; i++) {
                const float *x = inp + i * C, *dy = dout + i * C;
                float m = mean[i], s = rstd[i];
                for (int c = c0; c < c1; c++) {
                    aw[c - c0] += dy[c] * ((x[c] - m) * s);
                    ab[c - c0] += dy[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                dw[c] += aw[c - c0];
                db[c] += ab[c - c0];
            }
        }
    }
}

void k_matmul_forward(float *out, const float *inp, const float *w, const float *bias, size_t N, int IC, int OC) {
    float beta = 0.0f;
    if (bias) {
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < N; i++) memcpy(out + i * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

void k_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                       const float *w, size_t N, int IC, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, IC, OC, 1.0f, dout, OC, w, IC, 1.0f, dinp, IC);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, (int)N, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
    if (!dbias) return;
    int nblk = (OC + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int o0 = blk * 16, o1 = o0 + 16 < OC ? o0 + 16 : OC;
        float acc[16] = {0};
        for (size_t i = 0; i < N; i++)
            for (int o = o0; o < o1; o++) acc[o - o0] += dout[i * OC + o];
        for (int o = o0; o < o1; o++) dbias[o] += acc[o - o0];
    }
}

// ---------------------------------------------------------------------------------------------
// Attention: per (batch, head) the products go through sgemm, with the strides of the packed
// qkv buffer; inside the parallel region OpenBLAS (the OpenMP build) runs single-threaded.

void k_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * 3 * C + (size_t)h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *p = att + ((size_t)b * NH + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, 3 * C, k, 3 * C, 0.0f, p, T);
            for (int i = 0; i < T; i++) {
                float *row = p + (size_t)i * T;
                float mx = s_max(row, i + 1);
                for (int j = 0; j <= i; j++) row[j] = s_exp(row[j] - mx);
                float inv = 1.0f / s_sum(row, i + 1);
                for (int j = 0; j <= i; j++) row[j] *= inv;
                for (int j = i + 1; j < T; j++) row[j] = 0.0f;
            }
            float *o = out + (size_t)b * T * C + (size_t)h * hs;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, v, 3 * C, 0.0f, o, C);
        }
    }
}

void k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                          float *scratch, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel
    {
        float *ds = scratch + (size_t)omp_get_thread_num() * 2 * T * T;
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                size_t base = (size_t)b * T * 3 * C + (size_t)h * hs;
                const float *q = qkv + base, *k = q + C, *v = q + 2 * C;
                float *dq = dqkv + base, *dk = dq + C, *dv = dq + 2 * C;
                const float *p = att + ((size_t)b * NH + h) * T * T;
                const float *dO = dout + (size_t)b * T * C + (size_t)h * hs;
                // dP = dO · V^T (T,T);  dV = P^T · dO (T,hs)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dO, C, v, 3 * C, 0.0f, ds, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, dO, C, 0.0f, dv, 3 * C);
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)), zero above the diagonal
                for (int i = 0; i < T; i++) {
                    const float *pr = p + (size_t)i * T;
                    float *dr = ds + (size_t)i * T;
                    float d = s_dot(pr, dr, i + 1);
                    for (int j = 0; j <= i; j++) dr[j] = pr[j] * (dr[j] - d);
                    for (int j = i + 1; j < T; j++) dr[j] = 0.0f;
                }
                // dQ = scale · dS · K;  dK = scale · dS^T · Q
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, ds, T, k, 3 * C, 0.0f, dq, 3 * C);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, ds, T, q, 3 * C, 0.0f, dk, 3 * C);
            }
        }
    }
}

void k_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float *row = att + (((size_t)b * NH + h) * T + t) * T;
                float mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    row[t2] = s * scale;
                    if (row[t2] > mx) mx = row[t2];
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) { row[t2] = expf(row[t2] - mx); sum += row[t2]; }
                for (int t2 = 0; t2 < T; t2++) row[t2] = t2 <= t ? row[t2] / sum : 0.0f;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += row[t2] * v[i];
                }
            }
}

void k_attention_backward_ref(float *dqkv, float *datt, const float *dout, const float *qkv,
                              const float *att, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    memset(dqkv, 0, (size_t)B * T * 3 * C * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *p = att + (((size_t)b * NH + h) * T + t) * T;
                float *dp = datt + (((size_t)b * NH + h) * T + t) * T;
                const float *dO = dout + ((size_t)b * T + t) * C + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    float *dv = dqkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) { s += dO[i] * v[i]; dv[i] += p[t2] * dO[i]; }
                    dp[t2] = s;
                }
                float d = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) d += p[t2] * dp[t2];
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    float ds = p[t2] * (dp[t2] - d) * scale;
                    const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    float *dk = dqkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    for (int i = 0; i < hs; i++) { dq[i] += ds * k[i]; dk[i] += ds * q[i]; }
                }
            }
}

// ---------------------------------------------------------------------------------------------

#define GELU_SCALE 0.7978845608028654f // sqrt(2/pi)

void k_gelu_forward(float *out, const float *inp, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + s_tanh(u));
    }
}

void k_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = s_tanh(u);
        float sech2 = 1.0f - th * th;
        float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = g * dout[i];
    }
}

void k_add_inplace(float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

float k_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, size_t N, int V) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *x = logits + i * V;
        float mx = s_max(x, V);
        float acc[16] = {0};
        int c = 0;
        for (; c + 16 <= V; c += 16)
            for (int j = 0; j < 16; j++) acc[j] += s_exp(x[c + j] - mx);
        for (int j = 0; c < V; c++, j++) acc[j] += s_exp(x[c] - mx);
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) acc[j] += acc[j + w];
        losses[i] = logf(acc[0]) + mx - x[targets[i]];
    }
    // The mean is summed serially in double so it does not depend on the thread count.
    double s = 0.0;
    for (size_t i = 0; i < N; i++) s += losses[i];
    return (float)(s / (double)N);
}

void k_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, size_t N, int V) {
    float invN = 1.0f / (float)N;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *x = logits + i * V;
        float *d = dlogits + i * V;
        float mx = s_max(x, V);
        float acc[16] = {0};
        int c = 0;
        for (; c + 16 <= V; c += 16)
            for (int j = 0; j < 16; j++) acc[j] += s_exp(x[c + j] - mx);
        for (int j = 0; c < V; c++, j++) acc[j] += s_exp(x[c] - mx);
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) acc[j] += acc[j + w];
        float inv = 1.0f / acc[0];
        int tgt = targets[i];
        for (c = 0; c < V; c++) d[c] = s_exp(x[c] - mx) * inv * invN;
        d[tgt] -= invN;
    }
}
