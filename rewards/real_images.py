"""Sources of real images for a discriminator: the ``shapes`` data set or an ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from adanat.worlds.shapes import ShapesDataset


class RealImages(Protocol):
    """Draws ``n`` real images ``(n, 3, H, W)`` in [0, 1] with their labels ``(n,)``.

    With ``keep`` (a ``(n,)`` mask) the draws of all ``n`` are made, so the random stream moves
    as without it, but only the kept images are loaded and returned (a process's share of a
    data-parallel minibatch)."""

    def sample(
        self, n: int, generator: torch.Generator, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...


class ShapesReal:
    """Random images of the ``shapes`` training split (rendered on demand, cached)."""

    def __init__(self, size: int = 60_000, split: str = "train") -> None:
        self.dataset = ShapesDataset(split, size)
        self._cache: dict[int, tuple[Tensor, int]] = {}

    def sample(self, n: int, generator: torch.Generator, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self.dataset), (n,), generator=generator)  # (n,)
        items = []
        for i in (idx if keep is None else idx[keep]).tolist():
            if i not in self._cache:
                self._cache[i] = self.dataset[i]
            items.append(self._cache[i])
        if not items:
            return torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64)
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class ImageFolderReal:
    """Random images of a torchvision ``ImageFolder`` (ImageNet train layout: one folder per
    class, sorted folder names are the class indices), resized, centre-cropped to ``size``,
    flipped at random."""

    def __init__(self, root: Path, size: int) -> None:
        from torchvision import datasets, transforms

        if not Path(root).is_dir():
            raise FileNotFoundError(f"real-image folder {root} does not exist")
        tf = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
            ]
        )
        self.dataset = datasets.ImageFolder(str(root), transform=tf)

    def sample(self, n: int, generator: torch.Generator, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(self.dataset), (n,), generator=generator)  # (n,)
        flip = torch.rand(n, generator=generator) < 0.5  # (n,) horizontal flips, as in training
        if keep is not None:
            idx, flip = idx[keep], flip[keep]
        items = [self.dataset[i] for i in idx.tolist()]
        if not items:
            return torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([x for x, _ in items])  # (k, 3, H, W)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images, torch.tensor([y for _, y in items])
