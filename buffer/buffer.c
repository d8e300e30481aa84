/* buffer.c: the generation/replay buffer service (buffer.h; DESIGN.md "Conversations";
 * research/transport.md sections 3-7 and 10).
 *
 * State, all owned by one struct and driven by one libev loop:
 *   - peers of the three ROUTERs, keyed by routing id (linear scan: a few hundred at most);
 *   - entries: one per group taken, with its scores by teacher kind and one request per kind
 *     still missing; pending[source] (arrival order) until every kind answered, then
 *     ready[source] (readiness order) until served max_reuse times, stale, or evicted;
 *   - requests: id -> request (open-addressing map), plus one dispatch FIFO per kind (a
 *     re-dispatch goes to the front); each teacher peer lists the request ids it holds, so a
 *     slot frees when that teacher answers (even late) or dies;
 *   - batch requests of the learner, answered in order as soon as one can be composed.
 * After every message and every housekeeping tick, s_kick() runs the pipeline forward:
 * sweep dead peers (their work re-queued), dispatch to teachers with credit, serve batch
 * requests, pay actors the credit there is room for. The housekeeping timer also sends
 * heartbeats, expires silent peers (3 periods), re-dispatches requests whose deadline passed,
 * and writes the metrics record every report interval. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/rng.h"
#include "apprentice/teacher.h"

enum { S_ACT = 0, S_TEA = 1, S_LRN = 2, S_NSOCK = 3 };
enum { S_ON = AP_SOURCE_ON_POLICY, S_DS = AP_SOURCE_DATASET };
enum { S_PENDING = 0, S_READY = 1 };

#define S_MAX_TRIED 16       /* teachers remembered per request (re-dispatch prefers others) */
#define S_MAX_CAPACITY 1024  /* largest teacher capacity accepted from a HELLO */
#define S_LAT_MAX 100000     /* latency samples kept per report window */
#define S_MAX_TRAJ (1 << 20) /* largest batch request accepted (trajectories) */

/* ---------------------------------------------------------------- small containers */

typedef struct {
    void **p;
    int n, cap;
} s_vec_t;

static void s_vec_push(s_vec_t *v, void *x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->p = ap_realloc(v->p, (size_t)v->cap * sizeof *v->p);
    }
    v->p[v->n++] = x;
}

static int s_vec_find(const s_vec_t *v, const void *x) {
    for (int i = 0; i < v->n; i++)
        if (v->p[i] == x) return i;
    return -1;
}

static void s_vec_remove_at(s_vec_t *v, int i) { /* keeps the order */
    AP_ASSERT(i >= 0 && i < v->n);
    memmove(v->p + i, v->p + i + 1, (size_t)(v->n - i - 1) * sizeof *v->p);
    v->n--;
}

static void s_vec_remove(s_vec_t *v, const void *x) {
    int i = s_vec_find(v, x);
    AP_ASSERT(i >= 0);
    s_vec_remove_at(v, i);
}

/* ---------------------------------------------------------------- the state */

typedef struct s_peer {
    uint32_t pid;           /* unique within this buffer's life */
    int sock;               /* S_ACT, S_TEA, S_LRN */
    ap_peer_t addr;         /* routing id, ZAP user id */
    int32_t id;             /* HELLO id */
    char name[AP_NAME_MAX]; /* HELLO name */
    double last_seen;       /* ap_now() of the last message from it */
    double last_sent;       /* ap_now() of the last message to it */
    int dead;               /* unroutable: removed at the next sweep */
    /* actor */
    int src;          /* S_ON, or S_DS for a dataset source (HELLO name "dataset...") */
    int credit;       /* groups it may still send (granted, not yet received) */
    int owed;         /* credit withheld for lack of room, paid as room frees */
    uint64_t ack_seq; /* seq of its last group */
    uint64_t rejects; /* its malformed messages */
    /* teacher */
    ap_teacher_kind_t kind;
    int capacity;         /* requests it may hold */
    s_vec_t held;         /* request ids it holds (as (void *)(uintptr_t)id) */
    double last_dispatch; /* for least-recently-used choice */
} s_peer_t;

struct s_entry;

typedef struct s_req {
    uint64_t id;
    struct s_entry *e;
    int kind;
    int attempt;       /* attempt number of the newest dispatch */
    int dispatched;    /* dispatched at least once */
    double first_sent; /* ap_now() of the first dispatch (latency) */
    double deadline;   /* of the newest dispatch; 0 when none runs */
    uint32_t assignees[S_MAX_TRIED];
    int n_assignees; /* teachers holding it now */
    uint32_t tried[S_MAX_TRIED];
    int n_tried; /* teachers it was ever sent to */
    int queued;  /* in its kind's dispatch FIFO */
    struct s_req *qprev, *qnext;
} s_req_t;

typedef struct s_entry {
    ap_group_t *g;                         /* owned */
    ap_scores_t *scores[AP_TEACHER_COUNT]; /* owned, by kind */
    s_req_t *req[AP_TEACHER_COUNT];        /* request of each kind still missing */
    unsigned kinds;                        /* kinds it needs */
    unsigned need;                         /* kinds still missing */
    int src, state;
    int uses;        /* times served */
    uint64_t serial; /* arrival order */
} s_entry_t;

typedef struct {
    uint32_t pid; /* the learner peer */
    uint64_t request_id;
    int B;              /* trajectories */
    uint64_t max_bytes; /* largest part (0: no limit) */
    double t_in;        /* ap_now() at arrival */
} s_breq_t;

/* request id -> request: open addressing, linear probing, backward-shift deletion. */
typedef struct {
    s_req_t **slot;
    size_t cap, n; /* cap: a power of two */
} s_map_t;

struct ap_buffer {
    const ap_config_t *cfg;
    ap_net_t *net;
    struct ev_loop *loop;
    ap_sock_t *sock[S_NSOCK];
    ev_timer tick;
    ap_metrics_t *metrics;
    double report_interval, last_report, t_start;
    int V;
    uint64_t vhash;
    unsigned kinds;
    ap_teacher_params_t params[AP_TEACHER_COUNT];
    int G; /* sampling.group_size */
    double lambda;
    int sync;
    int capacity; /* per queue, groups */
    int last_B;   /* trajectories of the newest batch request (0 before any) */
    double hb, timeout;
    s_vec_t peers[S_NSOCK];
    uint32_t next_pid;
    int rr_actor; /* round-robin cursor over actors for paying credit */
    uint64_t first_req, next_req;
    s_map_t reqs;
    s_req_t *qhead[AP_TEACHER_COUNT], *qtail[AP_TEACHER_COUNT];
    s_vec_t pending[AP_SOURCE_COUNT], ready[AP_SOURCE_COUNT];
    int unserved_ready[AP_SOURCE_COUNT];
    long ds_ready_traj;               /* trajectories in ready[S_DS] */
    int outstanding[AP_SOURCE_COUNT]; /* credit held by actors of each source */
    int owed_total[AP_SOURCE_COUNT];
    s_breq_t *breq;
    int n_breq, cap_breq;
    uint64_t serial;
    ap_rng_t rng;
    ap_buffer_stats_t st;
    double *lat; /* teacher latencies (ms) since the last report */
    int n_lat;
    double wait_sum; /* batch waits (ms) since the last report */
    long wait_n;
    double wait_total_ms;
    ap_buffer_stats_t last; /* counters at the last report (rates) */
    ap_ratelimit_t rl;
    double last_no_teacher; /* ap_now() of the last "no teacher of a needed kind" warning */
    double last_wait_warn;  /* ap_now() of the last "a batch request waits long" warning */
    int stopped;
};

static const char *s_sock_role[S_NSOCK] = {"actor", "teacher", "learner"};

const char *ap_buffer_drop_name(ap_buffer_drop_t r) {
    static const char *n[AP_BUFFER_DROP_REASON_COUNT] = {"stale", "old_generation", "overflow",
                                                         "teacher_failed", "invalid"};
    return (unsigned)r < AP_BUFFER_DROP_REASON_COUNT ? n[r] : "?";
}

const char *ap_buffer_bad_name(ap_buffer_bad_t r) {
    static const char *n[AP_BUFFER_BAD_REASON_COUNT] = {
        "unknown_peer", "role",       "vocab",    "type",   "unknown_request",
        "unassigned",   "wrong_kind", "mismatch", "request"};
    return (unsigned)r < AP_BUFFER_BAD_REASON_COUNT ? n[r] : "?";
}

