/* sampler.h: sampling from the model: a token sampler (temperature, top-k, top-p, greedy,
 * driven by ap_rng_t) and a KV cache for a batch of sequences, with the one call the actor,
 * eval and sample commands use (ap_generate).
 *
 * Every sampled token comes with its log-probability at the sampling temperature from the FULL
 * distribution, before top-k/top-p truncation: log_softmax(logits / temperature)[token]
 * (ALGORITHMS.md, Notation). Greedy (temperature 0) reports log_softmax(logits)[token].
 *
 * Usage (an actor's group: G completions of one prompt, in one batched KV-cached pass):
 *   ap_kv_t *kv = ap_kv_new(model, G, cfg->max_positions);
 *   const int32_t *prompts[G]; int lens[G];          // often the same prompt G times
 *   for (int i = 0; i < G; i++) prompts[i] = prompt, lens[i] = prompt_len;
 *   ap_sampling_t sp; ap_sampling_defaults(&sp); sp.temperature = 0.8f; sp.top_p = 0.95f;
 *   ap_completion_t out[G];
 *   if (ap_generate(kv, out, prompts, lens, G, 128, eos_id, &sp, &rng) < 0) ...ap_errmsg()...
 *   // out[i].tokens[0..n), out[i].logprobs[0..n), out[i].finish: borrowed from kv until the
 *   // next ap_generate / ap_kv_* call / ap_kv_destroy
 *   ap_kv_destroy(&kv);
 *
 * Determinism: the same weights, prompts, parameters and rng state give the same completions;
 * sequences draw from the one rng in slot order at every step (rng state save/restore is a
 * struct copy). Identical prompts are prefilled once and their cache copied.
 */
#ifndef APPRENTICE_SAMPLER_H
#define APPRENTICE_SAMPLER_H

#include <stdint.h>

#include "apprentice/model.h"
#include "apprentice/rng.h"
#include "apprentice/traj.h"

typedef struct {
    float temperature; /* > 0: sample from softmax(logits / temperature); 0: greedy (argmax) */
    int top_k;         /* keep the k most likely tokens; 0: all */
    float top_p;       /* keep the smallest most-likely set with mass >= top_p (after top-k);
                          1: all */
} ap_sampling_t;

/* temperature 1, top_k 0, top_p 1: plain sampling from the model's distribution. */
void ap_sampling_defaults(ap_sampling_t *s);
/* 0, or -1 with ap_err naming the field: temperature < 0 or not finite, top_k < 0,
 * top_p outside (0, 1]. */
int ap_sampling_validate(const ap_sampling_t *s);

/* Scratch floats ap_sample_token needs for vocabulary size V. */
size_t ap_sample_work_floats(int V);
/* Draw one token from logits[V]. *logprob (may be NULL) = log_softmax(logits / T)[token] over
 * the full distribution (T = temperature, or 1 when greedy). `work` holds
 * ap_sample_work_floats(V) floats (NULL: allocated for this call). Consumes exactly one
 * ap_rng_uniform draw unless greedy. Returns the token, or -1 with ap_err when the logits are
 * not finite. Ties in greedy and in top-k/top-p ordering go to the lower token id. */
int32_t ap_sample_token(const float *logits, int V, const ap_sampling_t *s, ap_rng_t *rng,
                        float *logprob, float *work);

/* ap_finish_t (AP_FINISH_EOS: the last token is EOS, included in the completion;
 * AP_FINISH_LENGTH: max_new tokens, or the max position of the model, reached) is the
 * protocol's own enum, from traj.h: a completion's finish reason travels as is. */

typedef struct {
    const int32_t *tokens;  /* [n] completion tokens (borrowed from the ap_kv_t) */
    const float *logprobs;  /* [n] log-prob of each at the sampling temperature, full dist */
    int n;                  /* number of completion tokens */
    ap_finish_t finish;
} ap_completion_t;

/* A KV cache for up to max_seqs sequences ("slots") of up to max_len positions each, over a
 * borrowed model that must outlive it; NULL with ap_err when max_len exceeds the model's
 * max_position_embeddings (or a size is < 1). It always computes with the model's current
 * weights: after ap_model_set_blob / ap_model_step / a write through ap_model_params it
 * re-derives its packed copy of them on next use (ap_generate clears the cache itself; with
 * ap_kv_forward, ap_kv_clear what belongs to the old weights).
 * Memory: the cache, 2 * L * max_seqs * max_len * KV*hd floats, plus one packed copy of the
 * projection weights (about the parameter count) used for few-row products (blas.h). */
typedef struct ap_kv ap_kv_t;
ap_kv_t *ap_kv_new(const ap_model_t *m, int max_seqs, int max_len);
void ap_kv_destroy(ap_kv_t **kv);
void ap_kv_clear(ap_kv_t *kv);                  /* every slot back to length 0 */
int ap_kv_len(const ap_kv_t *kv, int slot);     /* positions cached in `slot` */
int ap_kv_max_seqs(const ap_kv_t *kv);
int ap_kv_max_len(const ap_kv_t *kv);

/* Low level: append tokens[r] to slot slots[r] for r in [0, n) (rows of one slot in order;
 * any mix of slots: prefill and one-token decode are the same call), and write the logits of
 * the rows with want[r] != 0 (want NULL: every row), compacted in row order, to logits
 * [rows wanted, V] (logits NULL: none computed). Equal, to float tolerance, to
 * ap_model_forward's logits at the same positions. 0, or -1 with ap_err when a token is outside
 * [0, V), a slot is out of range, or a slot would exceed max_len (nothing is appended then). */
int ap_kv_forward(ap_kv_t *kv, float *logits, const int *slots, const int32_t *tokens,
                  const unsigned char *want, int n);
/* Make slot dst a copy of slot src (every cached position; dst's own are dropped): sequences
 * that share a prefix compute it once. 0, or -1 with ap_err when a slot is out of range. */
int ap_kv_copy(ap_kv_t *kv, int dst, int src);

/* Sample S <= max_seqs completions: sequence i continues prompts[i][0..prompt_lens[i]) (at
 * least one token each; clears the cache first) for at most max_new tokens, stopping at EOS
 * (eos < 0: never) or at the cache's max_len. One batched pass: prefill of every distinct
 * prompt, then one-token decode steps over the still-active sequences (finished ones drop out).
 * out[S] receives the completions (borrowed from kv). 0, or -1 with ap_err on bad prompts
 * (token out of range, empty, longer than max_len), bad parameters, or non-finite logits. */
int ap_generate(ap_kv_t *kv, ap_completion_t *out, const int32_t *const *prompts,
                const int *prompt_lens, int S, int max_new, int32_t eos, const ap_sampling_t *sp,
                ap_rng_t *rng);

#endif
