/* attention_tiles.h: attention.c's float32 tile products, register-blocked on the calling thread.
 *
 * gemm_acc: c (M, N) += a (M, K) @ b (K, N) for the 64 x 64 tiles of flash attention (a used
 * as it is or transposed, by its strides); tile_scores: s = a b^T, the scores Q K^T or
 * dp = dout V^T of one tile pair. Their bf16 twins are bf16.h's bf16_gemm_acc (vdpbf16ps) and
 * amx_gemm_acc (AMX tiles), which attention.c picks by the head's precision.
 */
#ifndef TINYLLM_ATTENTION_TILES_H
#define TINYLLM_ATTENTION_TILES_H
#include <stdint.h>
#include <string.h>

#include "fastmath.h"

/* Query rows and key rows per tile. A (TILE, TILE) block of scores is 16 KiB,
 * so the blocks of one tile pair stay in L1/L2 while hs-long rows stream by. */
#define TILE 64
/* Head dimensions per transposed key chunk in tile_scores (TILE*HS_CHUNK floats). */
#define HS_CHUNK 64

typedef float Block[TILE][TILE];

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* c (M, N) += a (M, K) @ b (K, N): every tile matmul below. a's element (i, k)
 * is a[i * a_rs + k * a_cs], so a block is used as it is (a_rs = TILE, a_cs = 1)
 * or transposed (1, TILE) without a copy; b and c have row strides ldb, ldc.
 * An mr x NR block of c stays in registers while k runs, each a[i, k] broadcast against the
 * block's row of b: 2x the speed of a row-at-a-time axpy.
 * fmaf, not a * b + c: -std=c11 turns off GCC's contraction into FMA. */
#ifdef __AVX512F__
/* AVX-512: 8 rows x 32 columns, 16 zmm sums, two loads of b and 8 broadcasts of a for 16 FMAs.
 * Written in intrinsics: for this loop GCC's own vectors are 256 bits wide on Intel cores
 * (-mprefer-vector-width), and the kernels ran at half the width (BENCHMARKS.md). Columns past
 * N are masked off, rows past the last 8 go one at a time. */
#define MR 8
#define NR 32

static inline __attribute__((always_inline)) void gemm_block(
        const float *restrict a, int64_t a_rs, int64_t a_cs, const float *restrict b, int64_t ldb,
        float *restrict c, int64_t ldc, int64_t i0, int64_t j0, int64_t K, const int mr,
        __mmask16 m0, __mmask16 m1) {
    __m512 lo[MR], hi[MR];                                         // (mr, NR) block of c
    for (int r = 0; r < mr; r++) {
        lo[r] = _mm512_maskz_loadu_ps(m0, c + (i0 + r) * ldc + j0);
        hi[r] = _mm512_maskz_loadu_ps(m1, c + (i0 + r) * ldc + j0 + 16);
    }
    for (int64_t k = 0; k < K; k++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * ldb + j0);
        __m512 b1 = _mm512_maskz_loadu_ps(m1, b + k * ldb + j0 + 16);
        for (int r = 0; r < mr; r++) {
            __m512 ark = _mm512_set1_ps(a[(i0 + r) * a_rs + k * a_cs]);
            lo[r] = _mm512_fmadd_ps(ark, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(ark, b1, hi[r]);
        }
    }
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + (i0 + r) * ldc + j0, m0, lo[r]);
        _mm512_mask_storeu_ps(c + (i0 + r) * ldc + j0 + 16, m1, hi[r]);
    }
}

static void gemm_acc(const float *restrict a, int64_t a_rs, int64_t a_cs, const float *restrict b,
                     int64_t ldb, float *restrict c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
    for (int64_t j0 = 0; j0 < N; j0 += NR) {
        __mmask16 m0 = lanes16(N - j0), m1 = N - j0 > 16 ? lanes16(N - j0 - 16) : 0;
        int64_t i0 = 0;
        for (; i0 + MR <= M; i0 += MR) gemm_block(a, a_rs, a_cs, b, ldb, c, ldc, i0, j0, K, MR, m0, m1);
        for (; i0 < M; i0++) gemm_block(a, a_rs, a_cs, b, ldb, c, ldc, i0, j0, K, 1, m0, m1);
    }
}
#else
/* NR floats are two AVX2 registers; MR rows hide the FMA latency and fill the register file
 * without spilling: AVX2's 16 hold 6 rows (12 sums, 2 of b, 1 of a): at 8 rows GCC spilled 3
 * sums to the stack on every k (Zen 3). 64-row tiles then end in a block of 4 rows (60 + 4).
 * The k loop is unrolled 4 times: 64^3 in L1 went 65 -> 77 GFLOP/s on one Zen 3 core (8 rows:
 * 48). */
#define MR 6
#define NR 16

