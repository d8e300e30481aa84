/* test_weights.c: weight distribution over TCP loopback, server and clients on one libev loop:
 *   1. a ~100 MB version arrives byte-exact with its BLAKE2b digest verified;
 *   2. a corrupted chunk fails the digest, is counted, and the client recovers by re-pulling;
 *   3. a client joining late gets the newest version (not an older kept one), and a version
 *      of a newer restart generation with a smaller step is taken as newer;
 *   4. a version evicted mid-transfer: the client moves to the newest and nothing leaks;
 *   5. publishing an older version or an arena that does not match its config is refused;
 *      a blob header that does not parse is refused;
 *   6. a client spawned on its own thread pulls while its caller never runs a loop. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/rng.h"
#include "apprentice/weights.h"
#include "test.h"

/* A config of about `mb` MB (V 8192, D 512, F 1536, L chosen). */
static ap_model_config_t s_config(double mb) {
    ap_model_config_t c;
    ap_model_config_defaults(&c);
    c.vocab_size = 8192, c.hidden_size = 512, c.intermediate_size = 1536;
    c.num_heads = 8, c.num_kv_heads = 8, c.max_positions = 256, c.num_layers = 1;
    while (ap_model_config_num_params(&c) * 4.0 < mb * 1e6)
        c.num_layers++;
    return c;
}

static float *s_params(const ap_model_config_t *c, uint64_t seed, size_t *bytes) {
    size_t n = (size_t)ap_model_config_num_params(c);
    float *p = ap_malloc(n * sizeof *p);
    ap_rng_t r;
    ap_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)ap_rng_uniform(&r) - 0.5f;
    *bytes = n * sizeof *p;
    return p;
}

/* Run the loop until client c has verified a version >= want, or `limit` seconds pass.
 * Returns the taken weights (or NULL). */
static ap_weights_t *s_pull(struct ev_loop *loop, ap_wclient_t *c, ap_version_t want,
                            double limit) {
    double t0 = ap_now();
    ap_weights_t *w = NULL;
    while (ap_now() - t0 < limit) {
        ev_run(loop, EVRUN_NOWAIT);
        if (ap_wclient_take(c, &w) == 1) {
            if (ap_version_cmp(w->version, want) >= 0) return w;
            ap_weights_destroy(&w);
        }
        ev_run(loop, EVRUN_ONCE);
    }
    return NULL;
}

static atomic_int s_ready_calls;
static void s_on_ready(ap_wclient_t *c, void *data) {
    (void)c, (void)data;
    atomic_fetch_add(&s_ready_calls, 1);
}

