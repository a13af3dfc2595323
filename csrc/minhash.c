/* minhash.c: MinHash signatures of many documents per call, for tinyllm/curate/minhash.py.
 *
 *   minhash_signatures: for each (already lower-cased) document, its word n-gram shingles
 *     (wordhash.h's hashes, the top 32 bits x of each mixed n-gram hash; a document of fewer
 *     than n words is one shingle of all its words), then for each of the P hash functions
 *     min over the shingles of (a_j * x + b_j mod 2**64) >> 32.
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

/* The top 32 bits of the mixed hash of the n words from w (Horner, then mix64(h + n)). */
static uint64_t shingle(const uint64_t *w, int64_t n) {
    uint64_t h = w[0];
    for (int64_t k = 1; k < n; k++) h = h * WORDHASH_Q + w[k];
    return mix64(h + (uint64_t)n) >> 32;
}

int minhash_signatures(const uint8_t *text, const int64_t *ends, int64_t n_docs, int32_t ngram,
                       const uint64_t *a, const uint64_t *b, int32_t P, uint32_t *sig,
                       uint8_t *empty) {
    int64_t most = 1;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t L = ends[d] - (d ? ends[d - 1] : 0);
        if (L + 1 > most) most = L + 1;
    }
    uint64_t *words = malloc((size_t)most * sizeof(uint64_t));
    uint64_t *mins = malloc((size_t)P * sizeof(uint64_t));
    if (!words || !mins) {
        free(words), free(mins);
        return -1;
    }
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t lo = d ? ends[d - 1] : 0;
        int64_t W = text_words(text + lo, ends[d] - lo, words, NULL);
        for (int32_t j = 0; j < P; j++) mins[j] = 0xFFFFFFFFULL;
        if (W > 0 && W < ngram) fold(shingle(words, W), a, b, P, mins);
        for (int64_t i = 0; i + ngram <= W; i++) fold(shingle(words + i, ngram), a, b, P, mins);
        for (int32_t j = 0; j < P; j++) sig[d * P + j] = (uint32_t)mins[j];
        empty[d] = W == 0;
    }
    free(words), free(mins);
    return 0;
}
