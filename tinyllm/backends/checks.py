"""What the compiled backends (c_kernels.py, cuda_kernels.py) share: opening a library with
cffi, and the shape and range checks every kernel call passes before compiled code sees it.

Each function raises with a message that names the argument and the shape or value that was
wrong, and returns the sizes the kernel takes, so a C or CUDA kernel never meets a bad array.
The dtype and memory checks differ (NumPy arrays for C, DeviceArrays for CUDA) and stay in
each binding.
"""
import os
import re

import numpy as np

from tinyllm.backends import BackendUnavailable


def open_library(lib_path, header_path, what, build):
    """(ffi, lib) for the library at lib_path, declared by the C header at header_path.

    what names the library in errors ("the C library"); build is the command that makes it.
    """
    try:
        import cffi
    except ImportError as e:
        raise BackendUnavailable(f"cffi is not installed ({e}); run `make`") from e
    for path in (lib_path, header_path):
        if not os.path.exists(path):
            raise BackendUnavailable(f"{path} is missing: {what} is not built; {build}")
    ffi = cffi.FFI()
    with open(header_path) as f:
        # cffi takes declarations only: drop preprocessor lines and C++'s `extern "C" { }`
        text = re.sub(r"^\s*#.*$", "", f.read(), flags=re.MULTILINE)
        ffi.cdef(re.sub(r'^\s*(extern "C" \{|\})\s*$', "", text, flags=re.MULTILINE))
    try:
        return ffi, ffi.dlopen(lib_path)
    except OSError as e:
        raise BackendUnavailable(f"cannot load {lib_path} ({e}); {build}") from e


def shape(name, a, expected):
    if a.shape != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {a.shape}")


def rows(x):
    """(N, C): a row-wise kernel's rows and row length for x (..., C)."""
    return x.size // max(x.shape[-1], 1), x.shape[-1]


def matmul_sizes(a, b, transpose_a, transpose_b):
    """(batch, M, N, K) for 2-D @ 2-D or equal-batch 3-D @ 3-D; None for broadcasting shapes."""
    if a.ndim != b.ndim or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[0] != b.shape[0]):
        return None
    M, K = a.shape[-2:][::-1] if transpose_a else a.shape[-2:]
    Kb, N = b.shape[-2:][::-1] if transpose_b else b.shape[-2:]
    if K != Kb:
        raise ValueError(f"matmul: shapes {a.shape}{'^T' if transpose_a else ''} @ "
                         f"{b.shape}{'^T' if transpose_b else ''} do not match ({K} != {Kb})")
    return (a.shape[0] if a.ndim == 3 else 1), M, N, K


def attention_sizes(q, k, v, dout=None, out=None, lse=None):
    """(B, nh, Tq, Tk, hs) of q (B, nh, Tq, hs), k and v (B, nh, Tk, hs), Tq <= Tk, and of the
    backward's dout and out (like q) and lse (B, nh, Tq) when given."""
    if q.ndim != 4:
        raise ValueError(f"attention: q must be (B, nh, T, hs), got shape {q.shape}")
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2] if k.ndim == 4 else -1
    for name, x, expected in (("k", k, (B, nh, Tk, hs)), ("v", v, (B, nh, Tk, hs)),
                              ("dout", dout, q.shape), ("out", out, q.shape),
                              ("lse", lse, (B, nh, Tq))):
        if x is not None:
            shape(f"attention {name}", x, expected)
    if Tq > Tk:
        raise ValueError(f"attention: Tq={Tq} queries but only Tk={Tk} keys")
    return B, nh, Tq, Tk, hs


def split_sizes(x, n_parts, n_head):
    """(B, T, hs) of split_heads' x (B, T, n_parts * n_head * hs)."""
    if x.ndim != 3:
        raise ValueError(f"split_heads: x must be (B, T, channels), got shape {x.shape}")
    B, T, width = x.shape
    if width % (n_parts * n_head):
        raise ValueError(f"split_heads: {width} channels do not split into {n_parts} parts of "
                         f"{n_head} heads")
    return B, T, width // (n_parts * n_head)


def qkv_sizes(qkv, n_head, dout=None, out=None, lse=None):
    """(B, T, hs) of attention_qkv's qkv (B, T, 3 * n_head * hs), and of the backward's dout and
    out (B, T, n_head * hs) and lse (B, n_head, T) when given."""
    B, T, hs = split_sizes(qkv, 3, n_head)
    for name, x, expected in (("dout", dout, (B, T, n_head * hs)), ("out", out, (B, T, n_head * hs)),
                              ("lse", lse, (B, n_head, T))):
        if x is not None:
            shape(f"attention_qkv {name}", x, expected)
    return B, T, hs


