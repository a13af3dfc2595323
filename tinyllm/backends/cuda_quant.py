"""The CUDA backend's quantized kernels (csrc/cuda/quant.cu), beside cuda_kernels.py.

What it is: a quantized weight's blocks copied to the GPU once (DeviceBlocks), and the
wrappers of the products, each with the meaning of its NumPy definition in
tinyllm/quant/formats.py and of its C twin in c_quant.py:
  matmul_q               decoding (M <= 16 rows of x): x quantized to int8 per block on the
                         GPU, integer dot products (formats.matmul_q_i8)
  dequantize             the weight (or rows of it) widened to float32 on the GPU, for a
                         prefill's GEMM (formats.dequantize)
  quantize_activations   the GPU's quantization of x, for the bit-for-bit test
Device arrays hold floats (cuda_array.py), so the integer and fp16 bytes travel in float32
buffers, padded to whole words, and the kernels receive their addresses typed as bytes.

Not here: the layers that call them (tinyllm/quant/layers.py picks this module for the
"cuda" backend). Read csrc/cuda/quant.cu next.
"""
import numpy as np

from tinyllm.backends.cuda_array import DeviceArray
from tinyllm.backends.cuda_kernels import _f32
from tinyllm.backends.cuda_runtime import check, ffi, lib

QUANT_MAX_ROWS = 16   # as quant.cu's: rows of x one matmul_q takes


def _to_device(a):
    """The bytes of the NumPy array a on the GPU, in a float32 buffer of whole words."""
    a = np.ascontiguousarray(a)
    out = DeviceArray(((a.nbytes + 3) // 4,))
    check(lib.copy_to_device(out.raw, ffi.from_buffer(a), a.nbytes))
    return out


class DeviceBlocks:
    """formats.Blocks on the GPU: fmt, shape (N, K), q and scale as device bytes."""

    def __init__(self, blocks):
        self.fmt, self.shape = blocks.fmt, blocks.shape
        self.q, self.scale = _to_device(blocks.q), _to_device(blocks.scale)


def _quantize(x, name):
    x = _f32(f"{name} x", x)
    if x.ndim != 2 or x.shape[1] % 32:
        raise ValueError(f"{name}: x {x.shape} must be (M, K) with K a multiple of 32")
    M, K = x.shape
    qx, dx = DeviceArray(((M * K + 3) // 4,)), DeviceArray((M, K // 32))
    check(lib.quantize_rows_q8(x.ptr, ffi.cast("int8_t *", qx.raw), dx.ptr, M, K))
    return qx, dx


def quantize_activations(x):
    """As formats.quantize_activations: (qx int8 (M, K / 32, 32), dx float32 (M, K / 32)), on the host."""
    qx, dx = _quantize(x, "quantize_activations")
    M, K = x.shape
    return qx.numpy().view(np.int8)[:M * K].reshape(M, K // 32, 32), dx.numpy()


def matmul_q(x, dev):
    """As formats.matmul_q_i8: x (M, K) DeviceArray @ dequant(W)^T -> (M, N), M <= 16."""
    N, K = dev.shape
    if x.ndim != 2 or x.shape[1] != K or not 1 <= x.shape[0] <= QUANT_MAX_ROWS:
        raise ValueError(f"matmul_q: x {x.shape} must be (M, {K}) with 1 <= M <= {QUANT_MAX_ROWS}")
    qx, dx = _quantize(x, "matmul_q")
    out = DeviceArray((x.shape[0], N))
    check(lib.matmul_q_i8(ffi.cast("int8_t *", qx.raw), dx.ptr, dev.q.raw,
                          ffi.cast("uint16_t *", dev.scale.raw), out.ptr, x.shape[0], N, K,
                          int(dev.fmt == "q4_0")))
    return out


def dequantize(dev, start=0, stop=None):
    """As formats.dequantize: rows [start, stop) of W as a float32 DeviceArray (rows, K)."""
    N, K = dev.shape
    stop = N if stop is None else stop
    if not 0 <= start <= stop <= N:
        raise ValueError(f"dequantize: rows [{start}, {stop}) outside the weight's {N}")
    row_bytes = K // 2 if dev.fmt == "q4_0" else K
    out = DeviceArray((stop - start, K))
    check(lib.dequantize_q(dev.q.raw + start * row_bytes,
                           ffi.cast("uint16_t *", dev.scale.raw + start * (K // 32) * 2),
                           out.ptr, stop - start, K, int(dev.fmt == "q4_0")))
    return out
