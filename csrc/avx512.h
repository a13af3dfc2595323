/* avx512.h: the AVX-512 helpers the matmul packers share (matmul.c, matmul_bf16.c).
 *
 * Not part of the C API (tinyllm.h): static inline, and each helper carries
 * target("avx512f,avx512bw,avx512vl"), so a file built without -march=native can still call them from its own
 * AVX-512 functions (which run only after cpu_features() says yes; cpu.c).
 */
#ifndef TINYLLM_AVX512_H
#define TINYLLM_AVX512_H
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <stdint.h>
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

TARGET_AVX512 static inline __mmask16 lanes(int64_t n) {   /* the first n of 16 lanes */
    return n <= 0 ? 0 : n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
}

/* In-register transpose of a 16 x 16 block: r[i] holds row i on entry, column i on return. */
TARGET_AVX512 static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {        /* pairs of rows interleaved */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) {        /* u[g+c], 128-bit lane L: rows g..g+3, column 4L+c */
        u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {            /* gather lane L of u[c], u[4+c], u[8+c], u[12+c] */
        __m512 w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 x0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        __m512 x1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(w0, x0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(w1, x1, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(w0, x0, 0xDD);
        r[12 + c] = _mm512_shuffle_f32x4(w1, x1, 0xDD);
    }
}
#endif
#endif
