/* test_loss_reference: every $AP_TESTDATA/losses/<case>.safetensors case reproduced (testdata
 * README: total loss within 1e-4 relative or 1e-5 absolute; gradient with
 * ||g - g_ref|| / ||g_ref|| < 1e-3), with the objectives and options read from each file's
 * metadata `config`, so a new case needs no code. One line per case; fails when no case is
 * found. Each case is also evaluated in micro-batches (rows split 3 + 2 + rest) and must match
 * the full-batch loss and gradient. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"
#include "apprentice/safetensors.h"
#include "test.h"

/* Read tensor `name` as floats (NULL when absent). */
static float *s_f32(const ap_st_t *st, const char *name, int64_t n) {
    if (!ap_st_find(st, name)) return NULL;
    float *x = ap_malloc((size_t)n * sizeof *x);
    if (ap_st_read_f32(st, name, x, n) < 0) {
        fprintf(stderr, "%s\n", ap_errmsg());
        free(x);
        return NULL;
    }
    return x;
}

static int32_t *s_i32(const ap_st_t *st, const char *name, int64_t n) {
    if (!ap_st_find(st, name)) return NULL;
    int32_t *x = ap_malloc((size_t)n * sizeof *x);
    if (ap_st_read_i32(st, name, x, n) < 0) {
        fprintf(stderr, "%s\n", ap_errmsg());
        free(x);
        return NULL;
    }
    return x;
}

/* log_softmax(z / tau) per row of V (the vectors store full-support teachers as logits). */
static float *s_logprobs(const float *z, int64_t rows, int V, double tau) {
    if (!z) return NULL;
    float *lp = ap_malloc((size_t)rows * V * sizeof *lp);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = z + r * V;
        double m = x[0], acc = 0;
        for (int v = 1; v < V; v++) m = x[v] > m ? x[v] : m;
        for (int v = 0; v < V; v++) acc += exp((x[v] - m) / tau);
        for (int v = 0; v < V; v++) lp[r * V + v] = (float)((x[v] - m) / tau - log(acc));
    }
    return lp;
}

