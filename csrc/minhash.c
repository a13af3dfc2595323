/* minhash.c: MinHash signatures of many documents per call, for tinyllm/curate/minhash.py.
 *
 *   minhash_signatures: for each (already lower-cased) document, its word n-gram shingles
 *     (wordhash.h's hashes, the top 32 bits x of each mixed n-gram hash; a document of fewer
 *     than n words is one shingle of all its words), then for each of the P hash functions
 *     min over the shingles of (a_j * x + b_j mod 2**64) >> 32.
 *   minhash_shingles: the shingles themselves (full 64-bit hashes), in text order or as
 *     sorted sets, for the exact Jaccard.
 *
 * The definition is minhash.py's MinHasher.signatures with shingle_values (NumPy);
 * tests/test_c_minhash.py holds the two equal. Integer arithmetic only, so "equal" is exact.
 * One thread per call: prepare runs one call per worker process.
 */
#include <stdlib.h>

#include "tinyllm.h"
#include "wordhash.h"

/* Fold one shingle value x into the running minima mins (P,). */
static void fold(uint64_t x, const uint64_t *a, const uint64_t *b, int32_t P, uint64_t *mins) {
    for (int32_t j = 0; j < P; j++) {
        uint64_t v = (a[j] * x + b[j]) >> 32;
        mins[j] = v < mins[j] ? v : mins[j];
    }
}

/* The mixed hash of the n words from w (Horner, then mix64(h + n)). */
static uint64_t shingle(const uint64_t *w, int64_t n) {
    uint64_t h = w[0];
    for (int64_t k = 1; k < n; k++) h = h * WORDHASH_Q + w[k];
    return mix64(h + (uint64_t)n);
}

static int64_t longest(const int64_t *ends, int64_t n_docs) {
    int64_t most = 1;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t L = ends[d] - (d ? ends[d - 1] : 0);
        if (L + 1 > most) most = L + 1;
    }
    return most;
}

static int by_value(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

int minhash_shingles(const uint8_t *text, const int64_t *ends, int64_t n_docs, int32_t ngram,
                     int32_t sets, uint64_t *values, int64_t *counts) {
    uint64_t *words = malloc((size_t)longest(ends, n_docs) * sizeof(uint64_t));
    if (!words) return -1;
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t lo = d ? ends[d - 1] : 0, before = n;
        int64_t W = text_words(text + lo, ends[d] - lo, words, NULL);
        if (W > 0 && W < ngram) values[n++] = shingle(words, W);
        for (int64_t i = 0; i + ngram <= W; i++) values[n++] = shingle(words + i, ngram);
        if (sets && n > before) {            /* each distinct value once, ascending */
            qsort(values + before, (size_t)(n - before), sizeof(uint64_t), by_value);
            int64_t m = before + 1;
            for (int64_t k = before + 1; k < n; k++)
                if (values[k] != values[m - 1]) values[m++] = values[k];
            n = m;
        }
        counts[d] = n - before;
    }
    free(words);
    return 0;
}

int minhash_signatures(const uint8_t *text, const int64_t *ends, int64_t n_docs, int32_t ngram,
                       const uint64_t *a, const uint64_t *b, int32_t P, uint32_t *sig,
                       uint8_t *empty) {
    uint64_t *words = malloc((size_t)longest(ends, n_docs) * sizeof(uint64_t));
    uint64_t *mins = malloc((size_t)P * sizeof(uint64_t));
    if (!words || !mins) {
        free(words), free(mins);
        return -1;
    }
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t lo = d ? ends[d - 1] : 0;
        int64_t W = text_words(text + lo, ends[d] - lo, words, NULL);
        for (int32_t j = 0; j < P; j++) mins[j] = 0xFFFFFFFFULL;
        if (W > 0 && W < ngram) fold(shingle(words, W) >> 32, a, b, P, mins);
        for (int64_t i = 0; i + ngram <= W; i++) fold(shingle(words + i, ngram) >> 32, a, b, P, mins);
        for (int32_t j = 0; j < P; j++) sig[d * P + j] = (uint32_t)mins[j];
        empty[d] = W == 0;
    }
    free(words), free(mins);
    return 0;
}
