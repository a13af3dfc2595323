"""Decoding speed: prefill and decode tokens/s on C, NumPy and PyTorch, against the bandwidth roofline.

  python examples/bench_generate.py                                # bench, 15m, gpt2 at batch 1 and 8
  python examples/bench_generate.py --configs gpt2 --batches 1 --decode-tokens 64
  python examples/bench_generate.py --configs 15m --batches 1 --from-memory     # weights from DRAM

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
the weight bytes being every matrix but the embeddings (one row each is read). Where those
weights fit in the last-level cache, the row's % roof is marked *: they are then read partly
from the cache, and above 100 % says so, not that memory was beaten. --from-memory decodes
such a shape as N copies in turn (the shape column says xN), each with its own weights, N
enough that they fill twice the cache: every token then reads its weights from memory, as on
a CPU whose cache is smaller than the model, while the small state a step reuses stays
cached, as it does there (evicting the whole cache between tokens would evict that too). Each
number is the best of --repeats rounds, each of which runs every runner in turn (the
machine may be shared: load that comes and goes then meets every runner alike). Nothing asserts a
time; record what it prints in BENCHMARKS.md. --layer-by-layer adds a row "c-lbl": C with every
block of a decoding step run layer by layer (KVCache(fused=False)) instead of as one
decode_block call, and C/lbl the fused step's gain. Read csrc/decode.c for the kernels
(TINYLLM_DECODE_PATH=avx512|avx2|portable picks their instructions; the header says which ran).
"""
import argparse
import glob
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


def last_level_cache(root="/sys/devices/system/cpu/cpu0/cache"):
    """Bytes of this CPU's last-level cache (Linux sysfs), or None where it says nothing."""
    sizes = {}
    for index in glob.glob(os.path.join(root, "index*")):
        try:
            level, size = (open(os.path.join(index, f)).read().strip() for f in ("level", "size"))
            sizes[int(level)] = int(size.rstrip("KMG")) * 1024 ** " KMG".index(size[-1])
        except (OSError, ValueError):
            continue
    return sizes[max(sizes)] if sizes else None


def bytes_per_step(c, batch, context):
    """Bytes one decoding step reads: the matrices once, plus each row's cached keys and values."""
    C = c.n_embd
    weights = 4 * (c.n_layer * 12 * C * C + c.vocab_size * C)              # qkv, proj, mlp; lm_head
    kv = 4 * 2 * c.n_layer * context * C                                   # k and v, every layer
    return weights + batch * kv


def run_tinyllm(models, prompt, n_decode, fused=True):
    """(prefill, decode) tokens/s of one GPT, or of a list of them decoded in turn, a token of
    each at a time (--from-memory). fused=False: every block of a decoding step layer by layer
    (KVCache(fused=False))."""
    models = models if isinstance(models, list) else [models]
    timings = [Timing() for _ in models]
    steps = [stream(m, prompt, n_decode + 1, Sampling(temperature=0),
                    cache=KVCache(m.config, fused=fused), timing=t)
             for m, t in zip(models, timings)]
    for _ in zip(*steps):
        pass
    return (sum(t.prefill_tokens for t in timings) / sum(t.prefill_s for t in timings),
            sum(t.decode_tokens for t in timings) / sum(t.decode_s for t in timings))


def run_torch(models, prompt, n_decode):
    """As run_tinyllm, on each model's PyTorch twin (model.torch) with a preallocated cache."""
    import torch
    from torch_gpt import TorchKVCache
    B = prompt.shape[0]
    with torch.no_grad():
        caches = [TorchKVCache(m.config, B) for m in models]
        t0 = time.perf_counter()
        nxt = [m.torch(torch.from_numpy(prompt), cache=c)[0][:, -1].argmax(-1, keepdim=True)
               for m, c in zip(models, caches)]
        t1 = time.perf_counter()
        for _ in range(n_decode):
            nxt = [m.torch(x, cache=c)[0][:, -1].argmax(-1, keepdim=True)
                   for m, c, x in zip(models, caches, nxt)]
        t2 = time.perf_counter()
    return len(models) * prompt.size / (t1 - t0), len(models) * B * n_decode / (t2 - t1)