/* Count a semantic error and log it (rate-limited). */
static void s_bad(ap_buffer_t *b, ap_buffer_bad_t why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_bad(ap_buffer_t *b, ap_buffer_bad_t why, const char *fmt, ...) {
    b->st.bad[why]++;
    long sup = b->rl.suppressed;
    if (!ap_ratelimit_ok(&b->rl, 1.0)) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ap_log(AP_LOG_WARN, "buffer: %s: %s [%ld similar messages suppressed]", ap_buffer_bad_name(why),
           msg, sup);
}

/* ---------------------------------------------------------------- request map */

static size_t s_hash(uint64_t id) {
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id;
}

static void s_map_put(s_map_t *m, s_req_t *r);

static void s_map_grow(s_map_t *m) {
    s_req_t **old = m->slot;
    size_t oldcap = m->cap;
    m->cap = oldcap ? 2 * oldcap : 256;
    m->slot = ap_calloc(m->cap, sizeof *m->slot);
    m->n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i]) s_map_put(m, old[i]);
    free(old);
}

static void s_map_put(s_map_t *m, s_req_t *r) {
    if (2 * (m->n + 1) > m->cap) s_map_grow(m);
    size_t mask = m->cap - 1, i = s_hash(r->id) & mask;
    while (m->slot[i]) {
        AP_ASSERT(m->slot[i]->id != r->id);
        i = (i + 1) & mask;
    }
    m->slot[i] = r;
    m->n++;
}

static s_req_t *s_map_get(const s_map_t *m, uint64_t id) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1, i = s_hash(id) & mask;
    while (m->slot[i]) {
        if (m->slot[i]->id == id) return m->slot[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static void s_map_del(s_map_t *m, uint64_t id) {
    size_t mask = m->cap - 1, i = s_hash(id) & mask;
    while (m->slot[i] && m->slot[i]->id != id)
        i = (i + 1) & mask;
    AP_ASSERT(m->slot[i]);
    m->slot[i] = NULL;
    m->n--;
    /* backward shift: re-place the following cluster so probes never stop early */
    for (size_t j = (i + 1) & mask; m->slot[j]; j = (j + 1) & mask) {
        s_req_t *r = m->slot[j];
        m->slot[j] = NULL;
        m->n--;
        s_map_put(m, r);
    }
}

/* ---------------------------------------------------------------- peers */

static s_peer_t *s_peer_find(ap_buffer_t *b, int sock, const ap_peer_t *from) {
    s_vec_t *v = &b->peers[sock];
    for (int i = 0; i < v->n; i++) {
        s_peer_t *p = v->p[i];
        if (p->addr.rid_len == from->rid_len && !memcmp(p->addr.rid, from->rid, from->rid_len))
            return p;
    }
    return NULL;
}

static s_peer_t *s_peer_by_pid(ap_buffer_t *b, int sock, uint32_t pid) {
    s_vec_t *v = &b->peers[sock];
    for (int i = 0; i < v->n; i++)
        if (((s_peer_t *)v->p[i])->pid == pid) return v->p[i];
    return NULL;
}

/* Send to a peer; an unroutable peer is marked dead (removed at the next sweep). 0 / -1. */
static int s_send(ap_buffer_t *b, s_peer_t *p, const ap_msg_t *m) {
    if (p->dead) return -1;
    if (ap_sock_send(b->sock[p->sock], &p->addr, m) < 0) {
        if (errno == EHOSTUNREACH) {
            p->dead = 1;
        } else if (errno == EINVAL) {
            AP_ASSERTF(0, "buffer: encoding %s: %s", ap_msg_type_name(m->type), ap_errmsg());
        }
        return -1;
    }
    p->last_sent = ap_now();
    return 0;
}

static void s_send_reset(ap_buffer_t *b, int sock, const ap_peer_t *to, const char *reason) {
    ap_msg_t m = {.type = AP_MSG_RESET};
    snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "%s", reason);
    ap_sock_send(b->sock[sock], to, &m); /* best effort: the peer may be gone */
}

static void s_credit_add(ap_buffer_t *b, s_peer_t *p, int delta) {
    p->credit += delta;
    b->outstanding[p->src] += delta;
    AP_ASSERT(p->credit >= 0);
}

static void s_owed_add(ap_buffer_t *b, s_peer_t *p, int delta) {
    p->owed += delta;
    b->owed_total[p->src] += delta;
    AP_ASSERT(p->owed >= 0);
}

/* ---------------------------------------------------------------- entries and requests */

static void s_unqueue(ap_buffer_t *b, s_req_t *r) {
    if (!r->queued) return;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        b->qhead[r->kind] = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        b->qtail[r->kind] = r->qprev;
    r->qprev = r->qnext = NULL;
    r->queued = 0;
}

static void s_queue(ap_buffer_t *b, s_req_t *r, int front) {
    AP_ASSERT(!r->queued);
    int k = r->kind;
    if (front) {
        r->qnext = b->qhead[k];
        if (b->qhead[k])
            b->qhead[k]->qprev = r;
        else
            b->qtail[k] = r;
        b->qhead[k] = r;
    } else {
        r->qprev = b->qtail[k];
        if (b->qtail[k])
            b->qtail[k]->qnext = r;
        else
            b->qhead[k] = r;
        b->qtail[k] = r;
    }
    r->queued = 1;
}

/* Forget a request (answered, or its group dropped): teachers still holding it will answer
 * late; their slots free when they do, or when they die. */
static void s_req_free(ap_buffer_t *b, s_req_t *r) {
    s_unqueue(b, r);
    s_map_del(&b->reqs, r->id);
    r->e->req[r->kind] = NULL;
    free(r);
}

static void s_entry_free(ap_buffer_t *b, s_entry_t *e) {
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        if (e->req[k]) s_req_free(b, e->req[k]);
        ap_scores_destroy(&e->scores[k]);
    }
    ap_group_destroy(&e->g);
    free(e);
}

/* Take e out of its queue and free it: a drop (counted by reason) when it was never served,
 * else a retirement. */
static void s_entry_remove(ap_buffer_t *b, s_entry_t *e, ap_buffer_drop_t why) {
    if (e->state == S_PENDING) {
        s_vec_remove(&b->pending[e->src], e);
    } else {
        s_vec_remove(&b->ready[e->src], e);
        if (e->uses == 0) b->unserved_ready[e->src]--;
        if (e->src == S_DS) b->ds_ready_traj -= e->g->G;
    }
    if (e->uses == 0) {
        b->st.drops[why]++;
        b->st.drops_total++;
    } else {
        b->st.retired++;
    }
    s_entry_free(b, e);
}

/* Is an on-policy group of version v fresh against the learner's version? 1, or 0 and *why. */
static int s_fresh(const ap_buffer_t *b, ap_version_t v, ap_buffer_drop_t *why) {
    ap_version_t L = b->st.learner_version;
    if (ap_version_is_zero(L) || v.gen > L.gen) return 1;
    if (v.gen < L.gen) {
        *why = AP_BUFFER_DROP_OLD_GENERATION;
        return 0;
    }
    uint64_t limit = b->sync ? 0 : (uint64_t)b->cfg->buffer.max_staleness;
    if (L.step > v.step && L.step - v.step > limit) {
        *why = AP_BUFFER_DROP_STALE;
        return 0;
    }
    return 1;
}

/* Drop every on-policy group the learner's version has made stale. */
static void s_expire_stale(ap_buffer_t *b) {
    s_vec_t *qs[2] = {&b->pending[S_ON], &b->ready[S_ON]};
    for (int q = 0; q < 2; q++)
        for (int i = qs[q]->n - 1; i >= 0; i--) {
            s_entry_t *e = qs[q]->p[i];
            ap_buffer_drop_t why;
            if (!s_fresh(b, e->g->version, &why)) s_entry_remove(b, e, why);
        }
}

/* Room for one more ready group of source src: evict the oldest served group, else drop the
 * oldest unserved one (overflow). */
static void s_ready_room(ap_buffer_t *b, int src) {
    s_vec_t *v = &b->ready[src];
    while (v->n >= b->capacity) {
        s_entry_t *victim = NULL;
        for (int i = 0; i < v->n && !victim; i++)
            if (((s_entry_t *)v->p[i])->uses > 0) victim = v->p[i];
        s_entry_remove(b, victim ? victim : v->p[0], AP_BUFFER_DROP_OVERFLOW);
    }
}

