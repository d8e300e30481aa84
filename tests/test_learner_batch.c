/* test_learner_batch.c: the learner's batch conversion (learner/batch.c) on a small handmade
 * batch with known answers: student inputs and completion positions, per-trajectory arrays,
 * external teacher signals from full and top-K scores (one K for the batch, top-K selected from
 * full rows), self-teacher top-K and h, dropped items (input too long), refused scores (wrong
 * temperature) and missing forms (NaN, counted); then the same on a second, larger batch to
 * check that re-used buffers are rewritten. */
#include <math.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/learner.h"
#include "test.h"

#define NV 10

static void s_full_row(float *row, int q) {
    float z[NV];
    for (int v = 0; v < NV; v++)
        z[v] = (float)((q + 1) * 0.1 * v + 0.05 * (v % 3));
    double m = z[0], a = 0;
    for (int v = 1; v < NV; v++)
        m = fmax(m, z[v]);
    for (int v = 0; v < NV; v++)
        a += exp(z[v] - m);
    for (int v = 0; v < NV; v++)
        row[v] = (float)(z[v] - m - log(a));
}

static ap_batch_t *s_batch(void) {
    ap_batch_t *b = ap_batch_new(4);
    /* item 0: on-policy, G = 2, prompt [1 5 6], completions [7 8 2] and [9 2], h = 1 for 0 */
    {
        int len[2] = {3, 2}, ctx[2] = {2, 0};
        ap_group_t *g = ap_group_new(2, 3, len, ctx);
        g->id = 100;
        g->version = (ap_version_t){1, 5};
        int32_t p[3] = {1, 5, 6}, y[5] = {7, 8, 2, 9, 2};
        float lp[5] = {-0.1f, -0.2f, -0.3f, -0.4f, -0.5f};
        memcpy(g->prompt, p, sizeof p), memcpy(g->tokens, y, sizeof y);
        memcpy(g->logprobs, lp, sizeof lp);
        g->ctx_tokens[0] = 1, g->ctx_tokens[1] = 4;
        g->reward[0] = 1, g->correct[0] = 1;
        ap_scores_t *e = ap_scores_new(2, g->offset, NV, 1, NV); /* external, full */
        e->group_id = 100, e->kind = AP_TEACHER_EXTERNAL;
        for (int q = 0; q < 5; q++) {
            s_full_row(e->logprobs + q * NV, q);
            e->sampled[q] = e->logprobs[q * NV + y[q]];
        }
        ap_scores_t *s = ap_scores_new(2, g->offset, 3, 0, NV); /* self, top-3, traj 0 only */
        s->group_id = 100, s->kind = AP_TEACHER_SELF;
        s->present[1] = 0;
        for (int q = 0; q < 3; q++) {
            for (int e2 = 0; e2 < 3; e2++) {
                s->ids[q * 3 + e2] = (q + e2) % NV;
                s->logprobs[q * 3 + e2] = -0.5f - e2 - 0.1f * q;
            }
            s->sampled[q] = -0.7f - q;
        }
        b->items[0].group = g;
        b->items[0].n_scores = 2;
        b->items[0].scores = ap_calloc(2, sizeof(ap_scores_t *));
        b->items[0].scores[0] = e, b->items[0].scores[1] = s;
    }
    /* item 1: dataset, G = 1, prompt [1 4], completion [5 6 7 8] truncated, external top-4 */
    {
        int len[1] = {4};
        ap_group_t *g = ap_group_new(1, 2, len, NULL);
        g->id = 200, g->source = AP_SOURCE_DATASET, g->temperature = 0;
        g->prompt[0] = 1, g->prompt[1] = 4;
        for (int t = 0; t < 4; t++)
            g->tokens[t] = 5 + t;
        g->finish[0] = AP_FINISH_LENGTH;
        ap_scores_t *e = ap_scores_new(1, g->offset, 4, 0, NV);
        e->group_id = 200, e->kind = AP_TEACHER_EXTERNAL;
        for (int q = 0; q < 4; q++) {
            for (int k = 0; k < 4; k++) {
                e->ids[q * 4 + k] = 8 - k;
                e->logprobs[q * 4 + k] = -0.2f - k - 0.01f * q;
            }
            e->sampled[q] = -1.5f;
        }
        b->items[1].group = g;
        b->items[1].n_scores = 1;
        b->items[1].scores = ap_calloc(1, sizeof(ap_scores_t *));
        b->items[1].scores[0] = e;
    }
    /* item 2: input of 6 + 3 = 9 tokens > max_seq 8: dropped */
    {
        int len[1] = {4};
        ap_group_t *g = ap_group_new(1, 6, len, NULL);
        g->id = 300;
        for (int t = 0; t < 6; t++)
            g->prompt[t] = 3;
        for (int t = 0; t < 4; t++)
            g->tokens[t] = 4;
        b->items[2].group = g;
    }
    /* item 3: on-policy, external scores at temperature 2 (refused: missing) */
    {
        int len[1] = {2};
        ap_group_t *g = ap_group_new(1, 2, len, NULL);
        g->id = 400;
        g->version = (ap_version_t){1, 4};
        g->prompt[0] = 1, g->prompt[1] = 3;
        g->tokens[0] = 4, g->tokens[1] = 2;
        g->logprobs[0] = -1, g->logprobs[1] = -2;
        g->reward[0] = 0.5f;
        ap_scores_t *e = ap_scores_new(1, g->offset, 4, 0, NV);
        e->group_id = 400, e->kind = AP_TEACHER_EXTERNAL, e->temperature = 2.0f;
        for (int q = 0; q < 2; q++)
            for (int k = 0; k < 4; k++)
                e->ids[q * 4 + k] = k, e->logprobs[q * 4 + k] = -1.0f - k;
        b->items[3].group = g;
        b->items[3].n_scores = 1;
        b->items[3].scores = ap_calloc(1, sizeof(ap_scores_t *));
        b->items[3].scores[0] = e;
    }
    return b;
}

