/* test_objectives_fd: the analytic gradient of every objective, on every support, against
 * central finite differences of the loss, entry by entry over a synthetic batch.
 *
 * The loss is evaluated in float with double sums. One perturbed logit changes one position's
 * token loss only (the plan — masks, advantages, denominators, SRPO weights — is computed once
 * and held fixed, as the stop-gradients in ALGORITHMS.md say), so the difference of two row
 * evaluations is exact up to that position's own float rounding; h = 5e-3 keeps both the
 * rounding and the truncation error near 1e-4 relative. An entry whose perturbation crosses a
 * kink (PG clip boundary, pointwise clip) shows as a jump of the position's gradient between
 * s - h and s + h; such entries (expected to be rare) are skipped and counted, and a case fails
 * when more than 5% of its entries are skipped. A case passes when
 * ||fd - g|| / ||g|| < 1e-2 over the compared entries. A negative control (a gradient scaled by
 * 1.2 at one position) must fail the same comparison.
 *
 * opd's default advantage A = kl_coef (lt - sg(logp_theta)) holds logp_theta fixed; the finite
 * differences therefore run on the same loss with A frozen at the base point: opd with
 * advantage_from behavior and lt' = lt - logp_theta + b (so that lt' - b = lt - logp_theta),
 * whose loss must also equal the original's at the base point. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "apprentice/objectives.h"
#include "test.h"
#include "test_objectives_fixture.h"

static const double s_h = 5e-3;

/* Returns the relative error; *skipped gets the kink count. When `corrupt` is set, the
 * analytic gradient of the first position with a non-zero gradient is scaled by 1.2 first. */
static double s_fd(const char *name, const ap_obj_config_t *cfg, fx_t *f, int corrupt) {
    const int N = f->N, T = f->T, V = f->V;
    const size_t NT = (size_t)N * T, NTV = NT * V, RV = (size_t)T * V;
    fx_refresh_lpt(f, cfg->sampling_tau);
    ap_obj_t *og = ap_obj_new(cfg);
    AP_CHECK(og != NULL, "%s: %s", name, ap_errmsg());
    if (!og) return INFINITY;
    int rc = ap_obj_plan(og, &f->b, f->lpt);
    AP_CHECK(rc == 0, "%s: plan: %s", name, ap_errmsg());
    if (rc) {
        ap_obj_destroy(&og);
        return INFINITY;
    }
    float *g0 = ap_malloc(NTV * sizeof *g0), *row = ap_malloc(RV * sizeof *row);
    float *grow = ap_malloc(RV * sizeof *grow), *gp = ap_malloc((size_t)V * sizeof *gp);
    double l0 = ap_obj_eval(og, 0, N, f->logits, g0);
    ap_obj_result_t res;
    ap_obj_finish(og, &res, NULL);
    ap_obj_destroy(&og);
    /* The loss the differences run on (A frozen for opd from current). */
    ap_obj_config_t cf = *cfg;
    ap_obj_batch_t bf = f->b;
    float *ltf = ap_malloc(NT * sizeof *ltf);
    if (cf.opd.c.enabled && !cf.opd.advantage_from_behavior) {
        for (size_t p = 0; p < NT; p++) ltf[p] = f->lt[p] - f->lpt[p] + f->behavior[p];
        cf.opd.advantage_from_behavior = 1;
        bf.teacher_sampled = ltf;
    }
    ap_obj_t *o = ap_obj_new(&cf);
    AP_CHECK(o != NULL, "%s: %s", name, ap_errmsg());
    if (!o || ap_obj_plan(o, &bf, f->lpt) < 0) {
        AP_CHECK(0, "%s: fd plan: %s", name, ap_errmsg());
        ap_obj_destroy(&o);
        free(g0), free(row), free(grow), free(gp), free(ltf);
        return INFINITY;
    }
    float *g1 = ap_malloc(NTV * sizeof *g1);
    double l1 = ap_obj_eval(o, 0, N, f->logits, g1), dd = 0, nn = 0;
    for (size_t i = 0; i < NTV; i++) dd += fabs(g1[i] - g0[i]), nn += fabs(g0[i]);
    AP_CHECK(fabs(l1 - l0) <= 1e-6 * (1 + fabs(l0)) && dd <= 1e-6 * nn,
             "%s: the frozen-advantage loss differs at the base point (%g vs %g, grad %g)", name,
             l1, l0, dd / (nn + 1e-30));
    free(g1);
    if (corrupt)
        for (size_t p = 0; p < (size_t)N * T; p++) {
            double nn = 0;
            for (int v = 0; v < V; v++) nn += fabs(g0[p * V + v]);
            if (nn > 0) {
                for (int v = 0; v < V; v++) g0[p * V + v] *= 1.2f;
                break;
            }
        }
    double d2 = 0, r2 = 0;
    int skipped = 0, entries = 0;
    for (int n = 0; n < N; n++) {
        memcpy(row, f->logits + (size_t)n * RV, RV * sizeof *row);
        for (int t = 0; t < T; t++) {
            const float *g = g0 + ((size_t)n * T + t) * V;
            double gn = 0;
            for (int v = 0; v < V; v++) gn += (double)g[v] * g[v];
            gn = sqrt(gn);
            for (int v = 0; v < V; v++) {
                float *x = row + (size_t)t * V + v, x0 = *x;
                *x = (float)(x0 + s_h);
                float xp = *x;
                double lp = ap_obj_eval(o, n, 1, row, grow);
                memcpy(gp, grow + (size_t)t * V, (size_t)V * sizeof *gp);
                *x = (float)(x0 - s_h);
                float xm = *x;
                double lm = ap_obj_eval(o, n, 1, row, grow);
                *x = x0;
                double jump = 0;
                for (int u = 0; u < V; u++) {
                    double d = (double)gp[u] - grow[(size_t)t * V + u];
                    jump += d * d;
                }
                entries++;
                if (sqrt(jump) > 0.1 * gn + 1e-9) {
                    skipped++;
                    continue;
                }
                double fd = (lp - lm) / ((double)xp - xm);
                d2 += (fd - g[v]) * (fd - g[v]);
                r2 += (double)g[v] * g[v];
            }
        }
    }
    ap_obj_finish(o, &res, NULL);
    ap_obj_destroy(&o);
    free(g0), free(row), free(grow), free(gp), free(ltf);
    double rel = r2 > 0 ? sqrt(d2 / r2) : INFINITY;
    if (!corrupt) {
        printf("%-44s fd rel err %.2e  |g| %.3e  kinks skipped %d/%d\n", name, rel, sqrt(r2),
               skipped, entries);
        AP_CHECK(r2 > 0, "%s: gradient identically zero (nothing tested)", name);
        AP_CHECK(rel < 1e-2, "%s: finite-difference relative error %.3g", name, rel);
        AP_CHECK(skipped <= entries / 20, "%s: %d of %d entries at kinks", name, skipped, entries);
    }
    return rel;
}

