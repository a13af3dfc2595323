"""`python -m tinyllm <command>`: train a model, or sample from a checkpoint.

  python -m tinyllm tokenizer {train,encode,decode} [--help]  byte-level BPE (tinyllm/tokenizer.py)
  python -m tinyllm prepare [--help]  raw text -> clean, deduplicated token shards (tinyllm/data/prepare.py)
  python -m tinyllm train   [--help]  the training loop (tinyllm/train.py)
  python -m tinyllm sample  [--help]  continue a prompt with a trained model

examples/train.py and examples/sample.py run the same two commands.
"""
import argparse
import sys

import numpy as np


def sample_main(argv=None):
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
    args = p.parse_args(argv)

    from tinyllm import backends
    from tinyllm.checkpoint import CheckpointError
    from tinyllm.model_io import load_model
    try:
        if args.backend:
            backends.set_backend(args.backend)
        model, tokenizer, meta = load_model(args.ckpt)
        ids = np.array([tokenizer.encode(args.prompt)] * args.num_samples)   # (num_samples, T)
        out = model.generate(ids, args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except (CheckpointError, ValueError, backends.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt}: step {meta['step']}, {model.summary()}", file=sys.stderr)
    for i, row in enumerate(out):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(tokenizer.decode(row.tolist()))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    from tinyllm import train
    from tinyllm.data.prepare import main as prepare_main
    from tinyllm.tokenizer import main as tokenizer_main
    commands = {"tokenizer": tokenizer_main, "prepare": prepare_main, "train": train.main,
                "sample": sample_main}
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:])
