/* test_learner_fixture.h: what the learner and actor tests share: a tiny student (addition task
 * vocabulary, D 32, L 2, GQA 4/2, 64 positions) saved as a model directory, a run config for it,
 * and handmade buffer batches (on-policy groups with behaviour log-probs equal to the student's
 * current ones, rewards, privileged contexts; dataset groups; external / self / reference scores
 * from random teacher distributions, full or top-K).
 *
 *   fx_student("tmp-x/student", 7);                       // model.safetensors + vocab.json
 *   ap_config_t *cfg = fx_config("tmp-x/student", "objective.gkd.enabled=true", NULL);
 *   fx_batch_opts_t bo = fx_batch_defaults();  bo.ext = FX_FULL;
 *   ap_batch_t *b = fx_batch(model, &bo);                 // caller destroys
 */
#ifndef APPRENTICE_TEST_LEARNER_FIXTURE_H
#define APPRENTICE_TEST_LEARNER_FIXTURE_H

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "apprentice/model.h"
#include "apprentice/rng.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"
#include "apprentice/traj.h"

/* Save a tiny random student (+ the addition task's vocabulary) into dir. Returns V. */
static inline int fx_student(const char *dir, uint64_t seed) {
    ap_task_config_t tc;
    ap_task_config_defaults(&tc);
    ap_task_t *task = ap_task_new(&tc);
    AP_ASSERTF(task, "%s", ap_errmsg());
    ap_tokenizer_t *tok = ap_task_build_tokenizer(task);
    ap_model_config_t mc;
    ap_model_config_defaults(&mc);
    mc.vocab_size = ap_tokenizer_vocab_size(tok);
    mc.hidden_size = 32, mc.intermediate_size = 64, mc.num_layers = 2;
    mc.num_heads = 4, mc.num_kv_heads = 2, mc.max_positions = 64;
    ap_model_t *m = ap_model_new(&mc, seed);
    AP_ASSERTF(m, "%s", ap_errmsg());
    AP_ASSERTF(ap_model_save(m, dir) == 0 && ap_tokenizer_save_dir(tok, dir) == 0, "%s",
               ap_errmsg());
    int V = mc.vocab_size;
    ap_model_destroy(&m);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&task);
    return V;
}

/* A config for the tiny student with test-sized settings, then each "key=value" override
 * (NULL-terminated list). */
static inline ap_config_t *fx_config(const char *student, ...) {
    ap_config_t *c = ap_config_new();
    char buf[1024];
    snprintf(buf, sizeof buf, "model.student=%s", student);
    const char *base[] = {buf,
                          "sampling.max_new_tokens=8",
                          "sampling.group_size=4",
                          "batch.size=8",
                          "optimizer.lr=0.01",
                          "optimizer.schedule=constant",
                          "optimizer.grad_clip=1",
                          "learner.checkpoint_every=0",
                          "learner.rollouts_every=0",
                          "task.heldout_size=16",
                          "buffer.heartbeat_ms=100"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        AP_ASSERTF(ap_config_set(c, base[i]) == 0, "%s", ap_errmsg());
    va_list ap;
    va_start(ap, student);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        AP_ASSERTF(ap_config_set(c, s) == 0, "%s: %s", s, ap_errmsg());
    va_end(ap);
    AP_ASSERTF(ap_config_validate(c, "test") == 0, "%s", ap_errmsg());
    return c;
}

enum { FX_NONE = 0, FX_FULL = 1, FX_TOPK = 2 };

typedef struct {
    int groups;    /* on-policy groups */
    int G;         /* trajectories per on-policy group */
    int dataset;   /* dataset groups (one gold-like completion each) */
    int ext, self; /* FX_NONE / FX_FULL / FX_TOPK */
    int ref;       /* 1: reference scores (sampled log-probs) */
    int K;         /* top-K size */
    int max_len;   /* longest completion (EOS included) */
    int truncate;  /* 1: every on-policy trajectory finishes by length (no EOS) */
    float tau;     /* sampling temperature of the behaviour log-probs */
    uint64_t seed;
    ap_version_t version; /* of the on-policy groups */
} fx_batch_opts_t;

static inline fx_batch_opts_t fx_batch_defaults(void) {
    return (fx_batch_opts_t){.groups = 2,
                             .G = 4,
                             .dataset = 0,
                             .ext = FX_NONE,
                             .self = FX_NONE,
                             .ref = 0,
                             .K = 4,
                             .max_len = 6,
                             .truncate = 0,
                             .tau = 1.0f,
                             .seed = 1,
                             .version = {1, 0}};
}

static inline void fx_logsoftmax_row(float *out, const float *z, int V, double tau) {
    double m = z[0], acc = 0;
    for (int v = 1; v < V; v++)
        m = z[v] > m ? z[v] : m;
    for (int v = 0; v < V; v++)
        acc += exp((z[v] - m) / tau);
    for (int v = 0; v < V; v++)
        out[v] = (float)((z[v] - m) / tau - log(acc));
}

/* Top-K of lp [V] by descending value, ties to the lower id (naive, for reference). */
static inline void fx_topk_row(int32_t *ids, float *out, const float *lp, int V, int K) {
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int v = 0; v < V; v++) {
            int used = 0;
            for (int i = 0; i < j; i++)
                used |= ids[i] == v;
            if (!used && (best < 0 || lp[v] > lp[best])) best = v;
        }
        ids[j] = best, out[j] = lp[best];
    }
}

