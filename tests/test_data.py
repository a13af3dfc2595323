"""Tests for tinyllm.data: token files, the batch loader, corpora and the byte tokenizer.

Everything runs on small files under tmp_path, except the stdlib listing and
split (which only list and hash paths). Not a benchmark: no test asserts a time.
Read tinyllm/data/__init__.py for the pipeline these tests walk through.
"""
import json
import os
import pathlib
import sysconfig

import numpy as np
import pytest

from tinyllm.data import (BatchLoader, DataError, TokenWriter, load_corpus, prepare_token_files,
                          read_header, read_text, read_tokens, split_files, stdlib_files,
                          write_tokens)
from tinyllm.tokenizer import ByteTokenizer
from tinyllm.tokenizer import from_dict as tokenizer_from_dict

# ----------------------------------------------------------------------------- token files


@pytest.mark.parametrize("vocab_size, dtype", [(256, "uint16"), (65536, "uint16"),
                                               (100_000, "uint32")])
def test_token_file_round_trip(tmp_path, vocab_size, dtype):
    path = tmp_path / "t.bin"
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=1001)  # (N,)
    tokens[-1] = vocab_size - 1  # the largest id must survive the narrow dtype
    write_tokens(path, tokens, vocab_size)
    header = read_header(path)
    assert header == {"version": 1, "dtype": dtype, "count": 1001, "vocab_size": vocab_size}
    back = read_tokens(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (1001,)
    np.testing.assert_array_equal(back, tokens)
    assert os.path.getsize(path) == 32 + 1001 * np.dtype(dtype).itemsize


def test_empty_token_file_reads_as_empty_array(tmp_path):
    write_tokens(tmp_path / "e.bin", [], 256)
    assert read_tokens(tmp_path / "e.bin").shape == (0,)


def test_token_writer_streams_chunks(tmp_path):
    with TokenWriter(tmp_path / "s.bin", 1000) as w:
        w.write([1, 2, 3])
        w.write(np.array([999], dtype=np.int64))
        w.write([])
    assert read_tokens(tmp_path / "s.bin").tolist() == [1, 2, 3, 999]


def test_missing_token_file(tmp_path):
    with pytest.raises(DataError, match="no such token file"):
        read_header(tmp_path / "nope.bin")


def test_file_shorter_than_header(tmp_path):
    (tmp_path / "short.bin").write_bytes(b"TLLMTOKS\x01\x00")
    with pytest.raises(DataError, match="truncated.*shorter than the 32-byte header"):
        read_tokens(tmp_path / "short.bin")


def test_truncated_tokens(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(100), 256)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"truncated or corrupt: expected 232 bytes .* found 222; "
                                        r"delete it and re-run"):
        read_tokens(path)


def test_corrupt_size(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(100), 256)
    with open(path, "ab") as f:
        f.write(b"\0\0\0")
    with pytest.raises(DataError, match="expected 232 bytes .* found 235"):
        read_header(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(10), 256)
    path.write_bytes(b"NOTTOKEN" + path.read_bytes()[8:])
    with pytest.raises(DataError, match="not a tinyllm token file"):
        read_tokens(path)


def test_bad_version_and_itemsize(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(10), 256)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[:8]) + (7).to_bytes(4, "little") + bytes(raw[12:]))
    with pytest.raises(DataError, match="unsupported token file version 7"):
        read_header(path)
    path.write_bytes(bytes(raw[:12]) + (3).to_bytes(4, "little") + bytes(raw[16:]))
    with pytest.raises(DataError, match="bad itemsize 3"):
        read_header(path)


def test_id_out_of_vocab_names_id_and_position(tmp_path):
    with pytest.raises(DataError, match="token id 300 at position 2 .*vocab_size=256"):
        write_tokens(tmp_path / "t.bin", [1, 2, 300, 4], 256)
    with TokenWriter(tmp_path / "u.bin", 256) as w:
        w.write([5, 6])
        with pytest.raises(DataError, match="token id -1 at position 3"):
            w.write([7, -1])
    assert not (tmp_path / "t.bin").exists()


def test_atomic_write(tmp_path):
    path = tmp_path / "t.bin"
    write_tokens(path, np.arange(50), 256)
    assert sorted(os.listdir(tmp_path)) == ["t.bin"]  # no .tmp left behind
    with pytest.raises(RuntimeError):
        with TokenWriter(tmp_path / "fail.bin", 256) as w:
            w.write(np.arange(50))
            raise RuntimeError("simulated crash while tokenizing")
    assert sorted(os.listdir(tmp_path)) == ["t.bin"]  # neither fail.bin nor fail.bin.tmp

# ----------------------------------------------------------------------------- BatchLoader


