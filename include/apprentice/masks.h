/* masks.h: the base mask m[n, t] the learner builds from a batch before the objectives run
 * (ALGORITHMS.md, "Notation" and "Stabilizers and monitors"), with the length and repetition
 * monitors and the DAPO soft overlong penalty.
 *
 * Masks, in order (a position is attributed to the first that zeroes it):
 *   padding       t >= length[n]
 *   after EOS     t > the first EOS (the EOS itself is kept)
 *   special       tokens listed in mask_tokens
 *   truncated     every token of a trajectory finished by length (truncated: mask, default)
 *   repetitive    every token of a trajectory with rep_n > max_repetition
 * Truncation and repetition concern the student's own generations: they apply to on-policy
 * trajectories (dataset completions are curated). `truncated: penalize` keeps the tokens and
 * adds the overlong penalty to the on-policy rewards; `keep` does neither. A batch whose
 * on-policy truncation rate exceeds max_truncation_rate is to be skipped (the return value).
 * Non-finite teacher positions are masked by the objectives' plan (objectives.h), which knows
 * which signal each objective reads.
 *
 * Usage:
 *   ap_masks_config_t mc;
 *   ap_masks_defaults(&mc);
 *   mc.eos_id = 2;  mc.max_new_tokens = 64;
 *   ap_masks_input_t in = {.N = N, .T = T, .tokens = y, .length = len, .truncated = trunc};
 *   int skip = ap_masks_build(mask, reward, &mc, &in, rep, &mon);  // mask [N, T] written
 *   if (skip) { count it; drop the batch; }
 */
#ifndef APPRENTICE_MASKS_H
#define APPRENTICE_MASKS_H

#include <stdint.h>

#include "apprentice/objectives.h"

#define AP_MASKS_MAX_SPECIAL 64

typedef enum {
    AP_TRUNC_MASK,     /* all tokens of a truncated trajectory get m = 0 (default) */
    AP_TRUNC_KEEP,     /* nothing special */
    AP_TRUNC_PENALIZE  /* DAPO soft overlong penalty added to the reward */
} ap_trunc_mode_t;

typedef struct {
    int eos_id;                   /* end-of-sequence id; -1: no EOS masking */
    int n_special;                /* entries of `special` in use */
    int32_t special[AP_MASKS_MAX_SPECIAL]; /* mask_tokens: ids masked wherever they occur */
    ap_trunc_mode_t truncated;    /* mask */
    int max_new_tokens;           /* L_max of the overlong penalty (penalize needs it > 0) */
    int overlong_buffer;          /* L_cache: the penalty ramps over the last L_cache tokens */
    double max_truncation_rate;   /* 0.5: a batch with a higher on-policy truncation rate is skipped */
    double max_repetition;        /* 0.5: trajectories with rep_n above are masked */
    int rep_n;                    /* n of rep_n (3) */
} ap_masks_config_t;

/* eos -1, no special ids, truncated mask, max_new_tokens 0, overlong_buffer 0, max truncation
 * rate 0.5, max repetition 0.5, n = 3. */
void ap_masks_defaults(ap_masks_config_t *c);
/* 0, or -1 with ap_err naming the option. */
int ap_masks_validate(const ap_masks_config_t *c);

typedef struct {
    int N, T;
    const int32_t *tokens;    /* [N, T] completion tokens, right-padded */
    const int32_t *length;    /* [N] generated tokens (t >= length is padding); NULL: all T */
    const uint8_t *truncated; /* [N] 1 = finished by length (no EOS); NULL: none */
    const int32_t *on_policy; /* [N] 1 on-policy, 0 dataset; NULL: all on-policy */
} ap_masks_input_t;

/* Build mask [N, T] (written, 0/1). `reward` [N] (may be NULL unless truncated: penalize)
 * receives the overlong penalty on on-policy trajectories; `rep` [N] (may be NULL) receives
 * each trajectory's rep_n. Monitors go to `mon` (may be NULL; names in docs/OBJECTIVES.md).
 * A length outside [0, T] is bad input: clamped and counted ("mask/bad_length").
 * Returns 1 when the batch should be skipped (truncation rate above the limit), else 0. */
int ap_masks_build(float *mask, float *reward, float *rep, const ap_masks_config_t *c,
                   const ap_masks_input_t *in, ap_monitors_t *mon);

/* rep_n = 1 - unique n-grams / total n-grams of tokens[0..len) (0 when len < n). */
double ap_masks_rep_n(const int32_t *tokens, int len, int n);
/* DAPO soft overlong penalty of a completion of L tokens: 0 when L <= L_max - L_cache,
 * ((L_max - L_cache) - L) / L_cache when L_max - L_cache < L <= L_max, -1 beyond. */
double ap_masks_overlong_penalty(int L, int L_max, int L_cache);

#endif
