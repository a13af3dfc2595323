"""Atomic file writes: a file is either the old version or the complete new one.

Everything tinyllm saves (checkpoints, token files, logs, pictures) is
written to `path + ".tmp"` beside the target, flushed and fsynced, then
renamed over the target with os.replace (atomic on POSIX and Windows), and
the folder is fsynced so the rename itself survives a power cut. An error
or Ctrl-C halfway removes the temp file and leaves the old file untouched.
Not a format: safetensors.py and data/tokenfile.py are. Read train.py next.
"""
import contextlib
import os


def fsync_directory(directory):
    """Persist a rename inside `directory`; POSIX only (Windows cannot open a folder)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp, path):
    """Rename a finished, fsynced temp file over `path`, durably."""
    os.replace(tmp, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """`with atomic_write(path) as f:` writes f to `path` only if the block completes."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    f = open(tmp, mode, encoding=encoding)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())   # the bytes are on disk before the rename makes them the file
        f.close()
        commit(tmp, path)      # fails when path is a folder: the temp file goes too
    except BaseException:
        f.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
