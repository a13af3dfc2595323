/* matmul_bf16.c: out = op(a) @ op(b) in mixed precision: bfloat16 operands, float32 sums.
 *
 * What it is: the bf16 twin of matmul.c's GEMM, for the Linear layers of a `--dtype bf16` run,
 * and bf16_gemm_acc (bf16.h), the same micro-kernel 8 rows tall on one thread for attention's tiles.
 * Packing converts the float32 operands to bfloat16 (round to nearest even, subnormals to zero:
 * what vcvtne2ps2bf16 does, and numpy_kernels.bf16_round defines) and lays them out as pairs:
 * a 32-bit word holds two bf16 neighbours along K, the unit vdpbf16ps multiplies,
 *   acc[j] += a[2p] * b[2p][j] + a[2p + 1] * b[2p + 1][j]   (16 float32 lanes j, exact products)
 * An odd K gets a zero partner. The micro-kernel is 12 rows x 32 columns of float32 sums in 24
 * zmm registers, like matmul.c's; per K pair it broadcasts one word of A and loads two of B.
 * Blocking: all of op(b) is packed once (in parallel), then each thread takes whole row blocks
 * of out: for each KC-deep slice it packs its A block and sweeps the packed B in NC-wide blocks
 * (KC x NC bf16 = 512 KiB stays in L2 while 12-row A panels, 12 KiB, stay in L1).
 * Paths (the `path` argument, chosen in Python from cpu_features()): CPU_AVX512_BF16 runs the
 * above; 0 runs the float32 GEMM with the operands rounded to bf16 values as it packs them
 * (matmul_rounded; products of bf16 values are exact in float32, so the numbers mean the same;
 * this is what a CPU without bf16 instructions gets, at fp32 speed: no extra pass or copy).
 * CPU_AMX_BF16 runs matmul_amx.c's tile kernel. A path the CPU lacks falls to the next one down.
 *
 * What it is not: faster than float32 without bf16 instructions, or bit-identical to NumPy (the
 * sums run in another order; the conversion is bit-identical, tests/test_c_matmul_bf16.py).
 *
 * Read next: cpu.c (the features), matmul.c (the float32 GEMM this follows), tinyllm.h.
 */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "parallel.h"
#include "tinyllm.h"
#include "avx512.h"
#include "amx.h"
#include "bf16.h"

void f32_to_bf16(const float *x, uint16_t *y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++) y[i] = bf16_bits(x[i]);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MR 12
#define NR 32
#ifndef BF16_KC         /* K per block (256 pairs): A panel 12 KiB (L1), B block 512 KiB (L2) */
#define BF16_KC 512
#endif
#ifndef BF16_NC
#define BF16_NC 512
#endif
#define KC BF16_KC
#define NC BF16_NC
#define MC (MR * 128)   /* rows of out per piece of work at most */
#define PARALLEL_MIN_FMAS (1 << 18)
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* Pack a rows x depth block (element (r, q) at x[r * rs + q * qs], one of rs, qs is 1) as
 * ceil(rows / w) panels of ceil(depth / 2) pair words x w, zero-padded: the order the
 * micro-kernel reads. Panel of n <= w rows: */
TARGET_BF16 void bf16_pack_panel(const float *restrict x, int64_t rs, int64_t qs, int64_t n,
                                 int64_t depth, int w, uint32_t *restrict dst) {
    /* word j of the result = (lo[j], hi[j]): even lanes from lo, odd from hi */
    const __m512i interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int r0 = 0; r0 < w; r0 += 16) {
        __mmask16 store = lanes(w - r0);
        if (qs == 1) {      /* K runs along memory: 32 values -> 16 words, 16 rows transposed */
            for (int64_t q = 0; q < depth; q += 32) {
                int64_t nq = depth - q < 32 ? depth - q : 32;
                __m512 v[16];
                for (int i = 0; i < 16; i++) {
                    const float *row = x + (r0 + i) * rs + q;
                    v[i] = r0 + i < n ? _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(
                                            _mm512_maskz_loadu_ps(lanes(nq - 16), row + 16),
                                            _mm512_maskz_loadu_ps(lanes(nq), row)))
                                      : _mm512_setzero_ps();
                }
                transpose16(v);
                for (int j = 0; j < (nq + 1) / 2; j++)
                    _mm512_mask_storeu_ps(dst + (q / 2 + j) * w + r0, store, v[j]);
            }
        } else {            /* rows run along memory: two K steps -> 16 words, interleaved */
            __mmask16 valid = lanes(n - r0);
            for (int64_t p = 0; p < (depth + 1) / 2; p++) {
                __m512 lo = _mm512_maskz_loadu_ps(valid, x + 2 * p * qs + r0);
                __m512 hi = 2 * p + 1 < depth ? _mm512_maskz_loadu_ps(valid, x + (2 * p + 1) * qs + r0)
                                              : _mm512_setzero_ps();
                __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);   /* lo's 16, then hi's */
                _mm512_mask_storeu_epi32(dst + p * w + r0, store,
                                         _mm512_permutexvar_epi16(interleave, both));
            }
        }
    }
}

