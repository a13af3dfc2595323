/* quant_i8.c: out (M, N) = x (M, K) @ W^T for a q8_0 / q4_0 weight W, with x quantized to int8.
 *
 * What it is: the decoding kernels of QuantLinear (tinyllm/quant/layers.py), llama.cpp's
 * q8_0 x q8_0 idea: each row of x is cut into blocks of 32 like W and quantized to int8 with
 * a float32 scale (quantize_rows_q8: dx = absmax / 127, qx = rint(x / dx), half to even), so
 * a block's product is an exact integer dot product S (|S| <= 32 * 127 * 127 < 2^24), and
 * out = sum over blocks of (dw * dx) * S in float32. The definition is
 * tinyllm.quant.formats.matmul_q_i8; this is its sum in another order. W is read as its
 * blocks, once per MT rows of x, and never widened to float32.
 *
 * Paths, chosen at RUN time (quant_path; the callers pass what cpu_features() allows, and a
 * path the CPU lacks runs as the best one below it that it has):
 *   QPATH_AVX512_VNNI  two blocks a zmm, vpdpbusd (unsigned x signed bytes into int32 lanes):
 *                      q4_0 stores q + 8 unsigned, so S = dpbusd(q + 8, qx) - 8 sum(qx), the
 *                      correction precomputed per 4 bytes of x (nc) as dpbusd's start value;
 *                      q8_0's weights are signed, so x goes in offset by 128 and
 *                      S = dpbusd(qx + 128, w) - dpbusd(128, w)
 *   QPATH_AVX2         one block a ymm, vpmaddubsw + vpmaddwd (llama.cpp's AVX2 way: the
 *                      sign of w moved onto x so the unsigned operand is |w| <= 127, and no
 *                      16-bit sum saturates: 2 * 127 * 127 < 32767)
 *   QPATH_PORTABLE     plain C integer loops
 * All three give the same integer S; only the float32 sum over the blocks differs in order.
 *
 * matmul_q_i8_into is the same product into scratch the caller gives (decode_block.c's fused
 * step calls it for each product, with one allocation per step); matmul_q_i8 allocates it.
 *
 * What it is not: the prefill kernel (many rows of x: QuantLinear widens W into the float32
 * GEMM, quant.c's dequantize_q) or the float32-activation kernels (quant.c's matmul_q8_0).
 * K must be a multiple of 32 (c_kernels.py checks).
 *
 * Read next: tinyllm/quant/formats.py (quantize_activations, matmul_q_i8), tinyllm.h,
 * tests/test_quant_i8.py (every path against the definition).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "half.h"
#include "parallel.h"
#include "tinyllm.h"

#define QBLOCK 32
#define MT 4   /* rows of x that share one pass over a row of W (DISPATCH lists 1..4) */
_Static_assert(MT == 4, "DISPATCH below lists the row counts 1..4");
/* below this many weights one thread does it: handing chunks to other threads costs a few
 * microseconds on a quiet machine; 2^18 (256 KiB of q8_0) threads every gpt2-preset product, which
 * on 2 quiet cores took a decoding step's products from 5.3 / 3.2 ms (one thread) to 3.3 / 2.2 ms
 * (q8_0 / q4_0, measured with OpenMP's fork/join, before the pool; 2^21 kept the smaller ones on
 * one thread and gained less: BENCHMARKS.md). The chunks go to pool.c's threads, as decode.c's
 * do: a helper the OS has parked never holds a step up. */
#define QUANT_PARALLEL_MIN (1 << 18)
#define ROW_CHUNK 64   /* rows of W a thread takes at a time, for every row of x */
#define GROUP 8        /* blocks whose sums the AVX2 kernels gather into one vector */

typedef struct {                 /* x, quantized: what every path reads */
    const int8_t *qx;            /* (M, K) */
    const float *dx;             /* (M, K / 32) */
    const int32_t *nc;           /* (M, K / 4): -8 * the sum of each 4 bytes of qx (q4_0) */
    int64_t K, nb;
    int64_t nbx;                 /* blocks a row of qx holds: nb, or AVX2's nb padded to GROUP */
} acts;

