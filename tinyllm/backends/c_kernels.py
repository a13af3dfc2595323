"""The "c" backend: cffi binding to the OpenMP kernels in csrc/, built by `make`.

cffi ABI mode: `make` compiles csrc/*.c into tinyllm/backends/libtinyllm.so
(-O3 -march=native -fopenmp) and copies csrc/tinyllm.h beside it; c_library.py hands
that header to cffi as the cdef, opens the library and holds the argument checks. ABI mode keeps the build a
plain compiler call (`make CFLAGS=...`, `make DEBUG=1`, `make sanitize`), with no
Python-version-specific extension module; a call costs about a microsecond more.

Every wrapper has the signature and the meaning of its twin in numpy_kernels.py,
checks dtype, shape, contiguity and alignment before it calls into C (C never sees
a bad buffer), and allocates its outputs; adamw_update, the one kernel that updates
arrays in place, also checks they are writable. Kernels the C library does not
implement (layernorm, used only by a model variant, dropout and the KV cache's
writes) are NumPy's, re-exported at the bottom, as are a decoding step's fused calls
(c_decode.py). TINYLLM_LIB names another build of the library (the sanitizer build uses it).
"""

import numpy as np

from tinyllm.backends import numpy_kernels as _reference
from tinyllm.backends.c_paths import (BF16_PATH, BF16_PATHS, DECODE_PATH, DECODE_PATHS,  # noqa: F401
                                      FEATURES, GEMV_MAX_ROWS, QUANT_PATHS, _bf16_bits,
                                      _decode_bits, bf16_path, decode_path, describe_cpu)
from tinyllm.backends.c_library import (HEADER_PATH, LIB_PATH, _contiguous, _f32, _ids, _p,  # noqa: F401
                                        _pi, _writable, check_available, ffi, lib)
from tinyllm.backends.checks import (attention_sizes, matmul_sizes, merge_sizes, qkv_sizes,
                                     rows, shape as _shape, split_sizes)

NAME = "c"


# ----------------------------------------------------------------------------
# matmul

def matmul(a, b, transpose_a=False, transpose_b=False):
    """As numpy_kernels.matmul; 2-D @ 2-D and equal-batch 3-D @ 3-D run in C, others in NumPy."""
    a, b = _f32("matmul a", a), _f32("matmul b", b)
    sizes = matmul_sizes(a, b, transpose_a, transpose_b)
    if sizes is None:
        return _reference.matmul(a, b, transpose_a, transpose_b)   # broadcasting: generic path
    batch, M, N, K = sizes
    if a.ndim == 2 and transpose_b and not transpose_a and M <= GEMV_MAX_ROWS:
        return gemv(a, b)                                          # a decoding step's Linear
    out = np.empty(a.shape[:-2] + (M, N), np.float32)
    lib.matmul(_p(a), _p(b), _p(out), batch, M, N, K, int(transpose_a), int(transpose_b))
    return out


def gemv(x, w, path=None):
    """As numpy_kernels.gemv: x (M, K) @ w (N, K)^T -> (M, N), on `path` (a DECODE_PATHS name)."""
    x, w = _f32("gemv x", x), _f32("gemv w", w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"gemv: expected x (M, K) and w (N, K), got {x.shape} and {w.shape}")
    (M, K), N = x.shape, w.shape[0]
    out = np.empty((M, N), np.float32)
    lib.gemv(_p(x), _p(w), _p(out), M, N, K, _decode_bits(path))
    return out


def matmul_bf16(a, b, transpose_a=False, transpose_b=False, path=None):
    """As numpy_kernels.matmul_bf16, on `path` (a BF16_PATHS name; default BF16_PATH)."""
    a, b = _f32("matmul_bf16 a", a), _f32("matmul_bf16 b", b)
    sizes = matmul_sizes(a, b, transpose_a, transpose_b)
    if sizes is None:
        return _reference.matmul_bf16(a, b, transpose_a, transpose_b)
    batch, M, N, K = sizes
    out = np.empty(a.shape[:-2] + (M, N), np.float32)
    lib.matmul_bf16(_p(a), _p(b), _p(out), batch, M, N, K, int(transpose_a), int(transpose_b),
                    _bf16_bits(path))
    return out


