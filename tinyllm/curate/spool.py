"""The spool: the texts that survived prepare's filter stage, in one file, in document order.

A record is a little-endian uint32 byte length, then that many bytes of UTF-8
(lone surrogates pass through). `append` writes one; `read_spool` yields
(index, text) from some index on, or only the indices of a set, skipping the
others unread; `kept_chunks` groups the texts the plan keeps into a worker's
chunks. The rest of a work folder (hashes,
signatures, band keys, the plan) is plain NumPy files: prepare.py. Read
ranks.py next.
"""
import os

import numpy as np

_LEN = np.dtype("<u4")


def append(f, text):
    data = text.encode("utf-8", "surrogatepass")
    f.write(np.array(len(data), dtype=_LEN).tobytes() + data)


def read_spool(path, start, wanted=None):
    """(index, text) of every spooled document from number `start` on (only those in the
    set `wanted`, when given; the others are skipped unread)."""
    last = max(wanted, default=-1) if wanted is not None else None
    with open(path, "rb") as f:
        index = 0
        while last is None or index <= last:
            head = f.read(_LEN.itemsize)
            if len(head) < _LEN.itemsize:
                return
            n = int(np.frombuffer(head, dtype=_LEN)[0])
            if index < start or (wanted is not None and index not in wanted):
                f.seek(n, os.SEEK_CUR)
            else:
                yield index, f.read(n).decode("utf-8", "surrogatepass")
            index += 1


def kept_chunks(path, plan, offset, start, wanted, order, chunk_bytes, chunk_docs):
    """Lists of about chunk_bytes (at most chunk_docs) spooled texts whose global index
    (offset + place in the spool) is >= start and passes wanted(index); appends (index,
    plan[index]) of each text sent to the deque `order`."""
    texts, size = [], 0
    for index, text in read_spool(path, max(start - offset, 0)):
        index += offset
        if not wanted(index):
            continue
        texts.append(text)
        order.append((index, int(plan[index])))
        size += len(text)
        if size >= chunk_bytes or len(texts) >= chunk_docs:
            yield texts
            texts, size = [], 0
    if texts:
        yield texts
