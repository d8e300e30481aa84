/* teacher.c: the teacher service (teacher.h): one DEALER to the buffer's teacher ROUTER on the
 * caller's libev loop (DESIGN.md "Conversations"; research/transport.md section 4, "teacher
 * side").
 *
 * Requests are held in arrival order. An ev_idle watcher runs while any is held and scores one
 * pass per loop turn: the requests at the head whose completion tokens fit teacher.max_batch_
 * tokens (at least one) go through ap_teacher_score_many together (one scorer, whose KV cache
 * lives as long as the service), and each is answered with
 * SCORES at once. Between passes the loop runs, so heartbeats, new requests and RESETs are
 * handled; a pass is bounded by max_batch_tokens, which keeps it well under the 3 heartbeat
 * periods after which the buffer would declare this teacher dead. A housekeeping timer sends
 * HEARTBEAT, notices a silent buffer (3 periods: drop what is held, HELLO again), swaps in a new
 * weights version for a `current` self-teacher (between passes only), and writes the metrics.
 * In simulate mode no model exists: answers are random valid scores, each sent
 * simulate_delay_s after its request arrived (a timer-driven stand-in for compute). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/teacher.h"
#include "apprentice/weights.h"

typedef struct {
    uint64_t request_id;
    ap_group_t *g;         /* owned */
    ap_teacher_params_t p; /* as the request asked (tau_s from the config) */
    double t_in;           /* ap_now() at arrival */
} s_job_t;

struct ap_teacher {
    const ap_config_t *cfg;
    ap_teacher_opts_t o;
    char name[AP_NAME_MAX];
    struct ev_loop *loop;
    ap_sock_t *sock;
    ap_wclient_t *wc;
    ap_teacher_scorer_t *scorer; /* NULL in simulate mode */
    ev_timer tick;
    ev_idle work;
    s_job_t *jobs; /* FIFO */
    int n_jobs, cap_jobs;
    ap_scores_t **outbox; /* answers refused with EAGAIN, sent from on_writable */
    int n_out, cap_out;
    double hb, last_recv, last_sent, last_hello;
    int hello_sent; /* HELLO sent (a follow_weights teacher waits for weights first) */
    int stopped;
    ap_rng_t rng;
    ap_teacher_stats_t st;
    ap_teacher_score_stats_t ss;
    /* report window */
    double last_report, busy, report_interval;
    uint64_t last_tokens, last_answered;
    ap_ratelimit_t rl;
};

/* ---------------------------------------------------------------- sending */

static int s_send(ap_teacher_t *t, const ap_msg_t *m) {
    if (ap_sock_send(t->sock, NULL, m) < 0) return -1;
    t->last_sent = ap_now();
    return 0;
}

static void s_hello(ap_teacher_t *t) {
    ap_msg_t m = {.type = AP_MSG_HELLO,
                  .u.hello = {.role = AP_ROLE_TEACHER,
                              .id = t->o.id,
                              .capacity = (uint32_t)t->cfg->buffer.teacher_credit,
                              .vocab_size = t->o.vocab_size,
                              .vocab_hash = t->o.vocab_hash,
                              .kind = t->o.kind}};
    snprintf(m.u.hello.name, sizeof m.u.hello.name, "%s", t->name);
    if (s_send(t, &m) < 0) ap_log(AP_LOG_WARN, "%s: HELLO not sent: %s", t->name, ap_errmsg());
    t->last_hello = ap_now();
    t->last_recv = t->last_hello; /* give the buffer 3 periods to answer */
    t->hello_sent = 1;
    t->st.hellos++;
}

static void s_drop_jobs(ap_teacher_t *t, const char *why) {
    if (t->n_jobs > 0)
        ap_log(AP_LOG_INFO, "%s: %d held requests dropped (%s)", t->name, t->n_jobs, why);
    for (int i = 0; i < t->n_jobs; i++)
        ap_group_destroy(&t->jobs[i].g);
    t->st.dropped += (uint64_t)t->n_jobs;
    t->n_jobs = 0;
    for (int i = 0; i < t->n_out; i++)
        ap_scores_destroy(&t->outbox[i]);
    t->n_out = 0;
}

