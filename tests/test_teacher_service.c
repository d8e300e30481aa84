/* test_teacher_service.c: the teacher service (ap_teacher_t) against a fake buffer (a ROUTER in
 * the same process, inproc://), on one loop:
 *   - HELLO carries role, kind, capacity (buffer.teacher_credit), vocabulary and name;
 *   - 7 requests (more than the capacity, packed into passes of max_batch_tokens) are all
 *     answered, each equal to ap_teacher_score of its group with the request's K and
 *     temperature and tau_s = sampling.temperature, with its request id;
 *   - heartbeats flow; RESET makes it say HELLO again; a silent buffer (3 periods) too;
 *   - a request for another kind is dropped and counted;
 *   - RESET "vocab mismatch" stops it (fatal) after a BYE;
 *   - a `current` self-teacher says HELLO only once it holds the learner's first version,
 *     stamps every score with the version that made it, and swaps in a newer version between
 *     passes (scores equal a direct computation with those weights);
 *   - simulate mode answers after its delay. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "apprentice/teacher.h"
#include "apprentice/weights.h"
#include "test.h"

#define V 40
#define HB 0.05

static ap_model_t *s_model(uint64_t seed) {
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = V, c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.max_positions = 64;
    ap_model_t *m = ap_model_new(&c, seed);
    float *p = ap_model_params(m);
    for (size_t i = 0; i < ap_model_num_floats(m); i++)
        p[i] *= 4.0f;
    return m;
}

static ap_group_t *s_group(ap_rng_t *r, uint64_t id) {
    int len[4], ctx[4];
    for (int i = 0; i < 4; i++)
        len[i] = 1 + (int)ap_rng_below(r, 12), ctx[i] = i % 2 ? 3 + (int)ap_rng_below(r, 6) : 0;
    ap_group_t *g = ap_group_new(4, 5, len, ctx);
    g->id = id;
    g->version = (ap_version_t){1, 0};
    for (int i = 0; i < g->n_prompt; i++)
        g->prompt[i] = i == 0 ? 1 : 3 + (int32_t)ap_rng_below(r, V - 3);
    for (int t = 0; t < g->n_tokens; t++)
        g->tokens[t] = 3 + (int32_t)ap_rng_below(r, V - 3);
    for (int t = 0; t < g->n_ctx; t++)
        g->ctx_tokens[t] = 3 + (int32_t)ap_rng_below(r, V - 3);
    for (int i = 0; i < g->G; i++)
        if (ap_group_has_ctx(g, i)) g->ctx_tokens[g->ctx_offset[i]] = 1;
    return g;
}

/* ---------------------------------------------------------------- the fake buffer */

typedef struct {
    ap_sock_t *s;
    ap_peer_t teacher;
    int known;
    int hellos, heartbeats, byes;
    ap_hello_t hello;
    ap_scores_t *scores[64];
    int n_scores;
    double last_hb;
    int silent; /* stop sending heartbeats */
} fb_t;

static void fb_poll(fb_t *f) {
    for (;;) {
        ap_peer_t p;
        ap_msg_t m;
        int rc = ap_sock_recv(f->s, &p, &m);
        if (rc == 0) break;
        if (rc < 0) continue;
        if (m.type == AP_MSG_HELLO) {
            f->hellos++, f->hello = m.u.hello, f->teacher = p, f->known = 1;
        } else if (m.type == AP_MSG_HEARTBEAT) {
            f->heartbeats++;
        } else if (m.type == AP_MSG_BYE) {
            f->byes++;
        } else if (m.type == AP_MSG_SCORES && f->n_scores < 64) {
            f->scores[f->n_scores++] = m.u.scores;
            m.u.scores = NULL;
        }
        ap_msg_clear(&m);
    }
    if (f->known && !f->silent && ap_now() - f->last_hb >= HB) {
        ap_msg_t m = {.type = AP_MSG_HEARTBEAT, .u.heartbeat = {.time = ap_wall()}};
        ap_sock_send(f->s, &f->teacher, &m);
        f->last_hb = ap_now();
    }
}

