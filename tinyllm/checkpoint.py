"""Model checkpoints: which tensors and metadata a tinyllm checkpoint holds.

A run's output folder holds two safetensors files (safetensors.py is the format):
  ckpt.safetensors         the model: the contract's parameter names (DESIGN.md),
                           so PyTorch code loads it as a state_dict, plus metadata
                           "format", "version", "config" (GPTConfig as JSON),
                           "tokenizer" (JSON), "step" and "run_id"; a fine-tuned
                           model adds "labels" and/or "lora" (finetune/model.py)
  train_state.safetensors  what an exact resume needs besides the model:
                           AdamW's moments ("exp_avg.<name>", "exp_avg_sq.<name>")
                           and, as metadata, the step, the training config and
                           the random generators' states; its "run_id" must equal
                           the model file's, so the two always come from one save
Each file is written atomically, the training state first: a crash between
the two renames leaves a pair whose run_ids differ, which load refuses
rather than resuming from mismatched halves.

Not here: the file format itself (safetensors.py) or the training loop (train.py).
Read safetensors.py next.
"""
import json
import uuid

from tinyllm.errors import CheckpointError
from tinyllm.finetune import model as finetuned
from tinyllm.model import GPTConfig
from tinyllm.safetensors import load_safetensors, read_metadata, save_safetensors
from tinyllm.tokenizer import from_dict as tokenizer_from_dict

FORMAT = "tinyllm.gpt"
VERSION = "1"


def save_model(path, model, tokenizer, step, run_id):
    save_safetensors(path, model.state_dict(), {
        "format": FORMAT, "version": VERSION, "config": json.dumps(model.config.to_dict()),
        "tokenizer": json.dumps(tokenizer.to_dict()), "step": str(step), "run_id": run_id,
        **finetuned.metadata(model)})


def read_model_metadata(path):
    """The checked metadata of a model checkpoint: config (GPTConfig), tokenizer, step, run_id."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a tinyllm model checkpoint "
                              f"(metadata format={meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')!r}; this "
                              f"tinyllm reads version {VERSION}: upgrade tinyllm or retrain")
    try:
        config = GPTConfig.from_dict(json.loads(meta["config"]))
        tokenizer = tokenizer_from_dict(json.loads(meta["tokenizer"]))
        extras = {k: json.loads(meta[k]) for k in finetuned.KEYS if k in meta}
        return {"config": config, "tokenizer": tokenizer, "step": int(meta["step"]),
                "run_id": meta["run_id"], "finetune": extras}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has damaged metadata ({e}); use another checkpoint") from e


def load_model(path):
    """(model, tokenizer, metadata) from a model checkpoint."""
    meta = read_model_metadata(path)
    tensors, _ = load_safetensors(path)
    model = finetuned.build(meta["config"], meta["finetune"])
    try:
        model.load_state_dict(tensors)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: the weights do not match the config stored beside "
                              f"them ({e}); the file is damaged") from e
    return model, meta["tokenizer"], meta


def new_run_id():
    return uuid.uuid4().hex


def save_training_state(path, names, optimizer, metadata, run_id):
    """Optimizer moments under "<moment>.<parameter name>" plus JSON-able metadata."""
    state = optimizer.state_dict()
    tensors = {}
    for moment in ("exp_avg", "exp_avg_sq"):
        tensors.update({f"{moment}.{n}": a for n, a in zip(names, state[moment])})
    save_safetensors(path, tensors, {"run_id": run_id, "optimizer_step": str(state["step"]),
                                     "state": json.dumps(metadata)})


def load_training_state(path, names, optimizer, run_id):
    """Restore the optimizer from `path`; returns the metadata dict saved with it."""
    tensors, meta = load_safetensors(path)
    if meta.get("run_id") != run_id:
        raise CheckpointError(f"{path} does not belong to the model checkpoint beside it "
                              f"(run ids differ: a save was interrupted between the two files); "
                              f"resume is not exact from here: start a new run or restore both files")
    try:
        optimizer.load_state_dict({
            "step": int(meta["optimizer_step"]),
            "exp_avg": [tensors[f"exp_avg.{n}"] for n in names],
            "exp_avg_sq": [tensors[f"exp_avg_sq.{n}"] for n in names]})
        return json.loads(meta["state"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is missing or has a damaged part of the optimizer "
                              f"state ({e}); start a new run") from e
