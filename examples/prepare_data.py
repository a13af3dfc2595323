"""Turn raw text into clean, deduplicated, language-filtered token shards.

  python examples/prepare_data.py --input raw/ --out prepared/ [--languages en --langid-model lid.176.ftz]
  python examples/train.py --data prepared/

`--help` lists every step's options; the pipeline is tinyllm/curate/prepare.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinyllm.cli.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
