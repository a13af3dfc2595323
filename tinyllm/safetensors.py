"""Read and write the safetensors file format with our own code, atomically.

A safetensors file is three parts, all little-endian:

    [8 bytes]  N, an unsigned 64-bit integer: the length of the header
    [N bytes]  the header, UTF-8 JSON, one object:
                 {"<name>": {"dtype": "F32", "shape": [3, 4], "data_offsets": [begin, end]},
                  ...,
                  "__metadata__": {"<key>": "<string value>", ...}}     (optional)
               padded at the end with spaces so that 8 + N is a multiple of 8
    [rest]     the data buffer: each tensor's bytes, C order, little-endian

`data_offsets` count bytes from the start of the data buffer, not of the file.
The tensors tile the buffer exactly: sorted by offset, the first begins at 0,
each begins where the previous one ends, and the last ends at the end of the
file. `end - begin` equals prod(shape) * itemsize, so a 0-d tensor (shape [])
holds one element and an empty tensor holds zero bytes. Dtype codes: F64, F32,
F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL (one byte, 0 or 1).

What this file does:
- `save_safetensors` lays the tensors out widest dtype first, then in the order
  given (so each is aligned to its itemsize), writes them to `path + ".tmp"`,
  flushes and fsyncs it, then renames it over `path` with `os.replace`. A crash
  or error mid-write therefore leaves the previous checkpoint untouched.
- `load_safetensors` checks every header field and size before reading data and
  returns real copies (plain writable NumPy arrays, the file is closed after),
  not memmaps: simpler and safe to keep after the file is overwritten.
  NumPy has no bfloat16, so BF16 tensors load as float32 (exact: a bfloat16 is
  the high half of a float32). Files with other dtypes (F8_*, complex) are refused.
- `map_safetensors` checks the same and returns read-only arrays that view the file through
  a memory map instead (a quantized model's weights: pages are read when used, so resident
  memory grows to the file's size, never a second copy). Replacing the file with
  save_safetensors is safe (a rename: the mapped inode stays); overwriting it in place is not.
- `read_metadata` reads and checks only the header.

What it is not: it does not know about models. Which tensor names and metadata
keys a checkpoint carries is checkpoint.py's business (and the model contract
in DESIGN.md). Read atomic.py next for the temp-file-then-rename rule.
"""
import json
import mmap
import os
import struct
from collections import Counter

import numpy as np

from tinyllm.atomic import atomic_write
from tinyllm.errors import CheckpointError  # noqa: F401 (re-exported)

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit too
_ALIGN = 8  # header padded so the data buffer starts on an 8-byte boundary

# safetensors dtype code <-> little-endian NumPy dtype. BF16 is load-only (see docstring).
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_BF16 = np.dtype("<u2")  # raw storage of a BF16 tensor before widening to float32


# ----------------------------------------------------------------------------- writing

def save_safetensors(path, tensors, metadata=None):
    """Write `tensors` (name -> np.ndarray) and string `metadata` to `path` atomically.

    Every argument is checked before the file is opened, so a bad argument
    never leaves a partial file. Returns nothing; raises CheckpointError on bad input.
    """
    path = os.fspath(path)
    header, arrays = _build_header(path, tensors, metadata)
    header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-(8 + len(header_bytes)) % _ALIGN)

    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for array in arrays:  # one tensor at a time: never a whole-checkpoint copy in memory
            f.write(_tensor_bytes(array))


