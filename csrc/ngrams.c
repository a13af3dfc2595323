/* ngrams.c: how often each n-gram of a document repeats, for tinyllm/curate/clean.py.
 *
 *   ngram_repeats: one pass over a document's n-gram hashes with an open-addressing table
 *     (hash -> first position): which positions repeat an earlier n-gram, and the count and
 *     first position of the most frequent one.
 *
 * The definition is clean.py's repeat_stats (a stable sort, then runs of equal values);
 * tests/test_c_ngrams.py holds the two equal. The quality rules that use these counts
 * (top n-gram share, duplicated n-gram coverage) stay in Python.
 */
#include "tinyllm.h"

int64_t ngram_repeats(const uint64_t *grams, int64_t G, int64_t *slots, int64_t n_slots,
                      int32_t *counts, uint8_t *repeat, int64_t *at) {
    uint64_t mask = (uint64_t)n_slots - 1;
    int shift = 64;
    while ((1ULL << (64 - shift)) < (uint64_t)n_slots) shift--;  /* top log2(n_slots) bits */
    for (int64_t s = 0; s < n_slots; s++) slots[s] = -1;
    for (int64_t i = 0; i < G; i++) {
        uint64_t s = shift == 64 ? 0 : (grams[i] * 0x9E3779B97F4A7C15ULL) >> shift;
        while (slots[s] >= 0 && grams[slots[s]] != grams[i]) s = (s + 1) & mask;
        if (slots[s] < 0) {                  /* the first occurrence: n_slots > G, a slot is free */
            slots[s] = i;
            counts[i] = 1;
            repeat[i] = 0;
        } else {
            counts[slots[s]]++;
            repeat[i] = 1;
        }
    }
    int64_t most = 0;
    *at = 0;
    for (int64_t i = 0; i < G; i++)          /* first occurrences in text order: ties go earliest */
        if (!repeat[i] && counts[i] > most) most = counts[i], *at = i;
    return most;
}
