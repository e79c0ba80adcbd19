"""A resumable training run: one folder with an atomically written checkpoint and TensorBoard logs.

The checkpoint holds plain tensors and numbers only (model, EMA and optimiser states, the step,
the data generator's state) and is read back with ``torch.load(weights_only=True)``. A checkpoint
that cannot be read or does not fit the stage is a :class:`RunFolderError` naming the file; a
loss or state that becomes non-finite is a :class:`NonFiniteError`, and is never saved.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from adanat.errors import NonFiniteError, first_line
from adanat.progress import StepProgress


class RunFolderError(ValueError):
    """A run folder or checkpoint that cannot be used (corrupt, of another configuration)."""


def warmup_cosine(step: int, lr: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``floor * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def non_finite(state: Any, prefix: str = "") -> str | None:
    """Name of the first floating tensor in a nested state (dicts, lists) holding NaN or inf."""
    if isinstance(state, Tensor):
        return prefix if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    if isinstance(state, dict):
        items = list(state.items())
    elif isinstance(state, list | tuple):
        items = list(enumerate(state))
    else:
        return None
    for key, value in items:
        name = non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if name is not None:
            return name
    return None


def _logged_span(tb: Path) -> float:
    """Wall-clock seconds between the first and the last TensorBoard event under ``tb``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [
        e.wall_time for f in sorted(tb.glob("events.out.tfevents.*")) for e in EventFileLoader(str(f)).Load()
    ]
    return max(times) - min(times) if times else 0.0


