"""The C prefill product on a quantized weight (backends/c_quant.matmul_f32_q8_0 / _q4_0:
csrc/quant.c's matmul_q_f32, csrc/skinny.h's widened panels) against x @ dequantize(W).T, at
sizes around the skinny path's edges (M <= 256 on AVX2 builds, the chunked GEMM past it; N not
a multiple of the 6-row panel; K of 1 to 9 blocks), on every widening path this CPU has.
Skipped when the C library is not built."""
import numpy as np
import pytest

from tinyllm.quant.formats import FORMATS, dequantize, quantize
from tests.c_helpers import c_kernels_or_skip

c_kernels = c_kernels_or_skip()
from tinyllm.backends import c_quant as C  # noqa: E402 (after the skip)

PATHS = C.available_paths()
# every M on both sides of SKINNY_MAX_ROWS (256) and of a 16-row tile, each with two N and a K
SIZES = [(M, N, K) for i, M in enumerate((17, 31, 64, 255, 256, 257, 300))
         for N, K in (((37, 32), (101, 288)) if i % 2 else ((101, 96), (37, 288)))]
# float32 sums of K products in another order than float64's: each of the K roundings is at
# most 2^-24 of the running sum, and random ones grow as sqrt(K), so 4 eps sqrt(K) of the
# sum of |x| |w| holds with room (the largest seen here is under 1 eps sqrt(K))
EPS = 2.0 ** -24


def case(fmt, M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.01, 2, size=(N, 1))
    x = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.1, 3, size=(M, 1))
    return x.astype(np.float32), quantize(w.astype(np.float32), fmt)


def prefill(fmt, x, blocks, path=None):
    return getattr(C, f"matmul_f32_{fmt}")(x, blocks.q, blocks.scale, path=path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, N, K", SIZES)
def test_prefill_equals_the_float32_gemm(fmt, M, N, K):
    x, blocks = case(fmt, M, N, K, seed=M * N + K)
    w = dequantize(blocks)                                                  # (N, K)
    ours = prefill(fmt, x, blocks)                                          # (M, N)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    bound = 4 * EPS * np.sqrt(K) * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T)
    assert ours.shape == (M, N) and (np.abs(ours - ref) <= bound).all()
    # the same micro-kernel in the same order as the float32 GEMM on the widened W: the same bits
    assert np.array_equal(ours, c_kernels.matmul(x, w, transpose_b=True))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M", [20, 300])
def test_every_widening_path_gives_the_same_bits(path, fmt, M):
    # a panel widened on any path is formats.dequantize's bits, so the products are too
    x, blocks = case(fmt, M, 43, 160, seed=M)
    assert np.array_equal(prefill(fmt, x, blocks, path), prefill(fmt, x, blocks, "portable"))


def test_threaded_and_empty_products():
    # 64 x 1030 x 256 is over the GEMM's threading threshold: panels go to both threads
    x, blocks = case("q4_0", 64, 1030, 256, seed=1)
    assert np.array_equal(prefill("q4_0", x, blocks),
                          c_kernels.matmul(x, dequantize(blocks), transpose_b=True))
    assert prefill("q8_0", x[:0], quantize(np.ones((5, 256), np.float32), "q8_0")).shape == (0, 5)


def test_prefill_refuses_bad_arguments():
    x, blocks = case("q8_0", 20, 4, 64)
    with pytest.raises(ValueError, match=r"x \(20, 40\) must be \(M, 64\)"):
        C.matmul_f32_q8_0(x[:, :40].copy(), blocks.q, blocks.scale)
    with pytest.raises(TypeError, match="float32"):
        C.matmul_f32_q8_0(x.astype(np.float64), blocks.q, blocks.scale)
    with pytest.raises(ValueError, match="q must be uint8"):
        C.matmul_f32_q4_0(x, blocks.q, blocks.scale)
    with pytest.raises(ValueError, match="choose one of"):
        C.matmul_f32_q8_0(x, blocks.q, blocks.scale, path="avx3")
