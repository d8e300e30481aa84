/* objectives.h: the learner's losses (ALGORITHMS.md, to the letter): each objective's loss and
 * its gradient with respect to the student logits [N, T, V], as pure functions over arrays (no
 * I/O, no sockets). The learner pushes the gradient through the network's backward.
 *
 * Objectives: gkd (generalized JSD to an external teacher), opd (sampled-token reverse KL as a
 * dense reward through the policy-gradient loss), grpo (group advantages, clip-higher, dual
 * clip, k3 reference KL, dynamic sampling), opsd (self-teacher divergence with the pointwise
 * clip), srpo (routing between a self-distillation branch and a GRPO branch, entropy weights,
 * one shared denominator). The total loss is the weighted sum of the enabled objectives.
 *
 * Exact under micro-batching: a step is planned once over the whole batch (ap_obj_plan: the
 * denominators of every reduction, group advantages, dynamic sampling, the staleness mask,
 * SRPO's routing and mean entropy weight, non-finite teacher positions), then evaluated on any
 * partition of its trajectories into micro-batches (ap_obj_eval: each micro-batch's SUM divided
 * by the WHOLE batch's counts), then closed (ap_obj_finish: total loss, non-finite flag,
 * monitors). The sum of the micro-batch losses and the concatenation of their gradients equal
 * the full-batch values.
 *
 * Input conventions: teacher distributions arrive as LOG-PROBS at the objective's temperature
 * (full [N, T, V], or top-K ids + log-probs [N, T, K]); sampled-token log-probs (behaviour b,
 * teacher lt, reference) at the sampling temperature tau_s. The plan reads the batch arrays
 * (borrowed: they must stay valid until ap_obj_finish); eval reads only its rows' logits.
 *
 * Usage (one learner step with micro-batches of 4 trajectories):
 *   ap_obj_config_t cfg;
 *   ap_obj_config_defaults(&cfg);                    // every objective off, defaults set
 *   cfg.grpo.enabled = 1; cfg.gkd.enabled = 1; cfg.gkd.weight = 0.5;
 *   ap_obj_t *obj = ap_obj_new(&cfg);                // NULL + ap_errmsg() on a bad config
 *   ap_obj_batch_t b = {.N = N, .T = T, .V = V, .tokens = y, .mask = m, .behavior = b, ...};
 *   // logp_theta[N, T]: current sampled-token log-probs at tau_s (no-grad forward, or
 *   // ap_obj_sampled_logprobs over each micro-batch's logits)
 *   if (ap_obj_plan(obj, &b, logp_theta) < 0) { log ap_errmsg(); skip the batch; }
 *   for (int r = 0; r < N; r += 4) {
 *       float *logits = ap_model_forward(m, ...rows r..r+3...);
 *       ap_obj_eval(obj, r, 4, logits, dlogits);    // dlogits [4, T, V] written
 *       ap_model_backward(m, dlogits);
 *   }
 *   ap_obj_result_t res;
 *   ap_monitors_t mon = {0};
 *   ap_obj_finish(obj, &res, &mon);                  // res.loss, res.nonfinite
 *   if (!res.nonfinite) ap_model_step(...);          // else count the skipped step
 *   ap_obj_destroy(&obj);
 */
#ifndef APPRENTICE_OBJECTIVES_H
#define APPRENTICE_OBJECTIVES_H

#include <stdint.h>

/* ---- monitors: a small name -> double list --------------------------------------------- */

#define AP_MONITORS_MAX 96
#define AP_MONITOR_NAME 48

/* Named values in insertion order (names are stable dotted paths, docs/OBJECTIVES.md).
 * Plain data: zero-initialize it ({0}) to start empty. */
typedef struct {
    int n;                                    /* entries in use */
    char name[AP_MONITORS_MAX][AP_MONITOR_NAME]; /* e.g. "loss/gkd" */
    double value[AP_MONITORS_MAX];            /* unit documented per name */
} ap_monitors_t;

/* Set `name` to `value` (replacing an existing entry). Aborts (a bug) when the list is full or
 * the name too long. */
void ap_monitors_set(ap_monitors_t *m, const char *name, double value);
/* The value of `name`, or `missing` when absent. */
double ap_monitors_get(const ap_monitors_t *m, const char *name, double missing);
/* 1 when present. */
int ap_monitors_has(const ap_monitors_t *m, const char *name);
void ap_monitors_clear(ap_monitors_t *m);

