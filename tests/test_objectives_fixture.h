/* test_objectives_fixture.h: a synthetic learner batch for the objectives' tests (random
 * student and teacher logits, groups of G with rewards, behaviour log-probs near the current
 * ones so that some tokens clip and one is stale, a few masked positions), owning every array.
 *
 *   fx_t f;
 *   fx_init(&f, 6, 4, 7, 3, 3, 42);          // N, T, V, K, G, seed
 *   ... f.b is an ap_obj_batch_t over the arrays, f.logits [N, T, V] ...
 *   fx_free(&f);
 */
#ifndef APPRENTICE_TEST_OBJECTIVES_FIXTURE_H
#define APPRENTICE_TEST_OBJECTIVES_FIXTURE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"
#include "apprentice/rng.h"

typedef struct {
    int N, T, V, K;
    float *logits;                       /* [N, T, V] student */
    float *tz, *sz;                      /* [N, T, V] teacher / self-teacher logits */
    float *t_full, *s_full;              /* [N, T, V] their log-probs at tau */
    int32_t *t_ids, *s_ids;              /* [N, T, K] top-K ids */
    float *t_lp, *s_lp;                  /* [N, T, K] top-K log-probs at tau */
    float *mask, *behavior, *ref, *lt, *reward, *lpt;
    int32_t *tokens, *correct, *group, *has_teacher, *on_policy;
    ap_obj_batch_t b;
} fx_t;

static inline void fx_logsoftmax(float *out, const float *z, int V, double tau) {
    double m = z[0], acc = 0;
    for (int v = 1; v < V; v++) m = z[v] > m ? z[v] : m;
    for (int v = 0; v < V; v++) acc += exp((z[v] - m) / tau);
    for (int v = 0; v < V; v++) out[v] = (float)((z[v] - m) / tau - log(acc));
}

/* Top-K of lp [V] (descending) into ids / out. */
static inline void fx_topk(int32_t *ids, float *out, const float *lp, int V, int K) {
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int v = 0; v < V; v++) {
            int used = 0;
            for (int i = 0; i < j; i++) used |= ids[i] == v;
            if (!used && (best < 0 || lp[v] > lp[best])) best = v;
        }
        ids[j] = best, out[j] = lp[best];
    }
}

/* (Re)compute the teachers' log-probs and top-K at temperatures tt (teacher) / ts (self). */
static inline void fx_temperatures(fx_t *f, double tt, double ts) {
    const size_t NT = (size_t)f->N * f->T;
    for (size_t p = 0; p < NT; p++) {
        fx_logsoftmax(f->t_full + p * f->V, f->tz + p * f->V, f->V, tt);
        fx_logsoftmax(f->s_full + p * f->V, f->sz + p * f->V, f->V, ts);
        fx_topk(f->t_ids + p * f->K, f->t_lp + p * f->K, f->t_full + p * f->V, f->V, f->K);
        fx_topk(f->s_ids + p * f->K, f->s_lp + p * f->K, f->s_full + p * f->V, f->V, f->K);
    }
    f->b.teacher.tau = tt, f->b.self_teacher.tau = ts;
}

static inline void fx_refresh_lpt(fx_t *f, double tau_s) {
    ap_obj_sampled_logprobs(f->lpt, f->logits, f->tokens, f->N, f->T, f->V, tau_s);
}

static inline void fx_init(fx_t *f, int N, int T, int V, int K, int G, uint64_t seed) {
    memset(f, 0, sizeof *f);
    f->N = N, f->T = T, f->V = V, f->K = K;
    const size_t NT = (size_t)N * T, NTV = NT * V, NTK = NT * K;
    ap_rng_t r;
    ap_rng_seed(&r, seed, 7);
    f->logits = ap_malloc(NTV * 4), f->tz = ap_malloc(NTV * 4), f->sz = ap_malloc(NTV * 4);
    f->t_full = ap_malloc(NTV * 4), f->s_full = ap_malloc(NTV * 4);
    f->t_ids = ap_malloc(NTK * 4), f->s_ids = ap_malloc(NTK * 4);
    f->t_lp = ap_malloc(NTK * 4), f->s_lp = ap_malloc(NTK * 4);
    f->mask = ap_malloc(NT * 4), f->behavior = ap_malloc(NT * 4), f->ref = ap_malloc(NT * 4);
    f->lt = ap_malloc(NT * 4), f->lpt = ap_malloc(NT * 4), f->tokens = ap_malloc(NT * 4);
    f->reward = ap_malloc((size_t)N * 4), f->correct = ap_malloc((size_t)N * 4);
    f->group = ap_malloc((size_t)N * 4), f->has_teacher = ap_malloc((size_t)N * 4);
    f->on_policy = ap_malloc((size_t)N * 4);
    for (size_t i = 0; i < NTV; i++) {
        f->logits[i] = (float)(1.5 * ap_rng_normal(&r));
        f->tz[i] = (float)(1.5 * ap_rng_normal(&r));
        f->sz[i] = (float)(1.5 * ap_rng_normal(&r));
    }
    for (size_t p = 0; p < NT; p++) {
        f->tokens[p] = (int32_t)ap_rng_below(&r, (uint64_t)V);
        f->mask[p] = ap_rng_uniform(&r) < 0.85 ? 1.0f : 0.0f;
    }
    f->mask[0] = 1;
    fx_refresh_lpt(f, 1.0);
    for (size_t p = 0; p < NT; p++) {
        f->behavior[p] = f->lpt[p] + (float)(0.3 * ap_rng_normal(&r));
        f->ref[p] = f->lpt[p] + (float)(0.2 * ap_rng_normal(&r));
    }
    f->behavior[1] = f->lpt[1] - 2.0f; /* rho = e^2 > 3: stale */
    for (int n = 0; n < N; n++) {
        f->group[n] = n / G;
        f->reward[n] = (float)ap_rng_below(&r, 2);
        f->correct[n] = f->reward[n] > 0.5f;
        f->has_teacher[n] = ap_rng_uniform(&r) < 0.7;
        f->on_policy[n] = 1;
    }
    f->b = (ap_obj_batch_t){.N = N, .T = T, .V = V, .tokens = f->tokens, .mask = f->mask,
                            .behavior = f->behavior, .ref = f->ref, .teacher_sampled = f->lt,
                            .reward = f->reward, .correct = f->correct, .group = f->group,
                            .has_teacher = f->has_teacher, .on_policy = f->on_policy,
                            .teacher = {.full = f->t_full, .topk_ids = f->t_ids,
                                        .topk_lp = f->t_lp, .K = K, .tau = 1},
                            .self_teacher = {.full = f->s_full, .topk_ids = f->s_ids,
                                             .topk_lp = f->s_lp, .K = K, .tau = 1}};
    fx_temperatures(f, 1.0, 1.0);
    for (size_t p = 0; p < NT; p++) f->lt[p] = f->t_full[p * V + f->tokens[p]];
}

static inline void fx_free(fx_t *f) {
    free(f->logits), free(f->tz), free(f->sz), free(f->t_full), free(f->s_full);
    free(f->t_ids), free(f->s_ids), free(f->t_lp), free(f->s_lp), free(f->mask);
    free(f->behavior), free(f->ref), free(f->lt), free(f->lpt), free(f->tokens);
    free(f->reward), free(f->correct), free(f->group), free(f->has_teacher), free(f->on_policy);
    memset(f, 0, sizeof *f);
}

#endif
