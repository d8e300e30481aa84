/* test_buffer_fakes.h: fake actors, teachers and learners for the buffer tests. Each fake is a
 * DEALER polled by fk_pump(), which also turns the buffer's libev loop, so a whole topology runs
 * in one thread (inproc://, or ipc:// against real processes). A fake speaks the conversation of
 * DESIGN.md: HELLO, HEARTBEAT every period while alive, CREDIT bookkeeping (actor), holding and
 * answering SCORE_REQUESTs by a chosen policy (teacher), BATCH_REQUEST and collecting BATCH parts
 * (learner). Header-only, included by tests/test_buffer*.c. */
#ifndef APPRENTICE_TEST_BUFFER_FAKES_H
#define APPRENTICE_TEST_BUFFER_FAKES_H

#include <errno.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/msg.h"
#include "apprentice/rng.h"
#include "apprentice/teacher.h"
#include "apprentice/transport.h"
#include "test_protocol_fixtures.h"

typedef enum {
    FK_ANSWER = 0, /* answer every request at once with valid simulated scores */
    FK_HOLD,       /* take requests and never answer (a hung teacher) */
    FK_DELAY,      /* answer each request delay_s after it arrived */
    FK_WRONG_KIND, /* answer with the wrong kind */
    FK_MISMATCH,   /* answer with scores for one trajectory too few */
} fk_mode_t;

typedef struct {
    uint64_t id;
    ap_group_t *g;
    ap_teacher_params_t p;
    double t_in;
} fk_job_t;

typedef struct {
    ap_sock_t *s;
    char name[AP_NAME_MAX];
    ap_role_t role;
    int alive; /* sends heartbeats; 0 after fk_kill */
    double hb, last_hb;
    int resets, byes, heartbeats;
    char last_reset[AP_NAME_MAX];
    uint64_t send_again; /* sends refused with EAGAIN */
    /* actor */
    int credit, credit_msgs;
    uint64_t seq, acked;
    ap_version_t latest;
    /* teacher */
    ap_teacher_kind_t kind;
    fk_mode_t mode;
    double delay_s;
    fk_job_t jobs[512];
    int n_jobs;
    uint64_t requests, answered;
    int V;
    ap_rng_t rng;
    /* learner */
    ap_batch_t *parts[4096];
    int n_parts;
} fk_t;

