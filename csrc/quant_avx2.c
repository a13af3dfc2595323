/* quant_avx2.c: the AVX2 path of quant_i8.c's products (out = x @ W^T, x quantized to int8
 * per block of 32, W q8_0 or q4_0), and x's quantization in vectors.
 *
 * What it is: the kernels for CPUs with AVX2 but no AVX-512 VNNI (AMD Zen 2 and 3, Intel
 * before Ice Lake). Without vpdpbusd a block's integer dot product S is vpmaddubsw (unsigned
 * x signed bytes into 16-bit pair sums) + vpmaddwd (into int32 lanes), llama.cpp's AVX2 way,
 * and on a Zen 3 core that, not the memory, bounded the products (BENCHMARKS.md, "Quantized
 * decoding on AVX2"). So every instruction per block that can go, goes:
 *   - x is quantized once per product into a layout made for these kernels (each row padded
 *     with zero blocks to a multiple of GROUP): for q4_0 the values of a pair of blocks
 *     ordered as 32 bytes of nibbles hold them, so the low and the high nibbles of one load
 *     (one and, one shift, one and) go straight into vpmaddubsw as its unsigned operand, the
 *     stored q + 8 fixed up by 8 sum(x) per block (precomputed: S = sum (q + 8) x - 8 sum x);
 *     for q8_0 x's absolute values beside x, the unsigned operand, so one vpsignb (w with x's
 *     sign) is all a block needs before vpmaddubsw;
 *   - the int32 lanes of eight blocks meet in one vector (vphaddd), so eight blocks take one
 *     conversion, one FMA and one fp16-scale conversion (vcvtph2ps of eight scales) together,
 *     not one each with a scalar scale.
 * The integers are exact, so the result is the definition's (tinyllm.quant.formats.matmul_q_i8)
 * up to the order of the float32 sum over blocks.
 *
 * What it is not: the dispatch, the thread split or the other paths (quant_i8.c).
 *
 * Read next: quant_i8.c, quant_i8.h, tests/test_quant_kernels.py.
 */
#include <string.h>
#include "quant_i8.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
/* rows of W ahead that a row's pass prefetches: one core streamed the gpt2 preset's step 3-19 %
 * faster with it (4, 8 and 16 alike, CPU time of one thread, BENCHMARKS.md) */
#define AHEAD 4

/* quantize_portable's block in vectors: for finite x the same IEEE division and round half to
 * even (vroundps), so the same bytes; its 32 int32 packed to bytes by vpackssdw / vpacksswb,
 * whose lane order vpermd undoes. *d: the block's scale; *sum: the sum of its values. */
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
__attribute__((target("avx2,fma,f16c"))) void quantize_avx2(const float *x, int8_t *qx, float *dx,
                                                            int32_t *nc, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        int32_t sum;
        __m256i q = quantize_block_avx2(x + r * QBLOCK, dx + r, &sum);
        _mm256_storeu_si256((__m256i *)(qx + r * QBLOCK), q);
        __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                                       _mm256_set1_epi16(1));
        _mm256_storeu_si256((__m256i *)(nc + r * 8),
                            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s4, 3)));
    }
}

/* x (M, K) quantized as the AVX2 kernels read it: each row padded with zero blocks to nbx, a
 * multiple of GROUP. q4_0: the blocks in pairs, [values 0-15 of b, of b + 1, values 16-31 of
 * b, of b + 1], as 32 bytes of its nibbles hold them, and nc (M, nbx) 8 * each block's sum,
 * the offset times x. q8_0: each block's 32 values, then their absolute values. */
__attribute__((target("avx2,fma,f16c"))) void quantize_layout_avx2(
    const float *x, int64_t M, int64_t nb, int q4, int8_t *qx, float *dx, int32_t *nc) {
    int64_t nbx = quant_avx2_blocks(nb), xb = quant_avx2_bytes(q4);   /* bytes of qx a block */
    for (int64_t row = 0; row < M; row++) {
        int64_t first = q4 ? nb & ~(int64_t)1 : nb;   /* padding from this block's bytes on */
        memset(qx + (row * nbx + first) * xb, 0, (size_t)((nbx - first) * xb));
        for (int64_t b = nb; b < nbx; b++) dx[row * nbx + b] = 0.0f, nc[row * nbx + b] = 0;
        for (int64_t b = 0; b < nb; b++) {
            int64_t r = row * nbx + b;
            int32_t sum;
            __m256i q = quantize_block_avx2(x + (row * nb + b) * QBLOCK, dx + r, &sum);
            nc[r] = 8 * sum;
            if (!q4) {
                _mm256_storeu_si256((__m256i *)(qx + r * xb), q);
                _mm256_storeu_si256((__m256i *)(qx + r * xb + QBLOCK), _mm256_abs_epi8(q));
                continue;
            }
            int8_t *to = qx + (r & ~(int64_t)1) * xb + 16 * (b & 1);
            _mm_storeu_si128((__m128i *)to, _mm256_castsi256_si128(q));
            _mm_storeu_si128((__m128i *)(to + 32), _mm256_extracti128_si256(q, 1));
        }
    }
}

/* One pair of blocks (2 p, 2 p + 1 of a group) against a row of x, as int32 partial sums.
 * q4_0: [first block x4 | second x4]: the two vpmaddubsw's 16-bit sums add without overflow
 * (4 * 15 * 127 < 32767), then one vpmaddwd. q8_0: |x| times w with x's sign (2 * 127 * 127 <
 * 32767), a vpmaddwd a block, then vphaddd: [a a b b | a a b b]. */
