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


def check_ids(name, ids, low, high):
    """Integer ids, all in [low, high); returned as a NumPy array."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name}: expected integer ids, got {ids.dtype}")
    if ids.size and (ids.min() < low or ids.max() >= high):
        bad = ids[(ids < low) | (ids >= high)][0]
        raise ValueError(f"{name}: id {bad} is outside [{low}, {high})")
    return ids
