/* learner.h: the learner role (DESIGN.md "learner"; `apprentice learner --run DIR --id 0`): owns
 * the student's weights and the optimizer, turns the buffer's batches into objective steps,
 * publishes weights, checkpoints and reports.
 *
 * Two layers, both usable alone:
 *   - the batch conversion (ap_learner_batch_t): a decoded ap_batch_t (groups + teacher scores)
 *     becomes the student's right-padded inputs and the objectives' ap_obj_batch_t arrays
 *     (tokens, behaviour log-probs, rewards, groups, correctness, h, on-policy flags, teacher
 *     and self-teacher signals in the forms the enabled objectives need, at their temperatures);
 *   - the learner (ap_learner_t): a model, the objectives, masks, AdamW on the run's schedule,
 *     checkpoints, rollouts and metrics. ap_learner_step() runs one optimizer step on one batch
 *     with no sockets (tests, tools); ap_learner_run() is the service: a ZeroMQ/libev I/O thread
 *     keeps `learner.prefetch` BATCH_REQUESTs in flight to the buffer, heartbeats, serves weight
 *     pulls (ap_wserver) while the calling thread computes, publishes (gen, step) every
 *     `learner.sync_every` steps, checkpoints every `learner.checkpoint_every` steps and at the
 *     end, and stops at run.max_steps / run.max_minutes or on ap_learner_stop() / the stop flag.
 *
 * Student inputs. Trajectory n is the sequence prompt + completion[0 .. len-1) (the last
 * completion token predicts nothing), right-padded to S; completion token t is predicted at input
 * position prompt_len[n] - 1 + t. The objectives see logits [N, T, V] gathered at those
 * positions (T = longest completion in the batch).
 *
 * Versions: (gen, step), DESIGN.md "Versions". A fresh learner starts at gen 1, step 0; a learner
 * that starts again (from RUN/latest, or after a crash before any checkpoint) takes
 * gen = max(checkpoint's gen, RUN/learner-gen) + 1 and writes RUN/learner-gen before publishing,
 * so two restarts from one checkpoint never publish the same version twice.
 *
 * Usage (the role):
 *   ap_learner_opts_t o = {.cfg = proc.cfg, .run_dir = proc.dir, .net = net,
 *                          .metrics = proc.metrics};
 *   ap_learner_t *L = ap_learner_new(&o);                 // NULL + ap_errmsg()
 *   ap_learner_set_stop_flag(L, &sigflag);                // SIGINT/SIGTERM: checkpoint, return 0
 *   int rc = ap_learner_run(L);                           // 0: finished or stopped cleanly
 *   ap_learner_destroy(&L);
 *
 * Usage (one step without sockets, e.g. a test with a handmade batch):
 *   ap_learner_opts_t o = {.cfg = cfg};                   // model.student must be a model dir
 *   ap_learner_t *L = ap_learner_new(&o);
 *   ap_learner_step_t st;
 *   ap_learner_step(L, batch, &st);                       // batch borrowed; st.loss, st.skipped
 */
#ifndef APPRENTICE_LEARNER_H
#define APPRENTICE_LEARNER_H

#include <signal.h>
#include <stdint.h>

#include "apprentice/config.h"
#include "apprentice/metrics.h"
#include "apprentice/model.h"
#include "apprentice/objectives.h"
#include "apprentice/traj.h"
#include "apprentice/transport.h"

/* ---- batch -> objectives ------------------------------------------------------------------- */

/* What the conversion must produce. Index by ap_teacher_kind_t. */
typedef struct {
    int V;                        /* vocabulary of the student */
    int32_t pad_id;               /* filler of padded token slots */
    int max_seq;                  /* longest student input accepted (max positions) */
    int need[AP_TEACHER_COUNT];   /* 1: every item should carry this kind's scores; an item
                                     without them gets NaN signals (masked, counted) */
    int full[AP_TEACHER_COUNT];   /* 1: build the full [N, T, V] log-prob form */
    int topk[AP_TEACHER_COUNT];   /* 1: build the top-K form (from top-K scores, or derived
                                     from full ones with K = topk_k) */
    int topk_k;                   /* K of a top-K form derived from full scores only */
    double tau[AP_TEACHER_COUNT]; /* temperature each kind's distributions must be at: scores
                                     at another temperature are refused (counted) */
    double sampling_tau;          /* tau_s the groups' behaviour log-probs must be at */
} ap_learner_batch_opts_t;

