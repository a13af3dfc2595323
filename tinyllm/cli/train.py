"""`python -m tinyllm train` (and `python examples/train.py`): train a GPT from flags.

Every flag is a field of run.TrainConfig, with its help text beside it
there. With --resume, the flags not given come from the run saved in --out.
This file only parses flags and prints: building the run is run.py's, the
loop is train.py's.
"""
import argparse
import dataclasses
import sys

import numpy as np

from tinyllm.distributed import abort_all, rank_label
from tinyllm.errors import (BackendUnavailable, CheckpointError, DistributedError, OutputFolderError,
                            TrainingError)
from tinyllm.plot import plot_loss_curve
from tinyllm.run import TrainConfig, build_trainer, saved_config
from tinyllm.terminal import shown


def add_config_flags(p, config_class):
    """One --flag per field of a config dataclass, its help beside the field (cli/finetune.py too)."""
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if field.type is bool:   # a default-on switch gets its --no- form
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            p.add_argument(flag, action=action, help=help_text)
        else:
            shown = "" if field.default is None else f" (default: {field.default!r})"
            p.add_argument(flag, type=field.type, help=help_text + shown)
    return p


def build_parser():
    p = argparse.ArgumentParser(
        prog="train", description="Train a GPT on text. With no arguments: the default model "
        "on the Python standard library's source, about five minutes on two cores.",
        argument_default=argparse.SUPPRESS)
    return add_config_flags(p, TrainConfig)


def config_from_args(argv=None):
    """A TrainConfig from flags; with --resume, flags not given come from the saved run."""
    given = vars(build_parser().parse_args(argv))
    config = TrainConfig(**given)
    if config.resume:
        config = TrainConfig(**{**saved_config(config.out), **given})
    return config


def main(argv=None):
    try:
        config = config_from_args(argv)
        trainer = build_trainer(config)
        summary = trainer.train()
    except (TrainingError, CheckpointError, ValueError, BackendUnavailable, OutputFolderError,
            DistributedError) as e:
        print(f"\nerror{rank_label()}: {e}", file=sys.stderr)
        abort_all(1)   # under mpirun the other ranks stop now instead of waiting for this one
        return 1
    except OSError as e:   # the disk filled, or the folder became read-only, mid-run
        print(f"\nerror{rank_label()}: cannot write {e.filename or config.out}: {e.strerror or e}",
              file=sys.stderr)
        abort_all(1)
        return 1
    if not trainer.dist.is_main:   # rank 0 alone reports, plots and samples
        return 0
    if trainer.records:
        picture = plot_loss_curve(trainer.records, trainer.out / "loss.svg")
        print(f"\nloss curve: {picture}", file=sys.stderr)
    print(f"{summary['steps']} steps, {summary['tokens_per_sec']:,.0f} tokens/s, "
          f"peak memory {summary['peak_rss_mb']:,.0f} MB"
          + (f" (GPU {summary['peak_device_mb']:,.0f} MB)" if summary["peak_device_mb"] else "")
          + ", final val loss "
          + (f"{summary['val_loss']:.4f}" if summary["val_loss"] is not None
             else "none (stopped before the first eval)")
          + f"; checkpoint {trainer.ckpt_path}", file=sys.stderr)
    if config.sample_tokens and not summary["interrupted"]:
        print(f"\n--- sample ({config.sample_tokens} tokens, temperature 0.8, top-k 40) ---", file=sys.stderr)
        ids = np.array([trainer.tokenizer.encode(config.prompt)])             # (1, T)
        out = trainer.model.generate(ids, config.sample_tokens, temperature=0.8, top_k=40, seed=0,
                                     exclude=trainer.tokenizer.unused_ids())
        print(shown(trainer.tokenizer.decode(out[0].tolist())))   # escaped on a terminal
    return 0
