"""Data parallel over MPI: 2 ranks equal 1 process, resume at another rank count, faults, bad starts.

The runs launch `mpirun --oversubscribe -np 2` (OpenMPI; as root it needs
OMPI_ALLOW_RUN_AS_ROOT, set in `launch`) and skip with the reason where mpirun
or mpi4py is missing (`make mpi` installs both). The first tests need neither.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyllm.checkpoint import load_model
from tinyllm.data import BatchLoader
from tinyllm.distributed import RankShard, SingleProcess, import_mpi
from tinyllm.errors import DistributedError
from tinyllm.nn import Parameter
from tinyllm.run import TrainConfig, build_trainer
from tinyllm.safetensors import load_safetensors
from tests.test_train import text_file  # noqa: F401 (the shared corpus fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "train.py")
# runs TRAIN's main, doing ACTION (sigint, sigkill, hang, raise) on RANK at the start of STEP
FAULTY = """
import os, signal, sys, time
from tinyllm.cli.train import main
from tinyllm.errors import TrainingError
from tinyllm.train import Trainer
action, step, rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
original = Trainer.train_step
def train_step(self):
    if self.step + 1 == step and self.dist.rank == rank:
        if action == "hang":
            time.sleep(600)
        if action == "raise":
            raise TrainingError("this rank gives up")
        os.kill(os.getpid(), signal.SIGINT if action == "sigint" else signal.SIGKILL)
    return original(self)
Trainer.train_step = train_step
sys.exit(main(sys.argv[4:]))
"""


def mpi_missing():
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (make mpi)"
    try:
        import_mpi()
    except DistributedError:
        return "mpi4py is not installed (make mpi)"
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    return None if "Open MPI" in version else f"these tests launch OpenMPI's mpirun, not {version[:40]!r}"


MPI_MISSING = mpi_missing()
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))


def launch(np_, args, script=TRAIN, timeout=120, env=None):
    """mpirun -np np_ python script args; returns (CompletedProcess, seconds)."""
    env = {**os.environ, **(env or {}), "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(np_), sys.executable,
               script, *args]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    return done, time.monotonic() - started


def settings(data, out, **overrides):
    return {"data": str(data), "out": str(out), "preset": "tiny", "tokenizer": "bytes", "max_steps": 5,
            "batch_size": 4, "eval_interval": 5, "eval_batches": 2, "warmup_steps": 2,
            "sample_tokens": 0, "backend": "c", **overrides}


def flags(data, out, **overrides):
    """The command-line flags of settings(); a True boolean is the bare flag."""
    return [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}")
            for k, v in settings(data, out, **overrides).items()]


def one_process(data, out, **overrides):
    """The same run in this process."""
    return build_trainer(TrainConfig(**settings(data, out, **overrides)))


@pytest.fixture
def faulty(tmp_path):
    """FAULTY as a script file."""
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    return script


def losses(out):
    return [r["loss"] for r in read_log(out)]


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def assert_ran(done):
    assert done.returncode == 0, done.stderr[-3000:]


# -- without MPI -----------------------------------------------------------------

def test_rank_shards_are_the_rows_of_one_global_batch():
    tokens = np.arange(1000) % 97
    whole = BatchLoader(tokens, 6, 8, seed=3)
    shards = [RankShard(BatchLoader(tokens, 6, 8, seed=3), r, 3) for r in range(3)]
    for _ in range(4):
        x, y = whole.next_batch()                                     # (6, 8)
        parts = [s.next_batch() for s in shards]                      # 3 x (2, 8)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    with pytest.raises(DistributedError, match="does not split over 4 ranks"):
        RankShard(whole, 0, 4)


def test_grad_hook_fires_once_per_leaf_with_its_final_gradient():
    w = Parameter(np.array([1.0, 2.0, 3.0]))
    seen = []
    w.grad_hook = lambda p: seen.append(p.grad.copy())
    ((w * w).sum() + (w * 3.0).sum()).backward()      # two uses of w: the hook sees their sum
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * w.data + 3.0)


def test_single_process_is_the_plain_loop():
    one = SingleProcess()
    assert one.is_main and one.world_size == 1 and one.mean([1.0, 2.0]) == 1.5
    assert one.main_first(lambda: 7) == 7 and one.any(False) is False


class FakeMPI:
    """Enough of mpi4py's MPI for one rank: collectives are recorded, and done at once."""
    IN_PLACE, SUM = "in place", "sum"
    params = None   # the model's, while a test watches its gradients

    class Request:
        @staticmethod
        def Testall(requests):
            return True

    class COMM_WORLD:
        started = []   # for each Iallreduce of a bucket: how many parameters had a gradient

        def Get_rank(self):
            return 0

        def Get_size(self):
            return 1

        def Ibcast(self, buffer, root):
            return "done"

        def Iallreduce(self, send, buffer, op):
            if FakeMPI.params:
                self.started.append(sum(p.grad is not None for p in FakeMPI.params))
            return "done"


