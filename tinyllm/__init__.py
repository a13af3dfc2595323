"""tinyllm: a GPT built from scratch in Python + NumPy, with C and CUDA kernels.

Public names: Tensor, no_grad, GPT, GPTConfig, set_backend, get_backend.
Read README.md for the map of the source; start with tensor.py.
"""
from tinyllm.tensor import Tensor, no_grad
from tinyllm.backends import get_backend, set_backend

__all__ = ["Tensor", "no_grad", "get_backend", "set_backend"]
__version__ = "0.1.0"
