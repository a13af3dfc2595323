"""`python -m tinyllm plan`: a training plan for a target size on the hardware at hand.

    python -m tinyllm plan --params 1B --hardware 8xH100 [--days 7 | --tokens 20B] [--json]

This file only parses flags and prints; the planner is tinyllm/plan/.
"""
import argparse
import json
import sys

from tinyllm.errors import PlanError
from tinyllm.plan import make_plan, parse_count
from tinyllm.plan.hardware import known_names
from tinyllm.plan.report import format_hardware, format_plan


def build_parser():
    p = argparse.ArgumentParser(
        prog="plan", description="Plan a training run: the model shape for a target size, the token "
        "budget, FLOPs and time, memory per device for each ZeRO stage, hyperparameters, the commands "
        "and a rough cost. Sizes take suffixes: 125M, 1.3B, 20B.")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--params", help="target parameter count, e.g. 1B (all parameters, embeddings included)")
    model.add_argument("--preset", help="plan a preset's shape instead (tiny, default, bench, gpt2)")
    p.add_argument("--hardware", default="8xH100",
                   help=f"N x DEVICE, one of {known_names()}; or `this` (this machine, measured) "
                        f"(default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens", help="training tokens (default: Chinchilla-optimal, ~20 per parameter)")
    budget.add_argument("--days", type=float, help="time limit: check the token budget fits in it")
    p.add_argument("--seq-len", type=int, help="context length (default: 2048, or the preset's)")
    p.add_argument("--vocab-size", type=int, default=50257, help="vocabulary (default: %(default)s, GPT-2's)")
    p.add_argument("--dtype", choices=("bf16", "fp32"),
                   help="bf16 (mixed precision) or fp32 (default: bf16 on GPUs, fp32 for `this`)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), help="ZeRO stage (default: the lowest that fits)")
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation assumed (default: 0.4 on GPUs, "
                                             "0.75 of the measured matmul rate for `this` on a CPU)")
    p.add_argument("--price", type=float, default=2.0, help="USD per device-hour (default: %(default)s)")
    p.add_argument("--out", help="the training run's --out folder (default: out/plan-SIZE)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of text")
    p.add_argument("--list-hardware", action="store_true", help="print the known devices and exit")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list_hardware:
        print(format_hardware())
        return 0
    try:
        plan = make_plan(params=parse_count(args.params, "--params") if args.params else None,
                         preset=args.preset, hardware=args.hardware,
                         tokens=parse_count(args.tokens, "--tokens") if args.tokens else None,
                         days=args.days, seq_len=args.seq_len, vocab_size=args.vocab_size,
                         dtype=args.dtype, zero=args.zero, mfu=args.mfu, price=args.price, out=args.out)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
