/* learner_service.c: ap_learner_run, the learner as a service (DESIGN.md "Conversations",
 * learner <-> buffer and weights).
 *
 * Two threads. The calling thread computes (ap_learner_step_core on each batch). An I/O thread
 * runs a libev loop that owns every socket: the DEALER to the buffer (HELLO; BATCH_REQUESTs kept
 * `learner.prefetch` deep counting batches received but not yet computed; BATCH parts reassembled
 * by request id; RESET -> HELLO again and re-request; HEARTBEAT every buffer.heartbeat_ms with the
 * learner's version; BYE at the end) and the weights server (ap_wserver: chunk pulls are served
 * while a step computes). The threads meet in a small mailbox under one mutex: a queue of
 * complete batches (I/O -> compute), and the learner's version and publication requests
 * (compute -> I/O, with an ev_async wake-up). A publication costs the compute thread at most one
 * memcpy of the arena, and never waits for an earlier publication: two staging slots, one being
 * published (packed, hashed, served by ap_wserver_publish on the I/O thread) while the other
 * takes the next version. The parameters are copied into the free slot chunk by chunk by both
 * threads: the I/O thread, while the next batch's forward and backward only read them, and the
 * compute thread, which copies the chunks left when the next optimizer update is due (the
 * learner's before_update hook) and never waits for the I/O thread to be scheduled. A version
 * staged but not yet published when a newer one is due is superseded by it (counted:
 * learner/publish_superseded): actors want the newest. The I/O thread runs SCHED_BATCH: its
 * wake-ups do not preempt the compute thread, which they did, for the whole copy + pack +
 * BLAKE2b of a publication (12% of a 15 ms step in bench pipeline, async; 0.25% since). Any
 * wait is counted as transport time; the I/O thread's work is learner/io_s.
 *
 * Sync mode (run.sync): one batch at a time: the next BATCH_REQUEST leaves only after the step
 * and the publication of its version (published every step, whatever learner.sync_every says:
 * sync actors wait for exactly the version CREDIT.latest names). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apprentice/base.h"
#include "apprentice/weights.h"
#include "learner/learner_impl.h"

#define S_MAX_OUT 16     /* requests in flight (learner.prefetch <= 16) */
#define S_MAX_READY 16   /* complete batches waiting for the compute thread */
#define S_MAX_PARTS 4096 /* parts of one batch accepted */
#define S_MAX_MSG ((size_t)256 << 20)

/* A staging slot's life: FREE -> COPYING (compute: publish this version; both threads copy
 * chunks of the arena into it) -> STAGED (the last chunk is in) -> PUBLISHING (I/O thread) ->
 * FREE. At most one slot is pending (COPYING or STAGED) and at most one PUBLISHING. The copy is
 * claimed chunk by chunk (S_CHUNK bytes, an atomic counter), so the compute thread, when the
 * next update is due, copies whatever the I/O thread has not claimed yet and waits for at most
 * the one chunk the I/O thread is copying: never for the I/O thread to be scheduled. */
enum { S_SLOT_FREE, S_SLOT_COPYING, S_SLOT_STAGED, S_SLOT_PUBLISHING };
#define S_CHUNK ((size_t)64 << 10)

typedef struct {
    int state;            /* S_SLOT_* (under mu) */
    ap_version_t version; /* the version this slot publishes */
    float *buf;           /* the arena copy */
    size_t bytes, cap, n_chunks;
    atomic_size_t next, done; /* chunks claimed, chunks copied (COPYING) */
} s_slot_t;

typedef struct {
    uint64_t id;       /* request id */
    int parts, got;    /* parts announced by the first part (0 before), parts received */
    ap_batch_t **part; /* [parts] */
} s_req_t;

