"""A fine-tuning run built from its settings: base checkpoint, data, freezing or LoRA, then the Trainer.

    trainer = build_finetune_trainer("sft", FinetuneConfig(base="out/ckpt.safetensors",
                                                           data="train.jsonl", out="out-sft"))
    trainer.train(); finish(trainer)

kind "sft": the base gets the template's special tokens (sft.py) and learns
the answers, the prompt masked. kind "classify": the base's body gets a new
head (classify.py), all of it trained, or its last --train-blocks blocks.
Either takes --lora (lora.py): the base frozen, adapters trained; the
embedding and lm_head of added tokens are then trained in full (peft's
modules_to_save), since LoRA cannot tell rows apart that start equal.

The loop is the pretraining Trainer's (train.py), with its progress line,
val loss, atomic checkpoints, exact resume and loss curve; OUT/ckpt.safetensors
is a checkpoint any tinyllm command loads (checkpoint.py builds the LoRA or
classifier model from its metadata). `finish` adds the adapter files (with
--lora), a merged plain checkpoint (with --merge) and labels.json (classify).
Not here: the flags (tinyllm/cli/finetune.py).
"""
import dataclasses
import json
import pathlib

from tinyllm import backends
from tinyllm.atomic import atomic_write
from tinyllm.checkpoint import load_model, read_model_metadata, save_model
from tinyllm.errors import CheckpointError
from tinyllm.data.examples import ExampleLoader, fixed_batches
from tinyllm.finetune import classify, lora, sft
from tinyllm.finetune import model as finetuned
from tinyllm.model import GPT, GPTConfig
from tinyllm.tokenizer import from_dict as tokenizer_from_dict
from tinyllm.optim import AdamW, param_groups
from tinyllm.run import DTYPE_HELP, check_dtype, matmul_precision
from tinyllm.train import LoopConfig, Trainer, option

KINDS = ("sft", "classify")


