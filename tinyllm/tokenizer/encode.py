"""Rank-based BPE of pre-token chunks: the merge rule tiktoken uses, in Python and in C.

`merge_chunk(piece, ranks)` is the readable reference: a chunk that is itself
a token is that token; otherwise it starts as single bytes and the adjacent
pair whose joined bytes have the lowest rank is joined (the leftmost of
equal ones) until no adjacent pair is a token. `ChunkEncoder` encodes many
chunks in one call, in C (csrc/bpe.c, through the cffi library that `make lib`
builds) when it is there and in Python otherwise; tests/test_c_bpe.py holds
the two equal.

This is not the tokenizer: special tokens and the chunk cache live in
bpe.py (read that first), regex splitting in split.py. Read
train.py next.
TokenizerError, the error every tokenizer module raises, lives here because
every one of them imports this file.
"""
import heapq

import numpy as np

from tinyllm.errors import BackendUnavailable, TokenizerError  # noqa: F401 (TokenizerError re-exported)


def c_library():
    """(ffi, lib) of the C kernels when they were built with bpe.c, else None."""
    try:
        from tinyllm.backends.c_kernels import ffi, lib
    except (BackendUnavailable, ImportError):
        return None
    try:  # a library built before bpe.c existed lacks the symbols (AttributeError)
        for name in ("bpe_table_build", "bpe_encode_chunks", "bpe_trainer_new",
                     "bpe_trainer_merge", "bpe_trainer_free"):
            getattr(lib, name)
    except AttributeError:
        return None
    return ffi, lib


def resolve_c(use_c):
    """The C library for use_c=None (when built), True (required) or False (never)."""
    if use_c is False:
        return None
    found = c_library()
    if found is None and use_c:
        raise BackendUnavailable("the C BPE kernels (csrc/bpe.c) are not in the built library; "
                                 "run `make lib`, or pass use_c=None to fall back to Python")
    return found


def merge_chunk(piece, ranks, max_rank=None, max_len=None):
    """Token ids of one chunk (bytes) under `ranks` (bytes -> rank), as tiktoken encodes it.

    With max_rank only tokens ranked below it may form and the whole-chunk
    shortcut is off: the parts of a token under max_rank=its rank are the two
    tokens it was merged from (format.py writes them as its merge). max_len,
    the longest token's length when the caller knows it, skips lookups that
    cannot succeed.

    The parts are a linked list over the chunk and the candidate pairs a heap
    of (rank, start): popping the least is "the lowest rank, leftmost of equal
    ones", and entries made stale by a merge beside them are skipped. So a
    chunk of n bytes costs O(n log n) pair choices, not O(n^2) rescans.
    """
    if max_rank is None:
        whole = ranks.get(piece)
        if whole is not None:
            return [whole]
    n = len(piece)
    limit = max_rank if max_rank is not None else 2**31
    max_len = n if max_len is None else max_len
    end = list(range(1, n + 1))        # part starting at byte i covers piece[i:end[i]]
    nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
    heap = []

    def push(i):   # the pair (part at i, the part after it), if it is an allowed token
        j = nxt[i]
        if j < n and end[j] - i <= max_len:
            rank = ranks.get(piece[i:end[j]])
            if rank is not None and rank < limit:
                heapq.heappush(heap, (rank, i, end[j]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, i, stop = heapq.heappop(heap)
        j = nxt[i]
        if end[i] == 0 or j >= n or end[j] != stop:   # a merge beside it changed the pair
            continue
        end[i], end[j], nxt[i] = stop, 0, nxt[j]        # part j joins part i; end 0 marks it gone
        if nxt[i] < n:
            prv[nxt[i]] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    parts, i = [], 0
    while i < n:
        parts.append(ranks[piece[i:end[i]]])
        i = nxt[i]
    return parts


class ChunkEncoder:
    """Encodes lists of chunks (bytes) with one rank table, in C when available.

    The caller guarantees what the C side assumes: ranks are distinct ints in
    [0, 2**31) and all 256 single bytes are tokens (Tokenizer checks both).
    """

    def __init__(self, ranks, use_c=None):
        self.ranks = ranks
        self._max_len = max(map(len, ranks), default=1)
        self.c = resolve_c(use_c)
        if self.c is not None:
            self._build_table()

    def encode(self, pieces):
        """[tuple of ids] for each piece (bytes) of the list `pieces`."""
        if self.c is None or not pieces:
            return [tuple(merge_chunk(p, self.ranks, max_len=self._max_len)) for p in pieces]
        ffi, lib = self.c
        blob = b"".join(pieces)
        ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))  # (n,)
        ids = np.empty(max(len(blob), 1), np.int32)         # at most one id per byte
        id_ends = np.empty(len(pieces), np.int64)           # (n,)
        n = lib.bpe_encode_chunks(self._table, ffi.from_buffer("uint8_t[]", blob),
                                  _ptr(ffi, "int64_t *", ends), len(pieces),
                                  _ptr(ffi, "int32_t *", ids), _ptr(ffi, "int64_t *", id_ends))
        if n < 0:
            raise MemoryError(f"bpe_encode_chunks: out of memory on {len(blob)} bytes")
        ids, stops = ids[:n].tolist(), id_ends.tolist()
        return [tuple(ids[a:b]) for a, b in zip([0] + stops[:-1], stops)]

    def _build_table(self):
        ffi, lib = self.c
        tokens = list(self.ranks)
        n = len(tokens)
        self._bytes = np.frombuffer(b"".join(tokens), np.uint8)           # (total,)
        self._offsets = np.zeros(n + 1, np.int64)                          # (n + 1,)
        np.cumsum(np.fromiter(map(len, tokens), np.int64, n), out=self._offsets[1:])
        self._ranks = np.fromiter(self.ranks.values(), np.int32, n)       # (n,)
        self._slots = np.empty(1 << (2 * n).bit_length(), np.int32)        # > 2n: short probes
        t = ffi.new("bpe_table *")
        t.bytes = _ptr(ffi, "uint8_t *", self._bytes)
        t.offsets = _ptr(ffi, "int64_t *", self._offsets)
        t.ranks = _ptr(ffi, "int32_t *", self._ranks)
        t.slots = _ptr(ffi, "int32_t *", self._slots)
        t.n, t.n_slots = n, len(self._slots)
        lib.bpe_table_build(t)
        self._table = t   # the arrays above stay alive with self, so these pointers stay valid


def _ptr(ffi, ctype, arr):
    return ffi.cast(ctype, arr.ctypes.data)
