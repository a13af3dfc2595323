/* langid.c: fastText supervised prediction (language identification) over many lines per call.
 *
 *   langid_model_build: the dictionary's hash table (open addressing, fastText's FNV-1a).
 *   langid_predict: for each line, the rows of its words, character n-grams and word
 *     n-grams, their mean (the hidden vector, decoding product-quantized rows on the way),
 *     then softmax / one-vs-all / negative sampling with a top-k heap, or hierarchical
 *     softmax by depth-first search; lines run in parallel (OpenMP), one line per thread.
 *
 * The definition is tinyllm/curate/langid.py (FastTextModel._predict_line) with
 * fasttext/features.py: the same hashing quirks, the same float32 sums in the same order,
 * exp and log in double rounded to float, and libstdc++'s heap moves so tied labels come
 * out in fastText's order. tests/test_c_langid.py holds the two equal. Loading the
 * file, the prune map and every input check live in Python (tinyllm/curate/langid_c.py).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tinyllm.h"

/* The Makefile asks for -ffp-contract=fast; here a*b+c must round twice, as NumPy does. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define KSUB 256
#define MAX_SIGMOID 8
#define SIGMOID_TABLE 512
static const uint8_t EOS[] = "</s>";
static const uint8_t LABEL[] = "__label__";

/* Dictionary::hash: FNV-1a over bytes sign-extended as signed chars. */
static uint32_t ft_step(uint32_t h, uint8_t b) {
    return (h ^ (uint32_t)(int32_t)(int8_t)b) * 16777619u;
}

static uint32_t ft_hash(const uint8_t *s, int64_t len) {
    uint32_t h = 2166136261u;
    for (int64_t i = 0; i < len; i++) h = ft_step(h, s[i]);
    return h;
}

void langid_model_build(const langid_model *m) {
    uint64_t mask = (uint64_t)m->n_slots - 1;
    for (int64_t s = 0; s < m->n_slots; s++) m->slots[s] = -1;
    for (int64_t e = 0; e < m->size; e++) {
        uint64_t s = ft_hash(m->bytes + m->offsets[e], m->offsets[e + 1] - m->offsets[e]) & mask;
        while (m->slots[s] >= 0) s = (s + 1) & mask;  /* n_slots > size: a slot is free */
        m->slots[s] = (int32_t)e;
    }
}

/* The dictionary id of the token s[0:len] whose hash is h, or -1. */
static int32_t find(const langid_model *m, const uint8_t *s, int64_t len, uint32_t h) {
    uint64_t mask = (uint64_t)m->n_slots - 1;
    for (uint64_t k = h & mask;; k = (k + 1) & mask) {
        int32_t e = m->slots[k];
        if (e < 0) return -1;
        int64_t off = m->offsets[e];
        if (m->offsets[e + 1] - off == len && memcmp(m->bytes + off, s, (size_t)len) == 0) return e;
    }
}

/* ---------------------------------------------------------------------------
 * per-thread scratch: growable int32 lists, the hidden and output vectors, the heap */

typedef struct { int32_t *v; int64_t n, cap; } ivec;
typedef struct { float score; int32_t id; } pair;
typedef struct {
    ivec rows, hashes;
    uint8_t *word; int64_t word_cap;    /* "<" + token + ">" */
    float *hidden, *row, *out;          /* (dim,), (dim,), (nlabels,) */
    pair *heap; int64_t heap_n;         /* (k + 1,) */
    int failed;
} scratch;

static void push(scratch *w, ivec *a, int32_t x) {
    if (a->n == a->cap) {
        int64_t cap = a->cap ? 2 * a->cap : 256;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) { w->failed = 1; return; }
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = x;
}

/* Start loading an input row now: rows sit at random in a large matrix (2M buckets), and
 * the hashing of the next n-grams hides the wait. */
static void prefetch_row(const langid_matrix *a, int64_t row) {
    if (a->rows) {
        __builtin_prefetch(a->rows + row * a->n);
        return;
    }
    __builtin_prefetch(a->codes + row * a->nsubq);
    if (a->norm_codes) __builtin_prefetch(a->norm_codes + row);
}

static void push_row(const langid_model *m, scratch *w, int64_t row) {
    prefetch_row(&m->input, row);
    push(w, &w->rows, (int32_t)row);
}

/* Dictionary::pushHash: bucket b -> input row, unless pruning dropped it. */
static void push_bucket(const langid_model *m, scratch *w, int64_t b) {
    if (m->prune) {
        if (m->prune[b] < 0) return;
        b = m->prune[b];
    }
    push_row(m, w, m->nwords + b);
}

