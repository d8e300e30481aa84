/* sft.c: supervised training on a task (tasks/sft.h): batches of <bos> prompt completion <eos>
 * with the loss on the completion only, optional privileged prompts and teacher-written
 * completions, AdamW on the config's schedule, metrics, held-out evaluation, checkpoints with
 * bit-exact resume, and the final model directory.
 *
 * Determinism: everything a step draws comes from two streams that live in the checkpoint:
 * the task sampler's cursor (which examples) and the run rng (privileged coin flips, then the
 * teacher's sampling). Evaluation uses its own stream and never touches them, so evaluating
 * more or less often does not change training. */
#include "tasks/sft.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/metrics.h"
#include "apprentice/rundir.h"
#include "apprentice/sampler.h"
#include "apprentice/task.h"
#include "apprentice/tokenizer.h"

/* The rng stream id of the run's training draws (run.seed, stream). */
#define S_RNG_STREAM 0x5f7

struct ap_sft {
    ap_config_t *cfg;       /* borrowed */
    const ap_sft_cfg_t *sc; /* &cfg->sft */
    int flags;              /* AP_SFT_* */
    char *dir;              /* run directory (absolute) */
    ap_task_t *task;
    ap_task_sampler_t *sampler; /* shard 0 of 1 */
    ap_tokenizer_t *tok;
    ap_model_t *model;
    ap_model_t *teacher;         /* teacher_samples only */
    ap_kv_t *teacher_kv;         /* [batch] slots */
    ap_eval_t *eval, *eval_priv; /* NULL when there is no held-out set / privileged template */
    ap_metrics_t *metrics;
    ap_rng_t rng; /* privileged coin flips, teacher sampling */
    ap_adamw_t opt;
    ap_lr_schedule_t sched;
    long resumed_from; /* checkpoint step resumed, -1 = fresh */
    long last_ckpt;    /* step of the newest checkpoint written or resumed, -1 */
    /* batch buffers, sized for sft.batch x max_positions */
    int32_t *tokens, *targets; /* [B, Tmax] */
    int *lens;                 /* [B] */
    int32_t **pre;             /* [B] prompt ids (owned) */
    int *pre_len;              /* [B] */
    int32_t **comp;            /* [B] completion ids (owned) */
    int *comp_len;             /* [B] */
    ap_example_t *ex;          /* [B] */
    /* totals (persisted in the checkpoint) */
    long long total_tokens; /* non-padding tokens trained on */
    long long total_examples;
    double total_seconds; /* time spent in steps (not evaluation) */
    /* this process */
    double t_start;  /* ap_now() at the first step of this process */
    long step_start; /* step at that time */
    double last_print;
    double last_acc, last_acc_priv; /* latest evaluation (NAN before) */
    long last_acc_step;
    ap_sft_stats_t last;
    const volatile sig_atomic_t *stop; /* set: checkpoint and return from train */
};

/* ---- setup --------------------------------------------------------------------------------- */

static int s_log_enabled(const ap_sft_t *s) {
    return !(s->flags & AP_SFT_QUIET);
}

/* The vocabulary of a from-scratch model: sft.vocab's (created there from the task when it has
 * none) or the task's own. */
static ap_tokenizer_t *s_vocab_scratch(const ap_sft_cfg_t *sc, const ap_task_t *task) {
    if (!sc->vocab[0]) return ap_task_build_tokenizer(task);
    char *path = ap_sprintf("%s/%s", sc->vocab, AP_VOCAB_FILE);
    ap_tokenizer_t *tok = NULL;
    if (ap_path_exists(path)) {
        tok = ap_tokenizer_load(path);
        if (tok && ap_task_check_tokenizer(task, tok, path) < 0) {
            ap_err("sft.vocab: %s", ap_errmsg());
            ap_tokenizer_destroy(&tok);
        }
    } else {
        tok = ap_task_build_tokenizer(task);
        if (tok && ap_tokenizer_save_dir(tok, sc->vocab) < 0) ap_tokenizer_destroy(&tok);
    }
    free(path);
    return tok;
}

static int s_check_vocab_file(const ap_tokenizer_t *tok, const char *name, const char *dir,
                              const char *what) {
    char *path = ap_sprintf("%s/%s", dir, AP_VOCAB_FILE);
    int rc = 0;
    if (ap_path_exists(path)) {
        ap_tokenizer_t *other = ap_tokenizer_load(path);
        if (!other || ap_tokenizer_check_same(tok, name, other, what) < 0) rc = -1;
        ap_tokenizer_destroy(&other);
    }
    free(path);
    return rc;
}

