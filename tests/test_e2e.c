/* test_e2e: the whole topology as real processes over ipc://, launched by `apprentice launch`
 * on tiny models made by `apprentice sft` (issue "End to end", Tests):
 *   - every objective (gkd, opd, grpo, opsd, srpo, and grpo+gkd with lambda 0.5) runs a few
 *     learner steps with 2 actors, an external teacher, a self-teacher, the buffer, the learner
 *     and the evaluator: the launch succeeds, losses are finite, the actors' weights version
 *     advances, metrics.jsonl is valid JSON with the documented keys;
 *   - SIGTERM to the launcher leaves a loadable checkpoint; a relaunch resumes at the saved step
 *     with the next restart generation;
 *   - an actor killed mid-run is restarted by the launcher and the run finishes.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/rundir.h"
#include "test.h"

static const char *s_bin;
static char s_dir[512]; /* absolute scratch directory */

static int s_sh(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    AP_ASSERT(vasprintf(&cmd, fmt, ap) >= 0);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    free(cmd);
    return rc;
}

/* Start `apprentice launch CONFIG --quiet --set run.name=NAME [extra --set]...`. */
static pid_t s_launch(const char *name, const char *const *sets, int nsets) {
    pid_t pid = fork();
    AP_ASSERT(pid >= 0);
    if (pid == 0) {
        if (chdir(s_dir) < 0) _exit(126);
        char *argv[64];
        int k = 0;
        argv[k++] = (char *)s_bin;
        argv[k++] = "launch";
        argv[k++] = "rl.yaml";
        argv[k++] = "--quiet";
        char *nm = ap_sprintf("run.name=%s", name);
        argv[k++] = "--set";
        argv[k++] = nm;
        for (int i = 0; i < nsets && k < 60; i++) {
            argv[k++] = "--set";
            argv[k++] = (char *)sets[i];
        }
        argv[k] = NULL;
        char *log = ap_sprintf("%s/launch-%s.log", s_dir, name);
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execv(s_bin, argv);
        _exit(127);
    }
    return pid;
}

/* Wait for pid up to `timeout` seconds; returns its exit code, or -1 (killed after timeout). */
static int s_wait(pid_t pid, double timeout) {
    double t0 = ap_now();
    int status;
    while (ap_now() - t0 < timeout) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        ap_sleep(0.05);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

typedef struct {
    json_t **rec;
    int n;
    int bad; /* lines that are not records of the documented shape */
} s_metrics_t;

static void s_metrics_free(s_metrics_t *m) {
    for (int i = 0; i < m->n; i++) json_decref(m->rec[i]);
    free(m->rec);
    memset(m, 0, sizeof *m);
}

static s_metrics_t s_read_metrics(const char *run) {
    s_metrics_t m = {0};
    char *path = ap_sprintf("%s/runs/%s/metrics.jsonl", s_dir, run);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return m;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        int ok = json_is_object(r) && json_is_number(json_object_get(r, "time")) &&
                 json_is_string(json_object_get(r, "role")) &&
                 json_is_integer(json_object_get(r, "id")) &&
                 json_is_integer(json_object_get(r, "step")) &&
                 json_is_object(json_object_get(r, "values"));
        if (!ok) {
            m.bad++;
            if (r) json_decref(r);
            continue;
        }
        m.rec = ap_realloc(m.rec, (size_t)(m.n + 1) * sizeof *m.rec);
        m.rec[m.n++] = r;
    }
    free(line);
    fclose(f);
    return m;
}

/* docs/METRICS.md documents `key`, or a pattern `prefix/REASON` (or `prefix/KIND`) for it. */
static char *s_metrics_doc;
static int s_documented(const char *key) {
    char *q = ap_sprintf("`%s`", key);
    int ok = strstr(s_metrics_doc, q) != NULL;
    free(q);
    const char *slash = strrchr(key, '/');
    for (const char *const *pat = (const char *const[]){"REASON", "KIND", NULL}; !ok && slash && *pat;
         pat++) {
        q = ap_sprintf("`%.*s/%s`", (int)(slash - key), key, *pat);
        ok = strstr(s_metrics_doc, q) != NULL;
        free(q);
    }
    return ok;
}

