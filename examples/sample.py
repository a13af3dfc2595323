"""Generate text from a trained checkpoint: `python examples/sample.py --prompt "def "`.

Reads out/ckpt.safetensors by default; `--help` lists the sampling options.
The code is tinyllm/cli.py (sample_main) and GPT.generate in tinyllm/model.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyllm.cli import sample_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(sample_main())
