"""The CUDA emulator (csrc/cuda/emu) by its self-test, tests/emu_selftest.cu.

The self-test is compiled by g++ as C++ together with csrc/cuda/emu/*.cpp, with the flags
the Makefile uses for the emulated CUDA library, and run: it checks every emulated feature
against plain host loops, and that misuse is reported (a __syncthreads that some threads skip,
warp divergence, bad launch configurations, bad copies). A second build under AddressSanitizer
checks that the emulator's stack switching is annotated well enough for ASan to run emulated
kernels without false reports, and that ASan stops a kernel that writes out of bounds (what
`make sanitize` relies on). Both builds run side by side; compiling is most of the time.
The self-test runs in both scheduling orders (TINYLLM_EMU_ORDER=forward and reverse), and
must pass in both; its `race` mode shows that the two orders tell racy kernels apart.
Skipped when g++ is missing; the ASan tests also when g++ cannot link -fsanitize=address.
"""
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELFTEST = os.path.join(ROOT, "tests", "emu_selftest.cu")
EMU_CPP = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "emu", "*.cpp")))
# as in the Makefile's emulated build (csrc/cuda/*.cu are C++ to g++)
FLAGS = ["-std=c++17", "-DTINYLLM_CUDA_EMU", "-I", os.path.join(ROOT, "csrc", "cuda"),
         "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unknown-pragmas"]
# -O0: the quicker build, and every local stays in memory where ASan watches it
ASAN_FLAGS = ["-O0", "-fsanitize=address"]
# LeakSanitizer is not what is tested, and fails under ptrace (some CI sandboxes)
ASAN_ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
ORDERS = ["forward", "reverse"]


def order_env(order, base=os.environ):
    """`base` with TINYLLM_EMU_ORDER set to `order`, or unset when `order` is None."""
    env = {k: v for k, v in base.items() if k != "TINYLLM_EMU_ORDER"}
    if order is not None:
        env["TINYLLM_EMU_ORDER"] = order
    return env


def start_build(exe, flags):
    cmd = ["g++", *FLAGS, *flags, "-x", "c++", SELFTEST, "-x", "none", *EMU_CPP,
           "-o", str(exe), "-lpthread"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def asan_links(tmp):
    probe = subprocess.run(["g++", "-fsanitize=address", "-x", "c++", "-", "-o",
                            str(tmp / "asan_probe")], input="int main() { return 0; }\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{"plain": (exe, compiler output), "asan": (exe or None, compiler output)}"""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA emulator's self-test is C++17 built with g++")
    tmp = tmp_path_factory.mktemp("cuda_emu")
    plain_exe, asan_exe = tmp / "emu_selftest", tmp / "emu_selftest_asan"
    plain, asan = start_build(plain_exe, ["-O2"]), start_build(asan_exe, ASAN_FLAGS)
    plain_log, _ = plain.communicate(timeout=300)
    asan_log, _ = asan.communicate(timeout=300)
    assert plain.returncode == 0, f"the self-test does not compile:\n{plain_log}"
    if asan.returncode != 0:
        assert not asan_links(tmp), f"the self-test does not compile with ASan:\n{asan_log}"
        asan_exe = None
    return {"plain": (plain_exe, plain_log), "asan": (asan_exe, asan_log)}


def run(exe, *args, env=None):
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_emulator_compiles_without_warnings(builds):
    _, log = builds["plain"]
    warnings = [line for line in log.splitlines() if "warning:" in line]
    assert not warnings, "\n".join(warnings)


@pytest.mark.parametrize("order", ORDERS)
def test_selftest(builds, order):
    exe, _ = builds["plain"]
    result = run(exe, env=order_env(order))
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert ", 0 failed" in result.stdout, report
    assert f"order: {order}" in result.stdout, report


def race_results(exe, order):
    """{kernel: the values it computed} from `emu_selftest race` in `order` (None: unset)."""
    result = run(exe, "race", env=order_env(order))
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split(":", 1) for line in result.stdout.splitlines())


def test_reverse_order_exposes_races(builds):
    """A missing __syncthreads between threads (racy shift) or warps (racy warps: a __syncwarp
    instead) and a dependency between blocks (racy chain) give different results in the two
    orders; the same kernel with its barrier (synced shift) does not. The default order is
    forward."""
    exe, _ = builds["plain"]
    default, forward, reverse = (race_results(exe, order) for order in (None, *ORDERS))
    racy = ["racy shift", "racy warps", "racy chain"]
    assert set(forward) == {"synced shift", *racy}, forward
    assert default == forward
    for kernel in racy:
        assert forward[kernel] != reverse[kernel], (kernel, forward[kernel])
    assert forward["synced shift"] == reverse["synced shift"]
    assert forward["synced shift"].split() == [str((t + 1) % 16) for t in range(16)]


def test_unknown_order_fails_every_launch(builds):
    exe, _ = builds["plain"]
    result = run(exe, "race", env=order_env("backwards"))
    report = result.stdout + result.stderr
    message = 'TINYLLM_EMU_ORDER="backwards" is not an order'
    assert result.returncode == 1, report
    assert result.stderr.count(message) == 1, report  # said once on stderr
    # and in the error of each of the four launches
    assert result.stdout.count("launch failed: initialization error (emulator: " + message) == 4, \
        report


def asan_build(builds):
    exe, _ = builds["asan"]
    if exe is None:
        pytest.skip("g++ cannot link -fsanitize=address (is libasan installed?)")
    return exe


@pytest.mark.parametrize("order", ORDERS)
def test_selftest_under_asan(builds, order):
    result = run(asan_build(builds), env=order_env(order, ASAN_ENV))
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert ", 0 failed" in result.stdout, report
    assert "ERROR: AddressSanitizer" not in result.stderr, report


@pytest.mark.parametrize("mode, error, kernel", [
    ("oob-device", "heap-buffer-overflow", "oob_device_kernel"),    # past a cudaMalloc buffer
    ("oob-shared", "global-buffer-overflow", "oob_shared_kernel"),  # past a __shared__ array
])
def test_asan_stops_out_of_bounds_kernels(builds, mode, error, kernel):
    result = run(asan_build(builds), mode, env=ASAN_ENV)
    report = result.stdout + result.stderr
    assert result.returncode != 0 and "not stopped" not in result.stdout, report
    assert f"AddressSanitizer: {error}" in result.stderr and kernel in result.stderr, report
