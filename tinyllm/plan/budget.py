"""The budget of a run: tokens (Chinchilla), FLOPs and time, and memory per device for each ZeRO stage.

    chinchilla_tokens(1e9)                        -> 2.02e10 (Hoffmann et al. 2022, table 3: 20.2B)
    model_state_bytes(7.5e9, 64, stage=1)        -> 31.4e9  (Rajbhandari et al. 2020, the 7.5B example)
    activation_bytes(config, micro_batch=8, dtype="bf16", recompute=False) -> bytes of one device's batch

Tokens. Hoffmann et al. 2022 ("Training Compute-Optimal Large Language
Models"), table 3, lists compute-optimal token counts from 400M to 10T
parameters: about 20 tokens per parameter, drifting up from 20.0 to 21.6.
We use the power law through its 1B row (20.2B tokens) and its 10T row
(216.2T): D = 20.2e9 (N / 1e9)^1.0074, within 3% of every row (the 67B row's
"1.5 trillion" is its FLOPs column's 1.43T, rounded).

FLOPs and time. FLOPs = flops_per_token(config) x D: 6 N for the matmuls
(forward 2 N, backward 4 N) plus the attention term 12 L C T, as model.py
counts them; time = FLOPs / (devices x peak x MFU).

Memory (Rajbhandari et al. 2020, "ZeRO", section 3.1 and figure 1). Mixed-
precision AdamW keeps 16 bytes per parameter: 2 (bf16 weights) + 2 (bf16
gradients) + 12 (fp32 master weights, Adam's m and v); float32 training also
16: 4 + 4 + 8. ZeRO-1 shards the optimizer state over the data-parallel
devices, ZeRO-2 the gradients as well, ZeRO-3 the weights as well.
Activations per layer follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", section 4.1, eq. 1): s b h (34 +
5 a s / h) bytes at 16 bits for a GPT layer with dropout and a materialised
softmax. A bf16 plan is that trainer with fused attention (flash-style: no s x s
scores; it keeps the output and the row log-sum-exp) and no dropout: 16
activations of size s b h (32 s b h bytes) plus the log-sum-exp. An fp32
plan is tinyllm as it trains today, whose autograd keeps 12 (counted in
KEPT_PER_LAYER). With full recomputation a layer keeps only its input, and
one layer's full set lives while it is recomputed. The logits add 4 s b V
bytes (fp32, as the paper counts the output layer; twice in tinyllm).

Not here: the table of devices (hardware.py), the shape and hyperparameters
(shapes.py), the choice of layout (layout.py). Read layout.py next.
"""
import math

from tinyllm.model import flops_per_token

# D = CHINCHILLA_1B * (N / 1e9) ** CHINCHILLA_EXPONENT: table 3's rows 1B -> 20.2B and 10T -> 216.2T
CHINCHILLA_1B = 20.2e9
CHINCHILLA_EXPONENT = math.log(216.2e12 / 20.2e9) / math.log(10e12 / 1e9)   # 1.0074
BYTES = {"bf16": 2, "fp32": 4}
# model states in bytes per parameter (weights, gradients, optimizer state) before sharding
STATE_BYTES = {"bf16": (2, 2, 12), "fp32": (4, 4, 8)}
# activations of size s b h one layer keeps for its backward:
#   bf16, a fused mixed-precision trainer: Korthikanti et al.'s 34 s b h bytes less the two dropout
#     masks, over 2 bytes: the norm inputs 2, the qkv input 1, q k v 3, the attention output 1, the
#     MLP's input 1, its 4h hidden before and after the activation 8 = 16
#   fp32, tinyllm today: its autograd keeps these op outputs (x, ln_1, qkv 3, attention 1,
#     x + attn 1, ln_2 1, c_fc 4 = 12); the attention op splits its heads again in the
#     backward rather than keep them, c_proj makes silu(c_fc) again (ops.linear), and the
#     residual adds let go of their branch's output (model.residual)
KEPT_PER_LAYER = {"bf16": 16, "fp32": 12}
# fp32 logits of size s b V: the fused loss keeps one; tinyllm's backward holds them and their gradient
LOGITS_KEPT = {"bf16": 1, "fp32": 2}
USABLE_MEMORY = 0.9   # of a device's memory: the rest is the runtime, the allocator's slack, workspaces
ZERO_STAGES = (0, 1, 2, 3)


def chinchilla_tokens(params):
    """Compute-optimal training tokens for a model of `params` parameters (Hoffmann et al. 2022)."""
    return CHINCHILLA_1B * (params / 1e9) ** CHINCHILLA_EXPONENT


def training_flops(config, tokens):
    """FLOPs of training `config` on `tokens` tokens at its full context."""
    return flops_per_token(config) * tokens


def training_seconds(flops, hardware, dtype, mfu):
    return flops / (hardware.count * hardware.peak(dtype) * mfu)


def tokens_in(seconds, config, hardware, dtype, mfu):
    """How many tokens `seconds` of training covers."""
    return seconds * hardware.count * hardware.peak(dtype) * mfu / flops_per_token(config)


def model_state_bytes(params, devices, stage, dtype="bf16"):
    """Weights + gradients + optimizer state per device under ZeRO `stage` over `devices`."""
    weights, grads, optimizer = (b * params for b in STATE_BYTES[dtype])
    return (weights / (devices if stage >= 3 else 1) + grads / (devices if stage >= 2 else 1)
            + optimizer / (devices if stage >= 1 else 1))


def korthikanti_layer_bytes(s, b, h, a):
    """Korthikanti et al. 2022, eq. 1 (t = 1): one GPT layer's activations, 16-bit, with dropout
    and a materialised softmax. Kept as the paper writes it; activation_bytes is tinyllm's."""
    return s * b * h * (34 + 5 * a * s / h)


def activation_bytes(config, micro_batch, dtype="bf16", recompute=False):
    """Activations one device keeps for the backward of a micro-batch of full-context sequences."""
    s, b, h, a, L = config.block_size, micro_batch, config.n_embd, config.n_head, config.n_layer
    e = BYTES[dtype]
    layer = KEPT_PER_LAYER[dtype] * s * b * h * e + 4 * s * b * a   # + the fp32 row log-sum-exp
    logits = LOGITS_KEPT[dtype] * 4 * s * b * config.vocab_size
    if recompute:   # each layer's input, plus one layer's full set while it is recomputed
        return L * s * b * h * e + layer + logits
    return L * layer + logits


def memory_per_device(config, params, devices, stage, micro_batch, dtype, recompute):
    return (model_state_bytes(params, devices, stage, dtype)
            + activation_bytes(config, micro_batch, dtype, recompute))


def min_devices(config, params, usable, stage, dtype, recompute):
    """The fewest data-parallel devices with `usable` bytes each on which ZeRO `stage` fits one
    sequence per device, or None when no number of devices does."""
    weights, grads, optimizer = (b * params for b in STATE_BYTES[dtype])
    room = usable - activation_bytes(config, 1, dtype, recompute)
    kept = (weights if stage < 3 else 0) + (grads if stage < 2 else 0) + (optimizer if stage < 1 else 0)
    sharded = weights + grads + optimizer - kept
    if room <= kept:
        return None
    return max(1, math.ceil(sharded / (room - kept))) if sharded else 1
