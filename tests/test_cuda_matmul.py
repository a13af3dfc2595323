"""The CUDA matmuls (csrc/cuda/matmul.cu) against a float64 NumPy reference.

What it checks, for both precisions (set_matmul_precision "highest": the float32 kernel;
"tf32": tensor cores): awkward sizes (1, primes, not multiples of the 64 or 128 tile or of the
8 or 16 k-step, and multiples of 4 that take the float4 paths), all four transpose
combinations, batches (among them one with enough tiles for the 128 x 128 tile kernel), that
every output is written and nothing outside it is, operands that are not 16-byte aligned, K = 0,
and that the tensor-core path really rounds its inputs to TF32.

Tolerances, as max|ours - ref| / max|ref| with ref in float64 from the same float32 inputs:
  - float32, 1e-5 (as for the C matmul, tests/test_c_matmul.py): each output is a K-term dot
    product rounded in float32 (unit roundoff u = 6e-8) at every multiply-add; on random data
    the error grows like sqrt(K) u, 1.5e-6 at K = 600 (K u = 3.6e-5 would take every rounding
    to go the same way).
  - tf32, 2e-3: both inputs are rounded to TF32 (10 mantissa bits, u = 2^-11 = 4.9e-4), so each
    product is off by up to 2u relative, in random directions: an output is off by about
    sqrt(2K) u |a||b| while max|ref| is a few sqrt(K) |a||b|, a few 1e-4 relative.
Measured on the CPU emulation: below 2e-7 (float32) and 7e-4 (tf32; 3e-4 at K = 600).
On the CPU emulation (is_emulated()) the sizes are small, as every GPU thread runs on the CPU.
"""
import numpy as np
import pytest

from tests.cuda_helpers import cuda, relative_error  # noqa: F401  (cuda is a fixture)
from tests.matmul_cases import TRANSPOSES, operands, reference

TOLERANCE = {"highest": 1e-5, "tf32": 2e-3}   # see the module docstring
PRECISIONS = ["highest", "tf32"]

# (M, N, K): single rows and columns, primes, 64 +- 1 (the small tile), multiples of 4 (float4
# loads and stores) that end in a partial tile, K below, at and across the k-steps
EMULATED_SHAPES = [(1, 1, 1), (7, 13, 5), (63, 65, 17), (1, 37, 3), (33, 1, 20), (68, 64, 9),
                   (64, 68, 16)]
GPU_SHAPES = EMULATED_SHAPES + [(257, 129, 67), (1, 511, 3), (300, 1, 200), (1031, 517, 263),
                                (2049, 2051, 70), (640, 768, 600)]   # the last two: 128 tiles
# (batch, M, N, K); 256 matrices of 3 x 5 make 256 tiles, enough for the 128 x 128 kernel
EMULATED_BATCHES = [(5, 17, 33, 9), (3, 1, 1, 40), (256, 3, 5, 9)]
GPU_BATCHES = EMULATED_BATCHES + [(48, 128, 64, 128), (70000, 2, 3, 4)]   # past gridDim.z


def assert_close(ours, ref, tolerance, what):
    assert ours.shape == ref.shape and ours.dtype == np.float32, \
        f"{what}: got {ours.shape} {ours.dtype}, expected {ref.shape} float32"
    assert np.all(np.isfinite(ours)), f"{what}: {np.sum(~np.isfinite(ours))} non-finite outputs"
    err = relative_error(ours, ref)
    assert err < tolerance, f"{what}: max|ours - ref| / max|ref| = {err:.3g} >= {tolerance:g}"


def check(cuda, batch, M, N, K, transpose_a, transpose_b, precision):
    rng = np.random.default_rng([batch or 0, M, N, K])
    a, b = operands(rng, batch, M, N, K, transpose_a, transpose_b)
    cuda.set_matmul_precision(precision)
    ours = cuda.matmul(cuda.to_device(a), cuda.to_device(b), transpose_a, transpose_b).numpy()
    assert_close(ours, reference(a, b, transpose_a, transpose_b), TOLERANCE[precision],
                 f"{precision} batch {batch} (M, N, K) = {(M, N, K)} "
                 f"transposes {transpose_a}, {transpose_b}")


@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_matches_float64(cuda, precision, transpose_a, transpose_b):
    for M, N, K in EMULATED_SHAPES if cuda.is_emulated() else GPU_SHAPES:
        check(cuda, None, M, N, K, transpose_a, transpose_b, precision)


@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_batched_matmul_matches_float64(cuda, precision, transpose_a, transpose_b):
    for batch, M, N, K in EMULATED_BATCHES if cuda.is_emulated() else GPU_BATCHES:
        check(cuda, batch, M, N, K, transpose_a, transpose_b, precision)


