/* quant_i8.c: out (M, N) = x (M, K) @ W^T for a q8_0 / q4_0 weight W, with x quantized to int8.
 *
 * What it is: the decoding kernels of QuantLinear (tinyllm/quant/layers.py), llama.cpp's
 * q8_0 x q8_0 idea: each row of x is cut into blocks of 32 like W and quantized to int8 with
 * a float32 scale (quantize_rows_q8: dx = absmax / 127, qx = rint(x / dx), half to even), so
 * a block's product is an exact integer dot product S (|S| <= 32 * 127 * 127 < 2^24), and
 * out = sum over blocks of (dw * dx) * S in float32. The definition is
 * tinyllm.quant.formats.matmul_q_i8; this is its sum in another order. W is read as its
 * blocks, once per MT rows of x, and never widened to float32.
 *
 * Paths, chosen at RUN time (quant_path; the callers pass what cpu_features() allows, and a
 * path the CPU lacks runs as the best one below it that it has):
 *   QPATH_AVX512_VNNI  two blocks a zmm, vpdpbusd (unsigned x signed bytes into int32 lanes):
 *                      q4_0 stores q + 8 unsigned, so S = dpbusd(q + 8, qx) - 8 sum(qx), the
 *                      correction precomputed per 4 bytes of x (nc) as dpbusd's start value;
 *                      q8_0's weights are signed, so x goes in offset by 128 and
 *                      S = dpbusd(qx + 128, w) - dpbusd(128, w)
 *   QPATH_AVX2         quant_avx2.c: vpmaddubsw + vpmaddwd a block, eight blocks' sums
 *                      gathered into one vector for their scales; x quantized in vectors
 *                      into a layout of its own (quant_avx2.c says why)
 *   QPATH_PORTABLE     plain C integer loops
 * All three give the same integer S; only the float32 sum over the blocks differs in order.
 * x's quantization is the same bytes on every path (portable C, or AVX2 vectors).
 *
 * matmul_q_i8_into is the same product into scratch the caller gives (decode_block.c's fused
 * step calls it for each product, with one allocation per step); matmul_q_i8 allocates it.
 *
 * What it is not: the prefill kernel (many rows of x: QuantLinear widens W into the float32
 * GEMM, quant.c's dequantize_q) or the float32-activation kernels (quant.c's matmul_q8_0).
 * K must be a multiple of 32 (c_kernels.py checks).
 *
 * Read next: tinyllm/quant/formats.py (quantize_activations, matmul_q_i8), quant_avx2.c,
 * tinyllm.h, tests/test_quant_kernels.py (every path against the definition).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "half.h"
#include "parallel.h"
#include "quant_i8.h"
#include "tinyllm.h"

/* below this many weights one thread does it: handing chunks to other threads costs a few
 * microseconds on a quiet machine; 2^18 (256 KiB of q8_0) threads every gpt2-preset product, which
 * on 2 quiet cores took a decoding step's products from 5.3 / 3.2 ms (one thread) to 3.3 / 2.2 ms
 * (q8_0 / q4_0, measured with OpenMP's fork/join, before the pool; 2^21 kept the smaller ones on
 * one thread and gained less: BENCHMARKS.md). The chunks go to pool.c's threads, as decode.c's
 * do: a helper the OS has parked never holds a step up. */
#define QUANT_PARALLEL_MIN (1 << 18)
#define ROW_CHUNK 64   /* rows of W a thread takes at a time, for every row of x */

/* quantize_rows_q8's portable loop over n blocks of 32 values */
static void quantize_portable(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        const float *xb = x + r * QBLOCK;
        int8_t *q = qx + r * QBLOCK;
        float amax = 0.0f;
        for (int k = 0; k < QBLOCK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        float d = amax / 127.0f;
        dx[r] = d;
        for (int k = 0; k < QBLOCK; k++) q[k] = d != 0.0f ? (int8_t)rintf(xb[k] / d) : 0;
        for (int g = 0; g < QBLOCK / 4; g++)
            nc[r * 8 + g] = -8 * (q[4 * g] + q[4 * g + 1] + q[4 * g + 2] + q[4 * g + 3]);
    }
}

