"""The C backend's fused decoding calls (csrc/decode_block.c), beside c_kernels.py.

What it is: the wrappers of one decoding step run in C, each with the meaning of its NumPy
definition in numpy_kernels.py, and checked as c_kernels.py's are before C sees a buffer:
  decode_block       one transformer block for B * T <= 16 new rows, the cache written in place
  decode_step        every block, ln_f and the lm_head: the step's logits in one call
  decode_weights, decode_step_weights
                     the weights checked and pointed at once, reused by every step
c_kernels.py re-exports them, so the backend's interface stays that one module; tinyllm/
generate.py's KVCache decides when a step can take them. Read csrc/decode_block.c next.
"""
import numpy as np

from tinyllm.backends.c_paths import GEMV_MAX_ROWS, _decode_bits, _quant_bits
from tinyllm.backends.c_library import _contiguous, _f32, _p, _writable, ffi, lib
from tinyllm.backends.checks import BLOCK_WEIGHTS, block_width, check_blocks, decode_block_sizes
from tinyllm.backends.checks import shape as _shape


def decode_block(x, weights, n_head, eps, k_cache, v_cache, start, path=None, qpath=None):
    """As numpy_kernels.decode_block, in one C call (csrc/decode_block.c), B * T <= 16 rows;
    weights as there or from decode_weights; path as gemv's, qpath a QUANT_PATHS name."""
    w = weights if isinstance(weights, BlockWeights) else decode_weights(weights)
    x = _f32("decode_block x", x)
    B, T, Tmax = decode_block_sizes(x, w.C, n_head, k_cache, v_cache, start, GEMV_MAX_ROWS)
    k_cache, v_cache = (_writable(f"decode_block {n}", _f32(f"decode_block {n}", c))
                        for n, c in (("k_cache", k_cache), ("v_cache", v_cache)))
    out = np.empty_like(x)                                        # (B, T, C)
    if lib.decode_block(_p(x), _p(out), w.ln_1, w.ln_2, w.linears, _p(k_cache), _p(v_cache), B, T,
                        w.C, n_head, start, Tmax, eps, _decode_bits(path), _quant_bits(qpath)):
        raise MemoryError(f"decode_block: no memory for its scratch (~{64 * B * T * w.C:,} bytes)")
    return out


class BlockWeights:
    """A block's weights checked and pointed at once (decode_weights): a decoding step reuses
    them (generate.KVCache keeps them per layer) instead of converting every array again."""

    def __init__(self, weights):
        self.C, self.held = block_width(weights), tuple(weights)   # held: alive while pointed at
        self.ln_1, self.ln_2 = (_p(_f32(f"decode_block {BLOCK_WEIGHTS[i]}", weights[i])) for i in (0, 3))
        self.parts = [_block_weight(weights[i], f"decode_block {BLOCK_WEIGHTS[i]}") for i in (1, 2, 4, 5)]
        self.linears = ffi.new("decode_weight[4]", self.parts)


def decode_weights(weights):
    """What decode_block takes for a block's weights, converted once (BlockWeights)."""
    return BlockWeights(weights)


def decode_step(x, weights, n_head, eps, k_caches, v_caches, start, path=None, qpath=None):
    """As numpy_kernels.decode_step, in one C call (csrc/decode_block.c), B * T <= 16 rows;
    weights as there or from decode_step_weights; path and qpath as decode_block's."""
    w = weights if isinstance(weights, StepWeights) else decode_step_weights(weights)
    x = _f32("decode_step x", x)
    caches = w.caches(k_caches, v_caches)
    B, T, Tmax = decode_block_sizes(x, w.C, n_head, k_caches[0], v_caches[0], start, GEMV_MAX_ROWS)
    logits = np.empty((B, w.V), np.float32)                       # (B, V)
    if lib.decode_step(_p(x), _p(logits), w.norms, w.linears, caches, len(w.blocks), B, T, w.C,
                       n_head, w.V, start, Tmax, eps, _decode_bits(path), _quant_bits(qpath)):
        raise MemoryError(f"decode_step: no memory for its scratch (~{64 * B * T * w.C:,} bytes)")
    return logits


class StepWeights:
    """A decoding step's weights checked and pointed at once (decode_step_weights): each
    block's as BlockWeights, then ln_f's and the lm_head's."""

    def __init__(self, weights):
        blocks, ln_f, head = weights
        self.blocks = [decode_weights(b) for b in blocks]
        if not self.blocks or any(b.C != self.blocks[0].C for b in self.blocks):
            raise ValueError(f"decode_step: expected one or more blocks of one width, got widths "
                             f"{[b.C for b in self.blocks]}")
        self.C, self.V = self.blocks[0].C, head.shape[0]
        if tuple(head.shape) != (self.V, self.C):
            raise ValueError(f"decode_step: lm_head has shape {tuple(head.shape)}; (V, {self.C}) wanted")
        ln_f = _f32("decode_step ln_f", ln_f)
        _shape("decode_step ln_f", ln_f, (self.C,))
        self.held = ln_f, head, _p(ln_f), _block_weight(head, "decode_step lm_head")   # pointed at
        self.norms = ffi.new("float *[]", [p for b in self.blocks for p in (b.ln_1, b.ln_2)] +
                             [self.held[2]])
        self.linears = ffi.new("decode_weight[]", [part for b in self.blocks for part in b.parts] +
                               [self.held[3]])
        self._caches = (), None   # (the caches last checked, their pointers): caches() below

    def caches(self, k_caches, v_caches):
        """The pointers of every layer's k and v cache, checked once for as long as a step is
        given the same arrays (a KVCache's, which keeps this object): of one shape (B, nh, Tmax,
        hs), float32, contiguous and writable. Checked on every step, layer by layer, they cost
        the 15M-parameter shape's step 33 us of Python, against 7 us now (about 1 % of the
        step); decode_block_sizes then checks x and the positions against the first layer's."""
        arrays = (*k_caches, *v_caches)
        held, pointers = self._caches
        if len(held) == len(arrays) and all(a is b for a, b in zip(held, arrays)):
            return pointers
        L = len(self.blocks)
        if len(k_caches) != L or len(v_caches) != L:
            raise ValueError(f"decode_step: {L} blocks need as many k and v caches, "
                             f"got {len(k_caches)} and {len(v_caches)}")
        pointers = []
        for k, v in zip(k_caches, v_caches):   # every cache of the first one's shape
            for name, c in (("k_cache", k), ("v_cache", v)):
                _shape(f"decode_step {name}", c, k_caches[0].shape)
                pointers.append(_p(_writable(f"decode_step {name}", _f32(f"decode_step {name}", c))))
        self._caches = arrays, pointers   # held: the arrays stay alive while pointed at
        return pointers


decode_step_weights = StepWeights   # what decode_step takes for (blocks, ln_f, lm_head), made once


def _block_weight(w, name):
    """decode_weight's fields for w, float32 (N, K) or quantized (.fmt, .q, .scale: quant's Blocks)."""
    if isinstance(w, np.ndarray):
        return _p(_f32(name, w)), ffi.NULL, lib.DECODE_FP32
    q, scale = (_contiguous(name, a) for a in check_blocks(name, w))
    fmt = lib.DECODE_Q8_0 if w.fmt == "q8_0" else lib.DECODE_Q4_0
    return ffi.from_buffer(q), ffi.from_buffer("uint16_t[]", scale), fmt
