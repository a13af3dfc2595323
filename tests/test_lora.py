"""LoRA: gradient checks, identity at initialisation, merge, what trains, the adapter files, and peft."""
import io
import json
import pathlib
import sys

import numpy as np
import pytest

from tests.finetune_helpers import instructions, labelled, tiny_base, write_jsonl
from tinyllm.chat import Chat
from tinyllm.checkpoint import load_model, save_model
from tinyllm.cli.chat import main as chat_main
from tinyllm.cli.sample import main as sample_main
from tinyllm.errors import CheckpointError
from tinyllm.finetune import lora, sft
from tinyllm.finetune.run import (FinetuneConfig, build_finetune_trainer, finish, load_for_inference,
                                  load_with_adapter)
from tinyllm.gradcheck import gradcheck
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import Sampling
from tinyllm.tensor import Tensor
from tinyllm.tokenizer import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
X = np.random.default_rng(5).integers(0, 290, size=(2, 11))                # (B, T)


def test_lora_linear_gradients_float64():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5)), rng.standard_normal((7, 5))     # (B, T, in), (out, in)
    a, b, bias = rng.standard_normal((2, 5)), rng.standard_normal((7, 2)), rng.standard_normal(7)
    gradcheck(lambda x, w, a, b: lora.lora_linear(x, w, a, b, 1.5), [x, w, a, b])
    frozen = Tensor(w)                                                     # no gradient: dW skipped
    gradcheck(lambda x, a, b, bias: lora.lora_linear(x, frozen, a, b, 0.5, bias), [x, a, b, bias])
    # act "silu" (the MLP's c_proj): silu(x) made again in the backward, both paths through it
    gradcheck(lambda x, w, a, b: lora.lora_linear(x, w, a, b, 1.5, act="silu"), [x, w, a, b])
    gradcheck(lambda x, a, b: lora.lora_linear(x, frozen, a, b, 0.5, act="silu"), [x, a, b])


def test_lora_layer_gradients_float64_and_frozen_weight_gets_none():
    layer = lora.LoRALinear(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1,
                                          n_embd=4)).lm_head, 2, 4.0, 0.0,
                            np.random.default_rng(0), np.random.default_rng(1))
    layer.astype(np.float64)
    layer.lora_B.weight.data = np.random.default_rng(2).standard_normal((8, 2))
    layer.weight.requires_grad = False
    x = np.random.default_rng(3).standard_normal((3, 4))

    def f(x, a, b):
        layer.lora_A.weight, layer.lora_B.weight = a, b                    # the checked leaves
        return layer(x)
    gradcheck(f, [x, layer.lora_A.weight.data.copy(), layer.lora_B.weight.data.copy()])
    assert layer.weight.grad is None


def test_lora_layer_with_act_equals_the_activation_applied_first():
    """act="silu" fused (no dropout) and taken apart (a dropout, here inactive in eval mode,
    needs silu(x) as a tensor): the same output and gradients, to float64 round-off."""
    results = []
    for p in (0.0, 0.5):
        layer = lora.LoRALinear(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1,
                                              n_embd=4)).lm_head, 2, 4.0, p,
                                np.random.default_rng(0), np.random.default_rng(1))
        layer.astype(np.float64)
        layer.lora_B.weight.data = np.random.default_rng(2).standard_normal((8, 2))
        layer.eval()
        x = Tensor(np.random.default_rng(3).standard_normal((3, 4)), requires_grad=True)
        y = layer(x, act="silu")
        (y * y).sum().backward()
        results.append((y.data, x.grad, layer.lora_A.weight.grad, layer.lora_B.weight.grad))
    for fused, apart in zip(*results):
        np.testing.assert_allclose(fused, apart, rtol=1e-12, atol=1e-14)


@pytest.fixture
def base(tmp_path):
    return tiny_base(tmp_path)


