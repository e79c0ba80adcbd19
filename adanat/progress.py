"""Progress of a long loop: a rich bar on a terminal, one plain line per interval elsewhere.

Rich draws nothing when standard output is not a terminal (``nohup``, CI logs, ``| tee``), so a
long run would print nothing at all. :class:`StepProgress` draws the bar on a terminal and
otherwise prints one line every ``every`` steps (and at the last one)::

    with StepProgress("generator", total=4000, completed=step) as progress:
        while ...:
            progress.advance(1, loss=0.412)  # info is kept until replaced

prints, off a terminal, ``generator 40/4000 elapsed 0:01:23 loss 0.412``.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _format_value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class StepProgress:
    """Progress over ``total`` steps, as a context manager.

    :param description: what runs (the first word of each plain line).
    :param total: steps in all.
    :param completed: steps already done (a resumed run).
    :param every: steps between plain lines (off a terminal).
    :param elapsed_before: seconds spent by earlier processes, added to the elapsed time shown.
    :param stream: where to write (default: standard output at the time of entry).
    :param tty: draw the rich bar (default: whether ``stream`` is a terminal).
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        completed: int = 0,
        every: int = 20,
        elapsed_before: float = 0.0,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.description, self.total, self.completed, self.every = description, total, completed, every
        self.elapsed_before = elapsed_before
        self.info: dict[str, object] = {}
        self._stream, self._tty = stream, tty
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds shown as elapsed: this process's and the earlier ones'."""
        return self.elapsed_before + time.perf_counter() - self._started

    def __enter__(self) -> StepProgress:
        stream = self._stream or sys.stdout
        self._stream = stream
        self._started = time.perf_counter()
        tty = self._tty if self._tty is not None else stream.isatty()
        if tty:
            self._bar = Progress(
                TextColumn(f"[bold]{self.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
            )
            self._bar.__enter__()
            total, done = self.total, self.completed
            self._task = self._bar.add_task(self.description, total=total, completed=done, info="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, tb)
            self._bar = None

    def advance(self, n: int = 1, **info: object) -> None:
        """``n`` more steps done; ``info`` (name: value) replaces the shown values of those names."""
        before = self.completed
        self.completed += n
        self.info.update(info)
        text = " ".join(f"{k} {_format_value(v)}" for k, v in self.info.items())
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.completed, info=text)
        elif self._stream is not None and (
            self.completed // self.every > before // self.every or (self.completed >= self.total > before)
        ):
            line = f"{self.description} {self.completed}/{self.total} elapsed {format_seconds(self.elapsed)}"
            print(f"{line} {text}".rstrip(), file=self._stream, flush=True)
