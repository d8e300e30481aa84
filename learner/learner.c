/* learner.c: the learner's compute side (include/apprentice/learner.h): start-up (fresh from
 * model.student or resumed from RUN/latest with gen + 1), one optimizer step per batch, the
 * metrics record of each batch, rollouts, checkpoints. The service loop is learner_service.c.
 *
 * One step on a batch of N trajectories (T completion positions, V vocabulary):
 *   1. conversion (batch.c) into padded arrays and the objectives' ap_obj_batch_t;
 *   2. the base mask (masks.h: padding, after EOS, mask_tokens, truncation, repetition);
 *      a batch the masks say to skip is counted and dropped;
 *   3. micro-batches of batch.micro_batch rows: forward over prompt + completion, gather the
 *      completion positions' logits into [n, T, V], objectives' eval writes dlogits in place,
 *      scatter back to the model's [n, S, V] buffer, backward (accumulates);
 *      the policy-gradient objectives need the whole batch's current log-probs before the first
 *      eval (the staleness mask), so with several micro-batches they get a no-grad pre-pass;
 *      the grad pass then runs in reverse so the last micro-batch reuses its pre-pass forward
 *      (one forward saved);
 *   4. finish; a non-finite loss or gradient skips the step (counted), else AdamW at the
 *      schedule's rate for this step; the version's step is the optimizer's step count.
 * Time is split into forward/backward, objectives (masks + plan + eval + finish + log-probs) and
 * transport (conversion; the service adds the weight publication) and reported per step. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/rundir.h"
#include "learner/learner_impl.h"

#define S_RNG_STREAM 0x1ea7 /* the learner's stream of run.seed */
#define S_GEN_FILE "learner-gen"

static const char *s_skip_names[AP_LEARNER_SKIP_COUNT] = {"stepped", "empty",     "truncation",
                                                          "plan",    "nonfinite", "stopped"};

const char *ap_learner_skip_name(ap_learner_skip_t s) {
    return (unsigned)s < AP_LEARNER_SKIP_COUNT ? s_skip_names[s] : "?";
}

uint64_t ap_learner_table_hash(const ap_model_t *m) {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        h = ap_hash64(p->name, strlen(p->name), h);
        int64_t meta[4] = {p->ndim, p->shape[0], p->shape[1], (int64_t)p->offset};
        h = ap_hash64(meta, sizeof meta, h);
    }
    return h;
}

/* ---- start-up ------------------------------------------------------------------------------ */

/* stabilizers.mask_tokens (token texts) -> ids through the student's vocabulary. */
static int s_resolve_mask_tokens(ap_learner_t *L) {
    const ap_stabilizers_cfg_t *st = &L->cfg->stabilizers;
    if (st->mask_tokens_count > AP_MASKS_MAX_SPECIAL)
        return ap_err("stabilizers.mask_tokens: %u entries, at most %d", st->mask_tokens_count,
                      AP_MASKS_MAX_SPECIAL);
    int V = ap_tokenizer_vocab_size(L->tok);
    L->mcfg.n_special = 0;
    for (unsigned i = 0; i < st->mask_tokens_count; i++) {
        const char *text = st->mask_tokens[i];
        int32_t id = -1;
        for (int v = 0; v < V && id < 0; v++) {
            const char *tk = ap_tokenizer_token(L->tok, v);
            if (tk && !strcmp(tk, text)) id = v;
        }
        if (id < 0)
            return ap_err("stabilizers.mask_tokens[%u]: '%s' is not a token of the student's "
                          "vocabulary (V = %d)",
                          i, text, V);
        L->mcfg.special[L->mcfg.n_special++] = id;
    }
    return 0;
}

/* The support an objective resolves to (objectives.h: auto = full when V <= full_vocab_max). */
static int s_full_support(ap_support_t s, const ap_obj_config_t *c, int V) {
    return s == AP_SUPPORT_FULL || (s == AP_SUPPORT_AUTO && V <= c->full_vocab_max);
}

