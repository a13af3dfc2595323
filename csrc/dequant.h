/* dequant.h: what quant.c and matmul.c (skinny.h) share for matmul_q_f32, the prefill product
 * on a quantized weight. Not part of the C API.
 *
 * quant.c owns the formats and the run-time choice of instructions, matmul.c the micro-kernel;
 * a quant_rows hands the one to the other: a weight W (N, K) as q8_0 / q4_0 blocks and the row
 * widener (quant.c's portable, AVX2 or AVX-512 loop) to turn any of its rows into K floats.
 */
#ifndef TINYLLM_DEQUANT_H
#define TINYLLM_DEQUANT_H
#include <stdint.h>

/* row n of W into out (K floats), bit for bit tinyllm.quant.formats.dequantize's */
typedef void (*dequant_row_fn)(const uint8_t *q, const uint16_t *scale, float *out, int64_t n,
                               int64_t K, int q4);

typedef struct {
    const uint8_t *q;        /* (N, K) int8, or q4_0's (N, K / 2) nibble pairs */
    const uint16_t *scale;   /* (N, K / 32) fp16 bits */
    int q4;                  /* 0 q8_0, 1 q4_0 */
    dequant_row_fn row;
} quant_rows;

/* matmul.c (skinny.h): out (M, N) = x (M, K) @ dequant(W)^T with W widened MR rows at a time.
 * Returns 0 when done, 1 when this shape is not its own (M > SKINNY_MAX_ROWS; every M on builds
 * without the skinny path), -1 when its buffers could not be allocated. */
int matmul_skinny_q(const float *x, const quant_rows *W, float *out, int64_t M, int64_t N,
                    int64_t K);

#endif
