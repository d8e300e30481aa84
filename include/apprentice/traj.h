/* traj.h: the plain, validated C structs every role uses for trajectories, groups, teacher
 * scores and learner batches, after net/ has decoded and checked them (docs/PROTOCOL.md).
 *
 * Layout is columnar and contiguous so the learner can pad or pack a batch with one memcpy
 * per array: a group's G completions are concatenated in `tokens` / `logprobs`, trajectory i
 * spanning [offset[i], offset[i+1]); privileged contexts likewise in `ctx_tokens` with
 * `ctx_offset`. One allocation holds the struct and every numeric array; feedback strings
 * and the prompt text are separate (ap_group_set_*), all freed by ap_group_destroy().
 *
 * Versions order by restart generation first, then step (DESIGN.md, "Versions"): a learner
 * resumed from an older checkpoint bumps `gen`, so its step-5 weights are newer than the
 * step-90 weights of the previous generation.
 *
 * Usage (actor side, building a group of G = 2 completions of lengths 3 and 5):
 *   int len[2] = {3, 5}, ctx[2] = {0, 0};
 *   ap_group_t *g = ap_group_new(2, n_prompt, len, ctx);
 *   memcpy(g->prompt, prompt_ids, n_prompt * sizeof *g->prompt);
 *   for (int i = 0; i < 2; i++)
 *       for (int t = g->offset[i]; t < g->offset[i + 1]; t++) g->tokens[t] = ..., g->logprobs[t] =
 * ...; g->reward[0] = 1.0f; g->correct[0] = 1; g->finish[0] = AP_FINISH_EOS;
 *   ap_group_set_feedback(g, 1, "expected 42, got 41");
 *   ... ap_msg_encode(...) ...;  ap_group_destroy(&g);
 *
 * Usage (learner side): ap_batch_t *b from ap_msg_decode(); for each b->items[j]:
 *   item.group (tokens, logprobs, reward, ...) and item.scores[k] (one per teacher kind, same
 *   offsets as the group, sampled log-prob per position plus K ids / log-probs or the full V).
 */
#ifndef APPRENTICE_TRAJ_H
#define APPRENTICE_TRAJ_H

#include <stddef.h>
#include <stdint.h>

/* A weights / policy version. Zero ({0, 0}) means "none" (dataset data, frozen teacher). */
typedef struct {
    uint32_t gen;  /* restart generation of the learner: ordered first */
    uint64_t step; /* learner optimizer step within that generation */
} ap_version_t;

/* <0, 0, >0 like strcmp: generation first, then step. */
static inline int ap_version_cmp(ap_version_t a, ap_version_t b) {
    if (a.gen != b.gen) return a.gen < b.gen ? -1 : 1;
    if (a.step != b.step) return a.step < b.step ? -1 : 1;
    return 0;
}
static inline int ap_version_is_zero(ap_version_t v) {
    return v.gen == 0 && v.step == 0;
}

/* Why a completion ended. */
typedef enum {
    AP_FINISH_EOS = 0,    /* sampled the end-of-sequence token */
    AP_FINISH_LENGTH = 1, /* hit max_new_tokens: truncated */
    AP_FINISH_STOP = 2,   /* a stop string / task-specific end */
    AP_FINISH_COUNT
} ap_finish_t;

/* Where a group came from (ALGORITHMS.md, "GKD's lambda"). */
typedef enum {
    AP_SOURCE_ON_POLICY = 0, /* sampled by the student; has behaviour log-probs and rewards */
    AP_SOURCE_DATASET = 1,   /* gold or teacher-written completions; no policy version */
    AP_SOURCE_COUNT
} ap_source_t;

/* Which teacher produced a score (DESIGN.md, "teacher"). */
typedef enum {
    AP_TEACHER_EXTERNAL = 0,  /* a frozen checkpoint on the student prompt */
    AP_TEACHER_SELF = 1,      /* the student's weights after the privileged context */
    AP_TEACHER_REFERENCE = 2, /* the frozen initial student on the student prompt (k3 KL) */
    AP_TEACHER_COUNT
} ap_teacher_kind_t;