/* quantize_rows_q8's portable loop over n blocks of 32 values */
static void quantize_portable(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        const float *xb = x + r * QBLOCK;
        int8_t *q = qx + r * QBLOCK;
        float amax = 0.0f;
        for (int k = 0; k < QBLOCK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        float d = amax / 127.0f;
        dx[r] = d;
        for (int k = 0; k < QBLOCK; k++) q[k] = d != 0.0f ? (int8_t)rintf(xb[k] / d) : 0;
        for (int g = 0; g < QBLOCK / 4; g++)
            nc[r * 8 + g] = -8 * (q[4 * g] + q[4 * g + 1] + q[4 * g + 2] + q[4 * g + 3]);
    }
}

/* x as the AVX-512 VNNI kernels read it, rewritten in place from quantize_rows_q8's: each
 * row's blocks in quads (the last may be short, r blocks): the first 16 values of the r
 * blocks, then their last 16, lined up with quad_weights' lo and hi. nc (M, nb, 4) then holds,
 * for the 4 bytes j of each such half, -offset * (their sum in the first half + in the
 * second): offset 8 for q4_0 (8 = 1 * quantize_rows_q8's factor), 128 for q8_0 (16 times). */
static void vnni_layout(int8_t *qx, int32_t *nc, int64_t M, int64_t nb, int q4) {
    int8_t tmp[4 * QBLOCK];
    int32_t ntmp[4 * 8], times = q4 ? 1 : 16;
    for (int64_t row = 0; row < M; row++)
        for (int64_t g = 0; g < nb; g += 4) {
            int r = nb - g < 4 ? (int)(nb - g) : 4;
            int8_t *x = qx + (row * nb + g) * QBLOCK;
            memcpy(tmp, x, (size_t)r * QBLOCK);
            memcpy(ntmp, nc + (row * nb + g) * 8, (size_t)r * 8 * sizeof(int32_t));
            for (int j = 0; j < r; j++) {
                memcpy(x + 16 * j, tmp + QBLOCK * j, 16);
                memcpy(x + 16 * (r + j), tmp + QBLOCK * j + 16, 16);
            }
            int32_t *cq = nc + (row * nb + g) * 4;   /* packs (nb, 4) below the (nb, 8) read */
            for (int j = 0; j < 4 * r; j++)
                cq[j] = times * (ntmp[(j / 4) * 8 + j % 4] + ntmp[(j / 4) * 8 + 4 + j % 4]);
        }
}

/* ---------------------------------------------------------------- portable */

static void row_portable(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                         int64_t n, int64_t m0, int mt, int64_t N, int q4) {
    int64_t K = a->K, nb = a->nb, bb = q4 ? QBLOCK / 2 : QBLOCK;
    float acc[MT] = {0};
    int8_t w[QBLOCK];
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qb = q + (n * nb + b) * bb;
        for (int k = 0; k < QBLOCK / 2; k++) {
            w[k] = q4 ? (int8_t)((qb[k] & 0x0F) - 8) : (int8_t)qb[k];
            w[k + 16] = q4 ? (int8_t)((qb[k] >> 4) - 8) : (int8_t)qb[k + 16];
        }
        float dw = half_to_float(scale[n * nb + b]);
        for (int i = 0; i < mt; i++) {
            const int8_t *xb = a->qx + (m0 + i) * K + b * QBLOCK;
            int32_t s = 0;
            for (int k = 0; k < QBLOCK; k++) s += xb[k] * w[k];
            acc[i] += dw * a->dx[(m0 + i) * nb + b] * (float)s;
        }
    }
    for (int i = 0; i < mt; i++) out[(m0 + i) * N + n] = acc[i];
}

