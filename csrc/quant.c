/* quant.c: the prefill half of QuantLinear (tinyllm/quant/layers.py): x float32 times a weight
 * W (N, K) held as q8_0 or q4_0 blocks, and W widened to float32.
 *
 * What it is:
 *   dequantize_q   out (N, K) = dequant(W): each block's 32 integers (int8, or q4_0's q + 8 in
 *                  nibbles: byte j holds values j and j + 16) times its fp16 scale d, exactly:
 *                  an 8-bit integer times an fp16 value fits float32's significand, so every
 *                  path equals tinyllm.quant.formats.dequantize bit for bit.
 *   matmul_q_f32   out (M, N) = x (M, K) @ dequant(W)^T, x unquantized: the float32 GEMM's
 *                  numbers on the widened W, without a float32 copy of W. A prefill's x has
 *                  many rows, so each widened float is reused M times: the GEMM's arithmetic,
 *                  not the widening, is the cost. For M <= SKINNY_MAX_ROWS (AVX2 builds)
 *                  matmul.c's skinny.h widens MR rows of W at a time into a panel that stays in
 *                  L1/L2 and runs its micro-kernel on it (matmul_skinny_q); otherwise (more rows,
 *                  the AVX-512 and portable builds) CHUNK_ROWS rows of W are widened into a
 *                  scratch buffer and handed to matmul, chunk by chunk (matmul_chunked).
 * Paths of the widening, chosen at run time (quant_path(path): the best the CPU has at or below
 * `path`; quant_path asks cpu_features() once): AVX-512 (vpmovsxbd / vpmovzxbd widen 16 values
 * a step) for QPATH_AVX512_VNNI, AVX2 (8 a step) for QPATH_AVX2, else portable C.
 * What it is not: the decoding product (quant_i8.c: few rows of x, x quantized to int8) or a
 * quantizer (that happens once, in NumPy). K must be a multiple of 32 (backends/c_quant.py checks).
 *
 * Read next: csrc/skinny.h, quant_i8.c, tinyllm/quant/formats.py for the layout.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dequant.h"
#include "half.h"
#include "parallel.h"
#include "tinyllm.h"

#define QBLOCK 32
/* rows of W widened at once by matmul_chunked: 1024 x K floats (3 MiB at K = 768) of scratch,
 * while the GEMM on a chunk is long enough (M x 1024 x K multiply-adds) to amortize its packing */
#define CHUNK_ROWS 1024

static void dequantize_row(const uint8_t *q, const uint16_t *scale, float *out, int64_t n,
                           int64_t K, int q4) {
    int64_t nb = K / QBLOCK, bb = q4 ? QBLOCK / 2 : QBLOCK;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qb = q + (n * nb + b) * bb;
        float d = half_to_float(scale[n * nb + b]), *w = out + b * QBLOCK;
        for (int k = 0; k < QBLOCK / 2; k++) {
            w[k] = (float)(q4 ? (int)(qb[k] & 0x0F) - 8 : (int8_t)qb[k]) * d;
            w[k + 16] = (float)(q4 ? (int)(qb[k] >> 4) - 8 : (int8_t)qb[k + 16]) * d;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx512f,avx512bw,f16c"))) static void dequantize_row_avx512(
    const uint8_t *q, const uint16_t *scale, float *out, int64_t n, int64_t K, int q4) {
    int64_t nb = K / QBLOCK;
    for (int64_t b = 0; b < nb; b++) {
        __m512 d = _mm512_set1_ps(_cvtsh_ss(scale[n * nb + b]));
        __m512i lo, hi;
        if (q4) {
            __m128i t = _mm_loadu_si128((const __m128i *)(q + (n * nb + b) * QBLOCK / 2));
            __m128i m = _mm_set1_epi8(0x0F);
            lo = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(t, m)), _mm512_set1_epi32(8));
            hi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(t, 4), m)),
                                  _mm512_set1_epi32(8));
        } else {
            const uint8_t *qb = q + (n * nb + b) * QBLOCK;
            lo = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qb));
            hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qb + 16)));
        }
        _mm512_storeu_ps(out + b * QBLOCK, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d));
        _mm512_storeu_ps(out + b * QBLOCK + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d));
    }
}

