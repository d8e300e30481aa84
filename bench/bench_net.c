/* bench_net.c: `apprentice bench weights`: the transport's two targets (docs/PERFORMANCE.md,
 * "Transport"):
 *   1. wire cost of teacher scores: bytes per scored token of a ScoredGroup (G = 8
 *      trajectories of 32 tokens, top-K = 16), against the bound "sampled log-prob + K ids +
 *      K log-probs" (4 + 8K bytes) and against a JSON encoding of the same scores (jansson),
 *      plus encode / decode time;
 *   2. weight distribution: a ~100 MB version pulled by N clients over TCP loopback, each
 *      client in its own thread with its own ZeroMQ context and libev loop (as separate
 *      processes would be), digests verified; time from the end of publish (snapshot copied
 *      and hashed, reported apart) until every client holds the verified version. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/msg.h"
#include "apprentice/rng.h"
#include "apprentice/transport.h"
#include "apprentice/weights.h"
#include "bench/bench.h"

/* ---------------------------------------------------------------- 1. bytes per scored token */

static json_t *s_scores_json(const ap_scores_t *s) {
    json_t *o = json_object(), *len = json_array(), *sampled = json_array(), *ids = json_array(),
           *lp = json_array();
    json_object_set_new(o, "request_id", json_integer((json_int_t)s->request_id));
    json_object_set_new(o, "group_id", json_integer((json_int_t)(s->group_id >> 1)));
    json_object_set_new(o, "kind", json_integer(s->kind));
    json_object_set_new(o, "weights_gen", json_integer(s->version.gen));
    json_object_set_new(o, "weights_step", json_integer((json_int_t)s->version.step));
    json_object_set_new(o, "temperature", json_real(s->temperature));
    json_object_set_new(o, "vocab_size", json_integer(s->vocab_size));
    json_object_set_new(o, "top_k", json_integer(s->K));
    for (int i = 0; i < s->G; i++)
        json_array_append_new(len, json_integer(s->offset[i + 1] - s->offset[i]));
    for (int t = 0; t < s->n_tokens; t++) {
        json_array_append_new(sampled, json_real(s->sampled[t]));
        json_t *ti = json_array(), *tl = json_array();
        for (int k = 0; k < s->K; k++) {
            json_array_append_new(ti, json_integer(s->ids[(size_t)t * s->K + k]));
            json_array_append_new(tl, json_real(s->logprobs[(size_t)t * s->K + k]));
        }
        json_array_append_new(ids, ti);
        json_array_append_new(lp, tl);
    }
    json_object_set_new(o, "lengths", len);
    json_object_set_new(o, "sampled", sampled);
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "logprobs", lp);
    return o;
}

