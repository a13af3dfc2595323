/* elementwise.cu: out = a + b (the residual add), x *= s, x = value, and sum(x^2).
 *
 * add_forward is numpy_kernels.add_forward (its backward is the identity); scale and fill
 * serve the optimizer and the gradient buffers; sum_of_squares is the gradient norm of
 * clipping, in float64 and deterministic: each warp of a fixed grid sums a strided share of x
 * into its own partial, and one warp then adds the partials in a fixed order, so the result
 * depends on n alone, never on timing or the GPU.
 */

#include "common.cuh"

/* sum_of_squares' first pass: at most this many blocks, THREADS / WARP partials each. */
#define SUM_BLOCKS 1024

/* out may be a (in-place accumulation): no __restrict__ on them. */
static __global__ void add_kernel(const float *a, const float *__restrict__ b, float *out,
                                  int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

static __global__ void scale_kernel(float *x, float s, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

static __global__ void fill_kernel(float *x, float value, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = value;
}

/* partial (gridDim.x * blockDim.x / WARP,): each warp's sum of x[i]^2 over its threads' i. */
static __global__ void sum_of_squares_partials(const float *__restrict__ x,
                                               double *__restrict__ partial, int64_t n) {
    double acc = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        acc += (double)x[i] * (double)x[i];
    acc = warp_sum_double(acc);
    if (threadIdx.x % WARP == 0) partial[(blockIdx.x * blockDim.x + threadIdx.x) / WARP] = acc;
}

/* out (1,) = the sum of partial (n_partial,), by one warp: lane l adds l, l + WARP, ... */
static __global__ void sum_square_partials(const double *__restrict__ partial,
                                           double *__restrict__ out, int64_t n_partial) {
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n_partial; i += WARP) acc += partial[i];
    acc = warp_sum_double(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

int add_forward(const float *a, const float *b, float *out, int64_t n) {
    if (n == 0) return 0;
    LAUNCH(add_kernel, blocks_for(n), THREADS, a, b, out, n);
    return launch_status("add_forward");
}

int scale(float *x, float s, int64_t n) {
    if (n == 0) return 0;
    LAUNCH(scale_kernel, blocks_for(n), THREADS, x, s, n);
    return launch_status("scale");
}

int fill(float *x, float value, int64_t n) {
    if (n == 0) return 0;
    LAUNCH(fill_kernel, blocks_for(n), THREADS, x, value, n);
    return launch_status("fill");
}

int sum_of_squares(const float *x, double *out, int64_t n) {
    unsigned blocks = blocks_for(n, SUM_BLOCKS);   // 0 for n = 0: then out = the empty sum
    int64_t n_partial = (int64_t)blocks * (THREADS / WARP);
    double *partial = NULL;                        // (n_partial,)
    CHECK(device_alloc((void **)&partial, n_partial * (int64_t)sizeof(double)));
    if (blocks > 0) LAUNCH(sum_of_squares_partials, blocks, THREADS, x, partial, n);
    LAUNCH(sum_square_partials, 1, WARP, partial, out, n_partial);
    CHECK(device_free(partial));
    return launch_status("sum_of_squares");
}
