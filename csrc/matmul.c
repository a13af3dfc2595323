/* matmul.c: out = op(a) @ op(b), a GotoBLAS/BLIS-style float32 GEMM with OpenMP.
 *
 * What it is: the three cache-blocking loops around a register-tiled micro-kernel.
 *   for each NC-wide column block of op(b)
 *     for each KC-deep slice of K
 *       pack op(b)[slice, block] into NR-wide micro-panels   (B block, KC x NC: L2)
 *       for each MC-tall row block of op(a)
 *         pack op(a)[block, slice] into MR-tall micro-panels (A block, MC x KC: L2)
 *         for each MR micro-panel of the A block              (MR x KC: stays in L1)
 *           for each NR micro-panel of the B block            (KC x NR: streams from L2)
 *             micro-kernel: out's MR x NR tile += A panel @ B panel, in registers
 * Packing copies the operands into the order the micro-kernel reads them, contiguous and
 * 64-byte aligned, padded with zeros to whole MR/NR tiles; it also absorbs the transposes, so
 * all four (transpose_a, transpose_b) cases run the same micro-kernel. Edge tiles are computed
 * whole into a scratch tile and only their valid part is written back.
 * Few rows of out against op(b) = b^T (a prefill's x @ W^T, M <= SKINNY_MAX_ROWS) take
 * skinny.h's path instead: W read in place by the same micro-kernel, never packed; the same
 * path serves quant.c's matmul_q_f32, W's quantized rows widened a panel at a time.
 * Threads: out is cut into independent rectangles (per batch matrix, and within a matrix when
 * the batch alone does not keep every thread busy); each thread packs its own operands into
 * its own buffers, so there is no barrier and no shared writable state.
 *
 * What it is not: a BLAS. No alpha/beta, no strides other than row-major with the transposes,
 * float32 only. The arithmetic order differs from NumPy's, so results agree to rounding, not
 * bit for bit.
 *
 * Read next: tinyllm.h for the contract, numpy_kernels.py (matmul) for the meaning,
 * tests/test_c_matmul.py for the checks, examples/bench_matmul.py for the speed.
 */
#define _GNU_SOURCE   /* sysconf's cache sizes */
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "dequant.h"
#include "parallel.h"
#include "tinyllm.h"
#include "bf16.h"

/* ---------------------------------------------------------------------------------------------
 * The micro-kernel's vector vocabulary. One kernel body below is written in these names; each
 * instruction set gives them a meaning. MR x NR accumulators must fit in the register file with
 * room for the NV vectors of a B row and one broadcast of A:
 *   AVX-512: 32 zmm registers; 12 x 2 accumulators + 2 + 1 = 27.  (12 x 32 floats) 14 rows would
 *     fit too and run as fast (both reach the FMA peak, ~117 GFLOP/s per Zen 4 core, on cached
 *     panels), but the widths a transformer uses (384, 768, 1152, 1536) are multiples of 12, so
 *     12 leaves no half-empty edge tiles; with 14, 128-row attention tiles lose 9% to padding.
 *   AVX2+FMA: 16 ymm registers; 6 x 2 accumulators + 2 + 1 = 15.  (6 x 16 floats)
 *   portable C: "vectors" of one float that the compiler vectorizes along NR. (4 x 16 floats) */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vec;
#define VLEN 16
#define MR 12
#define NV 2
#define vload(p) _mm512_load_ps(p)
#define vloadu(p) _mm512_loadu_ps(p)
#define vstoreu(p, v) _mm512_storeu_ps(p, v)
#define vset1(x) _mm512_set1_ps(x)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b) _mm512_add_ps(a, b)
#define vzero() _mm512_setzero_ps()
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vec;
#define VLEN 8
#define MR 6
#define NV 2
#define vload(p) _mm256_load_ps(p)
#define vloadu(p) _mm256_loadu_ps(p)
#define vstoreu(p, v) _mm256_storeu_ps(p, v)
#define vset1(x) _mm256_set1_ps(x)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b) _mm256_add_ps(a, b)
#define vzero() _mm256_setzero_ps()
#else
typedef float vec;
#define VLEN 1
#define MR 4
#define NV 16
#define vload(p) (*(p))
#define vloadu(p) (*(p))
#define vstoreu(p, v) (*(p) = (v))
#define vset1(x) (x)
#define vfma(a, b, c) ((a) * (b) + (c))
#define vadd(a, b) ((a) + (b))
#define vzero() 0.0f
#endif
#define NR (NV * VLEN)