def test_loader_shapes_and_shift():
    tokens = np.arange(1000, dtype=np.uint16)  # token i is i, so windows are easy to check
    x, y = BatchLoader(tokens, batch_size=4, block_size=16).next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(y[:, -1], x[:, -1] + 1)
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(16))  # contiguous windows


def test_loader_reaches_both_ends_without_overrunning():
    tokens = np.arange(12, dtype=np.uint16)  # block 10: only starts 0 and 1 are valid
    loader = BatchLoader(tokens, batch_size=64, block_size=10)
    x, y = loader.next_batch()
    assert set(x[:, 0].tolist()) == {0, 1} and y.max() == 11


def test_loader_deterministic_from_seed():
    tokens = np.arange(5000, dtype=np.uint16)
    a, b, c = (BatchLoader(tokens, 8, 32, seed=s) for s in (1, 1, 2))
    xa, xb, xc = a.next_batch()[0], b.next_batch()[0], c.next_batch()[0]
    np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(xa, xc)


def test_loader_state_dict_resumes_same_batches():
    tokens = np.arange(5000, dtype=np.uint16)
    loader = BatchLoader(tokens, 8, 32, seed=3)
    for _ in range(5):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint would store it
    expected = [loader.next_batch() for _ in range(3)]
    resumed = BatchLoader(tokens, 8, 32, seed=999)
    resumed.load_state_dict(state)
    for want, (x, y) in zip(expected, (resumed.next_batch() for _ in range(3))):
        np.testing.assert_array_equal(want[0], x)
        np.testing.assert_array_equal(want[1], y)


def test_loader_rejects_short_data_and_bad_sizes():
    with pytest.raises(DataError, match=r"the val split has 8 tokens but block_size \+ 1 = 9"):
        BatchLoader(np.arange(8), 2, 8, split="val")
    BatchLoader(np.arange(9), 2, 8)  # exactly block_size + 1 is enough
    with pytest.raises(DataError, match="batch_size=0"):
        BatchLoader(np.arange(100), 0, 8)
    with pytest.raises(DataError, match="block_size=0"):
        BatchLoader(np.arange(100), 2, 0)
    with pytest.raises(DataError, match="not from BatchLoader.state_dict"):
        BatchLoader(np.arange(100), 2, 8).load_state_dict({"nope": 1})

# ----------------------------------------------------------------------------- corpus


def test_stdlib_files_finds_library_without_tests():
    files = stdlib_files()
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 300 and files == sorted(files)
    assert root / "os.py" in files
    for p in files:
        folders = p.relative_to(root).parts[:-1]
        assert not any(f.startswith("test") or f in ("idle_test", "site-packages", "__pycache__")
                       for f in folders), p


def test_split_files_deterministic_and_disjoint():
    paths = [pathlib.Path(f"/data/doc{i:03d}.txt") for i in range(200)]
    train, val = split_files(paths, 0.1, root="/data")
    assert (train, val) == split_files(list(reversed(paths)), 0.1, root="/data")
    assert not set(train) & set(val) and set(train) | set(val) == set(paths)
    assert 5 <= len(val) <= 40  # ~20 expected
    # The split depends on the path relative to root, not where the folder lives.
    moved = split_files([pathlib.Path("/elsewhere") / p.name for p in paths], 0.1,
                        root="/elsewhere")
    assert [p.name for p in moved[1]] == [p.name for p in val]


def test_split_files_both_sides_nonempty():
    for n in (2, 3):
        paths = [pathlib.Path(f"f{i}") for i in range(n)]
        for fraction in (0.001, 0.999):
            train, val = split_files(paths, fraction)
            assert train and val and len(train) + len(val) == n


def test_load_corpus_missing_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing.txt'}: no such file"):
        load_corpus(tmp_path / "missing.txt")


def test_load_corpus_empty_file_and_folders(tmp_path):
    (tmp_path / "empty.txt").write_text(" \n\t")
    with pytest.raises(DataError, match="empty.txt: the file is empty or whitespace-only"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "nothing" / ".hidden.txt").write_text("hidden")
    with pytest.raises(DataError, match="nothing: the folder has no text files"):
        load_corpus(tmp_path / "nothing")
    (tmp_path / "blank").mkdir()
    for name in ("a.txt", "b.md"):
        (tmp_path / "blank" / name).write_text("\n")
    with pytest.raises(DataError, match="blank: all 2 text files are empty"):
        load_corpus(tmp_path / "blank")


def test_non_utf8_file_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes(b"abc\xff\xfe")
    with pytest.raises(DataError, match=r"latin.txt: not valid UTF-8 \(byte 0xff at byte "
                                        r"offset 3\).*iconv"):
        load_corpus(bad)
    with pytest.raises(DataError, match="offset 3"):
        read_text(bad)
    # In a folder the bad file is found while streaming and still fails loudly
    # (named to sort last, so load_corpus's emptiness check never reads it).
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(30):
        (folder / f"ok{i}.txt").write_text(f"document {i}\n")
    (folder / "zz_bad.txt").write_bytes(b"abc\xff\xfe")
    corpus = load_corpus(folder, val_fraction=0.5)
    with pytest.raises(DataError, match="zz_bad.txt: not valid UTF-8 .*offset 3"):
        list(corpus.iter_train()) + list(corpus.iter_val())


