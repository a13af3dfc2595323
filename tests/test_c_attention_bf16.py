"""Attention in mixed precision (attention_forward_bf16 / attention_backward_bf16) against its
NumPy definition, on every bf16 path of the C backend.

What it checks:
  - the definition (numpy_kernels.attention_forward_bf16) is what its docstring says: on one
    tile, s = bf16(q) bf16(k)^T / sqrt(hs), p = exp(s - max), out = bf16(p) bf16(v) / sum(p);
  - the C kernels on each path of c_kernels.BF16_PATHS, forced, at awkward sizes: one key, odd
    head sizes, hs past the bf16 tile GEMM's 128-deep blocks, several 64-row tiles, Tq < Tk, and
    B * nh below the thread count (the backward's two-pass split). With AMX tiles (amx_bf16 where
    AMX exists; tests/test_c_matmul_amx.py runs them through the emulation on any CPU) or
    vdpbf16ps (avx512_bf16, and amx_bf16 on a CPU with AVX512-BF16 but no AMX) against the
    definition; otherwise (the fp32 path, every path on a CPU without either) the kernels are the
    float32 ones, bit for bit: there rounding bought no speed and cost 1.1-1.2x the time
    (csrc/attention.c's bf16_precision);
  - that the bf16 path is taken where it exists (the numbers differ from fp32's, within bf16's
    error) and that a path bit the CPU may lack (AMX) passed straight to C falls back instead of
    crashing.
The float64 gradient checks of the float32 definition stay in tests/test_gradcheck.py: rounding
has no derivative, and the bf16 backward is the float32 one with its products' operands rounded.

Tolerances, elementwise and derived, not fitted. The reference runs with the C kernel's tile
(64 rows), so both round p against the same running max. What may still differ: float32 sums in
another order and C's exp (~1e-7 relative: the slack, 1e-5 of the largest value), and, through
those, an operand the two sides round to neighbouring bfloat16s: at most one bf16 step, 2^-7 of
it. Hence |ours - ref| <= 2^-7 * (|A| @ |B|) + slack for each product c = A @ B whose operand
A may round differently (p for out and dv, ds for dq and dk), in float64 from the definition.
Such a step needs the two float32 values to straddle a rounding midpoint, so it is rare: at
most RARE (5 %) of the elements may differ by more than the slack (0.4 % was the most seen).
Rounding p or ds in another place than the definition does (or not at all) fails that at once.

Read csrc/attention.c for the kernel, tests/test_c_matmul_bf16.py for the bf16 GEMM's own checks.
"""
import math

import numpy as np
import pytest

from tests.c_helpers import c_kernels_or_skip
from tinyllm import ops
from tinyllm.backends import numpy_kernels as ref_kernels
from tinyllm.tensor import Tensor

c_kernels = c_kernels_or_skip()

C_TILE = 64                  # csrc/attention.c's TILE: the reference rounds p where C does
STEP = 2.0**-7               # one bfloat16 step, relative (8 significant bits)
SLACK = 1e-5                 # float32 sums and exp, relative to the largest value
RARE = 0.05                  # the share of elements that may exceed the slack (module docstring)
PATHS = list(c_kernels.BF16_PATHS)


def rounds(path):
    """Whether attention_*_bf16 on `path` multiplies in bf16 here, not as the float32 kernel:
    on amx_bf16 where the CPU has AMX (tiles), else on avx512_bf16 or amx_bf16 where it has
    AVX512-BF16 (vdpbf16ps)."""
    lib, features = c_kernels.lib, c_kernels.FEATURES
    if path == "fp32":
        return False
    if path == "amx_bf16" and features & lib.CPU_AMX_BF16:
        return True
    return bool(features & lib.CPU_AVX512_BF16)
# (B, nh, Tq, Tk, hs)
SHAPES = [(1, 1, 1, 1, 1), (2, 3, 67, 67, 24), (1, 2, 130, 130, 64), (1, 1, 5, 77, 100),
          (3, 1, 64, 64, 130), (1, 1, 200, 200, 33)]


def inputs(shape, seed=0):
    B, nh, Tq, Tk, hs = shape
    rng = np.random.default_rng(seed)
    q, dout = (rng.standard_normal((B, nh, Tq, hs), dtype=np.float32) for _ in range(2))
    k, v = (rng.standard_normal((B, nh, Tk, hs), dtype=np.float32) for _ in range(2))
    return q, k, v, dout


def magnitudes(q, k, v, dout):
    """The bounds' |A| @ |B| in float64, from the rounded operands: (P |V|, P^T |dO|, |dS| |K|,
    |dS|^T |Q|), P the softmax and dS = P * (dO V^T - D) / sqrt(hs), as attention_backward."""
    q, k, v, dout = (ref_kernels.bf16_round(x).astype(np.float64) for x in (q, k, v, dout))
    Tq, Tk, hs = q.shape[2], k.shape[2], q.shape[3]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(hs)                     # (B, nh, Tq, Tk)
    s = np.where(np.arange(Tk) <= np.arange(Tk - Tq, Tk)[:, None], s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)                                 # (B, nh, Tq, Tk)
    out = p @ v
    ds = np.abs(p * (dout @ np.swapaxes(v, -1, -2) - np.sum(dout * out, -1, keepdims=True)))
    ds /= math.sqrt(hs)
    return (p @ np.abs(v), np.swapaxes(p, -1, -2) @ np.abs(dout), ds @ np.abs(k),
            np.swapaxes(ds, -1, -2) @ np.abs(q))


