"""Raw documents for the prepare pipeline: files and folders in, one document at a time out.

Accepted inputs (files, or folders searched recursively, hidden names skipped):
  .txt, .md       one document per file
  .jsonl          one document per line: the string in its "text" field
  .gz             any of the above compressed (x.jsonl.gz, x.txt.gz; a bare
                  x.gz is read as text)
Files are read in sorted order, so a run is reproducible. Nothing is held
beyond the current document (a .jsonl is read line by line).

Bad input never stops the run; it is counted and the rest goes on:
  per document (`RawDocument.problem`): invalid_utf8, bad_json (nested past
  Python's recursion limit too), no_text, lone_surrogate (a JSON "\\ud800"
  escape: text that has no UTF-8 form)
  per file (`SourceStats.file_problems`): unreadable (permissions, vanished),
  corrupt_gzip (documents before the damage are kept), unsupported (a
  folder's file with another suffix; naming such a file directly is an error)
This is not cleaning (clean.py): text comes out as stored. prepare.py reads it.
Read clean.py next.
"""
import collections
import dataclasses
import gzip
import json
import os
import pathlib
import re
import zlib

from tinyllm.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = TEXT_SUFFIXES + (".jsonl",)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclasses.dataclass
class RawDocument:
    text: str            # None when `problem` is set
    problem: str         # None, or why the document could not be read
    nbytes: int          # size of the stored record (UTF-8 or raw bytes)


@dataclasses.dataclass
class SourceStats:
    """What reading found: files done, problems by kind (with a few example paths), progress."""

    total_bytes: int = 0                    # on-disk size of every input file
    bytes_done: int = 0                     # on-disk bytes consumed so far (for the progress bar)
    files_read: int = 0
    file_problems: dict = dataclasses.field(default_factory=dict)   # kind -> count
    examples: dict = dataclasses.field(default_factory=dict)        # kind -> [path, ...]

    def problem(self, kind, path):
        self.file_problems[kind] = self.file_problems.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 5:
            shown.append(str(path))


def list_inputs(paths, stats):
    """Sorted input files under `paths`; unsupported files inside folders are counted in stats."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for given in paths:
        path = pathlib.Path(given).expanduser()
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    full = pathlib.Path(dirpath, name)
                    if _kind(full) is None:
                        stats.problem("unsupported", full)
                    else:
                        files.append(full)
        elif path.exists():
            if _kind(path) is None:
                raise DataError(f"--input {given}: unsupported file type; prepare reads "
                                f"{', '.join(SUFFIXES)} and their .gz versions, or folders of them")
            files.append(path)
        else:
            raise DataError(f"--input {given}: no such file or folder; check the path")
    files = sorted(set(files))
    if not files:
        raise DataError(f"no readable input in {', '.join(map(str, paths))}: expected "
                        f"{', '.join(SUFFIXES)} (or .gz) files")
    stats.total_bytes = sum(_size(f) for f in files)
    return files


def read_documents(files, stats):
    """Yield a RawDocument for every record of every file, counting file problems in stats.

    An item of files may also be a Piece: the lines of a plain .jsonl file that start in
    its byte range (ranks.split_files cuts big files so). A file is counted as read, or
    as a problem, by its first piece only."""
    for item in files:
        path, start, stop = item if isinstance(item, Piece) else (item, 0, None)
        size = _size(path) if stop is None else stop - start
        done_before = stats.bytes_done
        try:
            raw = open(path, "rb")
        except OSError:
            if start == 0:
                stats.problem("unreadable", path)
            stats.bytes_done = done_before + size
            continue
        try:
            compressed = path.suffix == ".gz"
            stream = gzip.GzipFile(fileobj=raw) if compressed else raw
            if _kind(path) == ".jsonl":
                for line in _lines(stream, raw, start, stop):
                    stats.bytes_done = done_before + raw.tell() - start
                    if line.strip():
                        yield _json_document(line)
            else:
                yield _text_document(stream.read())
            stats.files_read += start == 0
        except (gzip.BadGzipFile, EOFError, zlib.error):
            stats.problem("corrupt_gzip", path)
        except OSError:
            if start == 0:
                stats.problem("unreadable", path)
        finally:
            raw.close()
        stats.bytes_done = done_before + size


class Piece(collections.namedtuple("Piece", "path start stop")):
    """The lines of an uncompressed .jsonl file whose first byte lies in [start, stop)."""


def _lines(stream, raw, start, stop):
    """The lines of stream, or for a byte range of a plain file those starting inside it."""
    if start == 0 and stop is None:
        yield from stream
        return
    if start > 0:
        raw.seek(start - 1)
        if raw.read(1) != b"\n":
            raw.readline()                    # the end of a line that started before `start`
    while raw.tell() < stop:
        line = raw.readline()
        if not line:
            return
        yield line


def _text_document(data):
    try:
        return RawDocument(data.decode("utf-8"), None, len(data))
    except UnicodeDecodeError:
        return RawDocument(None, "invalid_utf8", len(data))


def _json_document(line):
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return RawDocument(None, "invalid_utf8", len(line))
    except (ValueError, RecursionError):
        return RawDocument(None, "bad_json", len(line))
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        return RawDocument(None, "no_text", len(line))
    if b"\\u" in line and _SURROGATE.search(text):   # only a JSON \\u escape makes a surrogate
        return RawDocument(None, "lone_surrogate", len(line))
    return RawDocument(text, None, len(line))


def _kind(path):
    """".txt", ".md" or ".jsonl" for a readable file (looking through .gz), else None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        inner = os.path.splitext(name[:-3])[1]
        return inner if inner in SUFFIXES else ".txt"
    suffix = os.path.splitext(name)[1]
    return suffix if suffix in SUFFIXES else None


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0
