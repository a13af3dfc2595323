"""The GPU check: one script that builds, tests and times the CUDA backend on a GPU machine.

  make gpu-check                                 # on a GPU machine: within its 8-minute --budget
  python tools/gpu_check.py --dry-run            # anywhere (CI): the CPU emulation, no GPU stages
  python tools/gpu_check.py --only tests --budget 200   # a second try at some stages

Stages, in order; each runs its commands as subprocesses under its own time limit
(cut to what is left of --budget), and a failing stage does not stop the later ones:
  env          the GPU (nvidia-smi: name, compute capability), Python, numpy, torch, nvcc
  wheels       cffi and pycparser from wheels/ when `import cffi` fails (the GPU machine has
               no network; `make gpu-wheels` fetches them here)
  build        the C library, and the CUDA library for this GPU only (make cuda CUDA_ARCHS=90)
  tests        tests/test_cuda*.py on the device
  bench_cuda   examples/bench_cuda.py: matmul against cuBLAS, attention against SDPA
  train_*      gpt2-preset training steps (examples/benchmark.py --what train) on
               --backend cuda and on PyTorch eager on the GPU, same weights and batch,
               matmuls in float32, then in TF32
env, wheels and build always run (they are quick the second time); --only picks the rest.
The report, report.json (every number and every stage's output) and report.txt (the
summary table, then the outputs), goes to $OUT when it is set, else out/gpu_check/; it is
rewritten after every stage, so a run cut short keeps what it finished.

Without a GPU (--dry-run, or when nvidia-smi finds none) the same stages run on the CPU
emulation of CUDA as far as it goes: the build makes `make cuda-emu`, tests runs three fast
CUDA tests on it, train_cuda_fp32 trains the tiny preset on it (the JSON and MFU
plumbing), and the stages that need hardware print "skipped: no GPU".

Not a benchmark of its own: the numbers come from examples/bench_cuda.py and
examples/benchmark.py. Read tools/gpu_report.py next (peaks, MFU, the summary).
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gpu_report  # noqa: E402  (after the path fix)

EMU_LIB = "build/cuda-emu/libtinyllm_cuda.so"
WORK = os.path.join(ROOT, "build", "gpu_check")      # the stages' own JSON files; ignored by git
DRY_TESTS = ["tests/test_cuda.py", "-k", "round_trips or bad_arguments or training_steps"]
NO_GPU = "no GPU"                                 # printed as "skipped: no GPU"


class Check:
    """One run of the check: the GPU found (or None), the environment the stages share, the deadline."""

    def __init__(self, args):
        self.stages = {}
        self.deadline = time.monotonic() + args.budget
        self.gpu = None if args.dry_run else detect_gpu()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env.pop("TINYLLM_CUDA_LIB", None)
        if self.gpu is None:                             # the kernels run on the CPU emulation
            self.env["TINYLLM_CUDA_LIB"] = os.path.join(ROOT, EMU_LIB)
        self.log, self.last = [], ""                     # the current stage's output; the last command's

    def left(self):
        return self.deadline - time.monotonic()

    def run(self, cmd, limit):
        """True when cmd exits 0 within limit seconds; its output is streamed and kept in self.log."""
        limit = min(limit, self.left())
        self.log.append(f"$ {' '.join(cmd)}   (limit {limit:.0f} s)\n")
        print(f"  $ {' '.join(cmd)[:150]}", flush=True)
        rc, text = run_command(cmd, limit, self.env)
        self.log.append(text)
        self.last = text
        if rc is None:
            self.log.append(f"[killed after {limit:.0f} s]\n")
            raise StageTimeout(f"timed out after {limit:.0f} s: {' '.join(cmd[:4])}")
        return rc == 0

    def python(self, args, limit):
        return self.run([sys.executable, *args], limit)


class StageTimeout(Exception):
    pass


def run_command(cmd, limit, env):
    """(exit status, or None when killed at the limit; the output): cmd in its own process group,
    so a timeout also ends the processes it started (benchmark.py runs each case in a child)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    lines = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            print(f"  | {line}", end="", flush=True)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(limit, 0))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:   # it ended between the timeout and the kill
            pass
        proc.wait()
        rc = None
    reader.join(timeout=5)
    return rc, "".join(lines)


def find_nvcc():
    """nvcc on the PATH, else in a CUDA toolkit's usual folder (a login PATH may lack it), or None."""
    return shutil.which("nvcc") or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))), None)


