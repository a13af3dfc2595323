"""Train a GPT: `python examples/train.py` (about five minutes on two cores), `--help` for options.

It writes out/log.jsonl, out/ckpt.safetensors, out/loss.svg and prints a
sample at the end. The flags are tinyllm/cli/train.py, the loop tinyllm/train.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyllm.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