/* One prompt and G completions sampled from it. */
typedef struct {
    uint64_t id;          /* unique group id (the actor makes it unique: actor id << 40 | seq) */
    ap_source_t source;   /* on-policy or dataset */
    ap_version_t version; /* policy version that sampled it; {0,0} for dataset groups */
    int32_t actor_id;     /* which actor made it */
    int64_t item_id;      /* task item id (for rollout logs), -1 when unknown */
    float temperature;    /* sampling temperature tau_s of `logprobs` */
    char *prompt_text;    /* task prompt as text, for logs; never NULL ("" when unset) */

    int n_prompt;    /* prompt length */
    int32_t *prompt; /* [n_prompt] prompt token ids */

    int G;            /* number of trajectories (completions) */
    int n_tokens;     /* total completion tokens = offset[G] */
    int *offset;      /* [G+1] trajectory i = tokens[offset[i] .. offset[i+1]) */
    int32_t *tokens;  /* [n_tokens] sampled completion token ids */
    float *logprobs;  /* [n_tokens] behaviour log-probs at tau_s (0 for dataset groups) */
    float *reward;    /* [G] task reward (0 for dataset groups) */
    uint8_t *correct; /* [G] 1 = verified correct */
    uint8_t *finish;  /* [G] ap_finish_t */
    char **feedback;  /* [G] verifier feedback text, never NULL ("" when none) */

    int n_ctx;       /* total privileged-context tokens = ctx_offset[G] */
    int *ctx_offset; /* [G+1] context of trajectory i = ctx_tokens[ctx_offset[i] .. +1) */
    int32_t
        *ctx_tokens; /* [n_ctx] rendered privileged context; empty for a trajectory when h = 0 */
} ap_group_t;

/* A group with G trajectories, n_prompt prompt tokens, completion lengths len[G] and context
 * lengths ctx_len[G] (NULL: all 0). Arrays zeroed, offsets filled, strings "". Sizes must be
 * >= 0 and G >= 1 (asserted: the caller validated them). */
ap_group_t *ap_group_new(int G, int n_prompt, const int *len, const int *ctx_len);
void ap_group_destroy(ap_group_t **g);
/* Replace trajectory i's feedback / the prompt text (copied). */
void ap_group_set_feedback(ap_group_t *g, int i, const char *text);
void ap_group_set_prompt_text(ap_group_t *g, const char *text);
/* h[i]: 1 when a privileged context was rendered for trajectory i. */
static inline int ap_group_has_ctx(const ap_group_t *g, int i) {
    return g->ctx_offset[i + 1] > g->ctx_offset[i];
}
/* A deep copy. */
ap_group_t *ap_group_clone(const ap_group_t *g);

/* One teacher's signal on every completion position of one group (same offsets). */
typedef struct {
    uint64_t request_id;    /* the buffer's ScoreRequest id this answers */
    uint64_t group_id;      /* the group scored */
    ap_teacher_kind_t kind; /* which teacher */
    ap_version_t version;   /* weights that scored it ({0,0}: a frozen checkpoint) */
    float temperature;      /* temperature of the distributions (ids/logprobs) */
    int vocab_size;         /* V of the teacher (== the student's) */
    int G, n_tokens;        /* as the group */
    int *offset;            /* [G+1] as the group's */
    uint8_t *present;       /* [G] 1: trajectory i was scored (self-teacher: only h = 1);
                               positions of absent trajectories hold 0 and carry no signal */
    int K;                  /* entries per position: top-K, or V when full */
    int full;               /* 1: logprobs holds the full distribution, ids is NULL */
    float *sampled;         /* [n_tokens] log-prob of the sampled token at tau_s */
    int32_t *ids;           /* [n_tokens, K] top-K ids, descending log-prob; NULL when full */
    float *logprobs;        /* [n_tokens, K] log-probs at `temperature` (K = V when full) */
} ap_scores_t;

/* Scores for G trajectories with lengths from `offset` ([G+1], copied), K per position
 * (K = vocab_size and ids NULL when full). Arrays zeroed, present all 1. */
ap_scores_t *ap_scores_new(int G, const int *offset, int K, int full, int vocab_size);
void ap_scores_destroy(ap_scores_t **s);
ap_scores_t *ap_scores_clone(const ap_scores_t *s);

/* A group with the scores the buffer gathered for it (one per configured teacher kind). */
typedef struct {
    ap_group_t *group;    /* owned */
    int n_scores;         /* 0..AP_TEACHER_COUNT */
    ap_scores_t **scores; /* [n_scores] owned, at most one per kind */
} ap_batch_item_t;

/* What the buffer sends the learner for one BatchRequest (possibly split into parts). */
typedef struct {
    uint64_t request_id; /* the learner's BatchRequest id */
    int part, parts;     /* this is part `part` of `parts` (0-based) */
    int n_items;
    ap_batch_item_t *items; /* [n_items] */
} ap_batch_t;

ap_batch_t *ap_batch_new(int n_items); /* items zeroed (group NULL, no scores) */
void ap_batch_destroy(ap_batch_t **b);
/* The scores of kind `kind` in item `it`, or NULL. */
const ap_scores_t *ap_batch_item_scores(const ap_batch_item_t *it, ap_teacher_kind_t kind);

#endif
