"""The fast kernels against numpy_kernels' naive definitions, matmul_naive and attention_naive.

matmul_naive is matmul as three loops and attention_naive the textbook masked softmax on
whole matrices: the definitions that NumPy's matmul (BLAS), the tiled NumPy attention and
the C kernels must equal. Sizes are small and awkward (3 x 5 x 7, T = 1, 5, 17 with tiles
smaller than T) so the loops stay quick and every tile edge is crossed. Not here: the NumPy
kernels at larger sizes and in float32 (tests/test_kernels.py), the C kernels against the
NumPy ones (tests/test_c_kernels.py).

Tolerances, relative to the largest reference value:
  - NumPy in float64, 1e-12: the two differ only in the order of at most 17 additions, each
    rounding by <= 1.1e-16;
  - C in float32 against the float64 definition, 1e-5: float32 rounds by <= 6e-8 per
    operation, over sums of at most 17 terms and an exp per score.
"""
import itertools

import numpy as np
import pytest

from tinyllm.backends import BackendUnavailable
from tinyllm.backends import numpy_kernels as np_kernels  # not K: K is matmul's inner size here

try:
    from tinyllm.backends import c_kernels as C
except BackendUnavailable as e:
    C, C_MISSING = None, f"the C library is not built ({e}); run `make lib`"
else:
    C_MISSING = ""
needs_c = pytest.mark.skipif(C is None, reason=C_MISSING)

FLOAT64_TOL = 1e-12
FLOAT32_TOL = 1e-5

MATMUL_SHAPES = [(1, 1, 1), (3, 5, 7), (7, 1, 3), (2, 9, 1)]       # (M, K, N)
TRANSPOSES = list(itertools.product([False, True], repeat=2))       # (transpose_a, transpose_b)
# (B, nh, Tq, Tk, hs, tile): T 1, 5, 17 with tiles below T, and Tq < Tk (KV-cache decoding)
ATTENTION_SHAPES = [(1, 1, 1, 1, 3, 4), (2, 3, 5, 5, 4, 2), (1, 2, 17, 17, 5, 4),
                    (2, 1, 5, 17, 3, 4), (1, 1, 1, 17, 8, 16)]


def assert_close(name, ours, ref, tol):
    """max|ours - ref| / max|ref| <= tol, naming the worst element when not."""
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, definition {ref.shape}"
    diff = np.abs(np.asarray(ours, np.float64) - ref)
    err = diff.max() / max(np.abs(ref).max(), 1e-30)
    worst = np.unravel_index(diff.argmax(), diff.shape)
    assert err <= tol, (f"{name}: relative error {err:.3g} > {tol:g} at {worst}: "
                        f"{ours[worst]!r}, definition {ref[worst]!r}")


def matmul_operands(rng, M, K, N, transpose_a, transpose_b, batch=None, dtype=np.float64):
    """a and b laid out for the transposes asked: a (M, K) or (K, M), b (K, N) or (N, K)."""
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((K, M) if transpose_a else (M, K)))
    b = rng.standard_normal(lead + ((N, K) if transpose_b else (K, N)))
    return a.astype(dtype), b.astype(dtype)


def attention_inputs(rng, B, nh, Tq, Tk, hs, dtype=np.float64):
    return tuple(rng.standard_normal((B, nh, T, hs)).astype(dtype) for T in (Tq, Tk, Tk))


def test_matmul_naive_is_the_sum_of_products():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    out = np_kernels.matmul_naive(a, b)
    assert out[1, 2] == a[1, 0] * b[0, 2] + a[1, 1] * b[1, 2] + a[1, 2] * b[2, 2]


def test_attention_naive_first_query_sees_only_the_first_key():
    rng = np.random.default_rng(1)
    q, k, v = attention_inputs(rng, 1, 1, 4, 4, 3)
    out, lse = np_kernels.attention_naive(q, k, v)
    np.testing.assert_array_equal(out[0, 0, 0], v[0, 0, 0])
    assert lse[0, 0, 0] == pytest.approx(q[0, 0, 0] @ k[0, 0, 0] / np.sqrt(3), rel=1e-15)


@pytest.mark.parametrize("M, K, N", MATMUL_SHAPES)
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("batch", [None, 3])
def test_numpy_matmul_equals_the_definition(M, K, N, transpose_a, transpose_b, batch):
    rng = np.random.default_rng(M * 100 + K * 10 + N)
    a, b = matmul_operands(rng, M, K, N, transpose_a, transpose_b, batch)
    assert_close("matmul", np_kernels.matmul(a, b, transpose_a, transpose_b),
                 np_kernels.matmul_naive(a, b, transpose_a, transpose_b), FLOAT64_TOL)


@pytest.mark.parametrize("B, nh, Tq, Tk, hs, tile", ATTENTION_SHAPES)
def test_numpy_attention_equals_the_definition(B, nh, Tq, Tk, hs, tile):
    q, k, v = attention_inputs(np.random.default_rng(Tq * 100 + Tk), B, nh, Tq, Tk, hs)
    out, lse = np_kernels.attention_forward(q, k, v, tile=tile)
    ref_out, ref_lse = np_kernels.attention_naive(q, k, v)
    assert_close("attention out", out, ref_out, FLOAT64_TOL)
    assert_close("attention lse", lse, ref_lse, FLOAT64_TOL)


@needs_c
@pytest.mark.parametrize("M, K, N", MATMUL_SHAPES)
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("batch", [None, 3])
def test_c_matmul_equals_the_definition(M, K, N, transpose_a, transpose_b, batch):
    rng = np.random.default_rng(M * 100 + K * 10 + N)
    a, b = matmul_operands(rng, M, K, N, transpose_a, transpose_b, batch, np.float32)
    definition = np_kernels.matmul_naive(a.astype(np.float64), b.astype(np.float64), transpose_a,
                                         transpose_b)
    assert_close("C matmul", C.matmul(a, b, transpose_a, transpose_b), definition, FLOAT32_TOL)


@needs_c
@pytest.mark.parametrize("B, nh, Tq, Tk, hs, tile", ATTENTION_SHAPES)
def test_c_attention_equals_the_definition(B, nh, Tq, Tk, hs, tile):
    q, k, v = attention_inputs(np.random.default_rng(Tq * 100 + Tk), B, nh, Tq, Tk, hs,
                               np.float32)
    out, lse = C.attention_forward(q, k, v)          # the C kernel's own tiles (csrc/attention.c)
    ref_out, ref_lse = np_kernels.attention_naive(*(x.astype(np.float64) for x in (q, k, v)))
    assert_close("C attention out", out, ref_out, FLOAT32_TOL)
    assert_close("C attention lse", lse, ref_lse, FLOAT32_TOL)
