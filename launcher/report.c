/* report.c: `apprentice report RUN... [--steps S1,S2] [--minutes M1,M2] [--teacher TASK=DIR]
 * [--cold TASK=DIR] [--baseline METHOD] [--tail FRAC] [--curves DIR]`: the markdown tables of
 * docs/RESULTS.md "## Experiments" from the metrics of finished (or partial) runs.
 *
 * Runs are grouped by name: RUN's directory name is TASK-METHOD-sSEED (scripts/experiments.sh);
 * the runs of one (task, method) differ only in the seed suffix, and a name without "-sN" is a
 * group of its own. For every group it prints, with mean ± sample standard deviation over the
 * group's runs (seeds):
 *   - held-out greedy accuracy at fixed learner steps (the first evaluation at or after the step;
 *     runs that stopped earlier, on the time budget, are left out and the count shown) and the
 *     final accuracy (the launcher's eval/final, or the sft run's final evaluation);
 *   - held-out accuracy at fixed wall time (the last evaluation finished by that minute since the
 *     run's first record), the steps and minutes each run used;
 *   - the reference models' accuracy (their sft.json, written by `apprentice sft`);
 *   - the monitors averaged over the last FRAC of each run's learner steps (length/mean,
 *     length/truncation_rate, repetition/mean, overlap/teacher, kl/teacher_student,
 *     staleness/mean, srpo/sd_frac; "—" where a method has none);
 *   - per task, the best method's final accuracy against the teacher and the baseline.
 * Evaluations come from role "eval" records and from role "sft" records that carry
 * eval/accuracy (`apprentice sft`), so the SFT baseline sits in the same tables.
 *
 * --curves DIR writes DIR/GROUP/metrics.jsonl per group: the mean accuracy over seeds on a grid
 * of steps (the groups' evaluation spacing), as role "eval" records whose times are the mean
 * elapsed times, so `apprentice plot DIR/TASK-* --out FIG` draws one line per method against
 * steps and against minutes.
 *
 * Bad input: a metrics line that is not a JSON object with a numeric time, a role and a values
 * object is skipped, counted per run (printed under the tables) and named on stderr (the first
 * few per file); a run without a readable metrics.jsonl is skipped with a message. Exit 0 when
 * at least one run was read, 1 when none, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"

#define S_MAX_POINTS 32 /* --steps / --minutes values */
#define S_BAD_SHOWN 3   /* malformed lines named on stderr per file */

/* The monitors of the last table, in column order. */
static const char *const s_monitors[] = {"length/mean",    "length/truncation_rate",
                                         "repetition/mean", "overlap/teacher",
                                         "kl/teacher_student", "staleness/mean",
                                         "srpo/sd_frac"};
#define S_NMON ((int)AP_COUNT(s_monitors))

typedef struct {
    long step;   /* evaluated policy version (sft: its step) */
    double min;  /* minutes since the run's first record, when the evaluation was written */
    double acc;  /* eval/accuracy */
    int final;   /* eval/final, or the sft run's final evaluation */
} s_eval_t;

typedef struct {
    long step;            /* learner step after the batch */
    double v[S_NMON];     /* s_monitors values, NAN when absent */
} s_mon_t;

typedef struct {
    char *path;           /* RUN as given */
    char *name;           /* its directory name */
    s_eval_t *ev;         /* in file order, then sorted by step */
    int nev, cap_ev;
    s_mon_t *mon;
    int nmon, cap_mon;
    double t0;            /* earliest record time (s since the epoch) */
    double t_end;         /* last learner (or sft training) record */
    long last_step;       /* highest learner / sft training step */
    char status[24];      /* the launcher's last event, "final" for a finished sft run, or "?" */
    long lines, bad;      /* lines read, malformed lines skipped */
} s_run_t;

typedef struct {
    char *key;            /* name without the seed suffix */
    char *task, *method;  /* key split at its first '-' */
    int *runs;            /* indices into the run array */
    int n;
} s_group_t;

typedef struct {
    char *task;
    char *label; /* "teacher" or "cold start" */
    char *dir;
    double acc;  /* NAN when unreadable */
    long n;      /* held-out prompts */
} s_ref_t;

/* ---- small helpers -------------------------------------------------------------------------- */

