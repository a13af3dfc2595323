"""Differentiable operations: each a forward and the backward that undoes it.

An op computes its output from NumPy arrays, then hands Tensor.from_op the
parents and a `backward(g)` that turns the output gradient g into one
gradient per parent. The ops a GPT needs (linear, causal_self_attention,
rmsnorm, silu, embedding, cross_entropy, softmax) call the active backend's
kernels, so the same graph runs on NumPy, C or CUDA. The generic ones (broadcasting
arithmetic, reshapes, indexing, ...) are plain NumPy: they are here for
learning, for variants and for the gradient checks.

Every op has a float64 finite-difference check in tests/test_gradcheck.py.
Read backends/numpy_kernels.py next for the kernels these ops call.
"""
import numpy as np

from tinyllm.backends import get_backend
from tinyllm.tensor import Tensor


def _tensor(x, like=None):
    """Wrap a number or array; numbers take the dtype of the tensor they meet."""
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None and np.isscalar(x) else None
    return Tensor(x, dtype=dtype)


def _unbroadcast(g, shape):
    """Sum a broadcast gradient back down to the operand's shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


# ----------------------------------------------------------------------------
# elementwise arithmetic (broadcasting)

def add(a, b):
    a, b = _tensor(a, b), _tensor(b, a)
    if a.shape == b.shape and a.dtype == b.dtype:   # the residual stream: a backend kernel
        out = get_backend().add_forward(a.data, b.data)
    else:
        out = a.data + b.data
    return Tensor.from_op(out, (a, b),
                          lambda g: (_unbroadcast(g, a.shape), _unbroadcast(g, b.shape)), "add")


def sub(a, b):
    a, b = _tensor(a, b), _tensor(b, a)
    return Tensor.from_op(a.data - b.data, (a, b),
                          lambda g: (_unbroadcast(g, a.shape), _unbroadcast(-g, b.shape)), "sub")


def mul(a, b):
    a, b = _tensor(a, b), _tensor(b, a)
    return Tensor.from_op(a.data * b.data, (a, b),
                          lambda g: (_unbroadcast(g * b.data, a.shape),
                                     _unbroadcast(g * a.data, b.shape)), "mul")


def div(a, b):
    a, b = _tensor(a, b), _tensor(b, a)
    out = a.data / b.data
    return Tensor.from_op(out, (a, b),
                          lambda g: (_unbroadcast(g / b.data, a.shape),
                                     _unbroadcast(-g * out / b.data, b.shape)), "div")


def neg(a):
    return Tensor.from_op(-a.data, (a,), lambda g: (-g,), "neg")


def pow(a, exponent):
    """a ** exponent for a number exponent."""
    if not np.isscalar(exponent):
        raise TypeError(f"pow takes a number exponent, got {type(exponent).__name__}")
    return Tensor.from_op(a.data ** exponent, (a,),
                          lambda g: (g * exponent * a.data ** (exponent - 1),), "pow")


# ----------------------------------------------------------------------------
# elementwise functions

def exp(a):
    out = np.exp(a.data)
    return Tensor.from_op(out, (a,), lambda g: (g * out,), "exp")


def log(a):
    return Tensor.from_op(np.log(a.data), (a,), lambda g: (g / a.data,), "log")


def tanh(a):
    out = np.tanh(a.data)
    return Tensor.from_op(out, (a,), lambda g: (g * (1.0 - out * out),), "tanh")


def relu(a):
    return Tensor.from_op(np.maximum(a.data, 0), (a,), lambda g: (g * (a.data > 0),), "relu")


def silu(a):
    k = get_backend()
    return Tensor.from_op(k.silu_forward(a.data), (a,), lambda g: (k.silu_backward(g, a.data),), "silu")


_GELU_C = np.sqrt(2.0 / np.pi)


def gelu(a):
    """GELU, tanh approximation (as GPT-2): 0.5 x (1 + tanh(c (x + 0.044715 x^3)))."""
    x = a.data
    t = np.tanh(_GELU_C * (x + 0.044715 * x ** 3))
    out = 0.5 * x * (1.0 + t)

    def backward(g):
        dt = (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
        return (g * (0.5 * (1.0 + t) + 0.5 * x * dt),)
    return Tensor.from_op(out, (a,), backward, "gelu")


# ----------------------------------------------------------------------------
# reductions and shape

def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if np.isscalar(axis) else axis
    return tuple(ax % ndim for ax in axis)


def sum(a, axis=None, keepdims=False):
    axes = _axes(axis, a.ndim)

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, a.shape).copy(),)
    return Tensor.from_op(np.sum(a.data, axis=axes, keepdims=keepdims), (a,), backward, "sum")


def mean(a, axis=None, keepdims=False):
    count = int(np.prod([a.shape[ax] for ax in _axes(axis, a.ndim)]))
    return sum(a, axis, keepdims) * (1.0 / count)


def reshape(a, shape):
    return Tensor.from_op(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),), "reshape")


def permute(a, axes):
    inverse = np.argsort(axes)
    return Tensor.from_op(np.transpose(a.data, axes), (a,),
                          lambda g: (np.transpose(g, inverse),), "permute")


def transpose(a, axis1=-2, axis2=-1):
    axes = list(range(a.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return permute(a, axes)


def getitem(a, index):
    """a[index] for any NumPy index; repeated integer indices add their gradients."""
    if isinstance(index, Tensor):
        raise TypeError("index with a NumPy array, not a Tensor")
    parts = index if isinstance(index, tuple) else (index,)
    basic = all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)

    def backward(g):
        da = np.zeros_like(a.data)
        if basic:       # a view: each element picked at most once
            da[index] = g
        else:           # fancy indices may repeat: add, don't overwrite
            np.add.at(da, index, g)
        return (da,)
    return Tensor.from_op(a.data[index], (a,), backward, "getitem")


def concat(tensors, axis=0):
    tensors = [_tensor(t) for t in tensors]
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor.from_op(np.concatenate([t.data for t in tensors], axis=axis), tensors,
                          lambda g: tuple(np.split(g, bounds, axis=axis)), "concat")


def split(a, sections, axis=-1):
    """a cut along axis into `sections` equal parts (an int) or parts of the given sizes (a list)."""
    n = a.shape[axis]
    if np.isscalar(sections):
        if n % sections:
            raise ValueError(f"cannot split axis of length {n} into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if np.sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} do not add up to the axis length {n}")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    slicer = [slice(None)] * a.ndim
    pieces = []
    for s0, s1 in zip(starts[:-1], starts[1:]):
        slicer[axis] = slice(int(s0), int(s1))
        pieces.append(getitem(a, tuple(slicer)))
    return pieces


def masked_fill(a, mask, value):
    """a with `value` wherever the boolean mask (broadcast to a) is True; no gradient there."""
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), a.shape)
    return Tensor.from_op(np.where(mask, np.asarray(value, dtype=a.dtype), a.data), (a,),
                          lambda g: (np.where(mask, 0, g).astype(g.dtype),), "masked_fill")


# ----------------------------------------------------------------------------
# matrix products

def matmul(a, b):
    """a @ b; batched over leading axes (broadcasting as np.matmul)."""
    a, b = _tensor(a), _tensor(b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs operands with >= 2 axes, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul shapes {a.shape} @ {b.shape} do not match: "
                         f"a's last axis ({a.shape[-1]}) must equal b's second-to-last ({b.shape[-2]})")
    kernels = get_backend()

    def backward(g):
        da = kernels.matmul(g, b.data, transpose_b=True)         # dA = dOut B^T
        db = kernels.matmul(a.data, g, transpose_a=True)         # dB = A^T dOut
        return _unbroadcast(da, a.shape), _unbroadcast(db, b.shape)
    return Tensor.from_op(kernels.matmul(a.data, b.data), (a, b), backward, "matmul")


MATMUL_DTYPES = ("fp32", "bf16")


def linear(x, weight, bias=None, dtype="fp32", act=None):
    """act(x) @ weight^T (+ bias): x (..., in), weight (out, in) as PyTorch's Linear -> (..., out);
    act "silu" (the MLP's c_proj) keeps x alone, making silu(x) again in the backward: the graph holds
    the (N, 4C) hidden once, not twice. dtype "bf16": the products by matmul_bf16, weights fp32."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but the weight {weight.shape} "
                         f"expects {weight.shape[1]}")
    if dtype not in MATMUL_DTYPES or act not in (None, "silu"):
        raise ValueError(f"linear: dtype {dtype!r} (one of {MATMUL_DTYPES}), act {act!r} (None, 'silu')")
    kernels = get_backend()
    mm = kernels.matmul_bf16 if dtype == "bf16" else kernels.matmul
    x2 = x.data.reshape(-1, x.shape[-1])                         # (N, in)
    act_x = (lambda: kernels.silu_forward(x2)) if act else (lambda: x2)   # a = act(x) (N, in), on demand
    y = mm(act_x(), weight.data, transpose_b=True)               # (N, out)
    y = y + bias.data if bias is not None else y
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):   # a frozen weight or an input without a gradient costs no matmul
        g2 = g.reshape(-1, weight.shape[0])                      # (N, out)
        dw = mm(g2, act_x(), transpose_a=True) if weight.requires_grad else None      # dW = g^T a
        da = mm(g2, weight.data) if x.requires_grad else None    # y = a W^T -> da = g W
        dx = None if da is None else (kernels.silu_backward(da, x2) if act else da).reshape(x.shape)
        return (dx, dw) if bias is None else (dx, dw, g2.sum(axis=0))
    return Tensor.from_op(y.reshape(*x.shape[:-1], weight.shape[0]), parents, backward, "linear")


