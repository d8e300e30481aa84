/* gather.c: tail the per-process metrics files into metrics.jsonl and keep progress values. */
#include "launcher/gather.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "apprentice/base.h"

typedef struct {
    char *name;    /* file name in metrics/ */
    long offset;   /* bytes consumed */
    char *partial; /* an incomplete last line carried to the next poll */
    double tps;    /* this process's latest tokens/s (actors, teachers) */
    int kind;      /* 0 other, 1 actor, 2 teacher */
} s_source_t;

struct ap_gather {
    char *dir;       /* run dir */
    char *mdir;      /* run dir/metrics */
    int out;         /* metrics.jsonl, O_APPEND */
    s_source_t *src;
    int nsrc;
    ap_progress_t p;
};

ap_gather_t *ap_gather_new(const char *run_dir) {
    ap_gather_t *g = ap_calloc(1, sizeof *g);
    g->dir = ap_strdup(run_dir);
    g->mdir = ap_sprintf("%s/metrics", run_dir);
    char *out = ap_sprintf("%s/metrics.jsonl", run_dir);
    g->out = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g->out < 0) ap_log(AP_LOG_ERROR, "%s: %s", out, strerror(errno));
    free(out);
    g->p = (ap_progress_t){.step = -1, .reward = NAN, .loss = NAN, .busy = NAN,
                           .accuracy = NAN, .accuracy_version = -1};
    return g;
}

void ap_gather_destroy(ap_gather_t **gp) {
    if (!gp || !*gp) return;
    ap_gather_t *g = *gp;
    for (int i = 0; i < g->nsrc; i++) {
        free(g->src[i].name);
        free(g->src[i].partial);
    }
    free(g->src);
    if (g->out >= 0) close(g->out);
    free(g->dir);
    free(g->mdir);
    free(g);
    *gp = NULL;
}

const ap_progress_t *ap_gather_progress(const ap_gather_t *g) { return &g->p; }

