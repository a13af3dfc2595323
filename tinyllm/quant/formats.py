"""The quantized weight formats, defined in NumPy: q8_0 and q4_0 (llama.cpp's block layouts).

A weight W (N, K) is cut into blocks of BLOCK = 32 values along its input dimension K (each
row's K / 32 blocks); every block keeps one fp16 scale d and 32 small integers q, and stands
for the values q * d:
  q8_0  d = absmax / 127, q = round(w / d) in [-127, 127], stored int8 (N, K): 8.5 bits a weight
  q4_0  d = m / -8 where m is the block's value of largest magnitude (its sign kept), so m maps
        to -8 exactly; q = round(w / d) in [-8, 7], stored as q + 8 in 4 bits, two to a byte:
        byte j of a block holds value j in its low nibble and value j + 16 in its high one
        (uint8 (N, K / 2)): 4.5 bits a weight
Rounding is round half to even (np.rint), the rule IEEE arithmetic and C's lrintf use; the
scale is rounded to fp16 first and the integers computed against that rounded scale, so
dequantize(quantize(dequantize(b))) == dequantize(b) exactly (test_quant.py checks both).
Error bounds: |w - q d| <= |d| / 2 for q8_0; for q4_0 the same, except a value of the
opposite sign to m and of about m's size, which clips at +7 and errs by at most |d|.
K not a multiple of 32 is refused (no padding): the error names the tensor.

Decoding multiplies by x quantized too (llama.cpp's q8_0 x q8_0 dot): quantize_activations
cuts each row of x into blocks of 32 with a float32 scale dx = absmax / 127 and int8
qx = rint(x / dx) (float32 division, half to even); matmul_q_i8 is then, per block, the exact
integer dot product S of qx with the weight's integers, and out = sum of (dw * dx) * S in
float32. Its error against matmul_q is x's rounding alone: |x - qx dx| <= dx / 2 per value, so
|matmul_q_i8 - matmul_q| <= sum over blocks of dx / 2 * sum |q dw| (activation_error_bound).

Not here: the layers that hold blocks (layers.py) or the fast kernels (csrc/quant.c).
Read layers.py next.
"""
from dataclasses import dataclass

import numpy as np

BLOCK = 32
FORMATS = ("q8_0", "q4_0")
_QMAX = {"q8_0": 127, "q4_0": 8}          # d = (signed) extreme / this
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Blocks:
    """A quantized (N, K) weight: q (int8 (N, K) or uint8 (N, K / 2)) and scale fp16 (N, K / 32)."""
    fmt: str
    q: np.ndarray
    scale: np.ndarray

    @property
    def shape(self):
        N, width = self.q.shape
        return (N, width * 2 if self.fmt == "q4_0" else width)

    @property
    def nbytes(self):
        return self.q.nbytes + self.scale.nbytes

    def matmul(self, x):
        """x (M, K) @ self^T by the decoding product, matmul_q_i8 (the NumPy backend's
        decode_block multiplies a quantized weight by this, knowing no format)."""
        return matmul_q_i8(x, self)


def check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantization format {fmt!r}; choose one of {FORMATS}")


