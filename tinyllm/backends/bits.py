"""The bit-level rules every backend must reproduce exactly: bfloat16 rounding, the dropout hash.

    bf16_bits(np.float32(1 + 2**-8)) -> 0x3F80      (a tie: to the even neighbour, 1.0)
    bf16_round(x)                     -> x rounded to bfloat16, still a float32 array
    dropout_keep(n, seed, threshold)  -> which of n elements a dropout with this seed keeps

They are not kernels but what kernels must agree on to the bit: C's bf16
packing (csrc/matmul_bf16.c) rounds as bf16_bits does, and every backend's
dropout keeps the elements dropout_keep keeps. numpy_kernels.py builds its
matmul_bf16 and dropout on them; read it for the kernels.
"""
import math

import numpy as np


def bf16_bits(x):
    """The bfloat16 bits (uint16) of float32 x, as the C kernels round (bit for bit).

    bfloat16 is float32's top half (sign, 8 exponent bits, 7 mantissa bits). Rounding
    is to nearest, ties to even: add 0x7FFF, plus 1 when the kept half is odd, then
    keep the top 16 bits. 1 + 2^-8 lies halfway between the bfloat16s 1 and 1 + 2^-7:
      bits 0x3F808000 -> 0x3F80 (the even one), 0x3F808001 -> 0x3F81 (above: up).
    Subnormals become a zero of their sign and NaN stays a quiet NaN, as the
    hardware's vcvtne2ps2bf16 does; the largest floats round up to infinity.
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    subnormal = (u & 0x7F800000) == 0
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    bits = np.where(subnormal, (u >> 16) & 0x8000, np.where(nan, (u >> 16) | 0x40, rounded))
    return bits.astype(np.uint16)


def bf16_round(x):
    """x rounded to bfloat16, given back in x's dtype (every bfloat16 is a float32)."""
    x = np.asarray(x)
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32).astype(x.dtype, copy=False)


def dropout_constants(p):
    """(scale, threshold): kept values are multiplied by scale = 1/(1-p); an element is kept
    when the top 24 bits of its hash are >= threshold, i.e. with probability 1 - p."""
    return 1.0 / (1.0 - p), math.ceil(p * (1 << 24))


def dropout_keep(n, seed, threshold):
    """(n,) booleans: element i is kept when splitmix64(seed + (i + 1) * golden) >> 40 >= threshold."""
    z = np.uint64(seed) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)) >= threshold
