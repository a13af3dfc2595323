"""`python -m tinyllm finetune sft|classify`: fine-tune a pretrained checkpoint from flags.

    python -m tinyllm finetune sft --base out/ckpt.safetensors --data train.jsonl --out out-sft/
    python -m tinyllm finetune classify --base out/ckpt.safetensors --data labelled.jsonl \\
        --out out-cls/ --lora --lora-r 8

Every flag is a field of finetune.run.FinetuneConfig, with its help beside
it there. With --resume, the flags not given come from the run saved in
--out. This file only parses flags and prints: the run is finetune/run.py's.
"""
import argparse
import sys

from tinyllm.cli.train import add_config_flags
from tinyllm.errors import BackendUnavailable, CheckpointError, TrainingError
from tinyllm.finetune.run import KINDS, FinetuneConfig, build_finetune_trainer, finish
from tinyllm.plot import plot_loss_curve
from tinyllm.run import saved_config


def build_parser():
    p = argparse.ArgumentParser(
        prog="finetune", description="Fine-tune a pretrained GPT: sft (instruction tuning with "
        "the prompt masked) or classify (a new head); --lora trains adapters on a frozen base.")
    sub = p.add_subparsers(dest="kind", required=True, metavar="{sft,classify}")
    for kind, what in zip(KINDS, ("instruction tuning on JSONL instruction/input/output or "
                                  "messages lines", "classification on JSONL text/label lines")):
        add_config_flags(sub.add_parser(kind, help=what, description=what,
                                        argument_default=argparse.SUPPRESS), FinetuneConfig)
    return p


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    kind = args.pop("kind")
    try:
        if args.get("resume"):
            args = {**saved_config(args.get("out", "out"), FinetuneConfig), **args}
        trainer = build_finetune_trainer(kind, FinetuneConfig(**args))
        summary = trainer.train()
        written = finish(trainer)
    except (TrainingError, CheckpointError, ValueError, BackendUnavailable) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if trainer.records:
        picture = plot_loss_curve(trainer.records, trainer.out / "loss.svg", title=f"tinyllm {kind}")
        print(f"\nloss curve: {picture}", file=sys.stderr)
    val = trainer.records[-1] if trainer.records else {}
    accuracy = f", val accuracy {val['val_acc']:.4f}" if "val_acc" in val else ""
    print(f"{summary['steps']} steps in {summary['seconds']:.1f} s, peak memory "
          f"{summary['peak_rss_mb']:,.0f} MB, final val loss {summary['val_loss'] or float('nan'):.4f}"
          f"{accuracy}; checkpoint {trainer.ckpt_path}"
          + "".join(f"; {path}" for path in written), file=sys.stderr)
    return 0
