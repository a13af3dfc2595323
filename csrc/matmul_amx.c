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
 *      op(b)[2p + 1][n] high), 32 words a row: a tile of 16 columns is 16 rows at stride 128 B;
 *   A: each 32-row block row by row, pairs along K: a tile is 16 rows at stride kpad words.
 * K is padded with zero pairs to a multiple of 32, rows and columns to whole blocks; edge
 * blocks go through a scratch block and are clipped. All of op(b) is packed once (in
 * parallel), then each thread packs one 32-row block of A at a time and sweeps every panel.
 * The tile configuration is per thread: each thread loads it before its first tile and
 * releases the tiles after its last.
 *
 * What it is not: tuned. There is no K blocking (an A block is 32 x K, a B panel K x 32, read
 * from L2 and L3) and the packing is plain C; this was written and checked on a CPU without
 * AMX, against amx.h's emulation of the instructions (tests/test_c_matmul_amx.py), so its
 * speed has not been measured. The sums run in another order than NumPy's: results agree with
 * the float64 product of the rounded operands to float32 rounding, not bit for bit.
 *
 * Read next: amx.h (the tiles), matmul_bf16.c (the AVX512-BF16 twin and the dispatch).
 */
#include <math.h>
#include <stdlib.h>
#include "amx.h"
#include "bf16.h"
#include "parallel.h"
#include "tinyllm.h"

#ifdef AMX_BUILT
#define TB 32                       /* rows of an A block, columns of a B panel */
#define TKP 16                      /* K pairs in one tile row: 32 bf16 = 64 bytes */
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

/* B panel j (columns j*TB ..): dst[p * TB + c] = pair (2p, 2p + 1) of column c; zero padded. */
static void pack_b_panel(operand b, int64_t N, int64_t K, int64_t kpad, int64_t j, uint32_t *dst) {
    for (int64_t p = 0; p < kpad; p++)
        for (int64_t c = 0; c < TB; c++) {
            int64_t n = j * TB + c;
            dst[p * TB + c] = n < N && 2 * p < K ? pair(b, n, 2 * p, K) : 0;
        }
}

/* A rows m0 ..: dst[r * kpad + p] = pair (2p, 2p + 1) of row m0 + r; zero padded. */
static void pack_a_block(operand a, int64_t M, int64_t K, int64_t kpad, int64_t m0, uint32_t *dst) {
    for (int64_t r = 0; r < TB; r++)
        for (int64_t p = 0; p < kpad; p++)
            dst[r * kpad + p] = m0 + r < M && 2 * p < K ? pair(a, m0 + r, 2 * p, K) : 0;
}

TARGET_AMX static void set_tiles(void) {
    tile_config cfg = {.palette = 1};
    for (int t = 0; t < 8; t++) {   /* every tile 16 rows x 64 bytes */
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* c (row stride ldc, mr x nr valid) = the A block ap @ the B panel bp over kpad pairs. */
TARGET_AMX static void block(const uint32_t *ap, const uint32_t *bp, int64_t kpad, float *c,
                             int64_t ldc, int64_t mr, int64_t nr) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t p0 = 0; p0 < kpad; p0 += TKP) {
        _tile_loadd(4, ap + p0, kpad * 4);
        _tile_loadd(5, ap + TKP * kpad + p0, kpad * 4);
        _tile_loadd(6, bp + p0 * TB, TB * 4);
        _tile_loadd(7, bp + p0 * TB + 16, TB * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _Alignas(64) float scratch[TB * TB];
    int edge = mr < TB || nr < TB;
    float *dst = edge ? scratch : c;
    int64_t ld = (edge ? TB : ldc) * 4;   /* bytes */
    _tile_stored(0, dst, ld);
    _tile_stored(1, dst + 16, ld);
    _tile_stored(2, dst + 16 * ld / 4, ld);
    _tile_stored(3, dst + 16 * ld / 4 + 16, ld);
    if (!edge) return;
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++) c[i * ldc + j] = scratch[i * TB + j];
}

TARGET_AMX void matmul_amx(const float *a, const float *b, float *out, int64_t batch, int64_t M,
                           int64_t N, int64_t K, int transpose_a, int transpose_b) {
    int threads = gemm_threads(batch * M * N * K, PARALLEL_MIN_FMAS);
    int64_t kpad = ((K + 1) / 2 + TKP - 1) / TKP * TKP;
    int64_t panels = (N + TB - 1) / TB, blocks = (M + TB - 1) / TB;
    int64_t b_size = panels * kpad * TB, a_size = TB * kpad;
    uint32_t *bp = aligned_alloc(64, (size_t)(batch * b_size + threads * a_size) * 4);
    if (!bp) {   /* no error channel: make the failure visible */
        for (int64_t i = 0; i < batch * M * N; i++) out[i] = NAN;
        return;
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = thread_index();
#pragma omp for schedule(static) collapse(2)
        for (int64_t bi = 0; bi < batch; bi++)
            for (int64_t j = 0; j < panels; j++) {   /* op(b)(k, n): b's (n, k) or (k, n) */
                operand ob = {b + bi * K * N, transpose_b ? K : 1, transpose_b ? 1 : N};
                pack_b_panel(ob, N, K, kpad, j, bp + bi * b_size + j * kpad * TB);
            }
        uint32_t *ap = bp + batch * b_size + t * a_size;
        set_tiles();
#pragma omp for schedule(static)
        for (int64_t piece = 0; piece < batch * blocks; piece++) {
            int64_t bi = piece / blocks, m0 = piece % blocks * TB;
            operand oa = {a + bi * M * K, transpose_a ? 1 : K, transpose_a ? M : 1};
            pack_a_block(oa, M, K, kpad, m0, ap);
            for (int64_t j = 0; j < panels; j++)
                block(ap, bp + bi * b_size + j * kpad * TB, kpad, out + bi * M * N + m0 * N + j * TB,
                      N, M - m0 < TB ? M - m0 : TB, N - j * TB < TB ? N - j * TB : TB);
        }
        _tile_release();
    }
    free(bp);
}
#else   /* not x86-64: cpu_features() never reports AMX, so matmul_bf16 never calls this */
void matmul_amx(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                int64_t K, int transpose_a, int transpose_b) {}
#endif
