/* quant.c: out (N, K) = dequant(W), float32, for a weight W (N, K) held as q8_0 or q4_0 blocks.
 *
 * What it is: the prefill half of QuantLinear (tinyllm/quant/layers.py), which widens 1024
 * rows of W at a time into the float32 GEMM (many rows of x reuse each widened row from
 * cache). Each block's 32 integers (int8, or q4_0's q + 8 in nibbles: byte j holds values j
 * and j + 16) times its fp16 scale d, exactly: an 8-bit integer times an fp16 value fits
 * float32's significand, so this equals tinyllm.quant.formats.dequantize bit for bit.
 *
 * Paths, chosen at run time: AVX-512 (vpmovsxbd / vpmovzxbd widen a block in registers)
 * where quant_path finds AVX-512 with VNNI (it asks cpu_features() once), else portable C.
 * What it is not: the decoding product (quant_i8.c) or a quantizer (that happens once, in
 * NumPy). K must be a multiple of 32 (backends/c_quant.py checks).
 *
 * Read next: quant_i8.c, tinyllm/quant/formats.py for the layout.
 */
#include <stdint.h>
#include "half.h"
#include "parallel.h"
#include "tinyllm.h"

#define QBLOCK 32

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
#endif

void dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N, int64_t K, int q4) {
    void (*row)(const uint8_t *, const uint16_t *, float *, int64_t, int64_t, int) = dequantize_row;
#if defined(__x86_64__) && defined(__GNUC__)
    if (quant_path(QPATH_AVX512_VNNI) == QPATH_AVX512_VNNI) row = dequantize_row_avx512;
#endif
#pragma omp parallel for schedule(static) if (N * K >= PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) row(q, scale, out + n * K, n, K, q4);
}