/* One kind's signal, borrowed by ap_obj_batch_t. NULL arrays when that form is not built. */
typedef struct {
    float *full;    /* [N, T, V] log-probs */
    int32_t *ids;   /* [N, T, K] top-K ids, descending */
    float *lp;      /* [N, T, K] their log-probs */
    float *sampled; /* [N, T] sampled-token log-prob at tau_s; NaN where missing */
    int K;          /* top-K entries per position (0: no top-K form) */
    double tau;     /* temperature of full / lp */
    int present;    /* items that carried this kind's scores */
} ap_learner_signal_t;

/* A learner batch: plain arrays, owned, re-used across builds (grown, never shrunk). */
typedef struct {
    int N, T, V; /* trajectories, completion positions (longest completion), vocabulary */
    int S;       /* longest student input (prompt + completion - 1) */
    int n_items; /* groups kept */
    /* student inputs */
    int32_t *inputs; /* [N, S] prompt + completion[0..len-1), pad-filled */
    int *input_len;  /* [N] */
    int *prompt_len; /* [N] completion token t is predicted at input position prompt_len - 1 + t */
    /* per trajectory */
    int32_t *tokens;       /* [N, T] completion tokens, pad-filled */
    int32_t *length;       /* [N] completion lengths */
    uint8_t *truncated;    /* [N] 1: finished by length */
    float *behavior;       /* [N, T] behaviour log-probs at tau_s (0 for dataset trajectories) */
    float *reward;         /* [N] task reward (the masks may add the overlong penalty) */
    int32_t *correct;      /* [N] verified correct */
    int32_t *group;        /* [N] group index within the batch (= item) */
    int32_t *has_teacher;  /* [N] h: a privileged context and a self-teacher score exist */
    int32_t *on_policy;    /* [N] 1 on-policy, 0 dataset */
    int32_t *item;         /* [N] index of its item in the batch */
    int32_t *index;        /* [N] its trajectory index within the group */
    ap_version_t *version; /* [N] policy version that sampled it ({0,0} dataset) */
    float *mask;           /* [N, T] base mask: written by the learner's masks (not by build) */
    float *rep;            /* [N] rep_n: written by the masks */
    /* signals, by ap_teacher_kind_t (reference: `sampled` only) */
    ap_learner_signal_t sig[AP_TEACHER_COUNT];
    /* what build refused or could not fill (bad input, counted, never fatal) */
    long missing[AP_TEACHER_COUNT]; /* trajectories without a needed kind's scores, or whose
                                       scores cannot make a needed form (top-K for full) */
    long bad_scores;                /* score sets ignored: temperature, vocabulary or shape */
    long dropped;                   /* trajectories dropped: input longer than max_seq */
    long bad_temperature;           /* on-policy groups sampled at another tau_s (kept, counted) */
    /* the objectives' view of the arrays above (mask included) */
    ap_obj_batch_t ob;
    /* capacities (internal) */
    size_t cap_n, cap_nt, cap_ns, cap_ntv[AP_TEACHER_COUNT], cap_ntk[AP_TEACHER_COUNT];
} ap_learner_batch_t;

ap_learner_batch_t *ap_learner_batch_new(void);
void ap_learner_batch_destroy(ap_learner_batch_t **lb);
/* Fill `lb` from the items of a (complete, reassembled) batch: items in order, trajectories in
 * group order. Never fails on bad content (counted in lb); returns the number of trajectories
 * kept (0: nothing to train on). The batch must outlive nothing: everything is copied. */
int ap_learner_batch_build(ap_learner_batch_t *lb, const ap_batch_t *b,
                           const ap_learner_batch_opts_t *o);

/* ---- the learner ----------------------------------------------------------------------------- */

typedef struct ap_learner ap_learner_t;

typedef struct {
    const ap_config_t *cfg; /* borrowed; must outlive the learner */
    const char *run_dir;    /* run directory (checkpoints, rollouts, resume); NULL: none */
    ap_net_t *net;          /* borrowed ZeroMQ context for ap_learner_run; NULL: steps only */
    ap_metrics_t *metrics;  /* borrowed sink (NULL: discard) */
    const char *name;       /* process name in HELLO and CURVE keys ("learner") */
} ap_learner_opts_t;

