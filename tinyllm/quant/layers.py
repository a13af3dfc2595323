"""QuantLinear and QuantEmbedding, and the recipes that put them in a GPT in place.

QuantLinear is a Linear whose weight is held as formats.Blocks: forward is x @ dequant(W)^T.
A decoding step (at most FUSED_MAX_ROWS rows of x) quantizes x to int8 per block and takes
integer dot products (formats.matmul_q_i8; in C backends/c_quant.matmul_q8_0 / _q4_0, the
weight read as blocks, never widened). A prefill keeps x float32 and multiplies it by W widened
(the GEMM's reuse of each widened float over x's many rows wins there; bench_quant.py): in C
one call, c_quant.matmul_f32_q8_0 / _q4_0, which widens W a panel of 6 rows at a time inside
the float32 GEMM's skinny path (csrc/skinny.h; M <= 256 on AVX2) or CHUNK_ROWS rows at a time
into the ordinary GEMM; on the NumPy backend the CHUNK_ROWS loop here. On the CUDA backend the same
runs on the GPU (backends/cuda_quant.py; the blocks are copied there at the first forward).
QuantEmbedding looks up rows and dequantizes only those. Both are inference only: they hold no Parameter, and a forward
that would record a graph raises (run under tinyllm.tensor.no_grad(), as generate does).

Recipes (RECIPES): which format each layer gets.
  q8_0      every Linear and the token embedding in q8_0
  q4_0      the same in q4_0
  q4_mixed  the blocks' Linears in q4_0; lm_head and the token embedding in q8_0 (the layers
            most sensitive to rounding, as llama.cpp's Q4_K_M keeps its output layer wider)
The position embedding and the norms stay float32 (they are a few thousand numbers).

Not here: the block formats (formats.py) or the checkpoint file (checkpoint.py).
Read checkpoint.py's save_quantized / load_model next.
"""
import numpy as np

from tinyllm import nn, ops
from tinyllm.backends import get_backend
from tinyllm.errors import CheckpointError
from tinyllm.quant.formats import Blocks, dequantize, matmul_q_i8, quantize
from tinyllm.tensor import Tensor, is_grad_enabled

RECIPES = ("q8_0", "q4_0", "q4_mixed")
CHUNK_ROWS = 1024   # rows of W dequantized at once by the NumPy GEMM path: 1024 x K floats
FUSED_MAX_ROWS = 16   # as c_kernels.GEMV_MAX_ROWS: past it the GEMM's reuse of W wins
_WIDE = ("lm_head", "transformer.wte")   # q8_0 in q4_mixed


def _no_graph(what):
    if is_grad_enabled():
        raise RuntimeError(f"{what} is quantized and inference only: it has no backward; run "
                           f"the model under `with tinyllm.tensor.no_grad():` (generate does), "
                           f"or fine-tune the float32 checkpoint instead")


class _Quantized(nn.Module):
    """A layer whose one weight is held as Blocks (no Parameter: nothing to train)."""

    def __init__(self, blocks):
        self.blocks = blocks
        self._device = None   # the blocks on the GPU, copied there at the first CUDA forward

    @property
    def shape(self):
        return self.blocks.shape

    def held_weights(self):
        """(values, bytes): the weight's N * K values, in its blocks' and scales' bytes."""
        N, K = self.blocks.shape
        return N * K, self.blocks.nbytes


class QuantLinear(_Quantized):
    """y = x dequant(W)^T, W (out, in) held as Blocks; no bias (the GPT's Linears have none)."""

    def forward(self, x, act=None):
        """act(x) dequant(W)^T; act None or "silu", as nn.Linear's (no graph here: nothing kept)."""
        _no_graph("this Linear layer")
        if act not in (None, "silu"):
            raise ValueError(f"QuantLinear: act {act!r}; choose None or 'silu'")
        x = ops.silu(x) if act == "silu" else x
        N, K = self.blocks.shape
        if x.shape[-1] != K:
            raise ValueError(f"QuantLinear: input has {x.shape[-1]} features, the weight "
                             f"{(N, K)} expects {K}")
        kernels = get_backend()
        if kernels.NAME == "cuda":
            return self._forward_cuda(kernels, x)
        fast = _c_quant() if kernels.NAME == "c" else None
        x2 = np.ascontiguousarray(x.data.reshape(-1, K), np.float32)              # (M, in)
        if x2.shape[0] <= FUSED_MAX_ROWS:
            y = (getattr(fast, f"matmul_{self.blocks.fmt}")(x2, self.blocks.q, self.blocks.scale)
                 if fast is not None else matmul_q_i8(x2, self.blocks))         # (M, out)
        elif fast is not None:
            y = getattr(fast, f"matmul_f32_{self.blocks.fmt}")(x2, self.blocks.q,
                                                              self.blocks.scale)  # (M, out)
        else:
            y = np.empty((x2.shape[0], N), np.float32)
            for r in range(0, N, CHUNK_ROWS):
                rows = slice(r, min(r + CHUNK_ROWS, N))
                w = dequantize(self.blocks, rows)                                 # (rows, in)
                y[:, rows] = kernels.matmul(x2, w, transpose_b=True)
        return Tensor(y.reshape(x.shape[:-1] + (N,)))

    def decode_weight(self):
        """The blocks, as the backends' decode_block multiplies by them: formats.matmul_q_i8,
        forward's product for a decoding step's rows."""
        return self.blocks

    def _forward_cuda(self, kernels, x):
        """The same on the GPU: the blocks copied there once; a prefill widens the whole weight
        (GPU memory is not the constraint there: its float32 copy is freed after the GEMM)."""
        from tinyllm.backends import cuda_quant
        if self._device is None:
            self._device = cuda_quant.DeviceBlocks(self.blocks)
        N, K = self.blocks.shape
        x2 = kernels.asarray(x.data).reshape(-1, K)                              # (M, in)
        y = (cuda_quant.matmul_q(x2, self._device) if x2.shape[0] <= FUSED_MAX_ROWS
             else kernels.matmul(x2, cuda_quant.dequantize(self._device), transpose_b=True))
        return Tensor(y.reshape(x.shape[:-1] + (N,)))


