"""The n-gram repetition counts in C (csrc/ngrams.c) against the NumPy definition (clean.repeat_stats).

Integer outputs, so equality is exact: which positions repeat an earlier
n-gram, the largest count, and the earliest n-gram with that count, on sizes
that are not powers of two, with many repeats, none, or one value throughout;
then quality_reason itself, C against NumPy, on documents built to trip each
n-gram rule.
"""
import numpy as np
import pytest

from tinyllm.curate import clean
from tinyllm.curate.clean import CleanConfig, normalize, quality_reason, repeat_stats
from tinyllm.curate.synthetic import near_duplicate_corpus

pytestmark = pytest.mark.skipif(clean._C is None, reason="the C library lacks csrc/ngrams.c; "
                                "run `make lib`")


@pytest.mark.parametrize("G, distinct", [(1, 1), (2, 1), (3, 2), (7, 7), (1000, 50), (4099, 4099),
                                         (5003, 1)])
def test_repeat_stats_c_equals_numpy(G, distinct):
    rng = np.random.default_rng(G)
    values = rng.integers(0, 2**64, distinct, dtype=np.uint64)
    grams = values[rng.integers(0, distinct, G)]                          # (G,) with repeats
    want_repeat, want_most, want_at = repeat_stats(grams)
    repeat, most, at = clean._repeat_stats_c(grams)
    assert repeat.tolist() == want_repeat.tolist() and (most, at) == (want_most, want_at)


def test_quality_reason_c_equals_numpy(monkeypatch):
    docs, _ = near_duplicate_corpus(n_docs=120, dup_clusters=5, related_pairs=5, seed=2)
    rng = np.random.default_rng(3)
    for doc in docs[:60]:                  # a run of k words repeated: top and dup n-gram rules
        words = doc.split()
        k, start = int(rng.integers(2, 12)), int(rng.integers(0, 50))
        docs.append(" ".join(words[:80] + words[start:start + k] * int(rng.integers(2, 40))
                             + words[80:]))
    docs = [normalize(d) for d in docs]
    config = CleanConfig()
    with_c = [quality_reason(d, config) for d in docs]
    monkeypatch.setattr(clean, "_C", None)
    assert with_c == [quality_reason(d, config) for d in docs]
    assert len(set(with_c)) >= 4                                          # several rules fired