static void s_make_ready(ap_buffer_t *b, s_entry_t *e) {
    AP_ASSERT(e->state == S_PENDING && e->need == 0);
    s_vec_remove(&b->pending[e->src], e);
    s_ready_room(b, e->src);
    e->state = S_READY;
    s_vec_push(&b->ready[e->src], e);
    b->unserved_ready[e->src]++;
    if (e->src == S_DS) b->ds_ready_traj += e->g->G;
}

/* A failed attempt (deadline passed, teacher gone, unusable answer): re-dispatch to the front of
 * the queue with attempt + 1, or give up on the group after 1 + max_retries dispatches.
 * `deadline`: the newest dispatch's deadline passed (re-dispatch even though a teacher still
 * holds it: the first answer wins); otherwise wait while another teacher still holds it. */
static void s_retry(ap_buffer_t *b, s_req_t *r, int deadline) {
    if (r->queued) return;
    if (!deadline && r->n_assignees > 0) return; /* another dispatch is still running */
    r->deadline = 0;
    if (r->attempt >= b->cfg->buffer.max_retries) {
        ap_log(AP_LOG_WARN, "buffer: group %llu: no usable %s score after %d dispatches: dropped",
               (unsigned long long)r->e->g->id, ap_teacher_kind_name((ap_teacher_kind_t)r->kind),
               r->attempt + 1);
        s_entry_remove(b, r->e, AP_BUFFER_DROP_TEACHER_FAILED);
        return;
    }
    r->attempt++;
    s_queue(b, r, 1);
}

static void s_remove_assignee(s_req_t *r, uint32_t pid) {
    for (int i = 0; i < r->n_assignees; i++)
        if (r->assignees[i] == pid) {
            r->assignees[i] = r->assignees[--r->n_assignees];
            return;
        }
}

/* Forget a peer: a teacher's held requests are re-dispatched, a learner's batch requests
 * dropped, an actor's credit returned to the pool. */
static void s_peer_remove(ap_buffer_t *b, s_peer_t *p, const char *why) {
    ap_log(AP_LOG_INFO, "buffer: %s '%s' (id %d) %s", s_sock_role[p->sock], p->name, p->id, why);
    s_vec_remove(&b->peers[p->sock], p);
    if (p->sock == S_TEA) {
        for (int i = 0; i < p->held.n; i++) {
            s_req_t *r = s_map_get(&b->reqs, (uint64_t)(uintptr_t)p->held.p[i]);
            if (!r) continue;
            s_remove_assignee(r, p->pid);
            s_retry(b, r, 0);
        }
        free(p->held.p);
    } else if (p->sock == S_ACT) {
        s_credit_add(b, p, -p->credit);
        s_owed_add(b, p, -p->owed);
    } else {
        int w = 0;
        for (int i = 0; i < b->n_breq; i++)
            if (b->breq[i].pid != p->pid) b->breq[w++] = b->breq[i];
        b->n_breq = w;
    }
    free(p);
}

/* Remove peers found unroutable. Returns how many. */
static int s_sweep(ap_buffer_t *b) {
    int n = 0;
    for (int s = 0; s < S_NSOCK; s++)
        for (int i = b->peers[s].n - 1; i >= 0; i--) {
            s_peer_t *p = b->peers[s].p[i];
            if (!p->dead) continue;
            if (p->sock == S_TEA) b->st.teachers_expired++;
            s_peer_remove(b, p, "is unroutable (gone): forgotten");
            n++;
        }
    return n;
}

/* ---------------------------------------------------------------- teachers */

/* The teacher of kind k to send r to: free capacity, preferring one r was never sent to, then
 * the most free slots, then the least recently used. NULL when none has capacity. */
static s_peer_t *s_pick_teacher(ap_buffer_t *b, int k, const s_req_t *r) {
    s_peer_t *best = NULL;
    int best_fresh = 0, best_free = 0;
    s_vec_t *v = &b->peers[S_TEA];
    for (int i = 0; i < v->n; i++) {
        s_peer_t *t = v->p[i];
        int free_ = t->capacity - t->held.n;
        if ((int)t->kind != k || t->dead || free_ <= 0) continue;
        int fresh = 1;
        for (int j = 0; j < r->n_tried; j++)
            if (r->tried[j] == t->pid) fresh = 0;
        if (!best || fresh > best_fresh ||
            (fresh == best_fresh &&
             (free_ > best_free ||
              (free_ == best_free && t->last_dispatch < best->last_dispatch)))) {
            best = t, best_fresh = fresh, best_free = free_;
        }
    }
    return best;
}

static void s_dispatch(ap_buffer_t *b) {
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        while (b->qhead[k]) {
            s_req_t *r = b->qhead[k];
            s_peer_t *t = s_pick_teacher(b, k, r);
            if (!t) break;
            const ap_teacher_params_t *p = &b->params[k];
            ap_msg_t m = {.type = AP_MSG_SCORE_REQUEST,
                          .u.score_request = {.request_id = r->id,
                                              .attempt = (uint32_t)r->attempt,
                                              .kind = (ap_teacher_kind_t)k,
                                              .top_k = p->full ? 0 : p->top_k,
                                              .full = p->full,
                                              .temperature = p->temperature,
                                              .group = r->e->g}};
            if (s_send(b, t, &m) < 0) {
                if (t->dead) continue; /* unroutable: try another teacher */
                break;                 /* EAGAIN: the tick retries */
            }
            s_unqueue(b, r);
            s_vec_push(&t->held, (void *)(uintptr_t)r->id);
            t->last_dispatch = ap_now();
            if (r->n_assignees < S_MAX_TRIED) r->assignees[r->n_assignees++] = t->pid;
            if (r->n_tried < S_MAX_TRIED) r->tried[r->n_tried++] = t->pid;
            if (!r->dispatched) r->first_sent = t->last_dispatch;
            r->dispatched = 1;
            r->deadline = t->last_dispatch + b->timeout;
            b->st.score_requests++;
            b->st.redispatched += r->attempt > 0;
        }
    }
}

/* Does s answer r as asked? 0, or -1 with the reason in msg. */
static int s_check_answer(ap_buffer_t *b, const s_req_t *r, const ap_scores_t *s, char *msg,
                          size_t cap) {
    const ap_group_t *g = r->e->g;
    const ap_teacher_params_t *p = &b->params[r->kind];
    if (ap_msg_scores_match(s, g) < 0) return snprintf(msg, cap, "%s", ap_errmsg()), -1;
    if (b->V > 0 && s->vocab_size != b->V)
        return snprintf(msg, cap, "V %d, the run's %d", s->vocab_size, b->V), -1;
    if (s->full != p->full || (!p->full && s->K != p->top_k))
        return snprintf(msg, cap, "%s K %d, asked %s K %d", s->full ? "full" : "top-K", s->K,
                        p->full ? "full" : "top-K", p->top_k),
               -1;
    if (fabsf(s->temperature - p->temperature) > 1e-6f * fabsf(p->temperature))
        return snprintf(msg, cap, "temperature %g, asked %g", (double)s->temperature,
                        (double)p->temperature),
               -1;
    if (r->kind == AP_TEACHER_SELF)
        for (int i = 0; i < g->G; i++)
            if (s->present[i] && !ap_group_has_ctx(g, i))
                return snprintf(msg, cap, "trajectory %d has no context but is present", i), -1;
    return 0;
}

