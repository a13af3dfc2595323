"""The language-model head and its loss as one op: logits = x W^T, then their cross-entropy.

    logits, loss = linear_cross_entropy(h, lm_head.weight, targets)   # GPT.forward with targets

The same numbers as ops.linear followed by ops.cross_entropy, and the logits
are the ordinary `linear` output (a caller may backpropagate through them).
What differs is the loss's backward when W is frozen (LoRA, or a head left
as pretrained): no gradient of W is wanted, so nothing needs the whole
(N, V) gradient of the logits at once. It goes ROW_ELEMENTS // V rows at a
time: that chunk's dlogits, then its rows of dx = dlogits W. At batch 1 of
the bench preset the whole dlogits was 8 MB of a LoRA step's 127 MB traced
peak (BENCHMARKS.md, "Fine-tuning: LoRA vs full"). With W trained, the
backward is ops.cross_entropy's: a chunked dW would need a (V, C) sum per
chunk, more than it saves. On the CUDA backend, whose arrays are not sliced
here, it is ops.cross_entropy's too.

Not here: the kernels (backends/), the model (model.py). Read model.py next.
"""
import numpy as np

from tinyllm import ops
from tinyllm.backends import get_backend
from tinyllm.tensor import Tensor, is_device_array

ROW_ELEMENTS = 1 << 18   # dlogits elements per chunk of the frozen head's backward (1 MB)


def linear_cross_entropy(x, weight, targets, dtype="fp32"):
    """(logits (..., V), mean cross-entropy against targets (...), -1 = ignore) of x (..., C)
    and W (V, C); a frozen W's loss backward goes a chunk of rows at a time."""
    logits = ops.linear(x, weight, None, dtype)                          # (..., V)
    if weight.requires_grad or not x.requires_grad or is_device_array(x.data):
        return logits, ops.cross_entropy(logits, targets)
    targets = ops.check_targets(logits, targets)
    kernels = get_backend()
    mm = kernels.matmul_bf16 if dtype == "bf16" else kernels.matmul
    V = weight.shape[0]
    l2 = logits.data.reshape(-1, V)                                      # (N, V)
    t = targets.reshape(-1)                                              # (N,)
    loss, lse = kernels.cross_entropy_forward(l2, t)
    n_kept = max(int(np.sum(t != -1)), 1)
    rows = max(1, ROW_ELEMENTS // V)

    def backward(g):
        # forward: loss = cross_entropy(l2, t), l2 = x W^T; so dx = dl2 W, one chunk of rows
        # at a time. The kernel divides by its chunk's kept rows; g scaled by their share undoes it
        dx = np.empty((l2.shape[0], weight.shape[1]), l2.dtype)          # (N, C)
        for i in range(0, l2.shape[0], rows):
            chunk = slice(i, i + rows)
            share = max(int(np.sum(t[chunk] != -1)), 1) / n_kept
            dl = kernels.cross_entropy_backward(g * share, l2[chunk], t[chunk], lse[chunk])
            dx[chunk] = mm(dl, weight.data)                              # (rows, C)
        return (dx.reshape(x.shape),)
    return logits, Tensor.from_op(loss, (x,), backward, "linear_cross_entropy")
