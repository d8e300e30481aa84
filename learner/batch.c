/* batch.c: a decoded buffer batch (groups + teacher scores, traj.h) -> the learner's padded arrays
 * and the objectives' ap_obj_batch_t (include/apprentice/learner.h).
 *
 * Layout (N trajectories, T = longest completion, S = longest student input, V vocabulary):
 *   inputs [N, S]   prompt + completion[0 .. len-1), pad-filled: what the student forward reads;
 *                   completion token t is predicted at input position prompt_len - 1 + t
 *   tokens [N, T]   completion tokens y (pad-filled); behavior, mask, sampled log-probs [N, T]
 *   full   [N, T, V] / ids, lp [N, T, K]   each teacher kind's distributions
 *
 * Bad content is never fatal (STYLE.md 8): an item whose tokens are out of range, whose prompt is
 * empty or whose input exceeds the model's positions is dropped; a score set at the wrong
 * temperature, for another vocabulary or not fitting its group is ignored; a needed kind that is
 * missing gets NaN signals (the objectives mask and count those positions) or, for the
 * self-teacher, h = 0. Each case is counted in the ap_learner_batch_t.
 *
 * Forms: a kind's full form is copied from full scores; its top-K form is copied from top-K scores
 * (truncated to the smallest K of the batch: entries are sorted by descending log-prob, so a
 * prefix is the top-K' for K' <= K) or selected from full scores (K = topk_k). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/learner.h"
#include "apprentice/msg.h"

ap_learner_batch_t *ap_learner_batch_new(void) {
    return ap_calloc(1, sizeof(ap_learner_batch_t));
}

static void s_free_n(ap_learner_batch_t *lb) {
    free(lb->input_len), free(lb->prompt_len), free(lb->length), free(lb->truncated);
    free(lb->reward), free(lb->correct), free(lb->group), free(lb->has_teacher);
    free(lb->on_policy), free(lb->item), free(lb->index), free(lb->version), free(lb->rep);
}

static void s_free_nt(ap_learner_batch_t *lb) {
    free(lb->tokens), free(lb->behavior), free(lb->mask);
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        free(lb->sig[k].sampled);
}

void ap_learner_batch_destroy(ap_learner_batch_t **lbp) {
    if (!lbp || !*lbp) return;
    ap_learner_batch_t *lb = *lbp;
    s_free_n(lb);
    s_free_nt(lb);
    free(lb->inputs);
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        free(lb->sig[k].full), free(lb->sig[k].ids), free(lb->sig[k].lp);
    }
    free(lb);
    *lbp = NULL;
}

/* Size every array for N x T (x S, x V, x K per kind); contents are not kept. */
static void s_reserve(ap_learner_batch_t *lb, int N, int T, int S, const int full[],
                      const int K[]) {
    size_t n = (size_t)N, nt = n * T, ns = n * S;
    if (n > lb->cap_n) {
        s_free_n(lb);
        lb->input_len = ap_malloc(n * sizeof(int));
        lb->prompt_len = ap_malloc(n * sizeof(int));
        lb->length = ap_malloc(n * sizeof(int32_t));
        lb->truncated = ap_malloc(n);
        lb->reward = ap_malloc(n * sizeof(float));
        lb->correct = ap_malloc(n * sizeof(int32_t));
        lb->group = ap_malloc(n * sizeof(int32_t));
        lb->has_teacher = ap_malloc(n * sizeof(int32_t));
        lb->on_policy = ap_malloc(n * sizeof(int32_t));
        lb->item = ap_malloc(n * sizeof(int32_t));
        lb->index = ap_malloc(n * sizeof(int32_t));
        lb->version = ap_malloc(n * sizeof(ap_version_t));
        lb->rep = ap_malloc(n * sizeof(float));
        lb->cap_n = n;
    }
    if (nt > lb->cap_nt) {
        s_free_nt(lb);
        lb->tokens = ap_malloc(nt * sizeof(int32_t));
        lb->behavior = ap_malloc(nt * sizeof(float));
        lb->mask = ap_malloc(nt * sizeof(float));
        for (int k = 0; k < AP_TEACHER_COUNT; k++)
            lb->sig[k].sampled = ap_malloc(nt * sizeof(float));
        lb->cap_nt = nt;
    }
    if (ns > lb->cap_ns) {
        free(lb->inputs);
        lb->inputs = ap_malloc(ns * sizeof(int32_t));
        lb->cap_ns = ns;
    }
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        size_t ntv = full[k] ? nt * (size_t)lb->V : 0, ntk = nt * (size_t)K[k];
        if (ntv > lb->cap_ntv[k]) {
            free(lb->sig[k].full);
            lb->sig[k].full = ap_malloc(ntv * sizeof(float));
            lb->cap_ntv[k] = ntv;
        }
        if (ntk > lb->cap_ntk[k]) {
            free(lb->sig[k].ids), free(lb->sig[k].lp);
            lb->sig[k].ids = ap_malloc(ntk * sizeof(int32_t));
            lb->sig[k].lp = ap_malloc(ntk * sizeof(float));
            lb->cap_ntk[k] = ntk;
        }
    }
}

