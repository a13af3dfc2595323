"""The fused decoding block (csrc/decode_block.c, c_kernels.decode_block) against its NumPy
definition (numpy_kernels.decode_block) at awkward sizes, float32 and quantized weights, on
every instruction-set path this CPU has; the definition against the block run layer by layer;
a model's logits with the fused steps against those without them; where it falls back; and
the errors of bad input. Skipped when the C library is not built.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyllm import backends
from tinyllm.backends import cpu_paths, numpy_kernels as K
from tinyllm.finetune.lora import LoRAConfig, apply_lora
from tinyllm.generate import KVCache
from tinyllm.model import GPT, GPTConfig
from tinyllm.quant.formats import quantize
from tinyllm.quant.layers import quantize_model
from tinyllm.tensor import no_grad
from tests.c_helpers import c_kernels_or_skip

CK = c_kernels_or_skip()
from tinyllm.backends import c_quant  # noqa: E402 (after the skip: it needs the library)

PATHS = cpu_paths.supported(CK.DECODE_PATHS, CK.FEATURES)
QPATHS = c_quant.available_paths()
# float32 sums in another order (vector lanes, the pool's chunks) than NumPy's, through about
# eight roundings of a block (two norms, four products, the attention, two adds)
TOL = 2e-5
# quantized: x is rounded to int8 per block before each product, and a value that C's float32
# and NumPy's land on either side of a rounding boundary (their inputs differ by the float32
# sums above) rounds to neighbouring integers: one quantum (absmax / 127) of one of a block's
# 32 values, which then flows through the rest of the block. Measured: q8_0 at most 3e-7 (no
# value flipped); q4_0 1.9e-3 in one case of 15 (B 8, C 160, start 39), 3e-7 in the others.
QTOL = 5e-3


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def block_weights(rng, C, fmt):
    """ln_1, c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj of width C; Linears in fmt."""
    shapes = ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))
    linears = [randn(rng, *s, scale=1 / np.sqrt(s[1])) for s in shapes]
    if fmt != "fp32":
        linears = [quantize(w, fmt) for w in linears]
    ln_1, ln_2 = (1 + randn(rng, C, scale=0.1) for _ in range(2))
    return (ln_1, linears[0], linears[1], ln_2, linears[2], linears[3])


def caches(rng, B, nh, Tmax, hs, start):
    """k, v caches (B, nh, Tmax, hs) with their first `start` positions filled, the rest NaN
    (the kernel must neither read past start + T nor leave the new positions unwritten)."""
    k, v = (np.full((B, nh, Tmax, hs), np.nan, np.float32) for _ in range(2))
    k[:, :, :start], v[:, :, :start] = randn(rng, B, nh, start, hs), randn(rng, B, nh, start, hs)
    return k, v


def rel_err(ours, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


# (B, T, C, nh): batches 1..8, T up to 16 rows in all, odd head counts and head sizes (fp32 any
# width; quantized widths are multiples of 32)
SIZES = [(1, 1, 21, 3), (2, 1, 45, 5), (3, 2, 35, 7), (8, 1, 96, 3), (1, 3, 160, 5), (5, 3, 64, 1),
         (4, 4, 96, 6)]
QSIZES = [(1, 1, 32, 1), (2, 1, 96, 3), (8, 1, 160, 5), (3, 2, 64, 2), (1, 4, 96, 6)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("B,T,C,nh", SIZES)
def test_fp32_block_equals_numpy_at_every_cached_length(B, T, C, nh, path):
    rng = np.random.default_rng(B * 100 + C)
    w = block_weights(rng, C, "fp32")
    w64 = tuple(a.astype(np.float64) for a in w)
    Tmax = 300   # past attention_decode's 256-key chunks
    for start in (1, 2, 37, 255, Tmax - T):
        x = randn(rng, B, T, C)
        k, v = caches(rng, B, nh, Tmax, C // nh, start)
        k64, v64 = k.astype(np.float64), v.astype(np.float64)
        want = K.decode_block(x.astype(np.float64), w64, nh, 1e-5, k64, v64, start)
        got = CK.decode_block(x, w, nh, 1e-5, k, v, start, path=path)
        where = f"[{path}] B={B} T={T} C={C} nh={nh} start={start}"
        assert rel_err(got, want) <= TOL, f"{where}: out error {rel_err(got, want):.3g}"
        for name, ours, ref in (("k", k, k64), ("v", v, v64)):
            new = slice(0, start + T)
            assert rel_err(ours[:, :, new], ref[:, :, new]) <= TOL, f"{where}: {name} cache"
            assert np.isnan(ours[:, :, start + T:]).all(), f"{where}: {name} written past the new rows"


@pytest.mark.parametrize("qpath", QPATHS)
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("B,T,C,nh", QSIZES)
def test_quantized_block_equals_numpy(B, T, C, nh, fmt, qpath):
    rng = np.random.default_rng(B * 100 + C + len(fmt))
    w = block_weights(rng, C, fmt)
    Tmax = 40
    for start in (1, 17, Tmax - T):
        x = randn(rng, B, T, C)
        k, v = caches(rng, B, nh, Tmax, C // nh, start)
        k2, v2 = k.copy(), v.copy()
        want = K.decode_block(x, w, nh, 1e-5, k2, v2, start)
        got = CK.decode_block(x, w, nh, 1e-5, k, v, start, qpath=qpath)
        err = rel_err(got, want)
        assert err <= QTOL, f"[{fmt} {qpath}] B={B} T={T} C={C} nh={nh} start={start}: {err:.3g}"
        assert rel_err(k[:, :, :start + T], k2[:, :, :start + T]) <= QTOL


@pytest.mark.parametrize("fmt", ["fp32", "q8_0", "q4_0"])
def test_numpy_block_is_the_block_run_layer_by_layer(fmt):
    """The definition equals model.Block.forward's layers, each its own kernel, exactly."""
    config = GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=3, n_embd=96, seed=4)
    model = GPT(config).eval()
    if fmt != "fp32":
        quantize_model(model, fmt)
    idx = np.random.default_rng(0).integers(0, 50, (2, 8))
    with backends.using("numpy"), no_grad():
        fused, unfused = (decode_logits(model, idx, fuse) for fuse in (True, False))
    np.testing.assert_array_equal(fused, unfused)