typedef struct {
    ap_learner_t *L;
    struct ev_loop *loop;
    pthread_t th;
    int started;
    ap_sock_t *sock;
    ap_wserver_t *ws;
    ev_async wake;
    ev_timer hb;
    ev_prepare prep;
    int prefetch, sync;
    double period; /* heartbeat period, seconds */

    pthread_mutex_t mu; /* guards the fields up to the loop-only section */
    pthread_cond_t cv;
    int quit;       /* compute -> I/O: send BYE and leave */
    int dead;       /* the I/O thread has left */
    s_slot_t slot[2]; /* publications: one being published, one being staged */
    long superseded;  /* staged versions replaced by a newer one before publication */
    int publish_rc;   /* result of the last failed publication (-1: publish_err) */
    char publish_err[256];
    ap_version_t version; /* the learner's version (requests, heartbeats, codec) */
    int computing;        /* sync: a batch is being computed (occupies the one slot) */
    ap_batch_t *ready[S_MAX_READY];
    int n_ready;
    double io_busy; /* seconds the loop spent processing since last read */
    long received, resets, late, bad_parts, send_fail, rejected;

    /* loop thread only */
    s_req_t out[S_MAX_OUT];
    int n_out;
    uint64_t next_req;
    double last_heard;
    int silent;
    ap_ratelimit_t rl;
} s_io_t;

/* ---- I/O thread ----------------------------------------------------------------------------- */

static void s_send(s_io_t *io, const ap_msg_t *m) {
    if (ap_sock_send(io->sock, NULL, m) == 0) return;
    pthread_mutex_lock(&io->mu);
    io->send_fail++;
    pthread_mutex_unlock(&io->mu);
    if (ap_ratelimit_ok(&io->rl, 5.0))
        ap_log(AP_LOG_WARN, "learner: send %s to the buffer: %s", ap_msg_type_name(m->type),
               ap_errmsg());
}

static void s_hello(s_io_t *io) {
    const ap_learner_t *L = io->L;
    ap_msg_t m = {.type = AP_MSG_HELLO};
    m.u.hello.role = AP_ROLE_LEARNER;
    m.u.hello.id = 0;
    snprintf(m.u.hello.name, sizeof m.u.hello.name, "%s", L->name);
    m.u.hello.capacity = (uint32_t)io->prefetch;
    m.u.hello.vocab_size = ap_tokenizer_vocab_size(L->tok);
    m.u.hello.vocab_hash = ap_tokenizer_hash(L->tok);
    s_send(io, &m);
}

static void s_req_free(s_req_t *r) {
    for (int p = 0; p < r->parts; p++)
        ap_batch_destroy(&r->part[p]);
    free(r->part);
    memset(r, 0, sizeof *r);
}

static void s_drop_requests(s_io_t *io) {
    for (int i = 0; i < io->n_out; i++)
        s_req_free(&io->out[i]);
    io->n_out = 0;
}

/* Keep `prefetch` requests ahead of the compute thread. */
static void s_top_up(s_io_t *io) {
    pthread_mutex_lock(&io->mu);
    int busy = io->n_ready + (io->sync ? io->computing : 0);
    ap_version_t v = io->version;
    pthread_mutex_unlock(&io->mu);
    while (io->n_out + busy < io->prefetch && io->n_out < S_MAX_OUT) {
        ap_msg_t m = {.type = AP_MSG_BATCH_REQUEST};
        m.u.batch_request.request_id = ++io->next_req;
        m.u.batch_request.learner_version = v;
        m.u.batch_request.trajectories = io->L->cfg->batch.size;
        m.u.batch_request.max_bytes = S_MAX_MSG - (1u << 20);
        if (ap_sock_send(io->sock, NULL, &m) < 0) { /* retried on the next heartbeat */
            if (ap_ratelimit_ok(&io->rl, 5.0))
                ap_log(AP_LOG_WARN, "learner: batch request: %s", ap_errmsg());
            break;
        }
        s_req_t *r = &io->out[io->n_out++];
        memset(r, 0, sizeof *r);
        r->id = m.u.batch_request.request_id;
    }
}

