/* task.h: a task = a prompt source + a verifier + a privileged context (docs/TASKS.md).
 *
 * Prompt sources: the built-in generators `addition` ("123+234=" -> "357"), `multiplication`
 * ("123*4=" -> "492": multi-digit x small), `reverse` ("reverse:abc=" -> "cba"), `sort`
 * ("sort:cab=" -> "abc"), or `dataset` (a JSON Lines file, dataset.h).
 *
 * Split: a held-out prompt is never drawn for training, by construction. Every prompt has a
 * split hash u = H(prompt, heldout_seed); the task fixes a threshold T and a prompt is held
 * out exactly when u < T. T is chosen so that the held-out (evaluation) set has heldout_size
 * distinct prompts (docs/TASKS.md, "Split"). The split depends on heldout_seed only, not on
 * the training seed, so runs with different seeds evaluate on the same held-out set.
 *
 * Draws: each actor owns an ap_task_sampler_t, sharded by (seed, actor id): generators draw
 * from the rng stream (seed, actor); datasets walk a per-epoch shuffle of the training
 * examples, actor k of A taking every A-th one. The sampler's position is a plain
 * ap_task_cursor_t that can be saved (JSON) and restored bit-exactly.
 *
 * Rendering (the completion format is "completion template, then <eos>"; the model trains on
 * <bos> prompt completion <eos>):
 *   student prompt  = prompt_template over {prompt}                       e.g. "123+234="
 *   completion      = completion_template over {answer} {solution}        e.g. "357"
 *   teacher context = privileged_template over {prompt} (the *rendered* student prompt),
 *                     {answer} {solution} {feedback} {sibling}            e.g. "answer: 357 |
 * 123+234=" A privileged template that uses a placeholder without a value for this trajectory
 * ({sibling} when no other trajectory of the group is correct, {solution} when the example
 * has none) renders nothing: h = 0.
 *
 * Usage (an actor):
 *   ap_task_config_t cfg;
 *   ap_task_config_defaults(&cfg);  cfg.kind = "addition";  cfg.max_digits = 3;
 *   ap_task_t *task = ap_task_new(&cfg);                        // validates; NULL + ap_err
 *   ap_tokenizer_t *tok = ap_tokenizer_load_dir(model_dir);
 *   if (ap_task_check_tokenizer(task, tok, model_dir) < 0) die(ap_errmsg());
 *   ap_task_sampler_t *s = ap_task_sampler_new(task, actor_id, num_actors);
 *   ap_example_t ex = {0};
 *   ap_task_sampler_next(s, &ex);                               // ex.prompt "123+234="
 *   int n; int32_t *prompt = ap_task_encode_prompt(task, tok, &ex, &n);   // <bos> 1 2 3 + ...
 *   ... sample G completions, decode each with AP_TOK_STOP_EOS into text[g] ...
 *   ap_verdict_t v[G]; ap_task_rollout_t r[G];
 *   for g: ap_task_verify(task, &ex, text[g], &v[g]);
 *          r[g] = (ap_task_rollout_t){text[g], v[g].correct, v[g].feedback};
 *   for g: int32_t *ctx; int nctx;
 *          int h = ap_task_encode_privileged(task, tok, &ex, r, G, g, &ctx, &nctx);  // 1/0/-1
 *   ap_example_clear(&ex);
 *   ap_task_cursor_t c; ap_task_sampler_cursor(s, &c);          // checkpoint it
 *   char *json = ap_task_cursor_to_json(&c);
 */
#ifndef APPRENTICE_TASK_H
#define APPRENTICE_TASK_H

#include <stdint.h>

#include "apprentice/dataset.h"
#include "apprentice/rng.h"
#include "apprentice/tokenizer.h"
#include "apprentice/verifier.h"

/* The `task:` section of a run config. Strings are borrowed (the defaults point at static
 * text); ap_task_new copies what it keeps. */