/* Dictionary::computeSubwords over word[0:size] = "<" + token + ">": n counts UTF-8
 * characters (a lead byte and its continuation bytes); the lone "<" and ">" are skipped. */
static void char_ngrams(const langid_model *m, scratch *w, const uint8_t *word, int64_t size) {
    for (int64_t i = 0; i < size; i++) {
        if ((word[i] & 0xC0) == 0x80) continue;
        uint32_t h = 2166136261u;
        int64_t j = i;
        for (int32_t n = 1; j < size && n <= m->maxn; n++) {
            h = ft_step(h, word[j++]);
            while (j < size && (word[j] & 0xC0) == 0x80) h = ft_step(h, word[j++]);
            if (n >= m->minn && !(n == 1 && (i == 0 || j == size)))
                push_bucket(m, w, h % (uint32_t)m->bucket);
        }
    }
}

/* One token of Dictionary::getLine: a word adds its row and its n-grams' rows; a label none. */
static void add_token(const langid_model *m, scratch *w, const uint8_t *t, int64_t len, int eos) {
    uint32_t h = ft_hash(t, len);
    int32_t id = find(m, t, len, h);
    int label = id >= 0 ? m->types[id] == 1
                        : len >= 9 && memcmp(t, LABEL, 9) == 0;
    if (label) return;
    if (id >= 0) push_row(m, w, id);
    if (m->maxn > 0 && m->bucket > 0 && !eos) {
        if (len + 2 > w->word_cap) {
            uint8_t *b = realloc(w->word, (size_t)(len + 2));
            if (!b) { w->failed = 1; return; }
            w->word = b, w->word_cap = len + 2;
        }
        w->word[0] = '<';
        memcpy(w->word + 1, t, (size_t)len);
        w->word[len + 1] = '>';
        char_ngrams(m, w, w->word, len + 2);
    }
    push(w, &w->hashes, (int32_t)h);
}

/* Dictionary::addWordNgrams: h = h * 116049371 + next word's hash (sign-extended), 64 bits. */
static void word_ngrams(const langid_model *m, scratch *w) {
    if (m->word_ngrams <= 1 || m->bucket <= 0) return;
    const int32_t *hs = w->hashes.v;
    for (int64_t i = 0; i < w->hashes.n; i++) {
        uint64_t h = (uint64_t)(int64_t)hs[i];
        for (int64_t j = i + 1; j < w->hashes.n && j < i + m->word_ngrams; j++) {
            h = h * 116049371u + (uint64_t)(int64_t)hs[j];
            push_bucket(m, w, (int64_t)(h % (uint64_t)m->bucket));
        }
    }
}

static int is_separator(uint8_t c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == 0;
}

/* The input rows of line[0:len] into w->rows: its tokens, then "</s>" (fastText appends "\n"). */
static void line_rows(const langid_model *m, scratch *w, const uint8_t *line, int64_t len) {
    w->rows.n = w->hashes.n = 0;
    for (int64_t i = 0;;) {
        while (i < len && is_separator(line[i])) i++;
        if (i == len) { add_token(m, w, EOS, 4, 1); break; }
        int64_t start = i;
        while (i < len && !is_separator(line[i])) i++;
        int eos = i - start == 4 && memcmp(line + start, EOS, 4) == 0;
        add_token(m, w, line + start, i - start, eos);
        if (eos) break;                                   /* a literal "</s>" ends the line too */
    }
    word_ngrams(m, w);
}

/* ---------------------------------------------------------------------------
 * matrices: hidden += row (Model::computeHidden), and row . hidden (Matrix::dotRow) */

static const float *centroid(const langid_matrix *a, int64_t row, int32_t q, int32_t *d) {
    *d = q == a->nsubq - 1 ? a->lastdsub : a->dsub;
    return a->centroids + (int64_t)q * KSUB * a->dsub + (int64_t)a->codes[row * a->nsubq + q] * *d;
}

static float row_norm(const langid_matrix *a, int64_t row) {
    return a->norm_codes ? a->norm_centroids[a->norm_codes[row]] : 1.0f;
}

/* hidden += row: dense, or norm * the row's centroids gathered into tmp (dim,) first, so
 * the update is one vector loop (each element still gets one product and one sum). */
