"""The data-parallel scaling model: step time on N machines from one machine's measurements.

    step = data_parallel_step_seconds(compute_s=1.2, grad_bytes=4 * n_params, ranks=8,
                                      bytes_per_second=100e9 / 8, overlap=0.76)
    communication(grad_bytes=2e9, hardware=parse_hardware("8xH100"), zero=1)["exposed_seconds"]

A ring allreduce sends and receives 2 (N-1)/N of the gradient buffer on every
link; the backward hides the `overlap` share of it (tinyllm/distributed.py
starts each bucket while the backward runs; examples/bench_distributed.py
measures the share). With gradient accumulation only the last micro-step
communicates: once per optimizer step. The links are the hardware table's
(hardware.py). Not the planner's FLOP or memory budget: that is budget.py.
"""

# the share of the allreduce wait the backward hid in BENCHMARKS.md's "Data parallel over MPI"
# (2 ranks, bench preset: 1 - 0.112 s / 0.202 s in its table's run; an earlier run hid 0.76):
# the lower of the two, so plans err on the slow side
OVERLAP = 0.44
# bytes moved per step in units of one allreduce of the gradients: ZeRO-1 and 2 reduce-scatter the
# gradients and all-gather the parameters (the same 2 (N-1)/N), ZeRO-3 gathers the parameters once
# more in the backward (Rajbhandari et al. 2020, section 7: 2 x vs 3 x the model size)
TRAFFIC = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.5}


def ring_allreduce_seconds(nbytes, ranks, bytes_per_second):
    """A ring allreduce sends and receives 2 (N-1)/N of the buffer on every link."""
    return 2 * (ranks - 1) / ranks * nbytes / bytes_per_second


def data_parallel_step_seconds(compute_s, grad_bytes, ranks, bytes_per_second, overlap):
    """One rank's compute, plus the part of the allreduce the backward did not hide
    (overlap: the hidden fraction, measured by examples/bench_distributed.py)."""
    return compute_s + (1 - overlap) * ring_allreduce_seconds(grad_bytes, ranks, bytes_per_second)


def ring_bandwidth(hardware):
    """The slowest link of the ring: within one node the devices' link, across nodes the network."""
    if hardware.count <= hardware.node:
        return hardware.link
    return min(hardware.link, hardware.network) if hardware.node > 1 else hardware.network


def communication(grad_bytes, hardware, zero, overlap=OVERLAP):
    """One optimizer step's gradient traffic on hardware.count ranks, and the part the backward
    does not hide (nothing on one device)."""
    ranks, bandwidth = hardware.count, ring_bandwidth(hardware)
    seconds = ring_allreduce_seconds(TRAFFIC[zero] * grad_bytes, ranks, bandwidth) if ranks > 1 else 0.0
    return {"grad_bytes": grad_bytes, "ranks": ranks, "traffic": TRAFFIC[zero],
            "bytes_per_second": bandwidth, "across_nodes": ranks > hardware.node,
            "source": hardware.fabric, "allreduce_seconds": seconds, "overlap": overlap,
            "exposed_seconds": (1 - overlap) * seconds}
