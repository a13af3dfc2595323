"""The same GPT in PyTorch: a reference for parity tests and benchmarks (torch is optional).

Parameter names and layouts are tinyllm's contract (DESIGN.md), so
`TorchGPT(config).load_state_dict({k: torch.from_numpy(v) for k, v in
model.state_dict().items()})` moves a tinyllm model into PyTorch unchanged.
`forward(idx, cache=TorchKVCache(config, B))` decodes with a preallocated KV
cache written in place, as tinyllm's generate.KVCache (the rival of
examples/bench_generate.py). Not part of the tinyllm package: nothing in
tinyllm imports torch.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class TorchKVCache:
    """Per layer (B, nh, block_size, hs) key and value buffers, filled in place; length is filled."""

    def __init__(self, c, batch_size):
        shape = (batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        self.k = [torch.empty(shape) for _ in range(c.n_layer)]
        self.v = [torch.empty(shape) for _ in range(c.n_layer)]
        self.length = 0

    def attend(self, layer, q, k, v):
        """Store k, v (B, nh, T, hs) after the cached positions; attend q over all of them."""
        t0, T = self.length, k.shape[2]
        self.k[layer][:, :, t0:t0 + T] = k
        self.v[layer][:, :, t0:t0 + T] = v
        if t0 == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        keys, values = self.k[layer][:, :, :t0 + T], self.v[layer][:, :, :t0 + T]
        # query i sits at t0 + i: it sees keys j <= t0 + i (for T = 1, all of them)
        mask = None if T == 1 else torch.ones(T, t0 + T, dtype=torch.bool).tril(t0)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)


class CausalSelfAttention(nn.Module):
    def __init__(self, c, layer=0):
        super().__init__()
        self.n_head, self.layer = c.n_head, layer
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=False)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = cache.attend(self.layer, q, k, v)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.silu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c, layer=0):
        super().__init__()
        self.ln_1, self.attn = RMSNorm(c.n_embd, c.norm_eps), CausalSelfAttention(c, layer)
        self.ln_2, self.mlp = RMSNorm(c.n_embd, c.norm_eps), MLP(c)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd), wpe=nn.Embedding(c.block_size, c.n_embd),
            h=nn.ModuleList([Block(c, i) for i in range(c.n_layer)]), ln_f=RMSNorm(c.n_embd, c.norm_eps)))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)

    def forward(self, idx, targets=None, cache=None):
        t = self.transformer
        start = cache.length if cache is not None else 0
        x = t.wte(idx) + t.wpe(torch.arange(start, start + idx.shape[1], device=idx.device))
        for block in t.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += idx.shape[1]
        logits = self.lm_head(t.ln_f(x))
        loss = None if targets is None else F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def from_tinyllm(model):
    """A TorchGPT holding a copy of a tinyllm GPT's weights."""
    torch_model = TorchGPT(model.config)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return torch_model
