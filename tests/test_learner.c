/* test_learner.c: the learner's steps on handmade batches (no sockets: ap_learner_step):
 *   1. every objective (gkd full and top-K tail, opd, grpo, grpo + k3 reference, opsd, srpo, a
 *      gkd + grpo hybrid over on-policy and dataset groups): finite losses over a few steps on a
 *      repeated batch, and a falling loss (opd: a falling gap between the student's and the
 *      teacher's sampled-token log-probs, what its gradient closes);
 *   2. micro-batches give the whole batch's loss and gradient norm (grpo: pre-pass path; gkd);
 *   3. the base mask the learner builds (EOS, mask_tokens resolved through the vocabulary,
 *      padding) against one computed here; an unknown mask token is refused at start-up;
 *   4. skips, counted, weights untouched: non-finite loss (a NaN weight), truncation rate,
 *      empty batch (every item invalid); scores in a form an objective cannot use are masked
 *      and counted (the step goes on);
 *   5. checkpoint + resume: same step, gen + 1, bit-exact weights, and a bit-exact next step;
 *      a restart without a checkpoint still bumps gen (RUN/learner-gen);
 *   6. rollouts.jsonl lines. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/learner.h"
#include "test.h"
#include "test_learner_fixture.h"

static char s_student[600];

static ap_learner_t *s_new(const ap_config_t *cfg, const char *dir) {
    ap_learner_opts_t o = {.cfg = cfg, .run_dir = dir};
    ap_learner_t *L = ap_learner_new(&o);
    AP_ASSERTF(L, "%s", ap_errmsg());
    return L;
}

/* Mean |logp_theta - lt| over the external teacher's sampled tokens of b (the opd gap). */
static double s_opd_gap(ap_model_t *m, const ap_batch_t *b) {
    double s = 0;
    int n = 0;
    for (int j = 0; j < b->n_items; j++) {
        const ap_group_t *g = b->items[j].group;
        const ap_scores_t *e = ap_batch_item_scores(&b->items[j], AP_TEACHER_EXTERNAL);
        for (int i = 0; i < g->G; i++) {
            int off = g->offset[i], len = g->offset[i + 1] - off;
            float lp[64];
            fx_logprobs(m, g->prompt, g->n_prompt, g->tokens + off, len, 1.0, lp);
            for (int t = 0; t < len; t++)
                s += fabs(lp[t] - e->sampled[off + t]), n++;
        }
    }
    return s / n;
}

typedef enum { S_FALLS, S_GAP_FALLS, S_FINITE } s_expect_t;

static void s_objective_case(const char *name, const char *set1, const char *set2,
                             fx_batch_opts_t bo, s_expect_t expect) {
    ap_config_t *cfg = fx_config(s_student, set1, set2, NULL);
    ap_learner_t *L = s_new(cfg, NULL);
    ap_batch_t *b = fx_batch(ap_learner_model(L), &bo);
    const int steps = 6;
    double loss[6], gap0 = expect == S_GAP_FALLS ? s_opd_gap(ap_learner_model(L), b) : 0;
    int finite = 1, stepped = 0;
    for (int s = 0; s < steps; s++) {
        ap_learner_step_t st;
        AP_CHECK(ap_learner_step(L, b, &st) == 0, "%s: step %d: %s", name, s, ap_errmsg());
        loss[s] = st.loss;
        finite &= isfinite(st.loss) && isfinite(st.grad_norm);
        stepped += st.skipped == AP_LEARNER_STEPPED;
        if (st.skipped != AP_LEARNER_STEPPED)
            fprintf(stderr, "  %s step %d skipped: %s\n", name, s,
                    ap_learner_skip_name(st.skipped));
    }
    AP_CHECK(finite && stepped == steps, "%s: %d of %d stepped, finite %d", name, stepped, steps,
             finite);
    AP_CHECK(ap_learner_version(L).step == (uint64_t)stepped, "%s: version step %llu", name,
             (unsigned long long)ap_learner_version(L).step);
    if (expect == S_FALLS) {
        AP_CHECK(loss[steps - 1] < loss[0], "%s: loss %g -> %g does not fall", name, loss[0],
                 loss[steps - 1]);
        printf("case %s: loss %.5f -> %.5f\n", name, loss[0], loss[steps - 1]);
    } else if (expect == S_GAP_FALLS) {
        double gap1 = s_opd_gap(ap_learner_model(L), b);
        AP_CHECK(gap1 < gap0, "%s: |logp - lt| %g -> %g does not fall", name, gap0, gap1);
        printf("case %s: loss %.5f -> %.5f, |logp - lt| %.4f -> %.4f\n", name, loss[0],
               loss[steps - 1], gap0, gap1);
    } else {
        printf("case %s: loss %.5f -> %.5f (finite)\n", name, loss[0], loss[steps - 1]);
    }
    ap_batch_destroy(&b);
    ap_learner_destroy(&L);
    ap_config_destroy(&cfg);
}

