"""The decode kernels of the C backend (csrc/gemv.c, csrc/attention_decode.c) against
their NumPy definitions at awkward sizes, in float64, by max|ours - ref| / max|ref|.
The CUDA twins are tests/test_cuda_decode.py. Skipped when the C library is not built."""
import numpy as np
import pytest

from tinyllm.backends import numpy_kernels as K
from tests.c_helpers import c_kernels_or_skip

C = c_kernels_or_skip()

# float32 rounding (6e-8) grown by dot products of up to a few thousand terms, summed in a
# different order than float64's (vector lanes, then a tree)
TOL = 2e-5


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def rel_err(ours, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


@pytest.mark.parametrize("M", list(range(1, 17)))
def test_gemv_equals_numpy_for_every_row_count(M):
    rng = np.random.default_rng(M)
    for N, Kd in ((1, 1), (3, 5), (7, 17), (33, 64), (130, 257), (65, 1000)):
        x, w = randn(rng, M, Kd), randn(rng, N, Kd)
        err = rel_err(C.gemv(x, w), K.gemv(x.astype(np.float64), w.astype(np.float64)))
        assert err <= TOL, f"gemv M={M} N={N} K={Kd}: relative error {err:.3g}"


def test_matmul_sends_skinny_products_to_gemv_and_others_to_the_gemm():
    rng = np.random.default_rng(0)
    for M in (1, 16, 17, 40):
        x, w = randn(rng, M, 96), randn(rng, 50, 96)
        assert rel_err(C.matmul(x, w, transpose_b=True), x.astype(np.float64) @ w.T) <= TOL


@pytest.mark.parametrize("hs", [1, 3, 16, 33, 64, 128])
def test_attention_decode_reads_the_cache_in_place(hs):
    rng = np.random.default_rng(hs)
    B, nh, Tmax = 2, 3, 300                 # past one 256-key chunk of the online softmax
    k_cache, v_cache = randn(rng, B, nh, Tmax, hs), randn(rng, B, nh, Tmax, hs)
    for Tq, Tk in ((1, 1), (1, 2), (1, 257), (4, 9), (16, 16), (16, 300), (7, 100)):
        q = randn(rng, B, nh, Tq, hs)
        ours = C.attention_decode(q, k_cache, v_cache, Tk)
        ref = K.attention_decode(*(a.astype(np.float64) for a in (q, k_cache, v_cache)), Tk)
        err = rel_err(ours, ref)
        assert err <= TOL, f"attention_decode hs={hs} Tq={Tq} Tk={Tk}: relative error {err:.3g}"


def test_attention_decode_equals_the_flash_kernel_on_the_prefix():
    rng = np.random.default_rng(1)
    q, k, v = randn(rng, 1, 2, 5, 8), randn(rng, 1, 2, 40, 8), randn(rng, 1, 2, 40, 8)
    want = K.attention_forward(q, k[:, :, :23], v[:, :, :23])[0]
    np.testing.assert_allclose(C.attention_decode(q, k, v, 23), want, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused_before_c():
    q, cache = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 8, 4), np.float32)
    with pytest.raises(ValueError, match="Tq=3 <= Tk=2"):
        C.attention_decode(q, cache, cache, 2)
    with pytest.raises(ValueError, match="Tk=9 <= cache length 8"):
        C.attention_decode(q, cache, cache, 9)
    with pytest.raises(ValueError, match="v_cache"):
        C.attention_decode(q, cache, cache[:, :1].copy(), 4)
    with pytest.raises(ValueError, match="gemv"):
        C.gemv(np.zeros((1, 3), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="float32"):
        C.gemv(np.zeros((1, 3)), np.zeros((4, 3), np.float32))


def test_the_decode_kernels_equal_the_naive_definitions():
    """gemv is matmul_naive(x, w^T); attention_decode is attention_naive on the cache's prefix."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 7)), rng.standard_normal((5, 7))
    want = K.matmul_naive(x, w, transpose_b=True)
    np.testing.assert_allclose(K.gemv(x, w), want, rtol=1e-12, atol=1e-12)
    assert rel_err(C.gemv(x.astype(np.float32), w.astype(np.float32)), want) <= 1e-6
    q, kc, vc = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 9, 4)), rng.standard_normal((1, 2, 9, 4))
    want = K.attention_naive(q, kc[:, :, :6], vc[:, :, :6])[0]
    np.testing.assert_allclose(K.attention_decode(q, kc, vc, 6), want, rtol=1e-12, atol=1e-12)
    f32 = [a.astype(np.float32) for a in (q, kc, vc)]
    assert rel_err(C.attention_decode(*f32, 6), want) <= 1e-5
