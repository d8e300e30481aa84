/* teacher.h: the teacher role (DESIGN.md "teacher", "Which teachers, which signals", "Tokens and
 * sequences"): it scores completions it did not generate. Two layers:
 *
 * - Scoring, a library: ap_teacher_score_many() scores the trajectories of many groups in
 *   passes through a KV cache (a scorer keeps it between calls), each distinct prefix computed
 *   once per pass (a group's G trajectories share their prompt), and returns, for every
 *   completion position t of every trajectory, the log-prob of
 *   the sampled token at the sampling temperature tau_s and the top-K ids + log-probs at the
 *   kind's temperature tau (descending), or the full V log-probs. The external teacher and the
 *   reference score a completion after the group's prompt; the self-teacher after each
 *   trajectory's privileged context (ctx tokens, already starting with <bos>), and marks
 *   trajectories without one (h = 0) not present. Position t of the signals predicts completion
 *   token t: input = prefix + completion[0 .. L-1), logits row (P - 1 + t) scores token t.
 *   ap_teacher_simulate() makes random but valid scores without a model (benchmarks).
 * - The service, ap_teacher_t: one DEALER to the buffer's teacher ROUTER on the caller's libev
 *   loop (DESIGN.md "Conversations"). HELLO {kind, capacity = buffer.teacher_credit, vocab},
 *   then SCORE_REQUESTs are held and scored in batches (one batch per loop turn, so heartbeats
 *   keep flowing between passes), answered with SCORES carrying the weights version; HEARTBEAT
 *   every buffer.heartbeat_ms; a buffer silent for 3 periods, or a RESET, means "start again":
 *   held requests are dropped and HELLO is sent again; BYE on shutdown. A `current` self-teacher
 *   follows the learner's weights (ap_wclient_spawn) and swaps a new version in between passes.
 *
 * Usage (scoring as a library):
 *   ap_teacher_params_t p;
 *   ap_teacher_params_for(&p, cfg, AP_TEACHER_EXTERNAL, V);     // K, full, tau, tau_s
 *   ap_scores_t *s = ap_teacher_score(model, group, &p, (ap_version_t){0, 0});
 *   if (!s) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
 *   ... s->sampled[t], s->ids[t * s->K + k], s->logprobs[t * s->K + k] ...;  ap_scores_destroy(&s);
 *
 * Usage (the service, as `apprentice teacher` runs it):
 *   ap_teacher_opts_t o = {.cfg = cfg, .kind = AP_TEACHER_SELF, .id = 0, .name = "teacher-self-0",
 *                          .model = model, .vocab_size = V, .vocab_hash = hash};
 *   ap_teacher_t *t = ap_teacher_new(net, loop, &o);   // connects, sends HELLO
 *   ev_run(loop, 0);                                   // until ap_teacher_stop() + ev_break
 *   ap_teacher_destroy(&t);                            // BYE, close
 */
#ifndef APPRENTICE_TEACHER_H
#define APPRENTICE_TEACHER_H

#include <stdint.h>

#include <ev.h>

#include "apprentice/config.h"
#include "apprentice/metrics.h"
#include "apprentice/model.h"
#include "apprentice/rng.h"
#include "apprentice/traj.h"
#include "apprentice/transport.h"

/* ---------------------------------------------------------------- which signals */

/* What one kind of teacher returns (DESIGN.md, "Which teachers, which signals"). */
typedef struct {
    ap_teacher_kind_t kind;    /* external / reference: after the prompt; self: after the context */
    int top_k;                 /* K of the top-K signal; 0 = sampled-token log-probs only */
    int full;                  /* 1: the full distribution over V (K = V, no ids) */
    float temperature;         /* tau of the distributions (top-K or full), > 0 */
    float sampled_temperature; /* tau_s of the sampled-token log-probs, > 0 */
} ap_teacher_params_t;

/* Bit (1u << kind) for every teacher kind the enabled objectives need: external for gkd or opd,
 * self for opsd or srpo, reference for grpo with kl_ref > 0. */
unsigned ap_teacher_kinds_needed(const ap_config_t *cfg);
/* The signal the buffer asks of `kind` in this run (vocabulary V): external at gkd.tau (1 when
 * only opd), self at opsd.tau (1 for srpo), reference sampled-token only; K = teacher.top_k
 * (capped at V); full when V <= teacher.full_vocab_max; tau_s = sampling.temperature. */
void ap_teacher_params_for(ap_teacher_params_t *p, const ap_config_t *cfg, ap_teacher_kind_t kind,
                           int vocab_size);
/* "external", "self", "reference"; NULL for an unknown kind. */
const char *ap_teacher_kind_name(ap_teacher_kind_t kind);
/* The kind named `name`, or -1. */
int ap_teacher_kind_parse(const char *name);

/* ---------------------------------------------------------------- scoring */

typedef struct {
    long sequences;       /* trajectories scored */
    long tokens;          /* completion positions scored */
    long skipped;         /* trajectories not scored (present = 0): h = 0 for the self-teacher, an
                             empty prefix, or prefix + completion longer than max_positions */
    long too_long;        /* of which: longer than the model's max_positions */
    long passes;          /* passes (each: one prefill of the distinct prefixes, then completions) */
    long input_tokens;    /* input positions of the scored trajectories (prefix + completion - 1
                             each) */
    long computed_tokens; /* positions the passes computed: shared prefixes once, no padding */
} ap_teacher_score_stats_t;