/* x as the AVX-512 VNNI kernels read it, rewritten in place from quantize_rows_q8's: each
 * row's blocks in quads (the last may be short, r blocks): the first 16 values of the r
 * blocks, then their last 16, lined up with quad_weights' lo and hi. nc (M, nb, 4) then holds,
 * for the 4 bytes j of each such half, -offset * (their sum in the first half + in the
 * second): offset 8 for q4_0 (8 = 1 * quantize_rows_q8's factor), 128 for q8_0 (16 times). */
static void vnni_layout(int8_t *qx, int32_t *nc, int64_t M, int64_t nb, int q4) {
    int8_t tmp[4 * QBLOCK];
    int32_t ntmp[4 * 8], times = q4 ? 1 : 16;
    for (int64_t row = 0; row < M; row++)
        for (int64_t g = 0; g < nb; g += 4) {
            int r = nb - g < 4 ? (int)(nb - g) : 4;
            int8_t *x = qx + (row * nb + g) * QBLOCK;
            memcpy(tmp, x, (size_t)r * QBLOCK);
            memcpy(ntmp, nc + (row * nb + g) * 8, (size_t)r * 8 * sizeof(int32_t));
            for (int j = 0; j < r; j++) {
                memcpy(x + 16 * j, tmp + QBLOCK * j, 16);
                memcpy(x + 16 * (r + j), tmp + QBLOCK * j + 16, 16);
            }
            int32_t *cq = nc + (row * nb + g) * 4;   /* packs (nb, 4) below the (nb, 8) read */
            for (int j = 0; j < 4 * r; j++)
                cq[j] = times * (ntmp[(j / 4) * 8 + j % 4] + ntmp[(j / 4) * 8 + 4 + j % 4]);
        }
}

/* ---------------------------------------------------------------- portable */

static void row_portable(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                         int64_t n, int64_t m0, int mt, int64_t N, int q4) {
    int64_t K = a->K, nb = a->nb, bb = q4 ? QBLOCK / 2 : QBLOCK;
    float acc[MT] = {0};
    int8_t w[QBLOCK];
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *qb = q + (n * nb + b) * bb;
        for (int k = 0; k < QBLOCK / 2; k++) {
            w[k] = q4 ? (int8_t)((qb[k] & 0x0F) - 8) : (int8_t)qb[k];
            w[k + 16] = q4 ? (int8_t)((qb[k] >> 4) - 8) : (int8_t)qb[k + 16];
        }
        float dw = half_to_float(scale[n * nb + b]);
        for (int i = 0; i < mt; i++) {
            const int8_t *xb = a->qx + (m0 + i) * K + b * QBLOCK;
            int32_t s = 0;
            for (int k = 0; k < QBLOCK; k++) s += xb[k] * w[k];
            acc[i] += dw * a->dx[(m0 + i) * nb + b] * (float)s;
        }
    }
    for (int i = 0; i < mt; i++) out[(m0 + i) * N + n] = acc[i];
}

static void rows_portable(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                          int64_t n0, int64_t n1, int64_t m0, int mt, int64_t N, int q4) {
    for (int64_t n = n0; n < n1; n++) row_portable(a, q, scale, out, n, m0, mt, N, q4);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* ---------------------------------------------------------------- AVX-512 VNNI */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"), always_inline)) \
    static inline

/* The r <= 4 blocks from b0 + p of row n of W, as two vectors of unsigned bytes whose lane j
 * (4 bytes) belongs to block j / 4: lo holds values 0-15 of each block, hi values 16-31.
 * q4_0: one 64-byte load, low nibbles and high nibbles (q + 8, as stored). q8_0: two loads
 * regrouped by 16-byte quarters, plus 128 (w ^ 0x80). x is stored to match (vnni_layout). */
VNNI void quad_weights(const uint8_t *q, int64_t at, int r, const int q4, __m512i *lo, __m512i *hi) {
    if (q4) {
        const __m512i nib = _mm512_set1_epi8(0x0F);
        __m512i t = _mm512_maskz_loadu_epi8(r == 4 ? ~(__mmask64)0 : ((__mmask64)1 << (16 * r)) - 1,
                                            q + at * QBLOCK / 2);
        *lo = _mm512_and_si512(t, nib);
        *hi = _mm512_and_si512(_mm512_srli_epi16(t, 4), nib);
        return;
    }
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const uint8_t *w = q + at * QBLOCK;
    __m512i a = r >= 2 ? _mm512_loadu_si512(w) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)w));
    __m512i b = r == 4 ? _mm512_loadu_si512(w + 64)
              : r == 3 ? _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(w + 64)))
                       : _mm512_setzero_si512();
    *lo = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(2, 0, 2, 0)), k80);
    *hi = _mm512_xor_si512(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 1, 3, 1)), k80);
}