# ----------------------------------------------------------------------------
# softmax family

def softmax(a, axis=-1):
    kernels = get_backend()
    x = np.moveaxis(a.data, axis, -1)
    y = kernels.softmax_forward(np.ascontiguousarray(x))
    return Tensor.from_op(np.moveaxis(y, -1, axis), (a,),
                          lambda g: (np.moveaxis(kernels.softmax_backward(
                              np.ascontiguousarray(np.moveaxis(g, axis, -1)), y), -1, axis),),
                          "softmax")


def log_softmax(a, axis=-1):
    x = a.data
    shifted = x - x.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return Tensor.from_op(out, (a,),
                          lambda g: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),),
                          "log_softmax")


def cross_entropy(logits, targets):
    """Mean cross-entropy of logits (..., V) against integer targets (...), -1 = ignore.

    The mean is over the kept positions; with none kept the loss is 0.
    """
    targets = check_targets(logits, targets)
    kernels = get_backend()
    x = logits.data.reshape(-1, logits.shape[-1])                # (N, V)
    t = targets.reshape(-1)                                      # (N,)
    loss, lse = kernels.cross_entropy_forward(x, t)
    return Tensor.from_op(loss, (logits,),
                          lambda g: (kernels.cross_entropy_backward(g, x, t, lse).reshape(logits.shape),),
                          "cross_entropy")


