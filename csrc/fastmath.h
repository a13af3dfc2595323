/* fastmath.h: a vectorizable exp for the kernels, shared by attention, softmax,
 * cross-entropy and SiLU. Not part of the C API (tinyllm.h): static inline, so
 * each kernel file gets its own copy to vectorize. */
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

#endif
