"""Stable, vectorized hashes of words and word n-grams, for dedup and quality filters.

Both MinHash (minhash.py) and the repetition heuristics (clean.py) need the
same thing: split a text into words, give each word a 64-bit hash, and give
each run of n consecutive words a 64-bit hash. Doing it with one Python call
per word would dominate the pipeline, so everything here works on whole
arrays at once:

  - a word is a maximal run of bytes that are not ASCII whitespace, found
    with array comparisons on the UTF-8 bytes;
  - a word's hash is a polynomial in its bytes modulo 2**64, computed for
    all words at once from one prefix sum (see `span_hashes`), then mixed;
  - an n-gram's hash is a polynomial in its n word hashes, mixed again.

Hashes are stable across processes and machines (unlike Python's salted
`hash()`), so parallel workers and re-runs agree. They are not
cryptographic. csrc/wordhash.h computes the same hashes in C, bit for bit,
for the C quality rules and MinHash. This file is not MinHash itself: read
minhash.py next.
"""
import numpy as np

# ASCII whitespace, the bytes that separate words, as a lookup table over byte
# values (other Unicode spaces become " " in clean.normalize before this runs).
_IS_WORD_BYTE = np.ones(256, dtype=bool)
_IS_WORD_BYTE[[9, 10, 11, 12, 13, 32]] = False
_P = np.uint64(0x100000001B3)            # the 64-bit FNV prime: odd, so invertible mod 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))
_Q = np.uint64(0x9E3779B97F4A7C15)       # combines word hashes into n-gram hashes


def mix64(x):
    """splitmix64's finalizer: every input bit affects every output bit (1-d uint64 array).

    Array arithmetic wraps modulo 2**64 silently, which is what a hash wants.
    """
    x = np.asarray(x, dtype=np.uint64).reshape(-1)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def word_spans(data):
    """(starts, ends) byte offsets of the words in a uint8 array: runs of non-whitespace."""
    is_word = _IS_WORD_BYTE[data]                                   # (n,)
    edges = np.diff(is_word.astype(np.int8), prepend=0, append=0)   # (n+1,) +1 at starts, -1 after ends
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def span_hashes(data, starts, ends):
    """64-bit hash of each byte span data[s:e], all spans at once.

    With c_k = (byte_k + 1) * P**-k and C its prefix sum, the span's hash is
    P**s * (C[e] - C[s]) = sum_k (byte_k + 1) * P**(s - k): the same value
    wherever the span sits, so equal words get equal hashes. All arithmetic
    wraps modulo 2**64, where the odd P has an inverse.
    """
    n = len(data)
    powers, inv_powers = _powers(n + 1)                                    # (>n,) P**k and P**-k
    prefix = np.zeros(n + 1, dtype=np.uint64)                              # (n+1,)
    np.cumsum((data.astype(np.uint64) + np.uint64(1)) * inv_powers[:n], out=prefix[1:])
    h = (prefix[ends] - prefix[starts]) * powers[starts]                   # (W,)
    lengths = (ends - starts).astype(np.uint64)
    return mix64(h ^ (lengths * _Q))  # the length in the mix: spans of zero-valued sums differ


def ngram_hashes(word_hashes, n):
    """Hash of every run of n consecutive words: shape (max(W - n + 1, 0),) uint64."""
    return next(ngram_hash_series(word_hashes, n, n))[1]


def ngram_hash_series(word_hashes, low, high, mix=True):
    """Yield (n, ngram_hashes(word_hashes, n)) for n = low..high, sharing the work between sizes.

    The unmixed hash of the n-grams extends the (n-1)-grams' by one word:
    h_n[i] = h_{n-1}[i] * Q + word[i + n - 1] (Horner's rule), then each is mixed.
    mix=False skips the mixing, for callers that only compare hashes for equality.
    """
    h = np.asarray(word_hashes, dtype=np.uint64)
    for n in range(1, high + 1):
        if n > 1:
            h = h[:-1] * _Q + word_hashes[n - 1:] if len(h) > 1 else h[:0]
        if n >= low:
            yield n, (mix64(h + np.uint64(n)) if mix else h)


def text_words(text, lower=False):
    """(word hashes, word byte lengths) of one text; `lower` folds case first."""
    data = utf8_array(text.lower() if lower else text)
    starts, ends = word_spans(data)
    return span_hashes(data, starts, ends), ends - starts


def _powers(n, _cache={}):
    """(P**k, P**-k) for k = 0..n-1 at least; grown by doubling and kept, as they never change."""
    if _cache.get("n", 0) < n:
        size = max(n, 2 * _cache.get("n", 1 << 16))
        _cache["up"] = np.cumprod(np.full(size, _P, dtype=np.uint64)) * _P_INV
        _cache["down"] = np.cumprod(np.full(size, _P_INV, dtype=np.uint64)) * _P
        _cache["n"] = size
    return _cache["up"], _cache["down"]


def utf8_array(text):
    """The UTF-8 bytes of text as a uint8 array; lone surrogates pass through unchanged."""
    return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