def detect_gpu():
    """{"name", "arch" ("90"), "memory_mib", "driver"} of GPU 0, or None without one: from nvidia-smi,
    else from torch (a container may lack nvidia-smi, or a driver its compute_cap field)."""
    queries = [["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                "--format=csv,noheader,nounits"],
               [sys.executable, "-c", "import torch; p = torch.cuda.get_device_properties(0); "
                "print(f'{p.name}, {p.major}.{p.minor}, {p.total_memory >> 20}, unknown (read by torch)')"]]
    for cmd in queries:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        gpu = parse_gpu(out.stdout) if out.returncode == 0 else None
        if gpu:
            return gpu
    return None


def parse_gpu(csv_text):
    """The first line of nvidia-smi's CSV ("NVIDIA H200, 9.0, 143771, 580.159") as a dict, or None."""
    fields = [f.strip() for f in (csv_text.strip().splitlines() or [""])[0].split(",")]
    if len(fields) < 4 or not re.fullmatch(r"\d+\.\d+", fields[1]):
        return None
    return {"name": fields[0], "arch": fields[1].replace(".", ""), "memory_mib": fields[2],
            "driver": fields[3]}


# -- the stages: each returns (status, one-line result, data) or raises StageTimeout -----------
def stage_env(check):
    versions = ("import sys, importlib.util as u, numpy; "
                "print('python', sys.version.split()[0], '| numpy', numpy.__version__); "
                "t = u.find_spec('torch') and __import__('torch'); "
                "print('torch', t.__version__, '| sees a GPU:', t.cuda.is_available()) if t "
                "else print('no torch')")
    python_ok = check.python(["-c", versions], 60)
    found = " ".join(line.strip() for line in check.last.splitlines()[-2:])
    if find_nvcc():
        check.run([find_nvcc(), "--version"], 30)
        found += " | nvcc " + (re.findall(r"release ([\d.]+)", check.last) or ["?"])[0]
    gpu = check.gpu
    where = f"{gpu['name']} (sm_{gpu['arch']}), driver {gpu['driver']}" if gpu else "no GPU (dry run)"
    return ("ok" if python_ok else "fail"), f"{where}; {found}", {"gpu": gpu}


def stage_wheels(check):
    probe = ["-c", "import cffi; print('cffi', cffi.__version__)"]
    if check.python(probe, 60):
        return "ok", "cffi already installed", {}
    wheels = os.path.join(ROOT, "wheels")
    if not glob.glob(os.path.join(wheels, "cffi-*.whl")):
        return "fail", "cffi is missing and wheels/ holds no cffi wheel: run `make gpu-wheels` first", {}
    pip = ["-m", "pip", "install", "--no-index", "--find-links", wheels, "--disable-pip-version-check",
           "cffi"]
    if check.python(pip, 120) and check.python(probe, 60):
        return "ok", "cffi installed from wheels/ with pip", {}
    site = unpack_wheels(wheels, os.path.join(WORK, "site"), sys.version_info)
    check.env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, check.env.get("PYTHONPATH")]))
    if check.python(probe, 60):
        return "ok", f"cffi unpacked from wheels/ into {os.path.relpath(site, ROOT)} (PYTHONPATH)", {}
    return "fail", "cffi could not be installed from wheels/ (see the output)", {}


def unpack_wheels(wheels, site, version):
    """Unzip the wheels in `wheels` that fit this Python into `site` (what pip would do, without pip)."""
    tag = f"cp{version[0]}{version[1]}"
    for path in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
        name = os.path.basename(path)
        if f"-{tag}-" in name or name.endswith("-py3-none-any.whl"):
            with zipfile.ZipFile(path) as z:
                z.extractall(site)
    return site


def stage_build(check):
    jobs = f"-j{os.cpu_count() or 1}"
    c_ok = check.run(["make", jobs, "lib", f"PYTHON={sys.executable}"], 180)
    if check.gpu:
        arch = check.gpu["arch"]
        target, what = ["cuda", f"CUDA_ARCHS={arch}", f"NVCC={find_nvcc() or 'nvcc'}"], f"CUDA for sm_{arch}"
    else:
        target, what = ["cuda-emu"], "the CUDA emulation"
    cuda_ok = check.run(["make", jobs, *target], 240)
    status = "ok" if c_ok and cuda_ok else "fail"
    return status, f"C library {'built' if c_ok else 'FAILED'}; {what} {'built' if cuda_ok else 'FAILED'}", {}


