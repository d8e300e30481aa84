/* actor.c: the actor role (include/apprentice/actor.h): student groups, dataset groups, the
 * evaluator, the simulated actor; weights swaps, the state file, metrics, and the run loops.
 *
 * A student group: one prompt from this actor's shard, G copies of it through ap_generate (the
 * identical prompts are prefilled once; an actor holding credit for several groups samples up to
 * S_PASS_SEQS / G of them in the same pass), each completion decoded up to <eos> and verified, each
 * trajectory's privileged context rendered with the whole group's rollouts (so {sibling} sees the
 * correct ones), all packed into one ap_group_t (columnar arrays, traj.h). Contexts longer than
 * the model can score together with the completion are dropped (h = 0, counted).
 *
 * Time accounting: `busy` is making groups (and evaluating); `idle` is waiting for credit,
 * for weights or for a new version; metrics report both per interval. */
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/actor_link.h"
#include "apprentice/actor.h"
#include "apprentice/base.h"
#include "apprentice/eval.h"
#include "apprentice/learner.h"
#include "apprentice/rundir.h"
#include "apprentice/sampler.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

#define S_STATE_INTERVAL 5.0 /* seconds between state-file writes */
#define S_RNG_STREAM 0xac7000
/* Sequences sampled together: an actor holding credit for several groups samples up to
 * S_PASS_SEQS / G of them in one ap_generate pass (distinct prompts, G completions each), so a
 * group of one trajectory is not a batch of one. */
#define S_PASS_SEQS 32

static const char *s_mode_names[3] = {"student", "dataset", "eval"};

const char *ap_actor_mode_name(ap_actor_mode_t m) {
    return (unsigned)m < 3 ? s_mode_names[m] : "?";
}

int ap_actor_mode_parse(const char *name, ap_actor_mode_t *m) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, s_mode_names[i])) return *m = (ap_actor_mode_t)i, 0;
    return ap_err("--mode %s: expected student, dataset or eval", name);
}

/* Totals of one metrics interval. */
typedef struct {
    double t0, busy, idle;
    long groups, traj, tokens, correct, ctx, truncated;
    double reward;
} s_window_t;

struct ap_actor {
    const ap_config_t *cfg;
    char *dir;
    char name[AP_NAME_MAX];
    const char *role; /* metrics role: "actor", "dataset", "eval" */
    ap_actor_mode_t mode;
    int id, simulate, teacher_source;
    ap_net_t *net;
    ap_metrics_t *metrics, *own_metrics;
    double metrics_interval;

    ap_task_t *task;
    ap_task_sampler_t *sampler;
    ap_tokenizer_t *tok;
    ap_model_t *model; /* the student (student, eval) or the teacher (dataset teacher) */
    ap_kv_t *kv;
    ap_eval_t *eval;
    uint64_t table_hash;
    int max_positions; /* the student's: what the learner and self-teacher can score */
    int G;
    int k_max; /* groups sampled together in one pass: S_PASS_SEQS / G, at least 1 */
    ap_sampling_t sp;
    ap_rng_t rng;

    uint32_t seq;      /* groups made in this life */
    uint32_t restarts; /* lives before this one (state file) */
    ap_actor_stats_t st;
    s_window_t win;
    double last_state;

    ap_actor_link_t *link;
    ap_wclient_t *wc;
    atomic_int stop;
    const volatile sig_atomic_t *stop_flag;
    ap_ratelimit_t rl;
};

/* ---- state file ---------------------------------------------------------------------------- */

static char *s_state_path(const ap_actor_t *a) {
    return ap_sprintf("%s/state/%s.json", a->dir, a->name);
}

static int s_state_save(ap_actor_t *a) {
    if (!a->dir || !a->sampler) return 0;
    ap_task_cursor_t c;
    ap_task_sampler_cursor(a->sampler, &c);
    char *cur = ap_task_cursor_to_json(&c);
    char *text =
        ap_sprintf("{\"cursor\": %s, \"seq\": %u, \"restarts\": %u}\n", cur, a->seq, a->restarts);
    char *sd = ap_rundir_path(a->dir, "state"), *path = s_state_path(a);
    int rc = ap_mkdirs(sd) == 0 ? ap_file_write_atomic(path, text, strlen(text)) : -1;
    free(cur), free(text), free(sd), free(path);
    a->last_state = ap_now();
    return rc;
}

/* Continue the stream of an earlier life; a state that does not fit (other task, shard) is
 * ignored with a warning. */
