/* divergence.c: the per-position kernels of the objectives (ALGORITHMS.md): the generalized
 * JSD D_beta over the supports full / topk / topk_tail with temperature and the pointwise clip,
 * the teacher entropy SRPO weights with, the policy-gradient token loss PG(A), sampled-token
 * log-probs, and the teacher-student monitors.
 *
 * How D_beta and its gradient are computed at one position. The support is a list of bins b
 * with student log-prob lq[b] and teacher log-prob lp[b] (full: the V tokens; topk: the K ids,
 * both sides renormalized over them; topk_tail: the K ids and one tail bin). Each bin's term
 * e[b] (ALGORITHMS.md) has a closed-form derivative with respect to lq[b]:
 *   beta = 0:  e = P (lp - lq),                          de/dlq = -P
 *   beta = 1:  e = Q (lq - lp),                          de/dlq = Q (lq - lp + 1)
 *   else:      e = beta P (lp - lm) + (1-beta) Q (lq - lm),  de/dlq = (1-beta) Q (lq - lm)
 *              (lm = log(beta P + (1-beta) Q): the terms in dlm/dlq cancel)
 * and a bin clipped by min(e, c) has derivative 0. With gq[b] = de/dlq[b] and G = sum_b gq[b],
 * the chain rule through the log-softmax of z = s / tau gives, per token v,
 *   full, topk:   dD/dz_v = gq[v] - Q_v G                 (topk: v in S only, Q renormalized)
 *   topk_tail:    dD/dz_v = gq[v] - p_v G       for v in S,
 *                 dD/dz_v = p_v (gq_tail / Q_tail - G)  for v not in S,
 * and dD/ds = dD/dz / tau. So a position costs one max pass, one exp pass (kept), one pass of
 * bin terms and one gradient pass over V; topk touches only its K ids.
 *
 * Precision: float element math, double sums (per position and across positions). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/objectives.h"
#include "learner/divergence.h"

#define S_TAIL_FLOOR 1e-10 /* teacher tail mass floor (ALGORITHMS.md) */

/* Scratch carved from one block: ex[V] and five bin arrays [V + 1], then a mark byte per token
 * (kept all-zero between calls). */
typedef struct {
    float *ex, *lq, *lp, *q, *p, *gq;
    uint8_t *mark;
} s_scratch_t;

size_t ap_obj_scratch_size(int V) {
    return (size_t)(6 * (V + 1) + 16) * sizeof(float) + (size_t)V + 64;
}

static s_scratch_t s_carve(void *scratch, int V) {
    s_scratch_t sc;
    float *f = scratch;
    size_t n = (size_t)V + 1;
    sc.ex = f, sc.lq = f + n, sc.lp = f + 2 * n, sc.q = f + 3 * n, sc.p = f + 4 * n,
    sc.gq = f + 5 * n;
    sc.mark = (uint8_t *)(f + 6 * n);
    return sc;
}

void ap_obj_softmax_row(float *ex, double *sum, double *lse_shift, float *smax, const float *s,
                        int V, double tau) {
    float m = s[0];
#pragma omp simd reduction(max : m)
    for (int v = 1; v < V; v++) m = s[v] > m ? s[v] : m;
    const float it = (float)(1.0 / tau);
    double acc = 0;
    for (int v = 0; v < V; v++) {
        ex[v] = expf((s[v] - m) * it);
        acc += ex[v];
    }
    *sum = acc;
    *lse_shift = log(acc);
    *smax = m;
}

/* Divergence mode from beta: the endpoints are their own branches. */
enum { S_FWD = 0, S_REV = 1, S_MIX = 2 };
static int s_mode(double beta) { return beta == 0.0 ? S_FWD : beta == 1.0 ? S_REV : S_MIX; }

/* One bin: term e (clipped at c) and de/dlq in *g. A summand whose leading probability is 0
 * is 0. */
