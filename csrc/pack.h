/* pack.h: how matmul.c lays its operands out for the micro-kernel (pack_panel), one version
 * per instruction set: AVX-512 (16 x 16 transposes in registers), AVX2 (8 x 8), portable C.
 *
 * Not part of the C API (tinyllm.h): static functions, included by matmul.c alone, chosen by
 * the same compile-time target as its micro-kernel.
 */
#ifndef TINYLLM_PACK_H
#define TINYLLM_PACK_H
#include <stdint.h>
#include "avx2.h"
#include "avx512.h"

/* Packing. Element (r, q) of a rows x depth block of an operand (r along M or N, q along K) is
 * x[r * rs + q * qs], and one of rs, qs is 1. It is written as ceil(rows / w) panels, each
 * `depth` groups of w consecutive r, zero-padded past `rows`: the order the micro-kernel reads.
 * pack_panel writes one panel of n <= w rows. */
#if defined(__AVX512F__)
/* 16 lanes of each w-group at a time. Masked loads read nothing past the operand (masked-off
 * lanes never fault) and give the zero padding; masked stores write exactly w lanes per group. */
static void pack_panel(const float *restrict x, int64_t rs, int64_t qs, int64_t n, int64_t depth,
                       int w, float *restrict dst) {
    for (int r0 = 0; r0 < w; r0 += 16) {
        __mmask16 store = lanes(w - r0);
        if (qs == 1) {      /* rows run along depth: 16 x 16 blocks, transposed in registers */
            for (int64_t q = 0; q < depth; q += 16) {
                int64_t nq = depth - q < 16 ? depth - q : 16;
                __m512 v[16];
                for (int i = 0; i < 16; i++)
                    v[i] = r0 + i < n ? _mm512_maskz_loadu_ps(lanes(nq), x + (r0 + i) * rs + q)
                                      : _mm512_setzero_ps();
                transpose16(v);
                for (int j = 0; j < nq; j++)
                    _mm512_mask_storeu_ps(dst + (q + j) * w + r0, store, v[j]);
            }
        } else {            /* rs == 1: each depth step is a contiguous run of rows */
            __mmask16 valid = lanes(n - r0);
            for (int64_t q = 0; q < depth; q++)
                _mm512_mask_storeu_ps(dst + q * w + r0, store,
                                      _mm512_maskz_loadu_ps(valid, x + q * qs + r0));
        }
    }
}
#elif defined(__AVX2__) && defined(__FMA__)
/* The same with 8 lanes: 8 x 8 blocks transposed in registers. maskload reads nothing past the
 * operand. A group narrower than 8 (MR = 6, rows across depth: pack_panel6 takes the rows
 * along depth) is stored whole, rows past w being zero, in ascending order, so each store's
 * tail is overwritten by the next one; only the panel's last is masked, not to write past it
 * (maskstore on every one: 1.15 ns a float, 4x slower on Zen 3). The portable loops below
 * packed the transposing case one float at a time: at the gpt2 prefill's shapes (M 256,
 * x @ W^T, where each thread packs all of W) that was 12-20% of the matmul's time on Zen 3. */

/* A 6-wide panel (MR) of rows along depth: the rows are read 8 depths at a time, the first four
 * transposed 4 x 4 in each 128-bit lane and the last two interleaved, and each depth's 6 floats
 * are stored as 4 + 2, never past them. The 8 x 8 transpose below wrote 8 floats at each 6-float
 * step, overlapping, at 0.48 ns a float on Zen 3 with the rows in L1; this takes 0.18 (0.53
 * against 0.26 from L3: the A blocks of x @ W^T and g @ W, packed once per B block). */
static void pack_panel6(const float *restrict x, int64_t rs, int64_t n, int64_t depth,
                        float *restrict dst) {
    for (int64_t q = 0; q < depth; q += 8) {
        int64_t nq = depth - q < 8 ? depth - q : 8;
        __m256i valid = lanes8(nq);
        __m256 v[6];
        for (int i = 0; i < 6; i++)
            v[i] = i < n ? _mm256_maskload_ps(x + i * rs + q, valid) : _mm256_setzero_ps();
        __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
        __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
        /* lane L of c[j]: rows 0-3 at depth q + 4L + j; of e[j]: rows 4-5 at q + 4L + 2j, +1 */
        __m256 c[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                       _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
        __m256 e[2] = {_mm256_unpacklo_ps(v[4], v[5]), _mm256_unpackhi_ps(v[4], v[5])};
        for (int j = 0; j < nq; j++) {
            __m256 cj = c[j & 3], ej = e[(j & 3) >> 1];
            __m128 rows03 = j < 4 ? _mm256_castps256_ps128(cj) : _mm256_extractf128_ps(cj, 1);
            __m128 rows45 = j < 4 ? _mm256_castps256_ps128(ej) : _mm256_extractf128_ps(ej, 1);
            float *d = dst + (q + j) * 6;
            _mm_storeu_ps(d, rows03);
            if (j & 1)
                _mm_storeh_pi((__m64 *)(d + 4), rows45);
            else
                _mm_storel_pi((__m64 *)(d + 4), rows45);
        }
    }
}

static void pack_panel(const float *restrict x, int64_t rs, int64_t qs, int64_t n, int64_t depth,
                       int w, float *restrict dst) {
    if (w == 6 && qs == 1) {
        pack_panel6(x, rs, n, depth, dst);
        return;
    }
    for (int r0 = 0; r0 < w; r0 += 8) {
        __m256i store = lanes8(w - r0);
        int whole = w - r0 >= 8;
        if (qs == 1) {
            for (int64_t q = 0; q < depth; q += 8) {
                int64_t nq = depth - q < 8 ? depth - q : 8;
                __m256i valid = lanes8(nq);
                __m256 v[8];
                for (int i = 0; i < 8; i++)
                    v[i] = r0 + i < n ? _mm256_maskload_ps(x + (r0 + i) * rs + q, valid)
                                      : _mm256_setzero_ps();
                transpose8(v);
                for (int j = 0; j < nq; j++) {
                    if (whole || q + j + 1 < depth)
                        _mm256_storeu_ps(dst + (q + j) * w + r0, v[j]);
                    else
                        _mm256_maskstore_ps(dst + (q + j) * w + r0, store, v[j]);
                }
            }
        } else {
            __m256i valid = lanes8(n - r0);
            for (int64_t q = 0; q < depth; q++) {
                __m256 v = _mm256_maskload_ps(x + q * qs + r0, valid);
                if (whole || q + 1 < depth)
                    _mm256_storeu_ps(dst + q * w + r0, v);
                else
                    _mm256_maskstore_ps(dst + q * w + r0, store, v);
            }
        }
    }
}
#else
/* Portable: whichever of rs, qs is 1 is the inner loop, so the reads stay sequential. */
static void pack_panel(const float *restrict x, int64_t rs, int64_t qs, int64_t n, int64_t depth,
                       int w, float *restrict dst) {
    if (qs == 1) {
        for (int64_t r = 0; r < n; r++)
            for (int64_t q = 0; q < depth; q++) dst[q * w + r] = x[r * rs + q];
    } else {
        for (int64_t q = 0; q < depth; q++)
            for (int64_t r = 0; r < n; r++) dst[q * w + r] = x[r + q * qs];
    }
    for (int64_t q = 0; q < depth; q++)
        for (int64_t r = n; r < w; r++) dst[q * w + r] = 0.0f;
}
#endif
#endif
