/* matmul_amx.c: out = op(a) @ op(b) on Intel AMX tiles: bfloat16 operands, float32 sums.
 *
 * What it is: matmul_bf16's path for CPUs with AMX-BF16 (Sapphire Rapids and later), where one
 * TDPBF16PS multiplies a 16 x 32 bf16 tile of A by a 32 x 16 tile of B into 16 x 16 float32
 * sums: 16 x 16 x 32 multiply-adds per instruction (amx.h defines it). The kernel keeps a
 * 32 x 32 block of out in four accumulator tiles (tmm0-3), and for every 32 steps of K loads
 * two tiles of A (tmm4-5: rows 0-15, 16-31) and two of B (tmm6-7: columns 0-15, 16-31):
 *   tmm0 += A0 B0   tmm1 += A0 B1   tmm2 += A1 B0   tmm3 += A1 B1
 * Packing rounds the float32 operands to bf16 (bf16.h's bf16_bits: round to nearest even,
 * subnormals to zero, the rounding of every bf16 path) and lays them out as tiles read them:
 *   B: each 32-column panel as pairs of K steps (a 32-bit word holds op(b)[2p][n] low and
 *      op(b)[2p + 1][n] high), 32 words a row: a tile of 16 columns is 16 rows at stride 128 B
 *      (bf16_pack_panel's layout, the one the AVX512-BF16 kernel reads);
 *   A: each 32-row block row by row, pairs along K: a tile is 16 rows at stride kp words.
 * Blocking, as matmul_bf16.c's: K in slices of KC (256 pairs, zero-padded to whole tiles), all of
 * op(b) packed once (in parallel) slice by slice; each thread takes row blocks of out, packs its
 * A block for one K slice (32 x KC bf16 = 32 KiB a 32-row block: stays in L1 while it sweeps
 * the B panels, 32 KiB each, of an NC-wide block in L2), and adds the slice's sums into out
 * through the accumulator tiles. Edge blocks go through a scratch block and are clipped.
 * Packing is vectorized (vcvtne2ps2bf16) where the CPU has AVX512-BF16, which every AMX CPU
 * has; the plain C packing below is what amx.h's emulation runs on other CPUs, bit for bit the
 * same layout. The tile configuration is per thread: each thread loads it before its first
 * tile and releases the tiles after its last.
 *
 * What it is not: bit-identical to NumPy. The sums run in another order: results agree with
 * the float64 product of the rounded operands to float32 rounding (tests/test_c_matmul_bf16.py,
 * and tests/test_c_matmul_amx.py through the emulation on any CPU).
 *
 * Read next: amx.h (the tiles), matmul_bf16.c (the AVX512-BF16 twin and the dispatch).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "amx.h"
#include "avx512.h"
#include "bf16.h"
#include "parallel.h"
#include "tinyllm.h"

#ifdef AMX_BUILT
#define TB 32                       /* rows of an A block, columns of a B panel */
#define TKP 16                      /* K pairs in one tile row: 32 bf16 = 64 bytes */
#define KCP 256                     /* K pairs in one slice */
#define NC 1024                     /* columns of out per sweep of an A block: B block 1 MiB */
#define MC (TB * 8)                 /* rows of out per piece of work at most */
#define PARALLEL_MIN_FMAS (1 << 18)

typedef struct {                    /* op(x)(r, q) = x[r * rs + q * qs]: r along M or N, q along K */
    const float *x;
    int64_t rs, qs;
} operand;

static uint32_t pair(operand o, int64_t r, int64_t q, int64_t depth) {
    uint32_t lo = bf16_bits(o.x[r * o.rs + q * o.qs]);
    uint32_t hi = q + 1 < depth ? bf16_bits(o.x[r * o.rs + (q + 1) * o.qs]) : 0;
    return lo | hi << 16;
}

/* The plain C packers: n rows (of w) x depth values of o, kp >= ceil(depth / 2) pairs, zero
 * padded. B: dst[p * w + r]; A: dst[r * kp + p]. */
static void pack_b_c(operand o, int64_t n, int64_t depth, int64_t kp, uint32_t *dst) {
    for (int64_t p = 0; p < kp; p++)
        for (int64_t r = 0; r < TB; r++) dst[p * TB + r] = r < n && 2 * p < depth ? pair(o, r, 2 * p, depth) : 0;
}

