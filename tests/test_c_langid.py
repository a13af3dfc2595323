"""Language id in C (csrc/langid.c through curate/langid_c.py) against the NumPy definition (langid.py).

On models our train_supervised trains and on random models of every shape the
format allows (dense or product-quantized input, quantized norms, an uneven
last sub-quantizer, pruned buckets, a quantized output matrix, each loss), the
label ids and their order must be identical and the probabilities equal to
rtol 1e-6. Why that tolerance: both sides add the same float32 values in the
same order and take exp and log in double rounded to float, so they agree bit
for bit unless NumPy's and libm's double exp or log differ in the last bit on
a value that then rounds to another float (rare: about one in 10^8); 1e-6 is a
few float32 ulps. tests/test_curate_langid.py checks both against fastText.
"""
import numpy as np
import pytest

from tinyllm.data import DataError
from tinyllm.curate.langid import FastTextModel, train_supervised
from tinyllm.curate.langid_c import c_library
from tinyllm.curate.synthetic import language_sentences, random_fasttext_model
from tests.test_curate_langid import train_file  # noqa: F401 (the labeled training file, a fixture)

pytestmark = pytest.mark.skipif(c_library() is None, reason="the C library lacks csrc/langid.c; "
                                "run `make lib`")

SENTENCES = language_sentences(1400, seed=2)   # not the training file's sentences (seed 1)
WORDS = sorted({w for _, s in SENTENCES[:1200] for w in s.split()})
AWKWARD = ["", " ", "\t\r\v\f", "a </s> b", "</s>", "__label__lat ka", "__label__l001", "x\0y",
           "ка λο mixed ühm", "w" * 300, "ЁЖ🙂 ümlaut ", "  lead and trail  ", "ab" * 40 + " c"]
LINES = [s for _, s in SENTENCES[1200:1300]] + AWKWARD


def assert_c_equals_numpy(file, lines=LINES, ks=(1, 3, -1), thresholds=(0.0, 0.3)):
    c, reference = FastTextModel(file, use_c=True), FastTextModel(file, use_c=False)
    for k in ks:
        for threshold in thresholds:
            ids, probs, counts = c.predict_arrays(lines, k, threshold)
            want_ids, want_probs, want_counts = reference.predict_arrays(lines, k, threshold)
            np.testing.assert_array_equal(counts, want_counts)
            for i, n in enumerate(want_counts.tolist()):
                assert ids[i, :n].tolist() == want_ids[i, :n].tolist(), (lines[i], k, threshold)
                np.testing.assert_allclose(probs[i, :n], want_probs[i, :n], rtol=1e-6, atol=0,
                                           err_msg=f"{lines[i]!r} k={k} threshold={threshold}")


@pytest.mark.parametrize("args", [
    dict(loss="softmax", dim=16, minn=2, maxn=4),
    dict(loss="hs", dim=7, minn=2, maxn=4, wordNgrams=2),
    dict(loss="ova", dim=16, minn=3, maxn=5, wordNgrams=3),
    dict(loss="softmax", dim=5, minn=0, maxn=0, wordNgrams=2),
], ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_c_equals_numpy_on_trained_models(train_file, args):
    model = train_supervised(str(train_file), epoch=2, bucket=3001, **args)
    assert_c_equals_numpy(model.file)


@pytest.mark.parametrize("args", [
    dict(loss="hs", dim=16, dsub=2, qnorm=True, bucket=5003),
    dict(loss="softmax", dim=16, dsub=3, qnorm=False, pruned=400, bucket=5003, word_ngrams=2),
    dict(loss="ova", dim=13, dsub=None, pruned=0, bucket=5003),
    dict(loss="ns", dim=12, dsub=2, qnorm=True, qout=True, bucket=997, word_ngrams=3),
    dict(loss="softmax", dim=9, dsub=4, qnorm=True, maxn=0, bucket=997, word_ngrams=2),
    dict(loss="hs", dim=16, dsub=2, qnorm=True, pruned=700, bucket=20011, minn=1, maxn=6),
], ids=["hs-pq-qnorm", "softmax-pq-dsub3-pruned", "ova-dense-all-pruned", "ns-qout",
        "softmax-no-char-ngrams", "hs-pruned-minn1"])
def test_c_equals_numpy_on_random_models(args):
    file = random_fasttext_model(WORDS[::3], n_labels=23, seed=len(str(args)), **args)
    assert_c_equals_numpy(file)


def test_lid176_sized_model_agrees_on_a_sample():
    """176 labels, dim 16, 2M buckets, quantized: the benchmark's model, on a few lines."""
    file = random_fasttext_model(WORDS, n_labels=176, bucket=2_000_000, seed=5)
    assert_c_equals_numpy(file, lines=LINES[::7], ks=(1, 2), thresholds=(0.0,))


def test_c_predict_api_and_errors(train_file):
    model = train_supervised(str(train_file), epoch=1, dim=8, bucket=1000, minn=2, maxn=4)
    assert model._c is not None
    labels, probs = model.predict(LINES[0], k=2)
    assert isinstance(labels, tuple) and len(labels) == 2 and probs.dtype == np.float64
    many_labels, many_probs = model.predict(LINES[:3] + [""], k=-1)
    assert [len(x) for x in many_labels] == [4, 4, 4, 4] and many_probs[0].dtype == np.float32
    assert model.predict([]) == ([], [])
    assert model.predict(LINES[0], k=100)[0] == model.predict(LINES[0], k=-1)[0]
    with pytest.raises(ValueError, match="one line at a time"):
        model.predict(["fine", "two\nlines"])
    with pytest.raises(DataError, match="str or a list of str, got bytes"):
        model.predict(["fine", b"bytes"])
    with pytest.raises(DataError, match="k=0"):
        model.predict("x", k=0)
