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

void silu_forward(const float *x, float *y, int64_t n) {
    const float *restrict px = x;
    float *restrict py = y;
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) py[i] = px[i] * sigmoid(px[i]);
}

/* y = x * s(x) with s' = s (1 - s): dx = dy * (s + x s (1 - s)) = dy * s * (1 + x (1 - s)). */
void silu_backward(const float *dy, const float *x, float *dx, int64_t n) {
    const float *restrict pdy = dy, *restrict px = x;
    float *restrict pdx = dx;
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoid(px[i]);
        pdx[i] = pdy[i] * s * (1.0f + px[i] * (1.0f - s));
    }
}