static void s_state_load(ap_actor_t *a) {
    if (!a->dir || !a->sampler) return;
    char *path = s_state_path(a), *text = NULL;
    if (ap_file_read(path, &text, NULL) < 0) {
        free(path);
        return;
    }
    json_error_t je;
    json_t *root = json_loads(text, 0, &je), *cur = root ? json_object_get(root, "cursor") : NULL;
    int ok = 0;
    if (cur) {
        char *ct = json_dumps(cur, JSON_COMPACT);
        ap_task_cursor_t c;
        ok = ap_task_cursor_from_json(ct, path, &c) == 0 &&
             ap_task_sampler_restore(a->sampler, &c) == 0;
        free(ct);
    }
    if (ok) {
        a->restarts = (uint32_t)json_integer_value(json_object_get(root, "restarts")) + 1;
        ap_log(AP_LOG_INFO, "%s: continuing the prompt stream of %s (life %u)", a->name, path,
               a->restarts + 1);
    } else {
        ap_log(AP_LOG_WARN, "%s: ignoring %s: %s", a->name, path,
               cur ? ap_errmsg() : "not a state file");
    }
    json_decref(root);
    free(text);
    free(path);
}

/* ---- construction -------------------------------------------------------------------------- */

/* Shards: student actors 0..S-1, dataset actors S..S+D-1, as the launcher starts them. */
static void s_shard(const ap_config_t *c, ap_actor_mode_t mode, int id, int *shard, int *count) {
    int groups = (int)floor(c->batch.on_policy_fraction * c->batch.size / c->sampling.group_size);
    int students = groups > 0 ? AP_MAX(c->actors.count, 1) : 0;
    int datasets =
        groups * c->sampling.group_size < c->batch.size ? AP_MAX(c->actors.dataset_actors, 1) : 0;
    if (mode == AP_ACTOR_STUDENT) {
        students = AP_MAX(students, id + 1);
        *shard = id;
    } else {
        datasets = AP_MAX(datasets, id + 1);
        *shard = students + id;
    }
    *count = students + datasets;
}

static int s_same_config(const ap_model_config_t *a, const ap_model_config_t *b) {
    return a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_layers == b->num_layers &&
           a->num_heads == b->num_heads && a->num_kv_heads == b->num_kv_heads &&
           a->max_positions == b->max_positions && a->tie_embeddings == b->tie_embeddings &&
           a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta;
}

/* The vocabulary: model.student's (a simulated actor without one builds the task's). */
static ap_tokenizer_t *s_vocab(ap_actor_t *a) {
    const char *st = a->cfg->model.student;
    if (st && st[0]) {
        ap_tokenizer_t *t = ap_tokenizer_load_dir(st);
        if (!t) ap_err("%s: model.student %s: %s", a->name, st, ap_errmsg());
        return t;
    }
    if (a->simulate) return ap_task_build_tokenizer(a->task);
    ap_err("%s: model.student is required (its vocabulary and network)", a->name);
    return NULL;
}

