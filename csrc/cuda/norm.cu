/* norm.cu: RMSNorm, y = x / sqrt(mean(x^2) + eps) * weight, and LayerNorm,
 * y = (x - mean) / sqrt(var + eps) * weight + bias, forward and backward.
 *
 * The maths is numpy_kernels.rmsnorm_* / layernorm_* (and csrc/norm.c). Rows (N of
 * them, C channels each) are independent: one block per row, its threads striding over the
 * channels. The one reduction across rows, dweight (C,), must not depend on timing, so it is
 * no float atomicAdd: each of a fixed number of blocks sums its own rows into a row of
 * partials (n_blocks, C), and a second kernel adds the partials of each channel in a fixed
 * order. The partials' count depends on N only, so a result is the same on every GPU.
 */
#include <algorithm>

#include "common.cuh"

/* Threads per row, at most: C is a model width (hundreds to thousands), a few channels per
 * thread; fewer threads for a narrow row. */
#define ROW_THREADS 256
/* Blocks of the backward, each walking N / PARTIAL_BLOCKS rows: enough to fill a GPU, few
 * enough that summing the (PARTIAL_BLOCKS, C) partials is cheap. */
#define PARTIAL_BLOCKS 512
/* The partials' sum: a block covers WARP channels with GROUPS warps, warp g adding partial
 * rows g, g + GROUPS, ... (coalesced across the channels), then one warp adds the GROUPS. */
#define GROUPS 16

static __global__ void rmsnorm_forward_rows(const float *__restrict__ x,
                                            const float *__restrict__ weight, float *__restrict__ y,
                                            float *__restrict__ rstd, int64_t C, float eps) {
    __shared__ float scratch[WARP];
    const float *xn = x + blockIdx.x * C;          // (C,)
    float *yn = y + blockIdx.x * C;                // (C,)
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xn[c] * xn[c];
    float r = 1.0f / sqrtf(block_sum(ss, scratch) / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yn[c] = xn[c] * r * weight[c];
}

/* dx of rows blockIdx.x, + gridDim.x, ..., and this block's row of partial (gridDim.x, C):
 * sum over its rows of dy * xhat. Each thread owns the same channels in every row, so it
 * accumulates its partials in global memory with no race (and they stay in L1/L2). */
static __global__ void rmsnorm_backward_rows(const float *__restrict__ dy,
                                             const float *__restrict__ x,
                                             const float *__restrict__ weight,
                                             const float *__restrict__ rstd, float *__restrict__ dx,
                                             float *__restrict__ partial, int64_t N, int64_t C) {
    __shared__ float scratch[WARP];
    float *part = partial + blockIdx.x * C;        // (C,)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part[c] = 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *dyn = dy + n * C, *xn = x + n * C;   // (C,)
        float *dxn = dx + n * C;                          // (C,)
        float r = rstd[n], dot = 0.0f;             // dot = sum(dxhat * xhat), dxhat = dy * w
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            dot += dyn[c] * weight[c] * (xn[c] * r);
        float mean = block_sum(dot, scratch) / (float)C;
        // xhat = x * rstd and rstd depends on the whole row, hence the mean term
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xhat = xn[c] * r;
            dxn[c] = r * (dyn[c] * weight[c] - xhat * mean);
            part[c] += dyn[c] * xhat;
        }
    }
}

/* out (C,) = the sum of the n_partial rows of partial (n_partial, C), in double, in an order
 * fixed by n_partial alone (dweight, and LayerNorm's dbias). */
static __global__ void sum_partials(const float *__restrict__ partial,
                                            float *__restrict__ dweight, int64_t n_partial,
                                            int64_t C) {
    __shared__ double sums[GROUPS][WARP];
    int lane = threadIdx.x % WARP, group = threadIdx.x / WARP;
    int64_t c = blockIdx.x * (int64_t)WARP + lane;
    double acc = 0.0;
    if (c < C)
        for (int64_t g = group; g < n_partial; g += GROUPS) acc += (double)partial[g * C + c];
    sums[group][lane] = acc;
    __syncthreads();
    if (group == 0 && c < C) {
        double total = 0.0;
        for (int g = 0; g < GROUPS; g++) total += sums[g][lane];
        dweight[c] = (float)total;
    }
}

/* LayerNorm: the same layout, the row's mean subtracted first and a bias added after. */
static __global__ void layernorm_forward_rows(const float *__restrict__ x,
                                              const float *__restrict__ weight,
                                              const float *__restrict__ bias,
                                              float *__restrict__ y, float *__restrict__ mean,
                                              float *__restrict__ rstd, int64_t C, float eps) {
    __shared__ float scratch[WARP];
    const float *xn = x + blockIdx.x * C;          // (C,)
    float *yn = y + blockIdx.x * C;                // (C,)
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xn[c];
    const float mu = block_sum(s, scratch) / (float)C;
    float ss = 0.0f;                    // centred first: no cancellation in E[x^2] - mu^2
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += (xn[c] - mu) * (xn[c] - mu);
    const float r = 1.0f / sqrtf(block_sum(ss, scratch) / (float)C + eps);
    if (threadIdx.x == 0) mean[blockIdx.x] = mu, rstd[blockIdx.x] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
        yn[c] = (xn[c] - mu) * r * weight[c] + bias[c];
}