typedef struct {
    char *kind;                /* addition | multiplication | reverse | sort | dataset */
    int min_digits;            /* addition: each operand; multiplication: the first (1) */
    int max_digits;            /* (3); at most 18 */
    int factor_min_digits;     /* multiplication: the small second operand (1) */
    int factor_max_digits;     /* (1); max_digits + factor_max_digits <= 19 */
    int min_length;            /* reverse, sort: characters in the string (3) */
    int max_length;            /* (8) */
    char *alphabet;            /* reverse, sort: characters to draw from (a..z) */
    char *dataset;             /* dataset: JSON Lines file of training examples */
    char *heldout_dataset;     /* dataset: held-out file; "" or NULL = split by hash */
    char *on_bad_line;         /* dataset: "error" (default) | "skip" */
    int heldout_size;          /* distinct held-out prompts for evaluation (256); 0 = none */
    long long heldout_seed;    /* salt of the split hash and of the held-out draws (0) */
    long long seed;            /* training draws (1) */
    char *verifier;            /* "exact" (default) | "numeric" */
    double reward_correct;     /* (1.0) */
    double reward_wrong;       /* (0.0) */
    char *prompt_template;     /* over {prompt} ("{prompt}") */
    char *completion_template; /* over {answer} once, {solution} ("{answer}") */
    char *privileged_template; /* all five ("answer: {answer} | {prompt}"); "": h = 0 */
} ap_task_config_t;

void ap_task_config_defaults(ap_task_config_t *c);
/* Check every field and compile the templates; errors name the key: "task.max_digits: ...".
 * Does not open dataset files (ap_task_new does). 0 / -1. */
int ap_task_config_validate(const ap_task_config_t *c);
/* Set one field from text, as from `--set task.KEY=VALUE` (the "task." prefix is optional).
 * String fields point into `value`, which must outlive the config. 0 / -1 naming the key. */
int ap_task_config_set(ap_task_config_t *c, const char *key, const char *value);
/* One "key: value" line per field, YAML-like (for printing a resolved config). Caller frees. */
char *ap_task_config_dump(const ap_task_config_t *c);

typedef struct ap_task ap_task_t;

/* Validate the config, load datasets, fix the split and the held-out set. NULL + ap_err. */
ap_task_t *ap_task_new(const ap_task_config_t *c);
void ap_task_destroy(ap_task_t **t);

const char *ap_task_kind(const ap_task_t *t);
const ap_verifier_t *ap_task_verifier(const ap_task_t *t);
/* Identity of the task definition (kind, parameters, split, training data): a cursor saved
 * under one task is refused by another. */
uint64_t ap_task_fingerprint(const ap_task_t *t);
/* Distinct prompts the source can produce (training + held-out; datasets: distinct prompts). */
double ap_task_space(const ap_task_t *t);
/* Datasets: training examples after the split; generators: -1 (unbounded draws). */
long ap_task_train_size(const ap_task_t *t);
/* Datasets: training lines dropped because their prompt is held out. */
long ap_task_train_excluded(const ap_task_t *t);

/* ---- the held-out set ---- */

int ap_task_heldout_count(const ap_task_t *t);
/* Copy held-out example i (0 <= i < count) into *out (caller clears). Stable across runs for
 * the same config. */
void ap_task_heldout_get(const ap_task_t *t, int i, ap_example_t *out);
/* 1 when `prompt` (raw, before templates) is on the held-out side of the split. */
int ap_task_is_heldout(const ap_task_t *t, const char *prompt);

/* ---- training draws ---- */

/* A sampler's position: plain data, saved in checkpoints. */
typedef struct {
    uint64_t task;   /* ap_task_fingerprint() of the task it belongs to */
    long long seed;  /* the task's training seed */
    int actor;       /* shard id, 0 <= actor < num_actors */
    int num_actors;  /* shard count */
    ap_rng_t rng;    /* generators: the draw stream */
    long long drawn; /* examples handed out so far */
    long long epoch; /* datasets: completed passes over this actor's shard */
    long long pos;   /* datasets: next position in this actor's shard of the epoch */
} ap_task_cursor_t;