/* The top-K of a full log-prob row [V]: ids and values by descending value (ties: lower id). */
static void s_select_topk(int32_t *ids, float *lp, const float *row, int V, int K) {
    int n = 0;
    for (int v = 0; v < V; v++) {
        float x = row[v];
        if (n == K && !(x > lp[K - 1]) && !isnan(lp[K - 1])) continue;
        int j = n < K ? n++ : K - 1;
        while (j > 0 && (x > lp[j - 1] || (isnan(lp[j - 1]) && !isnan(x)))) {
            ids[j] = ids[j - 1], lp[j] = lp[j - 1];
            j--;
        }
        ids[j] = v, lp[j] = x;
    }
}

/* Whether scores `s` may serve kind k for group g (counts the refusals). */
static int s_scores_ok(ap_learner_batch_t *lb, const ap_scores_t *s, const ap_group_t *g, int k,
                       const ap_learner_batch_opts_t *o) {
    if (!s) return 0;
    int forms = o->full[k] || o->topk[k];
    int ok = s->vocab_size == o->V && s->G == g->G && (!s->full || s->K == o->V) &&
             (s->full || (s->K >= 0 && s->K <= o->V && (s->K == 0 || s->ids))) &&
             ap_msg_scores_match(s, g) == 0;
    if (ok && forms) ok = fabs(s->temperature - o->tau[k]) <= 1e-6 * o->tau[k];
    if (!ok) lb->bad_scores++;
    return ok;
}

/* 1 when every token of the group is in [0, V) and its prompt is not empty. */
static int s_group_ok(const ap_group_t *g, int V) {
    if (!g || g->n_prompt < 1 || g->G < 1) return 0;
    for (int i = 0; i < g->n_prompt; i++)
        if (g->prompt[i] < 0 || g->prompt[i] >= V) return 0;
    for (int i = 0; i < g->n_tokens; i++)
        if (g->tokens[i] < 0 || g->tokens[i] >= V) return 0;
    return 1;
}

