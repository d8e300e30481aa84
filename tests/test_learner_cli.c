/* test_learner_cli.c: `apprentice learner` as a process ($AP_BIN), against a fake buffer in this
 * process over ipc://:
 *   1. usage errors exit 2 (no --run, --id 1, a stray argument); a run directory without
 *      config.yaml exits 1 naming the file;
 *   2. a real run: HELLO, batches answered, SIGTERM -> exit 0 promptly with a checkpoint
 *      (RUN/latest), metrics in RUN/metrics/learner-0.jsonl;
 *   3. started again on the same run: resumes from the checkpoint with generation 2 (seen in its
 *      heartbeats), SIGINT -> exit 0. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/config.h"
#include "apprentice/transport.h"
#include "test.h"
#include "test_learner_fixture.h"

static pid_t s_spawn(const char *const argv[], const char *log) {
    pid_t p = fork();
    AP_ASSERT(p >= 0);
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return p;
}

/* Exit status of p (waiting up to `timeout` s; then SIGKILL and -1). */
static int s_wait(pid_t p, double timeout) {
    double t0 = ap_now();
    int st;
    while (ap_now() - t0 < timeout) {
        if (waitpid(p, &st, WNOHANG) == p)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ap_sleep(0.01);
    }
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    return -1;
}

static int s_file_has(const char *path, const char *needle) {
    char *text = NULL;
    if (ap_file_read(path, &text, NULL) < 0) return 0;
    int hit = strstr(text, needle) != NULL;
    free(text);
    return hit;
}

typedef struct {
    int hellos, answered, heartbeats, byes;
    ap_version_t hb;
} s_seen_t;

/* Serve the learner for `secs` (or until `answers` batches were answered). */
static void s_serve(ap_sock_t *r, ap_model_t *shadow, s_seen_t *S, double secs, int answers) {
    double t0 = ap_now();
    static uint64_t seed = 1;
    while (ap_now() - t0 < secs && (answers <= 0 || S->answered < answers)) {
        ap_peer_t from;
        ap_msg_t m;
        if (ap_sock_recv_wait(r, &from, &m, 20) != 1) continue;
        if (m.type == AP_MSG_HELLO) S->hellos++;
        if (m.type == AP_MSG_HEARTBEAT) S->heartbeats++, S->hb = m.u.heartbeat.version;
        if (m.type == AP_MSG_BYE) S->byes++;
        if (m.type == AP_MSG_BATCH_REQUEST) {
            fx_batch_opts_t bo = fx_batch_defaults();
            bo.seed = seed++;
            ap_batch_t *b = fx_batch(shadow, &bo);
            b->request_id = m.u.batch_request.request_id;
            ap_msg_t a = {.type = AP_MSG_BATCH, .u.batch = b};
            if (ap_sock_send(r, &from, &a) == 0) S->answered++;
            ap_batch_destroy(&b);
        }
        ap_msg_clear(&m);
    }
}

