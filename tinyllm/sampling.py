"""Sampling: from the last position's logits (B, V) to one token id per row.

    settings = Sampling(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1)
    ids = sample(logits, settings, rng, history)   # (B,) from logits (B, V), history (B, T)

The filters run in this order, each on every row at once:
  0. exclude: ids never sampled (a tokenizer's unused_ids(): ids with no bytes).
  1. repetition_penalty r (CTRL, Keskar et al. 2019): every id already in the
     row's history has its logit divided by r when positive, multiplied by r
     when negative, so r > 1 makes repeats less likely; 1 is off.
  2. temperature 0: the most likely id (greedy); no random number is drawn.
  3. logits / temperature: < 1 sharpens the distribution, > 1 flattens it.
  4. top_k: keep the k largest logits (ties at the k-th all stay).
  5. softmax in float64, then top_p (nucleus, Holtzman et al. 2019): keep the
     most likely ids until their mass reaches p; the likeliest always stays.
  6. min_p (Nguyen et al. 2024): keep the ids whose probability is at least
     min_p times the likeliest one's.
  7. one uniform draw per row picks an id by inverse CDF over what is left.
With repetition_penalty 1 and min_p off, this is the sampler GPT.generate has
always used: for the same seed it gives the same ids. Not here: the decoding
loop (generate.py) or the logits (model.py). Read tinyllm/tokenizer/ next,
bytes.py first.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class Sampling:
    temperature: float = 1.0                # 0 = greedy; the model's own distribution at 1
    top_k: Optional[int] = None             # None = every id; 40 is a common choice
    top_p: Optional[float] = None           # None (or 1) = off; 0.9-0.95 common
    min_p: Optional[float] = None           # None (or 0) = off; 0.05-0.1 common
    repetition_penalty: float = 1.0         # 1 = off; 1.1-1.3 discourages loops
    exclude: Sequence[int] = ()             # ids never sampled, e.g. tokenizer.unused_ids()

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):   # `not` also refuses nan
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got "
                             f"{self.temperature}")
        if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 (or None for all ids), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] (0 = off), got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")


def penalize_repeats(logits, history, penalty):
    """logits (B, V) with every id of history (B, T) penalized once (however often it occurs).

    Example: logits [[2., -1., 3.]], history [[0, 1, 1]], penalty 2 -> [[1., -2., 3.]].
    """
    if penalty == 1.0 or history is None or history.shape[1] == 0:
        return logits
    logits = np.array(logits, dtype=np.float64)                       # (B, V), a copy
    seen = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(seen, np.asarray(history, dtype=np.int64), True, axis=-1)
    penalized = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalized, logits)


def filter_probs(probs, top_p=None, min_p=None):
    """probs (B, V), summing to 1 per row -> the same after top_p and min_p, renormalized.

    Example: [[0.5, 0.3, 0.2]] with top_p 0.7 -> [[0.625, 0.375, 0.]] (0.5 alone is short
    of 0.7, 0.5 + 0.3 reaches it); with min_p 0.5 -> [[0.625, 0.375, 0.]] (0.2 < 0.5 * 0.5).
    """
    use_top_p, use_min_p = top_p is not None and top_p < 1.0, min_p is not None and min_p > 0.0
    if not (use_top_p or use_min_p):
        return probs
    keep = np.ones(probs.shape, dtype=bool)
    if use_top_p:
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep an id if the mass before it is still short of top_p (the first always stays)
        drop_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        keep &= ~drop
    if use_min_p:
        keep &= probs >= min_p * probs.max(axis=-1, keepdims=True)   # the likeliest always stays
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum(axis=-1, keepdims=True)


def sample(logits, settings, rng, history=None):
    """One token id per row of logits (B, V): the module docstring's steps 0-7 -> (B,) int64."""
    if not np.isfinite(logits).all():   # sampled anyway, they would give token 0 again and again
        bad = logits[~np.isfinite(logits)][0]
        raise ValueError(f"the model's logits hold {bad}: its weights are damaged or training "
                         f"diverged; sample from an earlier checkpoint")
    if len(settings.exclude):
        logits = np.array(logits)
        logits[:, list(settings.exclude)] = -np.inf                             # (B, V)
    logits = penalize_repeats(logits, history, settings.repetition_penalty)
    if settings.temperature == 0:
        return np.asarray(logits).argmax(axis=-1)
    logits = np.asarray(logits, dtype=np.float64) / settings.temperature   # (B, V)
    top_k = settings.top_k
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]         # (B, 1)
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)                              # (B, V)
    probs = filter_probs(probs, settings.top_p, settings.min_p)
    u = rng.random((probs.shape[0], 1))                                     # (B, 1)
    return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)
