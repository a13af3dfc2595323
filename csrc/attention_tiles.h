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
 * An mr x NR block of c stays in registers while k runs (NR floats are one
 * AVX-512 register, two AVX2 ones; MR rows hide the FMA latency): 2x the speed of a
 * row-at-a-time axpy, which still takes the edges that do not fill a block.
 * MR fills the register file without spilling: AVX-512's 32 registers hold 8 rows
 * (8 sums); AVX2's 16 hold 6 rows (12 sums, 2 of b, 1 of a): at 8 rows GCC spilled 3 sums
 * to the stack on every k (Zen 3). 64-row tiles then end in a block of 4 rows (60 + 4).
 * On AVX2 the k loop is also unrolled 4 times: 64^3 in L1 went 65 -> 77 GFLOP/s on one Zen 3
 * core (8 rows: 48).
 * fmaf, not a * b + c: -std=c11 turns off GCC's contraction into FMA. */
#ifdef __AVX512F__
#define MR 8
#define UNROLL_K
#else
#define MR 6
#define UNROLL_K _Pragma("GCC unroll 4")
#endif
#define NR 16

/* The mr x NR block of c at row i0, column j0 (mr a constant where inlined: its loops unroll). */
static inline __attribute__((always_inline)) void gemm_block(
        const float *restrict a, int64_t a_rs, int64_t a_cs, const float *restrict b, int64_t ldb,
        float *restrict c, int64_t ldc, int64_t i0, int64_t j0, int64_t K, const int mr) {
    float acc[MR][NR];                                             // (mr, NR) block of c
    for (int r = 0; r < mr; r++)
#pragma omp simd
        for (int j = 0; j < NR; j++) acc[r][j] = c[(i0 + r) * ldc + j0 + j];
    UNROLL_K
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
    for (; M_full + 4 <= M; M_full += 4)                           // AVX2: a tile's last 4 rows
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

/* s (na, TILE) = a (na, hs) @ b (nb, hs)^T, columns past nb 0, a's and b's rows lda and ldb
 * floats apart: the scores Q K^T or dp = dout V^T of one tile pair. b is transposed HS_CHUNK
 * dimensions at a time so that gemm_acc runs along TILE contiguous columns. */
static void tile_scores(const float *a, int64_t lda, int64_t na, const float *b, int64_t ldb,
                        int64_t nb, int64_t hs, Block s) {
    float bt[HS_CHUNK][TILE];                                      // (HS_CHUNK, TILE) b^T chunk
    for (int64_t i = 0; i < na; i++) memset(s[i], 0, sizeof(s[i]));
    for (int64_t d0 = 0; d0 < hs; d0 += HS_CHUNK) {
        int64_t nd = min64(HS_CHUNK, hs - d0);
        if (nb < TILE) memset(bt, 0, sizeof(bt));                  // columns past nb score 0
        for (int64_t j = 0; j < nb; j++)
            for (int64_t d = 0; d < nd; d++) bt[d][j] = b[j * ldb + d0 + d];
        gemm_acc(a + d0, lda, 1, &bt[0][0], TILE, &s[0][0], TILE, na, TILE, nd);
    }
}

#endif
