/* config.h: the one YAML config of a run: plain structs with defaults, loaded through a libcyaml
 * schema (STYLE.md 5). docs/CONFIG.md lists every key with its default and the roles that read it
 * (a test checks that every schema key is documented there).
 *
 * Loading = defaults, then the file, then `--set key=value` overrides, then validation. Only keys
 * present in the file (or set) replace defaults. Unknown keys, malformed scalars ("3x" for an
 * integer), unknown enum values and out-of-range values are refused with the origin (file:line,
 * or the --set text), the dotted key and the reason. An objective section that is present is
 * enabled (`objective.gkd: {}` enables GKD with its defaults; `enabled: false` turns it off).
 *
 * Usage:
 *   ap_config_t *cfg = ap_config_load("configs/quickstart.yaml", sets, nsets);
 *   if (!cfg) { fprintf(stderr, "%s\n", ap_errmsg()); return 1; }
 *   printf("%g\n", cfg->sampling.temperature);
 *   ap_config_save(cfg, "runs/x/config.yaml");   // the resolved config, reloadable
 *   ap_config_destroy(&cfg);
 */
#ifndef APPRENTICE_CONFIG_H
#define APPRENTICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "apprentice/masks.h"
#include "apprentice/objectives.h"
#include "apprentice/task.h"

typedef struct {
    char *name;         /* run name: the run directory is <dir>/<name> */
    char *dir;          /* root of run directories */
    int seed;           /* seeds every role (each adds its own stream id) */
    int max_steps;      /* learner steps; the run stops at max_steps or max_minutes */
    double max_minutes; /* wall-clock budget of the learner; 0 = none */
    bool sync;          /* baseline: actors, teachers and learner in lock-step */
} ap_run_cfg_t;

typedef struct {
    char *student;   /* initial student checkpoint directory (with its vocabulary) */
    char *teacher;   /* external teacher checkpoint directory; "" = none */
    int blas_threads; /* OpenBLAS threads per process */
} ap_models_cfg_t;

typedef struct {
    double temperature; /* tau_s: sampled-token log-probs are at this temperature */
    int top_k;          /* 0 = off */
    double top_p;       /* 1 = off */
    int max_new_tokens; /* completion length limit (finish reason "length") */
    int group_size;     /* G completions per prompt */
} ap_sampling_cfg_t;

typedef struct {
    int size;                  /* B trajectories per optimizer step */
    double on_policy_fraction; /* lambda: GKD's batch composition */
    int micro_batch;           /* trajectories per forward/backward; 0 = the whole batch */
} ap_batch_cfg_t;

typedef struct {
    ap_masks_config_t masks;    /* truncated, overlong_buffer, max_truncation_rate,
                                   max_repetition, rep_n (eos_id, max_new_tokens and the
                                   special ids are filled in by the learner) */
    char **mask_tokens;         /* token texts masked wherever they occur ("<pad>", "#") */
    unsigned mask_tokens_count;
} ap_stabilizers_cfg_t;

typedef enum { AP_SCHEDULE_CONSTANT = 0, AP_SCHEDULE_COSINE = 1 } ap_schedule_t;

typedef struct {
    double lr;
    double beta1, beta2, eps;
    double weight_decay; /* decoupled, 2-D tensors only */
    double grad_clip;    /* global-norm clip; 0 = off */
    int warmup_steps;
    int schedule;        /* ap_schedule_t */
    double min_lr_ratio; /* cosine floor as a fraction of lr */
} ap_optimizer_cfg_t;

typedef struct {
    int sync_every;       /* publish weights every N steps */
    int checkpoint_every; /* atomic checkpoint every N steps (and at shutdown) */
    int keep_checkpoints; /* newest N checkpoints kept; 0 = all */
    int rollouts_every;   /* append a batch sample to rollouts.jsonl every N steps; 0 = never */
    int rollouts_per_step;/* trajectories written each time */
    int prefetch;         /* batch requests in flight */
    int max_skips_in_a_row; /* stop the run after this many batches in a row skipped; 0 = never */
} ap_learner_cfg_t;

typedef enum { AP_REUSE_NEWEST = 0, AP_REUSE_UNIFORM = 1 } ap_reuse_order_t;

typedef struct {
    int max_staleness;        /* drop on-policy groups older than this many versions */
    int max_reuse;            /* times a scored group may be served */
    int reuse_order;          /* ap_reuse_order_t */
    int capacity_groups;      /* bound of each queue, in groups */
    int actor_credit;         /* groups an actor may have in flight */
    int teacher_credit;       /* requests a teacher may hold */
    int teacher_timeout_ms;   /* deadline before re-dispatch */
    int max_retries;          /* re-dispatches per request */
    int heartbeat_ms;         /* peers heartbeat at this period; 3 missed = dead */
} ap_buffer_cfg_t;

typedef enum { AP_SELF_INITIAL = 0, AP_SELF_CURRENT = 1 } ap_self_weights_t;