/* A scorer: a model (borrowed, outlives it) and the KV cache its passes reuse, sized on demand
 * (at most 64 sequences of the longest length seen so far). share_prefix 0 computes every
 * trajectory's prefix itself (benchmarks compare). It computes with the model's current weights
 * (after ap_model_set_blob, the next call uses the new ones). */
typedef struct ap_teacher_scorer ap_teacher_scorer_t;
ap_teacher_scorer_t *ap_teacher_scorer_new(const ap_model_t *m, int share_prefix);
void ap_teacher_scorer_destroy(ap_teacher_scorer_t **sc);

/* Score n groups: out[j] (new, caller destroys) answers groups[j] with params[j] (one params
 * for all when params[j] is params[0]: pass an array of n pointers). Trajectories of all groups
 * go through passes of at most 64 sequences computing at most max_batch_tokens positions (a
 * longer sequence goes alone). Every score carries `version`, group_id = the group's id,
 * request_id 0. stats (may be NULL) is ADDED to. 0, or -1 with ap_err (token ids outside the
 * model's V; out[] are then all NULL). */
int ap_teacher_score_many(ap_teacher_scorer_t *sc, int n, const ap_group_t *const *groups,
                          const ap_teacher_params_t *const *params, ap_version_t version,
                          int max_batch_tokens, ap_scores_t **out, ap_teacher_score_stats_t *stats);
/* One group through a scorer of its own, passes of up to 4096 tokens. NULL + ap_err on failure. */
ap_scores_t *ap_teacher_score(const ap_model_t *m, const ap_group_t *g, const ap_teacher_params_t *p,
                              ap_version_t version);
/* Random but valid scores of the right shape for g (no model): sampled log-probs in (-5, 0],
 * K distinct ids with descending log-probs whose probabilities sum below 1, or a normalized
 * full distribution; the self kind leaves h = 0 trajectories not present. */
ap_scores_t *ap_teacher_simulate(const ap_group_t *g, const ap_teacher_params_t *p, int vocab_size,
                                 ap_version_t version, ap_rng_t *rng);

/* Read the vocabulary of model directory `dir` (vocab.json) and compare it with the student's
 * (`student_dir`): 0 and *V, *hash of the student's vocabulary, or -1 with ap_err naming both
 * directories and hashes (a teacher must share the student's tokenizer). teacher_dir may equal
 * student_dir. When `model_vocab` > 0 it must equal V too (the network's output size). */
int ap_teacher_check_vocab(const char *teacher_dir, const char *student_dir, int model_vocab,
                           int *V, uint64_t *hash);

/* ---------------------------------------------------------------- the service */

typedef struct {
    const ap_config_t *cfg;  /* borrowed: endpoints, buffer.*, teacher.*, sampling */
    ap_teacher_kind_t kind;  /* the kind served */
    int id;                  /* worker index within the kind */
    const char *name;        /* "teacher-external-0": HELLO name and logs */
    ap_model_t *model;       /* borrowed (outlives the teacher); NULL with simulate */
    ap_version_t version;    /* version of `model`'s weights ({0,0}: a frozen checkpoint) */
    int simulate;            /* 1: random valid scores, no model (benchmarks, tests) */
    double simulate_delay_s; /* simulate: answer each request this long after it arrived */
    int vocab_size;          /* V of the student's vocabulary (HELLO; simulate's V) */
    uint64_t vocab_hash;     /* hash of the student's vocabulary (HELLO; 0 = unchecked) */
    int follow_weights;      /* self `current`: pull every new version from the learner and
                                serve only once the first one arrived */
    const char *endpoint;    /* the buffer's teacher ROUTER; NULL: endpoints.buffer_teachers */
    const char *buffer_key;  /* CURVE: the buffer's public key (Z85); NULL without CURVE */
    const char *learner_key; /* CURVE: the learner's public key, for follow_weights */
    ap_metrics_t *metrics;   /* borrowed; NULL: no metrics records */
    double report_interval;  /* seconds between metrics records (0: 1 s) */
    uint64_t seed;           /* simulate's random stream */
} ap_teacher_opts_t;

typedef struct {
    uint64_t requests;    /* score requests received */
    uint64_t answered;    /* SCORES sent */
    uint64_t dropped;     /* held requests dropped on RESET / buffer silence / overflow */
    uint64_t wrong_kind;  /* requests for another kind (dropped, counted) */
    uint64_t hellos;      /* HELLOs sent (1 + re-registrations) */
    uint64_t tokens;      /* completion positions scored */
    uint64_t versions;    /* weight versions swapped in (follow_weights) */
    int held;             /* requests waiting to be scored now */
    ap_version_t version; /* weights version in use */
    int fatal;            /* 1: refused by the buffer (vocabulary): the process should exit */
} ap_teacher_stats_t;

typedef struct ap_teacher ap_teacher_t;

/* Connect to the buffer and send HELLO (a follow_weights teacher first waits for weights).
 * NULL + ap_err (socket or weights-client failure). */
ap_teacher_t *ap_teacher_new(ap_net_t *net, struct ev_loop *loop, const ap_teacher_opts_t *o);
/* BYE (when still connected), close the sockets, join the weights client. NULLs *t. */
void ap_teacher_destroy(ap_teacher_t **t);
/* Leave now: BYE to the buffer, stop every watcher (the caller then breaks its loop). */
void ap_teacher_stop(ap_teacher_t *t);
void ap_teacher_stats(const ap_teacher_t *t, ap_teacher_stats_t *out);

#endif
