"""The CUDA flash attention (csrc/cuda/attention.cu) against numpy_kernels in float64.

What it checks: the forward (out, lse) and the backward (dq, dk, dv) on float32 inputs of
awkward sizes: T of 1, primes and tile edges +- 1 (the kernels take 64 rows per tile, 32 at
hs > 64), Tq < Tk (decoding with a KV cache: query i sits at position Tk - Tq + i), head sizes
1, 8, 13, 16, 32, 64, 100 and 128 (the kernels pad hs to 16, 32, 64 or 128 with zeros), large
scores, that the backward repeats bit for bit (no atomics), no queries at all, the error
for a head size past 128, and attention_qkv_* (the fused projection's layout, these kernels
composed with split_heads and merge_heads).

Tolerances, as max|ours - ref| / max|ref| per array:
  - forward, 1e-5: out and lse are float32 sums of up to T terms (u = 6e-8 per rounding).
  - backward, 1e-4 (as for the C kernels, tests/test_c_kernels.py): dS = P * (dP - D) subtracts
    two float32 sums (of hs and of up to T terms) that nearly cancel, and dq, dk then sum T such
    differences, so the error is ~10x the forward's, measured against the largest gradient.
Measured on the CPU emulation: below 4e-7 forward and 6e-7 backward on unit-variance inputs;
3e-6 and 2e-5 with the large scores.
On the CPU emulation (is_emulated()) the sizes are small, as every GPU thread runs on the CPU.
"""
import numpy as np
import pytest

from tests.cuda_helpers import cuda, relative_error  # noqa: F401  (cuda is a fixture)
from tinyllm.backends import numpy_kernels as K

FORWARD_TOL = 1e-5    # see the module docstring
BACKWARD_TOL = 1e-4

# (B, nh, Tq, Tk, hs)
EMULATED_SHAPES = [
    (1, 1, 1, 1, 1), (1, 2, 7, 7, 8), (2, 1, 63, 63, 13), (1, 1, 65, 65, 16),
    (1, 1, 1, 67, 64), (1, 2, 30, 69, 32), (1, 1, 33, 33, 128), (1, 1, 20, 41, 100),
    (2, 2, 17, 17, 64)]
GPU_SHAPES = EMULATED_SHAPES + [
    (2, 3, 130, 130, 8), (1, 1, 130, 130, 64), (3, 1, 1, 130, 64), (1, 2, 7, 65, 1),
    (1, 1, 65, 130, 64), (2, 1, 63, 130, 8), (1, 2, 65, 65, 100), (2, 4, 257, 257, 128),
    (1, 2, 200, 513, 64), (4, 6, 256, 256, 64)]


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def assert_close(name, ours, ref, tol):
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, reference {ref.shape}"
    assert np.all(np.isfinite(ours)), f"{name}: {np.sum(~np.isfinite(ours))} non-finite values"
    if ref.size:
        err = relative_error(ours, ref)
        assert err <= tol, f"{name}: max|ours - ref| / max|ref| = {err:.3g} > {tol:g}"


def run(cuda, q, k, v, dout):
    """The CUDA forward and backward on host arrays; host results."""
    dq, dk, dv, do = (cuda.to_device(x) for x in (q, k, v, dout))
    out, lse = cuda.attention_forward(dq, dk, dv)
    grads = cuda.attention_backward(do, dq, dk, dv, out, lse)
    return out.numpy(), lse.numpy(), [g.numpy() for g in grads]


def check(cuda, q, k, v, dout, what):
    out, lse, grads = run(cuda, q, k, v, dout)
    ref_out, ref_lse = K.attention_forward(*f64(q, k, v))
    assert_close(f"{what} out", out, ref_out, FORWARD_TOL)
    assert_close(f"{what} lse", lse, ref_lse, FORWARD_TOL)
    # the reference backward from our own out and lse, as the training step runs it
    ref_grads = K.attention_backward(*f64(dout, q, k, v, out, lse))
    for name, ours, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(f"{what} {name}", ours, ref, BACKWARD_TOL)


