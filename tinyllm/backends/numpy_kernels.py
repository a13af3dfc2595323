"""The reference kernels, in plain NumPy, written to be read.

Every kernel here is a plain function on arrays with explicit shapes. These
functions *define* what each kernel means: the C and CUDA backends must give
the same numbers (the parity tests check them against this file). Each forward
returns what its backward needs and sits right above it; each backward
returns the gradients of its inputs.

The fast kernels (tiled attention, BLAS matmul) each have a naive twin
beside them, matmul_naive and attention_naive: plain loops or the textbook
formula, THE definitions that the fast kernels of every backend must equal
(tests/test_naive_definitions.py checks that they do). The attention kernels
live in numpy_attention.py and are re-exported here with the rest.

Dimension letters: B batch, T time, C channels, V vocabulary, nh heads,
hs head size, N = B*T rows. Arrays keep the dtype they come in (float32 in
training, float64 in gradient checks).

This is not the autograd layer (that is tensor.py and ops.py, which call
these). Read gradcheck.py next: how each backward is proven right.
"""
import numpy as np

from tinyllm.backends.bits import bf16_bits, bf16_round, dropout_constants, dropout_keep  # noqa: F401
from tinyllm.backends.numpy_attention import (ATTN_TILE, attention_backward, attention_decode,  # noqa: F401
                                              attention_forward, attention_naive, kv_write,
                                              qkv_attention)

NAME = "numpy"

# ----------------------------------------------------------------------------
# matmul

def matmul(a, b, transpose_a=False, transpose_b=False):
    """(M, K) @ (K, N) -> (M, N), or batched (Bt, M, K) @ (Bt, K, N) -> (Bt, M, N).

    transpose_a / transpose_b use the last two axes of a / b transposed, which
    is what a Linear layer's backward needs (dW = dy^T x, dx = dy W).
    """
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def matmul_naive(a, b, transpose_a=False, transpose_b=False):
    """THE definition of matmul: out[i, j] = sum over k of a[i, k] * b[k, j], as loops.

    Same arguments and result as matmul (and the C and CUDA matmuls, whose
    tiles and vector lanes must add up to these sums); 3-D operands are a
    batch of independent products, (Bt, M, K) @ (Bt, K, N) -> (Bt, M, N).
    Pure Python, one multiply-add at a time: for tests on small sizes.
    """
    if a.ndim == 3:
        return np.stack([matmul_naive(a[i], b[i], transpose_a, transpose_b)
                         for i in range(a.shape[0])])            # (Bt, M, N)
    A = a.T if transpose_a else a                                 # (M, K)
    Bm = b.T if transpose_b else b                                # (K, N)
    M, K = A.shape
    N = Bm.shape[1]
    out = np.zeros((M, N), dtype=np.result_type(a, b))            # (M, N)
    for i in range(M):
        for j in range(N):
            acc = 0.0
            for k in range(K):
                acc += A[i, k] * Bm[k, j]
            out[i, j] = acc
    return out


def gemv(x, w):
    """x (M, K) @ w (N, K)^T -> (M, N) for a decoding step's M = 1..16 rows; the compiled twins
    stream each weight once, at memory bandwidth, instead of packing and tiling it (matmul)."""
    return np.matmul(x, w.T)


# ----------------------------------------------------------------------------
# the mixed-precision matmul of a `--dtype bf16` run (bits.py: the rounding)

def matmul_bf16(a, b, transpose_a=False, transpose_b=False):
    """matmul in mixed precision: a and b rounded to bfloat16, products summed in float32.

    A product of two bfloat16s (8 significant bits each) has at most 16 and is exact
    in float32, so this is the float32 matmul of the rounded operands; backends differ
    only in the order of the float32 sums. Relative to the float32 matmul each operand
    carries an error of up to 2^-8 of itself (the bfloat16 unit roundoff).
    """
    return matmul(bf16_round(a), bf16_round(b), transpose_a, transpose_b)


