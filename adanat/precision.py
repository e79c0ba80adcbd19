"""Compute precision of the generator and tokenizer: float32, or bfloat16 autocast.

Weights stay float32 either way; under ``bfloat16`` the matrix products and convolutions run in
bfloat16 (``torch.autocast``). On a GPU this is the usual way to run ENAT-L (about 3x the images/s
of float32 at batch 256 on an H100, ``docs/performance.md``); on a CPU it pays only where the CPU
has bfloat16 matrix units (Intel AMX), and is slower elsewhere. Sampling decisions are not made
in bfloat16: logits are cast to float32 before guidance, softmax and Gumbel draws.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[object]:
    """The context that runs model forwards on ``device`` in ``precision``."""
    if check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
