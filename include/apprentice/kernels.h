/* kernels.h: the model's element-wise and row-wise kernels (everything that is not a matrix
 * product; those are in blas.h). Free functions, output first, shapes in the signature
 * (STYLE.md 7); backward kernels ACCUMULATE into gradients (+=) unless stated. Loops are written
 * for the vectoriser ('#pragma omp simd', no -ffast-math needed); exponentials use ap_vexp, a
 * vectorisable exp accurate to ~2 ulp, so softmax, SiLU and the losses vectorise.
 *
 * Usage:
 *   ap_rmsnorm(y, rstd, x, w, n, d, 1e-5f);       // y[n,d], rstd[n] kept for backward
 *   ap_rmsnorm_backward(dx, dw, dy, x, rstd, w, n, d);
 *   float lse = ap_logsumexp(row, V, 1.0f);        // log sum exp(row / 1)
 */
#ifndef APPRENTICE_KERNELS_H
#define APPRENTICE_KERNELS_H

#include <stdint.h>
#include <string.h>

/* exp(x) for use inside '#pragma omp simd' loops (Cephes expf: range reduction by ln 2, degree-6
 * polynomial, 2^n by exponent bits); gcc vectorises it without -ffast-math, unlike expf.
 * Relative error < 3e-7 for x in [-87.3, 88.3]; 0 below (no denormals), inf above, NaN kept. */
static inline float ap_expf(float x) {
    float xc = x > -87.3f ? x : -87.3f; /* NaN clamps too (then restored below) */
    xc = xc < 88.3f ? xc : 88.3f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t e = (uint32_t)((int32_t)n + 127) << 23; /* n in [-126, 127] */
    float scale;
    memcpy(&scale, &e, sizeof scale);
    float y = p * scale;
    y = x < -87.3f ? 0.0f : y;
    y = x > 88.3f ? __builtin_inff() : y;
    return x != x ? x : y;
}

/* y[i] = exp(x[i]) for i < n (y may equal x); relative error < 3e-7, exp(-inf) = 0,
 * overflow gives inf, NaN stays NaN. */
void ap_vexp(float *y, const float *x, int n);

/* RMSNorm per row: y = x / sqrt(mean(x^2) + eps) * w; rstd[r] = 1 / sqrt(mean + eps). */
void ap_rmsnorm(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps);
/* dx[n,d] += dL/dx, dw[d] += dL/dw, given dy and the forward's x and rstd. */
void ap_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         const float *w, int n, int d);

/* HF rotate_half RoPE, in place, on `nheads` consecutive head vectors of length hd at x, for
 * one position whose cos/sin rows [hd/2] are given. sign -1 applies the inverse rotation (the
 * backward of the forward rotation). */
void ap_rope(float *x, int nheads, int hd, const float *cos, const float *sin, int sign);

/* SwiGLU: y[r, i] = silu(gu[r, i]) * gu[r, f + i], gu [n, 2f] = [gate | up] per row. */
void ap_swiglu(float *y, const float *gu, int n, int f);
/* dgu[n, 2f] = dL/d[gate | up] (overwritten), given dy [n, f]. */
void ap_swiglu_backward(float *dgu, const float *dy, const float *gu, int n, int f);

/* log sum_i exp(x[i] / temperature), max-shifted. */
float ap_logsumexp(const float *x, int n, float temperature);
/* y = log_softmax(x / temperature) (y may equal x). */
void ap_log_softmax(float *y, const float *x, int n, float temperature);

#endif
