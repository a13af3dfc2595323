/* bpe.c: the two hot loops of byte-level BPE, for tinyllm/tokenizer.py.
 *
 *   bpe_table_build / bpe_encode_chunks: encode pre-token chunks with a rank table
 *     exactly as tiktoken does (a chunk that is a token is that token; otherwise
 *     merge the adjacent pair of lowest rank, leftmost first, until none merges).
 *   bpe_trainer_new / bpe_trainer_merge / bpe_trainer_free: the incremental
 *     training loop (pair counts, pair -> words index, lazy max-heap).
 *
 * This is not the tokenizer: regex pre-tokenization, special tokens, the chunk
 * cache, file formats and every input check live in Python. The readable
 * reference of both loops is tinyllm/bpe_encode.py (merge_chunk) and
 * tinyllm/bpe_train.py (PythonMerger); tests/test_c_bpe.py holds them equal.
 * Read tinyllm/bpe_format.py next.
 */
#include <stdlib.h>
#include <string.h>

#include "tinyllm.h"

/* ---------------------------------------------------------------------------
 * rank table: open addressing over token bytes (FNV-1a hash, linear probing) */

static uint64_t fnv1a(const uint8_t *s, int64_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < len; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

void bpe_table_build(const bpe_table *t) {
    uint64_t mask = (uint64_t)t->n_slots - 1;
    for (int64_t s = 0; s < t->n_slots; s++) t->slots[s] = -1;
    for (int64_t i = 0; i < t->n; i++) {
        int64_t len = t->offsets[i + 1] - t->offsets[i];
        uint64_t s = fnv1a(t->bytes + t->offsets[i], len) & mask;
        while (t->slots[s] >= 0) s = (s + 1) & mask;  /* Python passes n_slots > n: a slot is free */
        t->slots[s] = (int32_t)i;
    }
}

/* The rank of the token s[0:len], or -1 when it is not a token. */
static int32_t table_rank(const bpe_table *t, const uint8_t *s, int64_t len) {
    uint64_t mask = (uint64_t)t->n_slots - 1;
    for (uint64_t k = fnv1a(s, len) & mask;; k = (k + 1) & mask) {
        int32_t i = t->slots[k];
        if (i < 0) return -1;
        int64_t off = t->offsets[i];
        if (t->offsets[i + 1] - off == len && memcmp(t->bytes + off, s, (size_t)len) == 0)
            return t->ranks[i];
    }
}

/* ---------------------------------------------------------------------------
 * encode: one chunk of L bytes is L parts at first; part i spans [i, next[i]).
 * rank[i] is the rank of part i joined with the part after it (-1: no such token).
 * A min-heap of (rank, start) picks the pair tiktoken picks (lowest rank, then
 * leftmost) in O(L log L); an entry is stale when rank[start] changed since. */

typedef struct { int64_t rank, pos; } rank_item;

static int rank_before(rank_item x, rank_item y) {
    return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}

static void rank_push(rank_item *h, int64_t *n, rank_item x) {
    int64_t i = (*n)++;
    while (i > 0 && rank_before(x, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = x;
}

static rank_item rank_pop(rank_item *h, int64_t *n) {
    rank_item top = h[0], last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && rank_before(h[c + 1], h[c])) c++;
        if (!rank_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Rank of the pair at part i (parts i and next[i]), or -1. */
static int64_t pair_rank(const bpe_table *t, const uint8_t *p, const int64_t *next, int64_t i,
                         int64_t L) {
    int64_t j = next[i];
    return j < L ? table_rank(t, p + i, next[j] - i) : -1;
}

/* Encode chunk p[0:L] into ids; returns the number of ids written. Work arrays: L + 1 each. */
static int64_t encode_chunk(const bpe_table *t, const uint8_t *p, int64_t L, int32_t *ids,
                            int64_t *next, int64_t *prev, int64_t *rank, int64_t *token,
                            rank_item *heap) {
    int32_t whole = table_rank(t, p, L);
    if (whole >= 0) { ids[0] = whole; return 1; }
    int64_t nheap = 0;
    for (int64_t i = 0; i < L; i++) {
        next[i] = i + 1;
        prev[i] = i - 1;
        token[i] = table_rank(t, p + i, 1);
    }
    for (int64_t i = 0; i < L; i++) {
        rank[i] = pair_rank(t, p, next, i, L);
        if (rank[i] >= 0) rank_push(heap, &nheap, (rank_item){rank[i], i});
    }
    while (nheap > 0) {
        rank_item top = rank_pop(heap, &nheap);
        int64_t i = top.pos;
        if (rank[i] != top.rank) continue;  /* stale: part i died or its pair changed */
        int64_t j = next[i], k = next[j];   /* parts i and j become one part [i, k) */
        token[i] = top.rank;
        rank[j] = -1;
        next[i] = k;
        if (k < L) prev[k] = i;
        rank[i] = pair_rank(t, p, next, i, L);
        if (rank[i] >= 0) rank_push(heap, &nheap, (rank_item){rank[i], i});
        if (prev[i] >= 0) {
            int64_t h = prev[i];
            rank[h] = pair_rank(t, p, next, h, L);
            if (rank[h] >= 0) rank_push(heap, &nheap, (rank_item){rank[h], h});
        }
    }
    int64_t n = 0;
    for (int64_t i = 0; i < L; i = next[i]) ids[n++] = (int32_t)token[i];
    return n;
}

int64_t bpe_encode_chunks(const bpe_table *t, const uint8_t *text, const int64_t *ends,
                          int64_t n_chunks, int32_t *ids, int64_t *id_ends) {
    int64_t longest = 0, start = 0;
    for (int64_t c = 0; c < n_chunks; c++) {
        if (ends[c] - start > longest) longest = ends[c] - start;
        start = ends[c];
    }
    /* Each merge pushes at most 2 heap entries: L initial + 2 (L - 1) in all. */
    int64_t *work = malloc((size_t)(4 * (longest + 1)) * sizeof(int64_t));
    rank_item *heap = malloc((size_t)(3 * (longest + 1)) * sizeof(rank_item));
    if (!work || !heap) { free(work); free(heap); return -1; }
    int64_t n = 0;
    start = 0;
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t L = ends[c] - start;
        if (L > 0)
            n += encode_chunk(t, text + start, L, ids + n, work, work + (longest + 1),
                              work + 2 * (longest + 1), work + 3 * (longest + 1), heap);
        id_ends[c] = n;
        start = ends[c];
    }
    free(work);
    free(heap);
    return n;
}

/* ---------------------------------------------------------------------------
 * training. Words are the unique chunks (>= 2 bytes) with their counts, stored
 * back to back as token ids and merged in place. Every pair ever seen has a slot:
 * its total count and the words that held it when it appeared. Pair counts only
 * fall, except for pairs holding the newest token, so the heap may hold stale
 * (too high) counts: a popped entry whose count is stale is pushed back with the
 * true one. Ties: the higher count wins, then the smaller (a, b). */

typedef struct {
    int64_t count;
    int32_t a, b;
    int32_t *words;           /* words that held the pair when it appeared, each once */
    int64_t n_words, cap_words;
    int32_t last_word;        /* the word added last: a word adds itself once per pair */
    int32_t fresh_mark;       /* the merge whose fresh list already holds this pair */
} train_pair;

typedef struct { int64_t count; int32_t a, b; } count_item;

struct bpe_trainer {
    int32_t *tokens;          /* every word's token ids, back to back */
    int64_t *word_start;      /* (n_words,) */
    int64_t *word_len;        /* (n_words,) shrinks as merges apply */
    const int64_t *word_count;/* (n_words,) the caller's array, alive until bpe_trainer_free */
    int64_t n_words;
    uint64_t *keys;           /* pair map: (a << 32 | b) -> index into pairs; ~0 = empty */
    int32_t *slot_pair;
    int64_t n_slots, n_used;
    train_pair *pairs;
    int64_t n_pairs, cap_pairs;
    count_item *heap;
    int64_t n_heap, cap_heap;
    int32_t *fresh;           /* pairs holding the newest token, pushed after its merge */
    int64_t n_fresh, cap_fresh;
    int32_t next_id;
};

static const uint64_t EMPTY_KEY = ~(uint64_t)0;

/* Make room for one more element in *buf (n used, *cap allocated); 0 when out of memory. */
static int grow(void **buf, int64_t n, int64_t *cap, size_t size) {
    if (n < *cap) return 1;
    int64_t c = *cap ? 2 * *cap : 8;
    void *p = realloc(*buf, (size_t)c * size);
    if (!p) return 0;
    *buf = p;
    *cap = c;
    return 1;
}

static int64_t slot_of(const bpe_trainer *t, uint64_t key) {
    uint64_t mask = (uint64_t)t->n_slots - 1, s = ((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
    while (t->keys[s] != EMPTY_KEY && t->keys[s] != key) s = (s + 1) & mask;
    return (int64_t)s;
}

static int rehash(bpe_trainer *t) {
    uint64_t *old_keys = t->keys;
    int32_t *old_pair = t->slot_pair;
    int64_t old_n = t->n_slots, n = old_n ? 2 * old_n : 1 << 16;
    uint64_t *keys = malloc((size_t)n * sizeof(uint64_t));
    int32_t *slot_pair = malloc((size_t)n * sizeof(int32_t));
    if (!keys || !slot_pair) { free(keys); free(slot_pair); return 0; }
    memset(keys, 0xff, (size_t)n * sizeof(uint64_t));
    t->keys = keys;
    t->slot_pair = slot_pair;
    t->n_slots = n;
    for (int64_t s = 0; s < old_n; s++) {
        if (old_keys[s] == EMPTY_KEY) continue;
        int64_t d = slot_of(t, old_keys[s]);
        keys[d] = old_keys[s];
        slot_pair[d] = old_pair[s];
    }
    free(old_keys);
    free(old_pair);
    return 1;
}

/* Index of pair (a, b), created with count 0 when new; -1 when out of memory. */
static int64_t pair_index(bpe_trainer *t, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    if (2 * (t->n_used + 1) > t->n_slots && !rehash(t)) return -1;
    int64_t s = slot_of(t, key);
    if (t->keys[s] == EMPTY_KEY) {
        if (!grow((void **)&t->pairs, t->n_pairs, &t->cap_pairs, sizeof(train_pair))) return -1;
        t->pairs[t->n_pairs] = (train_pair){0, a, b, NULL, 0, 0, -1, -1};
        t->keys[s] = key;
        t->slot_pair[s] = (int32_t)t->n_pairs++;
        t->n_used++;
    }
    return t->slot_pair[s];
}

static int count_before(count_item x, count_item y) {
    return x.count > y.count || (x.count == y.count && (x.a < y.a || (x.a == y.a && x.b < y.b)));
}

static int heap_push(bpe_trainer *t, count_item x) {
    if (!grow((void **)&t->heap, t->n_heap, &t->cap_heap, sizeof(count_item))) return 0;
    count_item *h = t->heap;
    int64_t i = t->n_heap++;
    while (i > 0 && count_before(x, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = x;
    return 1;
}

static count_item heap_pop(bpe_trainer *t) {
    count_item *h = t->heap, top = h[0], last = h[--t->n_heap];
    int64_t i = 0, n = t->n_heap;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && count_before(h[c + 1], h[c])) c++;
        if (!count_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0) h[i] = last;
    return top;
}

/* Add delta to pair (a, b)'s count. A pair holding the token made by merge `mark`
 * (mark >= 0) also records word w and joins the fresh list. 0 when out of memory. */
static int change(bpe_trainer *t, int32_t a, int32_t b, int64_t delta, int32_t w, int32_t mark) {
    int64_t i = pair_index(t, a, b);
    if (i < 0) return 0;
    train_pair *p = &t->pairs[i];
    p->count += delta;
    if (mark < 0) return 1;
    if (p->last_word != w) {
        if (!grow((void **)&p->words, p->n_words, &p->cap_words, sizeof(int32_t))) return 0;
        p->words[p->n_words++] = w;
        p->last_word = w;
    }
    if (p->fresh_mark != mark) {
        if (!grow((void **)&t->fresh, t->n_fresh, &t->cap_fresh, sizeof(int32_t))) return 0;
        t->fresh[t->n_fresh++] = (int32_t)i;
        p->fresh_mark = mark;
    }
    return 1;
}

/* Push the fresh pairs that have a positive count, and empty the list; 0 when out of memory. */
static int push_fresh(bpe_trainer *t) {
    for (int64_t f = 0; f < t->n_fresh; f++) {
        const train_pair *p = &t->pairs[t->fresh[f]];
        if (p->count > 0 && !heap_push(t, (count_item){p->count, p->a, p->b})) return 0;
    }
    t->n_fresh = 0;
    return 1;
}

/* Replace (a, b) by z in word w, left to right, and move the neighbours' pair counts. */
static int merge_word(bpe_trainer *t, int32_t w, int32_t a, int32_t b, int32_t z, int32_t mark) {
    int32_t *tok = t->tokens + t->word_start[w];
    int64_t len = t->word_len[w], cnt = t->word_count[w], out = 0, i = 0;
    while (i < len) {
        if (i + 1 < len && tok[i] == a && tok[i + 1] == b) {
            if (out > 0 && !(change(t, tok[out - 1], a, -cnt, w, -1) &&
                             change(t, tok[out - 1], z, cnt, w, mark)))
                return 0;
            if (i + 2 < len && !(change(t, b, tok[i + 2], -cnt, w, -1) &&
                                 change(t, z, tok[i + 2], cnt, w, mark)))
                return 0;
            tok[out++] = z;
            i += 2;
        } else {
            tok[out++] = tok[i++];
        }
    }
    t->word_len[w] = out;
    return 1;
}

void bpe_trainer_free(bpe_trainer *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->n_pairs; i++) free(t->pairs[i].words);
    free(t->tokens); free(t->word_start); free(t->word_len);
    free(t->keys); free(t->slot_pair); free(t->pairs); free(t->heap); free(t->fresh);
    free(t);
}

bpe_trainer *bpe_trainer_new(const uint8_t *text, const int64_t *ends, const int64_t *counts,
                             int64_t n_words) {
    bpe_trainer *t = calloc(1, sizeof(bpe_trainer));
    if (!t) return NULL;
    int64_t n_bytes = n_words > 0 ? ends[n_words - 1] : 0;
    t->tokens = malloc((size_t)(n_bytes + 1) * sizeof(int32_t));
    t->word_start = malloc((size_t)(n_words + 1) * sizeof(int64_t));
    t->word_len = malloc((size_t)(n_words + 1) * sizeof(int64_t));
    t->word_count = counts;
    t->n_words = n_words;
    t->next_id = 256;
    if (!t->tokens || !t->word_start || !t->word_len || !rehash(t)) goto fail;
    for (int64_t i = 0; i < n_bytes; i++) t->tokens[i] = text[i];
    /* Initial pairs: every adjacent byte pair, recorded as "fresh" (mark 0) so that each
     * lands in the heap once with its full count. */
    for (int64_t w = 0, start = 0; w < n_words; start = ends[w++]) {
        t->word_start[w] = start;
        t->word_len[w] = ends[w] - start;
        for (int64_t i = start; i + 1 < ends[w]; i++)
            if (!change(t, t->tokens[i], t->tokens[i + 1], counts[w], (int32_t)w, 0)) goto fail;
    }
    if (!push_fresh(t)) goto fail;
    return t;
fail:
    bpe_trainer_free(t);
    return NULL;
}

int64_t bpe_trainer_merge(bpe_trainer *t, int64_t n, int32_t *left, int32_t *right) {
    int64_t done = 0;
    while (done < n && t->n_heap > 0) {
        count_item top = heap_pop(t);
        int64_t i = pair_index(t, top.a, top.b);
        if (i < 0) return -1;
        int64_t count = t->pairs[i].count;
        if (count != top.count) {  /* stale: the count fell since this entry was pushed */
            if (count > 0 && !heap_push(t, (count_item){count, top.a, top.b})) return -1;
            continue;
        }
        int32_t z = t->next_id++, mark = z;
        /* Own the word list: change() may move t->pairs, but never adds to (a, b). */
        int32_t *words = t->pairs[i].words;
        int64_t n_words = t->pairs[i].n_words;
        t->pairs[i].words = NULL;
        t->pairs[i].n_words = t->pairs[i].cap_words = 0;
        for (int64_t k = 0; k < n_words; k++)
            if (!merge_word(t, words[k], top.a, top.b, z, mark)) { free(words); return -1; }
        free(words);
        t->pairs[i].count = 0;  /* every occurrence merged */
        if (!push_fresh(t)) return -1;
        left[done] = top.a;
        right[done] = top.b;
        done++;
    }
    return done;
}