def merge_sizes(parts):
    """(B, nh, T, hs) of merge_heads' parts, each (B, nh, T, hs)."""
    if not parts or parts[0].ndim != 4:
        raise ValueError(f"merge_heads: expected parts of shape (B, nh, T, hs), got "
                         f"{[x.shape for x in parts]}")
    for x in parts:
        shape("merge_heads part", x, parts[0].shape)
    return parts[0].shape


def check_ids(name, ids, low, high):
    """Integer ids, all in [low, high); returned as a NumPy array."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name}: expected integer ids, got {ids.dtype}")
    if ids.size and (ids.min() < low or ids.max() >= high):
        bad = ids[(ids < low) | (ids >= high)][0]
        raise ValueError(f"{name}: id {bad} is outside [{low}, {high})")
    return ids


# a transformer block's weights as decode_block takes them, and their shapes for width C
BLOCK_WEIGHTS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


def block_width(weights):
    """C of a transformer block's weights, in BLOCK_WEIGHTS' order (arrays or quantized blocks:
    anything with a .shape), after checking each shape against ln_1's (C,)."""
    if len(weights) != len(BLOCK_WEIGHTS):
        raise ValueError(f"decode_block: expected the {len(BLOCK_WEIGHTS)} weights "
                         f"{BLOCK_WEIGHTS}, got {len(weights)}")
    C = tuple(weights[0].shape)[0] if len(weights[0].shape) == 1 else -1
    for name, w, want in zip(BLOCK_WEIGHTS, weights, ((C,), (3 * C, C), (C, C), (C,), (4 * C, C),
                                                      (C, 4 * C))):
        if tuple(w.shape) != want:
            raise ValueError(f"decode_block: {name} has shape {tuple(w.shape)}; a block of "
                             f"width C={C} (ln_1's) needs {want}")
    return C


def decode_block_sizes(x, C, n_head, k_cache, v_cache, start, max_rows):
    """(B, T, Tmax) of a decode_block call on a block of width C: x (B, T, C) with B * T <=
    max_rows, the caches (B, nh, Tmax, hs), and start + T <= Tmax (the new rows' positions)."""
    if x.ndim != 3 or x.shape[2] != C:
        raise ValueError(f"decode_block: x must be (B, T, C={C}), got shape {x.shape}")
    B, T, _ = x.shape
    if B * T > max_rows:
        raise ValueError(f"decode_block: {B * T} rows; it takes at most {max_rows} (a decoding "
                         f"step's): more go through the block's layers one by one")
    if isinstance(n_head, bool) or not isinstance(n_head, (int, np.integer)) or n_head < 1 or C % n_head:
        raise ValueError(f"decode_block: n_head={n_head!r} must be a positive divisor of C={C}")
    Tmax = k_cache.shape[2] if k_cache.ndim == 4 else -1
    shape("decode_block k_cache", k_cache, (B, n_head, Tmax, C // n_head))
    shape("decode_block v_cache", v_cache, (B, n_head, Tmax, C // n_head))
    if not 0 <= start <= Tmax - T:
        raise ValueError(f"decode_block: {T} new positions from start={start} do not fit the "
                         f"cache of {Tmax}")
    return B, T, Tmax


# a quantized weight's format -> the dtype of its integers and how many a byte holds
_BLOCK_DTYPES = {"q8_0": (np.int8, 1), "q4_0": (np.uint8, 2)}


def check_blocks(name, w):
    """(q, scale) of quantized blocks w (.fmt, .q, .scale, as tinyllm.quant.formats.Blocks) of
    shape (N, K): q int8 (N, K) for q8_0 or uint8 (N, K / 2) for q4_0, scale float16 (N, K / 32)."""
    if getattr(w, "fmt", None) not in _BLOCK_DTYPES:
        raise TypeError(f"{name}: expected a float32 array or q8_0 / q4_0 blocks, got "
                        f"{type(w).__name__} {getattr(w, 'fmt', '')}")
    (dtype, per_byte), (N, K) = _BLOCK_DTYPES[w.fmt], w.shape
    if w.q.dtype != dtype or K % 32 or w.scale.dtype != np.float16 or w.scale.shape != (N, K // 32):
        raise ValueError(f"{name}: {w.fmt} needs q {np.dtype(dtype)} (N, K / {per_byte}) and "
                         f"scale float16 (N, K / 32), K % 32 == 0; got q {w.q.dtype} "
                         f"{w.q.shape}, scale {w.scale.dtype} {w.scale.shape}")
    return w.q, w.scale
