"""Language identification with fastText supervised models, in NumPy.

    model = FastTextModel.load("lid.176.ftz")      # .bin or quantized .ftz
    labels, probs = model.predict("Bonjour à tous", k=2)
    # (('__label__fr', '__label__en'), array([0.97, 0.01]))

`predict` reproduces fastText's FastText::predictLine (the Python package's
`model.predict`): the line's input rows (fasttext/features.py) are averaged
into the hidden vector, then
  - softmax: p = softmax(output @ hidden);
  - one-vs-all (ova) and negative sampling (ns): p_i = sigmoid(output_i @ hidden)
    through fastText's 512-entry sigmoid table;
  - hierarchical softmax (hs): a Huffman tree built from the label counts;
    a depth-first search multiplies sigmoid(node @ hidden) (right child) or
    1 - that (left) down to each leaf, pruning branches that cannot enter the
    top k, as HierarchicalSoftmaxLoss::dfs does;
and each reported probability is exp(log(p + 1e-5)), fastText's smoothed log.
Arithmetic follows fastText's float32 order (sums row by row, dot products
column by column), so table lookups land in the same entries; exp and log
are taken in double and rounded to float (a correctly rounded expf/logf).

This file is the definition. When the C library has csrc/langid.c (`make
lib`), predict and predict_arrays run there instead (through langid_c.py),
many lines per call; tests/test_c_langid.py holds the two equal and
use_c=False keeps NumPy.

Where to get a model: fastText's published language-id models (lid.176.bin,
lid.176.ftz) from the fastText website's language identification page, or
train one with `train_supervised` (fasttext/train.py) on "__label__xx text"
lines. This file does not train; read fasttext/train.py for that.
"""
import pathlib

import numpy as np

from tinyllm.errors import DataError
from tinyllm.curate.fasttext.features import Features, tokens
from tinyllm.curate.fasttext.format import LOSSES, MODELS, QuantizedMatrix, read_model, write_model
from tinyllm.curate.fasttext.train import huffman_tree, train
from tinyllm.curate.langid_c import c_predictor

__all__ = ["FastTextModel", "train_supervised"]

_SIGMOID_TABLE = 512
_MAX_SIGMOID = 8


