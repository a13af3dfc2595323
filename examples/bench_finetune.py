"""Benchmark: LoRA against full fine-tuning, peak memory and step time, side by side in one run.

  python examples/bench_finetune.py --batch-size 1           # the bench preset (17M), batch 1
  python examples/bench_finetune.py --preset default --batch-size 16 --steps 5

Each case runs in a fresh process of its own, twice:
  peak      the process's peak RSS (VmHWM, tinyllm.memory) minus its RSS once the
            libraries are loaded and before the model exists: what the model and its training
            take, measured as the OS sees it (malloc keeps freed blocks, as in
            training: tinyllm.malloc)
  where     tracemalloc over every NumPy array (tinyllm only): the parameters,
            their gradients and AdamW's moments, what the forward keeps for the
            backward (the activations, and the logits (B, T, V) where the head is
            trained; a frozen head's loss goes by chunks: lm_loss.py), and the
            step's traced peak
Cases: tinyllm full and tinyllm LoRA (r 8 on c_attn, c_proj, c_fc: the base
frozen, no gradient work for it and no optimizer state), and, when torch and
peft are installed, the same two in PyTorch (examples/torch_gpt.py) with
peft's LoRA. Nothing asserts a time; record the tables in BENCHMARKS.md.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
MB = 2 ** 20


def tinyllm_case(args, use_lora, trace):
    """(one training step, the traced numbers it fills in, trained parameters)."""
    import numpy as np

    from tinyllm.finetune.lora import LoRAConfig, apply_lora
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW, clip_grad_norm, param_groups
    model = GPT(preset(args.preset))
    if use_lora:
        apply_lora(model, LoRAConfig(r=8))
    model.to(args.kernels).set_matmul_dtype(args.dtype)
    traced = {"params": tracemalloc.get_traced_memory()[0] / MB} if trace else {}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = AdamW(param_groups(trained, 0.0), lr=1e-4)
    c, rng = model.config, np.random.default_rng(0)
    x = rng.integers(0, c.vocab_size, (args.batch_size, c.block_size))          # (B, T)
    y = np.where(rng.random(x.shape) < 0.5, -1, rng.integers(0, c.vocab_size, x.shape))  # half masked

    def step():
        before = tracemalloc.get_traced_memory()[0] if trace else 0
        # as the Trainer's step: it reads only the loss, so a frozen head never makes the logits
        _, loss = model(x, y, return_logits=False)
        if trace:
            traced["activations"] = (tracemalloc.get_traced_memory()[0] - before) / MB
        loss.backward()
        if trace:
            traced["grads"] = sum(p.grad.nbytes for _, p in trained) / MB
            traced["moments"] = sum(m.nbytes + v.nbytes for m, v in
                                    zip(opt.exp_avg, opt.exp_avg_sq)) / MB
        clip_grad_norm([p for _, p in trained], 1.0)
        opt.step()
        opt.zero_grad()
        loss.item()
    return step, traced, sum(p.size for _, p in trained)


def torch_case(args, use_lora, trace):
    import peft
    import torch
    from torch_gpt import TorchGPT

    from tinyllm.model import preset
    model = TorchGPT(preset(args.preset))
    if use_lora:
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16,
                                                           target_modules=["c_attn", "c_proj", "c_fc"]))
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
    return step, {}, sum(p.numel() for p in trained)


def run_case(args):
    """Child process: one case, measured one way (--trace or not), its result as one JSON line."""
    from tinyllm import backends
    from tinyllm.malloc import keep_freed_memory
    from tinyllm.memory import peak_resident_bytes, reset_peak, resident_bytes
    keep_freed_memory()
    who, mode = args.case.split(":")
    args.kernels = backends.set_backend(args.backend) if args.backend else backends.get_backend()
    if who == "torch":
        import peft  # noqa: F401  (the libraries are part of the baseline, not of the run)
        import torch  # noqa: F401
    reset_peak()                                         # the imports' transient peak is not the run's
    baseline = resident_bytes() / MB
    if args.trace:
        tracemalloc.start()
    step, traced, trained = (torch_case if who == "torch" else tinyllm_case)(args, mode == "lora",
                                                                             args.trace)
    step()                                               # warm-up
    if args.trace:
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - t0) / args.steps
    if args.trace:
        traced["step peak"] = tracemalloc.get_traced_memory()[1] / MB
    print(json.dumps({"seconds": seconds, "trained": trained, "peak_mb": peak_resident_bytes() / MB - baseline,
                      "baseline_mb": baseline, "traced": traced}))


def child(args, case, trace):
    cmd = [sys.executable, os.path.abspath(__file__), "--case", case, "--preset", args.preset,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--dtype", args.dtype]
    cmd += (["--backend", args.backend] if args.backend else []) + (["--trace"] if trace else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench", help="model shape (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (default: %(default)s)")
    p.add_argument("--backend", default=None, help="tinyllm backend (default: the fastest built)")
    p.add_argument("--dtype", default="fp32", help="tinyllm matmul precision, fp32 or bf16 (default: %(default)s)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return run_case(args)
    cases = ["tinyllm:full", "tinyllm:lora"]
    # looked up, not imported: each case imports what it needs in its own process
    if all(importlib.util.find_spec(name) for name in ("peft", "torch")):
        cases += ["torch:full", "torch:lora"]
    else:
        print("(torch or peft not installed: tinyllm cases only)")
    print(f"fine-tuning step, preset {args.preset}, batch {args.batch_size}, {args.dtype}, "
          f"{args.steps} timed steps; {os.cpu_count()} CPUs")
    print(f"{'case':<14} {'trained':>11} {'ms/step':>9} {'baseline MB':>12} {'peak MB over it':>16} "
          f"{'vs full':>8}")
    full, where = {}, {}
    for case in cases:
        r = child(args, case, trace=False)
        if isinstance(r, str):
            print(f"{case:<14} failed: {r}")
            continue
        base = full.setdefault(case.split(":")[0], r)
        print(f"{case:<14} {r['trained']:>11,} {r['seconds'] * 1e3:>9.0f} {r['baseline_mb']:>12,.0f} "
              f"{r['peak_mb']:>16,.0f} {r['peak_mb'] / base['peak_mb']:>8.0%}")
        if case.startswith("tinyllm"):
            where[case] = child(args, case, trace=True)
    print("\nwhere tinyllm's memory goes (MB, tracemalloc over NumPy arrays):")
    rows = ["params", "grads", "moments", "activations", "step peak"]
    print(f"{'':<22}" + "".join(f"{case:>15}" for case in where))
    for row in rows:
        print(f"{row:<22}" + "".join(f"{r['traced'].get(row, 0):>15,.1f}" if isinstance(r, dict)
                                     else f"{'failed':>15}" for r in where.values()))


if __name__ == "__main__":
    main()