static ap_obj_config_t s_base(void) {
    ap_obj_config_t c;
    ap_obj_config_defaults(&c);
    return c;
}

static const char *const s_sup[] = {"auto", "full", "topk", "topk_tail"};

int main(void) {
    fx_t f;
    fx_init(&f, 6, 4, 9, 3, 3, 1234);
    char name[128];

    /* gkd and opsd: every support, both endpoints and a mixture, with and without the clip. */
    const double betas[] = {0.0, 0.5, 1.0};
    const double clips[] = {INFINITY, 0.05};
    for (int sup = AP_SUPPORT_FULL; sup <= AP_SUPPORT_TOPK_TAIL; sup++)
        for (int bi = 0; bi < 3; bi++)
            for (int ci = 0; ci < 2; ci++) {
                ap_obj_config_t c = s_base();
                c.gkd.c.enabled = 1, c.gkd.support = (ap_support_t)sup;
                c.gkd.beta = betas[bi], c.gkd.clip_token_kl = clips[ci];
                snprintf(name, sizeof name, "gkd %s beta %.1f clip %g", s_sup[sup], betas[bi],
                         clips[ci]);
                s_fd(name, &c, &f, 0);
                c.gkd.c.enabled = 0;
                c.opsd.c.enabled = 1, c.opsd.support = (ap_support_t)sup;
                c.opsd.beta = betas[bi], c.opsd.clip_token_kl = clips[ci];
                snprintf(name, sizeof name, "opsd %s beta %.1f clip %g", s_sup[sup], betas[bi],
                         clips[ci]);
                s_fd(name, &c, &f, 0);
            }
    /* Temperature 2 with seq_mean, on every support. */
    fx_temperatures(&f, 2.0, 2.0);
    for (int sup = AP_SUPPORT_FULL; sup <= AP_SUPPORT_TOPK_TAIL; sup++) {
        ap_obj_config_t c = s_base();
        c.gkd.c.enabled = 1, c.gkd.support = (ap_support_t)sup, c.gkd.tau = 2.0;
        c.gkd.beta = 0.3, c.gkd.c.reduce = AP_REDUCE_SEQ_MEAN;
        snprintf(name, sizeof name, "gkd %s beta 0.3 tau 2 seq_mean", s_sup[sup]);
        s_fd(name, &c, &f, 0);
    }
    fx_temperatures(&f, 1.0, 1.0);

    /* opd: unclipped / clipped, advantage from current / behaviour, floor. */
    for (int clip = 0; clip < 2; clip++)
        for (int beh = 0; beh < 2; beh++) {
            ap_obj_config_t c = s_base();
            c.opd.c.enabled = 1, c.opd.pg.clip = clip, c.opd.advantage_from_behavior = beh;
            c.opd.floor_lambda = beh ? 0.2 : 0;
            snprintf(name, sizeof name, "opd clip %d from %s%s", clip, beh ? "behavior" : "current",
                     beh ? " floor 0.2" : "");
            s_fd(name, &c, &f, 0);
        }
    /* grpo: scales, k3, dual clip, reductions, dynamic sampling off. */
    {
        ap_obj_config_t c = s_base();
        c.grpo.c.enabled = 1, c.grpo.dynamic_sampling = 0;
        s_fd("grpo group-std, no dynamic sampling", &c, &f, 0);
        c.grpo.kl_ref = 0.04;
        s_fd("grpo k3 kl_ref 0.04", &c, &f, 0);
        c.grpo.scale_rewards = AP_SCALE_NONE, c.grpo.pg.dual_clip = 3.0;
        c.grpo.c.reduce = AP_REDUCE_CONST, c.grpo.c.max_new_tokens = 8;
        s_fd("grpo none dual 3 const", &c, &f, 0);
        c.grpo.c.reduce = AP_REDUCE_SEQ_MEAN, c.grpo.dynamic_sampling = 1;
        s_fd("grpo seq_mean dynamic sampling", &c, &f, 0);
        c = s_base();
        c.grpo.c.enabled = 1, c.grpo.pg.clip = 0, c.grpo.dynamic_sampling = 0;
        s_fd("grpo unclipped", &c, &f, 0);
    }
    /* srpo on every support, with and without entropy weights. */
    for (int sup = AP_SUPPORT_FULL; sup <= AP_SUPPORT_TOPK_TAIL; sup++)
        for (int w = 0; w < 2; w++) {
            ap_obj_config_t c = s_base();
            c.srpo.c.enabled = 1, c.srpo.support = (ap_support_t)sup, c.srpo.beta_H = w ? 1.0 : 0;
            snprintf(name, sizeof name, "srpo %s beta_H %d", s_sup[sup], w);
            s_fd(name, &c, &f, 0);
        }
    /* Everything at once, weighted. */
    {
        ap_obj_config_t c = s_base();
        c.gkd.c.enabled = c.opd.c.enabled = c.grpo.c.enabled = c.opsd.c.enabled = 1;
        c.srpo.c.enabled = 1;
        c.gkd.c.weight = 0.5, c.opd.c.weight = 0.3, c.opsd.c.weight = 2.0, c.srpo.c.weight = 0.7;
        c.grpo.dynamic_sampling = 0;
        s_fd("all five, weighted", &c, &f, 0);
        /* Negative control: a wrong gradient must be caught by the same comparison. */
        double bad = s_fd("control", &c, &f, 1);
        printf("%-44s fd rel err %.2e (must exceed 1e-2)\n", "negative control (grad x1.2)", bad);
        AP_CHECK(bad > 1e-2, "negative control not detected: %.3g", bad);
    }
    fx_free(&f);

    /* K >= V: topk_tail without a tail bin. */
    fx_init(&f, 4, 3, 5, 5, 2, 99);
    for (int bi = 0; bi < 3; bi++) {
        ap_obj_config_t c = s_base();
        c.gkd.c.enabled = 1, c.gkd.support = AP_SUPPORT_TOPK_TAIL, c.gkd.beta = betas[bi];
        snprintf(name, sizeof name, "gkd topk_tail K = V beta %.1f", betas[bi]);
        s_fd(name, &c, &f, 0);
    }
    fx_free(&f);
    return ap_test_result();
}