def check_targets(logits, targets):
    """targets as an integer array shaped as logits (..., V) without V, each in [-1, V)."""
    targets = np.asarray(targets)
    V = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets shape {targets.shape} must equal "
                         f"logits shape without its last axis {logits.shape[:-1]}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    if targets.size and (targets.min() < -1 or targets.max() >= V):
        bad = targets[(targets < -1) | (targets >= V)][0]
        raise ValueError(f"cross_entropy: target {bad} is outside [0, {V}) "
                         f"(use -1 for positions to ignore)")
    return targets


# ----------------------------------------------------------------------------
# the layers of a GPT

def embedding(ids, weight):
    """Rows of weight (V, C) picked by integer ids (...) -> (..., C)."""
    ids = np.asarray(ids)
    V = weight.shape[0]
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = ids[(ids < 0) | (ids >= V)][0]
        raise ValueError(f"embedding: id {bad} is outside the table's range [0, {V}); "
                         f"was the data tokenized with a bigger vocabulary than vocab_size={V}?")
    kernels = get_backend()
    return Tensor.from_op(kernels.embedding_forward(ids, weight.data), (weight,),
                          lambda g: (kernels.embedding_backward(g, ids, V),), "embedding")


def rmsnorm(x, weight, eps=1e-5):
    kernels = get_backend()
    y, rstd = kernels.rmsnorm_forward(x.data, weight.data, eps)
    return Tensor.from_op(y, (x, weight),
                          lambda g: kernels.rmsnorm_backward(g, x.data, weight.data, rstd), "rmsnorm")


def layernorm(x, weight, bias, eps=1e-5):
    """GPT-2's norm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias.

    Not used by the default GPT (RMSNorm); kept for learning, for the gradient
    checks and for model variants, with CUDA kernels (C runs the NumPy ones).
    """
    kernels = get_backend()
    y, mu, rstd = kernels.layernorm_forward(x.data, weight.data, bias.data, eps)
    return Tensor.from_op(y, (x, weight, bias),
                          lambda g: kernels.layernorm_backward(g, x.data, weight.data, mu, rstd),
                          "layernorm")


def causal_self_attention(qkv, n_head, kv_cache=None, dtype="fp32"):
    """The attention of a GPT block: qkv (B, T, 3C) from the fused projection -> (B, T, C).

    One backend kernel each way, attention_qkv_forward / _backward: q, k, v split into heads
    (B, nh, T, hs), the fused causal attention, the heads merged back (numpy_kernels defines it
    so; C reads the heads in place from qkv, without the copies; on CUDA nothing leaves the
    device). kv_cache, at inference only, is a function (q, k, v) -> out that stores the new keys
    and values and attends the newest queries over the cached past (generate.KVCache.attend); no
    graph then. dtype "bf16": the kernels' products in mixed precision (*_bf16), as linear's."""
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"causal_self_attention: expected qkv (B, T, 3C) with C a multiple of "
                         f"n_head={n_head}, got {qkv.shape}")
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"causal_self_attention: dtype {dtype!r}; choose one of {MATMUL_DTYPES}")
    kernels = get_backend()
    suffix = "_bf16" if dtype == "bf16" else ""
    if kv_cache is not None:
        q, k, v = kernels.split_heads(qkv.data, 3, n_head)      # (B, nh, T, hs) each
        out = kv_cache(q, k, v)                                 # (B, nh, T, hs)
        return Tensor(kernels.merge_heads([out]), dtype=out.dtype)
    forward, backward = (getattr(kernels, f"attention_qkv_{s}{suffix}") for s in ("forward", "backward"))
    out, lse = forward(qkv.data, n_head)                        # (B, T, C), (B, nh, T)
    return Tensor.from_op(out, (qkv,), lambda g: (backward(g, qkv.data, out, lse, n_head),),
                          "causal_self_attention")


def dropout(a, p, rng, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."""
    if not training or p == 0.0:
        return a
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    # the mask is a function of this seed, so the backward draws it again instead of keeping it
    seed = int(rng.integers(0, 2 ** 63))
    kernels = get_backend()
    return Tensor.from_op(kernels.dropout(a.data, p, seed), (a,),
                          lambda g: (kernels.dropout(g, p, seed),), "dropout")