/* Cache blocks. Two orders of the two innermost loops, after where the operand reused most
 * stays: an A micro-panel in L1 while the whole packed B block streams past from L2 (AVX-512,
 * the order it was tuned in), or a B micro-panel in L1 while the A block streams past from L2
 * (BLIS's order, used for AVX2 and portable C). */
typedef struct {
    int64_t kc, nc, mc;   /* K per slice, columns of out per B block, rows per A block */
    int b_panel_in_l1;    /* the loop order: 1 = jr outer (BLIS), 0 = ir outer */
} blocks;

#if defined(__AVX512F__)
/* Zen 4/5 (32-48 KiB L1d and 1 MiB L2 per core, 32 MiB L3 shared), A panel in L1. Measured on
 * one core over the shapes of examples/bench_matmul.py, KC from 192 to 512 and NC from 256 to 768
 * came within 3% of each other; these leave the most headroom in each level.
 *   KC: an A micro-panel (MR x KC floats, 12 KiB) stays in L1 while B micro-panels stream past;
 *   NC: the packed B block (KC x NC floats, 512 KiB, half the L2) is swept once per A panel;
 *   MC: the packed A block (MC x KC floats, 240 KiB) sits in L2 beside the B block. B is packed
 *       once per slice and A once per column block. With MC = 3072 (the A block in L3, each B
 *       block packed once per 3072 rows, the order before) the training step's shapes ran 4-7%
 *       slower, most on N = 384 with a long K (lm_head's dx, 2048 x 384 x 8192: 159 against 175
 *       GFLOP/s on one Zen 5 core; BENCHMARKS.md, "fp32 GEMM").
 * Another CPU can be tuned without editing: make CFLAGS="-O3 -march=native -DKC=384"; with
 * -DB_PANEL_IN_L1=1 (the BLIS order) one Intel Xeon core ran 0.96x this order's speed. */
#ifndef KC
#define KC 256
#endif
#ifndef NC
#define NC 512
#endif
#ifndef MC
#define MC (MR * 20)
#endif
#ifndef B_PANEL_IN_L1
#define B_PANEL_IN_L1 0
#endif
static blocks cache_blocks(void) { return (blocks){KC, NC, MC, B_PANEL_IN_L1}; }
#else
/* AVX2 (and portable), chosen at run time from this CPU's caches, B panel in L1. On Zen 3 (32 KiB
 * L1d, 512 KiB L2) the AVX-512 order's B block (256 x 512 floats, 512 KiB) filled the whole L2,
 * and NC = 512 made A be packed again for every 512 columns (8% of the time at 2048 x 1152 x
 * 384, where the 6-row A panel packs at 0.57 ns a float). BLIS's Zen 3 blocks are 144 / 256 /
 * 4080; these rules give KC 256, MC 126, NC 1024 there:
 *   KC: the B micro-panel (KC x NR floats) fills half the L1d, the A panel streams by it;
 *   MC: the packed A block (MC x KC floats) a quarter of the L2, swept once per B panel;
 *   NC: the B block lives in L3 (1 MiB per thread, twice the L2 here: NC 1024). BLIS's 4080 packs
 *       A once for N <= 4080 but was no faster on Zen 3 within the load's +-10% (NC 128-4096), and
 *       its 4 MiB per thread of B block raised LoRA fine-tuning's peak memory from 38% to 42% of
 *       full fine-tuning's (examples/bench_finetune.py, bench preset, batch 1).
 * -DKC=, -DNC=, -DMC= and -DB_PANEL_IN_L1=0 override them (examples/bench_gemm_blocking.py). */
static blocks cache_blocks(void) {
    long l1 = 32 << 10, l2 = 512 << 10;
#ifdef _SC_LEVEL2_CACHE_SIZE
    if (sysconf(_SC_LEVEL1_DCACHE_SIZE) > 0) l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    if (sysconf(_SC_LEVEL2_CACHE_SIZE) > 0) l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    int64_t kc = l1 / 2 / (NR * sizeof(float));
    kc = kc < 64 ? 64 : kc > 512 ? 512 : kc;
    int64_t mc = l2 / 4 / (kc * sizeof(float)) / MR * MR;
    int64_t nc = 2 * l2 / (kc * (int64_t)sizeof(float)) / NR * NR;
    blocks bl = {kc, nc < 4 * NR ? 4 * NR : nc, mc < 4 * MR ? 4 * MR : mc, 1};
#ifdef KC
    bl.kc = KC;
#endif
#ifdef NC
    bl.nc = NC;
#endif
#ifdef MC
    bl.mc = MC;
#endif
#ifdef B_PANEL_IN_L1
    bl.b_panel_in_l1 = B_PANEL_IN_L1;
#endif
    return bl;
}
#endif

