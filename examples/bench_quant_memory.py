"""Resident memory of generating from a checkpoint, per weight format: peak minus the baseline.

  python examples/bench_quant_memory.py --config gpt2 --dir /tmp/qmem

Writes DIR/fp32.safetensors (a GPT of the shape, random weights: memory does not depend on
them) and quantizes it with `python -m tinyllm quantize` into DIR/q8_0, q4_0 and q4_mixed
(files already there are reused). Then, for each file, a fresh Python process imports tinyllm,
resets Linux's peak-RSS counter (/proc/self/clear_refs; getrusage's ru_maxrss would carry the
imports' and the parent's peak), notes its resident memory, loads the checkpoint with
checkpoint.load_model and generates --tokens greedy tokens after an 8-token prompt on the C
backend, and reports its peak (VmHWM) minus that baseline. The issue's targets: q8_0 <= 30 %
of fp32, q4_mixed <= 20 %. Nothing asserts; record what it prints in BENCHMARKS.md.
tests/test_quant_load.py checks the same kind of peak on a small model.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

from bench_generate import CONFIGS  # noqa: E402

FORMATS = ("fp32", "q8_0", "q4_0", "q4_mixed")
CHILD = r"""
import json, sys
import numpy as np
from tinyllm import backends
from tinyllm.checkpoint import load_model
from tinyllm.generate import generate
from tinyllm.memory import peak_resident_bytes, reset_peak, resident_bytes

reset_peak()   # the peak := the resident memory now (Linux >= 4.0)
base = resident_bytes()
with backends.using("c"):
    model, _, _ = load_model(sys.argv[1])
    generate(model, np.arange(8)[None] % 256, int(sys.argv[2]), temperature=0)
print(json.dumps({"base": base, "peak": peak_resident_bytes() - base}))
"""


def write_checkpoints(config_name, folder):
    """{format: path}, writing what is missing (the float one with random weights)."""
    from tinyllm.checkpoint import save_model
    from tinyllm.model import GPT, GPTConfig
    from tinyllm.tokenizer import ByteTokenizer
    os.makedirs(folder, exist_ok=True)
    paths = {f: os.path.join(folder, f"{config_name}-{f}.safetensors") for f in FORMATS}
    if not os.path.exists(paths["fp32"]):
        save_model(paths["fp32"], GPT(GPTConfig(**CONFIGS[config_name])), ByteTokenizer(), 0, "bench")
    for fmt in FORMATS[1:]:
        if not os.path.exists(paths[fmt]):
            subprocess.run([sys.executable, "-m", "tinyllm", "quantize", "--ckpt", paths["fp32"],
                            "--format", fmt, "--out", paths[fmt]], check=True, cwd=ROOT,
                           capture_output=True)
    return paths


def peak(path, tokens):
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", CHILD, path, str(tokens)], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="gpt2", choices=list(CONFIGS))
    p.add_argument("--dir", default="/tmp/tinyllm-quant-memory", help="where the checkpoints go "
                   "(default: %(default)s)")
    p.add_argument("--tokens", type=int, default=16, help="tokens generated (default: %(default)s)")
    args = p.parse_args()
    paths = write_checkpoints(args.config, args.dir)
    print(f"{args.config}: load_model + {args.tokens} generated tokens, C backend; MiB")
    print(f"{'format':<9} {'file':>9} {'baseline':>9} {'peak - baseline':>16} {'of fp32':>8}")
    results = {fmt: peak(path, args.tokens) for fmt, path in paths.items()}
    for fmt, r in results.items():
        print(f"{fmt:<9} {os.path.getsize(paths[fmt]) / 2 ** 20:>9.1f} {r['base'] / 2 ** 20:>9.1f} "
              f"{r['peak'] / 2 ** 20:>16.1f} {r['peak'] / results['fp32']['peak']:>8.1%}", flush=True)


if __name__ == "__main__":
    main()
