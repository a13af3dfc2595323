"""Layers: Module, Parameter, Linear, Embedding, RMSNorm, LayerNorm, Dropout.

A Module finds its parameters by walking its attributes in the order they
were set, so names come out as PyTorch would spell them
("transformer.h.0.attn.c_attn.weight") and a state_dict moves between the
two. Layers hold parameters and call ops.py; they hold no maths of their own.

Not here: the GPT itself (model.py) and the optimizer (optim.py).
Read optim.py next.
"""
import contextlib

import numpy as np

from tinyllm import ops
from tinyllm.backends import get_backend
from tinyllm.tensor import Tensor, like, to_numpy


class Parameter(Tensor):
    """A leaf tensor that a Module owns and an optimizer updates."""
    is_embedding = False  # embeddings skip weight decay by default (optim.param_groups)

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    training = True
    matmul_dtype = "fp32"   # what Linear layers and attention multiply in; set_matmul_dtype sets it

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def children(self):
        """(name, module) of the direct sub-modules, in the order they were set."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        """Every weight value: the Parameters and those held outside them (held_weights)."""
        return int(sum(p.size for p in self.parameters())) + self.held_weights()[0]

    def weight_bytes(self):
        """Bytes of every weight: the Parameters' arrays and held_weights' bytes."""
        return int(sum(p.size * p.dtype.itemsize for p in self.parameters())) + self.held_weights()[1]

    def held_weights(self):
        """(values, bytes) of the weights below that are no Parameter: 0 here; a quantized
        layer (tinyllm/quant/layers.py) counts its blocks and scales."""
        held = [child.held_weights() for _, child in self.children()]
        return sum(v for v, _ in held), sum(b for _, b in held)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def set_matmul_dtype(self, dtype):
        """Run every Linear and attention below in `dtype`: "fp32", or "bf16" (mixed precision:
        bfloat16 operands, float32 sums; the parameters stay float32). See ops.linear."""
        if dtype not in ops.MATMUL_DTYPES:
            raise ValueError(f"matmul dtype {dtype!r}; choose one of {ops.MATMUL_DTYPES}")
        self.matmul_dtype = dtype
        for _, child in self.children():
            child.set_matmul_dtype(dtype)
        return self

    def to(self, backend):
        """Move every parameter to where `backend` keeps its arrays (the GPU for "cuda").

        backend: a name ("cuda", "c", "numpy") or a backend from get_backend().
        Gradients are dropped; build the optimizer after moving the model.
        """
        kernels = get_backend(backend) if isinstance(backend, str) else backend
        for p in self.parameters():
            p.data = kernels.asarray(to_numpy(p.data))
            p.grad = None
        return self

    def astype(self, dtype):
        """Convert every parameter in place (float64 for gradient checks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    def state_dict(self):
        """{name: a copy of the parameter as a NumPy array (from the GPU if it is there)}."""
        return {name: np.array(to_numpy(p.data)) for name, p in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters; every name and shape must match (strict)."""
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in state]
        unexpected = [n for n in state if n not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"state dict does not match the model: missing {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                           f"{' ...' if len(unexpected) > 5 else ''}; was it saved from a model "
                           f"with another config?")
        for name, p in params.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: checkpoint has shape {value.shape} but the model "
                                 f"expects {p.shape}; the checkpoint's config differs from the model's")
            p.data = like(p.data, value)   # on the device when the model is there


class ModuleList(Module):
    """Sub-modules named 0, 1, 2, ... (the transformer blocks)."""

    def __init__(self, modules):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return (m for _, m in self.children())

    def __len__(self):
        return sum(1 for _ in self.children())

    def __getitem__(self, i):
        return getattr(self, str(i))


_placeholders = False   # set by placeholder_weights()


@contextlib.contextmanager
def placeholder_weights():
    """Linear and Embedding layers built inside hold read-only zeros of their weight's shape
    that take no memory (np.broadcast_to) and draw nothing from rng: for a model whose weights
    a checkpoint replaces at once (checkpoint.load_model does, for a quantized one, so its
    float32 weights never exist). Such a model is only good for having its weights replaced."""
    global _placeholders
    before, _placeholders = _placeholders, True
    try:
        yield
    finally:
        _placeholders = before


INIT_CHUNK = 1 << 17   # float64 draws per slice of an initialisation (1 MB)


def _normal(rng, std, shape):
    """float32 normal(0, std) of shape, drawn a slice at a time: the same numbers as one draw (the
    generator's stream is sequential) without a float64 copy of the whole table, which malloc,
    told to keep freed memory (malloc.py), would hold for the rest of the run (33 MB of 66)."""
    if _placeholders:
        return np.broadcast_to(np.float32(0), shape)
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)                                       # a view: filled in place
    for i in range(0, flat.size, INIT_CHUNK):
        flat[i:i + INIT_CHUNK] = rng.normal(0.0, std, size=min(INIT_CHUNK, flat.size - i))
    return out


class Linear(Module):
    """y = x W^T (+ b), W stored (out, in) as in PyTorch; init normal(0, std)."""

    def __init__(self, n_in, n_out, rng, bias=False, std=0.02):
        self.weight = Parameter(_normal(rng, std, (n_out, n_in)))
        self.bias = Parameter(np.zeros(n_out, np.float32)) if bias else None

    def forward(self, x, act=None):
        """act(x) W^T (+ b); act None or "silu" (ops.linear)."""
        return ops.linear(x, self.weight, self.bias, self.matmul_dtype, act)

    def decode_weight(self):
        """The weight as a fused decoding kernel multiplies by it (the backends' decode_block),
        or None where forward is another product: with a bias, or in bf16 (the kernel has no
        bias and multiplies in float32)."""
        return self.weight.data if self.bias is None and self.matmul_dtype == "fp32" else None


class Embedding(Module):
    """A table of vectors, one row per id."""

    def __init__(self, n_rows, dim, rng, std=0.02):
        self.weight = Parameter(_normal(rng, std, (n_rows, dim)))
        self.weight.is_embedding = True

    def forward(self, ids):
        return ops.embedding(ids, self.weight)


class RMSNorm(Module):
    def __init__(self, dim, eps=1e-5):
        self.weight = Parameter(np.ones(dim, np.float32))
        self.eps = eps

    def forward(self, x):
        return ops.rmsnorm(x, self.weight, self.eps)


class LayerNorm(Module):
    """GPT-2's norm, (x - mean) / std * weight + bias, over the last axis (dim features).

    The GPT here uses RMSNorm; LayerNorm is kept for learning, for the gradient
    checks and for model variants (GPT-2-style blocks), and has CUDA kernels
    (the C backend runs the NumPy ones).
    """

    def __init__(self, dim, eps=1e-5):
        self.weight = Parameter(np.ones(dim, np.float32))
        self.bias = Parameter(np.zeros(dim, np.float32))
        self.eps = eps

    def forward(self, x):
        return ops.layernorm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Dropout whose randomness comes from a Generator the caller owns (so resumes are exact)."""

    def __init__(self, p, rng):
        self.p = p
        self.rng = rng

    def forward(self, x):
        return ops.dropout(x, self.p, self.rng, self.training)
