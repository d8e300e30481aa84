/* launch.c: `apprentice launch CONFIG`: plan the process topology of a run from its config,
 * write the run directory, start every role by fork+exec of this same executable, supervise
 * (restart with back-off, give up after too many crashes), gather metrics and show one live
 * progress line, and stop cleanly on SIGINT/SIGTERM or when the learner finishes.
 *
 * The launcher holds no ZeroMQ or BLAS state (research/transport.md 11): it only forks, waits,
 * reads files and prints.
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"
#include "apprentice/metrics.h"
#include "apprentice/rundir.h"
#include "launcher/gather.h"
#include "launcher/supervisor.h"

/* One process of the plan. */
typedef struct {
    char name[64];  /* "actor-0", "teacher-self-1": log and metrics name */
    char role[16];  /* subcommand */
    char arg[24];   /* its --mode / --kind value, or "" */
    int id;
} s_proc_t;

typedef struct {
    ap_config_t *cfg;
    char *dir;             /* run directory */
    char self_exe[PATH_MAX];
    ap_sup_t *sup;
    ap_gather_t *gather;
    ap_metrics_t *metrics; /* the launcher's own events */
    ev_timer tick;
    ev_signal sigint, sigterm;
    int has_learner;
    int failed;            /* a role was given up on, or the learner failed */
    int finished;          /* the learner exited 0: the run is complete */
    int interrupted;
    int tty;
    double last_print;
    int restarts;
} s_launch_t;

/* Which teacher kinds the enabled objectives need (ALGORITHMS.md). */
static void s_teacher_needs(const ap_config_t *c, int need[3]) {
    const ap_obj_config_t *o = &c->objective;
    need[0] = o->gkd.c.enabled || o->opd.c.enabled;          /* external */
    need[1] = o->opsd.c.enabled || o->srpo.c.enabled;        /* self */
    need[2] = o->grpo.c.enabled && o->grpo.kl_ref > 0;       /* reference */
}

static int s_wanted(const char *roles, const char *role, const char *full) {
    if (!roles) return 1;
    char *copy = ap_strdup(roles), *save = NULL;
    int hit = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !hit; t = strtok_r(NULL, ",", &save))
        hit = !strcmp(t, role) || !strcmp(t, full);
    free(copy);
    return hit;
}

static int s_add(s_proc_t *plan, int n, const char *role, const char *arg, int id) {
    s_proc_t *p = &plan[n];
    memset(p, 0, sizeof *p);
    snprintf(p->role, sizeof p->role, "%s", role);
    snprintf(p->arg, sizeof p->arg, "%s", arg);
    p->id = id;
    if (!strcmp(role, "teacher")) snprintf(p->name, sizeof p->name, "teacher-%s-%d", arg, id);
    else if (!strcmp(role, "actor") && strcmp(arg, "student"))
        snprintf(p->name, sizeof p->name, "%s-%d", arg, id);
    else snprintf(p->name, sizeof p->name, "%s-%d", role, id);
    return n + 1;
}

/* The processes of this machine. Returns their number (plan has room for 256). */
static int s_plan(const ap_config_t *c, const char *roles, s_proc_t *plan) {
    int n = 0, need[3];
    s_teacher_needs(c, need);
    const double lam = c->batch.on_policy_fraction;
    int on_policy_groups = (int)floor(lam * c->batch.size / c->sampling.group_size);
    if (s_wanted(roles, "buffer", "buffer")) n = s_add(plan, n, "buffer", "", 0);
    if (s_wanted(roles, "learner", "learner")) n = s_add(plan, n, "learner", "", 0);
    static const char *kinds[3] = {"external", "self", "reference"};
    static const char *full[3] = {"teacher-external", "teacher-self", "teacher-reference"};
    const int counts[3] = {c->teacher.external, c->teacher.self, c->teacher.reference};
    for (int k = 0; k < 3; k++)
        if (need[k] && s_wanted(roles, "teacher", full[k]))
            for (int i = 0; i < AP_MAX(counts[k], 1) && n < 200; i++)
                n = s_add(plan, n, "teacher", kinds[k], i);
    if (on_policy_groups > 0 && s_wanted(roles, "actor", "actor"))
        for (int i = 0; i < c->actors.count && n < 240; i++) n = s_add(plan, n, "actor", "student", i);
    if (on_policy_groups * c->sampling.group_size < c->batch.size &&
        s_wanted(roles, "dataset", "dataset"))
        for (int i = 0; i < AP_MAX(c->actors.dataset_actors, 1) && n < 250; i++)
            n = s_add(plan, n, "actor", "dataset", i);
    if (c->actors.eval && s_wanted(roles, "eval", "eval")) n = s_add(plan, n, "actor", "eval", 0);
    return n;
}

