"""The accelerators the planner knows, and `--hardware this`: this machine, measured by tinyllm itself.

    parse_hardware("8xH100")  -> Hardware(name="H100-SXM", count=8, bf16=989e12, fp32=67e12, memory=80e9, ...)
    parse_hardware("this")    -> the active backend's measured matmul rate and this machine's memory

Peaks are dense (no 2:4 sparsity), per device, from the vendors' datasheets
named beside each row; bf16 is the tensor-core rate with fp32 accumulation,
fp32 the plain (non-tensor-core) rate. Memory is in decimal GB as the
datasheets give it (80 GB = 80e9 bytes; slightly less than a GPU reports,
so plans err on the safe side). Each row also gives the links a gradient
allreduce runs over (the scaling model, scaling.py): within a node of `node`
devices the per-device link, one way; between nodes the node's network,
all its adapters together (NCCL's "bus bandwidth" reaches about these).

Not here: what the numbers are used for (budget.py). Read shapes.py next.
"""
import dataclasses
import os
import re
import time

import numpy as np

from tinyllm.errors import PlanError
from tinyllm.memory import resident_bytes

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Hardware:
    name: str        # the table's name, or "this machine (...)"
    count: int       # devices
    bf16: float      # peak dense FLOP/s per device with bf16 inputs (None: no bf16 units)
    fp32: float      # peak FLOP/s per device in fp32
    memory: float    # bytes per device
    source: str      # where the numbers come from
    backend: str     # the tinyllm backend its commands use
    mfu: float = 0.4       # the default utilisation assumed (a well-tuned GPU trainer: 40-55%)
    runtime: float = 0.0   # bytes the process needs besides the run (`this`: what it uses now)
    node: int = 1          # devices per node: up to this many, the allreduce runs over `link`
    link: float = 0.0      # bytes/s one way per device within a node
    network: float = 1.25e9   # bytes/s one way per node between nodes (`this`: an assumed 10 Gbit/s)
    fabric: str = "between machines an assumed 10 Gbit/s Ethernet"   # where link and network come from

    def peak(self, dtype):
        return self.bf16 if dtype == "bf16" else self.fp32


def _gpu(name, bf16_tflops, fp32_tflops, memory_gb, source, fabric):
    link_gb, network_gb, where = fabric
    return Hardware(name, 1, bf16_tflops * 1e12, fp32_tflops * 1e12, memory_gb * GB, source, "cuda",
                    node=8, link=link_gb * GB, network=network_gb * GB, fabric=where)


# (GB/s one way per device in a node of 8, GB/s one way per node between nodes, sources); the
# datasheets give NVLink and PCIe both ways added, so one way is half
_ETHERNET = "between nodes an assumed 100 Gbit/s Ethernet per node"
NVLINK4 = (450, 400, "NVLink 4, 900 GB/s both ways (H100 datasheet); between nodes 8 x 400 Gbit/s "
                     "ConnectX-7 InfiniBand per node (DGX H100 datasheet)")
NVLINK3 = (300, 200, "NVLink 3, 600 GB/s both ways (A100 datasheet); between nodes 8 x 200 Gbit/s "
                     "ConnectX-6 HDR InfiniBand per node (DGX A100 datasheet)")
PCIE5 = (64, 12.5, f"PCIe Gen5 x16, 128 GB/s both ways (H100 datasheet, PCIe column); {_ETHERNET}")
PCIE4 = (32, 12.5, f"PCIe Gen4 x16, 64 GB/s both ways (the datasheet); {_ETHERNET}")


