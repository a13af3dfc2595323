"""Tests for deduplication: the vectorized hashes, MinHash, the LSH parameters and clusters.

The quality test runs find_near_duplicates on the synthetic corpus with planted
near-duplicates (tinyllm/data/synthetic.py) and checks precision and recall of
duplicate pairs; datasketch, when installed, checks the band/row choice.
No test asserts a time (examples/bench_dedup.py measures speed).
"""
import numpy as np
import pytest

from tinyllm.data import DataError
from tinyllm.curate import dedup
from tinyllm.curate.dedup import (UnionFind, candidate_pairs, exact_hash, find_near_duplicate_pairs,
                                find_near_duplicates, union_find_clusters)
from tinyllm.curate.hashing import ngram_hashes, span_hashes, text_words, utf8_array, word_spans
from tinyllm.curate.minhash import (EMPTY, MinHasher, band_keys, exact_jaccard, optimal_bands,
                                   recall_bands)
from tinyllm.curate.synthetic import cluster_pairs, near_duplicate_corpus, shingle_jaccard

# ----------------------------------------------------------------------------- hashing


def test_word_spans_split_on_ascii_whitespace():
    data = utf8_array("  héllo\tworld\n\nx  ")
    starts, ends = word_spans(data)
    words = [data[s:e].tobytes().decode() for s, e in zip(starts, ends)]
    assert words == ["héllo", "world", "x"]
    assert word_spans(utf8_array(""))[0].size == 0


def test_equal_words_hash_equal_wherever_they_are():
    hashes, lengths = text_words("the cat saw the dog, the end")
    assert hashes[0] == hashes[3] == hashes[5]
    assert len(set(hashes.tolist())) == 5
    assert lengths.tolist() == [3, 3, 3, 3, 4, 3, 3]
    # the same word in another text, at another offset, hashes the same
    assert text_words("xx the")[0][1] == hashes[0]
    # case folding is the caller's choice
    assert text_words("The", lower=True)[0][0] == hashes[0] != text_words("The")[0][0]


def test_span_hashes_tell_apart_near_strings():
    words = ["a", "b", "ab", "ba", "aa", "a\x00", "\x00a", "abc", "acb"]
    data = utf8_array(" ".join(words))
    hashes = span_hashes(data, *word_spans(data))
    assert len(set(hashes.tolist())) == len(words)


def test_ngram_hashes_are_order_sensitive_and_short_input_is_empty():
    h = text_words("a b c a b c b a")[0]
    grams = ngram_hashes(h, 3)
    assert grams.shape == (6,)
    assert grams[0] == grams[3] and grams[0] != grams[5]
    assert ngram_hashes(h[:2], 3).shape == (0,)

# ----------------------------------------------------------------------------- MinHash


def test_signature_estimates_jaccard():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    base = list(rng.choice(vocab, 400))
    other = base[:300] + list(rng.choice(vocab, 100))
    truth = shingle_jaccard(" ".join(base), " ".join(other))
    sig, empty = MinHasher(num_perm=512, seed=1).signatures([" ".join(base), " ".join(other)])
    assert sig.shape == (2, 512) and sig.dtype == np.uint32 and not empty.any()
    assert abs((sig[0] == sig[1]).mean() - truth) < 0.06


def test_signatures_do_not_depend_on_batching_or_block_size(monkeypatch):
    docs, _ = near_duplicate_corpus(n_docs=60, dup_clusters=5, related_pairs=5, seed=3)
    hasher = MinHasher(64, seed=5)
    whole, _ = hasher.signatures(docs)
    one_by_one = np.concatenate([hasher.signatures([d])[0] for d in docs])
    monkeypatch.setattr("tinyllm.curate.minhash._BLOCK", 97)   # documents cut by block edges
    small_blocks, _ = hasher.signatures(docs)
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_array_equal(whole, small_blocks)


def test_short_and_empty_documents():
    sig, empty = MinHasher(32).signatures(["", "two words", "   ", "two words", "Two  WORDS"])
    assert empty.tolist() == [True, False, True, False, False]
    assert (sig[0] == EMPTY).all()
    np.testing.assert_array_equal(sig[1], sig[3])
    np.testing.assert_array_equal(sig[1], sig[4])  # lower-cased, whitespace-insensitive


def test_minhasher_rejects_bad_sizes():
    with pytest.raises(DataError, match="num_perm=0"):
        MinHasher(num_perm=0)
    with pytest.raises(DataError, match="ngram=2.5"):
        MinHasher(ngram=2.5)
    with pytest.raises(DataError, match=r"bands \* rows = 9 \* 13 exceeds the 64"):
        band_keys(np.zeros((3, 64), dtype=np.uint32), 9, 13)

# ----------------------------------------------------------------------------- LSH parameters


def test_optimal_bands_known_values():
    assert optimal_bands(0.8, 128) == (9, 13)
    b, r = optimal_bands(0.5, 256)
    assert b * r <= 256
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        optimal_bands(1.0, 128)


@pytest.mark.parametrize("threshold, num_perm", [(0.5, 128), (0.7, 64), (0.8, 128), (0.9, 256)])
def test_optimal_bands_match_datasketch(threshold, num_perm):
    lsh = pytest.importorskip("datasketch.lsh", reason="datasketch not installed (optional)")
    assert optimal_bands(threshold, num_perm) == lsh._optimal_param(threshold, num_perm, 0.5, 0.5)


