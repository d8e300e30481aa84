/* test_buffer_procs.c: the buffer and teachers as real processes (`apprentice buffer`,
 * `apprentice teacher --simulate`, from AP_BIN) in a run directory made by ap_rundir_create
 * (ipc:// endpoints under RUN/sock), with a fake actor and a fake learner in this process:
 *   1. two simulated teachers (30 ms per request); 240 groups flow actor -> teachers -> learner;
 *      teacher 1 is SIGKILLed mid-stream: its requests are re-dispatched and every group reaches
 *      the learner exactly once; the buffer's final metrics record balances (in = served, no
 *      drops) and counts the re-dispatches;
 *   2. SIGTERM: the buffer exits 0 within a second, its peers get BYE;
 *   3. a new buffer on the same endpoints: the surviving teacher's heartbeats get RESET and it
 *      says HELLO again by itself, the fakes too; a restarted teacher 1 joins; 40 more groups
 *      are served exactly once;
 *   4. SIGTERM to the buffer and the teachers: each exits 0 within a second;
 *   5. the same with security.curve and one key pair per role from `apprentice keygen`: groups
 *      flow through the CURVE buffer and teacher processes, a stranger's key gets nothing. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "apprentice/base.h"
#include "apprentice/buffer.h"
#include "apprentice/config.h"
#include "apprentice/rundir.h"
#include "apprentice/tokenizer.h"
#include "test.h"
#include "test_buffer_fakes.h"

#define HB 0.1

static const char *s_bin;
static char *s_dir;
static pid_t s_pids[8];
static int s_npids;

static pid_t s_spawn(const char *log, char *const *argv) {
    pid_t pid = fork();
    AP_ASSERT(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execv(s_bin, argv);
        _exit(127);
    }
    s_pids[s_npids++] = pid;
    return pid;
}

static pid_t s_start_buffer(void) {
    char *log = ap_sprintf("%s/logs/buffer-0.log", s_dir);
    char *argv[] = {(char *)s_bin, "buffer", "--run", s_dir, "--id", "0", NULL};
    pid_t p = s_spawn(log, argv);
    free(log);
    return p;
}

static pid_t s_start_teacher(int id) {
    char ids[16], *log = ap_sprintf("%s/logs/teacher-external-%d.log", s_dir, id);
    snprintf(ids, sizeof ids, "%d", id);
    char *argv[] = {(char *)s_bin, "teacher", "--run",      s_dir,        "--kind", "external",
                    "--id",        ids,       "--simulate", "--delay-ms", "30",     NULL};
    pid_t p = s_spawn(log, argv);
    free(log);
    return p;
}

/* Signal `pid` and wait for it: its exit status (or -1 on timeout); *secs the time it took. */
static int s_stop(pid_t pid, int sig, double timeout, double *secs) {
    double t0 = ap_now();
    kill(pid, sig);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            *secs = ap_now() - t0;
            for (int i = 0; i < s_npids; i++)
                if (s_pids[i] == pid) s_pids[i] = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (ap_now() - t0 > timeout) {
            *secs = ap_now() - t0;
            return -1;
        }
        ap_sleep(0.005);
    }
}

static void s_cleanup(void) {
    for (int i = 0; i < s_npids; i++)
        if (s_pids[i] > 0) kill(s_pids[i], SIGKILL), waitpid(s_pids[i], NULL, 0);
}

/* ---------------------------------------------------------------- the fakes' work */

typedef struct {
    fk_t *actor, *learner;
    int V;
    uint64_t hash;
    ap_rng_t rng;
    uint64_t next_id, last_id; /* send groups next_id .. last_id */
    int seen[512];             /* times each group id reached the learner */
    uint64_t requested, batches;
    int received; /* groups received in batches */
    int want;     /* stop when received reaches this */
    int kill_at;  /* SIGKILL kill_pid when received reaches this */
    pid_t kill_pid;
    double killed_at;
} s_work_t;