def decode_logits(model, idx, fuse, calls=None, kernel="decode_block"):
    """Logits (B, T - 3, V) of a prefill of 3 tokens and then one token a step, with the fused
    kernels (fuse) or layer by layer (KVCache(fused=False)); calls gets a 1 per call of kernel:
    decode_block (the steps through model's forward) or decode_step (through last_logits)."""
    kernels = backends.get_backend()
    cache, out = KVCache(model.config, fused=fuse), []
    step = ((lambda ids: model(ids, cache=cache)[0].data) if kernel == "decode_block" else
            (lambda ids: model.last_logits(ids, cache=cache)[:, None]))   # (B, 1, V) each
    step(idx[:, :3])
    original = getattr(kernels, kernel)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    setattr(kernels, kernel, counted if calls is not None else original)
    try:
        for t in range(3, idx.shape[1]):
            out.append(step(idx[:, t:t + 1]))
    finally:
        setattr(kernels, kernel, original)
    assert cache.length == idx.shape[1]
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("kernel,per_step", [("decode_block", 3), ("decode_step", 1)])
@pytest.mark.parametrize("fmt", ["fp32", "q8_0", "q4_0"])
@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_model_logits_with_fused_steps_equal_those_without(backend, fmt, kernel, per_step):
    """Through forward every block of a step is one decode_block call; through last_logits
    the whole step is one decode_step call (tests/test_c_decode_step.py)."""
    config = GPTConfig(vocab_size=60, block_size=20, n_layer=3, n_head=3, n_embd=96, seed=2)
    model = GPT(config).eval()
    if fmt != "fp32":
        quantize_model(model, fmt)
    idx = np.random.default_rng(1).integers(0, 60, (3, 12))
    calls = []
    with backends.using(backend), no_grad():
        fused = decode_logits(model, idx, True, calls, kernel)
        assert len(calls) == per_step * 9   # every decoding step, none of the prefill
        unfused = decode_logits(model, idx, False, calls, kernel)
    assert len(calls) == per_step * 9       # none more layer by layer
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)


