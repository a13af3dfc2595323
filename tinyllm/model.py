"""The GPT: its configuration, presets and the transformer; the architecture only.

Architecture (DESIGN.md's model contract): learned token and position
embeddings, pre-norm blocks (RMSNorm -> causal self-attention with one fused
bias-free qkv projection -> residual; RMSNorm -> MLP Linear, SiLU, Linear
at 4x width -> residual), a final RMSNorm, and an untied bias-free lm_head.
Parameter names and shapes match PyTorch's GPT-2 spelling, so a state_dict
or checkpoint moves between tinyllm and PyTorch code.

Not here: decoding (generate.py: the KV cache, the samplers; GPT.generate
calls it), the training loop (train.py) or the maths of each op (ops.py and
the backend kernels). Read generate.py next.
"""
import functools
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from tinyllm import generate, lm_loss, nn, ops
from tinyllm.tensor import Tensor


@dataclass
class GPTConfig:
    vocab_size: int = 256     # token ids are in [0, vocab_size)
    block_size: int = 128     # the longest sequence the model sees (its position table)
    n_layer: int = 4          # transformer blocks
    n_head: int = 4           # attention heads per block
    n_embd: int = 128         # channels C; each head gets C / n_head
    norm_eps: float = 1e-5    # added to mean(x^2) inside RMSNorm
    dropout: float = 0.0      # on embeddings, attention output and MLP output
    seed: int = 0             # initialisation seed

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                             f"each head gets n_embd / n_head channels, so choose n_embd a "
                             f"multiple of n_head (e.g. n_embd={self.n_head * max(1, self.n_embd // self.n_head)})")
        for name in ("norm_eps", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise ValueError(f"GPTConfig.{name} must be a number, got {value!r}")
        if not 0.0 < self.norm_eps < 1.0:
            raise ValueError(f"GPTConfig.norm_eps must be in (0, 1), got {self.norm_eps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"GPTConfig.seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"a GPTConfig is a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


# Named model shapes. "default" is what examples/train.py trains in about five
# minutes on two cores with the NumPy backend.
PRESETS = {
    "tiny":    dict(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=16),
    "default": dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128),
    "bench":   dict(vocab_size=8192, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2":    dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


def preset(name, **overrides):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


# -- size and cost from a config alone (the planner's; GPT's methods count the built arrays) ----
def parameter_counts(config):
    """GPT(config)'s parameters by part, from the shape alone: no arrays are made.

    With V, T, L, C = vocab_size, block_size, n_layer, n_embd:
        wte V C   wpe T C   ln_f C   lm_head V C
        blocks L (12 C^2 + 2 C): c_attn 3C^2, attn c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2, ln_1 + ln_2 2C
    e.g. the gpt2 preset: 38,597,376 + 786,432 + 84,953,088 + 768 + 38,597,376 = 162,935,040.
    """
    V, T, L, C = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    return {"wte": V * C, "wpe": T * C, "blocks": L * (12 * C * C + 2 * C), "ln_f": C, "lm_head": V * C}


def num_parameters(config):
    """Every parameter of GPT(config); equals GPT(config).num_parameters() without building it."""
    return sum(parameter_counts(config).values())


def flops_per_token(config, T=None):
    """Training FLOPs per token (forward + backward) at sequence length T: 6 N + 12 L C T (PaLM appendix B).

    N counts the matmul weights, 12 L C^2 + V C (the embeddings are lookups,
    the norms elementwise); the second term is the attention scores and the
    weighted sum of the values. Equals GPT(config).flops_per_token(T).
    """
    L, C = config.n_layer, config.n_embd
    T = T or config.block_size
    n_matmul = L * 12 * C * C + config.vocab_size * C
    return 6 * n_matmul + 12 * L * C * T


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer, rng):
        self.n_head = config.n_head
        self.layer = layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, rng)     # rows: q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, rng,
                                std=0.02 / math.sqrt(2 * config.n_layer))  # residual projection
        self.dropout = nn.Dropout(config.dropout, rng)

    def forward(self, x, cache=None):
        qkv = self.c_attn(x)                                               # (B, T, 3C)
        # inference only: the cache adds the keys and values of the past positions
        kv_cache = functools.partial(cache.attend, self.layer) if cache is not None else None
        y = ops.causal_self_attention(qkv, self.n_head, kv_cache, self.matmul_dtype)  # (B, T, C)
        return self.dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config, rng):
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, rng)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, rng,
                                std=0.02 / math.sqrt(2 * config.n_layer))
        self.dropout = nn.Dropout(config.dropout, rng)

    def forward(self, x):
        # c_proj applies the SiLU itself, so the graph keeps c_fc's (B, T, 4C) output alone (ops.linear)
        return self.dropout(self.c_proj(self.c_fc(x), act="silu"))        # (B, T, C)


