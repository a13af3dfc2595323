/* decode.cu: the decode kernels on the GPU, as csrc/gemv.c and csrc/attention_decode.c
 * (the maths: numpy_kernels.gemv and numpy_kernels.attention_decode).
 *
 * gemv: out (M, N) = x (M, K) @ w (N, K)^T for the M = 1..16 rows of a decoding step. A warp
 * owns one row of w (one output column) and reads it once, coalesced (lane l takes elements
 * l, l + 32, ...), against every row of x, which all warps share through the L1/L2 caches;
 * the M partial sums per lane sit in registers and are joined by shuffles. Decoding is bound
 * by reading w, and each of its bytes is read once.
 *
 * attention_decode: a block per (batch, head, query) row: q (hs,) against the first
 * Tk - Tq + i + 1 keys of its head's cache (B, nh, Tmax, hs), read in place. The keys go by in
 * chunks of CHUNK: a warp per key computes a score (lanes over the head dims, coalesced), then
 * the block takes the chunk's max and sum for the online softmax, and thread d adds the chunk's
 * weighted values to output dim d (coalesced over d). Shared memory is fixed: q, one chunk of
 * scores and a reduction scratch, whatever Tk is.
 */
#include "common.cuh"

#define GEMV_MAX_ROWS 16
#define GEMV_WARPS 8          /* rows of w per block of 256 threads */
#define DECODE_THREADS 128
#define DECODE_CHUNK 256
#define DECODE_HS_MAX 256

static __global__ void gemv_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                   float *__restrict__ out, int64_t M, int64_t N, int64_t K) {
    int lane = threadIdx.x % WARP;
    int64_t n = blockIdx.x * (int64_t)GEMV_WARPS + threadIdx.x / WARP;   // this warp's row of w
    if (n >= N) return;                                                    // whole warps leave
    const float *wn = w + n * K;
    float acc[GEMV_MAX_ROWS];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_ROWS; m++) acc[m] = 0.0f;
    for (int64_t k = lane; k < K; k += WARP) {
        float wk = wn[k];
#pragma unroll
        for (int m = 0; m < GEMV_MAX_ROWS; m++)
            if (m < M) acc[m] = fmaf(wk, x[m * K + k], acc[m]);
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_ROWS; m++) {
        if (m < M) {
            float s = warp_sum(acc[m]);
            if (lane == 0) out[m * N + n] = s;
        }
    }
}

extern "C" int gemv(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K) {
    if (M == 0 || N == 0) return 0;                   // the Python side keeps M <= GEMV_MAX_ROWS
    LAUNCH(gemv_kernel, (unsigned)ceil_div(N, GEMV_WARPS), GEMV_WARPS * WARP, x, w, out, M, N, K);
    return launch_status("gemv");
}

static __global__ void attention_decode_kernel(const float *__restrict__ q,
                                               const float *__restrict__ k_cache,
                                               const float *__restrict__ v_cache,
                                               float *__restrict__ out, int64_t Tq, int64_t Tk,
                                               int64_t Tmax, int64_t hs, float scale) {
    __shared__ float q_row[DECODE_HS_MAX];
    __shared__ float s[DECODE_CHUNK];
    __shared__ float scratch[WARP];
    int64_t row = blockIdx.x;                         // (b, h, i) flattened: (B * nh, Tq)
    int64_t bh = row / Tq, i = row % Tq;
    const float *k = k_cache + bh * Tmax * hs, *v = v_cache + bh * Tmax * hs;
    int64_t n = Tk - Tq + i + 1;                      // query i sits at Tk - Tq + i
    int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP, n_warps = blockDim.x / WARP;
    for (int64_t d = tid; d < hs; d += blockDim.x) q_row[d] = q[row * hs + d];
    __syncthreads();
    float m = -INFINITY, l = 0.0f, acc = 0.0f;        // acc: output dim tid (when tid < hs)
    for (int64_t j0 = 0; j0 < n; j0 += DECODE_CHUNK) {
        int64_t nj = n - j0 < DECODE_CHUNK ? n - j0 : DECODE_CHUNK;
        for (int64_t j = warp; j < nj; j += n_warps) {                  // a warp per key
            const float *kj = k + (j0 + j) * hs;
            float dot = 0.0f;
            for (int64_t d = lane; d < hs; d += WARP) dot = fmaf(q_row[d], kj[d], dot);
            dot = warp_sum(dot);
            if (lane == 0) s[j] = dot * scale;
        }
        __syncthreads();
        float chunk_max = -INFINITY;
        for (int64_t j = tid; j < nj; j += blockDim.x) chunk_max = fmaxf(chunk_max, s[j]);
        float m_new = fmaxf(m, block_max(chunk_max, scratch));         // finite: nj >= 1
        float correction = expf(m - m_new), sum = 0.0f;
        __syncthreads();                              // every thread has read s for the max
        for (int64_t j = tid; j < nj; j += blockDim.x) {
            s[j] = expf(s[j] - m_new);
            sum += s[j];
        }
        l = l * correction + block_sum(sum, scratch);                   // syncs: s is complete
        m = m_new;
        if (tid < hs) {
            acc *= correction;
            for (int64_t j = 0; j < nj; j++) acc = fmaf(s[j], v[(j0 + j) * hs + tid], acc);
        }
        __syncthreads();                              // s is read before the next chunk's scores
    }
    if (tid < hs) out[row * hs + tid] = acc / l;
}

extern "C" int attention_decode(const float *q, const float *k_cache, const float *v_cache,
                                float *out, int64_t B, int64_t nh, int64_t Tq, int64_t Tk,
                                int64_t Tmax, int64_t hs) {
    if (B * nh * Tq == 0) return 0;
    unsigned threads = hs > DECODE_THREADS ? (unsigned)row_threads(hs, DECODE_HS_MAX) : DECODE_THREADS;
    LAUNCH(attention_decode_kernel, (unsigned)(B * nh * Tq), threads, q, k_cache, v_cache, out,
           Tq, Tk, Tmax, hs, 1.0f / sqrtf((float)hs));
    return launch_status("attention_decode");
}
