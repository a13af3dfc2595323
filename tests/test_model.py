"""The GPT: contract names and shapes, a whole-model float64 gradient check,
KV-cache generation equal to recomputation, and clear errors on bad input."""
import numpy as np
import pytest

from tinyllm.gradcheck import assert_grad_close, numerical_gradient
from tinyllm.model import GPT, GPTConfig, PRESETS, preset

TINY = dict(vocab_size=11, block_size=7, n_layer=2, n_head=2, n_embd=8)


def contract_shapes(c):
    C, V = c.n_embd, c.vocab_size
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (c.block_size, C)}
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (C,), p + "attn.c_attn.weight": (3 * C, C),
                       p + "attn.c_proj.weight": (C, C), p + "ln_2.weight": (C,),
                       p + "mlp.c_fc.weight": (4 * C, C), p + "mlp.c_proj.weight": (C, 4 * C)})
    shapes.update({"transformer.ln_f.weight": (C,), "lm_head.weight": (V, C)})
    return shapes


def test_parameter_names_and_shapes_follow_the_contract():
    config = GPTConfig(**TINY)
    model = GPT(config)
    assert {n: p.shape for n, p in model.named_parameters()} == contract_shapes(config)
    state = model.state_dict()
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in state.values())


def test_init_scales_residual_projections():
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=64))
    params = dict(model.named_parameters())
    assert abs(params["transformer.h.0.mlp.c_fc.weight"].data.std() - 0.02) < 2e-3
    assert abs(params["transformer.h.0.mlp.c_proj.weight"].data.std() - 0.02 / 4) < 5e-4
    assert np.all(params["transformer.ln_f.weight"].data == 1)


def test_forward_shapes_and_initial_loss_near_uniform():
    model = GPT(preset("tiny"))
    idx = np.random.default_rng(0).integers(0, 256, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 256)
    assert abs(loss.item() - np.log(256)) < 0.1   # small init: nearly uniform predictions
    assert model(idx)[1] is None


def test_whole_model_float64_gradient_check():
    model = GPT(GPTConfig(**TINY)).astype(np.float64)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 11, (2, 7))
    targets = rng.integers(0, 11, (2, 7))
    targets[0, 2] = -1
    # larger weights than the 0.02 init, so every term of the gradient is well above rounding
    for _, p in model.named_parameters():
        p.data = p.data * 20 if p.ndim == 2 else p.data + rng.standard_normal(p.shape) * 0.3
    model.zero_grad()
    model(idx, targets)[1].backward()

    def loss():
        return float(model(idx, targets)[1].data)

    for name, p in model.named_parameters():
        assert_grad_close(p.grad, numerical_gradient(loss, p.data), name, rtol=1e-5, atol=1e-9)


def test_kv_cache_generation_equals_recomputation():
    model = GPT(GPTConfig(**TINY, seed=5))
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    for kwargs in (dict(temperature=1.0), dict(temperature=0.8, top_k=3), dict(top_p=0.7),
                   dict(temperature=0)):
        # 12 new tokens run past block_size 7, exercising the window that slides
        cached = model.generate(prompt, 12, seed=9, **kwargs)
        recomputed = model.generate(prompt, 12, seed=9, use_cache=False, **kwargs)
        assert cached.shape == (2, 15)
        np.testing.assert_array_equal(cached, recomputed)
        np.testing.assert_array_equal(cached[:, :3], prompt)


def test_cached_logits_equal_full_forward():
    from tinyllm.generate import KVCache
    model = GPT(GPTConfig(**TINY))
    idx = np.random.default_rng(1).integers(0, 11, (2, 7))
    full, _ = model(idx)
    cache = KVCache(model.config)
    first, _ = model(idx[:, :4], cache=cache)
    rest = [model(idx[:, t:t + 1], cache=cache)[0].data for t in range(4, 7)]
    np.testing.assert_allclose(np.concatenate([first.data] + rest, axis=1), full.data, rtol=1e-5, atol=1e-6)