ap_actor_t *ap_actor_new(const ap_actor_opts_t *o) {
    const ap_config_t *cfg = o->cfg;
    AP_ASSERT(cfg && (unsigned)o->mode <= AP_ACTOR_EVAL && o->id >= 0);
    ap_actor_t *a = ap_calloc(1, sizeof *a);
    a->cfg = cfg;
    a->dir = o->run_dir ? ap_strdup(o->run_dir) : NULL;
    a->mode = o->mode;
    a->id = o->id;
    a->simulate = o->simulate;
    a->net = o->net;
    a->role = o->mode == AP_ACTOR_STUDENT ? "actor" : s_mode_names[o->mode];
    snprintf(a->name, sizeof a->name, "%s-%d", a->role, o->id);
    a->metrics = o->metrics;
    if (!a->metrics) a->metrics = a->own_metrics = ap_metrics_open(NULL, a->role, o->id);
    a->metrics_interval = o->metrics_interval > 0 ? o->metrics_interval : 1.0;
    a->teacher_source =
        o->mode == AP_ACTOR_DATASET && cfg->actors.dataset_source == AP_DATASET_TEACHER;
    atomic_init(&a->stop, 0);
    ap_rng_seed(&a->rng, (uint64_t)cfg->run.seed,
                S_RNG_STREAM + (uint64_t)o->mode * 4096 + (uint64_t)o->id);
    ap_sampling_defaults(&a->sp);
    a->sp.temperature = (float)cfg->sampling.temperature;
    a->sp.top_k = cfg->sampling.top_k;
    a->sp.top_p = (float)cfg->sampling.top_p;
    a->G = o->mode == AP_ACTOR_DATASET && !a->teacher_source ? 1 : cfg->sampling.group_size;
    a->k_max = AP_MAX(1, S_PASS_SEQS / a->G); /* <= S_PASS_SEQS */

    if (!(a->task = ap_task_new(&cfg->task))) goto fail;
    if (!(a->tok = s_vocab(a))) goto fail;
    if (ap_task_check_tokenizer(a->task, a->tok, "model.student") < 0) goto fail;
    const int V = ap_tokenizer_vocab_size(a->tok);
    a->max_positions = 1 << 30;
    if (!a->simulate && o->mode != AP_ACTOR_DATASET) {
        if (!(a->model = ap_model_load(cfg->model.student))) goto fail;
    } else if (cfg->model.student[0]) { /* the student's limit for dataset / simulated groups */
        ap_model_config_t sc;
        char *p = ap_sprintf("%s/config.json", cfg->model.student);
        int rc = ap_model_config_load(p, &sc);
        free(p);
        if (rc < 0) goto fail;
        a->max_positions = sc.max_positions;
    }
    if (a->model) a->max_positions = ap_model_config(a->model)->max_positions;
    if (a->teacher_source && !a->simulate) { /* the teacher writes the completions */
        if (!cfg->model.teacher[0]) {
            ap_err("%s: actors.dataset_source: teacher needs model.teacher", a->name);
            goto fail;
        }
        ap_tokenizer_t *tt = ap_tokenizer_load_dir(cfg->model.teacher);
        int same = tt && ap_tokenizer_check_same(a->tok, "student", tt, "teacher") == 0;
        ap_tokenizer_destroy(&tt);
        if (!same || !(a->model = ap_model_load(cfg->model.teacher))) goto fail;
    }
    if (a->model) {
        const ap_model_config_t *mc = ap_model_config(a->model);
        if (mc->vocab_size != V) {
            ap_err("%s: the model has %d token ids but the vocabulary %d", a->name, mc->vocab_size,
                   V);
            goto fail;
        }
        a->table_hash = ap_learner_table_hash(a->model);
        if (o->mode != AP_ACTOR_EVAL &&
            !(a->kv = ap_kv_new(a->model, a->G * a->k_max,
                                AP_MIN(mc->max_positions, a->max_positions))))
            goto fail;
    }
    if (o->mode == AP_ACTOR_EVAL) {
        if (!a->simulate) {
            ap_eval_opts_t eo;
            ap_eval_defaults(&eo);
            eo.limit = cfg->actors.eval_size;
            eo.max_new_tokens = cfg->sampling.max_new_tokens;
            eo.pass_k = cfg->actors.pass_k;
            eo.samples = cfg->actors.pass_k;
            eo.sampling = a->sp;
            eo.seed = (uint64_t)cfg->run.seed;
            if (!(a->eval = ap_eval_new(a->task, a->tok, &eo))) {
                ap_err("%s: %s", a->name, ap_errmsg());
                goto fail;
            }
        }
    } else {
        int shard, count;
        s_shard(cfg, o->mode, o->id, &shard, &count);
        a->sampler = ap_task_sampler_new(a->task, shard, count);
        s_state_load(a);
    }
    ap_log(AP_LOG_INFO, "%s: mode %s%s%s, G %d, vocabulary V %d%s", a->name, s_mode_names[o->mode],
           a->simulate ? " (simulated)" : "", a->teacher_source ? ", teacher-written" : "", a->G, V,
           a->model ? "" : ", no model");
    return a;
fail:
    ap_err("%s: %s", a->name, ap_errmsg());
    ap_actor_destroy(&a);
    return NULL;
}

void ap_actor_destroy(ap_actor_t **ap) {
    if (!ap || !*ap) return;
    ap_actor_t *a = *ap;
    ap_actor_link_destroy(&a->link);
    ap_wclient_destroy(&a->wc);
    ap_eval_destroy(&a->eval);
    ap_kv_destroy(&a->kv);
    ap_model_destroy(&a->model);
    ap_task_sampler_destroy(&a->sampler);
    ap_tokenizer_destroy(&a->tok);
    ap_task_destroy(&a->task);
    ap_metrics_close(&a->own_metrics);
    free(a->dir);
    free(a);
    *ap = NULL;
}

ap_version_t ap_actor_version(const ap_actor_t *a) {
    return a->st.version;
}
const char *ap_actor_name(const ap_actor_t *a) {
    return a->name;
}
void ap_actor_stats(const ap_actor_t *a, ap_actor_stats_t *out) {
    *out = a->st;
}
void ap_actor_stop(ap_actor_t *a) {
    atomic_store(&a->stop, 1);
}
void ap_actor_set_stop_flag(ap_actor_t *a, const volatile sig_atomic_t *flag) {
    a->stop_flag = flag;
}
static int s_stopping(const ap_actor_t *a) {
    return atomic_load(&((ap_actor_t *)a)->stop) || (a->stop_flag && *a->stop_flag);
}

int ap_actor_set_weights(ap_actor_t *a, const ap_weights_t *w) {
    if (!a->model || a->teacher_source) return ap_err("%s: no student model to update", a->name);
    const ap_model_config_t *mc = ap_model_config(a->model);
    const char *why = !s_same_config(&w->config, mc)                    ? "another network"
                      : w->table_hash && w->table_hash != a->table_hash ? "another tensor table"
                                                                        : NULL;
    if (why || ap_model_set_blob(a->model, w->params, w->params_bytes) < 0) {
        a->st.weights_refused++;
        return ap_err("%s: version (%u, %llu) refused: %s", a->name, w->version.gen,
                      (unsigned long long)w->version.step, why ? why : ap_errmsg());
    }
    a->st.version = w->version;
    a->st.weight_swaps++;
    if (a->link) ap_actor_link_set_version(a->link, w->version);
    return 0;
}

