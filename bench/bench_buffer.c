/* bench_buffer.c: `apprentice bench buffer`: the buffer's throughput with simulated peers
 * (docs/PERFORMANCE.md, "Buffer"). Two threads, as two processes would be on the 2 cores:
 *   - the buffer (ap_buffer_t) on its own libev loop;
 *   - every simulated peer on a second loop: N actors (DEALERs sending groups of G = 8
 *     trajectories x 32 tokens as fast as credit allows, with heartbeats), M simulated teachers
 *     (the real teacher service, ap_teacher_t with simulate: top-K 16 of V = 32000, no model),
 *     and a learner keeping 4 BATCH_REQUESTs of B = 64 trajectories in flight (λ = 1).
 * All over ipc:// in a temporary directory. Per actor count: warm-up, then groups/s reaching
 * the learner over the measured window; then the actors stop and the pipeline drains, and the
 * books are checked: every group sent was taken, and is dropped (counted, by reason), served to
 * the learner, or still held; `lost` = what none of these explains (must be 0). Last, the
 * learner's wait when the queues are full: requests stop until the ready queue holds
 * buffer.capacity_groups groups (actors blocked by credit), then one request at a time: the
 * time from BATCH_REQUEST sent to the last BATCH part received. One JSON line per actor count.
 * Thread CPU time (CLOCK_THREAD_CPUTIME_ID) tells how much of a core the buffer needs. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/config.h"
#include "apprentice/rng.h"
#include "apprentice/teacher.h"
#include "apprentice/transport.h"
#include "bench/bench.h"

#define S_V 32000
#define S_MAX_ACTORS 1024

typedef struct {
    int actors, teachers, G, tokens, top_k, B, prefetch, credit, capacity, teacher_credit;
    double seconds, warmup;
} s_opts_t;

static double s_clock(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double s_thread_cpu(void) {
    return s_clock(CLOCK_THREAD_CPUTIME_ID);
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_quantile(double *x, int n, double q) {
    if (n == 0) return 0;
    qsort(x, (size_t)n, sizeof *x, s_cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return x[i];
}

/* ---------------------------------------------------------------- the buffer thread */

typedef struct {
    const ap_config_t *cfg;
    ap_net_t *net;
    const char *eps[3];
    struct ev_loop *loop;
    ev_async stop;
    ap_buffer_t *b;
    ap_buffer_stats_t st; /* read after the thread ended */
    atomic_int ready;
} s_bufthread_t;

