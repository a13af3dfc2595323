"""The AMX bf16 matmul (csrc/matmul_amx.c) against NumPy, on any CPU, through amx.h's emulation.

What it checks: a library built with -DTINYLLM_AMX_EMU (the tile instructions as plain C that
follows the Intel SDM's definition, csrc/amx.h) chooses the amx_bf16 path by itself, and its
matmul_bf16 there equals the float64 product of the bf16-rounded operands, within the bounds of
tests/test_c_matmul_bf16.py, at sizes that cut every tile edge: rows and columns around 16 and
32 (a block is 2 x 2 tiles of 16), K odd (a zero partner) and around 32 (one tile's depth), all
four transpose cases and batches. On a CPU with AMX, tests/test_c_matmul_bf16.py runs the same
kernel on the hardware (amx_bf16 is one of its paths). What it is not: a check of the emulation
against a real tile unit, which this test cannot make on a machine without one.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.c_helpers import c_kernels_or_skip
from tests.matmul_cases import TRANSPOSES, operands
from tests.test_c_attention_bf16 import assert_matches, definition
from tests.test_c_attention_bf16 import inputs as attention_inputs
from tests.test_c_matmul_bf16 import assert_bf16_close

c_kernels_or_skip()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (batch, M, N, K): the emulation multiplies one scalar at a time, so the sizes stay small
CASES = [(None, 1, 1, 1), (None, 7, 13, 5), (None, 16, 16, 32), (None, 33, 31, 63),
         (None, 63, 65, 97), (None, 1, 77, 3), (None, 50, 1, 200), (5, 17, 33, 9), (3, 1, 1, 70)]

SCRIPT = """
import sys, numpy as np
from tinyllm.backends import c_kernels as c
print(c.BF16_PATH)
d = np.load(sys.argv[1])
out = {k: c.matmul_bf16(d[k + "a"], d[k + "b"], d[k + "ta"].item(), d[k + "tb"].item())
       for k in d["keys"]}
for i in range(d["attention"].item()):   # attention's tile products, on the same tiles
    q, k, v, dout, ref_out, ref_lse = (d[f"attn{i}_{n}"] for n in ("q", "k", "v", "dout", "out", "lse"))
    ours = (*c.attention_forward_bf16(q, k, v),
            *c.attention_backward_bf16(dout, q, k, v, ref_out, ref_lse))
    out.update({f"attn{i}_ours{j}": x for j, x in enumerate(ours)})
np.savez(sys.argv[2], **out)
"""
# (B, nh, Tq, Tk, hs) of attention_*_bf16 on the emulated tiles: two 64-row tiles and a ragged
# one, an odd head size; Tq < Tk with hs past one 64-pair K slice of amx_gemm_acc
ATTENTION = [(1, 2, 67, 67, 24), (1, 1, 5, 77, 130)]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """(the path the emulated library chose, {case: (ours, a, b, ta, tb)}), from one child."""
    tmp = tmp_path_factory.mktemp("amx")
    lib = tmp / "libtinyllm.so"
    csrc = os.path.join(ROOT, "csrc")
    sources = sorted(os.path.join(csrc, f) for f in os.listdir(csrc) if f.endswith(".c"))
    cc = os.environ.get("CC", "cc")
    build = subprocess.run([cc, "-O2", "-std=c11", "-fopenmp", "-fno-trapping-math",
                            "-DTINYLLM_AMX_EMU", "-fPIC", "-shared", "-o", str(lib), *sources,
                            "-lm"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"{cc} could not build the emulated library: {build.stderr[-300:]}")
    inputs, keys = {}, []
    for i, (batch, M, N, K) in enumerate(CASES):
        for ta, tb in TRANSPOSES:
            key = f"c{i}t{int(ta)}{int(tb)}_"
            a, b = operands(np.random.default_rng([i, ta, tb]), batch, M, N, K, ta, tb)
            inputs.update({key + "a": a, key + "b": b, key + "ta": ta, key + "tb": tb})
            keys.append(key)
    for i, shape in enumerate(ATTENTION):
        q, k, v, dout = attention_inputs(shape)
        ref = definition(q, k, v, dout)
        inputs.update({f"attn{i}_{n}": x for n, x in zip(("q", "k", "v", "dout"), (q, k, v, dout))})
        inputs.update({f"attn{i}_out": ref[0], f"attn{i}_lse": ref[1]})
        inputs.update({f"attn{i}_ref{j}": x for j, x in enumerate(ref)})
    np.savez(tmp / "in.npz", keys=np.array(keys), attention=len(ATTENTION), **inputs)
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp / "in.npz"), str(tmp / "out.npz")],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=path, TINYLLM_LIB=str(lib),
                                   OMP_NUM_THREADS="2"))
    assert done.returncode == 0, f"the emulated library failed:\n{done.stderr}"
    out = np.load(tmp / "out.npz")
    cases = {k: (out[k], inputs[k + "a"], inputs[k + "b"], inputs[k + "ta"], inputs[k + "tb"])
             for k in keys}
    for i in range(len(ATTENTION)):
        cases[f"attn{i}"] = ([out[f"attn{i}_ours{j}"] for j in range(5)],
                             [inputs[f"attn{i}_ref{j}"] for j in range(5)],
                             [inputs[f"attn{i}_{n}"] for n in ("q", "k", "v", "dout")])
    return done.stdout.strip(), cases


def test_emulated_library_chooses_amx(emulated):
    assert emulated[0] == "amx_bf16"


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("transpose_a, transpose_b", TRANSPOSES)
def test_amx_matches_definition(emulated, case, transpose_a, transpose_b):
    ours, a, b, ta, tb = emulated[1][f"c{case}t{int(transpose_a)}{int(transpose_b)}_"]
    assert_bf16_close(ours, a, b, ta, tb, f"amx_bf16 {CASES[case]} transposes {ta, tb}")


@pytest.mark.parametrize("case", range(len(ATTENTION)))
def test_attention_tiles_match_definition(emulated, case):
    """attention_*_bf16 on amx_bf16 multiplies its tiles through amx_gemm_acc: the emulated
    tiles against the NumPy definition, as tests/test_c_attention_bf16.py checks the hardware."""
    ours, ref, (q, k, v, dout) = emulated[1][f"attn{case}"]
    assert_matches(q, k, v, dout, ours, ref, f"amx_bf16 attention {ATTENTION[case]}")
