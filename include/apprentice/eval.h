/* eval.h: held-out evaluation of a model on a task: greedy accuracy and pass@k, with the
 * student's prompt or with the privileged context (the self-teacher's view). The work behind
 * `apprentice eval`, the held-out accuracy of `apprentice sft`, and the evaluator actor, which
 * calls ap_eval_run at each new weights version.
 *
 * What is measured, over the first `limit` held-out examples of the task (all by default):
 *   accuracy   greedy decoding (temperature 0) up to <eos> or max_new_tokens; a completion is
 *              decoded up to its first <eos> and judged by ap_task_verify.
 *   pass@k     `samples` completions per prompt at `sampling` (temperature > 0); per prompt the
 *              unbiased estimator 1 - C(n-c, k) / C(n, k) (n samples, c correct; Chen et al.
 *              2021), averaged over prompts. sample_accuracy is c/n averaged (pass@1 at that
 *              temperature).
 * Prompts are pre-encoded once (ap_eval_new refuses a tokenizer that cannot encode the
 * held-out set); every run decodes them in batches of up to `batch` sequences with ap_generate
 * (identical prompts of a pass@k batch are prefilled once). Sampling draws from its own
 * stream seeded by `seed` at every run: the same weights give the same numbers.
 *
 * With `privileged`, the prompt is <bos> + the task's privileged template rendered for the
 * example (no rollouts: {feedback} and {sibling} have no value), exactly the context a
 * self-teacher scores completions after; an example whose template renders nothing (h = 0)
 * falls back to the student prompt and is not counted in n_privileged.
 *
 * Usage (the evaluator actor):
 *   ap_eval_opts_t o;
 *   ap_eval_defaults(&o);
 *   o.max_new_tokens = cfg->sampling.max_new_tokens;
 *   o.pass_k = 4;  o.sampling.temperature = 1.0f;
 *   ap_eval_t *ev = ap_eval_new(task, tok, &o);             // NULL + ap_err
 *   for each new weights version:
 *       ap_eval_result_t r;
 *       if (ap_eval_run(ev, model, &r) < 0) log(ap_errmsg());
 *       report r.accuracy, r.pass_at_k, r.tokens_per_s
 *   ap_eval_destroy(&ev);
 *
 * Ownership: the evaluator borrows the task and the tokenizer (they must outlive it) and
 * holds a KV cache for the last model it ran (re-made when another model is passed). The
 * model is only read; it must not be used by another thread during a run.
 */
#ifndef APPRENTICE_EVAL_H
#define APPRENTICE_EVAL_H

#include <stdint.h>

#include "apprentice/model.h"
#include "apprentice/sampler.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

typedef struct {
    int limit;              /* evaluate the first `limit` held-out examples; 0 = all */
    int privileged;         /* 1: prompt = <bos> + privileged context (self-teacher's view) */
    int max_new_tokens;     /* completion length limit, <eos> included (16) */
    int pass_k;             /* k of pass@k; 0 = greedy accuracy only (0) */
    int samples;            /* completions per prompt for pass@k, >= pass_k; 0 = pass_k */
    ap_sampling_t sampling; /* pass@k sampling; temperature must be > 0 (temperature 1) */
    uint64_t seed;          /* pass@k sampling stream, re-seeded at every run (1) */
    int batch;              /* sequences per ap_generate call: bounds the KV cache (256) */
} ap_eval_opts_t;

typedef struct {
    int n;                  /* held-out examples evaluated */
    int correct;            /* greedy completions judged correct */
    double accuracy;        /* correct / n */
    int n_privileged;       /* examples that had a privileged context (privileged mode) */
    int pass_k;             /* k (0: pass@k not measured) */
    int samples;            /* completions sampled per prompt for pass@k */
    double pass_at_k;       /* mean unbiased pass@k; NAN when not measured */
    double sample_accuracy; /* mean fraction of sampled completions that are correct; NAN */
    double mean_length;     /* greedy completion tokens per example, <eos> included */
    double truncated;       /* fraction of greedy completions cut by max_new_tokens */
    long gen_tokens;        /* completion tokens generated (greedy and sampled) */
    long prompt_tokens;     /* prompt tokens fed (every prompt once per ap_generate call) */
    double seconds;         /* wall time of the run */
    double tokens_per_s;    /* gen_tokens / seconds */
} ap_eval_result_t;

/* Called for every greedy completion, in held-out order (optional): `completion` is the
 * decoded text up to <eos>, `v` the verdict. Borrowed values, valid during the call. */
typedef void (*ap_eval_example_fn)(void *user, int i, const ap_example_t *ex,
                                   const char *completion, const ap_verdict_t *v);

typedef struct ap_eval ap_eval_t;

/* limit 0, not privileged, max_new_tokens 16, pass_k 0, samples 0, sampling defaults
 * (temperature 1), seed 1, batch 256. */
void ap_eval_defaults(ap_eval_opts_t *o);

/* Check the options, copy the held-out examples and encode their prompts. NULL + ap_err when
 * an option is out of range, the task has no held-out examples, or a prompt cannot be encoded
 * (naming the example and the character). */
ap_eval_t *ap_eval_new(const ap_task_t *task, const ap_tokenizer_t *tok, const ap_eval_opts_t *o);
void ap_eval_destroy(ap_eval_t **e);

/* Examples a run evaluates. */
int ap_eval_count(const ap_eval_t *e);
/* Tokens of the longest encoded prompt (<bos> included). */
int ap_eval_max_prompt_len(const ap_eval_t *e);
/* Greedy completions go to fn (NULL: none). */
void ap_eval_set_callback(ap_eval_t *e, ap_eval_example_fn fn, void *user);

/* Evaluate `m` (whose vocabulary must be the tokenizer's: V is checked). 0, or -1 with ap_err
 * (a prompt longer than the model's max_position_embeddings, a vocabulary size mismatch, or a
 * generation failure such as non-finite logits). */
int ap_eval_run(ap_eval_t *e, const ap_model_t *m, ap_eval_result_t *out);

/* The unbiased pass@k estimator for n samples of which c are correct: 1 - C(n-c,k)/C(n,k)
 * (1 when n - c < k). Requires 0 <= c <= n and 1 <= k <= n. */
double ap_eval_pass_at_k(int n, int c, int k);

/* The result as one JSON object (no newline), caller frees: accuracy, correct, n, privileged,
 * n_privileged, pass_k, pass_at_k, samples, sample_accuracy, mean_length, truncated,
 * gen_tokens, seconds, tokens_per_s (NAN values as null). */
char *ap_eval_result_json(const ap_eval_result_t *r, int privileged);

#endif
