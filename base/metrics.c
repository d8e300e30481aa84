/* metrics.c: the JSON Lines metrics writer of include/apprentice/metrics.h (jansson). */
#include "apprentice/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "apprentice/base.h"

struct ap_metrics {
    int fd;          /* O_APPEND; -1 = discard */
    char *path;
    char *role;
    int id;
    json_t *record;  /* the line being built, NULL between begin/end */
    json_t *values;  /* borrowed from record */
};

ap_metrics_t *ap_metrics_open(const char *path, const char *role, int id) {
    ap_metrics_t *m = ap_calloc(1, sizeof *m);
    m->fd = -1;
    m->role = ap_strdup(role);
    m->id = id;
    if (path && *path) {
        m->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (m->fd < 0) {
            ap_err("metrics %s: %s", path, strerror(errno));
            free(m->role);
            free(m);
            return NULL;
        }
        m->path = ap_strdup(path);
    }
    return m;
}

void ap_metrics_begin(ap_metrics_t *m, long step) {
    if (m->record) json_decref(m->record);
    m->record = json_object();
    json_object_set_new(m->record, "time", json_real(ap_wall()));
    json_object_set_new(m->record, "role", json_string(m->role));
    json_object_set_new(m->record, "id", json_integer(m->id));
    json_object_set_new(m->record, "step", json_integer(step));
    m->values = json_object();
    json_object_set_new(m->record, "values", m->values);
}

void ap_metrics_add(ap_metrics_t *m, const char *name, double value) {
    AP_ASSERT(m->record);
    json_object_set_new(m->values, name, isfinite(value) ? json_real(value) : json_null());
}

void ap_metrics_add_str(ap_metrics_t *m, const char *name, const char *value) {
    AP_ASSERT(m->record);
    json_object_set_new(m->values, name, json_string(value));
}

int ap_metrics_end(ap_metrics_t *m) {
    AP_ASSERT(m->record);
    int rc = 0;
    if (m->fd >= 0) {
        char *line = json_dumps(m->record, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
        size_t n = strlen(line);
        line = ap_realloc(line, n + 2);
        line[n++] = '\n';
        ssize_t w = write(m->fd, line, n); /* one write: lines never interleave */
        if (w != (ssize_t)n) rc = ap_err("metrics %s: %s", m->path, w < 0 ? strerror(errno) : "short write");
        free(line);
    }
    json_decref(m->record);
    m->record = NULL;
    m->values = NULL;
    return rc;
}

void ap_metrics_close(ap_metrics_t **mp) {
    if (!mp || !*mp) return;
    ap_metrics_t *m = *mp;
    if (m->record) json_decref(m->record);
    if (m->fd >= 0) close(m->fd);
    free(m->path);
    free(m->role);
    free(m);
    *mp = NULL;
}
