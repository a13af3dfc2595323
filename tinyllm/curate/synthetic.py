"""Synthetic data with known answers: a corpus with planted near-duplicates, and
labeled sentences in made-up languages.

`near_duplicate_corpus` makes random documents (words drawn from a Zipf
distribution over a made-up vocabulary) and plants clusters in it: an
original plus copies with a few word edits, so every copy's word-5-gram
Jaccard similarity to its original is at least `min_similarity`. It also
plants "related" pairs that share about half their text (similarity well
below 0.8), which a deduplicator must not merge. The clusters returned are
the ground truth for precision and recall (examples/bench_dedup.py).

`language_sentences` makes sentences in a few made-up languages, each with
its own alphabet or syllables, for training and testing the fastText-style
classifier (langid.py). `random_fasttext_model` builds a fastText model
file of any size (lid.176's: 176 labels, dim 16, 2M buckets, quantized) with
random weights, for the C-vs-NumPy tests and examples/bench_langid.py.
Nothing here is real text; it is for tests and benchmarks only. Read
dedup.py or langid.py next.
"""
import numpy as np

from tinyllm.curate.fasttext.format import KSUB, FastTextFile, ProductQuantizer, QuantizedMatrix

EDIT_KINDS = ("substitute", "insert", "delete", "trim", "mixed")

# Made-up languages: each draws words from its own syllables; two share an
# alphabet, so telling them apart needs character n-grams, not the alphabet.
LANGUAGES = {
    "lat": ["ka", "lo", "mi", "ne", "ru", "ta", "so", "vi", "pe", "du"],
    "ort": ["sch", "ei", "ung", "ach", "ter", "ber", "st", "ie", "au", "gen"],
    "cyr": ["ка", "ло", "ми", "не", "ру", "та", "со", "ви", "пе", "ду"],
    "gre": ["κα", "λο", "μι", "νε", "ρυ", "τα", "σο", "βι", "πε", "δυ"],
}


def near_duplicate_corpus(n_docs=2000, dup_clusters=200, cluster_size=(2, 4), related_pairs=100,
                          words=(100, 400), min_similarity=0.9, vocab_size=20000, seed=0,
                          similarity=None, kinds=EDIT_KINDS):
    """(docs, clusters): n_docs strings and the planted near-duplicate clusters (sorted index lists).

    similarity=(lo, hi) plants copies of varied kinds and rates instead: each
    copy draws a target similarity uniformly in [lo, hi) and one kind from
    `kinds` (substitute, insert, delete, trim: words cut from either end,
    mixed: any of these at each edit), and is edited until one more edit would
    take its Jaccard to the original below the target. Pairs inside a cluster
    then span the threshold, so the truth is their exact shingle_jaccard.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    vocab = _vocabulary(rng, vocab_size)
    weights = 1.0 / np.arange(1, vocab_size + 1)                  # Zipf: a few very common words
    cdf = np.cumsum(weights / weights.sum())
    cdf /= cdf[-1]

    def random_words(n):  # rng.choice(vocab_size, n, p=weights), without its O(vocab) set-up per call
        return list(vocab[cdf.searchsorted(rng.random(n), side="right")])

    groups, docs = [], []
    for _ in range(dup_clusters):
        original = random_words(int(rng.integers(*words)))
        copies = int(rng.integers(cluster_size[0], cluster_size[1] + 1)) - 1
        if similarity is None:
            members = [original] + [_edit_until(rng, original, random_words, min_similarity)
                                    for _ in range(copies)]
        else:
            members = [original] + [_edit_to(rng, original, random_words, rng.uniform(*similarity),
                                             kinds[int(rng.integers(len(kinds)))])
                                    for _ in range(copies)]
        groups.append(list(range(len(docs), len(docs) + len(members))))
        docs.extend(members)
    for _ in range(related_pairs):                                 # about half the text shared
        shared = random_words(int(rng.integers(*words)) // 2)
        docs.append(shared + random_words(len(shared)))
        docs.append(random_words(len(shared)) + shared)
    while len(docs) < n_docs:
        docs.append(random_words(int(rng.integers(*words))))
    if len(docs) > n_docs:
        raise ValueError(f"n_docs={n_docs} is too small for {dup_clusters} clusters and "
                         f"{related_pairs} related pairs ({len(docs)} documents); raise n_docs")
    order = rng.permutation(len(docs))                             # clusters do not sit together
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    clusters = sorted(sorted(int(where[i]) for i in g) for g in groups)
    return [" ".join(docs[i]) for i in order], clusters


def shingle_jaccard(a, b, n=5):
    """Exact Jaccard similarity of the lower-cased word n-gram sets of two texts."""
    sa, sb = _shingles(a.lower().split(), n), _shingles(b.lower().split(), n)
    return len(sa & sb) / max(len(sa | sb), 1)


def cluster_pairs(clusters):
    """Every unordered pair (i, j), i < j, inside each cluster, as a set."""
    return {(c[x], c[y]) for c in clusters for x in range(len(c)) for y in range(x + 1, len(c))}


def language_sentences(n, seed=0, words=(4, 12), languages=None):
    """n (label, sentence) pairs, labels cycling through the made-up languages."""
    rng = np.random.Generator(np.random.PCG64(seed))
    languages = languages or sorted(LANGUAGES)
    out = []
    for k in range(n):
        label = languages[k % len(languages)]
        syllables = LANGUAGES[label]
        sentence = [
            "".join(syllables[s] for s in rng.integers(0, len(syllables), size=int(rng.integers(1, 4))))
            for _ in range(int(rng.integers(*words)))]
        out.append((label, " ".join(sentence)))
    return out


def random_fasttext_model(words, n_labels=176, dim=16, bucket=2_000_000, minn=2, maxn=4,
                          word_ngrams=1, loss="hs", dsub=2, qnorm=True, pruned=None, qout=False,
                          seed=0):
    """A FastTextFile of a supervised model with random weights (quantized when dsub).

    words: the vocabulary (str); labels are __label__l000, ...; loss: hs, softmax,
    ova or ns; dsub=None keeps the input matrix dense, else it is product-quantized
    with dsub values per sub-quantizer (qnorm: norms quantized too); pruned=P keeps
    P random buckets (a cutoff .ftz); qout quantizes the output matrix too (dsub 2).
    Weights are scaled so that predictions are confident, as a trained model's are.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    names = [w.encode("utf-8") for w in dict.fromkeys(words)] + [b"</s>"]
    names += [f"__label__l{i:03d}".encode() for i in range(n_labels)]
    nwords = len(names) - n_labels
    counts = np.concatenate([np.sort(rng.integers(1, 10**6, nwords))[::-1],
                             np.sort(rng.integers(1, 10**6, n_labels))[::-1]])
    pruneidx = {}
    if pruned is not None:
        kept = np.sort(rng.choice(bucket, size=pruned, replace=False))
        pruneidx = dict(zip(kept.tolist(), range(pruned)))
    rows = nwords + (bucket if pruned is None else pruned)
    output = (rng.standard_normal((n_labels, dim)) * 4).astype(np.float32)         # (L, dim)
    if dsub is None:
        matrix = rng.standard_normal((rows, dim)).astype(np.float32)               # (rows, dim)
    else:
        matrix = _random_quantized(rng, rows, dim, dsub, qnorm)
        output = _random_quantized(rng, n_labels, dim, 2, qnorm, scale=4) if qout else output
    args = {"dim": dim, "ws": 5, "epoch": 5, "minCount": 1, "neg": 5, "wordNgrams": word_ngrams,
            "loss": {"hs": 1, "ns": 2, "softmax": 3, "ova": 4}[loss], "model": 3, "bucket": bucket,
            "minn": minn, "maxn": maxn, "lrUpdateRate": 100, "t": 1e-4}
    return FastTextFile(args, names, counts.astype(np.int64), np.array([0] * nwords + [1] * n_labels,
                        dtype=np.int8), int(counts.sum()), matrix, output, pruneidx,
                        -1 if pruned is None else pruned)