def test_buckets_start_while_the_backward_still_runs(monkeypatch):
    from tinyllm import distributed
    from tinyllm.model import GPT, preset
    from tinyllm.optim import AdamW
    monkeypatch.setattr(distributed, "import_mpi", lambda: FakeMPI)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)   # restored after the test
    monkeypatch.setattr(distributed.signal, "signal", lambda *a: None)
    model = GPT(preset("tiny"))
    FakeMPI.params = model.parameters()
    dist = distributed.Distributed(FakeMPI.COMM_WORLD(), timeout=5, bucket_mb=0.002)
    dist.attach(model, AdamW(model.parameters()))
    x = np.random.default_rng(0).integers(0, 256, (2, 16))
    _, loss = model(x, x)
    FakeMPI.COMM_WORLD.started.clear()
    with dist.averaging_gradients(last=True):
        loss.backward()
    started = FakeMPI.COMM_WORLD.started
    assert len(started) == len(dist.buckets) > 2
    # the first bucket left when few gradients were done; each later one with more of them
    assert started[0] < len(FakeMPI.params) / 2 and started == sorted(started)
    FakeMPI.params = None


def test_missing_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(DistributedError, match="make mpi"):
        import_mpi()


# -- over MPI ----------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("grad_accum,zero", [(1, 0), (2, 0), (1, 1), (2, 1)])
def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(text_file, tmp_path, grad_accum, zero):
    done, _ = launch(2, flags(text_file, tmp_path / "two", grad_accum=grad_accum, zero=zero,
                              bucket_mb=0.01))                        # several buckets
    assert_ran(done)
    one_process(text_file, tmp_path / "one", batch_size=8, grad_accum=grad_accum).train()
    two, one = read_log(tmp_path / "two"), read_log(tmp_path / "one")
    # the same batches and arithmetic, but each rank's gradient is summed over its own rows
    # before the two halves are added: float32 sums in another order, ~1e-7 per step
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-6)
    np.testing.assert_allclose(two[-1]["val_loss"], one[-1]["val_loss"], rtol=1e-6)
    a, _ = load_safetensors(tmp_path / "two" / "ckpt.safetensors")
    b, _ = load_safetensors(tmp_path / "one" / "ckpt.safetensors")
    # measured: |difference| <= 1.2e-7 after 5 steps; relative to the entry it is large only
    # where a weight is near zero (AdamW's m / sqrt(v) passes the round-off on whole)
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


@needs_mpi
def test_with_dropout_each_rank_resumes_its_own_masks(text_file, tmp_path, faulty):
    common = dict(max_steps=6, eval_interval=3, dropout=0.1)
    assert_ran(launch(2, flags(text_file, tmp_path / "whole", **common))[0])
    assert_ran(launch(2, ["sigint", "3", "0", *flags(text_file, tmp_path / "cut", **common)],
                      faulty)[0])
    assert_ran(launch(2, flags(text_file, tmp_path / "cut", resume=True, **common))[0])
    np.testing.assert_allclose(losses(tmp_path / "cut"), losses(tmp_path / "whole"), rtol=1e-6)