/* Restore the rest of the state from a checkpoint's user JSON. */
static int s_restore(ap_sft_t *s, const char *ckpt, const char *user) {
    json_error_t jerr;
    json_t *root = user ? json_loads(user, 0, &jerr) : NULL;
    json_t *cur = root ? json_object_get(root, "cursor") : NULL;
    if (!cur || !json_is_object(cur)) {
        json_decref(root);
        return ap_err("%s: training state has no task cursor (not an sft checkpoint?)", ckpt);
    }
    char *text = json_dumps(cur, JSON_COMPACT);
    ap_task_cursor_t c;
    int rc = ap_task_cursor_from_json(text, ckpt, &c);
    free(text);
    if (rc == 0 && ap_task_sampler_restore(s->sampler, &c) < 0)
        rc = ap_err("%s: %s (was the task changed since the checkpoint?)", ckpt, ap_errmsg());
    s->total_tokens = json_integer_value(json_object_get(root, "tokens"));
    s->total_examples = json_integer_value(json_object_get(root, "examples"));
    s->total_seconds = json_number_value(json_object_get(root, "seconds"));
    json_decref(root);
    return rc;
}

static ap_model_t *s_new_model(const ap_sft_cfg_t *sc, int V, uint64_t seed) {
    ap_model_config_t mc;
    ap_model_config_defaults(&mc);
    mc.vocab_size = V;
    mc.hidden_size = sc->hidden_size;
    mc.intermediate_size = sc->intermediate_size;
    mc.num_layers = sc->num_layers;
    mc.num_heads = sc->num_heads;
    mc.num_kv_heads = sc->num_kv_heads;
    mc.max_positions = sc->max_positions;
    mc.tie_embeddings = sc->tie_embeddings;
    if (ap_model_config_validate(&mc, "sft") < 0) return NULL;
    return ap_model_new(&mc, seed);
}

/* The held-out evaluators (student prompt; privileged context when the task has a template).
 * A prompt with no room for a completion is refused now rather than at the first evaluation. */
static int s_setup_eval(ap_sft_t *s) {
    if (ap_task_heldout_count(s->task) == 0) return 0;
    ap_eval_opts_t o;
    ap_eval_defaults(&o);
    o.max_new_tokens = s->cfg->sampling.max_new_tokens;
    if (!(s->eval = ap_eval_new(s->task, s->tok, &o))) return -1;
    if (s->cfg->task.privileged_template[0]) {
        o.privileged = 1;
        if (!(s->eval_priv = ap_eval_new(s->task, s->tok, &o))) return -1;
    }
    int longest = AP_MAX(ap_eval_max_prompt_len(s->eval),
                         s->eval_priv ? ap_eval_max_prompt_len(s->eval_priv) : 0);
    int positions = ap_model_config(s->model)->max_positions;
    if (longest >= positions)
        return ap_err("sft: a held-out prompt (privileged context included) has %d tokens: no room "
                      "for a completion within the model's %d positions (sft.max_positions)",
                      longest, positions);
    return 0;
}

static int s_check_keys(const ap_config_t *cfg) {
    const ap_sft_cfg_t *sc = &cfg->sft;
    if (!sc->out[0]) return ap_err("sft.out: required (the output model directory)");
    if (sc->data == AP_SFT_DATA_DATASET && strcmp(cfg->task.kind, "dataset"))
        return ap_err("sft.data: dataset needs task.kind: dataset (got %s); use sft.data: task "
                      "for a generator",
                      cfg->task.kind);
    if (sc->data != AP_SFT_DATA_TEACHER && sc->teacher[0])
        ap_log(AP_LOG_WARN, "sft.teacher is ignored unless sft.data: teacher_samples");
    return 0;
}

