/* matmul.cu: out = op(a) @ op(b), batch times, on the GPU (the maths of numpy_kernels.matmul
 * and csrc/matmul.c). op(a) is (M, K): a is (M, K), or (K, M) when transpose_a; op(b) is
 * (K, N): b is (K, N), or (N, K) when transpose_b; out is (M, N).
 *
 * Both kernels give each block a BT x BT tile of out (blockIdx.x: tile row, .y: tile column,
 * .z: the matrix of the batch) and walk K in steps of BK. Each step the 256 threads copy a
 * (BK, BT) slice of op(a) and of op(b) into shared memory, k-major (As[k][m], Bs[k][n]) whatever
 * the operand's layout, so one tile loader serves all four transpose combinations; loads past
 * M, N or K write zeros, which add nothing. The next step's slices are fetched into registers
 * while the current ones are multiplied, hiding the global memory latency.
 *   - matmul (float32): each thread accumulates a (BT/16, BT/16) micro-tile of out in registers
 *     (8 x 8 for BT = 128), reading 2 x BT/16 values of shared memory per BT^2/256 FMAs. This is
 *     the classic register-blocked SGEMM (BT = 128, BK = 8), which reaches most of cuBLAS.
 *   - matmul_tf32: the 8 warps (2 x 4) each own a (BT/2, BT/4) part of the tile as 16 x 16 WMMA
 *     accumulator fragments, and multiply m16n16k8 TF32 fragments on tensor cores; values are
 *     rounded to TF32 as they enter shared memory. The result goes out through a per-warp 16 x 16
 *     staging buffer in shared memory, so edge tiles are written with bounds checks.
 * Small problems (fewer tiles than the GPU runs at once) use BT = 64 to fill more SMs.
 */
#include <stdio.h>

#include "common.cuh"

#ifndef TINYLLM_CUDA_EMU
#include <mma.h>
#endif
using namespace nvcuda;

#define GEMM_THREADS 256
/* Shared rows are BT + PAD floats: the transposing stores of a k-contiguous operand then hit
 * distinct banks, and rows stay 16-byte (float4) and 32-byte (WMMA) aligned. */
#define PAD 4
/* Below this many BT = 128 tiles, BT = 64 tiles (4x as many blocks) keep more SMs busy: an H100
 * has 132 SMs, each running 2 blocks of the BT = 128 kernel. */
#define MIN_LARGE_TILES 256
#define MAX_GRID_YZ 65535

/* What both kernels read: the operands of one matrix of the batch (blockIdx.z) and whether
 * float4 accesses are allowed (16-byte aligned base and a row length that is a multiple of 4). */
struct Gemm {
    const float *a, *b;   // (batch, M, K) or (batch, K, M); (batch, K, N) or (batch, N, K)
    float *out;           // (batch, M, N)
    int64_t M, N, K;
    bool vec_a, vec_b, vec_out;
};

namespace {   // internal linkage: no symbol to export for the helper type

/* One (BK, BT) k-major slice of an operand, carried through registers: fetch() reads global
 * memory (zeros outside the matrix), store() writes the slice into shared memory. The operand
 * is k-contiguous (a (MN, K) matrix: a, or b transposed) or mn-contiguous (a (K, MN) matrix).
 * Each thread moves CHUNKS runs of 4 floats that are consecutive in global memory. */
template <int BT, int BK, bool K_CONTIG>
struct TileLoader {
    static constexpr int CHUNKS = BT * BK / (4 * GEMM_THREADS);
    float4 r[CHUNKS];

    /* The tile coordinates (mn, k) of the first float of chunk c of this thread. */
    __device__ static void coords(int c, int &mn, int &k) {
        int index = c * GEMM_THREADS + (int)threadIdx.x;
        if (K_CONTIG) {
            mn = index / (BK / 4);
            k = index % (BK / 4) * 4;
        } else {
            k = index / (BT / 4);
            mn = index % (BT / 4) * 4;
        }
    }

