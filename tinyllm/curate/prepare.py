"""`python -m tinyllm prepare`: a folder of raw text in, clean deduplicated token shards out.

    python -m tinyllm prepare --input data/ more.jsonl.gz --out prepared/ [--languages en ...]
    mpirun -np 4 python -m tinyllm prepare ...   # the same shards; files split across ranks

The pipeline, over the documents of sources.py:
  1. filter    (parallel) normalize and apply the quality heuristics (clean.py)
               and the language filter (langid.py); for each survivor, a hash of
               its text and its MinHash signature and LSH band keys. Survivors'
               texts go to a spool file in OUT/.prepare-work/ (spool.py),
               signatures beside it.
  2. plan      exact duplicates (the same hash) and near-duplicates (LSH + a
               check of the estimated Jaccard, or of the exact one, read from the
               spool, when the estimate is near the threshold: dedup.py) are dropped, keeping the
               first document of each cluster; each kept document goes to val when
               a number drawn from its hash is below --val-fraction, else to train.
  3. tokenize  (parallel) the kept documents into train/val shards (shards.py),
               each document followed by the tokenizer's end-of-text token.
Then OUT/report.json (printed too), OUT/tokenizer.json (to rebuild the
tokenizer: shards.prepared_tokenizer) and OUT/manifest.json, written last.

Memory stays flat in the corpus size except for the plan step, which holds
about 100 bytes per surviving document (hashes and LSH keys; signatures are
memory-mapped), and the texts of at most 32K documents at a time while it
settles the near-duplicate pairs the estimate leaves unsure. The output does not depend
on --workers, nor on the number of MPI ranks (ranks.py says how they split the work).

Interruption: every stage writes temp files and renames them when complete;
OUT/.prepare-work/state.json records the finished stages and shards. A re-run
with the same inputs and options resumes at the last finished shard; one
with other inputs or options rebuilds; one on a finished OUT does nothing.
OUT belongs to prepare: its manifest.json, report.json, tokenizer.json,
train_*.bin and val_*.bin are replaced. The command line is
tinyllm/cli/prepare.py. Read steps.py next for the per-document work.
"""
import collections
import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

from tinyllm.atomic import atomic_write, commit
from tinyllm.tokenizer import ByteTokenizer
from tinyllm.curate.clean import CleanConfig
from tinyllm.errors import DataError
from tinyllm.folder_lock import lock_folder
from tinyllm.curate.dedup import duplicates_to_drop, near_duplicate_clusters
from tinyllm.curate import spool
from tinyllm.curate.minhash import exact_jaccard
from tinyllm.curate.ranks import (Ranks, RankWork, RemoteRows, RowServer, pulled_tokens,
                                  split_files, tokenize_local)
from tinyllm.curate.report import Report
from tinyllm.curate.state import (WORK, config_dict, finished, load_state, remove_stale_shards,
                                        reset, run_key, save_state, write_json)
from tinyllm.curate.steps import Workers, filter_chunk, step_settings, tokenize_chunk
from tinyllm.progress import Progress
from tinyllm.data.shards import FORMAT, MANIFEST, SPLITS, TOKENIZER, VERSION, ShardWriter
from tinyllm.curate.sources import SourceStats, list_inputs, read_documents
from tinyllm.curate.spool import kept_chunks

_CHUNK_BYTES, _CHUNK_DOCS = 1 << 20, 256   # a worker task: about 1 MB of text
_LOOSEN = ("loosen the filters (e.g. --no-quality, --min-words 10, --dedup-threshold 0) "
           "or check --input")


