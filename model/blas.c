/* blas.c: the single place that calls OpenBLAS (STYLE.md 7). Thin on purpose: it picks sgemv
 * for single-row or single-column products (batch-1 decoding, where sgemm's packing costs more
 * than the product) and sgemm for everything else, and owns the process's BLAS thread count. */
#include "apprentice/blas.h"

#include <cblas.h>

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
