"""Benchmarks: every speed claim of tinyllm, measured side by side in one run.

  python examples/benchmark.py                      # everything (make bench): several minutes
  python examples/benchmark.py --what train matmul  # some sections
  python examples/benchmark.py --what train --configs bench --steps 5
  python examples/benchmark.py --what train --configs bench --who c c-bf16 torch torch-bf16

Sections (each also runs alone as examples/bench_<name>.py --help):
  train      full training steps (forward, backward, AdamW) of each preset on each
             backend built here and on PyTorch CPU eager (when installed), in fp32 and in
             bf16 mixed precision (c-bf16: --dtype bf16; torch-bf16: autocast), each case
             in its own process so peak memory (max RSS) is that case's alone
  matmul     GFLOP/s of the C matmul vs NumPy's BLAS, and the CPU's peak
  attention  fused attention forward + backward vs NumPy and torch SDPA; memory vs T
  tokenizer  BPE encode MB/s vs tiktoken, training time vs HuggingFace tokenizers
  dedup      MinHash-LSH near-duplicate precision, recall and time vs datasketch
  cuda       (on a GPU) matmul vs cuBLAS and attention vs torch SDPA; the train section
             then also runs the cuda backend and PyTorch on the GPU
Every table prints ratios measured in the same run; nothing asserts a time.
Record what it prints in BENCHMARKS.md.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))


def measure_tinyllm(config_name, backend, batch_size, steps, warmup, dtype="fp32"):
    import numpy as np

    from tinyllm import backends
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW, clip_grad_norm, param_groups

    kernels = backends.set_backend(backend)
    model = GPT(preset(config_name)).to(kernels).set_matmul_dtype(dtype)   # on the GPU for cuda
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-4)
    c = model.config
    rng = np.random.default_rng(0)
    x = rng.integers(0, c.vocab_size, (batch_size, c.block_size))
    y = rng.integers(0, c.vocab_size, (batch_size, c.block_size))

    def step():
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        loss.item()   # as a training loop does; on a GPU it waits for the step's kernels
    return _time(step, steps, warmup), model.num_parameters(), model.flops_per_token()


def measure_torch(config_name, batch_size, steps, warmup, device="cpu", dtype="fp32"):
    """One training step in PyTorch eager; dtype "bf16": under torch.autocast (bf16 matmuls,
    fp32 weights, as --dtype bf16 does)."""
    import contextlib

    import torch
    from torch_gpt import from_tinyllm

    from tinyllm.model import GPT, preset
    model = from_tinyllm(GPT(preset(config_name))).to(device)
    c = preset(config_name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, c.vocab_size, (batch_size, c.block_size), generator=g).to(device)
    y = torch.randint(0, c.vocab_size, (batch_size, c.block_size), generator=g).to(device)

    def step():
        with (torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16"
              else contextlib.nullcontext()):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return _time(step, steps, warmup), None, None


def _time(step, steps, warmup):
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def run_case(args):
    """Child process: measure one case and print its result as JSON."""
    from tinyllm.malloc import keep_freed_memory
    config_name, who = args.case.split(":")
    keep_freed_memory()   # both sides get the same allocator settings
    who, dtype = who.split("-bf16")[0], "bf16" if who.endswith("-bf16") else "fp32"
    if who.startswith("torch"):   # torch (CPU) or torch-cuda
        device = "cuda" if who == "torch-cuda" else "cpu"
        seconds, params, flops = measure_torch(config_name, args.batch_size, args.steps,
                                               args.warmup, device, dtype)
    else:
        seconds, params, flops = measure_tinyllm(config_name, who, args.batch_size, args.steps,
                                                 args.warmup, dtype)
    print(json.dumps({"seconds": seconds, "params": params, "flops_per_token": flops,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_train(args):
    from tinyllm.backends import available_backends
    from tinyllm.model import preset
    who = list(reversed(available_backends()))        # numpy first: the ratios' baseline
    if "c" in who:                                     # mixed precision: --dtype bf16
        who.append("c-bf16")
    try:
        import torch
        who += ["torch", "torch-bf16"]                 # fp32, and bf16 under autocast
        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            who.append("torch-cuda")
            torch_note += f"; GPU {torch.cuda.get_device_name()}"
    except ImportError:
        torch_note = "torch not installed (pip install torch==2.13.0 to compare)"
    who = [w for w in who if w in args.who] if args.who else who
    print(f"training step, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"warm-up, best of {args.rounds} round(s) of every case; {os.cpu_count()} CPUs; "
          f"{torch_note}; {bf16_note()}")
    print(f"{'config':<8} {'params':>8} {'who':<10} {'ms/step':>9} {'tokens/s':>10} "
          f"{'GFLOP/s':>8} {'peak MB':>8} {'speed vs ' + who[0]:>15}")
    for config_name in args.configs:
        c = preset(config_name)
        tokens = args.batch_size * c.block_size
        results = {}
        for _ in range(args.rounds):   # rounds alternate the cases over a shared machine's load
            for name in who:
                r = _run_case(args, config_name, name)
                if r and (name not in results or r["seconds"] < results[name]["seconds"]):
                    results[name] = r
        flops = next((r["flops_per_token"] for r in results.values() if r["flops_per_token"]), 0)
        baseline = next(iter(results.values()), {}).get("seconds")
        for name, r in results.items():
            params = f"{r['params'] / 1e6:.1f}M" if r["params"] else ""
            print(f"{config_name:<8} {params:>8} {name:<10} {r['seconds'] * 1e3:>9.1f} "
                  f"{tokens / r['seconds']:>10,.0f} {flops * tokens / r['seconds'] / 1e9:>8.1f} "
                  f"{r['peak_mb']:>8,.0f} {baseline / r['seconds']:>14.2f}x")
        pairs = [(ours, theirs) for ours, theirs in (("c", "torch"), ("c-bf16", "torch-bf16"),
                                                     ("c-bf16", "c")) if ours in results and theirs in results]
        if pairs:
            print(f"{config_name:<8} speed ratios: " + ", ".join(
                f"{ours} / {theirs} {results[theirs]['seconds'] / results[ours]['seconds']:.2f}x"
                for ours, theirs in pairs))


def _run_case(args, config_name, name):
    """One case in its own process: its result dict, or None (and a line saying why)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--case", f"{config_name}:{name}",
           "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{config_name:<8} {'':>8} {name:<10} failed: {done.stderr.strip().splitlines()[-1]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def bf16_note():
    """Which instructions the c backend's bf16 matmul runs on here (csrc/cpu.c)."""
    from tinyllm.errors import BackendUnavailable
    try:
        from tinyllm.backends import c_kernels
        return c_kernels.describe_cpu()
    except (BackendUnavailable, AttributeError) as e:   # no C library, or one older than cpu.c
        return f"no C bf16 matmul ({e})"


def main():
    sections = ["train", "matmul", "attention", "tokenizer", "dedup", "cuda"]
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", nargs="+", choices=sections, default=sections, help="sections to run")
    p.add_argument("--configs", nargs="+", default=["default", "bench"], help="train: model presets")
    p.add_argument("--batch-size", type=int, default=8, help="train: sequences per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="train: timed steps per case (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="train: untimed steps first (default: %(default)s)")
    p.add_argument("--who", nargs="+", help="train: only these cases (numpy c c-bf16 torch "
                   "torch-bf16 ...; default: all that run here)")
    p.add_argument("--rounds", type=int, default=1,
                   help="train: rounds of every case, the best kept (default: %(default)s)")
    p.add_argument("--case", help=argparse.SUPPRESS)   # set when this script runs one case in a child
    args = p.parse_args()
    if args.case:
        return run_case(args)
    for name in args.what:
        print(f"\n=== {name} ===", flush=True)
        if name == "train":
            bench_train(args)
        else:
            __import__(f"bench_{name}").run()


if __name__ == "__main__":
    main()