static inline fk_t *fk_new(ap_net_t *net, const char *endpoint, const char *name, ap_role_t role,
                           double hb, const char *server_key) {
    fk_t *f = ap_calloc(1, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->role = role;
    f->hb = hb;
    f->alive = 1;
    ap_rng_seed(&f->rng, 99, (uint64_t)(uintptr_t)f);
    ap_sock_opts_t o = {.type = AP_SOCK_DEALER,
                        .endpoint = endpoint,
                        .linger_ms = 0,
                        .max_msg = 256u << 20,
                        .server_key = server_key,
                        .name = f->name};
    f->s = ap_sock_new(net, &o);
    AP_ASSERTF(f->s, "%s", ap_errmsg());
    return f;
}

static inline void fk_send(fk_t *f, const ap_msg_t *m) {
    if (ap_sock_send(f->s, NULL, m) < 0) {
        if (errno == EAGAIN)
            f->send_again++; /* no connection (refused) or a full pipe */
        else
            fprintf(stderr, "fake %s: send %s: %s\n", f->name, ap_msg_type_name(m->type),
                    ap_errmsg());
    }
    f->last_hb = ap_now();
}

static inline void fk_hello(fk_t *f, int id, ap_teacher_kind_t kind, int capacity, int V,
                            uint64_t hash) {
    ap_msg_t m = {.type = AP_MSG_HELLO,
                  .u.hello = {.role = f->role,
                              .id = id,
                              .capacity = (uint32_t)capacity,
                              .vocab_size = V,
                              .vocab_hash = hash,
                              .kind = kind}};
    snprintf(m.u.hello.name, sizeof m.u.hello.name, "%s", f->name);
    f->kind = kind;
    f->V = V;
    fk_send(f, &m);
}

/* Actor: send g (borrowed) as the next GROUP, using one credit (or not, when `force`). */
static inline int fk_send_group(fk_t *f, const ap_group_t *g, int force) {
    if (f->credit <= 0 && !force) return 0;
    ap_msg_t m = {.type = AP_MSG_GROUP, .seq = ++f->seq, .u.group = (ap_group_t *)g};
    fk_send(f, &m);
    f->credit--;
    return 1;
}

static inline void fk_request_batch(fk_t *f, uint64_t id, ap_version_t v, int B,
                                    uint64_t max_bytes) {
    ap_msg_t m = {
        .type = AP_MSG_BATCH_REQUEST,
        .u.batch_request = {
            .request_id = id, .learner_version = v, .trajectories = B, .max_bytes = max_bytes}};
    fk_send(f, &m);
}

/* Teacher: answer job j as the mode says. */
static inline void fk_answer(fk_t *f, fk_job_t *j) {
    ap_scores_t *s = ap_teacher_simulate(j->g, &j->p, f->V, (ap_version_t){0, 0}, &f->rng);
    s->request_id = j->id;
    if (f->mode == FK_WRONG_KIND) s->kind = (ap_teacher_kind_t)((s->kind + 1) % AP_TEACHER_COUNT);
    ap_scores_t *send = s;
    if (f->mode == FK_MISMATCH && j->g->G > 1) {
        send = ap_scores_new(j->g->G - 1, j->g->offset, s->K, s->full, s->vocab_size);
        send->request_id = s->request_id, send->group_id = s->group_id, send->kind = s->kind;
        send->temperature = s->temperature;
    }
    ap_msg_t m = {.type = AP_MSG_SCORES, .u.scores = send};
    fk_send(f, &m);
    if (send != s) ap_scores_destroy(&send);
    ap_scores_destroy(&s);
    f->answered++;
}

static inline void fk_on_msg(fk_t *f, ap_msg_t *m) {
    switch (m->type) {
    case AP_MSG_CREDIT:
        f->credit += (int)m->u.credit.grant;
        f->credit_msgs++;
        f->acked = m->u.credit.ack_seq;
        f->latest = m->u.credit.latest;
        break;
    case AP_MSG_SCORE_REQUEST: {
        ap_score_request_t *q = &m->u.score_request;
        f->requests++;
        if (f->n_jobs == (int)AP_COUNT(f->jobs)) break;
        fk_job_t *j = &f->jobs[f->n_jobs++];
        j->id = q->request_id;
        j->g = q->group;
        q->group = NULL;
        j->t_in = ap_now();
        j->p = (ap_teacher_params_t){.kind = q->kind,
                                     .full = q->full,
                                     .top_k = q->full ? f->V : q->top_k,
                                     .temperature = q->temperature,
                                     .sampled_temperature = 1};
        break;
    }
    case AP_MSG_BATCH:
        if (f->n_parts < (int)AP_COUNT(f->parts)) {
            f->parts[f->n_parts++] = m->u.batch;
            m->u.batch = NULL;
        }
        break;
    case AP_MSG_RESET:
        f->resets++;
        snprintf(f->last_reset, sizeof f->last_reset, "%s", m->u.bye.reason);
        break;
    case AP_MSG_BYE:
        f->byes++;
        break;
    case AP_MSG_HEARTBEAT:
        f->heartbeats++;
        break;
    default:
        break;
    }
}

/* Drain f's socket, answer due jobs, heartbeat. */
static inline void fk_poll(fk_t *f) {
    if (!f->s) return;
    for (;;) {
        ap_msg_t m;
        ap_peer_t p;
        int rc = ap_sock_recv(f->s, &p, &m);
        if (rc == 0) break;
        if (rc < 0) continue;
        if (f->alive) fk_on_msg(f, &m);
        ap_msg_clear(&m);
    }
    if (!f->alive) return;
    double now = ap_now();
    if (f->role == AP_ROLE_TEACHER && f->mode != FK_HOLD) {
        int w = 0;
        for (int i = 0; i < f->n_jobs; i++) {
            fk_job_t *j = &f->jobs[i];
            if (f->mode != FK_DELAY || now - j->t_in >= f->delay_s) {
                fk_answer(f, j);
                ap_group_destroy(&j->g);
            } else {
                f->jobs[w++] = *j;
            }
        }
        f->n_jobs = w;
    }
    if (now - f->last_hb >= f->hb) {
        ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .u.heartbeat = {.time = ap_wall()}};
        fk_send(f, &m);
    }
}

/* A fake that dies: stops talking and closes its socket (no BYE). */
static inline void fk_kill(fk_t *f) {
    f->alive = 0;
    ap_sock_destroy(&f->s);
}

static inline void fk_destroy(fk_t **fp) {
    fk_t *f = *fp;
    if (!f) return;
    ap_sock_destroy(&f->s);
    for (int i = 0; i < f->n_jobs; i++)
        ap_group_destroy(&f->jobs[i].g);
    for (int i = 0; i < f->n_parts; i++)
        ap_batch_destroy(&f->parts[i]);
    free(f);
    *fp = NULL;
}

/* Turn the loop and poll the fakes for up to `seconds`, or until cond(arg) is true. */
static inline int fk_pump(struct ev_loop *loop, fk_t **fakes, int n, double seconds,
                          int (*cond)(void *), void *arg) {
    double t0 = ap_now();
    for (;;) {
        if (loop) ev_run(loop, EVRUN_NOWAIT);
        for (int i = 0; i < n; i++)
            if (fakes[i]) fk_poll(fakes[i]);
        if (cond && cond(arg)) return 1;
        if (ap_now() - t0 >= seconds) return 0;
        ap_sleep(0.0002);
    }
}

/* A valid group of G trajectories (1..max_len tokens, vocabulary V) from `src` at version v. */
static inline ap_group_t *fk_group(ap_rng_t *r, uint64_t id, int G, int max_len, int V,
                                   ap_source_t src, ap_version_t v) {
    ap_group_t *g = fx_group(r, G, max_len, V);
    g->id = id;
    g->source = src;
    g->version = src == AP_SOURCE_DATASET ? (ap_version_t){0, 0} : v;
    g->temperature = 1.0f;
    if (src == AP_SOURCE_DATASET)
        for (int t = 0; t < g->n_tokens; t++)
            g->logprobs[t] = 0;
    return g;
}

#endif
