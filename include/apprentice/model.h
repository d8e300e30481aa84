/* model.h: the student/teacher network (MODEL.md): a Hugging Face LlamaForCausalLM in C, with
 * training (forward over a right-padded batch, cross-entropy, backward from any dlogits, AdamW
 * with global-norm clipping, a warm-up + cosine schedule) and checkpoint I/O.
 *
 * Memory (STYLE.md 6): parameters, gradients and the two AdamW moments live in one arena each,
 * all carved by one tensor table (ap_param_t, HF names and shapes, in HF order) that is written
 * once; gradients are allocated on first use (backward, zero_grad), moments on the first
 * optimizer step or state load, so an inference-only process (actor, teacher) holds parameters
 * only. Activations have their own arena, sized for a maximum batch x sequence (ap_model_reserve,
 * or the first forward) and re-sized only when a larger batch arrives.
 *
 * Usage (one SFT step):
 *   ap_model_t *m = ap_model_load("ckpt/step-100");            // or ap_model_new(&cfg, seed)
 *   if (!m) { ap_log(AP_LOG_ERROR, "%s", ap_errmsg()); return 1; }
 *   ap_model_reserve(m, 16, 256);
 *   ap_model_zero_grad(m);
 *   float *logits = ap_model_forward(m, tokens, lens, B, T);   // [B, T, V], borrowed
 *   float loss;
 *   ap_cross_entropy(logits, &loss, logits, targets, B * T, V); // dlogits in place
 *   ap_model_backward(m, logits);                              // accumulates gradients
 *   ap_adamw_t opt; ap_adamw_defaults(&opt);
 *   double gnorm = ap_model_step(m, &opt, ap_lr_at(&sched, ap_model_step_count(m)));
 *   ap_model_save(m, "ckpt/step-101");                         // config.json + model.safetensors
 *   ap_model_save_state(m, "ckpt/step-101", &rng, "{\"version\": 101}");
 *   ap_model_destroy(&m);
 *
 * Weight transfer: the parameter arena is one blob (ap_model_blob); a client builds a model
 * from a config + blob (ap_model_from_blob) or refreshes its weights (ap_model_set_blob).
 *
 * Threading: nothing here starts threads; matrix products go through blas.h (OpenBLAS, whose
 * thread count ap_blas_set_threads sets for the process). One model must not be used by two
 * threads at once.
 */
#ifndef APPRENTICE_MODEL_H
#define APPRENTICE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "apprentice/model_config.h"
#include "apprentice/rng.h"

typedef struct ap_model ap_model_t;

/* One entry of the tensor table: where a parameter lives in each arena (the same offset in
 * the parameter, gradient and moment arenas). Plain data, read-only for callers. */
typedef struct {
    char name[64];    /* HF name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;         /* 1 (norm weights) or 2 (embeddings and [out, in] projections) */
    int64_t shape[2]; /* shape[0] is the only dim when ndim == 1 */
    size_t offset;    /* floats from the start of the arena */
    size_t numel;     /* number of floats */
    int decay;        /* 1: AdamW weight decay applies (the 2-D tensors) */
} ap_param_t;

/* ---- construction, checkpoints ---------------------------------------------------------- */

/* Random init: normal(0, 0.02) for every matrix (embeddings included), 1 for norm weights.
 * The same config and seed give the same weights. NULL (ap_err set) on an invalid config. */
ap_model_t *ap_model_new(const ap_model_config_t *c, uint64_t seed);
/* Load DIR/config.json + DIR/model.safetensors (F32, F16 or BF16 tensors, converted to F32).
 * A missing or mis-shaped tensor is refused naming the file, the tensor and the reason;
 * lm_head.weight is not needed when tied (ignored if present); unknown extra tensors are
 * ignored (logged once). NULL with ap_err set on failure. */
ap_model_t *ap_model_load(const char *dir);
/* Write DIR/model.safetensors (F32, HF names, metadata format=pt, no lm_head when tied) and
 * DIR/config.json, each atomically; creates DIR. 0 / -1. */
int ap_model_save(const ap_model_t *m, const char *dir);
/* A model whose parameters are a copy of `blob` (the parameter arena of a model with the same
 * config, as ap_model_blob returns it). NULL with ap_err when `bytes` does not match. */
ap_model_t *ap_model_from_blob(const ap_model_config_t *c, const void *blob, size_t bytes);
/* A deep copy of the parameters (not gradients, moments or activations): frozen teachers. */
ap_model_t *ap_model_clone(const ap_model_t *m);
void ap_model_destroy(ap_model_t **m);

/* ---- the tensor table and the arenas ----------------------------------------------------- */

const ap_model_config_t *ap_model_config(const ap_model_t *m); /* borrowed */
int ap_model_num_tensors(const ap_model_t *m);
const ap_param_t *ap_model_tensor(const ap_model_t *m, int i); /* 0 <= i < num_tensors */
const ap_param_t *ap_model_find(const ap_model_t *m, const char *name); /* NULL if absent */
size_t ap_model_num_floats(const ap_model_t *m); /* floats in each arena */
float *ap_model_params(ap_model_t *m);           /* parameter arena (borrowed, writable: counts as a
                                                    weight change, KV caches re-derive on next use) */
float *ap_model_grads(ap_model_t *m);            /* gradient arena, allocated zeroed on first call */

