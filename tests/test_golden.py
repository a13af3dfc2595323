"""Golden test: a tiny fixed-seed model reproduces its stored loss curve.

The numbers below were produced by this very code; any change to the
initialisation, the ops, the kernels, the optimizer or the schedule moves
them. Tolerance 1e-4 relative: float32 sums may be ordered differently by
another BLAS or CPU, and ten optimizer steps compound that round-off, but a
real change in the maths moves the losses by far more.
"""
import numpy as np

from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW, clip_grad_norm, cosine_lr, param_groups

GOLDEN = [3.4677340984344482, 3.4347991943359375, 3.3381588459014893, 3.374176025390625,
          3.2772223949432373, 3.2127230167388916, 3.233694076538086, 3.0445363521575928,
          3.048672914505005, 3.072303056716919]


def loss_curve(steps=10):
    model = GPT(GPTConfig(vocab_size=32, block_size=12, n_layer=2, n_head=2, n_embd=16, seed=7))
    opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=1e-2)
    rng = np.random.default_rng(11)
    # a learnable sequence: each token is the previous one plus 3, mod 32, with noise
    starts = rng.integers(0, 32, (steps, 4, 1))
    data = (starts + 3 * np.arange(13)) % 32                       # (steps, B, T + 1)
    data = np.where(rng.random(data.shape) < 0.1, rng.integers(0, 32, data.shape), data)
    losses = []
    for step in range(steps):
        opt.set_lr(cosine_lr(step, 1e-2, 2, steps, 1e-3))
        _, loss = model(data[step, :, :-1], data[step, :, 1:])
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_loss_curve_matches_the_stored_one():
    np.testing.assert_allclose(loss_curve(), GOLDEN, rtol=1e-4)
