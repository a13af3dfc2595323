"""The CUDA backend for tests/test_cuda*.py, or a skip that says why there is none.

`make test` runs those files twice: first with the real library (on a machine
with a GPU they run in full; without one they skip), then with
TINYLLM_CUDA_LIB naming the build against the CPU emulation (csrc/cuda/emu),
which is how CI, with no GPU, checks the kernels' logic. The emulation runs
every CUDA thread on the CPU, so tests choose small sizes when
`cuda.is_emulated()`.

Use it as a fixture: `from tests.cuda_helpers import cuda`, then a test
function taking a `cuda` argument gets the backend module (cuda_kernels).
"""
import numpy as np
import pytest

from tinyllm import backends


@pytest.fixture
def cuda():
    try:
        kernels = backends.get_backend("cuda")
    except backends.BackendUnavailable as e:
        pytest.skip(f"no CUDA backend here: {e}")
    kernels.set_matmul_precision("highest")
    kernels.set_deterministic(True)
    yield kernels
    kernels.set_matmul_precision("highest")
    kernels.set_deterministic(True)


def relative_error(got, want):
    """max |got - want| / max |want|: one number for a whole array, robust to zeros."""
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / max(np.max(np.abs(want)), 1e-30))