static void s_objectives(void) {
    fx_batch_opts_t bo = fx_batch_defaults();
    bo.ext = FX_FULL;
    s_objective_case("gkd full", "objective.gkd.enabled=true", NULL, bo, S_FALLS);
    bo.ext = FX_TOPK;
    s_objective_case("gkd topk_tail", "objective.gkd.enabled=true",
                     "objective.gkd.support=topk_tail", bo, S_FALLS);
    bo.ext = FX_FULL;
    s_objective_case("opd", "objective.opd.enabled=true", NULL, bo, S_GAP_FALLS);
    bo = fx_batch_defaults();
    s_objective_case("grpo", "objective.grpo.enabled=true", NULL, bo, S_FALLS);
    bo.ref = 1;
    s_objective_case("grpo k3", "objective.grpo.enabled=true", "objective.grpo.kl_ref=0.1", bo,
                     S_FINITE);
    bo = fx_batch_defaults();
    bo.self = FX_FULL;
    s_objective_case("opsd", "objective.opsd.enabled=true", NULL, bo, S_FALLS);
    s_objective_case("srpo", "objective.srpo.enabled=true", NULL, bo, S_FALLS);
    bo = fx_batch_defaults();
    bo.ext = FX_FULL, bo.groups = 1, bo.dataset = 4;
    s_objective_case("gkd+grpo with dataset groups", "objective.gkd.enabled=true",
                     "objective.grpo.enabled=true", bo, S_FINITE);
}

/* One step's loss and gradient norm with micro_batch mb. */
static void s_one_step(const char *obj, int mb, const fx_batch_opts_t *bo, double *loss,
                       double *gn) {
    char set[64];
    snprintf(set, sizeof set, "batch.micro_batch=%d", mb);
    ap_config_t *cfg = fx_config(s_student, obj, set, NULL);
    ap_learner_t *L = s_new(cfg, NULL);
    ap_batch_t *b = fx_batch(ap_learner_model(L), bo);
    ap_learner_step_t st;
    AP_CHECK(ap_learner_step(L, b, &st) == 0 && st.skipped == AP_LEARNER_STEPPED, "%s mb %d", obj,
             mb);
    *loss = st.loss, *gn = st.grad_norm;
    ap_batch_destroy(&b);
    ap_learner_destroy(&L);
    ap_config_destroy(&cfg);
}

static void s_micro_batches(void) {
    fx_batch_opts_t bo = fx_batch_defaults();
    bo.ext = FX_FULL;
    const char *objs[2] = {"objective.grpo.enabled=true", "objective.gkd.enabled=true"};
    for (int k = 0; k < 2; k++) {
        double l0, g0, l3, g3;
        s_one_step(objs[k], 0, &bo, &l0, &g0);
        s_one_step(objs[k], 3, &bo, &l3, &g3);
        double el = fabs(l3 - l0), eg = fabs(g3 - g0) / g0;
        printf("case micro-batch 3 vs whole (%s): loss err %.3g, grad norm rel err %.3g\n", objs[k],
               el, eg);
        AP_CHECK_NEAR(l3, l0, 1e-6, 1e-5, "%s loss", objs[k]);
        AP_CHECK_NEAR(g3, g0, 1e-7, 1e-4, "%s grad norm", objs[k]);
    }
}