def _c_quant():
    """The C backend's quantized kernels (imported only when the C backend runs)."""
    from tinyllm.backends import c_quant
    return c_quant


class QuantEmbedding(_Quantized):
    """A table of vectors held as Blocks; a lookup dequantizes only the rows it returns."""

    def forward(self, ids):
        _no_graph("the token embedding")
        ids = np.asarray(ids)
        flat = ids.reshape(-1)
        rows = dequantize(self.blocks, flat).reshape(ids.shape + (self.shape[1],))
        return Tensor(get_backend().asarray(rows))   # on the GPU when the model runs there


def recipe(name, recipe_name):
    """The format a layer (by its contract name, e.g. "lm_head") gets under a recipe."""
    if recipe_name not in RECIPES:
        raise ValueError(f"unknown quantization recipe {recipe_name!r}; choose one of {RECIPES}")
    if recipe_name == "q4_mixed":
        return "q8_0" if name in _WIDE else "q4_0"
    return recipe_name


def _layers(module, prefix=""):
    """(parent, attribute, contract name, layer) of every Linear and Embedding below module."""
    for attr, child in list(module.children()):
        name = prefix + attr
        if type(child) in (nn.Linear, nn.Embedding):
            yield module, attr, name, child
        else:
            yield from _layers(child, name + ".")


def quantize_model(model, recipe_name, on_layer=None):
    """Replace model's Linear layers and token embedding by quantized ones, in place.

    Returns {contract name of the layer: format}. on_layer(name, fmt, max abs error) is called
    after each layer (the quantize command prints it). The position embedding stays float32.
    """
    chosen = {}
    for parent, attr, name, layer in _layers(model):
        if name == "transformer.wpe":
            continue
        fmt = recipe(name, recipe_name)
        w = np.asarray(layer.weight.data, np.float32)
        blocks = quantize(w, fmt, name=f"{name}.weight")
        setattr(parent, attr, (QuantLinear if isinstance(layer, nn.Linear) else QuantEmbedding)(blocks))
        chosen[name] = fmt
        if on_layer is not None:
            on_layer(name, fmt, float(np.abs(dequantize(blocks) - w).max()))
    return chosen


def quantized_tensors(model):
    """{"<layer>.weight.q": integers, "<layer>.weight.scale": fp16 scales} of every quantized layer."""
    out = {}
    for name, layer in _quantized(model):
        out[f"{name}.weight.q"], out[f"{name}.weight.scale"] = layer.blocks.q, layer.blocks.scale
    return out


def _quantized(module, prefix=""):
    for attr, child in module.children():
        if isinstance(child, _Quantized):
            yield prefix + attr, child
        else:
            yield from _quantized(child, prefix + attr + ".")


def load_quantized(path, model, tensors, layers):
    """Put the quantized layers named in `layers` ({name: format}) into model from `tensors`.

    Each one's .q and .scale tensors are checked against the float layer they replace (its
    shape, the format's dtype), then removed from tensors, so what is left is model's float
    state. A mismatch raises CheckpointError naming the tensor.
    """
    found = {name: (parent, attr, layer) for parent, attr, name, layer in _layers(model)}
    for name, fmt in layers.items():
        if name not in found:
            raise CheckpointError(f"{path}: its quantization lists layer {name!r}, which this "
                                  f"model does not have; the file is damaged")
        parent, attr, layer = found[name]
        N, K = layer.weight.shape
        blocks = Blocks(fmt, tensors.pop(f"{name}.weight.q", None),
                        tensors.pop(f"{name}.weight.scale", None))
        _check_blocks(path, f"{name}.weight", blocks, (N, K))
        setattr(parent, attr, (QuantLinear if isinstance(layer, nn.Linear) else QuantEmbedding)(blocks))


def _check_blocks(path, name, blocks, shape):
    N, K = shape
    q_dtype, q_shape = (np.int8, (N, K)) if blocks.fmt == "q8_0" else (np.uint8, (N, K // 2))
    for part, array, dtype, want in ((".q", blocks.q, q_dtype, q_shape),
                                     (".scale", blocks.scale, np.float16, (N, K // 32))):
        if array is None:
            raise CheckpointError(f"{path}: tensor {name + part!r} is missing; the file is "
                                  f"damaged: quantize the float checkpoint again")
        if array.dtype != dtype or array.shape != want:
            raise CheckpointError(f"{path}: tensor {name + part!r} is {array.dtype} "
                                  f"{array.shape}, {blocks.fmt} needs {np.dtype(dtype)} {want}; "
                                  f"the file is damaged: quantize the float checkpoint again")
