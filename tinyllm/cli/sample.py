"""`python -m tinyllm sample` (and `python examples/sample.py`): continue a prompt with a checkpoint.

This file only parses flags and prints; decoding is tinyllm/generate.py's.
"""
import argparse
import sys

import numpy as np

from tinyllm import backends
from tinyllm.checkpoint import load_model
from tinyllm.errors import CheckpointError
from tinyllm.ops import MATMUL_DTYPES
from tinyllm.run import matmul_precision


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
    p.add_argument("--dtype", default="fp32", choices=MATMUL_DTYPES,
                   help="matmul precision of the Linear layers, as train's --dtype (default: %(default)s)")
    args = p.parse_args(argv)

    try:
        if args.backend:
            backends.set_backend(args.backend)
        model, tokenizer, meta = load_model(args.ckpt)
        model.set_matmul_dtype(args.dtype)
        matmul_precision(backends.get_backend(), args.dtype)   # refuses where there is no bf16
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
