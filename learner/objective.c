/* objective.c: the learner's objectives over a batch (ALGORITHMS.md): gkd, opd, grpo, opsd,
 * srpo and their weighted sum, with the reductions token_mean / seq_mean / const, exact under
 * micro-batching.
 *
 * The plan (whole batch, no logits) turns every objective into one per-token coefficient
 * array coef[k][n, t] >= 0: the token's effective mask (base mask, on-policy only, staleness,
 * dynamic sampling, SRPO routing, h, non-finite teacher signals) times its reduction factor
 * (1 / whole-batch token count, 1 / (sequence count * the sequence's token count), or
 * 1 / (N_seen * max_new_tokens)) times SRPO's normalized entropy weight. Objective k's loss is
 * then sum_{n,t} coef[k][n,t] * l_k[n,t], a plain sum over tokens: any partition of the rows
 * into micro-batches gives the same total and the same gradient rows. Group advantages are
 * planned per trajectory.
 *
 * The eval (per micro-batch, hot path, no allocation) visits each position once: one softmax
 * at tau_s shared by the policy-gradient objectives (opd, grpo, srpo's GRPO branch) and the
 * entropy monitor, with their d loss / d logp_theta summed before one gradient pass; then each
 * divergence objective (gkd, opsd, srpo's SD branch) through ap_obj_divergence; then the
 * teacher-student monitors. Positions with no coefficient and no monitor are skipped (their
 * gradient rows are zero), so fully masked tokens never produce NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"
#include "learner/divergence.h"

/* Per-position state set by the plan. `reason` holds, for each signal form f (below), two bits
 * (1: a non-finite value, 2: an id outside [0, V) or repeated) at bit 2f; `flags` holds why the
 * position was masked in some objective (counted once per position). */
enum { S_T_FULL = 0, S_T_TOPK = 1, S_S_FULL = 2, S_S_TOPK = 3 }; /* signal forms */
enum { S_WHY_NONFIN = 1, S_WHY_BADID = 2 };

struct ap_obj {
    ap_obj_config_t cfg;
    int monitors;
    /* the planned step */
    int planned;
    ap_obj_batch_t b;                  /* borrowed arrays */
    ap_support_t sup[AP_OBJ_COUNT];    /* resolved supports (gkd, opsd, srpo) */
    size_t cap_nt, cap_n;
    float *coef[AP_OBJ_COUNT];         /* [N*T] per-token coefficient (0 = not part of it) */
    float *adv_grpo, *adv_srpo;        /* [N] group advantages */
    uint8_t *sd;                       /* [N] 1 = SRPO self-distillation branch */
    uint8_t *reason;                   /* [N*T] per signal form: why it is unusable */
    uint8_t *flags;                    /* [N*T] S_WHY_*: why masked in some objective */
    uint8_t *mark;                     /* [V] zeroed between uses (duplicate-id check) */
    int mon_t_topk, mon_s_topk;        /* monitor form per signal (-1: no monitor) */
    /* scratch, sized for V */
    int cap_v;
    void *scratch;                     /* ap_obj_scratch_size(V) bytes, zeroed */
    float *ex;                         /* [V] softmax at tau_s */
    float *grow;                       /* [V] gradient of the current position (in-place eval) */
    /* accumulators of the step */
    double loss[AP_OBJ_COUNT], den[AP_OBJ_COUNT];
    int nonfinite;
    ap_monitors_t pm;                  /* monitors known at plan time */
    double ent_sum, ent_n;             /* student entropy at tau_s */
    double kl_ts[2], kl_st[2], ov[2], mon_n[2]; /* [0] teacher, [1] self-teacher */
    double pg_n, clip_n, dual_n, k3_sum, k3_n;
};

ap_obj_t *ap_obj_new(const ap_obj_config_t *cfg) {
    if (ap_obj_config_validate(cfg) < 0) return NULL;
    ap_obj_t *o = ap_calloc(1, sizeof *o);
    o->cfg = *cfg;
    o->monitors = cfg->monitors;
    return o;
}

void ap_obj_destroy(ap_obj_t **p) {
    if (!p || !*p) return;
    ap_obj_t *o = *p;
    for (int k = 0; k < AP_OBJ_COUNT; k++) free(o->coef[k]);
    free(o->adv_grpo), free(o->adv_srpo), free(o->sd), free(o->flags), free(o->reason);
    free(o->scratch), free(o->ex), free(o->mark), free(o->grow);
    free(o);
    *p = NULL;
}

const ap_obj_config_t *ap_obj_config(const ap_obj_t *o) { return &o->cfg; }

void ap_obj_set_monitors(ap_obj_t *o, int on) { o->monitors = on; }

/* ---- plan helpers -------------------------------------------------------------------------- */

