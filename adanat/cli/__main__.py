"""``python -m adanat.cli``: the ``adanat`` command line."""

import sys

from adanat.cli import main

sys.exit(main())