def test_the_block_runs_layer_by_layer_where_the_kernel_does_not_apply():
    """bf16 Linears, LoRA layers, a recorded graph, training mode and more than 16 rows a step
    each take the unfused path (which still decodes); the kernel then is never called."""
    config = GPTConfig(vocab_size=40, block_size=30, n_layer=2, n_head=2, n_embd=32, seed=1)
    bf16 = GPT(config).eval().set_matmul_dtype("bf16")
    lora = GPT(config).eval()
    apply_lora(lora, LoRAConfig(r=2, targets=("c_attn",)))
    for model, grad, rows in ((bf16, False, 2), (lora, False, 2), (GPT(config).eval(), True, 2),
                              (GPT(config).train(), False, 2), (GPT(config).eval(), False, 17)):
        calls = []
        ids = np.random.default_rng(4).integers(0, 40, (rows, 9))
        with backends.using("c"), (contextlib.nullcontext() if grad else no_grad()):
            decode_logits(model, ids, True, calls)
        assert calls == [], f"fused where it does not apply: grad={grad}, rows={rows}"


def test_bad_input_is_refused_with_the_fix():
    rng = np.random.default_rng(0)
    w = block_weights(rng, 32, "fp32")
    x = randn(rng, 1, 1, 32)
    k, v = caches(rng, 1, 2, 8, 16, 3)
    many = np.zeros((17, 2, 8, 16), np.float32)
    read_only = k.copy()
    read_only.flags.writeable = False
    bad_scale = quantize(w[1], "q8_0")
    bad_scale.scale = bad_scale.scale[:, :0]
    cases = [
        (dict(x=randn(rng, 1, 32)), ValueError, r"must be \(B, T, C=32\)"),
        (dict(n_head=3), ValueError, "positive divisor"),
        (dict(weights=w[:5]), ValueError, "expected the 6 weights"),
        (dict(weights=(w[0], w[2]) + w[2:]), ValueError, "attn.c_attn has shape"),
        (dict(start=8), ValueError, "do not fit"),
        (dict(x=randn(rng, 17, 1, 32), k_cache=many, v_cache=many), ValueError, "at most 16"),
        (dict(k_cache=np.zeros((1, 2, 8, 8), np.float32)), ValueError, "k_cache: expected shape"),
        (dict(x=x.astype(np.float64)), TypeError, "float32"),
        (dict(k_cache=read_only), ValueError, "read-only"),
        (dict(qpath="sse9"), ValueError, "choose one of"),
        (dict(weights=w[:1] + (bad_scale,) + w[2:]), ValueError, "scale float16"),
        (dict(weights=w[:1] + (quantize(w[1], "q8_0").q,) + w[2:]), TypeError, "float32"),
    ]
    for change, error, message in cases:
        args = dict(x=x, weights=w, n_head=2, eps=1e-5, k_cache=k, v_cache=v, start=3)
        args.update(change)
        with pytest.raises(error, match=message):
            CK.decode_block(**args)


def test_new_weights_in_the_middle_of_a_generation_are_used():
    """The KV cache keeps each layer's converted weights; a model whose arrays are replaced
    (load_state_dict) is converted again, not read through the old pointers."""
    config = GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=32, seed=6)
    model, other = GPT(config).eval(), GPT(GPTConfig(**{**config.to_dict(), "seed": 7}))
    idx = np.random.default_rng(5).integers(0, 30, (1, 8))
    for backend in ("numpy", "c"):
        with backends.using(backend), no_grad():
            cache = KVCache(config)
            model(idx[:, :4], cache=cache)
            model(idx[:, 4:5], cache=cache)                       # fused, with model's weights
            model.load_state_dict(other.state_dict())
            got = model(idx[:, 5:6], cache=cache)[0].data
            ref_cache = KVCache(config)
            model.load_state_dict(GPT(config).state_dict())
            model(idx[:, :5], cache=ref_cache)
            model.load_state_dict(other.state_dict())
            want = model(idx[:, 5:6], cache=ref_cache)[0].data
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        model.load_state_dict(GPT(config).state_dict())