/* The parts of a complete request as one batch (items moved, parts freed). */
static ap_batch_t *s_merge(s_req_t *r) {
    int total = 0;
    for (int p = 0; p < r->parts; p++)
        total += r->part[p]->n_items;
    ap_batch_t *b = ap_batch_new(total);
    b->request_id = r->id;
    int j = 0;
    for (int p = 0; p < r->parts; p++) {
        ap_batch_t *part = r->part[p];
        for (int i = 0; i < part->n_items; i++)
            b->items[j++] = part->items[i];
        part->n_items = 0;
        ap_batch_destroy(&r->part[p]);
    }
    free(r->part);
    memset(r, 0, sizeof *r);
    return b;
}

static void s_on_batch(s_io_t *io, ap_msg_t *m) {
    ap_batch_t *bt = m->u.batch;
    int at = -1;
    for (int i = 0; i < io->n_out && at < 0; i++)
        if (io->out[i].id == bt->request_id) at = i;
    const char *why = NULL;
    int give_up = 0; /* a request whose parts cannot make a batch is replaced by a new one */
    s_req_t *r = at >= 0 ? &io->out[at] : NULL;
    if (!r)
        why = "no such request in flight (late, or from before a reset)";
    else if (bt->parts > S_MAX_PARTS)
        why = "too many parts", give_up = 1;
    else if (r->parts && bt->parts != r->parts)
        why = "part count differs from the first part's", give_up = 1;
    else if (r->parts && r->part[bt->part])
        why = "duplicate part"; /* part < parts: decoded */
    if (why) {
        pthread_mutex_lock(&io->mu);
        if (r)
            io->bad_parts++;
        else
            io->late++;
        pthread_mutex_unlock(&io->mu);
        if (ap_ratelimit_ok(&io->rl, 5.0))
            ap_log(AP_LOG_WARN, "learner: batch %llu part %d/%d dropped: %s%s",
                   (unsigned long long)bt->request_id, bt->part, bt->parts, why,
                   give_up ? " (request given up)" : "");
        if (give_up) {
            s_req_free(r);
            io->out[at] = io->out[--io->n_out];
        }
        return;
    }
    if (!r->parts) {
        r->parts = bt->parts;
        r->part = ap_calloc((size_t)r->parts, sizeof *r->part);
    }
    r->part[bt->part] = bt;
    m->u.batch = NULL; /* kept */
    if (++r->got < r->parts) return;
    ap_batch_t *b = s_merge(r);
    io->out[at] = io->out[--io->n_out];
    pthread_mutex_lock(&io->mu);
    AP_ASSERT(io->n_ready < S_MAX_READY);
    io->ready[io->n_ready++] = b;
    io->received++;
    pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
}

static void s_on_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s, (void)from;
    s_io_t *io = data;
    io->last_heard = ap_now();
    if (io->silent) {
        ap_log(AP_LOG_INFO, "learner: the buffer answers again");
        io->silent = 0;
    }
    switch (m->type) {
    case AP_MSG_BATCH:
        s_on_batch(io, m);
        s_top_up(io);
        break;
    case AP_MSG_RESET:
        ap_log(AP_LOG_WARN, "learner: the buffer reset us (%s): HELLO again, %d request(s) re-sent",
               m->u.bye.reason, io->n_out);
        pthread_mutex_lock(&io->mu);
        io->resets++;
        pthread_mutex_unlock(&io->mu);
        s_drop_requests(io);
        s_hello(io);
        s_top_up(io);
        break;
    case AP_MSG_BYE:
        ap_log(AP_LOG_INFO, "learner: the buffer is leaving (%s)", m->u.bye.reason);
        break;
    default: /* CREDIT, HEARTBEAT: liveness only */
        break;
    }
}

/* A message from the buffer the codec refused (counted and logged there). It may have been a
 * batch part: which request it answered cannot be known, so every request in flight is given up
 * and replaced (late answers to them are dropped as such): a refused part never leaves a request
 * waiting forever. */
static void s_on_reject(ap_sock_t *s, const ap_peer_t *from, ap_reject_t why, void *data) {
    (void)s, (void)from;
    s_io_t *io = data;
    pthread_mutex_lock(&io->mu);
    io->rejected++;
    pthread_mutex_unlock(&io->mu);
    ap_log(AP_LOG_WARN,
           "learner: a message from the buffer was refused (%s): %d request(s) replaced",
           ap_reject_name(why), io->n_out);
    s_drop_requests(io);
    s_top_up(io);
}

