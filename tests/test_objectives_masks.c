/* test_objectives_masks: the mask builders and the monitors on hand-made batches with known
 * answers: rep_n (a repeated trigram near 1, distinct trigrams 0, the survey's worked
 * example), the DAPO overlong penalty, EOS / padding / special / truncated / repetitive masks
 * and their fractions, the truncation modes and the batch skip, and the objectives' monitors
 * (KL 0 and overlap 1 when student == teacher, entropy log V for a uniform student, a known
 * top-k overlap, clip / dual-clip fractions and importance ratios, the staleness mask, SRPO
 * branch fractions, groups dropped by dynamic sampling). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/masks.h"
#include "apprentice/objectives.h"
#include "test.h"

static void s_rep(void) {
    int32_t rep[30], dist[20], ex[8] = {5, 6, 7, 5, 6, 7, 5, 6};
    for (int i = 0; i < 30; i++) rep[i] = 1 + i % 3;
    for (int i = 0; i < 20; i++) dist[i] = i;
    double r = ap_masks_rep_n(rep, 30, 3);
    printf("rep_3 of (1 2 3) x 10: %.6f   distinct: %.6f\n", r, ap_masks_rep_n(dist, 20, 3));
    AP_CHECK_NEAR(r, 1 - 3.0 / 28, 1e-12, 0, "repeated trigram");
    AP_CHECK(r > 0.85, "a completion repeating one trigram has rep_n near 1: %g", r);
    AP_CHECK(ap_masks_rep_n(dist, 20, 3) == 0, "distinct trigrams");
    AP_CHECK(ap_masks_rep_n(dist, 2, 3) == 0, "fewer than n tokens");
    AP_CHECK_NEAR(ap_masks_rep_n(ex, 8, 1), 0.625, 1e-12, 0, "rep-1 of the survey example");
    AP_CHECK_NEAR(ap_masks_rep_n(ex, 8, 2), 0.571429, 1e-6, 0, "rep-2");
    AP_CHECK_NEAR(ap_masks_rep_n(ex, 8, 3), 0.5, 1e-12, 0, "rep-3");
    AP_CHECK_NEAR(ap_masks_rep_n(ex, 8, 4), 0.4, 1e-12, 0, "rep-4 (hashed n-grams)");
    int32_t big[8];
    for (int i = 0; i < 8; i++) big[i] = ex[i] + (1 << 24); /* ids beyond the packed range */
    AP_CHECK_NEAR(ap_masks_rep_n(big, 8, 3), 0.5, 1e-12, 0, "rep-3 with large ids (hashed)");
}

static void s_penalty(void) {
    /* DAPO: L_max 20480, L_cache 4096. */
    const int L[5] = {16000, 16384, 18432, 20480, 21000};
    const double want[5] = {0, 0, -0.5, -1, -1};
    for (int i = 0; i < 5; i++)
        AP_CHECK_NEAR(ap_masks_overlong_penalty(L[i], 20480, 4096), want[i], 1e-12, 0,
                      "penalty at L = %d", L[i]);
}