class Block(nn.Module):
    def __init__(self, config, layer, rng):
        self.ln_1 = nn.RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config, layer, rng)
        self.ln_2 = nn.RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config, rng)

    def forward(self, x, cache=None):
        if cache is not None and not self.training:   # decoding: the whole block in one kernel
            fused = cache.decode_block(self.attn.layer, x, self.decode_weights)   # or None
            if fused is not None:
                return fused
        x = residual(x, self.attn(self.ln_1(x), cache))                    # (B, T, C)
        return residual(x, self.mlp(self.ln_2(x)))

    def decode_weights(self):
        """(weights, n_head, eps) as the backends' decode_block takes them (the same maths as
        forward above), or None when a layer is one it does not know (LoRA's, a bf16 Linear)."""
        linears = [getattr(m, "decode_weight", lambda: None)() for m in
                   (self.attn.c_attn, self.attn.c_proj, self.mlp.c_fc, self.mlp.c_proj)]
        if any(w is None for w in linears) or self.ln_1.eps != self.ln_2.eps:
            return None
        weights = (self.ln_1.weight.data, *linears[:2], self.ln_2.weight.data, *linears[2:])
        return weights, self.attn.n_head, self.ln_1.eps


def residual(x, branch):
    """x + branch, a block's residual add. The graph keeps branch (the add's parent) only for its
    shape: the add's backward passes g through. So its (B, T, C) data, which nothing else reads,
    goes now (two of the 14 B T C a layer kept): a zero-stride view of that shape stands in."""
    out = x + branch                                                       # (B, T, C)
    if branch.requires_grad and isinstance(branch.data, np.ndarray):       # host arrays
        branch.data = np.broadcast_to(np.zeros((), branch.dtype), branch.shape)
    return out


class Transformer(nn.Module):
    def __init__(self, config, rng):
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, rng)
        self.wpe = nn.Embedding(config.block_size, config.n_embd, rng)
        self.h = nn.ModuleList([Block(config, i, rng) for i in range(config.n_layer)])
        self.ln_f = nn.RMSNorm(config.n_embd, config.norm_eps)


