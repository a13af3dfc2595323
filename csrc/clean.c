/* clean.c: text normalization and the document quality heuristics of tinyllm/curate/clean.py,
 * many documents a call.
 *
 *   normalize_texts: clean.normalize after its Unicode steps (NFC and Unicode spaces, which
 *     stay in Python): CR LF and CR to LF, control characters out, trailing spaces and tabs
 *     of each line out, runs of 3+ newlines to 2, then str.strip().
 *   quality_reasons: for each normalized document (UTF-8), the number of the first rule it
 *     fails (clean.quality_reason's order: word counts, mean word length, letter share,
 *     repeated lines and paragraphs, then the word n-gram rules by increasing n), or 0.
 *
 * The definitions are clean.py's normalize and quality_reason: Python's str.split / str.strip / re semantics
 * become a table of code point classes that Python builds from the same predicates
 * (ctype[c] & 1: str.isspace, & 2: a letter, i.e. matched by [^\W\d_]); the n-gram hashes are
 * hashing.py's, bit for bit, so hash collisions (if any) fall the same way; the share limits
 * are compared in double as Python compares an int with a float product. One thread per call:
 * prepare runs one call per worker process. tests/test_c_clean.py holds the two equal.
 */
#include <stdlib.h>
#include <string.h>

#include "tinyllm.h"
#include "wordhash.h"

#define SPACE 1
#define LETTER 2
#define Q WORDHASH_Q
/* The code point starting at s[*i] (valid UTF-8, surrogates allowed); advances *i. */
static uint32_t next_cp(const uint8_t *s, int64_t *i) {
    uint32_t c = s[*i];
    int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    c &= extra == 0 ? 0x7F : extra == 1 ? 0x1F : extra == 2 ? 0x0F : 0x07;
    for (int k = 1; k <= extra; k++) c = (c << 6) | (s[*i + k] & 0x3F);
    *i += extra + 1;
    return c;
}

/* The code point ending just before s[*end] (> lo); moves *end back to its first byte. */
static uint32_t prev_cp(const uint8_t *s, int64_t lo, int64_t *end) {
    int64_t j = *end - 1;
    while (j > lo && (s[j] & 0xC0) == 0x80) j--;
    *end = j;
    return next_cp(s, &j);
}

static int64_t count_cps(const uint8_t *s, int64_t a, int64_t b) {
    int64_t n = 0;
    for (int64_t i = a; i < b; i++) n += (s[i] & 0xC0) != 0x80;
    return n;
}

/* s[*a : *b] without leading and trailing str.isspace() code points. */
static void strip(const uint8_t *s, const uint8_t *ctype, int64_t *a, int64_t *b) {
    int64_t i = *a;
    while (i < *b) {
        int64_t at = i;
        if (!(ctype[next_cp(s, &i)] & SPACE)) { i = at; break; }
    }
    *a = i;
    while (*b > *a) {
        int64_t at = *b;
        if (!(ctype[prev_cp(s, *a, &at)] & SPACE)) break;
        *b = at;
    }
}

typedef struct { const uint8_t *s; int64_t *starts, *lens; int64_t *slots, n_slots; } part_set;

/* How many of the parts (start, length) repeat an earlier equal one, and their code points. */
static void repeats(part_set *p, int64_t n, int64_t *count, int64_t *chars) {
    uint64_t mask = (uint64_t)p->n_slots - 1;
    for (int64_t k = 0; k < p->n_slots; k++) p->slots[k] = -1;
    *count = *chars = 0;
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *a = p->s + p->starts[k];
        uint64_t h = 0xCBF29CE484222325ULL;
        for (int64_t i = 0; i < p->lens[k]; i++) h = (h ^ a[i]) * 0x100000001B3ULL;
        uint64_t slot = mix64(h) & mask;
        for (;;) {
            int64_t j = p->slots[slot];
            if (j < 0) { p->slots[slot] = k; break; }
            if (p->lens[j] == p->lens[k] && memcmp(p->s + p->starts[j], a, (size_t)p->lens[k]) == 0) {
                *count += 1;
                *chars += count_cps(a, 0, p->lens[k]);
                break;
            }
            slot = (slot + 1) & mask;
        }
    }
}

