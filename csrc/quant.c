/* quant.c: out (M, N) = x (M, K) @ dequant(W)^T for a weight W (N, K) held as q8_0 or q4_0 blocks.
 *
 * What it is: the fused kernels of QuantLinear (tinyllm/quant/layers.py). W is read as its
 * blocks (32 int8, or 16 bytes of packed 4-bit values, plus one fp16 scale) and widened to
 * float32 one block at a time in registers (q * d, exact); it never exists as an fp32 matrix.
 * The products x[m, k] * q[n, k] * d[n, b] are summed in 32 lanes across all blocks, reduced
 * once per output: the sum of tinyllm.quant.formats.matmul_q, the definition (which sums each
 * block, then scales), in another order. Activations stay float32 (no int8 activations):
 * the error is the weights' rounding alone. Threads split W's rows, each streaming its rows once; for M > 1 a block,
 * once widened, is used for MT rows of x before the next is read.
 *
 * What it is not: tuned (no hand-written AVX2 / VNNI paths yet: the loops are written for the
 * compiler's vectorizer under -O3 -march=native) or a quantizer (quantizing happens once, in
 * NumPy). K must be a multiple of 32 (c_kernels.py checks).
 *
 * Read next: tinyllm.h for the contract, tinyllm/quant/formats.py for the layout,
 * tests/test_quant_kernels.py for the parity checks.
 */
#include <stdint.h>
#include <string.h>
#include "parallel.h"
#include "tinyllm.h"

#define QBLOCK 32
#define MT 16   /* rows of x that share one widened block */

/* IEEE half -> float, exactly (normal, subnormal, zero; the scales are never inf or NaN). */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float f;
    if (exp == 0) {               /* zero or subnormal: man * 2^-24 */
        f = (float)man * (1.0f / 16777216.0f);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        bits |= sign;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint32_t bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* One block's 32 integers times its scale d, as floats (exact: an 8-bit integer times an
 * fp16 value fits float32's 24-bit significand): q8_0 bytes, or q4_0's low then high nibbles. */
static inline void widen_q8(const int8_t *q, float d, float *w) {
#pragma omp simd
    for (int k = 0; k < QBLOCK; k++) w[k] = (float)q[k] * d;
}

static inline void widen_q4(const uint8_t *q, float d, float *w) {
#pragma omp simd
    for (int k = 0; k < QBLOCK / 2; k++) {
        w[k] = (float)((int)(q[k] & 0x0F) - 8) * d;
        w[k + QBLOCK / 2] = (float)((int)(q[k] >> 4) - 8) * d;
    }
}

/* Row n of W against rows [m0, m0 + mt) of x. Each row of x keeps 32 lane sums (two AVX-512
 * registers), reduced once at the end rather than once a block. */
static void row_tile(const float *x, const uint8_t *q, const uint16_t *scale, float *out,
                     int64_t n, int64_t m0, int mt, int64_t N, int64_t K, int q4) {
    int64_t nb = K / QBLOCK, block_bytes = q4 ? QBLOCK / 2 : QBLOCK;
    float acc[MT][QBLOCK], w[QBLOCK];
    memset(acc, 0, sizeof acc);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qb = q + (n * nb + b) * block_bytes;
        float d = half_to_float(scale[n * nb + b]);
        if (q4) widen_q4(qb, d, w);
        else widen_q8((const int8_t *)qb, d, w);
        for (int i = 0; i < mt; i++) {
            const float *xb = x + (m0 + i) * K + b * QBLOCK;
#pragma omp simd
            for (int k = 0; k < QBLOCK; k++) acc[i][k] += xb[k] * w[k];
        }
    }
    for (int i = 0; i < mt; i++) {
        float s = 0.0f;
        for (int k = 0; k < QBLOCK; k++) s += acc[i][k];
        out[(m0 + i) * N + n] = s;
    }
}

static void matmul_blocks(const float *x, const uint8_t *q, const uint16_t *scale, float *out,
                          int64_t M, int64_t N, int64_t K, int q4) {
#pragma omp parallel for schedule(static) if (M * N * K >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++)
        for (int64_t m0 = 0; m0 < M; m0 += MT)
            row_tile(x, q, scale, out, n, m0, M - m0 < MT ? (int)(M - m0) : MT, N, K, q4);
}

void matmul_q8_0(const float *x, const int8_t *q, const uint16_t *scale, float *out,
                 int64_t M, int64_t N, int64_t K) {
    matmul_blocks(x, (const uint8_t *)q, scale, out, M, N, K, 0);
}

void matmul_q4_0(const float *x, const uint8_t *q, const uint16_t *scale, float *out,
                 int64_t M, int64_t N, int64_t K) {
    matmul_blocks(x, q, scale, out, M, N, K, 1);
}
