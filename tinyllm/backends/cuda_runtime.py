"""The CUDA library, opened with cffi: the device, its memory, and errors as exceptions.

`make` builds csrc/cuda/*.cu with nvcc into tinyllm/backends/libtinyllm_cuda.so
(when nvcc is on the PATH) and copies csrc/cuda/tinyllm_cuda.h beside it, the
single source of the cdef, as for the C backend. TINYLLM_CUDA_LIB names another
build: `make cuda-emu` builds the same kernel sources against the CPU emulation
in csrc/cuda/emu/, which is how CI runs the CUDA kernels without a GPU.

Every library function returns a CUDA status; `check` turns a failure into a
CudaError whose message names the call ("cudaMalloc(512.000 MiB): out of
memory (cudaErrorMemoryAllocation)"). Opening the library when it is missing,
or when there is no GPU or driver, raises BackendUnavailable with the reason,
and the CPU backends keep working.
"""
import os

from tinyllm.backends import BackendUnavailable
from tinyllm.backends.checks import open_library
from tinyllm.errors import CudaError  # noqa: F401 (re-exported)

_HERE = os.path.dirname(os.path.abspath(__file__))
LIB_PATH = os.environ.get("TINYLLM_CUDA_LIB") or os.path.join(_HERE, "libtinyllm_cuda.so")
HEADER_PATH = os.path.join(os.path.dirname(LIB_PATH), "tinyllm_cuda.h")


def _open():
    ffi, lib = open_library(LIB_PATH, HEADER_PATH, "the CUDA library",
                            "install the CUDA toolkit (nvcc) and run `make`")
    count = ffi.new("int *")
    if lib.device_count(count) != 0 or count[0] == 0:
        reason = ffi.string(lib.last_error()).decode() or "no device found"
        raise BackendUnavailable(f"no usable CUDA GPU or driver ({reason}); the CPU backends "
                                 f"still work: use --backend c (or numpy)")
    if lib.device_init(0) != 0:
        raise BackendUnavailable(f"cannot use GPU 0: {ffi.string(lib.last_error()).decode()}")
    return ffi, lib


ffi, lib = _open()


def check(status):
    """Raise CudaError with the library's message unless status is 0."""
    if status != 0:
        raise CudaError(ffi.string(lib.last_error()).decode())


def device_name():
    return ffi.string(lib.device_name()).decode()


def is_emulated():
    """True when the library runs the kernels on the CPU emulation (csrc/cuda/emu)."""
    return bool(lib.is_emulated())


def synchronize():
    """Wait for every queued kernel; a kernel's fault is raised here."""
    check(lib.synchronize())


def memory_stats():
    """The caching allocator's counters: cudaMalloc calls, bytes in use, held, peak in use."""
    stats = ffi.new("int64_t[4]")
    lib.allocator_stats(stats)
    return {"cuda_malloc_calls": stats[0], "bytes_in_use": stats[1],
            "bytes_held": stats[2], "peak_bytes_in_use": stats[3]}


def empty_cache():
    """Give every cached (free) block back to the driver."""
    check(lib.device_empty_cache())
