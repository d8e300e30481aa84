/* test_model_grad: backward against finite differences on tiny random models (GQA + untied,
 * MHA + tied), for every parameter tensor, through backward-from-dlogits with a random dlogits
 * (L = sum R * logits) and through cross-entropy. Each tensor is checked along a random
 * direction u (central difference of L(p + e u) vs g . u) and at a few single elements.
 * Also: right-padded batches give each valid row the logits it has alone, padding rows of
 * dlogits are ignored, gradients accumulate, AdamW skips non-finite gradients, clipping, and
 * the learning-rate schedule. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/model.h"
#include "apprentice/rng.h"
#include "test.h"

/* The batch shape of the current check: B right-padded sequences of T. */
static int B, T;
static const int *s_lens;

typedef struct {
    ap_model_t *m;
    int32_t *tok, *tgt; /* [B * T] */
    float *R; /* [B*T, V] random dlogits, padding rows included (must be ignored) */
    int use_ce;
} s_ctx_t;

/* The scalar being differentiated, in double. */
static double s_loss(s_ctx_t *c) {
    int V = ap_model_config(c->m)->vocab_size;
    float *z = ap_model_forward(c->m, c->tok, s_lens, B, T);
    AP_ASSERT(z);
    double s = 0;
    if (c->use_ce) { /* the same mean cross-entropy, in double so the difference quotient is clean */
        int count = 0;
        for (int r = 0; r < B * T; r++) {
            if (c->tgt[r] == -100) continue;
            const float *zr = z + (size_t)r * V;
            double mx = zr[0], se = 0;
            for (int v = 1; v < V; v++) mx = fmax(mx, zr[v]);
            for (int v = 0; v < V; v++) se += exp(zr[v] - mx);
            s += mx + log(se) - zr[c->tgt[r]];
            count++;
        }
        return s / count;
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < s_lens[b]; t++)
            for (int v = 0; v < V; v++) {
                size_t i = ((size_t)b * T + t) * V + v;
                s += (double)c->R[i] * z[i];
            }
    return s;
}

/* Central difference of the loss along u with step h (w restored). */
static double s_dir_diff(s_ctx_t *c, float *w, const float *saved, const float *u, size_t n,
                         double h) {
    for (size_t k = 0; k < n; k++) w[k] = saved[k] + (float)h * u[k];
    double lp = s_loss(c);
    for (size_t k = 0; k < n; k++) w[k] = saved[k] - (float)h * u[k];
    double lm = s_loss(c);
    memcpy(w, saved, n * sizeof *w);
    return (lp - lm) / (2 * h);
}

/* Analytic gradients into the model's gradient arena. */
static void s_backward(s_ctx_t *c) {
    int V = ap_model_config(c->m)->vocab_size;
    ap_model_zero_grad(c->m);
    float *z = ap_model_forward(c->m, c->tok, s_lens, B, T);
    if (c->use_ce) {
        float l;
        ap_cross_entropy(z, &l, z, c->tgt, B * T, V); /* in place */
        ap_model_backward(c->m, z);
    } else {
        ap_model_backward(c->m, c->R);
    }
}

