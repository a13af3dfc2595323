/* gemv.c: out (M, N) = x (M, K) @ w (N, K)^T for the few rows M of a decoding step.
 *
 * What it is: the matrix-vector (M = 1) and skinny-matrix (M <= 16) product that decoding
 * spends its time in. Decoding one token reads every weight once and does two FLOPs with it,
 * so it is bound by memory bandwidth, not by FMAs: the GEMM of matmul.c, which packs and tiles
 * its operands to reuse them from cache, only adds traffic and copies when M is 1. Here each
 * thread owns a contiguous range of w's rows (the output columns), streams them from memory
 * exactly once, and computes an MB x NB block of dot products per pass over K: NB rows of w
 * (the streams) against MB rows of x (which stay in L1/L2), MB * NB vector accumulators in
 * registers, reduced horizontally at the end. No packing, no scratch memory, no barrier.
 *
 * What it is not: a GEMM. Past 16 rows the reuse a GEMM gets from tiling wins; c_kernels.py
 * sends only M <= GEMV_MAX_ROWS here. Summation order differs from NumPy's (vector lanes, then
 * a tree), so results agree to rounding, not bit for bit.
 *
 * Read next: tinyllm.h for the contract, numpy_kernels.gemv for the meaning,
 * tests/test_generate_kernels.py for the checks, examples/bench_generate.py for the speed.
 */
#include <stdint.h>
#include "parallel.h"
#include "tinyllm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* The vector vocabulary, as in matmul.c. A block is mb rows of x against nb rows of w; its
 * mb x nb accumulators plus nb w vectors and one x vector must fit the register file:
 *   AVX-512: 32 zmm; blocks of 1 or 2 x 8 (2 x 8 + 8 + 1 = 25) and 3 or 4 x 4 (4 x 4 + 4 + 1 = 21).
 *     Eight w rows per pass, not four, when x has one or two rows: a pass then loads x once
 *     per eight FMAs, and on cached weights (the bench preset's layers fit in L3) it runs
 *     1.3x faster (measured, one thread).
 *   AVX2+FMA: 16 ymm; blocks of up to 2 x 4 (2 x 4 + 4 + 1 = 13).
 *   portable: one float per "vector"; the compiler keeps the 2 x 4 sums in registers. */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vec;
#define VLEN 16
#define MB 4
#define vloadu(p) _mm512_loadu_ps(p)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vzero() _mm512_setzero_ps()
#define vsum(v) _mm512_reduce_add_ps(v)
#define NB_WIDE 8   /* rows of w per block when mb <= 2 */
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vec;
#define VLEN 8
#define MB 2
#define vloadu(p) _mm256_loadu_ps(p)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vzero() _mm256_setzero_ps()
static inline float vsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#else
typedef float vec;
#define VLEN 1
#define MB 2
#define vloadu(p) (*(p))
#define vfma(a, b, c) ((a) * (b) + (c))
#define vzero() 0.0f
#define vsum(v) (v)
#endif
#ifndef NB_WIDE
#define NB_WIDE 4
#endif
#define NB 4   /* rows of w per block when mb > 2 */
#define NB_MAX NB_WIDE   /* rows of w streamed together: independent memory streams per thread */

/* out[i][j] = x[i] . w[j] for i < mb, j < nb, rows of length K. mb <= MB and nb <= NB are
 * compile-time constants at every call (always inlined), so the loops over them unroll and
 * the accumulators live in registers. x and out have row strides K and N. */
static inline __attribute__((always_inline)) void block(const float *restrict x,
                                                        const float *restrict w,
                                                        float *restrict out, int64_t N, int64_t K,
                                                        const int mb, const int nb) {
    vec acc[MB][NB_MAX];
    for (int i = 0; i < mb; i++)
        for (int j = 0; j < nb; j++) acc[i][j] = vzero();
    int64_t k = 0;
    for (; k + VLEN <= K; k += VLEN) {
        vec wv[NB_MAX];
        for (int j = 0; j < nb; j++) wv[j] = vloadu(w + j * K + k);
        for (int i = 0; i < mb; i++) {
            vec xv = vloadu(x + i * K + k);
            for (int j = 0; j < nb; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mb; i++)
        for (int j = 0; j < nb; j++) {
            float s = vsum(acc[i][j]);
            for (int64_t kk = k; kk < K; kk++) s += x[i * K + kk] * w[j * K + kk];  // K % VLEN
            out[i * N + j] = s;
        }
}

/* Rows [n0, n1) of w against every row of x, NB_MAX rows of w at a time. */
static void rows_of_w(const float *x, const float *w, float *out, int64_t M, int64_t N,
                      int64_t K, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n += NB_MAX) {
        int full = n + NB_MAX <= n1;
        for (int64_t m = 0; m < M; m += MB) {
            int mb = M - m < MB ? (int)(M - m) : MB;
            const float *xm = x + m * K, *wn = w + n * K;
            float *o = out + m * N + n;
            // one instantiation per (mb, nb): constants, so block() keeps its sums in registers
            if (!full) {
                for (int64_t j = 0; j < n1 - n; j++)
                    switch (mb) {
                        case 1: block(xm, wn + j * K, o + j, N, K, 1, 1); break;
                        case 2: block(xm, wn + j * K, o + j, N, K, 2, 1); break;
                        case 3: block(xm, wn + j * K, o + j, N, K, 3, 1); break;
                        default: block(xm, wn + j * K, o + j, N, K, 4, 1); break;
                    }
                continue;
            }
            switch (mb) {
                case 1: block(xm, wn, o, N, K, 1, NB_WIDE); break;
                case 2: block(xm, wn, o, N, K, 2, NB_WIDE); break;
                default:
                    for (int64_t j = 0; j < NB_MAX; j += NB) {
                        if (mb == 3) block(xm, wn + j * K, o + j, N, K, 3, NB);
                        else block(xm, wn + j * K, o + j, N, K, 4, NB);
                    }
            }
        }
    }
}

void gemv(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K) {
    // each thread a contiguous run of whole NB_MAX-row groups: it streams its part of w once
    int64_t groups = (N + NB_MAX - 1) / NB_MAX;
#pragma omp parallel if (M * N * K >= PARALLEL_MIN)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t g0 = groups * t / nt, g1 = groups * (t + 1) / nt;
        int64_t n0 = g0 * NB_MAX, n1 = g1 * NB_MAX < N ? g1 * NB_MAX : N;
        if (n0 < n1) rows_of_w(x, w, out, M, N, K, n0, n1);
    }
}
