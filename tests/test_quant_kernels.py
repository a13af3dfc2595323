"""The quantized matmul kernels of the C backend (csrc/quant.c) against their NumPy definition
(tinyllm.quant.formats.matmul_q) at awkward sizes, and QuantLinear on both backends.
Skipped when the C library is not built."""
import numpy as np
import pytest

from tinyllm.backends import using
from tinyllm.quant.formats import FORMATS, dequantize, matmul_q, quantize
from tinyllm.quant.layers import QuantLinear
from tinyllm.tensor import Tensor, no_grad
from tests.c_helpers import c_kernels_or_skip

C = c_kernels_or_skip()

# both compute each block's 32-term float32 dot product, scale it and sum over the blocks; only
# the order of the 32 terms differs (vector lanes): float32 rounding (6e-8) times a few terms
TOL = 2e-6


def case(fmt, M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.01, 2, size=(N, 1))
    return rng.standard_normal((M, K)).astype(np.float32), quantize(w.astype(np.float32), fmt)


def rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, N, K", [(1, 1, 32), (1, 37, 96), (2, 5, 160), (7, 129, 64),
                                     (16, 3, 32), (17, 33, 288), (45, 70, 1056)])
def test_kernel_equals_definition(fmt, M, N, K):
    x, blocks = case(fmt, M, N, K, seed=M * N)
    ours = getattr(C, f"matmul_{fmt}")(x, blocks.q, blocks.scale)
    assert rel_err(ours, matmul_q(x, blocks)) < TOL


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("N, K", [(1, 32), (37, 96), (1030, 160)])
def test_dequantize_equals_definition(fmt, N, K):
    _, blocks = case(fmt, 1, N, K, seed=N)
    # q * d is exact in float32 (an 8-bit integer times an fp16 scale): bit for bit
    assert np.array_equal(getattr(C, f"dequantize_{fmt}")(blocks.q, blocks.scale), dequantize(blocks))


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_scales_convert_exactly(fmt):
    # fp16 subnormal scales (weights ~1e-6) go through the C half -> float conversion's other branch
    x, blocks = case(fmt, 3, 9, 64)
    blocks.scale[:] = (blocks.scale.astype(np.float32) * 1e-5).astype(np.float16)
    assert (blocks.scale.astype(np.float32) < 6.1e-5).all()
    ours = getattr(C, f"matmul_{fmt}")(x, blocks.q, blocks.scale)
    assert rel_err(ours, matmul_q(x, blocks)) < TOL
    assert np.array_equal(getattr(C, f"dequantize_{fmt}")(blocks.q, blocks.scale), dequantize(blocks))


def test_kernel_refuses_bad_arguments():
    x, blocks = case("q8_0", 2, 4, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        C.matmul_q8_0(x[:, :40].copy(), blocks.q, blocks.scale)
    with pytest.raises(ValueError, match="scale must be float16"):
        C.matmul_q8_0(x, blocks.q, blocks.scale.astype(np.float32))
    with pytest.raises(ValueError, match=r"q must be int8 \(4, 64\)"):
        C.dequantize_q8_0(blocks.q[:, :32].copy(), blocks.scale)
    with pytest.raises(ValueError, match="q must be uint8"):
        C.matmul_q4_0(x, blocks.q, blocks.scale)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quant_linear_same_on_both_backends(fmt):
    # more rows of W than one dequantized chunk; 6 rows of x run the fused kernel, 40 the GEMM
    for M in (6, 40):
        x, blocks = case(fmt, M, 1500, 96)
        layer = QuantLinear(blocks)
        with no_grad():
            with using("numpy"):
                ref = layer(Tensor(x.reshape(2, M // 2, 96))).data
            with using("c"):
                ours = layer(Tensor(x.reshape(2, M // 2, 96))).data
        assert ours.shape == (2, M // 2, 1500)
        assert rel_err(ours, ref) < TOL
        assert rel_err(ref.reshape(M, -1), matmul_q(x, blocks)) < TOL
