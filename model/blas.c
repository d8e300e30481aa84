/* blas.c: the single place that calls OpenBLAS (STYLE.md 7). Thin on purpose: it picks sgemv
 * for single-row or single-column products (batch-1 decoding, where sgemm's packing costs more
 * than the product) and sgemm for everything else, and owns the process's BLAS thread count.
 * Also the one product OpenBLAS does badly for us: few rows against pre-packed weights
 * (ap_matmul_packed), written with gcc vector extensions (portable; AVX-512 here). */
#include "apprentice/blas.h"

#include <cblas.h>
#include <string.h>

#include "apprentice/base.h"

void ap_blas_set_threads(int n) {
    AP_ASSERT(n >= 1);
    openblas_set_num_threads(n);
}

int ap_blas_threads(void) { return openblas_get_num_threads(); }

void ap_gemm(float *c, int ldc, const float *a, int lda, int trans_a, const float *b, int ldb,
             int trans_b, int M, int N, int K, float alpha, float beta) {
    AP_ASSERT(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0) return;
    if (M == 1) {
        /* c[0, :] (stride 1) = alpha op(B)^T a + beta c, a read with stride 1 or lda */
        int inca = trans_a ? lda : 1;
        if (trans_b) /* B stored [N, K] */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, b, ldb, a, inca, beta, c, 1);
        else /* B stored [K, N] */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, b, ldb, a, inca, beta, c, 1);
        return;
    }
    if (N == 1) {
        /* c[:, 0] (stride ldc) = alpha op(A) b + beta c, b read with stride 1 or ldb */
        int incb = trans_b ? 1 : ldb;
        if (trans_a) /* A stored [K, M] */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, M, alpha, a, lda, b, incb, beta, c, ldc);
        else /* A stored [M, K] */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, M, K, alpha, a, lda, b, incb, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

void ap_matmul(float *y, const float *x, const float *w, int n, int in, int out) {
    ap_gemm(y, out, x, in, 0, w, in, 1, n, out, in, 1.0f, 0.0f);
}

void ap_matmul_backward(float *dx, int accumulate_dx, float *dw, const float *dy, const float *x,
                        const float *w, int n, int in, int out) {
    if (dx) ap_gemm(dx, in, dy, out, 0, w, in, 0, n, in, out, 1.0f, accumulate_dx ? 1.0f : 0.0f);
    if (dw) ap_gemm(dw, in, dy, out, 1, x, in, 0, out, in, n, 1.0f, 1.0f);
}

/* ---- few rows x packed weights ------------------------------------------------------------- */

typedef float s_v16 __attribute__((vector_size(AP_PACK_LANES * sizeof(float))));

size_t ap_pack_floats(int in, int out) {
    return (size_t)((out + AP_PACK_LANES - 1) / AP_PACK_LANES) * AP_PACK_LANES * in;
}

void ap_pack(float *packed, const float *w, int in, int out) {
    int np = (out + AP_PACK_LANES - 1) / AP_PACK_LANES;
    for (int p = 0; p < np; p++)
        for (int i = 0; i < in; i++) {
            float *dst = packed + ((size_t)p * in + i) * AP_PACK_LANES;
            for (int l = 0; l < AP_PACK_LANES; l++) {
                int o = p * AP_PACK_LANES + l;
                dst[l] = o < out ? w[(size_t)o * in + i] : 0.0f;
            }
        }
}

/* Software prefetch distance in panel rows (64 bytes each): 2 KB ahead. The weights of a decode
 * step are rarely cache-resident; measured +10-55% at 16 rows on cold weights. (The one-row
 * kernel's four streams are prefetched well by the hardware; adding it there was slower.) */
enum { S_PREFETCH = 32 };

/* NR rows (a compile-time constant once inlined): NR vector accumulators per panel, one panel
 * load and NR broadcast FMAs per input element. xt is x transposed, [in][NR], zero-padded. */
