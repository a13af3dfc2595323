"""tinyllm.curate: the curation pipeline behind `python -m tinyllm prepare`.

Raw documents in; clean, deduplicated, language-filtered token shards out
(written in tinyllm/data/shards.py's format, which the trainer reads).
In reading order:
  prepare.py   the pipeline: filter -> dedup plan -> tokenize into shards, resumable
  steps.py     the per-document work the worker processes do
  state.py     resume bookkeeping; report.py: what was kept and dropped, and why
  sources.py   .txt/.md/.jsonl/.gz files and folders in, raw documents out
  clean.py     normalization and Gopher/C4-style quality heuristics
  langid.py    fastText .bin/.ftz models in NumPy: predict, train_supervised
               (fasttext/: the file format, the features, the trainer;
               langid_c.py: the same prediction in C, csrc/langid.c)
  dedup.py     exact and MinHash-LSH near-duplicate detection (minhash.py, hashing.py)
  synthetic.py made-up corpora with known answers, for tests and benchmarks

Not here: the command line (tinyllm/cli/prepare.py), the tokenizers
(tinyllm/tokenizer/) or reading shards for training (tinyllm/data/). No
model or autograd code is imported. Read prepare.py first.
"""
from tinyllm.curate.clean import CleanConfig, normalize, quality_reason
from tinyllm.curate.dedup import exact_hash, find_near_duplicates
from tinyllm.curate.langid import FastTextModel, train_supervised
from tinyllm.curate.minhash import MinHasher, optimal_bands, recall_bands

# prepare() itself is imported from tinyllm.curate.prepare: a name `prepare` here
# would hide the module of that name
__all__ = ["CleanConfig", "normalize", "quality_reason", "exact_hash", "find_near_duplicates",
           "FastTextModel", "train_supervised", "MinHasher", "optimal_bands", "recall_bands"]