def _option(default, help, **kw):
    """A PrepareConfig field whose help text becomes the --flag's help."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass
class PrepareConfig:
    languages: list = _option(None, "keep documents whose top language label is one of these "
                                    "(e.g. en de; fastText labels, with or without __label__)")
    langid_model: str = _option(None, "fastText .bin/.ftz language-id model for --languages")
    lang_threshold: float = _option(0.5, "minimum probability of the top language label")
    skip_langid: bool = _option(False, "with --languages but no model: skip the language filter")
    dedup_threshold: float = _option(0.8, "Jaccard similarity at which documents are near-"
                                          "duplicates; 0 turns near-dedup off")
    num_perm: int = _option(128, "MinHash signature length")
    ngram: int = _option(5, "words per MinHash shingle")
    seed: int = _option(0, "seed of the MinHash functions")
    val_fraction: float = _option(0.05, "share of documents held out for validation")
    shard_tokens: int = _option(100_000_000, "tokens per shard (the last one of a split is shorter)")
    workers: int = _option(os.cpu_count() or 1, "worker processes (the output does not depend on it)")
    quality: bool = _option(True, "apply the quality heuristics (--no-quality: only normalize)")
    clean: CleanConfig = dataclasses.field(default_factory=CleanConfig)

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"--val-fraction {self.val_fraction}: it must be strictly between 0 and 1")
        if not 0.0 <= self.lang_threshold <= 1.0:   # `not` also refuses nan
            raise DataError(f"--lang-threshold {self.lang_threshold}: a probability in [0, 1]")
        if not 0.0 <= self.dedup_threshold < 1.0:
            raise DataError(f"--dedup-threshold {self.dedup_threshold}: use 0 (off) or a Jaccard "
                            "similarity in (0, 1), e.g. 0.8")
        for name in ("num_perm", "ngram", "shard_tokens", "workers"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} {getattr(self, name)}: "
                                "it must be at least 1")


def prepare(inputs, out, tokenizer=None, config=None, progress=True, comm=None):
    """Run (or resume) the pipeline; returns the report as a dict (also in OUT/report.json).

    comm: an mpi4py communicator when started by mpirun (every rank calls this with the
    same arguments; rank 0 writes OUT: ranks.py), None for one process.
    """
    config = config or PrepareConfig()
    tokenizer = tokenizer or ByteTokenizer()
    out, ranks = pathlib.Path(out).expanduser(), Ranks(comm)
    progress = progress and ranks.main
    if ranks.main:
        lock_folder(out, "prepare")   # makes it; one run per folder
    stats = SourceStats()
    files = list_inputs(inputs, stats if ranks.main else SourceStats())   # rank 0 counts skips
    settings, notes = step_settings(config, tokenizer)
    key = run_key(files, config, tokenizer)
    ranks.same(key, "run key (input files, options and tokenizer)")
    if ranks.bcast(ranks.main and finished(out, key)):
        _say(progress, f"{out}: already prepared from these inputs and options; nothing to do")
        return ranks.bcast(json.loads((out / "report.json").read_text()) if ranks.main else None)
    work, state = _start(out, ranks, key, progress)
    started = time.monotonic()
    with Workers(config.workers, settings) as workers:
        if state["stage"] == "start":
            state["report"] = _filter(split_files(files, ranks), stats, workers, work, settings,
                                      progress).as_dict()
            state["report"]["notes"] = notes
            state["stage"] = "filtered"
            save_state(work, state)
        counts = ranks.bcast(ranks.gather(int((work / "hashes").stat().st_size // 8)))
        server = RowServer(ranks, counts, RankWork(work, settings, ranks.rank))
        reports = ranks.gather(state["report"])
        if not ranks.main:
            _other_rank(server, work, state, workers)
            report = ranks.bcast(None)               # rank 0 has written the manifest
            shutil.rmtree(work, ignore_errors=True)
            return report
        report = Report(state["report"]) if state["stage"] == "planned" else Report.merged(reports)
        if state["stage"] == "filtered":
            _plan(server, work, report, config, settings)
            state = dict(state, stage="planned", report=report.as_dict())
            save_state(work, state)
        server.stop()
        plan = ranks.bcast(np.load(work / "plan.npy"))
        shards = _tokenize(out, work, report, state, tokenizer, config, workers, progress, plan,
                           server)
    report.seconds["total (this run)"] = round(time.monotonic() - started, 3)
    _finish(out, work, key, report, shards, tokenizer, config, inputs, len(files))
    return ranks.bcast(report.as_dict())


def _start(out, ranks, key, progress):
    """This rank's work folder and saved state: resumed when its key matches, else reset
    (rank 0 first: its reset clears the whole work folder, then the others start)."""
    work = out / WORK if ranks.main else out / WORK / f"rank-{ranks.rank}"
    key = key if ranks.size == 1 else f"{key}-{ranks.rank}of{ranks.size}"
    state = load_state(work) if ranks.main else None
    if ranks.main and state.get("key") != key:
        reset(out, work)
    ranks.bcast(None)
    if not ranks.main:
        state = load_state(work)
        if state.get("key") != key:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
    if state.get("key") == key:
        _say(progress, f"{out}: resuming an interrupted run after its '{state['stage']}' stage")
        return work, state
    return work, {"key": key, "stage": "start", "shards": {}}


def _other_rank(server, work, state, workers):
    """Ranks 1..N-1 after filtering: answer the plan's requests, tokenize, answer token requests."""
    server.serve()
    plan = server.ranks.bcast(None)
    if not plan.any():
        raise DataError(f"every document was dropped (rank 0 prints the report): {_LOOSEN}")
    if state["stage"] != "tokenized":
        tokenize_local(work, plan, int(server.offsets[server.ranks.rank]), workers,
                       _CHUNK_BYTES, _CHUNK_DOCS)
        save_state(work, dict(state, stage="tokenized"))
    server.serve()