static inline __attribute__((always_inline)) void
s_packed_rows(float *y, int accumulate, const float *xt, const float *packed, int n, int in, int out,
              const int NR) {
    int np = (out + AP_PACK_LANES - 1) / AP_PACK_LANES;
    for (int p = 0; p < np; p++) {
        const float *pp = packed + (size_t)p * in * AP_PACK_LANES;
        s_v16 acc[AP_PACK_MAX_ROWS];
        for (int r = 0; r < NR; r++) acc[r] = (s_v16){0};
        for (int i = 0; i < in; i++) {
            s_v16 w;
            __builtin_prefetch(pp + (size_t)(i + S_PREFETCH) * AP_PACK_LANES);
            memcpy(&w, pp + (size_t)i * AP_PACK_LANES, sizeof w);
            const float *xi = xt + (size_t)i * NR;
#pragma GCC unroll 16
            for (int r = 0; r < NR; r++) acc[r] += xi[r] * w;
        }
        int o0 = p * AP_PACK_LANES, nl = AP_MIN(AP_PACK_LANES, out - o0);
        for (int r = 0; r < n; r++) {
            float tmp[AP_PACK_LANES], *yr = y + (size_t)r * out + o0;
            memcpy(tmp, &acc[r], sizeof tmp);
            if (accumulate)
                for (int l = 0; l < nl; l++) yr[l] += tmp[l];
            else
                memcpy(yr, tmp, (size_t)nl * sizeof *tmp);
        }
    }
}

/* One row (batch-1 decoding): four panels in flight, i.e. four independent accumulator chains and
 * four sequential weight streams, which the prefetchers keep fed (2x sgemv on weights that
 * are not cache-resident, 1.1-1.3x on resident ones). */
static void s_packed_one(float *y, int accumulate, const float *x, const float *packed, int in,
                         int out) {
    int np = (out + AP_PACK_LANES - 1) / AP_PACK_LANES;
    size_t ps = (size_t)in * AP_PACK_LANES; /* floats per panel */
    for (int p0 = 0; p0 < np; p0 += 4) {
        int k = AP_MIN(4, np - p0);
        s_v16 acc[4] = {{0}, {0}, {0}, {0}}, w;
        const float *pp = packed + (size_t)p0 * ps;
        if (k == 4) {
            for (int i = 0; i < in; i++) {
                float xi = x[i];
                for (int q = 0; q < 4; q++) {
                    memcpy(&w, pp + q * ps + (size_t)i * AP_PACK_LANES, sizeof w);
                    acc[q] += xi * w;
                }
            }
        } else {
            for (int q = 0; q < k; q++)
                for (int i = 0; i < in; i++) {
                    memcpy(&w, pp + q * ps + (size_t)i * AP_PACK_LANES, sizeof w);
                    acc[q] += x[i] * w;
                }
        }
        for (int q = 0; q < k; q++) {
            int o0 = (p0 + q) * AP_PACK_LANES, nl = AP_MIN(AP_PACK_LANES, out - o0);
            float tmp[AP_PACK_LANES];
            memcpy(tmp, &acc[q], sizeof tmp);
            if (accumulate)
                for (int l = 0; l < nl; l++) y[o0 + l] += tmp[l];
            else
                memcpy(y + o0, tmp, (size_t)nl * sizeof *tmp);
        }
    }
}

void ap_matmul_packed(float *y, int accumulate, const float *x, const float *packed, int n, int in,
                      int out, float *work) {
    AP_ASSERT(n >= 1 && n <= AP_PACK_MAX_ROWS);
    if (n == 1) {
        s_packed_one(y, accumulate, x, packed, in, out);
        return;
    }
    const int NR = n <= 4 ? 4 : n <= 8 ? 8 : 16; /* padded: one pass over the weights */
    for (int i = 0; i < in; i++)
        for (int r = 0; r < NR; r++) work[(size_t)i * NR + r] = r < n ? x[(size_t)r * in + i] : 0.0f;
    if (NR == 4) s_packed_rows(y, accumulate, work, packed, n, in, out, 4);
    else if (NR == 8) s_packed_rows(y, accumulate, work, packed, n, in, out, 8);
    else s_packed_rows(y, accumulate, work, packed, n, in, out, 16);
}
