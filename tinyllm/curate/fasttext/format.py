"""The fastText model file format (.bin, and .ftz with product-quantized matrices).

Layout, all little-endian, as fastText 0.9 writes it (FastText::saveModel):

    int32 magic 793712314, int32 version (12; 11 is read too)
    args:  int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model,
           bucket, minn, maxn, lrUpdateRate; float64 t
           (loss: 1 hs, 2 ns, 3 softmax, 4 ova; model: 1 cbow, 2 skipgram, 3 supervised)
    dictionary: int32 size, nwords, nlabels; int64 ntokens, pruneidx_size;
           size x (word bytes, 0 byte, int64 count, int8 type: 0 word, 1 label);
           pruneidx_size x (int32 bucket id, int32 row)  -- only in pruned .ftz
    bool quant_input; the input matrix; bool qout; the output matrix
    dense matrix:     int64 m, n; m*n float32
    quantized matrix: bool qnorm; int64 m, n; int32 codesize; codesize uint8 codes;
           product quantizer (int32 dim, nsubq, dsub, lastdsub; dim*256 float32
           centroids); if qnorm: m uint8 norm codes + a 1-d quantizer of the norms

Words are raw bytes (UTF-8 in practice). The label prefix ("__label__") is
not stored: fastText always uses its default when loading. This file only
reads and writes; the meaning (hashing, prediction) is in langid.py.
"""
import dataclasses
import struct

import numpy as np

from tinyllm.atomic import atomic_write
from tinyllm.errors import DataError

MAGIC = 793712314
VERSION = 12
KSUB = 256  # centroids per sub-quantizer (8-bit codes)
INT_ARGS = ("dim", "ws", "epoch", "minCount", "neg", "wordNgrams", "loss", "model",
            "bucket", "minn", "maxn", "lrUpdateRate")
LOSSES = {1: "hs", 2: "ns", 3: "softmax", 4: "ova"}
MODELS = {1: "cbow", 2: "skipgram", 3: "supervised"}


@dataclasses.dataclass
class ProductQuantizer:
    """dim split into nsubq sub-vectors of dsub (the last: lastdsub) values, 256 centroids each."""

    dim: int
    nsubq: int
    dsub: int
    lastdsub: int
    centroids: np.ndarray  # (dim * 256,) float32, fastText's layout (see decode)

    def decode(self, codes):
        """Codes (k, nsubq) uint8 -> vectors (k, dim) float32, read as ProductQuantizer::addcode does."""
        out = np.empty((codes.shape[0], self.dim), dtype=np.float32)      # (k, dim)
        for m in range(self.nsubq):
            d = self.lastdsub if m == self.nsubq - 1 else self.dsub
            table = self.centroids[m * KSUB * self.dsub:][:KSUB * d].reshape(KSUB, d)  # (256, d)
            out[:, m * self.dsub:m * self.dsub + d] = table[codes[:, m]]
        return out


@dataclasses.dataclass
class QuantizedMatrix:
    """An (m, n) matrix stored as product-quantizer codes, with optionally quantized row norms."""

    m: int
    n: int
    codes: np.ndarray                 # (m, nsubq) uint8
    pq: ProductQuantizer
    norm_codes: np.ndarray = None     # (m,) uint8 when qnorm
    npq: ProductQuantizer = None      # 1-d quantizer of the norms when qnorm

    @property
    def shape(self):
        return (self.m, self.n)

    def rows(self, ids):
        """(unit rows (k, n) float32, norms (k,) float32): row i is norms[i] * unit[i]."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.norm_codes is None:
            return self.pq.decode(self.codes[ids]), np.ones(len(ids), dtype=np.float32)
        return self.pq.decode(self.codes[ids]), self.npq.centroids[self.norm_codes[ids]]


@dataclasses.dataclass
class FastTextFile:
    """Everything a fastText model file holds."""

    args: dict                 # INT_ARGS names -> int, and "t" -> float
    words: list                # [bytes], words first, then labels
    counts: np.ndarray         # (size,) int64
    types: np.ndarray          # (size,) int8: 0 word, 1 label
    ntokens: int
    input: object              # (rows, dim) float32 array, or QuantizedMatrix
    output: object             # (labels, dim) float32 array, or QuantizedMatrix
    pruneidx: dict = dataclasses.field(default_factory=dict)  # bucket id -> row, when pruned
    pruneidx_size: int = -1    # -1: not pruned; 0: every n-gram pruned
    version: int = VERSION

    @property
    def nwords(self):
        return int((self.types == 0).sum())

    @property
    def nlabels(self):
        return int((self.types == 1).sum())


def read_model(path):
    """Parse a fastText .bin or .ftz file into a FastTextFile; DataError says what is wrong."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the fastText model ({e.strerror}); "
                        "check the path") from None
    r = _Reader(buf, path)
    magic, version = r.unpack("<ii")
    if magic != MAGIC:
        raise DataError(f"{path}: not a fastText model file (magic {magic}, expected {MAGIC}); "
                        "pass a .bin or .ftz saved by fastText or by train_supervised")
    if version > VERSION or version < 11:
        raise DataError(f"{path}: fastText file version {version}; this reader knows versions "
                        "11 and 12 (fastText 0.9): save the model again with fastText 0.9")
    values = r.unpack("<" + "i" * len(INT_ARGS) + "d")
    args = dict(zip(INT_ARGS + ("t",), values))
    if version == 11 and args["model"] == 3:
        args["maxn"] = 0  # as fastText: old supervised models used no character n-grams
    size, nwords, nlabels, ntokens, pruneidx_size = r.unpack("<iiiqq")
    if size != nwords + nlabels or size < 0:
        raise DataError(f"{path}: corrupt dictionary header (size {size} != {nwords} words + "
                        f"{nlabels} labels); re-download or re-save the model")
    words, counts, types = [], np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int8)
    for i in range(size):
        words.append(r.cstring())
        counts[i], types[i] = r.unpack("<qb")
    pruneidx = dict(r.array("<i4", 2 * max(pruneidx_size, 0)).reshape(-1, 2).tolist())
    (quant_input,) = r.unpack("<?")
    matrix_in = r.quantized() if quant_input else r.dense()
    (qout,) = r.unpack("<?")
    matrix_out = r.quantized() if quant_input and qout else r.dense()
    if r.pos != len(buf):
        raise DataError(f"{path}: {len(buf) - r.pos} unexpected bytes after the model; the file "
                        "is corrupt or not a fastText model")
    return FastTextFile(args, words, counts, types, ntokens, matrix_in, matrix_out,
                        pruneidx, pruneidx_size, version)