static void s_reserve(ap_obj_t *o, int N, int T, int V) {
    size_t nt = (size_t)N * T;
    if (nt > o->cap_nt) {
        for (int k = 0; k < AP_OBJ_COUNT; k++) {
            free(o->coef[k]);
            o->coef[k] = ap_malloc(nt * sizeof(float));
        }
        free(o->flags), free(o->reason);
        o->flags = ap_malloc(nt);
        o->reason = ap_malloc(nt);
        o->cap_nt = nt;
    }
    if ((size_t)N > o->cap_n) {
        free(o->adv_grpo), free(o->adv_srpo), free(o->sd);
        o->adv_grpo = ap_malloc((size_t)N * sizeof(float));
        o->adv_srpo = ap_malloc((size_t)N * sizeof(float));
        o->sd = ap_malloc((size_t)N);
        o->cap_n = (size_t)N;
    }
    if (V > o->cap_v) {
        free(o->scratch), free(o->ex), free(o->mark), free(o->grow);
        o->scratch = ap_calloc(1, ap_obj_scratch_size(V));
        o->ex = ap_malloc((size_t)V * sizeof(float));
        o->grow = ap_malloc((size_t)V * sizeof(float));
        o->mark = ap_calloc(1, (size_t)V);
        o->cap_v = V;
    }
}

static ap_support_t s_resolve(ap_support_t s, const ap_obj_config_t *c, int V) {
    if (s != AP_SUPPORT_AUTO) return s;
    return V <= c->full_vocab_max ? AP_SUPPORT_FULL : AP_SUPPORT_TOPK_TAIL;
}

static int s_need(const void *p, const char *obj, const char *what) {
    if (p) return 0;
    return ap_err("objective %s needs the batch's '%s' array (NULL)", obj, what);
}

static int s_need_signal(const char *obj, const char *who, const ap_obj_signal_t *s,
                         ap_support_t sup, double tau, int K) {
    if (sup == AP_SUPPORT_FULL && !s->full)
        return ap_err("objective %s (support full) needs the %s's full distribution", obj, who);
    if (sup != AP_SUPPORT_FULL && (!s->topk_ids || !s->topk_lp || s->K < 1))
        return ap_err("objective %s (support %s) needs the %s's top-K ids and log-probs", obj,
                      sup == AP_SUPPORT_TOPK ? "topk" : "topk_tail", who);
    if (sup != AP_SUPPORT_FULL && K > 0 && s->K != K)
        return ap_err("objective %s: the %s's top-K has K = %d, the config says K = %d", obj, who,
                      s->K, K);
    if (!(fabs(s->tau - tau) <= 1e-9 * tau))
        return ap_err("objective %s needs the %s's distributions at temperature %g; they are at "
                      "%g",
                      obj, who, tau, s->tau);
    return 0;
}

/* 0 usable, S_WHY_NONFIN, or S_WHY_BADID: the signal at `pos` in one form. */
static int s_signal_check(const ap_obj_signal_t *s, int topk, size_t pos, int V, uint8_t *mark) {
    if (!topk) {
        const float *lp = s->full + pos * V;
        float acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int v = 0; v < V; v++) acc += lp[v] * 0.0f; /* NaN iff some entry is NaN/Inf */
        return acc == 0 ? 0 : S_WHY_NONFIN;
    }
    const int32_t *ids = s->topk_ids + pos * s->K;
    const float *lp = s->topk_lp + pos * s->K;
    int why = 0, j;
    for (j = 0; j < s->K; j++) {
        if (!isfinite(lp[j])) why |= S_WHY_NONFIN;
        if (ids[j] < 0 || ids[j] >= V || mark[ids[j]]) {
            why |= S_WHY_BADID;
            break;
        }
        mark[ids[j]] = 1;
    }
    for (int i = 0; i < j; i++) mark[ids[i]] = 0;
    return why;
}

/* Check form f of signal `s` at every unmasked position of the rows with rows[n] != 0 (rows
 * NULL: all) and record the reasons. */
static void s_check_signal(ap_obj_t *o, const ap_obj_signal_t *s, int f, const int32_t *rows) {
    const ap_obj_batch_t *b = &o->b;
    for (int n = 0; n < b->N; n++) {
        if (rows && !rows[n]) continue;
        for (int t = 0; t < b->T; t++) {
            size_t pos = (size_t)n * b->T + t;
            if (!(b->mask[pos] > 0)) continue;
            int why = s_signal_check(s, f & 1, pos, b->V, o->mark);
            o->reason[pos] |= (uint8_t)(why << (2 * f));
        }
    }
}

/* Why form f is unusable at pos (0: usable). */
static int s_bad(const ap_obj_t *o, size_t pos, int f) { return (o->reason[pos] >> (2 * f)) & 3; }

static int s_on(const ap_obj_batch_t *b, int n) { return !b->on_policy || b->on_policy[n]; }

/* Staleness: sg(rho) > C or sg(rho) < 1/C (a non-finite behaviour log-prob is stale; a
 * non-finite logp_theta is left in so the non-finite guard sees it). */
static int s_stale(double lpt, double bh, double C) {
    if (!isfinite(lpt)) return 0;
    double d = lpt - bh, lc = log(C);
    return !(d <= lc && d >= -lc);
}

/* Group advantages of the on-policy trajectories with finite rewards (others get 0); `drop`
 * [N] (may be NULL) = 1 when the trajectory's group has all-equal rewards. */