static void fb_send(fb_t *f, const ap_msg_t *m) {
    AP_ASSERTF(ap_sock_send(f->s, &f->teacher, m) == 0, "%s", ap_errmsg());
}

static void fb_request(fb_t *f, uint64_t id, const ap_group_t *g, ap_teacher_kind_t kind, int K,
                       int full, float tau) {
    ap_msg_t m = {.type = AP_MSG_SCORE_REQUEST,
                  .u.score_request = {.request_id = id,
                                      .kind = kind,
                                      .top_k = K,
                                      .full = full,
                                      .temperature = tau,
                                      .group = (ap_group_t *)g}};
    fb_send(f, &m);
}

typedef struct {
    fb_t *f;
    int want_scores, want_hellos;
} s_until_t;

static int s_cond(void *arg) {
    s_until_t *u = arg;
    return u->f->n_scores >= u->want_scores && u->f->hellos >= u->want_hellos;
}

static int s_pump(struct ev_loop *loop, fb_t *f, double seconds, int (*cond)(void *), void *arg) {
    double t0 = ap_now();
    for (;;) {
        ev_run(loop, EVRUN_NOWAIT);
        fb_poll(f);
        if (cond && cond(arg)) return 1;
        if (ap_now() - t0 > seconds) return 0;
        ap_sleep(0.0005);
    }
}

static double s_max_diff(const ap_scores_t *a, const ap_scores_t *b) {
    if (a->n_tokens != b->n_tokens || a->K != b->K || a->full != b->full) return INFINITY;
    double d = 0;
    for (int t = 0; t < a->n_tokens; t++) {
        d = fmax(d, fabs(a->sampled[t] - b->sampled[t]));
        for (int k = 0; k < a->K; k++) {
            size_t j = (size_t)t * a->K + k;
            d = fmax(d, fabs(a->logprobs[j] - b->logprobs[j]));
            if (a->ids && a->ids[j] != b->ids[j]) return INFINITY;
        }
    }
    for (int i = 0; i < a->G; i++)
        if (a->present[i] != b->present[i]) return INFINITY;
    return d;
}

/* Endpoints unique per scenario: an inproc name is released asynchronously after close. */
static ap_config_t *s_cfg(const char *tag) {
    ap_config_t *c = ap_config_new();
    c->buffer.heartbeat_ms = (int)(HB * 1000);
    c->buffer.teacher_credit = 3;
    c->teacher.max_batch_tokens = 48;
    c->sampling.temperature = 0.8;
    free(c->endpoints.buffer_teachers);
    c->endpoints.buffer_teachers = ap_sprintf("inproc://tsvc-%s-teachers", tag);
    free(c->endpoints.weights);
    c->endpoints.weights = ap_sprintf("inproc://tsvc-%s-weights", tag);
    free(c->endpoints.weights_pub);
    c->endpoints.weights_pub = ap_sprintf("inproc://tsvc-%s-weights-pub", tag);
    return c;
}

