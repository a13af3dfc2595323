"""Pre-tokenization: Splitter's fast paths give exactly the chunks of the `regex` pattern.

The ASCII twins (stdlib `re`) against `regex` on every short string over a
tricky ASCII alphabet, on random ASCII and on stdlib sources; the block cut
rule (a newline between two non-space characters) at every place it fires in
random mixed-script text; and whole Splitter.findall with tiny blocks. Seeded
`random` only, no optional package. Read tinyllm/bpe_split.py.
"""
import itertools
import random

import pytest

from tinyllm.tokenizer import split as bpe_split
from tinyllm.tokenizer.split import _CUT, PATTERNS, Splitter
from tinyllm.data import stdlib_files

NAMES = sorted(PATTERNS)
needs_twin = pytest.mark.skipif(Splitter("gpt4").ascii is None,
                                reason="the ASCII twins need Python >= 3.11 (possessive quantifiers)")
# Characters that the patterns treat differently: letters (and the contraction letters), digits,
# each kind of whitespace, apostrophes, punctuation, and for mixed text non-ASCII of each class.
ASCII_TRICKY = "aZs'lLe1 \t\n\r\x0b\x0c\x1c!"
MIXED_TRICKY = ASCII_TRICKY + "\u00e9\u0661\u00a0\u2028\u3000\U0001F600\u0301\u4e2d"


def random_text(rng, alphabet, n):
    # runs of one character too, since runs of spaces and digits are special
    return "".join(rng.choice(alphabet) * rng.choice([1, 1, 1, 2, 3, 5]) for _ in range(n))


@needs_twin
@pytest.mark.parametrize("name", NAMES)
def test_ascii_twin_on_every_short_string(name):
    s = Splitter(name)
    for n in range(1, 5):
        for chars in itertools.product(ASCII_TRICKY, repeat=n):
            text = "".join(chars)
            assert s.ascii.findall(text) == s.regex.findall(text), repr(text)


@needs_twin
@pytest.mark.parametrize("name", NAMES)
def test_ascii_twin_on_random_and_real_ascii(name):
    s, rng = Splitter(name), random.Random(0)
    all_ascii = "".join(map(chr, range(128)))
    texts = [random_text(rng, all_ascii, 300) for _ in range(300)]
    texts += [random_text(rng, ASCII_TRICKY, 300) for _ in range(300)]
    texts += [t for t in (f.read_text(encoding="utf-8", errors="replace")
                          for f in stdlib_files()[::25]) if t.isascii()]
    for text in texts:
        assert s.ascii.findall(text) == s.regex.findall(text)


@pytest.mark.parametrize("name", NAMES)
def test_cut_rule_keeps_chunks(name):
    s, rng = Splitter(name), random.Random(1)
    cuts = 0
    for _ in range(400):
        text = random_text(rng, MIXED_TRICKY, 60)
        whole = s.regex.findall(text)
        for m in _CUT.finditer(text):
            p = m.end()
            assert s.regex.findall(text[:p]) + s.regex.findall(text[p:]) == whole, (text, p)
            cuts += 1
    assert cuts > 100


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("block", [1, 7, 64])
def test_splitter_with_small_blocks(name, block, monkeypatch):
    monkeypatch.setattr(bpe_split, "BLOCK_CHARS", block)
    s, rng = Splitter(name), random.Random(block)
    texts = [random_text(rng, MIXED_TRICKY, 200) for _ in range(100)]
    texts.append("plain ascii line\nthen caf\u00e9\nand more ascii\n" * 50)
    for text in texts:
        assert s.findall(text) == s.regex.findall(text)


def test_custom_pattern_has_no_twin_and_still_splits():
    s = Splitter(r"\w+|\W")
    assert s.ascii is None and s.findall("ab, c\u00e9") == ["ab", ",", " ", "c\u00e9"]
