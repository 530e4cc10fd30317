"""`python -m distillery ...`: the same command line as the `distillery` script (what torchrun and `distillery run` start)."""

import sys

from distillery.cli import main

sys.exit(main())
