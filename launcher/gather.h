/* gather.h: the launcher's view of a running experiment: it tails every process's metrics file
 * (runs/NAME/metrics/ROLE-ID.jsonl), appends each complete line to runs/NAME/metrics.jsonl (the
 * one writer of that file), and keeps the latest values the progress line shows.
 *
 * Usage:
 *   ap_gather_t *g = ap_gather_new(run_dir);
 *   every second: ap_gather_poll(g); ap_gather_progress_line(g, max_steps, max_minutes, buf, n);
 *   ap_gather_destroy(&g);
 */
#ifndef APPRENTICE_GATHER_H
#define APPRENTICE_GATHER_H

#include <stddef.h>

typedef struct {
    long step;              /* learner step (its latest record), -1 before any */
    double first_time;      /* wall time of the learner's first record */
    double last_time;       /* ... and of its latest */
    long first_step;        /* step of its first record (a resumed run starts above 0) */
    double reward;          /* learner: reward/mean of the latest batch (NAN if unknown) */
    double loss;            /* learner: loss/total */
    double busy;            /* learner: learner/busy_frac */
    double accuracy;        /* eval: eval/accuracy (NAN until the first evaluation) */
    long accuracy_version;  /* the policy version it was measured at */
    double actor_tps;       /* sum over student actors of actor/tokens_per_s */
    double teacher_tps;     /* sum over teachers of teacher/tokens_per_s */
    long lines;             /* metrics lines gathered so far */
    long bad_lines;         /* lines that were not JSON objects (counted, still copied) */
} ap_progress_t;

typedef struct ap_gather ap_gather_t;

ap_gather_t *ap_gather_new(const char *run_dir);
void ap_gather_destroy(ap_gather_t **g);
/* Read what the processes appended since the last poll. 0 / -1 (metrics.jsonl not writable). */
int ap_gather_poll(ap_gather_t *g);
const ap_progress_t *ap_gather_progress(const ap_gather_t *g);
/* "step 120/500 | reward 0.62 | acc 0.55@v118 | tok/s actors 3.1k teachers 9.8k | learner busy
 * 84% | ETA 3m12s" into buf. */
void ap_gather_progress_line(const ap_gather_t *g, long max_steps, double max_minutes, char *buf,
                             size_t n);

#endif