def bf16_bits(x):
    """As numpy_kernels.bf16_bits (the C rounding, exposed for the bit-for-bit test)."""
    x = _f32("bf16_bits x", x)
    y = np.empty(x.shape, np.uint16)
    lib.f32_to_bf16(_p(x), ffi.cast("uint16_t *", y.ctypes.data), x.size)
    return y


# ----------------------------------------------------------------------------
# attention

def attention_forward(q, k, v, _bf16=None):
    """As numpy_kernels.attention_forward; _bf16 (a path bit): attention_forward_bf16."""
    q, k, v = _f32("attention q", q), _f32("attention k", k), _f32("attention v", v)
    B, nh, Tq, Tk, hs = attention_sizes(q, k, v)
    out = np.empty_like(q)                                        # (B, nh, Tq, hs)
    lse = np.empty((B, nh, Tq), np.float32)                       # (B, nh, Tq)
    args = (_p(q), _p(k), _p(v), _p(out), _p(lse), B, nh, Tq, Tk, hs)
    lib.attention_forward(*args) if _bf16 is None else lib.attention_forward_bf16(*args, _bf16)
    return out, lse


def attention_forward_bf16(q, k, v, path=None):
    """As numpy_kernels.attention_forward_bf16, on `path` (as matmul_bf16's)."""
    return attention_forward(q, k, v, _bf16_bits(path))


def attention_decode(q, k_cache, v_cache, Tk, path=None):
    """As numpy_kernels.attention_decode, on `path`: the cache is read in place, never copied."""
    q = _f32("attention_decode q", q)
    k_cache, v_cache = _f32("attention_decode k_cache", k_cache), _f32("attention_decode v_cache", v_cache)
    if q.ndim != 4:
        raise ValueError(f"attention_decode: q must be (B, nh, Tq, hs), got shape {q.shape}")
    B, nh, Tq, hs = q.shape
    Tmax = k_cache.shape[2] if k_cache.ndim == 4 else -1
    _shape("attention_decode k_cache", k_cache, (B, nh, Tmax, hs))
    _shape("attention_decode v_cache", v_cache, (B, nh, Tmax, hs))
    if not 1 <= Tq <= Tk <= Tmax:
        raise ValueError(f"attention_decode: need 1 <= Tq={Tq} <= Tk={Tk} <= cache length {Tmax}")
    out = np.empty_like(q)                                        # (B, nh, Tq, hs)
    lib.attention_decode(_p(q), _p(k_cache), _p(v_cache), _p(out), B, nh, Tq, Tk, Tmax, hs,
                         _decode_bits(path))
    return out


def attention_backward(dout, q, k, v, out, lse, _bf16=None):
    """As numpy_kernels.attention_backward; _bf16 (a path bit): attention_backward_bf16."""
    dout, q, k, v = (_f32(f"attention_backward {n}", x) for n, x in
                     (("dout", dout), ("q", q), ("k", k), ("v", v)))
    out, lse = _f32("attention_backward out", out), _f32("attention_backward lse", lse)
    B, nh, Tq, Tk, hs = attention_sizes(q, k, v, dout, out, lse)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    args = (_p(dout), _p(q), _p(k), _p(v), _p(out), _p(lse), _p(dq), _p(dk), _p(dv),
            B, nh, Tq, Tk, hs)
    lib.attention_backward(*args) if _bf16 is None else lib.attention_backward_bf16(*args, _bf16)
    return dq, dk, dv


def attention_backward_bf16(dout, q, k, v, out, lse, path=None):
    return attention_backward(dout, q, k, v, out, lse, _bf16_bits(path))


def attention_qkv_forward(qkv, n_head, _bf16=0):
    """As numpy_kernels.attention_qkv_forward: q, k, v read in place from qkv, the output
    written merged; _bf16 (a path bit, 0 float32): attention_qkv_forward_bf16."""
    qkv = _f32("attention_qkv qkv", np.ascontiguousarray(qkv))
    B, T, hs = qkv_sizes(qkv, n_head)
    out = np.empty((B, T, n_head * hs), np.float32)               # (B, T, C)
    lse = np.empty((B, n_head, T), np.float32)                    # (B, nh, T)
    lib.attention_qkv_forward(_p(qkv), _p(out), _p(lse), B, T, n_head, hs, _bf16)
    return out, lse


