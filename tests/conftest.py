"""Test-wide setup: tests run on the NumPy reference backend unless they choose another.

The reference semantics (and every float64 gradient check) live in the NumPy
backend; the C backend is held to it by tests/test_c_*.py, which switch
backends explicitly. Without this, a machine with the C library built would
run float64 checks on float32-only kernels.
"""
import pytest

from tinyllm import backends


@pytest.fixture(autouse=True)
def numpy_backend():
    backends.set_backend("numpy")
    yield
    backends.set_backend("numpy")
