"""`python -m tinyllm prepare`: a folder of raw text in, clean deduplicated token shards out.

    python -m tinyllm prepare --input data/ more.jsonl.gz --out prepared/ [--languages en ...]

The pipeline, over the documents of sources.py:
  1. filter    (parallel) normalize and apply the quality heuristics (clean.py)
               and the language filter (langid.py); for each survivor, a hash of
               its text and its MinHash signature and LSH band keys. Survivors'
               texts go to a spool file in OUT/.prepare-work/, signatures beside it.
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
settles the near-duplicate pairs the estimate leaves unsure. The output does not depend on --workers.

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
from tinyllm.curate.minhash import exact_jaccard
from tinyllm.curate.report import Report
from tinyllm.curate.state import (WORK, config_dict, finished, load_state, remove_stale_shards,
                                        reset, run_key, save_state, write_json)
from tinyllm.curate.steps import Workers, filter_chunk, step_settings, tokenize_chunk
from tinyllm.progress import Progress
from tinyllm.data.shards import FORMAT, MANIFEST, SPLITS, TOKENIZER, VERSION, ShardWriter
from tinyllm.curate.sources import SourceStats, list_inputs, read_documents

_CHUNK_BYTES, _CHUNK_DOCS = 1 << 20, 256   # a worker task: about 1 MB of text
_SPOOL_LEN = np.dtype("<u4")               # spool record: uint32 byte length, then UTF-8 text


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


def prepare(inputs, out, tokenizer=None, config=None, progress=True):
    """Run (or resume) the pipeline; returns the report as a dict (also in OUT/report.json)."""
    config = config or PrepareConfig()
    tokenizer = tokenizer or ByteTokenizer()
    out = pathlib.Path(out).expanduser()
    lock_folder(out, "prepare")   # makes it; one run per folder
    stats = SourceStats()
    files = list_inputs(inputs, stats)
    settings, notes = step_settings(config, tokenizer)
    key = run_key(files, config, tokenizer)
    if finished(out, key):
        _say(progress, f"{out}: already prepared from these inputs and options; nothing to do")
        return json.loads((out / "report.json").read_text())
    work = out / WORK
    state = load_state(work)
    if state.get("key") != key:
        reset(out, work)
        state = {"key": key, "stage": "start", "shards": {}}
    else:
        _say(progress, f"{out}: resuming an interrupted run after its '{state['stage']}' stage")
    started = time.monotonic()
    with Workers(config.workers, settings) as workers:
        if state["stage"] == "start":
            state["report"] = _filter(files, stats, workers, work, settings, progress).as_dict()
            state["report"]["notes"] = notes
            save_state(work, dict(state, stage="filtered"))
        report = Report(state["report"])
        if state["stage"] in ("start", "filtered"):
            _plan(work, report, config, settings)
            state = dict(state, stage="planned", report=report.as_dict())
            save_state(work, state)
        shards = _tokenize(out, work, report, state, tokenizer, config, workers, progress)
    report.seconds["total (this run)"] = round(time.monotonic() - started, 3)
    _finish(out, work, key, report, shards, tokenizer, config, inputs, len(files))
    return report.as_dict()


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
                data = text.encode("utf-8", "surrogatepass")
                outputs["spool"].write(np.array(len(data), dtype=_SPOOL_LEN).tobytes() + data)
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


def _plan(work, report, config, settings):
    """Stage 2: drop exact and near-duplicates, split train/val; saves plan.npy."""
    t0 = time.monotonic()
    hashes = np.fromfile(work / "hashes", dtype=np.uint64)                    # (N,)
    nbytes = np.fromfile(work / "nbytes", dtype=np.uint64)                    # (N,)
    N = len(hashes)
    keep = np.zeros(N, dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True                     # first of each text
    _count_drop(report, "exact_duplicate", nbytes[~keep])
    if settings.bands and N > 1:
        sigs = np.memmap(work / "sigs", dtype=np.uint32, mode="r", shape=(N, settings.num_perm))
        keys = np.fromfile(work / "keys", dtype=np.uint64).reshape(N, settings.bands)
        def exact(i, j):  # the pairs the estimate leaves unsure: their spooled texts decide
            texts = dict(_read_spool(work / "spool", 0, set(np.union1d(i, j).tolist())))
            return exact_jaccard(texts, i, j, settings.ngram)
        clusters = near_duplicate_clusters(sigs, keys, config.dedup_threshold, active=keep,
                                           exact=exact)
        near = np.array(duplicates_to_drop(clusters), dtype=np.int64)
        keep[near] = False
        _count_drop(report, "near_duplicate", nbytes[near])
        del sigs
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


def _tokenize(out, work, report, state, tokenizer, config, workers, progress):
    """Stage 3: tokenize the kept documents into shards, resuming after the last finished shard."""
    t0, bar = time.monotonic(), Progress("tokenize", progress)
    plan = np.load(work / "plan.npy")
    if not plan.any():
        write_json(out / "report.json", report.as_dict())
        raise DataError(f"every document was dropped:\n{report.format()}\nloosen the filters "
                        "(e.g. --no-quality, --min-words 10, --dedup-threshold 0) or check --input")

    def save(split, shard_state):
        state["shards"][split] = shard_state
        save_state(work, state)

    writers = {split: ShardWriter(out, split, config.shard_tokens, tokenizer.vocab_size,
                                  lambda s, split=split: save(split, s), state["shards"].get(split))
               for split in SPLITS}
    remove_stale_shards(out, {s: {x["file"] for x in w.shards} for s, w in writers.items()})
    start = min(w.next_doc for w in writers.values())
    order = collections.deque()  # (document index, split) of each document sent, in order
    written = 0

    def chunks():
        texts, size = [], 0
        for index, text in _read_spool(work / "spool", start):
            split = SPLITS[plan[index] - 1] if plan[index] else None
            if split is None or index < writers[split].next_doc:
                continue
            texts.append(text)
            order.append((index, split))
            size += len(text)
            if size >= _CHUNK_BYTES or len(texts) >= _CHUNK_DOCS:
                yield texts
                texts, size = [], 0
        if texts:
            yield texts

    try:
        for token_lists in workers.map(tokenize_chunk, chunks()):
            for tokens in token_lists:
                index, split = order.popleft()
                writers[split].write(index, tokens)
                written += len(tokens)
            bar.update(f"{written:,} tokens", index / len(plan))
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


def _read_spool(path, start, wanted=None):
    """(index, text) of every spooled document from number `start` on (only those in the
    set `wanted`, when given; the others are skipped unread)."""
    last = max(wanted, default=-1) if wanted is not None else None
    with open(path, "rb") as f:
        index = 0
        while last is None or index <= last:
            head = f.read(_SPOOL_LEN.itemsize)
            if len(head) < _SPOOL_LEN.itemsize:
                return
            n = int(np.frombuffer(head, dtype=_SPOOL_LEN)[0])
            if index < start or (wanted is not None and index not in wanted):
                f.seek(n, os.SEEK_CUR)
            else:
                yield index, f.read(n).decode("utf-8", "surrogatepass")
            index += 1


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
