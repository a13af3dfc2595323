"""ZeRO stage 1 (`--zero 1`): AdamW's moments split across the ranks, 1/N of them on each.

Each gradient bucket (distributed.py) is a flat buffer padded to N equal
slices; rank r owns slice r of every bucket. Instead of an allreduce, a
bucket is reduce-scattered (Ireduce_scatter_block, still started while the
backward runs), so rank r receives the summed gradient of its slice alone;
it clips with the global norm (its slices' sum of squares, summed over the
ranks), runs the backend's adamw_update on the parameter pieces inside its
slice, with its slice of m and v, then the buckets are all-gathered so every
rank holds every updated parameter. The bytes sent equal an allreduce's; the
optimizer memory per rank falls to 1/N. The update formula is AdamW's own
(backends/numpy_kernels.py), applied to pieces, so the arithmetic per element
is the same as one process's.

For a checkpoint the slices are gathered to rank 0 (gather_state), which saves
the full moments under the usual names, so a run resumes at any rank count,
with or without ZeRO. Host arrays only: the CUDA backend uses --zero 0.
Not here: the buckets and the waiting (distributed.py). Read run.py next, which builds both.
"""
import math

import numpy as np

from tinyllm.backends import get_backend
from tinyllm.errors import DistributedError
from tinyllm.optim import AdamW
from tinyllm.tensor import is_device_array


class ShardedAdamW:
    """The AdamW of `optimizer` (its groups, lr, betas, eps, weight decay), sharded over dist's ranks.

    Also the reducer of distributed.Distributed: start/finish a bucket's
    reduce-scatter, clip_grad_norm, gather_state.
    """

    def __init__(self, optimizer, dist):
        self.dist, self.param_groups = dist, optimizer.param_groups
        self.step_count = optimizer.step_count
        self._params = [p for g in self.param_groups for p in g["params"]]
        if any(is_device_array(p.data) for p in self._params):
            raise DistributedError("--zero 1 runs on the numpy and c backends; "
                                   "on the cuda backend use --zero 0")
        group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        self.slices = []   # per bucket: (grad slice, m, v, pieces: (param, group, p_lo, p_hi, s_lo))
        for bucket in dist.buckets:
            size = len(bucket.buffer) // dist.world_size
            lo, hi = dist.rank * size, (dist.rank + 1) * size
            pieces = []
            for p, start, end in zip(bucket.params, bucket.offsets, bucket.offsets[1:]):
                a, b = max(start, lo), min(end, hi)
                if a < b:
                    pieces.append((p, group_of[id(p)], a - start, b - start, a - lo))
            self.slices.append((np.zeros(size, np.float32), np.zeros(size, np.float32),
                                np.zeros(size, np.float32), pieces))
        self._gathered = None

    # -- the reducer: gradients ----------------------------------------------
    def start(self, bucket):
        grad = self.slices[self.dist.buckets.index(bucket)][0]
        return self.dist.comm.Ireduce_scatter_block(bucket.buffer, grad, op=self.dist.MPI.SUM)

    def finish(self, bucket):
        self.slices[self.dist.buckets.index(bucket)][0][...] *= np.float32(1.0 / self.dist.world_size)

    def clip_grad_norm(self, params, max_norm):
        """Scale the averaged gradient slices so their global L2 norm is at most max_norm."""
        mine = sum(float(np.sum(np.square(g, dtype=np.float64))) for g, _, _, _ in self.slices)
        norm = math.sqrt(self.dist.allreduce([mine], "the gradient norm")[0])
        if math.isfinite(norm) and norm > max_norm:
            scale = np.float32(max_norm / (norm + 1e-6))
            for grad, _, _, _ in self.slices:
                grad *= scale
        return norm

    # -- the optimizer ---------------------------------------------------------
    def step(self):
        """AdamW on this rank's slices, then every bucket all-gathered into the parameters."""
        self.step_count += 1
        backend = get_backend()
        for grad, m, v, pieces in self.slices:
            for p, group, p_lo, p_hi, s_lo in pieces:
                s = slice(s_lo, s_lo + p_hi - p_lo)
                beta1, beta2 = group["betas"]
                backend.adamw_update(p.data.reshape(-1)[p_lo:p_hi], grad[s], m[s], v[s],
                                     group["lr"], beta1, beta2, group["eps"],
                                     group["weight_decay"], self.step_count)
        requests = []
        for bucket, (grad, _, _, pieces) in zip(self.dist.buckets, self.slices):
            mine = np.zeros_like(grad)
            for p, _, p_lo, p_hi, s_lo in pieces:
                mine[s_lo:s_lo + p_hi - p_lo] = p.data.reshape(-1)[p_lo:p_hi]
            requests.append(self.dist.comm.Iallgather(mine, bucket.buffer))
        self.dist.wait(requests, "the parameter all-gather")
        for bucket in self.dist.buckets:
            bucket.unpack("data")

    # AdamW's own: they touch only _params and param_groups
    zero_grad, set_lr = AdamW.zero_grad, AdamW.set_lr

    # -- checkpoints: the full moments, as AdamW.state_dict has them -------------
    def gather_state(self):
        """Collective: gather every slice of m and v to rank 0 (for its state_dict)."""
        gathered = {"exp_avg": {}, "exp_avg_sq": {}}
        for bucket, (_, m, v, _) in zip(self.dist.buckets, self.slices):
            for key, moment in (("exp_avg", m), ("exp_avg_sq", v)):
                full = np.zeros(len(bucket.buffer), np.float32) if self.dist.is_main else None
                self.dist.wait([self.dist.comm.Igather(moment, full, root=0)], "the optimizer state")
                if self.dist.is_main:
                    for p, start, end in zip(bucket.params, bucket.offsets, bucket.offsets[1:]):
                        gathered[key][id(p)] = full[start:end].reshape(p.data.shape)
        self._gathered = gathered if self.dist.is_main else None

    def state_dict(self):
        """On rank 0 after gather_state(): AdamW.state_dict()'s layout, the whole model's moments."""
        if self._gathered is None:
            raise DistributedError("ShardedAdamW.state_dict() needs gather_state() on every rank "
                                   "first (Distributed.arrive_to_save does it)")
        state, self._gathered = self._gathered, None
        return {"step": self.step_count,
                "exp_avg": [state["exp_avg"][id(p)] for p in self._params],
                "exp_avg_sq": [state["exp_avg_sq"][id(p)] for p in self._params]}

    def load_state_dict(self, state):
        """Keep this rank's slices of a full AdamW.state_dict() (saved by any number of ranks)."""
        index = {id(p): i for i, p in enumerate(self._params)}
        for key in ("exp_avg", "exp_avg_sq"):
            for i, (p, a) in enumerate(zip(self._params, state[key])):
                if np.shape(a) != p.data.shape:
                    raise ValueError(f"optimizer state {key}[{i}] has shape {np.shape(a)} but "
                                     f"parameter {i} has shape {p.data.shape}; the model differs")
        for _, m, v, pieces in self.slices:
            for p, _, p_lo, p_hi, s_lo in pieces:
                s = slice(s_lo, s_lo + p_hi - p_lo)
                m[s] = np.asarray(state["exp_avg"][index[id(p)]]).reshape(-1)[p_lo:p_hi]
                v[s] = np.asarray(state["exp_avg_sq"][index[id(p)]]).reshape(-1)[p_lo:p_hi]
        self.step_count = int(state["step"])
