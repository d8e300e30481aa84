/* buffer.h: the generation/replay buffer (DESIGN.md "buffer", "Conversations"; ALGORITHMS.md
 * "GKD's λ"), a service on the caller's libev loop with three ROUTERs it binds:
 *
 *   actors   (endpoints.buffer_actors):   HELLO -> CREDIT{grant, latest}; GROUP -> CREDIT{ack}
 *   teachers (endpoints.buffer_teachers): HELLO{kind, capacity}; SCORE_REQUEST -> SCORES
 *   learner  (endpoints.buffer_learner):  BATCH_REQUEST (long-poll, several in flight) -> BATCH
 *
 * A group taken from an actor is dispatched to every teacher kind the run needs (on-policy: every
 * kind of ap_teacher_kinds_needed; dataset: the external teacher only), load-balanced by credit
 * over the live teachers of that kind, with a deadline (buffer.teacher_timeout_ms): a request
 * whose deadline passes, whose teacher dies (3 silent heartbeat periods, BYE, unroutable) or
 * whose answer is unusable goes to another teacher (attempt + 1) up to buffer.max_retries, then
 * its group is dropped (counted). The first usable answer wins; later ones are counted and
 * dropped. Scored groups wait in the ready queues (on-policy, dataset) until a batch request can
 * be composed: floor(λB/G) whole on-policy groups + B - G floor(λB/G) dataset trajectories (whole
 * dataset groups, the last one trimmed), each item with the scores of every kind it needs.
 *
 * Staleness: the newest learner version seen in a BATCH_REQUEST is the bound; on-policy groups
 * older than buffer.max_staleness steps (run.sync: any older step) or of an older generation are
 * dropped (counted); dataset groups never are. Replay: a group is served up to buffer.max_reuse
 * times while fresh (on-policy: newest first or uniformly at random, buffer.reuse_order;
 * dataset: oldest first, a served group going to the back).
 *
 * Sync mode (run.sync): no credit is owed or returned; actors (on-policy and dataset) are granted,
 * round-robin, only the groups the waiting batch requests still lack (floor(λB/G) on-policy,
 * ceil((B - G floor(λB/G)) / G) dataset groups each), with CREDIT.latest = the learner's version,
 * and any on-policy group older than the learner's version is stale.
 *
 * Bounded memory and accounting: per source, pending (being scored) and ready groups are each at
 * most buffer.capacity_groups. Credit is the backpressure: an actor gets credit back only while
 * pending + unserved ready + credit outstanding < capacity; what is withheld is owed and paid,
 * round-robin, as room frees. Should a queue still overflow (a client ignoring credit), the
 * oldest group goes: a served one is retired, an unserved one is dropped (counted "overflow").
 * Every group taken is, at any time, exactly one of: dropped unserved (by reason), served at
 * least once, or held unserved: groups_in = drops + served_first + held_unserved.
 *
 * Usage (a test or `apprentice buffer`):
 *   ap_buffer_opts_t o = {.cfg = cfg, .vocab_size = V, .vocab_hash = hash, .metrics = m};
 *   ap_buffer_t *b = ap_buffer_new(net, loop, &o);    // binds the three ROUTERs
 *   if (!b) die(ap_errmsg());
 *   ev_run(loop, 0);                                   // until ap_buffer_stop() + ev_break
 *   ap_buffer_stats_t st; ap_buffer_stats(b, &st);
 *   ap_buffer_destroy(&b);
 */
#ifndef APPRENTICE_BUFFER_H
#define APPRENTICE_BUFFER_H

#include <stdint.h>

#include <ev.h>

#include "apprentice/config.h"
#include "apprentice/metrics.h"
#include "apprentice/traj.h"
#include "apprentice/transport.h"