ap_sft_t *ap_sft_new(ap_config_t *cfg, int flags) {
    if (ap_config_validate(cfg, "sft") < 0 || s_check_keys(cfg) < 0) return NULL;
    ap_sft_t *s = ap_calloc(1, sizeof *s);
    s->cfg = cfg;
    s->sc = &cfg->sft;
    s->flags = flags;
    s->resumed_from = s->last_ckpt = -1;
    s->last_acc = s->last_acc_priv = NAN;
    s->last_acc_step = -1;
    const ap_sft_cfg_t *sc = s->sc;
    char *latest = NULL, *user = NULL, *rel = NULL;

    if (!(s->task = ap_task_new(&cfg->task))) goto fail;
    s->sampler = ap_task_sampler_new(s->task, 0, 1);
    ap_rng_seed(&s->rng, (uint64_t)cfg->run.seed, S_RNG_STREAM);

    /* the run directory is (re)written only once the resume, if any, is known to work */
    rel = ap_sprintf("%s/%s", cfg->run.dir, cfg->run.name);
    latest = ap_rundir_latest(rel);
    if (latest) { /* resume: the checkpoint has the model, its vocabulary and the state */
        if (!(s->model = ap_model_load(latest))) goto fail;
        if (!(s->tok = ap_tokenizer_load_dir(latest))) goto fail;
        if (ap_model_load_state(s->model, latest, &s->rng, &user) < 0) goto fail;
        if (s_restore(s, latest, user) < 0) goto fail;
        s->resumed_from = s->last_ckpt = ap_model_step_count(s->model);
        const ap_model_config_t *rc = ap_model_config(s->model);
        if (!sc->init[0] &&
            (rc->hidden_size != sc->hidden_size || rc->intermediate_size != sc->intermediate_size ||
             rc->num_layers != sc->num_layers || rc->num_heads != sc->num_heads ||
             rc->num_kv_heads != sc->num_kv_heads || rc->max_positions != sc->max_positions))
            ap_log(AP_LOG_WARN,
                   "sft: %s has another architecture than the sft.* keys (D %d, F %d, L %d, H %d, "
                   "KV %d, positions %d): continuing with the checkpoint's",
                   latest, rc->hidden_size, rc->intermediate_size, rc->num_layers, rc->num_heads,
                   rc->num_kv_heads, rc->max_positions);
    } else if (sc->init[0]) {
        if (!ap_path_exists(sc->init)) {
            ap_err("sft.init: %s: no such model directory", sc->init);
            goto fail;
        }
        if (!(s->model = ap_model_load(sc->init))) goto fail;
        if (!(s->tok = ap_tokenizer_load_dir(sc->init))) {
            ap_err("sft.init: %s (a model directory needs its vocab.json)", ap_errmsg());
            goto fail;
        }
    } else {
        if (!(s->tok = s_vocab_scratch(sc, s->task))) goto fail;
        if (!(s->model = s_new_model(sc, ap_tokenizer_vocab_size(s->tok), (uint64_t)cfg->run.seed)))
            goto fail;
    }
    const ap_model_config_t *mc = ap_model_config(s->model);
    if (mc->vocab_size != ap_tokenizer_vocab_size(s->tok)) {
        ap_err("%s: the model has %d token ids but its vocab.json %d", latest ? latest : sc->init,
               mc->vocab_size, ap_tokenizer_vocab_size(s->tok));
        goto fail;
    }
    if (ap_task_check_tokenizer(s->task, s->tok,
                                latest        ? latest
                                : sc->init[0] ? sc->init
                                              : "sft") < 0)
        goto fail;
    /* one vocabulary for teacher and student: refuse any other already on the way */
    if (sc->vocab[0] && s_check_vocab_file(s->tok, "this model", sc->vocab, "sft.vocab") < 0)
        goto fail;
    if (s_check_vocab_file(s->tok, "this model", sc->out, "sft.out (already there)") < 0) {
        ap_err("%s; remove that directory or choose another sft.out", ap_errmsg());
        goto fail;
    }
    if (sc->data == AP_SFT_DATA_TEACHER) {
        if (!ap_path_exists(sc->teacher)) {
            ap_err("sft.teacher: %s: no such model directory", sc->teacher);
            goto fail;
        }
        if (!(s->teacher = ap_model_load(sc->teacher))) goto fail;
        ap_tokenizer_t *tt = ap_tokenizer_load_dir(sc->teacher);
        int same =
            tt && ap_tokenizer_check_same(s->tok, "student", tt, "teacher (sft.teacher)") == 0;
        ap_tokenizer_destroy(&tt);
        if (!same) goto fail;
        int len = AP_MIN(ap_model_config(s->teacher)->max_positions, mc->max_positions - 1);
        s->teacher_kv = ap_kv_new(s->teacher, sc->batch, len);
    }
    if (s_setup_eval(s) < 0) goto fail;
    if (ap_rundir_create(cfg, &s->dir) < 0) goto fail;

    char *mpath = ap_rundir_path(s->dir, "metrics.jsonl");
    s->metrics = ap_metrics_open(mpath, "sft", 0);
    free(mpath);
    if (!s->metrics) goto fail;

    const ap_optimizer_cfg_t *oc = &cfg->optimizer;
    ap_adamw_defaults(&s->opt);
    s->opt.beta1 = (float)oc->beta1, s->opt.beta2 = (float)oc->beta2, s->opt.eps = (float)oc->eps;
    s->opt.weight_decay = (float)oc->weight_decay, s->opt.clip_grad_norm = (float)oc->grad_clip;
    s->sched.peak_lr = (float)oc->lr;
    s->sched.min_lr =
        oc->schedule == AP_SCHEDULE_COSINE ? (float)(oc->lr * oc->min_lr_ratio) : (float)oc->lr;
    s->sched.warmup_steps = oc->warmup_steps;
    s->sched.total_steps = sc->steps;

    size_t B = (size_t)sc->batch, T = (size_t)mc->max_positions;
    s->tokens = ap_malloc(B * T * sizeof *s->tokens);
    s->targets = ap_malloc(B * T * sizeof *s->targets);
    s->lens = ap_malloc(B * sizeof *s->lens);
    s->pre = ap_calloc(B, sizeof *s->pre);
    s->pre_len = ap_calloc(B, sizeof *s->pre_len);
    s->comp = ap_calloc(B, sizeof *s->comp);
    s->comp_len = ap_calloc(B, sizeof *s->comp_len);
    s->ex = ap_calloc(B, sizeof *s->ex);
    ap_model_reserve(s->model, sc->batch, mc->max_positions);

    if (s_log_enabled(s)) {
        char hex[17];
        ap_log(AP_LOG_INFO,
               "sft: run %s; %s model: %lld parameters (D %d, F %d, L %d, H %d, KV %d, V %d, "
               "max positions %d); vocabulary %s; task %s, %d held-out prompts; data %s",
               s->dir,
               latest        ? "resumed"
               : sc->init[0] ? "initial"
                             : "new",
               ap_model_config_num_params(mc), mc->hidden_size, mc->intermediate_size,
               mc->num_layers, mc->num_heads, mc->num_kv_heads, mc->vocab_size, mc->max_positions,
               ap_tokenizer_hash_hex(s->tok, hex), ap_task_kind(s->task),
               ap_task_heldout_count(s->task),
               sc->data == AP_SFT_DATA_TEACHER   ? "teacher_samples"
               : sc->data == AP_SFT_DATA_DATASET ? "dataset"
                                                 : "task");
        if (latest)
            ap_log(AP_LOG_INFO, "sft: resuming from %s (step %ld)", latest, s->resumed_from);
    }
    free(latest);
    free(user);
    free(rel);
    return s;
fail:
    free(latest);
    free(user);
    free(rel);
    ap_sft_destroy(&s);
    return NULL;
}

