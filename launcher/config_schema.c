/* config_schema.c: the config's schema (libcyaml field tables), its defaults and its validation.
 * A new key is one line in a field table, one default and, if it has a range, one check; then
 * one row in docs/CONFIG.md (test_config checks every key is documented). */
#include "launcher/config_schema.h"

#include <stddef.h>
#include <string.h>

#include "apprentice/base.h"

#define OPT CYAML_FLAG_OPTIONAL
#define F_INT(k, S, m) CYAML_FIELD_INT(k, OPT, S, m)
#define F_DBL(k, S, m) CYAML_FIELD_FLOAT(k, OPT, S, m)
#define F_BOOL(k, S, m) CYAML_FIELD_BOOL(k, OPT, S, m)
#define F_STR(k, S, m) CYAML_FIELD_STRING_PTR(k, OPT, S, m, 0, CYAML_UNLIMITED)
#define F_ENUM(k, S, m, table) CYAML_FIELD_ENUM(k, OPT, S, m, table, AP_COUNT(table))
#define F_MAP(k, S, m, fields) CYAML_FIELD_MAPPING(k, OPT, S, m, fields)

static const cyaml_schema_field_t s_run[] = {
    F_STR("name", ap_run_cfg_t, name),         F_STR("dir", ap_run_cfg_t, dir),
    F_INT("seed", ap_run_cfg_t, seed),         F_INT("max_steps", ap_run_cfg_t, max_steps),
    F_DBL("max_minutes", ap_run_cfg_t, max_minutes), F_BOOL("sync", ap_run_cfg_t, sync),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_model[] = {
    F_STR("student", ap_models_cfg_t, student), F_STR("teacher", ap_models_cfg_t, teacher),
    F_INT("blas_threads", ap_models_cfg_t, blas_threads), CYAML_FIELD_END};

static const cyaml_schema_field_t s_sampling[] = {
    F_DBL("temperature", ap_sampling_cfg_t, temperature),
    F_INT("top_k", ap_sampling_cfg_t, top_k),
    F_DBL("top_p", ap_sampling_cfg_t, top_p),
    F_INT("max_new_tokens", ap_sampling_cfg_t, max_new_tokens),
    F_INT("group_size", ap_sampling_cfg_t, group_size),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_batch[] = {
    F_INT("size", ap_batch_cfg_t, size),
    F_DBL("on_policy_fraction", ap_batch_cfg_t, on_policy_fraction),
    F_INT("micro_batch", ap_batch_cfg_t, micro_batch), CYAML_FIELD_END};

static const cyaml_strval_t s_schedules[] = {{"constant", AP_SCHEDULE_CONSTANT},
                                             {"cosine", AP_SCHEDULE_COSINE}};
static const cyaml_schema_field_t s_optimizer[] = {
    F_DBL("lr", ap_optimizer_cfg_t, lr),
    F_DBL("beta1", ap_optimizer_cfg_t, beta1),
    F_DBL("beta2", ap_optimizer_cfg_t, beta2),
    F_DBL("eps", ap_optimizer_cfg_t, eps),
    F_DBL("weight_decay", ap_optimizer_cfg_t, weight_decay),
    F_DBL("grad_clip", ap_optimizer_cfg_t, grad_clip),
    F_INT("warmup_steps", ap_optimizer_cfg_t, warmup_steps),
    F_ENUM("schedule", ap_optimizer_cfg_t, schedule, s_schedules),
    F_DBL("min_lr_ratio", ap_optimizer_cfg_t, min_lr_ratio),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_learner[] = {
    F_INT("sync_every", ap_learner_cfg_t, sync_every),
    F_INT("checkpoint_every", ap_learner_cfg_t, checkpoint_every),
    F_INT("keep_checkpoints", ap_learner_cfg_t, keep_checkpoints),
    F_INT("rollouts_every", ap_learner_cfg_t, rollouts_every),
    F_INT("rollouts_per_step", ap_learner_cfg_t, rollouts_per_step),
    F_INT("prefetch", ap_learner_cfg_t, prefetch),
    F_INT("max_skips_in_a_row", ap_learner_cfg_t, max_skips_in_a_row),
    CYAML_FIELD_END};

static const cyaml_strval_t s_reuse_orders[] = {{"newest", AP_REUSE_NEWEST},
                                                {"uniform", AP_REUSE_UNIFORM}};
static const cyaml_schema_field_t s_buffer[] = {
    F_INT("max_staleness", ap_buffer_cfg_t, max_staleness),
    F_INT("max_reuse", ap_buffer_cfg_t, max_reuse),
    F_ENUM("reuse_order", ap_buffer_cfg_t, reuse_order, s_reuse_orders),
    F_INT("capacity_groups", ap_buffer_cfg_t, capacity_groups),
    F_INT("actor_credit", ap_buffer_cfg_t, actor_credit),
    F_INT("teacher_credit", ap_buffer_cfg_t, teacher_credit),
    F_INT("teacher_timeout_ms", ap_buffer_cfg_t, teacher_timeout_ms),
    F_INT("max_retries", ap_buffer_cfg_t, max_retries),
    F_INT("heartbeat_ms", ap_buffer_cfg_t, heartbeat_ms),
    CYAML_FIELD_END};

static const cyaml_strval_t s_self_weights[] = {{"initial", AP_SELF_INITIAL},
                                                {"current", AP_SELF_CURRENT}};
static const cyaml_schema_field_t s_teacher[] = {
    F_INT("external", ap_teacher_cfg_t, external),
    F_INT("self", ap_teacher_cfg_t, self),
    F_INT("reference", ap_teacher_cfg_t, reference),
    F_INT("top_k", ap_teacher_cfg_t, top_k),
    F_INT("full_vocab_max", ap_teacher_cfg_t, full_vocab_max),
    F_ENUM("self_weights", ap_teacher_cfg_t, self_weights, s_self_weights),
    F_INT("max_batch_tokens", ap_teacher_cfg_t, max_batch_tokens),
    F_BOOL("simulate", ap_teacher_cfg_t, simulate),
    CYAML_FIELD_END};

static const cyaml_strval_t s_dataset_sources[] = {{"gold", AP_DATASET_GOLD},
                                                   {"teacher", AP_DATASET_TEACHER}};
static const cyaml_schema_field_t s_actors[] = {
    F_INT("count", ap_actors_cfg_t, count),
    F_INT("dataset_actors", ap_actors_cfg_t, dataset_actors),
    F_ENUM("dataset_source", ap_actors_cfg_t, dataset_source, s_dataset_sources),
    F_BOOL("eval", ap_actors_cfg_t, eval),
    F_INT("eval_every", ap_actors_cfg_t, eval_every),
    F_INT("eval_size", ap_actors_cfg_t, eval_size),
    F_INT("pass_k", ap_actors_cfg_t, pass_k),
    F_BOOL("simulate", ap_actors_cfg_t, simulate),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_endpoints[] = {
    F_STR("buffer_actors", ap_endpoints_cfg_t, buffer_actors),
    F_STR("buffer_teachers", ap_endpoints_cfg_t, buffer_teachers),
    F_STR("buffer_learner", ap_endpoints_cfg_t, buffer_learner),
    F_STR("weights", ap_endpoints_cfg_t, weights),
    F_STR("weights_pub", ap_endpoints_cfg_t, weights_pub),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_security[] = {
    F_BOOL("curve", ap_security_cfg_t, curve), F_STR("keys_dir", ap_security_cfg_t, keys_dir),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_launcher[] = {
    F_INT("max_restarts", ap_launcher_cfg_t, max_restarts),
    F_DBL("restart_window_s", ap_launcher_cfg_t, restart_window_s),
    F_DBL("backoff_s", ap_launcher_cfg_t, backoff_s),
    F_DBL("shutdown_timeout_s", ap_launcher_cfg_t, shutdown_timeout_s),
    F_BOOL("progress", ap_launcher_cfg_t, progress),
    CYAML_FIELD_END};

static const cyaml_strval_t s_sft_data[] = {{"task", AP_SFT_DATA_TASK},
                                            {"dataset", AP_SFT_DATA_DATASET},
                                            {"teacher_samples", AP_SFT_DATA_TEACHER}};
static const cyaml_schema_field_t s_sft[] = {
    F_STR("out", ap_sft_cfg_t, out),
    F_STR("init", ap_sft_cfg_t, init),
    F_ENUM("data", ap_sft_cfg_t, data, s_sft_data),
    F_STR("teacher", ap_sft_cfg_t, teacher),
    F_INT("steps", ap_sft_cfg_t, steps),
    F_INT("batch", ap_sft_cfg_t, batch),
    F_DBL("privileged_fraction", ap_sft_cfg_t, privileged_fraction),
    F_INT("eval_every", ap_sft_cfg_t, eval_every),
    F_INT("checkpoint_every", ap_sft_cfg_t, checkpoint_every),
    F_INT("keep_checkpoints", ap_sft_cfg_t, keep_checkpoints),
    F_STR("vocab", ap_sft_cfg_t, vocab),
    F_INT("hidden_size", ap_sft_cfg_t, hidden_size),
    F_INT("intermediate_size", ap_sft_cfg_t, intermediate_size),
    F_INT("num_layers", ap_sft_cfg_t, num_layers),
    F_INT("num_heads", ap_sft_cfg_t, num_heads),
    F_INT("num_kv_heads", ap_sft_cfg_t, num_kv_heads),
    F_INT("max_positions", ap_sft_cfg_t, max_positions),
    F_BOOL("tie_embeddings", ap_sft_cfg_t, tie_embeddings),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_task[] = {
    F_STR("kind", ap_task_config_t, kind),
    F_INT("min_digits", ap_task_config_t, min_digits),
    F_INT("max_digits", ap_task_config_t, max_digits),
    F_INT("factor_min_digits", ap_task_config_t, factor_min_digits),
    F_INT("factor_max_digits", ap_task_config_t, factor_max_digits),
    F_INT("min_length", ap_task_config_t, min_length),
    F_INT("max_length", ap_task_config_t, max_length),
    F_STR("alphabet", ap_task_config_t, alphabet),
    F_STR("dataset", ap_task_config_t, dataset),
    F_STR("heldout_dataset", ap_task_config_t, heldout_dataset),
    F_STR("on_bad_line", ap_task_config_t, on_bad_line),
    F_INT("heldout_size", ap_task_config_t, heldout_size),
    F_INT("heldout_seed", ap_task_config_t, heldout_seed),
    F_INT("seed", ap_task_config_t, seed),
    F_STR("verifier", ap_task_config_t, verifier),
    F_DBL("reward_correct", ap_task_config_t, reward_correct),
    F_DBL("reward_wrong", ap_task_config_t, reward_wrong),
    F_STR("prompt_template", ap_task_config_t, prompt_template),
    F_STR("completion_template", ap_task_config_t, completion_template),
    F_STR("privileged_template", ap_task_config_t, privileged_template),
    CYAML_FIELD_END};

/* objective.<name>: options flat, as ALGORITHMS.md names them (objective.grpo.eps_high). */
static const cyaml_strval_t s_supports[] = {{"auto", AP_SUPPORT_AUTO},
                                            {"full", AP_SUPPORT_FULL},
                                            {"topk", AP_SUPPORT_TOPK},
                                            {"topk_tail", AP_SUPPORT_TOPK_TAIL}};
static const cyaml_strval_t s_reduces[] = {{"token_mean", AP_REDUCE_TOKEN_MEAN},
                                           {"seq_mean", AP_REDUCE_SEQ_MEAN},
                                           {"const", AP_REDUCE_CONST}};
static const cyaml_strval_t s_scales[] = {{"group", AP_SCALE_GROUP}, {"none", AP_SCALE_NONE}};
static const cyaml_strval_t s_adv_from[] = {{"current", 0}, {"behavior", 1}};

#define S_COMMON(S)                                                                                \
    F_BOOL("enabled", S, c.enabled), F_DBL("weight", S, c.weight),                                 \
        F_ENUM("reduce", S, c.reduce, s_reduces), F_INT("max_new_tokens", S, c.max_new_tokens)
#define S_PG(S)                                                                                    \
    F_BOOL("clip", S, pg.clip), F_DBL("eps_low", S, pg.eps_low),                                   \
        F_DBL("eps_high", S, pg.eps_high), F_DBL("dual_clip", S, pg.dual_clip),                    \
        F_DBL("max_is_ratio", S, pg.max_is_ratio)

static const cyaml_schema_field_t s_gkd[] = {
    S_COMMON(ap_gkd_config_t), F_DBL("beta", ap_gkd_config_t, beta),
    F_DBL("tau", ap_gkd_config_t, tau), F_ENUM("support", ap_gkd_config_t, support, s_supports),
    F_DBL("clip_token_kl", ap_gkd_config_t, clip_token_kl), CYAML_FIELD_END};
static const cyaml_schema_field_t s_opd[] = {
    S_COMMON(ap_opd_config_t), S_PG(ap_opd_config_t),
    F_DBL("kl_coef", ap_opd_config_t, kl_coef),
    F_ENUM("advantage_from", ap_opd_config_t, advantage_from_behavior, s_adv_from),
    F_DBL("floor_lambda", ap_opd_config_t, floor_lambda), CYAML_FIELD_END};
static const cyaml_schema_field_t s_grpo[] = {
    S_COMMON(ap_grpo_config_t), S_PG(ap_grpo_config_t),
    F_ENUM("scale_rewards", ap_grpo_config_t, scale_rewards, s_scales),
    F_DBL("kl_ref", ap_grpo_config_t, kl_ref),
    F_BOOL("dynamic_sampling", ap_grpo_config_t, dynamic_sampling), CYAML_FIELD_END};
static const cyaml_schema_field_t s_opsd[] = {
    S_COMMON(ap_opsd_config_t), F_DBL("beta", ap_opsd_config_t, beta),
    F_DBL("tau", ap_opsd_config_t, tau), F_ENUM("support", ap_opsd_config_t, support, s_supports),
    F_DBL("clip_token_kl", ap_opsd_config_t, clip_token_kl), CYAML_FIELD_END};
static const cyaml_schema_field_t s_srpo[] = {
    S_COMMON(ap_srpo_config_t), S_PG(ap_srpo_config_t),
    F_ENUM("scale_rewards", ap_srpo_config_t, scale_rewards, s_scales),
    F_DBL("beta_H", ap_srpo_config_t, beta_H),
    F_ENUM("support", ap_srpo_config_t, support, s_supports), CYAML_FIELD_END};
static const cyaml_schema_field_t s_objective[] = {
    F_MAP("gkd", ap_obj_config_t, gkd, s_gkd),    F_MAP("opd", ap_obj_config_t, opd, s_opd),
    F_MAP("grpo", ap_obj_config_t, grpo, s_grpo), F_MAP("opsd", ap_obj_config_t, opsd, s_opsd),
    F_MAP("srpo", ap_obj_config_t, srpo, s_srpo),
    F_BOOL("monitors", ap_obj_config_t, monitors), CYAML_FIELD_END};

static const cyaml_strval_t s_trunc_modes[] = {
    {"mask", AP_TRUNC_MASK}, {"keep", AP_TRUNC_KEEP}, {"penalize", AP_TRUNC_PENALIZE}};
static const cyaml_schema_value_t s_token_text = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};
static const cyaml_schema_field_t s_stabilizers[] = {
    F_ENUM("truncated", ap_stabilizers_cfg_t, masks.truncated, s_trunc_modes),
    F_INT("overlong_buffer", ap_stabilizers_cfg_t, masks.overlong_buffer),
    F_DBL("max_truncation_rate", ap_stabilizers_cfg_t, masks.max_truncation_rate),
    F_DBL("max_repetition", ap_stabilizers_cfg_t, masks.max_repetition),
    F_INT("rep_n", ap_stabilizers_cfg_t, masks.rep_n),
    CYAML_FIELD_SEQUENCE("mask_tokens", CYAML_FLAG_POINTER | OPT, ap_stabilizers_cfg_t,
                         mask_tokens, &s_token_text, 0, AP_MASKS_MAX_SPECIAL),
    CYAML_FIELD_END};

static const cyaml_schema_field_t s_top[] = {
    F_MAP("run", ap_config_t, run, s_run),
    F_MAP("model", ap_config_t, model, s_model),
    F_MAP("task", ap_config_t, task, s_task),
    F_MAP("sampling", ap_config_t, sampling, s_sampling),
    F_MAP("batch", ap_config_t, batch, s_batch),
    F_MAP("objective", ap_config_t, objective, s_objective),
    F_MAP("stabilizers", ap_config_t, stabilizers, s_stabilizers),
    F_MAP("optimizer", ap_config_t, optimizer, s_optimizer),
    F_MAP("learner", ap_config_t, learner, s_learner),
    F_MAP("buffer", ap_config_t, buffer, s_buffer),
    F_MAP("teacher", ap_config_t, teacher, s_teacher),
    F_MAP("actors", ap_config_t, actors, s_actors),
    F_MAP("endpoints", ap_config_t, endpoints, s_endpoints),
    F_MAP("security", ap_config_t, security, s_security),
    F_MAP("launcher", ap_config_t, launcher, s_launcher),
    F_MAP("sft", ap_config_t, sft, s_sft),
    CYAML_FIELD_END};

static const cyaml_schema_value_t s_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, ap_config_t, s_top)};

const cyaml_schema_field_t *ap_config_fields(void) { return s_top; }
const cyaml_schema_value_t *ap_config_schema(void) { return &s_schema; }

void ap_config_defaults(ap_config_t *c) {
    c->run = (ap_run_cfg_t){.name = ap_strdup("run"), .dir = ap_strdup("runs"), .seed = 1,
                            .max_steps = 100, .max_minutes = 0, .sync = false};
    c->model = (ap_models_cfg_t){.student = ap_strdup(""), .teacher = ap_strdup(""),
                                 .blas_threads = 1};
    c->sampling = (ap_sampling_cfg_t){.temperature = 1.0, .top_k = 0, .top_p = 1.0,
                                      .max_new_tokens = 16, .group_size = 8};
    c->batch = (ap_batch_cfg_t){.size = 32, .on_policy_fraction = 1.0, .micro_batch = 0};
    /* the task module's defaults point at static text: the config owns heap copies */
    ap_task_config_defaults(&c->task);
    char **task_strings[] = {&c->task.kind, &c->task.alphabet, &c->task.dataset,
                             &c->task.heldout_dataset, &c->task.on_bad_line, &c->task.verifier,
                             &c->task.prompt_template, &c->task.completion_template,
                             &c->task.privileged_template};
    for (size_t i = 0; i < AP_COUNT(task_strings); i++)
        *task_strings[i] = ap_strdup(*task_strings[i] ? *task_strings[i] : "");
    ap_obj_config_defaults(&c->objective);
    ap_masks_defaults(&c->stabilizers.masks);
    c->optimizer = (ap_optimizer_cfg_t){.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                        .weight_decay = 0.0, .grad_clip = 1.0, .warmup_steps = 0,
                                        .schedule = AP_SCHEDULE_COSINE, .min_lr_ratio = 0.1};
    c->learner = (ap_learner_cfg_t){.sync_every = 1, .checkpoint_every = 50,
                                    .keep_checkpoints = 3, .rollouts_every = 10,
                                    .rollouts_per_step = 4, .prefetch = 2,
                                    .max_skips_in_a_row = 200};
    c->buffer = (ap_buffer_cfg_t){.max_staleness = 4, .max_reuse = 1,
                                  .reuse_order = AP_REUSE_NEWEST, .capacity_groups = 256,
                                  .actor_credit = 16, .teacher_credit = 16,
                                  .teacher_timeout_ms = 10000, .max_retries = 3,
                                  .heartbeat_ms = 1000};
    c->teacher = (ap_teacher_cfg_t){.external = 1, .self = 1, .reference = 1, .top_k = 32,
                                    .full_vocab_max = 1024, .self_weights = AP_SELF_INITIAL,
                                    .max_batch_tokens = 4096};
    c->actors = (ap_actors_cfg_t){.count = 2, .dataset_actors = 1,
                                  .dataset_source = AP_DATASET_GOLD, .eval = true,
                                  .eval_every = 10, .eval_size = 200, .pass_k = 4};
    c->endpoints = (ap_endpoints_cfg_t){.buffer_actors = ap_strdup(""),
                                        .buffer_teachers = ap_strdup(""),
                                        .buffer_learner = ap_strdup(""),
                                        .weights = ap_strdup(""), .weights_pub = ap_strdup("")};
    c->security = (ap_security_cfg_t){.curve = false, .keys_dir = ap_strdup("keys")};
    c->launcher = (ap_launcher_cfg_t){.max_restarts = 5, .restart_window_s = 60,
                                      .backoff_s = 0.5, .shutdown_timeout_s = 15,
                                      .progress = true};
    c->sft = (ap_sft_cfg_t){.out = ap_strdup(""), .init = ap_strdup(""),
                            .data = AP_SFT_DATA_TASK, .teacher = ap_strdup(""), .steps = 2000,
                            .batch = 64, .privileged_fraction = 0.0, .eval_every = 500,
                            .checkpoint_every = 500, .keep_checkpoints = 2,
                            .vocab = ap_strdup(""), .hidden_size = 128,
                            .intermediate_size = 384, .num_layers = 4, .num_heads = 4,
                            .num_kv_heads = 4, .max_positions = 64, .tie_embeddings = true};
}

/* Range checks: each names the dotted key. */
#define S_REQUIRE(cond, key, ...)                                                                  \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char why_[256];                                                                        \
            snprintf(why_, sizeof why_, __VA_ARGS__);                                              \
            return ap_err("%s: %s: %s", origin, key, why_);                                        \
        }                                                                                          \
    } while (0)

int ap_config_validate(const ap_config_t *c, const char *origin) {
    S_REQUIRE(c->run.name[0] && !strchr(c->run.name, '/'), "run.name",
              "must be a non-empty name without '/'");
    S_REQUIRE(c->run.max_steps > 0, "run.max_steps", "must be positive (got %d)",
              c->run.max_steps);
    S_REQUIRE(c->run.max_minutes >= 0, "run.max_minutes", "must not be negative");
    S_REQUIRE(c->model.blas_threads >= 1 && c->model.blas_threads <= 64, "model.blas_threads",
              "must be in 1..64");
    S_REQUIRE(c->sampling.temperature > 0, "sampling.temperature",
              "must be positive (use top_k: 1 for greedy)");
    S_REQUIRE(c->sampling.top_k >= 0, "sampling.top_k", "must not be negative");
    S_REQUIRE(c->sampling.top_p > 0 && c->sampling.top_p <= 1, "sampling.top_p",
              "must be in (0, 1]");
    S_REQUIRE(c->sampling.max_new_tokens > 0, "sampling.max_new_tokens", "must be positive");
    S_REQUIRE(c->sampling.group_size > 0, "sampling.group_size", "must be positive");
    S_REQUIRE(c->batch.size > 0, "batch.size", "must be positive");
    S_REQUIRE(c->batch.on_policy_fraction >= 0 && c->batch.on_policy_fraction <= 1,
              "batch.on_policy_fraction", "must be in [0, 1]");
    S_REQUIRE(c->batch.on_policy_fraction == 0 || c->batch.size >= c->sampling.group_size,
              "batch.size", "must hold at least one group of sampling.group_size = %d",
              c->sampling.group_size);
    S_REQUIRE(c->batch.micro_batch >= 0, "batch.micro_batch", "must not be negative");
    if (ap_task_config_validate(&c->task) < 0) return ap_err("%s: %s", origin, ap_errmsg());
    if (c->objective.gkd.c.enabled || c->objective.opd.c.enabled || c->objective.grpo.c.enabled ||
        c->objective.opsd.c.enabled || c->objective.srpo.c.enabled) {
        ap_obj_config_t oc = c->objective;
        oc.sampling_tau = c->sampling.temperature;
        oc.full_vocab_max = c->teacher.full_vocab_max;
        if (ap_obj_config_validate(&oc) < 0) return ap_err("%s: objective: %s", origin, ap_errmsg());
    }
    {
        ap_masks_config_t mc = c->stabilizers.masks;
        mc.max_new_tokens = c->sampling.max_new_tokens;
        if (ap_masks_validate(&mc) < 0)
            return ap_err("%s: stabilizers: %s", origin, ap_errmsg());
        S_REQUIRE(mc.truncated != AP_TRUNC_PENALIZE ||
                      mc.overlong_buffer < c->sampling.max_new_tokens,
                  "stabilizers.overlong_buffer", "must be below sampling.max_new_tokens");
    }
    S_REQUIRE(c->optimizer.lr > 0, "optimizer.lr", "must be positive");
    S_REQUIRE(c->optimizer.beta1 >= 0 && c->optimizer.beta1 < 1, "optimizer.beta1",
              "must be in [0, 1)");
    S_REQUIRE(c->optimizer.beta2 >= 0 && c->optimizer.beta2 < 1, "optimizer.beta2",
              "must be in [0, 1)");
    S_REQUIRE(c->optimizer.eps > 0, "optimizer.eps", "must be positive");
    S_REQUIRE(c->optimizer.weight_decay >= 0, "optimizer.weight_decay", "must not be negative");
    S_REQUIRE(c->optimizer.grad_clip >= 0, "optimizer.grad_clip", "must not be negative");
    S_REQUIRE(c->optimizer.warmup_steps >= 0, "optimizer.warmup_steps", "must not be negative");
    S_REQUIRE(c->optimizer.min_lr_ratio >= 0 && c->optimizer.min_lr_ratio <= 1,
              "optimizer.min_lr_ratio", "must be in [0, 1]");
    S_REQUIRE(c->learner.sync_every >= 1, "learner.sync_every", "must be at least 1");
    S_REQUIRE(c->learner.checkpoint_every >= 0, "learner.checkpoint_every",
              "must not be negative (0 = only at the end)");
    S_REQUIRE(c->learner.keep_checkpoints >= 0, "learner.keep_checkpoints",
              "must not be negative");
    S_REQUIRE(c->learner.rollouts_every >= 0, "learner.rollouts_every", "must not be negative");
    S_REQUIRE(c->learner.rollouts_per_step >= 0, "learner.rollouts_per_step",
              "must not be negative");
    S_REQUIRE(c->learner.prefetch >= 1 && c->learner.prefetch <= 16, "learner.prefetch",
              "must be in 1..16");
    S_REQUIRE(c->learner.max_skips_in_a_row >= 0, "learner.max_skips_in_a_row",
              "must not be negative (0 = never stop)");
    S_REQUIRE(c->buffer.max_staleness >= 0, "buffer.max_staleness", "must not be negative");
    S_REQUIRE(c->buffer.max_reuse >= 1, "buffer.max_reuse", "must be at least 1");
    S_REQUIRE(c->buffer.capacity_groups >= 1, "buffer.capacity_groups", "must be positive");
    S_REQUIRE(c->buffer.actor_credit >= 1, "buffer.actor_credit", "must be positive");
    S_REQUIRE(c->buffer.teacher_credit >= 1, "buffer.teacher_credit", "must be positive");
    S_REQUIRE(c->buffer.teacher_timeout_ms >= 10, "buffer.teacher_timeout_ms",
              "must be at least 10");
    S_REQUIRE(c->buffer.max_retries >= 0, "buffer.max_retries", "must not be negative");
    S_REQUIRE(c->buffer.heartbeat_ms >= 10, "buffer.heartbeat_ms", "must be at least 10");
    S_REQUIRE(c->teacher.external >= 0 && c->teacher.self >= 0 && c->teacher.reference >= 0,
              "teacher", "worker counts must not be negative");
    S_REQUIRE(c->teacher.top_k >= 1, "teacher.top_k", "must be positive");
    S_REQUIRE(c->teacher.full_vocab_max >= 0, "teacher.full_vocab_max", "must not be negative");
    S_REQUIRE(c->teacher.max_batch_tokens >= 1, "teacher.max_batch_tokens", "must be positive");
    S_REQUIRE(c->actors.count >= 0, "actors.count", "must not be negative");
    S_REQUIRE(c->actors.dataset_actors >= 0, "actors.dataset_actors", "must not be negative");
    S_REQUIRE(c->actors.eval_every >= 1, "actors.eval_every", "must be at least 1");
    S_REQUIRE(c->actors.eval_size >= 1, "actors.eval_size", "must be positive");
    S_REQUIRE(c->actors.pass_k >= 1, "actors.pass_k", "must be positive");
    S_REQUIRE(c->launcher.max_restarts >= 0, "launcher.max_restarts", "must not be negative");
    S_REQUIRE(c->launcher.restart_window_s > 0, "launcher.restart_window_s", "must be positive");
    S_REQUIRE(c->launcher.backoff_s >= 0, "launcher.backoff_s", "must not be negative");
    S_REQUIRE(c->launcher.shutdown_timeout_s > 0, "launcher.shutdown_timeout_s",
              "must be positive");
    S_REQUIRE(c->sft.steps >= 0, "sft.steps", "must not be negative");
    S_REQUIRE(c->sft.batch >= 1, "sft.batch", "must be positive");
    S_REQUIRE(c->sft.privileged_fraction >= 0 && c->sft.privileged_fraction <= 1,
              "sft.privileged_fraction", "must be in [0, 1]");
    S_REQUIRE(c->sft.eval_every >= 0, "sft.eval_every", "must not be negative");
    S_REQUIRE(c->sft.checkpoint_every >= 0, "sft.checkpoint_every", "must not be negative");
    S_REQUIRE(c->sft.keep_checkpoints >= 0, "sft.keep_checkpoints", "must not be negative");
    S_REQUIRE(c->sft.data != AP_SFT_DATA_TEACHER || c->sft.teacher[0], "sft.teacher",
              "is required with sft.data: teacher_samples");
    return 0;
}
