"""Tests for the BPE Tokenizer: training, encode/decode, special tokens, files, command line.

Everything here runs on small texts without optional packages. Exactness
against tiktoken is tests/test_tokenizer_tiktoken.py, bad input
tests/test_tokenizer_errors.py, C against Python tests/test_c_bpe.py.
Read tinyllm/tokenizer.py for what is tested.
"""
import json
import pathlib
import random

import numpy as np
import pytest

from tinyllm.tokenizer import train as bpe_train
from tinyllm.cli.tokenizer import main as cli
from tinyllm.tokenizer.split import Splitter
from tinyllm.tokenizer import from_dict as tokenizer_from_dict
from tinyllm.tokenizer import ENDOFTEXT, PATTERNS, Tokenizer, TokenizerError

_rng = random.Random(0)
SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
          "All:\nSpeak, speak.\n    def f(x):  # 1234567 \u00e9t\u00e9 \U0001F600\n\n") * 5 + " ".join(
    "".join(_rng.choice("etaoinshrdlucm") for _ in range(_rng.randint(1, 9))) for _ in range(2000))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(SAMPLE, 400, special_tokens=[ENDOFTEXT, "<|pad|>"], progress=False)


# ----------------------------------------------------------------------------- training

def test_train_sizes_ids_and_names(tok):
    assert tok.vocab_size == 400 and tok.name == "bpe400"
    assert tok.special_tokens == {ENDOFTEXT: 398, "<|pad|>": 399} and tok.eot_token == 398
    ranks = tok.mergeable_ranks()
    assert len(ranks) == 398 and sorted(ranks.values()) == list(range(398))
    assert all(ranks[bytes([b])] == b for b in range(256))   # byte b is token b
    assert tok.pattern == PATTERNS["gpt4"]


def test_train_classic_example_and_tie_breaking():
    # "aaabdaaabac": (a,a) has 4; then (aa,a) and (a,b) tie at 2 and the smaller ids win.
    tok = Tokenizer.train("aaabdaaabac", 259, progress=False)
    ranks = tok.mergeable_ranks()
    assert [ranks.get(t) for t in (b"aa", b"ab", b"aaab")] == [256, 257, 258]
    # all pairs count 1: the smallest (left id, right id) is (32 " ", 99 "c")
    assert Tokenizer.train("ab cd", 257, progress=False).decode_bytes([256]) == b" c"


def test_train_is_deterministic_and_independent_of_document_order():
    docs = [SAMPLE[:300], SAMPLE[300:900], "zebra zebra zebras"]
    a = Tokenizer.train(docs, 320, progress=False)
    b = Tokenizer.train(docs[::-1], 320, progress=False)
    assert a.mergeable_ranks() == b.mergeable_ranks() and a.fingerprint() == b.fingerprint()


def test_train_stops_early_when_every_chunk_is_one_token():
    tok = Tokenizer.train("abc abc", 1000, special_tokens=[ENDOFTEXT], progress=False)
    assert tok.vocab_size == 256 + 3 + 1          # "ab", "abc", " abc"... then nothing to merge
    assert tok.encode("abc abc") == [257, 258] and tok.eot_token == 259


def test_train_on_single_byte_chunks_makes_no_merges():
    for use_c in (None, False):
        tok = Tokenizer.train("a\nb\nc", 300, progress=False, use_c=use_c)
        assert tok.vocab_size == 256 and tok.encode("a\nb") == [97, 10, 98]