/* those r blocks against mt rows of x, into acc[mt]; d[i]: row i's dw * dx for the 16 blocks
 * from b0. The unsigned offset (8 for q4_0, 128 for q8_0) times x's sum is nc, dpbusd's start. */
VNNI void quad_vnni(const acts *a, const uint8_t *q, int64_t n, int64_t m0, const int mt,
                    int64_t b0, int p, int r, const int q4, const __m512 *d, __m512 *acc) {
    const __m512i quarter = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    int64_t b = b0 + p, nb = a->nb;
    __mmask64 mb = r == 4 ? ~(__mmask64)0 : ((__mmask64)1 << (16 * r)) - 1;
    __mmask16 ml = (__mmask16)((1u << (4 * r)) - 1);
    __m512i lo, hi;
    quad_weights(q, n * nb + b, r, q4, &lo, &hi);
    __m512i idx = _mm512_add_epi32(quarter, _mm512_set1_epi32(p));
    for (int i = 0; i < mt; i++) {
        const int8_t *x = a->qx + ((m0 + i) * nb + b) * QBLOCK;
        __m512i s = _mm512_maskz_loadu_epi32(ml, a->nc + ((m0 + i) * nb + b) * 4);
        s = _mm512_dpbusd_epi32(s, lo, _mm512_maskz_loadu_epi8(mb, x));
        s = _mm512_dpbusd_epi32(s, hi, _mm512_maskz_loadu_epi8(mb, x + 16 * r));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(idx, d[i]), acc[i]);
    }
}

VNNI void quant_rows_vnni_t(const acts *a, const uint8_t *q, const uint16_t *scale, float *out,
                      int64_t n, int64_t m0, const int mt, int64_t N, const int q4) {
    int64_t nb = a->nb;
    __m512 acc0[MT], acc1[MT], d[MT];   /* two FMA chains in flight a row */
    for (int i = 0; i < mt; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {      /* 16 blocks: one vector of scales */
        int r = nb - b0 < 16 ? (int)(nb - b0) : 16;
        __mmask16 ms = (__mmask16)((1u << r) - 1);
        __m512 dw = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(ms, scale + n * nb + b0));
        for (int i = 0; i < mt; i++)
            d[i] = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(ms, a->dx + (m0 + i) * nb + b0));
        int p = 0;
        for (; p + 8 <= r; p += 8) {
            quad_vnni(a, q, n, m0, mt, b0, p, 4, q4, d, acc0);
            quad_vnni(a, q, n, m0, mt, b0, p + 4, 4, q4, d, acc1);
        }
        for (; p < r; p += 4) quad_vnni(a, q, n, m0, mt, b0, p, r - p < 4 ? r - p : 4, q4, d, acc0);
    }
    for (int i = 0; i < mt; i++)
        out[(m0 + i) * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
}