/* Append the stripped text[a:b] to the parts when it is not empty. */
static void add_part(part_set *p, const uint8_t *ctype, int64_t a, int64_t b, int64_t *n) {
    strip(p->s, ctype, &a, &b);
    if (b > a) p->starts[*n] = a, p->lens[*n] = b - a, *n += 1;
}

/* The end of a paragraph break (re "\n\s*\n") starting at s[i] == '\n', or -1 when none does:
 * \s* is greedy, so the match runs to the last '\n' of the whitespace after s[i]. */
static int64_t paragraph_break(const uint8_t *s, int64_t i, int64_t L, const uint8_t *ctype) {
    int64_t j = i + 1, last = -1;
    while (j < L) {
        int64_t at = j;
        if (!(ctype[next_cp(s, &j)] & SPACE)) break;
        if (s[at] == '\n') last = at;
    }
    return last < 0 ? -1 : last + 1;
}

typedef struct {
    int64_t *starts, *lens, *slots, *ngram_slots, *at;
    uint64_t *words, *grams;
    int64_t *wlen;
    int32_t *counts;
    uint8_t *repeat, *covered, *keep;
    int64_t *pos;
} scratch;

static int dup_rule(const uint8_t *s, int64_t L, int64_t n_cps, const uint8_t *ctype,
                    const quality_limits *c, scratch *w, int64_t n_slots) {
    part_set p = {s, w->starts, w->lens, w->slots, n_slots};
    int64_t n = 0, a = 0, count, chars;
    for (int64_t i = 0; i <= L; i++)                          /* lines: text.split("\n") */
        if (i == L || s[i] == '\n') add_part(&p, ctype, a, i, &n), a = i + 1;
    repeats(&p, n, &count, &chars);
    if (c->max_dup_line_fraction > 0 && (double)count > c->max_dup_line_fraction * (double)n)
        return QUALITY_DUP_LINES;
    if (c->max_dup_line_char_fraction > 0 && (double)chars > c->max_dup_line_char_fraction * (double)n_cps)
        return QUALITY_DUP_LINE_CHARS;
    n = 0, a = 0;
    for (int64_t i = 0; i < L; i++) {                         /* paragraphs: re.split */
        int64_t end = s[i] == '\n' ? paragraph_break(s, i, L, ctype) : -1;
        if (end >= 0) add_part(&p, ctype, a, i, &n), a = end, i = end - 1;
    }
    add_part(&p, ctype, a, L, &n);
    repeats(&p, n, &count, &chars);
    if (c->max_dup_paragraph_fraction > 0 && (double)count > c->max_dup_paragraph_fraction * (double)n)
        return QUALITY_DUP_PARAGRAPHS;
    if (c->max_dup_paragraph_char_fraction > 0 &&
        (double)chars > c->max_dup_paragraph_char_fraction * (double)n_cps)
        return QUALITY_DUP_PARAGRAPH_CHARS;
    return 0;
}

/* The top and dup n-gram rules for n = 1..max_n. An n-gram can only repeat where its (n-1)-gram
 * prefix does, so each n looks only at the positions whose (n-1)-gram occurs twice or more
 * (pos[0:m], in text order, their n-gram hashes in grams): the other n-grams occur once, which
 * neither rule counts, and ties still go to the earliest n-gram. */
