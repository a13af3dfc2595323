"""The optimizer side of training: AdamW, the learning-rate schedule, gradient clipping.

AdamW keeps the two moment estimates (m, v) per parameter and calls the active
backend's `adamw_update` kernel to apply one step, so the same optimizer runs
on NumPy, C or CUDA; the update formula itself lives in
backends/numpy_kernels.py and nowhere else. `param_groups` splits a model's
parameters into a weight-decayed and a non-decayed group, `cosine_lr` is the
warmup + cosine schedule, and `clip_grad_norm` rescales gradients by their
global L2 norm.

This is not a general optimizer library: no closures, no sparse gradients, no
other algorithms. Parameters are duck-typed: anything with `.data` and `.grad`
arrays (tensor.Tensor, nn.Parameter; NumPy, or DeviceArrays on the CUDA
backend). Read model.py next, the GPT these optimize.
"""
import math

import numpy as np

from tinyllm.backends import get_backend
from tinyllm.tensor import is_device_array, to_numpy, zeros_like


# ----------------------------------------------------------------------------
# AdamW

def _check_hyperparameters(lr, betas, eps, weight_decay, where):
    """Raise ValueError naming the first out-of-range hyperparameter."""
    if not lr >= 0:  # `not >=` also rejects NaN
        raise ValueError(f"{where}: lr must be >= 0, got {lr!r}")
    if len(betas) != 2:
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas, start=1):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{where}: beta{i} must be in [0, 1), got {beta!r}")
    if not eps > 0:
        raise ValueError(f"{where}: eps must be > 0, got {eps!r}")
    if not weight_decay >= 0:
        raise ValueError(f"{where}: weight_decay must be >= 0, got {weight_decay!r}")


class AdamW:
    """AdamW with decoupled weight decay, PyTorch-style param groups.

    params: an iterable of parameters, or of dicts {"params": [...], "lr": ...,
    "weight_decay": ...}; keys a group leaves out take the constructor's
    values, and extra keys (such as "names") are kept untouched. The step
    count is global (one per step() call) and drives the bias correction.
    Change the learning rate with set_lr(lr), or per group through
    param_groups[i]["lr"]; step() reads the groups every time.
    """

    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        betas = tuple(betas)
        _check_hyperparameters(lr, betas, eps, weight_decay, "AdamW")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        if hasattr(params, "data") and hasattr(params, "grad"):
            raise TypeError("AdamW got a single parameter; pass a list of parameters, "
                            "e.g. AdamW([p]) or AdamW(model.parameters())")
        items = list(params)
        if not items:
            raise ValueError("AdamW got an empty parameter list; pass model.parameters() "
                             "or a non-empty list of param groups")
        if not isinstance(items[0], dict):
            items = [{"params": items}]
        self.param_groups = []
        seen = set()
        for i, group in enumerate(items):
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"param group {i} must be a dict with a 'params' key "
                                f"(do not mix groups and bare parameters), got {type(group).__name__}")
            group = {**defaults, **group, "params": list(group["params"])}
            group["betas"] = tuple(group["betas"])
            _check_hyperparameters(group["lr"], group["betas"], group["eps"],
                                   group["weight_decay"], f"AdamW param group {i}")
            if not group["params"]:
                raise ValueError(f"param group {i} has an empty 'params' list; drop the group")
            for p in group["params"]:
                if not (hasattr(p, "data") and hasattr(p, "grad")):
                    raise TypeError(f"param group {i} holds a {type(p).__name__}, which has no "
                                    f".data/.grad; pass Tensors or Parameters")
                if id(p) in seen:
                    raise ValueError(f"a parameter of shape {p.data.shape} appears more than once "
                                     f"(again in param group {i}); list each parameter once")
                seen.add(id(p))
            self.param_groups.append(group)
        self._params = [p for g in self.param_groups for p in g["params"]]
        # moments are allocated upfront: state_dict() then always has one
        # entry per parameter, in a fixed order, even before the first step
        # on the parameters' device (the GPU for a model moved there)
        self.exp_avg = [zeros_like(p.data) for p in self._params]         # m
        self.exp_avg_sq = [zeros_like(p.data) for p in self._params]      # v
        self.step_count = 0

    def step(self):
        """Apply one AdamW update to every parameter that has a gradient."""
        # check every gradient before touching any parameter, so a bad one
        # leaves the model as it was instead of half-updated
        for p in self._params:
            if p.grad is not None and (p.grad.shape != p.data.shape or p.grad.dtype != p.data.dtype):
                raise ValueError(f"gradient of shape {p.grad.shape} {p.grad.dtype} does not match "
                                 f"its parameter of shape {p.data.shape} {p.data.dtype}; "
                                 f"the grad must have the parameter's shape and dtype")
        self.step_count += 1
        backend = get_backend()
        i = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    # the C kernel walks flat memory, so a NumPy grad must be
                    # contiguous (a no-op when it is; device arrays always are)
                    grad = p.grad if is_device_array(p.grad) else np.ascontiguousarray(p.grad)
                    backend.adamw_update(p.data, grad, self.exp_avg[i], self.exp_avg_sq[i],
                                         group["lr"], beta1, beta2, group["eps"],
                                         group["weight_decay"], self.step_count)
                i += 1

    def zero_grad(self):
        """Drop every gradient (None, not zeros: step() then skips unused parameters)."""
        for p in self._params:
            p.grad = None

    def set_lr(self, lr):
        """Set the learning rate of every group (the schedule calls this each step)."""
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        for group in self.param_groups:
            group["lr"] = lr

    def state_dict(self):
        """{"step", "exp_avg", "exp_avg_sq"}: copies, in the order of the params across groups."""
        return {"step": self.step_count,
                "exp_avg": [np.array(to_numpy(m)) for m in self.exp_avg],
                "exp_avg_sq": [np.array(to_numpy(v)) for v in self.exp_avg_sq]}

    def load_state_dict(self, state):
        """Copy a state_dict() back in; the optimizer must hold the same params in the same order."""
        missing = {"step", "exp_avg", "exp_avg_sq"} - set(state)
        if missing:
            raise ValueError(f"optimizer state is missing {sorted(missing)}; "
                             f"pass a dict made by AdamW.state_dict()")
        step = state["step"]
        if int(step) != step or step < 0:
            raise ValueError(f"optimizer state has step {step!r}; expected a non-negative integer")
        for key, ours in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            theirs = state[key]
            if len(theirs) != len(ours):
                raise ValueError(f"optimizer state has {len(theirs)} {key} arrays but this optimizer "
                                 f"holds {len(ours)} parameters; build it over the same model "
                                 f"and param groups as the saved one")
            for i, (a, b) in enumerate(zip(ours, theirs)):
                if np.shape(b) != a.shape:
                    raise ValueError(f"optimizer state {key}[{i}] has shape {np.shape(b)} but "
                                     f"parameter {i} has shape {a.shape}; the parameter order or "
                                     f"the model config differs from the saved one")
        # copy only after every check passed, so a bad state changes nothing
        for key, ours in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for a, b in zip(ours, state[key]):
                a[...] = b
        self.step_count = int(step)


