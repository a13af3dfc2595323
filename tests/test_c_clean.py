"""Normalization and the quality heuristics in C (csrc/clean.c via clean_c.normalize_all and
clean_c.quality_reasons) against the definitions (clean.normalize, clean.quality_reason),
one text at a time.

Reasons are names, so equality is exact. The texts are built to sit on every edge the C
side re-implements: Unicode whitespace that str.split() and str.strip() take but the
n-gram words (ASCII whitespace) do not (U+2028, U+00A0, U+3000, U+001C), letters of several
scripts next to digits that are not letters (Arabic-Indic, superscripts, fractions),
underscores, combining marks, 4-byte characters and lone surrogates; lines and paragraphs
that repeat after stripping, paragraph breaks of whitespace runs with several newlines;
runs of repeated words for the n-gram rules. They go through both raw and normalized,
under the default limits and under random ones that make every rule fire somewhere.
"""
import json

import numpy as np
import pytest

from tinyllm.curate import clean_c, minhash
from tinyllm.curate.prepare import PrepareConfig, prepare
from tinyllm.curate.clean import CleanConfig, normalize, quality_reason
from tinyllm.curate.synthetic import near_duplicate_corpus

pytestmark = pytest.mark.skipif(clean_c._C is None, reason="the C library lacks "
                                "csrc/clean.c; run `make lib`")

SPACES = [" ", " ", " ", "\t", "\n", "\n\n", "\n \n", "\n\t \n\n", "\r\n", "\x0b", "\x0c", "\x1c",
          "\x85", "\u00a0", "\u2028", "\u2029", "\u3000", "\u200b"]
PIECES = ["the", "cat", "sat", "on", "mat", "Ñandú", "straße", "κόσμος", "мир", "世界", "日本語",
          "٣٤", "²", "½", "Ⅻ", "x_y", "__", "e\u0301", "😀", "𝔘𝔫𝔦", "\ud800", "42", "a1b2", "!?",
          "—", "ﬁ", "İ"]


def random_text(rng, words):
    """A text of random pieces and separators, with repeated lines, paragraphs and word runs."""
    out = []
    for _ in range(words):
        out.append(PIECES[int(rng.integers(len(PIECES)))] if rng.random() < 0.9
                   else "".join(rng.choice(PIECES, int(rng.integers(2, 4)))))
        out.append(SPACES[int(rng.integers(len(SPACES)))] if rng.random() < 0.4 else " ")
    text = "".join(out)
    kind = rng.integers(4)
    if kind == 1:                                         # a line repeated, padded differently
        line = text[: int(rng.integers(1, 40))].strip("\n")
        text += "".join(f"\n {line}\t" for _ in range(int(rng.integers(1, 5))))
    elif kind == 2:                                       # a paragraph repeated
        text = "\n\n".join([text] + [text[:60]] * int(rng.integers(1, 4)))
    elif kind == 3:                                       # a run of words repeated
        words_ = text.split()
        k = int(rng.integers(2, 11))
        text += " " + " ".join(words_[:k] * int(rng.integers(2, 9)))
    return text


def random_config(rng):
    """Limits low enough that each rule fires on some texts; some rules off (0)."""
    pick = lambda lo, hi: float(rng.uniform(lo, hi)) if rng.random() < 0.85 else 0.0
    return CleanConfig(
        min_words=int(rng.integers(0, 30)), max_words=int(rng.choice([0, 150, 400])),
        min_mean_word_length=pick(1.0, 3.5), max_mean_word_length=pick(3.0, 9.0),
        min_alpha_fraction=pick(0.3, 0.9), max_dup_line_fraction=pick(0.0, 0.3),
        max_dup_line_char_fraction=pick(0.0, 0.3), max_dup_paragraph_fraction=pick(0.0, 0.3),
        max_dup_paragraph_char_fraction=pick(0.0, 0.3),
        top_ngram_limits=",".join(f"{n}:{rng.uniform(0.02, 0.3):.3f}"
                                  for n in sorted(rng.choice(np.arange(1, 6), 2, replace=False))),
        dup_ngram_limits="" if rng.random() < 0.2 else ",".join(
            f"{n}:{rng.uniform(0.02, 0.3):.3f}" for n in range(int(rng.integers(2, 6)), 12, 3)))


def check(texts, config):
    want = [quality_reason(t, config) for t in texts]
    got = clean_c.quality_reasons(texts, config)
    bad = [(w, g, t[:80]) for w, g, t in zip(want, got, texts) if w != g]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"
    return want


@pytest.mark.parametrize("seed", range(6))
def test_random_texts_and_limits(seed):
    rng = np.random.default_rng(seed)
    texts = [random_text(rng, int(rng.integers(0, 120))) for _ in range(150)]
    texts += ["", " ", "\n\n", "\u2028", "a", "a\n\na", "\n \u3000\n", "\ud800 \ud800"]
    seen = set()
    for config in [CleanConfig(), CleanConfig.off()] + [random_config(rng) for _ in range(4)]:
        for batch in (texts, [normalize(t) for t in texts]):
            seen.update(check(batch, config))
    assert len(seen) >= 8, seen                          # many different rules fired


