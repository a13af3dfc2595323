"""Quantized weights: the q8_0 / q4_0 formats (round trips, rounding, error bounds), the
quantized layers, the quantized checkpoint and the `quantize` command, and bad input."""
import json

import numpy as np
import pytest

from tinyllm.checkpoint import load_model, save_model
from tinyllm.cli.quantize import main as quantize_main
from tinyllm.errors import CheckpointError
from tinyllm.model import GPT, preset
from tinyllm.quant.formats import BLOCK, FORMATS, dequantize, matmul_q, quantize
from tinyllm.quant.layers import QuantLinear, quantize_model
from tinyllm.safetensors import load_safetensors, save_safetensors
from tinyllm.tensor import no_grad
from tinyllm.tokenizer import ByteTokenizer


def weights(N=7, K=96, seed=0):
    return np.random.default_rng(seed).normal(0, 0.02, size=(N, K)).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_exact(fmt):
    q = quantize(weights(), fmt)
    again = quantize(dequantize(q), fmt)
    assert np.array_equal(dequantize(again), dequantize(q))
    assert np.array_equal(again.q, q.q) and np.array_equal(again.scale, q.scale)


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_bounds(fmt):
    w = weights(N=50, K=128, seed=1)
    q = quantize(w, fmt)
    d = np.abs(np.repeat(q.scale.astype(np.float32), BLOCK, axis=1))   # (N, K): each weight's |d|
    err = np.abs(dequantize(q) - w)
    # rounding to the nearest level errs by at most d / 2; fp16's scale rounding adds 2^-11
    half = d / 2 * (1 + 2 ** -10) + 1e-12
    if fmt == "q8_0":
        assert (err <= half).all()
    else:   # only a value near -m (which clips at +7) may err by up to d
        ratio = w / np.repeat(q.scale.astype(np.float32), BLOCK, axis=1)
        inside = ratio <= 7.5
        assert (err[inside] <= half[inside]).all() and (err <= d * (1 + 2 ** -10)).all()


def test_rounding_is_half_to_even():
    # one block: absmax 127 gives d = 1 exactly, so w / d sits exactly on the halves
    w = np.zeros((1, 32), np.float32)
    w[0, :6] = [127, 0.5, 1.5, 2.5, -0.5, -2.5]
    q = quantize(w, "q8_0")
    assert q.scale[0, 0] == 1
    assert q.q[0, :6].tolist() == [127, 0, 2, 2, 0, -2]
    # q4_0: m = -8 gives d = 1; 0.5 -> 0, 1.5 -> 2, -2.5 -> -2, and 9 clips to 7
    w4 = np.zeros((1, 32), np.float32)
    w4[0, :5] = [-8, 0.5, 1.5, -2.5, 7]
    back = dequantize(quantize(w4, "q4_0"))
    assert back[0, :5].tolist() == [-8, 0, 2, -2, 7]


def test_q4_packing_layout():
    # byte j of a block: value j in the low nibble, value j + 16 in the high one (stored q + 8)
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 16], w[0, 1] = -8, 3, 1
    q = quantize(w, "q4_0")
    assert q.q.shape == (1, 16) and q.q.dtype == np.uint8
    assert q.q[0, 0] == (0 | (11 << 4)) and q.q[0, 1] == 9 | (8 << 4)


def test_zero_block_and_bad_width():
    assert not dequantize(quantize(np.zeros((2, 32), np.float32), "q4_0")).any()
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(np.zeros((2, 40), np.float32), "q8_0", name="lm_head.weight")
    with pytest.raises(ValueError, match="unknown quantization format"):
        quantize(np.zeros((2, 32), np.float32), "q3")


@pytest.mark.parametrize("fmt", FORMATS)
def test_matmul_q_is_x_at_dequantized_w(fmt):
    q = quantize(weights(N=13, K=160), fmt)
    x = np.random.default_rng(2).normal(size=(5, 160)).astype(np.float32)
    # float32 sums in another order: relative error of a few ulps times sqrt(K)
    np.testing.assert_allclose(matmul_q(x, q), x @ dequantize(q).T, rtol=1e-5, atol=1e-6)


def small_gpt(seed=0):
    np.random.seed(seed)
    return GPT(preset("tiny", n_embd=32))


@pytest.mark.parametrize("recipe", ["q8_0", "q4_0", "q4_mixed"])
def test_quantized_model_matches_float_logits(recipe):
    model, idx = small_gpt(), np.array([[1, 2, 3, 4, 5]])
    with no_grad():
        ref = model(idx)[0].data
        layers = quantize_model(model, recipe)
        got = model(idx)[0].data
    assert isinstance(model.lm_head, QuantLinear)
    assert layers["lm_head"] == ("q4_0" if recipe == "q4_0" else "q8_0")
    assert layers["transformer.h.0.mlp.c_fc"] == ("q8_0" if recipe == "q8_0" else "q4_0")
    # random-init weights are the worst case (no outliers for the scale to waste): q4's levels
    # are ~1/4 of the weights' spread, so a logit moves by ~10 % of their range, q8's ~0.5 %
    assert np.abs(got - ref).max() < (0.02 if recipe == "q8_0" else 0.2) * np.abs(ref).max()


def test_quantized_layer_refuses_gradients():
    model = small_gpt()
    quantize_model(model, "q8_0")
    with pytest.raises(RuntimeError, match="no_grad"):
        model(np.array([[1, 2]]))


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_model(path, small_gpt(), ByteTokenizer(), 7, "run")
    return path