static void s_build(void) {
    enum { N = 4, T = 6 };
    const int32_t tok[N * T] = {5, 9, 7, 2, 8, 8, /* EOS at 3, special 9 at 1 */
                                4, 4, 4, 4, 0, 0, /* length 4 */
                                1, 3, 4, 1, 3, 4, /* truncated */
                                6, 6, 6, 6, 6, 6}; /* repetitive */
    const int32_t len[N] = {6, 4, 6, 6};
    const uint8_t trunc[N] = {0, 0, 1, 0};
    ap_masks_config_t c;
    ap_masks_defaults(&c);
    c.eos_id = 2, c.n_special = 1, c.special[0] = 9;
    AP_CHECK(ap_masks_validate(&c) == 0, "%s", ap_errmsg());
    ap_masks_input_t in = {.N = N, .T = T, .tokens = tok, .length = len, .truncated = trunc};
    float m[N * T], rep[N], rw[N] = {1, 0, 1, 0};
    ap_monitors_t mon = {0};
    int skip = ap_masks_build(m, NULL, rep, &c, &in, &mon);
    const float want[N * T] = {1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    AP_CHECK(!memcmp(m, want, sizeof m), "mask (EOS kept, after-EOS, special, padding, truncated, "
                                         "repetitive)");
    for (int i = 0; i < N * T; i++) AP_CHECK(m[i] == want[i], "mask[%d] = %g want %g", i, m[i], want[i]);
    struct {
        const char *name;
        double want;
    } mv[] = {{"mask/pad_frac", 2.0 / 24},      {"mask/after_eos_frac", 2.0 / 24},
              {"mask/special_frac", 1.0 / 24},  {"mask/truncated_frac", 6.0 / 24},
              {"mask/repetitive_frac", 6.0 / 24}, {"mask/kept_frac", 7.0 / 24},
              {"len/mean", 5.0},                {"len/trunc_rate", 0.25},
              {"rep/mean", 0.375},              {"rep/over_max", 1},
              {"batch/skipped_truncation", 0},  {"mask/bad_length", 0}};
    for (size_t i = 0; i < AP_COUNT(mv); i++) {
        double got = ap_monitors_get(&mon, mv[i].name, NAN);
        printf("  %-26s %.6f\n", mv[i].name, got);
        AP_CHECK_NEAR(got, mv[i].want, 1e-9, 0, "%s", mv[i].name);
    }
    AP_CHECK(!skip, "truncation rate 0.25 does not skip");
    AP_CHECK(rep[0] == 0 && rep[1] == 0.5f && rep[2] == 0.25f && rep[3] == 0.75f, "rep_n per traj");
    /* keep: the truncated trajectory is kept. */
    c.truncated = AP_TRUNC_KEEP;
    ap_masks_build(m, NULL, NULL, &c, &in, NULL);
    for (int t = 0; t < T; t++) AP_CHECK(m[2 * T + t] == 1, "keep: truncated trajectory kept");
    /* penalize: L_max 6, L_cache 4 -> penalties (-0.5, -0.5, -1, -1). */
    c.truncated = AP_TRUNC_PENALIZE, c.max_new_tokens = 6, c.overlong_buffer = 4;
    AP_CHECK(ap_masks_validate(&c) == 0, "%s", ap_errmsg());
    ap_monitors_clear(&mon);
    ap_masks_build(m, rw, NULL, &c, &in, &mon);
    const float rw_want[N] = {0.5f, -0.5f, 0, -1};
    for (int n = 0; n < N; n++) AP_CHECK_NEAR(rw[n], rw_want[n], 1e-6, 0, "penalized reward %d", n);
    AP_CHECK_NEAR(ap_monitors_get(&mon, "len/overlong_penalty_mean", NAN), -0.75, 1e-9, 0,
                  "mean penalty");
    /* Batch skip: 3 of 4 truncated; dataset trajectories are not counted. */
    const uint8_t trunc3[N] = {1, 1, 1, 0};
    in.truncated = trunc3;
    c.truncated = AP_TRUNC_MASK;
    AP_CHECK(ap_masks_build(m, NULL, NULL, &c, &in, NULL) == 1, "rate 0.75 > 0.5 skips");
    const int32_t onp[N] = {1, 0, 0, 1};
    in.on_policy = onp;
    ap_monitors_clear(&mon);
    AP_CHECK(ap_masks_build(m, NULL, NULL, &c, &in, &mon) == 0, "rate 1/2 does not skip");
    AP_CHECK_NEAR(ap_monitors_get(&mon, "len/trunc_rate", NAN), 0.5, 1e-12, 0, "on-policy rate");
    AP_CHECK(m[1 * T] == 1 && m[2 * T] == 1, "dataset trajectories are not masked as truncated");
    /* Dataset rows only (supervised KD): no on-policy monitor, not a length of 0. */
    const int32_t none[N] = {0, 0, 0, 0};
    in.on_policy = none;
    ap_monitors_clear(&mon);
    ap_masks_build(m, NULL, NULL, &c, &in, &mon);
    AP_CHECK(isnan(ap_monitors_get(&mon, "len/mean", NAN)) &&
                 isnan(ap_monitors_get(&mon, "rep/mean", NAN)) &&
                 isnan(ap_monitors_get(&mon, "len/trunc_rate", NAN)),
             "dataset rows only: len/mean, rep/mean, len/trunc_rate absent");
    /* Bad lengths are clamped and counted. */
    const int32_t badlen[N] = {-3, 4, 99, 6};
    in.length = badlen, in.on_policy = NULL, in.truncated = NULL;
    ap_monitors_clear(&mon);
    ap_masks_build(m, NULL, NULL, &c, &in, &mon);
    AP_CHECK(ap_monitors_get(&mon, "mask/bad_length", 0) == 2 && m[0] == 0, "bad lengths");
    /* Refusals. */
    c.truncated = AP_TRUNC_PENALIZE, c.max_new_tokens = 0;
    AP_CHECK(ap_masks_validate(&c) < 0 && strstr(ap_errmsg(), "max_new_tokens"), "%s", ap_errmsg());
}

/* Objective monitors with hand-set values. */
static void s_monitors(void) {
    enum { V = 8 };
    /* (1) Student == teacher: KLs 0, overlap 1; uniform student: entropy log V. */
    {
        enum { N = 2, T = 2 };
        float logits[N * T * V], tlp[N * T * V], mask[N * T] = {1, 1, 1, 1};
        for (int i = 0; i < N * T * V; i++) logits[i] = (float)((i * 37) % 11) * 0.3f;
        for (int p = 0; p < N * T; p++) {
            double m = -1e30, z = 0;
            for (int v = 0; v < V; v++) m = fmax(m, logits[p * V + v]);
            for (int v = 0; v < V; v++) z += exp(logits[p * V + v] - m);
            for (int v = 0; v < V; v++) tlp[p * V + v] = (float)(logits[p * V + v] - m - log(z));
        }
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        c.gkd.c.enabled = 1;
        ap_obj_batch_t b = {.N = N, .T = T, .V = V, .mask = mask, .teacher = {.full = tlp, .tau = 1}};
        ap_obj_t *o = ap_obj_new(&c);
        float g[N * T * V];
        ap_obj_result_t res;
        ap_monitors_t mon = {0};
        AP_CHECK(ap_obj_compute(o, &b, logits, g, &res, &mon) == 0, "%s", ap_errmsg());
        printf("student == teacher: KL(T||S) %.2e KL(S||T) %.2e overlap %.3f loss %.2e\n",
               ap_monitors_get(&mon, "kl/teacher_student", NAN),
               ap_monitors_get(&mon, "kl/student_teacher", NAN),
               ap_monitors_get(&mon, "overlap/teacher", NAN), res.loss);
        AP_CHECK(fabs(ap_monitors_get(&mon, "kl/teacher_student", NAN)) < 1e-6, "KL(T||S) 0");
        AP_CHECK(fabs(ap_monitors_get(&mon, "kl/student_teacher", NAN)) < 1e-6, "KL(S||T) 0");
        AP_CHECK(ap_monitors_get(&mon, "overlap/teacher", NAN) == 1, "overlap 1");
        AP_CHECK(fabs(res.loss) < 1e-6, "JSD 0");
        memset(logits, 0, sizeof logits);
        ap_monitors_clear(&mon);
        ap_obj_compute(o, &b, logits, g, &res, &mon);
        AP_CHECK_NEAR(ap_monitors_get(&mon, "student/entropy", NAN), log(V), 1e-6, 0,
                      "uniform student entropy log V");
        ap_obj_destroy(&o);
    }
    /* (2) Known overlap with a top-K teacher: student top-2 {0, 1}, teacher top-2 {1, 5}. */
    {
        float logits[V] = {3, 2, 1, 0, -1, -2, -3, -4}, mask[1] = {1};
        int32_t ids[2] = {5, 1};
        float lp[2] = {logf(0.6f), logf(0.3f)};
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        c.gkd.c.enabled = 1, c.gkd.support = AP_SUPPORT_TOPK_TAIL;
        ap_obj_batch_t b = {.N = 1, .T = 1, .V = V, .mask = mask,
                            .teacher = {.topk_ids = ids, .topk_lp = lp, .K = 2, .tau = 1}};
        ap_obj_t *o = ap_obj_new(&c);
        float g[V];
        ap_obj_result_t res;
        ap_monitors_t mon = {0};
        AP_CHECK(ap_obj_compute(o, &b, logits, g, &res, &mon) == 0, "%s", ap_errmsg());
        AP_CHECK(ap_monitors_get(&mon, "overlap/teacher", NAN) == 0.5, "overlap %g",
                 ap_monitors_get(&mon, "overlap/teacher", NAN));
        /* KL(T||S) over the tail bins equals the forward-KL loss of the same support. */
        void *scratch = ap_calloc(1, ap_obj_scratch_size(V));
        AP_CHECK(fabs(ap_monitors_get(&mon, "kl/teacher_student", NAN) -
                      ap_obj_divergence(NULL, 0, logits, V, AP_SUPPORT_TOPK_TAIL, NULL, ids, lp,
                                        2, 0.0, 1.0, INFINITY, scratch)) < 1e-5,
                 "KL monitor equals forward KL over top-K + tail");
        free(scratch);
        ap_obj_destroy(&o);
    }
    /* (3) GRPO: clip fraction, importance ratios, staleness, groups dropped. Two groups:
     * g0 rewards (1, 0): A = +-0.7071; g1 rewards (1, 1): dropped. Three tokens each. */
    {
        enum { N = 4, T = 3 };
        float logits[N * T * V], mask[N * T], beh[N * T], lpt[N * T];
        float reward[N] = {1, 0, 1, 1};
        int32_t tok[N * T], group[N] = {0, 0, 1, 1};
        for (int i = 0; i < N * T * V; i++) logits[i] = (float)((i * 13) % 7) * 0.2f;
        for (int p = 0; p < N * T; p++) tok[p] = p % V, mask[p] = 1;
        ap_obj_sampled_logprobs(lpt, logits, tok, N, T, V, 1.0);
        /* rho per token: traj0 (A > 0): 1.5 (clipped), 1.1, 4 (stale); traj1 (A < 0): 0.5
         * (clipped), 0.9, 1.0; group 1: all 1. */
        const double rho[N * T] = {1.5, 1.1, 4.0, 0.5, 0.9, 1.0, 1, 1, 1, 1, 1, 1};
        for (int p = 0; p < N * T; p++) beh[p] = (float)(lpt[p] - log(rho[p]));
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        c.grpo.c.enabled = 1;
        ap_obj_batch_t b = {.N = N, .T = T, .V = V, .tokens = tok, .mask = mask, .behavior = beh,
                            .reward = reward, .group = group};
        ap_obj_t *o = ap_obj_new(&c);
        float g[N * T * V];
        ap_obj_result_t res;
        ap_monitors_t mon = {0};
        AP_CHECK(ap_obj_compute(o, &b, logits, g, &res, &mon) == 0, "%s", ap_errmsg());
        double rm = (1.5 + 1.1 + 4 + 0.5 + 0.9 + 1 + 6) / 12;
        struct {
            const char *name;
            double want;
        } mv[] = {{"pg/clip_frac", 2.0 / 5},   {"pg/dual_clip_frac", 0},
                  {"pg/rho_mean", rm},         {"pg/rho_max", 4.0},
                  {"mask/stale_frac", 1.0 / 12}, {"mask/stale_tokens", 1},
                  {"grpo/groups", 2},          {"grpo/groups_dropped", 1},
                  {"grpo/traj_dropped", 2},    {"tokens/grpo", 5},
                  {"reward/mean", 0.75}};
        for (size_t i = 0; i < AP_COUNT(mv); i++) {
            double got = ap_monitors_get(&mon, mv[i].name, NAN);
            printf("  %-22s %.6f\n", mv[i].name, got);
            AP_CHECK_NEAR(got, mv[i].want, 1e-5, 1e-5, "%s", mv[i].name);
        }
        /* The clipped tokens have no gradient, the others do. */
        double g0 = 0, g1 = 0;
        for (int v = 0; v < V; v++) g0 += fabs(g[0 * V + v]), g1 += fabs(g[1 * V + v]);
        AP_CHECK(g0 == 0 && g1 > 0, "clipped token gradient 0 (%g), unclipped > 0 (%g)", g0, g1);
        /* Dual clip: staleness off, a token with rho 5 and A < 0 hits -c A. */
        ap_obj_destroy(&o);
        c.grpo.pg.dual_clip = 3, c.grpo.pg.max_is_ratio = INFINITY;
        beh[4] = (float)(lpt[4] - log(5.0));
        o = ap_obj_new(&c);
        ap_monitors_clear(&mon);
        AP_CHECK(ap_obj_compute(o, &b, logits, g, &res, &mon) == 0, "%s", ap_errmsg());
        AP_CHECK_NEAR(ap_monitors_get(&mon, "pg/dual_clip_frac", NAN), 1.0 / 6, 1e-9, 0, "dual");
        AP_CHECK(ap_monitors_get(&mon, "mask/stale_tokens", NAN) == 0, "staleness off");
        ap_obj_destroy(&o);
    }
    /* (4) SRPO routing: correct (1, 0, 0, 0), h (0, 1, 0, 1): SD = {1, 3}. */
    {
        enum { N = 4, T = 2 };
        float logits[N * T * V], mask[N * T], beh[N * T], lpt[N * T], slp[N * T * V];
        float reward[N] = {1, 0, 0, 0};
        int32_t tok[N * T], group[N] = {0, 0, 0, 0}, corr[N] = {1, 0, 0, 0}, h[N] = {0, 1, 0, 1};
        for (int i = 0; i < N * T * V; i++)
            logits[i] = (float)((i * 5) % 9) * 0.25f, slp[i] = -logf((float)V);
        for (int p = 0; p < N * T; p++) tok[p] = (p * 3) % V, mask[p] = 1;
        ap_obj_sampled_logprobs(lpt, logits, tok, N, T, V, 1.0);
        memcpy(beh, lpt, sizeof beh);
        ap_obj_config_t c;
        ap_obj_config_defaults(&c);
        c.srpo.c.enabled = 1;
        ap_obj_batch_t b = {.N = N, .T = T, .V = V, .tokens = tok, .mask = mask, .behavior = beh,
                            .reward = reward, .group = group, .correct = corr, .has_teacher = h,
                            .self_teacher = {.full = slp, .tau = 1}};
        ap_obj_t *o = ap_obj_new(&c);
        float g[N * T * V];
        ap_obj_result_t res;
        ap_monitors_t mon = {0};
        AP_CHECK(ap_obj_compute(o, &b, logits, g, &res, &mon) == 0, "%s", ap_errmsg());
        AP_CHECK(ap_monitors_get(&mon, "srpo/sd_frac", NAN) == 0.5 &&
                     ap_monitors_get(&mon, "srpo/grpo_frac", NAN) == 0.5 &&
                     ap_monitors_get(&mon, "srpo/sd_tokens", NAN) == 4 &&
                     ap_monitors_get(&mon, "srpo/grpo_tokens", NAN) == 4 &&
                     res.count_obj[AP_OBJ_SRPO] == 8,
                 "srpo fractions %g %g", ap_monitors_get(&mon, "srpo/sd_frac", NAN),
                 ap_monitors_get(&mon, "srpo/grpo_frac", NAN));
        /* A uniform self-teacher has entropy log V everywhere. */
        AP_CHECK_NEAR(ap_monitors_get(&mon, "srpo/teacher_entropy", NAN), log(V), 1e-6, 0,
                      "teacher entropy");
        AP_CHECK(ap_monitors_get(&mon, "reward/accuracy", NAN) == 0.25, "accuracy");
        ap_obj_destroy(&o);
    }
}

int main(void) {
    s_rep();
    s_penalty();
    s_build();
    s_monitors();
    return ap_test_result();
}