static void s_heartbeat(s_io_t *io) {
    ap_msg_t m = {.type = AP_MSG_HEARTBEAT};
    m.u.heartbeat.time = ap_wall();
    pthread_mutex_lock(&io->mu);
    m.u.heartbeat.version = io->version;
    pthread_mutex_unlock(&io->mu);
    s_send(io, &m);
}

static void s_on_hb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    s_io_t *io = w->data;
    s_heartbeat(io);
    if (!io->silent && ap_now() - io->last_heard > 3 * io->period) {
        io->silent = 1;
        ap_log(AP_LOG_WARN, "learner: nothing from the buffer for %.1f s (%d request(s) waiting)",
               ap_now() - io->last_heard, io->n_out);
    }
    s_top_up(io);
}

static void s_on_prep(struct ev_loop *loop, ev_prepare *w, int revents) {
    (void)revents;
    s_io_t *io = w->data;
    double busy = ev_time() - ev_now(loop); /* processing since the last wake-up */
    if (busy > 0) {
        pthread_mutex_lock(&io->mu);
        io->io_busy += busy;
        pthread_mutex_unlock(&io->mu);
    }
}

static void s_stage(s_io_t *io, s_slot_t *s);
static s_slot_t *s_slot_in(s_io_t *io, int state);
static s_slot_t *s_pending(s_io_t *io);

static void s_on_wake(struct ev_loop *loop, ev_async *w, int revents) {
    (void)revents;
    s_io_t *io = w->data;
    ap_learner_t *L = io->L;
    pthread_mutex_lock(&io->mu);
    ap_msg_codec_set_latest(ap_sock_codec(io->sock), io->version);
    s_slot_t *s;
    while ((s = s_pending(io))) { /* publish the pending version (a newer one may follow) */
        if (s->state == S_SLOT_COPYING) s_stage(io, s); /* releases and retakes mu */
        if (s->state != S_SLOT_STAGED) continue;        /* superseded meanwhile */
        s->state = S_SLOT_PUBLISHING;
        ap_version_t v = s->version;
        pthread_mutex_unlock(&io->mu);
        int rc = ap_wserver_publish(io->ws, v, ap_model_config(L->model), L->table_hash, s->buf,
                                    s->bytes);
        pthread_mutex_lock(&io->mu);
        if (rc < 0) {
            io->publish_rc = rc;
            snprintf(io->publish_err, sizeof io->publish_err, "%s", ap_errmsg());
        }
        s->state = S_SLOT_FREE;
        pthread_cond_broadcast(&io->cv);
    }
    int quit = io->quit;
    pthread_mutex_unlock(&io->mu);
    if (quit) {
        ap_msg_t m = {.type = AP_MSG_BYE};
        snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "shutdown");
        s_send(io, &m);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    s_top_up(io);
}

static void *s_io_main(void *arg) {
    s_io_t *io = arg;
    /* SCHED_BATCH: a wake-up of this thread (a publication, a batch part) does not preempt the
     * compute thread on its core; it runs on an idle core or when the compute thread blocks. */
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp) != 0)
        ap_log(AP_LOG_DEBUG, "learner: SCHED_BATCH for the I/O thread refused");
    ev_run(io->loop, 0);
    pthread_mutex_lock(&io->mu);
    io->dead = 1;
    pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
    return NULL;
}

/* ---- set-up and tear-down (compute thread) -------------------------------------------------- */