static int s_parse_list(const char *arg, double *out, int max, const char *what) {
    int n = 0;
    const char *p = arg;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || v < 0 || (*end && *end != ','))
            return ap_err("--%s: '%s' is not a list of non-negative numbers", what, arg);
        if (n == max) return ap_err("--%s: more than %d values", what, max);
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (!n) return ap_err("--%s: no values", what);
    return n;
}

static const char *s_basename(const char *p, char *buf, size_t n) {
    snprintf(buf, n, "%s", p);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = 0;
    const char *s = strrchr(buf, '/');
    return s ? s + 1 : buf;
}

/* "addition-gkd-0.5-s2" -> "addition-gkd-0.5"; a name without "-s<digits>" is its own key. */
static char *s_group_key(const char *name) {
    const char *dash = strrchr(name, '-');
    if (dash && dash[1] == 's' && dash[2]) {
        const char *d = dash + 2;
        while (*d >= '0' && *d <= '9') d++;
        if (!*d && dash > name) return ap_sprintf("%.*s", (int)(dash - name), name);
    }
    return ap_strdup(name);
}

static int s_cmp_eval(const void *a, const void *b) {
    const s_eval_t *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    if (x->final != y->final) return x->final - y->final; /* the final evaluation last */
    return x->min < y->min ? -1 : x->min > y->min;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Mean and sample standard deviation of the finite values among x[0..n); returns the count. */
static int s_stats(const double *x, int n, double *mean, double *sd) {
    int k = 0;
    double s = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) s += x[i], k++;
    *mean = k ? s / k : NAN;
    double q = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = k > 1 ? sqrt(q / (k - 1)) : NAN;
    return k;
}

/* "0.512 ± 0.021", "0.512" (one value), "0.512 ± 0.021 (2/3)" (some runs left out), "—". */
static void s_cell(FILE *out, const double *x, int n, const char *fmt) {
    double mean, sd;
    int k = s_stats(x, n, &mean, &sd);
    if (!k) {
        fputs(" — |", out);
        return;
    }
    fputc(' ', out);
    fprintf(out, fmt, mean);
    if (k > 1) {
        fputs(" ± ", out);
        fprintf(out, fmt, sd);
    }
    if (k < n) fprintf(out, " (%d/%d)", k, n);
    fputs(" |", out);
}

/* ---- reading a run -------------------------------------------------------------------------- */

static void s_add_eval(s_run_t *r, long step, double time, double acc, int final) {
    if (r->nev == r->cap_ev) r->ev = ap_realloc(r->ev, (size_t)(r->cap_ev = r->cap_ev * 2 + 32) * sizeof *r->ev);
    r->ev[r->nev++] = (s_eval_t){step, time, acc, final};
}

static void s_add_train(s_run_t *r, long step, double time, json_t *values) {
    if (step > r->last_step) r->last_step = step;
    if (!(time <= r->t_end)) r->t_end = time;
    if (!values) return;
    if (r->nmon == r->cap_mon) r->mon = ap_realloc(r->mon, (size_t)(r->cap_mon = r->cap_mon * 2 + 64) * sizeof *r->mon);
    s_mon_t *m = &r->mon[r->nmon++];
    m->step = step;
    for (int k = 0; k < S_NMON; k++) {
        json_t *v = json_object_get(values, s_monitors[k]);
        m->v[k] = json_is_number(v) ? json_number_value(v) : NAN;
    }
}