static void s_advantages(const ap_obj_batch_t *b, ap_scale_t scale, float *adv, uint8_t *drop,
                         int *groups, int *dropped) {
    *groups = 0, *dropped = 0;
    for (int n = 0; n < b->N; n++) {
        adv[n] = 0;
        if (drop) drop[n] = 0;
        if (!s_on(b, n) || !isfinite(b->reward[n])) continue;
        int cnt = 0, first = 1, equal = 1;
        double sum = 0;
        for (int j = 0; j < b->N; j++) {
            if (!s_on(b, j) || b->group[j] != b->group[n] || !isfinite(b->reward[j])) continue;
            if (j < n) first = 0;
            cnt++, sum += b->reward[j];
            if (b->reward[j] != b->reward[n]) equal = 0;
        }
        double mean = sum / cnt, ss = 0;
        for (int j = 0; j < b->N; j++) {
            if (!s_on(b, j) || b->group[j] != b->group[n] || !isfinite(b->reward[j])) continue;
            ss += (b->reward[j] - mean) * (b->reward[j] - mean);
        }
        double a = 0;
        if (cnt >= 2) {
            a = b->reward[n] - mean;
            if (scale == AP_SCALE_GROUP) a /= sqrt(ss / (cnt - 1)) + 1e-6;
        }
        adv[n] = (float)a;
        if (drop) drop[n] = (uint8_t)equal;
        if (first) {
            (*groups)++;
            if (equal) (*dropped)++;
        }
    }
}

/* Turn the effective mask in coef[k] into the reduction's coefficients; returns the
 * denominator. n_seen: trajectories the objective sees (for const). */
static double s_reduce(ap_obj_t *o, int k, const ap_obj_common_t *cc, int n_seen) {
    const int N = o->b.N, T = o->b.T;
    float *w = o->coef[k];
    double den = 0;
    if (cc->reduce == AP_REDUCE_SEQ_MEAN) {
        int S = 0;
        for (int n = 0; n < N; n++) {
            double rs = 0;
            for (int t = 0; t < T; t++) rs += w[(size_t)n * T + t];
            S += rs > 0;
        }
        for (int n = 0; n < N; n++) {
            double rs = 0;
            for (int t = 0; t < T; t++) rs += w[(size_t)n * T + t];
            double f = rs > 0 ? 1.0 / (rs * S) : 0;
            for (int t = 0; t < T; t++) w[(size_t)n * T + t] = (float)(w[(size_t)n * T + t] * f);
        }
        return S;
    }
    if (cc->reduce == AP_REDUCE_CONST) {
        den = (double)n_seen * cc->max_new_tokens;
    } else {
        for (size_t i = 0; i < (size_t)N * T; i++) den += w[i];
    }
    double f = den > 0 ? 1.0 / den : 0;
    for (size_t i = 0; i < (size_t)N * T; i++) w[i] = (float)(w[i] * f);
    return den;
}

/* Effective mask of a policy-gradient objective at (n, t) before the reduction. */
static float s_pg_mask(ap_obj_t *o, size_t pos, const float *lpt, double C, double *stale_cnt) {
    const ap_obj_batch_t *b = &o->b;
    float m = b->mask[pos];
    int y = b->tokens[pos];
    if (y < 0 || y >= b->V) {
        o->flags[pos] |= S_WHY_BADID;
        return 0;
    }
    if (s_stale(lpt[pos], b->behavior[pos], C)) {
        *stale_cnt += m;
        return 0;
    }
    return m;
}

/* ---- plan ---------------------------------------------------------------------------------- */