def _random_quantized(rng, m, dim, dsub, qnorm, scale=1.0):
    """A QuantizedMatrix of m random rows: random codes, normal centroids, norms in [0.5, 2)."""
    nsubq = -(-dim // dsub)
    lastdsub = dim - (nsubq - 1) * dsub
    centroids = (rng.standard_normal(dim * KSUB) * scale).astype(np.float32)        # (dim * 256,)
    codes = rng.integers(0, KSUB, size=(m, nsubq), dtype=np.uint8)                  # (m, nsubq)
    pq = ProductQuantizer(dim, nsubq, dsub, lastdsub, centroids)
    if not qnorm:
        return QuantizedMatrix(m, dim, codes, pq)
    norms = ProductQuantizer(1, 1, 1, 1, rng.uniform(0.5, 2.0, KSUB).astype(np.float32))
    return QuantizedMatrix(m, dim, codes, pq, rng.integers(0, KSUB, m, dtype=np.uint8), norms)


def _edit_until(rng, original, random_words, min_similarity):
    """A copy of original with random word edits, as many as keep similarity >= min_similarity."""
    copy = list(original)
    for _ in range(1 + int(rng.integers(0, max(len(original) // 50, 1)))):
        trial = list(copy)
        pos = int(rng.integers(0, len(trial)))
        kind = rng.integers(0, 3)
        if kind == 0:
            trial[pos] = random_words(1)[0]            # substitute
        elif kind == 1 and len(trial) > 10:
            del trial[pos]                             # delete
        else:
            trial.insert(pos, random_words(1)[0])      # insert
        if shingle_jaccard(" ".join(trial), " ".join(original)) < min_similarity:
            break
        copy = trial
    return copy


def _edit_to(rng, original, random_words, target, kind):
    """A copy of original edited by `kind` while its Jaccard to original stays >= target."""
    copy, reference = list(original), _shingles([w.lower() for w in original], 5)
    while len(copy) > 10:
        trial = list(copy)
        how = EDIT_KINDS[int(rng.integers(4))] if kind == "mixed" else kind
        pos = int(rng.integers(0, len(trial)))
        if how == "substitute":
            trial[pos] = random_words(1)[0]
        elif how == "insert":
            trial.insert(pos, random_words(1)[0])
        elif how == "delete":
            del trial[pos]
        elif how == "trim":
            del trial[0 if rng.integers(2) else -1]
        else:
            raise ValueError(f"edit kind {kind!r}: use one of {EDIT_KINDS}")
        trial_set = _shingles([w.lower() for w in trial], 5)
        if len(trial_set & reference) < target * len(trial_set | reference):
            break
        copy = trial
    return copy


def _vocabulary(rng, size):
    """size distinct made-up lower-case words of 2-9 letters."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen = set()
    while len(seen) < size:
        length = int(rng.integers(2, 10))
        seen.add("".join(letters[rng.integers(0, 26, size=length)]))
    return np.array(sorted(seen))


def _shingles(words, n):
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