/* A teacher's answer: first usable answer wins (taken from *sp), anything else is counted. */
static void s_on_scores(ap_buffer_t *b, s_peer_t *t, ap_scores_t **sp) {
    const ap_scores_t *s = *sp;
    uint64_t id = s->request_id;
    int slot = s_vec_find(&t->held, (void *)(uintptr_t)id);
    s_req_t *r = s_map_get(&b->reqs, id);
    if (slot < 0) {
        if (id >= b->first_req && id < b->next_req)
            s_bad(b, AP_BUFFER_BAD_UNASSIGNED,
                  "teacher '%s' answered request %llu it does not hold", t->name,
                  (unsigned long long)id);
        else
            s_bad(b, AP_BUFFER_BAD_UNKNOWN_REQUEST,
                  "teacher '%s' answered request %llu never issued", t->name,
                  (unsigned long long)id);
        return;
    }
    s_vec_remove_at(&t->held, slot); /* the teacher's slot is free again */
    if (!r) {                        /* answered by another teacher first, or its group left */
        b->st.late_answers++;
        return;
    }
    s_remove_assignee(r, t->pid);
    char why[256];
    if ((int)s->kind != r->kind) {
        s_bad(b, AP_BUFFER_BAD_WRONG_KIND,
              "teacher '%s' answered request %llu with %s scores, %s asked", t->name,
              (unsigned long long)id, ap_teacher_kind_name(s->kind),
              ap_teacher_kind_name((ap_teacher_kind_t)r->kind));
        s_retry(b, r, 0);
        return;
    }
    if (s_check_answer(b, r, s, why, sizeof why) < 0) {
        s_bad(b, AP_BUFFER_BAD_MISMATCH, "teacher '%s', request %llu (group %llu): %s", t->name,
              (unsigned long long)id, (unsigned long long)r->e->g->id, why);
        s_retry(b, r, 0);
        return;
    }
    if (b->n_lat < S_LAT_MAX) {
        if (!b->lat) b->lat = ap_malloc(S_LAT_MAX * sizeof *b->lat);
        b->lat[b->n_lat++] = (ap_now() - r->first_sent) * 1e3;
    }
    s_entry_t *e = r->e;
    e->scores[r->kind] = *sp;
    *sp = NULL;
    e->need &= ~(1u << r->kind);
    b->st.answers++;
    s_req_free(b, r);
    if (e->need == 0) s_make_ready(b, e);
}

/* ---------------------------------------------------------------- actors: intake and credit */

static void s_take_group(ap_buffer_t *b, s_peer_t *a, ap_group_t *g, uint64_t seq) {
    a->ack_seq = seq;
    if (a->credit > 0) {
        s_credit_add(b, a, -1);
        /* the credit comes back when there is room, except in sync mode (there the waiting
         * batch requests decide what is granted) */
        if (!b->sync) s_owed_add(b, a, 1);
    } else {
        b->st.over_credit++; /* taken, but earns no credit back */
    }
    int src = g->source;
    b->st.groups_in++;
    b->st.groups_in_source[src]++;
    s_entry_t *e = ap_calloc(1, sizeof *e);
    e->g = g;
    e->src = src;
    e->serial = ++b->serial;
    e->state = S_PENDING;
    e->kinds = src == S_ON ? b->kinds : (b->kinds & (1u << AP_TEACHER_EXTERNAL));
    e->need = e->kinds;
    s_vec_push(&b->pending[src], e);
    ap_buffer_drop_t why;
    if (src == S_ON && g->G != b->G) {
        s_bad(b, AP_BUFFER_BAD_MISMATCH,
              "actor '%s': on-policy group %llu has G = %d, the run's %d", a->name,
              (unsigned long long)g->id, g->G, b->G);
        s_entry_remove(b, e, AP_BUFFER_DROP_INVALID);
        return;
    }
    if (src == S_ON && !s_fresh(b, g->version, &why)) {
        s_entry_remove(b, e, why);
        return;
    }
    /* a client ignoring credit: the oldest pending group goes */
    while (b->pending[src].n > b->capacity)
        s_entry_remove(b, b->pending[src].p[0], AP_BUFFER_DROP_OVERFLOW);
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        if (!(e->kinds & (1u << k))) continue;
        s_req_t *r = ap_calloc(1, sizeof *r);
        r->id = b->next_req++;
        r->e = e;
        r->kind = k;
        e->req[k] = r;
        s_map_put(&b->reqs, r);
        s_queue(b, r, 0);
    }
    if (e->need == 0) s_make_ready(b, e);
}

/* Trajectories in a dataset group: gold data has one completion per prompt, teacher-written data
 * a whole group (DESIGN.md, actor). */
static int s_ds_G(const ap_buffer_t *b) {
    return b->cfg->actors.dataset_source == AP_DATASET_GOLD ? 1 : b->G;
}

/* Groups of source `src` the buffer lets actors hold ahead of the learner (queued, scored and
 * waiting, or credited): the batches the learner has in flight (learner.prefetch) plus one being
 * made, at most max_staleness + 1 batches, never more than the queue capacity. More would be
 * sampled only to go stale (measured: with 6 batches of lead, 35% of all groups were dropped as
 * stale), and on 2 cores the CPU spent on them is taken from the learner and the teachers. */
static int s_lead(const ap_buffer_t *b, int src) {
    int B = b->last_B > 0 ? b->last_B : b->cfg->batch.size;
    int n_on = (int)floor(b->lambda * B / b->G + 1e-9);
    int per_batch = src == S_ON ? n_on : (B - b->G * n_on + s_ds_G(b) - 1) / s_ds_G(b);
    int batches = AP_MIN(b->cfg->learner.prefetch + 1, b->cfg->buffer.max_staleness + 1);
    long lead = (long)AP_MAX(batches, 1) * AP_MAX(per_batch, 1);
    return (int)AP_MIN(lead, (long)b->capacity);
}

/* Credit for actors: pay what is owed where there is room (round-robin); in sync mode give
 * on-policy actors what the waiting batch requests still lack. Sends CREDIT to every actor
 * granted something, and to `force` (the answer to its HELLO or GROUP) in any case. */
static void s_grant(ap_buffer_t *b, s_peer_t *force) {
    s_vec_t *v = &b->peers[S_ACT];
    if (!v->n) return;
    int give[AP_SOURCE_COUNT];
    for (int src = 0; src < AP_SOURCE_COUNT; src++) {
        int held = b->pending[src].n + b->unserved_ready[src] + b->outstanding[src];
        int want = b->owed_total[src];
        if (b->sync) { /* what the waiting batch requests still lack, in groups of G */
            int need = 0;
            for (int i = 0; i < b->n_breq; i++) {
                int n_on = (int)floor(b->lambda * b->breq[i].B / b->G + 1e-9);
                int rem = b->breq[i].B - b->G * n_on;
                need += src == S_ON ? n_on : (rem + s_ds_G(b) - 1) / s_ds_G(b);
            }
            want = need - held;
        }
        give[src] = AP_MIN(s_lead(b, src) - held, want);
    }
    if (give[S_ON] <= 0 && give[S_DS] <= 0 && !force) return; /* the common case: nothing */
    int *grant = ap_calloc((size_t)v->n, sizeof *grant);
    for (int src = 0; src < AP_SOURCE_COUNT; src++) {
        int sync_on = b->sync;
        /* one credit per eligible actor per pass, from a cursor that keeps turning */
        for (int idle = 0; give[src] > 0 && idle < v->n;) {
            int i = b->rr_actor % v->n; /* actors may have left since the cursor moved */
            b->rr_actor = (i + 1) % v->n;
            s_peer_t *a = v->p[i];
            if (a->src != src || a->dead || (!sync_on && a->owed == 0)) {
                idle++;
                continue;
            }
            if (!sync_on) s_owed_add(b, a, -1);
            s_credit_add(b, a, 1);
            grant[i]++;
            give[src]--;
            idle = 0;
        }
    }
    for (int i = 0; i < v->n; i++) {
        s_peer_t *a = v->p[i];
        if (!grant[i] && a != force) continue;
        ap_msg_t m = {.type = AP_MSG_CREDIT,
                      .u.credit = {.grant = (uint32_t)grant[i],
                                   .ack_seq = a->ack_seq,
                                   .latest = b->st.learner_version}};
        s_send(b, a, &m);
    }
    free(grant);
}

/* ---------------------------------------------------------------- the learner: batches */

/* The first r trajectories of g (a trimmed dataset group). */
static ap_group_t *s_group_head(const ap_group_t *g, int r) {
    int *len = ap_malloc((size_t)r * sizeof *len), *ctx = ap_malloc((size_t)r * sizeof *ctx);
    for (int i = 0; i < r; i++) {
        len[i] = g->offset[i + 1] - g->offset[i];
        ctx[i] = g->ctx_offset[i + 1] - g->ctx_offset[i];
    }
    ap_group_t *h = ap_group_new(r, g->n_prompt, len, ctx);
    free(len), free(ctx);
    h->id = g->id, h->source = g->source, h->version = g->version, h->actor_id = g->actor_id;
    h->item_id = g->item_id, h->temperature = g->temperature;
    ap_group_set_prompt_text(h, g->prompt_text);
    memcpy(h->prompt, g->prompt, (size_t)g->n_prompt * sizeof *h->prompt);
    memcpy(h->tokens, g->tokens, (size_t)h->n_tokens * sizeof *h->tokens);
    memcpy(h->logprobs, g->logprobs, (size_t)h->n_tokens * sizeof *h->logprobs);
    memcpy(h->reward, g->reward, (size_t)r * sizeof *h->reward);
    memcpy(h->correct, g->correct, (size_t)r);
    memcpy(h->finish, g->finish, (size_t)r);
    memcpy(h->ctx_tokens, g->ctx_tokens, (size_t)h->n_ctx * sizeof *h->ctx_tokens);
    for (int i = 0; i < r; i++)
        ap_group_set_feedback(h, i, g->feedback[i]);
    return h;
}

