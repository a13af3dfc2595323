"""`python -m tinyllm eval` (tinyllm/evaluate.py): it scores what training and fine-tuning logged
(val loss and bits per byte, the answer loss through an adapter, a classifier's accuracy), and
bad input is a clear error."""
import json

import pytest

from tests.finetune_helpers import instructions, labelled, tiny_base, write_jsonl
from tests.test_train import read_log, text_file, tiny_config  # noqa: F401 (text_file: a fixture)
from tinyllm.cli.eval import main
from tinyllm.finetune.run import FinetuneConfig, build_finetune_trainer, finish
from tinyllm.run import build_trainer


def numbers(line):
    """The floats of an output line, in order."""
    return [float(w.strip("(),%")) for w in line.split() if w.strip("(),%").replace(".", "", 1).isdigit()]


def finetune(kind, tmp_path, rows, **kw):
    base = tiny_base(tmp_path)[0]
    data, val = write_jsonl(tmp_path / "d.jsonl", rows[:30]), write_jsonl(tmp_path / "v.jsonl", rows[30:])
    trainer = build_finetune_trainer(kind, FinetuneConfig(
        base=str(base), data=str(data), val=str(val), out=str(tmp_path / kind), max_steps=4,
        eval_interval=4, batch_size=4, lr=1e-2, **kw))
    trainer.train()
    finish(trainer)
    return base, val, read_log(tmp_path / kind)[-1]


def test_text_eval_scores_the_val_loss_training_logged(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    build_trainer(tiny_config(text_file, out, max_steps=4)).train()
    last = read_log(out)[-1]
    capsys.readouterr()
    assert main(["--ckpt", str(out / "ckpt.safetensors"), "--data", str(text_file),
                 "--batches", "2", "--batch-size", "4"]) == 0
    loss, bpb = numbers(capsys.readouterr().out)[:2]
    assert loss == pytest.approx(last["val_loss"], abs=1e-4)
    assert bpb == pytest.approx(last["val_bpb"], abs=1e-4)


def test_answer_loss_through_an_adapter_is_the_logged_val_loss(tmp_path, capsys):
    base, val, last = finetune("sft", tmp_path, instructions(), lora=True, lora_r=4)
    capsys.readouterr()
    assert main(["--ckpt", str(base), "--adapter", str(tmp_path / "sft"), "--data", str(val),
                 "--batch-size", "4"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{base}: answer loss") and "10 examples" in line
    assert numbers(line)[0] == pytest.approx(last["val_loss"], abs=1e-4)


def test_classifier_accuracy_is_the_logged_one(tmp_path, capsys):
    _, val, last = finetune("classify", tmp_path, labelled())
    ckpt = str(tmp_path / "classify" / "ckpt.safetensors")
    capsys.readouterr()
    assert main(["--ckpt", ckpt, "--data", str(val), "--batch-size", "4"]) == 0
    accuracy, loss = numbers(capsys.readouterr().out)[:2]
    assert accuracy == pytest.approx(100 * last["val_acc"], abs=0.01)
    assert loss == pytest.approx(last["val_loss"], abs=1e-4)
    # malformed JSON, a label the training file never had, text for a classifier: clear errors
    malformed = write_jsonl(tmp_path / "m.jsonl", [json.dumps(labelled(1)[0]), "{"])
    assert main(["--ckpt", ckpt, "--data", str(malformed)]) == 1
    assert "m.jsonl:2: not valid JSON" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "the cat", "label": "early"},
                                               {"text": "the cat", "label": "middle"}])
    assert main(["--ckpt", ckpt, "--data", str(bad)]) == 1
    assert "bad.jsonl:2: label 'middle' never appears" in capsys.readouterr().err
    assert main(["--ckpt", ckpt, "--data", str(tmp_path / "d.txt")]) == 1
    assert "is a classifier" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--batches", "0"], "--batches must be >= 1, got 0"),
    (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
    (["--ckpt", "missing.safetensors"], "does not exist"),
    (["--data", "INSTRUCTIONS"], "was not instruction-tuned"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, flags, message):
    base = str(tiny_base(tmp_path)[0])
    files = {"INSTRUCTIONS": write_jsonl(tmp_path / "i.jsonl", instructions(4))}
    flags = [str(files.get(f, f)) for f in flags]
    assert main(["--ckpt", base, *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
