"""Our ids equal tiktoken's: the real GPT-4 ranks, our own trained ranks, random Unicode.

tiktoken.Encoding is built offline from the same ranks and pattern (no
download). The ranks file is ../shared/data/cl100k_base.tiktoken next to the
repository; tests that need it or tiktoken skip with the reason. Texts:
tinyshakespeare, a sample of the Python standard library, and strings that
hypothesis draws from all of Unicode. Unassigned code points (category Cn in
this Python's unicodedata) are left out: the `regex` package may already know
characters newer than tiktoken's Rust regex does (regex 2026.5 has Unicode 17:
the digits U+11DE0..U+11DE9 group with digits there and not in tiktoken 0.14),
and such a character can split differently. Read tinyllm/tokenizer.py.
"""
import base64
import pathlib

import pytest

from tinyllm.data import stdlib_files
from tinyllm.tokenizer import ENDOFTEXT, PATTERNS, Tokenizer

tiktoken = pytest.importorskip("tiktoken", reason="pip install tiktoken to compare with it")
hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis for random strings")
from hypothesis import given, settings, strategies as st  # noqa: E402  (after the skip)

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
CL100K = DATA / "cl100k_base.tiktoken"
SHAKESPEARE = DATA / "tinyshakespeare.txt"
CL100K_SPECIALS = {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
needs_cl100k = pytest.mark.skipif(not CL100K.exists(), reason=f"{CL100K} is not there")


def tiktoken_ranks(path):
    """The .tiktoken file parsed here, independently of ours (and of tiktoken's download cache)."""
    lines = path.read_bytes().splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (ln.split() for ln in lines if ln)}


def encoding(ranks, pattern, specials):
    return tiktoken.Encoding(name="test", pat_str=PATTERNS.get(pattern, pattern),
                             mergeable_ranks=ranks, special_tokens=specials)


@pytest.fixture(scope="module")
def cl100k():
    if not CL100K.exists():
        pytest.skip(f"{CL100K} is not there")
    ranks = tiktoken_ranks(CL100K)
    ours = {p: Tokenizer.from_tiktoken(CL100K, p, CL100K_SPECIALS) for p in ("gpt4", "gpt2")}
    theirs = {p: encoding(ranks, p, CL100K_SPECIALS) for p in ("gpt4", "gpt2")}
    return ours, theirs


@pytest.fixture(scope="module")
def stdlib_text():
    files = stdlib_files()[::12]            # ~60 files of every kind, ~1 MB
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


@pytest.fixture(scope="module")
def trained():
    """A vocabulary of our own, trained on some stdlib sources with the gpt2 pattern."""
    docs = [f.read_text(encoding="utf-8", errors="replace") for f in stdlib_files()[5::40]]
    tok = Tokenizer.train(docs, 2000, pattern="gpt2", special_tokens=[ENDOFTEXT], progress=False)
    return tok, encoding(tok.mergeable_ranks(), tok.pattern, tok.special_tokens)


@needs_cl100k
def test_cl100k_file_loads_as_tiktoken_reads_it(cl100k):
    ours, _ = cl100k
    assert ours["gpt4"].mergeable_ranks() == tiktoken_ranks(CL100K)
    assert ours["gpt4"].vocab_size == 100277 and ours["gpt4"].eot_token == 100257


@needs_cl100k
@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not there")
def test_cl100k_shakespeare(cl100k):
    text = SHAKESPEARE.read_text(encoding="utf-8")
    # and with a non-ASCII word every ~10k characters: most blocks ASCII, some not (bpe_split.py)
    mixed = "".join(part + " café 中文 " for part in pieces(text, 10_000))
    ours, theirs = cl100k
    for p in ours:
        for t in (text, mixed):
            ids = ours[p].encode(t)
            assert ids == theirs[p].encode_ordinary(t), p
            assert ours[p].decode(ids) == t


def pieces(text, n):
    return [text[i:i + n] for i in range(0, len(text), n)]


@needs_cl100k
def test_cl100k_stdlib(cl100k, stdlib_text):
    ours, theirs = cl100k
    for p in ours:
        assert ours[p].encode(stdlib_text) == theirs[p].encode_ordinary(stdlib_text), p


@needs_cl100k
def test_cl100k_special_tokens(cl100k):
    ours, theirs = cl100k
    text = f"hi{ENDOFTEXT} there <|fim_prefix|>x<|endofprompt|>"
    for kw in [dict(allowed_special="all"), dict(allowed_special={ENDOFTEXT}, disallowed_special=()),
               dict(allowed_special=set(), disallowed_special=())]:
        assert ours["gpt4"].encode(text, **kw) == theirs["gpt4"].encode(text, **kw), kw
    with pytest.raises(ValueError):
        theirs["gpt4"].encode(text)
    with pytest.raises(ValueError):
        ours["gpt4"].encode(text)


def test_trained_vocabulary_matches_tiktoken(trained, stdlib_text):
    ours, theirs = trained
    assert ours.encode(stdlib_text) == theirs.encode_ordinary(stdlib_text)
    assert ours.encode(stdlib_text, "all") == theirs.encode(stdlib_text, allowed_special="all")


# Strings from all of Unicode, weighted towards what pre-tokenization treats specially:
# any assigned character, whitespace runs, digits, emoji, CJK, combining marks, contractions.
_NOT_DRAWN = ("Cs", "Cn")   # lone surrogates (no UTF-8) and unassigned code points (see the top)
_chars = st.one_of(
    st.characters(exclude_categories=_NOT_DRAWN),                    # all of (assigned) Unicode
    st.sampled_from(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2028\u3000"),     # whitespace, in runs
    st.sampled_from("0123456789\u0660\u0967\uff11"),                  # digits, some not ASCII
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF, exclude_categories=_NOT_DRAWN),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF, exclude_categories=_NOT_DRAWN),
    st.characters(min_codepoint=0x0300, max_codepoint=0x036F, exclude_categories=_NOT_DRAWN),
    st.sampled_from("'sdmtlvreSDMTLVRE"),                            # contractions
    st.characters(max_codepoint=0x7F),                               # ASCII
)
unicode_text = st.text(_chars, max_size=120)


@needs_cl100k
@settings(max_examples=300, deadline=None)
@given(text=unicode_text)
def test_cl100k_random_unicode(cl100k, text):
    ours, theirs = cl100k
    for p in ours:
        ids = ours[p].encode(text)
        assert ids == theirs[p].encode_ordinary(text), (p, text)
        assert ours[p].decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(text=unicode_text)
def test_trained_random_unicode_and_round_trip(trained, text):
    ours, theirs = trained
    ids = ours.encode(text)
    assert ids == theirs.encode_ordinary(text)
    assert ours.decode(ids) == text and ours.decode_bytes(ids) == text.encode("utf-8")
