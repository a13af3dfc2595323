"""MinHash signatures of documents and the LSH banding that finds similar ones.

A document's shingles are its lower-cased word n-grams (hashing.py gives each
a 64-bit hash; its top 32 bits are the shingle's value x). For each of
num_perm hash functions h_j(x) = (a_j * x + b_j) mod 2**64 >> 32, with a_j,
b_j random 64-bit numbers (the multiply-add-shift family: 2-independent for
32-bit keys, and no division, unlike the (a*x + b) mod prime of the textbook),
the signature keeps min over the document's shingles. Two documents agree in
one signature position with probability equal to the Jaccard similarity of
their shingle sets, so the share of equal positions estimates it.

LSH: the signature is cut into `bands` bands of `rows` positions. Documents
that agree on every position of at least one band become candidate pairs,
which happens with probability 1 - (1 - s**rows)**bands for similarity s: an
S-curve whose step sits near the threshold. `optimal_bands` picks bands and
rows as datasketch does: the pair minimizing the (equally weighted) area of
false positives below the threshold plus false negatives above it, with
bands * rows <= num_perm. `recall_bands` instead favours recall (every
candidate is verified anyway): pairs just above the threshold become
candidates with probability 0.995.

MinHasher.signatures runs in C (csrc/minhash.c) when the library has it;
the NumPy code here is the definition. Documents too short for one n-gram
use all their words as one shingle;
documents with no words at all get no shingles and an all-0xFFFFFFFF
signature (`MinHasher.signatures` reports them as empty).
This is not the clustering (dedup.py uses these): read dedup.py next.
"""
import numpy as np

from tinyllm.errors import DataError
from tinyllm.curate.hashing import mix64, ngram_hashes, span_hashes, word_spans
from tinyllm.curate.native import c_library

_C = c_library(("minhash_signatures", "minhash_shingles"))   # (ffi, lib), or None: NumPy

EMPTY = np.uint32(0xFFFFFFFF)     # signature value of a document without shingles
_BLOCK = 1 << 13                  # shingles hashed at once: (P, _BLOCK) uint64, 8 MB at P = 128
_BATCH_CHARS = 1 << 20            # documents are shingled about 1M characters at a time
_BAND_MUL = np.uint64(0xC2B2AE3D27D4EB4F)


class MinHasher:
    """num_perm hash functions drawn from `seed`; signatures(docs) -> (N, num_perm) uint32."""

    def __init__(self, num_perm=128, ngram=5, seed=0):
        for name, value in (("num_perm", num_perm), ("ngram", ngram)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"{name}={value!r}: it must be an integer >= 1 (e.g. 128 and 5)")
        self.num_perm, self.ngram, self.seed = int(num_perm), int(ngram), seed
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)  # (P,) odd
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)                 # (P,)

    def signatures(self, docs, use_c=None):
        """(signatures (N, P) uint32, empty (N,) bool) for a list of strings: in C
        (csrc/minhash.c, one call) when built and use_c is not False, else in NumPy."""
        if _C is not None and use_c is not False and docs:
            return self._signatures_c(docs)
        N, P = len(docs), self.num_perm
        sig = np.full((N, P), EMPTY, dtype=np.uint32)             # (N, P)
        empty = np.ones(N, dtype=bool)
        buf = np.empty((P, _BLOCK), dtype=np.uint64)              # reused: no allocation per block
        lo = 0
        while lo < N:
            hi, chars = lo, 0
            while hi < N and (hi == lo or chars < _BATCH_CHARS):
                chars += len(docs[hi])
                hi += 1
            shingles, doc_of = shingle_values(docs[lo:hi], self.ngram, use_c=False)  # (S,), (S,)
            doc_of += lo
            empty[doc_of] = False
            for start in range(0, len(shingles), _BLOCK):
                x = shingles[start:start + _BLOCK]                # (S_b,)
                owners = doc_of[start:start + _BLOCK]             # (S_b,) non-decreasing
                hashed = buf[:, :len(x)]                          # (P, S_b)
                with np.errstate(over="ignore"):
                    np.multiply(self.a[:, None], x[None, :], out=hashed)
                    hashed += self.b[:, None]
                hashed >>= np.uint64(32)
                first = np.flatnonzero(np.diff(owners, prepend=-1))   # (D_b,) each owner's first
                mins = np.minimum.reduceat(hashed, first, axis=1).T.astype(np.uint32)  # (D_b, P)
                docs_b = owners[first]
                # a document cut by the block edge keeps the smaller of its two partial minima
                sig[docs_b] = np.minimum(sig[docs_b], mins)
            lo = hi
        return sig, empty


    def _signatures_c(self, docs):
        ffi, lib = _C
        blob, ends = _lowered(docs)
        sig = np.empty((len(docs), self.num_perm), dtype=np.uint32)             # (N, P)
        empty = np.empty(len(docs), dtype=np.uint8)                             # (N,)
        buffer = ffi.from_buffer
        if lib.minhash_signatures(buffer("uint8_t[]", blob), buffer("int64_t[]", ends), len(docs),
                                  self.ngram, buffer("uint64_t[]", self.a),
                                  buffer("uint64_t[]", self.b), self.num_perm,
                                  buffer("uint32_t[]", sig), buffer("uint8_t[]", empty)) < 0:
            raise MemoryError(f"minhash_signatures: out of memory on {int(ends[-1]):,} bytes")
        return sig, empty.view(bool)


