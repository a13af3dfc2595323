"""Deduplication: exact (a hash of the normalized text) and near (MinHash + LSH).

Near-duplicates, in four steps:
  1. MinHash signatures of every document (minhash.py);
  2. LSH: documents whose signatures agree on a whole band share a bucket and
     become candidate pairs (bands x rows chosen for recall: minhash.recall_bands
     makes pairs at threshold + 0.05 candidates with probability 0.995);
  3. each candidate pair is kept only if its estimated Jaccard similarity
     (the share of equal signature positions) reaches the threshold, or, when
     the texts are at hand and the estimate is within three standard
     deviations of the threshold, if its exact shingle Jaccard does;
  4. union-find joins the verified pairs into clusters.
A bucket of m documents would give m(m-1)/2 pairs; to keep memory linear,
each document is paired with the next MAX_NEIGHBORS documents of its bucket
only, which still links the whole bucket through chains of verified pairs.

`find_near_duplicates(docs, ...)` (contract) runs all four on a list of
strings. The prepare pipeline (prepare.py) runs step 1 in its workers and
steps 2-4 through `near_duplicate_clusters` on arrays it saved to disk, and
keeps the first document of each cluster. Read langid.py next.
"""
import hashlib

import numpy as np

from tinyllm.curate.minhash import MinHasher, band_keys, exact_jaccard, recall_bands

MAX_NEIGHBORS = 64     # pairs per document inside one LSH bucket (see the docstring)
_VERIFY_CHUNK = 1 << 16  # candidate pairs compared at once: 2 * 64K * P * 4 bytes
_EXACT_CHUNK = 1 << 14   # unsure pairs handed to `exact` at once: the texts of <= 32K documents


def find_near_duplicates(docs, threshold=0.8, num_perm=128, ngram=5, seed=0):
    """Clusters (lists of two or more document indices) of near-duplicate documents.

    Each cluster is sorted, and the clusters are sorted by their first index.
    Documents without any word are never reported.
    """
    i, j = find_near_duplicate_pairs(docs, threshold, num_perm, ngram, seed)
    return union_find_clusters(len(docs), i, j)


def find_near_duplicate_pairs(docs, threshold=0.8, num_perm=128, ngram=5, seed=0, bands=None,
                              exact=True):
    """(i, j) int64 arrays, i < j: the verified pairs that find_near_duplicates joins.

    bands: (bands, rows), by default minhash.recall_bands; exact: settle pairs
    whose estimate lies within exact_margin of the threshold by their exact
    shingle Jaccard (False: by the estimate alone, as datasketch does).
    """
    docs = list(docs)
    signatures, empty = MinHasher(num_perm, ngram, seed).signatures(docs)
    bands, rows = recall_bands(threshold, num_perm) if bands is None else bands
    check = (lambda a, b: exact_jaccard(docs, a, b, ngram)) if exact else None
    return near_duplicate_pairs(signatures, band_keys(signatures, bands, rows), threshold,
                                active=~empty, exact=check)


def near_duplicate_clusters(signatures, keys, threshold, active=None, exact=None):
    """Steps 2-4 on (N, P) signatures and their (N, bands) LSH keys; `active` masks documents in."""
    i, j = near_duplicate_pairs(signatures, keys, threshold, active, exact)
    return union_find_clusters(signatures.shape[0], i, j)


def near_duplicate_pairs(signatures, keys, threshold, active=None, exact=None):
    """Steps 2-3: the candidate pairs (i, j) of the LSH keys that pass verify_pairs."""
    N = signatures.shape[0]
    index = np.arange(N) if active is None else np.flatnonzero(active)   # (M,) documents taking part
    i, j = candidate_pairs(np.asarray(keys)[index])
    i, j = index[i], index[j]
    same = verify_pairs(signatures, i, j, threshold, exact)
    return i[same], j[same]


def candidate_pairs(keys):
    """Unique (i, j), i < j, of rows of `keys` (M, bands) that share a key in some band."""
    M, bands = keys.shape
    found = []
    for band in range(bands):
        order = np.argsort(keys[:, band], kind="stable")                 # (M,) a bucket is a run
        sorted_keys = keys[order, band]
        for d in range(1, min(MAX_NEIGHBORS, M - 1) + 1):
            same = sorted_keys[d:] == sorted_keys[:-d]                     # (M - d,)
            if not same.any():
                break  # no bucket holds more than d documents
            found.append(np.stack([order[:-d][same], order[d:][same]]))
    if not found:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    pairs = np.sort(np.concatenate(found, axis=1), axis=0)                 # (2, K) i < j
    pairs = np.unique(pairs[0].astype(np.int64) * M + pairs[1])            # (K',) each pair once
    return pairs // M, pairs % M


def exact_margin(threshold, num_perm):
    """Three standard deviations of the MinHash estimate at the threshold: sqrt(t (1 - t) / P)."""
    return 3.0 * float(np.sqrt(threshold * (1.0 - threshold) / num_perm))


def verify_pairs(signatures, i, j, threshold, exact=None):
    """(K,) bool: the pair's estimated Jaccard (share of equal positions) >= threshold.

    With exact (a function (i, j) -> exact Jaccard), pairs whose estimate lies
    within exact_margin of the threshold are decided by exact(i, j) >= threshold
    instead: the estimate's error (0.035 at 0.8 and 128 permutations) would
    otherwise lose about 6 % of the pairs at similarity 0.85.
    """
    P = signatures.shape[1]
    equal = np.empty(len(i), dtype=np.int64)                               # (K,)
    for lo in range(0, len(i), _VERIFY_CHUNK):
        a, b = i[lo:lo + _VERIFY_CHUNK], j[lo:lo + _VERIFY_CHUNK]
        equal[lo:lo + len(a)] = (signatures[a] == signatures[b]).sum(axis=1)
    keep = equal >= threshold * P - 1e-9
    if exact is not None and len(i):
        unsure = np.flatnonzero(np.abs(equal / P - threshold) < exact_margin(threshold, P))
        for lo in range(0, len(unsure), _EXACT_CHUNK):    # bounded: exact may load the texts
            part = unsure[lo:lo + _EXACT_CHUNK]
            keep[part] = exact(i[part], j[part]) >= threshold - 1e-12
    return keep


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x):
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]   # path halving: every other node skips a level
            x = parent[x]
        return x

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


def union_find_clusters(n, i, j):
    """Connected components of the pairs (i[k], j[k]) with two or more members, sorted."""
    sets = UnionFind(n)
    for a, b in zip(i.tolist(), j.tolist()):
        sets.union(a, b)
    groups = {}
    for x in sorted(set(i.tolist()) | set(j.tolist())):
        groups.setdefault(sets.find(x), []).append(x)
    return sorted(g for g in groups.values() if len(g) > 1)


def exact_hash(text):
    """64-bit content hash of an already-normalized text, for exact deduplication."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def duplicates_to_drop(clusters):
    """Indices to drop so one document (the first) of each cluster stays, sorted."""
    return sorted(x for cluster in clusters for x in cluster[1:])
