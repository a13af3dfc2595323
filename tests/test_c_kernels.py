"""The C kernels (csrc/*.c) against the NumPy reference kernels, one kernel at a time.

Each test feeds a C kernel float32 inputs of awkward sizes (1, 7, 63, 65, 130,
257: not multiples of the attention tile or of a vector width) and compares
with numpy_kernels run on the same values in float64, by the relative error
max|ours - ref| / max|ref|. Every tolerance says why it is what it is. The
wrapper checks in c_kernels.py (dtype, contiguity, shapes, id ranges) are
tested at the bottom. Not here: the whole model on the C backend
(tests/test_c_model.py) and the NumPy kernels against textbook formulas
(tests/test_kernels.py). The module is skipped when the library is not built.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.c_helpers import c_kernels_or_skip
from tinyllm.backends import numpy_kernels as K

C = c_kernels_or_skip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# float32 rounding (6e-8) grown by reductions over a few hundred terms
REDUCTION_TOL = 1e-5
# elementwise kernels: a few float32 roundings, each <= 6e-8 relative
ELEMENTWISE_TOL = 1e-6


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def assert_close(name, ours, ref, tol):
    """max|ours - ref| / max|ref| <= tol, with a readable report when not."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, reference {ref.shape}"
    assert np.all(np.isfinite(ours)), f"{name}: {np.sum(~np.isfinite(ours))} non-finite values"
    if ref.size == 0:
        return
    diff = np.abs(ours.astype(np.float64) - ref)
    err = diff.max() / max(np.abs(ref).max(), 1e-30)
    worst = np.unravel_index(diff.argmax(), diff.shape)
    assert err <= tol, (f"{name}: relative error {err:.3g} > {tol:g}; worst at {worst}: "
                        f"ours {ours[worst]!r}, reference {ref[worst]!r}")


# ----------------------------------------------------------------------------
# attention

ATTENTION_SHAPES = [   # (B, nh, Tq, Tk, hs): tile edges (64) and Tq < Tk (KV-cache decoding)
    (1, 1, 1, 1, 1), (1, 2, 7, 7, 8), (2, 1, 63, 63, 64), (1, 1, 65, 65, 64), (2, 3, 130, 130, 8),
    (1, 1, 130, 130, 64), (3, 1, 1, 130, 64), (1, 2, 7, 65, 1), (1, 1, 65, 130, 64),
    (2, 1, 63, 130, 8), (1, 2, 65, 65, 100),                    # hs = 100: two hs chunks, ragged
    (1, 2, 70, 70, 24)]                                         # hs = 24: 16 + 8 columns
# the backward's dS = P * (dP - D) subtracts two float32 sums (of hs and of up to T
# terms) that nearly cancel, and dq, dk then sum T such differences: its error is
# ~10x the forward's, measured against the largest gradient
ATTENTION_BACKWARD_TOL = 1e-4


@pytest.mark.parametrize("B, nh, Tq, Tk, hs", ATTENTION_SHAPES)
def test_attention_matches_numpy(B, nh, Tq, Tk, hs):
    rng = np.random.default_rng(Tq * 1000 + Tk + hs)
    q, dout = randn(rng, B, nh, Tq, hs), randn(rng, B, nh, Tq, hs)
    k, v = randn(rng, B, nh, Tk, hs), randn(rng, B, nh, Tk, hs)
    out, lse = C.attention_forward(q, k, v)                        # (B, nh, Tq, hs), (B, nh, Tq)
    ref_out, ref_lse = K.attention_forward(*f64(q, k, v))
    assert_close("attention out", out, ref_out, REDUCTION_TOL)    # sums of up to 130 terms
    assert_close("attention lse", lse, ref_lse, REDUCTION_TOL)
    grads = C.attention_backward(dout, q, k, v, out, lse)
    ref_grads = K.attention_backward(*f64(dout, q, k, v, out, lse))
    for name, ours, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(f"attention {name}", ours, ref, ATTENTION_BACKWARD_TOL)


def test_attention_large_scores_stay_finite():
    # scaled scores of +-100s: most exponentials underflow to 0, none may overflow.
    # (Larger scores lose digits to float32 itself: at 1000 an ulp is 6e-5.)
    rng = np.random.default_rng(1)
    q, k, v, dout = (randn(rng, 1, 2, 70, 16, scale=s) for s in (10.0, 10.0, 1.0, 1.0))
    out, lse = C.attention_forward(q, k, v)
    ref_out, ref_lse = K.attention_forward(*f64(q, k, v))
    assert_close("attention out", out, ref_out, REDUCTION_TOL)
    assert_close("attention lse", lse, ref_lse, REDUCTION_TOL)
    grads = C.attention_backward(dout, q, k, v, out, lse)
    ref_grads = K.attention_backward(*f64(dout, q, k, v, out, lse))
    for name, ours, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(f"attention {name}", ours, ref, ATTENTION_BACKWARD_TOL)