typedef struct {
    int external;        /* external-teacher workers (when objectives need them) */
    int self;            /* self-teacher workers (opsd, srpo) */
    int reference;       /* reference workers (grpo kl_ref > 0) */
    int top_k;           /* K of top-K signals */
    int full_vocab_max;  /* V at most this: full log-probs are sent */
    int self_weights;    /* ap_self_weights_t: initial (frozen start) or current */
    int max_batch_tokens;/* scoring batch size in tokens */
    bool simulate;       /* benchmarks: random valid scores, no model */
} ap_teacher_cfg_t;

typedef enum { AP_DATASET_GOLD = 0, AP_DATASET_TEACHER = 1 } ap_dataset_source_t;

typedef struct {
    int count;           /* student actors on this machine (launch --actors overrides) */
    int dataset_actors;  /* dataset sources (needed when on_policy_fraction < 1) */
    int dataset_source;  /* ap_dataset_source_t: gold completions or teacher-written */
    bool eval;           /* run an evaluator */
    int eval_every;      /* evaluate every N policy versions */
    int eval_size;       /* held-out prompts per evaluation */
    int pass_k;          /* k of pass@k (sampled at sampling.temperature) */
    bool simulate;       /* benchmarks: student/dataset actors emit random groups, no model */
} ap_actors_cfg_t;

typedef struct {
    char *buffer_actors;   /* ROUTER: actor intake */
    char *buffer_teachers; /* ROUTER: teacher dispatch */
    char *buffer_learner;  /* ROUTER: learner batches */
    char *weights;         /* ROUTER (learner): weight pulls */
    char *weights_pub;     /* PUB (learner): version hints */
} ap_endpoints_cfg_t;

typedef struct {
    bool curve;     /* CURVE on every socket */
    char *keys_dir; /* apprentice keygen output: <role>.key / <role>.pub */
} ap_security_cfg_t;

typedef struct {
    int max_restarts;       /* give up after this many crashes of one role ... */
    double restart_window_s;/* ... within this many seconds */
    double backoff_s;       /* first restart delay; doubles per crash */
    double shutdown_timeout_s; /* children get this long after SIGTERM, then SIGKILL */
    bool progress;          /* live progress line on stderr */
} ap_launcher_cfg_t;

typedef enum { AP_SFT_DATA_TASK = 0, AP_SFT_DATA_DATASET = 1, AP_SFT_DATA_TEACHER = 2 } ap_sft_data_t;

typedef struct {
    char *out;              /* output model directory */
    char *init;             /* start from this checkpoint; "" = from scratch */
    int data;               /* ap_sft_data_t */
    char *teacher;          /* data: teacher_samples: the checkpoint that writes completions */
    int steps;
    int batch;              /* sequences per step */
    double privileged_fraction; /* examples rendered with the privileged template */
    int eval_every;         /* held-out greedy accuracy every N steps; 0 = only at the end */
    int checkpoint_every;
    int keep_checkpoints;   /* newest N checkpoints kept in the run directory; 0 = all */
    char *vocab;            /* from scratch: vocabulary dir to reuse (created from the task when
                               it has no vocab.json); "" = build from the task */
    /* architecture of a model trained from scratch */
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, max_positions;
    bool tie_embeddings;
} ap_sft_cfg_t;

typedef struct ap_config {
    ap_run_cfg_t run;
    ap_models_cfg_t model;
    ap_task_config_t task;        /* the task: prompts, verifier, templates (tasks/, docs/TASKS.md) */
    ap_sampling_cfg_t sampling;
    ap_batch_cfg_t batch;
    ap_obj_config_t objective; /* the learner's objectives (learner/, docs/OBJECTIVES.md) */
    ap_stabilizers_cfg_t stabilizers; /* masks and monitors around the objectives */
    ap_optimizer_cfg_t optimizer;
    ap_learner_cfg_t learner;
    ap_buffer_cfg_t buffer;
    ap_teacher_cfg_t teacher;
    ap_actors_cfg_t actors;
    ap_endpoints_cfg_t endpoints;
    ap_security_cfg_t security;
    ap_launcher_cfg_t launcher;
    ap_sft_cfg_t sft;
} ap_config_t;

ap_config_t *ap_config_new(void); /* defaults */
ap_config_t *ap_config_load(const char *path, const char *const *sets, int nsets);
/* Apply one "dotted.key=value" override (value is YAML). */
int ap_config_set(ap_config_t *c, const char *assignment);
int ap_config_validate(const ap_config_t *c, const char *origin);
char *ap_config_to_yaml(const ap_config_t *c); /* caller frees */
int ap_config_save(const ap_config_t *c, const char *path); /* atomic */
void ap_config_destroy(ap_config_t **c);

/* Every dotted key of the schema, in order (for docs and tests); NULL-terminated, static. */
const char *const *ap_config_keys(void);

#endif
