"""The C library opened through cffi, and the checks every pointer handed to it passes.

What it is: the one place that opens tinyllm/backends/libtinyllm.so (built by `make`; the
environment variable TINYLLM_LIB names another build, as the sanitizer's) with its header as the
cdef, and the argument checks of its bindings: dtype, contiguity, alignment, writability, then
the pointer. Not here: the kernels' wrappers (c_kernels.py, the "c" backend, which re-exports
these names; c_quant.py). Read c_kernels.py next.
"""
import os

import numpy as np

from tinyllm.backends import BackendUnavailable
from tinyllm.backends.checks import check_ids, open_library

_HERE = os.path.dirname(os.path.abspath(__file__))
LIB_PATH = os.environ.get("TINYLLM_LIB") or os.path.join(_HERE, "libtinyllm.so")
HEADER_PATH = os.path.join(_HERE, "tinyllm.h")


ffi, lib = open_library(LIB_PATH, HEADER_PATH, "the C library", "run `make`")


def check_available():
    """Raise BackendUnavailable unless every kernel of the header is in the library."""
    missing = [name for name in dir(lib) if not hasattr(lib, name)]
    if missing:
        raise BackendUnavailable(f"{LIB_PATH} lacks {missing}; rebuild it with `make`")


# ----------------------------------------------------------------------------
# argument checks: every pointer handed to C comes through here

def _f32(name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name}: the C backend computes in float32, got {a.dtype}; convert with "
                        f".astype(np.float32), or use set_backend('numpy') for float64")
    return _contiguous(name, a)


def _ids(name, ids, low, high):
    """Integer ids in [low, high) as a contiguous int64 array."""
    return np.ascontiguousarray(check_ids(name, ids, low, high), dtype=np.int64)


def _contiguous(name, a):
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: the C kernels need C-contiguous arrays, got strides {a.strides} "
                         f"for shape {a.shape}; pass np.ascontiguousarray(x)")
    if not a.flags.aligned:
        raise ValueError(f"{name}: array is not aligned to {a.dtype.itemsize} bytes")
    return a


def _writable(name, a):
    """An array C writes into: a read-only one (a memmap opened "r", np.frombuffer of bytes)
    would crash the interpreter or change an immutable object."""
    if not a.flags.writeable:
        raise ValueError(f"{name}: the array is read-only and this kernel updates it in place; "
                         f"pass a writable copy (np.array(x))")
    return a


# The pointers C receives. ffi.from_buffer keeps the array alive as long as the pointer and
# costs a third of ffi.cast(a.ctypes.data): a decoding step makes ~100 kernel calls of
# microseconds each, so the wrappers' overhead is a visible part of it (the types are parsed
# once, here: a string costs a lookup per call).
_FLOATS, _INT64S = ffi.typeof("float[]"), ffi.typeof("int64_t[]")


def _p(a):
    return ffi.from_buffer(_FLOATS, a)


def _pi(a):
    return ffi.from_buffer(_INT64S, a)