static void s_print_progress(s_launch_t *L, int final) {
    if (!L->cfg->launcher.progress) return;
    double now = ap_now();
    if (!final && !L->tty && now - L->last_print < 10) return;
    L->last_print = now;
    char line[512];
    ap_gather_progress_line(L->gather, L->cfg->run.max_steps, L->cfg->run.max_minutes, line,
                            sizeof line);
    if (L->tty) fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    else fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

static void s_stop(s_launch_t *L, const char *why) {
    if (ap_sup_stopping(L->sup)) return;
    if (L->tty && L->cfg->launcher.progress) fputc('\n', stderr);
    ap_log(AP_LOG_INFO, "stopping the run: %s", why);
    ap_sup_stop(L->sup, L->cfg->launcher.shutdown_timeout_s);
}

static void s_event(s_launch_t *L, const char *text) {
    ap_metrics_begin(L->metrics, 0);
    ap_metrics_add_str(L->metrics, "event", text);
    ap_metrics_add(L->metrics, "launcher/restarts", L->restarts);
    ap_metrics_end(L->metrics);
}

static void s_on_child(void *ctx, const char *name, ap_sup_event_t ev, int status) {
    s_launch_t *L = ctx;
    char how[64], msg[256];
    ap_sup_describe(status, how);
    int is_learner = !strcmp(name, "learner-0");
    switch (ev) {
    case AP_SUP_EXITED:
        ap_log(AP_LOG_INFO, "%s exited (%s)", name, how);
        if (is_learner) {
            L->finished = 1;
            s_stop(L, "the learner finished");
        }
        break;
    case AP_SUP_CRASHED:
        snprintf(msg, sizeof msg, "%s crashed (%s); restarting (see %s/logs/%s.log)", name, how,
                 L->dir, name);
        ap_log(AP_LOG_WARN, "%s", msg);
        s_event(L, msg);
        break;
    case AP_SUP_RESTARTED:
        L->restarts++;
        snprintf(msg, sizeof msg, "restarted %s", name);
        s_event(L, msg);
        break;
    case AP_SUP_GAVE_UP:
        snprintf(msg, sizeof msg,
                 "giving up on %s: more than %d crashes within %g s (last: %s; see %s/logs/%s.log)",
                 name, L->cfg->launcher.max_restarts, L->cfg->launcher.restart_window_s, how,
                 L->dir, name);
        ap_log(AP_LOG_ERROR, "%s", msg);
        s_event(L, msg);
        L->failed = 1;
        s_stop(L, "a role could not be kept running");
        break;
    case AP_SUP_STOPPED:
        if (is_learner && WIFEXITED(status) && WEXITSTATUS(status) == 0) L->finished = 1;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
            !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM))
            ap_log(AP_LOG_WARN, "%s stopped with %s", name, how);
        break;
    }
    if (ap_sup_stopping(L->sup) && !ap_sup_running(L->sup)) ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void s_on_tick(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    s_launch_t *L = w->data;
    if (ap_gather_poll(L->gather) < 0) ap_log(AP_LOG_WARN, "%s", ap_errmsg());
    s_print_progress(L, 0);
    if (!ap_sup_running(L->sup) && (ap_sup_stopping(L->sup) || !L->has_learner)) {
        if (!ap_sup_stopping(L->sup)) s_stop(L, "every role exited");
        ev_break(loop, EVBREAK_ALL);
    }
}