TARGET_BF16 static void pack(const float *x, int64_t rs, int64_t qs, int64_t rows, int64_t depth,
                             int w, uint32_t *dst) {
    int64_t pairs = (depth + 1) / 2;
    for (int64_t r0 = 0; r0 < rows; r0 += w)
        bf16_pack_panel(x + r0 * rs, rs, qs, rows - r0 < w ? rows - r0 : w, depth, w, dst + r0 * pairs);
}

/* c[0:mr, 0:NR] (row stride ldc) = (accumulate ? c : 0) + ap @ bp over kp pairs of K; mr is a
 * constant where it is inlined (MR for matmul_bf16, TILE_MR for attention's tiles), so its
 * mr x 2 sums live in registers. */
TARGET_BF16 static inline __attribute__((always_inline)) void kernel(
    int mr, int64_t kp, const uint32_t *restrict ap, const uint32_t *restrict bp,
    float *restrict c, int64_t ldc, int accumulate) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {   /* out's tile is needed after kp steps: fetch it now */
        __builtin_prefetch(c + i * ldc, 1);
        __builtin_prefetch(c + i * ldc + 16, 1);
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(bp), b1 = (__m512bh)_mm512_load_si512(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
        ap += mr;
        bp += NR;
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < 2; j++) {
            float *cij = c + i * ldc + j * 16;
            _mm512_storeu_ps(cij, accumulate ? _mm512_add_ps(_mm512_loadu_ps(cij), acc[i][j])
                                             : acc[i][j]);
        }
}

/* One tile of out, mr x nr valid (of MR x NR, or TILE_MR x NR when small): edge tiles go
 * through a scratch tile, then are clipped. */
#define TILE_MR 8
TARGET_BF16 static void tile(int small, int64_t kp, const uint32_t *ap, const uint32_t *bp,
                             float *c, int64_t ldc, int64_t mr, int64_t nr, int accumulate) {
    int full = small ? TILE_MR : MR;
    _Alignas(64) float scratch[MR * NR];
    int edge = mr < full || nr < NR;
    float *dst = edge ? scratch : c;
    int64_t ld = edge ? NR : ldc;
    if (small)
        kernel(TILE_MR, kp, ap, bp, dst, ld, accumulate && !edge);
    else
        kernel(MR, kp, ap, bp, dst, ld, accumulate && !edge);
    if (!edge) return;
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + scratch[i * NR + j];
}

/* out[m0:m1, :] (N columns) = A[m0:m1, :] @ B over all of K; bp holds B packed by K blocks of
 * KC: block pc is (KC / 2) pair rows of every NR panel, panels back to back (np columns). */
TARGET_BF16 static void row_block(const float *a, int64_t ars, int64_t aqs, const uint32_t *bp,
                                  float *out, int64_t N, int64_t np, int64_t K, int64_t m0,
                                  int64_t m1, uint32_t *ap) {
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = K - pc < KC ? K - pc : KC, kp = (kc + 1) / 2;
        pack(a + m0 * ars + pc * aqs, ars, aqs, m1 - m0, kc, MR, ap);
        const uint32_t *bk = bp + pc / 2 * np;
        for (int64_t jc = 0; jc < N; jc += NC)
            for (int64_t ir = 0; ir < m1 - m0; ir += MR)
                for (int64_t jr = jc; jr < N && jr < jc + NC; jr += NR)
                    tile(0, kp, ap + ir * kp, bk + jr * kp, out + (m0 + ir) * N + jr, N,
                         m1 - m0 - ir < MR ? m1 - m0 - ir : MR, N - jr < NR ? N - jr : NR, pc > 0);
    }
}