static ap_scores_t *s_scores_head(const ap_scores_t *s, int r) {
    ap_scores_t *h = ap_scores_new(r, s->offset, s->K, s->full, s->vocab_size);
    h->request_id = s->request_id, h->group_id = s->group_id, h->kind = s->kind;
    h->version = s->version, h->temperature = s->temperature;
    size_t n = (size_t)h->n_tokens, nk = n * (size_t)s->K;
    memcpy(h->present, s->present, (size_t)r);
    memcpy(h->sampled, s->sampled, n * sizeof *h->sampled);
    if (!s->full) memcpy(h->ids, s->ids, nk * sizeof *h->ids);
    memcpy(h->logprobs, s->logprobs, nk * sizeof *h->logprobs);
    return h;
}

/* An upper bound of an item's encoded size, in O(G): every varint counted at 5 bytes, strings at
 * their length + 5, 64 bytes per message of fixed fields. Exact sizes would cost a pass over
 * every float (measured: get_packed_size was 7% of the buffer benchmark's time). */
static size_t s_item_bytes(const ap_batch_item_t *it) {
    const ap_group_t *g = it->group;
    size_t n = 128 + 5 * (size_t)g->n_prompt + 9 * (size_t)g->n_tokens + 5 * (size_t)g->n_ctx +
               30 * (size_t)g->G + strlen(g->prompt_text) + 5;
    for (int i = 0; i < g->G; i++)
        n += strlen(g->feedback[i]) + 5;
    for (int k = 0; k < it->n_scores; k++) {
        const ap_scores_t *s = it->scores[k];
        n += 64 + 12 * (size_t)s->G + 9 * (size_t)s->n_tokens +
             (size_t)s->n_tokens * (size_t)s->K * (s->full ? 4 : 9);
    }
    return n;
}

/* Point item `it` at entry e's group and scores (borrowed; scores_buf has AP_TEACHER_COUNT
 * slots). */
static void s_fill_item(ap_batch_item_t *it, ap_scores_t **scores_buf, const s_entry_t *e) {
    it->group = e->g;
    it->scores = scores_buf;
    it->n_scores = 0;
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        if (e->scores[k]) it->scores[it->n_scores++] = e->scores[k];
}

/* Compose and send the answer to batch request q, if the queues allow: 1 sent (or the request
 * was dropped), 0 not yet. */
static int s_serve_one(ap_buffer_t *b, const s_breq_t *q) {
    s_peer_t *L = s_peer_by_pid(b, S_LRN, q->pid);
    if (!L || L->dead) return 1; /* its learner is gone: drop it */
    int n_on = (int)floor(b->lambda * q->B / b->G + 1e-9);
    int rem = q->B - b->G * n_on;
    if (b->ready[S_ON].n < n_on || b->ds_ready_traj < rem) return 0;
    /* choose the on-policy groups */
    int n_items = n_on, n_ds = 0;
    s_entry_t **on = ap_malloc((size_t)AP_MAX(n_on, 1) * sizeof *on);
    s_vec_t *R = &b->ready[S_ON];
    if (b->cfg->buffer.reuse_order == AP_REUSE_UNIFORM) {
        int *idx = ap_malloc((size_t)R->n * sizeof *idx);
        for (int i = 0; i < R->n; i++)
            idx[i] = i;
        for (int i = 0; i < n_on; i++) { /* partial Fisher-Yates */
            int j = i + (int)ap_rng_below(&b->rng, (uint64_t)(R->n - i));
            int t = idx[i];
            idx[i] = idx[j], idx[j] = t;
            on[i] = R->p[idx[i]];
        }
        free(idx);
    } else {
        for (int i = 0; i < n_on; i++)
            on[i] = R->p[R->n - 1 - i]; /* newest first */
    }
    /* the dataset groups, oldest first, the last one trimmed */
    s_vec_t *D = &b->ready[S_DS];
    int need = rem, trim = 0, trim_left = 0;
    while (need > 0) {
        s_entry_t *e = D->p[n_ds++];
        trim = need < e->g->G ? need : 0;
        trim_left = trim ? e->g->G - trim : 0;
        need -= trim ? trim : e->g->G;
    }
    n_items += n_ds;
    ap_batch_item_t *items = ap_calloc((size_t)AP_MAX(n_items, 1), sizeof *items);
    ap_scores_t **sbuf = ap_calloc((size_t)AP_MAX(n_items, 1) * AP_TEACHER_COUNT, sizeof *sbuf);
    ap_group_t *tg = NULL;
    ap_scores_t *ts[AP_TEACHER_COUNT] = {0};
    for (int i = 0; i < n_on; i++)
        s_fill_item(&items[i], sbuf + (size_t)i * AP_TEACHER_COUNT, on[i]);
    for (int i = 0; i < n_ds; i++) {
        ap_batch_item_t *it = &items[n_on + i];
        const s_entry_t *e = D->p[i];
        s_fill_item(it, sbuf + (size_t)(n_on + i) * AP_TEACHER_COUNT, e);
        if (i == n_ds - 1 && trim) {
            it->group = tg = s_group_head(e->g, trim);
            for (int k = 0; k < it->n_scores; k++)
                it->scores[k] = ts[k] = s_scores_head(it->scores[k], trim);
        }
    }
    /* parts within max_bytes (by an upper bound of each item's size): items in order, each part
     * as full as the bound allows */
    int *part_of = ap_malloc((size_t)AP_MAX(n_items, 1) * sizeof *part_of), parts = 1;
    if (q->max_bytes > 0) {
        size_t used = 0;
        for (int i = 0; i < n_items; i++) {
            size_t sz = s_item_bytes(&items[i]);
            if (used > 0 && used + sz > q->max_bytes) parts++, used = 0;
            used += sz;
            part_of[i] = parts - 1;
        }
    } else {
        for (int i = 0; i < n_items; i++)
            part_of[i] = 0;
    }
    int sent = 0, ok = 1;
    for (int p = 0, i0 = 0; p < parts && ok; p++) {
        int i1 = i0;
        while (i1 < n_items && part_of[i1] == p)
            i1++;
        ap_batch_t bt = {.request_id = q->request_id,
                         .part = p,
                         .parts = parts,
                         .n_items = i1 - i0,
                         .items = items + i0};
        ap_msg_t m = {.type = AP_MSG_BATCH, .u.batch = &bt};
        if (s_send(b, L, &m) < 0) {
            ok = 0;
            if (p > 0)
                ap_log(AP_LOG_ERROR,
                       "buffer: batch %llu: part %d of %d not sent (%s): the learner "
                       "gets an incomplete batch",
                       (unsigned long long)q->request_id, p, parts,
                       L->dead ? "learner gone" : "its queue is full");
        } else {
            b->st.batch_parts++;
            sent++;
        }
        i0 = i1;
    }
    ap_group_destroy(&tg);
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        ap_scores_destroy(&ts[k]);
    free(part_of), free(sbuf), free(items);
    if (sent == 0) { /* nothing left: keep the request (learner gone: dropped at the sweep) */
        free(on);
        return L->dead ? 1 : 0;
    }
    /* commit: count the serves, retire what reached max_reuse, rotate served dataset groups */
    s_entry_t **ds = ap_malloc((size_t)AP_MAX(n_ds, 1) * sizeof *ds);
    for (int i = 0; i < n_ds; i++)
        ds[i] = D->p[i];
    for (int i = 0; i < n_items; i++) {
        s_entry_t *e = i < n_on ? on[i] : ds[i - n_on];
        if (e->uses == 0) {
            b->st.served_first++;
            b->unserved_ready[e->src]--;
        } else {
            b->st.reuses++;
        }
        e->uses++;
        b->st.serves++;
        if (e->uses >= b->cfg->buffer.max_reuse) {
            s_entry_remove(b, e, AP_BUFFER_DROP_OVERFLOW); /* uses > 0: retired, not a drop */
        } else if (e->src == S_DS) {
            s_vec_remove(D, e);
            s_vec_push(D, e);
        }
    }
    free(ds), free(on);
    b->st.batches++;
    b->st.trajectories_out += (uint64_t)q->B;
    b->st.trimmed += (uint64_t)trim_left;
    double w = (ap_now() - q->t_in) * 1e3;
    b->wait_sum += w, b->wait_n++, b->wait_total_ms += w;
    return 1;
}

