/* wordhash.h: the word and word n-gram hashes of tinyllm/curate/hashing.py, bit for bit.
 * Not part of the C API: static helpers shared by clean.c and minhash.c.
 *
 * A word is a run of bytes that are not ASCII whitespace (\t \n \v \f \r and space). Its hash
 * is mix64(h ^ len * Q) with h = sum_j (byte_j + 1) * P**-j mod 2**64 (hashing.span_hashes; P
 * the FNV prime); the n-gram of words w_i..w_{i+n-1} is Horner's h_n = h_{n-1} * Q + w_{i+n-1}
 * from h_1 = w_i (hashing.ngram_hash_series), mixed as mix64(h_n + n) where hashing.py mixes.
 */
#ifndef TINYLLM_WORDHASH_H
#define TINYLLM_WORDHASH_H

#include <stdint.h>

#define WORDHASH_P_INV 0xCE965057AFF6957BULL   /* the inverse of 0x100000001B3 mod 2**64 */
#define WORDHASH_Q 0x9E3779B97F4A7C15ULL

static inline uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static inline int is_word_byte(uint8_t b) { return !(b == 32 || (b >= 9 && b <= 13)); }

/* The hashes and byte lengths of the words of s[0:L]; returns their number (<= (L + 1) / 2). */
static inline int64_t text_words(const uint8_t *s, int64_t L, uint64_t *words, int64_t *lengths) {
    int64_t W = 0;
    for (int64_t i = 0; i < L;) {
        if (!is_word_byte(s[i])) { i++; continue; }
        int64_t j = i;
        uint64_t h = 0, pw = 1;
        for (; j < L && is_word_byte(s[j]); j++) h += ((uint64_t)s[j] + 1) * pw, pw *= WORDHASH_P_INV;
        words[W] = mix64(h ^ ((uint64_t)(j - i) * WORDHASH_Q));
        if (lengths) lengths[W] = j - i;
        W++;
        i = j;
    }
    return W;
}

#endif
