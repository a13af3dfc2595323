"""Decoding speed: prefill and decode tokens/s on C, NumPy and PyTorch, against the bandwidth roofline.

  python examples/bench_generate.py                                # bench, 15m, gpt2 at batch 1 and 8
  python examples/bench_generate.py --configs gpt2 --batches 1 --decode-tokens 64

For each model shape (random weights: speed does not depend on them) and batch, one
prompt of --prompt-tokens random ids per row is prefilled, then --decode-tokens tokens
are decoded greedily, one per step, on: the C backend, the NumPy backend (both through
tinyllm.generate.stream, whose Timing separates the two phases), and PyTorch eager on
the CPU with a preallocated KV cache (examples/torch_gpt.py, the same weights), each
on OMP_NUM_THREADS threads (every core by default). A decoded token reads every weight
once, so decoding is bound by memory bandwidth: the header measures this machine's read
bandwidth with a streaming sum over a buffer far larger than the last-level cache on as
many threads (compiled here with cc), and "% roof" is decode tokens/s against
    roofline = bandwidth * B / (weight bytes + B * KV-cache bytes read per row),
the weight bytes being every matrix but the embeddings (one row each is read). Each
number is the best of --repeats rounds, each of which runs every runner in turn (the
machine may be shared: load that comes and goes then meets every runner alike). Nothing asserts a
time; record what it prints in BENCHMARKS.md. --layer-by-layer adds a row "c-lbl": C with every
block of a decoding step run layer by layer (KVCache(fused=False)) instead of as one
decode_block call, and C/lbl the fused step's gain. Read csrc/decode.c for the kernels
(TINYLLM_DECODE_PATH=avx512|avx2|portable picks their instructions; the header says which ran).
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

from bench_matmul import run_c_program  # noqa: E402
from tinyllm import backends  # noqa: E402
from tinyllm.generate import KVCache, Timing, stream  # noqa: E402
from tinyllm.model import GPT, PRESETS, GPTConfig  # noqa: E402
from tinyllm.sampling import Sampling  # noqa: E402

CONFIGS = {
    "bench": PRESETS["bench"],                                            # 17M parameters
    "15m": dict(vocab_size=32000, block_size=256, n_layer=6, n_head=6, n_embd=288),  # llama2.c's
    "gpt2": PRESETS["gpt2"],                                              # 163M (untied head)
}

BANDWIDTH_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
/* Best GB/s of a summing read over n floats, all threads, each thread's half read as S
   streams far apart (S = 1, 2, 4, 8): one stream per core leaves this machine's prefetchers
   idle part of the time (Zen 3: 22-24 GB/s, where a gemv that reads 4 far-apart rows at once
   reached 28-30), so the roofline is the best of the four, not the simplest loop's. */
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    float *a = malloc(n * sizeof(float));
#pragma omp parallel for
    for (long i = 0; i < n; i++) a[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int rep = 0; rep < 16; rep++) {
        int S = 1 << (rep % 4);
        double t = omp_get_wtime();
        float s = 0;
#pragma omp parallel reduction(+ : s)
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            long part = n / nt / S / 64 * 64, base = (long)id * part * S;
            float acc[8][16] = {{0}};   /* per stream, vector partial sums: memory-bound */
            for (long i = 0; i < part; i += 16)
                for (int j = 0; j < S; j++)
#pragma omp simd
                    for (int l = 0; l < 16; l++) acc[j][l] += a[base + j * part + i + l];
            for (int j = 0; j < S; j++)
                for (int l = 0; l < 16; l++) s += acc[j][l];
        }
        t = omp_get_wtime() - t;
        sink += s;
        double read = (double)(n / omp_get_max_threads() / S / 64 * 64) * S *
                      omp_get_max_threads() * sizeof(float);
        if (read / t / 1e9 > best) best = read / t / 1e9;
    }
    printf("%.3f %g\n", best, sink);
    return 0;
}
"""