/* Why a batch did not step the optimizer. */
typedef enum {
    AP_LEARNER_STEPPED = 0,
    AP_LEARNER_SKIP_EMPTY,      /* no trajectory left after conversion */
    AP_LEARNER_SKIP_TRUNCATION, /* the masks say skip (truncation rate) */
    AP_LEARNER_SKIP_PLAN,       /* the objectives refused the batch (a signal form is missing) */
    AP_LEARNER_SKIP_NONFINITE,  /* loss or gradient not finite */
    AP_LEARNER_SKIP_STOPPED,    /* abandoned mid-step by a stop request */
    AP_LEARNER_SKIP_COUNT
} ap_learner_skip_t;

const char *ap_learner_skip_name(ap_learner_skip_t s);

/* One step's outcome (also written as one metrics record). */
typedef struct {
    ap_learner_skip_t skipped;            /* AP_LEARNER_STEPPED when the optimizer stepped */
    ap_version_t version;                 /* version after the step */
    double loss;                          /* loss/total (NAN when not computed) */
    double grad_norm;                     /* pre-clip global norm (NAN when not computed) */
    double lr;                            /* learning rate used */
    int N, T;                             /* trajectories, completion positions */
    long tokens;                          /* completion tokens in the batch */
    double staleness_mean, staleness_max; /* on-policy: learner step - trajectory step */
    double seconds;                       /* whole step (conversion to optimizer) */
    double fb_seconds;                    /* forward + backward */
    double obj_seconds;                   /* masks + plan + eval + finish */
    double transport_seconds;             /* batch conversion + publish_seconds */
    double publish_seconds; /* waiting for the weights being published to be copied before the
                               update, and requesting the next publication */
    ap_monitors_t mon;      /* every objective and mask monitor of the step */
} ap_learner_step_t;

ap_learner_t *ap_learner_new(const ap_learner_opts_t *o); /* NULL + ap_err */
void ap_learner_destroy(ap_learner_t **L);

/* One step on `b` (borrowed): conversion, masks, student log-probs, objectives per micro-batch,
 * backward, AdamW, version bump; then the periodic work of ap_learner_run that needs no socket
 * (metrics record, rollouts, checkpoint when due). 0, or -1 with ap_err on a failure that is not
 * the batch's fault (I/O, model errors). A skipped batch returns 0 with st->skipped set. */
int ap_learner_step(ap_learner_t *L, const ap_batch_t *b, ap_learner_step_t *st);

/* Serve until run.max_steps / run.max_minutes, a stop request or the stop flag; then a final
 * checkpoint (when a run directory is set). 0 when it ended cleanly, -1 + ap_err otherwise. */
int ap_learner_run(ap_learner_t *L);
/* Ask ap_learner_run to stop (thread-safe; the current step is abandoned). */
void ap_learner_stop(ap_learner_t *L);
/* A flag (e.g. set by a signal handler) polled like ap_learner_stop. */
void ap_learner_set_stop_flag(ap_learner_t *L, const volatile sig_atomic_t *flag);

/* Write RUN/ckpt/step-N (model, vocabulary, training state with the learner's JSON: version,
 * gen, counters) and point RUN/latest at it (keeping learner.keep_checkpoints). 0 / -1. */
int ap_learner_checkpoint(ap_learner_t *L);

ap_version_t ap_learner_version(const ap_learner_t *L);
ap_model_t *ap_learner_model(ap_learner_t *L);       /* borrowed */
long ap_learner_resumed_from(const ap_learner_t *L); /* checkpoint step resumed, -1 = fresh */
/* The arrays of the last batch stepped on (mask included): for tests and tools. Borrowed. */
const ap_learner_batch_t *ap_learner_last_batch(const ap_learner_t *L);
/* Batches skipped so far in this process, by reason (index ap_learner_skip_t). */
long ap_learner_skipped(const ap_learner_t *L, ap_learner_skip_t why);

/* Identity of a model's tensor table (names, shapes, offsets): the weights blob carries it so a
 * client can refuse an arena laid out for another network. */
uint64_t ap_learner_table_hash(const ap_model_t *m);

#endif