KNOWN = {h.name: h for h in [
    # NVIDIA H100 Tensor Core GPU datasheet (2023): SXM BF16 1,979 TFLOPS with sparsity, FP32 67
    _gpu("H100-SXM", 989.5, 67.0, 80, "NVIDIA H100 datasheet, SXM column", NVLINK4),
    # same datasheet, PCIe column: BF16 1,513 with sparsity, FP32 51
    _gpu("H100-PCIe", 756.5, 51.0, 80, "NVIDIA H100 datasheet, PCIe column", PCIE5),
    # NVIDIA H200 Tensor Core GPU datasheet (2024): SXM BF16 1,979 with sparsity, FP32 67, 141 GB HBM3e
    # its NVLink and network are the H100's (H200 datasheet: NVLink 900 GB/s; DGX H200: 8 x ConnectX-7)
    _gpu("H200", 989.5, 67.0, 141, "NVIDIA H200 datasheet, SXM column", NVLINK4),
    # NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 (624 with sparsity), FP32 19.5
    _gpu("A100-80GB", 312.0, 19.5, 80, "NVIDIA A100 datasheet, 80GB SXM column", NVLINK3),
    _gpu("A100-40GB", 312.0, 19.5, 40, "NVIDIA A100 datasheet, 40GB column", NVLINK3),
    # NVIDIA A10 datasheet (2021): BF16 125 (250 with sparsity), FP32 31.2, 24 GB
    _gpu("A10", 125.0, 31.2, 24, "NVIDIA A10 datasheet", PCIE4),
    # NVIDIA L4 datasheet (2023): BF16 242 with sparsity, FP32 30.3, 24 GB
    _gpu("L4", 121.0, 30.3, 24, "NVIDIA L4 datasheet", PCIE4),
    # NVIDIA Ada GPU architecture whitepaper v2.1, appendix table 2, GeForce RTX 4090:
    # BF16 tensor with FP32 accumulate 165.2 dense, FP32 82.6, 24 GB GDDR6X
    # no NVLink: PCIe 4.0 x16, 16 GT/s x 16 lanes = 31.5 GB/s one way (PCI-SIG PCIe 4.0 specification)
    _gpu("RTX-4090", 165.2, 82.6, 24, "NVIDIA Ada architecture whitepaper, RTX 4090",
         (31.5, 12.5, f"PCIe 4.0 x16, no NVLink (PCI-SIG PCIe 4.0 specification); {_ETHERNET}")),
]}
# what people type -> the table's name; spelling is compared without case, spaces or punctuation
ALIASES = {"h100": "H100-SXM", "h100sxm": "H100-SXM", "h100pcie": "H100-PCIe", "h200": "H200",
           "h200sxm": "H200", "a100": "A100-80GB", "a10080gb": "A100-80GB", "a10080": "A100-80GB",
           "a10040gb": "A100-40GB", "a10040": "A100-40GB",
           "a100sxm440gb": "A100-40GB", "a100pcie40gb": "A100-40GB", "a10": "A10", "l4": "L4",
           "rtx4090": "RTX-4090", "4090": "RTX-4090", "geforcertx4090": "RTX-4090"}


def _key(text):
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("nvidia", ""))


def known_names():
    return ", ".join(KNOWN)


def parse_hardware(spec, measure=None):
    """`8xH100`, `H100` (one), `64 x a100-40gb`, or `this` (measured by `measure`, default measure_this)."""
    m = re.fullmatch(r"\s*(?:(\d+)\s*[x×*]\s*)?(.+?)\s*", str(spec), flags=re.IGNORECASE)
    count, name = (int(m.group(1)) if m.group(1) else 1), m.group(2)
    if count < 1:
        raise PlanError(f"--hardware {spec!r}: the device count must be at least 1, e.g. 8x{name}")
    if _key(name) == "this":
        return dataclasses.replace((measure or measure_this)(), count=count)
    table_name = ALIASES.get(_key(name)) or next((n for n in KNOWN if _key(n) == _key(name)), None)
    if table_name is None:
        raise PlanError(f"unknown hardware {name!r} in --hardware {spec!r}; known: {known_names()}, "
                        f"or `this` (this machine, measured); write e.g. --hardware 8xH100")
    return dataclasses.replace(KNOWN[table_name], count=count)


def matmul_flops(backend, n, min_seconds=0.3):
    """The backend's float32 matmul rate in FLOP/s on (n, n) @ (n, n): the best of repeated timings."""
    rng = np.random.default_rng(0)
    put = getattr(backend, "to_device", lambda a: a)
    sync = getattr(backend, "synchronize", lambda: None)
    a, b = (put(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))   # (n, n)
    backend.matmul(a, b)   # warm up: thread pools, packing buffers, the GPU's clocks
    sync()
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        backend.matmul(a, b)
        sync()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n ** 3 / best


def measure_this():
    """This machine as one device: the active backend's matmul rate as the peak, and its memory."""
    from tinyllm.backends import get_backend
    backend = get_backend()
    if backend.NAME == "cuda":
        name = backend.device_name()
        # the longest alias inside the device's name: "NVIDIA A100-SXM4-40GB" -> a100sxm440gb -> A100-40GB
        match = next((ALIASES[k] for k in sorted(ALIASES, key=len, reverse=True) if k in _key(name)), None)
        if match is None:
            raise PlanError(f"this GPU ({name}) is not in the planner's table, so its memory is "
                            f"unknown; pass the nearest known one instead: {known_names()}")
        memory, where = KNOWN[match].memory, f"{name}; memory from the {match} datasheet"
        # the step's share of the GPU matmul rate is not measured yet (no GPU so far): a guess
        rate, mfu, runtime = matmul_flops(backend, 4096), 0.5, 0.0
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        where = f"{os.cpu_count()} CPUs; memory from the operating system"
        # a tinyllm training step runs at 0.73-0.82 of the C matmul's rate on the bench preset
        # (BENCHMARKS.md: 139.7 GFLOP/s per step against a measured 170-190 GFLOP/s matmul)
        rate, mfu, runtime = matmul_flops(backend, 1024), 0.75, resident_bytes()
    return Hardware(f"this machine ({backend.NAME} backend)", 1, None, rate, memory,
                    f"measured: float32 matmul on the {backend.NAME} backend, {where}", backend.NAME,
                    mfu=mfu, runtime=runtime)

