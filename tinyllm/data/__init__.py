"""tinyllm.data: training data in: text or prepared shards to (B, T) batches.

In reading order:
  corpus.py     where text comes from (the stdlib by default, a file, a folder)
                and the train/val split
  tokenfile.py  tokenized splits on disk: header + uint16/uint32 tokens, atomic writes
  loader.py     prepare_token_files (tokenize once, cache) and BatchLoader (x, y batches)
  shards.py     the shards `python -m tinyllm prepare` writes: ShardWriter, and
                open_prepared / prepared_tokenizer for the trainer

Not here: the tokenizers (tinyllm/tokenizer/) or the curation pipeline that
cleans and deduplicates raw text into shards (tinyllm/curate/). This package
does no model work. Read corpus.py first. Typical use:
    corpus = load_corpus(args.data)
    train_path, val_path = prepare_token_files(corpus, ByteTokenizer(), "cache/")
    loader = BatchLoader(read_tokens(train_path), batch_size=16, block_size=256)
    x, y = loader.next_batch()  # (B, T) int64 each
"""
from tinyllm.data.corpus import Corpus, load_corpus, read_text, split_files, stdlib_files
from tinyllm.data.loader import BatchLoader, prepare_token_files
from tinyllm.data.shards import is_prepared, open_prepared, prepared_tokenizer, read_manifest
from tinyllm.data.tokenfile import TokenWriter, read_header, read_tokens, write_tokens
from tinyllm.errors import DataError

__all__ = [
    "DataError", "Corpus", "load_corpus", "read_text", "split_files", "stdlib_files",
    "TokenWriter", "write_tokens", "read_tokens", "read_header",
    "BatchLoader", "prepare_token_files",
    "is_prepared", "open_prepared", "prepared_tokenizer", "read_manifest",
]