static void s_on_stop(struct ev_loop *loop, ev_async *w, int revents) {
    (void)w, (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *s_buffer_main(void *arg) {
    s_bufthread_t *t = arg;
    t->loop = ev_loop_new(EVFLAG_AUTO);
    ap_buffer_opts_t o = {.cfg = t->cfg,
                          .vocab_size = S_V,
                          .actors_endpoint = t->eps[0],
                          .teachers_endpoint = t->eps[1],
                          .learner_endpoint = t->eps[2]};
    t->b = ap_buffer_new(t->net, t->loop, &o);
    AP_ASSERTF(t->b, "%s", ap_errmsg());
    ev_async_init(&t->stop, s_on_stop);
    ev_async_start(t->loop, &t->stop);
    atomic_store(&t->ready, 1);
    ev_run(t->loop, 0);
    ap_buffer_stats(t->b, &t->st);
    ap_buffer_destroy(&t->b);
    ev_loop_destroy(t->loop);
    return NULL;
}

/* ---------------------------------------------------------------- the peers */

typedef struct s_run s_run_t;

/* A simulated actor: a DEALER driven by one ev_io on its ZMQ_FD (not ap_sock_watch, whose
 * per-socket prepare/check watchers cost O(sockets) per loop turn: 256 actors in one thread
 * would measure the harness, not the buffer). The socket is drained whenever its fd wakes the
 * loop and after every send from it (a send may consume the edge). */
typedef struct {
    s_run_t *run;
    ap_sock_t *s;
    ev_io io;
    int id, credit;
    uint64_t seq;
} s_actor_t;

struct s_run {
    s_opts_t o;
    struct ev_loop *loop;
    s_actor_t *actors;
    ap_teacher_t **teachers;
    ap_sock_t *learner;
    ap_group_t *tmpl; /* the group every actor sends (id and seq change) */
    ev_timer hb;
    int sending;    /* actors send while they hold credit */
    int requesting; /* the learner keeps `prefetch` requests in flight */
    int prefetch;
    uint64_t next_group, sent;
    uint64_t next_req, outstanding;
    double req_sent[4096]; /* request id % 4096 -> ap_now() at send */
    uint64_t groups_rx, batches_rx;
    double *waits; /* learner waits (ms) */
    int n_waits, cap_waits;
    size_t bytes_group, bytes_batch_item;
};

static void s_actor_send(s_actor_t *a) {
    s_run_t *r = a->run;
    while (r->sending && a->credit > 0) {
        r->tmpl->id = ((uint64_t)a->id << 40) | ++a->seq;
        ap_msg_t m = {.type = AP_MSG_GROUP, .seq = a->seq, .u.group = r->tmpl};
        if (ap_sock_send(a->s, NULL, &m) < 0) break;
        a->credit--;
        r->sent++;
    }
}

static void s_actor_drain(s_actor_t *a) {
    void *z = ap_sock_zmq(a->s);
    for (;;) {
        int ev = 0;
        size_t n = sizeof ev;
        if (zmq_getsockopt(z, ZMQ_EVENTS, &ev, &n) != 0 || !(ev & ZMQ_POLLIN)) return;
        ap_peer_t from;
        ap_msg_t m;
        if (ap_sock_recv(a->s, &from, &m) <= 0) continue;
        if (m.type == AP_MSG_CREDIT) {
            a->credit += (int)m.u.credit.grant;
            s_actor_send(a);
        } else if (m.type == AP_MSG_RESET) {
            ap_log(AP_LOG_WARN, "bench: actor %d got RESET (%s)", a->id, m.u.bye.reason);
        }
        ap_msg_clear(&m);
    }
}

static void s_on_actor_io(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    s_actor_drain(w->data);
}

static void s_request(s_run_t *r) {
    while (r->requesting && r->outstanding < (uint64_t)r->prefetch) {
        uint64_t id = ++r->next_req;
        ap_msg_t m = {.type = AP_MSG_BATCH_REQUEST,
                      .u.batch_request = {
                          .request_id = id, .learner_version = {1, 0}, .trajectories = r->o.B}};
        r->req_sent[id % 4096] = ap_now();
        if (ap_sock_send(r->learner, NULL, &m) < 0) break;
        r->outstanding++;
    }
}

static void s_on_learner_msg(ap_sock_t *s, const ap_peer_t *from, ap_msg_t *m, void *data) {
    (void)s, (void)from;
    s_run_t *r = data;
    if (m->type != AP_MSG_BATCH) return;
    const ap_batch_t *b = m->u.batch;
    r->groups_rx += (uint64_t)b->n_items;
    if (b->part != b->parts - 1) return;
    r->batches_rx++;
    r->outstanding--;
    if (r->n_waits == r->cap_waits) {
        r->cap_waits = r->cap_waits ? 2 * r->cap_waits : 1024;
        r->waits = ap_realloc(r->waits, (size_t)r->cap_waits * sizeof *r->waits);
    }
    r->waits[r->n_waits++] = (ap_now() - r->req_sent[b->request_id % 4096]) * 1e3;
    s_request(r);
}

static void s_on_hb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop, (void)revents;
    s_run_t *r = w->data;
    ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .u.heartbeat = {.time = ap_wall()}};
    for (int i = 0; i < r->o.actors; i++) {
        ap_sock_send(r->actors[i].s, NULL, &m);
        s_actor_drain(&r->actors[i]);
    }
    ap_sock_send(r->learner, NULL, &m);
}

static void s_hello(ap_sock_t *s, ap_role_t role, int id, const char *name) {
    ap_msg_t m = {.type = AP_MSG_HELLO, .u.hello = {.role = role, .id = id, .vocab_size = S_V}};
    snprintf(m.u.hello.name, sizeof m.u.hello.name, "%s", name);
    ap_sock_send(s, NULL, &m);
}

