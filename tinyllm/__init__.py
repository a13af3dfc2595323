"""tinyllm: a GPT built from scratch in Python + NumPy, with C and CUDA kernels.

Public names: Tensor, no_grad, GPT, GPTConfig, Tokenizer, set_backend, get_backend.
README.md has the map of the source; start reading at tensor.py.
"""
from tinyllm.backends import get_backend, set_backend
from tinyllm.model import GPT, GPTConfig
from tinyllm.tensor import Tensor, no_grad
from tinyllm.tokenizer import Tokenizer

__all__ = ["Tensor", "no_grad", "GPT", "GPTConfig", "Tokenizer", "get_backend", "set_backend"]
__version__ = "0.1.0"
