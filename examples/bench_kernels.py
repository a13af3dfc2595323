"""Benchmark of the elementwise and row-wise C kernels against their NumPy twins and PyTorch.

  python examples/bench_kernels.py                  # the training step's sizes, best of 7
  python examples/bench_kernels.py --rows 1 --repeats 50   # one decoding row
  OMP_NUM_THREADS=1 python examples/bench_kernels.py

Every kernel a training step calls besides the matmuls and the attention (which have
bench_matmul.py and bench_attention.py): SiLU, RMSNorm, softmax and cross-entropy, each
forward and backward, the residual add, the embedding lookup and its scatter-add, and
AdamW. Sizes are the bench preset's (C 384, the MLP's 4C, vocab 8192, attention rows
of 256) over --rows rows (B x T = 8 x 256 by default). Each line prints the time of C,
NumPy (numpy_kernels.py: the definition) and PyTorch CPU eager (when installed, on the
same threads), and C's speed over each. These loops are memory-bound, so the GB/s column
(bytes read and written once, over C's time) says how near a kernel is to the machine's
bandwidth. Times are the best of --repeats runs after a warm-up (the best, because other
processes on a shared machine only ever add time). Nothing here asserts a time.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinyllm.backends import c_kernels as C              # noqa: E402  (after the path fix)
from tinyllm.backends import numpy_kernels as K          # noqa: E402

CHANNELS, VOCAB, ATTENTION_T = 384, 8192, 256            # the bench preset


def best_of(repeats, fn):
    """The fastest of `repeats` calls after one warm-up, in seconds."""
    time.sleep(0.3)   # let the previous row's worker threads (OpenBLAS, torch's) stop spinning
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cases(rows, rng):
    """name -> (bytes moved, call(kernels)), and the same for torch: (name -> call()) or {}."""
    f32 = np.float32
    x = rng.standard_normal((rows, CHANNELS), dtype=f32)             # (N, C) the residual stream
    h = rng.standard_normal((rows, 4 * CHANNELS), dtype=f32)         # (N, 4C) the MLP's hidden
    w = rng.standard_normal(CHANNELS, dtype=f32)
    s = rng.standard_normal((rows, ATTENTION_T), dtype=f32)          # (N, T) softmax rows
    logits = rng.standard_normal((rows, VOCAB), dtype=f32)           # (N, V)
    targets = rng.integers(0, VOCAB, rows)
    wte = rng.standard_normal((VOCAB, CHANNELS), dtype=f32)
    p, g = (rng.standard_normal((4 * CHANNELS, CHANNELS), dtype=f32) for _ in range(2))
    m, v = np.zeros_like(p), np.abs(rng.standard_normal(p.shape, dtype=f32))
    y, rstd = K.rmsnorm_forward(x, w)
    sm = K.softmax_forward(s)
    _, lse = K.cross_entropy_forward(logits, targets)
    one = np.ones((), f32)
    b = 4   # bytes per float
    ours = {
        "silu forward":       (2 * h.size * b, lambda k: k.silu_forward(h)),
        "silu backward":      (3 * h.size * b, lambda k: k.silu_backward(h, h)),
        "rmsnorm forward":    (2 * x.size * b, lambda k: k.rmsnorm_forward(x, w)),
        "rmsnorm backward":   (3 * x.size * b, lambda k: k.rmsnorm_backward(x, x, w, rstd)),
        "softmax forward":    (2 * s.size * b, lambda k: k.softmax_forward(s)),
        "softmax backward":   (3 * s.size * b, lambda k: k.softmax_backward(s, sm)),
        "xent forward":       (logits.size * b, lambda k: k.cross_entropy_forward(logits, targets)),
        "xent backward":      (2 * logits.size * b,
                               lambda k: k.cross_entropy_backward(one, logits, targets, lse)),
        "residual add":       (3 * x.size * b, lambda k: k.add_forward(x, x)),
        "embedding forward":  (2 * x.size * b, lambda k: k.embedding_forward(targets, wte)),
        "embedding backward": (x.size * b + wte.size * b,
                               lambda k: k.embedding_backward(x, targets, VOCAB)),
        "adamw":              (7 * p.size * b, lambda k: k.adamw_update(p, g, m, v, 1e-4, 0.9, 0.95,
                                                                        1e-8, 0.1, 1)),
    }
    return ours, torch_cases(x, h, w, s, logits, targets, wte, p, g)


def torch_cases(x, h, w, s, logits, targets, wte, p, g):
    """The same work in PyTorch eager (forward and backward by autograd), or {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    F = torch.nn.functional
    tx, th, tw, ts, tl = (torch.from_numpy(a) for a in (x, h, w, s, logits))
    tt, twte = torch.from_numpy(targets), torch.from_numpy(wte)
    tp, tg = torch.from_numpy(p.copy()), torch.from_numpy(g)
    opt = torch.optim.AdamW([torch.nn.Parameter(tp)], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    opt.param_groups[0]["params"][0].grad = tg

    def backward(fn, a):   # the backward alone: the forward is timed in its own line
        a = a.clone().requires_grad_()
        out = fn(a)
        return lambda: torch.autograd.grad(out, a, torch.ones_like(out), retain_graph=True)
    return {
        "silu forward": lambda: F.silu(th),
        "silu backward": backward(F.silu, th),
        "rmsnorm forward": lambda: F.rms_norm(tx, (x.shape[1],), tw, 1e-5),
        "rmsnorm backward": backward(lambda a: F.rms_norm(a, (x.shape[1],), tw, 1e-5), tx),
        "softmax forward": lambda: torch.softmax(ts, -1),
        "softmax backward": backward(lambda a: torch.softmax(a, -1), ts),
        "xent forward": lambda: F.cross_entropy(tl, tt),
        "xent backward": backward(lambda a: F.cross_entropy(a, tt), tl),
        "residual add": lambda: tx + tx,
        "embedding forward": lambda: F.embedding(tt, twte),
        "adamw": opt.step,
    }


def run(rows=2048, repeats=7):
    torch_threads = ""
    try:
        import torch
        torch.set_num_threads(C.num_threads())
        torch_threads = f", torch {torch.__version__} on {torch.get_num_threads()}"
    except ImportError:
        pass
    print(f"kernels at the bench preset's sizes over {rows} rows; C on {C.num_threads()} "
          f"thread(s){torch_threads}; best of {repeats}")
    print(f"{'kernel':<20} {'C ms':>8} {'GB/s':>6} {'NumPy ms':>9} {'C/NumPy':>8} "
          f"{'torch ms':>9} {'C/torch':>8}")
    ours, theirs = cases(rows, np.random.default_rng(0))
    for name, (nbytes, call) in ours.items():
        tc = best_of(repeats, lambda: call(C))
        tn = best_of(repeats, lambda: call(K))
        line = f"{name:<20} {tc * 1e3:8.3f} {nbytes / tc / 1e9:6.1f} {tn * 1e3:9.3f} {tn / tc:7.2f}x"
        if name in theirs:
            tt = best_of(repeats, theirs[name])
            line += f" {tt * 1e3:9.3f} {tt / tc:7.2f}x"
        print(line, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2048,
                   help="rows of every input: B x T (default: %(default)s, the bench step's 8 x 256)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per kernel (default: %(default)s)")
    args = p.parse_args()
    if args.rows < 1 or args.repeats < 1:
        p.error("--rows and --repeats must be at least 1")
    run(args.rows, args.repeats)


if __name__ == "__main__":
    main()
