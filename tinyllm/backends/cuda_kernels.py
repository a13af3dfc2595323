"""The "cuda" backend: the kernels of csrc/cuda/ on DeviceArrays, bound with cffi.

Every wrapper has the signature and the meaning of its twin in
numpy_kernels.py, takes and returns DeviceArrays (token ids and targets may
come as NumPy integer arrays: they are range-checked on the host, where the
batch comes from, then copied over), checks dtype and shape before the call,
allocates its outputs from the caching allocator, and raises CudaError
naming the call when CUDA reports a failure. Kernels run asynchronously on
the default stream; only `.numpy()`, `.item()` and `sum_of_squares` wait.

Options: set_matmul_precision("tf32") runs matmuls on tensor cores (TF32
inputs, float32 accumulation; ~1e-3 relative error) instead of the float32
kernel; set_deterministic(False) lets the embedding backward add rows with
atomics (faster; the summation order then varies from run to run).

Read csrc/cuda/tinyllm_cuda.h for the C side and cuda_array.py for the arrays.
"""
import numpy as np

from tinyllm.backends import cuda_runtime as runtime
from tinyllm.backends import numpy_kernels as _reference
from tinyllm.backends.checks import (attention_sizes, check_ids, matmul_sizes, merge_sizes, rows,
                                     split_sizes)
from tinyllm.backends.checks import shape as _shape
from tinyllm.backends.cuda_array import DeviceArray
from tinyllm.backends.cuda_runtime import CudaError, check, ffi, lib  # noqa: F401 (re-exported)

NAME = "cuda"
_options = {"matmul": lib.matmul, "deterministic": True}

# the kernels run on the CPU emulation (csrc/cuda/emu): correct but slow, never picked by default
EMULATED = runtime.is_emulated()
device_name = runtime.device_name
is_emulated = runtime.is_emulated
synchronize = runtime.synchronize
memory_stats = runtime.memory_stats
empty_cache = runtime.empty_cache


def set_matmul_precision(precision):
    """"highest": float32 tiles (the default); "tf32": tensor cores with TF32 inputs."""
    kernels = {"highest": lib.matmul, "tf32": lib.matmul_tf32}
    if precision not in kernels:
        raise ValueError(f"matmul precision must be one of {sorted(kernels)}, got {precision!r}")
    _options["matmul"] = kernels[precision]


def set_deterministic(flag):
    """True (the default): reductions add in a fixed order, so runs repeat bit for bit."""
    _options["deterministic"] = bool(flag)


# ----------------------------------------------------------------------------
# arrays in and out

def to_device(a):
    """A NumPy array copied to the GPU (a DeviceArray is returned as it is)."""
    return a if isinstance(a, DeviceArray) else DeviceArray.from_numpy(a)


asarray = to_device   # the backend-neutral name ops and nn use


def _f32(name, a):
    if not isinstance(a, DeviceArray):
        raise TypeError(f"{name}: the CUDA backend takes DeviceArrays, got {type(a).__name__}; "
                        f"copy it over with cuda_kernels.to_device(x) (or model.to(backend))")
    if a.dtype != np.float32:
        raise TypeError(f"{name}: the CUDA kernels compute in float32, got {a.dtype}")
    return a


def _ids(name, ids, low, high):
    """Host integer ids, range-checked, as an int64 DeviceArray."""
    if isinstance(ids, DeviceArray):
        raise TypeError(f"{name}: pass token ids as a NumPy array; they are checked on the host")
    return DeviceArray.from_numpy(check_ids(name, ids, low, high).astype(np.int64))


# ----------------------------------------------------------------------------
# matmul and attention

def matmul(a, b, transpose_a=False, transpose_b=False):
    """As numpy_kernels.matmul, for 2-D @ 2-D and equal-batch 3-D @ 3-D."""
    a, b = _f32("matmul a", a), _f32("matmul b", b)
    sizes = matmul_sizes(a, b, transpose_a, transpose_b)
    if sizes is None:
        raise ValueError(f"matmul on the CUDA backend takes 2-D @ 2-D or equal-batch 3-D @ 3-D, "
                         f"got {a.shape} @ {b.shape}; reshape (broadcast) the operands first")
    batch, M, N, K = sizes
    if a.ndim == 2 and transpose_b and not transpose_a and 1 <= M <= GEMV_MAX_ROWS:
        return gemv(a, b)                                          # a decoding step's Linear
    out = DeviceArray(a.shape[:-2] + (M, N))
    check(_options["matmul"](a.ptr, b.ptr, out.ptr, batch, M, N, K, int(transpose_a),
                             int(transpose_b)))
    return out


