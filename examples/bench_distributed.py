"""Benchmark of data-parallel training over MPI (tinyllm/distributed.py), side by side in one run.

  python examples/bench_distributed.py                       # bench preset, 2 ranks
  python examples/bench_distributed.py --preset default --steps 5 --batch-size 4

Tables:
  1. tokens/s of full training steps: 1 process x 2 threads (batch 2B) vs 2 ranks x 1
     thread (batch B each, the same global batch), and 2 ranks with --zero 1, with the
     share of the step spent waiting on the gradient communication, with the buckets
     started during the backward (overlap) and all after it (no overlap)
  2. MPI_Allreduce bandwidth on 2 ranks for buffers of 1-64 MB (bus bandwidth = 2 (N-1)/N x
     bytes / time, what a ring moves per link)
  3. the scaling model (tinyllm/plan/scaling.py): step time on N machines
     from the measured compute time, the gradient bytes, a stated network bandwidth and the
     overlap measured in table 1
The 2-rank cases run under `mpirun --oversubscribe` (OpenMPI; `make mpi`), each case in its
own processes. This is not a test: nothing asserts a time. Read tinyllm/distributed.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def train_steps(args):
    """Worker: time args.steps training steps (after one warm-up) on this rank; print JSON."""
    import numpy as np

    from tinyllm import backends, distributed
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW, param_groups

    backends.set_backend("c")
    dist = distributed.connect(timeout=600, bucket_mb=args.bucket_mb)
    model = GPT(preset(args.preset))
    groups = param_groups(model.named_parameters(), 0.1)
    optimizer = dist.attach(model, AdamW(groups, lr=1e-4), zero=args.zero)
    dist.overlap = not args.no_overlap
    rng = np.random.default_rng(dist.rank)
    T, V = model.config.block_size, model.config.vocab_size
    times, waits = [], []
    for step in range(args.steps + 1):
        x = rng.integers(0, V, (args.batch_size, T))                # (B, T)
        y = rng.integers(0, V, (args.batch_size, T))
        t0, wait0 = time.perf_counter(), dist.wait_seconds
        _, loss = model(x, y)
        with dist.averaging_gradients(last=True):
            loss.backward()
        dist.clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        dist.mean([loss.item()])
        if step:   # the first step warms the allocator and the kernels
            times.append(time.perf_counter() - t0)
            waits.append(dist.wait_seconds - wait0)
    if dist.is_main:
        params = sum(p.data.size for p in model.parameters())
        moments = (sum(m.nbytes + v.nbytes for _, m, v, _ in optimizer.slices) if args.zero else
                   sum(m.nbytes + v.nbytes for m, v in zip(optimizer.exp_avg, optimizer.exp_avg_sq)))
        print(json.dumps({"step_s": float(np.median(times)), "wait_s": float(np.median(waits)),
                          "optimizer_mb": moments / 2 ** 20,
                          "tokens": args.batch_size * T * dist.world_size, "grad_bytes": 4 * params}))


def allreduce_bandwidth(args):
    """Worker: the best MPI_Allreduce of 5 runs or 1 s per buffer size; print JSON (rank 0)."""
    import numpy as np

    from tinyllm.distributed import import_mpi

    MPI = import_mpi()
    comm, results = MPI.COMM_WORLD, {}
    # two passes, the first a warm-up: the first seconds of a job ran 100x slower here
    for mb in [*args.sizes_mb, *args.sizes_mb]:
        buffer = np.ones(int(mb * 2 ** 20) // 4, np.float32)
        best, runs, until = float("inf"), 0, time.perf_counter() + 1.0
        # rank 0 decides when to stop, so every rank runs the same number of allreduces;
        # the best run is the one the machine's load disturbed least
        while comm.bcast(runs < 5 or time.perf_counter() < until, root=0):
            runs += 1
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            best = min(best, time.perf_counter() - t0)
        results[mb] = best
    if comm.Get_rank() == 0:
        print(json.dumps(results))


def run_case(ranks, threads, worker, extra):
    env = {**os.environ, **ROOT_ENV, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ROOT}
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker, *extra]
    if ranks > 1:
        command = [*MPIRUN, "-np", str(ranks), *command]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"bench_distributed: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="bench")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per rank (B)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--bandwidths-gbit", type=float, nargs="+", default=[10, 100],
                   help="network bandwidths of the scaling model, Gbit/s")
    p.add_argument("--worker", choices=["train", "allreduce"], help=argparse.SUPPRESS)
    p.add_argument("--zero", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-overlap", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return (train_steps if args.worker == "train" else allreduce_bandwidth)(args)
    common = ["--preset", args.preset, "--steps", str(args.steps), "--bucket-mb", str(args.bucket_mb)]
    per_rank = ["--batch-size", str(args.batch_size)]
    cases = {
        "1 process x 2 threads, batch 2B": run_case(1, 2, "train", common + ["--batch-size", str(2 * args.batch_size)]),
        "1 process x 1 thread, batch B (compute alone)": run_case(1, 1, "train", common + per_rank),
        "2 ranks x 1 thread, batch B, overlap": run_case(2, 1, "train", common + per_rank),
        "2 ranks x 1 thread, batch B, no overlap": run_case(2, 1, "train", common + per_rank + ["--no-overlap"]),
        "2 ranks x 1 thread, batch B, ZeRO-1": run_case(2, 1, "train", common + per_rank + ["--zero", "1"]),
        "2 ranks x 1 thread, batch B, overlap, 4 MB buckets": run_case(
            2, 1, "train", common + per_rank + ["--bucket-mb", "4"]),
    }
    base = cases["1 process x 2 threads, batch 2B"]
    print(f"\n{args.preset} preset, B={args.batch_size}, median of {args.steps} steps, c backend")
    print(f"{'case':<52} {'step s':>8} {'tokens/s':>9} {'vs 1x2':>7} {'comm wait':>10} {'AdamW MB/rank':>14}")
    for name, r in cases.items():
        rate = r["tokens"] / r["step_s"]
        print(f"{name:<52} {r['step_s']:>8.3f} {rate:>9,.0f} {rate / (base['tokens'] / base['step_s']):>6.2f}x "
              f"{r['wait_s'] / r['step_s']:>9.1%} {r['optimizer_mb']:>14.1f}")
    with_overlap = cases["2 ranks x 1 thread, batch B, overlap"]["wait_s"]
    without = cases["2 ranks x 1 thread, batch B, no overlap"]["wait_s"]
    overlap = max(0.0, 1 - with_overlap / without) if without > 0 else 0.0
    print(f"hidden by the overlap: {overlap:.0%} of the wait (1 - {with_overlap:.3f} s / {without:.3f} s)")

    bandwidth = run_case(2, 1, "allreduce", ["--sizes-mb", *map(str, args.sizes_mb)])
    print(f"\nMPI_Allreduce, 2 ranks on this machine (shared memory)\n{'MB':>6} {'ms':>8} {'bus GB/s':>9}")
    for mb, seconds in bandwidth.items():
        nbytes = float(mb) * 2 ** 20
        print(f"{float(mb):>6g} {seconds * 1e3:>8.2f} {2 * (2 - 1) / 2 * nbytes / seconds / 1e9:>9.2f}")

    from tinyllm.plan.scaling import data_parallel_step_seconds
    compute, grad_bytes = cases["1 process x 1 thread, batch B (compute alone)"]["step_s"], base["grad_bytes"]
    print(f"\nscaling model: step(N) = {compute:.3f} s compute + (1 - {overlap:.2f}) x 2 (N-1)/N x "
          f"{grad_bytes / 1e6:.0f} MB / bandwidth")
    print(f"{'N machines':>10} " + " ".join(f"{f'{b:g} Gbit/s step s':>18} {'efficiency':>10}"
                                           for b in args.bandwidths_gbit))
    for n in (1, 2, 4, 8, 16, 64):
        cells = []
        for gbit in args.bandwidths_gbit:
            step = data_parallel_step_seconds(compute, grad_bytes, n, gbit * 1e9 / 8, overlap)
            cells.append(f"{step:>18.3f} {compute / step:>10.0%}")
        print(f"{n:>10} " + " ".join(cells))


if __name__ == "__main__":
    main()
