"""The GPU check's report: the GPUs' dense peaks, MFU, one line per stage, the summary table.

tools/gpu_check.py runs the stages and hands their results here; this file only
reads numbers and writes text: report.json (every stage's status, result line,
numbers and full output) and report.txt (the summary, then the outputs).
MFU is achieved FLOP/s (the model's training FLOPs per token, 6 N + 12 L C T,
times tokens/s) over the GPU's dense peak for the precision the matmuls used:
plain float32 on the CUDA cores, or TF32 on the tensor cores.
"""
import datetime
import importlib.util
import json
import os
import re


def _load_atomic():
    """tinyllm/atomic.py alone: the report must be written even when the package does not import
    (a missing numpy or cffi is one of the things it reports), and atomic.py imports nothing of it."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tinyllm", "atomic.py")
    spec = importlib.util.spec_from_file_location("tinyllm_atomic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


atomic_write = _load_atomic().atomic_write

# dense peaks in TFLOP/s, (float32, TF32), by a word of nvidia-smi's name; first match wins.
# NVIDIA's datasheets print TF32 "with sparsity": the dense rate is half of that.
PEAKS = [
    ("H200 NVL", 60.0, 417.5),    # H200 datasheet (nvidia.com/h200): FP32 60, TF32 835 sparse
    ("H200", 67.0, 494.7),        # H200 SXM, same datasheet: FP32 67, TF32 989 sparse
    ("H100 NVL", 60.0, 417.5),    # H100 datasheet (nvidia.com/h100): FP32 60, TF32 835 sparse
    ("H100 PCIe", 51.0, 378.0),   # H100 datasheet: PCIe FP32 51, TF32 756 sparse
    ("H100", 67.0, 494.7),        # H100 SXM5 ("NVIDIA H100 80GB HBM3"): FP32 67, TF32 989 sparse
    ("A100", 19.5, 156.0),        # A100 datasheet (SXM and PCIe): FP32 19.5, TF32 156 dense
    ("L40S", 91.6, 183.0),        # L40S datasheet: FP32 91.6, TF32 366 sparse
    ("A10", 31.2, 62.5),          # A10 datasheet: FP32 31.2, TF32 125 sparse
    ("L4", 30.3, 60.0),           # L4 datasheet: FP32 30.3, TF32 120 sparse
]
# issue 17's targets: ours / theirs, measured side by side
TARGETS = {"matmul_tf32_4096": 0.7, "attention_8_12_1024_64": 0.5, "train_fp32": 0.7}


def peak_tflops(gpu_name, precision):
    """The dense peak of this GPU for "highest" (float32) or "tf32" matmuls, or None if unknown."""
    for key, fp32, tf32 in PEAKS:
        if re.search(rf"\b{re.escape(key)}\b", gpu_name or ""):
            return tf32 if precision == "tf32" else fp32
    return None


def mfu(case, gpu, precision):
    """{"tflops", "peak_tflops", "mfu"} of one training case from benchmark.py (mfu None if no peak)."""
    tflops = case["flops_per_token"] * case["tokens_per_sec"] / 1e12
    peak = peak_tflops(gpu["name"], precision) if gpu else None
    return {"tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None}


def train_line(case):
    mfu_text = f"MFU {case['mfu']:.1%} of {case['peak_tflops']:g}" if case["mfu"] is not None \
        else "MFU n/a (no known peak)"
    gpu_mb = f"{case['gpu_peak_mb']:,.0f} MB on the GPU" if case.get("gpu_peak_mb") is not None else ""
    return (f"{case['config']} {case['who']} {case['precision']}: {case['tokens_per_sec']:,.0f} tokens/s, "
            f"{case['tflops']:.2f} TFLOP/s, {mfu_text}, {gpu_mb}, loss {case['loss']:.4f}")


def bench_cuda_line(data):
    """The two numbers issue 17 targets, from bench_cuda.py's JSON."""
    matmul = {tuple(r["shape"]): r for r in data.get("matmul", [])}
    attention = {tuple(r["shape"]): r for r in data.get("attention", [])}
    parts = []
    if (4096, 4096, 4096) in matmul:
        r = matmul[(4096, 4096, 4096)]
        parts.append(f"matmul 4096: fp32 {r['ratio_fp32']:.2f}x cuBLAS, TF32 {r['ratio_tf32']:.2f}x "
                     f"(target {TARGETS['matmul_tf32_4096']}x)")
    if (8, 12, 1024, 64) in attention:
        parts.append(f"attention 8x12x1024x64 fwd+bwd {attention[(8, 12, 1024, 64)]['ratio']:.2f}x SDPA "
                     f"(target {TARGETS['attention_8_12_1024_64']}x)")
    return "; ".join(parts) or "no rows at the target sizes"


def pytest_counts(text):
    """{"passed": 12, "skipped": 3, ...} from pytest's last summary line in text ({} if none)."""
    counts = {}
    for line in text.splitlines():
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line)
        if found and " in " in line:
            counts = {word: int(n) for n, word in found}
    return counts


def read_json(path):
    with open(path) as f:
        return json.load(f)


def training_table(stages):
    """cuda against torch-cuda at each precision where both ran: speed, MFU, memory, loss."""
    rows = []
    for short in ("fp32", "tf32"):
        ours = stages.get(f"train_cuda_{short}", {})
        theirs = stages.get(f"train_torch_{short}", {})
        if ours.get("status") != "ok" or theirs.get("status") != "ok":
            continue
        a, b = ours["data"], theirs["data"]
        target = f" (target {TARGETS['train_fp32']}x)" if short == "fp32" else ""
        rows.append(f"{short}: cuda {a['tokens_per_sec']:,.0f} vs torch {b['tokens_per_sec']:,.0f} tokens/s "
                    f"= {a['tokens_per_sec'] / b['tokens_per_sec']:.2f}x{target}; "
                    f"MFU {_pct(a['mfu'])} vs {_pct(b['mfu'])}; GPU peak {a['gpu_peak_mb']:,.0f} vs "
                    f"{b['gpu_peak_mb']:,.0f} MB; loss {a['loss']:.4f} vs {b['loss']:.4f} "
                    f"(|diff| {abs(a['loss'] - b['loss']):.1e})")
    return rows


def _pct(x):
    return "n/a" if x is None else f"{x:.1%}"


def summary(gpu, stages):
    """The table printed at the end and put at the top of report.txt."""
    head = f"GPU check on {gpu['name']} (sm_{gpu['arch']})" if gpu else "GPU check, dry run (no GPU)"
    lines = [head, f"{'stage':<16} {'status':<8} {'seconds':>8}  result"]
    for name, s in stages.items():
        lines.append(f"{name:<16} {s['status']:<8} {s['seconds']:>8.1f}  {s['result']}")
    rows = training_table(stages)
    if rows:
        lines += ["", "gpt2 training, tinyllm cuda vs PyTorch eager on the same GPU, same weights and batch:"]
        lines += [f"  {r}" for r in rows]
    return "\n".join(lines)


def write(out, gpu, stages):
    """report.json and report.txt in `out`, each written whole or not at all."""
    text = summary(gpu, stages)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    with atomic_write(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"when": when, "gpu": gpu, "stages": stages, "summary": text}, f, indent=1)
    outputs = [f"\n=== {name}: {s['status']} ===\n{s['output']}" for name, s in stages.items()]
    with atomic_write(os.path.join(out, "report.txt"), "w", encoding="utf-8") as f:
        f.write(f"{when}\n{text}\n" + "".join(outputs))
