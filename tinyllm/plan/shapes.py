"""Model shapes and hyperparameters by size, from the GPT-3 paper's table of eight models.

    shape_for(1e9, vocab_size=50257, block_size=2048) -> GPTConfig(n_layer=18, n_head=14, n_embd=1792, ...)
    gpt3_hyperparameters(1.3e9) -> {"lr": 2.0e-4, "batch_tokens": 1.0e6}

Brown et al. 2020, "Language Models are Few-Shot Learners", table 2.1, trained
eight GPTs of 125M to 175B parameters, all with context 2048 and the GPT-2
vocabulary (50257), and gives each one's depth, width, batch and learning
rate. Between its rows we interpolate log-linearly in the size (and extend
the end segments for depth, clamp for the hyperparameters). Depth follows
the table as a function of the non-embedding size 12 L C^2, the part the
paper's sizes are mostly made of; the width then makes the whole model,
embeddings included, the size asked for. tinyllm's lm_head is untied, so a
small tinyllm model spends more of its size on the vocabulary than GPT-3's
did at the same count, and comes out shallower and narrower.

Not here: the token budget, FLOPs and memory (budget.py). Read budget.py next.
"""
import math

from tinyllm.errors import PlanError
from tinyllm.model import GPTConfig, num_parameters

GPT3_CONTEXT, GPT3_VOCAB = 2048, 50257
GPT3 = (  # Brown et al. 2020, table 2.1, as printed (the 13B row's 5140 is 40 heads x 128 = 5120 in intent)
    # name,            params, n_layer, d_model, n_head, d_head, batch (tokens), learning rate
    ("GPT-3 Small",    125e6,  12,   768,    12,  64,   0.5e6, 6.0e-4),
    ("GPT-3 Medium",   350e6,  24,   1024,   16,  64,   0.5e6, 3.0e-4),
    ("GPT-3 Large",    760e6,  24,   1536,   16,  96,   0.5e6, 2.5e-4),
    ("GPT-3 XL",       1.3e9,  24,   2048,   24,  128,  1e6,   2.0e-4),
    ("GPT-3 2.7B",     2.7e9,  32,   2560,   32,  80,   1e6,   1.6e-4),
    ("GPT-3 6.7B",     6.7e9,  32,   4096,   32,  128,  2e6,   1.2e-4),
    ("GPT-3 13B",      13.0e9, 40,   5140,   40,  128,  2e6,   1.0e-4),
    ("GPT-3 175B",     175e9,  96,   12288,  96,  128,  3.2e6, 0.6e-4),
)
# the training recipe shared by all eight (Brown et al. 2020, appendix B)
GPT3_RECIPE = dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0,
                   warmup_tokens=375e6,   # linear warmup over the first 375M tokens
                   min_lr_ratio=0.1)      # cosine decay to 10% of the peak
DEPTH_WEIGHT = 0.5   # shape search: a 1% error in size costs as much as a 2% departure from the table's depth


def log_interp(x, xs, ys, extend=False):
    """y at x, linear in (log x, log y) between the points (xs ascending); beyond them the end
    segment continues (extend) or the end value holds."""
    if not extend and (x <= xs[0] or x >= xs[-1]):
        return ys[0] if x <= xs[0] else ys[-1]
    i = min(max(1, sum(1 for v in xs if v < x)), len(xs) - 1)   # the segment (i - 1, i)
    t = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
    return math.exp(math.log(ys[i - 1]) + t * (math.log(ys[i]) - math.log(ys[i - 1])))


def gpt3_depth(non_embedding):
    """The table's n_layer at a non-embedding size 12 L C^2 (continuous; at least 1)."""
    rows = [(12 * row[2] * row[3] ** 2, row[2]) for row in GPT3]
    return max(1.0, log_interp(non_embedding, [r[0] for r in rows], [r[1] for r in rows], extend=True))


def head_size(n_embd):
    """GPT-3's head size: 64 up to 1.5k channels, 128 from 2k (its XL and larger, but for 2.7B's 80);
    32 below its sizes (under 256 channels), so that small widths still come in fine steps."""
    return 32 if n_embd < 256 else 64 if n_embd < 2048 else 128


def shape_for(params, vocab_size=GPT3_VOCAB, block_size=GPT3_CONTEXT):
    """The GPTConfig nearest `params` parameters (all of them, as GPT.num_parameters counts) whose
    depth follows the GPT-3 table and whose width is a whole number of heads."""
    V, T = vocab_size, block_size
    depth = _table_depth(params, V, T)
    best = None
    for L in range(max(1, math.floor(depth) - 2), math.ceil(depth) + 3):
        # width from the size: 12 L C^2 + (2 V + T + 2 L + 1) C = params
        b = 2 * V + T + 2 * L + 1
        C = (-b + math.sqrt(b * b + 48 * L * params)) / (24 * L)
        hs = head_size(C)
        for n_head in {max(1, math.floor(C / hs)), max(1, math.ceil(C / hs))}:
            config = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=n_head, n_embd=n_head * hs)
            score = abs(math.log(num_parameters(config) / params)) + DEPTH_WEIGHT * abs(math.log(L / depth))
            if best is None or score < best[0]:
                best = (score, config)
    config = best[1]
    if abs(num_parameters(config) / params - 1) > 0.25:
        raise PlanError(f"no GPT shape is within 25% of {params:,.0f} parameters with a vocabulary of "
                        f"{V:,} and context {T:,}: the nearest, {config.n_layer} layers of "
                        f"{config.n_embd} channels, has {num_parameters(config):,} (the embeddings alone "
                        f"take 2 x {V:,} per channel); ask for more --params or a smaller --vocab-size")
    return config


def _table_depth(params, V, T):
    """The continuous depth for a model of `params` in all: bisect on the non-embedding size."""
    lo, hi = 1.0, float(params)
    for _ in range(100):
        ne = math.sqrt(lo * hi)
        L = gpt3_depth(ne)
        C = math.sqrt(ne / (12 * L))
        lo, hi = (ne, hi) if ne + (2 * V + T + 2 * L + 1) * C < params else (lo, ne)
    return gpt3_depth(lo)


def gpt3_hyperparameters(params):
    """Peak learning rate and global batch (tokens) at `params`, interpolated from table 2.1."""
    sizes = [row[1] for row in GPT3]
    return {"lr": log_interp(params, sizes, [row[7] for row in GPT3]),
            "batch_tokens": log_interp(params, sizes, [row[6] for row in GPT3])}