static inline float s_elem(int mode, float beta, float clip, float lp, float lq, float P, float Q,
                           float *g) {
    float e = 0, d = 0;
    if (mode == S_FWD) {
        if (P > 0) e = P * (lp - lq), d = -P;
    } else if (mode == S_REV) {
        if (Q > 0) {
            float r = lq - lp;
            e = Q * r, d = Q * (r + 1.0f);
        }
    } else {
        float M = beta * P + (1.0f - beta) * Q;
        if (M > 0) {
            float lm = logf(M);
            if (P > 0) e += beta * P * (lp - lm);
            if (Q > 0) {
                float t = (1.0f - beta) * Q * (lq - lm);
                e += t, d = t;
            }
        }
    }
    if (e > clip) e = clip, d = 0; /* pointwise clip: min(e, c), no gradient when clipped */
    *g = d;
    return e;
}

static double s_div_full(float *grad, float scale, const float *s, int V, const float *tlp,
                         int mode, float beta, double tau, float clip, s_scratch_t *sc) {
    double sum, shift;
    float smax;
    ap_obj_softmax_row(sc->ex, &sum, &shift, &smax, s, V, tau);
    const float it = (float)(1.0 / tau), inv_sum = (float)(1.0 / sum), fshift = (float)shift;
    double D = 0, G = 0;
    for (int v = 0; v < V; v++) {
        float lq = (s[v] - smax) * it - fshift, Q = sc->ex[v] * inv_sum, lp = tlp[v];
        float P = mode == S_REV ? 0.0f : expf(lp), g;
        D += s_elem(mode, beta, clip, lp, lq, P, Q, &g);
        sc->gq[v] = g;
        G += g;
    }
    if (grad) {
        const float c = scale * it, cg = (float)G * inv_sum;
        for (int v = 0; v < V; v++) grad[v] += c * (sc->gq[v] - sc->ex[v] * cg);
    }
    return D;
}

static double s_div_topk(float *grad, float scale, const float *s, const int32_t *ids,
                         const float *tlp, int K, int mode, float beta, double tau, float clip,
                         s_scratch_t *sc) {
    const float it = (float)(1.0 / tau);
    float zmax = s[ids[0]], tmax = tlp[0];
    for (int j = 1; j < K; j++) {
        zmax = s[ids[j]] > zmax ? s[ids[j]] : zmax;
        tmax = tlp[j] > tmax ? tlp[j] : tmax;
    }
    double ssum = 0, tsum = 0;
    for (int j = 0; j < K; j++) {
        sc->ex[j] = expf((s[ids[j]] - zmax) * it);
        ssum += sc->ex[j];
        tsum += exp((double)tlp[j] - tmax);
    }
    const float sshift = (float)log(ssum), tl = (float)(tmax + log(tsum));
    const float inv_sum = (float)(1.0 / ssum);
    double D = 0, G = 0;
    for (int j = 0; j < K; j++) {
        float lq = (s[ids[j]] - zmax) * it - sshift, Q = sc->ex[j] * inv_sum;
        float lp = tlp[j] - tl, P = expf(lp), g;
        D += s_elem(mode, beta, clip, lp, lq, P, Q, &g);
        sc->gq[j] = g;
        G += g;
    }
    if (grad) {
        const float c = scale * it;
        for (int j = 0; j < K; j++)
            grad[ids[j]] += c * (sc->gq[j] - sc->ex[j] * inv_sum * (float)G);
    }
    return D;
}