def _filter(files, stats, workers, work, settings, progress):
    """Stage 1: read, clean and filter; spool the survivors with their hashes and signatures."""
    t0, report, bar = time.monotonic(), Report(), Progress("filter", progress)
    sizes = collections.deque()  # per chunk in flight: the stored sizes of its documents

    def chunks():
        texts, nbytes = [], []
        for doc in read_documents(files, stats):
            if doc.problem:
                report.read(doc.nbytes)
                report.drop(doc.problem, doc.nbytes)
                continue
            texts.append(doc.text)
            nbytes.append(doc.nbytes)
            if sum(nbytes) >= _CHUNK_BYTES or len(texts) >= _CHUNK_DOCS:
                sizes.append(nbytes)
                yield texts
                texts, nbytes = [], []
        if texts:
            sizes.append(nbytes)
            yield texts

    names = ("spool", "hashes", "nbytes", "sigs", "keys")
    outputs = {name: open(work / f"{name}.tmp", "wb") for name in names}
    try:
        for reasons, kept, hashes, sigs, keys in workers.map(filter_chunk, chunks()):
            kept_sizes = []
            for reason, nbytes in zip(reasons, sizes.popleft()):
                report.read(nbytes)
                if reason:
                    report.drop(reason, nbytes)
                else:
                    report.keep(nbytes)
                    kept_sizes.append(nbytes)
            for text in kept:
                spool.append(outputs["spool"], text)
            for name, array in (("hashes", hashes), ("nbytes", np.array(kept_sizes, dtype=np.uint64)),
                                ("sigs", sigs), ("keys", keys)):
                outputs[name].write(np.ascontiguousarray(array).tobytes())
            bar.update(f"{report.documents['read']:,} docs, {report.documents['kept']:,} kept",
                       stats.bytes_done / max(stats.total_bytes, 1))
    except BaseException:
        for name, f in outputs.items():  # a re-run starts this stage over: no half-written files
            f.close()
            (work / f"{name}.tmp").unlink()
        raise
    for f in outputs.values():
        f.close()
    for name in outputs:
        commit(work / f"{name}.tmp", work / name)
    report.files = {"read": stats.files_read, "problems": stats.file_problems,
                    "examples": stats.examples}
    report.seconds["filter"] = round(time.monotonic() - t0, 3)
    bar.done(f"{report.documents['read']:,} docs read, {report.documents['kept']:,} kept")
    return report