def test_attention_matches_numpy(cuda):
    for B, nh, Tq, Tk, hs in EMULATED_SHAPES if cuda.is_emulated() else GPU_SHAPES:
        rng = np.random.default_rng([B, nh, Tq, Tk, hs])
        q, dout = randn(rng, B, nh, Tq, hs), randn(rng, B, nh, Tq, hs)
        k, v = randn(rng, B, nh, Tk, hs), randn(rng, B, nh, Tk, hs)
        check(cuda, q, k, v, dout, f"(B, nh, Tq, Tk, hs) = {(B, nh, Tq, Tk, hs)}")


def test_attention_large_scores_stay_finite(cuda):
    # scaled scores of +-100s: most exponentials underflow to 0, none may overflow
    rng = np.random.default_rng(1)
    q, k, v, dout = (randn(rng, 1, 2, 70, 16, scale=s) for s in (10.0, 10.0, 1.0, 1.0))
    check(cuda, q, k, v, dout, "large scores")


def test_attention_backward_repeats_bit_for_bit(cuda):
    # dq has its own pass instead of atomics, so every sum runs in a fixed order
    rng = np.random.default_rng(2)
    q, k, v, dout = (randn(rng, 1, 2, 40, 16) for _ in range(4))
    first, second = run(cuda, q, k, v, dout), run(cuda, q, k, v, dout)
    for a, b in zip(first[2], second[2]):
        np.testing.assert_array_equal(a, b)


def test_attention_without_queries(cuda):
    # Tq = 0 (an empty prompt chunk): no output, and no key gets any gradient
    rng = np.random.default_rng(3)
    q, dout = randn(rng, 1, 2, 0, 8), randn(rng, 1, 2, 0, 8)
    k, v = randn(rng, 1, 2, 5, 8), randn(rng, 1, 2, 5, 8)
    out, lse, (dq, dk, dv) = run(cuda, q, k, v, dout)
    assert out.shape == (1, 2, 0, 8) and lse.shape == (1, 2, 0) and dq.shape == (1, 2, 0, 8)
    np.testing.assert_array_equal(dk, np.zeros_like(k))
    np.testing.assert_array_equal(dv, np.zeros_like(v))


def test_attention_rejects_head_sizes_past_128(cuda):
    x = cuda.to_device(np.zeros((1, 1, 2, 129), np.float32))
    with pytest.raises(cuda.CudaError, match=r"attention_forward: head size hs = 129"):
        cuda.attention_forward(x, x, x)
    lse = cuda.to_device(np.zeros((1, 1, 2), np.float32))
    with pytest.raises(cuda.CudaError, match=r"attention_backward: head size hs = 129"):
        cuda.attention_backward(x, x, x, x, x, lse)


def test_attention_on_the_fused_layout_matches_numpy(cuda):
    """attention_qkv_forward / _backward: split_heads, the kernels and merge_heads on the device."""
    for B, T, nh, hs in [(1, 1, 1, 1), (2, 7, 3, 8), (1, 33, 2, 16)]:
        rng = np.random.default_rng(B * T + nh)
        qkv, dout = randn(rng, B, T, 3 * nh * hs), randn(rng, B, T, nh * hs)
        out, lse = cuda.attention_qkv_forward(cuda.to_device(qkv), nh)
        dqkv = cuda.attention_qkv_backward(cuda.to_device(dout), cuda.to_device(qkv), out, lse, nh)
        out, lse, dqkv = out.numpy(), lse.numpy(), dqkv.numpy()
        ref_out, ref_lse = K.attention_qkv_forward(qkv.astype(np.float64), nh)
        ref_dqkv = K.attention_qkv_backward(*(a.astype(np.float64) for a in (dout, qkv, out, lse)), nh)
        assert relative_error(out, ref_out) <= FORWARD_TOL
        assert relative_error(lse, ref_lse) <= FORWARD_TOL
        assert relative_error(dqkv, ref_dqkv) <= BACKWARD_TOL
