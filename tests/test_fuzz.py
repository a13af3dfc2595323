"""Fuzzing every parser of outside input: only the project's own errors come out, and no
input makes one allocate far beyond its size or run for long.

Parsers: the safetensors header and metadata (and a model checkpoint's config and
tokenizer fields), the .bpe and .tiktoken vocabulary files, the JSONL readers (prepare's
records, the training log), and the train command's flags. Inputs are random mutations
of valid files plus random JSON, so they reach past the first check. Memory is measured
with tracemalloc (NumPy reports its buffers to it); time by hypothesis's deadline, set
wide for a loaded two-core machine.
"""
import json
import os
import tempfile
import tracemalloc
import types

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from tinyllm.checkpoint import load_model, save_model  # noqa: E402
from tinyllm.cli.train import config_from_args  # noqa: E402
from tinyllm.curate.sources import RawDocument, _json_document  # noqa: E402
from tinyllm.errors import CheckpointError, DataError, OutputFolderError, TokenizerError  # noqa: E402
from tinyllm.model import GPT, preset  # noqa: E402
from tinyllm.safetensors import load_safetensors, save_safetensors  # noqa: E402
from tinyllm.tokenizer import ByteTokenizer, Tokenizer  # noqa: E402
from tinyllm.tokenizer import format as bpe_format  # noqa: E402
from tinyllm.train import Trainer  # noqa: E402

FUZZ = settings(max_examples=100, deadline=5000, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)
# nesting past Python's recursion limit: json.loads raises RecursionError, not ValueError
deep = st.integers(1, 120_000).map(lambda n: "[" * n + "]" * n)
json_texts = st.one_of(json_values.map(json.dumps), deep)


def mutations(seed):
    """Random edits of a valid input: flips, cuts, insertions, repeats."""
    def edit(data, ops):
        data = bytearray(data)
        for kind, where, value in ops:
            at = where % (len(data) + 1)
            if kind == 0 and data:
                data[at % len(data)] ^= value or 1
            elif kind == 1:
                del data[at:at + value]
            elif kind == 2:
                data[at:at] = bytes([value]) * (value % 7 + 1)
            else:
                data[at:at] = data[at:at + 64] * (value % 4)
        return bytes(data)
    op = st.tuples(st.integers(0, 3), st.integers(0, 2**31), st.integers(0, 255))
    return st.builds(edit, st.just(seed), st.lists(op, min_size=1, max_size=6))


def within_memory(fn, input_size, *allowed):
    """Run fn; only `allowed` errors may come out, and its peak allocation is bounded."""
    tracemalloc.start()
    try:
        fn()
    except allowed:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 20 * input_size + (8 << 20), f"{peak:,} bytes for {input_size:,} of input"


def written(data, suffix):
    f = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    f.write(data)
    f.close()
    return f.name


def _valid_checkpoint():
    path = written(b"", ".safetensors")
    save_model(path, GPT(preset("tiny", n_layer=1)), ByteTokenizer(), 1, "run")
    with open(path, "rb") as f:
        data = f.read()
    parts = load_safetensors(path)
    os.remove(path)
    return data, parts


CHECKPOINT, CHECKPOINT_PARTS = _valid_checkpoint()
SMALL_TENSORS = written(b"", ".safetensors")
save_safetensors(SMALL_TENSORS, {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                 "b": np.zeros(3, np.int64)}, {"k": "v"})
with open(SMALL_TENSORS, "rb") as _f:
    SMALL = _f.read()
os.remove(SMALL_TENSORS)


def with_header(text):
    header = text.encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


@FUZZ
@given(st.one_of(mutations(SMALL), mutations(CHECKPOINT),
                 deep.map(lambda d: with_header('{"a": ' + d + "}")),
                 json_texts.map(lambda t: with_header('{"__metadata__": ' + t + "}"))))
