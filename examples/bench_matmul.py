"""Benchmark of the C matmuls (fp32 and bf16) against NumPy's BLAS and PyTorch, side by side.

  python examples/bench_matmul.py                        # squares 512..4096 and the GPT shapes
  python examples/bench_matmul.py --sizes 1024 2048 --repeats 10
  OMP_NUM_THREADS=1 python examples/bench_matmul.py      # one core, for ours and for BLAS
  OMP_NUM_THREADS=1 python examples/bench_matmul.py --cpu-time   # one core, by CPU time

Rows: square matmuls, then every Linear layer of the GPT "bench" preset at batch 8 (rows
N = B * T): the forward y = x W^T and both backward products dx = dy W and dW = dy^T x, with
the transposes the training step really uses; last, attention's tile products, a batch of small
matrices. Each row is the best of 2 x `repeats` runs or more (quick ones run for 0.25 s), ours
and NumPy's alternating (the machine may be shared: the best run is the one least disturbed);
GFLOP/s = 2 * batch * M * N * K / time. NumPy's BLAS and PyTorch (its CPU matmul, when torch
is installed) run on as many threads as ours (OMP_NUM_THREADS, or every core). The header names the CPU's matrix features and the path
the bf16 matmul runs on (csrc/cpu.c), and the peaks measured by multiply-add loops with enough
independent accumulators to fill every unit (fp32 FMA; bf16 vdpbf16ps; AMX tdpbf16ps where
present) on as many threads: "% peak" is ours against the fp32 one, "% bf16 peak" the bf16
matmul (csrc/matmul_bf16.c) against the fastest bf16 loop. Nothing is assumed about FLOP per
cycle or the clock: a core's real clock under load is what the loops measure.

This is not a test: nothing asserts a time. Read csrc/matmul.c for the kernel and
examples/benchmark.py for whole training steps.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_c_program(source, args=(), threads=None):
    """Compile C source here with OpenMP (cc, or $CC) and run it -> its stdout, None on failure.

    threads sets OMP_NUM_THREADS for the run. examples/bench_generate.py uses this too."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "prog.c"), os.path.join(tmp, "prog")
        with open(src, "w") as f:
            f.write(source)
        cc = os.environ.get("CC", "cc")
        flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        try:
            subprocess.run([cc, *flags, src, "-o", exe], check=True, capture_output=True)
            return subprocess.run([exe, *map(str, args)], check=True, capture_output=True,
                                  text=True, env=env).stdout
        except (OSError, subprocess.CalledProcessError):
            return None


