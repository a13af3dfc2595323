"""The decode kernels of the C backend (csrc/decode.c: gemv, attention_decode) against their
NumPy definitions at awkward sizes, in float64, by max|ours - ref| / max|ref|, on every
instruction-set path this CPU has (PATHS: avx512, avx2, portable; each forced by name).
The CUDA twins are tests/test_cuda_decode.py. Skipped when the C library is not built."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.backends import cpu_paths, numpy_kernels as K
from tests.c_helpers import c_kernels_or_skip

C = c_kernels_or_skip()
PATHS = cpu_paths.supported(C.DECODE_PATHS, C.FEATURES)

# float32 rounding (6e-8) grown by dot products of up to a few thousand terms, summed in a
# different order than float64's (vector lanes, then a tree)
TOL = 2e-5


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def rel_err(ours, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("M", list(range(1, 17)))
def test_gemv_equals_numpy_for_every_row_count(M, path):
    rng = np.random.default_rng(M)
    # N: below, at and past the 8-row blocks and a pool chunk (32768 / K rows); K: below a
    # vector, odd, past one vector by one, past four vectors by three and a few
    for N, Kd in ((1, 1), (3, 5), (7, 17), (9, 15), (33, 64), (130, 257), (65, 1000), (300, 129),
                  (11, 283), (3, 33000)):   # K past a pool chunk's 32768 weights: 8 rows a chunk
        x, w = randn(rng, M, Kd), randn(rng, N, Kd)
        err = rel_err(C.gemv(x, w, path), K.gemv(x.astype(np.float64), w.astype(np.float64)))
        assert err <= TOL, f"gemv [{path}] M={M} N={N} K={Kd}: relative error {err:.3g}"


def test_every_path_this_cpu_lacks_falls_back_and_a_bad_name_is_refused():
    """A path is forced by name ($TINYLLM_DECODE_PATH or the argument); one this CPU lacks runs
    as the fastest it has below it, so no setting executes a missing instruction."""
    assert PATHS[-1] == "portable" and C.decode_path() == PATHS[0]
    for name in C.DECODE_PATHS:
        assert C.decode_path(name) in PATHS
    assert cpu_paths.choose("decode", C.DECODE_PATHS, C.lib.CPU_AVX2, "avx512") == "avx2"
    assert cpu_paths.choose("decode", C.DECODE_PATHS, 0, "avx512") == "portable"
    with pytest.raises(ValueError, match="choose one of"):
        C.decode_path("sse9")


def test_matmul_sends_skinny_products_to_gemv_and_others_to_the_gemm():
    rng = np.random.default_rng(0)
    for M in (1, 16, 17, 40):
        x, w = randn(rng, M, 96), randn(rng, 50, 96)
        assert rel_err(C.matmul(x, w, transpose_b=True), x.astype(np.float64) @ w.T) <= TOL


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("hs", [1, 3, 7, 8, 16, 17, 33, 64, 100, 128])
def test_attention_decode_reads_the_cache_in_place(hs, path):
    rng = np.random.default_rng(hs)
    B, nh, Tmax = 2, 3, 300                 # past one 256-key chunk of the online softmax
    k_cache, v_cache = randn(rng, B, nh, Tmax, hs), randn(rng, B, nh, Tmax, hs)
    for Tq, Tk in ((1, 1), (1, 2), (1, 255), (1, 256), (1, 257), (4, 9), (16, 16), (16, 300),
                   (7, 100), (1, 300)):
        q = randn(rng, B, nh, Tq, hs)
        ours = C.attention_decode(q, k_cache, v_cache, Tk, path)
        ref = K.attention_decode(*(a.astype(np.float64) for a in (q, k_cache, v_cache)), Tk)
        err = rel_err(ours, ref)
        assert err <= TOL, f"attention_decode [{path}] hs={hs} Tq={Tq} Tk={Tk}: relative error {err:.3g}"


def test_attention_decode_equals_the_flash_kernel_on_the_prefix():
    rng = np.random.default_rng(1)
    q, k, v = randn(rng, 1, 2, 5, 8), randn(rng, 1, 2, 40, 8), randn(rng, 1, 2, 40, 8)
    want = K.attention_forward(q, k[:, :, :23], v[:, :, :23])[0]
    np.testing.assert_allclose(C.attention_decode(q, k, v, 23), want, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused_before_c():
    q, cache = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 8, 4), np.float32)
    with pytest.raises(ValueError, match="Tq=3 <= Tk=2"):
        C.attention_decode(q, cache, cache, 2)
    with pytest.raises(ValueError, match="Tk=9 <= cache length 8"):
        C.attention_decode(q, cache, cache, 9)
    with pytest.raises(ValueError, match="v_cache"):
        C.attention_decode(q, cache, cache[:, :1].copy(), 4)
    with pytest.raises(ValueError, match="gemv"):
        C.gemv(np.zeros((1, 3), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="float32"):
        C.gemv(np.zeros((1, 3)), np.zeros((4, 3), np.float32))


def test_the_decode_kernels_equal_the_naive_definitions():
    """gemv is matmul_naive(x, w^T); attention_decode is attention_naive on the cache's prefix."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 7)), rng.standard_normal((5, 7))
    want = K.matmul_naive(x, w, transpose_b=True)
    np.testing.assert_allclose(K.gemv(x, w), want, rtol=1e-12, atol=1e-12)
    assert rel_err(C.gemv(x.astype(np.float32), w.astype(np.float32)), want) <= 1e-6
    q, kc, vc = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 9, 4)), rng.standard_normal((1, 2, 9, 4))
    want = K.attention_naive(q, kc[:, :, :6], vc[:, :, :6])[0]
    np.testing.assert_allclose(K.attention_decode(q, kc, vc, 6), want, rtol=1e-12, atol=1e-12)
    f32 = [a.astype(np.float32) for a in (q, kc, vc)]
    assert rel_err(C.attention_decode(*f32, 6), want) <= 1e-5


