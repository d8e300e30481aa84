/* masks.c: the base mask builders of masks.h (padding, after-EOS, special tokens, truncated,
 * repetitive trajectories), the overlong penalty, rep_n, and their monitors.
 *
 * rep_n counts distinct n-grams by sorting 64-bit keys: an n-gram of n <= 3 ids below 2^21 is
 * packed exactly; otherwise the key is a 64-bit FNV-1a hash of the ids (collisions would only
 * lower rep_n by 1/total for an astronomically unlikely pair). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/masks.h"

void ap_masks_defaults(ap_masks_config_t *c) {
    memset(c, 0, sizeof *c);
    c->eos_id = -1;
    c->truncated = AP_TRUNC_MASK;
    c->max_truncation_rate = 0.5;
    c->max_repetition = 0.5;
    c->rep_n = 3;
}

int ap_masks_validate(const ap_masks_config_t *c) {
    if (c->rep_n < 1) return ap_err("masks: rep_n %d must be >= 1", c->rep_n);
    if (!(c->max_repetition >= 0))
        return ap_err("masks: max_repetition %g must be >= 0", c->max_repetition);
    if (!(c->max_truncation_rate >= 0 && c->max_truncation_rate <= 1))
        return ap_err("masks: max_truncation_rate %g outside [0, 1]", c->max_truncation_rate);
    if (c->n_special < 0 || c->n_special > AP_MASKS_MAX_SPECIAL)
        return ap_err("masks: %d mask_tokens (at most %d)", c->n_special, AP_MASKS_MAX_SPECIAL);
    for (int i = 0; i < c->n_special; i++)
        if (c->special[i] < 0) return ap_err("masks: mask_tokens[%d] = %d < 0", i, c->special[i]);
    if (c->truncated == AP_TRUNC_PENALIZE &&
        (c->max_new_tokens <= 0 || c->overlong_buffer < 0 ||
         c->overlong_buffer > c->max_new_tokens))
        return ap_err("masks: truncated: penalize needs max_new_tokens > 0 and 0 <= "
                      "overlong_buffer <= max_new_tokens (got %d, %d)",
                      c->max_new_tokens, c->overlong_buffer);
    return 0;
}

double ap_masks_overlong_penalty(int L, int L_max, int L_cache) {
    if (L <= L_max - L_cache) return 0;
    if (L <= L_max) return (double)((L_max - L_cache) - L) / L_cache;
    return -1;
}

static int s_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double s_rep_n(const int32_t *tok, int len, int n, uint64_t *keys) {
    if (len < n) return 0;
    int total = len - n + 1, packed = n <= 3;
    for (int i = 0; i < len && packed; i++) packed = tok[i] >= 0 && tok[i] < (1 << 21);
    for (int i = 0; i < total; i++) {
        if (packed) {
            uint64_t k = 0;
            for (int j = 0; j < n; j++) k = (k << 21) | (uint64_t)tok[i + j];
            keys[i] = k;
        } else {
            keys[i] = ap_hash64(tok + i, (size_t)n * sizeof *tok, 0x9e3779b97f4a7c15ull);
        }
    }
    qsort(keys, (size_t)total, sizeof *keys, s_cmp_u64);
    int uniq = 1;
    for (int i = 1; i < total; i++) uniq += keys[i] != keys[i - 1];
    return 1.0 - (double)uniq / total;
}

double ap_masks_rep_n(const int32_t *tokens, int len, int n) {
    AP_ASSERT(n >= 1 && len >= 0);
    if (len < n) return 0;
    uint64_t *keys = ap_malloc((size_t)len * sizeof *keys);
    double r = s_rep_n(tokens, len, n, keys);
    free(keys);
    return r;
}

int ap_masks_build(float *mask, float *reward, float *rep, const ap_masks_config_t *c,
                   const ap_masks_input_t *in, ap_monitors_t *mon) {
    const int N = in->N, T = in->T;
    AP_ASSERT(N >= 0 && T >= 0 && in->tokens);
    AP_ASSERTF(c->truncated != AP_TRUNC_PENALIZE || reward, "truncated: penalize needs rewards");
    uint64_t *keys = ap_malloc(((size_t)T + 1) * sizeof *keys);
    double n_pad = 0, n_eos = 0, n_spec = 0, n_trunc = 0, n_rep = 0, n_kept = 0;
    int n_on = 0, n_trunc_traj = 0, n_rep_traj = 0, bad_len = 0;
    double len_sum = 0, rep_sum = 0, pen_sum = 0;
    for (int n = 0; n < N; n++) {
        const int32_t *y = in->tokens + (size_t)n * T;
        float *m = mask + (size_t)n * T;
        int len = in->length ? in->length[n] : T;
        if (len < 0 || len > T) {
            bad_len++;
            len = len < 0 ? 0 : T;
        }
        int L = len; /* effective length: up to and including the first EOS */
        if (c->eos_id >= 0)
            for (int t = 0; t < len; t++)
                if (y[t] == c->eos_id) {
                    L = t + 1;
                    break;
                }
        const int on = !in->on_policy || in->on_policy[n];
        const int trunc = in->truncated && in->truncated[n];
        double r = s_rep_n(y, L, c->rep_n, keys);
        if (rep) rep[n] = (float)r;
        int mask_traj = 0; /* 1 truncated, 2 repetitive */
        if (on) {
            n_on++, len_sum += L, rep_sum += r, n_trunc_traj += trunc;
            if (trunc && c->truncated == AP_TRUNC_MASK) mask_traj = 1;
            else if (r > c->max_repetition) mask_traj = 2;
            n_rep_traj += r > c->max_repetition;
            if (c->truncated == AP_TRUNC_PENALIZE) {
                double p = ap_masks_overlong_penalty(L, c->max_new_tokens, c->overlong_buffer);
                reward[n] += (float)p;
                pen_sum += p;
            }
        }
        for (int t = 0; t < T; t++) {
            float v = 0;
            if (t >= len) n_pad++;
            else if (t >= L) n_eos++;
            else {
                int special = 0;
                for (int i = 0; i < c->n_special && !special; i++) special = y[t] == c->special[i];
                if (special) n_spec++;
                else if (mask_traj == 1) n_trunc++;
                else if (mask_traj == 2) n_rep++;
                else v = 1, n_kept++;
            }
            m[t] = v;
        }
    }
    free(keys);
    const double rate = n_on ? (double)n_trunc_traj / n_on : 0, NT = (double)N * T;
    const int skip = rate > c->max_truncation_rate;
    if (mon) {
        ap_monitors_set(mon, "mask/pad_frac", NT > 0 ? n_pad / NT : 0);
        ap_monitors_set(mon, "mask/after_eos_frac", NT > 0 ? n_eos / NT : 0);
        ap_monitors_set(mon, "mask/special_frac", NT > 0 ? n_spec / NT : 0);
        ap_monitors_set(mon, "mask/truncated_frac", NT > 0 ? n_trunc / NT : 0);
        ap_monitors_set(mon, "mask/repetitive_frac", NT > 0 ? n_rep / NT : 0);
        ap_monitors_set(mon, "mask/kept_frac", NT > 0 ? n_kept / NT : 0);
        ap_monitors_set(mon, "mask/bad_length", bad_len);
        if (n_on) { /* on-policy monitors: absent (not 0) for a batch of dataset rows only */
            ap_monitors_set(mon, "len/mean", len_sum / n_on);
            ap_monitors_set(mon, "len/trunc_rate", rate);
            ap_monitors_set(mon, "rep/mean", rep_sum / n_on);
            ap_monitors_set(mon, "rep/over_max", n_rep_traj);
            if (c->truncated == AP_TRUNC_PENALIZE)
                ap_monitors_set(mon, "len/overlong_penalty_mean", pen_sum / n_on);
        }
        ap_monitors_set(mon, "batch/skipped_truncation", skip);
    }
    return skip;
}
