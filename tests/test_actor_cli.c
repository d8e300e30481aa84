/* test_actor_cli.c: `apprentice actor` as a process ($AP_BIN), against a fake buffer and a
 * weights server in this process over ipc://:
 *   1. usage errors exit 2 (unknown mode, no --id, no --run);
 *   2. --mode student: HELLO as actor-0, groups only against credit, carrying the published
 *      version; SIGTERM -> BYE and exit 0 promptly; RUN/metrics/actor-0.jsonl and
 *      RUN/state/actor-0.json written;
 *   3. --mode dataset: dataset groups (G = 1, version 0, ids with bit 39) as dataset-0, SIGINT;
 *   4. --mode eval --simulate: nothing to evaluate, idles, SIGTERM -> exit 0. */
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
#include "apprentice/learner.h"
#include "apprentice/transport.h"
#include "apprentice/weights.h"
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
    struct ev_loop *loop;
    ap_sock_t *router;
    char hello[AP_NAME_MAX];
    int hellos, groups, byes, dataset_ok, version_ok;
    long granted;
} s_fake_t;

static void s_serve(s_fake_t *F, double secs, int until_groups) {
    double t0 = ap_now();
    while (ap_now() - t0 < secs && (until_groups <= 0 || F->groups < until_groups)) {
        ev_run(F->loop, EVRUN_NOWAIT);
        ap_peer_t from;
        ap_msg_t m;
        if (ap_sock_recv_wait(F->router, &from, &m, 5) != 1) continue;
        ap_msg_t c = {.type = AP_MSG_CREDIT, .u.credit = {.grant = 0, .latest = {1, 0}}};
        if (m.type == AP_MSG_HELLO) {
            F->hellos++;
            snprintf(F->hello, sizeof F->hello, "%s", m.u.hello.name);
            c.u.credit.grant = 2;
        } else if (m.type == AP_MSG_GROUP) {
            F->groups++;
            AP_CHECK(F->groups <= F->granted, "group %d beyond %ld credits", F->groups, F->granted);
            const ap_group_t *g = m.u.group;
            F->dataset_ok += g->source == AP_SOURCE_DATASET && g->G == 1 &&
                             ap_version_is_zero(g->version) && (g->id >> 39 & 1);
            F->version_ok +=
                g->source == AP_SOURCE_ON_POLICY && g->version.gen == 1 && g->version.step == 0;
            c.u.credit.grant = 1;
            c.u.credit.ack_seq = m.seq;
        } else if (m.type == AP_MSG_BYE) {
            F->byes++;
        }
        if (c.u.credit.grant && ap_sock_send(F->router, &from, &c) == 0)
            F->granted += c.u.credit.grant;
        ap_msg_clear(&m);
    }
}