_BACKWARD_IN_A_SUBPROCESS = """
import numpy as np
from tinyllm.backends import c_kernels as C, numpy_kernels as K
rng = np.random.default_rng(2)
q, k, v, dout = (rng.standard_normal((1, 2, 100, 16)).astype(np.float32) for _ in range(4))
out, lse = C.attention_forward(q, k, v)
ref = K.attention_backward(*(a.astype(np.float64) for a in (dout, q, k, v, out, lse)))
ours = C.attention_backward(dout, q, k, v, out, lse)
print(max(np.abs(a - r).max() / np.abs(r).max() for a, r in zip(ours, ref)))
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_attention_backward_both_parallel_schemes(threads):
    # B*nh = 2 heads: one thread takes the one-pass scheme (threads own heads),
    # three threads the two-pass one (dk, dv by key tile, then dq by query tile).
    # OpenMP reads OMP_NUM_THREADS at start-up, hence the fresh process.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _BACKWARD_IN_A_SUBPROCESS], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) <= ATTENTION_BACKWARD_TOL, run.stdout


# ----------------------------------------------------------------------------
# softmax, rmsnorm, silu, add

@pytest.mark.parametrize("shape", [(1, 1), (7, 63), (3, 5, 65), (2, 257)])
def test_softmax_matches_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y = C.softmax_forward(x)
    assert_close("softmax y", y, K.softmax_forward(*f64(x)), REDUCTION_TOL)
    dx = C.softmax_backward(dy, y)
    assert_close("softmax dx", dx, K.softmax_backward(*f64(dy, y)), REDUCTION_TOL)


def test_softmax_large_inputs_stay_finite():
    x = randn(np.random.default_rng(3), 7, 257, scale=1e4)        # exp(1e4) overflows float64 too
    y = C.softmax_forward(x)
    assert_close("softmax y", y, K.softmax_forward(*f64(x)), REDUCTION_TOL)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


# not C = 1: y = sign(x) * weight there, and dx is a cancellation down to eps / x^2
@pytest.mark.parametrize("shape", [(1, 7), (7, 63), (2, 5, 65), (3, 257)])
def test_rmsnorm_matches_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    x, dy = randn(rng, *shape), randn(rng, *shape)
    weight = randn(rng, shape[-1]) + 1.0
    y, rstd = C.rmsnorm_forward(x, weight, 1e-5)
    ref_y, ref_rstd = K.rmsnorm_forward(*f64(x, weight), 1e-5)
    assert_close("rmsnorm y", y, ref_y, REDUCTION_TOL)
    assert_close("rmsnorm rstd", rstd, ref_rstd, REDUCTION_TOL)
    dx, dweight = C.rmsnorm_backward(dy, x, weight, rstd)
    ref_dx, ref_dweight = K.rmsnorm_backward(*f64(dy, x, weight, rstd))
    assert_close("rmsnorm dx", dx, ref_dx, REDUCTION_TOL)
    assert_close("rmsnorm dweight", dweight, ref_dweight, REDUCTION_TOL)


def test_rmsnorm_dweight_sums_many_rows():
    # dweight sums over all N rows (split by columns across threads): N = 4097
    rng = np.random.default_rng(4)
    x, dy, weight = randn(rng, 4097, 70), randn(rng, 4097, 70), randn(rng, 70)
    _, rstd = C.rmsnorm_forward(x, weight)
    _, dweight = C.rmsnorm_backward(dy, x, weight, rstd)
    assert_close("rmsnorm dweight", dweight, K.rmsnorm_backward(*f64(dy, x, weight, rstd))[1],
                 REDUCTION_TOL)                                     # summed in double


# 15, 16, 17: the AVX-512 loop's masked last vector; 100003: split over the threads, ragged
@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 65, 1000, 100003])
def test_silu_matches_numpy(n):
    rng = np.random.default_rng(n)
    x, dy = randn(rng, n, scale=4.0), randn(rng, n)
    assert_close("silu y", C.silu_forward(x), K.silu_forward(*f64(x)), ELEMENTWISE_TOL)
    assert_close("silu dx", C.silu_backward(dy, x), K.silu_backward(*f64(dy, x)), ELEMENTWISE_TOL)


def test_silu_large_inputs_stay_finite():
    x = np.array([-1e30, -1e4, -90.0, -88.0, -1.0, 0.0, 1.0, 88.0, 90.0, 1e4, 1e30], np.float32)
    dy = np.ones_like(x)
    assert_close("silu y", C.silu_forward(x), K.silu_forward(*f64(x)), ELEMENTWISE_TOL)
    assert_close("silu dx", C.silu_backward(dy, x), K.silu_backward(*f64(dy, x)), ELEMENTWISE_TOL)


@pytest.mark.parametrize("shape", [(1,), (7, 63), (2, 65, 257)])
def test_add_matches_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    a, b = randn(rng, *shape), randn(rng, *shape)
    assert_close("add", C.add_forward(a, b), K.add_forward(*f64(a, b)), ELEMENTWISE_TOL)


@pytest.mark.parametrize("B, T, P, nh, hs", [(1, 1, 1, 1, 1), (2, 7, 3, 3, 5), (3, 65, 1, 2, 64),
                                             (2, 130, 3, 6, 64)])
def test_split_and_merge_heads_match_numpy(B, T, P, nh, hs):
    """Copies, so exact; the last shape is past PARALLEL_MIN (the threaded loop)."""
    x = randn(np.random.default_rng(T), B, T, P * nh * hs)           # (B, T, P*nh*hs)
    parts = C.split_heads(x, P, nh)
    for ours, ref in zip(parts, K.split_heads(x, P, nh)):
        np.testing.assert_array_equal(ours, ref)                       # (B, nh, T, hs)
    np.testing.assert_array_equal(C.merge_heads(parts), x)
    np.testing.assert_array_equal(C.merge_heads(parts[::-1]), K.merge_heads(parts[::-1]))
    with pytest.raises(ValueError, match="do not split"):
        C.split_heads(x, 1, x.shape[-1] + 1)


@pytest.mark.parametrize("sizes", [[1], [7, 65], [257, 100_000]])
def test_sum_of_squares_matches_numpy(sizes):
    """Sums in double of up to 1e5 terms: only the order differs from NumPy's."""
    arrays = [randn(np.random.default_rng(n), n, scale=100.0) for n in sizes]
    ref = K.sum_of_squares(arrays)
    assert abs(C.sum_of_squares(arrays) - ref) <= 1e-12 * ref


