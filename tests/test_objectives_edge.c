/* test_objectives_edge: the edge cases of ALGORITHMS.md with known answers, micro-batching,
 * the on-policy routing, the non-finite guard and the config parser's refusals.
 *
 *   - every token masked: loss 0, gradient 0, no NaN, for all objectives at once;
 *   - one-token sequences: token_mean == seq_mean;
 *   - groups of one trajectory: advantage 0 (loss 0, gradient 0), dropped by dynamic sampling;
 *   - K >= V: topk_tail has no tail bin and equals support full;
 *   - a teacher top-K whose mass sums to 1: tail floor 1e-10, value checked by hand;
 *   - SRPO with no SD token equals grpo (no dynamic sampling); with no GRPO token equals opsd
 *     (reverse KL, no clip) when beta_H = 0;
 *   - NaN / +Inf / -Inf in teacher inputs and bad ids: masked and counted, and the loss equals
 *     the loss with those positions masked in the base mask; non-finite student logits set
 *     the flag;
 *   - micro-batched == full batch (all objectives, seq_mean / const, dataset rows mixed in);
 *     dataset trajectories get no gradient from on-policy-only objectives;
 *   - config JSON refusals name the option; plan refusals name the array. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "apprentice/objectives.h"
#include "test.h"
#include "test_objectives_fixture.h"

static ap_obj_config_t s_all(void) {
    ap_obj_config_t c;
    ap_obj_config_defaults(&c);
    c.gkd.c.enabled = c.opd.c.enabled = c.grpo.c.enabled = c.opsd.c.enabled = 1;
    c.srpo.c.enabled = 1;
    return c;
}

/* Run cfg over f's batch: loss, gradient [N, T, V] (caller frees), monitors. */
static double s_run(const ap_obj_config_t *cfg, fx_t *f, float **grad, ap_monitors_t *mon,
                    ap_obj_result_t *res_out) {
    ap_obj_t *o = ap_obj_new(cfg);
    AP_CHECK(o != NULL, "new: %s", ap_errmsg());
    if (!o) return NAN;
    float *g = ap_calloc((size_t)f->N * f->T * f->V, sizeof *g);
    ap_obj_result_t res = {0};
    int rc = ap_obj_compute(o, &f->b, f->logits, g, &res, mon);
    AP_CHECK(rc == 0, "compute: %s", ap_errmsg());
    ap_obj_destroy(&o);
    if (grad) *grad = g;
    else free(g);
    if (res_out) *res_out = res;
    return rc == 0 ? res.loss : NAN;
}

static double s_maxabs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m || isnan(x[i]) ? fabs(x[i]) : m;
    return m;
}

static double s_maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void s_all_masked(void) {
    fx_t f;
    fx_init(&f, 6, 4, 9, 3, 3, 5);
    memset(f.mask, 0, sizeof(float) * 24);
    ap_obj_config_t c = s_all();
    c.grpo.kl_ref = 0.1;
    float *g;
    ap_obj_result_t res;
    ap_monitors_t mon = {0};
    double L = s_run(&c, &f, &g, &mon, &res);
    double gm = s_maxabs(g, 6 * 4 * 9);
    printf("all masked: loss %g  max|grad| %g  nonfinite %d\n", L, gm, res.nonfinite);
    AP_CHECK(L == 0 && gm == 0 && !res.nonfinite, "all masked: loss %g grad %g", L, gm);
    for (int k = 0; k < AP_OBJ_COUNT; k++)
        AP_CHECK(res.loss_obj[k] == 0 && res.count_obj[k] == 0, "all masked: %s loss %g count %g",
                 ap_obj_name(k), res.loss_obj[k], res.count_obj[k]);
    for (int i = 0; i < mon.n; i++)
        AP_CHECK(isfinite(mon.value[i]), "all masked: monitor %s = %g", mon.name[i], mon.value[i]);
    free(g);
    fx_free(&f);
}