@dataclasses.dataclass
class FinetuneConfig(LoopConfig):
    out: str = option("out-finetune", "folder for the log, checkpoints, adapters and loss curve")
    max_steps: int = option(None, "optimizer steps (default: --epochs passes over the data)")
    base: str = option("out/ckpt.safetensors", "the pretrained checkpoint to start from")
    data: str = option(None, "training examples, JSONL (sft: instruction/input/output or messages; "
                             "classify: text/label)")
    val: str = option(None, "validation examples, JSONL (default: the last --val-fraction of --data)")
    val_fraction: float = option(0.1, "share of --data held out when there is no --val")
    epochs: int = option(3, "passes over the data when --max-steps is not given")
    batch_size: int = option(8, "examples per micro-batch, padded to the longest")
    lr: float = option(3e-4, "peak learning rate (LoRA usually wants more, e.g. 2e-3)")
    min_lr: float = option(3e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = option(10, "steps of linear warmup")
    eval_interval: int = option(50, "steps between val measurements and checkpoints")
    weight_decay: float = option(0.0, "AdamW weight decay, on weight matrices only")
    mask_prompt: bool = option(True, "sft: train on the answers only (--no-mask-prompt: every token)")
    train_blocks: int = option(None, "classify: train only the last N blocks, the final norm and "
                                     "the head (default: all)")
    lora: bool = option(False, "train LoRA adapters on a frozen base")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: float = option(16.0, "LoRA scale numerator: the update is scaled by alpha / r")
    lora_dropout: float = option(0.0, "dropout on the LoRA input")
    lora_targets: str = option("c_attn,c_proj,c_fc", "comma-separated Linear names that get LoRA")
    merge: bool = option(False, "with --lora: also write OUT/merged.safetensors, the adapters folded in")
    seed: int = option(1337, "seed of the example order")
    backend: str = option(None, "numpy, c or cuda (default: the fastest one built here)")
    dtype: str = option("fp32", DTYPE_HELP)

    def __post_init__(self):
        super().__post_init__()
        check_dtype(self.dtype)
        if self.data is None:
            raise ValueError("--data is required: a JSONL file of training examples")
        for name in ("epochs", "batch_size"):
            self._at_least(name, 1)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if pathlib.Path(self.out, "ckpt.safetensors").resolve() == pathlib.Path(self.base).resolve():
            raise ValueError(f"--out {self.out} would overwrite the base checkpoint {self.base}; "
                             f"give another --out")
        if self.merge and not self.lora:
            raise ValueError("--merge folds LoRA adapters into the base: it needs --lora "
                             "(without it OUT/ckpt.safetensors is already a full model)")

    def lora_config(self, modules_to_save=()):
        targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        return lora.LoRAConfig(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                               targets=targets, modules_to_save=modules_to_save, seed=self.seed)


def _split(rows, config):
    """(train, val): --val's rows, or the tail of --data's."""
    if config.val:
        return rows, None
    n_val = max(1, int(len(rows) * config.val_fraction))
    if len(rows) <= n_val:
        raise ValueError(f"{config.data} has {len(rows)} examples: too few to hold out a val set; "
                         f"give --val FILE or more data")
    return rows[:-n_val], rows[-n_val:]


def _sft_data(model, tokenizer, config):
    tokenizer, added = sft.add_special_tokens(model, tokenizer)
    train_rows, val_rows = _split(sft.read_instructions(config.data), config)
    val_rows = val_rows or sft.read_instructions(config.val)
    T = model.config.block_size
    train, cut = sft.examples(train_rows, tokenizer, T, config.mask_prompt)
    val, cut_val = sft.examples(val_rows, tokenizer, T, config.mask_prompt)
    saved = ("wte", "lm_head") if added else ()
    pad = tokenizer.special_tokens[sft.END]
    return model, tokenizer, train, val, cut + cut_val, saved, pad


def _classify_data(model, tokenizer, config):
    T = model.config.block_size
    if config.val:
        train, labels, cut = classify.read_labelled(config.data, tokenizer, T)
        val, _, cut_val = classify.read_labelled(config.val, tokenizer, T, labels)
    else:
        every, labels, cut = classify.read_labelled(config.data, tokenizer, T)
        train, val = _split(every, config)
        cut_val = 0
    model = classify.GPTClassifier.from_gpt(model, labels)
    return model, tokenizer, train, val, cut + cut_val, ("score",), 0


def build_finetune_trainer(kind, config, printer=None):
    """A Trainer fine-tuning config.base for `kind` ("sft" or "classify"), resumed when config.resume."""
    if kind not in KINDS:
        raise ValueError(f"unknown fine-tuning kind {kind!r}; choose one of {KINDS}")
    if kind == "sft" and config.train_blocks is not None:
        raise ValueError("--train-blocks is for classify; for sft use --lora to train less")
    backend = backends.set_backend(config.backend) if config.backend else backends.get_backend()
    base, tokenizer, meta = load_model(config.base)
    if type(base) is not GPT:
        raise ValueError(f"--base {config.base} is itself fine-tuned ({sorted(meta['finetune'])}); "
                         f"start from a pretrained checkpoint or merge it first (--merge)")
    build = _sft_data if kind == "sft" else _classify_data
    model, tokenizer, train, val, cut, saved, pad = build(base, tokenizer, config)
    if config.lora:
        lora.apply_lora(model, config.lora_config(saved))
    elif kind == "classify" and config.train_blocks is not None:
        classify.freeze_blocks(model, config.train_blocks)
    model.to(backend).set_matmul_dtype(config.dtype)
    precision = matmul_precision(backend, config.dtype)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = param_groups(trainable, config.weight_decay)
    optimizer = AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.max_steps is None:
        config = dataclasses.replace(config, max_steps=config.epochs * -(-len(train) // config.batch_size))
    loader = ExampleLoader(train, config.batch_size, pad, seed=config.seed)
    val_batches = fixed_batches(val, config.batch_size, pad, config.eval_batches)
    metrics = (lambda: {"val_acc": classify.accuracy(model, val_batches)}) if kind == "classify" else None
    n_trained = sum(p.size for _, p in trainable)
    trainer = Trainer(
        model, optimizer, loader, lambda: val_batches, tokenizer, config,
        names=[n for g in groups for n in g["names"]], metrics=metrics, printer=printer,
        description=f"{kind} on backend {backend.NAME}, matmuls {precision}: {len(train):,} train / {len(val):,} val "
                    f"examples, {cut} truncated to the context of {model.config.block_size}; "
                    f"training {n_trained:,} of {model.num_parameters():,} parameters "
                    f"({100 * n_trained / model.num_parameters():.2f}%)")
    trainer.base_path, trainer.kind, trainer.base_tokenizer = config.base, kind, meta["tokenizer"]
    if config.resume:
        trainer.resume()
    return trainer


def finish(trainer):
    """The files beside the checkpoint: adapters (--lora), merged.safetensors (--merge), labels.json."""
    model, config, out = trainer.model, trainer.config, trainer.out
    written = []
    if config.lora:
        lora.save_adapter(out, model, trainer.base_path, {
            "tokenizer": json.dumps(trainer.tokenizer.to_dict()), "step": str(trainer.step),
            "base_tokenizer": trainer.base_tokenizer.fingerprint(),
            "config": json.dumps(model.config.to_dict()), **finetuned.metadata(model)})
        written.append(out / lora.ADAPTER_WEIGHTS)
        if config.merge:
            merged = finetuned.build(model.config, {"labels": model.labels}
                                     if trainer.kind == "classify" else {})
            merged.load_state_dict(lora.merged_state_dict(model))
            save_model(out / "merged.safetensors", merged, trainer.tokenizer, trainer.step,
                       trainer.run_id)
            written.append(out / "merged.safetensors")
    if trainer.kind == "classify":
        with atomic_write(pathlib.Path(out) / "labels.json", "w") as f:
            f.write(json.dumps({label: i for i, label in enumerate(model.labels)}, indent=1) + "\n")
        written.append(out / "labels.json")
    return written


def load_for_inference(ckpt, adapter=None):
    """(model, tokenizer, metadata of ckpt): the checkpoint's model, or with adapter (--adapter DIR)
    the base ckpt with that adapter on top; generate, chat and eval load through here."""
    if adapter is None:
        return load_model(ckpt)
    model, tokenizer = load_with_adapter(ckpt, adapter)
    return model, tokenizer, read_model_metadata(ckpt)


def load_with_adapter(base_path, folder):
    """(model, tokenizer): the base checkpoint with the adapter in folder on top (--adapter DIR)."""
    base, base_tokenizer, _ = load_model(base_path)
    config, tensors, meta = lora.read_adapter(folder)
    if meta.get("base_tokenizer") != base_tokenizer.fingerprint():
        raise CheckpointError(
            f"the adapter in {folder} was trained on a base with another tokenizer than "
            f"{base_path}'s ({base_tokenizer.name!r}); give the --base it was trained on "
            f"(its adapter_config.json names it)")
    extras = {"lora": config.to_dict(), **({"labels": json.loads(meta["labels"])}
                                           if "labels" in meta else {})}
    model = finetuned.build(GPTConfig.from_dict(json.loads(meta["config"])), extras)
    state = {**{n: a for n, a in base.state_dict().items() if n not in tensors}, **tensors}
    missing = [n for n, _ in model.named_parameters() if n not in state]
    if missing:
        raise CheckpointError(f"the adapter in {folder} and the base {base_path} together lack "
                              f"{missing[:3]}: the adapter was made for another model")
    model.load_state_dict({n: state[n] for n, _ in model.named_parameters()})
    return model, tokenizer_from_dict(json.loads(meta["tokenizer"]))