class GPT(nn.Module):
    def __init__(self, config):
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.rng = rng   # after init it drives dropout; checkpoints save its state
        self.transformer = Transformer(config, rng)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, rng)
        self.dropout = nn.Dropout(config.dropout, rng)

    def forward(self, idx, targets=None, cache=None, return_logits=True):
        """idx (B, T) token ids -> logits (B, T, V) and the mean loss against targets (or None).
        return_logits False (a training step, which reads only the loss): (None, loss), and a
        frozen lm_head then never makes the whole (B, T, V) logits (lm_loss.py)."""
        h = self.hidden(idx, cache)                                        # (B, T, C)
        if targets is not None and type(self.lm_head) is nn.Linear:        # LoRA's is not
            # one op: a frozen lm_head's loss then goes a few rows at a time (lm_loss.py)
            return lm_loss.linear_cross_entropy(h, self.lm_head.weight, targets,
                                                self.lm_head.matmul_dtype, return_logits)
        logits = self.lm_head(h)                                           # (B, T, V)
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return (logits if return_logits else None), loss

    def last_logits(self, idx, cache=None):
        """idx (B, T) -> the last position's logits (B, V), all a decoding step samples from: the
        lm_head, the biggest matmul, then runs on B rows, not B x T (a prefill skips T - 1).
        A decoding step past the embeddings is one kernel where the cache can fuse it."""
        x = self.embed(idx, cache)                                        # (B, T, C)
        if cache is not None and not self.training:
            logits = cache.decode_step(x, self.decode_step_weights)       # or None
            if logits is not None:
                cache.length += x.shape[1]
                return logits
        last = self.blocks(x, cache).data[:, -1, :]                       # (B, C)
        if isinstance(last, np.ndarray):
            last = np.ascontiguousarray(last)
        return self.lm_head(Tensor(last, dtype=last.dtype)).data         # (B, V)

    def decode_step_weights(self):
        """((blocks' weights, ln_f, lm_head), n_head, eps) as the backends' decode_step takes
        them, or None when a block's decode_weights is None, the lm_head is not a plain product
        (LoRA's, a bf16 Linear) or the norms' eps differ."""
        blocks = [block.decode_weights() for block in self.transformer.h]
        head = getattr(self.lm_head, "decode_weight", lambda: None)()
        if head is None or any(b is None or b[1:] != blocks[0][1:] for b in blocks) \
                or self.transformer.ln_f.eps != blocks[0][2]:
            return None
        arrays = tuple(b[0] for b in blocks), self.transformer.ln_f.weight.data, head
        return arrays, *blocks[0][1:]

    def hidden(self, idx, cache=None):
        """idx (B, T) -> the final hidden states (B, T, C), after ln_f (heads read them)."""
        return self.blocks(self.embed(idx, cache), cache)

    def embed(self, idx, cache=None):
        """idx (B, T), the positions after the cache's -> the blocks' input (B, T, C)."""
        idx = self._check_ids(idx)
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than block_size "
                             f"{self.config.block_size}: crop it to the last "
                             f"{self.config.block_size} tokens, or train a model with a "
                             f"larger block_size")
        t = self.transformer
        pos = np.broadcast_to(np.arange(start, start + T), (B, T))        # (B, T)
        return self.dropout(t.wte(idx) + t.wpe(pos))                       # (B, T, C)

    def blocks(self, x, cache=None):
        """x (B, T, C) through every block (the cache then holds T more positions) and ln_f."""
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.transformer.ln_f(x)                                    # (B, T, C)

    def _check_ids(self, idx):
        idx = np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError(f"idx must have shape (B, T), got {idx.shape}; "
                             f"for one sequence use ids[None, :]")
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.shape[1] == 0:
            raise ValueError("idx is empty (T = 0): give at least one token")
        return idx

    # -- size and cost --------------------------------------------------------
    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward): 6 N + 12 L C T (PaLM appendix B).

        N counts the matmul weights (the embeddings are lookups); the second
        term is the attention scores and weighted sum at sequence length T.
        """
        c = self.config
        T = T or c.block_size
        n_matmul = sum(p.size for name, p in self.named_parameters()
                       if p.ndim == 2 and not p.is_embedding)
        return 6 * n_matmul + 12 * c.n_layer * c.n_embd * T

    def summary(self):
        """One line: the shape, parameters and weight bytes, and the training FLOPs, or, for a
        model whose weights are held outside Parameters (quantized), that it is inference only."""
        c = self.config
        training = (f"{self.flops_per_token() / 1e6:.1f} MFLOP per training token"
                    if not self.held_weights()[0] else "quantized: inference only")
        return (f"GPT: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} channels, "
                f"context {c.block_size}, vocab {c.vocab_size}; "
                f"{self.num_parameters() / 1e6:.2f}M parameters, "
                f"{self.weight_bytes() / 2 ** 20:.1f} MiB of weights, {training}")

    # -- generation (generate.py) -----------------------------------------
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 seed=None, use_cache=True, min_p=None, repetition_penalty=1.0, exclude=None):
        """Continue each row of idx (B, T) by max_new_tokens sampled tokens -> (B, T + new).

        See generate.generate, which this calls, and sampling.py for the options.
        """
        return generate.generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=seed, use_cache=use_cache, min_p=min_p,
                                 repetition_penalty=repetition_penalty, exclude=exclude)

    @property
    def dtype(self):
        return self.lm_head.weight.dtype

