"""One writer per output folder: a lock that names its holder and dies with its process.

    lock_folder("out", "train")   # OutputFolderError if another process holds out/

Two runs writing one folder at once would interleave their logs and rename
each other's temp files away. `lock_folder` takes an exclusive flock on
FOLDER/lock, writes "process PID (what)" into it, and keeps it until this
process exits or calls `unlock_folder`: the kernel drops it when the process
dies, even by SIGKILL, so a stale lock file never blocks a later run. The
same process may lock a folder again (a resumed Trainer in one script).
Where flock does not exist (Windows) the folder is only checked, not locked.

It also turns the folder errors a run would meet later (the path is a file,
or is read-only) into one clear error before any work. Not here: what is
written inside the folder (atomic.py, checkpoint.py).
"""
import os

try:
    import fcntl
except ImportError:   # Windows
    fcntl = None

from tinyllm.errors import OutputFolderError

_HELD = {}   # real path -> the open lock file, for every folder this process holds


def lock_folder(folder, what):
    """Hold `folder` (created if missing) for this process; `what` names the command."""
    real = os.path.realpath(folder)
    if real in _HELD:
        return
    try:
        os.makedirs(real, exist_ok=True)
        f = open(os.path.join(real, "lock"), "a+", encoding="utf-8")
    except OSError as e:
        reason = "it is a file, not a folder" if os.path.isfile(real) else e.strerror or e
        raise OutputFolderError(f"cannot write the output folder {folder}: {reason}; "
                                f"choose another --out") from None
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise OutputFolderError(f"{folder} is in use by {holder}: wait for it to end or stop "
                                    f"it, or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} ({what})\n")
    f.flush()
    _HELD[real] = f


def unlock_folder(folder):
    """Let other processes have `folder` again (closing the file drops the flock)."""
    f = _HELD.pop(os.path.realpath(folder), None)
    if f is not None:
        f.close()