# ----------------------------------------------------------------------------
# causal self-attention, flash-style (numpy_attention.py), and its mixed-precision twins

def attention_forward_bf16(q, k, v, tile=None):
    """attention_forward of a `--dtype bf16` run: its products q k^T and p v by matmul_bf16
    (operands rounded to bfloat16, float32 sums); the online softmax stays float32, and p is
    rounded after its running sum has taken it (as FlashAttention-2 does in bf16)."""
    return attention_forward(q, k, v, tile, matmul_bf16)


def attention_backward_bf16(dout, q, k, v, out, lse, tile=None):
    """attention_backward with its five products by matmul_bf16; P, dS and D stay float32."""
    return attention_backward(dout, q, k, v, out, lse, tile, matmul_bf16)


# ----------------------------------------------------------------------------
# heads: the fused qkv projection's layout <-> the attention kernels' layout

def split_heads(x, n_parts, n_head):
    """x (B, T, P*nh*hs) holding P parts (q, k, v: P = 3) -> P arrays (B, nh, T, hs)."""
    B, T, width = x.shape
    hs = width // (n_parts * n_head)
    x = x.reshape(B, T, n_parts, n_head, hs)
    return [np.ascontiguousarray(x[:, :, p].transpose(0, 2, 1, 3)) for p in range(n_parts)]


def merge_heads(parts):
    """P arrays (B, nh, T, hs) -> (B, T, P*nh*hs): split_heads undone (and its backward)."""
    B, nh, T, hs = parts[0].shape
    return np.stack(parts, axis=2).transpose(0, 3, 2, 1, 4).reshape(B, T, len(parts) * nh * hs)


# attention on qkv (B, T, 3C) -> (B, T, C): the three above composed (numpy_attention.qkv_attention)
attention_qkv_forward, attention_qkv_backward = qkv_attention(
    split_heads, merge_heads, attention_forward, attention_backward)
attention_qkv_forward_bf16, attention_qkv_backward_bf16 = qkv_attention(
    split_heads, merge_heads, attention_forward_bf16, attention_backward_bf16)


# ----------------------------------------------------------------------------
# the residual add

def add_forward(a, b):
    """out = a + b for arrays of one shape (the residual stream); its backward is the identity."""
    return a + b


# ----------------------------------------------------------------------------
# softmax over the last axis

