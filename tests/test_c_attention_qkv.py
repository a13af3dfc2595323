"""Attention on the fused projection's layout (attention_qkv_forward / attention_qkv_backward)
against its definition, on the C backend's every path.

The definition (numpy_attention.qkv_attention) is split_heads, the attention kernel and
merge_heads composed; C's kernels read q, k and v in place from qkv (B, T, 3C) and write the
merged output and dqkv directly, with no head copies. What it checks:
  - C, on each path of c_kernels.BF16_PATHS (fp32 and the bf16 ones, forced): bit for bit the
    C composition split_heads + attention_*(_bf16) + merge_heads. Only the strides differ, not
    one product or sum, so nothing may round differently; any off-by-a-row or wrong-head
    indexing shows at once. Sizes: one position, odd head sizes, hs past the 64-dimension
    chunks and the bf16 GEMM's blocks, several 64-row tiles, and B * nh below the thread count
    (the backward's two-pass split) as well as above it;
  - C against the NumPy definition in float64 (fp32 path): the tolerances of
    tests/test_c_kernels.py's attention, for the same reasons (1e-5 forward: float32 sums of up
    to T terms; 1e-4 backward: dS = P * (dP - D) nearly cancels);
  - the wrapper's checks: a qkv whose width is not 3 * n_head * hs, and mismatched dout / lse.
CUDA's attention_qkv_* (its kernels composed) are checked in tests/test_cuda_attention.py.
"""
import numpy as np
import pytest

from tests.c_helpers import c_kernels_or_skip
from tests.cuda_helpers import relative_error
from tinyllm.backends import numpy_kernels as K

C = c_kernels_or_skip()

FORWARD_TOL, BACKWARD_TOL = 1e-5, 1e-4   # see the module docstring
# (B, T, nh, hs)
SHAPES = [(1, 1, 1, 1), (2, 7, 3, 8), (1, 65, 1, 64), (2, 67, 3, 24), (1, 130, 2, 64),
          (3, 64, 1, 130), (1, 200, 1, 33), (4, 70, 2, 16)]


def inputs(B, T, nh, hs, seed=0):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, T, 3 * nh * hs), dtype=np.float32)
    dout = rng.standard_normal((B, T, nh * hs), dtype=np.float32)
    return qkv, dout


def composed(qkv, dout, nh, path):
    """The C composition: split_heads, the (B, nh, T, hs) kernels on `path`, merge_heads."""
    q, k, v = C.split_heads(qkv, 3, nh)
    forward = C.attention_forward if path == "fp32" else (lambda *a: C.attention_forward_bf16(*a, path))
    backward = (C.attention_backward if path == "fp32"
                else (lambda *a: C.attention_backward_bf16(*a, path)))
    out, lse = forward(q, k, v)
    grads = backward(C.split_heads(dout, 1, nh)[0], q, k, v, out, lse)
    return C.merge_heads([out]), lse, C.merge_heads(list(grads))


def fused(qkv, dout, nh, path):
    if path == "fp32":
        out, lse = C.attention_qkv_forward(qkv, nh)
        return out, lse, C.attention_qkv_backward(dout, qkv, out, lse, nh)
    out, lse = C.attention_qkv_forward_bf16(qkv, nh, path)
    return out, lse, C.attention_qkv_backward_bf16(dout, qkv, out, lse, nh, path)


@pytest.mark.parametrize("path", list(C.BF16_PATHS))
@pytest.mark.parametrize("B,T,nh,hs", SHAPES)
def test_fused_layout_equals_the_head_copies_bit_for_bit(B, T, nh, hs, path):
    qkv, dout = inputs(B, T, nh, hs)
    for name, ours, ref in zip(("out", "lse", "dqkv"), fused(qkv, dout, nh, path),
                               composed(qkv, dout, nh, path)):
        assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, expected {ref.shape}"
        mismatched = np.flatnonzero(ours != ref)
        assert mismatched.size == 0, (f"{name} on {path}: {mismatched.size} of {ours.size} values "
                                      f"differ, the first at flat index {mismatched[0]}")


@pytest.mark.parametrize("B,T,nh,hs", SHAPES)
def test_fused_layout_matches_the_numpy_definition(B, T, nh, hs):
    qkv, dout = inputs(B, T, nh, hs, seed=1)
    out, lse, dqkv = fused(qkv, dout, nh, "fp32")
    ref_out, ref_lse = K.attention_qkv_forward(qkv.astype(np.float64), nh)
    ref_dqkv = K.attention_qkv_backward(*(a.astype(np.float64) for a in (dout, qkv, out, lse)), nh)
    for name, ours, ref, tol in (("out", out, ref_out, FORWARD_TOL), ("lse", lse, ref_lse, FORWARD_TOL),
                                 ("dqkv", dqkv, ref_dqkv, BACKWARD_TOL)):
        assert ours.shape == ref.shape
        assert relative_error(ours, ref) <= tol, f"{name}: {relative_error(ours, ref):.3g} > {tol:g}"


def test_wrapper_rejects_mismatched_shapes():
    qkv, dout = inputs(2, 5, 2, 4)
    with pytest.raises(ValueError, match="do not split into 3 parts of 5 heads"):
        C.attention_qkv_forward(qkv, 5)
    out, lse = C.attention_qkv_forward(qkv, 2)
    with pytest.raises(ValueError, match="attention_qkv dout"):
        C.attention_qkv_backward(dout[:, :4], qkv, out, lse, 2)
    with pytest.raises(ValueError, match="attention_qkv lse"):
        C.attention_qkv_backward(dout, qkv, out, lse[:1], 2)

