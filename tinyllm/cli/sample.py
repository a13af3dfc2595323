"""`python -m tinyllm sample` (and `python examples/sample.py`): the generate command's old name.

The same flags and output as `python -m tinyllm generate` (tinyllm/cli/generate.py),
which it runs; the flags it always had keep their meaning and defaults.
"""
from tinyllm.cli import generate


def main(argv=None):
    return generate.main(argv, prog="sample")