/* ---- groups ------------------------------------------------------------------------------- */

static uint64_t s_group_id(ap_actor_t *a) {
    uint64_t id = (uint64_t)a->id << 40 | (uint64_t)(a->restarts & 0x7f) << 32 | a->seq++;
    if (a->mode == AP_ACTOR_DATASET) id |= 1ull << 39;
    return id;
}

/* Completions of S sequences (prompts[i], lens[i]): from the model in one batched KV-cached
 * pass, or random (simulate). out [S]; tokens/logprobs point into `kv` or into `scratch` /
 * `lscratch` ([S * room]). */
static int s_complete(ap_actor_t *a, const int32_t *const *prompts, const int *lens, int S,
                      ap_completion_t *out, int32_t *scratch, float *lscratch, int room) {
    const int max_new = a->cfg->sampling.max_new_tokens;
    if (!a->simulate)
        return ap_generate(a->kv, out, prompts, lens, S, max_new, ap_tokenizer_eos(a->tok), &a->sp,
                           &a->rng);
    const int V = ap_tokenizer_vocab_size(a->tok);
    const int32_t eos = ap_tokenizer_eos(a->tok);
    for (int i = 0; i < S; i++) {
        int r = AP_MAX(1, AP_MIN(room, a->max_positions - lens[i]));
        int32_t *y = scratch + (size_t)i * room;
        float *lp = lscratch + (size_t)i * room;
        int n = 1 + (int)ap_rng_below(&a->rng, (uint64_t)r);
        int trunc = n == r && ap_rng_below(&a->rng, 2);
        for (int t = 0; t < n; t++) {
            y[t] = 3 + (int32_t)ap_rng_below(&a->rng, (uint64_t)AP_MAX(V - 3, 1));
            if (y[t] >= V) y[t] = V - 1;
            lp[t] = -(float)(0.01 + 5 * ap_rng_uniform(&a->rng));
        }
        if (!trunc) y[n - 1] = eos;
        out[i] = (ap_completion_t){.tokens = y,
                                   .logprobs = lp,
                                   .n = n,
                                   .finish = trunc ? AP_FINISH_LENGTH : AP_FINISH_EOS};
    }
    return 0;
}

/* The next training prompt of this actor's shard that fits the model: 0 with *ex filled and
 * *prompt (caller frees) of *np tokens, or -1 (ap_err). */
static int s_draw_prompt(ap_actor_t *a, ap_example_t *ex, int32_t **prompt, int *np) {
    const int limit = AP_MIN(a->max_positions, a->kv ? ap_kv_max_len(a->kv) : a->max_positions);
    for (int tries = 0; tries < 100; tries++) {
        ap_example_clear(ex);
        ap_task_sampler_next(a->sampler, ex);
        if (!(*prompt = ap_task_encode_prompt(a->task, a->tok, ex, np))) {
            ap_example_clear(ex);
            return -1; /* a character outside the vocabulary: checked at start-up, a bug */
        }
        if (*np + 1 <= limit) return 0;
        a->st.prompts_skipped++;
        free(*prompt);
        *prompt = NULL;
    }
    ap_example_clear(ex);
    return ap_err("%s: 100 prompts in a row are too long for the model", a->name);
}

/* One group from example `ex`, its prompt, and its G completions `out`: verdicts, privileged
 * contexts (h), version and ids. NULL with ap_err on failure. */