/* Which teacher kinds and forms the enabled objectives (and their monitors) read. */
static void s_batch_opts(ap_learner_t *L) {
    const ap_config_t *cfg = L->cfg;
    const ap_obj_config_t *oc = ap_obj_config(L->obj);
    const int V = ap_model_config(L->model)->vocab_size;
    ap_learner_batch_opts_t *o = &L->bo;
    memset(o, 0, sizeof *o);
    o->V = V;
    o->pad_id = ap_tokenizer_pad(L->tok);
    o->max_seq = ap_model_config(L->model)->max_positions;
    o->topk_k = cfg->teacher.top_k;
    o->sampling_tau = cfg->sampling.temperature;
    const int E = AP_TEACHER_EXTERNAL, SF = AP_TEACHER_SELF, R = AP_TEACHER_REFERENCE;
    o->need[E] = oc->gkd.c.enabled || oc->opd.c.enabled;
    o->need[SF] = oc->opsd.c.enabled || oc->srpo.c.enabled;
    o->need[R] = oc->grpo.c.enabled && oc->grpo.kl_ref > 0;
    o->tau[E] = oc->gkd.c.enabled ? oc->gkd.tau : 1.0;
    o->tau[SF] = oc->opsd.c.enabled ? oc->opsd.tau : 1.0;
    o->tau[R] = 1.0;
    const int served_full = V <= oc->full_vocab_max; /* what a teacher sends (DESIGN.md) */
    if (oc->gkd.c.enabled) {
        int f = s_full_support(oc->gkd.support, oc, V);
        o->full[E] |= f, o->topk[E] |= !f;
    } else if (o->need[E] && oc->monitors) { /* opd only: the monitors read what is served */
        o->full[E] |= served_full, o->topk[E] |= !served_full;
    }
    if (oc->opsd.c.enabled) {
        int f = s_full_support(oc->opsd.support, oc, V);
        o->full[SF] |= f, o->topk[SF] |= !f;
    }
    if (oc->srpo.c.enabled) {
        int f = s_full_support(oc->srpo.support, oc, V);
        o->full[SF] |= f, o->topk[SF] |= !f;
    }
}

static uint32_t s_read_gen_file(const char *dir) {
    if (!dir) return 0;
    char *path = ap_rundir_path(dir, S_GEN_FILE), *text = NULL;
    unsigned g = 0;
    if (ap_file_read(path, &text, NULL) == 0 && sscanf(text, "%u", &g) != 1) g = 0;
    free(text);
    free(path);
    return g;
}

static int s_write_gen_file(const char *dir, uint32_t gen) {
    if (!dir) return 0;
    char *path = ap_rundir_path(dir, S_GEN_FILE), *text = ap_sprintf("%u\n", gen);
    int rc = ap_file_write_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return rc;
}

/* The learner's part of a checkpoint's training state. */
static int s_restore_json(ap_learner_t *L, const char *ckpt, const char *user, uint32_t *gen) {
    json_error_t jerr;
    json_t *root = user ? json_loads(user, 0, &jerr) : NULL;
    json_t *g = root ? json_object_get(root, "gen") : NULL;
    if (!root || !json_is_integer(g) || json_integer_value(g) < 1) {
        json_decref(root);
        return ap_err("%s: its training state has no learner generation (not a learner "
                      "checkpoint?)",
                      ckpt);
    }
    *gen = (uint32_t)json_integer_value(g);
    L->elapsed_before = json_number_value(json_object_get(root, "elapsed_s"));
    L->tokens_total = json_integer_value(json_object_get(root, "tokens"));
    json_decref(root);
    return 0;
}