void ap_sft_destroy(ap_sft_t **sp) {
    if (!sp || !*sp) return;
    ap_sft_t *s = *sp;
    size_t B = (size_t)s->sc->batch;
    if (s->pre)
        for (size_t b = 0; b < B; b++) {
            free(s->pre[b]);
            free(s->comp[b]);
            ap_example_clear(&s->ex[b]);
        }
    free(s->tokens), free(s->targets), free(s->lens);
    free(s->pre), free(s->pre_len), free(s->comp), free(s->comp_len), free(s->ex);
    ap_metrics_close(&s->metrics);
    ap_eval_destroy(&s->eval);
    ap_eval_destroy(&s->eval_priv);
    ap_kv_destroy(&s->teacher_kv);
    ap_model_destroy(&s->teacher);
    ap_model_destroy(&s->model);
    ap_tokenizer_destroy(&s->tok);
    ap_task_sampler_destroy(&s->sampler);
    ap_task_destroy(&s->task);
    free(s->dir);
    free(s);
    *sp = NULL;
}

long ap_sft_step_count(const ap_sft_t *s) {
    return ap_model_step_count(s->model);
}
long ap_sft_resumed_from(const ap_sft_t *s) {
    return s->resumed_from;
}
ap_model_t *ap_sft_model(ap_sft_t *s) {
    return s->model;
}
const ap_tokenizer_t *ap_sft_tokenizer(const ap_sft_t *s) {
    return s->tok;
}
const char *ap_sft_dir(const ap_sft_t *s) {
    return s->dir;
}