static void test_external(ap_net_t *net, struct ev_loop *loop) {
    printf("external teacher, frozen weights\n");
    ap_config_t *cfg = s_cfg("ext");
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = V;
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = cfg->endpoints.buffer_teachers,
                         .bind = 1,
                         .max_msg = 64u << 20,
                         .limits = &lim,
                         .name = "fake-buffer"};
    fb_t f = {.s = ap_sock_new(net, &so)};
    AP_ASSERTF(f.s, "%s", ap_errmsg());
    ap_model_t *m = s_model(3);
    ap_teacher_opts_t o = {.cfg = cfg,
                           .kind = AP_TEACHER_EXTERNAL,
                           .id = 2,
                           .name = "teacher-external-2",
                           .model = m,
                           .vocab_size = V,
                           .vocab_hash = 0x77};
    ap_teacher_t *t = ap_teacher_new(net, loop, &o);
    AP_ASSERTF(t, "%s", ap_errmsg());
    s_until_t u = {.f = &f, .want_hellos = 1};
    AP_CHECK(s_pump(loop, &f, 2.0, s_cond, &u), "no HELLO");
    AP_CHECK(f.hello.role == AP_ROLE_TEACHER && f.hello.kind == AP_TEACHER_EXTERNAL &&
                 f.hello.capacity == 3 && f.hello.vocab_size == V && f.hello.vocab_hash == 0x77 &&
                 f.hello.id == 2 && !strcmp(f.hello.name, "teacher-external-2"),
             "HELLO fields: role %d kind %d capacity %u V %d name %s", (int)f.hello.role,
             (int)f.hello.kind, f.hello.capacity, f.hello.vocab_size, f.hello.name);
    ap_rng_t r;
    ap_rng_seed(&r, 1, 1);
    ap_group_t *gs[7];
    for (int i = 0; i < 7; i++) {
        gs[i] = s_group(&r, 100 + (uint64_t)i);
        fb_request(&f, 1000 + (uint64_t)i, gs[i], AP_TEACHER_EXTERNAL, 5, 0, 1.3f);
    }
    u.want_scores = 7;
    AP_CHECK(s_pump(loop, &f, 5.0, s_cond, &u), "%d of 7 answers", f.n_scores);
    s_pump(loop, &f, 3 * HB, NULL, NULL);
    double worst = 0;
    int ids_ok = 1;
    for (int i = 0; i < f.n_scores; i++) {
        int j = (int)(f.scores[i]->request_id - 1000);
        if (j < 0 || j >= 7) {
            ids_ok = 0;
            continue;
        }
        ap_teacher_params_t p = {AP_TEACHER_EXTERNAL, 5, 0, 1.3f, 0.8f};
        ap_scores_t *want = ap_teacher_score(m, gs[j], &p, (ap_version_t){0, 0});
        worst = fmax(worst, s_max_diff(f.scores[i], want));
        ids_ok &= f.scores[i]->group_id == gs[j]->id && f.scores[i]->kind == AP_TEACHER_EXTERNAL;
        ap_scores_destroy(&want);
    }
    ap_teacher_stats_t st;
    ap_teacher_stats(t, &st);
    printf("  7 requests (capacity 3, passes of 48 tokens): %d answers, largest difference from a "
           "direct scoring %.2e; %d heartbeats\n",
           f.n_scores, worst, f.heartbeats);
    /* the service's passes group rows differently from a group scored alone (other GEMM shapes,
     * the packed product below 17 rows): float32 logits differ by ~1e-6 of their scale, and a
     * log-prob at tau_s 0.8 by up to 2 dz / tau (test_teacher derives the same bound) */
    AP_CHECK(worst < 5e-5 && ids_ok, "answers differ: %g", worst);
    AP_CHECK(f.heartbeats >= 2, "heartbeats %d", f.heartbeats);
    /* a request for another kind: dropped, counted */
    fb_request(&f, 2000, gs[0], AP_TEACHER_SELF, 5, 0, 1.0f);
    s_pump(loop, &f, 0.1, NULL, NULL);
    ap_teacher_stats(t, &st);
    AP_CHECK(st.wrong_kind == 1 && f.n_scores == 7, "wrong kind: %llu",
             (unsigned long long)st.wrong_kind);
    /* RESET: HELLO again */
    ap_msg_t reset = {.type = AP_MSG_RESET};
    snprintf(reset.u.bye.reason, sizeof reset.u.bye.reason, "unknown peer: HELLO again");
    fb_send(&f, &reset);
    u.want_hellos = 2;
    AP_CHECK(s_pump(loop, &f, 1.0, s_cond, &u), "no HELLO after RESET");
    /* a silent buffer: HELLO again after 3 periods */
    f.silent = 1;
    u.want_hellos = 3;
    double t0 = ap_now();
    AP_CHECK(s_pump(loop, &f, 2.0, s_cond, &u), "no HELLO after the buffer went silent");
    printf("  RESET and a silent buffer: HELLO again (%d HELLOs; silence noticed after %.2f s)\n",
           f.hellos, ap_now() - t0);
    f.silent = 0;
    /* refused for its vocabulary: stops, BYE */
    snprintf(reset.u.bye.reason, sizeof reset.u.bye.reason, "vocab mismatch: V 40 hash 0");
    fb_send(&f, &reset);
    s_pump(loop, &f, 0.3, NULL, NULL);
    ap_teacher_stats(t, &st);
    printf("  RESET for the vocabulary: fatal %d, BYE %d\n", st.fatal, f.byes);
    AP_CHECK(st.fatal == 1 && f.byes == 1, "vocabulary refusal");
    ap_teacher_destroy(&t);
    for (int i = 0; i < 7; i++)
        ap_group_destroy(&gs[i]);
    for (int i = 0; i < f.n_scores; i++)
        ap_scores_destroy(&f.scores[i]);
    ap_sock_destroy(&f.s);
    ap_model_destroy(&m);
    ap_config_destroy(&cfg);
}

