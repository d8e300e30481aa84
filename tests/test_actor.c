/* test_actor.c: the actor roles, with a fake buffer (a ROUTER in this thread) and a real weights
 * server on this thread's loop, over inproc://.
 *   1. groups without sockets: valid (ap_msg_validate), G trajectories, behaviour log-probs at the
 *      sampling temperature equal to a recomputation from the model (top-p on: the log-probs are
 *      from the full distribution), finish reasons, verdicts and privileged contexts recomputed
 *      from the decoded completions; shards of two actors differ, one shard is deterministic;
 *      dataset groups (gold, teacher-written), simulated groups; a weights blob for another
 *      network is refused;
 *   2. the conversation: HELLO fields, never more groups than credit granted, a newer weights
 *      version swapped in between groups (its groups' log-probs match the new weights), RESET ->
 *      HELLO again and no group before new credit, heartbeats, BYE; the state file lets a
 *      restarted actor continue its prompt stream with new group ids;
 *   3. sync mode: no group before the version CREDIT.latest names has been pulled;
 *   4. the evaluator: evaluates the first version and each crossing of eval_every, metrics step
 *      = the evaluated version's step. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "apprentice/actor.h"
#include "apprentice/base.h"
#include "apprentice/learner.h"
#include "apprentice/msg.h"
#include "apprentice/weights.h"
#include "test.h"
#include "test_learner_fixture.h"

static char s_student[700], s_root[600];

static ap_config_t *s_cfg(const char *a, const char *b, const char *c) {
    return fx_config(s_student, "sampling.temperature=0.9", "sampling.top_p=0.8",
                     "endpoints.buffer_actors=inproc://buffer-actors",
                     "endpoints.weights=inproc://weights",
                     "endpoints.weights_pub=inproc://weights-pub", "actors.count=2",
                     a ? a : "run.seed=1", b ? b : "run.seed=1", c ? c : "run.seed=1", NULL);
}

/* The example of an addition prompt "a+b=" (the answer recomputed). */
static void s_example(const char *prompt, ap_example_t *ex) {
    long long x = 0, y = 0;
    AP_ASSERT(sscanf(prompt, "%lld+%lld=", &x, &y) == 2);
    ex->prompt = ap_strdup(prompt);
    ex->answer = ap_sprintf("%lld", x + y);
    ex->solution = NULL;
    ex->id = ap_strdup(prompt);
}

/* Check a student group made with model m at tau: returns the largest log-prob error. */
static double s_check_group(const ap_group_t *g, ap_model_t *m, const ap_task_t *task,
                            const ap_tokenizer_t *tok, double tau, int G, int max_new) {
    const int V = ap_tokenizer_vocab_size(tok);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = V;
    ap_msg_t msg = {.type = AP_MSG_GROUP, .u.group = (ap_group_t *)g};
    AP_CHECK(ap_msg_validate(&msg, &lim) == 0, "group valid: %s", ap_errmsg());
    AP_CHECK(g->G == G && g->source == AP_SOURCE_ON_POLICY && fabs(g->temperature - tau) < 1e-6,
             "G %d source %d temperature %g", g->G, g->source, g->temperature);
    ap_example_t ex = {0};
    s_example(g->prompt_text, &ex);
    char **text = ap_calloc((size_t)G, sizeof *text);
    ap_verdict_t *vd = ap_calloc((size_t)G, sizeof *vd);
    ap_task_rollout_t *ro = ap_calloc((size_t)G, sizeof *ro);
    double maxerr = 0;
    for (int i = 0; i < G; i++) {
        const int off = g->offset[i], len = g->offset[i + 1] - off;
        const int32_t *y = g->tokens + off;
        AP_CHECK(len >= 1 && len <= max_new, "length %d", len);
        int ends_eos = y[len - 1] == ap_tokenizer_eos(tok);
        AP_CHECK((g->finish[i] == AP_FINISH_EOS) == ends_eos &&
                     (g->finish[i] == AP_FINISH_EOS || len == max_new),
                 "finish %d with %d tokens, last %d", g->finish[i], len, y[len - 1]);
        float lp[64];
        fx_logprobs(m, g->prompt, g->n_prompt, y, len, tau, lp);
        for (int t = 0; t < len; t++)
            maxerr = fmax(maxerr, fabs(lp[t] - g->logprobs[off + t]));
        text[i] = ap_tokenizer_decode(tok, y, len, AP_TOK_STOP_EOS);
        ap_task_verify(task, &ex, text[i], &vd[i]);
        ro[i] = (ap_task_rollout_t){text[i], vd[i].correct, vd[i].feedback};
        AP_CHECK(g->correct[i] == vd[i].correct && g->reward[i] == (float)vd[i].reward &&
                     !strcmp(g->feedback[i], vd[i].feedback),
                 "verdict of trajectory %d", i);
    }
    for (int i = 0; i < G; i++) {
        int32_t *ctx = NULL;
        int n = 0, h = ap_task_encode_privileged(task, tok, &ex, ro, G, i, &ctx, &n);
        AP_CHECK(ap_group_has_ctx(g, i) == h, "h of trajectory %d: %d want %d", i,
                 ap_group_has_ctx(g, i), h);
        AP_CHECK(g->ctx_offset[i + 1] - g->ctx_offset[i] == n &&
                     (n == 0 || !memcmp(ctx, g->ctx_tokens + g->ctx_offset[i], (size_t)n * 4)),
                 "context of trajectory %d", i);
        free(ctx);
        free(text[i]);
    }
    free(text), free(vd), free(ro);
    ap_example_clear(&ex);
    return maxerr;
}