/* Turn the peers' loop for `seconds` (or until cond). */
static void s_spin(s_run_t *r, double seconds, int (*cond)(s_run_t *)) {
    double t0 = ap_now();
    while (ap_now() - t0 < seconds && !(cond && cond(r)))
        ev_run(r->loop, EVRUN_ONCE);
}

static int s_drained(s_run_t *r) {
    return r->outstanding == 0;
}

/* One actor count: JSON object, or NULL on a set-up failure. */
static json_t *s_one(const s_opts_t *o, int run_no) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/apprentice-bench-buffer-%d-%d", (int)getpid(), run_no);
    if (ap_mkdirs(dir) < 0) return ap_log(AP_LOG_ERROR, "%s", ap_errmsg()), NULL;
    char ep[3][192];
    static const char *names[3] = {"actors", "teachers", "learner"};
    for (int i = 0; i < 3; i++)
        snprintf(ep[i], sizeof ep[i], "ipc://%s/%s.ipc", dir, names[i]);
    ap_config_t *cfg = ap_config_new();
    cfg->objective.gkd.c.enabled = 1; /* the external teacher scores every group */
    cfg->sampling.group_size = o->G;
    cfg->batch.size = o->B;
    cfg->batch.on_policy_fraction = 1.0;
    cfg->teacher.top_k = o->top_k;
    cfg->buffer.actor_credit = o->credit;
    cfg->buffer.teacher_credit = o->teacher_credit;
    cfg->buffer.capacity_groups = o->capacity;
    cfg->buffer.heartbeat_ms = 1000;
    free(cfg->endpoints.buffer_teachers);
    cfg->endpoints.buffer_teachers = ap_strdup(ep[1]);
    ap_net_opts_t no = {.io_threads = 1};
    ap_net_t *net = ap_net_new(&no);
    s_bufthread_t bt = {.cfg = cfg, .net = net, .eps = {ep[0], ep[1], ep[2]}};
    pthread_t th;
    pthread_create(&th, NULL, s_buffer_main, &bt);
    while (!atomic_load(&bt.ready))
        ap_sleep(0.001);

    s_run_t r = {.o = *o, .prefetch = o->prefetch};
    r.loop = ev_loop_new(EVFLAG_AUTO);
    int *len = ap_malloc((size_t)o->G * sizeof *len);
    for (int i = 0; i < o->G; i++)
        len[i] = o->tokens;
    r.tmpl = ap_group_new(o->G, 16, len, NULL);
    free(len);
    ap_rng_t rng;
    ap_rng_seed(&rng, 1, 0);
    for (int i = 0; i < r.tmpl->n_prompt; i++)
        r.tmpl->prompt[i] = (int32_t)ap_rng_below(&rng, S_V);
    for (int t = 0; t < r.tmpl->n_tokens; t++) {
        r.tmpl->tokens[t] = (int32_t)ap_rng_below(&rng, S_V);
        r.tmpl->logprobs[t] = -(float)ap_rng_uniform(&rng) * 4;
    }
    r.tmpl->version = (ap_version_t){1, 0};
    r.actors = ap_calloc((size_t)o->actors, sizeof *r.actors);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = S_V;
    for (int i = 0; i < o->actors; i++) {
        char name[32];
        snprintf(name, sizeof name, "actor-%d", i);
        ap_sock_opts_t so = {.type = AP_SOCK_DEALER,
                             .endpoint = ep[0],
                             .max_msg = 1u << 20,
                             .limits = &lim,
                             .linger_ms = 0,
                             .name = "bench/actor"};
        r.actors[i] = (s_actor_t){.run = &r, .id = i, .s = ap_sock_new(net, &so)};
        AP_ASSERTF(r.actors[i].s, "%s", ap_errmsg());
        int fd;
        size_t fdlen = sizeof fd;
        AP_ASSERT(zmq_getsockopt(ap_sock_zmq(r.actors[i].s), ZMQ_FD, &fd, &fdlen) == 0);
        ev_io_init(&r.actors[i].io, s_on_actor_io, fd, EV_READ);
        r.actors[i].io.data = &r.actors[i];
        ev_io_start(r.loop, &r.actors[i].io);
        s_hello(r.actors[i].s, AP_ROLE_ACTOR, i, name);
        s_actor_drain(&r.actors[i]);
    }
    r.teachers = ap_calloc((size_t)o->teachers, sizeof *r.teachers);
    for (int i = 0; i < o->teachers; i++) {
        char name[32];
        snprintf(name, sizeof name, "teacher-external-%d", i);
        ap_teacher_opts_t to = {.cfg = cfg,
                                .kind = AP_TEACHER_EXTERNAL,
                                .id = i,
                                .name = name,
                                .simulate = 1,
                                .vocab_size = S_V,
                                .seed = (uint64_t)i};
        r.teachers[i] = ap_teacher_new(net, r.loop, &to);
        AP_ASSERTF(r.teachers[i], "%s", ap_errmsg());
    }
    ap_sock_opts_t lo = {.type = AP_SOCK_DEALER,
                         .endpoint = ep[2],
                         .max_msg = 256u << 20,
                         .limits = &lim,
                         .linger_ms = 0,
                         .name = "bench/learner"};
    r.learner = ap_sock_new(net, &lo);
    ap_sock_watch(r.learner, r.loop, s_on_learner_msg, &r);
    s_hello(r.learner, AP_ROLE_LEARNER, 0, "learner-0");
    ev_timer_init(&r.hb, s_on_hb, 0.5, 0.5);
    r.hb.data = &r;
    ev_timer_start(r.loop, &r.hb);
    /* wire sizes of one group, its scores, and one batch item */
    {
        ap_msg_t gm = {.type = AP_MSG_GROUP, .seq = 1, .u.group = r.tmpl};
        r.bytes_group = ap_msg_encoded_size(&gm);
    }
    ap_teacher_params_t tp;
    ap_teacher_params_for(&tp, cfg, AP_TEACHER_EXTERNAL, S_V);
    ap_scores_t *sc = ap_teacher_simulate(r.tmpl, &tp, S_V, (ap_version_t){0, 0}, &rng);
    ap_msg_t sm = {.type = AP_MSG_SCORES, .u.scores = sc};
    size_t bytes_scores = ap_msg_encoded_size(&sm);
    ap_batch_item_t item = {.group = r.tmpl, .n_scores = 1, .scores = &sc};
    ap_batch_t one = {.parts = 1, .n_items = 1, .items = &item};
    ap_msg_t bm = {.type = AP_MSG_BATCH, .u.batch = &one};
    r.bytes_batch_item = ap_msg_encoded_size(&bm);
    ap_scores_destroy(&sc);

    /* warm-up, then the measured window */
    r.sending = 1, r.requesting = 1;
    for (int i = 0; i < o->actors; i++) {
        s_actor_send(&r.actors[i]);
        s_actor_drain(&r.actors[i]);
    }
    s_request(&r);
    s_spin(&r, o->warmup, NULL);
    uint64_t g0 = r.groups_rx;
    int w0 = r.n_waits;
    clockid_t bclock;
    pthread_getcpuclockid(th, &bclock);
    double c0 = s_thread_cpu(), b0 = s_clock(bclock), p0 = s_clock(CLOCK_PROCESS_CPUTIME_ID);
    double t0 = ap_now();
    s_spin(&r, o->seconds, NULL);
    double dt = ap_now() - t0, peers_cpu = s_thread_cpu() - c0, buffer_cpu = s_clock(bclock) - b0;
    double total_cpu = s_clock(CLOCK_PROCESS_CPUTIME_ID) - p0; /* + ZeroMQ's I/O thread */
    uint64_t groups = r.groups_rx - g0;
    double steady_wait = s_quantile(r.waits + w0, r.n_waits - w0, 0.5);
    /* the learner's wait with full queues */
    r.requesting = 0;
    s_spin(&r, 5.0, s_drained);
    s_spin(&r, 1.0, NULL); /* actors fill the queue up to capacity, then credit stops them */
    r.prefetch = 1;
    int w1 = r.n_waits;
    for (int q = 0; q < 20 && q < o->capacity * o->G / o->B; q++) {
        r.requesting = 1;
        s_request(&r);
        r.requesting = 0;
        s_spin(&r, 2.0, s_drained);
    }
    int n_full = r.n_waits - w1;
    double full_med = s_quantile(r.waits + w1, n_full, 0.5);
    double full_p95 = s_quantile(r.waits + w1, n_full, 0.95);
    /* drain: actors stop, the learner takes what is left */
    r.sending = 0;
    r.prefetch = o->prefetch;
    r.requesting = 1;
    s_request(&r);
    s_spin(&r, 1.5, NULL);
    r.requesting = 0;
    s_spin(&r, 2.0, s_drained);
    ev_async_send(bt.loop, &bt.stop);
    pthread_join(th, NULL);
    const ap_buffer_stats_t *st = &bt.st;
    int64_t lost = (int64_t)r.sent - (int64_t)st->groups_in;  /* sent but never taken */
    lost += (int64_t)st->served_first - (int64_t)r.groups_rx; /* served but not received */
    int64_t unexplained = (int64_t)st->groups_in - (int64_t)(st->drops_total + st->served_first +
                                                             (uint64_t)st->held_unserved);

    json_t *j = json_object();
    json_object_set_new(j, "bench", json_string("buffer"));
    json_object_set_new(j, "actors", json_integer(o->actors));
    json_object_set_new(j, "teachers", json_integer(o->teachers));
    json_object_set_new(j, "G", json_integer(o->G));
    json_object_set_new(j, "tokens", json_integer(o->tokens));
    json_object_set_new(j, "top_k", json_integer(o->top_k));
    json_object_set_new(j, "V", json_integer(S_V));
    json_object_set_new(j, "B", json_integer(o->B));
    json_object_set_new(j, "actor_credit", json_integer(o->credit));
    json_object_set_new(j, "teacher_credit", json_integer(o->teacher_credit));
    json_object_set_new(j, "seconds", json_real(dt));
    json_object_set_new(j, "groups_per_s", json_real((double)groups / dt));
    json_object_set_new(j, "trajectories_per_s", json_real((double)groups * o->G / dt));
    json_object_set_new(j, "sent", json_integer((json_int_t)r.sent));
    json_object_set_new(j, "taken", json_integer((json_int_t)st->groups_in));
    json_object_set_new(j, "served", json_integer((json_int_t)st->served_first));
    json_object_set_new(j, "received", json_integer((json_int_t)r.groups_rx));
    json_object_set_new(j, "held", json_integer(st->held_unserved));
    json_t *drops = json_object();
    for (int k = 0; k < AP_BUFFER_DROP_REASON_COUNT; k++)
        json_object_set_new(drops, ap_buffer_drop_name((ap_buffer_drop_t)k),
                            json_integer((json_int_t)st->drops[k]));
    json_object_set_new(j, "drops", drops);
    json_object_set_new(j, "lost", json_integer(lost + unexplained));
    json_object_set_new(j, "rejected", json_integer((json_int_t)st->rejected));
    json_t *bytes = json_object();
    json_object_set_new(bytes, "group", json_integer((json_int_t)r.bytes_group));
    json_object_set_new(bytes, "scores", json_integer((json_int_t)bytes_scores));
    json_object_set_new(bytes, "batch_item", json_integer((json_int_t)r.bytes_batch_item));
    json_object_set_new(j, "bytes_per_group", bytes);
    /* in: the group; to a teacher: the group again (in the request); back: the scores; out: the
     * batch item (group + scores) */
    double per_group = (double)(2 * r.bytes_group + bytes_scores + r.bytes_batch_item);
    json_object_set_new(j, "mb_per_s", json_real(per_group * (double)groups / dt / 1e6));
    json_t *wait = json_object();
    json_object_set_new(wait, "steady_median", json_real(steady_wait));
    json_object_set_new(wait, "full_median", json_real(full_med));
    json_object_set_new(wait, "full_p95", json_real(full_p95));
    json_object_set_new(wait, "full_n", json_integer(n_full));
    json_object_set_new(j, "learner_wait_ms", wait);
    json_object_set_new(j, "buffer_cpu_share", json_real(buffer_cpu / dt));
    json_object_set_new(j, "peers_cpu_share", json_real(peers_cpu / dt));
    json_t *us = json_object();
    double ng = groups ? (double)groups : 1;
    json_object_set_new(us, "buffer", json_real(buffer_cpu / ng * 1e6));
    json_object_set_new(us, "peers", json_real(peers_cpu / ng * 1e6));
    json_object_set_new(us, "zmq_io", json_real((total_cpu - buffer_cpu - peers_cpu) / ng * 1e6));
    json_object_set_new(us, "total", json_real(total_cpu / ng * 1e6));
    json_object_set_new(j, "cpu_us_per_group", us);

    for (int i = 0; i < o->teachers; i++)
        ap_teacher_destroy(&r.teachers[i]);
    for (int i = 0; i < o->actors; i++) {
        ev_io_stop(r.loop, &r.actors[i].io);
        ap_sock_destroy(&r.actors[i].s);
    }
    ap_sock_destroy(&r.learner);
    ev_timer_stop(r.loop, &r.hb);
    ev_loop_destroy(r.loop);
    ap_net_destroy(&net);
    ap_group_destroy(&r.tmpl);
    free(r.actors), free(r.teachers), free(r.waits);
    ap_config_destroy(&cfg);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) ap_log(AP_LOG_WARN, "bench: could not remove %s", dir);
    return j;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice bench buffer [--actors N,N,...] [--teachers M] [--seconds S]\n"
            "                               [--credit C] [--batch B] [--capacity Q]\n"
            "Scored groups/s through the buffer with simulated actors, teachers (top-K 16,\n"
            "V 32000) and learner, G 8 x 32 tokens, over ipc://; one JSON line per actor count.\n\n"
            "  -a, --actors LIST   actor counts (default 1,16,64,256)\n"
            "  -t, --teachers M    simulated teachers (default 2)\n"
            "  -s, --seconds S     measured window per actor count (default 3)\n"
            "  -c, --credit C      buffer.actor_credit (default 2, the config default)\n"
            "  -T, --teacher-credit C  buffer.teacher_credit (default 4, the config default)\n"
            "  -b, --batch B       trajectories per batch request (default 64)\n"
            "  -q, --capacity Q    buffer.capacity_groups (default 256)\n"
            "  -h, --help          this help\n");
}

