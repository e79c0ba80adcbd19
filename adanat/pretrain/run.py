"""A resumable training run: one folder with an atomically written checkpoint and TensorBoard logs.

The checkpoint holds plain tensors and numbers only (model, EMA and optimiser states, the step,
the data generator's state) and is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter


def warmup_cosine(step: int, lr: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``floor * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class GlobalRNG:
    """torch's default generator as a checkpointable part (dropout layers draw from it)."""

    def state_dict(self) -> Tensor:
        return torch.get_rng_state()

    def load_state_dict(self, state: Tensor) -> None:
        torch.set_rng_state(state)


def _state_of(part: Any) -> Any:
    if isinstance(part, torch.Generator):
        return part.get_state()
    if isinstance(part, Tensor):
        return part.clone()
    return part.state_dict()


def _restore(part: Any, state: Any) -> None:
    if isinstance(part, torch.Generator):
        part.set_state(state)
    elif isinstance(part, Tensor):
        part.copy_(state)
    else:
        part.load_state_dict(state)


def _logged_span(tb: Path) -> float:
    """Wall-clock seconds between the first and the last TensorBoard event under ``tb``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [
        e.wall_time for f in sorted(tb.glob("events.out.tfevents.*")) for e in EventFileLoader(str(f)).Load()
    ]
    return max(times) - min(times) if times else 0.0


class TrainingRun:
    """Checkpointing, logging and progress for one training stage.

    :param folder: run folder of the stage (created).
    :param total_steps: steps of the whole stage.
    :param checkpoint_every: steps between checkpoints.
    """

    def __init__(self, folder: str | Path, total_steps: int, checkpoint_every: int = 200) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.checkpoint_every = checkpoint_every
        self.checkpoint_path = self.folder / "checkpoint.pt"
        self.step = 0
        self.writer: SummaryWriter | None = None
        self.started = time.perf_counter()
        self.earlier_seconds = 0.0  # training time spent by earlier processes of this stage

    @property
    def elapsed(self) -> float:
        """Seconds of training in this stage, over every process that worked on it."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def resume(self) -> dict[str, Any] | None:
        """The saved state, or None when the stage starts fresh; sets :attr:`step`."""
        if not self.checkpoint_path.is_file():
            return None
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        self.step = int(state["step"])
        if "seconds" in state:
            self.earlier_seconds = float(state["seconds"])
        else:  # a checkpoint written before times were saved: the span of its logged curves
            self.earlier_seconds = _logged_span(self.folder / "tb")
        self.started = time.perf_counter()
        return state

    def save(self, state: dict[str, Any]) -> None:
        atomic_save({**state, "step": self.step, "seconds": self.elapsed}, self.checkpoint_path)

    def due(self) -> bool:
        return self.step % self.checkpoint_every == 0 or self.step == self.total_steps

    def restore(self, parts: dict[str, Any]) -> bool:
        """Load the saved state into each part (module, optimiser, generator, tensor, or anything
        with ``load_state_dict``); False when the stage starts fresh."""
        state = self.resume()
        if state is None:
            return False
        for name, part in parts.items():
            _restore(part, state[name])
        return True

    def checkpoint(self, parts: dict[str, Any]) -> None:
        """Save every part's state when a checkpoint is due."""
        if self.due():
            self.save({name: _state_of(part) for name, part in parts.items()})

    def log(self, scalars: dict[str, float]) -> None:
        assert self.writer is not None
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, self.step)

    @contextmanager
    def progress(self, description: str) -> Iterator[Progress]:
        """A rich progress bar and an open TensorBoard writer (continuing the curves on resume)."""
        self.writer = SummaryWriter(str(self.folder / "tb"), purge_step=self.step or None)
        columns = (
            TextColumn(f"[bold]{description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns) as progress:
                yield progress
        finally:
            self.writer.close()
            self.writer = None
