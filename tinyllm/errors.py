"""Every exception class of tinyllm, in one place that imports nothing.

Each error is raised at the Python boundary with a message that names the
value that was wrong and how to fix it. They subclass ValueError (bad input)
or RuntimeError (a run or a backend cannot go on), so a caller that does not
know tinyllm can still catch them by the builtin kind. The modules that raise
them re-export them (`from tinyllm.data import DataError` keeps working).

This file is a leaf: any layer may import it, the backends included, without
an import running upward. Read atomic.py next, the other leaf.
"""


class DataError(ValueError):
    """Bad input data: the message names the file or value and how to fix it."""


class TokenizerError(ValueError):
    """Bad tokenizer input (text, ids, vocabulary, file); the message says what and how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or not a file tinyllm can read."""


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged); the last good checkpoint is intact."""


class DistributedError(RuntimeError):
    """An MPI run cannot go on: a rank differs, died or hangs; the message names the rank."""


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but is not built or cannot run here."""


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's reason."""


class PlanError(ValueError):
    """The planner cannot make a plan from its input; the message says which value and the fix."""


class OutputFolderError(RuntimeError):
    """An output folder cannot be written: it is a file, read-only, or another run holds it."""
