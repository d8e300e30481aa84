/* optim.c: AdamW exactly as torch.optim.AdamW (single-tensor implementation), global-norm
 * gradient clipping as torch.nn.utils.clip_grad_norm_, the warm-up + cosine learning-rate
 * schedule, and the training-state file that sits beside a model directory (model.h). Every
 * operation is one loop over the tensor table. */
#include <inttypes.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/safetensors.h"
#include "model/model_impl.h"

void ap_adamw_defaults(ap_adamw_t *o) {
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.01f;
    o->clip_grad_norm = 1.0f;
}

double ap_model_grad_norm(ap_model_t *m) {
    const float *g = ap_model_grads(m);
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (size_t i = 0; i < m->nfloats; i++) ss += (double)g[i] * g[i];
    return sqrt(ss);
}

long ap_model_step_count(const ap_model_t *m) { return m->step; }

static void s_moments(ap_model_t *m) {
    if (!m->m1) m->m1 = ap_alloc_aligned(m->nfloats * sizeof(float));
    if (!m->m2) m->m2 = ap_alloc_aligned(m->nfloats * sizeof(float));
}

/* One tensor's AdamW update (torch's single-tensor order of operations). Without -ffast-math
 * gcc keeps an errno branch around sqrtf and will not vectorise the loop (no function attribute
 * removes it), so the AVX path spells it out: the same operations in the same order, IEEE
 * sqrt and division, hence bit-identical to the scalar loop that also does the tail. It makes
 * the step ~2x faster, 3-5% of a training step at configs B and C (bench train). */
static void s_adamw(float *w, float *m1, float *m2, const float *g, size_t n, float decay, float b1,
                    float b2, float eps, float step_size, float bc2_sqrt) {
    size_t i = 0;
#if defined(__AVX__)
    const __m256 vdecay = _mm256_set1_ps(decay), vb1 = _mm256_set1_ps(b1),
                 vc1 = _mm256_set1_ps(1.0f - b1), vb2 = _mm256_set1_ps(b2),
                 vc2 = _mm256_set1_ps(1.0f - b2), veps = _mm256_set1_ps(eps),
                 vstep = _mm256_set1_ps(step_size), vbc2 = _mm256_set1_ps(bc2_sqrt);
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 wi = _mm256_mul_ps(_mm256_loadu_ps(w + i), vdecay);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m1 + i)), _mm256_mul_ps(vc1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(m2 + i)),
                                  _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc2), veps);
        wi = _mm256_sub_ps(wi, _mm256_div_ps(_mm256_mul_ps(vstep, mi), den));
        _mm256_storeu_ps(w + i, wi);
        _mm256_storeu_ps(m1 + i, mi);
        _mm256_storeu_ps(m2 + i, vi);
    }
#endif
    for (; i < n; i++) {
        w[i] *= decay;
        m1[i] = b1 * m1[i] + (1.0f - b1) * g[i];
        m2[i] = b2 * m2[i] + (1.0f - b2) * g[i] * g[i];
        w[i] -= step_size * m1[i] / (sqrtf(m2[i]) / bc2_sqrt + eps);
    }
}

