"""Measuring a checkpoint on held-out data: language-model loss and bits per byte, answer loss, accuracy.

    model, tokenizer, meta = load_for_inference("out/ckpt.safetensors")
    print(evaluate(model, tokenizer, meta["tokenizer"], data=None, cache_dir="out/data"))

What is measured follows the model and the data (`evaluate` picks):
  a GPT on text (a file, a folder, a `prepare` folder, or None: the stdlib
      corpus) -> the mean loss over `batches` val batches and bits per byte.
      The val split, the BatchLoader (seed 0, split "val") and the defaults
      (16 x block_size tokens, 8 batches) are training's (run.py), so a
      checkpoint in its training folder scores the val loss its log shows.
      The text is tokenized by `data_tokenizer` (the checkpoint file's: the
      base's with --adapter, whose ids for plain text are the same) and cached
      in cache_dir as training caches it.
  a GPT on instruction JSONL (finetune/sft.py) -> the answer loss, the prompt masked.
  a classifier (finetune/classify.py) on labelled JSONL -> accuracy and loss.
Not here: the flags (tinyllm/cli/eval.py) or loading (finetune/run.py).
"""
import math
import pathlib

import numpy as np

from tinyllm.data import (BatchLoader, is_prepared, load_corpus, open_prepared, prepare_token_files,
                          read_tokens)
from tinyllm.data.examples import fixed_batches
from tinyllm.data.loader import bytes_per_token
from tinyllm.errors import DataError
from tinyllm.finetune import classify, sft
from tinyllm.tensor import no_grad

BATCH_SIZE, BATCHES, VAL_FRACTION = 16, 8, 0.05   # training's defaults (run.TrainConfig, LoopConfig)


def mean_loss(model, batches):
    """The mean loss over (x, y) batches, in eval mode and without gradients."""
    model.eval()
    with no_grad():
        losses = [model(x, y)[1].item() for x, y in batches]
    if not losses:
        raise DataError("there is nothing to evaluate: the data gave no batch")
    return float(np.mean(losses))


def text_loss(model, data_tokenizer, data=None, batches=BATCHES, batch_size=BATCH_SIZE,
              val_fraction=VAL_FRACTION, cache_dir="out/data"):
    """{"loss", "bpb", "batches", "tokens"} of a GPT on the val split of `data`, as training scores it."""
    if is_prepared(data):
        _, val = open_prepared(data, data_tokenizer)
    else:
        corpus = load_corpus(data, val_fraction)
        _, val_path = prepare_token_files(corpus, data_tokenizer, cache_dir)
        val = read_tokens(val_path)
    loader = BatchLoader(val, batch_size, model.config.block_size, seed=0, split="val")
    loss = mean_loss(model, [loader.next_batch() for _ in range(batches)])
    return {"loss": loss, "bpb": loss / math.log(2) / bytes_per_token(data_tokenizer, val),
            "batches": batches, "tokens": batches * batch_size * model.config.block_size}


def answer_loss(model, tokenizer, path, batches=None, batch_size=BATCH_SIZE):
    """{"loss", "examples", "truncated"}: the loss on the answers of instruction JSONL, prompts masked."""
    if sft.END not in (getattr(tokenizer, "special_tokens", None) or {}):
        raise DataError(f"{path} is instruction data, but this model's tokenizer has no template "
                        f"tokens: it was not instruction-tuned; give --adapter DIR or a "
                        f"`finetune sft` checkpoint, or evaluate it on text")
    examples, cut = sft.examples(sft.read_instructions(path), tokenizer, model.config.block_size)
    fixed = fixed_batches(examples, batch_size, tokenizer.special_tokens[sft.END], batches)
    return {"loss": mean_loss(model, fixed), "examples": sum(len(x) for x, _ in fixed),
            "truncated": cut}


def accuracy(model, tokenizer, path, batches=None, batch_size=BATCH_SIZE):
    """{"accuracy", "loss", "examples", "truncated"} of a classifier on labelled JSONL."""
    examples, _, cut = classify.read_labelled(path, tokenizer, model.config.block_size, model.labels)
    fixed = fixed_batches(examples, batch_size, 0, batches)
    return {"accuracy": classify.accuracy(model, fixed), "loss": mean_loss(model, fixed),
            "examples": sum(len(x) for x, _ in fixed), "truncated": cut}


def evaluate(model, tokenizer, data_tokenizer, data=None, batches=None, batch_size=BATCH_SIZE,
             val_fraction=VAL_FRACTION, cache_dir="out/data"):
    """The measurements that fit the model and data (the module docstring); batches None: all
    JSONL examples, or training's 8 text batches."""
    jsonl = data is not None and pathlib.Path(data).suffix == ".jsonl"
    if getattr(model, "labels", None) is not None:
        if not jsonl:
            raise DataError(f"the checkpoint is a classifier (labels {model.labels}): evaluate it "
                            f"on labelled JSONL, --data FILE.jsonl with lines "
                            f'{{"text": ..., "label": ...}}, not on {data or "the stdlib corpus"}')
        return accuracy(model, tokenizer, data, batches, batch_size)
    if jsonl:
        return answer_loss(model, tokenizer, data, batches, batch_size)
    return text_loss(model, data_tokenizer, data, batches or BATCHES, batch_size, val_fraction,
                     cache_dir)
