"""The C backend's quantized kernels (csrc/quant_i8.c, csrc/quant.c), beside c_kernels.py.

What it is: the wrappers of tinyllm.quant's products, each with the meaning of its NumPy
definition in tinyllm/quant/formats.py, checking dtype, shape and contiguity before C sees a
buffer (c_kernels.py's rules). The weight's arrays may be read-only (a memory-mapped
checkpoint): C only reads them.
  matmul_q8_0, matmul_q4_0   decoding: x quantized to int8 per block, integer dot products
                             (formats.matmul_q_i8), on a path chosen at run time (QUANT_PATHS)
  matmul_f32_q8_0, _q4_0     prefill: x kept float32, W widened a panel (or chunk) at a time
                             inside C's float32 GEMM (csrc/quant.c, csrc/skinny.h)
  dequantize_q8_0, _q4_0     W widened to float32 (formats.dequantize), bit for bit
  quantize_activations       the C quantization of x, for the bit-for-bit test

Not here: the layers that call them (tinyllm/quant/layers.py picks this module for the "c"
backend) or the library's loading (c_kernels.py). Read csrc/quant_i8.c next.
"""
import os

import numpy as np

from tinyllm.backends.c_kernels import QUANT_PATHS, _contiguous, _f32, _p, ffi, lib


def quant_path(wanted=None):
    """The path the quantized products run on: `wanted` (or $TINYLLM_QUANT_PATH) when this
    CPU has it, else the fastest it has."""
    wanted = wanted or os.environ.get("TINYLLM_QUANT_PATH")
    if wanted is not None and wanted not in QUANT_PATHS:
        raise ValueError(f"quantized matmul path {wanted!r}: choose one of {list(QUANT_PATHS)}")
    have = available_paths()
    return wanted if wanted in have else have[0]


def available_paths():
    """The QUANT_PATHS names this CPU runs as themselves, fastest first (the tests check each)."""
    return [n for n, v in QUANT_PATHS.items() if lib.quant_path(v) == v]


QUANT_PATH = quant_path()


def matmul_q8_0(x, q, scale, path=None):
    """As tinyllm.quant.formats.matmul_q_i8: x (M, K) float32 @ dequant(W)^T -> (M, N), W (N, K)
    as q int8 (N, K) (q4_0: uint8 (N, K / 2)) and fp16 scales (N, K / 32); on `path` (a
    QUANT_PATHS name; default QUANT_PATH)."""
    return _blocks("matmul", q, scale, 0, x, path)


def matmul_q4_0(x, q, scale, path=None):
    return _blocks("matmul", q, scale, 1, x, path)


def matmul_f32_q8_0(x, q, scale, path=None):
    """x (M, K) float32 @ dequant(W)^T -> (M, N), x unquantized: the float32 GEMM's numbers on
    W widened (as x @ formats.dequantize(W).T, to float32 rounding), W never held whole in
    float32; W as matmul_q8_0's, widened on `path`'s instructions (the bits are the same)."""
    return _blocks("matmul_f32", q, scale, 0, x, path)


def matmul_f32_q4_0(x, q, scale, path=None):
    return _blocks("matmul_f32", q, scale, 1, x, path)


def dequantize_q8_0(q, scale, path=None):
    """As tinyllm.quant.formats.dequantize, bit for bit on every path: W as float32 (N, K)."""
    return _blocks("dequantize", q, scale, 0, path=path)


def dequantize_q4_0(q, scale, path=None):
    return _blocks("dequantize", q, scale, 1, path=path)


def _blocks(kind, q, scale, q4, x=None, path=None):
    name, N, nb, K = f"{kind}_q{4 if q4 else 8}_0", q.shape[0], scale.shape[-1], 32 * scale.shape[-1]
    if x is not None:
        x = _f32(f"{name} x", x)
        if x.ndim != 2 or x.shape[1] != K:
            raise ValueError(f"{name}: x {x.shape} must be (M, {K}), a multiple of 32: the scale's {nb} x 32")
    for part, a, dtype, want in (("q", q, np.uint8 if q4 else np.int8, (N, K // 2 if q4 else K)),
                                 ("scale", scale, np.float16, (N, nb))):
        if a.dtype != dtype or a.shape != want:
            raise ValueError(f"{name}: {part} must be {np.dtype(dtype)} {want}, got {a.dtype} {a.shape}")
        _contiguous(f"{name} {part}", a)
    qp, sp = ffi.from_buffer(q), ffi.from_buffer("uint16_t[]", scale)
    out = np.empty((N, K) if x is None else (x.shape[0], N), np.float32)
    chosen = QUANT_PATHS[quant_path(path) if path else QUANT_PATH]
    if x is None:
        lib.dequantize_q(qp, sp, _p(out), N, K, q4, chosen)
    elif kind == "matmul_f32":
        if lib.matmul_q_f32(_p(x), qp, sp, _p(out), x.shape[0], N, K, q4, chosen):
            raise MemoryError(f"{name}: no memory for the weight's widened panels or chunks "
                              f"({N}, {K})")
    elif lib.matmul_q_i8(_p(x), qp, sp, _p(out), x.shape[0], N, K, q4, chosen):
        raise MemoryError(f"{name}: no memory for x quantized ({x.nbytes // 2:,} bytes)")
    return out


def quantize_activations(x, path=None):
    """As tinyllm.quant.formats.quantize_activations (the C twin, for the bit-for-bit test), on
    `path`'s instructions (portable C, or AVX2 for the vector paths)."""
    x = _f32("quantize_activations x", x)
    M, K = x.shape
    qx, dx = np.empty((M, K // 32, 32), np.int8), np.empty((M, K // 32), np.float32)
    lib.quantize_rows_q8(_p(x), ffi.from_buffer("int8_t[]", qx), _p(dx),
                         ffi.from_buffer("int32_t[]", np.empty(M * K // 4, np.int32)), M, K,
                         QUANT_PATHS[quant_path(path) if path else QUANT_PATH])
    return qx, dx
