"""The bfloat16 matmul (csrc/matmul_bf16.c) against its NumPy definition, on every path.

What it checks:
  - the float32 -> bfloat16 rounding: NumPy's definition (numpy_kernels.bf16_bits) on worked
    examples, and the C rounding bit for bit against it on special values and random bits;
  - matmul_bf16 on each path of c_kernels.BF16_PATHS, forced (a path this CPU lacks falls back,
    which the test also checks gives the same numbers), at awkward sizes, all four transpose
    cases and batches, against a float64 product of the bf16-rounded operands;
  - that the instructions are chosen at run time: a path bit the CPU lacks (AMX here, perhaps)
    passed straight to C runs, not an illegal instruction, and a library built without
    -march=native and without OpenMP gives the same numbers.

Tolerances. Against the float64 product of the *rounded* operands, only the float32 sums
differ: max|ours - ref| / max|ref| < 1e-5, the float32 matmul's bound (tests/test_c_matmul.py:
about sqrt(K) * 6e-8 on random data). Against the float32 operands unrounded, each operand is
off by at most 2^-8 of itself (bf16's unit roundoff: 8 significant bits), a product by at most
2^-7 + 2^-16, so elementwise |ours - a @ b| <= (2^-7 + 2^-15) * (|a| @ |b|) + the float32 sums'
share: the bound is rigorous, not statistical, and holds on every path.

Read csrc/matmul_bf16.c for the kernel, examples/bench_matmul.py for its speed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.matmul_cases import TRANSPOSES, operands, reference
from tinyllm.backends import numpy_kernels as ref_kernels
from tests.c_helpers import c_kernels_or_skip

c_kernels = c_kernels_or_skip()

RTOL = 1e-5                     # float32 sums of exact products; see the module docstring
ROUNDING = 2.0**-7 + 2.0**-15   # one product of two rounded operands, relative
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = list(c_kernels.BF16_PATHS)
# single rows and columns, odd K (a zero partner in the last pair), primes around the 12 x 32
# tile, (1600, 530, 1100), which crosses the row (1536), column (512) and K (512) blocks, and
# (70, 1100, 1300), which crosses the AMX kernel's 1024-column block and three of its K slices
SHAPES = [(1, 1, 1), (7, 13, 5), (63, 65, 257), (257, 129, 67), (1, 511, 3), (300, 1, 200),
          (1600, 530, 1100), (70, 1100, 1300)]


def bits(values):
    return np.array(values, np.uint32).view(np.float32)


def test_rounding_worked_examples():
    x = bits([0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF,   # ties to even; above half: up
              0x00000001, 0x807FFFFF, 0x00800000,               # subnormals -> signed zero
              0x7F7FFFFF, 0xFF800000, 0x7F800001, 0xFFC00000])  # overflow, -inf, NaNs quiet
    expected = [0x3F80, 0x3F82, 0x3F81, 0x3F81, 0x0000, 0x8000, 0x0080, 0x7F80, 0xFF80, 0x7FC0,
                0xFFC0]
    assert [hex(v) for v in ref_kernels.bf16_bits(x)] == [hex(v) for v in expected]


def test_c_rounding_is_bit_identical():
    rng = np.random.default_rng(0)
    special = [0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000,
               0xFF800000, 0x7F800001, 0x7FBFFFFF, 0xFFFFFFFF, 0x3F808000, 0x3F818000]
    # random bit patterns (every exponent, NaNs included) and values just around ties
    ties = (rng.integers(0, 1 << 16, 4096, dtype=np.uint32) << 16) | 0x8000
    u = np.concatenate([special, rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32),
                        ties, ties - 1, ties + 1]).astype(np.uint32)
    ours, theirs = c_kernels.bf16_bits(u.view(np.float32)), ref_kernels.bf16_bits(u.view(np.float32))
    wrong = np.flatnonzero(ours != theirs)
    assert wrong.size == 0, (f"{wrong.size} roundings differ; first: {u[wrong[0]]:#010x} -> C "
                             f"{ours[wrong[0]]:#06x}, NumPy {theirs[wrong[0]]:#06x}")


def rounded_reference(a, b, transpose_a, transpose_b):
    return reference(ref_kernels.bf16_round(a), ref_kernels.bf16_round(b), transpose_a, transpose_b)


def assert_bf16_close(ours, a, b, transpose_a, transpose_b, what):
    ref = rounded_reference(a, b, transpose_a, transpose_b)
    assert ours.shape == ref.shape and ours.dtype == np.float32, f"{what}: {ours.shape} {ours.dtype}"
    err = np.abs(ours - ref).max() / max(np.abs(ref).max(), np.finfo(np.float32).tiny)
    assert err < RTOL, f"{what}: max|ours - ref| / max|ref| = {err:.3g} >= {RTOL:g}"
    exact = reference(a, b, transpose_a, transpose_b)          # the unrounded operands
    bound = ROUNDING * reference(np.abs(a), np.abs(b), transpose_a, transpose_b) \
        + RTOL * np.abs(ref).max()
    over = np.abs(ours - exact) > bound
    assert not over.any(), f"{what}: {over.sum()} outputs beyond the bf16 rounding bound"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("M, N, K", SHAPES)
def test_matmul_bf16_matches_definition(M, N, K, transpose_a, transpose_b, path):
    a, b = operands(np.random.default_rng([M, N, K]), None, M, N, K, transpose_a, transpose_b)
    ours = c_kernels.matmul_bf16(a, b, transpose_a, transpose_b, path=path)
    assert_bf16_close(ours, a, b, transpose_a, transpose_b, f"{path} ({M}, {N}, {K})")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
@pytest.mark.parametrize("batch, M, N, K", [(5, 17, 33, 9), (48, 128, 64, 128), (3, 1, 1, 700)])
def test_batched_matmul_bf16(batch, M, N, K, transpose_a, transpose_b, path):
    a, b = operands(np.random.default_rng([batch, M, N, K]), batch, M, N, K, transpose_a, transpose_b)
    ours = c_kernels.matmul_bf16(a, b, transpose_a, transpose_b, path=path)
    assert_bf16_close(ours, a, b, transpose_a, transpose_b, f"{path} batch {batch}")


def test_numpy_definition_within_rounding_bound():
    a, b = operands(np.random.default_rng(3), None, 37, 41, 300, False, True)
    assert_bf16_close(ref_kernels.matmul_bf16(a, b, False, True), a, b, False, True, "numpy")


@pytest.mark.parametrize("bit", [0, 1, 2, 4, 7, 1 << 20])
def test_any_path_bit_runs_without_crashing(bit):
    """Every path value reaches C as it is: the features this CPU lacks (AMX on most, everything
    on some) must fall back to one it has, never execute an instruction it does not know."""
    a, b = operands(np.random.default_rng(bit), 2, 29, 70, 13, False, False)
    out = np.empty((2, 29, 70), np.float32)
    p = lambda x: c_kernels.ffi.cast("float *", x.ctypes.data)   # noqa: E731
    c_kernels.lib.matmul_bf16(p(a), p(b), p(out), 2, 29, 70, 13, 0, 0, bit)
    assert_bf16_close(out, a, b, False, False, f"path bit {bit}")


def test_peak_loops_run_on_what_the_cpu_has():
    """csrc/cpu.c's multiply-add loops (bench_matmul's "% of peak"): the fp32 one runs on any CPU
    with AVX2 or AVX-512 and gives a positive rate; a kind the CPU lacks gives 0, not a crash.
    No time is asserted: the figure only has to exist and be finite."""
    lib, features = c_kernels.lib, c_kernels.lib.cpu_features()
    fp32 = lib.peak_flops(lib.PEAK_FP32, 10_000)
    assert (fp32 > 0) == bool(features & (lib.CPU_AVX2 | lib.CPU_AVX512)) and np.isfinite(fp32)
    assert (lib.peak_flops(lib.PEAK_BF16, 10_000) > 0) == bool(features & lib.CPU_AVX512_BF16)
    assert (lib.peak_flops(lib.PEAK_AMX_BF16, 10_000) > 0) == bool(features & lib.CPU_AMX_BF16)


def test_empty_and_bad_arguments():
    zeros = c_kernels.matmul_bf16(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32))
    np.testing.assert_array_equal(zeros, np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        c_kernels.matmul_bf16(np.ones((2, 2)), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="choose one of"):
        c_kernels.bf16_path("tiles")


def _run(script, env, *args):
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=path, **env))
    assert done.returncode == 0, f"the subprocess failed:\n{done.stderr}"
    return done.stdout.strip()


@pytest.mark.parametrize("path", PATHS)
def test_path_forced_by_environment(path):
    chosen = _run("from tinyllm.backends import c_kernels; print(c_kernels.BF16_PATH)",
                  {"TINYLLM_BF16_PATH": path})
    assert chosen == c_kernels.bf16_path(path)   # the wanted one, or the fallback it gets here


def test_portable_single_threaded_build_agrees(tmp_path):
    """A build without -march=native and without OpenMP (the AVX-512 code then exists only as
    target-attribute functions, chosen by cpu_features()) gives the same numbers."""
    lib = tmp_path / "libtinyllm.so"
    sources = sorted(os.path.join(ROOT, "csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc"))
                     if f.endswith(".c"))
    cc = os.environ.get("CC", "cc")
    build = subprocess.run([cc, "-O2", "-std=c11", "-fopenmp-simd", "-fPIC", "-shared", "-o",
                            str(lib), *sources, "-lm"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"{cc} could not build the portable library: {build.stderr[-300:]}")
    a, b = operands(np.random.default_rng(5), None, 101, 77, 301, True, False)
    qkv = np.random.default_rng(6).standard_normal((3, 1, 2, 70, 16), dtype=np.float32)
    np.savez(tmp_path / "ab.npz", a=a, b=b, qkv=qkv)
    script = ("import sys, numpy as np; from tinyllm.backends import c_kernels as c; "
              "d = np.load(sys.argv[1]); print(c.BF16_PATH); "
              "np.save(sys.argv[2], c.matmul_bf16(d['a'], d['b'], True, False)); "
              "np.save(sys.argv[3], c.attention_forward_bf16(*d['qkv'])[0])")
    chosen = _run(script, {"TINYLLM_LIB": str(lib)}, str(tmp_path / "ab.npz"),
                  str(tmp_path / "out.npy"), str(tmp_path / "attention.npy"))
    assert chosen == c_kernels.BF16_PATH
    assert_bf16_close(np.load(tmp_path / "out.npy"), a, b, True, False, "portable build")
    # attention's tiles: the same kernels and roundings (tests/test_c_attention_bf16.py's bounds)
    want = c_kernels.attention_forward_bf16(*qkv)[0]
    np.testing.assert_allclose(np.load(tmp_path / "attention.npy"), want, rtol=0,
                               atol=2.0**-7 * np.abs(want).max())