static void s_serve(ap_buffer_t *b) {
    while (b->n_breq > 0 && s_serve_one(b, &b->breq[0])) {
        memmove(b->breq, b->breq + 1, (size_t)(b->n_breq - 1) * sizeof *b->breq);
        b->n_breq--;
    }
}

static void s_kick(ap_buffer_t *b, s_peer_t *force) {
    if (b->stopped) return;
    if (force && force->dead) force = NULL; /* the sweep below would free it */
    for (int round = 0; round < 3; round++) {
        s_sweep(b);
        s_dispatch(b);
        s_serve(b);
        s_grant(b, force);
        force = NULL;
        int dead = 0;
        for (int s = 0; s < S_NSOCK && !dead; s++)
            for (int i = 0; i < b->peers[s].n && !dead; i++)
                dead = ((s_peer_t *)b->peers[s].p[i])->dead;
        if (!dead) break;
    }
}

/* ---------------------------------------------------------------- messages */

static const ap_role_t s_sock_hello_role[S_NSOCK] = {AP_ROLE_ACTOR, AP_ROLE_TEACHER,
                                                     AP_ROLE_LEARNER};

static void s_on_hello(ap_buffer_t *b, int sock, const ap_peer_t *from, const ap_hello_t *h) {
    if (h->role != s_sock_hello_role[sock]) {
        s_bad(b, AP_BUFFER_BAD_ROLE, "HELLO from '%s' with role %d on the %s socket", h->name,
              (int)h->role, s_sock_role[sock]);
        s_send_reset(b, sock, from, "wrong role for this endpoint");
        return;
    }
    if ((b->V > 0 && h->vocab_size > 0 && h->vocab_size != b->V) ||
        (b->vhash && h->vocab_hash && h->vocab_hash != b->vhash)) {
        char reason[AP_NAME_MAX];
        snprintf(reason, sizeof reason, "vocab mismatch: V %d hash %016llx", b->V,
                 (unsigned long long)b->vhash);
        s_bad(b, AP_BUFFER_BAD_VOCAB,
              "%s '%s' has V %d hash %016llx; the student's V %d hash %016llx", s_sock_role[sock],
              h->name, h->vocab_size, (unsigned long long)h->vocab_hash, b->V,
              (unsigned long long)b->vhash);
        s_send_reset(b, sock, from, reason);
        return;
    }
    s_peer_t *p = s_peer_find(b, sock, from);
    if (p) s_peer_remove(b, p, "said HELLO again: starts afresh"); /* its work is re-queued */
    p = ap_calloc(1, sizeof *p);
    p->pid = ++b->next_pid;
    p->sock = sock;
    p->addr = *from;
    p->id = h->id;
    snprintf(p->name, sizeof p->name, "%s", h->name);
    p->last_seen = p->last_sent = ap_now();
    s_vec_push(&b->peers[sock], p);
    if (sock == S_ACT) {
        p->src = !strncmp(h->name, "dataset", 7) ? S_DS : S_ON;
        if (!b->sync) s_owed_add(b, p, b->cfg->buffer.actor_credit);
    } else if (sock == S_TEA) {
        p->kind = h->kind;
        p->capacity = h->capacity > 0 ? (int)AP_MIN(h->capacity, S_MAX_CAPACITY)
                                      : b->cfg->buffer.teacher_credit;
        if (!(b->kinds & (1u << h->kind)))
            ap_log(AP_LOG_WARN, "buffer: teacher '%s' serves kind %s, which this run does not use",
                   h->name, ap_teacher_kind_name(h->kind));
    }
    ap_log(AP_LOG_INFO, "buffer: %s '%s' (id %d) registered", s_sock_role[sock], p->name, p->id);
    s_kick(b, sock == S_ACT ? p : NULL);
}

/* Common handling; returns the known peer (last_seen refreshed) or NULL (handled). */
static s_peer_t *s_common(ap_buffer_t *b, int sock, const ap_peer_t *from, ap_msg_t *m) {
    if (b->stopped) return NULL;
    if (m->type == AP_MSG_HELLO) {
        s_on_hello(b, sock, from, &m->u.hello);
        return NULL;
    }
    s_peer_t *p = s_peer_find(b, sock, from);
    if (!p) {
        if (m->type != AP_MSG_BYE) {
            s_bad(b, AP_BUFFER_BAD_UNKNOWN_PEER, "%s from an unknown %s: RESET",
                  ap_msg_type_name(m->type), s_sock_role[sock]);
            s_send_reset(b, sock, from, "unknown peer: HELLO again");
        }
        return NULL;
    }
    p->last_seen = ap_now();
    if (m->type == AP_MSG_HEARTBEAT) return NULL;
    if (m->type == AP_MSG_BYE) {
        s_peer_remove(b, p, "left (BYE)");
        s_kick(b, NULL);
        return NULL;
    }
    return p;
}

static void s_on_actor_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s;
    ap_buffer_t *b = data;
    s_peer_t *a = s_common(b, S_ACT, from, m);
    if (!a) return;
    if (m->type != AP_MSG_GROUP) {
        s_bad(b, AP_BUFFER_BAD_TYPE, "%s from actor '%s'", ap_msg_type_name(m->type), a->name);
        return;
    }
    ap_group_t *g = m->u.group;
    m->u.group = NULL;
    s_take_group(b, a, g, m->seq);
    s_kick(b, a);
}

static void s_on_teacher_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s;
    ap_buffer_t *b = data;
    s_peer_t *t = s_common(b, S_TEA, from, m);
    if (!t) return;
    if (m->type != AP_MSG_SCORES) {
        s_bad(b, AP_BUFFER_BAD_TYPE, "%s from teacher '%s'", ap_msg_type_name(m->type), t->name);
        return;
    }
    s_on_scores(b, t, &m->u.scores);
    s_kick(b, NULL);
}

static void s_on_learner_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s;
    ap_buffer_t *b = data;
    s_peer_t *L = s_common(b, S_LRN, from, m);
    if (!L) return;
    if (m->type != AP_MSG_BATCH_REQUEST) {
        s_bad(b, AP_BUFFER_BAD_TYPE, "%s from learner '%s'", ap_msg_type_name(m->type), L->name);
        return;
    }
    const ap_batch_request_t *q = &m->u.batch_request;
    int n_on = q->trajectories > 0 ? (int)floor(b->lambda * q->trajectories / b->G + 1e-9) : 0;
    if (q->trajectories < 1 || q->trajectories > S_MAX_TRAJ || n_on > b->capacity) {
        s_bad(b, AP_BUFFER_BAD_REQUEST,
              "batch request %llu for %d trajectories: needs %d "
              "on-policy groups, the queue holds %d",
              (unsigned long long)q->request_id, q->trajectories, n_on, b->capacity);
        return;
    }
    for (int i = 0; i < b->n_breq; i++)
        if (b->breq[i].pid == L->pid && b->breq[i].request_id == q->request_id) {
            s_bad(b, AP_BUFFER_BAD_REQUEST, "batch request %llu repeated",
                  (unsigned long long)q->request_id);
            return;
        }
    if (ap_version_cmp(q->learner_version, b->st.learner_version) > 0) {
        b->st.learner_version = q->learner_version;
        s_expire_stale(b);
    }
    if (b->n_breq == b->cap_breq) {
        b->cap_breq = b->cap_breq ? 2 * b->cap_breq : 8;
        b->breq = ap_realloc(b->breq, (size_t)b->cap_breq * sizeof *b->breq);
    }
    b->last_B = q->trajectories;
    b->breq[b->n_breq++] = (s_breq_t){.pid = L->pid,
                                      .request_id = q->request_id,
                                      .B = q->trajectories,
                                      .max_bytes = q->max_bytes,
                                      .t_in = ap_now()};
    b->st.batch_requests++;
    s_kick(b, NULL);
}

/* A malformed message (already counted by the codec). From an actor holding credit it is taken
 * to have been a group: the credit comes back (owed), so a client's bug cannot starve it. */
