/* bench_pipeline.c: `apprentice bench pipeline`: does the asynchronous topology pay, and does the
 * pipeline keep the learner busy? (issue "End to end", Targets)
 *
 * Each mode launches a whole run (`apprentice launch CONFIG`) in a scratch run directory, waits
 * for the learner's first step (start-up excluded), measures a window of `--seconds`, and stops
 * the run with SIGTERM:
 *   async      the topology as configured;
 *   sync       the same config with `--sync` (actors, teachers and learner in lock-step);
 *   simulated  actors and teachers simulated (no model compute: actors.simulate,
 *              teacher.simulate): what the pipeline alone costs the learner.
 * Per mode one JSON line: learner steps per minute in the window, the learner's busy fraction and
 * transport share (medians of its records), each role's share of the CPU time used (from
 * /proc/PID/stat of the run's processes), and the role's throughput. With --mode all, a last line
 * gives async / sync.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "bench/bench.h"

#define S_MAX_PROCS 64

typedef struct {
    pid_t pid;
    char name[48];     /* role name: learner, buffer, actor, teacher-self, ... */
    double cpu0, cpu1; /* CPU seconds at window start / end */
} s_proc_t;

static double s_ticks;

/* CPU seconds (user + system) of pid, or -1 when gone. */
static double s_cpu_seconds(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / s_ticks;
}

