/* actor.h: the actor role (DESIGN.md "actor"; `apprentice actor --run DIR --id N --mode M`):
 * makes trajectory groups and pushes them to the buffer, or evaluates the policy.
 *
 * Modes:
 *   student  take a prompt from the task sampler (shard of this actor), sample G completions in
 *            one batched KV-cached pass (ap_generate at sampling.*: per-token log-probs at the
 *            sampling temperature from the full distribution), verify each (reward, correct,
 *            feedback), render each trajectory's privileged context (<bos> + the privileged
 *            template, {sibling} from the group; h = 0 when it renders nothing or would not fit
 *            the model with the completion), push the group with its policy version;
 *   dataset  the off-policy side of GKD: groups with source = dataset, version {0,0}, no
 *            behaviour log-probs: the gold completion (G = 1) or, with actors.dataset_source =
 *            teacher, G completions sampled from model.teacher (verified: `correct` is set);
 *   eval     no buffer: greedy accuracy and pass@actors.pass_k on the first actors.eval_size
 *            held-out prompts (eval.h) at the first version pulled and whenever a pulled version
 *            crosses a multiple of actors.eval_every steps (or a new generation); metrics role
 *            "eval", step = the evaluated version's step.
 * `simulate`: no model: random but valid groups made instantly (real prompts, verdicts and
 * contexts; random completion tokens and log-probs; version = CREDIT.latest), for the pipeline
 * benchmark. An evaluator has nothing to simulate and idles.
 *
 * Conversation with the buffer (DESIGN.md, actor -> buffer): HELLO (role, id, name, vocabulary
 * size and hash), then one GROUP per credit granted (CREDIT.grant adds, each GROUP sent uses
 * one: never more in flight than granted), HELLO again on RESET (credit back to 0), HEARTBEAT
 * every buffer.heartbeat_ms with the version held, BYE when leaving. A ZeroMQ/libev I/O thread
 * owns the socket, so heartbeats and credit keep flowing while a group is sampled. Weights
 * arrive through ap_wclient_spawn (its own thread) and are swapped in between groups without
 * blocking (refused when the blob's config or tensor table differs from the model's). A student
 * actor waits for the first version before sampling; in sync mode it also waits for the
 * version CREDIT.latest names.
 *
 * Sharding: one shard space over the student and dataset actors the launcher starts (student k
 * is shard k, dataset k is shard students + k), so no two actors draw the same prompt stream.
 * Group ids: actor id << 40 | dataset << 39 | (restart count mod 128) << 32 | sequence (32 bits).
 * State: RUN/state/NAME.json (task cursor, sequence, restart count), written atomically every few
 * seconds and at exit; a restarted actor continues its prompt stream from there (prompts drawn
 * after the last save are drawn again: not critical).
 *
 * Usage (the role):
 *   ap_actor_opts_t o = {.cfg = proc.cfg, .run_dir = proc.dir, .net = net,
 *                        .metrics = proc.metrics, .mode = AP_ACTOR_STUDENT, .id = 0};
 *   ap_actor_t *a = ap_actor_new(&o);                   // NULL + ap_errmsg()
 *   ap_actor_set_stop_flag(a, &sigflag);
 *   int rc = ap_actor_run(a);                           // until stopped: 0
 *   ap_actor_destroy(&a);
 *
 * Usage (groups without sockets: tests and tools):
 *   ap_actor_opts_t o = {.cfg = cfg, .mode = AP_ACTOR_STUDENT, .id = 0};
 *   ap_actor_t *a = ap_actor_new(&o);                   // weights of model.student, version {0,0}
 *   ap_group_t *g = ap_actor_make_group(a);             // caller destroys; NULL + ap_err
 */
#ifndef APPRENTICE_ACTOR_H
#define APPRENTICE_ACTOR_H

#include <signal.h>

#include "apprentice/config.h"
#include "apprentice/metrics.h"
#include "apprentice/traj.h"
#include "apprentice/transport.h"
#include "apprentice/weights.h"

typedef enum { AP_ACTOR_STUDENT = 0, AP_ACTOR_DATASET = 1, AP_ACTOR_EVAL = 2 } ap_actor_mode_t;

/* "student", "dataset", "eval". */
const char *ap_actor_mode_name(ap_actor_mode_t m);
/* The reverse. 0 / -1 with ap_err listing the modes. */
int ap_actor_mode_parse(const char *name, ap_actor_mode_t *m);

typedef struct {
    const ap_config_t *cfg; /* borrowed; must outlive the actor */
    const char *run_dir;    /* RUN (state file); NULL: no state */
    ap_net_t *net;          /* borrowed ZeroMQ context for ap_actor_run; NULL: make_group only */
    ap_metrics_t *metrics;  /* borrowed sink (NULL: discard) */
    ap_actor_mode_t mode;
    int id;                  /* 0-based index within its mode */
    int simulate;            /* 1: no model, random valid groups */
    double metrics_interval; /* seconds between metrics records (0: 1 s) */
} ap_actor_opts_t;

/* Counters since start (also the metrics' sources). */
typedef struct {
    long groups;            /* groups made */
    long groups_sent;       /* groups handed to the buffer */
    long trajectories;      /* completions made */
    long tokens;            /* completion tokens made */
    long correct;           /* completions verified correct */
    long with_context;      /* trajectories with h = 1 */
    long contexts_too_long; /* contexts dropped (h = 0): context + completion over max positions */
    long prompts_skipped;   /* prompts too long for the model */
    long weight_swaps;      /* versions swapped in */
    long weights_refused;   /* versions refused (config / tensor table mismatch) */
    long evaluations;       /* eval mode: versions evaluated */
    long resets;            /* RESETs from the buffer */
    ap_version_t version;   /* version held ({0,0} before the first pull) */
    double busy_s, idle_s;  /* seconds making groups / waiting for credit or weights */
} ap_actor_stats_t;

typedef struct ap_actor ap_actor_t;

ap_actor_t *ap_actor_new(const ap_actor_opts_t *o); /* NULL + ap_err */
void ap_actor_destroy(ap_actor_t **a);

/* Run the mode's loop until stopped. 0 when it ended cleanly, -1 + ap_err otherwise. */
int ap_actor_run(ap_actor_t *a);
/* Ask ap_actor_run to return (thread-safe). */
void ap_actor_stop(ap_actor_t *a);
void ap_actor_set_stop_flag(ap_actor_t *a, const volatile sig_atomic_t *flag);

/* One group of this actor's mode (student / dataset) with the weights held; the caller owns it.
 * NULL + ap_err on a generation failure (non-finite logits) or in eval mode. */
ap_group_t *ap_actor_make_group(ap_actor_t *a);
/* Swap in a pulled version (what the run loop does with ap_wclient_take). 0, or -1 with ap_err
 * (and counted) when its config or tensor table is not the model's. */
int ap_actor_set_weights(ap_actor_t *a, const ap_weights_t *w);

ap_version_t ap_actor_version(const ap_actor_t *a);
const char *ap_actor_name(const ap_actor_t *a); /* "actor-0", "dataset-1", "eval-0" */
void ap_actor_stats(const ap_actor_t *a, ap_actor_stats_t *out);

#endif