def _lowered(docs):
    """The lower-cased UTF-8 of docs (a non-empty list) as one buffer, and each one's end (N,)."""
    parts = [d.lower().encode("utf-8", "surrogatepass") for d in docs]
    return b"".join(parts) or b"\0", np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))


def _shingles_c(docs, ngram, bits, sets=False):
    ffi, lib = _C
    blob, ends = _lowered(docs)
    values = np.empty(int(ends[-1]) // 2 + len(docs), dtype=np.uint64)       # >= every shingle
    counts = np.empty(len(docs), dtype=np.int64)                               # (N,)
    buffer = ffi.from_buffer
    if lib.minhash_shingles(buffer("uint8_t[]", blob), buffer("int64_t[]", ends), len(docs),
                            ngram, int(sets), buffer("uint64_t[]", values),
                            buffer("int64_t[]", counts)) < 0:
        raise MemoryError(f"minhash_shingles: out of memory on {int(ends[-1]):,} bytes")
    return (values[:int(counts.sum())] >> np.uint64(64 - bits),
            np.repeat(np.arange(len(docs), dtype=np.int64), counts))


def shingle_values(docs, ngram, bits=32, use_c=None):
    """Every document's shingle values (the top `bits` bits of the shingle hashes, uint64)
    and the owning document's index (non-decreasing); in C (csrc/minhash.c) when built."""
    if not docs:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    if _C is not None and use_c is not False:
        return _shingles_c(docs, ngram, bits)
    parts = [d.lower().encode("utf-8", "surrogatepass") for d in docs]
    data = np.frombuffer(b"\n".join(parts), dtype=np.uint8)               # "\n" never joins two words
    doc_starts = np.cumsum([0] + [len(p) + 1 for p in parts[:-1]])        # (N,)
    starts, ends = word_spans(data)
    words = span_hashes(data, starts, ends)                               # (W,)
    word_doc = np.searchsorted(doc_starts, starts, side="right") - 1      # (W,) non-decreasing
    grams = ngram_hashes(words, ngram)                                    # (W - n + 1,)
    gram_doc = word_doc[:len(grams)]
    inside = gram_doc == word_doc[ngram - 1:]                             # n-grams inside one document
    values, owners = [grams[inside]], [gram_doc[inside]]
    counts = np.bincount(word_doc, minlength=len(docs))                   # (N,) words per document
    first_word = np.cumsum(counts) - counts
    for d in np.flatnonzero((counts > 0) & (counts < ngram)):             # short: all words, one shingle
        values.append(ngram_hashes(words[first_word[d]:first_word[d] + counts[d]], int(counts[d])))
        owners.append(np.array([d]))
    values, owners = np.concatenate(values), np.concatenate(owners).astype(np.int64)
    order = np.argsort(owners, kind="stable")                             # short ones to their place
    return values[order] >> np.uint64(64 - bits), owners[order]


def shingle_sets(docs, ngram, use_c=None):
    """(values, bounds (N + 1,)): values[bounds[k]:bounds[k + 1]] are the distinct 64-bit
    shingle hashes of docs[k], ascending; in C (csrc/minhash.c) when built."""
    if docs and _C is not None and use_c is not False:
        values, owners = _shingles_c(docs, ngram, 64, sets=True)
    else:
        values, owners = shingle_values(docs, ngram, bits=64, use_c=False)
        order = np.lexsort((values, owners))                               # by document, then value
        values, owners = values[order], owners[order]
        first = np.ones(len(values), dtype=bool)
        first[1:] = (values[1:] != values[:-1]) | (owners[1:] != owners[:-1])
        values, owners = values[first], owners[first]
    return values, np.searchsorted(owners, np.arange(len(docs) + 1))


def exact_jaccard(docs, i, j, ngram):
    """(K,) Jaccard similarity of the shingle sets of docs[i[k]] and docs[j[k]].

    Shingles are compared by their 64-bit hashes: a false match needs a 64-bit
    collision between two documents' shingles (about n**2 / 2**64 for n shingles).
    """
    need = np.unique(np.concatenate([i, j]).astype(np.int64))              # (D,)
    values, bounds = shingle_sets([docs[d] for d in need.tolist()], ngram)
    sets = {d: values[bounds[k]:bounds[k + 1]] for k, d in enumerate(need.tolist())}
    out = np.zeros(len(i), dtype=np.float64)                                # (K,)
    for k, (a, b) in enumerate(zip(np.asarray(i).tolist(), np.asarray(j).tolist())):
        shared = len(np.intersect1d(sets[a], sets[b], assume_unique=True))
        union = len(sets[a]) + len(sets[b]) - shared
        out[k] = shared / union if union else 0.0
    return out


def band_keys(signatures, bands, rows):
    """(N, bands) uint64: one hash per band of `rows` signature positions."""
    N = signatures.shape[0]
    if bands * rows > signatures.shape[1]:
        raise DataError(f"bands * rows = {bands} * {rows} exceeds the {signatures.shape[1]} "
                        "signature positions; lower one of them or raise num_perm")
    keys = np.empty((N, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(N, band, dtype=np.uint64)
            for col in range(band * rows, (band + 1) * rows):
                h = h * _BAND_MUL + signatures[:, col]
            keys[:, band] = mix64(h)
    return keys


def optimal_bands(threshold, num_perm, false_positive_weight=0.5, false_negative_weight=0.5):
    """(bands, rows) minimizing weighted false-positive + false-negative area, as datasketch does.

    For every (b, r) with b * r <= num_perm, in datasketch's order (b outer,
    r inner, the first minimum wins), the two areas under the S-curve are
    integrated with Simpson's rule on 1,001 points each side of the threshold.
    """
    if not 0.0 < threshold < 1.0:
        raise DataError(f"threshold={threshold!r}: the Jaccard threshold must be strictly "
                        "between 0 and 1 (e.g. 0.8)")
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)],
                     dtype=np.float64)                                     # (K, 2)
    b, r = pairs[:, :1], pairs[:, 1:]                                      # (K, 1) each
    below, above = np.linspace(0.0, threshold, 1001), np.linspace(threshold, 1.0, 1001)
    p_below = 1.0 - (1.0 - below[None, :] ** r) ** b                       # (K, 1001)
    p_above = 1.0 - (1.0 - above[None, :] ** r) ** b
    false_pos = _simpson(p_below, threshold)                               # (K,)
    false_neg = _simpson(1.0 - p_above, 1.0 - threshold)
    best = int(np.argmin(false_positive_weight * false_pos + false_negative_weight * false_neg))
    return int(pairs[best, 0]), int(pairs[best, 1])


