/* norm.c: RMSNorm, y = x / sqrt(mean(x^2) + eps) * weight, forward and backward.
 *
 * The maths is numpy_kernels.rmsnorm_forward / rmsnorm_backward; rows (N of
 * them, C channels each) are independent, so OpenMP splits the rows. The one
 * reduction across rows, dweight, is split by columns instead so that every
 * thread owns its dweight entries: race-free, no per-thread copies, and the
 * same sum order for any thread count. Not LayerNorm (NumPy only, a model
 * variant). Read embedding.c next.
 */
#include <math.h>

#include "parallel.h"
#include "tinyllm.h"

/* Columns of dweight per work item: 64 floats, one cache line of four per row. */
#define COL_BLOCK 64

void rmsnorm_forward(const float *x, const float *weight, float *y, float *rstd, int64_t N,
                     int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (N * C >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict xn = x + n * C;                      // (C,)
        float *restrict yn = y + n * C;                            // (C,)
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < C; c++) ss += xn[c] * xn[c];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[n] = r;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yn[c] = xn[c] * r * weight[c];
    }
}

void rmsnorm_backward(const float *dy, const float *x, const float *weight, const float *rstd,
                      float *dx, float *dweight, int64_t N, int64_t C) {
    int64_t n_blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel
    {
        // forward: y = xhat * weight with xhat = x * rstd, and rstd depends on the whole row
#pragma omp for schedule(static) nowait
        for (int64_t n = 0; n < N; n++) {
            const float *restrict dyn = dy + n * C, *restrict xn = x + n * C;   // (C,)
            float *restrict dxn = dx + n * C;                                    // (C,)
            float r = rstd[n], dot = 0.0f;                         // dot = sum(dxhat * xhat)
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; c++) dot += dyn[c] * weight[c] * (xn[c] * r);
            float mean = dot / (float)C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++)
                dxn[c] = r * (dyn[c] * weight[c] - (xn[c] * r) * mean);
        }
        // forward: y = xhat * weight  ->  dweight = sum over rows of dy * xhat, in double
        // because N (= B*T) runs to many thousands of terms
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; blk++) {
            int64_t c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            double acc[COL_BLOCK] = {0.0};
            for (int64_t n = 0; n < N; n++) {
                const float *dyn = dy + n * C + c0, *xn = x + n * C + c0;
                float r = rstd[n];
                for (int64_t c = 0; c < nc; c++) acc[c] += (double)(dyn[c] * (xn[c] * r));
            }
            for (int64_t c = 0; c < nc; c++) dweight[c0 + c] = (float)acc[c];
        }
    }
}
