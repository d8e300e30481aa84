/* test_transport.c: the transport layer over TCP loopback (no CURVE; test_curve.c does that):
 *   1. a 20,000-message burst DEALER -> ROUTER with every message echoed back from inside the
 *      ROUTER's callback, both sockets on one libev loop, the DEALER parking output on EAGAIN
 *      (HWM 1000) and resuming from on_writable: every message and every echo arrives, in order;
 *   2. 5,000 messages queued before the watcher starts are all delivered (no edge needed);
 *   3. a 3-frame message, random bytes and an over-MAXMSGSIZE frame are dropped and counted
 *      while the service keeps serving the next valid message; the watcher reports each drop
 *      with its sender (ap_sock_on_reject);
 *   4. shutdown with messages queued to a dead peer, from SIGTERM via ev_signal, is bounded. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/transport.h"
#include "test.h"

#define BURST 20000

typedef struct {
    ap_sock_t *router, *dealer;
    uint64_t next_send; /* dealer: next seq to send (1-based) */
    uint64_t got;       /* router: messages received */
    uint64_t in_order;  /* router: received with the expected seq */
    uint64_t echoes;    /* dealer: echoes received */
    uint64_t echo_fail; /* router: echo sends refused */
    uint64_t parked;    /* dealer: times output was parked on EAGAIN */
} s_burst_t;

static void s_pump(ap_sock_t *s, void *data);

/* Send until the burst is done or the socket pushes back. */
static void s_pump(ap_sock_t *s, void *data) {
    s_burst_t *b = data;
    while (b->next_send <= BURST) {
        ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .seq = b->next_send};
        m.u.heartbeat.time = (double)b->next_send;
        if (ap_sock_send(s, NULL, &m) < 0) {
            AP_ASSERT(errno == EAGAIN);
            b->parked++;
            ap_sock_on_writable(s, s_pump); /* resume when writable */
            return;
        }
        b->next_send++;
    }
    ap_sock_on_writable(s, NULL);
}

static void s_router_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    s_burst_t *b = data;
    b->got++;
    if (msg->type == AP_MSG_HEARTBEAT && msg->seq == b->got) b->in_order++;
    ap_msg_t echo = {.type = AP_MSG_CREDIT, .seq = msg->seq};
    echo.u.credit.ack_seq = msg->seq;
    if (ap_sock_send(s, from, &echo) < 0) b->echo_fail++;
}

static void s_dealer_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    (void)s, (void)from;
    s_burst_t *b = data;
    if (msg->type == AP_MSG_CREDIT && msg->u.credit.ack_seq == b->echoes + 1) b->echoes++;
    if (b->echoes == BURST) ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void s_start_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    s_burst_t *b = w->data;
    s_pump(b->dealer, b);
}

static void s_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static ap_sock_t *s_router(ap_net_t *net, size_t max_msg, int hwm) {
    ap_sock_opts_t o = {.type = AP_SOCK_ROUTER,
                        .endpoint = "tcp://127.0.0.1:*",
                        .bind = 1,
                        .max_msg = max_msg,
                        .hwm = hwm,
                        .linger_ms = -1,
                        .name = "test/router"};
    ap_sock_t *s = ap_sock_new(net, &o);
    AP_ASSERTF(s, "%s", ap_errmsg());
    return s;
}

static ap_sock_t *s_dealer(ap_net_t *net, const char *ep, int hwm) {
    ap_sock_opts_t o = {
        .type = AP_SOCK_DEALER, .endpoint = ep, .hwm = hwm, .linger_ms = -1, .name = "test/dealer"};
    ap_sock_t *s = ap_sock_new(net, &o);
    AP_ASSERTF(s, "%s", ap_errmsg());
    return s;
}

typedef struct {
    uint64_t got, last_seq;
    int stop_at;
} s_count_t;

static void s_count_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    (void)s, (void)from;
    s_count_t *c = data;
    c->got++;
    c->last_seq = msg->seq;
    if ((int)c->got == c->stop_at) ev_break(EV_DEFAULT, EVBREAK_ALL);
}

typedef struct {
    int rejects, msgs;
    ap_reject_t why;
    ap_peer_t bad_peer, good_peer;
} s_rej_t;

static void s_rej_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *msg, void *data) {
    (void)s, (void)msg;
    s_rej_t *r = data;
    r->msgs++;
    r->good_peer = *from;
    ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void s_rej_cb(ap_sock_t *s, const ap_peer_t *from, ap_reject_t why, void *data) {
    (void)s;
    s_rej_t *r = data;
    r->rejects++;
    r->why = why;
    r->bad_peer = *from;
}

static int s_signalled;
static void s_on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)w, (void)revents;
    s_signalled++;
    ev_break(loop, EVBREAK_ALL);
}
static void s_raise_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)w, (void)revents;
    raise(SIGTERM);
}