static void s_no_sockets(void) {
    ap_config_t *cfg = s_cfg(NULL, NULL, NULL);
    ap_task_t *task = ap_task_new(&cfg->task);
    ap_tokenizer_t *tok = ap_tokenizer_load_dir(s_student);
    ap_model_t *m = ap_model_load(s_student);
    ap_actor_opts_t o = {.cfg = cfg, .mode = AP_ACTOR_STUDENT, .id = 0};
    ap_actor_t *a0 = ap_actor_new(&o);
    AP_ASSERTF(a0, "%s", ap_errmsg());
    double maxerr = 0;
    char prompts0[10][32];
    for (int k = 0; k < 10; k++) {
        ap_group_t *g = ap_actor_make_group(a0);
        AP_ASSERTF(g, "%s", ap_errmsg());
        maxerr = fmax(maxerr, s_check_group(g, m, task, tok, 0.9, 4, 8));
        AP_CHECK(g->id >> 40 == 0 && (g->id & 0xffffffffu) == (uint64_t)k, "group id %llx",
                 (unsigned long long)g->id);
        snprintf(prompts0[k], sizeof prompts0[k], "%s", g->prompt_text);
        ap_group_destroy(&g);
    }
    printf("case student groups: 10 valid groups of 4, largest log-prob error %.3g (tau 0.9, "
           "top_p 0.8)\n",
           maxerr);
    AP_CHECK(maxerr < 2e-4, "log-probs differ by %g", maxerr);

    /* shards: actor 1 draws other prompts; a fresh actor 0 draws the same ones again */
    o.id = 1;
    ap_actor_t *a1 = ap_actor_new(&o);
    o.id = 0;
    ap_actor_t *a0b = ap_actor_new(&o);
    int same0 = 0, shared = 0;
    for (int k = 0; k < 10; k++) {
        ap_group_t *g1 = ap_actor_make_group(a1), *g0 = ap_actor_make_group(a0b);
        same0 += !strcmp(g0->prompt_text, prompts0[k]);
        for (int j = 0; j < 10; j++)
            shared += !strcmp(g1->prompt_text, prompts0[j]);
        AP_CHECK(g1->id >> 40 == 1, "actor 1's ids");
        ap_group_destroy(&g1);
        ap_group_destroy(&g0);
    }
    printf("case shards: actor 0 again %d/10 same prompts, actor 1 shares %d\n", same0, shared);
    AP_CHECK(same0 == 10 && shared <= 1, "shards: same %d shared %d", same0, shared);
    ap_actor_destroy(&a1);
    ap_actor_destroy(&a0b);

    /* a blob of another network is refused */
    ap_model_config_t other = *ap_model_config(m);
    other.num_layers = 1;
    ap_model_t *om = ap_model_new(&other, 3);
    size_t bytes;
    const void *arena = ap_model_blob(om, &bytes);
    size_t size;
    uint8_t *blob = ap_weights_pack((ap_version_t){1, 1}, &other, 0, arena, bytes, &size);
    ap_weights_t w;
    AP_ASSERT(ap_weights_parse(blob, size, &w) == 0);
    AP_CHECK(ap_actor_set_weights(a0, &w) < 0, "another network refused");
    ap_actor_stats_t st;
    ap_actor_stats(a0, &st);
    AP_CHECK(st.weights_refused == 1 && ap_version_is_zero(ap_actor_version(a0)),
             "refusal counted, version kept");
    printf("case weights of another network: %s\n", ap_errmsg());
    free(blob);
    ap_model_destroy(&om);
    ap_actor_destroy(&a0);

    /* dataset: gold */
    o.mode = AP_ACTOR_DATASET;
    ap_actor_t *d = ap_actor_new(&o);
    AP_ASSERTF(d, "%s", ap_errmsg());
    for (int k = 0; k < 5; k++) {
        ap_group_t *g = ap_actor_make_group(d);
        ap_msg_t msg = {.type = AP_MSG_GROUP, .u.group = g};
        AP_CHECK(ap_msg_validate(&msg, NULL) == 0, "dataset group valid: %s", ap_errmsg());
        char *text = ap_tokenizer_decode(tok, g->tokens, g->n_tokens, AP_TOK_STOP_EOS);
        ap_example_t ex = {0};
        s_example(g->prompt_text, &ex);
        AP_CHECK(g->G == 1 && g->source == AP_SOURCE_DATASET && ap_version_is_zero(g->version) &&
                     (g->id >> 39 & 1) && g->correct[0] && !strcmp(text, ex.answer) &&
                     g->tokens[g->n_tokens - 1] == ap_tokenizer_eos(tok) && g->logprobs[0] == 0,
                 "gold group: '%s' for %s", text, g->prompt_text);
        free(text);
        ap_example_clear(&ex);
        ap_group_destroy(&g);
    }
    ap_actor_destroy(&d);
    printf("case dataset gold: 5 groups checked\n");

    /* dataset: teacher-written (the student's checkpoint as teacher) */
    ap_config_t *tcfg = s_cfg("actors.dataset_source=teacher", NULL, NULL);
    char set[800];
    snprintf(set, sizeof set, "model.teacher=%s", s_student);
    AP_ASSERT(ap_config_set(tcfg, set) == 0);
    o.cfg = tcfg;
    d = ap_actor_new(&o);
    AP_ASSERTF(d, "%s", ap_errmsg());
    ap_group_t *g = ap_actor_make_group(d);
    ap_msg_t msg = {.type = AP_MSG_GROUP, .u.group = g};
    int zero = 1;
    for (int q = 0; q < g->n_tokens; q++)
        zero &= g->logprobs[q] == 0;
    AP_CHECK(ap_msg_validate(&msg, NULL) == 0 && g->G == 4 && g->source == AP_SOURCE_DATASET &&
                 zero && g->n_ctx == 0,
             "teacher-written group");
    printf("case dataset teacher: G %d, %d tokens\n", g->G, g->n_tokens);
    ap_group_destroy(&g);
    ap_actor_destroy(&d);

    /* simulated: instant, valid */
    o.cfg = cfg, o.mode = AP_ACTOR_STUDENT, o.simulate = 1;
    ap_actor_t *sim = ap_actor_new(&o);
    AP_ASSERTF(sim, "%s", ap_errmsg());
    double t0 = ap_now();
    int valid = 0;
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    lim.vocab_size = ap_tokenizer_vocab_size(tok);
    for (int k = 0; k < 200; k++) {
        ap_group_t *sg = ap_actor_make_group(sim);
        ap_msg_t sm = {.type = AP_MSG_GROUP, .u.group = sg};
        valid += sg && sg->G == 4 && ap_msg_validate(&sm, &lim) == 0;
        ap_group_destroy(&sg);
    }
    double dt = ap_now() - t0;
    printf("case simulate: %d/200 valid groups in %.3f s\n", valid, dt);
    AP_CHECK(valid == 200 && dt < 2.0, "simulated groups: %d valid, %.2f s", valid, dt);
    ap_actor_destroy(&sim);

    ap_model_destroy(&m);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&task);
    ap_config_destroy(&tcfg);
    ap_config_destroy(&cfg);
}

