"""A leader and its followers: ``torchrun`` processes that carry out the leader's program together.

Policy training has one learner (SB3's PPO, on rank 0) fed by the generation rows of every
process. The leader runs the program; when it needs every process (a generation step of all
rows, a discriminator round, a sharded evaluation) it calls :meth:`Team.call` with the name of
an operation. Every process, the leader included, then runs that operation's handler, and the
handlers exchange their data with the collectives below. The followers wait in
:meth:`Team.serve` for the next name until the leader calls :meth:`Team.stop`.

Tensors travel as raw bytes, so any dtype goes over gloo (CPU) and NCCL (GPU) alike; under NCCL
they go through this process's CUDA device. A team of one process runs the handlers in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from adanat.distributed import Shard

__all__ = ["Team"]

_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.uint8,
    torch.bool,
)
_STOP = -1
_MAX_DIMS = 8


class Team:
    """The processes of one run: the leader (rank 0) names operations, everyone runs them.

    :param shard: this process's rank among ``world_size``.
    :param device: where the collectives run (this process's CUDA device under NCCL, else CPU).
    """

    def __init__(self, shard: Shard, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        self.shard = shard
        self.device = device if device.type == "cuda" else torch.device("cpu")
        self._names: list[str] = []
        self._handlers: dict[str, Callable[[], Any]] = {}
        self.broken = False  # an operation failed part-way: the processes are out of step

    @property
    def is_leader(self) -> bool:
        return self.shard.is_main

    @property
    def size(self) -> int:
        return self.shard.world_size

    def register(self, name: str, handler: Callable[[], Any]) -> None:
        """Add an operation; every process registers the same names in the same order."""
        if name in self._handlers:
            raise ValueError(f"operation {name!r} is registered twice")
        self._names.append(name)
        self._handlers[name] = handler

    def call(self, name: str) -> Any:
        """Leader only: have every process run operation ``name``; returns the leader's result."""
        assert self.is_leader, "only the leader calls operations"
        if self.broken:
            raise RuntimeError("the team is out of step after a failed operation")
        self.broken = True  # until the operation returns
        if self.size > 1:
            self._send_code(self._names.index(name))
        out = self._handlers[name]()
        self.broken = False
        return out

    def serve(self) -> None:
        """Followers: run the operations the leader calls, until it calls :meth:`stop`."""
        assert not self.is_leader, "the leader calls operations; followers serve"
        while (code := self._receive_code()) != _STOP:
            self.broken = True
            self._handlers[self._names[code]]()
            self.broken = False

    def stop(self) -> None:
        """Leader: release the followers from :meth:`serve` (not after a failed operation: the
        followers are then inside it, and end when the leader's process does)."""
        if self.is_leader and self.size > 1 and not self.broken:
            self._send_code(_STOP)

    # -- collectives -------------------------------------------------------------------
    def broadcast(self, value: Tensor | None) -> Tensor:
        """The leader's tensor on every process (followers pass None); on the caller's device
        for the leader, on the CPU for the followers (it is a copy either way)."""
        if self.size == 1:
            assert value is not None
            return value
        header = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64, device=self.device)
        if self.is_leader:
            assert value is not None and value.dim() <= _MAX_DIMS
            header[0], header[1] = _DTYPES.index(value.dtype), value.dim()
            header[2 : 2 + value.dim()] = torch.tensor(value.shape, dtype=torch.int64)
        dist.broadcast(header, 0)
        dtype, dims = _DTYPES[int(header[0])], int(header[1])
        shape = [int(s) for s in header[2 : 2 + dims].tolist()]
        data = self._bytes(value) if self.is_leader else self._empty_bytes(shape, dtype)
        dist.broadcast(data, 0)
        out = self._from_bytes(data, shape, dtype)
        return value if self.is_leader and value is not None else out

    def gather(self, value: Tensor) -> Tensor:
        """Every process's ``value`` (same shape and dtype everywhere) concatenated along dim 0
        in rank order, on the CPU (on every process)."""
        if self.size == 1:
            return value.cpu()
        data = self._bytes(value)
        parts = [torch.empty_like(data) for _ in range(self.size)]
        dist.all_gather(parts, data)
        shape = list(value.shape)
        return torch.cat([self._from_bytes(p, shape, value.dtype) for p in parts])

    def gather_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`gather` of every array of a dict (a batched observation), as numpy."""
        return {k: self.gather(torch.from_numpy(np.ascontiguousarray(v))).numpy() for k, v in arrays.items()}

    def sum(self, value: Tensor) -> Tensor:
        """The elementwise sum of ``value`` over the processes, on ``value``'s device."""
        if self.size == 1:
            return value
        out = value.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(value.device)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy the leader's parameters and buffers into every process's ``module`` (the same
        architecture everywhere)."""
        if self.size == 1:
            return
        tensors = [*module.parameters(), *module.buffers()]
        flat = torch.cat([t.detach().reshape(-1).float().cpu() for t in tensors])  # (P,)
        flat = self.broadcast(flat if self.is_leader else None)
        if self.is_leader:
            return
        with torch.no_grad():
            start = 0
            for t in tensors:
                t.copy_(flat[start : start + t.numel()].view_as(t))
                start += t.numel()

    # -- transport ---------------------------------------------------------------------
    def _send_code(self, code: int) -> None:
        dist.broadcast(torch.tensor([code], dtype=torch.int64, device=self.device), 0)

    def _receive_code(self) -> int:
        code = torch.zeros(1, dtype=torch.int64, device=self.device)
        dist.broadcast(code, 0)
        return int(code.item())

    def _bytes(self, value: Tensor) -> Tensor:
        flat = value.detach().contiguous().reshape(-1)
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        return flat.view(torch.uint8).to(self.device)

    def _empty_bytes(self, shape: list[int], dtype: torch.dtype) -> Tensor:
        size = 1 if dtype == torch.bool else torch.empty((), dtype=dtype).element_size()
        return torch.empty(int(torch.Size(shape).numel()) * size, dtype=torch.uint8, device=self.device)

    @staticmethod
    def _from_bytes(data: Tensor, shape: list[int], dtype: torch.dtype) -> Tensor:
        raw = data.cpu()
        if dtype == torch.bool:
            return raw.bool().reshape(shape)
        return raw.view(dtype).reshape(shape).clone()


class TeamRows:
    """Where a run's generation rows are: process ``r`` of the team holds the run's rows
    ``r n .. (r + 1) n - 1`` (``n = rows``), so episode ``g`` of a rollout, counted as one process
    would (round after round, row after row), lies on one process at one local index.

    :param team: the run's processes.
    :param rows: generation rows per process.
    """

    def __init__(self, team: Team, rows: int) -> None:
        self.team, self.rows = team, rows

    def locate(self, episodes: Tensor) -> tuple[Tensor, Tensor]:
        """Process ``(E,)`` and local index ``(E,)`` of run-wide episode indices ``(E,)``."""
        total = self.rows * self.team.size
        rounds, row = episodes // total, episodes % total  # (E,) each
        return row // self.rows, rounds * self.rows + row % self.rows