static void rows_portable(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                          int64_t n0, int64_t n1, int64_t m0, int mt, int64_t N, int q4) {
    for (int64_t n = n0; n < n1; n++) row_portable(a, q, scale, out, n, m0, mt, N, q4);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* NAME(..., n0, n1, m0, mt, ..., q4): rows [n0, n1) of W against rows [m0, m0 + mt) of x, by
 * NAME_t (inlined) with a constant row count and format, so that its accumulators stay in
 * registers, no format test runs inside its loops and no call is made per row of W */
#define ROWS_LOOP(NAME, MT_, Q4_)                                                                  \
    for (int64_t n = n0; n < n1; n++) NAME##_t(a, q, scale, out, n, m0, MT_, N, Q4_)
#define DISPATCH(NAME, TARGET)                                                                     \
    __attribute__((target(TARGET))) static void NAME(const acts *a, const uint8_t *q,              \
        const uint16_t *scale, float *out, int64_t n0, int64_t n1, int64_t m0, int mt,             \
        int64_t N, int q4) {                                                                       \
        switch (q4 * MT + mt) {                                                                    \
        case 1: ROWS_LOOP(NAME, 1, 0); break;                                                      \
        case 2: ROWS_LOOP(NAME, 2, 0); break;                                                      \
        case 3: ROWS_LOOP(NAME, 3, 0); break;                                                      \
        case 4: ROWS_LOOP(NAME, 4, 0); break;                                                      \
        case MT + 1: ROWS_LOOP(NAME, 1, 1); break;                                                 \
        case MT + 2: ROWS_LOOP(NAME, 2, 1); break;                                                 \
        case MT + 3: ROWS_LOOP(NAME, 3, 1); break;                                                 \
        default: ROWS_LOOP(NAME, 4, 1);                                                            \
        }                                                                                          \
    }

/* ---------------------------------------------------------------- AVX2 */
#define AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* quantize_portable's block in vectors: the same IEEE division and round half to even
 * (vroundps), so the same bytes; its 32 int32 packed to bytes by vpackssdw / vpacksswb, whose
 * lane order vpermd undoes. *d: the block's scale; *sum: the sum of its values. */
AVX2 __m256i quantize_block_avx2(const float *x, float *d, int32_t *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], m = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
        v[j] = _mm256_loadu_ps(x + 8 * j);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    *d = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h))) / 127.0f;
    *sum = 0;
    if (*d == 0.0f) return _mm256_setzero_si256();
    __m256i i[4];
    for (int j = 0; j < 4; j++)
        i[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(v[j], _mm256_set1_ps(*d)),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i t = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    __m128i u = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    u = _mm_add_epi32(u, _mm_shuffle_epi32(u, 0x4E));
    *sum = _mm_cvtsi128_si32(_mm_add_epi32(u, _mm_shuffle_epi32(u, 0xB1)));
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]),
                                                          _mm256_packs_epi32(i[2], i[3])),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* quantize_rows_q8 on n blocks, in vectors; nc: -8 * each 4 values' sum, by vpmaddubsw */
AVX2 void quantize_avx2(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        int32_t sum;
        __m256i q = quantize_block_avx2(x + r * QBLOCK, dx + r, &sum);
        _mm256_storeu_si256((__m256i *)(qx + r * QBLOCK), q);
        __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
        _mm256_storeu_si256((__m256i *)(nc + r * 8), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s4, 3)));
    }
}

/* x (M, K) quantized as the AVX2 kernels read it: each row padded with zero blocks to nbx, a
 * multiple of GROUP (px, pdx). q4_0: the blocks in pairs, [values 0-15 of b, of b + 1, values
 * 16-31 of b, of b + 1], as 32 bytes of its nibbles hold them, and xs (M, nbx) 8 * each
 * block's sum, its offset times x. q8_0: each block's 32 values, then their absolute values
 * (vpmaddubsw's unsigned operand, so that one vpsignb moves x's sign onto w). */