/* ---- with sockets ------------------------------------------------------------------------ */

typedef struct {
    ap_actor_t *a;
    int rc;
    atomic_int done;
} s_run_t;

static void *s_run_main(void *arg) {
    s_run_t *r = arg;
    r->rc = ap_actor_run(r->a);
    atomic_store(&r->done, 1);
    return NULL;
}

typedef struct {
    ap_net_t *net;
    struct ev_loop *loop;
    ap_wserver_t *ws;
    ap_sock_t *router;
    ap_peer_t actor;
    int hellos, heartbeats, byes, groups;
    long granted;
    ap_version_t hb_version;
    ap_group_t *last; /* the newest group received (owned) */
} s_env_t;

static void s_env_new(s_env_t *E) {
    memset(E, 0, sizeof *E);
    E->net = ap_net_new(&(ap_net_opts_t){0});
    E->loop = ev_loop_new(EVFLAG_AUTO);
    ap_wserver_opts_t wo = {.endpoint = "inproc://weights",
                            .pub_endpoint = "inproc://weights-pub",
                            .hint_interval = 0.1};
    E->ws = ap_wserver_new(E->net, E->loop, &wo);
    AP_ASSERTF(E->ws, "%s", ap_errmsg());
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = "inproc://buffer-actors",
                         .bind = 1,
                         .max_msg = 16 << 20,
                         .limits = &lim,
                         .name = "fake-buffer"};
    E->router = ap_sock_new(E->net, &so);
    AP_ASSERTF(E->router, "%s", ap_errmsg());
}