int main(void) {
    ap_log_set_role("test_actor_cli", 0);
    ap_log_set_level(AP_LOG_WARN);
    const char *bin = getenv("AP_BIN");
    if (!bin || !*bin) {
        fprintf(stderr, "AP_BIN is not set (run through ctest)\n");
        return 1;
    }
    char root[PATH_MAX], student[PATH_MAX + 16], run[PATH_MAX + 16], log[PATH_MAX + 32];
    AP_ASSERT(realpath(ap_test_tmpdir("actor-cli"), root));
    snprintf(student, sizeof student, "%s/student", root);
    snprintf(run, sizeof run, "%s/run", root);
    fx_student(student, 7);

    snprintf(log, sizeof log, "%s/usage.log", root);
    const char *u1[] = {bin, "actor", "--run", run, "--id", "0", "--mode", "teacher", NULL};
    const char *u2[] = {bin, "actor", "--run", run, NULL};
    const char *u3[] = {bin, "actor", "--id", "0", NULL};
    int r1 = s_wait(s_spawn(u1, log), 10), r2 = s_wait(s_spawn(u2, log), 10),
        r3 = s_wait(s_spawn(u3, log), 10);
    AP_CHECK(r1 == 2 && r2 == 2 && r3 == 2, "usage errors exit 2: %d %d %d", r1, r2, r3);
    printf("case usage: exits %d %d %d\n", r1, r2, r3);

    char ep_a[PATH_MAX + 64], ep_w[PATH_MAX + 64], ep_p[PATH_MAX + 64];
    snprintf(ep_a, sizeof ep_a, "endpoints.buffer_actors=ipc://%s/ba.ipc", root);
    snprintf(ep_w, sizeof ep_w, "endpoints.weights=ipc://%s/w.ipc", root);
    snprintf(ep_p, sizeof ep_p, "endpoints.weights_pub=ipc://%s/wp.ipc", root);
    ap_config_t *cfg = fx_config(student, "batch.on_policy_fraction=0.5", ep_a, ep_w, ep_p, NULL);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics", run);
    ap_mkdirs(path);
    snprintf(path, sizeof path, "%s/config.yaml", run);
    AP_ASSERTF(ap_config_save(cfg, path) == 0, "%s", ap_errmsg());

    ap_net_t *net = ap_net_new(&(ap_net_opts_t){0});
    s_fake_t F = {.loop = ev_loop_new(EVFLAG_AUTO)};
    ap_wserver_opts_t wo = {.endpoint = ep_w + strlen("endpoints.weights="),
                            .pub_endpoint = ep_p + strlen("endpoints.weights_pub=")};
    ap_wserver_t *ws = ap_wserver_new(net, F.loop, &wo);
    AP_ASSERTF(ws, "%s", ap_errmsg());
    ap_model_t *m = ap_model_load(student);
    size_t bytes;
    const void *arena = ap_model_blob(m, &bytes);
    AP_ASSERT(ap_wserver_publish(ws, (ap_version_t){1, 0}, ap_model_config(m),
                                 ap_learner_table_hash(m), arena, bytes) == 0);
    ap_msg_limits_t lim;
    ap_msg_limits_default(&lim);
    ap_sock_opts_t so = {.type = AP_SOCK_ROUTER,
                         .endpoint = ep_a + strlen("endpoints.buffer_actors="),
                         .bind = 1,
                         .max_msg = 16 << 20,
                         .limits = &lim,
                         .name = "fake-buffer"};
    F.router = ap_sock_new(net, &so);
    AP_ASSERTF(F.router, "%s", ap_errmsg());

    /* student */
    const char *a1[] = {bin, "actor", "--run", run, "--id", "0", "--mode", "student", NULL};
    snprintf(log, sizeof log, "%s/actor.log", root);
    pid_t p = s_spawn(a1, log);
    s_serve(&F, 20, 4);
    double t0 = ap_now();
    kill(p, SIGTERM);
    int rc = -1;
    while (ap_now() - t0 < 5) {
        s_serve(&F, 0.02, 0);
        int st;
        if (waitpid(p, &st, WNOHANG) == p) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
    }
    if (rc < 0) rc = s_wait(p, 1);
    double dt = ap_now() - t0;
    s_serve(&F, 0.1, 0);
    AP_CHECK(rc == 0 && dt < 3 && F.byes == 1, "student: exit %d in %.2f s, BYE %d", rc, dt,
             F.byes);
    AP_CHECK(
        F.hellos == 1 && !strcmp(F.hello, "actor-0") && F.groups >= 4 && F.version_ok == F.groups,
        "student: hello %s, %d groups, %d with version (1, 0)", F.hello, F.groups, F.version_ok);
    char met[PATH_MAX + 64], state[PATH_MAX + 64];
    snprintf(met, sizeof met, "%s/metrics/actor-0.jsonl", run);
    snprintf(state, sizeof state, "%s/state/actor-0.json", run);
    AP_CHECK(s_file_has(met, "\"actor/tokens_per_s\"") && s_file_has(state, "\"cursor\""),
             "metrics %s and state %s", met, state);
    printf("case student: %d groups against %ld credits, SIGTERM exit %d in %.2f s\n", F.groups,
           F.granted, rc, dt);

    /* dataset */
    memset(&F.hello, 0, sizeof F.hello);
    F.hellos = F.groups = F.byes = F.dataset_ok = 0;
    F.granted = 0;
    const char *a2[] = {bin, "actor", "--run", run, "--id", "0", "--mode", "dataset", NULL};
    snprintf(log, sizeof log, "%s/dataset.log", root);
    p = s_spawn(a2, log);
    s_serve(&F, 20, 3);
    kill(p, SIGINT);
    s_serve(&F, 0.3, 0);
    rc = s_wait(p, 5);
    AP_CHECK(rc == 0 && !strcmp(F.hello, "dataset-0") && F.groups >= 3 && F.dataset_ok == F.groups,
             "dataset: exit %d, hello %s, %d groups, %d dataset-shaped", rc, F.hello, F.groups,
             F.dataset_ok);
    printf("case dataset: %d gold groups, SIGINT exit %d\n", F.groups, rc);

    /* evaluator, simulated: idles until stopped */
    const char *a3[] = {bin, "actor",  "--run", run,          "--id",
                        "0", "--mode", "eval",  "--simulate", NULL};
    snprintf(log, sizeof log, "%s/eval.log", root);
    p = s_spawn(a3, log);
    s_serve(&F, 0.5, 0);
    kill(p, SIGTERM);
    t0 = ap_now();
    rc = -1;
    while (rc < 0 && ap_now() - t0 < 5) {
        s_serve(&F, 0.02, 0);
        int st;
        if (waitpid(p, &st, WNOHANG) == p) rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    }
    AP_CHECK(rc == 0, "simulated evaluator: exit %d", rc);
    printf("case eval --simulate: SIGTERM exit %d\n", rc);

    ap_sock_destroy(&F.router);
    ap_wserver_destroy(&ws);
    ev_loop_destroy(F.loop);
    ap_net_destroy(&net);
    ap_model_destroy(&m);
    ap_config_destroy(&cfg);
    return ap_test_result();
}
