"""`python -m tinyllm quantize`: a float32 checkpoint -> a quantized one (q8_0, q4_0, q4_mixed).

    python -m tinyllm quantize --ckpt out/ckpt.safetensors --format q8_0 --out out/ckpt-q8_0.safetensors

Each layer's format and largest rounding error go to stderr as it is done; then the sizes of
both files. The output is written atomically and only after every layer quantized, so a
refusal (a width that is not a multiple of 32, an input already quantized) leaves no file.
generate, chat and sample read the output like any checkpoint. This file only parses flags
and prints; the formats are tinyllm/quant/formats.py's, the recipes tinyllm/quant/layers.py's.
"""
import argparse
import os
import sys

from tinyllm.checkpoint import load_model, save_model
from tinyllm.errors import CheckpointError
from tinyllm.quant.layers import RECIPES, quantize_model


def parser():
    p = argparse.ArgumentParser(prog="quantize", description="Quantize a float32 checkpoint's "
                                "weights to int8 (q8_0) or int4 (q4_0, q4_mixed) blocks.")
    p.add_argument("--ckpt", default="out/ckpt.safetensors", help="float32 model checkpoint "
                   "(default: %(default)s)")
    p.add_argument("--format", default="q8_0", choices=RECIPES, help="q8_0: every Linear and the "
                   "token embedding in 8 bits; q4_0: in 4 bits; q4_mixed: 4 bits, but lm_head and "
                   "the embedding in 8 (default: %(default)s)")
    p.add_argument("--out", default=None, help="output checkpoint (default: CKPT with -FORMAT "
                   "before .safetensors)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    out = args.out or f"{os.path.splitext(args.ckpt)[0]}-{args.format}.safetensors"
    if os.path.abspath(out) == os.path.abspath(args.ckpt):
        print(f"error: --out {out} is the input checkpoint; name another file", file=sys.stderr)
        return 1
    try:
        model, tokenizer, meta = load_model(args.ckpt)
        if meta["quant"]:
            raise CheckpointError(f"{args.ckpt} is already quantized ({meta['quant']['format']}); "
                                  f"quantize its float32 checkpoint instead")
        layers = quantize_model(model, args.format, on_layer=lambda name, fmt, err: print(
            f"  {name}: {fmt}, max abs error {err:.3g}", file=sys.stderr))
        save_model(out, model, tokenizer, meta["step"], meta["run_id"],
                   quant={"format": args.format, "layers": layers})
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    before, after = os.path.getsize(args.ckpt), os.path.getsize(out)
    print(f"wrote {out} ({args.format}): {before:,} -> {after:,} bytes "
          f"({after / before:.1%} of the float32 file)")
    return 0