static void s_one_token(void) {
    fx_t f;
    fx_init(&f, 6, 1, 9, 3, 3, 6);
    for (int n = 0; n < 6; n++) f.mask[n] = 1;
    for (int k = 0; k < 4; k++) {
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        ap_obj_common_t *cc = k == 0 ? &c.gkd.c : k == 1 ? &c.opd.c : k == 2 ? &c.grpo.c : &c.opsd.c;
        cc->enabled = 1;
        c.grpo.dynamic_sampling = 0;
        float *g1, *g2;
        double a = s_run(&c, &f, &g1, NULL, NULL);
        cc->reduce = AP_REDUCE_SEQ_MEAN;
        double b = s_run(&c, &f, &g2, NULL, NULL);
        double d = s_maxdiff(g1, g2, 6 * 9);
        printf("one-token sequences %-5s token_mean %.8f seq_mean %.8f max grad diff %.1e\n",
               ap_obj_name(k), a, b, d);
        AP_CHECK(isfinite(a) && fabs(a - b) < 1e-6 && d < 1e-6, "one-token %s: %g vs %g",
                 ap_obj_name(k), a, b);
        free(g1), free(g2);
    }
    fx_free(&f);
}

static void s_singleton_groups(void) {
    fx_t f;
    fx_init(&f, 4, 3, 7, 3, 1, 7); /* G = 1: every group has one trajectory */
    for (int n = 0; n < 4; n++) f.reward[n] = (float)n;
    ap_obj_config_t c;
    ap_obj_config_defaults(&c);
    c.grpo.c.enabled = 1, c.grpo.dynamic_sampling = 0;
    float *g;
    ap_monitors_t mon = {0};
    ap_obj_result_t res;
    double L = s_run(&c, &f, &g, &mon, &res);
    double gm = s_maxabs(g, 4 * 3 * 7);
    printf("groups of one: loss %g max|grad| %g tokens %g\n", L, gm, res.count_obj[AP_OBJ_GRPO]);
    AP_CHECK(L == 0 && gm == 0 && res.count_obj[AP_OBJ_GRPO] > 0, "groups of one: A must be 0");
    free(g);
    c.grpo.dynamic_sampling = 1;
    ap_monitors_clear(&mon);
    L = s_run(&c, &f, &g, &mon, &res);
    AP_CHECK(ap_monitors_get(&mon, "grpo/groups", -1) == 4 &&
                 ap_monitors_get(&mon, "grpo/groups_dropped", -1) == 4 &&
                 res.count_obj[AP_OBJ_GRPO] == 0 && L == 0,
             "groups of one with dynamic sampling: groups %g dropped %g count %g",
             ap_monitors_get(&mon, "grpo/groups", -1),
             ap_monitors_get(&mon, "grpo/groups_dropped", -1), res.count_obj[AP_OBJ_GRPO]);
    free(g);
    fx_free(&f);
}

static void s_k_ge_v(void) {
    fx_t f;
    fx_init(&f, 4, 3, 6, 6, 2, 8); /* K = V */
    const double betas[3] = {0, 0.4, 1};
    for (int i = 0; i < 3; i++) {
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        c.gkd.c.enabled = 1, c.gkd.beta = betas[i], c.gkd.support = AP_SUPPORT_FULL;
        float *g1, *g2;
        double a = s_run(&c, &f, &g1, NULL, NULL);
        c.gkd.support = AP_SUPPORT_TOPK_TAIL;
        double b = s_run(&c, &f, &g2, NULL, NULL);
        double d = s_maxdiff(g1, g2, 4 * 3 * 6);
        printf("K >= V beta %.1f: full %.8f topk_tail %.8f max grad diff %.1e\n", betas[i], a, b, d);
        AP_CHECK(fabs(a - b) < 1e-6 * (1 + fabs(a)) && d < 1e-6, "K >= V: no tail bin");
        free(g1), free(g2);
    }
    fx_free(&f);
}

