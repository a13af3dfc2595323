"""The C backend for the kernel tests, or a module-level skip saying why and how to build it."""
import pytest

from tinyllm.backends import BackendUnavailable


def c_kernels_or_skip():
    """tinyllm.backends.c_kernels; a library that is missing or built from older sources skips."""
    try:
        from tinyllm.backends import c_kernels
    except BackendUnavailable as e:
        pytest.skip(f"the C library is not usable ({e}); run `make lib`", allow_module_level=True)
    return c_kernels
