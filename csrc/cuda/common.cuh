/* common.cuh: what every .cu file of the CUDA library shares.
 *
 * The kernels are written once and built two ways: by nvcc against the CUDA runtime, and
 * (TINYLLM_CUDA_EMU defined) by a C++ compiler against emu/cuda_emu.h, which runs every
 * thread of a block on the CPU so the tests can check the kernels' logic without a GPU.
 * Two rules keep a source buildable both ways:
 *   - launch kernels with LAUNCH(kernel, grid, block, args...), never <<< >>>;
 *   - shared memory is declared with a fixed size inside the kernel (no extern __shared__).
 */
#ifndef TINYLLM_COMMON_CUH
#define TINYLLM_COMMON_CUH
#include <stdint.h>

#ifdef TINYLLM_CUDA_EMU
#include "emu/cuda_emu.h"
#define LAUNCH(kernel, grid, block, ...) \
    emu_launch(dim3(grid), dim3(block), [&]() { kernel(__VA_ARGS__); })
#else
#include <cuda_runtime.h>
#define LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block)>>>(__VA_ARGS__)
#endif

#include "tinyllm_cuda.h"

#define WARP 32
#define FULL_MASK 0xffffffffu

/* The status of the launch just queued (a bad configuration, or an earlier kernel's fault),
 * recorded for last_error() as "<what>: <CUDA's message>". Every host function ends with
 * `return launch_status("name");` after its launches. */
int launch_status(const char *what);
/* Record a failed runtime call (status != cudaSuccess) for last_error(); returns status. */
int record_error(int status, const char *call);
/* Any status other than cudaSuccess returns from the calling host function, recorded. */
#define CHECK(call)                                               \
    do {                                                          \
        int status_ = record_error((int)(call), #call);           \
        if (status_ != 0) return status_;                         \
    } while (0)

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Elementwise kernels loop grid-stride: blocks of THREADS threads, at most max_blocks of them
 * (4096 fill every current GPU several times over), each thread then striding by the grid. */
#define THREADS 256
#define MAX_BLOCKS 4096
static inline unsigned blocks_for(int64_t n, int64_t max_blocks = MAX_BLOCKS) {
    int64_t blocks = ceil_div(n, THREADS);
    return (unsigned)(blocks < max_blocks ? blocks : max_blocks);
}

/* Row-wise kernels (one block per row of C values): enough warps to cover the row, at most
 * max_threads of them, each thread then striding over the row. */
static inline unsigned row_threads(int64_t C, int64_t max_threads) {
    int64_t threads = ceil_div(C, WARP) * WARP;
    return (unsigned)(threads < max_threads ? threads : max_threads);
}

/* Warp-wide sum and max by butterfly shuffles: every lane ends with the result. */
__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int offset = WARP / 2; offset > 0; offset /= 2)
        x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}
__device__ __forceinline__ double warp_sum_double(double x) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

/* Block-wide sum for blocks of up to 1024 threads (a multiple of 32): every thread gets it.
 * `scratch` is a __shared__ float[32] of the caller's. */
__device__ __forceinline__ float block_sum(float x, float *scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, n_warps = blockDim.x / WARP;
    x = warp_sum(x);
    __syncthreads();              /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(x);
}
__device__ __forceinline__ float block_max(float x, float *scratch) {
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, n_warps = blockDim.x / WARP;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < n_warps ? scratch[lane] : -INFINITY;
    return warp_max(x);
}

#endif
