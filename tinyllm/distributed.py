"""Data-parallel training over MPI: one run on N processes (or N machines), as if on one.

    mpirun -np 2 python examples/train.py --preset tiny      # the same flags as one process

`connect()` returns the process's place in the run: `SingleProcess` when it
was not started by mpirun (every method a no-op twin), else `Distributed`
over MPI.COMM_WORLD (mpi4py, imported only then). The Trainer calls the same
methods either way, so its loop has no `if distributed` branches:
  averaging_gradients(last)  around loss.backward(): on the last micro-step the
                             gradients are averaged across ranks in flat buckets,
                             each started (Iallreduce) as soon as the backward has
                             finished all of its gradients (Tensor.grad_hook), so
                             the communication overlaps the rest of the backward
  clip_grad_norm             the global norm (with ZeRO-1 the gradients are sharded)
  any(flag)                  a Ctrl-C on one rank stops every rank at the same step
  mean(values)               the mean over every rank's values (the loss, the val loss)
  arrive_to_save()           every rank arrives, rank 0 alone writes the checkpoint
  own_dropout_stream(model)  each rank its own dropout masks, resumed exactly
run.py uses the rest: main_first (rank 0 tokenizes and caches the data before
the others read it), check_same_run (config, tokenizer and code alike on every
rank, else an error naming the rank), attach (rank 0's weights broadcast, the
buckets, ZeRO-1) and shard (each rank's disjoint rows of each global batch).

Every collective waits with a deadline (--mpi-timeout): a rank that died or
hangs stops the others with an error instead of a hang, and an error on one
rank aborts them all (MPI_Abort) after it is printed. mpirun ends the job on
Ctrl-C but forwards SIGUSR1, which each rank turns into its Ctrl-C (finish the
step, save, stop; any() keeps the ranks on the same step). The CUDA backend's
gradients are staged through host buffers (the tested path; no CUDA-aware MPI).

Not here: the sharded optimizer (zero.py) or the loop (train.py). Read zero.py next.
"""
import contextlib
import hashlib
import json
import os
import pathlib
import signal
import sys
import time
import traceback

import numpy as np

from tinyllm.errors import DistributedError
from tinyllm.optim import clip_grad_norm
from tinyllm.tensor import is_device_array, like, to_numpy
from tinyllm.zero import ShardedAdamW

# the launchers' variables: OpenMPI, MPICH / Intel MPI, PMIx
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")
INSTALL_HINT = ("install OpenMPI and mpi4py with `make mpi` (apt-get install openmpi-bin "
                "libopenmpi-dev, then pip install mpi4py)")


def import_mpi():
    """mpi4py's MPI module, or a DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"this process was started by mpirun but mpi4py is missing ({e}); "
                               f"{INSTALL_HINT}") from e
    return MPI


def launched_ranks():
    """The number of ranks mpirun started (1 when run without it)."""
    return max([int(os.environ[v]) for v in SIZE_VARIABLES if v in os.environ] or [1])


def launched_rank():
    """This process's rank as mpirun numbered it (0 when run without it), before MPI starts."""
    return int(next((os.environ[v] for v in RANK_VARIABLES if v in os.environ), 0))


def rank_label():
    """' (rank r of N)' in an MPI run, '' otherwise: for error messages."""
    rank = next((os.environ[v] for v in RANK_VARIABLES if v in os.environ), None)
    return f" (rank {rank} of {launched_ranks()})" if launched_ranks() > 1 else ""


def abort_all(code):
    """After this rank printed its error: in an MPI run stop every rank now (they would wait)."""
    if launched_ranks() > 1 and "mpi4py.MPI" in sys.modules:
        sys.stderr.flush()
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)


def connect(timeout=300.0, bucket_mb=25.0):
    """SingleProcess() outside mpirun (or with -np 1), else Distributed over COMM_WORLD."""
    if launched_ranks() == 1:
        return SingleProcess()
    return Distributed(import_mpi().COMM_WORLD, timeout, bucket_mb)