static int s_has_version(void *arg) {
    void **a = arg;
    ap_teacher_stats_t st;
    ap_teacher_stats(a[0], &st);
    return ap_version_cmp(st.version, *(ap_version_t *)a[1]) == 0;
}

static void test_follow(ap_net_t *net, struct ev_loop *loop) {
    printf("self-teacher following the learner's weights (current)\n");
    ap_config_t *cfg = s_cfg("follow");
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = cfg->endpoints.buffer_teachers,
                         .bind = 1,
                         .max_msg = 64u << 20,
                         .name = "fake-buffer"};
    fb_t f = {.s = ap_sock_new(net, &so)};
    AP_ASSERTF(f.s, "%s", ap_errmsg());
    ap_wserver_opts_t wo = {.endpoint = cfg->endpoints.weights,
                            .pub_endpoint = cfg->endpoints.weights_pub,
                            .chunk_bytes = 4096};
    ap_wserver_t *ws = ap_wserver_new(net, loop, &wo);
    AP_ASSERTF(ws, "%s", ap_errmsg());
    ap_model_t *m = s_model(3), *mb = s_model(4), *mc = s_model(5);
    ap_teacher_opts_t o = {.cfg = cfg,
                           .kind = AP_TEACHER_SELF,
                           .name = "teacher-self-0",
                           .model = m,
                           .vocab_size = V,
                           .follow_weights = 1};
    ap_teacher_t *t = ap_teacher_new(net, loop, &o);
    AP_ASSERTF(t, "%s", ap_errmsg());
    s_pump(loop, &f, 0.3, NULL, NULL);
    AP_CHECK(f.hellos == 0, "HELLO before any weights");
    size_t bytes;
    const void *blob = ap_model_blob(mb, &bytes);
    AP_CHECK(ap_wserver_publish(ws, (ap_version_t){1, 3}, ap_model_config(mb), 0, blob, bytes) == 0,
             "%s", ap_errmsg());
    s_until_t u = {.f = &f, .want_hellos = 1};
    AP_CHECK(s_pump(loop, &f, 5.0, s_cond, &u), "no HELLO after version 1:3");
    ap_rng_t r;
    ap_rng_seed(&r, 2, 2);
    ap_group_t *g = s_group(&r, 7);
    ap_teacher_params_t p = {AP_TEACHER_SELF, 5, 0, 1.0f, 0.8f};
    fb_request(&f, 1, g, AP_TEACHER_SELF, 5, 0, 1.0f);
    u.want_scores = 1;
    AP_CHECK(s_pump(loop, &f, 3.0, s_cond, &u), "no answer");
    ap_scores_t *want = ap_teacher_score(mb, g, &p, (ap_version_t){1, 3});
    double d1 = f.n_scores ? s_max_diff(f.scores[0], want) : INFINITY;
    int v1 = f.n_scores && ap_version_cmp(f.scores[0]->version, (ap_version_t){1, 3}) == 0;
    ap_scores_destroy(&want);
    blob = ap_model_blob(mc, &bytes);
    AP_CHECK(ap_wserver_publish(ws, (ap_version_t){1, 4}, ap_model_config(mc), 0, blob, bytes) == 0,
             "%s", ap_errmsg());
    ap_version_t v14 = {1, 4};
    void *arg[2] = {t, &v14};
    AP_CHECK(s_pump(loop, &f, 5.0, s_has_version, arg), "version 1:4 not taken");
    fb_request(&f, 2, g, AP_TEACHER_SELF, 5, 0, 1.0f);
    u.want_scores = 2;
    AP_CHECK(s_pump(loop, &f, 3.0, s_cond, &u), "no second answer");
    want = ap_teacher_score(mc, g, &p, (ap_version_t){1, 4});
    double d2 = f.n_scores > 1 ? s_max_diff(f.scores[1], want) : INFINITY;
    int v2 = f.n_scores > 1 && ap_version_cmp(f.scores[1]->version, v14) == 0;
    ap_scores_destroy(&want);
    int absent_ok = f.n_scores > 1;
    for (int i = 0; i < g->G && f.n_scores > 1; i++)
        absent_ok &= f.scores[1]->present[i] == ap_group_has_ctx(g, i);
    printf("  version 1:3: stamped %d, difference %.2e; version 1:4: stamped %d, difference %.2e; "
           "h = 0 absent %d\n",
           v1, d1, v2, d2, absent_ok);
    AP_CHECK(v1 && v2 && d1 < 5e-5 && d2 < 5e-5 && absent_ok, "weights following");
    ap_teacher_destroy(&t);
    ap_group_destroy(&g);
    for (int i = 0; i < f.n_scores; i++)
        ap_scores_destroy(&f.scores[i]);
    ap_wserver_destroy(&ws);
    ap_sock_destroy(&f.s);
    ap_model_destroy(&m), ap_model_destroy(&mb), ap_model_destroy(&mc);
    ap_config_destroy(&cfg);
}