static void s_env_free(s_env_t *E) {
    ap_group_destroy(&E->last);
    ap_sock_destroy(&E->router);
    ap_wserver_destroy(&E->ws);
    ev_loop_destroy(E->loop);
    ap_net_destroy(&E->net);
}

static void s_publish(s_env_t *E, ap_model_t *m, ap_version_t v) {
    size_t bytes;
    const void *arena = ap_model_blob(m, &bytes);
    AP_ASSERTF(ap_wserver_publish(E->ws, v, ap_model_config(m), ap_learner_table_hash(m), arena,
                                  bytes) == 0,
               "%s", ap_errmsg());
}

static void s_grant(s_env_t *E, uint32_t n, ap_version_t latest) {
    ap_msg_t c = {.type = AP_MSG_CREDIT, .u.credit = {.grant = n, .latest = latest}};
    AP_CHECK(ap_sock_send(E->router, &E->actor, &c) == 0, "credit: %s", ap_errmsg());
    E->granted += n;
}

/* Serve for `secs` seconds: weights, and the buffer's side (HELLO, GROUP, HEARTBEAT, BYE). */
static void s_serve(s_env_t *E, double secs, const char *vocab_check) {
    double t0 = ap_now();
    do {
        ev_run(E->loop, EVRUN_NOWAIT);
        ap_peer_t from;
        ap_msg_t m;
        if (ap_sock_recv_wait(E->router, &from, &m, 5) != 1) continue;
        switch (m.type) {
        case AP_MSG_HELLO:
            E->hellos++;
            E->actor = from;
            AP_CHECK(m.u.hello.role == AP_ROLE_ACTOR && m.u.hello.id == 1 &&
                         !strcmp(m.u.hello.name, "actor-1") && m.u.hello.vocab_hash != 0,
                     "hello %s", m.u.hello.name);
            (void)vocab_check;
            break;
        case AP_MSG_GROUP:
            E->groups++;
            AP_CHECK(E->groups <= E->granted, "group %d with %ld granted", E->groups, E->granted);
            ap_group_destroy(&E->last);
            E->last = m.u.group;
            m.u.group = NULL;
            break;
        case AP_MSG_HEARTBEAT:
            E->heartbeats++;
            E->hb_version = m.u.heartbeat.version;
            break;
        case AP_MSG_BYE:
            E->byes++;
            break;
        default:
            break;
        }
        ap_msg_clear(&m);
    } while (ap_now() - t0 < secs);
}