int main(void) {
    ap_log_set_role("test_transport", 0);
    struct ev_loop *loop = EV_DEFAULT;
    ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
    AP_ASSERTF(net, "%s", ap_errmsg());

    /* 1. burst with echoes on one loop */
    {
        s_burst_t b = {0};
        b.next_send = 1;
        b.router = s_router(net, 4096, 50000);
        b.dealer = s_dealer(net, ap_sock_endpoint(b.router), 1000);
        ap_sock_watch(b.router, loop, s_router_msg, &b);
        ap_sock_watch(b.dealer, loop, s_dealer_msg, &b);
        ev_timer start, timeout;
        ev_timer_init(&start, s_start_cb, 0.05, 0);
        start.data = &b;
        ev_timer_init(&timeout, s_timeout_cb, 60, 0);
        ev_timer_start(loop, &start);
        ev_timer_start(loop, &timeout);
        double t0 = ap_now();
        ev_run(loop, 0);
        double dt = ap_now() - t0;
        ev_timer_stop(loop, &timeout);
        ev_timer_stop(loop, &start);
        printf("burst: %llu/%d received (%llu in order), %llu/%d echoes, %llu parks, %.2f s\n",
               (unsigned long long)b.got, BURST, (unsigned long long)b.in_order,
               (unsigned long long)b.echoes, BURST, (unsigned long long)b.parked, dt);
        AP_CHECK(b.got == BURST && b.in_order == BURST, "burst lost messages: %llu",
                 (unsigned long long)b.got);
        AP_CHECK(b.echoes == BURST, "echoes lost: %llu", (unsigned long long)b.echoes);
        AP_CHECK(b.echo_fail == 0, "echo sends refused: %llu", (unsigned long long)b.echo_fail);
        AP_CHECK(ap_msg_codec_stats(ap_sock_codec(b.router))->rejected == 0, "rejects in burst");
        ap_sock_destroy(&b.dealer);
        ap_sock_destroy(&b.router);
    }

    /* 2. messages queued before the watcher starts */
    {
        ap_sock_t *r = s_router(net, 4096, 10000), *d = s_dealer(net, ap_sock_endpoint(r), 10000);
        int sent = 0;
        double t0 = ap_now();
        while (sent < 5000 && ap_now() - t0 < 10) {
            ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .seq = (uint64_t)sent + 1};
            if (ap_sock_send(d, NULL, &m) == 0)
                sent++;
            else
                ap_sleep(0.001);
        }
        ap_sleep(0.3); /* everything is in the ROUTER's queue; the fd edge is long gone */
        s_count_t c = {0, 0, 5000};
        ap_sock_watch(r, loop, s_count_msg, &c);
        ev_timer timeout;
        ev_timer_init(&timeout, s_timeout_cb, 10, 0);
        ev_timer_start(loop, &timeout);
        ev_run(loop, 0);
        ev_timer_stop(loop, &timeout);
        printf("queued before watch: %llu/%d received\n", (unsigned long long)c.got, sent);
        AP_CHECK(sent == 5000 && c.got == 5000 && c.last_seq == 5000, "queued: %llu of %d",
                 (unsigned long long)c.got, sent);
        ap_sock_destroy(&d);
        ap_sock_destroy(&r);
    }

    /* 3. bad frames are dropped and counted; the service keeps serving */
    {
        ap_sock_t *r = s_router(net, 4096, 1000);
        ap_sock_t *bad = s_dealer(net, ap_sock_endpoint(r), 1000);
        void *z = ap_sock_zmq(bad);
        zmq_send(z, "a", 1, ZMQ_SNDMORE); /* 3 frames */
        zmq_send(z, "b", 1, ZMQ_SNDMORE);
        zmq_send(z, "c", 1, 0);
        uint8_t junk[200];
        for (int i = 0; i < 200; i++)
            junk[i] = (uint8_t)(i * 37 + 11);
        zmq_send(z, junk, sizeof junk, 0); /* random bytes */
        ap_msg_t ok = {.type = AP_MSG_HEARTBEAT, .seq = 42};
        AP_CHECK(ap_sock_send(bad, NULL, &ok) == 0, "send");
        ap_peer_t p;
        ap_msg_t m;
        int rc = ap_sock_recv_wait(r, &p, &m, 3000);
        AP_CHECK(rc == 1 && m.type == AP_MSG_HEARTBEAT && m.seq == 42, "valid message after junk");
        AP_CHECK(p.rid_len > 0, "routing id");
        ap_msg_clear(&m);
        const ap_msg_stats_t *st = ap_msg_codec_stats(ap_sock_codec(r));
        AP_CHECK(st->by_reason[AP_REJECT_FRAMES] == 1, "frames counted %llu",
                 (unsigned long long)st->by_reason[AP_REJECT_FRAMES]);
        AP_CHECK(st->by_reason[AP_REJECT_PARSE] == 1, "parse counted %llu",
                 (unsigned long long)st->by_reason[AP_REJECT_PARSE]);
        AP_CHECK(ap_sock_events(r)->too_many_frames == 1, "too_many_frames");

        /* reply to a gone peer: EHOSTUNREACH, counted */
        ap_peer_t ghost = p;
        ghost.rid[0] ^= 0xff;
        ap_msg_t reply = {.type = AP_MSG_CREDIT};
        AP_CHECK(ap_sock_send(r, &ghost, &reply) < 0 && errno == EHOSTUNREACH, "unroutable");
        AP_CHECK(ap_sock_events(r)->send_unroutable == 1, "unroutable counted");

        /* an oversized frame (MAXMSGSIZE 4096 + 64) is never delivered; a new client is served */
        uint8_t *big = ap_calloc(1, 10000);
        zmq_send(z, big, 10000, 0);
        free(big);
        rc = ap_sock_recv_wait(r, &p, &m, 500);
        AP_CHECK(rc == 0, "oversized frame delivered");
        if (rc) ap_msg_clear(&m);
        ap_sock_t *good = s_dealer(net, ap_sock_endpoint(r), 1000);
        ok.seq = 43;
        AP_CHECK(ap_sock_send(good, NULL, &ok) == 0, "send");
        rc = ap_sock_recv_wait(r, &p, &m, 3000);
        AP_CHECK(rc == 1 && m.seq == 43, "served after an oversized frame");
        ap_msg_clear(&m);
        ap_sock_destroy(&good);
        ap_sock_destroy(&bad);
        ap_sock_destroy(&r);
    }

    /* 3b. the watcher reports each drop with its sender, for per-peer accounting */
    {
        ap_sock_t *r = s_router(net, 4096, 1000), *d = s_dealer(net, ap_sock_endpoint(r), 1000);
        s_rej_t rj = {0};
        ap_sock_watch(r, loop, s_rej_msg, &rj);
        ap_sock_on_reject(r, s_rej_cb);
        zmq_send(ap_sock_zmq(d), "\xff\xff\xff", 3, 0); /* not an Envelope */
        ap_msg_t ok = {.type = AP_MSG_HEARTBEAT, .seq = 5};
        ap_sock_send(d, NULL, &ok);
        ev_timer timeout;
        ev_timer_init(&timeout, s_timeout_cb, 5, 0);
        ev_timer_start(loop, &timeout);
        ev_run(loop, 0);
        ev_timer_stop(loop, &timeout);
        AP_CHECK(rj.rejects == 1 && rj.why == AP_REJECT_PARSE && rj.msgs == 1, "rejects %d msgs %d",
                 rj.rejects, rj.msgs);
        AP_CHECK(rj.bad_peer.rid_len > 0 && rj.bad_peer.rid_len == rj.good_peer.rid_len &&
                     !memcmp(rj.bad_peer.rid, rj.good_peer.rid, rj.bad_peer.rid_len),
                 "reject names its sender");
        ap_sock_destroy(&d);
        ap_sock_destroy(&r);
    }

    /* 4. SIGTERM through ev_signal; shutdown with output queued to a dead peer is bounded */
    {
        ap_sock_t *d = s_dealer(net, "tcp://127.0.0.1:1", 1000); /* nobody listens */
        for (int i = 0; i < 100; i++) {
            ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .seq = (uint64_t)i + 1};
            ap_sock_send(d, NULL, &m); /* queued: never deliverable */
        }
        ap_signals_t sg;
        ap_signals_start(&sg, loop, s_on_signal, NULL);
        ev_timer raiser, timeout;
        ev_timer_init(&raiser, s_raise_cb, 0.05, 0);
        ev_timer_init(&timeout, s_timeout_cb, 5, 0);
        ev_timer_start(loop, &raiser);
        ev_timer_start(loop, &timeout);
        ev_run(loop, 0);
        ev_timer_stop(loop, &timeout);
        ap_signals_stop(&sg);
        AP_CHECK(s_signalled == 1, "SIGTERM seen %d times", s_signalled);
        double t0 = ap_now();
        ap_sock_destroy(&d);
        ap_net_destroy(&net);
        double dt = ap_now() - t0;
        printf("shutdown with 100 undeliverable messages queued: %.3f s\n", dt);
        AP_CHECK(dt < 1.0, "shutdown took %.2f s", dt);
        AP_CHECK(net == NULL, "destroy NULLs");
    }
    return ap_test_result();
}