/* Send the answers waiting in the outbox; 0 when it is empty again. */
static int s_flush(ap_teacher_t *t) {
    int i = 0;
    for (; i < t->n_out; i++) {
        ap_msg_t m = {.type = AP_MSG_SCORES, .u.scores = t->outbox[i]};
        if (s_send(t, &m) < 0) break;
        t->st.answered++;
        ap_scores_destroy(&t->outbox[i]);
    }
    memmove(t->outbox, t->outbox + i, (size_t)(t->n_out - i) * sizeof *t->outbox);
    t->n_out -= i;
    return t->n_out;
}

static void s_on_writable(ap_sock_t *s, void *data) {
    ap_teacher_t *t = data;
    if (s_flush(t) == 0) ap_sock_on_writable(s, NULL);
}

static void s_answer(ap_teacher_t *t, ap_scores_t *s) {
    if (t->n_out == t->cap_out) {
        t->cap_out = t->cap_out ? 2 * t->cap_out : 8;
        t->outbox = ap_realloc(t->outbox, (size_t)t->cap_out * sizeof *t->outbox);
    }
    t->outbox[t->n_out++] = s;
    if (s_flush(t) > 0) ap_sock_on_writable(t->sock, s_on_writable);
}

/* ---------------------------------------------------------------- scoring passes */

static void s_take_weights(ap_teacher_t *t) {
    ap_weights_t *w;
    if (!t->wc || ap_wclient_take(t->wc, &w) != 1) return;
    if (ap_model_set_blob(t->o.model, w->params, w->params_bytes) < 0) {
        ap_log(AP_LOG_ERROR, "%s: weights %u:%llu do not fit the model: %s", t->name,
               w->version.gen, (unsigned long long)w->version.step, ap_errmsg());
    } else {
        t->st.version = w->version;
        t->st.versions++;
        ap_log(AP_LOG_INFO, "%s: now scoring with weights %u:%llu", t->name, w->version.gen,
               (unsigned long long)w->version.step);
    }
    ap_weights_destroy(&w);
}

static void s_on_work(struct ev_loop *loop, ev_idle *w, int revents) {
    (void)revents;
    ap_teacher_t *t = w->data;
    if (t->n_out > 0 || t->n_jobs == 0) { /* wait for on_writable / for work */
        ev_idle_stop(loop, w);
        return;
    }
    double t0 = ap_now();
    int n = 0;
    if (t->o.simulate) {
        while (n < t->n_jobs && n < 256 && t->jobs[n].t_in + t->o.simulate_delay_s <= t0)
            n++;
        if (n == 0) { /* the head is not due yet: the tick restarts us */
            ev_idle_stop(loop, w);
            return;
        }
        for (int i = 0; i < n; i++) {
            s_job_t *j = &t->jobs[i];
            ap_scores_t *s =
                ap_teacher_simulate(j->g, &j->p, t->o.vocab_size, t->st.version, &t->rng);
            s->request_id = j->request_id;
            t->st.tokens += (uint64_t)j->g->n_tokens;
            s_answer(t, s);
        }
    } else {
        s_take_weights(t); /* between passes only: a request is scored by one version */
        long budget = t->cfg->teacher.max_batch_tokens, used = 0;
        while (n < t->n_jobs && (n == 0 || used + t->jobs[n].g->n_tokens <= budget))
            used += t->jobs[n++].g->n_tokens;
        const ap_group_t **gs = ap_malloc((size_t)n * sizeof *gs);
        const ap_teacher_params_t **ps = ap_malloc((size_t)n * sizeof *ps);
        ap_scores_t **out = ap_calloc((size_t)n, sizeof *out);
        for (int i = 0; i < n; i++)
            gs[i] = t->jobs[i].g, ps[i] = &t->jobs[i].p;
        if (ap_teacher_score_many(t->scorer, n, gs, ps, t->st.version, (int)budget, out, &t->ss) <
            0) {
            ap_log(AP_LOG_ERROR, "%s: %d requests not scored: %s", t->name, n, ap_errmsg());
            t->st.dropped += (uint64_t)n;
        } else {
            for (int i = 0; i < n; i++) {
                out[i]->request_id = t->jobs[i].request_id;
                t->st.tokens += (uint64_t)gs[i]->n_tokens;
                s_answer(t, out[i]);
            }
        }
        free(out), free(ps), free(gs);
    }
    for (int i = 0; i < n; i++)
        ap_group_destroy(&t->jobs[i].g);
    memmove(t->jobs, t->jobs + n, (size_t)(t->n_jobs - n) * sizeof *t->jobs);
    t->n_jobs -= n;
    t->busy += ap_now() - t0;
    if (t->n_jobs == 0) ev_idle_stop(loop, w);
}