/* Why a group was dropped before it was ever served. */
typedef enum {
    AP_BUFFER_DROP_STALE = 0,      /* on-policy, more than max_staleness steps behind */
    AP_BUFFER_DROP_OLD_GENERATION, /* on-policy, sampled before the learner's last restart */
    AP_BUFFER_DROP_OVERFLOW,       /* a queue overflowed (a client ignored credit) */
    AP_BUFFER_DROP_TEACHER_FAILED, /* no usable score after 1 + max_retries dispatches */
    AP_BUFFER_DROP_INVALID,        /* taken but unusable: on-policy G != sampling.group_size */
    AP_BUFFER_DROP_REASON_COUNT
} ap_buffer_drop_t;

/* Semantic errors in well-formed messages (the codec counts malformed ones). Each is dropped,
 * counted and logged (rate-limited); the sender is answered as the conversation says. */
typedef enum {
    AP_BUFFER_BAD_UNKNOWN_PEER = 0, /* not HELLO from a peer we do not know: RESET sent */
    AP_BUFFER_BAD_ROLE,             /* HELLO with the wrong role for the socket: RESET */
    AP_BUFFER_BAD_VOCAB,            /* HELLO with another vocabulary (size or hash): RESET */
    AP_BUFFER_BAD_TYPE,             /* a message type this conversation does not use */
    AP_BUFFER_BAD_UNKNOWN_REQUEST,  /* SCORES for a request id never issued */
    AP_BUFFER_BAD_UNASSIGNED,       /* SCORES from a teacher the request was not sent to */
    AP_BUFFER_BAD_WRONG_KIND,       /* SCORES of another kind than asked */
    AP_BUFFER_BAD_MISMATCH,         /* SCORES that do not fit the group, or not as asked (K,
                                       full, temperature, V, present where h = 0) */
    AP_BUFFER_BAD_REQUEST,          /* BATCH_REQUEST that can never be served, or a duplicate */
    AP_BUFFER_BAD_REASON_COUNT
} ap_buffer_bad_t;

const char *ap_buffer_drop_name(ap_buffer_drop_t r); /* "stale", "old_generation", ... */
const char *ap_buffer_bad_name(ap_buffer_bad_t r);   /* "unknown_peer", ... */

typedef struct {
    /* groups */
    uint64_t groups_in;                          /* taken from actors (on-policy + dataset) */
    uint64_t groups_in_source[AP_SOURCE_COUNT];  /* of which, by source */
    uint64_t drops[AP_BUFFER_DROP_REASON_COUNT]; /* dropped unserved, by reason */
    uint64_t drops_total;                        /* sum of drops */
    uint64_t served_first;                       /* groups served at least once */
    uint64_t serves;                             /* group serves, replays included */
    uint64_t reuses;                             /* serves beyond a group's first */
    uint64_t retired;                            /* served groups no longer held */
    int pending[AP_SOURCE_COUNT];                /* groups waiting for scores */
    int ready[AP_SOURCE_COUNT];                  /* scored groups held (served ones included) */
    int held_unserved;                           /* pending + ready never served */
    uint64_t over_credit;                        /* groups sent without credit (still taken) */
    /* learner */
    uint64_t batch_requests;   /* BATCH_REQUESTs accepted */
    uint64_t batches;          /* batches sent */
    uint64_t batch_parts;      /* Batch messages sent (a batch may need several parts) */
    uint64_t trajectories_out; /* trajectories sent */
    uint64_t trimmed;          /* dataset trajectories left out by trimming a group */
    int batch_waiting;         /* batch requests not yet answered */
    double batch_wait_ms_mean; /* mean time from BATCH_REQUEST to its last part sent */
    /* teachers */
    uint64_t score_requests;   /* SCORE_REQUESTs sent, re-dispatches included */
    uint64_t redispatched;     /* dispatches with attempt > 0 */
    uint64_t timeouts;         /* deadlines passed */
    uint64_t answers;          /* first usable answers (scores kept) */
    uint64_t late_answers;     /* answers to a request already answered or dropped */
    uint64_t teachers_expired; /* teachers declared dead (silence, unroutable) */
    /* peers */
    int actors;                     /* actors registered and alive */
    int teachers[AP_TEACHER_COUNT]; /* teachers alive, by kind */
    int learners;                   /* learner peers alive (1 normally) */
    /* input */
    uint64_t bad[AP_BUFFER_BAD_REASON_COUNT]; /* semantic errors, by reason */
    uint64_t rejected;                        /* malformed messages (codec), all sockets */
    uint64_t rejected_by_reason[AP_REJECT_REASON_COUNT];
    ap_version_t learner_version; /* newest learner version seen */
    unsigned kinds;               /* teacher kinds this run needs (1u << kind) */
} ap_buffer_stats_t;

