"""tinyllm's GPT against the same GPT in PyTorch (skipped when torch is not installed).

Same weights through the contract's state_dict names: logits and loss agree to
float32 round-off (rtol 1e-5: the two sum in different orders), gradients to
1e-4 relative (a backward pass compounds a few more roundings).
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from torch_gpt import from_tinyllm  # noqa: E402

from tinyllm.model import GPT, GPTConfig  # noqa: E402


def test_same_logits_loss_and_gradients_as_pytorch():
    model = GPT(GPTConfig(vocab_size=67, block_size=19, n_layer=2, n_head=3, n_embd=24, seed=4))
    reference = from_tinyllm(model)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 67, (3, 19))
    targets = rng.integers(0, 67, (3, 19))
    targets[1, 5:9] = -1
    logits, loss = model(idx, targets)
    loss.backward()
    ref_logits, ref_loss = reference(torch.from_numpy(idx), torch.from_numpy(targets))
    ref_loss.backward()
    np.testing.assert_allclose(logits.data, ref_logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5)
    ref_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, ref_grads[name].grad.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_the_pytorch_kv_cache_gives_tinyllms_cached_logits():
    from torch_gpt import TorchKVCache
    from tinyllm.generate import KVCache
    model = GPT(GPTConfig(vocab_size=67, block_size=19, n_layer=2, n_head=3, n_embd=24, seed=4))
    reference = from_tinyllm(model)
    idx = np.random.default_rng(1).integers(0, 67, (2, 12))
    ours, theirs = KVCache(model.config), TorchKVCache(model.config, 2)
    with torch.no_grad():
        for t0, t1 in ((0, 5), (5, 6), (6, 10), (10, 11)):   # prefill, a token, a chunk, a token
            want = reference(torch.from_numpy(idx[:, t0:t1]), cache=theirs)[0].numpy()
            got = model(idx[:, t0:t1], cache=ours)[0].data
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        full = reference(torch.from_numpy(idx[:, :11]))[0].numpy()
    np.testing.assert_allclose(got[:, -1], full[:, -1], rtol=1e-5, atol=1e-6)
