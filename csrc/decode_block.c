/* decode_block.c: one transformer block of a decoding step in one call.
 *
 * What it is: decode_block runs what model.Block.forward computes for the few new rows of a
 * decoding step (B x T, T small) when the KV cache already holds the `start` earlier positions:
 *   h = rmsnorm(x) ln_1;  qkv = h @ c_attn^T;  k, v -> the cache at [start, start + T);
 *   a = attention of the new queries over the cache's start + T positions;
 *   x1 = x + a @ attn.c_proj^T;  out = x1 + silu(rmsnorm(x1) ln_2 @ c_fc^T) @ mlp.c_proj^T
 * A step of a small model spends more time in Python around its ~15 kernel calls per block than
 * in the kernels (BENCHMARKS.md, "Decoding"): here they are one call. It adds no loop of its own
 * but the head split and the cache write (copies): the norms, products, attention, SiLU and adds
 * are the kernels of norm.c, decode.c (gemv, attention_decode: their threads are pool.c's),
 * quant_i8.c (matmul_q_i8_into: its threads too), activation.c and elementwise.c, so the numbers
 * are those of the unfused C path. A weight is float32 or quantized (q8_0 / q4_0 blocks,
 * tinyllm/quant/formats.py), each its own format.
 *
 * decode_step chains the blocks of a whole decoding step, then the final norm and the head.
 *
 * What it is not: a prefill (an empty cache, or more rows than gemv's 16, take the GEMM and
 * flash-attention path), a bf16 or LoRA block (Python falls back to the unfused path),
 * or a backward. The meaning is numpy_kernels.decode_block, the composition of those kernels'
 * NumPy twins; tests/test_c_decode_block.py compares them.
 *
 * Read next: decode.c, quant_i8.c, tinyllm/backends/numpy_kernels.py decode_block.
 */
#include <stdint.h>
#include <stdlib.h>
#include "tinyllm.h"

/* out (M, N) = x (M, K) @ W^T in W's format; qscratch: matmul_q_i8_scratch(M, K) bytes at least */
static void product(const decode_weight *w, const float *x, float *out, int64_t M, int64_t N,
                    int64_t K, int path, int qpath, void *qscratch) {
    if (w->fmt == DECODE_FP32) gemv(x, w->w, out, M, N, K, path);
    else matmul_q_i8_into(x, w->w, w->scale, out, M, N, K, w->fmt == DECODE_Q4_0, qpath, qscratch);
}

/* The new keys and values (B, T, nh, hs inside qkv's rows) into the caches (B, nh, Tmax, hs) at
 * [start, start + T), and the queries into q (B, nh, T, hs), the layout attention_decode reads. */
static void split_new_rows(const float *qkv, float *q, float *k_cache, float *v_cache, int64_t B,
                           int64_t T, int64_t C, int64_t nh, int64_t start, int64_t Tmax) {
    int64_t hs = C / nh;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < nh; h++) {
                const float *row = qkv + (b * T + t) * 3 * C + h * hs;      // (hs,) of head h
                float *qd = q + ((b * nh + h) * T + t) * hs;
                float *kd = k_cache + ((b * nh + h) * Tmax + start + t) * hs;
                float *vd = v_cache + ((b * nh + h) * Tmax + start + t) * hs;
                for (int64_t d = 0; d < hs; d++) {
                    qd[d] = row[d];
                    kd[d] = row[C + d];
                    vd[d] = row[2 * C + d];
                }
            }
}

/* att (B, nh, T, hs) -> y (B, T, C): the heads side by side again */
static void merge_new_rows(const float *att, float *y, int64_t B, int64_t T, int64_t C,
                           int64_t nh) {
    int64_t hs = C / nh;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t d = 0; d < hs; d++)
                    y[(b * T + t) * C + h * hs + d] = att[((b * nh + h) * T + t) * hs + d];
}

