"""Loading a quantized checkpoint never builds the float32 model: its peak memory, measured;
and safetensors.map_safetensors, the memory-mapped reader it uses.

A child process loads the checkpoint and runs one forward (which reads every weight), and
reports its peak resident memory above its own resident memory just before the load, after
the imports: Linux's peak (VmHWM) is reset there (/proc/self/clear_refs), so an earlier
peak of the imports does not hide the load's. This test's process, whose memory depends on
what ran before, is not measured. The checkpoint files are written here first. Linux only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.checkpoint import save_model
from tinyllm.model import GPT, preset
from tinyllm.quant.layers import quantize_model
from tinyllm.safetensors import load_safetensors, map_safetensors, save_safetensors
from tinyllm.tokenizer import ByteTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r"""
import json, sys
import numpy as np
from tinyllm.checkpoint import load_model
from tinyllm.memory import peak_resident_bytes, reset_peak, resident_bytes
from tinyllm.tensor import no_grad

if not reset_peak():   # the peak (VmHWM) := the resident memory now
    sys.exit(print(json.dumps({"skip": "cannot reset the peak (/proc/self/clear_refs)"})))
base = resident_bytes()
model, _, meta = load_model(sys.argv[1])
with no_grad():
    logits = model(np.arange(8)[None] % 256)[0].data
print(json.dumps({"peak": peak_resident_bytes() - base, "finite": bool(np.isfinite(logits).all())}))
"""
MiB = 2 ** 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{recipe: path} of a 10M-parameter model (40 MB in float32), float and quantized."""
    out, paths = tmp_path_factory.mktemp("qload"), {}
    config = preset("bench", n_layer=2)
    for recipe in ("fp32", "q8_0", "q4_mixed"):
        model = GPT(config).eval()
        layers = quantize_model(model, recipe) if recipe != "fp32" else None
        paths[recipe] = out / f"{recipe}.safetensors"
        save_model(paths[recipe], model, ByteTokenizer(), 0, "run",
                   quant={"format": recipe, "layers": layers} if layers else None)
    return paths


def peak_of_loading(path):
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("measuring a peak needs Linux's /proc/self/clear_refs")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["finite"]
    return result["peak"]


@pytest.mark.parametrize("recipe", ["q8_0", "q4_mixed"])
def test_quantized_load_peak_is_about_the_file(files, recipe):
    size, fp32 = os.path.getsize(files[recipe]), os.path.getsize(files["fp32"])
    peak = peak_of_loading(files[recipe])
    # the mapped file (every page read by the forward) plus a few MB: the forward's
    # activations and logits, the float tensors copied out (norms, wpe), Python objects
    assert peak < size + 6 * MiB, f"peak {peak / MiB:.1f} MiB for a {size / MiB:.1f} MiB file"
    assert peak < 0.45 * fp32


def test_float_load_for_comparison(files):
    # the float32 file still loads into real arrays: its peak is at least the model
    assert peak_of_loading(files["fp32"]) > 0.9 * os.path.getsize(files["fp32"])


def test_map_safetensors_equals_load(tmp_path):
    path = tmp_path / "t.safetensors"
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int8),
               "c": rng.standard_normal(4).astype(np.float16), "d": np.zeros((0, 3), np.uint8),
               "e": np.array(2.5, np.float64)}
    save_safetensors(path, tensors, {"k": "v"})
    mapped, meta = map_safetensors(path)
    loaded, _ = load_safetensors(path)
    assert meta == {"k": "v"} and list(mapped) == list(loaded)
    for name, array in loaded.items():
        assert mapped[name].dtype == array.dtype and np.array_equal(mapped[name], array)
        assert not mapped[name].flags.writeable and mapped[name].flags.aligned
    # a save replaces the file by a rename: the old mapping keeps the old bytes
    save_safetensors(path, {"a": np.ones((3, 5), np.float32)})
    assert np.array_equal(mapped["a"], tensors["a"])