/* The same 8 values a step: a block's 32 integers as four int32 vectors (q4_0: its 16 bytes'
 * low nibbles are values 0..15, the high ones 16..31), each converted and times d. */
__attribute__((target("avx2,f16c"))) static void dequantize_row_avx2(
    const uint8_t *q, const uint16_t *scale, float *out, int64_t n, int64_t K, int q4) {
    int64_t nb = K / QBLOCK;
    for (int64_t b = 0; b < nb; b++) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(scale[n * nb + b]));
        __m256i v[4];
        if (q4) {
            __m128i t = _mm_loadu_si128((const __m128i *)(q + (n * nb + b) * QBLOCK / 2));
            __m128i m = _mm_set1_epi8(0x0F), lo = _mm_and_si128(t, m);
            __m128i hi = _mm_and_si128(_mm_srli_epi16(t, 4), m), eight = _mm_set1_epi8(8);
            lo = _mm_sub_epi8(lo, eight);   /* q in -8..7: now a signed byte */
            hi = _mm_sub_epi8(hi, eight);
            v[0] = _mm256_cvtepi8_epi32(lo);
            v[1] = _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8));
            v[2] = _mm256_cvtepi8_epi32(hi);
            v[3] = _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8));
        } else {
            const uint8_t *qb = q + (n * nb + b) * QBLOCK;
            for (int i = 0; i < 4; i++)
                v[i] = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qb + 8 * i)));
        }
        for (int i = 0; i < 4; i++)
            _mm256_storeu_ps(out + b * QBLOCK + 8 * i, _mm256_mul_ps(_mm256_cvtepi32_ps(v[i]), d));
    }
}
#endif

/* The row widener `path` runs as (quant_path's choice). */
static dequant_row_fn row_for(int path) {
#if defined(__x86_64__) && defined(__GNUC__)
    int chosen = quant_path(path);
    if (chosen == QPATH_AVX512_VNNI) return dequantize_row_avx512;
    if (chosen == QPATH_AVX2) return dequantize_row_avx2;
#endif
    (void)path;
    return dequantize_row;
}

static void dequantize_rows(const quant_rows *W, float *out, int64_t n0, int64_t rows, int64_t K) {
#pragma omp parallel for schedule(static) if (rows * K >= PARALLEL_MIN)
    for (int64_t n = 0; n < rows; n++) W->row(W->q, W->scale, out + n * K, n0 + n, K, W->q4);
}

void dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N, int64_t K, int q4,
                  int path) {
    quant_rows W = {q, scale, q4, row_for(path)};
    dequantize_rows(&W, out, 0, N, K);
}

/* out (M, N) = x @ dequant(W)^T, CHUNK_ROWS rows of W (out's columns) at a time: each chunk
 * widened into w, multiplied by matmul into y (M x rows), and copied into its columns of out
 * (matmul writes dense rows; the copy is M x N floats against M x N x K multiply-adds). */
static int matmul_chunked(const float *x, const quant_rows *W, float *out, int64_t M, int64_t N,
                          int64_t K) {
    int64_t chunk = N < CHUNK_ROWS ? N : CHUNK_ROWS;
    float *w = malloc((size_t)(chunk * K + M * chunk) * sizeof(float)), *y = w + chunk * K;
    if (!w) return -1;
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        int64_t rows = N - n0 < chunk ? N - n0 : chunk;
        dequantize_rows(W, w, n0, rows, K);
        matmul(x, w, y, 1, M, rows, K, 0, 1);
        for (int64_t m = 0; m < M; m++)
            memcpy(out + m * N + n0, y + m * rows, (size_t)rows * sizeof(float));
    }
    free(w);
    return 0;
}

int matmul_q_f32(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                 int64_t N, int64_t K, int q4, int path) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {                   /* an empty sum: out is zero */
        memset(out, 0, (size_t)(M * N) * sizeof(float));
        return 0;
    }
    quant_rows W = {q, scale, q4, row_for(path)};
    int done = matmul_skinny_q(x, &W, out, M, N, K);
    return done <= 0 ? done : matmul_chunked(x, &W, out, M, N, K);
}
