"""csrc/bpe.c against its Python reference: the same ids, the same merges, exactly.

Encoding: ChunkEncoder in C against merge_chunk on random vocabularies (ties,
unreachable tokens, the whole-chunk shortcut), on long chunks and on the real
GPT-4 ranks. Training: CMerger against PythonMerger on texts with many ties.
`make sanitize` runs this file against an AddressSanitizer + UBSan build, so
every C path here also runs bounds-checked. Skips when the library lacks bpe.c.
"""
import pathlib
import random

import pytest

from tinyllm.tokenizer.encode import ChunkEncoder, c_library, merge_chunk
from tinyllm.tokenizer.train import CMerger, PythonMerger
from tinyllm.tokenizer.split import Splitter
from tinyllm.tokenizer import Tokenizer

pytestmark = pytest.mark.skipif(c_library() is None, reason="the C library with bpe.c is not "
                                "built; run `make lib`")
CL100K = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cl100k_base.tiktoken"


def random_vocabulary(rng, n_tokens, alphabet=b"abc "):
    """All 256 bytes plus random short strings over a small alphabet, at random ranks."""
    tokens = {bytes([b]) for b in range(256)}
    while len(tokens) < 256 + n_tokens:
        tokens.add(bytes(rng.choice(alphabet) for _ in range(rng.randint(2, 6))))
    order = list(tokens)
    rng.shuffle(order)
    return {t: r for r, t in enumerate(order)}


def random_pieces(rng, n, alphabet=b"abc ", longest=40):
    return [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, longest))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_encode_random_vocabularies(seed):
    rng = random.Random(seed)
    ranks = random_vocabulary(rng, n_tokens=rng.choice([5, 50, 300]))
    pieces = random_pieces(rng, 300) + [b"", b"a", b"\xff", b"aaaaaaaaaaaaaaaa", b"abcabcabcabc"]
    c = ChunkEncoder(ranks, use_c=True).encode(pieces)
    assert c == [tuple(merge_chunk(p, ranks)) for p in pieces]
    assert ChunkEncoder(ranks, use_c=False).encode(pieces) == c


def test_encode_long_chunks():
    rng = random.Random(1)
    ranks = random_vocabulary(rng, 100, alphabet=b"ab")   # of the 124 strings of 2..6 "a"s and "b"s
    pieces = [b"a" * 1000, b"ab" * 700, bytes(rng.choice(b"ab") for _ in range(1500))]
    expected = [tuple(merge_chunk(p, ranks)) for p in pieces]
    assert ChunkEncoder(ranks, use_c=True).encode(pieces) == expected


def test_encode_whole_chunk_shortcut():
    # "abc" is a token that no merge reaches (no 2-byte token): only a whole chunk "abc" is it.
    ranks = {bytes([b]): b for b in range(256)} | {b"abc": 256}
    assert merge_chunk(b"abc", ranks) == [256] and merge_chunk(b"xabc", ranks) == [120, 97, 98, 99]
    assert ChunkEncoder(ranks, use_c=True).encode([b"abc", b"xabc"]) == [(256,), (120, 97, 98, 99)]


@pytest.mark.skipif(not CL100K.exists(), reason=f"{CL100K} is not there")
def test_encode_cl100k_unique_chunks():
    ranks = Tokenizer.from_tiktoken(CL100K, use_c=False).mergeable_ranks()
    text = pathlib.Path(__file__).read_text(encoding="utf-8") + "\u00e9\U0001F600\u4e2d\u6587 " * 5
    pieces = [c.encode("utf-8") for c in dict.fromkeys(Splitter("gpt4").findall(text))]
    pieces += [bytes(range(256)), "\U0001F600\U0001F601".encode() * 50]
    expected = [tuple(merge_chunk(p, ranks)) for p in pieces]
    assert ChunkEncoder(ranks, use_c=True).encode(pieces) == expected


def test_tokenizer_c_and_python_paths_agree():
    text = pathlib.Path(__file__).read_text(encoding="utf-8") * 2
    c = Tokenizer.train(text, 600, special_tokens=["<|endoftext|>"], progress=False, use_c=True)
    py = Tokenizer.train(text, 600, special_tokens=["<|endoftext|>"], progress=False, use_c=False)
    assert c.mergeable_ranks() == py.mergeable_ranks()
    assert c.encode(text, "none") == py.encode(text, "none")


def merges_both_ways(pieces, counts, n, batch):
    cm, pm = CMerger(pieces, counts, c_library()), PythonMerger(pieces, counts)
    got_c, got_py = [], []
    while len(got_c) < n:
        step_c, step_py = cm.merge(batch), pm.merge(batch)
        got_c += step_c
        got_py += step_py
        if not step_c:
            break
    return got_c, got_py


@pytest.mark.parametrize("seed", range(6))
def test_training_random_words_with_ties(seed):
    rng = random.Random(seed)
    alphabet = [b"ab", b"abc", b"abcdefgh"][seed % 3]
    pieces = list({p for p in random_pieces(rng, 400, alphabet, longest=30) if len(p) >= 2})
    counts = [rng.choice([1, 1, 2, 3, 1000]) for _ in pieces]
    got_c, got_py = merges_both_ways(pieces, counts, 500, batch=rng.choice([1, 7, 500]))
    assert got_c == got_py and len(got_c) > 20


def test_training_runs_out_of_pairs():
    got_c, got_py = merges_both_ways([b"ab", b"abc"], [3, 1], 100, batch=10)
    assert got_c == got_py == [(97, 98), (256, 99)]


def test_training_real_text():
    text = pathlib.Path(__file__).read_text(encoding="utf-8")
    counts = {}
    for chunk in Splitter("gpt4").findall(text * 3):
        counts[chunk] = counts.get(chunk, 0) + 1
    pieces = [c.encode("utf-8") for c in counts if len(c.encode("utf-8")) >= 2]
    weights = [counts[p.decode("utf-8")] for p in pieces]
    got_c, got_py = merges_both_ways(pieces, weights, 800, batch=64)
    assert got_c == got_py and len(got_c) > 300
