"""The training loop: exact resume, Ctrl-C, divergence, the log, and bad input."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.checkpoint import CheckpointError
from tinyllm.data import DataError
from tinyllm.checkpoint import load_model
from tinyllm.cli.train import main
from tinyllm.errors import TrainingError
from tinyllm.run import TrainConfig, build_trainer, load_data
from tinyllm.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "said", "to", "a", "fool", "and", "then", "wept", "ran"]
    text = "\n".join(" ".join(rng.choice(words, 8)) + "." for _ in range(800))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path


def tiny_config(data, out, **overrides):
    return TrainConfig(**{**dict(data=str(data), out=str(out), preset="tiny", max_steps=12, tokenizer="bytes",
                                 batch_size=4, eval_interval=4, eval_batches=2, warmup_steps=2,
                                 sample_tokens=0, dropout=0.1), **overrides})


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def interrupt_at(monkeypatch, step):
    """Send ourselves Ctrl-C in the middle of the given step, as a user would."""
    original = Trainer.train_step

    def train_step(self):
        if self.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)
    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_log_checkpoint_and_curve(text_file, tmp_path):
    out = tmp_path / "run"
    summary = build_trainer(tiny_config(text_file, out, max_steps=8)).train()
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 9))
    assert all({"step", "loss", "lr", "tokens_per_sec"} <= set(r) for r in log)
    assert [r["step"] for r in log if "val_loss" in r] == [4, 8]
    assert summary["steps"] == 8 and np.isfinite(summary["val_loss"])
    model, tokenizer, meta = load_model(out / "ckpt.safetensors")
    assert meta["step"] == 8 and tokenizer.vocab_size == model.config.vocab_size


def test_interrupted_and_resumed_run_logs_the_same_losses(text_file, tmp_path, monkeypatch):
    build_trainer(tiny_config(text_file, tmp_path / "a")).train()
    interrupt_at(monkeypatch, 6)
    first = build_trainer(tiny_config(text_file, tmp_path / "b")).train()
    assert first["interrupted"] and first["steps"] == 6
    monkeypatch.undo()
    build_trainer(tiny_config(text_file, tmp_path / "b", resume=True)).train()
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))
    # same data, same generators, same arithmetic: float32 round-off is the only allowance
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-6)
    np.testing.assert_allclose([r["val_loss"] for r in b if "val_loss" in r],
                               [r["val_loss"] for r in a if "val_loss" in r], rtol=1e-6)


def test_resume_drops_log_lines_after_the_checkpoint(text_file, tmp_path):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=6)).train()   # checkpoint at 4, then 6
    with open(out / "log.jsonl", "a") as f:                      # as if steps ran past the save
        f.write(json.dumps({"step": 7, "loss": 1.0, "lr": 0.1, "tokens_per_sec": 1.0}) + "\n")
    build_trainer(tiny_config(text_file, out, max_steps=8, resume=True)).train()
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(text_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = build_trainer(tiny_config(text_file, out))
    original = Trainer.train_step

    def poisoned(self):
        if self.step == 5:
            self.model.lm_head.weight.data[:] = np.nan
        return original(self)
    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingError, match=r"diverged at step 6: the loss is nan.*step 4\) is untouched"):
        trainer.train()
    model, _, meta = load_model(out / "ckpt.safetensors")
    assert meta["step"] == 4 and np.all(np.isfinite(model.lm_head.weight.data))


def test_gradient_accumulation_equals_one_big_batch(text_file, tmp_path):
    big = build_trainer(tiny_config(text_file, tmp_path / "big", batch_size=4, dropout=0.0, grad_clip=0))
    small = build_trainer(tiny_config(text_file, tmp_path / "small", batch_size=2, grad_accum=2,
                                dropout=0.0, grad_clip=0))
    x, y = big.loader.next_batch()
    halves = iter([(x[:2], y[:2]), (x[2:], y[2:])])
    big.loader.next_batch = lambda: (x, y)
    small.loader.next_batch = lambda: next(halves)
    grads = {}
    for name, trainer in (("big", big), ("small", small)):   # catch the gradients AdamW is given
        trainer.optimizer.step = lambda t=trainer, n=name: grads.setdefault(
            n, [p.grad.copy() for p in t.model.parameters()])
    loss_big, _, _ = big.train_step()
    loss_small, _, _ = small.train_step()
    assert loss_small == pytest.approx(loss_big, rel=1e-5)
    # float32 sums in another order: ~1e-6 relative, plus an absolute floor for near-zero entries
    for (name, _), g_big, g_small in zip(big.model.named_parameters(), grads["big"], grads["small"]):
        np.testing.assert_allclose(g_small, g_big, rtol=1e-4, atol=1e-7, err_msg=name)


def test_missing_empty_and_non_utf8_data(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        build_trainer(tiny_config(tmp_path / "nope.txt", tmp_path / "o"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        build_trainer(tiny_config(empty, tmp_path / "o"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataError, match=r"latin1.txt.*UTF-8"):
        build_trainer(tiny_config(latin1, tmp_path / "o"))


def test_resume_with_another_model_shape_is_refused(text_file, tmp_path):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=4)).train()
    before = (out / "ckpt.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="different model"):
        build_trainer(tiny_config(text_file, out, n_embd=32, resume=True))
    assert (out / "ckpt.safetensors").read_bytes() == before


def test_resume_from_a_truncated_checkpoint_is_refused(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=4)).train()
    path = out / "ckpt.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        build_trainer(tiny_config(text_file, out, resume=True))
    assert main(["--out", str(out), "--resume"]) == 1
    assert "truncated" in capsys.readouterr().err


def test_resume_without_a_checkpoint(text_file, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        build_trainer(tiny_config(text_file, tmp_path / "fresh", resume=True))


def test_block_size_longer_than_val_split(text_file, tmp_path):
    with pytest.raises(DataError, match="val split"):
        build_trainer(tiny_config(text_file, tmp_path / "o", val_fraction=0.0001, block_size=64))


def test_command_line_trains_and_samples(text_file, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"),
                          "--data", str(text_file), "--out", str(out), "--preset", "tiny",
                          "--max-steps", "5", "--eval-interval", "5", "--sample-tokens", "20",
                          "--batch-size", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / "loss.svg").exists() and "val" in run.stderr
    sample = subprocess.run([sys.executable, "-m", "tinyllm", "sample", "--ckpt",
                             str(out / "ckpt.safetensors"), "--max-new-tokens", "10", "--prompt", "the"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("the")
    helped = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train.py"), "--help"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert helped.returncode == 0 and "--max-steps" in helped.stdout


def test_trains_on_a_prepared_folder_and_refuses_another_tokenizer(tmp_path):
    from tinyllm.curate.prepare import PrepareConfig, prepare
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    for i in range(40):
        (raw / f"doc{i}.txt").write_text(" ".join(rng.choice(words, 300)) + ".\n")
    prepare([str(raw)], tmp_path / "prepared", config=PrepareConfig(workers=1, quality=False),
            progress=False)
    tokenizer, train_tokens, _ = load_data(tiny_config(tmp_path / "prepared", tmp_path / "run"))
    assert tokenizer.vocab_size == 256 and len(train_tokens) > 10_000
    build_trainer(tiny_config(tmp_path / "prepared", tmp_path / "run", max_steps=4)).train()
    manifest = tmp_path / "prepared" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tokenizer"]["fingerprint"] = "0" * 16
    manifest.write_text(json.dumps(data))
    with pytest.raises(DataError, match="tokenizer fingerprint"):
        build_trainer(tiny_config(tmp_path / "prepared", tmp_path / "run2"))


def test_bpe_vocabulary_is_trained_once_cached_and_recorded(text_file, tmp_path):
    out = tmp_path / "bpe"
    first = build_trainer(tiny_config(text_file, out, tokenizer="bpe", vocab_size=300, max_steps=4))
    # 11 words give fewer merges than asked for: the vocabulary stops when nothing is left to merge
    assert 256 < first.tokenizer.vocab_size <= 300
    assert first.model.config.vocab_size == first.tokenizer.vocab_size
    assert first.tokenizer.eot_token is not None        # documents are separated in the token stream
    cached = list((out / "data").glob("tokenizer-*.bpe"))
    assert len(cached) == 1
    first.train()
    mtime = cached[0].stat().st_mtime_ns
    second = build_trainer(tiny_config(text_file, out, tokenizer="bpe", vocab_size=300, resume=True))
    assert cached[0].stat().st_mtime_ns == mtime       # reused, not retrained
    assert second.tokenizer.fingerprint() == first.tokenizer.fingerprint()
    _, tokenizer, _ = load_model(out / "ckpt.safetensors")
    assert tokenizer.fingerprint() == first.tokenizer.fingerprint()
    assert tokenizer.decode(tokenizer.encode("the king wept.")) == "the king wept."
    # a resumed run must use the tokenizer its checkpoint was trained with
    with pytest.raises(CheckpointError, match="tokenizer"):
        build_trainer(tiny_config(text_file, out, tokenizer="bytes", resume=True))
