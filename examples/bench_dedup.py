"""Near-duplicate detection: quality and speed of ours against datasketch, on planted duplicates.

  python examples/bench_dedup.py                        # 5,000 documents, Jaccard 0.8
  python examples/bench_dedup.py --docs 20000 --num-perm 256

The corpus comes from tinyllm.curate.synthetic.near_duplicate_corpus: random
documents with planted clusters (an original and copies with a few word edits,
each copy at word-5-gram Jaccard >= 0.9 to its original) and "related" pairs
that share half their text (which must not be merged). A duplicate pair is
two documents in one cluster; precision and recall compare the pairs inside
the returned clusters with the planted ones.

Both methods run with the same threshold, num_perm and shingles (lower-cased
word 5-grams) and the same rule: LSH candidates whose estimated Jaccard
reaches the threshold, joined into clusters. datasketch (optional: pip
install datasketch) hashes each shingle with SHA-1 and inserts and queries
documents one at a time; ours (tinyllm.curate.dedup.find_near_duplicates)
hashes everything as arrays. Each is timed after a small warm-up run. Nothing
here asserts a time.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyllm.curate.dedup import find_near_duplicates, union_find_clusters  # noqa: E402
from tinyllm.curate.synthetic import cluster_pairs, near_duplicate_corpus  # noqa: E402


def datasketch_clusters(docs, threshold, num_perm, ngram):
    """The same pipeline with datasketch's MinHash and MinHashLSH (None when not installed)."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    import numpy as np
    lsh, sketches = MinHashLSH(threshold=threshold, num_perm=num_perm), []
    for i, doc in enumerate(docs):
        words = doc.lower().split()
        shingles = {" ".join(words[k:k + ngram]).encode() for k in range(max(len(words) - ngram + 1, 1))}
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles))
        sketches.append(m)
        lsh.insert(i, m)
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j != i and m.jaccard(sketches[j]) >= threshold:
                pairs.add((min(i, j), max(i, j)))
    i, j = (np.array(side, dtype=np.int64) for side in zip(*pairs)) if pairs else ([], [])
    return union_find_clusters(len(docs), np.asarray(i), np.asarray(j))


def measure(n_docs=5000, threshold=0.8, num_perm=128, ngram=5, seed=0, with_datasketch=True):
    """Rows of {method, seconds, precision, recall, pairs} for each method that ran."""
    docs, truth = near_duplicate_corpus(n_docs=n_docs, dup_clusters=n_docs // 10,
                                        related_pairs=n_docs // 20, seed=seed)
    true_pairs = cluster_pairs(truth)
    methods = [("tinyllm (NumPy)", lambda d: find_near_duplicates(d, threshold, num_perm, ngram, seed))]
    if with_datasketch:
        methods.append(("datasketch", lambda d: datasketch_clusters(d, threshold, num_perm, ngram)))
    rows = []
    for name, method in methods:
        if method(docs[:1000]) is None:                                # warm-up; None: not installed
            rows.append({"method": name, "skipped": "not installed (pip install datasketch)"})
            continue
        t0 = time.perf_counter()
        clusters = method(docs)
        seconds = time.perf_counter() - t0
        found = cluster_pairs(clusters)
        hits = len(found & true_pairs)
        rows.append({"method": name, "seconds": seconds, "pairs": len(found),
                     "precision": hits / max(len(found), 1), "recall": hits / max(len(true_pairs), 1)})
    return {"docs": n_docs, "true_pairs": len(true_pairs), "threshold": threshold,
            "num_perm": num_perm, "ngram": ngram, "rows": rows}


def run(n_docs=5000, threshold=0.8, num_perm=128, ngram=5, seed=0, with_datasketch=True):
    """Measure, then print the table."""
    result = measure(n_docs, threshold, num_perm, ngram, seed, with_datasketch)
    print(f"{result['docs']:,} documents, {result['true_pairs']:,} planted duplicate pairs, "
          f"threshold {result['threshold']}, num_perm {result['num_perm']}, {result['ngram']}-word shingles")
    base = next((r["seconds"] for r in result["rows"] if "seconds" in r), None)
    print(f"{'method':<18} {'seconds':>8} {'vs ours':>8} {'precision':>10} {'recall':>8} {'pairs':>7}")
    for r in result["rows"]:
        if "skipped" in r:
            print(f"{r['method']:<18} {r['skipped']}")
            continue
        print(f"{r['method']:<18} {r['seconds']:>8.2f} {r['seconds'] / base:>7.1f}x "
              f"{r['precision']:>10.3f} {r['recall']:>8.3f} {r['pairs']:>7,}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=5000, help="documents in the corpus (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default: %(default)s)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default: %(default)s)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus and hash seed (default: %(default)s)")
    p.add_argument("--no-datasketch", action="store_true", help="time ours only")
    args = p.parse_args(argv)
    run(args.docs, args.threshold, args.num_perm, args.ngram, args.seed, not args.no_datasketch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
