#include "optim/outer.h"

#include <openssl/evp.h>
#include <string.h>

#include "model/rng.h"

void outer_weighted_mean(float *out, const float *const *x, const double *w, int k, size_t n) {
    double wsum = 0.0;
    for (int j = 0; j < k; j++) wsum += w[j];
    float wf[k > 0 ? k : 1];
    for (int j = 0; j < k; j++) wf[j] = (float)(w[j] / wsum);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += wf[j] * x[j][i];
        out[i] = s;
    }
}

static inline float s_clip(float v, float c) {
    if (c <= 0.0f) return v;
    return v > c ? c : (v < -c ? -c : v);
}

void outer_diloco_step(float *phi, float *b, const float *delta_mean, size_t n, const outer_hparams_t *hp) {
    const float mu = hp->momentum, lr = hp->lr, inv_pen = 1.0f / hp->gap_penalty, c = hp->clip;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = delta_mean[i] * inv_pen;
        float bi = s_clip(mu * b[i] + g, c);
        b[i] = bi;
        phi[i] = phi[i] - lr * (g + mu * bi);
    }
}

void outer_noloco_step(float *phi, float *m, const float *delta_mean, const float *phi_mean, size_t n,
                       const outer_hparams_t *hp) {
    const float mu = hp->momentum, lr = hp->lr, inv_pen = 1.0f / hp->gap_penalty, c = hp->clip;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float mi = mu * m[i] - lr * (delta_mean[i] * inv_pen) + lr * (phi_mean[i] - phi[i]);
        mi = s_clip(mi, c);
        m[i] = mi;
        phi[i] = phi[i] + mi;
    }
}

int outer_groups(const uint8_t *fingerprint, size_t fplen, uint64_t t, int N, int group_size, int *group_of) {
    uint8_t tb[8], digest[32];
    for (int i = 0; i < 8; i++) tb[i] = (uint8_t)(t >> (8 * i));
    unsigned int dl = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, fingerprint, fplen);
    EVP_DigestUpdate(md, tb, 8);
    EVP_DigestFinal_ex(md, digest, &dl);
    EVP_MD_CTX_free(md);
    uint64_t seed = 0;
    for (int i = 0; i < 8; i++) seed |= (uint64_t)digest[i] << (8 * i);
    rng_t r;
    rng_seed(&r, seed);
    int perm[N > 0 ? N : 1];
    for (int i = 0; i < N; i++) perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1);
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    int g = group_size > 0 ? N / group_size : 1;
    if (g < 1) g = 1;
    for (int k = 0; k < N; k++) group_of[perm[k]] = k % g;
    return g;
}

void outer_co2_carry(float *theta, const float *phi_new, const float *theta_start, size_t n) {
    for (size_t i = 0; i < n; i++) theta[i] = phi_new[i] + (theta[i] - theta_start[i]);
}