def code_version():
    """A hash of tinyllm's Python sources: every rank must run the same code."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class SingleProcess:
    """One process: every method is the plain single-process behaviour."""
    rank, world_size, is_main = 0, 1, True
    wait_seconds = 0.0   # seconds spent waiting on the other ranks (the benchmark's)

    def check_same_run(self, described):
        pass

    def attach(self, model, optimizer, zero=0):
        """The optimizer the Trainer should use (with zero=1 on N ranks, the sharded one)."""
        return optimizer

    def shard(self, loader):
        return loader

    def main_first(self, work):
        return work()

    @contextlib.contextmanager
    def averaging_gradients(self, last):
        yield

    def clip_grad_norm(self, params, max_norm):
        return clip_grad_norm(params, max_norm)

    def any(self, flag):
        return flag

    def mean(self, values):
        return float(np.mean(values))

    def arrive_to_save(self):
        return True

    def own_dropout_stream(self, model):
        pass


class RankShard:
    """Rank r's rows [r B, (r+1) B) of each global batch (ranks x B rows) of a shared sampler.

    Every rank draws the same global batch from the same seeded loader and keeps
    its own rows, so N ranks x batch B see exactly the batches of 1 process x N B,
    and the sampler state (the same on every rank) resumes at any rank count.
    """

    def __init__(self, loader, rank, world_size):
        if loader.batch_size % world_size:
            raise DistributedError(f"a global batch of {loader.batch_size} rows does not split "
                                   f"over {world_size} ranks")
        self.loader, self.batch_size = loader, loader.batch_size // world_size
        self.rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)

    def next_batch(self):
        x, y = self.loader.next_batch()                          # (N B, T) each
        return np.ascontiguousarray(x[self.rows]), np.ascontiguousarray(y[self.rows])  # (B, T)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


class Bucket:
    """Parameters whose gradients travel in one flat float32 buffer (padded to split in N)."""

    def __init__(self, params, world_size):
        self.params = params
        self.offsets = np.cumsum([0] + [p.data.size for p in params])
        size = int(self.offsets[-1])
        self.buffer = np.zeros(-(-size // world_size) * world_size, np.float32)
        self.ready, self.request = set(), None

    def pack(self, arrays):
        for a, start, end in zip(arrays, self.offsets, self.offsets[1:]):
            self.buffer[start:end] = to_numpy(a).reshape(-1)

    def unpack(self, attribute, scale=1.0):
        """Set p.<attribute> (data or grad) of each parameter from the buffer, times scale."""
        for p, start, end in zip(self.params, self.offsets, self.offsets[1:]):
            values = self.buffer[start:end].reshape(p.data.shape) * np.float32(scale)
            current = getattr(p, attribute)
            if current is None or is_device_array(current):
                setattr(p, attribute, like(p.data, values))
            else:
                current[...] = values


def make_buckets(params, bucket_mb, world_size):
    """Buckets of about bucket_mb, in the reverse of the parameters' order (the backward's)."""
    buckets, current, size = [], [], 0
    for p in reversed(params):
        current.append(p)
        size += p.data.size * 4
        if size >= bucket_mb * 2 ** 20:
            buckets.append(Bucket(current, world_size))
            current, size = [], 0
    if current:
        buckets.append(Bucket(current, world_size))
    return buckets


class Averaging:
    """Plain data parallelism: each bucket allreduced, then every rank holds the mean gradient."""

    def __init__(self, dist):
        self.dist = dist

    def start(self, bucket):
        MPI = self.dist.MPI
        return self.dist.comm.Iallreduce(MPI.IN_PLACE, bucket.buffer, op=MPI.SUM)

    def finish(self, bucket):
        bucket.unpack("grad", scale=1.0 / self.dist.world_size)

    def clip_grad_norm(self, params, max_norm):
        return clip_grad_norm(params, max_norm)   # the gradients are the same on every rank

    def gather_state(self):
        pass   # every rank holds all of AdamW's state


class Distributed(SingleProcess):
    """This rank of an MPI job: the collectives the Trainer and run.py need, each with a deadline."""

    def __init__(self, comm, timeout, bucket_mb):
        self.MPI = import_mpi()
        self.comm, self.timeout, self.bucket_mb = comm, timeout, bucket_mb
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        self.is_main = self.rank == 0
        self.buckets, self.reducer, self.overlap, self.syncing = [], None, True, False
        self.wait_seconds = 0.0
        sys.excepthook = self._abort_on_uncaught
        # mpirun ends the job on Ctrl-C but forwards SIGUSR1: that one is every rank's Ctrl-C
        signal.signal(signal.SIGUSR1, lambda *_: signal.raise_signal(signal.SIGINT))

    @property
    def label(self):
        return f"rank {self.rank} of {self.world_size}"

    # -- waiting with a deadline ---------------------------------------------
    def wait(self, requests, what, timeout="default"):
        """Wait for MPI requests; after the timeout raise an error naming this rank and the step."""
        timeout = self.timeout if timeout == "default" else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, started = 1e-5, time.perf_counter()
        while not self.MPI.Request.Testall(requests):
            if deadline is not None and time.monotonic() > deadline:
                raise DistributedError(
                    f"{self.label} waited {timeout:g} s for {what} and the other ranks did not "
                    f"arrive: one died, hangs or stopped with an error (its message names it). "
                    f"Stopping instead of hanging; the last checkpoint is intact (--resume). "
                    f"Raise --mpi-timeout if a step is simply that slow")
            time.sleep(delay)
            delay = min(2 * delay, 1e-3)
        self.wait_seconds += time.perf_counter() - started

    def barrier(self, what, timeout="default"):
        self.wait([self.comm.Ibarrier()], what, timeout)

    def allreduce(self, array, what):
        """The sum over ranks of a small NumPy array."""
        array = np.array(array)
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)], what)
        return array

    def allgather_bytes(self, data, what):
        """Every rank's bytes, in rank order."""
        lengths = np.zeros(self.world_size, np.int64)
        self.wait([self.comm.Iallgather(np.array([len(data)], np.int64), lengths)], what)
        padded = np.zeros((self.world_size, int(lengths.max())), np.uint8)
        mine = np.zeros(padded.shape[1], np.uint8)
        mine[:len(data)] = np.frombuffer(data, np.uint8)
        self.wait([self.comm.Iallgather(mine, padded)], what)
        return [bytes(row[:n]) for row, n in zip(padded, lengths)]

    # -- before training -------------------------------------------------------
    def check_same_run(self, described):
        """Raise on every rank if any rank's description (config, tokenizer...) differs from rank 0's."""
        mine = {**described, "code_version": code_version()}
        everyone = [json.loads(b) for b in self.allgather_bytes(
            json.dumps(mine, sort_keys=True, default=str).encode(), "the run's description")]
        differences = []
        for rank, theirs in enumerate(everyone[1:], start=1):
            fields = [f"{k}={theirs.get(k)!r} (rank 0: {everyone[0].get(k)!r})"
                      for k in sorted(set(theirs) | set(everyone[0])) if theirs.get(k) != everyone[0].get(k)]
            if fields:
                differences.append(f"rank {rank} has " + ", ".join(fields))
        if differences:
            raise DistributedError("the ranks were not started with the same run: "
                                   + "; ".join(differences) + ". Start every rank with the same "
                                   "flags, data and tinyllm code")

    def main_first(self, work):
        """work() on rank 0, then on the others (which then find its cached files)."""
        if self.is_main:
            result = work()
        self.barrier("rank 0 to prepare the data", timeout=None)   # tokenizing may take hours
        if not self.is_main:
            result = work()
        return result

    def attach(self, model, optimizer, zero=0):
        """Broadcast rank 0's weights (every parameter, trained or frozen), bucket the trained
        ones' gradients and hook them; with zero=1 shard AdamW."""
        for bucket in make_buckets(list(model.parameters()), self.bucket_mb, 1):
            bucket.pack([p.data for p in bucket.params])
            self.wait([self.comm.Ibcast(bucket.buffer, root=0)], "rank 0's initial weights")
            bucket.unpack("data")
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.buckets = make_buckets(params, self.bucket_mb, self.world_size)
        for p in params:
            p.grad_hook = self._on_gradient_ready
        self.bucket_of = {id(p): b for b in self.buckets for p in b.params}
        if zero:
            optimizer = self.reducer = ShardedAdamW(optimizer, self)
        else:
            self.reducer = Averaging(self)
        return optimizer

    def shard(self, loader):
        return RankShard(loader, self.rank, self.world_size)

    def own_dropout_stream(self, model):
        """Rank r draws its dropout masks from rank 0's generator jumped r times (PCG64.jumped).
        A checkpoint holds rank 0's state; jumping it again after a resume puts every rank
        back on its own stream where it was, since jumps commute with draws."""
        model.rng.bit_generator.state = model.rng.bit_generator.jumped(self.rank).state

    # -- the gradients, while the backward runs --------------------------------
    @contextlib.contextmanager
    def averaging_gradients(self, last):
        """Around loss.backward(): on the last micro-step, average the gradients over the ranks."""
        self.syncing = last
        for bucket in self.buckets:
            bucket.ready.clear()
        try:
            yield
        finally:
            self.syncing = False
        if last:
            for bucket in self.buckets:   # buckets with an unused parameter start now
                if bucket.request is None:
                    self._start(bucket)
            self.wait([b.request for b in self.buckets], "the gradient allreduce")
            for bucket in self.buckets:
                bucket.request = None
                self.reducer.finish(bucket)

    def _on_gradient_ready(self, param):
        """Tensor.grad_hook: param.grad is final for this backward."""
        if not (self.syncing and self.overlap):
            return
        bucket = self.bucket_of[id(param)]
        bucket.ready.add(id(param))
        if len(bucket.ready) == len(bucket.params):
            self._start(bucket)
        # OpenMPI moves a non-blocking collective on only inside MPI calls: give it a turn
        self.MPI.Request.Testall([b.request for b in self.buckets if b.request is not None])

    def _start(self, bucket):
        bucket.pack([p.grad if p.grad is not None else np.zeros(p.data.shape, np.float32)
                     for p in bucket.params])
        bucket.request = self.reducer.start(bucket)

    def clip_grad_norm(self, params, max_norm):
        return self.reducer.clip_grad_norm(params, max_norm)

    # -- the rest of the loop --------------------------------------------------
    def any(self, flag):
        return bool(self.allreduce([int(bool(flag))], "the stop flag")[0])

    def mean(self, values):
        total, count = self.allreduce([float(np.sum(values)), len(values)], "the mean loss")
        return float(total / count)

    def arrive_to_save(self):
        """Every rank arrives (ZeRO's moments are gathered); True on rank 0, which then writes."""
        self.barrier("every rank to reach the checkpoint")
        self.reducer.gather_state()
        return self.is_main

    def _abort_on_uncaught(self, kind, value, tb):
        print(f"{self.label}: uncaught error:", file=sys.stderr)
        traceback.print_exception(kind, value, tb)
        abort_all(1)
