"""Generation: the KV cache, the decoding loop (streamed), and text out of the ids.

    out = generate(model, idx, max_new_tokens=100, temperature=0.8, top_k=40)   # (B, T + 100)
    for ids in stream(model, idx, 100, Sampling(temperature=0.8), rng): ...     # (B,) each step

One decoding step feeds only the tokens the cache has not seen (the whole
prompt first: the prefill; then one token per step: the decode) through the
model, takes the last position's logits (B, V), and samples the next token of
every row (sampling.py). The KV cache holds every layer's keys and values in
buffers allocated once at (B, nh, block_size, hs) and written in place; the
attention of the new queries reads them where they are (the backends'
attention_decode), so a step costs one pass over the weights and the cache,
with no copy of the history. A decoding step's block is one kernel call
(KVCache.decode_block: the backends' decode_block, where they have it), as a
small model's step spends more time in Python around ~15 calls a block than
in the kernels; so is the whole step after the embeddings where every block
fuses (KVCache.decode_step: the blocks, ln_f and the lm_head). Once a sequence
fills block_size, the learned
positions of its window all shift by one per token, so the cache is refilled
from the last block_size tokens for each further token (a prefill per token,
as before the cache existed).

TextStream and StopStrings turn the ids into printable text as they come:
a character split over tokens is printed once complete, and a stop string
split over tokens is caught. This file needs no model class: any module whose
forward takes (idx, cache=KVCache) and returns (logits, loss) decodes with
it, which is why model.py imports it and not the other way round. Not here:
the commands (tinyllm/cli/generate.py, chat.py). Read sampling.py next.
"""
import codecs
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from tinyllm.backends import get_backend
from tinyllm.sampling import Sampling, sample
from tinyllm.tensor import Tensor, is_grad_enabled, no_grad, to_numpy

FUSED_MAX_ROWS = 16   # rows (B x T) a fused block takes: c_kernels.GEMV_MAX_ROWS, a decoding step's


class KVCache:
    """Keys and values of every past position, per layer, so a new token costs O(T).

    Each layer's buffers are (B, nh, block_size, hs), allocated on the first
    write (when B, hs and the dtype are known) on the active backend and
    reused after reset(); positions [0, length) are filled.
    """

    def __init__(self, config, fused=True):
        self.block_size = config.block_size
        self.fused = fused   # False: every block layer by layer (what decode_block must equal)
        self.k = [None] * config.n_layer   # per layer: (B, nh, block_size, hs)
        self.v = [None] * config.n_layer
        self._weights = [None] * config.n_layer   # per layer: (key, decode_block's weights)
        self._step_weights = None                 # (key, decode_step's weights)
        self.length = 0                    # positions filled so far (the model advances it)

    def reset(self):
        """Forget every position; the buffers stay for the next sequence of the same batch."""
        self.length = 0

    def attend(self, layer, q, k, v):
        """Store k, v (B, nh, T, hs) at positions [length, length + T) and attend q (B, nh, T, hs)
        over every position so far -> (B, nh, T, hs), the causal attention's output."""
        kernels = get_backend()
        B, nh, T, hs = k.shape
        if self.k[layer] is None or self.k[layer].shape != (B, nh, self.block_size, hs):
            self.k[layer] = kernels.empty((B, nh, self.block_size, hs), k.dtype)
            self.v[layer] = kernels.empty((B, nh, self.block_size, hs), v.dtype)
        kernels.kv_write(self.k[layer], k, self.length)
        kernels.kv_write(self.v[layer], v, self.length)
        if self.length == 0:   # a prefill: the flash kernel on the new keys, already contiguous
            return kernels.attention_forward(q, k, v)[0]
        return kernels.attention_decode(q, self.k[layer], self.v[layer], self.length + T)

    def decode_block(self, layer, x, weights):
        """A transformer block on x (B, T, C) in one call of the backend's decode_block kernel,
        which stores the new keys and values too -> (B, T, C); weights() gives what it takes
        (model.Block.decode_weights). None where it does not apply, and the block then runs
        layer by layer, as in training:
          - the cache was made with fused=False;
          - no earlier positions (a prefill: its many rows go faster through the GEMM and the
            flash attention), or more rows than a decoding step's;
          - a graph being recorded (the kernel has no backward);
          - a backend without the kernel (CUDA), or a cache not yet sized for this batch;
          - a layer the kernel does not know (weights() is None: LoRA's, a bf16 Linear).
        """
        kernels = get_backend()
        if not self._fusable(kernels, "decode_block", x.shape, [self.k[layer]]):
            return None
        found = weights()
        if found is None:
            return None
        arrays, n_head, eps = found
        # the backend's form of the weights, made once per layer (for C: pointers, checked):
        # it holds the arrays, so their ids name them for as long as it is kept
        key = (kernels.NAME, *map(id, arrays))
        if self._weights[layer] is None or self._weights[layer][0] != key:
            self._weights[layer] = key, kernels.decode_weights(arrays)
        out = kernels.decode_block(x.data, self._weights[layer][1], n_head, eps, self.k[layer],
                                   self.v[layer], self.length)
        return Tensor(out, dtype=out.dtype)                                 # (B, T, C)

    def decode_step(self, x, weights):
        """The rest of a decoding step after the embeddings, x (B, T, C) -> the logits (B, V) of
        each row's last position, in one call of the backend's decode_step kernel: every block
        as decode_block, then ln_f and the lm_head; weights() gives what it takes
        (model.GPT.decode_step_weights). None where decode_block would not apply to every
        block, or the kernel does not know the head (weights() is None); the step then goes
        block by block. It does not advance length (the model does)."""
        kernels = get_backend()
        if not self._fusable(kernels, "decode_step", x.shape, self.k):
            return None
        found = weights()
        if found is None:
            return None
        (blocks, ln_f, head), n_head, eps = found
        key = (kernels.NAME, *(id(a) for b in blocks for a in b), id(ln_f), id(head))
        if self._step_weights is None or self._step_weights[0] != key:   # as decode_block's
            self._step_weights = key, kernels.decode_step_weights((blocks, ln_f, head))
        return kernels.decode_step(x.data, self._step_weights[1], n_head, eps, self.k, self.v,
                                   self.length)

    def _fusable(self, kernels, kernel, shape, caches):
        """Whether the backend's `kernel` may run a decoding step's rows of this shape (B, T, C)
        against these layers' caches: see decode_block for each reason it may not."""
        B, T, _ = shape
        return (self.fused and hasattr(kernels, kernel) and self.length > 0
                and B * T <= FUSED_MAX_ROWS and not is_grad_enabled()
                and all(k is not None and k.shape[0] == B for k in caches))