/* Below this many multiply-adds a matmul runs on one thread: waking the others costs more. */
#define PARALLEL_MIN_FMAS (1 << 18)

/* ---------------------------------------------------------------------------------------------
 * micro-kernel: c[0:MR, 0:NR] (row stride ldc) = (accumulate ? c : 0) + A @ bp, where A's
 * element (i, p) is a[i * ars + p * aqs] and bp is kc rows of NR floats (packed, 64-byte
 * aligned). A is a packed panel (ars 1, aqs MR: micro_kernel) or, in skinny.h, rows of an
 * operand read in place (its MR broadcasts a step are loads either way). Inlined into both, so
 * the packed one keeps its constant strides. */
static inline __attribute__((always_inline)) void kernel(int64_t kc, const float *restrict a,
                                                         int64_t ars, int64_t aqs,
                                                         const float *restrict bp,
                                                         float *restrict c, int64_t ldc,
                                                         int accumulate) {
    vec acc[MR][NV];
    /* out's tile is read (or written) only after kc steps: start fetching it now */
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        __builtin_prefetch(c + i * ldc, 1);
        __builtin_prefetch(c + i * ldc + NR - 1, 1);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) acc[i][j] = vzero();
    for (int64_t p = 0; p < kc; p++) {
        vec b[NV];
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) b[j] = vload(bp + j * VLEN);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            vec ai = vset1(a[i * ars]);
#pragma GCC unroll 16
            for (int j = 0; j < NV; j++) acc[i][j] = vfma(ai, b[j], acc[i][j]);
        }
        a += aqs;
        bp += NR;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 16
        for (int j = 0; j < NV; j++) {
            float *cij = c + i * ldc + j * VLEN;
            vstoreu(cij, accumulate ? vadd(vloadu(cij), acc[i][j]) : acc[i][j]);
        }
}

/* The micro-kernel on a packed A panel: kc columns of MR floats. */
static void micro_kernel(int64_t kc, const float *restrict ap, const float *restrict bp,
                         float *restrict c, int64_t ldc, int accumulate) {
    kernel(kc, ap, 1, MR, bp, c, ldc, accumulate);
}

/* One tile of out, mr x nr valid (<= MR x NR): full tiles go straight to out; edge tiles are
 * computed whole into a scratch tile (the packed panels are zero-padded) and then clipped. */
static void tile(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                 int64_t mr, int64_t nr, int accumulate) {
    if (mr == MR && nr == NR) {
        micro_kernel(kc, ap, bp, c, ldc, accumulate);
        return;
    }
    _Alignas(64) float scratch[MR * NR];
    micro_kernel(kc, ap, bp, scratch, NR, 0);
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + scratch[i * NR + j];
}

/* ---------------------------------------------------------------------------------------------
 * Packing (pack.h): op(a) and op(b) copied, block by block, in the micro-kernel's order. */
#include "pack.h"
/* An operand whose rows run along memory (rs 1: a transposed a, or b (K, N)) is packed
 * PACK_CHUNK depth steps at a time across all its panels, not panel by panel over the whole
 * depth: each step is a run of rows read qs floats apart, and panel by panel a dW product's
 * dy^T (qs = 8192 at the lm_head) touched a new page at every step and read each cache line
 * again for the next panel. On one Intel core the TN products went from 52-59 % to 66-70 % of
 * the FMA peak (examples/bench_gemm_blocking.py; chunks of 4-32 within 1 %, 64 a few % slower:
 * 16 steps of a 240-row block are 15 KiB, in L1 while the panels take their share). */
#ifndef PACK_CHUNK
#define PACK_CHUNK 16
#endif

/* One operand: element (row r, depth q) at x[r * rs + q * qs]; round: rounded to bf16 values
 * as it is packed (matmul_rounded, the bf16 matmul's fp32 path), so that costs no extra pass
 * over memory, only one over the packed block while it is in L1/L2. */
