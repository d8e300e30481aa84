/* rundir.h: the run directory (DESIGN.md, "Run directory") and what every role process does
 * at start-up.
 *
 *   runs/NAME/config.yaml        the resolved config every role reads
 *   runs/NAME/metrics.jsonl      every role's metrics, gathered by the launcher
 *   runs/NAME/metrics/ROLE-ID.jsonl   each process's own metrics (appended by that process)
 *   runs/NAME/logs/ROLE-ID.log   each process's stderr/stdout
 *   runs/NAME/ckpt/step-N/       checkpoints (MODEL.md layout + training state)
 *   runs/NAME/latest             "ckpt/step-N": the newest complete checkpoint (atomic)
 *   runs/NAME/rollouts.jsonl     samples of the learner's batches, for people to read
 *   runs/NAME/sock/              ipc:// endpoints when the config leaves them empty
 *   runs/NAME/plots/             apprentice plot output
 *
 * Usage (a role's main):
 *   ap_proc_t r;
 *   if (ap_proc_open(&r, run_dir, "actor", id) < 0) { fprintf(stderr, "%s\n", ap_errmsg()); return 1; }
 *   ... r.cfg, r.metrics, r.dir ...
 *   ap_proc_close(&r);
 */
#ifndef APPRENTICE_RUNDIR_H
#define APPRENTICE_RUNDIR_H

#include "apprentice/config.h"
#include "apprentice/metrics.h"

/* Create the run directory of `cfg` (run.dir/run.name) with its sub-folders, fill empty
 * endpoints with ipc:// paths under sock/, and save the resolved config there. *dir_out gets
 * the absolute run directory (caller frees). 0 / -1. */
int ap_rundir_create(ap_config_t *cfg, char **dir_out);
/* Fill empty endpoints: ipc://<dir>/sock/<name>.ipc. */
void ap_rundir_fill_endpoints(ap_config_t *cfg, const char *dir);
/* "<dir>/<rel>" (caller frees). */
char *ap_rundir_path(const char *dir, const char *rel);
/* The newest complete checkpoint directory ("<dir>/ckpt/step-N", caller frees), or NULL when
 * the run has none yet. */
char *ap_rundir_latest(const char *dir);
/* Point `latest` at ckpt/step-<step> (atomic) and delete all but the newest `keep` checkpoints
 * (keep 0: delete none). 0 / -1. */
int ap_rundir_set_latest(const char *dir, long step, int keep);

/* What every role process holds: its config, identity and metrics sink. */
typedef struct {
    char *dir;             /* run directory (absolute); NULL when run without one (tests) */
    ap_config_t *cfg;      /* resolved config, owned */
    const char *role;      /* "learner", "actor", ... (static string) */
    int id;                /* instance id within the role */
    ap_metrics_t *metrics; /* this process's metrics file (a discarding sink without dir) */
} ap_proc_t;

/* Load <dir>/config.yaml, set the log prefix to role[id], open metrics/<role>-<id>.jsonl, and set
 * the process's OpenBLAS threads (model.blas_threads). 0 / -1 with ap_err. */
int ap_proc_open(ap_proc_t *r, const char *dir, const char *role, int id);
void ap_proc_close(ap_proc_t *r);

#endif