/* Sampled-token log-probs of `m` at tau for completion y[0..len) after prompt p[0..np). */
static inline void fx_logprobs(ap_model_t *m, const int32_t *p, int np, const int32_t *y, int len,
                               double tau, float *out) {
    int V = ap_model_config(m)->vocab_size, S = np + len - 1;
    int32_t *seq = ap_malloc((size_t)(np + len) * sizeof *seq);
    memcpy(seq, p, (size_t)np * sizeof *seq);
    memcpy(seq + np, y, (size_t)len * sizeof *seq);
    float *logits = ap_model_forward(m, seq, &S, 1, S);
    AP_ASSERTF(logits, "%s", ap_errmsg());
    float *lp = ap_malloc((size_t)V * sizeof *lp);
    for (int t = 0; t < len; t++) {
        fx_logsoftmax_row(lp, logits + (size_t)(np - 1 + t) * V, V, tau);
        out[t] = lp[y[t]];
    }
    free(lp);
    free(seq);
}

/* Scores of one kind for group g: random teacher distributions; `present[i]` from h when self. */
static inline ap_scores_t *fx_scores(const ap_group_t *g, int V, int form, int K, int kind,
                                     ap_rng_t *r) {
    ap_scores_t *s = ap_scores_new(g->G, g->offset, form == FX_FULL ? V : K, form == FX_FULL, V);
    s->group_id = g->id;
    s->kind = (ap_teacher_kind_t)kind;
    s->temperature = 1.0f;
    float *z = ap_malloc((size_t)V * sizeof *z), *lp = ap_malloc((size_t)V * sizeof *lp);
    for (int i = 0; i < g->G; i++) {
        s->present[i] = kind == AP_TEACHER_SELF ? ap_group_has_ctx(g, i) : 1;
        if (!s->present[i]) continue;
        for (int q = g->offset[i]; q < g->offset[i + 1]; q++) {
            for (int v = 0; v < V; v++)
                z[v] = (float)(2 * ap_rng_normal(r));
            z[g->tokens[q]] += 2.0f; /* teachers like the sampled token a bit */
            fx_logsoftmax_row(lp, z, V, 1.0);
            s->sampled[q] = lp[g->tokens[q]];
            if (form == FX_FULL)
                memcpy(s->logprobs + (size_t)q * V, lp, (size_t)V * sizeof *lp);
            else
                fx_topk_row(s->ids + (size_t)q * K, s->logprobs + (size_t)q * K, lp, V, K);
        }
    }
    free(z), free(lp);
    return s;
}

/* A handmade batch for model m (behaviour log-probs = m's at o->tau). Caller destroys. */
static inline ap_batch_t *fx_batch(ap_model_t *m, const fx_batch_opts_t *o) {
    const int V = ap_model_config(m)->vocab_size;
    ap_rng_t r;
    ap_rng_seed(&r, o->seed, 77);
    ap_batch_t *b = ap_batch_new(o->groups + o->dataset);
    for (int j = 0; j < o->groups + o->dataset; j++) {
        const int on = j < o->groups, G = on ? o->G : 1;
        int np = 3 + (int)ap_rng_below(&r, 4), len[64], ctx[64];
        for (int i = 0; i < G; i++) {
            len[i] = 2 + (int)ap_rng_below(&r, (uint64_t)(o->max_len - 1));
            ctx[i] = on && i % 2 == 0 ? 4 + i : 0; /* even trajectories have a context */
        }
        ap_group_t *g = ap_group_new(G, np, len, ctx);
        g->id = (uint64_t)(j + 1) + (on ? 0 : 1ull << 39);
        g->source = on ? AP_SOURCE_ON_POLICY : AP_SOURCE_DATASET;
        g->version = on ? o->version : (ap_version_t){0, 0};
        g->temperature = on ? o->tau : 0.0f;
        g->prompt[0] = 1;
        for (int t = 1; t < np; t++)
            g->prompt[t] = 3 + (int32_t)ap_rng_below(&r, (uint64_t)(V - 3));
        for (int i = 0; i < G; i++) {
            int32_t *y = g->tokens + g->offset[i];
            for (int t = 0; t < len[i]; t++)
                y[t] = 3 + (int32_t)ap_rng_below(&r, (uint64_t)(V - 3));
            int trunc = on && o->truncate;
            if (!trunc) y[len[i] - 1] = 2; /* <eos> */
            g->finish[i] = trunc ? AP_FINISH_LENGTH : AP_FINISH_EOS;
            g->correct[i] = i == 0 ? 1 : i == 1 ? 0 : (uint8_t)ap_rng_below(&r, 2);
            g->reward[i] = on ? (float)g->correct[i] : 0.0f;
            if (on) fx_logprobs(m, g->prompt, np, y, len[i], o->tau, g->logprobs + g->offset[i]);
            for (int t = g->ctx_offset[i]; t < g->ctx_offset[i + 1]; t++)
                g->ctx_tokens[t] = t == g->ctx_offset[i] ? 1 : 3 + (int32_t)ap_rng_below(&r, 5);
        }
        ap_group_set_prompt_text(g, "1+2=");
        b->items[j].group = g;
        int ns = 0;
        ap_scores_t *sc[3];
        if (o->ext) sc[ns++] = fx_scores(g, V, o->ext, o->K, AP_TEACHER_EXTERNAL, &r);
        if (on && o->self) sc[ns++] = fx_scores(g, V, o->self, o->K, AP_TEACHER_SELF, &r);
        if (on && o->ref) sc[ns++] = fx_scores(g, V, FX_TOPK, 1, AP_TEACHER_REFERENCE, &r);
        b->items[j].n_scores = ns;
        b->items[j].scores = ap_calloc(3, sizeof(ap_scores_t *));
        for (int k = 0; k < ns; k++)
            b->items[j].scores[k] = sc[k];
    }
    return b;
}

#endif