def attention_forward(q, k, v):
    q, k, v = _f32("attention q", q), _f32("attention k", k), _f32("attention v", v)
    B, nh, Tq, Tk, hs = attention_sizes(q, k, v)
    out = DeviceArray(q.shape)                                    # (B, nh, Tq, hs)
    lse = DeviceArray((B, nh, Tq))                                # (B, nh, Tq)
    check(lib.attention_forward(q.ptr, k.ptr, v.ptr, out.ptr, lse.ptr, B, nh, Tq, Tk, hs))
    return out, lse


def attention_backward(dout, q, k, v, out, lse):
    dout, q, k, v = (_f32(f"attention_backward {n}", x) for n, x in
                     (("dout", dout), ("q", q), ("k", k), ("v", v)))
    out, lse = _f32("attention_backward out", out), _f32("attention_backward lse", lse)
    B, nh, Tq, Tk, hs = attention_sizes(q, k, v, dout, out, lse)
    dq, dk, dv = DeviceArray(q.shape), DeviceArray(k.shape), DeviceArray(v.shape)
    check(lib.attention_backward(dout.ptr, q.ptr, k.ptr, v.ptr, out.ptr, lse.ptr, dq.ptr, dk.ptr,
                                 dv.ptr, B, nh, Tq, Tk, hs))
    return dq, dk, dv


def split_heads(x, n_parts, n_head):
    x = _f32("split_heads x", x)
    B, T, hs = split_sizes(x, n_parts, n_head)
    parts = []
    for p in range(n_parts):
        part = DeviceArray((B, n_head, T, hs))                    # (B, nh, T, hs)
        check(lib.split_heads(x.ptr, part.ptr, B, T, n_parts, p, n_head, hs))
        parts.append(part)
    return parts


def merge_heads(parts):
    parts = [_f32("merge_heads part", x) for x in parts]
    B, nh, T, hs = merge_sizes(parts)
    out = DeviceArray((B, T, len(parts) * nh * hs))               # (B, T, P*nh*hs)
    for p, x in enumerate(parts):
        check(lib.merge_heads(x.ptr, out.ptr, B, T, len(parts), p, nh, hs))
    return out


# attention on qkv (B, T, 3C): split, attend, merge on the device, as numpy_kernels defines it
attention_qkv_forward, attention_qkv_backward = _reference.qkv_attention(
    split_heads, merge_heads, attention_forward, attention_backward)


# ----------------------------------------------------------------------------
# softmax, rmsnorm, silu

def softmax_forward(x):
    x = _f32("softmax x", x)
    y = DeviceArray(x.shape)
    check(lib.softmax_forward(x.ptr, y.ptr, *rows(x)))
    return y


def softmax_backward(dy, y):
    dy, y = _f32("softmax_backward dy", dy), _f32("softmax_backward y", y)
    _shape("softmax_backward dy", dy, y.shape)
    dx = DeviceArray(y.shape)
    check(lib.softmax_backward(dy.ptr, y.ptr, dx.ptr, *rows(y)))
    return dx


def rmsnorm_forward(x, weight, eps=1e-5):
    x, weight = _f32("rmsnorm x", x), _f32("rmsnorm weight", weight)
    N, C = rows(x)
    _shape("rmsnorm weight", weight, (C,))
    y, rstd = DeviceArray(x.shape), DeviceArray(x.shape[:-1])     # (..., C), (...,)
    check(lib.rmsnorm_forward(x.ptr, weight.ptr, y.ptr, rstd.ptr, N, C, eps))
    return y, rstd


def rmsnorm_backward(dy, x, weight, rstd):
    dy, x = _f32("rmsnorm_backward dy", dy), _f32("rmsnorm_backward x", x)
    weight, rstd = _f32("rmsnorm_backward weight", weight), _f32("rmsnorm_backward rstd", rstd)
    N, C = rows(x)
    _shape("rmsnorm_backward dy", dy, x.shape)
    _shape("rmsnorm_backward rstd", rstd, x.shape[:-1])
    dx, dweight = DeviceArray(x.shape), DeviceArray((C,))
    check(lib.rmsnorm_backward(dy.ptr, x.ptr, weight.ptr, rstd.ptr, dx.ptr, dweight.ptr, N, C))
    return dx, dweight


def silu_forward(x):
    x = _f32("silu x", x)
    y = DeviceArray(x.shape)
    check(lib.silu_forward(x.ptr, y.ptr, x.size))
    return y