def assert_within(ours, ref, magnitude, what):
    assert ours.shape == ref.shape and ours.dtype == np.float32, f"{what}: {ours.shape} {ours.dtype}"
    bound = STEP * magnitude + SLACK * max(np.abs(ref).max(), 1e-30)
    excess = np.abs(ours - ref) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (f"{what}: |ours - ref| = {abs(ours[worst] - ref[worst]):.3g} at "
                                f"{worst} over the bound {bound[worst]:.3g}")
    off = np.mean(np.abs(ours - ref) > SLACK * max(np.abs(ref).max(), 1e-30))
    assert off <= RARE, f"{what}: {off:.1%} of the elements differ by more than float32's slack"


def test_definition_on_one_tile():
    q, k, v, _ = inputs((2, 2, 9, 9, 6))
    r = ref_kernels.bf16_round
    s = r(q) @ np.swapaxes(r(k), -1, -2) / np.float32(math.sqrt(6))    # (B, nh, T, T)
    s = np.where(np.tril(np.ones((9, 9), bool)), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    want = (r(p) @ r(v)) / p.sum(axis=-1, keepdims=True)
    out, lse = ref_kernels.attention_forward_bf16(q, k, v)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lse, (m + np.log(p.sum(axis=-1, keepdims=True)))[..., 0], rtol=1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_c_matches_the_definition(shape, path):
    q, k, v, dout = inputs(shape)
    if not rounds(path):                     # the float32 kernels (tested against NumPy's)
        out32 = c_kernels.attention_forward(q, k, v)
        for got, want in zip((*c_kernels.attention_forward_bf16(q, k, v, path=path),
                              *c_kernels.attention_backward_bf16(dout, q, k, v, *out32, path=path)),
                             (*out32, *c_kernels.attention_backward(dout, q, k, v, *out32))):
            np.testing.assert_array_equal(got, want)
        return
    ref = definition(q, k, v, dout)
    out, lse = c_kernels.attention_forward_bf16(q, k, v, path=path)
    grads = c_kernels.attention_backward_bf16(dout, q, k, v, ref[0], ref[1], path=path)
    assert_matches(q, k, v, dout, (out, lse, *grads), ref, path)


def definition(q, k, v, dout):
    """(out, lse, dq, dk, dv) of the NumPy definition with the C kernel's tile; the backward
    from the definition's own out and lse, which the C backward is given too."""
    out, lse = ref_kernels.attention_forward_bf16(q, k, v, tile=C_TILE)
    return (out, lse, *ref_kernels.attention_backward_bf16(dout, q, k, v, out, lse, tile=C_TILE))


def assert_matches(q, k, v, dout, ours, ref, what):
    """ours and ref: (out, lse, dq, dk, dv), within the module docstring's bounds."""
    pv, ptdo, dsk, dstq = magnitudes(q, k, v, dout)
    magnitude = (pv, np.zeros_like(ref[1]), dsk, dstq, ptdo)   # lse: float32 throughout
    for got, want, m, name in zip(ours, ref, magnitude, ("out", "lse", "dq", "dk", "dv")):
        assert_within(got, want, m, f"{what} {name}")


def test_bf16_differs_from_fp32_within_its_rounding():
    """The bf16 kernels really round (so they are the ones running) and stay near float32's:
    the largest difference is a few bf16 steps of the largest value, nowhere near O(1)."""
    path = next((p for p in (c_kernels.BF16_PATH, "avx512_bf16") if rounds(p)), None)
    if path is None:
        pytest.skip("no AVX512-BF16 here: attention runs the float32 kernels on every path")
    q, k, v, dout = inputs((2, 3, 67, 67, 24), seed=1)
    fp32 = c_kernels.attention_forward(q, k, v)
    bf16 = c_kernels.attention_forward_bf16(q, k, v, path=path)
    grads32 = c_kernels.attention_backward(dout, q, k, v, *fp32)
    grads16 = c_kernels.attention_backward_bf16(dout, q, k, v, *fp32, path=path)
    for got, want, name in zip((bf16[0], *grads16), (fp32[0], *grads32), ("out", "dq", "dk", "dv")):
        err = np.abs(got - want).max() / np.abs(want).max()
        assert 0 < err < 8 * STEP, f"{name}: bf16 vs fp32 {err:.3g}"


def test_a_path_bit_the_cpu_may_lack_falls_back():
    q, k, v, dout = inputs((1, 2, 70, 70, 16))
    want = c_kernels.attention_forward_bf16(q, k, v)
    lib, ffi, p = c_kernels.lib, c_kernels.ffi, c_kernels._p
    out, lse = np.empty_like(q), np.empty(q.shape[:3], np.float32)
    lib.attention_forward_bf16(p(q), p(k), p(v), p(out), p(lse), 1, 2, 70, 70, 16, lib.CPU_AMX_BF16)
    np.testing.assert_array_equal(out, want[0])      # AMX: the AVX512-BF16 kernel, or emulation


def test_the_op_takes_the_dtype_and_checks_it():
    qkv = Tensor(inputs((1, 1, 1, 12, 8))[1].reshape(1, 12, 8)[..., :6].copy())  # (B, T, 3C)
    with c_kernels_backend():
        y = ops.causal_self_attention(qkv, 1, dtype="bf16").data
        want = c_kernels.merge_heads([c_kernels.attention_forward_bf16(
            *c_kernels.split_heads(qkv.data, 3, 1))[0]])
        np.testing.assert_array_equal(y, want)
        with pytest.raises(ValueError, match="choose one of"):
            ops.causal_self_attention(qkv, 1, dtype="fp16")


def c_kernels_backend():
    from tinyllm import backends
    return backends.using("c")
