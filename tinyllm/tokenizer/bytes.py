"""ByteTokenizer: the simplest tokenizer there is, one token per UTF-8 byte.

Token ids are the 256 byte values, so any text encodes without an unknown
token and any id sequence decodes (bytes that are not valid UTF-8 become
U+FFFD). It is the default for the first training runs because it needs no
training. The byte-level BPE tokenizer (bpe.py) exposes the same methods,
so the data pipeline and the trainer take either one.

This is not BPE and does no merging: a sequence is as long as its UTF-8
encoding. Read bpe.py next.
"""
import hashlib
import json

import numpy as np

from tinyllm.errors import DataError


class ByteTokenizer:
    """Text <-> UTF-8 byte values 0..255."""

    name = "bytes"  # short label for logs and cache file names
    vocab_size = 256

    def encode(self, text):
        """UTF-8 bytes of `text` as a list of ints."""
        return list(_utf8(text))

    def encode_array(self, text):
        """UTF-8 bytes of `text` as a uint16 array, without a Python int per byte."""
        return np.frombuffer(_utf8(text), dtype=np.uint8).astype(np.uint16)  # (n,)

    def decode_bytes(self, ids):
        """Ids (list or 1-D array of 0..255) back to the raw bytes."""
        arr = np.asarray(ids).reshape(-1)  # (n,)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            bad = int(arr[(arr < 0) | (arr > 255)][0])
            raise DataError(
                f"ByteTokenizer.decode got id {bad}, but byte ids are 0..255: "
                "these ids come from a different tokenizer; decode them with that one")
        return arr.astype(np.uint8).tobytes()

    def decode(self, ids):
        """Ids back to text; invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def unused_ids(self):
        """Every id below vocab_size is a byte: none is unused."""
        return []

    def to_dict(self):
        """What a checkpoint stores to rebuild this tokenizer (tinyllm.tokenizer.from_dict)."""
        return {"type": "bytes"}

    def fingerprint(self):
        """Short stable hash of to_dict(): token caches made by another tokenizer never match."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")
        return hashlib.sha1(blob).hexdigest()[:16]

    def __repr__(self):
        return "ByteTokenizer()"


def _utf8(text):
    if not isinstance(text, str):
        raise DataError(f"ByteTokenizer encodes str, got {type(text).__name__}: "
                        "decode bytes to text first (e.g. data.decode('utf-8'))")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates, e.g. from errors="surrogateescape"
        raise DataError(f"text has a character that UTF-8 cannot encode ({text[e.start]!r} at "
                        f"index {e.start}): remove it or read the file with strict UTF-8") from None