/* The run's role processes: every process whose command line has "--run DIR". */
static int s_find_procs(const char *run_dir, s_proc_t *out) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) && n < S_MAX_PROCS) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        /* argv: exe ROLE --run DIR --id N [--mode M | --kind K] */
        const char *argv[16];
        int argc = 0;
        for (size_t i = 0; i < len && argc < 16; i += strlen(buf + i) + 1) argv[argc++] = buf + i;
        if (argc < 4 || strcmp(argv[2], "--run") || strcmp(argv[3], run_dir)) continue;
        s_proc_t *p = &out[n++];
        memset(p, 0, sizeof *p);
        p->pid = pid;
        const char *detail = NULL;
        for (int i = 4; i + 1 < argc; i++)
            if (!strcmp(argv[i], "--mode") || !strcmp(argv[i], "--kind")) detail = argv[i + 1];
        if (!strcmp(argv[1], "teacher")) snprintf(p->name, sizeof p->name, "teacher-%.30s", detail ? detail : "?");
        else if (!strcmp(argv[1], "actor") && detail && strcmp(detail, "student"))
            snprintf(p->name, sizeof p->name, "%.40s", detail);
        else snprintf(p->name, sizeof p->name, "%.40s", argv[1]);
    }
    if (d) closedir(d);
    return n;
}

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, int n) {
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Learner records in [t0, t1]: steps, and medians of busy / transport / objectives fractions. */
typedef struct {
    int steps;
    double busy, transport, objectives, step_s;
    double actor_tps, teacher_tps; /* latest sums over processes */
} s_window_t;

static void s_read_window(const char *run_dir, double t0, double t1, s_window_t *w) {
    memset(w, 0, sizeof *w);
    char *path = ap_sprintf("%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return;
    int cap = 4096, nb = 0, nt = 0, no = 0, ns = 0;
    double *busy = ap_malloc((size_t)cap * sizeof *busy), *tr = ap_malloc((size_t)cap * sizeof *tr),
           *ob = ap_malloc((size_t)cap * sizeof *ob), *st = ap_malloc((size_t)cap * sizeof *st);
    json_t *last_tps = json_object(); /* "role-id" -> tokens/s */
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        if (!r) continue;
        double t = json_number_value(json_object_get(r, "time"));
        const char *role = json_string_value(json_object_get(r, "role"));
        json_t *v = json_object_get(r, "values");
        if (role && t >= t0 && t <= t1 && json_is_object(v)) {
            if (!strcmp(role, "learner") && json_object_get(v, "loss/total")) {
                w->steps++;
                json_t *x;
                if (nb < cap && json_is_number(x = json_object_get(v, "learner/busy_frac")))
                    busy[nb++] = json_number_value(x);
                if (nt < cap && json_is_number(x = json_object_get(v, "learner/transport_frac")))
                    tr[nt++] = json_number_value(x);
                if (no < cap && json_is_number(x = json_object_get(v, "learner/objectives_frac")))
                    ob[no++] = json_number_value(x);
                if (ns < cap && json_is_number(x = json_object_get(v, "learner/step_s")))
                    st[ns++] = json_number_value(x);
            }
            const char *key = !strcmp(role, "actor") ? "actor/tokens_per_s"
                              : !strncmp(role, "teacher", 7) ? "teacher/tokens_per_s" : NULL;
            json_t *x = key ? json_object_get(v, key) : NULL;
            if (json_is_number(x)) {
                char id[64];
                snprintf(id, sizeof id, "%s-%lld", role,
                         (long long)json_integer_value(json_object_get(r, "id")));
                json_object_set_new(last_tps, id, json_real(json_number_value(x)));
            }
        }
        json_decref(r);
    }
    free(line);
    fclose(f);
    const char *k;
    json_t *x;
    json_object_foreach(last_tps, k, x) {
        if (!strncmp(k, "actor", 5)) w->actor_tps += json_number_value(x);
        else w->teacher_tps += json_number_value(x);
    }
    json_decref(last_tps);
    w->busy = s_median(busy, nb);
    w->transport = s_median(tr, nt);
    w->objectives = s_median(ob, no);
    w->step_s = s_median(st, ns);
    free(busy), free(tr), free(ob), free(st);
}

/* First learner record's time, or 0. */
static double s_first_step_time(const char *run_dir) {
    char *path = ap_sprintf("%s/metrics/learner-0.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    double t = 0;
    while (!t && getline(&line, &cap, f) > 0) {
        json_t *r = json_loads(line, 0, NULL);
        if (r && json_object_get(json_object_get(r, "values"), "loss/total"))
            t = json_number_value(json_object_get(r, "time"));
        if (r) json_decref(r);
    }
    free(line);
    fclose(f);
    return t;
}

/* Run one mode; emits its JSON line; returns steps per minute (NAN on failure). */
static double s_run_mode(const char *exe, const char *config, const char *mode, double seconds,
                         const char *root, int threads) {
    char name[96];
    snprintf(name, sizeof name, "pipeline-%s-%d", mode, (int)getpid());
    char *run_dir = ap_sprintf("%s/%s", root, name);
    char *set_name = ap_sprintf("run.name=%s", name), *set_dir = ap_sprintf("run.dir=%s", root);
    char *set_threads = ap_sprintf("model.blas_threads=%d", threads);
    const char *argv[32];
    int k = 0;
    argv[k++] = exe;
    argv[k++] = "launch";
    argv[k++] = config;
    argv[k++] = "--quiet";
    const char *sets[] = {set_name, set_dir, set_threads, "run.max_steps=100000000",
                          "run.max_minutes=0", "learner.checkpoint_every=0",
                          "learner.rollouts_every=0", "launcher.shutdown_timeout_s=10"};
    for (size_t i = 0; i < AP_COUNT(sets); i++) argv[k++] = "--set", argv[k++] = sets[i];
    if (!strcmp(mode, "sync")) argv[k++] = "--sync";
    if (!strcmp(mode, "simulated")) {
        argv[k++] = "--set", argv[k++] = "actors.simulate=true";
        argv[k++] = "--set", argv[k++] = "teacher.simulate=true";
    }
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        char *log = ap_sprintf("%s-launch.log", run_dir);
        FILE *lf = freopen(log, "w", stderr);
        (void)lf;
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    double result = NAN;
    double start = ap_now(), first = 0;
    while (ap_now() - start < 300 && !(first = s_first_step_time(run_dir))) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            pid = 0;
            break;
        }
        ap_sleep(0.2);
    }
    if (!first) {
        fprintf(stderr, "bench pipeline %s: the learner made no step (see %s-launch.log and %s/logs)\n",
                mode, run_dir, run_dir);
        goto stop;
    }
    ap_sleep(2.0); /* let every role reach its steady state */
    s_proc_t procs[S_MAX_PROCS];
    int np = s_find_procs(run_dir, procs);
    for (int i = 0; i < np; i++) procs[i].cpu0 = s_cpu_seconds(procs[i].pid);
    double t0 = ap_wall();
    ap_sleep(seconds);
    double t1 = ap_wall();
    for (int i = 0; i < np; i++) procs[i].cpu1 = s_cpu_seconds(procs[i].pid);
    ap_sleep(1.5); /* the launcher gathers once a second */
    s_window_t w;
    s_read_window(run_dir, t0, t1, &w);
    result = w.steps * 60.0 / (t1 - t0);
    json_t *shares = json_object();
    double total = 0;
    for (int i = 0; i < np; i++)
        if (procs[i].cpu0 >= 0 && procs[i].cpu1 >= procs[i].cpu0) total += procs[i].cpu1 - procs[i].cpu0;
    for (int i = 0; i < np; i++) {
        if (procs[i].cpu0 < 0 || procs[i].cpu1 < procs[i].cpu0 || total <= 0) continue;
        json_t *old = json_object_get(shares, procs[i].name);
        double v = (procs[i].cpu1 - procs[i].cpu0) / total + (old ? json_number_value(old) : 0);
        json_object_set_new(shares, procs[i].name, json_real(v));
    }
    json_t *o = json_object();
    json_object_set_new(o, "bench", json_string("pipeline"));
    json_object_set_new(o, "mode", json_string(mode));
    json_object_set_new(o, "config", json_string(config));
    json_object_set_new(o, "threads", json_integer(threads));
    json_object_set_new(o, "seconds", json_real(t1 - t0));
    json_object_set_new(o, "learner_steps", json_integer(w.steps));
    json_object_set_new(o, "steps_per_min", json_real(result));
    json_object_set_new(o, "learner_busy_median", json_real(w.busy));
    json_object_set_new(o, "learner_step_s_median", json_real(w.step_s));
    json_object_set_new(o, "transport_frac_median", json_real(w.transport));
    json_object_set_new(o, "objectives_frac_median", json_real(w.objectives));
    json_object_set_new(o, "actor_tokens_per_s", json_real(w.actor_tps));
    json_object_set_new(o, "teacher_tokens_per_s", json_real(w.teacher_tps));
    json_object_set_new(o, "cpu_seconds", json_real(total));
    json_object_set_new(o, "cpu_cores_used", json_real(total / (t1 - t0)));
    json_object_set_new(o, "cpu_share", shares);
    json_object_set_new(o, "peak_rss_mb", json_real(ap_peak_rss_mb()));
    ap_bench_emit(o);
stop:
    if (pid > 0) {
        kill(pid, SIGTERM);
        int status;
        double t = ap_now();
        while (waitpid(pid, &status, WNOHANG) != pid) {
            if (ap_now() - t > 30) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                break;
            }
            ap_sleep(0.1);
        }
    }
    free(run_dir), free(set_name), free(set_dir), free(set_threads);
    return result;
}