class FastTextModel:
    """A fastText supervised model: load(path), predict(text, k, threshold), save(path)."""

    def __init__(self, file, path="<memory>", use_c=None):
        self.file, self.path = file, str(path)
        self.args = file.args
        self.loss = LOSSES.get(self.args["loss"], str(self.args["loss"]))
        if MODELS.get(self.args["model"]) != "supervised":
            raise DataError(f"{path}: a fastText {MODELS.get(self.args['model'], 'unknown')} "
                            "model (word vectors), not a supervised classifier; language "
                            "identification needs one such as lid.176.bin or lid.176.ftz")
        self.features = Features(file.words, file.types, self.args, file.pruneidx, file.pruneidx_size)
        self.labels = [w.decode("utf-8", "replace") for w, t in zip(file.words, file.types) if t == 1]
        if not self.labels:
            raise DataError(f"{path}: the model has no labels; train it on '__label__x text' lines")
        if self.loss == "hs":
            self._tree = huffman_tree(file.counts[file.types == 1])
        self._sigmoid = _sigmoid_table()
        self._c = c_predictor(self, use_c)   # csrc/langid.c, or None: predict in NumPy

    @classmethod
    def load(cls, path, use_c=None):
        """Read a fastText .bin or .ftz file; use_c: None (C when built), True, False (NumPy)."""
        path = pathlib.Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such fastText model; download one (e.g. lid.176.ftz from "
                            "the fastText language identification page) or train one with "
                            "tinyllm.data.langid.train_supervised")
        return cls(read_model(path), path, use_c)

    def save(self, path):
        """Write the model in fastText's format (byte for byte what was loaded)."""
        write_model(path, self.file)

    @property
    def quantized(self):
        return isinstance(self.file.input, QuantizedMatrix)

    def predict(self, text, k=1, threshold=0.0):
        """(labels, probs) as the fasttext package returns them.

        One string: (tuple of labels, float64 array). A list of strings: (list
        of label lists, list of float32 arrays). k=-1 returns every label.
        """
        if isinstance(text, str) and self._c is not None:                  # one line: the short way
            blob = text.encode("utf-8")
            if b"\n" in blob:
                raise ValueError("predict processes one line at a time (remove '\\n')")
            ids, scores = self._c.predict_line(blob, self._check_k(k), float(np.float32(threshold)))
            return (tuple(self.labels[i] for i in ids),
                    np.exp(scores, dtype=np.float32).astype(np.float64))
        ids, probs, counts = self.predict_arrays(text if isinstance(text, list) else [text], k,
                                                 threshold)
        rows, n = ids.tolist(), counts.tolist()
        labels = [[self.labels[i] for i in row[:c]] for row, c in zip(rows, n)]
        if isinstance(text, list):
            return labels, [p[:c] for p, c in zip(probs, n)]
        return tuple(labels[0]), probs[0, :n[0]].astype(np.float64)

    def predict_arrays(self, lines, k=1, threshold=0.0):
        """(label ids (n, k) int32, probs (n, k) float32, counts (n,)) for a list of n lines.

        Row i holds the counts[i] best labels of line i, best first, then id -1
        and probability 0; k=-1 (or any k above the number of labels) means all.
        Runs in C (csrc/langid.c, many lines per call) when the library has it.
        """
        k = self._check_k(k)
        if self._c is None:
            return self._predict_numpy(lines, k, threshold)
        try:
            text = "\n".join(lines)
        except TypeError:
            bad = next(t for t in lines if not isinstance(t, str))
            raise DataError(f"predict takes a str or a list of str, got {type(bad).__name__}") from None
        blob = text.encode("utf-8")
        ends = np.append(np.flatnonzero(np.frombuffer(blob, np.uint8) == 10), len(blob))
        if len(ends) != max(len(lines), 1):
            raise ValueError("predict processes one line at a time (remove '\\n')")
        ids, scores, counts = self._c.predict(blob, ends[:len(lines)], k, np.float32(threshold))
        return ids, np.exp(scores, dtype=np.float32), counts

    def _check_k(self, k):
        """k as a count of labels: -1 and anything above len(labels) mean every label."""
        if k == -1:
            return len(self.labels)
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise DataError(f"k={k!r}: it must be a positive integer, or -1 for every label")
        return min(int(k), len(self.labels))

    def _predict_numpy(self, lines, k, threshold):
        """predict_arrays, one _predict_line at a time: the definition."""
        ids = np.full((len(lines), k), -1, np.int32)                         # (n, k)
        probs = np.zeros((len(lines), k), np.float32)                        # (n, k)
        counts = np.zeros(len(lines), np.int32)                              # (n,)
        for i, line in enumerate(lines):
            scored = self._predict_line(line, k, threshold)
            counts[i] = len(scored)
            for j, (score, label) in enumerate(scored):
                ids[i, j], probs[i, j] = label, np.exp(score, dtype=np.float32)
        return ids, probs, counts

    def _predict_line(self, text, k, threshold):
        """[(log probability, label id)] best first, at most k, for one line of text."""
        if not isinstance(text, str):
            raise DataError(f"predict takes a str or a list of str, got {type(text).__name__}")
        if "\n" in text:
            raise ValueError("predict processes one line at a time (remove '\\n')")
        rows, _ = self.features.line(tokens(text.encode("utf-8")))
        if len(rows) == 0:
            return []
        hidden = self.hidden(rows)
        if self.loss == "hs":
            return self._hs_top_k(hidden, k, np.float32(threshold))
        return _top_k(self.output_probs(hidden), k, np.float32(threshold))

    def hidden(self, rows):
        """Mean of the input rows in float32, summed in order as Model::computeHidden does."""
        matrix = self.file.input
        if isinstance(matrix, QuantizedMatrix):
            unit, norms = matrix.rows(rows)
            vectors = unit * norms[:, None]                                  # (n, dim) alpha * c
        else:
            vectors = matrix[rows]                                           # (n, dim)
        total = np.cumsum(vectors, axis=0, dtype=np.float32)[-1]             # sequential float32 sum
        return total * np.float32(1.0 / len(rows))                           # (dim,)

    def scores(self, hidden, rows=None):
        """output[rows] @ hidden in float32, one column at a time (DenseMatrix::dotRow's order)."""
        matrix = self.file.output
        if isinstance(matrix, QuantizedMatrix):
            ids = np.arange(matrix.m) if rows is None else rows
            weights, norms = matrix.rows(ids)                                # mulcode: dot, then * norm
        else:
            weights, norms = (matrix if rows is None else matrix[rows]), None
        out = np.zeros(weights.shape[0], dtype=np.float32)                   # (labels,)
        for j in range(weights.shape[1]):
            out += weights[:, j] * hidden[j]
        return out if norms is None else out * norms

    def output_probs(self, hidden):
        """p for every label under the softmax, ova or ns loss."""
        out = self.scores(hidden)
        if self.loss == "softmax":
            e = np.exp((out - out.max()).astype(np.float64)).astype(np.float32)
            z = np.cumsum(e, dtype=np.float32)[-1]
            return e / z
        if self.loss in ("ova", "ns"):
            return self._sigmoid_lookup(out)
        raise DataError(f"{self.path}: unknown loss id {self.args['loss']} (fastText's are 1 hs, "
                        "2 ns, 3 softmax, 4 ova); the file is corrupt or from another tool")

    def _sigmoid_lookup(self, x):
        """Loss::sigmoid: 0 below -8, 1 above 8, else a table entry (float32 index arithmetic)."""
        f32 = np.float32
        idx = ((x + f32(_MAX_SIGMOID)) * f32(_SIGMOID_TABLE) / f32(_MAX_SIGMOID) / f32(2))
        idx = np.clip(idx, 0, _SIGMOID_TABLE).astype(np.int64)
        return np.where(x < -_MAX_SIGMOID, f32(0), np.where(x > _MAX_SIGMOID, f32(1),
                                                            self._sigmoid[idx])).astype(np.float32)

    def _hs_top_k(self, hidden, k, threshold):
        """HierarchicalSoftmaxLoss::dfs with its heap: [(score, label)] best first."""
        left, right = self._tree
        n_labels = len(self.labels)
        f = self.scores(hidden, np.arange(n_labels - 1))                     # (labels-1,) inner nodes
        # f = 1 / (1 + exp(-f)): exp in double rounded to float (a correctly rounded expf,
        # as glibc's nearly is), the sum in float, the division in double (fastText's 1. / ...)
        with np.errstate(over="ignore"):  # exp(-f) = inf for very negative f gives 0, as in C
            e = np.exp(-f.astype(np.float64)).astype(np.float32)
            f = (1.0 / (np.float32(1) + e).astype(np.float64)).astype(np.float32)
        log_threshold = _std_log(threshold)
        heap = []  # fastText's min-heap of (score, label): heap[0] is the k-th best so far

        def dfs(node, score):
            if score < log_threshold or (len(heap) == k and score < heap[0][0]):
                return
            if node < n_labels:                                              # a leaf
                _heap_offer(heap, (score, node), k)
                return
            p = f[node - n_labels]
            dfs(left[node], np.float32(score + _std_log(1.0 - float(p))))
            dfs(right[node], np.float32(score + _std_log(float(p))))

        dfs(2 * n_labels - 2, np.float32(0.0))
        return _sort_heap(heap)


