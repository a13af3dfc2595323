"""`python -m tinyllm <command>`: one module per command, each an argparse parser and a main().

  python -m tinyllm train     [--help]  train a GPT (cli/train.py; examples/train.py runs it)
  python -m tinyllm generate  [--help]  continue a prompt with a checkpoint, streamed (cli/generate.py)
  python -m tinyllm sample    [--help]  the same, under its old name (cli/sample.py)
  python -m tinyllm chat      [--help]  talk to a checkpoint, the conversation in the KV cache (cli/chat.py)
  python -m tinyllm prepare   [--help]  raw text -> clean, deduplicated token shards (cli/prepare.py)
  python -m tinyllm tokenizer {train,encode,decode} [--help]  byte-level BPE (cli/tokenizer.py)
  python -m tinyllm plot LOG  [--help]  the loss curve of a training log (cli/plot.py)
  python -m tinyllm plan      [--help]  a training plan for a target size and hardware (cli/plan.py)
  python -m tinyllm finetune {sft,classify} [--help]  adapt a checkpoint, LoRA or full (cli/finetune.py)
  python -m tinyllm quantize  [--help]  a checkpoint's weights to int8 / int4 blocks (cli/quantize.py)
  python -m tinyllm eval      [--help]  val loss and bits/byte, a classifier's accuracy, or a checkpoint against a reference (cli/eval.py)

The command modules only parse flags and print; the work is in the library
below them. A command is imported only when it runs, so `generate` never pays
for the curation pipeline. Read train.py here first.
"""
import importlib
import sys

COMMANDS = ("train", "generate", "sample", "chat", "prepare", "tokenizer", "plot", "plan", "finetune", "quantize", "eval")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(f"tinyllm.cli.{argv[0]}").main(argv[1:])
