/* divergence.h (private to learner/): per-position kernels shared by objective.c and
 * divergence.c beyond the public ones in apprentice/objectives.h: the teacher-student monitors
 * (both KLs and the top-k overlap at one position) and the student softmax at one position. */
#ifndef APPRENTICE_LEARNER_DIVERGENCE_H
#define APPRENTICE_LEARNER_DIVERGENCE_H

#include "apprentice/objectives.h"

/* Softmax of s / tau over V: ex[v] = exp((s[v] - max s) / tau); returns the sum in *sum and
 * the log-normalizer shift so that log p[v] = (s[v] - smax) / tau - *lse_shift. */
void ap_obj_softmax_row(float *ex, double *sum, double *lse_shift, float *smax, const float *s,
                        int V, double tau);

/* Monitors at one position over the signal's support (full: all V; top-K: the K ids plus the
 * tail bin when K < V), both sides at temperature tau: *kl_ts = KL(pT || pS),
 * *kl_st = KL(pS || pT), *overlap = |topk(pS) ∩ topk(pT)| / k with k = min(16, support size)
 * (student top-k over all V tokens). `ex` (may be NULL: computed here) is the student's
 * softmax at tau from ap_obj_softmax_row, with its `sum`, `shift` and `smax`, when the caller
 * already has it. */
void ap_obj_monitor_position(double *kl_ts, double *kl_st, double *overlap, const float *s,
                             int V, const float *full_lp, const int32_t *ids, const float *lp,
                             int K, double tau, const float *ex, double sum, double shift,
                             float smax, void *scratch);

#define AP_OBJ_OVERLAP_K 16

#endif
