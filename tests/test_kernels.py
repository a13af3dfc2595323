"""The NumPy reference kernels against naive float64 formulas.

The reference kernels are tiled and fused (attention never builds the (T, T)
matrix), so here they are compared with the textbook formula computed in
float64 on whole matrices: numpy_kernels.attention_naive, the definition
(tests/test_naive_definitions.py holds matmul and the C backend to the naive
definitions too). Tolerance 1e-10 relative for float64 inputs (the two
differ only in summation order) and 1e-5 for float32 (~100 ulps of float32
accumulated over rows of a few hundred terms).
"""
import numpy as np
import pytest

from tinyllm.backends import numpy_kernels as K

rng = np.random.default_rng(0)


@pytest.mark.parametrize("B, nh, Tq, Tk, hs, tile", [
    (1, 1, 1, 1, 1, 128), (2, 3, 7, 7, 5, 4), (1, 2, 65, 65, 8, 16), (2, 1, 13, 63, 3, 8),
    (1, 1, 257, 257, 16, 128)])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_attention_forward_matches_naive(B, nh, Tq, Tk, hs, tile, dtype, rtol):
    q, k, v = (rng.standard_normal((B, nh, T, hs)).astype(dtype) for T in (Tq, Tk, Tk))
    out, lse = K.attention_forward(q, k, v, tile=tile)
    ref_out, ref_lse = K.attention_naive(*(x.astype(np.float64) for x in (q, k, v)))
    assert out.dtype == dtype and lse.shape == (B, nh, Tq)
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(lse, ref_lse, rtol=rtol, atol=rtol)


def test_attention_backward_independent_of_tile():
    q, k, v, dout = (rng.standard_normal((2, 2, 37, 8)) for _ in range(4))
    out, lse = K.attention_forward(q, k, v)
    ref = K.attention_backward(dout, q, k, v, out, lse, tile=128)
    tiled = K.attention_backward(dout, q, k, v, out, lse, tile=5)
    for a, b in zip(ref, tiled):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_softmax_rows_sum_to_one_and_survive_large_inputs():
    x = rng.standard_normal((7, 63)) * 1000
    y = K.softmax_forward(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)


def test_cross_entropy_matches_naive():
    logits = rng.standard_normal((9, 17))
    targets = np.array([0, 16, -1, 3, 3, -1, 5, 8, 1])
    loss, _ = K.cross_entropy_forward(logits, targets)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = targets != -1
    ref = -logp[np.nonzero(kept)[0], targets[kept]].mean()
    np.testing.assert_allclose(loss, ref, rtol=1e-12)


def test_embedding_backward_adds_repeated_rows():
    ids = np.array([[2, 2], [0, 2]])
    dout = rng.standard_normal((2, 2, 3))
    dw = K.embedding_backward(dout, ids, 4)
    np.testing.assert_allclose(dw[2], dout[0, 0] + dout[0, 1] + dout[1, 1])
    np.testing.assert_allclose(dw[1], 0.0)


def test_rmsnorm_matches_formula():
    x, w = rng.standard_normal((3, 5, 11)), rng.standard_normal(11)
    y, rstd = K.rmsnorm_forward(x, w, 1e-5)
    np.testing.assert_allclose(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * w, rtol=1e-12)


def test_silu_is_stable_for_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    y = K.silu_forward(x)
    assert np.all(np.isfinite(y)) and y[-1] == 1000.0 and y[0] == 0.0


def test_dropout_keeps_1_minus_p_scales_them_and_repeats_from_its_seed():
    x = np.ones(200_000, np.float32)
    y = K.dropout(x, 0.25, seed=7)
    kept = y != 0
    # 200k Bernoulli(0.75) draws: the kept fraction is within 4 standard deviations (0.004)
    assert abs(kept.mean() - 0.75) < 0.004
    np.testing.assert_array_equal(y[kept], np.float32(1 / 0.75))
    np.testing.assert_array_equal(K.dropout(x, 0.25, seed=7), y)          # a seed is a mask
    assert (K.dropout(x, 0.25, seed=8) != y).any()
    # neighbouring elements and seeds are independent: no visible correlation
    assert abs(np.corrcoef(kept[:-1], kept[1:])[0, 1]) < 0.01
    assert abs(np.corrcoef(kept, K.dropout(x, 0.25, seed=8) != 0)[0, 1]) < 0.01
    assert (K.dropout(x, 0.0, seed=1) == x).all()
