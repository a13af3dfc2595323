"""The data-parallel scaling model: step time on N machines from one machine's measurements.

    step = data_parallel_step_seconds(compute_s=1.2, grad_bytes=4 * n_params, ranks=8,
                                      bytes_per_second=100e9 / 8, overlap=0.76)

A ring allreduce sends and receives 2 (N-1)/N of the gradient buffer on every
link; the backward hides the `overlap` share of it (tinyllm/distributed.py
starts each bucket while the backward runs; examples/bench_distributed.py
measures the share). Not the planner's FLOP or memory budget: that is budget.py.
"""


def ring_allreduce_seconds(nbytes, ranks, bytes_per_second):
    """A ring allreduce sends and receives 2 (N-1)/N of the buffer on every link."""
    return 2 * (ranks - 1) / ranks * nbytes / bytes_per_second


def data_parallel_step_seconds(compute_s, grad_bytes, ranks, bytes_per_second, overlap):
    """One rank's compute, plus the part of the allreduce the backward did not hide
    (overlap: the hidden fraction, measured by examples/bench_distributed.py)."""
    return compute_s + (1 - overlap) * ring_allreduce_seconds(grad_bytes, ranks, bytes_per_second)
