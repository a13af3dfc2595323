"""Near-duplicate detection: recall, precision and speed of ours against datasketch, on planted duplicates.

  python examples/bench_dedup.py                        # 5,000 documents, Jaccard 0.8
  python examples/bench_dedup.py --docs 20000 --num-perm 256

The corpus comes from tinyllm.curate.synthetic.near_duplicate_corpus: random
documents with planted clusters (an original and copies edited by one kind of
edit, substitutions, insertions, deletions, trimmed ends or a mix, to a target
word-5-gram Jaccard drawn from 0.7 to 1.0; --min-similarity S plants the old
corpus, copies at >= S) and "related" pairs that share half their text. The
truth is the exact Jaccard of every pair inside a cluster; the scores are
per pair, before clustering:
  - recall: the share of the pairs with Jaccard >= threshold + 0.05 found;
  - precision: the share of the pairs found whose exact Jaccard reaches the threshold.

The methods share the threshold, num_perm and shingles (lower-cased word
5-grams):
  - ours: find_near_duplicate_pairs, recall-first banding (minhash.recall_bands)
    and the exact Jaccard for estimates within three standard deviations of
    the threshold;
  - ours, datasketch's banding: the same code with optimal_bands' (b, r) and
    the estimate alone, which is what the prepare pipeline did before;
  - datasketch (optional: pip install datasketch): MinHash (SHA-1 per shingle)
    and MinHashLSH, inserting and querying documents one at a time, candidates
    kept when the estimated Jaccard reaches the threshold.
Each is timed after a small warm-up run. Nothing here asserts a time.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinyllm.curate.dedup import find_near_duplicate_pairs  # noqa: E402
from tinyllm.curate.minhash import optimal_bands, recall_bands  # noqa: E402
from tinyllm.curate.synthetic import cluster_pairs, near_duplicate_corpus, shingle_jaccard  # noqa: E402


def datasketch_pairs(docs, threshold, num_perm, ngram):
    """The same pairs with datasketch's MinHash and MinHashLSH (None when not installed)."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
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
    return pairs


def measure(n_docs=5000, threshold=0.8, num_perm=128, ngram=5, seed=0, with_datasketch=True,
            min_similarity=None):
    """Rows of {method, seconds, precision, recall, pairs} for each method that ran."""
    varied = dict(similarity=(0.7, 1.0)) if min_similarity is None else dict(min_similarity=min_similarity)
    docs, truth = near_duplicate_corpus(n_docs=n_docs, dup_clusters=n_docs // 10,
                                        related_pairs=n_docs // 20, seed=seed, **varied)
    jaccard = {p: shingle_jaccard(docs[p[0]], docs[p[1]], ngram) for p in cluster_pairs(truth)}
    wanted = {p for p, s in jaccard.items() if s >= threshold + 0.05}

    def ours(bands=None, exact=True):
        return lambda d: set(zip(*(x.tolist() for x in find_near_duplicate_pairs(
            d, threshold, num_perm, ngram, seed, bands=bands, exact=exact))))
    methods = [("ours", ours()),
               ("ours, datasketch's banding", ours(optimal_bands(threshold, num_perm), exact=False))]
    if with_datasketch:
        methods.append(("datasketch", lambda d: datasketch_pairs(d, threshold, num_perm, ngram)))
    rows = []
    for name, method in methods:
        if method(docs[:1000]) is None:                                # warm-up; None: not installed
            rows.append({"method": name, "skipped": "not installed (pip install datasketch)"})
            continue
        t0 = time.perf_counter()
        found = method(docs)
        seconds = time.perf_counter() - t0
        good = sum((jaccard[p] if p in jaccard else shingle_jaccard(docs[p[0]], docs[p[1]], ngram))
                   >= threshold for p in found)
        rows.append({"method": name, "seconds": seconds, "pairs": len(found),
                     "precision": good / max(len(found), 1),
                     "recall": len(found & wanted) / max(len(wanted), 1)})
    return {"docs": n_docs, "true_pairs": len(wanted), "threshold": threshold,
            "num_perm": num_perm, "ngram": ngram, "rows": rows,
            "bands": recall_bands(threshold, num_perm), "their_bands": optimal_bands(threshold, num_perm)}


def run(n_docs=5000, threshold=0.8, num_perm=128, ngram=5, seed=0, with_datasketch=True,
        min_similarity=None):
    """Measure, then print the table."""
    result = measure(n_docs, threshold, num_perm, ngram, seed, with_datasketch, min_similarity)
    print(f"{result['docs']:,} documents, {result['true_pairs']:,} planted pairs at Jaccard >= "
          f"{result['threshold'] + 0.05:.2f}, threshold {result['threshold']}, num_perm "
          f"{result['num_perm']}, {result['ngram']}-word shingles; bands x rows: ours "
          f"{'x'.join(map(str, result['bands']))}, datasketch's {'x'.join(map(str, result['their_bands']))}")
    base = next((r["seconds"] for r in result["rows"] if "seconds" in r), None)
    print(f"{'method':<28} {'seconds':>8} {'vs ours':>8} {'precision':>10} {'recall':>8} {'pairs':>7}")
    for r in result["rows"]:
        if "skipped" in r:
            print(f"{r['method']:<28} {r['skipped']}")
            continue
        print(f"{r['method']:<28} {r['seconds']:>8.2f} {r['seconds'] / base:>7.1f}x "
              f"{r['precision']:>10.4f} {r['recall']:>8.4f} {r['pairs']:>7,}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=5000, help="documents in the corpus (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default: %(default)s)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default: %(default)s)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus and hash seed (default: %(default)s)")
    p.add_argument("--min-similarity", type=float,
                   help="plant the old corpus instead: copies at Jaccard >= this (e.g. 0.9)")
    p.add_argument("--no-datasketch", action="store_true", help="time ours only")
    args = p.parse_args(argv)
    run(args.docs, args.threshold, args.num_perm, args.ngram, args.seed, not args.no_datasketch,
        args.min_similarity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