static void s_on_reject(ap_sock_t *s, const ap_peer_t *from, ap_reject_t why, void *data) {
    (void)why;
    ap_buffer_t *b = data;
    int sock = s == b->sock[S_ACT] ? S_ACT : s == b->sock[S_TEA] ? S_TEA : S_LRN;
    s_peer_t *p = s_peer_find(b, sock, from);
    if (!p) return;
    p->rejects++;
    if (sock == S_ACT && p->credit > 0) {
        s_credit_add(b, p, -1);
        if (!b->sync) s_owed_add(b, p, 1);
        s_kick(b, NULL);
    }
}

/* ---------------------------------------------------------------- housekeeping and metrics */

static int s_cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

static void s_report(ap_buffer_t *b, double now) {
    ap_buffer_stats_t st;
    ap_buffer_stats(b, &st);
    double dt = now - b->last_report;
    ap_metrics_t *m = b->metrics;
    ap_metrics_begin(m, (long)st.batches);
    ap_metrics_add(m, "buffer/pending_on_policy", st.pending[S_ON]);
    ap_metrics_add(m, "buffer/pending_dataset", st.pending[S_DS]);
    ap_metrics_add(m, "buffer/ready_on_policy", st.ready[S_ON]);
    ap_metrics_add(m, "buffer/ready_dataset", st.ready[S_DS]);
    ap_metrics_add(m, "buffer/held_unserved", st.held_unserved);
    ap_metrics_add(m, "buffer/in_per_s", dt > 0 ? (st.groups_in - b->last.groups_in) / dt : 0);
    ap_metrics_add(m, "buffer/out_per_s", dt > 0 ? (st.serves - b->last.serves) / dt : 0);
    ap_metrics_add(m, "buffer/groups_in", (double)st.groups_in);
    ap_metrics_add(m, "buffer/served_first", (double)st.served_first);
    ap_metrics_add(m, "buffer/serves", (double)st.serves);
    ap_metrics_add(m, "buffer/reuses", (double)st.reuses);
    ap_metrics_add(m, "buffer/retired", (double)st.retired);
    for (int r = 0; r < AP_BUFFER_DROP_REASON_COUNT; r++) {
        char name[64];
        snprintf(name, sizeof name, "buffer/drop/%s", ap_buffer_drop_name((ap_buffer_drop_t)r));
        ap_metrics_add(m, name, (double)st.drops[r]);
    }
    ap_metrics_add(m, "buffer/drops", (double)st.drops_total);
    ap_metrics_add(m, "buffer/over_credit", (double)st.over_credit);
    double mean = 0, p95 = 0;
    if (b->n_lat > 0) {
        for (int i = 0; i < b->n_lat; i++)
            mean += b->lat[i];
        mean /= b->n_lat;
        qsort(b->lat, (size_t)b->n_lat, sizeof *b->lat, s_cmp_double);
        p95 = b->lat[(int)ceil(0.95 * b->n_lat) - 1];
    }
    ap_metrics_add(m, "buffer/teacher_latency_ms_mean", b->n_lat ? mean : NAN);
    ap_metrics_add(m, "buffer/teacher_latency_ms_p95", b->n_lat ? p95 : NAN);
    b->n_lat = 0;
    ap_metrics_add(m, "buffer/score_requests", (double)st.score_requests);
    ap_metrics_add(m, "buffer/redispatched", (double)st.redispatched);
    ap_metrics_add(m, "buffer/timeouts", (double)st.timeouts);
    ap_metrics_add(m, "buffer/late_answers", (double)st.late_answers);
    ap_metrics_add(m, "buffer/teachers_expired", (double)st.teachers_expired);
    ap_metrics_add(m, "buffer/batches", (double)st.batches);
    ap_metrics_add(m, "buffer/batch_waiting", st.batch_waiting);
    ap_metrics_add(m, "buffer/batch_wait_ms", b->wait_n ? b->wait_sum / b->wait_n : NAN);
    b->wait_sum = 0, b->wait_n = 0;
    ap_metrics_add(m, "buffer/trajectories_out", (double)st.trajectories_out);
    ap_metrics_add(m, "buffer/trimmed", (double)st.trimmed);
    ap_metrics_add(m, "buffer/peers/actors", st.actors);
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        char name[64];
        snprintf(name, sizeof name, "buffer/peers/teachers_%s",
                 ap_teacher_kind_name((ap_teacher_kind_t)k));
        ap_metrics_add(m, name, st.teachers[k]);
    }
    ap_metrics_add(m, "buffer/peers/learner", st.learners);
    ap_metrics_add(m, "buffer/rejected", (double)st.rejected);
    for (int r = 0; r < AP_REJECT_REASON_COUNT; r++)
        if (st.rejected_by_reason[r]) {
            char name[64];
            snprintf(name, sizeof name, "buffer/rejected/%s", ap_reject_name((ap_reject_t)r));
            ap_metrics_add(m, name, (double)st.rejected_by_reason[r]);
        }
    for (int r = 0; r < AP_BUFFER_BAD_REASON_COUNT; r++)
        if (st.bad[r]) {
            char name[64];
            snprintf(name, sizeof name, "buffer/bad/%s", ap_buffer_bad_name((ap_buffer_bad_t)r));
            ap_metrics_add(m, name, (double)st.bad[r]);
        }
    ap_metrics_add(m, "buffer/learner_gen", st.learner_version.gen);
    ap_metrics_add(m, "buffer/learner_step", (double)st.learner_version.step);
    if (ap_metrics_end(m) < 0) ap_log(AP_LOG_WARN, "buffer: metrics: %s", ap_errmsg());
    b->last = st;
    b->last_report = now;
}

static void s_on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    ap_buffer_t *b = w->data;
    if (b->stopped) return;
    double now = ap_now();
    for (int s = 0; s < S_NSOCK; s++)
        for (int i = b->peers[s].n - 1; i >= 0; i--) {
            s_peer_t *p = b->peers[s].p[i];
            if (now - p->last_seen > 3 * b->hb) {
                if (s == S_TEA) b->st.teachers_expired++;
                s_peer_remove(b, p, "is silent for 3 heartbeat periods: expired");
                continue;
            }
            if (now - p->last_sent >= b->hb) {
                ap_msg_t m = {.type = AP_MSG_HEARTBEAT,
                              .u.heartbeat = {.time = ap_wall(), .version = b->st.learner_version}};
                s_send(b, p, &m);
            }
        }
    /* deadlines: every request some teacher holds */
    s_vec_t *T = &b->peers[S_TEA];
    for (int i = 0; i < T->n; i++) {
        s_peer_t *t = T->p[i];
        for (int j = 0; j < t->held.n; j++) {
            s_req_t *r = s_map_get(&b->reqs, (uint64_t)(uintptr_t)t->held.p[j]);
            if (r && r->deadline > 0 && now > r->deadline && !r->queued) {
                b->st.timeouts++;
                s_retry(b, r, 1); /* may free r (and its whole group) */
            }
        }
    }
    s_kick(b, NULL);
    /* groups waiting for a kind of teacher nobody serves: say so (every 10 s) */
    for (int k = 0; k < AP_TEACHER_COUNT; k++) {
        if (!b->qhead[k] || now - b->last_no_teacher < 10) continue;
        int alive = 0;
        for (int i = 0; i < T->n; i++)
            alive += (int)((s_peer_t *)T->p[i])->kind == k;
        if (alive) continue;
        b->last_no_teacher = now;
        ap_log(AP_LOG_WARN, "buffer: groups wait for a %s teacher and none is connected",
               ap_teacher_kind_name((ap_teacher_kind_t)k));
    }
    /* a batch request waiting long: say what it waits for (every 10 s) */
    if (b->n_breq > 0 && now - b->breq[0].t_in > 10 && now - b->last_wait_warn >= 10) {
        const s_breq_t *q = &b->breq[0];
        int n_on = (int)floor(b->lambda * q->B / b->G + 1e-9);
        b->last_wait_warn = now;
        ap_log(AP_LOG_WARN,
               "buffer: batch request %llu has waited %.0f s: %d of %d on-policy groups "
               "ready, %ld of %d dataset trajectories (%d actors connected)",
               (unsigned long long)q->request_id, now - q->t_in, b->ready[S_ON].n, n_on,
               b->ds_ready_traj, q->B - b->G * n_on, b->peers[S_ACT].n);
    }
    if (b->metrics && now - b->last_report >= b->report_interval) s_report(b, now);
}