static void test_simulate(ap_net_t *net, struct ev_loop *loop) {
    printf("simulated teacher with a 100 ms delay\n");
    ap_config_t *cfg = s_cfg("sim");
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = cfg->endpoints.buffer_teachers,
                         .bind = 1,
                         .max_msg = 64u << 20,
                         .name = "fake-buffer"};
    fb_t f = {.s = ap_sock_new(net, &so)};
    AP_ASSERTF(f.s, "%s", ap_errmsg());
    ap_teacher_opts_t o = {.cfg = cfg,
                           .kind = AP_TEACHER_REFERENCE,
                           .name = "teacher-reference-0",
                           .simulate = 1,
                           .simulate_delay_s = 0.1,
                           .vocab_size = 32000};
    ap_teacher_t *t = ap_teacher_new(net, loop, &o);
    s_until_t u = {.f = &f, .want_hellos = 1};
    AP_CHECK(s_pump(loop, &f, 2.0, s_cond, &u), "no HELLO");
    ap_rng_t r;
    ap_rng_seed(&r, 3, 3);
    ap_group_t *g = s_group(&r, 5);
    double t0 = ap_now();
    fb_request(&f, 9, g, AP_TEACHER_REFERENCE, 0, 0, 1.0f);
    u.want_scores = 1;
    int ok = s_pump(loop, &f, 2.0, s_cond, &u);
    double dt = ap_now() - t0;
    printf("  answered after %.3f s, K %d, valid %d\n", dt, f.n_scores ? f.scores[0]->K : -1,
           f.n_scores ? ap_msg_scores_match(f.scores[0], g) == 0 : 0);
    AP_CHECK(ok && dt >= 0.099 && dt < 1.0 && f.scores[0]->K == 0 && f.scores[0]->request_id == 9,
             "simulated answer");
    ap_teacher_destroy(&t);
    ap_group_destroy(&g);
    for (int i = 0; i < f.n_scores; i++)
        ap_scores_destroy(&f.scores[i]);
    ap_sock_destroy(&f.s);
    ap_config_destroy(&cfg);
}

int main(void) {
    ap_log_set_role("test_teacher_service", 0);
    ap_net_opts_t no = {0};
    ap_net_t *net = ap_net_new(&no);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    test_external(net, loop);
    test_follow(net, loop);
    test_simulate(net, loop);
    ev_loop_destroy(loop);
    ap_net_destroy(&net);
    return ap_test_result();
}
