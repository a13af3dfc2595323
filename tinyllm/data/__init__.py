"""tinyllm.data: text in, training batches out.

The pipeline, in reading order:
  corpus.py          where text comes from (the stdlib by default, a file, a folder)
                     and the train/val split; DataError for every bad input
  byte_tokenizer.py  the 256-token byte tokenizer (tinyllm/tokenizer.py is the BPE one)
  tokenfile.py       tokenized splits on disk: header + uint16/uint32 tokens, atomic writes
  loader.py          prepare_token_files (tokenize once, cache) and BatchLoader (x, y batches)

The curation pipeline (`python -m tinyllm prepare`), in reading order:
  prepare.py         the command: filter -> dedup plan -> tokenize into shards, resumable
  sources.py         .txt/.md/.jsonl/.gz files and folders in, raw documents out
  clean.py           normalization and Gopher/C4-style quality heuristics
  langid.py          fastText .bin/.ftz models in NumPy: predict, train_supervised
                     (fasttext_format.py, fasttext_features.py, fasttext_train.py)
  dedup.py           exact and MinHash-LSH near-duplicate detection (minhash.py, hashing.py)
  shards.py          fixed-size token shards, manifest.json, open_prepared for the trainer
  prepare_steps.py, prepare_state.py, prepare_report.py: workers, resume bookkeeping, report
  synthetic.py       made-up corpora with known answers, for tests and benchmarks

This package does no model work.
Typical use:
    corpus = load_corpus(args.data)
    train_path, val_path = prepare_token_files(corpus, ByteTokenizer(), "cache/")
    loader = BatchLoader(read_tokens(train_path), batch_size=16, block_size=256)
    x, y = loader.next_batch()  # (B, T) int64 each
"""
from tinyllm.data.corpus import Corpus, DataError, load_corpus, read_text, split_files, stdlib_files
from tinyllm.data.byte_tokenizer import ByteTokenizer, tokenizer_from_dict
from tinyllm.data.tokenfile import TokenWriter, read_header, read_tokens, write_tokens
from tinyllm.data.loader import BatchLoader, prepare_token_files
from tinyllm.data.clean import CleanConfig, normalize, quality_reason
from tinyllm.data.dedup import exact_hash, find_near_duplicates
from tinyllm.data.minhash import MinHasher, optimal_bands
from tinyllm.data.langid import FastTextModel, train_supervised
from tinyllm.data.shards import is_prepared, open_prepared, prepared_tokenizer, read_manifest

__all__ = [
    "DataError", "Corpus", "load_corpus", "read_text", "split_files", "stdlib_files",
    "ByteTokenizer", "tokenizer_from_dict",
    "TokenWriter", "write_tokens", "read_tokens", "read_header",
    "BatchLoader", "prepare_token_files",
    "CleanConfig", "normalize", "quality_reason", "exact_hash", "find_near_duplicates",
    "MinHasher", "optimal_bands", "FastTextModel", "train_supervised",
    "is_prepared", "open_prepared", "prepared_tokenizer", "read_manifest",
]
