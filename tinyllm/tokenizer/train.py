"""Training byte-level BPE: count pre-token chunks, then learn merges incrementally.

`count_chunks` streams the training text (strings, or files read in blocks,
so a 100 MB corpus never sits in memory as one string) through the regex
and counts each unique chunk. `learn_merges` then runs the merge loop on the
unique chunks ("words"), never rescanning the corpus:
  - pair counts: how often each adjacent token pair occurs, weighted by word count;
  - a pair -> words index: a merge visits only the words that hold its pair,
    and moves only the counts of that pair's neighbours;
  - a max-heap of pairs with lazy deletion: counts only fall, except for pairs
    holding the newest token, which are pushed after their merge; a popped
    entry whose count has gone stale is pushed back with the true count.
Tie-breaking (deterministic, the same in Python and C): the highest count
wins, then the smallest (left id, right id). Merge k creates token 256 + k.

`PythonMerger` is the readable reference; csrc/bpe.c runs the same loop
(`CMerger`) when built, and tests/test_c_bpe.py holds the two equal.
This is not the Tokenizer class (bpe.py, whose `train` calls this).
Read csrc/bpe.c next, then format.py.
"""
import collections
import heapq
import os

import numpy as np

from tinyllm.progress import Progress
from tinyllm.tokenizer.encode import TokenizerError, resolve_c

BLOCK_CHARS = 1 << 20      # a file is read and split this many characters at a time
CARRY_CHUNKS = 4           # chunks at a block's end are re-split with the next block


def count_chunks(text_or_files, pat, progress=True):
    """Counter {chunk str: count} over every document (pat: a split.Splitter, or
    anything with findall); documents never share a chunk."""
    counts = collections.Counter()
    report = Progress("counting chunks", progress)
    n_docs = n_chars = 0
    for doc in _documents(text_or_files):
        blocks = _file_chunks(doc, pat) if isinstance(doc, os.PathLike) else [(pat.findall(doc), len(doc))]
        for chunks, chars in blocks:
            counts.update(chunks)
            n_chars += chars
            report.update(f"{n_docs} docs, {n_chars / 1e6:.1f}M chars, {len(counts):,} unique chunks")
        n_docs += 1
    report.done(f"{n_docs} docs, {n_chars / 1e6:.1f}M chars, {len(counts):,} unique chunks")
    return counts


def _documents(text_or_files):
    """Yield str documents and os.PathLike files from train()'s first argument."""
    if isinstance(text_or_files, (str, os.PathLike)):
        yield text_or_files
        return
    if isinstance(text_or_files, (bytes, bytearray)):
        raise TokenizerError("train() takes text (str), not bytes: decode it first, "
                             "e.g. data.decode('utf-8')")
    for i, doc in enumerate(text_or_files):
        # a list of path strings is the likely mistake: it shows at the first item
        if i == 0 and isinstance(doc, str) and "\n" not in doc and len(doc) < 4096 and \
                os.path.isfile(doc):
            raise TokenizerError(
                f"train() item {i} is the str {doc!r}, which names a file: str items are "
                "training text. Pass pathlib.Path objects to train on files "
                "(e.g. [pathlib.Path(p) for p in paths])")
        if not isinstance(doc, (str, os.PathLike)):
            raise TokenizerError(f"train() item {i} is a {type(doc).__name__}; items must be "
                                 "str (text) or pathlib.Path (a UTF-8 text file)")
        yield doc


def _file_chunks(path, pat):
    """Yield (chunks, characters read) for a file, reading it in blocks of BLOCK_CHARS.

    The last CARRY_CHUNKS chunks of a block are split again with the next block,
    so no chunk depends on where a block was cut (this needs the pattern's chunks
    to cover the text, as gpt2's and gpt4's do; for a pattern that skips text the
    rest of the file is read at once).
    """
    carry = ""
    try:
        with open(path, encoding="utf-8", newline="") as f:   # newline="": the file's exact text
            while True:
                block = f.read(BLOCK_CHARS)
                text = carry + block
                chunks = pat.findall(text)
                if len(block) < BLOCK_CHARS:                    # end of file: all chunks final
                    yield chunks, len(block)
                    return
                if len(chunks) <= CARRY_CHUNKS:                 # e.g. one long run of spaces
                    carry = text
                elif sum(map(len, chunks)) != len(text):        # the pattern skips text
                    text += f.read()
                    yield pat.findall(text), len(text) - len(carry)
                    return
                else:
                    carry = text[len(text) - sum(map(len, chunks[-CARRY_CHUNKS:])):]
                    yield chunks[:-CARRY_CHUNKS], len(block)
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not valid UTF-8 ({e.reason}); convert it, e.g. "
                             "`iconv -f latin1 -t utf-8`, or leave the file out") from None
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read it ({e.strerror}); check the path") from None


