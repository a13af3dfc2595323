/* skinny.h: matmul.c's path for a product with few rows of out (a prefill's x @ W^T, M = 32
 * for a 32-token prompt, 256 for 8 of them): op(b) read in place, never packed.
 *
 * Why: every float of op(b) takes M multiply-adds. The GEMM packs op(b) into panels first, and
 * for x @ W^T that is a transpose at 0.23-0.29 ns a float on Zen 3, while the M = 32
 * multiply-adds take 0.63 ns at the FMA peak: the packing alone is a third of the product.
 * Here the roles turn: out^T (N, M) = op(b)^T (N, K) @ op(a)^T (K, M). The micro-kernel's A
 * side broadcasts MR rows of op(b)^T (out's columns n0 .. n0 + MR) straight from b, one load
 * each, as it would from a packed panel; its B side is op(a)^T, packed once (M x K floats,
 * shared by every thread) and read from L1/L2 by every panel. Each finished MR x NR tile of
 * out^T is written into out transposed, once: there are no K slices, so a tile's depth is
 * the whole K and out is never read back. A last panel of fewer than MR columns is packed
 * (zero-padded) so that the kernel never reads past b.
 * A quantized weight (quant.c's matmul_q_f32, a QuantLinear's prefill) runs the same loops: b's
 * rows are then widened from their q8_0 / q4_0 blocks MR at a time into a panel of each
 * thread's, which the kernel reads as it would read b (skinny_work says why that is cheap).
 * Threads: OpenMP, chunks of out's columns claimed in turn (schedule dynamic), ~8 a thread.
 * The decode pool (pool.c), which never waits for a descheduled thread, was measured too: a
 * prefill runs the rest of its kernels on OpenMP, and the pool's helper spinning beside
 * OpenMP's worker (three threads on two cores) made the prefill slower: 0.75-1.01x NumPy
 * against 0.95-1.48x on OpenMP (best of 6, two alternating runs each, load 1.2-1.6; 2 cores).
 *
 * What it is not: for many rows (the packed GEMM's reuse of op(b) from cache wins there), for
 * b (K, N) (see SKINNY_MAX_ROWS), for the bf16-rounded operands (matmul_rounded's round: b
 * would be read unrounded) or batches.
 * Included by matmul.c alone, after its micro-kernel (kernel) and packing (pack).
 */
#ifndef TINYLLM_SKINNY_H
#define TINYLLM_SKINNY_H

/* M <= this many rows of out, op(b) = b^T (its rows run along K, so each broadcast row of
 * op(b)^T is read in order; b (K, N) read N apart per step was slower than packing it), one
 * matrix and no rounding run here. AVX2 only, where it was measured (BENCHMARKS.md, "Prefill
 * GEMMs on Zen 3": 1.1-1.5x the packed GEMM on one core from M = 24 to 256, even at 256 x 768 x
 * 3072 where op(a)^T, 3 MiB, is read from L3; even at M = 384-512); 0 elsewhere: the AVX-512
 * and portable builds keep the packed GEMM for every shape. */
#ifndef SKINNY_MAX_ROWS
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define SKINNY_MAX_ROWS 256
#else
#define SKINNY_MAX_ROWS 0
#endif
#endif

/* Where the rows of op(b)^T (out's columns) come from: b read in place (B), or a quantized
 * weight (Q, dequant.h) widened MR rows at a time into the thread's panel, MR x K floats (18
 * KiB at K = 768: L1/L2), which the kernel then reads as it would b's rows (ars K, aqs 1). Each
 * float of the panel takes M multiply-adds and one widening (quant.c: a few instructions per 8):
 * no float32 copy of W beyond one panel a thread ever exists. */
typedef struct {
    operand B;           /* op(b): element (n, k) at b[n * rs + k * qs] */
    const quant_rows *Q; /* or NULL: the rows of op(b)^T are B's */
    const float *at;     /* op(a)^T packed: ceil(M / NR) panels of K rows of NR floats */
    float *side;         /* B: the last N % MR columns' panel of op(b)^T, packed (K x MR);
                            Q: a panel of MR x K floats per thread */
    float *out;
    int64_t M, N, K, panels;   /* panels of MR columns of out per chunk */
} skinny_work;