EMULATED_CUDA = os.path.join(ROOT, "build", "cuda-emu", "libtinyllm_cuda.so")   # make cuda-emu


@needs_mpi
@pytest.mark.skipif(not os.path.exists(EMULATED_CUDA),
                    reason="the CUDA emulation is not built (make cuda-emu)")
def test_cuda_gradients_staged_through_host_buffers(text_file, tmp_path):
    """On the cuda backend (here its CPU emulation) 2 ranks still equal 1 process."""
    cuda = {"TINYLLM_CUDA_LIB": EMULATED_CUDA}
    run = dict(backend="cuda", max_steps=3, eval_interval=3, eval_batches=1, bucket_mb=0.01)
    assert_ran(launch(2, flags(text_file, tmp_path / "two", batch_size=2, **run), env=cuda)[0])
    assert_ran(launch(1, flags(text_file, tmp_path / "one", batch_size=4, **run), env=cuda)[0])
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-6)


@needs_mpi
def test_interrupted_two_rank_run_resumes_on_two_ranks_and_on_one(text_file, tmp_path, faulty):
    common = dict(max_steps=8, eval_interval=4, zero=1)
    assert_ran(launch(2, flags(text_file, tmp_path / "whole", **common))[0])
    # Ctrl-C on rank 1 alone in step 6: both ranks finish it, save and stop
    done, _ = launch(2, ["sigint", "6", "1", *flags(text_file, tmp_path / "cut", **common)], faulty)
    assert_ran(done)
    assert load_model(tmp_path / "cut" / "ckpt.safetensors")[2]["step"] == 6
    shutil.copytree(tmp_path / "cut", tmp_path / "cut1")
    assert_ran(launch(2, flags(text_file, tmp_path / "cut", resume=True, **common))[0])
    one_process(text_file, tmp_path / "cut1", resume=True, batch_size=8, **common).train()
    whole = losses(tmp_path / "whole")
    for run in ("cut", "cut1"):
        log = read_log(tmp_path / run)
        assert [r["step"] for r in log] == list(range(1, 9))
        np.testing.assert_allclose([r["loss"] for r in log], whole, rtol=1e-6, err_msg=run)


@needs_mpi
@pytest.mark.parametrize("fault,timeout,says", [
    ("sigkill", 20, "rank 1"),                                    # mpirun names the dead rank
    ("hang", 3, "rank 0 of 2 waited 3 s for the gradient allreduce"),   # our deadline
    ("raise", 20, "error (rank 1 of 2): this rank gives up")])          # MPI_Abort after it
def test_a_dead_hanging_or_failing_rank_ends_the_job_and_the_checkpoint_loads(
        text_file, tmp_path, faulty, fault, timeout, says):
    args = flags(text_file, tmp_path / "run", max_steps=8, eval_interval=2, mpi_timeout=timeout)
    done, seconds = launch(2, [fault, "4", "1", *args], faulty)
    assert done.returncode != 0 and seconds < 60
    assert says in done.stdout + done.stderr
    assert load_model(tmp_path / "run" / "ckpt.safetensors")[2]["step"] == 2


@needs_mpi
def test_ranks_started_with_different_flags_stop_before_training(text_file, tmp_path):
    out = tmp_path / "run"
    # MPMD: rank 0 runs the first command line, rank 1 the second
    second = [":", "-np", "1", sys.executable, TRAIN, *flags(text_file, out, batch_size=8)]
    done, _ = launch(1, [*flags(text_file, out, batch_size=4), *second])
    assert done.returncode != 0
    assert "rank 1 has batch_size=8 (rank 0: 4)" in done.stderr, done.stderr[-2000:]
    assert not (out / "log.jsonl").exists()