int ap_bench_buffer(int argc, char **argv) {
    static const struct option opts[] = {{"actors", required_argument, 0, 'a'},
                                         {"teachers", required_argument, 0, 't'},
                                         {"seconds", required_argument, 0, 's'},
                                         {"credit", required_argument, 0, 'c'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"capacity", required_argument, 0, 'q'},
                                         {"teacher-credit", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    s_opts_t o = {.teachers = 2,
                  .G = 8,
                  .tokens = 32,
                  .top_k = 16,
                  .B = 64,
                  .prefetch = 4,
                  .credit = 2,
                  .capacity = 256,
                  .teacher_credit = 4,
                  .seconds = 3,
                  .warmup = 1};
    const char *list = "1,16,64,256";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "a:t:s:c:b:q:T:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            list = optarg;
            break;
        case 't':
            o.teachers = atoi(optarg);
            break;
        case 's':
            o.seconds = atof(optarg);
            break;
        case 'c':
            o.credit = atoi(optarg);
            break;
        case 'b':
            o.B = atoi(optarg);
            break;
        case 'q':
            o.capacity = atoi(optarg);
            break;
        case 'T':
            o.teacher_credit = atoi(optarg);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind < argc || o.teachers < 1 || o.seconds <= 0 || o.credit < 1 || o.B < o.G ||
        o.teacher_credit < 1 || o.capacity < o.B / o.G) {
        s_usage(stderr);
        return 2;
    }
    ap_log_set_level(AP_LOG_WARN);
    ap_buffer_tune_malloc(); /* as `apprentice buffer` does */
    char *copy = ap_strdup(list), *save = NULL;
    int run = 0, rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        o.actors = atoi(tok);
        if (o.actors < 1 || o.actors > S_MAX_ACTORS) {
            fprintf(stderr, "apprentice bench buffer: actor count %s outside 1..%d\n", tok,
                    S_MAX_ACTORS);
            rc = 2;
            break;
        }
        json_t *j = s_one(&o, run++);
        if (!j) {
            rc = 1;
            break;
        }
        ap_bench_emit(j);
    }
    free(copy);
    return rc;
}
