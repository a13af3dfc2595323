"""The tokenizer against hostile input: long runs of one character stay fast, and vocabularies
with unused ids (GPT-4's ranks plus <|endoftext|> at 100257 leave 100256 free) are kept, but
an id that is not a token is never sampled."""
import time

import numpy as np
import pytest

from tinyllm.checkpoint import save_model
from tinyllm.cli.sample import main as sample_main
from tinyllm.sampling import Sampling, sample
from tinyllm.model import GPT, preset
from tinyllm.tokenizer import ByteTokenizer, Tokenizer
from tinyllm.tokenizer.encode import merge_chunk


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# -- item 5: linear or n log n, whatever the text --------------------------------

@pytest.mark.parametrize("use_c", [None, False])
def test_a_long_run_of_one_character_trains_saves_and_loads_fast(tmp_path, use_c):
    """20 KB of 'a' took two minutes to save (a quadratic merge per token); now well under
    the bound, which is generous for a loaded two-core machine."""
    start = time.perf_counter()
    tok = Tokenizer.train("a" * 20_000, 300, progress=False, use_c=use_c)
    assert max(map(len, tok.mergeable_ranks())) >= 10_000   # the long tokens the test is about
    tok.save(tmp_path / "a.bpe")
    again = Tokenizer.load(tmp_path / "a.bpe", use_c=use_c)
    rebuilt = Tokenizer.from_dict(again.to_dict(), use_c=use_c)
    text = "a" * 50_000 + "-" * 20_000
    assert rebuilt.decode(rebuilt.encode(text)) == text
    assert rebuilt.fingerprint() == tok.fingerprint()
    assert time.perf_counter() - start < 20


def test_merge_chunk_is_not_quadratic():
    ranks = {bytes([b]): b for b in range(256)}
    small, t_small = timed(merge_chunk, b"-" * 20_000, ranks)
    large, t_large = timed(merge_chunk, b"-" * 160_000, ranks)
    assert len(large) == 160_000 and len(small) == 20_000
    assert t_large < 8 * 4 * t_small + 0.5     # 8x the input: far from 64x


def test_parts_found_without_known_merges_are_valid(tmp_path):
    """A vocabulary given as bare ranks (a .tiktoken file) has its merges found again."""
    tok = Tokenizer.train("a" * 5_000 + " abab cdcd" * 50, 300, progress=False)
    bare = Tokenizer(tok.mergeable_ranks(), special_tokens=tok.special_tokens)
    assert Tokenizer.from_dict(bare.to_dict()).mergeable_ranks() == tok.mergeable_ranks()


def test_the_checkpoint_does_not_rebuild_the_tokenizer_text_every_save(monkeypatch):
    from tinyllm.tokenizer import format as bpe_format
    tok = Tokenizer.train("hello world " * 50, 280, progress=False)
    calls = []
    original = bpe_format.token_lines
    monkeypatch.setattr(bpe_format, "token_lines", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert tok.to_dict() == tok.to_dict()
    assert len(calls) <= 1


# -- item 6: unused ids are never sampled -----------------------------------------

def gap_tokenizer():
    """256 bytes and <|endoftext|> at 300: ids 256..299 are no token."""
    return Tokenizer({bytes([b]): b for b in range(256)}, special_tokens={"<|endoftext|>": 300})


def flat_model(vocab_size):
    """All logits equal: every id is as likely as any other, unused ones included."""
    model = GPT(preset("tiny", vocab_size=vocab_size))
    model.transformer.ln_f.weight.data[:] = 0
    return model


def test_the_tokenizer_names_its_unused_ids():
    assert gap_tokenizer().unused_ids() == list(range(256, 300))
    assert ByteTokenizer().unused_ids() == []


def test_sample_never_picks_an_excluded_id():
    rng = np.random.default_rng(0)
    logits = np.zeros((64, 10))
    logits[:, 3] = 50.0                     # by far the likeliest, but not a token
    for temperature, top_k, top_p in ((0, None, None), (1.0, None, None), (1.0, 2, None), (1.0, None, 0.5)):
        ids = sample(logits, Sampling(temperature, top_k, top_p, exclude=[3]), rng)
        assert 3 not in ids


def test_generation_with_a_gap_in_the_vocabulary_decodes(tmp_path, capsys):
    tok = gap_tokenizer()
    model = flat_model(tok.vocab_size)
    out = model.generate(np.zeros((4, 1), np.int64), 60, seed=0, exclude=tok.unused_ids())
    tok.decode(out.reshape(-1).tolist())
    save_model(tmp_path / "ckpt.safetensors", model, tok, 0, "run")
    assert sample_main(["--ckpt", str(tmp_path / "ckpt.safetensors"), "--max-new-tokens", "60",
                        "--num-samples", "4", "--backend", "numpy"]) == 0


def test_a_small_bpe_file_cannot_claim_a_huge_vocabulary(tmp_path):
    """Each merge line may double a token: 40 lines would make a 2**40-byte token."""
    from tinyllm.errors import TokenizerError
    lines = ["tinyllm-bpe 1", 'pattern "\\\\w+"', "tokens 296"]
    lines += [f"{b} {b:02x}" for b in range(256)]
    lines += ["256 97 97"] + [f"{r} {r - 1} {r - 1}" for r in range(257, 296)]
    path = tmp_path / "bomb.bpe"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerError, match="bomb.bpe line"):
        Tokenizer.load(path)