typedef struct {
    const float *x;
    int64_t rs, qs;
    int round;
} operand;

/* Rows [r0, r0 + rows) by depth [q0, q0 + depth) of an operand, packed into dst. */
static void pack(operand X, int64_t r0, int64_t q0, int64_t rows, int64_t depth, int w,
                 float *dst) {
    const float *x = X.x + r0 * X.rs + q0 * X.qs;
    int64_t chunk = X.rs == 1 ? PACK_CHUNK : depth;
    for (int64_t q = 0; q < depth; q += chunk)
        for (int64_t r = 0; r < rows; r += w)
            pack_panel(x + r * X.rs + q * X.qs, X.rs, X.qs, rows - r < w ? rows - r : w,
                       depth - q < chunk ? depth - q : chunk, w, dst + r * depth + q * w);
    if (!X.round) return;
    int64_t n = (rows + w - 1) / w * w * depth;   /* the padding's zeros stay zeros */
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_round(dst[i]);
}

#include "skinny.h"

/* The block length that cuts n into ceil(n / max) near-equal blocks, rounded up to whole units
 * (max is a multiple of unit): K = 257 runs as 129 + 128, not 256 + 1 with a pass that is mostly
 * overhead. */
static int64_t even_block(int64_t n, int64_t max, int64_t unit) {
    int64_t blocks = (n + max - 1) / max, len = (n + blocks - 1) / blocks;
    return (len + unit - 1) / unit * unit;
}

/* out[m0:m1, n0:n1] (row stride N) = A[m0:m1, :] @ B[:, n0:n1] over the full depth K, using the
 * caller's packing buffers ap (MC x KC) and bp (KC x NC). */
static void gemm_block(operand A, operand B, float *out, int64_t N, int64_t K, int64_t m0,
                       int64_t m1, int64_t n0, int64_t n1, blocks bl, float *ap, float *bp) {
    int64_t mb = even_block(m1 - m0, bl.mc, MR), nb = even_block(n1 - n0, bl.nc, NR);
    int64_t kb = even_block(K, bl.kc, 1);
    for (int64_t jc = n0; jc < n1; jc += nb) {
        int64_t nc = n1 - jc < nb ? n1 - jc : nb;
        for (int64_t pc = 0; pc < K; pc += kb) {
            int64_t kc = K - pc < kb ? K - pc : kb;
            pack(B, jc, pc, nc, kc, NR, bp);
            for (int64_t ic = m0; ic < m1; ic += mb) {
                int64_t mc = m1 - ic < mb ? m1 - ic : mb;
                pack(A, ic, pc, mc, kc, MR, ap);
                int64_t tm = (mc + MR - 1) / MR, tn = (nc + NR - 1) / NR;
                for (int64_t t = 0; t < tm * tn; t++) {   /* the tiles, in the blocks' order */
                    int64_t ir = (bl.b_panel_in_l1 ? t % tm : t / tn) * MR;
                    int64_t jr = (bl.b_panel_in_l1 ? t / tm : t % tn) * NR;
                    tile(kc, ap + ir * kc, bp + jr * kc, out + (ic + ir) * N + jc + jr, N,
                         mc - ir < MR ? mc - ir : MR, nc - jr < NR ? nc - jr : NR, pc > 0);
                }
            }
        }
    }
}

/* How to share the work over `threads`: each of the batch's matrices is cut into tm x tn
 * pieces (whole tiles; tm * tn <= threads) and the pieces are dealt out evenly. The cut is the
 * one whose busiest thread finishes first, counting per step of K the multiply-adds of its
 * tiles (padding included) and the elements it packs, at PACK_COST multiply-adds each
 * (Zen 4 AVX-512: packing at about 0.5 cycles per element, the micro-kernel at 16 multiply-adds
 * per cycle; Zen 3 AVX2: the same kernel rate, packing at 0.29-0.57 ns, 1-2 cycles, per element:
 * for gpt2's prefill, 256 x 2304 x 768, that cuts N and packs half of W each, not all of it).
 * Cutting N costs COLUMN_CUT more: a thread that owns half of every row of out runs
 * 2-5% slower than one that owns whole rows (measured on 2048 x 1152 and 2048 x 1536, same
 * balance), so a matrix is cut along M unless that balances or packs clearly worse. A batch
 * that divides evenly over the threads is not cut at all. */