def attention_qkv_forward_bf16(qkv, n_head, path=None):
    """As numpy_kernels.attention_qkv_forward_bf16, on `path` (as matmul_bf16's)."""
    return attention_qkv_forward(qkv, n_head, _bf16_bits(path))


def attention_qkv_backward(dout, qkv, out, lse, n_head, _bf16=0):
    """As numpy_kernels.attention_qkv_backward: dqkv (B, T, 3C) written in place of the heads."""
    dout, qkv, out, lse = (_f32(f"attention_qkv_backward {n}", np.ascontiguousarray(x)) for n, x in
                           (("dout", dout), ("qkv", qkv), ("out", out), ("lse", lse)))
    B, T, hs = qkv_sizes(qkv, n_head, dout, out, lse)
    dqkv = np.empty_like(qkv)                                     # (B, T, 3C)
    lib.attention_qkv_backward(_p(dout), _p(qkv), _p(out), _p(lse), _p(dqkv), B, T, n_head, hs,
                               _bf16)
    return dqkv


def attention_qkv_backward_bf16(dout, qkv, out, lse, n_head, path=None):
    return attention_qkv_backward(dout, qkv, out, lse, n_head, _bf16_bits(path))


def split_heads(x, n_parts, n_head):
    """As numpy_kernels.split_heads (csrc/heads.c: one copy per part, in parallel)."""
    x = _f32("split_heads x", np.ascontiguousarray(x))
    B, T, hs = split_sizes(x, n_parts, n_head)
    parts = np.empty((n_parts, B, n_head, T, hs), np.float32)     # (P, B, nh, T, hs)
    for p in range(n_parts):
        lib.split_heads(_p(x), _p(parts[p]), B, T, n_parts, p, n_head, hs)
    return list(parts)


def merge_heads(parts):
    """As numpy_kernels.merge_heads (csrc/heads.c)."""
    parts = [_f32("merge_heads part", np.ascontiguousarray(x)) for x in parts]
    B, nh, T, hs = merge_sizes(parts)
    out = np.empty((B, T, len(parts) * nh * hs), np.float32)     # (B, T, P*nh*hs)
    for p, x in enumerate(parts):
        lib.merge_heads(_p(x), _p(out), B, T, len(parts), p, nh, hs)
    return out


# ----------------------------------------------------------------------------
# softmax, rmsnorm, silu: row-wise or elementwise over the last axis

def softmax_forward(x):
    x = _f32("softmax x", x)
    y = np.empty_like(x)
    lib.softmax_forward(_p(x), _p(y), *rows(x))
    return y


def softmax_backward(dy, y):
    dy, y = _f32("softmax_backward dy", dy), _f32("softmax_backward y", y)
    _shape("softmax_backward dy", dy, y.shape)
    dx = np.empty_like(y)
    lib.softmax_backward(_p(dy), _p(y), _p(dx), *rows(y))
    return dx


def rmsnorm_forward(x, weight, eps=1e-5):
    x, weight = _f32("rmsnorm x", x), _f32("rmsnorm weight", weight)
    C = x.shape[-1]
    _shape("rmsnorm weight", weight, (C,))
    y = np.empty_like(x)                                          # (..., C)
    rstd = np.empty(x.shape[:-1], np.float32)                     # (...,)
    lib.rmsnorm_forward(_p(x), _p(weight), _p(y), _p(rstd), rstd.size, C, eps)
    return y, rstd


def rmsnorm_backward(dy, x, weight, rstd):
    dy, x = _f32("rmsnorm_backward dy", dy), _f32("rmsnorm_backward x", x)
    weight, rstd = _f32("rmsnorm_backward weight", weight), _f32("rmsnorm_backward rstd", rstd)
    C = x.shape[-1]
    _shape("rmsnorm_backward dy", dy, x.shape)
    _shape("rmsnorm_backward rstd", rstd, x.shape[:-1])
    dx, dweight = np.empty_like(x), np.empty(C, np.float32)
    lib.rmsnorm_backward(_p(dy), _p(x), _p(weight), _p(rstd), _p(dx), _p(dweight), rstd.size, C)
    return dx, dweight


def silu_forward(x):
    x = _f32("silu x", x)
    y = np.empty_like(x)
    lib.silu_forward(_p(x), _p(y), x.size)
    return y