def train_supervised(input, **args):
    """Train a fastText-style classifier on "__label__x text" lines; returns a FastTextModel.

    Takes fastText's argument names (lr, dim, epoch, wordNgrams, minn, maxn,
    loss, bucket, ...; see fasttext_train.train). Save it with model.save(path):
    the real fastText package loads that .bin.
    """
    return FastTextModel(train(input, **args), path=input)


def _top_k(probs, k, threshold):
    """Loss::findKBest: labels with p >= threshold, the k highest, as [(log score, label)]."""
    scores = np.log(probs.astype(np.float64) + 1e-5).astype(np.float32)
    heap = []
    for i in np.flatnonzero(probs >= threshold).tolist():
        if len(heap) == k and scores[i] < heap[0][0]:
            continue
        _heap_offer(heap, (scores[i], i), k)
    return _sort_heap(heap)


# Ties are common (the sigmoid table maps nearby scores to one value), and
# fastText orders tied labels by where they sit in its heap. These three are
# libstdc++'s push_heap, pop_heap and sort_heap with fastText's comparePairs
# (a "before" b when a's score is greater), so tied labels come out in
# fastText's order.

def _heap_offer(heap, item, k):
    """push_heap, then pop_heap + pop_back when the heap holds more than k."""
    heap.append(item)
    _sift_up(heap, len(heap) - 1, 0, item)
    if len(heap) > k:
        last = heap[-1]
        heap[-1] = heap[0]
        _adjust(heap, 0, len(heap) - 1, last)
        heap.pop()


def _sort_heap(heap):
    """std::sort_heap: best score first; returns a new list."""
    heap = list(heap)
    for end in range(len(heap) - 1, 0, -1):
        value = heap[end]
        heap[end] = heap[0]
        _adjust(heap, 0, end, value)
    return heap


def _sift_up(heap, hole, top, value):
    """libstdc++ __push_heap: move value up from hole while its parent scores higher."""
    parent = (hole - 1) // 2
    while hole > top and heap[parent][0] > value[0]:
        heap[hole] = heap[parent]
        hole, parent = parent, (parent - 1) // 2
    heap[hole] = value


def _adjust(heap, hole, length, value):
    """libstdc++ __adjust_heap over heap[:length]: sift the hole down, then value up."""
    top, child = hole, hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if heap[child][0] > heap[child - 1][0]:
            child -= 1
        heap[hole] = heap[child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        heap[hole] = heap[child - 1]
        hole = child - 1
    _sift_up(heap, hole, top, value)


def _std_log(x):
    """fastText's std_log: log(x + 1e-5) in double, rounded to float32."""
    return np.float32(np.log(np.float64(np.float32(x)) + 1e-5))


def _sigmoid_table():
    """Loss's t_sigmoid_: 513 float32 values of 1 / (1 + exp(-x)) for x from -8 to 8."""
    i = np.arange(_SIGMOID_TABLE + 1)
    x = (i * 2 * _MAX_SIGMOID).astype(np.float32) / np.float32(_SIGMOID_TABLE) - np.float32(_MAX_SIGMOID)
    return (1.0 / (1.0 + np.exp(-x).astype(np.float64))).astype(np.float32)