static void s_check_model(const char *label, const ap_model_config_t *cfg, int use_ce, int b,
                          int t, const int *lens) {
    B = b, T = t, s_lens = lens;
    s_ctx_t c = {.m = ap_model_new(cfg, 7), .use_ce = use_ce};
    c.tok = ap_malloc((size_t)B * T * sizeof *c.tok);
    c.tgt = ap_malloc((size_t)B * T * sizeof *c.tgt);
    AP_ASSERT(c.m);
    int V = cfg->vocab_size;
    ap_rng_t rng;
    ap_rng_seed(&rng, 11, use_ce);
    /* larger-than-init weights so that every path carries signal */
    float *W = ap_model_params(c.m);
    for (int i = 0; i < ap_model_num_tensors(c.m); i++) {
        const ap_param_t *p = ap_model_tensor(c.m, i);
        for (size_t k = 0; k < p->numel; k++)
            W[p->offset + k] = p->ndim == 2 ? (float)(0.3 * ap_rng_normal(&rng))
                                            : (float)(1.0 + 0.2 * ap_rng_normal(&rng));
    }
    for (int i = 0; i < B * T; i++) {
        c.tok[i] = (int32_t)ap_rng_below(&rng, (uint64_t)V);
        c.tgt[i] = ap_rng_uniform(&rng) < 0.2 ? -100 : (int32_t)ap_rng_below(&rng, (uint64_t)V);
    }
    for (int b = 0; b < B; b++) /* padding: out-of-range ids (never read) and ignored targets */
        for (int t = s_lens[b]; t < T; t++) c.tok[b * T + t] = -5, c.tgt[b * T + t] = -100;
    c.R = ap_malloc((size_t)B * T * V * sizeof *c.R);
    for (int i = 0; i < B * T * V; i++) c.R[i] = (float)ap_rng_normal(&rng);

    s_backward(&c);
    size_t nf = ap_model_num_floats(c.m);
    float *G = ap_malloc(nf * sizeof *G);
    memcpy(G, ap_model_grads(c.m), nf * sizeof *G);

    double worst_dir = 0, worst_elem = 0;
    /* step along a unit-norm direction (per element ~eps / sqrt(numel)): large enough that
     * float noise in the forward stays below the tolerance, small enough for Richardson's
     * O(eps^4) truncation; the sum-of-logits loss is smoother than cross-entropy */
    const double eps = use_ce ? 4e-2 : 1e-1;
    for (int i = 0; i < ap_model_num_tensors(c.m); i++) {
        const ap_param_t *p = ap_model_tensor(c.m, i);
        float *w = W + p->offset;
        float *saved = ap_malloc(p->numel * sizeof *saved), *u = ap_malloc(p->numel * sizeof *u);
        memcpy(saved, w, p->numel * sizeof *saved);
        /* direction check: unit-norm random u */
        double un = 0, gu = 0;
        for (size_t k = 0; k < p->numel; k++) u[k] = (float)ap_rng_normal(&rng), un += (double)u[k] * u[k];
        un = sqrt(un);
        for (size_t k = 0; k < p->numel; k++) u[k] = (float)(u[k] / un), gu += (double)G[p->offset + k] * u[k];
        double d1 = s_dir_diff(&c, w, saved, u, p->numel, eps);
        double d2 = s_dir_diff(&c, w, saved, u, p->numel, eps / 2);
        double fd = (4 * d2 - d1) / 3; /* Richardson: the h^2 error term cancels */
        double err = fabs(fd - gu) / fmax(fmax(fabs(fd), fabs(gu)), 1e-3);
        if (err > worst_dir) worst_dir = err;
        AP_CHECK(err < 1e-2, "%s %s: direction fd %.6g vs analytic %.6g (rel %.2e)", label, p->name,
                 fd, gu, err);
        /* three single elements, the largest-gradient one among them */
        size_t pick[3] = {0, p->numel / 2, 0};
        for (size_t k = 0; k < p->numel; k++)
            if (fabsf(G[p->offset + k]) > fabsf(G[p->offset + pick[2]])) pick[2] = k;
        for (int j = 0; j < 3; j++) {
            size_t k = pick[j];
            float e1[1] = {1.0f};
            double h = 5e-2 * fmax(fabs(saved[k]), 0.3);
            double f1 = s_dir_diff(&c, w + k, saved + k, e1, 1, h);
            double f2 = s_dir_diff(&c, w + k, saved + k, e1, 1, h / 2);
            fd = (4 * f2 - f1) / 3;
            double g = G[p->offset + k];
            err = fabs(fd - g) / fmax(fmax(fabs(fd), fabs(g)), 1e-2);
            if (err > worst_elem) worst_elem = err;
            AP_CHECK(err < 2e-2, "%s %s[%zu]: fd %.6g vs analytic %.6g (rel %.2e)", label, p->name,
                     k, fd, g, err);
        }
        free(saved), free(u);
    }
    printf("%-28s B=%d T=%-3d %d tensors  worst direction rel err %.2e  worst element rel err %.2e\n", label,
           B, T, ap_model_num_tensors(c.m), worst_dir, worst_elem);
    fflush(stdout);

    /* padding invariance: each sequence alone gives the same logits as inside the batch */
    float *zb = ap_malloc((size_t)B * T * V * sizeof *zb);
    memcpy(zb, ap_model_forward(c.m, c.tok, s_lens, B, T), (size_t)B * T * V * sizeof *zb);
    double worst_pad = 0;
    for (int b = 0; b < B; b++) {
        float *z1 = ap_model_forward(c.m, c.tok + b * T, NULL, 1, s_lens[b]);
        for (int i = 0; i < s_lens[b] * V; i++) {
            double e = fabs((double)z1[i] - zb[(size_t)b * T * V + i]);
            if (e > worst_pad) worst_pad = e;
        }
        for (int i = s_lens[b] * V; i < T * V; i++)
            AP_CHECK(zb[(size_t)b * T * V + i] == 0.0f, "%s: padding logits are 0", label);
    }
    AP_CHECK(worst_pad < 1e-5, "%s: batched vs alone logits differ by %.3g", label, worst_pad);
    printf("%-28s batched vs alone max|dlogit| %.2e\n", label, worst_pad);

    /* gradients accumulate: two backward passes = twice one */
    if (!use_ce) {
        ap_model_zero_grad(c.m);
        ap_model_forward(c.m, c.tok, s_lens, B, T);
        ap_model_backward(c.m, c.R);
        ap_model_forward(c.m, c.tok, s_lens, B, T);
        ap_model_backward(c.m, c.R);
        const float *G2 = ap_model_grads(c.m);
        double worst = 0;
        for (size_t k = 0; k < nf; k++) worst = fmax(worst, fabs(G2[k] - 2 * G[k]) / (1e-6 + fabs(G[k])));
        AP_CHECK(worst < 1e-4, "%s: accumulation off by %.3g", label, worst);
    }
    free(zb), free(G), free(c.R), free(c.tok), free(c.tgt);
    ap_model_destroy(&c.m);
    AP_CHECK(c.m == NULL, "destroy NULLs the pointer");
}

