"""Files from outside (checkpoints, training states, .jsonl inputs) that are damaged or hostile:
each ends in the project's own error naming the file and the field, before a large
allocation, or (for prepare's inputs) is counted under a reason while the run goes on."""
import json

import numpy as np
import pytest

from tinyllm.checkpoint import contract_shapes, load_model, read_model_metadata, save_model
from tinyllm.cli.prepare import main as prepare_main
from tinyllm.errors import CheckpointError
from tinyllm.model import GPT, GPTConfig, preset
from tinyllm.run import saved_config
from tinyllm.safetensors import load_safetensors, read_metadata, save_safetensors
from tinyllm.tokenizer import ByteTokenizer

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_model(path, GPT(preset("tiny")), ByteTokenizer(), 3, "run")
    return path


def rewrite_metadata(path, **changes):
    tensors, meta = load_safetensors(path)
    save_safetensors(path, tensors, {**meta, **changes})


def test_a_deeply_nested_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "deep.safetensors"
    header = ('{"a": ' + DEEP + "}").encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="deep.safetensors"):
        read_metadata(path)


@pytest.mark.parametrize("field", ["config", "tokenizer"])
def test_deeply_nested_metadata_is_a_checkpoint_error(ckpt, field):
    rewrite_metadata(ckpt, **{field: DEEP})
    with pytest.raises(CheckpointError, match="ckpt.safetensors"):
        read_model_metadata(ckpt)


@pytest.mark.parametrize("change", [{"norm_eps": "x"}, {"dropout": "x"}, {"seed": -1},
                                    {"n_layer": "2"}, {"extra": 1}])
def test_a_config_of_wrong_types_is_a_checkpoint_error(ckpt, change):
    config = {**preset("tiny").to_dict(), **change}
    rewrite_metadata(ckpt, config=json.dumps(config))
    with pytest.raises(CheckpointError, match="ckpt.safetensors"):
        read_model_metadata(ckpt)


@pytest.mark.parametrize("claim", [{"vocab_size": 10**9}, {"n_embd": 2**16, "n_head": 1},
                                   {"n_layer": 10**9}, {"block_size": 17}])
def test_a_config_that_does_not_match_the_weights_is_refused_before_building(ckpt, claim):
    """Before: GPT(config) allocated what the config claimed (10**9 x 16 floats) first."""
    rewrite_metadata(ckpt, config=json.dumps({**preset("tiny").to_dict(), **claim}))
    with pytest.raises(CheckpointError, match="ckpt.safetensors.*do not match|ckpt.safetensors.*claims"):
        load_model(ckpt)


@pytest.mark.parametrize("config", [preset("tiny"), GPTConfig(vocab_size=7, block_size=5, n_layer=3,
                                                              n_head=2, n_embd=6)])
def test_contract_shapes_are_the_models_shapes(config):
    assert contract_shapes(config) == {n: a.shape for n, a in GPT(config).state_dict().items()}


def train_state(tmp_path, metadata):
    out = tmp_path / "run"
    out.mkdir()
    save_safetensors(out / "train_state.safetensors", {"x": np.zeros(1, np.float32)}, metadata)
    return out


@pytest.mark.parametrize("metadata", [{}, {"state": DEEP}, {"state": "[]"}, {"state": "{}"},
                                      {"state": json.dumps({"train_config": {"lr": 1, "bogus": 2}})}],
                         ids=["no-state", "deep", "list", "no-config", "unknown-field"])
def test_a_damaged_train_state_names_the_file(tmp_path, metadata):
    out = train_state(tmp_path, {"run_id": "r", **metadata})
    with pytest.raises(CheckpointError, match="train_state.safetensors"):
        saved_config(out)