static void s_on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)loop, (void)revents;
    s_launch_t *L = w->data;
    if (L->interrupted++) { /* second signal: do not wait for the deadline */
        ap_log(AP_LOG_WARN, "second signal: killing the children now");
        ap_sup_stop(L->sup, L->cfg->launcher.shutdown_timeout_s);
        ap_sup_kill(L->sup);
        return;
    }
    s_stop(L, w->signum == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
}

/* Endpoints "tcp://ANY:5555" become "tcp://HOST:5555" on a worker machine joining a head. */
static int s_connect_endpoints(ap_config_t *c, const char *host) {
    char **eps[] = {&c->endpoints.buffer_actors, &c->endpoints.buffer_teachers,
                    &c->endpoints.buffer_learner, &c->endpoints.weights,
                    &c->endpoints.weights_pub};
    static const char *names[] = {"buffer_actors", "buffer_teachers", "buffer_learner", "weights",
                                  "weights_pub"};
    for (size_t i = 0; i < AP_COUNT(eps); i++) {
        char *e = *eps[i];
        if (strncmp(e, "tcp://", 6))
            return ap_err("--connect needs tcp:// endpoints in the config (endpoints.%s is '%s')",
                          names[i], e);
        const char *hostpart = e + 6, *colon = strrchr(hostpart, ':');
        if (!colon) return ap_err("endpoints.%s: '%s' has no port", names[i], e);
        char *n = ap_sprintf("tcp://%s%s", host, colon);
        free(e);
        *eps[i] = n;
    }
    return 0;
}

/* The run finished: evaluate its final checkpoint (the evaluator actor may not have pulled the
 * last version before the learner exited) with `apprentice eval` on the evaluator's prompts,
 * and record it as the evaluator would: role "eval", step = the final learner step. */
static void s_final_eval(s_launch_t *L) {
    char *ckpt = ap_rundir_latest(L->dir);
    if (!ckpt) return;
    const char *base = strrchr(ckpt, '/');
    long step = -1;
    if (!base || sscanf(base, "/step-%ld", &step) != 1 ||
        ap_gather_progress(L->gather)->accuracy_version == step) {
        free(ckpt);
        return;
    }
    char *cfg = ap_sprintf("%s/config.yaml", L->dir), *log = ap_sprintf("%s/logs/eval-final.log", L->dir);
    char limit[32], threads[48];
    snprintf(limit, sizeof limit, "%d", L->cfg->actors.eval_size);
    snprintf(threads, sizeof threads, "OPENBLAS_NUM_THREADS=%d", L->cfg->model.blas_threads);
    int fds[2];
    if (pipe(fds) < 0) goto out;
    fprintf(stderr, "apprentice launch: final evaluation of %s\n", ckpt);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]), close(fds[1]);
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        putenv(threads);
        execl(L->self_exe, L->self_exe, "eval", "--model", ckpt, "--config", cfg, "--limit", limit,
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[8192];
    size_t n = 0;
    ssize_t got;
    while (pid > 0 && n + 1 < sizeof buf && (got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)got;
    buf[n] = 0;
    close(fds[0]);
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    json_t *res = json_loads(buf, 0, NULL);
    json_t *acc = json_object_get(res, "accuracy");
    if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && json_is_number(acc)) {
        char *mpath = ap_sprintf("%s/metrics/eval-final.jsonl", L->dir);
        ap_metrics_t *m = ap_metrics_open(mpath, "eval", 0);
        free(mpath);
        if (m) {
            ap_metrics_begin(m, step);
            ap_metrics_add(m, "eval/accuracy", json_number_value(acc));
            json_t *pk = json_object_get(res, "pass_at_k");
            if (json_is_number(pk)) ap_metrics_add(m, "eval/pass_at_k", json_number_value(pk));
            json_t *nn = json_object_get(res, "n");
            if (json_is_number(nn)) ap_metrics_add(m, "eval/n", json_number_value(nn));
            ap_metrics_add(m, "eval/final", 1);
            ap_metrics_end(m);
            ap_metrics_close(&m);
        }
    } else {
        ap_log(AP_LOG_WARN, "final evaluation failed (see %s)", log);
    }
    if (res) json_decref(res);
out:
    free(cfg);
    free(log);
    free(ckpt);
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice launch CONFIG.yaml [options]\n"
            "Start a whole experiment (buffer, learner, actors, teachers, evaluator) on this\n"
            "machine, supervise it and show its progress. The run directory is\n"
            "run.dir/run.name; relaunching the same run resumes from its latest checkpoint.\n\n"
            "  --set key=value   override a config key (repeatable; see apprentice config --keys)\n"
            "  --actors N        student actors on this machine (actors.count)\n"
            "  --teachers M      workers per needed teacher kind on this machine\n"
            "  --roles R,...     start only these roles: buffer, learner, actor, dataset, eval,\n"
            "                    teacher, teacher-external, teacher-self, teacher-reference\n"
            "  --connect HOST    join the head at HOST (its tcp:// endpoints, '*' -> HOST)\n"
            "  --sync            synchronous baseline: actors, teachers, learner in lock-step\n"
            "  --quiet           no progress line\n");
}

