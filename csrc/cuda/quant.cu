/* quant.cu: the quantized products on the GPU, as csrc/quant_i8.c and csrc/quant.c (the maths:
 * tinyllm/quant/formats.py quantize_activations, matmul_q_i8, dequantize).
 *
 * quantize_rows_q8: a warp per block of 32 values of x: lane l holds value l, the block's
 * absmax is a warp max, dx = absmax / 127 and qx = rint(x / dx) (IEEE division and round half
 * to even, as the CPU's), so qx and dx equal the CPU's bit for bit.
 *
 * matmul_q_i8: out (M, N) = x @ dequant(W)^T for the M = 1..16 rows of a decoding step, x
 * quantized as above. A warp owns one row of W; lane l takes its blocks l, l + 32, ... and
 * reads each whole (32 bytes of q8_0, 16 of q4_0, as 4-byte words: the warp's reads are
 * contiguous), with its fp16 scale. Per block and row of x the integer dot product S is exact
 * (dot4: __dp4a on the GPU, four byte products in the emulation; q4_0's nibbles are q + 8, so
 * S = dot(q + 8, x) - 8 sum(x)), and the lane adds (dw * dx) * S; the lanes' sums are joined by
 * shuffles. The float32 sum over blocks is in another order than the CPU's.
 *
 * dequantize_q: a thread per weight, q * d: exact, equal to the CPU's.
 *
 * What it is not: the prefill GEMM (QuantLinear hands dequantize_q's rows to matmul). K must be
 * a multiple of 32 (backends/cuda_quant.py checks).
 */
#include "common.cuh"   /* first: it defines __host__ / __device__ in the emulation */
#include "../half.h"

#define QBLOCK 32
#define QUANT_MAX_ROWS 16
#define QUANT_WARPS 8         /* rows of W per block of 256 threads */

static __global__ void quantize_rows_q8_kernel(const float *__restrict__ x, int8_t *__restrict__ qx,
                                               float *__restrict__ dx, int64_t blocks) {
    int lane = threadIdx.x % WARP;
    int64_t r = blockIdx.x * (int64_t)QUANT_WARPS + threadIdx.x / WARP;   // this warp's block
    if (r >= blocks) return;
    float v = x[r * QBLOCK + lane];
    float d = warp_max(fabsf(v)) / 127.0f;
    qx[r * QBLOCK + lane] = (int8_t)(d != 0.0f ? __float2int_rn(v / d) : 0);
    if (lane == 0) dx[r] = d;
}

/* the sum of the four signed byte products of a and b, plus c */
__device__ __forceinline__ int dot4(int a, int b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#endif
}

/* S of block b of W's row (words w: 8 of q8_0, 4 of q4_0) against row m's block (8 words) */
__device__ __forceinline__ int block_dot(const int *w, const int *xw, int q4) {
    int s = 0;
    if (!q4) {
        for (int j = 0; j < 8; j++) s = dot4(w[j], xw[j], s);
        return s;
    }
    int sum_x = 0;
    for (int j = 0; j < 4; j++) {
        s = dot4(w[j] & 0x0F0F0F0F, xw[j], s);                 // values 4j .. 4j + 3
        s = dot4((w[j] >> 4) & 0x0F0F0F0F, xw[4 + j], s);      // values 16 + 4j ..
    }
    for (int j = 0; j < 8; j++) sum_x = dot4(0x01010101, xw[j], sum_x);
    return s - 8 * sum_x;
}

static __global__ void matmul_q_i8_kernel(const int8_t *__restrict__ qx, const float *__restrict__ dx,
                                          const uint8_t *__restrict__ q,
                                          const uint16_t *__restrict__ scale, float *__restrict__ out,
                                          int64_t M, int64_t N, int64_t K, int q4) {
    int lane = threadIdx.x % WARP;
    int64_t n = blockIdx.x * (int64_t)QUANT_WARPS + threadIdx.x / WARP;   // this warp's row of W
    if (n >= N) return;                                                    // whole warps leave
    int64_t nb = K / QBLOCK, bb = q4 ? QBLOCK / 2 : QBLOCK;
    float acc[QUANT_MAX_ROWS];
#pragma unroll
    for (int m = 0; m < QUANT_MAX_ROWS; m++) acc[m] = 0.0f;
    for (int64_t b = lane; b < nb; b += WARP) {
        int w[8];
        const int *wp = (const int *)(q + (n * nb + b) * bb);   // 16-byte aligned: K % 32 == 0
        for (int j = 0; j < bb / 4; j++) w[j] = wp[j];
        float dw = half_to_float(scale[n * nb + b]);
#pragma unroll
        for (int m = 0; m < QUANT_MAX_ROWS; m++)
            if (m < M) {
                int s = block_dot(w, (const int *)(qx + (m * nb + b) * QBLOCK), q4);
                acc[m] += dw * dx[m * nb + b] * (float)s;
            }
    }
#pragma unroll
    for (int m = 0; m < QUANT_MAX_ROWS; m++) {
        if (m < M) {
            float s = warp_sum(acc[m]);
            if (lane == 0) out[m * N + n] = s;
        }
    }
}

static __global__ void dequantize_q_kernel(const uint8_t *__restrict__ q,
                                           const uint16_t *__restrict__ scale,
                                           float *__restrict__ out, int64_t total, int64_t K, int q4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / K, k = i % K, b = k / QBLOCK, j = k % QBLOCK;
        int v;
        if (q4) {
            uint8_t byte = q[n * (K / 2) + b * (QBLOCK / 2) + j % (QBLOCK / 2)];
            v = (j < QBLOCK / 2 ? byte & 0x0F : byte >> 4) - 8;
        } else {
            v = (int8_t)q[i];
        }
        out[i] = (float)v * half_to_float(scale[n * (K / QBLOCK) + b]);
    }
}

extern "C" int quantize_rows_q8(const float *x, int8_t *qx, float *dx, int64_t M, int64_t K) {
    int64_t blocks = M * (K / QBLOCK);
    if (blocks == 0) return 0;
    LAUNCH(quantize_rows_q8_kernel, (unsigned)ceil_div(blocks, QUANT_WARPS), QUANT_WARPS * WARP,
           x, qx, dx, blocks);
    return launch_status("quantize_rows_q8");
}

extern "C" int matmul_q_i8(const int8_t *qx, const float *dx, const void *q,
                           const uint16_t *scale, float *out, int64_t M, int64_t N, int64_t K,
                           int q4) {
    if (M == 0 || N == 0) return 0;                   // the Python side keeps M <= QUANT_MAX_ROWS
    LAUNCH(matmul_q_i8_kernel, (unsigned)ceil_div(N, QUANT_WARPS), QUANT_WARPS * WARP, qx, dx,
           (const uint8_t *)q, scale, out, M, N, K, q4);
    return launch_status("matmul_q_i8");
}

extern "C" int dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N,
                            int64_t K, int q4) {
    if (N * K == 0) return 0;
    LAUNCH(dequantize_q_kernel, blocks_for(N * K), THREADS, (const uint8_t *)q, scale, out,
           N * K, K, q4);
    return launch_status("dequantize_q");
}
