"""tinyllm.tokenizer: text <-> token ids, and the one rule for choosing a tokenizer.

Two tokenizers with the same methods (encode, encode_array, decode,
decode_bytes, to_dict, fingerprint, unused_ids, vocab_size, name):
  bytes.py   ByteTokenizer: one token per UTF-8 byte, nothing to train
  bpe.py     Tokenizer: byte-level BPE, ids identical to tiktoken's for the same ranks
and the BPE's parts, in reading order: split.py (the pre-tokenization regex),
encode.py (merging a chunk by rank), train.py (learning merges), format.py
(the .bpe and .tiktoken files).

`load(spec)` is how every command turns a --tokenizer flag into a tokenizer:
    "bytes"                       ByteTokenizer()
    "bpe"                         a vocabulary trained once on the given documents and
                                  cached as CACHE_DIR/tokenizer-<key>-<vocab_size>.bpe
    FILE                          a file saved by Tokenizer.save (it starts with the
                                  "tinyllm-bpe" magic), else a .tiktoken rank file
`from_dict(d)` rebuilds whichever tokenizer a checkpoint's to_dict() describes.

This package knows nothing of models, training or the data pipeline: the
callers hand it documents and a cache key. Read bytes.py, then bpe.py.
"""
import pathlib
import sys

from tinyllm.errors import DataError, TokenizerError
from tinyllm.tokenizer.bpe import ENDOFTEXT, Tokenizer
from tinyllm.tokenizer.bytes import ByteTokenizer
from tinyllm.tokenizer.format import MAGIC
from tinyllm.tokenizer.split import PATTERNS

__all__ = ["Tokenizer", "ByteTokenizer", "ENDOFTEXT", "PATTERNS", "TokenizerError",
           "load", "load_file", "from_dict", "cache_path"]

SPECS = "bpe, bytes, or a .bpe / .tiktoken file"


def load(spec, documents=None, cache_dir=None, cache_key=None, vocab_size=8192, pattern="gpt4",
         progress=True):
    """The tokenizer a --tokenizer flag names (see the module docstring).

    For "bpe": documents() returns the training texts (str or pathlib.Path
    items, as Tokenizer.train takes them); it is called only on a cache miss.
    cache_key names the data (a fingerprint of it), so another corpus never
    reuses the vocabulary. pattern applies to .tiktoken files, which carry none.
    """
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "bpe":
        if documents is None or cache_dir is None or cache_key is None:
            raise TokenizerError("load('bpe') trains on documents: pass documents, cache_dir "
                                 "and cache_key, or name a tokenizer file")
        return _trained(documents, pathlib.Path(cache_dir).expanduser(), cache_key, vocab_size,
                        progress)
    return load_file(spec, pattern)


def load_file(path, pattern="gpt4"):
    """A vocabulary saved by Tokenizer.save, or a .tiktoken rank file, told apart by the first line."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise TokenizerError(f"--tokenizer {path}: no such file; use {SPECS} "
                             f"(python -m tinyllm tokenizer train ... writes one)")
    with open(path, "rb") as f:
        ours = f.readline().startswith(MAGIC.encode())
    return Tokenizer.load(path) if ours else Tokenizer.from_tiktoken(path, pattern)


def cache_path(cache_dir, cache_key, vocab_size):
    """Where a BPE vocabulary trained on the data named cache_key is kept."""
    return pathlib.Path(cache_dir) / f"tokenizer-{cache_key}-{vocab_size}.bpe"


def _trained(documents, cache_dir, cache_key, vocab_size, progress):
    cached = cache_path(cache_dir, cache_key, vocab_size)
    if cached.exists():
        return Tokenizer.load(cached)
    if progress:
        print(f"training a {vocab_size}-token BPE vocabulary (cached in {cached})",
              file=sys.stderr, flush=True)
    tokenizer = Tokenizer.train(documents(), vocab_size, special_tokens=[ENDOFTEXT], progress=progress)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(cached)
    return tokenizer


_FROM_DICT = {"bytes": lambda d: ByteTokenizer(), "bpe": Tokenizer.from_dict}


def from_dict(d):
    """Rebuild the tokenizer that `to_dict()` described (ByteTokenizer or BPE Tokenizer)."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _FROM_DICT:
        raise DataError(
            f"unknown tokenizer description {str(d)[:200]}: its 'type' must be one of "
            f"{sorted(_FROM_DICT)}; the checkpoint was probably written by a "
            "newer tinyllm, so update tinyllm or retrain with a known tokenizer")
    return _FROM_DICT[kind](d)