void ap_sft_set_stop_flag(ap_sft_t *s, const volatile sig_atomic_t *flag) {
    s->stop = flag;
}

/* ---- one step ------------------------------------------------------------------------------ */

/* Teacher completions for the plain prompts pre[0..B) (privileged ones are re-rendered after),
 * replacing comp[]. Returns the share judged correct, or NAN with ap_err on failure. */
static double s_teacher_completions(ap_sft_t *s, int B, int32_t **plain, const int *plain_len) {
    ap_sampling_t sp;
    ap_sampling_defaults(&sp);
    sp.temperature = (float)s->cfg->sampling.temperature;
    sp.top_k = s->cfg->sampling.top_k;
    sp.top_p = (float)s->cfg->sampling.top_p;
    ap_completion_t *out = ap_malloc((size_t)B * sizeof *out);
    double acc = NAN;
    if (ap_generate(s->teacher_kv, out, (const int32_t *const *)plain, plain_len, B,
                    s->cfg->sampling.max_new_tokens, ap_tokenizer_eos(s->tok), &sp, &s->rng) < 0) {
        ap_err("sft: teacher sampling: %s", ap_errmsg());
        goto done;
    }
    int correct = 0;
    for (int b = 0; b < B; b++) {
        free(s->comp[b]);
        s->comp_len[b] = out[b].n;
        s->comp[b] = ap_malloc((size_t)AP_MAX(out[b].n, 1) * sizeof(int32_t));
        memcpy(s->comp[b], out[b].tokens, (size_t)out[b].n * sizeof(int32_t));
        char *text = ap_tokenizer_decode(s->tok, out[b].tokens, out[b].n, AP_TOK_STOP_EOS);
        if (!text) goto done;
        ap_verdict_t v;
        ap_task_verify(s->task, &s->ex[b], text, &v);
        correct += v.correct;
        free(text);
    }
    acc = (double)correct / B;
done:
    free(out);
    return acc;
}

int ap_sft_step(ap_sft_t *s, ap_sft_stats_t *st) {
    double t0 = ap_now();
    const ap_sft_cfg_t *sc = s->sc;
    int B = sc->batch, V = ap_model_config(s->model)->vocab_size;
    int Tmax = ap_model_config(s->model)->max_positions;
    memset(st, 0, sizeof *st);
    st->teacher_accuracy = NAN;
    int teacher = sc->data == AP_SFT_DATA_TEACHER;
    int32_t **plain = teacher ? ap_calloc((size_t)B, sizeof *plain) : NULL;
    int *plain_len = teacher ? ap_calloc((size_t)B, sizeof *plain_len) : NULL;
    int rc = -1;

    /* draw and render: pre[b] = <bos> + prompt or privileged context, comp[b] = completion */
    for (int b = 0; b < B; b++) {
        ap_example_clear(&s->ex[b]);
        ap_task_sampler_next(s->sampler, &s->ex[b]);
        int n, np;
        int32_t *seq = ap_task_encode_example(s->task, s->tok, &s->ex[b], &n, &np);
        if (!seq) goto done;
        free(s->comp[b]);
        s->comp_len[b] = n - np;
        s->comp[b] = ap_malloc((size_t)(n - np) * sizeof(int32_t));
        memcpy(s->comp[b], seq + np, (size_t)(n - np) * sizeof(int32_t));
        if (teacher) {
            plain[b] = ap_malloc((size_t)np * sizeof(int32_t));
            memcpy(plain[b], seq, (size_t)np * sizeof(int32_t));
            plain_len[b] = np;
        }
        free(s->pre[b]);
        s->pre[b] = NULL;
        int h = 0;
        if (sc->privileged_fraction > 0 && ap_rng_uniform(&s->rng) < sc->privileged_fraction) {
            h = ap_task_encode_privileged(s->task, s->tok, &s->ex[b], NULL, 0, 0, &s->pre[b],
                                          &s->pre_len[b]);
            if (h < 0) {
                free(seq);
                goto done;
            }
        }
        st->privileged += h;
        if (!h) {
            s->pre[b] = seq; /* the prompt part of it */
            s->pre_len[b] = np;
        } else {
            free(seq);
        }
    }
    if (teacher && !isfinite(st->teacher_accuracy = s_teacher_completions(s, B, plain, plain_len)))
        goto done;

    /* pack the right-padded batch */
    int T = 0;
    for (int b = 0; b < B; b++) {
        int n = s->pre_len[b] + s->comp_len[b];
        if (n > Tmax) {
            ap_err("sft: example %s has %d tokens, more than the model's %d positions "
                   "(sft.max_positions)",
                   s->ex[b].id, n, Tmax);
            goto done;
        }
        T = AP_MAX(T, n);
    }
    for (int b = 0; b < B; b++) {
        int32_t *row = s->tokens + (size_t)b * T, *tgt = s->targets + (size_t)b * T;
        int np = s->pre_len[b], n = np + s->comp_len[b];
        memcpy(row, s->pre[b], (size_t)np * sizeof *row);
        memcpy(row + np, s->comp[b], (size_t)s->comp_len[b] * sizeof *row);
        for (int t = n; t < T; t++)
            row[t] = ap_tokenizer_pad(s->tok);
        /* position t predicts token t+1: trained only where t+1 is a completion token */
        for (int t = 0; t < T; t++)
            tgt[t] = (t + 1 >= np && t + 1 < n) ? row[t + 1] : -100;
        s->lens[b] = n;
        st->tokens += n;
        st->targets += n - np;
    }

    long step = ap_model_step_count(s->model);
    float lr = ap_lr_at(&s->sched, step);
    ap_model_zero_grad(s->model);
    float *logits = ap_model_forward(s->model, s->tokens, s->lens, B, T);
    if (!logits) goto done;
    float loss;
    if (ap_cross_entropy(logits, &loss, logits, s->targets, B * T, V) < 0) goto done;
    ap_model_backward(s->model, logits);
    double gnorm = ap_model_step(s->model, &s->opt, lr);

    st->step = ap_model_step_count(s->model);
    st->skipped = st->step == step;
    st->loss = loss;
    st->grad_norm = gnorm;
    st->lr = lr;
    st->sequences = B;
    st->max_len = T;
    st->seconds = ap_now() - t0;
    s->total_tokens += st->tokens;
    s->total_examples += B;
    s->total_seconds += st->seconds;
    s->last = *st;
    rc = 0;
done:
    if (plain)
        for (int b = 0; b < B; b++)
            free(plain[b]);
    free(plain);
    free(plain_len);
    return rc;
}

