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
 * Paths, chosen at compile time (-march=native): AVX-512 (the blocks widened with
 * vpmovsxbd / vpmovzxbd, FMAs into four vector sums a row) and portable C written for the
 * vectorizer. What it is not: AVX2-tuned or VNNI (int8 activations), or a quantizer (quantizing happens once, in
 * NumPy). K must be a multiple of 32 (c_kernels.py checks). dequantize_q widens whole rows,
 * for a prefill's GEMM (tinyllm/quant/layers.py hands it 1024 rows at a time).
 *
 * Read next: tinyllm.h for the contract, tinyllm/quant/formats.py for the layout,
 * tests/test_quant_kernels.py for the parity checks.
 */
#include <stdint.h>
#include <string.h>
#include "parallel.h"
#include "tinyllm.h"

#define QBLOCK 32
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MT 4   /* rows of x per pass: 4 x 4 accumulators + 2 widened halves + x fit 32 zmm */

/* One block widened to two vectors of 16 floats, times d (cvtepi8/cvtepu8 widen in registers). */
static inline void widen_vec(const uint8_t *qb, int q4, __m512 vd, __m512 *w0, __m512 *w1) {
    __m512i lo, hi;
    if (q4) {
        __m128i b = _mm_loadu_si128((const __m128i *)qb), m = _mm_set1_epi8(0x0F);
        lo = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(b, m)), _mm512_set1_epi32(8));
        hi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), m)),
                              _mm512_set1_epi32(8));
    } else {
        lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qb));
        hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qb + 16)));
    }
    *w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), vd);
    *w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), vd);
}

/* Row n of W against rows [m0, m0 + mt) of x: per row of x four vector sums (two blocks in
 * flight, so the FMA chains overlap), reduced once at the end. */
static void row_tile(const float *x, const uint8_t *q, const uint16_t *scale, float *out,
                     int64_t n, int64_t m0, int mt, int64_t N, int64_t K, int q4) {
    int64_t nb = K / QBLOCK, block_bytes = q4 ? QBLOCK / 2 : QBLOCK;
    __m512 acc[MT][4];
    for (int i = 0; i < MT; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512 w0, w1;
        widen_vec(q + (n * nb + b) * block_bytes, q4,
                  _mm512_set1_ps(_cvtsh_ss(scale[n * nb + b])), &w0, &w1);
        int j = (int)(b & 1) * 2;
        for (int i = 0; i < mt; i++) {
            const float *xb = x + (m0 + i) * K + b * QBLOCK;
            acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(xb), w0, acc[i][j]);
            acc[i][j + 1] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + 16), w1, acc[i][j + 1]);
        }
    }
    for (int i = 0; i < mt; i++)
        out[(m0 + i) * N + n] = _mm512_reduce_add_ps(
            _mm512_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]), _mm512_add_ps(acc[i][2], acc[i][3])));
}
#else
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


/* Row n of W against rows [m0, m0 + mt) of x (portable: written for the vectorizer). Each row
 * of x keeps 32 lane sums, reduced once at the end rather than once a block. */
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
#endif

/* Row n of W, widened: out (K,) = q * d, block by block. */
static void dequantize_row(const uint8_t *q, const uint16_t *scale, float *out, int64_t n,
                           int64_t K, int q4) {
    int64_t nb = K / QBLOCK, block_bytes = q4 ? QBLOCK / 2 : QBLOCK;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qb = q + (n * nb + b) * block_bytes;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        __m512 w0, w1;
        widen_vec(qb, q4, _mm512_set1_ps(_cvtsh_ss(scale[n * nb + b])), &w0, &w1);
        _mm512_storeu_ps(out + b * QBLOCK, w0);
        _mm512_storeu_ps(out + b * QBLOCK + 16, w1);
#else
        float d = half_to_float(scale[n * nb + b]);
        if (q4) widen_q4(qb, d, out + b * QBLOCK);
        else widen_q8((const int8_t *)qb, d, out + b * QBLOCK);
#endif
    }
}

void dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N, int64_t K, int q4) {
#pragma omp parallel for schedule(static) if (N * K >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) dequantize_row(q, scale, out + n * K, n, K, q4);
}

static void matmul_blocks(const float *x, const uint8_t *q, const uint16_t *scale, float *out,
                          int64_t M, int64_t N, int64_t K, int q4) {
#pragma omp parallel for schedule(static) if (M * N * K >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++)
        for (int64_t m0 = 0; m0 < M; m0 += MT)
            row_tile(x, q, scale, out, n, m0, M - m0 < MT ? (int)(M - m0) : MT, N, K, q4);
}

void matmul_q8_0(const float *x, const void *q, const uint16_t *scale, float *out,
                 int64_t M, int64_t N, int64_t K) {
    matmul_blocks(x, q, scale, out, M, N, K, 0);
}

void matmul_q4_0(const float *x, const void *q, const uint16_t *scale, float *out,
                 int64_t M, int64_t N, int64_t K) {
    matmul_blocks(x, q, scale, out, M, N, K, 1);
}