@dataclass
class Timing:
    """What stream() measured: the prefill (the first step) and the decode (every later step)."""
    prefill_tokens: int = 0      # tokens fed through the model in the first step, all rows
    prefill_s: float = 0.0
    decode_tokens: int = 0       # tokens sampled after the first, all rows
    decode_s: float = 0.0

    def report(self):
        """The llama-bench style summary: prompt processing and generation rates apart."""
        def rate(n, s):
            return f"{n / s:.1f} tokens/s" if s > 0 else "-"
        return (f"prefill: {self.prefill_tokens} prompt tokens, {rate(self.prefill_tokens, self.prefill_s)}"
                f" | decode: {self.decode_tokens} tokens, {rate(self.decode_tokens, self.decode_s)}")


@contextlib.contextmanager
def _inference(model):
    """Eval mode and no graph for one step: not across a yield, where the caller runs.
    (A model already in eval mode skips the walk over its modules, twice a step.)"""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with no_grad():
            yield
    finally:
        if was_training:
            model.train(True)


def stream(model, idx, max_new_tokens, settings=None, rng=None, cache=None, timing=None,
           use_cache=True):
    """Yield the next token of every row of idx (B, T), as (B,) int64, max_new_tokens times.

    cache (optional) holds the first cache.length tokens of idx already (chat
    keeps one across turns); only the rest is prefilled. timing (a Timing)
    receives the measured prefill and decode. The repetition penalty sees the
    row's context: the last block_size tokens.
    """
    idx = model._check_ids(idx)
    settings = settings or Sampling()
    rng = rng if rng is not None else np.random.default_rng()
    block = model.config.block_size
    if not use_cache:
        cache = None
    elif cache is None:
        cache = KVCache(model.config)
    elif cache.length > idx.shape[1]:
        cache.reset()                               # it holds more than idx: not idx's start
    pending = idx[:, cache.length:] if cache is not None else idx
    for step in range(max_new_tokens):
        t0 = time.perf_counter()
        if cache is None or cache.length + pending.shape[1] > block:
            if cache is not None:
                cache.reset()                       # the window slides: refill it
            pending = idx[:, -block:]
        with _inference(model):   # a GPT computes the last position's logits alone
            last = (model.last_logits(pending, cache=cache) if hasattr(model, "last_logits")
                    else model(pending, cache=cache)[0].data[:, -1, :])
        last = to_numpy(last)                       # (B, V): all that leaves a GPU
        nxt = sample(last, settings, rng, idx[:, -block:])                     # (B,)
        if timing is not None:
            seconds = time.perf_counter() - t0
            if step == 0:
                timing.prefill_tokens += pending.size
                timing.prefill_s += seconds
            else:
                timing.decode_tokens += nxt.size
                timing.decode_s += seconds
        idx = np.concatenate([idx, nxt[:, None]], axis=1)                      # (B, T + 1)
        pending = nxt[:, None]
        yield nxt


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             seed=None, use_cache=True, min_p=None, repetition_penalty=1.0, exclude=None):
    """Continue each row of idx (B, T) by max_new_tokens sampled tokens -> (B, T + new).

    The sampling options are sampling.Sampling's (exclude: ids never to sample,
    a tokenizer's unused_ids()); seed makes the run
    reproducible. The context is the last block_size tokens, as in training.
    use_cache=False recomputes the whole window for every token (the
    definition the cache is tested against).
    """
    settings = Sampling(temperature, top_k, top_p, min_p, repetition_penalty, exclude or ())
    idx = model._check_ids(idx)
    new = list(stream(model, idx, max_new_tokens, settings, np.random.default_rng(seed),
                      use_cache=use_cache))
    return np.concatenate([idx] + [nxt[:, None] for nxt in new], axis=1)


