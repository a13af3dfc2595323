"""LoRA: a frozen Linear plus a trained low-rank update, merged or not, saved as peft saves it.

    y = x W^T + (alpha / r) * dropout(x) A^T B^T        W (out, in) frozen; A (r, in); B (out, r)

A starts small and random (peft's kaiming-uniform bound 1/sqrt(in)), B at
zero, so at initialisation the model computes exactly what the base did.
Only A and B (and any modules listed in modules_to_save, such as the
embedding rows of added tokens) are trained; every other parameter is
frozen (requires_grad False), so it takes no gradient work and no
optimizer state. `lora_linear` is the layer as one op with its own backward:
it keeps only h = x A^T (N, r) for it, where three chained Linears would keep
three (N, out) arrays per layer (more than full fine-tuning's memory, measured). `merge` folds the update into W (W += (alpha / r) B A)
for inference at the base's speed; `unmerge` takes it out again.

Adapters are written as HuggingFace peft writes them, so peft loads them
onto the same model in PyTorch (examples/torch_gpt.py):
  adapter_model.safetensors  base_model.model.<module path>.lora_A.weight (r, in),
                             ....lora_B.weight (out, r), and the full weight of
                             each module in modules_to_save under
                             base_model.model.<module path>.weight
  adapter_config.json        peft's LoraConfig fields (r, lora_alpha, target_modules, ...)

Not here: which run trains them (finetune/run.py). Read model.py next.
"""
import dataclasses
import json
import pathlib

import numpy as np

from tinyllm import nn, ops
from tinyllm.backends import get_backend
from tinyllm.atomic import atomic_write
from tinyllm.errors import CheckpointError
from tinyllm.safetensors import load_safetensors, save_safetensors
from tinyllm.tensor import Tensor, like, to_numpy

PEFT_PREFIX = "base_model.model."
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


@dataclasses.dataclass
class LoRAConfig:
    r: int = 8                                      # rank of the update B A; 8 is peft's default
    alpha: float = 16.0                             # the update is scaled by alpha / r
    dropout: float = 0.0                            # on the input of A only (peft's lora_dropout)
    targets: tuple = ("c_attn", "c_proj", "c_fc")   # Linear names (the contract's) that get LoRA
    modules_to_save: tuple = ()                     # modules trained in full beside the adapters
    seed: int = 0                                   # of A's initialisation

    def __post_init__(self):
        self.targets, self.modules_to_save = tuple(self.targets), tuple(self.modules_to_save)
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"--lora-r must be an integer >= 1, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("--lora-targets is empty: name Linear modules, e.g. c_attn,c_proj,c_fc")

    def to_dict(self):
        return dataclasses.asdict(self)