static double s_div_tail(float *grad, float scale, const float *s, int V, const int32_t *ids,
                         const float *tlp, int K, int mode, float beta, double tau, float clip,
                         s_scratch_t *sc) {
    const int tail = K < V; /* K >= V: the ids are the whole vocabulary, no tail bin */
    double sum, shift;
    float smax;
    ap_obj_softmax_row(sc->ex, &sum, &shift, &smax, s, V, tau);
    const float it = (float)(1.0 / tau), inv_sum = (float)(1.0 / sum), fshift = (float)shift;
    double D = 0, G = 0, psum = 0;
    for (int j = 0; j < K; j++) {
        int v = ids[j];
        float lq = (s[v] - smax) * it - fshift, Q = sc->ex[v] * inv_sum, lp = tlp[j];
        float P = expf(lp), g;
        psum += exp((double)lp);
        D += s_elem(mode, beta, clip, lp, lq, P, Q, &g);
        sc->gq[j] = g;
        G += g;
    }
    float gt = 0, Qt = 0;
    if (tail) {
        for (int j = 0; j < K; j++) sc->mark[ids[j]] = 1;
        double rest = 0; /* student mass outside the support, summed directly (no 1 - x) */
        for (int v = 0; v < V; v++) rest += sc->mark[v] ? 0.0f : sc->ex[v];
        for (int j = 0; j < K; j++) sc->mark[ids[j]] = 0;
        Qt = (float)(rest / sum);
        float lqt = rest > 0 ? (float)(log(rest) - shift) : -INFINITY;
        double Pt = 1.0 - psum;
        if (Pt < S_TAIL_FLOOR) Pt = S_TAIL_FLOOR;
        D += s_elem(mode, beta, clip, (float)log(Pt), lqt, (float)Pt, Qt, &gt);
        G += gt;
    }
    if (grad) {
        const float c = scale * it, fG = (float)G;
        float knot = 0; /* coefficient of p_v for tokens outside the support */
        if (tail) {
            knot = (Qt > 0 ? gt / Qt : 0.0f) - fG;
            const float ck = c * knot * inv_sum;
            for (int v = 0; v < V; v++) grad[v] += ck * sc->ex[v];
        }
        for (int j = 0; j < K; j++) {
            float p = sc->ex[ids[j]] * inv_sum;
            grad[ids[j]] += c * (sc->gq[j] - p * fG - p * knot);
        }
    }
    return D;
}

double ap_obj_divergence(float *grad, float scale, const float *s, int V, ap_support_t support,
                         const float *full_lp, const int32_t *ids, const float *lp, int K,
                         double beta, double tau, double clip, void *scratch) {
    AP_ASSERT(V > 0 && tau > 0 && beta >= 0 && beta <= 1);
    s_scratch_t sc = s_carve(scratch, V);
    const int mode = s_mode(beta);
    const float c = clip >= FLT_MAX ? INFINITY : (float)clip;
    switch (support) {
    case AP_SUPPORT_FULL:
        AP_ASSERT(full_lp);
        return s_div_full(grad, scale, s, V, full_lp, mode, (float)beta, tau, c, &sc);
    case AP_SUPPORT_TOPK:
        AP_ASSERT(ids && lp && K > 0);
        return s_div_topk(grad, scale, s, ids, lp, K, mode, (float)beta, tau, c, &sc);
    case AP_SUPPORT_TOPK_TAIL:
        AP_ASSERT(ids && lp && K > 0);
        return s_div_tail(grad, scale, s, V, ids, lp, K, mode, (float)beta, tau, c, &sc);
    default:
        AP_ASSERTF(0, "ap_obj_divergence: unresolved support %d", (int)support);
    }
    return 0;
}

double ap_obj_teacher_entropy(ap_support_t support, const float *full_lp, int V, const float *lp,
                              int K) {
    double H = 0;
    if (support == AP_SUPPORT_FULL) {
        for (int v = 0; v < V; v++) {
            double P = exp((double)full_lp[v]);
            if (P > 0) H -= P * full_lp[v];
        }
        return H;
    }
    if (support == AP_SUPPORT_TOPK) {
        double m = lp[0], z = 0;
        for (int j = 1; j < K; j++) m = lp[j] > m ? lp[j] : m;
        for (int j = 0; j < K; j++) z += exp(lp[j] - m);
        double lse = m + log(z);
        for (int j = 0; j < K; j++) {
            double l = lp[j] - lse, P = exp(l);
            if (P > 0) H -= P * l;
        }
        return H;
    }
    AP_ASSERT(support == AP_SUPPORT_TOPK_TAIL);
    double psum = 0;
    for (int j = 0; j < K; j++) {
        double P = exp((double)lp[j]);
        psum += P;
        if (P > 0) H -= P * lp[j];
    }
    if (K < V) {
        double Pt = 1.0 - psum;
        if (Pt < S_TAIL_FLOOR) Pt = S_TAIL_FLOOR;
        H -= Pt * log(Pt);
    }
    return H;
}

