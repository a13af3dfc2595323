"""SIGKILL at random instants of a run that saves every step: `--resume` always works, exactly;
and SIGTERM saves and exits like Ctrl-C.

A real `python -m tinyllm train` subprocess is killed again and again at
seeded random moments (many of them inside a save, since a tiny model's step
is short beside the writes), resumed each time, and finally run to the end.
Its last checkpoint and its log must equal those of a run never interrupted:
the model file and the training state always move together (checkpoint.py).
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyllm.checkpoint import read_model_metadata
from tinyllm.safetensors import load_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30
KILLS = 24


def command(data, out, resume):
    return [sys.executable, "-m", "tinyllm", "train", "--data", str(data), "--out", str(out),
            "--preset", "tiny", "--tokenizer", "bytes", "--backend", "numpy", "--max-steps", str(STEPS),
            "--eval-interval", "1", "--eval-batches", "1", "--batch-size", "2", "--warmup-steps", "2",
            "--dropout", "0.1", "--sample-tokens", "0"] + (["--resume"] if resume else [])


def start(data, out):
    """The run, resumed when a checkpoint says it started (the way a user would retry)."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    resume = any((out / name).exists() for name in ("ckpt.safetensors", "train_state.safetensors"))
    return subprocess.Popen(command(data, out, resume), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "said", "to", "a", "fool", "and", "then", "wept"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, 8)) + "." for _ in range(300)))
    return path


def test_sigkill_at_random_instants_always_resumes_exactly(text_file, tmp_path):
    reference = tmp_path / "reference"
    t0 = time.perf_counter()
    code, err = finish(start(text_file, reference))
    whole = time.perf_counter() - t0
    assert code == 0, err
    rng = np.random.default_rng(18)
    out, kills = tmp_path / "killed", 0
    while kills < KILLS:
        proc = start(text_file, out)
        try:
            proc.wait(timeout=rng.uniform(0.0, whole))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        code, err = finish(proc)
        assert code in (0, -signal.SIGKILL), err          # never an error of ours
        if code == 0:                                     # it finished first: start over
            for path in out.glob("*"):
                path.unlink() if path.is_file() else None
    code, err = finish(start(text_file, out))
    assert code == 0, err
    ours, _ = load_safetensors(out / "ckpt.safetensors")
    theirs, _ = load_safetensors(reference / "ckpt.safetensors")
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (reference / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in log] == [r["loss"] for r in ref]


def test_sigterm_saves_the_step_and_exits_cleanly(text_file, tmp_path):
    """What Slurm, Kubernetes and systemd send before a kill: handled like Ctrl-C."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = command(text_file, out, False)
    cmd[cmd.index("--max-steps") + 1] = "100000"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "log.jsonl").exists() or len((out / "log.jsonl").read_text().splitlines()) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0 and "SIGTERM" in err and "continue with --resume" in err, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert read_model_metadata(out / "ckpt.safetensors")["step"] == steps[-1]
