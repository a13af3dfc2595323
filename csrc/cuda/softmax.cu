/* softmax.cu: row-wise softmax over the last axis, forward and backward.
 *
 * The maths is numpy_kernels.softmax_forward / softmax_backward (and csrc/softmax.c). One
 * block per row: its threads stride over the C channels (consecutive threads on consecutive
 * channels, so every pass is coalesced) and meet in block-wide reductions. Not used by
 * attention or cross-entropy, which fuse their own softmax.
 */
#include "common.cuh"

/* Threads per row: enough warps to cover C, at most this many (then each thread strides). */
#define MAX_THREADS 512

/* Three passes over the row (max, sum of exp, write), recomputing exp rather than storing it
 * and reading it back: the row is in L1/L2 by then. */
static __global__ void softmax_forward_rows(const float *__restrict__ x, float *__restrict__ y,
                                            int64_t C) {
    __shared__ float scratch[WARP];
    const float *xn = x + blockIdx.x * C;          // (C,)
    float *yn = y + blockIdx.x * C;                // (C,)
    float max = -INFINITY;                         // subtracted: exp never overflows
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) max = fmaxf(max, xn[c]);
    max = block_max(max, scratch);
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) sum += expf(xn[c] - max);
    float inv = 1.0f / block_sum(sum, scratch);    // sum >= 1: the max term is exp(0)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yn[c] = expf(xn[c] - max) * inv;
}

/* dx = y * (dy - sum(dy * y)): y = e / sum(e) differentiated through e and the sum. */
static __global__ void softmax_backward_rows(const float *__restrict__ dy,
                                             const float *__restrict__ y, float *__restrict__ dx,
                                             int64_t C) {
    __shared__ float scratch[WARP];
    const float *dyn = dy + blockIdx.x * C, *yn = y + blockIdx.x * C;   // (C,)
    float *dxn = dx + blockIdx.x * C;                                    // (C,)
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += dyn[c] * yn[c];
    dot = block_sum(dot, scratch);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dxn[c] = yn[c] * (dyn[c] - dot);
}

int softmax_forward(const float *x, float *y, int64_t N, int64_t C) {
    if (N == 0 || C == 0) return 0;
    LAUNCH(softmax_forward_rows, (unsigned)N, row_threads(C, MAX_THREADS), x, y, C);
    return launch_status("softmax_forward");
}

int softmax_backward(const float *dy, const float *y, float *dx, int64_t N, int64_t C) {
    if (N == 0 || C == 0) return 0;
    LAUNCH(softmax_backward_rows, (unsigned)N, row_threads(C, MAX_THREADS), dy, y, dx, C);
    return launch_status("softmax_backward");
}