    /* The slice of rows mn0 .. mn0 + BT and columns k0 .. k0 + BK of the (MN, K) operand. */
    __device__ void fetch(const float *src, int64_t MN, int64_t K, int64_t mn0, int64_t k0,
                          bool vec) {
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            int mn, k;
            coords(c, mn, k);
            // as laid out in memory: (rows, cols), the 4 floats along cols
            int64_t row = K_CONTIG ? mn0 + mn : k0 + k, col = K_CONTIG ? k0 + k : mn0 + mn;
            int64_t rows = K_CONTIG ? MN : K, cols = K_CONTIG ? K : MN;
            float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (row < rows && col + 3 < cols && vec) {
                r[c] = *reinterpret_cast<const float4 *>(src + row * cols + col);
                continue;
            }
            if (row < rows)
                for (int i = 0; i < 4; i++)
                    if (col + i < cols) x[i] = src[row * cols + col + i];
            r[c] = make_float4(x[0], x[1], x[2], x[3]);
        }
    }

    /* s: (BK, BT + PAD). TF32 rounds every value to TF32 (round to nearest) on the way. */
    template <bool TF32>
    __device__ void store(float (*s)[BT + PAD]) const {
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            int mn, k;
            coords(c, mn, k);
            float4 v = r[c];
            if constexpr (TF32) {
                v.x = wmma::__float_to_tf32(v.x);
                v.y = wmma::__float_to_tf32(v.y);
                v.z = wmma::__float_to_tf32(v.z);
                v.w = wmma::__float_to_tf32(v.w);
            }
            if (K_CONTIG) {   // 4 consecutive k of one row mn: a column of the k-major slice
                s[k][mn] = v.x;
                s[k + 1][mn] = v.y;
                s[k + 2][mn] = v.z;
                s[k + 3][mn] = v.w;
            } else {
                *reinterpret_cast<float4 *>(&s[k][mn]) = v;
            }
        }
    }
};

}  // namespace

/* float32 SIMT kernel. Thread (ty, tx) of the 16 x 16 grid owns rows g * 64 + ty * 4 + i and
 * columns h * 64 + tx * 4 + j of the tile (g, h < BT / 64; i, j < 4): spreading the micro-tile
 * in 4-wide runs 64 apart lets every shared read be one conflict-free float4. */
template <int BT, bool A_KCONTIG, bool B_KCONTIG>
__global__ void __launch_bounds__(GEMM_THREADS) matmul_f32_kernel(Gemm g) {
    constexpr int BK = 1024 / BT;   // a (BK, BT) slice is 1024 floats: 4 per thread
    constexpr int TM = BT / 16;     // the micro-tile is TM x TM
    alignas(16) __shared__ float As[BK][BT + PAD];   // op(a) slice, (BK, BT): As[k][m]
    alignas(16) __shared__ float Bs[BK][BT + PAD];   // op(b) slice, (BK, BT): Bs[k][n]
    const int64_t M = g.M, N = g.N, K = g.K, z = blockIdx.z;
    const float *a = g.a + z * M * K, *b = g.b + z * K * N;
    float *out = g.out + z * M * N;
    const int64_t m0 = (int64_t)blockIdx.x * BT, n0 = (int64_t)blockIdx.y * BT;
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;

    TileLoader<BT, BK, A_KCONTIG> load_a;
    TileLoader<BT, BK, B_KCONTIG> load_b;
    float acc[TM][TM] = {};   // (TM, TM) micro-tile of out
    load_a.fetch(a, M, K, m0, 0, g.vec_a);
    load_b.fetch(b, N, K, n0, 0, g.vec_b);
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
        load_a.template store<false>(As);
        load_b.template store<false>(Bs);
        __syncthreads();
        if (k0 + BK < K) {   // in flight while this slice is multiplied
            load_a.fetch(a, M, K, m0, k0 + BK, g.vec_a);
            load_b.fetch(b, N, K, n0, k0 + BK, g.vec_b);
        }
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float af[TM], bf[TM];
#pragma unroll
            for (int q = 0; q < TM / 4; q++) {
                float4 x = *reinterpret_cast<const float4 *>(&As[k][q * 64 + ty * 4]);
                float4 y = *reinterpret_cast<const float4 *>(&Bs[k][q * 64 + tx * 4]);
                af[4 * q] = x.x, af[4 * q + 1] = x.y, af[4 * q + 2] = x.z, af[4 * q + 3] = x.w;
                bf[4 * q] = y.x, bf[4 * q + 1] = y.y, bf[4 * q + 2] = y.z, bf[4 * q + 3] = y.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TM; j++) acc[i][j] = fmaf(af[i], bf[j], acc[i][j]);
        }
        __syncthreads();   // every thread is done reading before the next store overwrites
    }