static int ngram_rule(const uint8_t *s, int64_t L, const quality_limits *c, scratch *w) {
    int64_t W = text_words(s, L, w->words, w->wlen), total = 0, m = W;
    for (int64_t i = 0; i < W; i++) total += w->wlen[i], w->grams[i] = w->words[i], w->pos[i] = i;
    for (int64_t n = 1; n <= c->max_n && W - n + 1 >= 2; n++) {
        if (n > 1) {                  /* the survivors, their hash extended by a word (Horner) */
            int64_t k2 = 0;
            for (int64_t k = 0; k < m; k++)
                if (w->keep[k] && w->pos[k] + n <= W)
                    w->pos[k2] = w->pos[k], w->grams[k2++] = w->grams[k] * Q + w->words[w->pos[k] + n - 1];
            m = k2;
        }
        if (m < 2) return 0;          /* every n-gram from here on occurs once */
        int64_t n_slots = 1;
        while (n_slots <= 2 * m) n_slots <<= 1;
        int64_t most = ngram_repeats(w->grams, m, w->ngram_slots, n_slots, w->counts, w->repeat, w->at);
        for (int64_t k = 0; k < m; k++) w->keep[k] = w->repeat[k] || w->counts[k] >= 2;
        double top = c->top_share[n], dup = c->dup_share[n];
        if (most < 2) continue;
        if (top > 0) {
            int64_t bytes = n - 1, at = w->pos[*w->at];
            for (int64_t t = 0; t < n; t++) bytes += w->wlen[at + t];
            if ((double)(bytes * most) > top * (double)L) return QUALITY_TOP_NGRAM + (int)n;
        }
        if (dup > 0) {
            memset(w->covered, 0, (size_t)W);
            for (int64_t k = 0; k < m; k++)
                if (w->repeat[k]) memset(w->covered + w->pos[k], 1, (size_t)n);
            int64_t covered = 0;
            for (int64_t i = 0; i < W; i++) covered += w->covered[i] ? w->wlen[i] : 0;
            if ((double)covered > dup * (double)total) return QUALITY_DUP_NGRAM + (int)n;
        }
    }
    return 0;
}

/* The words rules: counts, mean length and letter share, all on code points. */
static int word_rule(const uint8_t *s, int64_t L, const uint8_t *ctype, const quality_limits *c,
                     int64_t *n_cps) {
    int64_t words = 0, chars = 0, letters = 0, cps = 0;
    int in_word = 0;
    for (int64_t i = 0; i < L;) {
        uint8_t t = ctype[next_cp(s, &i)];
        cps++;
        if (t & SPACE) { in_word = 0; continue; }
        words += !in_word, in_word = 1, chars++, letters += (t & LETTER) != 0;
    }
    *n_cps = cps;
    if (words == 0) return QUALITY_EMPTY;
    if (c->min_words > 0 && (double)words < c->min_words) return QUALITY_TOO_FEW_WORDS;
    if (c->max_words > 0 && (double)words > c->max_words) return QUALITY_TOO_MANY_WORDS;
    double mean = (double)chars / (double)words;
    if ((c->min_mean_word_length > 0 && mean < c->min_mean_word_length) ||
        (c->max_mean_word_length > 0 && mean > c->max_mean_word_length))
        return QUALITY_MEAN_WORD_LENGTH;
    if (c->min_alpha_fraction > 0 && (double)letters < c->min_alpha_fraction * (double)chars)
        return QUALITY_ALPHA_FRACTION;
    return 0;
}

static int quality_one(const uint8_t *s, int64_t L, const uint8_t *ctype, const quality_limits *c,
                       scratch *w) {
    int64_t n_cps, n_slots = 1;
    int r = word_rule(s, L, ctype, c, &n_cps);
    if (r) return r;
    while (n_slots <= 2 * (L + 1)) n_slots <<= 1;    /* more than twice the parts: short probes */
    r = dup_rule(s, L, n_cps, ctype, c, w, n_slots);
    if (r || c->max_n == 0) return r;
    return ngram_rule(s, L, c, w);
}

