"""examples/bench_generate.py's arithmetic, which decides what its "% roof" column means: the
last-level cache read from sysfs, and how many copies --from-memory decodes in turn so that the
weights come from memory. No test times anything (the script measures; BENCHMARKS.md records)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
import bench_generate as bg  # noqa: E402
from tinyllm.model import GPT, GPTConfig  # noqa: E402


def fake_cache(root, entries):
    for i, (level, size) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "size").write_text(f"{size}\n")


def test_last_level_cache_is_the_highest_levels_size(tmp_path):
    fake_cache(tmp_path, [(1, "48K"), (1, "64K"), (2, "2048K"), (3, "491520K")])
    assert bg.last_level_cache(str(tmp_path)) == 491520 * 1024
    other = tmp_path / "zen"
    other.mkdir()
    fake_cache(other, [(2, "1M"), (1, "32K")])
    assert bg.last_level_cache(str(other)) == 2 ** 20


def test_last_level_cache_is_none_where_sysfs_says_nothing(tmp_path):
    assert bg.last_level_cache(str(tmp_path)) is None
    fake_cache(tmp_path, [(3, "unknown")])
    assert bg.last_level_cache(str(tmp_path)) is None


def test_copies_from_memory_fill_twice_the_cache_and_no_more():
    for name, cache in (("15m", 480 * 2 ** 20), ("gpt2", 480 * 2 ** 20), ("bench", 32 * 2 ** 20)):
        config = GPTConfig(**bg.CONFIGS[name])
        weights = bg.bytes_per_step(config, 0, 0)
        n = bg.copies_from_memory(config, cache)
        assert n * weights >= 2 * cache > (n - 1) * weights, (name, n)
    assert bg.copies_from_memory(GPTConfig(**bg.CONFIGS["gpt2"]), None) == 1
    assert bg.copies_from_memory(GPTConfig(**bg.CONFIGS["gpt2"]), 2 ** 20) == 1


def test_run_tinyllm_decodes_a_list_of_models_in_turn():
    config = GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16)
    models = [GPT(config).eval() for _ in range(3)]
    prompt = np.random.default_rng(0).integers(0, 64, (2, 5))
    pp, tg = bg.run_tinyllm(models, prompt, 4)
    assert np.isfinite(pp) and np.isfinite(tg) and pp > 0 and tg > 0
