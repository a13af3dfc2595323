"""The training run's safety rails: nothing non-finite saved, SIGTERM saves, a torn log line
is dropped, one run per output folder, and messages that name the flag and the fix."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyllm.checkpoint import load_model
from tinyllm.cli.train import main
from tinyllm.data import DataError
from tinyllm.errors import CheckpointError, TrainingError
from tinyllm.sampling import Sampling, sample
from tinyllm.model import GPT, preset
from tinyllm.run import TrainConfig, build_trainer
from tinyllm.train import Trainer
from tests.test_train import text_file  # noqa: F401 (the shared corpus fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data, out, **overrides):
    return TrainConfig(**{**dict(data=str(data), out=str(out), preset="tiny", max_steps=8,
                                 tokenizer="bytes", batch_size=4, eval_interval=4, eval_batches=2,
                                 warmup_steps=2, sample_tokens=0), **overrides})


def tiny_flags(data, out, *more):
    return ["--data", str(data), "--out", str(out), "--preset", "tiny", "--tokenizer", "bytes",
            "--batch-size", "2", "--eval-batches", "1", "--sample-tokens", "0", *more]


# -- nothing non-finite is saved (item 3) -------------------------------------

@pytest.mark.parametrize("flag", ["--lr", "--min-lr", "--grad-clip", "--dropout", "--weight-decay",
                                  "--val-fraction"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_every_float_flag_refuses_inf_and_nan(flag, value, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o"), f"{flag}={value}"]) == 1
    err = capsys.readouterr().err
    assert flag in err and "finite" in err


def test_a_non_finite_val_loss_is_not_saved(text_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = build_trainer(tiny_config(text_file, out))
    original = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate",
                        lambda self: float("nan") if self.step == 8 else original(self))
    with pytest.raises(TrainingError, match=r"val loss is nan.*step 4\) is untouched"):
        trainer.train()
    _, _, meta = load_model(out / "ckpt.safetensors")
    assert meta["step"] == 4


def test_non_finite_weights_are_never_saved(text_file, tmp_path):
    out = tmp_path / "run"
    trainer = build_trainer(tiny_config(text_file, out, grad_clip=0))
    trainer.model.lm_head.weight.data[0, 0] = np.inf
    with pytest.raises(TrainingError, match="lm_head.weight.*not finite"):
        trainer.save()
    assert not (out / "ckpt.safetensors").exists()
    assert not list(out.glob("*.next*"))


def test_sampling_refuses_non_finite_logits_and_temperature():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="logits.*nan"):
        sample(np.full((1, 5), np.nan), Sampling(temperature=0.8), rng)
    with pytest.raises(ValueError, match="logits.*nan"):
        sample(np.full((1, 5), np.nan), Sampling(temperature=0), rng)   # argmax of nan is 0: refuse too
    model = GPT(preset("tiny"))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            model.generate(np.zeros((1, 1), np.int64), 2, temperature=bad)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(np.zeros((1, 1), np.int64), 2, top_p=float("nan"))


# -- SIGTERM saves like Ctrl-C (item 4) ---------------------------------------

def test_sigterm_saves_and_exits_like_ctrl_c(text_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = Trainer.train_step

    def train_step(self):
        if self.step + 1 == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)
    monkeypatch.setattr(Trainer, "train_step", train_step)
    summary = build_trainer(tiny_config(text_file, out)).train()
    assert summary["interrupted"] and summary["steps"] == 3
    assert load_model(out / "ckpt.safetensors")[2]["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- the log (item 9) ---------------------------------------------------------

def test_a_torn_last_log_line_is_dropped_with_a_warning(text_file, tmp_path):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=4)).train()
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')                  # a kill mid-write
    printed = []
    trainer = build_trainer(tiny_config(text_file, out, resume=True), printer=printed.append)
    assert any("log.jsonl" in p and "line 5" in p for p in printed)
    assert [r["step"] for r in trainer.records] == [1, 2, 3, 4]


@pytest.mark.parametrize("damage", ['{"step": 2, "loss": ', '{"loss": 1.0}', "[1, 2]",
                                    "[" * 100_000], ids=["torn", "no-step", "list", "deep"])
def test_other_log_damage_names_the_file_and_line(text_file, tmp_path, damage):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=4)).train()
    lines = (out / "log.jsonl").read_text().splitlines()
    lines[1] = damage
    (out / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match=r"log.jsonl.*line 2"):
        build_trainer(tiny_config(text_file, out, resume=True))


# -- one run per folder (item 10) ---------------------------------------------

def test_a_second_run_on_the_same_out_is_refused_naming_the_first(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT}
    first = subprocess.Popen([sys.executable, "-m", "tinyllm", "train",
                              *tiny_flags(text_file, out, "--max-steps", "100000")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "log.jsonl").exists() or not (out / "log.jsonl").read_text():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.05)
        assert main(tiny_flags(text_file, out, "--max-steps", "4")) == 1
        err = capsys.readouterr().err
        assert f"process {first.pid}" in err and str(out) in err
        assert main(tiny_flags(text_file, out, "--max-steps", "4", "--resume")) == 1
    finally:
        first.kill()
        first.wait()
    assert main(tiny_flags(text_file, out, "--max-steps", "4")) == 0   # the lock died with it


# -- messages (item 11) -------------------------------------------------------

def test_negative_seed_names_the_flag(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "o"), "--seed", "-1"]) == 1
    assert "--seed" in capsys.readouterr().err


def test_an_empty_prompt_is_refused_before_training(text_file, tmp_path, capsys):
    assert main(tiny_flags(text_file, tmp_path / "o", "--prompt", "", "--sample-tokens", "5")) == 1
    assert "--prompt" in capsys.readouterr().err
    assert not (tmp_path / "o" / "ckpt.safetensors").exists()


def test_a_short_train_split_suggests_a_smaller_val_fraction(text_file, tmp_path):
    with pytest.raises(DataError, match="smaller --val-fraction"):
        build_trainer(tiny_config(text_file, tmp_path / "o", val_fraction=0.9999, block_size=64))
    with pytest.raises(DataError, match="larger --val-fraction"):
        build_trainer(tiny_config(text_file, tmp_path / "o", val_fraction=0.0001, block_size=64))


def test_an_out_that_is_a_file_is_a_clean_error(text_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(tiny_flags(text_file, blocker, "--max-steps", "2")) == 1
    assert str(blocker) in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_a_clean_error(text_file, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    assert main(tiny_flags(text_file, locked / "run", "--max-steps", "2")) == 1
    assert "ro" in capsys.readouterr().err
