"""A fine-tuned model as a checkpoint records it: the GPT, or its classifier, with LoRA or without.

checkpoint.py stores `metadata(model)` beside the tensors and calls
`build(config, extras)` to make the model those tensors fit:
  "labels"  a JSON list: the model is a GPTClassifier over those labels
  "lora"    a JSON LoRAConfig: those Linear modules are LoRALinear
A pretrained checkpoint has neither key and builds a plain GPT, so old
checkpoints load as they always did. Read finetune/run.py next.
"""
import json

from tinyllm.finetune.classify import GPTClassifier
from tinyllm.finetune.lora import LoRAConfig, apply_lora
from tinyllm.model import GPT

KEYS = ("labels", "lora")


def metadata(model):
    """{"labels": JSON, "lora": JSON}, each only when the model has it."""
    out = {}
    if getattr(model, "labels", None) is not None:
        out["labels"] = json.dumps(model.labels)
    if getattr(model, "lora", None) is not None:
        out["lora"] = json.dumps(model.lora.to_dict())
    return out


def build(config, extras):
    """The model for a GPTConfig and the decoded metadata keys (absent keys: a plain GPT)."""
    model = GPTClassifier(config, extras["labels"]) if "labels" in extras else GPT(config)
    if "lora" in extras:
        apply_lora(model, LoRAConfig(**extras["lora"]))
    return model
