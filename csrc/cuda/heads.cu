/* heads.cu: the copies between the fused projection's layout and attention's per-head layout.
 *
 * A fused q/k/v projection writes x (B, T, P, nh, hs): at every position the P parts side by
 * side, each split into nh heads. Attention wants one part as (B, nh, T, hs), heads outermost,
 * so that a head's T rows are contiguous. split_heads gathers part p out; merge_heads scatters
 * the per-head layout back into part p (the attention output, P = 1, or q/k/v gradients into a
 * fused gradient, P = 3). Both are one strided copy, so they share one kernel.
 */

#include "common.cuh"

/* i indexes a (B, nh, T, hs) array; returns where that element sits in (B, T, P, nh, hs). */
static __device__ __forceinline__ int64_t fused_offset(int64_t i, int64_t T, int64_t P, int64_t p,
                                                       int64_t nh, int64_t hs) {
    int64_t d = i % hs, row = i / hs;              // row in (B, nh, T)
    int64_t t = row % T, bh = row / T;
    int64_t h = bh % nh, b = bh / nh;
    return (((b * T + t) * P + p) * nh + h) * hs + d;
}

/* Consecutive threads take consecutive d, so both sides are read and written in runs of hs. */
static __global__ void copy_heads(const float *__restrict__ src, float *__restrict__ dst, int64_t n,
                                  int64_t T, int64_t P, int64_t p, int64_t nh, int64_t hs,
                                  bool split) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t f = fused_offset(i, T, P, p, nh, hs);
        if (split) dst[i] = src[f];
        else dst[f] = src[i];
    }
}

static int launch_copy_heads(const float *src, float *dst, int64_t B, int64_t T, int64_t P,
                             int64_t p, int64_t nh, int64_t hs, bool split) {
    int64_t n = B * nh * T * hs;
    if (n == 0) return 0;
    unsigned blocks = blocks_for(n);   // grid-stride
    LAUNCH(copy_heads, blocks, THREADS, src, dst, n, T, P, p, nh, hs, split);
    return launch_status(split ? "split_heads" : "merge_heads");
}

int split_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                int64_t nh, int64_t hs) {
    return launch_copy_heads(x, out, B, T, P, p, nh, hs, true);
}

int merge_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                int64_t nh, int64_t hs) {
    return launch_copy_heads(x, out, B, T, P, p, nh, hs, false);
}