AVX2 void quantize_layout_avx2(const float *x, int64_t M, int64_t nb, int64_t nbx, const int q4,
                               int8_t *px, float *pdx, int32_t *xs) {
    int64_t xb = q4 ? QBLOCK : 2 * QBLOCK;   /* bytes of px a block */
    for (int64_t row = 0; row < M; row++) {
        int64_t first = q4 ? nb & ~(int64_t)1 : nb;   /* padding from this block's bytes on */
        memset(px + (row * nbx + first) * xb, 0, (size_t)((nbx - first) * xb));
        for (int64_t b = nb; b < nbx; b++) pdx[row * nbx + b] = 0.0f, xs[row * nbx + b] = 0;
        for (int64_t b = 0; b < nb; b++) {
            int64_t r = row * nbx + b;
            int32_t sum;
            __m256i q = quantize_block_avx2(x + (row * nb + b) * QBLOCK, pdx + r, &sum);
            xs[r] = 8 * sum;
            if (!q4) {
                _mm256_storeu_si256((__m256i *)(px + r * xb), q);
                _mm256_storeu_si256((__m256i *)(px + r * xb + QBLOCK), _mm256_abs_epi8(q));
                continue;
            }
            int8_t *to = px + (r & ~(int64_t)1) * xb + 16 * (b & 1);
            _mm_storeu_si128((__m128i *)to, _mm256_castsi256_si128(q));
            _mm_storeu_si128((__m128i *)(to + 32), _mm256_extracti128_si256(q, 1));
        }
    }
}

/* One pair of blocks (2 p, 2 p + 1 of a group) against a row of x, as int32 partial sums.
 * q4_0: 32 bytes of nibbles are both blocks' 16 bytes; the low nibbles hold values 0-15 of
 * each, the high ones 16-31, and avx2_layout stored x to match, so the unsigned q + 8 goes
 * straight into vpmaddubsw, two products' 16-bit sums add without overflow (4 * 15 * 127)
 * and one vpmaddwd gives [first block x4 | second x4]; the 8 sum(x) is taken off later.
 * q8_0: |x| times w with x's sign (no 16-bit sum overflows: 2 * 127 * 127 < 32767), one
 * block a ymm, then vphaddd: [a a b b | a a b b]. */
AVX2 __m256i pair_avx2(const __m256i *w, const int8_t *x, const int q4) {
    const __m256i ones = _mm256_set1_epi16(1);
#define LOAD(at) _mm256_loadu_si256((const __m256i *)(x + (at)))
    if (q4)
        return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[0], LOAD(0)),
                                                  _mm256_maddubs_epi16(w[1], LOAD(32))), ones);
    __m256i s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(LOAD(32), _mm256_sign_epi8(w[0], LOAD(0))), ones);
    __m256i s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(LOAD(96), _mm256_sign_epi8(w[1], LOAD(64))), ones);
#undef LOAD
    return _mm256_hadd_epi32(s0, s1);
}

/* pair p's weights: q4_0 [low nibbles, high nibbles]; q8_0 the two blocks */
AVX2 void pair_weights(const uint8_t *q, int p, const int q4, __m256i *w) {
    if (q4) {
        __m256i t = _mm256_loadu_si256((const __m256i *)(q + 32 * p)), nib = _mm256_set1_epi8(0x0F);
        w[0] = _mm256_and_si256(t, nib);
        w[1] = _mm256_and_si256(_mm256_srli_epi16(t, 4), nib);
        return;
    }
    w[0] = _mm256_loadu_si256((const __m256i *)(q + 64 * p));
    w[1] = _mm256_loadu_si256((const __m256i *)(q + 64 * p + 32));
}

/* A group of GROUP blocks (q, s: its weights and fp16 scales) against mt rows of x (the
 * group's start in row m0), into acc[mt]. Each row's eight block sums S meet in one vector
 * (vphaddd trees), then one conversion and one FMA with the eight scales dw * dx. */
