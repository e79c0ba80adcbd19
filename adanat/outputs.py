"""Writing results so that a failure leaves nothing partial behind.

Files are written into a hidden staging folder beside the destination and moved into place only
when everything succeeded; a destination that already holds files is never overwritten.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image


class OutputError(ValueError):
    """An output location that cannot be used."""


def check_writable(path: Path, flag: str) -> None:
    """``path`` is a folder or can become one, and a file can be created in its nearest existing
    ancestor (a probe file, removed again; ``os.access`` says yes to root everywhere)."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder")
    base = path.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{flag} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".adanat-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write in {base} ({e.strerror or e})") from None


def check_output_dir(out: Path) -> None:
    """Refuse a destination that is a file or a folder that already holds files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"output {out} already exists and is not an empty folder")


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success its files move to ``out``, on failure it is removed."""
    out = Path(out)
    check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out.parent}: {e.strerror}") from None
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
    except OSError as e:
        raise OutputError(f"cannot write in {out.parent}: {e.strerror or e}") from None
    try:
        yield stage
        check_output_dir(out)
        if out.exists():
            out.rmdir()
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a hidden file beside ``path`` and move it into place, so ``path`` is
    either its old content or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] (clamped) as uint8 ``0..255``, rounded to the nearest level."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def save_images(images: Tensor, folder: Path, names: list[str]) -> None:
    """One PNG per image ``(B, 3, H, W)`` in [0, 1]."""
    for image, name in zip(images, names, strict=True):
        save_image(image, folder / name)


def save_grid(images: Tensor, path: Path, nrow: int | None = None) -> None:
    """A grid PNG of images ``(B, 3, H, W)`` in [0, 1], near-square by default."""
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    save_image(make_grid(images, nrow=nrow, padding=2, pad_value=1.0), path)
