"""The quantized kernels of the C backend (backends/c_quant.py: csrc/quant_i8.c, csrc/quant.c)
against their NumPy definitions (tinyllm.quant.formats) at awkward sizes, on every path this
CPU has, and QuantLinear on both backends. Skipped when the C library is not built."""
import numpy as np
import pytest

from tinyllm.backends import using
from tinyllm.quant.formats import (FORMATS, activation_error_bound, dequantize, matmul_q,
                                   matmul_q_i8, quantize, quantize_activations)
from tinyllm.quant.layers import QuantLinear
from tinyllm.tensor import Tensor, no_grad
from tests.c_helpers import c_kernels_or_skip

c_kernels_or_skip()
from tinyllm.backends import c_quant as C  # noqa: E402 (after the skip)

PATHS = C.available_paths()
# both sum the same exact integer block products S times the same float32 scale dw * dx over
# the K / 32 blocks; only the order of that float32 sum differs (and C fuses the multiply-add):
# a few roundings of 6e-8 relative to the largest output, for up to 33 blocks here
TOL = 2e-6
SIZES = [(1, 1, 32), (1, 37, 96), (2, 5, 160), (7, 129, 64), (16, 3, 32), (5, 33, 224),
         (3, 70, 1056), (4, 9, 608), (1, 2100, 1024)]   # the last is threaded (>= 2^21 weights)


def case(fmt, M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.01, 2, size=(N, 1))
    x = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.1, 3, size=(M, 1))
    return x.astype(np.float32), quantize(w.astype(np.float32), fmt)


def rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_this_cpu_has_its_paths():
    assert PATHS[-1] == "portable" and set(PATHS) <= set(C.QUANT_PATHS)
    assert C.QUANT_PATH == PATHS[0] or C.QUANT_PATH in PATHS   # $TINYLLM_QUANT_PATH may pick
    assert C.quant_path("avx512_vnni") in PATHS   # a path the CPU lacks runs as one it has
    with pytest.raises(ValueError, match="choose one of"):
        C.quant_path("sse9")


@pytest.mark.parametrize("path", PATHS)
def test_activation_quantization_is_bit_for_bit(path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 96)).astype(np.float32) * 5
    x[1, 32:64] = 0.0                                   # an all-zero block: dx = 0, qx = 0
    x[2, :32] = np.arange(32) - 15.5                    # dx = 16.5 / 127: no exact ties ...
    x[2, 64:96] = 0.0
    x[2, 64:68] = [127.0, 2.5, -3.5, 0.5]               # ... here dx = 1: ties to even
    qx, dx = quantize_activations(x)
    assert list(qx[2, 2, :4]) == [127, 2, -4, 0] and dx[1, 1] == 0 and not qx[1, 1].any()
    cq, cd = C.quantize_activations(x, path=path)
    assert np.array_equal(cq, qx) and np.array_equal(cd, dx)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("M, N, K", SIZES)
def test_kernel_equals_definition(path, fmt, M, N, K):
    x, blocks = case(fmt, M, N, K, seed=M * N + K)
    ours = getattr(C, f"matmul_{fmt}")(x, blocks.q, blocks.scale, path=path)
    assert rel_err(ours, matmul_q_i8(x, blocks)) < TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_activations_err_within_their_bound(fmt):
    # the only difference from float32 activations is x's rounding, |x - qx dx| <= dx / 2
    x, blocks = case(fmt, 6, 50, 256, seed=5)
    diff = np.abs(matmul_q_i8(x, blocks).astype(np.float64) - matmul_q(x, blocks))
    bound = activation_error_bound(x, blocks)
    assert (diff <= bound + 1e-5 * np.abs(matmul_q(x, blocks))).all()
    assert 0 < rel_err(matmul_q_i8(x, blocks), matmul_q(x, blocks)) < 0.02   # about 1/254 of x


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("N, K", [(1, 32), (37, 96), (1030, 160)])
def test_dequantize_equals_definition(path, fmt, N, K):
    _, blocks = case(fmt, 1, N, K, seed=N)
    # q * d is exact in float32 (an 8-bit integer times an fp16 scale): bit for bit, every path
    ours = getattr(C, f"dequantize_{fmt}")(blocks.q, blocks.scale, path=path)
    assert np.array_equal(ours, dequantize(blocks))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_scales_convert_exactly(path, fmt):
    # fp16 subnormal scales (weights ~1e-6) go through the portable half -> float's other branch
    x, blocks = case(fmt, 3, 9, 64)
    blocks.scale[:] = (blocks.scale.astype(np.float32) * 1e-5).astype(np.float16)
    assert (blocks.scale.astype(np.float32) < 6.1e-5).all()
    ours = getattr(C, f"matmul_{fmt}")(x, blocks.q, blocks.scale, path=path)
    assert rel_err(ours, matmul_q_i8(x, blocks)) < TOL
    ours = getattr(C, f"dequantize_{fmt}")(blocks.q, blocks.scale, path=path)
    assert np.array_equal(ours, dequantize(blocks))