#pragma unroll
    for (int i = 0; i < TM; i++) {
        int64_t row = m0 + i / 4 * 64 + ty * 4 + i % 4;
        if (row >= M) continue;
#pragma unroll
        for (int q = 0; q < TM / 4; q++) {
            int64_t col = n0 + q * 64 + tx * 4;
            float *o = out + row * N + col;
            const float *v = &acc[i][4 * q];
            if (g.vec_out && col + 3 < N) {
                *reinterpret_cast<float4 *>(o) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
                for (int j = 0; j < 4; j++)
                    if (col + j < N) o[j] = v[j];
            }
        }
    }
}

/* TF32 tensor-core kernel: warp w owns rows (w / 4) * BT/2 and columns (w % 4) * BT/4 of the
 * tile, as FM x FN fragments of 16 x 16. As is op(a)'s slice column-major (element (m, k) at
 * As[k][m]) and Bs op(b)'s row-major, just as the fragments want them. */
template <int BT, bool A_KCONTIG, bool B_KCONTIG>
__global__ void __launch_bounds__(GEMM_THREADS) matmul_tf32_kernel(Gemm g) {
    constexpr int BK = 16;                          // two k8 steps per slice
    constexpr int WM = BT / 2, WN = BT / 4;         // the warp's part of the tile
    constexpr int FM = WM / 16, FN = WN / 16;       // its fragments
    constexpr int LD = BT + PAD;                    // a multiple of 4, as WMMA requires
    // WMMA wants 32-byte aligned fragment pointers
    alignas(128) __shared__ float As[BK][LD];                  // (BK, BT): As[k][m]
    alignas(128) __shared__ float Bs[BK][LD];                  // (BK, BT): Bs[k][n]
    alignas(128) __shared__ float stage[GEMM_THREADS / WARP][16 * 16];   // per warp, (16, 16)
    const int64_t M = g.M, N = g.N, K = g.K, z = blockIdx.z;
    const float *a = g.a + z * M * K, *b = g.b + z * K * N;
    float *out = g.out + z * M * N;
    const int64_t m0 = (int64_t)blockIdx.x * BT, n0 = (int64_t)blockIdx.y * BT;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int wm = warp / 4 * WM, wn = warp % 4 * WN;    // the warp's offset in the tile

    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[FM][FN];
    for (int i = 0; i < FM; i++)
        for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    TileLoader<BT, BK, A_KCONTIG> load_a;
    TileLoader<BT, BK, B_KCONTIG> load_b;
    load_a.fetch(a, M, K, m0, 0, g.vec_a);
    load_b.fetch(b, N, K, n0, 0, g.vec_b);
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
        load_a.template store<true>(As);
        load_b.template store<true>(Bs);
        __syncthreads();
        if (k0 + BK < K) {
            load_a.fetch(a, M, K, m0, k0 + BK, g.vec_a);
            load_b.fetch(b, N, K, n0, k0 + BK, g.vec_b);
        }
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>
                af[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>
                bf[FN];
            for (int i = 0; i < FM; i++) wmma::load_matrix_sync(af[i], &As[kk][wm + 16 * i], LD);
            for (int j = 0; j < FN; j++) wmma::load_matrix_sync(bf[j], &Bs[kk][wn + 16 * j], LD);
            for (int i = 0; i < FM; i++)
                for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
        }
        __syncthreads();
    }

    // a fragment's element layout is opaque: store it whole to the warp's staging buffer, then
    // copy the part inside out (lanes 0-15 and 16-31 take two rows per step: coalesced)
    float *st = stage[warp];
    for (int i = 0; i < FM; i++)
        for (int j = 0; j < FN; j++) {
            wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 16 * 16; e += WARP) {
                int64_t row = m0 + wm + 16 * i + e / 16, col = n0 + wn + 16 * j + e % 16;
                if (row < M && col < N) out[row * N + col] = st[e];
            }
            __syncwarp();   // read before the next fragment overwrites it
        }
}