/* Teacher top-K log-probs (0.5, 0.3, 0.2) sum to 1: the tail bin holds 1e-10. */
static void s_tail_floor(void) {
    const int V = 6, K = 3;
    float s[6] = {0.3f, -0.2f, 1.1f, 0.4f, -1.0f, 0.7f};
    int32_t ids[3] = {2, 0, 5};
    float lp[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    double P[3] = {0.5, 0.3, 0.2};
    double z = 0, lq[6];
    for (int v = 0; v < V; v++) z += exp(s[v]);
    for (int v = 0; v < V; v++) lq[v] = s[v] - log(z);
    double want = 0, rest = exp(lq[1]) + exp(lq[3]) + exp(lq[4]);
    for (int j = 0; j < K; j++) want += P[j] * (log(P[j]) - lq[ids[j]]);
    want += 1e-10 * (log(1e-10) - log(rest));
    void *scratch = ap_calloc(1, ap_obj_scratch_size(V));
    float g[6] = {0};
    double got = ap_obj_divergence(g, 1.0f, s, V, AP_SUPPORT_TOPK_TAIL, NULL, ids, lp, K, 0.0, 1.0,
                                   INFINITY, scratch);
    printf("tail floor: D %.10f want %.10f\n", got, want);
    AP_CHECK_NEAR(got, want, 1e-6, 1e-5, "teacher mass 1: tail floor 1e-10");
    AP_CHECK(s_maxabs(g, 6) < 10, "tail floor gradient finite");
    double H = ap_obj_teacher_entropy(AP_SUPPORT_TOPK_TAIL, NULL, V, lp, K);
    double Hw = -(0.5 * log(0.5) + 0.3 * log(0.3) + 0.2 * log(0.2)) - 1e-10 * log(1e-10);
    AP_CHECK_NEAR(H, Hw, 1e-6, 1e-6, "entropy with the tail floor");
    /* Top-K mass above 1 in float (0.5 + 0.3 + 0.21): the floor must hold the tail at 1e-10;
     * reverse KL then has the large but finite term Q_tail (log Q_tail - log 1e-10). */
    float lp2[3] = {logf(0.5f), logf(0.3f), logf(0.21f)};
    double P2[3] = {0.5, 0.3, 0.21};
    double rev = ap_obj_divergence(NULL, 0, s, V, AP_SUPPORT_TOPK_TAIL, NULL, ids, lp2, K, 1.0,
                                   1.0, INFINITY, scratch);
    double rw = rest * (log(rest) - log(1e-10));
    for (int j = 0; j < K; j++) rw += exp(lq[ids[j]]) * (lq[ids[j]] - log(P2[j]));
    printf("tail floor, reverse KL: D %.8f want %.8f\n", rev, rw);
    AP_CHECK_NEAR(rev, rw, 1e-5, 1e-5, "reverse KL with the tail floor");
    free(scratch);
}

static void s_srpo_degenerate(void) {
    fx_t f;
    fx_init(&f, 6, 4, 9, 3, 3, 9);
    float *g1, *g2;
    /* No SD token: every trajectory correct. */
    for (int n = 0; n < 6; n++) f.correct[n] = 1;
    ap_obj_config_t c;
    ap_obj_config_defaults(&c);
    c.srpo.c.enabled = 1;
    ap_monitors_t mon = {0};
    double a = s_run(&c, &f, &g1, &mon, NULL);
    AP_CHECK(ap_monitors_get(&mon, "srpo/sd_frac", -1) == 0, "no SD trajectory");
    ap_obj_config_defaults(&c);
    c.grpo.c.enabled = 1, c.grpo.dynamic_sampling = 0;
    double b = s_run(&c, &f, &g2, NULL, NULL);
    double d = s_maxdiff(g1, g2, 6 * 4 * 9);
    printf("srpo without SD tokens %.8f == grpo %.8f (grad diff %.1e)\n", a, b, d);
    AP_CHECK(fabs(a - b) < 1e-7 && d < 1e-7, "srpo without SD tokens equals grpo");
    free(g1), free(g2);
    /* No GRPO token: every trajectory wrong with a self-teacher. */
    for (int n = 0; n < 6; n++) f.correct[n] = 0, f.has_teacher[n] = 1;
    ap_obj_config_defaults(&c);
    c.srpo.c.enabled = 1, c.srpo.beta_H = 0;
    ap_monitors_clear(&mon);
    a = s_run(&c, &f, &g1, &mon, NULL);
    AP_CHECK(ap_monitors_get(&mon, "srpo/grpo_frac", -1) == 0, "no GRPO trajectory");
    ap_obj_config_defaults(&c);
    c.opsd.c.enabled = 1, c.opsd.beta = 1.0, c.opsd.clip_token_kl = INFINITY;
    b = s_run(&c, &f, &g2, NULL, NULL);
    d = s_maxdiff(g1, g2, 6 * 4 * 9);
    printf("srpo without GRPO tokens %.8f == opsd reverse KL %.8f (grad diff %.1e)\n", a, b, d);
    AP_CHECK(fabs(a - b) < 1e-7 && d < 1e-7, "srpo without GRPO tokens equals reverse-KL opsd");
    free(g1), free(g2);
    /* With entropy weights the mean weight over SD tokens is 1: loss differs but stays finite. */
    ap_obj_config_defaults(&c);
    c.srpo.c.enabled = 1;
    a = s_run(&c, &f, NULL, NULL, NULL);
    AP_CHECK(isfinite(a), "srpo weighted, SD only: %g", a);
    fx_free(&f);
}

/* OPSD's pointwise clip (ALGORITHMS.md) replaces a bin's e[v] by min(e[v], c): a clipped bin has
 * no gradient of its own, and through the softmax the unclipped bins then push every logit up
 * in proportion to Q: dL/dz_a = Q(a) * sum over unclipped bins of P(v) > 0 for a clipped bin a.
 * Where the self-teacher is confident in a token the student finds unlikely (the informative
 * case), gradient descent lowers that token's logit: the experiments' OPSD runs collapsed to ~2%
 * this way (docs/RESULTS.md). The default is therefore no clip; with it, descent raises the
 * teacher's token. One unmasked position, V = 12, self-teacher 0.87 on token 5, student 0.02 there. */
static void s_opsd_clip_direction(void) {
    fx_t f;
    const int V = 12, a = 5;
    fx_init(&f, 1, 2, V, 3, 1, 12); /* the fixture needs two positions; the second is masked */
    for (int v = 0; v < V; v++) f.sz[v] = v == a ? 4.5f : 0.0f, f.logits[v] = v == a ? -1.5f : 0.0f;
    fx_temperatures(&f, 1.0, 1.0);
    f.mask[0] = 1, f.mask[1] = 0, f.has_teacher[0] = 1, f.correct[0] = 0, f.reward[0] = 0;
    f.tokens[0] = 0;
    fx_refresh_lpt(&f, 1.0);
    f.behavior[0] = f.lpt[0];
    ap_obj_config_t c;
    ap_obj_config_defaults(&c);
    c.opsd.c.enabled = 1;
    AP_CHECK(isinf(c.opsd.clip_token_kl), "opsd: clip_token_kl defaults to off, got %g",
             c.opsd.clip_token_kl);
    const double clips[3] = {0.05, 0.5, INFINITY};
    double ga[3];
    for (int i = 0; i < 3; i++) {
        c.opsd.clip_token_kl = clips[i];
        float *g;
        s_run(&c, &f, &g, NULL, NULL);
        ga[i] = g[a];
        free(g);
    }
    printf("opsd dL/dz[teacher's token]: clip 0.05 %+.4f, clip 0.5 %+.4f, no clip %+.4f\n", ga[0],
           ga[1], ga[2]);
    AP_CHECK(ga[0] > 0 && ga[1] > 0, "a clipped informative bin: descent lowers the teacher's token");
    AP_CHECK(ga[2] < -0.5, "no clip: descent raises the teacher's token (%g)", ga[2]);
    fx_free(&f);
}

static void s_nonfinite(void) {
    for (int topk = 0; topk < 2; topk++)
        for (int self = 0; self < 2; self++) {
            fx_t f;
            fx_init(&f, 6, 4, 9, 3, 3, 10);
            for (int p = 0; p < 24; p++) f.mask[p] = 1;
            for (int n = 0; n < 6; n++) f.has_teacher[n] = 1;
            ap_obj_config_t c;
            ap_obj_config_defaults(&c);
            ap_support_t sup = topk ? AP_SUPPORT_TOPK_TAIL : AP_SUPPORT_FULL;
            if (self) c.opsd.c.enabled = 1, c.opsd.support = sup;
            else c.gkd.c.enabled = 1, c.gkd.support = sup;
            const int bad[2] = {self ? 13 : 2, self ? 21 : 7}; /* positions poisoned below */
            float *g_ref;
            /* Reference: the same positions masked in the base mask. */
            f.mask[bad[0]] = f.mask[bad[1]] = 0;
            double want = s_run(&c, &f, &g_ref, NULL, NULL);
            f.mask[bad[0]] = f.mask[bad[1]] = 1;
            float *full = self ? f.s_full : f.t_full, *lp = self ? f.s_lp : f.t_lp;
            int32_t *ids = self ? f.s_ids : f.t_ids;
            if (!topk) {
                full[bad[0] * 9 + 3] = self ? -INFINITY : NAN;
                full[bad[1] * 9 + 0] = self ? NAN : INFINITY;
            } else {
                lp[bad[0] * 3 + 1] = self ? INFINITY : NAN;
                if (self) ids[bad[1] * 3 + 1] = ids[bad[1] * 3 + 0]; /* repeated id */
                else ids[bad[1] * 3 + 2] = 9;                        /* outside [0, V) */
            }
            float *g;
            ap_monitors_t mon = {0};
            ap_obj_result_t res;
            double got = s_run(&c, &f, &g, &mon, &res);
            double d = s_maxdiff(g, g_ref, 6 * 4 * 9);
            double nf = ap_monitors_get(&mon, "mask/nonfinite_teacher", -1);
            double bi = ap_monitors_get(&mon, "mask/bad_ids", -1);
            printf("bad %s signal (%s): loss %.8f want %.8f grad diff %.1e nonfinite_teacher %g "
                   "bad_ids %g flag %d\n",
                   self ? "self-teacher" : "teacher", topk ? "top-K" : "full", got, want, d, nf,
                   bi, res.nonfinite);
            AP_CHECK(fabs(got - want) < 1e-7 && d < 1e-7 && !res.nonfinite,
                     "poisoned teacher positions must be masked");
            AP_CHECK(topk ? (nf == 1 && bi == 1) : (nf == 2 && bi == 0), "counts %g %g", nf, bi);
            free(g), free(g_ref);
            /* Non-finite student logits: reported by the flag. */
            f.logits[5 * 9 + 2] = NAN;
            s_run(&c, &f, NULL, NULL, &res);
            AP_CHECK(res.nonfinite, "NaN student logit must set the non-finite flag");
            f.logits[5 * 9 + 2] = INFINITY;
            s_run(&c, &f, NULL, NULL, &res);
            AP_CHECK(res.nonfinite, "Inf student logit must set the non-finite flag");
            fx_free(&f);
        }
}

static void s_microbatch(void) {
    fx_t f;
    fx_init(&f, 9, 5, 11, 4, 3, 11);
    f.on_policy[7] = f.on_policy[8] = 0; /* dataset rows (a whole "group" 2) */
    for (int red = 0; red < 3; red++) {
        ap_obj_config_t c = s_all();
        c.grpo.kl_ref = 0.05;
        c.gkd.c.weight = 0.4, c.opsd.c.weight = 1.5;
        ap_obj_common_t *cc[4] = {&c.gkd.c, &c.opd.c, &c.grpo.c, &c.opsd.c};
        for (int k = 0; k < 4; k++) cc[k]->reduce = (ap_reduce_t)red, cc[k]->max_new_tokens = 6;
        c.opsd.support = AP_SUPPORT_TOPK_TAIL;
        ap_obj_t *o = ap_obj_new(&c);
        float *g = ap_calloc(9 * 5 * 11, sizeof *g), *gm = ap_calloc(9 * 5 * 11, sizeof *gm);
        ap_obj_result_t r1, r2;
        AP_CHECK(ap_obj_compute(o, &f.b, f.logits, g, &r1, NULL) == 0, "%s", ap_errmsg());
        fx_refresh_lpt(&f, 1.0);
        AP_CHECK(ap_obj_plan(o, &f.b, f.lpt) == 0, "%s", ap_errmsg());
        double sum = 0;
        const int cuts[] = {0, 1, 4, 5, 9};
        for (int i = 3; i >= 0; i--) /* any order */
            sum += ap_obj_eval(o, cuts[i], cuts[i + 1] - cuts[i], f.logits + cuts[i] * 5 * 11,
                               gm + cuts[i] * 5 * 11);
        ap_obj_finish(o, &r2, NULL);
        int same = !memcmp(g, gm, sizeof(float) * 9 * 5 * 11);
        printf("micro-batches (reduce %d): full %.12f micro %.12f sum %.12f gradients %s\n", red,
               r1.loss, r2.loss, sum, same ? "identical" : "DIFFER");
        AP_CHECK(fabs(r1.loss - r2.loss) < 1e-12 && fabs(sum - r1.loss) < 1e-12 && same,
                 "micro-batched != full batch");
        ap_obj_destroy(&o);
        free(g), free(gm);
    }
    /* In place: dlogits == logits gives the same gradient. */
    {
        ap_obj_config_t c = s_all();
        float *g, *inplace = ap_malloc(sizeof(float) * 9 * 5 * 11);
        double a = s_run(&c, &f, &g, NULL, NULL);
        memcpy(inplace, f.logits, sizeof(float) * 9 * 5 * 11);
        ap_obj_t *o = ap_obj_new(&c);
        ap_obj_result_t r;
        AP_CHECK(ap_obj_compute(o, &f.b, inplace, inplace, &r, NULL) == 0, "%s", ap_errmsg());
        AP_CHECK(r.loss == a && !memcmp(g, inplace, sizeof(float) * 9 * 5 * 11),
                 "in-place eval differs (%g vs %g)", r.loss, a);
        ap_obj_destroy(&o);
        free(g), free(inplace);
    }
    /* Dataset rows: only gkd touches them. */
    ap_obj_config_t c = s_all();
    c.gkd.c.enabled = 0;
    float *g;
    s_run(&c, &f, &g, NULL, NULL);
    double dm = s_maxabs(g + 7 * 5 * 11, 2 * 5 * 11);
    AP_CHECK(dm == 0, "dataset trajectories got gradient %g from on-policy objectives", dm);
    free(g);
    c = s_all();
    c.opd.c.enabled = c.grpo.c.enabled = c.opsd.c.enabled = c.srpo.c.enabled = 0;
    s_run(&c, &f, &g, NULL, NULL);
    dm = s_maxabs(g + 7 * 5 * 11, 2 * 5 * 11);
    AP_CHECK(dm > 0, "gkd must see dataset trajectories");
    free(g);
    fx_free(&f);
}

static void s_refusals(void) {
    ap_obj_config_t c;
    struct {
        const char *json, *must;
    } bad[] = {
        {"{\"objective\": {\"gkd\": {\"betta\": 0.5}}, \"K\": 3}", "'betta'"},
        {"{\"objective\": {\"gkdx\": {}}}", "'gkdx'"},
        {"{\"objective\": {\"gkd\": {\"beta\": \"half\"}}}", "'beta'"},
        {"{\"objective\": {\"gkd\": {\"beta\": 1.5}}}", "beta"},
        {"{\"objective\": {\"grpo\": {\"reduce\": \"const\"}}}", "max_new_tokens"},
        {"{\"objective\": {\"opd\": {\"advantage_from\": \"teacher\"}}}", "'advantage_from'"},
        {"{\"objective\": {\"opsd\": {\"tau\": 2.0}, \"srpo\": {}}}", "two temperatures"},
        {"{\"objective\": {\"srpo\": {\"clip_token_kl\": 0.1}}}", "'clip_token_kl'"},
        {"{\"objective\": {}}", "no objective"},
        {"{\"objectives\": {}}", "'objectives'"},
        {"[1, 2]", "object"},
        {"{\"objective\": {\"gkd\": {}}, \"K\": 0}", "'K'"},
    };
    for (size_t i = 0; i < AP_COUNT(bad); i++) {
        int rc = ap_obj_config_from_json(&c, bad[i].json, "case.json");
        AP_CHECK(rc < 0, "accepted: %s", bad[i].json);
        AP_CHECK(rc < 0 && strstr(ap_errmsg(), bad[i].must) && strstr(ap_errmsg(), "case.json"),
                 "message for %s lacks '%s': %s", bad[i].json, bad[i].must, ap_errmsg());
        printf("refused: %s\n", ap_errmsg());
    }
    AP_CHECK(ap_obj_config_from_json(&c, "{\"objective\": {\"gkd\": {\"clip_token_kl\": null, "
                                         "\"support\": \"topk\"}, \"grpo\": {\"max_is_ratio\": "
                                         "null, \"dual_clip\": 3}}, \"K\": 4}",
                                     "ok.json") == 0,
             "valid config refused: %s", ap_errmsg());
    AP_CHECK(c.gkd.c.enabled && isinf(c.gkd.clip_token_kl) && c.gkd.support == AP_SUPPORT_TOPK &&
                 isinf(c.grpo.pg.max_is_ratio) && c.grpo.pg.dual_clip == 3 && c.K == 4 &&
                 !c.opd.c.enabled && c.grpo.pg.clip && c.grpo.pg.eps_high == 0.28,
             "parsed values");
    /* Plan refusals: a missing array, a signal at the wrong temperature, a missing form. */
    fx_t f;
    fx_init(&f, 3, 2, 5, 2, 3, 12);
    ap_obj_config_defaults(&c);
    c.grpo.c.enabled = 1;
    ap_obj_t *o = ap_obj_new(&c);
    ap_obj_batch_t b = f.b;
    b.reward = NULL;
    fx_refresh_lpt(&f, 1);
    AP_CHECK(ap_obj_plan(o, &b, f.lpt) < 0 && strstr(ap_errmsg(), "'reward'"), "missing reward: %s",
             ap_errmsg());
    ap_obj_destroy(&o);
    ap_obj_config_defaults(&c);
    c.gkd.c.enabled = 1, c.gkd.tau = 2.0;
    o = ap_obj_new(&c);
    AP_CHECK(ap_obj_plan(o, &f.b, NULL) < 0 && strstr(ap_errmsg(), "temperature"),
             "temperature mismatch: %s", ap_errmsg());
    ap_obj_destroy(&o);
    c.gkd.tau = 1.0, c.gkd.support = AP_SUPPORT_TOPK;
    o = ap_obj_new(&c);
    b = f.b;
    b.teacher.topk_ids = NULL;
    AP_CHECK(ap_obj_plan(o, &b, NULL) < 0 && strstr(ap_errmsg(), "top-K"), "no top-K: %s",
             ap_errmsg());
    ap_obj_destroy(&o);
    /* Sampled tokens outside [0, V): masked and counted, never read. */
    ap_obj_config_defaults(&c);
    c.grpo.c.enabled = 1, c.grpo.dynamic_sampling = 0;
    f.tokens[0] = 99, f.tokens[3] = -4;
    f.mask[0] = f.mask[3] = 1;
    ap_monitors_t mon = {0};
    ap_obj_result_t res;
    s_run(&c, &f, NULL, &mon, &res);
    AP_CHECK(ap_monitors_get(&mon, "mask/bad_ids", -1) == 2 && !res.nonfinite, "bad tokens: %g",
             ap_monitors_get(&mon, "mask/bad_ids", -1));
    fx_free(&f);
}

int main(void) {
    s_all_masked();
    s_one_token();
    s_singleton_groups();
    s_k_ge_v();
    s_tail_floor();
    s_srpo_degenerate();
    s_opsd_clip_direction();
    s_nonfinite();
    s_microbatch();
    s_refusals();
    return ap_test_result();
}
