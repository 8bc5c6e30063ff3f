"""``python -m autodistill.cli``: the same command line as ``autodistill``."""
import sys

from autodistill.cli import main

sys.exit(main())
