"""Token shards of a prepared dataset: writing them resumably, and reading them for training.

A prepared folder (made by `python -m tinyllm prepare`, see tinyllm/curate/prepare.py) holds

    train_000000.bin, train_000001.bin, ...   token files (tokenfile.py's header
    val_000000.bin, ...                       format), shard_tokens tokens each
                                              except the last of a split
    tokenizer.json                            the tokenizer's to_dict(), so the
                                              trainer can rebuild it
    manifest.json                             written last: the shards, their
                                              token counts, the tokenizer's fingerprint
    report.json                               what the run kept and dropped

Documents follow each other in a split's token stream, each followed by the
tokenizer's end-of-text token when it has one; a document may continue from
one shard into the next. The manifest is the commit point: a folder without
one is unfinished, and `open_prepared` refuses it.

`ShardWriter` fills a split's shards in order; each shard is a TokenWriter
(a .tmp file renamed when complete), and after each rename it reports
(shards so far, next document, tokens of it already written), which
prepare.py saves, so an interrupted run continues at the last finished shard.
This is not the batch sampler: loader.BatchLoader samples from the arrays
that `open_prepared` returns. Read tinyllm/curate/prepare.py for the pipeline.
"""
import json
import pathlib

import numpy as np

from tinyllm.tokenizer import from_dict as tokenizer_from_dict
from tinyllm.errors import DataError
from tinyllm.data.tokenfile import TokenWriter, read_header, read_tokens

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
FORMAT = "tinyllm-prepared"
VERSION = 1
SPLITS = ("train", "val")
_DONE = 2**53  # next_doc of a closed split: past every document (and exact in JSON)


def shard_name(split, index):
    return f"{split}_{index:06d}.bin"