/* Weight transfer: the parameter arena as bytes (borrowed; `*bytes` = its size). */
const void *ap_model_blob(const ap_model_t *m, size_t *bytes);
/* Replace every parameter by `blob`'s (same layout). -1 with ap_err when `bytes` differs. */
int ap_model_set_blob(ap_model_t *m, const void *blob, size_t bytes);
/* 64-bit FNV-1a of the parameter arena (weights identity across processes). */
uint64_t ap_model_checksum(const ap_model_t *m);

/* ---- forward, loss, backward ------------------------------------------------------------ */

/* Size the activation arena for batches up to max_batch x max_seq (max_seq <= max
 * positions). Optional: forward sizes it on first use and grows it when a larger batch comes. */
void ap_model_reserve(ap_model_t *m, int max_batch, int max_seq);
/* Forward over B right-padded sequences of T tokens ([B, T] row-major); sequence b is
 * tokens[b, 0..lens[b]) at positions 0..lens[b]-1 (lens NULL: all T). Rows at t >= lens[b]
 * are padding: their token ids are not read, they never affect valid rows, and their logits
 * are 0. Returns logits [B, T, V] (borrowed, valid until the next forward / destroy), or NULL
 * with ap_err set when a valid token is outside [0, V), T exceeds max_position_embeddings, or
 * a length is outside [0, T]. Activations for backward are kept. */
float *ap_model_forward(ap_model_t *m, const int32_t *tokens, const int *lens, int B, int T);
/* Bytes of the activation arena as currently sized (0 before the first reserve/forward). */
size_t ap_model_activation_bytes(const ap_model_t *m);
/* The logits of the last forward, [B, T, V] (borrowed); NULL before any forward. */
float *ap_model_logits(ap_model_t *m);
/* Given dL/dlogits [B, T, V] for the last forward (any producer; may be the buffer
 * ap_model_logits returns, overwritten in place), ADD dL/dparam to the gradient arena.
 * Padding rows of dlogits are ignored. Requires a forward since the last backward-affecting
 * change (asserted). */
void ap_model_backward(ap_model_t *m, const float *dlogits);
void ap_model_zero_grad(ap_model_t *m);

/* Mean cross-entropy of logits [n, V] against targets [n] where -100 is ignored, averaged over
 * the non-ignored rows (PyTorch cross_entropy, ignore_index=-100, reduction="mean"; 0 and zero
 * gradient when every row is ignored). dlogits [n, V] (NULL: loss only; may equal logits)
 * receives dloss/dlogits (ignored rows: 0). 0, or -1 with ap_err when a target is neither
 * -100 nor in [0, V). */
int ap_cross_entropy(float *dlogits, float *loss, const float *logits, const int32_t *targets,
                     int n, int V);

/* ---- optimizer ---------------------------------------------------------------------------- */

/* torch.optim.AdamW semantics (MODEL.md): decoupled weight decay on 2-D tensors only, bias
 * correction; global-norm clipping as torch.nn.utils.clip_grad_norm_ (coefficient
 * clip / (norm + 1e-6), applied only when below 1). */
typedef struct {
    float beta1, beta2;   /* moment decay rates */
    float eps;            /* added to sqrt(v_hat) */
    float weight_decay;   /* decoupled, per unit learning rate */
    float clip_grad_norm; /* global L2 norm limit; <= 0: no clipping */
} ap_adamw_t;

/* beta 0.9 / 0.999, eps 1e-8, weight_decay 0.01 (torch's defaults), clip 1.0. */
void ap_adamw_defaults(ap_adamw_t *o);
/* Global L2 norm of the gradient arena (double accumulation). */
double ap_model_grad_norm(ap_model_t *m);
/* One step: clip, then AdamW at learning rate lr; the step count (bias correction) goes up by
 * one. Returns the pre-clip global gradient norm. When that norm is not finite nothing is
 * updated (not the parameters, the moments nor the step count) and the norm is returned so the
 * caller can count the skipped step. */
double ap_model_step(ap_model_t *m, const ap_adamw_t *o, float lr);
long ap_model_step_count(const ap_model_t *m); /* optimizer steps taken (saved in the state) */

/* Learning rate at optimizer step `step` (0-based): linear warm-up from peak/warmup to peak over
 * warmup_steps, then cosine from peak to min_lr at total_steps, min_lr after that. */
typedef struct {
    float peak_lr, min_lr;
    long warmup_steps, total_steps;
} ap_lr_schedule_t;
float ap_lr_at(const ap_lr_schedule_t *s, long step);

/* ---- training state (beside the model, so a model directory stays plain HF) -------------- */

#define AP_MODEL_STATE_FILE "training_state.safetensors"

/* DIR/training_state.safetensors: both AdamW moments (F32, "exp_avg.<name>",
 * "exp_avg_sq.<name>"), the step count, `rng` (may be NULL) and `user_json`, a caller-owned
 * JSON text (policy version, data cursors; may be NULL), written atomically. 0 / -1. */
int ap_model_save_state(const ap_model_t *m, const char *dir, const ap_rng_t *rng,
                        const char *user_json);
/* Load it back bit-exactly into `m` (whose tensor table must match: refused naming the file
 * and tensor otherwise). `rng` (may be NULL) receives the saved state; `*user_json` (may be
 * NULL) a copy of the saved text the caller frees (NULL when none was saved). 0 / -1. */
int ap_model_load_state(ap_model_t *m, const char *dir, ap_rng_t *rng, char **user_json);

#endif