static void s_io_destroy(s_io_t *io) {
    if (!io) return;
    if (io->started) {
        pthread_mutex_lock(&io->mu);
        io->quit = 1;
        pthread_mutex_unlock(&io->mu);
        ev_async_send(io->loop, &io->wake);
        pthread_join(io->th, NULL);
    }
    for (int i = 0; i < io->n_ready; i++)
        ap_batch_destroy(&io->ready[i]);
    s_drop_requests(io);
    if (io->loop) {
        if (io->sock) ap_sock_unwatch(io->sock);
        ev_async_stop(io->loop, &io->wake);
        ev_timer_stop(io->loop, &io->hb);
        ev_prepare_stop(io->loop, &io->prep);
    }
    ap_sock_destroy(&io->sock);
    ap_wserver_destroy(&io->ws); /* chunks still in ZeroMQ keep their snapshot alive */
    if (io->loop) ev_loop_destroy(io->loop);
    pthread_mutex_destroy(&io->mu);
    pthread_cond_destroy(&io->cv);
    for (int i = 0; i < 2; i++)
        free(io->slot[i].buf);
    free(io);
}

static s_io_t *s_io_new(ap_learner_t *L) {
    const ap_config_t *cfg = L->cfg;
    s_io_t *io = ap_calloc(1, sizeof *io);
    io->L = L;
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->cv, NULL);
    io->sync = cfg->run.sync;
    io->prefetch = io->sync ? 1 : AP_MAX(1, AP_MIN(cfg->learner.prefetch, S_MAX_OUT));
    io->period = cfg->buffer.heartbeat_ms / 1000.0;
    io->version = L->version;
    io->last_heard = ap_now();
    if (!cfg->endpoints.buffer_learner[0] || !cfg->endpoints.weights[0]) {
        ap_err("learner: endpoints.buffer_learner and endpoints.weights are required");
        goto fail;
    }
    io->loop = ev_loop_new(EVFLAG_AUTO);
    char server_key[AP_Z85_KEY] = "";
    if (ap_net_curve(L->net)) {
        char *path = ap_sprintf("%s/buffer.pub", cfg->security.keys_dir);
        int rc = ap_curve_load_public(path, server_key);
        free(path);
        if (rc < 0 || ap_net_allow_dir(L->net, "weights", cfg->security.keys_dir) < 0) {
            ap_err("learner: CURVE keys: %s", ap_errmsg());
            goto fail;
        }
    }
    ap_wserver_opts_t wo = {.endpoint = cfg->endpoints.weights,
                            .pub_endpoint =
                                cfg->endpoints.weights_pub[0] ? cfg->endpoints.weights_pub : NULL};
    if (!(io->ws = ap_wserver_new(L->net, io->loop, &wo))) {
        ap_err("learner: weights server on %s: %s", cfg->endpoints.weights, ap_errmsg());
        goto fail;
    }
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = ap_tokenizer_vocab_size(L->tok);
    lim.max_full_vocab = AP_MAX(lim.max_full_vocab, cfg->teacher.full_vocab_max);
    lim.accept = 1u << AP_MSG_BATCH | 1u << AP_MSG_CREDIT | 1u << AP_MSG_HEARTBEAT |
                 1u << AP_MSG_RESET | 1u << AP_MSG_BYE;
    ap_sock_opts_t so = {.type = AP_SOCK_DEALER,
                         .endpoint = cfg->endpoints.buffer_learner,
                         .server_key = server_key[0] ? server_key : NULL,
                         .max_msg = S_MAX_MSG,
                         .limits = &lim,
                         .name = "learner/buffer"};
    if (!(io->sock = ap_sock_new(L->net, &so))) {
        ap_err("learner: buffer socket %s: %s", cfg->endpoints.buffer_learner, ap_errmsg());
        goto fail;
    }
    ap_msg_codec_set_latest(ap_sock_codec(io->sock), L->version);
    ap_sock_watch(io->sock, io->loop, s_on_msg, io);
    ap_sock_on_reject(io->sock, s_on_reject);
    ev_async_init(&io->wake, s_on_wake);
    io->wake.data = io;
    ev_async_start(io->loop, &io->wake);
    ev_timer_init(&io->hb, s_on_hb, io->period, io->period);
    io->hb.data = io;
    ev_timer_start(io->loop, &io->hb);
    ev_prepare_init(&io->prep, s_on_prep);
    io->prep.data = io;
    ev_prepare_start(io->loop, &io->prep);
    return io;
fail:
    s_io_destroy(io);
    return NULL;
}