def _build_header(path, tensors, metadata):
    """Check the arguments; return the header dict and the little-endian contiguous arrays."""
    if not isinstance(tensors, dict):
        raise CheckpointError(f"cannot save {path}: tensors must be a dict of name -> np.ndarray, "
                              f"got {type(tensors).__name__}")
    header, arrays, offset = {}, [], 0
    if metadata is not None:  # first in the header, as the reference writer puts it
        if not isinstance(metadata, dict):
            raise CheckpointError(f"cannot save {path}: metadata must be a dict of str -> str, "
                                  f"got a {type(metadata).__name__}")
        for key, value in metadata.items():
            if not (isinstance(key, str) and isinstance(value, str)):
                raise CheckpointError(f"cannot save {path}: metadata must be a dict of str -> str, but "
                                      f"{key!r} -> {value!r} is {type(key).__name__} -> "
                                      f"{type(value).__name__}; convert with str() or json.dumps()")
        header["__metadata__"] = dict(metadata)
    # Widest element first (stable, as the reference writer does): every tensor then starts
    # at a multiple of its itemsize, so zero-copy readers in other tools can map it.
    for name, array in sorted(tensors.items(), key=lambda item: -_itemsize(item[1])):
        if not isinstance(name, str) or name == "__metadata__":
            raise CheckpointError(f"cannot save {path}: tensor name {name!r} is not allowed; "
                                  "names must be strings other than '__metadata__'")
        if not isinstance(array, np.ndarray):
            raise CheckpointError(f"cannot save {path}: tensor {name!r} is a {type(array).__name__}, "
                                  "not a np.ndarray; convert it with np.asarray (or pass tensor.data)")
        little = array.dtype.newbyteorder("<")  # '|' dtypes (bool, int8, uint8) are unchanged
        if little not in _CODES:
            raise CheckpointError(
                f"cannot save {path}: tensor {name!r} has dtype {array.dtype}, which safetensors "
                f"cannot store; supported: {', '.join(str(d) for d in _CODES)}; "
                "convert it first, e.g. array.astype(np.float32)")
        nbytes = array.size * little.itemsize
        header[name] = {"dtype": _CODES[little], "shape": list(array.shape),
                        "data_offsets": [offset, offset + nbytes]}
        arrays.append(array)
        offset += nbytes
    return header, arrays


def _itemsize(array):
    return array.dtype.itemsize if isinstance(array, np.ndarray) else 0  # non-arrays fail just below