ap_learner_t *ap_learner_new(const ap_learner_opts_t *o) {
    const ap_config_t *cfg = o->cfg;
    AP_ASSERT(cfg);
    ap_learner_t *L = ap_calloc(1, sizeof *L);
    L->cfg = cfg;
    L->dir = o->run_dir ? ap_strdup(o->run_dir) : NULL;
    L->name = ap_strdup(o->name && o->name[0] ? o->name : "learner");
    L->net = o->net;
    L->metrics = o->metrics;
    if (!L->metrics) L->metrics = L->own_metrics = ap_metrics_open(NULL, "learner", 0);
    L->resumed_from = L->last_ckpt = -1;
    L->t_start = L->last_record = ap_now();
    atomic_init(&L->stop, 0);
    ap_rng_seed(&L->rng, (uint64_t)cfg->run.seed, S_RNG_STREAM);
    char *latest = L->dir ? ap_rundir_latest(L->dir) : NULL, *user = NULL;
    uint32_t saved_gen = 0;

    if (latest) {
        if (!(L->model = ap_model_load(latest)) || !(L->tok = ap_tokenizer_load_dir(latest)) ||
            ap_model_load_state(L->model, latest, &L->rng, &user) < 0 ||
            s_restore_json(L, latest, user, &saved_gen) < 0) {
            ap_err("learner: resuming from %s: %s", latest, ap_errmsg());
            goto fail;
        }
        L->resumed_from = L->last_ckpt = ap_model_step_count(L->model);
    } else {
        const char *st = cfg->model.student;
        if (!st || !st[0]) {
            ap_err("learner: model.student is required (the initial student checkpoint)");
            goto fail;
        }
        if (!(L->model = ap_model_load(st))) {
            ap_err("learner: model.student: %s", ap_errmsg());
            goto fail;
        }
        if (!(L->tok = ap_tokenizer_load_dir(st))) {
            ap_err("learner: model.student %s: %s (a student needs its vocab.json)", st,
                   ap_errmsg());
            goto fail;
        }
    }
    const ap_model_config_t *mc = ap_model_config(L->model);
    if (mc->vocab_size != ap_tokenizer_vocab_size(L->tok)) {
        ap_err("learner: %s: the model has %d token ids but its vocab.json %d",
               latest ? latest : cfg->model.student, mc->vocab_size,
               ap_tokenizer_vocab_size(L->tok));
        goto fail;
    }
    /* the generation: above every one this run has used, recorded before anything is published */
    uint32_t file_gen = s_read_gen_file(L->dir);
    L->version.gen = (saved_gen > file_gen ? saved_gen : file_gen) + 1;
    L->version.step = (uint64_t)ap_model_step_count(L->model);
    if (s_write_gen_file(L->dir, L->version.gen) < 0) goto fail;

    ap_obj_config_t oc = cfg->objective;
    oc.sampling_tau = cfg->sampling.temperature;
    oc.full_vocab_max = cfg->teacher.full_vocab_max;
    oc.K = 0; /* whatever the signal carries: build() makes one K per kind and batch */
    if (!(L->obj = ap_obj_new(&oc))) {
        ap_err("learner: objective: %s", ap_errmsg());
        goto fail;
    }
    L->mcfg = cfg->stabilizers.masks;
    L->mcfg.eos_id = ap_tokenizer_eos(L->tok);
    L->mcfg.max_new_tokens = cfg->sampling.max_new_tokens;
    if (s_resolve_mask_tokens(L) < 0 || ap_masks_validate(&L->mcfg) < 0) {
        ap_err("learner: %s", ap_errmsg());
        goto fail;
    }
    const ap_optimizer_cfg_t *opt = &cfg->optimizer;
    ap_adamw_defaults(&L->opt);
    L->opt.beta1 = (float)opt->beta1, L->opt.beta2 = (float)opt->beta2;
    L->opt.eps = (float)opt->eps, L->opt.weight_decay = (float)opt->weight_decay;
    L->opt.clip_grad_norm = (float)opt->grad_clip;
    L->sched.peak_lr = (float)opt->lr;
    L->sched.min_lr =
        opt->schedule == AP_SCHEDULE_COSINE ? (float)(opt->lr * opt->min_lr_ratio) : (float)opt->lr;
    L->sched.warmup_steps = opt->warmup_steps;
    L->sched.total_steps = cfg->run.max_steps;
    L->need_logp = oc.opd.c.enabled || oc.grpo.c.enabled || oc.srpo.c.enabled;
    L->lb = ap_learner_batch_new();
    s_batch_opts(L);
    L->table_hash = ap_learner_table_hash(L->model);
    int rows = cfg->batch.micro_batch > 0 ? AP_MIN(cfg->batch.micro_batch, cfg->batch.size)
                                          : cfg->batch.size;
    ap_model_reserve(L->model, rows, mc->max_positions);

    char hex[17];
    ap_log(AP_LOG_INFO,
           "learner: %s %s (%lld parameters, V %d); version (%u, %llu); vocabulary %s; "
           "teachers needed: external %d self %d reference %d",
           latest ? "resumed from" : "student", latest ? latest : cfg->model.student,
           ap_model_config_num_params(mc), mc->vocab_size, L->version.gen,
           (unsigned long long)L->version.step, ap_tokenizer_hash_hex(L->tok, hex),
           L->bo.need[AP_TEACHER_EXTERNAL], L->bo.need[AP_TEACHER_SELF],
           L->bo.need[AP_TEACHER_REFERENCE]);
    free(latest);
    free(user);
    return L;
fail:
    free(latest);
    free(user);
    ap_learner_destroy(&L);
    return NULL;
}

void ap_learner_destroy(ap_learner_t **Lp) {
    if (!Lp || !*Lp) return;
    ap_learner_t *L = *Lp;
    ap_learner_batch_destroy(&L->lb);
    ap_obj_destroy(&L->obj);
    ap_model_destroy(&L->model);
    ap_tokenizer_destroy(&L->tok);
    ap_metrics_close(&L->own_metrics);
    free(L->comp), free(L->logp), free(L->mb_in);
    free(L->dir), free(L->name);
    free(L);
    *Lp = NULL;
}

ap_version_t ap_learner_version(const ap_learner_t *L) {
    return L->version;
}
ap_model_t *ap_learner_model(ap_learner_t *L) {
    return L->model;
}
long ap_learner_resumed_from(const ap_learner_t *L) {
    return L->resumed_from;
}
const ap_learner_batch_t *ap_learner_last_batch(const ap_learner_t *L) {
    return L->lb;
}
long ap_learner_skipped(const ap_learner_t *L, ap_learner_skip_t why) {
    return (unsigned)why < AP_LEARNER_SKIP_COUNT ? L->skipped[why] : 0;
}
void ap_learner_stop(ap_learner_t *L) {
    atomic_store(&L->stop, 1);
}
void ap_learner_set_stop_flag(ap_learner_t *L, const volatile sig_atomic_t *flag) {
    L->stop_flag = flag;
}
int ap_learner_stopping(const ap_learner_t *L) {
    return atomic_load(&((ap_learner_t *)L)->stop) || (L->stop_flag && *L->stop_flag);
}
double ap_learner_elapsed(const ap_learner_t *L) {
    return L->elapsed_before + (ap_now() - L->t_start);
}

