/* fastmath.h: a vectorizable exp for the kernels, shared by attention, softmax,
 * cross-entropy and SiLU, and its AVX-512 twin on 16 lanes. Not part of the C API
 * (tinyllm.h): static inline, so each kernel file gets its own copy to vectorize. */
#ifndef TINYLLM_FASTMATH_H
#define TINYLLM_FASTMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for the x <= 0 that softmax feeds it, within 2 ulp of expf; 0 below -87
 * (expf's last normal results), NaN stays NaN. libm's expf is a call the compiler
 * cannot vectorize: in attention the T^2/2 exponentials per head then cost as much as
 * the tile matmuls, and in SiLU, softmax and cross-entropy it is most of the time;
 * this one (Cephes' polynomial) vectorizes in `omp simd` loops. */
static inline float exp_nonpositive(float x) {
    float xc = x > -87.0f ? x : -87.0f;                          // NaN -> -87: the int cast
    xc = xc < 88.0f ? xc : 88.0f;                                // and the shift stay defined
    float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;   // round(x / ln 2): 1.5 * 2^23 trick
    float r = fmaf(n, -0.693359375f, xc);                       // r = x - n ln 2, in two parts
    r = fmaf(n, 2.12194440e-4f, r);                              // |r| <= ln 2 / 2
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;                                // exp(r)
    int32_t bits = ((int32_t)n + 127) << 23;                     // 2^n, n in [-126, 127]
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return x < -87.0f ? 0.0f : (x == x ? p * two_n : x);
}

#ifdef __AVX512F__
#include <immintrin.h>

/* exp_nonpositive on 16 lanes, step for step (the same roundings, with the build's
 * -ffp-contract=fast fusing the same multiply-adds there, so the same bits): GCC's
 * vectorizer keeps to 256-bit vectors on these Intel cores (its -mprefer-vector-width=256),
 * which halves the rate of a kernel whose time is this arithmetic. */
static inline __m512 exp_nonpositive16(__m512 x) {
    const __m512 big = _mm512_set1_ps(12582912.0f);
    __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));       // NaN -> -87, as above
    xc = _mm512_min_ps(xc, _mm512_set1_ps(88.0f));
    __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504f), big), big);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);          // NaN stays
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ),
                              _mm512_setzero_ps());
}

/* The first min(n, 16) lanes: a loop's last, partial vector. */
static inline __mmask16 lanes16(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}
#endif

#endif