def copies_from_memory(config, cache_bytes):
    """How many models of this shape --from-memory decodes in turn: enough that their matrices
    fill twice the last-level cache, so each one's weights are evicted by the others before its
    next token (as on a CPU whose cache is smaller than one model), while the small state every
    step reuses (code, activations, the interpreter's objects) stays cached, as it does there.
    Measured on the 15m shape, a 480 MiB L3: 12 and 24 copies decoded alike (414-420 tok/s)."""
    if not cache_bytes:
        return 1
    return max(1, -(-2 * cache_bytes // bytes_per_step(config, 0, 0)))


def measure(models, names, prompt, n_decode, repeats):
    """{runner: (prefill tokens/s, decode tokens/s)}, each the best of `repeats` rounds. A round
    runs every runner once, in turn, so load that comes and goes meets them all alike; every
    other round in reverse order, as the first runner of a round was measured up to 2x slower
    than the same runner later in it (on a loaded 2-core machine)."""
    def once(r, n):
        if r == "torch":
            return run_torch(models, prompt, n)
        with backends.using(r.split("-")[0]):   # "c-lbl": C, layer by layer
            return run_tinyllm(models, prompt, n, fused=not r.endswith("-lbl"))

    # Untimed, first: first touches, thread pools (a round's prefill is one call, and a cold
    # one ran up to 1.5x slower); in reverse, so that the first round does not start just
    # after torch, whose idle threads still spin for a while (C then measured 0.4x its speed).
    for r in names[::-1]:
        once(r, 2)
    best = {}
    for i in range(repeats):
        for r in (names if i % 2 == 0 else names[::-1]):
            pp, tg = once(r, n_decode)
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


def table_rows(name, config, batches, names, bandwidth, prompt_tokens, decode_tokens, repeats,
               cache_bytes=None, from_memory=False):
    copies = copies_from_memory(config, cache_bytes) if from_memory else 1
    models = [GPT(config).eval() for _ in range(copies)]
    in_cache = copies == 1 and cache_bytes is not None and \
        bytes_per_step(config, 0, 0) <= cache_bytes
    if "torch" in names:
        from torch_gpt import from_tinyllm
        for model in models:
            model.torch = from_tinyllm(model).eval()
    label = name if copies == 1 else f"{name}x{copies}"
    for B in batches:
        prompt = np.random.default_rng(0).integers(0, config.vocab_size, (B, prompt_tokens))
        context = prompt_tokens + decode_tokens // 2
        roof = bandwidth * 1e9 * B / bytes_per_step(config, B, context) if bandwidth else None
        results = measure(models, names, prompt, decode_tokens, repeats)
        for r, (pp, tg) in results.items():
            ratios = [f"{tg / results[o][1]:.2f}x" if r == "c" and o in results else ""
                      for o in ("numpy", "torch", "c-lbl")]
            print(f"{label:<8} {B:>2} {r:<6} {pp:>13,.0f} {tg:>12,.1f} "
                  f"{'%5.0f%%' % (100 * tg / roof) + '*' * in_cache if roof else '-':>6} "
                  f"{'%.0f' % roof if roof else '-':>8} {ratios[0]:>7} {ratios[1]:>7} "
                  f"{pp / tg:>5.1f}" + (f" {ratios[2]:>7}" if "c-lbl" in results else ""),
                  flush=True)


def run(configs=tuple(CONFIGS), batches=(1, 8), prompt_tokens=32, decode_tokens=32, repeats=2,
        bandwidth_mb=1024, layer_by_layer=False, from_memory=False):
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
    cache_bytes = last_level_cache()
    if cache_bytes:
        print(f"last-level cache {cache_bytes / 2 ** 20:.0f} MiB; " + (
            "shape xN: N copies decoded in turn, their weights read from memory" if from_memory
            else "* marks a shape whose weights fit in it: its % roof is partly cache, not "
                 "memory, bandwidth (--from-memory measures it from memory)"))
    print(f"{'shape':<8} {'B':>2} {'runner':<6} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'% roof':>6} {'roofline':>8} {'C/NumPy':>7} {'C/torch':>7} {'pp/tg':>5}"
          + (f" {'C/lbl':>7}" if "c-lbl" in names else ""))
    for name in configs:
        table_rows(name, GPTConfig(**CONFIGS[name]), batches, names, bandwidth, prompt_tokens,
                   decode_tokens, repeats, cache_bytes, from_memory)
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
    p.add_argument("--from-memory", action="store_true",
                   help="decode each shape as several copies in turn, enough to fill twice the "
                        "last-level cache, so that every token's weights come from memory (the "
                        "roofline's case) on a CPU whose cache holds one model")
    args = p.parse_args()
    run(args.configs, args.batches, args.prompt_tokens, args.decode_tokens, args.repeats,
        args.bandwidth_mb, args.layer_by_layer, args.from_memory)


if __name__ == "__main__":
    main()