static const char *s_role(json_t *r) { return json_string_value(json_object_get(r, "role")); }
static long s_step(json_t *r) { return (long)json_integer_value(json_object_get(r, "step")); }
static json_t *s_val(json_t *r, const char *k) {
    return json_object_get(json_object_get(r, "values"), k);
}

/* The learner's step now (from its own metrics file, which it appends as it goes). */
static long s_learner_step(const char *run) {
    char *path = ap_sprintf("%s/runs/%s/metrics/learner-0.jsonl", s_dir, run);
    FILE *f = fopen(path, "r");
    free(path);
    long step = -1;
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        if (r && json_object_get(json_object_get(r, "values"), "loss/total"))
            step = (long)json_integer_value(json_object_get(r, "step"));
        if (r) json_decref(r);
    }
    free(line);
    fclose(f);
    return step;
}

static int s_wait_step(const char *run, long step, double timeout) {
    double t0 = ap_now();
    while (ap_now() - t0 < timeout) {
        if (s_learner_step(run) >= step) return 1;
        ap_sleep(0.05);
    }
    return 0;
}

static void s_make_models(void) {
    const char *sft = "run: {name: sft, dir: runs, seed: 1}\n"
                      "task: {kind: addition, min_digits: 1, max_digits: 2, heldout_size: 32}\n"
                      "sampling: {max_new_tokens: 6}\n"
                      "optimizer: {lr: 3.0e-3, warmup_steps: 5}\n"
                      "sft: {out: models/teacher, vocab: models/vocab, steps: 60, batch: 32,\n"
                      "      eval_every: 0, checkpoint_every: 0, hidden_size: 32,\n"
                      "      intermediate_size: 64, num_layers: 1, num_heads: 2, num_kv_heads: 2,\n"
                      "      max_positions: 32}\n";
    char *p = ap_sprintf("%s/sft.yaml", s_dir);
    AP_ASSERT(ap_file_write_atomic(p, sft, strlen(sft)) == 0);
    free(p);
    AP_CHECK(s_sh("cd '%s' && '%s' sft sft.yaml > sft-teacher.log 2>&1", s_dir, s_bin) == 0,
             "teacher sft");
    AP_CHECK(s_sh("cd '%s' && '%s' sft sft.yaml --set run.name=sft-s --set sft.out=models/student "
                  "--set sft.steps=30 --set sft.privileged_fraction=0.5 > sft-student.log 2>&1",
                  s_dir, s_bin) == 0,
             "student sft");
    const char *rl = "run: {dir: runs, seed: 1, max_steps: 4, max_minutes: 2}\n"
                     "model: {student: models/student, teacher: models/teacher}\n"
                     "task: {kind: addition, min_digits: 1, max_digits: 2, heldout_size: 32}\n"
                     "sampling: {max_new_tokens: 6, group_size: 4}\n"
                     "batch: {size: 8, on_policy_fraction: 1.0}\n"
                     "actors: {count: 2, eval_every: 2, eval_size: 32}\n"
                     "buffer: {capacity_groups: 32}\n"
                     "learner: {checkpoint_every: 2, rollouts_every: 1}\n"
                     "launcher: {max_restarts: 3, backoff_s: 0.2, shutdown_timeout_s: 20}\n";
    p = ap_sprintf("%s/rl.yaml", s_dir);
    AP_ASSERT(ap_file_write_atomic(p, rl, strlen(rl)) == 0);
    free(p);
}

