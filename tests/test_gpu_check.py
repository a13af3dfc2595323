"""The GPU check's own logic (tools/gpu_check.py, tools/gpu_report.py), without a GPU.

What a GPU run depends on and CI cannot reach: reading nvidia-smi, the wheel
fallback when pip cannot install, the peak table, MFU, pytest's summary, and
the stage runner's rules (a timeout kills the stage's children, a failing
stage leaves the next one running, the report is written). The whole dry run
(`python tools/gpu_check.py --dry-run`) runs in .ci/run, not here: it builds.
"""
import json
import os
import sys
import time
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import gpu_check  # noqa: E402  (after the path fix)
import gpu_report  # noqa: E402


def test_nvidia_smi_csv_gives_the_architecture():
    gpu = gpu_check.parse_gpu("NVIDIA H200, 9.0, 143771, 580.159.03\n")
    assert gpu == {"name": "NVIDIA H200", "arch": "90", "memory_mib": "143771", "driver": "580.159.03"}
    assert gpu_check.parse_gpu("NVIDIA H200, 9.0, 140000, unknown (read by torch)")["arch"] == "90"
    assert gpu_check.parse_gpu("") is None
    assert gpu_check.parse_gpu("No devices were found") is None


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H200", "highest", 67.0), ("NVIDIA H200", "tf32", 494.7),
    ("NVIDIA H100 80GB HBM3", "tf32", 494.7), ("NVIDIA H100 PCIe", "highest", 51.0),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0), ("NVIDIA A10G", "tf32", None), ("NVIDIA L4", "highest", 30.3),
])
def test_peaks_match_the_name_by_whole_words(name, precision, peak):
    assert gpu_report.peak_tflops(name, precision) == peak


def test_mfu_is_achieved_over_peak():
    case = {"flops_per_token": 1e9, "tokens_per_sec": 6.7e4}     # 67 TFLOP/s
    got = gpu_report.mfu(case, {"name": "NVIDIA H200"}, "highest")
    assert got["tflops"] == pytest.approx(67.0) and got["mfu"] == pytest.approx(1.0)
    assert gpu_report.mfu(case, None, "highest")["mfu"] is None


def test_pytest_counts_read_the_last_summary():
    text = "....s.F\n=== short test summary ===\n1 failed, 5 passed, 1 skipped in 3.21s\n"
    assert gpu_report.pytest_counts(text) == {"failed": 1, "passed": 5, "skipped": 1}
    assert gpu_report.pytest_counts("no tests ran") == {}


def test_wheels_are_unpacked_for_this_python_only(tmp_path):
    wheels, tag = tmp_path / "wheels", f"cp{sys.version_info[0]}{sys.version_info[1]}"
    wheels.mkdir()
    for name, module in [(f"fake-1.0-{tag}-{tag}-manylinux2014_x86_64.whl", "fake_here"),
                         ("fake-1.0-cp29-cp29-manylinux2014_x86_64.whl", "fake_other"),
                         ("pure-1.0-py3-none-any.whl", "pure")]:
        with zipfile.ZipFile(wheels / name, "w") as z:
            z.writestr(f"{module}/__init__.py", "")
    site = gpu_check.unpack_wheels(str(wheels), str(tmp_path / "site"), sys.version_info)
    assert sorted(os.listdir(site)) == ["fake_here", "pure"]


def test_a_timeout_kills_the_stage_and_its_children(tmp_path):
    marker = tmp_path / "child_alive"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    t0 = time.monotonic()
    rc, _ = gpu_check.run_command([sys.executable, "-c", parent], 1, dict(os.environ))
    assert rc is None and time.monotonic() - t0 < 10
    time.sleep(4)
    assert not marker.exists(), "the stage's child outlived the stage's timeout"


def test_a_failing_stage_is_reported_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(check):
        raise RuntimeError("boom")

    def slow(check):
        check.run([sys.executable, "-c", "import time; time.sleep(30)"], 1)

    def fine(check):
        check.run([sys.executable, "-c", "print('hello')"], 30)
        return "ok", check.last.strip(), {"x": 1}
    monkeypatch.setattr(gpu_check, "STAGES", {"broken": broken, "slow": slow, "fine": fine})
    monkeypatch.setattr(gpu_check, "detect_gpu", lambda: None)
    args = type("Args", (), {"budget": 60, "dry_run": False})()
    check = gpu_check.Check(args)
    for name in ("broken", "slow", "fine"):
        gpu_check.run_stage(check, name)
    gpu_report.write(str(tmp_path), check.gpu, check.stages)
    report = json.loads((tmp_path / "report.json").read_text())["stages"]
    assert report["broken"]["status"] == "fail" and "boom" in report["broken"]["result"]
    assert report["slow"]["status"] == "timeout"
    assert report["fine"] == {**report["fine"], "status": "ok", "result": "hello", "data": {"x": 1}}
    assert "fine             ok" in (tmp_path / "report.txt").read_text()


def test_the_lines_only_a_gpu_run_prints(tmp_path):
    """Formatting that runs only on a GPU: exercised here, so a GPU run does not find it broken."""
    gpu = {"name": "NVIDIA H200", "arch": "90"}
    stages = {}
    for name, who, tokens_per_sec, loss in [("train_cuda_fp32", "cuda", 20e3, 10.9871),
                                            ("train_torch_fp32", "torch-cuda", 40e3, 10.9873)]:
        case = {"config": "gpt2", "who": who, "tokens_per_sec": tokens_per_sec, "flops_per_token": 8e8,
                "loss": loss, "gpu_peak_mb": 20480.0, "precision": "highest"}
        case.update(gpu_report.mfu(case, gpu, "highest"))
        stages[name] = {"status": "ok", "seconds": 30.0, "result": gpu_report.train_line(case), "data": case,
                        "output": ""}
    assert "MFU 23.9% of 67" in stages["train_cuda_fp32"]["result"]
    bench = {"matmul": [{"shape": [4096, 4096, 4096], "ratio_fp32": 0.8, "ratio_tf32": 0.6}],
             "attention": [{"shape": [8, 12, 1024, 64], "ratio": 0.55}]}
    line = gpu_report.bench_cuda_line(bench)
    assert "TF32 0.60x (target 0.7x)" in line and "0.55x SDPA (target 0.5x)" in line
    text = gpu_report.summary(gpu, stages)
    assert "cuda 20,000 vs torch 40,000 tokens/s = 0.50x (target 0.7x)" in text
    assert "loss 10.9871 vs 10.9873" in text
