"""``python -m adanat``: the ``adanat`` command line (also what ``torchrun -m adanat`` runs)."""

import sys

from adanat.cli import main

sys.exit(main())