/* ---- one step ------------------------------------------------------------------------------ */

static void s_grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap) return;
    free(*p);
    *p = ap_malloc(n * elem);
    *cap = n;
}

/* Forward rows [r, r + n) packed to their own longest input. Returns the logits [n, S, V]. */
static float *s_forward(ap_learner_t *L, int r, int n, int *S_out) {
    const ap_learner_batch_t *lb = L->lb;
    int S = 1;
    for (int i = 0; i < n; i++)
        S = AP_MAX(S, lb->input_len[r + i]);
    for (int i = 0; i < n; i++)
        memcpy(L->mb_in + (size_t)i * S, lb->inputs + (size_t)(r + i) * lb->S,
               (size_t)S * sizeof *L->mb_in);
    *S_out = S;
    return ap_model_forward(L->model, L->mb_in, lb->input_len + r, n, S);
}

/* comp [n, T, V] = logits at the completion positions of rows [r, r + n) (0 past the end). */
static void s_gather(ap_learner_t *L, const float *logits, int r, int n, int S) {
    const ap_learner_batch_t *lb = L->lb;
    const int T = lb->T, V = lb->V;
    for (int i = 0; i < n; i++) {
        const int len = lb->length[r + i], p0 = lb->prompt_len[r + i] - 1;
        float *dst = L->comp + (size_t)i * T * V;
        if (len > 0) memcpy(dst, logits + ((size_t)i * S + p0) * V, (size_t)len * V * sizeof *dst);
        if (len < T) memset(dst + (size_t)len * V, 0, (size_t)(T - len) * V * sizeof *dst);
    }
}

/* logits [n, S, V] = dlogits: comp's rows at the completion positions, 0 elsewhere. */
static void s_scatter(ap_learner_t *L, float *logits, int r, int n, int S) {
    const ap_learner_batch_t *lb = L->lb;
    const int T = lb->T, V = lb->V;
    memset(logits, 0, (size_t)n * S * V * sizeof *logits);
    for (int i = 0; i < n; i++) {
        const int len = lb->length[r + i], p0 = lb->prompt_len[r + i] - 1;
        if (len > 0)
            memcpy(logits + ((size_t)i * S + p0) * V, L->comp + (size_t)i * T * V,
                   (size_t)len * V * sizeof *logits);
    }
}

/* Batch statistics that need no model: tokens, staleness, reward fallback. */
static void s_batch_stats(ap_learner_t *L, ap_learner_step_t *st) {
    const ap_learner_batch_t *lb = L->lb;
    double ssum = 0, smax = 0;
    long sn = 0;
    st->tokens = 0;
    for (int n = 0; n < lb->N; n++) {
        st->tokens += lb->length[n];
        if (!lb->on_policy[n] || lb->version[n].gen != L->version.gen) continue;
        double d = (double)L->version.step - (double)lb->version[n].step;
        ssum += d, smax = sn == 0 || d > smax ? d : smax, sn++;
    }
    st->staleness_mean = sn ? ssum / sn : NAN;
    st->staleness_max = sn ? smax : NAN;
}

static int s_skip(ap_learner_t *L, ap_learner_step_t *st, ap_learner_skip_t why, const char *msg) {
    st->skipped = why;
    L->skipped[why]++;
    if (why != AP_LEARNER_SKIP_STOPPED && ap_ratelimit_ok(&L->rl, 5.0))
        ap_log(AP_LOG_WARN, "learner: batch skipped (%s)%s%s [%ld suppressed]",
               ap_learner_skip_name(why), msg ? ": " : "", msg ? msg : "", L->rl.suppressed);
    return 0;
}

