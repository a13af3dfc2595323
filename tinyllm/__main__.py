"""Entry point of `python -m tinyllm`; the commands are in cli/."""
import sys

from tinyllm.cli import main

sys.exit(main())