def recall_bands(threshold, num_perm, slack=0.05, recall=0.995):
    """(bands, rows) that make pairs at similarity threshold + slack candidates with
    probability >= recall, and among those the fewest false candidates.

    For LSH whose candidates are all verified (dedup.verify_pairs): a false
    candidate costs one comparison, a missed pair is lost for good, so the
    S-curve is pushed left until 1 - (1 - s**r)**b >= recall at s = threshold +
    slack; of the (b, r) with b * r <= num_perm that do, the one with the
    smallest false-positive area below the threshold (as optimal_bands) wins.
    At threshold 0.8 and 128 permutations: 14 bands of 7 rows (a pair of
    similarity 0.85 is a candidate with probability 0.9955; 9 x 13, datasketch's
    choice, gives 0.69).
    """
    if not 0.0 < threshold < 1.0 or not 0.0 < recall < 1.0:
        raise DataError(f"threshold={threshold!r}, recall={recall!r}: both must be strictly "
                        "between 0 and 1 (e.g. 0.8 and 0.995)")
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)],
                     dtype=np.float64)                                     # (K, 2)
    b, r = pairs[:, 0], pairs[:, 1]
    reach = 1.0 - (1.0 - min(threshold + slack, 1.0) ** r) ** b            # (K,)
    if not (reach >= recall).any():
        raise DataError(f"no banding of {num_perm} permutations finds pairs at similarity "
                        f"{threshold + slack:.2f} with probability {recall} (best "
                        f"{reach.max():.3f}); raise num_perm or lower the recall")
    below = np.linspace(0.0, threshold, 1001)
    false_pos = _simpson(1.0 - (1.0 - below[None, :] ** r[:, None]) ** b[:, None], threshold)
    best = int(np.argmin(np.where(reach >= recall, false_pos, np.inf)))
    return int(b[best]), int(r[best])


def _simpson(y, width):
    """Simpson's rule along the last axis of y, sampled at an odd number of even steps over width."""
    h = width / (y.shape[-1] - 1)
    inner = 4.0 * y[..., 1:-1:2].sum(-1) + 2.0 * y[..., 2:-1:2].sum(-1)
    return h / 3.0 * (y[..., 0] + y[..., -1] + inner)