static void s_masks(void) {
    ap_config_t *cfg = fx_config(s_student, "objective.grpo.enabled=true",
                                 "stabilizers.mask_tokens=[\"+\"]", NULL);
    ap_learner_t *L = s_new(cfg, NULL);
    ap_tokenizer_t *tok = ap_tokenizer_load_dir(s_student);
    int32_t plus = -1;
    for (int v = 0; v < ap_tokenizer_vocab_size(tok); v++)
        if (!strcmp(ap_tokenizer_token(tok, v), "+")) plus = v;
    AP_ASSERT(plus >= 0);
    fx_batch_opts_t bo = fx_batch_defaults();
    ap_batch_t *b = fx_batch(ap_learner_model(L), &bo);
    /* make some tokens '+' and move one EOS earlier (tokens after it are masked) */
    ap_group_t *g = b->items[0].group;
    g->tokens[g->offset[0]] = plus;
    int off1 = g->offset[1], len1 = g->offset[2] - off1;
    if (len1 >= 3) g->tokens[off1] = 2;
    ap_learner_step_t st;
    AP_CHECK(ap_learner_step(L, b, &st) == 0 && st.skipped == AP_LEARNER_STEPPED, "mask step");
    const ap_learner_batch_t *lb = ap_learner_last_batch(L);
    int bad = 0, ones = 0;
    for (int n = 0; n < lb->N; n++) {
        int eos_seen = 0;
        for (int t = 0; t < lb->T; t++) {
            int32_t y = lb->tokens[(size_t)n * lb->T + t];
            float want = t < lb->length[n] && !eos_seen && y != plus ? 1.0f : 0.0f;
            if (t < lb->length[n] && y == 2) eos_seen = 1;
            float got = lb->mask[(size_t)n * lb->T + t];
            bad += got != want;
            ones += want > 0;
        }
    }
    printf("case masks (EOS, '+' = id %d, padding): %d of %d positions differ, %d kept\n", plus,
           bad, lb->N * lb->T, ones);
    AP_CHECK(bad == 0 && ones > 0, "mask mismatches %d", bad);
    AP_CHECK(ap_monitors_get(&st.mon, "mask/special_frac", 0) > 0, "special_frac reported");
    ap_batch_destroy(&b);
    ap_learner_destroy(&L);
    ap_config_destroy(&cfg);
    ap_tokenizer_destroy(&tok);

    cfg = fx_config(s_student, "objective.grpo.enabled=true", "stabilizers.mask_tokens=[\"@\"]",
                    NULL);
    ap_learner_opts_t o = {.cfg = cfg};
    L = ap_learner_new(&o);
    AP_CHECK(!L && strstr(ap_errmsg(), "mask_tokens"), "unknown mask token refused: %s",
             ap_errmsg());
    printf("case unknown mask token: %s\n", ap_errmsg());
    ap_learner_destroy(&L);
    ap_config_destroy(&cfg);
}