/* ---- evaluation, checkpoints, progress ------------------------------------------------------ */

int ap_sft_evaluate(ap_sft_t *s, ap_eval_result_t *plain, ap_eval_result_t *priv) {
    memset(priv, 0, sizeof *priv);
    priv->accuracy = NAN;
    if (!s->eval) {
        memset(plain, 0, sizeof *plain);
        plain->accuracy = NAN;
        return ap_err("sft: the task has no held-out set (task.heldout_size: 0)");
    }
    if (ap_eval_run(s->eval, s->model, plain) < 0) return -1;
    if (s->eval_priv && ap_eval_run(s->eval_priv, s->model, priv) < 0) return -1;
    return 0;
}

/* Evaluate, remember for the progress line, write one metrics line. *r, *rp: the results
 * (accuracy NAN when the task has no held-out set). */
static int s_evaluate_and_log(ap_sft_t *s, int final, ap_eval_result_t *r, ap_eval_result_t *rp) {
    memset(r, 0, sizeof *r), memset(rp, 0, sizeof *rp);
    r->accuracy = rp->accuracy = NAN;
    if (!s->eval) return 0;
    if (ap_sft_evaluate(s, r, rp) < 0) return -1;
    long step = ap_sft_step_count(s);
    s->last_acc = r->accuracy;
    s->last_acc_priv = rp->n ? rp->accuracy : NAN;
    s->last_acc_step = step;
    ap_metrics_begin(s->metrics, step);
    ap_metrics_add(s->metrics, "eval/accuracy", r->accuracy);
    if (rp->n) ap_metrics_add(s->metrics, "eval/accuracy_privileged", rp->accuracy);
    ap_metrics_add(s->metrics, "eval/n", r->n);
    ap_metrics_add(s->metrics, "eval/mean_length", r->mean_length);
    ap_metrics_add(s->metrics, "eval/tokens_per_s", r->tokens_per_s);
    if (final) ap_metrics_add_str(s->metrics, "event", "final");
    return ap_metrics_end(s->metrics);
}