AVX2 void group_avx2(const acts *a, const uint8_t *q, const uint16_t *s, int64_t at,
                     const int mt, const int q4, __m256 *acc) {
    __m256i half[MT], pend[MT], w[2];
    int64_t xb = q4 ? QBLOCK : 2 * QBLOCK;   /* bytes of x a block */
    for (int p = 0; p < GROUP / 2; p++) {
        pair_weights(q, p, q4, w);
        for (int i = 0; i < mt; i++) {
            __m256i v = pair_avx2(w, a->qx + (at + i * a->nbx) * xb + 2 * xb * p, q4);
            if (!(p & 1)) { pend[i] = v; continue; }
            v = _mm256_hadd_epi32(pend[i], v);  /* q8_0 [0 1 2 3 | 0 1 2 3], q4_0 [0 0 2 2 | 1 1 3 3] */
            if (p == 1) half[i] = v;
            else if (q4) half[i] = _mm256_hadd_epi32(half[i], v);   /* [0 2 4 6 | 1 3 5 7] */
            else half[i] = _mm256_add_epi32(_mm256_blend_epi32(half[i], v, 0xF0),
                                            _mm256_permute2x128_si256(half[i], v, 0x21));
        }
    }
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
    for (int i = 0; i < mt; i++) {
        __m256i S = half[i];
        if (q4) S = _mm256_sub_epi32(_mm256_permutevar8x32_epi32(S, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)),
                                     _mm256_loadu_si256((const __m256i *)(a->nc + at + i * a->nbx)));
        __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(a->dx + at + i * a->nbx));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), d, acc[i]);
    }
}

AVX2 void rows_avx2_t(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                      int64_t n, int64_t m0, const int mt, int64_t N, const int q4) {
    int64_t nb = a->nb, bb = q4 ? QBLOCK / 2 : QBLOCK, b = 0;
    __m256 acc[MT];
    for (int i = 0; i < mt; i++) acc[i] = _mm256_setzero_ps();
    for (; b + GROUP <= nb; b += GROUP)
        group_avx2(a, q + (n * nb + b) * bb, scale + n * nb + b, m0 * a->nbx + b, mt, q4, acc);
    if (b < nb) {   /* the last blocks, copied into a group of zeros (x is padded with zeros) */
        uint8_t wq[GROUP * QBLOCK] = {0};
        uint16_t ws[GROUP] = {0};
        memcpy(wq, q + (n * nb + b) * bb, (size_t)((nb - b) * bb));
        memcpy(ws, scale + n * nb + b, (size_t)(nb - b) * sizeof(uint16_t));
        group_avx2(a, wq, ws, m0 * a->nbx + b, mt, q4, acc);
    }
    for (int i = 0; i < mt; i++) {
        __m256 v = acc[i];
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        out[(m0 + i) * N + n] = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    }
}

DISPATCH(rows_avx2, "avx2,fma,f16c")

/* ---------------------------------------------------------------- AVX-512 VNNI */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"), always_inline)) \
    static inline

/* The r <= 4 blocks from b0 + p of row n of W, as two vectors of unsigned bytes whose lane j
 * (4 bytes) belongs to block j / 4: lo holds values 0-15 of each block, hi values 16-31.
 * q4_0: one 64-byte load, low nibbles and high nibbles (q + 8, as stored). q8_0: two loads
 * regrouped by 16-byte quarters, plus 128 (w ^ 0x80). x is stored to match (vnni_layout). */
VNNI void quad_weights(const uint8_t *q, int64_t at, int r, const int q4, __m512i *lo, __m512i *hi) {
    if (q4) {
        const __m512i nib = _mm512_set1_epi8(0x0F);
        __m512i t = _mm512_maskz_loadu_epi8(r == 4 ? ~(__mmask64)0 : ((__mmask64)1 << (16 * r)) - 1,
                                            q + at * QBLOCK / 2);
        *lo = _mm512_and_si512(t, nib);
        *hi = _mm512_and_si512(_mm512_srli_epi16(t, 4), nib);
        return;
    }
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const uint8_t *w = q + at * QBLOCK;
    __m512i a = r >= 2 ? _mm512_loadu_si512(w) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)w));
    __m512i b = r == 4 ? _mm512_loadu_si512(w + 64)
              : r == 3 ? _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(w + 64)))
                       : _mm512_setzero_si512();
    *lo = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)), k80);
    *hi = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1)), k80);
}

