// Portable deterministic random numbers: splitmix64 for seeding and bounded draws, Box-Muller for
// normals. Every build on every machine produces the same sequence from the same seed, which is what
// lets peers derive identical initial weights and identical NoLoCo groups (ALGORITHMS.md). The state
// lives in the caller's struct; there is no global generator.
#ifndef LOCO_RNG_H
#define LOCO_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
} rng_t;

static inline void rng_seed(rng_t *r, uint64_t seed) { r->state = seed; }

// splitmix64 (Steele, Lea, Flood 2014): one 64-bit output per call.
static inline uint64_t rng_next(rng_t *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Unbiased draw in [0, n) by rejection: values in the incomplete top bucket are redrawn.
static inline uint64_t rng_below(rng_t *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = rng_next(r);
    } while (x >= limit);
    return x % n;
}

// Uniform in [0, 1) with 24 bits, exactly representable as a float.
static inline float rng_uniform(rng_t *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }

// Standard normal from Box-Muller; computed in double so the result does not depend on the
// float math library's rounding of the intermediate log/cos.
static inline float rng_normal(rng_t *r) {
    double u1 = ((double)(rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0); // (0, 1]
    double u2 = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);         // [0, 1)
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// Advances r past k rng_normal draws without making them: each draw takes two rng_next calls, and
// splitmix64's state moves by a constant per call.
static inline void rng_skip_normals(rng_t *r, uint64_t k) { r->state += 2 * k * 0x9e3779b97f4a7c15ULL; }

#endif