def measured_peaks(c_kernels, repeats=20):
    """{kind: FLOP/s} of the library's multiply-add loops (csrc/cpu.c) on all its threads, the
    best of `repeats` runs: fp32 FMA, bf16 vdpbf16ps and AMX tdpbf16ps (0: not on this CPU)."""
    lib = c_kernels.lib
    kinds = {"fp32": lib.PEAK_FP32, "bf16": lib.PEAK_BF16, "amx": lib.PEAK_AMX_BF16}
    return {name: max(lib.peak_flops(kind, 4_000_000) for _ in range(repeats))
            for name, kind in kinds.items()}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":")[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def openblas():
    """NumPy's OpenBLAS as a ctypes library (found among the loaded libraries), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    return ctypes.CDLL(sorted(paths)[0]) if paths else None


def openblas_fn(lib, name, restype=ctypes.c_int):
    """openblas_<name> under whichever prefix and suffix this build uses, or None."""
    for symbol in (f"openblas_{name}", f"scipy_openblas_{name}64_", f"scipy_openblas_{name}",
                   f"openblas_{name}64_"):
        fn = getattr(lib, symbol, None) if lib is not None else None
        if fn is not None:
            fn.restype = restype
            return fn
    return None


def cases(sizes, config="bench", batch_size=8):
    """(label, batch, M, N, K, transpose_a, transpose_b) for every row of the table."""
    from tinyllm.backends.numpy_kernels import ATTN_TILE
    from tinyllm.model import preset
    c = preset(config)
    N, C = batch_size * c.block_size, c.n_embd
    rows = [(f"square {n}", 1, n, n, n, False, False) for n in sizes]
    layers = [("qkv", 3 * C, C), ("attn.proj", C, C), ("fc", 4 * C, C), ("mlp.proj", C, 4 * C),
              ("lm_head", c.vocab_size, C)]
    for name, n_out, n_in in layers:          # weight (n_out, n_in), x (N, n_in), y (N, n_out)
        rows += [(f"{name} y=xW^T", 1, N, n_out, n_in, False, True),
                 (f"{name} dx=dyW", 1, N, n_in, n_out, False, False),
                 (f"{name} dW=dy^Tx", 1, n_out, n_in, N, True, False)]
    # attention's tile products, one matrix per (batch, head)
    hs, BH, tile = C // c.n_head, batch_size * c.n_head, min(ATTN_TILE, c.block_size)
    rows += [("attn tile q@k^T", BH, tile, tile, hs, False, True),
             ("attn tile p@v", BH, tile, hs, tile, False, False)]
    return rows


def best_seconds(fns, repeats, rounds=2, clock=time.perf_counter):
    """Best time of each function in fns: `rounds` turns each, alternating, of at least `repeats`
    timed calls, and more for quick calls, up to a quarter of a second a turn (alternating
    spreads both over the same stretch of a shared machine's load). Each turn starts with a
    pause and a warm-up call: the pause lets the other library's threads stop spinning (BLAS
    and OpenMP workers busy-wait after a call), the warm-up wakes this one's."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            time.sleep(0.2)
            t = clock()
            fn()
            once = max(clock() - t, 1e-6)
            calls = max(repeats, min(200, int(0.25 / once)))
            for _ in range(calls):
                t = clock()
                fn()
                best[i] = min(best[i], clock() - t)
    return best


def torch_or_none(threads):
    """PyTorch on `threads` threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def run(sizes=None, repeats=5, peak=True, cpu_time=False):
    """Print the table; returns its rows as dicts. cpu_time: time by this thread's CPU time."""
    import numpy as np

    from tinyllm.backends import c_kernels
    sizes = [512, 1024, 2048, 4096] if sizes is None else sizes
    threads = c_kernels.num_threads()
    if cpu_time and threads != 1:   # the other threads' work would not be counted
        sys.exit(f"--cpu-time times the calling thread alone: {threads} threads; OMP_NUM_THREADS=1")
    blas = openblas()
    set_threads = openblas_fn(blas, "set_num_threads", None)
    get_threads = openblas_fn(blas, "get_num_threads")
    corename = openblas_fn(blas, "get_corename", ctypes.c_char_p)
    if set_threads:
        set_threads(threads)
    blas_threads = get_threads() if get_threads else "?"
    corename = corename().decode() if corename else "?"
    torch = torch_or_none(threads)

    print(f"CPU: {cpu_name()}, {threads} thread(s) for ours, "
          f"{blas_threads} for NumPy's BLAS (OpenBLAS core {corename}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}); "
          f"{f'torch {torch.__version__}' if torch else 'no torch'}")
    print(f"CPU features: {c_kernels.describe_cpu()}")
    peaks = measured_peaks(c_kernels) if peak else {}
    if peaks:
        print("peak, measured on {} thread(s) by independent multiply-add loops (csrc/cpu.c): {}"
              .format(threads, ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()
                                         if v)))
    fp32_peak = peaks.get("fp32")
    bf16_peak = peaks.get("amx") or peaks.get("bf16") or fp32_peak   # what the bf16 path can use
    print(f"{'case':<18} {'batch':>5} {'M':>5} {'N':>5} {'K':>5} {'op':>5} "
          f"{'ours GF/s':>10} {'NumPy GF/s':>11} {'ratio':>6} {'torch GF/s':>11} {'ratio':>6} {'% peak':>7} "
          f"{'bf16 GF/s':>10} {'bf16/ours':>10} {'% bf16 peak':>12}")
    rng = np.random.default_rng(0)
    results = []
    for label, batch, M, N, K, ta, tb in cases(sizes):
        lead = (batch,) if batch > 1 else ()
        a = rng.standard_normal(lead + ((K, M) if ta else (M, K)), dtype=np.float32)
        b = rng.standard_normal(lead + ((N, K) if tb else (K, N)), dtype=np.float32)
        a_op = np.swapaxes(a, -1, -2) if ta else a   # a view: BLAS takes the transpose as a flag
        b_op = np.swapaxes(b, -1, -2) if tb else b
        flops = 2.0 * batch * M * N * K
        fns = [lambda: c_kernels.matmul(a, b, ta, tb), lambda: np.matmul(a_op, b_op),
               lambda: c_kernels.matmul_bf16(a, b, ta, tb)]
        if torch:   # the same views: torch, too, takes a transpose as a stride, not a copy
            a_t, b_t = torch.from_numpy(a_op), torch.from_numpy(b_op)
            fns.append(lambda: torch.matmul(a_t, b_t))
        ours, theirs, bf16, *rival = (flops / s / 1e9 for s in best_seconds(
            fns, repeats, clock=time.thread_time if cpu_time else time.perf_counter))
        rival = f"{rival[0]:>11.1f} {ours / rival[0]:>6.2f}" if rival else f"{'-':>11} {'-':>6}"
        op = ("T" if ta else "N") + ("T" if tb else "N")
        share = f"{100 * ours * 1e9 / fp32_peak:6.0f}%" if fp32_peak else "      ?"
        bf16_share = f"{100 * bf16 * 1e9 / bf16_peak:11.0f}%" if bf16_peak else "           ?"
        print(f"{label:<18} {batch:>5} {M:>5} {N:>5} {K:>5} {op:>5} {ours:>10.1f} {theirs:>11.1f} "
              f"{ours / theirs:>6.2f} {rival} {share} {bf16:>10.1f} {bf16 / ours:>10.2f} {bf16_share}",
              flush=True)
        results.append(dict(case=label, batch=batch, M=M, N=N, K=K, op=op, ours=ours, numpy=theirs,
                            bf16=bf16))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048, 4096],
                   help="square sizes to time (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed runs per row, the best one kept (default: %(default)s)")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the peak-FLOP loops")
    p.add_argument("--cpu-time", action="store_true",
                   help="time by the calling thread's CPU time, not the wall clock (needs "
                        "OMP_NUM_THREADS=1: then ours, NumPy's BLAS and torch all run on it): a "
                        "loaded machine's descheduled time is not counted")
    args = p.parse_args()
    from tinyllm.malloc import keep_freed_memory
    keep_freed_memory()   # as train.py runs: a product's fresh output reuses freed pages, unfaulted
    run(args.sizes, args.repeats, peak=not args.no_peak, cpu_time=args.cpu_time)


if __name__ == "__main__":
    main()