def test_a_build_without_march_native_runs_every_path(tmp_path):
    """-O2 without -march=native: every decode path and quantized path of the fused block, each
    forced, agrees with NumPy (the AVX-512 code exists as target-attribute functions; a path
    this CPU lacks runs as the best one below it)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lib = tmp_path / "libtinyllm.so"
    sources = [os.path.join(root, "csrc", f) for f in (
        "decode_block.c", "decode.c", "quant_i8.c", "quant_avx2.c", "norm.c", "activation.c",
        "elementwise.c", "pool.c", "cpu.c", "threads.c")]
    cc = os.environ.get("CC", "cc")
    build = subprocess.run([cc, "-O2", "-std=c11", "-fopenmp", "-fPIC", "-shared", "-o", str(lib),
                            *sources, "-lm"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"{cc} could not build the fused block portably: {build.stderr[-300:]}")
    script = ("import sys, numpy as np; sys.path.insert(0, '.'); "
              "from tests.test_c_decode_block import block_weights, caches; "
              "from tinyllm.backends import c_kernels as c; rng = np.random.default_rng(3); "
              "x = rng.standard_normal((2, 1, 64)).astype(np.float32); out = {}\n"
              "for fmt in ('fp32', 'q4_0'):\n"
              " w = block_weights(np.random.default_rng(1), 64, fmt)\n"
              " for p in c.DECODE_PATHS:\n"
              "  for q in c.QUANT_PATHS:\n"
              "   k, v = caches(np.random.default_rng(2), 2, 4, 20, 16, 9)\n"
              "   out[fmt + p + q] = c.decode_block(x, w, 4, 1e-5, k, v, 9, p, q)\n"
              "np.savez(sys.argv[1], **out)")
    env = dict(os.environ, TINYLLM_LIB=str(lib),
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=root)
    assert done.returncode == 0, f"the portable build failed:\n{done.stderr[-2000:]}"
    out = np.load(tmp_path / "out.npz")
    x = np.random.default_rng(3).standard_normal((2, 1, 64)).astype(np.float32)
    for fmt in ("fp32", "q4_0"):
        k, v = caches(np.random.default_rng(2), 2, 4, 20, 16, 9)
        want = K.decode_block(x, block_weights(np.random.default_rng(1), 64, fmt), 4, 1e-5, k, v, 9)
        for name in (n for n in out.files if n.startswith(fmt)):
            assert rel_err(out[name], want) <= (TOL if fmt == "fp32" else QTOL), name


def test_generate_with_dtype_bf16_decodes_layer_by_layer(tmp_path, capsys, monkeypatch):
    """`generate --dtype bf16` on C: its Linears round to bfloat16, which the fused block (float32
    products) does not, so each block runs layer by layer; the text is that of a bf16 model's
    greedy decoding, and decode_block is never called."""
    from tinyllm.checkpoint import new_run_id, save_model
    from tinyllm.cli import generate as cli
    from tinyllm.tokenizer import ByteTokenizer
    config = GPTConfig(vocab_size=256, block_size=24, n_layer=2, n_head=2, n_embd=16, seed=4)
    path = tmp_path / "ckpt.safetensors"
    save_model(path, GPT(config), ByteTokenizer(), 7, new_run_id())
    calls = []
    monkeypatch.setattr(CK, "decode_block", lambda *a, **k: calls.append(1))
    with backends.using(backends.get_backend().NAME):   # main sets the backend: put it back
        code = cli.main(["--ckpt", str(path), "--prompt", "ab", "--max-new-tokens", "12",
                         "--temperature", "0", "--backend", "c", "--dtype", "bf16"])
    out = capsys.readouterr().out
    assert code == 0 and calls == []
    model = GPT(config).eval().set_matmul_dtype("bf16")
    with backends.using("c"):
        ids = model.generate(np.array([[97, 98]]), 12, temperature=0)[0]
    assert out == ByteTokenizer().decode(ids.tolist()) + "\n"