/* One launch per objective set: finite losses, advancing versions, documented keys. */
static void s_objective_run(const char *name, const char *objective, const char *lambda,
                            const char *const *losses) {
    char *o = ap_sprintf("objective=%s", objective), *l = ap_sprintf("batch.on_policy_fraction=%s", lambda);
    const char *sets[] = {o, l};
    double t0 = ap_now();
    int rc = s_wait(s_launch(name, sets, 2), 180);
    AP_CHECK(rc == 0, "%s: launch exited %d (see %s/launch-%s.log)", name, rc, s_dir, name);
    s_metrics_t m = s_read_metrics(name);
    AP_CHECK(m.n > 0 && m.bad == 0, "%s: metrics.jsonl has %d records and %d bad lines", name, m.n,
             m.bad);
    int learner_steps = 0, nonfinite = 0, has_eval = 0, has_buffer = 0, has_teacher = 0;
    int has_dataset = 0, finished = 0, skips = 0, undocumented = 0;
    double max_actor_version = -1;
    const char *const required[] = {"loss/total", "reward/mean", "learner/busy_frac",
                                    "learner/grad_norm", "learner/lr", "staleness/mean",
                                    "length/mean", "repetition/mean", NULL};
    for (int i = 0; i < m.n; i++) {
        json_t *r = m.rec[i];
        const char *role = s_role(r);
        json_t *skipped = s_val(r, "learner/skipped");
        if (!strcmp(role, "learner") && s_val(r, "loss/total") && json_is_number(skipped) &&
            json_number_value(skipped) > 0) {
            skips++; /* e.g. a batch above max_truncation_rate: reported with null losses */
            continue;
        }
        if (!strcmp(role, "learner") && s_val(r, "loss/total")) {
            learner_steps++;
            for (int k = 0; required[k]; k++)
                AP_CHECK(s_val(r, required[k]) != NULL, "%s: learner record lacks %s", name,
                         required[k]);
            for (int k = 0; losses[k]; k++) {
                json_t *v = s_val(r, losses[k]);
                if (!json_is_number(v) || !isfinite(json_number_value(v))) nonfinite++;
            }
            json_t *tot = s_val(r, "loss/total");
            if (!json_is_number(tot)) nonfinite++;
        }
        if (!strcmp(role, "actor")) {
            json_t *v = s_val(r, "actor/version_step");
            if (json_is_number(v) && json_number_value(v) > max_actor_version)
                max_actor_version = json_number_value(v);
            AP_CHECK(s_val(r, "actor/tokens_per_s") != NULL, "%s: actor lacks tokens/s", name);
        }
        const char *key;
        json_t *val;
        json_object_foreach(json_object_get(r, "values"), key, val) {
            if (!s_documented(key)) {
                AP_CHECK(0, "%s: metric %s (role %s) is not in docs/METRICS.md", name, key, role);
                undocumented++;
            }
            if (undocumented > 5) break;
        }
        if (!strcmp(role, "eval") && json_is_number(s_val(r, "eval/accuracy"))) has_eval = 1;
        if (!strcmp(role, "buffer")) has_buffer = 1;
        if (!strncmp(role, "teacher-", 8)) has_teacher = 1;
        if (!strcmp(role, "dataset")) has_dataset = 1;
        if (!strcmp(role, "launcher")) {
            const char *ev = json_string_value(s_val(r, "event"));
            if (ev && !strcmp(ev, "finished")) finished = 1;
        }
    }
    AP_CHECK(learner_steps >= 4, "%s: %d learner steps with losses", name, learner_steps);
    AP_CHECK(nonfinite == 0, "%s: %d non-finite losses", name, nonfinite);
    AP_CHECK(max_actor_version >= 1, "%s: actors never got a newer version (max %g)", name,
             max_actor_version);
    int wants_teacher = strcmp(name, "grpo") != 0; /* grpo without kl_ref needs no teacher */
    AP_CHECK(has_eval && has_buffer && has_teacher == wants_teacher,
             "%s: eval %d buffer %d teacher %d records", name, has_eval, has_buffer, has_teacher);
    AP_CHECK(finished, "%s: no 'finished' launcher event", name);
    if (strcmp(lambda, "1")) AP_CHECK(has_dataset, "%s: lambda < 1 but no dataset actor", name);
    printf("e2e %-8s %5.1f s  learner steps %d (+%d skipped)  actor version %g  records %d\n",
           name, ap_now() - t0, learner_steps, skips, max_actor_version, m.n);
    s_metrics_free(&m);
    free(o), free(l);
}