def param_groups(named_params, weight_decay, decay_embeddings=False):
    """Split (name, param) pairs into a decayed and a non-decayed group for AdamW.

    Weight decay pulls matrices (ndim >= 2) towards zero; it is not applied to
    1-D parameters (norm gains, biases), whose scale has a meaning of its own,
    nor to embedding tables (`is_embedding` True) unless decay_embeddings,
    since rows of rare tokens would shrink on every step they are not seen.
    Returns the non-empty groups, each with "params", "names", "weight_decay".
    """
    decay = {"params": [], "names": [], "weight_decay": weight_decay}
    no_decay = {"params": [], "names": [], "weight_decay": 0.0}
    for name, p in named_params:
        is_embedding = getattr(p, "is_embedding", False)
        group = decay if p.data.ndim >= 2 and (decay_embeddings or not is_embedding) else no_decay
        group["params"].append(p)
        group["names"].append(name)
    return [g for g in (decay, no_decay) if g["params"]]


# ----------------------------------------------------------------------------
# learning-rate schedule

def cosine_lr(step, max_lr, warmup_steps, max_steps, min_lr=0.0):
    """The learning rate at `step` (counting from 0): linear warmup, then cosine decay.

        step < warmup_steps:          lr = max_lr * (step + 1) / warmup_steps
        warmup_steps <= step < max_steps:
            p  = (step - warmup_steps) / (max_steps - warmup_steps)      in [0, 1)
            lr = min_lr + 0.5 * (1 + cos(pi * p)) * (max_lr - min_lr)
        step >= max_steps:            lr = min_lr

    So the warmup reaches max_lr on its last step (step warmup_steps - 1), the
    decay starts from max_lr and reaches min_lr at step == max_steps.
    warmup_steps == 0 means no warmup. When max_steps <= warmup_steps there is
    no decay phase: the warmup runs to its end, then lr is min_lr.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps < 0 or max_steps < 0:
        raise ValueError(f"warmup_steps and max_steps must be >= 0, "
                         f"got {warmup_steps} and {max_steps}")
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# ----------------------------------------------------------------------------
# gradient clipping

def clip_grad_norm(params, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm.

    The norm is taken over every gradient together (params whose grad is None
    are skipped), summed in float64 so millions of float32 squares do not lose
    precision. Returns the norm before clipping. A non-finite norm (inf/nan)
    is returned as is and nothing is scaled: the caller should stop or skip
    the step, since scaling by max_norm / inf would zero or poison the grads.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    norm = math.sqrt(get_backend().sum_of_squares(grads))   # float64, where the grads live
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g *= scale
    return norm