int ap_learner_step_core(ap_learner_t *L, const ap_batch_t *b, ap_learner_step_t *st) {
    const double t0 = ap_now();
    const ap_config_t *cfg = L->cfg;
    memset(st, 0, sizeof *st);
    st->loss = st->grad_norm = st->staleness_mean = st->staleness_max = NAN;
    st->skipped = AP_LEARNER_STEPPED;
    const long step0 = ap_model_step_count(L->model);
    st->lr = ap_lr_at(&L->sched, step0);
    st->version = L->version;
    L->batches++;
    L->logp_valid = 0;
    int rc = 0;

    /* 1. conversion */
    const int N = ap_learner_batch_build(L->lb, b, &L->bo);
    ap_learner_batch_t *lb = L->lb;
    st->transport_seconds = ap_now() - t0;
    st->N = N, st->T = lb->T;
    if (N == 0) {
        s_skip(L, st, AP_LEARNER_SKIP_EMPTY, "no trajectory to train on");
        goto done;
    }
    s_batch_stats(L, st);
    const int T = lb->T, V = lb->V;

    /* 2. masks */
    double t = ap_now();
    ap_masks_input_t in = {.N = N,
                           .T = T,
                           .tokens = lb->tokens,
                           .length = lb->length,
                           .truncated = lb->truncated,
                           .on_policy = lb->on_policy};
    int skip = ap_masks_build(lb->mask, lb->reward, lb->rep, &L->mcfg, &in, &st->mon);
    st->obj_seconds += ap_now() - t;
    if (skip) {
        s_skip(L, st, AP_LEARNER_SKIP_TRUNCATION, "truncation rate above the limit");
        goto done;
    }

    /* 3. forward / objectives / backward by micro-batches */
    const int mb =
        cfg->batch.micro_batch > 0 && cfg->batch.micro_batch < N ? cfg->batch.micro_batch : N;
    const int nmb = (N + mb - 1) / mb;
    const long next = step0 + 1;
    const int roll = L->dir && cfg->learner.rollouts_every > 0 &&
                     cfg->learner.rollouts_per_step > 0 && next % cfg->learner.rollouts_every == 0;
    const int want_logp = L->need_logp || roll, prepass = L->need_logp && nmb > 1;
    const double tau_s = cfg->sampling.temperature;
    s_grow((void **)&L->comp, &L->cap_comp, (size_t)mb * T * V, sizeof(float));
    s_grow((void **)&L->logp, &L->cap_logp, (size_t)N * T, sizeof(float));
    s_grow((void **)&L->mb_in, &L->cap_mb_in, (size_t)mb * lb->S, sizeof(int32_t));
    ap_model_zero_grad(L->model);
    int S_last = 0, planned = 0;
    if (prepass) {
        for (int k = 0; k < nmb; k++) {
            if (ap_learner_stopping(L)) {
                s_skip(L, st, AP_LEARNER_SKIP_STOPPED, NULL);
                goto done;
            }
            const int r = k * mb, n = AP_MIN(mb, N - r);
            t = ap_now();
            float *logits = s_forward(L, r, n, &S_last);
            if (!logits) {
                rc = ap_err("learner: forward: %s", ap_errmsg());
                goto done;
            }
            s_gather(L, logits, r, n, S_last);
            double t2 = ap_now();
            st->fb_seconds += t2 - t;
            ap_obj_sampled_logprobs(L->logp + (size_t)r * T, L->comp, lb->tokens + (size_t)r * T, n,
                                    T, V, tau_s);
            st->obj_seconds += ap_now() - t2;
        }
    }
    if (!L->need_logp || prepass) {
        t = ap_now();
        int prc = ap_obj_plan(L->obj, &lb->ob, L->need_logp ? L->logp : NULL);
        st->obj_seconds += ap_now() - t;
        if (prc < 0) {
            s_skip(L, st, AP_LEARNER_SKIP_PLAN, ap_errmsg());
            goto done;
        }
        planned = 1;
    }
    for (int idx = 0; idx < nmb; idx++) {
        if (ap_learner_stopping(L)) {
            s_skip(L, st, AP_LEARNER_SKIP_STOPPED, NULL);
            goto done;
        }
        const int k = prepass ? nmb - 1 - idx : idx, r = k * mb, n = AP_MIN(mb, N - r);
        int S;
        float *logits;
        t = ap_now();
        if (prepass && idx == 0) { /* the pre-pass's last forward is still in the model */
            logits = ap_model_logits(L->model);
            S = S_last;
        } else {
            if (!(logits = s_forward(L, r, n, &S))) {
                rc = ap_err("learner: forward: %s", ap_errmsg());
                goto done;
            }
            s_gather(L, logits, r, n, S);
        }
        double t2 = ap_now();
        st->fb_seconds += t2 - t;
        if (!prepass && want_logp)
            ap_obj_sampled_logprobs(L->logp + (size_t)r * T, L->comp, lb->tokens + (size_t)r * T, n,
                                    T, V, tau_s);
        if (!planned) { /* one micro-batch: its log-probs are the whole batch's */
            if (ap_obj_plan(L->obj, &lb->ob, L->logp) < 0) {
                st->obj_seconds += ap_now() - t2;
                s_skip(L, st, AP_LEARNER_SKIP_PLAN, ap_errmsg());
                goto done;
            }
            planned = 1;
        }
        ap_obj_eval(L->obj, r, n, L->comp, L->comp);
        double t3 = ap_now();
        st->obj_seconds += t3 - t2;
        s_scatter(L, logits, r, n, S);
        ap_model_backward(L->model, logits);
        st->fb_seconds += ap_now() - t3;
    }
    L->logp_valid = want_logp;

    /* 4. finish, guard, optimizer */
    t = ap_now();
    ap_obj_result_t res;
    ap_obj_finish(L->obj, &res, &st->mon);
    st->obj_seconds += ap_now() - t;
    st->loss = res.loss;
    if (res.nonfinite) {
        s_skip(L, st, AP_LEARNER_SKIP_NONFINITE, "loss or gradient not finite");
        goto done;
    }
    if (L->before_update) {
        t = ap_now();
        int brc = L->before_update(L->before_update_data);
        double dt = ap_now() - t;
        st->publish_seconds += dt, st->transport_seconds += dt;
        if (brc < 0) {
            rc = -1;
            goto done;
        }
    }
    t = ap_now();
    st->grad_norm = ap_model_step(L->model, &L->opt, st->lr);
    st->fb_seconds += ap_now() - t;
    if (!isfinite(st->grad_norm)) {
        s_skip(L, st, AP_LEARNER_SKIP_NONFINITE, "gradient norm not finite");
        goto done;
    }
    L->version.step = (uint64_t)ap_model_step_count(L->model);
    L->tokens_total += st->tokens;
done:
    st->version = L->version;
    st->seconds = ap_now() - t0;
    return rc;
}