/* SIGTERM: a loadable checkpoint; a relaunch resumes at its step with generation + 1. */
static void s_sigterm_resume(void) {
    const char *sets[] = {"objective={grpo: {}}", "run.max_steps=100000",
                          "learner.checkpoint_every=100000"};
    pid_t pid = s_launch("resume", sets, 3);
    int reached = s_wait_step("resume", 3, 120);
    AP_CHECK(reached, "resume: the learner never reached step 3");
    kill(pid, SIGTERM);
    int rc = s_wait(pid, 60);
    AP_CHECK(rc == 0, "resume: launcher exit %d after SIGTERM", rc);
    char *run = ap_sprintf("%s/runs/resume", s_dir);
    char *ckpt = ap_rundir_latest(run);
    AP_CHECK(ckpt != NULL, "resume: no checkpoint after SIGTERM");
    long saved = -1;
    if (ckpt) {
        ap_model_t *mdl = ap_model_load(ckpt);
        AP_CHECK(mdl != NULL, "resume: checkpoint does not load: %s", ap_errmsg());
        if (mdl) {
            char *user = NULL;
            AP_CHECK(ap_model_load_state(mdl, ckpt, NULL, &user) == 0, "resume: state: %s",
                     ap_errmsg());
            saved = ap_model_step_count(mdl);
            free(user);
        }
        ap_model_destroy(&mdl);
    }
    AP_CHECK(saved >= 3, "resume: saved step %ld", saved);
    char *ms = ap_sprintf("run.max_steps=%ld", saved + 3);
    const char *sets2[] = {"objective={grpo: {}}", ms};
    rc = s_wait(s_launch("resume", sets2, 2), 120);
    AP_CHECK(rc == 0, "resume: relaunch exit %d", rc);
    s_metrics_t m = s_read_metrics("resume");
    long first_after = -1, last = -1;
    double gen_after = 0;
    int seen_gen2 = 0;
    for (int i = 0; i < m.n; i++) {
        json_t *r = m.rec[i];
        if (strcmp(s_role(r), "learner") || !s_val(r, "loss/total")) continue;
        json_t *skipped = s_val(r, "learner/skipped"); /* a skipped batch's record: no step taken */
        if (json_is_number(skipped) && json_number_value(skipped) > 0) continue;
        double gen = json_number_value(s_val(r, "learner/version_gen"));
        if (gen >= 2 && !seen_gen2) {
            seen_gen2 = 1;
            first_after = s_step(r);
            gen_after = gen;
        }
        last = s_step(r);
    }
    AP_CHECK(seen_gen2 && gen_after == 2, "resume: no learner record of generation 2");
    AP_CHECK(first_after == saved + 1, "resume: first step after relaunch %ld, saved %ld",
             first_after, saved);
    AP_CHECK(last == saved + 3, "resume: last step %ld, want %ld", last, saved + 3);
    printf("e2e resume   saved step %ld, resumed at %ld in generation %g, finished at %ld\n", saved,
           first_after, gen_after, last);
    s_metrics_free(&m);
    free(ms);
    free(ckpt);
    free(run);
}

/* The pid of the process whose command line contains every needle (scan /proc). */
static pid_t s_find_process(const char *a, const char *b) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (d && (e = readdir(d)) && !found) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[n] = 0;
        if (strstr(buf, a) && strstr(buf, b) && strstr(buf, " actor ")) found = pid;
    }
    if (d) closedir(d);
    return found;
}

/* After a failure: the tail of the launcher's and every role's log of a run, for the CI log. */
static void s_dump_logs(const char *name) {
    s_sh("cd '%s' && for f in launch-%s.log runs/%s/logs/*.log; do echo \"==== $f\"; "
         "tail -n 15 \"$f\"; done >&2",
         s_dir, name, name);
}

