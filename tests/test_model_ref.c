/* test_model_ref: every model-* case under ap_testdata_dir() (testdata/README.md): logits and
 * loss element-wise within 1e-4 relative or 1e-5 absolute; every gradient, the gradient norm and
 * the parameters after one AdamW step (hyper-parameters from the case metadata) within
 * ||got - ref|| / ||ref|| < 1e-3. One line per case; fails when no case is found. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/safetensors.h"
#include "test.h"

/* ||a - b|| / ||b|| in double */
static double s_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float s_meta_f(const ap_st_t *st, const char *key, float dflt) {
    const char *v = ap_st_metadata(st, key);
    return v ? strtof(v, NULL) : dflt;
}

static void s_case(const char *root, const char *name) {
    char *dir = ap_sprintf("%s/%s", root, name), *cpath = ap_sprintf("%s/case.safetensors", dir);
    ap_model_t *m = ap_model_load(dir);
    ap_st_t *cs = ap_st_open(cpath);
    AP_CHECK(m && cs, "%s: load: %s", name, ap_errmsg());
    if (!m || !cs) goto out;
    const ap_model_config_t *c = ap_model_config(m);
    const ap_st_tensor_t *tt = ap_st_find(cs, "tokens");
    AP_CHECK(tt && tt->ndim == 2, "%s: tokens [B, T]", name);
    if (!tt || tt->ndim != 2) goto out;
    int B = (int)tt->shape[0], T = (int)tt->shape[1], V = c->vocab_size;
    size_t N = (size_t)B * T;
    int32_t *tok = ap_malloc(N * sizeof *tok), *tgt = ap_malloc(N * sizeof *tgt);
    float *want = ap_malloc(N * V * sizeof *want), loss_ref = 0, gnorm_ref = 0;
    AP_CHECK(ap_st_read_i32(cs, "tokens", tok, (int64_t)N) == 0 &&
                 ap_st_read_i32(cs, "targets", tgt, (int64_t)N) == 0 &&
                 ap_st_read_f32(cs, "logits", want, (int64_t)(N * V)) == 0 &&
                 ap_st_read_f32(cs, "loss", &loss_ref, 1) == 0 &&
                 ap_st_read_f32(cs, "grad_norm", &gnorm_ref, 1) == 0,
             "%s: case tensors: %s", name, ap_errmsg());

    /* forward: logits element-wise */
    ap_model_zero_grad(m);
    float *logits = ap_model_forward(m, tok, NULL, B, T);
    AP_CHECK(logits != NULL, "%s: forward: %s", name, ap_errmsg());
    if (!logits) goto free_case;
    double max_logit_err = 0;
    for (size_t i = 0; i < N * V; i++) {
        double e = fabs((double)logits[i] - want[i]);
        if (e > max_logit_err) max_logit_err = e;
        AP_CHECK_NEAR(logits[i], want[i], 1e-5, 1e-4, "%s logits[%zu]", name, i);
    }
    float loss;
    float *dlogits = ap_malloc(N * V * sizeof *dlogits);
    AP_CHECK(ap_cross_entropy(dlogits, &loss, logits, tgt, (int)N, V) == 0, "%s: CE: %s", name,
             ap_errmsg());
    AP_CHECK_NEAR(loss, loss_ref, 1e-5, 1e-4, "%s loss", name);

    /* backward: every gradient, relative norm of the difference */
    ap_model_backward(m, dlogits);
    const float *G = ap_model_grads(m);
    double max_grad_err = 0;
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        char *gname = ap_sprintf("grad.%s", p->name);
        float *ref = ap_malloc(p->numel * sizeof *ref);
        int ok = ap_st_read_f32_shaped(cs, gname, ref, p->ndim, p->shape) == 0;
        AP_CHECK(ok, "%s: %s", name, ap_errmsg());
        if (ok) {
            double e = s_rel(G + p->offset, ref, p->numel);
            if (e > max_grad_err) max_grad_err = e;
            AP_CHECK(e < 1e-3, "%s: %s relative error %.3g", name, gname, e);
        }
        free(ref), free(gname);
    }
    double gnorm = ap_model_grad_norm(m);
    double gnorm_err = fabs(gnorm - gnorm_ref) / gnorm_ref;
    AP_CHECK(gnorm_err < 1e-3, "%s: grad norm %.7g vs %.7g", name, gnorm, gnorm_ref);

    /* one AdamW step from zero moments with the case's hyper-parameters */
    ap_adamw_t opt = {
        .beta1 = s_meta_f(cs, "beta1", 0.9f),
        .beta2 = s_meta_f(cs, "beta2", 0.999f),
        .eps = s_meta_f(cs, "eps", 1e-8f),
        .weight_decay = s_meta_f(cs, "weight_decay", 0.0f),
        .clip_grad_norm = s_meta_f(cs, "clip_grad_norm", 0.0f),
    };
    float lr = s_meta_f(cs, "lr", 1e-3f);
    size_t nf = ap_model_num_floats(m);
    float *before = ap_malloc(nf * sizeof *before);
    memcpy(before, ap_model_params(m), nf * sizeof *before);
    double pre = ap_model_step(m, &opt, lr);
    AP_CHECK(fabs(pre - gnorm) < 1e-9 * gnorm, "%s: step returns the pre-clip norm", name);
    AP_CHECK(ap_model_step_count(m) == 1, "%s: step count", name);
    const float *W = ap_model_params(m);
    double max_adam_err = 0, max_update_err = 0;
    for (int i = 0; i < ap_model_num_tensors(m); i++) {
        const ap_param_t *p = ap_model_tensor(m, i);
        char *aname = ap_sprintf("adamw.%s", p->name);
        float *ref = ap_malloc(p->numel * sizeof *ref), *du = ap_malloc(p->numel * sizeof *du),
              *dr = ap_malloc(p->numel * sizeof *dr);
        int ok = ap_st_read_f32_shaped(cs, aname, ref, p->ndim, p->shape) == 0;
        AP_CHECK(ok, "%s: %s", name, ap_errmsg());
        if (ok) {
            double e = s_rel(W + p->offset, ref, p->numel);
            if (e > max_adam_err) max_adam_err = e;
            AP_CHECK(e < 1e-3, "%s: %s relative error %.3g", name, aname, e);
            for (size_t k = 0; k < p->numel; k++) { /* the update itself, for information */
                du[k] = W[p->offset + k] - before[p->offset + k];
                dr[k] = ref[k] - before[p->offset + k];
            }
            double eu = s_rel(du, dr, p->numel);
            if (eu > max_update_err) max_update_err = eu;
        }
        free(ref), free(du), free(dr), free(aname);
    }
    printf("%-12s B=%d T=%d V=%d  logits max|err| %.2e  loss %.7f (ref %.7f)  grads max rel %.2e"
           "  grad_norm rel %.2e  adamw params rel %.2e (update rel %.2e)\n",
           name, B, T, V, max_logit_err, loss, loss_ref, max_grad_err, gnorm_err, max_adam_err,
           max_update_err);
    fflush(stdout);
    free(before), free(dlogits);
free_case:
    free(tok), free(tgt), free(want);
out:
    ap_st_close(&cs);
    ap_model_destroy(&m);
    free(dir), free(cpath);
}

static int s_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    const char *root = ap_testdata_dir();
    DIR *d = opendir(root);
    AP_CHECK(d != NULL, "cannot open test data directory %s", root);
    if (!d) return ap_test_result();
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        if (!strncmp(e->d_name, "model-", 6)) names[n++] = ap_strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, s_cmp);
    for (int i = 0; i < n; i++) {
        s_case(root, names[i]);
        free(names[i]);
    }
    AP_CHECK(n > 0, "no model-* case found under %s", root);
    return ap_test_result();
}