/* Columns [n0, n0 + nr) of out, nr <= MR, every row; op(b)^T's rows n0.. at a (strides as
 * kernel's). */
static void skinny_columns(const skinny_work *s, const float *a, int64_t ars, int64_t aqs,
                           int64_t n0, int64_t nr) {
    _Alignas(64) float t[MR * NR];
    for (int64_t m0 = 0; m0 < s->M; m0 += NR) {
        kernel(s->K, a, ars, aqs, s->at + m0 * s->K, t, NR, 0);
        int64_t mr = s->M - m0 < NR ? s->M - m0 : NR;
        for (int64_t j = 0; j < mr; j++)
            for (int64_t i = 0; i < nr; i++) s->out[(m0 + j) * s->N + n0 + i] = t[i * NR + j];
    }
}

/* Rows [n0, n0 + nr) of the quantized W widened into panel (MR rows of K); a short last panel's
 * missing rows zeroed, so the kernel never reads uninitialized memory (their sums are dropped). */
static void skinny_widen(const skinny_work *s, float *panel, int64_t n0, int64_t nr) {
    const quant_rows *Q = s->Q;
    for (int64_t i = 0; i < nr; i++) Q->row(Q->q, Q->scale, panel + i * s->K, n0 + i, s->K, Q->q4);
    if (nr < MR) memset(panel + nr * s->K, 0, (size_t)((MR - nr) * s->K) * sizeof(float));
}

/* Chunk c: `panels` panels of MR columns of out. */
static void skinny_chunk(void *ctx, int64_t c) {
    const skinny_work *s = ctx;
    int64_t whole = s->N / MR;
    float *panel = s->Q ? s->side + thread_index() * MR * s->K : NULL;
    for (int64_t p = c * s->panels; p < (c + 1) * s->panels && p * MR < s->N; p++) {
        int64_t nr = s->N - p * MR < MR ? s->N - p * MR : MR;
        if (s->Q) {
            skinny_widen(s, panel, p * MR, nr);
            skinny_columns(s, panel, s->K, 1, p * MR, nr);
        } else if (p < whole) {
            skinny_columns(s, s->B.x + p * MR * s->B.rs, s->B.rs, s->B.qs, p * MR, MR);
        } else {
            skinny_columns(s, s->side, 1, MR, p * MR, nr);
        }
    }
}

/* out (M, N) = op(a) @ op(b), one matrix, op(b)'s rows from B or Q (skinny_work); threads: the
 * ones gemm_threads gives the product. Returns -1 when its buffers could not be allocated. */
static int skinny(operand A, operand B, const quant_rows *Q, float *out, int64_t M, int64_t N,
                  int64_t K, int threads) {
    int64_t at_size = (M + NR - 1) / NR * NR * K, side_size = (Q ? threads : 1) * MR * K;
    at_size = (at_size + 15) / 16 * 16;   /* keeps the side panels 64-byte aligned */
    float *at = aligned_alloc(64, (size_t)(at_size + (side_size + 15) / 16 * 16) * sizeof(float));
    if (!at) return -1;
    pack(A, 0, 0, M, K, NR, at);    /* rows of op(a) = columns of op(a)^T, NR at a time */
    if (!Q && N % MR) pack(B, N / MR * MR, 0, N % MR, K, MR, at + at_size);
    /* ~8 chunks per thread: a late helper then leaves little undone for the others */
    int64_t total = (N + MR - 1) / MR, panels = (total + 8 * threads - 1) / (8 * threads);
    skinny_work s = {B, Q, at, at + at_size, out, M, N, K, threads > 1 ? panels : total};
    int64_t chunks = (total + s.panels - 1) / s.panels;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads > 1)
    for (int64_t c = 0; c < chunks; c++) skinny_chunk(&s, c);
    free(at);
    return 0;
}

int matmul_skinny_q(const float *x, const quant_rows *W, float *out, int64_t M, int64_t N,
                    int64_t K) {
    if (M > SKINNY_MAX_ROWS) return 1;
    operand A = {x, K, 1, 0}, none = {NULL, 0, 0, 0};
    return skinny(A, none, W, out, M, N, K, gemm_threads(M * N * K, PARALLEL_MIN_FMAS));
}
#endif