def nan_filled(cuda, n):
    return cuda.to_device(np.full(n, np.nan, np.float32))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("batch, M, N, K", [(1, 1, 1, 1), (1, 15, 33, 1), (4, 29, 70, 13),
                                            (2, 64, 68, 20)])
def test_matmul_writes_every_output_and_nothing_else(cuda, precision, batch, M, N, K):
    """Into NaN-filled memory: every output must be written, and the NaN guards before and
    after must stay. The output starts `guard` floats in: 3 makes it unaligned (scalar stores),
    4 keeps it 16-byte aligned (float4 stores where N allows)."""
    rng = np.random.default_rng(K)
    kernel = {"highest": cuda.lib.matmul, "tf32": cuda.lib.matmul_tf32}[precision]
    for guard in (3, 4):
        for transpose_a, transpose_b in TRANSPOSES:
            a, b = operands(rng, batch, M, N, K, transpose_a, transpose_b)
            size = batch * M * N
            memory = nan_filled(cuda, guard + size + guard)
            da, db = cuda.to_device(a), cuda.to_device(b)
            out = memory.ptr + guard
            cuda.check(kernel(da.ptr, db.ptr, out, batch, M, N, K, int(transpose_a),
                              int(transpose_b)))
            got = memory.numpy()
            inside = got[guard:guard + size]
            what = f"{precision} guard {guard} transposes {transpose_a}, {transpose_b}"
            assert not np.isnan(inside).any(), \
                f"{what}: {np.isnan(inside).sum()} of {size} outputs were not written"
            assert np.isnan(got[:guard]).all() and np.isnan(got[guard + size:]).all(), \
                f"{what}: matmul wrote outside out"
            assert_close(inside.reshape(batch, M, N), reference(a, b, transpose_a, transpose_b),
                         TOLERANCE[precision], what)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_unaligned_operands(cuda, precision):
    """a and b one float into their blocks (4-byte aligned only), with row lengths that are
    multiples of 4: the kernels must fall back from float4 loads, not fault or misread."""
    rng = np.random.default_rng(5)
    M, N, K = 36, 20, 24
    kernel = {"highest": cuda.lib.matmul, "tf32": cuda.lib.matmul_tf32}[precision]
    for transpose_a, transpose_b in TRANSPOSES:
        a, b = operands(rng, None, M, N, K, transpose_a, transpose_b)
        da = cuda.to_device(np.concatenate([[0.0], a.ravel()]).astype(np.float32))
        db = cuda.to_device(np.concatenate([[0.0], b.ravel()]).astype(np.float32))
        out = cuda.DeviceArray((M, N))
        cuda.check(kernel(da.ptr + 1, db.ptr + 1, out.ptr, 1, M, N, K, int(transpose_a),
                          int(transpose_b)))
        assert_close(out.numpy(), reference(a, b, transpose_a, transpose_b), TOLERANCE[precision],
                     f"{precision} unaligned, transposes {transpose_a}, {transpose_b}")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_shapes(cuda, precision):
    cuda.set_matmul_precision(precision)
    a, b = cuda.to_device(np.ones((3, 0), np.float32)), cuda.to_device(np.ones((0, 4), np.float32))
    out = nan_filled(cuda, 12).reshape(3, 4)       # K = 0: a sum of no terms, written as zeros
    cuda.check(cuda.lib.matmul(a.ptr, b.ptr, out.ptr, 1, 3, 4, 0, 0, 0) if precision == "highest"
               else cuda.lib.matmul_tf32(a.ptr, b.ptr, out.ptr, 1, 3, 4, 0, 0, 0))
    np.testing.assert_array_equal(out.numpy(), np.zeros((3, 4), np.float32))
    no_rows = cuda.matmul(cuda.to_device(np.ones((0, 5), np.float32)),
                          cuda.to_device(np.ones((5, 3), np.float32)))
    assert no_rows.shape == (0, 3)


def test_tf32_rounds_its_inputs(cuda):
    """1 + 2^-12 is a quarter of a TF32 ulp above 1: float32 keeps it, TF32 rounds it to 1.
    This tells the tensor-core path from a float32 one that only claims to be it."""
    a = cuda.to_device(np.full((1, 1), 1 + 2.0 ** -12, np.float32))
    b = cuda.to_device(np.ones((1, 1), np.float32))
    assert cuda.matmul(a, b).item() == np.float32(1 + 2.0 ** -12)
    cuda.set_matmul_precision("tf32")
    assert cuda.matmul(a, b).item() == 1.0
