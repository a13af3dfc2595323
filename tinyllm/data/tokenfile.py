"""Token files: a tokenized split on disk, read back as a memory map.

Layout (all little-endian), 32-byte header then the tokens:

    offset  size  field
         0     8  magic      b"TLLMTOKS"
         8     4  version    uint32, = 1
        12     4  itemsize   uint32, 2 (uint16 tokens) or 4 (uint32 tokens)
        16     8  count      uint64, number of tokens
        24     8  vocab_size uint64, every token id is < vocab_size
        32     -  tokens     count * itemsize bytes

uint16 is used whenever vocab_size <= 65536 (half the disk and page cache).
Files are written to `path + ".tmp"` and renamed into place only when
complete, so a crash never leaves a half-written file under the real name;
the reader still checks the size against the header and says how to recover.

This is not the tokenizer and not the batch sampler: see loader.py next.
"""
import os
import pathlib
import struct

import numpy as np

from tinyllm.atomic import commit

from tinyllm.errors import DataError

MAGIC = b"TLLMTOKS"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, itemsize, count, vocab_size
HEADER_BYTES = _HEADER.size  # 32
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_REBUILD = "delete it and re-run so it is rebuilt"


class TokenWriter:
    """Stream token ids into a token file; the file appears only on a successful close.

    with TokenWriter(path, vocab_size) as w:
        for ids in chunks:
            w.write(ids)
    On an exception inside the block the temporary file is removed instead.
    """

    def __init__(self, path, vocab_size):
        if not isinstance(vocab_size, (int, np.integer)) or not 1 <= vocab_size <= 2**32:
            raise DataError(f"vocab_size={vocab_size!r}: it must be an integer in 1..2**32")
        self.path = pathlib.Path(path)
        self.tmp_path = pathlib.Path(str(self.path) + ".tmp")
        self.vocab_size = int(vocab_size)
        self.dtype = _DTYPES[2] if self.vocab_size <= 65536 else _DTYPES[4]
        self.count = 0
        try:
            self._file = open(self.tmp_path, "wb")
        except OSError as e:
            raise DataError(f"cannot create {self.tmp_path} ({e.strerror}); make sure its "
                            "folder exists and is writable") from None
        self._file.write(_HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, 0, self.vocab_size))

    def write(self, ids):
        """Append a 1-D sequence of ids (list or integer array)."""
        if self._file is None:
            raise DataError(f"TokenWriter for {self.path} is already closed; open a new one")
        arr = np.asarray(ids)  # (n,)
        if arr.size == 0:
            return
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise DataError(f"token ids must be a 1-D integer sequence, got shape {arr.shape} "
                            f"dtype {arr.dtype}; pass tokenizer.encode(...) output")
        if arr.min() < 0 or arr.max() >= self.vocab_size:
            pos = int(np.flatnonzero((arr < 0) | (arr >= self.vocab_size))[0])
            raise DataError(
                f"token id {int(arr[pos])} at position {self.count + pos} is outside "
                f"0..{self.vocab_size - 1} (vocab_size={self.vocab_size}); the tokenizer "
                "and vocab_size disagree: pass the tokenizer's own vocab_size")
        self._file.write(arr.astype(self.dtype, copy=False).tobytes())
        self.count += arr.size

    def close(self):
        """Patch the count into the header, fsync, and rename into place."""
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.seek(0)
            f.write(_HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.count, self.vocab_size))
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            self.tmp_path.unlink(missing_ok=True)
            raise
        f.close()
        commit(self.tmp_path, self.path)

    def abort(self):
        """Drop everything written; the final path is not touched."""
        f, self._file = self._file, None
        if f is not None:
            f.close()
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tokens(path, tokens, vocab_size):
    """Write all `tokens` (1-D ids) to `path` atomically."""
    with TokenWriter(path, vocab_size) as w:
        w.write(tokens)


def read_header(path):
    """Validate a token file and return {"version", "dtype", "count", "vocab_size"}.

    dtype is the NumPy name of the stored type ("uint16" or "uint32").
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: no such token file; run the data preparation "
                        "(prepare_token_files) to create it") from None
    if size < HEADER_BYTES:
        raise DataError(f"{path}: truncated or corrupt: {size} bytes is shorter than the "
                        f"{HEADER_BYTES}-byte header; {_REBUILD}")
    magic, version, itemsize, count, vocab_size = _HEADER.unpack(head)
    if magic != MAGIC:
        raise DataError(f"{path}: not a tinyllm token file (starts with {magic!r}, "
                        f"expected {MAGIC!r}); check the path, or {_REBUILD}")
    if version != VERSION:
        raise DataError(f"{path}: unsupported token file version {version} (this tinyllm "
                        f"reads version {VERSION}); {_REBUILD} with this version")
    if itemsize not in _DTYPES:
        raise DataError(f"{path}: bad itemsize {itemsize} in the header (expected 2 or 4); "
                        f"the file is corrupt: {_REBUILD}")
    expected = HEADER_BYTES + count * itemsize
    if size != expected:
        raise DataError(f"{path}: truncated or corrupt: expected {expected} bytes "
                        f"({count} tokens of {itemsize} bytes + {HEADER_BYTES}-byte header), "
                        f"found {size}; {_REBUILD}")
    return {"version": version, "dtype": _DTYPES[itemsize].name, "count": count,
            "vocab_size": vocab_size}


def read_tokens(path):
    """The tokens of a validated token file as a read-only memmap, shape (count,)."""
    header = read_header(path)
    dtype = _DTYPES[np.dtype(header["dtype"]).itemsize]
    if header["count"] == 0:
        return np.empty(0, dtype=dtype)  # mmap cannot map zero bytes
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES,
                     shape=(header["count"],))  # (count,)