AVX2 __m256i pair_avx2(const __m256i *w, const int8_t *x, const int q4) {
    const __m256i ones = _mm256_set1_epi16(1);
#define LOAD(at) _mm256_loadu_si256((const __m256i *)(x + (at)))
    if (q4)
        return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[0], LOAD(0)),
                                                  _mm256_maddubs_epi16(w[1], LOAD(32))), ones);
    __m256i s0 = _mm256_maddubs_epi16(LOAD(32), _mm256_sign_epi8(w[0], LOAD(0)));
    __m256i s1 = _mm256_maddubs_epi16(LOAD(96), _mm256_sign_epi8(w[1], LOAD(64)));
    s0 = _mm256_madd_epi16(s0, ones);
    s1 = _mm256_madd_epi16(s1, ones);
#undef LOAD
    return _mm256_hadd_epi32(s0, s1);
}

/* pair p's weights: q4_0 [low nibbles, high nibbles] of its 32 bytes; q8_0 the two blocks.
 * one: only the first block is there (a row's last, odd one): nothing past it is read. */
AVX2 void pair_weights(const uint8_t *q, int p, const int q4, int one, __m256i *w) {
    if (q4) {
        const __m256i nib = _mm256_set1_epi8(0x0F);
        __m256i t = one ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(q + 32 * p)))
                        : _mm256_loadu_si256((const __m256i *)(q + 32 * p));
        w[0] = _mm256_and_si256(t, nib);
        w[1] = _mm256_and_si256(_mm256_srli_epi16(t, 4), nib);
        return;
    }
    w[0] = _mm256_loadu_si256((const __m256i *)(q + 64 * p));
    w[1] = one ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(q + 64 * p + 32));
}

/* The r <= GROUP blocks from q (s: their 8 fp16 scales, zero past r) against mt rows of x
 * (the group's x in row m0 at block `at`), into acc[mt]. Each row's block sums S meet in one
 * vector (vphaddd trees), then one conversion and one FMA with the eight scales dw * dx;
 * x's padding makes a missing block's S and dx zero. */
AVX2 void group_avx2(const acts *a, const uint8_t *q, const uint16_t *s, int64_t at,
                     const int mt, const int q4, int r, __m256 *acc) {
    __m256i half[MT], pend[MT], w[2];
    int64_t xb = quant_avx2_bytes(q4);
    for (int i = 0; i < mt; i++) half[i] = pend[i] = _mm256_setzero_si256();
    for (int p = 0; p < GROUP / 2; p++) {
        if (2 * p < r) pair_weights(q, p, q4, 2 * p + 1 == r, w);
        for (int i = 0; i < mt; i++) {
            __m256i v = 2 * p < r ? pair_avx2(w, a->qx + (at + i * a->nbx) * xb + 2 * xb * p, q4)
                                  : _mm256_setzero_si256();
            if (!(p & 1)) { pend[i] = v; continue; }
            /* block sums by lane: q8_0 [0 1 2 3 | 0 1 2 3], q4_0 [0 0 2 2 | 1 1 3 3] */
            v = _mm256_hadd_epi32(pend[i], v);
            if (p == 1) half[i] = v;
            else if (q4) half[i] = _mm256_hadd_epi32(half[i], v);   /* [0 2 4 6 | 1 3 5 7] */
            else half[i] = _mm256_add_epi32(_mm256_blend_epi32(half[i], v, 0xF0),
                                            _mm256_permute2x128_si256(half[i], v, 0x21));
        }
    }
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);   /* q4_0's to 0 .. 7 */
    for (int i = 0; i < mt; i++) {
        __m256i S = half[i];
        const __m256i *nc = (const __m256i *)(a->nc + at + i * a->nbx);
        if (q4) S = _mm256_sub_epi32(_mm256_permutevar8x32_epi32(S, order), _mm256_loadu_si256(nc));
        __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(a->dx + at + i * a->nbx));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), d, acc[i]);
    }
}

AVX2 void quant_rows_avx2_t(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                            int64_t n, int64_t m0, const int mt, int64_t N, const int q4) {
    int64_t nb = a->nb, bb = q4 ? QBLOCK / 2 : QBLOCK, b = 0;
    __m256 acc[MT];
    for (int i = 0; i < mt; i++) acc[i] = _mm256_setzero_ps();
    if (n + AHEAD < N) {   /* row n + AHEAD's blocks and scales on their way */
        for (int64_t k = 0; k < nb * bb; k += 64)
            _mm_prefetch((const char *)(q + (n + AHEAD) * nb * bb + k), _MM_HINT_T0);
        _mm_prefetch((const char *)(scale + (n + AHEAD) * nb), _MM_HINT_T0);
    }
    for (; b + GROUP <= nb; b += GROUP)
        group_avx2(a, q + (n * nb + b) * bb, scale + n * nb + b, m0 * a->nbx + b, mt, q4, GROUP,
                   acc);
    if (b < nb) {   /* the last blocks: their scales copied beside zeros (none past the row read) */
        uint16_t s[GROUP] = {0};
        memcpy(s, scale + n * nb + b, (size_t)(nb - b) * sizeof(uint16_t));
        if (nb - b == GROUP / 2)   /* half a group (C = 384: 12 blocks), unrolled as a whole one */
            group_avx2(a, q + (n * nb + b) * bb, s, m0 * a->nbx + b, mt, q4, GROUP / 2, acc);
        else
            group_avx2(a, q + (n * nb + b) * bb, s, m0 * a->nbx + b, mt, q4, (int)(nb - b), acc);
    }
    for (int i = 0; i < mt; i++) {
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps(acc[i], 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        out[(m0 + i) * N + n] = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    }
}

DISPATCH(quant_rows_avx2, "avx2,fma,f16c")
#endif
