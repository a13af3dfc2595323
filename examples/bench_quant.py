"""Quantized decoding: weight memory, prefill and decode tokens/s of q8_0, q4_0, q4_mixed vs fp32.

  python examples/bench_quant.py                         # the bench preset, batch 1
  python examples/bench_quant.py --configs gpt2 --decode-tokens 16

For each model shape (random weights: speed does not depend on them) a float32 GPT is built,
then copies of it quantized in memory by each recipe (tinyllm.quant.layers.quantize_model);
each is run through tinyllm.generate.stream on the C backend at batch 1 (one prompt of
--prompt-tokens ids, then --decode-tokens greedy steps; examples/bench_generate.py's runner),
all in one run, each number the best of --repeats. "weights MiB" is the bytes the model
holds (float parameters plus blocks and scales); the ratios are against the fp32 row of the
same run. Nothing asserts a time; record what it prints in BENCHMARKS.md. Read csrc/quant.c
for the kernels.
"""
import argparse
import copy
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

from bench_generate import CONFIGS, run_tinyllm  # noqa: E402
from tinyllm import backends  # noqa: E402
from tinyllm.model import GPT, GPTConfig  # noqa: E402
from tinyllm.quant.layers import RECIPES, quantize_model, quantized_tensors  # noqa: E402


def weight_bytes(model):
    return sum(a.nbytes for a in model.state_dict().values()) + \
        sum(a.nbytes for a in quantized_tensors(model).values())


def rows(name, config, prompt_tokens, decode_tokens, repeats):
    base = GPT(config).eval()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, prompt_tokens))
    results = {}
    for recipe in ("fp32", *RECIPES):
        model = base if recipe == "fp32" else copy.deepcopy(base)
        if recipe != "fp32":
            quantize_model(model, recipe)
        with backends.using("c"):
            runs = [run_tinyllm(model, prompt, decode_tokens) for _ in range(repeats)]
        results[recipe] = (weight_bytes(model), max(r[0] for r in runs), max(r[1] for r in runs))
    mem0, pp0, tg0 = results["fp32"]
    for recipe, (mem, pp, tg) in results.items():
        print(f"{name:<6} {recipe:<9} {mem / 2 ** 20:>11.1f} {mem / mem0:>6.1%} {pp:>13,.0f} "
              f"{pp / pp0:>6.2f}x {tg:>12,.1f} {tg / tg0:>6.2f}x", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["bench"], choices=list(CONFIGS))
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length (default: %(default)s)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs (default: %(default)s)")
    args = p.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}, {os.environ.get('OMP_NUM_THREADS') or os.cpu_count()} threads; C backend, "
          f"batch 1, prompt {args.prompt_tokens}, {args.decode_tokens} decoded, best of {args.repeats}")
    print(f"{'shape':<6} {'weights':<9} {'weights MiB':>11} {'of fp32':>6} {'prefill tok/s':>13} "
          f"{'vs fp32':>7} {'decode tok/s':>12} {'vs fp32':>7}")
    for name in args.configs:
        rows(name, GPTConfig(**CONFIGS[name]), args.prompt_tokens, args.decode_tokens, args.repeats)


if __name__ == "__main__":
    main()
