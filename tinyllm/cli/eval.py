"""`python -m tinyllm eval`: a quantized checkpoint against its float32 reference on held-out text.

    python -m tinyllm eval --ckpt out/ckpt-q8_0.safetensors --reference out/ckpt.safetensors \\
        --data ../shared/data/tinyshakespeare.txt

Prints the perplexity of both, its relative change, the mean KL divergence of the quantized
model's next-token distribution from the reference's, and the share of positions where both
put the same token first (tinyllm/quant/compare.py computes them). --data is read whole and
its last --tail characters (the end of a file is what `train` holds out for validation)
are tokenized with the reference's tokenizer. This file only parses flags and prints.
"""
import argparse
import sys

from tinyllm.checkpoint import load_model
from tinyllm.errors import CheckpointError, TokenizerError
from tinyllm.quant.compare import compare


def parser():
    p = argparse.ArgumentParser(prog="eval", description="Perplexity, KL divergence and top-token "
                                "agreement of a checkpoint against a reference checkpoint.")
    p.add_argument("--ckpt", required=True, help="the checkpoint to judge (e.g. a quantized one)")
    p.add_argument("--reference", required=True, help="the float32 checkpoint it came from")
    p.add_argument("--data", required=True, help="a UTF-8 text file of held-out text")
    p.add_argument("--tail", type=int, default=200_000,
                   help="characters from the end of --data to use (default: %(default)s)")
    p.add_argument("--max-windows", type=int, default=32,
                   help="context-length windows evaluated (default: %(default)s)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        model, _, meta = load_model(args.ckpt)
        reference, tokenizer, _ = load_model(args.reference)
        if model.config != reference.config:
            raise CheckpointError(f"{args.ckpt} and {args.reference} are models of different "
                                  f"shapes; pass the float checkpoint {args.ckpt} came from")
        with open(args.data, encoding="utf-8") as f:
            text = f.read()[-args.tail:]
        result = compare(model.eval(), reference.eval(), tokenizer.encode(text), args.max_windows)
    except (CheckpointError, TokenizerError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fmt = meta["quant"]["format"] if meta["quant"] else "float32"
    print(f"{args.ckpt} ({fmt}) against {args.reference}, {result['tokens']:,} tokens:\n"
          f"  perplexity {result['ppl']:.4f} vs {result['ref_ppl']:.4f} "
          f"({result['ppl_change']:+.3%})\n"
          f"  mean KL divergence {result['kl']:.3g} nats\n"
          f"  same top token {result['same_top']:.2%}")
    return 0