static ap_group_t *s_build_group(ap_actor_t *a, const ap_example_t *ex, int64_t item,
                                 const int32_t *prompt, int np, const ap_completion_t *out) {
    const int G = a->G, on = a->mode == AP_ACTOR_STUDENT;
    char **text = ap_calloc((size_t)G, sizeof *text);
    ap_verdict_t *vd = ap_malloc((size_t)G * sizeof *vd);
    ap_task_rollout_t *ro = ap_malloc((size_t)G * sizeof *ro);
    int32_t **ctx = ap_calloc((size_t)G, sizeof *ctx);
    int *ctx_len = ap_calloc((size_t)G, sizeof *ctx_len), *len = ap_malloc((size_t)G * sizeof *len);
    ap_group_t *g = NULL;
    for (int i = 0; i < G; i++) {
        if (!(text[i] = ap_tokenizer_decode(a->tok, out[i].tokens, out[i].n, AP_TOK_STOP_EOS)))
            goto done;
        ap_task_verify(a->task, ex, text[i], &vd[i]);
        ro[i] = (ap_task_rollout_t){text[i], vd[i].correct, vd[i].feedback};
        len[i] = out[i].n;
    }
    for (int i = 0; on && i < G; i++) {
        int h = ap_task_encode_privileged(a->task, a->tok, ex, ro, G, i, &ctx[i], &ctx_len[i]);
        if (h < 0) goto done;
        if (h &&
            ctx_len[i] + len[i] - 1 > a->max_positions) { /* the self-teacher cannot score it */
            free(ctx[i]);
            ctx[i] = NULL, ctx_len[i] = 0;
            a->st.contexts_too_long++;
        }
    }
    g = ap_group_new(G, np, len, ctx_len);
    g->id = s_group_id(a);
    g->source = on ? AP_SOURCE_ON_POLICY : AP_SOURCE_DATASET;
    g->version = on ? a->st.version : (ap_version_t){0, 0};
    g->actor_id = a->id;
    g->temperature = a->sp.temperature;
    g->item_id = item;
    char *ptext = ap_task_render_prompt(a->task, ex);
    ap_group_set_prompt_text(g, ptext);
    free(ptext);
    memcpy(g->prompt, prompt, (size_t)np * sizeof *prompt);
    for (int i = 0; i < G; i++) {
        memcpy(g->tokens + g->offset[i], out[i].tokens, (size_t)len[i] * sizeof(int32_t));
        if (on) memcpy(g->logprobs + g->offset[i], out[i].logprobs, (size_t)len[i] * sizeof(float));
        g->reward[i] = on ? (float)vd[i].reward : 0.0f;
        g->correct[i] = (uint8_t)vd[i].correct;
        g->finish[i] = (uint8_t)out[i].finish;
        ap_group_set_feedback(g, i, vd[i].feedback);
        if (ctx_len[i])
            memcpy(g->ctx_tokens + g->ctx_offset[i], ctx[i], (size_t)ctx_len[i] * sizeof(int32_t));
    }
done:
    for (int i = 0; i < G; i++)
        free(text[i]), free(ctx[i]);
    free(text), free(vd), free(ro), free(ctx), free(ctx_len), free(len);
    return g;
}

/* k groups of G sampled completions (k distinct prompts) in one batched pass: k * G sequences
 * through ap_generate, so that small groups still keep the GEMMs fed (a group of one is a
 * batch of one otherwise). groups[k] receives them. 0, or -1 with ap_err (none made). */
static int s_student_groups(ap_actor_t *a, int k, ap_group_t **groups) {
    const int G = a->G, S = k * G;
    AP_ASSERT(k >= 1 && (!a->kv || S <= ap_kv_max_seqs(a->kv)));
    ap_example_t *ex = ap_calloc((size_t)k, sizeof *ex);
    int32_t **prompt = ap_calloc((size_t)k, sizeof *prompt);
    int *np = ap_calloc((size_t)k, sizeof *np), *lens = ap_malloc((size_t)S * sizeof *lens);
    int64_t *item = ap_malloc((size_t)k * sizeof *item);
    const int32_t **pp = ap_malloc((size_t)S * sizeof *pp);
    ap_completion_t *out = ap_malloc((size_t)S * sizeof *out);
    const int room = AP_MAX(1, a->cfg->sampling.max_new_tokens);
    int32_t *scratch = a->simulate ? ap_malloc((size_t)S * room * sizeof *scratch) : NULL;
    float *lscratch = a->simulate ? ap_malloc((size_t)S * room * sizeof *lscratch) : NULL;
    int rc = -1, made = 0;
    for (int j = 0; j < k; j++) {
        if (s_draw_prompt(a, &ex[j], &prompt[j], &np[j]) < 0) goto done;
        ap_task_cursor_t c;
        ap_task_sampler_cursor(a->sampler, &c);
        item[j] = c.drawn - 1;
        for (int i = 0; i < G; i++)
            pp[j * G + i] = prompt[j], lens[j * G + i] = np[j];
    }
    if (s_complete(a, pp, lens, S, out, scratch, lscratch, room) < 0) {
        ap_err("%s: sampling: %s", a->name, ap_errmsg());
        goto done;
    }
    for (made = 0; made < k; made++)
        if (!(groups[made] =
                  s_build_group(a, &ex[made], item[made], prompt[made], np[made], out + made * G)))
            goto done;
    rc = 0;
done:
    if (rc < 0)
        for (int j = 0; j < made; j++)
            ap_group_destroy(&groups[j]);
    for (int j = 0; j < k; j++) {
        free(prompt[j]);
        ap_example_clear(&ex[j]);
    }
    free(ex), free(prompt), free(np), free(lens), free(item), free(pp), free(out), free(scratch);
    free(lscratch);
    return rc;
}

