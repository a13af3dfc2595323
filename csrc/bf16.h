/* bf16.h: what matmul_bf16.c shares with the other kernels that multiply in bfloat16
 * (attention.c's tiles under attention_*_bf16). Not part of the C API (tinyllm.h).
 *
 * bf16_round: a float32 rounded to the nearest bfloat16 (ties to even, subnormals to a zero of
 * their sign, NaN quiet), given back as the float32 it equals: numpy_kernels.bf16_round, bit
 * for bit, and what the packing of every bf16 kernel does to its operands.
 * bf16_gemm_acc: a small GEMM on the calling thread, for attention's 64 x 64 tiles:
 *   c (M, N) += A (M, K) @ B (K, N), A's (i, k) at a[i * a_rs + k * a_ks], B's (k, j) at
 *   b[k * b_ks + j * b_js] (of each pair of strides one is 1), c's row stride ldc;
 * A and B rounded to bf16 while packed, float32 sums (vdpbf16ps). Call it only when
 * cpu_features() has CPU_AVX512_BF16: it is those instructions and nothing else.
 * amx_gemm_acc (matmul_amx.c): bf16_gemm_acc's product on AMX tiles, the same rounding; only
 *   with CPU_AMX_BF16 (the tile permission, cpu.c, granted).
 * bf16_pack_panel (matmul_bf16.c): n <= w rows x depth of x (element (r, q) at x[r * rs + q * qs],
 * one stride 1) as ceil(depth / 2) words of w lanes: dst[p * w + r] holds (2p, 2p + 1) of row r,
 * rows n .. w and an odd K's partner zero. The layout of vdpbf16ps's B panels and of AMX's B
 * tiles; like bf16_gemm_acc, only with CPU_AVX512_BF16.
 * matmul_rounded (matmul.c): matmul with, when round, both operands rounded by bf16_round as
 * they are packed: the bf16 matmul of a CPU without bf16 instructions, at the fp32 GEMM's cost.
 */
#ifndef TINYLLM_BF16_H
#define TINYLLM_BF16_H
#include <stdint.h>
#include <string.h>

static inline uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_round(float f) {
    uint32_t u = (uint32_t)bf16_bits(f) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

void bf16_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b, int64_t b_ks,
                   int64_t b_js, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K);
void amx_gemm_acc(const float *a, int64_t a_rs, int64_t a_ks, const float *b, int64_t b_ks,
                  int64_t b_js, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K);
void bf16_pack_panel(const float *x, int64_t rs, int64_t qs, int64_t n, int64_t depth, int w,
                     uint32_t *dst);
void matmul_rounded(const float *a, const float *b, float *out, int64_t batch, int64_t M,
                    int64_t N, int64_t K, int transpose_a, int transpose_b, int round);
#endif
