"""Corpus: where training text comes from, split into train and validation.

`load_corpus(data)` turns what the user passed to `--data` into a Corpus:
  - nothing: the running interpreter's standard library (.py files), the
    "embedded default corpus" that every machine has without a download;
  - a UTF-8 text file: its first (1 - val_fraction) is train, the rest val;
  - a folder: every text-like file under it, split by file (a stable hash of
    the relative path decides, so the split never changes between runs).
A Corpus streams its documents (`iter_train()` / `iter_val()` read one file at
a time), and its `fingerprint()` changes when any source file changes, so the
token caches built from it are rebuilt.

This is not tokenization or cleaning: documents come out exactly as stored.
`DataError` lives here because every other file in this package raises it.
Read tokenfile.py next, then loader.py.
"""
import dataclasses
import hashlib
import os
import pathlib
import re
import sysconfig

from tinyllm.errors import DataError  # noqa: F401 (re-exported)


# Folders under the stdlib that hold tests or third-party code, not the library itself.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
# Suffixes read from a data folder; files without a suffix (README, LICENSE) are read too.
TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".jsonl", ".html",
                 ".c", ".h", ".js", ".tex", ".csv"}


def stdlib_files():
    """The standard library's .py files, sorted, without test folders and site-packages."""
    return _walk(_stdlib_root(), keep_dir=_is_stdlib_dir, keep_file=lambda name: name.endswith(".py"))


def split_files(paths, val_fraction=0.05, root=None):
    """Split files into (train, val) by a stable hash of each path relative to `root`.

    A file's side depends on its own name only, so adding a file never moves
    another one. With two or more files each side gets at least one.
    """
    _check_fraction(val_fraction)
    root = pathlib.Path(root) if root is not None else None
    scored = sorted((_path_score(pathlib.Path(p), root), pathlib.Path(p)) for p in paths)
    val = [p for score, p in scored if score < val_fraction]
    train = [p for score, p in scored if score >= val_fraction]
    if len(scored) >= 2 and not val:
        val, train = [train[0]], train[1:]  # the lowest score is the closest to the val side
    if len(scored) >= 2 and not train:
        train, val = [val[-1]], val[:-1]
    return sorted(train), sorted(val)


def read_text(path):
    """Read a file as strict UTF-8; empty files give ""; invalid UTF-8 raises DataError."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path (it may have been "
                        "moved or deleted after the data folder was listed)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror}); fix its permissions "
                        "or remove it from the data") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {e.start}); "
            f"convert it, e.g. `iconv -f latin1 -t utf-8 '{path}' > fixed.txt`, "
            "or remove it from the data") from None


@dataclasses.dataclass
class Corpus:
    """Named train/val documents; each document is a file path or an in-memory string."""

    name: str                      # used in cache file names and logs
    train_docs: list               # [pathlib.Path | str]
    val_docs: list                 # [pathlib.Path | str]
    skip_unreadable: bool = False  # True only for the stdlib: a user's file must never vanish silently

    def iter_train(self):
        """Yield the train documents' texts, one at a time."""
        return self._iter(self.train_docs)

    def iter_val(self):
        """Yield the val documents' texts, one at a time."""
        return self._iter(self.val_docs)

    def fingerprint(self):
        """Stable hash over every source (path, size, mtime; or the text itself) and the split."""
        h = hashlib.sha1()
        for side, docs in (("train", self.train_docs), ("val", self.val_docs)):
            h.update(f"{side}:{len(docs)}\n".encode())
            for doc in docs:
                if isinstance(doc, str):
                    h.update(b"text:" + hashlib.sha1(doc.encode("utf-8")).digest())
                else:
                    st = _stat(doc)
                    h.update(f"file:{doc}:{st.st_size}:{st.st_mtime_ns}\n".encode("utf-8"))
        return h.hexdigest()[:16]

    def _iter(self, docs):
        for doc in docs:
            if isinstance(doc, str):
                yield doc
                continue
            try:
                yield read_text(doc)
            except DataError:
                if not self.skip_unreadable:  # e.g. a stdlib file in a legacy encoding
                    raise


def load_corpus(data=None, val_fraction=0.05):
    """The Corpus for `--data`: None (the stdlib), a UTF-8 text file, or a folder."""
    _check_fraction(val_fraction)
    if data is None:
        root = _stdlib_root()
        train, val = split_files(stdlib_files(), val_fraction, root=root)
        return Corpus("stdlib", train, val, skip_unreadable=True)
    path = pathlib.Path(data).expanduser()
    if not path.exists():
        raise DataError(f"--data {data}: no such file or folder; pass a UTF-8 text file, "
                        "a folder of text files, or leave --data out to train on the "
                        "Python standard library")
    if path.is_file():
        return _split_text(_safe_name(path.stem), read_text(path), path, val_fraction)
    files = _walk(path, keep_dir=_is_visible, keep_file=_is_text_file)
    if not files:
        raise DataError(f"--data {path}: the folder has no text files (looked for "
                        f"{' '.join(sorted(TEXT_SUFFIXES))} and files without a suffix, "
                        "skipping hidden ones); add some, or point --data at a text file")
    if len(files) == 1:
        return _split_text(_safe_name(path.name), read_text(files[0]), files[0], val_fraction)
    # Reading stops at the first file with text, so a normal folder costs one read here.
    if not any(read_text(f).strip() for f in files):
        raise DataError(f"--data {path}: all {len(files)} text files are empty or "
                        "whitespace-only; add text to them or point --data elsewhere")
    train, val = split_files(files, val_fraction, root=path)
    return Corpus(_safe_name(path.name), train, val)


def _split_text(name, text, path, val_fraction):
    """One text cut at a character boundary: the first (1 - val_fraction) is train."""
    if not text.strip():
        raise DataError(f"{path}: the file is empty or whitespace-only; put text in it "
                        "or point --data at another file")
    n = len(text)
    cut = min(max(round(n * (1 - val_fraction)), 1), max(n - 1, 1))  # both sides non-empty when n >= 2
    return Corpus(name, [text[:cut]], [text[cut:]])


def _walk(root, keep_dir, keep_file):
    """Regular files under root, recursive and sorted; keep_dir prunes whole subtrees."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if keep_dir(d)]  # in place: os.walk skips the rest
        found.extend(pathlib.Path(dirpath, f) for f in filenames
                     if keep_file(f) and os.path.isfile(os.path.join(dirpath, f)))
    return sorted(found)


def _is_stdlib_dir(name):
    return name not in _STDLIB_SKIP_DIRS and not name.startswith("test")


def _is_visible(name):
    return not name.startswith(".")


def _is_text_file(name):
    suffix = os.path.splitext(name)[1].lower()
    return _is_visible(name) and (suffix == "" or suffix in TEXT_SUFFIXES)


def _stdlib_root():
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _path_score(path, root):
    """A number in [0, 1) from sha1 of the path relative to root (posix form, so OS-independent)."""
    rel = path.relative_to(root) if root is not None else path
    digest = hashlib.sha1(rel.as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fraction(val_fraction):
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction!r}: it must be strictly between 0 and 1 "
                        "(e.g. 0.05), because training needs both a train and a val split")


def _safe_name(name):
    """A name that is safe inside a cache file name."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("._") or "data"


def _stat(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; it was moved or deleted after the corpus "
                        "was loaded, so load the corpus again") from None