int main(void) {
    ap_log_set_role("test_weights", 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
    AP_ASSERTF(net, "%s", ap_errmsg());
    ap_wserver_opts_t so = {.endpoint = "tcp://127.0.0.1:*",
                            .pub_endpoint = "tcp://127.0.0.1:*",
                            .chunk_bytes = 4u << 20,
                            .keep = 2,
                            .hint_interval = 0.2};
    ap_wserver_t *srv = ap_wserver_new(net, loop, &so);
    AP_ASSERTF(srv, "%s", ap_errmsg());
    ap_wclient_opts_t co = {.endpoint = ap_wserver_endpoint(srv),
                            .pub_endpoint = ap_wserver_pub_endpoint(srv),
                            .window = 8,
                            .poll_interval = 0.2};
    ap_model_config_t cfg = s_config(100);
    size_t bytes;
    float *p1 = s_params(&cfg, 1, &bytes);

    /* 1. ~100 MB */
    ap_wclient_t *c = ap_wclient_new(net, loop, &co);
    AP_ASSERTF(c, "%s", ap_errmsg());
    double t0 = ap_now();
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){1, 10}, &cfg, 0x1234, p1, bytes) == 0, "%s",
             ap_errmsg());
    double t_pub = ap_now() - t0;
    ap_weights_t *w = s_pull(loop, c, (ap_version_t){1, 10}, 30);
    double t_all = ap_now() - t0;
    AP_CHECK(w != NULL, "100 MB version not received");
    if (w) {
        uint8_t d[AP_DIGEST_BYTES];
        ap_weights_digest(w->blob, w->size, d);
        AP_CHECK(!memcmp(d, w->digest, AP_DIGEST_BYTES), "digest");
        AP_CHECK(w->params_bytes == bytes && !memcmp(w->params, p1, bytes), "bytes differ");
        AP_CHECK(w->version.gen == 1 && w->version.step == 10 && w->table_hash == 0x1234,
                 "version/table hash");
        AP_CHECK(w->config.num_layers == cfg.num_layers && w->config.vocab_size == 8192, "config");
        AP_CHECK(((uintptr_t)w->params & 63) == 0, "arena alignment");
        printf("100 MB case: %.1f MB (L=%d) publish %.3f s, publish+pull+verify %.3f s\n",
               bytes / 1e6, cfg.num_layers, t_pub, t_all);
        ap_weights_destroy(&w);
    }
    ap_weights_t *none;
    AP_CHECK(ap_wclient_take(c, &none) == 0, "take twice");

    /* 2. a corrupted chunk */
    float *p2 = s_params(&cfg, 2, &bytes);
    ap_wserver_debug_corrupt(srv, 3);
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){1, 20}, &cfg, 0x1234, p2, bytes) == 0, "%s",
             ap_errmsg());
    w = s_pull(loop, c, (ap_version_t){1, 20}, 30);
    ap_wclient_stats_t cs;
    ap_wclient_stats(c, &cs);
    printf("corrupted chunk: digest failures %llu, completed %llu, bytes %llu\n",
           (unsigned long long)cs.digest_failures, (unsigned long long)cs.completed,
           (unsigned long long)cs.bytes);
    AP_CHECK(cs.digest_failures == 1, "digest failures %llu",
             (unsigned long long)cs.digest_failures);
    AP_CHECK(w && w->version.step == 20 && !memcmp(w->params, p2, bytes), "recovered by re-pull");
    ap_weights_destroy(&w);

    /* 3. a late joiner gets the newest; a new generation beats a larger step */
    ap_model_config_t small = s_config(1);
    size_t sb;
    float *ps = s_params(&small, 3, &sb);
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){1, 30}, &small, 0, ps, sb) == 0, "%s",
             ap_errmsg());
    ps[0] = 42.0f;
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){1, 40}, &small, 0, ps, sb) == 0, "%s",
             ap_errmsg());
    ap_wclient_t *late = ap_wclient_new(net, loop, &co);
    w = s_pull(loop, late, (ap_version_t){1, 40}, 10);
    AP_CHECK(w && w->version.step == 40 && ((const float *)w->params)[0] == 42.0f,
             "late joiner got %llu", w ? (unsigned long long)w->version.step : 0ull);
    ap_weights_destroy(&w);
    ps[0] = 7.0f;
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){2, 1}, &small, 0, ps, sb) == 0,
             "new generation: %s", ap_errmsg());
    w = s_pull(loop, late, (ap_version_t){2, 1}, 10);
    AP_CHECK(w && w->version.gen == 2 && w->version.step == 1 &&
                 ((const float *)w->params)[0] == 7.0f,
             "restart generation not taken");
    ap_weights_destroy(&w);
    w = s_pull(loop, c, (ap_version_t){2, 1}, 10); /* the first client converges too */
    AP_CHECK(w && w->version.gen == 2, "first client did not converge");
    ap_weights_destroy(&w);

    /* 4. eviction mid-transfer: window 1 on a 100 MB version, two newer versions published */
    {
        ap_wclient_opts_t slow = co;
        slow.window = 1;
        ap_wclient_t *sc = ap_wclient_new(net, loop, &slow);
        AP_CHECK(ap_wserver_publish(srv, (ap_version_t){2, 5}, &cfg, 0, p1, bytes) == 0, "%s",
                 ap_errmsg());
        for (int i = 0; i < 5; i++)
            ev_run(loop, EVRUN_ONCE); /* the transfer starts */
        ps[0] = 9.0f;
        AP_CHECK(ap_wserver_publish(srv, (ap_version_t){2, 6}, &small, 0, ps, sb) == 0, "%s",
                 ap_errmsg());
        AP_CHECK(ap_wserver_publish(srv, (ap_version_t){2, 7}, &small, 0, ps, sb) == 0, "%s",
                 ap_errmsg());
        w = s_pull(loop, sc, (ap_version_t){2, 7}, 20);
        AP_CHECK(w && w->version.step == 7, "evicted transfer did not move to the newest");
        ap_weights_destroy(&w);
        ap_wclient_stats_t ss;
        ap_wclient_stats(sc, &ss);
        printf("eviction: restarts %llu completed %llu\n", (unsigned long long)ss.restarts,
               (unsigned long long)ss.completed);
        ap_wclient_destroy(&sc);
        ap_wserver_stats_t st; /* references held by chunks in flight drain within seconds */
        for (double t1 = ap_now(); ap_now() - t1 < 5; ap_sleep(0.01)) {
            ev_run(loop, EVRUN_NOWAIT);
            ap_wserver_stats(srv, &st);
            if (st.live_snapshots <= 2) break;
        }
        printf("server: published %llu chunks %llu (%.1f MB) manifests %llu gone %llu "
               "live snapshots %d\n",
               (unsigned long long)st.published, (unsigned long long)st.chunks, st.bytes / 1e6,
               (unsigned long long)st.manifests, (unsigned long long)st.gone, st.live_snapshots);
        AP_CHECK(st.live_snapshots <= 2, "snapshots leak: %d live (keep = 2)", st.live_snapshots);
    }

    /* 6. a spawned client (own thread and loop) pulls while its caller never runs a loop */
    {
        ap_wclient_t *tc = ap_wclient_spawn(net, &co);
        AP_ASSERTF(tc, "%s", ap_errmsg());
        ap_wclient_on_ready(tc, s_on_ready, NULL);
        float *p3 = s_params(&cfg, 3, &bytes);
        AP_CHECK(ap_wserver_publish(srv, (ap_version_t){3, 1}, &cfg, 0, p3, bytes) == 0, "%s",
                 ap_errmsg());
        double t1 = ap_now();
        ap_weights_t *tw = NULL;
        while (!tw && ap_now() - t1 < 30) {
            ev_run(loop, EVRUN_ONCE); /* the server's loop only */
            if (ap_wclient_take(tc, &tw) == 1 && tw->version.gen != 3) ap_weights_destroy(&tw);
        }
        AP_CHECK(tw && tw->version.gen == 3 && !memcmp(tw->params, p3, bytes),
                 "spawned client did not get 3:1");
        AP_CHECK(atomic_load(&s_ready_calls) >= 1, "on_ready not called");
        printf("spawned client: 100 MB in %.3f s, on_ready called %d times\n", ap_now() - t1,
               atomic_load(&s_ready_calls));
        ap_weights_destroy(&tw);
        ap_wclient_destroy(&tc);
        free(p3);
    }

    /* 5. refusals */
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){2, 3}, &small, 0, ps, sb) < 0, "older version");
    AP_CHECK(ap_wserver_publish(srv, (ap_version_t){3, 0}, &small, 0, ps, sb - 4) < 0,
             "arena size mismatch");
    {
        size_t n;
        uint8_t *b = ap_weights_pack((ap_version_t){1, 1}, &small, 0, ps, sb, &n);
        ap_weights_t pw;
        AP_CHECK(ap_weights_parse(b, n, &pw) == 0 && pw.params_bytes == sb, "parse: %s",
                 ap_errmsg());
        b[0] = 'X';
        AP_CHECK(ap_weights_parse(b, n, &pw) < 0, "bad magic accepted");
        b[0] = 'A';
        AP_CHECK(ap_weights_parse(b, n - 4, &pw) < 0, "truncated blob accepted");
        free(b);
    }

    /* 7. the server goes away while zero-copy chunks are in flight: over inproc:// ZeroMQ
     *    releases them after the server's memory is gone. A regression is a use-after-free that
     *    the sanitizer run of scripts/test.sh reports (the learner hit it at exit). */
    {
        ap_wserver_opts_t io = {.endpoint = "inproc://weights-teardown", .chunk_bytes = 1u << 20,
                                .keep = 1};
        ap_wserver_t *s2 = ap_wserver_new(net, loop, &io);
        AP_ASSERTF(s2, "%s", ap_errmsg());
        ap_wclient_opts_t ico = {.endpoint = "inproc://weights-teardown", .window = 16,
                                 .poll_interval = 0.05};
        ap_wclient_t *c2 = ap_wclient_new(net, loop, &ico);
        AP_ASSERTF(c2, "%s", ap_errmsg());
        AP_CHECK(ap_wserver_publish(s2, (ap_version_t){1, 1}, &cfg, 0, p1, bytes) == 0, "%s",
                 ap_errmsg());
        ap_wserver_stats_t st2 = {0};
        for (double t1 = ap_now(); ap_now() - t1 < 10 && st2.chunks < 4; ap_sleep(0.001)) {
            ev_run(loop, EVRUN_NOWAIT);
            ap_wserver_stats(s2, &st2);
        }
        AP_CHECK(st2.chunks >= 4, "no chunk left the server (%llu)", (unsigned long long)st2.chunks);
        ap_wserver_destroy(&s2); /* chunks queued to c2 still reference the snapshot */
        for (double t1 = ap_now(); ap_now() - t1 < 0.5; ap_sleep(0.001)) ev_run(loop, EVRUN_NOWAIT);
        ap_wclient_destroy(&c2);
        printf("teardown with %llu chunks sent: server destroyed mid-transfer, no fault\n",
               (unsigned long long)st2.chunks);
    }

    ap_wclient_destroy(&late);
    ap_wclient_destroy(&c);
    ap_wserver_destroy(&srv);
    ap_net_destroy(&net);
    ev_loop_destroy(loop);
    free(p1), free(p2), free(ps);
    return ap_test_result();
}
