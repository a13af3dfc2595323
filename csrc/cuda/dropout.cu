/* dropout.cu: y = x * scale where an element's hash keeps it, 0 where it does not.
 *
 * The maths and the hash are numpy_kernels.dropout: element i is kept when the top 24 bits of
 * splitmix64(seed + (i + 1) * golden) are >= threshold, so the NumPy, C and CUDA backends
 * draw the same mask from the same seed, and the backward (dropout of the gradient with the
 * same seed) rebuilds the mask instead of storing it. Grid-stride, one hash per element.
 */
#include "common.cuh"

static __device__ __forceinline__ bool keep(uint64_t seed, int64_t i, uint32_t threshold) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)(z >> 40) >= threshold;
}

static __global__ void dropout_kernel(const float *__restrict__ x, float *__restrict__ y,
                                      int64_t n, float scale, uint32_t threshold, uint64_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = keep(seed, i, threshold) ? x[i] * scale : 0.0f;
}

int dropout(const float *x, float *y, int64_t n, float scale, uint32_t threshold, uint64_t seed) {
    if (n == 0) return 0;
    LAUNCH(dropout_kernel, blocks_for(n), THREADS, x, y, n, scale, threshold, seed);
    return launch_status("dropout");
}
