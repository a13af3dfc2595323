"""Model checkpoints: which tensors and metadata a tinyllm checkpoint holds.

A run's output folder holds two safetensors files (safetensors.py is the format):
  ckpt.safetensors         the model: the contract's parameter names (DESIGN.md),
                           so PyTorch code loads it as a state_dict, plus metadata
                           "format", "version", "config" (GPTConfig as JSON),
                           "tokenizer" (JSON), "step" and "run_id"; a fine-tuned
                           model adds "labels" and/or "lora" (finetune/model.py);
                           a quantized one (`python -m tinyllm quantize`) adds
                           "quant": {"format": q8_0|q4_0|q4_mixed, "version",
                           "layers": {layer: format}} and holds each listed layer's
                           weight as "<layer>.weight.q" (int8, or uint8 packed int4)
                           and "<layer>.weight.scale" (fp16, one per 32 weights), in
                           place of "<layer>.weight" (quant/formats.py is the layout)
  train_state.safetensors  what an exact resume needs besides the model:
                           AdamW's moments ("exp_avg.<name>", "exp_avg_sq.<name>")
                           and, as metadata, the step, the training config and
                           the random generators' states; its "run_id" must equal
                           the model file's, so the two always come from one save
The two move together (`save_checkpoint`): both are first written whole
beside their targets as NAME.next (each atomically), then renamed over
them, the training state first. A kill before the first rename leaves the
previous pair; a kill between the renames leaves a training state whose
model waits in ckpt.safetensors.next with the same run_id, and
`recover_checkpoint` (run before every resume) finishes that rename. So at
any instant the folder holds a consistent pair, or the pieces to make the
newest one; load still refuses a pair whose run_ids differ.

Not here: the file format itself (safetensors.py) or the training loop (train.py).
Read safetensors.py next.
"""
import contextlib
import json
import os
import uuid

from tinyllm.atomic import commit
from tinyllm.errors import CheckpointError
from tinyllm.finetune import model as finetuned
from tinyllm.model import GPTConfig
from tinyllm.quant.layers import RECIPES, load_quantized, quantized_tensors
from tinyllm.nn import placeholder_weights
from tinyllm.safetensors import load_safetensors, map_safetensors, read_metadata, save_safetensors
from tinyllm.tokenizer import from_dict as tokenizer_from_dict

FORMAT = "tinyllm.gpt"
VERSION = "1"
QUANT_VERSION = "1"


def save_model(path, model, tokenizer, step, run_id, quant=None):
    """quant: for a model that quantize_model changed, {"format": its recipe, "layers": what it
    returned}; the quantized layers' tensors are then written beside the float ones."""
    tensors, extra = model.state_dict(), {}
    if quant is not None:
        tensors.update(quantized_tensors(model))
        extra["quant"] = json.dumps({"format": quant["format"], "version": QUANT_VERSION,
                                     "layers": quant["layers"]})
    save_safetensors(path, tensors, {
        "format": FORMAT, "version": VERSION, "config": json.dumps(model.config.to_dict()),
        "tokenizer": json.dumps(tokenizer.to_dict()), "step": str(step), "run_id": run_id,
        **finetuned.metadata(model), **extra})


def save_checkpoint(ckpt_path, state_path, model, tokenizer, names, optimizer, state, run_id):
    """The model and its training state as one pair: see the module docstring for the order."""
    staged_state, staged_model = _staged(state_path), _staged(ckpt_path)
    save_training_state(staged_state, names, optimizer, state, run_id)
    save_model(staged_model, model, tokenizer, state["step"], run_id)
    commit(staged_state, state_path)
    commit(staged_model, ckpt_path)


def recover_checkpoint(ckpt_path, state_path):
    """Finish the renames of a save that a kill interrupted, so the newest whole pair is in place.

    Staged files that make no pair with the rest (a kill while they were being written) are
    removed: the pair in place is then the newest consistent one.
    """
    staged_state, staged_model = _staged(state_path), _staged(ckpt_path)
    model_id = _run_id(staged_model)
    if model_id is not None and model_id == _run_id(staged_state):   # killed before the renames
        commit(staged_state, state_path)
    if model_id is not None and model_id == _run_id(state_path):     # killed between them
        commit(staged_model, ckpt_path)
    for path in (staged_state, staged_model):
        if os.path.exists(path):
            os.remove(path)


def _staged(path):
    return os.fspath(path) + ".next"


def _run_id(path):
    """The run_id in a file's metadata, or None when it is missing or unreadable."""
    try:
        return read_metadata(path).get("run_id")
    except (OSError, CheckpointError):
        return None


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
        quant = json.loads(meta["quant"]) if "quant" in meta else None
        step, run_id = int(meta["step"]), meta["run_id"]
    except (KeyError, ValueError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{path} has damaged metadata ({str(e)[:200]}); use another "
                              f"checkpoint") from None
    _check_quant(path, quant)
    return {"config": config, "tokenizer": tokenizer, "step": step, "run_id": run_id,
            "finetune": extras, "quant": quant}