static void s_conversation(void) {
    char run[800];
    snprintf(run, sizeof run, "%s/run-actor", s_root);
    ap_mkdirs(run);
    ap_config_t *cfg = s_cfg(NULL, NULL, NULL);
    ap_task_t *task = ap_task_new(&cfg->task);
    ap_tokenizer_t *tok = ap_tokenizer_load_dir(s_student);
    ap_model_t *m = ap_model_load(s_student), *m2 = ap_model_load(s_student);
    ap_rng_t r;
    ap_rng_seed(&r, 5, 0);
    float *p2 = ap_model_params(m2);
    for (size_t i = 0; i < ap_model_num_floats(m2); i++)
        p2[i] += (float)(0.05 * ap_rng_normal(&r));

    s_env_t E;
    s_env_new(&E);
    s_publish(&E, m, (ap_version_t){1, 0});
    char mpath[900];
    snprintf(mpath, sizeof mpath, "%s/metrics-actor.jsonl", run);
    ap_metrics_t *met = ap_metrics_open(mpath, "actor", 1);
    ap_actor_opts_t o = {.cfg = cfg,
                         .run_dir = run,
                         .net = E.net,
                         .metrics = met,
                         .mode = AP_ACTOR_STUDENT,
                         .id = 1,
                         .metrics_interval = 0.2};
    s_run_t R = {.a = ap_actor_new(&o)};
    AP_ASSERTF(R.a, "%s", ap_errmsg());
    atomic_init(&R.done, 0);
    pthread_t th;
    AP_ASSERT(pthread_create(&th, NULL, s_run_main, &R) == 0);

    /* HELLO, then 2 credits: exactly 2 groups, version (1, 0) */
    double t0 = ap_now();
    while (!E.hellos && ap_now() - t0 < 5)
        s_serve(&E, 0.01, NULL);
    AP_CHECK(E.hellos == 1, "hello");
    s_grant(&E, 2, (ap_version_t){1, 0});
    s_serve(&E, 0.6, NULL);
    AP_CHECK(E.groups == 2, "2 credits -> %d groups", E.groups);
    double err0 = E.last ? s_check_group(E.last, m, task, tok, 0.9, 4, 8) : 1;
    AP_CHECK(E.last && E.last->version.gen == 1 && E.last->version.step == 0,
             "first groups carry version (1, 0)");
    printf("case credit: 2 granted -> %d groups in 0.6 s; version (1, 0) log-prob error %.3g\n",
           E.groups, err0);
    AP_CHECK(err0 < 2e-4, "log-probs vs version (1, 0): %g", err0);

    /* a newer version: groups made after the swap carry it and its log-probs */
    s_publish(&E, m2, (ap_version_t){1, 1});
    int swapped = 0;
    t0 = ap_now();
    while (!swapped && ap_now() - t0 < 10) {
        s_grant(&E, 1, (ap_version_t){1, 1});
        int before = E.groups;
        double t1 = ap_now();
        while (E.groups == before && ap_now() - t1 < 3)
            s_serve(&E, 0.01, NULL);
        swapped = E.last && E.last->version.step == 1;
    }
    AP_CHECK(swapped, "version (1, 1) swapped in");
    double err1 = swapped ? s_check_group(E.last, m2, task, tok, 0.9, 4, 8) : 1;
    printf(
        "case weights swap: version (1, 1) after %d groups, log-prob error vs new weights %.3g\n",
        E.groups, err1);
    AP_CHECK(err1 < 2e-4, "log-probs vs version (1, 1): %g", err1);

    /* RESET: HELLO again, nothing without new credit */
    s_serve(&E, 0.3, NULL);
    ap_msg_t rs = {.type = AP_MSG_RESET};
    snprintf(rs.u.bye.reason, sizeof rs.u.bye.reason, "buffer restarted");
    AP_ASSERT(ap_sock_send(E.router, &E.actor, &rs) == 0);
    int g_before = E.groups;
    E.granted = E.groups; /* the restarted buffer's books: nothing outstanding */
    s_serve(&E, 0.4, NULL);
    AP_CHECK(E.hellos == 2 && E.groups == g_before, "after RESET: hellos %d, groups %d -> %d",
             E.hellos, g_before, E.groups);
    s_grant(&E, 1, (ap_version_t){1, 1});
    s_serve(&E, 0.5, NULL);
    AP_CHECK(E.groups == g_before + 1, "one credit after RESET -> %d groups", E.groups - g_before);
    AP_CHECK(E.heartbeats >= 3 && E.hb_version.step == 1, "heartbeats %d (version step %llu)",
             E.heartbeats, (unsigned long long)E.hb_version.step);

    ap_actor_stop(R.a);
    t0 = ap_now();
    while (!atomic_load(&R.done) && ap_now() - t0 < 5)
        s_serve(&E, 0.01, NULL);
    pthread_join(th, NULL);
    s_serve(&E, 0.1, NULL);
    AP_CHECK(R.rc == 0 && E.byes == 1, "stopped: rc %d, BYE %d", R.rc, E.byes);
    printf("case conversation: %d hellos, %d groups (%ld granted), %d heartbeats, BYE %d\n",
           E.hellos, E.groups, E.granted, E.heartbeats, E.byes);
    ap_actor_stats_t st;
    ap_actor_stats(R.a, &st);
    AP_CHECK(st.weight_swaps == 2 && st.resets == 1, "swaps %ld resets %ld", st.weight_swaps,
             st.resets);
    ap_metrics_close(&met);
    int recs = 0;
    FILE *f = fopen(mpath, "r");
    char line[1 << 14];
    while (f && fgets(line, sizeof line, f))
        recs += strstr(line, "\"actor/tokens_per_s\"") != NULL;
    if (f) fclose(f);
    AP_CHECK(recs >= 2, "actor metrics records: %d", recs);

    /* restart: the state file continues the prompt stream, with new group ids */
    char *sp = ap_sprintf("%s/state/actor-1.json", run);
    AP_CHECK(ap_path_exists(sp), "state file %s", sp);
    free(sp);
    ap_actor_t *again = ap_actor_new(
        &(ap_actor_opts_t){.cfg = cfg, .run_dir = run, .mode = AP_ACTOR_STUDENT, .id = 1});
    ap_actor_t *fresh =
        ap_actor_new(&(ap_actor_opts_t){.cfg = cfg, .mode = AP_ACTOR_STUDENT, .id = 1});
    int repeats = 0;
    ap_group_t *ga = ap_actor_make_group(again);
    for (int k = 0; k < st.groups; k++) {
        ap_group_t *gf = ap_actor_make_group(fresh);
        repeats += !strcmp(gf->prompt_text, ga->prompt_text);
        ap_group_destroy(&gf);
    }
    AP_CHECK(repeats == 0 && (ga->id >> 32 & 0x7f) == 1 && (ga->id & 0xffffffffu) == 0,
             "continued stream (repeats %d), id %llx", repeats, (unsigned long long)ga->id);
    printf("case restart: first prompt after restart not among the first life's %ld; id %llx\n",
           st.groups, (unsigned long long)ga->id);
    ap_group_destroy(&ga);
    ap_actor_destroy(&again);
    ap_actor_destroy(&fresh);

    ap_actor_destroy(&R.a);
    s_env_free(&E);
    ap_model_destroy(&m);
    ap_model_destroy(&m2);
    ap_tokenizer_destroy(&tok);
    ap_task_destroy(&task);
    ap_config_destroy(&cfg);
}

