"""Bad input to the BPE Tokenizer: each case raises TokenizerError that names the problem.

Lone surrogates, empty text, a too small vocab_size, truncated or corrupt
files (.tiktoken and ours), duplicate ranks or tokens, unknown ids in decode,
special tokens that collide with ordinary tokens, and a few misuses of the
API. Never a crash, never a silent wrong answer. Read tinyllm/tokenizer.py.
"""
import base64

import pytest

from tinyllm.tokenizer import ENDOFTEXT, Tokenizer, TokenizerError

BYTES = {bytes([b]): b for b in range(256)}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("the cat sat on the mat; the hat " * 10, 270,
                           special_tokens=[ENDOFTEXT], progress=False)


def write_tiktoken(path, pairs):
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in pairs))
    return path


# ----------------------------------------------------------------------------- text

def test_lone_surrogate_in_encode(tok):
    with pytest.raises(TokenizerError, match=r"lone surrogate '\\ud800' at index 4"):
        tok.encode("abc \ud800 def")


def test_lone_surrogate_in_training():
    with pytest.raises(TokenizerError, match="lone surrogate"):
        Tokenizer.train("fine text \udcff", 300, progress=False)


def test_empty_training_text():
    for empty in ("", [], ["", ""]):
        with pytest.raises(TokenizerError, match="no text to train on"):
            Tokenizer.train(empty, 300, progress=False)


def test_vocab_size_too_small():
    with pytest.raises(TokenizerError, match="at least 258"):
        Tokenizer.train("some text", 257, special_tokens=["<a>", "<b>"], progress=False)
    with pytest.raises(TokenizerError, match="too small"):
        Tokenizer.train("some text", 100, progress=False)


