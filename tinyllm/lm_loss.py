"""The language-model head and its loss as one op: logits = x W^T, then their cross-entropy.

    logits, loss = linear_cross_entropy(h, lm_head.weight, targets)   # GPT.forward with targets
    _, loss = linear_cross_entropy(h, lm_head.weight, targets, return_logits=False)   # the Trainer's

The same numbers as ops.linear followed by ops.cross_entropy, and the logits
are the ordinary `linear` output (a caller may backpropagate through them).
What differs is a frozen W (LoRA, or a head left as pretrained): no gradient
of W is wanted, so nothing needs the whole (N, V) logits or their gradient
at once. The loss's backward then goes ROW_ELEMENTS // V rows at a time: that
chunk's dlogits, then its rows of dx = dlogits W. With return_logits False
(a training step, which never reads them) the forward goes by chunks too:
each chunk's logits, its loss and, at once, its rows of dx (dx is linear in
the loss's gradient g, so the backward only scales it by g). No (N, V) array
is then made at all: at batch 1 of the bench preset the logits were 8 MB of a
LoRA step's 121 MB traced peak (BENCHMARKS.md, "Fine-tuning: LoRA vs full").
With W trained, it is ops.cross_entropy's backward: a chunked dW would need a
(V, C) sum per chunk, more than it saves. On the CUDA backend, whose arrays
are not sliced here, it is ops.cross_entropy's too.

Not here: the kernels (backends/), the model (model.py). Read model.py next.
"""
import numpy as np

from tinyllm import ops
from tinyllm.backends import get_backend
from tinyllm.tensor import Tensor, is_device_array

ROW_ELEMENTS = 1 << 18   # logits elements per chunk of the frozen head's loss (1 MB)


def linear_cross_entropy(x, weight, targets, dtype="fp32", return_logits=True):
    """(logits (..., V), or None when not return_logits, and the mean cross-entropy against
    targets (...), -1 = ignore) of x (..., C) and W (V, C); a frozen W goes a chunk of rows at a time."""
    frozen = not weight.requires_grad and x.requires_grad and not is_device_array(x.data)
    if frozen and not return_logits:
        return None, _frozen_head_loss(x, weight, targets, dtype)
    logits = ops.linear(x, weight, None, dtype)                          # (..., V)
    if not frozen:
        return (logits if return_logits else None), ops.cross_entropy(logits, targets)
    t = ops.check_targets(logits, targets).reshape(-1)                   # (N,)
    l2 = logits.data.reshape(-1, weight.shape[0])                        # (N, V)
    loss, lse = get_backend().cross_entropy_forward(l2, t)

    def backward(g):
        # forward: loss = cross_entropy(l2, t), l2 = x W^T; so dx = dl2 W, one chunk of rows at a time
        dx, _ = _chunks(x.data.reshape(-1, x.shape[-1]), weight, t, dtype, g, l2, lse)
        return (dx.reshape(x.shape),)
    return logits, Tensor.from_op(loss, (x,), backward, "linear_cross_entropy")


def _frozen_head_loss(x, weight, targets, dtype):
    """The loss of x W^T against targets, and (for g = 1) its dx, by chunks: no (N, V) array kept."""
    shape = x.shape[:-1] + (weight.shape[0],)                            # (..., V)
    t = ops.check_targets(np.broadcast_to(np.zeros((), x.dtype), shape), targets).reshape(-1)  # (N,)
    dx, loss = _chunks(x.data.reshape(-1, x.shape[-1]), weight, t, dtype, np.ones((), x.dtype))
    # forward: loss = cross_entropy(x W^T, t); its dx, made above for g = 1, is linear in g
    return Tensor.from_op(np.asarray(loss, x.dtype), (x,), lambda g: ((dx * g).reshape(x.shape),),
                          "linear_cross_entropy")


def _chunks(x2, weight, t, dtype, g, l2=None, lse=None):
    """(dx (N, C) = g dloss/dx, the mean loss) of cross_entropy(x2 W^T, t), ROW_ELEMENTS // V rows at
    a time: from the kept logits l2 (N, V) and their lse, or (l2 None) each chunk's logits made now.
    The kernels divide by their chunk's kept rows; g scaled by the chunk's share undoes it."""
    kernels = get_backend()
    mm = kernels.matmul_bf16 if dtype == "bf16" else kernels.matmul
    n_kept = max(int(np.sum(t != -1)), 1)
    rows = max(1, ROW_ELEMENTS // weight.shape[0])
    dx = np.empty((x2.shape[0], weight.shape[1]), x2.dtype)              # (N, C)
    total = 0.0
    for i in range(0, x2.shape[0], rows):
        chunk = slice(i, i + rows)
        kept = int(np.sum(t[chunk] != -1))
        if l2 is None:
            logits = mm(x2[chunk], weight.data, transpose_b=True)        # (rows, V)
            loss, chunk_lse = kernels.cross_entropy_forward(logits, t[chunk])
            total += float(loss) * kept                                  # the chunk's mean, back to a sum
        else:
            logits, chunk_lse = l2[chunk], lse[chunk]
        dl = kernels.cross_entropy_backward(g * (max(kept, 1) / n_kept), logits, t[chunk], chunk_lse)
        dx[chunk] = mm(dl, weight.data)                                  # (rows, C)
    return dx, total / n_kept