/* those r blocks against mt rows of x, into acc[mt]; d[i]: row i's dw * dx for the 16 blocks
 * from b0. The unsigned offset (8 for q4_0, 128 for q8_0) times x's sum is nc, dpbusd's start. */
VNNI void quad_vnni(const acts *a, const uint8_t *q, int64_t n, int64_t m0, const int mt,
                    int64_t b0, int p, int r, const int q4, const __m512 *d, __m512 *acc) {
    const __m512i quarter = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    int64_t b = b0 + p, nb = a->nb;
    __mmask64 mb = r == 4 ? ~(__mmask64)0 : ((__mmask64)1 << (16 * r)) - 1;
    __mmask16 ml = (__mmask16)((1u << (4 * r)) - 1);
    __m512i lo, hi;
    quad_weights(q, n * nb + b, r, q4, &lo, &hi);
    __m512i idx = _mm512_add_epi32(quarter, _mm512_set1_epi32(p));
    for (int i = 0; i < mt; i++) {
        const int8_t *x = a->qx + ((m0 + i) * nb + b) * QBLOCK;
        __m512i s = _mm512_maskz_loadu_epi32(ml, a->nc + ((m0 + i) * nb + b) * 4);
        s = _mm512_dpbusd_epi32(s, lo, _mm512_maskz_loadu_epi8(mb, x));
        s = _mm512_dpbusd_epi32(s, hi, _mm512_maskz_loadu_epi8(mb, x + 16 * r));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, d[i]), acc[i]);
    }
}

VNNI void rows_vnni_t(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                      int64_t n, int64_t m0, const int mt, int64_t N, const int q4) {
    int64_t nb = a->nb;
    __m512 acc0[MT], acc1[MT], d[MT];   /* two FMA chains in flight a row */
    for (int i = 0; i < mt; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {      /* 16 blocks: one vector of scales */
        int r = nb - b0 < 16 ? (int)(nb - b0) : 16;
        __mmask16 ms = (__mmask16)((1u << r) - 1);
        __m512 dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(ms, scale + n * nb + b0));
        for (int i = 0; i < mt; i++)
            d[i] = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(ms, a->dx + (m0 + i) * nb + b0));
        int p = 0;
        for (; p + 8 <= r; p += 8) {
            quad_vnni(a, q, n, m0, mt, b0, p, 4, q4, d, acc0);
            quad_vnni(a, q, n, m0, mt, b0, p + 4, 4, q4, d, acc1);
        }
        for (; p < r; p += 4) quad_vnni(a, q, n, m0, mt, b0, p, r - p < 4 ? r - p : 4, q4, d, acc0);
    }
    for (int i = 0; i < mt; i++)
        out[(m0 + i) * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
}

DISPATCH(rows_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")
#endif

/* ---------------------------------------------------------------- dispatch */

int quant_path(int wanted) {
#if defined(__x86_64__) && defined(__GNUC__)
    /* asked once: cpuid traps to the hypervisor in a VM, tens of microseconds a call */
    static int features = -1;
    int f = __atomic_load_n(&features, __ATOMIC_RELAXED);
    if (f < 0) __atomic_store_n(&features, f = cpu_features(), __ATOMIC_RELAXED);
    if (wanted >= QPATH_AVX512_VNNI && (f & CPU_AVX512_VNNI)) return QPATH_AVX512_VNNI;
    if (wanted >= QPATH_AVX2 && (f & CPU_AVX2)) return QPATH_AVX2;
#endif
    return QPATH_PORTABLE;
}

void quantize_rows_q8(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t M, int64_t K,
                      int path) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (quant_path(path) != QPATH_PORTABLE) {
        quantize_avx2(x, qx, dx, nc, M * K / QBLOCK);
        return;
    }
#endif
    quantize_portable(x, qx, dx, nc, M * K / QBLOCK);
}

