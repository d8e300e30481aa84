/* test_model_kernels: the model's kernels against naive double-precision twins: the packed
 * few-row product (every row count 1..16, outputs not a multiple of 16, accumulate on/off) and
 * the BLAS wrapper's sgemv/sgemm routing (every transpose combination), ap_vexp / ap_expf
 * (accuracy and special values), RMSNorm, SwiGLU and RoPE forward/backward, log-softmax. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/kernels.h"
#include "apprentice/rng.h"
#include "test.h"

static ap_rng_t s_rng;

static float *s_rand(size_t n, double scale) {
    float *x = ap_malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * ap_rng_normal(&s_rng));
    return x;
}

static void s_packed(void) {
    const int shapes[][2] = {{37, 53}, {128, 384}, {96, 16}, {5, 3}};
    double worst = 0;
    for (size_t s = 0; s < AP_COUNT(shapes); s++) {
        int in = shapes[s][0], out = shapes[s][1];
        float *w = s_rand((size_t)in * out, 1.0), *x = s_rand((size_t)16 * in, 1.0);
        float *pk = ap_alloc_aligned(ap_pack_floats(in, out) * sizeof(float));
        float *work = ap_malloc((size_t)AP_PACK_MAX_ROWS * in * sizeof *work);
        float *y = ap_malloc((size_t)16 * out * sizeof *y), *y0 = s_rand((size_t)16 * out, 1.0);
        ap_pack(pk, w, in, out);
        for (int n = 1; n <= AP_PACK_MAX_ROWS; n++)
            for (int acc = 0; acc < 2; acc++) {
                memcpy(y, y0, (size_t)16 * out * sizeof *y);
                ap_matmul_packed(y, acc, x, pk, n, in, out, work);
                for (int r = 0; r < 16; r++)
                    for (int o = 0; o < out; o++) {
                        double want = acc || r >= n ? y0[(size_t)r * out + o] : 0.0;
                        if (r < n)
                            for (int i = 0; i < in; i++)
                                want += (double)x[(size_t)r * in + i] * w[(size_t)o * in + i];
                        double got = y[(size_t)r * out + o];
                        worst = fmax(worst, fabs(got - want) / (1 + fabs(want)));
                        AP_CHECK_NEAR(got, want, 1e-4, 1e-5, "packed in %d out %d n %d acc %d [%d,%d]%s",
                                      in, out, n, acc, r, o, r >= n ? " (row past n must be untouched)" : "");
                    }
            }
        free(w), free(x), free(pk), free(work), free(y), free(y0);
    }
    printf("ap_matmul_packed: n = 1..16, 4 shapes, accumulate on/off: max rel err %.2e\n", worst);
}

static void s_gemm_routes(void) {
    /* M == 1 and N == 1 go through sgemv: check every transpose combination against naive */
    const int dims[][3] = {{1, 7, 5}, {6, 1, 5}, {4, 3, 9}, {1, 1, 4}};
    double worst = 0;
    for (size_t d = 0; d < AP_COUNT(dims); d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = dims[d][0], N = dims[d][1], K = dims[d][2];
                int lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3; /* padded strides */
                float *a = s_rand((size_t)(ta ? K : M) * lda, 1), *b = s_rand((size_t)(tb ? N : K) * ldb, 1);
                float *c = s_rand((size_t)M * ldc, 1), *c0 = ap_malloc((size_t)M * ldc * sizeof *c0);
                memcpy(c0, c, (size_t)M * ldc * sizeof *c);
                ap_gemm(c, ldc, a, lda, ta, b, ldb, tb, M, N, K, 0.5f, 2.0f);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double s = 0;
                        for (int k = 0; k < K; k++)
                            s += (double)(ta ? a[(size_t)k * lda + i] : a[(size_t)i * lda + k]) *
                                 (tb ? b[(size_t)j * ldb + k] : b[(size_t)k * ldb + j]);
                        double want = 0.5 * s + 2.0 * c0[(size_t)i * ldc + j];
                        worst = fmax(worst, fabs(c[(size_t)i * ldc + j] - want));
                        AP_CHECK_NEAR(c[(size_t)i * ldc + j], want, 1e-5, 1e-5, "gemm %dx%dx%d ta %d tb %d",
                                      M, N, K, ta, tb);
                    }
                for (int i = 0; i < M; i++) /* padding columns untouched */
                    for (int j = N; j < ldc; j++)
                        AP_CHECK(c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j], "ldc padding written");
                free(a), free(b), free(c), free(c0);
            }
    printf("ap_gemm sgemv/sgemm routes, all transposes, strided: max|err| %.2e\n", worst);
}

static void s_exp(void) {
    double worst = 0;
    enum { N = 20001 };
    float *x = ap_malloc(N * sizeof *x), *y = ap_malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = -87.0f + 175.0f * (float)i / (N - 1);
    ap_vexp(y, x, N);
    for (int i = 0; i < N; i++) {
        if (x[i] > 88.3f) continue;
        double e = exp((double)x[i]);
        worst = fmax(worst, fabs(y[i] - e) / e);
    }
    AP_CHECK(worst < 3e-7, "ap_vexp relative error %.3g", worst);
    AP_CHECK(ap_expf(0.0f) == 1.0f && ap_expf(-INFINITY) == 0.0f && isinf(ap_expf(100.0f)) &&
                 isnan(ap_expf(NAN)) && ap_expf(-100.0f) == 0.0f,
             "ap_expf special values");
    printf("ap_vexp on [-87, 88.3]: max rel err %.2e; exp(0)=1, exp(-inf)=0, exp(100)=inf, NaN kept\n", worst);
    free(x), free(y);
}

