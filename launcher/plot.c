/* plot.c: `apprentice plot RUN [RUN...]`: the curves of one or more runs, drawn to PNG by
 * gnuplot from their metrics.jsonl: held-out accuracy against learner steps and against wall
 * time, reward, losses, completion length and truncation, repetition, staleness, and the
 * teacher-student agreement. One panel per PNG, one line per (run, metric).
 *
 * Data files and the gnuplot script are written beside the PNGs (OUT/data/), so a figure can be
 * restyled by hand. gnuplot is run as a child process; a missing gnuplot is a clear error.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"

/* A panel: which role's records, which keys (exact names, or a prefix ending in '/'), x axis. */
typedef struct {
    const char *file;     /* PNG name */
    const char *title;
    const char *ylabel;
    const char *role;     /* records of this role */
    const char *keys[8];  /* metric keys; "loss/" = every key with that prefix */
    int x_time;           /* 0: x = step (policy version), 1: x = minutes since the run's start */
} s_panel_t;

static const s_panel_t s_panels[] = {
    {"accuracy_steps.png", "held-out accuracy", "accuracy", "eval",
     {"eval/accuracy", "eval/pass_at_k"}, 0},
    {"sft_accuracy.png", "held-out accuracy during SFT", "accuracy", "sft",
     {"eval/accuracy", "eval/accuracy_privileged"}, 0},
    {"sft_loss.png", "SFT loss", "nats", "sft", {"loss/sft"}, 0},
    {"accuracy_time.png", "held-out accuracy against wall time", "accuracy", "eval",
     {"eval/accuracy"}, 1},
    {"reward.png", "reward of the trained batches", "reward", "learner",
     {"reward/mean", "accuracy/train"}, 0},
    {"losses.png", "losses", "loss", "learner", {"loss/"}, 0},
    {"length.png", "completion length and truncation", "tokens / rate", "learner",
     {"length/mean", "length/truncation_rate"}, 0},
    {"repetition.png", "repetition (rep_n, n = 3)", "rep_n", "learner", {"repetition/mean"}, 0},
    {"staleness.png", "policy lag of trained trajectories", "versions", "learner",
     {"staleness/mean", "staleness/max"}, 0},
    {"agreement.png", "teacher-student agreement", "KL (nats) / overlap", "learner",
     {"kl/teacher_student", "kl/student_teacher", "overlap/teacher", "kl/self_teacher_student",
      "overlap/self_teacher"}, 0},
};

typedef struct {
    char key[64];
    int panel;
    int run;
    FILE *f;     /* data file being written */
    char *path;
    long n;
} s_series_t;

typedef struct {
    s_series_t *s;
    int n, cap;
} s_series_list_t;

/* Line colours, distinct for up to 12 lines of a panel (then dashed). */
static const char *const s_colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                       "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                       "#bcbd22", "#17becf", "#000000", "#f2b701"};

/* Write s as a gnuplot single-quoted string ('' stands for one quote inside). */
static void s_gp_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static int s_key_matches(const char *pattern, const char *key) {
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '/') return !strncmp(pattern, key, n);
    return !strcmp(pattern, key);
}