typedef struct ap_task_sampler ap_task_sampler_t;

/* A sampler for shard `actor` of `num_actors`; borrows the task (which must outlive it). */
ap_task_sampler_t *ap_task_sampler_new(const ap_task_t *t, int actor, int num_actors);
void ap_task_sampler_destroy(ap_task_sampler_t **s);
/* The next training example, deep-copied into *out (caller clears it). Never held out. */
void ap_task_sampler_next(ap_task_sampler_t *s, ap_example_t *out);
void ap_task_sampler_cursor(const ap_task_sampler_t *s, ap_task_cursor_t *c);
/* Continue from a saved cursor. -1 (ap_err) when it belongs to another task, seed or shard,
 * or its position is out of range. */
int ap_task_sampler_restore(ap_task_sampler_t *s, const ap_task_cursor_t *c);
/* A cursor as one JSON object (caller frees) and back; `origin` names the source in errors. */
char *ap_task_cursor_to_json(const ap_task_cursor_t *c);
int ap_task_cursor_from_json(const char *json, const char *origin, ap_task_cursor_t *c);

/* ---- rendering and verification ---- */

/* One trajectory of a group, as the privileged template sees it. */
typedef struct {
    const char *completion; /* decoded completion text (up to <eos>, specials skipped) */
    int correct;            /* the verifier's verdict */
    const char *feedback;   /* the verifier's feedback sentence */
} ap_task_rollout_t;

/* The student prompt text / the gold completion text (without <eos>). Caller frees.
 * A missing {solution} renders as "" in the completion. */
char *ap_task_render_prompt(const ap_task_t *t, const ap_example_t *ex);
char *ap_task_render_completion(const ap_task_t *t, const ap_example_t *ex);
/* The privileged context of trajectory i of a group of G (group may be NULL with G = 0 when
 * there are no rollouts: then {feedback} and {sibling} are unavailable). {sibling} is the
 * completion of the first correct trajectory j != i. Returns h: 1 with *context (caller
 * frees), 0 with *context = NULL when no context can be rendered. */
int ap_task_render_privileged(const ap_task_t *t, const ap_example_t *ex,
                              const ap_task_rollout_t *group, int G, int i, char **context);
/* Judge a completion (decoded text up to <eos>): the answer is extracted through the
 * completion template, then checked by the task's verifier. */
void ap_task_verify(const ap_task_t *t, const ap_example_t *ex, const char *completion,
                    ap_verdict_t *out);

/* ---- tokens ---- */

/* The vocabulary the task needs: every character of its prompts, answers, template text,
 * and of solutions / feedback when a template uses them. Caller destroys. */
ap_tokenizer_t *ap_task_build_tokenizer(const ap_task_t *t);
/* 0 when `tok` can encode everything the task produces; -1 naming the first missing
 * character (tok_name says whose vocabulary it is). */
int ap_task_check_tokenizer(const ap_task_t *t, const ap_tokenizer_t *tok, const char *tok_name);
/* <bos> + student prompt. Caller frees; NULL + ap_err (naming ex->id) on a character outside
 * the vocabulary. */
int32_t *ap_task_encode_prompt(const ap_task_t *t, const ap_tokenizer_t *tok,
                               const ap_example_t *ex, int *n);
/* <bos> + prompt + completion + <eos>, the SFT sequence; *n_prompt = tokens of <bos> + prompt
 * (the targets before it are not trained). */
int32_t *ap_task_encode_example(const ap_task_t *t, const ap_tokenizer_t *tok,
                                const ap_example_t *ex, int *n, int *n_prompt);
/* <bos> + privileged context of trajectory i: returns h (1 with *ids, *n; 0 with *ids =
 * NULL, *n = 0), or -1 on an encoding error. */
int ap_task_encode_privileged(const ap_task_t *t, const ap_tokenizer_t *tok, const ap_example_t *ex,
                              const ap_task_rollout_t *group, int G, int i, int32_t **ids, int *n);

#endif
