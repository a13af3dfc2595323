"""Tests for tinyllm/data/shards.py: fixed-size shards, resuming mid-document, open_prepared.

Manifests here are written by hand, so each damaged case is exactly one
defect; tests/test_data_prepare.py checks what the prepare command writes.
"""
import json

import numpy as np
import pytest

from tinyllm.data import DataError
from tinyllm.tokenizer import ByteTokenizer
from tinyllm.data.shards import ShardWriter, is_prepared, open_prepared, read_manifest
from tinyllm.data.tokenfile import read_tokens, write_tokens

DOCS = [np.arange(n, dtype=np.uint32) % 256 for n in (5, 12, 1, 7, 20, 3)]  # 48 tokens


def _write_all(folder, shard_tokens, states, resume=None, docs=DOCS, stop_after=None):
    writer = ShardWriter(folder, "train", shard_tokens, 256, states.append, resume)
    for index, tokens in enumerate(docs):
        writer.write(index, tokens)
        if stop_after is not None and len(states) >= stop_after:
            writer.abort()
            return None
    return writer.close()


def test_shards_are_fixed_size_and_documents_cross_them(tmp_path):
    states = []
    shards = _write_all(tmp_path, 10, states)
    assert [s["tokens"] for s in shards] == [10, 10, 10, 10, 8]
    assert [s["file"] for s in shards][:2] == ["train_000000.bin", "train_000001.bin"]
    joined = np.concatenate([read_tokens(tmp_path / s["file"]) for s in shards])
    np.testing.assert_array_equal(joined, np.concatenate(DOCS))
    # after shard 1 (20 tokens): docs 0, 1, 2 (5 + 12 + 1 tokens) and the first 2 of doc 3
    assert states[1]["next_doc"] == 3 and states[1]["skip"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [s["file"] for s in shards]


@pytest.mark.parametrize("stop_after", [1, 2, 3, 4])
def test_resume_from_any_shard_gives_the_same_shards(tmp_path, stop_after):
    reference = tmp_path / "ref"
    reference.mkdir()
    want = _write_all(reference, 10, [])
    states = []
    assert _write_all(tmp_path, 10, states, stop_after=stop_after) is None
    assert not list(tmp_path.glob("*.tmp"))                         # abort dropped the partial shard
    got = _write_all(tmp_path, 10, [], resume=states[-1])
    assert got == want
    for shard in want:
        np.testing.assert_array_equal(read_tokens(tmp_path / shard["file"]),
                                      read_tokens(reference / shard["file"]))


def test_a_closed_split_stays_closed(tmp_path):
    states = []
    want = _write_all(tmp_path, 10, states)
    assert states[-1]["next_doc"] > len(DOCS)           # saved as done, with the last shard
    again = []
    assert _write_all(tmp_path, 10, again, resume=states[-1]) == want   # a crash before the manifest
    assert again == [] and sorted(p.name for p in tmp_path.iterdir()) == [s["file"] for s in want]
    exact = []
    (tmp_path / "exact").mkdir()
    _write_all(tmp_path / "exact", 16, exact)                   # 48 tokens: no partial shard
    assert [s["tokens"] for s in exact[-1]["shards"]] == [16, 16, 16]
    assert exact[-1]["next_doc"] > len(DOCS)


def _manifest(folder, fingerprint=None, shards=None, **extra):
    data = {"format": "tinyllm-prepared", "version": 1,
            "tokenizer": {"name": "bytes", "fingerprint": fingerprint or ByteTokenizer().fingerprint()},
            "shards": shards or {"train": [], "val": []}, **extra}
    (folder / "manifest.json").write_text(json.dumps(data))


def test_open_prepared_one_shard_is_a_memmap_several_are_joined(tmp_path):
    write_tokens(tmp_path / "train_000000.bin", np.arange(100) % 256, 256)
    write_tokens(tmp_path / "train_000001.bin", np.arange(50) % 256, 256)
    write_tokens(tmp_path / "val_000000.bin", np.arange(30), 256)
    _manifest(tmp_path, shards={"train": [{"file": "train_000000.bin", "tokens": 100},
                                          {"file": "train_000001.bin", "tokens": 50}],
                                "val": [{"file": "val_000000.bin", "tokens": 30}]})
    assert is_prepared(tmp_path) and not is_prepared(tmp_path / "nope")
    train, val = open_prepared(tmp_path, ByteTokenizer())
    assert train.shape == (150,) and val.shape == (30,)
    assert isinstance(val, np.memmap) and val.dtype == np.uint16
    np.testing.assert_array_equal(train[100:], np.arange(50))


def test_open_prepared_refuses_another_tokenizer(tmp_path):
    _manifest(tmp_path, fingerprint="0123456789abcdef")
    with pytest.raises(DataError, match="made by the tokenizer 'bytes' \\(fingerprint 0123456789abcdef"
                                        ".*prepare again with this one"):
        open_prepared(tmp_path, ByteTokenizer())
    _manifest(tmp_path, vocab_size=None)  # same fingerprint, another vocabulary size
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["tokenizer"]["vocab_size"] = 300
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="vocab_size 300\\), but training uses 'bytes'"):
        open_prepared(tmp_path, ByteTokenizer())


def test_open_prepared_bad_folders(tmp_path):
    with pytest.raises(DataError, match="no manifest.json.*not a finished prepared dataset"):
        open_prepared(tmp_path, ByteTokenizer())
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: unreadable or corrupt.*re-run"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a tinyllm prepare manifest"):
        read_manifest(tmp_path)
    _manifest(tmp_path, version=9)
    with pytest.raises(DataError, match="manifest version 9"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "tinyllm-prepared", "version": 1}')
    with pytest.raises(DataError, match="lacks its shard list"):
        read_manifest(tmp_path)


def test_open_prepared_damaged_shards(tmp_path):
    write_tokens(tmp_path / "train_000000.bin", np.arange(100) % 256, 256)
    _manifest(tmp_path, shards={"train": [{"file": "train_000000.bin", "tokens": 100}], "val": []})
    raw = (tmp_path / "train_000000.bin").read_bytes()
    (tmp_path / "train_000000.bin").write_bytes(raw[:-6])           # truncated
    with pytest.raises(DataError, match="truncated or corrupt"):
        open_prepared(tmp_path, ByteTokenizer())
    write_tokens(tmp_path / "train_000000.bin", np.arange(90) % 256, 256)  # another count
    with pytest.raises(DataError, match="holds 90 tokens.*manifest says 100.*re-run prepare"):
        open_prepared(tmp_path, ByteTokenizer())
    (tmp_path / "train_000000.bin").unlink()
    with pytest.raises(DataError, match="no such token file"):
        open_prepared(tmp_path, ByteTokenizer())