int ap_sft_checkpoint(ap_sft_t *s) {
    long step = ap_sft_step_count(s);
    char *ckpt = ap_sprintf("%s/ckpt/step-%ld", s->dir, step);
    ap_task_cursor_t c;
    ap_task_sampler_cursor(s->sampler, &c);
    char *cur = ap_task_cursor_to_json(&c);
    json_error_t jerr;
    json_t *root = json_object();
    json_object_set_new(root, "step", json_integer(step));
    json_object_set_new(root, "cursor", json_loads(cur, 0, &jerr));
    json_object_set_new(root, "tokens", json_integer(s->total_tokens));
    json_object_set_new(root, "examples", json_integer(s->total_examples));
    json_object_set_new(root, "seconds", json_real(s->total_seconds));
    char *user = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    free(cur);
    int rc = -1;
    if (ap_model_save(s->model, ckpt) == 0 && ap_tokenizer_save_dir(s->tok, ckpt) == 0 &&
        ap_model_save_state(s->model, ckpt, &s->rng, user) == 0 &&
        ap_rundir_set_latest(s->dir, step, s->sc->keep_checkpoints) == 0) {
        rc = 0;
        s->last_ckpt = step;
        ap_metrics_begin(s->metrics, step);
        ap_metrics_add_str(s->metrics, "event", "checkpoint");
        ap_metrics_end(s->metrics);
    } else {
        ap_err("checkpoint %s: %s", ckpt, ap_errmsg());
    }
    free(user);
    free(ckpt);
    return rc;
}

static void s_fmt_count(char *buf, size_t n, double x) {
    if (x >= 1e6)
        snprintf(buf, n, "%.1fM", x / 1e6);
    else if (x >= 1e3)
        snprintf(buf, n, "%.1fk", x / 1e3);
    else
        snprintf(buf, n, "%.0f", x);
}

static void s_fmt_time(char *buf, size_t n, double sec) {
    if (!isfinite(sec) || sec < 0)
        snprintf(buf, n, "?");
    else if (sec >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(sec / 3600), (int)fmod(sec / 60, 60));
    else if (sec >= 60)
        snprintf(buf, n, "%dm%02ds", (int)(sec / 60), (int)fmod(sec, 60));
    else
        snprintf(buf, n, "%.0fs", sec);
}

/* "sft 120/2000 | loss 0.412 | 12.3k tok/s | acc 0.870 (hint 0.990) @100 | ETA 3m12s" */
static void s_progress(ap_sft_t *s, int force) {
    if (!s_log_enabled(s)) return;
    double now = ap_now();
    int tty = isatty(2);
    if (!force && now - s->last_print < (tty ? 0.5 : 30.0)) return;
    s->last_print = now;
    long step = ap_sft_step_count(s), done = step - s->step_start;
    double per = done > 0 ? (now - s->t_start) / done : NAN;
    char tps[32], eta[32], acc[64] = "";
    s_fmt_count(tps, sizeof tps, s->last.seconds > 0 ? s->last.tokens / s->last.seconds : 0);
    s_fmt_time(eta, sizeof eta, per * (s->sc->steps - step));
    if (s->last_acc_step >= 0) {
        if (isfinite(s->last_acc_priv))
            snprintf(acc, sizeof acc, " | acc %.3f (hint %.3f) @%ld", s->last_acc, s->last_acc_priv,
                     s->last_acc_step);
        else
            snprintf(acc, sizeof acc, " | acc %.3f @%ld", s->last_acc, s->last_acc_step);
    }
    fprintf(stderr, "%ssft %ld/%d | loss %.4f | %s tok/s%s | ETA %s%s", tty ? "\r" : "", step,
            s->sc->steps, s->last.loss, tps, acc, eta, tty ? "\033[K" : "\n");
    fflush(stderr);
}