static void s_check_ints(const char *what, const int32_t *got, const int32_t *want, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += got[i] != want[i];
    AP_CHECK(bad == 0, "%s: %d of %d entries differ", what, bad, n);
    if (bad)
        for (int i = 0; i < n; i++)
            if (got[i] != want[i])
                fprintf(stderr, "    %s[%d] = %d, want %d\n", what, i, got[i], want[i]);
}

int main(void) {
    ap_log_set_role("test_learner_batch", 0);
    ap_learner_batch_opts_t o = {
        .V = NV, .pad_id = 0, .max_seq = 8, .topk_k = 3, .sampling_tau = 1.0};
    o.need[AP_TEACHER_EXTERNAL] = o.need[AP_TEACHER_SELF] = 1;
    o.full[AP_TEACHER_EXTERNAL] = o.topk[AP_TEACHER_EXTERNAL] = o.topk[AP_TEACHER_SELF] = 1;
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        o.tau[k] = 1.0;

    ap_batch_t *b = s_batch();
    ap_learner_batch_t *lb = ap_learner_batch_new();
    int N = ap_learner_batch_build(lb, b, &o);
    AP_CHECK(N == 4 && lb->N == 4, "N = %d", N);
    AP_CHECK(lb->T == 4 && lb->S == 5 && lb->n_items == 3, "T %d S %d items %d", lb->T, lb->S,
             lb->n_items);
    AP_CHECK(lb->dropped == 1, "dropped %ld", lb->dropped);
    AP_CHECK(lb->bad_scores == 1, "bad_scores %ld", lb->bad_scores);
    AP_CHECK(lb->missing[AP_TEACHER_EXTERNAL] == 2,
             "missing external %ld (dataset top-K only "
             "for a full form, and refused scores)",
             lb->missing[AP_TEACHER_EXTERNAL]);
    AP_CHECK(lb->missing[AP_TEACHER_SELF] == 0, "missing self %ld", lb->missing[AP_TEACHER_SELF]);

    /* student inputs and positions */
    const int32_t inputs[4 * 5] = {1, 5, 6, 7, 8, 1, 5, 6, 9, 0, 1, 4, 5, 6, 7, 1, 3, 4, 0, 0};
    s_check_ints("inputs", lb->inputs, inputs, 20);
    const int32_t in_len[4] = {5, 4, 5, 3}, p_len[4] = {3, 3, 2, 2};
    s_check_ints("input_len", lb->input_len, in_len, 4);
    s_check_ints("prompt_len", lb->prompt_len, p_len, 4);
    const int32_t tokens[16] = {7, 8, 2, 0, 9, 2, 0, 0, 5, 6, 7, 8, 4, 2, 0, 0};
    s_check_ints("tokens", lb->tokens, tokens, 16);
    const int32_t length[4] = {3, 2, 4, 2}, onp[4] = {1, 1, 0, 1}, grp[4] = {0, 0, 1, 2};
    const int32_t item[4] = {0, 0, 1, 3}, idx[4] = {0, 1, 0, 0}, h[4] = {1, 0, 0, 0};
    const int32_t correct[4] = {1, 0, 0, 0};
    s_check_ints("length", lb->length, length, 4);
    s_check_ints("on_policy", lb->on_policy, onp, 4);
    s_check_ints("group", lb->group, grp, 4);
    s_check_ints("item", lb->item, item, 4);
    s_check_ints("index", lb->index, idx, 4);
    s_check_ints("has_teacher", lb->has_teacher, h, 4);
    s_check_ints("correct", lb->correct, correct, 4);
    AP_CHECK(lb->truncated[2] == 1 && !lb->truncated[0] && !lb->truncated[1] && !lb->truncated[3],
             "truncated flags");
    AP_CHECK(lb->reward[0] == 1 && lb->reward[3] == 0.5f, "rewards %g %g", lb->reward[0],
             lb->reward[3]);
    AP_CHECK(lb->version[0].step == 5 && lb->version[3].step == 4 && lb->version[2].gen == 0,
             "versions");
    /* completion token t is predicted at input prompt_len - 1 + t: the input there is the token
     * before y[t] */
    for (int n = 0; n < 4; n++)
        for (int t = 0; t < lb->length[n]; t++) {
            int pos = lb->prompt_len[n] - 1 + t;
            int32_t before =
                t == 0 ? lb->inputs[n * 5 + lb->prompt_len[n] - 1] : lb->tokens[n * 4 + t - 1];
            AP_CHECK(pos < lb->input_len[n] && lb->inputs[n * 5 + pos] == before,
                     "row %d t %d: input position %d", n, t, pos);
        }
    const float beh[16] = {-0.1f, -0.2f, -0.3f, 0, -0.4f, -0.5f, 0, 0, 0, 0, 0, 0, -1, -2, 0, 0};
    for (int p = 0; p < 16; p++)
        AP_CHECK(lb->behavior[p] == beh[p], "behavior[%d] %g", p, lb->behavior[p]);

    /* external: full rows copied for item 0, NaN where only top-K (or nothing usable) came */
    const ap_learner_signal_t *e = &lb->sig[AP_TEACHER_EXTERNAL];
    AP_CHECK(e->K == 4, "external K = %d (the batch's smallest top-K)", e->K);
    AP_CHECK(lb->ob.teacher.full == e->full && lb->ob.teacher.topk_ids == e->ids &&
                 lb->ob.teacher.K == 4 && lb->ob.teacher.tau == 1.0,
             "ob.teacher views");
    float row[NV];
    double maxerr = 0;
    int q = 0;
    for (int n = 0; n < 2; n++)
        for (int t = 0; t < lb->length[n]; t++, q++) {
            s_full_row(row, q);
            const float *got = e->full + ((size_t)n * 4 + t) * NV;
            for (int v = 0; v < NV; v++)
                maxerr = fmax(maxerr, fabs(got[v] - row[v]));
            /* top-4 selected from the full row: naive reference */
            int32_t rid[4];
            float rlp[4];
            for (int j = 0; j < 4; j++) { /* selection by repeated argmax, ties to lower id */
                int best = -1;
                for (int v = 0; v < NV; v++) {
                    int used = 0;
                    for (int i = 0; i < j; i++)
                        used |= rid[i] == v;
                    if (!used && (best < 0 || row[v] > row[best])) best = v;
                }
                rid[j] = best, rlp[j] = row[best];
            }
            const int32_t *gi = e->ids + ((size_t)n * 4 + t) * 4;
            const float *gl = e->lp + ((size_t)n * 4 + t) * 4;
            for (int j = 0; j < 4; j++)
                AP_CHECK(gi[j] == rid[j] && gl[j] == rlp[j],
                         "row %d t %d top[%d]: %d %g want %d %g", n, t, j, gi[j], gl[j], rid[j],
                         rlp[j]);
            AP_CHECK(e->sampled[n * 4 + t] == row[lb->tokens[n * 4 + t]], "sampled row %d t %d", n,
                     t);
        }
    printf("case full->full rows: largest error %.3g\n", maxerr);
    AP_CHECK(maxerr == 0, "full rows copied exactly");
    for (int t = 0; t < 4; t++) {
        const float *fr = e->full + ((size_t)2 * 4 + t) * NV;
        AP_CHECK(isnan(fr[0]) && isnan(fr[NV - 1]), "dataset row full form NaN at t %d", t);
        const int32_t *gi = e->ids + ((size_t)2 * 4 + t) * 4;
        const float *gl = e->lp + ((size_t)2 * 4 + t) * 4;
        for (int k = 0; k < 4; k++)
            AP_CHECK(gi[k] == 8 - k && gl[k] == -0.2f - k - 0.01f * t, "dataset top-K t %d k %d", t,
                     k);
        AP_CHECK(e->sampled[2 * 4 + t] == -1.5f, "dataset sampled");
    }
    for (int t = 0; t < 2; t++)
        AP_CHECK(isnan(e->sampled[3 * 4 + t]) && isnan(e->lp[(3 * 4 + t) * 4]) &&
                     isnan(e->full[(3 * 4 + t) * NV]),
                 "refused scores: NaN at t %d", t);
    printf("case top-K copy/select: checked\n");

    /* self: top-3 copied for trajectory 0 only */
    const ap_learner_signal_t *s = &lb->sig[AP_TEACHER_SELF];
    AP_CHECK(s->K == 3 && lb->ob.self_teacher.full == NULL && lb->ob.self_teacher.K == 3,
             "self K %d", s->K);
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 3; k++)
            AP_CHECK(s->ids[(t)*3 + k] == (t + k) % NV && s->lp[t * 3 + k] == -0.5f - k - 0.1f * t,
                     "self top-K t %d k %d", t, k);
    AP_CHECK(s->sampled[0] == -0.7f && s->sampled[2] == -2.7f, "self sampled");
    printf("case self top-K: checked\n");

    /* a second, different batch through the same buffers */
    ap_batch_t *b2 = ap_batch_new(1);
    int len2[3] = {1, 5, 2};
    ap_group_t *g2 = ap_group_new(3, 1, len2, NULL);
    g2->prompt[0] = 1;
    for (int i = 0; i < 8; i++)
        g2->tokens[i] = 3 + i % 6;
    b2->items[0].group = g2;
    int N2 = ap_learner_batch_build(lb, b2, &o);
    AP_CHECK(N2 == 3 && lb->T == 5 && lb->S == 5, "second batch N %d T %d S %d", N2, lb->T, lb->S);
    AP_CHECK(lb->missing[AP_TEACHER_EXTERNAL] == 3 && lb->dropped == 0 && lb->bad_scores == 0,
             "second batch counters reset: missing %ld", lb->missing[AP_TEACHER_EXTERNAL]);
    AP_CHECK(lb->tokens[5 + 4] == 3 + 5 % 6 && lb->tokens[0 * 5 + 1] == 0, "second batch tokens");
    AP_CHECK(lb->inputs[1 * 5 + 4] == g2->tokens[1 + 3] && lb->input_len[0] == 1, "second inputs");

    ap_batch_destroy(&b2);
    ap_batch_destroy(&b);
    ap_learner_batch_destroy(&lb);
    return ap_test_result();
}