TARGET_BF16 static void avx512_bf16(const float *a, const float *b, float *out, int64_t batch,
                                    int64_t M, int64_t N, int64_t K, int transpose_a,
                                    int transpose_b) {
    int threads = gemm_threads(batch * M * N * K, PARALLEL_MIN_FMAS);
    /* row blocks: whole MR tiles, at most MC rows, and enough of them to keep every thread busy */
    int64_t per_matrix = (threads + batch - 1) / batch, mt = (M + MR - 1) / MR;
    int64_t rows = ((mt + per_matrix - 1) / per_matrix) * MR;
    rows = rows < MC ? rows : MC;
    int64_t blocks = (M + rows - 1) / rows, np = (N + NR - 1) / NR * NR, kp = (K + 1) / 2;
    int64_t b_size = np * kp, a_size = (rows * (KC / 2) + 15) / 16 * 16;
    uint32_t *bp = aligned_alloc(64, (size_t)(batch * b_size + threads * a_size) * 4);
    if (!bp) {
        for (int64_t i = 0; i < batch * M * N; i++) out[i] = NAN;
        return;
    }
    int64_t brs = transpose_b ? K : 1, bqs = transpose_b ? 1 : N;   /* B's rows: out's columns */
    int64_t ars = transpose_a ? 1 : K, aqs = transpose_a ? M : 1;
    int64_t kblocks = (K + KC - 1) / KC, panels = np / NR;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = thread_index();
#pragma omp for schedule(static) collapse(2)
        for (int64_t bk = 0; bk < batch * kblocks; bk++)
            for (int64_t j = 0; j < panels; j++) {
                int64_t bi = bk / kblocks, pc = bk % kblocks * KC;
                int64_t kc = K - pc < KC ? K - pc : KC, n = N - j * NR < NR ? N - j * NR : NR;
                bf16_pack_panel(b + bi * K * N + j * NR * brs + pc * bqs, brs, bqs, n, kc, NR,
                           bp + bi * b_size + pc / 2 * np + j * NR * ((kc + 1) / 2));
            }
        uint32_t *ap = bp + batch * b_size + t * a_size;
#pragma omp for schedule(static)
        for (int64_t piece = 0; piece < batch * blocks; piece++) {
            int64_t bi = piece / blocks, m0 = piece % blocks * rows;
            int64_t m1 = m0 + rows < M ? m0 + rows : M;
            row_block(a + bi * M * K, ars, aqs, bp + bi * b_size, out + bi * M * N, N, np, K, m0,
                      m1, ap);
        }
    }
    free(bp);
}

/* bf16.h: c += A @ B for attention's tiles, one thread, blocks packed on the stack. */
TARGET_BF16 void bf16_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b,
                               int64_t b_ks, int64_t b_js, float *c, int64_t ldc, int64_t M,
                               int64_t N, int64_t K) {
    enum { ROWS = 64, DEPTH = 128 };   /* a block of A or of B: 64 rows x 128 K, 16 KiB */
    _Alignas(64) uint32_t ap[ROWS * DEPTH / 2], bp[ROWS * DEPTH / 2];
    for (int64_t pc = 0; pc < K; pc += DEPTH) {
        int64_t kc = K - pc < DEPTH ? K - pc : DEPTH, kp = (kc + 1) / 2;
        for (int64_t ic = 0; ic < M; ic += ROWS) {
            int64_t mc = M - ic < ROWS ? M - ic : ROWS;
            pack(a + ic * a_rs + pc * a_ks, a_rs, a_ks, mc, kc, TILE_MR, ap);
            for (int64_t jc = 0; jc < N; jc += ROWS) {
                int64_t nc = N - jc < ROWS ? N - jc : ROWS;
                pack(b + jc * b_js + pc * b_ks, b_js, b_ks, nc, kc, NR, bp);
                for (int64_t ir = 0; ir < mc; ir += TILE_MR)
                    for (int64_t jr = 0; jr < nc; jr += NR)
                        tile(1, kp, ap + ir * kp, bp + jr * kp, c + (ic + ir) * ldc + jc + jr, ldc,
                             mc - ir < TILE_MR ? mc - ir : TILE_MR, nc - jr < NR ? nc - jr : NR, 1);
            }
        }
    }
}
#else
void bf16_pack_panel(const float *x, int64_t rs, int64_t qs, int64_t n, int64_t depth, int w,
                     uint32_t *dst) {}
void bf16_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b, int64_t b_ks,
                   int64_t b_js, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K) {}
#endif

void matmul_bf16(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                 int64_t K, int transpose_a, int transpose_b, int path) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0) {                   /* an empty sum: matmul writes the zeros */
        matmul(a, b, out, batch, M, N, K, transpose_a, transpose_b);
        return;
    }
    int features = cpu_features();
    if (path == CPU_AMX_BF16 && (features & CPU_AMX_BF16)) {
        matmul_amx(a, b, out, batch, M, N, K, transpose_a, transpose_b);
        return;
    }
    if (path && (features & CPU_AVX512_BF16)) {   /* vdpbf16ps: asked for, or the next one below AMX */
#if defined(__x86_64__) && defined(__GNUC__)
        avx512_bf16(a, b, out, batch, M, N, K, transpose_a, transpose_b);
        return;
#endif
    }
    /* path 0: the operands rounded to bf16 values as the float32 GEMM packs them */
    matmul_rounded(a, b, out, batch, M, N, K, transpose_a, transpose_b, 1);
}