static int s_step(void *arg) {
    s_work_t *w = arg;
    fk_t *a = w->actor, *L = w->learner;
    /* a RESET (the buffer restarted) means HELLO again */
    if (a->resets) a->resets = 0, a->credit = 0, fk_hello(a, 0, 0, 0, w->V, w->hash);
    if (L->resets) {
        L->resets = 0;
        fk_hello(L, 0, 0, 0, w->V, w->hash);
        w->requested = w->batches; /* the requests were lost with the old buffer */
    }
    while (a->credit > 0 && w->next_id <= w->last_id) {
        ap_group_t *g =
            fk_group(&w->rng, w->next_id++, 4, 8, w->V, AP_SOURCE_ON_POLICY, (ap_version_t){1, 0});
        fk_send_group(a, g, 0);
        ap_group_destroy(&g);
    }
    for (int i = 0; i < L->n_parts; i++) {
        ap_batch_t *b = L->parts[i];
        for (int k = 0; k < b->n_items; k++) {
            uint64_t id = b->items[k].group->id;
            if (id < 512) w->seen[id]++;
            w->received++;
        }
        w->batches += b->part == b->parts - 1;
        ap_batch_destroy(&L->parts[i]);
    }
    L->n_parts = 0;
    while (w->requested < w->batches + 2)
        fk_request_batch(L, ++w->requested + 1000 * (uint64_t)w->want, (ap_version_t){1, 0}, 8, 0);
    if (w->kill_pid > 0 && w->received >= w->kill_at) {
        kill(w->kill_pid, SIGKILL);
        waitpid(w->kill_pid, NULL, 0);
        for (int i = 0; i < s_npids; i++)
            if (s_pids[i] == w->kill_pid) s_pids[i] = 0;
        printf("  teacher 1 killed (SIGKILL) after %d groups served\n", w->received);
        w->kill_pid = 0;
        w->killed_at = ap_now();
    }
    return w->received >= w->want;
}

/* The values of the last metrics record of RUN/metrics/NAME.jsonl that has `key`. */
static json_t *s_last_metrics(const char *name, const char *key) {
    char *path = ap_sprintf("%s/metrics/%s.jsonl", s_dir, name), *text = NULL;
    size_t len;
    json_t *found = NULL;
    if (ap_file_read(path, &text, &len) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            json_t *j = json_loads(line, 0, NULL);
            json_t *v = j ? json_object_get(j, "values") : NULL;
            if (v && json_object_get(v, key)) {
                json_decref(found);
                found = json_incref(v);
            }
            json_decref(j);
        }
    }
    free(text), free(path);
    return found;
}

static double s_val(json_t *v, const char *key) {
    json_t *x = v ? json_object_get(v, key) : NULL;
    return x ? json_number_value(x) : -1;
}

