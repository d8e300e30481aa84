/* test_protocol_fixtures.h: random but valid messages for the protocol, transport and weights
 * tests (one seeded generator, so a failure reproduces). Header-only, included by tests. */
#ifndef APPRENTICE_TEST_PROTOCOL_FIXTURES_H
#define APPRENTICE_TEST_PROTOCOL_FIXTURES_H

#include <string.h>

#include "apprentice/msg.h"
#include "apprentice/rng.h"
#include "apprentice/traj.h"

/* A valid on-policy group: G trajectories of 1..max_len tokens over vocabulary V, every other
 * trajectory with a privileged context. */
static inline ap_group_t *fx_group(ap_rng_t *r, int G, int max_len, int V) {
    int len[64], ctx[64];
    for (int i = 0; i < G; i++) {
        len[i] = 1 + (int)ap_rng_below(r, (uint64_t)max_len);
        ctx[i] = (i % 2) ? 1 + (int)ap_rng_below(r, 8) : 0;
    }
    int n_prompt = 1 + (int)ap_rng_below(r, 16);
    ap_group_t *g = ap_group_new(G, n_prompt, len, ctx);
    g->id = ap_rng_u64(r);
    g->source = AP_SOURCE_ON_POLICY;
    g->version = (ap_version_t){1, 5};
    g->actor_id = 3;
    g->item_id = 1234;
    g->temperature = 0.9f;
    ap_group_set_prompt_text(g, "What is 17 + 25?");
    for (int i = 0; i < n_prompt; i++)
        g->prompt[i] = (int32_t)ap_rng_below(r, (uint64_t)V);
    for (int t = 0; t < g->n_tokens; t++) {
        g->tokens[t] = (int32_t)ap_rng_below(r, (uint64_t)V);
        g->logprobs[t] = -(float)ap_rng_uniform(r) * 5.0f;
    }
    for (int t = 0; t < g->n_ctx; t++)
        g->ctx_tokens[t] = (int32_t)ap_rng_below(r, (uint64_t)V);
    for (int i = 0; i < G; i++) {
        g->reward[i] = (float)ap_rng_uniform(r);
        g->correct[i] = (uint8_t)(i % 3 == 0);
        g->finish[i] = (uint8_t)(i % AP_FINISH_COUNT);
        if (i % 2) ap_group_set_feedback(g, i, "expected 42");
    }
    return g;
}

/* Scores for g: top-K (full = 0) or the full distribution over V (full = 1). */
static inline ap_scores_t *fx_scores(ap_rng_t *r, const ap_group_t *g, int K, int full, int V,
                                     ap_teacher_kind_t kind) {
    ap_scores_t *s = ap_scores_new(g->G, g->offset, full ? V : K, full, V);
    s->request_id = ap_rng_u64(r);
    s->group_id = g->id;
    s->kind = kind;
    s->version = kind == AP_TEACHER_SELF ? (ap_version_t){1, 4} : (ap_version_t){0, 0};
    s->temperature = 1.0f;
    for (int i = 0; i < g->G; i++)
        s->present[i] = kind == AP_TEACHER_SELF ? (uint8_t)(i % 2) : 1;
    size_t nk = (size_t)s->n_tokens * (size_t)s->K;
    for (int t = 0; t < s->n_tokens; t++)
        s->sampled[t] = -(float)ap_rng_uniform(r) * 6.0f;
    for (size_t j = 0; j < nk; j++) {
        s->logprobs[j] = -(float)ap_rng_uniform(r) * 10.0f;
        if (!full) s->ids[j] = (int32_t)ap_rng_below(r, (uint64_t)V);
    }
    return s;
}

#endif