/* dx of rows blockIdx.x, + gridDim.x, ..., and this block's rows of the partials of dweight
 * (rows 0 .. gridDim.x of partial) and dbias (the next gridDim.x rows), as for RMSNorm. */
static __global__ void layernorm_backward_rows(const float *__restrict__ dy,
                                               const float *__restrict__ x,
                                               const float *__restrict__ weight,
                                               const float *__restrict__ mean,
                                               const float *__restrict__ rstd,
                                               float *__restrict__ dx, float *__restrict__ partial,
                                               int64_t N, int64_t C) {
    __shared__ float scratch[WARP];
    float *part_w = partial + blockIdx.x * C;                  // (C,)
    float *part_b = partial + (gridDim.x + blockIdx.x) * C;    // (C,)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part_w[c] = part_b[c] = 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *dyn = dy + n * C, *xn = x + n * C;   // (C,)
        float *dxn = dx + n * C;                          // (C,)
        const float mu = mean[n], r = rstd[n];
        float g = 0.0f, gx = 0.0f;                 // sums of dxhat and dxhat * xhat
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float dxhat = dyn[c] * weight[c];
            g += dxhat;
            gx += dxhat * ((xn[c] - mu) * r);
        }
        const float g_mean = block_sum(g, scratch) / (float)C;
        const float gx_mean = block_sum(gx, scratch) / (float)C;
        // mean and rstd both depend on the whole row: the two mean terms
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float xhat = (xn[c] - mu) * r;
            dxn[c] = r * (dyn[c] * weight[c] - g_mean - xhat * gx_mean);
            part_w[c] += dyn[c] * xhat;
            part_b[c] += dyn[c];
        }
    }
}

int rmsnorm_forward(const float *x, const float *weight, float *y, float *rstd, int64_t N,
                    int64_t C, float eps) {
    if (N == 0 || C == 0) return 0;
    LAUNCH(rmsnorm_forward_rows, (unsigned)N, row_threads(C, ROW_THREADS), x, weight, y, rstd, C,
           eps);
    return launch_status("rmsnorm_forward");
}

int rmsnorm_backward(const float *dy, const float *x, const float *weight, const float *rstd,
                     float *dx, float *dweight, int64_t N, int64_t C) {
    if (C == 0) return 0;
    if (N == 0) return fill(dweight, 0.0f, C);     // a sum of no rows
    int64_t n_partial = std::min(N, (int64_t)PARTIAL_BLOCKS);
    float *partial;                                // (n_partial, C)
    CHECK(device_alloc((void **)&partial, n_partial * C * (int64_t)sizeof(float)));
    LAUNCH(rmsnorm_backward_rows, (unsigned)n_partial, row_threads(C, ROW_THREADS), dy, x,
           weight, rstd, dx, partial, N, C);
    LAUNCH(sum_partials, (unsigned)ceil_div(C, WARP), GROUPS * WARP, partial, dweight,
           n_partial, C);
    CHECK(device_free(partial));                   // stream-ordered: after the kernels
    return launch_status("rmsnorm_backward");
}

int layernorm_forward(const float *x, const float *weight, const float *bias, float *y,
                      float *mean, float *rstd, int64_t N, int64_t C, float eps) {
    if (N == 0 || C == 0) return 0;
    LAUNCH(layernorm_forward_rows, (unsigned)N, row_threads(C, ROW_THREADS), x, weight, bias, y,
           mean, rstd, C, eps);
    return launch_status("layernorm_forward");
}

int layernorm_backward(const float *dy, const float *x, const float *weight, const float *mean,
                       const float *rstd, float *dx, float *dweight, float *dbias, int64_t N,
                       int64_t C) {
    if (C == 0) return 0;
    if (N == 0) {                                  // sums of no rows
        int status = fill(dweight, 0.0f, C);
        return status ? status : fill(dbias, 0.0f, C);
    }
    int64_t n_partial = std::min(N, (int64_t)PARTIAL_BLOCKS);
    float *partial;                                // (2, n_partial, C): dweight's, then dbias's
    CHECK(device_alloc((void **)&partial, 2 * n_partial * C * (int64_t)sizeof(float)));
    LAUNCH(layernorm_backward_rows, (unsigned)n_partial, row_threads(C, ROW_THREADS), dy, x,
           weight, mean, rstd, dx, partial, N, C);
    LAUNCH(sum_partials, (unsigned)ceil_div(C, WARP), GROUPS * WARP, partial, dweight, n_partial,
           C);
    LAUNCH(sum_partials, (unsigned)ceil_div(C, WARP), GROUPS * WARP, partial + n_partial * C,
           dbias, n_partial, C);
    CHECK(device_free(partial));                   // stream-ordered: after the kernels
    return launch_status("layernorm_backward");
}
