/* softmax.c: row-wise softmax over the last axis, forward and backward.
 *
 * The maths is numpy_kernels.softmax_forward / softmax_backward. Rows are
 * independent, so OpenMP splits the N rows. Not used by the GPT's attention,
 * which fuses its own online softmax (attention.c); cross-entropy fuses its
 * log-softmax too (cross_entropy.c). Read attention.c next.
 */
#include <math.h>

#include "fastmath.h"
#include "parallel.h"
#include "tinyllm.h"

void softmax_forward(const float *x, float *y, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict xn = x + n * C;                      // (C,)
        float *restrict yn = y + n * C;                            // (C,)
        float max = -INFINITY;                             // subtracted: exp never overflows
#pragma omp simd reduction(max : max)
        for (int64_t c = 0; c < C; c++) max = xn[c] > max ? xn[c] : max;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; c++) {
            yn[c] = exp_nonpositive(xn[c] - max);
            sum += yn[c];
        }
        float inv = 1.0f / sum;                            // sum >= 1: the max term is exp(0)
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yn[c] *= inv;
    }
}

/* dx = y * (dy - sum(dy * y)): y = e / sum(e) differentiated through e and the sum. */
void softmax_backward(const float *dy, const float *y, float *dx, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static) if (N * C >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict dyn = dy + n * C, *restrict yn = y + n * C;   // (C,)
        float *restrict dxn = dx + n * C;                                    // (C,)
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += dyn[c] * yn[c];
#pragma omp simd
        for (int64_t c = 0; c < C; c++) dxn[c] = yn[c] * (dyn[c] - dot);
    }
}