def test_train_reads_files_in_blocks_like_one_text(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_bytes((SAMPLE * 3 + "\r\n  trailing   \n\n").encode())
    with open(path, encoding="utf-8", newline="") as f:   # newline="": keep the \r\n
        text = f.read()
    whole = Tokenizer.train(text, 500, progress=False)
    monkeypatch.setattr(bpe_train, "BLOCK_CHARS", 37)   # many block boundaries
    for pattern in ("gpt4", "gpt2"):
        pat = Splitter(pattern)
        assert bpe_train.count_chunks([path], pat, progress=False) == \
            bpe_train.count_chunks([text], pat, progress=False)
    assert Tokenizer.train([path], 500, progress=False).mergeable_ranks() == whole.mergeable_ranks()


def test_train_progress_goes_to_stderr(capsys):
    Tokenizer.train(SAMPLE, 300)
    out, err = capsys.readouterr()
    assert out == "" and "counting chunks" in err and "44/44 merges" in err


def test_train_with_custom_pattern_and_gpt2():
    words = Tokenizer.train(SAMPLE, 300, pattern=r"\S+|\s+", progress=False)
    assert words.encode(SAMPLE) and words.decode(words.encode(SAMPLE)) == SAMPLE
    gpt2 = Tokenizer.train(SAMPLE, 300, pattern="gpt2", progress=False)
    assert gpt2.pattern == PATTERNS["gpt2"] and gpt2.decode(gpt2.encode(SAMPLE)) == SAMPLE


# ----------------------------------------------------------------------------- encode / decode

def test_round_trip_and_compression(tok):
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == SAMPLE and len(ids) < len(SAMPLE.encode()) * 0.7
    assert tok.decode_bytes(ids) == SAMPLE.encode()
    assert tok.encode("") == [] and tok.decode([]) == "" and tok.decode_bytes([]) == b""


def test_decode_replaces_invalid_utf8(tok):
    half = list("\u00e9".encode())[:1]
    assert tok.decode(half) == "\ufffd" and tok.decode_bytes(half) == b"\xc3"


def test_encode_batch_and_array(tok):
    texts = ["hello there", "", SAMPLE[:50]]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    arr = tok.encode_array(SAMPLE)
    assert arr.dtype == np.uint16 and arr.tolist() == tok.encode(SAMPLE)
    assert tok.decode(arr) == SAMPLE   # arrays decode too


def test_cache_is_bounded_and_invisible(tok, monkeypatch):
    monkeypatch.setattr("tinyllm.tokenizer.bpe.CACHE_CHUNKS", 5)
    fresh = Tokenizer(tok.mergeable_ranks(), special_tokens=tok.special_tokens)
    assert fresh.encode(SAMPLE) == tok.encode(SAMPLE)
    assert fresh.encode(SAMPLE[:40]) == tok.encode(SAMPLE[:40]) and len(fresh._cache) <= 20


def test_special_tokens_follow_tiktoken(tok):
    text = f"a{ENDOFTEXT}b<|pad|>"
    with pytest.raises(TokenizerError, match=r"special token '<\|endoftext\|>' at index 1"):
        tok.encode(text)                                  # default: none allowed, all disallowed
    with pytest.raises(TokenizerError, match="pad"):
        tok.encode(text, allowed_special={ENDOFTEXT})     # <|pad|> is still disallowed
    a, b = tok.encode("a"), tok.encode("b")
    pad_as_text = tok.encode("<|pad|>", allowed_special="none")
    assert tok.encode(text, allowed_special="all") == a + [398] + b + [399]
    assert tok.encode(text, allowed_special={ENDOFTEXT}, disallowed_special=()) == \
        a + [398] + tok.encode("b<|pad|>", "none")
    assert tok.encode(text, allowed_special="none") == tok.encode(text, set(), ())
    assert 398 not in tok.encode(text, allowed_special="none") and pad_as_text != [399]
    assert tok.encode_array(text).tolist() == tok.encode(text, "none")   # trainer path: plain text
    assert tok.decode(tok.encode(text, "all")) == text


def test_overlapping_special_tokens_match_longest_first():
    tok = Tokenizer.train("x", 260, special_tokens=["<a>", "<a>b"], progress=False)
    assert tok.encode("<a>b<a>", allowed_special="all") == [257, 256]


# ----------------------------------------------------------------------------- files and dicts

def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "v.bpe"
    tok.save(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("tinyllm-bpe 1\n") and f'special "{ENDOFTEXT}" 398' in text
    assert '256 ' in text and "#" in text                  # merges with readable comments
    back = Tokenizer.load(path)
    assert back.mergeable_ranks() == tok.mergeable_ranks()
    assert back.special_tokens == tok.special_tokens and back.pattern == tok.pattern
    assert back.fingerprint() == tok.fingerprint() and back.encode(SAMPLE) == tok.encode(SAMPLE)


def test_tiktoken_file_round_trip(tok, tmp_path):
    path = tmp_path / "v.tiktoken"
    tok.to_tiktoken(path)
    first = path.read_bytes().split(b"\n")[0]
    assert first == b"AA== 0"                              # base64 of byte 0, rank 0
    back = Tokenizer.from_tiktoken(path, pattern="gpt4", special_tokens=tok.special_tokens)
    assert back.mergeable_ranks() == tok.mergeable_ranks() and back.fingerprint() == tok.fingerprint()


def test_to_dict_rebuilds_exactly_through_the_data_package(tok):
    d = json.loads(json.dumps(tok.to_dict()))
    assert d["type"] == "bpe"
    back = tokenizer_from_dict(d)
    assert isinstance(back, Tokenizer) and back.fingerprint() == tok.fingerprint()
    assert back.encode(SAMPLE) == tok.encode(SAMPLE) and back.eot_token == tok.eot_token


def test_fingerprint_changes_with_the_vocabulary(tok):
    other = Tokenizer(tok.mergeable_ranks(), "gpt2", tok.special_tokens)
    fewer = Tokenizer(tok.mergeable_ranks(), "gpt4", {ENDOFTEXT: 398})
    prints = {tok.fingerprint(), other.fingerprint(), fewer.fingerprint()}
    assert len(prints) == 3 and all(len(p) == 16 for p in prints)


# ----------------------------------------------------------------------------- command line

def test_cli_train_encode_decode(tmp_path, capsys):
    data, out = tmp_path / "corpus.txt", tmp_path / "v.bpe"
    data.write_text(SAMPLE, encoding="utf-8")
    assert cli(["train", "--data", str(data), "--vocab-size", "300", "--out", str(out)]) == 0
    assert Tokenizer.load(out).eot_token == 299
    capsys.readouterr()
    assert cli(["encode", "--tokenizer", str(out), "hello world"]) == 0
    ids = capsys.readouterr().out.split()
    assert cli(["decode", "--tokenizer", str(out), *ids]) == 0
    assert capsys.readouterr().out == "hello world"
    assert cli(["encode", "--tokenizer", str(out), "--allowed-special", "all", ENDOFTEXT]) == 0
    assert capsys.readouterr().out.split() == ["299"]


def test_cli_folder_and_errors(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"{i}.txt").write_text(SAMPLE[i * 100:], encoding="utf-8")
    out = tmp_path / "v.bpe"
    assert cli(["train", "--data", str(tmp_path / "docs"), "--vocab-size", "280",
                "--out", str(out), "--no-special"]) == 0
    assert Tokenizer.load(out).special_tokens == {}
    assert cli(["encode", "--tokenizer", str(out), ENDOFTEXT]) == 0     # no specials: plain text
    assert cli(["decode", "--tokenizer", str(out), "99999"]) == 1
    assert "not a token" in capsys.readouterr().err
    assert cli(["train", "--vocab-size", "10", "--out", str(out), "--data", str(out)]) == 1


@pytest.mark.parametrize("command", ["train", "encode", "decode"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli([command, "--help"])
    assert e.value.code == 0 and "usage: tokenizer " + command in capsys.readouterr().out


def test_cli_without_command_prints_usage(capsys):
    assert cli([]) == 2 and "tokenizer train" in capsys.readouterr().err
    assert cli(["--help"]) == 0


def test_tokenizer_main_is_the_cli(capsys):
    from tinyllm.cli import main
    assert main(["tokenizer"]) == 2


def test_pathlib_items_are_files(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    by_path = Tokenizer.train([pathlib.Path(path)], 300, progress=False)
    assert by_path.mergeable_ranks() == Tokenizer.train(SAMPLE, 300, progress=False).mergeable_ranks()