static void s_bench_wire(int V, int G, int T, int K) {
    ap_rng_t r;
    ap_rng_seed(&r, 5, 0);
    int *off = ap_malloc((size_t)(G + 1) * sizeof *off);
    for (int i = 0; i <= G; i++)
        off[i] = i * T;
    ap_scores_t *s = ap_scores_new(G, off, K, 0, V);
    free(off);
    s->request_id = 123456789;
    s->group_id = ap_rng_u64(&r);
    s->kind = AP_TEACHER_EXTERNAL;
    s->version = (ap_version_t){1, 1000};
    int n = s->n_tokens;
    for (int t = 0; t < n; t++) {
        s->sampled[t] = -(float)(ap_rng_uniform(&r) * 4);
        float base = 0;
        for (int k = 0; k < K; k++) { /* descending log-probs, distinct ids */
            base -= (float)(ap_rng_uniform(&r) * 0.7);
            s->logprobs[(size_t)t * K + k] = base;
            s->ids[(size_t)t * K + k] = (int32_t)ap_rng_below(&r, (uint64_t)V);
        }
    }
    ap_msg_t m = {.type = AP_MSG_SCORES, .seq = 77, .u.scores = s};
    uint8_t *buf;
    size_t len;
    AP_ASSERT(ap_msg_encode(&m, &buf, &len) == 0);
    json_t *js = s_scores_json(s);
    char *text = json_dumps(js, JSON_COMPACT | JSON_REAL_PRECISION(9)); /* 9: float round trip */
    size_t jlen = strlen(text);

    /* encode / decode time, median of 7 runs of 200 */
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = V;
    ap_msg_codec_t *codec = ap_msg_codec_new(&lim, "bench");
    double enc[7], dec[7], jenc[7];
    for (int rep = 0; rep < 7; rep++) {
        double t0 = ap_now();
        for (int i = 0; i < 200; i++) {
            uint8_t *b;
            size_t l;
            ap_msg_encode(&m, &b, &l);
            free(b);
        }
        enc[rep] = (ap_now() - t0) / 200;
        t0 = ap_now();
        for (int i = 0; i < 200; i++) {
            ap_msg_t out;
            const void *f[1] = {buf};
            if (ap_msg_decode(codec, f, &len, 1, &out) == 0) ap_msg_clear(&out);
        }
        dec[rep] = (ap_now() - t0) / 200;
        t0 = ap_now();
        for (int i = 0; i < 20; i++) {
            json_t *o = s_scores_json(s);
            char *x = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
            free(x);
            json_decref(o);
        }
        jenc[rep] = (ap_now() - t0) / 20;
    }
    json_t *o = json_object();
    json_object_set_new(o, "bench", json_string("wire"));
    json_object_set_new(o, "what", json_string("scored_group"));
    json_object_set_new(o, "G", json_integer(G));
    json_object_set_new(o, "tokens_per_trajectory", json_integer(T));
    json_object_set_new(o, "K", json_integer(K));
    json_object_set_new(o, "V", json_integer(V));
    json_object_set_new(o, "message_bytes", json_integer((json_int_t)len));
    json_object_set_new(o, "bytes_per_token", json_real((double)len / n));
    json_object_set_new(o, "bound_bytes_per_token", json_real(4.0 + 8.0 * K));
    json_object_set_new(o, "json_bytes_per_token", json_real((double)jlen / n));
    json_object_set_new(o, "json_over_protobuf", json_real((double)jlen / len));
    json_object_set_new(o, "encode_us", json_real(ap_bench_median(enc, 7) * 1e6));
    json_object_set_new(o, "decode_validate_us", json_real(ap_bench_median(dec, 7) * 1e6));
    json_object_set_new(o, "json_encode_us", json_real(ap_bench_median(jenc, 7) * 1e6));
    ap_bench_emit(o);
    ap_msg_codec_destroy(&codec);
    free(text);
    json_decref(js);
    free(buf);
    ap_scores_destroy(&s);
}

/* ---------------------------------------------------------------- 2. weight distribution */

typedef struct {
    pthread_t th;
    const char *endpoint, *pub_endpoint;
    const char *server_key;
    char pub[AP_Z85_KEY], sec[AP_Z85_KEY];
    int curve, window;
    atomic_int stop;
    atomic_ullong got_step; /* step of the newest verified version taken */
    atomic_int ready;       /* client connected and running */
    double done_at;         /* ap_now() when the newest was taken */
    int failed;
} s_client_t;

static void s_wake(struct ev_loop *l, ev_timer *t, int r) {
    (void)l, (void)t, (void)r;
}

static void *s_client_main(void *arg) {
    s_client_t *c = arg;
    ap_net_opts_t no = {.curve = c->curve};
    memcpy(no.public_key, c->pub, AP_Z85_KEY);
    memcpy(no.secret_key, c->sec, AP_Z85_KEY);
    ap_net_t *net = ap_net_new(&no);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ap_wclient_opts_t o = {.endpoint = c->endpoint,
                           .pub_endpoint = c->pub_endpoint,
                           .server_key = c->server_key,
                           .window = c->window,
                           .poll_interval = 0.5};
    ap_wclient_t *wc = net ? ap_wclient_new(net, loop, &o) : NULL;
    if (!wc) {
        fprintf(stderr, "bench weights: client: %s\n", ap_errmsg());
        c->failed = 1;
        atomic_store(&c->ready, 1);
        ap_net_destroy(&net);
        ev_loop_destroy(loop);
        return NULL;
    }
    ev_timer wake;
    ev_timer_init(&wake, s_wake, 0.002, 0.002);
    ev_timer_start(loop, &wake);
    atomic_store(&c->ready, 1);
    while (!atomic_load(&c->stop)) {
        ev_run(loop, EVRUN_ONCE);
        ap_weights_t *w;
        if (ap_wclient_take(wc, &w) == 1) {
            c->done_at = ap_now();
            atomic_store(&c->got_step, w->version.step);
            ap_weights_destroy(&w);
        }
    }
    ev_timer_stop(loop, &wake);
    ap_wclient_destroy(&wc);
    ap_net_destroy(&net);
    ev_loop_destroy(loop);
    return NULL;
}

