"""The C twin of langid.py's prediction: csrc/langid.c through the cffi library `make lib` builds.

    predictor = c_predictor(model, use_c=None)   # None when the library lacks langid.c
    ids, scores, counts = predictor.predict(blob, ends, k, threshold)

`CPredictor` hands csrc/langid.c a view of one FastTextModel: the dictionary
(bytes, offsets, types and a hash table that langid_model_build fills), the
prune map as a dense (bucket,) array (row offset, or -1 for a dropped bucket),
both matrices (dense rows, or product-quantizer codes, centroids and norm
codes), the Huffman tree and the sigmoid table. It copies nothing it does not
have to: the arrays of the loaded file are passed as they are, and kept alive
with the predictor. `predict` runs many lines in one call and returns, per
line, up to k label ids and log-probabilities (fastText's scores), best first.

This is not the definition (langid.py is; tests/test_c_langid.py holds
the two equal), and it checks nothing the caller (FastTextModel.predict_arrays)
has checked. Read csrc/langid.c next.
"""
import numpy as np

from tinyllm.errors import BackendUnavailable
from tinyllm.curate import native
from tinyllm.curate.fasttext.format import QuantizedMatrix

_SYMBOLS = ("langid_model_build", "langid_predict")
_LOSS_IDS = {"hs": 1, "ns": 2, "softmax": 3, "ova": 4}


def c_library():
    """(ffi, lib) of the C kernels when they were built with langid.c, else None."""
    return native.c_library(_SYMBOLS)


def c_predictor(model, use_c=None):
    """A CPredictor for use_c=None (when built), True (required), or None for use_c=False."""
    if use_c is False:
        return None
    found = c_library()
    if found is None:
        if use_c:
            raise BackendUnavailable("the C language-id kernels (csrc/langid.c) are not in the "
                                     "built library; run `make lib`, or pass use_c=None to fall "
                                     "back to NumPy")
        return None
    return CPredictor(model, *found)


class CPredictor:
    """csrc/langid.c's langid_model for one FastTextModel, and batched prediction with it."""

    def __init__(self, model, ffi, lib):
        self.ffi, self.lib, self._keep = ffi, lib, []
        file, features = model.file, model.features
        m = ffi.new("langid_model *")
        m.bytes = self._ptr("uint8_t *", np.frombuffer(b"".join(file.words) or b"\0", np.uint8))
        offsets = np.zeros(len(file.words) + 1, np.int64)                   # (size + 1,)
        np.cumsum([len(w) for w in file.words], out=offsets[1:])
        m.offsets = self._ptr("int64_t *", offsets)
        m.types = self._ptr("int8_t *", np.ascontiguousarray(file.types, np.int8))
        slots = np.empty(1 << (2 * len(file.words)).bit_length(), np.int32)  # > 2 * size: short probes
        m.slots, m.n_slots = self._ptr("int32_t *", slots), len(slots)
        m.size, m.nwords = len(file.words), features.nwords
        a = model.args
        m.minn, m.maxn, m.word_ngrams, m.bucket = a["minn"], a["maxn"], a["wordNgrams"], a["bucket"]
        m.prune = self._prune_map(features, a["bucket"])
        self._matrix(m.input, file.input)
        self._matrix(m.output, file.output)
        m.loss, m.nlabels = _LOSS_IDS[model.loss], len(model.labels)
        if model.loss == "hs":
            left, right = model._tree
            m.tree_left = self._ptr("int32_t *", np.asarray(left, np.int32))
            m.tree_right = self._ptr("int32_t *", np.asarray(right, np.int32))
        m.sigmoid = self._ptr("float *", np.ascontiguousarray(model._sigmoid, np.float32))
        if model.loss != "hs" and not isinstance(file.output, QuantizedMatrix):
            m.output_t = self._ptr("float *", np.ascontiguousarray(np.asarray(file.output).T,
                                                                   np.float32))    # (dim, L)
        lib.langid_model_build(m)
        self._model = m

    def predict(self, blob, ends, k, threshold):
        """(ids (n, k) int32, scores (n, k) float32, counts (n,) int32) for the lines of blob.

        Line i is blob[ends[i - 1]:ends[i]] (ends (n,) int64, ends[-1] = 0); row i holds
        counts[i] results, then id -1 and score -inf. k >= 1.
        """
        n = len(ends)
        ids = np.empty((n, k), np.int32)                                    # (n, k)
        scores = np.empty((n, k), np.float32)                               # (n, k)
        counts = np.empty(n, np.int32)                                      # (n,)
        ends = np.ascontiguousarray(ends, np.int64)
        buffer = self.ffi.from_buffer
        done = self.lib.langid_predict(self._model, buffer("uint8_t[]", blob or b"\0"),
                                       buffer("int64_t[]", ends), n, k, float(threshold),
                                       buffer("int32_t[]", ids), buffer("float[]", scores),
                                       buffer("int32_t[]", counts))
        if done < 0:
            raise MemoryError(f"langid_predict: out of memory on {n} lines of {len(blob)} bytes")
        return ids, scores, counts

    def predict_line(self, blob, k, threshold):
        """(label ids (list), log-probabilities (float32 array)) of one line: predict's fast path."""
        ffi = self.ffi
        ids, scores, count = ffi.new("int32_t[]", k), ffi.new("float[]", k), ffi.new("int32_t *")
        if self.lib.langid_predict(self._model, ffi.from_buffer("uint8_t[]", blob or b"\0"),
                                   ffi.new("int64_t *", len(blob)), 1, k, threshold, ids,
                                   scores, count) < 0:
            raise MemoryError(f"langid_predict: out of memory on a line of {len(blob)} bytes")
        n = count[0]
        return ffi.unpack(ids, n), np.frombuffer(ffi.buffer(scores, 4 * n), np.float32)

    def _matrix(self, out, matrix):
        """Fill a langid_matrix from a dense (m, n) array or a QuantizedMatrix."""
        if not isinstance(matrix, QuantizedMatrix):
            rows = np.ascontiguousarray(matrix, np.float32)                 # (m, n)
            out.rows, (out.m, out.n) = self._ptr("float *", rows), rows.shape
            return
        pq = matrix.pq
        out.m, out.n, out.nsubq, out.dsub, out.lastdsub = matrix.m, matrix.n, pq.nsubq, pq.dsub, pq.lastdsub
        out.codes = self._ptr("uint8_t *", np.ascontiguousarray(matrix.codes, np.uint8))
        out.centroids = self._ptr("float *", np.ascontiguousarray(pq.centroids, np.float32))
        if matrix.norm_codes is not None:
            out.norm_codes = self._ptr("uint8_t *", np.ascontiguousarray(matrix.norm_codes, np.uint8))
            out.norm_centroids = self._ptr("float *", np.ascontiguousarray(matrix.npq.centroids,
                                                                           np.float32))

    def _prune_map(self, features, bucket):
        """NULL when nothing is pruned, else (bucket,) int32: bucket -> row offset, -1 dropped."""
        if features.pruneidx_size < 0:
            return self.ffi.NULL
        prune = np.full(max(bucket, 1), -1, np.int32)                       # (bucket,)
        if features.pruneidx_size > 0:
            keys, rows = features._prune_keys, features._prune_rows
            inside = (keys >= 0) & (keys < bucket)
            prune[keys[inside]] = rows[inside]
        return self._ptr("int32_t *", prune)

    def _ptr(self, ctype, arr):
        """A pointer into arr, which stays alive as long as this predictor."""
        self._keep.append(arr)
        return self.ffi.cast(ctype, arr.ctypes.data)