def read_bandwidth(megabytes):
    """GB/s of a streaming read on all threads, or None without a C compiler with OpenMP."""
    out = run_c_program(BANDWIDTH_C, [megabytes * 2 ** 20 // 4])
    return float(out.split()[0]) if out else None


def bytes_per_step(c, batch, context):
    """Bytes one decoding step reads: the matrices once, plus each row's cached keys and values."""
    C = c.n_embd
    weights = 4 * (c.n_layer * 12 * C * C + c.vocab_size * C)              # qkv, proj, mlp; lm_head
    kv = 4 * 2 * c.n_layer * context * C                                   # k and v, every layer
    return weights + batch * kv


def run_tinyllm(model, prompt, n_decode, fused=True):
    """fused=False: every block of a decoding step layer by layer (KVCache(fused=False))."""
    timing = Timing()
    cache = KVCache(model.config, fused=fused)
    for _ in stream(model, prompt, n_decode + 1, Sampling(temperature=0), cache=cache,
                    timing=timing):
        pass
    return timing.prefill_tokens / timing.prefill_s, timing.decode_tokens / timing.decode_s


def run_torch(model, prompt, n_decode):
    import torch
    from torch_gpt import TorchKVCache
    B = prompt.shape[0]
    with torch.no_grad():
        cache = TorchKVCache(model.config, B)
        t0 = time.perf_counter()
        logits = model.torch(torch.from_numpy(prompt), cache=cache)[0]
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        for _ in range(n_decode):
            nxt = model.torch(nxt, cache=cache)[0][:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
    return prompt.size / (t1 - t0), B * n_decode / (t2 - t1)


def measure(model, names, prompt, n_decode, repeats):
    """{runner: (prefill tokens/s, decode tokens/s)}, each the best of `repeats` rounds. A round
    runs every runner once, in turn, so load that comes and goes meets them all alike; every
    other round in reverse order, as the first runner of a round was measured up to 2x slower
    than the same runner later in it (on a loaded 2-core machine)."""
    best = {}
    for i in range(repeats):
        for r in (names if i % 2 == 0 else names[::-1]):
            if r == "torch":
                pp, tg = run_torch(model, prompt, n_decode)
            else:
                with backends.using(r.split("-")[0]):   # "c-lbl": C, layer by layer
                    pp, tg = run_tinyllm(model, prompt, n_decode, fused=not r.endswith("-lbl"))
            old = best.get(r, (0.0, 0.0))
            best[r] = (max(old[0], pp), max(old[1], tg))
    return best


def threads():
    """OMP_NUM_THREADS (our kernels' and OpenBLAS's), else every core; torch is given the same."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


def runners(layer_by_layer=False):
    found = [name for name in ("c", "numpy") if name in backends.available_backends()]
    if layer_by_layer and "c" in found:
        found.insert(1, "c-lbl")
    try:
        import torch
        torch.set_num_threads(threads())
        found.append("torch")
    except ImportError:
        print("(torch is not installed: no PyTorch rows; pip install torch==2.13.0)")
    return found


def table_rows(name, config, batches, names, bandwidth, prompt_tokens, decode_tokens, repeats):
    model = GPT(config).eval()
    if "torch" in names:
        from torch_gpt import from_tinyllm
        model.torch = from_tinyllm(model).eval()
    for B in batches:
        prompt = np.random.default_rng(0).integers(0, config.vocab_size, (B, prompt_tokens))
        context = prompt_tokens + decode_tokens // 2
        roof = bandwidth * 1e9 * B / bytes_per_step(config, B, context) if bandwidth else None
        results = measure(model, names, prompt, decode_tokens, repeats)
        for r, (pp, tg) in results.items():
            ratios = [f"{tg / results[o][1]:.2f}x" if r == "c" and o in results else ""
                      for o in ("numpy", "torch", "c-lbl")]
            print(f"{name:<6} {B:>2} {r:<6} {pp:>13,.0f} {tg:>12,.1f} "
                  f"{'%5.0f%%' % (100 * tg / roof) if roof else '-':>6} "
                  f"{'%.0f' % roof if roof else '-':>8} {ratios[0]:>7} {ratios[1]:>7} "
                  f"{pp / tg:>5.1f}" + (f" {ratios[2]:>7}" if "c-lbl" in results else ""),
                  flush=True)


def run(configs=tuple(CONFIGS), batches=(1, 8), prompt_tokens=32, decode_tokens=32, repeats=2,
        bandwidth_mb=1024, layer_by_layer=False):
    """The whole table (examples/benchmark.py --what generate calls this)."""
    bandwidth = read_bandwidth(bandwidth_mb)
    names = runners(layer_by_layer)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}, {threads()} threads; read bandwidth "
          f"{'%.1f GB/s' % bandwidth if bandwidth else 'not measured (no cc -fopenmp)'} "
          f"({bandwidth_mb} MiB streamed)")
    if "c" in names:
        from tinyllm.backends import c_kernels
        print(f"C decode kernels: {c_kernels.DECODE_PATH}; load average {os.getloadavg()[0]:.1f}")
    print(f"prompt {prompt_tokens} tokens per row, {decode_tokens} decoded, greedy; best of {repeats}")
    print(f"{'shape':<6} {'B':>2} {'runner':<6} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'% roof':>6} {'roofline':>8} {'C/NumPy':>7} {'C/torch':>7} {'pp/tg':>5}"
          + (f" {'C/lbl':>7}" if "c-lbl" in names else ""))
    for name in configs:
        table_rows(name, GPTConfig(**CONFIGS[name]), batches, names, bandwidth, prompt_tokens,
                   decode_tokens, repeats)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length per row (default: %(default)s)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs (default: %(default)s)")
    p.add_argument("--bandwidth-mb", type=int, default=1024, help="buffer of the bandwidth loop (MiB)")
    p.add_argument("--layer-by-layer", action="store_true",
                   help="add a C row whose decoding steps run every block layer by layer, not "
                        "as one fused decode_block call (C/lbl: the fused step's gain)")
    args = p.parse_args()
    run(args.configs, args.batches, args.prompt_tokens, args.decode_tokens, args.repeats,
        args.bandwidth_mb, args.layer_by_layer)


if __name__ == "__main__":
    main()
