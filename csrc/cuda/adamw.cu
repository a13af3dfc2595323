/* adamw.cu: one AdamW step in place, elementwise over a parameter tensor.
 *
 * The maths and the order of operations are numpy_kernels.adamw_update's (and csrc/adamw.c's):
 * moments first, then bias correction, then the decoupled weight decay (param *= 1 - lr * wd)
 * and the Adam step. The per-step scalars are computed once on the host, as adamw.c does.
 */
#include <math.h>

#include "common.cuh"

static __global__ void adamw_kernel(float *__restrict__ param, const float *__restrict__ grad,
                                    float *__restrict__ m, float *__restrict__ v, int64_t n,
                                    float lr, float beta1, float beta2, float eps,
                                    float one_minus_beta1, float one_minus_beta2, float correction1,
                                    float correction2, float decay) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = grad[i];
        float mi = beta1 * m[i] + one_minus_beta1 * g;
        float vi = beta2 * v[i] + one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float m_hat = mi / correction1, v_hat = vi / correction2;
        param[i] = param[i] * decay - lr * m_hat / (sqrtf(v_hat) + eps);
    }
}

int adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    if (n == 0) return 0;
    // in double and then rounded, as NumPy does with Python floats: 1 - beta2^step is ~1e-3
    // early on, where a float power would lose digits
    float correction1 = (float)(1.0 - pow(beta1, (double)step));
    float correction2 = (float)(1.0 - pow(beta2, (double)step));
    float one_minus_beta1 = (float)(1.0 - beta1), one_minus_beta2 = (float)(1.0 - beta2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    unsigned blocks = blocks_for(n);
    LAUNCH(adamw_kernel, blocks, THREADS, param, grad, m, v, n, lr, beta1, beta2, eps,
           one_minus_beta1, one_minus_beta2, correction1, correction2, decay);
    return launch_status("adamw_update");
}