def test_prepare_counts_bad_jsonl_records_and_goes_on(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog and then runs far away home".split()
    docs = [" ".join(rng.choice(words, 60)) + "." for _ in range(6)]
    lines = [json.dumps({"text": d}) for d in docs[:5]]
    lines += ['{"text": "lone \\ud800 surrogate ' + docs[5] + '"}', '{"text": ' + DEEP + "}"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    for tokenizer in ("bytes", "bpe"):
        out = tmp_path / tokenizer
        assert prepare_main(["--input", str(src), "--out", str(out), "--tokenizer", tokenizer,
                             "--vocab-size", "300", "--no-progress"]) == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["documents"]["dropped"]["lone_surrogate"] == 1
        assert report["documents"]["dropped"]["bad_json"] == 1


# -- messages that name the flag and the fix (item 11) ------------------------------

def test_prepare_into_a_file_is_a_clean_error(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("some text here " * 20)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert prepare_main(["--input", str(src), "--out", str(blocker), "--tokenizer", "bytes",
                         "--no-progress"]) == 1
    assert "file" in capsys.readouterr().err


def test_tokenizer_train_into_a_folder_fails_before_training_and_leaves_nothing(tmp_path, capsys):
    from tinyllm.cli.tokenizer import main as tokenizer_main
    src = tmp_path / "in.txt"
    src.write_text("hello world " * 50)
    folder = tmp_path / "vocab"
    folder.mkdir()
    assert tokenizer_main(["train", "--data", str(src), "--vocab-size", "260", "--out", str(folder)]) == 1
    assert "folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "vocab"]


def test_atomic_write_over_a_folder_leaves_no_temp_file(tmp_path):
    from tinyllm.atomic import atomic_write
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "d") as f:
            f.write(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize("flags, named", [(["--num-samples", "0"], "--num-samples"),
                                          (["--prompt", ""], "--prompt"),
                                          (["--temperature", "nan"], "temperature")])
def test_sample_flags_are_checked_by_name(ckpt, flags, named, capsys):
    from tinyllm.cli.sample import main as sample_main
    try:
        code = sample_main(["--ckpt", str(ckpt), "--max-new-tokens", "3", *flags])
    except SystemExit as e:   # argparse's own error exit
        code = e.code
    assert code in (1, 2)
    assert named in capsys.readouterr().err


# -- control characters on a terminal (item 12) -------------------------------------

class FakeTerminal:
    def isatty(self):
        return True


def test_control_characters_are_escaped_on_a_terminal_only():
    from tinyllm.terminal import shown
    text = "red \x1b[31m\rbell\x07 del\x7f c1\x9b ok\n\ttab é"
    escaped = shown(text, FakeTerminal())
    assert escaped == "red \\x1b[31m\\x0dbell\\x07 del\\x7f c1\\x9b ok\n\ttab é"
    assert shown(text, FakeTerminal(), "never") == text
    assert shown(text, open(__file__)) == text                  # a file keeps the exact text
    assert shown(text, open(__file__), "always") == escaped


def test_sample_escape_flag(ckpt, capsys):
    from tinyllm.cli.sample import main as sample_main
    model, tok, _ = load_model(ckpt)
    model.lm_head.weight.data[:] = 0          # all logits equal: argmax picks id 0, the NUL byte
    save_model(ckpt, model, tok, 3, "run")
    assert sample_main(["--ckpt", str(ckpt), "--max-new-tokens", "20", "--temperature", "0",
                        "--escape", "always", "--prompt", "a\x1b"]) == 0
    out = capsys.readouterr().out
    assert "\x00" not in out and "\x1b" not in out
    assert out.startswith("a\\x1b" + "\\x00" * 20)


@pytest.mark.parametrize("flag", ["--lang-threshold", "--dedup-threshold", "--val-fraction",
                                  "--min-alpha-fraction", "--max-mean-word-length"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_prepare_float_flags_refuse_inf_and_nan(tmp_path, flag, value, capsys):
    src = tmp_path / "in.txt"
    src.write_text("some text here " * 20)
    assert prepare_main(["--input", str(src), "--out", str(tmp_path / "o"), "--tokenizer", "bytes",
                         "--no-progress", f"{flag}={value}"]) == 1
    assert flag in capsys.readouterr().err


def test_an_unwritable_out_is_a_clean_error(tmp_path, capsys):
    """/sys refuses new folders even to root, as a read-only filesystem does."""
    from tinyllm.cli.train import main as train_main
    src = tmp_path / "in.txt"
    src.write_text("some text here " * 200)
    out = "/sys/tinyllm-test-out"
    assert train_main(["--data", str(src), "--out", out, "--preset", "tiny", "--tokenizer", "bytes",
                       "--max-steps", "1"]) == 1
    assert out in capsys.readouterr().err
    assert prepare_main(["--input", str(src), "--out", out, "--tokenizer", "bytes", "--no-progress"]) == 1
    assert out in capsys.readouterr().err
