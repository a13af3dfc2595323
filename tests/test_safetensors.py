"""Tests for tinyllm/safetensors.py: the safetensors format, its validation, and atomic saves.

Not tested here: which names and metadata a model checkpoint carries (see the
trainer's tests). Read tinyllm/safetensors.py for the format description.
"""
import json
import os
import struct

import numpy as np
import pytest

from tinyllm import safetensors
from tinyllm.errors import CheckpointError
from tinyllm.safetensors import load_safetensors, read_metadata, save_safetensors

ALL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
              np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def sample_tensors():
    rng = np.random.default_rng(0)
    tensors = {f"t.{np.dtype(d).name}": (rng.normal(size=(3, 5)) * 50).astype(d) for d in ALL_DTYPES}
    tensors["scalar"] = np.array(3.5, dtype=np.float32)   # 0-d: shape [], one element
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)  # zero bytes
    tensors["transposed"] = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not C-contiguous
    tensors["big_endian"] = np.arange(5, dtype=">i4")
    return tensors


def write_raw(path, header, data=b"", pad=True):
    """A file from a hand-made header dict, so tests control every byte."""
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


# ----------------------------------------------------------------------------- round trip and layout

def test_round_trip_all_dtypes_and_metadata(tmp_path):
    tensors, meta = sample_tensors(), {"step": "100", "config": json.dumps({"n_layer": 2}), "ü": "ß"}
    path = tmp_path / "ckpt.safetensors"
    save_safetensors(path, tensors, meta)
    loaded, loaded_meta = load_safetensors(path)
    assert loaded_meta == meta
    assert read_metadata(path) == meta
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype.newbyteorder("="), name
        assert loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous, name