/* A gold completion: <bos> prompt | completion <eos> as the task renders it. */
static ap_group_t *s_gold_group(ap_actor_t *a) {
    for (int tries = 0; tries < 100; tries++) {
        ap_example_t ex = {0};
        ap_task_sampler_next(a->sampler, &ex);
        int n, np;
        int32_t *seq = ap_task_encode_example(a->task, a->tok, &ex, &n, &np);
        if (!seq) {
            ap_example_clear(&ex);
            return NULL;
        }
        if (n - 1 > a->max_positions || n - np < 1) {
            a->st.prompts_skipped++;
            free(seq);
            ap_example_clear(&ex);
            continue;
        }
        int len = n - np;
        ap_group_t *g = ap_group_new(1, np, &len, NULL);
        g->id = s_group_id(a);
        g->source = AP_SOURCE_DATASET;
        g->actor_id = a->id;
        g->temperature = 0;
        ap_task_cursor_t c;
        ap_task_sampler_cursor(a->sampler, &c);
        g->item_id = c.drawn - 1;
        char *ptext = ap_task_render_prompt(a->task, &ex);
        ap_group_set_prompt_text(g, ptext);
        free(ptext);
        memcpy(g->prompt, seq, (size_t)np * sizeof *seq);
        memcpy(g->tokens, seq + np, (size_t)len * sizeof *seq);
        g->correct[0] = 1;
        ap_group_set_feedback(g, 0, "gold");
        free(seq);
        ap_example_clear(&ex);
        return g;
    }
    ap_err("%s: 100 examples in a row are too long for the model", a->name);
    return NULL;
}

/* Up to k groups into groups[] (the same source as ap_actor_make_group), counted in the stats.
 * Returns how many were made (k), or -1 with ap_err. */
static int s_make_groups(ap_actor_t *a, int k, ap_group_t **groups) {
    if (a->mode == AP_ACTOR_EVAL) return ap_err("%s: an evaluator makes no groups", a->name);
    double t0 = ap_now();
    int made = 0;
    if (a->mode == AP_ACTOR_DATASET && !a->teacher_source) {
        for (; made < k; made++)
            if (!(groups[made] = s_gold_group(a))) break;
        if (made < k) {
            while (made > 0) ap_group_destroy(&groups[--made]);
            made = -1;
        }
    } else {
        k = AP_MIN(k, a->k_max);
        made = s_student_groups(a, k, groups) == 0 ? k : -1;
    }
    double dt = ap_now() - t0;
    a->st.busy_s += dt;
    a->win.busy += dt;
    for (int j = 0; j < made; j++) {
        const ap_group_t *g = groups[j];
        a->st.groups++;
        a->win.groups++;
        for (int i = 0; i < g->G; i++) {
            int len = g->offset[i + 1] - g->offset[i];
            a->st.trajectories++, a->win.traj++;
            a->st.tokens += len, a->win.tokens += len;
            a->st.correct += g->correct[i], a->win.correct += g->correct[i];
            a->st.with_context += ap_group_has_ctx(g, i), a->win.ctx += ap_group_has_ctx(g, i);
            a->win.truncated += g->finish[i] == AP_FINISH_LENGTH;
            a->win.reward += g->reward[i];
        }
    }
    return made;
}

ap_group_t *ap_actor_make_group(ap_actor_t *a) {
    ap_group_t *g = NULL;
    return s_make_groups(a, 1, &g) == 1 ? g : NULL;
}

/* ---- the loops ---------------------------------------------------------------------------- */

static void s_metrics(ap_actor_t *a, int force) {
    double now = ap_now(), wall = now - a->win.t0;
    if (!force && wall < a->metrics_interval) return;
    s_window_t *w = &a->win;
    ap_metrics_t *m = a->metrics;
    ap_metrics_begin(m, a->st.groups_sent);
    ap_metrics_add(m, "actor/tokens_per_s", wall > 0 ? w->tokens / wall : 0);
    if (w->busy > 0) ap_metrics_add(m, "actor/sample_tokens_per_s", w->tokens / w->busy);
    ap_metrics_add(m, "actor/idle_frac", wall > 0 ? AP_MIN(1.0, w->idle / wall) : 0);
    ap_metrics_add(m, "actor/busy_frac", wall > 0 ? AP_MIN(1.0, w->busy / wall) : 0);
    ap_metrics_add(m, "actor/groups_sent", a->st.groups_sent);
    ap_metrics_add(m, "actor/groups_per_s", wall > 0 ? w->groups / wall : 0);
    if (w->traj > 0) {
        if (a->mode == AP_ACTOR_STUDENT)
            ap_metrics_add(m, "actor/reward_mean", w->reward / w->traj);
        ap_metrics_add(m, "actor/accuracy", (double)w->correct / w->traj);
        ap_metrics_add(m, "actor/length_mean", (double)w->tokens / w->traj);
        ap_metrics_add(m, "actor/truncation_rate", (double)w->truncated / w->traj);
        if (a->mode == AP_ACTOR_STUDENT)
            ap_metrics_add(m, "actor/h_frac", (double)w->ctx / w->traj);
    }
    ap_metrics_add(m, "actor/version_gen", a->st.version.gen);
    ap_metrics_add(m, "actor/version_step", (double)a->st.version.step);
    ap_metrics_add(m, "actor/weight_swaps", a->st.weight_swaps);
    ap_metrics_add(m, "actor/weights_refused", a->st.weights_refused);
    ap_metrics_add(m, "actor/contexts_too_long", a->st.contexts_too_long);
    ap_metrics_add(m, "actor/prompts_skipped", a->st.prompts_skipped);
    if (a->link) {
        ap_actor_link_stats_t ls;
        ap_actor_link_stats(a->link, &ls);
        ap_metrics_add(m, "actor/credit", ls.credit);
        ap_metrics_add(m, "actor/resets", ls.resets);
        ap_metrics_add(m, "actor/queued", ls.queued);
    }
    if (ap_metrics_end(m) < 0 && ap_ratelimit_ok(&a->rl, 30))
        ap_log(AP_LOG_WARN, "%s: metrics: %s", a->name, ap_errmsg());
    memset(w, 0, sizeof *w);
    w->t0 = now;
}