static s_slot_t *s_slot_in(s_io_t *io, int state) {
    for (int i = 0; i < 2; i++)
        if (io->slot[i].state == state) return &io->slot[i];
    return NULL;
}

/* The slot waiting to be published (COPYING or STAGED), or NULL. */
static s_slot_t *s_pending(s_io_t *io) {
    for (int i = 0; i < 2; i++) {
        int st = io->slot[i].state;
        if (st == S_SLOT_COPYING || st == S_SLOT_STAGED) return &io->slot[i];
    }
    return NULL;
}

/* Copy chunks of the arena into s until none is left to claim (either thread, without mu).
 * 1 when this call copied the last chunk. The parameters do not change meanwhile: the compute
 * thread updates them only after s is STAGED. */
static int s_copy_chunks(s_io_t *io, s_slot_t *s) {
    size_t bytes;
    const char *arena = ap_model_blob(io->L->model, &bytes);
    int last = 0;
    for (size_t i; (i = atomic_fetch_add(&s->next, 1)) < s->n_chunks;) {
        const size_t off = i * S_CHUNK, len = AP_MIN(S_CHUNK, s->bytes - off);
        memcpy((char *)s->buf + off, arena + off, len);
        if (atomic_fetch_add(&s->done, 1) + 1 == s->n_chunks) last = 1;
    }
    return last;
}

/* Stage s (mu held; released during copies, held on return): while s is COPYING, copy the
 * chunks nobody has claimed, or wait for one the other thread is copying. The loop re-checks
 * after every wake-up: between the broadcast that staged s and this thread retaking mu, the
 * compute thread may already have put the next version into s (COPYING again, chunks unclaimed),
 * and then waits for it to be published: only copying here can stage it (a plain wait on
 * "COPYING" deadlocked both threads at the final publication: a learner left hanging after an
 * end-to-end test). */
static void s_stage(s_io_t *io, s_slot_t *s) {
    while (s->state == S_SLOT_COPYING && !io->dead) {
        if (atomic_load(&s->next) >= s->n_chunks) { /* all claimed: the other thread finishes */
            pthread_cond_wait(&io->cv, &io->mu);
            continue;
        }
        pthread_mutex_unlock(&io->mu);
        int last = s_copy_chunks(io, s);
        pthread_mutex_lock(&io->mu);
        if (last) {
            s->state = S_SLOT_STAGED;
            pthread_cond_broadcast(&io->cv);
        }
    }
}

/* The learner's before_update hook: the parameters may change once the pending version is
 * staged. 0, or -1 when the I/O thread stopped with a chunk in flight (it cannot: a chunk is
 * copied within one callback). */
static int s_stage_wait(s_io_t *io) {
    pthread_mutex_lock(&io->mu);
    s_slot_t *s = s_slot_in(io, S_SLOT_COPYING);
    if (s) s_stage(io, s);
    int rc = s && s->state == S_SLOT_COPYING ? ap_err("learner: the I/O thread has stopped") : 0;
    pthread_mutex_unlock(&io->mu);
    return rc;
}

/* Wait until every publication is finished. 0, or -1 when one failed or the I/O thread left. */
static int s_publish_wait(s_io_t *io) {
    pthread_mutex_lock(&io->mu);
    int busy;
    while ((busy = s_pending(io) || s_slot_in(io, S_SLOT_PUBLISHING)) && !io->dead) {
        s_slot_t *c = s_slot_in(io, S_SLOT_COPYING);
        if (c)
            s_stage(io, c); /* copies rather than waits while chunks are unclaimed */
        else
            pthread_cond_wait(&io->cv, &io->mu);
    }
    int rc = busy                 ? ap_err("learner: the I/O thread has stopped")
             : io->publish_rc < 0 ? ap_err("learner: publish: %s", io->publish_err)
                                  : 0;
    io->publish_rc = 0;
    pthread_mutex_unlock(&io->mu);
    return rc;
}

static int s_before_update(void *data) {
    return s_stage_wait(data);
}