int decode_block(const float *x, float *out, const float *ln_1, const float *ln_2,
                 const decode_weight *w, float *k_cache, float *v_cache, int64_t B, int64_t T,
                 int64_t C, int64_t nh, int64_t start, int64_t Tmax, float eps, int path,
                 int qpath) {
    int64_t M = B * T;
    // float32 scratch, (M, C) each unless said: h, rstd (M,), qkv (M, 3C), q, att, proj, x1,
    // fc (M, 4C), act (M, 4C); then the quantized x of the widest product (K = 4C)
    float *h = malloc((size_t)(M * (16 * C + 1)) * sizeof(float) +
                      (size_t)matmul_q_i8_scratch(M, 4 * C));
    if (!h) return -1;
    float *rstd = h + M * C, *qkv = rstd + M, *q = qkv + 3 * M * C, *att = q + M * C;
    float *proj = att + M * C, *x1 = proj + M * C, *fc = x1 + M * C, *act = fc + 4 * M * C;
    void *qscratch = act + 4 * M * C;
    rmsnorm_forward(x, ln_1, h, rstd, M, C, eps);                                 // ln_1
    product(&w[0], h, qkv, M, 3 * C, C, path, qpath, qscratch);                   // c_attn
    split_new_rows(qkv, q, k_cache, v_cache, B, T, C, nh, start, Tmax);
    attention_decode(q, k_cache, v_cache, att, B, nh, T, start + T, Tmax, C / nh, path);
    merge_new_rows(att, h, B, T, C, nh);                                          // (M, C)
    product(&w[1], h, proj, M, C, C, path, qpath, qscratch);                      // attn.c_proj
    add_forward(x, proj, x1, M * C);                                              // residual
    rmsnorm_forward(x1, ln_2, h, rstd, M, C, eps);                                // ln_2
    product(&w[2], h, fc, M, 4 * C, C, path, qpath, qscratch);                    // c_fc
    silu_forward(fc, act, M * 4 * C);
    product(&w[3], act, proj, M, C, 4 * C, path, qpath, qscratch);                // mlp.c_proj
    add_forward(x1, proj, out, M * C);                                            // residual
    free(h);
    return 0;
}

/* A whole decoding step after the embeddings: every block, then ln_f and the lm_head on each
 * row's last position. Between blocks a small model's step went back to Python for ~40 us a
 * block, a tenth of the 15M shape's step (BENCHMARKS.md, "Decoding on Zen 3, fourth pass"). */
int decode_step(const float *x, float *logits, const float *const *norms, const decode_weight *w,
                float *const *caches, int64_t L, int64_t B, int64_t T, int64_t C, int64_t nh,
                int64_t V, int64_t start, int64_t Tmax, float eps, int path, int qpath) {
    int64_t M = B * T;
    // float32 scratch: two (M, C) for the blocks' in and out, last (B, C), h (B, C), rstd (B,);
    // then the quantized x of the lm_head
    float *a = malloc((size_t)(2 * M * C + 2 * B * C + B) * sizeof(float) +
                      (size_t)matmul_q_i8_scratch(B, C));
    if (!a) return -1;
    float *b = a + M * C, *last = b + M * C, *h = last + B * C, *rstd = h + B * C;
    const float *in = x;
    for (int64_t l = 0; l < L; l++) {
        float *out = l % 2 ? b : a;
        if (decode_block(in, out, norms[2 * l], norms[2 * l + 1], w + 4 * l, caches[2 * l],
                         caches[2 * l + 1], B, T, C, nh, start, Tmax, eps, path, qpath)) {
            free(a);
            return -1;
        }
        in = out;
    }
    for (int64_t r = 0; r < B; r++)                                   // row r's position T - 1
        for (int64_t c = 0; c < C; c++) last[r * C + c] = in[(r * T + T - 1) * C + c];
    rmsnorm_forward(last, norms[2 * L], h, rstd, B, C, eps);                      // ln_f
    product(&w[4 * L], h, logits, B, V, C, path, qpath, rstd + B);                // lm_head
    free(a);
    return 0;
}
