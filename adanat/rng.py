"""Explicit random streams.

Every random draw in adanat takes a ``torch.Generator``. Generation code accepts either one
generator for the whole batch or one generator per row; with per-row generators a row's draws do
not depend on the other rows, so a row generated in a batch equals the same row generated alone
(what the batched RL environment relies on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Rngs = torch.Generator | Sequence[torch.Generator]
"""One random generator for a batch, or one per row."""


def row_rngs(
    seed: int, rows: int, device: torch.device | str = "cpu", offset: int = 0
) -> list[torch.Generator]:
    """Independent generators for rows ``offset .. offset+rows-1`` of a run seeded with ``seed``.

    Row ``i`` always gets the same stream for the same ``seed``, whatever the batch it is in.
    """
    out = []
    for i in range(offset, offset + rows):
        state = np.random.SeedSequence([seed, i]).generate_state(2, dtype=np.uint32)
        g = torch.Generator(device=device)
        g.manual_seed(int(state[0]) << 32 | int(state[1]))
        out.append(g)
    return out


def uniform(rows: int, shape: Sequence[int], rngs: Rngs, device: torch.device) -> torch.Tensor:
    """Uniform draws in ``(0, 1)`` of shape ``(rows, *shape)``, from one generator for the batch
    or one generator per row."""
    tiny = torch.finfo(torch.float32).tiny
    if isinstance(rngs, torch.Generator):
        u = torch.rand((rows, *shape), generator=rngs, device=device)
    else:
        if len(rngs) != rows:
            raise ValueError(f"{len(rngs)} random generators for {rows} rows")
        u = torch.stack([torch.rand(tuple(shape), generator=g, device=device) for g in rngs])
    return u.clamp_(min=tiny)


def gumbel(rows: int, shape: Sequence[int], rngs: Rngs, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise of shape ``(rows, *shape)``, drawn as :func:`uniform`."""
    return -torch.log(-torch.log(uniform(rows, shape, rngs, device)))


def gumbel_packed(
    counts: Sequence[int], shape: Sequence[int], rngs: Rngs, device: torch.device
) -> torch.Tensor:
    """Gumbel noise for ``counts[b]`` items of row ``b``, packed row after row: ``(sum(counts), *shape)``.

    With per-row generators, row ``b`` draws ``(counts[b], *shape)`` from its own stream.
    """
    tiny = torch.finfo(torch.float32).tiny
    if isinstance(rngs, torch.Generator):
        u = torch.rand((sum(counts), *shape), generator=rngs, device=device)
    else:
        if len(rngs) != len(counts):
            raise ValueError(f"{len(rngs)} random generators for {len(counts)} rows")
        u = torch.cat(
            [torch.rand((n, *shape), generator=g, device=device) for g, n in zip(rngs, counts, strict=True)]
        )
    return -torch.log(-torch.log(u.clamp_(min=tiny)))


def normal(rows: int, shape: Sequence[int], rngs: Rngs, device: torch.device) -> torch.Tensor:
    """Standard normal draws of shape ``(rows, *shape)``, from one generator for the batch or one
    generator per row."""
    if isinstance(rngs, torch.Generator):
        return torch.randn((rows, *shape), generator=rngs, device=device)
    if len(rngs) != rows:
        raise ValueError(f"{len(rngs)} random generators for {rows} rows")
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in rngs])
