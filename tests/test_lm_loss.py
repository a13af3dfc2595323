"""The lm head's fused loss (lm_loss.py) and the memory the backward walk gives back as it goes.

The fused op must give exactly ops.linear + ops.cross_entropy's loss, and their dx within
float32 round-off (the chunked matmuls may sum in another order: rtol 1e-5), over awkward
sizes that leave a partial last chunk, ignored rows and a chunk with no kept row.
"""
import gc
import weakref

import numpy as np
import pytest

from tinyllm import backends, lm_loss, ops
from tinyllm.gradcheck import gradcheck
from tinyllm.model import GPT, GPTConfig
from tinyllm.tensor import Tensor


def _case(rng, N=13, C=7, V=11):
    x = rng.standard_normal((1, N, C)).astype(np.float32)                # (B, T, C)
    w = rng.standard_normal((V, C)).astype(np.float32)                   # (V, C)
    t = rng.integers(0, V, (1, N))                                       # (B, T)
    t[0, 2:5] = -1                                                       # ignored rows, and with
    return x, w, t                                                       # 2-row chunks one is empty


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("trained", [False, True], ids=["frozen W", "trained W"])
def test_fused_loss_equals_linear_then_cross_entropy(monkeypatch, backend, trained):
    if backend == "c":
        pytest.importorskip("cffi")
        try:
            backends.set_backend("c")
        except backends.BackendUnavailable as e:
            pytest.skip(str(e))
    monkeypatch.setattr(lm_loss, "ROW_ELEMENTS", 2 * 11)                 # 2 rows per chunk
    x, w, t = _case(np.random.default_rng(0))
    results = []
    for fused in (True, False):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=trained)
        if fused:
            logits, loss = lm_loss.linear_cross_entropy(xt, wt, t)
        else:
            logits = ops.linear(xt, wt)
            loss = ops.cross_entropy(logits, t)
        loss.backward()
        results.append((loss.item(), logits.data, xt.grad, wt.grad))
    (loss_f, logits_f, dx_f, dw_f), (loss_u, logits_u, dx_u, dw_u) = results
    assert loss_f == loss_u
    np.testing.assert_array_equal(logits_f, logits_u)
    np.testing.assert_allclose(dx_f, dx_u, rtol=1e-5, atol=1e-7)
    assert (dw_f is None) == (not trained)
    if trained:
        np.testing.assert_array_equal(dw_f, dw_u)


def test_fused_loss_gradient_float64(monkeypatch):
    monkeypatch.setattr(lm_loss, "ROW_ELEMENTS", 3 * 5)                  # 3 rows per chunk
    rng = np.random.default_rng(1)
    frozen = Tensor(rng.standard_normal((5, 4)))                         # (V, C): no gradient
    t = np.array([[0, 4, -1, 2, 3, -1, 1]])                              # (B, T)
    gradcheck(lambda x: lm_loss.linear_cross_entropy(x, frozen, t)[1], [rng.standard_normal((1, 7, 4))])


def test_gpt_loss_with_a_frozen_head_is_the_unfused_one():
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = np.random.default_rng(2).integers(0, 50, (2, 8))
    model.lm_head.weight.requires_grad = False
    _, loss = model(idx, idx)
    h = model.hidden(idx)
    assert loss.item() == ops.cross_entropy(model.lm_head(h), idx).item()


def test_backward_frees_each_node_once_walked():
    """A node the backward has passed holds no memory while the rest of the walk runs."""
    seen = {}

    def backward(g):                                                     # runs after late's
        gc.collect()
        seen["late alive"] = probe() is not None
        return (g,)
    a = Tensor(np.ones(4), requires_grad=True)
    early = Tensor.from_op(a.data.copy(), (a,), backward, "probe")
    late = early * 2.0
    probe = weakref.ref(late)
    loss = late.sum()
    del late
    loss.backward()
    assert seen == {"late alive": False}
    np.testing.assert_array_equal(a.grad, np.full(4, 2.0))
