"""The Tensor itself and the backend registry: dtypes, no_grad, graph freeing, errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyllm
from tinyllm import backends
from tinyllm.tensor import Tensor, no_grad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_dtype_is_float32_and_float64_is_kept():
    assert Tensor([1, 2, 3]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float64          # gradient checks run in float64
    x = Tensor(np.ones(2, np.float32), requires_grad=True)
    assert (x * 3.0 + 1.0).dtype == np.float32              # Python numbers do not promote


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y._parents == ()
    assert (x * 2).requires_grad                            # and the mode is restored after


def test_backward_needs_a_scalar_or_a_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    (x * 2).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, 2.0)
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    assert y._parents == () and y._backward is None


def test_leaf_gradients_never_share_memory():
    """A gradient nothing else holds becomes .grad as it is (tensor._unshared); a shared one is
    copied: an add hands both parents one array, and clipping scales every .grad in place."""
    from tinyllm.optim import clip_grad_norm
    a, b = (Tensor(np.ones(3, np.float32), requires_grad=True) for _ in range(2))
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad, b.grad)
    clip_grad_norm([a, b], 1.0)                                     # norm sqrt(6): each scaled once
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), 1 / np.sqrt(6), rtol=1e-5)
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    g = np.full(3, 2.0, np.float32)
    x.backward(g)                                                   # a leaf: g itself arrives
    assert not np.shares_memory(x.grad, g)                          # the caller's array stays theirs
    w = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    for _ in range(2):                                              # accumulated across calls
        (w * 2.0).sum().backward()
    np.testing.assert_array_equal(w.grad, 4.0)


def test_long_chains_do_not_hit_the_recursion_limit():
    x = Tensor(np.ones(1), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    assert x.grad[0] == 1.0


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="do not add up"):
        tinyllm.ops.split(Tensor(np.ones((2, 5))), [2, 2])


def test_backend_registry():
    assert backends.get_backend("numpy").NAME == "numpy"
    assert "numpy" in backends.available_backends()
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        tinyllm.set_backend("nope")


def test_backend_from_environment_variable():
    code = "import tinyllm; print(tinyllm.get_backend().NAME)"
    env = {**os.environ, "TINYLLM_BACKEND": "numpy", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "numpy", out.stderr
