/* metrics.h: one JSON object per line (JSON Lines), the record every role emits:
 *   {"time": 1764000000.123, "role": "learner", "id": 0, "step": 12, "values": {"loss/gkd": 0.41}}
 * Each process appends to its own file (runs/NAME/metrics/ROLE-ID.jsonl, one write() per line);
 * the launcher gathers them into runs/NAME/metrics.jsonl. docs/METRICS.md lists every key.
 * A non-finite value is written as null (JSON has no NaN) and still counts as reported.
 *
 * Usage:
 *   ap_metrics_t *m = ap_metrics_open("runs/x/metrics/learner-0.jsonl", "learner", 0);
 *   ap_metrics_begin(m, step);
 *   ap_metrics_add(m, "loss/total", loss);
 *   ap_metrics_add_str(m, "event", "checkpoint");
 *   ap_metrics_end(m);                 // writes the line
 *   ap_metrics_close(&m);
 */
#ifndef APPRENTICE_METRICS_H
#define APPRENTICE_METRICS_H

typedef struct ap_metrics ap_metrics_t;

/* path NULL or "": a sink that discards (roles run in tests without a run directory). */
ap_metrics_t *ap_metrics_open(const char *path, const char *role, int id);
void ap_metrics_begin(ap_metrics_t *m, long step);
void ap_metrics_add(ap_metrics_t *m, const char *name, double value);
void ap_metrics_add_str(ap_metrics_t *m, const char *name, const char *value);
int ap_metrics_end(ap_metrics_t *m); /* 0 / -1 with ap_err (write failed) */
void ap_metrics_close(ap_metrics_t **m);

#endif
