"""`python -m tinyllm eval`: a checkpoint's loss on held-out data, or a classifier's accuracy.

    python -m tinyllm eval --ckpt out/ckpt.safetensors                 # the stdlib val split
    python -m tinyllm eval --ckpt out/ckpt.safetensors --data book.txt --batches 20
    python -m tinyllm eval --ckpt out/ckpt.safetensors --adapter out-sft/ --data val.jsonl
    python -m tinyllm eval --ckpt out-cls/ckpt.safetensors --data labelled.jsonl
    python -m tinyllm eval --ckpt out/ckpt-q8_0.safetensors --reference out/ckpt.safetensors \
        --data ../shared/data/tinyshakespeare.txt

Text data prints the val loss and bits per byte, measured as training does
(a checkpoint in its training folder scores its log's last val loss);
instruction JSONL the answer loss; a classifier on labelled JSONL its
accuracy. With --reference (a quantized checkpoint against the float one it
came from): the perplexity of both on the last --tail characters of --data,
its change, the mean KL divergence and the share of positions with the same
top token (tinyllm/quant/compare.py). A bad flag, checkpoint or data file
stops with a message and exit code 1. This file only parses flags and
prints; the measuring is tinyllm/evaluate.py's, the loading finetune/run.py's.
"""
import argparse
import pathlib
import sys

from tinyllm import backends, evaluate
from tinyllm.checkpoint import load_model
from tinyllm.errors import CheckpointError, DataError, TokenizerError
from tinyllm.finetune.run import load_for_inference
from tinyllm.quant.compare import compare


def parser():
    p = argparse.ArgumentParser(prog="eval", description="The val loss and bits per byte of a "
                                "checkpoint (plain or with a LoRA adapter) on text, its answer loss "
                                "on instruction JSONL, or a classifier's accuracy on labelled JSONL.")
    p.add_argument("--ckpt", default="out/ckpt.safetensors", help="model checkpoint (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (`finetune --lora`) to put "
                   "on top of --ckpt, its base")
    p.add_argument("--data", default=None, help="a UTF-8 text file or folder (its val split), a "
                   "`prepare` folder, or a .jsonl file of instruction or labelled examples "
                   "(default: the stdlib corpus's val split, as training uses)")
    p.add_argument("--batches", type=int, default=None, help="batches averaged (default: 8 for "
                   "text, as training; every example for JSONL)")
    p.add_argument("--batch-size", type=int, default=evaluate.BATCH_SIZE,
                   help="sequences or examples per batch (default: %(default)s, as training)")
    p.add_argument("--val-fraction", type=float, default=evaluate.VAL_FRACTION,
                   help="share of text data held out, as training's flag (default: %(default)s)")
    p.add_argument("--backend", default=None, help="numpy, c or cuda (default: the fastest built)")
    q = p.add_argument_group("against a reference (a quantized checkpoint and its float original)")
    q.add_argument("--reference", default=None, help="the float32 checkpoint --ckpt came from")
    q.add_argument("--tail", type=int, default=200_000,
                   help="characters from the end of --data to use (default: %(default)s)")
    q.add_argument("--max-windows", type=int, default=32,
                   help="context-length windows evaluated (default: %(default)s)")
    return p


def report(ckpt, result):
    """One line of the measurements."""
    if "accuracy" in result:
        return (f"{ckpt}: accuracy {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f}) on "
                f"{result['examples']:,} examples, {result['truncated']} truncated")
    if "bpb" in result:
        return (f"{ckpt}: val loss {result['loss']:.4f}, {result['bpb']:.4f} bits/byte over "
                f"{result['batches']} batches ({result['tokens']:,} tokens)")
    return (f"{ckpt}: answer loss {result['loss']:.4f} on {result['examples']:,} examples, "
            f"{result['truncated']} truncated")


def against_reference(args):
    """Perplexity, KL and top-token agreement of --ckpt against --reference, printed."""
    try:
        if args.data is None:
            raise ValueError("--reference needs --data, a UTF-8 text file of held-out text")
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


def main(argv=None):
    args = parser().parse_args(argv)
    if args.reference:
        return against_reference(args)
    try:
        for name in ("batches", "batch_size"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.backend:
            backends.set_backend(args.backend)
        model, tokenizer, meta = load_for_inference(args.ckpt, args.adapter)
        model.to(backends.get_backend())
        result = evaluate.evaluate(model, tokenizer, meta["tokenizer"], args.data, args.batches,
                                   args.batch_size, args.val_fraction,
                                   cache_dir=pathlib.Path(args.ckpt).parent / "data")
    except (CheckpointError, DataError, TokenizerError, ValueError, backends.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt}{' + ' + args.adapter if args.adapter else ''}: step {meta['step']}, "
          f"{model.summary()}", file=sys.stderr)
    print(report(args.ckpt, result))
    return 0
