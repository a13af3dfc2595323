"""`python -m tinyllm generate` (and its old name `sample`): the streamed text is exactly the decoded
ids, stop strings, batches, the timing report, and each bad input a message and exit code 1 with
nothing on stdout."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.checkpoint import new_run_id, save_model
from tinyllm.cli import generate as cli
from tinyllm.model import GPT, GPTConfig
from tinyllm.tokenizer import ByteTokenizer, Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(vocab_size=256, block_size=24, n_layer=2, n_head=2, n_embd=16, seed=4)


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_model(path, GPT(GPTConfig(**CONFIG)), ByteTokenizer(), 7, new_run_id())
    return path


@pytest.fixture
def bpe_ckpt(tmp_path):
    tok = Tokenizer.train("hello world, hello there " * 20, 270, special_tokens=["<|endoftext|>"],
                          progress=False)
    path = tmp_path / "bpe.safetensors"
    save_model(path, GPT(GPTConfig(**{**CONFIG, "vocab_size": tok.vocab_size})), tok, 1, new_run_id())
    return path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_streamed_text_is_the_decoded_ids(ckpt, capsys):
    prompt = "héllo €😀"   # multi-byte characters, one byte per token
    code, out, err = run(capsys, "--ckpt", ckpt, "--prompt", prompt, "--max-new-tokens", 40, "--seed", 3)
    assert code == 0
    model, tok = GPT(GPTConfig(**CONFIG)), ByteTokenizer()
    ids = model.generate(np.array([tok.encode(prompt)]), 40, temperature=0.8, top_k=40, seed=3)[0]
    assert out == tok.decode(ids.tolist()) + "\n"
    assert "prefill: 14 prompt tokens" in err and "decode: 39 tokens" in err


def test_the_same_seed_gives_the_same_text(ckpt, capsys):
    a = run(capsys, "--ckpt", ckpt, "--prompt", "ab", "--max-new-tokens", 20, "--seed", 5)[1]
    b = run(capsys, "--ckpt", ckpt, "--prompt", "ab", "--max-new-tokens", 20, "--seed", 5)[1]
    c = run(capsys, "--ckpt", ckpt, "--prompt", "ab", "--max-new-tokens", 20, "--seed", 6)[1]
    assert a == b != c


def test_a_stop_string_ends_the_text_and_is_not_printed(ckpt, capsys):
    full = run(capsys, "--ckpt", ckpt, "--prompt", "x", "--max-new-tokens", 30, "--temperature", 0)[1]
    stop = full[5:7]   # two characters of the greedy continuation, likely two tokens
    code, out, _ = run(capsys, "--ckpt", ckpt, "--prompt", "x", "--max-new-tokens", 30,
                       "--temperature", 0, "--stop", stop, "--stop", "never")
    assert code == 0 and out == full[:full.index(stop)] + "\n"


def test_num_samples_are_one_batch_each_printed(ckpt, capsys):
    code, out, err = run(capsys, "--ckpt", ckpt, "--prompt", "hi", "--num-samples", 3,
                         "--max-new-tokens", 8)
    assert code == 0 and out.count("--- sample") == 3
    assert "prefill: 6 prompt tokens" in err and "decode: 21 tokens" in err   # 3 rows


def test_stdin_prompt_and_the_sample_alias(ckpt):
    for command in ("generate", "sample"):
        r = subprocess.run([sys.executable, "-m", "tinyllm", command, "--ckpt", str(ckpt),
                            "--max-new-tokens", "5", "--temperature", "0"], input="ROMEO:",
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("ROMEO:")
    r = subprocess.run([sys.executable, "examples/sample.py", "--ckpt", str(ckpt), "--prompt", "a",
                        "--max-new-tokens", "3"], capture_output=True, text=True, cwd=ROOT,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("a"), r.stderr


def test_no_prompt_starts_from_end_of_text_and_an_empty_one_is_refused(ckpt, bpe_ckpt, capsys,
                                                                       tmp_path):
    code, out, err = run(capsys, "--ckpt", ckpt, "--max-new-tokens", 3)
    assert code == 0 and "no prompt; starting from a newline" in err
    code, out, err = run(capsys, "--ckpt", bpe_ckpt, "--max-new-tokens", 3)
    assert code == 0 and "starting from <|endoftext|>" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for flags in (["--prompt-file", empty], ["--prompt", ""]):
        code, out, err = run(capsys, "--ckpt", ckpt, *flags)
        assert code == 1 and out == "" and "is empty" in err and "end-of-text" in err


def test_a_prompt_longer_than_the_context_keeps_its_end(ckpt, capsys):
    code, out, err = run(capsys, "--ckpt", ckpt, "--prompt", "z" * 30, "--max-new-tokens", 3)
    assert code == 0 and "keeping the last 24" in err and out.startswith("z" * 24)


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "temperature"), (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"), (["--min-p", "2"], "min_p"),
    (["--max-new-tokens", "-5"], "max-new-tokens"), (["--num-samples", "0"], "num-samples"),
    (["--repetition-penalty", "0"], "repetition_penalty"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "prompt-file"),
])
def test_bad_flags_exit_1_with_nothing_written(ckpt, capsys, flags, message):
    code, out, err = run(capsys, "--ckpt", ckpt, "--prompt", "a", *flags) if "--prompt-file" not in flags \
        else run(capsys, "--ckpt", ckpt, *flags)
    assert code == 1 and out == "" and message in err


def test_bad_checkpoints_and_prompts_exit_1(ckpt, bpe_ckpt, capsys, tmp_path):
    code, out, err = run(capsys, "--ckpt", tmp_path / "missing.safetensors", "--prompt", "a")
    assert code == 1 and out == "" and "missing.safetensors" in err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(ckpt.read_bytes()[:100])
    code, out, err = run(capsys, "--ckpt", corrupt, "--prompt", "a")
    assert code == 1 and out == "" and "error:" in err
    code, out, err = run(capsys, "--ckpt", bpe_ckpt, "--prompt", "hello <|endoftext|>")
    assert code == 1 and out == "" and "<|endoftext|>" in err
