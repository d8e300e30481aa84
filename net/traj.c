/* traj.c: constructors and destructors of the plain trajectory structs of traj.h (groups,
 * scores, batches) and of ap_msg_metrics_t (msg.h). A group or a scores struct is one allocation:
 * the struct, then every numeric array carved from the same block (8-byte aligned pieces), so
 * destroying it is one free() plus its strings. */
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/msg.h"
#include "apprentice/traj.h"

/* Round up to 8 bytes so every carved array is aligned for its type. */
static size_t s_round8(size_t n) {
    return (n + 7) & ~(size_t)7;
}

/* Carve `n` bytes from *cursor. */
static void *s_carve(char **cursor, size_t n) {
    void *p = *cursor;
    *cursor += s_round8(n);
    return p;
}

ap_group_t *ap_group_new(int G, int n_prompt, const int *len, const int *ctx_len) {
    AP_ASSERT(G >= 1 && n_prompt >= 0 && len);
    long long n_tokens = 0, n_ctx = 0;
    for (int i = 0; i < G; i++) {
        AP_ASSERT(len[i] >= 0);
        n_tokens += len[i];
        if (ctx_len) {
            AP_ASSERT(ctx_len[i] >= 0);
            n_ctx += ctx_len[i];
        }
    }
    AP_ASSERT(n_tokens <= 0x7fffffff && n_ctx <= 0x7fffffff);
    size_t bytes = s_round8(sizeof(ap_group_t)) + s_round8((size_t)n_prompt * 4) +
                   2 * s_round8((size_t)(G + 1) * sizeof(int)) +
                   2 * s_round8((size_t)n_tokens * 4) + s_round8((size_t)G * 4) +
                   2 * s_round8((size_t)G) + s_round8((size_t)G * sizeof(char *)) +
                   s_round8((size_t)n_ctx * 4);
    char *block = ap_calloc(1, bytes), *cur = block;
    ap_group_t *g = s_carve(&cur, sizeof *g);
    g->item_id = -1;
    g->temperature = 1.0f;
    g->prompt_text = ap_strdup("");
    g->n_prompt = n_prompt;
    g->prompt = s_carve(&cur, (size_t)n_prompt * 4);
    g->G = G;
    g->n_tokens = (int)n_tokens;
    g->offset = s_carve(&cur, (size_t)(G + 1) * sizeof(int));
    g->tokens = s_carve(&cur, (size_t)n_tokens * 4);
    g->logprobs = s_carve(&cur, (size_t)n_tokens * 4);
    g->reward = s_carve(&cur, (size_t)G * 4);
    g->correct = s_carve(&cur, (size_t)G);
    g->finish = s_carve(&cur, (size_t)G);
    g->feedback = s_carve(&cur, (size_t)G * sizeof(char *));
    g->n_ctx = (int)n_ctx;
    g->ctx_offset = s_carve(&cur, (size_t)(G + 1) * sizeof(int));
    g->ctx_tokens = s_carve(&cur, (size_t)n_ctx * 4);
    AP_ASSERT((size_t)(cur - block) == bytes);
    for (int i = 0; i < G; i++) {
        g->offset[i + 1] = g->offset[i] + len[i];
        g->ctx_offset[i + 1] = g->ctx_offset[i] + (ctx_len ? ctx_len[i] : 0);
        g->feedback[i] = ap_strdup("");
        g->finish[i] = AP_FINISH_EOS;
    }
    return g;
}

void ap_group_destroy(ap_group_t **gp) {
    if (!gp || !*gp) return;
    ap_group_t *g = *gp;
    for (int i = 0; i < g->G; i++)
        free(g->feedback[i]);
    free(g->prompt_text);
    free(g); /* the struct is the start of the block */
    *gp = NULL;
}

void ap_group_set_feedback(ap_group_t *g, int i, const char *text) {
    AP_ASSERT(i >= 0 && i < g->G);
    free(g->feedback[i]);
    g->feedback[i] = ap_strdup(text ? text : "");
}

void ap_group_set_prompt_text(ap_group_t *g, const char *text) {
    free(g->prompt_text);
    g->prompt_text = ap_strdup(text ? text : "");
}

ap_group_t *ap_group_clone(const ap_group_t *g) {
    int *len = ap_malloc((size_t)g->G * sizeof *len), *ctx = ap_malloc((size_t)g->G * sizeof *ctx);
    for (int i = 0; i < g->G; i++) {
        len[i] = g->offset[i + 1] - g->offset[i];
        ctx[i] = g->ctx_offset[i + 1] - g->ctx_offset[i];
    }
    ap_group_t *c = ap_group_new(g->G, g->n_prompt, len, ctx);
    free(len), free(ctx);
    c->id = g->id;
    c->source = g->source;
    c->version = g->version;
    c->actor_id = g->actor_id;
    c->item_id = g->item_id;
    c->temperature = g->temperature;
    ap_group_set_prompt_text(c, g->prompt_text);
    memcpy(c->prompt, g->prompt, (size_t)g->n_prompt * 4);
    memcpy(c->tokens, g->tokens, (size_t)g->n_tokens * 4);
    memcpy(c->logprobs, g->logprobs, (size_t)g->n_tokens * 4);
    memcpy(c->reward, g->reward, (size_t)g->G * 4);
    memcpy(c->correct, g->correct, (size_t)g->G);
    memcpy(c->finish, g->finish, (size_t)g->G);
    memcpy(c->ctx_tokens, g->ctx_tokens, (size_t)g->n_ctx * 4);
    for (int i = 0; i < g->G; i++)
        ap_group_set_feedback(c, i, g->feedback[i]);
    return c;
}