static void s_rows(void) {
    enum { n = 5, d = 24, f = 10 };
    float *x = s_rand(n * d, 1.5), *w = s_rand(d, 1.0), *y = ap_malloc(n * d * sizeof *y), rstd[n];
    ap_rmsnorm(y, rstd, x, w, n, d, 1e-5f);
    double worst = 0;
    for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
        double s = 1 / sqrt(ss / d + 1e-5);
        for (int i = 0; i < d; i++) worst = fmax(worst, fabs(y[r * d + i] - x[r * d + i] * s * w[i]));
    }
    AP_CHECK(worst < 1e-5, "rmsnorm %.3g", worst);
    /* rmsnorm backward vs central differences of L = sum(dy * y) in double */
    float *dy = s_rand(n * d, 1.0), *dx = ap_calloc(n * d, sizeof *dx), *dw = ap_calloc(d, sizeof *dw);
    ap_rmsnorm_backward(dx, dw, dy, x, rstd, w, n, d);
    double wb = 0;
    for (int k = 0; k < n * d; k += 7) {
        double h = 1e-3, lp = 0, lm = 0;
        for (int sgn = -1; sgn <= 1; sgn += 2) {
            int r = k / d;
            double ss = 0, L = 0;
            for (int i = 0; i < d; i++) {
                double xi = x[r * d + i] + (r * d + i == k ? sgn * h : 0);
                ss += xi * xi;
            }
            double s = 1 / sqrt(ss / d + 1e-5);
            for (int i = 0; i < d; i++) L += dy[r * d + i] * (x[r * d + i] + (r * d + i == k ? sgn * h : 0)) * s * w[i];
            if (sgn < 0) lm = L;
            else lp = L;
        }
        wb = fmax(wb, fabs((lp - lm) / (2 * h) - dx[k]));
    }
    AP_CHECK(wb < 1e-3, "rmsnorm backward vs fd %.3g", wb);
    /* swiglu and its backward */
    float *gu = s_rand(n * 2 * f, 2.0), *act = ap_malloc(n * f * sizeof *act), *da = s_rand(n * f, 1.0);
    float *dgu = ap_malloc(n * 2 * f * sizeof *dgu);
    ap_swiglu(act, gu, n, f);
    ap_swiglu_backward(dgu, da, gu, n, f);
    double ws = 0, wsb = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < f; i++) {
            double g = gu[r * 2 * f + i], u = gu[r * 2 * f + f + i], sg = 1 / (1 + exp(-g));
            ws = fmax(ws, fabs(act[r * f + i] - g * sg * u));
            wsb = fmax(wsb, fabs(dgu[r * 2 * f + i] - da[r * f + i] * u * sg * (1 + g * (1 - sg))));
            wsb = fmax(wsb, fabs(dgu[r * 2 * f + f + i] - da[r * f + i] * g * sg));
        }
    AP_CHECK(ws < 1e-5 && wsb < 1e-5, "swiglu %.3g backward %.3g", ws, wsb);
    /* rope: rotating forward then backward is the identity; matches the formula */
    float cs[4], sn[4], v[16], v0[16];
    for (int j = 0; j < 4; j++) cs[j] = (float)cos(0.3 * (j + 1)), sn[j] = (float)sin(0.3 * (j + 1));
    for (int i = 0; i < 16; i++) v[i] = v0[i] = (float)ap_rng_normal(&s_rng);
    ap_rope(v, 2, 8, cs, sn, 1);
    double wr = 0;
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++) {
            double a = v0[h * 8 + j], b = v0[h * 8 + 4 + j];
            wr = fmax(wr, fabs(v[h * 8 + j] - (a * cs[j] - b * sn[j])));
            wr = fmax(wr, fabs(v[h * 8 + 4 + j] - (b * cs[j] + a * sn[j])));
        }
    ap_rope(v, 2, 8, cs, sn, -1);
    for (int i = 0; i < 16; i++) wr = fmax(wr, fabs(v[i] - v0[i]));
    AP_CHECK(wr < 1e-6, "rope %.3g", wr);
    /* log-softmax at a temperature */
    float z[7] = {1, -2, 3.5f, 0, -INFINITY, 2, 2}, ls[7];
    ap_log_softmax(ls, z, 7, 0.5f);
    double se = 0;
    for (int i = 0; i < 7; i++) se += exp(z[i] / 0.5);
    double wl = 0;
    for (int i = 0; i < 7; i++)
        if (isfinite(z[i])) wl = fmax(wl, fabs(ls[i] - (z[i] / 0.5 - log(se))));
    AP_CHECK(wl < 1e-5 && ls[4] == -INFINITY, "log_softmax %.3g", wl);
    printf("rmsnorm %.1e (backward vs fd %.1e), swiglu %.1e / %.1e, rope %.1e, log_softmax %.1e\n",
           worst, wb, ws, wsb, wr, wl);
    free(x), free(w), free(y), free(dy), free(dx), free(dw), free(gu), free(act), free(da), free(dgu);
}

int main(void) {
    ap_rng_seed(&s_rng, 1, 2);
    s_packed();
    s_gemm_routes();
    s_exp();
    s_rows();
    fflush(stdout);
    return ap_test_result();
}