static void s_kill_actor(void) {
    /* truncated: keep: the tiny random policy drifts to truncation rates near 0.5 late in the
     * run; a batch above stabilizers.max_truncation_rate is skipped, and a run skipping every
     * batch never reaches max_steps (seen once in CI-like load: stuck at step 766) */
    const char *sets[] = {"objective={grpo: {}}", "run.max_steps=1000", "stabilizers.truncated=keep"};
    pid_t pid = s_launch("killactor", sets, 3);
    AP_CHECK(s_wait_step("killactor", 2, 120), "killactor: the learner never reached step 2");
    char *run = ap_sprintf("runs/killactor --id 0 --mode student");
    pid_t actor = s_find_process(run, "--mode student");
    AP_CHECK(actor > 0, "killactor: actor-0 not found");
    if (actor > 0) kill(actor, SIGKILL);
    int rc = s_wait(pid, 180);
    AP_CHECK(rc == 0, "killactor: launcher exit %d", rc);
    s_metrics_t m = s_read_metrics("killactor");
    int restarted = 0, finished = 0;
    long last = -1;
    for (int i = 0; i < m.n; i++) {
        json_t *r = m.rec[i];
        const char *ev = json_string_value(s_val(r, "event"));
        if (!strcmp(s_role(r), "launcher") && ev) {
            restarted |= !strcmp(ev, "restarted actor-0");
            finished |= !strcmp(ev, "finished");
        }
        if (!strcmp(s_role(r), "learner") && s_val(r, "loss/total")) last = s_step(r);
    }
    AP_CHECK(restarted, "killactor: the launcher did not restart actor-0");
    AP_CHECK(finished && last == 1000, "killactor: finished %d at step %ld", finished, last);
    if (rc != 0 || !finished || last != 1000) s_dump_logs("killactor");
    printf("e2e killactor  actor-0 (pid %d) killed at step >= 2, restarted; run finished at %ld\n",
           (int)actor, last);
    s_metrics_free(&m);
    free(run);
}

/* Two launchers as two machines would run them: the head (buffer, learner, teacher, evaluator)
 * binds wildcard tcp endpoints, a worker launcher adds the actors with --connect 127.0.0.1. */
static void s_split_roles(void) {
    int p = 20000 + (int)(getpid() % 20000);
    char *eps = ap_sprintf("endpoints={buffer_actors: 'tcp://*:%d', buffer_teachers: 'tcp://*:%d', "
                           "buffer_learner: 'tcp://*:%d', weights: 'tcp://*:%d', "
                           "weights_pub: 'tcp://*:%d'}",
                           p, p + 1, p + 2, p + 3, p + 4);
    const char *head_sets[] = {"objective={gkd: {}}", "run.max_steps=20", eps};
    pid_t head = fork();
    if (head == 0) {
        if (chdir(s_dir) < 0) _exit(126);
        FILE *f = freopen("launch-split-head.log", "a", stderr);
        (void)f;
        execl(s_bin, s_bin, "launch", "rl.yaml", "--quiet", "--set", "run.name=split", "--roles",
              "buffer,learner,teacher,eval", "--set", head_sets[0], "--set", head_sets[1], "--set",
              head_sets[2], (char *)NULL);
        _exit(127);
    }
    pid_t worker = fork();
    if (worker == 0) {
        if (chdir(s_dir) < 0) _exit(126);
        FILE *f = freopen("launch-split-worker.log", "a", stderr);
        (void)f;
        execl(s_bin, s_bin, "launch", "rl.yaml", "--quiet", "--set", "run.name=split", "--set",
              "run.dir=runs-worker", "--roles", "actor", "--connect", "127.0.0.1", "--actors", "2",
              "--set", head_sets[0], "--set", head_sets[1], "--set", head_sets[2], (char *)NULL);
        _exit(127);
    }
    int rc = s_wait(head, 120);
    AP_CHECK(rc == 0, "split: head launcher exit %d (see %s/launch-split-head.log)", rc, s_dir);
    kill(worker, SIGTERM); /* a worker serves until stopped */
    int wrc = s_wait(worker, 60);
    AP_CHECK(wrc == 0, "split: worker launcher exit %d after SIGTERM", wrc);
    s_metrics_t m = s_read_metrics("split");
    long last = -1;
    for (int i = 0; i < m.n; i++)
        if (!strcmp(s_role(m.rec[i]), "learner") && s_val(m.rec[i], "loss/total"))
            last = s_step(m.rec[i]);
    AP_CHECK(last == 20, "split: the head's learner ended at step %ld", last);
    s_metrics_free(&m);
    char *wpath = ap_sprintf("%s/runs-worker/split/metrics/actor-0.jsonl", s_dir), *text = NULL;
    AP_CHECK(ap_file_read(wpath, &text, NULL) == 0, "split: worker actor metrics: %s", ap_errmsg());
    double vmax = -1; /* the newest version the worker's actor held: weights flowed over tcp */
    for (const char *p = text; p && (p = strstr(p, "\"actor/version_step\":")); p++)
        vmax = AP_MAX(vmax, atof(p + strlen("\"actor/version_step\":")));
    AP_CHECK(vmax >= 5, "split: the worker's actor held at most version %g", vmax);
    printf("e2e split    head (buffer, learner, teacher, eval) + worker (2 actors) over tcp: "
           "learner step %ld\n", last);
    free(text), free(wpath), free(eps);
}

