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


def _use(backend):
    if backend == "c":
        pytest.importorskip("cffi")
        try:
            backends.set_backend("c")
        except backends.BackendUnavailable as e:
            pytest.skip(str(e))


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("trained", [False, True], ids=["frozen W", "trained W"])
def test_fused_loss_equals_linear_then_cross_entropy(monkeypatch, backend, trained):
    _use(backend)
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
        loss.backward(np.asarray(0.5, np.float32))                       # as grad-accum scales it
        results.append((loss.item(), logits.data, xt.grad, wt.grad))
    (loss_f, logits_f, dx_f, dw_f), (loss_u, logits_u, dx_u, dw_u) = results
    assert loss_f == loss_u
    np.testing.assert_array_equal(logits_f, logits_u)
    np.testing.assert_allclose(dx_f, dx_u, rtol=1e-5, atol=1e-7)
    assert (dw_f is None) == (not trained)
    if trained:
        np.testing.assert_array_equal(dw_f, dw_u)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_frozen_head_loss_without_logits_equals_the_unfused_one(monkeypatch, backend):
    """return_logits False: the forward goes by chunks too. The loss is a sum of chunk means
    (rtol 1e-6: float32 round-off of the regrouped sum), dx as above; no logits come back."""
    _use(backend)
    monkeypatch.setattr(lm_loss, "ROW_ELEMENTS", 2 * 11)                 # 2 rows per chunk
    x, w, t = _case(np.random.default_rng(0))
    grads, losses = [], []
    for fused in (True, False):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w)
        if fused:
            logits, loss = lm_loss.linear_cross_entropy(xt, wt, t, return_logits=False)
            assert logits is None
        else:
            loss = ops.cross_entropy(ops.linear(xt, wt), t)
        loss.backward(np.asarray(0.5, np.float32))
        grads.append(xt.grad)
        losses.append(loss.item())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_frozen_head_loss_without_logits_makes_no_logits_array(monkeypatch):
    """Its forward and backward never hold an (N, V) array: the traced peak (a chunk and the
    kernels' temporaries of it) stays below half of one."""
    import tracemalloc
    monkeypatch.setattr(lm_loss, "ROW_ELEMENTS", 4 * 4096)               # 4 rows per chunk
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((1, 64, 8)).astype(np.float32), requires_grad=True)
    w, t = Tensor(rng.standard_normal((4096, 8)).astype(np.float32)), rng.integers(0, 4096, (1, 64))
    tracemalloc.start()
    try:
        _, loss = lm_loss.linear_cross_entropy(x, w, t, return_logits=False)
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 4096 * 4 / 2, f"traced peak {peak} bytes: an (N, V) array was made"


@pytest.mark.parametrize("return_logits", [True, False])
def test_fused_loss_gradient_float64(monkeypatch, return_logits):
    monkeypatch.setattr(lm_loss, "ROW_ELEMENTS", 3 * 5)                  # 3 rows per chunk
    rng = np.random.default_rng(1)
    frozen = Tensor(rng.standard_normal((5, 4)))                         # (V, C): no gradient
    t = np.array([[0, 4, -1, 2, 3, -1, 1]])                              # (B, T)
    gradcheck(lambda x: lm_loss.linear_cross_entropy(x, frozen, t, return_logits=return_logits)[1],
              [rng.standard_normal((1, 7, 4))])


def test_gpt_loss_with_a_frozen_head_is_the_unfused_one():
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = np.random.default_rng(2).integers(0, 50, (2, 8))
    model.lm_head.weight.requires_grad = False
    _, loss = model(idx, idx)
    logits, chunked = model(idx, idx, return_logits=False)               # the Trainer's step
    h = model.hidden(idx)
    assert loss.item() == ops.cross_entropy(model.lm_head(h), idx).item()
    assert logits is None and abs(chunked.item() - loss.item()) <= 1e-6 * loss.item()


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