ap_scores_t *ap_scores_new(int G, const int *offset, int K, int full, int vocab_size) {
    AP_ASSERT(G >= 1 && offset && offset[0] == 0 && K >= 0);
    if (full) AP_ASSERT(K == vocab_size);
    for (int i = 0; i < G; i++)
        AP_ASSERT(offset[i + 1] >= offset[i]);
    size_t n = (size_t)offset[G];
    size_t bytes = s_round8(sizeof(ap_scores_t)) + s_round8((size_t)(G + 1) * sizeof(int)) +
                   s_round8((size_t)G) + s_round8(n * 4) +
                   (full ? 0 : s_round8(n * (size_t)K * 4)) + s_round8(n * (size_t)K * 4);
    char *block = ap_calloc(1, bytes), *cur = block;
    ap_scores_t *s = s_carve(&cur, sizeof *s);
    s->G = G;
    s->n_tokens = (int)n;
    s->K = K;
    s->full = full ? 1 : 0;
    s->vocab_size = vocab_size;
    s->temperature = 1.0f;
    s->offset = s_carve(&cur, (size_t)(G + 1) * sizeof(int));
    memcpy(s->offset, offset, (size_t)(G + 1) * sizeof(int));
    s->present = s_carve(&cur, (size_t)G);
    memset(s->present, 1, (size_t)G);
    s->sampled = s_carve(&cur, n * 4);
    s->ids = full ? NULL : s_carve(&cur, n * (size_t)K * 4);
    s->logprobs = s_carve(&cur, n * (size_t)K * 4);
    AP_ASSERT((size_t)(cur - block) == bytes);
    return s;
}

void ap_scores_destroy(ap_scores_t **sp) {
    if (!sp || !*sp) return;
    free(*sp);
    *sp = NULL;
}

ap_scores_t *ap_scores_clone(const ap_scores_t *s) {
    ap_scores_t *c = ap_scores_new(s->G, s->offset, s->K, s->full, s->vocab_size);
    c->request_id = s->request_id;
    c->group_id = s->group_id;
    c->kind = s->kind;
    c->version = s->version;
    c->temperature = s->temperature;
    size_t n = (size_t)s->n_tokens, nk = n * (size_t)s->K;
    memcpy(c->present, s->present, (size_t)s->G);
    memcpy(c->sampled, s->sampled, n * 4);
    if (!s->full) memcpy(c->ids, s->ids, nk * 4);
    memcpy(c->logprobs, s->logprobs, nk * 4);
    return c;
}

ap_batch_t *ap_batch_new(int n_items) {
    AP_ASSERT(n_items >= 0);
    ap_batch_t *b = ap_calloc(1, sizeof *b);
    b->parts = 1;
    b->n_items = n_items;
    b->items = ap_calloc((size_t)(n_items > 0 ? n_items : 1), sizeof *b->items);
    return b;
}

void ap_batch_destroy(ap_batch_t **bp) {
    if (!bp || !*bp) return;
    ap_batch_t *b = *bp;
    for (int i = 0; i < b->n_items; i++) {
        ap_group_destroy(&b->items[i].group);
        for (int k = 0; k < b->items[i].n_scores; k++)
            ap_scores_destroy(&b->items[i].scores[k]);
        free(b->items[i].scores);
    }
    free(b->items);
    free(b);
    *bp = NULL;
}

const ap_scores_t *ap_batch_item_scores(const ap_batch_item_t *it, ap_teacher_kind_t kind) {
    for (int k = 0; k < it->n_scores; k++)
        if (it->scores[k] && it->scores[k]->kind == kind) return it->scores[k];
    return NULL;
}

ap_msg_metrics_t *ap_msg_metrics_new(int n) {
    AP_ASSERT(n >= 0);
    ap_msg_metrics_t *m = ap_calloc(1, sizeof *m);
    m->n = n;
    m->names = ap_calloc((size_t)(n > 0 ? n : 1), sizeof *m->names);
    m->values = ap_calloc((size_t)(n > 0 ? n : 1), sizeof *m->values);
    return m;
}

void ap_msg_metrics_destroy(ap_msg_metrics_t **mp) {
    if (!mp || !*mp) return;
    free((*mp)->names);
    free((*mp)->values);
    free(*mp);
    *mp = NULL;
}
