"""A tiny pretrained base (BPE tokenizer + GPT checkpoint) and JSONL files, for the fine-tuning tests."""
import json

import numpy as np

from tinyllm.checkpoint import save_model
from tinyllm.model import GPT, GPTConfig
from tinyllm.tokenizer import Tokenizer

WORDS = "the cat sat on a mat and dog ran to big red house".split()


def tiny_base(folder, block_size=48, seed=0):
    """(path of a base checkpoint, its tokenizer, its model): BPE of ~290 ids, 2 layers, 32 channels."""
    rng = np.random.default_rng(0)
    tokenizer = Tokenizer.train(" ".join(rng.choice(WORDS, 2000)), 300,
                                special_tokens=["<|endoftext|>"], progress=False)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2,
                          n_head=2, n_embd=32, seed=seed))
    path = folder / "base.safetensors"
    save_model(path, model, tokenizer, 0, "base")
    return path, tokenizer, model


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def instructions(n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(WORDS, 2)
        rows.append({"instruction": f"swap {a} {b}", "input": "", "output": f"{b} {a}"})
    return rows


def labelled(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [{"text": f"{w} {w} the", "label": "early" if WORDS.index(w) < 6 else "late"}
            for w in rng.choice(WORDS, n)]
