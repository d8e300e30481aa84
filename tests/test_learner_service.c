/* test_learner_service.c: ap_learner_run against a fake buffer (a ROUTER in this thread) and a
 * weights client, all over inproc:// in one process:
 *   1. async: HELLO (vocabulary), exactly learner.prefetch requests in flight and never more,
 *      batches sent in two parts out of order are reassembled, a part for an unknown request is
 *      dropped, a request whose parts disagree is given up and replaced, a batch the decoder
 *      refuses (a version from the future) replaces every request in flight, RESET -> HELLO again
 *      and fresh requests (the learner's counters report each), heartbeats with the version,
 * weights published at start and every sync_every steps (the client verifies each), run.max_steps
 * -> final checkpoint, `latest`, metrics and rollouts, BYE, exit 0;
 *   2. stop request mid-run: returns 0 promptly with a checkpoint of the current step;
 *   3. sync mode: one request at a time, each carrying the version of the step before, and
 *      that version published before the request leaves;
 *   4. every objective through the wire (scores full and top-K, encoded and decoded): finite
 *      losses in the metrics, falling on a repeated batch. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/learner.h"
#include "apprentice/metrics.h"
#include "apprentice/weights.h"
#include "test.h"
#include "test_learner_fixture.h"

static char s_student[600];

typedef struct {
    ap_learner_t *L;
    int rc;
    atomic_int done;
} s_run_t;

static void *s_run_main(void *arg) {
    s_run_t *r = arg;
    r->rc = ap_learner_run(r->L);
    atomic_store(&r->done, 1);
    return NULL;
}

typedef struct {
    int hellos, requests, heartbeats, byes, max_outstanding, answered;
    uint64_t out[64]; /* outstanding request ids */
    ap_version_t req_version[64];
    int n_out;
    ap_version_t last_hb;
} s_fake_t;

/* Send batch b in two parts, the second first. */
static void s_answer(ap_sock_t *r, const ap_peer_t *to, uint64_t id, ap_batch_t *b) {
    AP_ASSERT(b->n_items >= 2);
    ap_batch_t *p[2] = {ap_batch_new(1), ap_batch_new(b->n_items - 1)};
    p[0]->items[0] = b->items[0];
    for (int j = 1; j < b->n_items; j++)
        p[1]->items[j - 1] = b->items[j];
    for (int k = 1; k >= 0; k--) {
        p[k]->request_id = id, p[k]->part = k, p[k]->parts = 2;
        ap_msg_t m = {.type = AP_MSG_BATCH, .u.batch = p[k]};
        if (ap_sock_send(r, to, &m) < 0) /* the learner may have finished and left */
            AP_CHECK(errno == EHOSTUNREACH, "send: %s", ap_errmsg());
    }
    for (int k = 0; k < 2; k++) {
        p[k]->n_items = 0;
        ap_batch_destroy(&p[k]);
    }
}

static int s_lines_with(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1 << 16];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

typedef struct {
    const char *name;
    int sync;
    int reset_after; /* send RESET after this many answers (0: never) */
    int stop_after;  /* ap_learner_stop after this many answers (0: never) */
    int max_steps;
    double delay; /* seconds before each answer (lets heartbeats happen) */
} s_case_t;

