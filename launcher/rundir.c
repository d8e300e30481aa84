/* rundir.c: run directory layout, endpoint defaults, the `latest` checkpoint pointer, and the
 * start-up every role process shares (include/apprentice/rundir.h). */
#include "apprentice/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"

char *ap_rundir_path(const char *dir, const char *rel) { return ap_sprintf("%s/%s", dir, rel); }

void ap_rundir_fill_endpoints(ap_config_t *cfg, const char *dir) {
    struct {
        char **slot;
        const char *name;
    } eps[] = {{&cfg->endpoints.buffer_actors, "buffer-actors"},
               {&cfg->endpoints.buffer_teachers, "buffer-teachers"},
               {&cfg->endpoints.buffer_learner, "buffer-learner"},
               {&cfg->endpoints.weights, "weights"},
               {&cfg->endpoints.weights_pub, "weights-pub"}};
    for (size_t i = 0; i < AP_COUNT(eps); i++) {
        if ((*eps[i].slot)[0]) continue;
        free(*eps[i].slot);
        *eps[i].slot = ap_sprintf("ipc://%s/sock/%s.ipc", dir, eps[i].name);
    }
}

int ap_rundir_create(ap_config_t *cfg, char **dir_out) {
    char *rel = ap_sprintf("%s/%s", cfg->run.dir, cfg->run.name);
    if (ap_mkdirs(rel) < 0) {
        free(rel);
        return -1;
    }
    char abs[PATH_MAX];
    if (!realpath(rel, abs)) {
        ap_err("%s: %s", rel, strerror(errno));
        free(rel);
        return -1;
    }
    free(rel);
    const char *subs[] = {"metrics", "logs", "ckpt", "sock", "plots"};
    for (size_t i = 0; i < AP_COUNT(subs); i++) {
        char *p = ap_rundir_path(abs, subs[i]);
        int rc = ap_mkdirs(p);
        free(p);
        if (rc < 0) return -1;
    }
    /* ipc:// paths are limited to 107 bytes by sockaddr_un */
    ap_rundir_fill_endpoints(cfg, abs);
    char *cfg_path = ap_rundir_path(abs, "config.yaml");
    int rc = ap_config_save(cfg, cfg_path);
    free(cfg_path);
    if (rc < 0) return -1;
    *dir_out = ap_strdup(abs);
    return 0;
}

char *ap_rundir_latest(const char *dir) {
    char *path = ap_rundir_path(dir, "latest"), *text = NULL;
    int rc = ap_file_read(path, &text, NULL);
    free(path);
    if (rc < 0) return NULL;
    text[strcspn(text, "\r\n")] = 0;
    char *ckpt = ap_rundir_path(dir, text);
    free(text);
    if (!ap_path_exists(ckpt)) {
        free(ckpt);
        return NULL;
    }
    return ckpt;
}

static int s_rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = ap_sprintf("%s/%s", path, e->d_name);
        s_rm_tree(p);
        free(p);
    }
    closedir(d);
    return rmdir(path);
}

int ap_rundir_set_latest(const char *dir, long step, int keep) {
    char *text = ap_sprintf("ckpt/step-%ld\n", step), *path = ap_rundir_path(dir, "latest");
    int rc = ap_file_write_atomic(path, text, strlen(text));
    free(text);
    free(path);
    if (rc < 0 || keep <= 0) return rc;
    /* prune: keep the `keep` highest steps */
    char *ckdir = ap_rundir_path(dir, "ckpt");
    DIR *d = opendir(ckdir);
    long steps[4096];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < (int)AP_COUNT(steps)) {
        long s;
        char tail;
        if (sscanf(e->d_name, "step-%ld%c", &s, &tail) == 1) steps[n++] = s;
    }
    if (d) closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= keep && steps[i] != step) {
            char *p = ap_sprintf("%s/step-%ld", ckdir, steps[i]);
            s_rm_tree(p);
            free(p);
        }
    }
    free(ckdir);
    return 0;
}

int ap_proc_open(ap_proc_t *r, const char *dir, const char *role, int id) {
    memset(r, 0, sizeof *r);
    r->role = role;
    r->id = id;
    ap_log_set_role(role, id);
    char *cfg_path = ap_rundir_path(dir, "config.yaml");
    r->cfg = ap_config_load(cfg_path, NULL, 0);
    free(cfg_path);
    if (!r->cfg) return -1;
    r->dir = ap_strdup(dir);
    char *mpath = ap_sprintf("%s/metrics/%s-%d.jsonl", dir, role, id);
    r->metrics = ap_metrics_open(mpath, role, id);
    free(mpath);
    if (!r->metrics) {
        ap_proc_close(r);
        return -1;
    }
    ap_blas_set_threads(r->cfg->model.blas_threads);
    return 0;
}

void ap_proc_close(ap_proc_t *r) {
    ap_metrics_close(&r->metrics);
    ap_config_destroy(&r->cfg);
    free(r->dir);
    r->dir = NULL;
}