/* The mr x NR block of c at row i0, column j0 (mr a constant where inlined: its loops unroll). */
static inline __attribute__((always_inline)) void gemm_block(
        const float *restrict a, int64_t a_rs, int64_t a_cs, const float *restrict b, int64_t ldb,
        float *restrict c, int64_t ldc, int64_t i0, int64_t j0, int64_t K, const int mr) {
    float acc[MR][NR];                                             // (mr, NR) block of c
    for (int r = 0; r < mr; r++)
#pragma omp simd
        for (int j = 0; j < NR; j++) acc[r][j] = c[(i0 + r) * ldc + j0 + j];
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; k++) {
        const float *bk = b + k * ldb + j0;
        for (int r = 0; r < mr; r++) {
            float ark = a[(i0 + r) * a_rs + k * a_cs];
#pragma omp simd
            for (int j = 0; j < NR; j++) acc[r][j] = fmaf(ark, bk[j], acc[r][j]);
        }
    }
    for (int r = 0; r < mr; r++)
#pragma omp simd
        for (int j = 0; j < NR; j++) c[(i0 + r) * ldc + j0 + j] = acc[r][j];
}

static void gemm_acc(const float *restrict a, int64_t a_rs, int64_t a_cs, const float *restrict b,
                     int64_t ldb, float *restrict c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
    int64_t M_full = 0, N_full = N - N % NR;
    for (; M_full + MR <= M; M_full += MR)
        for (int64_t j0 = 0; j0 < N_full; j0 += NR)
            gemm_block(a, a_rs, a_cs, b, ldb, c, ldc, M_full, j0, K, MR);
    for (; M_full + 4 <= M; M_full += 4)                           // a tile's last 4 rows
        for (int64_t j0 = 0; j0 < N_full; j0 += NR)
            gemm_block(a, a_rs, a_cs, b, ldb, c, ldc, M_full, j0, K, 4);
    for (int64_t i = 0; i < M; i++) {                             // the edges: rows past M_full,
        int64_t j_start = i < M_full ? N_full : 0;                 // columns past N_full
        float *ci = c + i * ldc;
        for (int64_t k = 0; k < K; k++) {
            float aik = a[i * a_rs + k * a_cs];
            const float *bk = b + k * ldb;
#pragma omp simd
            for (int64_t j = j_start; j < N; j++) ci[j] = fmaf(aik, bk[j], ci[j]);
        }
    }
}
#endif

#ifdef __AVX512F__
/* dst[d][j] = src[j * ld + d] for a 16 x 16 block: rows j < nj and dimensions d < nd of src,
 * rows past nj read as 0; dst's rows ldd floats apart, rows d >= nd not written. In registers
 * (unpack, then 128-bit lane shuffles), where a float at a time was a third of tile_scores. */
static void transpose16(const float *src, int64_t ld, int64_t nj, int64_t nd, float *dst,
                        int64_t ldd) {
    __m512 r[16], t[16];
    __mmask16 m = lanes16(nd);
    for (int j = 0; j < 16; j++)
        r[j] = j < nj ? _mm512_maskz_loadu_ps(m, src + j * ld) : _mm512_setzero_ps();
    for (int j = 0; j < 16; j += 2) {                              // pairs of rows interleaved
        t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 16; j += 4) {                              // 4 rows' d, d + 4, d + 8, d + 12
        r[j] = _mm512_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 1] = _mm512_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[j + 2] = _mm512_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[j + 3] = _mm512_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; j++) {                                  // 8 rows' d and d + 8
        t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
        t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
        t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
        t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xdd);
    }
    for (int j = 0; j < 8; j++) {                                  // all 16 rows' d
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
    for (int d = 0; d < nd && d < 16; d++) _mm512_storeu_ps(dst + d * ldd, r[d]);
}
#endif

/* s (na, TILE) = a (na, hs) @ b (nb, hs)^T, columns past nb 0, a's and b's rows lda and ldb
 * floats apart: the scores Q K^T or dp = dout V^T of one tile pair. b is transposed HS_CHUNK
 * dimensions at a time so that gemm_acc runs along TILE contiguous columns. */
static void tile_scores(const float *a, int64_t lda, int64_t na, const float *b, int64_t ldb,
                        int64_t nb, int64_t hs, Block s) {
    float bt[HS_CHUNK][TILE] __attribute__((aligned(64)));        // (HS_CHUNK, TILE) b^T chunk
    for (int64_t i = 0; i < na; i++) memset(s[i], 0, sizeof(s[i]));
    for (int64_t d0 = 0; d0 < hs; d0 += HS_CHUNK) {
        int64_t nd = min64(HS_CHUNK, hs - d0);
#ifdef __AVX512F__
        for (int64_t j = 0; j < TILE; j += 16)                     // columns past nb score 0
            for (int64_t d = 0; d < nd; d += 16)
                transpose16(b + j * ldb + d0 + d, ldb, nb - j, nd - d, &bt[d][j], TILE);
#else
        if (nb < TILE) memset(bt, 0, sizeof(bt));                  // columns past nb score 0
        for (int64_t j = 0; j < nb; j++)
            for (int64_t d = 0; d < nd; d++) bt[d][j] = b[j * ldb + d0 + d];
#endif
        gemm_acc(a + d0, lda, 1, &bt[0][0], TILE, &s[0][0], TILE, na, TILE, nd);
    }
}

#endif