def quantize(w, fmt, name="weight"):
    """Blocks of the float (N, K) array w in format fmt ("q8_0" or "q4_0")."""
    check_format(fmt)
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] % BLOCK:
        raise ValueError(f"cannot quantize {name} of shape {w.shape}: it must be 2-D with its "
                         f"last dimension a multiple of {BLOCK}; keep this tensor in float32 "
                         f"or choose a model width that is a multiple of {BLOCK}")
    N, K = w.shape
    x = w.astype(np.float64).reshape(N, K // BLOCK, BLOCK)         # (N, nb, 32)
    if fmt == "q8_0":
        extreme = np.abs(x).max(axis=2)                            # (N, nb)
    else:   # the signed value of largest magnitude, the first of ties
        extreme = np.take_along_axis(x, np.abs(x).argmax(axis=2)[..., None], axis=2)[..., 0]
    if np.abs(extreme).max(initial=0.0) / _QMAX[fmt] > _FP16_MAX:
        raise ValueError(f"cannot quantize {name}: a value of {np.abs(extreme).max():.3g} "
                         f"needs a scale beyond fp16's range; the weights are broken")
    d = (extreme / (_QMAX[fmt] if fmt == "q8_0" else -_QMAX[fmt])).astype(np.float16)
    d64 = d.astype(np.float64)[..., None]
    ratio = np.divide(x, d64, out=np.zeros_like(x), where=d64 != 0)
    if fmt == "q8_0":
        q = np.clip(np.rint(ratio), -127, 127).astype(np.int8).reshape(N, K)
    else:
        u = (np.clip(np.rint(ratio), -8, 7) + 8).astype(np.uint8)   # (N, nb, 32) in 0..15
        q = (u[..., :BLOCK // 2] | (u[..., BLOCK // 2:] << 4)).reshape(N, K // 2)
    return Blocks(fmt, q, d)


def integers(blocks):
    """The signed integers of the blocks as int8 (N, nb, 32) (q4_0's unpacked, 8 subtracted)."""
    N, K = blocks.shape
    if blocks.fmt == "q8_0":
        return blocks.q.reshape(N, K // BLOCK, BLOCK)
    packed = blocks.q.reshape(N, K // BLOCK, BLOCK // 2)
    low, high = packed & 0x0F, packed >> 4
    return np.concatenate([low, high], axis=2).astype(np.int8) - 8


def dequantize(blocks, rows=slice(None)):
    """The float32 (N, K) weight the blocks stand for (or its `rows`): q * d."""
    sub = Blocks(blocks.fmt, blocks.q[rows], blocks.scale[rows])
    N, K = sub.shape
    values = integers(sub).astype(np.float32) * sub.scale.astype(np.float32)[..., None]
    return values.reshape(N, K)


def _check_width(x, blocks):
    if x.shape[1] != blocks.shape[1]:
        raise ValueError(f"matmul_q: x has {x.shape[1]} features but the weight {blocks.shape} "
                         f"expects {blocks.shape[1]}")


def matmul_q(x, blocks):
    """x (M, K) @ dequantize(blocks)^T -> (M, N), block by block: the definition the kernels
    follow. Per block b, the float32 dot product of x's 32 values with the integers, times
    d_b, summed over the blocks; the weight never exists in float32."""
    _check_width(x, blocks)
    M, K = x.shape
    xb = x.astype(np.float32).reshape(M, K // BLOCK, BLOCK)        # (M, nb, 32)
    q = integers(blocks).astype(np.float32)                        # (N, nb, 32)
    partial = np.einsum("mbk,nbk->mnb", xb, q)                     # (M, N, nb)
    return (partial * blocks.scale.astype(np.float32)[None]).sum(axis=2, dtype=np.float32)


def quantize_activations(x):
    """x (M, K) float32 -> (qx int8 (M, K / 32, 32), dx float32 (M, K / 32)), as the module
    docstring says; an all-zero block gets dx = 0 and qx = 0."""
    M, K = x.shape
    xb = np.asarray(x, np.float32).reshape(M, K // BLOCK, BLOCK)
    dx = np.abs(xb).max(axis=2) / np.float32(127)                  # (M, nb) float32
    ratio = np.divide(xb, dx[..., None], out=np.zeros_like(xb), where=dx[..., None] != 0)
    return np.rint(ratio).astype(np.int8), dx


def matmul_q_i8(x, blocks):
    """x (M, K) @ dequantize(blocks)^T -> (M, N) with x quantized per block (the decoding
    product; csrc/quant_i8.c follows it): sum over blocks of (dw * dx) * S, S exact."""
    _check_width(x, blocks)
    qx, dx = quantize_activations(x)                               # (M, nb, 32), (M, nb)
    S = np.einsum("mbk,nbk->mnb", qx.astype(np.int32), integers(blocks).astype(np.int32))
    scale = blocks.scale.astype(np.float32)[None] * dx[:, None]    # (M, N, nb)
    return (scale * S.astype(np.float32)).sum(axis=2, dtype=np.float32)


def activation_error_bound(x, blocks):
    """(M, N): the most matmul_q_i8 may differ from matmul_q by x's rounding (module docstring)."""
    _, dx = quantize_activations(x)
    w = np.abs(integers(blocks).astype(np.float64)).sum(axis=2) * blocks.scale.astype(np.float64)
    return (dx.astype(np.float64) / 2) @ np.abs(w).T