/* ---- configuration: one plain struct per objective, defaults from ALGORITHMS.md --------- */

typedef enum {
    AP_OBJ_GKD,
    AP_OBJ_OPD,
    AP_OBJ_GRPO,
    AP_OBJ_OPSD,
    AP_OBJ_SRPO,
    AP_OBJ_COUNT
} ap_obj_kind_t;

/* "gkd", "opd", ... */
const char *ap_obj_name(ap_obj_kind_t k);

typedef enum {
    AP_SUPPORT_AUTO,     /* full when V <= full_vocab_max, else topk_tail */
    AP_SUPPORT_FULL,     /* all V tokens */
    AP_SUPPORT_TOPK,     /* the teacher's top-K ids, both sides renormalized over them */
    AP_SUPPORT_TOPK_TAIL /* the top-K ids plus one tail bin (none when K >= V) */
} ap_support_t;

typedef enum {
    AP_REDUCE_TOKEN_MEAN, /* sum m*l / sum m over the objective's tokens of the whole batch */
    AP_REDUCE_SEQ_MEAN,   /* mean over sequences with an unmasked token of sum_t m*l / sum_t m */
    AP_REDUCE_CONST       /* sum m*l / (N_seen * max_new_tokens)  (Dr. GRPO) */
} ap_reduce_t;

typedef enum {
    AP_SCALE_GROUP, /* A = (r - mean_g) / (std_g + 1e-6), unbiased std */
    AP_SCALE_NONE   /* A = r - mean_g (Dr. GRPO) */
} ap_scale_t;

/* Settings shared by every objective. */
typedef struct {
    int enabled;        /* 1: part of the total loss */
    double weight;      /* objective.<name>.weight, default 1 */
    ap_reduce_t reduce; /* default token_mean (srpo ignores it) */
    int max_new_tokens; /* for reduce const (required there); 0 = unset */
} ap_obj_common_t;

/* The policy-gradient token loss PG(A) (ALGORITHMS.md, "Policy-gradient token loss"). */
typedef struct {
    int clip;            /* 1: clipped surrogate (clip-higher); 0: -rho*A */
    double eps_low;      /* 0.2 */
    double eps_high;     /* 0.28 */
    double dual_clip;    /* c > 1: where A < 0, loss = min(PG, -c*A); 0 = off (default) */
    double max_is_ratio; /* C: tokens with rho > C or rho < 1/C are left out; INFINITY = off */
} ap_pg_config_t;

typedef struct {
    ap_obj_common_t c;
    double beta;          /* 0.5; 0 = forward KL, 1 = reverse KL (own branches) */
    double tau;           /* 1.0: temperature of both distributions */
    ap_support_t support; /* auto */
    double clip_token_kl; /* pointwise clip c on each bin's term; INFINITY = off (default) */
} ap_gkd_config_t;

typedef struct {
    ap_obj_common_t c;
    ap_pg_config_t pg;         /* clip 0 by default */
    double kl_coef;            /* 1.0 */
    int advantage_from_behavior; /* 0: A uses sg(logp_theta) (current), 1: uses b */
    double floor_lambda;       /* REOPOLD floor A >= log(l / (1 - l)); 0 = off (default) */
} ap_opd_config_t;

typedef struct {
    ap_obj_common_t c;
    ap_pg_config_t pg;      /* clip 1 by default */
    ap_scale_t scale_rewards; /* group */
    double kl_ref;          /* k3 coefficient; 0 = no reference needed (default) */
    int dynamic_sampling;   /* 1: groups with all-equal rewards are left out (default) */
} ap_grpo_config_t;

typedef struct {
    ap_obj_common_t c;
    double beta;          /* 0 (forward KL) */
    double tau;           /* 1.0 */
    ap_support_t support; /* auto */
    double clip_token_kl; /* 0.05 */
} ap_opsd_config_t;

typedef struct {
    ap_obj_common_t c;        /* reduce is ignored: one shared denominator */
    ap_pg_config_t pg;        /* GRPO branch: clip 1 by default */
    ap_scale_t scale_rewards; /* group advantages as grpo (no dynamic sampling) */
    double beta_H;            /* 1.0: w = exp(-beta_H * H(q)); 0 gives w = 1 */
    ap_support_t support;     /* SD branch support, auto */
} ap_srpo_config_t;

