"""Tests for tinyllm/data/clean.py: normalization and each quality heuristic.

Each heuristic gets a document that fails exactly it (the checks before it
pass), so a regression names the check. Not a benchmark.
"""
import numpy as np
import pytest

from tinyllm.data import DataError
from tinyllm.curate.clean import CleanConfig, normalize, quality_reason, stable_order

GOOD = ("The committee met on Tuesday to review the budget proposal for next year. "
        "Members raised concerns about rising maintenance costs and the schedule "
        "for replacing older equipment. After a long discussion, they agreed to ask "
        "the finance office for a revised estimate before the next meeting, which "
        "will take place early in the spring.")


def test_normalize():
    assert normalize("e\u0301t\u00e9") == "\u00e9t\u00e9"                 # NFC
    assert normalize("a\r\nb\rc") == "a\nb\nc"
    assert normalize("a\x00b\x07c\x1b\ufeffd\u200be\x7f") == "abcde"      # controls, BOM, ZWSP
    assert normalize("tab\tstays\nnew line stays") == "tab\tstays\nnew line stays"
    assert normalize("non\u00a0breaking\u3000space") == "non breaking space"
    assert normalize("trailing   \nspaces\t\n") == "trailing\nspaces"
    assert normalize("a\n\n\n\n\nb") == "a\n\nb"
    assert normalize("x\n    indented") == "x\n    indented"   # indentation inside is kept
    assert normalize("  \n\t ") == ""


def test_good_text_passes_defaults():
    assert quality_reason(normalize(GOOD), CleanConfig()) is None


def _words(n, word="alpha"):
    return " ".join(f"{word}{i % 7}" for i in range(n))


@pytest.mark.parametrize("text, config, reason", [
    ("", CleanConfig(), "empty"),
    ("only a few words here", CleanConfig(), "too_few_words"),
    (GOOD, CleanConfig(min_words=5, max_words=20), "too_many_words"),
    ("a an to of " * 20, CleanConfig(), "mean_word_length"),
    ("incomprehensibilities " * 60, CleanConfig(max_dup_line_fraction=0, top_ngram_limits="",
                                                dup_ngram_limits=""), "mean_word_length"),
    ("1234 5678 9012 " * 30 + GOOD, CleanConfig(), "alpha_fraction"),
    ("\n".join(["same line repeated here"] * 10 + [GOOD]), CleanConfig(min_words=10), "dup_lines"),
    ("\n".join([GOOD[:200]] * 2 + [f"line number {i} differs" for i in range(8)]),
     CleanConfig(min_words=10), "dup_line_chars"),
    ("\n\n".join(["a paragraph\nof two lines"] * 5 + [f"para {i}\nunique text here" for i in range(5)]),
     CleanConfig(min_words=10, max_dup_line_fraction=0, max_dup_line_char_fraction=0),
     "dup_paragraphs"),
    ("\n\n".join([GOOD] * 2 + [f"short {i}" for i in range(6)]),
     CleanConfig(min_words=10, max_dup_line_fraction=0, max_dup_line_char_fraction=0,
                 max_dup_paragraph_fraction=0), "dup_paragraph_chars"),
    (" ".join(["buy now"] * 30) + " " + GOOD, CleanConfig(), "top_2gram"),
    (GOOD + " " + GOOD, CleanConfig(max_dup_paragraph_char_fraction=0), "dup_5gram"),
])
def test_each_heuristic(text, config, reason):
    assert quality_reason(normalize(text), config) == reason


def test_zero_turns_a_check_off():
    text = normalize(GOOD + " " + GOOD)
    assert quality_reason(text, CleanConfig()) == "dup_5gram"
    assert quality_reason(text, CleanConfig(dup_ngram_limits="5:0,6:0.14,7:0.13,8:0.12,9:0.11,10:0.10")) \
        == "dup_6gram"
    assert quality_reason(text, CleanConfig(dup_ngram_limits="")) is None
    assert quality_reason("few", CleanConfig.off()) is None
    assert quality_reason("   ", CleanConfig.off()) == "empty"   # an empty document never passes


def test_first_occurrence_of_an_ngram_is_not_counted():
    # a 30-word passage twice among 600 other words: the repeat is ~3% of the
    # characters (both occurrences would be ~6%)
    passage = " ".join(f"rep{i}" for i in range(30))
    text = " ".join(f"unique{i}" for i in range(600)) + " " + passage + " " + passage
    share = len(passage.replace(" ", "")) / len(text.replace(" ", ""))
    assert 0.025 < share < 0.035
    assert quality_reason(text, CleanConfig(dup_ngram_limits="5:0.04")) is None
    assert quality_reason(text, CleanConfig(dup_ngram_limits="5:0.02")) == "dup_5gram"


def test_bad_config():
    with pytest.raises(DataError, match="min_words=-1"):
        CleanConfig(min_words=-1)
    with pytest.raises(DataError, match="top_ngram_limits='2-0.2'.*n:share pairs"):
        CleanConfig(top_ngram_limits="2-0.2")
    with pytest.raises(DataError, match="n must be >= 1"):
        CleanConfig(dup_ngram_limits="0:0.1")


def test_stable_order_is_the_stable_argsort():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3, 100, 3200):
        values = rng.integers(0, 2**64, n, dtype=np.uint64)
        if n > 3:
            values[rng.integers(0, n, n // 3)] = values[rng.integers(0, n, n // 3)]  # repeats
        assert stable_order(values).tolist() == np.argsort(values, kind="stable").tolist()
    shared_top = np.array([5, 4, 5, 4, 2**40], dtype=np.uint64)  # equal top bits: the fallback
    assert stable_order(shared_top).tolist() == [1, 3, 0, 2, 4]