def softmax_forward(x):
    """y = exp(x - max) / sum(exp(x - max)), row-wise over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dy, y):
    """dx = y * (dy - sum(dy * y)): the softmax Jacobian applied row by row."""
    return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))


# ----------------------------------------------------------------------------
# RMSNorm: y = x / rms(x) * weight

def rmsnorm_forward(x, weight, eps=1e-5):
    """x: (..., C), weight: (C,) -> y (..., C) and rstd (...,) = 1/sqrt(mean(x^2) + eps)."""
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1) + eps)          # (...,)
    y = x * rstd[..., None] * weight                             # (..., C)
    return y, rstd.astype(x.dtype)


def rmsnorm_backward(dy, x, weight, rstd):
    """Returns dx (..., C) and dweight (C,)."""
    xhat = x * rstd[..., None]                                   # (..., C) the normalized input
    dweight = np.sum(dy * xhat, axis=tuple(range(dy.ndim - 1)))  # (C,)
    dxhat = dy * weight                                          # (..., C)
    # xhat = x * rstd and rstd depends on every x of the row
    dx = rstd[..., None] * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight


# ----------------------------------------------------------------------------
# LayerNorm: y = (x - mean) / std * weight + bias (the GPT-2 variant)

def layernorm_forward(x, weight, bias, eps=1e-5):
    """x: (..., C) -> y (..., C), mean (...,), rstd (...,)."""
    mean = x.mean(axis=-1)                                       # (...,)
    xc = x - mean[..., None]
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1) + eps)        # (...,)
    y = xc * rstd[..., None] * weight + bias
    return y, mean.astype(x.dtype), rstd.astype(x.dtype)


def layernorm_backward(dy, x, weight, mean, rstd):
    """Returns dx (..., C), dweight (C,), dbias (C,)."""
    lead = tuple(range(dy.ndim - 1))
    xhat = (x - mean[..., None]) * rstd[..., None]               # (..., C)
    dweight = np.sum(dy * xhat, axis=lead)
    dbias = np.sum(dy, axis=lead)
    dxhat = dy * weight
    dx = rstd[..., None] * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                            - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight, dbias


# ----------------------------------------------------------------------------
# one transformer block of a decoding step, as one kernel (the compiled twin is one C call)

def decode_block(x, weights, n_head, eps, k_cache, v_cache, start):
    """x (B, T, C) -> (B, T, C): what model.Block.forward computes for the new rows of a decoding
    step when the KV cache (B, nh, Tmax, hs) holds `start` earlier positions; their keys and
    values are written into k_cache, v_cache at [start, start + T). weights: ln_1 (C,), c_attn
    (3C, C), attn.c_proj (C, C), ln_2 (C,), mlp.c_fc (4C, C), mlp.c_proj (C, 4C); a Linear's is
    a float array or quantized blocks (tinyllm.quant.formats.Blocks: their .matmul is the
    int8-activation product that QuantLinear decodes with). The definition is this composition
    of the kernels above; csrc/decode_block.c calls their compiled twins in the same order."""
    ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj = weights
    B, T, C = x.shape
    rows = x.reshape(B * T, C)                                           # (M, C)
    qkv = _product(rmsnorm_forward(rows, ln_1, eps)[0], c_attn)          # (M, 3C)
    q, k, v = split_heads(qkv.reshape(B, T, 3 * C), 3, n_head)           # (B, nh, T, hs) each
    kv_write(k_cache, k, start)
    kv_write(v_cache, v, start)
    att = merge_heads([attention_decode(q, k_cache, v_cache, start + T)])   # (B, T, C)
    rows = add_forward(rows, _product(att.reshape(B * T, C), attn_proj))    # (M, C)
    hidden = silu_forward(_product(rmsnorm_forward(rows, ln_2, eps)[0], c_fc))   # (M, 4C)
    return add_forward(rows, _product(hidden, mlp_proj)).reshape(B, T, C)


def decode_step(x, weights, n_head, eps, k_caches, v_caches, start):
    """x (B, T, C), the embedded new rows of a decoding step -> the logits (B, V) of each row's
    last position: every block as decode_block (block l: weights[0][l], k_caches[l],
    v_caches[l]), then ln_f (C,) and the lm_head (V, C): weights is (blocks, ln_f, lm_head).
    The definition is this composition; csrc/decode_block.c's decode_step is its compiled twin."""
    blocks, ln_f, head = weights
    for w, k, v in zip(blocks, k_caches, v_caches):
        x = decode_block(x, w, n_head, eps, k, v, start)                 # (B, T, C)
    last = np.ascontiguousarray(x[:, -1, :])                             # (B, C)
    return _product(rmsnorm_forward(last, ln_f, eps)[0], head)           # (B, V)


def decode_step_weights(weights):
    """decode_step's weights as it takes them: the same tuple, as decode_weights."""
    return tuple(weights)


def decode_weights(weights):
    """decode_block's weights as it takes them: here the same tuple (the C backend converts
    them once into pointers)."""
    return tuple(weights)


def _product(x, w):
    """x (M, K) @ W^T -> (M, N): gemv for a float W (N, K), else W's own (quantized) product."""
    return gemv(x, w) if isinstance(w, np.ndarray) else w.matmul(x)


# ----------------------------------------------------------------------------
# SiLU: y = x * sigmoid(x)