static void s_sync(void) {
    ap_config_t *cfg = s_cfg("run.sync=true", NULL, NULL);
    ap_model_t *m = ap_model_load(s_student);
    s_env_t E;
    s_env_new(&E);
    s_publish(&E, m, (ap_version_t){1, 0});
    ap_actor_opts_t o = {.cfg = cfg, .net = E.net, .mode = AP_ACTOR_STUDENT, .id = 1};
    s_run_t R = {.a = ap_actor_new(&o)};
    AP_ASSERTF(R.a, "%s", ap_errmsg());
    atomic_init(&R.done, 0);
    pthread_t th;
    AP_ASSERT(pthread_create(&th, NULL, s_run_main, &R) == 0);
    double t0 = ap_now();
    while (!E.hellos && ap_now() - t0 < 5)
        s_serve(&E, 0.01, NULL);
    s_grant(&E, 1, (ap_version_t){1, 1}); /* the learner is at (1, 1): not published yet */
    s_serve(&E, 0.5, NULL);
    AP_CHECK(E.groups == 0, "sync: no group before version (1, 1) (%d)", E.groups);
    s_publish(&E, m, (ap_version_t){1, 1});
    t0 = ap_now();
    while (E.groups == 0 && ap_now() - t0 < 5)
        s_serve(&E, 0.01, NULL);
    AP_CHECK(E.groups == 1 && E.last->version.step == 1, "sync: one group with version (1, 1)");
    printf("case sync: group after version (1, 1) arrived: %d\n", E.groups);
    ap_actor_stop(R.a);
    while (!atomic_load(&R.done))
        s_serve(&E, 0.01, NULL);
    pthread_join(th, NULL);
    AP_CHECK(R.rc == 0, "sync actor rc");
    ap_actor_destroy(&R.a);
    s_env_free(&E);
    ap_model_destroy(&m);
    ap_config_destroy(&cfg);
}