int ap_learner_batch_build(ap_learner_batch_t *lb, const ap_batch_t *b,
                           const ap_learner_batch_opts_t *o) {
    AP_ASSERT(o->V >= 1 && o->max_seq >= 1);
    const int V = o->V;
    lb->V = V;
    lb->N = lb->T = lb->S = lb->n_items = 0;
    lb->bad_scores = lb->dropped = lb->bad_temperature = 0;
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        lb->missing[k] = 0, lb->sig[k].present = 0;

    /* pass 1: which items, the shape, the top-K size of each kind */
    uint8_t *keep = ap_calloc((size_t)AP_MAX(b->n_items, 1), 1);
    const ap_scores_t **sc =
        ap_calloc((size_t)AP_MAX(b->n_items, 1) * AP_TEACHER_COUNT, sizeof *sc);
    int N = 0, T = 1, S = 1, kmin[AP_TEACHER_COUNT];
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        kmin[k] = 0;
    for (int j = 0; j < b->n_items; j++) {
        const ap_group_t *g = b->items[j].group;
        if (!s_group_ok(g, V)) {
            lb->dropped += g ? g->G : 0;
            continue;
        }
        int longest = 0, input = g->n_prompt;
        for (int i = 0; i < g->G; i++) {
            int len = g->offset[i + 1] - g->offset[i];
            longest = AP_MAX(longest, len);
            input = AP_MAX(input, g->n_prompt + AP_MAX(len - 1, 0));
        }
        if (input > o->max_seq) {
            lb->dropped += g->G;
            continue;
        }
        keep[j] = 1;
        N += g->G, T = AP_MAX(T, longest), S = AP_MAX(S, input);
        for (int k = 0; k < AP_TEACHER_COUNT; k++) {
            const ap_scores_t *s = ap_batch_item_scores(&b->items[j], (ap_teacher_kind_t)k);
            if (!s_scores_ok(lb, s, g, k, o)) continue;
            sc[(size_t)j * AP_TEACHER_COUNT + k] = s;
            lb->sig[k].present++;
            if (!s->full && (kmin[k] == 0 || s->K < kmin[k])) kmin[k] = s->K;
        }
    }
    int K[AP_TEACHER_COUNT];
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        K[k] = !o->topk[k] ? 0 : kmin[k] > 0 ? kmin[k] : AP_MIN(AP_MAX(o->topk_k, 1), V);
        lb->sig[k].K = K[k];
        lb->sig[k].tau = o->tau[k];
    }
    if (N == 0) {
        free(keep), free(sc);
        memset(&lb->ob, 0, sizeof lb->ob);
        return 0;
    }
    s_reserve(lb, N, T, S, o->full, K);
    lb->N = N, lb->T = T, lb->S = S;
    const size_t NT = (size_t)N * T;
    for (size_t p = 0; p < NT; p++)
        lb->tokens[p] = o->pad_id;
    memset(lb->behavior, 0, NT * sizeof *lb->behavior);
    memset(lb->mask, 0, NT * sizeof *lb->mask);
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        memset(lb->sig[k].sampled, 0, NT * sizeof(float));
        if (o->full[k]) memset(lb->sig[k].full, 0, NT * V * sizeof(float));
        if (K[k]) {
            memset(lb->sig[k].lp, 0, NT * K[k] * sizeof(float));
            for (size_t p = 0; p < NT; p++)
                for (int e = 0; e < K[k]; e++)
                    lb->sig[k].ids[p * K[k] + e] = e;
        }
    }

    /* pass 2: fill */
    int n = 0;
    for (int j = 0; j < b->n_items; j++) {
        if (!keep[j]) continue;
        const ap_group_t *g = b->items[j].group;
        const int item = lb->n_items++, on = g->source == AP_SOURCE_ON_POLICY;
        if (on && fabs(g->temperature - o->sampling_tau) > 1e-6 * o->sampling_tau)
            lb->bad_temperature++;
        const ap_scores_t *self = sc[(size_t)j * AP_TEACHER_COUNT + AP_TEACHER_SELF];
        for (int i = 0; i < g->G; i++, n++) {
            const int off = g->offset[i], len = g->offset[i + 1] - off;
            int32_t *in = lb->inputs + (size_t)n * S;
            memcpy(in, g->prompt, (size_t)g->n_prompt * sizeof *in);
            if (len > 1) memcpy(in + g->n_prompt, g->tokens + off, (size_t)(len - 1) * sizeof *in);
            lb->input_len[n] = g->n_prompt + AP_MAX(len - 1, 0);
            for (int t = lb->input_len[n]; t < S; t++)
                in[t] = o->pad_id;
            lb->prompt_len[n] = g->n_prompt;
            memcpy(lb->tokens + (size_t)n * T, g->tokens + off, (size_t)len * sizeof(int32_t));
            if (on)
                memcpy(lb->behavior + (size_t)n * T, g->logprobs + off,
                       (size_t)len * sizeof(float));
            lb->length[n] = len;
            lb->truncated[n] = g->finish[i] == AP_FINISH_LENGTH;
            lb->reward[n] = g->reward[i];
            lb->correct[n] = g->correct[i];
            lb->group[n] = item;
            lb->on_policy[n] = on;
            lb->item[n] = j;
            lb->index[n] = i;
            lb->version[n] = g->version;
            lb->rep[n] = 0;
            int ctx = on && ap_group_has_ctx(g, i);
            lb->has_teacher[n] = ctx && self && self->present[i];
            for (int k = 0; k < AP_TEACHER_COUNT; k++) {
                const ap_scores_t *s = sc[(size_t)j * AP_TEACHER_COUNT + k];
                /* whether this trajectory should have kind k: the self-teacher scores on-policy
                 * trajectories with a context, the reference on-policy ones, the external all */
                int wanted = k == AP_TEACHER_SELF ? ctx : k == AP_TEACHER_REFERENCE ? on : 1;
                int have = s && s->present[i] && wanted;
                if (o->need[k] && wanted && (!have || (o->full[k] && !s->full))) lb->missing[k]++;
                ap_learner_signal_t *sg = &lb->sig[k];
                for (int t = 0; t < len; t++) {
                    size_t p = (size_t)n * T + t, q = (size_t)off + t;
                    sg->sampled[p] = have ? s->sampled[q] : NAN;
                    if (o->full[k]) {
                        float *row = sg->full + p * V;
                        if (have && s->full)
                            memcpy(row, s->logprobs + q * V, (size_t)V * sizeof *row);
                        else if (wanted)
                            for (int v = 0; v < V; v++)
                                row[v] = NAN;
                    }
                    if (K[k]) {
                        int32_t *ids = sg->ids + p * K[k];
                        float *lp = sg->lp + p * K[k];
                        if (have && s->full) {
                            s_select_topk(ids, lp, s->logprobs + q * V, V, K[k]);
                        } else if (have && s->K >= K[k]) {
                            memcpy(ids, s->ids + q * s->K, (size_t)K[k] * sizeof *ids);
                            memcpy(lp, s->logprobs + q * s->K, (size_t)K[k] * sizeof *lp);
                        } else if (wanted) {
                            for (int e = 0; e < K[k]; e++)
                                lp[e] = NAN;
                        }
                    }
                }
            }
        }
    }
    AP_ASSERT(n == N);
    free(keep), free(sc);

    const ap_learner_signal_t *te = &lb->sig[AP_TEACHER_EXTERNAL], *se = &lb->sig[AP_TEACHER_SELF];
    lb->ob = (ap_obj_batch_t){.N = N,
                              .T = T,
                              .V = V,
                              .tokens = lb->tokens,
                              .mask = lb->mask,
                              .behavior = lb->behavior,
                              .ref = lb->sig[AP_TEACHER_REFERENCE].sampled,
                              .teacher_sampled = te->sampled,
                              .reward = lb->reward,
                              .correct = lb->correct,
                              .group = lb->group,
                              .has_teacher = lb->has_teacher,
                              .on_policy = lb->on_policy,
                              .teacher = {.full = o->full[AP_TEACHER_EXTERNAL] ? te->full : NULL,
                                          .topk_ids = te->K ? te->ids : NULL,
                                          .topk_lp = te->K ? te->lp : NULL,
                                          .K = te->K,
                                          .tau = te->tau},
                              .self_teacher = {.full = o->full[AP_TEACHER_SELF] ? se->full : NULL,
                                               .topk_ids = se->K ? se->ids : NULL,
                                               .topk_lp = se->K ? se->lp : NULL,
                                               .K = se->K,
                                               .tau = se->tau}};
    return N;
}