double ap_obj_pg(const ap_pg_config_t *pg, double logp, double b, double A, double *dlogp,
                 int *clipped) {
    double rho = exp(logp - b), l, d; /* d = dl/drho */
    int c = 0;
    if (!pg->clip) {
        l = -rho * A, d = -A;
    } else {
        double rc = rho < 1 - pg->eps_low ? 1 - pg->eps_low : rho;
        rc = rc > 1 + pg->eps_high ? 1 + pg->eps_high : rc;
        double u = rho * A, w = rc * A;
        if (u <= w) {
            l = -u, d = -A; /* unclipped branch is the min (ties: rho inside the range) */
        } else {
            l = -w, d = 0, c = 1; /* clipped branch, rho outside the range: no gradient */
        }
        if (pg->dual_clip > 0 && A < 0 && -pg->dual_clip * A < l) l = -pg->dual_clip * A, d = 0, c = 2;
    }
    *dlogp = d * rho;
    if (clipped) *clipped = c;
    return l;
}

void ap_obj_sampled_logprobs(float *logp, const float *logits, const int32_t *tokens, int n,
                             int T, int V, double tau) {
    const float it = (float)(1.0 / tau);
    for (int r = 0; r < n * T; r++) {
        const float *s = logits + (size_t)r * V;
        int y = tokens[r];
        if (y < 0 || y >= V) {
            logp[r] = NAN;
            continue;
        }
        float m = s[0];
        for (int v = 1; v < V; v++) m = s[v] > m ? s[v] : m;
        double acc = 0;
        for (int v = 0; v < V; v++) acc += expf((s[v] - m) * it);
        logp[r] = (float)((double)((s[y] - m) * it) - log(acc));
    }
}

/* Indices of the k largest of x[0..n) into idx[0..k) (k <= n, k <= 64), by insertion. */
static void s_topk(int *idx, const float *x, int n, int k) {
    float val[64];
    int have = 0;
    for (int i = 0; i < n; i++) {
        float xv = x[i];
        if (have == k && !(xv > val[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && val[j - 1] < xv) {
            val[j] = val[j - 1], idx[j] = idx[j - 1];
            j--;
        }
        val[j] = xv, idx[j] = i;
    }
}

void ap_obj_monitor_position(double *kl_ts, double *kl_st, double *overlap, const float *s,
                             int V, const float *full_lp, const int32_t *ids, const float *lp,
                             int K, double tau, const float *ex, double sum, double shift,
                             float smax, void *scratch) {
    s_scratch_t sc = s_carve(scratch, V);
    if (!ex) {
        ap_obj_softmax_row(sc.ex, &sum, &shift, &smax, s, V, tau);
        ex = sc.ex;
    }
    const float it = (float)(1.0 / tau), inv_sum = (float)(1.0 / sum), fshift = (float)shift;
    double a = 0, b = 0;
    int k;
    int si[64], ti[64];
    if (full_lp) {
        for (int v = 0; v < V; v++) {
            float lq = (s[v] - smax) * it - fshift, Q = ex[v] * inv_sum, P = expf(full_lp[v]);
            float d = full_lp[v] - lq;
            a += P * d, b -= Q * d; /* both summands vanish with their leading probability */
        }
        k = V < AP_OBJ_OVERLAP_K ? V : AP_OBJ_OVERLAP_K;
        s_topk(ti, full_lp, V, k);
    } else {
        double psum = 0, qsum = 0;
        for (int j = 0; j < K; j++) {
            double lq = (s[ids[j]] - smax) * it - shift, Q = ex[ids[j]] * (double)inv_sum,
                   P = exp(lp[j]);
            psum += P, qsum += Q;
            if (P > 0) a += P * (lp[j] - lq);
            if (Q > 0) b += Q * (lq - lp[j]);
        }
        if (K < V) { /* tail bin */
            double Pt = 1.0 - psum, Qt = 1.0 - qsum;
            if (Pt < S_TAIL_FLOOR) Pt = S_TAIL_FLOOR;
            if (Qt > 0) {
                a += Pt * (log(Pt) - log(Qt));
                b += Qt * (log(Qt) - log(Pt));
            }
        }
        int sup = K < V ? K : V;
        k = sup < AP_OBJ_OVERLAP_K ? sup : AP_OBJ_OVERLAP_K;
        s_topk(ti, lp, K, k);
        for (int j = 0; j < k; j++) ti[j] = ids[ti[j]];
    }
    s_topk(si, s, V, k);
    int inter = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) inter += si[i] == ti[j];
    *kl_ts = a, *kl_st = b, *overlap = (double)inter / k;
}
