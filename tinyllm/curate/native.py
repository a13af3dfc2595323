"""The C library (csrc/, built by `make lib`) as curate's C kernels see it: present or not.

    found = c_library(("langid_predict",))    # (ffi, lib), or None

curate runs without the C library (NumPy defines every kernel there), so a
missing library, or one built before a kernel existed, is None here rather
than an error. The bindings are langid_c.py (language id) and clean.py (the
n-gram repetition counts); the library itself is tinyllm/backends/c_kernels.py's.
"""
from tinyllm.errors import BackendUnavailable


def c_library(names):
    """(ffi, lib) of the C kernels when they were built with every function in names, else None."""
    try:
        from tinyllm.backends.c_kernels import ffi, lib
    except (BackendUnavailable, ImportError):
        return None
    try:  # a library built before a kernel existed lacks its symbol (AttributeError)
        for name in names:
            getattr(lib, name)
    except AttributeError:
        return None
    return ffi, lib
