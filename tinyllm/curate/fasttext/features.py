"""fastText's input features: which rows of the input matrix a line of text adds up.

For a line (fastText appends "\\n", so every line ends with the token "</s>"),
Dictionary::getLine collects, token by token:
  - a word in the dictionary: its own row, then (when maxn > 0) the rows of
    its character n-grams;
  - a word not in the dictionary: its character n-grams' rows only;
  - a label ("__label__..."): no row (it is a training target);
and then one row per word n-gram (wordNgrams > 1) over the words' hashes.

Hashing, exactly as fastText (with its quirks, since published models
depend on them):
  - FNV-1a, 32 bits, over the UTF-8 bytes, where each byte is first
    sign-extended as a signed char (bytes >= 0x80 xor in 0xFFFFFF80 | b);
  - character n-grams of "<" + word + ">", n = minn..maxn counted in UTF-8
    characters, except the lone "<" and ">"; row = nwords + hash % bucket;
  - word n-grams: h = h * 116049371 + hash(next word) in 64 bits, where each
    32-bit word hash is first sign-extended (it passes through an int32);
    row = nwords + h % bucket;
  - in a pruned (.ftz with cutoff) model, bucket ids map through pruneidx and
    unmapped ones are dropped.
Hashes are computed for many strings at once with NumPy. This file is not
prediction (langid.py) or the file format (fasttext/format.py).
"""
import re

import numpy as np

EOS = b"</s>"
LABEL_PREFIX = b"__label__"
_SEPARATORS = re.compile(rb"[ \n\r\t\v\f\0]+")  # Dictionary::readWord's delimiters
_FNV_OFFSET = np.uint32(2166136261)
_FNV_PRIME = np.uint32(16777619)
_WORD_NGRAM_MUL = np.uint64(116049371)
_LONG = 64  # strings longer than this are hashed one by one instead of in the padded matrix


def fnv1a(strings):
    """fastText's 32-bit FNV-1a of each bytes string (signed-char quirk), as uint32 (k,)."""
    lengths = np.array([len(s) for s in strings], dtype=np.int64)            # (k,)
    h = np.full(len(strings), _FNV_OFFSET, dtype=np.uint32)                  # (k,)
    short = np.flatnonzero(lengths <= _LONG)
    if len(short):
        width = int(lengths[short].max(initial=0))
        padded = np.zeros((len(short), width), dtype=np.uint8)               # (k_s, L)
        flat = np.frombuffer(b"".join(strings[i] for i in short), dtype=np.uint8)
        mask = np.arange(width)[None, :] < lengths[short][:, None]           # (k_s, L)
        padded[mask] = flat                                                  # row-major: string after string
        signed = padded.astype(np.int8).astype(np.int32).view(np.uint32)     # sign extension
        hs = h[short]
        with np.errstate(over="ignore"):
            for col in range(width):
                hs = np.where(mask[:, col], (hs ^ signed[:, col]) * _FNV_PRIME, hs)
        h[short] = hs
    for i in np.flatnonzero(lengths > _LONG):
        h[i] = _fnv1a_one(strings[i])
    return h


def _fnv1a_one(s):
    h = 2166136261
    for b in s:
        h = ((h ^ (b if b < 128 else b | 0xFFFFFF00)) * 16777619) & 0xFFFFFFFF
    return h


def tokens(line):
    """A line's tokens as fastText reads them (bytes), ending with "</s>"."""
    return [t for t in _SEPARATORS.split(line) if t] + [EOS]


