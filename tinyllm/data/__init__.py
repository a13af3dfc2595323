"""tinyllm.data: text in, training batches out.

The pipeline, in reading order:
  corpus.py          where text comes from (the stdlib by default, a file, a folder)
                     and the train/val split; DataError for every bad input
  byte_tokenizer.py  the 256-token byte tokenizer (tinyllm/tokenizer.py is the BPE one)
  tokenfile.py       tokenized splits on disk: header + uint16/uint32 tokens, atomic writes
  loader.py          prepare_token_files (tokenize once, cache) and BatchLoader (x, y batches)

This package does no model work and no cleaning or deduplication yet.
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

__all__ = [
    "DataError", "Corpus", "load_corpus", "read_text", "split_files", "stdlib_files",
    "ByteTokenizer", "tokenizer_from_dict",
    "TokenWriter", "write_tokens", "read_tokens", "read_header",
    "BatchLoader", "prepare_token_files",
]