def _plan(server, work, report, config, settings):
    """Stage 2: drop exact and near-duplicates, split train/val; saves plan.npy.

    Every rank's hashes, sizes and band keys come through the server (ranks.py),
    then the signatures and texts of just the pairs that need them."""
    t0 = time.monotonic()
    hashes, nbytes, keys = (np.concatenate(parts) for parts in zip(*server.ask("arrays")))
    N = len(hashes)                                                          # hashes, nbytes (N,)
    keep = np.zeros(N, dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True                     # first of each text
    _count_drop(report, "exact_duplicate", nbytes[~keep])
    if settings.bands and N > 1:
        sigs = RemoteRows(server, "sigs", settings.num_perm, np.uint32)      # (N, P) on the ranks
        def exact(i, j):  # the pairs the estimate leaves unsure: their spooled texts decide
            wanted = np.union1d(i, j)
            texts = [t for part in server.rows("texts", wanted) for t in part]
            return exact_jaccard(dict(zip(wanted.tolist(), texts)), i, j, settings.ngram)
        clusters = near_duplicate_clusters(sigs, keys, config.dedup_threshold, active=keep,
                                           exact=exact)                      # keys (N, bands)
        near = np.array(duplicates_to_drop(clusters), dtype=np.int64)
        keep[near] = False
        _count_drop(report, "near_duplicate", nbytes[near])
    score = (hashes >> np.uint64(11)).astype(np.float64) / 2.0**53           # stable, in [0, 1)
    val = keep & (score < config.val_fraction)
    if keep.sum() >= 2 and not val.any():                                    # both splits non-empty
        val[np.flatnonzero(keep)[np.argmin(score[keep])]] = True
    if keep.sum() >= 2 and not (keep & ~val).any():
        val[np.flatnonzero(keep)[np.argmax(score[keep])]] = False
    plan = np.where(keep, np.where(val, 2, 1), 0).astype(np.uint8)            # 0 drop, 1 train, 2 val
    with atomic_write(work / "plan.npy") as f:
        np.save(f, plan)
    report.split_documents = {"train": int((plan == 1).sum()), "val": int((plan == 2).sum())}
    report.seconds["dedup"] = round(time.monotonic() - t0, 3)


def _count_drop(report, reason, sizes):
    if len(sizes):
        report.drop(reason, int(sizes.sum()), count=len(sizes))
        report.undo_keep(len(sizes), int(sizes.sum()))


def _tokenize(out, work, report, state, tokenizer, config, workers, progress, plan, server):
    """Stage 3: tokenize the kept documents into shards, resuming after the last finished shard:
    rank 0's own documents here, then each other rank's, pulled from it in order."""
    t0, bar = time.monotonic(), Progress("tokenize", progress)
    if not plan.any():
        write_json(out / "report.json", report.as_dict())
        raise DataError(f"every document was dropped:\n{report.format()}\n{_LOOSEN}")

    def save(split, shard_state):
        state["shards"][split] = shard_state
        save_state(work, state)

    writers = {split: ShardWriter(out, split, config.shard_tokens, tokenizer.vocab_size,
                                  lambda s, split=split: save(split, s), state["shards"].get(split))
               for split in SPLITS}
    remove_stale_shards(out, {s: {x["file"] for x in w.shards} for s, w in writers.items()})
    start = min(w.next_doc for w in writers.values())
    order = collections.deque()  # (document index, plan value) of each document sent, in order
    wanted = lambda i: plan[i] and i >= writers[SPLITS[plan[i] - 1]].next_doc
    chunks = kept_chunks(work / "spool", plan, 0, start, wanted, order, _CHUNK_BYTES, _CHUNK_DOCS)
    own = ((order.popleft()[0], tokens) for token_lists in workers.map(tokenize_chunk, chunks)
           for tokens in token_lists)
    pulled = (doc for rank in range(1, server.ranks.size) for doc in pulled_tokens(server, rank, start))
    written = 0
    try:
        for index, tokens in itertools.chain(own, pulled):
            writers[SPLITS[plan[index] - 1]].write(index, tokens)
            written += len(tokens)
            bar.update(f"{written:,} tokens", index / len(plan))
        server.stop()
        shards = {split: w.close() for split, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    report.tokens = {s: sum(x["tokens"] for x in shards[s]) for s in SPLITS}
    report.shards = {s: len(shards[s]) for s in SPLITS}
    report.seconds["tokenize"] = round(time.monotonic() - t0, 3)
    bar.done(f"{report.tokens['train']:,} train + {report.tokens['val']:,} val tokens")
    return shards


def _finish(out, work, key, report, shards, tokenizer, config, inputs, n_files):
    """report.json and tokenizer.json, then manifest.json (the commit point), then clean up."""
    write_json(out / "report.json", report.as_dict())
    write_json(out / TOKENIZER, tokenizer.to_dict())
    manifest = {"format": FORMAT, "version": VERSION, "run_key": key,
                "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint(),
                              "vocab_size": tokenizer.vocab_size,
                              "eot_token": getattr(tokenizer, "eot_token", None)},
                "shards": shards, "tokens": report.tokens, "documents": report.split_documents,
                "inputs": [str(p) for p in _as_list(inputs)],
                "files": n_files, "config": config_dict(config)}
    write_json(out / MANIFEST, manifest)
    shutil.rmtree(work, ignore_errors=True)


def _as_list(inputs):
    return [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)


def _say(enabled, text):
    if enabled:
        print(text, file=sys.stderr, flush=True)


def inputs_fingerprint(inputs):
    """A short hash of the input files' paths, sizes and times: the BPE cache key of a prepare run."""
    h = hashlib.sha1()
    for path in list_inputs(inputs, SourceStats()):
        try:
            st = path.stat()
            h.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:          # unreadable: read_documents counts it; the key still names it
            h.update(f"{path}:unreadable\n".encode())
    return h.hexdigest()[:16]


def input_texts(inputs):
    """The raw text of every input document, for training a tokenizer on them."""
    return (doc.text for doc in read_documents(list_inputs(inputs, SourceStats()), SourceStats())
            if doc.text)
