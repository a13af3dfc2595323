"""Generate text from a trained checkpoint: `python examples/sample.py --prompt "def "`.

Reads out/ckpt.safetensors by default; `--help` lists the sampling options.
The code is tinyllm/cli/generate.py and tinyllm/generate.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyllm.cli.sample import main  # noqa: E402  (generate, under its old name)

if __name__ == "__main__":
    sys.exit(main())
