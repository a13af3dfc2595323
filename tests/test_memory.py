"""tinyllm.memory: a child's peak is its own, not its parent's; reset_peak() restarts the peak."""
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.memory import peak_resident_bytes, reset_peak, resident_bytes

MIB = 2 ** 20


def test_a_child_of_a_big_parent_reports_its_own_peak():
    big = np.ones(400 * MIB // 8)          # 400 MiB, touched: this process is now big
    assert resident_bytes() > 400 * MIB
    code = "from tinyllm.memory import peak_resident_bytes as p; print(p())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)
    # a fresh interpreter with NumPy holds tens of MiB; ru_maxrss would say >= 400 here
    assert 5 * MIB < child < 200 * MIB
    del big


def test_reset_peak_forgets_a_freed_peak():
    if not reset_peak():
        pytest.skip("this kernel cannot reset the peak (/proc/self/clear_refs)")
    big = np.ones(300 * MIB // 8)
    assert peak_resident_bytes() >= resident_bytes() > 300 * MIB
    del big                                # numpy's large blocks go back to the kernel on free
    reset_peak()
    assert peak_resident_bytes() < resident_bytes() + 50 * MIB
    assert peak_resident_bytes() >= resident_bytes()
