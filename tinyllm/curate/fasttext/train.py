"""Train a fastText-style supervised classifier in NumPy; the result saves as a fastText .bin.

The model is fastText's: the mean of the input rows of a line's words,
character n-grams and word n-grams (fasttext/features.py) is the hidden
vector; a linear layer scores the labels; the loss is softmax, one-vs-all
(ova) or hierarchical softmax (hs). As in fastText, the dictionary holds
words (count >= minCount) then labels (count >= minCountLabel), each sorted
by decreasing count; every line ends with the token "</s>"; the input matrix
is (nwords + bucket, dim), uniform in +-1/dim, the output matrix starts at
zero; the learning rate decays linearly to 0 over epoch passes; the hidden
gradient is divided by the number of input rows before it is added to them.

Unlike fastText, updates are applied to mini-batches of `batch_size` lines
(the sum of their per-line gradients, like that many hogwild threads) with
exact sigmoids instead of a table, and lines are taken in file order. The
weights therefore differ from fastText's; the file format and the meaning of
every weight are the same, so fastText loads and predicts with the result.
This file does not predict: langid.FastTextModel does (train_supervised there
wraps `train`).
"""
import collections

import numpy as np

from tinyllm.errors import DataError
from tinyllm.curate.fasttext.features import EOS, Features, tokens
from tinyllm.curate.fasttext.format import INT_ARGS, LOSSES, FastTextFile

DEFAULTS = {"lr": 0.1, "dim": 100, "ws": 5, "epoch": 5, "minCount": 1, "minCountLabel": 0,
            "minn": 0, "maxn": 0, "neg": 5, "wordNgrams": 1, "loss": "softmax",
            "bucket": 2000000, "lrUpdateRate": 100, "t": 1e-4, "label": "__label__",
            "verbose": 0, "seed": 0, "thread": 1, "batch_size": 8}
ALIASES = {"min_count": "minCount", "word_ngrams": "wordNgrams", "lr_update_rate": "lrUpdateRate",
           "label_prefix": "label", "min_count_label": "minCountLabel"}
_LOSS_IDS = {name: i for i, name in LOSSES.items()}


def train(input, **kwargs):
    """Train on a UTF-8 file of "__label__x some text" lines; returns a FastTextFile."""
    a = _arguments(kwargs)
    lines = _read_lines(input)
    words, counts, types, ntokens = _dictionary(lines, a)
    args = {k: a[k] for k in INT_ARGS if k not in ("loss", "model")}
    args.update(loss=_LOSS_IDS[a["loss"]], model=3, t=a["t"])
    if a["wordNgrams"] <= 1 and a["maxn"] == 0:
        args["bucket"] = 0  # as the fasttext package: no n-gram rows, so no buckets
    features = Features(words, types, args)
    examples = [(rows, labels, len(toks)) for rows, labels, toks in
                ((*features.line(toks), toks) for toks in lines)]
    nwords = int((types == 0).sum())
    nlabels = len(words) - nwords
    rng = np.random.Generator(np.random.PCG64(a["seed"]))
    dim = a["dim"]
    w_in = rng.uniform(-1.0 / dim, 1.0 / dim, size=(nwords + args["bucket"], dim)).astype(np.float32)
    w_out = np.zeros((nlabels, dim), dtype=np.float32)
    paths = _hs_paths(counts[types == 1]) if a["loss"] == "hs" else None
    usable = [(r, l, n) for r, l, n in examples if len(r) and l]
    if not usable:
        raise DataError(f"{input}: no line has both a label ({a['label']}...) and a word; "
                        "write one example per line as '__label__name some text'")
    total = a["epoch"] * ntokens
    seen = 0
    for _ in range(a["epoch"]):
        for lo in range(0, len(usable), a["batch_size"]):
            batch = usable[lo:lo + a["batch_size"]]
            lr = a["lr"] * max(0.0, 1.0 - seen / total)
            _step(w_in, w_out, batch, lr, a["loss"], paths, rng)
            seen += sum(n for _, _, n in batch)
    return FastTextFile(args, words, counts, types, ntokens, w_in, w_out)


def _step(w_in, w_out, batch, lr, loss, paths, rng):
    """One SGD update from a mini-batch: the per-line gradients of the batch, summed."""
    rows = np.concatenate([r for r, _, _ in batch])                          # (R,)
    sizes = np.array([len(r) for r, _, _ in batch])                          # (B,)
    starts = np.cumsum(sizes) - sizes
    hidden = np.add.reduceat(w_in[rows], starts, axis=0) / sizes[:, None]    # (B, dim)
    B, L = len(batch), w_out.shape[0]
    if loss == "hs":
        grad = _hs_step(w_out, hidden, [labels[rng.integers(len(labels))] for _, labels, _ in batch],
                        paths, lr)
    else:
        logits = hidden @ w_out.T                                            # (B, L)
        target = np.zeros((B, L), dtype=np.float32)
        if loss == "softmax":
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for b, (_, labels, _) in enumerate(batch):                      # one of the line's labels
                target[b, labels[rng.integers(len(labels))]] = 1.0
        else:                                                                # ova: all the line's labels
            probs = 1.0 / (1.0 + np.exp(-logits))
            for b, (_, labels, _) in enumerate(batch):
                target[b, labels] = 1.0
        alpha = (lr * (target - probs)).astype(np.float32)                   # (B, L)
        grad = alpha @ w_out                                                 # (B, dim), before w_out moves
        w_out += alpha.T @ hidden.astype(np.float32)
    grad /= sizes[:, None]                                                   # normalizeGradient
    np.add.at(w_in, rows, np.repeat(grad.astype(np.float32), sizes, axis=0))


