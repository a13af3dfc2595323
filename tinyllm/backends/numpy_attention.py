"""The reference attention kernels: causal self-attention, flash-style, in plain NumPy.

Part of numpy_kernels (which re-exports every name here; the backends are called through it):
attention_naive, the textbook definition; attention_forward / attention_backward, the same
sums tile by tile with an online softmax, as the C and CUDA kernels compute them; and the KV
cache's attention_decode and kv_write. Every product of the tiled kernels goes through one
matmul argument `mm`, (a, b) -> a @ b: NumPy's by default, numpy_kernels.matmul_bf16 for the
mixed-precision twins attention_forward_bf16 / attention_backward_bf16 defined there.

qkv_attention builds a backend's attention_qkv_forward / attention_qkv_backward, the same
attention on the fused projection's layout (split, attend, merge), from its kernels.

Not here: the heads' layout itself (split_heads, merge_heads) and the autograd op (ops.py,
causal_self_attention). Read csrc/attention.c next, the C kernel that must equal these.
"""
import math

import numpy as np

# Query and key tile length of the attention kernels. The scores of one tile
# pair are (B, nh, TILE, TILE), so memory grows with T, not T^2.
ATTN_TILE = 128


def _causal_scores(q_tile, k_tile, q_pos, k_pos, scale, mm):
    """Scaled scores of one (query tile, key tile) pair, -inf where the key is in the future."""
    s = mm(q_tile, np.swapaxes(k_tile, -1, -2)) * scale          # (B, nh, tq, tk)
    visible = k_pos[None, :] <= q_pos[:, None]                    # (tq, tk)
    return np.where(visible, s, -np.inf)


def _tiles(T, tile):
    return [(t0, min(t0 + tile, T)) for t0 in range(0, T, tile)]


def attention_naive(q, k, v):
    """THE definition of attention_forward: the textbook masked softmax, whole matrices.

    S = q k^T / sqrt(hs), -inf where key j is in query i's future (query i
    sits at position Tk - Tq + i, as in attention_forward), P = softmax(S)
    row by row, out = P v; lse = log(sum_j exp(S_ij)). Same arguments and
    results as attention_forward, whose tiles and online softmax (and the C
    and CUDA kernels') must equal this. Builds the (Tq, Tk) matrix that the
    fast kernels never store: for tests on small sizes.
    """
    Tq, Tk, hs = q.shape[2], k.shape[2], q.shape[3]
    s = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(hs)     # (B, nh, Tq, Tk)
    q_pos = np.arange(Tk - Tq, Tk)                                # (Tq,)
    s = np.where(np.arange(Tk)[None, :] <= q_pos[:, None], s, -np.inf)
    m = s.max(axis=-1, keepdims=True)                             # (B, nh, Tq, 1) finite: key 0
    lse = m[..., 0] + np.log(np.exp(s - m).sum(axis=-1))          # (B, nh, Tq)
    p = np.exp(s - lse[..., None])                                # (B, nh, Tq, Tk) softmax rows
    return np.matmul(p, v), lse                                   # (B, nh, Tq, hs), (B, nh, Tq)


def attention_forward(q, k, v, tile=None, mm=np.matmul):
    """Causal attention with online softmax over key tiles.

    q: (B, nh, Tq, hs); k, v: (B, nh, Tk, hs) with Tk >= Tq. Query i sits at
    position Tk - Tq + i, so Tq == Tk is ordinary causal attention and Tq < Tk
    is decoding with a KV cache (the queries are the newest positions).
    Returns out (B, nh, Tq, hs) and lse (B, nh, Tq), the log-sum-exp of each
    query's scores, which is all the backward needs to rebuild the softmax.
    mm multiplies the scores' q k^T and the weighted sum's p v (the module docstring).
    """
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2]
    tile = tile or ATTN_TILE
    scale = 1.0 / math.sqrt(hs)
    offset = Tk - Tq
    out = np.empty_like(q)                                        # (B, nh, Tq, hs)
    lse = np.empty((B, nh, Tq), dtype=q.dtype)                    # (B, nh, Tq)
    for q0, q1 in _tiles(Tq, tile):
        q_pos = np.arange(q0, q1) + offset                        # (tq,)
        m = np.full((B, nh, q1 - q0, 1), -np.inf, dtype=q.dtype)  # running row max
        l = np.zeros((B, nh, q1 - q0, 1), dtype=q.dtype)          # running sum of exp(s - m)
        acc = np.zeros((B, nh, q1 - q0, hs), dtype=q.dtype)       # running sum of exp(s - m) v
        for k0, k1 in _tiles(q_pos[-1] + 1, tile):                # key tiles up to the diagonal
            s = _causal_scores(q[:, :, q0:q1], k[:, :, k0:k1],
                               q_pos, np.arange(k0, k1), scale, mm)   # (B, nh, tq, tk)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # finite: key 0 is always visible
            correction = np.exp(m - m_new)                        # rescale what was summed so far
            p = np.exp(s - m_new)                                 # (B, nh, tq, tk)
            l = l * correction + p.sum(axis=-1, keepdims=True)
            acc = acc * correction + mm(p, v[:, :, k0:k1])
            m = m_new
        out[:, :, q0:q1] = acc / l
        lse[:, :, q0:q1] = (m + np.log(l))[..., 0]
    return out, lse


