/* adamw.c: one AdamW step in place, elementwise over a parameter tensor, and the sum of
 * squares that gradient clipping takes the norm of.
 *
 * The maths and the order of operations are numpy_kernels.adamw_update's:
 * moments first, then bias correction, then the decoupled weight decay
 * (param *= 1 - lr * wd) and the Adam step. The schedule, the parameter groups
 * and gradient clipping are optim.py's. Read optim.py next.
 */
#include <math.h>

#include "parallel.h"
#include "tinyllm.h"

void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    // the scalars once, in double and then rounded, as NumPy does with Python floats:
    // 1 - beta2^step is ~1e-3 early on, where a float power would lose digits
    float correction1 = (float)(1.0 - pow(beta1, (double)step));
    float correction2 = (float)(1.0 - pow(beta2, (double)step));
    float one_minus_beta1 = (float)(1.0 - beta1), one_minus_beta2 = (float)(1.0 - beta2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    float *restrict p = param, *restrict pm = m, *restrict pv = v;
    const float *restrict g = grad;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        pm[i] = beta1 * pm[i] + one_minus_beta1 * g[i];
        pv[i] = beta2 * pv[i] + one_minus_beta2 * g[i] * g[i];
        float m_hat = pm[i] / correction1;
        float v_hat = pv[i] / correction2;
        p[i] *= decay;
        p[i] -= lr * m_hat / (sqrtf(v_hat) + eps);
    }
}

/* numpy_kernels.sum_of_squares over one array: the squares summed in double (the embedding's
 * grad alone has millions of terms), in another order than NumPy's; in parallel, where NumPy
 * ran on one thread (18 ms of a bench step's gradient clipping). */
double sum_of_squares(const float *x, int64_t n) {
    double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}
