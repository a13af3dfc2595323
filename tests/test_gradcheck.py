"""Float64 central-difference gradient checks of every differentiable op.

Tolerance: rtol 1e-6 (plus atol 1e-8) per element. In float64 with h = 1e-6
central differences are accurate to ~1e-10 relative, so a correct backward
passes with a wide margin and a wrong one (a missing term, a swapped axis)
fails by orders of magnitude.
"""
import numpy as np
import pytest

from tinyllm import ops
from tinyllm.backends import numpy_attention, numpy_kernels
from tinyllm.gradcheck import assert_grad_close, gradcheck, numerical_gradient
from tinyllm.tensor import Tensor

rng = np.random.default_rng(1234)


def rand(*shape, positive=False):
    x = rng.standard_normal(shape)
    return np.abs(x) + 0.5 if positive else x


@pytest.mark.parametrize("name, f, shapes", [
    ("add broadcast", lambda a, b: a + b, [(3, 4), (4,)]),
    ("add scalar", lambda a: 2.5 + a, [(5,)]),
    ("sub broadcast", lambda a, b: a - b, [(2, 3, 4), (3, 1)]),
    ("rsub", lambda a: 1.0 - a, [(4,)]),
    ("mul broadcast", lambda a, b: a * b, [(3, 1, 5), (4, 1)]),
    ("div", lambda a, b: a / b, [(3, 4), (3, 4)]),
    ("rdiv", lambda a: 2.0 / a, [(6,)]),
    ("neg", lambda a: -a, [(7,)]),
    ("pow", lambda a: a ** 3, [(2, 3)]),
    ("matmul 2d", lambda a, b: a @ b, [(3, 5), (5, 4)]),
    ("matmul batched", lambda a, b: a @ b, [(2, 3, 5), (2, 5, 4)]),
    ("matmul broadcast", lambda a, b: a @ b, [(2, 3, 5), (5, 4)]),
    ("sum all", lambda a: a.sum(), [(3, 4)]),
    ("sum axis keepdims", lambda a: a.sum(axis=1, keepdims=True), [(3, 4, 2)]),
    ("sum axes", lambda a: a.sum(axis=(0, 2)), [(3, 4, 2)]),
    ("mean axis", lambda a: a.mean(axis=-1), [(3, 5)]),
    ("reshape", lambda a: a.reshape(6, 2) * np.arange(12.0).reshape(6, 2), [(3, 4)]),
    ("transpose", lambda a: a.transpose(0, 2), [(2, 3, 4)]),
    ("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    ("getitem slice", lambda a: a[1:, ::2], [(4, 5)]),
    ("getitem fancy repeats", lambda a: a[np.array([0, 2, 0, 0])], [(3, 4)]),
    ("concat", lambda a, b: ops.concat([a, b, a], axis=1), [(2, 3), (2, 1)]),
    ("split", lambda a: ops.split(a, [1, 3], axis=1)[1] * 2 + ops.split(a, 2, axis=0)[0].sum(), [(4, 4)]),
    ("exp", lambda a: a.exp(), [(3, 4)]),
    ("log", lambda a: a.log(), [(3, 4)]),
    ("tanh", lambda a: a.tanh(), [(3, 4)]),
    ("relu", lambda a: a.relu(), [(3, 4)]),
    ("silu", ops.silu, [(3, 4)]),
    ("gelu", ops.gelu, [(3, 4)]),
    ("softmax last", ops.softmax, [(3, 5)]),
    ("softmax axis 0", lambda a: ops.softmax(a, axis=0), [(4, 3)]),
    ("log_softmax", lambda a: ops.log_softmax(a, axis=-1), [(3, 5)]),
    ("rmsnorm", lambda x, w: ops.rmsnorm(x, w), [(2, 3, 6), (6,)]),
    ("layernorm", lambda x, w, b: ops.layernorm(x, w, b), [(2, 3, 6), (6,), (6,)]),
    ("linear", lambda x, w: ops.linear(x, w), [(2, 3, 5), (4, 5)]),
    ("linear bias", lambda x, w, b: ops.linear(x, w, b), [(3, 5), (4, 5), (4,)]),
    ("linear silu", lambda x, w: ops.linear(x, w, act="silu"), [(2, 3, 5), (4, 5)]),
    ("linear silu bias", lambda x, w, b: ops.linear(x, w, b, act="silu"), [(3, 5), (4, 5), (4,)]),
    ("masked_fill", lambda a: ops.masked_fill(a, np.tri(4, 5, dtype=bool), -3.0), [(2, 4, 5)]),
])
def test_op_gradient(name, f, shapes):
    positive = name.startswith(("log", "rdiv", "div", "pow"))
    gradcheck(f, [rand(*s, positive=positive) for s in shapes])


def test_cross_entropy_gradient_with_ignored_positions():
    targets = np.array([[1, -1, 4], [0, 2, -1]])
    gradcheck(lambda logits: ops.cross_entropy(logits, targets), [rand(2, 3, 5)])


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    logits = Tensor(rand(2, 3), requires_grad=True)
    loss = ops.cross_entropy(logits, np.array([-1, -1]))
    loss.backward()
    assert loss.item() == 0.0 and np.all(logits.grad == 0)


def test_embedding_gradient_with_repeated_ids():
    ids = np.array([[0, 3, 3], [1, 0, 3]])
    gradcheck(lambda w: ops.embedding(ids, w), [rand(5, 4)])


def test_dropout_gradient_uses_the_same_mask():
    # the same seed each call: the finite differences see the mask autograd saw
    gradcheck(lambda a: ops.dropout(a, 0.3, np.random.default_rng(7)), [rand(4, 6)])


@pytest.mark.parametrize("Tq, Tk, tile", [(7, 7, 128), (9, 9, 4), (3, 8, 2), (1, 5, 128)])
def test_attention_kernel_gradient(Tq, Tk, tile):
    """attention_backward against central differences of attention_forward, with Tq <= Tk (the
    KV-cache layout, which no autograd op trains with) and small tiles, which make the online
    softmax cross several key tiles."""
    q, k, v = rand(2, 2, Tq, 4), rand(2, 2, Tk, 4), rand(2, 2, Tk, 4)
    weight = rng.standard_normal(q.shape)           # loss = sum(out * weight): dout = weight
    out, lse = numpy_kernels.attention_forward(q, k, v, tile=tile)
    grads = numpy_kernels.attention_backward(weight, q, k, v, out, lse, tile=tile)

    def loss():
        return float(np.sum(numpy_kernels.attention_forward(q, k, v, tile=tile)[0] * weight))
    for name, x, g in zip(("q", "k", "v"), (q, k, v), grads):
        assert_grad_close(g, numerical_gradient(loss, x), f"attention d{name}")


@pytest.mark.parametrize("T, n_head, tile", [(5, 2, 128), (9, 3, 4)])
def test_causal_self_attention_gradient(monkeypatch, T, n_head, tile):
    # the GPT block's path: split the fused qkv into heads, attend, merge the heads
    monkeypatch.setattr(numpy_attention, "ATTN_TILE", tile)
    gradcheck(lambda qkv: ops.causal_self_attention(qkv, n_head), [rand(2, T, 3 * n_head * 2)])


def test_causal_self_attention_equals_attention_on_permuted_heads():
    B, T, nh, hs = 2, 6, 3, 4
    qkv = rand(B, T, 3 * nh * hs)
    q, k, v = (np.ascontiguousarray(qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)[i])
               for i in range(3))                                     # (B, nh, T, hs) each
    out, _ = numpy_kernels.attention_forward(q, k, v)                # (B, nh, T, hs)
    expected = out.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)       # (B, T, C)
    actual = ops.causal_self_attention(Tensor(qkv), nh).data          # (B, T, C)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_gradients_accumulate_over_backward_calls():
    x = Tensor(rand(3), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 5.0))


def test_shared_subexpression_gets_both_gradients():
    x = Tensor(rand(3, 3), requires_grad=True)
    y = x * x
    (y + y.transpose()).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 2 * x.data, rtol=1e-12)


def test_gradcheck_catches_a_wrong_backward():
    def wrong_square(a):  # backward forgets the factor 2
        return Tensor.from_op(a.data ** 2, (a,), lambda g: (g * a.data,), "wrong_square")
    with pytest.raises(AssertionError, match="gradient of input 0"):
        gradcheck(wrong_square, [rand(3)])
