"""``python -m vlaforge`` (and ``torchrun -m vlaforge``) runs the CLI."""

import sys

from vlaforge.cli import main

sys.exit(main())