int ap_obj_plan(ap_obj_t *o, const ap_obj_batch_t *b, const float *lpt) {
    const ap_obj_config_t *c = &o->cfg;
    AP_ASSERT(b->N >= 1 && b->T >= 1 && b->V >= 1);
    o->planned = 0;
    if (s_need(b->mask, "any", "mask") < 0) return -1;
    o->sup[AP_OBJ_GKD] = s_resolve(c->gkd.support, c, b->V);
    o->sup[AP_OBJ_OPSD] = s_resolve(c->opsd.support, c, b->V);
    o->sup[AP_OBJ_SRPO] = s_resolve(c->srpo.support, c, b->V);
    const int pg_any = c->opd.c.enabled || c->grpo.c.enabled || c->srpo.c.enabled;
    if (pg_any && (s_need(b->tokens, "opd/grpo/srpo", "tokens") < 0 ||
                   s_need(b->behavior, "opd/grpo/srpo", "behavior") < 0 ||
                   s_need(lpt, "opd/grpo/srpo", "logp_theta") < 0))
        return -1;
    if (c->gkd.c.enabled &&
        s_need_signal("gkd", "teacher", &b->teacher, o->sup[AP_OBJ_GKD], c->gkd.tau, c->K) < 0)
        return -1;
    if (c->opd.c.enabled && s_need(b->teacher_sampled, "opd", "teacher_sampled") < 0) return -1;
    if (c->grpo.c.enabled &&
        (s_need(b->reward, "grpo", "reward") < 0 || s_need(b->group, "grpo", "group") < 0 ||
         (c->grpo.kl_ref > 0 && s_need(b->ref, "grpo", "ref") < 0)))
        return -1;
    if (c->opsd.c.enabled &&
        (s_need(b->has_teacher, "opsd", "has_teacher") < 0 ||
         s_need_signal("opsd", "self-teacher", &b->self_teacher, o->sup[AP_OBJ_OPSD], c->opsd.tau,
                       c->K) < 0))
        return -1;
    if (c->srpo.c.enabled &&
        (s_need(b->reward, "srpo", "reward") < 0 || s_need(b->group, "srpo", "group") < 0 ||
         s_need(b->correct, "srpo", "correct") < 0 ||
         s_need(b->has_teacher, "srpo", "has_teacher") < 0 ||
         s_need_signal("srpo", "self-teacher", &b->self_teacher, o->sup[AP_OBJ_SRPO], 1.0, c->K) <
             0))
        return -1;

    const int N = b->N, T = b->T;
    const size_t NT = (size_t)N * T;
    s_reserve(o, N, T, b->V);
    o->b = *b;
    memset(o->flags, 0, NT);
    memset(o->reason, 0, NT);
    for (int k = 0; k < AP_OBJ_COUNT; k++) {
        memset(o->coef[k], 0, NT * sizeof(float));
        o->loss[k] = 0, o->den[k] = 0;
    }
    o->nonfinite = 0;
    ap_monitors_clear(&o->pm);
    o->ent_sum = o->ent_n = 0;
    for (int i = 0; i < 2; i++) o->kl_ts[i] = o->kl_st[i] = o->ov[i] = o->mon_n[i] = 0;
    o->pg_n = o->clip_n = o->dual_n = o->k3_sum = o->k3_n = 0;

    int n_on = 0;
    for (int n = 0; n < N; n++) n_on += s_on(b, n);

    /* Which forms of each signal to check: the objectives' and the monitors'. */
    const ap_obj_signal_t *ts = &b->teacher, *ss = &b->self_teacher;
    int t_full = c->gkd.c.enabled && o->sup[AP_OBJ_GKD] == AP_SUPPORT_FULL;
    int t_topk = c->gkd.c.enabled && o->sup[AP_OBJ_GKD] != AP_SUPPORT_FULL;
    int s_full = (c->opsd.c.enabled && o->sup[AP_OBJ_OPSD] == AP_SUPPORT_FULL) ||
                 (c->srpo.c.enabled && o->sup[AP_OBJ_SRPO] == AP_SUPPORT_FULL);
    int s_topk = (c->opsd.c.enabled && o->sup[AP_OBJ_OPSD] != AP_SUPPORT_FULL) ||
                 (c->srpo.c.enabled && o->sup[AP_OBJ_SRPO] != AP_SUPPORT_FULL);
    o->mon_t_topk = o->mon_s_topk = -1;
    if (o->monitors) {
        if (t_full || t_topk) o->mon_t_topk = t_topk;
        else if (ts->full) o->mon_t_topk = 0;
        else if (ts->topk_ids && ts->topk_lp && ts->K > 0) o->mon_t_topk = 1;
        if (o->mon_t_topk >= 0 && !(ts->tau > 0)) o->mon_t_topk = -1;
        if (c->opsd.c.enabled) o->mon_s_topk = o->sup[AP_OBJ_OPSD] != AP_SUPPORT_FULL;
        else if (c->srpo.c.enabled) o->mon_s_topk = o->sup[AP_OBJ_SRPO] != AP_SUPPORT_FULL;
        else if (ss->full) o->mon_s_topk = 0;
        else if (ss->topk_ids && ss->topk_lp && ss->K > 0) o->mon_s_topk = 1;
        if (o->mon_s_topk >= 0 && !(ss->tau > 0)) o->mon_s_topk = -1;
        t_full |= o->mon_t_topk == 0, t_topk |= o->mon_t_topk == 1;
        s_full |= o->mon_s_topk == 0, s_topk |= o->mon_s_topk == 1;
    }
    if (t_full) s_check_signal(o, ts, S_T_FULL, NULL);
    if (t_topk) s_check_signal(o, ts, S_T_TOPK, NULL);
    if (s_full) s_check_signal(o, ss, S_S_FULL, b->has_teacher);
    if (s_topk) s_check_signal(o, ss, S_S_TOPK, b->has_teacher);

    double stale_cnt = 0, cand = 0, rho_sum = 0, rho_max = 0, rho_n = 0;
    double C_min = INFINITY;
    if (c->opd.c.enabled) C_min = fmin(C_min, c->opd.pg.max_is_ratio);
    if (c->grpo.c.enabled) C_min = fmin(C_min, c->grpo.pg.max_is_ratio);
    if (c->srpo.c.enabled) C_min = fmin(C_min, c->srpo.pg.max_is_ratio);
    if (pg_any) { /* importance ratio statistics over the on-policy unmasked tokens */
        for (int n = 0; n < N; n++) {
            if (!s_on(b, n)) continue;
            for (int t = 0; t < T; t++) {
                size_t pos = (size_t)n * T + t;
                if (!(b->mask[pos] > 0) || b->tokens[pos] < 0 || b->tokens[pos] >= b->V) continue;
                cand += b->mask[pos];
                if (s_stale(lpt[pos], b->behavior[pos], C_min)) stale_cnt += b->mask[pos];
                double rho = exp((double)lpt[pos] - b->behavior[pos]);
                if (!isfinite(rho)) continue;
                rho_sum += rho, rho_n++;
                rho_max = rho > rho_max ? rho : rho_max;
            }
        }
    }

    /* gkd: every trajectory. */
    if (c->gkd.c.enabled) {
        float *w = o->coef[AP_OBJ_GKD];
        int f = o->sup[AP_OBJ_GKD] == AP_SUPPORT_FULL ? S_T_FULL : S_T_TOPK;
        for (size_t pos = 0; pos < NT; pos++) {
            if (!(b->mask[pos] > 0)) continue;
            if (s_bad(o, pos, f)) {
                o->flags[pos] |= (uint8_t)s_bad(o, pos, f);
                continue;
            }
            w[pos] = b->mask[pos];
        }
        o->den[AP_OBJ_GKD] = s_reduce(o, AP_OBJ_GKD, &c->gkd.c, N);
    }
    /* opd: on-policy, staleness, finite lt. */
    if (c->opd.c.enabled) {
        float *w = o->coef[AP_OBJ_OPD];
        double st = 0;
        for (int n = 0; n < N; n++) {
            if (!s_on(b, n)) continue;
            for (int t = 0; t < T; t++) {
                size_t pos = (size_t)n * T + t;
                if (!(b->mask[pos] > 0)) continue;
                if (!isfinite(b->teacher_sampled[pos])) {
                    o->flags[pos] |= S_WHY_NONFIN;
                    continue;
                }
                w[pos] = s_pg_mask(o, pos, lpt, c->opd.pg.max_is_ratio, &st);
            }
        }
        o->den[AP_OBJ_OPD] = s_reduce(o, AP_OBJ_OPD, &c->opd.c, n_on);
    }
    /* grpo: on-policy, group advantages, dynamic sampling, staleness, finite ref. */
    if (c->grpo.c.enabled) {
        float *w = o->coef[AP_OBJ_GRPO];
        uint8_t *drop = o->sd; /* borrowed as scratch until srpo */
        int groups, dropped, dropped_traj = 0, nonfin_reward = 0;
        double st = 0;
        s_advantages(b, c->grpo.scale_rewards, o->adv_grpo, drop, &groups, &dropped);
        for (int n = 0; n < N; n++) {
            if (!s_on(b, n)) continue;
            if (!isfinite(b->reward[n])) {
                nonfin_reward++;
                continue;
            }
            if (c->grpo.dynamic_sampling && drop[n]) {
                dropped_traj++;
                continue;
            }
            for (int t = 0; t < T; t++) {
                size_t pos = (size_t)n * T + t;
                if (!(b->mask[pos] > 0)) continue;
                if (c->grpo.kl_ref > 0 && !isfinite(b->ref[pos])) {
                    o->flags[pos] |= S_WHY_NONFIN;
                    continue;
                }
                w[pos] = s_pg_mask(o, pos, lpt, c->grpo.pg.max_is_ratio, &st);
            }
        }
        o->den[AP_OBJ_GRPO] = s_reduce(o, AP_OBJ_GRPO, &c->grpo.c, n_on);
        ap_monitors_set(&o->pm, "grpo/groups", groups);
        ap_monitors_set(&o->pm, "grpo/groups_dropped",
                        c->grpo.dynamic_sampling ? dropped : 0);
        ap_monitors_set(&o->pm, "grpo/traj_dropped", dropped_traj);
        ap_monitors_set(&o->pm, "mask/nonfinite_reward", nonfin_reward);
    }
    /* opsd: on-policy trajectories with h = 1. */
    if (c->opsd.c.enabled) {
        float *w = o->coef[AP_OBJ_OPSD];
        int f = o->sup[AP_OBJ_OPSD] == AP_SUPPORT_FULL ? S_S_FULL : S_S_TOPK;
        for (int n = 0; n < N; n++) {
            if (!s_on(b, n) || !b->has_teacher[n]) continue;
            for (int t = 0; t < T; t++) {
                size_t pos = (size_t)n * T + t;
                if (!(b->mask[pos] > 0)) continue;
                if (s_bad(o, pos, f)) {
                    o->flags[pos] |= (uint8_t)s_bad(o, pos, f);
                    continue;
                }
                w[pos] = b->mask[pos];
            }
        }
        o->den[AP_OBJ_OPSD] = s_reduce(o, AP_OBJ_OPSD, &c->opsd.c, n_on);
    }
    /* srpo: routing, entropy weights normalized by their batch mean, one denominator. */
    if (c->srpo.c.enabled) {
        float *w = o->coef[AP_OBJ_SRPO];
        const ap_support_t sup = o->sup[AP_OBJ_SRPO];
        int f = sup == AP_SUPPORT_FULL ? S_S_FULL : S_S_TOPK;
        int groups, dropped, n_sd = 0;
        double st = 0, cnt_sd = 0, cnt_g = 0, wsum = 0, hsum = 0;
        s_advantages(b, c->srpo.scale_rewards, o->adv_srpo, NULL, &groups, &dropped);
        for (int n = 0; n < N; n++) {
            o->sd[n] = 0;
            if (!s_on(b, n)) continue;
            o->sd[n] = b->correct[n] == 0 && b->has_teacher[n] != 0;
            n_sd += o->sd[n];
            for (int t = 0; t < T; t++) {
                size_t pos = (size_t)n * T + t;
                float m = b->mask[pos];
                if (!(m > 0)) continue;
                if (o->sd[n]) {
                    if (s_bad(o, pos, f)) {
                        o->flags[pos] |= (uint8_t)s_bad(o, pos, f);
                        continue;
                    }
                    float wt = 1.0f;
                    if (c->srpo.beta_H > 0) {
                        const ap_obj_signal_t *q = &b->self_teacher;
                        double H = ap_obj_teacher_entropy(
                            sup, q->full ? q->full + pos * b->V : NULL, b->V,
                            q->topk_lp ? q->topk_lp + pos * q->K : NULL, q->K);
                        wt = (float)exp(-c->srpo.beta_H * H);
                        hsum += m * H;
                    }
                    w[pos] = m * wt;
                    cnt_sd += m, wsum += m * wt;
                } else {
                    if (!isfinite(b->reward[n])) continue;
                    w[pos] = s_pg_mask(o, pos, lpt, c->srpo.pg.max_is_ratio, &st);
                    cnt_g += w[pos];
                }
            }
        }
        double den = cnt_sd + cnt_g, wbar = cnt_sd > 0 ? wsum / cnt_sd : 1.0;
        for (int n = 0; n < N; n++) {
            double f = den > 0 ? (o->sd[n] ? 1.0 / (wbar * den) : 1.0 / den) : 0;
            for (int t = 0; t < T; t++) o->coef[AP_OBJ_SRPO][(size_t)n * T + t] *= (float)f;
        }
        o->den[AP_OBJ_SRPO] = den;
        ap_monitors_set(&o->pm, "srpo/sd_frac", n_on ? (double)n_sd / n_on : 0);
        ap_monitors_set(&o->pm, "srpo/grpo_frac", n_on ? (double)(n_on - n_sd) / n_on : 0);
        ap_monitors_set(&o->pm, "srpo/sd_tokens", cnt_sd);
        ap_monitors_set(&o->pm, "srpo/grpo_tokens", cnt_g);
        ap_monitors_set(&o->pm, "srpo/weight_raw_mean", cnt_sd > 0 ? wbar : 0);
        if (c->srpo.beta_H > 0)
            ap_monitors_set(&o->pm, "srpo/teacher_entropy", cnt_sd > 0 ? hsum / cnt_sd : 0);
    }

    /* Counters of the plan. */
    int nonfin = 0, badid = 0;
    for (size_t pos = 0; pos < NT; pos++) {
        nonfin += (o->flags[pos] & S_WHY_NONFIN) != 0;
        badid += (o->flags[pos] & S_WHY_BADID) != 0;
    }
    if (n_on > 0 && b->reward) { /* reward and accuracy of the on-policy trajectories */
        double rs = 0, cs = 0;
        int rn = 0;
        for (int n = 0; n < N; n++)
            if (s_on(b, n) && isfinite(b->reward[n])) rs += b->reward[n], rn++;
        ap_monitors_set(&o->pm, "reward/mean", rn ? rs / rn : 0);
        if (b->correct) {
            for (int n = 0; n < N; n++) cs += s_on(b, n) && b->correct[n] != 0;
            ap_monitors_set(&o->pm, "reward/accuracy", cs / n_on);
        }
    }
    ap_monitors_set(&o->pm, "mask/nonfinite_teacher", nonfin);
    ap_monitors_set(&o->pm, "mask/bad_ids", badid);
    if (pg_any) {
        ap_monitors_set(&o->pm, "mask/stale_frac", cand > 0 ? stale_cnt / cand : 0);
        ap_monitors_set(&o->pm, "mask/stale_tokens", stale_cnt);
        ap_monitors_set(&o->pm, "pg/rho_mean", rho_n > 0 ? rho_sum / rho_n : 0);
        ap_monitors_set(&o->pm, "pg/rho_max", rho_max);
    }
    o->planned = 1;
    return 0;
}