def _sigmoid(x):
    # the tanh form never overflows, unlike 1 / (1 + exp(-x)) for very negative x
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def silu_forward(x):
    return x * _sigmoid(x)


def silu_backward(dy, x):
    s = _sigmoid(x)
    return dy * s * (1.0 + x * (1.0 - s))


# ----------------------------------------------------------------------------
# dropout: the mask is a hash of (seed, element index) (bits.py), so every backend
# draws the same mask, and the backward rebuilds it from the seed instead of storing it

def dropout(x, p, seed):
    """x with each element zeroed with probability p and the rest scaled by 1/(1-p).

    Its own backward: the gradient of dropout(x, p, seed) is dropout(dy, p, seed).
    """
    scale, threshold = dropout_constants(p)
    keep = dropout_keep(x.size, seed, threshold).reshape(x.shape)
    return np.where(keep, x * x.dtype.type(scale), x.dtype.type(0))


# ----------------------------------------------------------------------------
# embedding: row lookup, and its scatter-add backward

def embedding_forward(ids, weight):
    """ids: (...) integers in [0, V), weight: (V, C) -> (..., C)."""
    return weight[ids]


def embedding_backward(dout, ids, vocab_size):
    """dweight (V, C): each row of dout added to the row of its id (ids may repeat)."""
    C = dout.shape[-1]
    dweight = np.zeros((vocab_size, C), dtype=dout.dtype)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, C))
    return dweight


# ----------------------------------------------------------------------------
# cross-entropy over logits, mean over the positions whose target is not -1

def cross_entropy_forward(logits, targets):
    """logits: (N, V), targets: (N,) ints, -1 = ignore.

    Returns loss (a 0-d array: the mean of -log softmax(logits)[target] over
    kept rows, 0 when no row is kept) and lse (N,), each row's log-sum-exp.
    """
    m = logits.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(logits - m), axis=-1, keepdims=True)))[:, 0]  # (N,)
    kept = targets != -1                                                           # (N,)
    picked = logits[np.nonzero(kept)[0], targets[kept]]                            # (n_kept,)
    n_kept = max(int(kept.sum()), 1)
    loss = np.sum(lse[kept] - picked) / n_kept
    return np.asarray(loss, dtype=logits.dtype), lse


def cross_entropy_backward(dloss, logits, targets, lse):
    """dlogits (N, V) = (softmax(logits) - onehot(target)) * dloss / n_kept; 0 on ignored rows."""
    kept = targets != -1
    n_kept = max(int(kept.sum()), 1)
    dlogits = np.exp(logits - lse[:, None])                      # (N, V) softmax
    rows = np.nonzero(kept)[0]
    dlogits[rows, targets[kept]] -= 1.0
    dlogits[~kept] = 0.0
    dlogits *= dloss / n_kept
    return dlogits


# ----------------------------------------------------------------------------
# AdamW, in place

def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step on param, m and v in place (step counts from 1).

    Decoupled weight decay as in Loshchilov & Hutter: the decay shrinks the
    parameter directly (param *= 1 - lr * wd) instead of entering the gradient.
    """
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = v / (1.0 - beta2 ** step)
    param *= 1.0 - lr * weight_decay
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


# ----------------------------------------------------------------------------
# what the training loop needs besides: arrays in, gradient norms, the KV cache

def asarray(a):
    """A host array as this backend's array type (Module.to moves parameters with it)."""
    return np.asarray(a)


def sum_of_squares(arrays, step=1 << 18):
    """Sum of x*x over the arrays in float64, `step` elements at a time (a whole float64 square
    of the embedding's grad was a step's peak); np.square, as np.dot would wake OpenBLAS's threads."""
    return float(sum(np.square(a.reshape(-1)[i:i + step], dtype=np.float64).sum()
                     for a in arrays for i in range(0, a.size, step)))


empty = np.empty   # empty(shape, dtype): an uninitialized array (the KV cache's buffers)
