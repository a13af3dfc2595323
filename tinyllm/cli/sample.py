"""`python -m tinyllm sample` (and `python examples/sample.py`): continue a prompt with a checkpoint.

With --adapter DIR the LoRA adapter of a `finetune --lora` run is put on top
of --ckpt (its base); with --instruction the prompt is put in the fine-tuning
template (tinyllm/finetune/sft.py) and each answer ends at <|end|>.
This file only parses flags and prints; decoding is tinyllm/generate.py's.
"""
import argparse
import sys

import numpy as np

from tinyllm import backends
from tinyllm.checkpoint import load_model
from tinyllm.errors import CheckpointError
from tinyllm.terminal import MODES, shown
from tinyllm.finetune import sft
from tinyllm.finetune.run import load_with_adapter


def main(argv=None):
    p = argparse.ArgumentParser(prog="sample", description="Generate text from a trained checkpoint.")
    p.add_argument("--ckpt", default="out/ckpt.safetensors", help="model checkpoint (default: %(default)s)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=300, help="tokens to generate (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0 = always the likeliest token; higher = more varied (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold (default: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--backend", default=None, help="numpy, c or cuda (default: the fastest built)")
    p.add_argument("--escape", choices=MODES, default="auto",
                   help="show control characters of the text as \\xNN: auto = when stdout is a "
                        "terminal (a file or pipe gets the exact text), always, or never "
                        "(default: %(default)s)")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder to put on top of --ckpt")
    p.add_argument("--instruction", action="store_true",
                   help="--prompt is a question: use the instruction template, stop at <|end|>")
    args = p.parse_args(argv)
    for flag, value in (("--num-samples", args.num_samples), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            p.error(f"{flag} must be at least 1, got {value}")
    if not args.prompt:
        p.error("--prompt is empty: the sample continues it; give at least one character "
                "(the default is a newline)")

    try:
        if args.backend:
            backends.set_backend(args.backend)
        model, tokenizer, meta = load_model(args.ckpt)
        if args.adapter:
            model, tokenizer = load_with_adapter(args.ckpt, args.adapter)
        prompt = (sft.prompt_ids(tokenizer, args.prompt) if args.instruction
                  else tokenizer.encode(args.prompt))
        ids = np.array([prompt] * args.num_samples)                          # (num_samples, T)
        out = model.generate(ids, args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                             exclude=tokenizer.unused_ids())
    except (CheckpointError, ValueError, backends.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt}: step {meta['step']}, {model.summary()}", file=sys.stderr)
    for i, row in enumerate(out):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        text = (sft.answer_text(tokenizer, row[len(prompt):]) if args.instruction
                else tokenizer.decode(row.tolist()))
        print(shown(text, mode=args.escape))
    return 0
