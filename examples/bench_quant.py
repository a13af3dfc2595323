"""Quantized decoding: weight memory, prefill and decode tokens/s of q8_0, q4_0, q4_mixed vs fp32.

  python examples/bench_quant.py                         # the bench preset, batch 1
  python examples/bench_quant.py --configs gpt2 --decode-tokens 16

For each model shape (random weights: speed does not depend on them) a float32 GPT is built,
then copies of it quantized in memory by each recipe (tinyllm.quant.layers.quantize_model);
each is run through tinyllm.generate.stream on the C backend at batch 1 (one prompt of
--prompt-tokens ids, then --decode-tokens greedy steps; examples/bench_generate.py's runner),
all in one run, each number the best of --repeats. "weights MiB" is the bytes the model
holds (float parameters plus blocks and scales); the ratios are against the fp32 row of the
same run; "ceiling tok/s" is the llama.cpp-style expectation of a bandwidth-bound decode,
this machine's streaming read (GB/s, measured by bench_generate.read_bandwidth on the threads
given) over the bytes one token reads (the weights). A second table times one decoding step's
Linear products alone (M = 1, every layer once, no Python model around them) on each
quantized path this CPU has (TINYLLM_QUANT_PATH's names) against fp32 gemv: what the
kernels reach, and so what the rest of a step costs. Nothing asserts a time; record what it
prints in BENCHMARKS.md. Read csrc/quant_i8.c for the kernels.
"""
import argparse
import copy
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

from bench_generate import CONFIGS, read_bandwidth, run_tinyllm  # noqa: E402
from tinyllm import backends, nn  # noqa: E402
from tinyllm.backends import c_kernels, c_quant  # noqa: E402
from tinyllm.model import GPT, GPTConfig  # noqa: E402
from tinyllm.quant.layers import RECIPES, QuantLinear, quantize_model  # noqa: E402


def rows(name, config, prompt_tokens, decode_tokens, repeats, gbps, layer_by_layer=False):
    """The first table's rows; layer_by_layer adds a "/lbl" row per recipe whose decoding steps
    run every block layer by layer (KVCache(fused=False)), its ratios against fp32/lbl."""
    base = GPT(config).eval()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, prompt_tokens))
    models, results = {}, {}
    for recipe in ("fp32", *RECIPES):
        models[recipe] = base if recipe == "fp32" else copy.deepcopy(base)
        if recipe != "fp32":
            quantize_model(models[recipe], recipe)
    runs = [(r, fused) for r in models for fused in ((True, False) if layer_by_layer else (True,))]
    for _ in range(repeats):   # the recipes interleaved, so a burst of load hits them all
        for recipe, fused in runs:
            model, label = models[recipe], recipe if fused else f"{recipe}/lbl"
            with backends.using("c"):
                pp, tg = run_tinyllm(model, prompt, decode_tokens, fused)
            old = results.get(label, (0, 0, 0))
            results[label] = (model.weight_bytes(), max(old[1], pp), max(old[2], tg))
    for recipe, (mem, pp, tg) in results.items():
        mem0, pp0, tg0 = results["fp32/lbl" if recipe.endswith("/lbl") else "fp32"]
        ceiling = f"{gbps * 1e9 / mem:>12,.1f}" if gbps else f"{'-':>12}"
        print(f"{name:<6} {recipe:<13} {mem / 2 ** 20:>11.1f} {mem / mem0:>6.1%} {pp:>13,.0f} "
              f"{pp / pp0:>6.2f}x {tg:>12,.1f} {tg / tg0:>6.2f}x {ceiling}", flush=True)
    return models


def step_products(model):
    """One decoding step's Linear products of model (x of one row), as (label, bytes, call)."""
    rng, calls = np.random.default_rng(1), []
    for _, module in _modules(model):
        if isinstance(module, QuantLinear):
            b = module.blocks
            x = rng.standard_normal((1, b.shape[1])).astype(np.float32)
            calls.append((b.nbytes, lambda path, b=b, x=x: getattr(c_quant, f"matmul_{b.fmt}")(
                x, b.q, b.scale, path=path)))
        elif isinstance(module, nn.Linear):
            w = module.weight.data
            x = rng.standard_normal((1, w.shape[1])).astype(np.float32)
            calls.append((w.nbytes, lambda path, w=w, x=x: c_kernels.gemv(x, w)))
    return calls


def _modules(module, prefix=""):
    for attr, child in module.children():
        yield prefix + attr, child
        yield from _modules(child, prefix + attr + ".")


def kernel_rows(name, models, repeats, clock=time.perf_counter):
    """The second table: one step's products alone, best of `repeats`, per recipe and path,
    timed by `clock` (time.thread_time: this thread's CPU time)."""
    runs = [(r, p) for r in models for p in (["-"] if r == "fp32" else c_quant.available_paths())]
    best = {}
    for _ in range(repeats):
        for recipe, path in runs:
            calls = step_products(models[recipe])
            t = clock()
            for _, call in calls:
                call(None if path == "-" else path)
            best[recipe, path] = min(best.get((recipe, path), 1e9), clock() - t)
            best[recipe, "bytes"] = sum(nbytes for nbytes, _ in calls)
    t0 = best["fp32", "-"]
    for recipe, path in runs:
        t = best[recipe, path]
        print(f"{name:<6} {recipe:<9} {path:<12} {t * 1e3:>9.2f} {best[recipe, 'bytes'] / t / 1e9:>7.1f} "
              f"{t0 / t:>6.2f}x", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["bench"], choices=list(CONFIGS))
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length (default: %(default)s)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs (default: %(default)s)")
    p.add_argument("--layer-by-layer", action="store_true",
                   help="add rows whose decoding steps run every block layer by layer, not as "
                        "one fused decode_block call")
    p.add_argument("--cpu-time", action="store_true",
                   help="time the products alone by this thread's CPU time, not wall time: with "
                        "OMP_NUM_THREADS=1 the kernels' own time, which other work on a busy "
                        "machine stretches less")
    args = p.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}, {os.environ.get('OMP_NUM_THREADS') or os.cpu_count()} threads; C backend, "
          f"batch 1, prompt {args.prompt_tokens}, {args.decode_tokens} decoded, best of {args.repeats}")
    gbps = read_bandwidth(256)
    print(f"streaming read: {gbps:.1f} GB/s" if gbps else "streaming read: not measured (no cc)")
    print(f"{'shape':<6} {'weights':<13} {'weights MiB':>11} {'of fp32':>6} {'prefill tok/s':>13} "
          f"{'vs fp32':>7} {'decode tok/s':>12} {'vs fp32':>7} {'ceiling tok/s':>12}")
    models = {name: rows(name, GPTConfig(**CONFIGS[name]), args.prompt_tokens, args.decode_tokens,
                         args.repeats, gbps, args.layer_by_layer) for name in args.configs}
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(f"\none decoding step's Linear products alone (M = 1, {'CPU' if args.cpu_time else 'wall'} "
          f"time):\n{'shape':<6} {'weights':<9} "
          f"{'path':<12} {'ms':>9} {'GB/s':>7} {'vs fp32':>7}")
    for name, m in models.items():
        kernel_rows(name, m, args.repeats, clock)


if __name__ == "__main__":
    main()