def silu_backward(dy, x):
    dy, x = _f32("silu_backward dy", dy), _f32("silu_backward x", x)
    _shape("silu_backward dy", dy, x.shape)
    dx = DeviceArray(x.shape)
    check(lib.silu_backward(dy.ptr, x.ptr, dx.ptr, x.size))
    return dx


def dropout(x, p, seed):
    x = _f32("dropout x", x)
    scale, threshold = _reference.dropout_constants(p)
    y = DeviceArray(x.shape)
    check(lib.dropout(x.ptr, y.ptr, x.size, scale, threshold, seed))
    return y


def layernorm_forward(x, weight, bias, eps=1e-5):
    x, weight, bias = (_f32(f"layernorm {n}", a) for n, a in
                       (("x", x), ("weight", weight), ("bias", bias)))
    N, C = rows(x)
    _shape("layernorm weight", weight, (C,))
    _shape("layernorm bias", bias, (C,))
    y, mean, rstd = DeviceArray(x.shape), DeviceArray(x.shape[:-1]), DeviceArray(x.shape[:-1])
    check(lib.layernorm_forward(x.ptr, weight.ptr, bias.ptr, y.ptr, mean.ptr, rstd.ptr, N, C, eps))
    return y, mean, rstd


def layernorm_backward(dy, x, weight, mean, rstd):
    dy, x, weight = (_f32(f"layernorm_backward {n}", a) for n, a in
                     (("dy", dy), ("x", x), ("weight", weight)))
    mean, rstd = _f32("layernorm_backward mean", mean), _f32("layernorm_backward rstd", rstd)
    N, C = rows(x)
    _shape("layernorm_backward dy", dy, x.shape)
    _shape("layernorm_backward mean", mean, x.shape[:-1])
    _shape("layernorm_backward rstd", rstd, x.shape[:-1])
    dx, dweight, dbias = DeviceArray(x.shape), DeviceArray((C,)), DeviceArray((C,))
    check(lib.layernorm_backward(dy.ptr, x.ptr, weight.ptr, mean.ptr, rstd.ptr, dx.ptr,
                                 dweight.ptr, dbias.ptr, N, C))
    return dx, dweight, dbias


# ----------------------------------------------------------------------------
# embedding and cross-entropy

def embedding_forward(ids, weight):
    weight = _f32("embedding weight", weight)
    V, C = weight.shape
    ids_d = _ids("embedding", ids, 0, V)
    out = DeviceArray(ids_d.shape + (C,))                         # (..., C)
    check(lib.embedding_forward(ids_d.ptr, weight.ptr, out.ptr, ids_d.size, V, C))
    return out


def embedding_backward(dout, ids, vocab_size):
    dout = _f32("embedding_backward dout", dout)
    ids_d = _ids("embedding_backward", ids, 0, vocab_size)
    C = dout.shape[-1]
    _shape("embedding_backward dout", dout, ids_d.shape + (C,))
    dweight = DeviceArray((vocab_size, C))
    check(lib.embedding_backward(dout.ptr, ids_d.ptr, dweight.ptr, ids_d.size, vocab_size, C,
                                 int(_options["deterministic"])))
    return dweight


def _targets(name, targets, N, V):
    t = np.asarray(targets)
    if t.shape != (N,):
        raise ValueError(f"{name}: expected targets of shape ({N},), got {t.shape}")
    return _ids(name, t, -1, V), int(np.count_nonzero(t != -1))


def cross_entropy_forward(logits, targets):
    logits = _f32("cross_entropy logits", logits)
    N, V = logits.shape
    t, n_kept = _targets("cross_entropy target", targets, N, V)
    lse, loss = DeviceArray((N,)), DeviceArray(())
    check(lib.cross_entropy_forward(logits.ptr, t.ptr, lse.ptr, loss.ptr, N, V, n_kept))
    return loss, lse


def cross_entropy_backward(dloss, logits, targets, lse):
    logits = _f32("cross_entropy_backward logits", logits)
    lse = _f32("cross_entropy_backward lse", lse)
    N, V = logits.shape
    _shape("cross_entropy_backward lse", lse, (N,))
    t, n_kept = _targets("cross_entropy_backward target", targets, N, V)
    dloss = dloss.item() if isinstance(dloss, DeviceArray) else float(np.asarray(dloss))
    dlogits = DeviceArray((N, V))
    check(lib.cross_entropy_backward(dloss, logits.ptr, t.ptr, lse.ptr, dlogits.ptr, N, V, n_kept))
    return dlogits


