"""The backend registry: which set of kernels runs the ops.

A backend is a module-like object with the kernels named in DESIGN.md
(`matmul`, `attention_forward`, `rmsnorm_backward`, ...). `ops.py` only ever
calls `get_backend().<kernel>(...)`, so the autograd layer never knows which
one runs. "numpy" (numpy_kernels.py) is the reference and always works; "c"
(c_kernels.py) and "cuda" (cuda_kernels.py, arrays in GPU memory) work when
their libraries are built, and "cuda" when there is a GPU.

Choose with `set_backend("c")` or the TINYLLM_BACKEND environment variable.
Read numpy_kernels.py next: it defines what every kernel means.
"""
import contextlib
import importlib
import os
import sys

from tinyllm.errors import BackendUnavailable  # noqa: F401 (re-exported: tinyllm.backends.BackendUnavailable)

# name -> module path; tried in this order when picking the default (fastest first)
_KNOWN = {
    "cuda": "tinyllm.backends.cuda_kernels",
    "c": "tinyllm.backends.c_kernels",
    "numpy": "tinyllm.backends.numpy_kernels",
}
_loaded = {}
_active = None
_said_why = set()   # backends whose absence was already reported


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name not in _KNOWN:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_KNOWN)}")
    try:
        module = importlib.import_module(_KNOWN[name])
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {name!r} is not available ({e}); run `make` to build it, "
            f"or use set_backend('numpy')") from e
    check = getattr(module, "check_available", None)
    if check is not None:
        check()  # raises BackendUnavailable with the reason
    _loaded[name] = module
    return module


def available_backends():
    """Names of the backends that load and work on this machine, fastest first."""
    names = []
    for name in _KNOWN:
        try:
            _load(name)
            names.append(name)
        except BackendUnavailable:
            pass
    return names


def get_backend(name=None):
    """The backend called `name`, or the active one when name is None."""
    global _active
    if name is not None:
        return _load(name)
    if _active is None:
        wanted = os.environ.get("TINYLLM_BACKEND")
        if wanted:
            _active = _load(wanted)
        else:
            _active = _load(_default_name())
    return _active


def _default_name():
    """The fastest backend that works; say once why a faster one was passed over."""
    for name in _KNOWN:
        try:
            if getattr(_load(name), "EMULATED", False):   # CUDA run on the CPU: for tests only
                continue
            return name
        except BackendUnavailable as e:
            # a machine without a GPU is the common case, not a problem worth a line;
            # asking for "cuda" by name still says why it is missing
            if name not in _said_why and name != "cuda":
                _said_why.add(name)
                print(f"tinyllm: the {name!r} backend is not available, using a slower one: {e}",
                      file=sys.stderr)
    raise BackendUnavailable("no backend works, not even NumPy")


def set_backend(name):
    """Make `name` the backend that every op uses from now on; returns it."""
    global _active
    _active = _load(name)
    return _active


@contextlib.contextmanager
def using(name):
    """Run a block on the backend called `name`, then restore the active one."""
    global _active
    previous = get_backend()
    set_backend(name)
    try:
        yield _active
    finally:
        _active = previous