/* Publish L->version: the arena is copied before the next update (by the I/O thread or by the
 * before_update hook), then packed, hashed and served by the I/O thread. Never waits for an
 * earlier publication; a staged version not yet published is superseded. 0, or -1 when an
 * earlier publication failed. */
static int s_publish(s_io_t *io) {
    pthread_mutex_lock(&io->mu);
    if (io->publish_rc < 0) {
        io->publish_rc = 0;
        pthread_mutex_unlock(&io->mu);
        return ap_err("learner: publish: %s", io->publish_err);
    }
    s_slot_t *s = s_pending(io);
    if (s && s->state == S_SLOT_COPYING) s_stage(io, s); /* only after a skipped update */
    size_t bytes;
    ap_model_blob(io->L->model, &bytes);
    if (s) {
        io->superseded++;
    } else {
        s = s_slot_in(io, S_SLOT_FREE); /* one slot at most is PUBLISHING: the other is free */
        if (bytes > s->cap) {           /* a free slot: no thread touches it */
            free(s->buf);
            s->buf = ap_alloc_aligned(bytes);
            s->cap = bytes;
        }
    }
    s->version = io->L->version;
    s->bytes = bytes;
    s->n_chunks = (bytes + S_CHUNK - 1) / S_CHUNK;
    atomic_store(&s->next, 0);
    atomic_store(&s->done, 0);
    s->state = s->n_chunks ? S_SLOT_COPYING : S_SLOT_STAGED;
    io->version = io->L->version;
    pthread_cond_broadcast(&io->cv); /* an I/O thread waiting in s_stage copies it */
    pthread_mutex_unlock(&io->mu);
    ev_async_send(io->loop, &io->wake);
    return 0;
}

/* The next complete batch, waiting up to `timeout` seconds (NULL: none yet). */
static ap_batch_t *s_take(s_io_t *io, double timeout) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&io->mu);
    while (io->n_ready == 0 && !io->dead)
        if (pthread_cond_timedwait(&io->cv, &io->mu, &ts) == ETIMEDOUT) break;
    ap_batch_t *b = NULL;
    if (io->n_ready > 0) {
        b = io->ready[0];
        memmove(io->ready, io->ready + 1, (size_t)--io->n_ready * sizeof *io->ready);
        io->computing = 1;
    }
    pthread_mutex_unlock(&io->mu);
    if (b) ev_async_send(io->loop, &io->wake); /* a slot is free: top up */
    return b;
}

/* The step is over (and published when due): new version, free the sync slot. */
static void s_step_done(s_io_t *io) {
    pthread_mutex_lock(&io->mu);
    io->version = io->L->version;
    io->computing = 0;
    io->L->io_acc += io->io_busy;
    io->io_busy = 0;
    io->L->io_received = io->received, io->L->io_resets = io->resets;
    io->L->io_late = io->late, io->L->io_bad = io->bad_parts, io->L->io_rejected = io->rejected;
    io->L->io_superseded = io->superseded;
    pthread_mutex_unlock(&io->mu);
    ev_async_send(io->loop, &io->wake);
}

/* ---- the service loop ----------------------------------------------------------------------- */

static int s_done(const ap_learner_t *L, const char **why) {
    const ap_run_cfg_t *rc = &L->cfg->run;
    if ((long)L->version.step >= rc->max_steps) return *why = "run.max_steps reached", 1;
    if (rc->max_minutes > 0 && ap_learner_elapsed(L) >= rc->max_minutes * 60)
        return *why = "run.max_minutes reached", 1;
    if (ap_learner_stopping(L)) return *why = "stop requested", 1;
    return 0;
}

