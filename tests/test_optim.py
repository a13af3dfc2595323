"""Tests of tinyllm/optim.py: AdamW, param_groups, cosine_lr, clip_grad_norm.

AdamW is checked against the AdamW formulas written out again here in float64
(independent of the backend kernel) and, when torch is installed, against
torch.optim.AdamW. This file does not test the kernels' backend parity (that
is the parity tests' job). Read tinyllm/optim.py for what is tested.
"""
import math

import numpy as np
import pytest

from tinyllm.optim import AdamW, clip_grad_norm, cosine_lr, param_groups
from tinyllm.tensor import Tensor

SHAPES = [(4, 3), (3,), (2, 5), (5,)]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in SHAPES]


def grads_for(step, dtype):
    """A different random gradient per parameter and step, the same in every run."""
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def two_groups(params, **extra):
    # the second group overrides weight_decay (0) and lr; betas/eps come from the defaults
    return [{"params": params[:2], **extra},
            {"params": params[2:], "weight_decay": 0.0, "lr": 2e-2}]


def reference_adamw(p, g, m, v, step, lr, beta1, beta2, eps, wd):
    """The AdamW step of Loshchilov & Hutter in float64; returns new (p, m, v)."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g ** 2
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    p = p - lr * wd * p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


# ----------------------------------------------------------------------------
# AdamW

# float64 runs the same formula in the same precision, so only rounding order
# differs (~1e-16); float32 keeps params and moments in float32, whose
# rounding (~6e-8 per operation) accumulates over the ops of 5 steps (about
# 2e-7 observed), so 1e-5 leaves margin without hiding a wrong formula.
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_adamw_matches_float64_reference(dtype, rtol):
    params = make_params(dtype)
    lr, betas, eps, wd = 1e-2, (0.9, 0.95), 1e-8, 0.1
    opt = AdamW(two_groups(params), lr=lr, betas=betas, eps=eps, weight_decay=wd)
    ref = [p.data.astype(np.float64) for p in params]
    ref_m = [np.zeros_like(r) for r in ref]
    ref_v = [np.zeros_like(r) for r in ref]
    group_hp = [(lr, wd)] * 2 + [(2e-2, 0.0)] * 2      # (lr, wd) per param
    for step in range(1, 6):
        grads = grads_for(step, dtype)
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt.step()
        for i, g in enumerate(grads):
            ref[i], ref_m[i], ref_v[i] = reference_adamw(
                ref[i], g.astype(np.float64), ref_m[i], ref_v[i], step,
                group_hp[i][0], *betas, eps, group_hp[i][1])
    for i, p in enumerate(params):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, ref[i], rtol=rtol, atol=rtol * 1e-2,
                                   err_msg=f"param {i} {SHAPES[i]}")
    state = opt.state_dict()
    assert state["step"] == 5
    for i in range(len(params)):
        np.testing.assert_allclose(state["exp_avg"][i], ref_m[i], rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(state["exp_avg_sq"][i], ref_v[i], rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_adamw_matches_torch(dtype, rtol):
    torch = pytest.importorskip("torch")
    torch_dtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    params = make_params(dtype)
    tparams = [torch.nn.Parameter(torch.tensor(p.data.copy(), dtype=torch_dtype)) for p in params]
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    opt = AdamW(two_groups(params), **kwargs)
    topt = torch.optim.AdamW(two_groups(tparams), **kwargs)
    for step in range(1, 6):
        for p, tp, g in zip(params, tparams, grads_for(step, dtype)):
            p.grad = g.copy()
            tp.grad = torch.tensor(g.copy(), dtype=torch_dtype)
        opt.step()
        topt.step()
    for i, (p, tp) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=rtol * 1e-2,
                                   err_msg=f"param {i} {SHAPES[i]}")


def test_state_dict_round_trip():
    params_a, params_b = make_params(np.float32), make_params(np.float32)
    opt_a = AdamW(two_groups(params_a), lr=1e-2)
    for step in range(1, 4):
        for p, g in zip(params_a, grads_for(step, np.float32)):
            p.grad = g
        opt_a.step()
    for pa, pb in zip(params_a, params_b):
        pb.data[...] = pa.data
    opt_b = AdamW(two_groups(params_b), lr=1e-2)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.state_dict()["step"] == 3
    for step in range(4, 6):
        for pa, pb, g in zip(params_a, params_b, grads_for(step, np.float32)):
            pa.grad, pb.grad = g.copy(), g.copy()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_state_dict_is_a_copy():
    params = make_params(np.float32)
    opt = AdamW(params)
    saved = opt.state_dict()
    for p, g in zip(params, grads_for(1, np.float32)):
        p.grad = g
    opt.step()
    assert saved["step"] == 0 and all(not m.any() for m in saved["exp_avg"])


def test_load_state_dict_rejects_mismatches():
    opt = AdamW(make_params(np.float32))
    good = opt.state_dict()
    with pytest.raises(ValueError, match="4 parameters"):
        opt.load_state_dict({**good, "exp_avg": good["exp_avg"][:3]})
    with pytest.raises(ValueError, match=r"exp_avg_sq\[1\] has shape \(4,\)"):
        opt.load_state_dict({**good, "exp_avg_sq": [good["exp_avg_sq"][0], np.zeros(4)]
                             + good["exp_avg_sq"][2:]})
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({"step": 1})
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict({**good, "step": -1})


def test_step_skips_params_without_grad_and_zero_grad_clears():
    params = make_params(np.float32)
    before = [p.data.copy() for p in params]
    opt = AdamW(params, lr=1e-2)
    params[0].grad = np.ones(SHAPES[0], dtype=np.float32)
    opt.step()
    assert not np.array_equal(params[0].data, before[0])
    for p, b in zip(params[1:], before[1:]):
        np.testing.assert_array_equal(p.data, b)
    state = opt.state_dict()
    assert state["step"] == 1 and not state["exp_avg"][1].any()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_step_rejects_mismatched_grad_before_updating():
    params = make_params(np.float32)
    before = [p.data.copy() for p in params]
    opt = AdamW(params)
    params[0].grad = np.ones(SHAPES[0], dtype=np.float32)
    params[1].grad = np.ones((7,), dtype=np.float32)
    with pytest.raises(ValueError, match=r"gradient of shape \(7,\)"):
        opt.step()
    params[1].grad = np.ones(SHAPES[1], dtype=np.float64)
    with pytest.raises(ValueError, match="float64"):
        opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)    # nothing was half-updated
    assert opt.state_dict()["step"] == 0


def test_groups_defaults_extra_keys_and_set_lr():
    params = make_params(np.float32)
    opt = AdamW(two_groups(params, names=["a", "b"]), lr=1e-3, betas=[0.8, 0.9], eps=1e-7)
    g0, g1 = opt.param_groups
    assert (g0["lr"], g0["weight_decay"], g0["betas"], g0["eps"]) == (1e-3, 0.1, (0.8, 0.9), 1e-7)
    assert (g1["lr"], g1["weight_decay"]) == (2e-2, 0.0)
    assert g0["names"] == ["a", "b"]
    state = opt.state_dict()
    assert [m.dtype for m in state["exp_avg"]] == [np.float32] * 4
    assert [m.shape for m in state["exp_avg_sq"]] == SHAPES
    opt.set_lr(5e-4)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]
    # a plain iterable (a generator, like model.parameters()) makes one group
    assert len(AdamW(p for p in params).param_groups) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1e-3}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"betas": (1.0, 0.95)}, "beta1"),
    ({"betas": (0.9, -0.1)}, "beta2"),
    ({"eps": 0.0}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"),
])
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdamW(make_params(np.float32), **kwargs)


def test_bad_params_raise():
    params = make_params(np.float32)
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(ValueError, match="more than once"):
        AdamW([{"params": params[:2]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="group 1 has an empty"):
        AdamW([{"params": params}, {"params": []}])
    with pytest.raises(ValueError, match="group 1: lr"):
        AdamW([{"params": params[:1]}, {"params": params[1:], "lr": -1.0}])
    with pytest.raises(TypeError, match="single parameter"):
        AdamW(params[0])


# ----------------------------------------------------------------------------
# param_groups

def test_param_groups_split():
    def param(shape, embedding=False):
        p = Tensor(np.zeros(shape, dtype=np.float32), requires_grad=True)
        if embedding:
            p.is_embedding = True    # what nn.Embedding's Parameter carries
        return p

    named = [("wte.weight", param((10, 4), embedding=True)), ("ln.weight", param((4,))),
             ("fc.weight", param((8, 4))), ("fc.bias", param((8,)))]
    decay, no_decay = param_groups(named, weight_decay=0.1)
    assert decay["names"] == ["fc.weight"] and decay["weight_decay"] == 0.1
    assert no_decay["names"] == ["wte.weight", "ln.weight", "fc.bias"]
    assert no_decay["weight_decay"] == 0.0
    assert [p.data.shape for p in decay["params"]] == [(8, 4)]

    decay, no_decay = param_groups(named, weight_decay=0.1, decay_embeddings=True)
    assert decay["names"] == ["wte.weight", "fc.weight"]
    assert no_decay["names"] == ["ln.weight", "fc.bias"]

    only_matrices = param_groups(named[2:3], weight_decay=0.1)
    assert [g["names"] for g in only_matrices] == [["fc.weight"]]

    opt = AdamW(param_groups(named, weight_decay=0.1), lr=1e-3)   # extra "names" key accepted
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


# ----------------------------------------------------------------------------
# cosine_lr

def test_cosine_lr_values():
    kw = {"max_lr": 1.0, "warmup_steps": 10, "max_steps": 110, "min_lr": 0.1}
    assert cosine_lr(0, **kw) == pytest.approx(0.1)          # max_lr / warmup_steps
    assert cosine_lr(4, **kw) == pytest.approx(0.5)
    assert cosine_lr(9, **kw) == pytest.approx(1.0)          # last warmup step
    assert cosine_lr(10, **kw) == pytest.approx(1.0)         # decay starts at max_lr
    assert cosine_lr(60, **kw) == pytest.approx(0.55)        # midpoint: (max + min) / 2
    assert cosine_lr(110, **kw) == pytest.approx(0.1)
    assert cosine_lr(1000, **kw) == pytest.approx(0.1)
    decay = [cosine_lr(s, **kw) for s in range(10, 120)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_lr_edge_cases():
    # no warmup: step 0 is max_lr, decays to min_lr (default 0)
    assert cosine_lr(0, 1.0, 0, 100) == 1.0
    assert cosine_lr(50, 1.0, 0, 100) == pytest.approx(0.5)
    assert cosine_lr(100, 1.0, 0, 100) == 0.0
    # max_steps <= warmup_steps: the warmup runs to its end, then min_lr
    assert cosine_lr(4, 1.0, 10, 5, 0.1) == pytest.approx(0.5)
    assert cosine_lr(10, 1.0, 10, 5, 0.1) == 0.1
    assert cosine_lr(0, 1.0, 0, 0, 0.1) == 0.1
    for args in [(-1, 1.0, 10, 100), (0, 1.0, -1, 100), (0, 1.0, 10, 100, 2.0)]:
        with pytest.raises(ValueError):
            cosine_lr(*args)


# ----------------------------------------------------------------------------
# clip_grad_norm

def grads_tensors(*arrays):
    out = []
    for a in arrays:
        t = Tensor(np.zeros_like(a), requires_grad=True)
        t.grad = a
        out.append(t)
    return out


def test_clip_grad_norm_scales_to_max_norm():
    params = grads_tensors(np.array([3.0, 0.0], dtype=np.float32),
                           np.array([[4.0]], dtype=np.float32))
    params.append(Tensor(np.zeros(3, dtype=np.float32), requires_grad=True))   # grad None: skipped
    norm = clip_grad_norm(params, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(params[0].grad, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(params[1].grad, [[0.8]], rtol=1e-5)
    new_norm = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params[:2]))
    assert new_norm == pytest.approx(1.0, rel=1e-5)
    assert params[1].grad.dtype == np.float32


def test_clip_grad_norm_leaves_small_grads():
    params = grads_tensors(np.array([0.3, 0.4], dtype=np.float32))
    assert clip_grad_norm(params, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(params[0].grad, np.array([0.3, 0.4], dtype=np.float32))


def test_clip_grad_norm_is_accurate_in_float64():
    # 10^6 float32 squares summed in float32 would drift; the float64 sum does not
    g = np.full(10 ** 6, 0.1, dtype=np.float32)
    norm = clip_grad_norm(grads_tensors(g), max_norm=1e9)
    assert norm == pytest.approx(math.sqrt(10 ** 6 * float(np.float32(0.1)) ** 2), rel=1e-12)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_grad_norm_non_finite_does_not_scale(bad):
    params = grads_tensors(np.array([bad, 1.0], dtype=np.float32),
                           np.array([2.0], dtype=np.float32))
    norm = clip_grad_norm(params, max_norm=1.0)
    assert math.isinf(norm) if bad == np.inf else math.isnan(norm)
    np.testing.assert_array_equal(params[1].grad, [2.0])


def test_clip_grad_norm_rejects_bad_max_norm():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([], max_norm=0.0)