DISPATCH(quant_rows_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")
#endif

/* ---------------------------------------------------------------- dispatch */

int quant_path(int wanted) {
#if defined(__x86_64__) && defined(__GNUC__)
    /* asked once: cpuid traps to the hypervisor in a VM, tens of microseconds a call */
    static int features = -1;
    int f = __atomic_load_n(&features, __ATOMIC_RELAXED);
    if (f < 0) __atomic_store_n(&features, f = cpu_features(), __ATOMIC_RELAXED);
    if (wanted >= QPATH_AVX512_VNNI && (f & CPU_AVX512_VNNI)) return QPATH_AVX512_VNNI;
    if (wanted >= QPATH_AVX2 && (f & CPU_AVX2)) return QPATH_AVX2;
#endif
    return QPATH_PORTABLE;
}

void quantize_rows_q8(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t M, int64_t K,
                      int path) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (quant_path(path) != QPATH_PORTABLE) {
        quantize_avx2(x, qx, dx, nc, M * K / QBLOCK);
        return;
    }
#endif
    quantize_portable(x, qx, dx, nc, M * K / QBLOCK);
}

typedef struct {                 /* one product, as the pool's chunks see it */
    acts a;
    rows_fn rows;
    const uint8_t *q;
    const uint16_t *scale;
    float *out;
    int64_t M, N;
    int q4;
} QWork;

/* chunk c: ROW_CHUNK rows of W against every row of x (the chunk's rows of W stay in cache) */
static void q_chunk(void *ctx, int64_t c) {
    const QWork *w = ctx;
    int64_t n0 = c * ROW_CHUNK, n1 = n0 + ROW_CHUNK < w->N ? n0 + ROW_CHUNK : w->N;
    for (int64_t m0 = 0; m0 < w->M; m0 += MT)
        w->rows(&w->a, w->q, w->scale, w->out, n0, n1, m0, w->M - m0 < MT ? (int)(w->M - m0) : MT,
                w->N, w->q4);
}

/* Bytes a row of x takes quantized: 72 a block (AVX2's q8_0 layout: x and |x|, dx, nc) for
 * nb padded to GROUP blocks; the others need less (68: qx, dx, and nc a 4 bytes). */
int64_t matmul_q_i8_scratch(int64_t M, int64_t K) {
    return M * 72 * ((K / QBLOCK + GROUP - 1) / GROUP * GROUP);
}

void matmul_q_i8_into(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                      int64_t N, int64_t K, int q4, int path, void *scratch) {
    int64_t nb = K / QBLOCK;
    int chosen = quant_path(path);
    int64_t nbx = nb, ncs = K / 4;                  /* blocks and nc a row of x */
#if defined(__x86_64__) && defined(__GNUC__)
    if (chosen == QPATH_AVX2) nbx = ncs = quant_avx2_blocks(nb);
#endif
    int32_t *nc = scratch;                          /* (M, ncs) */
    float *dx = (float *)(nc + M * ncs);            /* (M, nbx) */
    int8_t *qx = (int8_t *)(dx + M * nbx);          /* (M, nbx, 32 or 64) */
    QWork w = {{qx, dx, nc, K, nb, nbx}, rows_portable, q, scale, out, M, N, q4};
#if defined(__x86_64__) && defined(__GNUC__)
    if (chosen == QPATH_AVX2) {
        quantize_layout_avx2(x, M, nb, q4, qx, dx, nc);
        w.rows = quant_rows_avx2;
    }
#endif
    if (chosen != QPATH_AVX2) quantize_rows_q8(x, qx, dx, nc, M, K, path);
#if defined(__x86_64__) && defined(__GNUC__)
    if (chosen == QPATH_AVX512_VNNI) {
        vnni_layout(qx, nc, M, nb, q4);
        w.rows = quant_rows_vnni;
    }
#endif
    int64_t chunks = (N + ROW_CHUNK - 1) / ROW_CHUNK;
    if (N * K >= QUANT_PARALLEL_MIN) pool_run(q_chunk, &w, chunks);
    else for (int64_t c = 0; c < chunks; c++) q_chunk(&w, c);
}

int matmul_q_i8(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                int64_t N, int64_t K, int q4, int path) {
    void *scratch = malloc((size_t)matmul_q_i8_scratch(M, K));
    if (!scratch) return -1;
    matmul_q_i8_into(x, q, scale, out, M, N, K, q4, path, scratch);
    free(scratch);
    return 0;
}