static void s_check_optimizer(const ap_model_config_t *cfg) {
    ap_model_t *m = ap_model_new(cfg, 3);
    size_t nf = ap_model_num_floats(m);
    float *G = ap_model_grads(m);
    for (size_t k = 0; k < nf; k++) G[k] = 1.0f;
    float *before = ap_malloc(nf * sizeof *before);
    memcpy(before, ap_model_params(m), nf * sizeof *before);
    ap_adamw_t o;
    ap_adamw_defaults(&o);
    G[5] = NAN;
    double n = ap_model_step(m, &o, 1e-2f);
    AP_CHECK(!isfinite(n), "non-finite norm reported");
    AP_CHECK(ap_model_step_count(m) == 0, "skipped step not counted");
    AP_CHECK(!memcmp(before, ap_model_params(m), nf * sizeof *before), "params untouched");
    G[5] = 1.0f;
    o.clip_grad_norm = 2.0f;
    n = ap_model_step(m, &o, 1e-2f);
    AP_CHECK_NEAR(n, sqrt((double)nf), 1e-6, 1e-6, "pre-clip norm");
    AP_CHECK_NEAR(ap_model_grad_norm(m), 2.0, 1e-5, 1e-5, "clipped to 2");
    /* first Adam step with equal gradients moves every non-decayed weight by -lr */
    const ap_param_t *norm = ap_model_find(m, "model.norm.weight");
    AP_CHECK_NEAR(ap_model_params(m)[norm->offset] - before[norm->offset], -1e-2, 1e-6, 0,
                  "norm weight update");
    free(before);
    ap_model_destroy(&m);

    ap_lr_schedule_t s = {.peak_lr = 1e-3f, .min_lr = 1e-4f, .warmup_steps = 10, .total_steps = 110};
    AP_CHECK_NEAR(ap_lr_at(&s, 0), 1e-4, 1e-9, 0, "warm-up start");
    AP_CHECK_NEAR(ap_lr_at(&s, 9), 1e-3, 1e-9, 0, "warm-up end");
    AP_CHECK_NEAR(ap_lr_at(&s, 10), 1e-3, 1e-9, 0, "cosine start");
    AP_CHECK_NEAR(ap_lr_at(&s, 60), 5.5e-4, 1e-9, 0, "cosine middle");
    AP_CHECK_NEAR(ap_lr_at(&s, 110), 1e-4, 1e-9, 0, "cosine end");
    AP_CHECK_NEAR(ap_lr_at(&s, 500), 1e-4, 1e-9, 0, "after the end");
}

int main(void) {
    ap_model_config_t gqa;
    ap_model_config_defaults(&gqa);
    gqa.vocab_size = 13, gqa.hidden_size = 16, gqa.intermediate_size = 24, gqa.num_layers = 2;
    gqa.num_heads = 4, gqa.num_kv_heads = 2, gqa.max_positions = 16;
    ap_model_config_t tied = gqa;
    tied.num_kv_heads = 4, tied.tie_embeddings = 1, tied.vocab_size = 11;
    static const int short_lens[3] = {7, 5, 2}, long_lens[2] = {150, 97};
    s_check_model("gqa untied, dlogits", &gqa, 0, 3, 7, short_lens);
    s_check_model("gqa untied, cross-entropy", &gqa, 1, 3, 7, short_lens);
    s_check_model("mha tied, dlogits", &tied, 0, 3, 7, short_lens);
    s_check_model("mha tied, cross-entropy", &tied, 1, 3, 7, short_lens);
    /* longer than the 64-row attention blocks: every block path of forward and backward */
    ap_model_config_t lng = gqa;
    lng.max_positions = 160;
    s_check_model("gqa untied long, dlogits", &lng, 0, 2, 150, long_lens);
    s_check_model("gqa untied long, cross-entropy", &lng, 1, 2, 150, long_lens);
    s_check_optimizer(&gqa);
    return ap_test_result();
}