def test_safetensors_files(data):
    path = written(data, ".safetensors")
    try:
        within_memory(lambda: load_safetensors(path), len(data), CheckpointError)
        within_memory(lambda: load_model(path), len(data), CheckpointError)
    finally:
        os.remove(path)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=4), json_texts,
       st.sampled_from(["config", "tokenizer", "step", "both"]))
def test_checkpoint_metadata(config, text, field):
    tensors, meta = CHECKPOINT_PARTS
    if field == "both":   # a config near the real one reaches the shape checks
        meta = {**meta, "config": json.dumps({**preset("tiny", n_layer=1).to_dict(), **config}),
                "tokenizer": text}
    else:
        meta = {**meta, field: text}
    path = written(b"", ".safetensors")
    save_safetensors(path, tensors, meta)
    try:
        within_memory(lambda: load_model(path), len(CHECKPOINT), CheckpointError)
    finally:
        os.remove(path)


def _valid_bpe():
    tok = Tokenizer.train("hello world, hello there " * 20, 270, progress=False)
    return bpe_format.dumps(tok.pattern, tok.special_tokens, tok.mergeable_ranks()).encode()


BPE = _valid_bpe()


@FUZZ
@given(mutations(BPE))
def test_bpe_files(data):
    def parse():
        pattern, specials, ranks = bpe_format.loads(data.decode("utf-8", "replace"), "fuzz.bpe")
        Tokenizer(ranks, pattern, specials)
    within_memory(parse, len(data), TokenizerError)


TIKTOKEN = b"".join(b"%s %d\n" % (__import__("base64").b64encode(bytes([b])), b) for b in range(256))


@FUZZ
@given(mutations(TIKTOKEN))
def test_tiktoken_files(data):
    path = written(data, ".tiktoken")
    try:
        within_memory(lambda: Tokenizer.from_tiktoken(path), len(data), TokenizerError)
    finally:
        os.remove(path)


@FUZZ
@given(st.one_of(st.binary(max_size=200), json_texts.map(str.encode),
                 mutations(b'{"text": "a document \\u00e9 \\ud83d\\ude00"}')))
def test_jsonl_records(line):
    doc = _json_document(line)
    assert isinstance(doc, RawDocument) and (doc.text is None) == (doc.problem is not None)
    if doc.text is not None:
        doc.text.encode("utf-8")      # whatever is kept can be tokenized


LOG = b"".join(b'{"step": %d, "loss": 1.5, "lr": 0.001}\n' % i for i in range(1, 6))


@FUZZ
@given(st.one_of(mutations(LOG), deep.map(lambda d: LOG + d.encode() + b"\n" + LOG)))
def test_training_log(data):
    path = written(data, ".jsonl")
    fake = types.SimpleNamespace(log_path=__import__("pathlib").Path(path), print=lambda *a: None)
    try:
        within_memory(lambda: Trainer._read_log(fake), len(data), CheckpointError)
    finally:
        os.remove(path)


FLAGS = ["--lr", "--min-lr", "--max-steps", "--seed", "--dropout", "--batch-size", "--vocab-size",
         "--grad-clip", "--val-fraction", "--preset", "--n-embd", "--n-head", "--prompt",
         "--eval-interval", "--warmup-steps", "--tokenizer", "--sample-tokens"]
values = st.one_of(st.sampled_from(["0", "-1", "1e999", "nan", "inf", "-inf", "", "1", "0.5",
                                    "99999999999999999999", "tiny", "x"]), st.text(max_size=8))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FLAGS), values), max_size=4))
def test_train_flags(pairs):
    argv = ["--out", tempfile.gettempdir() + "/tinyllm-fuzz-unused"]
    for flag, value in pairs:
        argv.append(f"{flag}={value}")
    try:
        config_from_args(argv)
    except SystemExit as e:           # argparse: a value of the wrong type
        assert e.code == 2
    except (ValueError, CheckpointError, DataError, OutputFolderError):
        pass
