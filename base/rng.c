/* rng.c: xoshiro256** (Blackman & Vigna), seeded through splitmix64. */
#include "apprentice/rng.h"

#include <math.h>

#include "apprentice/base.h"

static uint64_t s_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t s_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ap_rng_seed(ap_rng_t *rng, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    for (int i = 0; i < 4; i++) rng->s[i] = s_splitmix(&x);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3])) rng->s[0] = 1;
}

uint64_t ap_rng_u64(ap_rng_t *rng) {
    uint64_t *s = rng->s;
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

double ap_rng_uniform(ap_rng_t *rng) { return (double)(ap_rng_u64(rng) >> 11) * 0x1.0p-53; }

uint64_t ap_rng_below(ap_rng_t *rng, uint64_t n) {
    AP_ASSERT(n > 0);
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = ap_rng_u64(rng);
    while (x >= limit);
    return x % n;
}

double ap_rng_normal(ap_rng_t *rng) {
    double u1 = ap_rng_uniform(rng), u2 = ap_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