/* apprentice plot: one run into its plots/, several runs into --out. */
static void s_plot(void) {
    AP_CHECK(s_sh("cd '%s' && '%s' plot runs/srpo > plot1.out 2> plot1.err", s_dir, s_bin) == 0,
             "plot one run (see %s/plot1.err)", s_dir);
    AP_CHECK(s_sh("cd '%s' && '%s' plot runs/gkd runs/grpo runs/srpo --out cmp > plot2.out "
                  "2> plot2.err",
                  s_dir, s_bin) == 0,
             "plot three runs");
    const char *pngs[] = {"runs/srpo/plots/accuracy_steps.png", "runs/srpo/plots/losses.png",
                          "runs/srpo/plots/agreement.png", "cmp/accuracy_steps.png",
                          "cmp/reward.png"};
    for (size_t i = 0; i < AP_COUNT(pngs); i++) {
        char *p = ap_sprintf("%s/%s", s_dir, pngs[i]), *data = NULL;
        size_t n = 0;
        int ok = ap_file_read(p, &data, &n) == 0 && n > 1000 && !memcmp(data, "\x89PNG", 4);
        AP_CHECK(ok, "plot: %s missing or not a PNG", pngs[i]);
        free(data), free(p);
    }
    AP_CHECK(s_sh("cd '%s' && ! '%s' plot runs/does-not-exist 2> plot3.err", s_dir, s_bin) == 0,
             "plot of a missing run must fail");
    printf("e2e plot     one run and three runs drawn; a missing run refused\n");
}

int main(void) {
    s_bin = getenv("AP_BIN");
    if (!s_bin) {
        fprintf(stderr, "AP_BIN is not set (run under ctest)\n");
        return 1;
    }
    char *doc_path = ap_sprintf("%s/docs/METRICS.md", getenv("AP_SOURCE_DIR") ? getenv("AP_SOURCE_DIR") : AP_SOURCE_DIR);
    if (ap_file_read(doc_path, &s_metrics_doc, NULL) < 0) {
        fprintf(stderr, "%s\n", ap_errmsg());
        return 1;
    }
    free(doc_path);
    const char *rel = ap_test_tmpdir("e2e");
    AP_ASSERT(realpath(rel, s_dir) != NULL);
    s_make_models();
    if (ap_test_failures) return ap_test_result();
    s_objective_run("gkd", "{gkd: {}}", "1", (const char *const[]){"loss/gkd", NULL});
    s_objective_run("opd", "{opd: {}}", "1", (const char *const[]){"loss/opd", NULL});
    s_objective_run("grpo", "{grpo: {}}", "1", (const char *const[]){"loss/grpo", NULL});
    s_objective_run("opsd", "{opsd: {}}", "1", (const char *const[]){"loss/opsd", NULL});
    s_objective_run("srpo", "{srpo: {}}", "1", (const char *const[]){"loss/srpo", NULL});
    s_objective_run("hybrid", "{grpo: {}, gkd: {}}", "0.5",
                    (const char *const[]){"loss/grpo", "loss/gkd", NULL});
    s_plot();
    s_sigterm_resume();
    s_kill_actor();
    s_split_roles();
    return ap_test_result();
}
