"""The CUDA backend as a whole: device arrays, the allocator, errors, and a training step
that stays on the device and matches the NumPy reference.

The kernels one by one are in test_cuda_kernels.py, test_cuda_matmul.py and
test_cuda_attention.py. These tests skip without a CUDA backend (see
cuda_helpers.py); `make test` runs them on the CPU emulation too.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.cuda_helpers import cuda  # noqa: F401  (a fixture)
from tests.test_train import interrupt_at, read_log, text_file, tiny_config  # noqa: F401
from tinyllm import backends
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW, clip_grad_norm, param_groups
from tinyllm.tensor import is_device_array
from tinyllm.run import build_trainer

TINY = dict(vocab_size=29, block_size=12, n_layer=2, n_head=2, n_embd=16)


# ----------------------------------------------------------------------------
# device arrays

def test_device_array_round_trips(cuda):
    rng = np.random.default_rng(0)
    for a in (rng.standard_normal((3, 5)).astype(np.float32), rng.integers(-5, 9, 7),
              rng.standard_normal(4)):
        d = cuda.to_device(a)
        assert d.shape == a.shape and d.dtype == a.dtype
        np.testing.assert_array_equal(d.numpy(), a)
    d = cuda.to_device(np.arange(6, dtype=np.float32))
    view = d.reshape(2, -1)
    assert view.shape == (2, 3)
    np.testing.assert_array_equal(view.numpy(), np.arange(6).reshape(2, 3))
    copy = d.copy()
    d[...] = np.zeros(6, np.float32)            # overwrites d and its views, not the copy
    np.testing.assert_array_equal(view.numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(copy.numpy(), np.arange(6))
    assert cuda.to_device(np.array(2.5, np.float32)).item() == 2.5


def test_device_arithmetic_for_autograd(cuda):
    a, b = np.float32([1, 2, 3]), np.float32([10, 20, 30])
    da, db = cuda.to_device(a), cuda.to_device(b)
    np.testing.assert_array_equal((da + db).numpy(), a + b)
    da += db
    da *= 0.5
    np.testing.assert_array_equal(da.numpy(), (a + b) * 0.5)
    assert cuda.sum_of_squares([cuda.to_device(a), cuda.to_device(b)]) == float(a @ a + b @ b)


def test_device_array_never_becomes_numpy_implicitly(cuda):
    d = cuda.to_device(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"\.numpy\(\)"):
        np.asarray(d)
    with pytest.raises(TypeError, match="DeviceArray"):
        d + np.ones(3, np.float32)


# ----------------------------------------------------------------------------
# errors

def test_a_failed_allocation_names_the_call_and_is_not_sticky(cuda):
    with pytest.raises(cuda.CudaError, match="cudaMalloc"):
        cuda.DeviceArray((1 << 42,))                 # 16 TiB of float32
    np.testing.assert_array_equal(cuda.to_device(np.ones(4, np.float32)).numpy(), np.ones(4))


def test_bad_arguments_are_refused_before_the_kernel(cuda):
    a = cuda.to_device(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="to_device"):
        cuda.matmul(np.ones((3, 4), np.float32), a)
    with pytest.raises(ValueError, match=r"do not match \(4 != 3\)"):
        cuda.matmul(a, a)
    with pytest.raises(ValueError, match="outside"):
        cuda.embedding_forward(np.array([0, 3]), a)
    with pytest.raises(TypeError, match="float32"):
        cuda.silu_forward(cuda.to_device(np.ones(3)))


def test_without_the_library_the_backend_says_why_and_the_cpu_backends_work(tmp_path):
    code = ("import tinyllm.backends as b\n"
            "try:\n    b.get_backend('cuda')\nexcept b.BackendUnavailable as e:\n    print('refused:', e)\n"
            "print('default:', b.get_backend().NAME)\n")
    env = {**os.environ, "TINYLLM_CUDA_LIB": str(tmp_path / "libtinyllm_cuda.so")}
    env.pop("TINYLLM_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "refused:" in out and "not built" in out and "make" in out
    assert "default: c" in out or "default: numpy" in out


# ----------------------------------------------------------------------------
# a training step on the device

def _train(backend, steps, batch=(3, 12), clip=1.0):
    """Losses and final parameters of `steps` AdamW steps of a tiny GPT on fixed batches."""
    rng = np.random.default_rng(5)
    with backends.using(backend) as kernels:
        model = GPT(GPTConfig(**TINY)).to(kernels)
        opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=3e-3)
        losses = []
        for _ in range(steps):
            idx = rng.integers(0, TINY["vocab_size"], batch)
            targets = rng.integers(0, TINY["vocab_size"], batch)
            targets[0, :3] = -1                                   # ignored positions
            _, loss = model(idx, targets)
            model.zero_grad()
            loss.backward()
            clip_grad_norm(model.parameters(), clip)
            opt.step()
            losses.append(loss.item())
        return losses, model.state_dict(), model


def test_training_steps_match_the_numpy_reference(cuda):
    # float32 on both sides, summed in different orders: ~1e-6 relative per op, and three
    # AdamW steps (lr 3e-3) move the weights by ~1e-2, so 1e-4 absolute on the weights
    # and 1e-5 relative on the losses leave a wide margin while a wrong kernel fails.
    ref_losses, ref_params, _ = _train("numpy", 3)
    losses, params, model = _train("cuda", 3)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for name, want in ref_params.items():
        np.testing.assert_allclose(params[name], want, atol=1e-4, err_msg=name)
    for name, p in model.named_parameters():
        assert is_device_array(p.data) and is_device_array(p.grad), name


def test_only_the_loss_and_the_gradient_norm_leave_the_device(cuda, monkeypatch):
    _, _, model = _train("cuda", 1)
    copies = []
    original = cuda.DeviceArray.numpy
    monkeypatch.setattr(cuda.DeviceArray, "numpy", lambda self: copies.append(self.shape) or original(self))
    with backends.using("cuda"):
        opt = AdamW(model.parameters(), lr=1e-3)
        idx = np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 12))
        _, loss = model(idx, idx)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        loss.item()
    n_params = len(model.parameters())
    assert sorted(copies) == sorted([(n_params,), ()]), copies   # the squared norms, the loss


def test_the_loop_does_not_call_cudamalloc_after_the_first_step(cuda):
    _, _, model = _train("cuda", 1)
    with backends.using("cuda"):
        opt = AdamW(model.parameters(), lr=1e-3)
        idx = np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 12))
        calls = []
        for _ in range(3):
            _, loss = model(idx, idx)
            model.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            calls.append(cuda.memory_stats()["cuda_malloc_calls"])
    assert calls[1] == calls[2], calls


def test_freed_blocks_are_reused_then_given_back(cuda):
    a = cuda.DeviceArray((1000,))
    del a                                          # to the cache, not to the driver
    held = cuda.memory_stats()
    assert held["bytes_held"] > held["bytes_in_use"]
    calls = held["cuda_malloc_calls"]
    b = cuda.DeviceArray((1000,))                  # the cached block again: no cudaMalloc
    assert cuda.memory_stats()["cuda_malloc_calls"] == calls
    del b
    cuda.empty_cache()
    stats = cuda.memory_stats()
    assert stats["bytes_held"] == stats["bytes_in_use"]


def test_generation_on_the_device_equals_numpy(cuda):
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    model = GPT(GPTConfig(**TINY))
    want = model.generate(prompt, 14, temperature=0)          # past block_size: the window slides
    with backends.using("cuda") as kernels:
        got = model.to(kernels).generate(prompt, 14, temperature=0)
    np.testing.assert_array_equal(got, want)


def test_state_dict_and_load_through_the_device(cuda):
    model = GPT(GPTConfig(**TINY))
    state = model.state_dict()
    with backends.using("cuda") as kernels:
        model.to(kernels)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, state[name], err_msg=name)
        model.load_state_dict({k: v * 2 for k, v in state.items()})
        assert is_device_array(model.lm_head.weight.data)
        np.testing.assert_array_equal(model.lm_head.weight.numpy(), state["lm_head.weight"] * 2)


# ----------------------------------------------------------------------------
# the training script on the cuda backend

def test_trainer_on_cuda_matches_numpy_and_resumes_exactly(cuda, text_file, tmp_path, monkeypatch):
    def losses(out):
        return [r["loss"] for r in read_log(out)]
    # dropout 0.1 (tiny_config's): the backends draw the same masks from the same seeds
    build_trainer(tiny_config(text_file, tmp_path / "numpy", backend="numpy")).train()
    build_trainer(tiny_config(text_file, tmp_path / "cuda", backend="cuda")).train()
    # float32 on both sides in different summation orders (see the training-step test)
    np.testing.assert_allclose(losses(tmp_path / "cuda"), losses(tmp_path / "numpy"), rtol=1e-4)
    interrupt_at(monkeypatch, 6)
    build_trainer(tiny_config(text_file, tmp_path / "resumed", backend="cuda")).train()
    monkeypatch.undo()
    build_trainer(tiny_config(text_file, tmp_path / "resumed", backend="cuda", resume=True)).train()
    # deterministic kernels: the resumed run repeats the uninterrupted one bit for bit
    assert losses(tmp_path / "resumed") == losses(tmp_path / "cuda")
