"""Fine-tuning: the template and its prompt mask, added special tokens, classification, runs and bad input."""
import json

import numpy as np
import pytest

from tests.finetune_helpers import instructions, labelled, tiny_base, write_jsonl
from tinyllm import backends, ops
from tinyllm.checkpoint import load_model
from tinyllm.cli.finetune import main
from tinyllm.data.examples import ExampleLoader
from tinyllm.errors import DataError
from tinyllm.finetune import sft
from tinyllm.finetune.classify import GPTClassifier, read_labelled
from tinyllm.finetune.lora import named_modules
from tinyllm.finetune.run import FinetuneConfig, build_finetune_trainer, finish
from tinyllm.tensor import Tensor


@pytest.fixture
def base(tmp_path):
    return tiny_base(tmp_path)


def extended(base):
    _, tokenizer, model = base
    tokenizer, added = sft.add_special_tokens(model, tokenizer)
    return model, tokenizer, added


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi cat"},
        {"role": "assistant", "content": "the cat"}, {"role": "user", "content": "and dog"},
        {"role": "assistant", "content": "a dog"}]


def test_special_tokens_are_added_as_mean_rows(base):
    _, tokenizer, model = base
    V = tokenizer.vocab_size
    wte, head = model.transformer.wte.weight.data.copy(), model.lm_head.weight.data.copy()
    tokenizer, added = sft.add_special_tokens(model, tokenizer)
    assert added == 4 and tokenizer.vocab_size == V + 4 == model.config.vocab_size
    for table, old in ((model.transformer.wte.weight.data, wte), (model.lm_head.weight.data, head)):
        assert table.shape == (V + 4, 32)
        np.testing.assert_array_equal(table[:V], old)
        np.testing.assert_allclose(table[V:], np.repeat(old.mean(0, keepdims=True), 4, 0), rtol=1e-6)
    ids = tokenizer.encode("<|user|>\nhi<|end|>", allowed_special="all")
    assert ids[0] == tokenizer.special_tokens[sft.USER] and ids[-1] == tokenizer.special_tokens[sft.END]
    assert sft.add_special_tokens(model, tokenizer)[1] == 0            # a second time adds nothing


def test_prompt_is_masked_and_the_end_token_trained(base):
    model, tokenizer, _ = extended(base)
    ids, trained = sft.encode(CHAT, tokenizer)
    end = tokenizer.special_tokens[sft.END]
    (x, y), = sft.examples([(1, CHAT)], tokenizer, 100)[0]
    np.testing.assert_array_equal(x, ids[:-1])
    kept = y[y >= 0]
    assert tokenizer.decode(kept.tolist()) == "the cat<|end|>a dog<|end|>"
    assert list(kept).count(end) == 2 and y[-1] == end                  # each answer's end token
    (_, y_all), = sft.examples([(1, CHAT)], tokenizer, 100, mask_prompt=False)[0]
    np.testing.assert_array_equal(y_all, ids[1:])


def test_prompt_positions_get_exactly_zero_gradient(base):
    """Two chats with other prompts of the same length: prompt positions get no gradient in either."""
    model, tokenizer, _ = extended(base)
    other = [dict(m, content=m["content"].replace("cat", "dog").replace("brief", "short"))
             if m["role"] != "assistant" else m for m in CHAT]
    grads = []
    for chat in (CHAT, other):
        (x, y), = sft.examples([(1, chat)], tokenizer, 100)[0]
        logits = Tensor(model(x[None])[0].data, requires_grad=True)      # (1, T, V), a leaf
        ops.cross_entropy(logits, y[None]).backward()
        prompt = y < 0
        assert prompt.sum() > 5 and np.all(logits.grad[0][prompt] == 0.0)
        assert np.all(np.abs(logits.grad[0][~prompt]).sum(-1) > 0)
        grads.append(logits.grad[0][prompt])
    assert grads[0].shape == grads[1].shape