int main(void) {
    ap_log_set_role("test_learner_cli", 0);
    ap_log_set_level(AP_LOG_WARN);
    const char *bin = getenv("AP_BIN");
    if (!bin || !*bin) {
        fprintf(stderr, "AP_BIN is not set (run through ctest)\n");
        return 1;
    }
    char root[PATH_MAX], student[PATH_MAX + 16], run[PATH_MAX + 16], log[PATH_MAX + 32];
    AP_ASSERT(realpath(ap_test_tmpdir("learner-cli"), root));
    snprintf(student, sizeof student, "%s/student", root);
    snprintf(run, sizeof run, "%s/run", root);
    fx_student(student, 7);

    /* 1. usage and missing config */
    snprintf(log, sizeof log, "%s/usage.log", root);
    const char *u1[] = {bin, "learner", NULL};
    const char *u2[] = {bin, "learner", "--run", run, "--id", "1", NULL};
    const char *u3[] = {bin, "learner", "--run", run, "extra", NULL};
    const char *u4[] = {bin, "learner", "--run", run, NULL};
    int r1 = s_wait(s_spawn(u1, log), 10), r2 = s_wait(s_spawn(u2, log), 10),
        r3 = s_wait(s_spawn(u3, log), 10);
    AP_CHECK(r1 == 2 && r2 == 2 && r3 == 2, "usage errors exit 2: %d %d %d", r1, r2, r3);
    ap_mkdirs(run);
    int r4 = s_wait(s_spawn(u4, log), 10);
    AP_CHECK(r4 == 1 && s_file_has(log, "config.yaml"), "no config: exit %d, message names it", r4);
    printf("case usage: exits %d %d %d; missing config.yaml: exit %d\n", r1, r2, r3, r4);

    /* 2. a run, stopped by SIGTERM */
    char ep_b[PATH_MAX + 64], ep_w[PATH_MAX + 64], ep_p[PATH_MAX + 64];
    snprintf(ep_b, sizeof ep_b, "endpoints.buffer_learner=ipc://%s/bl.ipc", root);
    snprintf(ep_w, sizeof ep_w, "endpoints.weights=ipc://%s/w.ipc", root);
    snprintf(ep_p, sizeof ep_p, "endpoints.weights_pub=ipc://%s/wp.ipc", root);
    ap_config_t *cfg = fx_config(student, "objective.grpo.enabled=true", "run.max_steps=100000",
                                 ep_b, ep_w, ep_p, NULL);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    AP_ASSERTF(ap_config_save(cfg, path) == 0, "%s", ap_errmsg());
    char mdir[PATH_MAX + 32];
    snprintf(mdir, sizeof mdir, "%s/metrics", run);
    ap_mkdirs(mdir);
    snprintf(mdir, sizeof mdir, "%s/ckpt", run);
    ap_mkdirs(mdir);
    ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = ep_b + strlen("endpoints.buffer_learner="),
                         .bind = 1,
                         .max_msg = 16 << 20,
                         .limits = &lim,
                         .name = "fake-buffer"};
    ap_sock_t *router = ap_sock_new(net, &so);
    AP_ASSERTF(router, "%s", ap_errmsg());
    ap_model_t *shadow = ap_model_load(student);
    const char *argv[] = {bin, "learner", "--run", run, "--id", "0", NULL};
    snprintf(log, sizeof log, "%s/learner-1.log", root);
    s_seen_t S = {0};
    pid_t p = s_spawn(argv, log);
    s_serve(router, shadow, &S, 20, 3);
    s_serve(router, shadow, &S, 0.3, 0); /* let those steps finish */
    double t0 = ap_now();
    kill(p, SIGTERM);
    int rc = s_wait(p, 10);
    double dt = ap_now() - t0;
    s_serve(router, shadow, &S, 0.1, 0);
    char latest[PATH_MAX + 32], met[PATH_MAX + 64];
    snprintf(latest, sizeof latest, "%s/latest", run);
    snprintf(met, sizeof met, "%s/metrics/learner-0.jsonl", run);
    AP_CHECK(rc == 0 && dt < 3, "SIGTERM: exit %d after %.2f s (log %s)", rc, dt, log);
    AP_CHECK(S.hellos == 1 && S.answered >= 3 && S.byes == 1, "hello %d answered %d bye %d",
             S.hellos, S.answered, S.byes);
    AP_CHECK(s_file_has(latest, "ckpt/step-"), "checkpoint at exit");
    AP_CHECK(s_file_has(met, "\"loss/total\"") && s_file_has(met, "\"event\":\"checkpoint\""),
             "metrics file %s", met);
    printf("case SIGTERM: exit %d in %.2f s after %d batches; latest written\n", rc, dt,
           S.answered);

    /* 3. again: resumes with generation 2 */
    snprintf(log, sizeof log, "%s/learner-2.log", root);
    s_seen_t S2 = {0};
    p = s_spawn(argv, log);
    s_serve(router, shadow, &S2, 20, 2);
    t0 = ap_now();
    while (S2.hb.gen == 0 && ap_now() - t0 < 5)
        s_serve(router, shadow, &S2, 0.1, 0);
    kill(p, SIGINT);
    rc = s_wait(p, 10);
    AP_CHECK(rc == 0 && S2.hellos == 1 && S2.hb.gen == 2, "resumed: exit %d, heartbeat gen %u", rc,
             S2.hb.gen);
    AP_CHECK(s_file_has(log, "resumed from"), "the log says it resumed");
    printf("case restart: resumed, heartbeats at gen %u, SIGINT exit %d\n", S2.hb.gen, rc);

    ap_model_destroy(&shadow);
    ap_sock_destroy(&router);
    ap_net_destroy(&net);
    ap_config_destroy(&cfg);
    return ap_test_result();
}