static double s_num(json_t *values, const char *key) {
    json_t *v = json_object_get(values, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Update progress from one record. */
static void s_take(ap_gather_t *g, s_source_t *src, const char *line, size_t len) {
    json_t *rec = json_loadb(line, len, 0, NULL);
    if (!json_is_object(rec)) {
        g->p.bad_lines++;
        if (rec) json_decref(rec);
        return;
    }
    const char *role = json_string_value(json_object_get(rec, "role"));
    json_t *values = json_object_get(rec, "values");
    double time = json_number_value(json_object_get(rec, "time"));
    long step = (long)json_integer_value(json_object_get(rec, "step"));
    if (!role || !json_is_object(values)) goto out;
    if (!strcmp(role, "learner")) {
        if (g->p.step < 0) g->p.first_time = time, g->p.first_step = step;
        g->p.step = step;
        g->p.last_time = time;
        double x;
        if (isfinite(x = s_num(values, "reward/mean"))) g->p.reward = x;
        if (isfinite(x = s_num(values, "loss/total"))) g->p.loss = x;
        if (isfinite(x = s_num(values, "learner/busy_frac"))) g->p.busy = x;
    } else if (!strcmp(role, "eval")) {
        double acc = s_num(values, "eval/accuracy");
        if (isfinite(acc)) {
            g->p.accuracy = acc;
            g->p.accuracy_version = step;
        }
    } else if (!strcmp(role, "actor")) {
        src->kind = 1;
        double x = s_num(values, "actor/tokens_per_s");
        if (isfinite(x)) src->tps = x;
    } else if (!strncmp(role, "teacher", 7)) {
        src->kind = 2;
        double x = s_num(values, "teacher/tokens_per_s");
        if (isfinite(x)) src->tps = x;
    }
out:
    json_decref(rec);
}

static s_source_t *s_source(ap_gather_t *g, const char *name) {
    for (int i = 0; i < g->nsrc; i++)
        if (!strcmp(g->src[i].name, name)) return &g->src[i];
    g->src = ap_realloc(g->src, (size_t)(g->nsrc + 1) * sizeof *g->src);
    s_source_t *s = &g->src[g->nsrc++];
    memset(s, 0, sizeof *s);
    s->name = ap_strdup(name);
    return s;
}

static int s_read_source(ap_gather_t *g, s_source_t *s) {
    char *path = ap_sprintf("%s/%s", g->mdir, s->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return 0;
    if (lseek(fd, s->offset, SEEK_SET) < 0) {
        close(fd);
        return 0;
    }
    char buf[1 << 16];
    ssize_t got;
    int rc = 0;
    while ((got = read(fd, buf, sizeof buf)) > 0) {
        s->offset += got;
        size_t plen = s->partial ? strlen(s->partial) : 0;
        char *data = ap_malloc(plen + (size_t)got + 1);
        if (plen) memcpy(data, s->partial, plen);
        memcpy(data + plen, buf, (size_t)got);
        data[plen + (size_t)got] = 0;
        free(s->partial);
        s->partial = NULL;
        char *line = data, *nl;
        while ((nl = strchr(line, '\n'))) {
            size_t len = (size_t)(nl - line) + 1;
            if (len > 1) {
                if (g->out >= 0 && write(g->out, line, len) != (ssize_t)len) rc = -1;
                g->p.lines++;
                s_take(g, s, line, len - 1);
            }
            line = nl + 1;
        }
        if (*line) s->partial = ap_strdup(line);
        free(data);
    }
    close(fd);
    return rc;
}

int ap_gather_poll(ap_gather_t *g) {
    DIR *d = opendir(g->mdir);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 7 || strcmp(e->d_name + n - 6, ".jsonl")) continue;
        if (s_read_source(g, s_source(g, e->d_name)) < 0) rc = -1;
    }
    closedir(d);
    g->p.actor_tps = g->p.teacher_tps = 0;
    for (int i = 0; i < g->nsrc; i++) {
        if (g->src[i].kind == 1) g->p.actor_tps += g->src[i].tps;
        if (g->src[i].kind == 2) g->p.teacher_tps += g->src[i].tps;
    }
    return rc < 0 ? ap_err("metrics.jsonl: write failed") : 0;
}

static void s_human(double x, char *buf, size_t n) {
    if (!isfinite(x)) snprintf(buf, n, "-");
    else if (x >= 1e6) snprintf(buf, n, "%.1fM", x / 1e6);
    else if (x >= 1e3) snprintf(buf, n, "%.1fk", x / 1e3);
    else snprintf(buf, n, "%.0f", x);
}

void ap_gather_progress_line(const ap_gather_t *g, long max_steps, double max_minutes, char *buf,
                             size_t n) {
    const ap_progress_t *p = &g->p;
    char at[32], tt[32], eta[32] = "-", acc[48] = "-", rew[16] = "-", busy[16] = "-";
    s_human(p->actor_tps, at, sizeof at);
    s_human(p->teacher_tps, tt, sizeof tt);
    if (isfinite(p->reward)) snprintf(rew, sizeof rew, "%.3f", p->reward);
    if (isfinite(p->accuracy))
        snprintf(acc, sizeof acc, "%.3f@v%ld", p->accuracy, p->accuracy_version);
    if (isfinite(p->busy)) snprintf(busy, sizeof busy, "%.0f%%", 100 * p->busy);
    if (p->step > p->first_step && p->last_time > p->first_time) {
        double rate = (double)(p->step - p->first_step) / (p->last_time - p->first_time);
        double left = (double)(max_steps - p->step) / rate;
        if (max_minutes > 0) {
            double budget = max_minutes * 60 - (ap_wall() - p->first_time);
            if (budget < left) left = budget > 0 ? budget : 0;
        }
        snprintf(eta, sizeof eta, "%dm%02ds", (int)(left / 60), (int)fmod(left, 60));
    }
    snprintf(buf, n,
             "step %ld/%ld | reward %s | held-out acc %s | tok/s actors %s teachers %s | "
             "learner busy %s | ETA %s",
             p->step < 0 ? 0 : p->step, max_steps, rew, acc, at, tt, busy, eta);
}