def test_long_examples_are_truncated_and_counted(base):
    model, tokenizer, _ = extended(base)
    long = [{"role": "user", "content": "the cat " * 60}, {"role": "assistant", "content": "a"}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    out, truncated = sft.examples([(1, long), (2, short)], tokenizer, 16)
    assert truncated == 1 and len(out[0][0]) == 16 and len(out[1][0]) < 16


def test_prompt_ids_end_at_the_assistant_token(base):
    model, tokenizer, _ = extended(base)
    ids = sft.prompt_ids(tokenizer, "hi cat")
    assert ids[-2] == tokenizer.special_tokens[sft.ASSISTANT] and tokenizer.decode(ids[-1:]) == "\n"


def test_example_loader_pads_and_resumes_exactly():
    examples = [(np.arange(n), np.arange(n)) for n in (3, 5, 2, 4, 6)]
    loader = ExampleLoader(examples, 2, pad_id=99, seed=1)
    x, y = loader.next_batch()
    assert x.shape[0] == 2 and (x == 99).sum() == (y == -1).sum()
    state = json.loads(json.dumps(loader.state_dict()))
    ahead = [loader.next_batch() for _ in range(5)]
    again = ExampleLoader(examples, 2, pad_id=99, seed=7)
    again.load_state_dict(state)
    for (a, b), (c, d) in zip(ahead, (again.next_batch() for _ in range(5))):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_classification_examples_and_head(tmp_path, base):
    _, tokenizer, model = base
    rows = labelled()
    examples, labels, truncated = read_labelled(write_jsonl(tmp_path / "c.jsonl", rows), tokenizer, 48)
    assert labels == ["early", "late"] and truncated == 0
    x, y = examples[0]
    assert (y >= 0).sum() == 1 and y[-1] == labels.index(rows[0]["label"])
    clf = GPTClassifier.from_gpt(model, labels)
    assert not hasattr(clf, "lm_head") and clf.score.weight.shape == (2, 32)
    np.testing.assert_array_equal(clf.transformer.wte.weight.data, model.transformer.wte.weight.data)


def config(base_path, data, out, **kw):
    return FinetuneConfig(**{**dict(base=str(base_path), data=str(data), out=str(out), max_steps=6,
                                    eval_interval=3, eval_batches=2, batch_size=4, lr=3e-3), **kw})


def test_sft_checkpoint_records_tokens_and_resumes_exactly(tmp_path, base):
    data = write_jsonl(tmp_path / "sft.jsonl", instructions())
    whole = build_finetune_trainer("sft", config(base[0], data, tmp_path / "a"))
    whole.train()
    half = build_finetune_trainer("sft", config(base[0], data, tmp_path / "b", max_steps=3))
    half.train()
    resumed = build_finetune_trainer("sft", config(base[0], data, tmp_path / "b", resume=True))
    resumed.train()
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
              for d in ("a", "b")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]     # the warmup spans both: same lr
    model, tokenizer, meta = load_model(tmp_path / "b" / "ckpt.safetensors")
    assert set(sft.TEMPLATE_TOKENS) <= set(tokenizer.special_tokens)
    assert model.config.vocab_size == tokenizer.vocab_size == base[1].vocab_size + 4
    ids = sft.prompt_ids(tokenizer, "swap cat dog")
    out = model.generate(ids[None], 5, temperature=0, seed=0)            # (1, T + 5)
    assert out.shape == (1, len(ids) + 5) and out.max() < tokenizer.vocab_size


def test_classify_reports_val_accuracy_and_saves_labels(tmp_path, base):
    data = write_jsonl(tmp_path / "c.jsonl", labelled(60))
    trainer = build_finetune_trainer("classify", config(base[0], data, tmp_path / "c", train_blocks=1))
    frozen = [n for n, p in trainer.model.named_parameters() if not p.requires_grad]
    assert "transformer.h.0.attn.c_attn.weight" in frozen and "transformer.h.1.mlp.c_fc.weight" not in frozen
    assert len(trainer.optimizer.exp_avg) == sum(1 for _, p in trainer.model.named_parameters()
                                                 if p.requires_grad)
    trainer.train()
    finish(trainer)
    assert all(0 <= r["val_acc"] <= 1 for r in trainer.records if "val_loss" in r)
    assert json.loads((tmp_path / "c" / "labels.json").read_text()) == {"early": 0, "late": 1}
    model, _, meta = load_model(tmp_path / "c" / "ckpt.safetensors")
    assert isinstance(model, GPTClassifier) and meta["finetune"]["labels"] == ["early", "late"]


BAD = [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', "sft", ":2: not valid JSON"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n', "sft", ":2: missing field 'output'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}\n', "sft", ":1: message 0 has the unknown role 'robot'"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "  "}\n', "sft", ":2: an empty answer"),
    ('{"text": "a", "label": "x"}\n{"label": "y"}\n', "classify", ":2: missing field 'text'"),
]


