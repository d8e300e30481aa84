/* blas.h: the one wrapper every OpenBLAS call goes through (STYLE.md 7), plus the nn.Linear
 * shaped products the model is made of. Row-major everywhere; output first.
 *
 * Usage:
 *   ap_blas_set_threads(1);                        // at the start of main(): 1 BLAS thread
 *   ap_matmul(y, x, w, n, in, out);                // y[n,out] = x[n,in] w[out,in]^T
 *   ap_gemm(c, ldc, a, lda, 0, b, ldb, 1, M, N, K, 1.0f, 1.0f);   // C += A B^T
 */
#ifndef APPRENTICE_BLAS_H
#define APPRENTICE_BLAS_H

#include <stddef.h>

/* OpenBLAS threads for the whole process (n >= 1). Every process calls this once at start-up
 * (launcher/main.c does, with 1) so that an OpenMP pool and OpenBLAS threads never fight over
 * the cores (research/perf-anchors.md, "Threading pitfall"). */
void ap_blas_set_threads(int n);
int ap_blas_threads(void);

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op(X) = X^T when trans_x is 1.
 * op(A) is [M,K], op(B) is [K,N]. M == 1 or N == 1 goes through sgemv. */
void ap_gemm(float *c, int ldc, const float *a, int lda, int trans_a, const float *b, int ldb,
             int trans_b, int M, int N, int K, float alpha, float beta);

/* nn.Linear forward: y[n,out] = x[n,in] w[out,in]^T. */
void ap_matmul(float *y, const float *x, const float *w, int n, int in, int out);
/* nn.Linear backward: dx[n,in] = dy[n,out] w (dx NULL: skipped; accumulate: dx += ...),
 * dw[out,in] += dy^T x. */
void ap_matmul_backward(float *dx, int accumulate_dx, float *dw, const float *dy, const float *x,
                        const float *w, int n, int in, int out);

/* Few-row products against pre-packed weights (batched decoding). sgemm re-packs the whole
 * weight matrix on every call, which dominates when only a few rows use it (bench sample:
 * 40% of a batch-16 decode step); packing once per weight version and streaming the panels
 * through a 16-lane register-blocked kernel is 1.5-2.7x faster at 8-16 rows, and 1.1-2x
 * faster than sgemv at one row.
 * Layout: panels of AP_PACK_LANES outputs (the last zero-padded), each [in][AP_PACK_LANES].
 *   float *pw = ap_alloc_aligned(ap_pack_floats(in, out) * sizeof(float));
 *   ap_pack(pw, w, in, out);                              // whenever w changes
 *   ap_matmul_packed(y, 0, x, pw, n, in, out, work);      // n <= AP_PACK_MAX_ROWS */
#define AP_PACK_LANES 16
#define AP_PACK_MAX_ROWS 16
size_t ap_pack_floats(int in, int out);
void ap_pack(float *packed, const float *w, int in, int out);
/* y[n,out] (= or, with accumulate, +=) x[n,in] w^T for 1 <= n <= AP_PACK_MAX_ROWS;
 * work holds AP_PACK_MAX_ROWS * in floats (x transposed). Same sums as ap_matmul up to
 * float rounding (summation order). */
void ap_matmul_packed(float *y, int accumulate, const float *x, const float *packed, int n, int in,
                      int out, float *work);

#endif