def test_two_threads_calling_at_once_and_a_forked_child_get_the_same_numbers():
    """The pool (csrc/pool.c) runs one call at a time: a second caller (Python releases the GIL
    in C calls) runs its chunks alone; a forked child starts its own helpers."""
    import concurrent.futures
    import multiprocessing
    rng = np.random.default_rng(7)
    x, w = randn(rng, 3, 300), randn(rng, 2000, 300)            # ~20 pool chunks
    want = C.gemv(x, w)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for got in pool.map(lambda _: C.gemv(x, w), range(64)):
            np.testing.assert_array_equal(got, want)
    if "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(1) as child:
            np.testing.assert_array_equal(child.apply(C.gemv, (x, w)), want)


def test_a_build_without_march_native_runs_every_path(tmp_path):
    """-O2 without -march=native: the AVX-512 and AVX2 code exists only as target-attribute
    functions, the portable path has no vector instructions beyond the baseline; each forced
    path agrees with NumPy (the kernels and the CPU detection are all it needs)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lib = tmp_path / "libtinyllm.so"
    sources = [os.path.join(root, "csrc", f) for f in ("decode.c", "pool.c", "cpu.c", "threads.c")]
    cc = os.environ.get("CC", "cc")
    build = subprocess.run([cc, "-O2", "-std=c11", "-fopenmp", "-fPIC", "-shared", "-o", str(lib),
                            *sources, "-lm"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"{cc} could not build the portable decode kernels: {build.stderr[-300:]}")
    rng = np.random.default_rng(9)
    x, w = randn(rng, 5, 77), randn(rng, 203, 77)
    q, kc = randn(rng, 1, 2, 3, 33), randn(rng, 1, 2, 40, 33)
    np.savez(tmp_path / "in.npz", x=x, w=w, q=q, kc=kc)
    script = ("import sys, numpy as np; from tinyllm.backends import c_kernels as c; "
              "d = np.load(sys.argv[1]); "
              "np.savez(sys.argv[2], **{p + s: f for p in c.DECODE_PATHS for s, f in "
              "(('g', c.gemv(d['x'], d['w'], p)), ('a', c.attention_decode(d['q'], d['kc'], d['kc'], 29, p)))})")
    env = dict(os.environ, TINYLLM_LIB=str(lib),
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, cwd=root)
    assert done.returncode == 0, f"the portable build failed:\n{done.stderr[-2000:]}"
    out = np.load(tmp_path / "out.npz")
    gemv_ref = K.gemv(x.astype(np.float64), w.astype(np.float64))
    attn_ref = K.attention_decode(*(a.astype(np.float64) for a in (q, kc, kc)), 29)
    for p in C.DECODE_PATHS:
        assert rel_err(out[p + "g"], gemv_ref) <= TOL, f"portable build, gemv [{p}]"
        assert rel_err(out[p + "a"], attn_ref) <= TOL, f"portable build, attention_decode [{p}]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="-z nodelete is a GNU/ELF linker flag")
def test_a_process_exits_cleanly_while_worker_threads_spin():
    """OpenMP's threads (OMP_WAIT_POLICY=active) and the decode pool's helpers spin after their
    work; the library is linked -z nodelete (Makefile), so Python unloading it at exit cannot
    pull their code from under them (that was a segfault at exit)."""
    script = ("import numpy as np; from tinyllm.backends import c_kernels as c; "
              "a = np.ones((256, 256), np.float32); c.matmul(a, a); c.gemv(a[:1].copy(), a)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, OMP_WAIT_POLICY="active"))
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-500:]}"