int ap_sft_train(ap_sft_t *s, long until) {
    const ap_sft_cfg_t *sc = s->sc;
    if (until > sc->steps) until = sc->steps;
    s->t_start = ap_now();
    s->step_start = ap_sft_step_count(s);
    while (ap_sft_step_count(s) < until) {
        ap_sft_stats_t st;
        if (ap_sft_step(s, &st) < 0) return -1;
        ap_metrics_begin(s->metrics, st.step);
        ap_metrics_add(s->metrics, "loss/sft", st.loss);
        ap_metrics_add(s->metrics, "lr", st.lr);
        ap_metrics_add(s->metrics, "grad_norm", st.grad_norm);
        ap_metrics_add(s->metrics, "tokens_per_s", st.seconds > 0 ? st.tokens / st.seconds : 0);
        ap_metrics_add(s->metrics, "tokens", (double)st.tokens);
        ap_metrics_add(s->metrics, "privileged_frac", (double)st.privileged / st.sequences);
        if (st.skipped) ap_metrics_add(s->metrics, "skipped", 1);
        if (isfinite(st.teacher_accuracy))
            ap_metrics_add(s->metrics, "teacher/accuracy", st.teacher_accuracy);
        if (ap_metrics_end(s->metrics) < 0) return -1;
        long step = st.step;
        if (sc->eval_every > 0 && step % sc->eval_every == 0 && step < sc->steps) {
            ap_eval_result_t r, rp;
            if (s_evaluate_and_log(s, 0, &r, &rp) < 0) return -1;
            s_progress(s, 1);
        }
        if (sc->checkpoint_every > 0 && step % sc->checkpoint_every == 0 && step < sc->steps &&
            ap_sft_checkpoint(s) < 0)
            return -1;
        s_progress(s, 0);
        if (s->stop && *s->stop) {
            if (s->last_ckpt != step && ap_sft_checkpoint(s) < 0) return -1;
            return ap_err("sft: stopped at step %ld (checkpointed: rerun to resume)", step);
        }
    }
    return 0;
}

int ap_sft_finish(ap_sft_t *s) {
    const ap_sft_cfg_t *sc = s->sc;
    long step = ap_sft_step_count(s);
    if (step < sc->steps) return ap_err("sft: finish at step %ld of %d", step, sc->steps);
    ap_eval_result_t r, rp;
    if (s_evaluate_and_log(s, 1, &r, &rp) < 0) return -1;
    s_progress(s, 1);
    if (s_log_enabled(s) && isatty(2)) fputc('\n', stderr);
    if (s->last_ckpt != step && ap_sft_checkpoint(s) < 0) return -1;

    /* the model directory: sft.json last, so its presence means "complete" */
    char *summary_path = ap_sprintf("%s/sft.json", sc->out);
    unlink(summary_path);
    char hex[17];
    const ap_model_config_t *mc = ap_model_config(s->model);
    json_t *o = json_object();
    json_object_set_new(o, "steps", json_integer(step));
    json_object_set_new(o, "task", json_string(ap_task_kind(s->task)));
    json_object_set_new(o, "data",
                        json_string(sc->data == AP_SFT_DATA_TEACHER   ? "teacher_samples"
                                    : sc->data == AP_SFT_DATA_DATASET ? "dataset"
                                                                      : "task"));
    json_object_set_new(o, "privileged_fraction", json_real(sc->privileged_fraction));
    json_object_set_new(o, "params", json_integer(ap_model_config_num_params(mc)));
    json_object_set_new(o, "vocab_hash", json_string(ap_tokenizer_hash_hex(s->tok, hex)));
    json_object_set_new(o, "accuracy", isfinite(r.accuracy) ? json_real(r.accuracy) : json_null());
    json_object_set_new(o, "accuracy_privileged", rp.n ? json_real(rp.accuracy) : json_null());
    json_object_set_new(o, "heldout", json_integer(r.n));
    json_object_set_new(o, "tokens", json_integer(s->total_tokens));
    json_object_set_new(o, "train_seconds", json_real(s->total_seconds));
    json_object_set_new(o, "tokens_per_s",
                        json_real(s->total_seconds > 0 ? s->total_tokens / s->total_seconds : 0));
    json_object_set_new(o, "blas_threads", json_integer(s->cfg->model.blas_threads));
    json_object_set_new(o, "run", json_string(s->dir));
    json_object_set_new(o, "out", json_string(sc->out));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    int rc = -1;
    if (ap_model_save(s->model, sc->out) == 0 && ap_tokenizer_save_dir(s->tok, sc->out) == 0) {
        char *line = ap_sprintf("%s\n", text);
        rc = ap_file_write_atomic(summary_path, line, strlen(line));
        if (rc == 0 && s_log_enabled(s)) fputs(line, stdout);
        free(line);
    }
    if (rc < 0) ap_err("sft.out %s: %s", sc->out, ap_errmsg());
    free(text);
    free(summary_path);
    return rc;
}

int ap_sft_run(ap_sft_t *s) {
    if (ap_sft_train(s, s->sc->steps) < 0) return -1;
    return ap_sft_finish(s);
}
