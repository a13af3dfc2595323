"""Benchmark of the CUDA kernels on a GPU: matmul against cuBLAS, attention against torch SDPA.

  python examples/bench_cuda.py                  # needs a GPU and the CUDA library (make)
  python examples/bench_cuda.py --repeats 50
  python examples/bench_cuda.py --json out/bench_cuda.json   # also every row as JSON

Part 1: matmul TFLOP/s of our float32 tile kernel and our TF32 tensor-core
kernel against torch.matmul (cuBLAS) in float32 and in TF32, on the square
sizes and the GPT's own shapes (the bench preset, batch 8). Part 2: fused
causal attention forward + backward against
torch.nn.functional.scaled_dot_product_attention(is_causal=True). Every row
prints its ratio to torch, measured in this run; times are the median of
--repeats runs after warm-up, each synchronized. The full training step
(tokens/s against PyTorch on the same GPU) is `python examples/benchmark.py
--what train`, which includes the cuda backend and torch-cuda when both work.
Nothing here asserts a time.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinyllm.backends import BackendUnavailable, get_backend  # noqa: E402  (after the path fix)

SQUARE = [1024, 2048, 4096]
GPT_SHAPES = [(2048, 1152, 384), (2048, 384, 1536), (2048, 8192, 384)]   # (M, N, K): qkv, mlp, lm_head
# (B, nh, T, hs); (8, 12, 1024, 64) is GPT-2 small's attention at batch 8, issue 17's target size
ATTENTION = [(8, 6, 256, 64), (8, 12, 1024, 64), (1, 16, 4096, 128)]


def median_seconds(fn, sync, repeats):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_table(cuda, torch, repeats):
    print(f"{'M x N x K':<20} {'ours fp32':>10} {'cuBLAS fp32':>12} {'ratio':>6} "
          f"{'ours tf32':>10} {'cuBLAS tf32':>12} {'ratio':>6}   (TFLOP/s)")
    rng, rows = np.random.default_rng(0), []
    for M, N, K in [(n, n, n) for n in SQUARE] + GPT_SHAPES:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        da, db = cuda.to_device(a), cuda.to_device(b)
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        row = []
        for precision in ("highest", "tf32"):
            cuda.set_matmul_precision(precision)
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            ours = median_seconds(lambda: cuda.matmul(da, db), cuda.synchronize, repeats)
            theirs = median_seconds(lambda: ta @ tb, torch.cuda.synchronize, repeats)
            flop = 2.0 * M * N * K
            row += [flop / ours / 1e12, flop / theirs / 1e12, theirs / ours]
        cuda.set_matmul_precision("highest")
        print(f"{f'{M} x {N} x {K}':<20} {row[0]:>10.1f} {row[1]:>12.1f} {row[2]:>5.2f}x "
              f"{row[3]:>10.1f} {row[4]:>12.1f} {row[5]:>5.2f}x", flush=True)
        rows.append(dict(zip(["ours_fp32", "cublas_fp32", "ratio_fp32", "ours_tf32", "cublas_tf32",
                              "ratio_tf32"], row), shape=[M, N, K]))
    return rows


def attention_table(cuda, torch, repeats):
    print(f"{'B nh T hs':<18} {'ours ms':>9} {'SDPA ms':>9} {'ratio':>6}   (forward + backward)")
    rng, rows = np.random.default_rng(0), []
    for B, nh, T, hs in ATTENTION:
        q, k, v, dout = (rng.standard_normal((B, nh, T, hs)).astype(np.float32) for _ in range(4))
        dq_, dk_, dv_, ddout = (cuda.to_device(x) for x in (q, k, v, dout))

        def ours():
            out, lse = cuda.attention_forward(dq_, dk_, dv_)
            cuda.attention_backward(ddout, dq_, dk_, dv_, out, lse)
        tq, tk, tv = (torch.from_numpy(x).cuda().requires_grad_() for x in (q, k, v))
        tdout = torch.from_numpy(dout).cuda()

        def theirs():
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            out.backward(tdout)
        t_ours = median_seconds(ours, cuda.synchronize, repeats)
        t_theirs = median_seconds(theirs, torch.cuda.synchronize, repeats)
        print(f"{f'{B} {nh} {T} {hs}':<18} {t_ours * 1e3:>9.3f} {t_theirs * 1e3:>9.3f} "
              f"{t_theirs / t_ours:>5.2f}x", flush=True)
        rows.append({"shape": [B, nh, T, hs], "ours_ms": t_ours * 1e3, "sdpa_ms": t_theirs * 1e3,
                     "ratio": t_theirs / t_ours})
    return rows


def run(repeats=20):
    """Print both tables; return their rows ({"gpu", "matmul", "attention"}), or None when skipped."""
    try:
        cuda = get_backend("cuda")
    except BackendUnavailable as e:
        print(f"skipped: {e}")
        return
    if cuda.EMULATED:
        print("skipped: the CUDA library is the CPU emulation; timings need a GPU")
        return
    try:
        import torch
    except ImportError:
        print("skipped: torch is not installed (pip install torch) for the cuBLAS and SDPA columns")
        return
    if not torch.cuda.is_available():
        print("skipped: this torch build sees no GPU")
        return
    print(f"GPU: {cuda.device_name()}; torch {torch.__version__}", flush=True)
    return {"gpu": cuda.device_name(), "torch": torch.__version__,
            "matmul": matmul_table(cuda, torch, repeats), "attention": attention_table(cuda, torch, repeats)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed runs per case (default: %(default)s)")
    p.add_argument("--json", help="also write the rows to this JSON file (not written when skipped)")
    args = p.parse_args()
    result = run(args.repeats)
    if args.json and result:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