def silu_backward(dy, x):
    dy, x = _f32("silu_backward dy", dy), _f32("silu_backward x", x)
    _shape("silu_backward dy", dy, x.shape)
    dx = np.empty_like(x)
    lib.silu_backward(_p(dy), _p(x), _p(dx), x.size)
    return dx


# ----------------------------------------------------------------------------
# embedding and cross-entropy: integer ids, range-checked here so C can trust them

def embedding_forward(ids, weight):
    weight = _f32("embedding weight", weight)
    V, C = weight.shape
    ids64 = _ids("embedding", ids, 0, V)
    out = np.empty(ids64.shape + (C,), np.float32)                # (..., C)
    lib.embedding_forward(_pi(ids64), _p(weight), _p(out), ids64.size, V, C)
    return out


def embedding_backward(dout, ids, vocab_size):
    dout = _f32("embedding_backward dout", dout)
    ids64 = _ids("embedding_backward", ids, 0, vocab_size)
    C = dout.shape[-1]
    _shape("embedding_backward dout", dout, ids64.shape + (C,))
    dweight = np.empty((vocab_size, C), np.float32)
    lib.embedding_backward(_p(dout), _pi(ids64), _p(dweight), ids64.size, vocab_size, C)
    return dweight


def cross_entropy_forward(logits, targets):
    logits = _f32("cross_entropy logits", logits)
    N, V = logits.shape
    t = _ids("cross_entropy target", targets, -1, V)
    _shape("cross_entropy targets", t, (N,))
    lse = np.empty(N, np.float32)
    loss = lib.cross_entropy_forward(_p(logits), _pi(t), _p(lse), N, V)
    return np.asarray(loss, dtype=np.float32), lse


def cross_entropy_backward(dloss, logits, targets, lse):
    logits, lse = _f32("cross_entropy_backward logits", logits), _f32("cross_entropy_backward lse", lse)
    N, V = logits.shape
    t = _ids("cross_entropy_backward target", targets, -1, V)
    _shape("cross_entropy_backward targets", t, (N,))
    _shape("cross_entropy_backward lse", lse, (N,))
    dlogits = np.empty_like(logits)
    lib.cross_entropy_backward(float(dloss), _p(logits), _pi(t), _p(lse), _p(dlogits), N, V)
    return dlogits


# ----------------------------------------------------------------------------
# the residual add and the optimizer

def add_forward(a, b):
    # generic code may add transposed views; the kernel walks flat memory
    a, b = (_f32(f"add {n}", np.ascontiguousarray(x)) for n, x in (("a", a), ("b", b)))
    _shape("add b", b, a.shape)
    out = np.empty_like(a)
    lib.add_forward(_p(a), _p(b), _p(out), a.size)
    return out


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    param, grad = _writable("adamw param", _f32("adamw param", param)), _f32("adamw grad", grad)
    m, v = (_writable(f"adamw {n}", _f32(f"adamw {n}", x)) for n, x in (("m", m), ("v", v)))
    for name, x in (("grad", grad), ("m", m), ("v", v)):
        _shape(f"adamw {name}", x, param.shape)
    lib.adamw_update(_p(param), _p(grad), _p(m), _p(v), param.size, lr, beta1, beta2, eps,
                     weight_decay, int(step))


def sum_of_squares(arrays):
    """As numpy_kernels.sum_of_squares: a float64 sum over float32 arrays (csrc/adamw.c)."""
    arrays = [_f32("sum_of_squares array", np.ascontiguousarray(a)) for a in arrays]
    return float(sum(lib.sum_of_squares(_p(a), a.size) for a in arrays))


def num_threads():
    return lib.num_threads()


# what has no C version runs in NumPy: a model variant's layernorm, and the memory-bound
# dropout and KV-cache writes, which NumPy runs near memory speed
layernorm_forward, layernorm_backward = _reference.layernorm_forward, _reference.layernorm_backward
dropout = _reference.dropout
asarray = _reference.asarray
empty, kv_write = _reference.empty, _reference.kv_write

# a decoding step's fused calls, in their own file
from tinyllm.backends.c_decode import (decode_block, decode_step, decode_step_weights,  # noqa: E402,F401
                                       decode_weights)
