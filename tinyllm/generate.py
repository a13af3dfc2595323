"""Generation: the KV cache, the samplers, and the decoding loop.

    out = generate(model, idx, max_new_tokens=100, temperature=0.8, top_k=40)   # (B, T + 100)

One decoding step feeds only the tokens the cache has not seen (the whole
prompt first, then one token per step) through the model, takes the last
position's logits (B, V), and samples the next token of every row.
`GPT.generate` calls `generate` here.

This file needs no model class: any module whose forward takes
(idx, cache=KVCache) and returns (logits, loss) decodes with it, which is
why model.py imports it and not the other way round. Not here: the command
line (tinyllm/cli/sample.py). Read tinyllm/tokenizer/
next, bytes.py first.
"""
import numpy as np

from tinyllm.backends import get_backend
from tinyllm.tensor import no_grad, to_numpy


class KVCache:
    """Keys and values of every past position, per layer, so a new token costs O(T).

    Each append copies the layer's keys and values into one array one
    position longer: the attention kernel reads them all anyway, so the copy
    costs the same order, and the arrays stay contiguous on any backend.
    """

    def __init__(self, config):
        self.k = [None] * config.n_layer   # per layer: (B, nh, length, hs)
        self.v = [None] * config.n_layer
        self.length = 0                    # positions filled so far

    def append(self, layer, k, v):
        """Store k, v (B, nh, T, hs) after the cached ones; returns all keys and values so far."""
        if self.k[layer] is None:
            self.k[layer], self.v[layer] = k, v
        else:
            kernels = get_backend()
            self.k[layer] = kernels.concat([self.k[layer], k], axis=2)   # (B, nh, Tk, hs)
            self.v[layer] = kernels.concat([self.v[layer], v], axis=2)
        return self.k[layer], self.v[layer]


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             seed=None, use_cache=True, exclude=None):
    """Continue each row of idx (B, T) by max_new_tokens sampled tokens -> (B, T + new).

    temperature 0 picks the most likely token; top_k keeps the k most
    likely; top_p keeps the smallest set whose probability reaches p;
    exclude lists ids never to sample (a tokenizer's unused_ids()).
    The context is the last block_size tokens, as in training. With the
    cache each new token costs one position's work; once the sequence
    fills block_size, the learned positions of the window all shift, so
    the window is recomputed for each further token.
    """
    idx = model._check_ids(idx)
    if not 0 <= temperature < float("inf"):   # `not` also refuses nan
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    cache, pending = None, idx   # pending: tokens not yet seen by the cache
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                if not use_cache or cache is None or cache.length + pending.shape[1] > block:
                    cache = KVCache(model.config) if use_cache else None
                    pending = idx[:, -block:]
                logits, _ = model(pending, cache=cache)
                last = to_numpy(logits.data[:, -1, :])   # (B, V): all that leaves a GPU
                nxt = sample(last, temperature, top_k, top_p, rng, exclude)   # (B,)
                idx = np.concatenate([idx, nxt[:, None]], axis=1)
                pending = nxt[:, None]
    finally:
        model.train(was_training)
    return idx


def sample(logits, temperature, top_k, top_p, rng, exclude=None):
    """One token id per row of logits (B, V), never one of the ids in exclude."""
    if not np.isfinite(logits).all():   # sampled anyway, they would give token 0 again and again
        bad = logits[~np.isfinite(logits)][0]
        raise ValueError(f"the model's logits hold {bad}: its weights are damaged or training "
                         f"diverged; sample from an earlier checkpoint")
    if exclude:
        logits = logits.copy()
        logits[:, list(exclude)] = -np.inf                              # (B, V)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]  # (B, 1)
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)                          # (B, V)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep a token if the mass before it is still short of top_p (the first always stays)
        drop_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    u = rng.random((probs.shape[0], 1))
    return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)