# ----------------------------------------------------------------------------
# embedding, cross-entropy, AdamW

@pytest.mark.parametrize("N, V, C_", [(1, 1, 1), (7, 5, 63), (65, 3, 65), (257, 100, 130)])
def test_embedding_matches_numpy(N, V, C_):
    rng = np.random.default_rng(N + V + C_)
    ids = rng.integers(0, V, (N,))                                 # repeats whenever N > V
    weight, dout = randn(rng, V, C_), randn(rng, N, C_)
    out = C.embedding_forward(ids, weight)
    np.testing.assert_array_equal(out, weight[ids])                # a copy: exact
    # sums of up to N float32 rows in order
    assert_close("embedding dweight", C.embedding_backward(dout, ids, V),
                 K.embedding_backward(*f64(dout), ids, V), ELEMENTWISE_TOL * 10)


def test_embedding_backward_repeated_ids_and_unused_rows():
    rng = np.random.default_rng(5)
    ids = np.array([[3, 3, 0], [3, 6, 0]])                 # (B, T): 3 thrice, 1, 2, 4, 5 never
    dout = randn(rng, 2, 3, 70)
    dweight = C.embedding_backward(dout, ids, 7)
    assert_close("embedding dweight", dweight, K.embedding_backward(*f64(dout), ids, 7),
                 ELEMENTWISE_TOL)
    assert not dweight[[1, 2, 4, 5]].any(), "rows of unused ids must be zero"


@pytest.mark.parametrize("N, V", [(1, 1), (7, 63), (65, 257), (130, 1000)])
def test_cross_entropy_matches_numpy(N, V):
    rng = np.random.default_rng(N + V)
    logits = randn(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, (N,))
    targets[::3] = -1                                              # ignored rows
    loss, lse = C.cross_entropy_forward(logits, targets)
    ref_loss, ref_lse = K.cross_entropy_forward(*f64(logits), targets)
    assert_close("cross_entropy loss", loss, ref_loss, REDUCTION_TOL)
    assert_close("cross_entropy lse", lse, ref_lse, REDUCTION_TOL)
    dlogits = C.cross_entropy_backward(np.float32(1.3), logits, targets, lse)
    ref = K.cross_entropy_backward(1.3, *f64(logits), targets, *f64(lse))
    assert_close("cross_entropy dlogits", dlogits, ref, REDUCTION_TOL)
    assert not dlogits[targets == -1].any(), "ignored rows get no gradient"


def test_cross_entropy_all_ignored():
    logits, targets = randn(np.random.default_rng(6), 5, 9), np.full(5, -1)
    loss, lse = C.cross_entropy_forward(logits, targets)
    assert loss == 0.0
    assert not C.cross_entropy_backward(1.0, logits, targets, lse).any()


