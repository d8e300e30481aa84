/* sft.h: supervised training of a model on a task (`apprentice sft`): the cold start of a
 * teacher or a student, hint-conditioned training for the self-teacher, and sequence-level
 * knowledge distillation from a teacher checkpoint (docs/TASKS.md, "Completion format").
 *
 * Every step draws sft.batch training examples from the task (never a held-out prompt) and
 * trains on <bos> PROMPT COMPLETION <eos> with cross-entropy on COMPLETION and <eos> only
 * (targets -100 on <bos>, the prompt and padding). With probability sft.privileged_fraction an
 * example's prompt is replaced by its privileged context (<bos> + privileged template, the
 * self-teacher's view), so the model learns to use hints. Data sources (sft.data):
 *   task             the generator's (or dataset's) gold completions;
 *   dataset          the same, for task.kind: dataset (refused otherwise);
 *   teacher_samples  completions the sft.teacher checkpoint samples for the student prompt at
 *                    sampling.temperature/top_k/top_p (sequence-level KD); a completion cut by
 *                    sampling.max_new_tokens is trained on as it is, without <eos>.
 *
 * The model starts from sft.init (a model directory with its vocab.json) or from scratch with
 * the sft.* architecture, random weights seeded by run.seed, and the task's vocabulary (from
 * sft.vocab when set, created there first if missing, so a teacher and a student share one
 * file). The run directory (run.dir/run.name) holds config.yaml, metrics.jsonl (role "sft"),
 * checkpoints ckpt/step-N (model + vocab.json + training state: AdamW moments, step, rng, task
 * cursor) and `latest`. When the run directory already has a checkpoint, ap_sft_new resumes
 * from it: the continuation is bit-exact (same batches, same losses, same weights as a run
 * that was never interrupted, at the same OpenBLAS thread count).
 *
 * Usage:
 *   ap_config_t *cfg = ap_config_load("configs/sft-teacher-addition.yaml", sets, nsets);
 *   ap_sft_t *s = ap_sft_new(cfg, 0);                  // NULL + ap_err; resumes if it can
 *   if (!s || ap_sft_run(s) < 0) die(ap_errmsg());    // train, evaluate, save to sft.out
 *   ap_sft_destroy(&s);
 *   ap_config_destroy(&cfg);                           // cfg must outlive s
 *
 * ap_sft_run = ap_sft_train(s, sft.steps) + ap_sft_finish(s); tests call the parts.
 */
#ifndef APPRENTICE_SFT_H
#define APPRENTICE_SFT_H

#include <signal.h>

#include "apprentice/config.h"
#include "apprentice/eval.h"
#include "apprentice/model.h"

typedef struct ap_sft ap_sft_t;

/* What one optimizer step did. */
typedef struct {
    long step;               /* optimizer steps taken, this one included */
    double loss;             /* mean cross-entropy over the batch's completion tokens */
    double grad_norm;        /* global gradient norm before clipping */
    double lr;               /* learning rate of this step */
    int skipped;             /* 1: the gradient was not finite, nothing was updated */
    int sequences;           /* sequences in the batch */
    int privileged;          /* of which rendered with the privileged context */
    long tokens;             /* non-padding tokens in the batch */
    long targets;            /* trained (completion) tokens */
    int max_len;             /* longest sequence (the padded length T) */
    double seconds;          /* wall time of the step, teacher sampling included */
    double teacher_accuracy; /* teacher_samples: share of the teacher's completions judged
                                correct; NAN otherwise */
} ap_sft_stats_t;

enum {
    AP_SFT_QUIET = 1 << 0, /* no progress line and no start-up log lines on stderr */
};

/* Set up (or resume) the run of `cfg` (borrowed, must outlive s; its endpoints are filled by
 * the run directory). NULL with ap_err naming what is wrong: an invalid combination of keys,
 * an unreadable checkpoint, a vocabulary that does not serve the task or differs from the
 * teacher's / sft.vocab's / the one already in sft.out. */
ap_sft_t *ap_sft_new(ap_config_t *cfg, int flags);
void ap_sft_destroy(ap_sft_t **s);

/* One optimizer step (no metrics, evaluation or checkpoint). 0 / -1 with ap_err. */
int ap_sft_step(ap_sft_t *s, ap_sft_stats_t *st);
/* Steps up to min(until, sft.steps), writing a metrics line per step, evaluating every
 * sft.eval_every steps and checkpointing every sft.checkpoint_every steps. 0 / -1. */
int ap_sft_train(ap_sft_t *s, long until);
/* After sft.steps: final evaluation, checkpoint, the model into sft.out (config.json,
 * model.safetensors, vocab.json, then sft.json, the summary written last), and one JSON
 * summary line on stdout unless quiet. 0 / -1. */
int ap_sft_finish(ap_sft_t *s);
/* ap_sft_train(s, sft.steps) then ap_sft_finish(s). */
int ap_sft_run(ap_sft_t *s);

/* Held-out greedy accuracy with the student prompt (*plain) and with the privileged context
 * (*priv, n = 0 when the task has no privileged template). 0 / -1; -1 with a message when the
 * task has no held-out set. */
int ap_sft_evaluate(ap_sft_t *s, ap_eval_result_t *plain, ap_eval_result_t *priv);
/* Write ckpt/step-N (N = current step) and point `latest` at it. 0 / -1. */
int ap_sft_checkpoint(ap_sft_t *s);

/* A flag (set by the caller's SIGINT/SIGTERM handler) that ap_sft_train polls after each step:
 * when set it checkpoints and returns -1 ("stopped at step N"); a rerun resumes. */
void ap_sft_set_stop_flag(ap_sft_t *s, const volatile sig_atomic_t *flag);

long ap_sft_step_count(const ap_sft_t *s);
long ap_sft_resumed_from(const ap_sft_t *s); /* step of the checkpoint resumed, -1 if none */
ap_model_t *ap_sft_model(ap_sft_t *s);       /* borrowed */
const ap_tokenizer_t *ap_sft_tokenizer(const ap_sft_t *s);
const char *ap_sft_dir(const ap_sft_t *s); /* run directory (absolute), borrowed */

#endif