def _hs_step(w_out, hidden, targets, paths, lr):
    """Binary logistic updates along each target label's path to the root; returns (B, dim) grads."""
    nodes, codes = paths
    node = nodes[targets]                                                    # (B, D) -1 padded
    code = codes[targets]                                                    # (B, D)
    live = node >= 0
    weights = w_out[np.where(live, node, 0)]                                 # (B, D, dim)
    score = 1.0 / (1.0 + np.exp(-np.einsum("bdk,bk->bd", weights, hidden)))
    alpha = np.where(live, lr * (code - score), 0.0).astype(np.float32)      # (B, D)
    grad = np.einsum("bd,bdk->bk", alpha, weights)
    b_idx, d_idx = np.nonzero(live)
    np.add.at(w_out, node[b_idx, d_idx], alpha[b_idx, d_idx, None] * hidden[b_idx].astype(np.float32))
    return grad


def _hs_paths(label_counts):
    """(nodes (L, D), codes (L, D)): each label's inner nodes to the root (output rows) and bits."""
    left, right = huffman_tree(label_counts)
    L = len(label_counts)
    parent = np.full(2 * L - 1, -1)
    is_right = np.zeros(2 * L - 1, dtype=bool)
    for i in range(L, 2 * L - 1):
        parent[left[i]], parent[right[i]], is_right[right[i]] = i, i, True
    path_nodes, path_codes = [], []
    for leaf in range(L):
        ns, cs, j = [], [], leaf
        while parent[j] != -1:
            ns.append(parent[j] - L)
            cs.append(float(is_right[j]))
            j = parent[j]
        path_nodes.append(ns)
        path_codes.append(cs)
    depth = max(map(len, path_nodes), default=0)
    nodes = np.array([p + [-1] * (depth - len(p)) for p in path_nodes]).reshape(L, depth)
    codes = np.array([c + [0.0] * (depth - len(c)) for c in path_codes]).reshape(L, depth)
    return nodes, codes


def huffman_tree(counts):
    """(left, right) child arrays of fastText's Huffman tree over label counts (buildTree).

    Nodes 0..L-1 are the labels (sorted by decreasing count, as the dictionary
    stores them), L..2L-2 the inner nodes; the root is 2L-2.
    """
    L = len(counts)
    count = np.concatenate([np.asarray(counts, dtype=np.int64), np.full(max(L - 1, 0), 10**15)])
    left, right = np.full(2 * L - 1, -1), np.full(2 * L - 1, -1)
    leaf, node = L - 1, L
    for i in range(L, 2 * L - 1):
        pick = []
        for _ in range(2):   # the two smallest: leaves from the rare end, or built nodes in order
            if leaf >= 0 and count[leaf] < count[node]:
                pick.append(leaf)
                leaf -= 1
            else:
                pick.append(node)
                node += 1
        left[i], right[i] = pick
        count[i] = count[pick[0]] + count[pick[1]]
    return left, right


def _arguments(kwargs):
    a = dict(DEFAULTS)
    for key, value in kwargs.items():
        key = ALIASES.get(key, key)
        if key not in DEFAULTS:
            raise DataError(f"train_supervised: unknown argument {key!r}; known: "
                            f"{', '.join(sorted(DEFAULTS))}")
        a[key] = value
    if a["loss"] not in ("softmax", "hs", "ova"):
        raise DataError(f"loss={a['loss']!r}: train_supervised trains 'softmax', 'hs' or 'ova' "
                        "(fastText's 'ns' is for word vectors)")
    for key in ("dim", "epoch", "batch_size"):
        if a[key] < 1:
            raise DataError(f"{key}={a[key]!r}: it must be at least 1")
    if a["wordNgrams"] > 1 or a["maxn"] > 0:
        if a["bucket"] < 1:
            raise DataError("bucket must be >= 1 when wordNgrams > 1 or maxn > 0: n-grams "
                            "are hashed into that many rows")
    return a


def _read_lines(path):
    """Token lists of each line as fastText reads a training file ("</s>" after each newline)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the training file ({e.strerror})") from None
    pieces = data.split(b"\n")
    lines = [tokens(p) for p in pieces[:-1]]
    if pieces[-1].strip():
        lines.append(tokens(pieces[-1])[:-1])  # no newline at the end: no "</s>" either
    return lines


def _dictionary(lines, a):
    """(words, counts, types, ntokens): words then labels, by decreasing count, thresholded."""
    label = a["label"].encode("utf-8")
    counter = collections.Counter(t for toks in lines for t in toks)   # first appearance order kept
    ntokens = sum(counter.values())
    entries = [(int(t.startswith(label) and t != EOS), -c, i, t)
               for i, (t, c) in enumerate(counter.items())]
    entries.sort()                                                       # words first, frequent first
    kept = [(kind, -neg, t) for kind, neg, _, t in entries
            if -neg >= (a["minCountLabel"] if kind else a["minCount"])]
    if not any(kind for kind, _, _ in kept):
        raise DataError(f"no labels in the training data (tokens starting with {a['label']!r}, "
                        f"at least minCountLabel={a['minCountLabel']} times)")
    words = [t for _, _, t in kept]
    counts = np.array([c for _, c, _ in kept], dtype=np.int64)
    types = np.array([kind for kind, _, _ in kept], dtype=np.int8)
    return words, counts, types, ntokens