def test_cross_entropy_large_logits_stay_finite():
    rng = np.random.default_rng(7)
    logits, targets = randn(rng, 9, 65, scale=1e4), rng.integers(0, 65, (9,))
    loss, lse = C.cross_entropy_forward(logits, targets)
    ref_loss, ref_lse = K.cross_entropy_forward(*f64(logits), targets)
    assert_close("cross_entropy loss", loss, ref_loss, REDUCTION_TOL)
    assert_close("cross_entropy lse", lse, ref_lse, REDUCTION_TOL)
    assert_close("cross_entropy dlogits", C.cross_entropy_backward(1.0, logits, targets, lse),
                 K.cross_entropy_backward(1.0, *f64(logits), targets, *f64(lse)), REDUCTION_TOL)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_adamw_several_steps_match_numpy(n):
    rng = np.random.default_rng(n)
    param = randn(rng, n)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    ref_param, ref_m, ref_v = f64(param, m, v)
    for step in range(1, 6):
        grad = randn(rng, n)
        C.adamw_update(param, grad, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1, step)
        K.adamw_update(ref_param, *f64(grad), ref_m, ref_v, 1e-2, 0.9, 0.95, 1e-8, 0.1, step)
    # five steps of elementwise float32 updates; m_hat / sqrt(v_hat) is well-conditioned
    for name, ours, ref in (("param", param, ref_param), ("m", m, ref_m), ("v", v, ref_v)):
        assert_close(f"adamw {name}", ours, ref, ELEMENTWISE_TOL * 10)


# ----------------------------------------------------------------------------
# the wrappers' argument checks: C never sees a bad buffer

def test_wrapper_rejects_float64():
    with pytest.raises(TypeError, match="float32"):
        C.softmax_forward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="float32"):
        C.attention_forward(*(np.zeros((1, 1, 4, 8)) for _ in range(3)))


def test_wrapper_rejects_non_contiguous():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        C.silu_forward(x[:, ::2])
    with pytest.raises(ValueError, match="contiguous"):
        C.rmsnorm_forward(x.T, np.ones(4, np.float32))


def test_wrapper_rejects_wrong_shapes():
    q = np.zeros((1, 2, 4, 8), np.float32)
    with pytest.raises(ValueError, match=r"\(1, 2, 5, 4\)"):
        C.attention_forward(q, np.zeros((1, 2, 5, 8), np.float32),
                            np.zeros((1, 2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="Tq=4"):
        C.attention_forward(q, q[:, :, :3].copy(), q[:, :, :3].copy())
    with pytest.raises(ValueError, match=r"\(3,\)"):
        C.rmsnorm_forward(np.zeros((2, 3), np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        C.add_forward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        C.cross_entropy_forward(np.zeros((5, 4), np.float32), np.zeros(4, np.int64))


def test_wrapper_rejects_out_of_range_ids():
    weight = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="id 5"):
        C.embedding_forward(np.array([0, 5]), weight)
    with pytest.raises(ValueError, match="id -1"):
        C.embedding_backward(np.zeros((2, 3), np.float32), np.array([-1, 0]), 5)
    with pytest.raises(ValueError, match="-2"):
        C.cross_entropy_forward(np.zeros((2, 4), np.float32), np.array([-2, 0]))
    with pytest.raises(ValueError, match="4"):
        C.cross_entropy_backward(1.0, np.zeros((2, 4), np.float32), np.array([4, 0]),
                                 np.zeros(2, np.float32))


def test_wrapper_refuses_to_write_read_only_memory(tmp_path):
    """adamw_update writes param, m and v in place: a read-only memmap would segfault in C,
    and np.frombuffer(bytes) would overwrite an immutable bytes object."""
    n = 16
    frozen = b"\0" * (4 * n)
    np.save(tmp_path / "p.npy", np.zeros(n, np.float32))
    mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
    ok = [np.zeros(n, np.float32) for _ in range(4)]
    for victim in (mapped, np.frombuffer(frozen, np.float32)):
        for slot in (0, 2, 3):   # param, m, v; grad is only read
            args = list(ok)
            args[slot] = victim
            with pytest.raises(ValueError, match="read-only"):
                C.adamw_update(*args, 1e-2, 0.9, 0.95, 1e-8, 0.1, 1)
    assert frozen == b"\0" * (4 * n)
    C.adamw_update(ok[0], np.frombuffer(frozen, np.float32), ok[2], ok[3], 1e-2, 0.9, 0.95,
                   1e-8, 0.1, 1)   # a read-only grad is fine


def test_adamw_step_on_a_memmapped_parameter_raises(tmp_path):
    from tinyllm import backends, nn
    from tinyllm.optim import AdamW
    np.save(tmp_path / "w.npy", np.ones((4, 4), np.float32))
    backends.set_backend("c")
    p = nn.Parameter(np.load(tmp_path / "w.npy", mmap_mode="r"))
    p.grad = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="read-only"):
        AdamW([{"params": [p], "names": ["w"]}], lr=1e-2).step()
