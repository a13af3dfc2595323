"""The CUDA quantized kernels (csrc/cuda/quant.cu via backends/cuda_quant.py) against their
NumPy definitions (tinyllm.quant.formats) at awkward sizes, and a quantized GPT on the CUDA
backend against NumPy; skipped without a CUDA backend (`make test` runs them on the CPU
emulation too). The C twins are tests/test_quant_kernels.py."""
import numpy as np
import pytest

from tests.cuda_helpers import cuda, relative_error  # noqa: F401  (a fixture)
from tinyllm import backends
from tinyllm.model import GPT, preset
from tinyllm.quant.formats import FORMATS, dequantize, matmul_q_i8, quantize, quantize_activations
from tinyllm.quant.layers import quantize_model
from tinyllm.tensor import no_grad

# the same exact integer block products times the same float32 scales, summed over the blocks
# in another order (lanes over blocks, then a warp sum): a few float32 roundings
TOL = 2e-6


def case(fmt, M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.01, 2, size=(N, 1))
    x = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.1, 3, size=(M, 1))
    return x.astype(np.float32), quantize(w.astype(np.float32), fmt)


@pytest.fixture
def cq(cuda):
    from tinyllm.backends import cuda_quant
    return cuda_quant


def test_activation_quantization_is_bit_for_bit(cuda, cq):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 96)).astype(np.float32) * 5
    x[1, 32:64] = 0.0                                   # an all-zero block: dx = 0, qx = 0
    x[2, 64:96] = 0.0
    x[2, 64:68] = [127.0, 2.5, -3.5, 0.5]               # dx = 1: ties to even
    qx, dx = cq.quantize_activations(cuda.to_device(x))
    ref_qx, ref_dx = quantize_activations(x)
    assert np.array_equal(qx, ref_qx) and np.array_equal(dx, ref_dx)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, N, K", [(1, 1, 32), (1, 37, 96), (3, 9, 1056), (16, 5, 160),
                                     (7, 40, 64)])
def test_matmul_q_equals_definition(cuda, cq, fmt, M, N, K):
    x, blocks = case(fmt, M, N, K, seed=M * N + K)
    got = cq.matmul_q(cuda.to_device(x), cq.DeviceBlocks(blocks)).numpy()
    assert relative_error(got, matmul_q_i8(x, blocks)) <= TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_is_bit_for_bit(cuda, cq, fmt):
    _, blocks = case(fmt, 1, 13, 96, seed=2)
    dev = cq.DeviceBlocks(blocks)
    assert np.array_equal(cq.dequantize(dev).numpy(), dequantize(blocks))
    assert np.array_equal(cq.dequantize(dev, 3, 8).numpy(), dequantize(blocks, slice(3, 8)))
    with pytest.raises(ValueError, match="outside"):
        cq.dequantize(dev, 5, 14)


def test_matmul_q_refuses_bad_arguments(cuda, cq):
    x, blocks = case("q8_0", 17, 4, 64)
    with pytest.raises(ValueError, match="M <= 16"):
        cq.matmul_q(cuda.to_device(x), cq.DeviceBlocks(blocks))
    with pytest.raises(ValueError, match=r"\(M, 64\)"):
        cq.matmul_q(cuda.to_device(x[:2, :32].copy()), cq.DeviceBlocks(blocks))


@pytest.mark.parametrize("recipe", ["q8_0", "q4_mixed"])
def test_quantized_gpt_on_cuda_matches_numpy(cuda, recipe):
    model = GPT(preset("tiny", n_embd=32)).eval()
    quantize_model(model, recipe)
    for idx in (np.array([[1, 2, 3]]), np.arange(18).reshape(2, 9)):
        with no_grad():   # 3 rows of x: the int8-x product; 18: the widened weight's GEMM
            with backends.using("numpy"):
                ref = model(idx)[0].data
            with backends.using("cuda"):
                model.to("cuda")
                got = model(idx)[0].data.numpy()
                model.to("numpy")
        assert relative_error(got, ref) <= 1e-5