# ----------------------------------------------------------------------------
# the residual add, the optimizer, and what the training loop needs besides

def add_forward(a, b):
    a, b = _f32("add a", a), _f32("add b", b)
    _shape("add b", b, a.shape)
    return a + b


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    param, grad = _f32("adamw param", param), _f32("adamw grad", grad)
    m, v = _f32("adamw m", m), _f32("adamw v", v)
    for name, x in (("grad", grad), ("m", m), ("v", v)):
        _shape(f"adamw {name}", x, param.shape)
    check(lib.adamw_update(param.ptr, grad.ptr, m.ptr, v.ptr, param.size, lr, beta1, beta2, eps,
                           weight_decay, int(step)))


def sum_of_squares(arrays):
    """The sum of x*x over every array, in float64: one copy to the host for all of them."""
    arrays = [_f32("sum_of_squares", a) for a in arrays]
    sums = DeviceArray((len(arrays),), np.float64)
    for i, a in enumerate(arrays):
        check(lib.sum_of_squares(a.ptr, sums.ptr + i, a.size))
    return float(np.sum(sums.numpy())) if arrays else 0.0


def empty(shape, dtype=np.float32):
    """An uninitialized DeviceArray (the KV cache's buffers)."""
    return DeviceArray(shape, dtype)


def _kv_sizes(name, cache, x):
    cache, x = _f32(f"{name} cache", cache), _f32(f"{name} x", x)
    if cache.ndim != 4 or x.ndim != 4 or cache.shape[:2] + cache.shape[3:] != x.shape[:2] + x.shape[3:]:
        raise ValueError(f"{name}: cache (B, nh, Tmax, hs) {cache.shape} and (B, nh, T, hs) "
                         f"{x.shape} differ off the time axis")
    return cache.shape[0] * cache.shape[1], cache.shape[2] * cache.shape[3] * 4  # rows, row bytes


def kv_write(cache, x, start):
    """As numpy_kernels.kv_write: one strided copy, row (b, h) of x into its row of the cache."""
    n_rows, cache_pitch = _kv_sizes("kv_write", cache, x)
    T, hs = x.shape[2:]
    if not 0 <= start <= cache.shape[2] - T:
        raise ValueError(f"kv_write: positions [{start}, {start + T}) are outside the cache's "
                         f"{cache.shape[2]}")
    check(lib.copy_rows(cache.raw + start * hs * 4, cache_pitch, x.raw, T * hs * 4, T * hs * 4,
                        n_rows))


def attention_decode(q, k_cache, v_cache, Tk):
    """As numpy_kernels.attention_decode: the cache is read in place on the device."""
    q = _f32("attention_decode q", q)
    if q.ndim != 4:
        raise ValueError(f"attention_decode: q must be (B, nh, Tq, hs), got shape {q.shape}")
    B, nh, Tq, hs = q.shape
    for name, cache in (("k", k_cache), ("v", v_cache)):
        _kv_sizes(f"attention_decode {name}", cache, q)
    if not 1 <= Tq <= Tk <= k_cache.shape[2] or v_cache.shape != k_cache.shape:
        raise ValueError(f"attention_decode: need 1 <= Tq={Tq} <= Tk={Tk} <= cache length "
                         f"{k_cache.shape[2]} and equal k, v caches")
    if hs > 256:
        raise ValueError(f"attention_decode: head size {hs} > 256 is not supported on CUDA")
    out = DeviceArray(q.shape)                                    # (B, nh, Tq, hs)
    check(lib.attention_decode(q.ptr, k_cache.ptr, v_cache.ptr, out.ptr, B, nh, Tq, Tk,
                               k_cache.shape[2], hs))
    return out


# M <= this many rows and matmul(x, w, transpose_b=True) runs gemv (csrc/cuda/decode.cu)
GEMV_MAX_ROWS = 16


def gemv(x, w):
    """As numpy_kernels.gemv: x (M, K) @ w (N, K)^T -> (M, N), M <= GEMV_MAX_ROWS."""
    x, w = _f32("gemv x", x), _f32("gemv w", w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or not 1 <= x.shape[0] <= GEMV_MAX_ROWS:
        raise ValueError(f"gemv: expected x (M, K) with M <= {GEMV_MAX_ROWS} and w (N, K), got "
                         f"{x.shape} and {w.shape}")
    out = DeviceArray((x.shape[0], w.shape[0]))
    check(lib.gemv(x.ptr, w.ptr, out.ptr, x.shape[0], w.shape[0], x.shape[1]))
    return out