def test_read_text_empty_file(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    assert read_text(tmp_path / "e.txt") == ""


def test_single_file_split_proportions(tmp_path):
    text = "héllo wörld, " * 1000  # non-ASCII: the cut is by character, never inside one
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(tmp_path / "one.txt", val_fraction=0.1)
    train, val = "".join(corpus.iter_train()), "".join(corpus.iter_val())
    assert train + val == text
    assert len(val) == round(0.1 * len(text))
    assert corpus.name == "one"


def test_folder_with_one_file_splits_by_text(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "only.md").write_text("x" * 100)
    corpus = load_corpus(tmp_path / "d", val_fraction=0.2)
    assert ["".join(corpus.iter_train()), "".join(corpus.iter_val())] == ["x" * 80, "x" * 20]


def test_corpus_fingerprint_changes_with_data(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"doc {i}")
    before = load_corpus(folder).fingerprint()
    assert load_corpus(folder).fingerprint() == before
    (folder / "3.txt").write_text("a longer doc 3")
    assert load_corpus(folder).fingerprint() != before

# ----------------------------------------------------------------------------- end to end


def test_prepare_token_files_builds_reuses_and_round_trips(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i in range(20):
        (folder / ("sub" if i % 2 else "") / f"d{i}.txt").write_text(f"doc {i}: ünïcode ✓\n")
    (folder / "skip.bin").write_bytes(b"\xff")  # not a text suffix: never read
    corpus, tok = load_corpus(folder, val_fraction=0.2), ByteTokenizer()
    train_path, val_path = prepare_token_files(corpus, tok, tmp_path / "cache", progress=False)
    assert train_path.name.startswith("docs-bytes-") and train_path.name.endswith("-train.bin")
    for path, texts in ((train_path, corpus.iter_train()), (val_path, corpus.iter_val())):
        assert tok.decode(read_tokens(path)) == "".join(texts)
    mtimes = [os.stat(p).st_mtime_ns for p in (train_path, val_path)]
    again = prepare_token_files(load_corpus(folder, val_fraction=0.2), tok, tmp_path / "cache",
                                progress=False)
    assert again == (train_path, val_path)
    assert [os.stat(p).st_mtime_ns for p in again] == mtimes
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([train_path.name, val_path.name])


def test_prepare_token_files_appends_eot_and_rejects_empty_train(tmp_path):
    class EotTokenizer(ByteTokenizer):
        name, vocab_size, eot_token = "eot", 257, 256

    (tmp_path / "a.txt").write_text("abcdefghij")
    train_path, _ = prepare_token_files(load_corpus(tmp_path / "a.txt", 0.5), EotTokenizer(),
                                        tmp_path / "c", progress=False)
    assert read_tokens(train_path).tolist() == list(b"abcde") + [256]

    class EmptyCorpus:
        name, train_docs, val_docs = "empty", [], []
        fingerprint = staticmethod(lambda: "0")
        iter_train = iter_val = staticmethod(lambda: iter([]))

    with pytest.raises(DataError, match="empty/train: 0 tokens"):
        prepare_token_files(EmptyCorpus(), ByteTokenizer(), tmp_path / "c2", progress=False)
    assert os.listdir(tmp_path / "c2") == []

# ----------------------------------------------------------------------------- ByteTokenizer


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "naïve café — 日本語 🙂\n\ttabs"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and tok.vocab_size == 256 and tok.name == "bytes"
    arr = tok.encode_array(text)
    assert arr.dtype == np.uint16 and arr.tolist() == ids
    assert tok.decode(ids) == text and tok.decode(arr) == text
    assert tok.decode([]) == ""


def test_byte_tokenizer_invalid_bytes_and_bad_ids():
    tok = ByteTokenizer()
    assert tok.decode([104, 105, 0xFF]) == "hi\ufffd"
    assert tok.decode(list("é".encode())[:1]) == "\ufffd"  # half a character
    with pytest.raises(DataError, match="got id 300"):
        tok.decode([1, 300])


def test_tokenizer_dict_and_fingerprint():
    tok = tokenizer_from_dict(ByteTokenizer().to_dict())
    assert isinstance(tok, ByteTokenizer)
    assert tok.fingerprint() == ByteTokenizer().fingerprint() and len(tok.fingerprint()) == 16
    with pytest.raises(DataError, match=r"'type' must be one of \[.*'bytes'"):
        tokenizer_from_dict({"type": "sentencepiece"})
