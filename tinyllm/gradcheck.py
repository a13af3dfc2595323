"""Finite-difference gradient checking: the proof that every backward is right.

For a function f of some float64 tensors that returns a tensor, compare the
gradient autograd computes for sum(f(...) * W) (W a fixed random weight, so
every output element matters differently) with central differences
(L(x + h) - L(x - h)) / 2h, element by element. In float64 with h = 1e-6 the
truncation error is O(h^2) ~ 1e-12 and the rounding error ~ 1e-16 / h ~ 1e-10,
so a correct backward agrees to about 1e-7 relative or better.

Use it when you add an op: `gradcheck(lambda x, w: my_op(x, w), [x, w])`.
Read nn.py next.
"""
import numpy as np

from tinyllm.backends import using
from tinyllm.tensor import Tensor


def numerical_gradient(loss_fn, array, h=1e-6):
    """d loss_fn() / d array by central differences, nudging `array` in place one element at a time."""
    numeric = np.zeros_like(array)
    flat = array.reshape(-1)   # a view of a contiguous array: nudging it nudges the input
    for j in range(flat.size):
        saved = flat[j]
        flat[j] = saved + h
        up = loss_fn()
        flat[j] = saved - h
        down = loss_fn()
        flat[j] = saved
        numeric.reshape(-1)[j] = (up - down) / (2 * h)
    return numeric


def assert_grad_close(analytic, numeric, name, rtol=1e-6, atol=1e-8):
    """Raise with the worst element if |analytic - numeric| > atol + rtol * max(|a|, |n|); return the max relative error."""
    analytic = np.zeros_like(numeric) if analytic is None else analytic
    err = np.abs(analytic - numeric)
    bound = atol + rtol * np.maximum(np.abs(analytic), np.abs(numeric))
    if np.any(err > bound):
        j = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"gradient of {name} (shape {numeric.shape}) is wrong at {j}: "
            f"autograd {analytic[j]:.10g}, finite difference {numeric[j]:.10g} "
            f"(|diff| {err[j]:.3g} > tolerance {bound[j]:.3g})")
    return float(np.max(err / np.maximum(np.abs(numeric), 1e-3))) if err.size else 0.0


def gradcheck(f, inputs, h=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """Check autograd against central differences for every input element.

    inputs: float64 arrays or Tensors (each becomes a leaf that requires grad).
    Runs on the NumPy backend (the float64 reference; C and CUDA compute in
    float32 and are held to NumPy by their parity tests). Raises
    AssertionError naming the worst element when they disagree; returns the
    largest relative error found.
    """
    with using("numpy"):
        return _gradcheck(f, inputs, h, rtol, atol, seed)


def _gradcheck(f, inputs, h, rtol, atol, seed):
    leaves = [Tensor(np.array(x.data if isinstance(x, Tensor) else x, dtype=np.float64),
                     requires_grad=True) for x in inputs]
    out = f(*leaves)
    weight = np.random.default_rng(seed).standard_normal(out.shape)
    (out * Tensor(weight)).sum().backward()

    def loss_value():
        return float(np.sum(f(*leaves).data * weight))

    worst = 0.0
    for i, leaf in enumerate(leaves):
        numeric = numerical_gradient(loss_value, leaf.data, h)
        worst = max(worst, assert_grad_close(leaf.grad, numeric, f"input {i}", rtol, atol))
    return worst
