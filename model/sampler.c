/* sampler.c: one token from a row of logits: greedy, or temperature sampling with optional
 * top-k and top-p truncation (sampler.h). The reported log-prob is always that of the full
 * tempered distribution, before truncation (ALGORITHMS.md, Notation). Without truncation the
 * draw is a single scan of the unnormalised CDF; with it, the candidates are sorted by
 * probability (ties: lower id first) and the kept prefix is renormalised. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/kernels.h"
#include "apprentice/sampler.h"

void ap_sampling_defaults(ap_sampling_t *s) {
    s->temperature = 1.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
}

int ap_sampling_validate(const ap_sampling_t *s) {
    if (!(s->temperature >= 0) || !isfinite(s->temperature))
        return ap_err("sampling: temperature %g must be a finite number >= 0 (0 = greedy)",
                      (double)s->temperature);
    if (s->top_k < 0) return ap_err("sampling: top_k %d must be >= 0 (0 = off)", s->top_k);
    if (!(s->top_p > 0 && s->top_p <= 1))
        return ap_err("sampling: top_p %g must be in (0, 1] (1 = off)", (double)s->top_p);
    return 0;
}

size_t ap_sample_work_floats(int V) { return (size_t)3 * V; }

typedef struct {
    float p;   /* unnormalised probability */
    int32_t i; /* token id */
} s_cand_t;

static int s_cand_cmp(const void *a, const void *b) {
    const s_cand_t *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int32_t ap_sample_token(const float *logits, int V, const ap_sampling_t *s, ap_rng_t *rng,
                        float *logprob, float *work) {
    AP_ASSERT(V > 0);
    float mx = -INFINITY;
    int32_t arg = 0;
    for (int i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i], arg = i;
    if (!isfinite(mx)) {
        ap_err("sampling: logits are not finite (max %g)", (double)mx);
        return -1;
    }
    int greedy = !(s->temperature > 0);
    float inv = greedy ? 1.0f : 1.0f / s->temperature;
    float *own = work ? NULL : ap_malloc(ap_sample_work_floats(V) * sizeof *own), *p = work ? work : own;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) {
        p[i] = ap_expf((logits[i] - mx) * inv);
        sum += p[i];
    }
    int32_t tok = -1;
    if (!isfinite(sum)) {
        ap_err("sampling: logits are not finite (NaN present)");
        goto out;
    }
    if (greedy) {
        tok = arg;
    } else if (s->top_k <= 0 && s->top_p >= 1.0f) {
        double u = ap_rng_uniform(rng) * sum, c = 0.0;
        tok = arg; /* fallback for rounding at the very end of the CDF */
        for (int i = 0; i < V; i++) {
            c += p[i];
            if (u < c) {
                tok = i;
                break;
            }
        }
    } else {
        s_cand_t *cand = (s_cand_t *)(p + V);
        for (int i = 0; i < V; i++) cand[i].p = p[i], cand[i].i = i;
        qsort(cand, (size_t)V, sizeof *cand, s_cand_cmp);
        int keep = s->top_k > 0 && s->top_k < V ? s->top_k : V;
        double mass = 0.0;
        for (int i = 0; i < keep; i++) mass += cand[i].p;
        if (s->top_p < 1.0f) { /* smallest prefix whose share of the kept mass reaches top_p */
            double c = 0.0, target = s->top_p * mass;
            int n = 0;
            while (n < keep) {
                c += cand[n++].p;
                if (c >= target) break;
            }
            keep = n, mass = c;
        }
        double u = ap_rng_uniform(rng) * mass, c = 0.0;
        tok = cand[keep - 1].i;
        for (int i = 0; i < keep; i++) {
            c += cand[i].p;
            if (u < c) {
                tok = cand[i].i;
                break;
            }
        }
    }
    if (logprob) *logprob = (logits[tok] - mx) * inv - logf(sum);
out:
    free(own);
    return tok;
}