double ap_model_step(ap_model_t *m, const ap_adamw_t *o, float lr) {
    double norm = ap_model_grad_norm(m);
    if (!isfinite(norm)) return norm; /* nothing changes; the caller counts the skipped step */
    float *G = m->grads;
    if (o->clip_grad_norm > 0) {
        float coef = (float)(o->clip_grad_norm / (norm + 1e-6));
        if (coef < 1.0f) {
#pragma omp simd
            for (size_t i = 0; i < m->nfloats; i++) G[i] *= coef;
        }
    }
    s_moments(m);
    m->step++;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const double bc1 = 1.0 - pow(b1, (double)m->step), bc2 = 1.0 - pow(b2, (double)m->step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * o->weight_decay;
    for (int t = 0; t < m->ntensors; t++) {
        const ap_param_t *p = &m->table[t];
        s_adamw(m->params + p->offset, m->m1 + p->offset, m->m2 + p->offset, G + p->offset, p->numel,
                p->decay ? decay : 1.0f, b1, b2, eps, step_size, bc2_sqrt);
    }
    m->version++;
    m->fwd_valid = 0; /* kept activations belong to the old weights */
    return norm;
}

float ap_lr_at(const ap_lr_schedule_t *s, long step) {
    if (step < 0) step = 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return s->peak_lr * (float)(step + 1) / (float)s->warmup_steps;
    long span = s->total_steps - s->warmup_steps;
    if (span <= 0 || step >= s->total_steps) return span <= 0 ? s->peak_lr : s->min_lr;
    double progress = (double)(step - s->warmup_steps) / (double)span;
    return (float)(s->min_lr + 0.5 * (s->peak_lr - s->min_lr) * (1.0 + cos(M_PI * progress)));
}

/* ---- training state ------------------------------------------------------------------------ */

#define S_STATE_FORMAT "apprentice-training-state-1"

int ap_model_save_state(const ap_model_t *mc, const char *dir, const ap_rng_t *rng,
                        const char *user_json) {
    ap_model_t *m = (ap_model_t *)mc; /* moments may need allocating (zeros) */
    s_moments(m);
    if (ap_mkdirs(dir) < 0) return -1;
    char *path = ap_sprintf("%s/%s", dir, AP_MODEL_STATE_FILE);
    ap_stw_t *w = ap_stw_new();
    char **names = ap_calloc((size_t)2 * m->ntensors, sizeof *names);
    for (int i = 0; i < m->ntensors; i++) {
        const ap_param_t *p = &m->table[i];
        names[2 * i] = ap_sprintf("exp_avg.%s", p->name);
        names[2 * i + 1] = ap_sprintf("exp_avg_sq.%s", p->name);
        ap_stw_add_f32(w, names[2 * i], m->m1 + p->offset, p->ndim, p->shape);
        ap_stw_add_f32(w, names[2 * i + 1], m->m2 + p->offset, p->ndim, p->shape);
    }
    char buf[160];
    ap_stw_set_metadata(w, "format", S_STATE_FORMAT);
    snprintf(buf, sizeof buf, "%ld", m->step);
    ap_stw_set_metadata(w, "step", buf);
    if (rng) {
        snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
                 rng->s[0], rng->s[1], rng->s[2], rng->s[3]);
        ap_stw_set_metadata(w, "rng", buf);
    }
    if (user_json) ap_stw_set_metadata(w, "user", user_json);
    snprintf(buf, sizeof buf, "%016" PRIx64, ap_model_checksum(m));
    ap_stw_set_metadata(w, "params_fnv64", buf); /* informative: the weights it was saved with */
    int rc = ap_stw_write(w, path);
    if (rc < 0) ap_err("saving training state: %s", ap_errmsg());
    ap_stw_destroy(&w);
    for (int i = 0; i < 2 * m->ntensors; i++) free(names[i]);
    free(names);
    free(path);
    return rc;
}

static int s_parse_u64_hex(const char *s, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int ap_model_load_state(ap_model_t *m, const char *dir, ap_rng_t *rng, char **user_json) {
    char *path = ap_sprintf("%s/%s", dir, AP_MODEL_STATE_FILE);
    ap_st_t *st = ap_st_open(path);
    int rc = -1;
    if (user_json) *user_json = NULL;
    if (!st) goto out;
    const char *fmt = ap_st_metadata(st, "format"), *step = ap_st_metadata(st, "step");
    if (!fmt || strcmp(fmt, S_STATE_FORMAT)) {
        ap_err("%s: not a training state file (metadata format is '%s', expected '%s')", path,
               fmt ? fmt : "(absent)", S_STATE_FORMAT);
        goto out;
    }
    char *end = NULL;
    long steps = step ? strtol(step, &end, 10) : -1;
    if (!step || *end || steps < 0) {
        ap_err("%s: metadata 'step' is missing or not a non-negative integer", path);
        goto out;
    }
    ap_rng_t saved = {{0, 0, 0, 0}};
    const char *r = ap_st_metadata(st, "rng");
    if (rng && r) {
        if (strlen(r) != 64 || s_parse_u64_hex(r, &saved.s[0]) || s_parse_u64_hex(r + 16, &saved.s[1]) ||
            s_parse_u64_hex(r + 32, &saved.s[2]) || s_parse_u64_hex(r + 48, &saved.s[3]) ||
            !(saved.s[0] | saved.s[1] | saved.s[2] | saved.s[3])) {
            ap_err("%s: metadata 'rng' is not 64 hex digits of a valid state", path);
            goto out;
        }
    }
    /* read into fresh arenas so a failure leaves the model's moments untouched */
    float *m1 = ap_alloc_aligned(m->nfloats * sizeof(float)),
          *m2 = ap_alloc_aligned(m->nfloats * sizeof(float));
    for (int i = 0; i < m->ntensors; i++) {
        const ap_param_t *p = &m->table[i];
        char *n1 = ap_sprintf("exp_avg.%s", p->name), *n2 = ap_sprintf("exp_avg_sq.%s", p->name);
        int bad = ap_st_read_f32_shaped(st, n1, m1 + p->offset, p->ndim, p->shape) < 0 ||
                  ap_st_read_f32_shaped(st, n2, m2 + p->offset, p->ndim, p->shape) < 0;
        free(n1), free(n2);
        if (bad) {
            free(m1), free(m2);
            goto out;
        }
    }
    free(m->m1), free(m->m2);
    m->m1 = m1, m->m2 = m2;
    m->step = steps;
    if (rng && r) *rng = saved;
    const char *u = ap_st_metadata(st, "user");
    if (user_json && u) *user_json = ap_strdup(u);
    rc = 0;
out:
    ap_st_close(&st);
    free(path);
    return rc;
}
