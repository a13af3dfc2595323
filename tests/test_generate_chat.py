"""The chat (tinyllm/chat.py and `python -m tinyllm chat`): a turn prefills only what the cache
lacks, /reset empties it, the oldest turns go when the context fills, the REPL on stdin."""
import os
import subprocess
import sys

import numpy as np

import pytest

from tests.test_generate_cli import CONFIG
from tinyllm.chat import Chat, common_prefix
from tinyllm.checkpoint import new_run_id, save_model
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import Sampling
from tinyllm.tokenizer import ByteTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def new_chat(block_size=200, max_new_tokens=12):
    model = GPT(GPTConfig(**{**CONFIG, "block_size": block_size})).eval()
    return Chat(model, ByteTokenizer(), Sampling(temperature=0), max_new_tokens, system="Be brief.")


def test_turn_two_prefills_only_its_new_tokens():
    chat = new_chat()
    first = "".join(chat.say("hi"))
    assert chat.timing.prefill_tokens == len(chat.system) + len("<|user|>\nhi\n<|assistant|>\n")
    held = chat.cache.length
    assert held == len(chat.cached) > 0
    "".join(chat.say("and then?"))
    context = len(chat.context()) - len(chat.turns[-1]) + len("<|user|>\nand then?\n<|assistant|>\n")
    assert chat.timing.prefill_tokens == context - held < len("<|user|>\nand then?\n<|assistant|>\n") + 3
    # a fresh chat given the same first turn replies the same: the cache changed nothing
    fresh = new_chat()
    fresh.turns = [chat.turns[0]]
    "".join(fresh.say("and then?"))
    assert fresh.turns == chat.turns and first is not None


def test_cached_logits_after_turns_equal_a_fresh_forward():
    chat = new_chat()
    for message in ("one", "two"):
        "".join(chat.say(message))
    # the chat's cache holds the keys and values of exactly chat.cached: one more token on it
    # gives the logits of a forward over the whole sequence
    ids = np.array([chat.cached + [5]])
    got = chat.model(ids[:, -1:], cache=chat.cache)[0].data[:, -1]
    np.testing.assert_allclose(got, chat.model(ids)[0].data[:, -1], rtol=1e-5, atol=1e-6)


def test_reset_empties_the_cache_and_system_changes_refill_it():
    chat = new_chat()
    "".join(chat.say("hello"))
    chat.reset()
    assert chat.cache.length == 0 and chat.turns == [] and chat.cached == []
    "".join(chat.say("hello"))
    chat.set_system("Be verbose.")
    "".join(chat.say("again"))
    assert chat.timing.prefill_tokens > len("<|user|>\nagain\n<|assistant|>\n")   # from the change on
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2


def test_the_oldest_turns_are_dropped_past_the_context():
    chat = new_chat(block_size=64, max_new_tokens=8)
    for i in range(6):
        "".join(chat.say(f"message {i}"))
        assert len(chat.context()) <= 64
    assert chat.dropped > 0 and len(chat.turns) < 6
    assert chat.tokenizer.decode(chat.turns[-1]).startswith("<|user|>\nmessage 5")


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "chat.safetensors"
    save_model(path, GPT(GPTConfig(**{**CONFIG, "block_size": 200})), ByteTokenizer(), 1, new_run_id())
    return path


def test_the_repl_on_stdin(ckpt):
    script = "hello\nwho are you?\n/system Be kind.\n/bogus\n/reset\nbye\n/quit\n"
    r = subprocess.run([sys.executable, "-m", "tinyllm", "chat", "--ckpt", str(ckpt),
                        "--max-new-tokens", "6", "--temperature", "0"], input=script,
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    prefills = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("prefill:")]
    assert len(prefills) == 3
    assert prefills[1] < len("<|user|>\nwho are you?\n<|assistant|>\n") + 3   # turn 2: its own tokens
    assert prefills[2] == len("<|system|>\nBe kind.\n<|user|>\nbye\n<|assistant|>\n")  # after /reset
    assert "unknown command /bogus" in r.stderr and "(conversation reset)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinyllm", "chat", "--ckpt", "/nonexistent.safetensors"],
                       input="", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stdout == "" and "error:" in r.stderr
