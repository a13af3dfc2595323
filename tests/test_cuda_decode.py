"""The CUDA decode kernels (csrc/cuda/decode.cu: gemv, attention_decode) and the KV cache's
kv_write against their NumPy definitions, at awkward sizes; skipped without a CUDA backend
(`make test` runs them on the CPU emulation too). The C twins are tests/test_generate_kernels.py."""
import numpy as np
import pytest

from tests.cuda_helpers import cuda, relative_error  # noqa: F401  (a fixture)
from tinyllm.backends import numpy_kernels as K

# float32 dot products of up to a thousand terms in another order than float64's
TOL = 2e-5


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_gemv_for_every_row_count(cuda):
    rng = np.random.default_rng(0)
    sizes = ((1, 1), (7, 33), (65, 130)) if cuda.is_emulated() else ((1, 1), (7, 33), (1000, 769))
    for M in range(1, 17):
        for N, Kd in sizes:
            x, w = randn(rng, M, Kd), randn(rng, N, Kd)
            got = cuda.gemv(cuda.to_device(x), cuda.to_device(w)).numpy()
            err = relative_error(got, K.gemv(x.astype(np.float64), w.astype(np.float64)))
            assert err <= TOL, f"gemv M={M} N={N} K={Kd}: relative error {err:.3g}"
    x, w = randn(rng, 3, 20), randn(rng, 9, 20)
    got = cuda.matmul(cuda.to_device(x), cuda.to_device(w), transpose_b=True).numpy()
    assert relative_error(got, x.astype(np.float64) @ w.T) <= TOL
    with pytest.raises(ValueError, match="gemv"):
        cuda.gemv(cuda.to_device(randn(rng, 17, 4)), cuda.to_device(randn(rng, 3, 4)))


@pytest.mark.parametrize("hs", [1, 5, 32, 64, 128, 200])
def test_attention_decode_reads_the_cache_in_place(cuda, hs):
    rng = np.random.default_rng(hs)
    B, nh, Tmax = 2, 2, 270                     # past one 256-key chunk
    k_cache, v_cache = randn(rng, B, nh, Tmax, hs), randn(rng, B, nh, Tmax, hs)
    kd, vd = cuda.to_device(k_cache), cuda.to_device(v_cache)
    for Tq, Tk in ((1, 1), (1, 3), (1, 270), (5, 9), (16, 16), (16, 261)):
        q = randn(rng, B, nh, Tq, hs)
        got = cuda.attention_decode(cuda.to_device(q), kd, vd, Tk).numpy()
        ref = K.attention_decode(*(a.astype(np.float64) for a in (q, k_cache, v_cache)), Tk)
        err = relative_error(got, ref)
        assert err <= TOL, f"attention_decode hs={hs} Tq={Tq} Tk={Tk}: relative error {err:.3g}"


def test_kv_write_and_its_checks(cuda):
    rng = np.random.default_rng(1)
    cache, x = np.zeros((2, 3, 10, 4), np.float32), randn(rng, 2, 3, 4, 4)
    d = cuda.to_device(cache)
    cuda.kv_write(d, cuda.to_device(x), 5)
    K.kv_write(cache, x, 5)
    np.testing.assert_array_equal(d.numpy(), cache)
    with pytest.raises(ValueError, match="outside"):
        cuda.kv_write(d, cuda.to_device(x), 7)
    with pytest.raises(ValueError, match="Tk=11"):
        cuda.attention_decode(cuda.to_device(randn(rng, 2, 3, 1, 4)), d, d, 11)


@pytest.mark.parametrize("inference", [False, True])
def test_cached_logits_equal_uncached_on_the_device(cuda, inference):
    from tests.test_generate import test_logits_with_the_cache_equal_those_without_at_every_position as check
    check("cuda", inference)   # inference: CUDA has no fused block, so layer by layer either way