static bool aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }

typedef void (*GemmKernel)(Gemm);

/* The kernel for the tile size, precision and transposes: op(a) is k-contiguous unless a is
 * transposed, op(b) only when b is. */
template <int BT, bool A_KCONTIG, bool B_KCONTIG>
static GemmKernel kernel_for(bool tf32) {
    return tf32 ? matmul_tf32_kernel<BT, A_KCONTIG, B_KCONTIG>
                : matmul_f32_kernel<BT, A_KCONTIG, B_KCONTIG>;
}

template <int BT>
static GemmKernel pick_kernel(bool tf32, int transpose_a, int transpose_b) {
    if (transpose_a)
        return transpose_b ? kernel_for<BT, false, true>(tf32) : kernel_for<BT, false, false>(tf32);
    return transpose_b ? kernel_for<BT, true, true>(tf32) : kernel_for<BT, true, false>(tf32);
}

static int run_matmul(const char *name, bool tf32, const float *a, const float *b, float *out,
                      int64_t batch, int64_t M, int64_t N, int64_t K, int transpose_a,
                      int transpose_b) {
    if (batch == 0 || M == 0 || N == 0) return 0;
    const bool large = ceil_div(M, 128) * ceil_div(N, 128) * batch >= MIN_LARGE_TILES;
    const int BT = large ? 128 : 64;
    if (ceil_div(N, BT) > MAX_GRID_YZ) {   // gridDim.y's limit
        char why[160];
        snprintf(why, sizeof why, "%s: N = %lld is too large (at most %lld columns)", name,
                 (long long)N, (long long)MAX_GRID_YZ * BT);
        return record_error(cudaErrorInvalidValue, why);
    }
    GemmKernel kernel = large ? pick_kernel<128>(tf32, transpose_a, transpose_b)
                              : pick_kernel<64>(tf32, transpose_a, transpose_b);
    Gemm g = {a, b, out, M, N, K,
              aligned16(a) && (transpose_a ? M : K) % 4 == 0,
              aligned16(b) && (transpose_b ? K : N) % 4 == 0,
              aligned16(out) && N % 4 == 0};
    // gridDim.z is at most MAX_GRID_YZ: a larger batch goes in slices
    for (int64_t z0 = 0; z0 < batch; z0 += MAX_GRID_YZ) {
        int64_t nz = batch - z0 < MAX_GRID_YZ ? batch - z0 : MAX_GRID_YZ;
        dim3 grid((unsigned)ceil_div(M, BT), (unsigned)ceil_div(N, BT), (unsigned)nz);
        g.a = a + z0 * M * K, g.b = b + z0 * K * N, g.out = out + z0 * M * N;
        LAUNCH(kernel, grid, GEMM_THREADS, g);
    }
    return launch_status(name);
}

int matmul(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
           int64_t K, int transpose_a, int transpose_b) {
    return run_matmul("matmul", false, a, b, out, batch, M, N, K, transpose_a, transpose_b);
}

int matmul_tf32(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                int64_t K, int transpose_a, int transpose_b) {
    return run_matmul("matmul_tf32", true, a, b, out, batch, M, N, K, transpose_a, transpose_b);
}