int ap_learner_run(ap_learner_t *L) {
    if (!L->net) return ap_err("learner: ap_learner_run needs a network context (opts.net)");
    const ap_config_t *cfg = L->cfg;
    const char *why = NULL;
    if (s_done(L, &why)) {
        ap_log(AP_LOG_INFO, "learner: nothing to do at step %llu: %s",
               (unsigned long long)L->version.step, why);
        return 0;
    }
    s_io_t *io = s_io_new(L);
    if (!io) return -1;
    int rc = 0;
    /* the starting version, HELLO and the first requests, then the I/O thread takes over */
    size_t bytes;
    const void *arena = ap_model_blob(L->model, &bytes);
    if (ap_wserver_publish(io->ws, L->version, ap_model_config(L->model), L->table_hash, arena,
                           bytes) < 0) {
        ap_err("learner: publish: %s", ap_errmsg());
        s_io_destroy(io);
        return -1;
    }
    s_hello(io);
    s_top_up(io);
    if (pthread_create(&io->th, NULL, s_io_main, io) != 0) {
        ap_err("learner: cannot start the I/O thread");
        s_io_destroy(io);
        return -1;
    }
    io->started = 1;
    L->before_update = s_before_update;
    L->before_update_data = io;
    ap_log(AP_LOG_INFO, "learner: serving: batches from %s, weights on %s; version (%u, %llu)",
           cfg->endpoints.buffer_learner, cfg->endpoints.weights, L->version.gen,
           (unsigned long long)L->version.step);
    ap_version_t published = L->version;
    int skips = 0; /* batches skipped in a row */
    char skip_why[160] = "";
    while (!s_done(L, &why)) {
        double t0 = ap_now();
        ap_batch_t *b = s_take(io, 0.1);
        L->wait_acc += ap_now() - t0;
        if (!b) {
            if (io->dead) {
                rc = ap_err("learner: the I/O thread has stopped");
                break;
            }
            continue;
        }
        ap_learner_step_t st;
        if (ap_learner_step_core(L, b, &st) < 0) {
            rc = -1;
            ap_batch_destroy(&b);
            break;
        }
        const long step = (long)L->version.step;
        if (st.skipped == AP_LEARNER_STEPPED &&
            (cfg->run.sync || step % cfg->learner.sync_every == 0 || step >= cfg->run.max_steps)) {
            double t = ap_now();
            if (s_publish(io) < 0) {
                rc = -1;
                ap_batch_destroy(&b);
                break;
            }
            published = L->version;
            double dt = ap_now() - t;
            st.publish_seconds += dt;
            st.transport_seconds += dt;
            st.seconds += dt;
        }
        s_step_done(io);
        if (ap_learner_after_step(L, b, &st) < 0) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
        ap_batch_destroy(&b);
        skips = st.skipped == AP_LEARNER_STEPPED ? 0 : skips + 1;
        if (cfg->learner.max_skips_in_a_row > 0 && skips >= cfg->learner.max_skips_in_a_row) {
            snprintf(skip_why, sizeof skip_why,
                     "%d batches in a row skipped (the last for %s): the run cannot train "
                     "(learner.max_skips_in_a_row)",
                     skips, ap_learner_skip_name(st.skipped));
            ap_log(AP_LOG_ERROR, "learner: %s", skip_why);
            why = skip_why;
            break;
        }
    }
    if (rc == 0)
        ap_log(AP_LOG_INFO, "learner: stopping at step %llu: %s",
               (unsigned long long)L->version.step, why);
    if (rc == 0 && ap_version_cmp(published, L->version) != 0 && s_publish(io) < 0)
        ap_log(AP_LOG_WARN, "learner: final publish: %s", ap_errmsg());
    if (s_publish_wait(io) < 0) ap_log(AP_LOG_WARN, "%s", ap_errmsg());
    L->before_update = NULL;
    L->before_update_data = NULL;
    /* the final checkpoint while the I/O thread still heartbeats and serves weights */
    if (L->dir && L->last_ckpt != (long)L->version.step && ap_learner_checkpoint(L) < 0) {
        ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
        if (rc == 0) rc = -1;
    }
    pthread_mutex_lock(&io->mu);
    long received = io->received, resets = io->resets, late = io->late, bad = io->bad_parts;
    pthread_mutex_unlock(&io->mu);
    s_io_destroy(io);
    ap_log(AP_LOG_INFO, "learner: %ld batches received, %ld resets, %ld late parts, %ld bad parts",
           received, resets, late, bad);
    return rc;
}