typedef void (*rows_fn)(const acts *, const uint8_t *, const uint16_t *, float *, int64_t,
                        int64_t, int64_t, int, int64_t, int);

typedef struct {                 /* one product, as the pool's chunks see it */
    acts a;
    rows_fn rows;
    const uint8_t *q;
    const uint16_t *scale;
    float *out;
    int64_t M, N;
    int q4;
} QWork;

/* chunk c: ROW_CHUNK rows of W against every row of x (the chunk's rows of W stay in cache) */
static void q_chunk(void *ctx, int64_t c) {
    const QWork *w = ctx;
    int64_t n0 = c * ROW_CHUNK, n1 = n0 + ROW_CHUNK < w->N ? n0 + ROW_CHUNK : w->N;
    for (int64_t m0 = 0; m0 < w->M; m0 += MT)
        w->rows(&w->a, w->q, w->scale, w->out, n0, n1, m0, w->M - m0 < MT ? (int)(w->M - m0) : MT,
                w->N, w->q4);
}

static int64_t padded(int64_t nb) { return (nb + GROUP - 1) / GROUP * GROUP; }

/* nc, dx, AVX2's xs and pdx, qx, AVX2's px, as matmul_q_i8_into lays them */
int64_t matmul_q_i8_scratch(int64_t M, int64_t K) {
    int64_t nb = K / QBLOCK, nbx = padded(nb);
    return M * (K + nb * 4 + nbx * 8 + K + nbx * 2 * QBLOCK);
}

void matmul_q_i8_into(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                      int64_t N, int64_t K, int q4, int path, void *scratch) {
    int64_t nb = K / QBLOCK, nbx = padded(nb);
    int32_t *nc = scratch;                          /* (M, K / 4) */
    float *dx = (float *)(nc + M * K / 4);          /* (M, nb) */
    int32_t *xs = (int32_t *)(dx + M * nb);         /* (M, nbx) */
    float *pdx = (float *)(xs + M * nbx);           /* (M, nbx) */
    int8_t *qx = (int8_t *)(pdx + M * nbx);         /* (M, K) */
    int8_t *px = qx + M * K;                        /* (M, nbx * 64): q4_0 uses half */
    QWork w = {{qx, dx, nc, K, nb, nb}, rows_portable, q, scale, out, M, N, q4};
    int chosen = quant_path(path);
#if defined(__x86_64__) && defined(__GNUC__)
    if (chosen == QPATH_AVX2) {
        quantize_layout_avx2(x, M, nb, nbx, q4, px, pdx, xs);
        w.a = (acts){px, pdx, xs, K, nb, nbx};
        w.rows = rows_avx2;
    }
#endif
    if (chosen != QPATH_AVX2) quantize_rows_q8(x, qx, dx, nc, M, K, path);
#if defined(__x86_64__) && defined(__GNUC__)
    if (chosen == QPATH_AVX512_VNNI) {
        vnni_layout(qx, nc, M, nb, q4);
        w.rows = rows_vnni;
    }
#endif
    int64_t chunks = (N + ROW_CHUNK - 1) / ROW_CHUNK;
    if (N * K >= QUANT_PARALLEL_MIN) pool_run(q_chunk, &w, chunks);
    else for (int64_t c = 0; c < chunks; c++) q_chunk(&w, c);
}

int matmul_q_i8(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                int64_t N, int64_t K, int q4, int path) {
    void *scratch = malloc((size_t)matmul_q_i8_scratch(M, K));
    if (!scratch) return -1;
    matmul_q_i8_into(x, q, scale, out, M, N, K, q4, path, scratch);
    free(scratch);
    return 0;
}