def test_corpus_documents_default_limits():
    docs, _ = near_duplicate_corpus(n_docs=150, dup_clusters=5, related_pairs=5, seed=4)
    rng = np.random.default_rng(5)
    for doc in docs[:80]:                                 # the n-gram rules at their edges
        words = doc.split()
        k, start = int(rng.integers(2, 12)), int(rng.integers(0, 50))
        docs.append(" ".join(words[:80] + words[start:start + k] * int(rng.integers(2, 40))
                             + words[80:]))
    reasons = check([normalize(d) for d in docs], CleanConfig())
    assert {"top_2gram", None} <= set(reasons) and any(r and r.startswith("dup_") for r in reasons)


@pytest.mark.parametrize("rule", ["line", "paragraph"])
def test_repeated_lines_and_paragraphs(rule):
    """Only one repetition rule on, over texts cut into parts by every kind of break."""
    rng = np.random.default_rng(len(rule))
    breaks = ["\n", "\n\n", "\n \n", "\n\u2028\n", "\n\t\n \n", " \n", "\n\u3000", "\n\n\n"]
    texts = []
    for _ in range(300):
        parts = [random_text(rng, int(rng.integers(0, 6))) for _ in range(int(rng.integers(1, 6)))]
        picks = rng.integers(0, len(parts), int(rng.integers(1, 12)))
        texts.append("".join(parts[i] + breaks[int(rng.integers(len(breaks)))] for i in picks))
    seen = set()
    for share in (0.0, 0.1, 0.3, 0.6):
        config = CleanConfig.off()
        config.__dict__.update({f"max_dup_{rule}_fraction": share,
                                f"max_dup_{rule}_char_fraction": 0.3 - share / 2})
        seen.update(check(texts, config) + check([normalize(t) for t in texts], config))
    assert {f"dup_{rule}s", f"dup_{rule}_chars", None} <= seen, seen


NORMALIZE_PIECES = ["\r\n", "\r", "\r\r\n", "\n", "\n\n\n\n", " \t\n", "\t", "  ", "\x00", "\x08",
                    "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x85", "\x9f", "\u200b", "\ufeff",
                    "\u00a0", "\u2028", "\u3000", "\u2009", "e\u0301", "\u212b", "x", "word", "Ω",
                    "😀", "\ud800", " \x01\n", "\r\x00\n", "\n \n\t\n"]


@pytest.mark.parametrize("seed", range(4))
def test_normalize_random_texts(seed):
    rng = np.random.default_rng(seed)
    texts = ["", " ", "\n\u2028\n", "\x00", "a\r\n\r\n\r\nb", " \t a \t "]
    for _ in range(400):
        k = int(rng.integers(0, 40))
        texts.append("".join(NORMALIZE_PIECES[int(i)] for i in rng.integers(0, len(NORMALIZE_PIECES), k)))
    texts += [random_text(rng, 50) for _ in range(50)]
    got = clean_c.normalize_all(texts)
    want = [normalize(t) for t in texts]
    bad = [(t, w, g) for t, w, g in zip(texts, want, got) if w != g]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"
    assert clean_c.normalize_all(texts, use_c=False) == want and clean_c.normalize_all([]) == []


def test_without_c_is_the_definition():
    texts = ["a b c", "word " * 60]
    assert clean_c.quality_reasons(texts, CleanConfig(), use_c=False) == \
        [quality_reason(t, CleanConfig()) for t in texts]
    assert clean_c.quality_reasons([], CleanConfig()) == []


def test_char_classes_are_pythons():
    table = clean_c.char_classes()
    for c in list(range(0x3000)) + [0x1680, 0x2028, 0x2029, 0x3000, 0x1D518, 0xE0001, 0x10FFFF]:
        ch = chr(c)
        assert bool(table[c] & 1) == ch.isspace()
        assert bool(table[c] & 2) == (ch.isalnum() and not ch.isdecimal()), hex(c)


def test_prepare_without_the_c_kernels_writes_the_same_shards(tmp_path, monkeypatch):
    """The whole filter stage on the definitions (normalize, quality, MinHash, shingles)."""
    docs, _ = near_duplicate_corpus(n_docs=200, dup_clusters=20, related_pairs=10, seed=9)
    rng = np.random.default_rng(9)
    docs += [random_text(rng, 120) for _ in range(60)] + docs[:10]
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    config = PrepareConfig(workers=1, shard_tokens=30000, clean=CleanConfig(min_words=20))
    with_c = prepare([corpus], tmp_path / "c", config=config, progress=False)
    monkeypatch.setattr(clean_c, "_C", None)
    monkeypatch.setattr(minhash, "_C", None)
    without = prepare([corpus], tmp_path / "numpy", config=config, progress=False)
    assert with_c["documents"] == without["documents"] and with_c["documents"]["dropped"]
    names = sorted(p.name for p in (tmp_path / "c").glob("*.bin"))
    assert len(names) > 1 and names == sorted(p.name for p in (tmp_path / "numpy").glob("*.bin"))
    for name in names:
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "numpy" / name).read_bytes()
