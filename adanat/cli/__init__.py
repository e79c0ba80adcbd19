"""The ``adanat`` command line: one module per command, common options in :mod:`adanat.cli.common`.

Each command module has ``add_parser(subparsers)``, which registers its options (sharing the
parent parsers of :mod:`~adanat.cli.common`) and sets ``run``, the function that carries it out.
Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from adanat.cli import eval as eval_command
from adanat.cli import import_policy, sample, search, train
from adanat.cli.common import EXPECTED_ERRORS, Parser, UsageError, resolve_device
from adanat.errors import first_line

__all__ = ["Parser", "UsageError", "build_parser", "main", "resolve_device"]

COMMANDS = (sample, eval_command, search, train, import_policy)


def build_parser() -> Parser:
    parser = Parser(prog="adanat", description="Adaptive generation policies for NAT image generators.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adanat`` console script."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or one line of bad input (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.run(args))
    except EXPECTED_ERRORS as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process fails alike: say it once
            print(f"adanat {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adanat {args.command}: interrupted", file=sys.stderr)
        return 130