int quality_reasons(const uint8_t *text, const int64_t *ends, int64_t n_docs, const uint8_t *ctype,
                    const quality_limits *limits, int32_t *reasons) {
    int64_t most = 1;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t L = ends[d] - (d ? ends[d - 1] : 0);
        if (L + 1 > most) most = L + 1;
    }
    int64_t slots = 1;
    while (slots <= 2 * most) slots <<= 1;
    scratch w;                   /* sized for the longest document: parts, words <= bytes + 1 */
    w.starts = malloc((size_t)most * sizeof(int64_t)), w.lens = malloc((size_t)most * sizeof(int64_t));
    w.slots = malloc((size_t)slots * sizeof(int64_t)), w.ngram_slots = malloc((size_t)slots * sizeof(int64_t));
    w.words = malloc((size_t)most * sizeof(uint64_t)), w.grams = malloc((size_t)most * sizeof(uint64_t));
    w.wlen = malloc((size_t)most * sizeof(int64_t)), w.counts = malloc((size_t)most * sizeof(int32_t));
    w.repeat = malloc((size_t)most), w.covered = malloc((size_t)most), w.keep = malloc((size_t)most);
    w.pos = malloc((size_t)most * sizeof(int64_t));
    int64_t at;
    w.at = &at;
    int ok = w.starts && w.lens && w.slots && w.ngram_slots && w.words && w.grams && w.wlen &&
             w.counts && w.repeat && w.covered && w.keep && w.pos;
    for (int64_t d = 0; ok && d < n_docs; d++) {
        int64_t a = d ? ends[d - 1] : 0;
        reasons[d] = quality_one(text + a, ends[d] - a, ctype, limits, &w);
    }
    free(w.starts), free(w.lens), free(w.slots), free(w.ngram_slots), free(w.words);
    free(w.grams), free(w.wlen), free(w.counts), free(w.repeat), free(w.covered), free(w.keep);
    free(w.pos);
    return ok ? 0 : -1;
}

/* clean.normalize's _CONTROL: C0 but tab, LF and CR; DEL and C1; U+200B; U+FEFF. */
static int is_control(uint32_t c) {
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || (c >= 0x7F && c <= 0x9F) ||
           c == 0x200B || c == 0xFEFF;
}

/* s[0:L] normalized into o (at most L bytes: every step only shrinks); returns its length. */
static int64_t normalize_one(const uint8_t *s, int64_t L, const uint8_t *ctype, uint8_t *o) {
    int64_t n = 0;
    for (int64_t i = 0; i < L;) {                    /* CR LF and CR -> LF; controls out */
        int64_t at = i;
        uint32_t c = next_cp(s, &i);
        if (c == '\r') {
            o[n++] = '\n';
            if (i < L && s[i] == '\n') i++;
        } else if (!is_control(c)) {
            while (at < i) o[n++] = s[at++];
        }
    }
    int64_t m = 0, run = -1;                          /* [ \t]+ before a LF or the end: out */
    for (int64_t i = 0; i < n; i++) {
        uint8_t b = o[i];
        if (b == ' ' || b == '\t') {
            if (run < 0) run = m;
        } else {
            if (b == '\n' && run >= 0) m = run;
            run = -1;
        }
        o[m++] = b;
    }
    if (run >= 0) m = run;
    n = 0;                                            /* 3+ LF -> 2 */
    for (int64_t i = 0, lf = 0; i < m; i++) {
        lf = o[i] == '\n' ? lf + 1 : 0;
        if (lf <= 2) o[n++] = o[i];
    }
    int64_t a = 0, b = n;
    strip(o, ctype, &a, &b);
    memmove(o, o + a, (size_t)(b - a));
    return b - a;
}

void normalize_texts(const uint8_t *text, const int64_t *ends, int64_t n_docs, const uint8_t *ctype,
                     uint8_t *out, int64_t *out_ends) {
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t a = d ? ends[d - 1] : 0;
        n += normalize_one(text + a, ends[d] - a, ctype, out + n);
        out_ends[d] = n;
    }
}