def learn_merges(counts, n_merges, progress=True, use_c=None):
    """Up to n_merges merges [(left id, right id), ...] from {chunk str: count}.

    Fewer come back when every chunk is a single token already.
    """
    pieces, weights = [], []
    for chunk, count in counts.items():
        try:
            piece = chunk.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"the training text holds a lone surrogate {chunk[e.start]!r} "
                                 f"(in the chunk {chunk!r}), which has no UTF-8 bytes; read "
                                 "files as strict UTF-8 or remove it") from None
        if len(piece) >= 2:      # a single byte holds no pair
            pieces.append(piece)
            weights.append(count)
    c = resolve_c(use_c)
    merger = CMerger(pieces, weights, c) if c is not None else PythonMerger(pieces, weights)
    report = Progress("learning merges", progress)
    merges, batch = [], max(1, n_merges // 100)
    while len(merges) < n_merges:
        got = merger.merge(min(batch, n_merges - len(merges)))
        merges += got
        report.update(f"{len(merges):,}/{n_merges:,} merges", len(merges) / max(n_merges, 1))
        if not got:
            break
    report.done(f"{len(merges):,}/{n_merges:,} merges")
    return merges


class PythonMerger:
    """The merge loop in plain Python: the reference for csrc/bpe.c (same state, same order)."""

    def __init__(self, pieces, counts):
        self.words = [list(p) for p in pieces]          # token ids; byte b is token b
        self.counts = list(counts)
        self.pairs = collections.defaultdict(int)       # (a, b) -> weighted count
        self.where = collections.defaultdict(set)       # (a, b) -> words that held it
        for w, word in enumerate(self.words):
            for pair in zip(word, word[1:]):
                self.pairs[pair] += self.counts[w]
                self.where[pair].add(w)
        self.heap = [(-n, a, b) for (a, b), n in self.pairs.items()]   # max count, then min (a, b)
        heapq.heapify(self.heap)
        self.next_id = 256

    def merge(self, n):
        """Make up to n merges; return them as [(a, b), ...]."""
        made = []
        while len(made) < n and self.heap:
            neg, a, b = heapq.heappop(self.heap)
            count = self.pairs.get((a, b), 0)
            if count != -neg:                  # stale: the count fell since it was pushed
                if count > 0:
                    heapq.heappush(self.heap, (-count, a, b))
                continue
            z, self.next_id = self.next_id, self.next_id + 1
            fresh = set()
            for w in self.where.pop((a, b)):
                self._merge_word(w, a, b, z, fresh)
            del self.pairs[(a, b)]             # every occurrence is merged
            for pair in fresh:
                if self.pairs[pair] > 0:
                    heapq.heappush(self.heap, (-self.pairs[pair], *pair))
            made.append((a, b))
        return made

    def _merge_word(self, w, a, b, z, fresh):
        """Replace (a, b) by z in word w, left to right; move the neighbours' pair counts."""
        word, n, out, i = self.words[w], self.counts[w], [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                if out:                                   # (prev, a) becomes (prev, z)
                    self.pairs[out[-1], a] -= n
                    self._add(out[-1], z, n, w, fresh)
                if i + 2 < len(word):                     # (b, next) becomes (z, next)
                    self.pairs[b, word[i + 2]] -= n
                    self._add(z, word[i + 2], n, w, fresh)
                out.append(z)
                i += 2
            else:
                out.append(word[i])
                i += 1
        self.words[w] = out

    def _add(self, a, b, n, w, fresh):
        self.pairs[a, b] += n
        self.where[a, b].add(w)
        fresh.add((a, b))


class CMerger:
    """The same loop in C (csrc/bpe.c: bpe_trainer_*), driven batch by batch for progress."""

    def __init__(self, pieces, counts, c):
        self.ffi, self.lib = c
        if len(pieces) >= 2**31:
            raise TokenizerError(f"{len(pieces):,} unique chunks: the C trainer takes < 2**31")
        blob = b"".join(pieces)
        ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))   # (n,)
        self._counts = np.asarray(counts, np.int64)     # (n,) read by C until free
        handle = self.lib.bpe_trainer_new(self.ffi.from_buffer("uint8_t[]", blob),
                                          self.ffi.cast("int64_t *", ends.ctypes.data),
                                          self.ffi.cast("int64_t *", self._counts.ctypes.data),
                                          len(pieces))
        if handle == self.ffi.NULL:
            raise MemoryError(f"bpe_trainer_new: out of memory for {len(blob):,} bytes of chunks")
        self._handle = self.ffi.gc(handle, self.lib.bpe_trainer_free)

    def merge(self, n):
        left, right = np.empty(n, np.int32), np.empty(n, np.int32)   # (n,) each
        made = self.lib.bpe_trainer_merge(self._handle, n, self.ffi.cast("int32_t *", left.ctypes.data),
                                          self.ffi.cast("int32_t *", right.ctypes.data))
        if made < 0:
            raise MemoryError("bpe_trainer_merge: out of memory")
        return list(zip(left[:made].tolist(), right[:made].tolist()))