static void s_eval(void) {
    char mpath[900];
    snprintf(mpath, sizeof mpath, "%s/metrics-eval.jsonl", s_root);
    ap_config_t *cfg = s_cfg("actors.eval_every=2", "actors.eval_size=8", "actors.pass_k=2");
    ap_model_t *m = ap_model_load(s_student);
    s_env_t E;
    s_env_new(&E);
    ap_metrics_t *met = ap_metrics_open(mpath, "eval", 0);
    ap_actor_opts_t o = {.cfg = cfg, .net = E.net, .metrics = met, .mode = AP_ACTOR_EVAL, .id = 0};
    s_run_t R = {.a = ap_actor_new(&o)};
    AP_ASSERTF(R.a, "%s", ap_errmsg());
    atomic_init(&R.done, 0);
    pthread_t th;
    AP_ASSERT(pthread_create(&th, NULL, s_run_main, &R) == 0);
    ap_actor_stats_t st = {0};
    for (int step = 0; step <= 3; step++) {
        s_publish(&E, m, (ap_version_t){1, (uint64_t)step});
        double t0 = ap_now();
        do {
            s_serve(&E, 0.02, NULL);
            ap_actor_stats(R.a, &st); /* racy read of counters: fine for a progress check */
        } while (ap_version_cmp(st.version, (ap_version_t){1, (uint64_t)step}) < 0 &&
                 ap_now() - t0 < 5);
        s_serve(&E, 0.3, NULL); /* an evaluation, if due, is done by then */
    }
    ap_actor_stop(R.a);
    while (!atomic_load(&R.done))
        s_serve(&E, 0.01, NULL);
    pthread_join(th, NULL);
    ap_metrics_close(&met);
    ap_actor_stats(R.a, &st);
    FILE *f = fopen(mpath, "r");
    char line[1 << 14];
    long steps[8];
    int n = 0, keys = 1;
    while (f && fgets(line, sizeof line, f) && n < 8) {
        json_error_t je;
        json_t *o2 = json_loads(line, 0, &je);
        json_t *vals = json_object_get(o2, "values");
        keys &= json_object_get(vals, "eval/accuracy") && json_object_get(vals, "eval/pass_at_k") &&
                json_number_value(json_object_get(vals, "eval/n")) == 8;
        steps[n++] = (long)json_number_value(json_object_get(o2, "step"));
        json_decref(o2);
    }
    if (f) fclose(f);
    printf("case eval: %ld evaluations at steps", st.evaluations);
    for (int i = 0; i < n; i++)
        printf(" %ld", steps[i]);
    printf(" (eval_every 2, versions 0..3)\n");
    AP_CHECK(R.rc == 0 && n == 2 && steps[0] == 0 && steps[1] == 2 && keys,
             "evaluated %d versions (want steps 0 and 2)", n);
    ap_actor_destroy(&R.a);
    s_env_free(&E);
    ap_model_destroy(&m);
    ap_config_destroy(&cfg);
}

int main(void) {
    ap_log_set_role("test_actor", 0);
    ap_log_set_level(AP_LOG_WARN);
    snprintf(s_root, sizeof s_root, "%s", ap_test_tmpdir("actor"));
    snprintf(s_student, sizeof s_student, "%s/student", s_root);
    fx_student(s_student, 7);
    double t0 = ap_now();
    s_no_sockets();
    s_conversation();
    s_sync();
    s_eval();
    printf("total %.2f s\n", ap_now() - t0);
    return ap_test_result();
}
