/* monitors.c: the small name -> double list (ap_monitors_t) in which the objectives and the
 * mask builders report their metrics; the learner copies it into its metrics JSON line. Names
 * and units: docs/OBJECTIVES.md. */
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"

static int s_find(const ap_monitors_t *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->name[i], name)) return i;
    return -1;
}

void ap_monitors_set(ap_monitors_t *m, const char *name, double value) {
    AP_ASSERTF(strlen(name) < AP_MONITOR_NAME, "monitor name too long: %s", name);
    int i = s_find(m, name);
    if (i < 0) {
        AP_ASSERTF(m->n < AP_MONITORS_MAX, "monitor list full adding %s", name);
        i = m->n++;
        strcpy(m->name[i], name);
    }
    m->value[i] = value;
}

double ap_monitors_get(const ap_monitors_t *m, const char *name, double missing) {
    int i = s_find(m, name);
    return i < 0 ? missing : m->value[i];
}

int ap_monitors_has(const ap_monitors_t *m, const char *name) { return s_find(m, name) >= 0; }

void ap_monitors_clear(ap_monitors_t *m) { m->n = 0; }