class Features:
    """Maps token lists to input-matrix rows for one model's dictionary and args."""

    def __init__(self, words, types, args, pruneidx=None, pruneidx_size=-1):
        self.words, self.types, self.args = words, types, args
        self.nwords = int((types == 0).sum())
        self.word_id = {w: i for i, w in enumerate(words)}
        if pruneidx_size > 0:
            keys = np.array(sorted(pruneidx), dtype=np.int64)
            self._prune_keys, self._prune_rows = keys, np.array([pruneidx[k] for k in keys.tolist()])
        self.pruneidx_size = pruneidx_size
        self._subwords = {}  # token -> its rows (in-vocabulary words and unknown ones alike)

    def line(self, toks):
        """(rows int32 array in fastText's order, label ids) for a token list from tokens()."""
        ids = [self.word_id.get(t, -1) for t in toks]
        missing = [t for t in dict.fromkeys(toks) if t not in self._subwords]
        if missing:
            self._cache_subwords(missing)
        rows, word_tokens, labels = [], [], []
        for tok, wid in zip(toks, ids):
            label = self.types[wid] == 1 if wid >= 0 else tok.startswith(LABEL_PREFIX)
            if label:
                if wid >= 0:
                    labels.append(wid - self.nwords)
            else:
                rows.append(self._subwords[tok])
                word_tokens.append(tok)
            if tok == EOS:
                break
        if self.args["wordNgrams"] > 1:
            rows.append(self.word_ngrams(fnv1a(word_tokens)))
        rows = np.concatenate(rows).astype(np.int32) if rows else np.empty(0, dtype=np.int32)
        return rows, labels

    def word_ngrams(self, hashes):
        """Rows of the word n-grams over word hashes (uint32), in addWordNgrams' order."""
        n, W = self.args["wordNgrams"], len(hashes)
        if self.args["bucket"] <= 0:
            return np.empty(0, dtype=np.int64)
        h = hashes.view(np.int32).astype(np.int64).view(np.uint64)           # (W,) sign-extended
        grid = np.zeros((W, n - 1), dtype=np.uint64)                         # (W, n-1): i, j - i - 1
        valid = np.zeros((W, n - 1), dtype=bool)
        acc = h.copy()
        with np.errstate(over="ignore"):
            for k in range(1, n):
                if W - k <= 0:
                    break
                acc = acc[:W - k] * _WORD_NGRAM_MUL + h[k:]
                grid[:W - k, k - 1], valid[:W - k, k - 1] = acc, True
        return self._bucket_rows(grid[valid] % np.uint64(self.args["bucket"]))

    def _cache_subwords(self, toks):
        """Rows that each token adds (addSubwords): its own row if known, then its n-grams."""
        if len(self._subwords) > 1_000_000:
            self._subwords.clear()  # bounded: a long stream of unknown words must not grow it forever
        grams = self.args["maxn"] > 0 and self.args["bucket"] > 0
        with_grams = [t for t in toks if grams and t != EOS]   # "</s>" never gets n-grams
        ngram_rows = dict(zip(with_grams, self.char_ngrams(with_grams))) if with_grams else {}
        for tok in toks:
            wid = self.word_id.get(tok, -1)
            own = np.array([wid] if wid >= 0 else [], dtype=np.int64)
            self._subwords[tok] = np.concatenate([own, ngram_rows.get(tok, own[:0])])

    def char_ngrams(self, toks):
        """Rows of each token's character n-grams, in computeSubwords' order (list of arrays)."""
        minn, maxn = self.args["minn"], self.args["maxn"]
        wrapped = [b"<" + t + b">" for t in toks]
        data = np.frombuffer(b"".join(wrapped), dtype=np.uint8)
        lengths = np.array([len(w) for w in wrapped])
        word_start = np.cumsum(lengths) - lengths                              # (k,)
        char_start = np.flatnonzero((data & 0xC0) != 0x80)                     # UTF-8 lead bytes
        word_of_char = np.searchsorted(word_start, char_start, side="right") - 1
        chars = np.bincount(word_of_char, minlength=len(toks))                 # (k,) characters per word
        first_char = np.cumsum(chars) - chars
        pos = np.arange(len(char_start)) - first_char[word_of_char]            # char index in its word
        bounds = np.append(char_start, len(data))            # char c is data[bounds[c]:bounds[c+1]]
        starts, ends, owner, order = [], [], [], []
        for n in range(max(minn, 1), maxn + 1):
            ok = pos + n <= chars[word_of_char]                                # the n-gram fits
            if n == 1:
                ok &= (pos != 0) & (pos + 1 != chars[word_of_char])            # not "<" or ">" alone
            c = np.flatnonzero(ok)
            starts.append(char_start[c])
            ends.append(bounds[c + n])  # words sit back to back, so this is the word's end when it fits
            owner.append(word_of_char[c])
            order.append(c * (maxn + 1) + n)                                   # i outer, n inner
        if not starts:  # minn > maxn: no n-gram length at all
            return [np.empty(0, dtype=np.int64) for _ in toks]
        starts, ends = np.concatenate(starts), np.concatenate(ends)
        owner, order = np.concatenate(owner), np.concatenate(order)
        sort = np.argsort(order, kind="stable")
        starts, ends, owner = starts[sort], ends[sort], owner[sort]
        blob = data.tobytes()
        hashes = fnv1a([blob[s:e] for s, e in zip(starts.tolist(), ends.tolist())])
        buckets = hashes % np.uint32(self.args["bucket"])
        rows, keep = self._bucket_rows(buckets.astype(np.uint64), mask=True)
        owner = owner[keep]
        split = np.searchsorted(owner, np.arange(1, len(toks)))
        return np.split(rows, split)

    def _bucket_rows(self, buckets, mask=False):
        """Bucket ids -> input rows (pushHash); with mask=True also which ids survived pruning."""
        buckets = buckets.astype(np.int64)
        if self.pruneidx_size < 0:
            keep = np.ones(len(buckets), dtype=bool)
            rows = self.nwords + buckets
        elif self.pruneidx_size == 0:
            keep = np.zeros(len(buckets), dtype=bool)
            rows = buckets[:0]
        else:
            at = np.clip(np.searchsorted(self._prune_keys, buckets), 0, len(self._prune_keys) - 1)
            keep = self._prune_keys[at] == buckets
            rows = self.nwords + self._prune_rows[at[keep]]
        return (rows, keep) if mask else rows