static void s_skips(void) {
    ap_config_t *cfg =
        fx_config(s_student, "objective.grpo.enabled=true", "objective.gkd.enabled=true", NULL);
    ap_learner_t *L = s_new(cfg, NULL);
    ap_model_t *m = ap_learner_model(L);
    fx_batch_opts_t bo = fx_batch_defaults();
    bo.ext = FX_FULL;
    ap_batch_t *b = fx_batch(m, &bo);
    ap_learner_step_t st;

    /* non-finite: a NaN in the final norm makes every logit NaN */
    const ap_param_t *p = ap_model_find(m, "model.norm.weight");
    float *w = ap_model_params(m) + p->offset, saved = w[3];
    w[3] = NAN;
    uint64_t before = ap_model_checksum(m);
    AP_CHECK(ap_learner_step(L, b, &st) == 0, "nonfinite step: %s", ap_errmsg());
    AP_CHECK(st.skipped == AP_LEARNER_SKIP_NONFINITE, "skipped %s",
             ap_learner_skip_name(st.skipped));
    AP_CHECK(ap_learner_skipped(L, AP_LEARNER_SKIP_NONFINITE) == 1, "counted");
    AP_CHECK(ap_model_checksum(m) == before && ap_model_step_count(m) == 0 &&
                 ap_learner_version(L).step == 0,
             "weights, optimizer and version untouched");
    printf("case non-finite loss: skipped (%s), counted, weights untouched\n",
           ap_learner_skip_name(st.skipped));
    w[3] = saved;
    AP_CHECK(ap_learner_step(L, b, &st) == 0 && st.skipped == AP_LEARNER_STEPPED &&
                 ap_learner_version(L).step == 1,
             "the next good batch steps");

    /* truncation: every on-policy trajectory cut by length */
    fx_batch_opts_t tb = bo;
    tb.truncate = 1;
    ap_batch_t *bt = fx_batch(m, &tb);
    AP_CHECK(ap_learner_step(L, bt, &st) == 0 && st.skipped == AP_LEARNER_SKIP_TRUNCATION &&
                 ap_learner_skipped(L, AP_LEARNER_SKIP_TRUNCATION) == 1,
             "truncation skip: %s", ap_learner_skip_name(st.skipped));
    ap_batch_destroy(&bt);

    /* empty: every item carries an out-of-range token */
    ap_batch_t *be = fx_batch(m, &bo);
    for (int j = 0; j < be->n_items; j++)
        be->items[j].group->tokens[0] = 100000;
    AP_CHECK(ap_learner_step(L, be, &st) == 0 && st.skipped == AP_LEARNER_SKIP_EMPTY &&
                 ap_learner_last_batch(L)->dropped == 8,
             "empty skip: %s", ap_learner_skip_name(st.skipped));
    ap_batch_destroy(&be);

    /* gkd with a full support gets only top-K scores: no usable form, the positions are masked
     * in gkd (counted) and grpo still steps */
    fx_batch_opts_t kb = bo;
    kb.ext = FX_TOPK;
    ap_batch_t *bk = fx_batch(m, &kb);
    AP_CHECK(ap_learner_step(L, bk, &st) == 0 && st.skipped == AP_LEARNER_STEPPED,
             "top-K for a full support: %s", ap_learner_skip_name(st.skipped));
    AP_CHECK(ap_learner_last_batch(L)->missing[AP_TEACHER_EXTERNAL] == 8 &&
                 ap_monitors_get(&st.mon, "mask/nonfinite_teacher", 0) > 0 &&
                 ap_monitors_get(&st.mon, "loss/gkd", -1) == 0,
             "missing form counted (%ld) and masked (%g positions), gkd loss %g",
             ap_learner_last_batch(L)->missing[AP_TEACHER_EXTERNAL],
             ap_monitors_get(&st.mon, "mask/nonfinite_teacher", 0),
             ap_monitors_get(&st.mon, "loss/gkd", -1));
    ap_batch_destroy(&bk);
    AP_CHECK(ap_learner_version(L).step == 2, "no step taken by skipped batches");
    printf("case skips: truncation %ld, empty %ld, nonfinite %ld; missing form masked\n",
           ap_learner_skipped(L, AP_LEARNER_SKIP_TRUNCATION),
           ap_learner_skipped(L, AP_LEARNER_SKIP_EMPTY),
           ap_learner_skipped(L, AP_LEARNER_SKIP_NONFINITE));
    ap_batch_destroy(&b);
    ap_learner_destroy(&L);
    ap_config_destroy(&cfg);
}