/* ---- metrics, rollouts, checkpoints -------------------------------------------------------- */

static void s_add_metrics(ap_learner_t *L, const ap_learner_step_t *st) {
    ap_metrics_t *m = L->metrics;
    const ap_learner_batch_t *lb = L->lb;
    double now = ap_now(), wall = now - L->last_record;
    L->busy_acc += st->seconds;
    ap_metrics_begin(m, (long)L->version.step);
    for (int i = 0; i < st->mon.n; i++)
        ap_metrics_add(m, st->mon.name[i], st->mon.value[i]);
    if (!ap_monitors_has(&st->mon, "loss/total")) ap_metrics_add(m, "loss/total", st->loss);
    if (!ap_monitors_has(&st->mon, "reward/mean") && st->N > 0) { /* no PG objective: our own */
        double s = 0;
        int c = 0;
        for (int n = 0; n < lb->N; n++)
            if (lb->on_policy[n] && isfinite(lb->reward[n])) s += lb->reward[n], c++;
        if (c) ap_metrics_add(m, "reward/mean", s / c);
    }
    if (st->N > 0 && st->skipped != AP_LEARNER_SKIP_EMPTY) {
        ap_metrics_add(m, "length/mean", ap_monitors_get(&st->mon, "len/mean", NAN));
        ap_metrics_add(m, "length/truncation_rate",
                       ap_monitors_get(&st->mon, "len/trunc_rate", NAN));
        ap_metrics_add(m, "repetition/mean", ap_monitors_get(&st->mon, "rep/mean", NAN));
    }
    ap_metrics_add(m, "learner/grad_norm", st->grad_norm);
    ap_metrics_add(m, "learner/lr", st->lr);
    ap_metrics_add(m, "learner/skipped", st->skipped != AP_LEARNER_STEPPED);
    long total = 0;
    for (int k = 1; k < AP_LEARNER_SKIP_COUNT; k++) {
        char name[64];
        snprintf(name, sizeof name, "learner/skipped_%s", s_skip_names[k]);
        ap_metrics_add(m, name, L->skipped[k]);
        total += L->skipped[k];
    }
    ap_metrics_add(m, "learner/skipped_steps", total);
    ap_metrics_add(m, "learner/busy_frac", wall > 0 ? AP_MIN(1.0, L->busy_acc / wall) : 1.0);
    ap_metrics_add(m, "learner/wait_s", L->wait_acc);
    ap_metrics_add(m, "learner/step_s", st->seconds);
    ap_metrics_add(m, "learner/forward_backward_s", st->fb_seconds);
    ap_metrics_add(m, "learner/objectives_s", st->obj_seconds);
    ap_metrics_add(m, "learner/transport_s", st->transport_seconds);
    ap_metrics_add(m, "learner/convert_s", st->transport_seconds - st->publish_seconds);
    if (L->net) ap_metrics_add(m, "learner/publish_s", st->publish_seconds);
    if (st->seconds > 0) {
        ap_metrics_add(m, "learner/objectives_frac", st->obj_seconds / st->seconds);
        ap_metrics_add(m, "learner/transport_frac", st->transport_seconds / st->seconds);
        ap_metrics_add(m, "learner/tokens_per_s", st->tokens / st->seconds);
    }
    if (L->net) {
        ap_metrics_add(m, "learner/io_s", L->io_acc);
        ap_metrics_add(m, "learner/batches_received", L->io_received);
        ap_metrics_add(m, "learner/resets", L->io_resets);
        ap_metrics_add(m, "learner/late_parts", L->io_late);
        ap_metrics_add(m, "learner/publish_superseded", L->io_superseded);
        ap_metrics_add(m, "learner/bad_parts", L->io_bad);
        ap_metrics_add(m, "learner/rejected", L->io_rejected);
    }
    ap_metrics_add(m, "learner/trajectories", st->N);
    ap_metrics_add(m, "learner/tokens", (double)st->tokens);
    ap_metrics_add(m, "learner/version_gen", L->version.gen);
    ap_metrics_add(m, "staleness/mean", st->staleness_mean);
    ap_metrics_add(m, "staleness/max", st->staleness_max);
    ap_metrics_add(m, "learner/dropped", (double)lb->dropped);
    ap_metrics_add(m, "learner/bad_scores", (double)lb->bad_scores);
    ap_metrics_add(m, "learner/bad_temperature", (double)lb->bad_temperature);
    ap_metrics_add(m, "learner/missing_external", (double)lb->missing[AP_TEACHER_EXTERNAL]);
    ap_metrics_add(m, "learner/missing_self", (double)lb->missing[AP_TEACHER_SELF]);
    ap_metrics_add(m, "learner/missing_reference", (double)lb->missing[AP_TEACHER_REFERENCE]);
    if (ap_metrics_end(m) < 0) ap_log(AP_LOG_WARN, "learner: metrics: %s", ap_errmsg());
    L->last_record = now;
    L->busy_acc = L->wait_acc = L->io_acc = 0;
}