/* ---- eval ---------------------------------------------------------------------------------- */

/* Signal pointers at `pos` for the form the support needs. */
static double s_div(ap_obj_t *o, float *g, float scale, const float *s, const ap_obj_signal_t *q,
                    ap_support_t sup, size_t pos, double beta, double tau, double clip) {
    const int V = o->b.V;
    if (sup == AP_SUPPORT_FULL)
        return ap_obj_divergence(g, scale, s, V, sup, q->full + pos * V, NULL, NULL, 0, beta, tau,
                                 clip, o->scratch);
    return ap_obj_divergence(g, scale, s, V, sup, NULL, q->topk_ids + pos * q->K,
                             q->topk_lp + pos * q->K, q->K, beta, tau, clip, o->scratch);
}

/* The student's softmax at tau_s for the current position, when computed (monitors reuse it
 * when a signal is at the same temperature). */
typedef struct {
    int have;
    double sum, shift;
    float smax;
} s_soft_t;

static void s_monitor(ap_obj_t *o, int which, const float *s, size_t pos, const s_soft_t *sm) {
    const ap_obj_signal_t *q = which ? &o->b.self_teacher : &o->b.teacher;
    const int topk = which ? o->mon_s_topk : o->mon_t_topk, V = o->b.V;
    if (topk < 0 || s_bad(o, pos, (which ? S_S_FULL : S_T_FULL) + topk)) return;
    const int reuse = sm->have && q->tau == o->cfg.sampling_tau;
    double a, c, ov;
    ap_obj_monitor_position(&a, &c, &ov, s, V, topk ? NULL : q->full + pos * V,
                            topk ? q->topk_ids + pos * q->K : NULL,
                            topk ? q->topk_lp + pos * q->K : NULL, q->K, q->tau,
                            reuse ? o->ex : NULL, sm->sum, sm->shift, sm->smax, o->scratch);
    o->kl_ts[which] += a, o->kl_st[which] += c, o->ov[which] += ov, o->mon_n[which]++;
}