class ShardWriter:
    """Append one split's tokens into fixed-size shards; `on_commit(state)` after each shard.

    `state` (JSON-ready) = {"shards": [{"file", "tokens"}...], "next_doc": d, "skip": t}:
    everything before token t of document d is in the listed shards. Passing a
    saved state back as `resume` continues from there.
    """

    def __init__(self, folder, split, shard_tokens, vocab_size, on_commit, resume=None):
        if shard_tokens < 1:
            raise DataError(f"shard_tokens={shard_tokens!r}: it must be at least 1")
        self.folder, self.split = pathlib.Path(folder), split
        self.shard_tokens, self.vocab_size, self.on_commit = int(shard_tokens), vocab_size, on_commit
        state = resume or {"shards": [], "next_doc": 0, "skip": 0}
        self.shards = list(state["shards"])
        self.next_doc, self.skip = state["next_doc"], state["skip"]
        self._writer = None

    def write(self, doc, tokens):
        """Add document number `doc`'s tokens (skipping those a resumed run already wrote)."""
        if doc < self.next_doc:
            return
        pos = self.skip if doc == self.next_doc else 0   # tokens already in finished shards
        while pos < len(tokens):
            if self._writer is None:
                self._writer = TokenWriter(self.folder / shard_name(self.split, len(self.shards)),
                                           self.vocab_size)
            take = min(self.shard_tokens - self._writer.count, len(tokens) - pos)
            self._writer.write(tokens[pos:pos + take])
            pos += take
            if self._writer.count == self.shard_tokens:
                done = pos == len(tokens)
                self._commit(doc + 1 if done else doc, 0 if done else pos)

    def close(self):
        """Commit the last, partly filled shard and mark the split done; returns its shard list.

        A resumed run that finds the split done writes nothing more to it.
        """
        if self._writer is not None and self._writer.count:
            self._commit(_DONE, 0)
        elif self.next_doc != _DONE:
            self.next_doc, self.skip = _DONE, 0
            self.on_commit({"shards": list(self.shards), "next_doc": _DONE, "skip": 0})
        return self.shards

    def abort(self):
        """Drop the unfinished shard's temp file (finished shards stay for a resume)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _commit(self, next_doc, skip):
        w, self._writer = self._writer, None
        w.close()
        self.shards.append({"file": w.path.name, "tokens": w.count})
        self.next_doc, self.skip = next_doc, skip
        self.on_commit({"shards": list(self.shards), "next_doc": self.next_doc, "skip": self.skip})


def is_prepared(folder):
    """True when `folder` holds a manifest.json (a finished prepare run)."""
    return folder is not None and (pathlib.Path(folder) / MANIFEST).is_file()


def read_manifest(folder):
    """The manifest of a prepared folder, checked; DataError says what is wrong and what to do."""
    path = pathlib.Path(folder) / MANIFEST
    rerun = f"re-run `python -m tinyllm prepare --input ... --out {folder}` to rebuild it"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MANIFEST}, so it is not a finished prepared dataset; "
                        f"run `python -m tinyllm prepare --input ... --out {folder}` "
                        "(an interrupted run resumes)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt ({e}); {rerun}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a tinyllm prepare manifest; {rerun}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: manifest version {manifest.get('version')!r}, this tinyllm "
                        f"reads version {VERSION}; {rerun}")
    try:
        for split in SPLITS:
            for shard in manifest["shards"][split]:
                if not isinstance(shard["file"], str) or not isinstance(shard["tokens"], int):
                    raise TypeError
        manifest["tokenizer"]["fingerprint"]
    except (KeyError, TypeError):
        raise DataError(f"{path}: the manifest lacks its shard list or tokenizer; {rerun}") from None
    return manifest


def prepared_tokenizer(folder):
    """The tokenizer that made a prepared folder's shards, rebuilt from its tokenizer.json."""
    folder = pathlib.Path(folder)
    manifest = read_manifest(folder)
    try:
        tokenizer = tokenizer_from_dict(json.loads((folder / TOKENIZER).read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise DataError(f"{folder / TOKENIZER}: missing or unreadable ({e}); re-run prepare "
                        f"on {folder} to rewrite it") from None
    if tokenizer.fingerprint() != manifest["tokenizer"]["fingerprint"]:
        raise DataError(f"{folder / TOKENIZER} does not match the manifest's tokenizer "
                        f"fingerprint; the folder is damaged: re-run prepare on it")
    return tokenizer


def open_prepared(folder, tokenizer):
    """(train_tokens, val_tokens): 1-D token arrays of a prepared folder, for BatchLoader.

    A split in one shard is a read-only memmap of it (no copy); a split in
    several shards is their concatenation in memory. Refuses shards made by
    another tokenizer (the manifest's fingerprint) and damaged shards.
    """
    folder = pathlib.Path(folder)
    manifest = read_manifest(folder)
    made_by = manifest["tokenizer"]
    if made_by["fingerprint"] != tokenizer.fingerprint() or \
            made_by.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
        raise DataError(
            f"{folder}: its shards were made by the tokenizer {made_by.get('name')!r} "
            f"(fingerprint {made_by['fingerprint']}, vocab_size {made_by.get('vocab_size')}), but "
            f"training uses {tokenizer.name!r} (fingerprint {tokenizer.fingerprint()}, vocab_size "
            f"{tokenizer.vocab_size}); token ids would mean different text. "
            f"Train with the tokenizer that prepared the data, or prepare again with this one "
            f"(python -m tinyllm prepare --tokenizer ... --out {folder})")
    arrays = []
    for split in SPLITS:
        parts = []
        for shard in manifest["shards"][split]:
            path = folder / shard["file"]
            header = read_header(path)  # DataError for a missing, truncated or foreign file
            if header["count"] != shard["tokens"] or header["vocab_size"] != tokenizer.vocab_size:
                raise DataError(
                    f"{path}: holds {header['count']} tokens of a {header['vocab_size']}-token "
                    f"vocabulary, but the manifest says {shard['tokens']} of "
                    f"{tokenizer.vocab_size}; the folder is damaged: re-run prepare on it")
            parts.append(read_tokens(path))
        if len(parts) == 1:
            arrays.append(parts[0])
        elif parts:
            arrays.append(np.concatenate(parts))
        else:
            itemsize = 2 if tokenizer.vocab_size <= 65536 else 4
            arrays.append(np.empty(0, dtype=np.dtype(f"<u{itemsize}")))
    return arrays[0], arrays[1]