def test_training_input_types(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("text", encoding="utf-8")
    with pytest.raises(TokenizerError, match="names a file.*pathlib.Path"):
        Tokenizer.train([str(path)], 300, progress=False)
    with pytest.raises(TokenizerError, match="not bytes"):
        Tokenizer.train(b"bytes", 300, progress=False)
    with pytest.raises(TokenizerError, match="item 0 is a int"):
        Tokenizer.train([3], 300, progress=False)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(TokenizerError, match="latin1.txt: not valid UTF-8"):
        Tokenizer.train([bad], 300, progress=False)
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.train([tmp_path / "missing.txt"], 300, progress=False)


def test_encode_takes_str(tok):
    with pytest.raises(TokenizerError, match="encode takes str, got bytes"):
        tok.encode(b"abc")


def test_unknown_special_token_names(tok):
    with pytest.raises(TokenizerError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TokenizerError, match="pass 'all', 'none'"):
        tok.encode("x", allowed_special="some")


# ----------------------------------------------------------------------------- ids

@pytest.mark.parametrize("bad", [270, 10**6, -1, "3", 2.5, None])
def test_unknown_id_in_decode(tok, bad):
    with pytest.raises(TokenizerError, match="is not a token of this tokenizer"):
        tok.decode([1, 2, bad])


def test_hole_in_the_id_space_is_unknown():
    tok = Tokenizer(BYTES, special_tokens={"<s>": 300})   # ids 256..299 are unused
    assert tok.vocab_size == 301 and tok.decode([300]) == "<s>"
    with pytest.raises(TokenizerError, match="id 299 is not a token"):
        tok.decode([299])


# ----------------------------------------------------------------------------- vocabularies

def test_special_token_id_collides_with_ordinary_token():
    with pytest.raises(TokenizerError, match=r"has id 97, which is already the ordinary token b'a'"):
        Tokenizer(BYTES, special_tokens={ENDOFTEXT: 97})


def test_special_token_bytes_collide_with_ordinary_token():
    with pytest.raises(TokenizerError, match="is also an ordinary token"):
        Tokenizer(BYTES, special_tokens={"a": 300})
    with pytest.raises(TokenizerError, match="share an id"):
        Tokenizer(BYTES, special_tokens={"<a>": 300, "<b>": 300})
    with pytest.raises(TokenizerError, match="distinct non-empty"):
        Tokenizer.train("text", 300, special_tokens=["<a>", "<a>"], progress=False)


def test_special_token_that_is_not_utf8():
    with pytest.raises(TokenizerError, match="valid UTF-8"):
        Tokenizer(BYTES, special_tokens={"<\ud800>": 300})


def test_duplicate_ranks_in_a_dict():
    ranks = dict(BYTES) | {b"ab": 97}
    with pytest.raises(TokenizerError, match="share rank 97"):
        Tokenizer(ranks)


def test_missing_single_byte_and_bad_ranks():
    ranks = dict(BYTES)
    del ranks[b"\xff"]
    with pytest.raises(TokenizerError, match="lacks the single byte 0xff"):
        Tokenizer(ranks)
    with pytest.raises(TokenizerError, match="ranks are ints"):
        Tokenizer(dict(BYTES) | {b"ab": -5})
    with pytest.raises(TokenizerError, match="does not compile"):
        Tokenizer(BYTES, pattern="(unclosed")


# ----------------------------------------------------------------------------- .tiktoken files

def test_tiktoken_truncated_mid_line(tmp_path):
    path = write_tiktoken(tmp_path / "v.tiktoken", [(t, r) for t, r in BYTES.items()])
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\n", len(data) // 2) + 3])   # a line cut after 2 chars
    with pytest.raises(TokenizerError, match=r"line \d+: expected '<base64 token> <rank>'"):
        Tokenizer.from_tiktoken(path)


def test_tiktoken_corrupt(tmp_path):
    path = tmp_path / "v.tiktoken"
    for content, message in [(b"!!!! 0\n", "expected '<base64"),
                             (b"YQ== zero\n", "expected '<base64"),
                             (b"YQ== 0 extra\n", "expected '<base64"),
                             (b"", "no tokens"),
                             (b"\x00\xff\xfe binary", "expected '<base64")]:
        path.write_bytes(content)
        with pytest.raises(TokenizerError, match=message):
            Tokenizer.from_tiktoken(path)


def test_tiktoken_truncated_at_a_line_end_lacks_bytes(tmp_path):
    path = write_tiktoken(tmp_path / "v.tiktoken", list(BYTES.items())[:100])
    with pytest.raises(TokenizerError, match="lacks the single byte"):
        Tokenizer.from_tiktoken(path)
    with pytest.raises(TokenizerError, match="sha256"):
        Tokenizer.from_tiktoken(path, sha256="223921b7" + "0" * 56)


def test_tiktoken_duplicate_token_and_rank(tmp_path):
    pairs = list(BYTES.items())
    path = write_tiktoken(tmp_path / "v.tiktoken", pairs + [(b"a", 300)])
    with pytest.raises(TokenizerError, match=r"token b'a' is given twice \(ranks 97 and 300\)"):
        Tokenizer.from_tiktoken(path)
    write_tiktoken(path, pairs + [(b"ab", 97)])
    with pytest.raises(TokenizerError, match="rank 97 is given twice"):
        Tokenizer.from_tiktoken(path)


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.from_tiktoken(tmp_path / "nope.tiktoken")
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.load(tmp_path / "nope.bpe")


# ----------------------------------------------------------------------------- our format

@pytest.fixture
def saved(tok, tmp_path):
    path = tmp_path / "v.bpe"
    tok.save(path)
    return path


def edit(path, fn):
    path.write_text(fn(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def test_ours_truncated(saved):
    text = saved.read_text(encoding="utf-8")
    edit(saved, lambda t: t[:len(t) * 2 // 3])
    with pytest.raises(TokenizerError, match=r"promises 269 token lines but \d+ follow|line \d+"):
        Tokenizer.load(saved)
    saved.write_text(text.split("\ntokens ")[0], encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokens line is missing"):
        Tokenizer.load(saved)


def test_ours_corrupt_lines(saved):
    text = saved.read_text(encoding="utf-8")
    for old, new, message in [("\n256 ", "\n256 9999 ", "names token 9999|expected"),
                              ("\n97 61", "\n97 zz", r"expected '<id> <hex bytes>'"),
                              ("\n98 62", "\n97 62", "rank 97 is given twice"),
                              ("\n98 62", "\n98 61", r"token b'a' is given twice"),
                              ("\npattern ", "\npatern ", "cannot read"),
                              ('special "<|endoftext|>" 269', 'special "<|endoftext|>" 97',
                               "already the ordinary token")]:
        saved.write_text(text.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(TokenizerError, match=message):
            Tokenizer.load(saved)


def test_ours_wrong_magic(saved, tmp_path):
    edit(saved, lambda t: t.replace("tinyllm-bpe 1", "tinyllm-bpe 7", 1))
    with pytest.raises(TokenizerError, match="does not read"):
        Tokenizer.load(saved)
    tik = write_tiktoken(tmp_path / "v.tiktoken", BYTES.items())
    with pytest.raises(TokenizerError, match="looks like a .tiktoken"):
        Tokenizer.load(tik)
    other = tmp_path / "x.txt"
    other.write_text("hello\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not a tinyllm BPE file"):
        Tokenizer.load(other)


def test_from_dict_garbage(tok):
    with pytest.raises(TokenizerError, match="not a BPE to_dict"):
        Tokenizer.from_dict({"type": "bpe"})
    d = tok.to_dict()
    d["tokens"] = d["tokens"].replace("\n97 61", "\n97 98", 1)
    with pytest.raises(TokenizerError, match="given twice"):
        Tokenizer.from_dict(d)


def test_error_is_a_value_error():
    assert issubclass(TokenizerError, ValueError)   # the CLI and the trainer catch ValueError
