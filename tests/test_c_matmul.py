"""The C matmul (csrc/matmul.c) against a float64 NumPy reference.

What it checks: awkward sizes that are not multiples of the micro-kernel tile or the cache
blocks, all four transpose combinations, batches, that every output element is written (never
left as it was) and nothing past the output is, that the result does not depend on the number
of OpenMP threads, and the argument checks of the Python wrapper.

Tolerance: max|ours - ref| / max|ref| < 1e-5, with ref computed in float64 from the same float32
inputs. Each output is a K-term dot product rounded in float32 (unit roundoff u = 6e-8) by every
multiply-add; on random data the error grows like sqrt(K) * u, about 1.5e-6 for K = 511 (the
worst case K * u = 3e-5 needs every rounding to go the same way). Measured: below 1e-6.

What it is not: a speed test (examples/bench_matmul.py is), or a test of the other C kernels.
It calls the kernel through tinyllm.backends.c_kernels, which imports as soon as the library is
built, even while the "c" backend is not yet complete. Read csrc/matmul.c for the kernel.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.matmul_cases import TRANSPOSES, operands, reference
from tests.c_helpers import c_kernels_or_skip

c_kernels = c_kernels_or_skip()

RTOL = 1e-5   # relative to max|ref|; see the module docstring
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# M, N, K: single rows and columns, primes around the 12 x 32 tile, and (3100, 530, 300), which
# crosses every cache block (MC = 3072, NC = 512, KC = 256) with a remainder
SHAPES = [(1, 1, 1), (7, 13, 5), (63, 65, 257), (257, 129, 67), (1, 511, 3), (300, 1, 200),
          (3100, 530, 300)]


def assert_close(ours, ref, what):
    assert ours.shape == ref.shape and ours.dtype == np.float32, \
        f"{what}: got {ours.shape} {ours.dtype}, expected {ref.shape} float32"
    scale = max(np.abs(ref).max(), np.finfo(np.float32).tiny)
    err = np.abs(ours - ref)
    where = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() / scale < RTOL, (
        f"{what}: max|ours - ref| / max|ref| = {err.max() / scale:.3g} >= {RTOL:g}; worst at "
        f"{where}: ours {ours[where]!r}, ref {ref[where]!r}")


def check(batch, M, N, K, transpose_a, transpose_b):
    rng = np.random.default_rng([batch or 0, M, N, K])
    a, b = operands(rng, batch, M, N, K, transpose_a, transpose_b)
    assert_close(c_kernels.matmul(a, b, transpose_a, transpose_b),
                 reference(a, b, transpose_a, transpose_b),
                 f"batch {batch} ({M}, {N}, {K}) transposes {transpose_a}, {transpose_b}")


@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("M, N, K", SHAPES)
def test_matmul_matches_float64(M, N, K, transpose_a, transpose_b):
    check(None, M, N, K, transpose_a, transpose_b)


@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("batch, M, N, K", [(5, 17, 33, 9), (48, 128, 64, 128), (3, 1, 1, 700)])
def test_batched_matmul_matches_float64(batch, M, N, K, transpose_a, transpose_b):
    # (48, 128, 64, 128) is attention's: many small matrices, one per (batch, head); a batch of
    # 5 or 3 does not share out evenly over 2 threads, so those matrices are cut in pieces
    check(batch, M, N, K, transpose_a, transpose_b)


def direct(a, b, batch, M, N, K, transpose_a, transpose_b):
    """lib.matmul called on NaN-filled memory (the wrapper allocates with np.empty, so it cannot
    show this), past the wrapper's routing of few rows to gemv: every output must be written,
    and the NaN guards before and after the output must stay. -> out (batch, M, N)"""
    size, guard = batch * M * N, 64
    memory = np.full(guard + size + guard, np.nan, np.float32)
    out = memory[guard:guard + size]
    p = lambda x: c_kernels.ffi.cast("float *", x.ctypes.data)   # noqa: E731
    c_kernels.lib.matmul(p(a), p(b), p(out), batch, M, N, K, int(transpose_a), int(transpose_b))
    assert not np.isnan(out).any(), f"{np.isnan(out).sum()} of {size} outputs were not written"
    assert np.isnan(memory[:guard]).all() and np.isnan(memory[guard + size:]).all(), \
        "matmul wrote outside out"
    return out.reshape(batch, M, N)


@pytest.mark.parametrize("batch, M, N, K", [(1, 1, 1, 1), (1, 15, 33, 1), (1, 257, 129, 300),
                                            (4, 29, 70, 13)])
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
def test_matmul_writes_every_output_and_nothing_else(batch, M, N, K, transpose_a, transpose_b):
    a, b = operands(np.random.default_rng(K), batch, M, N, K, transpose_a, transpose_b)
    assert_close(direct(a, b, batch, M, N, K, transpose_a, transpose_b),
                 reference(a, b, transpose_a, transpose_b), "direct call")


@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
def test_few_rows_match_float64(transpose_a, transpose_b):
    """Few rows of out: with transpose_b, M <= SKINNY_MAX_ROWS runs csrc/skinny.h (op(b) read in
    place, its last N % MR columns packed), the other transposes the packed GEMM. Every M of
    1..70 (op(a)^T's 16-row panels whole, partial and several) and 255..257 (across the limit
    of the AVX2 build, 256); N odd and around MR = 6 (edge panels alone, whole ones and both), K
    odd; (40, 517, 263) is big enough for both threads and several chunks each."""
    for M in [*range(1, 71), 255, 256, 257]:
        for N, K in ((1, 3), (5, 17), (13, 1), (37, 65)) + (((517, 263),) if M == 40 else ()):
            rng = np.random.default_rng([M, N, K])
            a, b = operands(rng, None, M, N, K, transpose_a, transpose_b)
            assert_close(direct(a, b, 1, M, N, K, transpose_a, transpose_b)[0],
                         reference(a, b, transpose_a, transpose_b),
                         f"({M}, {N}, {K}) transposes {transpose_a}, {transpose_b}")


def test_empty_shapes():
    a, b = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32)
    np.testing.assert_array_equal(c_kernels.matmul(a, b), np.zeros((3, 4), np.float32))  # no terms
    no_rows = c_kernels.matmul(np.ones((0, 5), np.float32), np.ones((5, 3), np.float32))
    assert no_rows.shape == (0, 3)


def test_result_does_not_depend_on_thread_count(tmp_path):
    """Threads split out, never K, so each output's sum runs in the same order: bit-identical
    results with OMP_NUM_THREADS=1 (in a subprocess) and the default thread count, also on the
    skinny path (40 rows), whose pool splits out's columns."""
    a, b = operands(np.random.default_rng(1), 3, 301, 517, 263, False, True)
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    script = ("import sys, numpy as np; from tinyllm.backends import c_kernels; "
              "d = np.load(sys.argv[1]); "
              "np.save(sys.argv[2], c_kernels.matmul(d['a'], d['b'], False, True)); "
              "np.save(sys.argv[3], c_kernels.matmul(d['a'][0, :40], d['b'][0], False, True))")
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ab.npz"), str(tmp_path / "out.npy"),
         str(tmp_path / "skinny.npy")],
        capture_output=True, text=True, cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path))
    assert done.returncode == 0, f"the OMP_NUM_THREADS=1 run failed:\n{done.stderr}"
    np.testing.assert_array_equal(c_kernels.matmul(a, b, False, True),
                                  np.load(tmp_path / "out.npy"))
    np.testing.assert_array_equal(c_kernels.matmul(a[0, :40], b[0], False, True),   # skinny.h
                                  np.load(tmp_path / "skinny.npy"))


def test_wrapper_rejects_bad_arguments():
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    with pytest.raises(TypeError, match="float32"):
        c_kernels.matmul(a.astype(np.float64), b)
    with pytest.raises(ValueError, match="C-contiguous"):
        c_kernels.matmul(np.ones((3, 4), np.float32).T, b)
    with pytest.raises(ValueError, match=r"do not match \(3 != 4\)"):
        c_kernels.matmul(a, np.ones((4, 5), np.float32))
    np.testing.assert_allclose(c_kernels.matmul(a, b), a @ b)   # and the good call works
