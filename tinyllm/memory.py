"""This process's memory as the kernel counts it: resident now, and the peak since start (or a reset).

Why not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a
child started by a big parent (pytest with torch imported, a benchmark driver)
reports the parent's size as its own peak. VmRSS and VmHWM in /proc/self/status
belong to this process's own address space, which exec replaces.

Not a profiler: it reads two numbers. Where /proc is missing (macOS), it falls
back to ru_maxrss for both. Read next: malloc.py, which keeps freed memory in
the process (so the peak is what a run really holds).
"""
import resource


def _status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024          # "VmHWM:   1234 kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def resident_bytes():
    """Resident memory now."""
    return _status_bytes("VmRSS")


def peak_resident_bytes():
    """The most resident memory this process has held (since start, or since reset_peak())."""
    return _status_bytes("VmHWM")


def reset_peak():
    """Make the peak "now" (Linux >= 4.0); False where the kernel can't, and the peak stays."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