def stage_tests(check):
    probe = ("from tinyllm.backends import get_backend; c = get_backend('cuda'); "
             "print('cuda backend:', c.device_name(), '(emulated)' if c.EMULATED else '(device)')")
    device_ok = check.python(["-c", probe], 60)
    files = DRY_TESTS if check.gpu is None else sorted(glob.glob(os.path.join("tests", "test_cuda*.py")))
    passed = check.python(["-m", "pytest", "-q", "-p", "no:cacheprovider", *files], 240)
    counts = gpu_report.pytest_counts(check.last)
    line = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no pytest summary"
    if not device_ok:
        return "fail", f"the cuda backend does not open (see the output); {line}", {"counts": counts}
    ok = passed and counts.get("passed", 0) > 0
    where = "" if check.gpu else " (emulation, 3 fast tests)"
    return ("ok" if ok else "fail"), line + where, {"counts": counts}


def stage_bench_cuda(check):
    if check.gpu is None:
        return "skipped", NO_GPU, {}
    path = os.path.join(WORK, "bench_cuda.json")
    if os.path.exists(path):
        os.remove(path)
    check.python(["examples/bench_cuda.py", "--json", path], 150)
    if not os.path.exists(path):
        return "fail", "bench_cuda.py wrote no rows (see the output)", {}
    data = gpu_report.read_json(path)
    return "ok", gpu_report.bench_cuda_line(data), data


def train_stage(who, precision):
    """The stage that times gpt2 training steps of `who` (cuda or torch-cuda) at one matmul precision."""
    def stage(check):
        if check.gpu is None and (who != "cuda" or precision != "highest"):
            return "skipped", NO_GPU, {}
        config, steps, warmup = ("gpt2", 5, 2) if check.gpu else ("tiny", 1, 0)
        path = os.path.join(WORK, f"train_{who}_{precision}.json")
        if os.path.exists(path):
            os.remove(path)
        check.python(["examples/benchmark.py", "--what", "train", "--configs", config, "--who", who,
                      "--batch-size", "8", "--steps", str(steps), "--warmup", str(warmup),
                      "--matmul-precision", precision, "--json", path], 150)
        if not os.path.exists(path):
            return "fail", "benchmark.py wrote no result (see the output)", {}
        case = gpu_report.read_json(path)["cases"][0]
        if "error" in case:
            return "fail", case["error"], case
        case.update(gpu_report.mfu(case, check.gpu, precision), precision=precision)
        return "ok", gpu_report.train_line(case), case
    return stage


STAGES = {"env": stage_env, "wheels": stage_wheels, "build": stage_build, "tests": stage_tests,
          "bench_cuda": stage_bench_cuda,
          **{f"train_{name}_{short}": train_stage(who, precision)
             for short, precision in (("fp32", "highest"), ("tf32", "tf32"))
             for name, who in (("cuda", "cuda"), ("torch", "torch-cuda"))}}
SETUP = ["env", "wheels", "build"]


def run_stage(check, name):
    """Run one stage, catching whatever it raises, and record its status, time, result and output."""
    print(f"\n=== {name} ===", flush=True)
    check.log, t0 = [], time.monotonic()
    if check.left() < 5:
        status, line, data = "skipped", "the --budget is spent", {}
    else:
        try:
            status, line, data = STAGES[name](check)
        except StageTimeout as e:
            status, line, data = "timeout", str(e), {}
        except Exception as e:   # a broken stage is reported, and the next one still runs
            status, line, data = "fail", f"{type(e).__name__}: {e}", {}
            check.log.append(traceback.format_exc())
    check.stages[name] = {"status": status, "seconds": round(time.monotonic() - t0, 1),
                          "result": line, "data": data, "output": "".join(check.log)}
    print(f"--- {name}: {status}: {line}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="use the CPU emulation even if there is a GPU")
    p.add_argument("--only", nargs="+", choices=[s for s in STAGES if s not in SETUP],
                   help="run only these stages after env, wheels and build (default: all)")
    p.add_argument("--budget", type=float, default=480,
                   help="seconds for the whole check; stage limits are cut to fit (default: %(default)s)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "out", "gpu_check"),
                   help="folder of report.json and report.txt (default: $OUT, else out/gpu_check)")
    args = p.parse_args()
    os.makedirs(WORK, exist_ok=True)
    check = Check(args)
    print(f"GPU check: {check.gpu['name'] if check.gpu else 'no GPU, dry run on the CUDA emulation'}; "
          f"budget {args.budget:.0f} s; report in {args.out}", flush=True)
    for name in SETUP + [s for s in STAGES if s not in SETUP and (not args.only or s in args.only)]:
        run_stage(check, name)
        gpu_report.write(args.out, check.gpu, check.stages)
    print("\n" + gpu_report.summary(check.gpu, check.stages), flush=True)
    print(f"\nreport: {os.path.join(args.out, 'report.txt')} and report.json", flush=True)
    failed = [n for n, s in check.stages.items() if s["status"] in ("fail", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
