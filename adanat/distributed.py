"""Sharding batched work over ``torchrun`` processes and gathering per-batch results.

A job of ``n`` items is cut into fixed batches; batch ``j`` runs on process ``j % world_size``.
Because a batch is computed the same way whichever process runs it (items draw from their own
random streams), gathering the batches back in order gives exactly the single-process result.
Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: ``rank`` of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batches(self, n_batches: int) -> range:
        """Indices of the batches this process runs."""
        return range(self.rank, n_batches, self.world_size)


def batch_bounds(n: int, batch_size: int) -> list[range]:
    """The item ranges of the batches of an ``n``-item job."""
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def init_shard(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on CUDA,
    gloo on CPU) and return this process's shard and device (``cuda:LOCAL_RANK`` on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard(), device
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Shard(rank, world), device


def close_shard(shard: Shard) -> None:
    """Leave the process group (no-op in a single process)."""
    if shard.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def gather_batches(shard: Shard, mine: list[Tensor], sizes: list[int], device: torch.device) -> Tensor:
    """All batches' rows in batch order, on every process.

    :param mine: this process's batch results in the order of ``shard.batches(len(sizes))``,
        each ``(sizes[j], ...)`` with the same trailing shape and dtype on every process.
    :param sizes: rows of every batch of the job.
    :param device: where the collective runs (this process's CUDA device under NCCL).
    """
    if shard.world_size == 1:
        return torch.cat(mine)
    local = torch.cat(mine)  # (R_local, ...)
    rows = [
        sum(sizes[j] for j in Shard(r, shard.world_size).batches(len(sizes))) for r in range(shard.world_size)
    ]
    padded = torch.zeros((max(rows), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)]
    dist.all_gather(parts, padded)
    batches: list[Tensor | None] = [None] * len(sizes)
    for r, part in enumerate(parts):
        start = 0
        for j in Shard(r, shard.world_size).batches(len(sizes)):
            batches[j] = part[start : start + sizes[j]]
            start += sizes[j]
    return torch.cat([b for b in batches if b is not None]).to(local.device)