class TrainingRun:
    """Checkpointing, logging and progress for one training stage.

    :param folder: run folder of the stage (created when something is first written to it).
    :param total_steps: steps of the whole stage.
    :param checkpoint_every: steps between checkpoints.
    :param log_every: steps between logged scalars (and progress lines off a terminal).
    """

    def __init__(
        self, folder: str | Path, total_steps: int, checkpoint_every: int = 200, log_every: int = 20
    ) -> None:
        self.folder = Path(folder)
        self.name = self.folder.name
        self.total_steps = total_steps
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.checkpoint_path = self.folder / "checkpoint.pt"
        self.step = 0
        self.saved_step: int | None = None  # step of the checkpoint on disk
        self.writer: SummaryWriter | None = None
        self.started = time.perf_counter()
        self.earlier_seconds = 0.0  # training time spent by earlier processes of this stage
        self._finite: Tensor | None = None  # all watched losses finite (on their device, no sync)
        self._logged = False  # this process wrote a scalar

    @property
    def elapsed(self) -> float:
        """Seconds of training in this stage, over every process that worked on it."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def _unusable(self, what: str) -> RunFolderError:
        return RunFolderError(
            f"{self.checkpoint_path} {what}; delete the folder {self.folder} to start the {self.name} "
            "stage over"
        )

    def resume(self) -> dict[str, Any] | None:
        """The saved state, or None when the stage starts fresh; sets :attr:`step`."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            step = int(state["step"])
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
            raise self._unusable("is corrupt or truncated (not a readable torch checkpoint)") from None
        except (KeyError, TypeError, IndexError):
            raise self._unusable("is not a checkpoint of a training stage") from None
        self.step = self.saved_step = step
        if "seconds" in state:
            self.earlier_seconds = float(state["seconds"])
        else:  # a checkpoint written before times were saved: the span of its logged curves
            self.earlier_seconds = _logged_span(self.folder / "tb")
        self.started = time.perf_counter()
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with the step and time; a state with a non-finite tensor is refused."""
        bad = non_finite(state)
        if bad is not None:
            raise self._non_finite(f"{bad} of its state")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_save({**state, "step": self.step, "seconds": self.elapsed}, self.checkpoint_path)
        self.saved_step = self.step

    def due(self) -> bool:
        return self.step % self.checkpoint_every == 0 or self.step == self.total_steps

    def logging_due(self) -> bool:
        """Whether this step logs its scalars: every ``log_every`` steps and the last one."""
        return self.step % self.log_every == 0 or self.step == self.total_steps

    def restore(self, parts: dict[str, Any]) -> bool:
        """Load the saved state into each part (module, optimiser, generator, tensor, or anything
        with ``load_state_dict``); False when the stage starts fresh."""
        state = self.resume()
        if state is None:
            return False
        try:
            for name, part in parts.items():
                _restore(part, state[name])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            what = f"does not fit this stage (saved with another configuration? {first_line(e, 200)})"
            raise self._unusable(what) from None
        return True

    def watch(self, loss: Tensor) -> None:
        """Note whether ``loss`` is finite; checked (one device sync) when logging or checkpointing."""
        ok = torch.isfinite(loss.detach()).all()
        self._finite = ok if self._finite is None else self._finite & ok

    def _non_finite(self, what: str) -> NonFiniteError:
        kept = (
            f"the last good checkpoint (step {self.saved_step}) stays in {self.checkpoint_path}"
            if self.saved_step is not None
            else "no checkpoint had been saved yet"
        )
        return NonFiniteError(
            f"{self.name}: {what} became non-finite by step {self.step}; stopped without saving it, "
            f"{kept}; lower the learning rate and run again"
        )

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if a watched loss was NaN or infinite."""
        if self._finite is not None and not bool(self._finite):
            raise self._non_finite("the loss")

    def checkpoint(self, parts: dict[str, Any]) -> None:
        """Save every part's state when a checkpoint is due (after checking the losses)."""
        if self.due():
            self.check_finite()
            self.save({name: _state_of(part) for name, part in parts.items()})

    def log(self, scalars: dict[str, float]) -> None:
        """Add ``scalars`` at this step (after checking the losses)."""
        assert self.writer is not None
        self.check_finite()
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, self.step)
        self._logged = True

    @contextmanager
    def progress(self, description: str) -> Iterator[StepProgress]:
        """A progress display (:class:`~adanat.progress.StepProgress`) and an open TensorBoard writer
        (continuing the curves on resume). When the stage fails before this process logged anything,
        the writer's empty event file (and the folders it made) are removed."""
        created = [p for p in (self.folder / "tb", self.folder) if not p.exists()]
        tb = self.folder / "tb"
        before = set(tb.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(tb), purge_step=self.step or None)
        self._logged = False
        ok = False
        try:
            with StepProgress(
                description,
                self.total_steps,
                completed=self.step,
                every=self.log_every,
                elapsed_before=self.earlier_seconds,
            ) as progress:
                yield progress
            ok = True
        finally:
            self.writer.close()
            self.writer = None
            if not ok and not self._logged:
                for f in set(tb.glob("events.out.tfevents.*")) - before:
                    f.unlink(missing_ok=True)
                for folder in created:
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()


def folders_under(root: Path) -> set[Path]:
    """Every folder at or below ``root`` (empty when it does not exist)."""
    if not root.is_dir():
        return set()
    return {root, *(Path(d) / name for d, names, _ in os.walk(root) for name in names)}


def remove_new_empty_folders(roots: list[Path], before: set[Path]) -> None:
    """Remove, deepest first, the empty folders at or below ``roots`` that are not in ``before``
    (:func:`folders_under` taken before the run): what a failed run made and left empty."""
    now = set().union(*(folders_under(r) for r in roots)) | {r for r in roots if r.is_dir()}
    for folder in sorted(now - before, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # only an empty folder is removed
            folder.rmdir()


def writable_folder(path: Path, flag: str) -> list[Path]:
    """Create ``path`` with its missing parents and check that a file can be written in it.

    Returns the folders it created, outermost first. Raises :class:`RunFolderError` (one line,
    naming ``flag``) when ``path`` or a parent is a file or nothing can be written there; the
    folders it created are then removed again."""
    missing, p = [], path
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        where = "" if p == path else f" ({p} is a file)"
        raise RunFolderError(f"{flag} {path} is not a folder{where}")
    missing.reverse()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        remove_new_empty_folders(missing[:1], set())
        raise RunFolderError(f"{flag} {path} is not writable ({e.strerror or e})") from None
    return missing