def test_read_only_weights_are_fine():
    # a memory-mapped checkpoint hands the kernels read-only arrays: C only reads them
    x, blocks = case("q4_0", 2, 7, 64)
    blocks.q.flags.writeable = blocks.scale.flags.writeable = False
    assert rel_err(C.matmul_q4_0(x, blocks.q, blocks.scale), matmul_q_i8(x, blocks)) < TOL


def _against_a_guard_page(a):
    """A copy of a that ends where an unreadable page begins: a read past its end faults."""
    import ctypes
    import mmap
    page = mmap.PAGESIZE
    size = -(-a.nbytes // page) * page
    buf = mmap.mmap(-1, size + page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + size, page, 0) == 0, "mprotect failed"   # PROT_NONE
    out = np.frombuffer(buf, np.uint8, a.nbytes, size - a.nbytes).view(a.dtype).reshape(a.shape)
    out[...] = a
    return out, buf


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("K", [96, 224, 288])
def test_no_read_past_the_last_row(path, fmt, K):
    # the vector paths read a row's blocks in pairs and groups; a row whose block count is odd
    # or not a multiple of 8 must stop at its last one, even where nothing readable follows
    # (the prefill's widening too: a last panel of fewer than 6 rows reads only those)
    x, blocks = case(fmt, 2, 5, K, seed=K)
    q, keep_q = _against_a_guard_page(blocks.q)
    scale, keep_scale = _against_a_guard_page(blocks.scale)
    ours = getattr(C, f"matmul_{fmt}")(x, q, scale, path=path)
    assert rel_err(ours, matmul_q_i8(x, blocks)) < TOL
    ours = getattr(C, f"matmul_f32_{fmt}")(x, q, scale, path=path)   # the prefill's widening
    assert rel_err(ours, matmul_q(x, blocks)) < 1e-5   # a GEMM's sum, not block by block
    del q, scale, ours
    keep_q.close(), keep_scale.close()


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
    with pytest.raises(ValueError, match="choose one of"):
        C.matmul_q8_0(x, blocks.q, blocks.scale, path="avx3")


@pytest.mark.parametrize("fmt", FORMATS)
def test_quant_linear_same_on_both_backends(fmt):
    # 6 rows of x: a decoding step (int8 x, integer dot products), 40 rows: the GEMM on more
    # rows of W than one dequantized chunk (float32 x)
    for M, definition in ((6, matmul_q_i8), (40, matmul_q)):
        x, blocks = case(fmt, M, 1500, 96)
        layer = QuantLinear(blocks)
        with no_grad():
            with using("numpy"):
                ref = layer(Tensor(x.reshape(2, M // 2, 96))).data
            with using("c"):
                ours = layer(Tensor(x.reshape(2, M // 2, 96))).data
        assert ours.shape == (2, M // 2, 1500)
        assert rel_err(ours, ref) < TOL
        assert rel_err(ref.reshape(M, -1), definition(x, blocks)) < TOL

