"""Tensor: a NumPy array that remembers how it was made, and reverse-mode autograd.

Every differentiable operation (ops.py) returns a Tensor that records its
parent tensors and a `backward` function mapping the output's gradient to
one gradient per parent. `loss.backward()` orders the graph topologically and
runs those functions from the loss back to the leaves, summing the gradients
of tensors used more than once. That is the whole engine; the mathematics
lives in ops.py and the backend kernels.

This is not a general array library: a Tensor holds floating-point data only
(integer token ids stay plain NumPy arrays) and the ops are the ones a GPT
needs plus the usual arithmetic. Read ops.py next.
"""
import contextlib
import sys

import numpy as np

from tinyllm.backends import get_backend

DEFAULT_DTYPE = np.float32
_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within this block ops record no graph (inference, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    """False inside no_grad(): ops then record no graph."""
    return _grad_enabled


# ----------------------------------------------------------------------------
# host and device arrays: a Tensor's data is a NumPy array, or on the CUDA backend
# a DeviceArray (backends/cuda_array.py) with the same shape and dtype. These are
# the only places where the two differ.

def is_device_array(a):
    return getattr(a, "__tinyllm_device__", False)


def to_numpy(a):
    """a as a NumPy array: device arrays are copied to the host, NumPy ones returned as they are."""
    return a.numpy() if is_device_array(a) else np.asarray(a)


def zeros_like(a):
    """Zeros of a's shape and dtype, where a lives."""
    return type(a).zeros(a.shape, a.dtype) if is_device_array(a) else np.zeros_like(a)


def like(a, values):
    """values (a NumPy array) placed where a lives, with a's dtype."""
    values = np.asarray(values, dtype=a.dtype)
    return type(a).from_numpy(values) if is_device_array(a) else values.copy()


def _as_float_array(data, dtype):
    if isinstance(data, Tensor):
        data = data.data
    if is_device_array(data):   # stays on the device; its dtype is already a float
        if dtype is not None and np.dtype(dtype) != data.dtype:
            raise TypeError(f"a device array of {data.dtype} cannot become {np.dtype(dtype)}")
        return data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    # NumPy float arrays keep their precision (float64 for gradient checks);
    # Python numbers, lists and integer arrays become the default float32
    if not (isinstance(data, np.ndarray) and np.issubdtype(arr.dtype, np.floating)):
        arr = arr.astype(DEFAULT_DTYPE)
    return arr


def _sum(a, b):
    """Two gradients of one tensor added (a fresh array): by the backend's add kernel where it
    takes them (float32 host arrays of one shape, as the residual stream's: on C two threads,
    where NumPy's + is one), else by +."""
    if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype == np.float32):
        return get_backend().add_forward(a, b)
    return a + b


def _unshared(g, dtype):
    """Whether g, a gradient the backward holds, may become a leaf's .grad as it is: a NumPy array
    of the leaf's dtype that owns its memory and that nothing else references (a kernel's fresh
    output, as every dW is). Anything else is copied, so that no .grad shares memory with another
    gradient (an add's backward hands both parents one array, and clipping scales each .grad in
    place). That copy was 68 MB a step of the bench preset, 2.5 % of a bf16 step."""
    # references: the backward's local, this argument, getrefcount's own
    return (isinstance(g, np.ndarray) and g.dtype == dtype and g.base is None
            and g.flags.writeable and sys.getrefcount(g) <= 3)


class Tensor:
    """An n-dimensional float array with an optional gradient.

    data: the NumPy array; grad: a NumPy array of the same shape, filled by
    backward() when requires_grad is True (None before).
    """

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_float_array(data, dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._parents = ()      # the tensors this one was computed from
        self._backward = None   # grad of self -> tuple of grads of _parents
        self._op = ""           # the op's name, for repr and error messages
        self.grad_hook = None   # a leaf's: called as grad_hook(self) once backward() has
                                # finished its .grad (data-parallel training sends it then)

    # -- graph construction (used by ops.py) ---------------------------------
    @staticmethod
    def from_op(data, parents, backward, op):
        """The output of an op; records the graph only if a parent needs a gradient."""
        out = Tensor(data, dtype=data.dtype)
        if _grad_enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
            out._op = op
        return out

    # -- autograd ------------------------------------------------------------
    def backward(self, grad=None):
        """Fill .grad of every leaf tensor this one depends on.

        grad defaults to 1 for a one-element tensor (a loss). Gradients add up
        in leaves across calls (gradient accumulation); zero them explicitly.
        The graph is freed as it is walked, so call backward once per forward.
        A leaf's grad_hook, if set, is called as soon as its .grad is final,
        while the rest of the backward still runs.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of its graph has requires_grad=True")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, "
                                   f"got shape {self.shape}; pass grad= of that shape")
            grad = np.ones(self.shape, self.dtype)   # a host 1: the loss ops take it as a number
        if not is_device_array(grad):
            grad = np.asarray(grad, dtype=self.dtype).reshape(self.shape)
        grads = {id(self): grad}
        order = self._topological_order()
        while order:   # popped: a node done is dropped, and its data with it, as the walk goes
            node = order.pop()
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:          # a leaf: keep its gradient
                if node.grad is None:
                    node.grad = g if _unshared(g, node.dtype) else g.astype(node.dtype, copy=True)
                else:
                    node.grad += g
                # reversed topological order: every user of this leaf has already run
                if node.grad_hook is not None:
                    node.grad_hook(node)
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                # never add in place here: pg may be shared with another parent
                grads[id(parent)] = pg if id(parent) not in grads else _sum(grads[id(parent)], pg)
            node._parents, node._backward = (), None  # free the graph as we go

    def _topological_order(self):
        order, seen, stack = [], set(), [(self, False)]
        while stack:                             # iterative: deep graphs must not hit recursion limits
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
        return order

    def zero_grad(self):
        self.grad = None

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data, dtype=self.dtype)

    # -- array-like conveniences ---------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def numpy(self):
        """The data as a NumPy array (copied to the host if it lives on a GPU)."""
        return to_numpy(self.data)

    def item(self):
        return self.data.item()

    def astype(self, dtype):
        """A leaf copy in another dtype (no gradient flows through it)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = f", grad_fn={self._op}" if self._op else (", requires_grad=True" if self.requires_grad else "")
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    # -- operators, defined in ops.py ----------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __neg__(self): return ops.neg(self)
    def __pow__(self, exponent): return ops.pow(self, exponent)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __getitem__(self, index): return ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, axis1=-2, axis2=-1): return ops.transpose(self, axis1, axis2)
    def permute(self, *axes): return ops.permute(self, axes)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def tanh(self): return ops.tanh(self)
    def relu(self): return ops.relu(self)


from tinyllm import ops  # noqa: E402  (ops needs Tensor defined first)