static void add_row(const langid_matrix *a, int64_t row, float *restrict h, float *restrict tmp) {
    int64_t n = a->n;
    if (a->rows) {
        const float *restrict r = a->rows + row * n;
        for (int64_t j = 0; j < n; j++) h[j] += r[j];
        return;
    }
    const uint8_t *code = a->codes + row * a->nsubq;
    const float *base = a->centroids;
    int32_t last = a->nsubq - 1, dsub = a->dsub;
    if (dsub == 2) {                                      /* fastText's default for inputs */
        for (int32_t q = 0; q < last; q++)
            memcpy(tmp + 2 * q, base + ((int64_t)q * KSUB + code[q]) * 2, 2 * sizeof(float));
    } else {
        for (int32_t q = 0; q < last; q++)
            memcpy(tmp + (int64_t)q * dsub, base + ((int64_t)q * KSUB + code[q]) * dsub,
                   (size_t)dsub * sizeof(float));
    }
    const float *c_last = base + (int64_t)last * KSUB * dsub + (int64_t)code[last] * a->lastdsub;
    memcpy(tmp + (int64_t)last * dsub, c_last, (size_t)a->lastdsub * sizeof(float));
    float norm = row_norm(a, row);
    for (int64_t j = 0; j < n; j++) h[j] += norm * tmp[j];   /* ProductQuantizer::addcode */
}

static float dot_row(const langid_matrix *a, int64_t row, const float *h) {
    float s = 0.0f;
    if (a->rows) {
        const float *r = a->rows + row * a->n;
        for (int64_t j = 0; j < a->n; j++) s += r[j] * h[j];
        return s;
    }
    for (int32_t q = 0; q < a->nsubq; q++) {              /* ProductQuantizer::mulcode */
        int32_t d;
        const float *c = centroid(a, row, q, &d);
        const float *hq = h + (int64_t)q * a->dsub;
        for (int32_t t = 0; t < d; t++) s += hq[t] * c[t];
    }
    return s * row_norm(a, row);
}

/* fastText's std_log: log(x + 1e-5) in double, x a float. */
static float std_log(float x) { return (float)log((double)x + 1e-5); }

/* ---------------------------------------------------------------------------
 * the top-k heap: libstdc++'s push_heap / pop_heap / sort_heap with comparePairs
 * (a before b when a.score > b.score), as langid.py's _heap_offer and _sort_heap */

static void sift_up(pair *heap, int64_t hole, int64_t top, pair value) {
    int64_t parent = (hole - 1) / 2;
    while (hole > top && heap[parent].score > value.score) {
        heap[hole] = heap[parent];
        hole = parent, parent = (parent - 1) / 2;
    }
    heap[hole] = value;
}

static void adjust(pair *heap, int64_t hole, int64_t length, pair value) {
    int64_t top = hole, child = hole;
    while (child < (length - 1) / 2) {
        child = 2 * (child + 1);
        if (heap[child].score > heap[child - 1].score) child--;
        heap[hole] = heap[child];
        hole = child;
    }
    if (length % 2 == 0 && child == (length - 2) / 2) {
        child = 2 * (child + 1);
        heap[hole] = heap[child - 1];
        hole = child - 1;
    }
    sift_up(heap, hole, top, value);
}

static void heap_offer(scratch *w, pair item, int64_t k) {
    pair *heap = w->heap;
    heap[w->heap_n++] = item;
    sift_up(heap, w->heap_n - 1, 0, item);
    if (w->heap_n > k) {
        pair last = heap[w->heap_n - 1];
        heap[w->heap_n - 1] = heap[0];
        adjust(heap, 0, w->heap_n - 1, last);
        w->heap_n--;
    }
}

static void sort_heap(pair *heap, int64_t n) {
    for (int64_t end = n - 1; end > 0; end--) {
        pair value = heap[end];
        heap[end] = heap[0];
        adjust(heap, 0, end, value);
    }
}

/* ---------------------------------------------------------------------------
 * the losses' predict */