typedef struct {
    ap_gkd_config_t gkd;
    ap_opd_config_t opd;
    ap_grpo_config_t grpo;
    ap_opsd_config_t opsd;
    ap_srpo_config_t srpo;
    double sampling_tau; /* tau_s of every sampled-token log-prob (default 1) */
    int full_vocab_max;  /* teacher.full_vocab_max: support auto is full up to this V (1024) */
    int K;               /* expected teacher top-K size; 0 = whatever the signal carries */
    int monitors;        /* 1 (default): also the distribution monitors (entropy, KLs, overlap) */
} ap_obj_config_t;

void ap_obj_gkd_defaults(ap_gkd_config_t *c);
void ap_obj_opd_defaults(ap_opd_config_t *c);
void ap_obj_grpo_defaults(ap_grpo_config_t *c);
void ap_obj_opsd_defaults(ap_opsd_config_t *c);
void ap_obj_srpo_defaults(ap_srpo_config_t *c);
/* Every objective at its defaults and disabled; tau_s 1, full_vocab_max 1024, K 0, monitors 1. */
void ap_obj_config_defaults(ap_obj_config_t *c);
/* Check ranges and combinations (beta in [0, 1], tau > 0, eps in [0, 1), dual clip > 1 or 0,
 * max_is_ratio >= 1, floor_lambda in [0, 1), const needs max_new_tokens > 0, at least one
 * objective enabled, one temperature per teacher kind). 0, or -1 with ap_err naming the
 * objective and option. */
int ap_obj_config_validate(const ap_obj_config_t *c);
/* Parse the reference files' metadata config {"objective": {NAME: {options}}, "K": K} into
 * `c` (defaults first; a named objective is enabled). Unknown objective or option names,
 * wrong types and out-of-range values are errors naming `origin`, the objective and the
 * option. 0 / -1. */
int ap_obj_config_from_json(ap_obj_config_t *c, const char *json, const char *origin);

/* ---- the batch -------------------------------------------------------------------------- */

/* One teacher kind's distribution signal. Either or both forms may be present. */
typedef struct {
    const float *full;       /* [N, T, V] log-probs at `tau`, or NULL */
    const int32_t *topk_ids; /* [N, T, K] ids, or NULL */
    const float *topk_lp;    /* [N, T, K] log-probs at `tau`, or NULL */
    int K;                   /* entries per position of the top-K form */
    double tau;              /* temperature of these distributions (> 0) */
} ap_obj_signal_t;

/* A whole learner batch of N trajectories, T completion positions each (right-padded), V
 * vocabulary. Every pointer is borrowed; arrays an enabled objective does not use may be NULL.
 * The student logits are not here: they come per micro-batch to ap_obj_eval. */
typedef struct {
    int N, T, V;
    const int32_t *tokens;          /* [N, T] sampled completion tokens y */
    const float *mask;              /* [N, T] base mask m (0/1, or a weight), used as is */
    const float *behavior;          /* [N, T] b at tau_s (opd, grpo, srpo) */
    const float *ref;               /* [N, T] reference log-probs at tau_s (grpo kl_ref > 0) */
    const float *teacher_sampled;   /* [N, T] lt at tau_s (opd) */
    const float *reward;            /* [N] r (grpo, srpo) */
    const int32_t *correct;         /* [N] c (srpo) */
    const int32_t *group;           /* [N] group id (grpo, srpo) */
    const int32_t *has_teacher;     /* [N] h: a self-teacher signal exists (opsd, srpo) */
    const int32_t *on_policy;       /* [N] 1 on-policy, 0 dataset; NULL: all on-policy */
    ap_obj_signal_t teacher;        /* external teacher (gkd; monitors) */
    ap_obj_signal_t self_teacher;   /* self-teacher (opsd, srpo; monitors) */
} ap_obj_batch_t;

/* ---- evaluation --------------------------------------------------------------------------- */

typedef struct ap_obj ap_obj_t;