/* Read RUN/metrics.jsonl into r. Malformed lines are counted and skipped. -1: unreadable. */
static int s_read_run(s_run_t *r) {
    char *path = ap_sprintf("%s/metrics.jsonl", r->path);
    FILE *f = fopen(path, "r");
    if (!f) {
        ap_err("%s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    r->t0 = INFINITY;
    r->t_end = NAN;
    r->last_step = -1;
    snprintf(r->status, sizeof r->status, "?");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        r->lines++;
        if (len == 1 && line[0] == '\n') continue;
        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        json_t *jt = json_object_get(rec, "time"), *jrole = json_object_get(rec, "role");
        json_t *jstep = json_object_get(rec, "step"), *values = json_object_get(rec, "values");
        const char *why = !rec                              ? jerr.text
                          : !json_is_object(rec)            ? "not a JSON object"
                          : !json_is_number(jt) || !isfinite(json_number_value(jt)) ? "no numeric time"
                          : !json_is_string(jrole)          ? "no role"
                          : !json_is_integer(jstep)         ? "no integer step"
                          : !json_is_object(values)         ? "no values object"
                                                            : NULL;
        if (why) {
            if (r->bad++ < S_BAD_SHOWN)
                fprintf(stderr, "apprentice report: %s:%ld: malformed record skipped (%s)\n", path,
                        r->lines, why);
            if (rec) json_decref(rec);
            continue;
        }
        double time = json_number_value(jt);
        const char *role = json_string_value(jrole);
        long step = (long)json_integer_value(jstep);
        if (time < r->t0) r->t0 = time;
        json_t *acc = json_object_get(values, "eval/accuracy");
        const char *event = json_string_value(json_object_get(values, "event"));
        if (!strcmp(role, "eval") && json_is_number(acc)) {
            json_t *fin = json_object_get(values, "eval/final");
            s_add_eval(r, step, time, json_number_value(acc),
                       json_is_number(fin) && json_number_value(fin) != 0);
        } else if (!strcmp(role, "sft")) {
            if (json_is_number(acc)) {
                int final = event && !strcmp(event, "final");
                s_add_eval(r, step, time, json_number_value(acc), final);
                if (final) snprintf(r->status, sizeof r->status, "final");
            }
            if (json_object_get(values, "loss/sft")) s_add_train(r, step, time, NULL);
        } else if (!strcmp(role, "learner")) {
            if (!event) s_add_train(r, step, time, values);
        } else if (!strcmp(role, "launcher") && event) {
            snprintf(r->status, sizeof r->status, "%.*s", (int)sizeof r->status - 1, event);
        }
        json_decref(rec);
    }
    free(line);
    fclose(f);
    if (r->bad > S_BAD_SHOWN)
        fprintf(stderr, "apprentice report: %s: %ld malformed records skipped in all\n", path, r->bad);
    free(path);
    if (!isfinite(r->t0)) r->t0 = 0;
    for (int i = 0; i < r->nev; i++) r->ev[i].min = (r->ev[i].min - r->t0) / 60.0;
    qsort(r->ev, (size_t)r->nev, sizeof *r->ev, s_cmp_eval);
    return 0;
}

/* ---- what the tables read from a run -------------------------------------------------------- */

/* Accuracy of the first evaluation at or after step s (NAN: the run stopped before s, or no
 * evaluation there). The final evaluation stands for the final step. */
static double s_acc_at_step(const s_run_t *r, long s) {
    long last = r->last_step;
    for (int i = 0; i < r->nev; i++)
        if (r->ev[i].final && r->ev[i].step > last) last = r->ev[i].step;
    if (last < s) return NAN;
    for (int i = 0; i < r->nev; i++)
        if (r->ev[i].step >= s) return r->ev[i].acc;
    return NAN;
}

/* Accuracy of the last evaluation written by minute m (NAN when none). */
static double s_acc_at_minute(const s_run_t *r, double m) {
    double best_t = -1, acc = NAN;
    for (int i = 0; i < r->nev; i++)
        if (r->ev[i].min <= m && r->ev[i].min >= best_t) best_t = r->ev[i].min, acc = r->ev[i].acc;
    return acc;
}

/* The final evaluation's accuracy (else the last evaluation's), and its step. */
static double s_acc_final(const s_run_t *r, long *step) {
    const s_eval_t *e = NULL;
    for (int i = 0; i < r->nev; i++)
        if (r->ev[i].final) e = &r->ev[i];
    if (!e && r->nev) e = &r->ev[r->nev - 1];
    if (step) *step = e ? e->step : -1;
    return e ? e->acc : NAN;
}

/* Mean of monitor k over the learner records in the last frac of the run's steps. */
static double s_monitor_tail(const s_run_t *r, int k, double frac) {
    if (r->last_step <= 0) return NAN;
    double from = (double)r->last_step * (1 - frac), s = 0;
    int n = 0;
    for (int i = 0; i < r->nmon; i++)
        if ((double)r->mon[i].step > from && isfinite(r->mon[i].v[k])) s += r->mon[i].v[k], n++;
    return n ? s / n : NAN;
}

/* ---- reference models ----------------------------------------------------------------------- */

static int s_read_reference(s_ref_t *ref) {
    ref->acc = NAN;
    ref->n = 0;
    char *path = ap_sprintf("%s/sft.json", ref->dir);
    json_error_t jerr;
    json_t *o = json_load_file(path, 0, &jerr);
    json_t *acc = json_object_get(o, "accuracy"), *n = json_object_get(o, "heldout");
    int rc = 0;
    if (!o) rc = ap_err("%s: %s", path, jerr.text);
    else if (!json_is_number(acc)) rc = ap_err("%s: no numeric \"accuracy\"", path);
    else {
        ref->acc = json_number_value(acc);
        ref->n = json_is_integer(n) ? (long)json_integer_value(n) : 0;
    }
    if (o) json_decref(o);
    free(path);
    return rc;
}

/* ---- curves --------------------------------------------------------------------------------- */

/* The median spacing of consecutive evaluation steps over a group's runs (0: fewer than 2). */
static long s_eval_spacing(const s_run_t *runs, const s_group_t *g) {
    int n = 0, cap = 0;
    double *d = NULL;
    for (int j = 0; j < g->n; j++) {
        const s_run_t *r = &runs[g->runs[j]];
        for (int i = 1; i < r->nev; i++) {
            if (r->ev[i].step <= r->ev[i - 1].step) continue;
            if (n == cap) d = ap_realloc(d, (size_t)(cap = cap * 2 + 32) * sizeof *d);
            d[n++] = (double)(r->ev[i].step - r->ev[i - 1].step);
        }
    }
    long med = 0;
    if (n) {
        qsort(d, (size_t)n, sizeof *d, s_cmp_double);
        med = (long)d[n / 2];
    }
    free(d);
    return med;
}

/* DIR/KEY/metrics.jsonl: a launcher "start" record at time 0, then one role "eval" record per
 * grid step g = 0, D, 2D, ... with the mean over the runs that have an evaluation in [g, g + D)
 * (the first one), at the mean of their elapsed times. Written atomically. */
static int s_write_curve(const char *dir, const s_run_t *runs, const s_group_t *g) {
    long d = s_eval_spacing(runs, g);
    if (d <= 0) d = 1;
    long top = 0;
    for (int j = 0; j < g->n; j++) {
        const s_run_t *r = &runs[g->runs[j]];
        if (r->nev && r->ev[r->nev - 1].step > top) top = r->ev[r->nev - 1].step;
    }
    char *sub = ap_sprintf("%s/%s", dir, g->key), *path = ap_sprintf("%s/metrics.jsonl", sub);
    int rc = ap_mkdirs(sub);
    ap_afile_t *f = rc == 0 ? ap_afile_open(path) : NULL;
    if (!f) {
        rc = ap_err("--curves %s: %s", path, ap_errmsg());
        free(sub), free(path);
        return rc;
    }
    const double base = 1.0e9; /* an arbitrary epoch: plot measures minutes from the first record */
    char *line = ap_sprintf("{\"time\":%.3f,\"role\":\"launcher\",\"id\":0,\"step\":0,"
                            "\"values\":{\"event\":\"start\",\"report/runs\":%d}}\n", base, g->n);
    rc |= ap_afile_write(f, line, strlen(line));
    free(line);
    for (long s = 0; s <= top && rc == 0; s += d) {
        double acc = 0, min = 0;
        int k = 0;
        for (int j = 0; j < g->n; j++) {
            const s_run_t *r = &runs[g->runs[j]];
            for (int i = 0; i < r->nev; i++) {
                if (r->ev[i].step < s) continue;
                if (r->ev[i].step < s + d) acc += r->ev[i].acc, min += r->ev[i].min, k++;
                break;
            }
        }
        if (!k) continue;
        line = ap_sprintf("{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":%ld,"
                          "\"values\":{\"eval/accuracy\":%.6f,\"report/runs\":%d}}\n",
                          base + 60.0 * min / k, s, acc / k, k);
        rc |= ap_afile_write(f, line, strlen(line));
        free(line);
    }
    if (rc == 0) rc = ap_afile_commit(&f);
    else ap_afile_abort(&f);
    if (rc < 0) ap_err("--curves %s: %s", path, ap_errmsg());
    free(sub), free(path);
    return rc;
}

/* ---- the tables ----------------------------------------------------------------------------- */

static void s_fmt_number(char *buf, size_t n, double x) {
    snprintf(buf, n, "%g", x);
}

static void s_table_steps(FILE *out, const s_run_t *runs, const s_group_t *gs, int ng,
                          const double *steps, int nsteps) {
    fprintf(out, "#### Held-out accuracy at fixed learner steps\n\n"
                 "Greedy accuracy on the held-out prompts, mean ± sample standard deviation over "
                 "seeds; at step S: the first evaluation at or after S (\"(k/n)\": only k of the n "
                 "runs got that far); final: the evaluation of the final checkpoint.\n\n"
                 "| task | method | seeds |");
    for (int i = 0; i < nsteps; i++) {
        char b[32];
        s_fmt_number(b, sizeof b, steps[i]);
        fprintf(out, " step %s |", b);
    }
    fprintf(out, " final | final step | final, per seed |\n|---|---|---|");
    for (int i = 0; i < nsteps + 3; i++) fputs("---|", out);
    fputc('\n', out);
    double *x = NULL;
    for (int gi = 0; gi < ng; gi++) {
        const s_group_t *g = &gs[gi];
        x = ap_realloc(x, sizeof *x * (size_t)g->n);
        fprintf(out, "| %s | %s | %d |", g->task, g->method, g->n);
        for (int i = 0; i < nsteps; i++) {
            for (int j = 0; j < g->n; j++) x[j] = s_acc_at_step(&runs[g->runs[j]], (long)steps[i]);
            s_cell(out, x, g->n, "%.3f");
        }
        for (int j = 0; j < g->n; j++) x[j] = s_acc_final(&runs[g->runs[j]], NULL);
        s_cell(out, x, g->n, "%.3f");
        for (int j = 0; j < g->n; j++) {
            long st;
            s_acc_final(&runs[g->runs[j]], &st);
            x[j] = st >= 0 ? (double)st : NAN;
        }
        s_cell(out, x, g->n, "%.0f");
        fputc(' ', out);
        for (int j = 0; j < g->n; j++) {
            double a = s_acc_final(&runs[g->runs[j]], NULL);
            if (isfinite(a)) fprintf(out, "%s%.3f", j ? " / " : "", a);
            else fprintf(out, "%s—", j ? " / " : "");
        }
        fputs(" |\n", out);
    }
    free(x);
    fputc('\n', out);
}

static void s_table_minutes(FILE *out, const s_run_t *runs, const s_group_t *gs, int ng,
                            const double *mins, int nmins) {
    fprintf(out, "#### Held-out accuracy at fixed wall time\n\n"
                 "Minutes since the run's first record (process start-up included); the last "
                 "evaluation written by then; steps and minutes: what each run used (its last "
                 "learner step and the time of it).\n\n"
                 "| task | method | seeds |");
    for (int i = 0; i < nmins; i++) {
        char b[32];
        s_fmt_number(b, sizeof b, mins[i]);
        fprintf(out, " %s min |", b);
    }
    fprintf(out, " steps | minutes | steps/min |\n|---|---|---|");
    for (int i = 0; i < nmins + 3; i++) fputs("---|", out);
    fputc('\n', out);
    double *x = NULL;
    for (int gi = 0; gi < ng; gi++) {
        const s_group_t *g = &gs[gi];
        x = ap_realloc(x, sizeof *x * (size_t)g->n);
        fprintf(out, "| %s | %s | %d |", g->task, g->method, g->n);
        for (int i = 0; i < nmins; i++) {
            for (int j = 0; j < g->n; j++) x[j] = s_acc_at_minute(&runs[g->runs[j]], mins[i]);
            s_cell(out, x, g->n, "%.3f");
        }
        for (int j = 0; j < g->n; j++) {
            const s_run_t *r = &runs[g->runs[j]];
            x[j] = r->last_step >= 0 ? (double)r->last_step : NAN;
        }
        s_cell(out, x, g->n, "%.0f");
        for (int j = 0; j < g->n; j++) {
            const s_run_t *r = &runs[g->runs[j]];
            x[j] = isfinite(r->t_end) ? (r->t_end - r->t0) / 60.0 : NAN;
        }
        s_cell(out, x, g->n, "%.2f");
        for (int j = 0; j < g->n; j++) {
            const s_run_t *r = &runs[g->runs[j]];
            double m = isfinite(r->t_end) ? (r->t_end - r->t0) / 60.0 : NAN;
            x[j] = m > 0 && r->last_step > 0 ? (double)r->last_step / m : NAN;
        }
        s_cell(out, x, g->n, "%.0f");
        fputc('\n', out);
    }
    free(x);
    fputc('\n', out);
}

static void s_table_monitors(FILE *out, const s_run_t *runs, const s_group_t *gs, int ng,
                             double frac) {
    fprintf(out, "#### Monitors over the last %g%% of each run's learner steps\n\n"
                 "Mean over the learner's records in that part of each run, then mean ± sample "
                 "standard deviation over seeds (docs/METRICS.md has the keys); — : the method "
                 "has no such monitor.\n\n| task | method |",
            100 * frac);
    for (int k = 0; k < S_NMON; k++) fprintf(out, " %s |", s_monitors[k]);
    fputs("\n|---|---|", out);
    for (int k = 0; k < S_NMON; k++) fputs("---|", out);
    fputc('\n', out);
    double *x = NULL;
    for (int gi = 0; gi < ng; gi++) {
        const s_group_t *g = &gs[gi];
        x = ap_realloc(x, sizeof *x * (size_t)g->n);
        fprintf(out, "| %s | %s |", g->task, g->method);
        for (int k = 0; k < S_NMON; k++) {
            int any = 0;
            for (int j = 0; j < g->n; j++) {
                x[j] = s_monitor_tail(&runs[g->runs[j]], k, frac);
                any |= isfinite(x[j]);
            }
            if (any) s_cell(out, x, g->n, "%.3f");
            else fputs(" — |", out);
        }
        fputc('\n', out);
    }
    free(x);
    fputc('\n', out);
}

static void s_table_references(FILE *out, const s_ref_t *refs, int nrefs) {
    if (!nrefs) return;
    fprintf(out, "#### Reference models\n\n"
                 "Held-out greedy accuracy from the model's sft.json (`apprentice sft`, the same "
                 "held-out prompts).\n\n| task | model | accuracy | prompts | directory |\n"
                 "|---|---|---|---|---|\n");
    for (int i = 0; i < nrefs; i++) {
        fprintf(out, "| %s | %s |", refs[i].task, refs[i].label);
        if (isfinite(refs[i].acc)) fprintf(out, " %.3f | %ld |", refs[i].acc, refs[i].n);
        else fputs(" — | — |", out);
        fprintf(out, " `%s` |\n", refs[i].dir);
    }
    fputc('\n', out);
}

/* Per task: the group with the best mean final accuracy, against the teacher and the baseline. */
static void s_summary(FILE *out, const s_run_t *runs, const s_group_t *gs, int ng,
                      const s_ref_t *refs, int nrefs, const char *baseline) {
    int printed = 0;
    for (int gi = 0; gi < ng; gi++) {
        int seen = 0;
        for (int j = 0; j < gi; j++) seen |= !strcmp(gs[j].task, gs[gi].task);
        if (seen) continue;
        const char *task = gs[gi].task;
        int best = -1, base = -1;
        double best_m = -1, base_m = NAN, best_sd = NAN, base_sd = NAN;
        for (int k = gi; k < ng; k++) {
            if (strcmp(gs[k].task, task)) continue;
            double *x = ap_malloc(sizeof *x * (size_t)gs[k].n), m, sd;
            for (int j = 0; j < gs[k].n; j++) x[j] = s_acc_final(&runs[gs[k].runs[j]], NULL);
            int n = s_stats(x, gs[k].n, &m, &sd);
            free(x);
            if (!n) continue;
            if (!strcmp(gs[k].method, baseline)) base = k, base_m = m, base_sd = sd;
            else if (m > best_m) best = k, best_m = m, best_sd = sd;
        }
        if (best < 0) continue;
        if (!printed++) fprintf(out, "#### Best method per task (mean final accuracy)\n\n");
        fprintf(out, "- **%s**: %s %.3f", task, gs[best].method, best_m);
        if (isfinite(best_sd)) fprintf(out, " ± %.3f", best_sd);
        double teacher = NAN;
        for (int i = 0; i < nrefs; i++)
            if (!strcmp(refs[i].task, task) && !strcmp(refs[i].label, "teacher")) teacher = refs[i].acc;
        if (isfinite(teacher) && teacher > 0)
            fprintf(out, " = %.0f%% of the teacher's %.3f (%s 90%%)", 100 * best_m / teacher, teacher,
                    best_m >= 0.9 * teacher ? "reaches" : "below");
        if (base >= 0) {
            fprintf(out, "; baseline %s %.3f", baseline, base_m);
            if (isfinite(base_sd)) fprintf(out, " ± %.3f", base_sd);
            fprintf(out, " (%s)", best_m > base_m ? "beaten" : "not beaten");
        }
        fputs("\n", out);
    }
    if (printed) fputc('\n', out);
}

/* ---- the command ---------------------------------------------------------------------------- */

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice report RUN... [--steps S1,S2,...] [--minutes M1,M2,...]\n"
            "                         [--teacher TASK=MODEL_DIR]... [--cold TASK=MODEL_DIR]...\n"
            "                         [--baseline METHOD] [--tail FRAC] [--curves DIR]\n"
            "Markdown tables of runs (their metrics.jsonl) for docs/RESULTS.md: held-out accuracy\n"
            "at fixed learner steps and wall time (mean ± sd over seeds), reference models, the\n"
            "monitors over the last part of each run, the best method per task. Runs named\n"
            "TASK-METHOD-sSEED are grouped by TASK-METHOD.\n"
            "  --steps S1,...     step columns (default: 25%%, 50%%, 100%% of the longest run)\n"
            "  --minutes M1,...   minute columns (default 1,2)\n"
            "  --teacher, --cold  reference model of a task (its sft.json accuracy)\n"
            "  --baseline METHOD  the method the best one is compared with (default sft)\n"
            "  --tail FRAC        monitors over the last FRAC of each run's steps (default 0.2)\n"
            "  --curves DIR       also write DIR/TASK-METHOD/metrics.jsonl: mean accuracy curves\n"
            "                     for `apprentice plot DIR/TASK-* --out FIGDIR`\n");
}