static void pack_a_c(operand o, int64_t n, int64_t depth, int64_t kp, int64_t ld, uint32_t *dst) {
    for (int64_t r = 0; r < TB; r++)
        for (int64_t p = 0; p < kp; p++) dst[r * ld + p] = r < n && 2 * p < depth ? pair(o, r, 2 * p, depth) : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
/* pack_a_c's layout with vcvtne2ps2bf16. K along memory (qs 1): a row's 32 values convert to
 * 16 consecutive pair words. Rows along memory: bf16_pack_panel lays 16 rows x 16 pairs out
 * pair by pair (B's layout), and a 16 x 16 transpose puts each row's pairs together. */
TARGET_BF16 static void pack_a_avx512(operand o, int64_t n, int64_t depth, int64_t kp, int64_t ld,
                                      uint32_t *dst) {
    if (o.qs == 1) {
        for (int64_t r = 0; r < TB; r++)
            for (int64_t q = 0; q < 2 * kp; q += 32) {
                const float *row = o.x + r * o.rs + q;
                int64_t nq = r < n ? depth - q : 0;
                __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(lanes(nq - 16), row + 16),
                                                 _mm512_maskz_loadu_ps(lanes(nq), row));
                _mm512_storeu_si512(dst + r * ld + q / 2, (__m512i)v);
            }
        return;
    }
    for (int r0 = 0; r0 < TB; r0 += 16)
        for (int64_t p0 = 0; p0 < kp; p0 += 16) {
            int64_t rows = n - r0 < 16 ? n - r0 : 16, left = depth - 2 * p0;
            __m512 v[16];   /* v[p]: pair p0 + p of the 16 rows, then row r0 + i's 16 pairs */
            memset(v, 0, sizeof v);
            if (rows > 0 && left > 0)
                bf16_pack_panel(o.x + 2 * p0 * o.qs + r0, 1, o.qs, rows, left < 32 ? left : 32, 16,
                                (uint32_t *)v);
            transpose16(v);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (r0 + i) * ld + p0, v[i]);
        }
}
#endif

static int vector_packing(void) {   /* every AMX CPU has AVX512-BF16; the emulation may not */
    return (cpu_features() & CPU_AVX512_BF16) != 0;
}

static void pack_a(operand o, int64_t n, int64_t depth, int64_t kp, int64_t ld, uint32_t *dst) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vector_packing()) {
        pack_a_avx512(o, n, depth, kp, ld, dst);
        return;
    }
#endif
    pack_a_c(o, n, depth, kp, ld, dst);
}

static void pack_b(operand o, int64_t n, int64_t depth, int64_t kp, uint32_t *dst) {
    if (!vector_packing()) {
        pack_b_c(o, n, depth, kp, dst);
        return;
    }
    int64_t written = depth > 0 ? (depth + 1) / 2 : 0;
    if (written) bf16_pack_panel(o.x, o.rs, o.qs, n, depth, TB, dst);
    memset(dst + written * TB, 0, (size_t)((kp - written) * TB) * 4);
}