static int s_bench_weights(double mb, int n_clients, uint32_t chunk, int window, int reps,
                           int curve) {
    ap_model_config_t cfg;
    ap_model_config_defaults(&cfg);
    cfg.vocab_size = 8192, cfg.hidden_size = 512, cfg.intermediate_size = 1536;
    cfg.num_heads = 8, cfg.num_kv_heads = 8, cfg.max_positions = 256, cfg.num_layers = 1;
    while (ap_model_config_num_params(&cfg) * 4.0 < mb * 1e6)
        cfg.num_layers++;
    size_t n = (size_t)ap_model_config_num_params(&cfg), bytes = n * 4;
    float *params = ap_malloc(bytes);
    ap_rng_t r;
    ap_rng_seed(&r, 9, 0);
    for (size_t i = 0; i < n; i++)
        params[i] = (float)ap_rng_uniform(&r);

    char spub[AP_Z85_KEY] = "", ssec[AP_Z85_KEY] = "";
    if (curve) zmq_curve_keypair(spub, ssec);
    ap_net_opts_t no = {.curve = curve};
    memcpy(no.public_key, spub, AP_Z85_KEY);
    memcpy(no.secret_key, ssec, AP_Z85_KEY);
    ap_net_t *net = ap_net_new(&no);
    if (!net) {
        fprintf(stderr, "bench weights: %s\n", ap_errmsg());
        free(params);
        return 1;
    }
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ap_wserver_opts_t so = {.endpoint = "tcp://127.0.0.1:*",
                            .pub_endpoint = "tcp://127.0.0.1:*",
                            .chunk_bytes = chunk,
                            .keep = 2};
    ap_wserver_t *srv = ap_wserver_new(net, loop, &so);
    if (!srv) {
        fprintf(stderr, "bench weights: %s\n", ap_errmsg());
        ap_net_destroy(&net);
        free(params);
        return 1;
    }
    s_client_t *cl = ap_calloc((size_t)n_clients, sizeof *cl);
    for (int i = 0; i < n_clients; i++) {
        cl[i].endpoint = ap_wserver_endpoint(srv);
        cl[i].pub_endpoint = ap_wserver_pub_endpoint(srv);
        cl[i].curve = curve;
        cl[i].window = window;
        if (curve) {
            zmq_curve_keypair(cl[i].pub, cl[i].sec);
            cl[i].server_key = spub;
            char name[32];
            snprintf(name, sizeof name, "client-%d", i);
            ap_net_allow(net, "weights", cl[i].pub, name);
        }
        pthread_create(&cl[i].th, NULL, s_client_main, &cl[i]);
    }
    for (int i = 0; i < n_clients; i++)
        while (!atomic_load(&cl[i].ready))
            ap_sleep(0.001);
    /* let every client connect and ask for "latest" (nothing yet) */
    double t_settle = ap_now();
    while (ap_now() - t_settle < 0.3)
        ev_run(loop, EVRUN_NOWAIT), ap_sleep(0.001);

    ev_timer wake;
    ev_timer_init(&wake, s_wake, 0.002, 0.002);
    ev_timer_start(loop, &wake);
    double *dist = ap_malloc((size_t)reps * sizeof *dist),
           *pub = ap_malloc((size_t)reps * sizeof *pub);
    int rc = 0, done_reps = 0;
    for (int rep = 0; rep < reps && rc == 0; rep++) {
        uint64_t step = (uint64_t)rep + 1;
        params[0] = (float)rep;
        double t0 = ap_now();
        if (ap_wserver_publish(srv, (ap_version_t){1, step}, &cfg, 0, params, bytes) < 0) {
            fprintf(stderr, "bench weights: %s\n", ap_errmsg());
            rc = 1;
            break;
        }
        double t1 = ap_now();
        int all = 0;
        while (!all && ap_now() - t1 < 60) {
            ev_run(loop, EVRUN_ONCE);
            all = 1;
            for (int i = 0; i < n_clients; i++)
                all &= atomic_load(&cl[i].got_step) == step;
        }
        if (!all) {
            fprintf(stderr, "bench weights: clients did not finish in 60 s\n");
            rc = 1;
            break;
        }
        double last = 0;
        for (int i = 0; i < n_clients; i++)
            last = AP_MAX(last, cl[i].done_at);
        pub[rep] = t1 - t0;
        dist[rep] = last - t1;
        done_reps++;
    }
    ev_timer_stop(loop, &wake);
    for (int i = 0; i < n_clients; i++)
        atomic_store(&cl[i].stop, 1);
    for (int i = 0; i < n_clients; i++)
        pthread_join(cl[i].th, NULL);
    for (int i = 0; i < n_clients; i++)
        rc |= cl[i].failed;
    if (done_reps == reps && rc == 0) {
        double d = ap_bench_median(dist, reps), p = ap_bench_median(pub, reps);
        json_t *o = json_object();
        json_object_set_new(o, "bench", json_string("weights"));
        json_object_set_new(o, "mb", json_real(bytes / 1e6));
        json_object_set_new(o, "clients", json_integer(n_clients));
        json_object_set_new(o, "curve", json_boolean(curve));
        json_object_set_new(o, "chunk_mib", json_real(chunk / 1048576.0));
        json_object_set_new(o, "window", json_integer(window));
        json_object_set_new(o, "reps", json_integer(reps));
        json_object_set_new(o, "publish_s", json_real(p));
        json_object_set_new(o, "distribute_s", json_real(d));
        json_object_set_new(o, "total_s", json_real(p + d));
        json_object_set_new(o, "aggregate_gb_per_s",
                            json_real(bytes * (double)n_clients / d / 1e9));
        json_object_set_new(o, "target_s", json_real(2.0));
        json_object_set_new(o, "digests_verified", json_true());
        ap_bench_emit(o);
    }
    ap_wserver_destroy(&srv);
    ap_net_destroy(&net);
    ev_loop_destroy(loop);
    free(cl), free(dist), free(pub), free(params);
    return rc;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice bench weights [options]\n"
            "Wire cost of teacher scores (bytes/token vs the bound and vs JSON), then weight\n"
            "distribution of one ~MB-sized version to N clients over TCP loopback (each client\n"
            "a thread with its own ZeroMQ context), digests verified. JSON lines on stdout.\n\n"
            "  --mb N          model size in MB (default 100)\n"
            "  --clients N     clients (default 4)\n"
            "  --chunk-mib N   chunk size in MiB (default 1)\n"
            "  --window N      chunk requests in flight per client (default 4)\n"
            "  --reps N        versions distributed; the median is reported (default 3)\n"
            "  --curve on|off|both   CURVE encryption (default both)\n"
            "  --no-wire       skip the bytes/token report\n");
}