/* ---------------------------------------------------------------- messages */

static void s_on_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s, (void)from;
    ap_teacher_t *t = data;
    if (t->stopped) return;
    t->last_recv = ap_now();
    switch (m->type) {
    case AP_MSG_SCORE_REQUEST: {
        ap_score_request_t *q = &m->u.score_request;
        t->st.requests++;
        if (q->kind != t->o.kind) {
            t->st.wrong_kind++;
            if (ap_ratelimit_ok(&t->rl, 1.0))
                ap_log(AP_LOG_WARN, "%s: request %llu for kind %s dropped (this teacher serves %s)",
                       t->name, (unsigned long long)q->request_id, ap_teacher_kind_name(q->kind),
                       ap_teacher_kind_name(t->o.kind));
            return;
        }
        int limit = 4 * AP_MAX(1, t->cfg->buffer.teacher_credit);
        if (t->n_jobs >= limit) { /* the buffer ignores our capacity: refuse rather than grow */
            t->st.dropped++;
            if (ap_ratelimit_ok(&t->rl, 1.0))
                ap_log(AP_LOG_WARN, "%s: %d requests held (4 x capacity): request %llu dropped",
                       t->name, t->n_jobs, (unsigned long long)q->request_id);
            return;
        }
        if (t->n_jobs == t->cap_jobs) {
            t->cap_jobs = t->cap_jobs ? 2 * t->cap_jobs : 16;
            t->jobs = ap_realloc(t->jobs, (size_t)t->cap_jobs * sizeof *t->jobs);
        }
        int V = t->o.model ? ap_model_config(t->o.model)->vocab_size : t->o.vocab_size;
        s_job_t *j = &t->jobs[t->n_jobs++];
        j->request_id = q->request_id;
        j->g = q->group;
        q->group = NULL;
        j->t_in = t->last_recv;
        j->p = (ap_teacher_params_t){.kind = q->kind,
                                     .full = q->full,
                                     .top_k = q->full ? V : AP_MIN(AP_MAX(q->top_k, 0), V),
                                     .temperature = q->temperature,
                                     .sampled_temperature = (float)t->cfg->sampling.temperature};
        if (!t->o.simulate || t->o.simulate_delay_s <= 0) ev_idle_start(t->loop, &t->work);
        return;
    }
    case AP_MSG_RESET:
        if (!strncmp(m->u.bye.reason, "vocab", 5)) {
            ap_log(AP_LOG_ERROR, "%s: the buffer refuses this teacher: %s", t->name,
                   m->u.bye.reason);
            t->st.fatal = 1;
            ap_teacher_stop(t);
            ev_break(t->loop, EVBREAK_ALL);
            return;
        }
        /* several RESETs answer one burst sent while the buffer was away: one HELLO is enough */
        if (t->hello_sent && ap_now() - t->last_hello < t->hb) return;
        s_drop_jobs(t, m->u.bye.reason);
        s_hello(t);
        return;
    case AP_MSG_BYE:
        ap_log(AP_LOG_INFO, "%s: the buffer left (%s)", t->name, m->u.bye.reason);
        s_drop_jobs(t, "the buffer left");
        return;
    default: /* HEARTBEAT: liveness only */
        return;
    }
}

