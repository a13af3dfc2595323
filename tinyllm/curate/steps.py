"""The per-document work of `prepare`, run on chunks of documents in worker processes.

Two steps run in parallel, each on a chunk (a list of texts) at a time:
  filter_chunk     normalize, quality heuristics, language filter, then for
                   the survivors: exact-dedup hash and MinHash signature +
                   LSH band keys (the cross-document dedup happens later, in
                   prepare.py, once every signature is known)
  tokenize_chunk   token ids of each kept document, plus end-of-text

`ordered_map` feeds chunks to a process pool with at most `window` chunks
in flight (Pool.imap would read the whole corpus ahead and hold it in
memory) and yields the results in input order, so the output does not
depend on the number of workers. With workers=1 everything runs inline.

A worker's settings (StepSettings, built from the PrepareConfig by
`step_settings`: the clean config, the language model, the MinHash
functions, the tokenizer) arrive once through `init_worker`, which keeps
them in the module-level `_loaded`: the one place a multiprocessing
initializer can leave state for the tasks that follow. Read sources.py next.
"""
import collections
import dataclasses
import multiprocessing
import signal

import numpy as np

from tinyllm.curate.clean import CleanConfig
from tinyllm.errors import DataError
from tinyllm.curate.dedup import exact_hash
from tinyllm.curate.minhash import MinHasher, band_keys, recall_bands
from tinyllm.curate.clean_c import char_classes, normalize_all, quality_reasons

_loaded = None  # this process's _Loaded, set by init_worker
GET_A_MODEL = ("get a fastText language-id model, e.g. lid.176.ftz (917 kB) from the fastText "
               "website's language identification page, and pass it with --langid-model PATH; "
               "or train one with tinyllm.data.langid.train_supervised; or pass --skip-langid "
               "to keep every language")


@dataclasses.dataclass
class StepSettings:
    clean: object                   # CleanConfig
    languages: tuple = ()           # labels to keep, e.g. ("__label__en",); () = no language filter
    langid_model: str = None        # path of a fastText model, loaded once per worker
    lang_threshold: float = 0.5
    langid_chars: int = 10_000      # language id reads this much of a document
    num_perm: int = 128
    ngram: int = 5
    seed: int = 0
    bands: int = 0                  # 0: no near-dedup, so no signatures
    rows: int = 0
    tokenizer: object = None


@dataclasses.dataclass
class _Loaded:
    settings: StepSettings
    model: object    # FastTextModel, or None without a language filter
    hasher: object   # MinHasher, or None without near-dedup


def step_settings(config, tokenizer):
    """StepSettings from a PrepareConfig, after checking the language model; and report notes."""
    notes, languages = [], ()
    if config.languages:
        if not config.langid_model and not config.skip_langid:
            raise DataError(f"--languages {' '.join(config.languages)} needs a language-id model: "
                            + GET_A_MODEL)
        if config.langid_model:
            from tinyllm.curate.langid import FastTextModel
            labels = set(FastTextModel.load(config.langid_model).labels)   # fail now, not in a worker
            languages = tuple(x if x.startswith("__label__") else f"__label__{x}"
                              for x in config.languages)
            unknown = sorted(set(languages) - labels)
            if unknown:
                raise DataError(f"--languages: {', '.join(unknown)} not among the model's "
                                f"{len(labels)} labels (e.g. {', '.join(sorted(labels)[:5])})")
        else:
            notes.append("language filter skipped (--skip-langid): no model given")
    bands, rows = (recall_bands(config.dedup_threshold, config.num_perm)
                   if config.dedup_threshold > 0 else (0, 0))
    clean = config.clean if config.quality else CleanConfig.off()
    return StepSettings(clean, languages, config.langid_model, config.lang_threshold,
                        num_perm=config.num_perm, ngram=config.ngram, seed=config.seed,
                        bands=bands, rows=rows, tokenizer=tokenizer), notes


def init_worker(settings, in_pool=False):
    """Load what every chunk needs, once per process."""
    global _loaded
    if in_pool:  # Ctrl-C reaches the whole process group: the main process alone handles it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tinyllm.curate.langid import FastTextModel  # only workers that filter languages pay for it
    model = FastTextModel.load(settings.langid_model) if settings.languages else None
    hasher = MinHasher(settings.num_perm, settings.ngram, settings.seed) if settings.bands else None
    _loaded = _Loaded(settings, model, hasher)


def filter_chunk(texts):
    """(reasons, kept texts, exact hashes (k,), signatures (k, P), band keys (k, bands)).

    reasons[i] is None for a kept document, else why it was dropped.
    """
    s, model, hasher = _loaded.settings, _loaded.model, _loaded.hasher
    texts = normalize_all(texts)                       # one C call for the chunk
    reasons = quality_reasons(texts, s.clean)          # one C call for the chunk
    if model is not None:                      # one batched call for the chunk's survivors
        todo = [i for i, reason in enumerate(reasons) if reason is None]
        ids, probs, counts = model.predict_arrays(
            [texts[i][:s.langid_chars].replace("\n", " ") for i in todo])
        for row, i in enumerate(todo):
            if (counts[row] == 0 or model.labels[ids[row, 0]] not in s.languages
                    or probs[row, 0] < s.lang_threshold):
                reasons[i] = "language"
    kept = [text for text, reason in zip(texts, reasons) if reason is None]
    hashes = np.array([exact_hash(t) for t in kept], dtype=np.uint64)
    if hasher is not None and kept:
        signatures, _ = hasher.signatures(kept)
        keys = band_keys(signatures, s.bands, s.rows)
    else:
        signatures = np.zeros((len(kept), s.num_perm if s.bands else 0), dtype=np.uint32)
        keys = np.zeros((len(kept), s.bands), dtype=np.uint64)
    return reasons, kept, hashes, signatures, keys


def tokenize_chunk(texts):
    """Token ids (uint32 arrays) of each text, each followed by the end-of-text token if any."""
    tok = _loaded.settings.tokenizer
    encode = getattr(tok, "encode_array", None) or tok.encode
    eot = getattr(tok, "eot_token", None)
    out = []
    for text in texts:
        ids = np.asarray(encode(text), dtype=np.uint32)
        out.append(ids if eot is None else np.append(ids, np.uint32(eot)))
    return out


class Workers:
    """A process pool running init_worker(settings) in each worker, or inline when workers=1."""

    def __init__(self, workers, settings):
        self.pool = None
        char_classes()   # built once here: forked workers inherit it
        if workers > 1:
            self.pool = multiprocessing.get_context().Pool(workers, init_worker, (settings, True))
        else:
            init_worker(settings)
        self.window = 2 * workers + 2

    def map(self, fn, chunks):
        """Yield fn(chunk) for each chunk, in order, with a bounded number in flight."""
        if self.pool is None:
            yield from map(fn, chunks)
            return
        pending = collections.deque()
        for chunk in chunks:
            pending.append(self.pool.apply_async(fn, (chunk,)))
            if len(pending) >= self.window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self):
        if self.pool is not None:
            self.pool.terminate()  # results are all in; terminate also ends a pool after Ctrl-C
            self.pool.join()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
