/* elementwise.c: out = a + b, the residual stream's add.
 *
 * Its backward is the identity (ops.add hands the gradient to both inputs),
 * so there is no add_backward. Not a broadcasting add: both operands have n
 * values (ops.py falls back to NumPy for other shapes). Read activation.c next.
 */
#include "parallel.h"
#include "tinyllm.h"

void add_forward(const float *a, const float *b, float *out, int64_t n) {
    // restrict holds: the wrapper allocates out fresh
    const float *restrict pa = a, *restrict pb = b;
    float *restrict po = out;
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) po[i] = pa[i] + pb[i];
}