int ap_bench_weights(int argc, char **argv) {
    static const struct option opts[] = {{"mb", required_argument, 0, 'm'},
                                         {"clients", required_argument, 0, 'c'},
                                         {"chunk-mib", required_argument, 0, 'k'},
                                         {"window", required_argument, 0, 'w'},
                                         {"reps", required_argument, 0, 'r'},
                                         {"curve", required_argument, 0, 'v'},
                                         {"no-wire", no_argument, 0, 'n'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    double mb = 100, chunk_mib = 1;
    int clients = 4, window = 4, reps = 3, wire = 1, curve_mode = 2, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            mb = atof(optarg);
            break;
        case 'c':
            clients = atoi(optarg);
            break;
        case 'k':
            chunk_mib = atof(optarg);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'v':
            curve_mode = !strcmp(optarg, "on") ? 1 : !strcmp(optarg, "off") ? 0 : 2;
            break;
        case 'n':
            wire = 0;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    uint32_t chunk = (uint32_t)(chunk_mib * 1048576);
    if (mb <= 0 || clients < 1 || clients > 64 || window < 1 || reps < 1 || chunk < 1024 ||
        chunk > (16u << 20)) {
        s_usage(stderr);
        return 2;
    }
    if (wire) {
        s_bench_wire(32000, 8, 32, 16);
        s_bench_wire(256, 8, 32, 16);
    }
    int rc = 0;
    if (curve_mode != 1) rc |= s_bench_weights(mb, clients, chunk, window, reps, 0);
    if (curve_mode != 0) rc |= s_bench_weights(mb, clients, chunk, window, reps, 1);
    return rc;
}
