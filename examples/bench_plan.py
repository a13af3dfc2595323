"""The planner against tinyllm itself: planned vs measured peak memory and step time, on this machine.

  python examples/bench_plan.py                          # the bench preset at batch 4, 8 and 16
  python examples/bench_plan.py --preset default --batch-sizes 8 32 --steps 5

For each batch size, `python -m tinyllm plan --hardware this`'s numbers (the
active backend's matmul rate measured here, MFU 0.75 of it, the memory model
of tinyllm/plan/budget.py at fp32 plus this process's resident memory) beside
a real training step measured in its own process by examples/benchmark.py
(`--case PRESET:BACKEND`, so its max RSS is that step's alone). Ratios are
planned / measured, from the same run. This is not a test: nothing asserts
a time. Record what it prints in BENCHMARKS.md.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinyllm import backends  # noqa: E402
from tinyllm.model import flops_per_token, num_parameters, preset  # noqa: E402
from tinyllm.plan import budget  # noqa: E402
from tinyllm.plan.hardware import parse_hardware  # noqa: E402


def measured(name, backend, batch_size, steps):
    cmd = [sys.executable, os.path.join(ROOT, "examples", "benchmark.py"), "--case", f"{name}:{backend}",
           "--batch-size", str(batch_size), "--steps", str(steps), "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--steps", type=int, default=3, help="timed steps per case (after one warm-up)")
    p.add_argument("--backend", default=None, help="numpy, c or cuda (default: the fastest built)")
    args = p.parse_args()
    if args.backend:
        backends.set_backend(args.backend)
    hw = parse_hardware("this")
    config = preset(args.preset)
    N, T = num_parameters(config), config.block_size
    print(f"{args.preset}: {N / 1e6:.1f}M parameters, context {T}; {hw.source}: "
          f"{hw.fp32 / 1e9:.1f} GFLOP/s, planned at MFU {hw.mfu}; the process's memory: each "
          f"measuring child's own, before its model")
    print(f"{'batch':>5} {'planned MB':>11} {'measured MB':>12} {'ratio':>6}   "
          f"{'planned ms':>11} {'measured ms':>12} {'ratio':>6}")
    for b in args.batch_sizes:
        r = measured(args.preset, backends.get_backend().NAME, b, args.steps)
        # the process's own memory as the measuring child saw it before the model, since this
        # process's (hw.runtime) holds other things
        memory = budget.memory_per_device(config, N, 1, 0, b, "fp32", False) + r["start_mb"] * 2 ** 20
        seconds = budget.training_seconds(flops_per_token(config) * b * T, hw, "fp32", hw.mfu)
        print(f"{b:>5} {memory / 1e6:>11,.0f} {r['peak_mb'] * 1.048576:>12,.0f} "
              f"{memory / 1e6 / (r['peak_mb'] * 1.048576):>6.2f}   {seconds * 1e3:>11,.0f} "
              f"{r['seconds'] * 1e3:>12,.0f} {seconds / r['seconds']:>6.2f}")


if __name__ == "__main__":
    main()