class TextStream:
    """Token ids in, printable text out: a character split over tokens comes out once complete.

        text = TextStream(tokenizer)
        for i in ids: print(text.push(i), end="")
        print(text.flush())
    Bytes that can never be valid UTF-8 become U+FFFD, as in tokenizer.decode; an
    incomplete character is held, never printed as U+FFFD mid-stream.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id):
        return self._decoder.decode(self.tokenizer.decode_bytes([int(token_id)]))

    def flush(self):
        """What is held at the end (an incomplete character, as U+FFFD)."""
        return self._decoder.decode(b"", final=True)


class StopStrings:
    """Text in, text out up to the first stop string, which is not returned.

    Text that could be the start of a stop string is held until the next push
    tells: stop strings that span token boundaries are caught.
        stop = StopStrings(["\\n\\n"]); stop.push("a\\n") -> "a"; stop.push("\\nb") -> ""
    and stop.done is then True.
    """

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.done = False
        self._held = ""

    def push(self, text):
        if self.done:
            return ""
        text = self._held + text
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.done, self._held = True, ""
            return text[:min(hits)]
        hold = max((n for s in self.stops for n in range(1, min(len(s), len(text) + 1))
                    if text.endswith(s[:n])), default=0)
        self._held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def flush(self):
        """The held text, at the end of a generation that met no stop string."""
        text, self._held = ("" if self.done else self._held), ""
        return text


def stream_text(model, tokenizer, idx, max_new_tokens, settings=None, rng=None, stops=(),
                cache=None, timing=None):
    """stream() with text: yield (ids (B,), pieces) per step, pieces the B rows' new printable text.

    A row ends at a stop string (not in its text) or at the tokenizer's
    end-of-text token; the loop ends when every row has ended or after
    max_new_tokens. A last (None, pieces) gives what each row held back.
    """
    B = np.asarray(idx).shape[0]
    texts = [TextStream(tokenizer) for _ in range(B)]
    stoppers = [StopStrings(stops) for _ in range(B)]
    eot = getattr(tokenizer, "eot_token", None)
    for nxt in stream(model, idx, max_new_tokens, settings, rng, cache, timing):
        pieces = []
        for row, token in enumerate(nxt.tolist()):
            stop, text = stoppers[row], texts[row]
            if token == eot and not stop.done:   # the end: what was held back, then nothing
                pieces.append(stop.push(text.flush()) + stop.flush())
                stop.done = True
            else:
                pieces.append(stop.push(text.push(token)))
        yield nxt, pieces
        if all(s.done for s in stoppers):
            return
    yield None, [s.push(t.flush()) + s.flush() for s, t in zip(stoppers, texts)]