/* Softmax / ova / ns: p for every label into w->out (Loss::computeOutput). */
static void output_probs(const langid_model *m, scratch *w) {
    float *restrict out = w->out;
    int32_t L = m->nlabels;
    if (m->output_t) {            /* (dim, L): each lane of the vector loop sums one label's row */
        const float *h = w->hidden;
        for (int32_t i = 0; i < L; i++) out[i] = 0.0f;
        for (int64_t j = 0; j < m->input.n; j++) {
            const float *restrict col = m->output_t + j * L;
            for (int32_t i = 0; i < L; i++) out[i] += col[i] * h[j];
        }
    } else {
        for (int32_t i = 0; i < L; i++) out[i] = dot_row(&m->output, i, w->hidden);
    }
    if (m->loss == 3) {
        float max = out[0], z = 0.0f;
        for (int32_t i = 1; i < L; i++) max = out[i] > max ? out[i] : max;
        for (int32_t i = 0; i < L; i++) out[i] = (float)exp((double)(out[i] - max));
        for (int32_t i = 0; i < L; i++) z += out[i];
        for (int32_t i = 0; i < L; i++) out[i] = out[i] / z;
        return;
    }
    for (int32_t i = 0; i < L; i++) {                     /* Loss::sigmoid through the table */
        float x = out[i];
        out[i] = x < -MAX_SIGMOID ? 0.0f : x > MAX_SIGMOID ? 1.0f
               : m->sigmoid[(int64_t)((x + MAX_SIGMOID) * SIGMOID_TABLE / MAX_SIGMOID / 2)];
    }
}

/* Loss::findKBest over w->out. */
static void top_k(const langid_model *m, scratch *w, int64_t k, float threshold) {
    for (int32_t i = 0; i < m->nlabels; i++) {
        if (w->out[i] < threshold) continue;
        float s = std_log(w->out[i]);
        if (w->heap_n == k && s < w->heap[0].score) continue;
        heap_offer(w, (pair){s, i}, k);
    }
}

/* HierarchicalSoftmaxLoss::dfs: sigmoid(node . hidden) is the right child's factor. */
static void hs_dfs(const langid_model *m, scratch *w, int64_t k, float log_threshold,
                   int32_t node, float score) {
    if (score < log_threshold || (w->heap_n == k && score < w->heap[0].score)) return;
    if (node < m->nlabels) {
        heap_offer(w, (pair){score, node}, k);
        return;
    }
    float e = (float)exp(-(double)dot_row(&m->output, node - m->nlabels, w->hidden));
    float f = (float)(1.0 / (double)(1.0f + e));
    hs_dfs(m, w, k, log_threshold, m->tree_left[node], score + std_log((float)(1.0 - f)));
    hs_dfs(m, w, k, log_threshold, m->tree_right[node], score + std_log(f));
}

static void predict_line(const langid_model *m, scratch *w, const uint8_t *line, int64_t len,
                         int64_t k, float threshold) {
    w->heap_n = 0;
    line_rows(m, w, line, len);
    if (w->failed || w->rows.n == 0) return;
    int64_t dim = m->input.n;
    for (int64_t j = 0; j < dim; j++) w->hidden[j] = 0.0f;
    for (int64_t r = 0; r < w->rows.n; r++) add_row(&m->input, w->rows.v[r], w->hidden, w->row);
    float inv = (float)(1.0 / (double)w->rows.n);
    for (int64_t j = 0; j < dim; j++) w->hidden[j] *= inv;
    if (m->loss == 1) {
        hs_dfs(m, w, k, std_log(threshold), 2 * m->nlabels - 2, 0.0f);
    } else {
        output_probs(m, w);
        top_k(m, w, k, threshold);
    }
    sort_heap(w->heap, w->heap_n);
}

int langid_predict(const langid_model *m, const uint8_t *text, const int64_t *ends,
                   int64_t n_lines, int32_t k, float threshold, int32_t *labels, float *scores,
                   int32_t *counts) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        scratch w = {0};
        w.hidden = malloc((size_t)m->input.n * sizeof(float));
        w.row = malloc((size_t)m->input.n * sizeof(float));
        w.out = malloc((size_t)m->nlabels * sizeof(float));
        w.heap = malloc((size_t)(k + 1) * sizeof(pair));
        w.failed = !w.hidden || !w.row || !w.out || !w.heap;
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < n_lines; i++) {
            int64_t start = i ? ends[i - 1] : 0;
            if (!w.failed) predict_line(m, &w, text + start, ends[i] - start, k, threshold);
            int32_t n = w.failed ? 0 : (int32_t)w.heap_n;
            for (int32_t j = 0; j < k; j++) {
                labels[i * k + j] = j < n ? w.heap[j].id : -1;
                scores[i * k + j] = j < n ? w.heap[j].score : -INFINITY;
            }
            counts[i] = n;
        }
        failed |= w.failed;
        free(w.rows.v), free(w.hashes.v), free(w.word);
        free(w.hidden), free(w.row), free(w.out), free(w.heap);
    }
    return failed ? -1 : 0;
}
