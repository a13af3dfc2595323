"""The fused decoding step (decode_step in csrc/decode_block.c: every block, ln_f and the
lm_head in one call) against its NumPy definition (numpy_kernels.decode_step) at awkward sizes,
float32 and quantized, on every instruction-set path this CPU has; where it falls back; and
the errors of bad input. The blocks themselves, and GPT.last_logits with the fused step against
the step layer by layer, are tests/test_c_decode_block.py's. Skipped when the C library is not
built. The tolerances are the block's (TOL, QTOL there): the step adds ln_f and the head, two
roundings to a block's eight.
"""
import contextlib

import numpy as np
import pytest

from tinyllm import backends
from tinyllm.backends import numpy_kernels as K
from tinyllm.finetune.lora import LoRAConfig, apply_lora
from tinyllm.model import GPT, GPTConfig
from tinyllm.quant.formats import quantize
from tinyllm.tensor import no_grad
from tests.test_c_decode_block import (CK, PATHS, QPATHS, QTOL, TOL, block_weights, caches,
                                      decode_logits, randn, rel_err)


def step_inputs(rng, L, B, T, C, nh, V, Tmax, start, fmt):
    """(x, (blocks, ln_f, head), k_caches, v_caches) of an L-block model of width C, vocab V."""
    blocks = [block_weights(rng, C, fmt) for _ in range(L)]
    head = randn(rng, V, C, scale=1 / np.sqrt(C))
    head = head if fmt == "fp32" else quantize(head, fmt)
    kv = [caches(rng, B, nh, Tmax, C // nh, start) for _ in range(L)]
    return (randn(rng, B, T, C), (blocks, 1 + randn(rng, C, scale=0.1), head),
            [k for k, _ in kv], [v for _, v in kv])


# (L, B, T, C, nh, V): one block and several, odd widths, heads and vocabularies
SIZES = [(1, 1, 1, 21, 3, 1), (2, 3, 2, 35, 7, 101), (3, 1, 1, 48, 4, 333), (2, 8, 2, 24, 2, 17)]
QSIZES = [(1, 1, 1, 32, 2, 7), (2, 2, 3, 64, 4, 90)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("L,B,T,C,nh,V", SIZES)
def test_fp32_step_equals_numpy(L, B, T, C, nh, V, path):
    rng = np.random.default_rng(L * 1000 + C)
    for start in (1, 30 - T):
        x, w, ks, vs = step_inputs(rng, L, B, T, C, nh, V, 30, start, "fp32")
        f64 = lambda a: a.astype(np.float64)                                   # noqa: E731
        w64 = ([tuple(map(f64, b)) for b in w[0]], f64(w[1]), f64(w[2]))
        k64, v64 = [list(map(f64, c)) for c in (ks, vs)]
        want = K.decode_step(f64(x), w64, nh, 1e-5, k64, v64, start)           # (B, V)
        got = CK.decode_step(x, w, nh, 1e-5, ks, vs, start, path=path)
        where = f"[{path}] L={L} B={B} T={T} C={C} nh={nh} V={V} start={start}"
        assert got.shape == (B, V) and rel_err(got, want) <= TOL, f"{where}: {rel_err(got, want):.3g}"
        for ours, ref in zip(ks + vs, k64 + v64):                              # every block's cache
            assert rel_err(ours[:, :, :start + T], ref[:, :, :start + T]) <= TOL, where


@pytest.mark.parametrize("qpath", QPATHS)
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("L,B,T,C,nh,V", QSIZES)
def test_quantized_step_equals_numpy(L, B, T, C, nh, V, fmt, qpath):
    x, w, ks, vs = step_inputs(np.random.default_rng(C + V), L, B, T, C, nh, V, 20, 9, fmt)
    want = K.decode_step(x, w, nh, 1e-5, [k.copy() for k in ks], [v.copy() for v in vs], 9)
    got = CK.decode_step(x, w, nh, 1e-5, ks, vs, 9, qpath=qpath)
    assert rel_err(got, want) <= QTOL, f"[{fmt} {qpath}] L={L} B={B} T={T}: {rel_err(got, want):.3g}"


def test_the_step_goes_block_by_block_where_the_kernel_does_not_apply():
    """A bf16 or LoRA lm_head, a LoRA block, a recorded graph, training mode and more than 16
    rows a step never call decode_step (and still decode)."""
    config = GPTConfig(vocab_size=40, block_size=30, n_layer=2, n_head=2, n_embd=32, seed=1)
    bf16, lora_head, lora_block = GPT(config).eval(), GPT(config).eval(), GPT(config).eval()
    bf16.lm_head.matmul_dtype = "bf16"
    apply_lora(lora_head, LoRAConfig(r=2, targets=("lm_head",)))
    apply_lora(lora_block, LoRAConfig(r=2, targets=("c_fc",)))
    for model, grad, rows in ((bf16, False, 2), (lora_head, False, 2), (lora_block, False, 2),
                              (GPT(config).eval(), True, 2), (GPT(config).train(), False, 2),
                              (GPT(config).eval(), False, 17)):
        calls = []
        ids = np.random.default_rng(4).integers(0, 40, (rows, 6))
        with backends.using("c"), (contextlib.nullcontext() if grad else no_grad()):
            decode_logits(model, ids, True, calls, "decode_step")
        assert calls == [], f"fused where it does not apply: grad={grad}, rows={rows}"


def test_bad_input_is_refused_with_the_fix():
    rng = np.random.default_rng(0)
    x, (blocks, ln_f, head), ks, vs = step_inputs(rng, 2, 1, 1, 32, 2, 9, 8, 3, "fp32")
    other = np.zeros((1, 2, 9, 16), np.float32)
    cases = [
        (dict(k_caches=ks[:1]), ValueError, "2 blocks need as many k and v caches"),
        (dict(weights=([], ln_f, head)), ValueError, "one or more blocks"),
        (dict(weights=([blocks[0], block_weights(rng, 64, "fp32")], ln_f, head)), ValueError,
         "of one width"),
        (dict(weights=(blocks, ln_f, head[:, :31])), ValueError, r"lm_head has shape \(9, 31\)"),
        (dict(weights=(blocks, ln_f[:5], head)), ValueError, "ln_f: expected shape"),
        (dict(k_caches=[ks[0], other], v_caches=[vs[0], other]), ValueError, "k_cache: expected shape"),
        (dict(start=8), ValueError, "do not fit"),
        (dict(x=x.astype(np.float64)), TypeError, "float32"),
    ]
    for change, error, message in cases:
        args = dict(x=x, weights=(blocks, ln_f, head), n_head=2, eps=1e-5, k_caches=ks,
                    v_caches=vs, start=3)
        args.update(change)
        with pytest.raises(error, match=message):
            CK.decode_step(**args)