def test_sampling_options():
    model = GPT(GPTConfig(**TINY))
    out = model.generate(np.array([[0]]), 5, top_k=1, seed=0)
    assert np.array_equal(out, model.generate(np.array([[0]]), 5, temperature=0))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.array([[0]]), 1, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(np.array([[0]]), 1, top_p=0)


def test_state_dict_round_trip_and_mismatch():
    a, b = GPT(GPTConfig(**TINY, seed=1)), GPT(GPTConfig(**TINY, seed=2))
    b.load_state_dict(a.state_dict())
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(a(idx)[0].data, b(idx)[0].data)
    bigger = GPT(GPTConfig(**{**TINY, "n_embd": 12}))
    with pytest.raises(ValueError, match="shape"):
        bigger.load_state_dict(a.state_dict())
    deeper = GPT(GPTConfig(**{**TINY, "n_layer": 3}))
    with pytest.raises(KeyError, match="missing"):
        deeper.load_state_dict(a.state_dict())


def test_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)


def test_sequence_longer_than_block_size():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="longer than block_size 7"):
        model(np.zeros((1, 8), dtype=np.int64))


def test_token_id_out_of_vocab():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="id 11 is outside"):
        model(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="target 11"):
        model(np.array([[1, 2]]), np.array([[1, 11]]))
    with pytest.raises(TypeError, match="integer"):
        model(np.array([[1.0, 2.0]]))


def test_presets_build_and_report_size():
    assert set(PRESETS) >= {"tiny", "default", "bench", "gpt2"}
    bench = preset("bench")
    assert (bench.n_layer, bench.n_head, bench.n_embd, bench.block_size, bench.vocab_size) == (6, 6, 384, 256, 8192)
    gpt2 = GPTConfig(**PRESETS["gpt2"])
    # the GPT-2 124M shape: untied head adds V*C to the familiar 124M
    n = (gpt2.vocab_size * gpt2.n_embd * 2 + gpt2.block_size * gpt2.n_embd
         + gpt2.n_layer * 12 * gpt2.n_embd ** 2 + (2 * gpt2.n_layer + 1) * gpt2.n_embd)
    assert 124e6 + gpt2.vocab_size * gpt2.n_embd - 1e6 < n < 124e6 + gpt2.vocab_size * gpt2.n_embd + 1e6
    assert "parameters" in GPT(preset("tiny")).summary()
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_residual_lets_go_of_its_branch_and_keeps_the_gradients():
    """model.residual: the branch's data is released once added (the graph kept it for its shape
    alone), and the gradients are the plain add's, exactly."""
    from tinyllm import ops
    from tinyllm.model import residual
    from tinyllm.tensor import Tensor
    rng = np.random.default_rng(4)
    x0, w0 = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 4))
    grads = []
    for add in (residual, lambda a, b: a + b):
        x, w = Tensor(x0, requires_grad=True), Tensor(w0, requires_grad=True)
        branch = ops.linear(x, w)                                          # (B, T, C)
        out = add(x, branch)
        (out * out).sum().backward()
        grads.append((x.grad, w.grad, branch.data.strides))
    (dx, dw, strides), (dx_plain, dw_plain, _) = grads
    np.testing.assert_array_equal(dx, dx_plain)
    np.testing.assert_array_equal(dw, dw_plain)
    assert strides == (0, 0, 0)                                            # nothing held


def test_initialisation_drawn_in_slices_equals_one_draw(monkeypatch):
    """nn._normal fills a slice at a time (no float64 copy of a whole table): the same numbers
    as one draw of the whole shape, so checkpoints and loss curves do not move."""
    from tinyllm import nn
    monkeypatch.setattr(nn, "INIT_CHUNK", 7)                               # many uneven slices
    got = nn._normal(np.random.default_rng(5), 0.02, (9, 5))
    want = np.random.default_rng(5).normal(0.0, 0.02, size=(9, 5)).astype(np.float32)
    np.testing.assert_array_equal(got, want)