@pytest.mark.parametrize("threshold, num_perm", [(0.5, 128), (0.7, 64), (0.8, 128), (0.9, 256)])
def test_recall_bands_reach_the_target_above_the_threshold(threshold, num_perm):
    b, r = recall_bands(threshold, num_perm)
    assert b * r <= num_perm and 1 - (1 - (threshold + 0.05) ** r) ** b >= 0.995
    assert recall_bands(0.8, 128) == (14, 7)
    with pytest.raises(DataError, match="raise num_perm"):
        recall_bands(0.3, 4)


def test_exact_jaccard_is_the_shingle_jaccard():
    docs, truth = near_duplicate_corpus(n_docs=60, dup_clusters=10, related_pairs=5, seed=4,
                                        similarity=(0.5, 1.0))
    pairs = sorted(cluster_pairs(truth)) + [(0, 1), (2, 59)]
    i, j = (np.array(side) for side in zip(*pairs))
    want = [shingle_jaccard(docs[a], docs[b]) for a, b in pairs]
    np.testing.assert_allclose(exact_jaccard(docs, i, j, 5), want, rtol=0, atol=1e-12)

# ----------------------------------------------------------------------------- clustering


def test_union_find_and_clusters():
    uf = UnionFind(6)
    uf.union(0, 1)
    uf.union(4, 5)
    uf.union(1, 5)
    assert uf.find(0) == uf.find(4) and uf.find(2) != uf.find(0)
    clusters = union_find_clusters(8, np.array([6, 0, 3]), np.array([7, 2, 2]))
    assert clusters == [[0, 2, 3], [6, 7]]


def test_candidate_pairs_cap_big_buckets(monkeypatch):
    keys = np.zeros((300, 2), dtype=np.uint64)   # one bucket of 300 in both bands
    monkeypatch.setattr("tinyllm.curate.dedup.MAX_NEIGHBORS", 5)
    i, j = candidate_pairs(keys)
    assert len(i) == sum(min(5, 299 - k) for k in range(300))  # each paired with its next 5
    assert (i < j).all() and len(set(zip(i.tolist(), j.tolist()))) == len(i)


def test_identical_documents_form_one_cluster():
    doc = " ".join(f"word{i}" for i in range(50))
    docs = [doc] * 100 + ["something else entirely, a different text with many words in it"]
    assert find_near_duplicates(docs) == [list(range(100))]


def test_find_near_duplicates_contract_shapes():
    assert find_near_duplicates([]) == []
    assert find_near_duplicates(["", "", "one"]) == []           # no words: never duplicates
    a = "the quick brown fox jumps over the lazy dog " * 3
    clusters = find_near_duplicates(["unrelated text here", a, a + "!", "zzz"], threshold=0.8,
                                    num_perm=128, ngram=5, seed=0)
    assert clusters == [[1, 2]]


def test_precision_and_recall_on_planted_duplicates():
    docs, truth = near_duplicate_corpus(n_docs=1500, dup_clusters=150, related_pairs=100, seed=7)
    found = find_near_duplicates(docs, threshold=0.8)
    true_pairs, found_pairs = cluster_pairs(truth), cluster_pairs(found)
    hits = len(true_pairs & found_pairs)
    precision, recall = hits / len(found_pairs), hits / len(true_pairs)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert found == find_near_duplicates(docs, threshold=0.8)   # deterministic


def test_recall_and_precision_on_varied_edits():
    """Copies edited by substitutions, insertions, deletions, trimmed ends or a mix, to a
    Jaccard of 0.7-1.0: pairs at >= 0.85 are found (recall), pairs found reach 0.8 (precision)."""
    docs, truth = near_duplicate_corpus(n_docs=1500, dup_clusters=200, related_pairs=100, seed=8,
                                        similarity=(0.7, 1.0))
    jaccard = {p: shingle_jaccard(docs[p[0]], docs[p[1]]) for p in cluster_pairs(truth)}
    wanted = {p for p, s in jaccard.items() if s >= 0.85}
    found = set(zip(*(x.tolist() for x in find_near_duplicate_pairs(docs, threshold=0.8))))
    recall = len(found & wanted) / len(wanted)
    precision = np.mean([jaccard.get(p, 0.0) >= 0.8 for p in found])
    assert len(wanted) > 100 and recall >= 0.99 and precision >= 0.99, (recall, precision)
    estimate_only = find_near_duplicate_pairs(docs, 0.8, bands=optimal_bands(0.8, 128), exact=False)
    assert len(found & wanted) > len(set(zip(*(x.tolist() for x in estimate_only))) & wanted)


def test_exact_checks_run_in_bounded_chunks(monkeypatch):
    docs, _ = near_duplicate_corpus(n_docs=300, dup_clusters=40, related_pairs=10, seed=6,
                                    similarity=(0.7, 0.9))
    whole = find_near_duplicate_pairs(docs)
    sizes, exact = [], dedup.exact_jaccard
    monkeypatch.setattr(dedup, "exact_jaccard",
                        lambda d, i, j, n: sizes.append(len(i)) or exact(d, i, j, n))
    monkeypatch.setattr(dedup, "_EXACT_CHUNK", 3)
    chunked = find_near_duplicate_pairs(docs)
    assert len(sizes) > 2 and max(sizes) == 3
    assert [a.tolist() for a in chunked] == [a.tolist() for a in whole]


def test_exact_hash():
    assert exact_hash("abc") == exact_hash("abc") != exact_hash("abd")
    assert 0 <= exact_hash("\ud800 lone surrogate") < 2**64
