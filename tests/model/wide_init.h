// Test-only initialisation shared by the model tests (header-only: each test binary is one file).
// GPT-2's init makes attention nearly uniform and the logits nearly flat at tiny sizes, which would
// hide a wrong softmax scale or a swapped LayerNorm weight/bias. This init gives O(1)
// pre-activations everywhere: matrices N(0, 1/in), embeddings N(0, 0.5²), and non-trivial LayerNorm
// weights and biases.
#ifndef LOCO_TESTS_MODEL_WIDE_INIT_H
#define LOCO_TESTS_MODEL_WIDE_INIT_H

#include <math.h>
#include <string.h>

#include "model/gpt.h"
#include "model/rng.h"

static void s_wide_init(gpt_t *m, uint64_t seed) {
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < gpt_num_tensors(&m->cfg); i++) {
        gpt_tensor_t t;
        gpt_tensor(&m->cfg, i, &t);
        float *w = m->params + t.offset;
        int is_ln = strstr(t.name, "ln_") != NULL, is_bias = strstr(t.name, ".bias") != NULL;
        float mean = 0.0f, std;
        if (t.ndim == 2) std = (i < 2) ? 0.5f : 1.0f / sqrtf((float)t.shape[1]);
        else if (is_ln && !is_bias) { mean = 1.0f; std = 0.2f; }
        else std = 0.1f;
        for (size_t k = 0; k < t.numel; k++) w[k] = mean + std * rng_normal(&r);
    }
}

#endif