/* Swap in the newest pulled version, if any. Returns 1 when the version changed. */
static int s_pull(ap_actor_t *a) {
    if (!a->wc) return 0;
    ap_weights_t *w;
    if (ap_wclient_take(a->wc, &w) != 1) return 0;
    int rc = a->model ? ap_actor_set_weights(a, w) : 0;
    if (!a->model) { /* simulated evaluator: only the version matters */
        a->st.version = w->version;
        a->st.weight_swaps++;
    }
    if (rc < 0) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
    ap_weights_destroy(&w);
    return rc == 0;
}

static void s_idle(ap_actor_t *a, double t0) {
    double dt = ap_now() - t0;
    a->st.idle_s += dt;
    a->win.idle += dt;
}

static int s_weights_client(ap_actor_t *a) {
    const ap_config_t *cfg = a->cfg;
    if (!cfg->endpoints.weights[0]) return ap_err("%s: endpoints.weights is empty", a->name);
    char key[AP_Z85_KEY] = "";
    if (ap_net_curve(a->net)) {
        char *p = ap_sprintf("%s/learner.pub", cfg->security.keys_dir);
        int rc = ap_curve_load_public(p, key);
        free(p);
        if (rc < 0) return -1;
    }
    ap_wclient_opts_t wo = {.endpoint = cfg->endpoints.weights,
                            .pub_endpoint =
                                cfg->endpoints.weights_pub[0] ? cfg->endpoints.weights_pub : NULL,
                            .server_key = key[0] ? key : NULL};
    if (!(a->wc = ap_wclient_spawn(a->net, &wo)))
        return ap_err("%s: weights client: %s", a->name, ap_errmsg());
    return 0;
}

static int s_link(ap_actor_t *a) {
    const ap_config_t *cfg = a->cfg;
    char key[AP_Z85_KEY] = "";
    if (ap_net_curve(a->net)) {
        char *p = ap_sprintf("%s/buffer.pub", cfg->security.keys_dir);
        int rc = ap_curve_load_public(p, key);
        free(p);
        if (rc < 0) return -1;
    }
    ap_actor_link_opts_t lo = {.endpoint = cfg->endpoints.buffer_actors,
                               .server_key = key[0] ? key : NULL,
                               .name = a->name,
                               .id = a->id,
                               .vocab_size = ap_tokenizer_vocab_size(a->tok),
                               .vocab_hash = ap_tokenizer_hash(a->tok),
                               .heartbeat_s = cfg->buffer.heartbeat_ms / 1000.0};
    return (a->link = ap_actor_link_new(a->net, &lo)) ? 0 : -1;
}