int main(void) {
    ap_log_set_role("test_buffer_procs", 0);
    ap_log_set_level(AP_LOG_WARN);
    s_bin = getenv("AP_BIN");
    if (!s_bin) {
        fprintf(stderr, "AP_BIN is not set: this test runs the apprentice executable\n");
        return 1;
    }
    atexit(s_cleanup);
    signal(SIGPIPE, SIG_IGN);
    const char *tmp = ap_test_tmpdir("buffer-procs");
    /* the student's vocabulary (all the buffer and simulated teachers read) */
    char vocab[600];
    snprintf(vocab, sizeof vocab, "%s/student", tmp);
    ap_tokenizer_builder_t *tb = ap_tokenizer_builder_new();
    ap_tokenizer_builder_add(tb, "0123456789+=abcdefghijklmnopqrstuvwxyz ", "test");
    ap_tokenizer_t *tok = ap_tokenizer_builder_build(&tb);
    AP_ASSERT(ap_tokenizer_save_dir(tok, vocab) == 0);
    s_work_t w = {.V = ap_tokenizer_vocab_size(tok), .hash = ap_tokenizer_hash(tok)};
    ap_tokenizer_destroy(&tok);
    ap_config_t *cfg = ap_config_new();
    free(cfg->run.dir), free(cfg->run.name), free(cfg->model.student);
    cfg->run.dir = ap_strdup(tmp);
    cfg->run.name = ap_strdup("run");
    cfg->model.student = ap_strdup(vocab);
    cfg->objective.gkd.c.enabled = 1;
    cfg->sampling.group_size = 4;
    cfg->batch.size = 8;
    cfg->buffer.heartbeat_ms = (int)(HB * 1000);
    cfg->buffer.teacher_timeout_ms = 2000;
    cfg->buffer.actor_credit = 8;
    cfg->teacher.top_k = 8;
    cfg->teacher.full_vocab_max = 16;
    AP_CHECK(ap_rundir_create(cfg, &s_dir) == 0, "%s", ap_errmsg());
    printf("run directory %s, V %d\n", s_dir, w.V);

    pid_t buf = s_start_buffer(), t0 = s_start_teacher(0), t1 = s_start_teacher(1);
    ap_net_opts_t no = {0};
    ap_net_t *net = ap_net_new(&no);
    w.actor = fk_new(net, cfg->endpoints.buffer_actors, "actor-0", AP_ROLE_ACTOR, HB, NULL);
    w.learner = fk_new(net, cfg->endpoints.buffer_learner, "learner-0", AP_ROLE_LEARNER, HB, NULL);
    fk_hello(w.actor, 0, 0, 0, w.V, w.hash);
    fk_hello(w.learner, 0, 0, 0, w.V, w.hash);
    ap_rng_seed(&w.rng, 1, 1);
    fk_t *all[2] = {w.actor, w.learner};

    printf("1. 240 groups, teacher 1 killed after 60\n");
    w.next_id = 1, w.last_id = 240, w.want = 240, w.kill_at = 60, w.kill_pid = t1;
    double start = ap_now();
    int done = fk_pump(NULL, all, 2, 30.0, s_step, &w);
    int once = 1;
    for (int id = 1; id <= 240; id++)
        once &= w.seen[id] == 1;
    printf("  %d groups received in %.1f s (%.1f s after the kill); every group exactly once: %s\n",
           w.received, ap_now() - start, ap_now() - w.killed_at, once ? "yes" : "NO");
    AP_CHECK(done && once && w.received == 240, "groups served exactly once");

    printf("2. SIGTERM to the buffer\n");
    double secs;
    int rc = s_stop(buf, SIGTERM, 3.0, &secs);
    fk_pump(NULL, all, 2, 0.2, NULL, NULL);
    printf("  buffer exited %d after %.3f s; BYE to the actor %d, the learner %d\n", rc, secs,
           w.actor->byes, w.learner->byes);
    AP_CHECK(rc == 0 && secs < 1.0, "buffer shutdown: rc %d in %.3f s", rc, secs);
    AP_CHECK(w.actor->byes == 1 && w.learner->byes == 1, "BYE to the peers");
    w.actor->credit = 0; /* the buffer left: its credit went with it */
    json_t *m = s_last_metrics("buffer-0", "buffer/groups_in");
    printf(
        "  final record: groups_in %.0f served_first %.0f drops %.0f held %.0f redispatched %.0f "
        "teachers_expired %.0f late %.0f\n",
        s_val(m, "buffer/groups_in"), s_val(m, "buffer/served_first"), s_val(m, "buffer/drops"),
        s_val(m, "buffer/held_unserved"), s_val(m, "buffer/redispatched"),
        s_val(m, "buffer/teachers_expired"), s_val(m, "buffer/late_answers"));
    AP_CHECK(s_val(m, "buffer/groups_in") == 240 && s_val(m, "buffer/served_first") == 240 &&
                 s_val(m, "buffer/drops") == 0,
             "the buffer's books");
    AP_CHECK(s_val(m, "buffer/teachers_expired") >= 1 && s_val(m, "buffer/redispatched") >= 1,
             "the dead teacher's work was re-dispatched");
    json_decref(m);

    printf("3. a new buffer on the same endpoints; teacher 1 restarted\n");
    buf = s_start_buffer();
    t1 = s_start_teacher(1);
    w.last_id = 280, w.want = 280;
    done = fk_pump(NULL, all, 2, 20.0, s_step, &w);
    once = 1;
    for (int id = 1; id <= 280; id++)
        once &= w.seen[id] == 1;
    printf("  %d groups received in total; every group exactly once: %s\n", w.received,
           once ? "yes" : "NO");
    AP_CHECK(done && once, "after the buffer restart");
    m = NULL; /* records come every second: wait for one that shows both teachers */
    for (double t = ap_now();
         ap_now() - t < 5 && s_val(m, "buffer/peers/teachers_external") != 2;) {
        json_decref(m);
        fk_pump(NULL, all, 2, 0.2, NULL, NULL);
        m = s_last_metrics("buffer-0", "buffer/peers/teachers_external");
    }
    printf("  the new buffer sees %.0f external teachers\n",
           s_val(m, "buffer/peers/teachers_external"));
    AP_CHECK(s_val(m, "buffer/peers/teachers_external") == 2, "teachers re-registered");
    json_decref(m);
    char *tlog = ap_sprintf("%s/logs/teacher-external-0.log", s_dir), *text = NULL;
    size_t len;
    ap_file_read(tlog, &text, &len);
    AP_CHECK(text && strstr(text, "the buffer left"), "teacher 0 saw the buffer's BYE");
    free(text), free(tlog);

    printf("4. SIGTERM to everyone\n");
    pid_t order[3] = {t0, t1, buf};
    const char *names[3] = {"teacher 0", "teacher 1", "buffer"};
    for (int i = 0; i < 3; i++) {
        rc = s_stop(order[i], SIGTERM, 3.0, &secs);
        printf("  %s exited %d after %.3f s\n", names[i], rc, secs);
        AP_CHECK(rc == 0 && secs < 1.0, "%s shutdown: rc %d in %.3f s", names[i], rc, secs);
    }
    fk_destroy(&w.actor);
    fk_destroy(&w.learner);
    ap_net_destroy(&net);

    printf("5. security.curve: keys from `apprentice keygen`, one pair per role\n");
    char keys[700], cmd[2000];
    snprintf(keys, sizeof keys, "%s/keys", tmp);
    snprintf(cmd, sizeof cmd, "'%s' keygen --dir '%s' buffer teacher actor-0 learner > /dev/null",
             s_bin, keys);
    AP_CHECK(system(cmd) == 0, "keygen");
    cfg->security.curve = true;
    free(cfg->security.keys_dir), free(cfg->run.name);
    cfg->security.keys_dir = ap_strdup(keys);
    cfg->run.name = ap_strdup("run-curve");
    char **eps[] = {&cfg->endpoints.buffer_actors, &cfg->endpoints.buffer_teachers,
                    &cfg->endpoints.buffer_learner, &cfg->endpoints.weights,
                    &cfg->endpoints.weights_pub};
    for (size_t i = 0; i < AP_COUNT(eps); i++) /* filled again for the new run directory */
        free(*eps[i]), *eps[i] = ap_strdup("");
    free(s_dir);
    AP_CHECK(ap_rundir_create(cfg, &s_dir) == 0, "%s", ap_errmsg());
    buf = s_start_buffer();
    t0 = s_start_teacher(0); /* loads keys/teacher-external-0.key, falls back to teacher.key */
    char bkey[AP_Z85_KEY];
    AP_CHECK(ap_buffer_service_key(keys, "buffer", bkey) == 0, "%s", ap_errmsg());
    ap_net_opts_t ao = {0}, lo = {0}, so = {.curve = 1};
    AP_CHECK(ap_buffer_load_keys(keys, "actor-0", "actor", &ao) == 0, "%s", ap_errmsg());
    AP_CHECK(ap_buffer_load_keys(keys, "learner-0", "learner", &lo) == 0, "%s", ap_errmsg());
    zmq_curve_keypair(so.public_key, so.secret_key);
    ap_net_t *an = ap_net_new(&ao), *ln = ap_net_new(&lo), *sn = ap_net_new(&so);
    s_work_t w2 = {.V = w.V, .hash = w.hash, .next_id = 1, .last_id = 40, .want = 40};
    ap_rng_seed(&w2.rng, 2, 2);
    w2.actor = fk_new(an, cfg->endpoints.buffer_actors, "actor-0", AP_ROLE_ACTOR, HB, bkey);
    w2.learner = fk_new(ln, cfg->endpoints.buffer_learner, "learner-0", AP_ROLE_LEARNER, HB, bkey);
    fk_t *stranger = fk_new(sn, cfg->endpoints.buffer_actors, "actor-9", AP_ROLE_ACTOR, HB, bkey);
    fk_hello(w2.actor, 0, 0, 0, w2.V, w2.hash);
    fk_hello(w2.learner, 0, 0, 0, w2.V, w2.hash);
    fk_hello(stranger, 9, 0, 0, w2.V, w2.hash);
    fk_t *all2[3] = {w2.actor, w2.learner, stranger};
    done = fk_pump(NULL, all2, 3, 20.0, s_step, &w2);
    once = 1;
    for (int id = 1; id <= 40; id++)
        once &= w2.seen[id] == 1;
    printf("  %d groups through the CURVE buffer and teacher, exactly once: %s; a stranger's key: "
           "%d credit messages\n",
           w2.received, once ? "yes" : "NO", stranger->credit_msgs);
    AP_CHECK(done && once, "CURVE run");
    AP_CHECK(stranger->credit_msgs == 0, "an unknown key was served");
    pid_t order2[2] = {t0, buf};
    for (int i = 0; i < 2; i++) {
        rc = s_stop(order2[i], SIGTERM, 3.0, &secs);
        AP_CHECK(rc == 0 && secs < 1.0, "CURVE %s shutdown: rc %d in %.3f s",
                 i ? "buffer" : "teacher", rc, secs);
    }
    fk_destroy(&w2.actor), fk_destroy(&w2.learner), fk_destroy(&stranger);
    ap_net_destroy(&an), ap_net_destroy(&ln), ap_net_destroy(&sn);
    free(s_dir);
    ap_config_destroy(&cfg);
    return ap_test_result();
}