double ap_obj_eval(ap_obj_t *o, int row0, int nrows, const float *logits, float *dlogits) {
    AP_ASSERTF(o->planned, "ap_obj_eval before a successful ap_obj_plan");
    const ap_obj_batch_t *b = &o->b;
    const ap_obj_config_t *c = &o->cfg;
    AP_ASSERT(row0 >= 0 && nrows >= 0 && row0 + nrows <= b->N);
    const int T = b->T, V = b->V;
    const double its = 1.0 / c->sampling_tau;
    const double wk[AP_OBJ_COUNT] = {c->gkd.c.weight, c->opd.c.weight, c->grpo.c.weight,
                                     c->opsd.c.weight, c->srpo.c.weight};
    const double floor_a = c->opd.floor_lambda > 0
                               ? log(c->opd.floor_lambda / (1 - c->opd.floor_lambda))
                               : -INFINITY;
    double lsum[AP_OBJ_COUNT] = {0};
    float *ex = o->ex;
    for (int i = 0; i < nrows; i++) {
        const int n = row0 + i;
        const int self_mon = o->mon_s_topk >= 0 && s_on(b, n) &&
                             (!b->has_teacher || b->has_teacher[n]);
        for (int t = 0; t < T; t++) {
            const size_t pos = (size_t)n * T + t, lpos = (size_t)i * T + t;
            const float *s = logits + lpos * V;
            float *out = dlogits + lpos * V, *g = o->grow; /* out may alias s: written last */
            const float cg = o->coef[AP_OBJ_GKD][pos], cd = o->coef[AP_OBJ_OPD][pos],
                        cr = o->coef[AP_OBJ_GRPO][pos], co = o->coef[AP_OBJ_OPSD][pos],
                        cs = o->coef[AP_OBJ_SRPO][pos];
            const int mon = o->monitors && b->mask[pos] > 0;
            const int pg = cd != 0 || cr != 0 || (cs != 0 && !o->sd[n]);
            if (!pg && !mon && cg == 0 && co == 0 && cs == 0) {
                memset(out, 0, (size_t)V * sizeof *out);
                continue;
            }
            memset(g, 0, (size_t)V * sizeof *g);

            /* The student's softmax at tau_s: policy-gradient objectives and entropy. */
            s_soft_t sm = {0};
            if (pg || mon) {
                double sum, shift;
                float smax;
                ap_obj_softmax_row(ex, &sum, &shift, &smax, s, V, c->sampling_tau);
                sm = (s_soft_t){1, sum, shift, smax};
                const double inv_sum = 1.0 / sum;
                if (mon) {
                    float acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int v = 0; v < V; v++) acc += ex[v] * (s[v] - smax);
                    o->ent_sum += shift - its * acc * inv_sum;
                    o->ent_n++;
                }
                if (pg) {
                    const int y = b->tokens[pos];
                    const double lp = (s[y] - smax) * its - shift, bh = b->behavior[pos];
                    double dlp = 0, d, l;
                    int clipped;
                    if (cd != 0) {
                        double base = c->opd.advantage_from_behavior ? bh : lp;
                        double A = c->opd.kl_coef * (b->teacher_sampled[pos] - base);
                        if (A < floor_a) A = floor_a;
                        l = ap_obj_pg(&c->opd.pg, lp, bh, A, &d, &clipped);
                        lsum[AP_OBJ_OPD] += cd * l, dlp += wk[AP_OBJ_OPD] * cd * d;
                        o->pg_n++, o->clip_n += clipped == 1, o->dual_n += clipped == 2;
                    }
                    if (cr != 0) {
                        l = ap_obj_pg(&c->grpo.pg, lp, bh, o->adv_grpo[n], &d, &clipped);
                        if (c->grpo.kl_ref > 0) {
                            double dr = b->ref[pos] - lp, e = exp(dr);
                            l += c->grpo.kl_ref * (e - dr - 1);
                            d += c->grpo.kl_ref * (1 - e);
                            o->k3_sum += e - dr - 1, o->k3_n++;
                        }
                        lsum[AP_OBJ_GRPO] += cr * l, dlp += wk[AP_OBJ_GRPO] * cr * d;
                        o->pg_n++, o->clip_n += clipped == 1, o->dual_n += clipped == 2;
                    }
                    if (cs != 0 && !o->sd[n]) {
                        l = ap_obj_pg(&c->srpo.pg, lp, bh, o->adv_srpo[n], &d, &clipped);
                        lsum[AP_OBJ_SRPO] += cs * l, dlp += wk[AP_OBJ_SRPO] * cs * d;
                        o->pg_n++, o->clip_n += clipped == 1, o->dual_n += clipped == 2;
                    }
                    if (dlp != 0) { /* d logp_y / d s_v = (delta_vy - p_v) / tau_s */
                        const float k = (float)(dlp * its), kp = (float)(dlp * its * inv_sum);
                        for (int v = 0; v < V; v++) g[v] -= kp * ex[v];
                        g[y] += k;
                    }
                }
            }
            /* Divergence objectives. */
            if (cg != 0)
                lsum[AP_OBJ_GKD] += cg * s_div(o, g, (float)(wk[AP_OBJ_GKD] * cg), s, &b->teacher,
                                               o->sup[AP_OBJ_GKD], pos, c->gkd.beta, c->gkd.tau,
                                               c->gkd.clip_token_kl);
            if (co != 0)
                lsum[AP_OBJ_OPSD] +=
                    co * s_div(o, g, (float)(wk[AP_OBJ_OPSD] * co), s, &b->self_teacher,
                               o->sup[AP_OBJ_OPSD], pos, c->opsd.beta, c->opsd.tau,
                               c->opsd.clip_token_kl);
            if (cs != 0 && o->sd[n]) /* SD branch: reverse KL(pS || q), temperature 1, no clip */
                lsum[AP_OBJ_SRPO] += cs * s_div(o, g, (float)(wk[AP_OBJ_SRPO] * cs), s,
                                                &b->self_teacher, o->sup[AP_OBJ_SRPO], pos, 1.0,
                                                1.0, INFINITY);
            /* Teacher-student monitors. */
            if (mon) {
                s_monitor(o, 0, s, pos, &sm);
                if (self_mon) s_monitor(o, 1, s, pos, &sm);
            }
            /* Non-finite guard: NaN * 0 and Inf * 0 are NaN, finite * 0 is 0. */
            float z = 0;
#pragma omp simd reduction(+ : z)
            for (int v = 0; v < V; v++) z += g[v] * 0.0f;
            if (z != 0) o->nonfinite = 1;
            memcpy(out, g, (size_t)V * sizeof *out);
        }
    }
    double contrib = 0;
    for (int k = 0; k < AP_OBJ_COUNT; k++) {
        o->loss[k] += lsum[k];
        contrib += wk[k] * lsum[k];
    }
    return contrib;
}

