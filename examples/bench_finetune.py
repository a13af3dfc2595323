"""Benchmark: LoRA against full fine-tuning, peak memory and step time, side by side in one run.

  python examples/bench_finetune.py                          # the bench preset (17M), batch 4
  python examples/bench_finetune.py --preset default --batch-size 16 --steps 5

Each case runs in its own process, so its peak memory (max RSS) is its own.
For tinyllm, tracemalloc also follows every NumPy array: "traced peak" is the
most the arrays held at once during training (the model included), "over
model" that peak minus the model itself: what training adds (gradients,
AdamW's moments, activations). RSS cannot tell that apart, since freed
initialisation buffers stay in the process and are reused. Cases:
tinyllm full and tinyllm LoRA (r 8 on c_attn, c_proj, c_fc: the base frozen,
no gradient work for it and no optimizer state), and, when torch and peft are
installed, the same two in PyTorch with peft's LoRA. Nothing asserts a time;
record the table in BENCHMARKS.md.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tinyllm_case(args, use_lora):
    import numpy as np

    from tinyllm import backends
    from tinyllm.finetune.lora import LoRAConfig, apply_lora
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW, clip_grad_norm, param_groups
    kernels = backends.set_backend(args.backend) if args.backend else backends.get_backend()
    tracemalloc.start()
    model = GPT(preset(args.preset))
    if use_lora:
        apply_lora(model, LoRAConfig(r=8))
    model.to(kernels)
    start = tracemalloc.get_traced_memory()[0] / 2 ** 20
    tracemalloc.reset_peak()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = AdamW(param_groups(trained, 0.0), lr=1e-4)
    c, rng = model.config, np.random.default_rng(0)
    x = rng.integers(0, c.vocab_size, (args.batch_size, c.block_size))          # (B, T)
    y = np.where(rng.random(x.shape) < 0.5, -1, rng.integers(0, c.vocab_size, x.shape))  # half masked

    def step():
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm([p for _, p in trained], 1.0)
        opt.step()
        opt.zero_grad()
        loss.item()
    return step, start, sum(p.size for _, p in trained)


def torch_case(args, use_lora):
    import peft
    import torch
    from torch_gpt import TorchGPT

    from tinyllm.model import preset
    model = TorchGPT(preset(args.preset))
    if use_lora:
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16,
                                                           target_modules=["c_attn", "c_proj", "c_fc"]))
    start = None
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0)
    c, g = preset(args.preset), torch.Generator().manual_seed(0)
    x = torch.randint(0, c.vocab_size, (args.batch_size, c.block_size), generator=g)
    y = torch.where(torch.rand(x.shape, generator=g) < 0.5, -1,
                    torch.randint(0, c.vocab_size, x.shape, generator=g))

    def step():
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return step, start, sum(p.numel() for p in trained)


def run_case(args):
    """Child process: one case, its result as one JSON line."""
    from tinyllm.malloc import keep_freed_memory
    keep_freed_memory()
    who, mode = args.case.split(":")
    step, start, trained = (torch_case if who == "torch" else tinyllm_case)(args, mode == "lora")
    step()                                               # warm-up
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    traced = tracemalloc.get_traced_memory()[1] / 2 ** 20 if start is not None else None
    print(json.dumps({"seconds": (time.perf_counter() - t0) / args.steps, "trained": trained,
                      "peak_mb": rss_mb(), "traced_mb": traced,
                      "over_model_mb": traced - start if traced else None}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench", help="model shape (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (default: %(default)s)")
    p.add_argument("--backend", default=None, help="tinyllm backend (default: the fastest built)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return run_case(args)
    cases = ["tinyllm:full", "tinyllm:lora"]
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        cases += ["torch:full", "torch:lora"]
    except ImportError:
        print("(torch or peft not installed: tinyllm cases only)")
    print(f"fine-tuning step, preset {args.preset}, batch {args.batch_size}, {args.steps} timed steps; "
          f"{os.cpu_count()} CPUs")
    print(f"{'case':<14} {'trained':>11} {'ms/step':>9} {'RSS MB':>7} {'vs full':>8} "
          f"{'traced peak MB':>15} {'vs full':>8} {'over model MB':>14} {'vs full':>8}")
    full = {}
    for case in cases:
        cmd = [sys.executable, os.path.abspath(__file__), "--case", case, "--preset", args.preset,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        cmd += ["--backend", args.backend] if args.backend else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{case:<14} failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        base = full.setdefault(case.split(":")[0], r)
        traced = (f"{r['traced_mb']:>15,.0f} {r['traced_mb'] / base['traced_mb']:>8.0%} "
                  f"{r['over_model_mb']:>14,.0f} {r['over_model_mb'] / base['over_model_mb']:>8.0%}"
                  if r["traced_mb"] else f"{'-':>15} {'':>8} {'-':>14} {'':>8}")
        print(f"{case:<14} {r['trained']:>11,} {r['seconds'] * 1e3:>9.0f} {r['peak_mb']:>7,.0f} "
              f"{r['peak_mb'] / base['peak_mb']:>8.0%} {traced}")


if __name__ == "__main__":
    main()