#if defined(__AVX512F__)
#define PACK_COST 8
#else
#define PACK_COST 16
#endif
#define COLUMN_CUT 1.03
static void split(int64_t batch, int64_t M, int64_t N, int threads, int64_t *tm, int64_t *tn) {
    int64_t mt = (M + MR - 1) / MR, nt = (N + NR - 1) / NR;   /* tiles along each side */
    double best = INFINITY;
    *tm = *tn = 1;
    for (int64_t i = 1; i <= threads; i++)
        for (int64_t j = 1; i * j <= threads; j++) {
            int64_t rows = (mt + i - 1) / i, cols = (nt + j - 1) / j;   /* tiles per piece */
            int64_t per_thread = (batch * i * j + threads - 1) / threads;
            double cost = (double)per_thread *
                          (rows * cols * MR * NR + PACK_COST * (rows * MR + cols * NR)) *
                          (j > 1 ? COLUMN_CUT : 1.0);
            if (cost < best) {
                best = cost;
                *tm = i;
                *tn = j;
            }
        }
}

void matmul(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
            int64_t K, int transpose_a, int transpose_b) {
    matmul_rounded(a, b, out, batch, M, N, K, transpose_a, transpose_b, 0);
}

void matmul_rounded(const float *a, const float *b, float *out, int64_t batch, int64_t M,
                    int64_t N, int64_t K, int transpose_a, int transpose_b, int round) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0) {                   /* an empty sum: out is zero */
        for (int64_t i = 0; i < batch * M * N; i++) out[i] = 0.0f;
        return;
    }
    int threads = gemm_threads(batch * M * N * K, PARALLEL_MIN_FMAS);
    operand A = {a, transpose_a ? 1 : K, transpose_a ? M : 1, round};
    operand B = {b, transpose_b ? K : 1, transpose_b ? 1 : N, round};   /* rows: out's columns */
    if (batch == 1 && M <= SKINNY_MAX_ROWS && transpose_b && !round) {
        if (skinny(A, B, NULL, out, M, N, K, threads))   /* no error channel: never crash */
            for (int64_t i = 0; i < M * N; i++) out[i] = NAN;
        return;
    }
    int64_t tm, tn;
    split(batch, M, N, threads, &tm, &tn);
    /* a piece: tm-th of the row tiles by tn-th of the column tiles */
    int64_t pm = ((M + MR - 1) / MR + tm - 1) / tm * MR;
    int64_t pn = ((N + NR - 1) / NR + tn - 1) / tn * NR;
    /* Each thread's buffers, sized for the biggest blocks any piece can use. */
    blocks bl = cache_blocks();
    int64_t mc = pm < bl.mc ? pm : bl.mc, kc = K < bl.kc ? K : bl.kc, nc = pn < bl.nc ? pn : bl.nc;
    int64_t ap_size = (mc + MR - 1) / MR * MR * kc, bp_size = (nc + NR - 1) / NR * NR * kc;
    /* sizes rounded up to 16 floats keep every buffer 64-byte aligned in one allocation */
    ap_size = (ap_size + 15) / 16 * 16;
    bp_size = (bp_size + 15) / 16 * 16;
    float *buffers = aligned_alloc(64, (size_t)threads * (ap_size + bp_size) * sizeof(float));
    if (!buffers) {                 /* no error channel: make the failure visible, never crash */
        for (int64_t i = 0; i < batch * M * N; i++) out[i] = NAN;
        return;
    }
    int64_t pieces = batch * tm * tn;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = thread_index();
        float *ap = buffers + t * (ap_size + bp_size), *bp = ap + ap_size;
#pragma omp for schedule(static)
        for (int64_t piece = 0; piece < pieces; piece++) {
            int64_t bi = piece / (tm * tn), mi = piece / tn % tm, ni = piece % tn;
            int64_t m0 = mi * pm, n0 = ni * pn;
            int64_t m1 = m0 + pm < M ? m0 + pm : M, n1 = n0 + pn < N ? n0 + pn : N;
            if (m0 >= m1 || n0 >= n1) continue;
            operand Ab = {A.x + bi * M * K, A.rs, A.qs, round};
            operand Bb = {B.x + bi * K * N, B.rs, B.qs, round};
            gemm_block(Ab, Bb, out + bi * M * N, N, K, m0, m1, n0, n1, bl, ap, bp);
        }
    }
    free(buffers);
}