static void s_resume(const char *root) {
    char run[700];
    snprintf(run, sizeof run, "%s/run", root);
    ap_mkdirs(run);
    ap_config_t *cfg =
        fx_config(s_student, "objective.grpo.enabled=true", "objective.opsd.enabled=true",
                  "learner.rollouts_every=1", "learner.rollouts_per_step=2", NULL);
    ap_learner_t *A = s_new(cfg, run);
    AP_CHECK(ap_learner_version(A).gen == 1 && ap_learner_resumed_from(A) == -1, "fresh gen 1");
    fx_batch_opts_t bo = fx_batch_defaults();
    bo.self = FX_TOPK;
    bo.K = 6;
    ap_config_t *cfgk = fx_config(s_student, "objective.grpo.enabled=true",
                                  "objective.opsd.enabled=true", "objective.opsd.support=topk",
                                  "learner.rollouts_every=1", "learner.rollouts_per_step=2", NULL);
    ap_learner_destroy(&A);
    A = s_new(cfgk, run); /* gen 2: no checkpoint yet, but learner-gen says 1 was used */
    AP_CHECK(ap_learner_version(A).gen == 2, "restart without checkpoint: gen %u",
             ap_learner_version(A).gen);
    ap_batch_t *b = fx_batch(ap_learner_model(A), &bo);
    ap_learner_step_t st;
    for (int s = 0; s < 3; s++)
        AP_CHECK(ap_learner_step(A, b, &st) == 0 && st.skipped == AP_LEARNER_STEPPED, "step %d", s);
    AP_CHECK(ap_learner_checkpoint(A) == 0, "checkpoint: %s", ap_errmsg());
    uint64_t sumA = ap_model_checksum(ap_learner_model(A));
    ap_learner_t *B = s_new(cfgk, run);
    AP_CHECK(ap_learner_resumed_from(B) == 3 && ap_learner_version(B).step == 3 &&
                 ap_learner_version(B).gen == 3,
             "resumed at step %ld gen %u", ap_learner_resumed_from(B), ap_learner_version(B).gen);
    AP_CHECK(ap_model_checksum(ap_learner_model(B)) == sumA, "bit-exact weights after resume");
    bo.seed = 9;
    ap_batch_t *b2 = fx_batch(ap_learner_model(A), &bo);
    ap_learner_step_t sa, sb;
    AP_CHECK(ap_learner_step(A, b2, &sa) == 0 && ap_learner_step(B, b2, &sb) == 0, "next steps");
    AP_CHECK(ap_model_checksum(ap_learner_model(A)) == ap_model_checksum(ap_learner_model(B)) &&
                 sa.loss == sb.loss,
             "bit-exact next step (optimizer moments restored): loss %.9g vs %.9g", sa.loss,
             sb.loss);
    printf("case resume: step %llu, gen %u -> %u, checksum %016llx, next-step loss %.6f both\n",
           (unsigned long long)ap_learner_version(B).step, ap_learner_version(A).gen,
           ap_learner_version(B).gen, (unsigned long long)sumA, sb.loss);
    ap_learner_t *C = s_new(cfgk, run);
    AP_CHECK(ap_learner_version(C).gen == 4, "a second restart from the same checkpoint: gen %u",
             ap_learner_version(C).gen);
    ap_learner_destroy(&C);

    /* rollouts: 2 lines per step for A's 4 steps + B's 1 */
    char path[800];
    snprintf(path, sizeof path, "%s/rollouts.jsonl", run);
    FILE *f = fopen(path, "r");
    AP_CHECK(f != NULL, "rollouts.jsonl exists");
    int lines = 0, good = 0;
    char line[1 << 14];
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        good += o && json_is_string(json_object_get(o, "route")) &&
                json_is_array(json_object_get(o, "student_logprobs")) &&
                json_is_string(json_object_get(o, "completion"));
        json_decref(o);
    }
    if (f) fclose(f);
    AP_CHECK(lines == 10 && good == 10, "rollouts: %d lines, %d complete", lines, good);
    printf("case rollouts: %d lines\n", lines);
    ap_batch_destroy(&b);
    ap_batch_destroy(&b2);
    ap_learner_destroy(&A);
    ap_learner_destroy(&B);
    ap_config_destroy(&cfg);
    ap_config_destroy(&cfgk);
}

int main(void) {
    ap_log_set_role("test_learner", 0);
    ap_log_set_level(AP_LOG_WARN);
    const char *root = ap_test_tmpdir("learner");
    snprintf(s_student, sizeof s_student, "%s/student", root);
    fx_student(s_student, 7);
    double t0 = ap_now();
    s_objectives();
    s_micro_batches();
    s_masks();
    s_skips();
    s_resume(root);
    printf("total %.2f s\n", ap_now() - t0);
    return ap_test_result();
}