static s_series_t *s_series(s_series_list_t *l, int panel, int run, const char *key,
                            const char *datadir) {
    for (int i = 0; i < l->n; i++)
        if (l->s[i].panel == panel && l->s[i].run == run && !strcmp(l->s[i].key, key))
            return &l->s[i];
    if (l->n == l->cap) l->s = ap_realloc(l->s, (size_t)(l->cap = l->cap * 2 + 16) * sizeof *l->s);
    s_series_t *s = &l->s[l->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    s->panel = panel;
    s->run = run;
    char safe[64];
    snprintf(safe, sizeof safe, "%s", key);
    for (char *c = safe; *c; c++)
        if (*c == '/' || *c == ' ') *c = '_';
    s->path = ap_sprintf("%s/p%d-r%d-%s.dat", datadir, panel, run, safe);
    s->f = fopen(s->path, "w");
    return s;
}

static int s_read_run(const char *run, int r, s_series_list_t *l, const char *datadir) {
    char *path = ap_sprintf("%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    if (!f) {
        ap_err("%s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, bad = 0;
    double t0 = NAN;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        json_t *rec = json_loads(line, 0, NULL);
        if (!json_is_object(rec)) {
            bad++;
            if (rec) json_decref(rec);
            continue;
        }
        const char *role = json_string_value(json_object_get(rec, "role"));
        double time = json_number_value(json_object_get(rec, "time"));
        long step = (long)json_integer_value(json_object_get(rec, "step"));
        json_t *values = json_object_get(rec, "values");
        if (isnan(t0) && time > 0) t0 = time;
        if (role && json_is_object(values)) {
            for (size_t p = 0; p < AP_COUNT(s_panels); p++) {
                if (strcmp(role, s_panels[p].role)) continue;
                const char *key;
                json_t *v;
                json_object_foreach(values, key, v) {
                    if (!json_is_number(v)) continue;
                    for (int k = 0; k < 8 && s_panels[p].keys[k]; k++) {
                        if (!s_key_matches(s_panels[p].keys[k], key)) continue;
                        s_series_t *s = s_series(l, (int)p, r, key, datadir);
                        if (!s->f) continue;
                        double x = s_panels[p].x_time ? (time - t0) / 60.0 : (double)step;
                        fprintf(s->f, "%.6g %.9g\n", x, json_number_value(v));
                        s->n++;
                        break;
                    }
                }
            }
        }
        json_decref(rec);
    }
    free(line);
    fclose(f);
    if (bad) ap_log(AP_LOG_WARN, "%s: %ld of %ld lines were not JSON objects (skipped)", path, bad, lineno);
    free(path);
    return 0;
}

static const char *s_basename(const char *p) {
    const char *s = strrchr(p, '/');
    while (s && s[1] == 0 && s > p) { /* trailing slash */
        const char *q = s - 1;
        while (q > p && *q != '/') q--;
        return *q == '/' ? q + 1 : q;
    }
    return s ? s + 1 : p;
}

int ap_cmd_plot(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'o') out = optarg;
        else if (c == 'h') {
            printf("usage: apprentice plot RUN [RUN...] [--out DIR]\n"
                   "Draw the curves of runs (their metrics.jsonl) to PNG with gnuplot: accuracy\n"
                   "against steps and time, reward, losses, length, repetition, staleness,\n"
                   "agreement. One run: RUN/plots/; several: DIR (default plots/).\n");
            return 0;
        } else return 2;
    }
    int nruns = argc - optind;
    if (nruns < 1) {
        fprintf(stderr, "apprentice plot: give at least one run directory\n");
        return 2;
    }
    char **runs = argv + optind;
    char *outdir = out ? ap_strdup(out) : nruns == 1 ? ap_sprintf("%s/plots", runs[0]) : ap_strdup("plots");
    char *datadir = ap_sprintf("%s/data", outdir);
    if (ap_mkdirs(datadir) < 0) {
        fprintf(stderr, "apprentice plot: %s\n", ap_errmsg());
        free(outdir), free(datadir);
        return 1;
    }
    s_series_list_t l = {0};
    int rc = 0;
    for (int r = 0; r < nruns; r++)
        if (s_read_run(runs[r], r, &l, datadir) < 0) {
            fprintf(stderr, "apprentice plot: %s\n", ap_errmsg());
            rc = 1;
        }
    for (int i = 0; i < l.n; i++)
        if (l.s[i].f) fclose(l.s[i].f);
    char *script = ap_sprintf("%s/plots.gp", datadir);
    FILE *gp = fopen(script, "w");
    if (!gp) {
        fprintf(stderr, "apprentice plot: %s: %s\n", script, strerror(errno));
        rc = 1;
        goto out;
    }
    fprintf(gp, "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key outside right top\n");
    int drawn = 0;
    for (size_t p = 0; p < AP_COUNT(s_panels); p++) {
        int any = 0;
        for (int i = 0; i < l.n; i++) any |= l.s[i].panel == (int)p && l.s[i].n > 0;
        if (!any) continue;
        char *png = ap_sprintf("%s/%s", outdir, s_panels[p].file);
        fprintf(gp, "set output ");
        s_gp_quote(gp, png);
        fprintf(gp, "\nset title ");
        s_gp_quote(gp, s_panels[p].title);
        fprintf(gp, "\nset xlabel ");
        s_gp_quote(gp, s_panels[p].x_time ? "minutes" : "step (policy version)");
        fprintf(gp, "\nset ylabel ");
        s_gp_quote(gp, s_panels[p].ylabel);
        fprintf(gp, "\nplot ");
        free(png);
        int first = 1, k = 0;
        for (int i = 0; i < l.n; i++) {
            if (l.s[i].panel != (int)p || !l.s[i].n) continue;
            char *title = ap_sprintf("%s%s%s", nruns > 1 ? s_basename(runs[l.s[i].run]) : "",
                                     nruns > 1 ? " " : "", l.s[i].key);
            fprintf(gp, "%s", first ? "" : ", ");
            s_gp_quote(gp, l.s[i].path);
            /* gnuplot's default cycle has 8 colours: a matrix of 9 methods repeated one */
            fprintf(gp, " using 1:2 with lines lw 2 lc rgb \"%s\" dt %d title ",
                    s_colors[k % AP_COUNT(s_colors)], 1 + k / (int)AP_COUNT(s_colors));
            k++;
            s_gp_quote(gp, title);
            free(title);
            first = 0;
        }
        fprintf(gp, "\n");
        printf("%s/%s\n", outdir, s_panels[p].file);
        drawn++;
    }
    fclose(gp);
    if (!drawn) {
        fprintf(stderr, "apprentice plot: no plottable metrics in %d run(s)\n", nruns);
        rc = 1;
        goto out;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr, "apprentice plot: cannot run gnuplot: %s (scripts/install-deps.sh "
                        "installs gnuplot-nox)\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "apprentice plot: gnuplot failed (script %s)\n", script);
        rc = 1;
    }
out:
    for (int i = 0; i < l.n; i++) free(l.s[i].path);
    free(l.s);
    free(script);
    free(datadir);
    free(outdir);
    return rc;
}
