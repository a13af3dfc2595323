"""Decoding (tinyllm/generate.py): the preallocated KV cache against recomputation on every
backend, batched against row-by-row generation, the streamed text and the stop strings.

The samplers are tests/test_generate_sampling.py; the commands tests/test_generate_cli.py;
the decode kernels tests/test_generate_kernels.py.
"""
import contextlib

import numpy as np
import pytest

from tinyllm import backends
from tinyllm.generate import KVCache, StopStrings, TextStream, Timing, generate, stream
from tinyllm.model import GPT, GPTConfig
from tinyllm.sampling import Sampling
from tinyllm.tensor import no_grad
from tinyllm.tokenizer import ByteTokenizer

TINY = dict(vocab_size=11, block_size=9, n_layer=2, n_head=2, n_embd=8)


def compiled_backends():
    found = ["numpy"]
    for name in ("c", "cuda"):
        try:
            backends.get_backend(name)
            found.append(name)
        except backends.BackendUnavailable:
            pass
    return found


@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize("backend", compiled_backends())
def test_logits_with_the_cache_equal_those_without_at_every_position(backend, inference):
    """inference: eval mode and no graph, as generate runs, where every decoding step's blocks
    are one fused decode_block call each (on the backends that have it: NumPy, C); else each
    block runs layer by layer."""
    model = GPT(GPTConfig(**TINY, seed=3))
    if inference:
        model.eval()
    idx = np.random.default_rng(1).integers(0, 11, (3, 9))
    with backends.using(backend) as kernels, (no_grad() if inference else contextlib.nullcontext()):
        model.to(kernels)
        full = model(idx)[0].numpy()                                       # (B, T, V)
        for first in (1, 4):   # a prefill of one token and of four, then one token a step
            cache = KVCache(model.config)
            parts = [model(idx[:, :first], cache=cache)[0].numpy()]
            parts += [model(idx[:, t:t + 1], cache=cache)[0].numpy() for t in range(first, 9)]
            np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-5, atol=1e-6)
        cache = KVCache(model.config)   # a later prefill of several tokens (a chat turn)
        parts = [model(idx[:, :3], cache=cache)[0].numpy(), model(idx[:, 3:7], cache=cache)[0].numpy()]
        np.testing.assert_allclose(np.concatenate(parts, axis=1), full[:, :7], rtol=1e-5, atol=1e-6)
        model.to(backends.get_backend("numpy"))


@pytest.mark.parametrize("backend", compiled_backends())
def test_last_logits_are_the_forward_passes_last_row(backend):
    model = GPT(GPTConfig(**TINY, seed=3))
    idx = np.random.default_rng(2).integers(0, 11, (3, 7))
    with backends.using(backend) as kernels:
        model.to(kernels)
        want = model(idx)[0].numpy()[:, -1]                               # (B, V)
        got = model.last_logits(idx)
        cache = KVCache(model.config)
        model.last_logits(idx[:, :5], cache=cache)                         # a prefill, then a step
        stepped = model.last_logits(idx[:, 5:], cache=cache)
    for x in (got, stepped):
        x = x.numpy() if hasattr(x, "numpy") else x
        assert x.shape == (3, 11)
        np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)   # float32, as the cache test


def test_the_cache_is_written_in_place():
    model = GPT(GPTConfig(**TINY))
    cache = KVCache(model.config)
    model(np.array([[1, 2, 3]]), cache=cache)
    buffers = [id(k) for k in cache.k] + [id(v) for v in cache.v]
    assert cache.k[0].shape == (1, 2, 9, 4)                    # (B, nh, block_size, hs)
    for t in range(4):
        model(np.array([[t]]), cache=cache)
    assert [id(k) for k in cache.k] + [id(v) for v in cache.v] == buffers
    assert cache.length == 7
    cache.reset()
    assert cache.length == 0


def test_batched_generation_equals_row_by_row():
    model = GPT(GPTConfig(**TINY, seed=5))
    prompt = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    batched = model.generate(prompt, 12, temperature=0)          # 12 > block_size 9: slides
    for row in range(3):
        np.testing.assert_array_equal(model.generate(prompt[row:row + 1], 12, temperature=0)[0],
                                      batched[row])


def test_cache_and_recomputation_agree_with_every_sampler():
    model = GPT(GPTConfig(**TINY, seed=2))
    prompt = np.array([[1, 2], [3, 4]])
    for kwargs in (dict(min_p=0.1), dict(repetition_penalty=1.5, top_k=5),
                   dict(temperature=0, repetition_penalty=1.3)):
        cached = model.generate(prompt, 14, seed=4, **kwargs)
        np.testing.assert_array_equal(cached, model.generate(prompt, 14, seed=4, use_cache=False,
                                                             **kwargs))


def test_stream_continues_a_cache_and_times_both_phases():
    model = GPT(GPTConfig(**TINY, seed=1))
    idx = np.array([[1, 2, 3, 4]])
    want = model.generate(idx, 3, temperature=0)
    cache, timing = KVCache(model.config), Timing()
    model(idx[:, :2], cache=cache)   # the first two tokens are already in the cache
    got = list(stream(model, idx, 3, Sampling(temperature=0), cache=cache, timing=timing))
    np.testing.assert_array_equal(np.concatenate([idx[0], np.concatenate(got)]), want[0])
    assert timing.prefill_tokens == 2 and timing.decode_tokens == 2   # only the unseen two
    assert "prefill: 2 prompt tokens" in timing.report()
    assert cache.length == 6


def test_the_same_seed_gives_the_same_tokens():
    model = GPT(GPTConfig(**TINY))
    a = generate(model, np.array([[0]]), 10, temperature=1.0, top_p=0.9, seed=3)
    np.testing.assert_array_equal(a, generate(model, np.array([[0]]), 10, top_p=0.9, seed=3))


def test_streamed_text_holds_a_split_character_until_complete():
    tok = ByteTokenizer()
    text = "añ€😀 ok"
    stream_ = TextStream(tok)
    pieces = [stream_.push(b) for b in text.encode("utf-8")]   # one byte per token
    assert "".join(pieces) + stream_.flush() == text
    assert "\ufffd" not in "".join(pieces)
    assert pieces[1] == "" and pieces[2] == "ñ"                # ñ's two bytes: nothing, then ñ
    cut = TextStream(tok)
    assert cut.push(0xE2) == "" and cut.flush() == "\ufffd"     # a cut-off character at the end


@pytest.mark.parametrize("pieces, stops, want", [
    (["hel", "lo\n", "\nworld"], ["\n\n"], "hello"),         # spans two tokens
    (["a", "b", "c", "d"], ["bcd"], "a"),                    # spans three
    (["ab", "c"], ["x"], "abc"),                             # never met
    (["a<", "b", "<e", "nd>", "z"], ["<end>"], "a<b"),        # a false start, then the real one
    (["xyz"], ["z", "yz"], "x"),                             # the earliest match wins
])
def test_stop_strings_across_tokens(pieces, stops, want):
    stop = StopStrings(stops)
    out = "".join(stop.push(p) for p in pieces) + stop.flush()
    assert out == want
    assert stop.done == any(s in "".join(pieces) for s in stops)