static void s_case(const char *root, const s_case_t *c) {
    char run[800], set_sync[64], set_steps[64], mpath[900];
    snprintf(run, sizeof run, "%s/%s", root, c->name);
    ap_mkdirs(run);
    snprintf(set_sync, sizeof set_sync, "run.sync=%s", c->sync ? "true" : "false");
    snprintf(set_steps, sizeof set_steps, "run.max_steps=%d", c->max_steps);
    char ep_w[PATH_MAX + 64], ep_p[PATH_MAX + 64], abs_run[PATH_MAX];
    AP_ASSERT(realpath(run, abs_run));
    snprintf(ep_w, sizeof ep_w, "endpoints.weights=ipc://%s/w.ipc", abs_run);
    snprintf(ep_p, sizeof ep_p, "endpoints.weights_pub=ipc://%s/wp.ipc", abs_run);
    ap_config_t *cfg =
        fx_config(s_student, "objective.grpo.enabled=true", set_sync, set_steps,
                  "learner.prefetch=2", "learner.sync_every=2", "learner.checkpoint_every=4",
                  "learner.rollouts_every=3", "learner.rollouts_per_step=2",
                  "endpoints.buffer_learner=inproc://buffer-learner", ep_w, ep_p, NULL);
    ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
    AP_ASSERTF(net, "%s", ap_errmsg());
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = "inproc://buffer-learner",
                         .bind = 1,
                         .max_msg = 64 << 20,
                         .limits = &lim,
                         .name = "fake-buffer"};
    ap_sock_t *router = ap_sock_new(net, &so);
    AP_ASSERTF(router, "%s", ap_errmsg());
    snprintf(mpath, sizeof mpath, "%s/metrics-learner.jsonl", run);
    ap_metrics_t *met = ap_metrics_open(mpath, "learner", 0);
    ap_learner_opts_t lo = {
        .cfg = cfg, .run_dir = run, .net = net, .metrics = met, .name = "learner-0"};
    s_run_t R = {.L = ap_learner_new(&lo)};
    AP_ASSERTF(R.L, "%s", ap_errmsg());
    ap_model_t *shadow = ap_model_load(s_student); /* behaviour log-probs of the batches */
    atomic_init(&R.done, 0);
    pthread_t th;
    AP_ASSERT(pthread_create(&th, NULL, s_run_main, &R) == 0);
    /* weights over ipc://: with inproc the client would hold zero-copy chunks of the server's
     * snapshots past the learner's exit (see the report: net/weights.c frees the counter the
     * last release decrements) */
    ap_wclient_opts_t wo = {.endpoint = ep_w + strlen("endpoints.weights="),
                            .pub_endpoint = ep_p + strlen("endpoints.weights_pub="),
                            .poll_interval = 0.05};
    ap_wclient_t *wc = ap_wclient_spawn(net, &wo);
    AP_ASSERTF(wc, "%s", ap_errmsg());

    s_fake_t F = {0};
    ap_peer_t learner = {0};
    int versions_seen = 0, sync_ok = 1, reset_sent = 0, stop_sent = 0, late_sent = 0,
        future_sent = 0;
    ap_version_t newest = {0, 0};
    double t0 = ap_now(), t_stop = 0, t_first_req = 0;
    uint64_t seed = 1;
    while (!atomic_load(&R.done) && ap_now() - t0 < 60) {
        ap_peer_t from;
        ap_msg_t m;
        int rc = ap_sock_recv_wait(router, &from, &m, 20);
        ap_weights_t *w;
        while (ap_wclient_take(wc, &w) == 1) {
            AP_CHECK(ap_version_cmp(w->version, newest) > 0, "versions increase");
            newest = w->version;
            versions_seen++;
            ap_weights_destroy(&w);
        }
        if (rc != 1) continue;
        switch (m.type) {
        case AP_MSG_HELLO:
            F.hellos++;
            learner = from;
            AP_CHECK(m.u.hello.role == AP_ROLE_LEARNER &&
                         m.u.hello.vocab_size == ap_model_config(shadow)->vocab_size &&
                         m.u.hello.vocab_hash != 0,
                     "hello fields");
            break;
        case AP_MSG_BATCH_REQUEST:
            F.requests++;
            if (!t_first_req) t_first_req = ap_now();
            AP_CHECK(m.u.batch_request.trajectories == 8, "B = %d", m.u.batch_request.trajectories);
            F.req_version[F.n_out] = m.u.batch_request.learner_version;
            F.out[F.n_out++] = m.u.batch_request.request_id;
            F.max_outstanding = AP_MAX(F.max_outstanding, F.n_out);
            break;
        case AP_MSG_HEARTBEAT:
            F.heartbeats++;
            F.last_hb = m.u.heartbeat.version;
            break;
        case AP_MSG_BYE:
            F.byes++;
            break;
        default:
            break;
        }
        ap_msg_clear(&m);
        /* answer the oldest request once the prefetch window has been seen (async), or at once */
        if (F.n_out > 0 && (c->sync || F.n_out >= 2 || F.answered > 0) && !stop_sent) {
            if (c->sync) {
                /* the version named in the request must already be published */
                ap_version_t rv = F.req_version[0];
                double tw = ap_now();
                while (ap_version_cmp(newest, rv) < 0 && ap_now() - tw < 5) {
                    ap_weights_t *w2;
                    if (ap_wclient_take(wc, &w2) == 1) {
                        newest = w2->version, versions_seen++;
                        ap_weights_destroy(&w2);
                    } else {
                        ap_sleep(0.005);
                    }
                }
                sync_ok &= ap_version_cmp(newest, rv) >= 0 &&
                           rv.step == (uint64_t)F.answered; /* one step per answered batch */
            }
            if (!c->sync && !c->stop_after && F.answered == 2 && !future_sent) {
                /* a batch the learner's decoder refuses (a policy version from the future): it
                 * gives up every request in flight and sends new ones */
                fx_batch_opts_t fb = fx_batch_defaults();
                fb.version = (ap_version_t){1, 999};
                ap_batch_t *bf = fx_batch(shadow, &fb);
                bf->request_id = F.out[0];
                ap_msg_t fm = {.type = AP_MSG_BATCH, .u.batch = bf};
                AP_CHECK(ap_sock_send(router, &learner, &fm) == 0, "future batch: %s", ap_errmsg());
                ap_batch_destroy(&bf);
                F.n_out = 0;
                future_sent = 1;
                continue;
            }
            if (c->delay > 0) ap_sleep(c->delay);
            fx_batch_opts_t bo = fx_batch_defaults();
            bo.seed = seed++;
            ap_batch_t *b = fx_batch(shadow, &bo);
            s_answer(router, &learner, F.out[0], b);
            ap_batch_destroy(&b);
            memmove(F.out, F.out + 1, (size_t)--F.n_out * sizeof *F.out);
            memmove(F.req_version, F.req_version + 1, (size_t)F.n_out * sizeof *F.req_version);
            F.answered++;
            if (!late_sent && F.answered == 1 && F.n_out > 0) {
                /* a part for a request that does not exist (late), and for the next request a
                 * first part announcing 2 parts then one announcing 3: that request is given
                 * up (a new one replaces it) */
                bo.seed = 999;
                ap_batch_t *bl = fx_batch(shadow, &bo);
                s_answer(router, &learner, 424242, bl);
                ap_batch_t *p1 = ap_batch_new(1);
                p1->items[0] = bl->items[0];
                p1->request_id = F.out[0], p1->parts = 2, p1->part = 0;
                ap_msg_t pm = {.type = AP_MSG_BATCH, .u.batch = p1};
                AP_CHECK(ap_sock_send(router, &learner, &pm) == 0, "part: %s", ap_errmsg());
                p1->parts = 3, p1->part = 1;
                AP_CHECK(ap_sock_send(router, &learner, &pm) == 0, "part: %s", ap_errmsg());
                p1->n_items = 0;
                ap_batch_destroy(&p1);
                ap_batch_destroy(&bl);
                memmove(F.out, F.out + 1, (size_t)--F.n_out * sizeof *F.out);
                memmove(F.req_version, F.req_version + 1, (size_t)F.n_out * sizeof *F.req_version);
                late_sent = 1;
            }
            if (c->reset_after && F.answered == c->reset_after && !reset_sent) {
                ap_msg_t r = {.type = AP_MSG_RESET};
                snprintf(r.u.bye.reason, sizeof r.u.bye.reason, "buffer restarted");
                AP_CHECK(ap_sock_send(router, &learner, &r) == 0, "RESET: %s", ap_errmsg());
                F.n_out = 0; /* a restarted buffer forgets every request */
                reset_sent = 1;
            }
            if (c->stop_after && F.answered == c->stop_after) {
                ap_sleep(0.2); /* let those steps finish */
                ap_learner_stop(R.L);
                stop_sent = 1;
                t_stop = ap_now();
            }
        }
    }
    pthread_join(th, NULL);
    double t_end = ap_now();
    /* drain what is left (BYE) */
    for (;;) {
        ap_peer_t from;
        ap_msg_t m;
        if (ap_sock_recv_wait(router, &from, &m, 50) != 1) break;
        F.byes += m.type == AP_MSG_BYE;
        ap_msg_clear(&m);
    }
    ap_version_t v = ap_learner_version(R.L);
    AP_CHECK(R.rc == 0, "%s: learner returned %d: %s", c->name, R.rc, ap_errmsg());
    AP_CHECK(F.byes == 1, "%s: BYE %d", c->name, F.byes);
    if (t_end - t0 > 0.5) /* heartbeat_ms 100 */
        AP_CHECK(F.heartbeats >= 2 && F.last_hb.gen == 1, "%s: heartbeats %d", c->name,
                 F.heartbeats);
    AP_CHECK(F.max_outstanding <= (c->sync ? 1 : 2), "%s: %d requests in flight", c->name,
             F.max_outstanding);
    char latest[900];
    snprintf(latest, sizeof latest, "%s/latest", run);
    char *text = NULL;
    AP_CHECK(ap_file_read(latest, &text, NULL) == 0, "%s: latest written", c->name);
    char want[64];
    snprintf(want, sizeof want, "ckpt/step-%llu", (unsigned long long)v.step);
    AP_CHECK(text && !strncmp(text, want, strlen(want)), "%s: latest = %s, want %s", c->name,
             text ? text : "", want);
    free(text);
    if (!c->sync && !c->stop_after) { /* the learner's counters in its last step record */
        FILE *f = fopen(mpath, "r");
        char line[1 << 16], last[1 << 16] = "";
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "learner/late_parts")) memcpy(last, line, sizeof last);
        if (f) fclose(f);
        json_error_t je;
        json_t *o = json_loads(last, 0, &je), *vals = json_object_get(o, "values");
        double late = json_number_value(json_object_get(vals, "learner/late_parts")),
               bad = json_number_value(json_object_get(vals, "learner/bad_parts")),
               resets = json_number_value(json_object_get(vals, "learner/resets")),
               rejected = json_number_value(json_object_get(vals, "learner/rejected"));
        json_decref(o);
        /* late: the 2 parts of the unknown request, plus answers to requests the RESET cleared */
        AP_CHECK(late >= 2 && bad == 1 && resets == 1 && rejected == 1,
                 "%s: counters late %g bad %g resets %g rejected %g", c->name, late, bad, resets,
                 rejected);
        printf("case %s counters: late parts %g, bad parts %g, resets %g, rejected %g\n", c->name,
               late, bad, resets, rejected);
    }
    int records = s_lines_with(mpath, "\"loss/total\""),
        busy = s_lines_with(mpath, "\"learner/busy_frac\"");
    printf("case %s: steps %llu (gen %u), %d hellos, %d requests (max %d in flight), %d answered, "
           "%d heartbeats (last step %llu), %d versions pulled (newest step %llu), %d metric "
           "records, %.2f s\n",
           c->name, (unsigned long long)v.step, v.gen, F.hellos, F.requests, F.max_outstanding,
           F.answered, F.heartbeats, (unsigned long long)F.last_hb.step, versions_seen,
           (unsigned long long)newest.step, records, t_end - t0);
    AP_CHECK(records >= (int)v.step && busy == records, "%s: %d records", c->name, records);
    if (c->stop_after) {
        AP_CHECK(t_end - t_stop < 2.0, "%s: stopped in %.2f s", c->name, t_end - t_stop);
        AP_CHECK(v.step >= 1 && (int)v.step <= c->stop_after, "%s: stopped at %llu", c->name,
                 (unsigned long long)v.step);
    } else {
        AP_CHECK((int)v.step == c->max_steps, "%s: reached %llu", c->name,
                 (unsigned long long)v.step);
        /* sync_every 2: versions 0, 2, 4 were pulled before the end (the final one is published
         * too, but the learner may leave before a client has pulled it) */
        AP_CHECK(newest.gen == 1 && newest.step >= (uint64_t)(c->max_steps - 2),
                 "%s: newest pulled version %llu", c->name, (unsigned long long)newest.step);
        char roll[900];
        snprintf(roll, sizeof roll, "%s/rollouts.jsonl", run);
        int lines = s_lines_with(roll, "\"route\"");
        AP_CHECK(lines == 2 * (c->max_steps / 3), "%s: %d rollout lines", c->name, lines);
    }
    if (c->reset_after)
        AP_CHECK(F.hellos == 2, "%s: HELLO again after RESET (%d)", c->name, F.hellos);
    else
        AP_CHECK(F.hellos == 1, "%s: one HELLO (%d)", c->name, F.hellos);
    if (c->sync)
        AP_CHECK(sync_ok, "%s: requests carry the published version of the step before", c->name);
    if (!c->sync && !c->stop_after)
        AP_CHECK(versions_seen >= 2, "%s: versions pulled %d", c->name, versions_seen);

    ap_wclient_destroy(&wc);
    ap_learner_destroy(&R.L);
    ap_sock_destroy(&router);
    ap_net_destroy(&net);
    ap_metrics_close(&met);
    ap_model_destroy(&shadow);
    ap_config_destroy(&cfg);
}

