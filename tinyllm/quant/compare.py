"""How much quantization changed a model: perplexity of both, KL divergence, top-token agreement.

compare(quantized, reference, ids) runs both models over the same windows of held-out token
ids and returns the three numbers llama.cpp's perplexity tool reports for a quantized model:
  ppl, ref_ppl, ppl_change   perplexity of each (exp of the mean next-token loss), the relative change
  kl                         mean over positions of KL(reference || quantized) of the next-token
                             distributions, in nats
  same_top                   share of positions where both put the same token first
Not here: reading the text or the checkpoints (cli/eval.py does).
"""
import numpy as np

from tinyllm.tensor import no_grad


def _log_softmax(logits):
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def windows(ids, block_size, max_windows):
    """Non-overlapping (inputs, targets) windows of block_size tokens, at most max_windows."""
    ids = np.asarray(ids, np.int64)
    n = min((len(ids) - 1) // block_size, max_windows)
    if n < 1:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of "
                         f"{block_size + 1}; give more held-out text")
    starts = np.arange(n) * block_size
    rows = starts[:, None] + np.arange(block_size + 1)[None]        # (n, T + 1)
    return ids[rows[:, :-1]], ids[rows[:, 1:]]


def compare(quantized, reference, ids, max_windows=32, batch=4):
    """The dict described in the module docstring, over up to max_windows windows of ids."""
    x, y = windows(ids, reference.config.block_size, max_windows)
    nll_q, nll_f, kl, same = [], [], [], []
    with no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]                 # (b, T)
            lq = _log_softmax(quantized(xb)[0].data)                # (b, T, V)
            lf = _log_softmax(reference(xb)[0].data)
            pick = yb[..., None]
            nll_q.append(-np.take_along_axis(lq, pick, axis=-1)[..., 0].ravel())
            nll_f.append(-np.take_along_axis(lf, pick, axis=-1)[..., 0].ravel())
            kl.append((np.exp(lf) * (lf - lq)).sum(axis=-1).ravel())
            same.append((lq.argmax(-1) == lf.argmax(-1)).ravel())
    ppl, ref_ppl = float(np.exp(np.concatenate(nll_q).mean())), float(np.exp(np.concatenate(nll_f).mean()))
    return {"ppl": ppl, "ref_ppl": ref_ppl, "ppl_change": ppl / ref_ppl - 1,
            "kl": float(np.concatenate(kl).mean()), "same_top": float(np.concatenate(same).mean()),
            "tokens": int(x.size)}