static int s_add_ref(s_ref_t **refs, int *n, const char *arg, const char *label) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) return ap_err("'%s' is not TASK=MODEL_DIR", arg);
    *refs = ap_realloc(*refs, sizeof **refs * (size_t)(*n + 1));
    s_ref_t *r = &(*refs)[(*n)++];
    r->task = ap_sprintf("%.*s", (int)(eq - arg), arg);
    r->label = ap_strdup(label);
    r->dir = ap_strdup(eq + 1);
    r->acc = NAN;
    r->n = 0;
    return 0;
}

int ap_cmd_report(int argc, char **argv) {
    static const struct option opts[] = {{"steps", required_argument, 0, 's'},
                                         {"minutes", required_argument, 0, 'm'},
                                         {"teacher", required_argument, 0, 't'},
                                         {"cold", required_argument, 0, 'c'},
                                         {"baseline", required_argument, 0, 'b'},
                                         {"tail", required_argument, 0, 'f'},
                                         {"curves", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    double steps[S_MAX_POINTS], mins[S_MAX_POINTS] = {1, 2}, tail = 0.2;
    int nsteps = 0, nmins = 2, c, rc = 0;
    const char *baseline = "sft", *curves = NULL;
    s_ref_t *refs = NULL;
    int nrefs = 0;
    optind = 0; /* full getopt re-initialisation: the command may run twice in one process */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 's': bad = (nsteps = s_parse_list(optarg, steps, S_MAX_POINTS, "steps")) < 0; break;
        case 'm': bad = (nmins = s_parse_list(optarg, mins, S_MAX_POINTS, "minutes")) < 0; break;
        case 't': bad = s_add_ref(&refs, &nrefs, optarg, "teacher") < 0; break;
        case 'c': bad = s_add_ref(&refs, &nrefs, optarg, "cold start") < 0; break;
        case 'b': baseline = optarg; break;
        case 'f': {
            char *end;
            tail = strtod(optarg, &end);
            if (end == optarg || *end || !(tail > 0 && tail <= 1))
                bad = ap_err("--tail: '%s' is not a fraction in (0, 1]", optarg) < 0;
            break;
        }
        case 'C': curves = optarg; break;
        case 'h': s_usage(stdout); goto done;
        default: s_usage(stderr); rc = 2; goto done;
        }
        if (bad) {
            fprintf(stderr, "apprentice report: %s\n", ap_errmsg());
            rc = 2;
            goto done;
        }
    }
    int nruns = argc - optind;
    if (nruns < 1) {
        fprintf(stderr, "apprentice report: give at least one run directory\n");
        s_usage(stderr);
        rc = 2;
        goto done;
    }
    {
        s_run_t *runs = ap_calloc((size_t)nruns, sizeof *runs);
        s_group_t *gs = ap_calloc((size_t)nruns, sizeof *gs);
        int nr = 0, ng = 0;
        long bad = 0;
        for (int i = 0; i < nruns; i++) {
            s_run_t *r = &runs[nr];
            char buf[4096];
            r->path = ap_strdup(argv[optind + i]);
            r->name = ap_strdup(s_basename(r->path, buf, sizeof buf));
            if (s_read_run(r) < 0) {
                fprintf(stderr, "apprentice report: run %s skipped: %s\n", r->path, ap_errmsg());
                free(r->path), free(r->name), free(r->ev), free(r->mon);
                memset(r, 0, sizeof *r);
                continue;
            }
            bad += r->bad;
            char *key = s_group_key(r->name);
            int g = 0;
            while (g < ng && strcmp(gs[g].key, key)) g++;
            if (g == ng) {
                const char *dash = strchr(key, '-');
                gs[g].key = key;
                gs[g].task = dash ? ap_sprintf("%.*s", (int)(dash - key), key) : ap_strdup(key);
                gs[g].method = ap_strdup(dash ? dash + 1 : key);
                gs[g].runs = ap_malloc(sizeof *gs[g].runs * (size_t)nruns);
                ng++;
            } else {
                free(key);
            }
            gs[g].runs[gs[g].n++] = nr++;
        }
        if (!nr) {
            fprintf(stderr, "apprentice report: no readable run\n");
            rc = 1;
        } else {
            if (!nsteps) { /* default: 25%, 50%, 100% of the longest run */
                long top = 0;
                for (int i = 0; i < nr; i++) top = AP_MAX(top, runs[i].last_step);
                steps[0] = (double)(top / 4), steps[1] = (double)(top / 2), steps[2] = (double)top;
                nsteps = 3;
            }
            for (int i = 0; i < nrefs; i++)
                if (s_read_reference(&refs[i]) < 0)
                    fprintf(stderr, "apprentice report: reference %s: %s\n", refs[i].label, ap_errmsg());
            FILE *out = stdout;
            s_table_steps(out, runs, gs, ng, steps, nsteps);
            s_table_minutes(out, runs, gs, ng, mins, nmins);
            s_table_references(out, refs, nrefs);
            s_table_monitors(out, runs, gs, ng, tail);
            s_summary(out, runs, gs, ng, refs, nrefs, baseline);
            fprintf(out, "Runs read: %d", nr);
            if (nr < nruns) fprintf(out, " (%d unreadable, skipped)", nruns - nr);
            fprintf(out, "; malformed metrics records skipped: %ld.\n", bad);
            fflush(out);
            if (curves) {
                if (ap_mkdirs(curves) < 0) {
                    fprintf(stderr, "apprentice report: --curves: %s\n", ap_errmsg());
                    rc = 1;
                }
                for (int g = 0; g < ng && rc == 0; g++)
                    if (s_write_curve(curves, runs, &gs[g]) < 0) {
                        fprintf(stderr, "apprentice report: %s\n", ap_errmsg());
                        rc = 1;
                    }
            }
        }
        for (int i = 0; i < nr; i++) free(runs[i].path), free(runs[i].name), free(runs[i].ev), free(runs[i].mon);
        for (int g = 0; g < ng; g++) free(gs[g].key), free(gs[g].task), free(gs[g].method), free(gs[g].runs);
        free(runs);
        free(gs);
    }
done:
    for (int i = 0; i < nrefs; i++) free(refs[i].task), free(refs[i].label), free(refs[i].dir);
    free(refs);
    return rc;
}
