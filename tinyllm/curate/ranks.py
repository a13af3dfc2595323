"""`prepare` on N MPI ranks (`mpirun -np N python -m tinyllm prepare ...`), as if on one.

    ranks = Ranks(comm)          # an mpi4py communicator, or None: one rank, no MPI
    mine = split_files(files, ranks)

The split: rank r reads a contiguous run of the sorted input files, cut at
total bytes * r / N (a big .jsonl is cut there too, at line starts), so rank
0's documents, then rank 1's, ... are the documents of a 1-rank run in its order, and a document's global index is its rank's offset
plus its place there. Each rank filters its own files into its own work
folder (OUT/.prepare-work on rank 0, OUT/.prepare-work/rank-R on the others,
so OUT may be shared or not), then:
  plan      rank 0 plans for every document, as a 1-rank run does: it asks
            the ranks (RowServer: one broadcast request, one gather of the
            answers) for their exact hashes, sizes and LSH band keys, then
            for the signatures and texts of just the candidate pairs, so a
            duplicate pair across two ranks is found and verified like any
            other; the other ranks answer until rank 0 says stop
  tokenize  every rank tokenizes its kept documents (rank 0 straight into
            the shards, the others into a local token file), then rank 0
            pulls the others' tokens in order into the same ShardWriters
So the shards are a 1-rank run's, byte for byte. Each rank saves its own
stage in its work folder and a re-run with the same N resumes each where it
stopped; rank 0 owns OUT, its shards, report and manifest.

With comm=None every request is answered in-process: the 1-rank run is the
same code. Every rank must see the same input files and options (the run
key is checked first). An error on one rank leaves the others waiting for
it: the command (cli/prepare.py) prints it and aborts the job (MPI_Abort),
as a caller of prepare(comm=...) must. Messages are pickled, so one rank's
answer stays under MPI's 2 GB: about 16M documents per rank for the plan's
hashes and band keys. Not here: the stages themselves (prepare.py). Read
prepare.py next.
"""
import collections
import time

import numpy as np

from tinyllm.atomic import commit
from tinyllm.errors import DataError
from tinyllm.curate.sources import Piece
from tinyllm.curate.spool import kept_chunks, read_spool
from tinyllm.curate.steps import tokenize_chunk


class Ranks:
    """This process's rank and the collectives prepare uses (all of them rooted at rank 0).

    They are point-to-point messages that a waiting rank polls with growing sleeps
    (up to 10 ms) instead of MPI's blocking calls, which spin a core: a rank that
    waits for rank 0's plan, or serves its requests, leaves the CPU to the others.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.main = self.rank == 0

    def bcast(self, obj):
        """Rank 0's obj, on every rank."""
        if self.comm is None:
            return obj
        if self.main:
            requests = [self.comm.isend(obj, dest=r, tag=_BCAST) for r in range(1, self.size)]
            _poll(lambda: all([r.Test() for r in requests]))      # every one tested each time
            return obj
        return self._receive(0, _BCAST)

    def gather(self, obj):
        """[every rank's obj] on rank 0, None on the others."""
        if self.comm is None:
            return [obj]
        if not self.main:
            request = self.comm.isend(obj, dest=0, tag=_GATHER)
            _poll(request.Test)
            return None
        return [obj] + [self._receive(r, _GATHER) for r in range(1, self.size)]

    def _receive(self, source, tag):
        _poll(lambda: self.comm.Iprobe(source=source, tag=tag))
        return self.comm.recv(source=source, tag=tag)

    def same(self, value, what):
        """Check that every rank computed the same value (e.g. the run key), else stop on all."""
        values = self.bcast(self.gather(value))
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise DataError(f"rank {odd[0]} of {self.size} sees a different {what} than rank 0 "
                            f"({values[odd[0]]!r} vs {values[0]!r}): give every rank the same "
                            "inputs and options (a shared file system, or identical copies)")


_BCAST, _GATHER = 11, 12


def _poll(done):
    """Wait until done() is true, sleeping 0.1 ms, 0.2 ms, ... up to 10 ms between tries."""
    delay = 1e-4
    while not done():
        time.sleep(delay)
        delay = min(2 * delay, 1e-2)