typedef struct {
    const ap_config_t *cfg;      /* borrowed (outlives the buffer): buffer.*, batch.*, sampling,
                                    objective (teacher kinds), teacher, endpoints, run.sync */
    int vocab_size;              /* V: token ids are checked against it; 0 = unchecked */
    uint64_t vocab_hash;         /* the student's vocabulary; a peer announcing another is refused
                                    (0 = unchecked) */
    ap_metrics_t *metrics;       /* borrowed; NULL: no metrics records */
    double report_interval;      /* seconds between metrics records (0: 1 s) */
    const char *actors_endpoint; /* overrides of cfg->endpoints.* (tests); NULL: the config */
    const char *teachers_endpoint;
    const char *learner_endpoint;
    uint64_t seed; /* uniform replay order's random stream */
} ap_buffer_opts_t;

typedef struct ap_buffer ap_buffer_t;

/* Bind the three ROUTERs (CURVE when the net has it: ZAP domains "actor", "teacher", "learner";
 * allow-list them first, e.g. with ap_buffer_allow_keys) and start serving on `loop`.
 * NULL + ap_err (a bind failed, a bad option). */
ap_buffer_t *ap_buffer_new(ap_net_t *net, struct ev_loop *loop, const ap_buffer_opts_t *o);
/* Close the sockets and free everything (no BYE: call ap_buffer_stop first for that). */
void ap_buffer_destroy(ap_buffer_t **b);
/* Leave now: BYE to every peer, stop the watchers (the caller then breaks its loop). */
void ap_buffer_stop(ap_buffer_t *b);
void ap_buffer_stats(const ap_buffer_t *b, ap_buffer_stats_t *out);
/* The endpoint bound for role socket 0 actors, 1 teachers, 2 learner (resolved "tcp://...:*"). */
const char *ap_buffer_endpoint(const ap_buffer_t *b, int which);

/* ---------------------------------------------------------------- CURVE keys of a run */

/* The buffer's allow-lists from keys_dir: every NAME.pub whose NAME starts with "actor" or
 * "dataset" for domain "actor", "teacher" for "teacher", "learner" for "learner". Returns the
 * number of keys admitted, or -1 with ap_err. */
int ap_buffer_allow_keys(ap_net_t *net, const char *keys_dir);
/* CURVE for any process of a run: load this process's pair keys_dir/NAME.key (falling back to
 * keys_dir/ROLE.key, e.g. "teacher-external-0" then "teacher") into o (o->curve = 1). 0 / -1. */
int ap_buffer_load_keys(const char *keys_dir, const char *name, const char *role, ap_net_opts_t *o);
/* Tune glibc malloc for a process that allocates and frees large messages continuously (keep
 * freed memory in the heap instead of mapping and unmapping it). `apprentice buffer` calls it. */
void ap_buffer_tune_malloc(void);
/* The public key of service `name` ("buffer" or "learner"): keys_dir/NAME-0.pub, falling back
 * to keys_dir/NAME.pub. 0 / -1 with ap_err naming both paths. */
int ap_buffer_service_key(const char *keys_dir, const char *name, char pub[AP_Z85_KEY]);

#endif