/* ---- finish -------------------------------------------------------------------------------- */

void ap_obj_finish(ap_obj_t *o, ap_obj_result_t *res, ap_monitors_t *mon) {
    AP_ASSERTF(o->planned, "ap_obj_finish before a successful ap_obj_plan");
    const ap_obj_config_t *c = &o->cfg;
    const ap_obj_common_t *cc[AP_OBJ_COUNT] = {&c->gkd.c, &c->opd.c, &c->grpo.c, &c->opsd.c,
                                               &c->srpo.c};
    memset(res, 0, sizeof *res);
    for (int k = 0; k < AP_OBJ_COUNT; k++) {
        if (!cc[k]->enabled) continue;
        res->loss_obj[k] = o->loss[k];
        res->count_obj[k] = o->den[k];
        res->loss += cc[k]->weight * o->loss[k];
    }
    res->nonfinite = o->nonfinite || !isfinite(res->loss);
    o->planned = 0;
    if (!mon) return;
    char name[AP_MONITOR_NAME];
    ap_monitors_set(mon, "loss/total", res->loss);
    for (int k = 0; k < AP_OBJ_COUNT; k++) {
        if (!cc[k]->enabled) continue;
        snprintf(name, sizeof name, "loss/%s", ap_obj_name(k));
        ap_monitors_set(mon, name, res->loss_obj[k]);
        snprintf(name, sizeof name, "tokens/%s", ap_obj_name(k));
        ap_monitors_set(mon, name, res->count_obj[k]);
    }
    for (int i = 0; i < o->pm.n; i++) ap_monitors_set(mon, o->pm.name[i], o->pm.value[i]);
    if (o->ent_n > 0) ap_monitors_set(mon, "student/entropy", o->ent_sum / o->ent_n);
    static const char *const kts[2] = {"kl/teacher_student", "kl/self_teacher_student"};
    static const char *const kst[2] = {"kl/student_teacher", "kl/student_self_teacher"};
    static const char *const kov[2] = {"overlap/teacher", "overlap/self_teacher"};
    for (int w = 0; w < 2; w++) {
        if (o->mon_n[w] == 0) continue;
        ap_monitors_set(mon, kts[w], o->kl_ts[w] / o->mon_n[w]);
        ap_monitors_set(mon, kst[w], o->kl_st[w] / o->mon_n[w]);
        ap_monitors_set(mon, kov[w], o->ov[w] / o->mon_n[w]);
    }
    if (c->opd.c.enabled || c->grpo.c.enabled || c->srpo.c.enabled) {
        ap_monitors_set(mon, "pg/clip_frac", o->pg_n > 0 ? o->clip_n / o->pg_n : 0);
        ap_monitors_set(mon, "pg/dual_clip_frac", o->pg_n > 0 ? o->dual_n / o->pg_n : 0);
    }
    if (c->grpo.c.enabled && c->grpo.kl_ref > 0)
        ap_monitors_set(mon, "kl/ref_k3", o->k3_n > 0 ? o->k3_sum / o->k3_n : 0);
    ap_monitors_set(mon, "guard/nonfinite", res->nonfinite);
}

int ap_obj_compute(ap_obj_t *o, const ap_obj_batch_t *b, const float *logits, float *dlogits,
                   ap_obj_result_t *res, ap_monitors_t *mon) {
    float *lpt = NULL;
    const ap_obj_config_t *c = &o->cfg;
    if (c->opd.c.enabled || c->grpo.c.enabled || c->srpo.c.enabled) {
        if (!b->tokens) return ap_err("objectives opd/grpo/srpo need the batch's 'tokens' array");
        lpt = ap_malloc((size_t)b->N * b->T * sizeof *lpt);
        ap_obj_sampled_logprobs(lpt, logits, b->tokens, b->N, b->T, b->V, c->sampling_tau);
    }
    int rc = ap_obj_plan(o, b, lpt);
    if (rc == 0) {
        ap_obj_eval(o, 0, b->N, logits, dlogits);
        ap_obj_finish(o, res, mon);
    }
    free(lpt);
    return rc;
}