typedef struct {
    double loss;                  /* sum over objectives of weight * loss */
    double loss_obj[AP_OBJ_COUNT]; /* each enabled objective's own (unweighted) loss */
    double count_obj[AP_OBJ_COUNT]; /* its denominator (tokens, sequences or N*max_new) */
    int nonfinite;                /* 1: loss or some gradient entry not finite: skip the step */
} ap_obj_result_t;

/* A copy of `cfg` is taken (validated first: NULL with ap_err on a bad config). */
ap_obj_t *ap_obj_new(const ap_obj_config_t *cfg);
void ap_obj_destroy(ap_obj_t **o);
/* The resolved configuration in use. Borrowed. */
const ap_obj_config_t *ap_obj_config(const ap_obj_t *o);
/* Turn the distribution monitors on/off for the next plan (they cost about one extra pass over
 * V per position and teacher). */
void ap_obj_set_monitors(ap_obj_t *o, int on);

/* Whole-batch statistics for one step. `logp_theta` [N, T]: the current student's sampled-
 * token log-probs at tau_s (needed by the staleness mask when opd, grpo or srpo is enabled;
 * may be NULL otherwise). Refuses (-1, ap_err naming the objective and the array) a batch that
 * lacks an array or signal an enabled objective needs, or whose signal temperature differs
 * from the objective's. Bad values (non-finite teacher signals, ids outside [0, V) or repeated,
 * sampled tokens outside [0, V)) are not errors: those positions are masked and counted. */
int ap_obj_plan(ap_obj_t *o, const ap_obj_batch_t *b, const float *logp_theta);
/* Loss and gradient of trajectories [row0, row0 + n) of the planned batch. `logits`
 * [n, T, V] are their student logits; `dlogits` [n, T, V] is WRITTEN (zeros where no objective
 * has weight) and may be `logits` itself (in place). Returns this micro-batch's contribution to the total loss (the contributions
 * of a partition of the rows sum to the total). Hot path: no allocation. */
double ap_obj_eval(ap_obj_t *o, int row0, int n, const float *logits, float *dlogits);
/* Close the step: totals, the non-finite flag, and the monitors (appended/replaced in `mon`,
 * which may be NULL). */
void ap_obj_finish(ap_obj_t *o, ap_obj_result_t *res, ap_monitors_t *mon);
/* plan + eval over all rows + finish. b's logits are `logits` [N, T, V]. -1 when plan fails. */
int ap_obj_compute(ap_obj_t *o, const ap_obj_batch_t *b, const float *logits, float *dlogits,
                   ap_obj_result_t *res, ap_monitors_t *mon);

/* logp[n*T + t] = log_softmax(logits[n, t, :] / tau)[tokens[n, t]] for n rows (a token
 * outside [0, V) gives NAN). */
void ap_obj_sampled_logprobs(float *logp, const float *logits, const int32_t *tokens, int n,
                             int T, int V, double tau);

/* ---- kernels (one position) ---------------------------------------------------------------- */

/* D_beta(pT || pS) at one position over a support (ALGORITHMS.md, "Divergence"), with the
 * pointwise clip `clip` (INFINITY = off). Student `s` [V] raw logits (divided by tau here);
 * teacher: `full_lp` [V] log-probs (support full) or `ids`/`lp` [K] (topk, topk_tail; K >= V
 * means no tail bin). When `grad` is not NULL, ADDS scale * dD/ds to grad [V].
 * `scratch` holds 2*V floats + V ints (use ap_obj_scratch_size). Returns D. */
double ap_obj_divergence(float *grad, float scale, const float *s, int V, ap_support_t support,
                         const float *full_lp, const int32_t *ids, const float *lp, int K,
                         double beta, double tau, double clip, void *scratch);
/* Entropy (nats) of the teacher distribution over the support as D_beta sees it: full,
 * renormalized top-K, or top-K plus the tail bin (floor 1e-10). */
double ap_obj_teacher_entropy(ap_support_t support, const float *full_lp, int V,
                              const float *lp, int K);
/* Bytes of scratch the kernels need for vocabulary V. */
size_t ap_obj_scratch_size(int V);

/* The policy-gradient token loss PG(A) for rho = exp(logp - b): returns the loss and writes
 * d loss / d logp to *dlogp; *clipped = 1 when the clip (or dual clip) branch is active. */
double ap_obj_pg(const ap_pg_config_t *pg, double logp, double b, double A, double *dlogp,
                 int *clipped);

#endif