/* Every objective through the wire: the same handmade batch (with full or top-K scores encoded
 * and decoded on the way) answers every request; the loss in the learner's metrics is finite
 * and falls (opd: finite; its own loss is not what it minimises). */
static void s_objectives_over_wire(const char *root) {
    struct {
        const char *name, *set1, *set2;
        int ext, self, ref, falls; /* falls: the loss must fall; -1: every batch is skipped */
    } cases[] = {
        {"gkd", "objective.gkd.enabled=true", NULL, FX_FULL, FX_NONE, 0, 1},
        {"gkd topk_tail", "objective.gkd.enabled=true", "objective.gkd.support=topk_tail", FX_TOPK,
         FX_NONE, 0, 1},
        {"opd", "objective.opd.enabled=true", NULL, FX_FULL, FX_NONE, 0, 0},
        {"grpo k3", "objective.grpo.enabled=true", "objective.grpo.kl_ref=0.1", FX_NONE, FX_NONE, 1,
         1},
        {"opsd", "objective.opsd.enabled=true", NULL, FX_NONE, FX_FULL, 0, 1},
        {"srpo topk_tail", "objective.srpo.enabled=true", "objective.srpo.support=topk_tail",
         FX_NONE, FX_TOPK, 0, 1},
        /* every trajectory truncated: every batch skipped; the learner stops after 3 */
        {"skips", "objective.gkd.enabled=true", "learner.max_skips_in_a_row=3", FX_FULL, FX_NONE, 0,
         -1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char run[800], mpath[900];
        snprintf(run, sizeof run, "%s/wire-%zu", root, k);
        ap_mkdirs(run);
        ap_config_t *cfg = fx_config(
            s_student, cases[k].set1, cases[k].set2 ? cases[k].set2 : "run.seed=1",
            "run.max_steps=6", "teacher.top_k=4", "endpoints.buffer_learner=inproc://wire-buffer",
            "endpoints.weights=inproc://wire-weights", "endpoints.weights_pub=", NULL);
        ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
        ap_msg_limits_t lim;
        ap_msg_limits_default(&lim);
        ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                             .endpoint = "inproc://wire-buffer",
                             .bind = 1,
                             .max_msg = 64 << 20,
                             .limits = &lim,
                             .name = "fake-buffer"};
        ap_sock_t *router = ap_sock_new(net, &so);
        snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", run);
        ap_metrics_t *met = ap_metrics_open(mpath, "learner", 0);
        ap_learner_opts_t lo = {.cfg = cfg, .run_dir = run, .net = net, .metrics = met};
        s_run_t R = {.L = ap_learner_new(&lo)};
        AP_ASSERTF(R.L, "%s", ap_errmsg());
        fx_batch_opts_t bo = fx_batch_defaults();
        bo.ext = cases[k].ext, bo.self = cases[k].self, bo.ref = cases[k].ref;
        bo.truncate = cases[k].falls < 0;
        ap_batch_t *b = fx_batch(ap_learner_model(R.L), &bo);
        atomic_init(&R.done, 0);
        pthread_t th;
        AP_ASSERT(pthread_create(&th, NULL, s_run_main, &R) == 0);
        double t0 = ap_now();
        while (!atomic_load(&R.done) && ap_now() - t0 < 30) {
            ap_peer_t from;
            ap_msg_t m;
            if (ap_sock_recv_wait(router, &from, &m, 10) != 1) continue;
            if (m.type == AP_MSG_BATCH_REQUEST) {
                b->request_id = m.u.batch_request.request_id;
                ap_msg_t a = {.type = AP_MSG_BATCH, .u.batch = b};
                if (ap_sock_send(router, &from, &a) < 0)
                    AP_CHECK(errno == EHOSTUNREACH, "send: %s", ap_errmsg());
            }
            ap_msg_clear(&m);
        }
        pthread_join(th, NULL);
        ap_metrics_close(&met);
        double loss[16];
        int n = 0, finite = 1;
        FILE *f = fopen(mpath, "r");
        char line[1 << 16];
        while (f && fgets(line, sizeof line, f) && n < 16) {
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            json_t *v = json_object_get(json_object_get(o, "values"), "loss/total");
            if (v) loss[n++] = json_is_number(v) ? json_number_value(v) : NAN;
            json_decref(o);
        }
        if (f) fclose(f);
        for (int i = 0; i < n; i++)
            finite &= isfinite(loss[i]);
        if (cases[k].falls < 0) {
            /* a skipped step's record has loss/total null */
            AP_CHECK(R.rc == 0 && n == 3 && !finite && ap_learner_version(R.L).step == 0,
                     "%s: rc %d, %d records: the learner stops after 3 skipped batches",
                     cases[k].name, R.rc, n);
        } else {
            AP_CHECK(R.rc == 0 && n == 6 && finite, "%s over the wire: rc %d, %d finite losses of %d",
                     cases[k].name, R.rc, finite ? n : 0, n);
        }
        if (cases[k].falls > 0 && n == 6)
            AP_CHECK(loss[5] < loss[0], "%s over the wire: loss %g -> %g", cases[k].name, loss[0],
                     loss[5]);
        printf("case %s over the wire: loss %.5f -> %.5f (%d steps)\n", cases[k].name,
               n ? loss[0] : NAN, n ? loss[n - 1] : NAN, n);
        ap_batch_destroy(&b);
        ap_learner_destroy(&R.L);
        ap_sock_destroy(&router);
        ap_net_destroy(&net);
        ap_config_destroy(&cfg);
    }
}

int main(void) {
    ap_log_set_role("test_learner_service", 0);
    ap_log_set_level(AP_LOG_WARN);
    const char *root = ap_test_tmpdir("learner-service");
    snprintf(s_student, sizeof s_student, "%s/student", root);
    fx_student(s_student, 7);
    s_case_t cases[] = {{.name = "async", .reset_after = 3, .max_steps = 6, .delay = 0.1},
                        {.name = "stop", .stop_after = 2, .max_steps = 1000},
                        {.name = "sync", .sync = 1, .max_steps = 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_case(root, &cases[i]);
    s_objectives_over_wire(root);
    return ap_test_result();
}
