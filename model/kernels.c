/* kernels.c: RMSNorm, RoPE, SwiGLU, log-softmax and exp, forward and backward (kernels.h).
 * Every inner loop is a '#pragma omp simd' loop over a contiguous row so that gcc vectorises it
 * at -O3 -march=native without -ffast-math; reductions are float partial sums (the row lengths
 * here, D and V, are at most a few thousand). */
#include "apprentice/kernels.h"

#include <math.h>

#include "apprentice/base.h"

void ap_vexp(float *y, const float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] = ap_expf(x[i]);
}

void ap_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < d; i++) ss += xr[i] * xr[i];
        float s = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[r] = s;
#pragma omp simd
        for (int i = 0; i < d; i++) yr[i] = xr[i] * s * w[i];
    }
}

void ap_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         const float *w, int n, int d) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d, *dyr = dy + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        float s = rstd[r], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < d; i++) dot += dyr[i] * w[i] * xr[i];
        float c = s * s * s * dot / (float)d;
#pragma omp simd
        for (int i = 0; i < d; i++) {
            dxr[i] += s * w[i] * dyr[i] - c * xr[i];
            dw[i] += dyr[i] * xr[i] * s;
        }
    }
}

void ap_rope(float *x, int nheads, int hd, const float *cos, const float *sin, int sign) {
    int half = hd / 2;
    float sg = sign < 0 ? -1.0f : 1.0f;
    for (int h = 0; h < nheads; h++) {
        float *x1 = x + (size_t)h * hd, *x2 = x1 + half;
#pragma omp simd
        for (int j = 0; j < half; j++) {
            float a = x1[j], b = x2[j], c = cos[j], s = sg * sin[j];
            x1[j] = a * c - b * s;
            x2[j] = b * c + a * s;
        }
    }
}

void ap_swiglu(float *y, const float *gu, int n, int f) {
    for (int r = 0; r < n; r++) {
        const float *g = gu + (size_t)r * 2 * f, *u = g + f;
        float *yr = y + (size_t)r * f;
#pragma omp simd
        for (int i = 0; i < f; i++) yr[i] = g[i] / (1.0f + ap_expf(-g[i])) * u[i];
    }
}

void ap_swiglu_backward(float *dgu, const float *dy, const float *gu, int n, int f) {
    for (int r = 0; r < n; r++) {
        const float *g = gu + (size_t)r * 2 * f, *u = g + f, *dyr = dy + (size_t)r * f;
        float *dg = dgu + (size_t)r * 2 * f, *du = dg + f;
#pragma omp simd
        for (int i = 0; i < f; i++) {
            float sg = 1.0f / (1.0f + ap_expf(-g[i])); /* sigmoid */
            float silu = g[i] * sg;
            du[i] = dyr[i] * silu;
            dg[i] = dyr[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        }
    }
}

float ap_logsumexp(const float *x, int n, float temperature) {
    AP_ASSERT(n > 0 && temperature > 0);
    float inv = 1.0f / temperature, mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (!isfinite(mx)) return mx; /* all -inf, or +inf/NaN somewhere: propagate */
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += ap_expf((x[i] - mx) * inv);
    return mx * inv + logf(s);
}

void ap_log_softmax(float *y, const float *x, int n, float temperature) {
    float inv = 1.0f / temperature, lse = ap_logsumexp(x, n, temperature);
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] = x[i] * inv - lse;
}
