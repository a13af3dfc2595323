/* heads.c: the attention's layout copies between the projections' rows and the heads.
 *
 * The maths is numpy_kernels.split_heads / merge_heads (cuda/heads.cu is the GPU's twin, with
 * the same arguments): x (B, T, P, nh, hs), P parts side by side in each row (q, k, v: P = 3;
 * an attention output or its gradient: P = 1), and a part p as out (B, nh, T, hs), so that a
 * head's T rows are contiguous for attention.c. split_heads gathers part p out of x;
 * merge_heads scatters it back. Plain copies of hs floats, in parallel over (batch, head):
 * NumPy did them on one thread, with two copies for a merge (np.stack, then the transpose).
 * A training step's attention on the C backend no longer calls them: attention_qkv_* read the
 * heads in place from qkv. They remain for decoding (the KV cache takes (B, nh, T, hs) heads)
 * and as the definition the in-place kernels are tested against. Read attention.c next.
 */
#include <string.h>

#include "parallel.h"
#include "tinyllm.h"

/* part p of x (B, T, P, nh, hs) <-> heads (B, nh, T, hs); to_heads picks the direction */
static void copy_heads(const float *src, float *dst, int64_t B, int64_t T, int64_t P, int64_t p,
                       int64_t nh, int64_t hs, int to_heads) {
    const size_t row = (size_t)hs * sizeof(float);
#pragma omp parallel for collapse(2) schedule(static) if (B * T * nh * hs >= PARALLEL_MIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t rows = (((b * T + t) * P + p) * nh + h) * hs;   // x[b, t, p, h]
                int64_t heads = ((b * nh + h) * T + t) * hs;             // out[b, h, t]
                if (to_heads)
                    memcpy(dst + heads, src + rows, row);
                else
                    memcpy(dst + rows, src + heads, row);
            }
}

void split_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                 int64_t nh, int64_t hs) {
    copy_heads(x, out, B, T, P, p, nh, hs, 1);
}

void merge_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                 int64_t nh, int64_t hs) {
    copy_heads(x, out, B, T, P, p, nh, hs, 0);
}
