"""`python -m oodbench`: the command line."""

import sys

from oodbench.cli import main

sys.exit(main())
