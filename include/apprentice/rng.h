/* rng.h: a small, fast, seedable random number generator (xoshiro256**) whose whole state
 * is a plain struct, so it can be saved in a checkpoint and restored bit-exactly.
 *
 * Usage:
 *   ap_rng_t rng;
 *   ap_rng_seed(&rng, cfg->seed, actor_id);   // independent stream per (seed, stream)
 *   float u = ap_rng_uniform(&rng);           // [0, 1)
 *   ap_rng_t saved = rng;                     // save; later `rng = saved` restores
 */
#ifndef APPRENTICE_RNG_H
#define APPRENTICE_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4]; /* xoshiro256** state; never all zero */
} ap_rng_t;

void ap_rng_seed(ap_rng_t *rng, uint64_t seed, uint64_t stream);
uint64_t ap_rng_u64(ap_rng_t *rng);
double ap_rng_uniform(ap_rng_t *rng);            /* [0, 1), 53 bits */
uint64_t ap_rng_below(ap_rng_t *rng, uint64_t n); /* uniform in [0, n), unbiased; n > 0 */
double ap_rng_normal(ap_rng_t *rng);             /* standard normal (Box-Muller) */

#endif