/* ---------------------------------------------------------------- housekeeping */

static void s_report(ap_teacher_t *t, double now) {
    double dt = now - t->last_report;
    if (!t->o.metrics || dt <= 0) return;
    ap_metrics_t *m = t->o.metrics;
    ap_metrics_begin(m, (long)t->st.answered);
    ap_metrics_add(m, "teacher/tokens_per_s", (double)(t->st.tokens - t->last_tokens) / dt);
    ap_metrics_add(m, "teacher/requests", (double)t->st.answered);
    ap_metrics_add(m, "teacher/requests_per_s", (double)(t->st.answered - t->last_answered) / dt);
    ap_metrics_add(m, "teacher/busy_frac", AP_MIN(1.0, t->busy / dt));
    ap_metrics_add(m, "teacher/held", t->n_jobs);
    ap_metrics_add(m, "teacher/dropped", (double)t->st.dropped);
    ap_metrics_add(m, "teacher/skipped", (double)t->ss.skipped);
    ap_metrics_add(m, "teacher/shared_frac",
                   t->ss.input_tokens ? 1.0 - (double)t->ss.computed_tokens / (double)t->ss.input_tokens
                                      : 0.0);
    ap_metrics_add(m, "teacher/version_gen", t->st.version.gen);
    ap_metrics_add(m, "teacher/version_step", (double)t->st.version.step);
    if (ap_metrics_end(m) < 0) ap_log(AP_LOG_WARN, "%s: metrics: %s", t->name, ap_errmsg());
    t->last_report = now, t->busy = 0;
    t->last_tokens = t->st.tokens, t->last_answered = t->st.answered;
}

static void s_on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    ap_teacher_t *t = w->data;
    double now = ap_now();
    s_take_weights(t);    /* the loop is between passes here too */
    if (!t->hello_sent) { /* a follow_weights teacher: serve once the first version is here */
        if (t->st.versions > 0) s_hello(t);
    } else if (now - t->last_recv > 3 * t->hb) {
        ap_log(AP_LOG_WARN, "%s: the buffer is silent for %.1f s: HELLO again", t->name,
               now - t->last_recv);
        s_drop_jobs(t, "the buffer is silent");
        s_hello(t);
    } else if (now - t->last_sent >= t->hb) {
        ap_msg_t m = {.type = AP_MSG_HEARTBEAT,
                      .u.heartbeat = {.time = ap_wall(), .version = t->st.version}};
        s_send(t, &m);
    }
    if (t->n_jobs > 0) ev_idle_start(loop, &t->work); /* simulate: requests now due */
    if (now - t->last_report >= t->report_interval) s_report(t, now);
}

/* ---------------------------------------------------------------- lifecycle */

