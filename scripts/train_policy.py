"""Train an adaptive generation policy with PPO: ``python scripts/train_policy.py [--world shapes]``.

The documented entry point of ``adanat train`` (:mod:`adanat.cli.train`; ``--env`` is the older
name of ``--world``). Runs in ``--run-dir`` (checkpoints, exported ``policy/``, TensorBoard logs
under ``tb/`` or ``--log-dir``); ``--resume RUN_DIR`` continues a run with its saved settings.
Ctrl-C saves at the end of the current PPO update and exits. ``--help`` lists every option.
"""

from __future__ import annotations

import sys

from adanat.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train_policy"))
