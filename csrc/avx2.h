/* avx2.h: the AVX2 helpers of matmul.c's packer (the twin of avx512.h for 8-lane registers).
 *
 * Not part of the C API (tinyllm.h): static inline, each with target("avx2,fma"), so it builds
 * without -march=native too; matmul.c uses it only where the compiler targets AVX2.
 */
#ifndef TINYLLM_AVX2_H
#define TINYLLM_AVX2_H
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <stdint.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma")))

/* A mask of the first n of 8 lanes (for maskload: lanes past n read nothing, give 0). */
TARGET_AVX2 static inline __m256i lanes8(int64_t n) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)), index);
}

/* In-register transpose of an 8 x 8 block: r[i] holds row i on entry, column i on return. */
TARGET_AVX2 static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {         /* pairs of rows interleaved */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 8; g += 4) {         /* u[g+c], 128-bit lane L: rows g..g+3, column 4L+c */
        u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {            /* lane 0 of rows 0-3 with lane 0 of rows 4-7, ... */
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}
#endif
#endif