static int s_run_groups(ap_actor_t *a) {
    const int needs_weights = a->mode == AP_ACTOR_STUDENT && !a->simulate;
    const int sync = a->cfg->run.sync;
    if (needs_weights && s_weights_client(a) < 0) return -1;
    if (s_link(a) < 0) return -1;
    int rc = 0;
    double waiting_since = ap_now();
    int warned = 0;
    while (!s_stopping(a)) {
        s_metrics(a, 0);
        if (ap_now() - a->last_state > S_STATE_INTERVAL && s_state_save(a) < 0 &&
            ap_ratelimit_ok(&a->rl, 60))
            ap_log(AP_LOG_WARN, "%s: state: %s", a->name, ap_errmsg());
        double t0 = ap_now();
        s_pull(a);
        if (needs_weights && ap_version_is_zero(a->st.version)) { /* the first version */
            if (!warned && ap_now() - waiting_since > 10) {
                ap_log(AP_LOG_WARN, "%s: no weights from %s yet", a->name,
                       a->cfg->endpoints.weights);
                warned = 1;
            }
            ap_sleep(0.01);
            s_idle(a, t0);
            continue;
        }
        if (ap_actor_link_wait_credit(a->link, 0.05) != 1) {
            s_idle(a, t0);
            continue;
        }
        ap_version_t latest = ap_actor_link_latest(a->link);
        if (sync && needs_weights && ap_version_cmp(a->st.version, latest) < 0) {
            ap_sleep(0.002); /* the version CREDIT.latest names is on its way */
            s_idle(a, t0);
            continue;
        }
        s_idle(a, t0);
        int k = AP_MAX(1, AP_MIN(ap_actor_link_available(a->link), a->k_max));
        ap_group_t *groups[S_PASS_SEQS];
        int made = s_make_groups(a, k, groups);
        if (made < 0) {
            rc = -1;
            break;
        }
        for (int j = 0; j < made; j++) {
            if (a->simulate && a->mode == AP_ACTOR_STUDENT) {
                groups[j]->version = latest;
                a->st.version = latest;
            }
            ap_actor_link_send(a->link, &groups[j]);
            a->st.groups_sent++;
        }
    }
    s_metrics(a, 1);
    if (s_state_save(a) < 0) ap_log(AP_LOG_WARN, "%s: state: %s", a->name, ap_errmsg());
    ap_actor_link_stats_t ls;
    ap_actor_link_stats(a->link, &ls);
    a->st.resets = ls.resets;
    ap_actor_link_destroy(&a->link);
    ap_wclient_destroy(&a->wc);
    return rc;
}

/* Evaluate version v when it is the first, of a new generation, or crosses a multiple of
 * actors.eval_every steps since the last evaluation. */
static int s_due(const ap_actor_t *a, ap_version_t last, ap_version_t v) {
    if (ap_version_is_zero(last) || v.gen != last.gen) return 1;
    uint64_t every = (uint64_t)a->cfg->actors.eval_every;
    return v.step / every > last.step / every;
}

static int s_run_eval(ap_actor_t *a) {
    if (s_weights_client(a) < 0) return -1;
    ap_version_t last = {0, 0};
    int rc = 0;
    while (!s_stopping(a)) {
        double t0 = ap_now();
        if (!s_pull(a) || !s_due(a, last, a->st.version) || a->simulate) {
            ap_sleep(0.02);
            s_idle(a, t0);
            continue;
        }
        s_idle(a, t0);
        ap_version_t v = a->st.version;
        ap_eval_result_t r;
        double t1 = ap_now();
        if (ap_eval_run(a->eval, a->model, &r) < 0) {
            rc = ap_err("%s: %s", a->name, ap_errmsg());
            break;
        }
        a->st.busy_s += ap_now() - t1;
        a->st.evaluations++;
        last = v;
        ap_metrics_t *m = a->metrics;
        ap_metrics_begin(m, (long)v.step);
        ap_metrics_add(m, "eval/accuracy", r.accuracy);
        ap_metrics_add(m, "eval/pass_at_k", r.pass_at_k);
        ap_metrics_add(m, "eval/k", r.pass_k);
        ap_metrics_add(m, "eval/sample_accuracy", r.sample_accuracy);
        ap_metrics_add(m, "eval/n", r.n);
        ap_metrics_add(m, "eval/mean_length", r.mean_length);
        ap_metrics_add(m, "eval/truncated", r.truncated);
        ap_metrics_add(m, "eval/seconds", r.seconds);
        ap_metrics_add(m, "eval/tokens_per_s", r.tokens_per_s);
        ap_metrics_add(m, "eval/version_gen", v.gen);
        if (ap_metrics_end(m) < 0) ap_log(AP_LOG_WARN, "%s: metrics: %s", a->name, ap_errmsg());
        ap_log(AP_LOG_INFO, "%s: version (%u, %llu): accuracy %.3f, pass@%d %.3f (n %d, %.2f s)",
               a->name, v.gen, (unsigned long long)v.step, r.accuracy, r.pass_k, r.pass_at_k, r.n,
               r.seconds);
    }
    ap_wclient_destroy(&a->wc);
    return rc;
}

int ap_actor_run(ap_actor_t *a) {
    if (!a->net) return ap_err("%s: ap_actor_run needs a network context (opts.net)", a->name);
    a->win.t0 = ap_now();
    a->last_state = ap_now();
    if (a->mode != AP_ACTOR_EVAL && s_state_save(a) < 0) /* the restart count, at once */
        ap_log(AP_LOG_WARN, "%s: state: %s", a->name, ap_errmsg());
    int rc = a->mode == AP_ACTOR_EVAL ? s_run_eval(a) : s_run_groups(a);
    ap_log(rc == 0 ? AP_LOG_INFO : AP_LOG_ERROR,
           "%s: %s after %ld groups (%ld sent), %ld swaps%s%s", a->name,
           rc == 0 ? "stopped" : "failed", a->st.groups, a->st.groups_sent, a->st.weight_swaps,
           rc ? ": " : "", rc ? ap_errmsg() : "");
    return rc;
}