static json_t *s_real_or_null(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *s_row(const float *x, int n) {
    json_t *a = json_array();
    for (int t = 0; t < n; t++)
        json_array_append_new(a, s_real_or_null(x[t]));
    return a;
}

/* Which objectives see trajectory n (SRPO: its branch). */
static void s_route(const ap_learner_t *L, int n, char *buf, size_t cap) {
    const ap_obj_config_t *c = ap_obj_config(L->obj);
    const ap_learner_batch_t *lb = L->lb;
    buf[0] = 0;
    size_t used = 0;
#define S_ADD(name)                                                                                \
    used += (size_t)snprintf(buf + used, cap > used ? cap - used : 0, "%s%s", used ? "+" : "", name)
    if (c->gkd.c.enabled) S_ADD("gkd");
    if (lb->on_policy[n]) {
        if (c->opd.c.enabled) S_ADD("opd");
        if (c->grpo.c.enabled) S_ADD("grpo");
        if (c->opsd.c.enabled && lb->has_teacher[n]) S_ADD("opsd");
        if (c->srpo.c.enabled)
            S_ADD(!lb->correct[n] && lb->has_teacher[n] ? "srpo_sd" : "srpo_grpo");
    }
#undef S_ADD
    if (!buf[0]) snprintf(buf, cap, "none");
}

static int s_rollouts(ap_learner_t *L, const ap_batch_t *b) {
    const ap_learner_batch_t *lb = L->lb;
    const int k = AP_MIN(L->cfg->learner.rollouts_per_step, lb->N), T = lb->T;
    char *path = ap_rundir_path(L->dir, "rollouts.jsonl");
    FILE *f = fopen(path, "a");
    if (!f) {
        int rc = ap_err("%s: cannot append", path);
        free(path);
        return rc;
    }
    /* k trajectories spread over the batch, starting at a random offset */
    int start = (int)ap_rng_below(&L->rng, (uint64_t)lb->N);
    for (int i = 0; i < k; i++) {
        int n = (start + (int)((long)i * lb->N / k)) % lb->N;
        const ap_group_t *g = b->items[lb->item[n]].group;
        const int len = lb->length[n];
        const int32_t *y = lb->tokens + (size_t)n * T;
        char *prompt = g->prompt_text[0] ? ap_strdup(g->prompt_text)
                                         : ap_tokenizer_decode(L->tok, g->prompt, g->n_prompt, 0);
        char *comp = ap_tokenizer_decode(L->tok, y, len, AP_TOK_SPECIALS);
        char route[96];
        s_route(L, n, route, sizeof route);
        double kept = 0;
        for (int t = 0; t < len; t++)
            kept += lb->mask[(size_t)n * T + t];
        json_t *o = json_object();
        json_object_set_new(o, "step", json_integer((json_int_t)L->version.step));
        json_object_set_new(o, "gen", json_integer(L->version.gen));
        json_object_set_new(o, "group_id", json_integer((json_int_t)g->id));
        json_object_set_new(o, "index", json_integer(lb->index[n]));
        json_object_set_new(o, "source", json_string(lb->on_policy[n] ? "on_policy" : "dataset"));
        json_object_set_new(o, "policy_step", json_integer((json_int_t)lb->version[n].step));
        json_object_set_new(o, "prompt", json_string(prompt ? prompt : ""));
        json_object_set_new(o, "completion", json_string(comp ? comp : ""));
        json_object_set_new(o, "finish", json_string(lb->truncated[n] ? "length" : "eos"));
        json_object_set_new(o, "reward", s_real_or_null(lb->reward[n]));
        json_object_set_new(o, "correct", json_boolean(lb->correct[n]));
        json_object_set_new(o, "h", json_boolean(lb->has_teacher[n]));
        json_object_set_new(o, "route", json_string(route));
        json_object_set_new(o, "kept_tokens", json_real(kept));
        json_object_set_new(o, "feedback", json_string(g->feedback[lb->index[n]]));
        if (L->logp_valid)
            json_object_set_new(o, "student_logprobs", s_row(L->logp + (size_t)n * T, len));
        if (lb->on_policy[n])
            json_object_set_new(o, "behavior_logprobs", s_row(lb->behavior + (size_t)n * T, len));
        if (lb->sig[AP_TEACHER_EXTERNAL].present)
            json_object_set_new(o, "teacher_logprobs",
                                s_row(lb->sig[AP_TEACHER_EXTERNAL].sampled + (size_t)n * T, len));
        if (lb->has_teacher[n])
            json_object_set_new(o, "self_teacher_logprobs",
                                s_row(lb->sig[AP_TEACHER_SELF].sampled + (size_t)n * T, len));
        char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        fprintf(f, "%s\n", line);
        free(line);
        json_decref(o);
        free(prompt);
        free(comp);
    }
    int rc = 0;
    if (fclose(f) != 0) rc = ap_err("%s: write failed", path);
    free(path);
    return rc;
}

int ap_learner_checkpoint(ap_learner_t *L) {
    if (!L->dir) return ap_err("learner: no run directory to checkpoint into");
    const long step = (long)L->version.step;
    char *ckpt = ap_sprintf("%s/ckpt/step-%ld", L->dir, step);
    json_t *root = json_object(), *sk = json_object();
    json_object_set_new(root, "role", json_string("learner"));
    json_t *ver = json_object();
    json_object_set_new(ver, "gen", json_integer(L->version.gen));
    json_object_set_new(ver, "step", json_integer((json_int_t)step));
    json_object_set_new(root, "version", ver);
    json_object_set_new(root, "gen", json_integer(L->version.gen));
    json_object_set_new(root, "elapsed_s", json_real(ap_learner_elapsed(L)));
    json_object_set_new(root, "tokens", json_integer(L->tokens_total));
    for (int k = 1; k < AP_LEARNER_SKIP_COUNT; k++)
        json_object_set_new(sk, s_skip_names[k], json_integer(L->skipped[k]));
    json_object_set_new(root, "skipped_this_life", sk);
    char *user = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    int rc = -1;
    double t0 = ap_now();
    if (ap_model_save(L->model, ckpt) == 0 && ap_tokenizer_save_dir(L->tok, ckpt) == 0 &&
        ap_model_save_state(L->model, ckpt, &L->rng, user) == 0 &&
        ap_rundir_set_latest(L->dir, step, L->cfg->learner.keep_checkpoints) == 0) {
        rc = 0;
        L->last_ckpt = step;
        ap_metrics_begin(L->metrics, step);
        ap_metrics_add_str(L->metrics, "event", "checkpoint");
        ap_metrics_add(L->metrics, "learner/checkpoint_s", ap_now() - t0);
        ap_metrics_end(L->metrics);
    } else {
        ap_err("learner: checkpoint %s: %s", ckpt, ap_errmsg());
    }
    free(user);
    free(ckpt);
    return rc;
}

int ap_learner_after_step(ap_learner_t *L, const ap_batch_t *b, const ap_learner_step_t *st) {
    double t0 = ap_now();
    s_add_metrics(L, st);
    int rc = 0;
    const ap_learner_cfg_t *lc = &L->cfg->learner;
    const long step = (long)L->version.step;
    if (st->skipped == AP_LEARNER_STEPPED && L->dir) {
        if (lc->rollouts_every > 0 && lc->rollouts_per_step > 0 && step % lc->rollouts_every == 0 &&
            s_rollouts(L, b) < 0)
            ap_log(AP_LOG_WARN, "learner: rollouts: %s", ap_errmsg());
        if (lc->checkpoint_every > 0 && step % lc->checkpoint_every == 0 && step != L->last_ckpt)
            rc = ap_learner_checkpoint(L);
    }
    L->busy_acc += ap_now() - t0; /* counted in the next record */
    return rc;
}

int ap_learner_step(ap_learner_t *L, const ap_batch_t *b, ap_learner_step_t *st) {
    if (ap_learner_step_core(L, b, st) < 0) return -1;
    return ap_learner_after_step(L, b, st);
}
