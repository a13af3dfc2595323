/* activation.cu: SiLU, y = x * sigmoid(x), forward and backward, elementwise over n values.
 *
 * The maths is numpy_kernels.silu_forward / silu_backward (and csrc/activation.c, whose
 * overflow-free sigmoid this is). Grid-stride loops: a grid of at most MAX_BLOCKS covers any n.
 */

#include "common.cuh"

/* sigmoid(x) from exp(-|x|) <= 1, so no exp overflows and no inf / inf appears. */
static __device__ __forceinline__ float sigmoid(float x) {
    float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static __global__ void silu_forward_kernel(const float *__restrict__ x, float *__restrict__ y,
                                           int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = x[i] * sigmoid(x[i]);
}

/* y = x s(x) with s' = s (1 - s): dx = dy * (s + x s (1 - s)) = dy * s * (1 + x (1 - s)). */
static __global__ void silu_backward_kernel(const float *__restrict__ dy,
                                            const float *__restrict__ x, float *__restrict__ dx,
                                            int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

int silu_forward(const float *x, float *y, int64_t n) {
    if (n == 0) return 0;
    LAUNCH(silu_forward_kernel, blocks_for(n), THREADS, x, y, n);
    return launch_status("silu_forward");
}

int silu_backward(const float *dy, const float *x, float *dx, int64_t n) {
    if (n == 0) return 0;
    LAUNCH(silu_backward_kernel, blocks_for(n), THREADS, dy, x, dx, n);
    return launch_status("silu_backward");
}
