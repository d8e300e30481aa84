/* actor_link.c: the actor -> buffer conversation on an I/O thread (actors/actor_link.h).
 *
 * The thread runs a libev loop owning the DEALER: CREDIT adds credit and names the learner's
 * newest version; RESET sends HELLO again and zeroes the credit; BYE from the buffer is logged;
 * a timer sends HEARTBEAT (version held) every period and notices a silent buffer. The caller's
 * thread queues groups under the mutex and wakes the loop with an ev_async; the loop sends them
 * while credit lasts (a send refused with EAGAIN parks the queue until the socket is writable). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/actor_link.h"
#include "apprentice/base.h"

typedef struct s_item {
    ap_group_t *g;
    struct s_item *next;
} s_item_t;

struct ap_actor_link {
    ap_actor_link_opts_t o;
    char name[AP_NAME_MAX];
    struct ev_loop *loop;
    ap_sock_t *sock;
    pthread_t th;
    int started;
    ev_async wake;
    ev_timer hb;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    int quit;
    long credit;
    ap_version_t latest, held;
    s_item_t *head, *tail;
    long queued;
    ap_actor_link_stats_t st;
    uint64_t seq;
    double last_heard;
    ap_ratelimit_t rl;
};

static void s_send_ctl(ap_actor_link_t *l, ap_msg_t *m) {
    if (ap_sock_send(l->sock, NULL, m) < 0 && ap_ratelimit_ok(&l->rl, 5.0))
        ap_log(AP_LOG_WARN, "%s: send %s: %s", l->name, ap_msg_type_name(m->type), ap_errmsg());
}

static void s_hello(ap_actor_link_t *l) {
    ap_msg_t m = {.type = AP_MSG_HELLO};
    m.u.hello.role = AP_ROLE_ACTOR;
    m.u.hello.id = l->o.id;
    snprintf(m.u.hello.name, sizeof m.u.hello.name, "%s", l->name);
    m.u.hello.vocab_size = l->o.vocab_size;
    m.u.hello.vocab_hash = l->o.vocab_hash;
    s_send_ctl(l, &m);
}

static void s_on_writable(ap_sock_t *s, void *data);

/* Send queued groups while credit lasts. Called on the loop thread with mu held. */
static void s_flush(ap_actor_link_t *l) {
    while (l->head && l->credit > 0) {
        s_item_t *it = l->head;
        ap_msg_t m = {.type = AP_MSG_GROUP, .seq = l->seq + 1, .u.group = it->g};
        if (ap_sock_send(l->sock, NULL, &m) < 0) {
            if (errno == EAGAIN) { /* HWM: resume when writable */
                ap_sock_on_writable(l->sock, s_on_writable);
                return;
            }
            l->st.dropped++; /* a group that does not encode: a bug on our side */
            ap_log(AP_LOG_ERROR, "%s: group %llu not sent: %s", l->name,
                   (unsigned long long)it->g->id, ap_errmsg());
        } else {
            l->seq++;
            l->credit--;
            l->st.sent++;
        }
        l->head = it->next;
        if (!l->head) l->tail = NULL;
        l->queued--;
        ap_group_destroy(&it->g);
        free(it);
    }
    ap_sock_on_writable(l->sock, NULL);
}

static void s_on_writable(ap_sock_t *s, void *data) {
    (void)s;
    ap_actor_link_t *l = data;
    pthread_mutex_lock(&l->mu);
    s_flush(l);
    pthread_mutex_unlock(&l->mu);
}

static void s_on_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s, (void)from;
    ap_actor_link_t *l = data;
    pthread_mutex_lock(&l->mu);
    l->last_heard = ap_now();
    if (l->st.silent) {
        ap_log(AP_LOG_INFO, "%s: the buffer answers again", l->name);
        l->st.silent = 0;
    }
    switch (m->type) {
    case AP_MSG_CREDIT:
        l->credit += m->u.credit.grant;
        l->st.granted += m->u.credit.grant;
        if ((long)m->u.credit.ack_seq > l->st.acked) l->st.acked = (long)m->u.credit.ack_seq;
        if (!ap_version_is_zero(m->u.credit.latest) &&
            ap_version_cmp(m->u.credit.latest, l->latest) > 0)
            l->latest = m->u.credit.latest;
        s_flush(l);
        pthread_cond_broadcast(&l->cv);
        break;
    case AP_MSG_RESET:
        ap_log(AP_LOG_WARN, "%s: the buffer reset us (%s): HELLO again", l->name, m->u.bye.reason);
        l->st.resets++;
        l->credit = 0;
        s_hello(l);
        pthread_cond_broadcast(&l->cv);
        break;
    case AP_MSG_BYE:
        ap_log(AP_LOG_INFO, "%s: the buffer is leaving (%s)", l->name, m->u.bye.reason);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&l->mu);
}

static void s_on_hb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    ap_actor_link_t *l = w->data;
    pthread_mutex_lock(&l->mu);
    ap_msg_t m = {.type = AP_MSG_HEARTBEAT};
    m.u.heartbeat.time = ap_wall();
    m.u.heartbeat.version = l->held;
    s_send_ctl(l, &m);
    if (!l->st.silent && ap_now() - l->last_heard > 3 * l->o.heartbeat_s) {
        l->st.silent = 1;
        ap_log(AP_LOG_WARN, "%s: nothing from the buffer for %.1f s (credit %ld, %ld queued)",
               l->name, ap_now() - l->last_heard, l->credit, l->queued);
    }
    s_flush(l);
    pthread_mutex_unlock(&l->mu);
}