@pytest.mark.parametrize("text, kind, message", BAD, ids=[b[2] for b in BAD])
def test_bad_data_is_a_clear_error_and_writes_nothing(tmp_path, base, capsys, text, kind, message):
    (tmp_path / "bad.jsonl").write_text(text)
    out = tmp_path / "out"
    assert main([kind, "--base", str(base[0]), "--data", str(tmp_path / "bad.jsonl"),
                 "--out", str(out)]) == 1
    assert message in capsys.readouterr().err and not out.exists()


def test_a_label_unseen_in_training_is_an_error_at_eval(tmp_path, base, capsys):
    train = write_jsonl(tmp_path / "t.jsonl", labelled())
    val = write_jsonl(tmp_path / "v.jsonl", labelled(3) + [{"text": "cat", "label": "middle"}])
    out = tmp_path / "out"
    assert main(["classify", "--base", str(base[0]), "--data", str(train), "--val", str(val),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "v.jsonl:4: label 'middle' never appears in the training data" in err and not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--lora", "--lora-targets", "q_proj"], "names no Linear module of this model"),
    (["--lora", "--lora-r", "0"], "--lora-r must be an integer >= 1, got 0"),
    (["--merge"], "--merge folds LoRA adapters into the base: it needs --lora"),
    (["--train-blocks", "1"], "--train-blocks is for classify")])
def test_bad_lora_flags_are_clear_errors(tmp_path, base, capsys, flags, message):
    data = write_jsonl(tmp_path / "sft.jsonl", instructions())
    out = tmp_path / "out"
    assert main(["sft", "--base", str(base[0]), "--data", str(data), "--out", str(out), *flags]) == 1
    assert message in capsys.readouterr().err and not out.exists()


def test_cli_resume_takes_the_saved_flags(tmp_path, base, capsys):
    data = write_jsonl(tmp_path / "sft.jsonl", instructions())
    out = tmp_path / "out"
    assert main(["sft", "--base", str(base[0]), "--data", str(data), "--out", str(out),
                 "--max-steps", "2", "--eval-interval", "2", "--batch-size", "4", "--lora"]) == 0
    assert main(["sft", "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    assert "resumed from" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and (out / "adapter_model.safetensors").exists()


def _bf16_backends():
    try:
        return ["numpy"] + (["c"] if hasattr(backends.get_backend("c"), "matmul_bf16") else [])
    except backends.BackendUnavailable:
        return ["numpy"]


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("backend", _bf16_backends())
def test_bf16_fine_tuning_learns_and_tracks_fp32(tmp_path, base, backend, use_lora):
    """--dtype bf16 reaches every Linear, LoRA's fused op included, and the loss falls as fp32's
    does. Tolerance 2 % at each of 20 steps: bf16 operands keep 8 bits of mantissa (2^-9 relative
    rounding each), whose errors average out in the float32 sums; measured here the curves
    differ by at most 0.16 % (loss 5.7 -> 3.1)."""
    data = write_jsonl(tmp_path / "sft.jsonl", instructions(64))
    curves = {}
    for dtype in ("fp32", "bf16"):
        trainer = build_finetune_trainer("sft", config(
            base[0], data, tmp_path / dtype, max_steps=20, eval_interval=20, lora=use_lora,
            lr=1e-2, dtype=dtype, backend=backend))
        assert all(m.matmul_dtype == dtype for _, m in named_modules(trainer.model))
        trainer.train()
        curves[dtype] = np.array([json.loads(line)["loss"] for line in
                                  (tmp_path / dtype / "log.jsonl").read_text().splitlines()])
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert bf16[-5:].mean() < 0.7 * bf16[:3].mean(), f"bf16 did not learn: {bf16}"
    assert not np.array_equal(fp32, bf16)                        # the bf16 products did run
    gap = np.abs(bf16 - fp32) / fp32
    assert gap.max() < 0.02, f"bf16 {bf16} vs fp32 {fp32}: up to {gap.max():.2%} apart"


def test_an_unknown_dtype_is_a_clear_error(tmp_path, base, capsys):
    data = write_jsonl(tmp_path / "sft.jsonl", instructions())
    assert main(["sft", "--base", str(base[0]), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--dtype", "fp16"]) == 1
    assert "--dtype 'fp16': choose one of fp32, bf16" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