def write_model(path, model):
    """Write a FastTextFile in fastText's format, atomically."""
    a = model.args
    parts = [struct.pack("<ii", MAGIC, VERSION),
             struct.pack("<" + "i" * len(INT_ARGS) + "d", *(int(a[k]) for k in INT_ARGS), float(a["t"])),
             struct.pack("<iiiqq", len(model.words), model.nwords, model.nlabels, model.ntokens,
                         model.pruneidx_size)]
    for word, count, kind in zip(model.words, model.counts.tolist(), model.types.tolist()):
        parts.append(word + b"\0" + struct.pack("<qb", count, kind))
    parts.append(np.array(list(model.pruneidx.items()), dtype="<i4").tobytes())
    quantized = isinstance(model.input, QuantizedMatrix)
    parts.append(struct.pack("<?", quantized))
    parts.append(_matrix_bytes(model.input))
    parts.append(struct.pack("<?", isinstance(model.output, QuantizedMatrix)))
    parts.append(_matrix_bytes(model.output))
    with atomic_write(path) as f:
        f.write(b"".join(parts))


def _matrix_bytes(matrix):
    if not isinstance(matrix, QuantizedMatrix):
        m, n = matrix.shape
        return struct.pack("<qq", m, n) + np.ascontiguousarray(matrix, dtype="<f4").tobytes()
    q = matrix
    out = [struct.pack("<?qqi", q.norm_codes is not None, q.m, q.n, q.codes.size),
           q.codes.astype(np.uint8).tobytes(), _pq_bytes(q.pq)]
    if q.norm_codes is not None:
        out += [q.norm_codes.astype(np.uint8).tobytes(), _pq_bytes(q.npq)]
    return b"".join(out)


def _pq_bytes(pq):
    return (struct.pack("<iiii", pq.dim, pq.nsubq, pq.dsub, pq.lastdsub)
            + pq.centroids.astype("<f4").tobytes())


class _Reader:
    """Sequential reads from a bytes buffer; running past the end is a clear DataError."""

    def __init__(self, buf, path):
        self.buf, self.path, self.pos = buf, path, 0

    def _take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise DataError(f"{self.path}: the file ends early (needed {n} bytes at offset "
                            f"{self.pos} of {len(self.buf)}); it is truncated or corrupt: "
                            "download or save it again")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))

    def cstring(self):
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            self._take(len(self.buf) + 1)  # raises the truncation error
        word = self.buf[self.pos:end]
        self.pos = end + 1
        return word

    def array(self, dtype, count):
        dtype = np.dtype(dtype)
        return np.frombuffer(self._take(count * dtype.itemsize), dtype=dtype)

    def dense(self):
        m, n = self.unpack("<qq")
        return self.array("<f4", m * n).reshape(m, n)

    def pq(self):
        dim, nsubq, dsub, lastdsub = self.unpack("<iiii")
        return ProductQuantizer(dim, nsubq, dsub, lastdsub, self.array("<f4", dim * KSUB))

    def quantized(self):
        qnorm, m, n, codesize = self.unpack("<?qqi")
        codes = self.array(np.uint8, codesize)
        pq = self.pq()
        if pq.nsubq <= 0 or codesize != m * pq.nsubq or pq.dim != n:
            raise DataError(f"{self.path}: corrupt quantized matrix ({codesize} codes for {m} "
                            f"rows x {pq.nsubq} sub-quantizers of a {pq.dim}-dim space, n={n})")
        if not qnorm:
            return QuantizedMatrix(m, n, codes.reshape(m, pq.nsubq), pq)
        norm_codes = self.array(np.uint8, m)
        return QuantizedMatrix(m, n, codes.reshape(m, pq.nsubq), pq, norm_codes, self.pq())