static int s_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void s_case(const char *dir, const char *file) {
    char *path = ap_sprintf("%s/%s", dir, file);
    ap_st_t *st = ap_st_open(path);
    AP_CHECK(st != NULL, "open %s: %s", path, ap_errmsg());
    if (!st) {
        free(path);
        return;
    }
    const char *json = ap_st_metadata(st, "config");
    ap_obj_config_t cfg;
    int ok = json && ap_obj_config_from_json(&cfg, json, path) == 0;
    AP_CHECK(ok, "%s: config: %s", file, json ? ap_errmsg() : "no metadata 'config'");
    const ap_st_tensor_t *sl = ap_st_find(st, "student_logits");
    AP_CHECK(sl && sl->ndim == 3, "%s: student_logits [N, T, V] missing", file);
    if (!ok || !sl || sl->ndim != 3) {
        ap_st_close(&st);
        free(path);
        return;
    }
    const int N = (int)sl->shape[0], T = (int)sl->shape[1], V = (int)sl->shape[2];
    const int64_t NT = (int64_t)N * T, NTV = NT * V;
    const ap_st_tensor_t *tk = ap_st_find(st, "teacher_topk_ids");
    const ap_st_tensor_t *sk = ap_st_find(st, "self_teacher_topk_ids");
    const int KT = tk ? (int)tk->shape[2] : 0, KS = sk ? (int)sk->shape[2] : 0;

    float *logits = s_f32(st, "student_logits", NTV), *grad_ref = s_f32(st, "expected_grad", NTV);
    float *loss_ref = s_f32(st, "expected_loss", 1);
    float *tz = s_f32(st, "teacher_logits", NTV), *sz = s_f32(st, "self_teacher_logits", NTV);
    double t_tau = cfg.gkd.c.enabled ? cfg.gkd.tau : 1.0;
    double s_tau = cfg.opsd.c.enabled ? cfg.opsd.tau : 1.0;
    float *tlp = s_logprobs(tz, NT, V, t_tau), *slp = s_logprobs(sz, NT, V, s_tau);
    ap_obj_batch_t b = {
        .N = N,
        .T = T,
        .V = V,
        .tokens = s_i32(st, "tokens", NT),
        .mask = s_f32(st, "mask", NT),
        .behavior = s_f32(st, "behavior", NT),
        .ref = s_f32(st, "ref", NT),
        .teacher_sampled = s_f32(st, "teacher_sampled", NT),
        .reward = s_f32(st, "reward", N),
        .correct = s_i32(st, "correct", N),
        .group = s_i32(st, "group", N),
        .has_teacher = s_i32(st, "has_teacher", N),
        .on_policy = NULL, /* every trajectory in these files is on-policy */
        .teacher = {.full = tlp,
                    .topk_ids = KT ? s_i32(st, "teacher_topk_ids", NT * KT) : NULL,
                    .topk_lp = KT ? s_f32(st, "teacher_topk_logprobs", NT * KT) : NULL,
                    .K = KT,
                    .tau = t_tau},
        .self_teacher = {.full = slp,
                         .topk_ids = KS ? s_i32(st, "self_teacher_topk_ids", NT * KS) : NULL,
                         .topk_lp = KS ? s_f32(st, "self_teacher_topk_logprobs", NT * KS) : NULL,
                         .K = KS,
                         .tau = s_tau},
    };
    AP_CHECK(logits && grad_ref && loss_ref && b.mask, "%s: a required tensor is missing", file);
    ap_obj_t *obj = ap_obj_new(&cfg);
    AP_CHECK(obj != NULL, "%s: %s", file, ap_errmsg());
    float *grad = ap_calloc((size_t)NTV, sizeof *grad), *grad_mb = ap_calloc((size_t)NTV, 4);
    ap_obj_result_t res = {0};
    ap_monitors_t mon = {0};
    if (obj && logits && grad_ref && loss_ref && b.mask) {
        int rc = ap_obj_compute(obj, &b, logits, grad, &res, &mon);
        AP_CHECK(rc == 0, "%s: %s", file, ap_errmsg());
        double dn = 0, rn = 0, dmax = 0;
        for (int64_t i = 0; i < NTV; i++) {
            double d = (double)grad[i] - grad_ref[i];
            dn += d * d, rn += (double)grad_ref[i] * grad_ref[i];
            dmax = fabs(d) > dmax || isnan(d) ? fabs(d) : dmax;
        }
        double gerr = rn > 0 ? sqrt(dn / rn) : sqrt(dn);
        double lerr = fabs(res.loss - loss_ref[0]);
        printf("%-38s loss %12.8f want %12.8f |diff| %.1e  grad rel err %.1e max %.1e\n",
               file, res.loss, loss_ref[0], lerr, gerr, dmax);
        AP_CHECK_NEAR(res.loss, loss_ref[0], 1e-5, 1e-4, "%s: total loss", file);
        AP_CHECK(gerr < 1e-3, "%s: gradient relative error %.3g", file, gerr);
        AP_CHECK(!res.nonfinite, "%s: non-finite flag set", file);

        /* Micro-batches: the whole-batch plan, then rows [0,3), [3,5), [5,N). */
        float *lpt = ap_malloc((size_t)NT * sizeof *lpt);
        ap_obj_sampled_logprobs(lpt, logits, b.tokens, N, T, V, 1.0);
        AP_CHECK(ap_obj_plan(obj, &b, lpt) == 0, "%s: plan: %s", file, ap_errmsg());
        double total = 0;
        int cuts[4] = {0, AP_MIN(3, N), AP_MIN(5, N), N};
        for (int k = 0; k < 3; k++)
            total += ap_obj_eval(obj, cuts[k], cuts[k + 1] - cuts[k], logits + (int64_t)cuts[k] * T * V,
                                 grad_mb + (int64_t)cuts[k] * T * V);
        ap_obj_result_t r2;
        ap_obj_finish(obj, &r2, NULL);
        AP_CHECK(fabs(total - res.loss) <= 1e-12 * (1 + fabs(res.loss)) &&
                     fabs(r2.loss - res.loss) <= 1e-12 * (1 + fabs(res.loss)),
                 "%s: micro-batched loss %.17g / %.17g vs full %.17g", file, total, r2.loss,
                 res.loss);
        AP_CHECK(!memcmp(grad, grad_mb, (size_t)NTV * sizeof *grad),
                 "%s: micro-batched gradient differs from the full batch", file);
        free(lpt);
    }
    ap_obj_destroy(&obj);
    free(grad), free(grad_mb), free(logits), free(grad_ref), free(loss_ref), free(tz), free(sz);
    free(tlp), free(slp);
    free((void *)b.tokens), free((void *)b.mask), free((void *)b.behavior), free((void *)b.ref);
    free((void *)b.teacher_sampled), free((void *)b.reward), free((void *)b.correct);
    free((void *)b.group), free((void *)b.has_teacher);
    free((void *)b.teacher.topk_ids), free((void *)b.teacher.topk_lp);
    free((void *)b.self_teacher.topk_ids), free((void *)b.self_teacher.topk_lp);
    ap_st_close(&st);
    free(path);
}

int main(void) {
    char *dir = ap_sprintf("%s/losses", ap_testdata_dir());
    DIR *d = opendir(dir);
    AP_CHECK(d != NULL, "cannot open %s", dir);
    char *names[1024];
    int n = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && n < 1024) {
            size_t len = strlen(e->d_name);
            if (len > 12 && !strcmp(e->d_name + len - 12, ".safetensors"))
                names[n++] = ap_strdup(e->d_name);
        }
        closedir(d);
    }
    qsort(names, (size_t)n, sizeof *names, s_cmp);
    AP_CHECK(n > 0, "no case found under %s", dir);
    for (int i = 0; i < n; i++) {
        s_case(dir, names[i]);
        free(names[i]);
    }
    printf("%d cases\n", n);
    free(dir);
    return ap_test_result();
}