def split_files(files, ranks):
    """Rank r's contiguous share of the sorted files, cut at total bytes * r / N: whole files
    (by where they start), except that an uncompressed .jsonl is cut at those points too, into
    sources.Piece byte ranges (each line goes to the rank where its first byte lies)."""
    sizes = [_size(f) for f in files]
    total = max(sum(sizes), 1)
    cut = [total * r // ranks.size for r in range(ranks.size + 1)]     # rank r: [cut[r], cut[r + 1])
    mine, start = [], 0
    lo, hi = cut[ranks.rank], cut[ranks.rank + 1]
    for f, size in zip(files, sizes):
        if f.suffix == ".jsonl" and size:                                # splittable: a byte range
            a, b = max(lo, start), min(hi, start + size)
            if a < b:
                mine.append(f if (a, b) == (start, start + size) else Piece(f, a - start, b - start))
        elif lo <= start < hi or (ranks.rank == ranks.size - 1 and start >= hi):
            mine.append(f)
        start += size
    return mine


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


class RowServer:
    """Rank 0 asks, every rank answers from what it holds: answers(name, arg) -> its answer.

    `ask` (rank 0) broadcasts a request and gathers each rank's answer;
    `serve` (the other ranks) answers requests until `stop`. counts[r] is
    rank r's number of documents, so rank r holds global rows
    [offsets[r], offsets[r + 1]).
    """

    def __init__(self, ranks, counts, answers):
        self.ranks, self.answers = ranks, answers
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)   # (N + 1,)
        self.n = int(self.offsets[-1])

    def ask(self, name, arg=None):
        """[rank r's answer to (name, arg) for each rank r]."""
        request = self.ranks.bcast((name, arg))
        return self.ranks.gather(self.answers(*request, self))

    def serve(self):
        while True:
            request = self.ranks.bcast(None)
            if request is None:
                return
            self.ranks.gather(self.answers(*request, self))

    def stop(self):
        if self.ranks.size > 1:
            self.ranks.bcast(None)

    def local(self, rows):
        """The rows (sorted global indices) this rank holds, as its local indices."""
        lo, hi = self.offsets[self.ranks.rank], self.offsets[self.ranks.rank + 1]
        rows = np.asarray(rows, dtype=np.int64)
        return rows[(rows >= lo) & (rows < hi)] - lo

    def rows(self, name, rows):
        """Concatenated answers to (name, sorted global rows): the rows in order."""
        return self.ask(name, np.asarray(rows, dtype=np.int64))


class RemoteRows:
    """A (N, width) array whose rows live on the ranks: rows[indices] fetches just those."""

    def __init__(self, server, name, width, dtype):
        self.server, self.name = server, name
        self.shape, self.dtype = (server.n, width), dtype

    def __getitem__(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        wanted, where = np.unique(indices, return_inverse=True)
        parts = [p for p in self.server.rows(self.name, wanted) if len(p)]
        rows = np.concatenate(parts) if parts else np.empty((0, self.shape[1]), self.dtype)
        return rows[where.reshape(indices.shape)]                  # (len(indices), width)


class RankWork:
    """The answers of one rank's work folder: answers(name, arg, server) for RowServer."""

    def __init__(self, work, settings, rank):
        self.work, self.settings, self.rank = work, settings, rank

    def __call__(self, name, arg, server):
        work = self.work
        if name == "arrays":      # every document's exact hash, stored size and band keys
            hashes = np.fromfile(work / "hashes", dtype=np.uint64)                  # (n,)
            keys = np.fromfile(work / "keys", dtype=np.uint64).reshape(len(hashes), self.settings.bands)
            return hashes, np.fromfile(work / "nbytes", dtype=np.uint64), keys
        if name == "tokens":
            return self.tokens(*arg) if arg[0] == self.rank else None
        local = server.local(arg)
        if name == "sigs":
            P = self.settings.num_perm
            if not len(local):
                return np.empty((0, P), np.uint32)
            n = server.offsets[self.rank + 1] - server.offsets[self.rank]
            return np.memmap(work / "sigs", dtype=np.uint32, mode="r", shape=(n, P))[local]
        if name == "texts":
            return [text for _, text in read_spool(work / "spool", 0, set(local.tolist()))]
        raise ValueError(f"unknown request {name!r}")

    def tokens(self, rank, start, limit):
        """(global indices, token counts, tokens) of up to `limit` tokenized documents from start."""
        docs = np.fromfile(self.work / "tokdocs", dtype=np.int64).reshape(-1, 2)  # (kept, 2)
        ends = np.cumsum(docs[:, 1])                                              # (kept,)
        first = int(np.searchsorted(docs[:, 0], start))
        last = min(first + limit, len(docs))
        lo, hi = (int(ends[first - 1]) if first else 0), (int(ends[last - 1]) if last else 0)
        tokens = np.fromfile(self.work / "tokens", dtype="<u4", count=hi - lo, offset=4 * lo)
        return docs[first:last, 0], docs[first:last, 1], tokens


def tokenize_local(work, plan, offset, workers, chunk_bytes, chunk_docs):
    """Tokenize this rank's kept documents into work/tokens (uint32) and work/tokdocs
    ((global index, token count) int64 pairs): what rank 0 pulls (pulled_tokens)."""
    order, docs = collections.deque(), []
    chunks = kept_chunks(work / "spool", plan, offset, offset, lambda i: plan[i] > 0, order,
                         chunk_bytes, chunk_docs)
    try:
        with open(work / "tokens.tmp", "wb") as f:
            for token_lists in workers.map(tokenize_chunk, chunks):
                for tokens in token_lists:
                    docs.append((order.popleft()[0], len(tokens)))
                    f.write(np.asarray(tokens, dtype="<u4").tobytes())
        np.array(docs, dtype=np.int64).reshape(-1, 2).tofile(work / "tokdocs.tmp")
    except BaseException:
        for name in ("tokens.tmp", "tokdocs.tmp"):
            (work / name).unlink(missing_ok=True)
        raise
    commit(work / "tokens.tmp", work / "tokens")
    commit(work / "tokdocs.tmp", work / "tokdocs")


def pulled_tokens(server, rank, start, limit=4096):
    """(global index, tokens) of rank `rank`'s tokenized documents from index start on."""
    while True:
        indices, counts, tokens = server.ask("tokens", (rank, start, limit))[rank]
        if not len(indices):
            return
        yield from zip(indices.tolist(), np.split(tokens, np.cumsum(counts)[:-1]))
        start = int(indices[-1]) + 1
