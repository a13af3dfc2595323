/* activation.c: SiLU, y = x * sigmoid(x), forward and backward, elementwise.
 *
 * The maths is numpy_kernels.silu_forward / silu_backward (which writes the
 * sigmoid as 0.5 * (1 + tanh(x / 2)); here it is the two-sided exp form, the
 * same function, also free of overflow). Not SwiGLU's gate product: that is
 * plain multiplication in ops.py. Read norm.c next.
 */
#include <math.h>

#include "fastmath.h"
#include "parallel.h"
#include "tinyllm.h"

/* sigmoid(x) from exp(-|x|) <= 1, so no exp overflows and no inf/inf appears. */
static inline float sigmoid(float x) {
    float e = exp_nonpositive(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

#ifdef __AVX512F__
/* sigmoid on 16 lanes, 1 / (1 + e) by vrcp14ps and one Newton step (relative error 2^-14,
 * then about 2^-28 before rounding: within an ulp or two of the quotient): vdivps was half of
 * the kernel's time (BENCHMARKS.md, issue 16). */
static inline __m512 sigmoid16(__m512 x) {
    __m512 e = exp_nonpositive16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), e), r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));   // r (2 - d r)
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(r, negative, e, r);                           // x < 0: e / (1 + e)
}
#endif

void silu_forward(const float *x, float *y, int64_t n) {
    const float *restrict px = x;
    float *restrict py = y;
#ifdef __AVX512F__
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, px + i);
        _mm512_mask_storeu_ps(py + i, m, _mm512_mul_ps(v, sigmoid16(v)));
    }
#else
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) py[i] = px[i] * sigmoid(px[i]);
#endif
}

/* y = x * s(x) with s' = s (1 - s): dx = dy * (s + x s (1 - s)) = dy * s * (1 + x (1 - s)). */
void silu_backward(const float *dy, const float *x, float *dx, int64_t n) {
    const float *restrict pdy = dy, *restrict px = x;
    float *restrict pdx = dx;
#ifdef __AVX512F__
    const __m512 one = _mm512_set1_ps(1.0f);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, px + i), s = sigmoid16(v);
        __m512 t = _mm512_fmadd_ps(v, _mm512_sub_ps(one, s), one);          // 1 + x (1 - s)
        _mm512_mask_storeu_ps(pdx + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, pdy + i), s), t));
    }
#else
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoid(px[i]);
        pdx[i] = pdy[i] * s * (1.0f + px[i] * (1.0f - s));
    }
#endif
}
