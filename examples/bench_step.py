"""Where a training step's time goes, kernel by kernel: tinyllm's C backend and PyTorch's.

  python examples/bench_step.py                        # bench preset, batch 8, both sides
  OMP_NUM_THREADS=1 python examples/bench_step.py      # one thread, timed by CPU time
  python examples/bench_step.py --who c --dtype bf16 --steps 5

tinyllm's side wraps every kernel of the c backend module (c_kernels.py) in a timer and runs
examples/benchmark.py's step (forward, backward, clipping, AdamW); "outside the kernels" is the
rest: Python, the autograd graph, the clipping's scaling. PyTorch's side runs the same model
(examples/torch_gpt.py) under torch.profiler and groups its operators into the same parts.
Each part is the sum over a step of each call's fastest time over --steps steps (the fastest,
because other processes on a shared machine only ever add time). With OMP_NUM_THREADS=1 both
sides run on this thread and are timed by its CPU time, which another process's load does not
stretch (torch's profiler reads wall time: its parts are scaled to its step's CPU time). The
matmul rows say which products cost the most. Nothing here asserts a time; the whole-step
comparison is examples/benchmark.py --what train.
"""
import argparse
import collections
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

ONE_THREAD = os.environ.get("OMP_NUM_THREADS") == "1"
CLOCK = time.thread_time if ONE_THREAD else time.perf_counter
# the parts of a step, and the PyTorch operators (by name) that make each one
TORCH_PARTS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "cross_entropy": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
                      "aten::nll_loss_backward"),
    "silu": ("aten::silu", "aten::silu_backward"),
    "embedding": ("aten::index_select", "aten::embedding_dense_backward"),
}


def tinyllm_parts(dtype, steps, batch_size):
    """part -> ms per step, and the matmul shapes' ms, for the c backend."""
    from benchmark import batch

    from tinyllm import backends
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW, clip_grad_norm, param_groups
    kernels = backends.set_backend("c")
    calls, depth = [], [0]

    def timed(name, f):
        def call(*args, **kwargs):
            if depth[0]:                      # a kernel calling another: counted once, outside
                return f(*args, **kwargs)
            depth[0], t0 = 1, CLOCK()
            try:
                return f(*args, **kwargs)
            finally:
                depth[0] = 0
                calls.append((name, CLOCK() - t0, args, kwargs))
        return call
    for name, f in vars(kernels).copy().items():
        if isinstance(f, types.FunctionType) and not name.startswith("_") and f.__module__ == kernels.__name__:
            setattr(kernels, name, timed(name, f))
    model = GPT(preset("bench")).to(kernels).set_matmul_dtype(dtype)
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-4)
    x, y = batch(model.config, batch_size)
    steps_calls, step_times = [], []
    for i in range(steps + 1):   # the first is a warm-up
        calls.clear()
        t0 = CLOCK()
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if i:
            step_times.append(CLOCK() - t0)
            steps_calls.append(list(calls))
    return fastest(steps_calls, min(step_times))


def fastest(steps_calls, step_time):
    """Sum each call's fastest time over the steps, by kernel name and by matmul shape."""
    parts, shapes = collections.Counter(), collections.Counter()
    first = steps_calls[0]
    for i, (name, _, args, kwargs) in enumerate(first):
        best = min(calls[i][1] for calls in steps_calls)
        parts[name.split("_forward")[0].split("_backward")[0]] += best
        if name.startswith("matmul"):
            transposed = "".join("T" if kwargs.get(f"transpose_{s}") else "N" for s in "ab")
            shapes[" x ".join(str(a.shape) for a in args[:2]) + f" {transposed}"] += best
    parts["outside the kernels"] = max(step_time - sum(parts.values()), 0.0)
    return {k: v * 1e3 for k, v in parts.items()}, {k: v * 1e3 for k, v in shapes.items()}, step_time * 1e3


def torch_parts(steps, batch_size):
    """part -> ms per step for PyTorch eager fp32 on the same model and batch."""
    import torch
    from benchmark import batch
    from torch.profiler import ProfilerActivity, profile
    from torch_gpt import from_tinyllm

    from tinyllm.model import GPT, preset
    if ONE_THREAD:
        torch.set_num_threads(1)
    model = from_tinyllm(GPT(preset("bench")))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x, y = (torch.from_numpy(a) for a in batch(preset("bench"), batch_size))

    def step():
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    times = []
    for _ in range(steps):
        t0 = CLOCK()
        step()
        times.append(CLOCK() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}   # ms, wall
    scale = min(times) * 1e3 / sum(ops.values())                             # to the step's clock
    parts = {part: scale * sum(ops.get(n, 0.0) for n in names) for part, names in TORCH_PARTS.items()}
    parts["the rest (elementwise ops, AdamW, the graph)"] = min(times) * 1e3 - sum(parts.values())
    return parts, min(times) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--who", nargs="+", choices=["c", "torch"], default=["c", "torch"])
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="tinyllm's --dtype")
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    from tinyllm.malloc import keep_freed_memory
    keep_freed_memory()   # as benchmark.py: steps reuse their memory instead of faulting pages in
    clock = "this thread's CPU time" if ONE_THREAD else "wall time"
    print(f"bench preset, batch {args.batch_size}, fastest of {args.steps} steps per call, {clock}; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    if "c" in args.who:
        parts, shapes, total = tinyllm_parts(args.dtype, args.steps, args.batch_size)
        print(f"tinyllm c ({args.dtype}): {total:,.0f} ms per step")
        for name, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<44} {ms:8.1f} ms  {ms / total:6.1%}")
        for shape, ms in sorted(shapes.items(), key=lambda kv: -kv[1]):
            print(f"    matmul {shape:<36} {ms:8.1f} ms")
    if "torch" in args.who:
        parts, total = torch_parts(args.steps, args.batch_size)
        print(f"torch fp32: {total:,.0f} ms per step")
        for name, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<44} {ms:8.1f} ms  {ms / total:6.1%}")


if __name__ == "__main__":
    main()