int ap_bench_pipeline(int argc, char **argv) {
    static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                         {"seconds", required_argument, 0, 's'},
                                         {"mode", required_argument, 0, 'm'},
                                         {"threads", required_argument, 0, 't'},
                                         {"dir", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *config = "configs/gkd-1.yaml", *mode = "all", *root = "runs/bench";
    double seconds = 60;
    int threads = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:s:m:t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 's': seconds = atof(optarg); break;
        case 'm': mode = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'd': root = optarg; break;
        case 'h':
            printf("usage: apprentice bench pipeline [--config FILE] [--seconds S] "
                   "[--mode async|sync|simulated|all] [--threads K] [--dir ROOT]\n"
                   "Launch the whole topology of CONFIG (default configs/gkd-1.yaml, which needs\n"
                   "scripts/coldstart.sh addition) for S seconds (default 60) after its first\n"
                   "learner step, per mode; one JSON line each (steps/min, learner busy share,\n"
                   "transport share, CPU share per role). Run directories go under ROOT.\n");
            return 0;
        default: return 2;
        }
    }
    if (access(config, R_OK) != 0) {
        fprintf(stderr, "bench pipeline: %s: %s\n", config, strerror(errno));
        return 1;
    }
    s_ticks = (double)sysconf(_SC_CLK_TCK);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    AP_ASSERT(n > 0);
    exe[n] = 0;
    char root_abs[4096]; /* the launcher passes absolute run directories to its children */
    if (ap_mkdirs(root) < 0 || !realpath(root, root_abs)) {
        fprintf(stderr, "bench pipeline: %s: %s\n", root, ap_errmsg());
        return 1;
    }
    root = root_abs;
    int all = !strcmp(mode, "all");
    double async = NAN, sync = NAN;
    if (all || !strcmp(mode, "async")) async = s_run_mode(exe, config, "async", seconds, root, threads);
    if (all || !strcmp(mode, "sync")) sync = s_run_mode(exe, config, "sync", seconds, root, threads);
    if (all || !strcmp(mode, "simulated")) s_run_mode(exe, config, "simulated", seconds, root, threads);
    if (all) {
        json_t *o = json_object();
        json_object_set_new(o, "bench", json_string("pipeline"));
        json_object_set_new(o, "mode", json_string("async_over_sync"));
        json_object_set_new(o, "config", json_string(config));
        json_object_set_new(o, "ratio", json_real(async / sync));
        ap_bench_emit(o);
    }
    return isnan(async) && isnan(sync) && (all || strcmp(mode, "simulated")) ? 1 : 0;
}
