/* attention_decode.c: attention for decoding, the newest Tq queries (1..16 while decoding)
 * against a KV cache, read in place.
 *
 * The maths is numpy_kernels.attention_decode (attention_forward's out for the newest queries);
 * here each (head, query) row streams its head's cache once, in chunks, with an online softmax,
 * so the stack holds one chunk of scores whatever the cache's length. No lse, no backward.
 *
 * Not here: training's tiled attention (attention.c) or the cache's writes (numpy kv_write).
 * Read csrc/cuda/decode.cu for its GPU twin, tests/test_generate_kernels.py for the checks.
 */
#include <math.h>

#include "fastmath.h"
#include "parallel.h"
#include "tinyllm.h"

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Keys per chunk of scores: the online softmax runs over chunks, so the stack holds
 * DECODE_CHUNK scores whatever the cache's length. */
#define DECODE_CHUNK 256

/* One query row q (hs,) over keys and values k, v (n, hs): out (hs,) = softmax(q k^T scale) v.
 * The cache is streamed once: a chunk's scores, then its values weighted by exp(s - m). */
static void decode_row(const float *restrict q, const float *restrict k, const float *restrict v,
                       float *restrict out, int64_t n, int64_t hs, float scale) {
    float s[DECODE_CHUNK], m = -INFINITY, l = 0.0f;
    for (int64_t d = 0; d < hs; d++) out[d] = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += DECODE_CHUNK) {
        int64_t nj = min64(DECODE_CHUNK, n - j0);
        float chunk_max = -INFINITY;
        for (int64_t j = 0; j < nj; j++) {
            const float *kj = k + (j0 + j) * hs;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < hs; d++) dot += q[d] * kj[d];
            s[j] = dot * scale;
            chunk_max = s[j] > chunk_max ? s[j] : chunk_max;
        }
        float m_new = fmaxf(m, chunk_max), correction = expf(m - m_new), sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < nj; j++) {
            s[j] = exp_nonpositive(s[j] - m_new);
            sum += s[j];
        }
        l = l * correction + sum;
        m = m_new;
        for (int64_t d = 0; d < hs; d++) out[d] *= correction;
        for (int64_t j = 0; j < nj; j++) {                         // out += p_j v_j
            const float *vj = v + (j0 + j) * hs;
            float p = s[j];
#pragma omp simd
            for (int64_t d = 0; d < hs; d++) out[d] = fmaf(p, vj[d], out[d]);
        }
    }
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hs; d++) out[d] *= inv;
}

void attention_decode(const float *q, const float *k_cache, const float *v_cache, float *out,
                      int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t Tmax, int64_t hs) {
    float scale = 1.0f / sqrtf((float)hs);
    // one (head, query) row per task: B * nh * Tq of them, each reading its head's cache
#pragma omp parallel for collapse(2) schedule(static) if (B * nh * Tq * Tk * hs >= PARALLEL_MIN)
    for (int64_t bh = 0; bh < B * nh; bh++)
        for (int64_t i = 0; i < Tq; i++) {
            int64_t visible = Tk - Tq + i + 1;                     // query i sits at Tk - Tq + i
            decode_row(q + (bh * Tq + i) * hs, k_cache + bh * Tmax * hs, v_cache + bh * Tmax * hs,
                       out + (bh * Tq + i) * hs, visible, hs, scale);
        }
}