@pytest.mark.parametrize("recipe", ["q8_0", "q4_0", "q4_mixed"])
def test_quantize_command_and_load(ckpt, tmp_path, capsys, recipe):
    out = tmp_path / f"q-{recipe}.safetensors"
    assert quantize_main(["--ckpt", str(ckpt), "--format", recipe, "--out", str(out)]) == 0
    assert "bytes" in capsys.readouterr().out
    tensors, meta = load_safetensors(out)
    quant = json.loads(meta["quant"])
    assert quant["format"] == recipe and quant["version"] == "1"
    assert tensors["transformer.h.0.attn.c_attn.weight.q"].dtype == (
        np.int8 if recipe == "q8_0" else np.uint8)
    assert tensors["lm_head.weight.scale"].shape == (256, 1)
    assert "lm_head.weight" not in tensors and "transformer.wpe.weight" in tensors
    assert out.stat().st_size < 0.35 * ckpt.stat().st_size
    model, _, loaded = load_model(out)
    assert loaded["quant"]["format"] == recipe and loaded["step"] == 7
    reference = small_gpt()
    quantize_model(reference, recipe)
    idx = np.array([[3, 1, 4, 1, 5]])
    with no_grad():
        assert np.array_equal(model(idx)[0].data, reference(idx)[0].data)
    # the quantized weights still count: every value, in the bytes the file holds
    assert model.num_parameters() == small_gpt().num_parameters()
    assert model.weight_bytes() == sum(a.nbytes for a in tensors.values())
    assert f"{model.weight_bytes() / 2 ** 20:.1f} MiB" in model.summary()
    assert "inference only" in model.summary()


def test_summary_counts_float_models_as_before():
    model = small_gpt()
    assert model.num_parameters() == sum(p.size for p in model.parameters())
    assert model.weight_bytes() == 4 * model.num_parameters()
    assert "MFLOP per training token" in model.summary()


def test_float_checkpoint_still_loads(ckpt):
    model, _, meta = load_model(ckpt)
    assert meta["quant"] is None and not isinstance(model.lm_head, QuantLinear)


def test_quantize_refuses_quantized_input_and_bad_width(ckpt, tmp_path, capsys):
    q = tmp_path / "q.safetensors"
    assert quantize_main(["--ckpt", str(ckpt), "--out", str(q)]) == 0
    again = tmp_path / "qq.safetensors"
    assert quantize_main(["--ckpt", str(q), "--out", str(again)]) == 1
    assert "already quantized" in capsys.readouterr().err and not again.exists()
    narrow = tmp_path / "narrow.safetensors"
    save_model(narrow, GPT(preset("tiny")), ByteTokenizer(), 0, "run")   # n_embd 16
    out = tmp_path / "narrow-q.safetensors"
    assert quantize_main(["--ckpt", str(narrow), "--out", str(out)]) == 1
    assert "multiple of 32" in capsys.readouterr().err and not out.exists()


def rewrite(path, out, change_tensors=None, change_quant=None):
    tensors, meta = load_safetensors(path)
    quant = json.loads(meta["quant"])
    if change_tensors:
        change_tensors(tensors)
    if change_quant:
        change_quant(quant)
    save_safetensors(out, tensors, {**meta, "quant": json.dumps(quant)})
    return out


@pytest.mark.parametrize("damage, message", [
    (dict(change_quant=lambda q: q.update(format="q2_k")), "does not know"),
    (dict(change_quant=lambda q: q.update(version="9")), "quantization version"),
    (dict(change_tensors=lambda t: t.update({"lm_head.weight.scale": t["lm_head.weight.scale"][:3]})),
     "lm_head.weight.scale"),
    (dict(change_tensors=lambda t: t.pop("transformer.h.1.mlp.c_fc.weight.q")),
     "transformer.h.1.mlp.c_fc.weight.q"),
    (dict(change_tensors=lambda t: t.update({
        "lm_head.weight.q": t["lm_head.weight.q"][:, :16]})), "lm_head.weight"),
])
def test_damaged_quantized_files_are_refused(ckpt, tmp_path, damage, message):
    q = tmp_path / "q.safetensors"
    assert quantize_main(["--ckpt", str(ckpt), "--out", str(q)]) == 0
    bad = rewrite(q, tmp_path / "bad.safetensors", **damage)
    with pytest.raises(CheckpointError, match=message):
        load_model(bad)


def test_compare_against_itself_and_the_eval_command(ckpt, tmp_path, capsys):
    from tinyllm.cli.eval import main as eval_main
    from tinyllm.quant.compare import compare
    model = small_gpt()
    ids = np.random.default_rng(0).integers(0, 256, 200)
    same = compare(model, model, ids, max_windows=5)
    assert same["ppl_change"] == 0 and abs(same["kl"]) < 1e-12 and same["same_top"] == 1
    assert same["tokens"] == 5 * 16
    q = tmp_path / "q.safetensors"
    assert quantize_main(["--ckpt", str(ckpt), "--format", "q4_mixed", "--out", str(q)]) == 0
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question. " * 20)
    assert eval_main(["--ckpt", str(q), "--reference", str(ckpt), "--data", str(text)]) == 0
    out = capsys.readouterr().out
    assert "(q4_mixed)" in out and "KL divergence" in out and "same top token" in out
    text.write_text("short")
    assert eval_main(["--ckpt", str(q), "--reference", str(ckpt), "--data", str(text)]) == 1
    assert "fewer than one window" in capsys.readouterr().err
