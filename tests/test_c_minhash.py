"""MinHash signatures and shingles in C (csrc/minhash.c) against the NumPy definitions
(MinHasher.signatures and shingle_values with use_c=False).

Integer arithmetic only, so the outputs must be equal bit for bit: on random documents
of every length around the shingle size (no words, fewer words than one shingle, exactly
one), with Unicode (upper case that lower() changes, multi-byte letters, lone surrogates),
every ASCII whitespace byte and other whitespace that is not a word boundary (U+00A0,
U+3000), and signature lengths and shingle sizes that are not powers of two.
"""
import numpy as np
import pytest

from tinyllm.curate import minhash
from tinyllm.curate.minhash import MinHasher
from tinyllm.curate.synthetic import near_duplicate_corpus

pytestmark = pytest.mark.skipif(minhash._C is None, reason="the C library lacks "
                                "csrc/minhash.c; run `make lib`")

WORDS = ["the", "The", "THE", "cat", "Straße", "ΣΊΣΥΦΟΣ", "мир", "世界", "😀", "\ud800x", "a\u00a0b",
         "x\u3000y", "İ", "42"]
SEPARATORS = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "  ", "\n\n"]


def random_docs(rng, n, most_words):
    docs = []
    for _ in range(n):
        k = int(rng.integers(0, most_words))
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), k)]
        seps = [SEPARATORS[int(i)] for i in rng.integers(0, len(SEPARATORS), k + 1)]
        docs.append(seps[0] + "".join(w + s for w, s in zip(words, seps[1:])))
    return docs


@pytest.mark.parametrize("num_perm, ngram", [(128, 5), (1, 1), (37, 3), (64, 7)])
def test_c_equals_numpy_on_random_documents(num_perm, ngram):
    rng = np.random.default_rng(num_perm + ngram)
    docs = random_docs(rng, 300, 3 * ngram) + ["", " \n ", "one", "a " * ngram, "a " * (ngram - 1)]
    hasher = MinHasher(num_perm, ngram, seed=ngram)
    sig, empty = hasher.signatures(docs)
    want_sig, want_empty = hasher.signatures(docs, use_c=False)
    assert sig.dtype == want_sig.dtype and sig.shape == want_sig.shape == (len(docs), num_perm)
    assert np.array_equal(sig, want_sig) and np.array_equal(empty, want_empty)
    assert empty.any() and not empty.all()


@pytest.mark.parametrize("ngram, bits", [(5, 64), (5, 32), (1, 64), (3, 17)])
def test_shingle_values_c_equals_numpy(ngram, bits):
    rng = np.random.default_rng(ngram * bits)
    docs = random_docs(rng, 200, 3 * ngram) + ["", "a", "a " * ngram]
    values, owners = minhash.shingle_values(docs, ngram, bits)
    want_values, want_owners = minhash.shingle_values(docs, ngram, bits, use_c=False)
    assert values.dtype == want_values.dtype and owners.dtype == want_owners.dtype
    assert np.array_equal(values, want_values) and np.array_equal(owners, want_owners)


def test_shingle_sets_c_equals_numpy():
    rng = np.random.default_rng(11)
    docs = random_docs(rng, 200, 15) + ["", "a a a a a a a a", "x"]
    values, bounds = minhash.shingle_sets(docs, 2)
    want_values, want_bounds = minhash.shingle_sets(docs, 2, use_c=False)
    assert np.array_equal(values, want_values) and np.array_equal(bounds, want_bounds)
    for k in range(len(docs)):                        # each one a sorted set of that document
        part = values[bounds[k]:bounds[k + 1]]
        assert np.array_equal(part, np.unique(minhash.shingle_values([docs[k]], 2, 64)[0]))


def test_c_equals_numpy_on_a_corpus_across_numpy_blocks():
    docs, _ = near_duplicate_corpus(n_docs=300, dup_clusters=20, related_pairs=10,
                                    words=(10, 3000), seed=3)              # > 8K shingles per block
    hasher = MinHasher(128, 5)
    assert np.array_equal(hasher.signatures(docs)[0], hasher.signatures(docs, use_c=False)[0])
    assert hasher.signatures([])[0].shape == (0, 128)