def test_identity_at_init_and_merge_equals_unmerged(base):
    _, _, model = base
    before = model(X)[0].data.copy()
    wrapped = lora.apply_lora(model, lora.LoRAConfig(r=4, alpha=8))
    assert len(wrapped) == 2 * 4 and "transformer.h.1.mlp.c_proj" in wrapped
    np.testing.assert_array_equal(model(X)[0].data, before)                 # B = 0: exactly the base
    rng = np.random.default_rng(1)
    for m in lora.lora_layers(model):
        m.lora_B.weight.data = rng.standard_normal(m.lora_B.weight.shape).astype(np.float32) * 0.1
    unmerged = model(X)[0].data.copy()
    assert np.abs(unmerged - before).max() > 1e-3
    for m in lora.lora_layers(model):
        m.merge()
    np.testing.assert_allclose(model(X)[0].data, unmerged, rtol=1e-6, atol=1e-6)
    plain = GPT(model.config)
    plain.load_state_dict(lora.merged_state_dict(model))
    for m in lora.lora_layers(model):
        m.unmerge()
    np.testing.assert_allclose(model(X)[0].data, unmerged, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(plain(X)[0].data, unmerged, rtol=1e-6, atol=1e-6)


def run(kind, base_path, data, out, **kw):
    config = FinetuneConfig(**{**dict(base=str(base_path), data=str(data), out=str(out), max_steps=4,
                                      eval_interval=2, eval_batches=1, batch_size=4, lr=1e-2,
                                      lora=True, lora_r=4), **kw})
    trainer = build_finetune_trainer(kind, config)
    trainer.train()
    finish(trainer)
    return trainer


def test_only_lora_parameters_change(tmp_path, base):
    base_path, _, model = base
    trainer = run("classify", base_path, write_jsonl(tmp_path / "c.jsonl", labelled()), tmp_path / "c")
    after = trainer.model.state_dict()
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained == {n for n in after if ".lora_" in n} | {"score.weight"}
    for name, array in model.state_dict().items():
        if name != "lm_head.weight":
            np.testing.assert_array_equal(after[name], array, err_msg=name)
    assert any(np.abs(after[n]).max() > 0 for n in after if n.endswith("lora_B.weight"))
    assert len(trainer.optimizer.exp_avg) == len(trained)


def test_adapter_files_round_trip(tmp_path, base):
    base_path = base[0]
    trainer = run("sft", base_path, write_jsonl(tmp_path / "s.jsonl", instructions()), tmp_path / "s",
                  merge=True)
    out = tmp_path / "s"
    config = json.loads((out / lora.ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16.0
    assert sorted(config["target_modules"]) == ["c_attn", "c_fc", "c_proj"]
    assert config["modules_to_save"] == ["wte", "lm_head"] and config["bias"] == "none"
    _, tensors, _ = lora.read_adapter(out)
    assert tensors["transformer.h.0.attn.c_attn.lora_A.weight"].shape == (4, 32)
    assert tensors["transformer.h.0.attn.c_attn.lora_B.weight"].shape == (96, 4)
    model, tokenizer = load_with_adapter(base_path, out)
    expected = trainer.model(X)[0].data
    np.testing.assert_array_equal(model(X)[0].data, expected)
    assert tokenizer.fingerprint() == trainer.tokenizer.fingerprint()
    assert sample_main(["--ckpt", str(base_path), "--adapter", str(out), "--instruction",
                        "--prompt", "swap cat dog", "--max-new-tokens", "4", "--temperature", "0"]) == 0
    merged, _, meta = load_model(out / "merged.safetensors")
    assert meta["finetune"] == {} and type(merged) is GPT
    np.testing.assert_allclose(merged(X)[0].data, expected, rtol=1e-5, atol=1e-5)


def test_chat_takes_an_adapter_and_speaks_the_fine_tuning_template(tmp_path, base, monkeypatch, capsys):
    base_path = base[0]
    run("sft", base_path, write_jsonl(tmp_path / "s.jsonl", instructions()), tmp_path / "s")
    model, tokenizer, meta = load_for_inference(base_path, tmp_path / "s")
    assert meta["step"] == 0 and tokenizer.special_tokens[sft.END] == model.config.vocab_size - 1
    chat = Chat(model.eval(), tokenizer, Sampling(temperature=0), 6)
    "".join(chat.say("swap cat dog"))
    message = list(sft.prompt_ids(tokenizer, "swap cat dog"))   # the markers as single ids
    assert chat.turns[0][:len(message)] == message
    assert chat.turns[0][-1] == tokenizer.special_tokens[sft.END] and chat.stops[-1] == sft.END
    monkeypatch.setattr(sys, "stdin", io.StringIO("swap cat dog\n/quit\n"))
    assert chat_main(["--ckpt", str(base_path), "--adapter", str(tmp_path / "s"),
                      "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert "prefill:" in capsys.readouterr().err
    assert chat_main(["--ckpt", str(base_path), "--instruction"]) == 1
    assert "--instruction is generate's" in capsys.readouterr().err


def test_an_adapter_on_a_base_with_another_tokenizer_is_refused(tmp_path, base):
    run("sft", base[0], write_jsonl(tmp_path / "s.jsonl", instructions()), tmp_path / "s")
    other = Tokenizer.train("completely different words here " * 50, 280, progress=False)
    model = GPT(GPTConfig(vocab_size=other.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32))
    save_model(tmp_path / "other.safetensors", model, other, 0, "x")
    with pytest.raises(CheckpointError, match="trained on a base with another tokenizer"):
        load_with_adapter(tmp_path / "other.safetensors", tmp_path / "s")


def test_peft_loads_our_adapter_onto_the_torch_model(tmp_path, base):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    sys.path.insert(0, str(ROOT / "examples"))
    from torch_gpt import TorchGPT
    base_path = base[0]
    trainer = run("sft", base_path, write_jsonl(tmp_path / "s.jsonl", instructions()), tmp_path / "s")
    ours = trainer.model
    # the base as the fine-tuning run saw it: the tokens' rows added (then overwritten by the adapter)
    start = {n: a for n, a in ours.state_dict().items() if ".lora_" not in n}
    torch_model = TorchGPT(ours.config)
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in start.items()})
    peft_model = peft.PeftModel.from_pretrained(torch_model, str(tmp_path / "s"))
    with torch.no_grad():
        theirs = peft_model(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(theirs, ours(X)[0].data, rtol=1e-5, atol=1e-5)