def _check_quant(path, quant):
    if quant is None:
        return
    if not isinstance(quant, dict) or not isinstance(quant.get("layers"), dict):
        raise CheckpointError(f"{path} has damaged quantization metadata ({str(quant)[:100]}); "
                              f"quantize the float checkpoint again")
    if quant.get("format") not in RECIPES:
        raise CheckpointError(f"{path} is quantized in format {quant.get('format')!r}, which "
                              f"this tinyllm does not know ({', '.join(RECIPES)}); upgrade tinyllm")
    if quant.get("version") != QUANT_VERSION:
        raise CheckpointError(f"{path} has quantization version {quant.get('version')!r}; this "
                              f"tinyllm reads version {QUANT_VERSION}: upgrade tinyllm or "
                              f"quantize the float checkpoint again")
    bad = [f for f in quant["layers"].values() if f not in ("q8_0", "q4_0")]
    if bad:
        raise CheckpointError(f"{path}: a layer is quantized in unknown format {bad[0]!r}; "
                              f"upgrade tinyllm or quantize the float checkpoint again")


def load_model(path):
    """(model, tokenizer, metadata) from a model checkpoint.

    A quantized one is memory-mapped (map_safetensors) and its model built with placeholder
    weights (nn.placeholder_weights), so loading it never holds the float32 model: the peak
    is about the file's size (test_quant_load.py measures it).
    """
    meta = read_model_metadata(path)
    tensors, _ = (map_safetensors if meta["quant"] else load_safetensors)(path)
    layers = meta["quant"]["layers"] if meta["quant"] else {}
    _check_shapes(path, meta["config"], _shapes(tensors, layers))   # before a model is built
    with placeholder_weights() if meta["quant"] else contextlib.nullcontext():
        model = finetuned.build(meta["config"], meta["finetune"])
    try:
        load_quantized(path, model, tensors, layers)   # takes its tensors out of `tensors`
        model.load_state_dict(tensors)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: the weights do not match the config stored beside "
                              f"them ({e}); the file is damaged") from e
    return model, meta["tokenizer"], meta


def contract_shapes(config):
    """{parameter name: shape} of a GPT of this config, by DESIGN.md's model contract."""
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(config.n_layer):
        shapes.update({f"transformer.h.{i}.{name}": shape for name, shape in (
            ("ln_1.weight", (C,)), ("attn.c_attn.weight", (3 * C, C)),
            ("attn.c_proj.weight", (C, C)), ("ln_2.weight", (C,)),
            ("mlp.c_fc.weight", (4 * C, C)), ("mlp.c_proj.weight", (C, 4 * C)))})
    shapes.update({"transformer.ln_f.weight": (C,), "lm_head.weight": (V, C)})
    return shapes


def _shapes(tensors, layers):
    """{name: shape} of the weights, a quantized layer's weight shaped as its float one."""
    shapes = {name: t.shape for name, t in tensors.items()}
    for name, fmt in layers.items():
        q = tensors.get(f"{name}.weight.q")
        if q is not None and q.ndim == 2:
            shapes[f"{name}.weight"] = (q.shape[0], q.shape[1] * (2 if fmt == "q4_0" else 1))
    return shapes


def _check_shapes(path, config, shapes):
    """A config that does not match its weights (say, one claiming a huge model) is refused."""
    if config.n_layer > len(shapes):   # each layer holds tensors: do not even list them
        raise CheckpointError(f"{path}: its config claims {config.n_layer:,} layers but the file "
                              f"holds {len(shapes)} tensors; the file is damaged")
    # a fine-tuned model may lack lm_head (a classifier) or wrap a layer (LoRA), but the
    # embeddings are always there and pin the width, vocabulary and context
    expected = contract_shapes(config)
    needed = {"transformer.wte.weight", "transformer.wpe.weight"}
    wrong = [(n, shapes.get(n, "missing"), s) for n, s in expected.items()
             if (n in needed and n not in shapes) or (n in shapes and tuple(shapes[n]) != s)]
    if wrong:
        name, got, want = wrong[0]
        raise CheckpointError(f"{path}: the weights do not match the config stored beside them "
                              f"({len(wrong)} tensors differ, e.g. {name}: {got} in the file, "
                              f"{want} by the config); the file is damaged")


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
        state = json.loads(meta["state"])
        if not isinstance(state, dict):
            raise ValueError(f"its state is a {type(state).__name__}, not an object")
        return state
    except (KeyError, ValueError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{path} is missing or has a damaged part of the optimizer "
                              f"state ({e}); start a new run") from e