def test_no_tensors_and_no_metadata(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_safetensors(path, {})
    assert load_safetensors(path) == ({}, {})
    assert path.stat().st_size == 16  # 8-byte length + "{}" padded to 8


def test_layout_matches_the_spec(tmp_path):
    tensors = {"a": np.ones((2, 3), np.float32), "flag": np.array([True, False]),
               "b": np.arange(4, dtype=np.int64), "c": np.zeros(3, np.float16)}
    path = tmp_path / "x.safetensors"
    save_safetensors(path, tensors, {"k": "v"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0, "header is padded so the data buffer starts 8-byte aligned"
    text = raw[8:8 + n].decode("utf-8")
    assert text.startswith("{") and text.rstrip(" ").endswith("}"), "padding is spaces only"
    header = json.loads(text)
    assert header.pop("__metadata__") == {"k": "v"}
    data = raw[8 + n:]
    # Widest dtype first, then the given order; offsets tile the buffer with no gaps.
    assert list(header) == ["b", "a", "c", "flag"]
    expected = 0
    for name, info in header.items():
        begin, end = info["data_offsets"]
        assert begin == expected and begin % np.dtype(tensors[name].dtype).itemsize == 0
        assert info["shape"] == list(tensors[name].shape)
        assert data[begin:end] == tensors[name].astype(tensors[name].dtype.newbyteorder("<")).tobytes()
        expected = end
    assert expected == len(data)
    assert {i["dtype"] for i in header.values()} == {"F32", "BOOL", "I64", "F16"}


def test_bf16_loads_as_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # all exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = write_raw(tmp_path / "bf16.safetensors",
                     {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}, raw)
    tensors, _ = load_safetensors(path)
    assert tensors["w"].dtype == np.float32
    np.testing.assert_array_equal(tensors["w"], values.reshape(2, 2))


def test_reads_unpadded_header_and_offset_order_differs_from_key_order(tmp_path):
    data = np.arange(2, dtype="<f4").tobytes() + np.arange(3, dtype="<i2").tobytes()
    header = {"second": {"dtype": "I16", "shape": [3], "data_offsets": [8, 14]},
              "first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    tensors, meta = load_safetensors(write_raw(tmp_path / "x.safetensors", header, data, pad=False))
    np.testing.assert_array_equal(tensors["second"], [0, 1, 2])
    np.testing.assert_array_equal(tensors["first"], [0, 1])
    assert meta == {}


def test_interop_with_reference_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = {k: np.ascontiguousarray(v) for k, v in sample_tensors().items() if k != "big_endian"}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, tensors, {"a": "b"})
    for name, array in st.load_file(str(ours)).items():
        np.testing.assert_array_equal(array, tensors[name])
    theirs = tmp_path / "theirs.safetensors"
    st.save_file(tensors, str(theirs), metadata={"a": "b"})
    loaded, meta = load_safetensors(theirs)
    assert meta == {"a": "b"}
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
    # One tensor per itemsize, so both writers must choose the same order: identical bytes.
    simple = {"a": np.ones((2, 3), np.float32), "b": np.arange(3), "c": np.array([True])}
    save_safetensors(ours, simple, {"k": "v"})
    assert ours.read_bytes() == st.save(simple, metadata={"k": "v"})


# ----------------------------------------------------------------------------- bad input to save

@pytest.mark.parametrize("tensors, words", [
    ({"x": np.zeros(2, np.complex64)}, ["'x'", "complex64", "astype"]),
    ({"x": [1, 2]}, ["'x'", "list", "np.asarray"]),
    ({3: np.zeros(2)}, ["3", "name"]),
    ({"__metadata__": np.zeros(2)}, ["__metadata__"]),
    ([np.zeros(2)], ["dict"]),
])
def test_save_rejects_bad_tensors(tmp_path, tensors, words):
    with pytest.raises(CheckpointError) as e:
        save_safetensors(tmp_path / "x.safetensors", tensors)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata", [{"step": 100}, {1: "a"}, ["a"]])
def test_save_rejects_non_string_metadata(tmp_path, metadata):
    with pytest.raises(CheckpointError, match="metadata must be a dict of str -> str"):
        save_safetensors(tmp_path / "x.safetensors", {"w": np.zeros(2)}, metadata)


def test_save_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt.safetensors"
    save_safetensors(path, {"w": np.ones(3)})
    np.testing.assert_array_equal(load_safetensors(path)[0]["w"], np.ones(3))


# ----------------------------------------------------------------------------- atomicity

@pytest.fixture
def old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_safetensors(path, {"w": np.arange(4, dtype=np.float32)}, {"step": "1"})
    return path, path.read_bytes()


def test_failure_midway_through_the_tensors_keeps_the_old_file(old_checkpoint, monkeypatch):
    path, before = old_checkpoint
    real, calls = safetensors._tensor_bytes, []

    def fail_on_second(array):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(array)

    monkeypatch.setattr(safetensors, "_tensor_bytes", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors(path, {"a": np.ones(1000), "b": np.ones(1000), "c": np.ones(3)}, {"step": "2"})
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name], "no .tmp file is left behind"


def test_failure_in_fsync_keeps_the_old_file(old_checkpoint, monkeypatch):
    path, before = old_checkpoint

    def broken_fsync(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(safetensors.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="I/O error"):
        save_safetensors(path, {"w": np.zeros(4, np.float32)})
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_bad_tensor_after_good_ones_keeps_the_old_file(old_checkpoint):
    path, before = old_checkpoint
    with pytest.raises(CheckpointError, match="'bad'"):
        save_safetensors(path, {"good": np.ones(3), "bad": np.array(["text"])})
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_overwrite_replaces_the_old_file(old_checkpoint):
    path, _ = old_checkpoint
    save_safetensors(path, {"v": np.ones(2, np.int8)}, {"step": "2"})
    tensors, meta = load_safetensors(path)
    assert list(tensors) == ["v"] and meta == {"step": "2"}


# ----------------------------------------------------------------------------- corrupt files

def assert_refused(path, *words):
    """load and read_metadata both raise CheckpointError naming the file and the problem."""
    for read in (load_safetensors, read_metadata):
        with pytest.raises(CheckpointError) as e:
            read(path)
        message = str(e.value)
        assert str(path) in message, message
        assert all(w in message for w in words), message


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_safetensors(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                            "b": np.arange(5, dtype=np.int16)}, {"step": "7"})
    return path


def test_missing_file_and_directory(tmp_path):
    assert_refused(tmp_path / "nope.safetensors", "does not exist")
    assert_refused(tmp_path, "is a directory")


def test_truncated_anywhere_is_refused(good_file, tmp_path):
    raw = good_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    for cut in [0, 3, 7, 8, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 5, len(raw) - 1]:
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(raw[:cut])
        assert_refused(path)
    path = tmp_path / "cut_in_data.safetensors"
    path.write_bytes(raw[:-1])
    assert_refused(path, "truncated", f"header says {len(raw) - 8 - n:,} data bytes", "earlier checkpoint")
    path.write_bytes(raw[:5])
    assert_refused(path, "shorter than the 8-byte")


def test_trailing_bytes_are_refused(good_file):
    good_file.write_bytes(good_file.read_bytes() + b"\0" * 3)
    assert_refused(good_file, "3 bytes after the last tensor")


@pytest.mark.parametrize("length", [2**63, 100_000_001, 10**6])
def test_absurd_header_length(good_file, length):
    raw = good_file.read_bytes()
    good_file.write_bytes(struct.pack("<Q", length) + raw[8:])
    assert_refused(good_file, "impossible header length")


@pytest.mark.parametrize("garbage", [b"\xff\xfe\xfd", b"not json", b"[1, 2]"])
def test_garbage_header(good_file, garbage):
    raw = bytearray(good_file.read_bytes())
    raw[8:8 + len(garbage)] = garbage
    good_file.write_bytes(bytes(raw))
    assert_refused(good_file, "damaged header")


def test_header_must_be_a_json_object(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 8) + b"{}      ")
    assert load_safetensors(path) == ({}, {})
    path.write_bytes(struct.pack("<Q", 8) + b"[]      ")
    assert_refused(path, "damaged header", "does not start with '{'")


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data_len, words", [
    ({"w": {"dtype": "F32", "shape": [2]}}, 8, ["'w'", "data_offsets"]),
    ({"w": [1, 2]}, 8, ["'w'", "must be an object"]),
    ({"w": {**F32_2, "dtype": "F8_E4M3"}}, 8, ["'F8_E4M3'", "cannot read"]),
    ({"w": {**F32_2, "shape": [3]}}, 8, ["'w'", "12 bytes", "span 8"]),
    ({"w": {**F32_2, "shape": [-2]}}, 8, ["'w'", "shape"]),
    ({"w": {**F32_2, "shape": "2"}}, 8, ["'w'", "shape"]),
    ({"w": {**F32_2, "data_offsets": [8, 0]}}, 8, ["'w'", "data_offsets"]),
    ({"w": {**F32_2, "data_offsets": [0, 8, 9]}}, 8, ["'w'", "data_offsets"]),
    ({"a": F32_2, "b": {**F32_2, "data_offsets": [4, 12]}}, 12, ["'b'", "overlaps"]),
    ({"a": F32_2, "b": {**F32_2, "data_offsets": [12, 20]}}, 20, ["'b'", "gap"]),
    ({"w": {**F32_2, "data_offsets": [4, 12]}}, 12, ["'w'", "gap"]),
    ({"w": {**F32_2, "data_offsets": [100, 108]}}, 8, ["'w'"]),
    ({"w": F32_2}, 4, ["truncated", "header says 8 data bytes, file has 4"]),
    ({"w": F32_2, "__metadata__": {"step": 3}}, 8, ["__metadata__"]),
    ({"w": F32_2, "__metadata__": "x"}, 8, ["__metadata__"]),
])
def test_inconsistent_header(tmp_path, header, data_len, words):
    path = write_raw(tmp_path / "bad.safetensors", header, b"\0" * data_len)
    assert_refused(path, *words)


def test_duplicate_names_are_refused(tmp_path):
    text = (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
            b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0\0")
    assert_refused(path, "duplicate keys ['w']")


def test_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
