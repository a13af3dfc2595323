"""The C backend against the NumPy backend, through autograd: every kernel-backed op's
gradients, a whole GPT's gradients, and a training step.

The NumPy backend's gradients are proven by float64 finite differences
(test_gradcheck.py, test_model.py); float32 finite differences are too coarse
to prove anything, so the C backend is held to the proven one instead: the
same float32 inputs must give the same gradients within 1e-4 relative (float32
sums in a different order through a dozen ops; a real bug is off by O(1)).
"""
import numpy as np
import pytest

from tinyllm import backends, ops
from tinyllm.model import GPT, GPTConfig
from tinyllm.gradcheck import gradcheck
from tinyllm.tensor import Tensor

try:
    backends.get_backend("c")
except backends.BackendUnavailable as e:
    pytest.skip(f"C backend not available: {e}", allow_module_level=True)

rng = np.random.default_rng(5)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def grads_on(backend, f, arrays):
    """Output and input gradients of sum(f(*inputs) * w) on one backend."""
    with backends.using(backend):
        leaves = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        out = f(*leaves)
        w = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
        (out * Tensor(w)).sum().backward()
        return out.data, [leaf.grad for leaf in leaves]


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name, f, shapes", [
    ("matmul", lambda a, b: a @ b, [(7, 13), (13, 5)]),
    ("matmul batched", lambda a, b: a @ b, [(3, 7, 13), (3, 13, 5)]),
    ("linear", lambda x, w: ops.linear(x, w), [(2, 9, 17), (11, 17)]),
    ("add", lambda a, b: a + b, [(5, 63), (5, 63)]),
    ("silu", ops.silu, [(3, 65)]),
    ("softmax", ops.softmax, [(7, 65)]),
    ("rmsnorm", lambda x, w: ops.rmsnorm(x, w), [(2, 7, 65), (65,)]),
    # q, k, v (B, T, nh * hs) with nh = 3, hs = 16, concatenated as the fused projection lays
    # out qkv; the KV-cache layout (Tq < Tk) has no autograd op: tests/test_c_kernels.py
    # compares its kernels at the same tolerances
    ("attention", lambda q, k, v: ops.causal_self_attention(ops.concat([q, k, v], axis=-1), 3),
     [(2, 67, 48)] * 3),
])
def test_op_gradients_match_numpy(name, f, shapes):
    arrays = [f32(*s) for s in shapes]
    out_c, grads_c = grads_on("c", f, arrays)
    out_np, grads_np = grads_on("numpy", f, arrays)
    assert rel_err(out_c, out_np) < 1e-5, name
    for i, (gc, gn) in enumerate(zip(grads_c, grads_np)):
        assert rel_err(gc, gn) < 1e-4, f"{name}: gradient of input {i}"


def test_embedding_and_cross_entropy_gradients_match_numpy():
    ids = rng.integers(0, 31, (4, 9))
    targets = rng.integers(0, 31, (4, 9))
    targets[1, :4] = -1

    def f(w, logits):
        return ops.embedding(ids, w).sum() + ops.cross_entropy(logits, targets)
    arrays = [f32(31, 6), f32(4, 9, 31)]
    out_c, grads_c = grads_on("c", f, arrays)
    out_np, grads_np = grads_on("numpy", f, arrays)
    assert rel_err(out_c, out_np) < 1e-5
    for gc, gn in zip(grads_c, grads_np):
        assert rel_err(gc, gn) < 1e-4


def test_whole_model_gradients_match_numpy():
    config = GPTConfig(vocab_size=67, block_size=33, n_layer=2, n_head=3, n_embd=48, seed=3)
    idx = rng.integers(0, 67, (3, 33))
    targets = rng.integers(0, 67, (3, 33))
    results = {}
    for backend in ("numpy", "c"):
        with backends.using(backend):
            model = GPT(config)
            _, loss = model(idx, targets)
            loss.backward()
            results[backend] = (loss.item(), {n: p.grad for n, p in model.named_parameters()})
    (loss_np, grads_np), (loss_c, grads_c) = results["numpy"], results["c"]
    assert loss_c == pytest.approx(loss_np, rel=1e-5)
    for name, g in grads_np.items():
        assert rel_err(grads_c[name], g) < 1e-4, name


def test_gradcheck_runs_on_numpy_whatever_the_active_backend():
    backends.set_backend("c")
    gradcheck(ops.silu, [rng.standard_normal((3, 4))])   # float64: the C kernels would refuse it
    assert backends.get_backend().NAME == "c"


def test_training_runs_on_the_c_backend(tmp_path):
    from tinyllm.plot import read_log
    from tinyllm.run import TrainConfig, build_trainer
    data = tmp_path / "text.txt"
    data.write_text("to be or not to be, that is the question\n" * 300)
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), preset="tiny", max_steps=20,
                         batch_size=4, eval_interval=10, eval_batches=2, sample_tokens=0, backend="c",
                         tokenizer="bytes")
    summary = build_trainer(config).train()
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    assert np.isfinite(summary["val_loss"]) and np.mean(losses[-5:]) < np.mean(losses[:5])