int ap_cmd_launch(int argc, char **argv) {
    static const struct option opts[] = {
        {"set", required_argument, 0, 's'},    {"actors", required_argument, 0, 'a'},
        {"teachers", required_argument, 0, 't'}, {"roles", required_argument, 0, 'r'},
        {"connect", required_argument, 0, 'c'}, {"sync", no_argument, 0, 'y'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc + 4, sizeof *sets);
    int nsets = 0, actors = -1, teachers = -1, sync = 0, quiet = 0, c;
    const char *roles = NULL, *connect = NULL;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:a:t:r:c:yqh", opts, NULL)) != -1) {
        switch (c) {
        case 's': sets[nsets++] = optarg; break;
        case 'a': actors = atoi(optarg); break;
        case 't': teachers = atoi(optarg); break;
        case 'r': roles = optarg; break;
        case 'c': connect = optarg; break;
        case 'y': sync = 1; break;
        case 'q': quiet = 1; break;
        case 'h': s_usage(stdout); free(sets); return 0;
        default: s_usage(stderr); free(sets); return 2;
        }
    }
    if (optind != argc - 1) {
        s_usage(stderr);
        free(sets);
        return 2;
    }
    ap_log_set_role("launcher", -1);
    if (sync) sets[nsets++] = "run.sync=true";
    ap_config_t *cfg = ap_config_load(argv[optind], sets, nsets);
    free(sets);
    if (!cfg) {
        fprintf(stderr, "apprentice launch: %s\n", ap_errmsg());
        return 1;
    }
    if (actors >= 0) cfg->actors.count = actors;
    if (teachers >= 0) cfg->teacher.external = cfg->teacher.self = cfg->teacher.reference = teachers;
    if (quiet) cfg->launcher.progress = false;
    if (connect && s_connect_endpoints(cfg, connect) < 0) {
        fprintf(stderr, "apprentice launch: %s\n", ap_errmsg());
        ap_config_destroy(&cfg);
        return 1;
    }
    s_launch_t L = {.cfg = cfg, .tty = isatty(2)};
    if (ap_rundir_create(cfg, &L.dir) < 0) {
        fprintf(stderr, "apprentice launch: %s\n", ap_errmsg());
        ap_config_destroy(&cfg);
        return 1;
    }
    ssize_t n = readlink("/proc/self/exe", L.self_exe, sizeof L.self_exe - 1);
    AP_ASSERT(n > 0);
    L.self_exe[n] = 0;

    s_proc_t *plan = ap_calloc(256, sizeof *plan);
    int np = s_plan(cfg, roles, plan);
    if (np == 0) {
        fprintf(stderr, "apprentice launch: no role to start (--roles %s)\n", roles ? roles : "");
        free(plan);
        free(L.dir);
        ap_config_destroy(&cfg);
        return 2;
    }
    char *mpath = ap_sprintf("%s/metrics/launcher-0.jsonl", L.dir);
    L.metrics = ap_metrics_open(mpath, "launcher", 0);
    free(mpath);
    if (!L.metrics) L.metrics = ap_metrics_open(NULL, "launcher", 0);
    struct ev_loop *loop = ev_default_loop(0);
    ap_sup_policy_t pol = {.max_restarts = cfg->launcher.max_restarts,
                           .window_s = cfg->launcher.restart_window_s,
                           .backoff_s = cfg->launcher.backoff_s};
    L.sup = ap_sup_new(loop, &pol, s_on_child, &L);
    char blas[32];
    snprintf(blas, sizeof blas, "OPENBLAS_NUM_THREADS=%d", cfg->model.blas_threads);
    char *env[] = {blas, "OMP_NUM_THREADS=1", NULL};
    fprintf(stderr, "apprentice launch: run directory %s\n", L.dir);
    for (int i = 0; i < np; i++) {
        char id[16], *args[12];
        snprintf(id, sizeof id, "%d", plan[i].id);
        int k = 0;
        args[k++] = L.self_exe;
        args[k++] = plan[i].role;
        args[k++] = "--run";
        args[k++] = L.dir;
        args[k++] = "--id";
        args[k++] = id;
        if (plan[i].arg[0]) {
            args[k++] = !strcmp(plan[i].role, "teacher") ? "--kind" : "--mode";
            args[k++] = plan[i].arg;
        }
        int teacher = !strcmp(plan[i].role, "teacher");
        int sampler = !strcmp(plan[i].role, "actor") && strcmp(plan[i].arg, "eval");
        if ((teacher && cfg->teacher.simulate) || (sampler && cfg->actors.simulate))
            args[k++] = "--simulate";
        args[k] = NULL;
        char *log = ap_sprintf("%s/logs/%s.log", L.dir, plan[i].name);
        ap_sup_add(L.sup, plan[i].name, args, log, env);
        free(log);
        L.has_learner |= !strcmp(plan[i].role, "learner");
        fprintf(stderr, "  %s\n", plan[i].name);
    }
    free(plan);
    L.gather = ap_gather_new(L.dir);
    ev_signal_init(&L.sigint, s_on_signal, SIGINT);
    ev_signal_init(&L.sigterm, s_on_signal, SIGTERM);
    L.sigint.data = L.sigterm.data = &L;
    ev_signal_start(loop, &L.sigint);
    ev_signal_start(loop, &L.sigterm);
    ev_timer_init(&L.tick, s_on_tick, 1.0, 1.0);
    L.tick.data = &L;
    ev_timer_start(loop, &L.tick);
    s_event(&L, "start");
    if (ap_sup_start(L.sup) < 0) {
        ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
        L.failed = 1;
        s_stop(&L, "a role could not be started");
    }
    ev_run(loop, 0);
    ap_gather_poll(L.gather);
    if (L.finished && !L.failed && cfg->actors.eval && L.has_learner) s_final_eval(&L);
    s_event(&L, L.failed ? "failed" : L.finished ? "finished" : "stopped");
    ap_gather_poll(L.gather); /* the last records of every process, this event included */
    s_print_progress(&L, 1);
    const ap_progress_t *p = ap_gather_progress(L.gather);
    fprintf(stderr, "apprentice launch: %s at learner step %ld; metrics %s/metrics.jsonl\n",
            L.failed ? "failed" : L.finished ? "finished" : "stopped", p->step < 0 ? 0 : p->step,
            L.dir);
    ap_sup_destroy(&L.sup);
    ap_gather_destroy(&L.gather);
    ap_metrics_close(&L.metrics);
    ev_signal_stop(loop, &L.sigint);
    ev_signal_stop(loop, &L.sigterm);
    ev_timer_stop(loop, &L.tick);
    free(L.dir);
    ap_config_destroy(&cfg);
    return L.failed ? 1 : 0;
}