def _tensor_bytes(array):
    """The array's little-endian C-order bytes as a buffer (a view when already so laid out)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return array.reshape(-1).view(np.uint8).data


# ----------------------------------------------------------------------------- reading

def load_safetensors(path):
    """Read `path`; return (tensors: dict name -> np.ndarray copy, metadata: dict str -> str).

    Tensors come back in file (offset) order. Raises CheckpointError naming the file,
    what is wrong with it, and what to do.
    """
    path = os.fspath(path)
    with _open(path) as f:
        entries, metadata, data_start = _read_header(f, path)
        tensors = {}
        for name, code, shape, begin, end in entries:
            raw = np.empty(shape, dtype=_BF16 if code == "BF16" else _DTYPES[code])
            f.seek(data_start + begin)
            got = f.readinto(raw.reshape(-1).view(np.uint8).data)
            if got != end - begin:  # the file changed under us after the size check
                raise CheckpointError(f"checkpoint {path} is truncated: tensor {name!r} needs "
                                      f"{end - begin:,} bytes, read {got:,}; use an earlier checkpoint")
            if code == "BF16":  # bfloat16 = top 16 bits of a float32
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = raw.astype(raw.dtype.newbyteorder("="), copy=False)
    return tensors, metadata


def map_safetensors(path):
    """As load_safetensors, but each tensor a read-only view of the file, memory-mapped (a
    BF16 tensor, or one whose offset is not a multiple of its itemsize, is copied instead)."""
    path = os.fspath(path)
    with _open(path) as f:
        entries, metadata, data_start = _read_header(f, path)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)   # outlives the file object
    tensors = {}
    for name, code, shape, begin, end in entries:
        dtype = np.dtype(_BF16 if code == "BF16" else _DTYPES[code])
        view = np.frombuffer(mapped, dtype, (end - begin) // dtype.itemsize,
                             data_start + begin).reshape(shape)
        if code == "BF16":   # bfloat16 = top 16 bits of a float32
            view = (view.astype(np.uint32) << 16).view(np.float32)
        elif (data_start + begin) % dtype.itemsize:
            view = view.copy()   # the C kernels need aligned arrays
        tensors[name] = view.astype(view.dtype.newbyteorder("="), copy=False)
    return tensors, metadata


def read_metadata(path):
    """Return the `__metadata__` dict of `path`, reading and checking only its header."""
    path = os.fspath(path)
    with _open(path) as f:
        return _read_header(f, path)[1]


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or train first "
                              "(python examples/train.py --out DIR writes DIR/ckpt.safetensors)") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .safetensors file "
                              "inside it") from None


def _read_header(f, path):
    """Parse and check the header.

    Returns ([(name, code, shape, begin, end)] sorted by offset, metadata, data_start in the file).
    """
    file_size = os.fstat(f.fileno()).st_size
    if file_size < 8:
        raise CheckpointError(f"checkpoint {path} is {file_size} bytes, shorter than the 8-byte "
                              "header length; it is empty or was cut off while being written; "
                              "use an earlier checkpoint or retrain")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES or n > file_size - 8:
        raise CheckpointError(f"checkpoint {path} has an impossible header length {n:,} (file is "
                              f"{file_size:,} bytes, limit {MAX_HEADER_BYTES:,}); it is not a "
                              "safetensors file or it is damaged; use an earlier checkpoint")
    try:
        text = f.read(n).decode("utf-8")
        if not text.startswith("{"):  # so json.loads can only return an object (or fail)
            raise ValueError("the header does not start with '{'")
        header = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        raise CheckpointError(f"checkpoint {path} has a damaged header ({str(e)[:200]}); it is not a "
                              "safetensors file or it was corrupted; use an earlier checkpoint") from None

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"checkpoint {path}: __metadata__ must map strings to strings, got "
                              f"{metadata!r}; the writer broke the format; re-save the tensors")
    entries = sorted((_check_entry(path, name, info) for name, info in header.items()),
                     key=lambda e: (e[3], e[4]))  # tile check below needs offset order

    expected = 0
    for name, _, _, begin, end in entries:
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else "leaves a gap before it"
            raise CheckpointError(f"checkpoint {path}: tensor {name!r} starts at byte {begin:,} of the "
                                  f"data but the previous one ends at {expected:,}, so it {what}; "
                                  "the file is corrupt; use an earlier checkpoint")
        expected = end
    data_start, data_size = 8 + n, file_size - 8 - n
    if data_size < expected:
        raise CheckpointError(f"checkpoint {path} is truncated: header says {expected:,} data bytes, "
                              f"file has {data_size:,}; it was probably cut off while being written; "
                              "use an earlier checkpoint or retrain")
    if data_size > expected:
        raise CheckpointError(f"checkpoint {path} has {data_size - expected:,} bytes after the last "
                              f"tensor (header says {expected:,} data bytes, file has {data_size:,}); "
                              "something appended to it or it is not a safetensors file")
    return entries, metadata, data_start


def _check_entry(path, name, info):
    """Check one header entry; return (name, dtype code, shape tuple, begin, end)."""
    where = f"checkpoint {path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise CheckpointError(f"{where} must be an object with dtype, shape and data_offsets, got "
                              f"{info!r}; the file is corrupt or not a safetensors file")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code != "BF16" and code not in _DTYPES:
        raise CheckpointError(f"{where} has dtype {code!r}, which tinyllm cannot read (it reads "
                              f"{', '.join(['BF16', *_DTYPES])}); convert the file to F32 with "
                              "the safetensors package first")
    if not _int_list(shape):
        raise CheckpointError(f"{where} has shape {shape!r}; a shape is a list of integers >= 0")
    if not (_int_list(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where} has data_offsets {offsets!r}; expected [begin, end] with "
                              "0 <= begin <= end; the file is corrupt")
    itemsize = 2 if code == "BF16" else _DTYPES[code].itemsize
    nbytes = int(np.prod(shape, dtype=object)) * itemsize  # object: no int64 overflow on absurd shapes
    if nbytes != offsets[1] - offsets[0]:
        raise CheckpointError(f"{where} has shape {shape} of {code} ({nbytes:,} bytes) but data_offsets "
                              f"{offsets} span {offsets[1] - offsets[0]:,} bytes; the file is corrupt")
    return name, code, tuple(shape), offsets[0], offsets[1]


def _int_list(value):
    return isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)


def _no_duplicate_keys(pairs):
    """json object hook: a repeated tensor name would silently drop a tensor, so refuse it."""
    result = dict(pairs)
    if len(result) != len(pairs):
        duplicates = sorted(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise ValueError(f"duplicate keys {duplicates}")
    return result