ap_teacher_t *ap_teacher_new(ap_net_t *net, struct ev_loop *loop, const ap_teacher_opts_t *o) {
    AP_ASSERT(net && loop && o && o->cfg);
    AP_ASSERT(o->simulate || o->model);
    if ((unsigned)o->kind >= AP_TEACHER_COUNT)
        return ap_err("teacher: kind %d unknown", (int)o->kind), NULL;
    const char *ep = o->endpoint ? o->endpoint : o->cfg->endpoints.buffer_teachers;
    if (!ep || !*ep) return ap_err("teacher: endpoints.buffer_teachers is empty"), NULL;
    if (o->simulate && o->vocab_size < 1)
        return ap_err("teacher: simulate needs the vocabulary size"), NULL;
    ap_teacher_t *t = ap_calloc(1, sizeof *t);
    t->cfg = o->cfg;
    t->o = *o;
    snprintf(t->name, sizeof t->name, "%s", o->name ? o->name : ap_teacher_kind_name(o->kind));
    t->loop = loop;
    t->hb = o->cfg->buffer.heartbeat_ms / 1000.0;
    t->report_interval = o->report_interval > 0 ? o->report_interval : 1.0;
    t->st.version = o->version;
    ap_rng_seed(&t->rng, o->seed, 0x7eac4e5 + (uint64_t)o->id);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = o->vocab_size;
    lim.accept =
        1u << AP_MSG_SCORE_REQUEST | 1u << AP_MSG_HEARTBEAT | 1u << AP_MSG_RESET | 1u << AP_MSG_BYE;
    char sname[96];
    snprintf(sname, sizeof sname, "%s/buffer", t->name);
    ap_sock_opts_t so = {.type = AP_SOCK_DEALER,
                         .endpoint = ep,
                         .server_key = o->buffer_key,
                         .max_msg = 64u << 20,
                         .limits = &lim,
                         .name = sname};
    t->sock = ap_sock_new(net, &so);
    if (!t->sock) {
        free(t);
        return NULL;
    }
    ap_sock_watch(t->sock, loop, s_on_msg, t);
    if (!o->simulate) t->scorer = ap_teacher_scorer_new(o->model, 1);
    if (o->follow_weights) {
        ap_wclient_opts_t wo = {.endpoint = o->cfg->endpoints.weights,
                                .pub_endpoint = o->cfg->endpoints.weights_pub,
                                .server_key = o->learner_key};
        if (!wo.endpoint || !*wo.endpoint) {
            ap_err("teacher: self_weights current needs endpoints.weights");
            ap_teacher_destroy(&t);
            return NULL;
        }
        if (wo.pub_endpoint && !*wo.pub_endpoint) wo.pub_endpoint = NULL;
        t->wc = ap_wclient_spawn(net, &wo);
        if (!t->wc) {
            ap_teacher_destroy(&t);
            return NULL;
        }
    }
    ev_idle_init(&t->work, s_on_work);
    t->work.data = t;
    double tick = AP_MIN(0.1, AP_MAX(0.005, t->hb / 4));
    if (o->simulate && o->simulate_delay_s > 0)
        tick = AP_MIN(tick, AP_MAX(0.002, o->simulate_delay_s / 4));
    ev_timer_init(&t->tick, s_on_tick, tick, tick);
    t->tick.data = t;
    ev_timer_start(loop, &t->tick);
    t->last_report = t->last_recv = t->last_sent = ap_now();
    if (!o->follow_weights) s_hello(t);
    ap_log(AP_LOG_INFO, "%s: %s teacher on %s%s", t->name, ap_teacher_kind_name(o->kind),
           ap_sock_endpoint(t->sock),
           o->simulate         ? " (simulated scores)"
           : o->follow_weights ? " (following the learner's weights)"
                               : "");
    return t;
}

void ap_teacher_stop(ap_teacher_t *t) {
    if (!t || t->stopped) return;
    if (t->hello_sent) {
        ap_msg_t m = {.type = AP_MSG_BYE};
        snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "shutdown");
        s_send(t, &m);
    }
    s_report(t, ap_now());
    t->stopped = 1;
    ev_timer_stop(t->loop, &t->tick);
    ev_idle_stop(t->loop, &t->work);
    ap_sock_unwatch(t->sock);
}

void ap_teacher_destroy(ap_teacher_t **tp) {
    if (!tp || !*tp) return;
    ap_teacher_t *t = *tp;
    if (t->sock) ap_teacher_stop(t);
    ap_wclient_destroy(&t->wc);
    ap_teacher_scorer_destroy(&t->scorer);
    s_drop_jobs(t, "shutdown");
    ap_sock_destroy(&t->sock);
    free(t->jobs);
    free(t->outbox);
    free(t);
    *tp = NULL;
}

void ap_teacher_stats(const ap_teacher_t *t, ap_teacher_stats_t *out) {
    *out = t->st;
    out->held = t->n_jobs;
}
