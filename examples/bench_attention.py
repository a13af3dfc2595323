"""Benchmark of the fused attention kernel: time against NumPy and PyTorch, and memory against T.

  python examples/bench_attention.py                 # both parts, default sizes
  python examples/bench_attention.py --repeats 10 --memory-T 1024 2048 4096 8192
  OMP_NUM_THREADS=1 python examples/bench_attention.py --no-memory

Part 1 times attention forward + backward at (B 8, nh 6, T 256, hs 64) and
(B 1, nh 8, T 2048, hs 64) for the C kernel (csrc/attention.c) in float32 and in
bf16 mixed precision (attention_forward_bf16, what --dtype bf16 trains with), the
NumPy reference kernels, and torch.nn.functional.scaled_dot_product_attention
(is_causal=True) with autograd when torch is installed, in float32 and under
torch.autocast("cpu", dtype=torch.bfloat16), on the same number of threads, and
prints one table with every row's time relative to the C kernel's float32 one. Times are
the best of --repeats runs after a warm-up (the best, because other processes on
a shared machine only ever add time). Part 2 runs the C kernel alone in a fresh
process per T and prints the peak RSS it adds: its outputs, which grow with T,
and beyond them only a few (64, 64) tile buffers on each thread's stack, never
anything of size T^2.
Nothing here asserts a time. The whole-model benchmark is examples/benchmark.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinyllm.backends import c_kernels as C              # noqa: E402  (after the path fix)
from tinyllm.backends import numpy_kernels as K          # noqa: E402
from tinyllm.memory import peak_resident_bytes, reset_peak, resident_bytes   # noqa: E402

TIME_SHAPES = [(8, 6, 256, 64), (1, 8, 2048, 64)]        # (B, nh, T, hs)
MEMORY_T = [1024, 2048, 4096]                            # at B 1, nh 8, hs 64


def best_of(repeats, fn):
    """The fastest of `repeats` calls after one warm-up, in seconds, as (forward, backward)."""
    time.sleep(0.5)   # let the previous row's worker threads (OpenBLAS, torch's) stop spinning
    fn()
    times = [fn() for _ in range(repeats)]
    return min(t[0] for t in times), min(t[1] for t in times)


def time_kernels(kernels, q, k, v, dout, bf16=False):
    forward, backward = ((kernels.attention_forward_bf16, kernels.attention_backward_bf16) if bf16
                         else (kernels.attention_forward, kernels.attention_backward))
    t0 = time.perf_counter()
    out, lse = forward(q, k, v)
    t1 = time.perf_counter()
    backward(dout, q, k, v, out, lse)
    return t1 - t0, time.perf_counter() - t1


def time_torch(torch, q, k, v, dout, bf16=False):
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    dout = torch.from_numpy(dout)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t0 = time.perf_counter()
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            t1 = time.perf_counter()
        out.backward(dout.to(out.dtype))
        return t1 - t0, time.perf_counter() - t1
    return step


def time_table(repeats):
    try:
        import torch
        torch.set_num_threads(C.num_threads())             # the threads our kernels run on
    except ImportError:
        torch = None
    print(f"attention forward + backward, float32 and bf16, {C.num_threads()} threads, best of {repeats} "
          f"(ms){'' if torch else '; torch is not installed'}")
    print(f"{'B, nh, T, hs':<18}{'kernel':<22}{'forward':>10}{'backward':>10}{'total':>10}"
          f"{'x C':>8}")
    rng = np.random.default_rng(0)
    for B, nh, T, hs in TIME_SHAPES:
        q, k, v, dout = (rng.standard_normal((B, nh, T, hs), dtype=np.float32) for _ in range(4))
        rows = [("tinyllm C", best_of(repeats, lambda: time_kernels(C, q, k, v, dout))),
                ("tinyllm C bf16", best_of(repeats, lambda: time_kernels(C, q, k, v, dout, True))),
                ("tinyllm NumPy", best_of(repeats, lambda: time_kernels(K, q, k, v, dout)))]
        if torch is not None:
            version = torch.__version__.split('+')[0]
            rows += [(f"torch {version} sdpa", best_of(repeats, time_torch(torch, q, k, v, dout))),
                     (f"torch {version} sdpa bf16",
                      best_of(repeats, time_torch(torch, q, k, v, dout, True)))]
        c_total = sum(rows[0][1])
        for name, (fwd, bwd) in rows:
            print(f"{str((B, nh, T, hs)):<18}{name:<22}{fwd * 1e3:>10.1f}{bwd * 1e3:>10.1f}"
                  f"{(fwd + bwd) * 1e3:>10.1f}{(fwd + bwd) / c_total:>8.2f}")


def measure_memory(T, B=1, nh=8, hs=64):
    """In this (fresh) process: the peak RSS that one forward + backward adds beyond its outputs.

    The peak is the kernel's VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over exec from the parent's image (hundreds of MiB once the
    parent has imported torch), while VmHWM belongs to this process's memory.
    """
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, nh, T, hs), dtype=np.float32) for _ in range(4))
    tiny = q[:, :, :1].copy()
    # a tiny call first, so that OpenMP's threads and their stacks exist before the baseline
    C.attention_backward(tiny, tiny, tiny, tiny, *C.attention_forward(tiny, tiny, tiny))
    reset_peak()                     # peak := now (where it can't, the peak may be an import's)
    rss_before = resident_bytes()
    out, lse = C.attention_forward(q, k, v)
    dq, dk, dv = C.attention_backward(dout, q, k, v, out, lse)
    peak = peak_resident_bytes()
    outputs = sum(x.nbytes for x in (out, lse, dq, dk, dv))
    return {"T": T, "inputs": 4 * q.nbytes, "outputs": outputs,
            "added": peak - rss_before, "extra": peak - rss_before - outputs}


def memory_table(Ts):
    print(f"\npeak memory of one C attention forward + backward (B 1, nh 8, hs 64), "
          f"a fresh process per T (MiB);\nadded = peak RSS - RSS before, extra = added - outputs; (T, T) scores "
          f"for the 8 heads would be {8 * Ts[-1] ** 2 * 4 / 2 ** 20:.0f} MiB at T = {Ts[-1]}")
    print(f"{'T':>6}{'inputs':>10}{'outputs':>10}{'added':>10}{'extra':>10}")
    mib = 2 ** 20
    for T in Ts:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", str(T)],
                             capture_output=True, text=True, check=True)
        r = json.loads(run.stdout)
        print(f"{r['T']:>6}{r['inputs'] / mib:>10.2f}{r['outputs'] / mib:>10.2f}"
              f"{r['added'] / mib:>10.2f}{r['extra'] / mib:>10.2f}")
    print("(extra within +-0.1 MiB is page noise: outputs partly land in pages the process "
          "already held)")


def run(repeats=5, memory_T=MEMORY_T, memory=True):
    time_table(repeats)
    if memory:
        memory_table(memory_T)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="threads: OMP_NUM_THREADS (torch gets the same number)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--memory-T", type=int, nargs="+", default=MEMORY_T,
                        help="sequence lengths of the memory table (default 1024 2048 4096)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)   # one memory run
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(measure_memory(args.memory_child)))
    else:
        run(args.repeats, args.memory_T, not args.no_memory)


if __name__ == "__main__":
    main()