static void s_on_wake(struct ev_loop *loop, ev_async *w, int revents) {
    (void)revents;
    ap_actor_link_t *l = w->data;
    pthread_mutex_lock(&l->mu);
    s_flush(l);
    int quit = l->quit;
    if (quit) {
        ap_msg_t m = {.type = AP_MSG_BYE};
        snprintf(m.u.bye.reason, sizeof m.u.bye.reason, "shutdown");
        s_send_ctl(l, &m);
    }
    pthread_mutex_unlock(&l->mu);
    if (quit) ev_break(loop, EVBREAK_ALL);
}

static void *s_main(void *arg) {
    ap_actor_link_t *l = arg;
    ev_run(l->loop, 0);
    return NULL;
}

ap_actor_link_t *ap_actor_link_new(ap_net_t *net, const ap_actor_link_opts_t *o) {
    if (!o->endpoint || !o->endpoint[0]) {
        ap_err("actor: endpoints.buffer_actors is empty");
        return NULL;
    }
    ap_actor_link_t *l = ap_calloc(1, sizeof *l);
    l->o = *o;
    snprintf(l->name, sizeof l->name, "%s", o->name ? o->name : "actor");
    if (!(l->o.heartbeat_s > 0)) l->o.heartbeat_s = 1.0;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->last_heard = ap_now();
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = o->vocab_size;
    lim.accept =
        1u << AP_MSG_CREDIT | 1u << AP_MSG_HEARTBEAT | 1u << AP_MSG_RESET | 1u << AP_MSG_BYE;
    ap_sock_opts_t so = {.type = AP_SOCK_DEALER,
                         .endpoint = o->endpoint,
                         .server_key = o->server_key,
                         .max_msg = 1 << 20,
                         .limits = &lim,
                         .name = "actor/buffer"};
    if (!(l->sock = ap_sock_new(net, &so))) {
        ap_err("actor: buffer socket %s: %s", o->endpoint, ap_errmsg());
        ap_actor_link_destroy(&l);
        return NULL;
    }
    l->loop = ev_loop_new(EVFLAG_AUTO);
    ap_sock_watch(l->sock, l->loop, s_on_msg, l);
    ev_async_init(&l->wake, s_on_wake);
    l->wake.data = l;
    ev_async_start(l->loop, &l->wake);
    ev_timer_init(&l->hb, s_on_hb, l->o.heartbeat_s, l->o.heartbeat_s);
    l->hb.data = l;
    ev_timer_start(l->loop, &l->hb);
    s_hello(l);
    if (pthread_create(&l->th, NULL, s_main, l) != 0) {
        ap_err("actor: cannot start the I/O thread");
        ap_actor_link_destroy(&l);
        return NULL;
    }
    l->started = 1;
    return l;
}

void ap_actor_link_destroy(ap_actor_link_t **lp) {
    if (!lp || !*lp) return;
    ap_actor_link_t *l = *lp;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->quit = 1;
        pthread_mutex_unlock(&l->mu);
        ev_async_send(l->loop, &l->wake);
        pthread_join(l->th, NULL);
    }
    if (l->loop) {
        ap_sock_unwatch(l->sock);
        ev_async_stop(l->loop, &l->wake);
        ev_timer_stop(l->loop, &l->hb);
    }
    while (l->head) {
        s_item_t *it = l->head;
        l->head = it->next;
        ap_group_destroy(&it->g);
        free(it);
    }
    ap_sock_destroy(&l->sock);
    if (l->loop) ev_loop_destroy(l->loop);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    *lp = NULL;
}

int ap_actor_link_wait_credit(ap_actor_link_t *l, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&l->mu);
    while (l->credit <= l->queued)
        if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT) break;
    int ok = l->credit > l->queued;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

int ap_actor_link_available(ap_actor_link_t *l) {
    pthread_mutex_lock(&l->mu);
    long n = l->credit - l->queued;
    pthread_mutex_unlock(&l->mu);
    return n > 0 ? (int)AP_MIN(n, (long)INT32_MAX) : 0;
}

void ap_actor_link_send(ap_actor_link_t *l, ap_group_t **g) {
    s_item_t *it = ap_calloc(1, sizeof *it);
    it->g = *g;
    *g = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->queued++;
    pthread_mutex_unlock(&l->mu);
    ev_async_send(l->loop, &l->wake);
}

ap_version_t ap_actor_link_latest(ap_actor_link_t *l) {
    pthread_mutex_lock(&l->mu);
    ap_version_t v = l->latest;
    pthread_mutex_unlock(&l->mu);
    return v;
}

void ap_actor_link_set_version(ap_actor_link_t *l, ap_version_t v) {
    pthread_mutex_lock(&l->mu);
    l->held = v;
    pthread_mutex_unlock(&l->mu);
}

void ap_actor_link_stats(ap_actor_link_t *l, ap_actor_link_stats_t *out) {
    pthread_mutex_lock(&l->mu);
    *out = l->st;
    out->queued = l->queued;
    out->credit = l->credit;
    pthread_mutex_unlock(&l->mu);
}