def lora_linear(x, weight, lora_a, lora_b, scale, bias=None, dropout=None, dtype="fp32", act=None):
    """a W^T (+ b) + scale * dropout(a) A^T B^T -> (..., out), one op, with a = act(x): x (..., in),
    W (out, in), A (r, in), B (out, r). It keeps only h = dropout(a) A^T (N, r) beside its inputs,
    and a frozen W (or an input that needs no gradient) costs no matmul in the backward.
    act "silu" (the MLP's c_proj, no dropout then): silu(x) is made again in the backward, not kept.
    dtype "bf16": every product by matmul_bf16, as ops.linear; weights and grads stay float32."""
    if x.shape[-1] != weight.shape[1] or lora_a.shape != (lora_b.shape[1], weight.shape[1]) \
            or lora_b.shape[0] != weight.shape[0]:
        raise ValueError(f"lora_linear: x {x.shape}, W {weight.shape}, A {lora_a.shape} and "
                         f"B {lora_b.shape} do not fit: need W (out, in), A (r, in), B (out, r)")
    if dtype not in ops.MATMUL_DTYPES or act not in (None, "silu"):
        raise ValueError(f"lora_linear: dtype {dtype!r} (one of {ops.MATMUL_DTYPES}), act {act!r} "
                         f"(None or 'silu')")
    kernels = get_backend()
    mm = kernels.matmul_bf16 if dtype == "bf16" else kernels.matmul
    xd = dropout(x) if dropout is not None else x                        # (..., in)
    if act is not None and xd is not x:
        raise ValueError("lora_linear: act with an active dropout: apply the activation first")
    x2 = x.data.reshape(-1, x.shape[-1])                                 # (N, in)
    xd2 = xd.data.reshape(-1, x.shape[-1])                               # (N, in)
    act_x = (lambda: kernels.silu_forward(x2)) if act else (lambda: x2)  # a = act(x), on demand
    a2 = act_x()                                                         # (N, in), not kept with act
    y = mm(a2, weight.data, transpose_b=True)                            # (N, out)  a W^T
    h = mm(a2 if act else xd2, lora_a.data, transpose_b=True)            # (N, r)    ad A^T
    update = mm(h, lora_b.data, transpose_b=True)                        # (N, out)  h B^T
    update *= scale                                                      # in place: GPU arrays too
    y += update                                                          # a W^T + s h B^T
    if bias is not None:
        y = y + bias.data
    parents = (x, xd, weight, lora_a, lora_b) + ((bias,) if bias is not None else ())

    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])                              # (N, out)
        # forward: y = a W^T + s h B^T (+ b), h = ad A^T; so with dh = s g B (N, r):
        dh = mm(g2, lora_b.data)                                         # (N, r)
        dh *= scale
        d_lora_b = mm(g2, h, transpose_a=True)                           # (out, r)
        d_lora_b *= scale                                                # dB = s g^T h
        a2 = act_x()                                                     # (N, in), made again with act
        d_lora_a = mm(dh, a2 if act else xd2, transpose_a=True)          # (r, in)  dA = dh^T ad
        dw = mm(g2, a2, transpose_a=True) if weight.requires_grad else None   # dW = g^T a
        del a2                                                           # before the (N, in) grads
        dx = mm(g2, weight.data) if x.requires_grad else None            # g W
        dxd = mm(dh, lora_a.data) if xd.requires_grad else None          # dh A
        if act and dx is not None:   # xd is x: both reach x through a = silu(x)
            dx += dxd
            dx, dxd = kernels.silu_backward(dx, x2), None
        grads = (None if dx is None else dx.reshape(x.shape),
                 None if dxd is None else dxd.reshape(x.shape), dw, d_lora_a, d_lora_b)
        return grads + ((g2.sum(axis=0),) if bias is not None else ())
    return Tensor.from_op(y.reshape(*x.shape[:-1], weight.shape[0]), parents, backward, "lora_linear")


class LoRALinear(nn.Module):
    """A Linear whose weight is frozen, plus lora_A (r, in) and lora_B (out, r)."""

    def __init__(self, base, r, alpha, dropout, rng, dropout_rng):
        n_out, n_in = base.weight.shape
        self.weight, self.bias = base.weight, base.bias                  # the same frozen tensors
        self.lora_A = nn.Linear(n_in, r, rng)
        bound = 1.0 / np.sqrt(n_in)
        self.lora_A.weight.data = like(base.weight.data, rng.uniform(-bound, bound, (r, n_in)))
        self.lora_B = nn.Linear(r, n_out, rng)
        self.lora_B.weight.data = like(base.weight.data, np.zeros((n_out, r)))
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout, dropout_rng)
        self.merged = False

    def forward(self, x, act=None):
        """act(x) W^T + scale * dropout(act(x)) A^T B^T; act None or "silu" (ops.linear)."""
        if self.merged:
            return ops.linear(x, self.weight, self.bias, self.matmul_dtype, act)
        if act is not None and self.dropout.p > 0:   # the dropout needs act(x) as a tensor
            x, act = ops.silu(x), None
        return lora_linear(x, self.weight, self.lora_A.weight, self.lora_B.weight, self.scale,
                           self.bias, self.dropout, self.matmul_dtype, act)

    def delta(self):
        """(alpha / r) B A as a NumPy array (out, in)."""
        return self.scale * (to_numpy(self.lora_B.weight.data) @ to_numpy(self.lora_A.weight.data))

    def merge(self):
        """W += (alpha / r) B A: the layer now costs one matmul, as the base did."""
        if not self.merged:
            self.weight.data = like(self.weight.data, to_numpy(self.weight.data) + self.delta())
            self.merged = True

    def unmerge(self):
        """W -= (alpha / r) B A: back to the base weight plus a separate, trainable update."""
        if self.merged:
            self.weight.data = like(self.weight.data, to_numpy(self.weight.data) - self.delta())
            self.merged = False