def attention_backward(dout, q, k, v, out, lse, tile=None, mm=np.matmul):
    """Gradients of attention_forward, recomputing the probabilities tile by tile.

    With P = softmax(S) rebuilt as exp(S - lse) and D = rowsum(dout * out):
    dV = P^T dout, dP = dout V^T, dS = P * (dP - D), dQ = dS K * scale,
    dK = dS^T Q * scale (FlashAttention-2's backward); mm multiplies all five products.
    """
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2]
    tile = tile or ATTN_TILE
    scale = 1.0 / math.sqrt(hs)
    offset = Tk - Tq
    dq = np.zeros_like(q)                                         # (B, nh, Tq, hs)
    dk = np.zeros_like(k)                                         # (B, nh, Tk, hs)
    dv = np.zeros_like(v)                                         # (B, nh, Tk, hs)
    D = np.sum(dout * out, axis=-1, keepdims=True)                # (B, nh, Tq, 1)
    for q0, q1 in _tiles(Tq, tile):
        q_pos = np.arange(q0, q1) + offset
        for k0, k1 in _tiles(q_pos[-1] + 1, tile):
            s = _causal_scores(q[:, :, q0:q1], k[:, :, k0:k1],
                               q_pos, np.arange(k0, k1), scale, mm)   # (B, nh, tq, tk)
            p = np.exp(s - lse[:, :, q0:q1, None])                # (B, nh, tq, tk)
            dv[:, :, k0:k1] += mm(np.swapaxes(p, -1, -2), dout[:, :, q0:q1])
            dp = mm(dout[:, :, q0:q1], np.swapaxes(v[:, :, k0:k1], -1, -2))
            ds = p * (dp - D[:, :, q0:q1]) * scale                # (B, nh, tq, tk)
            dq[:, :, q0:q1] += mm(ds, k[:, :, k0:k1])
            dk[:, :, k0:k1] += mm(np.swapaxes(ds, -1, -2), q[:, :, q0:q1])
    return dq, dk, dv


def attention_decode(q, k_cache, v_cache, Tk):
    """attention_forward's out for the Tq newest queries q (B, nh, Tq, hs), query i at position
    Tk - Tq + i, against a KV cache (B, nh, Tmax, hs) filled up to Tk (Tq <= Tk <= Tmax), which
    the compiled twins read in place. No lse: decoding has no backward."""
    return attention_forward(q, k_cache[:, :, :Tk], v_cache[:, :, :Tk])[0]


def kv_write(cache, x, start):
    """cache (B, nh, Tmax, hs)[:, :, start:start + T] = x (B, nh, T, hs), in place."""
    cache[:, :, start:start + x.shape[2]] = x


def qkv_attention(split_heads, merge_heads, forward, backward):
    """A backend's attention_qkv_forward and attention_qkv_backward, from its split_heads,
    merge_heads and attention kernels: causal self-attention of qkv (B, T, 3C), the fused
    projection's output, -> out (B, T, C), and its backward -> dqkv (B, T, 3C). This is their
    definition; C's attention_qkv_* compute it reading q, k, v in place, without the copies."""
    def attention_qkv_forward(qkv, n_head):
        q, k, v = split_heads(qkv, 3, n_head)                     # (B, nh, T, hs) each
        out, lse = forward(q, k, v)                               # (B, nh, T, hs), (B, nh, T)
        return merge_heads([out]), lse                            # (B, T, C), (B, nh, T)

    def attention_qkv_backward(dout, qkv, out, lse, n_head):
        (dout,) = split_heads(dout, 1, n_head)                    # (B, nh, T, hs)
        q, k, v = split_heads(qkv, 3, n_head)                     # (B, nh, T, hs) each
        (out,) = split_heads(out, 1, n_head)                      # (B, nh, T, hs)
        return merge_heads(list(backward(dout, q, k, v, out, lse)))   # (B, T, 3C)
    return attention_qkv_forward, attention_qkv_backward
