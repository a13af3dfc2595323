"""The CUDA kernels other than matmul and attention, one at a time, against numpy_kernels.

Each test feeds a kernel float32 inputs of awkward sizes (1, 7, primes, not multiples of a
warp or of a block, rows wider than a block: C = 1500) and compares with numpy_kernels run
on the same values in float64, by the relative error max|ours - ref| / max|ref|. Every
tolerance says why it is what it is. Copies (split/merge heads, the embedding lookup) must
be exact, and so must everything the library promises to be deterministic, run twice. Sizes
marked GPU-sized are skipped on the CPU emulation, where every CUDA thread is a fiber.
Not here: matmul and attention (test_cuda_matmul.py, test_cuda_attention.py), the device
arrays and a whole training step (test_cuda.py).
"""
import numpy as np
import pytest

from tests.cuda_helpers import cuda, relative_error  # noqa: F401  (cuda: a fixture)
from tinyllm.backends import numpy_kernels as K

# elementwise kernels: a few float32 roundings (CUDA's expf is within 2 ulp), each <= 6e-8
ELEMENTWISE_TOL = 1e-6
# float32 sums of up to a few thousand terms, each thread summing a strided share in order
# and the block adding the threads' sums as a tree: the error grows with the longest chain
REDUCTION_TOL = 1e-5
# float64 sums of float32 squares (each square is exact in float64)
DOUBLE_TOL = 1e-12
# silu's dx = dy * s * (1 + x (1 - s)): 1 - s keeps only the absolute precision of s (3e-8),
# which x multiplies by up to ~20 (a normal sample of a million, scaled by 4)
SILU_BACKWARD_TOL = 2e-6


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def host(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def assert_close(name, ours, ref, tol):
    ours, ref = host(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, reference {ref.shape}"
    assert np.all(np.isfinite(ours)), f"{name}: {np.sum(~np.isfinite(ours))} non-finite values"
    if ref.size:
        err = relative_error(ours, ref)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def gpu_sized(cuda, large):
    if large and cuda.is_emulated():
        pytest.skip("GPU-sized: too slow on the CPU emulation")


def big(*values):
    """A parametrize case that runs only on a real GPU (see gpu_sized)."""
    return pytest.param(*values, True, id="gpu-sized")


# ----------------------------------------------------------------------------
# split_heads / merge_heads: copies, so exact

HEADS_SHAPES = [   # (B, T, P, nh, hs)
    (1, 1, 1, 1, 1), (2, 7, 3, 3, 5), (3, 5, 1, 2, 17), (1, 13, 3, 1, 64), (2, 3, 2, 5, 1)]


@pytest.mark.parametrize("B, T, P, nh, hs, large",
                         [s + (False,) for s in HEADS_SHAPES] + [big(4, 257, 3, 12, 64)])
def test_split_and_merge_heads_are_the_numpy_transpose(cuda, B, T, P, nh, hs, large):
    gpu_sized(cuda, large)
    x = randn(np.random.default_rng(B * T + P * nh * hs), B, T, P * nh * hs)
    parts = cuda.split_heads(cuda.to_device(x), P, nh)
    assert len(parts) == P
    for p, part in enumerate(parts):
        want = x.reshape(B, T, P, nh, hs)[:, :, p].transpose(0, 2, 1, 3)   # (B, nh, T, hs)
        np.testing.assert_array_equal(part.numpy(), want)
    np.testing.assert_array_equal(cuda.merge_heads(parts).numpy(), x)


def test_merge_heads_writes_only_its_part(cuda):
    B, T, P, nh, hs, p = 2, 5, 3, 2, 7, 1
    rng = np.random.default_rng(0)
    fused, head = randn(rng, B, T, P * nh * hs), randn(rng, B, nh, T, hs)
    out, d_head = cuda.to_device(fused), cuda.to_device(head)
    cuda.check(cuda.lib.merge_heads(d_head.ptr, out.ptr, B, T, P, p, nh, hs))
    want = fused.reshape(B, T, P, nh, hs).copy()
    want[:, :, p] = head.transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(out.numpy(), want.reshape(B, T, -1))


# ----------------------------------------------------------------------------
# softmax, rmsnorm: one block per row

ROW_SHAPES = [(1, 1), (1, 7), (7, 63), (3, 5, 65), (5, 1500), (2, 257), (33, 31)]


@pytest.mark.parametrize("shape, large", [(s, False) for s in ROW_SHAPES] + [big((64, 4099))])
def test_softmax_matches_numpy(cuda, shape, large):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(sum(shape))
    x, dy = randn(rng, *shape, scale=3.0), randn(rng, *shape)
    y = cuda.softmax_forward(cuda.to_device(x))
    assert_close("softmax y", y, K.softmax_forward(*f64(x)), REDUCTION_TOL)
    dx = cuda.softmax_backward(cuda.to_device(dy), y)
    assert_close("softmax dx", dx, K.softmax_backward(*f64(dy, y.numpy())), REDUCTION_TOL)


def test_softmax_large_inputs_stay_finite(cuda):
    x = randn(np.random.default_rng(3), 7, 257, scale=1e4)        # exp(1e4) overflows float64 too
    y = cuda.softmax_forward(cuda.to_device(x)).numpy()
    assert_close("softmax y", y, K.softmax_forward(*f64(x)), REDUCTION_TOL)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


# not C = 1: y = sign(x) * weight there, and dx is a cancellation down to eps / x^2
NORM_SHAPES = [(1, 7), (7, 63), (2, 5, 65), (3, 257), (5, 1500),
               (600, 9)]                                          # N > 512: blocks take many rows


@pytest.mark.parametrize("shape, large",
                         [(s, False) for s in NORM_SHAPES] + [big((4097, 768))])
def test_rmsnorm_matches_numpy(cuda, shape, large):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(sum(shape))
    x, dy = randn(rng, *shape), randn(rng, *shape)
    weight = randn(rng, shape[-1]) + 1.0
    y, rstd = cuda.rmsnorm_forward(cuda.to_device(x), cuda.to_device(weight), 1e-5)
    ref_y, ref_rstd = K.rmsnorm_forward(*f64(x, weight), 1e-5)
    assert_close("rmsnorm y", y, ref_y, REDUCTION_TOL)
    assert_close("rmsnorm rstd", rstd, ref_rstd, REDUCTION_TOL)
    args = [cuda.to_device(a) for a in (dy, x, weight)] + [rstd]
    dx, dweight = cuda.rmsnorm_backward(*args)
    ref_dx, ref_dweight = K.rmsnorm_backward(*f64(dy, x, weight, rstd.numpy()))
    assert_close("rmsnorm dx", dx, ref_dx, REDUCTION_TOL)
    # summed over N rows: float32 partials of N / 512 rows each, added in float64
    assert_close("rmsnorm dweight", dweight, ref_dweight, REDUCTION_TOL)
    np.testing.assert_array_equal(cuda.rmsnorm_backward(*args)[1].numpy(), dweight.numpy(),
                                  err_msg="dweight is a fixed-order reduction: bit-identical")


# ----------------------------------------------------------------------------
# silu, add, scale, fill: grid-stride loops (on a GPU, n beyond one grid of 4096 x 256)

ELEMENTWISE_SIZES = [(1, False), (7, False), (257, False), (1000, False), big(1 << 20 | 7)]


@pytest.mark.parametrize("n, large", ELEMENTWISE_SIZES)
def test_silu_matches_numpy(cuda, n, large):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(n)
    x, dy = randn(rng, n, scale=4.0), randn(rng, n)
    y = cuda.silu_forward(cuda.to_device(x))
    assert_close("silu y", y, K.silu_forward(*f64(x)), ELEMENTWISE_TOL)
    dx = cuda.silu_backward(cuda.to_device(dy), cuda.to_device(x))
    assert_close("silu dx", dx, K.silu_backward(*f64(dy, x)), SILU_BACKWARD_TOL)


def test_silu_large_inputs_stay_finite(cuda):
    x = np.array([-1e30, -1e4, -90.0, -88.0, -1.0, 0.0, 1.0, 88.0, 90.0, 1e4, 1e30], np.float32)
    dy = np.ones_like(x)
    assert_close("silu y", cuda.silu_forward(cuda.to_device(x)), K.silu_forward(*f64(x)),
                 ELEMENTWISE_TOL)
    assert_close("silu dx", cuda.silu_backward(cuda.to_device(dy), cuda.to_device(x)),
                 K.silu_backward(*f64(dy, x)), SILU_BACKWARD_TOL)


@pytest.mark.parametrize("n, large", ELEMENTWISE_SIZES)
def test_add_scale_fill_are_exact(cuda, n, large):
    # one float32 operation per element, correctly rounded on both sides: bit-identical
    gpu_sized(cuda, large)
    rng = np.random.default_rng(n)
    a, b = randn(rng, n), randn(rng, n)
    da, db = cuda.to_device(a), cuda.to_device(b)
    np.testing.assert_array_equal(cuda.add_forward(da, db).numpy(), a + b)
    da += db                                                      # add_forward with out = a
    np.testing.assert_array_equal(da.numpy(), a + b)
    da *= np.float32(0.3)                                         # scale
    np.testing.assert_array_equal(da.numpy(), (a + b) * np.float32(0.3))
    cuda.check(cuda.lib.fill(da.ptr, 3.25, n))
    np.testing.assert_array_equal(da.numpy(), np.full(n, 3.25, np.float32))


@pytest.mark.parametrize("sizes, large", [((1,), False), ((0, 7, 1000), False),
                                          ((300_001,), False), big((3_000_017, 5, 1 << 20))])
def test_sum_of_squares_in_float64_and_deterministic(cuda, sizes, large):
    # 300_001 > 1024 blocks x 256 threads: every thread of the first pass adds several values
    gpu_sized(cuda, large)
    rng = np.random.default_rng(len(sizes))
    xs = [randn(rng, n, scale=10.0) for n in sizes]
    arrays = [cuda.to_device(x) for x in xs]
    got = cuda.sum_of_squares(arrays)
    want = sum(float(np.sum(np.square(x.astype(np.float64)))) for x in xs)
    assert abs(got - want) <= DOUBLE_TOL * want
    assert cuda.sum_of_squares(arrays) == got, "a fixed-order reduction: bit-identical"


# ----------------------------------------------------------------------------
# embedding

EMBEDDING_SHAPES = [   # (N, V, C): repeated ids whenever N > V; V > 1024: the scan's chunks
    (1, 1, 1), (7, 5, 63), (65, 3, 1500), (257, 100, 130), (50, 3001, 3), (300, 2, 33)]


@pytest.mark.parametrize("N, V, C, large",
                         [s + (False,) for s in EMBEDDING_SHAPES] + [big(8192, 50257, 64)])
def test_embedding_matches_numpy(cuda, N, V, C, large):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(N + V + C)
    ids = rng.integers(0, V, (N,))
    weight, dout = randn(rng, V, C), randn(rng, N, C)
    out = cuda.embedding_forward(ids, cuda.to_device(weight))
    np.testing.assert_array_equal(out.numpy(), weight[ids])       # a copy: exact
    ref = K.embedding_backward(*f64(dout), ids, V)
    d_dout = cuda.to_device(dout)

    cuda.set_deterministic(True)
    dweight = cuda.embedding_backward(d_dout, ids, V).numpy()
    # each row summed by one thread in position order: what float32 np.add.at does, bit for bit
    np.testing.assert_array_equal(dweight, K.embedding_backward(dout, ids, V))
    np.testing.assert_array_equal(cuda.embedding_backward(d_dout, ids, V).numpy(), dweight)
    assert_close("embedding dweight (deterministic)", dweight, ref, REDUCTION_TOL)

    cuda.set_deterministic(False)
    # atomics: the same float32 sums of up to N rows, in an order that varies
    assert_close("embedding dweight (atomic)", cuda.embedding_backward(d_dout, ids, V), ref,
                 REDUCTION_TOL)


@pytest.mark.parametrize("deterministic", [True, False])
def test_embedding_backward_repeated_ids_and_unused_rows(cuda, deterministic):
    cuda.set_deterministic(deterministic)
    ids = np.array([[3, 3, 0], [3, 6, 0]])                 # (B, T): 3 thrice, 1, 2, 4, 5 never
    dout = randn(np.random.default_rng(5), 2, 3, 70)
    dweight = cuda.embedding_backward(cuda.to_device(dout), ids, 7).numpy()
    assert_close("embedding dweight", dweight, K.embedding_backward(*f64(dout), ids, 7),
                 ELEMENTWISE_TOL)                                 # sums of at most 3 terms
    assert not dweight[[1, 2, 4, 5]].any(), "rows of unused ids must be zero"


def test_embedding_backward_one_id_everywhere(cuda):
    # the deterministic path's worst case: one bucket holding all N positions
    ids = np.full(700, 4)
    dout = randn(np.random.default_rng(6), 700, 5)
    dweight = cuda.embedding_backward(cuda.to_device(dout), ids, 9).numpy()
    np.testing.assert_array_equal(dweight, K.embedding_backward(dout, ids, 9))


# ----------------------------------------------------------------------------
# cross-entropy

CE_SHAPES = [(1, 1), (7, 7), (13, 1500), (65, 257), (130, 1000), (3, 2)]


@pytest.mark.parametrize("N, V, large", [s + (False,) for s in CE_SHAPES] + [big(512, 50257)])
def test_cross_entropy_matches_numpy(cuda, N, V, large):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(N + V)
    logits = randn(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, (N,))
    targets[1::3] = -1                                             # ignored rows (not row 0: N = 1)
    d_logits = cuda.to_device(logits)
    loss, lse = cuda.cross_entropy_forward(d_logits, targets)
    ref_loss, ref_lse = K.cross_entropy_forward(*f64(logits), targets)
    # lse: a float32 sum of exp over V; the loss adds N of those rows in float64
    assert_close("cross_entropy loss", loss, ref_loss, REDUCTION_TOL)
    assert_close("cross_entropy lse", lse, ref_lse, REDUCTION_TOL)
    assert cuda.cross_entropy_forward(d_logits, targets)[0].item() == loss.item(), \
        "the loss is a fixed-order reduction: bit-identical"
    dlogits = cuda.cross_entropy_backward(np.float32(1.3), d_logits, targets, lse).numpy()
    # given our lse, the backward is elementwise: exp(logit - lse) * factor
    ref = K.cross_entropy_backward(1.3, *f64(logits), targets, *f64(lse.numpy()))
    assert_close("cross_entropy dlogits", dlogits, ref, ELEMENTWISE_TOL)
    assert not dlogits[targets == -1].any(), "ignored rows get no gradient"


@pytest.mark.parametrize("N", [0, 5])
def test_cross_entropy_all_ignored(cuda, N):
    logits = cuda.to_device(randn(np.random.default_rng(6), N, 9))
    targets = np.full(N, -1)
    loss, lse = cuda.cross_entropy_forward(logits, targets)
    assert loss.item() == 0.0
    assert not cuda.cross_entropy_backward(1.0, logits, targets, lse).numpy().any()


def test_cross_entropy_large_logits_stay_finite(cuda):
    rng = np.random.default_rng(7)
    logits, targets = randn(rng, 9, 65, scale=1e4), rng.integers(0, 65, (9,))
    d_logits = cuda.to_device(logits)
    loss, lse = cuda.cross_entropy_forward(d_logits, targets)
    ref_loss, ref_lse = K.cross_entropy_forward(*f64(logits), targets)
    assert_close("cross_entropy loss", loss, ref_loss, REDUCTION_TOL)
    assert_close("cross_entropy lse", lse, ref_lse, REDUCTION_TOL)
    assert_close("cross_entropy dlogits", cuda.cross_entropy_backward(1.0, d_logits, targets, lse),
                 K.cross_entropy_backward(1.0, *f64(logits), targets, *f64(lse.numpy())),
                 ELEMENTWISE_TOL)


# ----------------------------------------------------------------------------
# AdamW

@pytest.mark.parametrize("n, large", ELEMENTWISE_SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_several_steps_match_numpy(cuda, n, large, weight_decay):
    gpu_sized(cuda, large)
    rng = np.random.default_rng(n)
    param = randn(rng, n)
    ref_param, ref_m, ref_v = f64(param, np.zeros(n), np.zeros(n))
    d_param, d_m, d_v = (cuda.to_device(a) for a in (param, np.zeros(n, np.float32),
                                                      np.zeros(n, np.float32)))
    for step in range(1, 6):
        grad = randn(rng, n)
        cuda.adamw_update(d_param, cuda.to_device(grad), d_m, d_v, 1e-2, 0.9, 0.95, 1e-8,
                          weight_decay, step)
        K.adamw_update(ref_param, *f64(grad), ref_m, ref_v, 1e-2, 0.9, 0.95, 1e-8, weight_decay,
                       step)
    # five steps of elementwise float32 updates, ~10 roundings each, as for the C kernel;
    # m_hat / sqrt(v_hat) is well-conditioned (|g| >> eps)
    for name, ours, ref in (("param", d_param, ref_param), ("m", d_m, ref_m), ("v", d_v, ref_v)):
        assert_close(f"adamw {name}", ours, ref, ELEMENTWISE_TOL * 10)


@pytest.mark.parametrize("n, p", [(1, 0.5), (7, 0.1), (5003, 0.3), (70_001, 0.9)])
def test_dropout_draws_numpys_mask_exactly(cuda, n, p):
    # the same hash of (seed, index) and the same float32 scale: bit-identical, not close
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for seed in (0, 12345, 2 ** 63 - 1):
        np.testing.assert_array_equal(cuda.dropout(cuda.to_device(x), p, seed).numpy(),
                                      K.dropout(x, p, seed))


@pytest.mark.parametrize("shape, large",
                         [(s, False) for s in NORM_SHAPES] + [big((4097, 768))])
def test_layernorm_matches_numpy(cuda, shape, large):
    # as RMSNorm: one block-wide reduction more (the mean), the same deterministic partials
    gpu_sized(cuda, large)
    rng = np.random.default_rng(sum(shape) + 1)
    x, dy = randn(rng, *shape, scale=2.0) + 0.5, randn(rng, *shape)
    weight, bias = randn(rng, shape[-1]) + 1.0, randn(rng, shape[-1])
    y, mean, rstd = cuda.layernorm_forward(*(cuda.to_device(a) for a in (x, weight, bias)), 1e-5)
    ref = K.layernorm_forward(*f64(x, weight, bias), 1e-5)
    for name, ours, want in zip(("y", "mean", "rstd"), (y, mean, rstd), ref):
        assert_close(f"layernorm {name}", ours, want, REDUCTION_TOL)
    args = [cuda.to_device(a) for a in (dy, x, weight)] + [mean, rstd]
    grads = cuda.layernorm_backward(*args)
    ref = K.layernorm_backward(*f64(dy, x, weight, mean.numpy(), rstd.numpy()))
    for name, ours, want in zip(("dx", "dweight", "dbias"), grads, ref):
        assert_close(f"layernorm {name}", ours, want, REDUCTION_TOL)
    again = cuda.layernorm_backward(*args)
    for ours, repeat in zip(grads[1:], again[1:]):
        np.testing.assert_array_equal(repeat.numpy(), ours.numpy(),
                                      err_msg="dweight, dbias: fixed-order reductions, bit-identical")