/* ---------------------------------------------------------------- lifecycle */

ap_buffer_t *ap_buffer_new(ap_net_t *net, struct ev_loop *loop, const ap_buffer_opts_t *o) {
    AP_ASSERT(net && loop && o && o->cfg);
    const ap_config_t *cfg = o->cfg;
    ap_buffer_t *b = ap_calloc(1, sizeof *b);
    b->cfg = cfg;
    b->net = net;
    b->loop = loop;
    b->metrics = o->metrics;
    b->report_interval = o->report_interval > 0 ? o->report_interval : 1.0;
    b->V = o->vocab_size;
    b->vhash = o->vocab_hash;
    b->kinds = ap_teacher_kinds_needed(cfg);
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        ap_teacher_params_for(&b->params[k], cfg, (ap_teacher_kind_t)k, b->V);
    b->G = cfg->sampling.group_size;
    b->lambda = cfg->batch.on_policy_fraction;
    b->sync = cfg->run.sync;
    b->capacity = cfg->buffer.capacity_groups;
    b->hb = cfg->buffer.heartbeat_ms / 1000.0;
    b->timeout = cfg->buffer.teacher_timeout_ms / 1000.0;
    /* request ids start at the wall clock in microseconds: a previous life's ids are older */
    b->first_req = b->next_req = (uint64_t)(ap_wall() * 1e6);
    ap_rng_seed(&b->rng, o->seed, 0xb0ffe7);
    b->st.kinds = b->kinds;
    if (b->G < 1 || b->capacity < 1) {
        ap_err("buffer: sampling.group_size and buffer.capacity_groups must be positive");
        free(b);
        return NULL;
    }
    const char *eps[S_NSOCK] = {
        o->actors_endpoint ? o->actors_endpoint : cfg->endpoints.buffer_actors,
        o->teachers_endpoint ? o->teachers_endpoint : cfg->endpoints.buffer_teachers,
        o->learner_endpoint ? o->learner_endpoint : cfg->endpoints.buffer_learner};
    static const char *names[S_NSOCK] = {"buffer/actors", "buffer/teachers", "buffer/learner"};
    static const uint32_t accept[S_NSOCK] = {
        1u << AP_MSG_HELLO | 1u << AP_MSG_HEARTBEAT | 1u << AP_MSG_BYE | 1u << AP_MSG_GROUP,
        1u << AP_MSG_HELLO | 1u << AP_MSG_HEARTBEAT | 1u << AP_MSG_BYE | 1u << AP_MSG_SCORES,
        1u << AP_MSG_HELLO | 1u << AP_MSG_HEARTBEAT | 1u << AP_MSG_BYE |
            1u << AP_MSG_BATCH_REQUEST};
    /* largest frames: a group (64 MiB), scores (full distributions: 256 MiB), a request (64 KiB) */
    static const size_t max_msg[S_NSOCK] = {64u << 20, 256u << 20, 64u << 10};
    static ap_sock_msg_cb cbs[S_NSOCK] = {s_on_actor_msg, s_on_teacher_msg, s_on_learner_msg};
    for (int s = 0; s < S_NSOCK; s++) {
        if (!eps[s] || !*eps[s]) {
            ap_err("buffer: endpoints.buffer_%ss is empty", s_sock_role[s]);
            ap_buffer_destroy(&b);
            return NULL;
        }
        ap_msg_limits_t lim;
        ap_msg_limits_default(&lim);
        lim.vocab_size = b->V;
        lim.accept = accept[s];
        ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                             .endpoint = eps[s],
                             .bind = 1,
                             .domain = s_sock_role[s],
                             .max_msg = max_msg[s],
                             .limits = &lim,
                             .hwm = 10000,
                             .linger_ms = 200, /* a final BYE may leave */
                             .name = names[s]};
        b->sock[s] = ap_sock_new(net, &so);
        if (!b->sock[s]) {
            ap_buffer_destroy(&b);
            return NULL;
        }
        ap_sock_watch(b->sock[s], loop, cbs[s], b);
        ap_sock_on_reject(b->sock[s], s_on_reject);
    }
    double tick = AP_MIN(0.1, AP_MAX(0.005, b->hb / 5));
    tick = AP_MIN(tick, AP_MAX(0.005, b->timeout / 5));
    ev_timer_init(&b->tick, s_on_tick, tick, tick);
    b->tick.data = b;
    ev_timer_start(loop, &b->tick);
    b->t_start = b->last_report = ap_now();
    ap_log(AP_LOG_INFO,
           "buffer: serving actors on %s, teachers on %s, the learner on %s; kinds%s%s%s; "
           "B from requests, G %d, lambda %g, capacity %d, %s",
           ap_sock_endpoint(b->sock[S_ACT]), ap_sock_endpoint(b->sock[S_TEA]),
           ap_sock_endpoint(b->sock[S_LRN]), b->kinds & 1 ? " external" : "",
           b->kinds & 2 ? " self" : "", b->kinds & 4 ? " reference" : "", b->G, b->lambda,
           b->capacity, b->sync ? "sync" : "async");
    return b;
}

void ap_buffer_stop(ap_buffer_t *b) {
    if (!b || b->stopped) return;
    for (int s = 0; s < S_NSOCK; s++)
        for (int i = 0; i < b->peers[s].n; i++) {
            ap_msg_t m = {.type = AP_MSG_BYE};
            snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "shutdown");
            s_send(b, b->peers[s].p[i], &m);
        }
    if (b->metrics) s_report(b, ap_now());
    b->stopped = 1;
    ev_timer_stop(b->loop, &b->tick);
    for (int s = 0; s < S_NSOCK; s++)
        if (b->sock[s]) ap_sock_unwatch(b->sock[s]);
}

void ap_buffer_destroy(ap_buffer_t **bp) {
    if (!bp || !*bp) return;
    ap_buffer_t *b = *bp;
    ev_timer_stop(b->loop, &b->tick);
    for (int src = 0; src < AP_SOURCE_COUNT; src++) {
        for (int i = 0; i < b->pending[src].n; i++)
            s_entry_free(b, b->pending[src].p[i]);
        for (int i = 0; i < b->ready[src].n; i++)
            s_entry_free(b, b->ready[src].p[i]);
        free(b->pending[src].p);
        free(b->ready[src].p);
    }
    for (int s = 0; s < S_NSOCK; s++) {
        for (int i = 0; i < b->peers[s].n; i++) {
            s_peer_t *p = b->peers[s].p[i];
            free(p->held.p);
            free(p);
        }
        free(b->peers[s].p);
        ap_sock_destroy(&b->sock[s]);
    }
    AP_ASSERT(b->reqs.n == 0);
    free(b->reqs.slot);
    free(b->breq);
    free(b->lat);
    free(b);
    *bp = NULL;
}

void ap_buffer_stats(const ap_buffer_t *b, ap_buffer_stats_t *out) {
    *out = b->st;
    int unserved = 0;
    for (int src = 0; src < AP_SOURCE_COUNT; src++) {
        out->pending[src] = b->pending[src].n;
        out->ready[src] = b->ready[src].n;
        unserved += b->pending[src].n + b->unserved_ready[src];
    }
    out->held_unserved = unserved;
    out->batch_waiting = b->n_breq;
    out->batch_wait_ms_mean = b->st.batches ? b->wait_total_ms / (double)b->st.batches : 0;
    out->actors = b->peers[S_ACT].n;
    out->learners = b->peers[S_LRN].n;
    for (int k = 0; k < AP_TEACHER_COUNT; k++)
        out->teachers[k] = 0;
    for (int i = 0; i < b->peers[S_TEA].n; i++)
        out->teachers[((s_peer_t *)b->peers[S_TEA].p[i])->kind]++;
    out->rejected = 0;
    memset(out->rejected_by_reason, 0, sizeof out->rejected_by_reason);
    for (int s = 0; s < S_NSOCK; s++) {
        if (!b->sock[s]) continue;
        const ap_msg_stats_t *cs = ap_msg_codec_stats(ap_sock_codec(b->sock[s]));
        out->rejected += cs->rejected;
        for (int r = 0; r < AP_REJECT_REASON_COUNT; r++)
            out->rejected_by_reason[r] += cs->by_reason[r];
    }
}

const char *ap_buffer_endpoint(const ap_buffer_t *b, int which) {
    AP_ASSERT(which >= 0 && which < S_NSOCK);
    return ap_sock_endpoint(b->sock[which]);
}