def named_modules(module, prefix=""):
    """(dotted path, module) of every sub-module, depth first, as PyTorch names them."""
    for name, child in module.children():
        yield prefix + name, child
        yield from named_modules(child, prefix + name + ".")


def apply_lora(model, config):
    """Wrap every Linear named in config.targets in a LoRALinear and freeze the rest; returns the paths."""
    rng = np.random.default_rng(config.seed)
    wrapped = []
    for path, module in [("", model), *named_modules(model)]:
        for name, child in list(module.children()):
            if name in config.targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, config.r, config.alpha, config.dropout,
                                                 rng, model.rng))
                wrapped.append(f"{path}.{name}" if path else name)
    if not wrapped:
        names = sorted({p.rsplit(".", 1)[-1] for p, m in named_modules(model)
                        if isinstance(m, nn.Linear)})
        raise ValueError(f"--lora-targets {','.join(config.targets)} names no Linear module of "
                         f"this model; its Linear modules are {','.join(names)}")
    kept = tuple(config.modules_to_save)
    for name, p in model.named_parameters():
        p.requires_grad = ".lora_" in name or any(_under(name, m) for m in kept)
    model.lora = config
    return wrapped


def _under(name, module_name):
    """Is parameter `name` inside a module whose last path part is module_name (peft's matching)?"""
    return f".{module_name}." in f".{name}"


def lora_layers(model):
    return [m for _, m in named_modules(model) if isinstance(m, LoRALinear)]


def merged_state_dict(model):
    """The model's state_dict with every update folded into its W and no lora_ tensors."""
    state = {n: a for n, a in model.state_dict().items() if ".lora_" not in n}
    for path, m in named_modules(model):
        if isinstance(m, LoRALinear) and not m.merged:
            state[f"{path}.weight"] = (state[f"{path}.weight"] + m.delta()).astype(np.float32)
    return state


# ----------------------------------------------------------------------------
# peft's files

def adapter_tensors(model):
    """{peft key: array} of the trained tensors: lora_A/lora_B and the modules_to_save."""
    return {PEFT_PREFIX + n: a for n, a in model.state_dict().items()
            if ".lora_" in n or any(_under(n, m) for m in model.lora.modules_to_save)}


def save_adapter(folder, model, base_path, metadata):
    """Write adapter_model.safetensors and adapter_config.json into folder (each atomically)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.lora
    save_safetensors(folder / ADAPTER_WEIGHTS, adapter_tensors(model), {"format": "pt", **metadata})
    peft_config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": str(base_path),
        "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout,
        "target_modules": sorted(c.targets), "modules_to_save": list(c.modules_to_save) or None,
        "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "use_rslora": False, "use_dora": False, "layers_to_transform": None,
        "rank_pattern": {}, "alpha_pattern": {}, "revision": None}
    with atomic_write(folder / ADAPTER_CONFIG, "w") as f:
        f.write(json.dumps(peft_config, indent=2) + "\n")


def read_adapter(folder):
    """(LoRAConfig, {our parameter name: array}, metadata) from an adapter folder."""
    folder = pathlib.Path(folder)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).exists():
            raise CheckpointError(f"--adapter {folder}: no {name} there; give the --out folder "
                                  f"of a `finetune --lora` run")
    peft_config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if peft_config.get("peft_type") != "LORA":
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: peft_type is "
                              f"{peft_config.get('peft_type')!r}; tinyllm reads LORA adapters")
    config = LoRAConfig(r=peft_config["r"], alpha=peft_config["lora_alpha"],
                        dropout=peft_config["lora_dropout"], targets=peft_config["target_modules"],
                        modules_to_save=peft_config.get("modules_to_save") or ())
    tensors, metadata = load_safetensors(folder / ADAPTER_WEIGHTS)
    return config, {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}, metadata