TARGET_AMX static void set_tiles(void) {
    tile_config cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) {   /* every tile 16 rows x 64 bytes */
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* c (row stride ldc, mr x nr valid) (+)= the A block ap @ the B panel bp over kp pairs. */
TARGET_AMX static void block(const uint32_t *ap, const uint32_t *bp, int64_t kp, float *c,
                             int64_t ldc, int64_t mr, int64_t nr, int accumulate) {
    _Alignas(64) float scratch[TB * TB];
    int edge = mr < TB || nr < TB;
    float *dst = edge ? scratch : c;
    int64_t ld = edge ? TB : ldc;
    if (accumulate) {
        if (edge)
            for (int64_t i = 0; i < TB; i++)
                for (int64_t j = 0; j < TB; j++) scratch[i * TB + j] = i < mr && j < nr ? c[i * ldc + j] : 0;
        _tile_loadd(0, dst, ld * 4);
        _tile_loadd(1, dst + 16, ld * 4);
        _tile_loadd(2, dst + 16 * ld, ld * 4);
        _tile_loadd(3, dst + 16 * ld + 16, ld * 4);
    } else {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    }
    for (int64_t p0 = 0; p0 < kp; p0 += TKP) {
        _tile_loadd(4, ap + p0, kp * 4);
        _tile_loadd(5, ap + TKP * kp + p0, kp * 4);
        _tile_loadd(6, bp + p0 * TB, TB * 4);
        _tile_loadd(7, bp + p0 * TB + 16, TB * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, dst, ld * 4);
    _tile_stored(1, dst + 16, ld * 4);
    _tile_stored(2, dst + 16 * ld, ld * 4);
    _tile_stored(3, dst + 16 * ld + 16, ld * 4);
    if (!edge) return;
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = scratch[i * TB + j];
}

/* An operand whose rows run along memory (rs 1: a transposed a, as dy^T in a dW product, or
 * b (K, N)) is packed CHUNK pairs of K steps at a time across all its blocks or panels, not
 * block by block over the whole slice: each K step is a run of rows read qs floats apart, and
 * block by block every step touched a new page (qs = 8192 at the lm_head's dW) and each cache
 * line was read again for the next block. The same reordering as matmul.c's pack(). */
#define CHUNK TKP

/* rows x one K slice (depth values, kp pairs) of op(a) into ap: 32-row blocks, kp words a row. */
static void pack_a_block(operand o, int64_t rows, int64_t depth, int64_t kp, uint32_t *ap) {
    int64_t chunk = o.rs == 1 ? CHUNK : kp;
    for (int64_t c = 0; c < kp; c += chunk) {
        int64_t pairs = kp - c < chunk ? kp - c : chunk, left = depth - 2 * c;
        for (int64_t r = 0; r < rows; r += TB) {
            operand oc = {o.x + r * o.rs + 2 * c * o.qs, o.rs, o.qs};
            pack_a(oc, rows - r < TB ? rows - r : TB, left < 2 * pairs ? left : 2 * pairs, pairs,
                   kp, ap + r * kp + c);
        }
    }
}

/* Item `item` of op(b)'s packing (matmul_amx deals them out over the threads): one matrix's one
 * K slice, and of it one chunk of pairs for every panel (rows along memory) or the whole slice
 * for one panel (K along memory: a panel's rows are then read in order). */
static void pack_b_item(const float *b, int64_t brs, int64_t bqs, int64_t N, int64_t K,
                        int64_t kpad, int64_t item, uint32_t *bp) {
    int64_t panels = (N + TB - 1) / TB, slices = (kpad + KCP - 1) / KCP;
    int64_t chunk = brs == 1 ? CHUNK : KCP, group = brs == 1 ? panels : 1;
    int64_t chunks = KCP / chunk, groups = panels / group;
    int64_t bi = item / (slices * chunks * groups), s0 = item / (chunks * groups) % slices * KCP;
    int64_t p0 = item / groups % chunks * chunk, g = item % groups;
    int64_t kp = kpad - s0 < KCP ? kpad - s0 : KCP;
    if (p0 >= kp) return;
    int64_t pairs = kp - p0 < chunk ? kp - p0 : chunk, q0 = 2 * (s0 + p0), left = K - q0;
    uint32_t *dst = bp + bi * panels * kpad * TB + s0 * panels * TB + p0 * TB;
    for (int64_t j = g * group; j < (g + 1) * group; j++) {
        operand ob = {b + bi * K * N + j * TB * brs + q0 * bqs, brs, bqs};
        pack_b(ob, N - j * TB < TB ? N - j * TB : TB, left < 2 * pairs ? left : 2 * pairs, pairs,
               dst + j * kp * TB);
    }
}

/* out rows m0 .. m1 (N columns) = op(a) rows m0 .. m1 @ op(b); bp holds op(b) packed slice by
 * slice (slice s: its pairs x 32 words for each of the panels, back to back), ap room for
 * MC rows x KCP pairs. */
TARGET_AMX static void row_block(operand oa, const uint32_t *bp, float *out, int64_t N, int64_t K,
                                 int64_t kpad, int64_t m0, int64_t m1, uint32_t *ap) {
    int64_t panels = (N + TB - 1) / TB;
    for (int64_t s0 = 0; s0 < kpad; s0 += KCP) {   /* s0: the slice's first pair */
        int64_t kp = kpad - s0 < KCP ? kpad - s0 : KCP, q0 = 2 * s0;
        int64_t depth = K - q0 < 2 * kp ? K - q0 : 2 * kp;
        operand o = {oa.x + m0 * oa.rs + q0 * oa.qs, oa.rs, oa.qs};
        pack_a_block(o, m1 - m0, depth, kp, ap);
        const uint32_t *bs = bp + s0 * panels * TB;
        for (int64_t jc = 0; jc < N; jc += NC)
            for (int64_t r = m0; r < m1; r += TB)
                for (int64_t j = jc / TB; j < panels && j * TB < jc + NC; j++)
                    block(ap + (r - m0) * kp, bs + j * kp * TB, kp, out + r * N + j * TB, N,
                          m1 - r < TB ? m1 - r : TB, N - j * TB < TB ? N - j * TB : TB, s0 > 0);
    }
}

/* amx_gemm_acc (bf16.h): bf16_gemm_acc's product on the tiles, on the calling thread, for
 * attention's tile products (64 x 64 x 64 and the like): both operands packed per call into
 * blocks on the stack, SMALL rows or columns by at most SMALL_KP pairs of K (16 KiB each). */
#define SMALL 64
#define SMALL_KP 64
static int64_t least(int64_t x, int64_t y) { return x < y ? x : y; }

TARGET_AMX void amx_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b,
                             int64_t b_ks, int64_t b_js, float *c, int64_t ldc, int64_t M,
                             int64_t N, int64_t K) {
    _Alignas(64) uint32_t ap[SMALL * SMALL_KP], bp[SMALL * SMALL_KP];
    set_tiles();
    for (int64_t q0 = 0; q0 < K; q0 += 2 * SMALL_KP) {
        int64_t depth = least(K - q0, 2 * SMALL_KP), kp = ((depth + 1) / 2 + TKP - 1) / TKP * TKP;
        for (int64_t j0 = 0; j0 < N; j0 += SMALL) {
            int64_t nc = least(N - j0, SMALL);
            for (int64_t j = 0; j < nc; j += TB) {   /* panel j / TB at bp + j * kp */
                operand ob = {b + q0 * b_ks + (j0 + j) * b_js, b_js, b_ks};
                pack_b(ob, least(nc - j, TB), depth, kp, bp + j * kp);
            }
            for (int64_t i0 = 0; i0 < M; i0 += SMALL) {
                int64_t mc = least(M - i0, SMALL);
                operand oa = {a + i0 * a_rs + q0 * a_ks, a_rs, a_ks};
                pack_a_block(oa, mc, depth, kp, ap);
                for (int64_t i = 0; i < mc; i += TB)
                    for (int64_t j = 0; j < nc; j += TB)
                        block(ap + i * kp, bp + j * kp, kp, c + (i0 + i) * ldc + j0 + j, ldc,
                              least(mc - i, TB), least(nc - j, TB), 1);
            }
        }
    }
    _tile_release();
}

TARGET_AMX void matmul_amx(const float *a, const float *b, float *out, int64_t batch, int64_t M,
                           int64_t N, int64_t K, int transpose_a, int transpose_b) {
    int threads = gemm_threads(batch * M * N * K, PARALLEL_MIN_FMAS);
    int64_t kpad = ((K + 1) / 2 + TKP - 1) / TKP * TKP;
    int64_t panels = (N + TB - 1) / TB, slices = (kpad + KCP - 1) / KCP;
    /* row blocks: whole 32-row blocks, at most MC rows, their count a multiple of the threads
     * a matrix has, so that every thread gets as many rows: 1152 rows in blocks of 256 were 5
     * pieces, 3 on one thread and 2 on the other (6 of 192 now) */
    int64_t per_matrix = (threads + batch - 1) / batch, mt = (M + TB - 1) / TB;
    int64_t blocks = (mt + MC / TB - 1) / (MC / TB);
    blocks = (blocks + per_matrix - 1) / per_matrix * per_matrix;
    int64_t rows = (mt + blocks - 1) / blocks * TB;
    blocks = (M + rows - 1) / rows;
    int64_t b_size = panels * kpad * TB, a_size = MC * KCP;
    uint32_t *bp = aligned_alloc(64, (size_t)(batch * b_size + threads * a_size) * 4);
    if (!bp) {   /* no error channel: make the failure visible */
        for (int64_t i = 0; i < batch * M * N; i++) out[i] = NAN;
        return;
    }
    int64_t brs = transpose_b ? K : 1, bqs = transpose_b ? 1 : N;   /* op(b)(k, n): rows are n */
    int64_t b_items = batch * slices * (brs == 1 ? KCP / CHUNK : panels);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = thread_index();
#pragma omp for schedule(static)
        for (int64_t item = 0; item < b_items; item++)
            pack_b_item(b, brs, bqs, N, K, kpad, item, bp);
        uint32_t *ap = bp + batch * b_size + t * a_size;
        set_tiles();
#pragma omp for schedule(static)
        for (int64_t piece = 0; piece < batch * blocks; piece++) {
            int64_t bi = piece / blocks, m0 = piece % blocks * rows;
            int64_t m1 = m0 + rows < M ? m0 + rows : M;
            operand oa = {a + bi * M * K, transpose_a ? 1 : K, transpose_a ? M : 1};
            row_block(oa, bp + bi * b_size, out + bi * M * N, N, K, kpad, m0, m1, ap);
        }
        _tile_release();
    }
    free(bp);
}
#else   /* not x86-64: cpu_features() never reports AMX, so nothing calls these */
void matmul_amx(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                int64_t K, int transpose_a, int transpose_b) {}
void amx_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b, int64_t b_ks,
                  int64_t b_js, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K) {}
#endif
